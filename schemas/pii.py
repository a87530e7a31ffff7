"""Marks personal data in the contract.

A field annotated with ``Pii`` carries ``"x-pii": true`` in its JSON Schema, so the privacy tooling
(encryption at rest, crypto-shredding, redaction for participants) can find every personal field from
the contract alone, without a list kept by hand somewhere else.

``MonitoringPii`` marks the equality-monitoring data kept for someone who declines (age band, gender,
ethnicity): personal (special-category) data, encrypted like the rest, but under the case's monitoring key
(``"x-pii-key": "monitoring"``), which erasing the person on the case does not destroy; the case's
retention does.

``CasePii`` marks a value sealed under the case's own key (``"x-pii-key": "case"``) whoever it is about: who
declined or withdrew, on the consent facts, must stay readable to staff and services (closing the case, the
closure notice) after that person is erased, yet never be in clear (other participants must not learn it). Every
other sealed value on a fact about who withdrew or declined (their reason) is ``CasePii`` too: a token's key id
is in clear, and a value under the person's own key would match their data on ``rj.case.opened`` and name them.
"""

from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, Field

T = TypeVar("T")

PII_MARK = "x-pii"
PII_KEY = "x-pii-key"
"""Which key a marked value is sealed under when it is not its owner's own (see ``MONITORING``)."""
MONITORING = "monitoring"
CASE = "case"

Pii = Field(json_schema_extra={PII_MARK: True})

PiiStr = Annotated[str, Pii]

MonitoringPii = Field(json_schema_extra={PII_MARK: True, PII_KEY: MONITORING})

CasePii = Field(json_schema_extra={PII_MARK: True, PII_KEY: CASE})


def pii_fields(model: type[BaseModel]) -> set[str]:
    """Names of the fields of ``model`` marked as personal data."""
    return {
        name
        for name, info in model.model_fields.items()
        if isinstance(info.json_schema_extra, dict) and info.json_schema_extra.get(PII_MARK)
    }


def monitoring_fields(model: type[BaseModel]) -> set[str]:
    """Names of the fields of ``model`` marked as monitoring data (``MonitoringPii``)."""
    return {
        name
        for name, info in model.model_fields.items()
        if isinstance(info.json_schema_extra, dict) and info.json_schema_extra.get(PII_KEY) == MONITORING
    }


def is_pii(schema: dict[str, Any]) -> bool:
    return bool(schema.get(PII_MARK))


def pii_key(schema: dict[str, Any]) -> str | None:
    """The key a marked value is sealed under, when not its owner's own (``MONITORING``, ``CASE``), else None."""
    key = schema.get(PII_KEY)
    return key if isinstance(key, str) else None
