"""POST /password/forgot, /password/reset and /password/change, end to end through the SMTP
sink, on both backends."""

from __future__ import annotations

import asyncio
import hashlib
import secrets

import pytest
from sqlalchemy import select

from auth.models import OneTimeToken, User
from tests.fixtures.envelopes import envelope
from tests.fixtures.factories import DEFAULT_PASSWORD, create_user, login
from tests.fixtures.smtp import Mailbox, text_body
from tests.integration.account_helpers import (
    CHANGE,
    FORGOT,
    LOGIN,
    LOGIN_KEYS,
    ME,
    REFRESH,
    RESET,
    RESET_DONE,
    RESET_SENT,
    Client,
    GatewayClient,
    answer,
    bearer,
    drain,
    engine_of,
    html_body,
    ok,
    request_code,
    same_answer,
    service_of,
    token_in,
)

EMAIL = "beyhan@beyhan.dev"
RESET_LINK = "http://localhost:8080/reset-password?token="
NEW_PASSWORD = "a brand new password"
BAD_TOKEN = "reset token is invalid, expired or already used"


async def forgot(client: Client, mailbox: Mailbox, email: str = EMAIL, nth: int = 1) -> str:
    """POST /password/forgot and return the token of the ``nth`` mail's link."""
    assert await ok(await client.post(FORGOT, json={"email": email})) == RESET_SENT
    messages = await mailbox.wait_for(email, count=nth)
    return token_in(messages[nth - 1], RESET_LINK)


async def login_status(client: Client, password: str, email: str = EMAIL) -> int:
    resp = await client.post(LOGIN, json={"email": email, "password": password})
    await resp.read()
    return resp.status


# --- POST /password/forgot --------------------------------------------------------------------


async def test_reset_mail_has_subject_text_and_html(client: Client, mailbox: Mailbox) -> None:
    await create_user(client)
    token = await forgot(client, mailbox)
    [message] = mailbox.to(EMAIL)
    assert message["Subject"] == "Reset your password"
    assert f'href="{RESET_LINK}{token}"' in html_body(message)
    assert "Hello Beyhan," in text_body(message)
    assert "1 hour" in text_body(message)


async def test_same_answer_for_every_address(client: Client, mailbox: Mailbox) -> None:
    await create_user(client)
    await create_user(client, email="gone@example.com", username="gone")
    await service_of(client).update_user("gone@example.com", is_active=False)
    known = await answer(await client.post(FORGOT, json={"email": EMAIL}))
    unknown = await answer(await client.post(FORGOT, json={"email": "nobody@example.com"}))
    inactive = await answer(await client.post(FORGOT, json={"email": "gone@example.com"}))
    same_answer(known, unknown)
    same_answer(known, inactive)
    assert known[2] == b'{"message":"password reset email has been sent"}'
    await drain(client)
    assert [m["To"] for m in mailbox.messages] == [EMAIL]


async def test_forgot_is_rate_limited_for_known_and_unknown(
    gateway_client: GatewayClient, mailbox: Mailbox
) -> None:
    client = await gateway_client(
        auth={"rate_limits": {"email_per_address": {"requests": 1, "per": "1h"}}}
    )
    await create_user(client)
    for address in (EMAIL, "nobody@example.com"):
        assert (await client.post(FORGOT, json={"email": address})).status == 200
        await envelope(await client.post(FORGOT, json={"email": address}), 429)


async def test_reset_tokens_are_stored_hashed(client: Client, mailbox: Mailbox) -> None:
    await create_user(client)
    token = await forgot(client, mailbox)
    async with engine_of(client).connect() as conn:
        rows = list(await conn.execute(select(OneTimeToken.token_hash, OneTimeToken.purpose)))
    assert rows == [(hashlib.sha256(token.encode()).hexdigest(), "password_reset")]


# --- POST /password/reset ---------------------------------------------------------------------


async def test_reset_sets_the_password_and_ends_every_session(
    client: Client, mailbox: Mailbox
) -> None:
    await create_user(client)
    first, second = await login(client), await login(client)
    token = await forgot(client, mailbox)
    resp = await client.post(RESET, json={"token": token, "password": NEW_PASSWORD})
    assert await ok(resp) == RESET_DONE
    assert await resp.read() == b'{"message":"password has been reset"}'
    assert await login_status(client, DEFAULT_PASSWORD) == 401
    assert await login_status(client, NEW_PASSWORD) == 200
    for tokens in (first, second):
        await envelope(await client.get(ME, headers=bearer(tokens["access_token"])), 401)
        resp = await client.post(REFRESH, json={"refresh_token": tokens["refresh_token"]})
        await envelope(resp, 401)
        # Proxied requests are refused too (they check the store, not the database).
        with pytest.raises(Exception, match="revoked"):
            await service_of(client).authenticate(tokens["access_token"])


