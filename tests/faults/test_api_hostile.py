"""The Facilitator API under hostile clients, driven from outside as an attacker or a broken UI would: over HTTP
and by reading the topics, never by calling its code. Forged and mangled tokens, malformed and oversized bodies,
ids that try to escape their path, retries and races that try to send a command twice or book a meeting past a
withdrawal, and a participant's link hammered by scanners and double clicks.

Whatever is thrown at it, every answer is a 2xx or a 4xx with a JSON reason (a 503 only where the identity
provider is unreachable on purpose), nothing is sent that should not be and nothing that should is sent twice,
the case page still answers, and the service logs no traceback.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from collections.abc import Iterable
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from pydantic import SecretStr

from demo import samples
from schemas import topics
from services.api import links
from services.api.issuer import LocalIssuer
from services.api.principal import Role
from services.runtime.devstack import Broker
from tests.e2e.api_client import Staff, api_up, registered
from tests.e2e.test_api_facilitator import OTHER_FORCE, booked, prepared, referred
from tests.harness import System

pytestmark = pytest.mark.integration

NOTE = "rj.case.add-note"
COMMANDS_IN_OUTBOX = "SELECT count(*) FROM api.outbox WHERE topic = 'rj.commands'"


class Answers:
    """Every answer the API gave in a test, so that one check at the end can say none was a fault of ours."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, int]] = []

    def add(self, what: str, response: httpx.Response) -> httpx.Response:
        self.seen.append((what, response.status_code))
        if response.status_code >= 400 and response.request.method != "HEAD":
            if response.headers.get("content-type", "").startswith("application/json"):
                body = response.json()
                assert set(body) == {"error", "detail"} and body["detail"], f"{what}: {body}"
        return response

    def assert_no_faults(self, *, allowed: Iterable[int] = ()) -> None:
        faults = [(what, status) for what, status in self.seen if status >= 500 and status not in set(allowed)]
        assert not faults, f"answers that were faults of ours: {faults}"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned(header: dict[str, Any], claims: dict[str, Any]) -> str:
    return f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}"


def good_claims(issuer: LocalIssuer, **changes: Any) -> dict[str, Any]:
    now = int(time.time())
    claims = {
        "iss": issuer.url,
        "aud": issuer.audience,
        "sub": "C-EVIL",
        "roles": ["coordinator"],
        "rj_force": samples.UPSTREAM_SOURCE,
        "iat": now,
        "nbf": now,
        "exp": now + 600,
    }
    return {**claims, **changes}


def forged_tokens(issuer: LocalIssuer) -> dict[str, str]:
    """Tokens a real provider never issued for us, each claiming to be a coordinator of the samples' force."""
    claims = good_claims(issuer)
    public_key = issuer._keys[0].public_key()  # noqa: SLF001 - the very key the JWKS publishes to anyone
    public_pem = public_key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    hs_input = unsigned({"alg": "HS256", "typ": "JWT", "kid": issuer.kid}, claims)
    hs_signature = hmac.new(public_pem, hs_input.encode(), hashlib.sha256).digest()
    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    genuine = issuer.mint("F-LOW", Role.volunteer, samples.UPSTREAM_SOURCE)
    header, payload, signature = genuine.split(".")
    another_signature = issuer.mint("X", Role.auditor, "f").split(".")[2]
    promoted = {**jwt.decode(genuine, options={"verify_signature": False}), "roles": ["coordinator"]}
    return {
        "garbage": "not-a-token",
        "three garbage parts": "a.b.c",
        "alg none": unsigned({"alg": "none", "typ": "JWT", "kid": issuer.kid}, claims) + ".",
        "alg none, no kid": unsigned({"alg": "none", "typ": "JWT"}, claims) + ".",
        "HS256 keyed with the public key": f"{hs_input}.{b64url(hs_signature)}",
        "expired": issuer.sign(good_claims(issuer, exp=int(time.time()) - 3600, iat=int(time.time()) - 7200)),
        "other issuer": issuer.sign(good_claims(issuer, iss="https://login.example.org/evil")),
        "other audience": issuer.sign(good_claims(issuer, aud="another-api")),
        "no audience": issuer.sign({k: v for k, v in claims.items() if k != "aud"}),
        "no role": issuer.sign({k: v for k, v in claims.items() if k != "roles"}),
        "unknown role": issuer.sign(good_claims(issuer, roles=["superuser"])),
        "no force": issuer.sign({k: v for k, v in claims.items() if k != "rj_force"}),
        "role raised, signed by another key under our kid": jwt.encode(
            promoted, other_key, algorithm="RS256", headers={"kid": issuer.kid}
        ),
        "role raised, another key's own kid": jwt.encode(
            promoted, other_key, algorithm="RS256", headers={"kid": "attacker-key"}
        ),
        "role raised, old signature kept": f"{header}.{b64url(json.dumps(promoted).encode())}.{signature}",
        "signature of another token": f"{header}.{payload}.{another_signature}",
        "longer than any token": "e" * 15_000,
    }


