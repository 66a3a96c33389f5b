"""The edge CORS policy of SPEC §5, for the auth API, errors, unknown paths and proxied routes.

The seed (``seeds/004_*.txt``) shows the exact headers a browser at the allowed origin gets on
``/login``, ``/refresh``, ``/register`` and ``/resend-verification``; they are checked verbatim.
Runs on both backends (``client`` / ``gateway_client``).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from tests.fixtures.factories import DEFAULT_PASSWORD, create_user, login

AUTH = "/api/v1/auth"
ALLOWED = "http://localhost:8080"
FOREIGN = "http://evil.example"
SEED_HEADERS = {
    "access-control-allow-origin": ALLOWED,
    "access-control-allow-credentials": "true",
    "access-control-allow-headers": "Authorization,Content-Type,Accept,Origin,X-Requested-With",
    "access-control-allow-methods": "GET,POST,PUT,PATCH,DELETE,OPTIONS",
    "access-control-max-age": "600",
    "vary": "Origin",
}
LOGIN_BODY = {"email": "beyhan@beyhan.dev", "password": DEFAULT_PASSWORD}
StartGateway = Callable[..., Awaitable[TestClient[Any, Any]]]


def cors_headers(resp: Any) -> dict[str, list[str]]:
    """Every ``access-control-*`` header of ``resp`` (lower-case name → all its values)."""
    out: dict[str, list[str]] = {}
    for name, value in resp.headers.items():
        if name.lower().startswith("access-control-"):
            out.setdefault(name.lower(), []).append(value)
    return out


def assert_policy_headers(resp: Any, expected: dict[str, str]) -> None:
    """The response carries exactly ``expected`` CORS headers, each once, plus ``Vary: Origin``."""
    wanted = {k: v for k, v in expected.items() if k != "vary"}
    assert cors_headers(resp) == {k: [v] for k, v in wanted.items()}, dict(resp.headers)
    if "vary" in expected:
        varies = [v.strip().lower() for v in ",".join(resp.headers.getall("Vary", [])).split(",")]
        assert varies.count("origin") == 1, resp.headers.getall("Vary", [])


def assert_no_cors(resp: Any) -> None:
    assert cors_headers(resp) == {}, dict(resp.headers)


def assert_no_allow_headers(resp: Any) -> None:
    names = [n.lower() for n in resp.headers]
    assert not [n for n in names if n.startswith("access-control-allow-")], dict(resp.headers)


async def preflight(
    client: TestClient[Any, Any],
    path: str,
    origin: str | None = ALLOWED,
    method: str = "POST",
    request_headers: str | None = "Content-Type, Authorization",
) -> Any:
    headers = {"Access-Control-Request-Method": method}
    if origin is not None:
        headers["Origin"] = origin
    if request_headers is not None:
        headers["Access-Control-Request-Headers"] = request_headers
    return await client.options(path, headers=headers)


async def assert_envelope(resp: Any, status: int) -> dict[str, Any]:
    assert resp.status == status, await resp.text()
    body = await resp.json()
    assert set(body) == {"isSuccess", "statusCode", "data", "errors", "timestamp"}
    assert body["isSuccess"] is False and body["statusCode"] == status and body["data"] is None
    return dict(body)


# --- an upstream that sends its own (wrong) CORS headers -----------------------------------


class Upstream:
    """A tiny upstream app that counts its hits and sends a permissive CORS policy of its own."""

    def __init__(self) -> None:
        self.hits: list[str] = []
        self.server: TestServer | None = None
        self.app = web.Application()
        self.app.router.add_route("*", "/{tail:.*}", self.handle)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.hits.append(f"{request.method} {request.path}")
        headers = {
            "Access-Control-Allow-Origin": "*",
            "Access-Control-Allow-Credentials": "true",
            "Access-Control-Allow-Methods": "TRACE",
            "Access-Control-Allow-Headers": "X-Anything",
            "Access-Control-Expose-Headers": "X-Upstream-Secret",
            "Access-Control-Max-Age": "99999",
            "Vary": "Accept-Encoding",
        }
        if request.path.endswith("/stream"):
            resp = web.StreamResponse(headers=headers)
            resp.content_type = "text/plain"
            await resp.prepare(request)
            for i in range(3):
                await resp.write(f"chunk {i}\n".encode())
            await resp.write_eof()
            return resp
        return web.json_response({"ok": True, "path": request.path}, headers=headers)


@pytest.fixture
async def upstream(aiohttp_server: Callable[..., Awaitable[TestServer]]) -> Upstream:
    up = Upstream()
    up.server = await aiohttp_server(up.app)
    return up


def orders_route(up: Upstream) -> dict[str, Any]:
    assert up.server is not None
    return {
        "name": "orders",
        "prefix": "/api/v1/orders",
        "upstream": f"http://127.0.0.1:{up.server.port}",
        "auth": "none",
    }


@pytest.fixture
async def proxied(gateway_client: StartGateway, upstream: Upstream) -> TestClient[Any, Any]:
    """A gateway with the default CORS policy and one public proxied route."""
    return await gateway_client(routes=[orders_route(upstream)])


# --- allowed origin ----------------------------------------------------------------------


async def test_login_from_allowed_origin_has_seed_headers(client: TestClient[Any, Any]) -> None:
    await create_user(client, is_admin=True)
    resp = await client.post(f"{AUTH}/login", json=LOGIN_BODY, headers={"Origin": ALLOWED})
    assert resp.status == 200, await resp.text()
    assert_policy_headers(resp, SEED_HEADERS)
    assert resp.headers["Vary"] == "Origin"
    assert "access_token" in await resp.json()


async def test_seed_endpoints_from_allowed_origin(client: TestClient[Any, Any]) -> None:
    """/refresh, /register and /resend-verification carry the same headers (seed 004)."""
    await create_user(client)
    tokens = await login(client)
    origin = {"Origin": ALLOWED}
    calls = [
        ("/refresh", {"refresh_token": tokens["refresh_token"]}, 200),
        (
            "/register",
            {
                "email": "string@strind.com",
                "first_name": "string",
                "last_name": "string",
                "password": "string",
                "username": "string",
            },
            201,
        ),
        ("/resend-verification", {"email": "string@strind.com"}, 200),
    ]
    for path, body, status in calls:
        resp = await client.post(AUTH + path, json=body, headers=origin)
        assert resp.status == status, (path, await resp.text())
        assert_policy_headers(resp, SEED_HEADERS)
    resp = await client.get(
        f"{AUTH}/me",
        headers={**origin, "Authorization": f"Bearer {tokens['access_token']}"},
    )
    assert resp.status == 200
    assert_policy_headers(resp, SEED_HEADERS)


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("POST", f"{AUTH}/login", {"email": "nobody@example.com", "password": "wrong!"}, 401),
        ("POST", f"{AUTH}/login", {"email": 5}, 400),
        ("POST", f"{AUTH}/register", {}, 400),
        ("POST", f"{AUTH}/refresh", {"refresh_token": "garbage"}, 401),
        ("GET", f"{AUTH}/me", None, 401),
        ("GET", f"{AUTH}/login", None, 405),
        ("GET", f"{AUTH}/nope", None, 404),
        ("GET", "/no/such/path", None, 404),
        ("POST", f"{AUTH}/login", "x" * (70 * 1024), 413),
    ],
    ids=[
        "401-login",
        "400-type",
        "400-missing",
        "401-refresh",
        "401-me",
        "405",
        "404-auth",
        "404",
        "413",
    ],
)
async def test_error_envelopes_carry_cors_headers(
    client: TestClient[Any, Any], method: str, path: str, body: Any, status: int
) -> None:
    kwargs: dict[str, Any] = {"headers": {"Origin": ALLOWED}}
    if isinstance(body, str):
        kwargs["data"] = json.dumps({"email": body}).encode()
        kwargs["headers"]["Content-Type"] = "application/json"
    elif body is not None:
        kwargs["json"] = body
    resp = await client.request(method, path, **kwargs)
    await assert_envelope(resp, status)
    assert_policy_headers(resp, SEED_HEADERS)


async def test_health_from_allowed_origin(client: TestClient[Any, Any]) -> None:
    resp = await client.get("/healthz", headers={"Origin": ALLOWED})
    assert resp.status == 200
    assert_policy_headers(resp, SEED_HEADERS)


# --- preflight ----------------------------------------------------------------------------

PREFLIGHT_PATHS = [
    f"{AUTH}/login",
    f"{AUTH}/register",
    f"{AUTH}/refresh",
    f"{AUTH}/resend-verification",
    f"{AUTH}/me",
    f"{AUTH}/logout",
    f"{AUTH}/verify-email?token=abc",
    f"{AUTH}/does-not-exist",
    "/no/such/path",
    "/healthz",
    "/",
]


@pytest.mark.parametrize("path", PREFLIGHT_PATHS)
async def test_preflight_from_allowed_origin(client: TestClient[Any, Any], path: str) -> None:
    for method in ("POST", "GET", "DELETE", "PUT"):
        resp = await preflight(client, path, method=method)
        assert 200 <= resp.status < 300, (path, method, resp.status, await resp.text())
        assert await resp.read() == b""
        assert_policy_headers(resp, SEED_HEADERS)


async def test_preflight_without_request_headers(client: TestClient[Any, Any]) -> None:
    resp = await preflight(client, f"{AUTH}/login", request_headers=None)
    assert 200 <= resp.status < 300
    assert await resp.read() == b""
    assert_policy_headers(resp, SEED_HEADERS)


async def test_preflight_never_reaches_upstream(
    proxied: TestClient[Any, Any], upstream: Upstream
) -> None:
    for path in ("/api/v1/orders", "/api/v1/orders/42", "/api/v1/orders/x/stream"):
        resp = await preflight(proxied, path, method="DELETE")
        assert 200 <= resp.status < 300, await resp.text()
        assert await resp.read() == b""
        assert_policy_headers(resp, SEED_HEADERS)
        resp = await preflight(proxied, path, origin=FOREIGN, method="DELETE")
        await assert_envelope(resp, 403)
        assert_no_allow_headers(resp)
    assert upstream.hits == []


async def test_preflight_to_unreachable_upstream_is_still_answered(
    gateway_client: StartGateway,
) -> None:
    route = {
        "name": "dead",
        "prefix": "/api/v1/dead",
        "upstream": "http://127.0.0.1:9",
        "auth": "required",
    }
    gw = await gateway_client(routes=[route])
    resp = await preflight(gw, "/api/v1/dead/thing")
    assert 200 <= resp.status < 300, await resp.text()
    assert_policy_headers(resp, SEED_HEADERS)


# --- proxied responses: the edge policy wins ----------------------------------------------


async def test_proxied_response_gets_edge_policy(
    proxied: TestClient[Any, Any], upstream: Upstream
) -> None:
    resp = await proxied.get("/api/v1/orders/1", headers={"Origin": ALLOWED})
    assert resp.status == 200, await resp.text()
    assert await resp.json() == {"ok": True, "path": "/api/v1/orders/1"}
    assert_policy_headers(resp, SEED_HEADERS)
    varies = {v.strip().lower() for v in ",".join(resp.headers.getall("Vary")).split(",")}
    assert varies == {"accept-encoding", "origin"}
    assert upstream.hits == ["GET /api/v1/orders/1"]


async def test_streamed_proxied_response_gets_edge_policy(proxied: TestClient[Any, Any]) -> None:
    resp = await proxied.get("/api/v1/orders/x/stream", headers={"Origin": ALLOWED})
    assert resp.status == 200
    assert await resp.text() == "chunk 0\nchunk 1\nchunk 2\n"
    assert_policy_headers(resp, SEED_HEADERS)


async def test_proxied_response_to_foreign_origin_has_no_cors(
    proxied: TestClient[Any, Any],
) -> None:
    """The upstream's ``Access-Control-Allow-Origin: *`` must not reach a foreign origin."""
    for path in ("/api/v1/orders/1", "/api/v1/orders/x/stream"):
        resp = await proxied.get(path, headers={"Origin": FOREIGN})
        assert resp.status == 200
        assert_no_cors(resp)


