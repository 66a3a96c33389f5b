"""Slow and huge request heads, slow bodies of the auth API, and TLS bytes on the plain port.

Found by a black-box probe of `gateway serve`: on a connection aiohttp's side owns (after a
chunked request, say) a request head could grow to about 1 MiB (aiohttp's limits are per
field) and take for ever to come, as could a chunked body to the auth API; every byte of it
held in memory, none of it timed out. The edge's limits now hold there too: a head over
``MAX_HEAD_SIZE`` is a 400 envelope, and the edge's sweeper (ticks of half the keep-alive
timeout; here ``TICK``) closes a connection idle for two ticks, with a 408 envelope when part of
a head came, and holds a body of the auth API to two ticks. And TLS bytes on the plain port
used to get no answer at all (the edge waited for a CRLF that never comes): now the 400
envelope, at once.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any, cast

from aiohttp.test_utils import TestClient

from gateway.edge.connection import MAX_HEAD_SIZE
from gateway.edge.server import EdgeServer
from tests.integration.test_connection_hygiene import exchange, parse, start
from tests.integration.test_proxy_routing import assert_envelope

Client = TestClient[Any, Any]
StartGateway = Callable[..., Any]

# The hand-over to aiohttp's side swaps the protocol of a live transport, which each loop
# implements itself: asyncio's loop and uvloop (what ``gateway serve`` runs on).
BOTH_LOOPS = True

TICK = 0.1
"""The sweeper's tick in the tests that time out (``keepalive_timeout`` 0.2 s): two ticks are
0.1 to 0.2 s, where ``gateway serve`` has 37.5 to 75 s."""

CHUNKED = (
    b"POST /public/chunked HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"3\r\nabc\r\n0\r\n\r\n"
)
"""A request the edge hands over: aiohttp's side owns its connection from then on."""
CHUNKED_LOGIN = (
    b"POST /api/v1/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n"
)
"""The same, to the auth API (a 400: no email, no password)."""

CLIENT_HELLO = (
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"
    + bytes(range(0x20, 0x40))  # (random)
    + b"\x20"
    + bytes(range(0x40, 0x60))  # (session id)
    + b"\x00\x20"
    + bytes(range(0x80, 0xA0))  # (cipher suites)
    + b"\x01\x00\x01\x93"
    + bytes(i % 0xF0 + 0x0E for i in range(403))  # (extensions)
)
"""The bytes of a TLS ClientHello (517 bytes, no CR or LF anywhere)."""


def edge_of(client: Client) -> EdgeServer:
    runner = client.server.runner
    assert runner is not None
    return cast(EdgeServer, runner.server)


def fields(size: int, name: bytes = b"X-Pad") -> bytes:
    """Header lines of ``size`` bytes in all, none over aiohttp's 8190-byte field limit."""
    lines = b""
    while size:
        line = min(size, 8000)
        assert line > len(name) + 4, "a remainder too small for a line of its own"
        lines += name + b": " + b"a" * (line - len(name) - 4) + b"\r\n"
        size -= line
    return lines


def head_of(size: int, target: bytes = b"/public/sized") -> bytes:
    """A complete GET head of exactly ``size`` bytes (blank line included)."""
    start = b"GET " + target + b" HTTP/1.1\r\nHost: x\r\n"
    return start + fields(size - len(start) - 2) + b"\r\n"


async def connect(client: Client) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection(client.host, client.port)


