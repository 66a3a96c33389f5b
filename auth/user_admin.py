"""User management for admins: list, read, change and delete accounts.

Every method first checks the caller's access token against the database (session live, user
active, ``is_admin`` as stored now, not as the token claims). Unknown ids are 404.

**The last active admin** can be neither demoted, deactivated nor deleted (409). The rule is
checked inside the changing transaction, after locking every active admin's row (PostgreSQL
``SELECT … FOR UPDATE``, in id order; SQLite runs one writer at a time): when two admins demote
each other at once, the second transaction waits for the first, then counts again and is
refused.

Changes of ``is_admin`` / ``is_active`` bump ``users.updated_at`` (the change feed every replica
polls) and are noted in this process's feed at once, so tokens already issued follow them on
the next request. Deactivation and deletion end every session of the user.

**Deletion leaves tombstones.** The user's sessions cascade away with its row, and with them the
revocations a replica (re)starting replays from the database. The deleting transaction first
copies every session an access token may still name into ``revoked_session_tombstones``
(session ids and times only), which the change feed and the store's replay read like any other
revocation until those tokens have expired; older tombstones are pruned after each deletion.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

from auth.base import ServiceBase
from auth.errors import Conflict, NotFound, NotPermitted
from auth.models import User, utcnow
from auth.repository import SessionRepository, UserRepository
from auth.schemas import MAX_ROW_ID, UserListQuery, UserPatchInput, email_key
from auth.views import UserPage, UserView

_LOGGER = logging.getLogger(__name__)
NO_SUCH_USER = "no user with this id"
LAST_ADMIN = "the last active admin cannot be demoted, deactivated or deleted"


class UserAdmin(ServiceBase):
    """Admin-only operations on accounts."""

    async def require_admin(self, access_token: str) -> UserView:
        """The caller, if the database says it is an active admin; else 401/403."""
        _, caller = await self.current_user(access_token)
        if not caller.is_admin:
            raise NotPermitted("admin rights are required")
        return caller

    async def list_users(self, access_token: str, query: UserListQuery) -> UserPage:
        """Users by id, optionally only those whose email starts with ``email_prefix``."""
        await self.require_admin(access_token)
        prefix = email_key(query.email_prefix)
        async with self.sessions() as session:
            users, total = await UserRepository(session).page(prefix, query.limit, query.offset)
        return UserPage([UserView.of(u) for u in users], total, query.limit, query.offset)

    async def get_user(self, access_token: str, user_id: int) -> UserView:
        """One user by id."""
        await self.require_admin(access_token)
        async with self.sessions() as session:
            user = await UserRepository(session).get(user_id) if _valid_id(user_id) else None
        if user is None:
            raise NotFound(NO_SUCH_USER)
        return UserView.of(user)

    async def patch_user(
        self, access_token: str, user_id: int, changes: UserPatchInput
    ) -> UserView:
        """Apply the fields given; 409 if that would leave no active admin."""
        await self.require_admin(access_token)
        if not _valid_id(user_id):
            raise NotFound(NO_SUCH_USER)
        demoting = changes.is_admin is False or changes.is_active is False
        now = utcnow()
        sids: list[str] = []
        async with self.sessions() as session, session.begin():
            users = UserRepository(session)
            admins = await users.lock_active_admins() if demoting else []
            user = await users.get_for_update(user_id)
            if user is None:
                raise NotFound(NO_SUCH_USER)
            if demoting and admins == [user.id]:
                raise Conflict(LAST_ADMIN)
            was_active = user.is_active
            flags = (user.is_admin, user.is_active)
            for field, value in changes.model_dump(exclude_none=True).items():
                setattr(user, field, value)
            user.updated_at = now
            if was_active and not user.is_active:
                sids = await SessionRepository(session).revoke_all_for_user(
                    user.id, now, "deactivated"
                )
            view = UserView.of(user)
        if (user.is_admin, user.is_active) != flags:
            self.feed.note_user(user)
        await self.store.revoke_sessions(sids, self.revocation_ttl)
        return view

    async def delete_user(self, access_token: str, user_id: int) -> None:
        """Delete a user and end every session of it; 409 for the last active admin.

        The sessions are revoked (database and store) and the user deactivated first, in a
        transaction of its own, then the row is deleted (its sessions and tokens cascade away):
        a replica that learns of changes from the database feed sees the revocation before the
        rows are gone. The deleting transaction also writes a tombstone of each session whose
        access tokens may still be alive, so that a replica started later (or a Redis that lost
        its keys) still learns of the revocations from the database. It locks the user's row
        first: a session opened meanwhile is then either committed before it looks, or waits
        and fails on the deleted user.
        """
        await self.require_admin(access_token)
        if not _valid_id(user_id):
            raise NotFound(NO_SUCH_USER)
        now = utcnow()
        async with self.sessions() as session, session.begin():
            users = UserRepository(session)
            admins = await users.lock_active_admins()
            user: User | None = await users.get_for_update(user_id)
            if user is None:
                raise NotFound(NO_SUCH_USER)
            if admins == [user.id]:
                raise Conflict(LAST_ADMIN)
            user.is_active = False
            user.updated_at = now
            sids = await SessionRepository(session).revoke_all_for_user(user.id, now, "deleted")
        self.feed.note_user(user)
        await self.store.revoke_sessions(sids, self.revocation_ttl)
        if not self.store.synced:
            # Without Redis, other replicas learn of it only from their database feed: give
            # them two poll intervals to see the deactivation before the row disappears.
            await asyncio.sleep(2 * self.cfg.sessions.poll_interval)
        ended: list[str] = []
        async with self.sessions() as session, session.begin():
            users = UserRepository(session)
            if await users.get_for_update(user_id) is not None:  # else deleted meanwhile
                now = utcnow()
                horizon = now - timedelta(seconds=self.revocation_ttl)
                ended = await SessionRepository(session).tombstone_sessions_of(
                    user_id, now, horizon
                )
                await users.delete(user_id)
        # Sessions opened after the first transaction (a login that raced the deactivation).
        await self.store.revoke_sessions(ended, self.revocation_ttl)
        _LOGGER.info("user %s deleted (%d sessions ended)", user_id, len(sids) + len(ended))
        await self._prune_tombstones()

    async def _prune_tombstones(self) -> None:
        """Forget tombstones older than any live access token (best effort: a failure only
        keeps them until the next deletion; the feed never reads past its horizon anyway)."""
        horizon = utcnow() - timedelta(seconds=self.revocation_ttl)
        try:
            async with self.sessions() as session, session.begin():
                pruned = await SessionRepository(session).prune_tombstones(horizon)
        except Exception as exc:
            _LOGGER.warning("could not prune revoked-session tombstones: %s", exc)
            return
        if pruned:
            _LOGGER.debug("pruned %d revoked-session tombstones", pruned)


def _valid_id(user_id: int) -> bool:
    """Ids outside the column's range name nobody (and must not reach PostgreSQL)."""
    return 0 < user_id <= MAX_ROW_ID
