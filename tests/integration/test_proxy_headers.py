"""What crosses the proxy (SPEC §4): auth modes, identity headers, forwarding headers,
request ids, hop-by-hop headers, Host, and upstream answers passed through untouched."""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
import time
from collections.abc import Callable
from typing import Any

import jwt
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from tests.fixtures.factories import create_user, login
from tests.fixtures.gateway import (
    TEST_SECRET,
    both_listeners,  # noqa: F401  (edge and aiohttp)
)
from tests.fixtures.upstream import upstream_base
from tests.integration.test_proxy_routing import (
    assert_envelope,
    raw_request,
    route,
    start_recording_upstream,
)

Client = TestClient[Any, Any]
StartGateway = Callable[..., Any]

FORGED = [
    ("X-User-Id", "1"),
    ("x-user-id", "2"),
    ("X-USER-ID", "3"),
    ("X_User_Id", "4"),
    ("x_user_id", "5"),
    ("X-User_Id", "6"),
    ("X-Is-Admin", "true"),
    ("x-is-admin", "true"),
    ("X-IS-ADMIN", "true"),
    ("X_Is_Admin", "true"),
    ("x_is_admin", "true"),
    ("X_IS-admin", "true"),
]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def identity(echo: dict[str, Any]) -> dict[str, list[str]]:
    """Every header the upstream got whose name reads as X-User-Id / X-Is-Admin, canonicalised."""
    out: dict[str, list[str]] = {}
    for name, values in echo["headers"].items():
        canonical = name.lower().replace("_", "-")
        if canonical in ("x-user-id", "x-is-admin"):
            out.setdefault(canonical, []).extend(values)
    return out


def tampered(token: str) -> str:
    head, payload, signature = token.split(".")
    flipped = ("A" if signature[0] != "A" else "B") + signature[1:]
    return f"{head}.{payload}.{flipped}"


async def _gateway(gateway_client: StartGateway, base: str, **extra: Any) -> Client:
    client: Client = await gateway_client(
        routes=[
            route("/required", base, auth="required"),
            route("/optional", base, auth="optional"),
            route("/none", base, auth="none"),
            route("/admin", base, auth="required", admin=True),
        ],
        **extra,
    )
    return client


async def _users(client: Client) -> tuple[int, str, int, str]:
    """An ordinary user and an admin: (user id, user token, admin id, admin token)."""
    user = await create_user(client, email="user@example.com", username="user")
    admin = await create_user(client, email="admin@example.com", username="admin", is_admin=True)
    user_token = (await login(client, "user@example.com"))["access_token"]
    admin_token = (await login(client, "admin@example.com"))["access_token"]
    return user.id, user_token, admin.id, admin_token


# --- auth modes -------------------------------------------------------------------------------


async def test_auth_required(gateway_client: StartGateway, upstream: TestServer) -> None:
    client = await _gateway(gateway_client, upstream_base(upstream))
    user_id, token, _, _ = await _users(client)
    for headers in (
        {},
        {"Authorization": "Bearer"},
        {"Authorization": "Bearer not-a-jwt"},
        bearer(tampered(token)),
        {"Authorization": f"Basic {token}"},
    ):
        resp = await client.get("/required/x", headers=headers)
        assert resp.status == 401, headers
        assert_envelope(await resp.json(), 401)
        assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    resp = await client.get("/required/x", headers=bearer(token))
    assert resp.status == 200
    assert identity(await resp.json()) == {"x-user-id": [str(user_id)], "x-is-admin": ["false"]}


