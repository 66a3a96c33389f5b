"""Which headers cross the proxy, in each direction, and which the gateway sets itself.

Towards the upstream (``request_lines_for_upstream``):

- Hop-by-hop headers (``HOP_BY_HOP``, in ``-`` or ``_`` spelling) and every header named in
  ``Connection`` are dropped (RFC 9110 §7.6.1). ``Transfer-Encoding`` is one of them: the
  forwarder streams the body and frames it itself. ``Content-Length`` is kept: it is end-to-end,
  and aiohttp has already refused a request carrying both it and ``Transfer-Encoding``.
- Identity headers are dropped in every spelling: names are compared after lower-casing and
  replacing ``_`` with ``-``, so ``X-User-Id``, ``x_user_id`` and ``X_Is_Admin`` all go (servers
  built on CGI/WSGI conventions read ``X_User_Id`` as ``X-User-Id``). The gateway then injects
  ``X-User-Id`` and ``X-Is-Admin: true|false`` only for an authenticated principal.
- Headers the gateway owns are dropped in every spelling and set afresh: ``Host``,
  ``X-Forwarded-Proto``, ``X-Forwarded-Host``, ``X-Request-Id``. ``X-Forwarded-For`` keeps the
  client's chain (exact spelling only) with ``client_ip`` appended. ``Forwarded``,
  ``X-Forwarded-Port``, ``X-Forwarded-Prefix`` and ``X-Real-IP`` are dropped: the gateway does
  not produce them and a client copy would be trusted by upstreams that read them. Which client
  IP to append (socket peer, or a value from a trusted proxy) is the caller's decision.
- ``Content-Length`` is never dropped because ``Connection`` names it (in either direction):
  the body follows as it came, framed by it.
- ``Expect`` is dropped: the gateway answers ``100-continue`` itself, once the request is
  admitted (``middlewares.connection``).
- ``Host`` is the client's when the route has ``preserve_host`` (``host`` if it sent none), else
  the upstream's authority.

Towards the client (``response_lines_for_client``): hop-by-hop and ``Connection``-named headers
and every ``Access-Control-*`` header are dropped (the edge CORS policy sets its own, SPEC §5),
and ``X-Request-Id`` (the gateway returns its own).
``Content-Length`` and ``Content-Encoding`` are kept as sent: the forwarder must therefore pass
the upstream body on without decompressing it (its client, ``upstream_pool``, never does) and
drop ``Content-Length`` itself if it ever changes the body.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Final

from multidict import CIMultiDict

__all__ = [
    "CONTENT_LENGTH",
    "DATE",
    "HOP_BY_HOP",
    "IDENTITY_HEADERS",
    "SERVER",
    "X_IS_ADMIN",
    "X_REQUEST_ID",
    "X_USER_ID",
    "header_lines_as_multidict",
    "is_identity_header",
    "request_lines_for_upstream",
    "response_headers_for_client",
    "response_lines_for_client",
]

X_USER_ID: Final = "X-User-Id"
X_IS_ADMIN: Final = "X-Is-Admin"
X_REQUEST_ID: Final = "X-Request-Id"

HOP_BY_HOP: Final = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
"""Lower-case names of headers that describe one connection and are never forwarded."""

IDENTITY_HEADERS: Final = frozenset({"x-user-id", "x-is-admin"})
"""Canonical (lower-case, ``-``) names of the headers only the gateway may set."""

_GATEWAY_OWNED: Final = frozenset(
    {
        "host",
        "expect",
        "forwarded",
        "x-forwarded-for",
        "x-forwarded-proto",
        "x-forwarded-host",
        "x-forwarded-port",
        "x-forwarded-prefix",
        "x-real-ip",
        "x-request-id",
    }
)
"""Canonical names of request headers whose client copies never reach the upstream."""

_HOP_BY_HOP_BYTES: Final = frozenset(name.encode() for name in HOP_BY_HOP)

_DROPPED_REQUEST: Final = HOP_BY_HOP | IDENTITY_HEADERS | _GATEWAY_OWNED
"""Canonical names of every request header the loop of ``request_lines_for_upstream`` drops."""

_DROPPED_REQUEST_BYTES: Final = frozenset(name.encode() for name in _DROPPED_REQUEST)

_OPTIONS_DROPPED_ANYWAY: Final = frozenset({b"keep-alive", b"upgrade"})
"""``Connection`` values (lower case) that name only hop-by-hop headers: most messages'."""


