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
"""

from __future__ import annotations

from aiohttp import HttpVersion10, HttpVersion11, web
from aiohttp.typedefs import Handler, Middleware

from gateway.errors import BadRequest

__all__ = ["UNSUPPORTED_VERSION", "close_refused_upgrade", "http_version_middleware"]

UNSUPPORTED_VERSION = web.RequestKey("unsupported_http_version", str)
"""The version a request line named when it was not 1.0 or 1.1 (set by the request factory)."""

_SUPPORTED = (HttpVersion10, HttpVersion11)


def is_supported(version: tuple[int, int]) -> bool:
    """True for HTTP/1.0 and HTTP/1.1."""
    return version in _SUPPORTED


def http_version_middleware() -> Middleware:
    """Refuse a request whose request line named an HTTP version the gateway does not speak."""

    @web.middleware
    async def http_version(request: web.Request, handler: Handler) -> web.StreamResponse:
        version = request.get(UNSUPPORTED_VERSION)
        if version is not None:
            raise BadRequest(f"HTTP version {version} is not supported (HTTP/1.1 is)")
        return await handler(request)

    return http_version


async def close_refused_upgrade(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare`` hook: end the connection of an upgrade request not switched."""
    if response.status != 101 and _asks_for_upgrade(request):
        response.force_close()  # aiohttp closes the connection after this answer
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
