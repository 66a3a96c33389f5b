"""Path normalisation: every known trick either lands on the route it spells or is refused."""

from __future__ import annotations

import random
import re
import time
from urllib.parse import quote, unquote

import pytest

from config.model import RouteConfig
from gateway.proxy.paths import MAX_PATH_LENGTH, PathError, normalise_path
from gateway.proxy.routes import RouteTable

TABLE = RouteTable.from_config(
    [
        RouteConfig(
            name="admin",
            prefix="/admin",
            upstream="http://127.0.0.1:9001",
            auth="required",
            admin=True,
        ),
        RouteConfig(name="public", prefix="/public", upstream="http://127.0.0.1:9002", auth="none"),
        RouteConfig(name="orders", prefix="/api/v1/orders", upstream="http://127.0.0.1:9003"),
        RouteConfig(name="cafe", prefix="/café", upstream="http://127.0.0.1:9004", auth="none"),
    ]
)


def route_name(path: str) -> str | None:
    """Name of the route ``path`` matches in ``TABLE``, or None."""
    route = TABLE.match(path)
    return None if route is None else route.name


# (raw path, canonical path, route it matches)
ACCEPTED: list[tuple[str, str, str | None]] = [
    # plain paths: unchanged, fast path
    ("/", "/", None),
    ("/admin", "/admin", "admin"),
    ("/admin/users/7", "/admin/users/7", "admin"),
    ("/public", "/public", "public"),
    ("/public/a.b/c-d_e~f", "/public/a.b/c-d_e~f", "public"),
    ("/public/!$&'()*+,=:@", "/public/!$&'()*+,=:@", "public"),
    ("/public/file.json", "/public/file.json", "public"),
    ("/public/...", "/public/...", "public"),
    ("/public/..a/.b", "/public/..a/.b", "public"),
    ("/.well-known/x", "/.well-known/x", None),
    # dot segments
    ("/public/../admin", "/admin", "admin"),
    ("/public/./../admin", "/admin", "admin"),
    ("/./admin", "/admin", "admin"),
    ("/public/x/../../admin/", "/admin/", "admin"),
    ("/admin/..", "/", None),
    ("/admin/.", "/admin/", "admin"),
    ("/admin/x/..", "/admin/", "admin"),
    ("/public/a/b/../c", "/public/a/c", "public"),
    # encoded dots are dots
    ("/public/%2e%2e/admin", "/admin", "admin"),
    ("/public/%2E%2E/admin", "/admin", "admin"),
    ("/public/.%2e/admin", "/admin", "admin"),
    ("/public/%2e./admin", "/admin", "admin"),
    ("/public/%2e/admin", "/public/admin", "public"),
    ("/%2e/admin", "/admin", "admin"),
    ("/public/file%2ejson", "/public/file.json", "public"),
    # repeated slashes collapse
    ("//admin", "/admin", "admin"),
    ("///admin//x///", "/admin/x/", "admin"),
    ("/public//..//admin", "/admin", "admin"),  # slashes collapse before dots resolve
    ("//", "/", None),
    # unreserved and sub-delim escapes are decoded: the upstream sees what was matched
    ("/%61dmin", "/admin", "admin"),
    ("/%41DMIN", "/ADMIN", None),
    ("/%61%64%6d%69%6e/x", "/admin/x", "admin"),
    ("/api/v1/%6frders/7", "/api/v1/orders/7", "orders"),
    ("/public/%7e%2d%5f", "/public/~-_", "public"),
    ("/public/%3a%40%21%24%26%27%28%29%2a%2b%2c%3d", "/public/:@!$&'()*+,=", "public"),
    # other escapes stay encoded, upper-cased; %25 is decoded once only
    ("/public/%3f%23", "/public/%3F%23", "public"),
    ("/public/a%20b", "/public/a%20b", "public"),
    ("/public/100%25", "/public/100%25", "public"),
    ("/public/%25zz", "/public/%25zz", "public"),
    ("/public/%25%25", "/public/%25%25", "public"),
    ("/public/%25.", "/public/%25.", "public"),
    ("/public/%5b%5d%7b%7d", "/public/%5B%5D%7B%7D", "public"),
    # raw characters that must be encoded are encoded
    ("/public/a b", "/public/a%20b", "public"),
    ('/public/"<>^`{|}[]', "/public/%22%3C%3E%5E%60%7B%7C%7D%5B%5D", "public"),
    # unicode: valid NFC/NFKC UTF-8, raw or encoded, has one canonical form
    ("/café", "/caf%C3%A9", "cafe"),
    ("/caf%c3%a9", "/caf%C3%A9", "cafe"),
    ("/caf%C3%A9/x", "/caf%C3%A9/x", "cafe"),
    ("/public/日本", "/public/%E6%97%A5%E6%9C%AC", "public"),
    ("/public/%F0%9F%98%80", "/public/%F0%9F%98%80", "public"),
    # trailing slashes are kept (single)
    ("/admin/", "/admin/", "admin"),
    ("/public//", "/public/", "public"),
    # case-sensitive, segment boundaries
    ("/ADMIN", "/ADMIN", None),
    ("/Admin/x", "/Admin/x", None),
    ("/adminx", "/adminx", None),
    ("/admin.json", "/admin.json", None),
    ("/publicity", "/publicity", None),
    ("/api/v1/ordersx", "/api/v1/ordersx", None),
    # encoded ';' alternatives that are not ';' are plain characters
    ("/admin%3Ax", "/admin:x", None),
    # the reserved auth API is never matched, whatever the spelling
    ("/api/v1/auth/login", "/api/v1/auth/login", None),
    ("/api/v1/%61uth/login", "/api/v1/auth/login", None),
    ("/api/v1/orders/../auth", "/api/v1/auth", None),
    # long but acceptable
    ("/public/" + "a" * 4000, "/public/" + "a" * 4000, "public"),
    ("/public" + "/x" * 4000, "/public" + "/x" * 4000, "public"),
    ("/admin" + "/./" * 1000 + "y", "/admin/y", "admin"),
]

