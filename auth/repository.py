"""Queries named for their intent; each repository works inside a session it is given."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import delete, exists, func, insert, or_, select, union_all, update
from sqlalchemy.ext.asyncio import AsyncSession

from auth.models import AuthSession, OneTimeToken, RefreshToken, RevokedSessionTombstone, User


class UserRepository:
    """Users by id, email and username."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(self, user_id: int) -> User | None:
        """The user with ``user_id``."""
        return await self.session.get(User, user_id)

    async def get_by_email_key(self, key: str) -> User | None:
        """The user whose normalised email is ``key``."""
        result = await self.session.execute(select(User).where(User.email_key == key))
        return result.scalar_one_or_none()

    async def email_taken(self, key: str) -> bool:
        """True when an account has this normalised email."""
        return bool(await self.session.scalar(select(exists().where(User.email_key == key))))

    async def username_taken(self, key: str) -> bool:
        """True when an account has this normalised username."""
        return bool(await self.session.scalar(select(exists().where(User.username_key == key))))

    async def changed_since(self, since: datetime) -> list[tuple[int, bool, bool]]:
        """(id, is_admin, is_active) of users updated after ``since``."""
        result = await self.session.execute(
            select(User.id, User.is_admin, User.is_active).where(User.updated_at > since)
        )
        return [(row[0], row[1], row[2]) for row in result]

    async def add(self, user: User) -> User:
        """Insert ``user`` and flush to get its id."""
        self.session.add(user)
        await self.session.flush()
        return user

    async def page(self, email_prefix: str, limit: int, offset: int) -> tuple[list[User], int]:
        """Users whose normalised email starts with ``email_prefix``, by id; and their count."""
        condition = User.email_key.startswith(email_prefix, autoescape=True)
        total = await self.session.scalar(select(func.count()).select_from(User).where(condition))
        result = await self.session.execute(
            select(User).where(condition).order_by(User.id).limit(limit).offset(offset)
        )
        return list(result.scalars()), int(total or 0)

    async def lock_active_admins(self) -> list[int]:
        """Ids of the active admins, their rows locked until the transaction ends (PostgreSQL
        ``FOR UPDATE``, in id order so that two such transactions cannot deadlock; SQLite has a
        single writer). A second transaction waits here, then sees the first one's changes."""
        result = await self.session.execute(
            select(User.id)
            .where(User.is_admin.is_(True), User.is_active.is_(True))
            .order_by(User.id)
            .with_for_update()
        )
        return list(result.scalars())

    async def get_for_update(self, user_id: int) -> User | None:
        """The user with ``user_id``, read afresh and locked until the transaction ends."""
        result = await self.session.execute(
            select(User)
            .where(User.id == user_id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
        return result.scalar_one_or_none()

    async def delete(self, user_id: int) -> None:
        """Delete a user; the database cascades to its sessions and tokens."""
        await self.session.execute(delete(User).where(User.id == user_id))


class SessionRepository:
    """Login sessions and the refresh tokens of each."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(self, auth_session: AuthSession, refresh: RefreshToken) -> None:
        """Insert a new session with its first refresh token."""
        self.session.add(auth_session)
        await self.session.flush()
        self.session.add(refresh)
        await self.session.flush()

    async def get_with_user(self, sid: str) -> tuple[AuthSession, User] | None:
        """A session and its user."""
        result = await self.session.execute(
            select(AuthSession, User)
            .join(User, User.id == AuthSession.user_id)
            .where(AuthSession.id == sid)
        )
        row = result.first()
        return None if row is None else (row[0], row[1])

    async def get_refresh(self, jti: str) -> tuple[RefreshToken, AuthSession, User] | None:
        """A refresh token with its session and user."""
        result = await self.session.execute(
            select(RefreshToken, AuthSession, User)
            .join(AuthSession, AuthSession.id == RefreshToken.session_id)
            .join(User, User.id == AuthSession.user_id)
            .where(RefreshToken.jti == jti)
        )
        row = result.first()
        return None if row is None else (row[0], row[1], row[2])

    async def used_at(self, jti: str) -> datetime | None:
        """When a refresh token was rotated (read afresh, after a lost race)."""
        result = await self.session.execute(
            select(RefreshToken.used_at).where(RefreshToken.jti == jti)
        )
        return result.scalar_one_or_none()

    async def claim_refresh(self, jti: str, now: datetime) -> bool:
        """Mark a refresh token used; False when it had been used already (atomic)."""
        result = await self.session.execute(
            update(RefreshToken)
            .where(RefreshToken.jti == jti, RefreshToken.used_at.is_(None))
            .values(used_at=now)
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]

    async def revoke(self, sid: str, now: datetime, reason: str) -> None:
        """Revoke one session (its whole refresh-token chain)."""
        await self.session.execute(
            update(AuthSession)
            .where(AuthSession.id == sid, AuthSession.revoked_at.is_(None))
            .values(revoked_at=now, revoke_reason=reason)
        )

    async def revoke_all_for_user(self, user_id: int, now: datetime, reason: str) -> list[str]:
        """Revoke every live session of a user; return their ids."""
        result = await self.session.execute(
            update(AuthSession)
            .where(AuthSession.user_id == user_id, AuthSession.revoked_at.is_(None))
            .values(revoked_at=now, revoke_reason=reason)
            .returning(AuthSession.id)
        )
        return list(result.scalars())

    async def revoked_since(self, since: datetime) -> Sequence[str]:
        """Ids of sessions revoked after ``since`` (for replaying into the store), those of
        deleted users included: their rows are gone, their tombstones say it instead."""
        tombstone = RevokedSessionTombstone
        result = await self.session.execute(
            union_all(
                select(AuthSession.id).where(AuthSession.revoked_at > since),
                select(tombstone.session_id).where(tombstone.revoked_at > since),
            )
        )
        return list(result.scalars())

    async def tombstone_sessions_of(
        self, user_id: int, now: datetime, since: datetime
    ) -> list[str]:
        """Tombstone every session of ``user_id`` that a live access token may still name, in
        the transaction that deletes the user (whose sessions then cascade away): those revoked
        after ``since`` (with their time of revocation) and those not revoked at all, which the
        deletion ends ``now`` (a login that raced the deactivation). Return the latter's ids."""
        result = await self.session.execute(
            select(AuthSession.id, AuthSession.revoked_at).where(
                AuthSession.user_id == user_id,
                or_(AuthSession.revoked_at.is_(None), AuthSession.revoked_at > since),
            )
        )
        rows = [(sid, revoked_at) for sid, revoked_at in result]
        if rows:
            await self.session.execute(
                insert(RevokedSessionTombstone),
                [{"session_id": sid, "revoked_at": at or now} for sid, at in rows],
            )
        return [sid for sid, revoked_at in rows if revoked_at is None]

    async def prune_tombstones(self, before: datetime) -> int:
        """Forget tombstones of sessions revoked before ``before``: no access token of theirs
        is alive any more. Return how many went."""
        result = await self.session.execute(
            delete(RevokedSessionTombstone).where(RevokedSessionTombstone.revoked_at < before)
        )
        return int(result.rowcount)  # type: ignore[attr-defined]


class OneTimeTokenRepository:
    """Hashed single-use tokens sent by mail."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(self, token: OneTimeToken) -> None:
        """Insert a token."""
        self.session.add(token)
        await self.session.flush()

    async def consume(self, token_hash: str, purpose: str, now: datetime) -> int | None:
        """Spend a live token atomically; return its user id, or None if unknown/used/expired."""
        result = await self.session.execute(
            update(OneTimeToken)
            .where(
                OneTimeToken.token_hash == token_hash,
                OneTimeToken.purpose == purpose,
                OneTimeToken.used_at.is_(None),
                OneTimeToken.expires_at > now,
            )
            .values(used_at=now)
            .returning(OneTimeToken.user_id)
        )
        return result.scalar_one_or_none()

    async def is_live(self, token_hash: str, purpose: str, now: datetime) -> bool:
        """True when the token exists, unused and unexpired (a cheap look before real work)."""
        found = await self.session.scalar(
            select(
                exists().where(
                    OneTimeToken.token_hash == token_hash,
                    OneTimeToken.purpose == purpose,
                    OneTimeToken.used_at.is_(None),
                    OneTimeToken.expires_at > now,
                )
            )
        )
        return bool(found)

    async def retire_for_user(self, user_id: int, purpose: str, now: datetime) -> None:
        """Spend every live token of a user for ``purpose`` (a new one replaces them)."""
        await self.session.execute(
            update(OneTimeToken)
            .where(
                OneTimeToken.user_id == user_id,
                OneTimeToken.purpose == purpose,
                OneTimeToken.used_at.is_(None),
            )
            .values(used_at=now)
        )
