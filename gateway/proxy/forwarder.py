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


class _BodyLimit:
    """``server.max_body_size`` for one streamed body; ``exceeded`` records that it stopped it.

    The body generator runs inside aiohttp's client, which wraps whatever it raises in a
    ``ClientConnectionError``: the flag is how ``forward`` tells "too large" (413) from an
    upstream failure (502).
    """

    __slots__ = ("exceeded", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.exceeded = False

    def error(self) -> PayloadTooLarge:
        return PayloadTooLarge(f"the body is larger than the limit of {self.limit} bytes")


async def _limited(request: web.Request, limit: _BodyLimit) -> AsyncIterator[bytes]:
    seen = 0
    async for chunk in request.content.iter_chunked(CHUNK):
        seen += len(chunk)
        if seen > limit.limit:
            # Stop before the chunk that crosses the limit: the upstream never gets the whole
            # body (the chunked stream is cut without its last chunk).
            limit.exceeded = True
            raise limit.error()
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
    limit = _BodyLimit(max_body_size)
    declared = request.content_length
    if declared is not None and declared > max_body_size:
        raise limit.error()
    body = _limited(request, limit) if _has_body(request) else None
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
    except (TimeoutError, aiohttp.ClientError) as exc:
        if limit.exceeded:
            raise limit.error() from None
        if isinstance(exc, TimeoutError):
            raise GatewayTimeout(
                f"the upstream did not answer within {upstream_timeout:g}s"
            ) from None
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
    except asyncio.CancelledError:
        upstream.close()
        raise
    except ConnectionResetError:
        # The client went away. Caught before ClientError: the server's write raises
        # ``ClientConnectionResetError``, which is both. Nobody is left to answer; stop reading.
        upstream.close()
    except (aiohttp.ClientError, TimeoutError) as exc:
        # The status line is gone already: the only honest signal left is a cut connection.
        _LOGGER.warning("upstream broke off a response mid-stream: %s", type(exc).__name__)
        upstream.release()
        if request.transport is not None:
            request.transport.close()
    return response
