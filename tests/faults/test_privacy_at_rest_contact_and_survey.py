"""Staff's case notes, a participant's safe-contact details, a contact attempt's note and a survey's free text are
never in clear where we write them: a case run through them, then a scan of the raw bytes of every topic we write
and every row of every table (the sibling of ``test_privacy_at_rest``, with its scan)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import asyncpg
import pytest

from demo.samples import STAFF, command
from schemas import topics
from schemas.common import Actor, Channel
from schemas.consent import (
    AddCaseNote,
    ContactMethod,
    ContactOutcome,
    RecordContactAttempt,
    RecordedThrough,
    RecordingMethod,
    RecordSafeContact,
    RecordSurveyResponse,
)
from schemas.scheduling import CloseCase, ClosureReason
from tests.e2e.conftest import facts, referred_case
from tests.faults.test_privacy_at_rest import leaks, read_topic_bytes, table_bytes
from tests.harness import System

pytestmark = pytest.mark.integration


async def test_rule_3_notes_safe_contact_and_survey_free_text_are_never_in_clear_on_topics_or_tables(
    system: System,
) -> None:
    run = uuid.uuid4().hex[:8]
    needles = {
        "note": f"Victim fears the brother at Wexcombe Farm, {run}",
        "attempt_note": f"Spoke to the lodger at Thornbury Close, {run}",
        "alternative_address": f"c/o Marigold Refuge {run}, 4 Fenwick Row",
        "alternative_email": f"refuge.{run}@safe.example",
        "survey_comments": f"The apology from Ashdown meant everything, {run}",
    }
    for name in ("referral", "consent", "scheduling"):
        system.start(name)
    case_id, victim, _ = await referred_case(system, f"WM/2026/PRIVNOTE{run}")

    safe = RecordSafeContact(
        case_id=case_id,
        actor=STAFF,
        person_id=victim,
        safe_channels=[Channel.email, Channel.letter],
        letters_to_home_ok=False,
        alternative_address=needles["alternative_address"],
        alternative_email=needles["alternative_email"],
        through=RecordedThrough.facilitator,
        method=RecordingMethod.phone,
    )
    attempt = RecordContactAttempt(
        case_id=case_id,
        actor=STAFF,
        person_id=victim,
        attempted_at=datetime.now(UTC),
        method=ContactMethod.letter,
        outcome=ContactOutcome.reached,
        note=needles["attempt_note"],
    )
    note = AddCaseNote(case_id=case_id, actor=STAFF, text=needles["note"])  # about the case: the case's key
    await system.publish([command(safe), command(attempt), command(note)])
    await facts(system, topics.CONSENT, case_id, "rj.case.note-added")
    close = CloseCase(case_id=case_id, actor=STAFF, closure_reason=ClosureReason.not_suitable, reason="not now")
    await system.publish([command(close)])
    await facts(system, topics.CONSENT, case_id, "rj.survey.invited", 2)
    response = RecordSurveyResponse(
        case_id=case_id,
        actor=Actor(kind="participant", id=victim),
        person_id=victim,
        satisfied=True,
        score=5,
        comments=needles["survey_comments"],
    )
    await system.publish([command(response)])
    await facts(system, topics.CONSENT, case_id, "rj.survey.response-recorded")

    ours = [t for t in topics.ALL_TOPICS if t not in (topics.CRIME_EVENTS, topics.COMMANDS)]
    haystacks = {f"topic {t}": await read_topic_bytes(system, t) for t in ours}
    conn = await asyncpg.connect(system.settings.database_url)
    try:
        haystacks |= {f"table {name}": rows for name, rows in (await table_bytes(conn)).items()}
    finally:
        await conn.close()

    consent_topic = haystacks[f"topic {topics.CONSENT}"]
    for event_type in (b"rj.case.note-added", b"rj.contact.safe-contact-recorded", b"rj.survey.response-recorded"):
        assert any(event_type in blob and b"enc:v1:" in blob for blob in consent_topic), event_type
    assert leaks(haystacks, needles) == []
    # ...and the scan can see them: the commands as clients publish them today carry them in clear.
    commands = {"topic rj.commands": await read_topic_bytes(system, topics.COMMANDS)}
    assert set(leaks(commands, needles)) and all(
        any(what in leak for leak in leaks(commands, needles)) for what in needles
    )
