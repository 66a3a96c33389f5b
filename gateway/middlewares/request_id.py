"""``X-Request-Id``: kept when the client sent a sane one, generated otherwise, echoed back."""

from __future__ import annotations

import itertools
import os
import re

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

REQUEST_ID = web.RequestKey("request_id", str)
HEADER = "X-Request-Id"
# A random per-process prefix and a counter: unique across processes and restarts without a
# getrandom() system call per request (ids need to be unique, not secret).
_PREFIX = os.urandom(10).hex()
_COUNTER = itertools.count(1)
_VALID = re.compile(r"^[A-Za-z0-9._:@/+=-]{1,128}$")


def request_id_middleware() -> Middleware:
    """Store the request id on the request (``request[REQUEST_ID]``)."""

    @web.middleware
    async def request_id(request: web.Request, handler: Handler) -> web.StreamResponse:
        sent = request.headers.get(HEADER)
        if sent is None or not _VALID.match(sent):
            sent = f"{_PREFIX}{next(_COUNTER):012x}"
        request[REQUEST_ID] = sent
        return await handler(request)

    return request_id


async def add_request_id(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare`` hook: return the id on every response, streamed ones too."""
    rid = request.get(REQUEST_ID)
    if rid is not None:
        response.headers[HEADER] = rid
    # SECURITY: do not advertise the Python/aiohttp versions (an upstream's own Server stays).
    response.headers.setdefault("Server", "gateway")
