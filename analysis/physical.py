"""From the level scale to physical units (SNR in dB, RT60 in s, bitrate in kbps).

Thresholds are fitted on the level scale of a stimulus ladder; a reader wants them in
the unit of the perturbation's parameter as well. A map from level to physical value
that is strictly monotone carries an interval onto an interval (a decreasing one swaps
its ends); levels outside the tested range have no physical value (no extrapolation).
Pure: no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import numpy as np
import pandas as pd

__all__ = ["PhysicalMap", "map_interval", "map_threshold", "physical_mapper"]

PhysicalMap = Callable[[np.ndarray], np.ndarray]


def physical_mapper(table) -> PhysicalMap:
    """Turn a level->physical table into a callable for ``fit_psychometric(to_physical=...)``.

    ``table``: a callable (returned as is), a mapping {level: value}, a pair of
    sequences (levels, values), or a DataFrame whose first two columns are level and
    value. Interpolation is linear between table rows; levels outside the table (and
    non-finite levels) give NaN: no silent extrapolation. The callable takes and returns
    arrays of any shape.

    Raises:
        ValueError: fewer than two distinct levels, or values not strictly monotone in
            level (then an interval would not map onto an interval).
    """
    if callable(table):
        return table
    if isinstance(table, pd.DataFrame):
        levels, values = table.iloc[:, 0].to_numpy(float), table.iloc[:, 1].to_numpy(float)
    elif isinstance(table, Mapping):
        levels, values = np.array(list(table.keys()), float), np.array(list(table.values()), float)
    else:
        levels, values = (np.asarray(a, float) for a in table)
    order = np.argsort(levels)
    levels, values = levels[order], values[order]
    if len(levels) < 2 or np.any(np.diff(levels) <= 0):
        raise ValueError("physical_mapper: need at least two distinct levels")
    dv = np.diff(values)
    if not (np.all(dv > 0) or np.all(dv < 0)):
        raise ValueError("physical_mapper: physical values must be strictly monotone in level")

    def to_physical(x):
        x = np.asarray(x, float)
        out = np.interp(x, levels, values)
        return np.where((x < levels[0]) | (x > levels[-1]) | ~np.isfinite(x), np.nan, out)

    return to_physical


def map_interval(to_physical: PhysicalMap, lo: float, hi: float, x_lo: float, x_hi: float) -> tuple[float, float]:
    """Map a level interval [lo, hi] through a monotone ``to_physical`` (increasing or
    decreasing) into an ordered physical interval.

    x_lo, x_hi: the tested range (levels). An end outside it (an open end, -inf/+inf,
    or the 0 an open Weibull end becomes) maps to the matching infinity in physical
    units: for a decreasing map (SNR falls as the level rises) an open lower level end
    is an open UPPER physical end. The direction is read from the map at the range's
    ends. Returns (low, high) with low <= high; NaN ends stay NaN in their own slot.

    Raises:
        ValueError: the map is not finite at both ends of the tested range, or equal there
            (not monotone over it).
    """

    def ev(v):
        return float(np.asarray(to_physical(np.asarray(v, float))))

    a, b = ev(x_lo), ev(x_hi)
    if not (np.isfinite(a) and np.isfinite(b)) or a == b:
        raise ValueError(
            f"map_interval: the physical map is not finite and monotone over the tested "
            f"range [{x_lo:g}, {x_hi:g}] (gives {a:g}, {b:g})"
        )
    increasing = b > a

    def end(v):
        if v is None or math.isnan(v):
            return math.nan
        if v < x_lo or (not math.isfinite(v) and v < 0):
            return -math.inf if increasing else math.inf
        if v > x_hi:
            return math.inf if increasing else -math.inf
        return ev(v)

    p_lo, p_hi = end(lo), end(hi)
    if increasing:
        return p_lo, p_hi
    # decreasing: the level interval's upper end is the physical lower end
    return p_hi, p_lo


def map_threshold(
    to_physical: PhysicalMap | None,
    threshold: float,
    ci: tuple[float, float],
    bracket: tuple[float, float],
    x_lo: float,
    x_hi: float,
) -> tuple[float, tuple[float, float], tuple[float, float]]:
    """A threshold, its interval and its bracket (levels) in physical units:
    ``(value, (ci low, high), (bracket low, high))``; all NaN when ``to_physical`` is None,
    the value NaN when the threshold is not finite. Raises ValueError as ``map_interval``."""
    if to_physical is None:
        return math.nan, (math.nan, math.nan), (math.nan, math.nan)
    value = float(np.asarray(to_physical(np.asarray(threshold, float)))) if np.isfinite(threshold) else math.nan
    return value, map_interval(to_physical, *ci, x_lo, x_hi), map_interval(to_physical, *bracket, x_lo, x_hi)
