"""The local issuer's authorization code flow with PKCE, over real HTTP, as the web console uses it: the sign-in page
says it is the local stand-in; a code goes back only to this machine, works once, only with its code verifier, for
its client and redirect URI, and not after it expires; the tokens it gives are what the API's verifier accepts, the
ID token carrying the sign-in's nonce."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from services.api.auth import TokenVerifier, Unauthenticated
from services.api.issuer import LocalIssuer
from services.api.principal import Principal, Role

pytestmark = pytest.mark.integration

FORCE = "urn:police:west-mercia:rms"
CLIENT = "rj-console"
BACK = "http://127.0.0.1:8080/console/callback"


@pytest.fixture
async def issuer(tmp_path: Path) -> AsyncIterator[LocalIssuer]:
    async with LocalIssuer(tmp_path / "issuer.pem", default_force=FORCE) as running:
        yield running


def pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


def authorization(challenge: str, **changes: str) -> dict[str, str]:
    request = {
        "response_type": "code",
        "client_id": CLIENT,
        "redirect_uri": BACK,
        "scope": "openid",
        "state": "state-1",
        "nonce": "nonce-1",
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    }
    return {**request, **changes}


async def signed_in(client: httpx.AsyncClient, request: dict[str, str], **who: str) -> dict[str, list[str]]:
    """Submit the sign-in page as a person choosing who to be; the query the browser is sent back with."""
    form = {**request, "staff_id": "F-ANN", "role": "facilitator", "force": FORCE, "decision": "sign-in", **who}
    answer = await client.post("/authorize", data=form)
    assert answer.status_code == 303, answer.text
    back = urlsplit(answer.headers["location"])
    assert f"{back.scheme}://{back.netloc}{back.path}" == request["redirect_uri"]
    return parse_qs(back.query)


async def exchange(client: httpx.AsyncClient, code: str, verifier: str, **changes: str) -> httpx.Response:
    form = {"grant_type": "authorization_code", "code": code, "client_id": CLIENT, "redirect_uri": BACK}
    return await client.post("/token", data={**form, "code_verifier": verifier, **changes})


async def test_discovery_names_the_authorization_and_token_endpoints(issuer: LocalIssuer) -> None:
    async with httpx.AsyncClient(base_url=issuer.url) as client:
        document = (await client.get("/.well-known/openid-configuration")).json()
    assert document["authorization_endpoint"] == f"{issuer.url}/authorize"
    assert document["token_endpoint"] == f"{issuer.url}/token"
    assert document["code_challenge_methods_supported"] == ["S256"]
    assert document["response_types_supported"] == ["code"]


async def test_a_code_becomes_an_access_token_the_api_accepts_and_an_id_token_with_the_nonce(
    issuer: LocalIssuer,
) -> None:
    verifier, challenge = pkce()
    async with httpx.AsyncClient(base_url=issuer.url) as client:
        page = await client.get("/authorize", params=authorization(challenge))
        assert page.status_code == 200
        assert "local stand-in" in page.text and 'name="staff_id"' in page.text and FORCE in page.text
        back = await signed_in(client, authorization(challenge), name="Ann Facilitator")
        assert back["state"] == ["state-1"]
        answer = await exchange(client, back["code"][0], verifier)
    assert answer.status_code == 200, answer.text
    assert answer.headers["cache-control"] == "no-store"
    tokens: dict[str, Any] = answer.json()
    assert tokens["token_type"] == "Bearer" and tokens["expires_in"] > 0
    api = TokenVerifier(issuer=issuer.url, jwks_url=issuer.jwks_url, audience="rj-api")
    principal = await asyncio.to_thread(api.verify, tokens["access_token"])
    assert principal == Principal(staff_id="F-ANN", role=Role.facilitator, force=FORCE, name="Ann Facilitator")
    claims = await asyncio.to_thread(api.verify_id_token, tokens["id_token"], client_id=CLIENT, nonce="nonce-1")
    assert claims["sub"] == "F-ANN"
    with pytest.raises(Unauthenticated, match="nonce"):
        await asyncio.to_thread(api.verify_id_token, tokens["id_token"], client_id=CLIENT, nonce="another sign-in")
    with pytest.raises(Unauthenticated):
        await asyncio.to_thread(api.verify, tokens["id_token"])  # never taken as an access token


async def test_a_code_works_once(issuer: LocalIssuer) -> None:
    verifier, challenge = pkce()
    async with httpx.AsyncClient(base_url=issuer.url) as client:
        code = (await signed_in(client, authorization(challenge)))["code"][0]
        assert (await exchange(client, code, verifier)).status_code == 200
        again = await exchange(client, code, verifier)
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"


async def test_a_code_needs_its_own_code_verifier_and_is_gone_after_a_wrong_one(issuer: LocalIssuer) -> None:
    verifier, challenge = pkce()
    other_verifier, _ = pkce()
    async with httpx.AsyncClient(base_url=issuer.url) as client:
        code = (await signed_in(client, authorization(challenge)))["code"][0]
        wrong = await exchange(client, code, other_verifier)
        assert wrong.status_code == 400 and "verifier" in wrong.json()["error_description"]
        assert (await exchange(client, code, verifier)).status_code == 400, "a code tried once is spent"


async def test_a_code_is_refused_for_another_client_or_redirect_uri(issuer: LocalIssuer) -> None:
    verifier, challenge = pkce()
    async with httpx.AsyncClient(base_url=issuer.url) as client:
        for change in ({"client_id": "someone-else"}, {"redirect_uri": "http://127.0.0.1:9/elsewhere"}):
            code = (await signed_in(client, authorization(challenge)))["code"][0]
            refused = await exchange(client, code, verifier, **change)
            assert refused.status_code == 400 and refused.json()["error"] == "invalid_grant"


async def test_an_expired_code_is_refused(tmp_path: Path) -> None:
    verifier, challenge = pkce()
    async with LocalIssuer(tmp_path / "issuer.pem", code_ttl_s=0) as issuer:
        async with httpx.AsyncClient(base_url=issuer.url) as client:
            code = (await signed_in(client, authorization(challenge)))["code"][0]
            refused = await exchange(client, code, verifier)
    assert refused.status_code == 400 and refused.json()["error"] == "invalid_grant"


async def test_the_sign_in_page_sends_browsers_back_only_to_this_machine_and_only_with_pkce(
    issuer: LocalIssuer,
) -> None:
    _, challenge = pkce()
    refusals = [
        authorization(challenge, redirect_uri="https://attacker.example/callback"),
        authorization(challenge, code_challenge_method="plain"),
        authorization(challenge, response_type="token"),
        {k: v for k, v in authorization(challenge).items() if k != "code_challenge"},
    ]
    async with httpx.AsyncClient(base_url=issuer.url) as client:
        for request in refusals:
            page = await client.get("/authorize", params=request)
            assert page.status_code == 400 and "cannot be used" in page.text
            posted = await client.post("/authorize", data={**request, "staff_id": "F-ANN", "role": "coordinator"})
            assert posted.status_code == 400 and "location" not in posted.headers


async def test_cancel_goes_back_with_access_denied_and_a_missing_field_is_named(issuer: LocalIssuer) -> None:
    _, challenge = pkce()
    async with httpx.AsyncClient(base_url=issuer.url) as client:
        cancelled = await client.post("/authorize", data={**authorization(challenge), "decision": "cancel"})
        assert cancelled.status_code == 303
        assert parse_qs(urlsplit(cancelled.headers["location"]).query) == {
            "error": ["access_denied"],
            "state": ["state-1"],
        }
        blank = await client.post("/authorize", data={**authorization(challenge), "staff_id": "", "role": "boss"})
    assert blank.status_code == 400
    assert 'href="#staff_id"' in blank.text and 'href="#role"' in blank.text


@pytest.mark.parametrize(
    "redirect_uri",
    [
        "http://attacker.example\\@127.0.0.1:8080/console/callback",  # a browser reads attacker.example
        "http://127.0.0.1:8080\\@attacker.example/console/callback",
        "http://attacker.example@127.0.0.1:8080/console/callback",  # userinfo: refused whatever it names
        "http://user:secret@127.0.0.1:8080/console/callback",
        "http://127.0.0.1:8080@attacker.example/console/callback",
        "http://attacker.example\t@127.0.0.1:8080/console/callback",  # a browser drops the tab
        "http://127.0.0.1:8080/console/callback\n",
        "http://127.0.0.1:99999/console/callback",  # a port no browser would go to
        "http://127.0.0.1:port/console/callback",
        "http://127.0.0.1:8080/console/callback#fragment",
        "javascript://127.0.0.1/%0aalert(1)",
        "http://lócalhost/console/callback",
    ],
)
async def test_a_redirect_uri_a_browser_could_read_as_another_host_is_refused(
    issuer: LocalIssuer, redirect_uri: str
) -> None:
    _, challenge = pkce()
    request = authorization(challenge, redirect_uri=redirect_uri)
    async with httpx.AsyncClient(base_url=issuer.url) as client:
        page = await client.get("/authorize", params=request)
        assert page.status_code == 400 and "cannot be used" in page.text
        for decision in ("sign-in", "cancel"):
            posted = await client.post(
                "/authorize", data={**request, "staff_id": "F-ANN", "role": "coordinator", "decision": decision}
            )
            assert posted.status_code == 400 and "location" not in posted.headers


async def test_local_redirect_uris_of_every_local_host_form_are_still_served(issuer: LocalIssuer) -> None:
    _, challenge = pkce()
    async with httpx.AsyncClient(base_url=issuer.url) as client:
        for redirect_uri in (
            BACK,
            "http://localhost:8080/console/callback",
            "https://[::1]:8443/console/callback",
            "http://127.0.0.1/console/callback",
        ):
            back = await signed_in(client, authorization(challenge, redirect_uri=redirect_uri))
            assert back["state"] == ["state-1"] and back["code"]
