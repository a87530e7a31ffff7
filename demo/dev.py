"""``rj dev`` and ``rj demo``: the whole system on the embedded broker and PostgreSQL, on one machine, with the
local issuer staff sign in with and the API they act through; the demo's sample traffic, and its staff acting on
cases through that API as a UI does."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from pydantic import SecretStr
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from demo import samples
from demo.reader import TopicReader
from demo.staff import DemoStepFailed, StaffMember
from schemas import topics
from schemas.commands import Command
from schemas.upstream import Requester, RiskFlag
from services.api.issuer import LocalIssuer, issuer_from_settings
from services.api.links import new_link_key
from services.api.principal import Role
from services.catalog import SERVICES
from services.notify.channels.reference import References
from services.runtime.devstack import database_for_run, ensure_postgres, free_port, master_key_file, start_broker
from services.runtime.kafka import ensure_topics, publish
from services.runtime.settings import Settings, get_settings
from services.runtime.supervisor import Supervisor

console = Console(width=120)
STATE_DIR = Path(".rj")
ALWAYS_OPEN = "mon-sun 00:00-24:00; hol 00:00-24:00"


class MailCatcher:
    """A local SMTP server (aiosmtpd on 127.0.0.1, a free port) that the dev stack points notify at, so that a new
    user sees the emails the system sends without a mail relay. Messages are kept in memory only (they hold names
    and addresses: personal data is never written in clear outside memory); the demo prints what each case's
    people got, ``rj dev`` a line per message."""

    def __init__(self, *, echo: bool) -> None:
        from email.message import EmailMessage

        self.received: list[EmailMessage] = []
        self.echo = echo
        self._controller: Any = None

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 - aiosmtpd's name
        import email
        import email.policy
        from email.message import EmailMessage

        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        self.received.append(message)
        if self.echo:
            console.print(f"[cyan]mail caught[/] #{len(self.received)}: {escape(str(message['Subject']))}")
        return "250 OK caught"

    def start(self) -> dict[str, str]:
        """Serve; the settings that point notify here."""
        from aiosmtpd.controller import Controller

        port = free_port()
        self._controller = Controller(self, hostname="127.0.0.1", port=port)
        self._controller.start()
        return {"NOTIFY_SMTP_HOST": "127.0.0.1", "NOTIFY_SMTP_PORT": str(port), "NOTIFY_SMTP_TLS": "none"}

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()

    @staticmethod
    def reference(message: Any) -> str:
        """The message's outside reference (its Message-ID's local part): an HMAC of its notification id."""
        return str(message["Message-ID"]).strip("<>").split("@")[0]


def run_dev(*, demo: bool, keep_running: bool) -> int:
    return asyncio.run(_run(demo=demo, keep_running=keep_running or not demo))


async def _run(*, demo: bool, keep_running: bool) -> int:
    STATE_DIR.mkdir(exist_ok=True)
    (STATE_DIR / "logs").mkdir(exist_ok=True)
    broker = start_broker(log_path=STATE_DIR / "logs" / "tansu.log")
    server = await ensure_postgres(STATE_DIR)
    keys = master_key_file(STATE_DIR)
    configured = get_settings()
    login: LocalIssuer | None = None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    worked = True
    catcher: MailCatcher | None = None
    try:
        login = await start_login(configured)
        mail: dict[str, str] = {}
        if "NOTIFY_SMTP_HOST" not in os.environ:  # no relay configured: catch the mail locally
            catcher = MailCatcher(echo=not demo)
            mail = catcher.start()
            if demo and "NOTIFY_QUIET_HOURS" not in os.environ:  # the demo shows its mail whatever the hour
                mail["NOTIFY_QUIET_HOURS"] = ALWAYS_OPEN
        api = api_env(configured, STATE_DIR) | notify_env(configured, STATE_DIR)
        async with database_for_run(server, "rj_dev") as database_url:
            env = {
                "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap,
                "DATABASE_URL": database_url,
                "DEADLINE_SWEEP_INTERVAL_S": os.environ.get("DEADLINE_SWEEP_INTERVAL_S", "2"),
                "MASTER_KEY_FILE": str(keys),
                **login_env(login),
                **api,
                **mail,
            }
            settings = Settings(
                kafka_bootstrap_servers=broker.bootstrap, database_url=database_url, master_key_file=keys
            )
            await ensure_topics(settings)
            supervisor = Supervisor(env=env, log_dir=STATE_DIR / "logs")
            for name in SERVICES:
                supervisor.start(name)
            url = api_url(configured.api_host, int(api["API_PORT"]))
            console.print(f"[bold]RJ system up[/]: broker {broker.bootstrap}, database {database_url}")
            console.print(f"services: {', '.join(SERVICES)} (logs in {STATE_DIR / 'logs'})")
            if int(api["API_PORT"]) != configured.api_port:
                console.print(f"API_PORT {configured.api_port} is taken: the API serves on {api['API_PORT']}")
            if login is not None:
                console.print(f"API: {url}; login: local issuer {login.url}")
            console.print(f"console: {url}/console/ (sign in through the identity provider)")
            if catcher is not None:
                console.print(f"mail: notify sends to a local catcher on 127.0.0.1:{mail['NOTIFY_SMTP_PORT']}")
            try:
                if demo:
                    worked = await run_demo(settings, stop, api_url=url, login=login)
                    worked = await show_audit(env, samples.case_of("WM/2026/000101"), stop) and worked
                    if catcher is not None:
                        key = SecretStr(api["NOTIFY_REFERENCE_KEY"])
                        references = References.from_settings(Settings(notify_reference_key=key))
                        worked = await show_mail(catcher, references, database_url, stop) and worked
                if login is not None:
                    console.print(by_hand(url, running=keep_running), markup=False, highlight=False, soft_wrap=True)
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
        if catcher is not None:
            catcher.stop()
    return 0 if worked else 1


async def show_mail(
    catcher: MailCatcher, references: References, database_url: str, stop: asyncio.Event, timeout_s: float = 30
) -> bool:
    """What the local mail catcher got, per case: how many messages its participants and its staff received, and
    one message's subject (no names or addresses on screen). False if no email arrived at all."""
    conn = await asyncpg.connect(database_url)
    try:
        deadline = asyncio.get_running_loop().time() + timeout_s
        while not stop.is_set() and asyncio.get_running_loop().time() < deadline:
            pending = await conn.fetchval(
                "SELECT count(*) FROM notify.scheduled_sends WHERE status = 'sending' "
                "OR (status = 'waiting' AND due_at <= now())"
            )
            if pending == 0 and catcher.received:
                break
            await asyncio.sleep(0.25)
        rows = await conn.fetch("SELECT notification_id, case_id, recipient_kind FROM notify.scheduled_sends")
    finally:
        await conn.close()
    sends = {references.of(r["notification_id"]): (r["case_id"], r["recipient_kind"]) for r in rows}
    counts: dict[str, dict[str, int]] = {}
    for message in catcher.received:
        case_id, kind = sends.get(MailCatcher.reference(message), ("?", "?"))
        counts.setdefault(case_id, {}).setdefault(kind, 0)
        counts[case_id][kind] += 1
    table = Table(title=f"Emails caught by the local SMTP server: {len(catcher.received)}")
    for column in ("case id", "to participants", "to staff"):
        table.add_column(column)
    for case_id, got in sorted(counts.items()):
        table.add_row(case_id, str(got.get("participant", 0)), str(got.get("staff", 0)))
    console.print(table)
    if catcher.received:
        console.print(f"one of them: subject {escape(str(catcher.received[0]['Subject']))!r}")
    else:
        console.print("[red]no email reached the local mail catcher[/]")
    return bool(catcher.received)


