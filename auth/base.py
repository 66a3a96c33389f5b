"""What every part of the auth service shares (set up once by ``AuthService.__init__``)."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from auth.changes import ChangeFeed
from auth.mailer import Mailer
from auth.passwords import PasswordHasher
from auth.ratelimit import Limit, RateLimiter
from auth.store import Store
from auth.tokens import TokenService
from config import GatewayConfig


class ServiceBase:
    """Dependencies and limits shared by the account and session flows."""

    cfg: GatewayConfig
    sessions: async_sessionmaker[AsyncSession]
    tokens: TokenService
    hasher: PasswordHasher
    store: Store
    mailer: Mailer
    limiter: RateLimiter
    feed: ChangeFeed
    revocation_ttl: int
    login_per_account: Limit
    login_per_ip: Limit
    email_per_address: Limit
    email_per_ip: Limit

    async def charge_email(self, key: str, client_ip: str | None) -> None:
        """Count one mail-sending request per address and per client IP (429 past a limit)."""
        await self.limiter.charge(self.email_per_address, key)
        if client_ip:
            await self.limiter.charge(self.email_per_ip, client_ip)
