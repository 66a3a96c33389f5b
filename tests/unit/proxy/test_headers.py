"""Header filtering in both directions and the headers the gateway sets itself."""

from __future__ import annotations

from typing import Any

import pytest
from multidict import CIMultiDict, CIMultiDictProxy, MultiMapping

from gateway.proxy.headers import (
    CONTENT_LENGTH,
    HOP_BY_HOP,
    header_lines_as_multidict,
    is_identity_header,
    is_valid_host,
    request_lines_for_upstream,
    response_headers_for_client,
    response_lines_for_client,
)


def upstream_headers(pairs: list[tuple[str, str]], **overrides: Any) -> CIMultiDict[str]:
    """``request_lines_for_upstream`` over ``pairs`` with default keyword arguments, decoded."""
    kwargs: dict[str, Any] = {
        "client_ip": "203.0.113.7",
        "proto": "https",
        "host": "gw.example",
        "request_id": "req-1",
        "principal_user_id": None,
        "principal_is_admin": None,
        "preserve_host": False,
        "upstream_host": "127.0.0.1:9000",
    }
    kwargs.update(overrides)
    return header_lines_as_multidict(request_lines_for_upstream(_fields(pairs), **kwargs))


GATEWAY_SET = {"Host", "X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Host", "X-Request-Id"}


# --- identity headers --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("X-User-Id", True),
        ("x-user-id", True),
        ("X-USER-ID", True),
        ("X_User_Id", True),
        ("x_user_id", True),
        ("X-User_Id", True),
        ("X-Is-Admin", True),
        ("x_is_admin", True),
        ("X_IS-ADMIN", True),
        ("X-User-Ids", False),
        ("X-User", False),
        ("User-Id", False),
        ("X-UserId", False),
        ("Authorization", False),
    ],
)
def test_is_identity_header(name: str, expected: bool) -> None:
    assert is_identity_header(name) is expected


FORGED = [
    "X-User-Id",
    "x-user-id",
    "X-USER-ID",
    "X_User_Id",
    "x_user_id",
    "X-Is-Admin",
    "x_is_admin",
]


@pytest.mark.parametrize("name", FORGED)
def test_forged_identity_is_removed_for_anonymous(name: str) -> None:
    out = upstream_headers([(name, "1"), ("Accept", "*/*")])
    assert not any(is_identity_header(key) for key in out)
    assert out["Accept"] == "*/*"


@pytest.mark.parametrize("name", FORGED)
def test_forged_identity_is_replaced_for_principal(name: str) -> None:
    out = upstream_headers(
        [(name, "1"), (name, "true")], principal_user_id=6, principal_is_admin=False
    )
    assert [k for k in out if is_identity_header(k)] == ["X-User-Id", "X-Is-Admin"]
    assert out.getall("X-User-Id") == ["6"]
    assert out.getall("X-Is-Admin") == ["false"]


@pytest.mark.parametrize(
    ("user_id", "is_admin", "expected"),
    [
        (None, None, None),
        (None, True, None),
        (6, True, ("6", "true")),
        (6, False, ("6", "false")),
        (6, None, ("6", "false")),
        (0, False, ("0", "false")),
    ],
)
def test_identity_injection(
    user_id: int | None, is_admin: bool | None, expected: tuple[str, str] | None
) -> None:
    out = upstream_headers([], principal_user_id=user_id, principal_is_admin=is_admin)
    if expected is None:
        assert "X-User-Id" not in out and "X-Is-Admin" not in out
    else:
        assert (out["X-User-Id"], out["X-Is-Admin"]) == expected


# --- hop-by-hop and Connection-named headers ---------------------------------------------------


@pytest.mark.parametrize("name", [*sorted(HOP_BY_HOP), "Transfer_Encoding", "KEEP-ALIVE"])
def test_hop_by_hop_request_headers_are_dropped(name: str) -> None:
    out = upstream_headers([(name, "x"), ("Content-Length", "5")])
    assert name not in out
    assert out["Content-Length"] == "5"