# (raw path, fragment of the error message)
REFUSED: list[tuple[str, str]] = [
    # encoded or raw separators upstreams disagree on
    ("/public%2f..%2fadmin", "encoded slash"),
    ("/public%2F..%2Fadmin", "encoded slash"),
    ("/public/..%2fadmin", "encoded slash"),
    ("/public/..%5cadmin", "encoded backslash"),
    ("/public/..%5Cadmin", "encoded backslash"),
    ("/public\\..\\admin", "backslash"),
    ("/public/..\\admin", "backslash"),
    # path parameters
    ("/admin;x=1", "semicolon"),
    ("/public;/../admin", "semicolon"),
    ("/public/..;/admin", "semicolon"),
    ("/admin%3bx=1", "semicolon"),
    ("/admin%3B", "semicolon"),
    # double encoding: never decoded twice, refused so no upstream can decode twice
    ("/public/%252e%252e/admin", "double percent-encoding"),
    ("/public/%252E%252E/admin", "double percent-encoding"),
    ("/public/%252fadmin", "double percent-encoding"),
    ("/%2561dmin", "double percent-encoding"),
    ("/public/%25%32%65%25%32%65/admin", "double percent-encoding"),
    ("/public/%25252e", "double percent-encoding"),
    # NUL and control characters
    ("/public/%00", "control character"),
    ("/admin%00.json", "control character"),
    ("/public/%0a", "control character"),
    ("/public/%0D%0Ax-a:b", "control character"),
    ("/public/%7f", "control character"),
    ("/public/\x00", "control character"),
    ("/public/a\tb", "control character"),
    ("/public/\x7f", "control character"),
    # invalid percent-encoding
    ("/public/%zz", "invalid percent-encoding"),
    ("/public/%", "invalid percent-encoding"),
    ("/public/%2", "invalid percent-encoding"),
    ("/public/%2g", "invalid percent-encoding"),
    ("/public/%%32e", "invalid percent-encoding"),
    ("/public/%u002e", "invalid percent-encoding"),
    # invalid UTF-8, overlong forms, surrogates
    ("/public/%c0%ae%c0%ae/admin", "not valid UTF-8"),
    ("/public/%e0%80%ae", "not valid UTF-8"),
    ("/public/%c0%af", "not valid UTF-8"),
    ("/public/%ff", "not valid UTF-8"),
    ("/public/%c3", "not valid UTF-8"),
    ("/public/%a9", "not valid UTF-8"),
    ("/public/%ed%a0%80", "not valid UTF-8"),
    ("/public/\udcff", "not valid UTF-8"),
    # unicode that normalises into something else, or hides
    ("/public/\uff0e\uff0e/admin", "NFKC"),
    ("/public/%EF%BC%8E%EF%BC%8E/admin", "NFKC"),
    ("/public\uff0f..\uff0fadmin", "NFKC"),
    ("/\uff41\uff44\uff4d\uff49\uff4e", "NFKC"),
    ("/%EF%BD%81dmin", "NFKC"),
    ("/cafe\u0301", "NFKC"),
    ("/public/\ufb01le", "NFKC"),
    ("/public/a\u00a0b", "NFKC"),
    ("/admin\u200b", "invisible"),
    ("/public/%E2%80%AE", "invisible"),
    ("/public/%C2%85", "invisible"),
    ("/public/\u2028", "invisible"),
    # climbing above the root
    ("/..", "above the root"),
    ("/../admin", "above the root"),
    ("/public/../../admin", "above the root"),
    ("/%2e%2e/admin", "above the root"),
    ("/public/%2e%2e/%2e%2e", "above the root"),
    # not an origin-form path, query and fragment delimiters
    ("", "must start with /"),
    ("admin", "must start with /"),
    ("*", "must start with /"),
    ("http://evil/admin", "must start with /"),
    ("/public#/../admin", "fragment"),
    ("/public?x", "query"),
    # too long
    ("/" + "a" * MAX_PATH_LENGTH, "too long"),
]


