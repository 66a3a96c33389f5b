"""JSON bodies: the error envelope of SPEC §2 and the success bodies of the auth API."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

JSON_CONTENT_TYPE = "application/json"

GENERAL_MESSAGES: Mapping[int, str] = {
    400: "Validation failed",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Resource not found",
    405: "Method not allowed",
    409: "Resource already exists or cannot be changed in its current state",
    413: "Request body too large",
    415: "Unsupported media type",
    429: "Too many requests",
    500: "Internal server error",
    502: "Bad gateway",
    503: "Service unavailable",
    504: "Gateway timeout",
}


def general_message(status: int) -> str:
    """``errors[0]`` for a status: SPEC's wording, or the HTTP reason phrase."""
    if status in GENERAL_MESSAGES:
        return GENERAL_MESSAGES[status]
    from http import HTTPStatus

    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def timestamp() -> str:
    """Now, as ``2026-01-15T10:30:00.000Z``."""
    now = datetime.now(UTC)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"


def error_body(status: int, details: list[str] | tuple[str, ...] = ()) -> bytes:
    """The envelope for an error the gateway produces."""
    body = {
        "isSuccess": False,
        "statusCode": status,
        "data": None,
        "errors": [general_message(status), *details],
        "timestamp": timestamp(),
    }
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def error_response(
    status: int, details: list[str] | tuple[str, ...] = (), headers: Mapping[str, str] | None = None
) -> web.Response:
    """An error envelope as a response."""
    return web.Response(
        status=status,
        body=error_body(status, details),
        content_type=JSON_CONTENT_TYPE,
        charset="utf-8",
        headers=headers,
    )


def to_camel(key: str) -> str:
    """``refresh_expires_in`` → ``refreshExpiresIn``."""
    head, *rest = key.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def camelize(value: Any) -> Any:
    """Convert every key of nested dicts to camelCase."""
    if isinstance(value, dict):
        return {to_camel(k): camelize(v) for k, v in value.items()}
    if isinstance(value, list):
        return [camelize(v) for v in value]
    return value


def json_response(data: dict[str, Any], *, status: int = 200, camel: bool = False) -> web.Response:
    """A success body: compact UTF-8 JSON with sorted keys (as the seed examples show)."""
    payload = camelize(data) if camel else data
    text = json.dumps(payload, ensure_ascii=False, separators=(",", ":"), sort_keys=True)
    return web.Response(
        status=status, body=text.encode("utf-8"), content_type=JSON_CONTENT_TYPE, charset="utf-8"
    )
