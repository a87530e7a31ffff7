"""Login as forces run it: an OpenID Connect access token from the force's identity provider becomes a
``Principal``, or is refused with a reason safe to show the caller. We keep no passwords and no sessions.

The token must be signed (RS256 or ES256 only: never ``none``, never an HMAC, whose "secret" would be the
public key everyone can fetch) with a key the provider's JWKS publishes, issued by ``oidc_issuer`` for
``oidc_audience``, and current. The JWKS is fetched with PyJWT's ``PyJWKClient`` and cached; a token naming a
key we have not seen refetches it (a rotation), at most once per ``oidc_jwks_refetch_s``, so made-up key ids
cannot turn every request into a call to the provider. A provider we cannot reach is not the caller's fault:
that is ``IdentityProviderUnavailable`` (503), not ``Unauthenticated`` (401).

``verify`` blocks while it fetches the JWKS (rarely: once per cache period or rotation); an async caller runs
it in a worker thread (a plain ``def`` FastAPI dependency does).
"""

from __future__ import annotations

import hmac
import threading
import time
from collections.abc import Mapping
from typing import Any

import jwt
from jwt import PyJWK, PyJWKClient

from services.api.principal import Principal, Role
from services.runtime.settings import Settings

#: Asymmetric algorithms only: an HMAC algorithm would let anyone holding the published key sign tokens.
ALGORITHMS: tuple[str, ...] = ("RS256", "ES256")

# Real access tokens are a few kB; a longer one is not a token, and parsing it is wasted work.
_MAX_TOKEN_CHARS = 16_384
_ROLE_NAMES = frozenset(role.value for role in Role)
#: Our roles from the least powerful to the most: a token naming several gets the first of these it names, so
#: a provider's mapping mistake (or a person holding two jobs) never grants more than the smallest of them.
LEAST_POWERFUL_FIRST: tuple[Role, ...] = (Role.auditor, Role.volunteer, Role.facilitator, Role.coordinator)
#: How providers mark an ID token (about a login, meant for the client) apart from an access token (meant for an
#: API): Amazon Cognito's ``token_use`` claim says ``id`` or ``access``, Keycloak's ``typ`` claim ``ID`` or
#: ``Bearer``. The JOSE header's ``typ`` is usually just ``JWT`` for both, so it tells nothing.
_ID_TOKEN_MARKS: tuple[tuple[str, str], ...] = (("token_use", "id"), ("typ", "id"))


class Unauthenticated(Exception):
    """The token does not prove who is calling (HTTP 401). ``str()`` is a reason safe to show the caller:
    it names what is wrong with the token, never anything about our keys or configuration."""


class IdentityProviderUnavailable(Exception):
    """The force's identity provider could not be asked for its keys (HTTP 503): the caller may be fine."""


class TokenVerifier:
    """Verifies access tokens from one identity provider. Thread-safe; one per process."""

    def __init__(
        self,
        *,
        issuer: str,
        jwks_url: str,
        audience: str,
        staff_id_claim: str = "sub",
        role_claim: str = "roles",
        force_claim: str = "rj_force",
        name_claim: str = "name",
        clock_skew_s: float = 30.0,
        jwks_cache_s: float = 300.0,
        jwks_refetch_s: float = 5.0,
        jwks_timeout_s: float = 5.0,
    ) -> None:
        if not issuer or not jwks_url:
            raise ValueError("an identity provider needs both its issuer and its JWKS URL (OIDC_ISSUER, OIDC_JWKS_URL)")
        self.issuer = issuer
        self.audience = audience
        self.staff_id_claim = staff_id_claim
        self.role_claim = role_claim
        self.force_claim = force_claim
        self.name_claim = name_claim
        self.clock_skew_s = clock_skew_s
        self.jwks_refetch_s = jwks_refetch_s
        # PyJWKClient's own cooldown counts from every fetch, the first one included; ours counts only from
        # refetches forced by an unknown key, so a key rotated in just after start is picked up at once.
        self._jwks = PyJWKClient(
            jwks_url, cache_jwk_set=True, lifespan=jwks_cache_s, timeout=jwks_timeout_s, cooldown_duration=0
        )
        self._lock = threading.Lock()
        self._last_refetch: float | None = None

    def verify(self, token: str) -> Principal:
        """The caller the token vouches for; ``Unauthenticated`` with the reason when it does not."""
        if not token or len(token) > _MAX_TOKEN_CHARS:
            raise Unauthenticated("no access token" if not token else "the access token is too long to be one")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError:
            raise Unauthenticated("the access token is not a well-formed JWT") from None
        algorithm = header.get("alg")
        if algorithm not in ALGORITHMS:
            raise Unauthenticated(f"the token's algorithm {algorithm!r} is not accepted (only {', '.join(ALGORITHMS)})")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise Unauthenticated("the token names no signing key (kid)")
        key = self._signing_key(kid)
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=list(ALGORITHMS),
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.clock_skew_s,
                options={"require": ["exp", "iss", "aud"]},
            )
        except jwt.InvalidTokenError as exc:
            raise Unauthenticated(_reason(exc)) from None
        return self._principal(claims)

    def verify_id_token(self, token: str, *, client_id: str, nonce: str) -> Mapping[str, Any]:
        """The claims of an ID token the provider issued to ``client_id`` for the sign-in that sent ``nonce``
        (OpenID Connect Core 3.1.3.7): signed with a published key, from our issuer, current, and carrying that
        nonce, so that a token replayed from another sign-in is refused. ``Unauthenticated`` when it is not."""
        if not token or len(token) > _MAX_TOKEN_CHARS:
            raise Unauthenticated("no ID token" if not token else "the ID token is too long to be one")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError:
            raise Unauthenticated("the ID token is not a well-formed JWT") from None
        kid = header.get("kid")
        if header.get("alg") not in ALGORITHMS or not isinstance(kid, str) or not kid:
            raise Unauthenticated("the ID token is not signed as the identity provider signs")
        try:
            claims: Mapping[str, Any] = jwt.decode(
                token,
                self._signing_key(kid),
                algorithms=list(ALGORITHMS),
                audience=client_id,
                issuer=self.issuer,
                leeway=self.clock_skew_s,
                options={"require": ["exp", "iss", "aud", "sub"]},
            )
        except jwt.InvalidTokenError as exc:
            raise Unauthenticated(_reason(exc)) from None
        if not isinstance(claims.get("nonce"), str) or not hmac.compare_digest(claims["nonce"], nonce):
            raise Unauthenticated("the ID token was not issued for this sign-in (nonce)")
        return claims

    def _signing_key(self, kid: str) -> PyJWK:
        """The provider's published key named ``kid``, refetching the set (rate-limited) when it is unknown."""
        with self._lock:
            try:
                key = PyJWKClient.match_kid(self._jwks.get_signing_keys(), kid)
                if key is None and self._may_refetch():
                    self._last_refetch = time.monotonic()
                    key = PyJWKClient.match_kid(self._jwks.get_signing_keys(refresh=True), kid)
            except (jwt.PyJWKClientError, jwt.PyJWKSetError, ValueError) as exc:
                # Unreachable, not JSON, or no usable signing keys: the provider's side, not the caller's.
                raise IdentityProviderUnavailable(f"could not get the identity provider's keys: {exc}") from exc
        if key is None:
            raise Unauthenticated("the token is signed with a key the identity provider does not publish")
        return key

    def _may_refetch(self) -> bool:
        return self._last_refetch is None or time.monotonic() - self._last_refetch >= self.jwks_refetch_s

    def _principal(self, claims: Mapping[str, Any]) -> Principal:
        for claim, id_token in _ID_TOKEN_MARKS:
            marked = claims.get(claim)
            if isinstance(marked, str) and marked.lower() == id_token:
                raise Unauthenticated(f"this is an ID token ({claim} claim {marked!r}); the API takes access tokens")
        staff_id = _claim(claims, self.staff_id_claim)
        if not isinstance(staff_id, str) or not staff_id:
            raise Unauthenticated(f"the token has no staff id ({self.staff_id_claim} claim)")
        role = _role(_claim(claims, self.role_claim), self.role_claim)
        force = _claim(claims, self.force_claim)
        if not isinstance(force, str) or not force:
            raise Unauthenticated(f"the token names no force ({self.force_claim} claim)")
        name = _claim(claims, self.name_claim)
        return Principal(staff_id=staff_id, role=role, force=force, name=name if isinstance(name, str) else None)


