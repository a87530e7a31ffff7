"""``rj dev`` and ``rj demo``: the whole system on the embedded broker and PostgreSQL, on one machine."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
from rich.console import Console
from rich.table import Table

from demo import samples
from demo.reader import TopicReader
from schemas import topics
from schemas.upstream import Requester, RiskFlag
from services.api.issuer import LocalIssuer, issuer_from_settings
from services.catalog import SERVICES
from services.runtime.devstack import database_for_run, ensure_postgres, master_key_file, start_broker
from services.runtime.kafka import ensure_topics, publish
from services.runtime.settings import Settings, get_settings
from services.runtime.supervisor import Supervisor

console = Console(width=120)
STATE_DIR = Path(".rj")


def run_dev(*, demo: bool, keep_running: bool) -> int:
    return asyncio.run(_run(demo=demo, keep_running=keep_running or not demo))


async def _run(*, demo: bool, keep_running: bool) -> int:
    STATE_DIR.mkdir(exist_ok=True)
    (STATE_DIR / "logs").mkdir(exist_ok=True)
    broker = start_broker(log_path=STATE_DIR / "logs" / "tansu.log")
    server = await ensure_postgres(STATE_DIR)
    keys = master_key_file(STATE_DIR)
    login: LocalIssuer | None = None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        login = await start_login(get_settings())
        async with database_for_run(server, "rj_dev") as database_url:
            env = {
                "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap,
                "DATABASE_URL": database_url,
                "DEADLINE_SWEEP_INTERVAL_S": os.environ.get("DEADLINE_SWEEP_INTERVAL_S", "2"),
                "MASTER_KEY_FILE": str(keys),
                **login_env(login),
            }
            settings = Settings(
                kafka_bootstrap_servers=broker.bootstrap, database_url=database_url, master_key_file=keys
            )
            await ensure_topics(settings)
            supervisor = Supervisor(env=env, log_dir=STATE_DIR / "logs")
            for name in SERVICES:
                supervisor.start(name)
            console.print(f"[bold]RJ system up[/]: broker {broker.bootstrap}, database {database_url}")
            console.print(f"services: {', '.join(SERVICES)} (logs in {STATE_DIR / 'logs'})")
            if login is not None:
                console.print(
                    f"login: local issuer {login.url}; a token for any role: "
                    "rj token --user F-ANN --role facilitator (or volunteer, coordinator, auditor)"
                )
            try:
                if demo:
                    await run_demo(settings, stop)
                if keep_running:
                    console.print("running; Ctrl-C stops everything")
                    await stop.wait()
            finally:
                console.print("stopping services")
                supervisor.stop_all()
    finally:
        broker.stop()
        if login is not None:
            await login.stop()
    return 0


async def start_login(settings: Settings) -> LocalIssuer | None:
    """The local issuer, serving at the URL and with the key file the settings name, so ``rj token`` in
    another terminal (same directory, same environment) mints tokens the services accept. None when
    ``OIDC_ISSUER`` names a real identity provider: the services then use that one, as they inherit it."""
    try:
        login = issuer_from_settings(settings)
    except ValueError as exc:
        console.print(f"login: {exc}; using it, no local issuer")
        return None
    try:
        await login.start()
    except RuntimeError as exc:
        raise SystemExit(
            f"{exc}: is another `rj dev` or `rj issuer` running? (DEV_ISSUER_PORT picks another)"
        ) from None
    return login


def login_env(login: LocalIssuer | None) -> dict[str, str]:
    """What points the services' token verifier at the local issuer (nothing when a real one is set)."""
    if login is None:
        return {}
    return {"OIDC_ISSUER": login.url, "OIDC_JWKS_URL": login.jwks_url}


