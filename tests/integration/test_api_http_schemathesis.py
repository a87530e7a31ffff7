"""schemathesis against the API's own OpenAPI document: generated requests (valid and not) never get a 5xx, and
every response conforms to the document. The read side is the in-test one of ``test_api_http``; commands are
written to a real database."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from pydantic import SecretStr
from schemathesis.core.parameters import ParameterLocation
from schemathesis.specs.openapi.checks import positive_data_acceptance

from services.api.http import create_app
from services.runtime import privacy
from services.runtime.devstack import create_database, database_name, drop_database, ensure_postgres
from services.runtime.keystore import MasterKeys
from services.runtime.settings import Settings
from tests.integration.test_api_http import (
    COORDINATOR,
    FACILITATOR,
    VIEWS,
    FixedTokens,
    ReadSide,
    Rules,
    bearer,
    prepare_database,
)

STATE = Path(__file__).resolve().parent.parent.parent / ".rj" / "test"


class LazyDatabase:
    """A database made on the first request, in the loop schemathesis serves the app from (the pool lives there)."""

    def __init__(self) -> None:
        self.server: str | None = None
        self.url: str | None = None
        self.pool: asyncpg.Pool | None = None

    async def __call__(self) -> asyncpg.Pool:
        if self.pool is None:
            self.server = await ensure_postgres(STATE / os.environ.get("PYTEST_XDIST_WORKER", "pg"))
            self.url = await create_database(self.server, f"rj_api_schemathesis_{uuid.uuid4().hex[:10]}")
            await prepare_database(self.url)
            self.pool = await asyncpg.create_pool(self.url, min_size=1, max_size=4)
        return self.pool


database = LazyDatabase()
schema = schemathesis.openapi.from_asgi(
    "/openapi.json",
    create_app(
        pool=database, verifier=FixedTokens(), settings=Settings(), read_model=ReadSide(), views=VIEWS, policy=Rules()
    ),  # type: ignore[arg-type]  # fmt: skip
)


@pytest.fixture(scope="module", autouse=True)
def sealing_and_cleanup() -> Iterator[None]:
    before = privacy.installed()
    privacy.install(privacy.Privacy.from_settings(Settings(master_keys=SecretStr(MasterKeys.generate("test1")))))
    try:
        yield
    finally:
        privacy.install(before)
        if database.server and database.url:
            # The pool lives in schemathesis's loop; dropping the database ends its connections.
            asyncio.run(drop_database(database.server, database_name(database.url)))


@schema.parametrize()
@settings(max_examples=8, deadline=None, suppress_health_check=list(HealthCheck))
def test_the_api_answers_every_generated_request_as_its_document_says(case: schemathesis.Case) -> None:
    # A coordinator may see every case of the force and send every command but none that is system-only; a
    # facilitator is refused more. Both must only ever get what the document promises.
    # Left out: "schema-valid data is accepted". A cursor is opaque and a command's own rules (a meeting ends after
    # it starts) go beyond what a schema can say, so a schema-valid request may rightly get a 400 or 422.
    # A case generated to leave the token out (a negative case of the headers) goes without one.
    no_token = case.meta is not None and case.meta.is_negative_at(ParameterLocation.HEADER)
    for caller in (COORDINATOR, FACILITATOR):
        headers = {} if no_token else bearer(caller)
        case.call_and_validate(headers=headers, excluded_checks=[positive_data_acceptance])
