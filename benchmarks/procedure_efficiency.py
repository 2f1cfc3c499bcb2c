"""Procedure efficiency study (issue 4): how many judgments does each adaptive
procedure need for a given JND precision?

Each procedure walks a 21-rung ladder (0, 5, ..., 100) against a seeded population
of simulated observers (listening_test/procedures/observer.py) with known logistic
psychometric functions: threshold ~ U[15, 85], slope ~ log-U[0.08, 0.5] per level
(10-90 % width 9-55 levels), false-alarm rate γ ~ U[0, 0.15], lapse λ ~ U[0, 0.05].

Two runs per procedure:

* curve: stop rules off, every track runs ``--cap`` trials; the estimate after
  each trial t gives RMS error and bias versus t, and "judgments to precision P" is
  the first t after which the RMS stays <= P. A staircase with no reversal yet
  has no estimate; its current level stands in.
* deployed: the procedures' own stop rules, capped at ``--cap`` trials;
  completion rate = the fraction of tracks that met their stop criterion
  (reversals / posterior SD / finished passes) before the cap.

Errors are measured against the jndlab JND (the level where F = 0.5) and,
separately, against each procedure's own convergence point: P(different) =
0.5^(1/n) for an n-down/1-up staircase, P = 0.5 for binary search, F = 0.5 for
the Bayesian method. That point is observer-specific (it depends on slope, γ, λ)
and clipped to the ladder; no procedure's estimate is corrected.

    python benchmarks/procedure_efficiency.py [--out benchmarks/results] [--quick]
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from listening_test.procedures import make_procedure  # noqa: E402
from listening_test.procedures.observer import SimulatedObserver  # noqa: E402
from listening_test.procedures.staircase import target_p_different  # noqa: E402

# name -> (procedure, config for the curve run, config for the deployed run, own target P(different) or None for F=0.5)
PROCEDURES = {
    "staircase 2d1u": ("staircase", {"n_down": 2, "max_reversals": None}, {"n_down": 2}, target_p_different(2)),
    "staircase 3d1u": ("staircase", {"n_down": 3, "max_reversals": None}, {"n_down": 3}, target_p_different(3)),
    "bayesian (psi)": ("bayesian", {"target_sd": None}, {}, None),
    "binary search": ("binary_search", {"passes": 10_000}, {"passes": 1}, 0.5),
}
PRECISIONS = (5.0, 10.0)


# Slope ranges: logistic per level unit; Weibull shape β (β 1.5-6 at thresholds 15-85 spans
# roughly the same 10-90 % widths, with the skew a logistic model does not have).
SLOPE_RANGES = {"logistic": (0.08, 0.5), "weibull": (1.5, 6.0)}


def population(n: int, rng: np.random.Generator, function: str = "logistic") -> list[SimulatedObserver]:
    s_lo, s_hi = SLOPE_RANGES[function]
    return [
        SimulatedObserver(
            threshold=float(rng.uniform(15, 85)),
            slope=float(np.exp(rng.uniform(np.log(s_lo), np.log(s_hi)))),
            false_alarm=float(rng.uniform(0, 0.15)),
            lapse=float(rng.uniform(0, 0.05)),
            function=function,
        )
        for _ in range(n)
    ]


def own_target(obs: SimulatedObserver, p: float | None, lo: float, hi: float) -> float:
    level = obs.threshold if p is None else obs.level_at(p)
    return float(np.clip(level, lo, hi))


def run_track(proc, obs: SimulatedObserver, rng: np.random.Generator, cap: int) -> tuple[list[float], int]:
    """Walk one track; returns the estimate after each trial (NaN-free) and the trials used."""
    estimates: list[float] = []
    last = proc.levels[len(proc.levels) // 2]
    while not proc.finished and len(estimates) < cap:
        level = proc.next_level()
        proc.update(level, obs.respond(level, rng))
        est = proc.estimate()
        nxt = proc.next_level()
        last = level if nxt is None else nxt
        estimates.append(float(est) if est is not None else float(last))
    return estimates, len(estimates)


def first_stays_below(rms: np.ndarray, target: float) -> int | None:
    """Smallest t (1-based) with rms[t-1:] all <= target."""
    above = np.nonzero(rms > target)[0]
    if len(above) == 0:
        return 1
    t = int(above[-1]) + 2
    return t if t <= len(rms) else None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    ap.add_argument("--observers", type=int, default=400)
    ap.add_argument("--cap", type=int, default=80, help="trial cap per track")
    ap.add_argument("--rungs", type=int, default=21, help="ladder rungs over 0..100")
    ap.add_argument("--seed", type=int, default=20260421)
    ap.add_argument(
        "--function", choices=sorted(SLOPE_RANGES), default="logistic",
        help="observers' psychometric function; 'weibull' tests the Bayesian method's logistic model under mismatch",
    )  # fmt: skip
    ap.add_argument("--quick", action="store_true", help="100 observers: a smoke run")
    args = ap.parse_args(argv)
    if args.quick:
        args.observers = 100
    levels = list(np.linspace(0, 100, args.rungs))
    lo, hi = levels[0], levels[-1]
    t0 = time.perf_counter()
    observers = population(args.observers, np.random.default_rng(args.seed), args.function)
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover
        tqdm = lambda it, **kw: it  # noqa: E731

    curves, deployed = {}, {}
    for name, (proc_name, curve_cfg, deploy_cfg, p_target) in tqdm(PROCEDURES.items(), desc="procedures"):
        jnd = np.array([o.threshold for o in observers])
        own = np.array([own_target(o, p_target, lo, hi) for o in observers])
        # Independent, reproducible answer streams per (procedure, observer, run).
        est = np.empty((len(observers), args.cap))
        for i, obs in enumerate(observers):
            proc = make_procedure(proc_name, levels, **curve_cfg, max_trials=args.cap)
            e, _ = run_track(proc, obs, np.random.default_rng([args.seed, i, 0]), args.cap)
            est[i] = e
        err = est - jnd[:, None]
        err_own = est - own[:, None]
        curves[name] = {
            "rms": np.sqrt((err**2).mean(0)),
            "bias": err.mean(0),
            "rms_own": np.sqrt((err_own**2).mean(0)),
            "bias_own": err_own.mean(0),
        }
        final, used, done = [], [], []
        for i, obs in enumerate(observers):
            proc = make_procedure(proc_name, levels, **{"max_trials": args.cap, **deploy_cfg})
            e, n = run_track(proc, obs, np.random.default_rng([args.seed, i, 1]), args.cap)
            final.append(e[-1])
            used.append(n)
            done.append(proc.stop_reason not in (None, "max_trials"))
        final = np.array(final)
        deployed[name] = {
            "config": deploy_cfg,
            "completion": float(np.mean(done)),
            "mean_trials": float(np.mean(used)),
            "rms": float(np.sqrt(np.mean((final - jnd) ** 2))),
            "bias": float(np.mean(final - jnd)),
            "rms_own": float(np.sqrt(np.mean((final - own) ** 2))),
        }

    args.out.mkdir(parents=True, exist_ok=True)
    lines = [
        f"# Procedure efficiency: {args.observers} simulated {args.function} observers, {args.rungs}-rung ladder 0..100, cap {args.cap} trials, seed {args.seed}",
        "",
        "Judgments until the RMS error stays at or below P (vs JND = F 0.5 level | vs the procedure's own convergence point); RMS and bias at t trials (vs JND).",
        "",
        "| procedure | t(RMS≤5) JND | t(RMS≤10) JND | t(RMS≤5) own | t(RMS≤10) own | RMS@20 | bias@20 | RMS@40 | bias@40 | RMS@80 | bias@80 |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    summary: dict = {"function": args.function, "observers": args.observers, "cap": args.cap, "rungs": args.rungs, "seed": args.seed, "procedures": {}}
    fmt_t = lambda t: "never" if t is None else str(t)  # noqa: E731
    for name, c in curves.items():
        ts = {f"{k}_{p:g}": first_stays_below(c[k], p) for k in ("rms", "rms_own") for p in PRECISIONS}
        at = lambda arr, t: arr[min(t, args.cap) - 1]  # noqa: E731
        lines.append(
            f"| {name} | {fmt_t(ts['rms_5'])} | {fmt_t(ts['rms_10'])} | {fmt_t(ts['rms_own_5'])} | {fmt_t(ts['rms_own_10'])} | "
            + " | ".join(f"{at(c['rms'], t):.1f} | {at(c['bias'], t):+.1f}" for t in (20, 40, args.cap))
            + " |"
        )
        summary["procedures"][name] = {
            "trials_to_precision": ts,
            "rms_curve": [round(float(v), 3) for v in c["rms"]],
            "bias_curve": [round(float(v), 3) for v in c["bias"]],
            "rms_own_curve": [round(float(v), 3) for v in c["rms_own"]],
            "deployed": deployed[name],
        }
    lines += [
        "",
        "Deployed stop rules (capped at the trial cap): completion = met its own stop criterion before the cap.",
        "",
        "| procedure | stop config | completion | mean trials | RMS at stop (JND) | bias | RMS at stop (own point) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, d in deployed.items():
        lines.append(
            f"| {name} | {json.dumps(d['config']) if d['config'] else 'defaults'} | {d['completion']:.0%} | {d['mean_trials']:.1f} | "
            f"{d['rms']:.1f} | {d['bias']:+.1f} | {d['rms_own']:.1f} |"
        )
    # The goal: Bayesian needs at most half the judgments of 2-down/1-up for the same precision.
    lines += ["", "Goal (Bayesian ≤ ½ × 2-down/1-up judgments for the same precision):"]
    for key, label in (("rms", "vs JND"), ("rms_own", "vs each procedure's own point")):
        for p in PRECISIONS:
            tb = summary["procedures"]["bayesian (psi)"]["trials_to_precision"][f"{key}_{p:g}"]
            ts_ = summary["procedures"]["staircase 2d1u"]["trials_to_precision"][f"{key}_{p:g}"]
            if tb is None:
                verdict = "not met (Bayesian never reaches it)"
            elif ts_ is None:
                # The staircase needs more than the cap: the goal is only decided if tb <= cap / 2.
                verdict = (
                    f"met (Bayesian {tb}; the staircase needs more than the {args.cap}-trial cap)"
                    if tb <= args.cap / 2
                    else f"undecided (Bayesian {tb}; the staircase needs more than {args.cap}: raise --cap)"
                )
            else:
                verdict = f"{'met' if tb <= ts_ / 2 else 'not met'} (Bayesian {tb} vs staircase {ts_}, ratio {tb / ts_:.2f})"
            lines.append(f"- RMS ≤ {p:g} {label}: {verdict}")
    elapsed = time.perf_counter() - t0
    lines += ["", f"Runtime {elapsed:.0f} s."]
    table = "\n".join(lines)
    stem = args.out / ("procedure_efficiency" + ("" if args.function == "logistic" else f"_{args.function}"))
    stem.with_suffix(".md").write_text(table + "\n")
    stem.with_suffix(".json").write_text(json.dumps(summary, indent=1) + "\n")
    _plot(curves, args, stem.with_suffix(".png"))
    print(table)
    print(f"wrote {stem}.md, .json, .png")
    return 0


def _plot(curves: dict, args, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = np.arange(1, args.cap + 1)
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5), constrained_layout=True)
    for name, c in curves.items():
        (line,) = axes[0].plot(t, c["rms"], label=name)
        axes[1].plot(t, c["rms_own"], color=line.get_color(), label=name)
        axes[2].plot(t, c["bias"], color=line.get_color(), label=name)
    for ax, title in zip(axes, ("RMS error vs JND (F = 0.5)", "RMS error vs own convergence point", "bias vs JND")):
        ax.set_title(title)
        ax.set_xlabel("judgments (trials)")
        ax.grid(alpha=0.3)
    for ax in axes[:2]:
        ax.set_ylabel("level units")
        ax.set_ylim(0, 30)
        for p in PRECISIONS:
            ax.axhline(p, color="grey", lw=0.8, ls="--")
    axes[2].axhline(0, color="grey", lw=0.8)
    axes[2].set_ylim(-15, 30)
    axes[2].set_ylabel("mean error (level units)")
    axes[0].legend()
    fig.suptitle(f"{args.observers} simulated {args.function} observers, {args.rungs}-rung ladder, seed {args.seed}")
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