async def show_audit(env: dict[str, str], case_id: str, stop: asyncio.Event) -> bool:
    """The audit log at the end of the demo, as an auditor uses it: once the audit service has caught up, sign a
    tree head, verify the whole log against it, and replay the first case from the log alone."""
    console.print("\n[bold]The audit log:[/] every record of every topic, appended once, in a Merkle tree\n")
    conn = await asyncpg.connect(env["DATABASE_URL"])
    try:
        last, steady_since = -1, asyncio.get_running_loop().time()
        deadline = steady_since + 30
        while not stop.is_set() and asyncio.get_running_loop().time() < deadline:
            try:
                size = await conn.fetchval("SELECT count(*) FROM audit.entries")
            except asyncpg.UndefinedTableError:
                size = 0
            now = asyncio.get_running_loop().time()
            if size != last:
                last, steady_since = size, now
            elif size and now - steady_since > 1.5:  # nothing new for a moment: the audit service has caught up
                break
            await asyncio.sleep(0.25)
    finally:
        await conn.close()
    worked = True
    for args in (["sign-head"], ["verify"], ["replay", "--case", case_id]):
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "services.cli", "audit", *args,
            env={**os.environ, **env, "LOG_LEVEL": "warning", "COLUMNS": "120"},
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        out, _ = await process.communicate()
        console.print(f"[cyan]$ rj audit {' '.join(args)}[/]  (exit {process.returncode})")
        console.print(out.decode(errors="replace").rstrip(), markup=False, highlight=False)
        worked = worked and process.returncode == 0
    return worked