@pytest.mark.parametrize(("raw", "canonical", "route"), ACCEPTED)
def test_accepted_paths(raw: str, canonical: str, route: str | None) -> None:
    assert normalise_path(raw) == canonical
    assert route_name(canonical) == route


@pytest.mark.parametrize(("raw", "message"), REFUSED)
def test_refused_paths(raw: str, message: str) -> None:
    with pytest.raises(PathError, match=re.escape(message)):
        normalise_path(raw)


def test_path_error_is_a_value_error() -> None:
    assert issubclass(PathError, ValueError)


def test_max_length_is_inclusive() -> None:
    raw = "/" + "a" * (MAX_PATH_LENGTH - 1)
    assert normalise_path(raw) == raw


def _upstream_view(path: str) -> str:
    """What an upstream that decodes the path once would route on."""
    return unquote(path, errors="strict")


def _check_invariants(raw: str, canonical: str) -> None:
    """Properties every accepted path must have."""
    assert canonical.startswith("/")
    assert canonical.isascii()
    assert "//" not in canonical
    assert ";" not in canonical
    assert "\\" not in canonical
    assert normalise_path(canonical) == canonical, "normalisation is idempotent"
    decoded = _upstream_view(canonical)
    segments = decoded.split("/")
    assert "." not in segments and ".." not in segments
    assert "//" not in decoded and "\\" not in decoded and ";" not in decoded
    assert unquote(decoded) == decoded, f"decoding twice changes {raw!r}"
    # the canonical form depends only on the decoded text: re-encoding it gives it back
    assert normalise_path(quote(decoded, safe="/!$&'()*+,=:@~")) == canonical


@pytest.mark.parametrize(("raw", "canonical", "route"), ACCEPTED)
def test_accepted_paths_have_the_invariants(raw: str, canonical: str, route: str | None) -> None:
    _check_invariants(raw, canonical)


_TOKENS = [
    "/", "/", "/", ".", "..", "%2e", "%2E", "%2e%2e", "%2f", "%2F", "%5c", "\\", ";", "%3b",
    "%25", "%252e", "%", "%zz", "%00", "%20", " ", "%61", "a", "admin", "public", "ADMIN",
    "%c3%a9", "é", "%c0%ae", "\uff0e", "?", "#", "~", "%7e", "api", "v1", "auth", "orders",
]  # fmt: skip


def test_random_token_soup_is_canonical_or_refused() -> None:
    rng = random.Random(20240611)
    accepted = 0
    for _ in range(5000):
        raw = "/" + "".join(rng.choice(_TOKENS) for _ in range(rng.randint(1, 12)))
        try:
            canonical = normalise_path(raw)
        except PathError:
            continue
        accepted += 1
        _check_invariants(raw, canonical)
    assert accepted > 500


def test_long_path_is_fast() -> None:
    raw = "/public/" + "%2e/x/../" * 900
    assert len(raw) <= MAX_PATH_LENGTH
    start = time.perf_counter()
    for _ in range(10):
        assert normalise_path(raw) == "/public/"
    assert time.perf_counter() - start < 1.0
