"""CORS at the edge on proxied routes (SPEC §5): preflights answered by the gateway and never
forwarded, the edge policy replacing an upstream's own ``Access-Control-*`` headers."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp.test_utils import TestClient
from multidict import CIMultiDictProxy

from tests.fixtures.gateway import both_listeners  # noqa: F401  (edge and aiohttp)
from tests.integration.test_proxy_routing import (
    RecordingUpstream,
    assert_envelope,
    route,
    start_recording_upstream,
)

Client = TestClient[Any, Any]
StartGateway = Callable[..., Any]
ALLOWED = "http://localhost:8080"
FOREIGN = "http://evil.example"
EDGE = {
    "Access-Control-Allow-Origin": ALLOWED,
    "Access-Control-Allow-Credentials": "true",
    "Access-Control-Allow-Headers": "Authorization,Content-Type,Accept,Origin,X-Requested-With",
    "Access-Control-Allow-Methods": "GET,POST,PUT,PATCH,DELETE,OPTIONS",
    "Access-Control-Max-Age": "600",
}


def cors_headers(headers: CIMultiDictProxy[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for name, value in headers.items():
        if name.lower().startswith("access-control-"):
            out.setdefault(name.lower(), []).append(value)
    return out


def assert_edge_policy(headers: CIMultiDictProxy[str]) -> None:
    expected = {name.lower(): [value] for name, value in EDGE.items()}
    assert cors_headers(headers) == expected
    assert "origin" in headers.get("Vary", "").lower()


async def _gateway(
    gateway_client: StartGateway, aiohttp_server: Callable[..., Any]
) -> tuple[Client, RecordingUpstream]:
    upstream = await start_recording_upstream(aiohttp_server)
    client: Client = await gateway_client(
        routes=[
            route("/private", upstream.base, auth="required", strip_prefix=True),
            route("/get-only", upstream.base, methods=["GET"], strip_prefix=True),
            route("/", upstream.base),
        ]
    )
    return client, upstream


def _preflight(origin: str) -> dict[str, str]:
    return {
        "Origin": origin,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "Authorization, Content-Type",
    }


async def test_preflight_is_answered_at_the_edge(
    gateway_client: StartGateway, aiohttp_server: Callable[..., Any]
) -> None:
    client, upstream = await _gateway(gateway_client, aiohttp_server)
    for path in ("/private/x", "/get-only/x", "/_/cors", "/anything"):
        resp = await client.options(path, headers=_preflight(ALLOWED))
        assert resp.status == 204, path
        assert_edge_policy(resp.headers)
        assert await resp.read() == b""
    assert upstream.seen == []


async def test_preflight_from_a_foreign_origin_gets_no_cors_headers(
    gateway_client: StartGateway, aiohttp_server: Callable[..., Any]
) -> None:
    client, upstream = await _gateway(gateway_client, aiohttp_server)
    for path in ("/private/x", "/_/cors"):
        resp = await client.options(path, headers=_preflight(FOREIGN))
        assert resp.status == 403, path
        assert_envelope(await resp.json(), 403)
        assert cors_headers(resp.headers) == {}
    assert upstream.seen == []


async def test_plain_options_is_not_a_preflight(
    gateway_client: StartGateway, aiohttp_server: Callable[..., Any]
) -> None:
    """Without Access-Control-Request-Method an OPTIONS is an ordinary request."""
    client, upstream = await _gateway(gateway_client, aiohttp_server)
    resp = await client.options("/x", headers={"Origin": ALLOWED})
    assert resp.status == 200
    assert_edge_policy(resp.headers)
    assert [s.method for s in upstream.seen] == ["OPTIONS"]


async def test_edge_policy_replaces_the_upstreams(
    gateway_client: StartGateway, aiohttp_server: Callable[..., Any]
) -> None:
    client, _ = await _gateway(gateway_client, aiohttp_server)
    # The upstream's /_/cors sends "Allow-Origin: *", "Allow-Methods: TRACE", "Credentials: false".
    resp = await client.get("/_/cors", headers={"Origin": ALLOWED})
    assert resp.status == 200
    assert await resp.text() == "cors"
    assert_edge_policy(resp.headers)

    for headers in ({"Origin": FOREIGN}, {}):
        resp = await client.get("/_/cors", headers=headers)
        assert resp.status == 200
        assert await resp.text() == "cors"
        assert cors_headers(resp.headers) == {}, headers


async def test_edge_policy_on_errors_and_streams(
    gateway_client: StartGateway, aiohttp_server: Callable[..., Any]
) -> None:
    client, _ = await _gateway(gateway_client, aiohttp_server)
    origin = {"Origin": ALLOWED}
    resp = await client.get("/private/x", headers=origin)
    assert resp.status == 401
    assert_envelope(await resp.json(), 401)
    assert_edge_policy(resp.headers)

    resp = await client.get("/get-only/x", headers=origin, data=None)
    assert resp.status == 200
    resp = await client.post("/get-only/x", headers=origin)
    assert resp.status == 405
    assert_edge_policy(resp.headers)

    resp = await client.get("/_/status/503", headers=origin)
    assert resp.status == 503
    assert_edge_policy(resp.headers)

    resp = await client.get("/_/sse?gap=0", headers=origin)
    assert resp.status == 200
    assert_edge_policy(resp.headers)
    await resp.read()

    resp = await client.get("/_/status/503", headers={"Origin": FOREIGN})
    assert cors_headers(resp.headers) == {}
