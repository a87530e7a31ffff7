"""Indirect RJ (DOMAIN stage 4, rule 9): messages, letters of explanation or apology and recordings passed
between the parties by the facilitator. Owned by the scheduling service: its commands come on ``rj.commands``
(keyed by case id), its facts go out on ``rj.scheduling``.

- Either party (or staff for them) switches the case's contact form between a conference and indirect contact
  (``SwitchContactForm`` -> ``ContactFormSwitched``); switching to indirect calls off booked conferences.
- The recipient agrees in advance to receive items, of the kinds they name, and chooses when they arrive
  (``AgreeToReceiveItems`` -> ``ReceivingAgreed``); they may stop at any time, no reason needed
  (``StopReceivingItems`` -> ``ReceivingStopped``), and ask for what waits for them (``RequestItems``).
- A participant submits an item for another participant (``SubmitIndirectItem`` -> ``IndirectItemSubmitted``);
  the facilitator approves or rejects its content (``ApproveIndirectItem`` / ``RejectIndirectItem``).
- An item is released to its recipient (``IndirectItemReleased``, which notify delivers) only when every rule
  allows it (``services/scheduling/domain/indirect.py`` ``release_refusal``); staff record its delivery
  (``RecordItemDelivered`` -> ``IndirectItemDelivered``).
Free text and recordings' storage references are personal data (``Pii``), sealed wherever written.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, ClassVar

from pydantic import AwareDatetime, Field

from schemas.commands import Command
from schemas.common import Actor
from schemas.envelope import EventData
from schemas.pii import Pii


class ContactForm(StrEnum):
    conference = "conference"  # face to face (the default)
    indirect = "indirect"  # items passed by the facilitator


class IndirectItemKind(StrEnum):
    message = "message"
    letter = "letter"  # of explanation or apology
    recording = "recording"  # audio or video, kept elsewhere: the item holds a reference to it


class ReleaseTiming(StrEnum):
    on_approval = "on_approval"  # as soon as approved (and everything else allows)
    not_before = "not_before"  # not before a date and time the recipient chose
    on_request = "on_request"  # only when the recipient asks (``RequestItems``)


class ReleaseTrigger(StrEnum):
    """What let an item go at last: the step after which every rule allowed it."""

    decision = "decision"  # an approval, an agreement, a consent or readiness heard: whatever came last
    time = "time"  # the recipient's chosen time came (the sweeper)
    request = "request"  # the recipient asked


# --- commands -----------------------------------------------------------------------------------


class SwitchContactForm(Command):
    """Either party (themself, or staff for them, saying why) switches the case to indirect contact or back."""

    event_type: ClassVar[str] = "rj.contact-form.switch"

    person_id: str = Field(min_length=1, description="The party (victim or offender) who asks for the switch")
    form: ContactForm


class AgreeToReceiveItems(Command):
    """The recipient agrees, in advance, to receive items of ``kinds`` and says when they arrive. Replaces any
    agreement they gave before (a new choice of timing applies to items not yet released)."""

    event_type: ClassVar[str] = "rj.indirect.agree-to-receive"

    person_id: str = Field(min_length=1, description="The recipient")
    kinds: list[IndirectItemKind] = Field(min_length=1)
    timing: ReleaseTiming
    not_before: AwareDatetime | None = Field(default=None, description="With timing not_before: when, at the earliest")


class StopReceivingItems(Command):
    """The recipient stops receiving items: at once, no reason needed."""

    event_type: ClassVar[str] = "rj.indirect.stop-receiving"

    person_id: str = Field(min_length=1, description="The recipient")


class RequestItems(Command):
    """The recipient asks for the approved items waiting for them (timing ``on_request``, or any timing now)."""

    event_type: ClassVar[str] = "rj.indirect.request-items"

    person_id: str = Field(min_length=1, description="The recipient")


class SubmitIndirectItem(Command):
    """A participant's item for another participant on the case: a message or letter (``content``, text) or a
    recording (``recording_ref``, where it is stored). Staff may submit it for them."""

    event_type: ClassVar[str] = "rj.indirect.submit-item"

    item_id: str = Field(min_length=1)
    sender_id: str = Field(min_length=1)
    recipient_id: str = Field(min_length=1)
    kind: IndirectItemKind
    content: Annotated[str | None, Pii] = Field(default=None, description="A message's or letter's text")
    recording_ref: Annotated[str | None, Pii] = Field(default=None, description="Where a recording is stored")


class ApproveIndirectItem(Command):
    """The facilitator approves an item's content."""

    event_type: ClassVar[str] = "rj.indirect.approve-item"

    item_id: str = Field(min_length=1)


