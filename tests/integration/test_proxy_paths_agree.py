"""The edge and aiohttp's path relay an upstream's answer the same way, header for header.

A proxied request is served by the edge, or, on a connection the edge has handed over, by
aiohttp's server (``gateway/edge/server.py``). Each case below is one raw upstream answer; the
same request goes through a gateway of each kind, and the status, every header (but ``Date``
and the generated ``X-Request-Id``) and the body must be the same. aiohttp prepares responses
its own way (it once added ``application/octet-stream``, and its own ``Server``), so this
compares whole answers rather than the headers a test thought of.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any, cast

import pytest
from aiohttp.test_utils import TestClient

from config import GatewayConfig
from gateway.app import create_app
from tests.fixtures.gateway import start_gateway
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


class _Scripted(asyncio.Protocol):
    """Answers ``/case/<name>`` with that case's raw answer."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while b"\r\n\r\n" in self.buffer:
            head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
            name = head.split(b" ", 2)[1].decode().rsplit("/", 1)[-1]
            _, lines, body, close = CASES[name]
            self.transport.write((CRLF.join(lines) + CRLF + CRLF).encode() + body)
            if close:
                self.transport.close()
                return


@pytest.fixture
async def scripted() -> AsyncIterator[str]:
    server = await asyncio.get_running_loop().create_server(_Scripted, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:
        server.close()


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
