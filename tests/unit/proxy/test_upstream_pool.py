"""``UpstreamConnection``'s response parsing, fed by hand through a fake transport.

The socket-level behaviour (reuse, retries, timeouts, flow control, TLS) is tested against real
loopback servers in ``tests/integration/test_upstream_pool.py``.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from gateway.proxy.upstream_pool import (
    UpstreamConnection,
    UpstreamError,
    UpstreamPool,
    UpstreamTimeout,
    _Deadlines,
)

ORIGIN = ("http", "127.0.0.1", 9)


class FakeTransport(asyncio.Transport):
    """Records what the connection does to its transport."""

    def __init__(self) -> None:
        super().__init__()
        self.written: list[bytes] = []
        self.aborted = False
        self.paused = False

    def write(self, data: Any) -> None:
        self.written.append(bytes(data))

    def abort(self) -> None:
        self.aborted = True

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False

    def is_closing(self) -> bool:
        return self.aborted


def connection(method: str = "GET") -> tuple[UpstreamConnection, FakeTransport]:
    loop = asyncio.new_event_loop()
    conn = UpstreamConnection(UpstreamPool(), ORIGIN, loop)
    transport = FakeTransport()
    conn.connection_made(transport)
    conn._begin(method)
    loop.close()
    return conn, transport


def feed(conn: UpstreamConnection, data: bytes, step: int) -> None:
    for i in range(0, len(data), step):
        conn.data_received(data[i : i + step])


RESPONSES = [
    (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 11\r\n\r\nhello world",
        200,
        "OK",
        b"hello world",
        True,
    ),
    (
        b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
        404,
        "Not Found",
        b"abcde",
        True,
    ),
    (b"HTTP/1.1 204 No Content\r\nX-A: b\r\n\r\n", 204, "No Content", b"", True),
    (b"HTTP/1.1 302 \r\nLocation: /x\r\nContent-Length: 0\r\n\r\n", 302, "", b"", True),
    (
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi",
        200,
        "OK",
        b"hi",
        True,
    ),
    (b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nhi", 200, "OK", b"hi", False),
]


@pytest.mark.parametrize("step", [1, 2, 7, 1000])
@pytest.mark.parametrize(("raw", "status", "reason", "body", "keep_alive"), RESPONSES)
def test_responses_parse_whatever_the_segmentation(
    raw: bytes, status: int, reason: str, body: bytes, keep_alive: bool, step: int
) -> None:
    conn, transport = connection()
    feed(conn, raw, step)
    assert conn.head_done and conn.complete
    assert (conn.status, conn.reason, conn.take_body()) == (status, reason, body)
    assert conn.keep_alive is keep_alive
    assert conn.reusable and not transport.aborted


def test_header_values_keep_their_bytes() -> None:
    conn, _ = connection()
    conn.data_received(
        b"HTTP/1.1 200 OK\r\nX-Utf8: caf\xc3\xa9\r\nX-Latin1: caf\xe9\r\n"
        b"X-Spaces:   padded  \r\nContent-Length: 0\r\n\r\n"
    )
    assert conn.headers["X-Utf8"] == "caf\u00e9"
    # Not UTF-8: kept as surrogates, encoded back to the same bytes.
    assert conn.headers["X-Latin1"].encode("utf-8", "surrogateescape") == b"caf\xe9"
    assert conn.headers["X-Spaces"].strip() == "padded"


def test_close_delimited_body_ends_with_the_connection() -> None:
    conn, _ = connection()
    conn.data_received(b"HTTP/1.1 200 OK\r\n\r\nsome")
    conn.data_received(b" body")
    assert conn.head_done and not conn.complete
    conn.connection_lost(None)
    assert conn.complete
    assert conn.take_body() == b"some body"
    assert not conn.keep_alive


def test_reset_during_a_close_delimited_body_is_an_error() -> None:
    conn, _ = connection()
    conn.data_received(b"HTTP/1.1 200 OK\r\n\r\nsome")
    conn.connection_lost(ConnectionResetError())
    assert not conn.complete
    assert isinstance(conn._error, UpstreamError)


def test_head_response_resets_the_parser_for_the_next_exchange() -> None:
    conn, transport = connection("HEAD")
    conn.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 500\r\n\r\n")
    assert conn.complete and conn.take_body() == b""
    conn.active = False
    conn._begin("GET")
    conn.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc")
    assert conn.complete and conn.take_body() == b"abc"
    assert conn.reusable and not transport.aborted


def test_data_while_idle_aborts() -> None:
    conn, transport = connection()
    conn.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    conn.active = False
    conn.data_received(b"HTTP/1.1 200 OK\r\n")
    assert transport.aborted and not conn.reusable


def test_a_second_response_in_the_same_read_spoils_the_connection() -> None:
    conn, _ = connection()
    one = b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n"
    conn.data_received(one + b"A" + one + b"B")
    assert conn.complete and conn.take_body() == b"A"
    assert not conn.reusable


def test_reading_pauses_above_the_high_water_mark() -> None:
    conn, transport = connection()
    conn.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n")
    for _ in range(5):
        conn.data_received(b"x" * 65536)
    assert transport.paused
    loop = asyncio.new_event_loop()
    try:
        data = loop.run_until_complete(conn.read(1))
    finally:
        loop.close()
    assert len(data) == 5 * 65536
    assert not transport.paused


# --- answers told to a sink, and their deadlines (``send_now``) -------------------------------


class Told:
    """A ``Sink`` that records what it was told."""

    def __init__(self) -> None:
        self.answers: list[tuple[UpstreamConnection, BaseException | None]] = []

    def upstream_answered(self, conn: UpstreamConnection) -> None:
        self.answers.append((conn, conn.error))


def test_the_sink_is_told_once_the_head_is_in_and_not_before() -> None:
    conn, _ = connection()
    sink = conn.sink = Told()
    conn.data_received(b"HTTP/1.1 200 OK\r\nContent-Le")
    assert sink.answers == []
    conn.data_received(b"ngth: 2\r\n\r\nhi")
    assert sink.answers == [(conn, None)] and conn.complete and conn.sink is None


def test_the_sink_is_told_of_a_failure_before_the_head() -> None:
    conn, transport = connection()
    sink = conn.sink = Told()
    conn.data_received(b"NOT HTTP\r\n\r\n")
    assert len(sink.answers) == 1 and isinstance(sink.answers[0][1], UpstreamError)
    assert transport.aborted


async def test_deadlines_expire_unanswered_exchanges_in_order_and_forget_answered_ones() -> None:
    loop = asyncio.get_running_loop()
    deadlines = _Deadlines(loop, 0.05)
    told = Told()
    conns = []
    for _ in range(3):
        conn = UpstreamConnection(UpstreamPool(), ORIGIN, loop)
        conn.connection_made(FakeTransport())
        conn._begin("GET")
        conn.sink = told
        deadlines.add(conn)
        conns.append(conn)
    conns[0].sink = None  # answered
    await asyncio.sleep(0.15)
    assert [(conn, type(error)) for conn, error in told.answers] == [
        (conns[1], UpstreamTimeout),
        (conns[2], UpstreamTimeout),
    ]
    # Answered entries are dropped from the front as new ones arrive: the queue stays short.
    late = conns[1]
    late._begin("GET")
    late.sink = told
    deadlines.add(late)
    late.sink = None
    deadlines.add(conns[2])
    assert len(deadlines._queue) == 1
    deadlines.close()


async def test_deadlines_forget_an_entry_whose_connection_carries_a_later_request() -> None:
    # Under load a pooled connection is answered and reused at once: the entry of its earlier
    # request must not stay at the front and hold every later entry until the timer fires.
    loop = asyncio.get_running_loop()
    deadlines = _Deadlines(loop, 30.0)
    told = Told()
    conn = UpstreamConnection(UpstreamPool(), ORIGIN, loop)
    conn.connection_made(FakeTransport())
    for _ in range(100):
        conn._begin("GET")  # the next request on the same connection, the last one answered
        conn.sink = told
        deadlines.add(conn)
    assert len(deadlines._queue) == 1
    deadlines.close()
