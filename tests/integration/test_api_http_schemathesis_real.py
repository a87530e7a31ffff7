"""schemathesis against the API as deployed: the real read model (its queries over cases folded by the real
projection), the real policy and the real response models. Generated requests, valid and not, as a coordinator
and as an assigned facilitator, never get a 5xx, and every response conforms to the committed document's
schemas. (``test_api_http_schemathesis`` does the same with an in-test read side, to reach every route's
refusals quickly.)"""

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

from services.api import auth, readmodel
from services.api.http import create_app
from services.api.principal import Principal, Role
from services.runtime import keystore, privacy
from services.runtime.db import migrate
from services.runtime.devstack import create_database, database_name, drop_database, ensure_postgres
from services.runtime.keystore import MasterKeys
from services.runtime.settings import Settings
from tests.integration.test_api_read_model_order import FORCE, case_facts

pytestmark = pytest.mark.integration

STATE = Path(__file__).resolve().parent.parent.parent / ".rj" / "test"
CALLERS = {
    "coordinator": Principal(staff_id="C-1", role=Role.coordinator, force=FORCE),
    "facilitator": Principal(staff_id="F-ANN", role=Role.facilitator, force=FORCE),
}


class Tokens:
    def verify(self, token: str) -> Principal:
        if token not in CALLERS:
            raise auth.Unauthenticated("unknown or invalid token")
        return CALLERS[token]


class FoldedDatabase:
    """A database made on the first request, in schemathesis's loop, with three cases folded into its read model."""

    def __init__(self) -> None:
        self.server: str | None = None
        self.url: str | None = None
        self.pool: asyncpg.Pool | None = None

    async def __call__(self) -> asyncpg.Pool:
        if self.pool is None:
            self.server = await ensure_postgres(STATE / os.environ.get("PYTEST_XDIST_WORKER", "pg"))
            self.url = await create_database(self.server, f"rj_api_schemathesis_real_{uuid.uuid4().hex[:10]}")
            conn = await asyncpg.connect(self.url)
            try:
                await migrate(conn, "api", "services.api.migrations")
                await keystore.ensure_schema(conn)
                for n in range(3):
                    with privacy.batch_scope():
                        async with conn.transaction():
                            await readmodel.take_in(conn, case_facts(f"case-{n}"))
            finally:
                await conn.close()
            self.pool = await asyncpg.create_pool(self.url, min_size=1, max_size=4)
        return self.pool


database = FoldedDatabase()
schema = schemathesis.openapi.from_asgi(
    "/openapi.json",
    create_app(
        pool=database,
        verifier=Tokens(),
        settings=Settings(participant_link_key=SecretStr("A" * 43 + "=")),
    ),
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
            asyncio.run(drop_database(database.server, database_name(database.url)))


@schema.include(method="GET").parametrize()
@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
def test_every_read_answers_as_its_document_says_over_the_real_read_model(case: schemathesis.Case) -> None:
    # Left out, as in test_api_http_schemathesis: "schema-valid data is accepted" (a cursor is opaque).
    no_token = case.meta is not None and case.meta.is_negative_at(ParameterLocation.HEADER)
    valid_path = case.meta is None or not case.meta.is_negative_at(ParameterLocation.PATH)
    if case.path_parameters and "case_id" in case.path_parameters and valid_path:
        case.path_parameters["case_id"] = "case-1"  # a case that exists, so the full page is generated and checked
    for token in CALLERS:
        headers = {} if no_token else {"Authorization": f"Bearer {token}"}
        case.call_and_validate(headers=headers, excluded_checks=[positive_data_acceptance])
