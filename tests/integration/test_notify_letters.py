"""The letter queue against the real PostgreSQL with the key store on: a letter is rendered (HTML and PDF), kept
sealed under its recipient's data key (no name or address readable in the table), queued once however often it
is sent, printed by a caseworker, and shredded when its recipient is erased; large print letters stay in the
queue when the rest go through GOV.UK Notify."""

from __future__ import annotations

import json
import stat
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from pydantic import SecretStr

from schemas.common import Channel
from services.notify.channels import Outbound, Outcome, senders_from_settings
from services.notify.channels.govuk import LargePrintToQueue
from services.notify.channels.letters import LetterErased, LetterNotFound, LetterQueue, letter_html
from services.notify.messages import Rendered
from services.runtime import keystore
from services.runtime.db import migrate
from services.runtime.devstack import create_database, drop_database
from services.runtime.keystore import KeyStore, MasterKeys
from services.runtime.privacy import Privacy
from services.runtime.settings import Settings
from tests.support.notify_standin import NotifyStandIn

pytestmark = pytest.mark.integration

NAME = "Zebedee Quxmarker"
STREET = "77 Vexmarker Lane"
ADDRESS = f"{STREET}\nWorcester\nWR9 9ZZ"
MARKERS = ("Quxmarker", "Vexmarker")


@pytest.fixture(scope="module")
async def database(pg_server: str) -> AsyncIterator[str]:
    name = f"rj_test_{uuid.uuid4().hex[:10]}"
    url = await create_database(pg_server, name)
    conn = await asyncpg.connect(url)
    try:
        await keystore.ensure_schema(conn)
        await migrate(conn, "notify", "services.notify.migrations")
    finally:
        await conn.close()
    yield url
    await drop_database(pg_server, name)


