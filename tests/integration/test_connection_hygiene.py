"""What a connection does after requests the gateway does not switch, read or speak.

Found by a black-box probe of `gateway serve`: an upgrade request answered with anything but a
101 left its connection open past every timeout (aiohttp stops reading HTTP on it), a head
ended by bare line feeds got no answer at all, an unknown ``Expect`` got aiohttp's text page
(echoing the header, naming aiohttp's version), ``HTTP/2.0`` and version-less request lines
were proxied, ``%0a`` in a path was a 404 instead of the path rules' 400, and any ``Host``
value (``evil.com/admin``, ``a b``) was relayed as ``X-Forwarded-Host``. Each request is
written byte for byte on a raw connection, through the edge as ``gateway serve`` listens.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

from aiohttp.test_utils import TestClient

from tests.fixtures.factories import create_user, login
from tests.integration.test_proxy_routing import (
    RecordingUpstream,
    assert_envelope,
    route,
    start_recording_upstream,
)

Client = TestClient[Any, Any]
StartGateway = Callable[..., Any]

WS_HANDSHAKE = (
    b"Upgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
)
H2C = (
    b"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n"
    b"Connection: Upgrade, HTTP2-Settings\r\n"
)


async def exchange(client: Client, data: bytes, wait: float = 5.0) -> tuple[bytes, bool]:
    """Write ``data``; everything the gateway sends back within ``wait`` seconds, and whether
    it closed the connection by then."""
    reader, writer = await asyncio.open_connection(client.host, client.port)
    writer.write(data)
    received = bytearray()
    closed = False
    try:
        async with asyncio.timeout(wait):
            while chunk := await reader.read(65536):
                received += chunk
            closed = True
    except TimeoutError:
        pass
    finally:
        writer.close()
    return bytes(received), closed


async def first_answer(client: Client, data: bytes) -> bytes:
    """Write ``data``; the first final answer that comes back (head and Content-Length body;
    a ``100 Continue`` before it is skipped)."""
    reader, writer = await asyncio.open_connection(client.host, client.port)
    try:
        writer.write(data)
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        if head == b"HTTP/1.1 100 Continue\r\n\r\n":
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        length = int(parse(head)[1].get("content-length", "0"))
        return head + await asyncio.wait_for(reader.readexactly(length), 5)
    finally:
        writer.close()


def parse(data: bytes) -> tuple[str, dict[str, str], bytes]:
    """The status line, the header fields (lower-case names) and the body of one answer."""
    head, _, body = data.partition(b"\r\n\r\n")
    status, *lines = head.decode("latin-1").split("\r\n")
    fields = {}
    for line in lines:
        name, _, value = line.partition(":")
        fields[name.strip().lower()] = value.strip()
    return status, fields, body


async def start(
    gateway_client: StartGateway, aiohttp_server: Callable[..., Any]
) -> tuple[Client, RecordingUpstream]:
    upstream = await start_recording_upstream(aiohttp_server)
    client = await gateway_client(
        routes=[
            route("/admin", upstream.base, auth="required", admin=True),
            route("/public", upstream.base),
        ]
    )
    return client, upstream


async def test_a_refused_websocket_handshake_ends_the_connection(
    gateway_client: StartGateway, aiohttp_server: Callable[..., Any]
) -> None:
    client, upstream = await start(gateway_client, aiohttp_server)
    pipelined = b"GET /public/second HTTP/1.1\r\nHost: x\r\n\r\n"
    data, closed = await exchange(
        client, b"GET /admin/ws HTTP/1.1\r\nHost: x\r\n" + WS_HANDSHAKE + b"\r\n" + pipelined
    )
    status, fields, body = parse(data)
    assert status == "HTTP/1.1 401 Unauthorized"
    assert fields["connection"] == "close"
    assert_envelope(json.loads(body), 401)
    assert closed  # at once, not after a keep-alive timeout (it used to stay open for good)
    assert data.count(b"HTTP/1.1 ") == 1
    assert upstream.seen == []


async def test_a_non_admin_websocket_handshake_ends_the_connection(
    gateway_client: StartGateway, aiohttp_server: Callable[..., Any]
) -> None:
    client, upstream = await start(gateway_client, aiohttp_server)
    await create_user(client)
    token = (await login(client))["access_token"]
    data, closed = await exchange(
        client,
        b"GET /admin/ws HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
        + token.encode()
        + b"\r\n"
        + WS_HANDSHAKE
        + b"\r\n",
    )
    status, fields, _ = parse(data)
    assert status == "HTTP/1.1 403 Forbidden"
    assert fields["connection"] == "close"
    assert closed
    assert upstream.seen == []


async def test_an_upgrade_the_upstream_does_not_switch_ends_the_connection(
    gateway_client: StartGateway, aiohttp_server: Callable[..., Any]
) -> None:
    client, upstream = await start(gateway_client, aiohttp_server)
    for extra in (H2C, b"Upgrade: foo\r\nConnection: Upgrade\r\n"):
        data, closed = await exchange(
            client, b"GET /public/first HTTP/1.1\r\nHost: x\r\n" + extra + b"\r\n"
        )
        status, fields, body = parse(data)
        assert status == "HTTP/1.1 200 OK"  # the upstream's answer, not switched
        assert fields["connection"] == "close"
        assert json.loads(body)["path"] == "/public/first"
        assert closed
    assert upstream.paths() == ["/public/first", "/public/first"]


async def test_a_head_ended_by_bare_line_feeds_is_a_400_at_once(
    gateway_client: StartGateway, aiohttp_server: Callable[..., Any]
) -> None:
    client, upstream = await start(gateway_client, aiohttp_server)
    for head in (
        b"GET /public/x HTTP/1.1\nHost: x\n\n",
        b"GET /admin/x HTTP/1.1\nHost: x\nConnection: keep-alive\n\n",
        b"GET /public/x HTTP/1.1\rHost: x\r\r",
    ):
        data, closed = await exchange(client, head)
        status, fields, body = parse(data)
        assert status == "HTTP/1.1 400 Bad Request", head
        assert_envelope(json.loads(body), 400)
        assert fields["server"] == "gateway"
        assert closed
    assert upstream.seen == []


async def test_an_unknown_expectation_is_a_417_envelope_that_echoes_nothing(
    gateway_client: StartGateway, aiohttp_server: Callable[..., Any]
) -> None:
    client, upstream = await start(gateway_client, aiohttp_server)
    for target in (b"/public/upload", b"/api/v1/auth/login"):
        data, closed = await exchange(
            client,
            b"POST "
            + target
            + b" HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n"
            + b"Expect: <script>alert(1)</script>\r\n\r\n{}",
        )
        status, fields, body = parse(data)
        assert status == "HTTP/1.1 417 Expectation Failed"
        envelope = json.loads(body)
        assert_envelope(envelope, 417)
        assert envelope["errors"][1] == "only the 100-continue expectation is supported"
        assert b"script" not in data
        assert fields["server"] == "gateway"
        assert fields["x-request-id"]
        assert fields["connection"] == "close"
        assert closed
    assert upstream.seen == []


async def test_100_continue_still_works(
    gateway_client: StartGateway, aiohttp_server: Callable[..., Any]
) -> None:
    client, upstream = await start(gateway_client, aiohttp_server)
    reader, writer = await asyncio.open_connection(client.host, client.port)
    try:
        writer.write(
            b"POST /public/upload HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
            b"Expect: 100-continue\r\nConnection: close\r\n\r\n"
        )
        interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert interim.startswith(b"HTTP/1.1 100 Continue")
        writer.write(b"hello")
        data = await asyncio.wait_for(reader.read(), 5)
    finally:
        writer.close()
    status, _, body = parse(data)
    assert status == "HTTP/1.1 200 OK"
    assert json.loads(body)["body_length"] == 5
    assert upstream.paths() == ["/public/upload"]


async def test_100_continue_waits_until_the_request_is_admitted(
    gateway_client: StartGateway, aiohttp_server: Callable[..., Any]
) -> None:
    """A request refused before its body is asked for gets its final answer at once — no
    ``100 Continue`` first (the client would upload a body only to be refused) — and its
    connection ends: the client never sends that body, so what follows is not it."""
    upstream = await start_recording_upstream(aiohttp_server)
    client = await gateway_client(
        server={"max_body_size": 100},
        routes=[
            route("/admin", upstream.base, auth="required", admin=True),
            route("/public", upstream.base),
        ],
    )
    await create_user(client, email="root@example.com", is_admin=True)
    admin = (await login(client, "root@example.com"))["access_token"].encode()
    expecting = b"Expect: 100-continue\r\n"
    refused = {
        b"POST /admin/up HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n": 401,
        b"POST /admin/up HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
        b"Authorization: Bearer a.b.c\r\n": 401,
        b"POST /nowhere HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n": 404,
        b"POST /public/big HTTP/1.1\r\nHost: x\r\nContent-Length: 101\r\n": 413,
        b"POST /admin/up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
        b"Authorization: x\r\nAuthorization: y\r\n": 400,
    }
    for head, code in refused.items():
        data = await first_answer(client, head + expecting + b"\r\n")
        status, fields, body = parse(data)
        assert status.startswith(f"HTTP/1.1 {code} "), (head, data)  # not 100 Continue
        assert_envelope(json.loads(body), code)
        assert fields["connection"] == "close"
    assert upstream.seen == []
    # Admitted (an admin's token on the admin route): 100 Continue, then the answer.
    reader, writer = await asyncio.open_connection(client.host, client.port)
    try:
        writer.write(
            b"PUT /admin/up HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nAuthorization: Bearer "
            + admin
            + b"\r\n"
            + expecting
            + b"Connection: close\r\n\r\n"
        )
        interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        writer.write(b"hello")
        data = await asyncio.wait_for(reader.read(), 5)
    finally:
        writer.close()
    status, _, body = parse(data)
    assert status == "HTTP/1.1 200 OK"
    assert json.loads(body)["body_length"] == 5
    assert upstream.paths() == ["/admin/up"]


async def test_http_versions_other_than_1_0_and_1_1_are_refused(
    gateway_client: StartGateway, aiohttp_server: Callable[..., Any]
) -> None:
    client, upstream = await start(gateway_client, aiohttp_server)
    for head, version in (
        (b"GET /public/x\r\n\r\n", "0.9"),
        (b"GET /public/x HTTP/2.0\r\nHost: x\r\n\r\n", "2.0"),
        (b"GET /admin/x HTTP/2.0\r\nHost: x\r\n\r\n", "2.0"),
    ):
        data, closed = await exchange(client, head)
        status, fields, body = parse(data)
        assert status == "HTTP/1.1 400 Bad Request", head
        envelope = json.loads(body)
        assert_envelope(envelope, 400)
        assert envelope["errors"][1] == f"HTTP version {version} is not supported (HTTP/1.1 is)"
        assert fields["connection"] == "close"
        assert closed
    assert upstream.seen == []
    # HTTP/1.0 is still served (answered in 1.0, as aiohttp answers it).
    data, _ = await exchange(client, b"GET /public/old HTTP/1.0\r\nHost: x\r\n\r\n")
    assert parse(data)[0] == "HTTP/1.0 200 OK"
    assert upstream.paths() == ["/public/old"]


async def test_an_encoded_newline_in_the_path_is_a_400(
    gateway_client: StartGateway, aiohttp_server: Callable[..., Any]
) -> None:
    client, upstream = await start(gateway_client, aiohttp_server)
    for target in (b"/public/%0a", b"/admin%0a", b"/public/%0d%0aX-User-Id:%201", b"/x/%0A/y"):
        data, _ = await exchange(
            client, b"GET " + target + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        status, _, body = parse(data)
        assert status == "HTTP/1.1 400 Bad Request", target
        envelope = json.loads(body)
        assert_envelope(envelope, 400)
        assert envelope["errors"][1] == "path: control character in path"
    assert upstream.seen == []


async def test_an_invalid_host_is_a_400_and_never_relayed(
    gateway_client: StartGateway, aiohttp_server: Callable[..., Any]
) -> None:
    client, upstream = await start(gateway_client, aiohttp_server)
    for host in (b"evil.com/admin", b"a b", b'x"<>', b"x,y", b"x:99999", b"", b"x:", b"[::1"):
        data, _ = await exchange(
            client, b"GET /public/x HTTP/1.1\r\nHost: " + host + b"\r\nConnection: close\r\n\r\n"
        )
        status, _, body = parse(data)
        assert status == "HTTP/1.1 400 Bad Request", host
        envelope = json.loads(body)
        assert_envelope(envelope, 400)
        assert envelope["errors"][1] == "Host: not a valid host[:port]"
    assert upstream.seen == []
    for host in (b"gw.example:8443", b"127.0.0.1", b"[::1]:8080", b"xn--bcher-kva.example"):
        data, _ = await exchange(
            client, b"GET /public/y HTTP/1.1\r\nHost: " + host + b"\r\nConnection: close\r\n\r\n"
        )
        assert parse(data)[0] == "HTTP/1.1 200 OK", host
        assert dict(upstream.seen[-1].headers)["X-Forwarded-Host"] == host.decode()


async def test_a_target_that_is_not_a_path_is_a_400(
    gateway_client: StartGateway, aiohttp_server: Callable[..., Any]
) -> None:
    """Absolute form (``GET http://host/admin``), ``*`` and relative targets are refused,
    whatever route the path inside them would match; nothing reaches an upstream."""
    client, upstream = await start(gateway_client, aiohttp_server)
    for target in (b"http://x/public/a", b"HTTP://evil/admin/x", b"https://x/public?q=1", b"*"):
        for method in (b"GET", b"OPTIONS"):
            line = method + b" " + target + b" HTTP/1.1\r\n"
            data = await first_answer(client, line + b"Host: x\r\nConnection: close\r\n\r\n")
            status, _, body = parse(data)
            # (``OPTIONS *`` is the one legal use of ``*``: no resource, a 404.)
            code = 404 if (method, target) == (b"OPTIONS", b"*") else 400
            assert status.startswith(f"HTTP/1.1 {code} "), (method, target)
            assert_envelope(json.loads(body), code)
    assert upstream.seen == []


async def test_connection_cannot_strip_content_length_to_smuggle_a_request(
    gateway_client: StartGateway, aiohttp_server: Callable[..., Any]
) -> None:
    """``Connection: content-length`` used to drop the client's ``Content-Length`` on its way
    upstream while the body still followed: the upstream read that body as a second request —
    to the admin route, with forged identity headers, never checked (and its answer went to
    the next client of that pooled connection). ``Content-Length`` now always goes with it."""
    client, upstream = await start(gateway_client, aiohttp_server)
    smuggled = (
        b"GET /admin/secret HTTP/1.1\r\nHost: x\r\nX-User-Id: 2\r\nX-Is-Admin: true\r\n"
        b"Content-Length: 0\r\n\r\n"
    )
    options = (b"content-length", b"close, Content-Length", b"keep-alive, CONTENT-LENGTH")
    # /public/p goes through the edge; /public/./p and an Expect through aiohttp's side.
    targets = (b"/public/p", b"/public/./p")
    for option in options:
        for target in targets:
            for extra in (b"", b"Expect: 100-continue\r\n"):
                upstream.seen.clear()
                head = (
                    b"POST "
                    + target
                    + b" HTTP/1.1\r\nHost: x\r\nConnection: "
                    + option
                    + b"\r\n"
                    + extra
                    + b"Content-Length: %d\r\n\r\n" % len(smuggled)
                )
                data = await first_answer(client, head + smuggled)
                status, _, body = parse(data)
                assert status == "HTTP/1.1 200 OK", (option, target, extra, data)
                assert json.loads(body)["body_length"] == len(smuggled)
                await asyncio.sleep(0.05)  # (a smuggled request would be in by now)
                assert upstream.paths() == ["/public/p"], (option, target, extra)
                (seen,) = upstream.seen
                assert ("Content-Length", str(len(smuggled))) in seen.headers


async def test_a_transfer_coding_other_than_chunked_is_a_501(
    gateway_client: StartGateway, aiohttp_server: Callable[..., Any]
) -> None:
    """``gzip, chunked`` used to reach the upstream as plain ``chunked``, the gzip-coded
    bytes passed on as if they were the body."""
    client, upstream = await start(gateway_client, aiohttp_server)
    body = b"5\r\nhello\r\n0\r\n\r\n"
    for coding in (b"gzip, chunked", b"deflate,chunked", b"x-custom, chunked"):
        data = await first_answer(
            client,
            b"POST /public/te HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: "
            + coding
            + b"\r\n\r\n"
            + body,
        )
        status, _, answer = parse(data)
        assert status == "HTTP/1.1 501 Not Implemented", coding
        envelope = json.loads(answer)
        assert_envelope(envelope, 501)
        assert envelope["errors"][1] == "Transfer-Encoding: only chunked is supported"
    assert upstream.seen == []
    for coding in (b"chunked", b"Chunked"):
        data = await first_answer(
            client,
            b"POST /public/te HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: "
            + coding
            + b"\r\n\r\n"
            + body,
        )
        status, _, answer = parse(data)
        assert status == "HTTP/1.1 200 OK", coding
        assert json.loads(answer)["body_length"] == 5


async def test_a_token_that_is_not_ascii_is_a_401_not_a_500(
    gateway_client: StartGateway, aiohttp_server: Callable[..., Any]
) -> None:
    """Bytes that are not UTF-8 in ``Authorization`` (decoded to lone surrogates) made pyjwt
    raise a ``UnicodeEncodeError``: a 500 with a traceback in the log."""
    client, upstream = await start(gateway_client, aiohttp_server)
    for token in (b"\xff", b"\x80abc", b"\xed\xa0\x80", "é.é.é".encode()):
        for target in (b"/admin/x", b"/admin/./x", b"/api/v1/auth/me"):
            data = await first_answer(
                client,
                b"GET "
                + target
                + b" HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                + token
                + b"\r\nConnection: close\r\n\r\n",
            )
            status, _, answer = parse(data)
            assert status == "HTTP/1.1 401 Unauthorized", (token, target)
            envelope = json.loads(answer)
            assert_envelope(envelope, 401)
            assert envelope["errors"][1] == "token is invalid"
    # A lone surrogate by another road: a JSON body (refused as a body, before any token).
    resp = await client.post(
        "/api/v1/auth/refresh",
        data=b'{"refresh_token": "\\ud800.x.y"}',
        headers={"Content-Type": "application/json"},
    )
    assert resp.status == 400
    assert_envelope(await resp.json(), 400)
    assert upstream.seen == []


async def test_a_broken_websocket_handshake_never_reaches_the_upstream(
    gateway_client: StartGateway, aiohttp_server: Callable[..., Any]
) -> None:
    """A bad ``Sec-WebSocket-Version`` or ``-Key`` used to be found only after the upstream
    WebSocket was open (the client then got a 400 without a word of why)."""
    client, upstream = await start(gateway_client, aiohttp_server)
    key = b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    upgrade = b"Upgrade: websocket\r\nConnection: Upgrade\r\n"
    cases = {
        upgrade + key + b"Sec-WebSocket-Version: 99\r\n": "Sec-WebSocket-Version: 13 is required",
        upgrade + key: "Sec-WebSocket-Version: 13 is required",
        upgrade + b"Sec-WebSocket-Version: 13\r\n": "Sec-WebSocket-Key: not the base64 of 16 bytes",
        upgrade + b"Sec-WebSocket-Key: c2hvcnQ=\r\nSec-WebSocket-Version: 13\r\n": (
            "Sec-WebSocket-Key: not the base64 of 16 bytes"
        ),
        upgrade + b"Sec-WebSocket-Key: \xff\xfe\r\nSec-WebSocket-Version: 13\r\n": (
            "Sec-WebSocket-Key: not the base64 of 16 bytes"
        ),
        upgrade + key + key + b"Sec-WebSocket-Version: 13\r\n": (
            "Sec-WebSocket-Key: not the base64 of 16 bytes"
        ),
    }
    for fields, problem in cases.items():
        data = await first_answer(
            client, b"GET /public/ws HTTP/1.1\r\nHost: x\r\n" + fields + b"\r\n"
        )
        status, headers, body = parse(data)
        assert status == "HTTP/1.1 400 Bad Request", fields
        envelope = json.loads(body)
        assert_envelope(envelope, 400)
        assert envelope["errors"][1] == problem
        assert headers["connection"] == "close"
    assert upstream.seen == []


async def test_an_expectation_that_is_not_utf8_is_a_417_not_a_500(
    gateway_client: StartGateway, aiohttp_server: Callable[..., Any]
) -> None:
    """aiohttp's own expect handler builds its 417 text page from the value: one that is not
    UTF-8 failed to encode, a 500 with a traceback in the log — on every route of the gateway's
    own (and under ``/api/v1/auth``, on paths that do not exist)."""
    client, upstream = await start(gateway_client, aiohttp_server)
    for target in (b"/healthz", b"/api/v1/auth/login", b"/api/v1/auth/nowhere", b"/public/x"):
        for value in (b"\xff", b"100-continue\xff", b"\xed\xa0\x80"):
            data = await first_answer(
                client,
                b"POST "
                + target
                + b" HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nExpect: "
                + value
                + b"\r\n\r\n{}",
            )
            status, fields, body = parse(data)
            assert status == "HTTP/1.1 417 Expectation Failed", (target, value)
            envelope = json.loads(body)
            assert_envelope(envelope, 417)
            assert envelope["errors"][1] == "only the 100-continue expectation is supported"
            assert fields["connection"] == "close"
    assert upstream.seen == []
