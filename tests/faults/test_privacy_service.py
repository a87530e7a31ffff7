"""The privacy service through the real broker and PostgreSQL: erasure (``rj privacy erase``), retention
after closure with holds, the subject access export (``rj privacy export``), rectification, and hostile
commands. Data keys are made in the key store as the services will once they encrypt."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from demo import samples
from demo.samples import case_of
from schemas import topics
from schemas.common import Actor, Contact
from schemas.envelope import EventData, new_event
from schemas.privacy import ErasePerson, HoldKind, LiftRetentionHold, PlaceRetentionHold, RectifyParticipant
from schemas.referral import CaseOpened, Participant, Role
from schemas.scheduling import CaseClosed, CloseCase, ClosureReason
from schemas.upstream import Offence
from services.runtime.fieldcrypt import encrypt_batch
from services.runtime.keystore import CASE_PERSON, MONITORING_PERSON, KeyCache, KeyStore, MasterKeys, ensure_schema
from tests.e2e.conftest import facts
from tests.faults.test_privacy_at_rest import read_topic_bytes
from tests.harness import System, of_type

pytestmark = pytest.mark.integration

DPO = Actor(kind="staff", id="dpo-1")
#: The keys a case opened by the referral service has beside its people's: its own, and its monitoring key
#: (the participants' age bands), which erasing a person leaves alone and the case's retention destroys.
CASE_KEYS = {CASE_PERSON, MONITORING_PERSON}
UI = "urn:rj:test-ui"


def master(system: System) -> MasterKeys:
    return MasterKeys.from_settings(system.settings)


def start(system: System, *names: str, **settings: Any) -> None:
    for name in names:
        system.start(name, **settings)


async def rj_privacy(system: System, *args: str) -> tuple[int, str, str]:
    """``rj privacy ARGS`` as an operator runs it, with the system's settings and master keys."""
    return await system.cli("privacy", *args)


def command(data: EventData, subject: str) -> tuple[str, str, bytes]:
    return (topics.COMMANDS, subject, new_event(data, source=UI, subject=subject).to_json())


async def with_conn(system: System) -> asyncpg.Connection:
    conn = await asyncpg.connect(system.settings.database_url)
    await ensure_schema(conn)
    return conn


def key_store(system: System) -> KeyStore:
    return KeyStore(master(system))


async def make_keys(system: System, pairs: list[tuple[str, str]]) -> None:
    """Data keys for these (person, case) pairs, as a service encrypting their data makes them."""
    conn = await with_conn(system)
    try:
        await key_store(system).data_keys_for(conn, pairs)
    finally:
        await conn.close()


async def live_keys(system: System, case_id: str) -> set[str]:
    rows = await system.fetch(
        "SELECT person_id FROM keystore.data_keys WHERE case_id = $1 AND wrapped_key IS NOT NULL", case_id
    )
    return {r["person_id"] for r in rows}


async def indexed(system: System, case_id: str, people: int) -> None:
    async def known() -> bool:
        n = await system.fetchval("SELECT count(*) FROM privacy.case_people WHERE case_id = $1", case_id)
        return bool(n == people)

    await system.wait_for(known, what=f"privacy to index {people} people on {case_id}")


async def accepted_case(system: System, ref: str) -> tuple[str, str, str]:
    await system.publish(samples.on_crime_events(samples.crime_recorded(ref), samples.outcome_recorded(ref)))
    return case_of(ref), f"V-{ref}", f"O-{ref}"


async def declined_case(system: System, ref: str) -> tuple[str, str, str]:
    """Screened out: the offender denies it; the case opens on the victim's request and is declined."""
    await system.publish(
        samples.on_crime_events(
            samples.crime_recorded(ref), samples.outcome_recorded(ref, admitted=False), samples.referral_requested(ref)
        )
    )
    return case_of(ref), f"V-{ref}", f"O-{ref}"


def answers(messages: list[dict[str, Any]], command_id: str) -> list[dict[str, Any]]:
    return [m for m in messages if m.get("causationid") == command_id or m["data"].get("command_id") == command_id]


# --- erasure ------------------------------------------------------------------------------------


