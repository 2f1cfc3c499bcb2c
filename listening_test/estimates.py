"""How long a study is for one participant: trials and minutes, from the procedure itself.

``study_estimate`` runs the experiment's own adaptive procedure (same class, same
options, same ladder) against simulated observers (``procedures.observer``) until
its stop rule ends each track, so the number of trials reflects ``target_sd``,
``max_reversals`` or the passes of a binary search, not only the ``max_trials``
cap. A/B (paired) tests have a fixed design and are counted exactly. The result
is stored with the experiment at creation (``experiments.estimate``), shown to the
researcher before launch and to participants on the consent screen, and drives the
participant's progress bar (``expected_remaining``).

Simulated observers: logistic psychometric functions with the threshold uniform
over the middle 80 % of the ladder, 10-90 % width a fifth of the ladder's range,
5 % false alarms and 3 % lapses (the kind of listener ``analysis`` recovers from the
demo). Timings: every clip is played once in full, plus ``RESPONSE_S`` to decide
and answer (our own browser sessions answered within 1.5-3 s after the last clip);
the headphone check's three 1-s sounds with 0.5-s gaps; ``FIXED_S`` for consent,
volume and instructions.
"""
from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .flow_config import FlowConfig
from .procedures import Procedure, make_procedure, paired, restore_procedure
from .procedures.observer import SimulatedObserver

N_SIMULATED_TRACKS = 120
RESPONSE_S = 2.5  # deciding and answering, after the last clip
CLIP_GAP_S = 0.5  # moving between clips
SCREENING_TRIAL_S = 3 * 1.0 + 2 * 0.5 + RESPONSE_S
FIXED_S = 120.0  # consent, volume, instructions, the main-part screen
ESTIMATE_VERSION = 1


def _signal_of(proc: Procedure) -> str | None:
    """How far a running track is along its own stop rule, as a short key: the staircase's
    reversals so far, the binary search's finished passes, the Psi method's posterior SD
    of the threshold relative to ``target_sd`` (log2, in quarter steps). None: no signal."""
    if proc.name == "staircase":
        return f"r{len(proc.state_dict()['reversals'])}"
    if proc.name == "binary_search":
        return f"p{len(proc.state_dict()['pass_estimates'])}"
    if proc.name == "bayesian" and proc.config.get("target_sd"):
        ratio = max(proc.threshold_sd(), 1e-9) / float(proc.config["target_sd"])
        return f"s{math.floor(math.log2(ratio) * 4) / 4:g}"
    return None


def progress_signal(procedure_state: Mapping[str, Any]) -> str | None:
    """``_signal_of`` for a stored track state (``tracks.procedure_state``); None if unreadable."""
    try:
        return _signal_of(restore_procedure(dict(procedure_state)))
    except (ValueError, TypeError, KeyError):
        return None


def simulate_tracks(procedure: str, procedure_config: Mapping[str, Any], levels: Sequence[float],
                    n_tracks: int = N_SIMULATED_TRACKS, seed: int = 0
                    ) -> tuple[list[int], dict[str, list[int]]]:
    """Simulated tracks (see the module docstring): (lengths, remaining) where ``lengths``
    are the adaptive trials per track under the procedure's stop rule and ``remaining``
    maps each progress signal (``_signal_of``) seen before a trial to the trials that were
    still to come then. Deterministic for a given ``seed``.

    Raises ValueError for an unknown procedure or options (as ``make_procedure``).
    """
    rng = np.random.default_rng(seed)
    lo, hi = float(min(levels)), float(max(levels))
    span = max(hi - lo, 1e-9)
    slope = 2 * math.log(9) / (0.2 * span)  # 10-90 % over a fifth of the ladder
    lengths = []
    seen: dict[str, list[int]] = {}
    for _ in range(n_tracks):
        observer = SimulatedObserver(threshold=float(rng.uniform(lo + 0.1 * span, hi - 0.1 * span)),
                                     slope=slope, false_alarm=0.05, lapse=0.03)
        proc = make_procedure(procedure, levels, **dict(procedure_config))
        n = 0
        signals = []
        while not proc.finished and n < 10_000:
            level = proc.next_level()
            if level is None:
                break
            signals.append(_signal_of(proc))
            proc.update(level, observer.respond(level, rng))
            n += 1
        lengths.append(n)
        for i, key in enumerate(signals):
            if key is not None:
                seen.setdefault(key, []).append(n - i)
    return lengths, seen


def simulate_track_lengths(procedure: str, procedure_config: Mapping[str, Any], levels: Sequence[float],
                           n_tracks: int = N_SIMULATED_TRACKS, seed: int = 0) -> list[int]:
    """Adaptive trials per track until the procedure's stop rule ends it (``simulate_tracks``)."""
    return simulate_tracks(procedure, procedure_config, levels, n_tracks, seed)[0]


