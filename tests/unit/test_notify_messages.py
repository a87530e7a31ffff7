"""What notify's messages say: every kind in English and Welsh and in every format; a subject on one line; a
template that names a missing field fails; context models hold nothing they were not built to hold; times in
Europe/London, in words; an SMS that fits in four fragments; every participant message ending with how to stop."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from typing import Any

import pytest
from jinja2 import Environment, UndefinedError, meta
from pydantic import ValidationError

from schemas.common import Channel
from schemas.indirect import IndirectItemKind
from schemas.referral import Role
from schemas.scheduling import ItemKind
from services.notify import messages
from services.notify.messages import (
    FACILITATOR_KINDS,
    SMS_MAX_CHARS,
    SMS_MAX_FRAGMENTS,
    TEMPLATES,
    WITHDRAW_LINK_KINDS,
    CaseView,
    DeliveryProblem,
    Format,
    Language,
    MeetingContext,
    MessageKind,
    PartyView,
    Rendered,
    clock_in_words,
    context_for,
    context_model,
    day_in_words,
    render,
    sms_fragments,
    template_name,
    when_in_words,
)

SERVICE = {"service_name": "West Mercia Restorative Justice", "service_phone": "0300 123 4567"}
LINK = "https://rj.example.police.uk/p/AbC-123_xyz"
# A withdraw link as the API mints them: about 300 characters of token (AES-GCM over the case, the person, an id
# and an expiry); the longest a context accepts is 600.
REAL_LINK = "https://rj.west-mercia.police.uk/p/AQ" + "x9_-" * 75
LONGEST_LINK = "https://rj.west-mercia.police.uk/p/" + "y" * 565
CASE = CaseView(case_id="case-7f3a", crime_reference="22/81234/26", facilitator_name="Sam Okafor")
VICTIM = PartyView(person_id="p-1", role="victim", name="Jane Rowe", email=None, phone=None, address=None)
FACILITATOR = PartyView(person_id="f-1", role="facilitator", name="Sam Okafor", email=None, phone=None, address=None)
STARTS = datetime(2026, 12, 5, 10, 30, tzinfo=UTC)  # winter: London is UTC
ENDS = datetime(2026, 12, 5, 12, 30, tzinfo=UTC)

FACTS: dict[MessageKind, dict[str, Any]] = {
    MessageKind.victim_information: {},
    MessageKind.facilitator_assigned: {"sensitive": True, "victim_information_due": date(2026, 12, 7)},
    MessageKind.facilitator_withdrawal: {"participant_role": Role.offender, "stopped_at": STARTS},
    MessageKind.facilitator_hold: {"held_at": STARTS},
    MessageKind.facilitator_delivery_problem: {
        "problem": DeliveryProblem.failed,
        "message_kind": MessageKind.meeting_booked,
        "recipient_role": Role.supporter,
        "channel": Channel.email,
        "next_channel": Channel.sms,
    },
    MessageKind.meeting_booked: {
        "starts_at": STARTS,
        "ends_at": ENDS,
        "venue_name": "Riverside Community Centre",
        "venue_address": "1 Quay Street\nWorcester\nWR1 2JJ",
        "arrival": "Please use the side entrance on Mill Lane.",
    },
    MessageKind.meeting_rescheduled: {
        "starts_at": STARTS,
        "ends_at": ENDS,
        "venue_name": "Riverside Community Centre",
        "previous_starts_at": datetime(2026, 11, 28, 10, tzinfo=UTC),
    },
    MessageKind.meeting_cancelled: {"starts_at": STARTS},
    MessageKind.meeting_reminder: {"starts_at": STARTS, "ends_at": ENDS, "venue_name": "Riverside Community Centre"},
    MessageKind.item_reminder: {
        "item_kind": ItemKind.reparation,
        "due_date": date(2027, 1, 15),
        "amount_outstanding_pence": 2550,
    },
    MessageKind.item_unmet: {"item_kind": ItemKind.apology, "due_date": date(2027, 1, 15)},
    MessageKind.indirect_item: {"item_kind": IndirectItemKind.letter},
    MessageKind.process_stopped: {},
    MessageKind.withdrawal_confirmed: {},
    MessageKind.closure: {"completed": True},
    MessageKind.survey_invitation: {"survey_link": "https://rj.example.police.uk/survey/q1"},
}

EVERY = [(kind, language, format) for kind in MessageKind for language in Language for format in Format]
PARTICIPANT_KINDS = [kind for kind in MessageKind if kind not in FACILITATOR_KINDS]


def context(kind: MessageKind, *, link: str | None = LINK, **overrides: Any) -> Any:
    recipient = FACILITATOR if kind in FACILITATOR_KINDS else VICTIM
    facts = {**SERVICE, **FACTS[kind], **overrides}
    if kind in WITHDRAW_LINK_KINDS and link is not None:
        facts.setdefault("withdraw_link", link)
    return context_for(kind, recipient=recipient, case=CASE, **facts)


def paragraphs(text: str) -> list[str]:
    return [p.strip() for p in text.split("\n\n") if p.strip()]


# --- every kind, language and format ----------------------------------------------------------------------


@pytest.mark.parametrize(("kind", "language", "format"), EVERY)
def test_every_kind_renders_in_english_and_welsh_in_every_format(
    kind: MessageKind, language: Language, format: Format
) -> None:
    rendered = render(kind, context(kind), language=language, format=format)
    assert rendered.subject and "\n" not in rendered.subject
    assert len(paragraphs(rendered.text)) >= 3  # greeting, what it says, how to stop (or who sent it)
    assert f'<html lang="{language}">' in rendered.html
    assert rendered.html.count("<h1>") == 1
    assert rendered.sms.startswith(SERVICE["service_name"] + ": ")
    assert len(rendered.sms) <= SMS_MAX_CHARS and sms_fragments(rendered.sms) <= SMS_MAX_FRAGMENTS
    other = Language.cy if language is Language.en else Language.en
    translated = render(kind, context(kind), language=other, format=format)
    assert translated.subject != rendered.subject and translated.text != rendered.text


def test_every_kind_has_its_own_words_in_each_language_for_standard_and_easy_read() -> None:
    for kind in MessageKind:
        for language in Language:
            for format in (Format.standard, Format.easy_read):
                assert (TEMPLATES / template_name(kind, language, format)).is_file()
            assert template_name(kind, language, Format.large_print) == template_name(kind, language, Format.standard)


def test_every_welsh_file_says_it_needs_a_welsh_language_reviewer_before_go_live() -> None:
    welsh = sorted(TEMPLATES.glob("*.cy.j2"))
    assert len(welsh) == 2 * len(MessageKind) + 2  # two formats a kind, the layout and the shared words
    for path in welsh:
        first = path.read_text(encoding="utf-8").splitlines()[0]
        assert "needs one before go-live (Welsh Language Standards)" in first, path.name


# --- the subject ------------------------------------------------------------------------------------------


def test_the_subject_is_one_line_even_when_a_value_in_it_has_line_breaks() -> None:
    case = CASE.model_copy(update={"crime_reference": "22/81234/26\nsecond line\r\nthird"})
    ctx = context_for(
        MessageKind.facilitator_assigned,
        recipient=FACILITATOR,
        case=case,
        **SERVICE,
        **FACTS[MessageKind.facilitator_assigned],
    )
    for language in Language:
        subject = render(MessageKind.facilitator_assigned, ctx, language=language, format=Format.standard).subject
        assert subject.endswith("22/81234/26 second line third")
        assert "\n" not in subject and "\r" not in subject


def test_a_rendered_message_with_a_subject_of_two_lines_is_refused() -> None:
    with pytest.raises(ValidationError, match="one line"):
        Rendered(subject="one\ntwo", text="t", html="h", sms="s")
    with pytest.raises(ValidationError, match="612"):
        Rendered(subject="s", text="t", html="h", sms="x" * (SMS_MAX_CHARS + 1))


# --- fields: missing ones fail loudly, extra ones are refused ----------------------------------------------


def test_strict_undefined_makes_a_template_naming_a_missing_field_fail() -> None:
    complete = context(MessageKind.meeting_booked)
    # model_construct skips validation: a context that lacks starts_at, as a bug elsewhere might make one
    fields = complete.model_dump(exclude={"starts_at"})
    broken = MeetingContext.model_construct(**fields)
    with pytest.raises(UndefinedError, match="starts_at"):
        render(MessageKind.meeting_booked, broken, language=Language.en, format=Format.standard)


def test_every_template_names_only_fields_of_its_own_context() -> None:
    """StrictUndefined catches a missing field only on the branch that runs; this reads every branch. The layouts,
    shared by every kind, may name any kind's fields: each use sits under a test of the audience or the kind's
    own words file calls it (a meeting's details)."""
    render_values = {"w", "ui", "self", "part", "language", "format", "kind", "audience", "sms_link", "sms_brief"}
    every_field: set[str] = set()
    for language in Language:
        environment = messages._ENVIRONMENTS[False, language]
        assert environment.loader is not None

        def names(template: str, environment: Environment = environment) -> set[str]:
            assert environment.loader is not None
            source = environment.loader.get_source(environment, template)[0]
            return meta.find_undeclared_variables(environment.parse(source))

        for kind in MessageKind:
            allowed = set(context_model(kind).model_fields) | render_values
            every_field |= allowed
            for format in (Format.standard, Format.easy_read):
                name = template_name(kind, language, format)
                assert names(name) <= allowed, f"{name} uses {sorted(names(name) - allowed)}"
        for shared in ("_base.j2", "_ui.j2", f"_words.{language}.j2"):
            assert names(shared) <= render_values | {"service_name", "html"}, shared
        layout = f"_layout.{language}.j2"
        assert names(layout) <= every_field, f"{layout} uses {sorted(names(layout) - every_field)}"


@pytest.mark.parametrize("kind", list(MessageKind))
def test_context_models_forbid_extra_fields_and_are_frozen(kind: MessageKind) -> None:
    built = context(kind)
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        context_model(kind).model_validate({**built.model_dump(), "other_party_name": "Mark Hale"})
    with pytest.raises(ValidationError, match="frozen"):
        built.service_name = "changed"


def test_context_for_takes_names_only_from_the_recipient_and_the_case() -> None:
    with pytest.raises(ValueError, match="recipient_name come from the recipient"):
        context_for(MessageKind.closure, recipient=VICTIM, case=CASE, recipient_name="Mark Hale", **SERVICE)
    with pytest.raises(ValueError, match="case_id, crime_reference, facilitator_name"):
        context_for(
            MessageKind.facilitator_hold,
            recipient=FACILITATOR,
            case=CASE,
            case_id="x",
            crime_reference="y",
            facilitator_name="z",
            **SERVICE,
        )
    with pytest.raises(ValidationError, match="other_party_phone"):
        context_for(MessageKind.closure, recipient=VICTIM, case=CASE, other_party_phone="07700 900123", **SERVICE)
    built = context_for(MessageKind.meeting_cancelled, recipient=VICTIM, case=CASE, starts_at=STARTS, **SERVICE)
    assert built.model_dump()["recipient_name"] == "Jane Rowe"
    assert built.model_dump()["facilitator_name"] == "Sam Okafor"  # the case's facilitator, staff


def test_a_facilitator_message_goes_only_to_a_facilitator_and_a_participant_message_only_to_a_participant() -> None:
    with pytest.raises(ValueError, match="goes to a facilitator, not a victim"):
        context_for(MessageKind.facilitator_hold, recipient=VICTIM, case=CASE, **SERVICE)
    with pytest.raises(ValueError, match="goes to a participant, not a facilitator"):
        context_for(MessageKind.closure, recipient=FACILITATOR, case=CASE, **SERVICE)


def test_messages_sent_after_the_process_stopped_carry_no_withdraw_link() -> None:
    ended = {
        MessageKind.process_stopped,
        MessageKind.withdrawal_confirmed,
        MessageKind.closure,
        MessageKind.survey_invitation,
    }
    assert set(PARTICIPANT_KINDS) - WITHDRAW_LINK_KINDS == ended
    for kind in ended:
        with pytest.raises(ValidationError, match="withdraw_link"):
            context_for(kind, recipient=VICTIM, case=CASE, withdraw_link=LINK, **SERVICE)


def test_render_refuses_a_context_built_for_another_kind() -> None:
    with pytest.raises(TypeError, match="meeting_reminder message takes a MeetingContext"):
        render(
            MessageKind.meeting_reminder,
            context(MessageKind.meeting_cancelled),
            language=Language.en,
            format=Format.standard,
        )


def test_a_meeting_that_ends_before_it_starts_is_refused() -> None:
    with pytest.raises(ValidationError, match="end after it starts"):
        context(MessageKind.meeting_booked, ends_at=STARTS)


def test_a_link_with_a_space_or_not_http_is_refused() -> None:
    for bad in ("javascript:alert(1)", "https://rj.example/p/a b"):
        with pytest.raises(ValidationError, match="withdraw_link"):
            context(MessageKind.item_unmet, link=bad)


# --- times in words, in Europe/London -------------------------------------------------------------------------


def test_times_are_shown_in_europe_london_in_words() -> None:
    summer = datetime(2026, 7, 4, 9, 30, tzinfo=UTC)  # British Summer Time: 10:30 in London
    assert when_in_words(summer, Language.en) == "Saturday 4 July 2026 at 10:30am"
    assert when_in_words(summer, Language.cy) == "dydd Sadwrn 4 Gorffennaf 2026 am 10:30yb"
    assert when_in_words(STARTS, Language.en) == "Saturday 5 December 2026 at 10:30am"  # GMT: as given
    late = datetime(2026, 6, 30, 23, 30, tzinfo=UTC)  # already the next day in London
    assert day_in_words(late, Language.en) == "Wednesday 1 July 2026"
    assert clock_in_words(late, Language.en) == "12:30am"
    assert clock_in_words(datetime(2026, 7, 4, 11, 0, tzinfo=UTC), Language.en) == "midday"
    assert clock_in_words(datetime(2026, 7, 4, 23, 0, tzinfo=UTC), Language.cy) == "hanner nos"
    assert clock_in_words(datetime(2026, 12, 4, 18, 0, tzinfo=UTC), Language.en) == "6pm"
    assert clock_in_words(datetime(2026, 12, 4, 18, 0, tzinfo=UTC), Language.cy) == "6yh"
    spring_forward = datetime(2026, 3, 29, 1, 30, tzinfo=UTC)  # the clocks went forward at 01:00 UTC
    assert when_in_words(spring_forward, Language.en) == "Sunday 29 March 2026 at 2:30am"
    assert day_in_words(date(2027, 1, 15), Language.cy) == "dydd Gwener 15 Ionawr 2027"
    with pytest.raises(ValueError, match="timezone-aware"):
        when_in_words(datetime(2026, 7, 4, 9, 30), Language.en)


def test_a_meeting_message_gives_its_time_in_london_in_words() -> None:
    summer = context(
        MessageKind.meeting_booked,
        starts_at=datetime(2026, 7, 4, 9, 30, tzinfo=UTC),
        ends_at=datetime(2026, 7, 4, 11, 0, tzinfo=UTC),
    )
    english = render(MessageKind.meeting_booked, summer, language=Language.en, format=Format.standard)
    assert "Saturday 4 July 2026, 10:30am to midday" in english.text
    assert "Saturday 4 July 2026 at 10:30am" in english.sms
    welsh = render(MessageKind.meeting_booked, summer, language=Language.cy, format=Format.standard)
    assert "Dydd Sadwrn 4 Gorffennaf 2026, 10:30yb tan canol dydd" in welsh.text
    overnight = context(
        MessageKind.meeting_reminder,
        starts_at=datetime(2026, 12, 5, 22, tzinfo=UTC),
        ends_at=datetime(2026, 12, 6, 1, tzinfo=UTC),
    )
    text = render(MessageKind.meeting_reminder, overnight, language=Language.en, format=Format.standard).text
    assert "Saturday 5 December 2026 at 10pm to Sunday 6 December 2026 at 1am" in text


# --- SMS -----------------------------------------------------------------------------------------------------


def test_sms_fragments_count_gsm_septets_and_ucs2_units() -> None:
    assert sms_fragments("a" * 160) == 1
    assert sms_fragments("a" * 161) == 2
    assert sms_fragments("a" * 612) == 4
    assert sms_fragments("€" * 80) == 1  # an extension character takes two septets
    assert sms_fragments("€" * 81) == 2
    assert sms_fragments("ŵ" * 70) == 1  # Welsh's circumflexes are not GSM: UCS-2
    assert sms_fragments("ŵ" * 71) == 2
    assert sms_fragments("ŵ" * 268) == 4
    assert sms_fragments("ŵ" * 269) == 5


@pytest.mark.parametrize(("kind", "language", "format"), EVERY)
def test_sms_fits_in_four_fragments_with_every_field_at_its_longest(
    kind: MessageKind, language: Language, format: Format
) -> None:
    link = LONGEST_LINK
    longest: dict[str, Any] = {"service_name": "S" * 60, "service_phone": "0" * 32}
    fields = context_model(kind).model_fields
    for name, value in {
        "venue_name": "V" * 200,
        "venue_address": "\n".join(["A" * 59] * 5),
        "arrival": "Ŵ" * 500,  # not GSM: the worst case for room
        "survey_link": "https://rj.example.police.uk/s/" + "x" * 560,
    }.items():
        if name in fields:
            longest[name] = value
    case = CaseView(case_id="c" * 200, crime_reference="r" * 100, facilitator_name="F" * 100)
    recipient = FACILITATOR if kind in FACILITATOR_KINDS else VICTIM.model_copy(update={"name": "N" * 100})
    facts = {**FACTS[kind], **longest}
    if kind in WITHDRAW_LINK_KINDS:
        facts["withdraw_link"] = link
    sms = render(kind, context_for(kind, recipient=recipient, case=case, **facts), language=language, format=format).sms
    assert len(sms) <= SMS_MAX_CHARS and sms_fragments(sms) <= SMS_MAX_FRAGMENTS
    assert "N" * 100 not in sms  # the recipient's name stays off a lock screen


def test_sms_carries_the_withdraw_link_when_it_fits_and_the_phone_when_it_does_not() -> None:
    link = REAL_LINK
    english = render(
        MessageKind.item_unmet, context(MessageKind.item_unmet, link=link), language=Language.en, format=Format.standard
    )
    assert english.sms.endswith(link)
    assert sms_fragments(english.sms) <= SMS_MAX_FRAGMENTS
    # A circumflex (here in a Welsh venue's name) needs UCS-2: a real link no longer fits in four fragments
    welsh_venue = context(MessageKind.meeting_booked, link=link, venue_name="Canolfan Glan-y-Dŵr")
    welsh = render(MessageKind.meeting_booked, welsh_venue, language=Language.cy, format=Format.standard)
    assert sms_fragments(welsh.sms) <= SMS_MAX_FRAGMENTS
    assert link not in welsh.sms
    assert welsh.sms.endswith(f"ffoniwch {SERVICE['service_phone']}.")


def test_a_meeting_sms_drops_the_address_and_arrival_only_when_they_do_not_fit() -> None:
    short = render(
        MessageKind.meeting_booked, context(MessageKind.meeting_booked), language=Language.en, format=Format.standard
    )
    assert "1 Quay Street, Worcester, WR1 2JJ" in short.sms and "side entrance" in short.sms
    crowded = context(MessageKind.meeting_booked, arrival="Please use the side entrance. " + "Ŵ" * 400)
    brief = render(MessageKind.meeting_booked, crowded, language=Language.en, format=Format.standard)
    assert "Riverside Community Centre" in brief.sms and "side entrance" not in brief.sms
    assert "side entrance" in brief.text  # the email and the letter keep everything


# --- how to stop, and who sent it -------------------------------------------------------------------------------


@pytest.mark.parametrize(("kind", "language", "format"), EVERY)
def test_every_participant_message_ends_with_how_to_stop_and_a_facilitators_with_who_sent_it(
    kind: MessageKind, language: Language, format: Format
) -> None:
    phone = SERVICE["service_phone"]
    with_link = render(kind, context(kind), language=language, format=format)
    without = render(kind, context(kind, link=None), language=language, format=format)
    last, last_without = paragraphs(with_link.text)[-1], paragraphs(without.text)[-1]
    if kind in FACILITATOR_KINDS:
        assert SERVICE["service_name"] in last and ("automatically" in last or "awtomatig" in last)
        return
    if kind in WITHDRAW_LINK_KINDS:
        assert last.endswith(LINK) and with_link.sms.endswith(LINK)
        assert re.search(rf'<a href="{re.escape(LINK)}">{re.escape(LINK)}</a></p>\s*</div>\s*</div>', with_link.html)
    assert last_without.endswith(f"{phone}.") and without.sms.endswith(f"{phone}.")
    assert re.search(rf"{re.escape(phone)}\.</p>\s*</div>\s*</div>", without.html)


def test_the_process_stopped_notice_says_neither_who_nor_why() -> None:
    for format in Format:
        rendered = render(
            MessageKind.process_stopped, context(MessageKind.process_stopped), language=Language.en, format=format
        )
        words = f"{rendered.subject} {rendered.text} {rendered.sms}".lower()
        for telling in ("withdr", "declin", "victim", "offender", "reason", "because", "hold", "safeguard"):
            assert telling not in words, telling


# --- HTML, large print and easy read -------------------------------------------------------------------------------


def test_html_escapes_every_value_and_text_keeps_it_as_written() -> None:
    hostile = context(MessageKind.meeting_booked, venue_name='<script>alert("x")</script> & Co', arrival="<b>bold</b>")
    rendered = render(MessageKind.meeting_booked, hostile, language=Language.en, format=Format.standard)
    assert "<script>" not in rendered.html and "<b>bold</b>" not in rendered.html
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt; &amp; Co" in rendered.html
    assert '<script>alert("x")</script> & Co' in rendered.text


def test_large_print_is_the_standard_words_at_16pt_or_more() -> None:
    for kind in MessageKind:
        for language in Language:
            standard = render(kind, context(kind), language=language, format=Format.standard)
            large = render(kind, context(kind), language=language, format=Format.large_print)
            assert (large.subject, large.text, large.sms) == (standard.subject, standard.text, standard.sms)
            sizes = [int(size) for size in re.findall(r"font-size: (\d+)pt", large.html)]
            assert sizes and min(sizes) >= 16
            assert min(int(size) for size in re.findall(r"font-size: (\d+)pt", standard.html)) < 16


def test_easy_read_has_one_short_idea_to_a_line() -> None:
    for kind in PARTICIPANT_KINDS:
        for language in Language:
            easy = render(kind, context(kind), language=language, format=Format.easy_read)
            standard = render(kind, context(kind), language=language, format=Format.standard)
            assert easy.text != standard.text
            for paragraph in paragraphs(easy.text)[1:]:  # after the greeting
                if "\n" in paragraph or paragraph.startswith("http"):
                    continue  # an address, a link
                assert len(paragraph.split()) <= 14, paragraph