async def test_proxied_response_without_origin_has_no_cors(
    proxied: TestClient[Any, Any],
) -> None:
    resp = await proxied.get("/api/v1/orders/1")
    assert resp.status == 200
    assert_no_cors(resp)


# --- foreign origins, no origin, Origin: null ---------------------------------------------

FOREIGN_ORIGINS = [
    FOREIGN,
    "null",
    "http://localhost:8081",
    "https://localhost:8080",
    "http://localhost",
    "http://localhost:8080.evil.example",
    "http://evil.localhost:8080",
    "http://localhost:8080/",
    "http://localhost:8080, http://evil.example",
    "*",
]


@pytest.mark.parametrize("origin", FOREIGN_ORIGINS)
async def test_foreign_origin_gets_no_allow_headers(
    client: TestClient[Any, Any], origin: str
) -> None:
    await create_user(client)
    headers = {"Origin": origin}
    resp = await client.post(f"{AUTH}/login", json=LOGIN_BODY, headers=headers)
    assert resp.status == 200, await resp.text()  # the request itself is served
    assert_no_allow_headers(resp)
    resp = await client.post(
        f"{AUTH}/login", json={"email": "x@y.co", "password": "nope!"}, headers=headers
    )
    await assert_envelope(resp, 401)
    assert_no_allow_headers(resp)
    resp = await client.get("/no/such/path", headers=headers)
    await assert_envelope(resp, 404)
    assert_no_allow_headers(resp)