async def test_erasing_a_person_on_a_case_destroys_their_key_there_alone_and_a_repeat_destroys_nothing_more(
    system: System,
) -> None:
    start(system, "referral", "privacy")
    case_id, victim, offender = await accepted_case(system, "PV/2026/000001")
    await indexed(system, case_id, 2)
    await make_keys(system, [(victim, case_id), (offender, case_id), (CASE_PERSON, case_id), (victim, "C-OTHER")])

    code, out, err = await rj_privacy(
        system, "erase", "--person", victim, "--case", case_id, "--reason", "Asked to be forgotten", "--by", "dpo-1",
        "--json",
    )  # fmt: skip

    assert code == 0, out + err
    erased = json.loads(out)
    assert erased["type"] == "rj.person.erased" and erased["subject"] == case_id
    assert {k: erased["data"][k] for k in ("erased_person_id", "case_id", "cases", "keys_destroyed", "reason")} == {
        "erased_person_id": victim,
        "case_id": case_id,
        "cases": [case_id],
        "keys_destroyed": 1,
        "reason": "Asked to be forgotten",
    }
    assert erased["data"]["erased_by"] == {"kind": "staff", "id": "dpo-1"}
    assert await live_keys(system, case_id) == {offender, *CASE_KEYS}
    assert await live_keys(system, "C-OTHER") == {victim}, "their other case is not touched"
    destroyed = await system.fetch("SELECT key_id, destroyed_at, destroyed_by FROM keystore.data_keys ORDER BY key_id")

    # The very command again, as a UI that did not see the answer re-sends it.
    sent = of_type(
        await system.read_until(topics.COMMANDS, lambda ms: bool(of_type(ms, "rj.privacy.erase"))), "rj.privacy.erase"
    )
    await system.publish([(topics.COMMANDS, case_id, json.dumps(sent[0]).encode())])
    (repeat,) = await facts(system, topics.PRIVACY, case_id, "rj.command.already-handled")
    assert repeat["data"]["command_id"] == sent[0]["id"]
    assert (
        await system.fetch("SELECT key_id, destroyed_at, destroyed_by FROM keystore.data_keys ORDER BY key_id")
        == destroyed
    )
    assert len(of_type(await system.read_until(topics.PRIVACY, bool, settle_s=0.5), "rj.person.erased")) == 1

    # On every case: the one left (known from the key store) goes; the one erased already gives no key.
    code, out, err = await rj_privacy(system, "erase", "--person", victim, "--reason", "All of it", "--json")
    assert code == 0, out + err
    everywhere = json.loads(out)["data"]
    assert (everywhere["case_id"], everywhere["cases"], everywhere["keys_destroyed"]) == (
        None,
        sorted(["C-OTHER", case_id]),
        1,
    )
    assert await live_keys(system, "C-OTHER") == set()
    assert await live_keys(system, case_id) == {offender, *CASE_KEYS}


