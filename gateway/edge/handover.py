"""aiohttp's side of a connection: handed over for good, or lent for one request.

A request the edge does not proxy itself is aiohttp's (``EdgeConnection``). When its head is
one the edge has parsed, keeps the connection alive, asks for no upgrade and no
``100-continue``, and has no body or a ``Content-Length`` one within ``server.max_body_size``,
the connection is *lent*: a ``GatewayRequestHandler`` gets a ``LentTransport`` (the
connection's transport, whose ``close`` the edge decides on) and exactly the bytes of that
request, nothing more. Once aiohttp has written the whole answer (``finish_response``), the edge
takes the connection back — aiohttp's handler is told the connection is gone, and forgets it;
body bytes it did not wait for are read and dropped — and serves what follows, pipelined bytes
included, itself. So a login, the auth API, a health probe or a CORS preflight no longer moves
a browser's keep-alive connection to aiohttp's slower path for good. Anything else (a chunked
body, an upgrade, a head the edge could not read, ``Connection: close``) hands the connection
over for good, as it always was.

aiohttp's side keeps the edge's limits (``GatewayRequestHandler``): a request head over
``wire.MAX_HEAD_SIZE`` is a 400 envelope, and the edge's sweeper (``EdgeServer._sweep``) times
its connections out as it times out its own — closed once idle for two ticks of half the
keep-alive timeout (37.5 to 75 s), with a 408 envelope when part of a head came and the rest did
not — and holds a body of the gateway's own routes (the auth API) to two ticks as well.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

from aiohttp import HttpVersion11, hdrs, web, web_protocol
from aiohttp.http_exceptions import BadHttpMessage
from aiohttp.http_parser import RawRequestMessage
from aiohttp.streams import EMPTY_PAYLOAD, StreamReader
from multidict import CIMultiDict, CIMultiDictProxy

from gateway.edge.wire import MAX_HEAD_SIZE
from gateway.envelope import error_response
from gateway.errors import RequestTimeout
from gateway.middlewares.connection import (
    REFUSED_EXPECTATION,
    UNSUPPORTED_VERSION,
    is_refused_expectation,
    is_supported,
)
from gateway.middlewares.request_id import HEADER, SERVER_NAME, request_id_for

if TYPE_CHECKING:
    from gateway.edge.connection import EdgeConnection
    from gateway.edge.server import EdgeServer

__all__ = ["GatewayRequestHandler", "LentTransport", "unread_heads_as_http11"]

_LOGGER = logging.getLogger(__name__)
RequestFactory = Callable[..., web.BaseRequest]

_END_OF_HEAD: Final = b"\r\n\r\n"
_OVERSIZED_HEAD: Final = f"request head over {MAX_HEAD_SIZE} bytes"
_LATE_HEAD: Final = "the request head did not arrive in time"
_LATE_BODY: Final = "the request body did not arrive in time"


class GatewayRequestHandler(web_protocol.RequestHandler):
    """aiohttp's protocol for a connection the edge hands over or lends.

    aiohttp answers a request head it cannot parse (and an error that escaped the app) itself,
    with a text page naming the Python and aiohttp versions in ``Server``; these are envelopes
    like every other answer: 400 "Validation failed" / "malformed HTTP request", or a bare 500,
    with ``Server: gateway`` and an ``X-Request-Id``. The connection still closes after it.
    (Its status line says HTTP/1.1: see ``unread_heads_as_http11``.)
    A malformed request is the client's error: one INFO line (the access log has it too), not
    aiohttp's ERROR with a traceback per scanner probe.

    The edge's limits hold here too. aiohttp's own allow a head of 128 fields of 8190 bytes
    (about 1 MiB), and wait for it as long as the connection stays open: here a head over
    ``MAX_HEAD_SIZE`` (counted as it arrives, ``data_received``) is answered with the 400
    envelope, like a field over aiohttp's limit, and nothing more is read. The edge's sweeper
    calls ``expire`` at each tick: a connection idle for two ticks (no request being answered;
    ``_since``) is closed, after a 408 envelope if part of a head came (``time_out``); a body
    of the gateway's own routes (the auth API: JSON of 64 KiB at most, which nothing else
    bounds in time) still arriving two ticks after its head fails with a 408, and the
    connection ends after that answer.
    """

    __slots__ = (
        "_body",
        "_edge",
        "_head",
        "_late",
        "_lender",
        "_pending",
        "_reads_heads",
        "_refused",
        "_since",
        "_slow",
        "_slow_since",
    )

    def __init__(
        self,
        *args: Any,
        lender: EdgeConnection | None = None,
        edge: EdgeServer | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self._lender = lender
        self._edge = edge
        self._since = 0 if edge is None else edge.epoch
        """The sweeper's tick since which no request has been answered (or since the start)."""
        self._pending = 0
        """Requests read (heads parsed, or an error queued) and not answered yet."""
        self._head = 0
        """Bytes of the request head arriving (none of it parsed into a request yet)."""
        self._reads_heads = True
        """False once no more heads are counted: an upgrade, a head aiohttp refused."""
        self._refused = False
        """True once a 400 or 408 of this handler's is queued: nothing more is read."""
        self._body: tuple[RawRequestMessage, StreamReader] | None = None
        """The request whose body is still arriving (its bytes are no head's)."""
        self._slow: StreamReader | None = None
        """That body when it is one of the gateway's own routes, held to two ticks."""
        self._slow_since = 0
        self._late: StreamReader | None = None
        """A body that did not arrive in time: its request's answer ends the connection."""

    # --- the edge's limits ------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # a 400 or 408 is on its way, and the connection ends with it
        messages = self._messages
        before = len(messages)
        if not self._reads_heads:
            super().data_received(data)
            self._pending += len(messages) - before
            return
        body = self._body
        seen = 0 if body is None else body[1].total_bytes
        super().data_received(data)
        produced = list(itertools.islice(messages, before, None))
        if body is not None:
            if not body[1].is_eof():
                if produced:  # (an error in the body: aiohttp answers it, and closes)
                    self._pending += len(produced)
                    self._reads_heads = False
                return  # all body: no head can follow a body not complete
            self._body = None
            if self._slow is body[1]:
                self._slow = None
        elif not produced:
            self._head += len(data)  # all head: the start of one aiohttp has not parsed yet
            if self._head > MAX_HEAD_SIZE:
                self._refuse(400, _OVERSIZED_HEAD)
            return
        for index, (message, _) in enumerate(produced):
            if isinstance(message, web_protocol._ErrInfo) or message.upgrade:
                # An error aiohttp answers (the connection ends with it), or a switch of
                # protocols (no more heads, or the connection ends with its refusal).
                self._pending += len(produced)
                self._reads_heads = False
                return
            if _head_size(message) > MAX_HEAD_SIZE:
                for _ in range(len(produced) - index):
                    messages.pop()  # never answered: the 400 takes their place
                self._pending += index
                self._refuse(400, _OVERSIZED_HEAD)
                return
        self._pending += len(produced)
        if produced:
            last, payload = produced[-1]
            assert isinstance(last, RawRequestMessage)
            if payload is not EMPTY_PAYLOAD and not payload.is_eof():
                # A body is arriving: its bytes are no head's, until it ends.
                self._head = 0
                self._body = (last, payload)
                edge = self._edge
                if edge is not None and edge.owns(last.url.path):
                    self._slow, self._slow_since = payload, edge.epoch
                return
            self._head = _after_last(data, last, payload, None)
        else:
            assert body is not None
            self._head = _after_last(data, body[0], body[1], seen)
        if self._head > MAX_HEAD_SIZE:
            self._refuse(400, _OVERSIZED_HEAD)

    def expire(self, expired: int) -> None:
        """One tick of the edge's sweeper: ``expired`` is the tick two ticks ago."""
        if self._refused or self.transport is None:
            return
        if self._pending:
            slow = self._slow
            if slow is not None and self._slow_since <= expired:
                self._slow = None
                if not slow.is_eof():
                    peer = self.peername
                    peer = peer[0] if isinstance(peer, tuple) else peer
                    _LOGGER.info("request body from %s not complete in time", peer)
                    self._late = slow
                    slow.set_exception(RequestTimeout(_LATE_BODY))  # the app's read: a 408
            return
        if self._since <= expired:
            self.time_out()

    def time_out(self) -> None:
        """No request head came whole in time: a 408 envelope when part of one did, and the
        connection ends (an idle one just ends, as on the edge)."""
        if self._head > 0 and self._reads_heads and not self._refused:
            self._refuse(408, _LATE_HEAD)
        else:
            self.force_close()

    def _refuse(self, status: int, reason: str) -> None:
        """Answer ``status`` (through ``handle_error``, as aiohttp answers a head it cannot
        parse) after the requests before; read nothing more."""
        self._refused = True
        self._reads_heads = False
        self._body = self._slow = None
        error = web_protocol._ErrInfo(status=status, exc=BadHttpMessage(reason), message=reason)
        self._messages.append((error, EMPTY_PAYLOAD))
        self._pending += 1
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # --- answers ----------------------------------------------------------------------------

    async def finish_response(
        self, request: web.BaseRequest, resp: web.StreamResponse, start_time: float | None
    ) -> tuple[web.StreamResponse, bool]:
        late = self._late is not None and request.content is self._late
        if late:
            # Its body did not come in time (``expire``): the rest of it will not be read.
            self._late = None
            resp.force_close()
        answered, reset = await super().finish_response(request, resp, start_time)
        self._pending = max(0, self._pending - 1)
        if self._edge is not None:
            self._since = self._edge.epoch
        lender, self._lender = self._lender, None
        if lender is not None:
            # The whole answer is written. Back to the edge, unless this connection ends here
            # (aiohttp closes it: the ``LentTransport`` passes that on).
            lender.take_back(self, keep_alive=answered.keep_alive is not False and not reset)
        if late:
            self.force_close()  # now, not after aiohttp's lingering read of the rest
        return answered, reset

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if status >= 500:
            super().handle_error(request, status, exc, message)  # logs it; raises if sent
            details = []
        else:
            if request.writer.output_size > 0:
                raise ConnectionError("a response is under way: no room for an error answer")
            if status == 408:  # (``time_out``)
                _LOGGER.info("request head from %s not complete in time", request.remote)
                details = [_LATE_HEAD]
            else:
                reason = (message or type(exc).__name__).splitlines()[0][:200]
                _LOGGER.info("malformed request from %s: %s", request.remote, reason)
                details = ["malformed HTTP request"]
        return _closing_envelope(status, details)


