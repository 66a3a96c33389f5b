"""The edge (``gateway.edge``): which requests it proxies itself, which it hands to aiohttp, and
what a connection that carries both looks like — keep-alive, pipelining, hand-over mid-stream,
``Connection: close``, idle timeout, shutdown with a request in flight, the access log.

Requests go over raw sockets (``RawConnection``): aiohttp's client would open connections of
its own choosing, and these tests are about what happens on one connection.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Callable
from typing import Any, cast

import pytest
from aiohttp.test_utils import TestClient, TestServer
from multidict import CIMultiDict

from gateway.app import create_app
from gateway.appkeys import SERVICES
from gateway.edge.connection import MAX_HEAD_SIZE
from gateway.edge.server import EdgeServer
from tests.fixtures.factories import create_user
from tests.fixtures.gateway import GatewayTestServer, MakeConfig
from tests.fixtures.upstream import upstream_base
from tests.integration.test_proxy_routing import assert_envelope, route

Client = TestClient[Any, Any]
StartGateway = Callable[..., Any]


# Every test here runs on asyncio's loop and on uvloop (what ``gateway serve`` runs on): the
# hand-over swaps the protocol of a live transport, which each loop implements itself
# (``tests/conftest.py``, ``pytest_asyncio_loop_factories``).
BOTH_LOOPS = True


class RawConnection:
    """One client connection: write raw requests, read responses one by one."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.status_line = ""

    @classmethod
    async def open(cls, client: Client) -> RawConnection:
        reader, writer = await asyncio.open_connection(client.host, client.port)
        return cls(reader, writer)

    def send(self, data: bytes) -> None:
        self.writer.write(data)

    async def response(self) -> tuple[int, CIMultiDict[str], bytes]:
        """The next response: status, headers, body (de-chunked)."""
        head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), 10)
        status_line, *lines = head.decode("latin-1").rstrip("\r\n").split("\r\n")
        self.status_line = status_line
        headers: CIMultiDict[str] = CIMultiDict()
        for line in lines:
            name, _, value = line.partition(":")
            headers.add(name.strip(), value.strip())
        if "Content-Length" in headers:
            body = await self.reader.readexactly(int(headers["Content-Length"]))
        elif headers.get("Transfer-Encoding", "").lower() == "chunked":
            body = b""
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).strip(), 16)
                chunk = await self.reader.readexactly(size + 2)
                if not size:
                    break
                body += chunk[:-2]
        else:
            body = b""
        return int(status_line.split()[1]), headers, body

    async def closed(self) -> bool:
        """True when the server closed the connection (nothing more to read)."""
        return await asyncio.wait_for(self.reader.read(), 10) == b""

    def close(self) -> None:
        self.writer.close()


def get(path: str, *extra: str, version: str = "1.1") -> bytes:
    lines = [f"GET {path} HTTP/{version}", "Host: gateway.test", *extra]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def post(path: str, body: bytes, *extra: str) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: gateway.test", f"Content-Length: {len(body)}", *extra]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def edge_of(client: Client) -> EdgeServer:
    runner = client.server.runner
    assert runner is not None
    return cast(EdgeServer, runner.server)


def ways(client: Client) -> tuple[int, int, int]:
    """Requests the edge served itself, requests lent to aiohttp, connections handed over."""
    edge = edge_of(client)
    return edge.requests_served, edge.lends, edge.handovers


@pytest.fixture
async def gateway(gateway_client: StartGateway, upstream: TestServer) -> Client:
    """A gateway with one ``auth: none`` route ``/`` to the echo upstream."""
    client: Client = await gateway_client(routes=[route("/", upstream_base(upstream))])
    return client


def edge_server(make_config: MakeConfig, upstream: TestServer) -> GatewayTestServer:
    """A gateway with one ``auth: none`` route ``/``, to start with runner options of a test."""
    app = create_app(
        make_config(routes=[route("/", upstream_base(upstream))]), migrate_embedded=False
    )
    return GatewayTestServer(app)


def echoed(body: bytes) -> dict[str, Any]:
    echo: dict[str, Any] = json.loads(body)
    return echo


# --- what the edge takes ----------------------------------------------------------------------


