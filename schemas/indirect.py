"""Indirect RJ (DOMAIN stage 4, rule 9): messages, letters of explanation or apology and recordings passed
between the parties by the facilitator. Owned by the scheduling service: its commands come on ``rj.commands``
(keyed by case id), its facts go out on ``rj.scheduling``.

- Either party (or staff for them) switches the case's contact form between a conference and indirect contact
  (``SwitchContactForm`` -> ``ContactFormSwitched``); switching to indirect calls off booked conferences.
- The recipient agrees in advance to receive items, of the kinds they name, and chooses when they arrive
  (``AgreeToReceiveItems`` -> ``ReceivingAgreed``); they may stop at any time, no reason needed
  (``StopReceivingItems`` -> ``ReceivingStopped``), and ask for what waits for them (``RequestItems``).
- A party (victim or offender, or a parent or guardian for one under 18) submits an item for a party on the other
  side (``SubmitIndirectItem`` -> ``IndirectItemSubmitted``); the facilitator approves or rejects its content
  (``ApproveIndirectItem`` / ``RejectIndirectItem``); the sender may take it back until it is released
  (``WithdrawIndirectItem`` -> ``IndirectItemWithdrawn``). Supporters and other people around the parties neither
  send nor receive items (DOMAIN: they see nothing of the other side's data).
- An item is released to its recipient (``IndirectItemReleased``, which notify delivers) only when every rule
  allows it (``services/scheduling/domain/indirect.py`` ``release_refusal``); staff record its delivery
  (``RecordItemDelivered`` -> ``IndirectItemDelivered``). A release is decided only on reading a command, in
  case order, after whatever was sent before it (a stop, a hold, a withdrawal, a rejection, a switch back). A
  recipient's chosen time, and a fact from another service that lifts the last thing an item waited for, are
  kept by the service's sweeper, which only sends itself ``ReleaseDueItems`` on ``rj.commands``.
- A party whose withdrawal or decline of participation the consent service accepts stops receiving, and their
  items not yet released (sent or to be received) are withdrawn, saying why by a code
  (``IndirectEndReason``); after a new consent they agree again and send anew.
Free text, recordings' storage references and their digests are personal data (``Pii``), sealed wherever written.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, ClassVar

from pydantic import AwareDatetime, Field, StringConstraints

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


Sha256 = Annotated[
    str,
    StringConstraints(pattern=r"^[0-9a-f]{64}$"),
    Field(examples=["9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"]),
]
"""A content digest: sha256, lower-case hex."""


class ReleaseTiming(StrEnum):
    on_approval = "on_approval"  # as soon as approved (and everything else allows)
    not_before = "not_before"  # not before a date and time the recipient chose
    on_request = "on_request"  # only when the recipient asks (``RequestItems``)


class IndirectEndReason(StrEnum):
    """Why a person's receiving stopped, or an item was taken back: a code, never their words."""

    asked = "asked"  # the person (or staff for them) asked: a stop-receiving, a sender taking an item back
    participation_withdrawn = "participation_withdrawn"  # the consent service accepted their withdrawal
    participation_declined = "participation_declined"  # the consent service accepted their decline


CONTENT_MAX_CHARS = 20_000
"""The longest message or letter an item carries (about ten pages): an item is read by a person, not a store."""


