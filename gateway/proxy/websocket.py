"""WebSocket upgrades relayed both ways, close codes included."""

from __future__ import annotations

import asyncio
import binascii
import logging
from base64 import b64decode

import aiohttp
from aiohttp import ClientRequest, WSMsgType, web
from aiohttp.client_middlewares import ClientHandlerType
from multidict import CIMultiDict
from yarl import URL

from gateway.errors import BadGateway, BadRequest, GatewayTimeout
from gateway.middlewares.request_id import SERVER_NAME

_LOGGER = logging.getLogger(__name__)
_WS_HANDSHAKE = frozenset(
    {
        "sec-websocket-key",
        "sec-websocket-version",
        "sec-websocket-extensions",
        "sec-websocket-protocol",
        "content-length",
    }
)


_WS_VERSIONS = ("13", "8", "7")
"""What aiohttp's server side accepts in ``Sec-WebSocket-Version`` (RFC 6455: 13)."""


def check_client_handshake(request: web.Request) -> None:
    """``BadRequest`` naming what is wrong with a client's WebSocket handshake.

    Checked before the upstream is contacted: aiohttp checks the same when it answers the
    client, but only after the upstream WebSocket is open — which a broken handshake must not
    cause (the upstream would see a connection, identity headers and all, for nothing).
    """
    if request.headers.get("Sec-WebSocket-Version", "") not in _WS_VERSIONS:
        # RFC 6455 §4.4: say which version the server speaks.
        raise BadRequest(
            "Sec-WebSocket-Version: 13 is required", headers={"Sec-WebSocket-Version": "13"}
        )
    keys = request.headers.getall("Sec-WebSocket-Key", [])
    try:  # (exactly one key: a second copy is no key at all)
        valid = len(keys) == 1 and len(b64decode(keys[0].encode("ascii"), validate=True)) == 16
    except (UnicodeEncodeError, binascii.Error):
        valid = False
    if not valid:
        raise BadRequest("Sec-WebSocket-Key: not the base64 of 16 bytes")


class _UpstreamRedirected(aiohttp.ClientError):
    """The upstream answered the upgrade with a redirect (which is never followed)."""


async def _refuse_redirects(
    request: ClientRequest, handler: ClientHandlerType
) -> aiohttp.ClientResponse:
    response = await handler(request)
    if response.status in (301, 302, 303, 307, 308):
        response.close()
        raise _UpstreamRedirected(str(response.status))
    return response


def _handshake_session(session: aiohttp.ClientSession, timeout: float) -> aiohttp.ClientSession:
    """A throw-away session over ``session``'s pooled connector for one WebSocket handshake.

    ``ClientSession.ws_connect`` has no ``allow_redirects``: it follows an upstream's redirect,
    identity headers and all, to wherever ``Location`` points, and it ignores the route timeout
    (the shared session has none). This session refuses redirects and bounds the connect and the
    wait for the ``101`` by the route's ``timeout``. It does not own the connector, so closing it
    once the handshake is done leaves the pool and the open WebSocket alone; the plain HTTP path
    pays nothing for it.
    """
    return aiohttp.ClientSession(
        connector=session.connector,
        connector_owner=False,
        cookie_jar=aiohttp.DummyCookieJar(),
        auto_decompress=False,
        skip_auto_headers=session.skip_auto_headers,
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=timeout, sock_read=timeout),
        middlewares=(_refuse_redirects,),
    )


def is_websocket_upgrade(request: web.Request) -> bool:
    """True for an HTTP/1.1 ``Upgrade: websocket`` GET."""
    return (
        request.method == "GET"
        and request.headers.get("Upgrade", "").lower() == "websocket"
        and "upgrade" in request.headers.get("Connection", "").lower()
    )


async def relay_websocket(
    session: aiohttp.ClientSession,
    request: web.Request,
    url: URL,
    headers: CIMultiDict[str],
    *,
    upstream_timeout: float,
    max_msg_size: int,
) -> web.WebSocketResponse:
    """Connect upstream first (errors still become envelopes), then pump frames both ways.

    A single message larger than ``max_msg_size`` (``server.max_body_size``) from either side
    closes the connection with 1009 (message too big) instead of growing in memory.
    """
    check_client_handshake(request)
    protocols = [
        p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",") if p.strip()
    ]
    upstream_headers = CIMultiDict(
        (k, v) for k, v in headers.items() if k.lower() not in _WS_HANDSHAKE
    )
    ws_url = url.with_scheme("wss" if url.scheme == "https" else "ws")
    try:
        async with _handshake_session(session, upstream_timeout) as handshake:
            upstream = await handshake.ws_connect(
                ws_url,
                headers=upstream_headers,
                protocols=protocols,
                timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=upstream_timeout),
                autoclose=False,
                autoping=True,
                max_msg_size=max_msg_size,
            )
    except TimeoutError:
        raise GatewayTimeout(f"the upstream did not answer within {upstream_timeout:g}s") from None
    except _UpstreamRedirected as exc:
        raise BadGateway(f"the upstream redirected the WebSocket upgrade ({exc})") from None
    except aiohttp.WSServerHandshakeError as exc:
        raise BadGateway(f"the upstream refused the WebSocket upgrade ({exc.status})") from None
    except aiohttp.ClientError:
        raise BadGateway("the upstream could not be reached") from None
    client = web.WebSocketResponse(
        protocols=[upstream.protocol] if upstream.protocol else (),
        autoclose=False,
        max_msg_size=max_msg_size,
    )
    client.headers["Server"] = SERVER_NAME
    try:
        await client.prepare(request)
        await _pump_both(client, upstream)
    finally:
        if not upstream.closed:
            await upstream.close()
    return client


async def _pump(
    source: web.WebSocketResponse | aiohttp.ClientWebSocketResponse,
    sink: web.WebSocketResponse | aiohttp.ClientWebSocketResponse,
) -> None:
    # ``receive()`` rather than ``async for``: iteration stops *before* yielding the CLOSE
    # message, and with it the close reason to relay.
    reason = ""
    while True:
        msg = await source.receive()
        if msg.type == WSMsgType.TEXT:
            await sink.send_str(msg.data)
        elif msg.type == WSMsgType.BINARY:
            await sink.send_bytes(msg.data)
        elif msg.type == WSMsgType.CLOSE:
            reason = msg.extra or ""
            break
        elif msg.type in (WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
            break
    code = source.close_code or 1000
    if not sink.closed:
        # The close frame is relayed whole: code and reason (at most 123 bytes, as received).
        await sink.close(code=code, message=reason.encode("utf-8"))


async def _pump_both(
    client: web.WebSocketResponse, upstream: aiohttp.ClientWebSocketResponse
) -> None:
    to_upstream = asyncio.create_task(_pump(client, upstream))
    to_client = asyncio.create_task(_pump(upstream, client))
    try:
        _, pending = await asyncio.wait(
            {to_upstream, to_client}, return_when=asyncio.FIRST_COMPLETED
        )
        for task in pending:
            try:
                await asyncio.wait_for(task, 5)
            except TimeoutError:
                task.cancel()
    finally:
        for task in (to_upstream, to_client):
            if not task.done():
                task.cancel()
        for task in (to_upstream, to_client):
            try:
                await task
            except (asyncio.CancelledError, Exception) as exc:
                if not isinstance(exc, asyncio.CancelledError):
                    _LOGGER.debug("websocket pump ended: %s", type(exc).__name__)