_HOST: Final = re.compile(r"(?:\[[0-9A-Fa-f:.]{2,45}\]|[A-Za-z0-9._~-]+)(?::([0-9]{1,5}))?")
"""``host [ ":" port ]``: an IP literal in brackets, or a name of letters, digits and ``-._~``
(an IPv4 address is one; internationalised names come punycoded), with an optional port.
Stricter than RFC 3986's reg-name, which also allows ``%`` escapes and the sub-delimiters
``!$&'()*+,;=``: no DNS name has them, and in ``X-Forwarded-Host`` a comma splits the value
for upstreams that read it as a list, a quote or parenthesis ends up in the links they build."""


def is_valid_host(value: str) -> bool:
    """True when a ``Host`` value is a ``host [ ":" port ]`` (``_HOST``), port ≤ 65535.

    What the gateway passes on as ``X-Forwarded-Host`` (and, on ``preserve_host`` routes, as
    ``Host``): upstreams build links from it, so ``evil.com/admin``, ``a b`` or an empty value
    are refused (400) rather than relayed (RFC 9112: "MUST respond with a 400").
    """
    match = _HOST.fullmatch(value)
    if match is None:
        return False
    port = match.group(1)
    return port is None or int(port) <= 65535


def _canonical_name(name: str) -> str:
    """Lower-case ``name`` and spell ``_`` as ``-``, the way CGI-style servers read it."""
    return name.lower().replace("_", "-")


def is_identity_header(name: str) -> bool:
    """True when ``name`` is ``X-User-Id`` or ``X-Is-Admin`` in any case or ``_`` spelling."""
    return _canonical_name(name) in IDENTITY_HEADERS


def _connection_options(value: bytes, named: set[bytes] | None) -> set[bytes] | None:
    """``named`` plus the header names (lower case) a ``Connection`` field's ``value`` lists.

    Never ``content-length``: it frames the body the gateway passes on as it came, in either
    direction. ``Connection: content-length`` (which RFC 9110 §7.6.1 forbids: a connection
    option never names an end-to-end field) must not strip it, or the next hop would read that
    body as the next message — a request the gateway never checked.
    """
    value = value.lower()
    if value in _OPTIONS_DROPPED_ANYWAY:
        return named
    if named is None:
        named = set()
    named.update(option for token in value.split(b",") if (option := token.strip()))
    named.discard(b"content-length")
    return named


def _lower_name(line: bytes) -> bytes:
    """The lower-case name of a header line ``b"Name: value"``."""
    return line.partition(b":")[0].lower()


def _unsafe(value: str | bytes) -> bool:
    """True if ``value`` holds a CR, LF or NUL: it could split or end a header line."""
    if isinstance(value, str):
        return value.isprintable() is False and any(c in value for c in "\r\n\x00")
    return b"\r" in value or b"\n" in value or b"\x00" in value


def _check(values: dict[str, str | bytes]) -> None:
    """Raise ``ValueError`` naming the first header whose value is ``_unsafe``."""
    for name, value in values.items():
        if _unsafe(value):
            raise ValueError(f"{name}: header value contains CR, LF or NUL")