def demo_events() -> list[tuple[str, str, bytes]]:
    """A morning's upstream traffic, out of order, with repeats and two broken messages."""
    s = samples
    first_report = datetime(2025, 12, 19, 9, 30, tzinfo=UTC)  # a Friday before Christmas
    assault = s.crime_recorded("WM/2026/000101")
    domestic = s.crime_recorded("WM/2026/000102", description="Assault (domestic)")
    burglary = s.crime_recorded("WM/2026/000103", category="burglary", description="Burglary dwelling")
    damage = s.crime_recorded(
        "WM/2026/000104",
        category="criminal_damage",
        description="Criminal damage",
        victims=[s.victim("P-2041", born=datetime.now(UTC).date().replace(year=datetime.now(UTC).year - 16))],
    )
    theft = s.crime_recorded("WM/2026/000105", category="theft", description="Theft from a shop")
    old = s.crime_recorded("WM/2025/009876", reported_at=first_report, description="Harassment")
    letters = s.crime_recorded("WM/2026/000106", description="Assault (the victim would rather write than meet)")
    events = [
        *s.on_crime_events(s.outcome_recorded("WM/2026/000101"), assault),  # outcome first
        *s.on_crime_events(domestic, s.outcome_recorded("WM/2026/000102", risk_flags=[RiskFlag.domestic_abuse])),
        *s.on_crime_events(
            burglary, s.referral_requested("WM/2026/000103"), s.outcome_recorded("WM/2026/000103", admitted=False)
        ),
        *s.on_crime_events(damage, s.outcome_recorded("WM/2026/000104")),
        *s.on_crime_events(theft, s.referral_requested("WM/2026/000105", by=Requester.officer)),
        *s.on_crime_events(old),
        *s.on_crime_events(letters, s.outcome_recorded("WM/2026/000106")),
    ]
    repeats = events[:2] * 2  # at-least-once upstream: the same two messages twice more
    broken = [
        (topics.CRIME_EVENTS, "WM/2026/000999", b"this is not JSON"),
        (topics.CRIME_EVENTS, "WM/2026/000998", json.dumps({"specversion": "1.0", "type": "crime.recorded"}).encode()),
    ]
    return events + repeats + broken


async def run_demo(settings: Settings, stop: asyncio.Event) -> None:
    events = demo_events()
    reader = TopicReader(settings, [topics.REFERRAL, topics.DEADLETTER])
    await reader.start()
    await publish(settings, events)
    console.print(f"\npublished {len(events)} upstream messages on crime.events (incl. 4 repeats, 2 broken)\n")
    seen: dict[str, int] = {}
    dead = 0
    deadline = asyncio.get_running_loop().time() + 90
    # 6 opened, 5 screened; per victim (7) two Victims' Code clocks started; the old crime's two overdue;
    # 2 dead letters
    while sum(seen.values()) < 27 or dead < 2:
        if stop.is_set() or asyncio.get_running_loop().time() > deadline:
            console.print("[red]demo timed out waiting for the services[/]")
            break
        for topic, _key, value in await reader.read():
            body = json.loads(value)
            if topic.endswith(topics.DEADLETTER):
                dead += 1
                console.print(f"[red]dead letter[/]   {body['reason']}")
                continue
            seen[body["type"]] = seen.get(body["type"], 0) + 1
            data = body["data"]
            console.print(f"[green]{body['type']:<36}[/] {data['crime_reference']:<16} {_describe(body)}")
    await reader.stop()
    await print_cases(settings.database_url)
    try:
        await walk_cases(settings, stop)
    except TimeoutError as exc:
        console.print(f"[red]demo stopped waiting: {exc}[/]")