async def test_a_reset_link_works_once(client: Client, mailbox: Mailbox) -> None:
    await create_user(client)
    token = await forgot(client, mailbox)
    assert (await client.post(RESET, json={"token": token, "password": NEW_PASSWORD})).status == 200
    resp = await client.post(RESET, json={"token": token, "password": "yet another one"})
    assert await envelope(resp, 404) == ["Resource not found", BAD_TOKEN]
    assert await login_status(client, NEW_PASSWORD) == 200


async def test_parallel_resets_with_one_link(client: Client, mailbox: Mailbox) -> None:
    await create_user(client)
    token = await forgot(client, mailbox)
    responses = await asyncio.gather(
        *(client.post(RESET, json={"token": token, "password": f"password {i}"}) for i in range(5))
    )
    assert sorted(r.status for r in responses) == [200, 404, 404, 404, 404]


async def test_unknown_and_malformed_tokens(client: Client, mailbox: Mailbox) -> None:
    await create_user(client)
    resp = await client.post(RESET, json={"token": secrets.token_hex(32), "password": "whatever1"})
    await envelope(resp, 404)
    for token in ("abc", "Z" * 64, secrets.token_hex(32).upper(), 5):
        resp = await client.post(RESET, json={"token": token, "password": "whatever1"})
        details = await envelope(resp, 400)
        assert any(d.startswith("token: ") for d in details), details


async def test_expired_link_is_404(gateway_client: GatewayClient, mailbox: Mailbox) -> None:
    client = await gateway_client(auth={"password_reset_ttl": "1s"})
    await create_user(client)
    token = await forgot(client, mailbox)
    await asyncio.sleep(1.3)
    resp = await client.post(RESET, json={"token": token, "password": NEW_PASSWORD})
    await envelope(resp, 404)
    assert await login_status(client, DEFAULT_PASSWORD) == 200


async def test_a_new_request_replaces_the_old_link(client: Client, mailbox: Mailbox) -> None:
    await create_user(client)
    old = await forgot(client, mailbox)
    new = await forgot(client, mailbox, nth=2)
    await envelope(await client.post(RESET, json={"token": old, "password": NEW_PASSWORD}), 404)
    assert (await client.post(RESET, json={"token": new, "password": NEW_PASSWORD})).status == 200


async def test_weak_password_is_400_and_keeps_the_link(client: Client, mailbox: Mailbox) -> None:
    await create_user(client)
    token = await forgot(client, mailbox)
    details = await envelope(
        await client.post(RESET, json={"token": token, "password": "abc"}), 400
    )
    assert "password: must be at least 6 characters" in details
    assert (await client.post(RESET, json={"token": token, "password": NEW_PASSWORD})).status == 200


async def test_reset_verifies_the_email(client: Client, mailbox: Mailbox) -> None:
    await create_user(client, email_verified=False)
    assert await login_status(client, DEFAULT_PASSWORD) == 403
    token = await forgot(client, mailbox)
    assert (await client.post(RESET, json={"token": token, "password": NEW_PASSWORD})).status == 200
    assert await login_status(client, NEW_PASSWORD) == 200


async def test_reset_clears_the_login_lockout(
    gateway_client: GatewayClient, mailbox: Mailbox
) -> None:
    client = await gateway_client(
        auth={"rate_limits": {"login_per_account": {"requests": 2, "per": "1h"}}}
    )
    await create_user(client)
    for _ in range(2):
        assert await login_status(client, "wrong password") == 401
    assert await login_status(client, DEFAULT_PASSWORD) == 429
    token = await forgot(client, mailbox)
    assert (await client.post(RESET, json={"token": token, "password": NEW_PASSWORD})).status == 200
    assert await login_status(client, NEW_PASSWORD) == 200


async def test_custom_reset_url(gateway_client: GatewayClient, mailbox: Mailbox) -> None:
    client = await gateway_client(
        email={"reset_url": "https://app.example.com/reset#token={token}&x=1"}
    )
    await create_user(client)
    assert (await client.post(FORGOT, json={"email": EMAIL})).status == 200
    [message] = await mailbox.wait_for(EMAIL)
    token = token_in(message, "https://app.example.com/reset#token=")
    assert f"reset#token={token}&amp;x=1" in html_body(message)
    assert (await client.post(RESET, json={"token": token, "password": NEW_PASSWORD})).status == 200


async def test_passwordless_user_sets_a_password_by_reset(client: Client, mailbox: Mailbox) -> None:
    code = await request_code(client, mailbox, "new@example.com")
    resp = await client.post(
        "/api/v1/auth/login/email-code", json={"email": "new@example.com", "code": code}
    )
    token = (await ok(resp))["registration_token"]
    resp = await client.post(
        "/api/v1/auth/register/complete",
        json={"registration_token": token, "first_name": "N", "username": "new"},
    )
    await ok(resp, 201)
    link = await forgot(client, mailbox, "new@example.com", nth=2)  # the 1st mail had the code
    assert (await client.post(RESET, json={"token": link, "password": NEW_PASSWORD})).status == 200
    assert await login_status(client, NEW_PASSWORD, "new@example.com") == 200


