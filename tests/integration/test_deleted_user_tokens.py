"""A deleted user's tokens stay refused by replicas that start after the deletion.

Deleting a user cascades to its ``auth_sessions`` rows, and with them to the revocations a
replica replays from the database when it starts (or when Redis has lost its keys). The
deleting transaction therefore leaves a tombstone of each session whose access tokens may still
be alive (``revoked_session_tombstones``), which the change feed and the store's replay read
like any other revocation, and which is pruned once no access token of it can be alive.

A "restart" here is the first gateway closed and a new one started on the same database; with
Redis, the run's keys are deleted in between (as if Redis had restarted empty), so that only
the database can tell the new replica.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from alembic import command
from sqlalchemy import inspect, select
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import create_async_engine

from auth.db import alembic_config, migrate
from auth.models import RevokedSessionTombstone, utcnow
from auth.repository import SessionRepository
from tests.fixtures.backends import PG_URL, Backend, forget_redis_keys, pg_admin
from tests.fixtures.factories import create_user, login
from tests.fixtures.upstream import upstream_base
from tests.integration.test_user_changes import bearer, service_of, status

USERS = "/api/v1/auth/users"
LOGOUT = "/api/v1/auth/logout"
ME = "/api/v1/auth/me"
ADMIN = "admin@example.com"
VICTIM = "victim@example.com"
TOMBSTONES = "revoked_session_tombstones"
BEFORE_TOMBSTONES = "8d4e2f6a1b3c"  # the revision before the tombstones' migration

Client = TestClient[Any, Any]
Start = Callable[..., Any]
Seen = list[dict[str, str]]


# --- helpers --------------------------------------------------------------------------------


async def recording_upstream(aiohttp_server: Callable[..., Any]) -> tuple[TestServer, Seen]:
    """An upstream that answers 200 and notes the identity headers of every request."""
    seen: Seen = []

    async def handler(request: web.Request) -> web.Response:
        seen.append(
            {
                "path": request.path,
                "x-user-id": request.headers.get("X-User-Id", ""),
                "x-is-admin": request.headers.get("X-Is-Admin", ""),
            }
        )
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    server: TestServer = await aiohttp_server(app)
    return server, seen


def routes(upstream: TestServer) -> list[dict[str, Any]]:
    base = upstream_base(upstream)
    return [
        {"name": "admin", "prefix": "/admin", "upstream": base, "admin": True},
        {"name": "app", "prefix": "/app", "upstream": base},
    ]


async def delete_user(client: Client, admin_token: str, user_id: int) -> None:
    resp = await client.delete(f"{USERS}/{user_id}", headers=bearer(admin_token))
    assert resp.status == 200, await resp.text()


async def restart(old: Client, backend: Backend, gateway_client: Start, **sections: Any) -> Client:
    """Stop ``old`` and start a fresh gateway on the same database (and an emptied Redis)."""
    await old.close()
    await forget_redis_keys(backend)  # (as if Redis had restarted empty)
    return await gateway_client(**sections)


async def tombstones(client: Client) -> dict[str, Any]:
    """session id -> revoked_at of every tombstone."""
    async with service_of(client).sessions() as session:
        result = await session.execute(
            select(RevokedSessionTombstone.session_id, RevokedSessionTombstone.revoked_at)
        )
        return {sid: at for sid, at in result}


async def add_tombstones(client: Client, rows: dict[str, Any]) -> None:
    async with service_of(client).sessions() as session, session.begin():
        session.add_all(
            RevokedSessionTombstone(session_id=s, revoked_at=t) for s, t in rows.items()
        )


# --- a replica started after the deletion ---------------------------------------------------


@pytest.mark.parametrize("victim_is_admin", [False, True], ids=["user", "admin"])
async def test_a_replica_started_after_a_deletion_refuses_the_old_token(
    gateway_client: Start,
    aiohttp_server: Callable[..., Any],
    backend: Backend,
    victim_is_admin: bool,
) -> None:
    upstream, seen = await recording_upstream(aiohttp_server)
    a = await gateway_client(routes=routes(upstream))
    admin = await create_user(a, email=ADMIN, username="admin", is_admin=True)
    victim = await create_user(a, email=VICTIM, username="victim", is_admin=victim_is_admin)
    admin_token = (await login(a, ADMIN))["access_token"]
    access = (await login(a, VICTIM))["access_token"]
    assert await status(a, "/app/x", access) == 200
    assert seen[-1]["x-user-id"] == str(victim.id)
    assert seen[-1]["x-is-admin"] == ("true" if victim_is_admin else "false")

    await delete_user(a, admin_token, victim.id)
    assert await status(a, "/app/x", access) == 401
    seen.clear()

    b = await restart(a, backend, gateway_client, routes=routes(upstream))
    for path in ("/app/x", "/admin/x", "/app/y"):
        assert await status(b, path, access) == 401, path
    assert await status(b, ME, access) == 401
    assert seen == []  # the upstream never heard of the deleted user again
    # The new replica serves everyone else (the admin's session is untouched).
    assert await status(b, "/admin/x", admin_token) == 200
    assert seen == [{"path": "/admin/x", "x-user-id": str(admin.id), "x-is-admin": "true"}]


async def test_sessions_revoked_before_the_deletion_stay_refused(
    gateway_client: Start, aiohttp_server: Callable[..., Any], backend: Backend
) -> None:
    """A logout's revocation went with the session rows too: it is tombstoned as well."""
    upstream, seen = await recording_upstream(aiohttp_server)
    a = await gateway_client(routes=routes(upstream))
    await create_user(a, email=ADMIN, username="admin", is_admin=True)
    victim = await create_user(a, email=VICTIM, username="victim", is_admin=True)
    admin_token = (await login(a, ADMIN))["access_token"]
    logged_out = (await login(a, VICTIM))["access_token"]
    resp = await a.post(LOGOUT, headers=bearer(logged_out))
    assert resp.status == 200, await resp.text()
    live = (await login(a, VICTIM))["access_token"]
    assert await status(a, "/app/x", live) == 200
    await delete_user(a, admin_token, victim.id)
    seen.clear()

    b = await restart(a, backend, gateway_client, routes=routes(upstream))
    for token in (logged_out, live):
        assert await status(b, "/app/x", token) == 401
        assert await status(b, "/admin/x", token) == 401
    assert seen == []


