"""Which headers cross the proxy, in each direction, and which the gateway sets itself.

Towards the upstream (``request_headers_for_upstream``):

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
- ``Expect`` is dropped: the gateway has already answered ``100-continue`` to the client.
- ``Host`` is the client's when the route has ``preserve_host`` (``host`` if it sent none), else
  the upstream's authority.

Towards the client (``response_headers_for_client``): hop-by-hop and ``Connection``-named headers
and every ``Access-Control-*`` header are dropped (the edge CORS policy sets its own, SPEC §5).
``Content-Length`` and ``Content-Encoding`` are kept as sent: the forwarder must therefore pass
the upstream body on without decompressing it (its client, ``upstream_pool``, never does) and
drop ``Content-Length`` itself if it ever changes the body.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from multidict import CIMultiDict, MultiMapping

__all__ = [
    "HOP_BY_HOP",
    "IDENTITY_HEADERS",
    "X_IS_ADMIN",
    "X_REQUEST_ID",
    "X_USER_ID",
    "is_identity_header",
    "request_headers_for_upstream",
    "response_fields_for_client",
    "response_headers_for_client",
]

X_USER_ID: Final = "X-User-Id"
X_IS_ADMIN: Final = "X-Is-Admin"
X_REQUEST_ID: Final = "X-Request-Id"
X_FORWARDED_FOR: Final = "X-Forwarded-For"
X_FORWARDED_PROTO: Final = "X-Forwarded-Proto"
X_FORWARDED_HOST: Final = "X-Forwarded-Host"

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

_USUAL_CONNECTION_BYTES: Final = frozenset({b"keep-alive", b"close", b"upgrade"})
"""``Connection`` values that name no header beyond the hop-by-hop ones."""

_DROPPED_REQUEST: Final = HOP_BY_HOP | IDENTITY_HEADERS | _GATEWAY_OWNED
"""Canonical names of every request header the loop of ``request_headers_for_upstream`` drops."""

_NOTHING: Final[frozenset[str]] = frozenset()

_USUAL_CONNECTION: Final = {
    value: frozenset({value.lower()})
    for value in ("keep-alive", "Keep-Alive", "close", "Close", "upgrade", "Upgrade")
}
"""``Connection`` values seen on almost every message, with their token sets made once."""


def _canonical_name(name: str) -> str:
    """Lower-case ``name`` and spell ``_`` as ``-``, the way CGI-style servers read it."""
    return name.lower().replace("_", "-")


def is_identity_header(name: str) -> bool:
    """True when ``name`` is ``X-User-Id`` or ``X-Is-Admin`` in any case or ``_`` spelling."""
    return _canonical_name(name) in IDENTITY_HEADERS


def _connection_tokens(headers: MultiMapping[str]) -> frozenset[str]:
    """Lower-case header names listed in every ``Connection`` header of ``headers``."""
    values = headers.getall("Connection", ())
    if not values:
        return _NOTHING
    if len(values) == 1 and (usual := _USUAL_CONNECTION.get(values[0])) is not None:
        return usual
    return frozenset(
        token.strip().lower() for value in values for token in value.split(",") if token.strip()
    )


def _checked(name: str, value: str) -> str:
    """Return ``value``; raise ``ValueError`` if it could split or end a header line."""
    if "\r" in value or "\n" in value or "\x00" in value:
        raise ValueError(f"{name}: header value contains CR, LF or NUL")
    return value


def request_headers_for_upstream(
    incoming: MultiMapping[str],
    *,
    client_ip: str,
    proto: str,
    host: str,
    request_id: str,
    principal_user_id: int | None,
    principal_is_admin: bool | None,
    preserve_host: bool,
    upstream_host: str,
) -> CIMultiDict[str]:
    """Headers to send upstream for a client request with headers ``incoming``.

    ``host`` and ``proto`` are the client-facing host and scheme (for ``X-Forwarded-*``),
    ``upstream_host`` the upstream authority (``Route.authority``). Identity headers are set
    only when ``principal_user_id`` is not ``None``; ``principal_is_admin=None`` counts as
    ``false``.
    """
    connection_named = _connection_tokens(incoming)
    host_value = (incoming.get("Host") or host) if preserve_host else upstream_host
    kept = [("Host", _checked("Host", host_value))]
    for name, value in incoming.items():
        lower = name.lower()
        if lower.replace("_", "-") in _DROPPED_REQUEST or (
            connection_named and lower in connection_named
        ):
            continue
        kept.append((name, value))

    chain = incoming.getall(X_FORWARDED_FOR, ())
    if chain:
        parts = [part for value in chain for part in (item.strip() for item in value.split(","))]
        forwarded_for = ", ".join([*(part for part in parts if part), client_ip])
    else:
        forwarded_for = client_ip
    # Every name set below was dropped from the client's headers above, in every spelling.
    kept.append((X_FORWARDED_FOR, _checked(X_FORWARDED_FOR, forwarded_for)))
    kept.append((X_FORWARDED_PROTO, _checked(X_FORWARDED_PROTO, proto)))
    kept.append((X_FORWARDED_HOST, _checked(X_FORWARDED_HOST, host)))
    kept.append((X_REQUEST_ID, _checked(X_REQUEST_ID, request_id)))
    if principal_user_id is not None:
        kept.append((X_USER_ID, str(principal_user_id)))
        kept.append((X_IS_ADMIN, "true" if principal_is_admin else "false"))
    return CIMultiDict(kept)


def response_fields_for_client(
    fields: Sequence[tuple[bytes, bytes]],
) -> list[tuple[bytes, bytes, bytes]]:
    """``(lower-case name, name, value)`` of the upstream response ``fields`` passed on.

    ``fields`` are the response's header fields as they came (``UpstreamConnection.fields``):
    names are tokens (the parser refused anything else), so ASCII lower-casing is exact.
    """
    kept: list[tuple[bytes, bytes, bytes]] = []
    named: set[bytes] | None = None
    for name, value in fields:
        lower = name.lower()
        if lower in _HOP_BY_HOP_BYTES or lower.startswith(b"access-control-"):
            if lower == b"connection" and value.lower() not in _USUAL_CONNECTION_BYTES:
                if named is None:
                    named = set()
                named.update(token.strip().lower() for token in value.split(b","))
            continue
        kept.append((lower, name, value))
    if named:
        kept = [field for field in kept if field[0] not in named]
    return kept


def response_headers_for_client(fields: Sequence[tuple[bytes, bytes]]) -> CIMultiDict[str]:
    """``response_fields_for_client``, decoded as aiohttp's client decodes headers."""
    return CIMultiDict(
        (name.decode("latin-1"), value.decode("utf-8", "surrogateescape"))
        for _, name, value in response_fields_for_client(fields)
    )
