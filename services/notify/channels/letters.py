"""The letter queue: each letter rendered once (HTML, and a PDF from it with weasyprint) and kept until a
caseworker prints it, for people who asked for post or whom nothing else may safely reach.

The PDF is A4 with the name and address placed for a DL window envelope (window 90 x 45 mm, 20 mm from the
left and 15 mm from the bottom; the block keeps inside it with the folded sheet shifted up to 10 mm either
way), the date, then the message. Large print sets the message at 16pt and more. Rendering fetches nothing:
a template's image or stylesheet from the network would leak that a letter is being made, so only inline
``data:`` URLs load.

A letter holds the person's name and address, so it is stored sealed under the recipient's own data key on
the case (the runtime's field encryption; ``case_id`` and ``person_id`` on the ``Outbound`` say whose):
erasing the person shreds their letters, and a letter for someone already erased is never made. Sending is
enqueuing (the outcome ``sent`` means "in the queue"); the notification id is unique here, so sending again
finds the letter already queued.

For caseworkers (``rj notify letters ...`` in services/cli.py): ``unprinted`` lists what waits (ids and dates
only), ``write_pdf`` writes one letter's PDF to a file (or standard output, to pipe to a printer without a
copy on disk) and marks it printed.
"""

from __future__ import annotations

import asyncio
import base64
import html
import os
import re
import sys
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, BinaryIO
from zoneinfo import ZoneInfo

import asyncpg
import structlog
from pydantic import BaseModel

from schemas.common import Channel
from schemas.pii import Pii
from services.notify.channels import Outbound, Outcome, SendResult, postal_lines
from services.runtime import privacy as runtime_privacy
from services.runtime.fieldcrypt import TamperedToken, is_token, token_key_id
from services.runtime.privacy import Privacy

log = structlog.get_logger()

SCHEMA = "notify"
LONDON = ZoneInfo("Europe/London")
_LETTER_IDS = uuid.UUID("5d0c8f4e-3c1a-4f7e-9b55-1e7b2a9c4d10")
"""Namespace of letter ids: a letter's id follows from its notification id, so a race cannot make two."""

_WELSH_MONTHS = (
    "Ionawr", "Chwefror", "Mawrth", "Ebrill", "Mai", "Mehefin",
    "Gorffennaf", "Awst", "Medi", "Hydref", "Tachwedd", "Rhagfyr",
)  # fmt: skip


class SealedLetter(BaseModel):
    """A letter as stored: its bytes are the person's data, sealed under their key on the case (the ownership
    rule gives marked values to the document's ``person_id``)."""

    person_id: str
    pdf: Annotated[str, Pii]  # base64 of the PDF
    html: Annotated[str, Pii]


@dataclass(frozen=True)
class RenderedLetter:
    html: str
    pdf: bytes
    pages: int


@dataclass(frozen=True)
class QueuedLetter:
    """What a caseworker's list shows: nothing about the person but their id."""

    letter_id: str
    notification_id: str
    case_id: str
    person_id: str
    large_print: bool
    pages: int
    created_at: datetime
    printed_at: datetime | None
    erased: bool


@dataclass(frozen=True)
class OpenedLetter:
    letter_id: str
    pdf: bytes
    html: str


class LetterNotFound(LookupError):
    """No letter has that id."""


class LetterWithdrawn(Exception):
    """A stop took the letter back before it was printed (the person withdrew, the case is on hold, ...)."""


class LetterErased(Exception):
    """The letter's recipient was erased: its content is gone for good."""


# --- rendering -------------------------------------------------------------------------------------

_LETTER_CSS = """
@page { size: A4; margin: 20mm 20mm 22mm 25mm;
        @bottom-right { content: counter(page) " / " counter(pages); font-size: 9pt; color: #444; } }
body { font-family: Arial, "Liberation Sans", "DejaVu Sans", sans-serif; font-size: 12pt; line-height: 1.4;
       color: #000; margin: 0; }
.head { position: relative; height: 80mm; }
.date { position: absolute; top: 0; right: 0; font-size: 11pt; }
/* The address block: 52 mm from the top of the sheet and 25 mm from its left (the page's margins are 20 and
   25 mm), 75 x 32 mm, seven lines at most. */
.address { position: absolute; top: 32mm; left: 0; width: 75mm; height: 32mm; overflow: hidden;
           font-size: 10.5pt; line-height: 1.15; white-space: nowrap; }
.letter-body h1 { font-size: 16pt; margin: 0 0 6mm; }
.letter-body img { max-width: 100%; }
.large-print .letter-body, .large-print .letter-body p, .large-print .letter-body li,
.large-print .letter-body td, .large-print .letter-body th, .large-print .letter-body a,
.large-print .letter-body span, .large-print .letter-body div { font-size: 16pt !important; line-height: 1.5; }
.large-print .letter-body h1 { font-size: 22pt !important; }
.large-print .date { font-size: 16pt; }
.large-print .letter-body h2, .large-print .letter-body h3 { font-size: 19pt !important; }
"""

