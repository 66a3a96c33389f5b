"""Three real ``gateway serve`` processes on one PostgreSQL and one Redis, driven from outside.

The module starts its own database (``gwrep_<random>``), its own ``redis-server`` (so killing it
disturbs nobody else), a real upstream and three gateways on three ports, then measures how long
what happens on one replica takes to be seen by the others: logout, demotion, deactivation,
refresh races, the shared login limit, and a Redis crash + restart under traffic.

Every test name contains ``postgres``: CI checks that PostgreSQL tests ran by their names.
Measured times are printed (``pytest -s``) and recorded as JUnit test-suite properties
(``record_testsuite_property``: ``record_property`` is dropped by the default xunit2 format).
"""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import pytest
import redis
import uvloop
import yaml
from sqlalchemy.engine import make_url

from tests.fixtures.backends import PG_URL, REQUIRE_SERVICES, pg_admin, session_database_url
from tests.fixtures.processes import (
    DIE_WITH_PARENT,
    REPO,
    Proc,
    ProcessGroup,
    RedisServer,
    ResetServer,
    answers,
    clean_env,
    free_port,
    http_json,
    resets_in_this_loop,
    wait_until,
)

pytestmark = pytest.mark.postgres

AUTH = "/api/v1/auth"
SECRET = "replicas-test-secret-0123456789abcdefghijklmnop"  # 46 bytes
PASSWORD = "correct-horse-9"
PREFIX = "gwrep:"
LIMIT = 5  # auth.rate_limits.login_per_account.requests
FLAP_ROUNDS = 3  # Redis kill + reset + restart rounds (see the flapping test)
PROPAGATION_BUDGET = 1.0  # seconds: the "within 1 second"
POLL_GAP = 0.005  # between two probes of one poller
START_TIMEOUT = 20.0
CLI_TIMEOUT = 60.0
USERS = {
    "logout": ("logout@example.com", False),
    "demote": ("demote@example.com", True),
    "deactivate": ("deactivate@example.com", True),
    "racer": ("racer@example.com", False),
    "brute": ("brute@example.com", False),
    "burst": ("burst@example.com", False),
    "traffic": ("traffic@example.com", False),
    "down": ("down@example.com", False),
    "after": ("after@example.com", False),
    "flap": ("flap@example.com", False),
}

UPSTREAM_SCRIPT = """
import sys
from aiohttp import web
from tests.fixtures.upstream import upstream_app
web.run_app(upstream_app(), host="127.0.0.1", port=int(sys.argv[1]), print=None)
"""


# --- the cluster ---------------------------------------------------------------------------


@dataclass
class Cluster:
    """Three replicas (A, B, C) on one database and one private Redis."""

    bases: list[str]
    gateways: list[Proc]
    redis: RedisServer
    config: Path
    env: dict[str, str]
    tmp: Path
    database_url: str

    @property
    def a(self) -> str:
        return self.bases[0]

    @property
    def b(self) -> str:
        return self.bases[1]

    @property
    def c(self) -> str:
        return self.bases[2]

    def cli_argv(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "gateway", *args, "--config", str(self.config)]


def _unavailable(reason: str) -> None:
    if REQUIRE_SERVICES:
        pytest.fail(f"{reason} (GATEWAY_TEST_REQUIRE_SERVICES=1: services must run)")
    pytest.skip(reason)


def _config(
    path: Path, port: int, database_url: str, redis_url: str, upstream: str
) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "server": {"host": "127.0.0.1", "port": port, "access_log": False},
        "database": {"url": database_url, "pool_size": 5},
        "redis": {"url": redis_url, "key_prefix": PREFIX},
        "auth": {
            "password": {"bcrypt_cost": 4},
            "rate_limits": {
                "login_per_account": {"requests": LIMIT, "per": "1m"},
                "login_per_ip": {"requests": 10_000, "per": "1m"},
                "email_per_address": {"requests": 10_000, "per": "1m"},
                "email_per_ip": {"requests": 10_000, "per": "1m"},
            },
        },
        "sessions": {"refresh_grace": "5s"},
        "email": {"backend": "log"},
        "logging": {"level": "INFO"},
        "routes": [
            {"name": "app", "prefix": "/app", "upstream": upstream, "auth": "required"},
            {
                "name": "admin",
                "prefix": "/admin",
                "upstream": upstream,
                "auth": "required",
                "admin": True,
            },
        ],
    }
    path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return raw