async def answer(reader: asyncio.StreamReader) -> bytes:
    """The next answer on a connection: head and ``Content-Length`` body."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    length = int(parse(head)[1].get("content-length", "0"))
    return head + await asyncio.wait_for(reader.readexactly(length), 5)


async def rest(reader: asyncio.StreamReader, wait: float) -> tuple[bytes, bool, float]:
    """What comes until the gateway closes the connection (``wait`` seconds at most), whether
    it did, and after how long."""
    started = time.monotonic()
    received = bytearray()
    try:
        async with asyncio.timeout(wait):
            while chunk := await reader.read(65536):
                received += chunk
            return bytes(received), True, time.monotonic() - started
    except TimeoutError:
        return bytes(received), False, wait
    except ConnectionResetError:
        return bytes(received), True, time.monotonic() - started


async def trickle(writer: asyncio.StreamWriter, data: bytes, every: float = 0.02) -> None:
    """Send ``data`` a byte at a time (until the gateway closes the connection)."""
    try:
        for i in range(len(data)):
            writer.write(data[i : i + 1])
            await writer.drain()
            await asyncio.sleep(every)
    except (ConnectionError, OSError, RuntimeError):  # (uvloop: "the handler is closed")
        pass


def assert_closing_envelope(data: bytes, status: int, detail: str | None = None) -> None:
    line, headers, body = parse(data)
    assert line.startswith(f"HTTP/1.1 {status} "), data[:300]
    envelope = json.loads(body)
    assert_envelope(envelope, status)
    if detail is not None:
        assert envelope["errors"][1] == detail
    assert headers["connection"] == "close"
    assert headers["server"] == "gateway"
    assert headers["x-request-id"]


# --- huge heads -------------------------------------------------------------------------------


async def test_a_head_over_the_limit_is_a_400_on_aiohttps_side_too(
    gateway_client: StartGateway, aiohttp_server: Callable[..., Any]
) -> None:
    """On a connection aiohttp's side owns (after a chunked request, to a proxied route or to
    the auth API), a head over ``MAX_HEAD_SIZE`` — whole, or still arriving — is the 400
    envelope, and the connection ends; one of ``MAX_HEAD_SIZE`` bytes is served."""
    client, upstream = await start(gateway_client, aiohttp_server)
    for first, status in ((CHUNKED, "200"), (CHUNKED_LOGIN, "400")):
        for head, served in (
            (head_of(MAX_HEAD_SIZE, b"/public/fits"), True),
            (head_of(MAX_HEAD_SIZE + 1, b"/public/whole"), False),
            # Still arriving: three fields of 8000 bytes and no blank line (yet).
            (b"GET /public/growing HTTP/1.1\r\nHost: x\r\n" + fields(24000, b"X-Hn"), False),
        ):
            reader, writer = await connect(client)
            try:
                writer.write(first)
                assert parse(await answer(reader))[0].startswith(f"HTTP/1.1 {status} ")
                writer.write(head)
                if served:
                    assert parse(await answer(reader))[0] == "HTTP/1.1 200 OK"
                    continue
                data, closed, _ = await rest(reader, 5)
            finally:
                writer.close()
            assert_closing_envelope(data, 400, "malformed HTTP request")
            assert closed
    assert upstream.paths().count("/public/fits") == 2
    assert "/public/whole" not in upstream.paths()
    assert "/public/growing" not in upstream.paths()


async def test_a_head_over_the_limit_is_a_400_on_a_fresh_connection(
    gateway_client: StartGateway, aiohttp_server: Callable[..., Any]
) -> None:
    """The probe's head (8000-byte fields, no blank line): refused once over the limit, its
    connection closed, rather than held until aiohttp's limits (about 1 MiB) or for ever."""
    client, upstream = await start(gateway_client, aiohttp_server)
    for head in (
        b"GET /public/x HTTP/1.1\r\nHost: x\r\n" + fields(120 * 8000, b"X-Hn"),
        head_of(MAX_HEAD_SIZE + 1),
    ):
        reader, writer = await connect(client)
        sending = asyncio.create_task(send_all(writer, head))
        try:
            data, closed, _ = await rest(reader, 5)
        finally:
            await sending
            writer.close()
        assert_closing_envelope(data, 400, "malformed HTTP request")
        assert closed
    assert upstream.seen == []


async def send_all(writer: asyncio.StreamWriter, data: bytes) -> None:
    """Send ``data`` in pieces of 16 KiB (as long as the gateway reads)."""
    try:
        for i in range(0, len(data), 16384):
            writer.write(data[i : i + 16384])
            await writer.drain()
    except (ConnectionError, OSError, RuntimeError):
        pass


# --- slow heads and bodies --------------------------------------------------------------------


async def test_a_slow_head_on_aiohttps_side_is_a_408_and_the_end(
    gateway_client: StartGateway, aiohttp_server: Callable[..., Any]
) -> None:
    """After a chunked request, a head trickling in gets the 408 envelope within two ticks,
    and the connection ends; an idle one just ends. (aiohttp's side kept both for an hour.)"""
    client, upstream = await start(gateway_client, aiohttp_server)
    edge_of(client).keepalive_timeout = 2 * TICK
    for first in (CHUNKED, CHUNKED_LOGIN):
        reader, writer = await connect(client)
        sending = None
        try:
            writer.write(first)
            await answer(reader)
            sending = asyncio.create_task(trickle(writer, b"GET /public/slow HTTP/1.1\r\nHost: x"))
            data, closed, after = await rest(reader, 20 * TICK)
        finally:
            if sending is not None:
                await sending
            writer.close()
        assert closed and after < 20 * TICK
        assert_closing_envelope(data, 408, "the request head did not arrive in time")
        # Idle: closed without a word.
        reader, writer = await connect(client)
        try:
            writer.write(first)
            await answer(reader)
            data, closed, after = await rest(reader, 20 * TICK)
        finally:
            writer.close()
        assert (data, closed) == (b"", True)
    assert upstream.paths() == ["/public/chunked"] * 2


