"""Commands on ``rj.commands`` (keyed by case id), and the rejection every owning service answers with.

A command names who issues it (``actor``) and may carry a ``reason``; the owning service turns it into
facts, into a ``rj.command.rejected`` that says why, or (when it finds things already so) into a
``rj.command.no-change``, so the sender always sees the outcome.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, ClassVar

from pydantic import AwareDatetime, Field

from schemas.common import Actor
from schemas.envelope import EventData
from schemas.pii import Pii


class Command(EventData):
    case_id: str = Field(min_length=1)
    actor: Actor
    # Staff's or a participant's own words (why they withdraw, say): personal data, like the facts it feeds.
    reason: Annotated[str | None, Pii] = None


class RecordVictimInformationProvided(Command):
    """A facilitator or officer told the victim about RJ (stops the Victims' Code clock)."""

    event_type: ClassVar[str] = "rj.victim-information.record-provided"

    person_id: str = Field(min_length=1)
    provided_at: AwareDatetime


class SupportReferralOutcome(StrEnum):
    referred = "referred"  # referred to a victim support service
    declined = "declined"  # the victim declined the offer of support (which also meets the duty)


class RecordVictimSupportReferral(Command):
    """Staff referred the victim to a victim support service, or the victim declined the offer of support
    (stops the Victims' Code support-referral clock either way). ``outcome`` is ``referred`` (naming
    ``support_service``) or ``declined``; ``decided_at`` is when; ``actor`` who records it; ``reason`` optional."""

    event_type: ClassVar[str] = "rj.victim-support.record-referral"

    person_id: str = Field(min_length=1)
    outcome: SupportReferralOutcome
    # Which service ("Rape Crisis", say) can tell what happened to the victim: personal data, sealed as theirs.
    support_service: Annotated[str | None, Field(max_length=200), Pii] = None
    decided_at: AwareDatetime


class CommandRejected(EventData):
    event_type: ClassVar[str] = "rj.command.rejected"

    case_id: str
    command_id: str
    command_type: str
    service: str
    reason: str
    rejected_at: AwareDatetime


class CommandAlreadyHandled(EventData):
    """The answer to a command whose id was handled before: its facts (or its rejection) are already
    out, and nothing changes now. A UI that re-sends a command can tell this from "still pending"."""

    event_type: ClassVar[str] = "rj.command.already-handled"

    case_id: str
    command_id: str
    command_type: str
    service: str
    first_received_at: AwareDatetime
    answered_at: AwareDatetime


class CommandNoChange(EventData):
    """The answer to a command its owning service took and found already so: consent given again, the same
    facilitator assigned again, a decline or withdrawal repeated. Nothing is refused and nothing changes, so no
    fact names it; this says so, and a UI can tell it from "still pending". For staff, like a rejection.

    Commands a service sends itself (a system actor's sweep) get none: they are asked again and again, and most
    of the time there is nothing to do."""

    event_type: ClassVar[str] = "rj.command.no-change"

    case_id: str
    command_id: str
    command_type: str
    service: str
    answered_at: AwareDatetime


REFERRAL_COMMANDS: tuple[type[EventData], ...] = (RecordVictimInformationProvided, RecordVictimSupportReferral)
