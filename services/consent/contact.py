"""Contacting a participant, pure: their safe-contact record and their log of contact attempts.

- ``SafeContact`` is what the consent service keeps of a person's latest safe-contact record: the channels that
  are safe, whether a voicemail may be left, whether letters and visits may go to their home address, and whether
  a safe alternative address is on record (not the address itself: the consent service never uses it, and keeps
  no more than its decisions need). Every detail is the person's own data (``Pii``), sealed in the case's state.
- ``forbidden_by`` is the one rule every contact attempt is held against: no record means nothing is known to be
  unsafe; with a record, the method must be one it allows (a home visit or a letter needs the home address to be
  safe, or an alternative address; a message left on a phone needs voicemail to be allowed). An attempt is
  something that already happened: one that broke the record is still logged, and what it broke (a
  ``SafeContactBreach`` code) goes only on the staff-only fact, sealed under the case's key at a fixed length (it
  says what the safe-contact record seals), never in a rejection.
- ``ContactLog`` counts a person's attempts since they were last reached, by when each attempt was made, so an
  attempt recorded late lands where it happened: an unanswered attempt made before the latest one that reached
  them does not count. The person acting on the case themself (a consent decision through them, a preparation
  meeting with them) reaches them as an attempt would (``heard_from``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Annotated

from schemas.common import Channel
from schemas.consent import ContactMethod, ContactOutcome, RecordSafeContact, SafeContactBreach
from schemas.pii import Pii

CHANNEL_OF: dict[ContactMethod, Channel] = {
    ContactMethod.phone: Channel.phone,
    ContactMethod.sms: Channel.sms,
    ContactMethod.email: Channel.email,
    ContactMethod.letter: Channel.letter,
}
"""The channel each contact method uses; a visit uses none (it goes to an address)."""


@dataclass(frozen=True)
class SafeContact:
    person_id: str
    safe_channels: Annotated[tuple[Channel, ...], Pii]
    voicemail_ok: Annotated[bool, Pii]
    letters_to_home_ok: Annotated[bool, Pii]
    alternative_address: Annotated[bool, Pii]  # whether a safe alternative address is on record

    @classmethod
    def of(cls, command: RecordSafeContact) -> SafeContact:
        return cls(
            person_id=command.person_id,
            safe_channels=tuple(sorted(set(command.safe_channels))),
            voicemail_ok=command.voicemail_ok,
            letters_to_home_ok=command.letters_to_home_ok,
            alternative_address=command.alternative_address is not None,
        )

    @property
    def safe_address(self) -> bool:
        """Whether there is an address a letter or a visit may safely go to."""
        return self.letters_to_home_ok or self.alternative_address


def forbidden_by(safe: SafeContact | None, method: ContactMethod, outcome: ContactOutcome) -> SafeContactBreach:
    """What of the person's safe-contact record this attempt broke (``SafeContactBreach.none``: nothing). A code,
    never an address or number, but it still says what the record seals: it travels only sealed, at one length."""
    if safe is None:
        return SafeContactBreach.none
    channel = CHANNEL_OF.get(method)
    if channel is not None and channel not in safe.safe_channels:
        return SafeContactBreach.unsafe_channel
    if method in (ContactMethod.letter, ContactMethod.visit) and not safe.safe_address:
        return SafeContactBreach.no_safe_address
    if method is ContactMethod.phone and outcome is ContactOutcome.message_left and not safe.voicemail_ok:
        return SafeContactBreach.voicemail_not_allowed
    return SafeContactBreach.none


@dataclass(frozen=True)
class ContactLog:
    person_id: str
    last_reached_at: datetime | None = None
    unanswered: tuple[datetime, ...] = ()  # attempts after ``last_reached_at`` that did not reach them

    @property
    def unanswered_in_a_row(self) -> int:
        return len(self.unanswered)

    def heard_from(self, at: datetime) -> ContactLog:
        """The log once the person was in touch at ``at`` by acting on the case themself: as a reached attempt."""
        return self.after(at, ContactOutcome.reached)

    def after(self, attempted_at: datetime, outcome: ContactOutcome) -> ContactLog:
        """The log with one more attempt in it, placed by when it was made."""
        if outcome is ContactOutcome.reached:
            if self.last_reached_at is not None and attempted_at <= self.last_reached_at:
                return self
            return replace(
                self, last_reached_at=attempted_at, unanswered=tuple(t for t in self.unanswered if t > attempted_at)
            )
        if self.last_reached_at is not None and attempted_at <= self.last_reached_at:
            return self  # they were reached after it: it is not part of the run since
        return replace(self, unanswered=tuple(sorted((*self.unanswered, attempted_at))))
