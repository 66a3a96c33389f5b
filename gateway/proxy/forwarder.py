"""Forward one request upstream over a pooled keep-alive connection, streaming both ways.

- The request goes out over ``upstream_pool.UpstreamPool`` (the gateway's own HTTP/1.1 client):
  the request line and the already filtered headers serialised once into one buffer.
- The request body is streamed chunk by chunk (never buffered whole), counted against
  ``server.max_body_size`` as it goes: over the limit → 413 (checked up front when the client
  declares a Content-Length, before any upstream connection is used). A declared length is
  passed on; a body without one is sent in chunked encoding.
- The response is copied chunk by chunk into a ``StreamResponse`` as it arrives, so downloads of
  any size and server-sent events pass through without waiting for the end. A response that
  arrived whole with its head is written in one go.
- No redirects are followed, no cookies kept, nothing decompressed.
- The route's ``timeout`` bounds connecting and every wait on the upstream (for the response
  headers, then for each chunk). Before the response started: refused/reset → 502, too slow
  → 504. After it started, the client connection is closed (the status is already sent).
  It bounds every wait for the client's next body chunk too: a client that stops sending its
  body gets a 408 (the upstream connection is aborted), instead of holding it forever.
- A client that disconnects cancels the handler (``handler_cancellation``), which aborts the
  upstream connection (it is never returned to the pool).

``create_client_session`` is the ``aiohttp`` session that WebSocket upgrades still use.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Final

import aiohttp
from aiohttp import web

from gateway.errors import (
    BadGateway,
    BadRequest,
    GatewayTimeout,
    PayloadTooLarge,
    RequestTimeout,
    Unimplemented,
)
from gateway.middlewares.connection import send_deferred_continue
from gateway.middlewares.request_id import SERVER_NAME
from gateway.proxy.headers import response_headers_for_client
from gateway.proxy.upstream_pool import (
    BodySource,
    Origin,
    UpstreamConnection,
    UpstreamError,
    UpstreamPool,
    UpstreamTimeout,
)

_LOGGER = logging.getLogger(__name__)

UNTYPED: Final = web.ResponseKey("untyped", bool)
"""Set on a relayed response whose upstream sent no ``Content-Type`` (see ``keep_untyped``)."""

_NO_BODY_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
"""Methods sent without ``Content-Length: 0`` when the client sent no body (as aiohttp did)."""

_CHUNKED: Final = b"Transfer-Encoding: chunked\r\n"
_EMPTY: Final = b"Content-Length: 0\r\n"


def create_client_session() -> aiohttp.ClientSession:
    """The pooled keep-alive ``aiohttp`` session for WebSocket upgrades."""
    connector = aiohttp.TCPConnector(limit=0, limit_per_host=0, keepalive_timeout=30)
    return aiohttp.ClientSession(
        connector=connector,
        cookie_jar=aiohttp.DummyCookieJar(),
        auto_decompress=False,
        skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
        timeout=aiohttp.ClientTimeout(total=None),
    )


def create_upstream_pool() -> UpstreamPool:
    """The pool of keep-alive connections for plain HTTP forwarding."""
    return UpstreamPool(keepalive_timeout=30.0)


class _ClientBody:
    """The client's request body, read as it arrives and held to ``server.max_body_size``.

    A client that sends nothing for ``wait_timeout`` (the route's timeout) gets a 408.
    """

    __slots__ = ("_content", "_limit", "_seen", "_wait_timeout")

    def __init__(self, content: aiohttp.StreamReader, limit: int, wait_timeout: float) -> None:
        self._content = content
        self._limit = limit
        self._wait_timeout = wait_timeout
        self._seen = 0

    async def read(self) -> bytes:
        try:
            async with asyncio.timeout(self._wait_timeout):
                chunk = await self._content.readany()
        except TimeoutError:
            raise body_timeout(self._wait_timeout) from None
        except Exception:
            raise BadRequest("the request body could not be read") from None
        self._seen += len(chunk)
        if self._seen > self._limit:
            # Stop before the chunk that crosses the limit: the upstream never gets the whole
            # body (its connection is aborted mid-body).
            raise _too_large(self._limit)
        return chunk


def _only_chunked(codings: Iterable[str]) -> None:
    """A request body's transfer codings must be ``chunked`` alone: the body is passed on
    as it came, so a coding below it (``gzip, chunked``) would reach the upstream undeclared
    (RFC 9112 §6.1: 501 for a coding the server does not understand)."""
    found = [item.strip().lower() for value in codings for item in value.split(",")]
    if [coding for coding in found if coding] != ["chunked"]:
        raise Unimplemented("Transfer-Encoding: only chunked is supported")


def body_timeout(wait_timeout: float) -> RequestTimeout:
    """The error for a client that stopped sending its body."""
    return RequestTimeout(f"the request body stopped arriving for {wait_timeout:g}s")


def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"the body is larger than the limit of {limit} bytes")


def request_head(method: str, target: str, lines: list[bytes], framing: bytes = b"") -> bytes:
    """The request line, the header ``lines`` and the ``framing`` line(s) as one HTTP/1.1 head.

    Nothing here can split a line: ``target`` is the normalised path (pure ASCII, see
    ``paths``) plus the query exactly as the server's request parser accepted it (it refuses
    whitespace, control and non-ASCII bytes in the target); ``request_lines_for_upstream``
    refuses CR/LF/NUL in the values the gateway sets, and the server's parser in those the
    client sent.
    """
    return b"%s %s HTTP/1.1\r\n%s\r\n%s\r\n" % (
        method.encode("ascii"),
        target.encode("utf-8", "surrogateescape"),
        b"\r\n".join(lines),
        framing,
    )


async def forward(
    pool: UpstreamPool,
    request: web.Request,
    origin: Origin,
    target: str,
    lines: list[bytes],
    *,
    upstream_timeout: float,
    max_body_size: int,
) -> web.StreamResponse:
    """Send ``request`` to ``target`` (path and query) on ``origin`` and stream the answer back.

    ``lines`` are the header lines for the upstream (``request_lines_for_upstream``).
    """
    method = request.method
    body: _ClientBody | None = None
    chunked = False
    framing = b""
    if request.body_exists:  # a Content-Length over 0, or chunked
        declared = request.content_length
        if declared is None:
            _only_chunked(request.headers.getall("Transfer-Encoding", ()))
            chunked = True
            framing = _CHUNKED
        elif declared > max_body_size:
            raise _too_large(max_body_size)
        body = _ClientBody(request.content, max_body_size, upstream_timeout)
        await send_deferred_continue(request)  # admitted: now the client may send it
    else:
        framing = empty_body_framing(method, "Content-Length" in request.headers)
    head = request_head(method, target, lines, framing)
    conn = await open_exchange(pool, origin, method, head, body, chunked, upstream_timeout)
    return await _relay(request, pool, conn, upstream_timeout)


def empty_body_framing(method: str, has_length: bool) -> bytes:
    """The framing line for a request sent without a body (``Content-Length: 0`` or none).

    ``has_length``: the client sent a ``Content-Length`` (passed on as it came).
    """
    if method in _NO_BODY_METHODS or has_length:
        return b""
    return _EMPTY


async def open_exchange(
    pool: UpstreamPool,
    origin: Origin,
    method: str,
    head: bytes,
    body: BodySource | None,
    chunked: bool,
    upstream_timeout: float,
    fresh: bool = False,
) -> UpstreamConnection:
    """Send a request over ``pool``; its connection once the response head is in.

    Refused, reset or unusable answers → ``BadGateway`` (502); too slow → ``GatewayTimeout``.
    """
    try:
        return await pool.send(
            origin, method, head, body, chunked=chunked, wait_timeout=upstream_timeout, fresh=fresh
        )
    except (UpstreamTimeout, UpstreamError) as exc:
        raise upstream_failure(origin, exc, upstream_timeout) from None


def upstream_failure(
    origin: Origin, exc: UpstreamError | UpstreamTimeout, upstream_timeout: float
) -> BadGateway | GatewayTimeout:
    """The error that answers a request whose upstream failed before its response head."""
    if isinstance(exc, UpstreamTimeout):
        return GatewayTimeout(f"the upstream did not answer within {upstream_timeout:g}s")
    _LOGGER.warning("upstream %s://%s:%s failed: %s", *origin, exc)
    return BadGateway("the upstream could not be reached")


class _WholeResponse(web.StreamResponse):
    """A response whose body is all there: its head waits to leave with the body, in one write.

    (``StreamResponse`` sends its head on ``prepare``, as a streamed answer needs;
    ``web.Response`` buffers it this way, but recomputes what the upstream already framed.)
    """

    _send_headers_immediately = False


def _relayed_headers(response: web.StreamResponse, conn: UpstreamConnection) -> None:
    """The upstream's headers for the client, on a response aiohttp is about to prepare."""
    headers = response.headers
    headers.extend(response_headers_for_client(conn.fields))
    headers.setdefault("Server", SERVER_NAME)  # (aiohttp would name itself, with versions)
    if "Content-Type" not in headers:
        response[UNTYPED] = True