async def test_a_slow_head_on_the_edge_is_a_408_too(
    gateway_client: StartGateway, aiohttp_server: Callable[..., Any]
) -> None:
    """The edge used to close a connection whose head stopped half-way without a word; it now
    answers as aiohttp's side does."""
    client, upstream = await start(gateway_client, aiohttp_server)
    edge = edge_of(client)
    edge.keepalive_timeout = 2 * TICK
    for before in (b"", b"GET /public/first HTTP/1.1\r\nHost: x\r\n\r\n"):
        reader, writer = await connect(client)
        sending = None
        try:
            if before:
                writer.write(before)
                assert parse(await answer(reader))[0] == "HTTP/1.1 200 OK"
            sending = asyncio.create_task(trickle(writer, b"GET /public/slow HTTP/1.1\r\nHost: x"))
            data, closed, after = await rest(reader, 20 * TICK)
        finally:
            if sending is not None:
                await sending
            writer.close()
        assert closed and after < 20 * TICK
        assert_closing_envelope(data, 408, "the request head did not arrive in time")
    assert upstream.paths() == ["/public/first"]
    assert edge.requests_served == 1


async def test_a_slow_body_to_the_auth_api_is_a_408_and_the_end(
    gateway_client: StartGateway, aiohttp_server: Callable[..., Any]
) -> None:
    """A login whose body trickles in — chunked (aiohttp's side owns the connection) or with a
    ``Content-Length`` (lent to it) — gets the 408 envelope two ticks after its head, and the
    connection ends. (Nothing bounded it: the proxy's bodies have their route's timeout.)"""
    client, _ = await start(gateway_client, aiohttp_server)
    edge_of(client).keepalive_timeout = 2 * TICK
    head = b"POST /api/v1/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    body = b'{"email": "someone@example.com", "password": "a password"}'
    for framing, start_of_body, rest_of_body in (
        (b"Transfer-Encoding: chunked\r\n", b"%x\r\n" % len(body), body + b"\r\n0\r\n\r\n"),
        (b"Content-Length: %d\r\n" % len(body), b"", body),
    ):
        reader, writer = await connect(client)
        writer.write(head + framing + b"\r\n" + start_of_body)
        sending = asyncio.create_task(trickle(writer, rest_of_body))
        try:
            data, closed, after = await rest(reader, 20 * TICK)
        finally:
            await sending
            writer.close()
        assert closed and after < 20 * TICK
        assert_closing_envelope(data, 408, "the request body did not arrive in time")
    assert edge_of(client).requests_served == 0


# --- TLS on the plain port --------------------------------------------------------------------


async def test_a_tls_client_hello_on_the_plain_port_is_a_400_at_once(
    gateway_client: StartGateway, aiohttp_server: Callable[..., Any]
) -> None:
    """First on a connection, after a request the edge served, after one aiohttp's side
    served: the 400 envelope and the end of the connection, at once (it used to be silence,
    then the keep-alive timeout: 37.5 to 75 s)."""
    client, upstream = await start(gateway_client, aiohttp_server)
    for before in (b"", b"GET /public/first HTTP/1.1\r\nHost: x\r\n\r\n", CHUNKED):
        reader, writer = await connect(client)
        try:
            if before:
                writer.write(before)
                assert parse(await answer(reader))[0] == "HTTP/1.1 200 OK"
            writer.write(CLIENT_HELLO)
            data, closed, after = await rest(reader, 3)
        finally:
            writer.close()
        assert closed and after < 1
        assert_closing_envelope(data, 400, "malformed HTTP request")
    # Other bytes no method starts with: the same.
    for first in (b"\x00\x00\x00\x00", b"\x80\x01", b" GET / HTTP/1.1"):
        data, closed = await exchange(client, first, wait=3)
        assert_closing_envelope(data, 400, "malformed HTTP request")
        assert closed
    assert upstream.paths() == ["/public/first", "/public/chunked"]
