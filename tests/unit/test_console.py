"""The console's pure parts: the sealed cookie (tampering, another purpose, expiry, rotation), where it sends a
browser after signing in, how a posted action form becomes the API's body (and its problems, by field), and the
English and Welsh catalogue holding the same words."""

from __future__ import annotations

import base64
import os
import time

import pytest
from pydantic import SecretStr
from starlette.datastructures import FormData

from services.api import commands, console_forms
from services.api.console import SessionBox, pkce_pair, safe_next
from services.api.console_text import CODES, MESSAGES, STATEMENT, Text
from services.api.policy import STAFF_COMMANDS
from services.runtime.settings import Settings


def key() -> bytes:
    return os.urandom(32)


def test_a_sealed_session_opens_only_unaltered_for_its_own_purpose_and_before_it_expires() -> None:
    box = SessionBox([key()])
    sealed = box.seal("session", {"token": "t", "csrf": "c"}, ttl_s=60)
    assert box.open("session", sealed) == {"token": "t", "csrf": "c", "exp": pytest.approx(time.time() + 60, abs=5)}
    assert box.open("login", sealed) is None, "a session is never taken for a sign-in, nor the other way"
    flipped = sealed[:-2] + ("A" if sealed[-2] != "A" else "B") + sealed[-1]
    assert box.open("session", flipped) is None
    assert box.open("session", box.seal("session", {"token": "t"}, ttl_s=-1)) is None, "expired"
    assert SessionBox([key()]).open("session", sealed) is None, "another key"
    assert box.open("session", "not base64 at all!") is None and box.open("session", None) is None


def test_a_rotated_session_key_still_opens_what_the_old_one_sealed() -> None:
    old, new = key(), key()
    sealed = SessionBox([old]).seal("session", {"token": "t"}, ttl_s=60)
    assert SessionBox([new, old]).open("session", sealed) is not None
    both = ",".join(base64.b64encode(k).decode() for k in (new, old))
    assert SessionBox.from_settings(Settings(console_session_key=SecretStr(both))).open("session", sealed) is not None


def test_a_session_key_that_is_not_32_bytes_is_refused() -> None:
    with pytest.raises(ValueError):
        SessionBox.from_settings(Settings(console_session_key=SecretStr(base64.b64encode(b"short").decode())))


def test_after_signing_in_a_browser_is_sent_only_to_a_console_page_of_ours() -> None:
    assert safe_next("/console/cases/abc?reason=x") == "/console/cases/abc?reason=x"
    for elsewhere in ("https://evil.example/", "//evil.example/console", "/consolex\\..", "/p/token", None, ""):
        assert safe_next(elsewhere) in ("/console/",), elsewhere
    assert safe_next("/console/\x00") == "/console/"


def test_pkce_challenges_are_s256_of_fresh_verifiers() -> None:
    (v1, c1), (v2, _) = pkce_pair(), pkce_pair()
    assert v1 != v2 and 43 <= len(v1) <= 128 and len(c1) == 43


def test_every_console_action_is_a_command_staff_send_with_a_form_for_each_of_its_required_fields() -> None:
    bodies = {t: commands.body_model(m) for t, m in commands.command_models(STAFF_COMMANDS).items()}
    for command_type, fields in console_forms.ACTIONS.items():
        assert command_type in bodies, command_type
        required = {name for name, f in bodies[command_type].model_fields.items() if f.is_required()}
        assert required <= {f.name for f in fields}, (command_type, required)


def test_a_posted_booking_becomes_the_apis_body_with_local_times_made_aware() -> None:
    form = FormData(
        [("meeting_id", "M1"), ("kind", "conference"), ("starts_at", "2026-07-01T10:00"),
         ("ends_at", "2026-07-01T11:00"), ("lead_facilitator_id", "F-ANN"), ("co_facilitator_id", ""), ("reason", " ")]
    )  # fmt: skip
    parsed = console_forms.read_form("rj.meeting.book", form, form.getlist)
    assert parsed.body == {
        "meeting_id": "M1", "kind": "conference", "starts_at": "2026-07-01T10:00:00+01:00",
        "ends_at": "2026-07-01T11:00:00+01:00", "lead_facilitator_id": "F-ANN",
    }  # fmt: skip
    model = commands.body_model(commands.command_models({"rj.meeting.book"})["rj.meeting.book"])
    assert console_forms.check(model, parsed) is not None and not parsed.problems


def test_an_agreement_form_sends_its_filled_rows_and_names_each_problem_by_its_field() -> None:
    form = FormData(
        [("meeting_id", "M1"), ("items-0-item_id", "I1"), ("items-0-kind", "reparation"),
         ("items-0-description", "Repair the fence"), ("items-0-owner_id", "O-1"), ("items-0-due_date", "2026-08-01"),
         ("items-0-amount_pence", "25.50"), ("items-1-item_id", "I2"), ("items-1-kind", "apology"),
         ("consented_by", "V-1"), ("consented_by", "O-1")]
    )  # fmt: skip
    parsed = console_forms.read_form("rj.agreement.record", form, form.getlist)
    assert parsed.body["items"][0]["amount_pence"] == 2550 and parsed.body["consented_by"] == ["V-1", "O-1"]
    model = commands.body_model(commands.command_models({"rj.agreement.record"})["rj.agreement.record"])
    assert console_forms.check(model, parsed) is None
    assert {"items-1-description", "items-1-owner_id", "items-1-due_date"} <= set(parsed.problems)
    assert "items-0-amount_pence" not in parsed.problems


def test_a_time_or_amount_that_cannot_be_read_is_a_problem_of_its_field() -> None:
    form = FormData([("held_at", "yesterday"), ("meeting_id", "")])
    parsed = console_forms.read_form("rj.meeting.record-held", form, form.getlist)
    model = commands.body_model(commands.command_models({"rj.meeting.record-held"})["rj.meeting.record-held"])
    assert console_forms.check(model, parsed) is None
    assert parsed.problems["held_at"] == "time" and parsed.problems["meeting_id"] == "required"


def test_english_and_welsh_say_every_message_and_code() -> None:
    for key_, (english, welsh) in MESSAGES.items():
        if key_ != "footer.welsh_review":  # said on Welsh pages only
            assert english.strip() and welsh.strip(), key_
        assert english.count("{") == welsh.count("{"), key_
    for kind, labels in CODES.items():
        for code, pair in labels.items():
            assert all(word.strip() for word in pair), (kind, code)
    for section in STATEMENT:
        assert all(section.heading) and all(all(p) for p in section.paragraphs)
    assert Text("cy").code("status", "closed") == "Wedi cau" and Text("en").code("status", "new-code") == "new-code"
    for command_type in console_forms.ACTIONS:
        assert command_type in CODES["command"], command_type