async def test_auth_optional(gateway_client: StartGateway, upstream: TestServer) -> None:
    client = await _gateway(gateway_client, upstream_base(upstream))
    user_id, token, _, _ = await _users(client)
    resp = await client.get("/optional/x")
    assert resp.status == 200
    assert identity(await resp.json()) == {}
    resp = await client.get("/optional/x", headers=bearer(token))
    assert resp.status == 200
    assert identity(await resp.json()) == {"x-user-id": [str(user_id)], "x-is-admin": ["false"]}
    for bad in ("not-a-jwt", tampered(token)):
        resp = await client.get("/optional/x", headers=bearer(bad))
        assert resp.status == 401
        assert_envelope(await resp.json(), 401)
    # An announced but empty bearer token is a bad token, not an anonymous request.
    for empty in ("Bearer", "Bearer ", "bearer   "):
        resp = await client.get("/optional/x", headers={"Authorization": empty})
        assert resp.status == 401, empty
        assert_envelope(await resp.json(), 401)
    # A tab ends the scheme as a space does: a bad token after it is a 401, not anonymous.
    for bad in ("Bearer\tnot-a-jwt", f"Bearer\t{tampered(token)}", "\tbearer\t\t"):
        resp = await client.get("/optional/x", headers={"Authorization": bad})
        assert resp.status == 401, bad
        assert_envelope(await resp.json(), 401)
    resp = await client.get("/optional/x", headers={"Authorization": f"Bearer\t{token}"})
    assert resp.status == 200
    assert identity(await resp.json()) == {"x-user-id": [str(user_id)], "x-is-admin": ["false"]}
    # Another scheme is not a bearer token: the request is anonymous (the upstream may use it).
    for other in ("Basic dTpw", "Bearerish x.y.z"):
        resp = await client.get("/optional/x", headers={"Authorization": other})
        assert resp.status == 200, other
        assert identity(await resp.json()) == {}


async def test_two_authorization_headers_are_a_400(
    gateway_client: StartGateway, upstream: TestServer
) -> None:
    """A singleton field sent twice: the gateway would check one token, the upstream might read
    the other (a user's token first, an admin's second). Refused where the gateway reads it."""
    client = await _gateway(gateway_client, upstream_base(upstream))
    _, token, _, admin_token = await _users(client)
    twice = [("Authorization", f"Bearer {token}"), ("Authorization", f"Bearer {admin_token}")]
    for path in ("/required/x", "/optional/x", "/admin/x"):
        resp = await client.get(path, headers=twice)
        assert resp.status == 400, path
        body = await resp.json()
        assert_envelope(body, 400)
        assert "more than one Authorization header" in body["errors"], body
    # auth: none reads no token: both pass, untouched, and no identity is injected.
    resp = await client.get("/none/x", headers=twice)
    assert resp.status == 200
    echo = await resp.json()
    assert echo["headers"]["authorization"] == [f"Bearer {token}", f"Bearer {admin_token}"]
    assert identity(echo) == {}


async def test_auth_none_ignores_tokens(gateway_client: StartGateway, upstream: TestServer) -> None:
    client = await _gateway(gateway_client, upstream_base(upstream))
    _, token, _, admin_token = await _users(client)
    for headers in ({}, bearer(token), bearer(admin_token), bearer("not-a-jwt")):
        resp = await client.get("/none/x", headers=headers)
        assert resp.status == 200, headers
        assert identity(await resp.json()) == {}


async def test_admin_route(gateway_client: StartGateway, upstream: TestServer) -> None:
    client = await _gateway(gateway_client, upstream_base(upstream))
    _, token, admin_id, admin_token = await _users(client)
    resp = await client.get("/admin/x")
    assert resp.status == 401
    assert_envelope(await resp.json(), 401)
    resp = await client.get("/admin/x", headers=bearer(token))
    assert resp.status == 403
    assert_envelope(await resp.json(), 403)
    resp = await client.get("/admin/x", headers=bearer(admin_token))
    assert resp.status == 200
    assert identity(await resp.json()) == {"x-user-id": [str(admin_id)], "x-is-admin": ["true"]}