_BODY = re.compile(r"<body[^>]*>(.*)</body>", re.IGNORECASE | re.DOTALL)
_STYLE = re.compile(r"<style[^>]*>.*?</style>", re.IGNORECASE | re.DOTALL)
_LANG = re.compile(r"<html[^>]*\blang=[\"']?([A-Za-z-]+)", re.IGNORECASE)


def letter_date(when: datetime, language: str) -> str:
    day = when.astimezone(LONDON)
    if language.lower().startswith("cy"):
        return f"{day.day} {_WELSH_MONTHS[day.month - 1]} {day.year}"
    return f"{day.day} {day:%B %Y}"


def letter_html(message: Outbound, when: datetime) -> str:
    """The letter as one HTML document: our page (date, address block) around the message's own HTML body and
    styles. The name and address are escaped: they are data, never markup."""
    rendered = message.rendered.html
    found = _BODY.search(rendered)
    body = _STYLE.sub("", found.group(1) if found else rendered)
    styles = "\n".join(_STYLE.findall(rendered))
    language = (m.group(1) if (m := _LANG.search(rendered)) else "en").lower()
    address = "<br>".join(html.escape(line) for line in postal_lines(message))
    heading = "" if re.search(r"<h1[\s>]", body, re.IGNORECASE) else f"<h1>{html.escape(message.rendered.subject)}</h1>"
    large = ' class="large-print"' if message.large_print else ""
    return (
        f'<!doctype html>\n<html lang="{html.escape(language)}"><head><meta charset="utf-8">\n'
        f"{styles}\n<style>{_LETTER_CSS}</style></head>\n"
        f"<body{large}>\n"
        f'<div class="head"><div class="date">{letter_date(when, language)}</div>'
        f'<div class="address">{address}</div></div>\n'
        f'<div class="letter-body">{heading}{body}</div>\n</body></html>\n'
    )


def render_pdf(document: str) -> tuple[bytes, int]:
    """The PDF of a letter's HTML and its page count. CPU-bound (tens to hundreds of ms): run it in a thread."""
    from weasyprint import HTML
    from weasyprint.urls import URLFetcher

    fetcher = URLFetcher(allowed_protocols={"data"})  # nothing from the network or the disk
    rendered = HTML(string=document, url_fetcher=fetcher).render()
    pdf = rendered.write_pdf()
    assert pdf is not None
    return pdf, len(rendered.pages)


def render_letter(message: Outbound, when: datetime) -> RenderedLetter:
    document = letter_html(message, when)
    pdf, pages = render_pdf(document)
    return RenderedLetter(document, pdf, pages)


# --- the queue -------------------------------------------------------------------------------------


def letter_id_of(notification_id: str) -> str:
    return str(uuid.uuid5(_LETTER_IDS, notification_id))


