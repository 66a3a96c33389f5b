"""Shared rate limits (issue 4): login lockout per account and per IP, mail limits.

Every limit answers 429 with the error envelope, a ``Retry-After`` of whole seconds and the
name of the limit that was hit. Counters live in the store: in-process on SQLite, in Redis on
PostgreSQL, where every replica counts together.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from gateway.appkeys import SERVICES
from tests.fixtures.backends import Backend
from tests.fixtures.factories import DEFAULT_PASSWORD, create_user
from tests.fixtures.smtp import Mailbox

LOGIN = "/api/v1/auth/login"
REGISTER = "/api/v1/auth/register"
RESEND = "/api/v1/auth/resend-verification"
ENVELOPE_KEYS = {"isSuccess", "statusCode", "data", "errors", "timestamp"}
TIMESTAMP_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
EMAIL = "beyhan@beyhan.dev"
GENEROUS = {"requests": 10_000, "per": "1h"}

Client = TestClient[Any, Any]
Start = Callable[..., Any]


def limits(**overrides: dict[str, Any]) -> dict[str, Any]:
    """``auth`` overrides: every limit generous except those given."""
    names = ("login_per_account", "login_per_ip", "email_per_address", "email_per_ip")
    return {"rate_limits": {name: overrides.get(name, GENEROUS) for name in names}}


async def too_many(resp: Any, limit: str) -> int:
    """Assert ``resp`` is the 429 envelope naming ``limit``; return its ``Retry-After``."""
    assert resp.status == 429, await resp.text()
    assert resp.content_type == "application/json"
    body: dict[str, Any] = await resp.json()
    assert set(body) == ENVELOPE_KEYS
    assert body["isSuccess"] is False
    assert body["statusCode"] == 429
    assert body["data"] is None
    assert body["errors"][0] == "Too many requests"
    assert any(limit in detail for detail in body["errors"][1:]), body["errors"]
    assert TIMESTAMP_RE.match(body["timestamp"])
    retry_after = resp.headers.get("Retry-After", "")
    assert retry_after.isdigit(), f"Retry-After must be whole seconds: {retry_after!r}"
    assert int(retry_after) >= 1
    return int(retry_after)


async def attempt(
    client: Client,
    email: str,
    password: str = "wrong password!",
    headers: dict[str, str] | None = None,
) -> Any:
    return await client.post(LOGIN, json={"email": email, "password": password}, headers=headers)


async def fail_login(client: Client, email: str, headers: dict[str, str] | None = None) -> None:
    resp = await attempt(client, email, headers=headers)
    assert resp.status == 401, await resp.text()


def xff(address: str) -> dict[str, str]:
    return {"X-Forwarded-For": address}


# --- login: per account ---------------------------------------------------------------------


async def test_account_locks_after_failures_even_with_the_right_password(
    gateway_client: Start,
) -> None:
    client = await gateway_client(auth=limits(login_per_account={"requests": 3, "per": "1m"}))
    await create_user(client)
    for _ in range(3):
        await fail_login(client, EMAIL)
    retry_after = await too_many(
        await attempt(client, EMAIL, DEFAULT_PASSWORD), "login_per_account"
    )
    assert retry_after <= 60
    # Still locked: refused before any password check, wrong or right, any spelling.
    await too_many(await attempt(client, EMAIL), "login_per_account")
    await too_many(await attempt(client, EMAIL.upper(), DEFAULT_PASSWORD), "login_per_account")


async def test_unknown_accounts_lock_the_same_way(gateway_client: Start) -> None:
    """No enumeration: an unknown address answers like a known one, lockout included."""
    client = await gateway_client(auth=limits(login_per_account={"requests": 3, "per": "1m"}))
    await create_user(client)
    for email in (EMAIL, "nobody@example.test"):
        for _ in range(3):
            await fail_login(client, email)
    known = await attempt(client, EMAIL)
    unknown = await attempt(client, "nobody@example.test")
    assert await too_many(known, "login_per_account") <= 60
    assert await too_many(unknown, "login_per_account") <= 60
    known_body, unknown_body = await known.json(), await unknown.json()
    assert known_body["errors"] == unknown_body["errors"]


async def test_limit_is_per_account(gateway_client: Start) -> None:
    client = await gateway_client(auth=limits(login_per_account={"requests": 2, "per": "1m"}))
    await create_user(client)
    await create_user(client, email="other@example.test", username="Other")
    for _ in range(2):
        await fail_login(client, EMAIL)
    await too_many(await attempt(client, EMAIL, DEFAULT_PASSWORD), "login_per_account")
    resp = await attempt(client, "other@example.test", DEFAULT_PASSWORD)
    assert resp.status == 200, await resp.text()


async def test_success_resets_the_account_counter(gateway_client: Start) -> None:
    client = await gateway_client(auth=limits(login_per_account={"requests": 3, "per": "1m"}))
    await create_user(client)
    for _ in range(2):
        await fail_login(client, EMAIL)
    resp = await attempt(client, EMAIL, DEFAULT_PASSWORD)
    assert resp.status == 200, await resp.text()
    for _ in range(3):  # a fresh allowance after the success
        await fail_login(client, EMAIL)
    await too_many(await attempt(client, EMAIL, DEFAULT_PASSWORD), "login_per_account")


async def test_retry_after_is_the_remaining_window(gateway_client: Start) -> None:
    client = await gateway_client(auth=limits(login_per_account={"requests": 2, "per": "3s"}))
    await create_user(client)
    started = time.monotonic()
    for _ in range(2):
        await fail_login(client, EMAIL)
    retry_after = await too_many(await attempt(client, EMAIL), "login_per_account")
    remaining = 3 - (time.monotonic() - started)
    assert remaining - 1 <= retry_after <= 3
    # Once the announced time has passed, the account is open again.
    await asyncio.sleep(retry_after + 0.2)
    resp = await attempt(client, EMAIL, DEFAULT_PASSWORD)
    assert resp.status == 200, await resp.text()


async def test_window_counts_down(gateway_client: Start) -> None:
    client = await gateway_client(auth=limits(login_per_account={"requests": 1, "per": "10s"}))
    await fail_login(client, "nobody@example.test")
    first = await too_many(await attempt(client, "nobody@example.test"), "login_per_account")
    assert 9 <= first <= 10
    await asyncio.sleep(2.1)
    later = await too_many(await attempt(client, "nobody@example.test"), "login_per_account")
    assert 6 <= later <= 8


@pytest.mark.parametrize("limit", ["login_per_account", "login_per_ip"])
async def test_parallel_guesses_cannot_exceed_the_limit(gateway_client: Start, limit: str) -> None:
    """Attempts are counted before the password check: a burst of guesses gets no more than
    the limit's worth of password checks."""
    client = await gateway_client(auth=limits(**{limit: {"requests": 3, "per": "1m"}}))
    await create_user(client)
    answers = await asyncio.gather(
        *(attempt(client, EMAIL, f"wrong password {i}") for i in range(20))
    )
    statuses = sorted(resp.status for resp in answers)
    assert set(statuses) <= {401, 429}, statuses
    assert statuses.count(401) <= 3, f"{statuses.count(401)} passwords checked past a limit of 3"
    assert statuses.count(429) >= 17