async def test_token_revoked_by_logout_is_refused(
    gateway_client: StartGateway, upstream: TestServer
) -> None:
    client = await _gateway(gateway_client, upstream_base(upstream))
    _, token, _, _ = await _users(client)
    # Used once first, so a cache of verified tokens (if any) holds it.
    for path in ("/required/x", "/optional/x"):
        assert (await client.get(path, headers=bearer(token))).status == 200
    resp = await client.post("/api/v1/auth/logout", headers=bearer(token))
    assert resp.status == 200, await resp.text()
    for path in ("/required/x", "/optional/x", "/admin/x"):
        resp = await client.get(path, headers=bearer(token))
        assert resp.status == 401, path
        assert_envelope(await resp.json(), 401)


async def test_refresh_token_is_not_a_bearer_token(
    gateway_client: StartGateway, upstream: TestServer
) -> None:
    client = await _gateway(gateway_client, upstream_base(upstream))
    await create_user(client)
    refresh = (await login(client))["refresh_token"]
    for path in ("/required/x", "/optional/x"):
        resp = await client.get(path, headers=bearer(refresh))
        assert resp.status == 401, path
        assert_envelope(await resp.json(), 401)


# --- identity headers -------------------------------------------------------------------------


async def test_forged_identity_headers_are_stripped_everywhere(
    gateway_client: StartGateway, upstream: TestServer
) -> None:
    client = await _gateway(gateway_client, upstream_base(upstream))
    user_id, token, admin_id, admin_token = await _users(client)
    cases: list[tuple[str, str | None, dict[str, list[str]]]] = [
        ("/none/x", None, {}),
        ("/none/x", token, {}),
        ("/optional/x", None, {}),
        ("/optional/x", token, {"x-user-id": [str(user_id)], "x-is-admin": ["false"]}),
        ("/required/x", token, {"x-user-id": [str(user_id)], "x-is-admin": ["false"]}),
        ("/admin/x", admin_token, {"x-user-id": [str(admin_id)], "x-is-admin": ["true"]}),
    ]
    for path, tok, expected in cases:
        headers = list(FORGED)
        if tok is not None:
            headers.append(("Authorization", f"Bearer {tok}"))
        # Raw request: every spelling goes on the wire exactly as written, duplicates included.
        resp = await raw_request(client.host, client.port, "GET", path, headers)
        assert resp.status == 200, (path, resp.body)
        echo = resp.json()
        assert identity(echo) == expected, path
        if expected:
            # Injected once, in the canonical spelling.
            assert echo["headers"]["x-user-id"] == expected["x-user-id"]


# --- forwarding headers -----------------------------------------------------------------------


async def test_x_forwarded_headers(gateway_client: StartGateway, upstream: TestServer) -> None:
    client = await _gateway(gateway_client, upstream_base(upstream))
    resp = await raw_request(client.host, client.port, "GET", "/none/x", [])
    headers = resp.json()["headers"]
    assert headers["x-forwarded-for"] == ["127.0.0.1"]
    assert headers["x-forwarded-proto"] == ["http"]
    assert headers["x-forwarded-host"] == [f"{client.host}:{client.port}"]

    resp = await raw_request(
        client.host,
        client.port,
        "GET",
        "/none/x",
        [
            ("X-Forwarded-For", "203.0.113.7, 198.51.100.2"),
            ("X-Forwarded-For", "192.0.2.1"),
            ("X-Forwarded-Proto", "https"),
            ("X-Forwarded-Host", "evil.example"),
            ("X_Forwarded_Host", "evil.example"),
            ("Forwarded", "for=1.2.3.4;proto=https"),
            ("X-Real-IP", "1.2.3.4"),
        ],
        host_header="gateway.example:8443",
    )
    headers = resp.json()["headers"]
    assert headers["x-forwarded-for"] == ["203.0.113.7, 198.51.100.2, 192.0.2.1, 127.0.0.1"]
    # The socket peer is not a trusted proxy: its X-Forwarded-Proto is not believed.
    assert headers["x-forwarded-proto"] == ["http"]
    assert headers["x-forwarded-host"] == ["gateway.example:8443"]
    for dropped in ("x_forwarded_host", "forwarded", "x-real-ip"):
        assert dropped not in headers