async def start_login(settings: Settings) -> LocalIssuer | None:
    """The local issuer, serving at the URL and with the key file the settings name, so ``rj token`` in
    another terminal (same directory, same environment) mints tokens the services accept. None when
    ``OIDC_ISSUER`` names a real identity provider: the services then use that one, as they inherit it."""
    try:
        login = issuer_from_settings(settings)
    except ValueError as exc:
        console.print(f"login: {exc}; using it, no local issuer")
        return None
    login.default_force = samples.UPSTREAM_SOURCE  # what its sign-in page offers: the demo's cases' force
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


def api_env(settings: Settings, state_dir: Path) -> dict[str, str]:
    """What the api service serves HTTP with: ``API_PORT`` (the configured one, or a free one when another
    ``rj dev`` or program holds it), ``PUBLIC_BASE_URL`` (that address, unless set) for participants' links, and
    ``PARTICIPANT_LINK_KEY`` (unless set: the state directory's, so links made before a restart still open)."""
    port = settings.api_port
    if port == 0 or not port_is_free(settings.api_host, port):
        port = free_port()
    public = (
        settings.public_base_url if "public_base_url" in settings.model_fields_set else api_url(settings.api_host, port)
    )
    link_key = settings.participant_link_key.get_secret_value()
    if not link_key:
        link_key = participant_link_key_file(state_dir).read_text().strip()
    session_key = settings.console_session_key.get_secret_value()
    if not session_key:
        session_key = console_session_key_file(state_dir).read_text().strip()
    return {
        "API_PORT": str(port),
        "PUBLIC_BASE_URL": public,
        "PARTICIPANT_LINK_KEY": link_key,
        "CONSOLE_SESSION_KEY": session_key,
    }


def notify_env(settings: Settings, state_dir: Path) -> dict[str, str]:
    """``NOTIFY_REFERENCE_KEY``: the configured one, else the state directory's."""
    key = settings.notify_reference_key.get_secret_value()
    return {"NOTIFY_REFERENCE_KEY": key or notify_reference_key_file(state_dir).read_text().strip()}


def console_session_key_file(state_dir: Path) -> Path:
    """The embedded stack's console session key (made once, its owner's alone), so that staff signed in to the
    console stay signed in when ``rj dev`` restarts the API. A deployment sets its own ``CONSOLE_SESSION_KEY``."""
    from services.api.console import new_session_key

    return _state_secret(state_dir / "console-session.key", new_session_key)


def participant_link_key_file(state_dir: Path) -> Path:
    """The embedded stack's participant link key (made once, readable by its owner only): whoever holds it can
    make a withdraw link for anyone, so it is kept like the master key file. A deployment sets its own
    ``PARTICIPANT_LINK_KEY``."""
    return _state_secret(state_dir / "participant-link.key", new_link_key)


