"""Forgotten and changed passwords.

- ``forgot_password``: the same answer for every address; an active account gets a single-use
  link (64 hex, stored as SHA-256, ``auth.password_reset_ttl``, 1 h) that replaces any earlier
  one. Counted against the per-address and per-IP mail limits.
- ``reset_password``: spends the link, sets the password, marks the email verified (the link
  proved the mailbox), clears the account's failed-login lockout and ends every session, as
  logout does.
- ``change_password``: with an access token and the current password (a wrong one counts
  towards the ``login_per_account`` lockout, like a failed login); ends every session,
  the caller's included, and opens a fresh one for the caller.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from auth import opaque
from auth.base import ServiceBase
from auth.errors import InvalidCredentials, NotFound, TokenInvalid
from auth.models import OneTimeToken, utcnow
from auth.repository import OneTimeTokenRepository, SessionRepository, UserRepository
from auth.schemas import email_key
from auth.views import LoginResult, UserView

_LOGGER = logging.getLogger(__name__)
PASSWORD_RESET = "password_reset"
BAD_RESET_TOKEN = "reset token is invalid, expired or already used"


class PasswordFlows(ServiceBase):
    """Reset by mailed link, and change with the current password."""

    async def forgot_password(self, email: str, client_ip: str | None = None) -> None:
        """Mail a reset link when ``email`` names an active account; nothing otherwise."""
        key = email_key(email)
        await self.charge_email(key, client_ip)
        token = opaque.new_link_token()
        ttl = self.cfg.auth.password_reset_ttl
        now = utcnow()
        async with self.sessions() as session, session.begin():
            user = await UserRepository(session).get_by_email_key(key)
            if user is None or not user.is_active:
                _LOGGER.info("password reset for an unknown or deactivated address: no mail")
                return
            tokens = OneTimeTokenRepository(session)
            await tokens.retire_for_user(user.id, PASSWORD_RESET, now)
            await tokens.add(
                OneTimeToken(
                    user_id=user.id,
                    purpose=PASSWORD_RESET,
                    token_hash=opaque.hash_token(token),
                    created_at=now,
                    expires_at=now + timedelta(seconds=ttl),
                )
            )
            view = UserView.of(user)
        self.mail_link("password_reset", view, self.cfg.email.reset_url, token, ttl)

    async def reset_password(self, token: str, password: str) -> None:
        """Spend a reset link: new password, email verified, every session ended."""
        token_hash = opaque.hash_token(token)
        async with self.sessions() as session:
            live = await OneTimeTokenRepository(session).is_live(
                token_hash, PASSWORD_RESET, utcnow()
            )
        if not live:  # before paying for bcrypt
            raise NotFound(BAD_RESET_TOKEN)
        password_hash = await self.hasher.hash(password)
        now = utcnow()
        async with self.sessions() as session, session.begin():
            user_id = await OneTimeTokenRepository(session).consume(token_hash, PASSWORD_RESET, now)
            user = None if user_id is None else await UserRepository(session).get(user_id)
            if user is None or not user.is_active:
                raise NotFound(BAD_RESET_TOKEN)
            user.password_hash = password_hash
            user.email_verified = True
            user.updated_at = now
            sids = await SessionRepository(session).revoke_all_for_user(
                user.id, now, "password_reset"
            )
            key = user.email_key
        await self.store.revoke_sessions(sids, self.revocation_ttl)
        await self.limiter.reset(self.login_per_account, key)

    async def change_password(
        self,
        access_token: str,
        current_password: str,
        new_password: str,
        client_ip: str | None = None,
    ) -> LoginResult:
        """Check the current password, set the new one, end every session, open a new one."""
        _, caller = await self.current_user(access_token)
        key = email_key(caller.email)
        await self.count_login_attempt(key, client_ip)
        async with self.sessions() as session:
            user = await UserRepository(session).get(caller.id)
        hashed = user.password_hash if user is not None else None
        if not await self.hasher.verify(current_password, hashed):
            raise InvalidCredentials("current password is wrong")
        await self.login_attempt_succeeded(key, client_ip)
        password_hash = await self.hasher.hash(new_password)
        now = utcnow()
        async with self.sessions() as session, session.begin():
            user = await UserRepository(session).get_for_update(caller.id)
            if user is None or not user.is_active:
                raise TokenInvalid("account is deactivated")
            user.password_hash = password_hash
            user.updated_at = now
            sids = await SessionRepository(session).revoke_all_for_user(
                user.id, now, "password_change"
            )
            view = UserView.of(user)
        await self.store.revoke_sessions(sids, self.revocation_ttl)
        return LoginResult(await self._open_session(view), view)
