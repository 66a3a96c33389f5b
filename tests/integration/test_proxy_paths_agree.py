"""The edge and aiohttp's path relay an upstream's answer, and the client's request, the same
way, header for header.

A proxied request is served by the edge, or, on a connection the edge has handed over, by
aiohttp's server (``gateway/edge/server.py``). Each case below is one raw upstream answer; the
same request goes through a gateway of each kind, and the status, every header (but ``Date``
and the generated ``X-Request-Id``) and the body must be the same. aiohttp prepares responses
its own way (it once added ``application/octet-stream``, and its own ``Server``), so this
compares whole answers rather than the headers a test thought of.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from config import GatewayConfig
from gateway.app import create_app
from tests.fixtures.gateway import start_gateway
from tests.fixtures.raw_upstream import serve_raw, target_of
from tests.integration.test_proxy_routing import route

Client = TestClient[Any, Any]
CRLF = "\r\n"

# name -> (method, raw answer head lines, body, close after it)
CASES: dict[str, tuple[str, list[str], bytes, bool]] = {
    "nginx-like": (
        "GET",
        ["HTTP/1.1 200 OK", "Server: nginx/1.22.1", "Date: Sun, 22 Nov 2026 02:00:00 GMT",
         "Content-Type: text/plain", "Content-Length: 3", "Connection: keep-alive"],
        b"ok\n",
        False,
    ),
    "no-content-type": ("GET", ["HTTP/1.1 200 OK", "Content-Length: 2"], b"ok", False),
    "chunked": (
        "GET",
        ["HTTP/1.1 200 OK", "Content-Type: text/plain", "Transfer-Encoding: chunked"],
        b"5\r\nhello\r\n0\r\n\r\n",
        False,
    ),
    "close-delimited": (
        "GET", ["HTTP/1.1 200 OK", "Content-Type: text/plain", "Connection: close"], b"bye", True
    ),
    "no-content": ("GET", ["HTTP/1.1 204 No Content", "X-Thing: 1"], b"", False),
    "not-modified": (
        "GET", ["HTTP/1.1 304 Not Modified", 'ETag: "abc"', "Cache-Control: max-age=60"], b"",
        False,
    ),
    "not-found-json": (
        "GET",
        ["HTTP/1.1 404 Not Found", "Content-Type: application/json", "Content-Length: 13"],
        b'{"error":"x"}',
        False,
    ),
    "server-error": (
        "GET", ["HTTP/1.1 503 Service Unavailable", "Retry-After: 5", "Content-Length: 4"],
        b"down", False,
    ),
    "head": (
        "HEAD", ["HTTP/1.1 200 OK", "Content-Type: text/html", "Content-Length: 1234"], b"",
        False,
    ),
    "hop-by-hop-and-owned": (
        "GET",
        ["HTTP/1.1 200 OK", "Content-Length: 2", "Connection: keep-alive, X-Secret",
         "X-Secret: 1", "Keep-Alive: timeout=5", "Proxy-Connection: keep-alive",
         "Trailer: X-Sum", "Access-Control-Allow-Origin: *", "X-Request-Id: from-upstream",
         "Upgrade: h2c"],
        b"ok",
        False,
    ),
    "repeated-fields": (
        "GET",
        ["HTTP/1.1 201 Created", "Location: /things/1", "Set-Cookie: a=1; Path=/",
         "Set-Cookie: b=2; HttpOnly", "Vary: Accept", "Vary: Accept-Encoding",
         "Content-Length: 0"],
        b"",
        False,
    ),
    "custom-reason": ("GET", ["HTTP/1.1 200 Fine Thanks", "Content-Length: 2"], b"ok", False),
    "gzip": (
        "GET",
        ["HTTP/1.1 200 OK", "Content-Encoding: gzip", "Content-Type: text/plain",
         "Content-Length: 4"],
        b"\x1f\x8b\x08\x00",
        False,
    ),
}  # fmt: skip


def _scripted(head: bytes, body: bytes) -> tuple[bytes, bool]:
    """The raw answer of the case ``/case/<name>`` names."""
    _, lines, answer_body, close = CASES[target_of(head).rsplit("/", 1)[-1]]
    return (CRLF.join(lines) + CRLF + CRLF).encode() + answer_body, close


@pytest.fixture
async def scripted() -> AsyncIterator[str]:
    async with serve_raw(_scripted) as url:
        yield url


async def answer(
    client: Client, method: str, path: str, framed_by_length: bool
) -> tuple[int, str, list[tuple[str, str]], bytes]:
    """Status, reason, the headers (lower-case names, sorted; not ``Date``, not the generated
    ``X-Request-Id``) and the body of one answer. Each request asks to close, as the edge test
    client's connections do. How a body without a length is framed is each path's choice (the
    edge gives a length to a chunked body that is all there): framing headers count only when
    the upstream sent a ``Content-Length``."""
    skip = {"date", "x-request-id"}
    if not framed_by_length:
        skip |= {"content-length", "transfer-encoding"}
    async with client.request(
        method, path, headers={"Connection": "close"}, auto_decompress=False
    ) as resp:
        body = await resp.read()
        headers = sorted(
            (name.decode("latin-1").lower(), value.decode("latin-1"))
            for name, value in resp.raw_headers
            if name.decode("latin-1").lower() not in skip
        )
        return resp.status, resp.reason or "", headers, body


@pytest.mark.parametrize("case", sorted(CASES))
async def test_both_paths_relay_the_same_answer(
    aiohttp_client: Callable[..., Any],
    make_config: Callable[..., GatewayConfig],
    scripted: str,
    case: str,
) -> None:
    method, lines = CASES[case][:2]
    framed_by_length = any(line.lower().startswith("content-length:") for line in lines)
    answers = []
    for listener in ("edge", "aiohttp"):
        app = create_app(make_config(routes=[route("/case", scripted)]), migrate_embedded=False)
        client = await start_gateway(aiohttp_client, app, listener)
        answers.append(await answer(client, method, f"/case/{case}", framed_by_length))
    edge, other = answers
    assert edge == other
    assert edge[0] == int(lines[0].split()[1])


async def test_what_both_relay_of_hop_by_hop_and_owned_fields(
    aiohttp_client: Callable[..., Any],
    make_config: Callable[..., GatewayConfig],
    scripted: str,
) -> None:
    """The answer both paths agree on above is the right one: connection-scoped fields, the
    fields ``Connection`` names, the upstream's CORS and request id are gone."""
    app = create_app(make_config(routes=[route("/case", scripted)]), migrate_embedded=False)
    client = await start_gateway(aiohttp_client, app, "edge")
    _, _, headers, body = await answer(client, "GET", "/case/hop-by-hop-and-owned", True)
    assert headers == [("connection", "close"), ("content-length", "2"), ("server", "gateway")]
    assert body == b"ok"