async def test_parallel_guesses_across_replicas(gateway_client: Start, backend: Backend) -> None:
    if backend.redis_url is None:
        pytest.skip("the in-process store serves one process only (replicas need Redis)")
    auth = limits(login_per_account={"requests": 3, "per": "1m"})
    a = await gateway_client(auth=auth)
    b = await gateway_client(auth=auth)
    await create_user(a)
    answers = await asyncio.gather(
        *(attempt((a, b)[i % 2], EMAIL, f"wrong password {i}") for i in range(20))
    )
    statuses = sorted(resp.status for resp in answers)
    assert statuses.count(401) <= 3, statuses
    assert statuses.count(429) >= 17, statuses


# --- login: per IP --------------------------------------------------------------------------


async def test_ip_locks_across_accounts(gateway_client: Start) -> None:
    client = await gateway_client(auth=limits(login_per_ip={"requests": 3, "per": "1m"}))
    await create_user(client)
    for i in range(3):
        await fail_login(client, f"guess{i}@example.test")
    assert await too_many(await attempt(client, "guess9@example.test"), "login_per_ip") <= 60
    # A real user behind the same address is locked out too, right password or not.
    await too_many(await attempt(client, EMAIL, DEFAULT_PASSWORD), "login_per_ip")


async def test_successful_logins_do_not_count_against_the_ip(gateway_client: Start) -> None:
    """The IP limit is about failed logins: one address (an office behind NAT) may log in
    any number of times."""
    client = await gateway_client(auth=limits(login_per_ip={"requests": 3, "per": "1m"}))
    await create_user(client)
    for _ in range(6):
        resp = await attempt(client, EMAIL, DEFAULT_PASSWORD)
        assert resp.status == 200, await resp.text()
    for i in range(3):
        await fail_login(client, f"guess{i}@example.test")
    await too_many(await attempt(client, EMAIL, DEFAULT_PASSWORD), "login_per_ip")


