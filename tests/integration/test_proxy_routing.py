"""Proxy routing end to end (SPEC §4): prefixes, methods, strip_prefix, base paths, raw query,
the reserved auth prefix, and every path trick we know against an admin/public route table.

Path tricks are sent as raw request lines over a socket (``raw_request``): aiohttp's client would
normalise ``..``, ``%2e`` or ``//`` before they ever left the test. ``test_raw_request_is_raw``
checks that against an upstream that records ``request.raw_path``.

The helpers here (``raw_request``, ``start_recording_upstream``, ``assert_envelope``) are shared
by the other ``test_proxy_*`` modules.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from aiohttp.typedefs import Handler
from multidict import CIMultiDict

from tests.fixtures.factories import create_user, login
from tests.fixtures.gateway import both_listeners  # noqa: F401  (edge and aiohttp)
from tests.fixtures.upstream import upstream_app, upstream_base

Client = TestClient[Any, Any]
StartGateway = Callable[..., Any]
ENVELOPE_KEYS = {"isSuccess", "statusCode", "data", "errors", "timestamp"}


# --- shared helpers ---------------------------------------------------------------------------


@dataclass
class RawResponse:
    """What ``raw_request`` read back."""

    status: int
    headers: CIMultiDict[str]
    body: bytes

    def json(self) -> Any:
        """The body parsed as JSON."""
        return json.loads(self.body)


def _dechunk(data: bytes) -> bytes:
    out = bytearray()
    while True:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            return bytes(out)
        out += data[:size]
        data = data[size + 2 :]


async def raw_request(
    host: str,
    port: int,
    method: str,
    target: str,
    headers: list[tuple[str, str]] | None = None,
    body: bytes = b"",
    *,
    host_header: str | None = None,
) -> RawResponse:
    """Send one request with ``target`` written byte for byte on the request line."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        lines = [
            f"{method} {target} HTTP/1.1",
            f"Host: {host_header or f'{host}:{port}'}",
            "Connection: close",
        ]
        lines += [f"{name}: {value}" for name, value in headers or []]
        if body:
            lines.append(f"Content-Length: {len(body)}")
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("utf-8") + body)
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
    head, _, rest = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    parsed: CIMultiDict[str] = CIMultiDict()
    for line in header_lines:
        name, _, value = line.partition(":")
        parsed.add(name.strip(), value.strip())
    if "chunked" in parsed.get("Transfer-Encoding", "").lower():
        rest = _dechunk(rest)
    return RawResponse(int(status_line.split()[1]), parsed, rest)


def assert_envelope(body: Any, status: int) -> None:
    """``body`` is the gateway's error envelope for ``status`` (not an upstream's body)."""
    assert isinstance(body, dict), body
    assert set(body) == ENVELOPE_KEYS, body
    assert body["isSuccess"] is False
    assert body["statusCode"] == status
    assert body["data"] is None


@dataclass
class Seen:
    """One request as the recording upstream received it."""

    method: str
    raw_path: str
    headers: list[tuple[str, str]]
    peer: tuple[str, int] | None = None
    """The gateway's end of the upstream connection that carried it."""


@dataclass
class RecordingUpstream:
    """The fixture upstream (echo, slow, sse, ws…) plus a log of every request it received."""

    server: TestServer
    seen: list[Seen] = field(default_factory=list)

    @property
    def base(self) -> str:
        """``http://127.0.0.1:<port>``."""
        return upstream_base(self.server)

    def paths(self) -> list[str]:
        """Raw paths (without the query) of every request received so far."""
        return [s.raw_path.partition("?")[0] for s in self.seen]


async def start_recording_upstream(aiohttp_server: Callable[..., Any]) -> RecordingUpstream:
    """Start ``tests.fixtures.upstream.upstream_app`` with a middleware recording each request."""
    seen: list[Seen] = []

    @web.middleware
    async def record(request: web.Request, handler: Handler) -> web.StreamResponse:
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.raw_headers]
        transport = request.transport
        peer = transport.get_extra_info("peername") if transport is not None else None
        seen.append(Seen(request.method, request.raw_path, headers, peer))
        return await handler(request)

    app = upstream_app()
    app.middlewares.append(record)
    server: TestServer = await aiohttp_server(app)
    return RecordingUpstream(server, seen)


