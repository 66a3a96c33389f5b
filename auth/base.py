"""What every part of the auth service shares (set up once by ``AuthService.__init__``)."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from auth import opaque
from auth.changes import ChangeFeed
from auth.errors import TokenInvalid
from auth.mailer import Mailer
from auth.models import AuthSession, RefreshToken, utcnow
from auth.passwords import PasswordHasher
from auth.ratelimit import Limit, RateLimiter
from auth.repository import SessionRepository
from auth.store import Store
from auth.templates import MailTemplates, human_duration
from auth.tokens import Claims, TokenService
from auth.views import TokenPair, UserView
from config import GatewayConfig


class ServiceBase:
    """Dependencies, limits and session helpers shared by every flow of the service."""

    cfg: GatewayConfig
    sessions: async_sessionmaker[AsyncSession]
    tokens: TokenService
    hasher: PasswordHasher
    store: Store
    mailer: Mailer
    templates: MailTemplates
    code_key: bytes
    """HMAC key of stored email codes (derived from the JWT secret, see auth/email_codes.py)."""
    limiter: RateLimiter
    feed: ChangeFeed
    revocation_ttl: int
    login_per_account: Limit
    login_per_ip: Limit
    email_per_address: Limit
    email_per_ip: Limit

    def mail_link(self, template: str, user: UserView, url: str, token: str, ttl: float) -> None:
        """Mail ``user`` the ``template`` mail with a link to ``url`` (its ``{token}`` filled
        in) that stays valid for ``ttl`` seconds; sent in the background."""
        mail = self.templates.render(
            template,
            user.email,
            name=user.first_name or user.username,
            email=user.email,
            link=url.replace("{token}", token),
            expires=human_duration(ttl),
        )
        self.mailer.send_later(mail)

    async def count_login_attempt(self, account_key: str | None, client_ip: str | None) -> None:
        """Count a credential attempt per account and per IP *before* checking it, so parallel
        guesses cannot slip past the limit (429 beyond it)."""
        if account_key is not None:
            await self.limiter.charge(self.login_per_account, account_key)
        if client_ip:
            await self.limiter.charge(self.login_per_ip, client_ip)

    async def login_attempt_succeeded(self, account_key: str | None, client_ip: str | None) -> None:
        """A right credential: the account's counter starts over, the IP gets its attempt back."""
        if account_key is not None:
            await self.limiter.reset(self.login_per_account, account_key)
        if client_ip:
            await self.limiter.forgive(self.login_per_ip, client_ip)

    async def charge_email(self, key: str, client_ip: str | None) -> None:
        """Count one mail-sending request per address and per client IP (429 past a limit)."""
        await self.limiter.charge(self.email_per_address, key)
        if client_ip:
            await self.limiter.charge(self.email_per_ip, client_ip)

    async def _open_session(self, user: UserView) -> TokenPair:
        """Start a new login session of ``user``: its first access and refresh tokens."""
        sid = opaque.new_id()
        access = self.tokens.issue(user.token_user(), "access", sid)
        refresh = self.tokens.issue(user.token_user(), "refresh", sid)
        now = utcnow()
        expires = now + timedelta(seconds=self.tokens.refresh_ttl)
        async with self.sessions() as session, session.begin():
            await SessionRepository(session).add(
                AuthSession(id=sid, user_id=user.id, created_at=now, expires_at=expires),
                RefreshToken(jti=refresh.jti, session_id=sid, issued_at=now, expires_at=expires),
            )
        return self._pair(access.token, refresh.token)

    def _pair(self, access: str, refresh: str) -> TokenPair:
        return TokenPair(access, refresh, self.tokens.access_ttl, self.tokens.refresh_ttl)

    async def current_user(self, access_token: str) -> tuple[Claims, UserView]:
        """Verify an access token against the database (session live, user active)."""
        claims = self.tokens.verify(access_token, "access")
        async with self.sessions() as session:
            found = await SessionRepository(session).get_with_user(claims.sid)
        if found is None or found[0].user_id != claims.user_id:
            raise TokenInvalid("token is invalid")
        auth_session, user = found
        if auth_session.revoked_at is not None:
            raise TokenInvalid("token has been revoked")
        if not user.is_active:
            raise TokenInvalid("account is deactivated")
        return claims, UserView.of(user)
