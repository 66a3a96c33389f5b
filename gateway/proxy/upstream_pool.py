"""A lean HTTP/1.1 client for the proxy: keep-alive connections pooled per upstream origin.

Why not ``aiohttp.ClientSession``: for every request it builds a ``ClientRequest`` (URL, auto
headers, body payload), a ``ClientResponse``, a ``StreamReader``, a connector key and several
timers; profiled under load that was about half of the gateway's CPU per proxied request. The
proxy needs much less: it already has the filtered header lines
(``headers.request_lines_for_upstream``) and the target, and copies the answer back chunk by
chunk. Here a request is one bytes buffer written to a pooled connection, and the response is
parsed by llhttp (``httptools``) straight into a status, the header fields (bytes, as they
came) and a queue of body chunks. WebSocket upgrades do not use this module (``websocket.py``
keeps ``aiohttp``'s client).

What one exchange does (``UpstreamPool.send``):

- **Connection**: the most recently used idle connection to ``(scheme, host, port)``, else a new
  one (``loop.create_connection``; ``https`` with the pool's SSL context, by default
  ``ssl.create_default_context()``), connecting within the timeout.
- **Request**: the caller's head bytes, then the body (if any) read from ``BodySource.read`` and
  written as it comes: as is for a ``Content-Length`` body, in chunked framing otherwise. Writes
  respect the transport's flow control (``pause_writing`` → wait for ``resume_writing``). Time
  spent waiting for the *client's* body is not counted against the upstream.
- **Response**: status, reason and header fields (``fields``: bytes, the upstream's order and
  spelling; ``headers`` decodes them into a ``CIMultiDict`` when asked) once the head is
  complete; ``1xx`` interim responses are skipped; a ``101`` is an error (this client never
  asks for an upgrade). The body is framed by ``Content-Length``, chunked encoding
  or the end of the connection; a response to ``HEAD``, a ``204`` and a ``304`` have none. Body
  chunks are queued until ``read`` takes them; past ``HIGH_WATER`` buffered bytes the connection
  stops reading from the socket until the caller has caught up, so a slow client never makes
  the gateway buffer a fast upstream's body.
- **Timeouts**: connecting, every wait for the upstream (its head, each body chunk, the drain of
  a write) is bounded by the route's timeout → ``UpstreamTimeout``. Any other failure —
  refused, reset, closed early, unparseable, a head larger than ``MAX_HEAD_SIZE`` or with more
  than ``MAX_HEADERS`` fields → ``UpstreamError``.
- **Reuse**: ``release`` returns a connection to the pool only after a complete response that
  allows keep-alive (HTTP/1.1 without ``Connection: close``, or HTTP/1.0 with keep-alive) and a
  request that was sent whole. Bytes arriving on an idle connection, or after a complete
  response, mean the upstream does not frame its responses as announced: that connection is
  closed. Idle connections are closed after ``keepalive_timeout`` at most (between half of it
  and all of it: idle time is counted in ticks of ``keepalive_timeout / 2``, so that the hot
  path reads no clock).
- **Stale connections**: a pooled connection the upstream closed while it was idle is normally
  seen closed before it is picked. If it is closed while the request is on its way (the race of
  every keep-alive client), the request is retried once on a fresh connection when nothing of it
  was sent yet, or when its method is idempotent, it had no body, and no byte of a response
  arrived. Never on a fresh connection, never twice.
- **Cancellation**: if the caller is cancelled (the client went away), or anything else goes
  wrong mid-exchange, the connection is aborted, never pooled: the upstream sees its peer go
  away, and no half-read response can be mistaken for the next one.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from typing import Final, Protocol, cast

from httptools import HttpParserError, HttpParserUpgrade, HttpResponseParser
from multidict import CIMultiDict

from gateway.proxy.upstream_errors import Stale as _Stale
from gateway.proxy.upstream_errors import UpstreamError, UpstreamTimeout

__all__ = [
    "HIGH_WATER",
    "IDEMPOTENT_METHODS",
    "MAX_HEADERS",
    "MAX_HEAD_SIZE",
    "BodySource",
    "Origin",
    "UpstreamConnection",
    "UpstreamError",
    "UpstreamPool",
    "UpstreamTimeout",
]

Origin = tuple[str, str, int]
"""``(scheme, host, port)`` of an upstream: the pool's key."""

