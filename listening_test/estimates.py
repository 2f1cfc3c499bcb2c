"""How long a study is for one participant: trials and minutes, from the procedure itself.

``study_estimate`` runs the experiment's own adaptive procedure (same class, same
options, same ladder) against simulated observers (``procedures.observer``) until
its stop rule ends each track, so the number of trials reflects ``target_sd``,
``max_reversals`` or the passes of a binary search, not only the ``max_trials``
cap. A/B (paired) tests have a fixed design and are counted exactly. The result
is stored with the experiment at creation (``experiments.estimate``), shown to the
researcher before launch and to participants on the consent screen, and drives the
participant's progress bar (``session_remaining``).

The bar's figure of trials left becomes exact as the end nears, so that the bar's
last move (to done) is at most one step of the estimate it showed: each track's
simulated estimate is clamped into the bounds its procedure can prove
(``Procedure.trials_left_bounds``: 0 once finished, exactly 1 when either answer
to its next trial ends it, at most ``max_trials - n``); catch trials are added only
where one can still come (between adaptive trials, never after the last); and when
the session can end with the open trial's answer (one open track, which some answer
to its next trial ends), the figure is 1. ``simulate_session_progress`` measures
the last move over simulated sessions (benchmarks/progress_jump.py).

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
import pickle
import threading
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import numpy as np

from perturbations.manifest import REFERENCE_FAMILY

from .flow_config import FlowConfig
from .procedures import Procedure, PsiMethod, Staircase, make_procedure, paired, restore_procedure, schedule
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
        return f"r{len(cast(Staircase, proc).reversals)}"
    if proc.name == "binary_search":
        return f"p{len(proc.state_dict()['pass_estimates'])}"
    if isinstance(proc, PsiMethod) and proc.config.get("target_sd"):
        ratio = max(proc.threshold_sd(), 1e-9) / float(proc.config["target_sd"])
        return f"s{math.floor(math.log2(ratio) * 4) / 4:g}"
    return None


def progress_signal(procedure_state: Mapping[str, Any]) -> str | None:
    """``_signal_of`` for a stored track state (``tracks.procedure_state``); None if unreadable."""
    try:
        return _signal_of(restore_procedure(dict(procedure_state)))
    except (ValueError, TypeError, KeyError):
        return None


def simulate_tracks(
    procedure: str,
    procedure_config: Mapping[str, Any],
    levels: Sequence[float],
    n_tracks: int = N_SIMULATED_TRACKS,
    seed: int = 0,
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
        observer = SimulatedObserver(
            threshold=float(rng.uniform(lo + 0.1 * span, hi - 0.1 * span)), slope=slope, false_alarm=0.05, lapse=0.03
        )
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


def simulate_track_lengths(
    procedure: str,
    procedure_config: Mapping[str, Any],
    levels: Sequence[float],
    n_tracks: int = N_SIMULATED_TRACKS,
    seed: int = 0,
) -> list[int]:
    """Adaptive trials per track until the procedure's stop rule ends it (``simulate_tracks``)."""
    return simulate_tracks(procedure, procedure_config, levels, n_tracks, seed)[0]


def _quantile(values: Sequence[float] | np.ndarray, q: float) -> float:
    return float(np.quantile(np.asarray(values, dtype=float), q)) if len(values) else 0.0


def _participant_main_trials(
    track_lengths: Sequence[int], n_tracks: int, catch_rate: float, cap: int, rng: np.random.Generator, n: int = 2000
) -> np.ndarray:
    """Main-phase trials (catch trials included) per participant: sums of ``n_tracks`` drawn lengths."""
    draws = rng.choice(np.asarray(track_lengths), size=(n, n_tracks)).sum(axis=1)
    return np.minimum(np.ceil(draws / (1.0 - catch_rate)), cap)


