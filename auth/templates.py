"""Mail templates: a subject, a plain-text part and an HTML part for every mail the gateway sends.

Built-in defaults cover every mail. ``email.templates_dir`` names a folder whose files override
them one by one: ``<kind>.subject.txt``, ``<kind>.txt`` and ``<kind>.html`` for the kinds
``verify_email``, ``code`` and ``password_reset``; a file that is absent keeps the default.
Templates use ``string.Template`` syntax (``$link`` or ``${link}``, ``$$`` for a dollar sign).
Values are inserted as they are in the subject and the text part, HTML-escaped in the HTML part.

Every template is checked when it is loaded (start-up, ``gateway check-config``): an unknown or
malformed placeholder, an unknown file name, a subject of several lines or a file that is not
UTF-8 is a configuration error, so nothing can fail later, at send time.
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from string import Template

from auth.mailer import Mail
from config import ConfigError

PARTS = ("subject.txt", "txt", "html")
PLACEHOLDERS: Mapping[str, frozenset[str]] = {
    "verify_email": frozenset({"name", "email", "link", "expires"}),
    "code": frozenset({"email", "code", "expires"}),
    "password_reset": frozenset({"name", "email", "link", "expires"}),
}

_DEFAULTS: Mapping[str, tuple[str, str, str]] = {
    "verify_email": (
        "Verify your email address",
        "Hello $name,\n\n"
        "Please confirm that $email is your address by opening this link:\n\n$link\n\n"
        "The link works once and expires in $expires.\n"
        "If you did not create an account, ignore this message.\n",
        "<!DOCTYPE html>\n<html><body>\n<p>Hello $name,</p>\n"
        '<p>Please confirm that $email is your address: <a href="$link">verify my email</a></p>\n'
        "<p>The link works once and expires in $expires.</p>\n"
        "<p>If you did not create an account, ignore this message.</p>\n</body></html>\n",
    ),
    "code": (
        "Your sign-in code",
        "Your sign-in code is:\n\n    $code\n\n"
        "Enter it to sign in as $email. It works once and expires in $expires.\n"
        "If you did not ask for it, ignore this message: nobody can sign in without it.\n",
        "<!DOCTYPE html>\n<html><body>\n<p>Your sign-in code is:</p>\n"
        '<p style="font-size:28px;letter-spacing:6px"><strong>$code</strong></p>\n'
        "<p>Enter it to sign in as $email. It works once and expires in $expires.</p>\n"
        "<p>If you did not ask for it, ignore this message: nobody can sign in without it.</p>\n"
        "</body></html>\n",
    ),
    "password_reset": (
        "Reset your password",
        "Hello $name,\n\n"
        "Someone asked to reset the password of the account $email.\n"
        "Open this link to choose a new password:\n\n$link\n\n"
        "The link works once and expires in $expires. A reset signs you out everywhere.\n"
        "If you did not ask for this, ignore this message: your password stays as it is.\n",
        "<!DOCTYPE html>\n<html><body>\n<p>Hello $name,</p>\n"
        "<p>Someone asked to reset the password of the account $email.</p>\n"
        '<p><a href="$link">Choose a new password</a></p>\n'
        "<p>The link works once and expires in $expires. A reset signs you out everywhere.</p>\n"
        "<p>If you did not ask for this, ignore this message: your password stays as it is.</p>\n"
        "</body></html>\n",
    ),
}


@dataclass(frozen=True, slots=True)
class MailTemplate:
    """The three parts of one kind of mail."""

    subject: Template
    text: Template
    html: Template


class MailTemplates:
    """Every kind of mail, checked once; ``render`` cannot fail on a template."""

    def __init__(self, templates: Mapping[str, MailTemplate]) -> None:
        self._templates = dict(templates)

    @classmethod
    def load(cls, folder: str | Path | None = None) -> MailTemplates:
        """The defaults, overridden by the files of ``folder``; ConfigError lists every problem."""
        problems: list[str] = []
        files = _files(Path(folder), problems) if folder is not None else {}
        templates = {}
        for kind, defaults in _DEFAULTS.items():
            parts = []
            for part, default in zip(PARTS, defaults, strict=True):
                name = f"{kind}.{part}"
                text = files.pop(name, None)
                if text is None:
                    parts.append(Template(default))
                    continue
                if part == "subject.txt":
                    text = text.strip()
                    if not text or "\n" in text or "\r" in text:
                        problems.append(f"email.templates_dir: {name}: must be one non-empty line")
                parts.append(_checked(name, text, PLACEHOLDERS[kind], problems))
            templates[kind] = MailTemplate(*parts)
        problems.extend(
            f"email.templates_dir: {name}: unknown template file (expected <kind>.subject.txt, "
            f"<kind>.txt or <kind>.html with kind one of {', '.join(_DEFAULTS)})"
            for name in sorted(files)
        )
        if problems:
            raise ConfigError(problems, str(folder))
        return cls(templates)

    def render(self, kind: str, to: str, **values: str) -> Mail:
        """The mail of ``kind`` to ``to``; ``values`` fill the placeholders."""
        template = self._templates[kind]
        subject = " ".join(template.subject.substitute(values).split())
        escaped = {key: html.escape(value, quote=True) for key, value in values.items()}
        return Mail(
            to=to,
            subject=subject,
            text=template.text.substitute(values),
            html=template.html.substitute(escaped),
        )


def human_duration(seconds: float) -> str:
    """``86400`` → ``24 hours``, ``600`` → ``10 minutes``, ``45`` → ``45 seconds``."""
    whole = max(1, round(seconds))
    for unit, size in (("hour", 3600), ("minute", 60)):
        if whole % size == 0:
            count = whole // size
            return f"{count} {unit}{'' if count == 1 else 's'}"
    return f"{whole} second{'' if whole == 1 else 's'}"


def _files(folder: Path, problems: list[str]) -> dict[str, str]:
    """The template files of ``folder`` (``*.txt`` and ``*.html``) by name."""
    found: dict[str, str] = {}
    try:
        entries = sorted(folder.iterdir())
    except OSError as exc:
        problems.append(f"email.templates_dir: cannot read {folder}: {exc.strerror or exc}")
        return found
    for path in entries:
        if path.suffix not in (".txt", ".html") or not path.is_file():
            continue
        try:
            found[path.name] = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            problems.append(f"email.templates_dir: {path.name}: not valid UTF-8")
        except OSError as exc:
            problems.append(f"email.templates_dir: {path.name}: {exc.strerror or exc}")
    return found


def _checked(name: str, text: str, known: frozenset[str], problems: list[str]) -> Template:
    template = Template(text)
    if not template.is_valid():
        problems.append(
            f"email.templates_dir: {name}: malformed placeholder (write $$ for a literal $)"
        )
    unknown = sorted(set(template.get_identifiers()) - known)
    if unknown:
        problems.append(
            f"email.templates_dir: {name}: unknown placeholder "
            f"{', '.join('$' + p for p in unknown)} (known: {', '.join(sorted(known))})"
        )
    return template