def verifier_from_settings(settings: Settings) -> TokenVerifier:
    """The verifier for the identity provider the settings name (``OIDC_*``); ValueError if none is named."""
    if not settings.oidc_issuer:
        raise ValueError("OIDC_ISSUER is not set: the API accepts tokens only from an identity provider it is told of")
    return TokenVerifier(
        issuer=settings.oidc_issuer,
        jwks_url=settings.oidc_jwks_url,
        audience=settings.oidc_audience,
        staff_id_claim=settings.oidc_staff_id_claim,
        role_claim=settings.oidc_role_claim,
        force_claim=settings.oidc_force_claim,
        name_claim=settings.oidc_name_claim,
        clock_skew_s=settings.oidc_clock_skew_s,
        jwks_cache_s=settings.oidc_jwks_cache_s,
        jwks_refetch_s=settings.oidc_jwks_refetch_s,
        jwks_timeout_s=settings.oidc_jwks_timeout_s,
    )


def _claim(claims: Mapping[str, Any], name: str) -> Any:
    """A claim by its name, or by a dotted path into nested claims (Keycloak's ``realm_access.roles``).
    The plain name wins: some providers' claim names are URLs with dots in them."""
    if name in claims:
        return claims[name]
    value: Any = claims
    for part in name.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


def _role(value: Any, claim: str) -> Role:
    """The least powerful of the token's roles that are ours (a provider puts every app's roles in one list)."""
    if value is None or value == [] or value == "":
        raise Unauthenticated(f"the token carries no role ({claim} claim)")
    values = [value] if isinstance(value, str) else value if isinstance(value, list) else []
    ours = {candidate for candidate in values if isinstance(candidate, str) and candidate in _ROLE_NAMES}
    for role in LEAST_POWERFUL_FIRST:
        if role.value in ours:
            return role
    known = ", ".join(role.value for role in Role)
    raise Unauthenticated(f"none of the token's roles ({claim} claim) is one this service knows ({known})")


def _reason(exc: jwt.InvalidTokenError) -> str:
    """PyJWT's error as a sentence for the caller."""
    match exc:
        case jwt.ExpiredSignatureError():
            return "the token has expired"
        case jwt.ImmatureSignatureError():
            return "the token is not valid yet"
        case jwt.InvalidIssuerError():
            return "the token was issued by another identity provider"
        case jwt.InvalidAudienceError():
            return "the token is meant for another service (audience)"
        case jwt.InvalidSignatureError():
            return "the token's signature does not verify"
        case jwt.MissingRequiredClaimError():
            return f"the token has no {exc.claim} claim"
        case jwt.InvalidAlgorithmError():
            return f"the token's algorithm is not accepted (only {', '.join(ALGORITHMS)})"
        case jwt.DecodeError():
            return "the access token is not a well-formed JWT"
        case _:
            return f"the token is not valid: {exc}"
