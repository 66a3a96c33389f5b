"""Bytes the edge writes to clients: request heads read, response heads and access-log lines.

``HeadReader.parse`` reads one complete request head (everything up to and including the blank
line) with httptools (llhttp, the parser aiohttp's server uses too, in its strict mode):
anything it refuses, an HTTP version other than 1.1, an upgrade or a target that is not an
ASCII origin-form path gives ``None``, and the connection goes to aiohttp, which answers it.
"""

from __future__ import annotations

import datetime
import time
from email.utils import formatdate
from http import HTTPStatus
from typing import Final

from httptools import HttpParserError, HttpParserUpgrade, HttpRequestParser
from multidict import CIMultiDict

__all__ = ["HeadReader", "RequestHead", "access_line", "http_date", "response_head"]

_REASONS: Final = {status.value: status.phrase for status in HTTPStatus}

# aiohttp's server limits (``RequestHandler`` defaults): a head beyond them is left to aiohttp.
MAX_LINE_SIZE: Final = 8190
MAX_FIELD_SIZE: Final = 8190
MAX_HEADERS: Final = 128


class RequestHead:
    """One parsed request head."""

    __slots__ = ("headers", "keep_alive", "method", "target")

    def __init__(
        self, method: str, target: str, headers: CIMultiDict[str], keep_alive: bool
    ) -> None:
        self.method = method
        self.target = target
        """The request target as sent: an origin-form path with its query."""
        self.headers = headers
        self.keep_alive = keep_alive

    @property
    def line(self) -> str:
        """The request line, for the access log."""
        return f"{self.method} {self.target} HTTP/1.1"


class HeadReader:
    """Parses the request heads of one connection, one after another.

    The httptools parser is reused while every head it saw ended its message (no body); after
    a head announcing a body (which the connection reads itself) the next head gets a new one.
    """

    __slots__ = (
        "_complete",
        "_done",
        "_keep_alive",
        "_method",
        "_oversized",
        "_parser",
        "_raw",
        "_url",
    )

    def __init__(self) -> None:
        self._parser = HttpRequestParser(self)
        self._done = True
        self._oversized = False
        self._url = b""
        self._raw: list[tuple[str, str]] = []
        self._complete = False
        self._keep_alive = False
        self._method = b""

    # --- httptools callbacks ----------------------------------------------------------------

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        if len(name) + len(value) > MAX_FIELD_SIZE:
            self._oversized = True
        # Decoded the way aiohttp's server decodes them, and encoded back the same way.
        self._raw.append((name.decode("latin-1"), value.decode("utf-8", "surrogateescape")))

    def on_headers_complete(self) -> None:
        # Read here: once a message is complete, llhttp resets what it knew about it.
        parser = self._parser
        if parser.get_http_version() == "1.1":
            self._keep_alive = parser.should_keep_alive()
            self._method = parser.get_method()
            self._complete = True

    def on_message_complete(self) -> None:
        self._done = True

    # --- one head ---------------------------------------------------------------------------

    def parse(self, data: bytes) -> RequestHead | None:
        """The request head ``data`` (ending in a blank line), or ``None`` if the edge leaves it.

        ``None`` for anything llhttp refuses, an HTTP version other than 1.1, an upgrade, a
        target that is not an ASCII origin-form path, or a head over aiohttp's limits (which
        then answers it as it always has).
        """
        if not self._done:
            self._parser = HttpRequestParser(self)
        self._done = False
        self._url = b""
        self._raw = []
        self._complete = False
        self._oversized = False
        try:
            self._parser.feed_data(data)
        except (HttpParserError, HttpParserUpgrade):
            self._done = False  # a parser that failed is not used again
            return None
        url = self._url
        if not self._complete or not url.startswith(b"/") or b"#" in url:
            return None
        if self._oversized or len(url) > MAX_LINE_SIZE or len(self._raw) > MAX_HEADERS:
            return None
        try:
            target = url.decode("ascii")
            method = self._method.decode("ascii")
        except UnicodeDecodeError:
            return None
        return RequestHead(method, target, CIMultiDict(self._raw), self._keep_alive)


_date: list[object] = [0, ""]


def http_date() -> str:
    """Now as an HTTP ``Date`` (IMF-fixdate), formatted once per second."""
    now = int(time.time())
    if _date[0] != now:
        _date[0] = now
        _date[1] = formatdate(now, usegmt=True)
    return str(_date[1])


def response_head(
    status: int,
    reason: str,
    headers: CIMultiDict[str],
    *,
    keep_alive: bool,
) -> bytes:
    """The status line and ``headers`` (framing headers already in them) of a response."""
    headers.setdefault("Date", http_date())
    if not keep_alive:
        headers["Connection"] = "close"
    lines = "\r\n".join(map(": ".join, headers.items()))
    reason = reason or _REASONS.get(status, "")
    return f"HTTP/1.1 {status} {reason}\r\n{lines}\r\n\r\n".encode("utf-8", "surrogateescape")


def access_line(peer: str, started: float, head: RequestHead, status: int, size: int) -> str:
    """One line in aiohttp's default access-log format (``AccessLogger.LOG_FORMAT``)."""
    when = datetime.datetime.fromtimestamp(started).astimezone()
    headers = head.headers
    return (
        f"{peer or '-'} {when.strftime('[%d/%b/%Y:%H:%M:%S %z]')} "
        f'"{head.line}" {status} {size} '
        f'"{headers.get("Referer", "-")}" "{headers.get("User-Agent", "-")}"'
    )