# --- POST /password/change --------------------------------------------------------------------


async def test_change_gives_a_fresh_pair_and_ends_every_other_session(
    client: Client, mailbox: Mailbox
) -> None:
    await create_user(client)
    caller, other = await login(client), await login(client)
    resp = await client.post(
        CHANGE,
        json={"current_password": DEFAULT_PASSWORD, "new_password": NEW_PASSWORD},
        headers=bearer(caller["access_token"]),
    )
    body = await ok(resp)
    assert set(body) == LOGIN_KEYS
    assert body["user"] == caller["user"]
    assert body["access_token"] != caller["access_token"]
    for old in (caller, other):
        await envelope(await client.get(ME, headers=bearer(old["access_token"])), 401)
        await envelope(
            await client.post(REFRESH, json={"refresh_token": old["refresh_token"]}), 401
        )
    await ok(await client.get(ME, headers=bearer(body["access_token"])))
    await ok(await client.post(REFRESH, json={"refresh_token": body["refresh_token"]}))
    assert await login_status(client, DEFAULT_PASSWORD) == 401
    assert await login_status(client, NEW_PASSWORD) == 200
    async with engine_of(client).connect() as conn:
        assert await conn.scalar(select(User.password_hash)) is not None


async def test_change_accepts_camel_case(client: Client, mailbox: Mailbox) -> None:
    await create_user(client)
    tokens = await login(client)
    resp = await client.post(
        CHANGE,
        json={"currentPassword": DEFAULT_PASSWORD, "newPassword": NEW_PASSWORD},
        headers=bearer(tokens["access_token"]),
    )
    await ok(resp)


async def test_wrong_current_password_is_401_and_counts_to_the_lockout(
    gateway_client: GatewayClient, mailbox: Mailbox
) -> None:
    client = await gateway_client(
        auth={"rate_limits": {"login_per_account": {"requests": 3, "per": "1h"}}}
    )
    await create_user(client)
    tokens = await login(client)
    for _ in range(3):
        resp = await client.post(
            CHANGE,
            json={"current_password": "not it", "new_password": NEW_PASSWORD},
            headers=bearer(tokens["access_token"]),
        )
        assert "current password is wrong" in await envelope(resp, 401)
    # Locked: the right password is refused too, here and on /login.
    resp = await client.post(
        CHANGE,
        json={"current_password": DEFAULT_PASSWORD, "new_password": NEW_PASSWORD},
        headers=bearer(tokens["access_token"]),
    )
    await envelope(resp, 429)
    assert await login_status(client, DEFAULT_PASSWORD) == 429
    await ok(await client.get(ME, headers=bearer(tokens["access_token"])))  # session unharmed


async def test_change_needs_a_valid_access_token(client: Client, mailbox: Mailbox) -> None:
    await create_user(client)
    tokens = await login(client)
    body = {"current_password": DEFAULT_PASSWORD, "new_password": NEW_PASSWORD}
    await envelope(await client.post(CHANGE, json=body), 401)
    await envelope(await client.post(CHANGE, json=body, headers=bearer("nope")), 401)
    resp = await client.post(CHANGE, json=body, headers=bearer(tokens["refresh_token"]))
    await envelope(resp, 401)
    assert await login_status(client, DEFAULT_PASSWORD) == 200


async def test_change_with_a_weak_new_password_is_400(client: Client, mailbox: Mailbox) -> None:
    await create_user(client)
    tokens = await login(client)
    resp = await client.post(
        CHANGE,
        json={"current_password": DEFAULT_PASSWORD, "new_password": "abc"},
        headers=bearer(tokens["access_token"]),
    )
    assert "new_password: must be at least 6 characters" in await envelope(resp, 400)
    await ok(await client.get(ME, headers=bearer(tokens["access_token"])))


async def test_passwordless_user_cannot_change_without_a_password(
    client: Client, mailbox: Mailbox
) -> None:
    code = await request_code(client, mailbox, "new@example.com")
    resp = await client.post(
        "/api/v1/auth/login/email-code", json={"email": "new@example.com", "code": code}
    )
    token = (await ok(resp))["registration_token"]
    resp = await client.post(
        "/api/v1/auth/register/complete",
        json={"registration_token": token, "first_name": "N", "username": "new"},
    )
    created = await ok(resp, 201)
    resp = await client.post(
        CHANGE,
        json={"current_password": "anything", "new_password": NEW_PASSWORD},
        headers=bearer(created["access_token"]),
    )
    await envelope(resp, 401)
