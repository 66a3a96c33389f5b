"""Outgoing mail: ``log`` (embedded default) or ``smtp`` through aiosmtplib.

Mail is delivered in the background so that the time of an API answer never depends on
whether a mail was sent (no enumeration by timing). ``drain()`` waits for what is in flight.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Protocol

import aiosmtplib

from auth.errors import DeliveryFailed
from config import EmailConfig

_LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Mail:
    """One message: plain text and, optionally, HTML."""

    to: str
    subject: str
    text: str
    html: str | None = None


class Sender(Protocol):
    """Delivers one message or raises DeliveryFailed."""

    async def send(self, mail: Mail) -> None:
        """Deliver ``mail``."""


class LogSender:
    """Writes mail to the log instead of sending it (development and the embedded default)."""

    async def send(self, mail: Mail) -> None:
        _LOGGER.info("email (log backend) to=%s subject=%r\n%s", mail.to, mail.subject, mail.text)


class SmtpSender:
    """Sends mail through the configured SMTP server."""

    def __init__(self, cfg: EmailConfig) -> None:
        self._cfg = cfg

    async def send(self, mail: Mail) -> None:
        smtp = self._cfg.smtp
        message = EmailMessage()
        message["From"] = self._cfg.from_
        message["To"] = mail.to
        message["Subject"] = mail.subject
        message.set_content(mail.text)
        if mail.html is not None:
            message.add_alternative(mail.html, subtype="html")
        try:
            await aiosmtplib.send(
                message,
                hostname=smtp.host,
                port=smtp.port,
                username=smtp.username,
                password=smtp.password,
                start_tls=smtp.starttls,
                use_tls=smtp.tls,
                timeout=smtp.timeout,
            )
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            raise DeliveryFailed(f"{type(exc).__name__}") from exc


class Mailer:
    """Queues mail for background delivery and keeps track of what is in flight."""

    def __init__(self, sender: Sender) -> None:
        self._sender = sender
        self._tasks: set[asyncio.Task[None]] = set()

    def send_later(self, mail: Mail) -> None:
        """Start delivering ``mail`` without waiting for it."""
        task = asyncio.get_running_loop().create_task(self._deliver(mail))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deliver(self, mail: Mail) -> None:
        try:
            await self._sender.send(mail)
        except DeliveryFailed as exc:
            _LOGGER.error("could not deliver mail %r to %s: %s", mail.subject, mail.to, exc)

    async def drain(self) -> None:
        """Wait until every queued mail has been handed over (or failed)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)


def make_mailer(cfg: EmailConfig) -> Mailer:
    """A Mailer over the configured backend."""
    return Mailer(SmtpSender(cfg) if cfg.backend == "smtp" else LogSender())