def notify_reference_key_file(state_dir: Path) -> Path:
    """The embedded stack's key for messages' outside references (made once, its owner's alone), so that a
    lookup after a restart asks under the key the message went with. A deployment sets ``NOTIFY_REFERENCE_KEY``."""
    from services.notify.channels.reference import new_reference_key

    return _state_secret(state_dir / "notify-reference.key", new_reference_key)


def _state_secret(path: Path, make: Callable[[], str]) -> Path:
    """``path``, holding a secret ``make`` made the first time (readable by its owner only)."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as out:
            out.write(make() + "\n")
    return path


def port_is_free(host: str, port: int) -> bool:
    """Whether a server could listen on ``host:port`` now (as uvicorn binds: reusing a port in TIME_WAIT)."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def api_url(host: str, port: int) -> str:
    """Where a client on this machine reaches the API (a server on every address is reached on 127.0.0.1)."""
    return f"http://{'127.0.0.1' if host in ('', '0.0.0.0', '::') else host}:{port}"


def by_hand(url: str, *, running: bool) -> str:
    """How to use the API by hand, for the end of the demo or the start of ``rj dev``."""
    when = (
        "While this runs"
        if running
        else "To try it by hand, `./rj dev --demo --keep-running` runs this demo and keeps the system up (its "
        "API address is printed at the start); then"
    )
    return "\n".join(
        [
            "",
            f"The API: {url} (interactive documentation at {url}/docs). {when}, in another terminal in this directory:",
            "  TOKEN=$(./rj token --user F-ANN --role facilitator)   # or C-COR as coordinator, A-1 as auditor, ...",
            f'  curl -s -H "Authorization: Bearer $TOKEN" {url}/cases',
            f'  curl -s -H "Authorization: Bearer $TOKEN" {url}/cases/CASE_ID',
            '  curl -s -X POST -H "Authorization: Bearer $TOKEN" -H "Content-Type: application/json" \\',
            f'       -d \'{{"text": "Left a voicemail"}}\' {url}/cases/CASE_ID/commands/rj.case.add-note',
            f'  curl -s -H "Authorization: Bearer $TOKEN" "{url}/commands/COMMAND_ID?wait=10"   # its outcome',
        ]
    )


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


async def run_demo(settings: Settings, stop: asyncio.Event, *, api_url: str, login: LocalIssuer | None) -> bool:
    """Publish the upstream traffic and show what it became on the topics, then, as staff signed in to the API,
    the cases list and three cases walked through. False if a step the script needs did not happen."""
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
            await reader.stop()
            return False
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
    if login is None:
        console.print("the demo signs staff in with the local issuer; with OIDC_ISSUER set to another, it stops here")
        return True
    staff = Staff(api_url, login, stop)
    try:
        await api_answers(staff.coordinator)
        await print_cases(staff.coordinator)
        await walk_cases(staff, settings)
    except DemoStepFailed as exc:
        console.print(f"[red]demo stopped: {escape(str(exc))}[/]")
        return False
    finally:
        await staff.close()
    return True