def _healthy(base: str) -> bool:
    return http_json("GET", base + "/healthz", timeout=2)[0] == 200


def _ready(base: str) -> bool:
    status, _, body = http_json("GET", base + "/readyz", timeout=2)
    return status == 200 and isinstance(body, dict) and body.get("status") == "ready"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """Database, private Redis, upstream and three gateways; all stopped and dropped after."""
    pg = make_url(PG_URL)
    if not answers(pg.host or "127.0.0.1", pg.port or 5432):
        _unavailable(f"PostgreSQL is not answering on {pg.host}:{pg.port}")
    if shutil.which("redis-server") is None:
        _unavailable("redis-server is not installed")

    tmp = tmp_path_factory.mktemp("replicas")
    group = ProcessGroup(tmp, tmp)
    name = f"gwrep_{uuid.uuid4().hex[:12]}"
    asyncio.run(pg_admin(PG_URL, f'CREATE DATABASE "{name}"'))
    database_url = session_database_url(PG_URL, name)
    try:
        redis_server = RedisServer(group, free_port())
        redis_server.start()

        upstream_port = free_port()
        upstream = group.start(
            "upstream",
            [sys.executable, "-c", UPSTREAM_SCRIPT, str(upstream_port)],
            cwd=REPO,
            env=clean_env(PYTHONPATH=str(REPO)),
        )
        upstream_url = f"http://127.0.0.1:{upstream_port}"

        # PYTHONPATH: the subprocesses run the code of this checkout, whatever is installed.
        env = clean_env(GATEWAY_JWT_SECRET=SECRET, PYTHONPATH=str(REPO))
        ports = [free_port() for _ in range(3)]
        configs = [tmp / f"gateway-{label}.yaml" for label in "abc"]
        for path, port in zip(configs, ports, strict=True):
            _config(path, port, database_url, redis_server.url, upstream_url)

        def cli(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [sys.executable, "-m", "gateway", *args, "--config", str(configs[0])],
                cwd=tmp,
                env=env,
                capture_output=True,
                text=True,
                timeout=CLI_TIMEOUT,
                check=False,
                preexec_fn=DIE_WITH_PARENT,  # its thread waits for it: dies with the run
            )

        migrated = cli("migrate")
        assert migrated.returncode == 0, migrated.stderr

        serve = [sys.executable, "-m", "gateway", "serve", "--config"]
        gateways = [
            group.start(f"gateway-{label}", [*serve, str(path)], env=env)
            for label, path in zip("abc", configs, strict=True)
        ]

        # Users are created while the gateways start (each CLI run is a fresh interpreter;
        # subprocess.run kills its child on timeout, so none can outlive the fixture).
        def create(user: tuple[str, bool]) -> subprocess.CompletedProcess[str]:
            email, admin = user
            flags = ["--verified", "--admin"] if admin else ["--verified"]
            return cli("users", "create", "--email", email, "--password", PASSWORD, *flags)

        with ThreadPoolExecutor(max_workers=4) as pool:
            created = list(pool.map(create, USERS.values()))
        for result in created:
            assert result.returncode == 0, result.stderr

        wait_until(
            partial(answers, "127.0.0.1", upstream_port), START_TIMEOUT, "upstream", upstream
        )
        bases = [f"http://127.0.0.1:{port}" for port in ports]
        for base, gateway in zip(bases, gateways, strict=True):
            wait_until(partial(_healthy, base), START_TIMEOUT, f"{gateway.name} /healthz", gateway)
        for base, gateway in zip(bases, gateways, strict=True):
            wait_until(partial(_ready, base), START_TIMEOUT, f"{gateway.name} ready", gateway)

        yield Cluster(bases, gateways, redis_server, configs[0], env, tmp, database_url)
    finally:
        group.stop_all()
        left = [p.name for p in group.procs if p.alive()]
        asyncio.run(pg_admin(PG_URL, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        assert not left, f"processes left running: {left}"


# --- HTTP helpers --------------------------------------------------------------------------


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def claims_of(token: str) -> dict[str, Any]:
    """The unverified payload of a JWT (to read ``sid``)."""
    payload = token.split(".")[1]
    return dict(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))))


