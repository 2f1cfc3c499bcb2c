"""Progress bar's last move (issue 17): how far the participant's bar jumps to "done".

The page moves the main-part bar one step of the server's current estimate per answer
(listening_test/static/participant.js: what is left of the bar over the trials expected
to be left), so its last move, from the last main trial to done, is ``max(1, L)`` steps
where L is the trials-left figure shown with that last trial. This runs offline
simulated sessions (``listening_test.estimates.simulate_session_progress``: the server's
own catch/track/cap decisions, the real procedures, simulated observers) and reports,
per procedure configuration, that last move with the figure the server stores now
(``session_remaining``: the simulated expectation clamped into the procedure's proven
bounds, exact near the end) against the figure before (``expected_remaining``: the
simulated expectation alone), with how honest the figure is along the way: its mean
relative error against the trials really left, and how often it said "this may be the
last" (<= 1) while more followed.

Configurations: the demo (Psi, max_trials 25, 1 reference x 2 families, catch rate 0.1),
the default Psi method (2 references x 2 families, catch rate 0.1), the default
staircase, the default binary search; ladders of 11 rungs over 0..100 (the demo set's).

    python benchmarks/progress_jump.py [--sessions 200] [--seed 17] [--out FILE.json] [--quick]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from listening_test.cli.demo import DEMO_CONFIG, DEMO_PROCEDURE, DEMO_PROCEDURE_CONFIG
from listening_test.estimates import final_jump_steps, simulate_session_progress, study_estimate
from listening_test.flow_config import FlowConfig

LEVELS = [float(v) for v in np.linspace(0.0, 100.0, 11)]
CASES = {
    "demo bayesian": (DEMO_PROCEDURE, DEMO_PROCEDURE_CONFIG, DEMO_CONFIG, 1, 2),
    "default bayesian": ("bayesian", {}, {}, 2, 2),
    "staircase": ("staircase", {}, {}, 2, 2),
    "binary_search": ("binary_search", {}, {}, 2, 2),
}


def measure(name: str, n_sessions: int, seed: int) -> dict:
    procedure, config, flow_dict, n_refs, n_fams = CASES[name]
    flow = FlowConfig.from_dict(dict(flow_dict))
    ladders = {(f"r{r}", f"f{f}"): LEVELS for r in range(n_refs) for f in range(n_fams)}
    estimate = study_estimate(procedure, config, flow, ladders, "same_different", clip_seconds=2.0, seed=seed)
    n_tracks = estimate["tracks"]
    out = {"procedure": procedure, "tracks": n_tracks, "sessions": n_sessions}
    for knows in (False, True):
        t0 = time.process_time()
        sessions = simulate_session_progress(
            estimate, procedure, config, flow, [LEVELS] * n_tracks, n_sessions, seed=seed, knows_schedule=knows
        )
        cpu = time.process_time() - t0
        for key in ("shown",) if knows else ("unbounded", "shown"):
            jumps = [j for j in (final_jump_steps(s[key]) for s in sessions) if j is not None]
            figures = [(v, a) for s in sessions for v, a in zip(s[key], s["actual"]) if v is not None]
            label = {"unbounded": "before", "shown": "after_with_schedule" if knows else "after"}[key]
            out[label] = {
                "final_jump_median": round(statistics.median(jumps), 2),
                "final_jump_p90": round(float(np.quantile(jumps, 0.9)), 2),
                "final_jump_max": round(max(jumps), 2),
                "mean_relative_error": round(float(np.mean([abs(v - a) / a for v, a in figures])), 3),
                "said_last_but_more_followed": sum(1 for v, a in figures if v <= 1.0 and a > 1),
                "figures": len(figures),
            }
        if not knows:
            out["main_trials_mean"] = round(float(np.mean([len(s["actual"]) for s in sessions])), 1)
            out["cpu_s"] = round(cpu, 1)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sessions", type=int, default=200, help="simulated sessions per configuration")
    ap.add_argument("--seed", type=int, default=17)
    ap.add_argument("--cases", nargs="*", default=list(CASES), choices=list(CASES))
    ap.add_argument("--out", type=Path, default=None, help="also write the numbers to this JSON file")
    ap.add_argument("--quick", action="store_true", help="smoke run: 8 sessions per configuration")
    args = ap.parse_args()
    n = 8 if args.quick else args.sessions
    results = {}
    print(f"progress bar's last move, in steps of the shown estimate, over {n} simulated sessions each")
    print(
        f"{'configuration':<18} {'tracks':>6} {'trials':>7}  {'before med/p90/max':>20}  "
        f"{'after med/p90/max':>19}  {'rel.err before->after':>22}  {'said last, more came':>20}"
    )
    for name in args.cases:
        r = measure(name, n, args.seed)
        results[name] = r
        b, a = r["before"], r["after"]
        print(
            f"{name:<18} {r['tracks']:>6} {r['main_trials_mean']:>7}  "
            f"{b['final_jump_median']:>6} {b['final_jump_p90']:>6} {b['final_jump_max']:>6}  "
            f"{a['final_jump_median']:>5} {a['final_jump_p90']:>5} {a['final_jump_max']:>6}  "
            f"{b['mean_relative_error']:>10} -> {a['mean_relative_error']:<9}  "
            f"{a['said_last_but_more_followed']:>6} of {a['figures']}"
        )
        w = r["after_with_schedule"]
        print(
            f"{'':<18} with the session's counters (catch, cap): max {w['final_jump_max']}, "
            f"rel.err {w['mean_relative_error']}, said last but more came {w['said_last_but_more_followed']}"
        )
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n")
        print(f"written to {args.out}")


if __name__ == "__main__":
    main()
