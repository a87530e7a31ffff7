"""The case page's notifications, against the real PostgreSQL read model and key store: the notify service's facts
(scheduled, sent, failed, uncertain, cancelled) folded through ``readmodel.take_in`` in any order, split into any
batches and delivered twice, give each notification its one latest state; whom it went to is sealed at rest and
opened only with personal data (view-logged); ``GET /cases/{id}`` shows them to whoever may see the case and nobody
else (a facilitator of another case, another force: 404); the console's case page has a "Notifications" section,
in English and Welsh, with a delivery in doubt called out for the facilitator."""

from __future__ import annotations

import base64
import json
import os
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from schemas.common import Actor, Channel
from schemas.envelope import CloudEvent, EventData, new_event
from schemas.notify import (
    SYSTEM_NOTIFY,
    CancelReason,
    FailureReason,
    MessageFormat,
    MessageLanguage,
    NotificationCancelled,
    NotificationFailed,
    NotificationKind,
    NotificationScheduled,
    NotificationSent,
    NotificationUncertain,
    NotifyPreferencesRecorded,
    RecipientKind,
)
from services.api import auth, views
from services.api.console import LANGUAGE_COOKIE, SESSION_COOKIE, SessionBox
from services.api.http import create_app
from services.api.principal import Principal, Role
from tests.integration.test_api_read_model_order import (  # noqa: F401 (pool: the fixture)
    FORCE,
    SETTINGS,
    at,
    case_facts,
    comparable,
    detail,
    feed,
    pool,
)
from tests.integration.test_api_read_model_properties import deliver

pytestmark = pytest.mark.integration

STAFF = Actor(kind="staff", id="coord-1")

#: Each notification of the case: what it is, to whom, on which channel, and the outcomes notify decided for it
#: (``(minute, state, detail)``). The last is a race: a send in doubt, resolved later as sent.
MESSAGES: dict[str, tuple[NotificationKind, str, RecipientKind, Channel | None, list[tuple[int, str, Any]]]] = {
    "N-VICTIM": (
        NotificationKind.meeting_booked, "V-1", RecipientKind.participant, Channel.email, [(21, "sent", None)],
    ),
    "N-OFFENDER": (
        NotificationKind.meeting_booked, "O-1", RecipientKind.participant, Channel.email, [(22, "uncertain", None)],
    ),
    "N-FACILITATOR": (
        NotificationKind.facilitator_assigned, "F-ANN", RecipientKind.staff, Channel.email,
        [(23, "failed", Channel.sms)],
    ),
    "N-REMINDER": (
        NotificationKind.meeting_reminder, "V-1", RecipientKind.participant, Channel.sms,
        [(24, "cancelled", CancelReason.held)],
    ),
    "N-STOPPED": (NotificationKind.process_stopped, "O-1", RecipientKind.participant, Channel.letter, []),
    "N-RACE": (
        NotificationKind.closure, "V-1", RecipientKind.participant, Channel.email,
        [(25, "uncertain", None), (26, "sent", None)],
    ),
}  # fmt: skip

#: What the rules make of them: the latest state by rank (sent over uncertain), with its reason and next channel.
EXPECTED = {
    "N-VICTIM": ("sent", None, None),
    "N-OFFENDER": ("uncertain", None, None),
    "N-FACILITATOR": ("failed", "rejected", "sms"),
    "N-REMINDER": ("cancelled", "held", None),
    "N-STOPPED": ("scheduled", None, None),
    "N-RACE": ("sent", None, None),
}


def notify_facts(case_id: str) -> list[CloudEvent[Any]]:
    """The notify service's facts about the case, in the order decided (each scheduled at minute 20, due a day on)."""
    decided: list[tuple[int, EventData]] = [
        (19, NotifyPreferencesRecorded(
            case_id=case_id, person_id="V-1", language=MessageLanguage.cy, format=MessageFormat.large_print,
            recorded_at=at(19), recorded_by=STAFF,
        )),
    ]  # fmt: skip
    for nid, (kind, recipient, recipient_kind, channel, outcomes) in MESSAGES.items():
        base = dict(
            case_id=case_id, notification_id=f"{case_id}-{nid}", recipient_id=recipient, recipient_kind=recipient_kind,
            kind=kind, channel=channel, decided_by=SYSTEM_NOTIFY,
        )  # fmt: skip
        decided.append(
            (20, NotificationScheduled(
                **base, due_at=at(60 * 24), urgent=recipient_kind is RecipientKind.staff, cause_event_id="cause-1",
                scheduled_at=at(20),
            ))
        )  # fmt: skip
        for minute, state, extra in outcomes:
            fact: EventData
            if state == "sent":
                fact = NotificationSent(**base, provider_id=f"p-{nid}", attempt=1, sent_at=at(minute))
            elif state == "uncertain":
                fact = NotificationUncertain(**base, attempt=1, found_at=at(minute))
            elif state == "failed":
                fact = NotificationFailed(
                    **base, reason_code=FailureReason.rejected, permanent=True, next_channel=extra, attempt=1,
                    failed_at=at(minute),
                )  # fmt: skip
            else:
                fact = NotificationCancelled(**base, reason_code=extra, cancelled_at=at(minute))
            decided.append((minute, fact))
    return [
        new_event(data, source="urn:notify", subject=case_id, time=at(minute), force=FORCE, event_id=f"{case_id}-n{i}")
        for i, (minute, data) in enumerate(decided)
    ]