async def call(
    http: aiohttp.ClientSession,
    method: str,
    url: str,
    *,
    token: str | None = None,
    body: dict[str, Any] | None = None,
) -> tuple[int, dict[str, str], Any]:
    headers = bearer(token) if token else {}
    async with http.request(method, url, json=body, headers=headers) as resp:
        raw = await resp.read()
        try:
            data: Any = json.loads(raw) if raw else None
        except ValueError:
            data = raw.decode("utf-8", "replace")
        return resp.status, dict(resp.headers), data


async def login(http: aiohttp.ClientSession, base: str, user: str) -> dict[str, Any]:
    status, _, body = await call(
        http, "POST", f"{base}{AUTH}/login", body={"email": USERS[user][0], "password": PASSWORD}
    )
    assert status == 200, body
    return dict(body)


async def wait_for_status(
    http: aiohttp.ClientSession,
    url: str,
    token: str,
    wanted: int,
    *,
    before: frozenset[int] = frozenset({200}),
    within: float = 3.0,
) -> float:
    """Probe ``url`` until it answers ``wanted``; return the monotonic time it first did.

    Until then every answer must be in ``before`` (a 5xx on the way is a failure, not a wait).
    """
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        status, _, body = await call(http, "GET", url, token=token)
        if status == wanted:
            return time.monotonic()
        assert status in before, (url, status, body)
        await asyncio.sleep(POLL_GAP)
    raise AssertionError(f"{url} still did not answer {wanted} after {within}s")


T = TypeVar("T")


async def measure(
    probes: dict[str, Coroutine[Any, Any, float]], action: Callable[[], Coroutine[Any, Any, T]]
) -> tuple[T, float, float, dict[str, float]]:
    """Start every probe, then ``action``; return (action result, t0, t_done, first-hit times)."""
    tasks = {name: asyncio.create_task(probe) for name, probe in probes.items()}
    try:
        await asyncio.sleep(0.05)  # every probe is polling before the action starts
        t0 = time.monotonic()
        result = await action()
        done = time.monotonic()
        hits = dict(zip(tasks, await asyncio.gather(*tasks.values()), strict=True))
    finally:
        for task in tasks.values():
            task.cancel()  # no-op on finished ones; stops the rest when one probe failed
        await asyncio.gather(*tasks.values(), return_exceptions=True)
    return result, t0, done, hits


def report(
    record_testsuite_property: Callable[[str, object], None], label: str, times: dict[str, float]
) -> None:
    """Print and record measured seconds (rounded to the millisecond)."""
    rounded = {name: round(value, 3) for name, value in sorted(times.items())}
    print(f"\n[{label}] seconds: {json.dumps(rounded)}")
    record_testsuite_property(label, json.dumps(rounded))


async def run_cli(cluster: Cluster, *args: str) -> tuple[int, str, float, float]:
    """``python -m gateway <args>``: (exit code, output, start, end) in monotonic time."""
    start = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        *cluster.cli_argv(*args),
        cwd=cluster.tmp,
        env=cluster.env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        preexec_fn=DIE_WITH_PARENT,
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), CLI_TIMEOUT)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    return proc.returncode or 0, out.decode("utf-8", "replace"), start, time.monotonic()


def session() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=64),
        timeout=aiohttp.ClientTimeout(total=10),
    )


# --- logout --------------------------------------------------------------------------------


async def test_postgres_logout_on_a_is_refused_by_b_and_c_within_1s(
    cluster: Cluster, record_testsuite_property: Callable[[str, object], None]
) -> None:
    async with session() as http:
        first = (await login(http, cluster.a, "logout"))["access_token"]
        second = (await login(http, cluster.c, "logout"))["access_token"]
        for base in cluster.bases:
            for token in (first, second):
                assert (await call(http, "GET", f"{base}/app/probe", token=token))[0] == 200
                assert (await call(http, "GET", f"{base}{AUTH}/me", token=token))[0] == 200

        probes = {
            f"{label} {path} {tag}": wait_for_status(http, base + path, token, 401)
            for label, base in (("B", cluster.b), ("C", cluster.c))
            for path in ("/app/probe", f"{AUTH}/me")
            for tag, token in (("t1", first), ("t2", second))
        }

        async def logout() -> int:
            return (await call(http, "POST", f"{cluster.a}{AUTH}/logout", token=first))[0]

        status, t0, done, hits = await measure(probes, logout)
        assert status == 200
        since_request = {name: max(0.0, hit - t0) for name, hit in hits.items()}
        since_response = {name: max(0.0, hit - done) for name, hit in hits.items()}
        report(record_testsuite_property, "logout_propagation_from_request", since_request)
        report(record_testsuite_property, "logout_propagation_from_response", since_response)
        print(f"[logout] request on A took {done - t0:.3f}s")
        assert max(since_request.values()) <= PROPAGATION_BUDGET, since_request
        # The replica that logged out refuses at once, on both endpoints.
        for token in (first, second):
            assert (await call(http, "GET", f"{cluster.a}/app/probe", token=token))[0] == 401
            assert (await call(http, "GET", f"{cluster.a}{AUTH}/me", token=token))[0] == 401