async def api_answers(coordinator: StaffMember, timeout_s: float = 60) -> None:
    """Wait for the api service to serve HTTP (it starts with the others, a few seconds after them)."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while asyncio.get_running_loop().time() < deadline and not coordinator.stop.is_set():
        with contextlib.suppress(httpx.HTTPError):
            if (await coordinator.client.get("/me")).status_code == 200:
                return
        await asyncio.sleep(0.2)
    raise DemoStepFailed(f"the API did not answer within {timeout_s:.0f} s (see .rj/logs/api.log)")


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


async def print_cases(coordinator: StaffMember, timeout_s: float = 30) -> None:
    """The cases as the coordinator's list in the API shows them (a list shows no personal data), with the
    Victims' Code deadlines the API shows as missed."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        cases = (await coordinator.get("/cases"))["cases"]
        breached = await coordinator.get("/deadlines", state="breached")
        # The API's read model follows the topics a moment behind: wait for the 6 cases and the 2 missed deadlines.
        opened = [case for case in cases if case["status"] is not None]
        if (len(opened) >= 6 and len(breached) >= 2) or asyncio.get_running_loop().time() > deadline:
            break
        await asyncio.sleep(0.2)
    missed: dict[str, int] = {}
    for entry in breached:
        missed[entry["case_id"]] = missed.get(entry["case_id"], 0) + 1
    table = Table(title="Cases as the coordinator's list in the API shows them")
    for column in ("crime reference", "case id", "status", "sensitive", "Victims' Code breaches"):
        table.add_column(column)
    # A crime with no case yet (no offender, no request) still has its victim's clocks, under the case id it will
    # have: the read model lists it from those alone, without a reference or a status.
    for case in sorted(cases, key=lambda c: c["crime_reference"] or "~"):
        table.add_row(
            case["crime_reference"] or "-",
            case["case_id"],
            case["status"] or "(only its clocks)",
            "yes" if case["sensitive"] else "",
            str(missed.get(case["case_id"], 0)),
        )
    console.print(table)


async def walk_cases(staff: Staff, settings: Settings) -> None:
    """Three cases through consent and scheduling, every staff action through the API: one to an agreement, closure
    and its survey; one the victim withdraws from through their own link; one by indirect contact (a letter).
    Participants' own words (a survey answer, a choice of contact, an agreement to receive letters) come on
    ``rj.commands`` from the participant, as their own channel sends them; staff see the effect on the case page."""
    console.print(
        f"\n[bold]Preparing, meeting, agreeing:[/] staff act through the API at {staff.api_url}, signed in with "
        "tokens from the local issuer\n"
    )
    coordinator = staff.coordinator
    for facilitator_id, specialist in (("F-ANN", False), ("F-BEN", False), ("F-SAM", True)):
        body = {"facilitator_id": facilitator_id, "specialist": specialist, "working_hours": ALL_DAY}
        await coordinator.register("rj.facilitator.register", body)
    await coordinator.register("rj.venue.register", {"venue_id": "V-HUB", "kind": "community", "name": "Worcester hub"})
    await conference_to_closure(staff, settings)
    await withdrawal_through_a_link(staff)
    await letter_by_indirect_contact(staff, settings)


async def conference_to_closure(staff: Staff, settings: Settings) -> None:
    from schemas.common import Actor
    from schemas.consent import RecordSurveyResponse

    ref = "WM/2026/000101"
    case, victim, offender = samples.case_of(ref), f"V-{ref}", f"O-{ref}"
    ann = staff.ann
    console.print(f"[bold]{ref}[/]: a conference, an agreement, closure and the survey")
    await assigned(staff.coordinator, ann, case, ["F-ANN", "F-BEN"])
    await prepared(ann, case, [victim, offender])
    starts = await booked(ann, case, lead="F-ANN", co="F-BEN", when=lambda: samples.soon(4))
    await asyncio.sleep(max(0.0, (starts - datetime.now(UTC)).total_seconds()) + 0.5)  # let it start
    await ann.done(case, "rj.meeting.record-held", {"meeting_id": "M1", "held_at": datetime.now(UTC).isoformat()})
    apology = {
        "item_id": "I1",
        "kind": "apology",
        "description": "A letter of apology",
        "owner_id": offender,
        "due_date": (datetime.now(UTC) + timedelta(days=14)).date().isoformat(),
    }
    agreement = {"meeting_id": "M1", "items": [apology], "consented_by": [victim, offender]}
    await ann.done(case, "rj.agreement.record", agreement)
    await ann.done(case, "rj.agreement-item.complete", {"item_id": "I1"})
    ann.show_page(await ann.until(case, lambda c: c["status"] == "closed", what="the case closed"))
    # Evaluation: everyone who took part is invited to the satisfaction survey; the victim answers, themself.
    await ann.until(case, lambda c: "rj.survey.invited" in timeline(c), what="the survey invitations")
    answer = RecordSurveyResponse(
        case_id=case,
        actor=Actor(kind="participant", id=victim),
        person_id=victim,
        satisfied=True,
        score=5,
        comments="It helped to hear him say sorry",
    )
    await participant_says(settings, ann, answer, "rj.survey.response-recorded")