def route(prefix: str, upstream: str, **options: Any) -> dict[str, Any]:
    """A route entry for ``routes:``, ``auth: none`` unless told otherwise."""
    entry: dict[str, Any] = {
        "name": prefix.strip("/").replace("/", "-") or "root",
        "prefix": prefix,
        "upstream": upstream,
        "auth": "none",
    }
    entry.update(options)
    return entry


async def get_echo(client: Client, target: str, **kwargs: Any) -> dict[str, Any]:
    """GET ``target`` through the gateway and return the upstream's echo (asserting 200)."""
    resp = await client.get(target, **kwargs)
    assert resp.status == 200, await resp.text()
    echo: dict[str, Any] = await resp.json()
    return echo


# --- prefixes and rules -----------------------------------------------------------------------


async def test_longest_prefix_wins(gateway_client: StartGateway, upstream: TestServer) -> None:
    base = upstream_base(upstream)
    client = await gateway_client(
        routes=[
            route("/api", f"{base}/short"),
            route("/api/v1/orders", f"{base}/long"),
            route("/api/v1/orders/special", f"{base}/longest"),
        ]
    )
    cases = {
        "/api/v1/orders/7": "/long/api/v1/orders/7",
        "/api/v1/orders": "/long/api/v1/orders",
        "/api/v1/orders/": "/long/api/v1/orders/",
        "/api/v1/orders/special/x": "/longest/api/v1/orders/special/x",
        "/api/v1/orders/specialx": "/long/api/v1/orders/specialx",
        "/api/v1/ordersx": "/short/api/v1/ordersx",
        "/api/v1/other": "/short/api/v1/other",
        "/api": "/short/api",
    }
    for target, expected in cases.items():
        assert (await get_echo(client, target))["path"] == expected, target


async def test_prefix_matches_on_segment_boundaries_only(
    gateway_client: StartGateway, upstream: TestServer
) -> None:
    client = await gateway_client(routes=[route("/api/v1/orders", upstream_base(upstream))])
    assert (await get_echo(client, "/api/v1/orders"))["path"] == "/api/v1/orders"
    assert (await get_echo(client, "/api/v1/orders/"))["path"] == "/api/v1/orders/"
    assert (await get_echo(client, "/api/v1/orders/1/items"))["path"] == "/api/v1/orders/1/items"
    for target in ("/api/v1/ordersx", "/api/v1/order", "/api/v1", "/API/v1/orders", "/", "/x"):
        resp = await client.get(target)
        assert resp.status == 404, target
        assert_envelope(await resp.json(), 404)


async def test_root_route_catches_everything_else(
    gateway_client: StartGateway, upstream: TestServer
) -> None:
    base = upstream_base(upstream)
    client = await gateway_client(
        routes=[route("/", f"{base}/root"), route("/api/v1/orders", f"{base}/orders")]
    )
    assert (await get_echo(client, "/"))["path"] == "/root/"
    assert (await get_echo(client, "/anything/else"))["path"] == "/root/anything/else"
    assert (await get_echo(client, "/api/v1/ordersx"))["path"] == "/root/api/v1/ordersx"
    assert (await get_echo(client, "/api/v1/orders/1"))["path"] == "/orders/api/v1/orders/1"


async def test_methods_filter_answers_405_with_allow(
    gateway_client: StartGateway, upstream: TestServer
) -> None:
    client = await gateway_client(
        routes=[route("/items", upstream_base(upstream), methods=["GET", "POST"])]
    )
    for method in ("GET", "POST"):
        resp = await client.request(method, "/items/1")
        assert resp.status == 200
        assert (await resp.json())["method"] == method
    for method in ("PUT", "PATCH", "DELETE"):
        resp = await client.request(method, "/items/1")
        assert resp.status == 405, method
        assert_envelope(await resp.json(), 405)
        allowed = {m.strip() for m in resp.headers["Allow"].split(",")}
        assert allowed == {"GET", "POST"}


async def test_no_methods_means_every_method(
    gateway_client: StartGateway, upstream: TestServer
) -> None:
    client = await gateway_client(routes=[route("/items", upstream_base(upstream))])
    for method in ("GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"):
        resp = await client.request(method, "/items")
        assert resp.status == 200, method
        assert (await resp.json())["method"] == method
    resp = await client.head("/items")
    assert resp.status == 200


