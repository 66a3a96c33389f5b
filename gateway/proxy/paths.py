"""One-time normalisation of a request path, applied before route matching.

``normalise_path(raw)`` takes the raw, still percent-encoded path of the request target (aiohttp's
``request.raw_path`` cut at the first ``?``) and returns its *canonical* form. The route table
matches that canonical form and the upstream receives exactly that string, so what was matched
is what is served: no encoding trick reaches a route whose rule would have refused it (SPEC §4).
Anything that cannot be normalised without guessing raises ``PathError`` (the caller answers 400).

Rules, in the order they apply:

1.  The path must start with ``/`` and be at most ``MAX_PATH_LENGTH`` characters long.
2.  Percent-escapes are decoded exactly once. ``%`` must be followed by two hex digits.
    - An escape of a character that may appear literally in a segment (RFC 3986 ``pchar``:
      ``A-Z a-z 0-9 - . _ ~ ! $ & ' ( ) * + , = : @``) is decoded: ``%61dmin`` is ``admin``,
      ``%2e`` / ``%2E`` is ``.``. Servers decode these anyway, so leaving them encoded would let
      the upstream see a path other than the one matched.
    - Any other byte stays encoded, with upper-case hex: ``%3f`` -> ``%3F``, ``%25`` -> ``%25``.
      ``%25`` is never decoded a second time, so ``%252e%252e`` can never become ``..``.
3.  Refused outright (``PathError``):
    - ``%2F`` and ``%5C`` (encoded ``/`` and ``\\``) and a raw ``\\``: upstreams disagree on
      whether they separate segments.
    - ``;`` raw or as ``%3B``: Tomcat/Jetty/Spring read ``;params`` off segments, so
      ``/public;/../admin`` would route differently upstream. Rejected rather than stripped,
      so the gateway never rewrites a path into something the client did not send.
    - NUL and other control characters (raw, ``%00``-``%1F``, ``%7F``), raw ``?`` and ``#``
      (the caller removes the query; a fragment is never sent by a well-behaved client).
    - Double encoding: a decoded ``%`` followed by two hex digits (``%2541``, ``%252e``, or
      ``%25%32%65``), because an upstream or library that decodes twice would see another path.
    - Bytes that are not valid UTF-8 once decoded, including overlong forms (``%c0%ae``) and
      encoded surrogates.
    - Decoded text containing Unicode control/format/private/unassigned characters, or text
      that is not NFKC-stable (fullwidth dots, slashes and letters such as U+FF0E, ligatures,
      decomposed accents): upstreams that apply Unicode normalisation would otherwise see a
      different path.
4.  Other raw characters that must be encoded in a path (space, ``"<>[]^`{|}``, non-ASCII) are
    percent-encoded as UTF-8, so a raw ``é`` and ``%C3%A9`` have the same canonical form.
5.  Empty segments are dropped (``//admin`` -> ``/admin``); ``.`` segments are removed and
    ``..`` removes the previous segment (RFC 3986 ``remove_dot_segments``). A ``..`` with
    nothing left to remove (``/..``, ``/a/../..``) is an error, not clamped to ``/``.
6.  A trailing slash is kept (``/a/`` stays ``/a/``, not ``/a``); a path ending in a dot segment
    ends in ``/`` (``/a/b/..`` -> ``/a/``). Case is preserved: ``/ADMIN`` is not ``/admin``.

The result is pure ASCII, starts with ``/``, contains no ``//``, no dot segments and no ``;``,
and every ``%`` in it begins an upper-case escape: it is safe to send upstream as-is.
"""

from __future__ import annotations

import re
import string
import unicodedata
from typing import Final
from urllib.parse import unquote_to_bytes

__all__ = ["MAX_PATH_LENGTH", "PathError", "normalise_path"]

MAX_PATH_LENGTH: Final = 8192
"""Longest raw path accepted, in characters (aiohttp's request line limit is 8190 bytes)."""

_HEX: Final = frozenset(string.hexdigits)
_PCHAR: Final = frozenset(string.ascii_letters + string.digits + "-._~" + "!$&'()*+,=" + ":@")
"""Characters written literally in a canonical segment (RFC 3986 pchar, minus ``;``)."""

