"""``X-Request-Id``: kept when the client sent a sane one, generated otherwise, echoed back."""

from __future__ import annotations

import itertools
import os
import re

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from multidict import CIMultiDict

REQUEST_ID = web.RequestKey("request_id", str)
HEADER = "X-Request-Id"
SERVER_NAME = "gateway"
"""The ``Server`` of the gateway's own answers: no Python or aiohttp version (ASVS V14.3.3)."""
# A random per-process prefix and a counter: unique across processes and restarts without a
# getrandom() system call per request (ids need to be unique, not secret).
_PREFIX = os.urandom(10).hex()
_COUNTER = itertools.count(1)
_VALID = re.compile(r"^[A-Za-z0-9._:@/+=-]{1,128}$")


def request_id_middleware() -> Middleware:
    """Store the request id on the request (``request[REQUEST_ID]``)."""

    @web.middleware
    async def request_id(request: web.Request, handler: Handler) -> web.StreamResponse:
        request[REQUEST_ID] = request_id_for(request.headers.get(HEADER))
        response = await handler(request)
        if not response.prepared:
            # Before aiohttp prepares it: aiohttp (3.14) sets its own ``Server`` before the
            # ``on_response_prepare`` hooks run. (Responses the handler streamed itself name
            # the server where they are made: ``forwarder``, ``websocket``.)
            response.headers.setdefault("Server", SERVER_NAME)
        return response

    return request_id


def request_id_for(sent: str | None) -> str:
    """The id a request goes by: the one the client ``sent`` when it is sane, else a new one."""
    if sent is None or not _VALID.match(sent):
        return f"{_PREFIX}{next(_COUNTER):012x}"
    return sent


async def add_request_id(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare`` hook: return the id on every response, streamed ones too."""
    stamp_response(response.headers, request.get(REQUEST_ID))


def stamp_response(headers: CIMultiDict[str], request_id: str | None) -> None:
    """Return ``request_id`` in ``X-Request-Id`` and name the server on response ``headers``."""
    if request_id is not None:
        headers[HEADER] = request_id
    # SECURITY: do not advertise the Python/aiohttp versions (an upstream's own Server stays).
    headers.setdefault("Server", SERVER_NAME)
