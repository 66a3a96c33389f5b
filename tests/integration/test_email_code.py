"""Passwordless login (SPEC §2): POST /email-code, /login/email-code, /register/complete,
end to end through the SMTP sink, on both backends."""

from __future__ import annotations

import asyncio
import hashlib
import re
from pathlib import Path

import pytest
from aiohttp import web
from sqlalchemy import select

from auth.models import EmailCode, RegistrationToken, User
from config import ConfigError
from gateway.app import create_app
from tests.fixtures.envelopes import envelope
from tests.fixtures.factories import DEFAULT_PASSWORD, create_user, login
from tests.fixtures.gateway import MakeConfig
from tests.fixtures.smtp import Mailbox, text_body
from tests.integration.account_helpers import (
    CODE_SENT,
    EMAIL_CODE,
    LOGIN,
    LOGIN_CODE,
    LOGIN_KEYS,
    ME,
    REGISTER_COMPLETE,
    Client,
    GatewayClient,
    answer,
    bearer,
    code_in,
    drain,
    engine_of,
    html_body,
    ok,
    request_code,
    same_answer,
    service_of,
    wrong,
)

KNOWN = "beyhan@beyhan.dev"
NEW = "newcomer@example.com"
WRONG_CODE_DETAIL = "the code is wrong, expired, already used or was tried too many times"


async def login_code(client: Client, email: str, code: str) -> tuple[int, dict[str, object]]:
    resp = await client.post(LOGIN_CODE, json={"email": email, "code": code})
    return resp.status, await resp.json()


async def registration_token(client: Client, mailbox: Mailbox, email: str = NEW) -> str:
    code = await request_code(client, mailbox, email)
    body = await ok(await client.post(LOGIN_CODE, json={"email": email, "code": code}))
    token = body["registration_token"]
    assert isinstance(token, str)
    return token


def profile(token: str, **overrides: object) -> dict[str, object]:
    body: dict[str, object] = {
        "registration_token": token,
        "first_name": "New",
        "last_name": "Comer",
        "username": "newcomer",
        "password": "a good password",
    }
    body.update(overrides)
    return body


async def code_rows(client: Client) -> list[tuple[str, str, int]]:
    """(email_key, code_hash, attempts) of every stored code."""
    query = select(EmailCode.email_key, EmailCode.code_hash, EmailCode.attempts)
    async with engine_of(client).connect() as conn:
        return [(row[0], row[1], row[2]) for row in await conn.execute(query)]


# --- POST /email-code -------------------------------------------------------------------------


async def test_code_mail_has_subject_text_and_html(client: Client, mailbox: Mailbox) -> None:
    resp = await client.post(EMAIL_CODE, json={"email": NEW})
    assert await ok(resp) == CODE_SENT
    [message] = await mailbox.wait_for(NEW)
    code = code_in(message)
    assert re.fullmatch(r"[0-9]{6}", code)
    assert message["Subject"] == "Your sign-in code"
    assert code in html_body(message)
    assert NEW in text_body(message)
    assert "10 minutes" in text_body(message)


async def test_same_answer_for_known_and_unknown_addresses(
    client: Client, mailbox: Mailbox
) -> None:
    await create_user(client, email=KNOWN)
    known = await answer(await client.post(EMAIL_CODE, json={"email": KNOWN}))
    unknown = await answer(await client.post(EMAIL_CODE, json={"email": NEW}))
    same_answer(known, unknown)
    assert known[2] == b'{"message":"verification code has been sent"}'
    # Both get a code: that is how new addresses sign up.
    await mailbox.wait_for(KNOWN)
    await mailbox.wait_for(NEW)


async def test_code_is_stored_only_as_a_keyed_hash(client: Client, mailbox: Mailbox) -> None:
    code = await request_code(client, mailbox, NEW)
    [(key, code_hash, attempts)] = await code_rows(client)
    assert key == NEW
    assert attempts == 0
    assert code not in code_hash
    assert code_hash not in (
        hashlib.sha256(code.encode()).hexdigest(),
        hashlib.sha256(f"{NEW}{code}".encode()).hexdigest(),
        hashlib.sha256(f"{NEW}\0{code}".encode()).hexdigest(),
    )


async def test_invalid_email_is_400(client: Client, mailbox: Mailbox) -> None:
    for body in ({}, {"email": "not-an-address"}, {"email": 5}):
        details = await envelope(await client.post(EMAIL_CODE, json=body), 400)
        assert any(d.startswith("email: ") for d in details), details
    await drain(client)
    assert mailbox.messages == []


