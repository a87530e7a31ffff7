"""The record of processing (``rj privacy inventory``) follows the contract's marks, the topics, what each
service consumes and the retention settings."""

from __future__ import annotations

import json
from typing import ClassVar

import pytest
from typer.testing import CliRunner

from schemas import topics
from schemas.registry import REGISTRY
from services.cli import SERVICES, cli, consumed_types
from services.runtime.fieldcrypt import personal_paths
from services.runtime.inventory import (
    RETENTION_SCHEDULE,
    Inventory,
    PersonalData,
    Place,
    UnroutedEventType,
    record_of_processing,
    table_rows,
)
from services.runtime.settings import Settings

DAY_MS = 24 * 3600 * 1000


def inventory(**settings: object) -> Inventory:
    return record_of_processing(Settings(**settings), consumed_types())  # type: ignore[arg-type]


def entry(inv: Inventory, event_type: str) -> PersonalData:
    (found,) = [e for e in inv.event_types if e.event_type == event_type]
    return found


def where(places: tuple[Place, ...]) -> list[str]:
    return [p.where for p in places]


def test_every_marked_path_of_every_registered_type_is_listed_and_nothing_else() -> None:
    listed = {e.event_type: list(e.fields) for e in inventory().event_types}
    marked = {t: personal_paths(m) for t, m in REGISTRY.models.items() if personal_paths(m)}
    assert listed == marked
    assert len(listed) >= 25  # the contract marks many; an empty inventory would pass the line above only if so


def test_the_participants_of_an_opened_case_travel_on_rj_referral_from_referrals_outbox() -> None:
    opened = entry(inventory(), "rj.case.opened")
    assert {"$.participants[].name", "$.participants[].contact", "$.participants[].date_of_birth"} <= set(opened.fields)
    assert (opened.topic, opened.sent_by, opened.model) == ("rj.referral", "referral", "schemas.referral.CaseOpened")
    assert where(opened.stored_in) == [
        "rj.referral",
        "referral.outbox",
        "api state",
        "notify state",
        "privacy state",
        "api.parked",
        "notify.parked",
        "privacy.parked",
        "api.dead_letters",
        "notify.dead_letters",
        "privacy.dead_letters",
        "rj.deadletter",
    ]
    # As the code says: the privacy service (who is on a case, for retention and export), the API's read model
    # (what staff are shown, still sealed) and notify (how to reach each participant, sealed, opened only to send);
    # consent and scheduling take in rj.case.accepted, which names no one.
    assert opened.read_by == ("api", "notify", "privacy")


def test_an_accepted_case_carries_no_personal_data_so_is_not_in_the_inventory() -> None:
    assert "rj.case.accepted" not in {e.event_type for e in inventory().event_types}
    assert "rj.case.opened" in {e.event_type for e in inventory().event_types}


def test_readers_are_the_services_whose_consumed_types_include_the_type() -> None:
    consumed = consumed_types()
    assert set(consumed) == set(SERVICES)
    for e in inventory().event_types:
        assert e.read_by == tuple(sorted(s for s, types in consumed.items() if e.event_type in types))


def test_commands_travel_on_rj_commands_from_the_api_with_no_outbox_of_ours() -> None:
    withdraw = entry(inventory(), "rj.consent.withdraw")
    assert (withdraw.topic, withdraw.sent_by, withdraw.fields) == (
        "rj.commands",
        "the API and staff UIs",
        ("$.reason",),
    )
    assert withdraw.read_by == ("consent", "notify", "scheduling")  # scheduling and notify follow it, in case order
    assert not any(p.where.endswith(".outbox") for p in withdraw.stored_in)


def test_upstream_records_travel_on_crime_events_for_the_retention_upstreams_setting_gives() -> None:
    recorded = entry(inventory(crime_events_retention_ms=7 * DAY_MS), "crime.recorded")
    assert (recorded.topic, recorded.sent_by, recorded.read_by) == (
        "crime.events",
        "upstream crime systems",
        ("referral",),
    )
    assert "$.victims[].name" in recorded.fields
    assert recorded.stored_in[0] == Place(
        "crime.events", "Kafka topic", f"7 days (CRIME_EVENTS_RETENTION_MS={7 * DAY_MS})"
    )


