"""The token verifier against a running local issuer, over real HTTP: a good token becomes a Principal;
every way a token can be wrong is refused with its own reason; an issuer that cannot be reached is a 503
matter, not a 401; a rotated key is picked up and made-up key ids do not hammer the issuer; and `rj token`
from the command line mints what the verifier accepts."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import os
import stat
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization

from services.api.auth import IdentityProviderUnavailable, TokenVerifier, Unauthenticated, verifier_from_settings
from services.api.issuer import LocalIssuer, issuer_from_settings
from services.api.principal import Principal, Role
from services.runtime.settings import Settings

pytestmark = pytest.mark.integration

FORCE = "https://crime.example/west-midlands"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
async def issuer(tmp_path: Path) -> AsyncIterator[LocalIssuer]:
    async with LocalIssuer(tmp_path / "issuer.pem") as running:
        yield running


def verifier_for(issuer: LocalIssuer, **overrides: Any) -> TokenVerifier:
    options: dict[str, Any] = {"issuer": issuer.url, "jwks_url": issuer.jwks_url, "audience": "rj-api"}
    return TokenVerifier(**{**options, **overrides})


async def verify(verifier: TokenVerifier, token: str) -> Principal:
    """``verify`` blocks on the JWKS fetch, and the issuer answers on this event loop: run it in a thread."""
    return await asyncio.to_thread(verifier.verify, token)


async def refused(verifier: TokenVerifier, token: str) -> str:
    with pytest.raises(Unauthenticated) as caught:
        await verify(verifier, token)
    return str(caught.value)


def claims(issuer: LocalIssuer, **changes: Any) -> dict[str, Any]:
    now = int(time.time())
    base: dict[str, Any] = {
        "iss": issuer.url,
        "aud": "rj-api",
        "sub": "F-ANN",
        "roles": ["facilitator"],
        "rj_force": FORCE,
        "iat": now,
        "nbf": now,
        "exp": now + 600,
    }
    base.update(changes)
    return {name: value for name, value in base.items() if value is not None}


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


async def test_a_good_token_says_who_is_calling(issuer: LocalIssuer) -> None:
    token = issuer.mint("F-ANN", Role.facilitator, FORCE, name="Ann Facilitator")
    assert await verify(verifier_for(issuer), token) == Principal(
        staff_id="F-ANN", role=Role.facilitator, force=FORCE, name="Ann Facilitator"
    )


async def test_a_role_claim_may_be_one_string_or_a_list_with_other_applications_roles_and_the_least_powerful_counts(
    issuer: LocalIssuer,
) -> None:
    verifier = verifier_for(issuer)
    single = await verify(verifier, issuer.sign(claims(issuer, roles="coordinator")))
    mixed = await verify(verifier, issuer.sign(claims(issuer, roles=["Mail.Read", "coordinator", "auditor"])))
    other = await verify(verifier, issuer.sign(claims(issuer, roles=["Mail.Read", "coordinator"])))
    assert (single.role, mixed.role, other.role) == (Role.coordinator, Role.auditor, Role.coordinator)


async def test_claim_names_follow_the_settings_including_nested_ones(issuer: LocalIssuer) -> None:
    # Keycloak puts realm roles under realm_access.roles; Entra's stable user id is oid, not sub.
    verifier = verifier_for(issuer, staff_id_claim="oid", role_claim="realm_access.roles", force_claim="force")
    token = issuer.sign(
        claims(issuer, sub="pairwise-x", oid="F-ANN", roles=None, rj_force=None)
        | {"realm_access": {"roles": ["offline_access", "volunteer"]}, "force": FORCE}
    )
    assert await verify(verifier, token) == Principal(staff_id="F-ANN", role=Role.volunteer, force=FORCE)


async def test_an_expired_token_is_refused(issuer: LocalIssuer) -> None:
    an_hour_ago = int(time.time()) - 3600
    token = issuer.sign(claims(issuer, iat=an_hour_ago - 600, nbf=an_hour_ago - 600, exp=an_hour_ago))
    assert await refused(verifier_for(issuer), token) == "the token has expired"


async def test_a_token_just_past_its_expiry_passes_within_the_clock_skew(issuer: LocalIssuer) -> None:
    token = issuer.sign(claims(issuer, exp=int(time.time()) - 5))
    assert (await verify(verifier_for(issuer, clock_skew_s=30), token)).staff_id == "F-ANN"
    assert await refused(verifier_for(issuer, clock_skew_s=0), token) == "the token has expired"


async def test_a_token_not_valid_yet_is_refused(issuer: LocalIssuer) -> None:
    later = int(time.time()) + 600
    token = issuer.sign(claims(issuer, nbf=later, exp=later + 600))
    assert await refused(verifier_for(issuer), token) == "the token is not valid yet"


async def test_a_token_with_an_altered_payload_is_refused(issuer: LocalIssuer) -> None:
    header, payload, signature = issuer.mint("F-ANN", Role.volunteer, FORCE).split(".")
    body = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    body["roles"] = ["coordinator"]
    altered = ".".join([header, b64(json.dumps(body).encode()), signature])
    assert await refused(verifier_for(issuer), altered) == "the token's signature does not verify"


async def test_a_token_signed_by_another_key_is_refused(issuer: LocalIssuer, tmp_path: Path) -> None:
    impostor = LocalIssuer(tmp_path / "impostor.pem", port=issuer.port)  # never served: its key is unpublished
    verifier = verifier_for(issuer)
    # naming the real key's id, so only the signature can tell
    assert await refused(verifier, impostor.sign(claims(issuer), headers={"kid": issuer.kid})) == (
        "the token's signature does not verify"
    )
    # naming its own key, which the issuer does not publish
    assert await refused(verifier, impostor.sign(claims(issuer))) == (
        "the token is signed with a key the identity provider does not publish"
    )


async def test_a_token_from_another_issuer_is_refused(issuer: LocalIssuer) -> None:
    token = issuer.sign(claims(issuer, iss="https://login.example/other-tenant"))
    assert await refused(verifier_for(issuer), token) == "the token was issued by another identity provider"


async def test_a_token_for_another_audience_is_refused(issuer: LocalIssuer) -> None:
    token = issuer.sign(claims(issuer, aud="payroll"))
    assert await refused(verifier_for(issuer), token) == "the token is meant for another service (audience)"


async def test_an_unsigned_token_is_refused(issuer: LocalIssuer) -> None:
    header = {"alg": "none", "typ": "JWT", "kid": issuer.kid}
    token = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims(issuer)).encode())}."
    assert await refused(verifier_for(issuer), token) == (
        "the token's algorithm 'none' is not accepted (only RS256, ES256)"
    )


async def test_a_token_signed_hs256_with_the_public_key_is_refused(issuer: LocalIssuer) -> None:
    # The classic confusion attack: the "secret" is the public key anyone can fetch from the JWKS.
    public_pem = (
        issuer._keys[0]
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    header = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": issuer.kid}).encode())
    payload = b64(json.dumps(claims(issuer, roles=["coordinator"])).encode())
    signature = b64(hmac.new(public_pem, f"{header}.{payload}".encode(), hashlib.sha256).digest())
    assert await refused(verifier_for(issuer), f"{header}.{payload}.{signature}") == (
        "the token's algorithm 'HS256' is not accepted (only RS256, ES256)"
    )


async def test_a_token_without_a_role_is_refused(issuer: LocalIssuer) -> None:
    assert await refused(verifier_for(issuer), issuer.sign(claims(issuer, roles=None))) == (
        "the token carries no role (roles claim)"
    )
    assert await refused(verifier_for(issuer), issuer.sign(claims(issuer, roles=[]))) == (
        "the token carries no role (roles claim)"
    )


async def test_a_token_with_only_unknown_roles_is_refused(issuer: LocalIssuer) -> None:
    token = issuer.sign(claims(issuer, roles=["admin", "Facilitator"]))
    assert await refused(verifier_for(issuer), token) == (
        "none of the token's roles (roles claim) is one this service knows "
        "(facilitator, volunteer, coordinator, auditor)"
    )


async def test_a_token_without_a_staff_id_force_or_expiry_is_refused(issuer: LocalIssuer) -> None:
    verifier = verifier_for(issuer)
    assert await refused(verifier, issuer.sign(claims(issuer, sub=None))) == "the token has no staff id (sub claim)"
    assert await refused(verifier, issuer.sign(claims(issuer, rj_force=None))) == (
        "the token names no force (rj_force claim)"
    )
    assert await refused(verifier, issuer.sign(claims(issuer, exp=None))) == "the token has no exp claim"


@pytest.mark.parametrize(
    ("garbage", "reason"),
    [
        ("", "no access token"),
        ("not-a-token", "the access token is not a well-formed JWT"),
        ("a.b.c", "the access token is not a well-formed JWT"),
        ("eyJhbGciOiJSUzI1NiJ9.e30.AAAA", "the token names no signing key (kid)"),
        ("x" * 20_000, "the access token is too long to be one"),
    ],
)
async def test_garbage_is_refused_with_a_reason(issuer: LocalIssuer, garbage: str, reason: str) -> None:
    assert await refused(verifier_for(issuer), garbage) == reason


async def test_a_token_with_a_good_header_and_a_broken_payload_is_refused(issuer: LocalIssuer) -> None:
    header = b64(json.dumps({"alg": "RS256", "kid": issuer.kid}).encode())
    assert await refused(verifier_for(issuer), f"{header}.!!!.AAAA") == "the access token is not a well-formed JWT"


async def test_an_issuer_that_cannot_be_reached_is_not_the_callers_fault(tmp_path: Path) -> None:
    issuer = LocalIssuer(tmp_path / "issuer.pem")
    await issuer.start()
    token = issuer.mint("F-ANN", Role.facilitator, FORCE)
    await issuer.stop()
    with pytest.raises(IdentityProviderUnavailable):
        await verify(verifier_for(issuer), token)


async def test_keys_once_fetched_still_verify_while_the_issuer_is_down(tmp_path: Path) -> None:
    issuer = LocalIssuer(tmp_path / "issuer.pem")
    await issuer.start()
    verifier = verifier_for(issuer)
    await verify(verifier, issuer.mint("F-ANN", Role.facilitator, FORCE))
    await issuer.stop()
    assert (await verify(verifier, issuer.mint("F-BEN", Role.coordinator, FORCE))).staff_id == "F-BEN"


async def test_an_issuer_answering_nonsense_is_unavailable_not_unauthenticated(issuer: LocalIssuer) -> None:
    verifier = verifier_for(issuer, jwks_url=issuer.url + "/.well-known/openid-configuration")  # no keys there
    with pytest.raises(IdentityProviderUnavailable):
        await verify(verifier, issuer.mint("F-ANN", Role.facilitator, FORCE))
    verifier = verifier_for(issuer, jwks_url=issuer.url + "/no-such-page")
    with pytest.raises(IdentityProviderUnavailable):
        await verify(verifier, issuer.mint("F-ANN", Role.facilitator, FORCE))


async def test_a_rotated_key_is_picked_up_and_the_previous_one_still_verifies(issuer: LocalIssuer) -> None:
    verifier = verifier_for(issuer, jwks_refetch_s=5)
    before = issuer.mint("F-ANN", Role.facilitator, FORCE)
    await verify(verifier, before)
    assert issuer.jwks_requests == 1
    old_kid, new_kid = issuer.kid, issuer.rotate_key()
    assert new_kid != old_kid
    after = issuer.mint("F-ANN", Role.facilitator, FORCE)
    assert jwt.get_unverified_header(after)["kid"] == new_kid
    assert (await verify(verifier, after)).staff_id == "F-ANN"
    assert (await verify(verifier, before)).staff_id == "F-ANN"
    assert issuer.jwks_requests == 2  # one refetch for the new key; the rest from the cache


async def test_made_up_key_ids_refetch_the_keys_at_most_once_per_interval(issuer: LocalIssuer) -> None:
    verifier = verifier_for(issuer, jwks_refetch_s=60)
    await verify(verifier, issuer.mint("F-ANN", Role.facilitator, FORCE))
    for attempt in range(5):
        token = issuer.sign(claims(issuer), headers={"kid": f"made-up-{attempt}"})
        assert await refused(verifier, token) == "the token is signed with a key the identity provider does not publish"
    assert issuer.jwks_requests == 2  # the first fetch, and one refetch for all five


async def test_the_key_file_is_the_owners_alone_and_gives_the_same_key_id_to_every_reader(tmp_path: Path) -> None:
    path = tmp_path / "state" / "issuer.pem"
    first = LocalIssuer(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    second = LocalIssuer(path)
    assert first.kid == second.kid
    first.rotate_key()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert LocalIssuer(path).kid == first.kid != second.kid
    assert len(LocalIssuer(path).jwks()["keys"]) == 2


async def test_the_verifier_and_the_local_issuer_from_the_same_settings_agree(tmp_path: Path) -> None:
    settings = Settings(
        dev_issuer_key_file=tmp_path / "issuer.pem",
        dev_issuer_port=_free_port(),
        oidc_audience="rj-api-test",
        oidc_role_claim="groups",
    )
    local = issuer_from_settings(settings)
    async with local:
        configured = settings.model_copy(update={"oidc_issuer": local.url, "oidc_jwks_url": local.jwks_url})
        token = local.mint("C-1", Role.coordinator, FORCE)
        assert (await verify(verifier_from_settings(configured), token)).role is Role.coordinator
    with pytest.raises(ValueError, match="OIDC_ISSUER is not set"):
        verifier_from_settings(Settings(oidc_issuer=""))
    with pytest.raises(ValueError, match="not a local issuer"):
        issuer_from_settings(Settings(oidc_issuer="https://login.microsoftonline.com/tenant/v2.0"))


async def test_rj_token_on_the_command_line_mints_a_token_the_verifier_accepts(issuer: LocalIssuer) -> None:
    env = {
        **os.environ,
        "DEV_ISSUER_KEY_FILE": str(issuer.key_file),
        "DEV_ISSUER_PORT": str(issuer.port),
        "LOG_LEVEL": "warning",
    }
    env.pop("OIDC_ISSUER", None)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.cli",
        "token",
        "--user",
        "F-ANN",
        "--role",
        "volunteer",
        "--force",
        FORCE,
        "--ttl",
        "120",
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, err.decode()
    token = out.decode().strip()
    assert await verify(verifier_for(issuer), token) == Principal(staff_id="F-ANN", role=Role.volunteer, force=FORCE)
    assert jwt.decode(token, options={"verify_signature": False})["exp"] <= time.time() + 121


async def test_rj_token_in_another_terminal_mints_what_the_services_of_rj_dev_accept(tmp_path: Path) -> None:
    from demo.dev import login_env, start_login

    key_file, port = tmp_path / "issuer.pem", _free_port()
    login = await start_login(Settings(oidc_issuer="", dev_issuer_key_file=key_file, dev_issuer_port=port))
    terminal = {**os.environ, "DEV_ISSUER_KEY_FILE": str(key_file), "DEV_ISSUER_PORT": str(port)}
    terminal.pop("OIDC_ISSUER", None)
    assert login is not None
    try:
        services_env = login_env(login)  # what rj dev hands the services
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            *("-m", "services.cli", "token", "--user", "C-1", "--role", "coordinator"),
            cwd=ROOT,
            env=terminal,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(process.communicate(), 60)
        assert process.returncode == 0, err.decode()
        services = Settings(oidc_issuer=services_env["OIDC_ISSUER"], oidc_jwks_url=services_env["OIDC_JWKS_URL"])
        principal = await verify(verifier_from_settings(services), out.decode().strip())
        assert (principal.staff_id, principal.role) == ("C-1", Role.coordinator)
    finally:
        await login.stop()


async def test_rj_token_refuses_an_unknown_role_and_a_real_issuer(issuer: LocalIssuer) -> None:
    env = {**os.environ, "DEV_ISSUER_KEY_FILE": str(issuer.key_file)}
    for extra_env, role, expected in (
        ({}, "superuser", "'superuser' is not one of"),
        ({"OIDC_ISSUER": "https://keycloak.example/realms/rj"}, "auditor", "rj token mints only for the local issuer"),
    ):
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            *("-m", "services.cli", "token", "--user", "A-1", "--role", role),
            cwd=ROOT,
            env={**env, **extra_env},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(process.communicate(), 60)
        assert process.returncode == 2
        assert out == b""
        assert expected in " ".join(err.decode().split())


def _free_port() -> int:
    from services.runtime.devstack import free_port

    return free_port()
