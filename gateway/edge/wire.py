"""Bytes the edge writes to clients: request heads read, response heads and access-log lines.

``HeadReader.parse`` reads one complete request head (everything up to and including the blank
line) with httptools (llhttp, the parser aiohttp's server uses too, in its strict mode):
anything it refuses, an HTTP version other than 1.1, an upgrade, a target that is not an
ASCII origin-form path, or a repeated field of those the edge reads (``READ_FIELDS``) gives
``None``, and the connection goes to aiohttp, which answers it.
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Mapping
from email.utils import formatdate
from http import HTTPStatus
from typing import Final, cast

from httptools import HttpParserError, HttpParserUpgrade, HttpRequestParser
from multidict import CIMultiDict

from gateway.proxy.headers import CONTENT_LENGTH, DATE, SERVER

__all__ = [
    "MAX_HEAD_SIZE",
    "TOKEN_BYTES",
    "HeadReader",
    "RequestHead",
    "access_line",
    "http_date",
    "plain_body_length",
    "relayed_head",
    "response_head",
]

_REASONS: Final = {status.value: status.phrase for status in HTTPStatus}

MAX_HEAD_SIZE: Final = 16 * 1024
"""Longest request head the gateway reads, blank line included: the edge waits for no more
(it hands a longer one to aiohttp's side), and aiohttp's side (``handover``) answers a longer
one with the 400 envelope, as it answers a field over ``MAX_FIELD_SIZE``."""

TOKEN_BYTES: Final = (
    b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
)
"""The bytes of an HTTP token (RFC 9110 §5.6.2 ``tchar``): a request line starts with one (its
method). A head whose first byte is anything else (``0x16``: TLS on the plain port) is no
request: the edge hands it to aiohttp's side at once, which answers it with the 400."""

# aiohttp's server limits (``RequestHandler`` defaults): a head beyond them is left to aiohttp.
MAX_LINE_SIZE: Final = 8190
MAX_FIELD_SIZE: Final = 8190
MAX_HEADERS: Final = 128

READ_FIELDS: Final = frozenset(
    {
        "host",
        "authorization",
        "content-length",
        "transfer-encoding",
        "expect",
        "upgrade",
        "origin",
        "access-control-request-method",
        "x-request-id",
        "x-forwarded-for",
        "x-forwarded-proto",
    }
)
"""The header fields the edge and the proxy read, by lower-case name; the rest only pass."""
_READ_KEYS: Final = {name.encode("ascii"): name for name in READ_FIELDS}


class RequestHead:
    """One parsed request head."""

    __slots__ = ("fields", "headers", "keep_alive", "method", "target")

    def __init__(
        self,
        method: str,
        target: str,
        fields: list[tuple[bytes, bytes]],
        headers: dict[str, str],
        keep_alive: bool,
    ) -> None:
        self.method = method
        self.target = target
        """The request target as sent: an origin-form path with its query."""
        self.fields = fields
        """The header fields as they came: ``(name, value)`` bytes, in order."""
        self.headers = headers
        """The fields of ``READ_FIELDS`` that came, by lower-case name (each came once), their
        values decoded the way aiohttp's server decodes them. Lower-case names read the same
        from aiohttp's ``CIMultiDictProxy``, so the proxy reads both the same way."""
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
        "_fields",
        "_keep_alive",
        "_method",
        "_parser",
        "_read",
        "_repeated",
        "_url",
    )

    def __init__(self) -> None:
        self._parser = HttpRequestParser(self)
        self._done = True
        self._url = b""
        self._fields: list[tuple[bytes, bytes]] = []
        self._read: dict[str, str] = {}
        self._repeated = False
        self._complete = False
        self._keep_alive = False
        self._method = b""

    # --- httptools callbacks ----------------------------------------------------------------

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._fields.append((name, value))
        key = _READ_KEYS.get(name.lower())
        if key is not None:
            read = self._read
            if key in read:
                self._repeated = True
            read[key] = value.decode("utf-8", "surrogateescape")

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
        target that is not an ASCII origin-form path, a field of ``READ_FIELDS`` sent twice,
        or a head over aiohttp's limits (which then answers it as it always has).
        """
        if not self._done:
            self._parser = HttpRequestParser(self)
        self._done = False
        self._url = b""
        fields = self._fields = []
        headers = self._read = {}
        self._repeated = False
        self._complete = False
        try:
            self._parser.feed_data(data)
        except (HttpParserError, HttpParserUpgrade):
            self._done = False  # a parser that failed is not used again
            return None
        url = self._url
        if not self._complete or not url.startswith(b"/") or b"#" in url or self._repeated:
            return None
        if len(url) > MAX_LINE_SIZE or len(fields) > MAX_HEADERS:
            return None
        if len(data) > MAX_FIELD_SIZE and any(
            len(name) + len(value) > MAX_FIELD_SIZE for name, value in fields
        ):
            return None
        try:
            target = url.decode("ascii")
            method = self._method.decode("ascii")
        except UnicodeDecodeError:
            return None
        return RequestHead(method, target, fields, headers, self._keep_alive)


def plain_body_length(headers: Mapping[str, str], limit: int) -> int | None:
    """The length of the body of a head whose body the edge frames itself (``RequestHead``'s
    ``headers``): 0 without one, its ``Content-Length`` within ``limit``; ``None`` with a
    ``Transfer-Encoding``, an ``Expect`` or an ``Upgrade``, or a ``Content-Length`` that is not
    digits or is over ``limit`` (those are aiohttp's to answer, a 413 included)."""
    if "transfer-encoding" in headers or "expect" in headers or "upgrade" in headers:
        return None
    declared = headers.get("content-length")
    if declared is None:
        return 0
    if not declared.isascii() or not declared.isdigit():
        return None
    length = int(declared)
    return length if length <= limit else None


_REASONS_BYTES: Final = {status: reason.encode() for status, reason in _REASONS.items()}

_date: list[object] = [0, "", b""]


def http_date() -> str:
    """Now as an HTTP ``Date`` (IMF-fixdate), formatted once per second."""
    now = int(time.time())
    if _date[0] != now:
        date = formatdate(now, usegmt=True)
        _date[:] = [now, date, date.encode("ascii")]
    return str(_date[1])


def _http_date_bytes() -> bytes:
    http_date()
    return cast(bytes, _date[2])


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


def relayed_head(
    status: int,
    reason: bytes,
    lines: list[bytes],
    marks: int,
    request_id: str,
    *,
    keep_alive: bool,
    length: int | None = None,
    streamed: bool = False,
) -> tuple[bytes, bool]:
    """The head of an upstream's answer for the client, and whether its body goes chunked.

    ``lines`` and ``marks`` are ``headers.response_lines_for_client``'s; the head is what
    ``response_head`` makes of the same headers after ``stamp_response`` (``X-Request-Id`` set,
    ``Server`` and ``Date`` added when the upstream sent none): the same lines, without decoding
    one. When the upstream sent no ``Content-Length``: ``length`` is given for a body that is all
    there, ``streamed`` for one that is not (then sent chunked); neither for HEAD, 204 and 304.
    """
    head = [b"HTTP/1.1 %d %s" % (status, reason or _REASONS_BYTES.get(status, b""))]
    head += lines
    head.append(b"X-Request-Id: " + request_id.encode("ascii"))
    if not marks & SERVER:
        head.append(b"Server: gateway")
    chunked = False
    if not marks & CONTENT_LENGTH:
        if length is not None:
            head.append(b"Content-Length: %d" % length)
        elif streamed:
            head.append(b"Transfer-Encoding: chunked")
            chunked = True
    if not marks & DATE:
        head.append(b"Date: " + _http_date_bytes())
    if not keep_alive:
        head.append(b"Connection: close")
    head.append(b"\r\n")
    return b"\r\n".join(head), chunked


def access_line(peer: str, started: float, head: RequestHead, status: int, size: int) -> str:
    """One line in aiohttp's default access-log format (``AccessLogger.LOG_FORMAT``)."""
    when = datetime.datetime.fromtimestamp(started).astimezone()
    return (
        f"{peer or '-'} {when.strftime('[%d/%b/%Y:%H:%M:%S %z]')} "
        f'"{head.line}" {status} {size} '
        f'"{_first(head, b"referer")}" "{_first(head, b"user-agent")}"'
    )


def _first(head: RequestHead, name: bytes) -> str:
    """The first value of the field ``name`` (lower case), decoded as aiohttp does; or "-"."""
    for field, value in head.fields:
        if field.lower() == name:
            return value.decode("utf-8", "surrogateescape")
    return "-"
