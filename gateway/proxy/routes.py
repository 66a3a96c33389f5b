"""Routes compiled once from ``gateway.yaml`` and matched by longest prefix on segment boundaries.

A ``Route`` is the immutable, ready-to-use form of a ``RouteConfig``: its prefix is canonical
(``paths.normalise_path``), its upstream URL is split into scheme, host, port and base path, and
its methods are a frozenset. ``RouteTable.match(path)`` expects a path that has already been
normalised, so the table and the upstream see the same string.

Matching rules:

- A prefix matches itself and anything below it on a segment boundary: ``/api/v1/orders``
  matches ``/api/v1/orders``, ``/api/v1/orders/`` and ``/api/v1/orders/x``, never
  ``/api/v1/ordersx``. The prefix ``/`` matches every path.
- The longest matching prefix wins; prefixes are unique, so a match is never ambiguous.
- ``/api/v1/auth`` and everything below it is reserved for the gateway's own API: ``match``
  returns ``None`` for it whatever the table holds, and a route cannot be built on it.
- Matching is case-sensitive (``/ADMIN`` is not ``/admin``). User: an upstream that treats paths
  case-insensitively needs its own guard, or routes covering every spelling.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Final, Literal

from yarl import URL

from auth.ratelimit import Limit
from config.model import RouteConfig
from gateway.proxy.paths import PathError, normalise_path

__all__ = ["RESERVED_PREFIX", "AuthMode", "Route", "RouteTable"]

AuthMode = Literal["required", "optional", "none"]

RESERVED_PREFIX: Final = "/api/v1/auth"
"""The gateway's own auth API: never proxied."""

_DEFAULT_PORTS: Final = {"http": 80, "https": 443}


def _is_reserved(path: str) -> bool:
    """True when ``path`` is the reserved prefix or lies below it."""
    return path.startswith(RESERVED_PREFIX) and (
        len(path) == len(RESERVED_PREFIX) or path[len(RESERVED_PREFIX)] == "/"
    )


@dataclass(frozen=True, slots=True)
class Route:
    """One compiled route: where requests under ``prefix`` go and who may send them."""

    name: str
    prefix: str
    scheme: str
    host: str
    port: int
    base_path: str
    """Upstream path prefix without a trailing slash; ``""`` when the upstream URL has none."""
    auth: AuthMode
    admin: bool
    methods: frozenset[str] | None
    strip_prefix: bool
    timeout: float
    preserve_host: bool
    rate_limit: Limit | None = None
    """Requests per window on this route, counted per ``rate_key``."""
    rate_key: Literal["user", "ip"] = "user"
    authority: str = field(init=False, repr=False, compare=False)
    """``host[:port]`` of the upstream (IPv6 in brackets, default port omitted): its Host."""
    origin: tuple[str, str, int] = field(init=False, repr=False, compare=False)
    """``(scheme, host, port)``: the upstream connection pool's key."""

    def __post_init__(self) -> None:
        # Derived once here: both are read on every proxied request.
        host = f"[{self.host}]" if ":" in self.host else self.host
        if self.port != _DEFAULT_PORTS[self.scheme]:
            host = f"{host}:{self.port}"
        object.__setattr__(self, "authority", host)
        object.__setattr__(self, "origin", (self.scheme, self.host, self.port))

    @classmethod
    def from_config(cls, cfg: RouteConfig) -> Route:
        """Compile ``cfg``; raise ``ValueError`` when its prefix or upstream cannot be used."""
        where = f"route {cfg.name!r}"
        try:
            prefix = normalise_path(cfg.prefix)
        except PathError as bad:  # (a name of its own: mypyc types one name per function)
            raise ValueError(f"{where}: prefix {cfg.prefix!r}: {bad}") from None
        if prefix != "/":
            prefix = prefix.rstrip("/")
        if _is_reserved(prefix):
            raise ValueError(f"{where}: {RESERVED_PREFIX} is reserved for the gateway")
        try:
            url = URL(cfg.upstream)
            port = url.port
        except ValueError as exc:
            raise ValueError(f"{where}: upstream {cfg.upstream!r}: {exc}") from None
        if url.scheme not in _DEFAULT_PORTS or not url.raw_host or port is None:
            raise ValueError(f"{where}: upstream must be an http:// or https:// URL with a host")
        if url.raw_user is not None or url.raw_password is not None:
            raise ValueError(f"{where}: upstream must not contain credentials")
        if url.raw_query_string or url.raw_fragment:
            raise ValueError(f"{where}: upstream must not have a query or a fragment")
        try:
            base_path = normalise_path(url.raw_path or "/").rstrip("/")
        except PathError as exc:
            raise ValueError(f"{where}: upstream path {url.raw_path!r}: {exc}") from None
        return cls(
            name=cfg.name,
            prefix=prefix,
            scheme=url.scheme,
            host=url.raw_host,
            port=port,
            base_path=base_path,
            auth=cfg.auth,
            admin=cfg.admin,
            methods=None if cfg.methods is None else frozenset(cfg.methods),
            strip_prefix=cfg.strip_prefix,
            timeout=cfg.timeout,
            preserve_host=cfg.preserve_host,
            rate_limit=None
            if cfg.rate_limit is None
            else Limit.of(f"route:{cfg.name}", cfg.rate_limit),
            rate_key=cfg.rate_limit.key if cfg.rate_limit is not None else "user",
        )

    def allows(self, method: str) -> bool:
        """True when ``method`` (case-sensitive, as HTTP defines it) may use this route."""
        return self.methods is None or method in self.methods

    def upstream_path(self, path: str) -> str:
        """Upstream path for a normalised ``path`` that this route matched.

        With ``strip_prefix`` the prefix is removed first (the prefix ``/`` removes nothing);
        what is left is appended to the upstream's base path, so ``/orders`` with prefix
        ``/orders`` and base ``/v2`` becomes ``/v2``, and ``/orders/7`` becomes ``/v2/7``.
        The result is never empty and never holds ``//``.
        """
        tail = path
        if self.strip_prefix and self.prefix != "/":
            tail = path[len(self.prefix) :]
        if not self.base_path:
            return tail or "/"
        return self.base_path + tail

    def upstream_url(self, path: str, query_string: str = "") -> URL:
        """Full upstream URL for a normalised ``path`` and the raw (encoded) query string."""
        return URL.build(
            scheme=self.scheme,
            authority=self.authority,
            path=self.upstream_path(path),
            query_string=query_string,
            encoded=True,
        )


