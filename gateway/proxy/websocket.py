"""WebSocket upgrades relayed both ways, close codes included."""

from __future__ import annotations

import asyncio
import logging

import aiohttp
from aiohttp import WSMsgType, web
from multidict import CIMultiDict
from yarl import URL

from gateway.errors import BadGateway, GatewayTimeout

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
) -> web.WebSocketResponse:
    """Connect upstream first (errors still become envelopes), then pump frames both ways."""
    protocols = [
        p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",") if p.strip()
    ]
    upstream_headers = CIMultiDict(
        (k, v) for k, v in headers.items() if k.lower() not in _WS_HANDSHAKE
    )
    ws_url = url.with_scheme("wss" if url.scheme == "https" else "ws")
    try:
        upstream = await session.ws_connect(
            ws_url,
            headers=upstream_headers,
            protocols=protocols,
            timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=upstream_timeout),
            autoclose=False,
            autoping=True,
            max_msg_size=0,
        )
    except TimeoutError:
        raise GatewayTimeout(f"the upstream did not answer within {upstream_timeout:g}s") from None
    except aiohttp.WSServerHandshakeError as exc:
        raise BadGateway(f"the upstream refused the WebSocket upgrade ({exc.status})") from None
    except aiohttp.ClientError:
        raise BadGateway("the upstream could not be reached") from None
    client = web.WebSocketResponse(
        protocols=[upstream.protocol] if upstream.protocol else (), autoclose=False, max_msg_size=0
    )
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
    async for msg in source:
        if msg.type == WSMsgType.TEXT:
            await sink.send_str(msg.data)
        elif msg.type == WSMsgType.BINARY:
            await sink.send_bytes(msg.data)
        elif msg.type == WSMsgType.CLOSE:
            break
        elif msg.type == WSMsgType.ERROR:
            break
    code = source.close_code or 1000
    if not sink.closed:
        await sink.close(code=code, message=b"")


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
