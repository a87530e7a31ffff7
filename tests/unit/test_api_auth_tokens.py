"""What a verified token's claims make of the caller: with several of our roles, the least powerful one (a token
that says both auditor and coordinator is an auditor's); an ID token presented as an access token is refused
where the provider marks it (``token_use: id``, Cognito; ``typ: ID``, Keycloak).

The provider's JWKS is an in-memory key here (``verify`` is exercised whole, signature and all; fetching the
JWKS over HTTP has its own tests against the local issuer)."""

from __future__ import annotations

import time
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt import PyJWK

from services.api.auth import TokenVerifier, Unauthenticated
from services.api.principal import Role

ISSUER = "https://idp.example/realms/force"
KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def verifier(monkeypatch: pytest.MonkeyPatch) -> TokenVerifier:
    made = TokenVerifier(issuer=ISSUER, jwks_url="https://idp.example/certs", audience="rj-api")
    published = PyJWK.from_dict({**jwt.algorithms.RSAAlgorithm.to_jwk(KEY.public_key(), as_dict=True), "kid": "k1"})
    monkeypatch.setattr(made, "_signing_key", lambda kid: published)
    return made


def token(**changes: Any) -> str:
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": ISSUER, "aud": "rj-api", "sub": "S-1", "roles": ["facilitator"], "rj_force": "force-a",
        "iat": now, "exp": now + 600,
    }  # fmt: skip
    claims.update(changes)
    return jwt.encode({k: v for k, v in claims.items() if v is not None}, KEY, algorithm="RS256",
                      headers={"kid": "k1"})  # fmt: skip


@pytest.mark.parametrize(
    ("roles", "role"),
    [
        (["coordinator", "auditor"], Role.auditor),
        (["auditor", "coordinator"], Role.auditor),
        (["coordinator", "facilitator"], Role.facilitator),
        (["facilitator", "volunteer"], Role.volunteer),
        (["coordinator", "volunteer", "facilitator"], Role.volunteer),
        (["offline_access", "coordinator", "uma_authorization"], Role.coordinator),
        (["coordinator", "facilitator", "volunteer", "auditor"], Role.auditor),
        ("coordinator", Role.coordinator),
    ],
)
def test_a_token_with_several_of_our_roles_counts_as_the_least_powerful(
    verifier: TokenVerifier, roles: Any, role: Role
) -> None:
    assert verifier.verify(token(roles=roles)).role is role


@pytest.mark.parametrize(("claim", "value"), [("token_use", "id"), ("token_use", "ID"), ("typ", "ID"), ("typ", "id")])
def test_an_id_token_used_as_an_access_token_is_refused(verifier: TokenVerifier, claim: str, value: str) -> None:
    with pytest.raises(Unauthenticated, match="ID token"):
        verifier.verify(token(**{claim: value}))


@pytest.mark.parametrize(("claim", "value"), [("token_use", "access"), ("typ", "Bearer"), ("typ", "at+jwt")])
def test_a_token_the_provider_marks_as_an_access_token_is_accepted(
    verifier: TokenVerifier, claim: str, value: str
) -> None:
    assert verifier.verify(token(**{claim: value})).staff_id == "S-1"


def test_a_token_saying_nothing_of_its_use_is_accepted(verifier: TokenVerifier) -> None:
    assert verifier.verify(token()).role is Role.facilitator
