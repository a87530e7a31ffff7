"""A case's indirect RJ state (``CaseSchedule.indirect``): its contact form, each recipient's advance agreement to
receive items, and the items themselves. Decisions on it are in ``indirect``."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum
from typing import Annotated

from schemas.indirect import ContactForm, IndirectItemKind, ReleaseTiming
from schemas.pii import Pii
from schemas.scheduling import MeetingKind


class ItemStatus(StrEnum):
    submitted = "submitted"  # waiting for the facilitator
    approved = "approved"  # waiting for everything else the release needs
    rejected = "rejected"  # never released
    withdrawn = "withdrawn"  # taken back by its sender: never released
    released = "released"
    delivered = "delivered"


@dataclass(frozen=True)
class ReceivingAgreement:
    """A recipient's advance agreement to receive items: which kinds, and when they arrive. ``stopped_at`` set:
    they stopped receiving, and nothing reaches them until they agree again. ``from_ids``: the senders it covers;
    ``None``, every party on the other side (said explicitly when agreeing; agreements kept from before senders
    were named read as that too)."""

    person_id: str
    kinds: frozenset[IndirectItemKind]
    timing: ReleaseTiming
    not_before: datetime | None
    agreed_at: datetime
    stopped_at: datetime | None = None
    from_ids: frozenset[str] | None = None

    @property
    def current(self) -> bool:
        return self.stopped_at is None

    def covers(self, sender_id: str) -> bool:
        return self.from_ids is None or sender_id in self.from_ids


@dataclass(frozen=True)
class IndirectItem:
    item_id: str
    sender_id: str
    recipient_id: str
    kind: IndirectItemKind
    content: Annotated[str | None, Pii]
    recording_ref: Annotated[str | None, Pii]
    status: ItemStatus
    submitted_at: datetime
    released_at: datetime | None = None
    recording_sha256: Annotated[str | None, Pii] = None


@dataclass(frozen=True)
class IndirectRJ:
    form: ContactForm = ContactForm.conference
    agreements: tuple[ReceivingAgreement, ...] = ()
    items: tuple[IndirectItem, ...] = ()

    def agreement(self, person_id: str) -> ReceivingAgreement | None:
        return next((a for a in self.agreements if a.person_id == person_id), None)

    def item(self, item_id: str) -> IndirectItem | None:
        return next((i for i in self.items if i.item_id == item_id), None)

    def with_agreement(self, agreement: ReceivingAgreement) -> IndirectRJ:
        others = tuple(a for a in self.agreements if a.person_id != agreement.person_id)
        return replace(self, agreements=(*others, agreement))

    def with_item(self, item: IndirectItem) -> IndirectRJ:
        items = tuple(item if i.item_id == item.item_id else i for i in self.items)
        if item.item_id not in {i.item_id for i in self.items}:
            items = (*items, item)
        return replace(self, items=items)

    @property
    def waiting(self) -> tuple[IndirectItem, ...]:
        """Approved and not yet released: what a release may let go."""
        return tuple(i for i in self.items if i.status is ItemStatus.approved)


def conference_refusal(indirect: IndirectRJ, kind: MeetingKind) -> str | None:
    """While the case is in indirect contact, no conference is proposed or booked."""
    if kind is MeetingKind.conference and indirect.form is ContactForm.indirect:
        return "the case has switched to indirect contact: no conference until a party switches it back"
    return None
