"""jndlab's psychometric fit against psignifit 4, side by side.

What it measures, for the 95 % threshold interval of each method:
- coverage: the fraction of simulated datasets whose interval holds the true threshold,
- median width (open ends, which jndlab reports when the data cannot close an end
  within the tested range, are clipped to the level scale 0..100 so widths compare),
- bias: median of (estimate - truth) over datasets with a point estimate,
- time per fit (wall clock, one process).

Datasets:
- simulated observers with known thresholds (logistic, threshold uniform in
  [35, 75] levels, scale 8 levels, false-alarm rate 0.05 known to both methods,
  lapse 0.02 fitted by both) at 20..400 trials per fit, with two placements:
  ``constant`` (7 levels evenly over 10..100) and ``adaptive`` (a 1-up/1-down
  staircase from level 90 whose step halves 16 -> 8 -> 4 at reversals, the
  placement the listening test's staircases produce);
- the real DPAM linear cells (``/work/shared/dpam/dataset_linear.txt`` or
  ``--dpam FILE``): each (family, base level) cell's real design (its levels and
  trial counts) with the jndlab fit of that cell as the known truth (a parametric
  simulation on the real design), plus the two methods' intervals on the real
  answers themselves (agreement, no truth).

psignifit 4 (PyPI ``psignifit``) runs with its defaults (Bayesian posterior on a
grid, its priors, beta-binomial overdispersion) except: logistic sigmoid, yes/no
design, gamma fixed at the same value jndlab uses, threshold at 50 % of the
unscaled sigmoid (its ``thresh_PC`` default, the same definition as jndlab's).

Usage: python benchmarks/psychometric_vs_psignifit.py [--quick] [--reps N] [--jobs K]
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
import warnings
from concurrent.futures import ProcessPoolExecutor, TimeoutError
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analysis.psychometric import fit_psychometric

GUESS, LAPSE, SCALE = 0.05, 0.02, 8.0
LEVELS = np.linspace(10.0, 100.0, 7)
LEVEL_RANGE = (0.0, 100.0)
DEFAULT_DPAM = Path(__file__).resolve().parents[2] / "shared" / "dpam" / "dataset_linear.txt"


def p_true(x, thr, scale=SCALE, guess=GUESS, lapse=LAPSE):
    return guess + (1.0 - guess - lapse) / (1.0 + np.exp(-(np.asarray(x, float) - thr) / scale))


def constant_design(n_trials: int) -> np.ndarray:
    return np.sort(np.resize(LEVELS, n_trials))


def staircase(rng, n_trials: int, thr: float) -> tuple[np.ndarray, np.ndarray]:
    """1-up/1-down on 0..100: down after "different", up after "same"; the step
    halves at each of the first reversals (16, 8, then 4 levels)."""
    level, step, last, xs, ys = 90.0, 16.0, None, [], []
    for _ in range(n_trials):
        y = int(rng.random() < p_true(level, thr))
        xs.append(level)
        ys.append(y)
        direction = -1 if y else 1
        if last is not None and direction != last and step > 4.0:
            step /= 2.0
        last = direction
        level = float(np.clip(level + direction * step, 0.0, 100.0))
    return np.array(xs), np.array(ys)


def jndlab_fit(x, y, guess):
    t = time.perf_counter()
    fit = fit_psychometric(x, y, guess=guess, lapse="fit", min_trials=1, min_levels=2)
    dt = time.perf_counter() - t
    lo, hi = fit.threshold_ci
    if math.isnan(lo) and math.isnan(hi):  # all same / all different / too few levels: the bracket
        lo, hi = fit.threshold_bracket
    if math.isnan(lo) and math.isnan(hi):
        lo, hi = -math.inf, math.inf  # nothing at all: the honest interval is everything
    est = fit.threshold if fit.estimable else math.nan
    if fit.separated:
        est = 0.5 * sum(fit.threshold_bracket)
    return est, lo, hi, dt, fit.separated


def psignifit_fit(x, y, guess):
    import psignifit

    levels, inv = np.unique(x, return_inverse=True)
    n = np.bincount(inv, minlength=levels.size)
    k = np.bincount(inv, weights=y, minlength=levels.size)
    data = np.column_stack([levels, k, n]).astype(float)
    t = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            res = psignifit.psignifit(
                data,
                sigmoid="logistic",
                experiment_type="yes/no",
                fixed_parameters={"gamma": float(guess)},
                verbose=False,
            )
            est = float(res.parameter_estimate["threshold"])
            lo, hi = (float(v) for v in res.confidence_intervals["threshold"]["0.95"])
        except Exception as exc:  # noqa: BLE001  psignifit refuses some designs: count it, do not hide it
            est, lo, hi = math.nan, -math.inf, math.inf
            print(f"psignifit failed on a dataset: {exc}", file=sys.stderr)
    return est, lo, hi, time.perf_counter() - t, False


def _one_sim(args):
    placement, n_trials, seed, with_psignifit = args
    rng = np.random.default_rng(seed)
    thr = float(rng.uniform(35.0, 75.0))
    if placement == "constant":
        x = constant_design(n_trials)
        y = (rng.random(x.size) < p_true(x, thr)).astype(int)
    else:
        x, y = staircase(rng, n_trials, thr)
    rows = []
    methods = (("jndlab", jndlab_fit), ("psignifit", psignifit_fit)) if with_psignifit else (("jndlab", jndlab_fit),)
    for name, fn in methods:
        est, lo, hi, dt, sep = fn(x, y, GUESS)
        rows.append(
            dict(
                dataset=f"sim {placement}",
                n_trials=n_trials,
                method=name,
                truth=thr,
                estimate=est,
                ci_low=lo,
                ci_high=hi,
                seconds=dt,
                separated=sep,
            )
        )
    return rows


def _one_dpam(args):
    label, x, _n_trials, truth, guess, seed = args
    rng = np.random.default_rng(seed)
    thr, slope, lapse = truth
    p = guess + (1.0 - guess - lapse) / (1.0 + np.exp(-slope * (x - thr)))
    y = (rng.random(x.size) < p).astype(int)
    rows = []
    for name, fn in (("jndlab", jndlab_fit), ("psignifit", psignifit_fit)):
        est, lo, hi, dt, sep = fn(x, y, guess)
        rows.append(
            dict(
                dataset="dpam design",
                n_trials="real design",
                cell=label,
                method=name,
                truth=thr,
                estimate=est,
                ci_low=lo,
                ci_high=hi,
                seconds=dt,
                separated=sep,
            )
        )
    return rows


def dpam_cells(path: Path, max_cells: int | None):
    """(label, x, y, guess) per (family, base) cell of dataset_linear on the fit's x scale."""
    from analysis.dpam_human import family_scale, load_linear

    df = load_linear(path)
    cells = []
    for family, fam in df.groupby("family", sort=True):
        if not fam["base_level"].notna().all():
            continue
        guess = float(fam.loc[fam["identical"], "label"].mean())
        to_x = family_scale(family)[0]
        for base, g in fam.groupby("base_level", sort=True):
            trials = g[~g["identical"]]
            if len(trials) < 20:
                continue
            cells.append(
                (f"{family} {base:g}", to_x(trials["level"].to_numpy(float)), trials["label"].to_numpy(int), guess)
            )
    return cells[:max_cells] if max_cells else cells


