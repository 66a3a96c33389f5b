"""Input models of the auth API and the CLI; snake_case or camelCase field names accepted.

Validation problems come out as ``"field: problem"`` strings (``validation_details``), the
form the error envelope carries after "Validation failed".
"""

from __future__ import annotations

import re
import unicodedata
from typing import Annotated, Any, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictStr,
    ValidationInfo,
)
from pydantic import ValidationError as PydanticValidationError
from pydantic.alias_generators import to_camel

from auth import opaque
from auth.errors import ValidationFailed
from config import PasswordConfig

_EMAIL_RE = re.compile(r"^[^@\s\x00-\x1f\x7f]{1,64}@[^@\s\x00-\x1f\x7f]+\.[^@\s\x00-\x1f\x7f.]+$")


def email_key(email: str) -> str:
    """The unique, case-insensitive form of an address."""
    return email.strip().lower()


def username_key(username: str) -> str:
    """The unique form of a username: NFKC, case-folded, inner whitespace collapsed."""
    return " ".join(unicodedata.normalize("NFKC", username).casefold().split())


def _has_control(value: str) -> bool:
    return any(unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Co") for ch in value)


def _email(value: str) -> str:
    value = value.strip()
    if len(email_key(value)) > 254 or not _EMAIL_RE.match(value) or ".." in value.split("@")[1]:
        raise ValueError("not a valid email address")
    return value


def _username(value: str) -> str:
    value = unicodedata.normalize("NFC", value).strip()
    if not value:
        raise ValueError("must not be empty")
    if len(value) > 64 or len(username_key(value)) > 255:
        raise ValueError("must be at most 64 characters")
    if _has_control(value):
        raise ValueError("must not contain control characters")
    return value


def _name(value: str) -> str:
    value = unicodedata.normalize("NFC", value).strip()
    if len(value) > 100:
        raise ValueError("must be at most 100 characters")
    if _has_control(value):
        raise ValueError("must not contain control characters")
    return value


def _password(value: str, info: ValidationInfo) -> str:
    policy = (info.context or {}).get("password") or PasswordConfig()
    if len(value) < policy.min_length:
        raise ValueError(f"must be at least {policy.min_length} characters")
    if len(value) > policy.max_length:
        raise ValueError(f"must be at most {policy.max_length} characters")
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


def _non_empty(value: str) -> str:
    if not value:
        raise ValueError("must not be empty")
    return value


def _code(value: str) -> str:
    value = value.strip()
    if not opaque.is_code(value):
        raise ValueError(f"must be {opaque.CODE_DIGITS} digits")
    return value


def _link_token(value: str) -> str:
    if not opaque.is_link_token(value):
        raise ValueError("must be 64 hexadecimal characters")
    return value


def _unicode(value: str) -> str:
    if "\x00" in value:  # PostgreSQL text cannot hold NUL
        raise ValueError("must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate from a JSON \ud800 escape
        raise ValueError("must be valid Unicode text") from None
    return value


Text = Annotated[StrictStr, AfterValidator(_unicode)]
Email = Annotated[Text, AfterValidator(_email)]
Username = Annotated[Text, AfterValidator(_username)]
Name = Annotated[Text, AfterValidator(_name)]
NewPassword = Annotated[Text, AfterValidator(_password)]
NonEmpty = Annotated[Text, AfterValidator(_non_empty)]
Code = Annotated[Text, Field(max_length=64), AfterValidator(_code)]
LinkToken = Annotated[Text, Field(max_length=64), AfterValidator(_link_token)]
CurrentPassword = Annotated[Text, Field(max_length=4096), AfterValidator(_non_empty)]
MAX_ROW_ID = 2**31 - 1


class _Input(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel,
        validate_by_name=True,
        validate_by_alias=True,
        loc_by_alias=False,
        extra="ignore",
        frozen=True,
    )


InputT = TypeVar("InputT", bound=_Input)


class RegisterInput(_Input):
    """POST /register."""

    email: Email
    password: NewPassword
    username: Username
    first_name: Name
    last_name: Name = ""


class LoginInput(_Input):
    """POST /login."""

    email: Annotated[Text, Field(max_length=254), AfterValidator(_non_empty)]
    password: Annotated[Text, Field(max_length=4096), AfterValidator(_non_empty)]


class RefreshInput(_Input):
    """POST /refresh."""

    refresh_token: Annotated[Text, Field(max_length=8192), AfterValidator(_non_empty)]


class EmailInput(_Input):
    """POST /resend-verification (and other address-only requests)."""

    email: Email


class VerifyEmailInput(_Input):
    """GET /verify-email?token=…"""

    token: Annotated[Text, AfterValidator(_non_empty)]


class EmailCodeLoginInput(_Input):
    """POST /login/email-code."""

    email: Email
    code: Code


class CompleteRegistrationInput(_Input):
    """POST /register/complete: the account of an address proven by an email code."""

    registration_token: LinkToken
    username: Username
    first_name: Name
    last_name: Name = ""
    password: NewPassword | None = None


class ResetPasswordInput(_Input):
    """POST /password/reset."""

    token: LinkToken
    password: NewPassword


class ChangePasswordInput(_Input):
    """POST /password/change."""

    current_password: CurrentPassword
    new_password: NewPassword


class UserListQuery(_Input):
    """GET /users?email_prefix=&limit=&offset= (query strings: numbers are parsed)."""

    email_prefix: Annotated[Text, Field(max_length=254)] = ""
    limit: int = Field(default=50, ge=1, le=200)
    offset: int = Field(default=0, ge=0, le=MAX_ROW_ID)


class UserPatchInput(_Input):
    """PATCH /users/{id}: only the fields given change; any other field is refused (400)."""

    model_config = ConfigDict(extra="forbid")

    is_admin: StrictBool | None = None
    is_active: StrictBool | None = None
    email_verified: StrictBool | None = None
    first_name: Name | None = None
    last_name: Name | None = None


class CreateUserInput(_Input):
    """``gateway users create``."""

    email: Email
    password: NewPassword
    username: Username
    first_name: Name = ""
    last_name: Name = ""
    is_admin: bool = False
    email_verified: bool = False


_MESSAGES = {
    "missing": "is required",
    "string_type": "must be a string",
    "bool_type": "must be a boolean",
    "int_type": "must be an integer",
    "int_parsing": "must be an integer",
    "extra_forbidden": "unknown field",
    "string_too_long": "is too long",
    "too_long": "is too long",
}


def validation_details(exc: PydanticValidationError) -> list[str]:
    """``"field: problem"`` for every error of a pydantic validation."""
    details = []
    for err in exc.errors(include_url=False):
        loc = ".".join(str(part) for part in err["loc"]) or "body"
        message = _MESSAGES.get(err["type"])
        bounds = err.get("ctx") or {}
        if err["type"] == "greater_than_equal":
            message = f"must be at least {bounds.get('ge')}"
        elif err["type"] == "less_than_equal":
            message = f"must be at most {bounds.get('le')}"
        if message is None:
            message = str(err["msg"]).removeprefix("Value error, ")
        details.append(f"{loc}: {message}")
    return details


def parse_input(model: type[InputT], data: Any, password: PasswordConfig | None = None) -> InputT:
    """Validate ``data`` (a mapping) into ``model`` or raise ValidationFailed with every problem."""
    try:
        return model.model_validate(data, context={"password": password or PasswordConfig()})
    except PydanticValidationError as exc:
        raise ValidationFailed(*validation_details(exc)) from None
