"""The real command line (SPEC §6), run as ``python -m gateway …`` subprocesses.

Every run starts in a temporary directory with an environment that holds no ``GATEWAY_*``
variable, so the developer's shell cannot leak into the results.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from config import load_config
from gateway.app import create_app
from tests.fixtures.backends import PG_URL, REQUIRE_SERVICES
from tests.fixtures.keys import new_key, write_private

REPO = Path(__file__).resolve().parents[2]
AUTH = "/api/v1/auth"
SECRET_40 = "0123456789abcdefghij0123456789ABCDEFGHIJ"
TABLES = {
    "users",
    "auth_sessions",
    "refresh_tokens",
    "one_time_tokens",
    "revoked_session_tombstones",
    "alembic_version",
}
MASK = "********"
CLI_TIMEOUT = 90
SERVE_TIMEOUT = 20.0
_KEPT_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "SYSTEMROOT")


def clean_env(**extra: str) -> dict[str, str]:
    """PATH and locale only (no GATEWAY_*), plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if k in _KEPT_ENV}
    env.update(extra)
    return env


def run_cli(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``python -m gateway <args>`` to completion."""
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        cwd=cwd,
        env=clean_env() if env is None else env,
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT,
        check=False,
    )


def write_config(path: Path, raw: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(raw, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return path


def sqlite_config(tmp: Path, db: Path, **sections: Any) -> Path:
    """A config file on the SQLite file ``db``: log mail, cheap bcrypt, no secret."""
    raw: dict[str, Any] = {
        "database": {"url": f"sqlite+aiosqlite:///{db}"},
        "auth": {"password": {"bcrypt_cost": 4}},
        "email": {"backend": "log"},
    }
    raw.update(sections)
    return write_config(tmp / "gateway.yaml", raw)


def sqlite_tables(db: Path) -> set[str]:
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
    return {str(name) for (name,) in rows}


def sqlite_rows(db: Path, query: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(db) as conn:
        return list(conn.execute(query).fetchall())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


# --- check-config --------------------------------------------------------------------------


def test_check_config_repo_file_masks_secret(tmp_path: Path) -> None:
    result = run_cli(
        "check-config",
        "--config",
        str(REPO / "gateway.yaml"),
        cwd=tmp_path,
        env=clean_env(GATEWAY_JWT_SECRET=SECRET_40),
    )
    assert result.returncode == 0, result.stderr
    assert SECRET_40 not in result.stdout
    assert SECRET_40 not in result.stderr
    effective = yaml.safe_load(result.stdout)
    assert isinstance(effective, dict)
    assert effective["jwt"]["secret"] == MASK
    assert MASK in result.stdout
    assert effective["server"]["port"] == 8080
    assert effective["database"]["url"].startswith("sqlite+aiosqlite://")
    assert effective["cors"]["allow_origins"] == ["http://localhost:8080"]
    assert [route["name"] for route in effective["routes"]] == ["orders"]
    # check-config validates only: nothing is created in the working directory.
    assert list(tmp_path.iterdir()) == []


def test_check_config_without_secret_on_sqlite(tmp_path: Path) -> None:
    """The repo's example runs on the embedded defaults: no secret needed with SQLite."""
    result = run_cli("check-config", "--config", str(REPO / "gateway.yaml"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert yaml.safe_load(result.stdout)["jwt"]["secret"] is None


def test_check_config_masks_every_secret(tmp_path: Path) -> None:
    env = clean_env(
        GATEWAY_JWT_SECRET=SECRET_40,
        GATEWAY_DATABASE_URL="postgresql+asyncpg://gw:db-pass-1234@db.internal:5432/gw",
        GATEWAY_REDIS_URL="redis://:redis-pass-5678@cache.internal:6379/0",
        GATEWAY_SMTP_PASSWORD="smtp-pass-9012",
        GATEWAY_SMTP_USERNAME="mailer",
    )
    result = run_cli("check-config", "--config", str(REPO / "gateway.yaml"), cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    for secret in (SECRET_40, "db-pass-1234", "redis-pass-5678", "smtp-pass-9012"):
        assert secret not in result.stdout
        assert secret not in result.stderr
    effective = yaml.safe_load(result.stdout)
    assert effective["database"]["url"] == f"postgresql+asyncpg://gw:{MASK}@db.internal:5432/gw"
    assert effective["email"]["smtp"]["password"] == MASK
    assert effective["email"]["smtp"]["username"] == "mailer"


def test_check_config_broken_file(tmp_path: Path) -> None:
    config = tmp_path / "broken.yaml"
    config.write_text(
        "server:\n  port: not-a-port\n  bogus_key: 1\n"
        "routes:\n  - {name: x, prefix: /x, upstream: 'http://127.0.0.1:1', timeout: [1]}\n",
        encoding="utf-8",
    )
    result = run_cli("check-config", "--config", str(config), cwd=tmp_path)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "server.bogus_key" in result.stderr
    assert "server.port" in result.stderr
    assert "routes[0].timeout" in result.stderr
    assert result.stdout == ""


@pytest.mark.parametrize(
    "content",
    ["server: [unclosed\n", "- just\n- a list\n", "server:\n  port: 8080\n\tbad: tab\n"],
    ids=["bad-yaml", "not-a-mapping", "tab"],
)
def test_check_config_unreadable_yaml(tmp_path: Path, content: str) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text(content, encoding="utf-8")
    result = run_cli("check-config", "--config", str(config), cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "gateway.yaml" in result.stderr
    assert "Traceback" not in result.stderr


def test_check_config_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "gateway.yaml"
    result = run_cli("check-config", "--config", str(missing), cwd=tmp_path)
    assert result.returncode == 2
    assert str(missing) in result.stderr
    assert "Traceback" not in result.stderr


def test_check_config_default_path_is_cwd_gateway_yaml(tmp_path: Path) -> None:
    """Without --config: ./gateway.yaml of the working directory."""
    result = run_cli("check-config", cwd=tmp_path)
    assert result.returncode == 2
    assert "gateway.yaml" in result.stderr
    sqlite_config(tmp_path, tmp_path / "gw.db", server={"port": 18080})
    result = run_cli("check-config", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert yaml.safe_load(result.stdout)["server"]["port"] == 18080


# --- secrets policy ------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["check-config", "serve", "users"])
def test_postgres_without_secret_is_refused(tmp_path: Path, command: str) -> None:
    config = write_config(
        tmp_path / "gateway.yaml",
        {
            "server": {"port": free_port()},
            "database": {"url": "postgresql+asyncpg://postgres@127.0.0.1:5432/never_used"},
        },
    )
    args = [command]
    if command == "users":
        args = ["users", "create", "--email", "a@example.com", "--password", "secret123"]
    result = run_cli(*args, "--config", str(config), cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert result.stderr == (
        f"invalid configuration in {config}:\n  - jwt.secret: required with PostgreSQL (set "
        "GATEWAY_JWT_SECRET to at least 32 random bytes); only the embedded database generates "
        "one\n"
    )


@pytest.mark.parametrize("command", ["check-config", "serve", "migrate"])
@pytest.mark.parametrize(
    "secret",
    ["t1ny-s3cr3t", "x" * 31, "ğ" * 15 + "x"],  # the last is 31 bytes of UTF-8
    ids=["5-bytes", "31-bytes", "31-bytes-utf8"],
)
def test_short_secret_is_refused(tmp_path: Path, command: str, secret: str) -> None:
    config = sqlite_config(tmp_path, tmp_path / "gw.db", server={"port": free_port()})
    result = run_cli(
        command, "--config", str(config), cwd=tmp_path, env=clean_env(GATEWAY_JWT_SECRET=secret)
    )
    assert result.returncode != 0
    assert "jwt.secret" in result.stderr
    assert "32" in result.stderr
    assert secret not in result.stderr and secret not in result.stdout
    assert not (tmp_path / "gw.db").exists()


def test_short_secret_in_yaml_is_refused(tmp_path: Path) -> None:
    config = sqlite_config(tmp_path, tmp_path / "gw.db", jwt={"secret": "too-short"})
    result = run_cli("check-config", "--config", str(config), cwd=tmp_path)
    assert result.returncode == 2
    assert "jwt.secret" in result.stderr


@pytest.mark.parametrize("command", ["check-config", "serve"])
def test_unusable_private_key_is_refused(tmp_path: Path, command: str) -> None:
    key = write_private(tmp_path, "signing", new_key("p256"))  # an EC key, for RS256
    config = sqlite_config(
        tmp_path,
        tmp_path / "gw.db",
        server={"port": free_port()},
        jwt={"algorithm": "RS256", "private_key_file": key},
    )
    result = run_cli(command, "--config", str(config), cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert result.stderr == (
        f"invalid configuration in {config}:\n"
        f"  - jwt.private_key_file: {key} is not an RSA key (RS256 needs one)\n"
    )
    assert not (tmp_path / "gw.db").exists()


def test_check_config_with_a_key_pair(tmp_path: Path) -> None:
    key = write_private(tmp_path, "signing", new_key("ed25519"))
    config = sqlite_config(
        tmp_path, tmp_path / "gw.db", jwt={"algorithm": "EdDSA", "private_key_file": key}
    )
    result = run_cli("check-config", "--config", str(config), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert yaml.safe_load(result.stdout)["jwt"]["private_key_file"] == key
    assert "PRIVATE KEY" not in result.stdout
    assert not list(tmp_path.glob("*.jwt-secret"))


@pytest.mark.parametrize("secret", ["x" * 32, "ğ" * 16], ids=["32-ascii", "32-bytes-utf8"])
def test_32_byte_secret_is_accepted(tmp_path: Path, secret: str) -> None:
    config = sqlite_config(tmp_path, tmp_path / "gw.db")
    result = run_cli(
        "check-config", "--config", str(config), cwd=tmp_path,
        env=clean_env(GATEWAY_JWT_SECRET=secret),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr


# --- migrate -------------------------------------------------------------------------------


def test_migrate_fresh_sqlite_then_noop(tmp_path: Path) -> None:
    db = tmp_path / "data" / "nested" / "gw.db"  # the directory does not exist yet
    config = sqlite_config(tmp_path, db)
    result = run_cli("migrate", "--config", str(config), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert TABLES <= sqlite_tables(db)
    versions = sqlite_rows(db, "SELECT version_num FROM alembic_version")
    assert len(versions) == 1

    created = run_cli(
        "users", "create", "--email", "keep@example.com", "--password", "secret123",
        "--config", str(config), cwd=tmp_path,
    )  # fmt: skip
    assert created.returncode == 0, created.stderr

    again = run_cli("migrate", "--config", str(config), cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert sqlite_rows(db, "SELECT version_num FROM alembic_version") == versions
    assert sqlite_rows(db, "SELECT email FROM users") == [("keep@example.com",)]


def test_migrate_unreachable_postgres_fails_cleanly(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    config = write_config(
        tmp_path / "gateway.yaml",
        {
            "database": {"url": f"postgresql+asyncpg://u:pw-9f8e7d@127.0.0.1:{port}/x"},
            "jwt": {"secret": SECRET_40},
        },
    )
    result = run_cli("migrate", "--config", str(config), cwd=tmp_path)
    assert result.returncode != 0
    assert "pw-9f8e7d" not in result.stderr and "pw-9f8e7d" not in result.stdout
    assert "Traceback" not in result.stderr


async def _pg_admin(url: str, *statements: str) -> None:
    engine = create_async_engine(url, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            for statement in statements:
                await conn.execute(text(statement))
    finally:
        await engine.dispose()


async def _pg_query(url: str, query: str) -> list[tuple[Any, ...]]:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            return [tuple(row) for row in (await conn.execute(text(query))).all()]
    finally:
        await engine.dispose()


@pytest.fixture
def pg_database() -> Iterator[str]:
    """A database of its own (never the shared ``test`` one): created, and dropped after."""
    host = make_url(PG_URL).host or "127.0.0.1"
    port = make_url(PG_URL).port or 5432
    if not answers(host, port):
        if REQUIRE_SERVICES:
            pytest.fail(f"PostgreSQL is not answering on {host}:{port} (services required)")
        pytest.skip(f"PostgreSQL is not answering on {host}:{port}")
    # A random suffix: concurrent runs of this test never share (or drop) each other's database.
    name = f"gateway_cli_test_{uuid.uuid4().hex[:8]}"
    asyncio.run(_pg_admin(PG_URL, f'DROP DATABASE IF EXISTS "{name}"', f'CREATE DATABASE "{name}"'))
    url = make_url(PG_URL).set(database=name).render_as_string(hide_password=False)
    try:
        yield url
    finally:
        asyncio.run(_pg_admin(PG_URL, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def test_migrate_postgres_then_noop(tmp_path: Path, pg_database: str) -> None:
    config = write_config(
        tmp_path / "gateway.yaml",
        {"database": {"url": pg_database}, "auth": {"password": {"bcrypt_cost": 4}}},
    )
    env = clean_env(GATEWAY_JWT_SECRET=SECRET_40)
    # The migration job needs no signing secret (least privilege); the gateway does.
    result = run_cli("migrate", "--config", str(config), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    tables = {
        row[0]
        for row in asyncio.run(
            _pg_query(
                pg_database,
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'",
            )
        )
    }
    assert tables >= TABLES
    versions = asyncio.run(_pg_query(pg_database, "SELECT version_num FROM alembic_version"))
    assert len(versions) == 1

    created = run_cli(
        "users", "create", "--email", "pg@example.com", "--password", "secret123", "--admin",
        "--config", str(config), cwd=tmp_path, env=env,
    )  # fmt: skip
    assert created.returncode == 0, created.stderr

    again = run_cli("migrate", "--config", str(config), cwd=tmp_path, env=env)
    assert again.returncode == 0, again.stderr
    assert asyncio.run(_pg_query(pg_database, "SELECT version_num FROM alembic_version")) == (
        versions
    )
    users = asyncio.run(_pg_query(pg_database, "SELECT email, is_admin FROM users"))
    assert users == [("pg@example.com", True)]
    # No secret file is written for PostgreSQL, in the working directory or anywhere near it.
    assert not list(tmp_path.glob("*.jwt-secret"))


# --- users create --------------------------------------------------------------------------


async def test_users_create_admin_then_login(
    tmp_path: Path, aiohttp_client: Callable[..., Any]
) -> None:
    db = tmp_path / "gw.db"
    config = sqlite_config(tmp_path, db)
    args = [
        "users", "create",
        "--email", "Beyhan@Beyhan.dev",
        "--password", "1923btO**",
        "--admin", "--verified",
        "--first-name", "Beyhan",
        "--last-name", "Oğur",
        "--username", "Beyhan Oğur",
        "--config", str(config),
    ]  # fmt: skip
    result = await asyncio.to_thread(run_cli, *args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Beyhan@Beyhan.dev" in result.stdout or "beyhan@beyhan.dev" in result.stdout
    assert "1923btO**" not in result.stdout + result.stderr

    cfg = load_config(config, env={})
    client = await aiohttp_client(create_app(cfg))
    resp = await client.post(
        f"{AUTH}/login", json={"email": "beyhan@beyhan.dev", "password": "1923btO**"}
    )
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert body["user"]["is_admin"] is True
    assert body["user"]["first_name"] == "Beyhan"
    assert body["user"]["last_name"] == "Oğur"
    assert body["user"]["username"] == "Beyhan Oğur"
    resp = await client.get(
        f"{AUTH}/me", headers={"Authorization": f"Bearer {body['access_token']}"}
    )
    assert resp.status == 200
    assert (await resp.json())["user"]["is_admin"] is True


async def test_users_create_defaults_plain_unverified(
    tmp_path: Path, aiohttp_client: Callable[..., Any]
) -> None:
    """Without --admin/--verified: a normal user who must verify the email before login."""
    db = tmp_path / "gw.db"
    config = sqlite_config(tmp_path, db)
    args = ["users", "create", "--email", "plain@example.com", "--password", "secret123"]
    result = await asyncio.to_thread(run_cli, *args, "--config", str(config), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    rows = sqlite_rows(db, "SELECT is_admin, email_verified, username FROM users")
    assert rows == [(0, 0, "plain@example.com")]
    client = await aiohttp_client(create_app(load_config(config, env={})))
    resp = await client.post(
        f"{AUTH}/login", json={"email": "plain@example.com", "password": "secret123"}
    )
    assert resp.status == 403
    assert "email not verified" in (await resp.json())["errors"]


@pytest.mark.parametrize(
    "second_email", ["dup@example.com", "DUP@Example.COM"], ids=["same", "other-case"]
)
def test_users_create_duplicate_email(tmp_path: Path, second_email: str) -> None:
    db = tmp_path / "gw.db"
    config = sqlite_config(tmp_path, db)
    first = run_cli(
        "users", "create", "--email", "dup@example.com", "--password", "secret123",
        "--username", "first", "--config", str(config), cwd=tmp_path,
    )  # fmt: skip
    assert first.returncode == 0, first.stderr
    second = run_cli(
        "users", "create", "--email", second_email, "--password", "other-secret",
        "--username", "second", "--config", str(config), cwd=tmp_path,
    )  # fmt: skip
    assert second.returncode != 0
    assert "already registered" in second.stderr
    assert "Traceback" not in second.stderr
    assert sqlite_rows(db, "SELECT count(*) FROM users") == [(1,)]


def test_users_create_duplicate_username(tmp_path: Path) -> None:
    db = tmp_path / "gw.db"
    config = sqlite_config(tmp_path, db)
    for i, expected_ok in ((1, True), (2, False)):
        result = run_cli(
            "users", "create", "--email", f"u{i}@example.com", "--password", "secret123",
            "--username", "Beyhan Oğur", "--config", str(config), cwd=tmp_path,
        )  # fmt: skip
        assert (result.returncode == 0) is expected_ok, result.stderr
    assert "username" in result.stderr and "taken" in result.stderr


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        (["--email", "not-an-email", "--password", "secret123"], "email"),
        (["--email", "a@b", "--password", "secret123"], "email"),
        (["--email", "ok@example.com", "--password", "short"], "password"),
        (["--email", "ok@example.com", "--password", "secret123", "--username", " "], "username"),
    ],
    ids=["no-at", "no-dot", "short-password", "blank-username"],
)
def test_users_create_invalid_input(tmp_path: Path, extra: list[str], field: str) -> None:
    db = tmp_path / "gw.db"
    config = sqlite_config(tmp_path, db)
    result = run_cli("users", "create", *extra, "--config", str(config), cwd=tmp_path)
    assert result.returncode != 0
    assert f"{field}:" in result.stderr
    assert "Traceback" not in result.stderr
    if db.exists():
        assert sqlite_rows(db, "SELECT count(*) FROM users") == [(0,)]


def test_users_create_requires_email_and_password(tmp_path: Path) -> None:
    config = sqlite_config(tmp_path, tmp_path / "gw.db")
    args = ["users", "create", "--email", "x@example.com", "--config", str(config)]
    result = run_cli(*args, cwd=tmp_path)
    assert result.returncode != 0
    assert "--password" in result.stderr


# --- serve ---------------------------------------------------------------------------------


def http(
    method: str, url: str, body: dict[str, Any] | None = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    """One request with the standard library; 4xx/5xx are returned, not raised."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers=dict(headers or {}))
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=5) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


class Served:
    """``python -m gateway serve`` in the background, with its output in files."""

    def __init__(self, config: Path, cwd: Path, port: int, env: dict[str, str] | None = None):
        self.base = f"http://127.0.0.1:{port}"
        self.out = cwd / f"serve-{uuid.uuid4().hex[:6]}.out"
        self.err = self.out.with_suffix(".err")
        with self.out.open("wb") as out, self.err.open("wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "gateway", "serve", "--config", str(config)],
                cwd=cwd,
                env=clean_env() if env is None else env,
                stdout=out,
                stderr=err,
            )

    def stderr(self) -> str:
        return self.err.read_text(encoding="utf-8", errors="replace")

    def wait_healthy(self, timeout: float = SERVE_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"serve exited with {self.proc.returncode}: {self.stderr()}")
            try:
                status, _, _ = http("GET", self.base + "/healthz")
                if status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"/healthz did not answer 200 within {timeout}s: {self.stderr()}")

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM and wait; returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)
            raise AssertionError(f"serve ignored SIGTERM for {timeout}s: {self.stderr()}") from None

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=5)


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., Served]]:
    """Start gateways; any still running at the end of the test is killed."""
    started: list[Served] = []

    def start(config: Path, port: int, env: dict[str, str] | None = None) -> Served:
        served = Served(config, tmp_path, port, env)
        started.append(served)
        return served

    yield start
    for served in started:
        served.kill()


def test_serve_answers_and_stops_on_sigterm(tmp_path: Path, serve: Callable[..., Served]) -> None:
    port = free_port()
    db = tmp_path / "gw.db"
    config = sqlite_config(tmp_path, db, server={"host": "127.0.0.1", "port": port})
    served = serve(config, port)
    served.wait_healthy()

    status, headers, body = http("GET", served.base + "/healthz")
    assert status == 200 and json.loads(body) == {"status": "ok"}
    status, headers, body = http("GET", served.base + "/no/such/path")
    assert status == 404
    envelope = json.loads(body)
    assert envelope["isSuccess"] is False and envelope["statusCode"] == 404
    assert envelope["errors"][0] == "Resource not found"
    assert headers.get("X-Request-Id")
    status, _, body = http("GET", served.base + "/readyz")
    assert status == 200, body
    # serve migrated the embedded database on start.
    assert TABLES <= sqlite_tables(db)

    assert served.stop() == 0
    assert not answers("127.0.0.1", port)


def test_serve_generates_and_reuses_secret(tmp_path: Path, serve: Callable[..., Served]) -> None:
    port = free_port()
    db = tmp_path / "gw.db"
    secret_file = tmp_path / "gw.db.jwt-secret"
    config = sqlite_config(tmp_path, db, server={"host": "127.0.0.1", "port": port})

    first = serve(config, port)
    first.wait_healthy()
    assert first.stop() == 0
    assert secret_file.exists()
    assert secret_file.stat().st_mode & 0o777 == 0o600
    secret = secret_file.read_text(encoding="ascii").strip()
    assert len(secret.encode()) >= 32
    assert secret not in first.stderr()

    created = run_cli(
        "users", "create", "--email", "restart@example.com", "--password", "secret123",
        "--verified", "--config", str(config), cwd=tmp_path,
    )  # fmt: skip
    assert created.returncode == 0, created.stderr

    second = serve(config, port)
    second.wait_healthy()
    status, _, body = http(
        "POST",
        second.base + f"{AUTH}/login",
        {"email": "restart@example.com", "password": "secret123"},
    )
    assert status == 200, body
    tokens = json.loads(body)
    assert second.stop() == 0

    third = serve(config, port)
    third.wait_healthy()
    status, _, body = http(
        "GET",
        third.base + f"{AUTH}/me",
        headers={"Authorization": f"Bearer {tokens['access_token']}"},
    )
    assert status == 200, body
    assert json.loads(body)["user"]["email"] == "restart@example.com"
    status, _, body = http(
        "POST", third.base + f"{AUTH}/refresh", {"refresh_token": tokens["refresh_token"]}
    )
    assert status == 200, body
    assert third.stop() == 0
    assert secret_file.read_text(encoding="ascii").strip() == secret
    assert secret_file.stat().st_mode & 0o777 == 0o600


def test_serve_with_configured_secret_writes_no_secret_file(
    tmp_path: Path, serve: Callable[..., Served]
) -> None:
    port = free_port()
    db = tmp_path / "gw.db"
    config = sqlite_config(tmp_path, db, server={"host": "127.0.0.1", "port": port})
    served = serve(config, port, clean_env(GATEWAY_JWT_SECRET=SECRET_40))
    served.wait_healthy()
    assert served.stop() == 0
    assert not (tmp_path / "gw.db.jwt-secret").exists()
    assert SECRET_40 not in served.stderr()


def test_serve_port_from_environment(tmp_path: Path, serve: Callable[..., Served]) -> None:
    """GATEWAY_PORT overrides server.port."""
    port = free_port()
    config = sqlite_config(tmp_path, tmp_path / "gw.db", server={"port": 1})
    served = serve(config, port, clean_env(GATEWAY_PORT=str(port)))
    served.wait_healthy()
    assert served.stop() == 0


def test_serve_broken_config_exits_without_listening(
    tmp_path: Path, serve: Callable[..., Served]
) -> None:
    port = free_port()
    config = sqlite_config(
        tmp_path, tmp_path / "gw.db", server={"port": port, "max_body_size": "lots"}
    )
    served = serve(config, port)
    assert served.proc.wait(timeout=CLI_TIMEOUT) == 2
    assert "server.max_body_size" in served.stderr()
    assert not (tmp_path / "gw.db").exists()