class ReleaseTrigger(StrEnum):
    """What let an item go at last: the step after which every rule allowed it."""

    decision = "decision"  # a command read in case order (an approval, an agreement, a switch): whatever came last
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
    agreement they gave before (a new choice of timing applies to items not yet released). It names whom it
    covers: the senders (``from_ids``, parties on the other side), or everyone on the other side
    (``from_other_side``), exactly one of the two. Staff agreeing for the recipient say why (``reason``)."""

    event_type: ClassVar[str] = "rj.indirect.agree-to-receive"

    person_id: str = Field(min_length=1, description="The recipient")
    kinds: list[IndirectItemKind] = Field(min_length=1)
    from_ids: list[str] = Field(default_factory=list, description="The senders whose items this covers")
    from_other_side: bool = Field(default=False, description="It covers every party on the other side")
    timing: ReleaseTiming
    not_before: AwareDatetime | None = Field(default=None, description="With timing not_before: when, at the earliest")


class StopReceivingItems(Command):
    """The recipient stops receiving items: at once, no reason needed."""

    event_type: ClassVar[str] = "rj.indirect.stop-receiving"

    person_id: str = Field(min_length=1, description="The recipient")


class RequestItems(Command):
    """The recipient asks for the approved items waiting for them (timing ``on_request``, or any timing now).
    Staff asking for them say why (``reason``)."""

    event_type: ClassVar[str] = "rj.indirect.request-items"

    person_id: str = Field(min_length=1, description="The recipient")


class SubmitIndirectItem(Command):
    """A party's item for a party on the other side: a message or letter (``content``, text) or a recording
    (``recording_ref``, where it is stored, and ``recording_sha256``, the digest of its bytes, which the approval
    and the release carry so that delivery sends exactly what the facilitator approved). Staff may submit it for
    them. An item id is used once: a second submission with it is refused, whatever its content."""

    event_type: ClassVar[str] = "rj.indirect.submit-item"

    item_id: str = Field(min_length=1)
    sender_id: str = Field(min_length=1)
    recipient_id: str = Field(min_length=1)
    kind: IndirectItemKind
    content: Annotated[str | None, Pii] = Field(
        default=None, max_length=CONTENT_MAX_CHARS, description="A message's or letter's text"
    )
    recording_ref: Annotated[str | None, Pii] = Field(default=None, description="Where a recording is stored")
    recording_sha256: Annotated[Sha256 | None, Pii] = Field(
        default=None, description="A recording's sha256 (hex): sealed, as a digest of a known recording identifies it"
    )


class WithdrawIndirectItem(Command):
    """The sender (or staff for them; no reason needed) takes an item back before it is released."""

    event_type: ClassVar[str] = "rj.indirect.withdraw-item"

    item_id: str = Field(min_length=1)


class ReleaseDueItems(Command):
    """The scheduling service to itself (actor: the scheduling service): an item on this case may be due, because
    its recipient's chosen time has come or because a fact from another service (a consent, readiness, a verdict)
    lifted the last thing it waited for. Read in case order like any command, so a stop, hold or withdrawal sent
    before it is heard first; the release is then decided as at every other step (``release_refusal``). Sent
    again, or when nothing is due any more, it does nothing."""

    event_type: ClassVar[str] = "rj.indirect.release-due"


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
    from_ids: list[str] = Field(default_factory=list, description="The senders it covers (none: see from_other_side)")
    from_other_side: bool = False
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
    reason_code: IndirectEndReason = Field(
        default=IndirectEndReason.asked,
        description="Why: they asked, or their participation ended (they must agree again after a new consent)",
    )


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
    recording_sha256: Annotated[str | None, Pii] = None
    submitted_at: AwareDatetime
    submitted_by: Actor


class IndirectItemApproved(EventData):
    event_type: ClassVar[str] = "rj.indirect.item-approved"

    case_id: str
    item_id: str
    recording_sha256: Annotated[str | None, Pii] = Field(
        default=None, description="A recording's digest as approved: what is released and delivered must match it"
    )
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
    held and not pending a withdrawal (DOMAIN rule 9). A recording's digest (``recording_sha256``) is the one the
    facilitator approved: delivery sends the recording only if its bytes still hash to it.

    Participant-facing: it reaches the recipient, so its envelope starts a chain of its own (no causation leads
    from it to a staff-only fact or command); it names only its sender and recipient, sealed or by id."""

    event_type: ClassVar[str] = "rj.indirect.item-released"
    participant_facing: ClassVar[bool] = True

    case_id: str
    item_id: str
    recipient_id: str
    sender_id: Annotated[str, Pii]
    kind: IndirectItemKind
    content: Annotated[str | None, Pii] = None
    recording_ref: Annotated[str | None, Pii] = None
    recording_sha256: Annotated[str | None, Pii] = None
    trigger: ReleaseTrigger
    released_at: AwareDatetime
    released_by: Actor


class IndirectItemWithdrawn(EventData):
    event_type: ClassVar[str] = "rj.indirect.item-withdrawn"

    case_id: str
    item_id: str
    withdrawn_at: AwareDatetime
    withdrawn_by: Actor
    reason_code: IndirectEndReason = Field(
        default=IndirectEndReason.asked,
        description="Why: its sender took it back, or its sender's or recipient's participation ended",
    )


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
    IndirectItemWithdrawn,
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
    WithdrawIndirectItem,
    ReleaseDueItems,
    RecordItemDelivered,
)
