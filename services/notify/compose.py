"""What a claimed send says and where it goes: the sender's ``Composer``, built from the case as it stands.

A scheduled send holds only ids, times and codes (``store.SendIntent.facts``); the words are made here, when it
goes, so an address rectified meanwhile is the one used and an erased person gets nothing. The recipient is one
person: their own view (``messages.PartyView``) and the case's (``messages.CaseView``) are all ``context_for``
sees, so another party's data has no way into the message.

- A participant's address comes from ``domain.address_for`` (their safe-contact record first); their language and
  format from their preferences. A withdraw link is minted only for kinds sent while the process runs
  (``messages.WITHDRAW_LINK_KINDS``) and only where the case allows links (``NotifyCase.links_allowed``).
- A facilitator is written to at their registered work email, else ``NOTIFY_STAFF_EMAIL_FORMAT``; the hub's
  coordinators (``domain.COORDINATOR``) at ``NOTIFY_COORDINATOR_EMAIL``.
- The intent's facts are mapped to the kind's context fields: a venue id to its name, address and arrival
  arrangements; a withdrawal's cause to who withdrew (role only) and when; facts the kind does not show dropped.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
import structlog
from pydantic import ValidationError

from schemas.common import Channel
from schemas.notify import RecipientKind
from schemas.referral import Role
from services.notify import domain, messages, store
from services.notify.channels import Outbound
from services.notify.domain import NotifyCase
from services.notify.messages import CaseView, Format, Language, MessageKind, PartyView
from services.runtime.participant_links import LinkKeyMissing, mint_link
from services.runtime.settings import Settings

log = structlog.get_logger()

MEETING_KINDS = frozenset({MessageKind.meeting_booked, MessageKind.meeting_rescheduled, MessageKind.meeting_reminder})


def _role(value: str | None) -> Role | None:
    try:
        return Role(value) if value else None
    except ValueError:
        return None  # "unknown": someone we only heard of by id


@dataclass
class Composer:
    """``sender.Composer``: a claimed row to the channel's ``Outbound`` (None: no one to send it to any more)."""

    settings: Settings
    clock: Callable[[], datetime]

    async def __call__(
        self, conn: asyncpg.Connection, row: asyncpg.Record, intent: store.SendIntent, case: NotifyCase | None
    ) -> Outbound | None:
        """``case``: the case as the sender read it under the row's lock, a moment before (read once, not twice)."""
        kind, channel = MessageKind(row["kind"]), Channel(row["channel"])
        if case is None:
            return None
        staff = RecipientKind(row["recipient_kind"]) is RecipientKind.staff
        if staff:
            found = await self._facilitator(conn, intent.recipient_id, channel)
            if found is None:
                return None
            recipient, address = found
        else:
            person = case.person(intent.recipient_id)
            reached = domain.address_for(person, channel) if person is not None else None
            if person is None or reached is None:
                return None
            address = reached
            recipient = PartyView(
                person_id=person.person_id, role=person.role, name=person.name, email=None, phone=None, address=None,
                language=Language(person.language.value), format=Format(person.format.value),
            )  # fmt: skip
        lead = case.facilitator_ids[-1] if case.facilitator_ids else None
        view = CaseView(
            case_id=case.case_id,
            crime_reference=case.crime_reference or case.case_id,
            facilitator_name=await self._facilitator_name(conn, lead),
        )
        try:
            facts = await self.facts_for(conn, kind, case, intent, row)
            context = messages.context_for(kind, recipient=recipient, case=view, **facts)
            rendered = messages.render(kind, context, language=recipient.language, format=recipient.format)
        except (ValidationError, ValueError) as exc:  # data we cannot put into words: fails, the facilitator told
            log.error("notify_message_not_composed", notification_id=row["notification_id"], kind=kind.value,
                      error=type(exc).__name__)  # fmt: skip
            return None
        return Outbound(
            notification_id=row["notification_id"],
            channel=channel,
            to=address,
            recipient_name=recipient.name,
            rendered=rendered,
            large_print=recipient.format is Format.large_print,
            case_id=case.case_id,
            person_id=None if staff else intent.recipient_id,
        )

    async def _facilitator(
        self, conn: asyncpg.Connection, facilitator_id: str, channel: Channel
    ) -> tuple[PartyView, str] | None:
        if channel is not Channel.email:
            return None
        if facilitator_id == domain.COORDINATOR:
            mailbox = self.settings.notify_coordinator_email or self.settings.notify_staff_email_format.format(
                id=facilitator_id
            )
            return PartyView(
                person_id=facilitator_id, role=messages.FACILITATOR_ROLE, name=None, email=mailbox, phone=None,
                address=None,
            ), mailbox  # fmt: skip
        registered = await store.facilitator(conn, facilitator_id)
        email = (registered["email"] if registered else None) or self.settings.notify_staff_email_format.format(
            id=facilitator_id
        )
        name = registered["display_name"] if registered else None
        view = PartyView(
            person_id=facilitator_id, role=messages.FACILITATOR_ROLE, name=name, email=email, phone=None, address=None
        )
        return view, email

    async def _facilitator_name(self, conn: asyncpg.Connection, facilitator_id: str | None) -> str | None:
        if facilitator_id is None:
            return None
        registered = await store.facilitator(conn, facilitator_id)
        return registered["display_name"] if registered else None

    def _link(self, case: domain.NotifyCase, person_id: str) -> str | None:
        if not case.links_allowed:
            return None
        try:
            return mint_link(self.settings, case_id=case.case_id, person_id=person_id, now=self.clock())
        except LinkKeyMissing:
            log.warning("notify_no_link_key", case_id=case.case_id)
            return None

    async def facts_for(
        self,
        conn: asyncpg.Connection,
        kind: MessageKind,
        case: domain.NotifyCase,
        intent: store.SendIntent,
        row: asyncpg.Record,
    ) -> dict[str, Any]:
        """The intent's facts as the kind's context fields (and the hub's own name and phone)."""
        got = intent.facts
        out: dict[str, Any] = {
            "service_name": self.settings.notify_service_name,
            "service_phone": self.settings.notify_service_phone,
        }
        if kind in messages.WITHDRAW_LINK_KINDS:
            out["withdraw_link"] = self._link(case, intent.recipient_id)
        if kind is MessageKind.facilitator_assigned:
            out["sensitive"] = case.sensitive
        elif kind in (MessageKind.facilitator_withdrawal, MessageKind.facilitator_hold):
            if got.get("lifted"):
                out["lifted"] = True
            if kind is MessageKind.facilitator_withdrawal:
                withdrawal = next((w for w in case.withdrawals if w.event_id == got.get("withdrawal")), None)
                if withdrawal is not None:
                    out |= {
                        "participant_role": _role(withdrawal.role),
                        "declined": withdrawal.declined,
                        "stopped_at": withdrawal.at,
                    }
        elif kind is MessageKind.facilitator_delivery_problem:
            out |= {
                "problem": got["problem"],
                "message_kind": got["message_kind"],
                "recipient_role": _role(got.get("recipient_role")),
                "channel": got.get("channel"),
                "next_channel": got.get("next_channel"),
            }
        elif kind in MEETING_KINDS:
            out |= {"starts_at": got["starts_at"], "ends_at": got["ends_at"], "meeting_kind": got["meeting_kind"]}
            venue = await store.venue(conn, got["venue_id"]) if got.get("venue_id") else None
            if venue is not None:
                out |= {"venue_name": venue["name"], "venue_address": venue["address"], "arrival": venue["arrival"]}
            lead = await self._facilitator_name(conn, got.get("lead_facilitator_id"))
            if lead is not None:
                out["facilitator_name"] = lead
        elif kind is MessageKind.meeting_cancelled:
            out["starts_at"] = got["starts_at"]
        elif kind in (MessageKind.item_reminder, MessageKind.item_unmet):
            out |= {"item_kind": got["item_kind"], "due_date": got["due_date"]}
        elif kind is MessageKind.indirect_item:
            out["item_kind"] = got["item_kind"]
        elif kind is MessageKind.closure:
            out["completed"] = got.get("closure_reason") == "completed"
        return out