@pytest.mark.parametrize("origin", FOREIGN_ORIGINS)
@pytest.mark.parametrize("path", [f"{AUTH}/login", f"{AUTH}/me", "/no/such/path"])
async def test_foreign_preflight_is_refused(
    client: TestClient[Any, Any], origin: str, path: str
) -> None:
    resp = await preflight(client, path, origin=origin)
    body = await assert_envelope(resp, 403)
    assert body["errors"][0] == "Forbidden"
    assert_no_allow_headers(resp)


async def test_no_origin_no_cors_headers(client: TestClient[Any, Any]) -> None:
    await create_user(client)
    resp = await client.post(f"{AUTH}/login", json=LOGIN_BODY)
    assert resp.status == 200
    assert_no_cors(resp)
    for method, path in (("GET", f"{AUTH}/me"), ("GET", "/nowhere"), ("GET", "/healthz")):
        resp = await client.request(method, path)
        assert_no_cors(resp)


async def test_options_without_origin_is_not_a_preflight(client: TestClient[Any, Any]) -> None:
    """No Origin: an OPTIONS with Access-Control-Request-Method gets no CORS headers."""
    resp = await preflight(client, f"{AUTH}/login", origin=None)
    assert resp.status < 500
    assert_no_cors(resp)


# --- configuration variations -------------------------------------------------------------


