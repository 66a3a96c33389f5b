"""The one place where errors become the envelope of SPEC §2 (auth API and proxy alike)."""

from __future__ import annotations

import logging

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from auth.errors import AuthError
from gateway.envelope import error_response
from gateway.errors import GatewayError, status_and_headers

_LOGGER = logging.getLogger(__name__)
_KEPT_HEADERS = ("Allow", "Retry-After", "WWW-Authenticate")


def error_middleware() -> Middleware:
    """Turn raised errors, aiohttp's own HTTP errors and crashes into envelopes."""

    @web.middleware
    async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except (GatewayError, AuthError) as exc:
            status, details, headers = status_and_headers(exc)
            return error_response(status, details, headers)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            kept = {k: v for k, v in exc.headers.items() if k in _KEPT_HEADERS}
            return error_response(exc.status, _details(exc, request), kept)
        except Exception:
            # SECURITY: the details stay in the log; the client gets a generic message.
            _LOGGER.exception("unhandled error on %s %s", request.method, request.path)
            return error_response(500)

    return errors


def _details(exc: web.HTTPException, request: web.Request) -> list[str]:
    if exc.status == 405:
        return [f"method {request.method} is not allowed here"]
    if exc.status == 413:
        return [f"the body is larger than the limit of {request.client_max_size} bytes"]
    return []