async def test_hostile_privacy_commands_are_refused_or_dead_lettered_with_a_reason_and_the_service_keeps_going(
    system: System,
) -> None:
    start(system, "referral", "privacy")
    case_id, victim, offender = await accepted_case(system, "PV/2026/000002")
    await indexed(system, case_id, 2)
    await make_keys(system, [(victim, case_id), (offender, case_id)])

    unknown = ErasePerson(person_id="NOBODY", case_id=case_id, reason="r", actor=DPO)
    wrong_field = RectifyParticipant(
        case_id=case_id, person_id=victim, field="role", value="offender", reason="r", actor=DPO
    )
    bad_date = RectifyParticipant(
        case_id=case_id, person_id=victim, field="date_of_birth", value="last Tuesday", reason="r", actor=DPO
    )
    no_hold = LiftRetentionHold(case_id=case_id, kind=HoldKind.legal, reason="r", actor=DPO)
    good = [command(c, case_id) for c in (unknown, wrong_field, bad_date, no_hold)]

    def raw(data: Any, event_id: str) -> tuple[str, str, bytes]:
        envelope = json.loads(new_event(unknown, source=UI, subject=case_id, event_id=event_id).to_json())
        return (topics.COMMANDS, case_id, json.dumps({**envelope, "data": data}).encode())

    actor = {"kind": "staff", "id": "x"}
    malformed = [
        raw({"person_id": victim, "case_id": case_id}, "missing-fields"),
        raw({"person_id": victim, "case_id": case_id, "reason": "x" * 200_000, "actor": actor}, "huge-reason"),
        raw({"person_id": "V\u0000", "case_id": case_id, "reason": "r", "actor": actor}, "nul-person"),
    ]
    bad_bytes = (topics.COMMANDS, case_id, b'{"specversion": "1.0", "type": "rj.privacy.erase", "id": "\xff\xfe"}')
    await system.publish([*good, *malformed, bad_bytes])

    rejected = await facts(system, topics.PRIVACY, case_id, "rj.command.rejected", n=len(good) + len(malformed))
    reasons = {m["data"]["command_id"]: m["data"]["reason"] for m in rejected}
    ids = [json.loads(v)["id"] for _, _, v in good]
    assert reasons[ids[0]] == f"unknown person NOBODY on case {case_id}"
    assert reasons[ids[1]].startswith("'role' is not a personal field of a participant; one of: contact, ")
    assert reasons[ids[2]].startswith("not a valid date_of_birth")
    assert reasons[ids[3]] == "case has no legal hold to lift"
    assert "reason: Field required" in reasons["missing-fields"]
    assert "at most 2000 characters" in reasons["huge-reason"]
    assert "person_id: Value error, must not contain control characters" in reasons["nul-person"]
    letters = sorted(r["reason"] for r in await system.fetch("SELECT reason FROM privacy.dead_letters"))
    assert len(letters) == 3, letters
    for why in ("reason: String should have at most 2000 characters", "reason: Field required", "control characters"):
        assert sum(why in letter for letter in letters) == 1, (why, letters)

    async def referral_dead_lettered_the_bytes() -> bool:
        rows = await system.fetch("SELECT reason FROM referral.dead_letters WHERE source_topic = $1", topics.COMMANDS)
        return any(r["reason"].startswith("not JSON") for r in rows)

    await system.wait_for(referral_dead_lettered_the_bytes, what="the steward of rj.commands to dead-letter bad bytes")

    assert await live_keys(system, case_id) - CASE_KEYS == {victim, offender}, "nothing refused destroyed anything"
    code, out, err = await rj_privacy(system, "erase", "--person", offender, "--case", case_id, "--reason", "r")
    assert code == 0, out + err
    assert out.startswith(f"erased {offender} on {case_id}: 1 key(s) destroyed")
    assert await live_keys(system, case_id) - CASE_KEYS == {victim}
    code, out, err = await rj_privacy(system, "erase", "--person", "NOBODY", "--case", case_id, "--reason", "r")
    assert (code, out.strip()) == (1, f"refused: unknown person NOBODY on case {case_id}")
    for name in ("referral", "privacy"):
        assert system.service(name).running, system.logs(name)[-3000:]


# --- retention ----------------------------------------------------------------------------------

SCHEDULE = {"*": "1 day", "screened_out": "1 second", "not_suitable/victim": "1 second"}


