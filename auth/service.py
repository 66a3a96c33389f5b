"""AuthService: the account and session rules of SPEC §2, callable from HTTP, CLI and tests."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from auth import opaque
from auth.errors import (
    AccountNotAllowed,
    Conflict,
    InvalidCredentials,
    NotFound,
    TokenInvalid,
    ValidationFailed,
)
from auth.mailer import Mail, Mailer
from auth.models import AuthSession, OneTimeToken, RefreshToken, User, utcnow
from auth.passwords import PasswordHasher
from auth.repository import OneTimeTokenRepository, SessionRepository, UserRepository
from auth.schemas import CreateUserInput, RegisterInput, email_key, username_key
from auth.store import Store
from auth.tokens import Claims, TokenService, TokenUser
from config import GatewayConfig

_LOGGER = logging.getLogger(__name__)
VERIFY_EMAIL = "verify_email"
VERIFIED_CACHE_SIZE = 50_000


@dataclass(frozen=True, slots=True)
class UserView:
    """A user as the API shows it."""

    id: int
    email: str
    username: str
    first_name: str
    last_name: str
    is_admin: bool
    is_active: bool
    email_verified: bool

    @classmethod
    def of(cls, user: User) -> UserView:
        """Copy the visible fields of a row."""
        return cls(
            id=user.id,
            email=user.email,
            username=user.username,
            first_name=user.first_name,
            last_name=user.last_name,
            is_admin=user.is_admin,
            is_active=user.is_active,
            email_verified=user.email_verified,
        )

    def token_user(self) -> TokenUser:
        """What the tokens of this user carry."""
        return TokenUser(self.id, self.email, self.is_admin, self.first_name, self.last_name)


@dataclass(frozen=True, slots=True)
class TokenPair:
    """An access and a refresh token with their lifetimes."""

    access_token: str
    refresh_token: str
    expires_in: int
    refresh_expires_in: int


@dataclass(frozen=True, slots=True)
class LoginResult:
    """Tokens and the user they belong to."""

    tokens: TokenPair
    user: UserView


class AuthService:
    """Registration, verification, login, refresh, logout and token checks."""

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
        # An access token may outlive its session's revocation by at most this long.
        self.revocation_ttl = tokens.access_ttl + int(cfg.jwt.leeway) + 1
        self._leeway = cfg.jwt.leeway
        self._verified: dict[str, Claims] = {}

    # --- accounts -------------------------------------------------------------------------

    async def register(self, data: RegisterInput) -> UserView:
        """Create an unverified account and mail it a verification link."""
        password_hash = await self.hasher.hash(data.password)
        token = opaque.new_link_token()
        now = utcnow()
        async with self.sessions() as session, session.begin():
            user = await self._insert_user(
                session,
                email=data.email,
                username=data.username,
                first_name=data.first_name,
                last_name=data.last_name,
                password_hash=password_hash,
                is_admin=False,
                email_verified=False,
            )
            await OneTimeTokenRepository(session).add(self._verification_row(user.id, token, now))
            view = UserView.of(user)
        self._mail_verification(view, token)
        return view

    async def create_user(self, data: CreateUserInput) -> UserView:
        """Create an account directly (CLI): optionally admin and already verified."""
        password_hash = await self.hasher.hash(data.password)
        async with self.sessions() as session, session.begin():
            user = await self._insert_user(
                session,
                email=data.email,
                username=data.username,
                first_name=data.first_name,
                last_name=data.last_name,
                password_hash=password_hash,
                is_admin=data.is_admin,
                email_verified=data.email_verified,
            )
            return UserView.of(user)

    async def _insert_user(self, session: AsyncSession, **fields: Any) -> User:
        users = UserRepository(session)
        problems = []
        if await users.email_taken(email_key(fields["email"])):
            problems.append("email: already registered")
        if await users.username_taken(username_key(fields["username"])):
            problems.append("username: already taken")
        if problems:
            raise Conflict(*problems)
        user = User(
            email_key=email_key(fields["email"]),
            username_key=username_key(fields["username"]),
            is_active=True,
            **fields,
        )
        try:
            return await users.add(user)
        except IntegrityError:  # a concurrent registration won the race
            raise Conflict("email or username: already taken") from None

    def _verification_row(self, user_id: int, token: str, now: datetime) -> OneTimeToken:
        ttl = timedelta(seconds=self.cfg.auth.email_verification_ttl)
        return OneTimeToken(
            user_id=user_id,
            purpose=VERIFY_EMAIL,
            token_hash=opaque.hash_token(token),
            created_at=now,
            expires_at=now + ttl,
        )

    def _mail_verification(self, user: UserView, token: str) -> None:
        link = self.cfg.email.verify_url.replace("{token}", token)
        hours = self.cfg.auth.email_verification_ttl / 3600
        text = (
            f"Hello {user.first_name or user.username},\n\n"
            f"Please confirm your email address by opening this link:\n\n{link}\n\n"
            f"The link works once and expires in {hours:g} hours.\n"
            "If you did not create an account, ignore this message.\n"
        )
        html = (
            f"<p>Hello {_escape(user.first_name or user.username)},</p>"
            "<p>Please confirm your email address: "
            f'<a href="{_escape(link)}">verify my email</a></p>'
            f"<p>The link works once and expires in {hours:g} hours.</p>"
        )
        self.mailer.send_later(Mail(user.email, "Verify your email address", text, html))

    async def verify_email(self, token: str) -> None:
        """Spend a verification token and mark its user's email verified."""
        if not opaque.is_link_token(token):
            raise ValidationFailed("token: must be 64 hexadecimal characters")
        now = utcnow()
        async with self.sessions() as session, session.begin():
            user_id = await OneTimeTokenRepository(session).consume(
                opaque.hash_token(token), VERIFY_EMAIL, now
            )
            if user_id is None:
                raise NotFound("verification token is invalid, expired or already used")
            user = await UserRepository(session).get(user_id)
            if user is None:
                raise NotFound("verification token is invalid, expired or already used")
            user.email_verified = True

    async def resend_verification(self, email: str) -> None:
        """Mail a fresh link to an unverified account; silently nothing otherwise."""
        key = email_key(email)
        wait = await self.store.hit(f"resend:{key}", 1, self.cfg.auth.resend_interval)
        if wait:
            _LOGGER.info("verification resend rate-limited")
            return
        token = opaque.new_link_token()
        now = utcnow()
        async with self.sessions() as session, session.begin():
            user = await UserRepository(session).get_by_email_key(key)
            if user is None or user.email_verified or not user.is_active:
                return
            tokens = OneTimeTokenRepository(session)
            await tokens.retire_for_user(user.id, VERIFY_EMAIL, now)
            await tokens.add(self._verification_row(user.id, token, now))
            view = UserView.of(user)
        self._mail_verification(view, token)

    # --- sessions -------------------------------------------------------------------------

    async def login(self, email: str, password: str) -> LoginResult:
        """Check a password and open a new session."""
        async with self.sessions() as session:
            user = await UserRepository(session).get_by_email_key(email_key(email))
        password_ok = await self.hasher.verify(password, user.password_hash if user else None)
        if user is None or not password_ok:
            raise InvalidCredentials("invalid email or password")
        if not user.is_active:
            raise AccountNotAllowed("account is deactivated")
        if self.cfg.auth.require_verified_email and not user.email_verified:
            raise AccountNotAllowed("email not verified")
        view = UserView.of(user)
        return LoginResult(await self._open_session(view), view)

    async def _open_session(self, user: UserView) -> TokenPair:
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

    async def refresh(self, refresh_token: str) -> TokenPair:
        """Rotate a refresh token; a reused one revokes its whole session (theft)."""
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
            reused = not await repo.claim_refresh(claims.jti, now)
            if reused:
                await repo.revoke(auth_session.id, now, "reuse")
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
        if reused:
            await self.store.revoke_sessions([claims.sid], self.revocation_ttl)
            _LOGGER.warning("refresh token reuse: session of user %s revoked", claims.user_id)
            raise TokenInvalid("refresh token was already used; the session has been revoked")
        return self._pair(access.token, refresh.token)

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

    async def authenticate(self, access_token: str) -> Claims:
        """Verify an access token with the store only (no database): for proxied requests.

        A token whose signature and claims were verified once is remembered (the exact token
        string, signature included) until its ``exp``, so the hot path skips the JWT work;
        revocation is still checked on every call.
        """
        claims = self._verified.get(access_token)
        if claims is None or claims.exp + self._leeway <= time.time():
            claims = self.tokens.verify(access_token, "access")
            if len(self._verified) >= VERIFIED_CACHE_SIZE:
                del self._verified[next(iter(self._verified))]  # the oldest entry
            self._verified[access_token] = claims
        if await self.store.is_session_revoked(claims.sid):
            raise TokenInvalid("token has been revoked")
        return claims

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


def _escape(text: str) -> str:
    return (
        text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")
    )