async def test_several_allowed_origins(gateway_client: StartGateway) -> None:
    origins = ["http://a.example", "https://b.example:8443", "http://localhost:3000"]
    gw = await gateway_client(cors={"allow_origins": origins})
    for origin in origins:
        resp = await gw.get("/healthz", headers={"Origin": origin})
        assert resp.headers.getall("Access-Control-Allow-Origin") == [origin]
        assert resp.headers["Access-Control-Allow-Credentials"] == "true"
        resp = await preflight(gw, f"{AUTH}/login", origin=origin)
        assert 200 <= resp.status < 300
        assert resp.headers.getall("Access-Control-Allow-Origin") == [origin]
    for origin in (ALLOWED, "http://c.example", "https://a.example"):
        resp = await gw.get("/healthz", headers={"Origin": origin})
        assert_no_allow_headers(resp)
        resp = await preflight(gw, f"{AUTH}/login", origin=origin)
        await assert_envelope(resp, 403)
        assert_no_allow_headers(resp)


async def test_allow_credentials_false(gateway_client: StartGateway) -> None:
    gw = await gateway_client(cors={"allow_credentials": False})
    expected = {k: v for k, v in SEED_HEADERS.items() if k != "access-control-allow-credentials"}
    resp = await gw.post(
        f"{AUTH}/login", json={"email": "a@b.co", "password": "x"}, headers={"Origin": ALLOWED}
    )
    assert resp.status == 401
    assert_policy_headers(resp, expected)
    resp = await preflight(gw, f"{AUTH}/login")
    assert 200 <= resp.status < 300
    assert_policy_headers(resp, expected)


