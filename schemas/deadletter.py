"""What goes on ``rj.deadletter``: a message a service could not process, with the reason and its bytes.

The original bytes are kept whole in the service's own ``dead_letters`` table (``stored_as`` names the
row); the Kafka copy is bounded so that a huge record still makes a dead letter the broker accepts. Both
are encrypted whole (an unreadable record may still hold a victim's details), under a key per day that
retention destroys.
"""

from __future__ import annotations

import base64

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field


class DeadLetter(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: str
    service: str
    reason: str
    source_topic: str
    partition: int
    offset: int
    key_b64: str | None
    original_b64: str = Field(
        description="The original bytes, or their first `copied_bytes` when truncated; sealed whole when `sealed`"
    )
    sealed: bool = Field(
        default=False,
        description="`original_b64` is encrypted whole (it may hold personal data) under the key of its day, "
        "with the letter's id as context: `rj deadletters show` opens it",
    )
    original_size: int | None = Field(default=None, description="Bytes in the original; null for a tombstone")
    original_sha256: str | None = None
    truncated: bool = False
    stored_as: str | None = Field(default=None, description="Where the whole original is kept: schema.table/id")
    event_id: str | None = None
    event_type: str | None = None
    dead_lettered_at: AwareDatetime

    def original(self) -> bytes:
        return base64.b64decode(self.original_b64)
