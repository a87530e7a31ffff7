"""The embedded stack's small pure parts."""

from __future__ import annotations

from services.runtime.devstack import with_database


def test_a_database_url_is_pointed_at_another_database() -> None:
    assert (
        with_database("postgresql://postgres@127.0.0.1:5432/postgres", "rj_x")
        == "postgresql://postgres@127.0.0.1:5432/rj_x"
    )


def test_a_unix_socket_url_from_the_embedded_server_keeps_its_socket_directory() -> None:
    url = "postgresql://postgres:@/postgres?host=/tmp/abc/pgdata"
    assert with_database(url, "rj_x") == "postgresql://postgres:@/rj_x?host=/tmp/abc/pgdata"


def test_a_process_makes_the_event_loop_its_settings_name() -> None:
    import asyncio

    import uvloop

    from services.runtime.settings import Settings, use_event_loop

    try:
        for name, kind in (("uvloop", uvloop.Loop), ("asyncio", asyncio.BaseEventLoop)):
            use_event_loop(Settings(event_loop=name))
            loop = asyncio.new_event_loop()
            try:
                assert isinstance(loop, kind), name
                assert name != "asyncio" or not isinstance(loop, uvloop.Loop)
            finally:
                loop.close()
    finally:
        asyncio.set_event_loop_policy(None)
