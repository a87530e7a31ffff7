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


def test_the_machines_postgresql_is_reached_through_its_socket_where_it_lets_us_in_there() -> None:
    import asyncio
    import os

    import asyncpg

    from services.runtime.devstack import (
        LOCAL_POSTGRES,
        LOCAL_POSTGRES_SOCKET,
        LOCAL_POSTGRES_SOCKET_DIR,
        _can_connect,
        _local_postgres,
    )

    async def check() -> None:
        url = await _local_postgres()
        if url is None:
            return  # no PostgreSQL on this machine's port 5432: the embedded one is used (tested elsewhere)
        socket = f"{LOCAL_POSTGRES_SOCKET_DIR}/.s.PGSQL.5432"
        assert url in (LOCAL_POSTGRES_SOCKET, LOCAL_POSTGRES)
        conn = await asyncpg.connect(with_database(url, "postgres"))
        try:
            over_tcp = await conn.fetchval("SELECT inet_client_addr() IS NOT NULL")
        finally:
            await conn.close()
        assert over_tcp == (url == LOCAL_POSTGRES)
        if url == LOCAL_POSTGRES:  # the socket is missing, or its authentication refuses user postgres
            assert not os.path.exists(socket) or not await _can_connect(LOCAL_POSTGRES_SOCKET)

    asyncio.run(check())


def test_a_database_url_names_its_database_whether_over_tcp_or_a_socket() -> None:
    from services.runtime.devstack import database_name

    assert database_name("postgresql://postgres@127.0.0.1:5432/rj_x") == "rj_x"
    assert database_name("postgresql://postgres@/rj_x?host=/var/run/postgresql&port=5432") == "rj_x"
