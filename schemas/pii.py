"""Marks personal data in the contract.

A field annotated with ``Pii`` carries ``"x-pii": true`` in its JSON Schema, so the privacy tooling
(encryption at rest, crypto-shredding, redaction for participants) can find every personal field from
the contract alone, without a list kept by hand somewhere else.
"""

from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, Field

T = TypeVar("T")

PII_MARK = "x-pii"

Pii = Field(json_schema_extra={PII_MARK: True})

PiiStr = Annotated[str, Pii]


def pii_fields(model: type[BaseModel]) -> set[str]:
    """Names of the fields of ``model`` marked as personal data."""
    return {
        name
        for name, info in model.model_fields.items()
        if isinstance(info.json_schema_extra, dict) and info.json_schema_extra.get(PII_MARK)
    }


def is_pii(schema: dict[str, Any]) -> bool:
    return bool(schema.get(PII_MARK))
