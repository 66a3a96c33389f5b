"""Every replica follows the database: revoked sessions and changed users, polled often.

The database is the source of truth for who is revoked, demoted or deactivated. Each replica
polls it every ``sessions.poll_interval`` (default 0.5 s) for sessions revoked and users changed
since its last look (re-reading a few seconds of overlap, so rows committed late or written by
a host with a slightly different clock are not missed). Revocations go to the local store
mirror: the sessions' own rows, and the tombstones of sessions deleted with their users (so a
replica that starts after a deletion still refuses the old tokens). The current
``is_admin``/``is_active`` of changed users are kept here, and override what older tokens
claim. Redis pub/sub (when configured) pushes revocations faster; this feed is what
makes CLI changes, admin changes and a Redis outage all converge within about one interval.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from auth.models import User, utcnow
from auth.repository import SessionRepository, UserRepository
from auth.store import Store

_LOGGER = logging.getLogger(__name__)
OVERLAP = timedelta(seconds=5)


@dataclass(frozen=True, slots=True)
class UserState:
    """The current authorisation-relevant facts of a user who changed recently."""

    is_admin: bool
    is_active: bool
    seen_at: float


class ChangeFeed:
    """Polls the database for revocations and user changes; answers from memory."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        store: Store,
        *,
        interval: float,
        horizon: int,
    ) -> None:
        self._sessions = sessions
        self._store = store
        self._interval = interval
        self._horizon = horizon  # seconds: older changes cannot matter to a live access token
        self._users: dict[int, UserState] = {}
        self._since: datetime | None = None
        self.fresh_at = 0.0

    def user_state(self, user_id: int) -> UserState | None:
        """What the database last said about ``user_id``, if it changed recently."""
        return self._users.get(user_id)

    def note_user(self, user: User) -> None:
        """Record a change made by this process (no need to wait for the next poll)."""
        self._users[user.id] = UserState(user.is_admin, user.is_active, time.time())

    async def poll(self) -> None:
        """One look at the database."""
        started = utcnow()
        since = started - timedelta(seconds=self._horizon) if self._since is None else self._since
        async with self._sessions() as session:
            # Tombstones included: the revocations of sessions deleted with their users.
            sids = await SessionRepository(session).revoked_since(since - OVERLAP)
            users = await UserRepository(session).changed_since(since - OVERLAP)
        if sids:
            await self._store.remember_revoked(list(sids), self._horizon)
        now = time.time()
        for user_id, is_admin, is_active in users:
            self._users[user_id] = UserState(is_admin, is_active, now)
        if len(self._users) > 10_000:
            self._users = {k: v for k, v in self._users.items() if now - v.seen_at < self._horizon}
        self._since = started
        self.fresh_at = now

    async def run(self) -> None:
        """Poll forever (a background task of the app); failures are logged once per outage."""
        failing = False
        while True:
            try:
                await self.poll()
                if failing:
                    _LOGGER.warning("database reachable again: session state is current")
                failing = False
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not failing:
                    _LOGGER.error("cannot poll the database for session changes: %s", exc)
                failing = True
            await asyncio.sleep(self._interval)
