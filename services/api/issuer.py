"""A small local OpenID Connect issuer for the embedded stack and the tests: one RSA key in a PEM file,
its JWKS and discovery document over HTTP on 127.0.0.1, and tokens for any staff id, role and force.

It stands in for a force's identity provider so that a new user can try every role (``rj token``) and the
tests can exercise the real verifier over real HTTP. It authenticates nobody: whoever can read the key file
can mint any token, which is why the file is its owner's alone (0600) and why production points
``OIDC_ISSUER`` at the force's provider instead. The key id is the key's RFC 7638 thumbprint, so every
process reading the same file (``rj dev`` serving, ``rj token`` minting) names the same ``kid``.

For the web console it also serves the authorization code flow with PKCE (RFC 7636, S256 only), as a force's
provider does: ``/authorize`` is a sign-in page that says plainly it is the local stand-in and lets whoever uses
it choose a staff id, role and force; ``/token`` exchanges a code (one use, ``code_ttl_s`` at most, for the
client, redirect URI and code verifier it was made for) for an access token and an ID token carrying the
client's nonce. It redirects only to addresses on this machine, so it can never be an open redirector.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import os
import secrets
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self
from urllib.parse import urlencode, urlsplit

import jwt
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jinja2 import Environment, FileSystemLoader, select_autoescape
from jwt.algorithms import RSAAlgorithm

from services.api.principal import Role
from services.runtime.settings import Settings

_PEM_END = b"-----END PRIVATE KEY-----"
# After a rotation the previous key stays published, so tokens it signed stay valid until they expire.
_KEYS_KEPT = 2
#: Where the sign-in page may send a browser back to: this machine only (the issuer is for the embedded stack).
_LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
_TEMPLATES = Environment(
    loader=FileSystemLoader(Path(__file__).parent / "templates"),
    autoescape=select_autoescape(default=True),
    trim_blocks=True,
    lstrip_blocks=True,
)


@dataclass(frozen=True, slots=True)
class _Grant:
    """What an authorization code was made for, and for whom: kept in memory until used or expired."""

    client_id: str
    redirect_uri: str
    code_challenge: str
    nonce: str | None
    staff_id: str
    role: Role
    force: str
    name: str | None
    expires: float


def _is_local_redirect(uri: str) -> bool:
    """Whether a browser sent to ``uri`` lands on this machine. Python's ``urlsplit`` and a browser's URL parser
    (WHATWG) read some addresses differently: a browser takes ``\\`` for ``/`` in an http(s) URL, so
    ``http://evil.example\\@127.0.0.1/`` is evil.example to it and 127.0.0.1 to ``urlsplit``; it also drops tabs
    and newlines anywhere. So anything on which the two could disagree is refused outright (a backslash, an
    ``@``, whitespace, control or non-ASCII characters), and what is left must be http(s) to a local host with a
    valid port and no fragment (RFC 6749 3.1.2)."""
    if any(char in "\\@" or not " " < char < "\x7f" for char in uri):
        return False
    redirect = urlsplit(uri)
    try:
        redirect.port  # noqa: B018 - read for its ValueError on a port that is not a number or out of range
    except ValueError:
        return False
    return (
        redirect.scheme in ("http", "https")
        and redirect.username is None
        and redirect.password is None
        and redirect.hostname in _LOCAL_HOSTS
        and not redirect.fragment
    )


class AuthorizationRequestInvalid(ValueError):
    """An authorization request the sign-in page cannot serve (said on the page: no redirect to an unchecked URI)."""


class LocalIssuer:
    """Serves ``/.well-known/openid-configuration`` and ``/jwks.json`` at ``http://127.0.0.1:PORT`` and mints
    tokens signed with the newest key in ``key_file`` (made on first use). ``port=0`` takes a free port when
    started. The claim names and audience default to what the API's settings default to."""

    def __init__(
        self,
        key_file: Path,
        *,
        port: int = 0,
        audience: str = "rj-api",
        staff_id_claim: str = "sub",
        role_claim: str = "roles",
        force_claim: str = "rj_force",
        name_claim: str = "name",
        default_force: str = "",
        code_ttl_s: float = 60.0,
        access_token_ttl_s: int = 3600,
    ) -> None:
        self.key_file = key_file
        self.port = port
        self.audience = audience
        self.staff_id_claim = staff_id_claim
        self.role_claim = role_claim
        self.force_claim = force_claim
        self.name_claim = name_claim
        self.default_force = default_force  # what the sign-in page offers as the force
        self.code_ttl_s = code_ttl_s
        self.access_token_ttl_s = access_token_ttl_s
        self.jwks_requests = 0  # how often the keys were fetched: lets tests see the verifier's caching
        self._grants: dict[str, _Grant] = {}
        self._keys = _load_or_make_keys(key_file)
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        """The issuer URL, which is also every token's ``iss``."""
        if not self.port:
            raise RuntimeError("the local issuer has no port until it is started")
        return f"http://127.0.0.1:{self.port}"

    @property
    def jwks_url(self) -> str:
        return f"{self.url}/jwks.json"

    @property
    def kid(self) -> str:
        """The id of the key new tokens are signed with."""
        return _kid(self._keys[0])

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/.well-known/openid-configuration", self._discovery)
        app.router.add_get("/jwks.json", self._jwks)
        app.router.add_get("/authorize", self._authorize_page)
        app.router.add_post("/authorize", self._authorize)
        app.router.add_post("/token", self._token)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        try:
            await web.TCPSite(runner, "127.0.0.1", self.port).start()
        except OSError as exc:
            await runner.cleanup()
            raise RuntimeError(f"the local issuer cannot listen on 127.0.0.1:{self.port}: {exc.strerror}") from exc
        self._runner = runner
        if not self.port:
            self.port = int(runner.addresses[0][1])

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    def mint(self, staff_id: str, role: Role, force: str, *, name: str | None = None, ttl_s: int = 3600) -> str:
        """An access token for the API saying who ``staff_id`` is, valid for ``ttl_s`` seconds from now."""
        if ttl_s <= 0:
            raise ValueError("a token's lifetime must be positive")
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.url,
            "aud": self.audience,
            self.staff_id_claim: staff_id,
            self.role_claim: [Role(role).value],
            self.force_claim: force,
            "iat": now,
            "nbf": now,
            "exp": now + ttl_s,
            "jti": str(uuid.uuid4()),
        }
        if name is not None:
            claims[self.name_claim] = name
        return self.sign(claims)

    def sign(self, claims: dict[str, Any], *, headers: dict[str, Any] | None = None) -> str:
        """Any claims, signed RS256 with the current key and naming its ``kid`` (``headers`` added on top):
        what tests use to make tokens a real provider could send but ``mint`` never would."""
        return jwt.encode(claims, self._keys[0], algorithm="RS256", headers={"kid": self.kid, **(headers or {})})

    def rotate_key(self) -> str:
        """Sign with a new key from now on; the previous one stays published. Returns the new ``kid``."""
        self._keys = [_new_key(), *self._keys][:_KEYS_KEPT]
        _write_keys(self.key_file, self._keys, replace=True)
        return self.kid

    def jwks(self) -> dict[str, Any]:
        """The public keys, as a JWKS document."""
        return {"keys": [_public_jwk(key) for key in self._keys]}

    def openid_configuration(self) -> dict[str, Any]:
        return {
            "issuer": self.url,
            "jwks_uri": self.jwks_url,
            "authorization_endpoint": f"{self.url}/authorize",
            "token_endpoint": f"{self.url}/token",
            "id_token_signing_alg_values_supported": ["RS256"],
            "subject_types_supported": ["public"],
            "response_types_supported": ["code"],
            "grant_types_supported": ["authorization_code"],
            "code_challenge_methods_supported": ["S256"],
            "token_endpoint_auth_methods_supported": ["none"],
            "scopes_supported": ["openid"],
        }

    # --- the authorization code flow (the web console's sign-in) --------------------------------------------

    def authorization_request(self, params: Any) -> dict[str, str]:
        """The parameters of an authorization request, checked; ``AuthorizationRequestInvalid`` says what is wrong.
        Only ``response_type=code`` with an S256 PKCE challenge, back to an address on this machine."""
        wanted = ("response_type", "client_id", "redirect_uri", "state", "code_challenge", "code_challenge_method")
        request = {name: str(params.get(name, "")) for name in (*wanted, "nonce", "scope")}
        missing = [name for name in wanted if not request[name]]
        if missing:
            raise AuthorizationRequestInvalid(f"the request has no {', '.join(missing)}")
        if request["response_type"] != "code":
            raise AuthorizationRequestInvalid("only response_type=code is served here")
        if request["code_challenge_method"] != "S256":
            raise AuthorizationRequestInvalid("only the S256 code challenge method is accepted")
        if not 43 <= len(request["code_challenge"]) <= 128:
            raise AuthorizationRequestInvalid("the code challenge is not an S256 challenge")
        if not _is_local_redirect(request["redirect_uri"]):
            raise AuthorizationRequestInvalid("the local issuer sends browsers back only to addresses on this machine")
        return request

    def grant_code(self, request: dict[str, str], *, staff_id: str, role: Role, force: str, name: str | None) -> str:
        """A one-use code for ``request`` (as ``authorization_request`` checked it), signing in ``staff_id``."""
        now = time.time()
        self._grants = {code: grant for code, grant in self._grants.items() if grant.expires > now}
        code = secrets.token_urlsafe(32)
        self._grants[code] = _Grant(
            client_id=request["client_id"],
            redirect_uri=request["redirect_uri"],
            code_challenge=request["code_challenge"],
            nonce=request.get("nonce") or None,
            staff_id=staff_id,
            role=role,
            force=force,
            name=name,
            expires=now + self.code_ttl_s,
        )
        return code

    def exchange_code(self, form: Any) -> dict[str, Any]:
        """The token response for a code (RFC 6749 4.1.3), or ``TokenRequestRefused`` with the error code. The code
        is gone once asked for, whatever the answer: a code tried twice (stolen, replayed) never works again."""
        if form.get("grant_type") != "authorization_code":
            raise TokenRequestRefused("unsupported_grant_type", "only the authorization_code grant is served")
        grant = self._grants.pop(str(form.get("code", "")), None)
        if grant is None or grant.expires <= time.time():
            raise TokenRequestRefused("invalid_grant", "the code is unknown, used or expired")
        if form.get("client_id") != grant.client_id or form.get("redirect_uri") != grant.redirect_uri:
            raise TokenRequestRefused("invalid_grant", "the code was made for another client or redirect URI")
        verifier = str(form.get("code_verifier", ""))
        if not 43 <= len(verifier) <= 128 or not hmac.compare_digest(_s256(verifier), grant.code_challenge):
            raise TokenRequestRefused("invalid_grant", "the code verifier does not match the code challenge")
        ttl = self.access_token_ttl_s
        access = self.mint(grant.staff_id, grant.role, grant.force, name=grant.name, ttl_s=ttl)
        now = int(time.time())
        id_claims: dict[str, Any] = {
            "iss": self.url,
            "aud": grant.client_id,
            "sub": grant.staff_id,
            "iat": now,
            "exp": now + ttl,
            "token_use": "id",  # the API refuses it as an access token (auth._ID_TOKEN_MARKS)
        }
        if grant.nonce:
            id_claims["nonce"] = grant.nonce
        if grant.name:
            id_claims["name"] = grant.name
        return {"access_token": access, "token_type": "Bearer", "expires_in": ttl, "id_token": self.sign(id_claims)}

    async def _authorize_page(self, request: web.Request) -> web.Response:
        try:
            checked = self.authorization_request(request.query)
        except AuthorizationRequestInvalid as exc:
            return self._sign_in_page(None, error=str(exc), status=400)
        return self._sign_in_page(checked)

    async def _authorize(self, request: web.Request) -> web.Response:
        form = await request.post()
        try:
            checked = self.authorization_request(form)
        except AuthorizationRequestInvalid as exc:
            return self._sign_in_page(None, error=str(exc), status=400)
        back = urlsplit(checked["redirect_uri"])
        if form.get("decision") == "cancel":
            answer = {"error": "access_denied", "state": checked["state"]}
            raise web.HTTPSeeOther(back._replace(query=_joined(back.query, answer)).geturl())
        staff_id, force = str(form.get("staff_id", "")).strip(), str(form.get("force", "")).strip()
        name = str(form.get("name", "")).strip() or None
        role = Role(str(form["role"])) if form.get("role") in set(Role) else None
        problems = {
            field: words
            for field, words, wrong in (
                ("staff_id", "Enter a staff id", not staff_id or len(staff_id) > 200),
                ("role", "Choose a role", role is None),
                ("force", "Enter the force", not force or len(force) > 200),
            )
            if wrong
        }
        if problems or role is None:
            return self._sign_in_page(checked, problems=problems, chosen=dict(form), status=400)
        code = self.grant_code(checked, staff_id=staff_id, role=role, force=force, name=name)
        answer = {"code": code, "state": checked["state"]}
        raise web.HTTPSeeOther(back._replace(query=_joined(back.query, answer)).geturl())

    async def _token(self, request: web.Request) -> web.Response:
        no_store = {"Cache-Control": "no-store", "Pragma": "no-cache"}
        try:
            answer = self.exchange_code(await request.post())
        except TokenRequestRefused as exc:
            body = {"error": exc.error, "error_description": exc.description}
            return web.json_response(body, status=400, headers=no_store)
        return web.json_response(answer, headers=no_store)

    def _sign_in_page(
        self,
        request: dict[str, str] | None,
        *,
        error: str | None = None,
        problems: dict[str, str] | None = None,
        chosen: dict[str, Any] | None = None,
        status: int = 200,
    ) -> web.Response:
        nonce = secrets.token_urlsafe(16)
        html = _TEMPLATES.get_template("issuer/sign_in.html").render(
            nonce=nonce,
            request=request,
            error=error,
            problems=problems or {},
            chosen=chosen or {"force": self.default_force},
            roles=[role.value for role in Role],
        )
        # Browsers hold a form's redirect to form-action too: the client's own address is allowed, nothing else.
        back = urlsplit(request["redirect_uri"]) if request else None
        client = f" {back.scheme}://{back.netloc}" if back else ""
        headers = {
            "Cache-Control": "no-store",
            "X-Frame-Options": "DENY",
            "Content-Security-Policy": (
                f"default-src 'none'; style-src 'nonce-{nonce}'; form-action 'self'{client}; "
                "base-uri 'none'; frame-ancestors 'none'"
            ),
        }
        return web.Response(text=html, content_type="text/html", status=status, headers=headers)

    async def _discovery(self, request: web.Request) -> web.Response:
        return web.json_response(self.openid_configuration())

    async def _jwks(self, request: web.Request) -> web.Response:
        self.jwks_requests += 1
        return web.json_response(self.jwks())


