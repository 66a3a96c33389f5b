"""AuthService: the account and session rules of SPEC §2, callable from HTTP, CLI and tests."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import replace
from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from auth.accounts import AccountFlows
from auth.changes import ChangeFeed
from auth.email_codes import EmailCodeFlows
from auth.errors import AccountNotAllowed, InvalidCredentials, TokenInvalid, Unavailable
from auth.grace import fingerprint, seal, unseal
from auth.mailer import Mailer
from auth.models import RefreshToken, utcnow
from auth.password_reset import PasswordFlows
from auth.passwords import PasswordHasher
from auth.ratelimit import Limit, RateLimiter
from auth.repository import SessionRepository, UserRepository
from auth.schemas import email_key
from auth.store import Store, StoreUnavailable
from auth.templates import MailTemplates
from auth.tokens import Claims, TokenService
from auth.user_admin import UserAdmin
from auth.views import LoginResult, TokenPair, UserView
from config import GatewayConfig

__all__ = ["AuthService", "LoginResult", "TokenPair", "UserView"]

_LOGGER = logging.getLogger(__name__)
VERIFIED_CACHE_SIZE = 50_000
GRACE_WAIT_STEPS, GRACE_WAIT_STEP = 40, 0.025


class AuthService(AccountFlows, EmailCodeFlows, PasswordFlows, UserAdmin):
    """Registration, verification, login (password or email code), refresh, logout, password
    reset and change, user administration and token checks."""

    def __init__(
        self,
        cfg: GatewayConfig,
        sessions: async_sessionmaker[AsyncSession],
        tokens: TokenService,
        hasher: PasswordHasher,
        store: Store,
        mailer: Mailer,
    ) -> None:
        self.cfg = cfg
        self.sessions = sessions
        self.tokens = tokens
        self.hasher = hasher
        self.store = store
        self.mailer = mailer
        self.templates = MailTemplates.load(cfg.email.templates_dir)
        self.code_key = tokens.derive_key("email-code")
        # An access token may outlive its session's revocation by at most this long.
        self.revocation_ttl = tokens.access_ttl + int(cfg.jwt.leeway) + 1
        self.limiter = RateLimiter(store, fail_open=cfg.sessions.on_stale == "open")
        limits = cfg.auth.rate_limits
        self.login_per_account = Limit.of("login_per_account", limits.login_per_account)
        self.login_per_ip = Limit.of("login_per_ip", limits.login_per_ip)
        self.email_per_address = Limit.of("email_per_address", limits.email_per_address)
        self.email_per_ip = Limit.of("email_per_ip", limits.email_per_ip)
        self.feed = ChangeFeed(
            sessions, store, interval=cfg.sessions.poll_interval, horizon=self.revocation_ttl
        )
        self._on_stale_closed = cfg.sessions.on_stale == "closed"
        self._revocation_checks = cfg.sessions.revocation_checks
        self._leeway = cfg.jwt.leeway
        self._verified: dict[str, Claims] = {}

    async def login(self, email: str, password: str, client_ip: str | None = None) -> LoginResult:
        """Check a password and open a new session.

        Attempts are counted per account (known or not: no enumeration) and per client IP
        *before* the password is checked, so parallel guesses cannot slip past the limit;
        beyond it they are refused with 429. A success resets the account's counter and takes
        its attempt back from the IP's.
        """
        key = email_key(email)
        await self.count_login_attempt(key, client_ip)
        async with self.sessions() as session:
            user = await UserRepository(session).get_by_email_key(key)
        password_ok = await self.hasher.verify(password, user.password_hash if user else None)
        if user is None or not password_ok:
            raise InvalidCredentials("invalid email or password")
        await self.login_attempt_succeeded(key, client_ip)
        if not user.is_active:
            raise AccountNotAllowed("account is deactivated")
        if self.cfg.auth.require_verified_email and not user.email_verified:
            raise AccountNotAllowed("email not verified")
        view = UserView.of(user)
        return LoginResult(await self._open_session(view), view)

    async def refresh(
        self, refresh_token: str, client_ip: str | None = None, user_agent: str | None = None
    ) -> TokenPair:
        """Rotate a refresh token; a reused one revokes its whole session (theft).

        Within ``sessions.refresh_grace`` seconds of the rotation, presenting the same token
        again (two tabs refreshing at once) returns the pair the first rotation issued.
        """
        claims = self.tokens.verify(refresh_token, "refresh")
        now = utcnow()
        async with self.sessions() as session, session.begin():
            repo = SessionRepository(session)
            found = await repo.get_refresh(claims.jti)
            if found is None or found[1].id != claims.sid or found[2].id != claims.user_id:
                raise TokenInvalid("refresh token is invalid")
            _, auth_session, user = found
            if auth_session.revoked_at is not None:
                raise TokenInvalid("refresh token has been revoked")
            claimed = await repo.claim_refresh(claims.jti, now)
            if not claimed:
                used_at = await repo.used_at(claims.jti)
            elif not user.is_active:
                raise TokenInvalid("account is deactivated")
            else:
                view = UserView.of(user)
                access = self.tokens.issue(view.token_user(), "access", auth_session.id)
                refresh = self.tokens.issue(view.token_user(), "refresh", auth_session.id)
                expires = now + timedelta(seconds=self.tokens.refresh_ttl)
                session.add(
                    RefreshToken(
                        jti=refresh.jti,
                        session_id=auth_session.id,
                        parent_jti=claims.jti,
                        issued_at=now,
                        expires_at=expires,
                    )
                )
                auth_session.expires_at = expires
        grace = self.cfg.sessions.refresh_grace
        if claimed:
            if grace > 0:
                client = fingerprint(client_ip, user_agent)
                sealed = seal(refresh_token, client, access.token, refresh.token)
                with contextlib.suppress(StoreUnavailable):  # then a race is treated as reuse
                    await self.store.put(f"grace:{claims.jti}", sealed, grace)
            return self._pair(access.token, refresh.token)
        if grace > 0 and (used_at is None or (now - used_at).total_seconds() <= grace):
            client = fingerprint(client_ip, user_agent)
            pair = await self._grace_pair(refresh_token, claims.jti, client)
            if pair is not None:
                return pair
        async with self.sessions() as session, session.begin():
            await SessionRepository(session).revoke(claims.sid, utcnow(), "reuse")
        await self.store.revoke_sessions([claims.sid], self.revocation_ttl)
        _LOGGER.warning("refresh token reuse: session of user %s revoked", claims.user_id)
        raise TokenInvalid("refresh token was already used; the session has been revoked")

    async def _grace_pair(self, refresh_token: str, jti: str, client: str) -> TokenPair | None:
        """The pair a racing rotation issued (it may still be storing it: wait briefly)."""
        for _ in range(GRACE_WAIT_STEPS):
            try:
                sealed = await self.store.get(f"grace:{jti}")
            except StoreUnavailable:
                return None
            if sealed is not None:
                pair = unseal(refresh_token, client, sealed)
                return None if pair is None else self._pair(*pair)
            await asyncio.sleep(GRACE_WAIT_STEP)
        return None

    async def authenticate(self, access_token: str) -> Claims:
        """Verify an access token with the store only (no database): for proxied requests.

        A token whose signature and claims were verified once is remembered (the exact token
        string, signature included) until its ``exp``, so the hot path skips the JWT work;
        revocation is still checked on every call.
        """
        claims = self.authenticate_now(access_token)
        if claims is not None:
            return claims
        # The store must be asked (a Redis round trip); the token is verified and cached now.
        claims = self._verified_claims(access_token)
        if await self.store.is_session_revoked(claims.sid):
            raise TokenInvalid("token has been revoked")
        return self._current(claims)

    def authenticate_now(self, access_token: str) -> Claims | None:
        """``authenticate`` without waiting; ``None`` when the store needs a round trip.

        Raises ``TokenInvalid`` (or ``Unavailable``) exactly as ``authenticate`` does.
        """
        claims = self._verified_claims(access_token)
        if self._revocation_checks:
            revoked = self.store.revoked_now(claims.sid)
            if revoked is None:
                return None
            if revoked:
                raise TokenInvalid("token has been revoked")
        return self._current(claims)

    def _verified_claims(self, access_token: str) -> Claims:
        """The claims of a valid access token (revocation aside), from the cache when known."""
        claims = self._verified.get(access_token)
        if claims is None or claims.exp + self._leeway <= time.time():
            claims = self.tokens.verify(access_token, "access")
            if len(self._verified) >= VERIFIED_CACHE_SIZE:
                del self._verified[next(iter(self._verified))]  # the oldest entry
            self._verified[access_token] = claims
        return claims

    def _current(self, claims: Claims) -> Claims:
        """``claims`` of an unrevoked session, checked against the user's current state."""
        if not self._revocation_checks:
            return claims
        if self._on_stale_closed and self._stale():
            raise Unavailable("session state is stale (database and Redis unreachable)")
        state = self.feed.user_state(claims.user_id)
        if state is not None:
            if not state.is_active:
                raise TokenInvalid("account is deactivated")
            if state.is_admin != claims.is_admin:
                claims = replace(claims, is_admin=state.is_admin)
        return claims

    def _stale(self) -> bool:
        """True when neither the store nor the database feed is current."""
        if self.store.synced:
            return False
        return time.time() - self.feed.fresh_at > self.cfg.sessions.max_staleness

    async def logout(self, access_token: str) -> None:
        """End every session of the token's user: refresh tokens and access tokens alike."""
        claims, _ = await self.current_user(access_token)
        async with self.sessions() as session, session.begin():
            sids = await SessionRepository(session).revoke_all_for_user(
                claims.user_id, utcnow(), "logout"
            )
        await self.store.revoke_sessions(sids, self.revocation_ttl)

    async def reconcile_quietly(self) -> None:
        """``reconcile`` for the store's resync hook."""
        replayed = await self.reconcile()
        _LOGGER.debug("replayed %d recent revocations into the store", replayed)

    async def reconcile(self) -> int:
        """Replay recent revocations from the database into the store; return how many."""
        since = utcnow() - timedelta(seconds=self.revocation_ttl)
        async with self.sessions() as session:
            sids = await SessionRepository(session).revoked_since(since)
        await self.store.revoke_sessions(list(sids), self.revocation_ttl)
        return len(sids)