async def test_plain_proxied_requests_are_served_at_the_edge(gateway: Client) -> None:
    conn = await RawConnection.open(gateway)
    try:
        conn.send(get("/orders/1?x=1", "X-User-Id: 7"))
        status, headers, body = await conn.response()
    finally:
        conn.close()
    assert status == 200
    echo = echoed(body)
    assert echo["path"] == "/orders/1" and echo["query"] == "x=1"
    assert "x-user-id" not in echo["headers"]
    assert headers["X-Request-Id"] == echo["headers"]["x-request-id"][0]
    assert "Date" in headers
    edge = edge_of(gateway)
    assert (edge.requests_served, edge.handovers) == (1, 0)


LENT = "lent"
HANDED_OVER = "handed over"


@pytest.mark.parametrize(
    ("request_bytes", "way"),
    [
        pytest.param(get("/healthz"), LENT, id="own-route"),
        pytest.param(get("/api/v1/auth/me"), LENT, id="auth-api"),
        pytest.param(get("/a/../b"), LENT, id="path-to-normalise"),
        pytest.param(get("/a%2Fb"), LENT, id="percent-encoded"),
        pytest.param(get("/x", version="1.0"), HANDED_OVER, id="http-1.0"),
        pytest.param(
            b"POST /x HTTP/1.1\r\nHost: g\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"3\r\nabc\r\n0\r\n\r\n",
            HANDED_OVER,
            id="chunked-upload",
        ),
        pytest.param(post("/x", b"abc", "Expect: 100-continue"), HANDED_OVER, id="expect"),
        pytest.param(
            b"OPTIONS /x HTTP/1.1\r\nHost: g\r\nOrigin: http://app.test\r\n"
            b"Access-Control-Request-Method: GET\r\n\r\n",
            LENT,
            id="preflight",
        ),
        pytest.param(
            get("/x", "X-Big: " + "a" * (MAX_HEAD_SIZE + 10)), HANDED_OVER, id="oversized-head"
        ),
        pytest.param(
            get("/x", "Cookie: " + "c" * 9000), HANDED_OVER, id="field-over-aiohttps-limit"
        ),
        pytest.param(
            b"GET /x HTTP/1.1\r\nHost: g\r\nBad Header: 1\r\n\r\n", HANDED_OVER, id="malformed"
        ),
        pytest.param(
            b"\r\nGET /x HTTP/1.1\r\nHost: g\r\n\r\n", HANDED_OVER, id="leading-empty-line"
        ),
        pytest.param(
            get("/x", "Authorization: Bearer a", "authorization: Bearer b"),
            HANDED_OVER,
            id="two-auth",
        ),
        pytest.param(
            get("/x", "X-Request-Id: a", "X-Request-Id: b"), HANDED_OVER, id="two-request-ids"
        ),
        pytest.param(get("/x", "Host: h"), HANDED_OVER, id="two-hosts"),
        pytest.param(get("/healthz", "Connection: close"), HANDED_OVER, id="closing"),
        pytest.param(post("/api/v1/auth/login", b"{}"), LENT, id="auth-api-with-body"),
    ],
)
async def test_everything_else_is_aiohttps(gateway: Client, request_bytes: bytes, way: str) -> None:
    """Lent for the one request (a bodyless head the edge read), or handed over for good."""
    conn = await RawConnection.open(gateway)
    try:
        conn.send(request_bytes)
        status, _, body = await conn.response()
    finally:
        conn.close()
    edge = edge_of(gateway)
    assert edge.requests_served == 0
    assert (edge.lends, edge.handovers) == ((1, 0) if way == LENT else (0, 1))
    assert status < 500, body  # aiohttp answered it, whatever the answer is


async def test_errors_at_the_edge_are_envelopes_with_the_usual_headers(
    gateway_client: StartGateway, upstream: TestServer
) -> None:
    client: Client = await gateway_client(
        routes=[route("/", upstream_base(upstream), auth="required")],
        cors={"allow_origins": ["http://app.test"]},
    )
    conn = await RawConnection.open(client)
    try:
        conn.send(get("/x", "Origin: http://app.test", "Authorization: Bearer nope"))
        status, headers, body = await conn.response()
    finally:
        conn.close()
    assert status == 401
    assert_envelope(json.loads(body), 401)
    assert headers["Content-Type"] == "application/json; charset=utf-8"
    assert headers["WWW-Authenticate"] == 'Bearer realm="gateway"'
    assert headers["Access-Control-Allow-Origin"] == "http://app.test"
    assert headers["Vary"] == "Origin"
    assert headers["Server"] == "gateway"
    assert "X-Request-Id" in headers
    assert edge_of(client).requests_served == 1