class TokenRequestRefused(Exception):
    """A token request refused, with its RFC 6749 error code and a description."""

    def __init__(self, error: str, description: str) -> None:
        super().__init__(description)
        self.error = error
        self.description = description


def _s256(verifier: str) -> str:
    """The PKCE S256 challenge of a code verifier (RFC 7636 4.2)."""
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode("ascii", "replace")).digest()).rstrip(b"=").decode()


def _joined(query: str, extra: dict[str, str]) -> str:
    return "&".join(part for part in (query, urlencode(extra)) if part)


def issuer_from_settings(settings: Settings) -> LocalIssuer:
    """The local issuer the settings describe: key file ``DEV_ISSUER_KEY_FILE``, URL ``OIDC_ISSUER`` if that
    names a port on 127.0.0.1, else ``http://127.0.0.1:DEV_ISSUER_PORT``. ValueError when ``OIDC_ISSUER``
    names another provider (a real one: we neither serve nor mint for it)."""
    port = settings.dev_issuer_port
    if settings.oidc_issuer:
        parts = urlsplit(settings.oidc_issuer)
        if parts.scheme != "http" or parts.hostname != "127.0.0.1" or not parts.port or parts.path not in ("", "/"):
            raise ValueError(f"OIDC_ISSUER is {settings.oidc_issuer}, not a local issuer (http://127.0.0.1:PORT)")
        port = parts.port
    return LocalIssuer(
        settings.dev_issuer_key_file,
        port=port,
        audience=settings.oidc_audience,
        staff_id_claim=settings.oidc_staff_id_claim,
        role_claim=settings.oidc_role_claim,
        force_claim=settings.oidc_force_claim,
        name_claim=settings.oidc_name_claim,
    )


