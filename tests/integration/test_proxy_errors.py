"""When the upstream fails or the client goes away (SPEC §4): 502, 504, cut streams, and
cancellation of the upstream request when the client disconnects.

The gateway runs on aiohttp's ``TestServer``, which starts its runner with
``handler_cancellation=True`` (``aiohttp.test_utils.BaseTestServer.start_server``), exactly as
``gateway.server`` runs it in production (``web.run_app(..., handler_cancellation=True)``); the
upstreams here are ``TestServer`` apps too, so their handlers are cancelled when the gateway
closes its connection to them. ``aiohttp_client(app, server_kwargs=...)`` would not help: the
``TestServer`` constructor accepts and ignores extra keyword arguments.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from tests.fixtures.gateway import both_listeners  # noqa: F401  (edge and aiohttp)
from tests.fixtures.upstream import upstream_app, upstream_base
from tests.integration.test_proxy_routing import assert_envelope, route

StartGateway = Callable[..., Any]


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_unreachable_upstream_is_502(
    gateway_client: StartGateway, upstream: TestServer
) -> None:
    client = await gateway_client(
        routes=[
            route("/down", f"http://127.0.0.1:{_closed_port()}"),
            route("/up", upstream_base(upstream)),
        ]
    )
    for method, data in (("GET", None), ("POST", b"x" * 1000), ("DELETE", None)):
        resp = await client.request(method, "/down/x", data=data)
        assert resp.status == 502, method
        assert_envelope(await resp.json(), 502)
        assert resp.headers["X-Request-Id"]
    # The gateway is unharmed.
    assert (await client.get("/up/x")).status == 200


async def test_upstream_that_resets_the_connection_is_502(
    gateway_client: StartGateway,
) -> None:
    async def reset(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        sock = writer.get_extra_info("socket")
        # SO_LINGER 0: close with RST instead of FIN.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        writer.close()

    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"this is not HTTP\r\n\r\n")
        await writer.drain()
        writer.close()

    servers = [await asyncio.start_server(h, "127.0.0.1", 0) for h in (reset, garbage)]
    try:
        ports = [s.sockets[0].getsockname()[1] for s in servers]
        client = await gateway_client(
            routes=[
                route("/reset", f"http://127.0.0.1:{ports[0]}"),
                route("/garbage", f"http://127.0.0.1:{ports[1]}"),
            ]
        )
        for path in ("/reset/x", "/garbage/x"):
            resp = await client.get(path)
            assert resp.status == 502, path
            assert_envelope(await resp.json(), 502)
    finally:
        for server in servers:
            server.close()


async def test_slow_upstream_is_504(gateway_client: StartGateway, upstream: TestServer) -> None:
    client = await gateway_client(routes=[route("/", upstream_base(upstream), timeout="500ms")])
    started = time.monotonic()
    resp = await client.get("/_/slow?seconds=3")
    elapsed = time.monotonic() - started
    assert resp.status == 504
    assert_envelope(await resp.json(), 504)
    assert 0.4 < elapsed < 2, elapsed
    # Faster than the timeout: answered.
    resp = await client.get("/_/slow?seconds=0.1")
    assert resp.status == 200
    assert await resp.text() == "finally"


async def test_client_stalling_mid_body_is_408(
    gateway_client: StartGateway, upstream: TestServer
) -> None:
    client = await gateway_client(routes=[route("/", upstream_base(upstream), timeout="300ms")])
    reader, writer = await asyncio.open_connection(client.host, client.port)
    try:
        # Declares 100 bytes, sends 10, then nothing: the upstream connection is not held.
        writer.write(b"POST /upload HTTP/1.1\r\nHost: g\r\nContent-Length: 100\r\n\r\n0123456789")
        started = time.monotonic()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        elapsed = time.monotonic() - started
        length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
        body = await asyncio.wait_for(reader.readexactly(length), 5)
    finally:
        writer.close()
    assert head.startswith(b"HTTP/1.1 408 "), head
    assert_envelope(json.loads(body), 408)
    assert 0.25 < elapsed < 3, elapsed


async def test_upstream_stalling_mid_stream_cuts_the_response(
    gateway_client: StartGateway, upstream: TestServer
) -> None:
    """After the status line is sent, a timeout can only cut the connection, not end cleanly."""
    client = await gateway_client(routes=[route("/", upstream_base(upstream), timeout="300ms")])
    resp = await client.get("/_/sse?gap=2")
    assert resp.status == 200
    first = await resp.content.readuntil(b"\n\n")
    assert first == b"data: event 0\n\n"
    with pytest.raises(aiohttp.ClientPayloadError):
        await asyncio.wait_for(resp.content.read(), 3)


async def test_upstream_breaking_off_mid_body_cuts_the_response(
    gateway_client: StartGateway,
) -> None:
    async def short(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + b"x" * 100)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(short, "127.0.0.1", 0)
    try:
        port = server.sockets[0].getsockname()[1]
        client = await gateway_client(routes=[route("/", f"http://127.0.0.1:{port}")])
        resp = await client.get("/x")
        assert resp.status == 200
        with pytest.raises(aiohttp.ClientPayloadError):
            await asyncio.wait_for(resp.read(), 3)
    finally:
        server.close()


# --- a client that goes away cancels the upstream request ------------------------------------


class Watched:
    """An upstream whose handlers record whether they finished or were cancelled."""

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.cancelled = asyncio.Event()
        self.finished = False

    async def hang(self, request: web.Request) -> web.Response:
        self.started.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            self.cancelled.set()
            raise
        self.finished = True
        return web.Response(text="too late")

    async def stream(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        try:
            for i in range(600):
                await response.write(f"data: {i}\n\n".encode())
                self.started.set()
                await asyncio.sleep(0.05)
        except (asyncio.CancelledError, ConnectionResetError):
            self.cancelled.set()
            raise
        self.finished = True
        return response

    async def upload(self, request: web.Request) -> web.Response:
        try:
            async for _ in request.content.iter_any():
                self.started.set()
        except (asyncio.CancelledError, aiohttp.ClientPayloadError, ConnectionResetError):
            self.cancelled.set()
            raise
        self.finished = True
        return web.Response(text="complete")


async def _watched(
    gateway_client: StartGateway, aiohttp_server: Callable[..., Any]
) -> tuple[Watched, Any]:
    watched = Watched()
    app = web.Application()
    app.router.add_get("/hang", watched.hang)
    app.router.add_get("/stream", watched.stream)
    app.router.add_post("/upload", watched.upload)
    server: TestServer = await aiohttp_server(app)
    client = await gateway_client(routes=[route("/", upstream_base(server), timeout="60s")])
    return watched, client


async def test_client_disconnect_while_waiting_cancels_upstream(
    gateway_client: StartGateway, aiohttp_server: Callable[..., Any]
) -> None:
    watched, client = await _watched(gateway_client, aiohttp_server)
    _, writer = await asyncio.open_connection(client.host, client.port)
    writer.write(b"GET /hang HTTP/1.1\r\nHost: gw\r\n\r\n")
    await writer.drain()
    await asyncio.wait_for(watched.started.wait(), 5)
    writer.close()
    await asyncio.wait_for(watched.cancelled.wait(), 5)
    assert not watched.finished


async def test_client_disconnect_mid_response_cancels_upstream(
    gateway_client: StartGateway, aiohttp_server: Callable[..., Any]
) -> None:
    watched, client = await _watched(gateway_client, aiohttp_server)
    reader, writer = await asyncio.open_connection(client.host, client.port)
    writer.write(b"GET /stream HTTP/1.1\r\nHost: gw\r\n\r\n")
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"data: 0\n\n"), 5)
    assert head.startswith(b"HTTP/1.1 200")
    writer.close()
    await asyncio.wait_for(watched.cancelled.wait(), 5)
    assert not watched.finished


async def test_client_disconnect_mid_upload_cancels_upstream(
    gateway_client: StartGateway, aiohttp_server: Callable[..., Any]
) -> None:
    watched, client = await _watched(gateway_client, aiohttp_server)
    _, writer = await asyncio.open_connection(client.host, client.port)
    writer.write(
        b"POST /upload HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\n\r\n"
        + b"400\r\n"
        + b"u" * 1024
        + b"\r\n"
    )
    await writer.drain()
    await asyncio.wait_for(watched.started.wait(), 5)
    writer.close()
    await asyncio.wait_for(watched.cancelled.wait(), 5)
    assert not watched.finished


async def test_gateway_session_survives_failures(
    gateway_client: StartGateway, upstream: TestServer
) -> None:
    """Interleaved failures do not poison the pooled session."""
    base = upstream_base(upstream)
    client = await gateway_client(
        routes=[
            route("/ok", base),
            route("/slow", base, timeout="200ms", strip_prefix=True),
            route("/down", f"http://127.0.0.1:{_closed_port()}"),
        ]
    )

    async def body() -> AsyncIterator[bytes]:
        yield b"abc"

    for _ in range(3):
        assert (await client.get("/slow/_/slow?seconds=1")).status == 504
        assert (await client.get("/down/x")).status == 502
        resp = await client.post("/ok/x", data=body())
        assert resp.status == 200
        assert (await resp.json())["body_length"] == 3


async def test_upstream_closing_idle_connections_is_not_an_error(
    gateway_client: StartGateway, aiohttp_server: Callable[..., Any]
) -> None:
    """An upstream with a short keep-alive timeout closes pooled connections between requests;
    the next request (POST included, which is never retried) gets a fresh one."""
    server: TestServer = await aiohttp_server(upstream_app(), keepalive_timeout=0.1)
    client = await gateway_client(routes=[route("/", upstream_base(server))])
    for _ in range(3):
        resp = await client.post("/x", data=b"payload")
        assert resp.status == 200
        assert (await resp.json())["body_length"] == 7
        await asyncio.sleep(0.25)
