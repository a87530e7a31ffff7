"""Facts about participants' withdraw links, published by the API on ``rj.api`` (subject and key: the case id).

A participant can withdraw by themselves through a personal link in their messages (``services/api/links.py``).
On a sensitive case the links are off until a member of staff turns them on: someone who controls the
participant's phone could otherwise act in their name. Each change is a decision, recorded with who, when and why;
so is each link staff make for someone (``ParticipantLinkIssued``): a link acts in a participant's name.
"""

from __future__ import annotations

import re
from typing import Annotated, ClassVar

from pydantic import AfterValidator, AwareDatetime, Field

from schemas.common import Actor
from schemas.envelope import EventData

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")  # tab and line breaks allowed: staff write sentences


def _printable(value: str | None) -> str | None:
    if value is not None and _CONTROL.search(value):
        raise ValueError("must not contain control characters")
    return value


class ParticipantLinksChanged(EventData):
    """Staff turned participants' withdraw links on or off for one case. ``reason`` is staff's own note on why,
    kept in clear like the setting it explains: it is about the decision and must not hold anyone's personal
    details (the UI says so where it is typed)."""

    event_type: ClassVar[str] = "rj.participant-links.changed"

    case_id: str = Field(min_length=1, max_length=200)
    enabled: bool
    changed_by: Actor
    changed_at: AwareDatetime
    reason: Annotated[str | None, Field(max_length=2000), AfterValidator(_printable)] = None


class ParticipantLinkIssued(EventData):
    """A member of staff made a participant's withdraw link (for a message to them): who made it for whom, and
    until when it works. Whoever holds the link can withdraw that person, so who made each one is on record; the
    link itself (its token) is not: the fact names it by ``link_id``, which the token carries and which is
    recorded when it is used."""

    event_type: ClassVar[str] = "rj.participant-link.issued"

    case_id: str = Field(min_length=1, max_length=200)
    person_id: str = Field(min_length=1, max_length=200, description="The participant the link withdraws")
    link_id: str = Field(min_length=16, max_length=64, description="The link's id, inside its token")
    issued_by: Actor
    issued_at: AwareDatetime
    expires_at: AwareDatetime


LINK_EVENTS: tuple[type[EventData], ...] = (ParticipantLinksChanged, ParticipantLinkIssued)