# --- one connection, many requests ------------------------------------------------------------


async def test_keep_alive_connection_serves_request_after_request(gateway: Client) -> None:
    conn = await RawConnection.open(gateway)
    try:
        for i in range(5):
            conn.send(get(f"/n/{i}"))
            status, headers, body = await conn.response()
            assert status == 200 and echoed(body)["path"] == f"/n/{i}"
            assert "Connection" not in headers
    finally:
        conn.close()
    assert edge_of(gateway).requests_served == 5


async def test_pipelined_requests_are_answered_in_order(gateway: Client) -> None:
    conn = await RawConnection.open(gateway)
    try:
        conn.send(get("/p/1") + post("/p/2", b"x" * 100_000) + get("/p/3"))
        answers = [await conn.response() for _ in range(3)]
    finally:
        conn.close()
    assert [echoed(body)["path"] for _, _, body in answers] == ["/p/1", "/p/2", "/p/3"]
    assert echoed(answers[1][2])["body_length"] == 100_000
    assert edge_of(gateway).requests_served == 3


async def test_a_connection_is_lent_to_aiohttp_and_taken_back(gateway: Client) -> None:
    conn = await RawConnection.open(gateway)
    try:
        conn.send(get("/first"))
        first = await conn.response()
        # The health check and what follows it, pipelined: aiohttp answers the first, the edge
        # the second, in order.
        conn.send(get("/healthz") + get("/third"))
        second = await conn.response()
        third = await conn.response()
        # A CORS preflight and the auth API on the same connection, one after the other.
        conn.send(
            b"OPTIONS /x HTTP/1.1\r\nHost: g\r\nOrigin: http://app.test\r\n"
            b"Access-Control-Request-Method: GET\r\n\r\n"
        )
        preflight = await conn.response()
        conn.send(get("/api/v1/auth/me"))
        me = await conn.response()
        conn.send(get("/fifth"))
        fifth = await conn.response()
    finally:
        conn.close()
    assert echoed(first[2])["path"] == "/first"
    assert json.loads(second[2]) == {"status": "ok"}
    assert echoed(third[2])["path"] == "/third"
    assert preflight[0] in (204, 403) and me[0] == 401
    assert echoed(fifth[2])["path"] == "/fifth"
    assert ways(gateway) == (3, 3, 0)


async def test_a_connection_is_handed_over_between_two_requests(gateway: Client) -> None:
    conn = await RawConnection.open(gateway)
    try:
        conn.send(get("/first"))
        first = await conn.response()
        # A chunked upload and what follows it, pipelined: aiohttp gets both, in order.
        conn.send(
            b"POST /second HTTP/1.1\r\nHost: g\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"3\r\nabc\r\n0\r\n\r\n" + get("/3")
        )
        second = await conn.response()
        third = await conn.response()
    finally:
        conn.close()
    assert echoed(first[2])["path"] == "/first"
    assert echoed(second[2])["body_length"] == 3
    assert echoed(third[2])["path"] == "/3"
    assert ways(gateway) == (1, 0, 1)


async def test_a_request_with_a_body_is_lent_too(gateway: Client) -> None:
    """A login: its body (here in two pieces) goes to aiohttp, not a byte more."""
    conn = await RawConnection.open(gateway)
    body = b'{"email": "nobody@example.com", "password": "wrong password"}'
    try:
        head = post("/api/v1/auth/login", body, "Content-Type: application/json")
        conn.send(head[: -len(body) + 10])
        await asyncio.sleep(0.1)
        conn.send(head[-len(body) + 10 :] + get("/after"))
        login = await conn.response()
        after = await conn.response()
    finally:
        conn.close()
    assert login[0] == 401, login
    assert echoed(after[2])["path"] == "/after"
    assert ways(gateway) == (1, 1, 0)


async def test_a_body_aiohttp_did_not_wait_for_is_dropped_not_served(
    gateway: Client, upstream: TestServer
) -> None:
    """Answered before its body came (a 404 of the auth API): the rest of the body is read and
    dropped — a request hidden in it never reaches the upstream."""
    hidden = b"GET /smuggled HTTP/1.1\r\nHost: g\r\n\r\n"
    rest = hidden + b"x" * (90 - len(hidden))
    conn = await RawConnection.open(gateway)
    try:
        conn.send(
            b"POST /api/v1/auth/nowhere HTTP/1.1\r\nHost: g\r\nContent-Length: 100\r\n"
            b"Content-Type: application/json\r\n\r\n" + b"0123456789"
        )
        refused = await conn.response()
        conn.send(rest + get("/after"))
        after = await conn.response()
    finally:
        conn.close()
    assert refused[0] == 404
    assert echoed(after[2])["path"] == "/after"
    assert ways(gateway) == (1, 1, 0)


