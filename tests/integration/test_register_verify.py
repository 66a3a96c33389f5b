"""POST /register, GET /verify-email and POST /resend-verification (SPEC §2) on both backends."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import unicodedata
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from auth.models import OneTimeToken, User
from gateway.appkeys import SERVICES
from tests.fixtures.envelopes import compact, envelope
from tests.fixtures.factories import create_user
from tests.fixtures.smtp import Mailbox, text_body

Client = TestClient[Any, Any]
GatewayClient = Callable[..., Any]

AUTH = "/api/v1/auth"
REGISTER = f"{AUTH}/register"
VERIFY = f"{AUTH}/verify-email"
RESEND = f"{AUTH}/resend-verification"
LOGIN = f"{AUTH}/login"

REGISTERED = "registration successful, please verify your email before login"
VERIFIED = {"message": "email verified successfully"}
RESENT = {"message": "verification email has been sent"}
DEFAULT_VERIFY_URL = "http://localhost:8080/api/v1/auth/verify-email?token="

PASSWORD = "s3cret-Passw0rd"
EMAIL = "beyhan@beyhan.dev"
USERNAME = "Beyhan Oğur"


def registration(**overrides: Any) -> dict[str, Any]:
    """A valid /register body (snake_case), with ``overrides`` applied."""
    body: dict[str, Any] = {
        "email": EMAIL,
        "first_name": "Beyhan",
        "last_name": "Oğur",
        "password": PASSWORD,
        "username": USERNAME,
    }
    body.update(overrides)
    return body


def fields_in(details: list[str]) -> set[str]:
    """The field names of ``"field: problem"`` details."""
    out = set()
    for detail in details:
        field, sep, problem = detail.partition(": ")
        assert sep and field and problem, f"not a 'field: problem' detail: {detail!r}"
        out.add(field)
    return out


def engine_of(client: Client) -> AsyncEngine:
    engine: AsyncEngine | None = client.app[SERVICES].engine
    assert engine is not None
    return engine


async def user_count(client: Client) -> int:
    async with engine_of(client).connect() as conn:
        return int(await conn.scalar(select(func.count()).select_from(User)) or 0)


async def token_hashes(client: Client) -> list[str]:
    async with engine_of(client).connect() as conn:
        rows = await conn.execute(select(OneTimeToken.token_hash).order_by(OneTimeToken.id))
        return [row[0] for row in rows]


async def drain(client: Client) -> None:
    """Wait until every mail the gateway queued has reached the SMTP sink."""
    await client.app[SERVICES].auth_service().mailer.drain()


def token_of(message: Any, prefix: str = DEFAULT_VERIFY_URL) -> str:
    """The 64-hex token of the verification link in a mail."""
    text = text_body(message)
    match = re.search(re.escape(prefix) + r"([0-9a-f]{64})(?![0-9A-Za-z])", text)
    assert match, f"no verification link {prefix}<64 hex> in:\n{text}"
    return match.group(1)


async def register(client: Client, **overrides: Any) -> dict[str, Any]:
    resp = await client.post(REGISTER, json=registration(**overrides))
    assert resp.status == 201, await resp.text()
    body: dict[str, Any] = await resp.json()
    return body


async def register_and_get_token(
    client: Client, mailbox: Mailbox, **overrides: Any
) -> tuple[dict[str, Any], str]:
    body = await register(client, **overrides)
    address = overrides.get("email", EMAIL)
    messages = await mailbox.wait_for(address)
    assert len(messages) == 1
    return body, token_of(messages[0])


async def verify(client: Client, token: str) -> ClientResponse:
    return await client.get(VERIFY, params={"token": token})


async def login_status(client: Client, email: str = EMAIL, password: str = PASSWORD) -> int:
    resp = await client.post(LOGIN, json={"email": email, "password": password})
    await resp.read()
    return resp.status


# --- POST /register ---------------------------------------------------------------------------


async def test_register_seed_example(client: Client, mailbox: Mailbox) -> None:
    """The seed request gives the seed answer, byte for byte (but the id)."""
    resp = await client.post(
        REGISTER,
        json={
            "email": "string@strind.com",
            "first_name": "string",
            "last_name": "string",
            "password": "string",
            "username": "string",
        },
    )
    raw = await resp.read()
    assert resp.status == 201, raw
    assert resp.headers["Content-Type"] == "application/json; charset=utf-8"
    body = json.loads(raw)
    assert isinstance(body["user"]["id"], int)
    expected = {
        "message": REGISTERED,
        "user": {
            "email": "string@strind.com",
            "email_verified": False,
            "first_name": "string",
            "id": body["user"]["id"],
            "is_admin": False,
            "last_name": "string",
            "username": "string",
        },
    }
    assert body == expected
    assert raw == compact(expected)
    assert int(resp.headers["Content-Length"]) == len(raw)
    await mailbox.wait_for("string@strind.com")


async def test_register_unicode_username(client: Client, mailbox: Mailbox) -> None:
    resp = await client.post(REGISTER, json=registration())
    raw = await resp.read()
    assert resp.status == 201, raw
    body = json.loads(raw)
    assert body == {
        "message": REGISTERED,
        "user": {
            "email": EMAIL,
            "email_verified": False,
            "first_name": "Beyhan",
            "id": body["user"]["id"],
            "is_admin": False,
            "last_name": "Oğur",
            "username": "Beyhan Oğur",
        },
    }
    assert "Beyhan Oğur".encode() in raw  # raw UTF-8, not \u escapes
    assert await user_count(client) == 1


async def test_register_accepts_camel_case_fields(client: Client, mailbox: Mailbox) -> None:
    resp = await client.post(
        REGISTER,
        json={
            "email": EMAIL,
            "firstName": "Beyhan",
            "lastName": "Oğur",
            "password": PASSWORD,
            "username": USERNAME,
        },
    )
    assert resp.status == 201, await resp.text()
    user = (await resp.json())["user"]
    assert user["first_name"] == "Beyhan"
    assert user["last_name"] == "Oğur"
    assert user["username"] == USERNAME


async def test_register_ignores_mass_assignment(client: Client, mailbox: Mailbox) -> None:
    body, token = await register_and_get_token(
        client,
        mailbox,
        is_admin=True,
        isAdmin=True,
        email_verified=True,
        emailVerified=True,
        is_active=False,
        id=999,
    )
    assert body["user"]["is_admin"] is False
    assert body["user"]["email_verified"] is False
    assert body["user"]["id"] != 999
    # Not verified: login is refused until the link is used.
    resp = await client.post(LOGIN, json={"email": EMAIL, "password": PASSWORD})
    assert "email not verified" in await envelope(resp, 403)
    assert (await verify(client, token)).status == 200
    resp = await client.post(LOGIN, json={"email": EMAIL, "password": PASSWORD})
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["user"]["is_admin"] is False


@pytest.mark.parametrize(
    "second_email",
    ["BEYHAN@BEYHAN.DEV", "Beyhan@Beyhan.Dev", "beyhan@beyhan.dev", " beyhan@beyhan.dev "],
)
async def test_register_duplicate_email_is_409(
    client: Client, mailbox: Mailbox, second_email: str
) -> None:
    await register(client)
    resp = await client.post(
        REGISTER, json=registration(email=second_email, username="someone else")
    )
    errors = await envelope(resp, 409)
    assert "email" in fields_in(errors[1:])
    assert await user_count(client) == 1


@pytest.mark.parametrize(
    "second_username",
    [
        "Beyhan Oğur",
        "beyhan oğur",
        "BEYHAN OĞUR",
        "  Beyhan Oğur  ",
        "Beyhan   Oğur",
        unicodedata.normalize("NFD", "Beyhan Oğur"),
    ],
    ids=["same", "lower", "upper", "padded", "inner-spaces", "nfd"],
)
async def test_register_duplicate_username_is_409(
    client: Client, mailbox: Mailbox, second_username: str
) -> None:
    await register(client)
    resp = await client.post(
        REGISTER, json=registration(email="other@beyhan.dev", username=second_username)
    )
    errors = await envelope(resp, 409)
    assert "username" in fields_in(errors[1:])
    assert await user_count(client) == 1


INVALID_BODIES: list[tuple[str, dict[str, Any], set[str]]] = [
    ("bad-email-no-at", registration(email="not-an-email"), {"email"}),
    ("bad-email-no-domain", registration(email="beyhan@"), {"email"}),
    ("bad-email-space", registration(email="bey han@beyhan.dev"), {"email"}),
    ("bad-email-empty", registration(email=""), {"email"}),
    ("short-password", registration(password="12345"), {"password"}),
    ("empty-password", registration(password=""), {"password"}),
    ("missing-email", {k: v for k, v in registration().items() if k != "email"}, {"email"}),
    (
        "missing-password",
        {k: v for k, v in registration().items() if k != "password"},
        {"password"},
    ),
    (
        "missing-username",
        {k: v for k, v in registration().items() if k != "username"},
        {"username"},
    ),
    (
        "missing-first-name",
        {k: v for k, v in registration().items() if k != "first_name"},
        {"first_name"},
    ),
    ("empty-object", {}, {"email", "password", "username", "first_name"}),
    ("email-number", registration(email=12345), {"email"}),
    ("email-null", registration(email=None), {"email"}),
    ("email-bool", registration(email=True), {"email"}),
    ("password-number", registration(password=12345678), {"password"}),
    ("username-list", registration(username=["Beyhan"]), {"username"}),
    ("first-name-object", registration(first_name={"x": 1}), {"first_name"}),
    ("username-too-long", registration(username="x" * 65), {"username"}),
    ("username-blank", registration(username="   "), {"username"}),
    (
        "several-at-once",
        registration(email="nope", password="1", username=""),
        {"email", "password", "username"},
    ),
]


@pytest.mark.parametrize(
    ("body", "fields"),
    [(body, fields) for _, body, fields in INVALID_BODIES],
    ids=[name for name, _, _ in INVALID_BODIES],
)
async def test_register_invalid_fields_are_400(
    client: Client, mailbox: Mailbox, body: dict[str, Any], fields: set[str]
) -> None:
    resp = await client.post(REGISTER, json=body)
    errors = await envelope(resp, 400)
    assert fields_in(errors[1:]) == fields, errors
    assert await user_count(client) == 0
    assert await token_hashes(client) == []
    await drain(client)
    assert mailbox.messages == []


async def test_register_bad_email_detail_text(client: Client, mailbox: Mailbox) -> None:
    resp = await client.post(REGISTER, json=registration(email="not-an-email"))
    assert await envelope(resp, 400) == ["Validation failed", "email: not a valid email address"]


@pytest.mark.parametrize(
    ("raw", "content_type"),
    [
        (b'{"email": "beyhan@beyhan.dev",', "application/json"),
        (b"[1, 2, 3]", "application/json"),
        (b"", "application/json"),
    ],
    ids=["truncated", "array", "empty"],
)
async def test_register_malformed_body_is_400_and_writes_nothing(
    client: Client, mailbox: Mailbox, raw: bytes, content_type: str
) -> None:
    resp = await client.post(REGISTER, data=raw, headers={"Content-Type": content_type})
    await envelope(resp, 400)
    assert await user_count(client) == 0


async def test_register_nothing_written_on_400(client: Client, mailbox: Mailbox) -> None:
    resp = await client.post(REGISTER, json=registration(password="123"))
    await envelope(resp, 400)
    assert await user_count(client) == 0
    assert await login_status(client, password="123") == 401
    # The address and username are still free.
    await register(client)
    assert await user_count(client) == 1


async def test_password_min_length_is_configurable(
    gateway_client: GatewayClient, mailbox: Mailbox
) -> None:
    client = await gateway_client(auth={"password": {"min_length": 10}})
    resp = await client.post(REGISTER, json=registration(password="123456789"))
    errors = await envelope(resp, 400)
    assert fields_in(errors[1:]) == {"password"}
    assert await user_count(client) == 0
    resp = await client.post(REGISTER, json=registration(password="1234567890"))
    assert resp.status == 201, await resp.text()


@pytest.mark.parametrize(
    ("password", "other"),
    [
        ("a" * 72 + "-first", "a" * 72 + "-second"),
        ("ğ" * 36 + "one", "ğ" * 36 + "two"),  # 72 bytes of UTF-8, then different
        ("p" * 100, "p" * 72),  # the other one is exactly the first 72 bytes
    ],
    ids=["ascii", "utf8", "prefix"],
)
async def test_password_is_not_truncated_at_72_bytes(
    client: Client, mailbox: Mailbox, password: str, other: str
) -> None:
    assert password.encode()[:72] == other.encode()[:72]
    _, token = await register_and_get_token(client, mailbox, password=password)
    assert (await verify(client, token)).status == 200
    assert await login_status(client, password=other) == 401
    assert await login_status(client, password=password) == 200


# --- verification mail and GET /verify-email --------------------------------------------------


async def test_verification_mail_link_and_flow(client: Client, mailbox: Mailbox) -> None:
    body, token = await register_and_get_token(client, mailbox)
    message = mailbox.to(EMAIL)[0]
    assert EMAIL in str(message["To"])
    assert len(token) == 64

    resp = await client.post(LOGIN, json={"email": EMAIL, "password": PASSWORD})
    errors = await envelope(resp, 403)
    assert "email not verified" in errors

    resp = await verify(client, token)
    raw = await resp.read()
    assert resp.status == 200, raw
    assert json.loads(raw) == VERIFIED
    assert raw == compact(VERIFIED)

    resp = await client.post(LOGIN, json={"email": EMAIL, "password": PASSWORD})
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["user"]["id"] == body["user"]["id"]


async def test_verification_link_uses_configured_url(
    gateway_client: GatewayClient, mailbox: Mailbox
) -> None:
    prefix = "https://app.example.test/confirm?t="
    client = await gateway_client(email={"verify_url": prefix + "{token}&lang=tr"})
    await register(client)
    (message,) = await mailbox.wait_for(EMAIL)
    token = token_of(message, prefix)
    assert f"{prefix}{token}&lang=tr" in text_body(message)
    assert (await verify(client, token)).status == 200


async def test_verification_token_is_stored_only_as_sha256(
    client: Client, mailbox: Mailbox
) -> None:
    _, token = await register_and_get_token(client, mailbox)
    (stored,) = await token_hashes(client)
    assert stored != token
    assert stored == hashlib.sha256(token.encode()).hexdigest()


async def test_verification_token_works_once(client: Client, mailbox: Mailbox) -> None:
    _, token = await register_and_get_token(client, mailbox)
    assert (await verify(client, token)).status == 200
    await envelope(await verify(client, token), 404)


@pytest.mark.parametrize(
    "token",
    [
        "abc",
        "z" * 64,
        "0" * 63,
        "0" * 65,
        "A" * 64,
        "0" * 64 + " ",
        "",
        "' OR 1=1 --",
    ],
    ids=["short", "not-hex", "63", "65", "upper", "trailing-space", "empty", "sql"],
)
async def test_verify_malformed_token_is_400(client: Client, mailbox: Mailbox, token: str) -> None:
    await envelope(await verify(client, token), 400)


async def test_verify_without_token_is_400(client: Client, mailbox: Mailbox) -> None:
    errors = await envelope(await client.get(VERIFY), 400)
    assert "token" in fields_in(errors[1:])


async def test_verify_unknown_token_is_404(client: Client, mailbox: Mailbox) -> None:
    await register(client)
    await envelope(await verify(client, "0123456789abcdef" * 4), 404)
    assert await login_status(client) == 403


async def test_verify_expired_token_is_404(gateway_client: GatewayClient, mailbox: Mailbox) -> None:
    client = await gateway_client(auth={"email_verification_ttl": "1s"})
    _, token = await register_and_get_token(client, mailbox)
    await asyncio.sleep(1.2)
    await envelope(await verify(client, token), 404)
    assert await login_status(client) == 403


# --- POST /resend-verification ----------------------------------------------------------------


async def resend(client: Client, email: str) -> bytes:
    resp = await client.post(RESEND, json={"email": email})
    raw = await resp.read()
    assert resp.status == 200, raw
    assert json.loads(raw) == RESENT
    return raw


async def test_resend_same_answer_for_every_address(client: Client, mailbox: Mailbox) -> None:
    await create_user(client, email="verified@beyhan.dev", username="verified")
    await register(client, email="pending@beyhan.dev", username="pending")
    await mailbox.wait_for("pending@beyhan.dev")
    await drain(client)
    mailbox.clear()

    answers = [
        await resend(client, "nobody@beyhan.dev"),
        await resend(client, "verified@beyhan.dev"),
        await resend(client, "pending@beyhan.dev"),
    ]
    assert answers[0] == answers[1] == answers[2] == compact(RESENT)

    await mailbox.wait_for("pending@beyhan.dev")
    await drain(client)
    assert len(mailbox.messages) == 1
    assert mailbox.to("nobody@beyhan.dev") == []
    assert mailbox.to("verified@beyhan.dev") == []


async def test_resend_replaces_the_old_token(client: Client, mailbox: Mailbox) -> None:
    _, old = await register_and_get_token(client, mailbox)
    await resend(client, "BEYHAN@beyhan.dev")  # emails compare case-insensitively
    messages = await mailbox.wait_for(EMAIL, count=2)
    new = token_of(messages[1])
    assert new != old
    await envelope(await verify(client, old), 404)
    resp = await verify(client, new)
    assert resp.status == 200, await resp.text()
    assert await login_status(client) == 200


async def test_resend_is_rate_limited_silently(client: Client, mailbox: Mailbox) -> None:
    await register_and_get_token(client, mailbox)
    first = await resend(client, EMAIL)
    await mailbox.wait_for(EMAIL, count=2)
    second = await resend(client, EMAIL)
    assert first == second
    await drain(client)
    await asyncio.sleep(0.1)
    assert len(mailbox.to(EMAIL)) == 2
    # The token of the last mail that was sent still works.
    assert (await verify(client, token_of(mailbox.to(EMAIL)[1]))).status == 200


async def test_resend_invalid_email_is_400(client: Client, mailbox: Mailbox) -> None:
    errors = await envelope(await client.post(RESEND, json={"email": 42}), 400)
    assert fields_in(errors[1:]) == {"email"}


async def test_resend_for_deactivated_user_sends_nothing(client: Client, mailbox: Mailbox) -> None:
    body = await register(client)
    await mailbox.wait_for(EMAIL)
    async with engine_of(client).begin() as conn:
        await conn.execute(
            update(User).where(User.id == body["user"]["id"]).values(is_active=False)
        )
    await drain(client)
    mailbox.clear()
    assert await resend(client, EMAIL) == compact(RESENT)
    await drain(client)
    assert mailbox.messages == []


# --- edge cases that must never be a 500 ------------------------------------------------------


async def test_concurrent_registrations_of_one_email(client: Client, mailbox: Mailbox) -> None:
    responses = await asyncio.gather(
        *(client.post(REGISTER, json=registration(username=f"user {i}")) for i in range(6))
    )
    statuses = sorted(r.status for r in responses)
    assert statuses == [201, 409, 409, 409, 409, 409], statuses
    assert await user_count(client) == 1


@pytest.mark.parametrize(
    "username",
    ["ß" * 40, "\ufdfa" * 4, "ğ" * 64],
    ids=["sharp-s-casefolds-to-80", "nfkc-expands-to-72", "64-non-ascii"],
)
async def test_valid_username_whose_key_is_longer_is_accepted(
    client: Client, mailbox: Mailbox, request: pytest.FixtureRequest, username: str
) -> None:
    """A username of at most 64 characters is valid, whatever its normalised key's length."""
    key = " ".join(unicodedata.normalize("NFKC", username).casefold().split())
    assert len(key) >= len(username)
    resp = await client.post(REGISTER, json=registration(username=username))
    assert resp.status == 201, await resp.text()
    assert (await resp.json())["user"]["username"] == username


@pytest.mark.parametrize(
    "override",
    [{"password": "abcdef\ud800"}, {"email": "be\ud800@beyhan.dev"}],
    ids=["password", "email"],
)
async def test_register_lone_surrogate_is_400(
    client: Client, mailbox: Mailbox, override: dict[str, str]
) -> None:
    raw = json.dumps(registration(**override))  # ASCII JSON with a "\ud800" escape
    assert "\\ud800" in raw
    resp = await client.post(REGISTER, data=raw, headers={"Content-Type": "application/json"})
    errors = await envelope(resp, 400)
    assert fields_in(errors[1:]) == set(override)
    assert await user_count(client) == 0


async def test_resend_lone_surrogate_is_400(client: Client, mailbox: Mailbox) -> None:
    raw = json.dumps({"email": "be\ud800@beyhan.dev"})
    resp = await client.post(RESEND, data=raw, headers={"Content-Type": "application/json"})
    errors = await envelope(resp, 400)
    assert fields_in(errors[1:]) == {"email"}
