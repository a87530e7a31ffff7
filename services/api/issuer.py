"""A small local OpenID Connect issuer for the embedded stack and the tests: one RSA key in a PEM file,
its JWKS and discovery document over HTTP on 127.0.0.1, and tokens for any staff id, role and force.

It stands in for a force's identity provider so that a new user can try every role (``rj token``) and the
tests can exercise the real verifier over real HTTP. It authenticates nobody: whoever can read the key file
can mint any token, which is why the file is its owner's alone (0600) and why production points
``OIDC_ISSUER`` at the force's provider instead. The key id is the key's RFC 7638 thumbprint, so every
process reading the same file (``rj dev`` serving, ``rj token`` minting) names the same ``kid``.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import time
import uuid
from pathlib import Path
from types import TracebackType
from typing import Any, Self
from urllib.parse import urlsplit

import jwt
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from services.api.principal import Role
from services.runtime.settings import Settings

_PEM_END = b"-----END PRIVATE KEY-----"
# After a rotation the previous key stays published, so tokens it signed stay valid until they expire.
_KEYS_KEPT = 2


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
    ) -> None:
        self.key_file = key_file
        self.port = port
        self.audience = audience
        self.staff_id_claim = staff_id_claim
        self.role_claim = role_claim
        self.force_claim = force_claim
        self.name_claim = name_claim
        self.jwks_requests = 0  # how often the keys were fetched: lets tests see the verifier's caching
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
            "id_token_signing_alg_values_supported": ["RS256"],
            "subject_types_supported": ["public"],
            "response_types_supported": ["token"],
        }

    async def _discovery(self, request: web.Request) -> web.Response:
        return web.json_response(self.openid_configuration())

    async def _jwks(self, request: web.Request) -> web.Response:
        self.jwks_requests += 1
        return web.json_response(self.jwks())


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