async def test_code_requests_are_rate_limited_per_address(
    gateway_client: GatewayClient, mailbox: Mailbox
) -> None:
    client = await gateway_client(
        auth={"rate_limits": {"email_per_address": {"requests": 2, "per": "1h"}}}
    )
    await create_user(client, email=KNOWN)
    for address in (KNOWN, NEW):
        for _ in range(2):
            assert (await client.post(EMAIL_CODE, json={"email": address})).status == 200
        resp = await client.post(EMAIL_CODE, json={"email": address.upper()})
        await envelope(resp, 429)
        assert int(resp.headers["Retry-After"]) > 0
    await drain(client)
    assert len(mailbox.to(KNOWN)) == 2
    assert len(mailbox.to(NEW)) == 2


# --- POST /login/email-code: known users ------------------------------------------------------


async def test_known_user_logs_in_and_email_counts_as_verified(
    client: Client, mailbox: Mailbox
) -> None:
    await create_user(client, email=KNOWN, email_verified=False)
    # Not verified: password login is refused ...
    await envelope(
        await client.post(LOGIN, json={"email": KNOWN, "password": DEFAULT_PASSWORD}), 403
    )
    code = await request_code(client, mailbox, KNOWN)
    status, body = await login_code(client, KNOWN.upper(), code)
    assert status == 200, body
    assert set(body) == LOGIN_KEYS
    assert body["expires_in"] == 7200
    assert body["user"] == {
        "email": KNOWN,
        "first_name": "Beyhan",
        "id": body["user"]["id"],  # type: ignore[index]
        "is_admin": False,
        "last_name": "Oğur",
        "username": "Beyhan Oğur",
    }
    me = await ok(await client.get(ME, headers=bearer(str(body["access_token"]))))
    assert me["user"]["email"] == KNOWN
    # ... and accepted after the code proved the mailbox.
    await login(client, KNOWN)


async def test_the_login_body_has_the_shape_of_password_login(
    client: Client, mailbox: Mailbox
) -> None:
    await create_user(client, email=KNOWN)
    by_password = await login(client, KNOWN)
    code = await request_code(client, mailbox, KNOWN)
    status, by_code = await login_code(client, KNOWN, code)
    assert status == 200
    assert set(by_code) == set(by_password)
    assert by_code["user"] == by_password["user"]


async def test_a_code_works_once(client: Client, mailbox: Mailbox) -> None:
    await create_user(client, email=KNOWN)
    code = await request_code(client, mailbox, KNOWN)
    assert (await login_code(client, KNOWN, code))[0] == 200
    resp = await client.post(LOGIN_CODE, json={"email": KNOWN, "code": code})
    assert WRONG_CODE_DETAIL in await envelope(resp, 401)
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")


async def test_wrong_code_is_401_and_right_one_still_works(
    client: Client, mailbox: Mailbox
) -> None:
    await create_user(client, email=KNOWN)
    code = await request_code(client, mailbox, KNOWN)
    resp = await client.post(LOGIN_CODE, json={"email": KNOWN, "code": wrong(code)})
    assert await envelope(resp, 401) == ["Unauthorized", WRONG_CODE_DETAIL]
    assert (await login_code(client, KNOWN, code))[0] == 200


async def test_wrong_code_answer_is_the_same_for_known_and_unknown(
    client: Client, mailbox: Mailbox
) -> None:
    await create_user(client, email=KNOWN)
    answers = []
    for address in (KNOWN, NEW):
        code = await request_code(client, mailbox, address)
        resp = await client.post(LOGIN_CODE, json={"email": address, "code": wrong(code)})
        body = await resp.json()
        del body["timestamp"]
        answers.append((resp.status, body, resp.headers.get("WWW-Authenticate")))
    assert answers[0] == answers[1]


async def test_no_code_requested_is_401(client: Client, mailbox: Mailbox) -> None:
    await create_user(client, email=KNOWN)
    await envelope(await client.post(LOGIN_CODE, json={"email": KNOWN, "code": "123456"}), 401)
    await envelope(await client.post(LOGIN_CODE, json={"email": NEW, "code": "123456"}), 401)