def test_headers_named_in_connection_are_dropped() -> None:
    out = upstream_headers(
        [
            ("Connection", "keep-alive, X-Secret"),
            ("Connection", " x-other ,"),
            ("X-Secret", "s"),
            ("X-Other", "o"),
            ("X-Kept", "k"),
        ]
    )
    assert "X-Secret" not in out and "X-Other" not in out and "Connection" not in out
    assert out["X-Kept"] == "k"


def test_connection_cannot_remove_gateway_headers() -> None:
    out = upstream_headers(
        [("Connection", "X-Forwarded-For, X-Request-Id, Host, X-User-Id")],
        principal_user_id=6,
        principal_is_admin=True,
    )
    assert out["X-Forwarded-For"] == "203.0.113.7"
    assert out["X-Request-Id"] == "req-1"
    assert out["Host"] == "127.0.0.1:9000"
    assert out["X-User-Id"] == "6"


def test_connection_cannot_remove_content_length() -> None:
    """The body follows as it came: without its length the next hop would read it as the
    next message (request smuggling). In either direction."""
    out = upstream_headers(
        [("Connection", "close, Content-Length, X-Secret"), ("Content-Length", "90")]
    )
    assert out["Content-Length"] == "90"
    fields = [(b"Connection", b"content-length"), (b"Content-Length", b"3")]
    lines, marks = response_lines_for_client(fields)
    assert lines == [b"Content-Length: 3"]
    assert marks == CONTENT_LENGTH


def test_end_to_end_headers_are_kept_in_order() -> None:
    pairs = [
        ("Authorization", "Bearer t"),
        ("Cookie", "a=1"),
        ("Content-Type", "application/json"),
        ("Content-Length", "12"),
        ("Accept-Encoding", "gzip"),
        ("X-Custom", "1"),
        ("X-Custom", "2"),
    ]
    out = upstream_headers(pairs)
    assert [(k, v) for k, v in out.items() if k not in GATEWAY_SET] == pairs


# --- headers the gateway owns ------------------------------------------------------------------


def test_forwarding_headers_are_set() -> None:
    out = upstream_headers(
        [
            ("X-Forwarded-Proto", "http"),
            ("X-Forwarded-Host", "evil.example"),
            ("X-Request-Id", "client-chosen"),
            ("x_forwarded_host", "evil.example"),
        ],
        request_id="req-9",
    )
    assert out.getall("X-Forwarded-Proto") == ["https"]
    assert out.getall("X-Forwarded-Host") == ["gw.example"]
    assert out.getall("X-Request-Id") == ["req-9"]
    assert "x_forwarded_host" not in out


@pytest.mark.parametrize(
    ("pairs", "expected"),
    [
        ([], "203.0.113.7"),
        ([("X-Forwarded-For", "10.0.0.1")], "10.0.0.1, 203.0.113.7"),
        ([("x-forwarded-for", "10.0.0.1, 10.0.0.2")], "10.0.0.1, 10.0.0.2, 203.0.113.7"),
        (
            [("X-Forwarded-For", "10.0.0.1"), ("X-Forwarded-For", "10.0.0.2")],
            "10.0.0.1, 10.0.0.2, 203.0.113.7",
        ),
        ([("X-Forwarded-For", " , ,")], "203.0.113.7"),
        ([("X_Forwarded_For", "6.6.6.6")], "203.0.113.7"),
    ],
)
def test_x_forwarded_for_is_appended(pairs: list[tuple[str, str]], expected: str) -> None:
    out = upstream_headers(pairs)
    assert out.getall("X-Forwarded-For") == [expected]


@pytest.mark.parametrize(
    "name",
    [
        "Forwarded",
        "X-Forwarded-Port",
        "X-Forwarded-Prefix",
        "X-Real-IP",
        "x_real_ip",
        "Expect",
        "X_Request_Id",
    ],
)
def test_spoofable_client_headers_are_dropped(name: str) -> None:
    out = upstream_headers([(name, "for=6.6.6.6")])
    assert name not in out


