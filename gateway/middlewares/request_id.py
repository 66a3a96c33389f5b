"""``X-Request-Id``: kept when the client sent a sane one, generated otherwise, echoed back."""

from __future__ import annotations

import re
import uuid

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

REQUEST_ID = web.RequestKey("request_id", str)
HEADER = "X-Request-Id"
_VALID = re.compile(r"^[A-Za-z0-9._:@/+=-]{1,128}$")


def request_id_middleware() -> Middleware:
    """Store the request id on the request (``request[REQUEST_ID]``)."""

    @web.middleware
    async def request_id(request: web.Request, handler: Handler) -> web.StreamResponse:
        sent = request.headers.get(HEADER)
        request[REQUEST_ID] = sent if sent is not None and _VALID.match(sent) else uuid.uuid4().hex
        return await handler(request)

    return request_id


async def add_request_id(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare`` hook: return the id on every response, streamed ones too."""
    rid = request.get(REQUEST_ID)
    if rid is not None:
        response.headers[HEADER] = rid
    # SECURITY: do not advertise the Python/aiohttp versions (an upstream's own Server stays).
    response.headers.setdefault("Server", "gateway")
