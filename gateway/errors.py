"""Errors the HTTP layer raises, and the one mapping of domain errors to status codes.

GatewayError(status, details, headers)
├── BadRequest              400 malformed body or query
├── Unauthorized            401 (adds WWW-Authenticate: Bearer)
├── Forbidden               403
├── NotFoundError           404
├── MethodNotAllowed        405
├── PayloadTooLarge         413
├── UnsupportedMediaType    415
├── ExpectationFailed       417
├── Unimplemented           501
├── BadGateway              502
└── GatewayTimeout          504
"""

from __future__ import annotations

from collections.abc import Mapping

from auth import errors as auth_errors


class GatewayError(Exception):
    """An error answered with the envelope; ``details`` follow the general message."""

    status = 500

    def __init__(self, *details: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(*details)
        self.details = list(details)
        self.headers: dict[str, str] = dict(headers or {})


class BadRequest(GatewayError):
    """400: the request cannot be read."""

    status = 400


class Unauthorized(GatewayError):
    """401: no valid credentials."""

    status = 401


class Forbidden(GatewayError):
    """403: credentials are valid but not enough."""

    status = 403


class NotFoundError(GatewayError):
    """404: nothing here."""

    status = 404


class MethodNotAllowed(GatewayError):
    """405: the route does not take this method (``Allow`` lists those it does)."""

    status = 405


class RequestTimeout(GatewayError):
    """408: the client stopped sending its request body for longer than the route's timeout."""

    status = 408


class PayloadTooLarge(GatewayError):
    """413: body over the limit."""

    status = 413


class ExpectationFailed(GatewayError):
    """417: an ``Expect`` other than ``100-continue``."""

    status = 417


class UnsupportedMediaType(GatewayError):
    """415: body is not JSON."""

    status = 415


class Unimplemented(GatewayError):
    """501: the request needs something the gateway does not do (a transfer coding)."""

    status = 501


class BadGateway(GatewayError):
    """502: the upstream could not be reached or broke the connection."""

    status = 502


class GatewayTimeout(GatewayError):
    """504: the upstream was slower than the route's timeout."""

    status = 504


_AUTH_STATUS: Mapping[type[auth_errors.AuthError], int] = {
    auth_errors.ValidationFailed: 400,
    auth_errors.InvalidCredentials: 401,
    auth_errors.TokenInvalid: 401,
    auth_errors.AccountNotAllowed: 403,
    auth_errors.NotPermitted: 403,
    auth_errors.NotFound: 404,
    auth_errors.Conflict: 409,
    auth_errors.RateLimited: 429,
    auth_errors.DeliveryFailed: 503,
    auth_errors.Unavailable: 503,
}

BEARER_CHALLENGE = 'Bearer realm="gateway"'


def status_and_headers(exc: Exception) -> tuple[int, list[str], dict[str, str]]:
    """The status, details and extra headers for an error raised on purpose."""
    if isinstance(exc, GatewayError):
        headers = dict(exc.headers)
        if exc.status == 401:
            headers.setdefault("WWW-Authenticate", BEARER_CHALLENGE)
        return exc.status, exc.details, headers
    if isinstance(exc, auth_errors.AuthError):
        status = next((code for cls, code in _AUTH_STATUS.items() if isinstance(exc, cls)), 400)
        headers = {}
        if isinstance(exc, auth_errors.RateLimited):
            headers["Retry-After"] = str(exc.retry_after)
        if status == 401:
            headers["WWW-Authenticate"] = BEARER_CHALLENGE
        return status, exc.details, headers
    raise TypeError(f"not a mapped error: {type(exc).__name__}")
