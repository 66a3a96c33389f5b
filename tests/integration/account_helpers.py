"""Helpers shared by the account-flow tests (email code, password reset, user admin)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from email.message import EmailMessage
from typing import Any

from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient
from sqlalchemy.ext.asyncio import AsyncEngine

from auth.service import AuthService
from gateway.appkeys import SERVICES
from tests.fixtures.smtp import Mailbox, text_body

Client = TestClient[Any, Any]
GatewayClient = Callable[..., Any]

AUTH = "/api/v1/auth"
LOGIN = f"{AUTH}/login"
ME = f"{AUTH}/me"
REFRESH = f"{AUTH}/refresh"
EMAIL_CODE = f"{AUTH}/email-code"
LOGIN_CODE = f"{AUTH}/login/email-code"
REGISTER_COMPLETE = f"{AUTH}/register/complete"
FORGOT = f"{AUTH}/password/forgot"
RESET = f"{AUTH}/password/reset"
CHANGE = f"{AUTH}/password/change"
USERS = f"{AUTH}/users"

CODE_SENT = {"message": "verification code has been sent"}
RESET_SENT = {"message": "password reset email has been sent"}
RESET_DONE = {"message": "password has been reset"}
LOGIN_KEYS = {"access_token", "refresh_token", "expires_in", "refresh_expires_in", "user"}
# Headers that differ between any two answers, whatever the address asked about.
VOLATILE_HEADERS = frozenset({"date", "x-request-id"})


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def service_of(client: Client) -> AuthService:
    service: AuthService = client.app[SERVICES].auth_service()
    return service


def engine_of(client: Client) -> AsyncEngine:
    engine: AsyncEngine | None = client.app[SERVICES].engine
    assert engine is not None
    return engine


async def drain(client: Client) -> None:
    """Wait until every mail the gateway queued has reached the SMTP sink."""
    await service_of(client).mailer.drain()


async def ok(resp: ClientResponse, status: int = 200) -> dict[str, Any]:
    """Assert the status and return the JSON body."""
    raw = await resp.text()
    assert resp.status == status, raw
    body: dict[str, Any] = json.loads(raw)
    return body


def code_in(message: EmailMessage) -> str:
    """The 6-digit code of a sign-in mail (from its text part)."""
    found = re.findall(r"(?<![0-9])([0-9]{6})(?![0-9])", text_body(message))
    assert len(found) == 1, text_body(message)
    return str(found[0])


def token_in(message: EmailMessage, prefix: str) -> str:
    """The 64-hex token of the link starting with ``prefix`` in a mail's text part."""
    body = text_body(message)
    match = re.search(re.escape(prefix) + r"([0-9a-f]{64})(?![0-9A-Za-z])", body)
    assert match, f"no link {prefix}<64 hex> in:\n{body}"
    return match.group(1)


def html_body(message: EmailMessage) -> str:
    """The text/html part of a message."""
    part = message.get_body(preferencelist=("html",))
    assert part is not None
    return str(part.get_content())


async def request_code(client: Client, mailbox: Mailbox, email: str, nth: int = 1) -> str:
    """POST /email-code and return the code of the ``nth`` mail to ``email``."""
    assert await ok(await client.post(EMAIL_CODE, json={"email": email})) == CODE_SENT
    messages = await mailbox.wait_for(email, count=nth)
    return code_in(messages[nth - 1])


def wrong(code: str) -> str:
    """A 6-digit code that is not ``code``."""
    return f"{(int(code) + 1) % 1_000_000:06d}"


def same_answer(a: tuple[int, dict[str, str], bytes], b: tuple[int, dict[str, str], bytes]) -> None:
    """Two answers are identical but for the headers that always differ."""
    assert a[0] == b[0]
    assert a[2] == b[2]
    strip = {k: v for k, v in a[1].items() if k.lower() not in VOLATILE_HEADERS}
    other = {k: v for k, v in b[1].items() if k.lower() not in VOLATILE_HEADERS}
    assert strip == other


async def answer(resp: ClientResponse) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and raw body of a response."""
    return resp.status, dict(resp.headers), await resp.read()
