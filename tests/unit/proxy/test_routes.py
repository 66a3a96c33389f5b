"""Route compilation, longest-prefix matching, method checks and upstream paths."""

from __future__ import annotations

import time
from typing import Any

import pytest

from config.model import RouteConfig
from gateway.proxy.routes import RESERVED_PREFIX, Route, RouteTable


def route_config(**overrides: Any) -> RouteConfig:
    """A valid ``RouteConfig`` with ``overrides`` applied."""
    values: dict[str, Any] = {"name": "r", "prefix": "/r", "upstream": "http://127.0.0.1:9000"}
    values.update(overrides)
    return RouteConfig(**values)


def route(**overrides: Any) -> Route:
    """A compiled ``Route`` from ``route_config(**overrides)``."""
    return Route.from_config(route_config(**overrides))


# --- compilation -------------------------------------------------------------------------------


def test_from_config_copies_every_field() -> None:
    compiled = route(
        name="orders",
        prefix="/api/v1/orders",
        upstream="https://orders.internal:8443/base/",
        auth="optional",
        admin=False,
        methods=["GET", "POST"],
        strip_prefix=True,
        timeout="5s",
        preserve_host=True,
    )
    assert compiled == Route(
        name="orders",
        prefix="/api/v1/orders",
        scheme="https",
        host="orders.internal",
        port=8443,
        base_path="/base",
        auth="optional",
        admin=False,
        methods=frozenset({"GET", "POST"}),
        strip_prefix=True,
        timeout=5.0,
        preserve_host=True,
    )


def test_defaults() -> None:
    compiled = route()
    assert compiled.auth == "required"
    assert compiled.admin is False
    assert compiled.methods is None
    assert compiled.strip_prefix is False
    assert compiled.timeout == 30.0
    assert compiled.preserve_host is False


def test_route_is_frozen() -> None:
    compiled = route()
    with pytest.raises(AttributeError):
        compiled.prefix = "/other"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("upstream", "scheme", "host", "port", "base_path", "authority"),
    [
        ("http://127.0.0.1:9000", "http", "127.0.0.1", 9000, "", "127.0.0.1:9000"),
        ("http://127.0.0.1:9000/", "http", "127.0.0.1", 9000, "", "127.0.0.1:9000"),
        ("http://svc", "http", "svc", 80, "", "svc"),
        ("http://svc:80", "http", "svc", 80, "", "svc"),
        ("https://svc", "https", "svc", 443, "", "svc"),
        ("https://svc:80", "https", "svc", 80, "", "svc:80"),
        ("HTTP://SVC.Example:81/Base", "http", "svc.example", 81, "/Base", "svc.example:81"),
        ("http://svc/a/b/", "http", "svc", 80, "/a/b", "svc"),
        ("http://svc//a//b", "http", "svc", 80, "/a/b", "svc"),
        ("http://svc/a%2ejson", "http", "svc", 80, "/a.json", "svc"),
        ("http://[::1]:9000/x", "http", "::1", 9000, "/x", "[::1]:9000"),
        ("http://[::1]", "http", "::1", 80, "", "[::1]"),
        ("http://bücher.example", "http", "xn--bcher-kva.example", 80, "", "xn--bcher-kva.example"),
    ],
)
def test_upstream_is_split(
    upstream: str, scheme: str, host: str, port: int, base_path: str, authority: str
) -> None:
    compiled = route(upstream=upstream)
    assert (compiled.scheme, compiled.host, compiled.port) == (scheme, host, port)
    assert compiled.base_path == base_path
    assert compiled.authority == authority


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"prefix": "/api/v1/auth"}, "reserved"),
        ({"prefix": "/api/v1/auth/x"}, "reserved"),
        ({"prefix": "/api/v1/%61uth"}, "reserved"),
        ({"prefix": "/a;b"}, "semicolon"),
        ({"prefix": "/../a"}, "above the root"),
        ({"prefix": "a"}, "must start with /"),
        ({"upstream": "ftp://svc"}, "http:// or https://"),
        ({"upstream": "svc:9000"}, "http:// or https://"),
        ({"upstream": "http://"}, "http:// or https://"),
        ({"upstream": "http://svc:99999"}, "upstream"),
        ({"upstream": "http://user:pw@svc"}, "credentials"),
        ({"upstream": "http://svc/?q=1"}, "query"),
        ({"upstream": "http://svc/#f"}, "fragment"),
        ({"upstream": "http://svc/a;b"}, "upstream path"),
        ({"upstream": "http://svc/a%2fb"}, "upstream path"),
    ],
)
def test_unusable_config_is_refused(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        route(**overrides)


@pytest.mark.parametrize(
    ("prefix", "compiled"),
    [
        ("/", "/"),
        ("/api", "/api"),
        ("/api/", "/api"),
        ("//api//v1", "/api/v1"),
        ("/café", "/caf%C3%A9"),
        ("/a b", "/a%20b"),
    ],
)
def test_prefix_is_canonical(prefix: str, compiled: str) -> None:
    assert route(prefix=prefix).prefix == compiled


# --- methods -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("methods", "method", "allowed"),
    [
        (None, "GET", True),
        (None, "DELETE", True),
        (None, "PROPFIND", True),
        (["GET"], "GET", True),
        (["GET"], "HEAD", False),
        (["GET"], "POST", False),
        (["GET"], "get", False),
        (["GET", "POST"], "POST", True),
        ([], "GET", False),
    ],
)
def test_allows(methods: list[str] | None, method: str, allowed: bool) -> None:
    assert route(methods=methods).allows(method) is allowed


