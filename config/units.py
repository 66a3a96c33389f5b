"""Parsing of the human units used in ``gateway.yaml``: durations and byte sizes."""

from __future__ import annotations

import math
import re
from typing import Any

MAX_DURATION = 10 * 366 * 86400.0
MAX_SIZE = 1024**4
_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}

_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B|B)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "tb": 1000**4,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
}


def parse_duration(value: Any) -> float:
    """Seconds for ``30s``, ``10m``, ``2h``, ``30d``, ``250ms`` or a plain number of seconds."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 30s, 10m, 2h, 30d or a number of seconds")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (match := _DURATION_RE.match(value)):
        seconds = float(match.group(1)) * _DURATION_UNITS[match.group(2) or "s"]
    else:
        raise ValueError("expected a duration such as 30s, 10m, 2h, 30d or a number of seconds")
    if not math.isfinite(seconds) or seconds > MAX_DURATION:
        raise ValueError("a duration must be a finite number of at most 10 years")
    if seconds < 0:
        raise ValueError("a duration cannot be negative")
    return seconds


def parse_size(value: Any) -> int:
    """Return bytes for ``10MiB``, ``512KB``, ``1GiB`` or a plain number of bytes."""
    if isinstance(value, bool):
        raise ValueError("expected a size such as 10MiB, 512KiB or a number of bytes")
    if isinstance(value, int):
        size = value
    elif isinstance(value, str) and (match := _SIZE_RE.match(value)):
        number = float(match.group(1))
        if not math.isfinite(number) or number > MAX_SIZE:
            raise ValueError("a size must be at most 1TiB")
        size = int(number * _SIZE_UNITS[(match.group(2) or "b").lower()])
    else:
        raise ValueError("expected a size such as 10MiB, 512KiB or a number of bytes")
    if size < 0:
        raise ValueError("a size cannot be negative")
    if size > MAX_SIZE:
        raise ValueError("a size must be at most 1TiB")
    return size


def format_duration(seconds: float) -> str:
    """Render seconds back in the largest whole unit (``7200`` → ``2h``)."""
    if seconds == int(seconds):
        whole = int(seconds)
        if whole == 0:
            return "0s"
        for unit, factor in (("d", 86400), ("h", 3600), ("m", 60)):
            if whole % factor == 0:
                return f"{whole // factor}{unit}"
        return f"{whole}s"
    return f"{round(seconds * 1000)}ms"


def format_size(size: int) -> str:
    """Render bytes back in the largest whole binary unit (``10485760`` → ``10MiB``)."""
    for unit, factor in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if size and size % factor == 0:
            return f"{size // factor}{unit}"
    return str(size)