async def test_strip_prefix(gateway_client: StartGateway, upstream: TestServer) -> None:
    base = upstream_base(upstream)
    client = await gateway_client(
        routes=[route("/svc", base, strip_prefix=True), route("/keep", base)]
    )
    echo = await get_echo(client, "/svc/a/b?q=1")
    assert (echo["path"], echo["query"]) == ("/a/b", "q=1")
    assert (await get_echo(client, "/svc"))["path"] == "/"
    assert (await get_echo(client, "/svc/"))["path"] == "/"
    assert (await get_echo(client, "/keep/a"))["path"] == "/keep/a"


async def test_upstream_with_a_base_path(
    gateway_client: StartGateway, upstream: TestServer
) -> None:
    base = upstream_base(upstream)
    client = await gateway_client(
        routes=[
            route("/svc", f"{base}/base/v2/", strip_prefix=True),
            route("/keep", f"{base}/base"),
        ]
    )
    assert (await get_echo(client, "/svc/a/b"))["path"] == "/base/v2/a/b"
    assert (await get_echo(client, "/svc"))["path"] == "/base/v2"
    assert (await get_echo(client, "/svc/"))["path"] == "/base/v2/"
    assert (await get_echo(client, "/keep/x"))["path"] == "/base/keep/x"


async def test_query_string_passes_through_raw(
    gateway_client: StartGateway, upstream: TestServer
) -> None:
    client = await gateway_client(routes=[route("/q", upstream_base(upstream))])
    query = "b=%2f%2F&a=1+2&c=%7e&&d&e=%C3%A9&f=a%20b&g=/?h=x"
    resp = await raw_request(client.host, client.port, "GET", f"/q/x?{query}")
    assert resp.status == 200, resp.body
    echo = resp.json()
    assert echo["path"] == "/q/x"
    assert echo["query"] == query
    # A normalised path keeps its query untouched too.
    resp = await raw_request(client.host, client.port, "GET", f"/q/./y/../x?{query}")
    assert resp.status == 200
    assert (resp.json()["path"], resp.json()["query"]) == ("/q/x", query)
    # An empty query ("?" alone) and no query at all both reach the upstream without one.
    for target in ("/q/x?", "/q/x"):
        resp = await raw_request(client.host, client.port, "GET", target)
        assert resp.status == 200
        assert resp.json()["query"] == ""


@pytest.mark.parametrize(
    "target",
    [
        "/api/v1/auth",
        "/api/v1/auth/",
        "/api/v1/auth/me",
        "/api/v1/auth/nope",
        "/api/v1/auth/login",
        "/api/v1//auth/me",
        "/api/v1/./auth/me",
        "/api/v1/x/../auth/me",
        "/api/v1/%61uth/me",
        "/api/v1/auth/%2e%2e/auth/me",
        "/api//v1/auth/nope",
        "/api/v1/auth%2fme",
    ],
)
async def test_auth_prefix_is_never_proxied(
    gateway_client: StartGateway, aiohttp_server: Callable[..., Any], target: str
) -> None:
    upstream = await start_recording_upstream(aiohttp_server)
    client = await gateway_client(routes=[route("/", upstream.base)])
    for method in ("GET", "POST", "DELETE"):
        resp = await raw_request(client.host, client.port, method, target)
        assert 400 <= resp.status < 500, (method, resp.status)
        assert_envelope(resp.json(), resp.status)
    assert upstream.seen == []
    # The boundary is a segment: /api/v1/authx is an ordinary path for the root route.
    assert (await get_echo(client, "/api/v1/authx"))["path"] == "/api/v1/authx"


async def test_upstream_connections_are_pooled_and_kept_alive(
    gateway_client: StartGateway, aiohttp_server: Callable[..., Any]
) -> None:
    upstream = await start_recording_upstream(aiohttp_server)
    client = await gateway_client(routes=[route("/", upstream.base)])
    for i in range(5):
        # A fresh client connection each time: the upstream hop is pooled independently.
        resp = await raw_request(client.host, client.port, "GET", f"/n/{i}")
        assert resp.status == 200
    assert len(upstream.seen) == 5
    assert len({s.peer for s in upstream.seen}) == 1, [s.peer for s in upstream.seen]
    assert all(
        "close" not in v.lower()
        for s in upstream.seen
        for k, v in s.headers
        if k.lower() == "connection"
    )