async def test_forwarded_for_from_a_trusted_proxy_counts_per_client(
    gateway_client: Start,
) -> None:
    client = await gateway_client(
        auth=limits(login_per_ip={"requests": 2, "per": "1m"}),
        server={"trusted_proxies": ["127.0.0.1/32"]},
    )
    await create_user(client)
    for i in range(2):
        await fail_login(client, f"guess{i}@example.test", xff("203.0.113.7"))
    await too_many(
        await attempt(client, "guess8@example.test", headers=xff("203.0.113.7")), "login_per_ip"
    )
    # Read from the right: a spoofed left-most entry does not move the client.
    spoofed = xff("198.51.100.99, 203.0.113.7")
    await too_many(await attempt(client, "guess8@example.test", headers=spoofed), "login_per_ip")
    # Other clients behind the same proxy have their own counters.
    await fail_login(client, "guess9@example.test", xff("203.0.113.8"))
    resp = await attempt(client, EMAIL, DEFAULT_PASSWORD, headers=xff("203.0.113.9"))
    assert resp.status == 200, await resp.text()
    # The proxy itself (no header) is one more client.
    resp = await attempt(client, EMAIL, DEFAULT_PASSWORD)
    assert resp.status == 200, await resp.text()


async def test_forwarded_for_is_ignored_without_trusted_proxies(gateway_client: Start) -> None:
    client = await gateway_client(auth=limits(login_per_ip={"requests": 2, "per": "1m"}))
    await fail_login(client, "guess0@example.test", xff("203.0.113.1"))
    await fail_login(client, "guess1@example.test", xff("203.0.113.2"))
    resp = await attempt(client, "guess2@example.test", headers=xff("203.0.113.3"))
    await too_many(resp, "login_per_ip")
    await too_many(await attempt(client, "guess3@example.test"), "login_per_ip")


# --- login: across replicas -----------------------------------------------------------------


async def test_replicas_share_the_login_counters(gateway_client: Start, backend: Backend) -> None:
    if backend.redis_url is None:
        pytest.skip("the in-process store serves one process only (replicas need Redis)")
    auth = limits(
        login_per_account={"requests": 3, "per": "1m"},
        login_per_ip={"requests": 5, "per": "1m"},
    )
    a = await gateway_client(auth=auth)
    b = await gateway_client(auth=auth)
    await create_user(a)
    await fail_login(a, EMAIL)
    await fail_login(b, EMAIL)
    await fail_login(a, EMAIL)
    await too_many(await attempt(b, EMAIL, DEFAULT_PASSWORD), "login_per_account")
    await too_many(await attempt(a, EMAIL, DEFAULT_PASSWORD), "login_per_account")
    # The per-IP counter is shared too: 3 failures so far, 2 more from B, then A refuses.
    await fail_login(b, "guess0@example.test")
    await fail_login(b, "guess1@example.test")
    await too_many(await attempt(a, "guess2@example.test"), "login_per_ip")


async def test_success_on_one_replica_resets_for_all(
    gateway_client: Start, backend: Backend
) -> None:
    if backend.redis_url is None:
        pytest.skip("the in-process store serves one process only (replicas need Redis)")
    auth = limits(login_per_account={"requests": 3, "per": "1m"})
    a = await gateway_client(auth=auth)
    b = await gateway_client(auth=auth)
    await create_user(a)
    await fail_login(a, EMAIL)
    await fail_login(a, EMAIL)
    resp = await attempt(b, EMAIL, DEFAULT_PASSWORD)
    assert resp.status == 200, await resp.text()
    for client in (a, b, a):
        await fail_login(client, EMAIL)
    await too_many(await attempt(b, EMAIL, DEFAULT_PASSWORD), "login_per_account")


# --- mail -----------------------------------------------------------------------------------


def registration(email: str, username: str) -> dict[str, str]:
    return {
        "email": email,
        "password": DEFAULT_PASSWORD,
        "username": username,
        "first_name": "New",
        "last_name": "User",
    }


async def delivered(client: Client, mailbox: Mailbox, address: str) -> int:
    """How many mails reached ``address`` once every pending delivery is done."""
    await client.app[SERVICES].auth_service().mailer.drain()
    return len(mailbox.to(address))


async def test_mail_per_address_limits_register_and_resend(
    gateway_client: Start, mailbox: Mailbox
) -> None:
    client = await gateway_client(
        auth={
            **limits(email_per_address={"requests": 3, "per": "1m"}),
            "resend_interval": "0s",
        }
    )
    address = "new@example.test"
    resp = await client.post(REGISTER, json=registration(address, "newbie"))
    assert resp.status == 201, await resp.text()
    for _ in range(2):
        resp = await client.post(RESEND, json={"email": address})
        assert resp.status == 200, await resp.text()
    await mailbox.wait_for(address, 3)
    retry_after = await too_many(
        await client.post(RESEND, json={"email": address}), "email_per_address"
    )
    assert retry_after <= 60
    # Registering the address again is counted and refused the same way.
    resp = await client.post(REGISTER, json=registration(address, "newbie2"))
    await too_many(resp, "email_per_address")
    await too_many(await client.post(RESEND, json={"email": address.upper()}), "email_per_address")
    assert await delivered(client, mailbox, address) == 3
    # Another address is not affected.
    resp = await client.post(REGISTER, json=registration("second@example.test", "second"))
    assert resp.status == 201, await resp.text()
    await mailbox.wait_for("second@example.test")


