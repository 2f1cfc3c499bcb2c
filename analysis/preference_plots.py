"""The figures of an A/B preference report: shares per pair, per item, and the
Bradley-Terry ranking. One style with the same/different report (``analysis.figures``):
every figure is a PNG with a PDF beside it.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from .figures import pyplot, save

if TYPE_CHECKING:
    from .preference import PairSummary

__all__ = ["plot_item_shares", "plot_pair_shares", "plot_ranking"]


def plot_pair_shares(pairs: list[PairSummary], out_png: str | os.PathLike) -> Path:
    """Each pair's preference share with its CIs: pooled, by item, by listener, listener
    bootstrap (one row per pair, shares on 0-1). PNG + PDF; returns the PNG's path."""
    plt = pyplot()
    views = [
        ("pooled (Clopper-Pearson)", "o"),
        ("by item", "s"),
        ("by listener", "^"),
        ("pooled, listener bootstrap", "D"),
    ]
    fig, ax = plt.subplots(figsize=(7, 1.0 + 0.9 * max(len(pairs), 1)))
    labelled: set[str] = set()
    for i, s in enumerate(pairs):
        b = s.listener_bootstrap
        estimates = [
            (s.pooled.share, s.pooled.ci_low, s.pooled.ci_high),
            (s.by_item.share, s.by_item.ci_low, s.by_item.ci_high),
            (s.by_listener.share, s.by_listener.ci_low, s.by_listener.ci_high),
            (b.share, b.ci_low, b.ci_high),
        ]
        for j, ((label, marker), (share, low, high)) in enumerate(zip(views, estimates)):
            if math.isnan(share):
                continue
            y = i + 0.18 * (j - 1.5)
            err = None if math.isnan(low) else [[share - low], [high - share]]
            ax.errorbar(
                [share], [y], xerr=err, fmt=marker, color=f"C{j}", capsize=3, label=None if label in labelled else label
            )
            labelled.add(label)
    ax.axvline(0.5, color="0.5", lw=0.8, ls="--")
    ax.set_yticks(range(len(pairs)), [f"{s.system}\nover {s.other}" for s in pairs])
    ax.set_ylim(-0.6, max(len(pairs), 1) - 0.4)
    ax.invert_yaxis()
    ax.set_xlim(-0.02, 1.02)  # a share of exactly 0 or 1 stays visible
    ax.set_xlabel(f"share preferring the first system ({100 * (pairs[0].pooled.confidence if pairs else 0.95):g}% CI)")
    if labelled:
        ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    save(fig, out_png)
    return Path(out_png)


def plot_item_shares(by_item: pd.DataFrame, pairs: list[PairSummary], out_png: str | os.PathLike) -> Path:
    """Per pair, every item's share (sorted) with its Clopper-Pearson CI and the pooled share
    (one panel per pair; ``by_item`` is ``preference.cluster_table(..., "item")``). PNG + PDF."""
    plt = pyplot()
    fig, axes = plt.subplots(max(len(pairs), 1), 1, figsize=(7, 2.6 * max(len(pairs), 1)), squeeze=False)
    for ax, s in zip(axes[:, 0], pairs):
        t = by_item[by_item["pair"] == s.pair].sort_values(["share", "item"])
        x = np.arange(len(t))
        ax.errorbar(
            x,
            t["share"],
            yerr=[t["share"] - t["ci_low"], t["ci_high"] - t["share"]],
            fmt="o",
            ms=3,
            capsize=2,
            color="C0",
        )
        ax.axhline(0.5, color="0.5", lw=0.8, ls="--")
        if not math.isnan(s.pooled.share):
            ax.axhline(s.pooled.share, color="C1", lw=1, label=f"pooled {s.pooled.share:.3f}")
            ax.legend(fontsize=7, loc="lower right")
        ax.set_ylim(0, 1)
        ax.set_ylabel(f"share {s.system}")
        ax.set_title(f"{s.system} over {s.other}, per item", fontsize=9)
        ax.set_xticks(x, list(t["item"]), rotation=90, fontsize=6)
    fig.tight_layout()
    save(fig, out_png)
    return Path(out_png)


def plot_ranking(strengths: pd.DataFrame, out_png: str | os.PathLike, confidence: float = 0.95) -> Path:
    """Systems ranked by Bradley-Terry strength with their bootstrap intervals
    (horizontal bars, best on top; top axis: P(beating an average system)); ``strengths``
    is ``pairwise.bradley_terry``'s table. PNG + PDF; returns the PNG's path."""
    plt = pyplot()
    t = strengths.iloc[::-1]
    y = np.arange(len(t))
    fig, ax = plt.subplots(figsize=(6.4, 1.2 + 0.45 * len(t)))
    s = t["strength"].to_numpy(float)
    lo, hi = t["strength_ci_low"].to_numpy(float), t["strength_ci_high"].to_numpy(float)
    err = np.where(np.isfinite([lo, hi]), np.abs(np.array([s - lo, hi - s])), 0.0)
    ax.errorbar(s, y, xerr=np.maximum(err, 0.0), fmt="o", color="tab:blue", ms=6, capsize=3, lw=1.5)
    ax.axvline(0.0, color="0.6", ls="--", lw=1)
    ax.set_yticks(y, [f"{r} {n}" for r, n in zip(t["rank"], t["system"])])
    ax.set_xlabel("Bradley-Terry strength (log-odds, mean 0)")
    sec = ax.secondary_xaxis(
        "top",
        functions=(
            lambda v: 1 / (1 + np.exp(-np.asarray(v, float))),
            lambda p: np.log(np.clip(p, 1e-9, 1 - 1e-9)) - np.log1p(-np.clip(p, 1e-9, 1 - 1e-9)),
        ),
    )
    sec.set_xlabel("P(preferred over an average system)")
    ax.set_title(f"ranking, {100 * confidence:g}% listener-bootstrap intervals", fontsize=11)
    fig.tight_layout()
    out_png = Path(out_png)
    save(fig, out_png)
    return out_png