async def test_expose_headers(gateway_client: StartGateway) -> None:
    gw = await gateway_client(cors={"expose_headers": ["X-Request-Id", "Retry-After"]})
    resp = await gw.get("/healthz", headers={"Origin": ALLOWED})
    assert resp.headers.getall("Access-Control-Expose-Headers") == ["X-Request-Id,Retry-After"]
    assert resp.headers["Access-Control-Allow-Origin"] == ALLOWED
    # Not exposed to foreign origins, and absent by default.
    resp = await gw.get("/healthz", headers={"Origin": FOREIGN})
    assert_no_cors(resp)


async def test_no_expose_headers_by_default(client: TestClient[Any, Any]) -> None:
    resp = await client.get("/healthz", headers={"Origin": ALLOWED})
    assert "Access-Control-Expose-Headers" not in resp.headers


@pytest.mark.parametrize("max_age", [0, 60, 86400])
async def test_max_age(gateway_client: StartGateway, max_age: int) -> None:
    gw = await gateway_client(cors={"max_age": max_age})
    resp = await preflight(gw, f"{AUTH}/login")
    assert 200 <= resp.status < 300
    assert resp.headers.getall("Access-Control-Max-Age") == [str(max_age)]


async def test_custom_methods_and_headers(gateway_client: StartGateway) -> None:
    gw = await gateway_client(
        cors={"allow_methods": ["GET", "POST"], "allow_headers": ["Authorization", "X-Custom"]}
    )
    resp = await preflight(gw, f"{AUTH}/login")
    assert 200 <= resp.status < 300
    assert resp.headers["Access-Control-Allow-Methods"] == "GET,POST"
    assert resp.headers["Access-Control-Allow-Headers"] == "Authorization,X-Custom"


async def test_wildcard_origin_without_credentials(gateway_client: StartGateway) -> None:
    gw = await gateway_client(cors={"allow_origins": ["*"], "allow_credentials": False})
    for origin in (FOREIGN, "http://anything.example:1234"):
        resp = await gw.get("/healthz", headers={"Origin": origin})
        assert resp.headers.getall("Access-Control-Allow-Origin") in ([origin], ["*"])
        assert "Access-Control-Allow-Credentials" not in resp.headers
        resp = await preflight(gw, f"{AUTH}/login", origin=origin)
        assert 200 <= resp.status < 300
        assert resp.headers.getall("Access-Control-Allow-Origin") in ([origin], ["*"])
    resp = await gw.get("/healthz")
    assert_no_cors(resp)


async def test_no_allowed_origins(gateway_client: StartGateway) -> None:
    gw = await gateway_client(cors={"allow_origins": []})
    resp = await gw.get("/healthz", headers={"Origin": ALLOWED})
    assert_no_cors(resp)
    resp = await preflight(gw, f"{AUTH}/login")
    await assert_envelope(resp, 403)
    assert_no_allow_headers(resp)


async def test_config_origin_null_is_refused(gateway_client: StartGateway) -> None:
    """``null`` cannot be configured as an origin (sandboxed iframes and files send it)."""
    from config import ConfigError

    with pytest.raises(ConfigError) as info:
        await gateway_client(cors={"allow_origins": ["null"]})
    assert "cors.allow_origins[0]" in str(info.value)