class RejectIndirectItem(Command):
    """The facilitator rejects an item's content (not yet released); ``reason`` is required."""

    event_type: ClassVar[str] = "rj.indirect.reject-item"

    item_id: str = Field(min_length=1)


class RecordItemDelivered(Command):
    """Staff record that a released item reached its recipient."""

    event_type: ClassVar[str] = "rj.indirect.record-delivered"

    item_id: str = Field(min_length=1)
    delivered_at: AwareDatetime


# --- facts --------------------------------------------------------------------------------------


class ContactFormSwitched(EventData):
    event_type: ClassVar[str] = "rj.contact-form.switched"

    case_id: str
    form: ContactForm
    previous_form: ContactForm
    person_id: Annotated[str, Pii] = Field(description="Who asked for it: staff-only")
    switched_at: AwareDatetime
    switched_by: Actor
    reason: Annotated[str | None, Pii] = None


class ReceivingAgreed(EventData):
    event_type: ClassVar[str] = "rj.indirect.receiving-agreed"

    case_id: str
    person_id: str
    kinds: list[IndirectItemKind]
    timing: ReleaseTiming
    not_before: AwareDatetime | None = None
    agreed_at: AwareDatetime
    agreed_by: Actor
    reason: Annotated[str | None, Pii] = None


class ReceivingStopped(EventData):
    event_type: ClassVar[str] = "rj.indirect.receiving-stopped"

    case_id: str
    person_id: str
    stopped_at: AwareDatetime
    stopped_by: Actor
    withheld_item_ids: list[str] = Field(description="Approved items that will not be released to them now")


class IndirectItemSubmitted(EventData):
    """Staff-only: the facilitator reads the content here to screen it."""

    event_type: ClassVar[str] = "rj.indirect.item-submitted"

    case_id: str
    item_id: str
    sender_id: str
    recipient_id: str
    kind: IndirectItemKind
    content: Annotated[str | None, Pii] = None
    recording_ref: Annotated[str | None, Pii] = None
    submitted_at: AwareDatetime
    submitted_by: Actor


class IndirectItemApproved(EventData):
    event_type: ClassVar[str] = "rj.indirect.item-approved"

    case_id: str
    item_id: str
    approved_at: AwareDatetime
    approved_by: Actor
    reason: Annotated[str | None, Pii] = None


class IndirectItemRejected(EventData):
    event_type: ClassVar[str] = "rj.indirect.item-rejected"

    case_id: str
    item_id: str
    rejected_at: AwareDatetime
    rejected_by: Actor
    reason: Annotated[str, Pii]


class IndirectItemReleased(EventData):
    """The item may go to its recipient now: notify delivers it. Released once, only when approved, agreed to in
    advance by the recipient, at their chosen time, with both parties' consent current and the case open, not
    held and not pending a withdrawal (DOMAIN rule 9)."""

    event_type: ClassVar[str] = "rj.indirect.item-released"

    case_id: str
    item_id: str
    recipient_id: str
    sender_id: Annotated[str, Pii]
    kind: IndirectItemKind
    content: Annotated[str | None, Pii] = None
    recording_ref: Annotated[str | None, Pii] = None
    trigger: ReleaseTrigger
    released_at: AwareDatetime
    released_by: Actor


class IndirectItemDelivered(EventData):
    event_type: ClassVar[str] = "rj.indirect.item-delivered"

    case_id: str
    item_id: str
    recipient_id: str
    delivered_at: AwareDatetime
    recorded_at: AwareDatetime
    recorded_by: Actor


INDIRECT_EVENTS: tuple[type[EventData], ...] = (
    ContactFormSwitched,
    ReceivingAgreed,
    ReceivingStopped,
    IndirectItemSubmitted,
    IndirectItemApproved,
    IndirectItemRejected,
    IndirectItemReleased,
    IndirectItemDelivered,
)

INDIRECT_COMMANDS: tuple[type[EventData], ...] = (
    SwitchContactForm,
    AgreeToReceiveItems,
    StopReceivingItems,
    RequestItems,
    SubmitIndirectItem,
    ApproveIndirectItem,
    RejectIndirectItem,
    RecordItemDelivered,
)