async def test_a_session_opened_during_the_deletion_is_ended_too(
    gateway_client: Start, aiohttp_server: Callable[..., Any], backend: Backend
) -> None:
    """A login that passed its checks before the deactivation commits its session between the
    deletion's two transactions: the deleting one tombstones it (and tells the store)."""
    upstream, seen = await recording_upstream(aiohttp_server)
    a = await gateway_client(routes=routes(upstream))
    await create_user(a, email=ADMIN, username="admin", is_admin=True)
    victim = await create_user(a, email=VICTIM, username="victim", is_admin=True)
    admin_token = (await login(a, ADMIN))["access_token"]
    service = service_of(a)
    store: Any = service.store
    revoke_sessions = store.revoke_sessions
    raced: list[str] = []

    async def revoke_then_open_a_session(sids: list[str], ttl: int) -> None:
        await revoke_sessions(sids, ttl)
        if not raced:  # the first call: right after the deactivating transaction
            raced.append((await service._open_session(victim)).access_token)

    store.revoke_sessions = revoke_then_open_a_session
    await delete_user(a, admin_token, victim.id)
    store.revoke_sessions = revoke_sessions
    [access] = raced
    sid = service.tokens.verify(access, "access").sid
    assert sid in await tombstones(a)
    assert await store.is_session_revoked(sid)
    assert await status(a, "/admin/x", access) == 401

    b = await restart(a, backend, gateway_client, routes=routes(upstream))
    assert await status(b, "/admin/x", access) == 401
    assert await status(b, "/app/x", access) == 401
    assert seen == []


