"""The committed OpenAPI document (services/api/openapi.json) is the one the code makes, and says what UIs need."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import asyncpg
import pytest
from fastapi import FastAPI

from services.api.http import OPENAPI_FILE, create_app, openapi_document, openapi_is_current, write_openapi
from services.runtime.settings import Settings
from tests.integration.test_api_http import VIEWS, FixedTokens, ReadSide, Rules


async def no_pool() -> asyncpg.Pool:
    raise AssertionError("the document needs no database")


def app_with_in_test_read_side() -> FastAPI:
    return create_app(pool=no_pool, verifier=FixedTokens(), settings=Settings(), read_model=ReadSide(), views=VIEWS,
                      policy=Rules())  # type: ignore[arg-type]  # fmt: skip


def test_the_committed_openapi_document_is_current() -> None:
    for part in ("services.api.queries", "services.api.views", "services.api.policy", "services.api.auth"):
        if importlib.util.find_spec(part) is None:
            pytest.skip(f"{part} is not in this tree yet: the deployed document needs it")
    assert openapi_is_current(), "services/api/openapi.json is stale: run `rj api openapi` and commit it"


def test_a_document_that_differs_from_the_code_is_found_stale(tmp_path: Path) -> None:
    app = app_with_in_test_read_side()
    path = tmp_path / "openapi.json"
    assert not openapi_is_current(path, app)
    write_openapi(path, app)
    assert openapi_is_current(path, app)
    path.write_text(path.read_text().replace('"/me"', '"/whoami"'))
    assert not openapi_is_current(path, app)


def test_every_staff_command_has_a_route_whose_body_names_neither_the_case_nor_the_actor() -> None:
    document = json.loads(openapi_document(app_with_in_test_read_side()))
    for command_type in Rules.STAFF_COMMANDS:
        post = document["paths"][f"/cases/{{case_id}}/commands/{command_type}"]["post"]
        body = post["requestBody"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
        properties = document["components"]["schemas"][body]["properties"]
        assert "actor" not in properties and "case_id" not in properties, command_type
        assert {"202", "401", "403", "404", "409", "422"} <= set(post["responses"]), command_type
    assert "/cases/{case_id}/commands/rj.indirect.release-due" not in document["paths"], "system-only"
    assert document["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"


def test_the_committed_document_exists_and_is_json() -> None:
    assert "paths" in json.loads(OPENAPI_FILE.read_text())