def states(view: Any, case_id: str) -> dict[str, tuple[str, str | None, str | None]]:
    return {
        n.notification_id.removeprefix(f"{case_id}-"): (n.state, n.reason_code, n.next_channel)
        for n in view.notifications
    }


async def test_each_notification_shows_its_latest_state_and_whom_it_went_to_only_with_personal_data(
    pool: asyncpg.Pool,  # noqa: F811
) -> None:
    case_id = f"case-{uuid.uuid4().hex[:8]}"
    await feed(pool, [*case_facts(case_id), *notify_facts(case_id)], one_at_a_time=False)

    shown = await detail(pool, case_id, personal=True)
    assert states(shown, case_id) == EXPECTED
    by_id = {n.notification_id.removeprefix(f"{case_id}-"): n for n in shown.notifications}
    assert {nid: (n.recipient_kind, n.recipient_id) for nid, n in by_id.items()} == {
        nid: (recipient_kind.value, recipient) for nid, (_, recipient, recipient_kind, _, _) in MESSAGES.items()
    }
    assert by_id["N-VICTIM"].kind == "meeting_booked" and by_id["N-VICTIM"].channel == "email"
    assert by_id["N-VICTIM"].due_at == at(60 * 24) and by_id["N-VICTIM"].updated_at == at(21)
    assert by_id["N-STOPPED"].updated_at == at(20)
    assert f"notifications[{case_id}-N-OFFENDER].recipient_id" in shown.personal_fields

    hidden = await detail(pool, case_id, personal=False)
    assert states(hidden, case_id) == EXPECTED
    assert all(n.recipient_id is None for n in hidden.notifications) and hidden.personal_fields == []

    types = [e.event_type for e in shown.timeline]
    assert types.count("rj.notification.scheduled") == len(MESSAGES)
    assert "rj.notification.uncertain" in types and "rj.notify.preferences-recorded" in types
    lines = [e.summary for e in hidden.timeline if e.event_type.startswith("rj.notification.")]
    assert all("V-1" not in line and "O-1" not in line and "F-ANN" not in line for line in lines), lines

    async with pool.acquire() as conn:
        at_rest = await conn.fetchval(
            """SELECT string_agg(n::text, ' ') FROM api.notifications n WHERE case_id = $1""", case_id
        )
        notify_timeline = await conn.fetchval(
            """SELECT string_agg(t::text, ' ') FROM api.timeline t
                WHERE case_id = $1 AND event_type LIKE 'rj.notification.%'""",
            case_id,
        )
    for recipient in ('"V-1"', '"O-1"', '"F-ANN"'):
        assert recipient not in at_rest and recipient not in notify_timeline, f"{recipient} is in clear at rest"


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
async def test_notification_facts_in_any_order_batches_and_repeats_give_the_case_the_same_notifications(
    pool: asyncpg.Pool,  # noqa: F811
    data: st.DataObject,
) -> None:
    expected_id, case_id = f"case-{uuid.uuid4().hex[:8]}", f"case-{uuid.uuid4().hex[:8]}"
    await feed(pool, [*case_facts(expected_id), *notify_facts(expected_id)], one_at_a_time=False)

    facts = [*case_facts(case_id), *notify_facts(case_id)]
    arrivals = data.draw(st.permutations(facts), label="order")
    repeats = data.draw(st.lists(st.sampled_from(facts), max_size=4), label="repeats")
    arrivals = [*arrivals, *repeats]  # at-least-once: some facts again, after the rest
    cuts = sorted(data.draw(st.sets(st.integers(1, len(arrivals) - 1), max_size=6), label="cuts"))
    batches = [arrivals[a:b] for a, b in zip([0, *cuts], [*cuts, len(arrivals)], strict=True)]
    for batch in batches:
        await deliver(pool, batch, crash_first=data.draw(st.booleans(), label="crash"))

    got = await detail(pool, case_id, personal=True)
    assert states(got, case_id) == EXPECTED
    assert comparable(got) == comparable(await detail(pool, expected_id, personal=True))