async def test_a_code_is_bound_to_its_address(client: Client, mailbox: Mailbox) -> None:
    await create_user(client, email=KNOWN)
    code = await request_code(client, mailbox, NEW)
    await request_code(client, mailbox, KNOWN)
    await envelope(await client.post(LOGIN_CODE, json={"email": KNOWN, "code": code}), 401)


async def test_five_wrong_guesses_exhaust_the_code(client: Client, mailbox: Mailbox) -> None:
    await create_user(client, email=KNOWN)
    code = await request_code(client, mailbox, KNOWN)
    for _ in range(5):
        resp = await client.post(LOGIN_CODE, json={"email": KNOWN, "code": wrong(code)})
        await envelope(resp, 401)
    # The right code no longer helps: the 5 tries are spent.
    resp = await client.post(LOGIN_CODE, json={"email": KNOWN, "code": code})
    assert await envelope(resp, 401) == ["Unauthorized", WRONG_CODE_DETAIL]
    # A new request gives a new code with 5 fresh tries.
    fresh = await request_code(client, mailbox, KNOWN, nth=2)
    assert (await login_code(client, KNOWN, fresh))[0] == 200


async def test_four_wrong_guesses_leave_the_fifth_try(client: Client, mailbox: Mailbox) -> None:
    await create_user(client, email=KNOWN)
    code = await request_code(client, mailbox, KNOWN)
    for _ in range(4):
        await envelope(
            await client.post(LOGIN_CODE, json={"email": KNOWN, "code": wrong(code)}), 401
        )
    assert (await login_code(client, KNOWN, code))[0] == 200


async def test_parallel_guesses_cannot_exceed_the_limit(client: Client, mailbox: Mailbox) -> None:
    await create_user(client, email=KNOWN)
    code = await request_code(client, mailbox, KNOWN)
    guesses = [f"{(int(code) + i) % 1_000_000:06d}" for i in range(1, 41)]
    responses = await asyncio.gather(
        *(client.post(LOGIN_CODE, json={"email": KNOWN, "code": g}) for g in guesses)
    )
    assert sorted(r.status for r in responses) == [401] * 40
    [(_, _, attempts)] = await code_rows(client)
    assert attempts == 5  # the 35 others were refused without being compared
    await envelope(await client.post(LOGIN_CODE, json={"email": KNOWN, "code": code}), 401)


async def test_parallel_right_code_logs_in_once(client: Client, mailbox: Mailbox) -> None:
    await create_user(client, email=KNOWN)
    code = await request_code(client, mailbox, KNOWN)
    responses = await asyncio.gather(
        *(client.post(LOGIN_CODE, json={"email": KNOWN, "code": code}) for _ in range(8))
    )
    statuses = sorted(r.status for r in responses)
    assert statuses == [200] + [401] * 7


async def test_a_new_request_replaces_the_old_code(client: Client, mailbox: Mailbox) -> None:
    await create_user(client, email=KNOWN)
    old = await request_code(client, mailbox, KNOWN)
    new = await request_code(client, mailbox, KNOWN, nth=2)
    assert len(await code_rows(client)) == 1
    if old != new:  # one chance in a million that they are equal
        await envelope(await client.post(LOGIN_CODE, json={"email": KNOWN, "code": old}), 401)
    assert (await login_code(client, KNOWN, new))[0] == 200


async def test_expired_code_is_401(gateway_client: GatewayClient, mailbox: Mailbox) -> None:
    client = await gateway_client(auth={"email_code_ttl": "1s"})
    await create_user(client, email=KNOWN)
    code = await request_code(client, mailbox, KNOWN)
    assert "1 second" in text_body(mailbox.to(KNOWN)[0])
    await asyncio.sleep(1.3)
    await envelope(await client.post(LOGIN_CODE, json={"email": KNOWN, "code": code}), 401)


async def test_deactivated_user_is_403(client: Client, mailbox: Mailbox) -> None:
    await create_user(client, email=KNOWN)
    await service_of(client).update_user(KNOWN, is_active=False)
    code = await request_code(client, mailbox, KNOWN)
    resp = await client.post(LOGIN_CODE, json={"email": KNOWN, "code": code})
    assert "account is deactivated" in await envelope(resp, 403)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"email": KNOWN}, "code"),
        ({"email": KNOWN, "code": "12345"}, "code"),
        ({"email": KNOWN, "code": "1234567"}, "code"),
        ({"email": KNOWN, "code": "abcdef"}, "code"),
        ({"email": KNOWN, "code": 123456}, "code"),
        ({"email": KNOWN, "code": "١٢٣٤٥٦"}, "code"),  # non-ASCII digits
        ({"code": "123456"}, "email"),
        ({"email": "nope", "code": "123456"}, "email"),
    ],
)
async def test_malformed_login_is_400(
    client: Client, mailbox: Mailbox, body: dict[str, object], field: str
) -> None:
    details = await envelope(await client.post(LOGIN_CODE, json=body), 400)
    assert any(d.startswith(f"{field}: ") for d in details), details


