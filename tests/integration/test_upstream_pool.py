"""The proxy's own HTTP/1.1 client (``gateway.proxy.upstream_pool``) against real loopback servers.

Misbehaving upstreams are ``asyncio.start_server`` scripts that read raw requests and write raw
bytes. Each pool scenario runs on the default asyncio loop and on uvloop (what production uses:
its transports behave differently in details such as writing after a close); the end-to-end
tests at the bottom go through a whole gateway.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestServer

from gateway.proxy.forwarder import request_head
from gateway.proxy.upstream_pool import (
    HIGH_WATER,
    MAX_HEAD_SIZE,
    Origin,
    UpstreamConnection,
    UpstreamError,
    UpstreamPool,
    UpstreamTimeout,
)
from tests.fixtures.upstream import upstream_base
from tests.integration.test_proxy_routing import assert_envelope, raw_request, route

StartGateway = Callable[..., Any]
Handler = Callable[["Peer"], Awaitable[None]]

RUNNERS: dict[str, Callable[[Coroutine[Any, Any, None]], None]] = {"asyncio": asyncio.run}
try:
    import uvloop

    RUNNERS["uvloop"] = uvloop.run
except ImportError:  # pragma: no cover - uvloop is not installed on Windows
    pass


@pytest.fixture(params=sorted(RUNNERS))
def run(request: pytest.FixtureRequest) -> Callable[[Coroutine[Any, Any, None]], None]:
    """Run a scenario to completion on a fresh loop of the parametrised kind."""
    return RUNNERS[request.param]


# --- a scriptable raw upstream ----------------------------------------------------------------


class Peer:
    """One connection to the raw upstream, with helpers to read requests and write answers."""

    def __init__(
        self, index: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.index = index
        self.reader = reader
        self.writer = writer

    async def request(self) -> tuple[bytes, bytes] | None:
        """The next request's head and (de-chunked) body; ``None`` when the peer closed."""
        try:
            head = await self.reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            return None
        fields = {}
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            fields[name.strip().lower()] = value.strip()
        body = b""
        if b"content-length" in fields:
            body = await self.reader.readexactly(int(fields[b"content-length"]))
        elif fields.get(b"transfer-encoding") == b"chunked":
            while True:
                size = int((await self.reader.readuntil(b"\r\n"))[:-2], 16)
                data = await self.reader.readexactly(size + 2)
                if size == 0:
                    break
                body += data[:-2]
        return head, body

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    def close(self) -> None:
        self.writer.close()