def test_how_long_each_copy_is_kept_comes_from_the_settings() -> None:
    inv = inventory(retention_window_s=3 * 3600, deadletter_retention_ms=14 * DAY_MS)
    kept = {p.where: p.kept for p in inv.places()}
    assert kept["rj.referral"].startswith("for ever (retention.ms=-1)")
    assert kept["referral.outbox"].startswith("3 hours after it is published (RETENTION_WINDOW_S)")
    assert kept["rj.deadletter"] == f"14 days (DEADLETTER_RETENTION_MS={14 * DAY_MS})"
    assert kept["consent.dead_letters"] == "not pruned by housekeeping"
    for e in inv.event_types:
        assert e.erased.endswith(RETENTION_SCHEDULE)
    assert RETENTION_SCHEDULE == (
        "per the retention schedule (RETENTION_SCHEDULE; default 24 months after case closure)"
    )


def test_the_key_store_and_upstreams_topic_are_listed() -> None:
    key_store, crime_events, audit_log, letter_queue = inventory().holdings
    assert audit_log.name == "the audit log" and audit_log.stored_in[0].where == "audit.entries"
    assert letter_queue.stored_in[0].where == "notify.letters" and "postal address" in letter_queue.holds
    assert RETENTION_SCHEDULE in letter_queue.stored_in[0].kept and "shreds their letters" in letter_queue.erased
    assert where(key_store.stored_in) == ["keystore.data_keys, keystore.bucket_keys"]
    assert RETENTION_SCHEDULE in key_store.stored_in[0].kept
    assert "MASTER_KEYS" in key_store.holds
    assert crime_events.read_by == ("referral",)
    assert where(crime_events.stored_in) == ["crime.events", "referral state", "referral.dead_letters", "rj.deadletter"]
    assert "copies only in referral state and dead letters" in crime_events.holds


def test_a_personal_type_with_no_known_topic_is_refused_not_left_out() -> None:
    from schemas.envelope import EventData
    from schemas.pii import PiiStr
    from schemas.registry import Registry

    class Stray(EventData):
        event_type: ClassVar[str] = "rj.stray.happened"
        name: PiiStr

    with pytest.raises(UnroutedEventType, match="rj.stray.happened"):
        record_of_processing(Settings(), consumed_types(), Registry([Stray]))


def test_the_table_has_a_row_per_personal_type_and_holding() -> None:
    inv = inventory()
    rows = table_rows(inv)
    assert len(rows) == len(inv.event_types) + len(inv.holdings)
    opened = next(r for r in rows if r[0].startswith("rj.case.opened\n"))
    assert opened == (
        "rj.case.opened\n  participants[].age_band\n  participants[].contact\n  participants[].custody_location\n"
        "  participants[].date_of_birth\n  participants[].ethnicity\n  participants[].gender\n  participants[].name",
        "rj.referral\nreferral.outbox\napi state\nnotify state\nprivacy state\napi.parked\nnotify.parked\n"
        "privacy.parked\napi.dead_letters\nnotify.dead_letters\nprivacy.dead_letters\nrj.deadletter",
        "api\nnotify\nprivacy",
    )


def test_rj_privacy_inventory_prints_json_that_parses_and_a_table() -> None:
    runner = CliRunner()
    as_json = runner.invoke(cli, ["privacy", "inventory", "--json"])
    assert as_json.exit_code == 0, as_json.output
    document = json.loads(as_json.output)
    withdrawn = next(e for e in document["event_types"] if e["event_type"] == "rj.consent.withdrawn")
    assert withdrawn["topic"] == topics.CONSENT and "scheduling" in withdrawn["read_by"]
    assert {"where": "consent.outbox"}.items() <= withdrawn["stored_in"][1].items()
    assert [h["name"] for h in document["holdings"]] == [
        "the key store",
        "upstream's topic crime.events",
        "the audit log",
        "the letter queue",
    ]
    assert document["retention_schedule"] == RETENTION_SCHEDULE

    table = runner.invoke(cli, ["privacy", "inventory"], env={"COLUMNS": "200"})
    assert table.exit_code == 0, table.output
    for text in ("rj.case.opened", "participants[].date_of_birth", "How long each copy is kept", "keystore.data_keys"):
        assert text in table.output