def _new_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _load_or_make_keys(path: Path) -> list[rsa.RSAPrivateKey]:
    if not path.exists():
        # Two processes starting at once (``rj dev`` and ``rj token``) must end up with the same key.
        with contextlib.suppress(FileExistsError):
            _write_keys(path, [_new_key()], replace=False)
    blocks = [block + _PEM_END for block in path.read_bytes().split(_PEM_END) if block.strip()]
    keys = [serialization.load_pem_private_key(block.strip(), password=None) for block in blocks]
    if not keys or not all(isinstance(key, rsa.RSAPrivateKey) for key in keys):
        raise ValueError(f"{path} holds no RSA private key")
    return keys  # type: ignore[return-value]


def _write_keys(path: Path, keys: list[rsa.RSAPrivateKey], *, replace: bool) -> None:
    """Write the keys, newest first, readable by the owner only, whole or not at all."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pem = b"".join(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        for key in keys
    )
    draft = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
    descriptor = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(descriptor, "wb") as out:
            out.write(pem)
        if replace:
            os.replace(draft, path)
        else:
            os.link(draft, path)  # fails if the file appeared meanwhile: the first writer's key stands
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(draft)


def _public_jwk(key: rsa.RSAPrivateKey) -> dict[str, Any]:
    jwk: dict[str, Any] = RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
    jwk.pop("key_ops", None)  # ``use`` says the same, and RFC 7517 asks for one or the other
    return {**jwk, "kid": _kid(key), "use": "sig", "alg": "RS256"}


def _kid(key: rsa.RSAPrivateKey) -> str:
    """RFC 7638 thumbprint: the same key always has the same id, in every process."""
    jwk = RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
    canonical = json.dumps({"e": jwk["e"], "kty": "RSA", "n": jwk["n"]}, separators=(",", ":"), sort_keys=True)
    return base64.urlsafe_b64encode(hashlib.sha256(canonical.encode()).digest()).rstrip(b"=").decode()