_SAFE_PATH: Final = re.compile(r"(?:/[A-Za-z0-9\-._~!$&'()*+,=:@]+)*/?")
"""Already canonical unless it holds a dot segment: the fast path for ordinary requests."""

_DOUBLE_ENCODED: Final = re.compile(r"%25[0-9A-Fa-f]{2}")
_REFUSED_UNICODE_CATEGORIES: Final = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})


class PathError(ValueError):
    """The request path cannot be normalised safely; the caller answers 400."""


def is_canonical(raw_path: str) -> bool:
    """True when ``raw_path`` is its own normal form and holds no percent-encoding at all."""
    return (
        len(raw_path) <= MAX_PATH_LENGTH
        and _SAFE_PATH.fullmatch(raw_path) is not None
        and "/." not in raw_path
    )


def normalise_path(raw_path: str) -> str:
    """Return the canonical form of a raw request path, or raise ``PathError``."""
    if not raw_path.startswith("/"):
        raise PathError("path must start with /")
    if len(raw_path) > MAX_PATH_LENGTH:
        raise PathError("path is too long")
    if _SAFE_PATH.fullmatch(raw_path) and "/." not in raw_path:
        return raw_path

    raw_segments = raw_path.split("/")[1:]
    segments: list[str] = []
    last = ""
    for raw in raw_segments:
        last = _canonical_segment(raw) if raw else ""
        if last in ("", "."):
            continue
        if last == "..":
            if not segments:
                raise PathError("path climbs above the root")
            segments.pop()
            continue
        segments.append(last)

    trailing_slash = bool(segments) and last in ("", ".", "..")
    path = "/" + "/".join(segments) + ("/" if trailing_slash else "")
    if "%" in path:
        _check_decoded(path)
    return path


def _canonical_segment(raw: str) -> str:
    """Canonical form of one segment (no ``/`` in ``raw``): decode once, re-encode the rest."""
    out: list[str] = []
    i, n = 0, len(raw)
    while i < n:
        char = raw[i]
        if char == "%":
            digits = raw[i + 1 : i + 3]
            if len(digits) != 2 or not _HEX.issuperset(digits):
                raise PathError("invalid percent-encoding")
            out.append(_decoded_escape(int(digits, 16)))
            i += 3
            continue
        if char in _PCHAR:
            out.append(char)
        else:
            out.append(_encoded_raw(char))
        i += 1
    return "".join(out)


def _decoded_escape(byte: int) -> str:
    """Canonical text for ``%XX``: the character if it is a pchar, else the upper-case escape."""
    char = chr(byte)
    if char in _PCHAR:
        return char
    if char == "/":
        raise PathError("encoded slash (%2F) in path")
    if char == "\\":
        raise PathError("encoded backslash (%5C) in path")
    if char == ";":
        raise PathError("semicolon (path parameters) in path")
    if byte < 0x20 or byte == 0x7F:
        raise PathError("control character in path")
    return f"%{byte:02X}"


def _encoded_raw(char: str) -> str:
    """Canonical text for a raw character that is not a pchar, or ``PathError``."""
    code = ord(char)
    if char == "\\":
        raise PathError("backslash in path")
    if char == ";":
        raise PathError("semicolon (path parameters) in path")
    if char in "?#":
        raise PathError("query or fragment delimiter in path")
    if code < 0x20 or code == 0x7F:
        raise PathError("control character in path")
    try:
        data = char.encode("utf-8")
    except UnicodeEncodeError:
        raise PathError("path is not valid UTF-8") from None
    return "".join(f"%{byte:02X}" for byte in data)


def _check_decoded(path: str) -> None:
    """Refuse double encoding, invalid UTF-8 and ambiguous Unicode in a canonical path."""
    if _DOUBLE_ENCODED.search(path):
        raise PathError("double percent-encoding in path")
    data = unquote_to_bytes(path)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise PathError("path is not valid UTF-8") from None
    if text.isascii():
        return
    if any(unicodedata.category(char) in _REFUSED_UNICODE_CATEGORIES for char in text):
        raise PathError("invisible or unassigned Unicode character in path")
    if unicodedata.normalize("NFKC", text) != text:
        raise PathError("path is not in Unicode normal form NFKC")
