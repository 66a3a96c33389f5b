"""``server.workers: N``: N processes share one port and one state through Redis."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
import yaml

from tests.fixtures.backends import REQUIRE_SERVICES
from tests.fixtures.gateway import TEST_SECRET
from tests.fixtures.processes import (
    ProcessGroup,
    RedisServer,
    clean_env,
    free_port,
    http_json,
    wait_until,
)

REPO = Path(__file__).resolve().parents[2]


def _children(pid: int) -> list[int]:
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            kids.append(int(stat.parent.name))
    return kids


def _write_config(path: Path, port: int, db: Path, redis_url: str | None, workers: int) -> None:
    path.write_text(
        yaml.safe_dump(
            {
                "server": {"port": port, "workers": workers, "access_log": False},
                "database": {"url": f"sqlite+aiosqlite:///{db}"},
                "redis": {"url": redis_url, "key_prefix": "workers-test:"},
                "jwt": {"secret": TEST_SECRET},
                "auth": {"password": {"bcrypt_cost": 4}},
            }
        )
    )


def test_more_workers_than_one_need_redis(tmp_path: Path) -> None:
    config = tmp_path / "gateway.yaml"
    _write_config(config, free_port(), tmp_path / "g.db", None, 2)
    group = ProcessGroup(tmp_path, tmp_path)
    env = clean_env(PYTHONPATH=str(REPO))
    proc = group.start(
        "serve", [sys.executable, "-m", "gateway", "serve", "--config", str(config)], env=env
    )
    try:
        assert proc.proc.wait(timeout=30) == 2
        assert "server.workers" in proc.output() and "redis.url" in proc.output()
    finally:
        group.stop_all()


@pytest.mark.skipif(
    shutil.which("redis-server") is None and not REQUIRE_SERVICES,
    reason="redis-server is not installed",
)
def test_two_workers_share_the_port_and_the_revocations(tmp_path: Path) -> None:
    group = ProcessGroup(tmp_path, tmp_path)
    env = clean_env(PYTHONPATH=str(REPO))
    try:
        redis = RedisServer(group, free_port())
        redis.start()
        port = free_port()
        config = tmp_path / "gateway.yaml"
        _write_config(config, port, tmp_path / "g.db", f"redis://127.0.0.1:{redis.port}/0", 2)
        create = group.start(
            "create",
            [
                sys.executable,
                "-m",
                "gateway",
                "users",
                "create",
                "--config",
                str(config),
                "--email",
                "w@example.com",
                "--password",
                "worker-pass-1",
                "--verified",
            ],
            env=env,
        )
        assert create.proc.wait(timeout=60) == 0, create.output()
        serve = group.start(
            "serve", [sys.executable, "-m", "gateway", "serve", "--config", str(config)], env=env
        )
        base = f"http://127.0.0.1:{port}"
        wait_until(lambda: http_json("GET", base + "/healthz")[0] == 200, 30, "healthz", serve)
        wait_until(
            lambda: sum(b"spawn_main" in _cmdline(p) for p in _children(serve.pid)) == 2,
            10,
            "two workers",
            serve,
        )
        spawned = [p for p in _children(serve.pid) if b"spawn_main" in _cmdline(p)]
        assert len(spawned) == 2, [_cmdline(p) for p in _children(serve.pid)]

        def login() -> str:
            status, _, body = http_json(
                "POST",
                base + "/api/v1/auth/login",
                {"email": "w@example.com", "password": "worker-pass-1"},
            )
            assert status == 200, body
            return str(body["access_token"])

        old = login()
        # Every new connection may land on either worker: all of them accept the token ...
        for _ in range(20):
            status, _, _ = http_json(
                "GET", base + "/api/v1/auth/me", headers={"Authorization": f"Bearer {old}"}
            )
            assert status == 200
        status, _, _ = http_json(
            "POST", base + "/api/v1/auth/logout", headers={"Authorization": f"Bearer {old}"}
        )
        assert status == 200
        # ... and after a logout on one of them, none accepts it.
        for _ in range(20):
            status, _, _ = http_json(
                "GET", base + "/api/v1/auth/me", headers={"Authorization": f"Bearer {old}"}
            )
            assert status == 401
        fresh = login()
        for _ in range(20):
            status, _, _ = http_json(
                "GET", base + "/api/v1/auth/me", headers={"Authorization": f"Bearer {fresh}"}
            )
            assert status == 200
        workers = _children(serve.pid)
        assert serve.stop(timeout=20) == 0, serve.output()
        wait_until(lambda: not [p for p in workers if _zombie_free(p)], 10, "every worker stopped")
    finally:
        assert group.stop_all() == []


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _zombie_free(pid: int) -> bool:
    """True when ``pid`` is still a running (not zombie) process."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"
