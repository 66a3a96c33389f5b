"""Reading request bodies of the auth API: JSON objects only, bounded, never a 500."""

from __future__ import annotations

import json
from typing import Any, Final

from aiohttp import web

from gateway.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType

_OWS: Final = " \t"
"""Optional whitespace around and between the parts of a field value (RFC 9110 §5.6.3)."""

MAX_JSON_DEPTH = 32


async def read_json_object(request: web.Request, limit: int) -> dict[str, Any]:
    """The body as a JSON object, or a 400/413/415 error."""
    mime = request.content_type
    if mime != "application/json" and not (
        mime.startswith("application/") and mime.endswith("+json")
    ):
        raise UnsupportedMediaType("body: Content-Type must be application/json")
    declared = request.content_length
    if declared is not None and declared > limit:
        raise PayloadTooLarge(f"body: at most {limit} bytes")
    raw = bytearray()
    async for chunk in request.content.iter_chunked(64 * 1024):
        raw.extend(chunk)
        if len(raw) > limit:
            raise PayloadTooLarge(f"body: at most {limit} bytes")
    if not raw.strip():
        raise BadRequest("body: must be a JSON object")
    try:
        text = raw.decode(request.charset or "utf-8")
    except (UnicodeDecodeError, LookupError):
        raise BadRequest("body: not valid UTF-8") from None
    try:
        data = json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        raise BadRequest("body: malformed JSON") from None
    if not isinstance(data, dict):
        raise BadRequest("body: must be a JSON object")
    if _depth(data) > MAX_JSON_DEPTH:
        raise BadRequest("body: nested too deeply")
    return data


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _depth(value: Any, level: int = 1) -> int:
    if level > MAX_JSON_DEPTH:
        return level
    if isinstance(value, dict):
        return max((_depth(v, level + 1) for v in value.values()), default=level)
    if isinstance(value, list):
        return max((_depth(v, level + 1) for v in value), default=level)
    return level


def bearer_token(request: web.Request) -> str | None:
    """The token of ``Authorization: Bearer <token>``, or None when there is no such header.

    ``Authorization`` is a singleton field (RFC 9110 §11.6.2): a request with two is a 400,
    not a guess at which one counts (an upstream or a cache might read the other).
    """
    if len(request.headers.getall("Authorization", ())) > 1:
        raise BadRequest("more than one Authorization header")
    return bearer_from_header(request.headers.get("Authorization"))


def bearer_from_header(header: str | None) -> str | None:
    """The token of an ``Authorization`` header value, or None when it is not ``Bearer``.

    ``Bearer`` with nothing after it is a present, empty token (``""``), not "no token": on an
    ``auth: optional`` route it is a 401 like any other bad token, not an anonymous request.
    The scheme ends at the first space or tab (``Bearer<TAB>token`` is a bearer token too, so
    a bad one is a 401, never an anonymous request); ``Bearerxyz`` is another scheme.
    """
    if header is None:
        return None
    value = header.strip(_OWS)
    if value[:6].lower() != "bearer" or value[6:7] not in _OWS:  # ("" is in every str)
        return None
    return value[6:].strip(_OWS)