async def test_rule_7_retention_erases_exactly_what_is_due_by_outcome_and_role_and_nothing_under_a_hold_until_lifted(
    system: System,
) -> None:
    start(system, "referral", "scheduling", "privacy", retention_schedule=json.dumps(SCHEDULE))
    refs = {name: f"PV/2026/1000{i}" for i, name in enumerate("ABCD")}
    cases = {name: case_of(ref) for name, ref in refs.items()}
    everyone = {name: {f"V-{ref}", f"O-{ref}", *CASE_KEYS} for name, ref in refs.items()}
    await make_keys(system, [(person, cases[name]) for name in cases for person in everyone[name]])
    # Two holds on A, placed before anything is known of the case.
    holds = [
        command(PlaceRetentionHold(case_id=cases["A"], kind=kind, reason="Claim pending", actor=DPO), cases["A"])
        for kind in (HoldKind.legal, HoldKind.complaint)
    ]
    await system.publish(holds)
    await facts(system, topics.PRIVACY, cases["A"], "rj.retention-hold.placed", n=2)

    await declined_case(system, refs["A"])  # screened out, held
    await declined_case(system, refs["B"])  # screened out: everyone goes after a second
    await accepted_case(system, refs["C"])  # closed as not suitable: its victim goes after a second
    await accepted_case(system, refs["D"])  # still open: nothing goes

    async def scheduling_has_c() -> bool:
        return bool(await system.fetchval("SELECT count(*) FROM scheduling.cases WHERE key = $1", cases["C"]))

    await system.wait_for(scheduling_has_c, what="scheduling to take case C")
    close = CloseCase(case_id=cases["C"], actor=DPO, closure_reason=ClosureReason.not_suitable, reason="No contact")
    await system.publish([command(close, cases["C"])])

    (b,) = await facts(system, topics.PRIVACY, cases["B"], "rj.case.retention-erased")
    assert b["data"]["outcome"] == "screened_out" and b["data"]["whole_case"] is True
    assert sorted((p["person_id"], p["role"], p["rule"], p["period"]) for p in b["data"]["people"]) == [
        (f"O-{refs['B']}", "offender", "screened_out", "1 second"),
        (f"V-{refs['B']}", "victim", "screened_out", "1 second"),
    ]
    assert b["data"]["keys_destroyed"] == 4  # the victim's, the offender's, the case's and its monitoring key
    (c,) = await facts(system, topics.PRIVACY, cases["C"], "rj.case.retention-erased")
    assert c["data"]["outcome"] == "not_suitable" and c["data"]["whole_case"] is False
    assert [(p["person_id"], p["rule"]) for p in c["data"]["people"]] == [(f"V-{refs['C']}", "not_suitable/victim")]

    await asyncio.sleep(1.5)  # three more runs of the job: nothing else is due
    assert await live_keys(system, cases["B"]) == set()
    assert await live_keys(system, cases["C"]) == {f"O-{refs['C']}", *CASE_KEYS}
    assert await live_keys(system, cases["D"]) == everyone["D"]
    assert await live_keys(system, cases["A"]) == everyone["A"], "a case under a hold keeps everything"
    on_privacy = await system.read_until(topics.PRIVACY, bool)
    assert sorted(m["subject"] for m in of_type(on_privacy, "rj.case.retention-erased")) == sorted(
        [cases["B"], cases["C"]]
    )

    lift = [
        command(LiftRetentionHold(case_id=cases["A"], kind=kind, reason="Settled", actor=DPO), cases["A"])
        for kind in (HoldKind.legal, HoldKind.complaint)
    ]
    await system.publish(lift[:1])
    (lifted,) = await facts(system, topics.PRIVACY, cases["A"], "rj.retention-hold.lifted")
    assert lifted["data"]["holds_remaining"] == ["complaint"]
    await asyncio.sleep(1.5)
    assert await live_keys(system, cases["A"]) == everyone["A"], "one hold still stands"

    await system.publish(lift[1:])
    (a,) = await facts(system, topics.PRIVACY, cases["A"], "rj.case.retention-erased")
    assert a["data"]["whole_case"] is True
    assert await live_keys(system, cases["A"]) == set()
    assert await live_keys(system, cases["D"]) == everyone["D"]


# --- subject access export and rectification ---------------------------------------------------


async def publish_encrypted(system: System, topic: str, data: EventData, case_id: str) -> None:
    """A fact as the services will write it once they encrypt: marked values as tokens under their owners' keys."""
    conn = await with_conn(system)
    try:
        (document,) = await encrypt_batch(
            conn, KeyCache(key_store(system)), [(type(data), data.model_dump(mode="json"), case_id)]
        )
    finally:
        await conn.close()
    envelope = json.loads(new_event(data, source="urn:rj:service:test", subject=case_id).to_json())
    await system.publish([(topic, case_id, json.dumps({**envelope, "data": document}).encode())])


async def export(system: System, person: str) -> dict[str, Any]:
    code, out, err = await rj_privacy(system, "export", "--person", person, "--json")
    assert code == 0, out + err
    return json.loads(out)  # type: ignore[no-any-return]