# --- path tricks against /admin (admin: true) and /public (auth: none) ------------------------

ADMIN = "/admin"

# target → the canonical path the gateway must treat it as, or None for "400 envelope".
PATH_TRICKS: dict[str, str | None] = {
    "/admin": "/admin",
    "/admin/": "/admin/",
    "/public/../admin": "/admin",
    "/public/%2e%2e/admin": "/admin",
    "/public/%2E%2E/admin": "/admin",
    "/public/.%2e/admin": "/admin",
    "/public/%2e./admin": "/admin",
    "/public/./../admin": "/admin",
    "/public//..//admin": "/admin",
    "/public/x/../../admin": "/admin",
    "//admin": "/admin",
    "///admin": "/admin",
    "/./admin": "/admin",
    "/%61dmin": "/admin",
    "/adm%69n/x": "/admin/x",
    "/%2e/admin": "/admin",
    "/public%2f..%2fadmin": None,
    "/public%2F..%2Fadmin": None,
    "/public/..%2fadmin": None,
    "/public/%2e%2e%2fadmin": None,
    "/public/..%5cadmin": None,
    "/public/%2e%2e%5cadmin": None,
    "/public\\..\\admin": None,
    "/admin;x=1": None,
    "/public/..;/admin": None,
    "/public;/../admin": None,
    "/public/%3b/../admin": None,
    "/public/%252e%252e/admin": None,
    "/public/%25%32%65%25%32%65/admin": None,
    "/%2561dmin": None,
    "/public/%00": None,
    "/public/..%00/admin": None,
    "/admin%00": None,
    "/public/%c0%ae%c0%ae/admin": None,
    "/public/%e0%80%ae%e0%80%ae/admin": None,
    "/public/..%c0%afadmin": None,
    "/public/%ef%bc%8e%ef%bc%8e/admin": None,
    "/%ef%bd%81dmin": None,
    "/public/%u002e%u002e/admin": None,
    "/public/%zz/../admin": None,
    "/public/../../admin": None,
    "/admin#fragment": None,
    "/public/%09/../admin": None,
}


def _reaches_admin(raw_path: str) -> bool:
    """Would an upstream that decodes and resolves the path itself serve /admin for it?"""
    decoded = unquote(unquote(raw_path.partition("?")[0])).replace("\\", "/")
    segments: list[str] = []
    for segment in decoded.split(";")[0].split("/"):
        if segment in ("", "."):
            continue
        if segment == "..":
            if segments:
                segments.pop()
            continue
        segments.append(segment)
    return bool(segments) and segments[0].lower() == "admin"


@pytest.fixture
async def admin_public(
    gateway_client: StartGateway, aiohttp_server: Callable[..., Any]
) -> tuple[Client, RecordingUpstream, str, str]:
    """Gateway with /admin (admin only) and /public (auth: none); admin and user tokens."""
    upstream = await start_recording_upstream(aiohttp_server)
    client = await gateway_client(
        routes=[
            route("/admin", upstream.base, auth="required", admin=True),
            route("/public", upstream.base, auth="none"),
        ]
    )
    await create_user(client, email="admin@example.com", username="admin", is_admin=True)
    await create_user(client, email="user@example.com", username="user", is_admin=False)
    admin_token = (await login(client, "admin@example.com"))["access_token"]
    user_token = (await login(client, "user@example.com"))["access_token"]
    return client, upstream, admin_token, user_token