async def test_bodiless_answers_keep_the_connection_in_step(gateway: Client) -> None:
    conn = await RawConnection.open(gateway)
    try:
        conn.send(b"HEAD /h HTTP/1.1\r\nHost: g\r\n\r\n")
        head = await asyncio.wait_for(conn.reader.readuntil(b"\r\n\r\n"), 10)
        answers = []
        for path in ("/_/status/204", "/_/status/304", "/after"):
            conn.send(get(path))
            status, _, body = await conn.response()
            answers.append((status, body))
    finally:
        conn.close()
    assert head.startswith(b"HTTP/1.1 200 ")
    assert b"Content-Length: " in head  # the upstream's, for the body a GET would get
    assert [status for status, _ in answers] == [204, 304, 200]
    assert echoed(answers[2][1])["path"] == "/after"


async def test_connection_close_is_honoured(gateway: Client) -> None:
    conn = await RawConnection.open(gateway)
    try:
        conn.send(get("/bye", "Connection: close"))
        status, headers, _ = await conn.response()
        assert status == 200
        assert headers["Connection"] == "close"
        assert await conn.closed()
    finally:
        conn.close()


async def test_body_the_upstream_did_not_wait_for_is_read_and_dropped(gateway: Client) -> None:
    conn = await RawConnection.open(gateway)
    try:
        # The status route answers without reading the body: the gateway stops sending it
        # upstream, drops the rest as it arrives, and the connection carries on.
        conn.send(post("/_/status/201", b"x" * (8 * 1024 * 1024)))
        status, _, _ = await conn.response()
        conn.send(get("/after"))
        after = await conn.response()
    finally:
        conn.close()
    assert status == 201
    assert echoed(after[2])["path"] == "/after"
    assert edge_of(gateway).requests_served == 2


async def test_upstream_response_without_length_is_sent_chunked(gateway: Client) -> None:
    conn = await RawConnection.open(gateway)
    try:
        conn.send(get("/_/download?mib=2"))
        status, headers, body = await conn.response()
        conn.send(get("/after"))  # the connection is still good
        after = await conn.response()
    finally:
        conn.close()
    assert status == 200
    assert headers["Transfer-Encoding"] == "chunked"
    assert body == b"\0" * (2 * 1024 * 1024)
    assert echoed(after[2])["path"] == "/after"


# --- lifetime ---------------------------------------------------------------------------------


async def test_idle_connections_close_after_the_keepalive_timeout(
    make_config: MakeConfig, upstream: TestServer
) -> None:
    server = edge_server(make_config, upstream)
    await server.start_server(keepalive_timeout=0.2)
    try:
        reader, writer = await asyncio.open_connection(server.host, server.port)
        writer.write(get("/once"))
        conn = RawConnection(reader, writer)
        assert (await conn.response())[0] == 200
        # Idle for two ticks of keepalive_timeout / 2 at most, then closed.
        assert await conn.closed()
        conn.close()
    finally:
        await server.close()


@pytest.mark.parametrize("warm", [False, True], ids=["in-a-task", "without-a-task"])
async def test_shutdown_lets_the_request_in_flight_finish(
    make_config: MakeConfig, upstream: TestServer, warm: bool
) -> None:
    # warm: a first request leaves an idle upstream connection, so that the slow one is
    # sent at once and waits without a task (see "requests answered without a task").
    server = edge_server(make_config, upstream)
    await server.start_server()
    reader, writer = await asyncio.open_connection(server.host, server.port)
    conn = RawConnection(reader, writer)
    try:
        if warm:
            conn.send(get("/warm"))
            assert (await conn.response())[0] == 200
        conn.send(get("/_/slow?seconds=0.5"))
        await asyncio.sleep(0.1)  # the request is with the upstream now
        closing = asyncio.create_task(server.close())
        status, _, body = await conn.response()
        await closing
    finally:
        conn.close()
    assert (status, body) == (200, b"finally")


# --- the access log ---------------------------------------------------------------------------


