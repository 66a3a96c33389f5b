"""Bytes the edge writes to clients: request heads read, response heads and access-log lines.

``parse_head`` reads one complete request head (everything up to and including the blank line)
with httptools (llhttp, the parser aiohttp's server uses too, in its strict mode): anything it
refuses, an HTTP version other than 1.1, an upgrade or a target that is not an ASCII
origin-form path gives ``None``, and the connection goes to aiohttp, which answers it.
"""

from __future__ import annotations

import datetime
import time
from email.utils import formatdate
from http import HTTPStatus
from typing import Final

from httptools import HttpParserError, HttpParserUpgrade, HttpRequestParser
from multidict import CIMultiDict

__all__ = ["RequestHead", "access_line", "http_date", "parse_head", "response_head"]

_REASONS: Final = {status.value: status.phrase for status in HTTPStatus}


class RequestHead:
    """One parsed request head."""

    __slots__ = ("headers", "keep_alive", "line", "method", "target")

    def __init__(
        self, method: str, target: str, headers: CIMultiDict[str], keep_alive: bool, line: str
    ) -> None:
        self.method = method
        self.target = target
        """The request target as sent: an origin-form path with its query."""
        self.headers = headers
        self.keep_alive = keep_alive
        self.line = line
        """The request line, for the access log."""


class _Sink:
    """Collects what httptools reports about a head."""

    __slots__ = ("complete", "keep_alive", "method", "parser", "raw", "url", "version")

    def __init__(self) -> None:
        self.url = b""
        self.raw: list[tuple[str, str]] = []
        self.complete = False
        self.keep_alive = False
        self.method = b""
        self.version = ""
        self.parser = HttpRequestParser(self)

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        # Decoded the way aiohttp's server decodes them, and encoded back the same way.
        self.raw.append((name.decode("latin-1"), value.decode("utf-8", "surrogateescape")))

    def on_headers_complete(self) -> None:
        # Read here: once a message is complete, llhttp resets what it knew about it.
        parser = self.parser
        self.keep_alive = parser.should_keep_alive()
        self.method = parser.get_method()
        self.version = parser.get_http_version()
        self.complete = True


def parse_head(data: bytes) -> RequestHead | None:
    """The request head ``data`` (ending in a blank line), or ``None`` if the edge leaves it."""
    sink = _Sink()
    try:
        sink.parser.feed_data(data)
    except (HttpParserError, HttpParserUpgrade):
        return None
    if not sink.complete or sink.version != "1.1":
        return None
    url = sink.url
    if not url.startswith(b"/") or b"#" in url:
        return None
    try:
        target = url.decode("ascii")
        method = sink.method.decode("ascii")
    except UnicodeDecodeError:
        return None
    return RequestHead(
        method,
        target,
        CIMultiDict(sink.raw),
        sink.keep_alive,
        f"{method} {target} HTTP/1.1",
    )


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
    lines = "".join([f"{name}: {value}\r\n" for name, value in headers.items()])
    reason = reason or _REASONS.get(status, "")
    return f"HTTP/1.1 {status} {reason}\r\n{lines}\r\n".encode("utf-8", "surrogateescape")


def access_line(peer: str, started: float, head: RequestHead, status: int, size: int) -> str:
    """One line in aiohttp's default access-log format (``AccessLogger.LOG_FORMAT``)."""
    when = datetime.datetime.fromtimestamp(started).astimezone()
    headers = head.headers
    return (
        f"{peer or '-'} {when.strftime('[%d/%b/%Y:%H:%M:%S %z]')} "
        f'"{head.line}" {status} {size} '
        f'"{headers.get("Referer", "-")}" "{headers.get("User-Agent", "-")}"'
    )