async def test_malformed_code_does_not_spend_a_try(client: Client, mailbox: Mailbox) -> None:
    await create_user(client, email=KNOWN)
    code = await request_code(client, mailbox, KNOWN)
    for _ in range(6):
        await envelope(await client.post(LOGIN_CODE, json={"email": KNOWN, "code": "12"}), 400)
    assert (await login_code(client, KNOWN, f" {code} "))[0] == 200  # spaces around are fine


async def test_failed_codes_count_against_the_ip_limit(
    gateway_client: GatewayClient, mailbox: Mailbox
) -> None:
    client = await gateway_client(
        auth={"rate_limits": {"login_per_ip": {"requests": 3, "per": "1h"}}}
    )
    for i in range(3):
        address = f"user{i}@example.com"
        code = await request_code(client, mailbox, address)
        resp = await client.post(LOGIN_CODE, json={"email": address, "code": wrong(code)})
        await envelope(resp, 401)
    code = await request_code(client, mailbox, NEW)
    await envelope(await client.post(LOGIN_CODE, json={"email": NEW, "code": code}), 429)


# --- new addresses: registration ----------------------------------------------------------------


async def test_new_address_registers_with_a_code(client: Client, mailbox: Mailbox) -> None:
    code = await request_code(client, mailbox, NEW)
    resp = await client.post(LOGIN_CODE, json={"email": NEW, "code": code})
    raw = await resp.read()
    assert resp.status == 200, raw
    body = await resp.json()
    token = body["registration_token"]
    assert re.fullmatch(r"[0-9a-f]{64}", token)
    assert raw == (
        b'{"expires_in":900,"registration_required":true,"registration_token":"'
        + token.encode()
        + b'"}'
    )
    resp = await client.post(REGISTER_COMPLETE, json=profile(token))
    created = await ok(resp, 201)
    assert set(created) == LOGIN_KEYS
    assert created["user"] == {
        "email": NEW,
        "email_verified": True,
        "first_name": "New",
        "id": created["user"]["id"],
        "is_admin": False,
        "last_name": "Comer",
        "username": "newcomer",
    }
    me = await ok(await client.get(ME, headers=bearer(created["access_token"])))
    assert me["user"]["id"] == created["user"]["id"]
    # The password chosen works too, and the address is now a known user.
    await login(client, NEW, "a good password")
    again = await request_code(client, mailbox, NEW, nth=2)
    status, by_code = await login_code(client, NEW, again)
    assert status == 200 and "access_token" in by_code


async def test_registration_without_password(client: Client, mailbox: Mailbox) -> None:
    token = await registration_token(client, mailbox)
    body = profile(token)
    del body["password"]
    created = await ok(await client.post(REGISTER_COMPLETE, json=body), 201)
    assert created["user"]["email_verified"] is True
    async with engine_of(client).connect() as conn:
        stored = await conn.scalar(select(User.password_hash).where(User.email_key == NEW))
    assert stored is None
    # No password: password login is refused like a wrong one.
    for password in ("a good password", "anything at all"):
        resp = await client.post(LOGIN, json={"email": NEW, "password": password})
        await envelope(resp, 401)


async def test_register_complete_accepts_camel_case(client: Client, mailbox: Mailbox) -> None:
    token = await registration_token(client, mailbox)
    resp = await client.post(
        REGISTER_COMPLETE,
        json={"registrationToken": token, "firstName": "New", "lastName": "C", "username": "nc"},
    )
    created = await ok(resp, 201)
    assert created["user"]["first_name"] == "New"


async def test_registration_token_works_once(client: Client, mailbox: Mailbox) -> None:
    token = await registration_token(client, mailbox)
    await ok(await client.post(REGISTER_COMPLETE, json=profile(token)), 201)
    resp = await client.post(REGISTER_COMPLETE, json=profile(token, username="other"))
    assert "registration token is invalid, expired or already used" in await envelope(resp, 401)


