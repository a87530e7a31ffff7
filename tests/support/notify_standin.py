"""A stand-in for GOV.UK Notify on 127.0.0.1: the endpoints its official Python client calls, answering what the
real service answers, so tests drive the real client over real HTTP.

- ``POST /v2/notifications/email``, ``/sms``, ``/letter``: checks the client's JWT (HS256 with the key's
  secret, ``iss`` the service id, ``iat`` within 30 s), the template (one per type, ids on the stand-in), the
  personalisation the generic templates need (``subject``/``body``; SMS ``body``) and the recipient's shape
  (an email with an @, a phone number of digits, a letter of 3 to 7 address lines ending with a postcode),
  then answers 201 with the JSON the client returns (id, reference, content, uri, template);
- ``GET /v2/notifications`` (filters ``reference``, ``template_type``, ``status``; newest first) and
  ``GET /v2/notifications/{id}``.

Faults on demand: ``fail_next(n, status)`` answers the next ``n`` POSTs with a status (429 with Notify's
``RateLimitError``, 400 ``ValidationError``, 500 ...), optionally having created the notification first (a 500
after the insert: the uncertain case); ``drop_next(n)`` reads the next request then closes the connection
without a word (by default after creating the notification); ``kill()`` stops the server at once (connections
refused until ``restart()``). Everything accepted is in ``accepted``; every request in ``requests``.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import jwt
from aiohttp import web
from pydantic import SecretStr

from services.notify.channels.reference import References
from services.runtime.settings import Settings

REFERENCE_KEY = "cmotdGVzdC1yZWZlcmVuY2Uta2V5LTMyLWJ5dGVzISE="
"""The tests' ``NOTIFY_REFERENCE_KEY`` (32 bytes, base64): a fixed one, so a test can name the reference a
notification id goes out with."""
REFERENCES = References.from_settings(Settings(notify_reference_key=SecretStr(REFERENCE_KEY)))

POSTCODE = re.compile(r"^[A-Z]{1,2}[0-9][0-9A-Z]? ?[0-9][A-Z]{2}$", re.IGNORECASE)
TYPES = ("email", "sms", "letter")


@dataclass
class Accepted:
    """One notification Notify created."""

    id: str
    type: str
    template_id: str
    reference: str | None
    recipient: str  # the email address, the phone number, or the address lines joined by newlines
    personalisation: dict[str, Any]
    created_at: datetime
    status: str

    def as_json(self, base_url: str) -> dict[str, Any]:
        """As ``GET /v2/notifications/{id}`` gives it."""
        lines = self.recipient.split("\n") if self.type == "letter" else []
        return {
            "id": self.id,
            "reference": self.reference,
            "email_address": self.recipient if self.type == "email" else None,
            "phone_number": self.recipient if self.type == "sms" else None,
            **{f"line_{i}": (lines[i - 1] if i <= len(lines) else None) for i in range(1, 8)},
            "postcode": lines[-1] if lines else None,
            "type": self.type,
            "status": self.status,
            "template": {"id": self.template_id, "version": 1, "uri": f"{base_url}/v2/template/{self.template_id}"},
            "body": self.personalisation.get("body", ""),
            "subject": self.personalisation.get("subject") if self.type != "sms" else None,
            "created_at": self.created_at.isoformat().replace("+00:00", "Z"),
            "created_by_name": None,
            "sent_at": None,
            "completed_at": None,
            "postage": "second" if self.type == "letter" else None,
        }


@dataclass
class _Fault:
    status: int | None  # None: drop the connection
    record: bool
    retry_after: float | None = None


@dataclass
class NotifyStandIn:
    service_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    secret: str = field(default_factory=lambda: str(uuid.uuid4()))
    templates: dict[str, str] = field(default_factory=lambda: {t: str(uuid.uuid4()) for t in TYPES})
    accepted: list[Accepted] = field(default_factory=list)
    requests: list[tuple[str, str]] = field(default_factory=list)
    port: int = 0
    _faults: list[_Fault] = field(default_factory=list)
    _runner: web.AppRunner | None = None

    @property
    def api_key(self) -> str:
        return f"rj_test-{self.service_id}-{self.secret}"

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def settings(self) -> dict[str, Any]:
        """The settings that point a service at this stand-in (and the reference key of ``REFERENCES``)."""
        return {
            "notify_reference_key": SecretStr(REFERENCE_KEY),
            "govuk_notify_api_key": SecretStr(self.api_key),
            "govuk_notify_base_url": self.base_url,
            "govuk_notify_email_template_id": self.templates["email"],
            "govuk_notify_sms_template_id": self.templates["sms"],
            "govuk_notify_letter_template_id": self.templates["letter"],
        }

    # --- faults -----------------------------------------------------------------------------------

    def fail_next(self, n: int, status: int, *, record: bool = False, retry_after: float | None = None) -> None:
        """Answer the next ``n`` POSTs with ``status``; ``record``: create the notification first."""
        self._faults.extend(_Fault(status, record, retry_after) for _ in range(n))

    def drop_next(self, n: int = 1, *, record: bool = True) -> None:
        """Read the next ``n`` POSTs, then close the connection without answering."""
        self._faults.extend(_Fault(None, record) for _ in range(n))

    def set_status(self, notification_id: str, status: str) -> None:
        next(a for a in self.accepted if a.id == notification_id).status = status

    def by_reference(self, reference: str) -> list[Accepted]:
        return [a for a in self.accepted if a.reference == reference]

    def of_notification(self, notification_id: str) -> list[Accepted]:
        """What was accepted for our notification id, under its outside reference (``REFERENCES``)."""
        return self.by_reference(REFERENCES.of(notification_id))

    # --- lifecycle --------------------------------------------------------------------------------

    async def start(self) -> NotifyStandIn:
        app = web.Application()
        app.router.add_post("/v2/notifications/{type}", self._create)
        app.router.add_get("/v2/notifications", self._list)
        app.router.add_get("/v2/notifications/{id}", self._get)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self

    async def kill(self) -> None:
        """Stop answering at once: the port refuses connections until ``restart``."""
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    async def restart(self) -> None:
        """Serve again on the same port, keeping what was accepted."""
        await self.kill()
        await self.start()

    async def __aenter__(self) -> NotifyStandIn:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.kill()

    # --- the API ----------------------------------------------------------------------------------

    def _authorised(self, request: web.Request) -> web.Response | None:
        """None when the client's token is good, else Notify's 403."""
        header = request.headers.get("Authorization", "")
        token = header.removeprefix("Bearer ").strip()
        try:
            claims = jwt.decode(token, self.secret, algorithms=["HS256"], options={"verify_iat": False})
        except jwt.PyJWTError:
            return _errors(403, "AuthError", "Invalid token: signature, api token not found")
        if claims.get("iss") != self.service_id:
            return _errors(403, "AuthError", "Invalid token: service not found")
        if abs(time.time() - float(claims.get("iat", 0))) > 30:
            return _errors(403, "AuthError", "Error: Your system clock must be accurate to within 30 seconds")
        return None

    async def _create(self, request: web.Request) -> web.StreamResponse:
        kind = request.match_info["type"]
        self.requests.append(("POST", request.path))
        body = await request.json()
        refused = self._authorised(request)
        if refused is not None:
            return refused
        if kind not in TYPES:
            return _errors(404, "NotFound", "The requested URL was not found on the server.")
        problem = self._invalid(kind, body)
        if problem is not None:
            return problem
        fault = self._faults.pop(0) if self._faults else None
        notification = None
        if fault is None or fault.record:
            notification = self._record(kind, body)
        if fault is not None:
            if fault.status is None:
                assert request.transport is not None
                request.transport.abort()  # the request was read; the answer never comes
                raise asyncio.CancelledError
            if fault.status == 429:
                headers = {"Retry-After": str(fault.retry_after)} if fault.retry_after is not None else None
                return _errors(429, "RateLimitError", "Exceeded rate limit for key type LIVE of 3000 requests per "
                                                      "60 seconds", headers=headers)  # fmt: skip
            if fault.status == 400:
                return _errors(400, "ValidationError", "Can't send to this recipient using a team-only API key")
            return _errors(fault.status, "Exception", "Internal server error")
        assert notification is not None
        return web.json_response(self._created_answer(notification), status=201)

    def _invalid(self, kind: str, body: dict[str, Any]) -> web.Response | None:
        template_id = body.get("template_id")
        if template_id != self.templates[kind]:
            return _errors(400, "BadRequestError", "Template not found")
        personalisation = body.get("personalisation") or {}
        needed = ("body",) if kind == "sms" else ("subject", "body")
        missing = [p for p in needed if p not in personalisation]
        if missing:
            return _errors(400, "BadRequestError", f"Missing personalisation: {', '.join(missing)}")
        if kind == "email" and "@" not in str(body.get("email_address", "")):
            return _errors(400, "ValidationError", "email_address Not a valid email address")
        phone = re.sub(r"[\s()-]", "", str(body.get("phone_number")))
        if kind == "sms" and not re.fullmatch(r"\+?[0-9]{10,15}", phone):
            return _errors(400, "ValidationError", "phone_number Not a UK mobile number")
        if kind == "letter":
            lines = [personalisation.get(f"address_line_{i}") for i in range(1, 8)]
            given = [line for line in lines if line]
            if len(given) < 3:
                return _errors(400, "ValidationError", "Address must be at least 3 lines")
            if not POSTCODE.match(given[-1].strip()):
                return _errors(400, "ValidationError", "Must be a real UK postcode")
        return None

    def _record(self, kind: str, body: dict[str, Any]) -> Accepted:
        personalisation = dict(body.get("personalisation") or {})
        if kind == "letter":
            recipient = "\n".join(str(personalisation[f"address_line_{i}"]) for i in range(1, 8)
                                  if personalisation.get(f"address_line_{i}"))  # fmt: skip
        else:
            recipient = str(body["email_address" if kind == "email" else "phone_number"])
        notification = Accepted(
            id=str(uuid.uuid4()),
            type=kind,
            template_id=body["template_id"],
            reference=body.get("reference"),
            recipient=recipient,
            personalisation=personalisation,
            created_at=datetime.now(UTC),
            status="accepted" if kind == "letter" else "created",
        )
        self.accepted.append(notification)
        return notification

    def _created_answer(self, n: Accepted) -> dict[str, Any]:
        content: dict[str, Any] = {"body": n.personalisation.get("body", "")}
        if n.type == "email":
            content |= {"subject": n.personalisation["subject"], "from_email": "rj-hub@notifications.service.gov.uk",
                        "one_click_unsubscribe_url": None}  # fmt: skip
        elif n.type == "sms":
            content |= {"from_number": "GOVUK"}
        else:
            content |= {"subject": n.personalisation["subject"]}
        answer: dict[str, Any] = {
            "id": n.id,
            "reference": n.reference,
            "content": content,
            "uri": f"{self.base_url}/v2/notifications/{n.id}",
            "template": {"id": n.template_id, "version": 1, "uri": f"{self.base_url}/v2/template/{n.template_id}"},
        }
        if n.type == "letter":
            answer["scheduled_for"] = None
        return answer

    async def _list(self, request: web.Request) -> web.Response:
        self.requests.append(("GET", request.path_qs))
        refused = self._authorised(request)
        if refused is not None:
            return refused
        q = request.query
        found = [
            a for a in reversed(self.accepted)
            if ("reference" not in q or a.reference == q["reference"])
            and ("template_type" not in q or a.type == q["template_type"])
            and ("status" not in q or a.status == q["status"])
        ]  # fmt: skip
        return web.json_response(
            {
                "notifications": [a.as_json(self.base_url) for a in found],
                "links": {"current": f"{self.base_url}{request.path_qs}"},
            }
        )

    async def _get(self, request: web.Request) -> web.Response:
        self.requests.append(("GET", request.path))
        refused = self._authorised(request)
        if refused is not None:
            return refused
        for a in self.accepted:
            if a.id == request.match_info["id"]:
                return web.json_response(a.as_json(self.base_url))
        return _errors(404, "NoResultFound", "No result found")


def _errors(status: int, error: str, message: str, headers: dict[str, str] | None = None) -> web.Response:
    """An error as Notify words it: ``{"errors": [{"error", "message"}], "status_code"}``."""
    return web.json_response(
        {"errors": [{"error": error, "message": message}], "status_code": status}, status=status, headers=headers
    )