def _describe(body: dict[str, object]) -> str:
    data: dict[str, object] = body["data"]  # type: ignore[assignment]
    match body["type"]:
        case "rj.case.accepted" | "rj.case.declined":
            return str(data["reason"])
        case "rj.victim-information.due":
            return f"victim {data['person_id']}: RJ information due by end of {data['due_date']}"
        case "rj.victim-information.overdue":
            return f"victim {data['person_id']}: Victims' Code deadline missed ({data['due_by']})"
        case "rj.victim-support.referral-due":
            return f"victim {data['person_id']}: referral to victim support due by end of {data['due_date']}"
        case "rj.victim-support.referral-overdue":
            return f"victim {data['person_id']}: victim support referral deadline missed ({data['due_by']})"
        case "rj.case.opened":
            names = [str(p.get("name")) for p in data["participants"]]  # type: ignore[attr-defined]
            return f"case {body['subject']}; names on the topic, sealed: {', '.join(n[:28] + '...' for n in names)}"
        case _:
            return f"case {body['subject']}"


async def print_cases(database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch(
            "SELECT f.crime_reference, f.case_id, f.status, "
            "(SELECT count(*) FROM referral.victim_clocks c WHERE c.crime_reference = f.crime_reference "
            " AND c.breached_at IS NOT NULL) AS breaches "
            "FROM referral.crime_files f ORDER BY f.crime_reference"
        )
    finally:
        await conn.close()
    table = Table(title="Cases in the referral service's database")
    for column in ("crime reference", "case id", "status", "Victims' Code breaches"):
        table.add_column(column)
    for row in rows:
        table.add_row(row["crime_reference"], row["case_id"], row["status"], str(row["breaches"]))
    console.print(table)


class FactWatch:
    """Prints consent and scheduling facts as they arrive, and waits for particular ones."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.reader = TopicReader(settings, [topics.CONSENT, topics.SCHEDULING])
        self.seen: list[dict[str, Any]] = []

    async def until(self, case_id: str, event_type: str, stop: asyncio.Event, timeout_s: float = 60) -> dict[str, Any]:
        deadline = asyncio.get_running_loop().time() + timeout_s
        while True:
            for fact in self.seen:
                if fact["subject"] == case_id and fact["type"] == event_type:
                    return fact
            if stop.is_set() or asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"no {event_type} for case {case_id}")
            for _topic, _key, value in await self.reader.read():
                fact = json.loads(value)
                self.seen.append(fact)
                shown = await self.staff_view(fact) if b"enc:v1:" in value else fact
                console.print(f"[cyan]{fact['type']:<32}[/] {fact['subject'][:8]:<9} {_fact_detail(shown)}")

    async def staff_view(self, fact: dict[str, Any]) -> dict[str, Any]:
        """A fact with its sealed values opened, as staff (holding the keys) see it; on the topic they are
        ciphertext."""
        from schemas.registry import REGISTRY
        from services.runtime.privacy import Privacy

        conn = await asyncpg.connect(self.settings.database_url)
        try:
            batch = Privacy.from_settings(self.settings).new_batch()
            [opened] = await batch.open_documents(conn, REGISTRY.model(fact["type"]), [fact["data"]], [fact["subject"]])
        finally:
            await conn.close()
        return {**fact, "data": opened.data, "sealed": True}

    async def facilitators_known(self, *ids: str) -> None:
        """The consent service has heard scheduling's registrations (an assignment needs them)."""
        conn = await asyncpg.connect(self.settings.database_url)
        try:
            sql = "SELECT count(*) FROM consent.facilitators WHERE facilitator_id = ANY($1::text[])"
            while await conn.fetchval(sql, list(ids)) < len(ids):
                await asyncio.sleep(0.1)
        finally:
            await conn.close()

    async def schedulable(self, case_id: str) -> None:
        """The scheduling service has heard the case is ready (what a UI reads from its view)."""
        conn = await asyncpg.connect(self.settings.database_url)
        try:
            sql = "SELECT state->>'ready' FROM scheduling.cases WHERE key = $1"
            while await conn.fetchval(sql, case_id) != "true":
                await asyncio.sleep(0.1)
        finally:
            await conn.close()


def _fact_detail(fact: dict[str, Any]) -> str:
    data = fact["data"]
    detail = {
        "rj.consent.given": lambda: f"{data['person_id']} consents to {data['purpose']}",
        "rj.consent.withdrawn": lambda: f"{data['person_id']} withdraws (sealed on the topic; shown as staff see it)",
        "rj.facilitator.assigned": lambda: f"{data['facilitator_id']} (specialist: {data['specialist']})",
        "rj.preparation-meeting.recorded": lambda: f"met {data['person_id']}",
        "rj.meeting.booked": lambda: (
            f"{data['kind']} {data['meeting_id']} at {data.get('venue_id')} {data['starts_at']}"
        ),
        "rj.meeting.cancelled": lambda: f"{data['meeting_id']}: {data.get('reason_code', '')}",
        "rj.case.closed": lambda: f"reason: {data['reason']}",
        "rj.survey.invited": lambda: f"{data['person_id']} ({data['role']})",
        "rj.survey.response-recorded": lambda: f"{data['person_id']}: score {data['score']}",
        "rj.contact-form.switched": lambda: f"{data['previous_form']} -> {data['form']}",
        "rj.indirect.item-submitted": lambda: f"{data['kind']} {data['item_id']} to {data['recipient_id']}",
        "rj.indirect.receiving-agreed": lambda: f"{data['person_id']} agrees to receive {', '.join(data['kinds'])}",
        "rj.indirect.item-released": lambda: f'{data["item_id"]} to {data["recipient_id"]}: "{data.get("content")}"',
        "rj.command.rejected": lambda: data["reason"],
    }.get(fact["type"])
    return detail() if detail else ""


async def walk_cases(settings: Settings, stop: asyncio.Event) -> None:
    """Three cases through consent and scheduling: one to completion and its survey, one to a withdrawal, one by
    indirect contact (a letter)."""
    from demo.samples import case_of
    from schemas.common import Actor
    from schemas.consent import RecordRiskAssessment, RecordSurveyResponse, RiskLevel
    from schemas.indirect import (
        AgreeToReceiveItems,
        ApproveIndirectItem,
        ContactForm,
        IndirectItemKind,
        ReleaseTiming,
        SubmitIndirectItem,
        SwitchContactForm,
    )
    from schemas.scheduling import (
        AgreementItemTerms,
        BookMeeting,
        CompleteAgreementItem,
        ItemKind,
        MeetingKind,
        RecordAgreement,
        RecordMeetingHeld,
    )

    s = samples
    console.print("\n[bold]Preparing, meeting, agreeing:[/] facilitators act through rj.commands\n")
    watch = FactWatch(settings)
    await watch.reader.start()
    await publish(
        settings, [*s.facilitators("F-ANN", "F-BEN"), *s.facilitators("F-SAM", specialist=True), s.community_venue()]
    )

    def conference(case_id: str, lead: str, starts: datetime) -> tuple[str, str, bytes]:
        return s.command(
            BookMeeting(
                case_id=case_id,
                actor=s.STAFF,
                meeting_id="M1",
                kind=MeetingKind.conference,
                starts_at=starts,
                ends_at=starts + timedelta(minutes=10),
                lead_facilitator_id=lead,
                co_facilitator_id="F-BEN",
                venue_id="V-HUB",
            )
        )

    await watch.facilitators_known("F-ANN", "F-BEN", "F-SAM")
    ref = "WM/2026/000101"
    case, victim, offender = case_of(ref), f"V-{ref}", f"O-{ref}"
    await watch.until(case, "rj.preparation.started", stop)
    await publish(settings, s.prepare(case, [victim, offender], ["F-ANN", "F-BEN"]))
    await watch.until(case, "rj.case.ready-for-meeting", stop)
    await watch.schedulable(case)
    starts = s.soon()
    await publish(settings, [conference(case, "F-ANN", starts)])
    await watch.until(case, "rj.meeting.booked", stop)
    await asyncio.sleep(max(0.0, (starts - datetime.now(UTC)).total_seconds()) + 0.5)  # let it start
    apology = AgreementItemTerms(
        item_id="I1",
        kind=ItemKind.apology,
        description="A letter of apology",
        owner_id=offender,
        due_date=(datetime.now(UTC) + timedelta(days=14)).date(),
    )
    await publish(
        settings,
        [
            s.command(RecordMeetingHeld(case_id=case, actor=s.STAFF, meeting_id="M1", held_at=datetime.now(UTC))),
            s.command(
                RecordAgreement(
                    case_id=case, actor=s.STAFF, meeting_id="M1", items=[apology], consented_by=[victim, offender]
                )
            ),
            s.command(CompleteAgreementItem(case_id=case, actor=s.STAFF, item_id="I1")),
        ],
    )
    await watch.until(case, "rj.case.closed", stop)
    # Evaluation: everyone who took part is invited to the satisfaction survey; the victim answers.
    await watch.until(case, "rj.survey.invited", stop)
    answer = RecordSurveyResponse(
        case_id=case,
        actor=Actor(kind="participant", id=victim),
        person_id=victim,
        satisfied=True,
        score=5,
        comments="It helped to hear him say sorry",
    )
    await publish(settings, [s.command(answer)])
    await watch.until(case, "rj.survey.response-recorded", stop)

    ref = "WM/2026/000102"  # domestic abuse: a specialist and a risk assessment first
    case, victim, offender = case_of(ref), f"V-{ref}", f"O-{ref}"
    await watch.until(case, "rj.preparation.started", stop)
    await publish(
        settings,
        [
            s.command(  # on a sensitive case, before anyone is contacted
                RecordRiskAssessment(
                    case_id=case,
                    actor=s.STAFF,
                    assessed_at=datetime.now(UTC),
                    level=RiskLevel.medium,
                    safe_to_proceed=True,
                )
            ),
            *s.prepare(case, [victim, offender], ["F-SAM", "F-BEN"]),
        ],
    )
    await watch.until(case, "rj.case.ready-for-meeting", stop)
    await watch.schedulable(case)
    await publish(settings, [conference(case, "F-SAM", s.next_week())])
    await watch.until(case, "rj.meeting.booked", stop)
    await publish(settings, [s.consent(case, victim, withdraw=True)])
    await watch.until(case, "rj.case.closed", stop)

    console.print("\n[bold]Indirect RJ:[/] a letter passes only with the victim's advance agreement and approval\n")
    ref = "WM/2026/000106"
    case, victim, offender = case_of(ref), f"V-{ref}", f"O-{ref}"
    await watch.until(case, "rj.preparation.started", stop)
    await publish(settings, s.prepare(case, [victim, offender], ["F-ANN"]))
    await watch.until(case, "rj.case.ready-for-meeting", stop)
    await watch.schedulable(case)
    as_victim = Actor(kind="participant", id=victim)
    letter = SubmitIndirectItem(
        case_id=case,
        actor=s.STAFF,
        item_id="L1",
        sender_id=offender,
        recipient_id=victim,
        kind=IndirectItemKind.letter,
        content="I am sorry for what I did to you.",
    )
    await publish(
        settings,
        [
            s.command(SwitchContactForm(case_id=case, actor=as_victim, person_id=victim, form=ContactForm.indirect)),
            s.command(letter),
            s.command(ApproveIndirectItem(case_id=case, actor=s.STAFF, item_id="L1")),
        ],
    )
    await watch.until(case, "rj.indirect.item-approved", stop)  # approved, but the victim has not agreed: held back
    agree = AgreeToReceiveItems(
        case_id=case,
        actor=as_victim,
        person_id=victim,
        kinds=[IndirectItemKind.letter],
        from_ids=[letter.sender_id],
        timing=ReleaseTiming.on_approval,
    )
    await publish(settings, [s.command(agree)])
    await watch.until(case, "rj.indirect.item-released", stop)
    await watch.reader.stop()