HIGH_WATER: Final = 256 * 1024
"""Buffered response body bytes above which the connection stops reading from the socket."""

MAX_HEAD_SIZE: Final = 64 * 1024
"""Largest response head (status line and headers, interim responses included) accepted."""

MAX_HEADERS: Final = 128
"""Most header fields accepted in one response head."""

IDEMPOTENT_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})
"""Methods a request may be retried with (RFC 9110 §9.2.2) — only without a body here."""

_CHUNK_END: Final = b"\r\n"
_LAST_CHUNK: Final = b"0\r\n\r\n"


class BodySource(Protocol):
    """Where a request body comes from: ``read`` returns the next chunk, ``b""`` at the end."""

    async def read(self) -> bytes:
        """The next chunk of the body, ``b""`` once it is complete."""
        ...


class Sink(Protocol):
    """Who is told, without a task waiting, that a request sent with ``send_now`` was answered."""

    def upstream_answered(self, conn: UpstreamConnection) -> None:
        """``conn`` has the response head (``head_done``), or failed (``error``)."""
        ...


class _Deadlines:
    """When the exchanges sent with ``send_now`` under one timeout run out of time.

    They share the timeout and start in order, so they expire in order: a queue of
    ``(deadline, connection, request number)`` and one timer, for the earliest exchange still
    unanswered, instead of a timer per request. Answered entries are dropped from the front as
    new ones arrive.
    """

    __slots__ = ("_loop", "_queue", "_timeout", "_timer")

    def __init__(self, loop: asyncio.AbstractEventLoop, timeout: float) -> None:
        self._loop = loop
        self._timeout = timeout
        self._queue: deque[tuple[float, UpstreamConnection, int]] = deque()
        self._timer: asyncio.TimerHandle | None = None

    def add(self, conn: UpstreamConnection) -> None:
        queue = self._queue
        while queue and not _waiting(queue[0]):
            queue.popleft()
        queue.append((self._loop.time() + self._timeout, conn, conn.requests))
        if self._timer is None:
            self._timer = self._loop.call_at(queue[0][0], self._expire)

    def _expire(self) -> None:
        self._timer = None
        queue = self._queue
        now = self._loop.time()
        while queue:
            entry = queue[0]
            if _waiting(entry):
                if entry[0] > now:
                    self._timer = self._loop.call_at(entry[0], self._expire)
                    return
                entry[1].expire()
            queue.popleft()

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._queue.clear()


def _waiting(entry: tuple[float, UpstreamConnection, int]) -> bool:
    """True while the exchange of a ``_Deadlines`` entry still waits for its answer.

    Not once it was answered, nor once its connection carries a later request.
    """
    _, conn, request = entry
    return conn.sink is not None and conn.requests == request


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(UpstreamTimeout())