# --- admin flag and deactivation -----------------------------------------------------------


async def test_postgres_demoted_admin_gets_403_on_every_replica_within_1s(
    cluster: Cluster, record_testsuite_property: Callable[[str, object], None]
) -> None:
    email = USERS["demote"][0]
    async with session() as http:
        token = (await login(http, cluster.a, "demote"))["access_token"]
        assert claims_of(token)["is_admin"] is True
        for base in cluster.bases:
            status, _, body = await call(http, "GET", f"{base}/admin/panel", token=token)
            assert status == 200, body
            assert body["headers"]["x-is-admin"] == ["true"]

        # The CLI runs on none of the replicas: all three are "the others".
        probes = {
            label: wait_for_status(http, base + "/admin/panel", token, 403, within=CLI_TIMEOUT)
            for label, base in zip("ABC", cluster.bases, strict=True)
        }

        async def demote() -> tuple[int, str, float, float]:
            return await run_cli(cluster, "users", "update", "--email", email, "--no-admin")

        (code, out, started, ended), _, _, hits = await measure(probes, demote)
        assert code == 0, out
        # Measured from the CLI's exit (its commit comes a little earlier, so a replica may
        # even be faster than the exit: a negative time).
        after_cli = {name: hit - ended for name, hit in hits.items()}
        report(record_testsuite_property, "demote_propagation_after_cli_exit", after_cli)
        print(f"[demote] the CLI ran {ended - started:.3f}s")
        assert max(after_cli.values()) <= PROPAGATION_BUDGET, after_cli

        # Still logged in, just no longer an admin: the upstream hears X-Is-Admin: false.
        for base in cluster.bases:
            assert (await call(http, "GET", f"{base}/admin/panel", token=token))[0] == 403
            status, _, body = await call(http, "GET", f"{base}/app/x", token=token)
            assert status == 200, body
            assert body["headers"]["x-is-admin"] == ["false"]
            status, _, body = await call(http, "GET", f"{base}{AUTH}/me", token=token)
            assert status == 200 and body["user"]["is_admin"] is False, body

        # Promoted again: the same old token opens /admin again, everywhere, as fast.
        probes = {
            label: wait_for_status(
                http, base + "/admin/panel", token, 200, before=frozenset({403}), within=CLI_TIMEOUT
            )
            for label, base in zip("ABC", cluster.bases, strict=True)
        }

        async def promote() -> tuple[int, str, float, float]:
            return await run_cli(cluster, "users", "update", "--email", email, "--admin")

        (code, out, _, ended), _, _, hits = await measure(probes, promote)
        assert code == 0, out
        after_cli = {name: hit - ended for name, hit in hits.items()}
        report(record_testsuite_property, "promote_propagation_after_cli_exit", after_cli)
        assert max(after_cli.values()) <= PROPAGATION_BUDGET, after_cli