async def test_x_forwarded_proto_from_a_trusted_proxy(
    gateway_client: StartGateway, upstream: TestServer
) -> None:
    client = await _gateway(
        gateway_client, upstream_base(upstream), server={"trusted_proxies": ["127.0.0.0/8"]}
    )
    resp = await client.get("/none/x", headers={"X-Forwarded-Proto": "https"})
    assert (await resp.json())["headers"]["x-forwarded-proto"] == ["https"]


async def test_request_id_kept_or_generated(
    gateway_client: StartGateway, upstream: TestServer
) -> None:
    client = await _gateway(gateway_client, upstream_base(upstream))
    resp = await client.get("/none/x", headers={"X-Request-Id": "req-123.abc"})
    assert resp.headers["X-Request-Id"] == "req-123.abc"
    assert (await resp.json())["headers"]["x-request-id"] == ["req-123.abc"]

    ids = set()
    for headers in ({}, {}, {"X-Request-Id": "bad id with spaces"}):
        resp = await client.get("/none/x", headers=headers)
        rid = resp.headers["X-Request-Id"]
        assert rid and rid != "bad id with spaces"
        assert (await resp.json())["headers"]["x-request-id"] == [rid]
        ids.add(rid)
    assert len(ids) == 3
    # Errors the gateway answers itself carry it too.
    resp = await client.get("/required/x", headers={"X-Request-Id": "req-401"})
    assert resp.status == 401
    assert resp.headers["X-Request-Id"] == "req-401"


async def test_hop_by_hop_request_headers_are_not_forwarded(
    gateway_client: StartGateway, upstream: TestServer
) -> None:
    client = await _gateway(gateway_client, upstream_base(upstream))
    resp = await raw_request(
        client.host,
        client.port,
        "GET",
        "/none/x",
        [
            ("Connection", "X-Drop-Me, x-drop-too"),
            ("X-Drop-Me", "1"),
            ("X-Drop-Too", "1"),
            ("Keep-Alive", "timeout=5"),
            ("TE", "trailers"),
            ("Trailer", "X-Checksum"),
            ("Proxy-Authorization", "Basic Zm9vOmJhcg=="),
            ("Proxy-Connection", "keep-alive"),
            ("Upgrade", "h2c"),
            ("X-Kept", "yes"),
        ],
    )
    assert resp.status == 200, resp.body
    headers = resp.json()["headers"]
    for name in (
        "x-drop-me",
        "x-drop-too",
        "keep-alive",
        "te",
        "trailer",
        "proxy-authorization",
        "proxy-connection",
        "upgrade",
    ):
        assert name not in headers, name
    # The upstream hop is the gateway's own keep-alive connection, not the client's "close".
    assert "close" not in ",".join(headers.get("connection", [])).lower()
    assert headers["x-kept"] == ["yes"]


async def test_hop_by_hop_response_headers_are_not_forwarded(
    gateway_client: StartGateway, upstream: TestServer
) -> None:
    client = await gateway_client(routes=[route("/", upstream_base(upstream))])
    resp = await client.get("/_/hop")
    assert resp.status == 200
    assert await resp.text() == "hop"
    assert "X-Secret-Hop" not in resp.headers
    assert "Keep-Alive" not in resp.headers
    assert "x-secret-hop" not in resp.headers.get("Connection", "").lower()


async def test_host_header(gateway_client: StartGateway, upstream: TestServer) -> None:
    base = upstream_base(upstream)
    client = await gateway_client(
        routes=[route("/default", base), route("/preserve", base, preserve_host=True)]
    )
    resp = await raw_request(
        client.host, client.port, "GET", "/default/x", host_header="gw.example"
    )
    assert resp.json()["headers"]["host"] == [f"127.0.0.1:{upstream.port}"]
    resp = await raw_request(
        client.host, client.port, "GET", "/preserve/x", host_header="gw.example"
    )
    assert resp.json()["headers"]["host"] == ["gw.example"]


