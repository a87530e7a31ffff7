"""Value types shared by several events."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from schemas.pii import Pii


class Channel(StrEnum):
    email = "email"
    sms = "sms"
    phone = "phone"
    letter = "letter"


class Contact(BaseModel):
    """How to reach a person. Personal data through and through."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    email: Annotated[str | None, Pii] = None
    phone: Annotated[str | None, Pii] = None
    address: Annotated[str | None, Pii] = None


class Actor(BaseModel):
    """Who made a decision: a member of staff, a participant, or a system."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    kind: Annotated[str, Field(pattern="^(staff|participant|system)$")]
    id: str = Field(min_length=1)


SYSTEM_REFERRAL = Actor(kind="system", id="referral-service")
