"""Passwordless login with an email code (SPEC §2): ask for a code, log in or sign up with it.

- ``request_email_code``: a 6-digit code (``secrets``) valid ``auth.email_code_ttl`` (10 min),
  mailed to the address whether or not it has an account (that is how new users sign up), so
  the answer and the work done are the same for every address. A new request replaces the old
  code. Counted against the per-address and per-IP mail limits.
- ``login_with_code``: at most ``auth.email_code_max_attempts`` (5) guesses per code, counted
  atomically before comparing (so parallel guesses cannot exceed it); compared in constant
  time; a right code is deleted in the same transaction (it works once). Known user: a new
  session, and the email counts as verified. Unknown address: a single-use registration token
  (``auth.registration_token_ttl``, 15 min). Deactivated user: 403.
- ``complete_registration``: spends the registration token and creates the account, verified,
  with or without a password; a taken username or email (409) leaves the token usable.

Codes are stored only as ``HMAC-SHA256(code_key, email_key + code)``. A plain SHA-256 of one of
a million codes is reversed by trying them all; the HMAC key (``ServiceBase.code_key``) is
derived from the JWT signing secret, which is not in the database, so a database dump alone
reveals no code. Rotating the JWT secret invalidates the codes in flight (10 minutes' worth).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from auth import opaque
from auth.accounts import insert_user
from auth.base import ServiceBase
from auth.email_code_repository import EmailCodeRepository, RegistrationTokenRepository
from auth.errors import AccountNotAllowed, InvalidCredentials, TokenInvalid
from auth.models import RegistrationToken, utcnow
from auth.repository import UserRepository
from auth.schemas import CompleteRegistrationInput, email_key
from auth.templates import human_duration
from auth.views import LoginResult, RegistrationRequired, UserView

WRONG_CODE = "the code is wrong, expired, already used or was tried too many times"
BAD_REGISTRATION_TOKEN = "registration token is invalid, expired or already used"


class EmailCodeFlows(ServiceBase):
    """Sign-in codes by mail, and sign-up for addresses that have no account yet."""

    def _code_hash(self, key: str, code: str) -> str:
        return opaque.keyed_hash(self.code_key, key, code)

    async def request_email_code(self, email: str, client_ip: str | None = None) -> None:
        """Mail a fresh code to ``email`` (known or not), replacing any earlier one."""
        key = email_key(email)
        await self.charge_email(key, client_ip)
        code = opaque.new_code()
        ttl = self.cfg.auth.email_code_ttl
        now = utcnow()
        async with self.sessions() as session, session.begin():
            codes = EmailCodeRepository(session)
            await codes.purge_expired(now)
            await codes.replace(key, self._code_hash(key, code), now, now + timedelta(seconds=ttl))
        mail = self.templates.render(
            "code", email, email=email, code=code, expires=human_duration(ttl)
        )
        self.mailer.send_later(mail)

    async def login_with_code(
        self, email: str, code: str, client_ip: str | None = None
    ) -> LoginResult | RegistrationRequired:
        """Spend a code: a session for a known user, a registration token for a new address.

        Wrong codes also count against the per-IP login limit (one IP guessing codes of many
        addresses is refused with 429 like one guessing passwords).
        """
        key = email_key(email)
        await self.count_login_attempt(None, client_ip)
        now = utcnow()
        candidate = self._code_hash(key, code)
        view: UserView | None = None
        deactivated = False
        registration: str | None = None
        async with self.sessions() as session, session.begin():
            codes = EmailCodeRepository(session)
            live = await codes.spend_attempt(key, now, self.cfg.auth.email_code_max_attempts)
            # SECURITY: constant-time comparison; the attempt was counted before it.
            matched = live is not None and opaque.same_secret(candidate, live[1])
            if live is not None and matched:
                matched = await codes.consume(*live)
            if matched:
                user = await UserRepository(session).get_by_email_key(key)
                if user is None:
                    registration = await self._offer_registration(session, email, now)
                elif not user.is_active:
                    deactivated = True
                else:
                    user.email_verified = True  # the code proved the mailbox
                    view = UserView.of(user)
        if not matched:
            raise InvalidCredentials(WRONG_CODE)
        await self.login_attempt_succeeded(None, client_ip)
        if deactivated:
            raise AccountNotAllowed("account is deactivated")
        if registration is not None:
            return RegistrationRequired(registration, int(self.cfg.auth.registration_token_ttl))
        assert view is not None
        return LoginResult(await self._open_session(view), view)

    async def _offer_registration(self, session: AsyncSession, email: str, now: datetime) -> str:
        """A new registration token for ``email`` (stored as its SHA-256)."""
        token = opaque.new_link_token()
        tokens = RegistrationTokenRepository(session)
        await tokens.purge_expired(now)
        ttl = timedelta(seconds=self.cfg.auth.registration_token_ttl)
        await tokens.add(
            RegistrationToken(
                email=email,
                token_hash=opaque.hash_token(token),
                created_at=now,
                expires_at=now + ttl,
            )
        )
        return token

    async def complete_registration(self, data: CompleteRegistrationInput) -> LoginResult:
        """Create the account of an address proven by a code; 401 for a bad token."""
        token_hash = opaque.hash_token(data.registration_token)
        async with self.sessions() as session:
            live = await RegistrationTokenRepository(session).is_live(token_hash, utcnow())
        if not live:  # before paying for bcrypt
            raise TokenInvalid(BAD_REGISTRATION_TOKEN)
        password_hash = None
        if data.password is not None:
            password_hash = await self.hasher.hash(data.password)
        async with self.sessions() as session, session.begin():
            email = await RegistrationTokenRepository(session).consume(token_hash, utcnow())
            if email is None:
                raise TokenInvalid(BAD_REGISTRATION_TOKEN)
            # A Conflict here rolls the transaction back: the token stays usable.
            user = await insert_user(
                session,
                email=email,
                username=data.username,
                first_name=data.first_name,
                last_name=data.last_name,
                password_hash=password_hash,
                is_admin=False,
                email_verified=True,
            )
            view = UserView.of(user)
        return LoginResult(await self._open_session(view), view)
