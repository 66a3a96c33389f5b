"""Domain errors of the auth layer. They know nothing of HTTP; ``gateway/errors.py`` maps them.

AuthError
├── ValidationFailed        bad input (details: list of "field: problem")
├── InvalidCredentials      wrong email or password (one answer for both)
├── TokenInvalid            missing, malformed, expired, revoked or wrong-type token
├── AccountNotAllowed       email not verified, account deactivated
├── NotPermitted            authenticated, but not allowed to do this (not an admin)
├── Conflict                email/username taken, last active admin
├── NotFound                unknown or spent one-time token
├── RateLimited             too many attempts (retry_after seconds)
├── Unavailable             session state too stale to trust (fail closed)
└── DeliveryFailed          mail could not be handed to the mail server
"""

from __future__ import annotations


class AuthError(Exception):
    """Base of every error the auth layer raises on purpose."""

    def __init__(self, *details: str) -> None:
        super().__init__(*details)
        self.details: list[str] = list(details)


class ValidationFailed(AuthError):
    """The request is well-formed JSON but its fields are not acceptable."""


class InvalidCredentials(AuthError):
    """Wrong email or password; deliberately says which of them is wrong to nobody."""


class TokenInvalid(AuthError):
    """A bearer, refresh or one-time token that cannot be accepted."""


class AccountNotAllowed(AuthError):
    """Credentials are right but the account may not log in (unverified, deactivated)."""


class NotPermitted(AuthError):
    """The caller is who they say, but may not do this (an admin action by a non-admin)."""


class Conflict(AuthError):
    """The resource exists already or cannot be changed in its current state."""


class NotFound(AuthError):
    """The thing asked for does not exist (or is no longer usable)."""


class RateLimited(AuthError):
    """Too many attempts; try again after ``retry_after`` seconds."""

    def __init__(self, *details: str, retry_after: int) -> None:
        super().__init__(*details)
        self.retry_after = retry_after


class Unavailable(AuthError):
    """Session state cannot be trusted right now (``sessions.on_stale: closed``)."""


class DeliveryFailed(AuthError):
    """An email could not be delivered to the configured mail server."""