class RouteTable:
    """Compiled routes keyed by prefix; ``match`` walks the path's segment boundaries."""

    __slots__ = ("_by_prefix", "_max_prefix_len", "_root")

    def __init__(self, routes: Iterable[Route]) -> None:
        """Index ``routes``; raise ``ValueError`` on a duplicate or reserved prefix."""
        by_prefix: dict[str, Route] = {}
        for route in routes:
            if _is_reserved(route.prefix):
                raise ValueError(f"route {route.name!r}: {RESERVED_PREFIX} is reserved")
            other = by_prefix.get(route.prefix)
            if other is not None:
                raise ValueError(
                    f"route {route.name!r}: prefix {route.prefix!r} is also used by {other.name!r}"
                )
            by_prefix[route.prefix] = route
        self._root = by_prefix.pop("/", None)
        self._by_prefix = by_prefix
        self._max_prefix_len = max((len(prefix) for prefix in by_prefix), default=0)

    @classmethod
    def from_config(cls, routes: Sequence[RouteConfig]) -> RouteTable:
        """Compile every ``RouteConfig``; raise ``ValueError`` on the first unusable one."""
        return cls(Route.from_config(cfg) for cfg in routes)

    def __len__(self) -> int:
        """Number of routes in the table."""
        return len(self._by_prefix) + (self._root is not None)

    def __iter__(self) -> Iterator[Route]:
        """Every route, the root route (if any) first."""
        if self._root is not None:
            yield self._root
        yield from self._by_prefix.values()

    def match(self, path: str) -> Route | None:
        """Route with the longest prefix matching the normalised ``path``, or ``None``."""
        if _is_reserved(path):
            return None
        by_prefix = self._by_prefix
        if by_prefix:
            # Candidates are the whole path and every prefix ending just before a '/', longest
            # first; none longer than the longest configured prefix can match.
            end = len(path)
            if end <= self._max_prefix_len:
                route = by_prefix.get(path)
                if route is not None:
                    return route
            else:
                end = self._max_prefix_len + 1
            while (end := path.rfind("/", 0, end)) > 0:
                route = by_prefix.get(path[:end])
                if route is not None:
                    return route
        return self._root