@pytest.mark.parametrize(
    ("pairs", "preserve", "expected"),
    [
        ([("Host", "gw.example:8443")], False, "127.0.0.1:9000"),
        ([("Host", "gw.example:8443")], True, "gw.example:8443"),
        ([], True, "gw.example"),
        ([("Host", "a"), ("Host", "b")], False, "127.0.0.1:9000"),
    ],
)
def test_host(pairs: list[tuple[str, str]], preserve: bool, expected: str) -> None:
    out = upstream_headers(pairs, preserve_host=preserve)
    assert out.getall("Host") == [expected]


@pytest.mark.parametrize(
    "override",
    [
        {"client_ip": "1.2.3.4\r\nX-User-Id: 1"},
        {"proto": "https\n"},
        {"host": "gw\x00"},
        {"request_id": "a\rb"},
        {"upstream_host": "svc\n"},
    ],
)
def test_header_injection_is_refused(override: dict[str, str]) -> None:
    with pytest.raises(ValueError, match="CR, LF or NUL"):
        upstream_headers([], **override)


def test_incoming_fields_are_not_modified() -> None:
    incoming = [(b"X-User-Id", b"1"), (b"Connection", b"close")]
    request_lines_for_upstream(
        incoming,
        client_ip="1.1.1.1",
        proto="http",
        host="h",
        request_id="r",
        principal_user_id=2,
        principal_is_admin=True,
        preserve_host=False,
        upstream_host="u",
    )
    assert incoming == [(b"X-User-Id", b"1"), (b"Connection", b"close")]


# --- responses ---------------------------------------------------------------------------------


def test_response_headers() -> None:
    upstream = CIMultiDictProxy(
        CIMultiDict(
            [
                ("Content-Type", "text/plain"),
                ("Content-Length", "42"),
                ("Content-Encoding", "gzip"),
                ("Set-Cookie", "a=1"),
                ("Set-Cookie", "b=2"),
                ("Connection", "keep-alive, X-Internal"),
                ("Keep-Alive", "timeout=5"),
                ("Transfer-Encoding", "chunked"),
                ("X-Internal", "secret"),
                ("Access-Control-Allow-Origin", "*"),
                ("access-control-allow-credentials", "true"),
                ("Access-Control-Expose-Headers", "X-A"),
                ("Proxy-Authenticate", "Basic"),
                ("Trailer", "X-T"),
                ("Upgrade", "h2c"),
                ("Vary", "Accept"),
                ("X-Request-Id", "req-1"),
            ]
        )
    )
    out = response_headers_for_client(_fields(upstream))
    assert list(out.items()) == [
        ("Content-Type", "text/plain"),
        ("Content-Length", "42"),
        ("Content-Encoding", "gzip"),
        ("Set-Cookie", "a=1"),
        ("Set-Cookie", "b=2"),
        ("Vary", "Accept"),
    ]  # and not the upstream's X-Request-Id: the client gets the gateway's


@pytest.mark.parametrize("name", sorted(HOP_BY_HOP))
def test_hop_by_hop_response_headers_are_dropped(name: str) -> None:
    out = response_headers_for_client(_fields([(name.upper(), "x"), ("X-Kept", "1")]))
    assert name not in out
    assert out["X-Kept"] == "1"


def _fields(headers: MultiMapping[str] | list[tuple[str, str]]) -> list[tuple[bytes, bytes]]:
    """Header fields as the upstream pool's parser hands them over (bytes)."""
    items = headers if isinstance(headers, list) else headers.items()
    return [(name.encode("latin-1"), value.encode()) for name, value in items]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("gw.example", True),
        ("gw.example:8443", True),
        ("127.0.0.1:80", True),
        ("[::1]", True),
        ("[2001:db8::1]:65535", True),
        ("xn--bcher-kva.example", True),
        ("a%20b", False),
        ("", False),
        ("evil.com/admin", False),
        ("a b", False),
        ('x"<>', False),
        ("x,y", False),
        ("x:", False),
        ("x:99999", False),
        ("x:65536", False),
        ("[::1", False),
        ("user@host", False),
        ("host\\x", False),
    ],
)
def test_is_valid_host(value: str, expected: bool) -> None:
    assert is_valid_host(value) is expected