class UpstreamConnection(asyncio.Protocol):
    """One keep-alive connection to an upstream, carrying one exchange at a time.

    After ``UpstreamPool.send`` returns it, ``status``, ``reason`` and ``headers`` describe the
    response; ``complete`` tells whether the whole body has arrived already (``take_body``),
    else ``read`` returns it chunk by chunk.
    """

    __slots__ = (
        "_buffered",
        "_chunks",
        "_error",
        "_feed_size",
        "_got_bytes",
        "_has_body",
        "_head_request",
        "_head_size",
        "_headers",
        "_interim",
        "_loop",
        "_method",
        "_new_parser",
        "_parser",
        "_pending_head",
        "_reading_paused",
        "_reason",
        "_waiter",
        "_write_paused",
        "active",
        "closed",
        "complete",
        "fields",
        "head_done",
        "idle_epoch",
        "keep_alive",
        "origin",
        "pool",
        "requests",
        "reusable",
        "sink",
        "status",
        "transport",
    )

    def __init__(self, pool: UpstreamPool, origin: Origin, loop: asyncio.AbstractEventLoop) -> None:
        self.pool = pool
        self.origin = origin
        self._loop = loop
        self.transport: asyncio.Transport | None = None
        self._parser = HttpResponseParser(self)
        self._new_parser = False
        self._waiter: asyncio.Future[None] | None = None
        self._write_paused = False
        self._reading_paused = False
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._reason = b""
        self._error: BaseException | None = None
        self._got_bytes = False
        self._head_request = False
        self._method = ""
        self._has_body = False
        self._head_size = 0
        self._pending_head = 0
        self._feed_size = 0
        self._interim = False
        self.active = False
        self.closed = False
        self.complete = False
        self.head_done = False
        self.keep_alive = False
        self.reusable = True
        self.status = 0
        self.fields: list[tuple[bytes, bytes]] = []
        """The response's header fields as they came: ``(name, value)`` bytes, in order."""
        self._headers: CIMultiDict[str] | None = None
        self.idle_epoch = 0
        self.requests = 0
        """Requests sent on this connection so far (the current one included)."""
        self.sink: Sink | None = None
        """Told of the answer to a request sent with ``UpstreamPool.send_now``."""

    # --- asyncio.Protocol -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not ``asyncio.Transport`` subclasses, but have its methods.
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool._forget(self)
        if self.active and not self.complete and self._error is None:
            if exc is None and self.head_done and self._close_delimited():
                self.complete = True  # a close-delimited body ends here
            elif self.head_done:
                self._error = UpstreamError("the upstream closed the connection mid-response")
            else:
                self._error = UpstreamError("the upstream closed the connection without answering")
        self._wake()
        self._answer_sink()

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        self._wake()

    def data_received(self, data: bytes) -> None:
        if not self.active or self.complete:
            # Nothing was asked: whatever this is (a body on a HEAD or 204 response, a second
            # response), the connection's framing cannot be trusted any more.
            self.reusable = False
            if not self.active:
                self.abort()
            return
        self._got_bytes = True
        self._feed_size = len(data)
        try:
            self._parser.feed_data(data)
        except HttpParserUpgrade:
            self._fail(UpstreamError("the upstream switched protocols unasked"))
            return
        except HttpParserError as exc:
            if self.complete:
                self.reusable = False  # trailing bytes after a complete response
                self._answer_sink()
            else:
                self._fail(UpstreamError(f"the upstream sent an invalid response: {exc}"))
            return
        if not self.head_done:
            # A head still unfinished after this many bytes is too large (or never ends).
            self._pending_head += len(data)
            if self._pending_head > MAX_HEAD_SIZE:
                self._fail(UpstreamError("the upstream's response head is too large"))
        elif self._buffered > HIGH_WATER and not self._reading_paused:
            self._reading_paused = True
            assert self.transport is not None
            self.transport.pause_reading()
        if self.head_done:
            self._answer_sink()  # last: the sink may release this connection and reuse it

    # --- httptools callbacks ----------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self.head_done:
            raise UpstreamError("a second response")
        self.fields = []
        self._reason = b""

    def on_status(self, reason: bytes) -> None:
        # Called once per read the status line spans: the pieces are joined.
        self._reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        self.fields.append((name, value))  # checked, and decoded if asked, once all are in

    def on_headers_complete(self) -> None:
        fields = self.fields
        if len(fields) > MAX_HEADERS:
            raise UpstreamError("too many headers")
        if self._pending_head + self._feed_size > MAX_HEAD_SIZE:
            # The head may be too large (data_received bounds those that arrive in pieces).
            self._head_size += sum(len(name) + len(value) + 4 for name, value in fields)
            if self._head_size > MAX_HEAD_SIZE:
                raise UpstreamError("the response head is too large")
        parser = self._parser
        status = parser.get_status_code()
        if status < 200:
            if status == 101:
                raise UpstreamError("the upstream switched protocols unasked")
            self._interim = True  # 100 Continue, 103 Early Hints…: not passed on
            return
        self.status = status
        self._headers = None
        self.keep_alive = parser.should_keep_alive()
        self.head_done = True
        if self._head_request:
            # llhttp does not know the request was HEAD: it would wait for Content-Length bytes.
            # The response ends here; the next exchange gets a fresh parser.
            self.complete = True
            self._new_parser = True
        if self._waiter is not None:  # (none when a sink waits instead: the usual case)
            self._wake()

    @property
    def reason(self) -> str:
        """The status line's reason phrase."""
        return self._reason.decode("utf-8", "surrogateescape")

    @property
    def raw_reason(self) -> bytes:
        """The reason phrase as it came."""
        return self._reason

    @property
    def headers(self) -> CIMultiDict[str]:
        """The response's headers (``fields``), decoded as aiohttp's client decodes them."""
        headers = self._headers
        if headers is None:
            headers = self._headers = CIMultiDict(
                (name.decode("latin-1"), value.decode("utf-8", "surrogateescape"))
                for name, value in self.fields
            )
        return headers

    def _close_delimited(self) -> bool:
        """True when the body ends with the connection (RFC 9112 §6.3), as llhttp reads it.

        Neither a length nor chunked framing (a Transfer-Encoding whose last coding is not
        chunked counts as none); never for a response to HEAD, a 204 or a 304.
        """
        if self._head_request or self.status == 204 or self.status == 304:
            return False
        headers = self.headers
        if "Content-Length" in headers:
            return False
        coding = headers.get("Transfer-Encoding")
        return coding is None or coding.rpartition(",")[2].strip().lower() != "chunked"

    def on_body(self, body: bytes) -> None:
        if self.complete:
            self.reusable = False  # a body on a HEAD response
            return
        self._chunks.append(body)
        self._buffered += len(body)
        if self._waiter is not None:
            self._wake()

    def on_message_complete(self) -> None:
        if self._interim:
            self._interim = False
            return
        if not self.complete:
            self.complete = True
            if self._waiter is not None:
                self._wake()

    # --- the exchange -----------------------------------------------------------------------

    def _begin(self, method: str, has_body: bool = False) -> None:
        """Reset the per-response state for a new request with ``method``."""
        if self._new_parser:
            self._parser = HttpResponseParser(self)
            self._new_parser = False
        if self._reading_paused:
            self._reading_paused = False
            assert self.transport is not None
            self.transport.resume_reading()
        self.active = True
        self.complete = False
        self.head_done = False
        self.keep_alive = False
        self.status = 0
        self._error = None
        self._got_bytes = False
        self._head_request = method == "HEAD"
        self._method = method
        self._has_body = has_body
        self._head_size = 0
        self._pending_head = 0
        self._interim = False
        self.requests += 1

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _fail(self, exc: BaseException) -> None:
        if self._error is None:
            self._error = exc
        self.reusable = False
        self.abort()
        self._wake()
        self._answer_sink()

    def _answer_sink(self) -> None:
        sink = self.sink
        if sink is not None and (self.head_done or self._error is not None):
            self.sink = None
            sink.upstream_answered(self)

    @property
    def error(self) -> BaseException | None:
        """Why the exchange failed (``UpstreamError`` or ``UpstreamTimeout``), if it did."""
        return self._error

    @property
    def retryable(self) -> bool:
        """True when a failed request may be sent again on another connection.

        Only a request without a body, with an idempotent method, on a reused connection on
        which no byte of a response arrived: the race of every keep-alive client with an
        upstream closing an idle connection.
        """
        return (
            self.requests > 1
            and not self._got_bytes
            and not self._has_body
            and self._method in IDEMPOTENT_METHODS
            and isinstance(self._error, UpstreamError)  # closed, reset: not a timeout
        )

    def abandon(self) -> None:
        """Give up on the answer to ``send_now``: the sink is not told, the connection aborted."""
        self.sink = None
        self.abort()

    def expire(self) -> None:
        """The exchange ran out of time: fail it with ``UpstreamTimeout``."""
        self._fail(UpstreamTimeout())

    async def _wait(self, wait_timeout: float) -> None:
        """Wait until the connection reports progress (data, end, error, drain) or time out."""
        waiter = self._loop.create_future()
        self._waiter = waiter
        timer = self._loop.call_later(wait_timeout, _expire, waiter)
        try:
            await waiter
        finally:
            timer.cancel()
            self._waiter = None

    def write(self, data: bytes) -> bool:
        """Write ``data``; ``False`` if the connection is closed (nothing was written)."""
        if self.closed:
            return False
        assert self.transport is not None
        try:
            self.transport.write(data)
        except RuntimeError:  # uvloop: the handle is closed already
            return False
        return True

    def writelines(self, data: list[bytes]) -> bool:
        """Write the buffers of ``data`` in order; ``False`` if the connection is closed."""
        if self.closed:
            return False
        assert self.transport is not None
        try:
            self.transport.writelines(data)
        except RuntimeError:
            return False
        return True

    async def drain(self, wait_timeout: float) -> None:
        """Wait while the transport's write buffer is over its high-water mark."""
        while self._write_paused and not (self.closed or self.head_done or self._error):
            await self._wait(wait_timeout)

    async def read_head(self, wait_timeout: float) -> None:
        """Wait for the response head; raise ``UpstreamError`` or ``UpstreamTimeout``."""
        while not self.head_done:
            if self._error is not None:
                raise self._error
            await self._wait(wait_timeout)

    async def read(self, wait_timeout: float) -> bytes:
        """The body bytes that arrived since the last call (waiting for some), ``b""`` at the end.

        Raises ``UpstreamTimeout`` if nothing arrives within ``timeout``, ``UpstreamError`` if
        the body breaks off.
        """
        while True:
            chunks = self._chunks
            if chunks:
                data = chunks.popleft() if len(chunks) == 1 else b"".join(chunks)
                chunks.clear()
                self._buffered = 0
                if self._reading_paused and not self.closed:
                    self._reading_paused = False
                    assert self.transport is not None
                    self.transport.resume_reading()
                return data
            if self.complete:
                return b""
            if self._error is not None:
                raise self._error
            await self._wait(wait_timeout)

    def take_body(self) -> bytes:
        """The whole body of a ``complete`` response."""
        chunks = self._chunks
        if not chunks:
            return b""
        data = chunks.popleft() if len(chunks) == 1 else b"".join(chunks)
        chunks.clear()
        self._buffered = 0
        return data

    def abort(self) -> None:
        """Close the connection at once (RST); it is never pooled again."""
        self.reusable = False
        transport = self.transport
        if transport is not None and not self.closed:
            transport.abort()