def study_estimate(
    procedure: str,
    procedure_config: Mapping[str, Any],
    flow: FlowConfig,
    ladders: Mapping[tuple[str, str], Sequence[float]],
    test_type: str,
    clip_seconds: float,
    seed: int = 0,
) -> dict[str, Any]:
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
        method = (
            f"simulated: {len(lengths)} tracks of the {procedure} procedure with its own stop rule "
            "(simulated observers, listening_test.estimates)"
        )
    per_trial = n_clips * clip_seconds + (n_clips - 1) * CLIP_GAP_S + RESPONSE_S
    practice = flow.practice_trials
    fixed = FIXED_S + screening * SCREENING_TRIAL_S + practice * (per_trial + 2.0)  # + reading the feedback

    def minutes(trials: float) -> float:
        return round((fixed + trials * per_trial) / 60.0, 1)

    mean, p10, p90 = float(main.mean()), _quantile(main, 0.1), _quantile(main, 0.9)
    return {
        "version": ESTIMATE_VERSION,
        "test_type": test_type,
        "procedure": procedure,
        "tracks": tracks,
        "main_trials": {"mean": round(mean, 1), "p10": p10, "p90": p90},
        "track_lengths": hist,
        "remaining_by_signal": by_signal,
        "catch_rate": flow.catch_rate,
        "practice_trials": practice,
        "screening_trials": screening,
        "seconds_per_trial": round(per_trial, 2),
        "clip_seconds": round(clip_seconds, 3),
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
    return (
        f"about {m['mean']:.0f} main trials per participant (80 % between {m['p10']:.0f} and {m['p90']:.0f}), "
        f"{estimate['practice_trials']} practice, {estimate['screening_trials']} headphone checks: "
        f"about {estimate['minutes']['mean']:.0f} min (90 % of participants within "
        f"{math.ceil(estimate['minutes']['p90'])} min)"
    )


@dataclass(frozen=True)
class TrackOutlook:
    """Where one track stands, for the trials-left figure: ``n_trials`` answered so far,
    ``finished``, its progress ``signal`` (``progress_signal``; None: none), and the
    ``fewest`` / ``most`` trials it can still take, its next included
    (``Procedure.trials_left_bounds``; None: not known)."""

    n_trials: int
    finished: bool
    signal: str | None = None
    fewest: int | None = None
    most: int | None = None


def track_outlook(proc: Procedure | None, n_trials: int, finished: bool, look_ahead: bool = False) -> TrackOutlook:
    """``TrackOutlook`` of a live procedure (None: a track no procedure reads, bounds unknown).

    ``look_ahead`` simulates both answers to the next trial (``trials_left_bounds``;
    a few ms for the Psi method, so the server asks only for a session's last open track).
    """
    if finished:
        return TrackOutlook(n_trials, True, None, 0, 0)
    if proc is None:
        return TrackOutlook(n_trials, False)
    fewest, most = proc.trials_left_bounds(look_ahead=look_ahead)
    if fewest == 0:
        return TrackOutlook(n_trials, True, None, 0, 0)
    return TrackOutlook(n_trials, False, _signal_of(proc), fewest, most)


# stored_track_outlook's results, by the state's pickle, n_trials and look_ahead: an
# answer changes one of its session's tracks, and the others' outlooks were computed for
# an earlier answer (restoring a procedure and bounding it was ~15% of an answer's CPU,
# benchmarks/answer_path_cpu.py, issue 18). Per process, bounded in number and in the
# keys' bytes (oldest out first): a key is ~2 KB for a Psi track of 100 answers, 31 KB
# for one of 2000 on 100 levels (4096 of those would be 122 MiB). 0: nothing remembered.
OUTLOOK_CACHE_MAX = 4096
OUTLOOK_CACHE_BYTES = 32 * 2**20
_outlooks: dict[tuple[bytes, int, bool], TrackOutlook] = {}
_outlooks_bytes = 0  # the keys' pickles, together
_outlooks_lock = threading.Lock()


def _outlook_key(state: Mapping[str, Any], n_trials: int, look_ahead: bool) -> tuple[bytes, int, bool] | None:
    """The cache key of a stored state: its pickle (equal pickles of JSON data are equal
    data, types and float bits included: 1, 1.0, true, 0.0 and -0.0 differ; 3 us for a
    Psi state with 25 answers, against 14 for its JSON text); None for a state that does
    not pickle or whose n_trials is not a number."""
    try:
        return pickle.dumps(state, protocol=5), int(n_trials), bool(look_ahead)
    except Exception:  # noqa: BLE001 - what does not pickle (PicklingError, TypeError, ...), or an n_trials that is no number
        return None


def stored_track_outlook(procedure_state: Any, n_trials: int, finished: bool, look_ahead: bool = False) -> TrackOutlook:
    """``track_outlook`` for a stored state (``tracks.procedure_state``). An A/B track
    (``paired``: a fixed number of presentations) is exact: ``repeats - n_trials`` left.
    An unreadable state has unknown bounds. The outlook of a state seen before in this
    process is remembered (``OUTLOOK_CACHE_MAX`` of them, ``OUTLOOK_CACHE_BYTES`` of keys):
    it depends on nothing else."""
    if finished:
        return TrackOutlook(n_trials, True, None, 0, 0)
    state = procedure_state if isinstance(procedure_state, Mapping) else {}
    if state.get("name") == paired.PROCEDURE_NAME:
        try:
            left = max(1, int(state["repeats"]) - int(n_trials))
        except (KeyError, TypeError, ValueError):
            return TrackOutlook(n_trials, False)
        return TrackOutlook(n_trials, False, None, left, left)
    key = _outlook_key(state, n_trials, look_ahead)
    if key is not None:
        found = _outlooks.get(key)
        if found is not None:
            return found
    try:
        proc = restore_procedure(dict(state))
    except (ValueError, TypeError, KeyError):
        outlook = TrackOutlook(n_trials, False)
    else:
        outlook = track_outlook(proc, n_trials, False, look_ahead)
    if key is not None:
        _remember_outlook(key, outlook)
    return outlook


def _remember_outlook(key: tuple[bytes, int, bool], outlook: TrackOutlook) -> None:
    global _outlooks_bytes
    size = len(key[0])
    if OUTLOOK_CACHE_MAX <= 0 or size > OUTLOOK_CACHE_BYTES:
        return
    with _outlooks_lock:
        if key in _outlooks:  # another thread computed it meanwhile
            return
        while _outlooks and (len(_outlooks) >= OUTLOOK_CACHE_MAX or _outlooks_bytes + size > OUTLOOK_CACHE_BYTES):
            oldest = next(iter(_outlooks))
            del _outlooks[oldest]
            _outlooks_bytes -= len(oldest[0])
        if not _outlooks:
            _outlooks_bytes = 0  # also after an _outlooks.clear() elsewhere
        _outlooks[key] = outlook
        _outlooks_bytes += size


def _unbounded_left(estimate: Mapping[str, Any], n: int, signal: str | None) -> float:
    """The simulated expectation for one open track (see ``expected_remaining``), >= 1."""
    by_signal = estimate.get("remaining_by_signal") or {}
    if signal is not None and signal in by_signal:
        return max(1.0, float(by_signal[signal]))
    hist = {int(k): int(v) for k, v in (estimate.get("track_lengths") or {}).items()}
    longer = {k: v for k, v in hist.items() if k > n}
    left = sum((k - n) * v for k, v in longer.items()) / sum(longer.values()) if longer else 1.0
    return max(1.0, left)


def track_remaining(estimate: Mapping[str, Any], track: TrackOutlook) -> float:
    """Expected adaptive trials still to come on one track, its next included: the
    simulated expectation (``expected_remaining``) clamped into the track's proven bounds
    [``fewest``, ``most``]; 0 for a finished track."""
    if track.finished:
        return 0.0
    left = _unbounded_left(estimate, track.n_trials, track.signal)
    if track.fewest is not None:
        left = max(left, float(track.fewest))
    if track.most is not None:
        left = min(left, float(track.most))
    return left


def session_remaining(
    estimate: Mapping[str, Any] | None,
    tracks: Sequence[TrackOutlook],
    *,
    open_is_catch: bool | None = None,
    cap_left: int | None = None,
) -> float | None:
    """Main-phase trials still to come, the open one included (the progress bar's figure).

    ``tracks``: every track of the session (``TrackOutlook``), stood as they are while the
    open trial waits for its answer; ``open_is_catch``: whether the open trial is a catch
    trial (None: not known, taken as adaptive); ``cap_left``: trials the session's
    ``max_main_trials`` still allows, the open one included (None: no cap known).

    The sum over tracks of ``track_remaining``, plus the catch trials still due at the
    estimate's ``catch_rate`` between the adaptive trials after the next one (none comes
    after the last: the main part ends with its last track), plus the open catch trial.
    It is 1 when the session can end with the open trial's answer: the cap is reached,
    or one track is open, the open trial is its next, and some answer ends it
    (``fewest == 1``). Never below the tracks' summed ``fewest``, never above ``cap_left``.
    None without an estimate.
    """
    if not estimate or not estimate.get("track_lengths"):
        return None
    open_tracks = [t for t in tracks if not t.finished]
    if cap_left is not None and cap_left <= 1:
        return 1.0
    if not open_tracks:
        return 1.0 if open_is_catch else 0.0
    if len(open_tracks) == 1 and open_tracks[0].fewest == 1 and not open_is_catch:
        return 1.0
    adaptive = sum(track_remaining(estimate, t) for t in open_tracks)
    rate = float(estimate.get("catch_rate", 0.0))
    catches = rate / (1.0 - rate) * max(0.0, adaptive - 1.0)
    total = adaptive + catches + (1.0 if open_is_catch else 0.0)
    fewest = sum(t.fewest if t.fewest is not None else 1 for t in open_tracks) + (1 if open_is_catch else 0)
    total = max(total, float(fewest))
    if cap_left is not None:
        total = min(total, float(cap_left))
    return total


def _open_trial_is_catch(schedule_state: Mapping[str, Any] | None, tracks: Sequence[Any]) -> bool | None:
    """From the session's counters (``served_in_stage`` and ``catches``, both counting the
    open trial): the open trial is a catch when every adaptive trial served has been
    answered. None when the counters are missing."""
    if not schedule_state or "served_in_stage" not in schedule_state:
        return None
    served = int(schedule_state.get("served_in_stage", 0))
    n_catches = sum(int(v) for v in (schedule_state.get("catches") or {}).values())
    return served - n_catches <= sum(int(t.n_trials) for t in tracks)


def trials_left(
    estimate: Mapping[str, Any] | None,
    tracks: Sequence[Any],
    schedule_state: Mapping[str, Any] | None = None,
    max_main_trials: int | None = None,
) -> float | None:
    """``session_remaining`` for a session whose tracks (objects with ``n_trials``,
    ``finished``, ``procedure_state``) stand as given, right after its next trial was
    served, on the experiment's stored ``estimate`` (``study_estimate``; None: no figure).
    ``schedule_state``: the session's counters (``served_in_stage``, ``catches``), which
    tell whether the open trial is a catch and, with ``max_main_trials``, how far the cap
    is (without them both are unknown). Rounded to 0.1; None without an estimate.

    Only a session's last open track is looked ahead on (``trials_left_bounds``): that is
    where the session's end is decided, and it keeps the answer path's cost to one
    look-ahead (a few ms for the Psi method) near the end of a session.
    """
    if not estimate:
        return None
    look_ahead = sum(1 for t in tracks if not t.finished) == 1
    outlooks = [stored_track_outlook(t.procedure_state, int(t.n_trials), bool(t.finished), look_ahead) for t in tracks]
    open_is_catch = _open_trial_is_catch(schedule_state, tracks)
    cap_left = None
    if schedule_state and "served_in_stage" in schedule_state and max_main_trials is not None:
        cap_left = max_main_trials - int(schedule_state["served_in_stage"]) + 1
    left = session_remaining(estimate, outlooks, open_is_catch=open_is_catch, cap_left=cap_left)
    return None if left is None else round(left, 1)


def simulate_session_progress(
    estimate: Mapping[str, Any],
    procedure: str,
    procedure_config: Mapping[str, Any],
    flow: FlowConfig,
    track_levels: Sequence[Sequence[float]],
    n_sessions: int = 200,
    seed: int = 0,
    test_type: str = "same_different",
    knows_schedule: bool = False,
) -> list[dict[str, Any]]:
    """Simulated sessions' main parts, offline, with the server's own decisions
    (``procedures.schedule``: catch trials, track order, the ``max_main_trials`` cap) and
    simulated observers as in ``simulate_tracks`` (one per track of ``track_levels``).

    For each session: ``shown``, the trials-left figure the server stores with each main
    trial after the first (``session_remaining``, as ``trials_left`` computes it;
    the first trial is entered without one), ``unbounded`` (the same with the simulated
    expectation alone, ``expected_remaining``, the figure before the bounds), and
    ``actual``, the trials that really were left, the open one included. The progress
    bar's last move, in steps of the estimate it showed, is ``max(1, shown[-1])``
    (participant.js: each answer moves the bar by what is left over the trials left).
    ``knows_schedule``: the figure is given the session's counters (whether the open
    trial is a catch, the cap), as ``trials_left`` is when its caller passes
    ``schedule_state``; False: as called without them. Deterministic for a given ``seed``.
    """
    rng = np.random.default_rng(seed)
    shares = flow.catch_shares(test_type)
    sessions = []
    for _ in range(n_sessions):
        procs: list[Any] = []
        observers: list[SimulatedObserver] = []
        for levels in track_levels:
            lo, hi = float(min(levels)), float(max(levels))
            span = max(hi - lo, 1e-9)
            observers.append(
                SimulatedObserver(
                    threshold=float(rng.uniform(lo + 0.1 * span, hi - 0.1 * span)),
                    slope=2 * math.log(9) / (0.2 * span),
                    false_alarm=0.05,
                    lapse=0.03,
                )
            )
            procs.append(make_procedure(procedure, levels, **dict(procedure_config)))
        served, last = 0, -1
        catches: dict[str, int] = {}
        shown: list[float | None] = []
        unbounded: list[float | None] = []
        while True:
            open_ids = [i for i, p in enumerate(procs) if not p.finished]
            if schedule.phase_finished(len(open_ids), served, flow.max_main_trials):
                break
            catch = schedule.next_catch(served, catches, flow.catch_rate, shares, rng)
            level = None
            if catch is not None:
                catches[catch] = catches.get(catch, 0) + 1
            else:
                last = open_ids[
                    schedule.choose_track(
                        [procs[i].n_trials for i in open_ids],
                        rng,
                        avoid=open_ids.index(last) if last in open_ids else None,
                    )
                ]
                level = procs[last].next_level()
            served += 1
            if served == 1:
                shown.append(None)
                unbounded.append(None)
            else:
                look_ahead = len(open_ids) == 1
                outlooks = [track_outlook(p, p.n_trials, p.finished, look_ahead) for p in procs]
                shown.append(
                    session_remaining(
                        estimate,
                        outlooks,
                        open_is_catch=(catch is not None) if knows_schedule else None,
                        cap_left=flow.max_main_trials - served + 1 if knows_schedule else None,
                    )
                )
                unbounded.append(
                    expected_remaining(
                        estimate, [(p.n_trials, p.finished, None if p.finished else _signal_of(p)) for p in procs]
                    )
                )
            if level is not None:
                procs[last].update(level, observers[last].respond(level, rng))
        n = len(shown)
        sessions.append({"shown": shown, "unbounded": unbounded, "actual": [n - i for i in range(n)]})
    return sessions


def final_jump_steps(values: Sequence[float | None]) -> float | None:
    """The progress bar's last move (to done) in steps of the estimate it showed:
    ``max(1, figure at the last main trial)``; None when that trial had no figure."""
    if not values or values[-1] is None:
        return None
    return max(1.0, float(values[-1]))


def estimate_for_experiment(session, experiment) -> dict[str, Any]:
    """Compute ``study_estimate`` for a stored experiment from its stimuli (ORM ``session``)."""
    ladders, clip_s = experiment_ladders(session, experiment)
    return study_estimate(
        experiment.procedure,
        experiment.procedure_config or {},
        FlowConfig.from_dict(experiment.config),
        ladders,
        experiment.test_type,
        clip_s,
    )


def experiment_ladders(session, experiment) -> tuple[dict[tuple[str, str], list[float]], float]:
    """A stored experiment's ladders ((reference, family) -> levels) and mean clip length (s)."""
    from sqlalchemy import func, select

    from .models import Stimulus

    rows = session.execute(
        select(Stimulus.reference, Stimulus.family, Stimulus.level).where(
            Stimulus.experiment_id == experiment.id, Stimulus.family != REFERENCE_FAMILY
        )
    ).all()
    ladders: dict[tuple[str, str], list[float]] = {}
    for ref, fam, level in rows:
        ladders.setdefault((ref, fam), []).append(float(level))
    clip_s = (
        session.scalar(
            select(func.avg(Stimulus.num_samples * 1.0 / Stimulus.sample_rate)).where(
                Stimulus.experiment_id == experiment.id
            )
        )
        or 1.0
    )
    return ladders, float(clip_s)


def ensure_estimate(session, experiment) -> dict[str, Any] | None:
    """The experiment's stored length estimate, computed and stored (committed through the
    ORM ``session``) on first use for an experiment created without one; None when it
    cannot be computed (no usable ladder: the error is not raised).

    The simulation runs outside any transaction: the reading one is committed first (on
    SQLite it would hold the write queue that every answer waits behind for seconds).
    """
    if experiment.estimate is None:
        try:
            ladders, clip_s = experiment_ladders(session, experiment)
            session.commit()
            estimate = study_estimate(
                experiment.procedure,
                experiment.procedure_config or {},
                FlowConfig.from_dict(experiment.config),
                ladders,
                experiment.test_type,
                clip_s,
            )
        except (ValueError, TypeError):
            session.rollback()
            return None
        experiment.estimate = estimate
        session.commit()  # a short write
    return experiment.estimate
