"""The event contract: upstream's example loads, bad input is explained, PII is marked, files are fresh."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

import pytest

from schemas.common import Actor
from schemas.consent import (
    PARTICIPATION,
    SYSTEM_CONSENT,
    CaseWithdrawalReason,
    CaseWithdrawn,
    ConsentWithdrawn,
    RecordedThrough,
    RecordingMethod,
    WithdrawConsent,
)
from schemas.envelope import EventData, new_event
from schemas.export import json_schemas, render
from schemas.pii import PII_MARK, pii_fields
from schemas.registry import REGISTRY, ParseError, Registry, parse_event
from schemas.scheduling import CaseClosed, ClosureReason
from schemas.upstream import CrimeRecorded, Victim

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = (ROOT / "tests" / "fixtures" / "crime_recorded.json").read_bytes()
AT = datetime(2026, 1, 1, tzinfo=UTC)
WITHDRAWAL: dict[str, Any] = {
    "person_id": "victim-1",
    "purpose": PARTICIPATION,
    "through": RecordedThrough.participant,
    "method": RecordingMethod.online,
}


def test_upstreams_documented_example_loads_as_a_crime_recorded_event() -> None:
    event = parse_event(EXAMPLE)
    assert isinstance(event.data, CrimeRecorded)
    assert event.subject == "WM/2026/000123"
    assert event.data.victims[0].name == "Siân Llŷr"
    assert event.data.victims[0].contact is not None and event.data.victims[0].contact.phone == "+447700900001"


def test_an_emitted_event_round_trips_with_its_payload_and_causal_chain() -> None:
    cause = parse_event(EXAMPLE)
    assert isinstance(cause.data, CrimeRecorded)
    emitted = new_event(cause.data, source="urn:rj:test", subject="case-1", cause=cause)
    again = parse_event(emitted.to_json())
    assert again.data == cause.data
    assert again.causationid == cause.id and again.correlationid == cause.id
    assert again.dataschema == "urn:rj:schema:crime.recorded:v1"


def test_a_participant_facing_fact_starts_its_own_chain_and_a_staff_only_fact_continues_its_cause() -> None:
    command = new_event(
        WithdrawConsent(case_id="case-1", actor=Actor(kind="participant", id="victim-1"), **WITHDRAWAL),
        source="urn:rj:ui",
        subject="case-1",
    )
    staff_only = new_event(
        ConsentWithdrawn(
            case_id="case-1",
            withdrawn_at=AT,
            withdrawn_by=Actor(kind="participant", id="victim-1"),
            recorded_at=AT,
            **WITHDRAWAL,
        ),
        source="urn:rj:service:consent",
        subject="case-1",
        cause=command,
    )
    everyone = CaseWithdrawn(
        case_id="case-1", reason=CaseWithdrawalReason.consent_withdrawn, withdrawn_at=AT, decided_by=SYSTEM_CONSENT
    )
    for cause in (command, staff_only):
        told = new_event(everyone, source="urn:rj:service:consent", subject="case-1", cause=cause, event_id="e-1")
        again = parse_event(told.to_json())
        assert (again.id, again.causationid, again.correlationid) == ("e-1", None, "case-1")
    assert (staff_only.causationid, staff_only.correlationid) == (command.id, command.id)


def test_a_case_withdrawn_written_at_v1_loads_as_v2_naming_no_one() -> None:
    old = {
        "specversion": "1.0",
        "id": "old-1",
        "source": "urn:rj:service:consent",
        "type": "rj.case.withdrawn",
        "subject": "case-1",
        "time": "2026-01-01T00:00:00Z",
        "dataschema": "urn:rj:schema:rj.case.withdrawn:v1",
        "data": {
            "case_id": "case-1",
            "reason": "consent_declined",
            "person_id": "victim-1",
            "withdrawn_at": "2026-01-01T00:00:00Z",
            "recorded_by": {"kind": "participant", "id": "victim-1"},
        },
    }
    event = parse_event(json.dumps(old).encode())
    assert event.data == CaseWithdrawn(
        case_id="case-1", reason=CaseWithdrawalReason.consent_declined, withdrawn_at=AT, decided_by=SYSTEM_CONSENT
    )
    assert "victim-1" not in event.to_json().decode()
    assert CaseWithdrawn.dataschema() == "urn:rj:schema:rj.case.withdrawn:v2"


def test_a_case_closed_written_with_withdrawn_by_still_loads_at_v1_without_it() -> None:
    closed = new_event(
        CaseClosed(case_id="case-1", reason=ClosureReason.withdrawn, closed_at=AT, closed_by=SYSTEM_CONSENT),
        source="urn:rj:service:scheduling",
        subject="case-1",
    )
    written_before = json.loads(closed.to_json())
    written_before["data"]["withdrawn_by"] = "victim-1"
    event = parse_event(json.dumps(written_before).encode())
    assert event.data == closed.data and event.dataschema == "urn:rj:schema:rj.case.closed:v1"


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"\xff\xfe", "not JSON"),
        (b"[]", "not a CloudEvent: a JSON list, not an object"),
        (b'{"specversion": "1.0"}', "not a CloudEvent: id: Field required"),
        (EXAMPLE.replace(b'"crime.recorded"', b'"crime.unheard-of"'), "unknown event type 'crime.unheard-of'"),
        (
            EXAMPLE.replace(b'"reported_at"', b'"reported"'),
            "crime.recorded fails its schema: reported_at: Field required",
        ),
        (EXAMPLE.replace(b'"specversion": "1.0"', b'"specversion": "0.3"'), "not a CloudEvent: specversion"),
    ],
)
def test_a_message_that_cannot_be_processed_is_refused_with_a_reason(raw: bytes, reason: str) -> None:
    with pytest.raises(ParseError) as refused:
        parse_event(raw)
    assert str(refused.value).startswith(reason)


def test_upstream_crime_references_are_trimmed_so_padding_cannot_open_a_second_case() -> None:
    padded = json.loads(EXAMPLE)
    padded["data"]["crime_reference"] = "  WM/2026/000123 "
    event = parse_event(json.dumps(padded).encode())
    assert isinstance(event.data, CrimeRecorded)
    assert event.data.crime_reference == "WM/2026/000123"


def test_personal_data_is_marked_in_the_contract() -> None:
    assert pii_fields(Victim) == {"name", "date_of_birth", "contact", "gender", "ethnicity"}
    schema = json_schemas()["crime.recorded.v1.json"]
    victim = schema["$defs"]["Victim"]["properties"]
    assert victim["name"][PII_MARK] is True
    assert PII_MARK not in victim["person_id"]


def test_an_old_version_of_an_event_is_upcast_and_still_loads() -> None:
    class Renamed(EventData):
        event_type: ClassVar[str] = "test.thing.renamed"
        version: ClassVar[int] = 2
        full_name: str

    registry = Registry([Renamed])

    @registry.upcaster("test.thing.renamed", from_version=1)
    def name_became_full_name(data: dict[str, object]) -> dict[str, object]:
        return {"full_name": data["name"]}

    old = {
        "specversion": "1.0",
        "id": "1",
        "source": "s",
        "type": "test.thing.renamed",
        "time": "2026-01-01T00:00:00Z",
        "dataschema": "urn:rj:schema:test.thing.renamed:v1",
        "data": {"name": "A"},
    }
    assert registry.parse(json.dumps(old).encode()).data == Renamed(full_name="A")
    newer = {**old, "dataschema": "urn:rj:schema:test.thing.renamed:v3"}
    with pytest.raises(ParseError, match="newer than this service knows"):
        registry.parse(json.dumps(newer).encode())


def test_the_committed_json_schema_files_match_the_models() -> None:
    """Run ``rj schemas export`` after changing a model; other teams code against these files."""
    directory = ROOT / "schemas" / "jsonschema"
    expected = {name: render(schema) for name, schema in json_schemas().items()}
    committed = {path.name: path.read_text() for path in directory.glob("*.json")}
    assert sorted(committed) == sorted(expected), "stale file list: run `rj schemas export`"
    for name, text in expected.items():
        assert committed[name] == text, f"{name} is stale: run `rj schemas export`"


def test_every_registered_event_type_follows_the_naming_rule() -> None:
    for event_type in REGISTRY.models:
        parts = event_type.split(".")
        assert len(parts) in (2, 3) and all(parts), event_type


def test_the_fast_path_and_the_careful_path_read_an_event_the_same() -> None:
    fast = REGISTRY._parse_current_version(EXAMPLE)  # noqa: SLF001 - comparing the two paths is the point
    assert fast is not None
    nested = json.loads(EXAMPLE)
    nested["data"]["offence"]["type"] = "rj.case.opened"  # a "type" inside the payload must not mislead it
    nested_raw = json.dumps({"data": nested.pop("data"), **nested}).encode()
    assert REGISTRY.parse(nested_raw).type == "crime.recorded"
    careful = REGISTRY._parse_carefully(EXAMPLE)  # noqa: SLF001
    assert fast.model_dump(serialize_as_any=True) == careful.model_dump(serialize_as_any=True)
    assert json.loads(fast.to_json()) == json.loads(careful.to_json())


def test_every_exported_envelope_schema_accepts_only_its_own_event_type_and_version() -> None:
    documents = json_schemas()
    for event_type, model in REGISTRY.models.items():
        envelope = documents[f"{event_type}.v{model.version}.json"]["properties"]
        assert envelope["type"]["const"] == event_type
        pinned = [branch["const"] for branch in envelope["dataschema"]["anyOf"] if "const" in branch]
        assert pinned == [model.dataschema()], event_type


def test_the_fast_serialisation_of_an_emitted_event_is_the_same_json_as_pydantics() -> None:
    cause = parse_event(EXAMPLE)
    emitted = new_event(cause.data, source="urn:rj:test", subject="case-1", cause=cause)
    for event in (emitted, cause):
        absent = {
            a for a in ("subject", "dataschema", "correlationid", "causationid", "force") if getattr(event, a) is None
        }
        assert event.to_json() == event.model_dump_json(exclude=absent, serialize_as_any=True).encode()


@pytest.mark.parametrize("parts", [("a",), ("urn:rj:service:referral", "case-1", "case-opened"), ("Siân", "|", "")])
def test_derived_event_ids_are_uuid5_of_their_parts(parts: tuple[str, ...]) -> None:
    import uuid

    from schemas.envelope import _DERIVED_NS, derived_event_id

    assert derived_event_id(*parts) == str(uuid.uuid5(_DERIVED_NS, "|".join(parts)))


# Facts no one decides: a clock started or run out, a case taken in, a retention sweep. Who is the service
# that publishes them (the envelope's ``source``), when is in the fact, and why is the rule the code names.
NOT_A_DECISION = {
    "rj.victim-information.due",
    "rj.victim-information.overdue",
    "rj.victim-support.referral-due",
    "rj.victim-support.referral-overdue",
    "rj.preparation.started",
    "rj.case.retention-erased",
}


def test_rule_6_every_decision_is_a_fact_that_says_who_made_it_and_when() -> None:
    from schemas.consent import CONSENT_EVENTS
    from schemas.notify import NOTIFY_EVENTS
    from schemas.privacy import PRIVACY_EVENTS
    from schemas.referral import REFERRAL_EVENTS
    from schemas.scheduling import SCHEDULING_EVENTS

    for model in (*REFERRAL_EVENTS, *CONSENT_EVENTS, *SCHEDULING_EVENTS, *PRIVACY_EVENTS, *NOTIFY_EVENTS):
        if model.event_type in NOT_A_DECISION:
            continue
        who = [name for name, f in model.model_fields.items() if "Actor" in str(f.annotation)]
        when = [name for name, f in model.model_fields.items() if "datetime" in str(f.annotation).lower()]
        assert who and when, f"{model.event_type} does not say who decided it and when"
