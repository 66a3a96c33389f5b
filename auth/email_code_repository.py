"""Email sign-in codes and registration tokens: each query atomic on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, exists, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from auth.models import EmailCode, RegistrationToken


class EmailCodeRepository:
    """At most one live code per address, with an attempt counter."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def replace(self, key: str, code_hash: str, now: datetime, expires_at: datetime) -> None:
        """Store the code of address ``key``, replacing any earlier one (a single upsert, so
        two requests at once leave exactly one code)."""
        dialect = self.session.get_bind().dialect.name
        insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
        statement = insert(EmailCode).values(
            email_key=key, code_hash=code_hash, attempts=0, created_at=now, expires_at=expires_at
        )
        await self.session.execute(
            statement.on_conflict_do_update(
                index_elements=[EmailCode.email_key],
                set_={
                    "code_hash": statement.excluded.code_hash,
                    "attempts": 0,
                    "created_at": statement.excluded.created_at,
                    "expires_at": statement.excluded.expires_at,
                },
            )
        )

    async def spend_attempt(
        self, key: str, now: datetime, max_attempts: int
    ) -> tuple[int, str] | None:
        """Count one attempt on the live code of ``key``; return its (id, hash), or None when
        there is no code, it expired or its attempts are used up.

        One ``UPDATE … SET attempts = attempts + 1 WHERE attempts < max RETURNING``: the row
        lock (PostgreSQL) or the single writer (SQLite) serialises parallel guesses, so no more
        than ``max_attempts`` of them are ever compared with the code.
        """
        result = await self.session.execute(
            update(EmailCode)
            .where(
                EmailCode.email_key == key,
                EmailCode.expires_at > now,
                EmailCode.attempts < max_attempts,
            )
            .values(attempts=EmailCode.attempts + 1)
            .returning(EmailCode.id, EmailCode.code_hash)
        )
        row = result.first()
        return None if row is None else (row[0], row[1])

    async def consume(self, code_id: int, code_hash: str) -> bool:
        """Delete a code that matched; False when it was replaced or spent meanwhile."""
        result = await self.session.execute(
            delete(EmailCode)
            .where(EmailCode.id == code_id, EmailCode.code_hash == code_hash)
            .returning(EmailCode.id)
        )
        return result.first() is not None

    async def purge_expired(self, now: datetime) -> None:
        """Forget codes that can no longer be used."""
        await self.session.execute(delete(EmailCode).where(EmailCode.expires_at <= now))


class RegistrationTokenRepository:
    """Single-use tokens that let an address proven by a code create its account."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(self, token: RegistrationToken) -> None:
        """Insert a token."""
        self.session.add(token)
        await self.session.flush()

    async def is_live(self, token_hash: str, now: datetime) -> bool:
        """True when the token exists, unused and unexpired (a cheap look before real work)."""
        found = await self.session.scalar(
            select(
                exists().where(
                    RegistrationToken.token_hash == token_hash,
                    RegistrationToken.used_at.is_(None),
                    RegistrationToken.expires_at > now,
                )
            )
        )
        return bool(found)

    async def consume(self, token_hash: str, now: datetime) -> str | None:
        """Spend a live token atomically; return its email, or None if unknown/used/expired."""
        result = await self.session.execute(
            update(RegistrationToken)
            .where(
                RegistrationToken.token_hash == token_hash,
                RegistrationToken.used_at.is_(None),
                RegistrationToken.expires_at > now,
            )
            .values(used_at=now)
            .returning(RegistrationToken.email)
        )
        return result.scalar_one_or_none()

    async def purge_expired(self, now: datetime) -> None:
        """Forget tokens that can no longer be used."""
        await self.session.execute(
            delete(RegistrationToken).where(RegistrationToken.expires_at <= now)
        )