def request_lines_for_upstream(
    fields: Sequence[tuple[bytes, bytes]],
    *,
    client_ip: str,
    proto: str,
    host: str,
    request_id: str,
    principal_user_id: int | None,
    principal_is_admin: bool | None,
    preserve_host: bool,
    upstream_host: str,
) -> list[bytes]:
    """The header lines (``b"Name: value"``) to send upstream for a client request.

    ``fields`` are the client's header fields as they came (``(name, value)`` bytes, in order);
    they cross unchanged or not at all. ``host`` and ``proto`` are the client-facing host and
    scheme (for ``X-Forwarded-*``), ``upstream_host`` the upstream authority
    (``Route.authority``). Identity headers are set only when ``principal_user_id`` is not
    ``None``; ``principal_is_admin=None`` counts as ``false``. ``ValueError`` if a value the
    gateway sets could split a line.
    """
    lines = [b""]  # the Host line, set below
    named: set[bytes] | None = None
    chain: list[bytes] = []
    client_host: bytes | None = None
    for name, value in fields:
        lower = name.lower()
        if lower.replace(b"_", b"-") in _DROPPED_REQUEST_BYTES:
            if lower == b"x-forwarded-for":
                chain.append(value)
            elif lower == b"connection":
                named = _connection_options(value, named)
            elif lower == b"host" and client_host is None:
                client_host = value
            continue
        lines.append(name + b": " + value)
    if named:  # (rare) headers the Connection header names
        lines = [line for line in lines if _lower_name(line) not in named]

    if _unsafe(f"{client_ip}{proto}{host}{request_id}{upstream_host}"):  # all at once
        _check(
            {
                "Host": upstream_host,
                "X-Forwarded-For": client_ip,
                "X-Forwarded-Proto": proto,
                "X-Forwarded-Host": host,
                "X-Request-Id": request_id,
            }
        )
    host_bytes = host.encode("utf-8", "surrogateescape")
    if preserve_host:
        host_value = client_host or host_bytes
        _check({"Host": host_value})
    else:
        host_value = upstream_host.encode()
    client = client_ip.encode()
    if chain:
        parts = [part for value in chain for item in value.split(b",") if (part := item.strip())]
        forwarded_for = b", ".join([*parts, client])
        _check({"X-Forwarded-For": forwarded_for})
    else:
        forwarded_for = client
    lines[0] = b"Host: " + host_value
    # Every name set below was dropped from the client's fields above, in every spelling.
    lines.append(b"X-Forwarded-For: " + forwarded_for)
    lines.append(b"X-Forwarded-Proto: " + proto.encode())
    lines.append(b"X-Forwarded-Host: " + host_bytes)
    lines.append(b"X-Request-Id: " + request_id.encode())
    if principal_user_id is not None:
        lines.append(b"X-User-Id: %d" % principal_user_id)
        lines.append(b"X-Is-Admin: true" if principal_is_admin else b"X-Is-Admin: false")
    return lines


def header_lines_as_multidict(lines: Sequence[bytes]) -> CIMultiDict[str]:
    """Header lines (``b"Name: value"``) decoded as aiohttp decodes headers."""
    headers: CIMultiDict[str] = CIMultiDict()
    for line in lines:
        name, _, value = line.partition(b": ")
        headers.add(name.decode("latin-1"), value.decode("utf-8", "surrogateescape"))
    return headers


SERVER: Final = 1
DATE: Final = 2
CONTENT_LENGTH: Final = 4
"""Marks of ``response_lines_for_client``: which of these headers the upstream's answer has."""

_MARKS: Final = {b"server": SERVER, b"date": DATE, b"content-length": CONTENT_LENGTH}

_DROPPED_RESPONSE_BYTES: Final = _HOP_BY_HOP_BYTES | {b"x-request-id"}


def response_lines_for_client(fields: Sequence[tuple[bytes, bytes]]) -> tuple[list[bytes], int]:
    """The header lines (``b"Name: value"``) of an upstream response that are passed on.

    ``fields`` are the response's header fields as they came (``UpstreamConnection.fields``):
    names are tokens (the parser refused anything else), so ASCII lower-casing is exact. The
    upstream's ``X-Request-Id`` goes too: the client gets the gateway's. With the lines, the
    ``SERVER | DATE | CONTENT_LENGTH`` marks of those among them.
    """
    lines: list[bytes] = []
    marks = 0
    named: set[bytes] | None = None
    for name, value in fields:
        lower = name.lower()
        if lower in _DROPPED_RESPONSE_BYTES or lower.startswith(b"access-control-"):
            if lower == b"connection":
                named = _connection_options(value, named)
            continue
        if lower in _MARKS:
            marks |= _MARKS[lower]
        lines.append(name + b": " + value)
    if named:  # (rare) headers the Connection header names: dropped, marks counted again
        lines = [line for line in lines if _lower_name(line) not in named]
        marks = 0
        for line in lines:
            marks |= _MARKS.get(_lower_name(line), 0)
    return lines, marks


def response_headers_for_client(fields: Sequence[tuple[bytes, bytes]]) -> CIMultiDict[str]:
    """``response_lines_for_client``, decoded as aiohttp's client decodes headers."""
    return header_lines_as_multidict(response_lines_for_client(fields)[0])
