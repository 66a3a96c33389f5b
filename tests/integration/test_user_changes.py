"""Fresh admin flag and deactivation across replicas (issue 4).

Demoting, promoting or deactivating a user (``AuthService.update_user`` or the real CLI
``gateway users update``) reaches proxied routes on every replica within 1 s: the database is
the source of truth, followed by every replica's change feed (and Redis pub/sub for
revocations). Two apps on the same backend stand for two replicas.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp.test_utils import TestClient, TestServer

from auth.errors import NotFound
from auth.redis_store import RedisStore
from auth.service import AuthService
from config import RedisConfig
from gateway.appkeys import SERVICES
from tests.fixtures.backends import Backend
from tests.fixtures.factories import DEFAULT_PASSWORD, create_user, login
from tests.fixtures.gateway import TEST_SECRET
from tests.fixtures.upstream import upstream_base

LOGIN = "/api/v1/auth/login"
ME = "/api/v1/auth/me"
REFRESH = "/api/v1/auth/refresh"
EMAIL = "beyhan@beyhan.dev"
DEADLINE = 1.0
CLI_TIMEOUT = 90.0
_KEPT_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "SYSTEMROOT")

Client = TestClient[Any, Any]
Start = Callable[..., Any]


def routes(upstream: TestServer) -> list[dict[str, Any]]:
    base = upstream_base(upstream)
    return [
        {"name": "admin", "prefix": "/admin", "upstream": base, "admin": True},
        {"name": "app", "prefix": "/app", "upstream": base},
        {"name": "public", "prefix": "/public", "upstream": base, "auth": "none"},
    ]


async def replicas(gateway_client: Start, upstream: TestServer, **sections: Any) -> list[Client]:
    return [await gateway_client(routes=routes(upstream), **sections) for _ in range(2)]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def service_of(client: Client) -> AuthService:
    service: AuthService = client.app[SERVICES].auth_service()
    return service


async def status(client: Client, path: str, token: str) -> int:
    resp = await client.get(path, headers=bearer(token))
    await resp.read()
    return resp.status


async def is_admin_header(client: Client, token: str) -> str:
    """What the upstream was told in ``X-Is-Admin`` for a request to /app."""
    resp = await client.get("/app/whoami", headers=bearer(token))
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    values: list[str] = body["headers"]["x-is-admin"]
    assert len(values) == 1
    return values[0]


async def becomes(
    client: Client, path: str, token: str, expected: int, before: int, within: float = DEADLINE
) -> float:
    """Poll ``path`` with ``token`` until it answers ``expected``; return how long that took.

    Every answer in between must be ``before``. Fails when ``within`` seconds pass first.
    """
    start = time.monotonic()
    while True:
        got = await status(client, path, token)
        elapsed = time.monotonic() - start
        if got == expected:
            return elapsed
        assert got == before, f"{path}: {got} (expected {before} then {expected})"
        if elapsed > within:
            raise AssertionError(f"{path} still {before} after {elapsed:.2f}s")
        await asyncio.sleep(0.01)


# --- admin flag -----------------------------------------------------------------------------


async def test_demotion_reaches_every_replica(gateway_client: Start, upstream: TestServer) -> None:
    a, b = await replicas(gateway_client, upstream)
    await create_user(a, is_admin=True)
    access = (await login(a))["access_token"]
    for replica in (a, b):
        assert await status(replica, "/admin/x", access) == 200
        assert await is_admin_header(replica, access) == "true"
    await service_of(a).update_user(EMAIL, is_admin=False)
    assert await status(a, "/admin/x", access) == 403  # at once where the change was made
    assert await becomes(b, "/admin/x", access, 403, before=200) <= DEADLINE
    for replica in (a, b):
        assert await status(replica, "/app/x", access) == 200
        assert await is_admin_header(replica, access) == "false"
    # The auth API agrees (it reads the database).
    resp = await b.get(ME, headers=bearer(access))
    assert resp.status == 200
    assert (await resp.json())["user"]["is_admin"] is False


async def test_promotion_reaches_every_replica(gateway_client: Start, upstream: TestServer) -> None:
    a, b = await replicas(gateway_client, upstream)
    await create_user(a, is_admin=False)
    access = (await login(a))["access_token"]
    for replica in (a, b):
        assert await status(replica, "/admin/x", access) == 403
        assert await is_admin_header(replica, access) == "false"
    await service_of(a).update_user(EMAIL, is_admin=True)
    assert await status(a, "/admin/x", access) == 200
    assert await becomes(b, "/admin/x", access, 200, before=403) <= DEADLINE
    for replica in (a, b):
        assert await is_admin_header(replica, access) == "true"


async def test_demotion_then_promotion_settles_on_the_last(
    gateway_client: Start, upstream: TestServer
) -> None:
    a, b = await replicas(gateway_client, upstream)
    await create_user(a, is_admin=True)
    access = (await login(a))["access_token"]
    await service_of(a).update_user(EMAIL, is_admin=False)
    await becomes(b, "/admin/x", access, 403, before=200)
    await service_of(b).update_user(EMAIL, is_admin=True)
    assert await status(b, "/admin/x", access) == 200
    assert await becomes(a, "/admin/x", access, 200, before=403) <= DEADLINE


async def test_a_replica_started_after_the_demotion_refuses_old_tokens(
    gateway_client: Start, upstream: TestServer
) -> None:
    a = await gateway_client(routes=routes(upstream))
    await create_user(a, is_admin=True)
    access = (await login(a))["access_token"]
    await service_of(a).update_user(EMAIL, is_admin=False)
    c = await gateway_client(routes=routes(upstream))
    assert await status(c, "/admin/x", access) == 403
    assert await is_admin_header(c, access) == "false"


async def test_demotion_applies_to_every_session_of_the_user(
    gateway_client: Start, upstream: TestServer
) -> None:
    a, b = await replicas(gateway_client, upstream)
    await create_user(a, is_admin=True)
    await create_user(a, email="other@example.test", username="Other", is_admin=True)
    first = (await login(a))["access_token"]
    second = (await login(b))["access_token"]
    other = (await login(a, "other@example.test"))["access_token"]
    await service_of(a).update_user(EMAIL, is_admin=False)
    for replica in (a, b):
        await becomes(replica, "/admin/x", first, 403, before=200)
        await becomes(replica, "/admin/x", second, 403, before=200)
        assert await status(replica, "/admin/x", other) == 200  # only that user


# --- deactivation ---------------------------------------------------------------------------


async def test_deactivation_reaches_every_replica(
    gateway_client: Start, upstream: TestServer
) -> None:
    a, b = await replicas(gateway_client, upstream)
    await create_user(a)
    tokens = await login(a)
    access = tokens["access_token"]
    for replica in (a, b):
        assert await status(replica, "/app/x", access) == 200
    await service_of(a).update_user(EMAIL, is_active=False)
    assert await status(a, "/app/x", access) == 401
    assert await becomes(b, "/app/x", access, 401, before=200) <= DEADLINE
    for replica in (a, b):
        assert await status(replica, "/admin/x", access) == 401
        assert await status(replica, ME, access) == 401
        resp = await replica.post(REFRESH, json={"refresh_token": tokens["refresh_token"]})
        assert resp.status == 401, await resp.text()
        resp = await replica.post(LOGIN, json={"email": EMAIL, "password": DEFAULT_PASSWORD})
        assert resp.status == 403, await resp.text()
        assert await status(replica, "/public/x", access) == 200  # auth: none is untouched


async def test_reactivation_allows_login_but_not_the_old_tokens(
    gateway_client: Start, upstream: TestServer
) -> None:
    a, b = await replicas(gateway_client, upstream)
    await create_user(a)
    old = (await login(a))["access_token"]
    await service_of(a).update_user(EMAIL, is_active=False)
    await becomes(b, "/app/x", old, 401, before=200)
    await service_of(a).update_user(EMAIL, is_active=True)
    fresh = (await login(b))["access_token"]
    for replica in (a, b):
        await becomes(replica, "/app/x", fresh, 200, before=401)
        assert await status(replica, "/app/x", old) == 401


async def test_update_user_unknown_email(gateway_client: Start) -> None:
    client = await gateway_client()
    with pytest.raises(NotFound):
        await service_of(client).update_user("nobody@example.test", is_admin=False)


# --- the real CLI ---------------------------------------------------------------------------


def cli_config(tmp_path: Path, backend: Backend) -> Path:
    raw: dict[str, Any] = {
        "database": {"url": backend.database_url},
        "redis": {"url": backend.redis_url, "key_prefix": backend.redis_prefix},
        "jwt": {"secret": TEST_SECRET},
        "auth": {"password": {"bcrypt_cost": 4}},
        "email": {"backend": "log"},
    }
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return path


async def run_cli(tmp_path: Path, *args: str) -> tuple[int, str, str]:
    """``python -m gateway <args>`` without blocking the loop the gateways run on."""
    env = {k: v for k, v in os.environ.items() if k in _KEPT_ENV}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway",
        *args,
        cwd=tmp_path,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), CLI_TIMEOUT)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def update(tmp_path: Path, config: Path, *flags: str) -> tuple[int, str, str]:
    return await run_cli(tmp_path, "users", "update", "--config", str(config), *flags)


async def test_cli_demotion_reaches_running_replicas(
    gateway_client: Start, upstream: TestServer, backend: Backend, tmp_path: Path
) -> None:
    a, b = await replicas(gateway_client, upstream)
    await create_user(a, is_admin=True)
    access = (await login(a))["access_token"]
    for replica in (a, b):
        assert await status(replica, "/admin/x", access) == 200
    code, out, err = await update(
        tmp_path, cli_config(tmp_path, backend), "--email", EMAIL, "--no-admin"
    )
    assert code == 0, err
    assert EMAIL in out and "not admin" in out
    done = time.monotonic()
    for replica in (a, b):
        await becomes(replica, "/admin/x", access, 403, before=200, within=DEADLINE)
    assert time.monotonic() - done <= DEADLINE
    assert await is_admin_header(b, access) == "false"
    code, out, err = await update(
        tmp_path, cli_config(tmp_path, backend), "--email", EMAIL, "--admin"
    )
    assert code == 0, err
    done = time.monotonic()
    for replica in (a, b):
        await becomes(replica, "/admin/x", access, 200, before=403, within=DEADLINE)
    assert time.monotonic() - done <= DEADLINE


async def test_cli_deactivation_reaches_running_replicas(
    gateway_client: Start, upstream: TestServer, backend: Backend, tmp_path: Path
) -> None:
    a, b = await replicas(gateway_client, upstream)
    await create_user(a)
    tokens = await login(a)
    access = tokens["access_token"]
    code, _, err = await update(
        tmp_path, cli_config(tmp_path, backend), "--email", EMAIL, "--inactive"
    )
    assert code == 0, err
    done = time.monotonic()
    for replica in (a, b):
        await becomes(replica, "/app/x", access, 401, before=200, within=DEADLINE)
    assert time.monotonic() - done <= DEADLINE
    resp = await b.post(REFRESH, json={"refresh_token": tokens["refresh_token"]})
    assert resp.status == 401
    resp = await b.post(LOGIN, json={"email": EMAIL, "password": DEFAULT_PASSWORD})
    assert resp.status == 403
    code, _, err = await update(
        tmp_path, cli_config(tmp_path, backend), "--email", EMAIL, "--active"
    )
    assert code == 0, err
    resp = await a.post(LOGIN, json={"email": EMAIL, "password": DEFAULT_PASSWORD})
    assert resp.status == 200, await resp.text()


async def test_cli_update_errors(gateway_client: Start, backend: Backend, tmp_path: Path) -> None:
    client = await gateway_client()
    await create_user(client)
    config = cli_config(tmp_path, backend)
    code, _, err = await update(tmp_path, config, "--email", "nobody@example.test", "--no-admin")
    assert code == 2, err
    assert "nobody@example.test" in err
    code, _, err = await update(tmp_path, config, "--email", EMAIL)
    assert code == 2, err
    assert "nothing to change" in err
    code, _, err = await update(tmp_path, config, "--email", EMAIL, "--admin", "--no-admin")
    assert code == 2, err
    code, _, err = await update(tmp_path, config, "--no-admin")  # --email is required
    assert code == 2, err
    # Nothing changed.
    resp = await client.post(LOGIN, json={"email": EMAIL, "password": DEFAULT_PASSWORD})
    assert resp.status == 200
    assert (await resp.json())["user"]["is_admin"] is False


# --- stale session state --------------------------------------------------------------------


def feed_task(service: AuthService) -> asyncio.Task[Any]:
    """The ``session-change-feed`` task that runs ``service.feed``."""
    for task in asyncio.all_tasks():
        if task.get_name() != "session-change-feed" or task.done():
            continue
        frame = getattr(task.get_coro(), "cr_frame", None)
        if frame is not None and frame.f_locals.get("self") is service.feed:
            return task
    raise AssertionError("no session-change-feed task for this service")


async def cancel(task: asyncio.Task[Any]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


@contextlib.asynccontextmanager
async def stale(client: Client, *, feed: bool = True) -> AsyncIterator[None]:
    """Cut the replica off Redis (and, with ``feed``, from the database feed) meanwhile."""
    service = service_of(client)
    store: Any = service.store
    await cancel(store._task)
    store._synced, store._down_since = False, time.time()  # what a lost connection leaves
    if feed:
        await cancel(feed_task(service))
        service.feed.fresh_at = 0.0
    try:
        yield
    finally:
        store._task = asyncio.create_task(store._follow())
        # Let it resubscribe before the test ends: closing a follower in the middle of its
        # subscription can hang (see test_store_closes_while_its_follower_subscribes).
        deadline = time.monotonic() + 5
        while not store.synced and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.02)


async def test_on_stale_closed_refuses_proxied_requests(
    gateway_client: Start, upstream: TestServer, backend: Backend
) -> None:
    if backend.redis_url is None:
        pytest.skip("the in-process store is always in sync: it cannot go stale")
    client = await gateway_client(
        routes=routes(upstream), sessions={"on_stale": "closed", "max_staleness": "1s"}
    )
    await create_user(client)
    access = (await login(client))["access_token"]
    assert await status(client, "/app/x", access) == 200
    async with stale(client):
        resp = await client.get("/app/x", headers=bearer(access))
        assert resp.status == 503, await resp.text()
        body = await resp.json()
        assert body["isSuccess"] is False
        assert body["statusCode"] == 503
        assert body["data"] is None
        assert body["errors"][0] == "Service unavailable"
        assert len(body["errors"]) > 1
        assert await status(client, "/public/x", access) == 200  # auth: none needs no state
        # Recovery: the feed catches up and requests pass again, still without Redis.
        service = service_of(client)
        follower = asyncio.create_task(service.feed.run(), name="session-change-feed")
        try:
            assert await becomes(client, "/app/x", access, 200, before=503, within=2.0) <= 2.0
        finally:
            await cancel(follower)


async def test_on_stale_closed_passes_while_the_feed_is_current(
    gateway_client: Start, upstream: TestServer, backend: Backend
) -> None:
    """Redis alone being away is not stale: the database feed is still current."""
    if backend.redis_url is None:
        pytest.skip("the in-process store is always in sync: it cannot go stale")
    client = await gateway_client(routes=routes(upstream), sessions={"on_stale": "closed"})
    await create_user(client)
    access = (await login(client))["access_token"]
    async with stale(client, feed=False):
        for _ in range(3):
            assert await status(client, "/app/x", access) == 200
            await asyncio.sleep(0.1)


async def test_on_stale_open_passes(
    gateway_client: Start, upstream: TestServer, backend: Backend
) -> None:
    if backend.redis_url is None:
        pytest.skip("the in-process store is always in sync: it cannot go stale")
    client = await gateway_client(
        routes=routes(upstream), sessions={"on_stale": "open", "max_staleness": "1s"}
    )
    await create_user(client)
    access = (await login(client))["access_token"]
    async with stale(client):
        assert await status(client, "/app/x", access) == 200
        assert await is_admin_header(client, access) == "false"


async def test_store_closes_while_its_follower_subscribes(backend: Backend) -> None:
    if backend.redis_url is None:
        pytest.skip("needs Redis")
    cfg = RedisConfig(url=backend.redis_url, key_prefix=backend.redis_prefix)
    stuck: list[int] = []
    for _ in range(3):
        for yields in range(16):  # close at every point of the (re)subscription
            store = RedisStore(cfg)
            store._task = asyncio.create_task(store._follow())
            for _ in range(yields):
                await asyncio.sleep(0)
            closing = asyncio.create_task(store.close())
            done, _ = await asyncio.wait({closing}, timeout=2)
            if not done:
                stuck.append(yields)
                store._task.cancel()  # a second cancel gets through; do not leak the task
                await asyncio.wait({closing}, timeout=5)
                break
        if stuck:
            break
    assert not stuck, f"close() hung when called {stuck[0]} loop turns into the subscription"
