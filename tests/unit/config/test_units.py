"""Durations and byte sizes as written in ``gateway.yaml`` (config/units.py)."""

from __future__ import annotations

import math
from typing import Any

import pytest

from config.units import format_duration, format_size, parse_duration, parse_size

# --- durations


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30s", 30.0),
        ("10m", 600.0),
        ("2h", 7200.0),
        ("30d", 2_592_000.0),
        ("1d", 86_400.0),
        ("250ms", 0.25),
        ("1500ms", 1.5),
        ("0.5s", 0.5),
        ("1.5h", 5400.0),
        ("0s", 0.0),
        ("0", 0.0),
        ("30", 30.0),  # a bare number in text is seconds
        ("2.5", 2.5),
        (" 10m ", 600.0),  # surrounding whitespace
        ("10 m", 600.0),  # a space between number and unit
    ],
)
def test_parse_duration_text(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    ("number", "seconds"),
    [(0, 0.0), (45, 45.0), (2.5, 2.5), (86_400, 86_400.0)],
)
def test_parse_duration_plain_number_is_seconds(number: float, seconds: float) -> None:
    result = parse_duration(number)
    assert isinstance(result, float)
    assert result == seconds


@pytest.mark.parametrize(
    "value",
    [
        "",
        " ",
        "abc",
        "s",
        "30x",
        "30 seconds",
        "1h30m",  # compound durations are not supported
        "1e3",
        "30s30",
        "ms",
        "-5s",  # a sign is not part of the grammar
        "+5s",
        "5..0s",
        None,
        [],
        {},
        [30],
        {"seconds": 30},
    ],
)
def test_parse_duration_rejects_bad_values(value: Any) -> None:
    with pytest.raises(ValueError, match="expected a duration"):
        parse_duration(value)


@pytest.mark.parametrize("value", [-1, -0.5, -86_400])
def test_parse_duration_rejects_negative_numbers(value: float) -> None:
    with pytest.raises(ValueError, match="cannot be negative"):
        parse_duration(value)


@pytest.mark.parametrize("value", [True, False])
def test_parse_duration_rejects_bools(value: bool) -> None:
    # bool is a subclass of int: ``timeout: yes`` must not silently mean one second.
    with pytest.raises(ValueError, match="expected a duration"):
        parse_duration(value)


@pytest.mark.parametrize("value", [math.inf, math.nan, "1" * 400 + "s"])
def test_parse_duration_rejects_non_finite(value: Any) -> None:
    with pytest.raises(ValueError):
        parse_duration(value)


# --- sizes


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("10MiB", 10 * 1024 * 1024),
        ("512KB", 512_000),
        ("512KiB", 512 * 1024),
        ("1GiB", 1024**3),
        ("1GB", 1000**3),
        ("2MB", 2_000_000),
        ("1TiB", 1024**4),
        ("1TB", 1000**4),
        ("100B", 100),
        ("100", 100),  # bare number in text is bytes
        ("0", 0),
        ("10mib", 10 * 1024 * 1024),  # units are case-insensitive
        ("10MIB", 10 * 1024 * 1024),
        ("1.5KiB", 1536),
        (" 2 MiB ", 2 * 1024 * 1024),
    ],
)
def test_parse_size_text(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("number", [0, 1, 1024, 10 * 1024 * 1024])
def test_parse_size_plain_int_is_bytes(number: int) -> None:
    assert parse_size(number) == number


@pytest.mark.parametrize(
    "value",
    [
        "",
        "ten",
        "10XB",
        "10K",
        "10M",
        "10 MiBs",
        "MiB",
        "-1KiB",
        "1e6",
        1.5,  # a float number of bytes is not a size
        10.0,
        None,
        [],
        {},
    ],
)
def test_parse_size_rejects_bad_values(value: Any) -> None:
    with pytest.raises(ValueError, match="expected a size"):
        parse_size(value)


def test_parse_size_rejects_negative_int() -> None:
    with pytest.raises(ValueError, match="cannot be negative"):
        parse_size(-1)


@pytest.mark.parametrize("value", [True, False])
def test_parse_size_rejects_bools(value: bool) -> None:
    with pytest.raises(ValueError, match="expected a size"):
        parse_size(value)


def test_parse_size_huge_number_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        parse_size("1" * 400 + "B")


# --- formatting


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (7200.0, "2h"),
        (2_592_000.0, "30d"),
        (86_400.0, "1d"),
        (600.0, "10m"),
        (30.0, "30s"),
        (90.0, "90s"),
        (5400.0, "90m"),
        (0.0, "0s"),
        (0.25, "250ms"),
        (1.5, "1500ms"),
        (7201.0, "7201s"),
    ],
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


@pytest.mark.parametrize(
    ("size", "text"),
    [
        (10 * 1024 * 1024, "10MiB"),
        (512 * 1024, "512KiB"),
        (1024**3, "1GiB"),
        (3 * 1024**3, "3GiB"),
        (512_000, "500KiB"),
        (100, "100"),
        (1000, "1000"),
        (0, "0"),
    ],
)
def test_format_size(size: int, text: str) -> None:
    assert format_size(size) == text


@pytest.mark.parametrize(
    "text", ["30s", "10m", "2h", "30d", "250ms", "1.5h", "90", "0", "7201s", "1500ms"]
)
def test_duration_round_trips(text: str) -> None:
    seconds = parse_duration(text)
    assert parse_duration(format_duration(seconds)) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["10MiB", "512KB", "512KiB", "1GiB", "1GB", "100", "0", "7B"])
def test_size_round_trips(text: str) -> None:
    size = parse_size(text)
    assert parse_size(format_size(size)) == size