class UpstreamPool:
    """Keep-alive connections per ``(scheme, host, port)``; see the module docstring."""

    def __init__(
        self,
        *,
        keepalive_timeout: float = 30.0,
        max_idle_per_origin: int = 256,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.keepalive_timeout = keepalive_timeout
        self.max_idle_per_origin = max_idle_per_origin
        self._ssl_context = ssl_context
        self._idle: dict[Origin, list[UpstreamConnection]] = {}
        self._all: set[UpstreamConnection] = set()
        self._sweeper: asyncio.TimerHandle | None = None
        self._epoch = 0
        """Ticks of ``keepalive_timeout / 2`` counted by the sweeper while connections idle."""
        self._closed = False
        self._deadlines: dict[float, _Deadlines] = {}
        """``send_now``'s expiry queues, one per timeout."""
        self.connections_made = 0
        """Connections opened so far (a count for tests and diagnostics)."""

    # --- connections ------------------------------------------------------------------------

    def _ssl_for(self, scheme: str) -> ssl.SSLContext | None:
        if scheme != "https":
            return None
        if self._ssl_context is None:
            self._ssl_context = ssl.create_default_context()
        return self._ssl_context

    async def _connect(self, origin: Origin, wait_timeout: float) -> UpstreamConnection:
        if self._closed:
            raise UpstreamError("the upstream pool is closed")
        scheme, host, port = origin
        loop = asyncio.get_running_loop()
        context = self._ssl_for(scheme)
        try:
            async with asyncio.timeout(wait_timeout):
                _, conn = await loop.create_connection(
                    lambda: UpstreamConnection(self, origin, loop),
                    host,
                    port,
                    ssl=context,
                    server_hostname=host if context is not None else None,
                )
        except TimeoutError:
            raise UpstreamTimeout() from None
        except (OSError, ssl.SSLError) as exc:
            raise UpstreamError(f"cannot connect: {type(exc).__name__}: {exc}") from None
        self.connections_made += 1
        if conn.closed:  # lost between connect and now
            raise UpstreamError("the upstream closed the connection at once")
        self._all.add(conn)
        return conn

    def _pop_idle(self, origin: Origin) -> UpstreamConnection | None:
        idle = self._idle.get(origin)
        if not idle:
            return None
        while idle:
            conn = idle.pop()
            if not conn.closed:
                return conn
        return None

    def release(self, conn: UpstreamConnection) -> None:
        """Pool ``conn`` if its exchange ended cleanly and keep-alive holds, else close it."""
        conn.active = False
        if not (
            conn.complete
            and conn.keep_alive
            and conn.reusable
            and conn._error is None
            and not conn.closed
            and not self._closed
        ):
            conn.abort()
            return
        conn.idle_epoch = self._epoch
        idle = self._idle.get(conn.origin)
        if idle is None:
            idle = self._idle[conn.origin] = []
        elif len(idle) >= self.max_idle_per_origin:
            idle.pop(0).abort()
        idle.append(conn)
        if self._sweeper is None:
            self._schedule_sweep()

    def _forget(self, conn: UpstreamConnection) -> None:
        self._all.discard(conn)

    def _schedule_sweep(self) -> None:
        loop = asyncio.get_running_loop()
        self._sweeper = loop.call_later(self.keepalive_timeout / 2, self._sweep)

    def _sweep(self) -> None:
        """One tick: close the connections idle since two ticks ago (or longer)."""
        self._sweeper = None
        self._epoch += 1
        expired = self._epoch - 2
        remaining = False
        for origin, idle in list(self._idle.items()):
            keep = []
            for conn in idle:
                if conn.closed:
                    continue
                if conn.idle_epoch <= expired:
                    conn.abort()
                else:
                    keep.append(conn)
            if keep:
                self._idle[origin] = keep
                remaining = True
            else:
                del self._idle[origin]
        if remaining and not self._closed:
            self._schedule_sweep()

    def idle_count(self, origin: Origin | None = None) -> int:
        """Idle pooled connections (to ``origin``, or to every upstream)."""
        lists = [self._idle.get(origin, [])] if origin is not None else self._idle.values()
        return sum(1 for idle in lists for conn in idle if not conn.closed)

    async def close(self) -> None:
        """Close every connection, idle or busy; the pool cannot be used afterwards."""
        self._closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        self._idle.clear()
        for deadlines in self._deadlines.values():
            deadlines.close()
        self._deadlines.clear()
        for conn in list(self._all):
            conn.abort()
        self._all.clear()
        await asyncio.sleep(0)  # let the transports run connection_lost

    # --- one exchange -----------------------------------------------------------------------

    def send_now(
        self, origin: Origin, method: str, head: bytes, sink: Sink, wait_timeout: float
    ) -> UpstreamConnection | None:
        """Send a request without a body on an idle connection, without waiting for anything.

        ``None`` when no idle connection to ``origin`` takes it (nothing was sent: use
        ``send``). Otherwise ``sink.upstream_answered`` is called with the connection once the
        response head is in, or once the exchange failed (``error``: an ``UpstreamError``, or
        ``UpstreamTimeout`` after ``wait_timeout``); a failed request that is ``retryable`` may
        be sent again with ``send``. ``abort`` the connection to give up on the answer.
        """
        conn = self._pop_idle(origin)
        if conn is None:
            return None
        conn._begin(method, False)
        if not conn.write(head):
            conn.active = False
            return None
        conn.sink = sink
        deadlines = self._deadlines.get(wait_timeout)
        if deadlines is None:
            deadlines = self._deadlines[wait_timeout] = _Deadlines(conn._loop, wait_timeout)
        deadlines.add(conn)
        return conn

    async def send(
        self,
        origin: Origin,
        method: str,
        head: bytes,
        body: BodySource | None,
        *,
        chunked: bool,
        wait_timeout: float,
        fresh: bool = False,
    ) -> UpstreamConnection:
        """Send one request and return its connection once the response head has arrived.

        ``head`` is the request line and headers, blank line included, framing headers
        (``Content-Length`` or ``Transfer-Encoding: chunked``) already in it as ``body`` and
        ``chunked`` require. The caller then reads the body from the connection and hands it
        back with ``release`` (or ``abort``s it). Errors raised by ``body.read`` propagate
        unchanged, the connection aborted. ``fresh``: on a new connection (the caller found
        none idle a moment ago: the pool grows to the number of requests in flight).
        """
        conn = None if fresh else self._pop_idle(origin)
        if conn is not None:
            try:
                await self._exchange(conn, method, head, body, chunked, wait_timeout)
            except _Stale:
                pass  # retried once below, on a fresh connection
            else:
                return conn
        conn = await self._connect(origin, wait_timeout)
        try:
            await self._exchange(conn, method, head, body, chunked, wait_timeout)
        except _Stale:
            raise UpstreamError("the upstream closed the connection without answering") from None
        return conn

    async def _exchange(
        self,
        conn: UpstreamConnection,
        method: str,
        head: bytes,
        body: BodySource | None,
        chunked: bool,
        wait_timeout: float,
    ) -> None:
        conn._begin(method, body is not None)
        try:
            if body is None:
                if not conn.write(head):
                    raise _Stale()  # nothing of the request was sent
            else:
                await self._send_body(conn, head, body, chunked, wait_timeout)
            await conn.read_head(wait_timeout)
        except UpstreamError:
            conn.abort()
            if conn.retryable:
                raise _Stale() from None
            raise
        except BaseException:
            conn.abort()
            raise

    async def _send_body(
        self,
        conn: UpstreamConnection,
        head: bytes,
        body: BodySource,
        chunked: bool,
        wait_timeout: float,
    ) -> None:
        """Stream ``body`` after ``head``; stop early if the upstream answers or goes away."""
        if conn.closed:
            raise _Stale()  # nothing sent, nothing read from the client yet
        chunk = await body.read()
        if chunked:
            if chunk:
                sent = conn.writelines([head, b"%x\r\n" % len(chunk), chunk, _CHUNK_END])
            else:
                sent = conn.writelines([head, _LAST_CHUNK])
        else:
            sent = conn.writelines([head, chunk]) if chunk else conn.write(head)
        if not sent:
            conn.abort()
            raise UpstreamError("the upstream closed the connection")
        while chunk:
            if conn._write_paused:
                await conn.drain(wait_timeout)
            if conn.head_done or conn.closed:
                # The upstream answered (or gave up) before the body was complete: the rest is
                # not sent, and the connection cannot carry another request.
                conn.reusable = False
                return
            chunk = await body.read()
            if chunked:
                if chunk:
                    conn.writelines([b"%x\r\n" % len(chunk), chunk, _CHUNK_END])
                else:
                    conn.write(_LAST_CHUNK)
            elif chunk:
                conn.write(chunk)