async def check_tokens(system: System, answers: Answers, case_id: str) -> None:
    """No forged, stale or mangled token gets in; another force's genuine token sees nothing of ours."""
    assert system.issuer is not None
    async with httpx.AsyncClient(base_url=system.api_url, timeout=20) as client:
        paths = ("/me", f"/cases/{case_id}")
        for path in paths:
            answer = answers.add(f"no token {path}", await client.get(path))
            assert answer.status_code == 401 and answer.headers["WWW-Authenticate"].startswith("Bearer")
        for what, token in forged_tokens(system.issuer).items():
            headers = {"Authorization": f"Bearer {token}"}
            for path in paths:
                answer = answers.add(f"{what} {path}", await client.get(path, headers=headers))
                assert answer.status_code == 401, (what, path, answer.text)
                assert "WWW-Authenticate" in answer.headers
            sent = await client.post(f"/cases/{case_id}/commands/{NOTE}", json={"text": "x"}, headers=headers)
            assert answers.add(f"{what} command", sent).status_code == 401, (what, sent.text)

        token = system.token("C-1", Role.coordinator)
        odd_headers = {
            "scheme only": "Bearer",
            "another scheme": f"Basic {token}",
            "token split by a space": f"Bearer {token[:20]} {token[20:]}",
            "two tokens": f"Bearer {token} {token}",
            "spaces before the token": f"Bearer     {token}",
            "tab before the token": f"Bearer\t{token}",
            "huge header": "Bearer " + "A" * 200_000,
            "just under the server's header limit": "Bearer " + "A" * 15_000,
        }
        for what, value in odd_headers.items():
            try:
                answer = answers.add(what, await client.get("/me", headers={"Authorization": value}))
            except httpx.RemoteProtocolError:
                continue  # the server closed the connection on an oversized header: refused, nothing done
            if what == "spaces before the token" and answer.status_code == 200:
                assert answer.json()["staff_id"] == "C-1"  # a lenient parse of the same token is fine
                continue
            assert 400 <= answer.status_code < 500, (what, answer.status_code, answer.text)
        for raw_head in (b"Bearer ", b"Bearer \xff\xfe", b"Bearer    "):
            request = b"GET /me HTTP/1.1\r\nHost: x\r\nAuthorization: " + raw_head + b"\r\nConnection: close\r\n\r\n"
            status = await raw_status(system, request)
            answers.seen.append((f"raw {raw_head!r}", status or 400))
            assert status is None or 400 <= status < 500, (raw_head, status)
        lower = answers.add("lower-case scheme", await client.get("/me", headers={"Authorization": f"bearer {token}"}))
        assert lower.status_code == 200 and lower.json()["staff_id"] == "C-1"

        # A genuine token of another force: the case does not exist for it, and it cannot act on it.
        elsewhere = {"Authorization": f"Bearer {system.token('C-9', Role.coordinator, OTHER_FORCE)}"}
        page = answers.add("other force page", await client.get(f"/cases/{case_id}", headers=elsewhere))
        assert page.status_code == 404
        listed = answers.add("other force list", await client.get("/cases", headers=elsewhere))
        assert listed.status_code == 200 and listed.json()["cases"] == []
        for command_type, body in ((NOTE, {"text": "x"}), ("rj.facilitator.assign", {"facilitator_id": "F-9"})):
            sent = await client.post(f"/cases/{case_id}/commands/{command_type}", json=body, headers=elsewhere)
            assert answers.add(f"other force {command_type}", sent).status_code == 404, sent.text