async def test_postgres_deactivated_user_gets_401_on_every_replica_within_1s(
    cluster: Cluster, record_testsuite_property: Callable[[str, object], None]
) -> None:
    email = USERS["deactivate"][0]
    async with session() as http:
        tokens = await login(http, cluster.a, "deactivate")
        token = tokens["access_token"]
        for base in cluster.bases:
            assert (await call(http, "GET", f"{base}/admin/panel", token=token))[0] == 200

        probes = {
            f"{label} {path}": wait_for_status(http, base + path, token, 401, within=CLI_TIMEOUT)
            for label, base in zip("ABC", cluster.bases, strict=True)
            for path in ("/app/x", "/admin/panel", f"{AUTH}/me")
        }

        async def deactivate() -> tuple[int, str, float, float]:
            return await run_cli(cluster, "users", "update", "--email", email, "--inactive")

        (code, out, started, ended), _, _, hits = await measure(probes, deactivate)
        assert code == 0, out
        after_cli = {name: hit - ended for name, hit in hits.items()}
        report(record_testsuite_property, "deactivate_propagation_after_cli_exit", after_cli)
        print(f"[deactivate] the CLI ran {ended - started:.3f}s")
        assert max(after_cli.values()) <= PROPAGATION_BUDGET, after_cli

        for base in cluster.bases:
            status, _, body = await call(
                http,
                "POST",
                f"{base}{AUTH}/refresh",
                body={"refresh_token": tokens["refresh_token"]},
            )
            assert status == 401, body
            status, _, body = await call(
                http,
                "POST",
                f"{base}{AUTH}/login",
                body={"email": email, "password": PASSWORD},
            )
            assert status == 403, body


# --- refresh races -------------------------------------------------------------------------


async def test_postgres_two_refreshes_racing_on_a_and_b_get_the_same_pair(
    cluster: Cluster,
) -> None:
    async with session() as tab1, session() as tab2:
        pair = await login(tab1, cluster.c, "racer")
        for _round in range(4):
            old = pair["refresh_token"]

            async def refresh(http: aiohttp.ClientSession, base: str, old: str = old) -> Any:
                return await call(
                    http, "POST", f"{base}{AUTH}/refresh", body={"refresh_token": old}
                )

            (s1, _, p1), (s2, _, p2) = await asyncio.gather(
                refresh(tab1, cluster.a), refresh(tab2, cluster.b)
            )
            assert (s1, s2) == (200, 200), (p1, p2)
            assert p1["access_token"] == p2["access_token"]
            assert p1["refresh_token"] == p2["refresh_token"]
            assert p1["refresh_token"] != old
            # Still logged in, on every replica, through the API and the proxy.
            for base in cluster.bases:
                status, _, body = await call(
                    tab1, "GET", f"{base}{AUTH}/me", token=p1["access_token"]
                )
                assert status == 200 and body["user"]["email"] == USERS["racer"][0], body
                assert (await call(tab2, "GET", f"{base}/app/x", token=p1["access_token"]))[
                    0
                ] == 200
            pair = p1
        # The chain goes on: the last pair rotates normally on the third replica.
        status, _, body = await call(
            tab1,
            "POST",
            f"{cluster.c}{AUTH}/refresh",
            body={"refresh_token": pair["refresh_token"]},
        )
        assert status == 200, body
        assert (await call(tab1, "GET", f"{cluster.a}/app/x", token=body["access_token"]))[0] == 200


# --- shared login limit --------------------------------------------------------------------


async def test_postgres_login_limit_is_shared_by_every_replica(cluster: Cluster) -> None:
    email = USERS["brute"][0]
    wrong = {"email": email, "password": "not-the-password"}
    async with session() as http:
        # LIMIT failures spread over A, B, C, A, B: each replica saw at most two of them.
        for i in range(LIMIT):
            base = cluster.bases[i % 3]
            status, _, body = await call(http, "POST", f"{base}{AUTH}/login", body=wrong)
            assert status == 401, (i, base, body)
        # Now every replica refuses, even the right password, before any password check.
        for base in (cluster.c, cluster.a, cluster.b):
            for attempt in (wrong, {"email": email.upper(), "password": PASSWORD}):
                status, headers, body = await call(
                    http, "POST", f"{base}{AUTH}/login", body=attempt
                )
                assert status == 429, (base, body)
                retry_after = int(headers["Retry-After"])
                assert 1 <= retry_after <= 60, retry_after
                assert body["statusCode"] == 429 and body["isSuccess"] is False
                assert any("login_per_account" in detail for detail in body["errors"]), body
        # Another account is not affected.
        assert (await login(http, cluster.b, "racer"))["access_token"]


