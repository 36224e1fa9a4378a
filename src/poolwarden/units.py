"""Durations and sizes as people write them in a config file.

A duration is `"90s"`, `"5m"`, `"29h"`, `"2d"`, `"500ms"`, a sum written
largest unit first (`"1h30m"`, `"1h 30m"`), or a bare number of seconds
(`90`, `1.5`, `"90"`). A size is `"32KiB"`, `"512MiB"`, `"1GiB"` (powers of
1024), `"100MB"` (powers of 1000) or a bare number of bytes (`4096`,
`"4096"`). Both are never negative; `0` is a valid value and means "off"
wherever the setting has an off.

The parsers return the numbers the rest of the server uses (float seconds,
int bytes) and raise `ValueError` with a sentence the config loader shows
after the key path, so the message never names the key itself.

Arithmetic is done on `Decimal`, so `"1h30m0.5s"` is exactly the float
nearest 5400.5 and `format_*` then `parse_*` gives back the same number.
"""

from __future__ import annotations

import json
import math
import re
from decimal import Decimal, InvalidOperation

DURATION_EXAMPLES = '(use e.g. "90s", "5m", "29h")'
SIZE_EXAMPLES = '(use e.g. "512MiB", "1GiB", "100MB")'

_DURATION_UNITS: dict[str, Decimal] = {
    "d": Decimal(86400),
    "h": Decimal(3600),
    "m": Decimal(60),
    "s": Decimal(1),
    "ms": Decimal("0.001"),
}
"""Largest first: a written duration must follow this order."""

_SIZE_UNITS: dict[str, int] = {
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
"""Lower-cased: sizes are matched without regard to case (`512mib` is fine)."""

_NUMBER = r"\d+(?:\.\d+)?"
_DURATION_PART = re.compile(rf"\s*({_NUMBER})\s*(ms|d|h|m|s)")
_SIZE = re.compile(rf"({_NUMBER})\s*([A-Za-z]*)")
_PLAIN_NUMBER = re.compile(_NUMBER)


def _show(value: object) -> str:
    """A value as it appears in a TOML file: strings quoted, booleans lower-case."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    return repr(value)


def _number(value: str | float, invalid: str) -> Decimal | None:
    """A bare number (int, float or numeric string) as a Decimal, else None.

    Raises for a number that can never be a duration or size (negative, NaN,
    infinite), since no unit could make it right.
    """
    if isinstance(value, bool):
        raise ValueError(invalid)
    if isinstance(value, int | float):
        if not math.isfinite(value):
            raise ValueError(invalid)
        if value < 0:
            raise ValueError(f"{invalid}: must not be negative")
        return Decimal(value) if isinstance(value, int) else Decimal(repr(value))
    if not isinstance(value, str):
        raise ValueError(invalid)
    text = value.strip()
    if _PLAIN_NUMBER.fullmatch(text):
        return Decimal(text)
    return None


def parse_duration(value: str | float) -> float:
    """Seconds in `value`; `ValueError` naming the value if it is not a duration."""
    invalid = f"invalid duration {_show(value)} {DURATION_EXAMPLES}"
    bare = _number(value, invalid)
    if bare is not None:
        return float(bare)
    assert isinstance(value, str)
    text = value.strip()
    total = Decimal(0)
    position = 0
    previous_rank = -1
    ranks = list(_DURATION_UNITS)
    while position < len(text):
        match = _DURATION_PART.match(text, position)
        if match is None:
            raise ValueError(invalid)
        number, unit = match.groups()
        rank = ranks.index(unit)
        if rank <= previous_rank:
            raise ValueError(f"{invalid}: write each unit once, largest first")
        previous_rank = rank
        total += Decimal(number) * _DURATION_UNITS[unit]
        position = match.end()
    if previous_rank < 0:
        raise ValueError(invalid)
    return float(total)


def parse_size(value: str | float) -> int:
    """Bytes in `value`; `ValueError` naming the value if it is not a size.

    A float is refused: a byte count is whole (write `"1.5KiB"`, not 1536.0).
    """
    invalid = f"invalid size {_show(value)} {SIZE_EXAMPLES}"
    if isinstance(value, float):
        raise ValueError(invalid)  # a byte count is whole; write "1.5KiB" for fractions
    bare = _number(value, invalid)
    if bare is not None:
        if bare != bare.to_integral_value():
            raise ValueError(f"{invalid}: not a whole number of bytes")
        return int(bare)
    assert isinstance(value, str)
    match = _SIZE.fullmatch(value.strip())
    if match is None:
        raise ValueError(invalid)
    number, unit = match.groups()
    factor = _SIZE_UNITS.get(unit.lower())
    if factor is None:
        raise ValueError(invalid)
    try:
        total = Decimal(number) * factor
    except InvalidOperation:  # pragma: no cover: the pattern admits only plain numbers
        raise ValueError(invalid) from None
    if total != total.to_integral_value():
        raise ValueError(f"{invalid}: not a whole number of bytes")
    return int(total)


def format_duration(seconds: float) -> str:
    """The shortest text `parse_duration` reads back as `seconds` (to the millisecond).

    `5400` → `"1h30m"`, `0.5` → `"500ms"`, `0` → `"0s"`. For messages and
    for `config show`; the config itself keeps float seconds.
    """
    if seconds < 0 or not math.isfinite(seconds):
        raise ValueError(f"cannot format {seconds!r} as a duration")
    remaining = round(Decimal(repr(float(seconds))) * 1000)
    parts: list[str] = []
    for unit, size in _DURATION_UNITS.items():
        millis = int(size * 1000)
        count, remaining = divmod(remaining, millis)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts) or "0s"


def format_size(size: int) -> str:
    """`size` in the largest binary unit that divides it exactly, else bytes.

    `33554432` → `"32MiB"`, `1000` → `"1000"`: exact, so it reads back the same.
    """
    if size < 0:
        raise ValueError(f"cannot format {size!r} as a size")
    for unit, factor in (("TiB", 1024**4), ("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if size and size % factor == 0:
            return f"{size // factor}{unit}"
    return str(size)


def format_memory(size: int) -> str:
    """A memory figure for a person: `683 MiB`, `1.5 GiB`, `900 KiB`, `512 bytes`.

    Rounded, unlike `format_size`: for messages ("its resident memory is
    683 MiB (limit 400 MiB)"); event details keep the exact bytes.
    """
    if size < 0:
        raise ValueError(f"cannot format {size!r} as memory")
    for unit, factor in (("TiB", 1024**4), ("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if size >= factor:
            value = size / factor
            if value < 10 and size % factor:
                return f"{value:.1f} {unit}"
            return f"{round(value)} {unit}"
    return f"{size} bytes"