async def keep_untyped(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare`` hook: no ``Content-Type`` where the upstream sent none.

    aiohttp gives a body without one ``application/octet-stream`` while preparing; the edge
    relays the upstream's headers as they are, and so does this path.
    """
    if response.get(UNTYPED):
        response.headers.popall("Content-Type", None)


async def _relay(
    request: web.Request, pool: UpstreamPool, conn: UpstreamConnection, upstream_timeout: float
) -> web.StreamResponse:
    response: web.StreamResponse
    if conn.complete:
        # The whole answer is here (always so for HEAD, 204 and 304): the connection goes back
        # to the pool first, then head and body leave in one write.
        body = conn.take_body()
        pool.release(conn)
        response = _WholeResponse(status=conn.status, reason=conn.reason)
        _relayed_headers(response, conn)
        try:
            await response.prepare(request)
            await response.write_eof(body)
        except ConnectionResetError:
            pass  # the client went away; the upstream side is done already
        return response
    response = web.StreamResponse(status=conn.status, reason=conn.reason)
    _relayed_headers(response, conn)
    try:
        await response.prepare(request)
        while chunk := await conn.read(upstream_timeout):
            await response.write(chunk)
    except asyncio.CancelledError:
        conn.abort()
        raise
    except ConnectionResetError:
        # The client went away (the server's write raises ``ClientConnectionResetError``).
        # Nobody is left to answer; stop reading.
        conn.abort()
        return response
    except (UpstreamError, UpstreamTimeout) as exc:
        # The status line is gone already: the only honest signal left is a cut connection.
        _LOGGER.warning("upstream broke off a response mid-stream: %s", type(exc).__name__)
        conn.abort()
        if request.transport is not None:
            request.transport.close()
        return response
    except BaseException:
        conn.abort()
        raise
    pool.release(conn)
    try:
        await response.write_eof()
    except ConnectionResetError:
        pass
    return response