async def raw_status(system: System, head: bytes) -> int | None:
    """Send a request exactly as written (bytes no client library would send: trailing spaces, raw non-UTF-8);
    its status, or None when the server closed the connection without one (refused, nothing done)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", system.settings.api_port)
    try:
        writer.write(head)
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), 20)
    except ConnectionError:
        return None
    finally:
        writer.close()
    return int(line.split()[1]) if line.startswith(b"HTTP/1.1 ") else None


def nested(depth: int) -> bytes:
    return b'{"text": ' + b"[" * depth + b"]" * depth + b"}"


async def check_bodies(system: System, answers: Answers, case_id: str) -> None:
    """Malformed, mistyped, oversized and path-escaping input: a 4xx naming why, and nothing sent."""
    coordinator = Staff(system, "C-1", Role.coordinator)
    note_path = f"/cases/{case_id}/commands/{NOTE}"
    json_type = {"Content-Type": "application/json"}
    limit = system.settings.api_max_body_bytes
    refused_bodies: dict[str, tuple[bytes, dict[str, str]]] = {
        "invalid JSON": (b'{"text": ', json_type),
        "a JSON list": (b'["text", "x"]', json_type),
        "a JSON string": (b'"text"', json_type),
        "JSON null": (b"null", json_type),
        "a number": (b"42", json_type),
        "empty": (b"", json_type),
        "wrong type": (b'{"text": 5}', json_type),
        "a list for a string": (b'{"text": ["a"]}', json_type),
        "unknown field": (b'{"text": "a", "colour": "red"}', json_type),
        "an actor of its own": (b'{"text": "a", "actor": {"kind": "staff", "id": "C-BOSS"}}', json_type),
        "a case of its own": (b'{"text": "a", "case_id": "another-case"}', json_type),
        "deeply nested": (nested(50_000), json_type),
        "a huge reason": (json.dumps({"text": "a", "reason": "r" * 1_000_000}).encode(), json_type),
        "a huge body": (json.dumps({"text": "a", "padding": ["x" * 1000] * 5000}).encode(), json_type),
        "non-UTF-8 bytes": (b'{"text": "\xff\xfe\xc3("}', json_type),
        "text/plain": (b'{"text": "a"}', {"Content-Type": "text/plain"}),
        "a form": (b"text=a", {"Content-Type": "application/x-www-form-urlencoded"}),
        "multipart": (
            b'--b\r\nContent-Disposition: form-data; name="text"\r\n\r\na\r\n--b--\r\n',
            {"Content-Type": "multipart/form-data; boundary=b"},
        ),
        "NUL in an id": (b'{"text": "a", "person_id": "P-\\u0000-1"}', json_type),
        "control characters in an id": (b'{"text": "a", "person_id": "P-\\u001b[31m"}', json_type),
    }
    try:
        before = await system.fetchval(COMMANDS_IN_OUTBOX)
        for what, (content, headers) in refused_bodies.items():
            answer = answers.add(what, await coordinator.post(note_path, content=content, headers=headers))
            assert 400 <= answer.status_code < 500, (what, answer.status_code, answer.text[:300])
            expected = 413 if len(content) > limit else None
            assert expected is None or answer.status_code == expected, (what, answer.status_code)

        async def chunks() -> Any:  # no Content-Length: the limit still holds as the body streams in
            for _ in range(40):
                yield b"x" * 16_384

        streamed = await coordinator.post(note_path, content=chunks(), headers=json_type)
        assert answers.add("a huge streamed body", streamed).status_code == 413, streamed.text
        assert streamed.json()["error"] == "too_large"
        assert await system.fetchval(COMMANDS_IN_OUTBOX) == before, "a refused body sent a command"

        # Within the limit, odd text is only text: sealed, sent, and answered like any note.
        odd_texts = ["a\u0000b", "\x1b[2J\x07 bell", "\u202eevil\u202c", "💥" * 500, "'; DROP TABLE api.cases; --"]
        sent_ids = []
        for text in odd_texts:
            answer = answers.add(f"odd text {text[:8]!r}", await coordinator.send(case_id, NOTE, {"text": text}))
            assert answer.status_code in (202, 422), (text, answer.text)
            if answer.status_code == 202:
                sent_ids.append(answer.json()["command_id"])
        for command_id in sent_ids:
            assert (await coordinator.outcome(command_id))["status"] in ("accepted", "rejected")
        assert await system.fetchval(COMMANDS_IN_OUTBOX) == before + len(sent_ids)

        # Ids and paths that try to escape, or are far too long: 404 or 4xx, never a look elsewhere.
        for path in (
            "/cases/..%2F..%2Fetc%2Fpasswd",
            "/cases/%2e%2e/commands/rj.case.add-note",
            f"/cases/{case_id}%2F..%2F..%2Fme",
            "/cases/" + "C" * 10_000,
            "/cases/%00",
            "/cases/%FF%FE",
            "/cases/%1b%5b31m",
            "/commands/..%2F..%2F",
            "/commands/" + "9" * 5_000,
            "/p/..%2F..%2Fetc%2Fpasswd",
            "/p/" + "A" * 5_000,
        ):
            answer = answers.add(path[:40], await coordinator.get(path))
            assert answer.status_code in (400, 404, 405, 422), (path[:60], answer.status_code, answer.text[:200])
        for raw_path in (b"/cases/\xff\xfe", b"/cases/a\x00b", b"/cases/../../etc/passwd", b"/../../etc/passwd"):
            token = system.token("C-1", Role.coordinator).encode()
            head = b"GET " + raw_path + b" HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + token
            status = await raw_status(system, head + b"\r\nConnection: close\r\n\r\n")
            answers.seen.append((f"raw {raw_path!r}", status or 400))
            assert status is None or 400 <= status < 500, (raw_path, status)
        too_long = b"GET /cases/" + b"C" * 100_000 + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        status = await raw_status(system, too_long)
        answers.seen.append(("a 100 kB URL", status or 400))
        assert status is None or 400 <= status < 500, status
        for command_type in ("rj.no-such.command", "rj.indirect.release-due", "rj.consent.erasures-due", "..%2F.."):
            answer = answers.add(command_type, await coordinator.send(case_id, command_type, {"text": "a"}))
            assert answer.status_code in (404, 405), (command_type, answer.status_code)
        for key in ("k" * 201, "bad\x1bkey"):
            answer = await coordinator.send(case_id, NOTE, {"text": "a"}, headers={"Idempotency-Key": key})
            assert answers.add("bad idempotency key", answer).status_code in (400, 422), answer.text
        latin = await coordinator.get(f"/cases/{case_id}", headers={"X-View-Reason": "caf\xe9".encode("latin-1")})
        assert answers.add("latin-1 header", latin).status_code in (200, 400, 422)
        assert await system.fetchval(COMMANDS_IN_OUTBOX) == before + len(sent_ids)
    finally:
        await coordinator.close()


async def commands_on_topic(system: System, case_id: str, done: Any, settle_s: float = 2.0) -> list[dict[str, Any]]:
    """Every command about ``case_id`` on ``rj.commands`` once ``done`` holds for them (then a moment more)."""

    def about(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [m for m in messages if m.get("subject") == case_id]

    messages = await system.read_until(topics.COMMANDS, lambda ms: done(about(ms)), settle_s=settle_s)
    return about(messages)


async def test_forged_tokens_and_hostile_bodies_get_4xx_and_send_nothing(system: System) -> None:
    for name in ("referral", "consent", "api"):
        system.start(name)
    await api_up(system)
    answers = Answers()
    coordinator = Staff(system, "C-1", Role.coordinator)
    try:
        case_id, _victim, _offender = await referred(system, coordinator, "WM/2026/710001")
        await check_tokens(system, answers, case_id)
        await check_bodies(system, answers, case_id)

        assert (await coordinator.case(case_id)).status_code == 200, "the case page still answers"
        answers.assert_no_faults()
        assert "Traceback" not in system.logs("api")
    finally:
        await coordinator.close()


async def test_retries_and_races_send_each_command_once_and_a_withdrawal_outlasts_a_booking(system: System) -> None:
    for name in ("referral", "consent", "scheduling", "api"):
        system.start(name)
    await api_up(system)
    answers = Answers()
    coordinator = Staff(system, "C-1", Role.coordinator)
    ann = Staff(system, "F-ANN", Role.facilitator)
    try:
        await registered(coordinator, "F-ANN", "F-CAL")
        case_id, victim, offender = await referred(system, coordinator, "WM/2026/710002")
        for facilitator_id in ("F-ANN", "F-CAL"):
            assigned = await coordinator.do(case_id, "rj.facilitator.assign", {"facilitator_id": facilitator_id})
            assert assigned["status"] == "accepted", assigned
        await ann.until(case_id, lambda c: "F-ANN" in c["facilitator_ids"], what="the assignment")

        # The same Idempotency-Key ten times at once: one command id, one outbox row, one command on the topic.
        key = {"Idempotency-Key": "retry-storm-1"}
        storm = await asyncio.gather(
            *(ann.send(case_id, NOTE, {"text": "called the victim"}, headers=key) for _ in range(10))
        )
        assert [answers.add("retry storm", a).status_code for a in storm] == [202] * 10, [a.text for a in storm]
        [command_id] = {a.json()["command_id"] for a in storm}
        assert await system.fetchval("SELECT count(*) FROM api.outbox WHERE event_id = $1", command_id) == 1
        assert await system.fetchval("SELECT count(*) FROM api.commands_sent WHERE command_id = $1", command_id) == 1
        # The same key for another command, or another case: a conflict, and nothing sent.
        other = await ann.send(case_id, "rj.case.put-on-hold", {"concern": "c", "raised_by": "r"}, headers=key)
        assert answers.add("key reused", other).status_code == 409, other.text
        assert other.json()["error"] == "conflict"
        # The same key from another member of staff is theirs alone: a command of its own.
        cal = Staff(system, "F-CAL", Role.facilitator)
        try:
            theirs = answers.add("another's key", await cal.send(case_id, NOTE, {"text": "mine"}, headers=key))
            assert theirs.status_code == 202 and theirs.json()["command_id"] != command_id
        finally:
            await cal.close()
        notes = await commands_on_topic(system, case_id, lambda ms: len([m for m in ms if m["type"] == NOTE]) >= 2)
        assert [m["id"] for m in notes if m["type"] == NOTE].count(command_id) == 1
        assert not [m for m in notes if m["type"] == "rj.case.put-on-hold"]

        # A withdrawal and a booking sent at once: whichever lands first, no meeting stays booked.
        await prepared(ann, case_id, [victim, offender])
        await booked(ann, case_id, "F-ANN", samples.next_week)
        cancelled = await ann.do(case_id, "rj.meeting.cancel", {"meeting_id": "M1", "reason": "venue flooded"})
        assert cancelled["status"] == "accepted", cancelled
        starts = samples.next_week(days=8)
        booking = {
            "meeting_id": "M2", "kind": "conference", "starts_at": starts.isoformat(),
            "ends_at": (starts + timedelta(minutes=30)).isoformat(), "lead_facilitator_id": "F-ANN",
            "co_facilitator_id": "F-CAL", "venue_id": "V-HUB",
        }  # fmt: skip
        withdrawal = {"person_id": victim, "through": "facilitator", "method": "phone"}
        sent_withdrawal, sent_booking = await asyncio.gather(
            ann.send(case_id, "rj.consent.withdraw", withdrawal), ann.send(case_id, "rj.meeting.book", booking)
        )
        assert answers.add("race withdraw", sent_withdrawal).status_code == 202, sent_withdrawal.text
        assert answers.add("race book", sent_booking).status_code == 202, sent_booking.text
        withdrawn = await ann.outcome(sent_withdrawal.json()["command_id"])
        assert withdrawn["status"] == "accepted", withdrawn
        await ann.outcome(sent_booking.json()["command_id"])
        page = await ann.until(
            case_id,
            lambda c: (
                any(x["decision"] == "withdrawn" and x["person_id"] == victim for x in c["consents"])
                and "booked" not in [m["status"] for m in c["meetings"]]
            ),
            what="the withdrawal shown and no meeting booked",
        )
        for _ in range(10):  # and it stays so: no late booking slips in after the withdrawal
            await asyncio.sleep(0.3)
            page = (await ann.case(case_id)).json()
            assert "booked" not in [m["status"] for m in page["meetings"]], page["meetings"]

        assert (await coordinator.case(case_id)).status_code == 200, "the case page still answers"
        answers.assert_no_faults()
        assert "Traceback" not in system.logs("api")
    finally:
        await coordinator.close()
        await ann.close()


async def test_a_participant_link_withdraws_once_however_often_it_is_opened_or_posted(system: System) -> None:
    for name in ("referral", "consent", "api"):
        system.start(name)
    await api_up(system)
    answers = Answers()
    coordinator = Staff(system, "C-1", Role.coordinator)
    try:
        case_id, victim, offender = await referred(system, coordinator, "WM/2026/710003")
        other_case, other_victim, _ = await referred(system, coordinator, "WM/2026/710004")
        made = await coordinator.post(f"/cases/{case_id}/withdraw-links", json={"person_id": offender})
        assert answers.add("make link", made).status_code == 200, made.text
        url = made.json()["url"]
        from_the_link = (
            "SELECT count(*) FROM api.outbox WHERE topic = 'rj.commands' "
            "AND convert_from(value, 'UTF8') LIKE '%\"rj.consent.withdraw\"%'"
        )

        async with httpx.AsyncClient(timeout=40, limits=httpx.Limits(max_connections=60)) as participant:
            # Mail scanners and previews open it, many times, in every way but POST: nothing is withdrawn.
            scanner = {"User-Agent": "Mozilla/5.0 (compatible; SafeLinks link checker)"}
            for method in ("GET", "HEAD", "OPTIONS", "GET", "HEAD"):
                seen = answers.add(f"scanner {method}", await participant.request(method, url, headers=scanner))
                assert seen.status_code in (200, 405), (method, seen.status_code)
            opened = await asyncio.gather(*(participant.get(url, headers=scanner) for _ in range(20)))
            assert {answers.add("scanner burst", r).status_code for r in opened} == {200}
            assert await system.fetchval(from_the_link) == 0

            # Another case's person, sealed under a key that is not ours: refused, however it is opened.
            stranger_key = system.settings.model_copy(update={"participant_link_key": SecretStr(links.new_link_key())})
            forged = links.mint_link(stranger_key, case_id=other_case, person_id=other_victim)
            forged = forged.replace(stranger_key.public_base_url, system.api_url)
            for method in ("GET", "POST"):
                refused = answers.add(f"forged {method}", await participant.request(method, forged))
                assert refused.status_code == 404, (method, refused.status_code)
            assert other_victim not in refused.text and other_case not in refused.text

            # Fifty double clicks at once: one withdrawal, every other answer "already used".
            posted = await asyncio.gather(*(participant.post(url) for _ in range(50)))
            statuses = sorted(answers.add("link storm", r).status_code for r in posted)
            assert statuses == [200] + [410] * 49, statuses
            assert (await participant.get(url)).status_code == 410

        withdrawals = await commands_on_topic(
            system, case_id, lambda ms: any(m["type"] == "rj.consent.withdraw" for m in ms), settle_s=3.0
        )
        [withdrawal] = [m for m in withdrawals if m["type"] == "rj.consent.withdraw"]
        assert withdrawal["data"]["actor"]["kind"] == "participant"
        assert not [m for m in await commands_on_topic(system, other_case, lambda ms: True, settle_s=0.5)]
        await coordinator.until(
            case_id,
            lambda c: any(x["decision"] == "withdrawn" and x["person_id"] == offender for x in c["consents"]),
            what="the participant's withdrawal shown",
        )
        assert (await coordinator.case(other_case)).status_code == 200, "the other case still answers"
        answers.assert_no_faults()
        assert "Traceback" not in system.logs("api")
    finally:
        await coordinator.close()


async def test_an_unreachable_identity_provider_is_a_503_not_a_401_nor_a_500(
    broker: Broker, pg_server: str, tmp_path: Path
) -> None:
    """The only 5xx the API may give: its identity provider cannot be asked for its keys (a System of its own, so
    the session's provider keeps running for every other test)."""
    issuer = LocalIssuer(tmp_path / "issuer.pem")
    await issuer.start()
    async with System(broker.bootstrap, pg_server, tmp_path / "logs", issuer=issuer) as system:
        system.start("api")
        await api_up(system)
        token = system.token("C-1", Role.coordinator)
        await issuer.stop()  # before any request: the API has never fetched its keys
        answers = Answers()
        async with httpx.AsyncClient(base_url=system.api_url, timeout=30) as client:
            signed_in = {"Authorization": f"Bearer {token}"}
            for _ in range(3):
                down = answers.add("provider down", await client.get("/me", headers=signed_in))
                assert down.status_code == 503, down.text
                assert down.json()["error"] == "identity_provider_unavailable"
            # No token at all is still the caller's fault, whatever the provider's state.
            assert answers.add("no token", await client.get("/me")).status_code == 401
        answers.assert_no_faults(allowed=[503])
        assert "Traceback" not in system.logs("api")