async def withdrawal_through_a_link(staff: Staff) -> None:
    ref = "WM/2026/000102"  # domestic abuse: a specialist, and a risk assessment before anyone is contacted
    case, victim, offender = samples.case_of(ref), f"V-{ref}", f"O-{ref}"
    sam = staff.sam
    console.print(f"[bold]{ref}[/]: domestic abuse (a specialist, a risk assessment first); the victim withdraws")
    await assigned(staff.coordinator, sam, case, ["F-SAM", "F-BEN"])
    risk = {"assessed_at": datetime.now(UTC).isoformat(), "level": "medium", "safe_to_proceed": True}
    await sam.done(case, "rj.risk-assessment.record", risk)
    await prepared(sam, case, [victim, offender])
    await booked(sam, case, lead="F-SAM", co="F-BEN", when=samples.next_week)
    # Links are off by default on a sensitive case; the victim asked for one, so the facilitator turns them on.
    await sam.put(f"/cases/{case}/participant-links", {"enabled": True, "reason": "The victim asked for a link"})
    url = (await sam.post(f"/cases/{case}/withdraw-links", {"person_id": victim}))["url"]
    console.print(f"  F-SAM sends the victim their link (it names neither case nor person): {url[:48]}...")
    async with httpx.AsyncClient(timeout=20) as phone:
        for method in ("GET", "POST", "POST"):
            answer = await phone.request(method, url)
            seen = {"GET": "a confirmation page; nothing withdrawn yet", "POST": "withdrawn"}[method]
            seen = "the link was used: refused" if answer.status_code == 410 else seen
            console.print(f"  {victim} (their phone)  {method:<4} their link: {answer.status_code} {seen}")
    page = await sam.until(
        case,
        lambda c: c["status"] == "closed" and [m["status"] for m in c["meetings"]] == ["cancelled"],
        what="the meeting cancelled and the case closed after the withdrawal",
    )
    sam.show_page(page)


async def letter_by_indirect_contact(staff: Staff, settings: Settings) -> None:
    from schemas.common import Actor
    from schemas.indirect import AgreeToReceiveItems, ContactForm, IndirectItemKind, ReleaseTiming, SwitchContactForm

    console.print("[bold]WM/2026/000106[/]: indirect RJ: a letter passes only with the victim's advance agreement")
    ref = "WM/2026/000106"
    case, victim, offender = samples.case_of(ref), f"V-{ref}", f"O-{ref}"
    ann, as_victim = staff.ann, Actor(kind="participant", id=victim)
    await assigned(staff.coordinator, ann, case, ["F-ANN"])
    await prepared(ann, case, [victim, offender])
    switch = SwitchContactForm(case_id=case, actor=as_victim, person_id=victim, form=ContactForm.indirect)
    await participant_says(settings, ann, switch, "rj.contact-form.switched")
    letter = {
        "item_id": "L1",
        "sender_id": offender,
        "recipient_id": victim,
        "kind": "letter",
        "content": "I am sorry for what I did to you.",
    }
    await ann.done(case, "rj.indirect.submit-item", letter)
    await ann.done(case, "rj.indirect.approve-item", {"item_id": "L1"})
    held = await ann.until(case, lambda c: letter_state(c) == "approved", what="the letter approved")
    console.print(f"  approved, and held back: the victim has not agreed to receive letters ({letter_state(held)})")
    agree = AgreeToReceiveItems(
        case_id=case,
        actor=as_victim,
        person_id=victim,
        kinds=[IndirectItemKind.letter],
        from_ids=[offender],
        timing=ReleaseTiming.on_approval,
    )
    await participant_says(settings, ann, agree, "rj.indirect.item-released")
    ann.show_page(await ann.until(case, lambda c: True, what="the case page"))


