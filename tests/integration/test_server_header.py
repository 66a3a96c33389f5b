"""``Server: gateway`` on every answer the gateway makes, on both paths (ASVS V14.3.3: no
version in response headers), an upstream's own ``Server`` passed on; no ``Content-Type`` added
to an upstream's answer that had none; and aiohttp's own answer to a head it cannot parse is an
envelope too.

aiohttp 3.14 sets its ``Server: Python/3.x aiohttp/3.y`` before the ``on_response_prepare``
hooks run, so the hooks alone no longer keep it out: these tests read every answer's headers.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from tests.fixtures.gateway import both_listeners  # noqa: F401  (edge and aiohttp)
from tests.fixtures.raw_upstream import serve_raw, target_of
from tests.fixtures.upstream import upstream_base
from tests.integration.test_edge import RawConnection, get
from tests.integration.test_proxy_routing import route

Client = TestClient[Any, Any]
StartGateway = Callable[..., Any]
NO_SERVER_ANSWER = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok"
UNTYPED_ANSWER = b"HTTP/1.1 200 OK\r\nServer: up/1\r\nContent-Length: 2\r\n\r\nok"


def _bare(head: bytes, body: bytes) -> tuple[bytes, bool]:
    """``NO_SERVER_ANSWER``, or ``UNTYPED_ANSWER`` for ``/untyped/…``."""
    untyped = target_of(head).startswith("/untyped")
    return (UNTYPED_ANSWER if untyped else NO_SERVER_ANSWER), False


@pytest.fixture
async def bare_upstream() -> AsyncIterator[str]:
    """The base URL of an upstream whose answers carry no ``Server``."""
    async with serve_raw(_bare) as url:
        yield url


@pytest.fixture
async def gateway(gateway_client: StartGateway, upstream: TestServer, bare_upstream: str) -> Client:
    client: Client = await gateway_client(
        cors={"allow_origins": ["http://app.test"]},
        routes=[
            route("/echo", upstream_base(upstream)),
            route("/bare", bare_upstream),
            route("/untyped", bare_upstream),
            route("/dead", "http://127.0.0.1:9"),
        ],
    )
    return client


def assert_no_versions(headers: Any) -> None:
    for name, value in headers.items():
        assert "aiohttp" not in value.lower() and "python" not in value.lower(), (name, value)


@pytest.mark.parametrize(
    ("method", "path", "headers", "status"),
    [
        ("GET", "/healthz", {}, 200),
        ("GET", "/api/v1/auth/me", {}, 401),
        ("POST", "/api/v1/auth/login", {"Content-Type": "application/json"}, 400),
        ("GET", "/nowhere", {}, 404),
        ("GET", "/bare/x", {}, 200),
        ("HEAD", "/bare/x", {}, 200),
        ("GET", "/dead/x", {}, 502),
        (
            "OPTIONS",
            "/echo/x",
            {"Origin": "http://app.test", "Access-Control-Request-Method": "PUT"},
            204,
        ),
        (
            "OPTIONS",
            "/echo/x",
            {"Origin": "http://evil.test", "Access-Control-Request-Method": "PUT"},
            403,
        ),
    ],
)
async def test_the_gateways_answers_name_it_without_versions(
    gateway: Client, method: str, path: str, headers: dict[str, str], status: int
) -> None:
    resp = await gateway.request(
        method, path, headers=headers, data=b"{" if status == 400 else None
    )
    assert resp.status == status, await resp.text()
    assert resp.headers["Server"] == "gateway"
    assert_no_versions(resp.headers)


async def test_no_content_type_is_added_to_an_upstreams_answer(gateway: Client) -> None:
    """aiohttp would add ``application/octet-stream`` (RFC 9110 §8.3: the upstream chose not to
    say); the edge relays the headers as they are, and the other path does the same."""
    resp = await gateway.get("/untyped/x")
    assert resp.status == 200
    assert await resp.read() == b"ok"
    assert "Content-Type" not in resp.headers
    assert resp.headers["Server"] == "up/1"


async def test_an_upstreams_own_server_is_passed_on(gateway: Client) -> None:
    resp = await gateway.get("/echo/x")
    assert resp.status == 200
    assert resp.headers["Server"].startswith("Python/")  # the echo upstream is aiohttp


@pytest.mark.parametrize("listener", ["edge"])
@pytest.mark.parametrize(
    "request_bytes",
    [
        pytest.param(b"GET /echo HTTP/1.1\r\nHost: g\r\nBad Header: 1\r\n\r\n", id="bad-name"),
        pytest.param(b"GET /echo HTTP/1.1\r\nHost: g\r\nX: a\rb\r\n\r\n", id="bare-cr"),
        pytest.param(b"GET /echo HTTP/1.1\r\nHost: g\r\n folded\r\n\r\n", id="obs-fold"),
        pytest.param(b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03\r\n\r\n", id="tls-hello"),
        pytest.param(get("/echo", "X-Big: " + "a" * 9000), id="field-too-long"),
        pytest.param(get("/echo", "Content-Length: abc"), id="bad-content-length"),
        pytest.param(
            get("/echo", "Content-Length: 3", "Transfer-Encoding: chunked") + b"0\r\n\r\n",
            id="length-and-chunked",
        ),
        pytest.param(b"GET /echo/\xc3\xa9 HTTP/1.1\r\nHost: g\r\n\r\n", id="raw-utf8-target"),
        pytest.param(b"GET * HTTP/1.1\r\nHost: g\r\n\r\n", id="asterisk-target"),
    ],
)
async def test_a_head_aiohttp_cannot_parse_gets_an_envelope(
    gateway: Client, listener: str, request_bytes: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    conn = await RawConnection.open(gateway)
    try:
        conn.send(request_bytes)
        status, headers, body = await conn.response()
        assert await conn.closed()
    finally:
        conn.close()
    assert status == 400
    assert conn.status_line == "HTTP/1.1 400 Bad Request"  # not aiohttp's placeholder 1.0
    assert headers["Connection"] == "close"
    assert headers["Server"] == "gateway"
    assert headers["X-Request-Id"]
    assert headers["Content-Type"] == "application/json; charset=utf-8"
    assert_no_versions(headers)
    assert b'"errors":["Validation failed","malformed HTTP request"]' in body
    # The client's error: one INFO line, no ERROR with a traceback per probe.
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    notes = [r.getMessage() for r in caplog.records if r.name == "gateway.edge.handover"]
    assert len(notes) == 1 and notes[0].startswith("malformed request from 127.0.0.1: "), notes