def _head_size(message: RawRequestMessage) -> int:
    """The size of the head ``message`` was parsed from, blank line included (give or take
    the optional whitespace around field values, which is not kept)."""
    size = len(message.method) + len(message.path) + 14  # " ", " HTTP/1.1\r\n", "\r\n"
    for name, value in message.raw_headers:
        size += len(name) + len(value) + 4  # ": ", "\r\n"
    return size


def _after_last(
    data: bytes, message: RawRequestMessage, payload: StreamReader, seen: int | None
) -> int:
    """How many bytes at the end of ``data`` (just parsed) begin the next request head: those
    after the last request to end in it, ``message``, whose head (``payload`` is
    ``EMPTY_PAYLOAD``) or body ended there. ``seen``: the bytes of that body that came in
    earlier reads; ``None`` if its head came in this one. Never more than there are (a CRLF
    CRLF inside a body can make it fewer): a head is not refused for bytes not its own."""
    if payload is EMPTY_PAYLOAD or message.chunked:
        # A head, or a chunked body: both end with CRLF CRLF, which no partial head holds.
        end = data.rfind(_END_OF_HEAD)
        return max(0, len(data) - 3) if end < 0 else len(data) - end - 4
    if message.compression is not None:
        return 0  # (its length here is the decompressed one: where it ended is not known)
    if seen is not None:
        return max(0, len(data) - (payload.total_bytes - seen))
    # Its head ended in this read too, at the CRLF CRLF just before its body.
    length = payload.total_bytes
    end = data.rfind(_END_OF_HEAD, 0, max(0, len(data) - length))
    return max(0, len(data) - length - (3 if end < 0 else end + 4))