# --- towards the upstream -----------------------------------------------------------------


REQUESTS: dict[str, tuple[str, list[tuple[str, str]], bytes]] = {
    "plain": ("GET", [], b""),
    "query": ("GET", [], b""),
    "forged-identity": (
        "GET",
        [("X-User-Id", "1"), ("x-is-admin", "true"), ("X_User_Id", "2"), ("x_is_admin", "1")],
        b"",
    ),
    "forwarded-chain": (
        "GET",
        [("X-Forwarded-For", "10.0.0.1, 10.0.0.2"), ("X-Forwarded-Proto", "https"),
         ("X-Forwarded-Host", "evil.test"), ("Forwarded", "for=1.2.3.4"), ("X-Real-IP", "1.1.1.1")],
        b"",
    ),
    "connection-named": (
        "GET", [("Connection", "close, X-Private"), ("X-Private", "1"), ("Keep-Alive", "9")], b""
    ),
    "hop-by-hop": (
        "GET", [("TE", "trailers"), ("Proxy-Authorization", "Basic eA=="), ("Trailer", "X")], b""
    ),
    "repeated-field": ("GET", [("Accept", "text/html"), ("Accept", "*/*")], b""),
    "post-body": ("POST", [("Content-Type", "application/json")], b'{"a":1}'),
    "request-id-kept": ("GET", [("X-Request-Id", "client-chosen-id")], b""),
    "cookies-and-case": ("GET", [("cookie", "a=1"), ("X-CUSTOM", "Value With  Spaces")], b""),
}  # fmt: skip