# --- upstream paths ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prefix", "upstream", "strip", "path", "expected"),
    [
        # no strip, no base path: the path as matched
        ("/api", "http://svc", False, "/api", "/api"),
        ("/api", "http://svc", False, "/api/", "/api/"),
        ("/api", "http://svc", False, "/api/x/y", "/api/x/y"),
        ("/api", "http://svc/", False, "/api/x", "/api/x"),
        # no strip, base path: base + path
        ("/api", "http://svc/base", False, "/api/x", "/base/api/x"),
        ("/api", "http://svc/base/", False, "/api", "/base/api"),
        # strip, no base path
        ("/api", "http://svc", True, "/api", "/"),
        ("/api", "http://svc", True, "/api/", "/"),
        ("/api", "http://svc", True, "/api/x", "/x"),
        ("/api/v1", "http://svc", True, "/api/v1/x/y/", "/x/y/"),
        # strip, base path
        ("/api", "http://svc/base", True, "/api", "/base"),
        ("/api", "http://svc/base/", True, "/api", "/base"),
        ("/api", "http://svc/base", True, "/api/", "/base/"),
        ("/api", "http://svc/base", True, "/api/x", "/base/x"),
        # root prefix: stripping removes nothing
        ("/", "http://svc", False, "/", "/"),
        ("/", "http://svc", True, "/", "/"),
        ("/", "http://svc", True, "/x", "/x"),
        ("/", "http://svc/base", False, "/", "/base/"),
        ("/", "http://svc/base", True, "/x/y", "/base/x/y"),
        # encoded characters are passed through untouched
        ("/api", "http://svc/b", True, "/api/100%25/%C3%A9", "/b/100%25/%C3%A9"),
    ],
)
def test_upstream_path(prefix: str, upstream: str, strip: bool, path: str, expected: str) -> None:
    compiled = route(prefix=prefix, upstream=upstream, strip_prefix=strip)
    result = compiled.upstream_path(path)
    assert result == expected
    assert "//" not in result


