"""``gateway.edge.wire``: which heads the edge reads, and the response heads it writes."""

from __future__ import annotations

import pytest
from multidict import CIMultiDict

from gateway.edge.wire import (
    READ_FIELDS,
    HeadReader,
    access_line,
    relayed_head,
    response_head,
)
from gateway.middlewares.request_id import stamp_response
from gateway.proxy.headers import response_headers_for_client, response_lines_for_client


def test_a_plain_head() -> None:
    head = HeadReader().parse(
        b"GET /a/b?x=1&y=%20 HTTP/1.1\r\nHost: g\r\nX-Thing: caf\xc3\xa9\r\nx-thing: 2\r\n\r\n"
    )
    assert head is not None
    assert (head.method, head.target, head.keep_alive) == ("GET", "/a/b?x=1&y=%20", True)
    assert head.fields == [(b"Host", b"g"), (b"X-Thing", b"caf\xc3\xa9"), (b"x-thing", b"2")]
    assert head.headers == {"host": "g"}  # only the fields the edge reads, by lower-case name
    assert head.line == "GET /a/b?x=1&y=%20 HTTP/1.1"


def test_read_fields_by_lower_case_name_decoded_as_aiohttp_does() -> None:
    head = HeadReader().parse(
        b"GET / HTTP/1.1\r\nHOST: g\r\nauthorization: Bearer t\r\nX-Request-ID: \xc3\xa9\xff\r\n"
        b"Accept: */*\r\n\r\n"
    )
    assert head is not None
    assert head.headers == {"host": "g", "authorization": "Bearer t", "x-request-id": "é\udcff"}
    assert set(head.headers) <= READ_FIELDS


@pytest.mark.parametrize("name", sorted(READ_FIELDS - {"content-length", "transfer-encoding"}))
def test_a_read_field_sent_twice_is_left_to_aiohttp(name: str) -> None:
    """Which of two values counts is aiohttp's question (its answer, all its checks)."""
    reader = HeadReader()
    twice = b"GET / HTTP/1.1\r\nHost: g\r\n%s: 1\r\n%s: 2\r\n\r\n" % (
        name.encode(),
        name.upper().encode(),
    )
    if name == "host":
        twice = b"GET / HTTP/1.1\r\nHost: g\r\nhost: h\r\n\r\n"
    assert reader.parse(twice) is None
    # A field the edge does not read may repeat; the next head on the connection is read anew.
    head = HeadReader().parse(b"GET / HTTP/1.1\r\nHost: g\r\nAccept: a\r\nAccept: b\r\n\r\n")
    assert head is not None and head.headers == {"host": "g"}
    head = reader.parse(b"GET / HTTP/1.1\r\nHost: g\r\n\r\n")
    assert head is not None and head.headers == {"host": "g"}


def test_connection_close_is_read_before_llhttp_forgets_it() -> None:
    head = HeadReader().parse(b"GET / HTTP/1.1\r\nHost: g\r\nConnection: close\r\n\r\n")
    assert head is not None and head.keep_alive is False


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"GET / HTTP/1.0\r\nHost: g\r\n\r\n", id="http-1.0"),
        pytest.param(b"GET http://g/ HTTP/1.1\r\nHost: g\r\n\r\n", id="absolute-form"),
        pytest.param(b"OPTIONS * HTTP/1.1\r\nHost: g\r\n\r\n", id="asterisk-form"),
        pytest.param(b"CONNECT g:443 HTTP/1.1\r\nHost: g\r\n\r\n", id="connect"),
        pytest.param(b"GET /a#frag HTTP/1.1\r\nHost: g\r\n\r\n", id="fragment"),
        pytest.param(b"GET /caf\xc3\xa9 HTTP/1.1\r\nHost: g\r\n\r\n", id="non-ascii-target"),
        pytest.param(
            b"GET / HTTP/1.1\r\nHost: g\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
            id="upgrade",
        ),
        pytest.param(b"GET / HTTP/1.1\r\nHost : g\r\n\r\n", id="space-before-colon"),
        pytest.param(b"GET / HTTP/1.1\r\nHost: g\r\nX: a\rb\r\n\r\n", id="bare-cr"),
        pytest.param(b"GET / HTTP/1.1\nHost: g\n\n", id="bare-lf"),
        pytest.param(b"GET / HTTP/1.1\r\nHost: g\r\n folded\r\n\r\n", id="obs-fold"),
        pytest.param(
            b"POST / HTTP/1.1\r\nHost: g\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            id="two-lengths",
        ),
        pytest.param(b"GET / HTTP/1.1\r\nHost: g\r\n", id="unfinished"),
        pytest.param(
            b"GET /" + b"a" * 8190 + b" HTTP/1.1\r\nHost: g\r\n\r\n", id="long-request-line"
        ),
        pytest.param(
            b"GET / HTTP/1.1\r\nHost: g\r\nCookie: " + b"c" * 8190 + b"\r\n\r\n",
            id="long-field",
        ),
        pytest.param(
            b"GET / HTTP/1.1\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(129)) + b"\r\n",
            id="too-many-fields",
        ),
    ],
)
def test_heads_the_edge_leaves_to_aiohttp(data: bytes) -> None:
    assert HeadReader().parse(data) is None


