"""One proxied request on the edge: the proxy's pipeline, the upstream pool, raw response bytes.

The stages are ``ProxyHandler.admit`` (authenticate, authorize, rate-limit, upstream headers)
and ``forwarder.open_exchange``, exactly as on the aiohttp path; only the client side differs:
the response head is serialised once (``wire.response_head``) with what aiohttp's response
hooks add there (``X-Request-Id``, ``Server``, ``Date``, the CORS policy) and written with the
body in one write when the upstream's answer is complete, else streamed chunk by chunk (with
chunked encoding when the upstream gave no length), waiting while the client's socket is full.
Errors are the same envelopes, with the same headers.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Final

from multidict import CIMultiDict

from auth.errors import AuthError
from gateway.edge.wire import RequestHead, access_line, response_head
from gateway.envelope import JSON_CONTENT_TYPE, error_body
from gateway.errors import GatewayError, status_and_headers
from gateway.middlewares.request_id import request_id_for, stamp_response
from gateway.proxy.forwarder import empty_body_framing, open_exchange, request_head
from gateway.proxy.headers import response_headers_for_client
from gateway.proxy.upstream_pool import (
    UpstreamConnection,
    UpstreamError,
    UpstreamPool,
    UpstreamTimeout,
)

if TYPE_CHECKING:
    from gateway.edge.connection import EdgeConnection, RequestBody
    from gateway.edge.server import Plan

_LOGGER = logging.getLogger(__name__)
_LAST_CHUNK: Final = b"0\r\n\r\n"
_CRLF: Final = b"\r\n"
_JSON: Final = f"{JSON_CONTENT_TYPE}; charset=utf-8"
"""What ``envelope.error_response`` sends as the envelope's content type."""


async def exchange(
    conn: EdgeConnection, head: RequestHead, plan: Plan, body: RequestBody | None
) -> None:
    """Answer one request the edge took; then let ``conn`` go on (or close)."""
    edge = conn.edge
    route = plan.route
    headers = head.headers
    access_log = edge.access_log
    if access_log is not None and not access_log.isEnabledFor(logging.INFO):
        access_log = None
    started = time.time() if access_log is not None else 0.0
    request_id = request_id_for(headers.get("X-Request-Id"))
    origin = headers.get("Origin")
    cors_origin = origin if origin is not None and edge.cors.allows(origin) else None
    keep_alive = head.keep_alive
    status, size = 0, 0
    try:
        try:
            upstream_headers = await plan.proxy.admit(
                route,
                headers,
                peer=conn.peer,
                host=headers.get("Host", ""),
                secure=conn.secure,
                request_id=request_id,
            )
            target = route.upstream_path(plan.path)
            if plan.query:
                target = f"{target}?{plan.query}"
            framing = empty_body_framing(head.method, upstream_headers)
            upstream = await open_exchange(
                plan.proxy.pool,
                route.origin,
                head.method,
                request_head(head.method, target, upstream_headers, framing),
                body,
                False,
                route.timeout,
            )
        except (GatewayError, AuthError) as exc:
            status, details, extra = status_and_headers(exc)
            size = _send_error(conn, status, details, extra, request_id, cors_origin, keep_alive)
            return
        except Exception:
            # SECURITY: the details stay in the log; the client gets a generic message.
            _LOGGER.exception("unhandled error on %s %s", head.method, plan.path)
            status = 500
            size = _send_error(conn, status, (), {}, request_id, cors_origin, keep_alive)
            return
        status = upstream.status
        pool = plan.proxy.pool
        try:
            size, keep_alive = await _relay(
                conn, pool, upstream, head, request_id, cors_origin, keep_alive, route.timeout
            )
        except Exception:
            # The head may be gone already: the connection cannot be trusted with another.
            _LOGGER.exception("unhandled error relaying %s %s", head.method, plan.path)
            keep_alive = False
    finally:
        if status and access_log is not None:
            access_log.info(access_line(conn.peer, started, head, status, size))
        conn.finished(keep_alive)


def _stamp(
    conn: EdgeConnection, headers: CIMultiDict[str], request_id: str, cors_origin: str | None
) -> None:
    """What aiohttp's ``on_response_prepare`` hooks add on the other path."""
    stamp_response(headers, request_id)
    if cors_origin is not None:
        conn.edge.cors.stamp(headers, cors_origin)


def _send_error(
    conn: EdgeConnection,
    status: int,
    details: list[str] | tuple[str, ...],
    extra: dict[str, str],
    request_id: str,
    cors_origin: str | None,
    keep_alive: bool,
) -> int:
    """Write the error envelope for ``status``; the bytes written (head and body)."""
    body = error_body(status, details)
    headers: CIMultiDict[str] = CIMultiDict(extra)
    headers["Content-Type"] = _JSON
    headers["Content-Length"] = str(len(body))
    _stamp(conn, headers, request_id, cors_origin)
    data = response_head(status, "", headers, keep_alive=keep_alive) + body
    conn.write(data)
    return len(data)


async def _relay(
    conn: EdgeConnection,
    pool: UpstreamPool,
    upstream: UpstreamConnection,
    head: RequestHead,
    request_id: str,
    cors_origin: str | None,
    keep_alive: bool,
    upstream_timeout: float,
) -> tuple[int, bool]:
    """Pass the upstream's answer on; the bytes written and whether keep-alive still holds.

    (Head and body bytes, as aiohttp's access log counts them.)
    """
    headers = response_headers_for_client(upstream.headers)
    _stamp(conn, headers, request_id, cors_origin)
    status = upstream.status
    if upstream.complete:
        # The whole answer is here (always so for HEAD, 204 and 304): the upstream connection
        # goes back to the pool first, then head and body leave in one write.
        body = upstream.take_body()
        pool.release(upstream)
        if (
            "Content-Length" not in headers
            and head.method != "HEAD"
            and status != 204
            and status != 304
        ):
            headers["Content-Length"] = str(len(body))
        data = response_head(status, upstream.reason, headers, keep_alive=keep_alive) + body
        conn.write(data)
        return len(data), keep_alive
    chunked = "Content-Length" not in headers
    if chunked:
        headers["Transfer-Encoding"] = "chunked"
    data = response_head(status, upstream.reason, headers, keep_alive=keep_alive)
    conn.write(data)
    size = len(data)
    try:
        while chunk := await upstream.read(upstream_timeout):
            size += len(chunk)
            if chunked:
                conn.writelines([b"%x\r\n" % len(chunk), chunk, _CRLF])
            else:
                conn.write(chunk)
            if conn.write_paused:
                await conn.drain()
            if conn.closed:
                upstream.abort()  # nobody is left to answer; stop reading
                return size, False
    except (UpstreamError, UpstreamTimeout) as exc:
        # The status line is gone already: the only honest signal left is a cut connection.
        _LOGGER.warning("upstream broke off a response mid-stream: %s", type(exc).__name__)
        upstream.abort()
        return size, False
    except BaseException:  # cancelled (the client went away) or worse
        upstream.abort()
        raise
    pool.release(upstream)
    if chunked:
        conn.write(_LAST_CHUNK)
    return size, keep_alive
