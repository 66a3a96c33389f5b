"""What aiohttp's side of a connection does after an answer, and which requests it refuses.

- A request that asked to switch protocols (``Connection: upgrade`` with an ``Upgrade``) and got
  anything but ``101 Switching Protocols`` — refused (401, 403, 404…), answered by an upstream
  that did not switch, or a WebSocket handshake that failed — ends its connection. aiohttp stops
  reading HTTP on such a connection once it has seen the upgrade request, so kept alive it would
  stay open with nobody reading it, past every keep-alive timeout, and a request pipelined
  behind it would never be answered. ``Connection: close`` ends it after the answer instead.
- A request line with another HTTP version than 1.0 or 1.1 (``HTTP/2.0``, a version-less
  ``HTTP/0.9`` line) is refused with a 400 envelope before anything else runs; its answer says
  HTTP/1.1 (``handover.unread_heads_as_http11``) and closes the connection.
- ``Expect: 100-continue`` on a proxied route is answered with ``100 Continue`` only once the
  request is admitted (route, method, token, size): a request refused before that gets its
  401/403/404/413… at once, the client never sends the body it announced, and the connection
  closes after the answer (left open, the next request's bytes would be read as that body). The
  auth API keeps aiohttp's own handling (``100 Continue`` at once). Any other expectation (in
  HTTP/1.1) is a 417 envelope on every route, decided where the request is made
  (``handover.unread_heads_as_http11`` drops the field and sets ``REFUSED_EXPECTATION``) so that
  aiohttp's own expect handler never sees it: it would echo the value in a text page, and fail
  with a 500 on one that is not UTF-8.
"""

from __future__ import annotations

from aiohttp import HttpVersion10, HttpVersion11, web
from aiohttp.typedefs import Handler, Middleware

from gateway.errors import BadRequest, ExpectationFailed

__all__ = [
    "REFUSED_EXPECTATION",
    "UNSUPPORTED_VERSION",
    "close_refused_upgrade",
    "close_unasked_body",
    "expect_after_admission",
    "http_version_middleware",
    "is_refused_expectation",
    "send_deferred_continue",
]

UNSUPPORTED_VERSION = web.RequestKey("unsupported_http_version", str)
"""The version a request line named when it was not 1.0 or 1.1 (set by the request factory)."""

REFUSED_EXPECTATION = web.RequestKey("refused_expectation", bool)
"""Set (by the request factory) on a request whose ``Expect`` was not ``100-continue``."""

CONTINUE_DEFERRED = web.RequestKey("continue_deferred", bool)
"""True while a request's ``100 Continue`` waits for the request to be admitted."""

_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"

_SUPPORTED = (HttpVersion10, HttpVersion11)


def is_supported(version: tuple[int, int]) -> bool:
    """True for HTTP/1.0 and HTTP/1.1."""
    return version in _SUPPORTED


def is_refused_expectation(version: tuple[int, int], expect: str | None) -> bool:
    """True for an HTTP/1.1 ``Expect`` other than ``100-continue`` (HTTP/1.0 has none: its
    ``Expect`` is ignored, as aiohttp ignores it)."""
    return expect is not None and version == HttpVersion11 and expect.lower() != "100-continue"


def http_version_middleware() -> Middleware:
    """Refuse a request whose request line named an HTTP version the gateway does not speak,
    or whose ``Expect`` it cannot meet (both noted by the request factory)."""

    @web.middleware
    async def http_version(request: web.Request, handler: Handler) -> web.StreamResponse:
        version = request.get(UNSUPPORTED_VERSION)
        if version is not None:
            raise BadRequest(f"HTTP version {version} is not supported (HTTP/1.1 is)")
        if request.get(REFUSED_EXPECTATION, False):
            raise ExpectationFailed("only the 100-continue expectation is supported")
        return await handler(request)

    return http_version


async def close_refused_upgrade(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare`` hook: end the connection of an upgrade request not switched."""
    if response.status != 101 and _asks_for_upgrade(request):
        _close_after(response)


def _close_after(response: web.StreamResponse) -> None:
    """aiohttp closes the connection after ``response``, and the answer says so."""
    response.force_close()
    # (aiohttp 3.14 writes ``Connection`` before the hooks run: say it here too.)
    response.headers["Connection"] = "close"


def _asks_for_upgrade(request: web.Request) -> bool:
    """``Connection: upgrade`` with an ``Upgrade`` field: what makes aiohttp's parser stop
    reading HTTP on the connection (llhttp's upgrade flag)."""
    if "Upgrade" not in request.headers:
        return False
    return any(
        token.strip().lower() == "upgrade"
        for value in request.headers.getall("Connection", ())
        for token in value.split(",")
    )


async def expect_after_admission(request: web.Request) -> None:
    """The proxy route's ``expect_handler``: ``100-continue`` waits for
    ``send_deferred_continue``. (Any other ``Expect`` never gets here: see the module doc.)"""
    if request.version == HttpVersion11 and request.body_exists:
        request[CONTINUE_DEFERRED] = True


async def send_deferred_continue(request: web.Request) -> None:
    """The request is admitted: ask the client for the body it announced, if it waits."""
    if request.get(CONTINUE_DEFERRED, False):
        request[CONTINUE_DEFERRED] = False
        await request.writer.write(_CONTINUE)
        request.writer.output_size = 0  # (the answer's size starts after the interim one)


async def close_unasked_body(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare`` hook: a request refused while its ``100 Continue`` was deferred
    ends its connection (its client will not send the body; the next bytes are not one)."""
    if request.get(CONTINUE_DEFERRED, False):
        _close_after(response)
