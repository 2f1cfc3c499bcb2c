"""JNDs from listening-test judgments: psychometric fits per family, per reference,
per participant and pooled, in ladder levels and in physical units.

Data: main trials (x = ladder level 0..100, y = "different") plus the family's
identical-pair catch trials, which inform the false-alarm rate gamma only. With
at least ``min_catch`` identical pairs gamma is fixed at their rate for the
estimate and left free (informed by those pairs) in the profile-likelihood
interval, so its uncertainty reaches the interval; with fewer it is fitted jointly.
Intervals hold their estimate; separated data give a bracket ("between 40 and 50",
``separated``, ``jnd_bracket_low/high``); open ends are -inf/+inf in the CSVs and
"< x" / "> x" in ``jnd_text``.
The lapse rate is fitted in [0, 0.1]. Fits that the data cannot support come back
"not estimable" with the reason (see ``analysis.psychometric``).

Physical units: each stimulus row carries its physical parameters (``params`` in the
manifest: snr_db, rt60_s, bitrate_kbps ...). Per family, the first parameter of
``PHYSICAL_KEYS`` that is numeric and monotone in level becomes the family's
physical scale: the median over references at each level (per reference: that
reference's own values), interpolated linearly between rungs.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from .formatting import describe_threshold, format_number
from .judgments import PARAM_PREFIX
from .psychometric import PsychometricFit, fit_psychometric

# Preferred physical parameter per family (first usable wins), then any monotone numeric one.
PHYSICAL_KEYS: dict[str, tuple[str, ...]] = {
    "noise": ("snr_db",),
    "reverb": ("rt60_s", "rt60_target_s", "drr_db"),
    "mp3": ("bitrate_kbps", "bitrate_target_kbps"),
    "lowpass": ("cutoff_hz",),
    "clipping": ("threshold_db",),
    "mulaw": ("bits",),
}
FIT_DEFAULTS: dict[str, Any] = dict(model="logistic", lapse="fit", lapse_max=0.1, bootstrap="nonparametric")
LEVEL_COLUMNS = ["jnd_level", "jnd_level_ci_low", "jnd_level_ci_high"]


@dataclass(frozen=True)
class PhysicalScale:
    """Level -> physical value for one family (or one reference's ladder)."""

    key: str  # the params key, units in its name (snr_db)
    levels: np.ndarray  # sorted distinct levels
    values: np.ndarray  # physical value at each level (weakly monotone)

    def __call__(self, x):
        x = np.asarray(x, float)
        out = np.interp(x, self.levels, self.values)
        return np.where((x < self.levels[0]) | (x > self.levels[-1]) | ~np.isfinite(x), np.nan, out)


def _monotone_scale(key: str, levels, values) -> PhysicalScale | None:
    frame = pd.DataFrame(
        {"level": np.asarray(levels, float), "value": pd.to_numeric(pd.Series(values), errors="coerce")}
    )
    frame = frame.dropna()
    if frame.empty:
        return None
    med = frame.groupby("level", sort=True)["value"].median()
    if len(med) < 2:
        return None
    dv = np.diff(med.to_numpy(float))
    # weakly monotone (snapped bitrates and integer bits repeat) but not constant
    if not (np.all(dv >= 0) or np.all(dv <= 0)) or np.all(dv == 0):
        return None
    return PhysicalScale(key, med.index.to_numpy(float), med.to_numpy(float))


def physical_scale(rows: pd.DataFrame, family: str) -> PhysicalScale | None:
    """The physical scale of ``family`` from judgment rows (their ``param_*`` columns)."""
    candidates = [c[len(PARAM_PREFIX) :] for c in rows.columns if c.startswith(PARAM_PREFIX)]
    preferred = [k for k in PHYSICAL_KEYS.get(family, ()) if k in candidates]
    others = sorted(k for k in candidates if k not in preferred)
    for key in preferred + others:
        col = rows[PARAM_PREFIX + key]
        if col.notna().sum() == 0 or not pd.api.types.is_numeric_dtype(pd.to_numeric(col.dropna(), errors="coerce")):
            continue
        if pd.to_numeric(col, errors="coerce").notna().sum() < col.notna().sum():
            continue  # text values (noise_type) are not a scale
        scale = _monotone_scale(key, rows["level"], col)
        if scale is not None:
            return scale
    return None


def _fit(
    group: pd.DataFrame, catch: np.ndarray, scale: PhysicalScale | None, *, n_boot, rng, min_catch, min_trials, model
) -> PsychometricFit:
    guess = "catch" if len(catch) >= min_catch else "fit"
    kwargs = {**FIT_DEFAULTS, "model": model}
    return fit_psychometric(
        group["level"].to_numpy(float),
        group["response_different"].to_numpy().astype(int),
        catch=catch,
        guess=guess,
        n_boot=n_boot,
        rng=rng,
        to_physical=scale,
        min_trials=min_trials,
        **kwargs,
    )


def _row(fit: PsychometricFit, scale: PhysicalScale | None, **keys) -> dict:
    unit = unit_label(scale.key) if scale else ""
    return dict(
        **keys,
        estimable=fit.estimable,
        reason=fit.reason,
        n_trials=fit.n_trials,
        n_levels=fit.n_levels,
        n_identical=fit.n_catch,
        identical_fa_rate=(fit.n_catch_different / fit.n_catch) if fit.n_catch else math.nan,
        jnd_text=fit.threshold_text(),
        jnd_level=fit.threshold,
        jnd_level_ci_low=fit.threshold_ci[0],
        jnd_level_ci_high=fit.threshold_ci[1],
        separated=fit.separated,
        jnd_bracket_low=fit.threshold_bracket[0],
        jnd_bracket_high=fit.threshold_bracket[1],
        physical_param=scale.key if scale else "",
        jnd_physical_text=describe_threshold(
            fit.threshold_physical,
            fit.threshold_physical_ci,
            fit.threshold_physical_bracket,
            estimable=fit.estimable,
            separated=fit.separated,
            unit=unit,
        )
        if scale and fit.estimable
        else "",
        jnd_physical=fit.threshold_physical,
        jnd_physical_ci_low=fit.threshold_physical_ci[0],
        jnd_physical_ci_high=fit.threshold_physical_ci[1],
        guess_rate=fit.guess_rate,
        lapse_rate=fit.lapse_rate,
        slope=fit.slope,
        lr_pvalue=fit.lr_pvalue,
        level_min=fit.x_min,
        level_max=fit.x_max,
        n_boot=fit.n_boot,
        ci_method=fit.threshold_ci_method,
        notes="; ".join(fit.notes)
        + (
            ""
            if scale or not fit.estimable
            else ("; " if fit.notes else "") + "no numeric parameter monotone in level: JND in levels only"
        ),
    )


_UNITS = {"db": "dB", "s": "s", "hz": "Hz", "kbps": "kbps", "ms": "ms"}


def unit_label(key: str) -> str:
    """A params key with its unit suffix (snr_db) as an axis label unit: "dB"; "" when
    the key names no unit (bits)."""
    return _UNITS.get(key.rsplit("_", 1)[-1].lower(), "") if "_" in key else ""


def axis_label(key: str) -> str:
    """snr_db -> "SNR (dB)", rt60_s -> "RT60 (s)", cutoff_hz -> "cutoff (Hz)", bits -> "bits"."""
    unit = unit_label(key)
    name = key.rsplit("_", 1)[0] if unit else key
    name = name.replace("_", " ")
    name = name.upper() if name in ("snr", "rt60", "drr") else name
    return f"{name} ({unit})" if unit else name


def jnd_tables(
    judgments: pd.DataFrame,
    *,
    n_boot: int = 500,
    rng: np.random.Generator | None = None,
    model: str = "logistic",
    min_catch: int = 5,
    min_trials: int = 20,
    progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Fit every unit. Returns a dict of tables ``by_family`` (pooled over references
    and participants), ``by_reference``, ``by_participant`` and ``fits`` (the
    PsychometricFit, trials and catch responses of each pooled family, for plotting).

    ``judgments``: the tidy table of ``analysis.judgments`` (after screening, if any).
    Main trials are fitted; catch_identical trials of the same unit inform gamma.
    """
    if n_boot and rng is None:
        raise ValueError("jnd_tables: n_boot > 0 needs rng (a numpy.random.Generator)")
    df = judgments[judgments["response_different"].notna()]
    main = df[df["kind"] == "main"]
    ident = df[df["kind"] == "catch_identical"]
    if main.empty:
        raise ValueError(
            "no main-trial judgments to fit (only "
            + (
                ", ".join(f"{k}: {n}" for k, n in judgments["kind"].value_counts().sort_index().items())
                or "no judgments"
            )
            + ")"
        )
    fit_args = dict(n_boot=n_boot, rng=rng, min_catch=min_catch, min_trials=min_trials, model=model)
    fam_rows, ref_rows, part_rows, fits = [], [], [], {}
    scales: dict[str, PhysicalScale | None] = {}
    for family, fam in main.groupby("family", sort=True):
        fam_catch = ident.loc[ident["family"] == family, "response_different"].to_numpy().astype(int)
        scale = scales[family] = physical_scale(fam, family)
        fit = _fit(fam, fam_catch, scale, **fit_args)
        fam_rows.append(
            _row(
                fit,
                scale,
                family=family,
                n_references=fam["reference"].nunique(),
                n_participants=fam["worker"].nunique(),
            )
        )
        fits[family] = (fit, fam, fam_catch)
        if progress:
            progress(1)
        for reference, g in fam.groupby("reference", sort=True):
            ref_scale = physical_scale(g, family)
            catch = (
                ident.loc[(ident["family"] == family) & (ident["reference"] == reference), "response_different"]
                .to_numpy()
                .astype(int)
            )
            ref_rows.append(
                _row(
                    _fit(g, catch, ref_scale, **fit_args),
                    ref_scale,
                    family=family,
                    reference=reference,
                    n_participants=g["worker"].nunique(),
                )
            )
            if progress:
                progress(1)
        for (exp_id, worker), g in fam.groupby(["experiment_id", "worker"], sort=True):
            catch = (
                ident.loc[
                    (ident["family"] == family) & (ident["worker"] == worker) & (ident["experiment_id"] == exp_id),
                    "response_different",
                ]
                .to_numpy()
                .astype(int)
            )
            part_rows.append(
                _row(
                    _fit(g, catch, scale, **fit_args),
                    scale,
                    family=family,
                    experiment_id=exp_id,
                    worker=worker,
                    n_references=g["reference"].nunique(),
                )
            )
            if progress:
                progress(1)
    return {
        "by_family": pd.DataFrame(fam_rows),
        "by_reference": pd.DataFrame(ref_rows),
        "by_participant": pd.DataFrame(part_rows),
        "fits": fits,
        "scales": scales,
    }


def n_fit_units(judgments: pd.DataFrame) -> int:
    main = judgments[(judgments["kind"] == "main") & judgments["response_different"].notna()]
    return sum(
        1 + g["reference"].nunique() + g.groupby(["experiment_id", "worker"]).ngroups for _, g in main.groupby("family")
    )


# ----------------------------------------------------------------------------- plots


def plot_family_curve(
    family: str, fit: PsychometricFit, trials: pd.DataFrame, catch: np.ndarray, scale: PhysicalScale | None, out_png
) -> None:
    """Pooled curve of one family: observed P(different) per level (size ~ n, Wilson
    95% bars), the fit, and the JND with its interval (a bracket for separated data,
    arrows for open ends); the family's physical parameter on a secondary (top) axis.
    Writes ``out_png`` and a PDF beside it."""
    from scipy import stats

    from .figures import draw_threshold, note_below, physical_axis, pyplot, save

    plt = pyplot()
    by = trials.groupby("level")["response_different"].agg(["mean", "size", "sum"])
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    if len(by):
        z = stats.norm.ppf(0.975)
        n, p = by["size"].to_numpy(float), by["mean"].to_numpy(float)
        centre = (p + z * z / (2 * n)) / (1 + z * z / n)
        half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
        # Wilson bounds contain p up to rounding: clip the -1e-17s matplotlib rejects
        yerr = np.maximum([p - (centre - half), centre + half - p], 0.0)
        ax.errorbar(by.index, p, yerr=yerr, fmt="none", ecolor="0.6", lw=1)
        ax.scatter(by.index, p, s=10 + 50 * n / n.max(), color="k", zorder=3, label="observed (size ~ n)")
    if len(catch):
        ax.axhline(np.mean(catch), color="tab:red", ls=":", lw=1.2, label=f"identical pairs (n={len(catch)})")
    x_lo, x_hi = min(0.0, trials["level"].min()), max(100.0, trials["level"].max())
    if fit.estimable:
        grid = np.linspace(x_lo, x_hi, 400)
        ax.plot(grid, fit.predict(grid), color="tab:blue", lw=1.8, label="ML fit")
        draw_threshold(ax, fit, float(trials["level"].min()), float(trials["level"].max()))
        ax.set_title(f"{family}: JND {fit.threshold_text(digits=3)} levels", fontsize=11)
    else:
        ax.set_title(f"{family}: not estimable", fontsize=11)
        note_below(ax, fit.reason, width=80)
    ax.set_xlim(x_lo, x_hi)
    ax.set_ylim(-0.03, 1.03)
    ax.set_xlabel("level (0-100)")
    ax.set_ylabel("P(different)")
    if scale is not None and len(scale.levels) >= 2:
        physical_axis(ax, scale.levels, scale.values, axis_label(scale.key))
        if fit.estimable and np.isfinite(fit.threshold_physical):
            ax.text(
                0.02,
                0.97,
                f"JND = {format_number(fit.threshold_physical)} {unit_label(scale.key)}",
                transform=ax.transAxes,
                va="top",
                fontsize=10,
            )
    ax.legend(loc="lower right", fontsize=9)
    fig.tight_layout()
    save(fig, out_png)


def plot_jnd_distribution(by_participant: pd.DataFrame, out_png) -> None:
    """Per-participant JNDs (levels) per family: points with 95% intervals (estimable
    ones; separated fits drawn at their bracket's middle with the bracket as the bar),
    the count of estimable fits under each family's name. PNG + PDF."""
    from .figures import pyplot, save

    plt = pyplot()
    families = sorted(by_participant["family"].unique()) if len(by_participant) else []
    fig, ax = plt.subplots(figsize=(max(5.0, 1.6 + 1.5 * max(1, len(families))), 4.4))
    labels = []
    for i, family in enumerate(families):
        g = by_participant[(by_participant["family"] == family)]
        est = g[g["estimable"]]
        jitter = np.linspace(-0.25, 0.25, len(est)) if len(est) > 1 else np.zeros(len(est))
        y = est["jnd_level"].to_numpy(float)
        if "separated" in est:
            sep = est["separated"].to_numpy(bool)
            mid = 0.5 * (est["jnd_bracket_low"].to_numpy(float) + est["jnd_bracket_high"].to_numpy(float))
            y = np.where(sep, mid, y)
        lo = est["jnd_level_ci_low"].to_numpy(float)
        hi = est["jnd_level_ci_high"].to_numpy(float)
        lo = np.where(np.isfinite(lo), lo, est["level_min"].to_numpy(float) if "level_min" in est else 0.0)
        hi = np.where(np.isfinite(hi), hi, est["level_max"].to_numpy(float) if "level_max" in est else 100.0)
        lo, hi = np.minimum(lo, y), np.maximum(hi, y)  # tables from older fits may exclude their estimate
        ax.errorbar(i + jitter, y, yerr=np.maximum([y - lo, hi - y], 0.0), fmt="o", ms=4, lw=1, alpha=0.8)
        labels.append(f"{family}\n{len(est)}/{len(g)} estimable")
    ax.set_xticks(range(len(families)), labels)
    ax.set_ylabel("JND (levels)")
    ax.set_ylim(0, 100)
    ax.set_title("JND per participant, 95% intervals", fontsize=11, pad=10)
    fig.tight_layout()
    save(fig, out_png)
