"""A Kafka record as a service receives it, and text made safe for PostgreSQL."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass


@dataclass(frozen=True)
class Record:
    """One Kafka record as received: where it came from and its untouched bytes."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None  # None: a tombstone

    @property
    def position(self) -> str:
        return f"{self.topic}:{self.partition}:{self.offset}"

    @property
    def case_key(self) -> str:
        """What orders this record against others: its Kafka key (the case id, or upstream's crime
        reference), as text PostgreSQL can store and index (a long key by its hash); "" when keyless."""
        if self.key is None:
            return ""
        if len(self.key) > 200:
            return "sha256:" + hashlib.sha256(self.key).hexdigest()
        return printable(self.key.decode("utf-8", "replace"))


def printable(text: str) -> str:
    """``text`` as PostgreSQL text accepts it: no NUL, no lone surrogates."""
    return text.replace("\x00", "\ufffd").encode("utf-8", "replace").decode("utf-8")


def describe_error(exc: BaseException, *, typed: bool = False) -> str:
    """What went wrong, for a dead letter's reason or a log: never the input values (a pydantic error's
    text quotes them, and they may be a victim's details opened for the handler). The exception's type
    leads unless it is a ``ValueError`` (whose text is the reason) and ``typed`` is not asked for."""
    text = str(exc)
    errors = getattr(exc, "errors", None)
    if callable(errors) and type(exc).__name__ == "ValidationError":
        try:
            text = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or '(root)'}: {e['msg']}" for e in errors(include_input=False)[:5]
            )
        except TypeError:
            pass
    return f"{type(exc).__name__}: {text}" if typed or not isinstance(exc, ValueError) else text