def _closing_envelope(status: int, details: list[str]) -> web.Response:
    """An answer aiohttp makes outside the app, as the app would: the envelope, the gateway's
    ``Server`` and a fresh ``X-Request-Id`` (no middleware ran to set them); the connection
    ends after it."""
    response = error_response(
        status, details, {"Server": SERVER_NAME, HEADER: request_id_for(None)}
    )
    response.force_close()
    return response


_UNREAD_HEAD = web_protocol.ERROR._replace(version=HttpVersion11)


def _without_expect(message: RawRequestMessage) -> RawRequestMessage:
    """``message`` without its ``Expect`` field, to be answered and closed."""
    headers = CIMultiDict(
        (name, value) for name, value in message.headers.items() if name.lower() != "expect"
    )
    raw = tuple(field for field in message.raw_headers if field[0].lower() != b"expect")
    return message._replace(headers=CIMultiDictProxy(headers), raw_headers=raw, should_close=True)


def unread_heads_as_http11(make_request: RequestFactory) -> RequestFactory:
    """``web.Server.request_factory`` with HTTP/1.1 for the answer to a head aiohttp could not read.

    aiohttp answers such a head through a placeholder request (``web_protocol.ERROR``) whose
    version, HTTP/1.0, its status line then carries. The gateway speaks HTTP/1.1 (RFC 9110
    §2.5: a server sends its highest version), and the answer still says ``Connection: close``.
    """

    def request_factory(
        message: Any, payload: Any, protocol: Any, writer: Any, task: Any
    ) -> web.BaseRequest:
        if message is web_protocol.ERROR:
            message = _UNREAD_HEAD
        elif not is_supported(message.version):
            # HTTP/2.0 or a version-less (0.9) line: answered with a 400 in HTTP/1.1, and closed
            # (``connection.http_version_middleware``).
            unsupported = f"{message.version.major}.{message.version.minor}"
            message = message._replace(version=HttpVersion11, should_close=True)
            request = make_request(message, payload, protocol, writer, task)
            request[UNSUPPORTED_VERSION] = unsupported
            return request
        elif is_refused_expectation(message.version, message.headers.get(hdrs.EXPECT)):
            # Answered with a 417 envelope, and closed (``connection.http_version_middleware``);
            # without the field, aiohttp's own expect handler is not run at all.
            message = _without_expect(message)
            request = make_request(message, payload, protocol, writer, task)
            request[REFUSED_EXPECTATION] = True
            return request
        return make_request(message, payload, protocol, writer, task)

    return request_factory