@pytest.mark.parametrize(
    ("upstream", "path", "query", "expected"),
    [
        ("http://127.0.0.1:9000", "/api/x", "", "http://127.0.0.1:9000/api/x"),
        ("http://svc:80/b", "/api/x", "a=1&b=%2F", "http://svc/b/api/x?a=1&b=%2F"),
        ("https://[::1]:8443", "/api/%25/%C3%A9", "", "https://[::1]:8443/api/%25/%C3%A9"),
    ],
)
def test_upstream_url_keeps_encoding(upstream: str, path: str, query: str, expected: str) -> None:
    url = route(prefix="/api", upstream=upstream).upstream_url(path, query)
    assert str(url) == expected
    assert url.raw_path == route(prefix="/api", upstream=upstream).upstream_path(path)


# --- route table -------------------------------------------------------------------------------

TABLE_PREFIXES = ["/", "/api", "/api/v1/orders", "/api/v1/orders/admin", "/static", "/café"]
TABLE = RouteTable(route(name=p, prefix=p) for p in TABLE_PREFIXES)
NO_ROOT = RouteTable(route(name=p, prefix=p) for p in TABLE_PREFIXES if p != "/")


@pytest.mark.parametrize(
    ("path", "with_root", "without_root"),
    [
        ("/", "/", None),
        ("/x", "/", None),
        ("/api", "/api", "/api"),
        ("/api/", "/api", "/api"),
        ("/api/v1", "/api", "/api"),
        ("/apix", "/", None),
        ("/api/v1/orders", "/api/v1/orders", "/api/v1/orders"),
        ("/api/v1/orders/", "/api/v1/orders", "/api/v1/orders"),
        ("/api/v1/orders/7", "/api/v1/orders", "/api/v1/orders"),
        ("/api/v1/ordersx", "/api", "/api"),
        ("/api/v1/orders/admin", "/api/v1/orders/admin", "/api/v1/orders/admin"),
        ("/api/v1/orders/admin/x", "/api/v1/orders/admin", "/api/v1/orders/admin"),
        ("/api/v1/orders/adminx", "/api/v1/orders", "/api/v1/orders"),
        ("/API/v1/orders", "/", None),
        ("/static/a/b/c.css", "/static", "/static"),
        ("/caf%C3%A9/menu", "/café", "/café"),
        # reserved, even with a root route
        ("/api/v1/auth", None, None),
        ("/api/v1/auth/", None, None),
        ("/api/v1/auth/login", None, None),
        ("/api/v1/authx", "/api", "/api"),
        ("/api/v1/aut", "/api", "/api"),
    ],
)
def test_match(path: str, with_root: str | None, without_root: str | None) -> None:
    for table, expected in ((TABLE, with_root), (NO_ROOT, without_root)):
        found = table.match(path)
        assert (None if found is None else found.name) == expected


def test_match_very_long_path_is_fast() -> None:
    path = "/api/v1/orders" + "/x" * 4000
    start = time.perf_counter()
    for _ in range(1000):
        found = TABLE.match(path)
    assert time.perf_counter() - start < 0.5
    assert found is not None and found.name == "/api/v1/orders"


def test_empty_table_matches_nothing() -> None:
    table = RouteTable.from_config([])
    assert len(table) == 0
    assert table.match("/") is None
    assert table.match("/x") is None


def test_from_config_len_and_iter() -> None:
    table = RouteTable.from_config(
        [route_config(name="a", prefix="/a"), route_config(name="root", prefix="/")]
    )
    assert len(table) == 2
    assert [r.name for r in table] == ["root", "a"]


def test_duplicate_prefix_is_refused() -> None:
    with pytest.raises(ValueError, match="also used by 'a'"):
        RouteTable.from_config(
            [route_config(name="a", prefix="/x"), route_config(name="b", prefix="/x/")]
        )


def test_reserved_route_cannot_be_added_directly() -> None:
    reserved = Route(
        name="sneaky",
        prefix=RESERVED_PREFIX,
        scheme="http",
        host="svc",
        port=80,
        base_path="",
        auth="none",
        admin=False,
        methods=None,
        strip_prefix=False,
        timeout=1.0,
        preserve_host=False,
    )
    with pytest.raises(ValueError, match="reserved"):
        RouteTable([reserved])