@pytest.fixture
async def recorder() -> AsyncIterator[tuple[str, list[bytes]]]:
    """An upstream that records each request (head and body) and answers 200 with nothing."""
    seen: list[bytes] = []

    def record(head: bytes, body: bytes) -> tuple[bytes, bool]:
        seen.append(head + b"\r\n\r\n" + body)
        return b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", False

    async with serve_raw(record) as url:
        yield url, seen


def _normalised(head: bytes) -> list[bytes]:
    """The request's lines, the generated request id and the gateway's port blanked."""
    lines = head.split(b"\r\n")
    out = []
    for line in lines:
        name = line.partition(b":")[0].lower()
        if name == b"x-request-id" and b"client-chosen-id" not in line:
            line = b"X-Request-Id: <generated>"
        if name in (b"x-forwarded-host",):
            line = line.rpartition(b":")[0] if line.count(b":") > 1 else line
        out.append(line)
    return out


@pytest.mark.parametrize("case", sorted(REQUESTS))
async def test_both_paths_send_the_upstream_the_same_request(
    aiohttp_client: Callable[..., Any],
    make_config: Callable[..., GatewayConfig],
    recorder: tuple[str, list[bytes]],
    case: str,
) -> None:
    base, seen = recorder
    method, fields, body = REQUESTS[case]
    for listener in ("edge", "aiohttp"):
        app = create_app(
            make_config(routes=[route("/in", base, preserve_host=True)]), migrate_embedded=False
        )
        client = await start_gateway(aiohttp_client, app, listener)
        headers = [("Connection", "close"), ("Host", "app.test"), *fields]
        async with client.request(
            method, "/in/x?b=2&a=1", headers=headers, data=body or None,
            skip_auto_headers=("User-Agent", "Accept-Encoding"),
        ) as resp:  # fmt: skip
            assert resp.status == 200
    assert len(seen) == 2
    edge, other = (_normalised(head) for head in seen)
    assert edge == other
    assert all(b"x-user-id" not in line.lower() for line in edge)
    assert all(
        b"_user_id" not in line.lower() and b"_is_admin" not in line.lower() for line in edge
    )


# --- the gateway's own answers on proxied routes ------------------------------------------


@pytest.mark.parametrize(
    ("case", "method", "path", "headers", "body"),
    [
        ("401-no-token", "GET", "/private/x", {}, b""),
        ("401-bad-token", "GET", "/private/x", {"Authorization": "Bearer not.a.jwt"}, b""),
        ("401-basic", "GET", "/private/x", {"Authorization": "Basic YTpi"}, b""),
        ("405-method", "DELETE", "/readonly/x", {}, b""),
        ("404-no-route", "GET", "/nowhere", {}, b""),
        ("502-refused", "GET", "/dead/x", {}, b""),
        ("413-too-large", "POST", "/open/x", {}, b"x" * 2048),
        ("cors-allowed", "GET", "/private/x", {"Origin": "http://app.test"}, b""),
        ("cors-foreign", "GET", "/private/x", {"Origin": "http://evil.test"}, b""),
    ],
)
async def test_both_paths_give_the_same_error_answers(
    aiohttp_client: Callable[..., Any],
    make_config: Callable[..., GatewayConfig],
    recorder: tuple[str, list[bytes]],
    case: str,
    method: str,
    path: str,
    headers: dict[str, str],
    body: bytes,
) -> None:
    base, _ = recorder
    routes = [
        route("/private", base, auth="required"),
        route("/readonly", base, methods=["GET"]),
        route("/open", base),
        route("/dead", "http://127.0.0.1:9"),
    ]
    answers = []
    for listener in ("edge", "aiohttp"):
        cfg = make_config(
            routes=routes,
            server={"max_body_size": 1024, "access_log": False},
            cors={"allow_origins": ["http://app.test"]},
        )
        client = await start_gateway(
            aiohttp_client, create_app(cfg, migrate_embedded=False), listener
        )
        async with client.request(
            method, path, headers={"Connection": "close", **headers}, data=body or None
        ) as resp:
            payload = await resp.json()
            payload.pop("timestamp")
            kept = sorted(
                (name.decode().lower(), value.decode())
                for name, value in resp.raw_headers
                if name.decode().lower() not in ("date", "x-request-id")
            )
            answers.append((resp.status, kept, payload))
    edge, other = answers
    assert edge == other