# --- over HTTP: the API's case page and the console's -------------------------------------------------------------

KEY = os.urandom(32)
ASSIGNED = Principal(staff_id="F-ANN", role=Role.facilitator, force=FORCE)
CALLERS = {
    "assigned": ASSIGNED,
    "other-facilitator": Principal(staff_id="F-ZED", role=Role.facilitator, force=FORCE),
    "other-force": Principal(staff_id="C-9", role=Role.coordinator, force="urn:police:other:rms"),
    "coordinator": Principal(staff_id="C-1", role=Role.coordinator, force=FORCE),
}


class Tokens:
    def verify(self, token: str) -> Principal:
        if token not in CALLERS:
            raise auth.Unauthenticated("unknown token")
        return CALLERS[token]


@pytest.fixture
async def served(pool: asyncpg.Pool) -> AsyncIterator[tuple[httpx.AsyncClient, str]]:  # noqa: F811
    case_id = f"case-{uuid.uuid4().hex[:8]}"
    await feed(pool, [*case_facts(case_id), *notify_facts(case_id)], one_at_a_time=False)
    app_settings = SETTINGS.model_copy(
        update={
            "console_session_key": SecretStr(base64.b64encode(KEY).decode()),
            "oidc_issuer": "http://127.0.0.1:9",
        }
    )

    async def pool_source() -> asyncpg.Pool:
        return pool

    app = create_app(pool=pool_source, verifier=Tokens(), settings=app_settings)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://127.0.0.1:8080") as client:
        yield client, case_id


async def test_the_case_page_shows_the_notifications_to_whoever_may_see_the_case_and_to_nobody_else(
    served: tuple[httpx.AsyncClient, str],
    pool: asyncpg.Pool,  # noqa: F811
) -> None:
    client, case_id = served
    page = await client.get(f"/cases/{case_id}", headers={"Authorization": "Bearer assigned"})
    assert page.status_code == 200, page.text
    body = page.json()
    assert states(views.CaseDetail.model_validate(body), case_id) == EXPECTED
    offender = next(n for n in body["notifications"] if n["notification_id"] == f"{case_id}-N-OFFENDER")
    assert (offender["recipient_id"], offender["state"]) == ("O-1", "uncertain")
    async with pool.acquire() as conn:
        [logged] = [
            json.loads(r["value"]) for r in await conn.fetch("SELECT value FROM api.outbox WHERE topic = 'rj.api'")
        ]
    assert f"notifications[{case_id}-N-OFFENDER].recipient_id" in logged["data"]["fields"], "shown, so view-logged"

    quiet = await client.get(
        f"/cases/{case_id}", params={"personal": "false"}, headers={"Authorization": "Bearer assigned"}
    )
    assert quiet.status_code == 200 and all(n["recipient_id"] is None for n in quiet.json()["notifications"])
    assert states(views.CaseDetail.model_validate(quiet.json()), case_id) == EXPECTED

    for stranger in ("other-facilitator", "other-force"):
        refused = await client.get(f"/cases/{case_id}", headers={"Authorization": f"Bearer {stranger}"})
        assert refused.status_code == 404, stranger
        assert "N-OFFENDER" not in refused.text and "uncertain" not in refused.text


async def test_the_console_case_page_has_a_notifications_section_with_delivery_uncertain_called_out_in_both_languages(
    served: tuple[httpx.AsyncClient, str],
) -> None:
    client, case_id = served
    client.cookies.set(SESSION_COOKIE, SessionBox([KEY]).seal("session", {"token": "assigned", "csrf": "x"}, 600))
    page = await client.get(f"/console/cases/{case_id}")
    assert page.status_code == 200, page.text
    html = page.text
    assert '<h2 id="notifications">Notifications</h2>' in html
    assert 'id="delivery-uncertain"' in html and "Delivery uncertain for 1 message(s)" in html
    section = html[html.index('<h2 id="notifications">') : html.index('<h2 id="deadlines">')]
    assert section.count("<tr>") == len(MESSAGES) + 1  # the head and one row a notification
    for words in ("Meeting booked", "Victim (V-1)", "Offender (O-1)", "Staff (F-ANN)", "Text message", "Letter",
                  "Delivery uncertain", "Sent", "Failed", "trying Text message next", "Cancelled (held)",
                  "Waiting to go"):  # fmt: skip
        assert words in section, words

    client.cookies.set(LANGUAGE_COOKIE, "cy")
    welsh = (await client.get(f"/console/cases/{case_id}")).text
    assert '<h2 id="notifications">Hysbysiadau</h2>' in welsh and "Danfon yn ansicr" in welsh
    assert "Dioddefwr (V-1)" in welsh
