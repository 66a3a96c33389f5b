"""One proxied request on the edge: the proxy's pipeline, the upstream pool, raw response bytes.

The stages are ``ProxyHandler.admit`` (authenticate, authorize, rate-limit, upstream headers)
and ``forwarder.open_exchange``, exactly as on the aiohttp path; only the client side differs:
the response head is serialised once (``wire.response_head``) with what aiohttp's response
hooks add there (``X-Request-Id``, ``Server``, ``Date``, the CORS policy) and written with the
body in one write when the upstream's answer is complete, else streamed chunk by chunk (with
chunked encoding when the upstream gave no length), waiting while the client's socket is full.
Errors are the same envelopes, with the same headers.

Most requests need no task at all (``Exchange.start``): a request without a body whose token
the auth service can check from memory (``ProxyHandler.admit_now``), on a route without a rate
limit, goes out at once on an idle pooled connection (``UpstreamPool.send_now``), and the
upstream connection's ``data_received`` writes the answer when it is complete. Anything that
has to wait — a body to stream, a revocation check or rate limit needing Redis, no idle
upstream connection, an answer that streams, a stale connection to retry — goes on in a task
(``Exchange.run``), from where the direct attempt stopped.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Final

from multidict import CIMultiDict

from auth.errors import AuthError
from gateway.edge.wire import RequestHead, access_line, relayed_head, response_head
from gateway.envelope import JSON_CONTENT_TYPE, error_body
from gateway.errors import GatewayError, status_and_headers
from gateway.middlewares.request_id import request_id_for, stamp_response
from gateway.proxy.forwarder import (
    empty_body_framing,
    open_exchange,
    request_head,
    upstream_failure,
)
from gateway.proxy.headers import response_headers_for_client, response_lines_for_client
from gateway.proxy.upstream_pool import UpstreamConnection, UpstreamError, UpstreamTimeout

if TYPE_CHECKING:
    from gateway.edge.connection import EdgeConnection, RequestBody
    from gateway.edge.server import Plan

_LOGGER = logging.getLogger(__name__)
_LAST_CHUNK: Final = b"0\r\n\r\n"
_CRLF: Final = b"\r\n"
_JSON: Final = f"{JSON_CONTENT_TYPE}; charset=utf-8"
"""What ``envelope.error_response`` sends as the envelope's content type."""