class RawUpstream:
    """``asyncio.start_server`` on 127.0.0.1 running ``handler`` for every connection."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.heads: list[bytes] = []
        self._server: asyncio.Server | None = None
        self.port = 0

    async def __aenter__(self) -> RawUpstream:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()

    @property
    def origin(self) -> Origin:
        return ("http", "127.0.0.1", self.port)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        peer = Peer(self.connections, reader, writer)
        try:
            await self.handler(peer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()


def ok(body: bytes = b"ok", extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n%s" % (len(body), extra, body)


async def keep_alive_ok(peer: Peer) -> None:
    """A well-behaved upstream: ``200 ok`` to every request, keep-alive."""
    while (req := await peer.request()) is not None:
        await peer.send(ok(b"ok:" + req[0].split(b" ")[1]))


def head(method: str = "GET", target: str = "/", extra: str = "") -> bytes:
    return f"{method} {target} HTTP/1.1\r\nHost: upstream\r\n{extra}\r\n".encode()


async def fetch(
    pool: UpstreamPool,
    origin: Origin,
    method: str = "GET",
    target: str = "/",
    *,
    body: bytes | list[bytes] | None = None,
    wait: float = 2.0,
) -> tuple[UpstreamConnection, bytes]:
    """One exchange: the connection (already released) and the whole response body."""
    source = None
    extra = ""
    if isinstance(body, bytes):
        source = Chunks([body])
        extra = f"Content-Length: {len(body)}\r\n"
    elif body is not None:
        source = Chunks(body)
        extra = "Transfer-Encoding: chunked\r\n"
    conn = await pool.send(
        origin,
        method,
        head(method, target, extra),
        source,
        chunked=isinstance(body, list),
        wait_timeout=wait,
    )
    try:
        data = b""
        while chunk := await conn.read(wait):
            data += chunk
    except BaseException:
        conn.abort()
        raise
    pool.release(conn)
    return conn, data


class Chunks:
    """A ``BodySource`` over a list of chunks, with an optional pause between them."""

    def __init__(self, chunks: list[bytes], gap: float = 0.0) -> None:
        self.chunks = list(chunks)
        self.gap = gap
        self.reads = 0

    async def read(self) -> bytes:
        if self.gap and self.reads:
            await asyncio.sleep(self.gap)
        self.reads += 1
        return self.chunks.pop(0) if self.chunks else b""


# --- keep-alive and reuse ---------------------------------------------------------------------


def test_connections_are_reused(run: Callable[..., None]) -> None:
    async def scenario() -> None:
        async with RawUpstream(keep_alive_ok) as up:
            pool = UpstreamPool()
            for i in range(5):
                conn, body = await fetch(pool, up.origin, target=f"/n/{i}")
                assert (conn.status, body) == (200, f"ok:/n/{i}".encode())
                assert conn.requests == i + 1
            assert pool.connections_made == up.connections == 1
            assert pool.idle_count(up.origin) == 1
            # Concurrent requests open more connections; all go back to the pool.
            results = await asyncio.gather(*(fetch(pool, up.origin) for _ in range(4)))
            assert all(body == b"ok:/" for _, body in results)
            assert pool.connections_made == 4
            assert pool.idle_count() == 4
            await pool.close()
            assert pool.idle_count() == 0
            with pytest.raises(UpstreamError):
                await fetch(pool, up.origin)

    run(scenario())


def test_headers_keep_their_order_and_spelling(run: Callable[..., None]) -> None:
    async def answer(peer: Peer) -> None:
        await peer.request()
        await peer.send(
            b"HTTP/1.1 201 Made It\r\nX-b: 1\r\nset-cookie: a=1\r\nX-A: 2\r\n"
            b"Set-Cookie: b=2\r\nContent-Length: 0\r\n\r\n"
        )

    async def scenario() -> None:
        async with RawUpstream(answer) as up:
            pool = UpstreamPool()
            conn, body = await fetch(pool, up.origin)
            assert (conn.status, conn.reason, body) == (201, "Made It", b"")
            assert list(conn.headers.items()) == [
                ("X-b", "1"),
                ("set-cookie", "a=1"),
                ("X-A", "2"),
                ("Set-Cookie", "b=2"),
                ("Content-Length", "0"),
            ]
            assert conn.headers.getall("SET-COOKIE") == ["a=1", "b=2"]
            await pool.close()

    run(scenario())


def test_connection_close_and_http_1_0_are_not_reused(run: Callable[..., None]) -> None:
    answers = [
        ok(extra=b"Connection: close\r\n"),
        b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok",
        b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok",
    ]

    async def answer(peer: Peer) -> None:
        while await peer.request() is not None:
            await peer.send(answers[peer.index - 1])

    async def scenario() -> None:
        async with RawUpstream(answer) as up:
            pool = UpstreamPool()
            for expected_idle in (0, 0, 1):
                _, body = await fetch(pool, up.origin)
                assert body == b"ok"
                assert pool.idle_count() == expected_idle
            assert pool.connections_made == 3
            await pool.close()

    run(scenario())


def test_idle_connections_expire(run: Callable[..., None]) -> None:
    async def scenario() -> None:
        async with RawUpstream(keep_alive_ok) as up:
            pool = UpstreamPool(keepalive_timeout=0.1)
            await fetch(pool, up.origin)
            assert pool.idle_count() == 1
            await asyncio.sleep(0.35)  # the sweep closes it
            assert pool.idle_count() == 0
            await fetch(pool, up.origin)
            assert pool.connections_made == 2
            await pool.close()

    run(scenario())


def test_idle_connections_are_capped_per_origin(run: Callable[..., None]) -> None:
    async def scenario() -> None:
        async with RawUpstream(keep_alive_ok) as up:
            pool = UpstreamPool(max_idle_per_origin=2)
            await asyncio.gather(*(fetch(pool, up.origin) for _ in range(5)))
            assert pool.idle_count(up.origin) == 2
            await pool.close()

    run(scenario())


# --- stale connections ------------------------------------------------------------------------


async def first_request_only(peer: Peer) -> None:
    """Answers the first request of each connection; reads the second and hangs up: the race
    of a pooled connection the upstream closes just as a request is sent on it."""
    await peer.request()
    await peer.send(ok(b"first"))
    await peer.request()
    peer.close()


def test_stale_connection_is_retried_once_for_idempotent_requests(
    run: Callable[..., None],
) -> None:
    async def scenario() -> None:
        async with RawUpstream(first_request_only) as up:
            pool = UpstreamPool()
            await fetch(pool, up.origin)
            for method in ("GET", "PUT", "DELETE", "HEAD"):
                # Reused, found dead without an answer, sent again on a fresh connection.
                conn, _ = await fetch(pool, up.origin, method)
                assert conn.status == 200, method
                assert conn.requests == 1
            assert pool.connections_made == up.connections == 5
            await pool.close()

    run(scenario())


def test_stale_connection_is_not_retried_for_post_or_bodies(run: Callable[..., None]) -> None:
    async def scenario() -> None:
        async with RawUpstream(first_request_only) as up:
            pool = UpstreamPool()
            for method, body in (("POST", None), ("PUT", b"payload"), ("GET", [b"a", b"b"])):
                await fetch(pool, up.origin)  # a connection to reuse
                made = pool.connections_made
                with pytest.raises(UpstreamError):
                    await fetch(pool, up.origin, method, body=body)
                assert pool.connections_made == made, method  # no second attempt
            await pool.close()

    run(scenario())


def test_a_fresh_connection_is_never_retried(run: Callable[..., None]) -> None:
    async def hang_up(peer: Peer) -> None:
        await peer.request()
        peer.close()

    async def scenario() -> None:
        async with RawUpstream(hang_up) as up:
            pool = UpstreamPool()
            with pytest.raises(UpstreamError):
                await fetch(pool, up.origin)
            assert up.connections == pool.connections_made == 1
            await pool.close()

    run(scenario())


def test_connection_closed_while_idle_is_not_used(run: Callable[..., None]) -> None:
    async def close_after_answer(peer: Peer) -> None:
        await peer.request()
        await peer.send(ok())  # announces keep-alive, then closes anyway
        peer.close()

    async def scenario() -> None:
        async with RawUpstream(close_after_answer) as up:
            pool = UpstreamPool()
            await fetch(pool, up.origin)
            await asyncio.sleep(0.05)
            assert pool.idle_count() == 0
            # Not idempotent, so it could not be retried: it must get a fresh connection.
            _, body = await fetch(pool, up.origin, "POST", body=b"x")
            assert body == b"ok"
            await pool.close()

    run(scenario())


def test_unsolicited_bytes_on_an_idle_connection_close_it(run: Callable[..., None]) -> None:
    async def chatty(peer: Peer) -> None:
        await peer.request()
        await peer.send(ok())
        await asyncio.sleep(0.05)
        await peer.send(ok(b"nobody asked"))
        await peer.request()

    async def scenario() -> None:
        async with RawUpstream(chatty) as up:
            pool = UpstreamPool()
            await fetch(pool, up.origin)
            await asyncio.sleep(0.15)
            assert pool.idle_count() == 0
            await pool.close()

    run(scenario())


# --- response framing -------------------------------------------------------------------------


def test_chunked_response(run: Callable[..., None]) -> None:
    async def chunked(peer: Peer) -> None:
        while await peer.request() is not None:
            await peer.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
            await asyncio.sleep(0.02)
            await peer.send(b"7\r\n, world\r\n0\r\nX-Trailer: t\r\n\r\n")

    async def scenario() -> None:
        async with RawUpstream(chunked) as up:
            pool = UpstreamPool()
            for _ in range(2):
                conn, body = await fetch(pool, up.origin)
                assert body == b"hello, world"
                assert conn.headers["Transfer-Encoding"] == "chunked"
            assert pool.connections_made == 1
            await pool.close()

    run(scenario())


def test_close_delimited_response(run: Callable[..., None]) -> None:
    async def until_eof(peer: Peer) -> None:
        await peer.request()
        await peer.send(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\npart one, ")
        await asyncio.sleep(0.02)
        await peer.send(b"part two")
        peer.close()

    async def scenario() -> None:
        async with RawUpstream(until_eof) as up:
            pool = UpstreamPool()
            _, body = await fetch(pool, up.origin)
            assert body == b"part one, part two"
            assert pool.idle_count() == 0
            await pool.close()

    run(scenario())


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + b"x" * 100,
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
    ],
    ids=["content-length", "chunked"],
)
def test_body_breaking_off_is_an_error(run: Callable[..., None], answer: bytes) -> None:
    async def short(peer: Peer) -> None:
        await peer.request()
        await peer.send(answer)
        peer.close()

    async def scenario() -> None:
        async with RawUpstream(short) as up:
            pool = UpstreamPool()
            conn = await pool.send(up.origin, "GET", head(), None, chunked=False, wait_timeout=2)
            assert conn.status == 200
            assert await conn.read(2)  # what did arrive is passed on…
            with pytest.raises(UpstreamError):
                await conn.read(2)  # …then the break is reported
            pool.release(conn)
            assert pool.idle_count() == 0
            await pool.close()

    run(scenario())


def test_head_response_has_no_body_and_keeps_the_connection(run: Callable[..., None]) -> None:
    async def head_then_get(peer: Peer) -> None:
        while (req := await peer.request()) is not None:
            if req[0].startswith(b"HEAD"):
                await peer.send(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n")
            else:
                await peer.send(ok(b"hello"))

    async def scenario() -> None:
        async with RawUpstream(head_then_get) as up:
            pool = UpstreamPool()
            conn, body = await fetch(pool, up.origin, "HEAD")
            assert (conn.status, body, conn.headers["Content-Length"]) == (200, b"", "5")
            conn, body = await fetch(pool, up.origin, "GET")
            assert body == b"hello"
            conn, body = await fetch(pool, up.origin, "HEAD")
            assert body == b""
            assert pool.connections_made == 1
            await pool.close()

    run(scenario())


@pytest.mark.parametrize(
    ("method", "answer"),
    [
        ("HEAD", b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"),
        ("GET", b"HTTP/1.1 204 No Content\r\n\r\nhello"),
        ("GET", b"HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\nhello"),
        ("GET", ok(b"one") + ok(b"two")),
        ("GET", ok(b"one") + b"garbage\r\n\r\n"),
    ],
    ids=["body-on-head", "body-on-204", "body-on-304", "pipelined-extra", "trailing-garbage"],
)
def test_bytes_beyond_the_response_are_dropped_with_the_connection(
    run: Callable[..., None], method: str, answer: bytes
) -> None:
    async def overflow(peer: Peer) -> None:
        while await peer.request() is not None:
            await peer.send(answer)

    async def scenario() -> None:
        async with RawUpstream(overflow) as up:
            pool = UpstreamPool()
            _, body = await fetch(pool, up.origin, method)
            assert body in (b"", b"one")
            assert pool.idle_count() == 0
            await fetch(pool, up.origin, method)  # a fresh connection
            assert pool.connections_made == 2
            await pool.close()

    run(scenario())


def test_interim_responses_are_skipped(run: Callable[..., None]) -> None:
    async def early_hints(peer: Peer) -> None:
        await peer.request()
        await peer.send(b"HTTP/1.1 100 Continue\r\n\r\n")
        await peer.send(b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n")
        await peer.send(ok(b"final"))

    async def scenario() -> None:
        async with RawUpstream(early_hints) as up:
            pool = UpstreamPool()
            conn, body = await fetch(pool, up.origin)
            assert (conn.status, conn.reason, body) == (200, "OK", b"final")
            assert "Link" not in conn.headers
            await pool.close()

    run(scenario())


@pytest.mark.parametrize(
    "answer",
    [
        b"this is not HTTP\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * (MAX_HEAD_SIZE + 10) + b"\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n" + b"X-Many: 1\r\n" * 200 + b"Content-Length: 0\r\n\r\n",
    ],
    ids=["garbage", "two-lengths", "length-and-chunked", "101", "huge-head", "many-headers"],
)
def test_unusable_responses_are_errors(run: Callable[..., None], answer: bytes) -> None:
    async def bad(peer: Peer) -> None:
        await peer.request()
        await peer.send(answer)
        await peer.request()  # keep the connection open: the client must give up by itself

    async def scenario() -> None:
        async with RawUpstream(bad) as up:
            pool = UpstreamPool()
            with pytest.raises(UpstreamError):
                await fetch(pool, up.origin)
            assert pool.idle_count() == 0
            await pool.close()

    run(scenario())


# --- timeouts and failures --------------------------------------------------------------------


def test_refused_connection_is_an_error(run: Callable[..., None]) -> None:
    async def scenario() -> None:
        async with RawUpstream(keep_alive_ok) as up:
            origin = up.origin
        await asyncio.sleep(0.01)
        pool = UpstreamPool()
        with pytest.raises(UpstreamError):
            await fetch(pool, origin)
        await pool.close()

    run(scenario())


def test_slowloris_head_times_out(run: Callable[..., None]) -> None:
    """An upstream that trickles its head still has to finish it within the timeout."""

    async def trickle(peer: Peer) -> None:
        await peer.request()
        for byte in b"HTTP/1.1 200 OK\r\nX-Slow: " + b"s" * 100:
            await peer.send(bytes([byte]))
            await asyncio.sleep(0.02)

    async def scenario() -> None:
        async with RawUpstream(trickle) as up:
            pool = UpstreamPool()
            loop = asyncio.get_running_loop()
            started = loop.time()
            with pytest.raises(UpstreamTimeout):
                await fetch(pool, up.origin, wait=0.3)
            assert 0.25 < loop.time() - started < 1.5
            await pool.close()

    run(scenario())


def test_stalled_body_times_out(run: Callable[..., None]) -> None:
    async def stall(peer: Peer) -> None:
        await peer.request()
        await peer.send(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
        await asyncio.sleep(5)

    async def scenario() -> None:
        async with RawUpstream(stall) as up:
            pool = UpstreamPool()
            conn = await pool.send(up.origin, "GET", head(), None, chunked=False, wait_timeout=0.2)
            assert await conn.read(0.2) == b"abc"
            with pytest.raises(UpstreamTimeout):
                await conn.read(0.2)
            conn.abort()
            await pool.close()

    run(scenario())


def test_cancellation_aborts_the_connection(run: Callable[..., None]) -> None:
    seen_eof = asyncio.Event()

    async def hang(peer: Peer) -> None:
        await peer.request()
        await peer.reader.read()  # until the client goes away
        seen_eof.set()

    async def scenario() -> None:
        async with RawUpstream(hang) as up:
            pool = UpstreamPool()
            task = asyncio.ensure_future(fetch(pool, up.origin, wait=30))
            await asyncio.sleep(0.1)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await asyncio.wait_for(seen_eof.wait(), 2)
            assert pool.idle_count() == 0
            await pool.close()

    run(scenario())


# --- request bodies ---------------------------------------------------------------------------


def test_request_bodies_are_framed(run: Callable[..., None]) -> None:
    received: list[tuple[bytes, bytes]] = []

    async def record(peer: Peer) -> None:
        while (req := await peer.request()) is not None:
            received.append(req)
            await peer.send(ok(str(len(req[1])).encode()))

    async def scenario() -> None:
        async with RawUpstream(record) as up:
            pool = UpstreamPool()
            _, body = await fetch(pool, up.origin, "POST", body=b"exactly this")
            assert body == b"12"
            _, body = await fetch(pool, up.origin, "POST", body=[b"abc", b"", b"defgh"])
            assert body == b"3"  # an empty chunk would end a chunked body: the source ended
            _, body = await fetch(pool, up.origin, "POST", body=[b"abc", b"defgh"])
            assert body == b"8"
            _, body = await fetch(pool, up.origin, "POST", body=[])
            assert body == b"0"
            assert pool.connections_made == 1
            await pool.close()
        assert b"content-length: 12" in received[0][0].lower()
        assert b"transfer-encoding: chunked" in received[1][0].lower()
        assert [r[1] for r in received] == [b"exactly this", b"abc", b"abcdefgh", b""]

    run(scenario())


def test_large_upload_respects_flow_control(run: Callable[..., None]) -> None:
    """A slow reader upstream: the writer waits for the transport to drain, memory stays low."""
    total = 8 * 1024 * 1024

    async def slow_reader(peer: Peer) -> None:
        await peer.reader.readuntil(b"\r\n\r\n")
        size = 0
        while size < total:
            size += len(await peer.reader.read(64 * 1024))
            await asyncio.sleep(0.001)
        await peer.send(ok(str(size).encode()))

    class Big:
        def __init__(self, pool: UpstreamPool) -> None:
            self.pool = pool
            self.left = total
            self.max_buffered = 0

        async def read(self) -> bytes:
            for conn in self.pool._all:
                assert conn.transport is not None
                size = conn.transport.get_write_buffer_size()
                self.max_buffered = max(self.max_buffered, size)
            if not self.left:
                return b""
            self.left -= 256 * 1024
            return b"u" * (256 * 1024)

    async def scenario() -> None:
        async with RawUpstream(slow_reader) as up:
            pool = UpstreamPool()
            source = Big(pool)
            conn = await pool.send(
                up.origin,
                "POST",
                head("POST", extra=f"Content-Length: {total}\r\n"),
                source,
                chunked=False,
                wait_timeout=5,
            )
            assert conn.take_body() == str(total).encode()
            pool.release(conn)
            # Without drain the whole 8 MiB would pile up in the transport's buffer.
            assert source.max_buffered < 2 * 1024 * 1024, source.max_buffered
            await pool.close()

    run(scenario())


def test_early_answer_stops_the_upload(run: Callable[..., None]) -> None:
    async def refuse(peer: Peer) -> None:
        await peer.reader.readuntil(b"\r\n\r\n")
        await peer.send(
            b"HTTP/1.1 413 Too Big\r\nContent-Length: 4\r\nConnection: close\r\n\r\nnope"
        )
        await asyncio.sleep(0.2)

    async def scenario() -> None:
        async with RawUpstream(refuse) as up:
            pool = UpstreamPool()
            source = Chunks([b"x" * 1024] * 50, gap=0.01)
            conn = await pool.send(
                up.origin,
                "POST",
                head("POST", extra="Transfer-Encoding: chunked\r\n"),
                source,
                chunked=True,
                wait_timeout=2,
            )
            assert (conn.status, await conn.read(2)) == (413, b"nope")
            assert source.reads < 50  # the rest of the body was not read from the client
            pool.release(conn)
            assert pool.idle_count() == 0
            await pool.close()

    run(scenario())


def test_errors_from_the_body_source_abort_the_connection(run: Callable[..., None]) -> None:
    class Failing:
        def __init__(self) -> None:
            self.reads = 0

        async def read(self) -> bytes:
            self.reads += 1
            if self.reads > 2:
                raise ValueError("client body broke")
            return b"data"

    async def scenario() -> None:
        async with RawUpstream(keep_alive_ok) as up:
            pool = UpstreamPool()
            with pytest.raises(ValueError, match="client body broke"):
                await pool.send(
                    up.origin,
                    "POST",
                    head("POST", extra="Transfer-Encoding: chunked\r\n"),
                    Failing(),
                    chunked=True,
                    wait_timeout=2,
                )
            assert pool.idle_count() == 0
            await pool.close()

    run(scenario())


# --- response backpressure --------------------------------------------------------------------


def test_slow_consumer_pauses_reading(run: Callable[..., None]) -> None:
    total = 16 * 1024 * 1024

    async def firehose(peer: Peer) -> None:
        await peer.request()
        await peer.send(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % total)
        chunk = b"z" * (256 * 1024)
        for _ in range(total // len(chunk)):
            await peer.send(chunk)
        await peer.request()  # stay open: the connection is reusable

    async def scenario() -> None:
        async with RawUpstream(firehose) as up:
            pool = UpstreamPool()
            conn = await pool.send(up.origin, "GET", head(), None, chunked=False, wait_timeout=5)
            size = 0
            largest = 0
            while chunk := await conn.read(5):
                size += len(chunk)
                largest = max(largest, len(chunk))
                await asyncio.sleep(0.002)  # a slow client
            assert size == total
            # Never more than the high-water mark plus what one socket read can add.
            assert largest <= HIGH_WATER + 1024 * 1024, largest
            pool.release(conn)
            assert pool.idle_count() == 1
            await pool.close()

    run(scenario())


# --- TLS --------------------------------------------------------------------------------------


def _self_signed(directory: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def test_https_upstream(run: Callable[..., None], tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(cert, key)

    async def scenario() -> None:
        server = await asyncio.start_server(
            lambda r, w: RawUpstream(keep_alive_ok)._serve(r, w),
            "127.0.0.1",
            0,
            ssl=server_context,
        )
        port = server.sockets[0].getsockname()[1]
        origin = ("https", "127.0.0.1", port)
        try:
            trusting = UpstreamPool(ssl_context=ssl.create_default_context(cafile=str(cert)))
            for _ in range(3):
                _, body = await fetch(trusting, origin, target="/tls")
                assert body == b"ok:/tls"
            assert trusting.connections_made == 1
            await trusting.close()
            # The default context does not trust a self-signed certificate.
            default = UpstreamPool()
            with pytest.raises(UpstreamError):
                await fetch(default, origin)
            await default.close()
        finally:
            server.close()

    run(scenario())


# --- request serialisation --------------------------------------------------------------------


def test_request_head_serialisation() -> None:
    lines = [b"Host: up:8080", b"X-Multi: a", b"x-multi: b", b"X-Utf8: caf\xc3\xa9", b"X-Raw: \xff"]
    assert request_head("POST", "/p?q=1", lines, b"Content-Length: 0\r\n") == (
        b"POST /p?q=1 HTTP/1.1\r\nHost: up:8080\r\nX-Multi: a\r\nx-multi: b\r\n"
        b"X-Utf8: caf\xc3\xa9\r\nX-Raw: \xff\r\nContent-Length: 0\r\n\r\n"
    )


# --- through the gateway ----------------------------------------------------------------------


async def _raw_gateway(gateway_client: StartGateway, handler: Handler, **route_kw: Any) -> Any:
    up = RawUpstream(handler)
    await up.__aenter__()
    client = await gateway_client(routes=[route("/", f"http://127.0.0.1:{up.port}", **route_kw)])
    return up, client


async def test_gateway_huge_response_head_is_502(gateway_client: StartGateway) -> None:
    async def huge(peer: Peer) -> None:
        await peer.request()
        await peer.send(b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * (MAX_HEAD_SIZE + 1) + b"\r\n\r\n")
        await peer.request()

    up, client = await _raw_gateway(gateway_client, huge)
    try:
        resp = await client.get("/x")
        assert resp.status == 502
        assert_envelope(await resp.json(), 502)
    finally:
        await up.__aexit__()


async def test_gateway_slowloris_upstream_is_504(gateway_client: StartGateway) -> None:
    async def trickle(peer: Peer) -> None:
        await peer.request()
        for byte in b"HTTP/1.1 200 OK\r\n" + b"X-Slow: 1\r\n" * 20:
            await peer.send(bytes([byte]))
            await asyncio.sleep(0.01)

    up, client = await _raw_gateway(gateway_client, trickle, timeout="300ms")
    try:
        resp = await client.get("/x")
        assert resp.status == 504
        assert_envelope(await resp.json(), 504)
    finally:
        await up.__aexit__()


async def test_gateway_head_and_204_with_stray_bodies(gateway_client: StartGateway) -> None:
    """A body where none may be is dropped, with the connection; the next request is fine."""

    async def sloppy(peer: Peer) -> None:
        while (req := await peer.request()) is not None:
            if req[0].startswith(b"HEAD"):
                await peer.send(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")
            elif b" /204 " in req[0]:
                await peer.send(b"HTTP/1.1 204 No Content\r\n\r\nstray")
            else:
                await peer.send(ok(b"fine"))

    up, client = await _raw_gateway(gateway_client, sloppy)
    try:
        resp = await raw_request(client.host, client.port, "HEAD", "/h")
        assert resp.status == 200
        assert resp.headers["Content-Length"] == "5"
        assert resp.body == b""
        resp = await raw_request(client.host, client.port, "GET", "/204")
        assert (resp.status, resp.body) == (204, b"")
        for _ in range(2):
            resp = await raw_request(client.host, client.port, "GET", "/x")
            assert (resp.status, resp.body) == (200, b"fine")
    finally:
        await up.__aexit__()


async def test_gateway_passes_an_early_upstream_answer(gateway_client: StartGateway) -> None:
    async def refuse(peer: Peer) -> None:
        await peer.reader.readuntil(b"\r\n\r\n")
        await peer.send(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 2\r\n\r\nno")
        await asyncio.sleep(0.5)

    up, client = await _raw_gateway(gateway_client, refuse)

    async def body() -> AsyncIterator[bytes]:
        for _ in range(20):
            yield b"b" * 1024
            await asyncio.sleep(0.01)

    try:
        resp = await client.post("/upload", data=body())
        assert resp.status == 403
        assert await resp.read() == b"no"
    finally:
        await up.__aexit__()


async def test_gateway_sends_content_length_zero_for_empty_posts(
    gateway_client: StartGateway, upstream: TestServer
) -> None:
    client = await gateway_client(routes=[route("/", upstream_base(upstream))])
    for method in ("POST", "PUT", "PATCH", "DELETE"):
        resp = await raw_request(client.host, client.port, method, "/e")
        assert resp.status == 200, method
        echo = resp.json()
        assert echo["headers"].get("content-length") == ["0"], method
        assert "transfer-encoding" not in echo["headers"]
    resp = await raw_request(client.host, client.port, "GET", "/e")
    assert "content-length" not in resp.json()["headers"]
