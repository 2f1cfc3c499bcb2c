"""Figures a paper can use: one style, vector output beside every PNG, a physical-unit
secondary axis, thresholds drawn as what they are (point, bracket, open interval).

Sizes: single panels are 6.4 x 4.2 in at 150 dpi (960 x 630 px), fonts 11 pt (axis
labels) and 10 pt (ticks, legends), so a figure scaled to a journal column
(~3.3 in) keeps text at about 6 pt. Every ``save`` writes NAME.png and NAME.pdf.
"""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

import numpy as np

RC = {
    "font.size": 11,
    "axes.titlesize": 12,
    "axes.labelsize": 11,
    "xtick.labelsize": 10,
    "ytick.labelsize": 10,
    "legend.fontsize": 9,
    "figure.dpi": 100,
    "savefig.bbox": "tight",
    "axes.spines.top": False,
    "axes.spines.right": False,
}
PNG_DPI = 150
VECTOR_FORMATS = ("pdf",)


def pyplot():
    """matplotlib.pyplot on the Agg backend with jndlab's style applied."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update(RC)
    return plt


def save(fig, out_png) -> list[Path]:
    """Write ``out_png`` (150 dpi) and the same figure as PDF beside it; close it.
    Returns the paths written."""
    plt = pyplot()
    out_png = Path(out_png)
    paths = [out_png]
    fig.savefig(out_png, dpi=PNG_DPI)
    for ext in VECTOR_FORMATS:
        p = out_png.with_suffix(f".{ext}")
        fig.savefig(p)
        paths.append(p)
    plt.close(fig)
    return paths


def interp_extrapolate(x, xp, fp) -> np.ndarray:
    """np.interp with linear extrapolation from the end segments (xp increasing)."""
    x = np.asarray(x, float)
    xp, fp = np.asarray(xp, float), np.asarray(fp, float)
    out = np.interp(x, xp, fp)
    lo_slope = (fp[1] - fp[0]) / (xp[1] - xp[0])
    hi_slope = (fp[-1] - fp[-2]) / (xp[-1] - xp[-2])
    out = np.where(x < xp[0], fp[0] + (x - xp[0]) * lo_slope, out)
    return np.where(x > xp[-1], fp[-1] + (x - xp[-1]) * hi_slope, out)


def physical_axis(ax, levels, values, label: str):
    """A secondary x axis (top) in physical units for an axis in levels, from a
    table of (level, physical value) that is monotone (strictly after dropping
    repeated values; linear between rows, extrapolated from the end rows so the
    axis stays finite over the padding)."""
    levels, values = np.asarray(levels, float), np.asarray(values, float)
    keep = np.concatenate([[True], np.diff(values) != 0])
    levels, values = levels[keep], values[keep]
    if levels.size < 2:
        return None
    order = np.argsort(values)

    def fwd(v):
        return interp_extrapolate(v, levels, values)

    def inv(v):
        return interp_extrapolate(v, values[order], levels[order])

    sec = ax.secondary_xaxis("top", functions=(fwd, inv))
    sec.set_xlabel(label)
    return sec


def note_below(ax, text: str, width: int = 70):
    """Put an explanatory note under the axes (never over the data), wrapped."""
    ax.annotate(
        "\n".join(textwrap.wrap(text, width)),
        xy=(0, 0),
        xycoords="axes fraction",
        xytext=(0, -42),
        textcoords="offset points",
        va="top",
        ha="left",
        fontsize=9,
        color="0.3",
    )


def draw_threshold(ax, fit, x_lo: float, x_hi: float, color="tab:orange", label_ci="JND 95% CI"):
    """Draw a fit's threshold: a vertical line at the estimate, or a shaded bracket when
    the data are separated; the interval as a thick bar at the curve's midpoint, with
    arrows where an end is open (beyond the tested range)."""
    mid = (fit.guess_rate + 1 - fit.lapse_rate) / 2 if np.isfinite(fit.guess_rate) else 0.5
    if fit.separated:
        b0, b1 = fit.threshold_bracket
        ax.axvspan(b0, b1, color=color, alpha=0.15, lw=0, label="threshold bracket (separated data)")
    elif np.isfinite(fit.threshold):
        ax.axvline(fit.threshold, color=color, lw=1.2)
    lo, hi = fit.threshold_ci
    if math.isnan(lo) and math.isnan(hi):
        return
    lo_d = lo if np.isfinite(lo) else x_lo
    hi_d = hi if np.isfinite(hi) else x_hi
    ax.plot([lo_d, hi_d], [mid, mid], color=color, lw=5, alpha=0.6, solid_capstyle="butt", label=label_ci)
    if not np.isfinite(lo):
        ax.annotate(
            "",
            xy=(x_lo, mid),
            xytext=(x_lo + 0.06 * (x_hi - x_lo), mid),
            arrowprops=dict(arrowstyle="->", color=color, lw=1.5),
        )
    if not np.isfinite(hi):
        ax.annotate(
            "",
            xy=(x_hi, mid),
            xytext=(x_hi - 0.06 * (x_hi - x_lo), mid),
            arrowprops=dict(arrowstyle="->", color=color, lw=1.5),
        )