def _quantile(values: Sequence[float], q: float) -> float:
    return float(np.quantile(np.asarray(values, dtype=float), q)) if len(values) else 0.0


def _participant_main_trials(track_lengths: Sequence[int], n_tracks: int, catch_rate: float, cap: int,
                             rng: np.random.Generator, n: int = 2000) -> np.ndarray:
    """Main-phase trials (catch trials included) per participant: sums of ``n_tracks`` drawn lengths."""
    draws = rng.choice(np.asarray(track_lengths), size=(n, n_tracks)).sum(axis=1)
    return np.minimum(np.ceil(draws / (1.0 - catch_rate)), cap)


def study_estimate(procedure: str, procedure_config: Mapping[str, Any], flow: FlowConfig,
                   ladders: Mapping[tuple[str, str], Sequence[float]], test_type: str,
                   clip_seconds: float, seed: int = 0) -> dict[str, Any]:
    """Expected trials and minutes per participant (a JSON-ready dict).

    ``ladders``: (reference, family) -> levels (A/B: (item, system) -> [level]);
    ``clip_seconds``: the mean duration of one clip (s). Keys: ``main_trials`` (mean,
    p10, p90: main-phase trials, catch trials included), ``track_lengths`` (a histogram:
    adaptive trials per track -> count of simulated tracks), ``tracks``,
    ``practice_trials``, ``screening_trials``, ``seconds_per_trial``, ``minutes``
    (mean, p90), ``method`` (text).

    Raises ValueError when the procedure or the ladders cannot be used.
    """
    if not ladders:
        raise ValueError("the stimulus set has no perturbed stimuli")
    n_refs = len({ref for ref, _ in ladders})
    screening = flow.screening.trials_per_test * len(flow.screening.tests)
    rng = np.random.default_rng(seed)
    if test_type == "ab_preference":
        pairs = paired.system_pairs({system for _, system in ladders}, flow.anchor_system)
        repeats = paired.PairedConfig.from_dict(dict(procedure_config)).repeats
        per_item = len(pairs) * repeats
        tracks = min(flow.references_per_participant, n_refs)
        exact = min(flow.max_main_trials, math.ceil(tracks * per_item / (1.0 - flow.catch_rate)))
        main = np.full(1, exact, dtype=float)
        hist = {str(per_item): 1}
        by_signal = {}
        n_clips = 3
        method = "exact: items x system pairs x repeats, plus catch trials"
    else:
        n_fams = len({fam for _, fam in ladders})
        tracks = min(flow.references_per_participant, n_refs) * min(flow.families_per_participant or n_fams, n_fams)
        # Ladders of one family share their levels in a generated set; use the first of each family.
        first_of_family: dict[str, Sequence[float]] = {}
        for (_, fam), levels in sorted(ladders.items()):
            first_of_family.setdefault(fam, levels)
        lengths: list[int] = []
        seen: dict[str, list[int]] = {}
        per_family = max(1, N_SIMULATED_TRACKS // len(first_of_family))
        for i, levels in enumerate(first_of_family.values()):
            more, remaining = simulate_tracks(procedure, procedure_config, levels, per_family, seed + i)
            lengths += more
            for key, values in remaining.items():
                seen.setdefault(key, []).extend(values)
        # Mean trials still to come after each progress signal seen at least 5 times.
        by_signal = {key: round(sum(v) / len(v), 2) for key, v in sorted(seen.items()) if len(v) >= 5}
        main = _participant_main_trials(lengths, tracks, flow.catch_rate, flow.max_main_trials, rng)
        hist = {str(k): v for k, v in sorted(Counter(lengths).items())}
        n_clips = 2
        method = (f"simulated: {len(lengths)} tracks of the {procedure} procedure with its own stop rule "
                  "(simulated observers, listening_test.estimates)")
    per_trial = n_clips * clip_seconds + (n_clips - 1) * CLIP_GAP_S + RESPONSE_S
    practice = flow.practice_trials
    fixed = FIXED_S + screening * SCREENING_TRIAL_S + practice * (per_trial + 2.0)  # + reading the feedback

    def minutes(trials: float) -> float:
        return round((fixed + trials * per_trial) / 60.0, 1)

    mean, p10, p90 = float(main.mean()), _quantile(main, 0.1), _quantile(main, 0.9)
    return {
        "version": ESTIMATE_VERSION, "test_type": test_type, "procedure": procedure, "tracks": tracks,
        "main_trials": {"mean": round(mean, 1), "p10": p10, "p90": p90},
        "track_lengths": hist, "remaining_by_signal": by_signal, "catch_rate": flow.catch_rate,
        "practice_trials": practice, "screening_trials": screening,
        "seconds_per_trial": round(per_trial, 2), "clip_seconds": round(clip_seconds, 3),
        "minutes": {"mean": minutes(mean), "p90": minutes(p90)},
        "method": method,
    }


def expected_remaining(estimate: Mapping[str, Any] | None, track_trials: Sequence[tuple]) -> float | None:
    """Expected main-phase trials still to come (catch trials included) for a participant
    whose tracks stand at ``track_trials`` = [(adaptive trials so far, finished[, signal]), ...].

    An unfinished track with a progress ``signal`` (``progress_signal``) seen in the
    simulation has the simulated mean of the trials that followed that signal left;
    otherwise, at n trials, E[L - n | L > n] with L drawn from the simulated track
    lengths. At least one trial per unfinished track. None without an estimate.
    """
    if not estimate or not estimate.get("track_lengths"):
        return None
    hist = {int(k): int(v) for k, v in estimate["track_lengths"].items()}
    by_signal = estimate.get("remaining_by_signal") or {}
    total = 0.0
    for entry in track_trials:
        n, finished = entry[0], entry[1]
        signal = entry[2] if len(entry) > 2 else None
        if finished:
            continue
        if signal is not None and signal in by_signal:
            left = float(by_signal[signal])
        else:
            longer = {k: v for k, v in hist.items() if k > n}
            left = sum((k - n) * v for k, v in longer.items()) / sum(longer.values()) if longer else 1.0
        total += max(1.0, left)
    return total / (1.0 - float(estimate.get("catch_rate", 0.0)))


def describe(estimate: Mapping[str, Any] | None) -> str:
    """One line for the researcher: trials and minutes per participant."""
    if not estimate:
        return "no length estimate"
    m = estimate["main_trials"]
    return (f"about {m['mean']:.0f} main trials per participant (80 % between {m['p10']:.0f} and {m['p90']:.0f}), "
            f"{estimate['practice_trials']} practice, {estimate['screening_trials']} headphone checks: "
            f"about {estimate['minutes']['mean']:.0f} min (90 % of participants within "
            f"{math.ceil(estimate['minutes']['p90'])} min)")


def experiment_estimate(experiment_id: int) -> dict[str, Any] | None:
    """The stored estimate of an experiment, cached per process (it never changes); computed
    (not stored) for an experiment that has none. None when it cannot be computed."""
    from flask import current_app
    from sqlalchemy import select

    from .db import connection
    from .models import Experiment

    cache = current_app.extensions.setdefault("jndlab_estimates", {})
    if experiment_id not in cache:
        estimate = connection().scalar(select(Experiment.estimate).where(Experiment.id == experiment_id))
        if estimate is None:  # created without one (e.g. by create_experiment alone): compute, keep in memory
            from .db import db

            try:
                estimate = estimate_for_experiment(db.session, db.session.get(Experiment, experiment_id))
            except (ValueError, TypeError):
                estimate = None
        cache[experiment_id] = estimate
    return cache[experiment_id]


def session_trials_left(experiment_id: int, tracks: Sequence[Any]) -> float | None:
    """``expected_remaining`` for a session of ``experiment_id`` whose tracks (objects with
    ``n_trials``, ``finished``, ``procedure_state``) stand as given; None without an
    estimate. Rounded to 0.1."""
    estimate = experiment_estimate(experiment_id)
    if not estimate:
        return None
    rows = [(t.n_trials, bool(t.finished), None if t.finished else progress_signal(t.procedure_state))
            for t in tracks]
    left = expected_remaining(estimate, rows)
    return None if left is None else round(left, 1)


def estimate_for_experiment(session, experiment) -> dict[str, Any]:
    """Compute ``study_estimate`` for a stored experiment from its stimuli (ORM ``session``)."""
    from sqlalchemy import func, select

    from .manifest_import import REFERENCE_FAMILY
    from .models import Stimulus

    rows = session.execute(select(Stimulus.reference, Stimulus.family, Stimulus.level).where(
        Stimulus.experiment_id == experiment.id, Stimulus.family != REFERENCE_FAMILY)).all()
    ladders: dict[tuple[str, str], list[float]] = {}
    for ref, fam, level in rows:
        ladders.setdefault((ref, fam), []).append(float(level))
    clip_s = session.scalar(select(func.avg(Stimulus.num_samples * 1.0 / Stimulus.sample_rate)).where(
        Stimulus.experiment_id == experiment.id)) or 1.0
    return study_estimate(experiment.procedure, experiment.procedure_config or {},
                          FlowConfig.from_dict(experiment.config), ladders, experiment.test_type, float(clip_s))
