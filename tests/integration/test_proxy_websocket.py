"""WebSocket upgrades through the proxy (SPEC §4): frames both ways, subprotocols, close codes,
and the same auth and header rules as plain requests."""

from __future__ import annotations

import asyncio
import base64
import os
import socket
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import WSMsgType, web
from aiohttp.test_utils import TestClient, TestServer

from tests.fixtures.factories import create_user, login
from tests.fixtures.upstream import upstream_base
from tests.integration.test_proxy_routing import assert_envelope, route

Client = TestClient[Any, Any]
StartGateway = Callable[..., Any]


def _handshake_headers() -> dict[str, str]:
    return {
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode(),
    }


class WsUpstream:
    """A WebSocket upstream that records handshakes and the close code it received."""

    def __init__(self) -> None:
        self.handshakes: list[dict[str, list[str]]] = []
        self.close_codes: list[int | None] = []
        self.closed = asyncio.Event()

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        headers: dict[str, list[str]] = {}
        for name, value in request.raw_headers:
            headers.setdefault(name.decode().lower(), []).append(value.decode())
        self.handshakes.append(headers)
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                await ws.send_str(msg.data.upper())
        self.close_codes.append(ws.close_code)
        self.closed.set()
        return ws


async def _ws_upstream(aiohttp_server: Callable[..., Any]) -> tuple[WsUpstream, TestServer]:
    upstream = WsUpstream()
    app = web.Application()
    app.router.add_get("/{tail:.*}", upstream.handle)
    server: TestServer = await aiohttp_server(app)
    return upstream, server


async def test_frames_relayed_both_ways(gateway_client: StartGateway, upstream: TestServer) -> None:
    client = await gateway_client(routes=[route("/", upstream_base(upstream))])
    async with client.ws_connect("/_/ws", protocols=("superchat",)) as ws:
        assert ws.protocol == "superchat"
        assert ws._response.headers["Server"] == "gateway"  # the 101 is the gateway's own
        await ws.send_str("hello")
        assert await ws.receive_str(timeout=5) == "echo: hello"
        await ws.send_str("ünïcødé ✓")
        assert await ws.receive_str(timeout=5) == "echo: ünïcødé ✓"
        await ws.send_bytes(b"\x00\x01\x02\xff")
        assert await ws.receive_bytes(timeout=5) == b"\xff\x02\x01\x00"
        big = os.urandom(1024 * 1024)
        await ws.send_bytes(big)
        assert await ws.receive_bytes(timeout=5) == big[::-1]


async def test_subprotocol_negotiated_by_the_upstream(
    gateway_client: StartGateway, upstream: TestServer
) -> None:
    client = await gateway_client(routes=[route("/", upstream_base(upstream))])
    async with client.ws_connect("/_/ws", protocols=("nope", "chat")) as ws:
        assert ws.protocol == "chat"
    async with client.ws_connect("/_/ws", protocols=("nope",)) as ws:
        assert ws.protocol is None
        await ws.send_str("x")
        assert await ws.receive_str(timeout=5) == "echo: x"


async def test_upstream_close_code_reaches_the_client(
    gateway_client: StartGateway, upstream: TestServer
) -> None:
    client = await gateway_client(routes=[route("/", upstream_base(upstream))])
    ws = await client.ws_connect("/_/ws")
    await ws.send_str("close 4001")
    msg = await ws.receive(timeout=5)
    assert msg.type == WSMsgType.CLOSE
    assert msg.data == 4001
    assert msg.extra == "bye"
    assert ws.close_code == 4001
    await ws.close()


async def test_client_close_code_reaches_the_upstream(
    gateway_client: StartGateway, aiohttp_server: Callable[..., Any]
) -> None:
    upstream, server = await _ws_upstream(aiohttp_server)
    client = await gateway_client(routes=[route("/", upstream_base(server))])
    ws = await client.ws_connect("/chat")
    await ws.send_str("hi")
    assert await ws.receive_str(timeout=5) == "HI"
    await ws.close(code=4002, message=b"done")
    await asyncio.wait_for(upstream.closed.wait(), 5)
    assert upstream.close_codes == [4002]


