"""Facts the API itself decides, on ``rj.api`` (keyed by case id): the view log (rule 8)."""

from __future__ import annotations

from typing import ClassVar

from pydantic import AwareDatetime, Field

from schemas.envelope import EventData


class ViewLogged(EventData):
    """A member of staff was shown personal data on a case: who (``viewer_id`` in ``role``), when, which fields
    (dotted paths such as ``participants[P-1].name``, never their values), the ``reason`` they stated (required of
    an auditor; staff's own words about why they look, kept plain), and ``what`` they looked at (``case page``).
    Written in the transaction of the read, before the response goes out."""

    event_type: ClassVar[str] = "rj.view.logged"

    case_id: str = Field(min_length=1)
    viewer_id: str = Field(min_length=1)
    role: str = Field(min_length=1)
    viewed_at: AwareDatetime
    fields: list[str] = Field(min_length=1)
    reason: str | None = Field(default=None, max_length=500)
    what: str = Field(min_length=1)


API_EVENTS: tuple[type[EventData], ...] = (ViewLogged,)