async def test_postgres_login_limit_holds_against_a_parallel_burst_over_replicas(
    cluster: Cluster,
) -> None:
    """Wrong passwords fired all at once at A, B and C: no more than the limit are checked.

    A lockout that counts after the password check lets every request of a burst through the
    check before any is counted, so an attacker gets as many guesses as requests in flight.
    """
    email = USERS["burst"][0]
    wrong = {"email": email, "password": "not-the-password"}
    burst = 5 * LIMIT
    async with session() as http:
        answers = await asyncio.gather(
            *(
                call(http, "POST", f"{cluster.bases[i % 3]}{AUTH}/login", body=wrong)
                for i in range(burst)
            )
        )
        statuses = sorted(status for status, _, _ in answers)
        print(f"\n[login burst] {burst} parallel wrong passwords: {statuses}")
        assert set(statuses) <= {401, 429}, statuses
        assert statuses.count(401) <= LIMIT, statuses
        for base in cluster.bases:
            status, _, _ = await call(
                http, "POST", f"{base}{AUTH}/login", body={"email": email, "password": PASSWORD}
            )
            assert status == 429


# --- Redis crash under traffic -------------------------------------------------------------


@dataclass
class Traffic:
    """Proxied requests with one valid token, round-robin over the replicas."""

    results: list[tuple[float, str, int | str]] = field(default_factory=list)
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self, http: aiohttp.ClientSession, bases: list[str], token: str) -> None:
        deadline = time.monotonic() + 45  # bounded even if nobody stops it
        i = 0
        while not self.stop.is_set() and time.monotonic() < deadline:
            base = bases[i % len(bases)]
            i += 1
            try:
                status: int | str = (await call(http, "GET", f"{base}/app/traffic", token=token))[0]
            except (aiohttp.ClientError, TimeoutError) as exc:
                status = type(exc).__name__
            self.results.append((time.monotonic(), base, status))
            await asyncio.sleep(0.005)

    def failures(self) -> list[tuple[float, str, int | str]]:
        return [r for r in self.results if r[2] != 200]


async def _readiness(http: aiohttp.ClientSession, bases: list[str]) -> list[tuple[str, object]]:
    """(``status``, ``store.synced``) of every replica's /readyz."""
    out: list[tuple[str, object]] = []
    for base in bases:
        status, _, body = await call(http, "GET", base + "/readyz")
        if isinstance(body, dict):
            out.append((str(body.get("status")), (body.get("store") or {}).get("synced")))
        else:
            out.append((str(status), None))
    return out


async def _wait_readiness(
    http: aiohttp.ClientSession, bases: list[str], wanted: tuple[str, bool | None], within: float
) -> float:
    """Seconds until every replica's /readyz says ``wanted``: (status, store in sync), where
    ``None`` accepts either."""
    start = time.monotonic()
    while time.monotonic() - start < within:
        got = await _readiness(http, bases)
        if all(s == wanted[0] and wanted[1] in (None, synced) for s, synced in got):
            return time.monotonic() - start
        await asyncio.sleep(0.02)
    raise AssertionError(f"/readyz not {wanted} within {within}s: {await _readiness(http, bases)}")