# --- what is kept, and for how long ---------------------------------------------------------


async def test_tombstones_hold_session_ids_only_and_are_pruned_past_the_horizon(
    gateway_client: Start, aiohttp_server: Callable[..., Any]
) -> None:
    upstream, _ = await recording_upstream(aiohttp_server)
    a = await gateway_client(routes=routes(upstream))
    service = service_of(a)
    await create_user(a, email=ADMIN, username="admin", is_admin=True)
    victim = await create_user(a, email=VICTIM, username="victim")
    admin_token = (await login(a, ADMIN))["access_token"]
    sid = service.tokens.verify((await login(a, VICTIM))["access_token"], "access").sid

    now = utcnow()
    horizon = timedelta(seconds=service.revocation_ttl)
    old = {uuid.uuid4().hex: now - horizon - timedelta(minutes=m) for m in (1, 60)}
    recent = {uuid.uuid4().hex: now - horizon + timedelta(minutes=1)}
    await add_tombstones(a, old | recent)
    async with service.sessions() as session:
        replayed = set(await SessionRepository(session).revoked_since(now - horizon))
    assert set(recent) <= replayed and not set(old) & replayed  # the feed never reads past it

    await delete_user(a, admin_token, victim.id)
    kept = await tombstones(a)
    assert not set(old) & set(kept)  # pruned by the deletion
    assert set(recent) | {sid} <= set(kept)
    assert abs(kept[sid] - utcnow()) < timedelta(seconds=30)  # timezone-aware UTC
    # No personal data: the session id and its time of revocation, nothing else.
    async with service.sessions() as session:
        columns = await session.run_sync(
            lambda s: {c["name"] for c in inspect(s.connection()).get_columns(TOMBSTONES)}
        )
    assert columns == {"session_id", "revoked_at"}


# --- the migration --------------------------------------------------------------------------


def _schema(url: str) -> tuple[set[str], set[str]]:
    """The tables of the database at ``url``, and the indexes of the tombstones' table."""

    def read(conn: Connection) -> tuple[set[str], set[str]]:
        inspector = inspect(conn)
        tables = set(inspector.get_table_names())
        indexes = (
            {str(ix["name"]) for ix in inspector.get_indexes(TOMBSTONES)}
            if TOMBSTONES in tables
            else set()
        )
        return tables, indexes

    async def run() -> tuple[set[str], set[str]]:
        engine = create_async_engine(url)
        try:
            async with engine.connect() as conn:
                return await conn.run_sync(read)
        finally:
            await engine.dispose()

    return asyncio.run(run())


@pytest.fixture
def empty_database(backend: Backend, tmp_path: Path) -> Iterator[str]:
    """A database of its own on the backend's engine (never the run's migrated one)."""
    if backend.name == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'migrations.db'}"
        return
    name = f"gwtest_mig_{uuid.uuid4().hex[:10]}"
    asyncio.run(pg_admin(PG_URL, f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(PG_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        asyncio.run(pg_admin(PG_URL, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def test_the_tombstones_migration_upgrades_and_downgrades(empty_database: str) -> None:
    url = empty_database
    asyncio.run(migrate(url, BEFORE_TOMBSTONES))
    tables, _ = _schema(url)
    assert "auth_sessions" in tables and TOMBSTONES not in tables
    asyncio.run(migrate(url))  # head, as `gateway migrate` and the embedded start-up do
    tables, indexes = _schema(url)
    assert TOMBSTONES in tables
    assert indexes == {"ix_revoked_session_tombstones_revoked_at"}
    command.downgrade(alembic_config(url), BEFORE_TOMBSTONES)
    assert TOMBSTONES not in _schema(url)[0]
    asyncio.run(migrate(url))
    assert TOMBSTONES in _schema(url)[0]
    command.downgrade(alembic_config(url), "base")
    assert _schema(url)[0] == {"alembic_version"}