class LentTransport(asyncio.Transport):
    """The client connection's transport, as aiohttp sees it while a request is lent to it.

    Writes go straight through. Reading is the edge's (it feeds aiohttp the lent head and body,
    and keeps whatever follows); aiohttp's pause and resume (a body it does not read yet) pause
    and resume the connection's reading. ``close`` closes the connection while it is lent, and
    nothing once the edge has taken it back (``detached``): that is how aiohttp's handler is let
    go without closing the client's connection.
    """

    def __init__(self, transport: asyncio.Transport, conn: EdgeConnection) -> None:
        super().__init__()
        self._transport = transport
        self._conn = conn
        self.detached = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._transport.get_extra_info(name, default)

    def is_closing(self) -> bool:
        return self.detached or self._transport.is_closing()

    def close(self) -> None:
        if not self.detached:
            self._transport.close()

    def abort(self) -> None:
        if not self.detached:
            self._transport.abort()

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not self.detached:
            self._transport.write(data)

    def writelines(self, list_of_data: Any) -> None:
        if not self.detached:
            self._transport.writelines(list_of_data)

    def can_write_eof(self) -> bool:
        return False

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size()

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._transport.get_write_buffer_limits()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._transport.set_write_buffer_limits(high, low)

    def is_reading(self) -> bool:
        return not self.detached

    def pause_reading(self) -> None:
        if not self.detached:
            self._conn.pause_reading()

    def resume_reading(self) -> None:
        if not self.detached:
            self._conn.resume_reading()