def test_one_reader_reads_head_after_head() -> None:
    reader = HeadReader()
    first = reader.parse(b"GET /1 HTTP/1.1\r\nHost: g\r\n\r\n")
    # A head announcing a body: the connection reads the body itself, the parser never sees it.
    second = reader.parse(b"POST /2 HTTP/1.1\r\nHost: g\r\nContent-Length: 5\r\n\r\n")
    third = reader.parse(b"GET /3 HTTP/1.1\r\nHost: g\r\n\r\n")
    refused = reader.parse(b"GET /4 HTTP/1.1\r\nHost : g\r\n\r\n")
    fourth = reader.parse(b"GET /5 HTTP/1.1\r\nHost: g\r\n\r\n")
    assert [h.target if h else None for h in (first, second, third, refused, fourth)] == [
        "/1",
        "/2",
        "/3",
        None,
        "/5",
    ]


def test_response_head() -> None:
    headers = CIMultiDict([("Content-Type", "text/plain"), ("X-A", "café")])
    data = response_head(404, "", headers, keep_alive=False)
    status_line, *lines = data.decode("utf-8").split("\r\n")
    assert status_line == "HTTP/1.1 404 Not Found"
    assert lines[:2] == ["Content-Type: text/plain", "X-A: café"]
    assert lines[2].startswith("Date: ") and lines[2].endswith(" GMT")
    assert lines[3:] == ["Connection: close", "", ""]


def test_response_head_keeps_an_upstreams_date_and_reason() -> None:
    headers = CIMultiDict([("Date", "Mon, 01 Jan 2024 00:00:00 GMT")])
    assert response_head(200, "Fine", headers, keep_alive=True) == (
        b"HTTP/1.1 200 Fine\r\nDate: Mon, 01 Jan 2024 00:00:00 GMT\r\n\r\n"
    )


def test_access_line() -> None:
    head = HeadReader().parse(b"GET /x?y HTTP/1.1\r\nHost: g\r\nUser-Agent: ua\r\n\r\n")
    assert head is not None
    line = access_line("10.0.0.1", 0.0, head, 200, 123)
    assert line.startswith("10.0.0.1 [")
    assert line.endswith('] "GET /x?y HTTP/1.1" 200 123 "-" "ua"')


# --- the head of a relayed answer: raw fields, and the multidict way ---------------------------

_UPSTREAM_FIELDS = [
    (b"Content-Type", b"text/plain; charset=utf-8"),
    (b"Set-Cookie", b"a=1"),
    (b"set-cookie", b"b=2"),
    (b"X-Note", b"caf\xc3\xa9 \xff"),  # UTF-8, and a byte that is not
    (b"Connection", b"keep-alive, X-Hop"),
    (b"X-Hop", b"dropped"),
    (b"Access-Control-Allow-Origin", b"*"),
]


@pytest.mark.parametrize(
    ("extra", "length", "streamed", "keep_alive"),
    [
        pytest.param([], 12, False, True, id="whole-without-length"),
        pytest.param([(b"Content-Length", b"12")], 12, False, True, id="whole-with-length"),
        pytest.param([], None, False, True, id="bodiless"),
        pytest.param([], None, True, True, id="streamed-chunked"),
        pytest.param([(b"Content-Length", b"99")], None, True, False, id="streamed-close"),
        pytest.param(
            [(b"Server", b"upstream/1"), (b"Date", b"Mon, 01 Jan 2024 00:00:00 GMT")],
            3,
            False,
            True,
            id="upstream-server-and-date",
        ),
        pytest.param([(b"x-request-id", b"upstream-id")], 3, False, True, id="upstream-id"),
    ],
)
def test_relayed_head_has_the_lines_of_the_multidict_way(
    extra: list[tuple[bytes, bytes]], length: int | None, streamed: bool, keep_alive: bool
) -> None:
    fields = _UPSTREAM_FIELDS + extra
    raw, chunked = relayed_head(
        200,
        b"",
        *response_lines_for_client(fields),
        "req-1",
        keep_alive=keep_alive,
        length=length,
        streamed=streamed,
    )
    # What the edge did before (and does for a cross-origin request): decode, stamp, frame.
    headers = response_headers_for_client(fields)
    stamp_response(headers, "req-1")
    if "Content-Length" not in headers:
        if length is not None:
            headers["Content-Length"] = str(length)
        elif streamed:
            headers["Transfer-Encoding"] = "chunked"
    via_multidict = response_head(200, "", headers, keep_alive=keep_alive)

    def lines(head: bytes) -> list[bytes]:
        status, *rest = head.rstrip(b"\r\n").split(b"\r\n")
        return [status, *sorted(line for line in rest if not line.startswith(b"Date: "))]

    assert lines(raw) == lines(via_multidict)
    assert raw.endswith(b"\r\n\r\n") and raw.count(b"\r\n\r\n") == 1
    assert raw.count(b"\r\nDate: ") == 1
    assert chunked is (streamed and b"Content-Length" not in dict(extra))
    assert b"X-Hop" not in raw and b"Access-Control" not in raw