class LetterQueue:
    """Letters waiting to be printed, in notify's ``letters`` table."""

    channel = Channel.letter

    def __init__(
        self,
        pool: asyncpg.Pool,
        privacy: Privacy | None = None,
        *,
        schema: str = SCHEMA,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.pool = pool
        self._privacy = privacy
        self.table = f"{schema}.letters"
        self.now = now

    @property
    def privacy(self) -> Privacy:
        """The key store given, else the process's (a service installs it as it starts)."""
        return self._privacy or runtime_privacy.installed()

    async def send(self, message: Outbound) -> SendResult:
        """Queue the letter (``sent``: it is in the queue; the provider id is the letter's id). Raises
        ``ValueError`` for a message without the case and person it belongs to (they say whose key seals it)."""
        if message.channel is not Channel.letter:
            raise ValueError(f"the letter queue takes letters, not {message.channel}")
        if not message.case_id or not message.person_id:
            raise ValueError("a letter needs its case_id and person_id: they say whose key seals it")
        queued = await self.lookup(message.notification_id)
        if queued is not None:
            return queued
        try:
            letter = await asyncio.to_thread(render_letter, message, self.now())
        except ValueError as exc:  # an address that does not fit the window
            return SendResult(Outcome.permanent_failure, detail=str(exc))
        letter_id = letter_id_of(message.notification_id)
        batch = self.privacy.new_batch()
        async with self.pool.acquire() as conn, conn.transaction():
            if batch.enabled:
                await batch.keys.load(conn, pairs={(message.person_id, message.case_id)})
                if batch.keys.for_owner(message.person_id, message.case_id).destroyed:
                    log.info("letter_not_queued_recipient_erased", notification_id=message.notification_id)
                    return SendResult(Outcome.permanent_failure, detail="the recipient was erased")
            document = SealedLetter(
                person_id=message.person_id, pdf=base64.b64encode(letter.pdf).decode(), html=letter.html
            ).model_dump(mode="json")
            [sealed] = await batch.seal_documents(conn, SealedLetter, [(document, message.case_id)], owned=True)
            await conn.execute(
                f"""INSERT INTO {self.table} (letter_id, notification_id, case_id, person_id, large_print, pages,
                                              created_at, pdf, html)
                    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (notification_id) DO NOTHING""",
                letter_id,
                message.notification_id,
                message.case_id,
                message.person_id,
                message.large_print,
                letter.pages,
                self.now(),
                sealed["pdf"],
                sealed["html"],
            )
        log.info("letter_queued", notification_id=message.notification_id, letter_id=letter_id, pages=letter.pages)
        return SendResult(Outcome.sent, provider_id=letter_id, detail=f"queued, {letter.pages} pages")

    async def lookup(self, notification_id: str) -> SendResult | None:
        row = await self.pool.fetchrow(
            f"SELECT letter_id::text, printed_at FROM {self.table} WHERE notification_id = $1", notification_id
        )
        if row is None:
            return None
        return SendResult(Outcome.sent, provider_id=row[0], detail="printed" if row[1] else "queued")

    async def unprinted(self, limit: int = 200) -> list[QueuedLetter]:
        """The letters waiting to be printed, oldest first; ``erased`` ones can no longer be printed."""
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(
                f"""SELECT letter_id::text, notification_id, case_id, person_id, large_print, pages, created_at,
                           printed_at, left(pdf, 64) AS token
                    FROM {self.table} WHERE printed_at IS NULL AND withdrawn_at IS NULL
                    ORDER BY created_at, letter_id LIMIT $1""",
                limit,
            )
            erased = await self._erased(conn, [r["token"] for r in rows])
        return [
            QueuedLetter(
                r["letter_id"],
                r["notification_id"],
                r["case_id"],
                r["person_id"],
                r["large_print"],
                r["pages"],
                r["created_at"],
                r["printed_at"],
                erased[i],
            )  # fmt: skip
            for i, r in enumerate(rows)
        ]

    async def _erased(self, conn: asyncpg.Connection, tokens: list[str]) -> list[bool]:
        """Which sealed values' keys are destroyed (from the key id each token starts with)."""
        batch = self.privacy.new_batch()
        key_ids: list[str | None] = []
        for token in tokens:
            try:
                key_ids.append(token_key_id(token) if is_token(token) else None)  # plain: written unencrypted
            except TamperedToken:
                key_ids.append(None)
        if not batch.enabled or not any(key_ids):
            return [False] * len(tokens)
        await batch.keys.load(conn, key_ids={k for k in key_ids if k})
        return [k is not None and (key := batch.keys.by_id(k)) is not None and key.destroyed for k in key_ids]

    async def open(self, letter_id: str) -> OpenedLetter:
        """The letter's PDF and HTML. Raises ``LetterNotFound``, ``LetterWithdrawn`` once a stop took it back, or
        ``LetterErased`` once its recipient is erased."""
        try:
            uuid.UUID(letter_id)
        except ValueError:
            raise LetterNotFound(f"no letter {letter_id!r}") from None
        batch = self.privacy.new_batch()
        async with self.pool.acquire() as conn:
            row = await conn.fetchrow(
                f"""SELECT case_id, person_id, pdf, html, withdrawn_reason FROM {self.table}
                    WHERE letter_id = $1""",
                letter_id,
            )
            if row is None:
                raise LetterNotFound(f"no letter {letter_id!r}")
            if row["withdrawn_reason"] is not None:
                raise LetterWithdrawn(f"letter {letter_id} was withdrawn before printing ({row['withdrawn_reason']})")
            document = {"person_id": row["person_id"], "pdf": row["pdf"], "html": row["html"]}
            [opened] = await batch.open_documents(conn, SealedLetter, [document], [row["case_id"]], owned=True)
        if opened.erased:
            raise LetterErased(f"letter {letter_id}: its recipient was erased, the letter with them")
        return OpenedLetter(letter_id, base64.b64decode(opened.data["pdf"]), opened.data["html"])

    async def mark_printed(self, letter_id: str, by: str) -> None:
        """Record that it was printed (the first time counts; printing again after a jam changes nothing)."""
        done = await self.pool.execute(
            f"""UPDATE {self.table} SET printed_at = coalesce(printed_at, $2), printed_by = coalesce(printed_by, $3)
                WHERE letter_id = $1""",
            letter_id,
            self.now(),
            by,
        )
        if done == "UPDATE 0":
            raise LetterNotFound(f"no letter {letter_id!r}")

    async def write_pdf(self, letter_id: str, to: Path | BinaryIO, *, by: str) -> int:
        """Write the letter's PDF to a file (made readable by its owner only) or a binary stream (``sys.stdout
        .buffer`` to pipe it to the printer without a copy on disk), then mark it printed. Bytes written."""
        letter = await self.open(letter_id)
        if isinstance(to, Path):
            fd = os.open(to, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as out:
                out.write(letter.pdf)
        else:
            to.write(letter.pdf)
            to.flush()
        await self.mark_printed(letter_id, by)
        log.info("letter_printed", letter_id=letter_id, by=by)
        return len(letter.pdf)


def stdout_or_path(target: str) -> Path | BinaryIO:
    """A CLI's ``--out`` value: ``-`` is standard output."""
    return sys.stdout.buffer if target == "-" else Path(target)
