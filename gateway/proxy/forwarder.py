"""Forward one request upstream over the shared pooled session, streaming both ways.

- The request body is streamed chunk by chunk (never buffered whole), counted against
  ``server.max_body_size`` as it goes: over the limit → 413 (checked up front when the client
  declares a Content-Length).
- The response is copied chunk by chunk into a ``StreamResponse`` as it arrives, so downloads of
  any size and server-sent events pass through without waiting for the end.
- No redirects are followed, no cookies kept, nothing decompressed.
- The route's ``timeout`` bounds connecting and every wait on the upstream (for the response
  headers, then for each chunk). Before the response started: refused/reset → 502, too slow
  → 504. After it started, the client connection is closed (the status is already sent).
- A client that disconnects cancels the handler (``handler_cancellation``), which closes the
  upstream request.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from gateway.errors import BadGateway, GatewayTimeout, PayloadTooLarge
from gateway.proxy.headers import response_headers_for_client

_LOGGER = logging.getLogger(__name__)
CHUNK = 64 * 1024


def create_client_session() -> aiohttp.ClientSession:
    """The one pooled keep-alive session for every upstream."""
    connector = aiohttp.TCPConnector(limit=0, limit_per_host=0, keepalive_timeout=30)
    return aiohttp.ClientSession(
        connector=connector,
        cookie_jar=aiohttp.DummyCookieJar(),
        auto_decompress=False,
        skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
        timeout=aiohttp.ClientTimeout(total=None),
    )


def _has_body(request: web.Request) -> bool:
    if request.content_length is not None:
        return request.content_length > 0
    return "chunked" in request.headers.get("Transfer-Encoding", "").lower()


async def _limited(request: web.Request, limit: int) -> AsyncIterator[bytes]:
    seen = 0
    async for chunk in request.content.iter_chunked(CHUNK):
        seen += len(chunk)
        if seen > limit:
            raise PayloadTooLarge(f"the body is larger than the limit of {limit} bytes")
        yield chunk


async def forward(
    session: aiohttp.ClientSession,
    request: web.Request,
    url: URL,
    headers: CIMultiDict[str],
    *,
    upstream_timeout: float,
    max_body_size: int,
) -> web.StreamResponse:
    """Send ``request`` to ``url`` and stream the answer back."""
    declared = request.content_length
    if declared is not None and declared > max_body_size:
        raise PayloadTooLarge(f"the body is larger than the limit of {max_body_size} bytes")
    body = _limited(request, max_body_size) if _has_body(request) else None
    client_timeout = aiohttp.ClientTimeout(
        total=None, sock_connect=upstream_timeout, sock_read=upstream_timeout
    )
    try:
        upstream_cm = session.request(
            request.method,
            url,
            headers=headers,
            data=body,
            allow_redirects=False,
            timeout=client_timeout,
            compress=None,
        )
        upstream = await upstream_cm.__aenter__()
    except PayloadTooLarge:
        raise
    except (TimeoutError, aiohttp.ServerTimeoutError):
        raise GatewayTimeout(f"the upstream did not answer within {upstream_timeout:g}s") from None
    except aiohttp.ClientError as exc:
        _LOGGER.warning("upstream %s failed: %s", url.origin(), type(exc).__name__)
        raise BadGateway("the upstream could not be reached") from None
    try:
        return await _relay(request, upstream)
    finally:
        await upstream_cm.__aexit__(None, None, None)


async def _relay(request: web.Request, upstream: aiohttp.ClientResponse) -> web.StreamResponse:
    response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
    response.headers.extend(response_headers_for_client(upstream.headers))
    if request.method == "HEAD" or upstream.status in (204, 304) or upstream.status < 200:
        await response.prepare(request)
        return response
    await response.prepare(request)
    try:
        async for chunk in upstream.content.iter_any():
            await response.write(chunk)
        await response.write_eof()
    except (aiohttp.ClientError, TimeoutError) as exc:
        # The status line is gone already: the only honest signal left is a cut connection.
        _LOGGER.warning("upstream broke off a response mid-stream: %s", type(exc).__name__)
        upstream.release()
        if request.transport is not None:
            request.transport.close()
    except (ConnectionResetError, asyncio.CancelledError):
        upstream.close()
        raise
    return response