ALL_DAY = [{"weekday": d, "start": "00:00:00", "end": "23:59:59"} for d in range(7)]


class Staff:
    """Everyone on the staff side of the demo, each signed in with their own token from the local issuer."""

    def __init__(self, api_url: str, login: LocalIssuer, stop: asyncio.Event) -> None:
        self.api_url = api_url

        def signed_in(staff_id: str, role: Role) -> StaffMember:
            return StaffMember(api_url, login, samples.UPSTREAM_SOURCE, staff_id, role, console=console, stop=stop)

        self.coordinator = signed_in("C-COR", Role.coordinator)
        self.ann = signed_in("F-ANN", Role.facilitator)
        self.sam = signed_in("F-SAM", Role.facilitator)  # a specialist, for sensitive cases

    async def close(self) -> None:
        for member in (self.coordinator, self.ann, self.sam):
            await member.close()


async def assigned(
    coordinator: StaffMember, facilitator: StaffMember, case_id: str, facilitator_ids: list[str]
) -> None:
    """The coordinator sees the case reach preparation and assigns it; the facilitator then sees it (before, the
    API tells them it does not exist). An assignment made before the consent service heard the registration is
    refused, so the coordinator tries again."""
    await coordinator.until(case_id, lambda c: c["status"] == "preparation", what="preparation started")
    for facilitator_id in facilitator_ids:
        await coordinator.done(case_id, "rj.facilitator.assign", {"facilitator_id": facilitator_id})
    await facilitator.until(case_id, lambda c: facilitator.staff_id in c["facilitator_ids"], what="the assignment")


async def prepared(facilitator: StaffMember, case_id: str, people: list[str]) -> None:
    """The facilitator meets each party and records their consent; the case page then shows it ready."""
    for person in people:
        met = {"person_id": person, "met_at": datetime.now(UTC).isoformat(), "method": "in_person"}
        await facilitator.done(case_id, "rj.preparation-meeting.record", met)
        consent = {"person_id": person, "through": "facilitator", "method": "in_person"}
        await facilitator.done(case_id, "rj.consent.give", consent)
    await facilitator.until(case_id, lambda c: c["status"] == "ready", what="the case ready for a meeting")


async def booked(
    facilitator: StaffMember, case_id: str, *, lead: str, co: str, when: Callable[[], datetime]
) -> datetime:
    """Book the conference at ``when()``; the start it was booked for. Scheduling hears the case is ready a moment
    after the case page shows it: the facilitator tries again, at a fresh time, as a UI's user would."""
    for _ in range(20):
        starts = when()
        booking = {
            "meeting_id": "M1",
            "kind": "conference",
            "starts_at": starts.isoformat(),
            "ends_at": (starts + timedelta(minutes=10)).isoformat(),
            "lead_facilitator_id": lead,
            "co_facilitator_id": co,
            "venue_id": "V-HUB",
        }
        if (await facilitator.do(case_id, "rj.meeting.book", booking))["status"] == "accepted":
            return starts
        await asyncio.sleep(0.5)
    raise DemoStepFailed(f"the conference on case {case_id} was never booked")


async def participant_says(settings: Settings, facilitator: StaffMember, command: Command, fact_type: str) -> None:
    """A participant's own command, on ``rj.commands`` from their own channel; the facilitator's case page shows
    ``fact_type`` on its timeline once it took effect."""
    case_id: str = command.case_id  # type: ignore[attr-defined]
    await publish(settings, [samples.command(command)])
    await facilitator.until(case_id, lambda c: fact_type in timeline(c), what=fact_type)
    console.print(f"  {command.actor.id} (participant, on rj.commands) {command.event_type:<26} -> {fact_type}")


def timeline(page: dict[str, Any]) -> list[str]:
    return [entry["event_type"] for entry in page["timeline"]]


def letter_state(page: dict[str, Any]) -> str | None:
    return next((item["state"] for item in page["indirect_items"] if item["item_id"] == "L1"), None)
