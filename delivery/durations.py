"""Durations as operators write them (`90s`, `5m`, `1h`, `2d`, `100ms`) and as the wire has them.

Every duration inside `delivery` is an integer number of milliseconds (DESIGN §3). This module is
the one place that turns text into milliseconds and back, for settings, managed objects and
expression literals alike.

Outcomes:
    parse_duration("5m") -> 300000; an int is taken as milliseconds already.
    A malformed text raises ValueError naming the text and the accepted forms.
"""

from __future__ import annotations

import re

__all__ = ["UNIT_MS", "format_duration", "parse_duration"]

UNIT_MS: dict[str, int] = {
    "ms": 1,
    "s": 1000,
    "m": 60_000,
    "h": 3_600_000,
    "d": 86_400_000,
    "w": 604_800_000,
}

_DURATION = re.compile(r"^\s*(\d+)\s*(ms|s|m|h|d|w)?\s*$")


def parse_duration(value: int | str, /) -> int:
    """Milliseconds from ``value``: an int (already ms), a digit string (ms) or ``<n><unit>``.

    >>> parse_duration("5m"), parse_duration("100ms"), parse_duration(250)
    (300000, 100, 250)
    """
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a duration")
    if isinstance(value, int):
        return value
    match = _DURATION.match(value)
    if match is None:
        raise ValueError(
            f"{value!r} is not a duration: use milliseconds or a number with a unit "
            "(ms, s, m, h, d, w), e.g. '90s' or '5m'"
        )
    number, unit = match.groups()
    return int(number) * UNIT_MS[unit or "ms"]


def format_duration(ms: int, /) -> str:
    """The shortest exact text for ``ms``, for humans.

    >>> format_duration(300000), format_duration(1500), format_duration(0)
    ('5m', '1500ms', '0ms')
    """
    for unit in ("w", "d", "h", "m", "s"):
        size = UNIT_MS[unit]
        if ms and ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"