@pytest.mark.parametrize("target", list(PATH_TRICKS))
async def test_path_trick_never_reaches_admin_unauthenticated(
    admin_public: tuple[Client, RecordingUpstream, str, str], target: str
) -> None:
    client, upstream, admin_token, user_token = admin_public
    expected = PATH_TRICKS[target]
    host, port = client.host, client.port

    anonymous = await raw_request(host, port, "GET", target)
    as_user = await raw_request(
        host, port, "GET", target, [("Authorization", f"Bearer {user_token}")]
    )
    as_admin = await raw_request(
        host, port, "GET", target, [("Authorization", f"Bearer {admin_token}")]
    )
    if expected is None:
        for resp in (anonymous, as_user, as_admin):
            assert resp.status == 400, (target, resp.status, resp.body)
            assert_envelope(resp.json(), 400)
        assert upstream.seen == []
        return

    assert expected.startswith(ADMIN)
    assert anonymous.status == 401, (target, anonymous.status, anonymous.body)
    assert_envelope(anonymous.json(), 401)
    assert as_user.status == 403, (target, as_user.status, as_user.body)
    assert_envelope(as_user.json(), 403)
    assert as_admin.status == 200, (target, as_admin.status, as_admin.body)
    echo = as_admin.json()
    # The upstream receives exactly the path that was matched, and only the admin's request.
    assert echo["path"] == expected
    assert echo["headers"]["x-is-admin"] == ["true"]
    assert upstream.paths() == [expected]


async def test_path_tricks_that_stay_public_stay_public(
    admin_public: tuple[Client, RecordingUpstream, str, str],
) -> None:
    """Tricks that normalise below /public are served as /public/… and nothing else."""
    client, upstream, _, _ = admin_public
    cases = {
        "/public/%23/../admin": "/public/admin",
        "/public/%3f/../admin": "/public/admin",
        "/public/x/..": "/public/",
        "/public/...": "/public/...",
        "/public/%41": "/public/A",
        "/public/%3F": "/public/%3F",
        "/public/%3f": "/public/%3F",
        "/public/%C3%A9": "/public/%C3%A9",
    }
    for target, expected in cases.items():
        resp = await raw_request(client.host, client.port, "GET", target)
        assert resp.status == 200, (target, resp.status, resp.body)
        echo = resp.json()
        assert echo["path"] == expected, target
        assert "x-user-id" not in echo["headers"]
    for seen in upstream.seen:
        assert not _reaches_admin(seen.raw_path), seen.raw_path


async def test_paths_outside_every_route_are_404(
    admin_public: tuple[Client, RecordingUpstream, str, str],
) -> None:
    client, upstream, admin_token, _ = admin_public
    auth = [("Authorization", f"Bearer {admin_token}")]
    for target in ("/ADMIN", "/Admin", "/admin%20", "/adminx", "/public/../x", "/admin/.."):
        resp = await raw_request(client.host, client.port, "GET", target, auth)
        assert resp.status == 404, (target, resp.status)
        assert_envelope(resp.json(), 404)
    assert upstream.seen == []


async def test_non_origin_form_targets_cannot_pick_a_route(
    admin_public: tuple[Client, RecordingUpstream, str, str],
) -> None:
    """``GET http://host/public/../admin HTTP/1.1``: refused, or matched by its normalised path;
    ``OPTIONS *`` and ``CONNECT host:port`` are never proxied."""
    client, upstream, _, _ = admin_public
    for target in (
        f"http://{client.host}:{client.port}/public/../admin",
        f"http://{client.host}:{client.port}/admin",
    ):
        resp = await raw_request(client.host, client.port, "GET", target)
        assert resp.status in (400, 401), (target, resp.status, resp.body)
        assert_envelope(resp.json(), resp.status)
    # Asterisk-form and authority-form targets are not paths at all.
    for method, target in (("OPTIONS", "*"), ("CONNECT", f"127.0.0.1:{upstream.server.port}")):
        resp = await raw_request(client.host, client.port, method, target)
        assert resp.status in (400, 404), (target, resp.status, resp.body)
        assert_envelope(resp.json(), resp.status)
    assert upstream.seen == []


async def test_raw_request_is_raw(aiohttp_server: Callable[..., Any]) -> None:
    """The helper really puts each trick on the wire unchanged (straight to an upstream)."""
    upstream = await start_recording_upstream(aiohttp_server)
    host, port = "127.0.0.1", upstream.server.port
    assert port is not None
    sent = [t for t in PATH_TRICKS if "#" not in t and "\\" not in t]
    for target in sent:
        resp = await raw_request(host, port, "GET", target)
        assert resp.status < 500, (target, resp.status)
    assert upstream.paths() == sent
