"""What the auth layer hands out: users as the API shows them, token pairs, login results,
registration offers and pages of users."""

from __future__ import annotations

from dataclasses import dataclass

from auth.models import User
from auth.tokens import TokenUser


@dataclass(frozen=True, slots=True)
class UserView:
    """A user as the API shows it."""

    id: int
    email: str
    username: str
    first_name: str
    last_name: str
    is_admin: bool
    is_active: bool
    email_verified: bool

    @classmethod
    def of(cls, user: User) -> UserView:
        """Copy the visible fields of a row."""
        return cls(
            id=user.id,
            email=user.email,
            username=user.username,
            first_name=user.first_name,
            last_name=user.last_name,
            is_admin=user.is_admin,
            is_active=user.is_active,
            email_verified=user.email_verified,
        )

    def token_user(self) -> TokenUser:
        """What the tokens of this user carry."""
        return TokenUser(self.id, self.email, self.is_admin, self.first_name, self.last_name)


@dataclass(frozen=True, slots=True)
class TokenPair:
    """An access and a refresh token with their lifetimes."""

    access_token: str
    refresh_token: str
    expires_in: int
    refresh_expires_in: int


@dataclass(frozen=True, slots=True)
class LoginResult:
    """Tokens and the user they belong to."""

    tokens: TokenPair
    user: UserView


@dataclass(frozen=True, slots=True)
class RegistrationRequired:
    """An email code was right but no account has the address: it may register once."""

    registration_token: str
    expires_in: int


@dataclass(frozen=True, slots=True)
class UserPage:
    """One page of the user list, and how many users match in all."""

    users: list[UserView]
    total: int
    limit: int
    offset: int
