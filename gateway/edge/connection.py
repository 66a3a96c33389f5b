"""One client connection as the edge serves it, until (if ever) it is handed to aiohttp.

The connection frames requests itself: a head ends at the first blank line, a body is exactly
``Content-Length`` bytes (a request that declares anything else is not taken). Each head is
parsed by ``wire.HeadReader``; ``EdgeServer.plan`` decides whether the edge proxies it. If not,
the connection is lent to aiohttp for that one request (a head the edge has read, with no body
or a ``Content-Length`` one: ``gateway.edge.handover``) and taken back once it is answered, or
else handed to aiohttp for good before a byte of that request is consumed: its
``RequestHandler`` becomes the transport's protocol and gets every byte buffered so far, so it
sees the connection exactly as if it had owned it from that request on. Requests are served one
at a time, in order; bytes of pipelined requests wait (reading pauses past ``PIPELINE_LIMIT``)
until the response before them is complete.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import TYPE_CHECKING, Final, cast

from gateway.edge.exchange import Exchange
from gateway.edge.handover import LentTransport
from gateway.edge.wire import (
    MAX_HEAD_SIZE,
    TOKEN_BYTES,
    HeadReader,
    RequestHead,
    plain_body_length,
)
from gateway.errors import BadRequest
from gateway.proxy.forwarder import body_timeout

if TYPE_CHECKING:
    from gateway.edge.handover import GatewayRequestHandler
    from gateway.edge.server import EdgeServer, Plan

__all__ = ["BODY_HIGH_WATER", "MAX_HEAD_SIZE", "PIPELINE_LIMIT", "EdgeConnection", "RequestBody"]

BODY_HIGH_WATER: Final = 256 * 1024
"""Request body bytes buffered (not yet sent upstream) above which reading pauses."""

PIPELINE_LIMIT: Final = 64 * 1024
"""Bytes of later requests buffered while one is served, above which reading pauses."""


class RequestBody:
    """The body of the request being served (``Content-Length`` bytes), as it arrives.

    A ``BodySource`` for the upstream pool: ``read`` returns what has arrived (waiting for
    some, for the route's timeout at most: then 408), ``b""`` once the declared length is
    complete.
    """

    __slots__ = (
        "_buffered",
        "_chunks",
        "_conn",
        "_lost",
        "_wait_timeout",
        "_waiter",
        "remaining",
        "stalled",
    )

    def __init__(self, conn: EdgeConnection, length: int, wait_timeout: float) -> None:
        self._conn = conn
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._waiter: asyncio.Future[None] | None = None
        self._lost = False
        self._wait_timeout = wait_timeout
        self.remaining = length
        """Bytes of the body that have not arrived yet."""
        self.stalled = False
        """True once the client sent nothing for ``wait_timeout`` (the route's timeout)."""

    def feed(self, data: bytes) -> int:
        """Take the part of ``data`` that belongs to the body; how many bytes that was."""
        taken = min(len(data), self.remaining)
        if taken:
            self._chunks.append(data if taken == len(data) else data[:taken])
            self.remaining -= taken
            self._buffered += taken
            if self._buffered > BODY_HIGH_WATER:
                self._conn.pause_reading()
            self._wake()
        return taken

    def lose(self) -> None:
        """The client connection is gone: a ``read`` still waiting fails."""
        self._lost = True
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def read(self) -> bytes:
        """The body bytes that arrived since the last call, ``b""`` at the end."""
        while True:
            chunks = self._chunks
            if chunks:
                data = chunks.popleft() if len(chunks) == 1 else b"".join(chunks)
                chunks.clear()
                self._buffered = 0
                self._conn.resume_reading()
                return data
            if not self.remaining:
                return b""
            if self._lost:
                raise BadRequest("the request body could not be read")
            waiter = asyncio.get_running_loop().create_future()
            self._waiter = waiter
            try:
                async with asyncio.timeout(self._wait_timeout):
                    await waiter
            except TimeoutError:
                self.stalled = True
                raise body_timeout(self._wait_timeout) from None
            finally:
                self._waiter = None


class EdgeConnection(asyncio.Protocol):
    """A client connection served by the edge (see the module docstring)."""

    __slots__ = (
        "_body",
        "_buf",
        "_discard",
        "_drain_waiter",
        "_exchange",
        "_lent",
        "_lent_body",
        "_lent_transport",
        "_reader",
        "_reading_paused",
        "_scan_from",
        "_starting",
        "closed",
        "edge",
        "idle_epoch",
        "peer",
        "secure",
        "transport",
        "write_paused",
    )

    def __init__(self, edge: EdgeServer) -> None:
        self.edge = edge
        self.transport: asyncio.Transport | None = None
        self.peer = ""
        self.secure = False
        self.closed = False
        self.write_paused = False
        self.idle_epoch = edge.epoch
        self._buf = bytearray()
        self._scan_from = 0
        self._exchange: Exchange | None = None
        self._lent: GatewayRequestHandler | None = None
        """aiohttp's handler of a request lent to it, until the edge takes the connection back."""
        self._lent_transport: LentTransport | None = None
        self._lent_body = 0
        """Bytes of the lent request's body still to pass to aiohttp."""
        self._starting = False
        self._body: RequestBody | None = None
        self._discard = 0
        self._reader = HeadReader()
        self._reading_paused = False
        self._drain_waiter: asyncio.Future[None] | None = None

    @property
    def busy(self) -> bool:
        """True while a request is being served (by the edge, or lent to aiohttp)."""
        return self._exchange is not None or self._lent is not None

    @property
    def task(self) -> asyncio.Task[None] | None:
        """The task serving the current request, if it has one."""
        return None if self._exchange is None else self._exchange.task

    # --- asyncio.Protocol -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not ``asyncio.Transport`` subclasses, but have its methods.
        self.transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        self.peer = str(peer[0]) if isinstance(peer, tuple | list) and peer else ""
        self.secure = transport.get_extra_info("sslcontext") is not None
        self.edge.track(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.edge.untrack(self)
        if self._lent is not None:
            lent, self._lent, self._lent_transport = self._lent, None, None
            lent.connection_lost(exc)
        if self._body is not None:
            self._body.lose()
        if self._exchange is not None:
            self._exchange.cancel()  # which aborts its upstream connection
        self._wake_drain()

    def pause_writing(self) -> None:
        self.write_paused = True
        if self._lent is not None:
            self._lent.pause_writing()

    def resume_writing(self) -> None:
        self.write_paused = False
        self._wake_drain()
        if self._lent is not None:
            self._lent.resume_writing()

    def data_received(self, data: bytes) -> None:
        if self._lent is not None:
            if self._lent_body:
                part = data[: self._lent_body]
                self._lent_body -= len(part)
                self._lent.data_received(part)
                data = data[len(part) :]
                if not data:
                    return
            # What follows a lent request waits for the edge to take the connection back.
            self._buf += data
            if len(self._buf) > PIPELINE_LIMIT:
                self.pause_reading()
            return
        body = self._body
        if body is not None and body.remaining:
            taken = body.feed(data)
            if taken == len(data):
                return
            data = data[taken:]
        elif self._discard:
            dropped = min(self._discard, len(data))
            self._discard -= dropped
            if dropped == len(data):
                return
            data = data[dropped:]
        if (
            self._exchange is None
            and not self._buf
            and data.endswith(b"\r\n\r\n")
            and data.find(b"\r\n\r\n") == len(data) - 4
            and (planned := self._plan(data)) is not None
            and (plan := planned[1]) is not None
        ):
            # The usual read: one whole head, nothing after it; served without buffering.
            self._start(planned[0], plan)
            return
        self._buf += data
        if self._exchange is None:
            self._next()
        elif len(self._buf) > PIPELINE_LIMIT:
            self.pause_reading()

    # --- flow control -----------------------------------------------------------------------

    def pause_reading(self) -> None:
        """Stop reading from the socket (a body or pipelined bytes are piling up)."""
        if not self._reading_paused and not self.closed:
            self._reading_paused = True
            assert self.transport is not None
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        """Read again, unless pipelined bytes are still piling up behind a busy request."""
        if self._reading_paused and not self.closed:
            if self._exchange is not None and len(self._buf) > PIPELINE_LIMIT:
                return
            self._reading_paused = False
            assert self.transport is not None
            self.transport.resume_reading()

    def _wake_drain(self) -> None:
        waiter = self._drain_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def drain(self) -> None:
        """Wait while the transport's write buffer is over its high-water mark."""
        while self.write_paused and not self.closed:
            waiter = asyncio.get_running_loop().create_future()
            self._drain_waiter = waiter
            try:
                await waiter
            finally:
                self._drain_waiter = None

    def write(self, data: bytes) -> None:
        """Send ``data`` to the client (nothing, if it has gone)."""
        if not self.closed:
            assert self.transport is not None
            try:
                self.transport.write(data)
            except RuntimeError:  # uvloop: the handle is closed already
                pass

    def writelines(self, data: list[bytes]) -> None:
        """Send the buffers of ``data`` in order (nothing, if the client has gone)."""
        if not self.closed:
            assert self.transport is not None
            try:
                self.transport.writelines(data)
            except RuntimeError:
                pass

    def abort(self) -> None:
        """Stop serving at once: the request in flight is cancelled, the connection reset."""
        if self._exchange is not None:
            self._exchange.cancel()
        if self.transport is not None:
            self.transport.abort()

    def close(self) -> None:
        """Close the connection once what was written has been sent."""
        if not self.closed and self.transport is not None:
            self.transport.close()

    def expire(self) -> None:
        """Idle for two ticks (``EdgeServer._sweep``): closed. A head begun and still not
        complete gets a 408 envelope first: aiohttp's side answers it, as it answers one that
        is late there (``GatewayRequestHandler.time_out``)."""
        if self._buf and not self._discard and not self.closed and self.transport is not None:
            self._hand_over().time_out()
        else:
            self.close()

    # --- requests ---------------------------------------------------------------------------

    def _next(self) -> None:
        """Serve the buffered requests whose heads are complete; hand over what the edge leaves.

        One after another while each is answered at once (an error, say); it stops at one that
        is still being served, and ``finished`` calls it again.
        """
        buf = self._buf
        while (
            buf
            and self._exchange is None
            and self._lent is None
            and not self._discard
            and not self.closed
        ):
            end = buf.find(b"\r\n\r\n", self._scan_from)
            if end < 0:
                if (
                    len(buf) > MAX_HEAD_SIZE  # aiohttp's side refuses it (400)
                    or buf[0] not in TOKEN_BYTES  # no method starts so (TLS bytes, CR, LF): 400
                    or b"\n\n" in buf  # a head ended by bare LFs (or CRs): never a CRLF one;
                    or b"\r\r" in buf  # aiohttp answers it with a 400 at once
                ):
                    self._hand_over()
                else:
                    self._scan_from = max(0, len(buf) - 3)
                return
            self._scan_from = 0
            size = end + 4
            data = bytes(buf[:size])
            planned = self._plan(data)
            if planned is None or (plan := planned[1]) is None:
                length = None if planned is None else self._lendable(planned[0])
                if length is not None:
                    del buf[:size]
                    self._lend(data, length)
                else:
                    self._hand_over()
                return
            del buf[:size]
            self._start(planned[0], plan)

    def _plan(self, data: bytes) -> tuple[RequestHead, Plan | None] | None:
        """The head in ``data`` and how the edge serves it (``None``: aiohttp is to); ``None``
        for a head the edge does not read."""
        if len(data) > MAX_HEAD_SIZE or data[0] in b"\r\n":
            return None
        head = self._reader.parse(data)
        return None if head is None else (head, self.edge.plan(head))

    def _start(self, head: RequestHead, plan: Plan) -> None:
        """Serve a planned request whose head has been taken off the buffer."""
        body = None
        if plan.length:
            body = self._body = RequestBody(self, plan.length, plan.route.timeout)
            buf = self._buf
            if buf:
                taken = body.feed(bytes(buf[: plan.length]))
                del buf[:taken]
        self._exchange = exchange = Exchange(self, head, plan, body)
        self.edge.requests_served += 1
        self._starting = True
        try:
            exchange.start()  # may be answered (and ``finished``) before it returns
        finally:
            self._starting = False

    def finished(self, keep_alive: bool) -> None:
        """The current request is answered: go on with the next one, or close."""
        self._exchange = None
        body, self._body = self._body, None
        if self.closed:
            return
        if not keep_alive or self.edge.closing or (body is not None and body.stalled):
            self.close()
            return
        if body is not None and body.remaining:
            # The upstream answered before the whole body arrived: the rest is read and dropped
            # (closing with unread bytes would reset the connection, answer included). The
            # keep-alive timeout bounds how long that may take.
            self._discard = body.remaining
        self._go_on()

    def _go_on(self) -> None:
        """Idle again: read, and serve what is buffered already."""
        self.idle_epoch = self.edge.epoch
        self.resume_reading()
        if self._buf and not self._discard and not self._starting:
            self._next()  # (while starting, the ``_next`` loop that started it goes on)

    def _lendable(self, head: RequestHead) -> int | None:
        """The body length of ``head`` (a request the edge does not proxy) when it can be lent
        to aiohttp: keeping the connection alive, with a body the edge frames as it frames its
        own (``wire.plain_body_length``: no upgrade, no ``100-continue``, no body or a
        ``Content-Length`` one within ``server.max_body_size``); else ``None``."""
        if self.edge.closing or self.transport is None or not head.keep_alive:
            return None
        return plain_body_length(head.headers, self.edge.max_body_size)

    def _lend(self, data: bytes, length: int) -> None:
        """Let aiohttp answer the request of the head ``data`` and the ``length`` body bytes
        that follow it (no more); ``take_back`` ends the loan."""
        assert self.transport is not None
        lent = self._lent = self.edge.aiohttp_protocol(lender=self)
        shim = self._lent_transport = LentTransport(self.transport, self)
        lent.connection_made(shim)
        if self.write_paused:
            lent.pause_writing()
        buf = self._buf
        body = bytes(buf[:length])
        del buf[:length]
        self._lent_body = length - len(body)
        lent.data_received(data + body if body else data)

    def take_back(self, lent: GatewayRequestHandler, *, keep_alive: bool) -> None:
        """aiohttp has written the whole answer to the lent request (``GatewayRequestHandler``).

        Unless the connection ends with it (then aiohttp closes it), the edge lets aiohttp's
        handler go — it is told the connection is gone, its ``close`` no longer reaches the
        client — and goes on with what came after, once aiohttp's task step is over.
        """
        if lent is not self._lent or self.closed or not keep_alive:
            return
        shim = self._lent_transport
        assert shim is not None
        shim.detached = True
        self._lent = None
        self._lent_transport = None
        # A body aiohttp answered before it all came: the rest is read and dropped, as the edge
        # does for its own requests (never taken for the head of a next request).
        self._discard, self._lent_body = self._lent_body, 0
        asyncio.get_running_loop().call_soon(self._taken_back, lent)

    def _taken_back(self, lent: GatewayRequestHandler) -> None:
        lent.connection_lost(None)  # aiohttp forgets the connection; its task ends
        if self.closed or self._exchange is not None:
            return  # (bytes that came meanwhile started the next request already)
        if self.edge.closing:
            self.close()
            return
        self._go_on()

    def _hand_over(self) -> GatewayRequestHandler:
        """Make aiohttp's server the protocol of this connection, from the buffered bytes on."""
        transport = self.transport
        assert transport is not None and self._exchange is None
        self.edge.untrack(self)
        protocol = self.edge.aiohttp_protocol()
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        if self.write_paused:
            protocol.pause_writing()
        if self._reading_paused:
            self._reading_paused = False
            transport.resume_reading()
        data = bytes(self._buf)
        self._buf.clear()
        if data:
            protocol.data_received(data)
        return protocol
