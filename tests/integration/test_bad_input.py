"""Hostile and broken requests to the auth API: always a 4xx envelope, never a 500, no writes.

SPEC §2: "Malformed JSON, a wrong content type, wrong field types or an oversized body are 4xx —
never a 500 and never a hang", every error carries the envelope, and its ``errors[0]`` is the
general message of the status. Runs on both backends (``client`` / ``gateway_client``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiohttp import ClientSession
from aiohttp.test_utils import TestClient
from sqlalchemy import text

from gateway.appkeys import SERVICES
from tests.fixtures.backends import TABLES, Backend
from tests.fixtures.factories import DEFAULT_PASSWORD, create_user, login

AUTH = "/api/v1/auth"
ENDPOINTS = ["/register", "/login", "/refresh", "/resend-verification"]
TIMESTAMP_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
ENVELOPE_KEYS = {"isSuccess", "statusCode", "data", "errors", "timestamp"}
# errors[0] for every status SPEC §2 names.
SPEC_MESSAGES = {
    400: "Validation failed",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Resource not found",
    409: "Resource already exists or cannot be changed in its current state",
    413: "Request body too large",
    429: "Too many requests",
    502: "Bad gateway",
    503: "Service unavailable",
    504: "Gateway timeout",
}
AUTH_LIMIT = 64 * 1024

# A well-formed body per endpoint: every field a string.
VALID_BODIES: dict[str, dict[str, str]] = {
    "/register": {
        "email": "new.user@example.com",
        "password": "a good password",
        "username": "newuser",
        "first_name": "New",
        "last_name": "User",
    },
    "/login": {"email": "beyhan@beyhan.dev", "password": DEFAULT_PASSWORD},
    "/refresh": {"refresh_token": "not-even-a-jwt"},
    "/resend-verification": {"email": "beyhan@beyhan.dev"},
}
REQUIRED_FIELDS: dict[str, list[str]] = {
    "/register": ["email", "password", "username", "first_name"],
    "/login": ["email", "password"],
    "/refresh": ["refresh_token"],
    "/resend-verification": ["email"],
}


async def assert_envelope(resp: Any, status: int | set[int], *details: str) -> dict[str, Any]:
    """Check the SPEC §2 envelope of ``resp``; ``details`` must appear after errors[0]."""
    raw = await resp.read()
    allowed = {status} if isinstance(status, int) else status
    assert resp.status in allowed, (resp.status, raw[:500])
    assert resp.content_type == "application/json", resp.content_type
    body = json.loads(raw)
    assert isinstance(body, dict)
    assert set(body) == ENVELOPE_KEYS, body
    assert body["isSuccess"] is False
    assert body["statusCode"] == resp.status
    assert body["data"] is None
    errors = body["errors"]
    assert isinstance(errors, list) and errors, body
    assert all(isinstance(e, str) and e for e in errors), body
    if resp.status in SPEC_MESSAGES:
        assert errors[0] == SPEC_MESSAGES[resp.status], body
    assert isinstance(body["timestamp"], str) and TIMESTAMP_RE.match(body["timestamp"]), body
    for detail in details:
        assert detail in errors[1:], (detail, errors)
    return body


async def row_counts(client: TestClient[Any, Any]) -> dict[str, int]:
    """How many rows each table of the schema holds."""
    engine = client.app[SERVICES].engine
    assert engine is not None
    counts = {}
    async with engine.connect() as conn:
        for table in TABLES:
            counts[table] = int(await conn.scalar(text(f"SELECT count(*) FROM {table}")) or 0)
    return counts


@pytest.fixture
async def seeded(client: TestClient[Any, Any]) -> AsyncIterator[TestClient[Any, Any]]:
    """The client with one verified user who has logged in once (so every table has rows)."""
    await create_user(client)
    await login(client)
    # One unverified user with a pending verification token.
    resp = await client.post(f"{AUTH}/register", json={**VALID_BODIES["/register"]})
    assert resp.status == 201, await resp.text()
    yield client


async def post_raw(
    client: TestClient[Any, Any],
    path: str,
    body: bytes,
    content_type: str | None = "application/json",
    **kwargs: Any,
) -> Any:
    headers = dict(kwargs.pop("headers", {}))
    skip: list[str] = []
    if content_type is None:
        skip.append("Content-Type")
    else:
        headers["Content-Type"] = content_type
    return await client.post(
        AUTH + path, data=body, headers=headers, skip_auto_headers=skip, **kwargs
    )


# --- bodies that are not a JSON object -----------------------------------------------------

NOT_AN_OBJECT: dict[str, bytes] = {
    "malformed-trailing-comma": b'{"email": "a@b.co",}',
    "malformed-single-quotes": b"{'email': 'a@b.co'}",
    "malformed-bare-key": b"{email: 1}",
    "garbage": b"\x00\x01\x02 not json at all",
    "truncated-object": b'{"email": "a@b.co", "pass',
    "truncated-string": b'{"email": "a@b.co',
    "only-open-brace": b"{",
    "two-objects": b'{"email": "a@b.co"}{"email": "x@y.co"}',
    "array-empty": b"[]",
    "array-of-object": b'[{"email": "a@b.co", "password": "secret123"}]',
    "string": b'"hello"',
    "number": b"42",
    "float": b"4.2e10",
    "null": b"null",
    "true": b"true",
    "empty": b"",
    "whitespace": b"  \r\n\t ",
    "nan": b'{"email": NaN, "password": "x"}',
    "infinity": b'{"email": Infinity, "password": "x"}',
    "minus-infinity": b'{"email": -Infinity, "password": "x"}',
    "nan-top-level": b"NaN",
    "invalid-utf8": b'{"email": "\xff\xfe\xfd@example.com", "password": "x"}',
    "invalid-utf8-overlong": b'{"email": "\xc0\xafa@b.co", "password": "x"}',
    "utf16-body": '{"email": "a@b.co"}'.encode("utf-16"),
    "deep-open-brackets": b"[" * 10000,
    "deep-closed-brackets": b"[" * 10000 + b"]" * 10000,
    "deep-objects": b'{"a":' * 5000 + b"1" + b"}" * 5000,
    "deep-in-field": b'{"email": ' + b"[" * 40 + b"]" * 40 + b', "password": "x"}',
    "huge-integer": b'{"email": ' + b"9" * 5000 + b', "password": "x"}',
    "huge-exponent": b'{"email": 1e999999, "password": "x"}',
}


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize("case", sorted(NOT_AN_OBJECT))
async def test_body_not_a_json_object(
    seeded: TestClient[Any, Any], endpoint: str, case: str
) -> None:
    before = await row_counts(seeded)
    resp = await post_raw(seeded, endpoint, NOT_AN_OBJECT[case])
    await assert_envelope(resp, 400)
    assert await row_counts(seeded) == before


# --- content types -------------------------------------------------------------------------

WRONG_CONTENT_TYPES: dict[str, str | None] = {
    "text-plain": "text/plain",
    "form": "application/x-www-form-urlencoded",
    "multipart": "multipart/form-data; boundary=xyz",
    "octet-stream": "application/octet-stream",
    "xml": "application/xml",
    "none": None,
    "garbage": "this is not a media type",
}


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize("case", sorted(WRONG_CONTENT_TYPES))
async def test_wrong_content_type(seeded: TestClient[Any, Any], endpoint: str, case: str) -> None:
    """A JSON body sent with another Content-Type is refused with a 4xx (400 or 415)."""
    before = await row_counts(seeded)
    body = json.dumps(VALID_BODIES[endpoint]).encode()
    resp = await post_raw(seeded, endpoint, body, WRONG_CONTENT_TYPES[case])
    await assert_envelope(resp, {400, 415})
    assert await row_counts(seeded) == before


@pytest.mark.parametrize("endpoint", ENDPOINTS)
async def test_real_form_post_is_refused(seeded: TestClient[Any, Any], endpoint: str) -> None:
    before = await row_counts(seeded)
    resp = await seeded.post(AUTH + endpoint, data=VALID_BODIES[endpoint])
    await assert_envelope(resp, {400, 415})
    assert await row_counts(seeded) == before


@pytest.mark.parametrize("endpoint", ENDPOINTS)
async def test_unknown_charset_is_a_4xx(seeded: TestClient[Any, Any], endpoint: str) -> None:
    body = json.dumps(VALID_BODIES[endpoint]).encode()
    resp = await post_raw(seeded, endpoint, body, "application/json; charset=no-such-charset")
    await assert_envelope(resp, {400, 415})


async def test_json_with_charset_and_suffix_types_are_read(
    seeded: TestClient[Any, Any],
) -> None:
    """Sanity: the content-type check does not refuse legitimate JSON spellings."""
    body = json.dumps({"email": "nobody@example.com"}).encode()
    for ctype in ("application/json; charset=utf-8", "APPLICATION/JSON", "application/vnd+json"):
        resp = await post_raw(seeded, "/resend-verification", body, ctype)
        assert resp.status == 200, (ctype, await resp.text())


# --- oversized bodies ---------------------------------------------------------------------


def _big_body(endpoint: str, size: int) -> bytes:
    body = dict(VALID_BODIES[endpoint])
    body["padding"] = "x" * size
    return json.dumps(body).encode()


@pytest.mark.parametrize("endpoint", ENDPOINTS)
async def test_body_over_64k_is_413(seeded: TestClient[Any, Any], endpoint: str) -> None:
    before = await row_counts(seeded)
    resp = await post_raw(seeded, endpoint, _big_body(endpoint, AUTH_LIMIT + 1))
    await assert_envelope(resp, 413)
    assert await row_counts(seeded) == before


@pytest.mark.parametrize("endpoint", ENDPOINTS)
async def test_body_just_under_64k_is_read(seeded: TestClient[Any, Any], endpoint: str) -> None:
    """The limit is 64 KiB, not less: a body just under it is parsed (extra keys are ignored)."""
    body = _big_body(endpoint, 0)
    body = _big_body(endpoint, AUTH_LIMIT - len(body) - 10)
    assert len(body) < AUTH_LIMIT
    resp = await post_raw(seeded, endpoint, body)
    assert resp.status != 413, await resp.text()
    assert resp.status < 500, await resp.text()


@pytest.mark.parametrize("endpoint", ENDPOINTS)
async def test_chunked_body_over_64k_is_413(seeded: TestClient[Any, Any], endpoint: str) -> None:
    """No Content-Length (chunked transfer): the limit is enforced while reading."""
    before = await row_counts(seeded)
    payload = _big_body(endpoint, 4 * AUTH_LIMIT)

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(payload), 4096):
            yield payload[start : start + 4096]
            await asyncio.sleep(0)

    resp = await seeded.post(
        AUTH + endpoint, data=chunks(), headers={"Content-Type": "application/json"}
    )
    assert "Content-Length" not in resp.request_info.headers
    await assert_envelope(resp, 413)
    assert await row_counts(seeded) == before


async def _raw_exchange(client: TestClient[Any, Any], request: bytes) -> bytes:
    """Send raw bytes, return everything the server answers before it closes or 5 s pass."""
    host, port = client.server.host, client.server.port
    assert port is not None
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(request)
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        match = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", head)
        assert match is not None, head
        body = await asyncio.wait_for(reader.readexactly(int(match.group(1))), 5)
        return head + body
    finally:
        writer.close()


@pytest.mark.parametrize("endpoint", ENDPOINTS)
async def test_declared_oversized_body_answered_without_waiting(
    seeded: TestClient[Any, Any], endpoint: str
) -> None:
    """Content-Length claims 10 MiB but only a few bytes arrive: 413 at once, no hang."""
    before = await row_counts(seeded)
    request = (
        f"POST {AUTH}{endpoint} HTTP/1.1\r\nHost: localhost\r\n"
        'Content-Type: application/json\r\nContent-Length: 10485760\r\n\r\n{"email": '
    ).encode()
    answer = await _raw_exchange(seeded, request)
    status_line = answer.split(b"\r\n", 1)[0]
    assert status_line.startswith(b"HTTP/1.1 413"), answer[:300]
    body = json.loads(answer.split(b"\r\n\r\n", 1)[1])
    assert body["statusCode"] == 413 and body["errors"][0] == "Request body too large"
    assert await row_counts(seeded) == before


@pytest.mark.parametrize("endpoint", ENDPOINTS)
async def test_chunked_body_sent_raw_over_limit(
    seeded: TestClient[Any, Any], endpoint: str
) -> None:
    """Hand-written chunked encoding, no Content-Length, 128 KiB in 8 KiB chunks → 413."""
    chunk = b"x" * 8192
    parts = [f"POST {AUTH}{endpoint} HTTP/1.1\r\nHost: localhost\r\n".encode()]
    parts.append(b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
    parts.append(b'b\r\n{"email": "\r\n')
    for _ in range(16):
        parts.append(b"2000\r\n" + chunk + b"\r\n")
    parts.append(b"0\r\n\r\n")
    answer = await _raw_exchange(seeded, b"".join(parts))
    assert answer.startswith(b"HTTP/1.1 413"), answer[:300]


# --- wrong field types, missing fields ----------------------------------------------------

WRONG_VALUES: dict[str, Any] = {
    "int": 12345,
    "float": 1.5,
    "true": True,
    "false": False,
    "null": None,
    "list": ["a@b.co"],
    "empty-list": [],
    "object": {"$ne": ""},
}


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize("kind", sorted(WRONG_VALUES))
async def test_wrong_field_types(seeded: TestClient[Any, Any], endpoint: str, kind: str) -> None:
    """Every string field given another JSON type → 400 naming the field; nothing written."""
    before = await row_counts(seeded)
    body: dict[str, Any] = dict(VALID_BODIES[endpoint])
    for field in body:
        body[field] = WRONG_VALUES[kind]
    resp = await seeded.post(AUTH + endpoint, json=body)
    details = [f"{field}: must be a string" for field in VALID_BODIES[endpoint]]
    await assert_envelope(resp, 400, *details)
    assert await row_counts(seeded) == before


@pytest.mark.parametrize("endpoint", ENDPOINTS)
async def test_wrong_type_in_camel_case_field(seeded: TestClient[Any, Any], endpoint: str) -> None:
    """The camelCase spelling is validated the same way and reported with the snake name."""
    fields = REQUIRED_FIELDS[endpoint]
    camel = {
        "".join(p if i == 0 else p.capitalize() for i, p in enumerate(f.split("_"))): 7
        for f in fields
    }
    resp = await seeded.post(AUTH + endpoint, json=camel)
    await assert_envelope(resp, 400, *(f"{f}: must be a string" for f in fields))


@pytest.mark.parametrize("endpoint", ENDPOINTS)
async def test_missing_fields(seeded: TestClient[Any, Any], endpoint: str) -> None:
    before = await row_counts(seeded)
    resp = await seeded.post(AUTH + endpoint, json={})
    details = [f"{field}: is required" for field in REQUIRED_FIELDS[endpoint]]
    await assert_envelope(resp, 400, *details)
    assert await row_counts(seeded) == before


@pytest.mark.parametrize("endpoint", ENDPOINTS)
async def test_each_required_field_missing(seeded: TestClient[Any, Any], endpoint: str) -> None:
    for field in REQUIRED_FIELDS[endpoint]:
        before = await row_counts(seeded)
        body = {k: v for k, v in VALID_BODIES[endpoint].items() if k != field}
        resp = await seeded.post(AUTH + endpoint, json=body)
        await assert_envelope(resp, 400, f"{field}: is required")
        assert await row_counts(seeded) == before


@pytest.mark.parametrize("endpoint", ENDPOINTS)
async def test_unknown_fields_only(seeded: TestClient[Any, Any], endpoint: str) -> None:
    resp = await seeded.post(AUTH + endpoint, json={"foo": "bar", "__proto__": {"x": 1}})
    await assert_envelope(resp, 400)


async def test_register_ignores_privileged_fields(seeded: TestClient[Any, Any]) -> None:
    """Mass assignment: is_admin / email_verified / id in the body change nothing."""
    body = {
        **VALID_BODIES["/register"],
        "email": "sneaky@example.com",
        "username": "sneaky",
        "is_admin": True,
        "isAdmin": True,
        "email_verified": True,
        "emailVerified": True,
        "is_active": False,
        "id": 1,
    }
    resp = await seeded.post(f"{AUTH}/register", json=body)
    assert resp.status == 201, await resp.text()
    user = (await resp.json())["user"]
    assert user["is_admin"] is False
    assert user["email_verified"] is False
    assert user["id"] != 1
    # Still unverified: login is refused.
    resp = await seeded.post(
        f"{AUTH}/login", json={"email": "sneaky@example.com", "password": body["password"]}
    )
    await assert_envelope(resp, 403)


OVERLONG_CASES = [
    ("/login", "email"),
    ("/login", "password"),
    ("/refresh", "refresh_token"),
    ("/register", "password"),
    ("/register", "username"),
    ("/register", "first_name"),
    ("/register", "email"),
    ("/resend-verification", "email"),
]


def _overlong(endpoint: str, field: str) -> dict[str, str]:
    body = dict(VALID_BODIES[endpoint])
    body[field] = "a" * 9000 + ("@example.com" if field == "email" else "")
    return body


@pytest.mark.parametrize(("endpoint", "field"), OVERLONG_CASES)
async def test_overlong_fields(seeded: TestClient[Any, Any], endpoint: str, field: str) -> None:
    """A 9000-character value: 400 naming the field (never stored, never a 500)."""
    before = await row_counts(seeded)
    resp = await seeded.post(AUTH + endpoint, json=_overlong(endpoint, field))
    envelope = await assert_envelope(resp, 400)
    assert any(e.startswith(f"{field}: ") for e in envelope["errors"][1:]), envelope
    assert await row_counts(seeded) == before


@pytest.mark.parametrize(
    ("endpoint", "field"),
    [("/login", "email"), ("/login", "password"), ("/refresh", "refresh_token")],
)
async def test_overlong_detail_wording(
    client: TestClient[Any, Any], endpoint: str, field: str
) -> None:
    resp = await client.post(AUTH + endpoint, json=_overlong(endpoint, field))
    await assert_envelope(resp, 400, f"{field}: is too long")


# --- unicode, NUL and control characters ---------------------------------------------------

REGISTER_BAD_STRINGS: list[tuple[str, str]] = [
    ("email", "nul\x00@example.com"),
    ("email", "not an email"),
    ("email", "two@@example.com"),
    ("email", "a@b"),
    ("email", ""),
    ("email", "line\nbreak@example.com"),
    ("username", "nul\x00name"),
    ("username", "bell\x07"),
    ("username", "rtl\u202eoverride"),
    ("username", "zero\u200bwidth"),
    ("username", "   "),
    ("username", ""),
    ("first_name", "tab\x1bescape"),
    ("last_name", "nul\x00"),
    ("password", "pass\x00word123"),
    ("password", "short"),
    ("username", "lone\ud800surrogate"),
    ("first_name", "lone\udfffsurrogate"),
]


@pytest.mark.parametrize(("field", "value"), REGISTER_BAD_STRINGS)
async def test_register_bad_strings(seeded: TestClient[Any, Any], field: str, value: str) -> None:
    before = await row_counts(seeded)
    body = {**VALID_BODIES["/register"], field: value}
    # json.dumps keeps lone surrogates as \\udXXX escapes: valid JSON, invalid Unicode.
    resp = await post_raw(seeded, "/register", json.dumps(body).encode())
    envelope = await assert_envelope(resp, 400)
    assert any(e.startswith(f"{field}: ") for e in envelope["errors"][1:]), envelope
    assert await row_counts(seeded) == before


@pytest.mark.parametrize(
    ("field", "value"),
    [("email", "lone\ud800@example.com"), ("password", "lone\ud800password")],
)
async def test_register_lone_surrogates(
    seeded: TestClient[Any, Any], field: str, value: str
) -> None:
    before = await row_counts(seeded)
    body = {**VALID_BODIES["/register"], "email": "other@example.com", "username": "other"}
    body[field] = value
    resp = await post_raw(seeded, "/register", json.dumps(body).encode())
    await assert_envelope(resp, 400)
    assert await row_counts(seeded) == before


async def test_register_accepts_unicode(seeded: TestClient[Any, Any]) -> None:
    """Unicode is valid where SPEC says so: not every non-ASCII string is 'bad input'."""
    body = {
        "email": "ayşe@example.com",
        "password": "şifre-ğüç-密码",
        "username": "Ayşe Öztürk",
        "first_name": "Ayşe",
        "last_name": "Öztürk 🌙",
    }
    resp = await seeded.post(f"{AUTH}/register", json=body)
    assert resp.status == 201, await resp.text()
    user = (await resp.json())["user"]
    assert user["username"] == "Ayşe Öztürk" and user["last_name"] == "Öztürk 🌙"


@pytest.mark.parametrize(
    "body",
    [
        {"email": "nul\x00@example.com", "password": "x"},
        {"email": "beyhan@beyhan.dev", "password": DEFAULT_PASSWORD + "\x00"},
        {"email": "beyhan@beyhan.dev\x00", "password": DEFAULT_PASSWORD},
        {"email": "ünïcödé@exämple.com", "password": "пароль"},
        {"email": "beyhan@beyhan.dev", "password": "lone\ud800"},
        {"email": "", "password": ""},
    ],
    ids=[
        "nul-email",
        "nul-password-suffix",
        "nul-email-suffix",
        "unicode",
        "surrogate-pw",
        "empty",
    ],
)
async def test_login_bad_strings(
    seeded: TestClient[Any, Any],
    body: dict[str, str],
    backend: Backend,
    request: pytest.FixtureRequest,
) -> None:
    """Never a 500 and never a session; a NUL suffix does not open the real account."""
    before = await row_counts(seeded)
    resp = await post_raw(seeded, "/login", json.dumps(body).encode())
    await assert_envelope(resp, {400, 401})
    assert await row_counts(seeded) == before


async def test_login_lone_surrogate_email(seeded: TestClient[Any, Any]) -> None:
    resp = await post_raw(
        seeded, "/login", json.dumps({"email": "lone\ud800@example.com", "password": "x"}).encode()
    )
    await assert_envelope(resp, {400, 401})


@pytest.mark.parametrize(
    "token",
    [
        "\x00",
        "a.b.c",
        "eyJhbGciOiJub25lIn0.eyJ0b2tlbl90eXBlIjoicmVmcmVzaCJ9.",
        "ünïcödé.tökén.x",
        "...",
        " ",
    ],
)
async def test_refresh_bad_tokens(seeded: TestClient[Any, Any], token: str) -> None:
    before = await row_counts(seeded)
    resp = await seeded.post(f"{AUTH}/refresh", json={"refresh_token": token})
    await assert_envelope(resp, {400, 401})
    assert await row_counts(seeded) == before


async def test_refresh_lone_surrogate_token(seeded: TestClient[Any, Any]) -> None:
    resp = await post_raw(seeded, "/refresh", json.dumps({"refresh_token": "a.b\ud800.c"}).encode())
    await assert_envelope(resp, {400, 401})


@pytest.mark.parametrize(
    ("email", "detail"),
    [
        ("nul\x00@example.com", "email: must not contain NUL characters"),
        ("no-at-sign", "email: not a valid email address"),
        ("", "email: not a valid email address"),
        ("a@b", "email: not a valid email address"),
        ("tab\t@example.com", "email: not a valid email address"),
    ],
)
async def test_resend_bad_email(seeded: TestClient[Any, Any], email: str, detail: str) -> None:
    before = await row_counts(seeded)
    resp = await seeded.post(f"{AUTH}/resend-verification", json={"email": email})
    await assert_envelope(resp, 400, detail)
    assert await row_counts(seeded) == before


async def test_resend_lone_surrogate_email(seeded: TestClient[Any, Any]) -> None:
    resp = await post_raw(
        seeded,
        "/resend-verification",
        json.dumps({"email": "lone\ud800@example.com"}).encode(),
    )
    await assert_envelope(resp, 400)


# --- routing errors -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    ["/no/such/path", "/", "/api/v1", "/api/v1/authx", "/%2e%2e/etc/passwd", "/healthz/x"],
)
async def test_unknown_path_is_404_envelope(client: TestClient[Any, Any], path: str) -> None:
    for method in ("GET", "POST", "DELETE"):
        resp = await client.request(method, path)
        await assert_envelope(resp, 404)


@pytest.mark.parametrize(
    "path", ["/api/v1/auth/nope", "/api/v1/auth/", "/api/v1/auth/login/extra", "/api/v1/auth/LOGIN"]
)
async def test_unknown_path_under_auth_is_404_envelope(
    client: TestClient[Any, Any], path: str
) -> None:
    for method in ("GET", "POST"):
        resp = await client.request(method, path, json={})
        await assert_envelope(resp, 404)


@pytest.mark.parametrize("method", ["GET", "PUT", "PATCH", "DELETE"])
@pytest.mark.parametrize("endpoint", ENDPOINTS)
async def test_wrong_method_is_405_with_allow(
    client: TestClient[Any, Any], method: str, endpoint: str
) -> None:
    resp = await client.request(method, AUTH + endpoint)
    await assert_envelope(resp, 405)
    allow = {m.strip() for m in resp.headers.get("Allow", "").split(",") if m.strip()}
    assert allow == {"POST"}, resp.headers.get("Allow")


async def test_get_login_is_405_allow_post(client: TestClient[Any, Any]) -> None:
    resp = await client.get(f"{AUTH}/login")
    body = await assert_envelope(resp, 405)
    assert resp.headers["Allow"] == "POST"
    assert body["statusCode"] == 405


async def test_post_on_get_endpoint_is_405(client: TestClient[Any, Any]) -> None:
    resp = await client.post(f"{AUTH}/me", json={})
    await assert_envelope(resp, 405)
    assert "GET" in resp.headers["Allow"]


# --- crashes ------------------------------------------------------------------------------


class ExplodingStore:
    """A store whose every method fails with an internal message the client must never see."""

    def __getattr__(self, name: str) -> Callable[..., Any]:
        async def explode(*args: Any, **kwargs: Any) -> Any:
            raise RuntimeError("secret internals: redis://admin:hunter2@10.0.0.7")

        return explode


def _exploding_sessions(*args: Any, **kwargs: Any) -> Any:
    raise RuntimeError("secret internals: postgresql://admin:hunter2@10.0.0.7/prod")


async def test_crash_in_store_is_generic_500(
    client: TestClient[Any, Any], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    services = client.app[SERVICES]
    monkeypatch.setattr(services, "store", ExplodingStore())
    monkeypatch.setattr(services.auth_service(), "store", ExplodingStore())
    monkeypatch.setattr(services.auth_service().limiter, "store", ExplodingStore())
    with caplog.at_level(logging.ERROR):
        resp = await client.post(
            f"{AUTH}/resend-verification",
            json={"email": "someone@example.com"},
            headers={"Origin": "http://localhost:8080"},
        )
        raw = await resp.text()
        body = await assert_envelope(resp, 500)
    assert "secret internals" not in raw
    assert "hunter2" not in raw
    assert "RuntimeError" not in raw and "Traceback" not in raw
    assert len(body["errors"]) == 1, body
    assert body["errors"][0] and "secret" not in body["errors"][0]
    assert "secret internals" in caplog.text
    assert resp.headers.get("X-Request-Id")
    # The edge policy still applies to a crash: a browser can read the 500.
    assert resp.headers.get("Access-Control-Allow-Origin") == "http://localhost:8080"


async def test_crash_in_database_is_generic_500(
    client: TestClient[Any, Any], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(client.app[SERVICES].auth_service(), "sessions", _exploding_sessions)
    with caplog.at_level(logging.ERROR):
        resp = await client.post(f"{AUTH}/login", json={"email": "a@b.co", "password": "x"})
        raw = await resp.text()
        await assert_envelope(resp, 500)
    assert "secret internals" not in raw and "hunter2" not in raw
    assert "secret internals" in caplog.text
    # The gateway keeps serving after a crash.
    monkeypatch.undo()
    resp = await client.get("/healthz")
    assert resp.status == 200


# --- X-Request-Id ------------------------------------------------------------------------


async def test_request_id_generated_when_absent(client: TestClient[Any, Any]) -> None:
    ids = set()
    for path in ("/healthz", f"{AUTH}/nope", f"{AUTH}/login"):
        resp = await client.get(path)
        rid = resp.headers.get("X-Request-Id")
        assert rid and re.fullmatch(r"[A-Za-z0-9._:@/+=-]{8,128}", rid), rid
        ids.add(rid)
    assert len(ids) == 3


@pytest.mark.parametrize(
    "sent",
    ["abc-123", "0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0", "req_42.trace:7", "x" * 128],
)
async def test_request_id_kept_when_sane(client: TestClient[Any, Any], sent: str) -> None:
    for path, method in (("/healthz", "GET"), (f"{AUTH}/login", "POST"), ("/missing", "GET")):
        resp = await client.request(method, path, headers={"X-Request-Id": sent}, json={})
        assert resp.headers.get("X-Request-Id") == sent


@pytest.mark.parametrize(
    "sent",
    [
        "x" * 300,
        "has spaces in it",
        "semi;colon",
        'quote"d',
        "<script>alert(1)</script>",
        "",
        "üñí",
    ],
    ids=["300-chars", "spaces", "semicolon", "quote", "html", "empty", "non-ascii"],
)
async def test_request_id_replaced_when_garbage(client: TestClient[Any, Any], sent: str) -> None:
    headers = {"X-Request-Id": sent.encode("utf-8").decode("latin-1")}
    resp = await client.post(f"{AUTH}/login", headers=headers, json={})
    await assert_envelope(resp, 400)
    rid = resp.headers.get("X-Request-Id")
    assert rid and rid != headers["X-Request-Id"]
    assert re.fullmatch(r"[A-Za-z0-9._:@/+=-]{8,128}", rid), rid


async def test_request_id_header_injection_impossible(client: TestClient[Any, Any]) -> None:
    """A raw request whose id tries to smuggle a header line gets a fresh id."""
    host, port = client.server.host, client.server.port
    assert port is not None
    async with ClientSession() as session:
        resp = await session.get(
            f"http://{host}:{port}/healthz", headers={"X-Request-Id": "a%0d%0aSet-Cookie:x=1"}
        )
        assert resp.status == 200
        assert "Set-Cookie" not in resp.headers
        assert resp.headers["X-Request-Id"] != "a%0d%0aSet-Cookie:x=1"