async def test_mail_limit_is_the_same_for_unknown_addresses(
    gateway_client: Start, mailbox: Mailbox
) -> None:
    client = await gateway_client(
        auth={
            **limits(email_per_address={"requests": 2, "per": "1m"}),
            "resend_interval": "0s",
        }
    )
    await create_user(client, email="verified@example.test", email_verified=True)
    for address in ("nobody@example.test", "verified@example.test"):
        for _ in range(2):
            resp = await client.post(RESEND, json={"email": address})
            assert resp.status == 200, await resp.text()
    unknown = await client.post(RESEND, json={"email": "nobody@example.test"})
    known = await client.post(RESEND, json={"email": "verified@example.test"})
    await too_many(unknown, "email_per_address")
    await too_many(known, "email_per_address")
    assert (await unknown.json())["errors"] == (await known.json())["errors"]
    assert await delivered(client, mailbox, "nobody@example.test") == 0
    assert await delivered(client, mailbox, "verified@example.test") == 0


async def test_mail_per_ip_limits_across_addresses(gateway_client: Start, mailbox: Mailbox) -> None:
    client = await gateway_client(
        auth={**limits(email_per_ip={"requests": 3, "per": "1m"}), "resend_interval": "0s"}
    )
    resp = await client.post(REGISTER, json=registration("one@example.test", "one"))
    assert resp.status == 201, await resp.text()
    resp = await client.post(RESEND, json={"email": "one@example.test"})
    assert resp.status == 200, await resp.text()
    resp = await client.post(RESEND, json={"email": "nobody@example.test"})
    assert resp.status == 200, await resp.text()
    await mailbox.wait_for("one@example.test", 2)
    resp = await client.post(REGISTER, json=registration("two@example.test", "two"))
    assert await too_many(resp, "email_per_ip") <= 60
    await too_many(await client.post(RESEND, json={"email": "one@example.test"}), "email_per_ip")
    await too_many(await client.post(RESEND, json={"email": "three@example.test"}), "email_per_ip")
    assert await delivered(client, mailbox, "one@example.test") == 2
    assert await delivered(client, mailbox, "two@example.test") == 0
    # The refused registration created no account: the address is still free.
    resp = await client.post(
        LOGIN, json={"email": "two@example.test", "password": DEFAULT_PASSWORD}
    )
    assert resp.status == 401


async def test_mail_per_ip_uses_the_forwarded_client(
    gateway_client: Start, mailbox: Mailbox
) -> None:
    client = await gateway_client(
        auth={**limits(email_per_ip={"requests": 1, "per": "1m"}), "resend_interval": "0s"},
        server={"trusted_proxies": ["127.0.0.1/32"]},
    )
    resp = await client.post(
        REGISTER, json=registration("one@example.test", "one"), headers=xff("203.0.113.1")
    )
    assert resp.status == 201, await resp.text()
    resp = await client.post(RESEND, json={"email": "x@example.test"}, headers=xff("203.0.113.1"))
    await too_many(resp, "email_per_ip")
    resp = await client.post(
        REGISTER, json=registration("two@example.test", "two"), headers=xff("203.0.113.2")
    )
    assert resp.status == 201, await resp.text()
    await mailbox.wait_for("two@example.test")


async def test_replicas_share_the_mail_counters(
    gateway_client: Start, backend: Backend, mailbox: Mailbox
) -> None:
    if backend.redis_url is None:
        pytest.skip("the in-process store serves one process only (replicas need Redis)")
    auth = {**limits(email_per_address={"requests": 2, "per": "1m"}), "resend_interval": "0s"}
    a = await gateway_client(auth=auth)
    b = await gateway_client(auth=auth)
    address = "new@example.test"
    resp = await a.post(REGISTER, json=registration(address, "newbie"))
    assert resp.status == 201, await resp.text()
    resp = await b.post(RESEND, json={"email": address})
    assert resp.status == 200, await resp.text()
    await mailbox.wait_for(address, 2)
    await too_many(await a.post(RESEND, json={"email": address}), "email_per_address")
    await too_many(await b.post(RESEND, json={"email": address}), "email_per_address")
    assert await delivered(a, mailbox, address) == 2
    assert await delivered(b, mailbox, address) == 2
