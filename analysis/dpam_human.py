"""JNDs from the public DPAM human judgments (Manocha et al. 2020, CC-BY 4.0).

dataset_linear.txt: the first column is a base stimulus, the second varies along a
line from it. For the noise families the base level lies on a nine-point log grid
and the second level is always >= the base; for mp3 the base is 300 kbps and the
second bitrate is <= 300. reverb_noise names three 0-100 levels per side and no
base grid. dataset_reverb.txt: two 0-100 levels per side (DRR, RT60).

Method (coping with crowd noise):
- x scale: log10(level) for the noises, log10(300 / kbps) for mp3 (so x grows
  with the perturbation), Euclidean distance between level vectors for the
  multi-parameter families (reverb_noise, reverb).
- gamma (false-alarm rate) is estimated from identical-path pairs, by default
  pooled over the family's base levels (about 150-240 pairs per family, versus
  6-47 per base); the profile-likelihood interval leaves gamma free, informed by
  those pairs, so its uncertainty reaches the interval. A joint fit of gamma from
  the curve would let sub-threshold-but-audible pairs at the lowest tested levels
  inflate gamma ("joint" is still offered). lambda is fitted in [0, 0.1].
  Logistic F by default.
- The JND is the level change from the base at which F = 0.5 (P halfway between
  gamma and 1 - lambda); intervals are 95% profile likelihood (see
  ``analysis.psychometric``): they hold the estimate, separated cells come back
  as a bracket between two tested levels, and an end the data cannot close
  inside the tested range is open ("< x" / "> x" in ``jnd_text``).
- eq and combined files (``load_multilevel``) are fitted like reverb: P(different)
  against the Euclidean distance between the two sides' level vectors, pooled and
  per set K, with the false-alarm rate of their identical pairs.
- Groups that are too small, flat, or whose threshold is outside the tested
  range are reported as not estimable with a reason.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from .formatting import describe_threshold, format_number
from .psychometric import PsychometricFit, fit_psychometric
from .triplets import parse_dpam_levels, read_triplets

MP3_BASE_KBPS = 300.0
FIT_DEFAULTS: dict[str, Any] = dict(lapse="fit", lapse_max=0.1, bootstrap="nonparametric")
GUESS_SOURCES = ("family", "base", "joint")


# ----------------------------------------------------------------------------- loading


def _parse_column(df: pd.DataFrame, col: str, path) -> list[dict]:
    parsed = []
    for p, line in zip(df[col], df["line"]):
        info = parse_dpam_levels(p)
        if info is None:
            raise ValueError(f"{path}:{line}: cannot parse DPAM levels from {p!r}")
        parsed.append(info)
    return parsed


def load_linear(path) -> pd.DataFrame:
    """dataset_linear.txt as a tidy table: one row per judgment with family,
    base_level / level (single-level families), levels_a / levels_b (tuples),
    level_distance, identical (same path on both sides), clip and label."""
    df = read_triplets(path)
    a, b = _parse_column(df, "ref", path), _parse_column(df, "perturbed", path)
    df["levels_a"] = [i["levels"] for i in a]
    df["levels_b"] = [i["levels"] for i in b]
    df["base_level"] = [i["level"] if i["level"] is not None else math.nan for i in a]
    df["level"] = [i["level"] if i["level"] is not None else math.nan for i in b]
    df["clip"] = [i["clip"] for i in a]
    df["identical"] = df["ref"] == df["perturbed"]
    df["level_distance"] = [
        float(np.linalg.norm(np.subtract(la, lb))) if len(la) == len(lb) else math.nan
        for la, lb in zip(df["levels_a"], df["levels_b"])
    ]
    return df


def load_reverb(path) -> pd.DataFrame:
    """dataset_reverb.txt as a tidy table with DRR/RT60 levels of both sides."""
    df = read_triplets(path)
    a, b = _parse_column(df, "ref", path), _parse_column(df, "perturbed", path)
    for side, info in (("a", a), ("b", b)):
        if any(i["kind"] != "reverb" for i in info):
            bad = next(line for i, line in zip(info, df["line"]) if i["kind"] != "reverb")
            raise ValueError(f"{path}:{bad}: not a reverb_K/L1_L2_clip.wav_IR.wav name")
        df[f"drr_level_{side}"] = [i["drr_level"] for i in info]
        df[f"rt60_level_{side}"] = [i["rt60_level"] for i in info]
    df["set"] = [i["set"] for i in a]
    df["ir"] = [i["ir"] for i in a]
    df["identical"] = df["ref"] == df["perturbed"]
    df["level_distance"] = np.hypot(df["drr_level_a"] - df["drr_level_b"], df["rt60_level_a"] - df["rt60_level_b"])
    return df


LEVEL_NAMES = {
    "eq": ("gain1_level", "gain2_level", "gain3_level"),
    "combined": ("level1", "level2", "level3", "level4"),
}


def load_multilevel(path, kind: str) -> pd.DataFrame:
    """dataset_eq.txt (``eq_K/G1_G2_G3_clip.wav``, three band gains) or
    dataset_combined.txt (``combined_K/L1_L2_L3_L4_clip.wav``, four perturbation
    levels), levels on DPAM's 0-100 scale, as a tidy table: the levels of both
    sides (``<name>_a``/``<name>_b`` and tuples ``levels_a``/``levels_b``), set,
    clip, identical (same path on both sides) and level_distance (Euclidean distance
    between the level vectors, the x of the fit). Raises ValueError naming the file
    and line for a name that is not of that form.
    """
    if kind not in LEVEL_NAMES:
        raise ValueError(f"kind must be one of {sorted(LEVEL_NAMES)}, got {kind!r}")
    df = read_triplets(path)
    for col, side in (("ref", "a"), ("perturbed", "b")):
        infos = []
        for name, line in zip(df[col], df["line"]):
            info = parse_dpam_levels(name)
            if info is None or info["kind"] != kind:
                n = len(LEVEL_NAMES[kind])
                raise ValueError(
                    f"{path}:{line}: {name!r} is not a {kind}_K/"
                    + "_".join(f"L{i + 1}" for i in range(n))
                    + "_clip.wav name "
                    f"({n} levels on 0-100 before the clip name)"
                )
            infos.append(info)
        df[f"levels_{side}"] = [i["levels"] for i in infos]
        for j, lname in enumerate(LEVEL_NAMES[kind]):
            df[f"{lname}_{side}"] = [i["levels"][j] for i in infos]
        if side == "a":
            df["set"] = [i["set"] for i in infos]
            df["clip"] = [i["clip"] for i in infos]
    df["identical"] = df["ref"] == df["perturbed"]
    df["level_distance"] = [float(np.linalg.norm(np.subtract(a, b))) for a, b in zip(df["levels_a"], df["levels_b"])]
    return df


# ----------------------------------------------------------------------------- false alarms


def false_alarm_table(df: pd.DataFrame, by: str | None, dataset: str) -> pd.DataFrame:
    """False-alarm rate ("different" on identical paths) with Clopper-Pearson 95% CI."""
    ident = df[df["identical"]]
    groups = list(ident.groupby(by, sort=True)) if by else []
    groups.append(("all", ident))
    rows = []
    for key, g in groups:
        n, k = len(g), int(g["label"].sum())
        lo, hi = stats.binomtest(k, n).proportion_ci(0.95, method="exact") if n else (math.nan, math.nan)
        rows.append(
            dict(
                dataset=dataset,
                group=key,
                n_identical=n,
                n_different=k,
                false_alarm_rate=k / n if n else math.nan,
                fa_ci_low=lo,
                fa_ci_high=hi,
            )
        )
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- linear JNDs


def family_scale(family: str):
    """How a DPAM linear family's levels are fitted: ``(to_x, to_level, jnd, description)``.

    ``to_x(level)``: the fitted axis from the second clip's level (arrays of any shape):
    log10(300 kbps / bitrate) for "mp3", log10(level) for the other families;
    ``to_level(x)`` its inverse; ``jnd(base, level)``: the change from the base level
    (base - level for mp3, whose level is a bitrate in kbps; level - base otherwise);
    ``description``: the axis label. Raises nothing (any family but mp3 is a log level).
    """
    if family == "mp3":
        return (
            lambda lev: np.log10(MP3_BASE_KBPS / lev),
            lambda x: MP3_BASE_KBPS / 10.0**x,
            lambda base, lev: base - lev,
            "log10(300 kbps / bitrate)",
        )
    return (np.log10, lambda x: 10.0**x, lambda base, lev: lev - base, "log10(noise level)")


def _fit_row(fit: PsychometricFit, own_catch: np.ndarray, **keys) -> dict:
    return dict(
        **keys,
        estimable=fit.estimable,
        reason=fit.reason,
        n_trials=fit.n_trials,
        n_identical=len(own_catch),
        identical_fa_rate=float(np.mean(own_catch)) if len(own_catch) else math.nan,
        n_catch_for_guess=fit.n_catch,
        guess_rate=fit.guess_rate,
        lapse_rate=fit.lapse_rate,
        slope=fit.slope,
        threshold_x=fit.threshold,
        threshold_x_ci_low=fit.threshold_ci[0],
        threshold_x_ci_high=fit.threshold_ci[1],
        separated=fit.separated,
        threshold_x_bracket_low=fit.threshold_bracket[0],
        threshold_x_bracket_high=fit.threshold_bracket[1],
        lr_pvalue=fit.lr_pvalue,
        boot_outside_range_frac=fit.boot_outside_range_frac,
        notes="; ".join(fit.notes),
    )


def _distance_jnd(fit: PsychometricFit) -> dict:
    """JND columns of a fit whose x is a distance between level vectors."""
    return dict(
        jnd_level=fit.threshold,
        jnd_level_ci_low=fit.threshold_ci[0],
        jnd_level_ci_high=fit.threshold_ci[1],
        jnd_bracket_low=fit.threshold_bracket[0],
        jnd_bracket_high=fit.threshold_bracket[1],
        jnd_text=fit.threshold_text(),
    )


def _guess_args(source: str, own_catch: np.ndarray, family_catch: np.ndarray) -> dict:
    if source == "family":
        return dict(guess="catch", catch=family_catch)
    if source == "base":
        return dict(guess="catch", catch=own_catch)
    return dict(guess="fit", catch=own_catch)


def linear_jnd_table(
    df: pd.DataFrame,
    *,
    n_boot: int,
    rng: np.random.Generator,
    model: str = "logistic",
    guess_source: str = "family",
    progress=None,
) -> tuple[pd.DataFrame, dict]:
    """Fit each (family, base level) of dataset_linear. Returns the table and the
    fits keyed by (family, base) for plotting.

    Columns: family, base_level, x_scale, n_trials, n_identical, identical_fa_rate,
    estimable, reason, threshold_level (second-side level at F = 0.5) with CI,
    jnd_level (change from base, level units; kbps for mp3) with CI,
    jnd_log10_ratio with CI, guess/lapse rates, slope (per x unit).
    """
    if guess_source not in GUESS_SOURCES:
        raise ValueError(f"guess_source must be one of {GUESS_SOURCES}, got {guess_source!r}")
    rows, fits = [], {}
    for family, fam in df.groupby("family", sort=True):
        family_catch = fam.loc[fam["identical"], "label"].to_numpy()
        if fam["base_level"].notna().all():
            units = list(fam.groupby("base_level", sort=True))
        else:  # multi-parameter family (reverb_noise): no base grid, distance in level space
            units = [(math.nan, fam)]
        for base, g in units:
            catch = g.loc[g["identical"], "label"].to_numpy()
            trials = g[~g["identical"]]
            if np.isnan(base):
                fit = fit_psychometric(
                    trials["level_distance"].to_numpy(),
                    trials["label"].to_numpy(),
                    model=model,
                    n_boot=n_boot,
                    rng=rng,
                    **FIT_DEFAULTS,
                    **_guess_args(guess_source, catch, family_catch),
                )
                row = _fit_row(
                    fit, catch, family=family, base_level="all", x_scale="Euclidean distance of level vectors"
                )
                row.update(
                    threshold_level=fit.threshold,
                    threshold_level_ci_low=fit.threshold_ci[0],
                    threshold_level_ci_high=fit.threshold_ci[1],
                    **_distance_jnd(fit),
                    jnd_log10_ratio=math.nan,
                    jnd_log10_ratio_ci_low=math.nan,
                    jnd_log10_ratio_ci_high=math.nan,
                )
            else:
                to_x, to_level, jnd, scale = family_scale(family)
                fit = fit_psychometric(
                    to_x(trials["level"].to_numpy(float)),
                    trials["label"].to_numpy(),
                    model=model,
                    n_boot=n_boot,
                    rng=rng,
                    to_physical=to_level,
                    **FIT_DEFAULTS,
                    **_guess_args(guess_source, catch, family_catch),
                )
                row = _fit_row(fit, catch, family=family, base_level=base, x_scale=scale)
                x0 = float(to_x(np.float64(base)))

                # jnd grows with x for every family (noise: level - base; mp3: 300 kbps - bitrate);
                # an open (infinite) x end stays open with the same sign.
                def jnd_at(xv, base=base, jnd=jnd, to_level=to_level):
                    return xv if not np.isfinite(xv) else float(jnd(base, to_level(xv)))

                lo_lev, hi_lev = fit.threshold_physical_ci  # ordered by map_interval, open ends kept
                blo, bhi = fit.threshold_bracket
                row.update(
                    threshold_level=fit.threshold_physical,
                    threshold_level_ci_low=lo_lev,
                    threshold_level_ci_high=hi_lev,
                    jnd_level=jnd_at(fit.threshold),
                    jnd_level_ci_low=jnd_at(fit.threshold_ci[0]),
                    jnd_level_ci_high=jnd_at(fit.threshold_ci[1]),
                    jnd_bracket_low=jnd_at(blo),
                    jnd_bracket_high=jnd_at(bhi),
                    jnd_log10_ratio=fit.threshold - x0,
                    jnd_log10_ratio_ci_low=fit.threshold_ci[0] - x0,
                    jnd_log10_ratio_ci_high=fit.threshold_ci[1] - x0,
                )
                row["jnd_text"] = describe_threshold(
                    row["jnd_level"],
                    (row["jnd_level_ci_low"], row["jnd_level_ci_high"]),
                    (row["jnd_bracket_low"], row["jnd_bracket_high"]),
                    estimable=fit.estimable,
                    separated=fit.separated,
                )
            rows.append(row)
            fits[(family, base)] = (fit, trials, catch)
            if progress is not None:
                progress.update(1)
    cols_first = [
        "family",
        "base_level",
        "n_trials",
        "n_identical",
        "identical_fa_rate",
        "estimable",
        "reason",
        "jnd_level",
        "jnd_level_ci_low",
        "jnd_level_ci_high",
        "threshold_level",
        "threshold_level_ci_low",
        "threshold_level_ci_high",
        "jnd_log10_ratio",
        "jnd_log10_ratio_ci_low",
        "jnd_log10_ratio_ci_high",
    ]
    table = pd.DataFrame(rows)
    table = table[cols_first + [c for c in table.columns if c not in cols_first]]
    return table, fits


def n_linear_units(df: pd.DataFrame) -> int:
    return sum(g["base_level"].nunique() if g["base_level"].notna().all() else 1 for _, g in df.groupby("family"))


# ----------------------------------------------------------------------------- reverb


def distance_tables(
    df: pd.DataFrame,
    family: str,
    *,
    n_boot: int,
    rng: np.random.Generator,
    model: str = "logistic",
    x_scale: str = "Euclidean distance of level vectors",
):
    """P(different) vs the distance between the two sides' level vectors, for the
    multi-level files (reverb: (DRR, RT60); eq: three band gains; combined: four
    levels): fits pooled and per set K, with the false-alarm rate of the identical
    pairs of the same unit as gamma, plus a binned table of observed proportions.
    Returns (fits table, binned table, fits keyed by "all" / "set K")."""
    rows, fits = [], {}
    for key, g in [("all", df), *[(f"set {s}", gs) for s, gs in df.groupby("set", sort=True)]]:
        trials = g[~g["identical"]]
        catch = g.loc[g["identical"], "label"].to_numpy()
        if len(catch) == 0:
            guess_args = dict(guess="fit", catch=catch)
        else:
            guess_args = _guess_args("base", catch, catch)
        fit = fit_psychometric(
            trials["level_distance"].to_numpy(),
            trials["label"].to_numpy(),
            model=model,
            n_boot=n_boot,
            rng=rng,
            **FIT_DEFAULTS,
            **guess_args,
        )
        row = _fit_row(fit, catch, family=family, base_level=key, x_scale=x_scale)
        row.update(_distance_jnd(fit))
        rows.append(row)
        fits[key] = (fit, trials)
    edges = [0, 1e-9, 5, 10, 20, 30, 40, 50, 60, 80, 100, 150, 250]
    d = df["level_distance"]
    bins = pd.cut(d, edges, right=False).astype(str).where(d > 0, "identical")
    binned = (
        df.groupby(bins, sort=False)
        .agg(n=("label", "size"), p_different=("label", "mean"), mean_distance=("level_distance", "mean"))
        .reset_index(names="distance_bin")
    )
    binned = binned.sort_values("mean_distance").reset_index(drop=True)
    return pd.DataFrame(rows), binned, fits


def reverb_tables(df: pd.DataFrame, *, n_boot: int, rng: np.random.Generator, model: str = "logistic"):
    """``distance_tables`` for dataset_reverb (distance of the (DRR, RT60) level pairs)."""
    return distance_tables(
        df, "reverb", n_boot=n_boot, rng=rng, model=model, x_scale="Euclidean distance of (DRR, RT60) levels"
    )


# ----------------------------------------------------------------------------- plots


def _binned_points(x, y, n_bins=8):
    if len(x) == 0:
        return np.array([]), np.array([]), np.array([])
    edges = np.unique(np.quantile(x, np.linspace(0, 1, n_bins + 1)))
    idx = np.clip(np.searchsorted(edges, x, side="right") - 1, 0, max(len(edges) - 2, 0))
    xs, ps, ns = [], [], []
    for i in np.unique(idx):
        sel = idx == i
        xs.append(x[sel].mean()), ps.append(y[sel].mean()), ns.append(sel.sum())
    return np.array(xs), np.array(ps), np.array(ns)


def _draw_panel(ax, fit: PsychometricFit, x, y, catch, title, xlabel, what: str = "JND"):
    from .figures import draw_threshold, note_below

    x = np.asarray(x, float)
    xs, ps, ns = _binned_points(x, np.asarray(y, float))
    ax.scatter(xs, ps, s=12 + 2 * ns, color="k", alpha=0.6, label="observed (binned)")
    if len(catch):
        ax.axhline(np.mean(catch), color="tab:red", lw=1, ls=":", label="identical pairs")
    x_lo, x_hi = (float(x.min()), float(x.max())) if len(x) else (0.0, 1.0)
    if fit.estimable:
        grid = np.linspace(x_lo, x_hi, 300)
        ax.plot(grid, fit.predict(grid), color="tab:blue", label="fit")
        draw_threshold(ax, fit, x_lo, x_hi)
        title = f"{title}\n{what} {fit.threshold_text(digits=3)}"
    else:
        title = f"{title}: not estimable"
        note_below(ax, fit.reason, width=45)
    ax.set_ylim(-0.03, 1.03)
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(xlabel)


def _figure_legend(fig, ax) -> None:
    """One legend for all panels, under them (never over the data)."""
    handles, labels = ax.get_legend_handles_labels()
    fig.supylabel("P(different)")
    fig.tight_layout(h_pad=2.0, rect=(0, 0.07, 1, 1))
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=9, frameon=False)


def plot_family(family: str, fits: dict, out_png: Path) -> None:
    """One panel per base level of a dataset_linear family (PNG + PDF)."""
    from .figures import pyplot, save

    plt = pyplot()
    keys = sorted(k for k in fits if k[0] == family)
    ncol = min(3, len(keys))
    nrow = math.ceil(len(keys) / ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(4.4 * ncol, 3.9 * nrow), squeeze=False)
    to_x = family_scale(family)[0]
    for ax, key in zip(axes.ravel(), keys):
        fit, trials, catch = fits[key]
        base = key[1]
        if np.isnan(base):
            x, xlabel, title = trials["level_distance"].to_numpy(), "distance of level vectors", f"{family}: pooled"
        else:
            x, xlabel = to_x(trials["level"].to_numpy(float)), family_scale(family)[3]
            title = f"{family}: base {base:g}" + (" kbps" if family == "mp3" else "")
        _draw_panel(
            ax, fit, x, trials["label"].to_numpy(), catch, title, xlabel, what="JND" if np.isnan(base) else "threshold"
        )
        if not np.isnan(base):  # the second side's level on a top axis (kbps for mp3)
            to_level = family_scale(family)[1]
            sec = ax.secondary_xaxis(
                "top",
                functions=(
                    lambda v, f=to_level: f(np.asarray(v, float)),
                    lambda v, f=to_x: f(np.maximum(np.asarray(v, float), 1e-12)),
                ),
            )
            from matplotlib.ticker import FuncFormatter, LogLocator

            sec.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 3.0), numticks=8))
            sec.xaxis.set_minor_locator(LogLocator(base=10, subs=(), numticks=8))
            sec.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: format_number(v, 2)))
            sec.set_xlabel("bitrate (kbps)" if family == "mp3" else "noise level", fontsize=9)
            sec.tick_params(labelsize=8)
    for ax in axes.ravel()[len(keys) :]:
        ax.set_visible(False)
    _figure_legend(fig, axes[0, 0])
    save(fig, out_png)


def plot_distance(family: str, fits: dict, df: pd.DataFrame, out_png: Path) -> None:
    """P(different) vs level-vector distance, pooled and per set (PNG + PDF)."""
    from .figures import pyplot, save

    plt = pyplot()
    n = len(fits)
    ncol = min(3, n)
    nrow = math.ceil(n / ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(4.4 * ncol, 3.9 * nrow), squeeze=False)
    for ax, (key, (fit, trials)) in zip(axes.ravel(), fits.items()):
        sub = df if key == "all" else df[df["set"] == int(key.split()[-1])]
        catch = sub.loc[sub["identical"], "label"].to_numpy()
        _draw_panel(
            ax,
            fit,
            trials["level_distance"].to_numpy(),
            trials["label"].to_numpy(),
            catch,
            f"{family}: {key}",
            "distance of level vectors (0-100 scale)",
        )
    for ax in axes.ravel()[n:]:
        ax.set_visible(False)
    _figure_legend(fig, axes[0, 0])
    save(fig, out_png)


def plot_reverb(fits: dict, df: pd.DataFrame, out_png: Path) -> None:
    plot_distance("reverb", fits, df, out_png)


# ----------------------------------------------------------------------------- driver


def run_dpam_jnd(
    linear_path,
    reverb_path,
    out_dir,
    *,
    eq_path=None,
    combined_path=None,
    n_boot: int = 1000,
    seed: int = 0,
    model: str = "logistic",
    guess_source: str = "family",
    plots: bool = True,
    show_progress: bool = True,
) -> dict[str, pd.DataFrame]:
    """Analyse the public DPAM files given (any of linear, reverb, eq, combined);
    write CSV tables and PNG + PDF plots into ``out_dir``. Returns the tables:
    linear_jnd, <kind>_fits and <kind>_bins for reverb/eq/combined, false_alarms."""
    from tqdm import tqdm

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    results: dict[str, pd.DataFrame] = {}
    fa_parts = []
    if linear_path is not None:
        lin = load_linear(linear_path)
        with tqdm(total=n_linear_units(lin), desc="dpam linear fits", disable=not show_progress) as bar:
            table, fits = linear_jnd_table(
                lin, n_boot=n_boot, rng=rng, model=model, guess_source=guess_source, progress=bar
            )
        results["linear_jnd"] = table
        fa_parts.append(false_alarm_table(lin, "family", "linear"))
        table.to_csv(out / "dpam_linear_jnd.csv", index=False)
        if plots:
            for family in sorted(lin["family"].unique()):
                plot_family(family, fits, out / f"dpam_{family}.png")
    for kind, path in (("reverb", reverb_path), ("eq", eq_path), ("combined", combined_path)):
        if path is None:
            continue
        data = load_reverb(path) if kind == "reverb" else load_multilevel(path, kind)
        ftable, binned, dfits = distance_tables(
            data, kind, n_boot=n_boot, rng=rng, model=model, x_scale=DISTANCE_SCALES[kind]
        )
        results[f"{kind}_fits"], results[f"{kind}_bins"] = ftable, binned
        fa_parts.append(false_alarm_table(data, "set", kind))
        ftable.to_csv(out / f"dpam_{kind}_fits.csv", index=False)
        binned.to_csv(out / f"dpam_{kind}_bins.csv", index=False)
        if plots:
            plot_distance(kind, dfits, data, out / f"dpam_{kind}.png")
    if fa_parts:
        results["false_alarms"] = pd.concat(fa_parts, ignore_index=True)
        results["false_alarms"].to_csv(out / "dpam_false_alarms.csv", index=False)
    return results


DISTANCE_SCALES = {
    "reverb": "Euclidean distance of (DRR, RT60) levels",
    "eq": "Euclidean distance of the three band-gain levels",
    "combined": "Euclidean distance of the four perturbation levels",
}


def format_distance_table(table: pd.DataFrame) -> str:
    """Plain-text summary of a distance fit table (reverb / eq / combined)."""
    lines = [f"{'unit':<8}{'n':>6}{'n ident':>9}{'FA rate':>9}  JND (level-vector distance), 95% CI"]
    for r in table.itertuples():
        fa = f"{r.identical_fa_rate:.3f}" if np.isfinite(r.identical_fa_rate) else "-"
        text = r.jnd_text if r.estimable or isinstance(r.jnd_text, str) else "-"
        if not r.estimable:
            text = f"{text}: {r.reason}"
        lines.append(f"{r.base_level:<8}{r.n_trials:>6}{r.n_identical:>9}{fa:>9}  {text}")
    return "\n".join(lines)


def format_jnd_table(table: pd.DataFrame) -> str:
    """Plain-text summary: family, base, JND with its interval in level units (kbps
    for mp3; open ends as "< x" / "> x", separated data as a bracket), n, rates."""
    lines = [
        (
            f"{'family':<13}{'base':>8}  {'JND (level units), 95% CI':<40}{'n':>6}{'FA base':>8}{'gamma':>7}"
            f"{'lapse':>7}  note"
        )
    ]
    for r in table.itertuples():
        base = r.base_level if isinstance(r.base_level, str) else f"{r.base_level:g}"
        jnd = r.jnd_text if isinstance(getattr(r, "jnd_text", None), str) and r.jnd_text else "-"
        fa = f"{r.identical_fa_rate:.3f}" if np.isfinite(r.identical_fa_rate) else "-"
        g = f"{r.guess_rate:.3f}" if np.isfinite(r.guess_rate) else "-"
        lam = f"{r.lapse_rate:.3f}" if np.isfinite(r.lapse_rate) else "-"
        lines.append(
            f"{r.family:<13}{base:>8}  {jnd:<40}{r.n_trials:>6}{fa:>8}{g:>7}{lam:>7}  {'' if r.estimable else r.reason}"
        )
    return "\n".join(lines)