async def test_client_vanishing_closes_the_upstream(
    gateway_client: StartGateway, aiohttp_server: Callable[..., Any]
) -> None:
    """No close frame at all (the TCP connection just drops): the upstream is closed too."""
    upstream, server = await _ws_upstream(aiohttp_server)
    client = await gateway_client(routes=[route("/", upstream_base(server))])
    reader, writer = await asyncio.open_connection(client.host, client.port)
    request = "GET /chat HTTP/1.1\r\nHost: gw\r\n" + "".join(
        f"{k}: {v}\r\n" for k, v in _handshake_headers().items()
    )
    writer.write(request.encode() + b"\r\n")
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert head.startswith(b"HTTP/1.1 101")
    writer.transport.abort()
    await asyncio.wait_for(upstream.closed.wait(), 5)


async def test_websocket_needs_a_token_on_auth_required_routes(
    gateway_client: StartGateway, aiohttp_server: Callable[..., Any]
) -> None:
    upstream, server = await _ws_upstream(aiohttp_server)
    client = await gateway_client(routes=[route("/", upstream_base(server), auth="required")])
    user = await create_user(client)
    token = (await login(client))["access_token"]

    for headers in ({}, {"Authorization": "Bearer not-a-jwt"}):
        resp = await client.get("/chat", headers={**_handshake_headers(), **headers})
        assert resp.status == 401
        assert "Sec-WebSocket-Accept" not in resp.headers
        assert_envelope(await resp.json(), 401)
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await client.ws_connect("/chat")
    assert info.value.status == 401
    assert upstream.handshakes == []

    async with client.ws_connect(
        "/chat",
        headers={
            "Authorization": f"Bearer {token}",
            "X-User-Id": "999",
            "x_is_admin": "true",
            "X-Forwarded-For": "203.0.113.9",
        },
    ) as ws:
        await ws.send_str("ok")
        assert await ws.receive_str(timeout=5) == "OK"
    [seen] = upstream.handshakes
    assert seen["x-user-id"] == [str(user.id)]
    assert seen["x-is-admin"] == ["false"]
    assert "x_is_admin" not in seen
    assert seen["x-forwarded-for"] == ["203.0.113.9, 127.0.0.1"]
    assert seen["x-request-id"]


async def test_websocket_upstream_failures_are_envelopes(
    gateway_client: StartGateway, upstream: TestServer
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]
    client = await gateway_client(
        routes=[
            route("/down", f"http://127.0.0.1:{closed_port}"),
            route("/plain", upstream_base(upstream)),
        ]
    )
    # Nothing listening: 502. An upstream path that answers 200 instead of 101: 502 too.
    for path in ("/down/ws", "/plain/not-a-websocket"):
        resp = await client.get(path, headers=_handshake_headers())
        assert resp.status == 502, path
        assert_envelope(await resp.json(), 502)


async def test_websocket_handshake_slower_than_the_route_timeout_is_504(
    gateway_client: StartGateway, aiohttp_server: Callable[..., Any]
) -> None:
    async def slow_handshake(request: web.Request) -> web.WebSocketResponse:
        await asyncio.sleep(10)
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        return ws

    app = web.Application()
    app.router.add_get("/{tail:.*}", slow_handshake)
    server: TestServer = await aiohttp_server(app)
    client = await gateway_client(routes=[route("/", upstream_base(server), timeout="500ms")])
    resp = await asyncio.wait_for(client.get("/ws", headers=_handshake_headers()), 5)
    assert resp.status == 504
    assert_envelope(await resp.json(), 504)


async def test_websocket_handshake_redirect_is_not_followed(
    gateway_client: StartGateway, aiohttp_server: Callable[..., Any]
) -> None:
    """The gateway never connects where an upstream's Location points (identity headers and all)."""
    followed: list[str] = []

    async def redirect(request: web.Request) -> web.Response:
        raise web.HTTPFound("/elsewhere")

    async def elsewhere(request: web.Request) -> web.WebSocketResponse:
        followed.append(request.path)
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.close()
        return ws

    app = web.Application()
    app.router.add_get("/ws", redirect)
    app.router.add_get("/elsewhere", elsewhere)
    server: TestServer = await aiohttp_server(app)
    client = await gateway_client(routes=[route("/ws", upstream_base(server))])
    resp = await client.get("/ws", headers=_handshake_headers())
    assert resp.status in (302, 502)
    assert followed == []