def summarise(df: pd.DataFrame) -> pd.DataFrame:
    def width(g):
        lo = g["ci_low"].clip(lower=LEVEL_RANGE[0]) if g["dataset"].iloc[0].startswith("sim") else g["ci_low"]
        hi = g["ci_high"].clip(upper=LEVEL_RANGE[1]) if g["dataset"].iloc[0].startswith("sim") else g["ci_high"]
        return (hi - lo).replace([np.inf, -np.inf], np.nan)

    rows = []
    for (dataset, n, method), g in df.groupby(["dataset", "n_trials", "method"], sort=True):
        inside = (g["ci_low"] <= g["truth"]) & (g["truth"] <= g["ci_high"])
        err = (g["estimate"] - g["truth"]).dropna()
        rows.append(
            dict(
                dataset=dataset,
                n_trials=n,
                method=method,
                fits=len(g),
                coverage=inside.mean(),
                median_width=float(width(g).median()),
                open_frac=float((~np.isfinite(g["ci_low"]) | ~np.isfinite(g["ci_high"])).mean()),
                median_bias=float(err.median()) if len(err) else math.nan,
                ms_per_fit=1000.0 * g["seconds"].mean(),
            )
        )
    return pd.DataFrame(rows)


def side_by_side(summary: pd.DataFrame) -> pd.DataFrame:
    wide = summary.pivot_table(
        index=["dataset", "n_trials"],
        columns="method",
        values=["fits", "coverage", "median_width", "open_frac", "median_bias", "ms_per_fit"],
    )
    wide.columns = [f"{m}_{v}" for v, m in wide.columns]
    order = [
        f"{m}_{v}"
        for v in ("coverage", "median_width", "median_bias", "ms_per_fit", "open_frac", "fits")
        for m in ("jndlab", "psignifit")
    ]
    return wide[[c for c in order if c in wide.columns]].reset_index()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: 2 trial counts, 2 datasets each, 2 DPAM cells")
    ap.add_argument(
        "--reps", type=int, default=100, help="simulated datasets per (placement, trial count) fitted by both methods"
    )
    ap.add_argument(
        "--jndlab-reps",
        type=int,
        default=0,
        help="datasets per cell fitted by jndlab (>= --reps; the extra ones jndlab only: it is ~30x faster)",
    )
    ap.add_argument(
        "--max-seconds",
        type=float,
        default=float("inf"),
        help="stop waiting after this long and summarise the fits that finished",
    )
    ap.add_argument("--trials", default="20,40,100,200,400", help="trial counts per fit")
    ap.add_argument("--dpam", type=Path, default=DEFAULT_DPAM, help="DPAM dataset_linear.txt ('none' to skip)")
    ap.add_argument("--dpam-reps", type=int, default=10, help="simulated datasets per DPAM cell design")
    ap.add_argument("--max-cells", type=int, default=None, help="use only the first N DPAM cells")
    ap.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None, help="write the per-fit rows and the table as CSV here")
    args = ap.parse_args(argv)
    trials = [int(t) for t in args.trials.split(",")]
    reps, dpam_reps, max_cells = args.reps, args.dpam_reps, args.max_cells
    if args.quick:
        trials, reps, dpam_reps, max_cells = [40], 1, 0, 1
        args.jndlab_reps = 3

    jndlab_reps = max(args.jndlab_reps, reps)
    cells = [(pl, n) for pl in ("constant", "adaptive") for n in trials]
    seeds = np.random.SeedSequence(args.seed).spawn(len(cells) * jndlab_reps)
    # round-robin over cells, psignifit datasets first: a run cut short by --max-seconds stays balanced
    sim_jobs = [
        (pl, n, int(seeds[r * len(cells) + c].generate_state(1)[0]), r < reps)
        for r in range(jndlab_reps)
        for c, (pl, n) in enumerate(cells)
    ]
    sim_jobs.sort(key=lambda j: not j[3])
    rows: list[dict] = []
    real_rows: list[dict] = []
    t_start = time.perf_counter()
    stopped = 0
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        futures = [pool.submit(_one_sim, j) for j in sim_jobs]
        if str(args.dpam) != "none" and args.dpam.is_file():
            cells_dpam = dpam_cells(args.dpam, max_cells)
            dpam_jobs = []
            for i, (label, x, y, guess) in enumerate(cells_dpam):
                for name, fn in (("jndlab", jndlab_fit), ("psignifit", psignifit_fit)):
                    est, lo, hi, dt, sep = fn(x, y, guess)
                    real_rows.append(
                        dict(
                            cell=label,
                            n_trials=len(x),
                            method=name,
                            estimate=est,
                            ci_low=lo,
                            ci_high=hi,
                            seconds=dt,
                            separated=sep,
                        )
                    )
                fit = fit_psychometric(x, y, guess=guess, lapse="fit", min_trials=1)
                if fit.estimable and not fit.separated:
                    truth = (fit.threshold, fit.slope, fit.lapse_rate)
                    dpam_jobs += [
                        (label, x, len(x), truth, guess, args.seed * 7919 + 1000 * i + r) for r in range(dpam_reps)
                    ]
            futures += [pool.submit(_one_dpam, j) for j in dpam_jobs]
        elif str(args.dpam) != "none":
            print(f"DPAM file {args.dpam} not found: DPAM rows skipped", file=sys.stderr)
        for f in futures:
            remaining = args.max_seconds - (time.perf_counter() - t_start)
            try:
                rows.extend(f.result(timeout=None if math.isinf(remaining) else max(remaining, 0.01)))
            except TimeoutError:
                stopped = sum(not g.done() for g in futures)
                for g in futures:
                    g.cancel()
                break
    if stopped:
        print(
            f"--max-seconds {args.max_seconds:g} reached: {stopped} datasets not fitted; the table holds "
            "what finished (see the fits columns)",
            file=sys.stderr,
        )
    df = pd.DataFrame(rows)
    df["n_trials"] = df["n_trials"].astype(str).str.zfill(4).str.replace(r"^0+(?=\d)", "", regex=True)
    table = side_by_side(summarise(df))
    pd.set_option("display.width", 200)
    print("95% threshold intervals, jndlab (penalised profile likelihood) vs psignifit 4 (Bayesian posterior)")
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3g}"))
    if real_rows:
        real = pd.DataFrame(real_rows)
        wide = real.pivot_table(index=["cell", "n_trials"], columns="method", values=["estimate", "ci_low", "ci_high"])
        wide.columns = [f"{m}_{v}" for v, m in wide.columns]
        print("\nreal DPAM answers (x = log10 level, or log10(300/kbps) for mp3):")
        print(wide.reset_index().to_string(index=False, float_format=lambda v: f"{v:.3g}"))
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        df.to_csv(args.out / "fits.csv", index=False)
        table.to_csv(args.out / "summary.csv", index=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
