"""Disclosure (DOMAIN rule 3, with rules 2 and 9): a message to one person never carries another party's name,
contact details or address, whatever the kind, language or format and whatever the people's data looks like.

Hypothesis generates a case of two or three parties, each with distinctive markers in their name and in their
contact details (email, phone, address), and the facts a message may hold (times, a venue, codes, links). The
context is built the way the notify core builds it: ``context_for`` with the recipient's own view and the case's,
never the other parties'. Markers are the only generated text with capital letters ("ZQN..." in names, "ZQC..."
in contact details), so one can appear in a message only if it leaked there. For every message:
- no other party's name or contact marker is in its subject, text, HTML or SMS;
- nobody's contact details are in it, the recipient's own included (an address belongs to the envelope, which
  the letter channel prints, not to the words);
- the recipient's own name is in the text and (escaped) the HTML, where the greeting uses it, and never in the
  subject or SMS, which a lock screen shows; a facilitator's message greets the facilitator and names no party.
"""

from __future__ import annotations

import string
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from markupsafe import escape

from schemas.common import Channel
from schemas.indirect import IndirectItemKind
from schemas.referral import Role
from schemas.scheduling import ItemKind, MeetingKind
from services.notify.messages import (
    FACILITATOR_KINDS,
    FACILITATOR_ROLE,
    WITHDRAW_LINK_KINDS,
    CaseView,
    DeliveryProblem,
    Format,
    Language,
    MessageKind,
    PartyView,
    context_for,
    render,
)

SERVICE = {"service_name": "West Mercia Restorative Justice", "service_phone": "0300 123 4567"}

# Everything generated that is not a marker is lower case, digits and punctuation: no "ZQ" anywhere else.
plain = st.text(alphabet=string.ascii_lowercase + string.digits + " &<>'\"-,.\n", min_size=1, max_size=80).filter(
    lambda value: value.strip() != ""
)
one_line = st.text(alphabet=string.ascii_lowercase + " &<>'\"-.", min_size=1, max_size=60).filter(
    lambda value: value.strip() != ""
)
suffix = st.text(alphabet=string.ascii_lowercase + string.digits, min_size=8, max_size=8)
moments = st.datetimes(min_value=datetime(2025, 1, 1), max_value=datetime(2030, 12, 31), timezones=st.just(UTC))
days = st.dates(min_value=date(2025, 1, 1), max_value=date(2030, 12, 31))
links = st.text(alphabet=string.ascii_lowercase + string.digits + "-_", min_size=8, max_size=300).map(
    lambda token: f"https://rj.example.police.uk/p/{token}"
)
first_names = st.sampled_from(["Jane", "Siân", "O'Brien", "Zoë-Ann", "<b>Mo</b> & Co", 'Dai "Bach"'])


@st.composite
def parties(draw: st.DrawFn) -> list[PartyView]:
    """The case's people, as notify knows them once opened: the victim, the offender, maybe a supporter."""
    roles = [Role.victim, Role.offender] + ([draw(st.sampled_from(list(Role)[2:]))] if draw(st.booleans()) else [])
    people = []
    for index, role in enumerate(roles):
        name_marker = f"ZQN{index}{draw(suffix)}"
        contact_marker = f"ZQC{index}{draw(suffix)}"
        people.append(
            PartyView(
                person_id=f"person-{index}",
                role=role,
                name=None if draw(st.booleans()) else f"{draw(first_names)} {name_marker}",
                email=f"{contact_marker}@mail.example",
                phone=f"07700 {contact_marker}",
                address=f"{draw(st.integers(1, 999))} {contact_marker} Road\nWorcester\nWR1 {contact_marker}",
                language=draw(st.sampled_from(Language)),
                format=draw(st.sampled_from(Format)),
            )
        )
    return people


@st.composite
def meeting(draw: st.DrawFn, *, rescheduled: bool = False) -> dict[str, Any]:
    starts = draw(moments)
    facts: dict[str, Any] = {
        "starts_at": starts,
        "ends_at": starts + timedelta(minutes=draw(st.integers(15, 24 * 60))),
        "meeting_kind": draw(st.sampled_from(MeetingKind)),
    }
    for name, values in (("venue_name", one_line), ("venue_address", plain), ("arrival", plain)):
        if draw(st.booleans()):
            facts[name] = draw(values)
    if rescheduled and draw(st.booleans()):
        facts["previous_starts_at"] = draw(moments)
    return facts


