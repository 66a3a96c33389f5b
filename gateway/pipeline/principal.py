"""The one identity object that flows through the pipeline."""

from __future__ import annotations

from dataclasses import dataclass

from auth.tokens import Claims


@dataclass(slots=True)
class Principal:
    """Who sent the request, as a verified access token says.

    (Not frozen: one is made per proxied request, and a frozen dataclass's ``__init__`` costs
    several times as much. Nothing changes it after ``from_claims``.)
    """

    user_id: int
    is_admin: bool
    email: str
    session_id: str

    @classmethod
    def from_claims(cls, claims: Claims) -> Principal:
        """The principal a verified token stands for."""
        return cls(claims.user_id, claims.is_admin, claims.email, claims.sid)