# --- upstream answers pass through ------------------------------------------------------------


async def test_upstream_redirect_is_passed_through(
    gateway_client: StartGateway, aiohttp_server: Callable[..., Any]
) -> None:
    upstream = await start_recording_upstream(aiohttp_server)
    client = await gateway_client(routes=[route("/", upstream.base)])
    resp = await client.get("/_/redirect", allow_redirects=False)
    assert resp.status == 302
    assert resp.headers["Location"] == "/elsewhere"
    assert upstream.paths() == ["/_/redirect"]


@pytest.mark.parametrize("code", [400, 401, 404, 409, 418, 500, 502, 503, 504])
async def test_upstream_errors_pass_through_untouched(
    gateway_client: StartGateway, upstream: TestServer, code: int
) -> None:
    client = await gateway_client(routes=[route("/", upstream_base(upstream))])
    for method in ("GET", "POST"):
        resp = await client.request(method, f"/_/status/{code}")
        assert resp.status == code
        assert await resp.read() == f'{{"upstream": true, "code": {code}}}'.encode()
        assert resp.headers["Content-Type"].startswith("text/plain")


async def test_compressed_bodies_pass_through_untouched(
    gateway_client: StartGateway, aiohttp_server: Callable[..., Any]
) -> None:
    """No auto-decompression: the upstream's gzip bytes and Content-Encoding reach the client."""
    payload = gzip.compress(b"hello " * 1000)

    async def gzipped(request: web.Request) -> web.Response:
        return web.Response(
            body=payload,
            headers={"Content-Encoding": "gzip", "Content-Type": "text/plain"},
        )

    app = web.Application()
    app.router.add_get("/{tail:.*}", gzipped)
    server: TestServer = await aiohttp_server(app)
    client = await gateway_client(routes=[route("/", upstream_base(server))])
    resp = await client.get("/z", auto_decompress=False)
    assert resp.status == 200
    assert resp.headers["Content-Encoding"] == "gzip"
    assert await resp.read() == payload


async def test_repeated_headers_pass_through_both_ways(
    gateway_client: StartGateway, aiohttp_server: Callable[..., Any]
) -> None:
    async def cookies(request: web.Request) -> web.Response:
        response = web.json_response({"x-multi": request.headers.getall("X-Multi", [])})
        response.headers.add("Set-Cookie", "a=1; Path=/")
        response.headers.add("Set-Cookie", "b=2; Path=/")
        return response

    app = web.Application()
    app.router.add_get("/{tail:.*}", cookies)
    server: TestServer = await aiohttp_server(app)
    client = await gateway_client(routes=[route("/", upstream_base(server))])
    resp = await raw_request(
        client.host, client.port, "GET", "/c", [("X-Multi", "one"), ("X-Multi", "two")]
    )
    assert resp.status == 200
    assert resp.json() == {"x-multi": ["one", "two"]}
    assert resp.headers.getall("Set-Cookie") == ["a=1; Path=/", "b=2; Path=/"]


async def test_expect_100_continue(gateway_client: StartGateway, upstream: TestServer) -> None:
    """The gateway answers ``100 Continue`` itself; the upstream gets no ``Expect``."""
    client = await _gateway(gateway_client, upstream_base(upstream))
    reader, writer = await asyncio.open_connection(client.host, client.port)
    try:
        writer.write(
            b"POST /none/x HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n"
            b"Content-Length: 5\r\nExpect: 100-continue\r\n\r\n"
        )
        await writer.drain()
        interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert interim.startswith(b"HTTP/1.1 100")
        writer.write(b"hello")
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), 5)
    finally:
        writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    echo = json.loads(body)
    assert echo["body_length"] == 5
    assert "expect" not in echo["headers"]