@pytest.fixture
async def pool(database: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await asyncpg.create_pool(database, min_size=1, max_size=4)
    yield pool
    await pool.close()


MASTER = MasterKeys.generate("v1")
"""The module's one master key: every letter of the module's database is under it, so the CLI (given it) opens any."""


@pytest.fixture(scope="module")
def privacy() -> Privacy:
    return Privacy(KeyStore(MasterKeys.parse(MASTER)))


@pytest.fixture
def queue(pool: asyncpg.Pool, privacy: Privacy) -> LetterQueue:
    return LetterQueue(pool, privacy)


def letter(case_id: str | None = None, person_id: str = "victim-1", **overrides: Any) -> Outbound:
    fields: dict[str, Any] = {
        "notification_id": str(uuid.uuid4()),
        "channel": Channel.letter,
        "to": ADDRESS,
        "recipient_name": NAME,
        "rendered": Rendered(
            subject="Your restorative justice meeting",
            text="Dear Zebedee,\nYour meeting is on Saturday.",
            html=f"<html lang='en'><body><p>Dear Zebedee {MARKERS[0]},</p><p>Your meeting is on Saturday.</p></body>"
            "</html>",
            sms="Your meeting is on Saturday.",
        ),
        "case_id": case_id or f"case-{uuid.uuid4().hex[:10]}",
        "person_id": person_id,
    }
    return Outbound(**(fields | overrides))


async def stored_row_text(pool: asyncpg.Pool, letter_id: str) -> str:
    """The whole stored row as PostgreSQL gives it to anyone who can read the table (values decompressed)."""
    text = await pool.fetchval("SELECT t::text FROM notify.letters t WHERE letter_id = $1", letter_id)
    assert isinstance(text, str)
    return text


async def table_file_bytes(pool: asyncpg.Pool) -> bytes | None:
    """The table's and its TOAST table's files on disk, after a checkpoint; None where the server's data
    directory is not ours to read (a server on another machine or user)."""
    await pool.execute("CHECKPOINT")
    data_dir = await pool.fetchval("SHOW data_directory")
    paths = await pool.fetch(
        """SELECT pg_relation_filepath(c.oid) FROM pg_class c
           WHERE c.oid = 'notify.letters'::regclass OR c.oid = (SELECT reltoastrelid FROM pg_class
                                                                 WHERE oid = 'notify.letters'::regclass)"""
    )
    try:
        return b"".join((Path(data_dir) / p[0]).read_bytes() for p in paths)
    except OSError:
        return None


async def test_a_queued_letter_is_sealed_no_name_or_address_readable_in_the_table(
    queue: LetterQueue, pool: asyncpg.Pool
) -> None:
    message = letter()
    result = await queue.send(message)
    assert result.outcome is Outcome.sent and result.provider_id is not None

    row = await stored_row_text(pool, result.provider_id)
    for marker in (*MARKERS, "WR9 9ZZ"):
        assert marker not in row
    on_disk = await table_file_bytes(pool)
    if on_disk is not None:
        assert len(on_disk) > 8192 and not any(m.encode() in on_disk for m in MARKERS)

    opened = await queue.open(result.provider_id)  # the markers were there: sealed, not missing
    assert opened.pdf.startswith(b"%PDF-")
    assert NAME in opened.html and STREET in opened.html and "WR9 9ZZ" in opened.html


async def test_the_same_letter_unsealed_would_be_readable_so_the_check_above_means_something(
    pool: asyncpg.Pool,
) -> None:
    plain = LetterQueue(pool, Privacy.disabled())
    result = await plain.send(letter())
    assert result.provider_id is not None
    row = await stored_row_text(pool, result.provider_id)
    assert all(marker in row for marker in MARKERS)
    await pool.execute("DELETE FROM notify.letters WHERE letter_id = $1", result.provider_id)


async def test_erasing_the_recipient_shreds_their_letter_and_no_one_elses(
    queue: LetterQueue, pool: asyncpg.Pool, privacy: Privacy
) -> None:
    case_id = f"case-{uuid.uuid4().hex[:10]}"
    victim = await queue.send(letter(case_id, "victim-1"))
    supporter = await queue.send(letter(case_id, "supporter-1"))
    assert victim.provider_id and supporter.provider_id

    assert privacy.store is not None
    async with pool.acquire() as conn:
        await privacy.store.destroy(conn, "victim-1", case_id, by="test", reason="erasure requested")

    with pytest.raises(LetterErased):
        await queue.open(victim.provider_id)
    with pytest.raises(LetterErased):
        await queue.write_pdf(victim.provider_id, Path("/dev/null"), by="caseworker-1")
    assert (await queue.open(supporter.provider_id)).pdf.startswith(b"%PDF-")
    listed = {q.letter_id: q.erased for q in await queue.unprinted(limit=10_000)}
    assert listed[victim.provider_id] is True and listed[supporter.provider_id] is False
    printed = await pool.fetchval("SELECT printed_at FROM notify.letters WHERE letter_id = $1", victim.provider_id)
    assert printed is None


async def test_no_letter_is_made_for_someone_already_erased(
    queue: LetterQueue, pool: asyncpg.Pool, privacy: Privacy
) -> None:
    message = letter()
    assert privacy.store is not None and message.case_id and message.person_id
    async with pool.acquire() as conn:
        await privacy.store.destroy(conn, message.person_id, message.case_id, by="test", reason="erased")
    result = await queue.send(message)
    assert result.outcome is Outcome.permanent_failure
    assert await queue.lookup(message.notification_id) is None


async def test_sending_a_letter_twice_queues_it_once(queue: LetterQueue, pool: asyncpg.Pool) -> None:
    message = letter()
    first = await queue.send(message)
    again = await queue.send(message)
    assert first.outcome is again.outcome is Outcome.sent
    assert first.provider_id == again.provider_id
    count = await pool.fetchval(
        "SELECT count(*) FROM notify.letters WHERE notification_id = $1", message.notification_id
    )
    assert count == 1


async def test_lookup_finds_a_letter_by_its_notification_id(queue: LetterQueue) -> None:
    message = letter()
    sent = await queue.send(message)
    found = await queue.lookup(message.notification_id)
    assert found is not None and found.outcome is Outcome.sent and found.provider_id == sent.provider_id
    assert await queue.lookup(str(uuid.uuid4())) is None


async def test_a_caseworker_prints_a_letter_from_the_list(queue: LetterQueue, tmp_path: Path) -> None:
    sent = await queue.send(letter())
    assert sent.provider_id is not None
    waiting = [q for q in await queue.unprinted(limit=10_000) if q.letter_id == sent.provider_id]
    assert len(waiting) == 1 and waiting[0].pages == 1 and not waiting[0].erased
    assert all(m not in json.dumps(waiting[0].__dict__, default=str) for m in MARKERS)

    out = tmp_path / "letter.pdf"
    written = await queue.write_pdf(sent.provider_id, out, by="caseworker-1")

    assert out.read_bytes().startswith(b"%PDF-") and written == out.stat().st_size
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert sent.provider_id not in {q.letter_id for q in await queue.unprinted(limit=10_000)}
    printed = await queue.lookup(waiting[0].notification_id)
    assert printed is not None and printed.detail == "printed"


async def test_an_unknown_letter_is_not_found(queue: LetterQueue) -> None:
    for letter_id in (str(uuid.uuid4()), "not-a-uuid"):
        with pytest.raises(LetterNotFound):
            await queue.open(letter_id)
    with pytest.raises(LetterNotFound):
        await queue.mark_printed(str(uuid.uuid4()), by="caseworker-1")


async def test_a_large_print_letter_sets_the_message_at_16pt_or_more(queue: LetterQueue) -> None:
    sent = await queue.send(letter(large_print=True))
    assert sent.provider_id is not None
    opened = await queue.open(sent.provider_id)
    assert '<body class="large-print">' in opened.html
    assert "font-size: 16pt !important" in opened.html


@pytest.mark.parametrize("address", ["WR9 9ZZ", "1\n2\n3\n4\n5\n6\nWR9 9ZZ"])
async def test_an_address_that_does_not_fit_the_window_is_a_permanent_failure(queue: LetterQueue, address: str) -> None:
    message = letter(to=address)
    result = await queue.send(message)
    assert result.outcome is Outcome.permanent_failure
    assert "Quxmarker" not in result.detail and "WR9" not in result.detail
    assert await queue.lookup(message.notification_id) is None


async def test_a_letter_without_its_case_and_person_is_refused(queue: LetterQueue) -> None:
    with pytest.raises(ValueError, match="case_id and person_id"):
        await queue.send(letter(person_id=""))


def test_the_name_and_address_are_text_never_markup() -> None:
    message = letter(recipient_name="<img src='http://tracker.example/x'>Eve", to="1 <b>Bold</b> Road\nTown\nWR1 1AA")
    document = letter_html(message, datetime(2026, 11, 20, tzinfo=UTC))
    assert "<img src='http://tracker.example" not in document and "<b>Bold</b>" not in document
    assert "&lt;img src=" in document and "&lt;b&gt;Bold&lt;/b&gt;" in document


async def test_large_print_letters_stay_in_the_queue_when_letters_go_through_notify(
    pool: asyncpg.Pool, privacy: Privacy
) -> None:
    async with NotifyStandIn() as notify:
        settings = Settings(notify_letters_via="govuk", **notify.settings())
        letters = senders_from_settings(settings, pool)[Channel.letter]
        assert isinstance(letters, LargePrintToQueue)
        letters.queue = LetterQueue(pool, privacy)
        standard, large = letter(), letter(large_print=True)

        to_notify = await letters.send(standard)
        to_queue = await letters.send(large)

        assert notify.accepted == notify.of_notification(standard.notification_id) and len(notify.accepted) == 1
        assert to_notify.provider_id == notify.accepted[0].id
        queued = await letters.lookup(large.notification_id)
        assert queued is not None and queued.provider_id == to_queue.provider_id
        via_notify = await letters.lookup(standard.notification_id)
        assert via_notify is not None and via_notify.provider_id == to_notify.provider_id


def test_a_welsh_letter_is_dated_in_welsh() -> None:
    welsh = "<html lang='cy'><body><p>Annwyl Alex,</p></body></html>"
    message = letter(rendered=Rendered(subject="Eich cyfarfod", text="t", html=welsh, sms="s"))
    document = letter_html(message, datetime(2026, 12, 5, 10, tzinfo=UTC))
    assert '<html lang="cy">' in document and "5 Rhagfyr 2026" in document


async def test_a_caseworker_lists_and_prints_a_letter_with_the_rj_command(
    database: str, queue: LetterQueue, tmp_path: Path
) -> None:
    from tests.harness import run_rj

    master = MASTER
    message = letter()
    sent = await queue.send(message)
    assert sent.outcome is Outcome.sent and sent.provider_id
    settings = Settings(database_url=database, master_keys=SecretStr(master))

    status, out, err = await run_rj(settings, "notify", "letters", "list", "--json")
    assert status == 0, err
    listed = {x["letter_id"]: x for x in json.loads(out)}
    assert listed[sent.provider_id]["case_id"] == message.case_id
    assert not any(marker in out for marker in MARKERS)  # ids and dates only

    pdf = tmp_path / "letter.pdf"
    status, out, err = await run_rj(settings, "notify", "letters", "print", sent.provider_id, "--out", str(pdf),
                                    "--by", "caseworker-1")  # fmt: skip
    assert status == 0, err
    assert pdf.read_bytes().startswith(b"%PDF")
    status, out, err = await run_rj(settings, "notify", "letters", "list", "--json")
    assert sent.provider_id not in {x["letter_id"] for x in json.loads(out)}

    status, _, err = await run_rj(settings, "notify", "letters", "print", str(uuid.uuid4()), "--out", str(pdf),
                                  "--by", "caseworker-1")  # fmt: skip
    assert status == 1 and "no letter" in err