async def test_export_gives_a_person_their_own_data_on_each_case_and_nothing_of_anyone_else(system: System) -> None:
    start(system, "referral", "privacy")
    # Case X as the services write it today (plain), case Y as they will (encrypted), both with the victim.
    x, victim, offender = await accepted_case(system, "PV/2026/000003")
    y = "C-ENCRYPTED"
    now = datetime.now(UTC)
    people = [
        Participant(person_id=victim, role=Role.victim, required=True, name="Vera Y", contact=Contact(phone="+4411")),
        Participant(person_id="O-Y", role=Role.offender, required=True, name="Oscar Y", custody_location="HMP Y"),
    ]
    accepted = CaseOpened(
        case_id=y, crime_reference="Y/1", offence=Offence(code="105/1", category="violence", description="Assault"),
        participants=people, routes=[], opened_at=now, opened_by=DPO,
    )  # fmt: skip
    closed = CaseClosed(case_id=y, reason=ClosureReason.not_suitable, closed_at=now, closed_by=DPO, detail="Staff note")
    await publish_encrypted(system, topics.REFERRAL, accepted, y)
    await publish_encrypted(system, topics.SCHEDULING, closed, y)
    await indexed(system, x, 2)

    document = await export(system, victim)

    text = json.dumps(document)
    assert [c["case_id"] for c in document["cases"]] == sorted([x, y])
    by_case = {c["case_id"]: c for c in document["cases"]}
    plain, encrypted = by_case[x], by_case[y]
    assert plain["role"] == "victim" and plain["erased"] is False
    # The Victims' Code clocks name them (and hold nothing personal); the case facts hold their details.
    assert [e["type"] for e in plain["events"]] == [
        "rj.victim-information.due",
        "rj.victim-support.referral-due",
        "rj.case.opened",
        "rj.case.accepted",
    ]
    assert plain["events"][0]["data"] == {} and plain["events"][1]["data"] == {}
    assert plain["events"][3]["data"] == {}, "rj.case.accepted says who takes part, and nothing about them"
    assert plain["events"][2]["data"] == {
        "participants[0].name": f"Victim {victim}",
        "participants[0].date_of_birth": "1988-04-02",
        "participants[0].age_band": "35-44",  # their monitoring data, under the case's monitoring key: theirs too
        "participants[0].contact": {
            "email": f"{victim.lower()}@example.org",
            "phone": "+447700900001",
            "address": "1 High Street",
        },
    }
    assert plain["current"]["name"] == f"Victim {victim}"
    assert [e["type"] for e in encrypted["events"]] == ["rj.case.opened"]
    assert encrypted["events"][0]["data"] == {"participants[0].name": "Vera Y", "participants[0].contact": {
        "email": None, "phone": "+4411", "address": None}}  # fmt: skip
    for someone_elses in ("Offender", "+447700900002", "Oscar Y", "HMP Y", "Staff note", "enc:v1:"):
        assert someone_elses not in text, someone_elses

    # The person erased on Y: their values there read as erased; X is untouched.
    code, out, err = await rj_privacy(system, "erase", "--person", victim, "--case", y, "--reason", "Asked")
    assert code == 0, out + err
    after = {c["case_id"]: c for c in (await export(system, victim))["cases"]}
    assert after[y]["erased"] is True
    assert after[y]["events"][0]["data"] == {"participants[0].name": "(erased)", "participants[0].contact": "(erased)"}
    assert after[y]["events"][0]["erased"] == ["participants[0].name", "participants[0].contact"]
    assert after[x] == plain
    code, out, err = await rj_privacy(system, "export", "--person", victim)
    assert code == 0 and f"Victim {victim}" in out and "(erased)" in out and "Oscar Y" not in out, out + err


async def test_a_rectification_is_a_new_fact_and_the_export_shows_the_corrected_value(system: System) -> None:
    start(system, "referral", "privacy")
    case_id, victim, offender = await accepted_case(system, "PV/2026/000004")
    await indexed(system, case_id, 2)

    code, out, err = await rj_privacy(
        system, "rectify", "--person", victim, "--case", case_id, "--field", "name", "--value", "Siân Llŷr",
        "--reason", "Misspelt at intake", "--json",
    )  # fmt: skip
    assert code == 0, out + err
    fact = json.loads(out)
    assert fact["type"] == "rj.participant.rectified"
    assert {k: fact["data"][k] for k in ("person_id", "field", "value", "reason")} == {
        "person_id": victim,
        "field": "name",
        "value": "Siân Llŷr",
        "reason": "Misspelt at intake",
    }
    # The command went sealed (under the case's key: it makes no key for whoever it names), and so did the fact.
    for topic in (topics.COMMANDS, topics.PRIVACY):
        raw = b"".join(await read_topic_bytes(system, topic))
        assert b"rj.participant.rectif" in raw and "Siân".encode() not in raw and b"Misspelt" not in raw, topic
    code, out, err = await rj_privacy(
        system, "rectify", "--person", victim, "--case", case_id, "--field", "contact",
        "--value", '{"email": "new@example.org"}', "--reason", "Moved", "--json",
    )  # fmt: skip
    assert code == 0, out + err
    code, out, err = await rj_privacy(
        system, "rectify", "--person", victim, "--case", case_id, "--field", "nickname", "--value", "V", "--reason", "r"
    )
    assert code == 1 and out.startswith("refused: 'nickname' is not a personal field of a participant"), out + err

    (case,) = (await export(system, victim))["cases"]
    assert case["current"] == {
        "name": "Siân Llŷr",
        "date_of_birth": "1988-04-02",
        "contact": {"email": "new@example.org", "phone": None, "address": None},
    }
    assert [e["type"] for e in case["events"]] == [
        "rj.victim-information.due",
        "rj.victim-support.referral-due",
        "rj.case.opened",
        "rj.case.accepted",
        "rj.participant.rectified",
        "rj.participant.rectified",
    ]
    assert case["events"][2]["data"]["participants[0].name"] == f"Victim {victim}", "history is kept as it was"
    assert case["events"][4]["data"] == {"value": "Siân Llŷr", "reason": "Misspelt at intake"}
    (other,) = (await export(system, offender))["cases"]
    assert other["current"]["name"] == f"Offender {offender.removeprefix('O-')}"
    assert "Siân" not in json.dumps(other)


