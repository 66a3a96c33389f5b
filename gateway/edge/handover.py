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
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from aiohttp import HttpVersion11, web, web_protocol

from gateway.envelope import error_response
from gateway.middlewares.connection import UNSUPPORTED_VERSION, is_supported
from gateway.middlewares.request_id import HEADER, REQUEST_ID, SERVER_NAME, request_id_for

if TYPE_CHECKING:
    from gateway.edge.connection import EdgeConnection

__all__ = ["GatewayRequestHandler", "LentTransport", "unread_heads_as_http11"]

_LOGGER = logging.getLogger(__name__)
RequestFactory = Callable[..., web.BaseRequest]


class GatewayRequestHandler(web_protocol.RequestHandler):
    """aiohttp's protocol for a connection the edge hands over or lends.

    aiohttp answers a request head it cannot parse (and an error that escaped the app) itself,
    with a text page naming the Python and aiohttp versions in ``Server``; these are envelopes
    like every other answer: 400 "Validation failed" / "malformed HTTP request", or a bare 500,
    with ``Server: gateway`` and an ``X-Request-Id``. The connection still closes after it.
    (Its status line says HTTP/1.1: see ``unread_heads_as_http11``.)
    A malformed request is the client's error: one INFO line (the access log has it too), not
    aiohttp's ERROR with a traceback per scanner probe.
    """

    __slots__ = ("_lender",)

    def __init__(self, *args: Any, lender: EdgeConnection | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._lender = lender

    async def finish_response(
        self, request: web.BaseRequest, resp: web.StreamResponse, start_time: float | None
    ) -> tuple[web.StreamResponse, bool]:
        if isinstance(resp, web.HTTPException) and request.get(REQUEST_ID) is None:
            # aiohttp answered before the app's middlewares ran: an ``Expect`` other than
            # ``100-continue`` (417). Its text page would echo the header and name aiohttp's
            # version; the answer is an envelope like every other, and the connection ends.
            _LOGGER.info("refused before the app: %s %s", resp.status, resp.reason)
            resp = _closing_envelope(
                resp.status,
                ["only the 100-continue expectation is supported"] if resp.status == 417 else [],
            )
        answered, reset = await super().finish_response(request, resp, start_time)
        lender, self._lender = self._lender, None
        if lender is not None:
            # The whole answer is written. Back to the edge, unless this connection ends here
            # (aiohttp closes it: the ``LentTransport`` passes that on).
            lender.take_back(self, keep_alive=answered.keep_alive is not False and not reset)
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
            reason = (message or type(exc).__name__).splitlines()[0][:200]
            _LOGGER.info("malformed request from %s: %s", request.remote, reason)
            details = ["malformed HTTP request"]
        return _closing_envelope(status, details)


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