def _resign(token: str, key: str = TEST_SECRET, algorithm: str = "HS256", **changes: Any) -> str:
    """``token``'s claims with ``changes``, signed anew."""
    payload = jwt.decode(token, options={"verify_signature": False})
    payload.update(changes)
    return jwt.encode(payload, key, algorithm=algorithm)


def _b64(data: dict[str, Any]) -> str:
    raw = json.dumps(data, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


@pytest.mark.filterwarnings("ignore:The HMAC key is")
async def test_forged_tokens_are_refused(
    gateway_client: StartGateway, upstream: TestServer
) -> None:
    client = await _gateway(gateway_client, upstream_base(upstream))
    _, token, _, _ = await _users(client)
    claims = jwt.decode(token, options={"verify_signature": False})
    now = int(time.time())
    forged = {
        "expired": _resign(token, exp=now - 10, iat=now - 100),
        "other secret": _resign(token, key="attacker-secret-that-is-long-enough-0123456789"),
        "is_admin flipped, old signature": ".".join(
            [token.split(".")[0], _b64({**claims, "is_admin": True}), token.split(".")[2]]
        ),
        "alg none": f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(claims)}.",
        "HS512 with the right secret": _resign(token, algorithm="HS512"),
        "refresh type": _resign(token, token_type="refresh"),
    }
    assert (await client.get("/admin/x", headers=bearer(token))).status == 403
    for name, bad in forged.items():
        for path in ("/required/x", "/optional/x", "/admin/x"):
            resp = await client.get(path, headers=bearer(bad))
            assert resp.status == 401, (name, path, resp.status)
            assert_envelope(await resp.json(), 401)


async def test_token_expiring_after_use_is_refused(
    gateway_client: StartGateway, upstream: TestServer
) -> None:
    """A token accepted once (and perhaps cached) stops working at its ``exp``."""
    client = await _gateway(gateway_client, upstream_base(upstream))
    _, token, _, _ = await _users(client)
    exp = int(time.time()) + 2
    short = _resign(token, exp=exp)
    assert (await client.get("/required/x", headers=bearer(short))).status == 200
    await asyncio.sleep(max(0.0, exp - time.time()) + 0.05)
    resp = await client.get("/required/x", headers=bearer(short))
    assert resp.status == 401


@pytest.mark.parametrize(
    "framing",
    [
        [("Content-Length", "6"), ("Transfer-Encoding", "chunked")],
        [("Transfer-Encoding", "chunked"), ("Content-Length", "6")],
        [("Transfer-Encoding", "chunked, identity")],
        [("Transfer-Encoding", "identity, chunked"), ("Content-Length", "6")],
        [("Transfer-Encoding", "xchunked")],
        [("Content-Length", "6"), ("Content-Length", "60")],
        [("Content-Length", "+6")],
    ],
)
async def test_ambiguous_framing_is_not_smuggled(
    gateway_client: StartGateway, aiohttp_server: Callable[..., Any], framing: list[Any]
) -> None:
    """A request whose body length is ambiguous never lets a second request reach the upstream."""
    upstream = await start_recording_upstream(aiohttp_server)
    client = await gateway_client(routes=[route("/", upstream.base)])
    smuggled = b"0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: gw\r\n\r\n"
    head = "POST /front HTTP/1.1\r\nHost: gw\r\n" + "".join(f"{k}: {v}\r\n" for k, v in framing)
    reader, writer = await asyncio.open_connection(client.host, client.port)
    try:
        writer.write(head.encode() + b"\r\n" + smuggled)
        await writer.drain()
        await asyncio.wait_for(reader.read(), 5)
    except (ConnectionResetError, TimeoutError):
        pass
    finally:
        writer.close()
    await asyncio.sleep(0.1)
    assert "/smuggled" not in upstream.paths()
    assert all(s.method == "POST" for s in upstream.seen)
