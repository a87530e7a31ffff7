"""Every event type the system knows, and turning raw bytes into a validated event (or a clear reason why not).

Versioning: an event's version is the ``vN`` at the end of its ``dataschema`` (upstream events carry
none and are version 1). A breaking change bumps ``EventData.version`` and registers an upcaster that
rewrites the old payload into the new shape, so old events in the log still load. Breaking is what a
reader of the old version would refuse or misread: a required field removed or renamed, a field whose
meaning changes (``rj.case.withdrawn`` v2). Removing an optional field is not: a reader of the old
version takes its absence as none, and payload models ignore fields they do not know (``rj.case.closed``
without ``withdrawn_by``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from typing import Any

from pydantic import TypeAdapter, ValidationError

from schemas.api import API_EVENTS
from schemas.audit import AUDIT_EVENTS
from schemas.commands import REFERRAL_COMMANDS, CommandAlreadyHandled, CommandNoChange, CommandRejected
from schemas.consent import CONSENT_COMMANDS, CONSENT_EVENTS, CaseWithdrawn, case_withdrawn_v1_to_v2
from schemas.envelope import CloudEvent, Event, EventData, RawEnvelope
from schemas.indirect import INDIRECT_COMMANDS, INDIRECT_EVENTS
from schemas.links import LINK_EVENTS
from schemas.notify import NOTIFY_COMMANDS, NOTIFY_EVENTS
from schemas.privacy import PRIVACY_COMMANDS, PRIVACY_EVENTS
from schemas.referral import REFERRAL_EVENTS
from schemas.scheduling import SCHEDULING_COMMANDS, SCHEDULING_EVENTS
from schemas.upstream import UPSTREAM_EVENTS

Upcaster = Callable[[dict[str, Any]], dict[str, Any]]

_VERSION = re.compile(r":v(\d+)$")
_TYPE = re.compile(rb'"type"\s*:\s*"([^"\\]{1,200})"')


class ParseError(ValueError):
    """A message that can never be processed; the text is the reason recorded with its dead letter."""


class NewerVersion(ParseError):
    """An event of a version newer than this build of the contract knows: not bad, early. It waits
    (parked, with the rest of its case) until the service is upgraded."""


class Registry:
    def __init__(self, models: Iterable[type[EventData]] = ()) -> None:
        self._models: dict[str, type[EventData]] = {}
        self._upcasters: dict[tuple[str, int], Upcaster] = {}
        self._adapters: dict[str, TypeAdapter[Any]] = {}
        for model in models:
            self.register(model)

    def register(self, model: type[EventData]) -> None:
        if model.event_type in self._models:
            raise ValueError(f"event type {model.event_type} registered twice")
        self._models[model.event_type] = model

    def upcaster(self, event_type: str, from_version: int) -> Callable[[Upcaster], Upcaster]:
        """Register a function turning ``from_version`` data into ``from_version + 1`` data."""

        def register(fn: Upcaster) -> Upcaster:
            self._upcasters[(event_type, from_version)] = fn
            return fn

        return register

    def model(self, event_type: str) -> type[EventData]:
        return self._models[event_type]

    def __contains__(self, event_type: str) -> bool:
        return event_type in self._models

    @property
    def models(self) -> dict[str, type[EventData]]:
        return dict(self._models)

    def newer_than_known(self, event_type: str, dataschema: object) -> NewerVersion | None:
        """Why an event of ``event_type`` with this ``dataschema`` waits for an upgrade, or None."""
        version = _version_of(dataschema if isinstance(dataschema, str) else None)
        known = self._models[event_type].version
        return _newer(event_type, version, known) if version > known else None

    def parse(self, raw: bytes) -> CloudEvent[EventData]:
        return self._parse_current_version(raw) or self._parse_carefully(raw)

    def _parse_carefully(self, raw: bytes) -> CloudEvent[EventData]:
        try:
            envelope = RawEnvelope.model_validate_json(raw)
        except ValidationError as exc:
            raise ParseError(_why_not_an_envelope(raw, exc)) from None
        model = self._models.get(envelope.type)
        if model is None:
            raise ParseError(f"unknown event type {envelope.type!r}")
        data = self._upcast(envelope.type, _version_of(envelope.dataschema), envelope.data, model.version)
        try:
            payload = model.model_validate(data)
        except ValidationError as exc:
            raise ParseError(f"{envelope.type} fails its schema: {_describe(exc)}") from None
        # Both parts are validated: assemble without validating a third time.
        return Event.model_construct(envelope.model_fields_set, **{**envelope.__dict__, "data": payload})

    def _parse_current_version(self, raw: bytes) -> CloudEvent[EventData] | None:
        """The hot path: one validating pass straight into the typed envelope, for an event of a known
        type at its current version. Anything else (and every failure) takes the careful path, which
        upcasts and explains."""
        match = _TYPE.search(raw)
        model = self._models.get(match.group(1).decode()) if match else None
        if model is None:
            return None
        try:
            event = self._typed(model).validate_json(raw)
        except ValidationError:
            return None
        if event.type != model.event_type or _version_of(event.dataschema) != model.version:
            return None
        return event  # type: ignore[no-any-return]

    def _typed(self, model: type[EventData]) -> TypeAdapter[Any]:
        adapter = self._adapters.get(model.event_type)
        if adapter is None:
            adapter = self._adapters[model.event_type] = TypeAdapter(CloudEvent[model])  # type: ignore[valid-type]
        return adapter

    def _upcast(self, event_type: str, version: int, data: dict[str, Any], target: int) -> dict[str, Any]:
        if version > target:
            raise _newer(event_type, version, target)
        while version < target:
            step = self._upcasters.get((event_type, version))
            if step is None:
                raise ParseError(f"no upcaster for {event_type} from v{version}")
            data, version = step(data), version + 1
        return data


def _newer(event_type: str, version: int, known: int) -> NewerVersion:
    return NewerVersion(f"{event_type} v{version} is newer than this service knows (v{known})")


def _version_of(dataschema: str | None) -> int:
    match = _VERSION.search(dataschema or "")
    return int(match.group(1)) if match else 1


def _why_not_an_envelope(raw: bytes, exc: ValidationError) -> str:
    try:
        document = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as not_json:
        return f"not JSON: {not_json}"
    if not isinstance(document, dict):
        return f"not a CloudEvent: a JSON {type(document).__name__}, not an object"
    return f"not a CloudEvent: {_describe(exc)}"


def _describe(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(p) for p in err['loc']) or '(root)'}: {err['msg']}" for err in exc.errors()[:5])


REGISTRY = Registry(
    [
        *UPSTREAM_EVENTS,
        *REFERRAL_EVENTS,
        *REFERRAL_COMMANDS,
        CommandRejected,
        CommandAlreadyHandled,
        CommandNoChange,
        *CONSENT_EVENTS,
        *CONSENT_COMMANDS,
        *SCHEDULING_EVENTS,
        *SCHEDULING_COMMANDS,
        *INDIRECT_EVENTS,
        *INDIRECT_COMMANDS,
        *PRIVACY_EVENTS,
        *PRIVACY_COMMANDS,
        *LINK_EVENTS,
        *API_EVENTS,
        *NOTIFY_EVENTS,
        *NOTIFY_COMMANDS,
        *AUDIT_EVENTS,
    ]
)
# The contract's own old versions: each model's docstring says what changed.
REGISTRY.upcaster(CaseWithdrawn.event_type, from_version=1)(case_withdrawn_v1_to_v2)


def parse_event(raw: bytes) -> CloudEvent[EventData]:
    return REGISTRY.parse(raw)


#: Which service owns each command type: it alone decides it, answers it, and dead-letters it when it
#: is malformed. Other services pass over it unless they follow it (read it to act in case order).
COMMAND_OWNER: dict[str, str] = {
    **{model.event_type: "referral" for model in REFERRAL_COMMANDS},
    **{model.event_type: "consent" for model in CONSENT_COMMANDS},
    **{model.event_type: "scheduling" for model in SCHEDULING_COMMANDS},
    **{model.event_type: "scheduling" for model in INDIRECT_COMMANDS},
    **{model.event_type: "privacy" for model in PRIVACY_COMMANDS},
    **{model.event_type: "notify" for model in NOTIFY_COMMANDS},
}
