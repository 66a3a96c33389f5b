"""Account flows: registration, email verification, operator changes to users."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from auth import opaque
from auth.base import ServiceBase
from auth.errors import Conflict, NotFound, RateLimited, ValidationFailed
from auth.models import OneTimeToken, User, utcnow
from auth.ratelimit import Limit
from auth.repository import OneTimeTokenRepository, SessionRepository, UserRepository
from auth.schemas import CreateUserInput, RegisterInput, email_key, username_key
from auth.views import UserView

_LOGGER = logging.getLogger(__name__)
VERIFY_EMAIL = "verify_email"


class AccountFlows(ServiceBase):
    """Creating accounts and proving their email addresses."""

    async def register(self, data: RegisterInput, client_ip: str | None = None) -> UserView:
        """Create an unverified account and mail it a verification link."""
        await self.charge_email(email_key(data.email), client_ip)
        password_hash = await self.hasher.hash(data.password)
        token = opaque.new_link_token()
        now = utcnow()
        async with self.sessions() as session, session.begin():
            user = await insert_user(
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
            user = await insert_user(
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
        self.mail_link(
            "verify_email",
            user,
            self.cfg.email.verify_url,
            token,
            self.cfg.auth.email_verification_ttl,
        )

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

    async def resend_verification(self, email: str, client_ip: str | None = None) -> None:
        """Mail a fresh link to an unverified account; silently nothing otherwise.

        Every request counts against the per-address and per-IP mail limits (429 past them,
        whether or not the address has an account); within ``auth.resend_interval`` of the
        last one, a request for the same address sends nothing and answers the same.
        """
        key = email_key(email)
        await self.charge_email(key, client_ip)
        try:
            await self.limiter.charge(Limit("resend", 1, self.cfg.auth.resend_interval), key)
        except RateLimited:
            _LOGGER.info("verification resend skipped: within resend_interval")
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

    async def update_user(
        self, email: str, *, is_admin: bool | None = None, is_active: bool | None = None
    ) -> UserView:
        """Change a user's admin flag or active state; effective on every replica within a
        poll interval. Deactivation also ends every session of the user."""
        now = utcnow()
        async with self.sessions() as session, session.begin():
            user = await UserRepository(session).get_by_email_key(email_key(email))
            if user is None:
                raise NotFound(f"no user with email {email}")
            if is_admin is not None:
                user.is_admin = is_admin
            if is_active is not None:
                user.is_active = is_active
            user.updated_at = now
            sids: list[str] = []
            if is_active is False:
                sids = await SessionRepository(session).revoke_all_for_user(
                    user.id, now, "deactivated"
                )
            view = UserView.of(user)
        self.feed.note_user(user)
        if sids:
            await self.store.revoke_sessions(sids, self.revocation_ttl)
        return view


async def insert_user(session: AsyncSession, **fields: Any) -> User:
    """Add a user with ``fields``; Conflict (409) when the email or username is taken."""
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