async def test_postgres_redis_killed_during_traffic_then_restarted(
    cluster: Cluster, record_testsuite_property: Callable[[str, object], None]
) -> None:
    redis_server = cluster.redis
    async with session() as http, session() as bg:
        traffic_token = (await login(http, cluster.a, "traffic"))["access_token"]
        down_token = (await login(http, cluster.b, "down"))["access_token"]
        down_sid = claims_of(down_token)["sid"]
        traffic = Traffic()
        killed_at = restarted_at = time.monotonic()
        runner = asyncio.create_task(traffic.run(bg, cluster.bases, traffic_token))
        try:
            await asyncio.sleep(0.5)
            assert traffic.results and not traffic.failures(), traffic.failures()

            # Redis vanishes (SIGKILL: no goodbye, and it held nothing on disk).
            redis_server.kill()
            killed_at = time.monotonic()
            degraded_after = await _wait_readiness(http, cluster.bases, ("degraded", None), 10)
            print(
                f"\n[redis] /readyz degraded on all replicas {degraded_after:.3f}s after the kill"
            )
            status, _, body = await call(http, "GET", cluster.b + "/readyz")
            assert status == 200 and body["checks"] == {"database": True, "store": False}, body

            # A logout while Redis is down reaches the other replicas through the database.
            probes = {
                label: wait_for_status(http, base + "/app/x", down_token, 401)
                for label, base in (("B", cluster.b), ("C", cluster.c))
            }

            async def logout() -> tuple[int, Any]:
                status, _, body = await call(
                    http, "POST", f"{cluster.a}{AUTH}/logout", token=down_token
                )
                return status, body

            (status, body), t0, _, hits = await measure(probes, logout)
            down_times = {name: hit - t0 for name, hit in hits.items()}
            report(record_testsuite_property, "logout_propagation_while_redis_down", down_times)
            # The database is the source of truth: the logout happened, and says so.
            assert status == 200, body
            assert max(down_times.values()) <= PROPAGATION_BUDGET, down_times
            for base in cluster.bases:
                assert (await call(http, "GET", f"{base}{AUTH}/me", token=down_token))[0] == 401

            # Keep Redis down long enough for traffic to hit every replica meanwhile.
            await asyncio.sleep(max(0.0, 1.5 - (time.monotonic() - killed_at)))
            # Redis comes back, empty, on the same port: every replica resyncs.
            redis_server.spawn()
            restarted_at = time.monotonic()
            for _ in range(100):
                if redis_server.ping():
                    break
                await asyncio.sleep(0.05)
            ready_after = await _wait_readiness(http, cluster.bases, ("ready", True), 10)
            print(
                f"[redis] down for {restarted_at - killed_at:.3f}s; /readyz ready on all "
                f"replicas {ready_after:.3f}s after the restart"
            )
            record_testsuite_property("redis_resync_seconds", round(ready_after, 3))
            assert ready_after <= 5.0

            # Nothing was lost: the revocation made while Redis was down is back in Redis
            # (replayed from the database), and still refused everywhere.
            client = redis.Redis(port=redis_server.port, socket_timeout=2)
            try:
                assert client.exists(f"{PREFIX}revoked:{down_sid}") == 1
            finally:
                client.close()
            for base in cluster.bases:
                assert (await call(http, "GET", f"{base}/app/x", token=down_token))[0] == 401

            # Logins work again, and a logout propagates through Redis within 1 s again.
            after_token = (await login(http, cluster.b, "after"))["access_token"]
            for base in cluster.bases:
                assert (await call(http, "GET", f"{base}/app/x", token=after_token))[0] == 200
            probes = {
                label: wait_for_status(http, base + "/app/x", after_token, 401)
                for label, base in (("B", cluster.b), ("C", cluster.c))
            }

            async def logout_after() -> int:
                return (await call(http, "POST", f"{cluster.a}{AUTH}/logout", token=after_token))[0]

            status_after, t0, _, hits = await measure(probes, logout_after)
            assert status_after == 200
            after_times = {name: hit - t0 for name, hit in hits.items()}
            report(record_testsuite_property, "logout_propagation_after_redis_restart", after_times)
            assert max(after_times.values()) <= PROPAGATION_BUDGET, after_times
        finally:
            traffic.stop.set()
            await asyncio.wait_for(runner, 15)
            if redis_server.proc is None or not redis_server.proc.alive():
                redis_server.start()  # leave the cluster with a Redis for whatever runs next

        failures = traffic.failures()
        during = [r for r in traffic.results if killed_at <= r[0] <= restarted_at]
        print(
            f"[redis] background traffic: {len(traffic.results)} proxied requests "
            f"({len(during)} while Redis was down), {len(failures)} failed"
        )
        record_testsuite_property("traffic_requests", len(traffic.results))
        record_testsuite_property("traffic_requests_while_redis_down", len(during))
        record_testsuite_property("traffic_failures", len(failures))
        # Fail open on the last known state: not one proxied request failed, before, during or
        # after the outage (the hot path never waits on Redis, so there is no transient to allow).
        assert failures == [], failures[:10]
        for base in cluster.bases:
            assert sum(1 for r in during if r[1] == base) >= 3, (base, len(during))
            assert sum(1 for r in traffic.results if r[1] == base and r[0] > restarted_at) >= 3