async def test_parallel_registrations_with_one_token(client: Client, mailbox: Mailbox) -> None:
    token = await registration_token(client, mailbox)
    responses = await asyncio.gather(
        *(
            client.post(REGISTER_COMPLETE, json=profile(token, username=f"racer{i}"))
            for i in range(5)
        )
    )
    assert sorted(r.status for r in responses) == [201, 401, 401, 401, 401]


async def test_taken_username_is_409_and_token_stays_usable(
    client: Client, mailbox: Mailbox
) -> None:
    await create_user(client, email=KNOWN, username="taken")
    token = await registration_token(client, mailbox)
    resp = await client.post(REGISTER_COMPLETE, json=profile(token, username="TAKEN"))
    assert "username: already taken" in await envelope(resp, 409)
    await ok(await client.post(REGISTER_COMPLETE, json=profile(token, username="free")), 201)


async def test_email_registered_meanwhile_is_409(client: Client, mailbox: Mailbox) -> None:
    token = await registration_token(client, mailbox)
    await create_user(client, email=NEW.upper(), username="first")
    resp = await client.post(REGISTER_COMPLETE, json=profile(token))
    assert "email: already registered" in await envelope(resp, 409)


async def test_expired_registration_token_is_401(
    gateway_client: GatewayClient, mailbox: Mailbox
) -> None:
    client = await gateway_client(auth={"registration_token_ttl": "1s"})
    code = await request_code(client, mailbox, NEW)
    body = await ok(await client.post(LOGIN_CODE, json={"email": NEW, "code": code}))
    assert body["expires_in"] == 1
    await asyncio.sleep(1.3)
    resp = await client.post(REGISTER_COMPLETE, json=profile(body["registration_token"]))
    await envelope(resp, 401)


async def test_registration_tokens_are_stored_hashed(client: Client, mailbox: Mailbox) -> None:
    token = await registration_token(client, mailbox)
    async with engine_of(client).connect() as conn:
        rows = list(await conn.execute(select(RegistrationToken.token_hash)))
    assert rows == [(hashlib.sha256(token.encode()).hexdigest(),)]


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"registration_token": "abc"}, "registration_token"),
        ({"registration_token": "G" * 64}, "registration_token"),
        ({"username": ""}, "username"),
        ({"first_name": 5}, "first_name"),
        ({"password": "short"}, "password"),
    ],
)
async def test_invalid_registration_is_400(
    client: Client, mailbox: Mailbox, overrides: dict[str, object], field: str
) -> None:
    token = await registration_token(client, mailbox)
    resp = await client.post(REGISTER_COMPLETE, json=profile(token, **overrides))
    details = await envelope(resp, 400)
    assert any(d.startswith(f"{field}: ") for d in details), details
    # Nothing was spent: the token still registers.
    await ok(await client.post(REGISTER_COMPLETE, json=profile(token)), 201)


async def test_unknown_registration_token_is_401(client: Client, mailbox: Mailbox) -> None:
    resp = await client.post(REGISTER_COMPLETE, json=profile("0" * 64))
    await envelope(resp, 401)


# --- templates from gateway.yaml ----------------------------------------------------------------


async def test_custom_code_templates_are_used(
    gateway_client: GatewayClient, mailbox: Mailbox, tmp_path: Path
) -> None:
    (tmp_path / "code.subject.txt").write_text("Kod: $code\n", encoding="utf-8")
    (tmp_path / "code.html").write_text("<b>${code}</b> for $email costs $$0", encoding="utf-8")
    client = await gateway_client(email={"templates_dir": str(tmp_path)})
    code = await request_code(client, mailbox, NEW)
    [message] = mailbox.to(NEW)
    assert message["Subject"] == f"Kod: {code}"
    assert html_body(message).strip() == f"<b>{code}</b> for {NEW} costs $0"
    assert "Your sign-in code is:" in text_body(message)  # the default text part


async def test_bad_custom_template_stops_start_up(
    make_config: MakeConfig, mailbox: Mailbox, tmp_path: Path
) -> None:
    (tmp_path / "password_reset.txt").write_text("Open $url\n", encoding="utf-8")
    runner = web.AppRunner(
        create_app(make_config(email={"templates_dir": str(tmp_path)}), migrate_embedded=False)
    )
    try:
        with pytest.raises(ConfigError) as caught:
            await runner.setup()
    finally:
        await runner.cleanup()
    assert "password_reset.txt: unknown placeholder $url" in str(caught.value)
