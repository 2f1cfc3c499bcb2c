"""Type and range checks shared by the procedures' constructors and the flow settings.

Every check raises ``ValueError`` whose message names the setting (``owner key``),
the accepted type and range, and the value given, so that a wrong type never
surfaces as a TypeError (a 500 on the admin API, a traceback from the CLI).
Integers must be integers: ``2.9`` or ``True`` is refused, never truncated.
Upper bounds keep a study's memory and time sane (a grid of 10**12 points, a
practice phase that never ends).
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Literal, overload


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


@overload
def integer(owner: str, key: str, value: Any, low: int, high: int, *, allow_none: Literal[False] = ...) -> int: ...
@overload
def integer(owner: str, key: str, value: Any, low: int, high: int, *, allow_none: bool) -> int | None: ...
def integer(owner: str, key: str, value: Any, low: int, high: int, *, allow_none: bool = False) -> int | None:
    """``value`` as an int in [low, high] (None allowed when ``allow_none``)."""
    if value is None and allow_none:
        return None
    if not _is_int(value) or not low <= int(value) <= high:
        raise ValueError(
            f"{owner} {key} must be an integer in [{low}, {high}]{' or null' if allow_none else ''}, got {value!r}"
        )
    return int(value)


@overload
def real(
    owner: str,
    key: str,
    value: Any,
    low: float,
    high: float,
    *,
    low_open: bool = ...,
    high_open: bool = ...,
    allow_none: Literal[False] = ...,
) -> float: ...
@overload
def real(
    owner: str,
    key: str,
    value: Any,
    low: float,
    high: float,
    *,
    low_open: bool = ...,
    high_open: bool = ...,
    allow_none: bool,
) -> float | None: ...
def real(
    owner: str,
    key: str,
    value: Any,
    low: float,
    high: float,
    *,
    low_open: bool = False,
    high_open: bool = False,
    allow_none: bool = False,
) -> float | None:
    """``value`` as a finite float in the interval (brackets as ``low_open``/``high_open``)."""
    if value is None and allow_none:
        return None
    ok = _is_real(value) and math.isfinite(float(value))
    if ok:
        v = float(value)
        ok = (v > low if low_open else v >= low) and (v < high if high_open else v <= high)
    if not ok:
        span = f"{'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
        raise ValueError(f"{owner} {key} must be a number in {span}{' or null' if allow_none else ''}, got {value!r}")
    return float(value)


def boolean(owner: str, key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{owner} {key} must be true or false, got {value!r}")  # noqa: TRY004 (callers catch ValueError)
    return value


def sequence(owner: str, key: str, value: Any, min_len: int, max_len: int) -> list:
    """``value`` as a list (a JSON array) of ``min_len``..``max_len`` items."""
    if not isinstance(value, (list, tuple)) or not min_len <= len(value) <= max_len:
        count = f"{min_len}" if min_len == max_len else f"{min_len} to {max_len}"
        raise ValueError(f"{owner} {key} must be a list of {count} items, got {value!r}")
    return list(value)


def choice(owner: str, key: str, value: Any, options: tuple[str, ...] | list[str]) -> str:
    if not isinstance(value, str) or value not in options:
        raise ValueError(f"{owner} {key} must be one of {list(options)}, got {value!r}")
    return value