async def _follower_after_reset(redis_server: RedisServer) -> dict[str, object]:
    """A RedisStore following ``redis_server``; Redis killed, its port resetting connections
    for a second (accepted in this loop: the race always lands), then Redis back."""
    from auth.redis_store import RedisStore
    from config import RedisConfig

    store = RedisStore(RedisConfig(url=redis_server.url, key_prefix="gwfollow:"))
    await store.start()
    facts: dict[str, object] = {"synced_at_start": store.synced}
    task = store._task
    redis_server.kill()
    async with resets_in_this_loop(redis_server.port) as resets:
        await asyncio.sleep(1.0)
    facts["resets"] = resets[0]
    redis_server.spawn()
    for _ in range(100):
        if redis_server.ping():
            break
        await asyncio.sleep(0.05)
    for _ in range(100):  # up to 5 s
        if store.synced:
            break
        await asyncio.sleep(0.05)
    facts["synced_after_restart"] = store.synced
    client = redis.Redis(port=redis_server.port, socket_timeout=2)
    try:
        client.set("gwfollow:revoked:sid-1", b"1", ex=60)
        client.publish(
            "gwfollow:revocations", json.dumps({"sids": ["sid-1"], "until": time.time() + 60})
        )
    finally:
        client.close()
    for _ in range(50):  # up to 1 s
        if await store.is_session_revoked("sid-1"):
            break
        await asyncio.sleep(0.02)
    facts["heard_revocation"] = await store.is_session_revoked("sid-1")
    died = task is not None and task.done() and not task.cancelled()
    facts["follower_died_with"] = repr(task.exception()) if died and task else None
    try:
        await store.close()
    except Exception as exc:  # the dead follower's exception comes out of close()
        facts["close_raised"] = repr(exc)
    return facts


def test_postgres_replicas_redis_follower_survives_a_reset_on_reconnect(tmp_path: Path) -> None:
    """The root cause of the flapping failure below, made deterministic: RedisStore on uvloop
    (as ``gateway serve`` runs it) against a Redis whose port resets connections for a moment.
    (No PostgreSQL needed; named for the replica suite it belongs to.)"""
    if shutil.which("redis-server") is None:
        _unavailable("redis-server is not installed")
    group = ProcessGroup(tmp_path, tmp_path)
    try:
        redis_server = RedisServer(group, free_port())
        redis_server.start()
        facts = uvloop.run(_follower_after_reset(redis_server))
    finally:
        group.stop_all()
    print(f"\n[follower after reset] {facts}")
    assert facts["synced_at_start"] is True
    assert facts["follower_died_with"] is None, facts
    assert facts["synced_after_restart"] is True, facts
    assert facts["heard_revocation"] is True, facts


async def test_postgres_redis_flapping_then_back_every_replica_follows_redis_again(
    cluster: Cluster, record_testsuite_property: Callable[[str, object], None]
) -> None:
    """Redis killed, its port resetting every connection for a moment, then Redis back; a few
    times over. After each round every replica must resubscribe and resync (/readyz ready and
    in sync) and hear a revocation that only Redis knows.

    The failure is a race between the reset and redis-py's reconnect, so one round catches it
    only sometimes; the rounds make it near certain. Runs last: a replica whose follower died
    stays broken for the rest of the module.
    """
    redis_server = cluster.redis
    rounds: list[dict[str, float]] = []
    async with session() as http:
        for _ in range(FLAP_ROUNDS):
            token = (await login(http, cluster.a, "flap"))["access_token"]
            sid = claims_of(token)["sid"]
            redis_server.kill()
            # The port accepts connections and resets them (Redis restarting behind a TCP
            # proxy; also what a reconnect may meet at the instant Redis is killed).
            with ResetServer(redis_server.port):
                await asyncio.sleep(1.0)
            redis_server.spawn()
            for _ in range(100):
                if redis_server.ping():
                    break
                await asyncio.sleep(0.05)
            ready_after = await _wait_readiness(http, cluster.bases, ("ready", True), 4)
            for base in cluster.bases:
                assert (await call(http, "GET", f"{base}/app/x", token=token))[0] == 200

            # A revocation that only Redis knows (as a replica writes it: key + publish), so
            # the database feed cannot carry it: only a replica following Redis refuses it.
            client = redis.Redis(port=redis_server.port, socket_timeout=2)
            try:
                until = time.time() + 3600
                client.set(f"{PREFIX}revoked:{sid}", b"1", ex=3600)
                client.publish(f"{PREFIX}revocations", json.dumps({"sids": [sid], "until": until}))
                published = time.monotonic()
            finally:
                client.close()
            hits = await asyncio.gather(
                *(wait_for_status(http, f"{base}/app/x", token, 401) for base in cluster.bases)
            )
            rounds.append(
                {
                    "ready": ready_after,
                    **{k: h - published for k, h in zip("ABC", hits, strict=True)},
                }
            )
        report(record_testsuite_property, "redis_flapping_rounds", {
            f"{i} {k}": v for i, r in enumerate(rounds) for k, v in r.items()
        })  # fmt: skip