async def test_access_log_lines_look_like_aiohttps(
    make_config: MakeConfig, upstream: TestServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gateway.access")
    server = edge_server(make_config, upstream)
    await server.start_server(access_log=logging.getLogger("gateway.access"))
    try:
        reader, writer = await asyncio.open_connection(server.host, server.port)
        conn = RawConnection(reader, writer)
        # The first at the edge, the second (and the connection) handed to aiohttp.
        conn.send(get("/logged?q=1", "User-Agent: probe/1", "Referer: http://r.test/"))
        await conn.response()
        conn.send(get("/healthz", "User-Agent: probe/1", "Referer: http://r.test/"))
        await conn.response()
        conn.close()
    finally:
        await server.close()
    lines = [r.getMessage() for r in caplog.records if r.name == "gateway.access"]
    assert len(lines) == 2, lines
    shape = re.compile(
        r'^127\.0\.0\.1 \[\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d [+-]\d{4}\] "GET (\S+) HTTP/1\.1" '
        r'200 \d+ "http://r\.test/" "probe/1"$'
    )
    targets = [m.group(1) for line in lines if (m := shape.match(line))]
    assert targets == ["/logged?q=1", "/healthz"], lines


async def test_rate_limited_route_counts_once_per_request_at_the_edge(
    gateway_client: StartGateway, upstream: TestServer
) -> None:
    client: Client = await gateway_client(
        routes=[
            route(
                "/", upstream_base(upstream), rate_limit={"requests": 2, "per": "1m", "key": "ip"}
            )
        ]
    )
    await create_user(client)  # an auth API request on its own connection
    conn = await RawConnection.open(client)
    try:
        statuses = []
        for _ in range(3):
            conn.send(get("/limited"))
            statuses.append((await conn.response())[0])
    finally:
        conn.close()
    assert statuses == [200, 200, 429]


# --- requests answered without a task -----------------------------------------------------------
# A request without a body whose token needs no Redis round trip, on a route without a rate
# limit, goes out on an idle pooled upstream connection at once, and the upstream connection's
# answer is written from its ``data_received`` (``exchange.Exchange.start``). The first request
# to an upstream has no idle connection yet: it goes the task's way, on a new one.


async def test_requests_after_the_first_are_answered_without_a_task(gateway: Client) -> None:
    conn = await RawConnection.open(gateway)
    try:
        for i in range(4):
            conn.send(get(f"/d/{i}", "X-Is-Admin: true"))
            status, headers, body = await conn.response()
            assert status == 200 and echoed(body)["path"] == f"/d/{i}"
            assert "x-is-admin" not in echoed(body)["headers"]
            assert headers["X-Request-Id"] == echoed(body)["headers"]["x-request-id"][0]
    finally:
        conn.close()
    edge = edge_of(gateway)
    assert (edge.requests_served, edge.answered_at_once) == (4, 3)


async def test_pipelined_requests_refused_at_once_are_answered_in_order(
    gateway_client: StartGateway, upstream: TestServer
) -> None:
    # Each is answered before the next is read, from the loop that reads them (no recursion).
    client: Client = await gateway_client(
        routes=[route("/", upstream_base(upstream), auth="required")]
    )
    count = 1500
    conn = await RawConnection.open(client)
    try:
        conn.send(b"".join(get(f"/r/{i}", "Authorization: Bearer nope") for i in range(count)))
        statuses = [(await conn.response())[0] for _ in range(count)]
        conn.send(get("/last"))
        assert (await conn.response())[0] == 401
    finally:
        conn.close()
    assert statuses == [401] * count


async def test_an_upstream_slower_than_the_timeout_gets_504_without_a_task(
    gateway_client: StartGateway,
) -> None:
    # This upstream answers the first request of a connection and never the next ones.
    unanswered: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        while True:
            unanswered.append(await reader.readuntil(b"\r\n\r\n"))

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        client: Client = await gateway_client(
            routes=[route("/", f"http://127.0.0.1:{port}", timeout="300ms")]
        )
        conn = await RawConnection.open(client)
        try:
            conn.send(get("/warm"))  # leaves an idle upstream connection in the pool
            assert (await conn.response())[0] == 200
            started = asyncio.get_running_loop().time()
            conn.send(get("/slow"))
            status, _, body = await conn.response()
            waited = asyncio.get_running_loop().time() - started
            await asyncio.sleep(0.4)
        finally:
            conn.close()
    finally:
        server.close()
    assert status == 504
    assert_envelope(json.loads(body), 504)
    assert 0.25 < waited < 2.0
    assert len(unanswered) == 1  # a timeout is not retried (only a connection found closed)
    assert edge_of(client).answered_at_once == 0


async def test_a_client_gone_while_waiting_aborts_the_upstream_connection(
    gateway: Client,
) -> None:
    conn = await RawConnection.open(gateway)
    conn.send(get("/warm"))
    assert (await conn.response())[0] == 200
    pool = gateway.app[SERVICES].proxy.pool
    assert pool.idle_count() == 1
    conn.send(get("/_/slow?seconds=5"))
    await asyncio.sleep(0.2)
    assert pool.idle_count() == 0  # taken by the slow request
    conn.close()
    edge = edge_of(gateway)
    for _ in range(100):
        await asyncio.sleep(0.02)
        if not edge._connections and not pool._all:
            break
    assert not edge._connections  # the client connection is gone, and
    assert not pool._all  # the upstream connection was aborted, not pooled


async def test_a_stale_pooled_connection_is_retried_on_a_new_one(
    gateway_client: StartGateway,
) -> None:
    # This upstream answers the first request of each connection and closes the connection
    # when the second arrives, unanswered: the race of every keep-alive client.
    seen: list[int] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(1)
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await reader.readuntil(b"\r\n\r\n")
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        client: Client = await gateway_client(routes=[route("/", f"http://127.0.0.1:{port}")])
        conn = await RawConnection.open(client)
        try:
            answers = []
            for _ in range(3):
                conn.send(get("/again"))
                answers.append((await conn.response())[::2])
        finally:
            conn.close()
    finally:
        server.close()
    assert answers == [(200, b"ok")] * 3
    assert len(seen) == 3  # the second and third went out again, each on a new connection


# --- requests lent to aiohttp -------------------------------------------------------------


async def test_a_large_lent_answer_then_the_edge_again(gateway: Client) -> None:
    """A lent request's answer streams under back-pressure; the edge goes on after it."""
    reader, writer = await asyncio.open_connection(gateway.host, gateway.port, limit=2**16)
    conn = RawConnection(reader, writer)
    try:
        # ``/x/../_/download`` is not canonical: aiohttp normalises it, and proxies it.
        conn.send(get("/x/../_/download?mib=8") + get("/after"))
        await asyncio.sleep(0.3)  # the client reads nothing yet: the gateway's writes pause
        status, _, body = await conn.response()
        after = await conn.response()
    finally:
        conn.close()
    assert status == 200 and len(body) == 8 * 1024 * 1024
    assert echoed(after[2])["path"] == "/after"
    assert ways(gateway) == (1, 1, 0)


async def test_a_client_gone_during_a_lent_request(
    make_config: MakeConfig, upstream: TestServer
) -> None:
    server = edge_server(make_config, upstream)
    await server.start_server()  # (``handler_cancellation``, as ``gateway serve`` runs)
    try:
        reader, writer = await asyncio.open_connection(server.host, server.port)
        conn = RawConnection(reader, writer)
        conn.send(get("/warm"))
        assert (await conn.response())[0] == 200
        conn.send(get("/x/../_/slow?seconds=5"))
        await asyncio.sleep(0.3)
        assert server.runner is not None
        edge = cast(EdgeServer, server.runner.server)
        pool = server.app[SERVICES].proxy.pool
        assert edge.lends == 1 and pool.idle_count() == 0
        conn.close()
        for _ in range(100):
            await asyncio.sleep(0.02)
            if not edge._connections and not pool._all and not edge._aiohttp.connections:
                break
        assert not edge._connections  # the client connection is gone,
        assert not edge._aiohttp.connections  # aiohttp's handler too,
        assert not pool._all  # and the upstream request was cancelled, its connection aborted
    finally:
        await server.close()


async def test_shutdown_lets_a_lent_request_finish(
    make_config: MakeConfig, upstream: TestServer
) -> None:
    server = edge_server(make_config, upstream)
    await server.start_server()
    reader, writer = await asyncio.open_connection(server.host, server.port)
    conn = RawConnection(reader, writer)
    try:
        conn.send(get("/x/../_/slow?seconds=0.5"))
        await asyncio.sleep(0.2)
        closing = asyncio.create_task(server.close())
        status, _, body = await conn.response()
        assert (status, body) == (200, b"finally")
        await closing
    finally:
        conn.close()
