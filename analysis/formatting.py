"""Numbers, intervals, thresholds, times and JSON as a reader should see them in a table
or a sentence.

One home for the text of every analysis output (the HTML reports, the tidy CSV tables,
the ``*_text`` columns, the command lines' summaries): three significant digits, no
``4.158e-07``, no raw infinities in intervals (an open end is "< x" / "> x"), p-values
as "< 0.001" below 0.001; timestamps as ISO-8601 UTC, JSON cells canonical. Pure: no I/O.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime

import numpy as np
import pandas as pd

__all__ = [
    "canonical_json",
    "describe_threshold",
    "format_cell",
    "format_interval",
    "format_number",
    "format_p",
    "utc_iso",
]

_SUPERSCRIPT = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")


def format_number(v: float | None, digits: int = 3) -> str:
    """A number for a table cell: ``digits`` significant digits, no exponent for the usual range.

    "4.16×10⁻⁷" below 1e-4 (and from 1e7 up), 3370.2 -> "3370", "" for None/NaN, "∞"/"−∞"
    for infinities (callers that print intervals use ``format_interval``, which never
    shows an infinity). Raises nothing.
    """
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    v = float(v)
    if math.isnan(v):
        return ""
    if math.isinf(v):
        return "∞" if v > 0 else "−∞"
    if v == 0:
        return "0"
    a = abs(v)
    if a < 1e-4 or a >= 1e7:  # 4.158e-07 -> "4.16×10⁻⁷"
        mant, exp = f"{v:.{max(digits - 1, 0)}e}".split("e")
        return f"{mant}×10{str(int(exp)).translate(_SUPERSCRIPT)}"
    if a >= 10 ** (digits - 1):
        return f"{v:.0f}"
    decimals = max(digits - 1 - math.floor(math.log10(a)), 0)
    text = f"{v:.{decimals}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def format_p(p: float | None) -> str:
    """A p-value for a table: "< 0.001" below 0.001, else 2 significant digits; "" for None/NaN."""
    if p is None or math.isnan(p):
        return ""
    return "< 0.001" if p < 0.001 else format_number(p, 2)


def format_interval(lo: float | None, hi: float | None, digits: int = 3) -> str:
    """An interval for a table cell: "[1.2, 3.4]", "< 3.4" (lower end open: below the
    tested range), "> 1.2" (upper end open), "unbounded" (both open) or "" (no interval:
    both ends None/NaN). Raises nothing."""
    if (lo is None or math.isnan(lo)) and (hi is None or math.isnan(hi)):
        return ""
    lo_open = lo is None or not math.isfinite(lo)
    hi_open = hi is None or not math.isfinite(hi)
    if lo_open and hi_open:
        return "unbounded"
    if lo_open:
        return f"< {format_number(hi, digits)}"
    if hi_open:
        return f"> {format_number(lo, digits)}"
    return f"[{format_number(lo, digits)}, {format_number(hi, digits)}]"


def describe_threshold(
    threshold: float,
    ci: tuple[float, float],
    bracket: tuple[float, float],
    *,
    estimable: bool,
    separated: bool,
    digits: int = 3,
    unit: str = "",
) -> str:
    """Text for one threshold (JND) and its interval, e.g. "44.9, CI [40.1, 49.8]".

    ``ci``: the (low, high) interval, open ends as -inf/+inf; ``bracket``: the two tested
    levels around a step (separated data) or the open side of a threshold beyond the tested
    range. Separated data read "between 40 and 50 (separated data)" (more digits when the
    two levels would print alike); a fit that is not estimable "above 100 (not estimable)",
    "below 20 (not estimable)" or "not estimable". ``unit`` follows the numbers. Raises nothing.
    """
    u = f" {unit}" if unit else ""
    blo, bhi = bracket
    if separated:
        d = digits
        while format_number(blo, d) == format_number(bhi, d) and d < 8:  # a narrow gap between two levels
            d += 1
        text = f"between {format_number(blo, d)} and {format_number(bhi, d)}{u} (separated data)"
    elif not estimable:
        if math.isfinite(blo) and not math.isfinite(bhi):
            text = f"above {format_number(blo, digits)}{u} (not estimable)"
        elif math.isfinite(bhi) and not math.isfinite(blo):
            text = f"below {format_number(bhi, digits)}{u} (not estimable)"
        else:
            return "not estimable"
    else:
        text = f"{format_number(threshold, digits)}{u}"
    ci_text = format_interval(*ci, digits=digits)
    return f"{text}, CI {ci_text}" if ci_text else text


def format_cell(v, column: str = "") -> str:
    """A table cell of a report: readable numbers (``format_number``), yes/no for booleans.

    The column name decides the style: ``*pvalue``/``*_p`` columns are p-values
    (``format_p``); an infinite ``*_low``/``*_high`` end is "open"; rates
    (``*_rate``, ``*accuracy``, ``*fraction``, ``*_frac``) in [0, 1] get three fixed
    decimals, so rates side by side line up (a 1e-8 lapse is 0.000). None, pandas' NA
    and NaN are "". Raises nothing.
    """
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else "no"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        if math.isnan(v):
            return ""
        if column.endswith(("pvalue", "_p")):
            return format_p(float(v))
        if math.isinf(v):
            return "open" if column.endswith(("_low", "_high")) else ("∞" if v > 0 else "−∞")
        if column.endswith(("_rate", "accuracy", "fraction", "_frac")) and 0.0 <= v <= 1.0:
            return f"{v:.3f}"
        return format_number(float(v))
    if v is None or v is pd.NA:
        return ""
    return str(v)


def utc_iso(value: datetime | str | None) -> str:
    """A timestamp cell: ISO-8601 in UTC with microseconds and a Z ("" for None).

    Naive datetimes (SQLite returns them; jndlab stores UTC) are taken as UTC; strings are
    parsed with ``datetime.fromisoformat`` first. Raises ValueError for a string that is
    not ISO-8601.
    """
    if value is None:
        return ""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def canonical_json(value) -> str:
    """A JSON cell: keys sorted, no spaces ("" for None), so equal values give equal text.
    Raises TypeError for values JSON cannot hold."""
    if value is None:
        return ""
    return json.dumps(value, sort_keys=True, separators=(",", ":"))
