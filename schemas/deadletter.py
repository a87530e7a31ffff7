"""What goes on ``rj.deadletter``: a message a service could not process, with the reason and its bytes."""

from __future__ import annotations

import base64

from pydantic import AwareDatetime, BaseModel, ConfigDict


class DeadLetter(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: str
    service: str
    reason: str
    source_topic: str
    partition: int
    offset: int
    key_b64: str | None
    original_b64: str
    event_id: str | None = None
    event_type: str | None = None
    dead_lettered_at: AwareDatetime

    def original(self) -> bytes:
        return base64.b64decode(self.original_b64)
