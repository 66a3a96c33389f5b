"""The one identity object that flows through the pipeline."""

from __future__ import annotations

from dataclasses import dataclass

from auth.tokens import Claims


@dataclass(frozen=True, slots=True)
class Principal:
    """Who sent the request, as a verified access token says."""

    user_id: int
    is_admin: bool
    email: str
    session_id: str

    @classmethod
    def from_claims(cls, claims: Claims) -> Principal:
        """The principal a verified token stands for."""
        return cls(claims.user_id, claims.is_admin, claims.email, claims.sid)
