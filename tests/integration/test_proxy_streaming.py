"""Bodies stream through the proxy (SPEC §4): 100 MiB both ways in bounded memory, server-sent
events event by event, and ``server.max_body_size`` enforced on streamed bodies.

How memory is measured: the gateway, the upstream and the test client all run in this process and
on this event loop, so ``tracemalloc`` sees every buffer any of them allocates. Its *peak* of traced
memory during the transfer is a direct bound on what was held at once; RSS (``ru_maxrss``) would
be muddied by earlier tests (it only ever grows) and by the allocator keeping freed pages. A proxy
that buffered a whole 100 MiB body would peak at ≥ 100 MiB; a streaming one stays at a few MiB.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import time
import tracemalloc
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer

from tests.fixtures.gateway import both_listeners  # noqa: F401  (edge and aiohttp)
from tests.fixtures.upstream import upstream_base
from tests.integration.test_proxy_routing import assert_envelope, route

StartGateway = Callable[..., Any]
MiB = 1024 * 1024
BIG = 100 * MiB
CHUNK = 64 * 1024
MEMORY_BOUND = 32 * MiB


class Peak:
    """The peak of traced memory above the starting point, in bytes."""

    value = 0


@contextmanager
def traced_peak() -> Iterator[Peak]:
    """Measure the peak of Python memory allocated inside the block."""
    peak = Peak()
    tracemalloc.start(1)
    try:
        start, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        yield peak
        _, top = tracemalloc.get_traced_memory()
        peak.value = top - start
    finally:
        tracemalloc.stop()


def _pattern(i: int) -> bytes:
    return i.to_bytes(4, "big") * (CHUNK // 4)


async def _patterned_body(digest: hashlib._Hash) -> AsyncIterator[bytes]:
    """``BIG`` bytes in ``CHUNK``-sized pieces, each also fed to ``digest``."""
    for i in range(BIG // CHUNK):
        chunk = _pattern(i)
        digest.update(chunk)
        yield chunk


async def test_100_mib_upload_streams_in_bounded_memory(
    gateway_client: StartGateway, upstream: TestServer
) -> None:
    client = await gateway_client(
        server={"max_body_size": "200MiB"},
        routes=[route("/up", upstream_base(upstream))],
    )
    digest = hashlib.sha256()

    with traced_peak() as peak:
        resp = await client.post("/up/file", data=_patterned_body(digest))
        echo = await resp.json()
    assert resp.status == 200
    assert echo["body_length"] == BIG
    assert echo["body_sha256"] == digest.hexdigest()
    assert peak.value < MEMORY_BOUND, f"peak {peak.value / MiB:.1f} MiB"


async def test_100_mib_upload_with_content_length(
    gateway_client: StartGateway, upstream: TestServer
) -> None:
    """A declared length is passed on and the body still streams."""
    client = await gateway_client(
        server={"max_body_size": "200MiB"},
        routes=[route("/up", upstream_base(upstream))],
    )
    digest = hashlib.sha256()

    with traced_peak() as peak:
        resp = await client.put(
            "/up/file", data=_patterned_body(digest), headers={"Content-Length": str(BIG)}
        )
        echo = await resp.json()
    assert resp.status == 200
    assert echo["headers"]["content-length"] == [str(BIG)]
    assert "transfer-encoding" not in echo["headers"]
    assert echo["body_length"] == BIG
    assert echo["body_sha256"] == digest.hexdigest()
    assert peak.value < MEMORY_BOUND, f"peak {peak.value / MiB:.1f} MiB"


async def test_100_mib_download_streams_in_bounded_memory(
    gateway_client: StartGateway, upstream: TestServer
) -> None:
    client = await gateway_client(routes=[route("/", upstream_base(upstream))])
    expected = hashlib.sha256()
    zeros = b"\0" * CHUNK
    for _ in range(BIG // CHUNK):
        expected.update(zeros)
    digest = hashlib.sha256()
    size = 0
    with traced_peak() as peak:
        resp = await client.get("/_/download?mib=100")
        assert resp.status == 200
        async for chunk in resp.content.iter_chunked(CHUNK):
            digest.update(chunk)
            size += len(chunk)
    assert size == BIG
    assert digest.hexdigest() == expected.hexdigest()
    assert peak.value < MEMORY_BOUND, f"peak {peak.value / MiB:.1f} MiB"


async def test_download_keeps_content_length(
    gateway_client: StartGateway, upstream: TestServer
) -> None:
    client = await gateway_client(routes=[route("/", upstream_base(upstream))])
    resp = await client.get("/_/download?mib=3&cl=1")
    assert resp.status == 200
    assert resp.headers["Content-Length"] == str(3 * MiB)
    assert resp.headers["Content-Type"] == "application/octet-stream"
    assert len(await resp.read()) == 3 * MiB


async def test_server_sent_events_arrive_one_by_one(
    gateway_client: StartGateway, upstream: TestServer
) -> None:
    client = await gateway_client(routes=[route("/", upstream_base(upstream), timeout="2s")])
    gap = 0.3
    start = time.monotonic()
    resp = await client.get(f"/_/sse?gap={gap}")
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/event-stream")
    arrivals: list[tuple[float, bytes]] = []
    buffer = b""
    async for chunk in resp.content.iter_any():
        buffer += chunk
        while b"\n\n" in buffer:
            event, buffer = buffer.split(b"\n\n", 1)
            arrivals.append((time.monotonic() - start, event))
    assert [event for _, event in arrivals] == [
        b"data: event 0",
        b"data: event 1",
        b"data: event 2",
    ]
    times = [t for t, _ in arrivals]
    assert times[0] < gap, times
    assert times[1] - times[0] > gap * 0.6, times
    assert times[2] - times[1] > gap * 0.6, times


# --- server.max_body_size ---------------------------------------------------------------------


class SinkUpstream:
    """An upstream that reads every body and records whether it arrived whole."""

    def __init__(self) -> None:
        self.requests = 0
        self.completed: list[int] = []
        self.broken: list[int] = []
        self.done = asyncio.Event()

    async def handle(self, request: web.Request) -> web.Response:
        self.requests += 1
        size = 0
        try:
            async for chunk in request.content.iter_chunked(CHUNK):
                size += len(chunk)
        except BaseException:
            self.broken.append(size)
            self.done.set()
            raise
        self.completed.append(size)
        self.done.set()
        return web.json_response({"size": size})


async def _sink(aiohttp_server: Callable[..., Any]) -> tuple[SinkUpstream, TestServer]:
    sink = SinkUpstream()
    app = web.Application(client_max_size=1024**3)
    app.router.add_route("*", "/{tail:.*}", sink.handle)
    server: TestServer = await aiohttp_server(app)
    return sink, server


async def test_body_over_the_limit_with_content_length_is_413(
    gateway_client: StartGateway, aiohttp_server: Callable[..., Any]
) -> None:
    sink, server = await _sink(aiohttp_server)
    client = await gateway_client(
        server={"max_body_size": "1MiB"}, routes=[route("/", upstream_base(server))]
    )
    resp = await client.post("/x", data=io.BytesIO(b"a" * (MiB + 1)))
    assert resp.status == 413
    assert_envelope(await resp.json(), 413)
    assert sink.requests == 0
    # At the limit exactly, it goes through.
    resp = await client.post("/x", data=io.BytesIO(b"a" * MiB))
    assert resp.status == 200
    assert (await resp.json())["size"] == MiB


async def test_chunked_body_over_the_limit_is_413(
    gateway_client: StartGateway, aiohttp_server: Callable[..., Any]
) -> None:
    sink, server = await _sink(aiohttp_server)
    client = await gateway_client(
        server={"max_body_size": "1MiB"}, routes=[route("/", upstream_base(server))]
    )

    async def body(total: int) -> AsyncIterator[bytes]:
        for _ in range(total // CHUNK):
            yield b"b" * CHUNK

    resp = await client.post("/x", data=body(4 * MiB))
    assert resp.status == 413, await resp.text()
    assert_envelope(await resp.json(), 413)
    if sink.requests:
        # The gateway streams, so the upstream may have seen the start of it: never all of it.
        await asyncio.wait_for(sink.done.wait(), 5)
        assert sink.completed == []
        assert all(size <= MiB for size in sink.broken), sink.broken
    # At the limit exactly, it goes through whole.
    resp = await client.post("/x", data=body(MiB))
    assert resp.status == 200
    assert (await resp.json())["size"] == MiB
    assert sink.completed == [MiB]


async def test_slow_upload_is_not_an_upstream_timeout(
    gateway_client: StartGateway, upstream: TestServer
) -> None:
    """The route timeout measures the upstream, not a client that uploads slowly."""
    client = await gateway_client(routes=[route("/", upstream_base(upstream), timeout="300ms")])

    async def body() -> AsyncIterator[bytes]:
        for _ in range(6):
            yield b"s" * 1000
            await asyncio.sleep(0.15)

    resp = await client.post("/slow-upload", data=body())
    assert resp.status == 200
    assert (await resp.json())["body_length"] == 6000