def optional(**strategies: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries({}, optional=strategies)


FACTS: dict[MessageKind, st.SearchStrategy[dict[str, Any]]] = {
    MessageKind.victim_information: st.just({}),
    MessageKind.facilitator_assigned: optional(sensitive=st.booleans(), victim_information_due=days),
    MessageKind.facilitator_withdrawal: optional(
        participant_role=st.sampled_from(Role), declined=st.booleans(), stopped_at=moments, lifted=st.booleans()
    ),
    MessageKind.facilitator_hold: optional(held_at=moments, lifted=st.booleans()),
    MessageKind.facilitator_delivery_problem: st.fixed_dictionaries(
        {"problem": st.sampled_from(DeliveryProblem), "message_kind": st.sampled_from(MessageKind)},
        optional={
            "recipient_role": st.sampled_from(Role),
            "channel": st.sampled_from(Channel),
            "next_channel": st.sampled_from(Channel),
        },
    ),
    MessageKind.meeting_booked: meeting(),
    MessageKind.meeting_rescheduled: meeting(rescheduled=True),
    MessageKind.meeting_cancelled: st.fixed_dictionaries(
        {"starts_at": moments}, optional={"meeting_kind": st.sampled_from(MeetingKind)}
    ),
    MessageKind.meeting_reminder: meeting(),
    MessageKind.item_reminder: st.fixed_dictionaries(
        {"item_kind": st.sampled_from(ItemKind), "due_date": days},
        optional={"amount_outstanding_pence": st.integers(1, 10_000_000)},
    ),
    MessageKind.item_unmet: st.fixed_dictionaries({"item_kind": st.sampled_from(ItemKind), "due_date": days}),
    MessageKind.indirect_item: st.fixed_dictionaries({"item_kind": st.sampled_from(IndirectItemKind)}),
    MessageKind.process_stopped: st.just({}),
    MessageKind.withdrawal_confirmed: st.just({}),
    MessageKind.closure: optional(completed=st.booleans()),
    MessageKind.survey_invitation: optional(survey_link=links),
}


@pytest.mark.parametrize("kind", list(MessageKind))
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_no_message_carries_another_partys_data(kind: MessageKind, data: st.DataObject) -> None:
    people = data.draw(parties(), label="people")
    case = CaseView(
        case_id=data.draw(st.text(alphabet=string.hexdigits.lower(), min_size=8, max_size=40), label="case_id"),
        crime_reference=data.draw(st.text(alphabet=string.digits + "/", min_size=1, max_size=20), label="crime_ref"),
        facilitator_name=data.draw(st.one_of(st.none(), one_line), label="facilitator_name"),
    )
    facts = {**SERVICE, **data.draw(FACTS[kind], label="facts")}
    if kind in WITHDRAW_LINK_KINDS and data.draw(st.booleans(), label="has link"):
        facts["withdraw_link"] = data.draw(links, label="withdraw_link")

    if kind in FACILITATOR_KINDS:
        recipient = PartyView(
            person_id="facilitator-1",
            role=FACILITATOR_ROLE,
            name=data.draw(st.one_of(st.none(), one_line), label="facilitator"),
            email="facilitator@rj.example.police.uk",
            phone=None,
            address=None,
            format=data.draw(st.sampled_from(Format), label="facilitator format"),
            language=data.draw(st.sampled_from(Language), label="facilitator language"),
        )
        others = people
    else:
        recipient = data.draw(st.sampled_from(people), label="recipient")
        others = [person for person in people if person is not recipient]

    rendered = render(
        kind,
        context_for(kind, recipient=recipient, case=case, **facts),
        language=recipient.language,
        format=recipient.format,
    )
    parts = {"subject": rendered.subject, "text": rendered.text, "html": rendered.html, "sms": rendered.sms}

    for person in others:
        for marker in (f"ZQN{person.person_id[-1]}", f"ZQC{person.person_id[-1]}"):
            for part, content in parts.items():
                assert marker not in content, f"{person.role}'s data ({marker}) in the {part} to {recipient.role}"
    for part, content in parts.items():
        assert "ZQC" not in content, f"contact details in the {part}"

    if kind in FACILITATOR_KINDS:
        for part, content in parts.items():
            assert "ZQN" not in content, f"a participant's name in the {part} to the facilitator"
    if recipient.name is not None:
        name = " ".join(recipient.name.split())  # as a paragraph shows it: one space between words
        assert f"{name}," in rendered.text
        assert f"{escape(name)}," in rendered.html
        if kind not in FACILITATOR_KINDS:
            assert name not in rendered.subject and name not in rendered.sms