class Exchange:
    """One request the edge took, from its head to the end of its answer."""

    __slots__ = (
        "access_log",
        "body",
        "conn",
        "cors_origin",
        "head",
        "keep_alive",
        "plan",
        "request",
        "request_id",
        "size",
        "started",
        "status",
        "task",
        "upstream",
    )

    def __init__(
        self, conn: EdgeConnection, head: RequestHead, plan: Plan, body: RequestBody | None
    ) -> None:
        edge = conn.edge
        headers = head.headers
        self.conn = conn
        self.head = head
        self.plan = plan
        self.body = body
        access_log = edge.access_log
        if access_log is not None and not access_log.isEnabledFor(logging.INFO):
            access_log = None
        self.access_log = access_log
        self.started = time.time() if access_log is not None else 0.0
        self.request_id = request_id_for(headers.get("x-request-id"))
        origin = headers.get("origin")
        self.cors_origin = origin if origin is not None and edge.cors.allows(origin) else None
        self.keep_alive = head.keep_alive
        self.status = 0
        self.size = 0
        self.request: bytes | None = None
        """The request head for the upstream, once the pipeline has admitted the request."""
        self.upstream: UpstreamConnection | None = None
        """The upstream connection of a request sent without a task, until it answers."""
        self.task: asyncio.Task[None] | None = None
        """The task serving the request, once it had to wait for something."""

    # --- without a task ---------------------------------------------------------------------

    def start(self) -> None:
        """Serve the request: at once when nothing needs waiting for, else in a task."""
        if self.body is None:
            try:
                if self._send_now():
                    return
            except Exception as exc:
                self._refuse(exc)
                self._done()
                return
        self._in_task()

    def _send_now(self) -> bool:
        """Admit the request and send it on an idle upstream connection, if that needs no wait.

        False when something must be waited for (then ``request`` is kept if it was admitted).
        """
        plan = self.plan
        conn = self.conn
        headers = self.head.headers
        upstream_lines = plan.proxy.admit_now(
            plan.route,
            headers,
            self.head.fields,
            peer=conn.peer,
            host=headers.get("host", ""),
            secure=conn.secure,
            request_id=self.request_id,
        )
        if upstream_lines is None:
            return False
        self.request = self._request_head(upstream_lines)
        route = plan.route
        self.upstream = plan.proxy.pool.send_now(
            route.origin, self.head.method, self.request, self, route.timeout
        )
        return self.upstream is not None

    def upstream_answered(self, upstream: UpstreamConnection) -> None:
        """``Sink``: the upstream has answered (or failed) a request sent without a task."""
        self.upstream = None
        error = upstream.error
        try:
            if error is None and upstream.complete:
                self.status = upstream.status
                self._write_whole(upstream)
                self.conn.edge.answered_at_once += 1
            elif upstream.head_done:
                # A body still to come (or cut off): streamed by a task as on the other path.
                self.status = upstream.status
                self.task = asyncio.get_running_loop().create_task(self._stream(upstream))
                return
            elif upstream.retryable:
                self._in_task()  # a stale pooled connection: sent again, on another one
                return
            else:
                assert isinstance(error, UpstreamError | UpstreamTimeout)
                self._refuse(upstream_failure(self.plan.route.origin, error, self._timeout))
        except Exception:
            self._relay_failed()
        self._done()

    def cancel(self) -> None:
        """The client went away: stop (the upstream connection is aborted, never pooled)."""
        if self.task is not None:
            self.task.cancel()  # the task aborts its upstream connection
        elif self.upstream is not None:
            self.upstream.abandon()
            self.upstream = None
            self._done()

    # --- in a task --------------------------------------------------------------------------

    def _in_task(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self.run())

    async def run(self) -> None:
        """Serve the request, waiting where it has to (see the module docstring)."""
        try:
            try:
                # Admitted already: the direct attempt found no idle upstream connection, or
                # a stale one: this request goes on a new one (the pool grows to what is in
                # flight, so that the next requests find one idle).
                fresh = self.request is not None
                if self.request is None:
                    self.request = self._request_head(await self._admit())
                upstream = await open_exchange(
                    self.plan.proxy.pool,
                    self.plan.route.origin,
                    self.head.method,
                    self.request,
                    self.body,
                    False,
                    self._timeout,
                    fresh,
                )
            except Exception as exc:
                self._refuse(exc)
                return
            self.status = upstream.status
            await self._relay(upstream)
        finally:
            self._done()

    async def _stream(self, upstream: UpstreamConnection) -> None:
        """The rest of ``run`` for an answer that arrived without a task: relay it."""
        try:
            await self._relay(upstream)
        finally:
            self._done()

    async def _admit(self) -> list[bytes]:
        plan = self.plan
        headers = self.head.headers
        return await plan.proxy.admit(
            plan.route,
            headers,
            self.head.fields,
            peer=self.conn.peer,
            host=headers.get("host", ""),
            secure=self.conn.secure,
            request_id=self.request_id,
        )

    async def _relay(self, upstream: UpstreamConnection) -> None:
        """Pass the upstream's answer on (``keep_alive`` false if it could not be whole)."""
        try:
            if upstream.complete:
                self._write_whole(upstream)
            else:
                await self._write_streamed(upstream)
        except asyncio.CancelledError:
            raise
        except Exception:
            self._relay_failed()

    # --- both -------------------------------------------------------------------------------

    @property
    def _timeout(self) -> float:
        return self.plan.route.timeout

    def _request_head(self, upstream_lines: list[bytes]) -> bytes:
        plan = self.plan
        method = self.head.method
        target = plan.route.upstream_path(plan.path)
        if plan.query:
            target = f"{target}?{plan.query}"
        framing = empty_body_framing(method, "content-length" in self.head.headers)
        return request_head(method, target, upstream_lines, framing)

    def _done(self) -> None:
        """The answer is written (or abandoned): log it, let the connection go on or close."""
        if self.status and self.access_log is not None:
            line = access_line(self.conn.peer, self.started, self.head, self.status, self.size)
            self.access_log.info(line)
        self.conn.finished(self.keep_alive)

    def _stamp(self, headers: CIMultiDict[str]) -> None:
        """What aiohttp's ``on_response_prepare`` hooks add on the other path."""
        stamp_response(headers, self.request_id)
        if self.cors_origin is not None:
            self.conn.edge.cors.stamp(headers, self.cors_origin)

    def _refuse(self, exc: Exception) -> None:
        """Answer with the error envelope of ``exc`` (raised on purpose), else a 500.

        (Called where ``exc`` is being handled: an unexpected one is logged with its traceback.)
        """
        if isinstance(exc, GatewayError | AuthError):
            status, details, extra = status_and_headers(exc)
            self._send_error(status, details, extra)
        else:
            # SECURITY: the details stay in the log; the client gets a generic message.
            _LOGGER.exception("unhandled error on %s %s", self.head.method, self.plan.path)
            self._send_error(500, (), {})

    def _relay_failed(self) -> None:
        """An unexpected error while relaying the answer (being handled): log it, and close —
        the head may be gone already, the connection cannot be trusted with another."""
        _LOGGER.exception("unhandled error relaying %s %s", self.head.method, self.plan.path)
        self.keep_alive = False

    def _send_error(
        self, status: int, details: list[str] | tuple[str, ...], extra: dict[str, str]
    ) -> None:
        """Write the error envelope for ``status``."""
        body = error_body(status, details)
        headers: CIMultiDict[str] = CIMultiDict(extra)
        headers["Content-Type"] = _JSON
        headers["Content-Length"] = str(len(body))
        self._stamp(headers)
        data = response_head(status, "", headers, keep_alive=self.keep_alive) + body
        self.conn.write(data)
        self.status = status
        self.size = len(data)

    def _relayed_head(
        self, upstream: UpstreamConnection, length: int | None, streamed: bool
    ) -> tuple[bytes, bool]:
        """The head for the client of the upstream's answer; whether its body goes chunked.

        (``wire.relayed_head`` for ``length`` and ``streamed``; the CORS policy stamps a
        header multidict, so an answer to a cross-origin request takes that way.)
        """
        if self.cors_origin is None:
            lines, marks = response_lines_for_client(upstream.fields)
            return relayed_head(
                upstream.status,
                upstream.raw_reason,
                lines,
                marks,
                self.request_id,
                keep_alive=self.keep_alive,
                length=length,
                streamed=streamed,
            )
        headers = response_headers_for_client(upstream.fields)
        self._stamp(headers)
        chunked = False
        if "Content-Length" not in headers:
            if length is not None:
                headers["Content-Length"] = str(length)
            elif streamed:
                headers["Transfer-Encoding"] = "chunked"
                chunked = True
        head = response_head(upstream.status, upstream.reason, headers, keep_alive=self.keep_alive)
        return head, chunked

    def _write_whole(self, upstream: UpstreamConnection) -> None:
        """Write a ``complete`` answer: head and body leave in one write, after the upstream
        connection went back to the pool (always so for HEAD, 204 and 304)."""
        status = upstream.status
        body = upstream.take_body()
        bodiless = self.head.method == "HEAD" or status == 204 or status == 304
        head, _ = self._relayed_head(upstream, None if bodiless else len(body), False)
        self.plan.proxy.pool.release(upstream)
        data = head + body
        self.conn.write(data)
        self.size = len(data)

    async def _write_streamed(self, upstream: UpstreamConnection) -> None:
        """Write the head, then each body chunk as it arrives (chunked without a length)."""
        conn = self.conn
        data, chunked = self._relayed_head(upstream, None, True)
        conn.write(data)
        self.size = len(data)
        try:
            while chunk := await upstream.read(self._timeout):
                self.size += len(chunk)
                if chunked:
                    conn.writelines([b"%x\r\n" % len(chunk), chunk, _CRLF])
                else:
                    conn.write(chunk)
                if conn.write_paused:
                    await conn.drain()
                if conn.closed:
                    upstream.abort()  # nobody is left to answer; stop reading
                    self.keep_alive = False
                    return
        except (UpstreamError, UpstreamTimeout) as exc:
            # The status line is gone already: the only honest signal left is a cut connection.
            _LOGGER.warning("upstream broke off a response mid-stream: %s", type(exc).__name__)
            upstream.abort()
            self.keep_alive = False
            return
        except BaseException:  # cancelled (the client went away) or worse
            upstream.abort()
            raise
        self.plan.proxy.pool.release(upstream)
        if chunked:
            conn.write(_LAST_CHUNK)