async def test_the_retention_sweep_takes_cases_in_turn_so_cases_not_yet_due_never_starve_the_rest(
    pg_server: str,
) -> None:
    from services.privacy import store
    from services.runtime.db import migrate
    from services.runtime.devstack import create_database, drop_database

    name = f"rj_test_sweep_{datetime.now(UTC):%H%M%S%f}"
    url = await create_database(pg_server, name)
    conn = await asyncpg.connect(url)
    try:
        await migrate(conn, "privacy", "services.privacy.migrations")
        closed = datetime(2020, 1, 1, tzinfo=UTC)
        for i in range(3):
            await conn.execute(
                "INSERT INTO privacy.cases (case_id, outcome, closed_at) VALUES ($1, 'completed', $2)",
                f"case-{i}",
                closed + timedelta(days=i),  # case-0 the oldest: a sweep by age alone would take it every time
            )
        seen = []
        for _ in range(3):  # a sweep of one case at a time
            async with conn.transaction():
                seen += [c.case_id for c in await store.lock_closed_cases(conn, datetime.now(UTC), 1)]
        assert sorted(seen) == ["case-0", "case-1", "case-2"], "each case in turn, none looked at twice"
        await conn.execute(
            "INSERT INTO privacy.retention_holds (case_id, kind, placed_at, placed_by) "
            "VALUES ('case-1', 'legal', now(), 'x')"
        )
        async with conn.transaction():
            assert "case-1" not in [c.case_id for c in await store.lock_closed_cases(conn, datetime.now(UTC), 10)]
    finally:
        await conn.close()
        await drop_database(pg_server, name)


async def test_an_erasure_a_hold_kept_is_carried_out_when_the_last_hold_is_lifted(system: System) -> None:
    start(system, "referral", "privacy")
    victim = "V-SAME-PERSON"
    refs = ("PV/2026/000031", "PV/2026/000032")
    for ref in refs:
        crime = samples.crime_recorded(ref, victims=[samples.victim(victim)])
        await system.publish(samples.on_crime_events(crime, samples.outcome_recorded(ref)))
    held, free = (case_of(ref) for ref in refs)
    await indexed(system, held, 2)
    await indexed(system, free, 2)
    for kind in ("legal", "complaint"):
        code, out, err = await rj_privacy(system, "hold", "--case", held, "--kind", kind, "--reason", "Pending")
        assert code == 0, out + err

    code, out, err = await rj_privacy(system, "erase", "--person", victim, "--reason", "Forget me", "--json")
    assert code == 0, out + err
    assert json.loads(out)["data"]["kept_under_hold"] == [held]
    assert victim not in await live_keys(system, free) and victim in await live_keys(system, held)

    code, out, err = await rj_privacy(system, "hold", "--case", held, "--kind", "legal", "--lift", "--reason", "Done")
    assert code == 0, out + err
    assert victim in await live_keys(system, held), "one hold still stands"
    code, out, err = await rj_privacy(system, "hold", "--case", held, "--kind", "complaint", "--lift", "--reason", "Ok")
    assert code == 0, out + err

    async def erased_after_lift() -> bool:
        return victim not in await live_keys(system, held)

    await system.wait_for(erased_after_lift, what="the kept erasure carried out at the last lift")
    on_privacy = await system.read_until(
        topics.PRIVACY, lambda ms: len([m for m in of_type(ms, "rj.person.erased") if m["subject"] == held]) >= 1
    )
    (done,) = [await system.opened(m) for m in of_type(on_privacy, "rj.person.erased") if m["subject"] == held]
    assert done["data"]["erased_person_id"] == victim and done["data"]["cases"] == [held]
    assert (
        done["data"]["erased_by"]["id"] and "kept while the case was under a retention hold" in done["data"]["reason"]
    )
    assert await live_keys(system, held) - CASE_KEYS == {f"O-{refs[0]}"}, "only the person asked for"
