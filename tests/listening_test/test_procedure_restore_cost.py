"""Cheap restores (issue 18): ``from_state`` copies a validated template of a ladder and
options it has seen, and the Psi method takes a replayed posterior from a memo. Both must
be invisible: the same objects, states, levels, estimates and session trials as the full
constructor and a full replay, and the same errors for a malformed or hostile state.

The oracle (``full_restore``) is ``from_state`` as it was before the caches: the
constructor's checks on every call, the posterior replayed answer by answer.
"""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest

from listening_test import estimates
from listening_test.flow import stages
from listening_test.flow.session import FlowSession, OpenTrial, StudyData
from listening_test.flow.trials import SAME_DIFFERENT, Ladders, TrackRow
from listening_test.flow_config import FlowConfig
from listening_test.procedures import base, bayesian, make_procedure, restore_procedure
from listening_test.procedures.bayesian import PsiMethod
from listening_test.procedures.binary_search import BinarySearch
from listening_test.procedures.observer import SimulatedObserver
from listening_test.procedures.staircase import Staircase

LEVELS = [float(v) for v in np.linspace(0, 100, 11)]  # 0.0 is a rung: the sign of zero matters
CASES = [
    ("staircase", {}),
    ("staircase", {"n_down": 3, "steps": [3, 1], "shrink_at": [2], "start_level": 60.0}),
    ("bayesian", {"max_trials": 25, "target_sd": None}),
    ("bayesian", {"function": "weibull", "entropy_over": "threshold", "estimate": "mode", "max_trials": 12}),
    ("binary_search", {"passes": 3, "repeats": 3}),
]


def full_restore(state):
    """``from_state`` without the caches (the code before issue 18's change)."""
    if not isinstance(state, dict) or "name" not in state:
        raise ValueError("a procedure state must be a dict with a 'name' key")
    name = state["name"]
    if name not in ("staircase", "binary_search", "bayesian"):
        return restore_procedure(state)  # an unknown name: refused before any cache
    if name == "staircase":
        proc = Staircase(state["levels"], _restoring=True, **state["config"])
        proc._index = int(state["index"])
        proc._n_trials = int(state["n_trials"])
        proc._run = int(state["run"])
        proc._direction = int(state["direction"])
        proc._reversals = [float(v) for v in state["reversals"]]
        return proc
    if name == "binary_search":
        proc = BinarySearch(state["levels"], **state["config"])
        proc._lo, proc._hi = int(state["lo"]), int(state["hi"])
        proc._votes = [int(v) for v in state["votes"]]
        proc._pass_estimates = [float(v) for v in state["pass_estimates"]]
        proc._n_trials = int(state["n_trials"])
        return proc
    if name == "bayesian":
        proc = PsiMethod(state["levels"], **state["config"])
        proc._posterior = proc._posterior.copy()
        for level, resp in state["history"]:
            index = proc._snap(level)
            proc._apply(index, bool(resp))
            proc._history.append([proc.levels[index], int(bool(resp))])
    return proc


def clear_caches():
    base._templates.clear()
    with estimates._outlooks_lock:
        estimates._outlooks.clear()
        estimates._outlooks_bytes = 0
    with bayesian._posteriors_lock:
        bayesian._posteriors.clear()
        bayesian._posteriors_bytes = 0


def outcome(call):
    """What ``call()`` gives: its value's repr, or its error's type and message."""
    try:
        return repr(call())
    except Exception as error:  # noqa: BLE001 - a corrupt state may fail anywhere: it must fail alike
        return type(error), str(error)


def same_procedure(a, b):
    """Two procedures are the same: type, state, next level, estimate, stop rule, attributes."""
    assert type(a) is type(b)
    assert json.dumps(a.state_dict()) == json.dumps(b.state_dict())
    for ask in ("next_level", "estimate", "trials_left_bounds"):
        assert outcome(getattr(a, ask)) == outcome(getattr(b, ask)), ask
    for ask in ("finished", "stop_reason"):
        assert outcome(lambda p=a, ask=ask: getattr(p, ask)) == outcome(lambda p=b, ask=ask: getattr(p, ask)), ask
    assert sorted(vars(a)) == sorted(vars(b))
    for name, value in vars(a).items():
        other = vars(b)[name]
        if isinstance(value, np.ndarray):
            assert value.dtype == other.dtype and np.array_equal(value, other), name
            assert value.tobytes() == other.tobytes(), name  # bit for bit
        else:
            assert type(value) is type(other) and repr(value) == repr(other), name


@pytest.mark.parametrize("name,config", CASES)
def test_restores_round_trip_exactly_as_the_full_constructor(name, config):
    # A track walked answer by answer the way the server does it (restore, update, store),
    # with warm caches and with the oracle: the same objects and stored JSON at every step.
    clear_caches()
    obs = SimulatedObserver(threshold=55.0, slope=0.15, false_alarm=0.05, lapse=0.03)
    rng = np.random.default_rng(3)
    live = make_procedure(name, LEVELS, **config)
    stored = json.dumps(live.state_dict())
    steps = 0
    while not live.finished and steps < 60:
        fast, full = restore_procedure(json.loads(stored)), full_restore(json.loads(stored))
        same_procedure(fast, full)
        same_procedure(fast, restore_procedure(json.loads(stored)))  # a second, cache-hot restore
        level = fast.next_level()
        assert level == live.next_level()
        answer = obs.respond(level, rng)
        for proc in (fast, full, live):
            proc.update(level, answer)
        same_procedure(fast, full)
        same_procedure(fast, live)
        stored = json.dumps(fast.state_dict())
        assert stored == json.dumps(full.state_dict()) == json.dumps(live.state_dict())
        steps += 1
    assert steps > 3


@pytest.mark.parametrize("name,config", CASES)
def test_a_restore_shares_nothing_mutable_with_the_template_or_another_restore(name, config):
    clear_caches()
    state = json.loads(json.dumps(make_procedure(name, LEVELS, **config).state_dict()))
    first = restore_procedure(copy.deepcopy(state))
    for value in first.config.values():
        if isinstance(value, list):
            value.append(-1)  # a caller playing with what it got
    first.levels.append(1e9)
    first.state_dict()["config"].clear()
    second = restore_procedure(copy.deepcopy(state))
    same_procedure(second, full_restore(copy.deepcopy(state)))


def test_templates_tell_apart_values_that_compare_equal():
    # 1 == 1.0 == True and 0.0 == -0.0: a key of plain equality would hand one the other's template.
    clear_caches()
    state = json.loads(json.dumps(make_procedure("staircase", LEVELS, n_down=1).state_dict()))
    restore_procedure(state)
    for bad in (True, 1.0):
        with pytest.raises(ValueError, match="n_down must be an integer"):
            restore_procedure({**state, "config": {**state["config"], "n_down": bad}})
    negative = {**state, "levels": [-0.0, *state["levels"][1:]]}
    assert json.dumps(restore_procedure(negative).state_dict()) == json.dumps(full_restore(negative).state_dict())
    assert json.dumps(restore_procedure(negative).state_dict()) != json.dumps(restore_procedure(state).state_dict())
    as_ints = {**state, "levels": [int(v) for v in state["levels"]]}
    same_procedure(restore_procedure(as_ints), full_restore(as_ints))
    nan = {**state, "levels": [*state["levels"][:-1], float("nan")]}
    assert json.dumps(restore_procedure(nan).state_dict()) == json.dumps(full_restore(nan).state_dict())


def _corruptions(state):
    """Malformed and hostile variants of a valid stored state (hand-edited rows, old versions)."""
    cfg = state["config"]
    out = [
        {**state, "levels": [5.0]},
        {**state, "levels": "0123456789"},
        {**state, "levels": None},
        {**state, "levels": [*state["levels"][:-1], "x"]},
        {**state, "levels": [*state["levels"][:-1], [1.0]]},
        {k: v for k, v in state.items() if k != "levels"},
        {k: v for k, v in state.items() if k != "config"},
        {**state, "config": None},
        {**state, "config": [1, 2]},
        {**state, "config": {**cfg, "bogus": 1}},
        {**state, "config": {**cfg, 3: 1}},
        {**state, "config": {**cfg, "_restoring": False}},
        {**state, "config": {**cfg, "max_trials": "80"}},
        {**state, "config": {**cfg, "max_trials": -1}},
        {**state, "config": {**cfg, "max_trials": float("nan")}},
        {**state, "config": {**cfg, "max_trials": [80]}},
        {**state, "name": "quest"},
        {k: v for k, v in state.items() if k != "name"},
    ]
    for key in state:
        if key not in ("name", "levels", "config"):
            out += [
                {k: v for k, v in state.items() if k != key},
                {**state, key: None},
                {**state, key: "x"},
                {**state, key: [["x", "y", "z"]]},
                {**state, key: [None]},
            ]
    return out


@pytest.mark.parametrize("name,config", CASES)
def test_a_corrupt_state_fails_as_it_did_after_the_template_is_warm(name, config):
    proc = make_procedure(name, LEVELS, **config)
    proc.update(proc.next_level(), True)
    state = json.loads(json.dumps(proc.state_dict()))
    restore_procedure(copy.deepcopy(state))  # the ladder's template is warm
    for bad in _corruptions(state):
        # Both called outside any except block: CPython reports a duplicate keyword as a
        # KeyError instead of a TypeError while another exception is being handled.
        expected = outcome(lambda bad=bad: full_restore(copy.deepcopy(bad)))
        got = outcome(lambda bad=bad: restore_procedure(copy.deepcopy(bad)))
        if isinstance(expected, tuple):
            assert got == expected, bad
            if issubclass(expected[0], (ValueError, TypeError, KeyError)):  # what the progress bar catches
                assert estimates.stored_track_outlook(copy.deepcopy(bad), 1, False) == estimates.TrackOutlook(1, False)
        else:
            same_procedure(restore_procedure(copy.deepcopy(bad)), full_restore(copy.deepcopy(bad)))


def test_psi_posteriors_from_the_memo_are_bit_identical_and_the_memo_stays_bounded(monkeypatch):
    clear_caches()
    monkeypatch.setattr(bayesian, "MAX_POSTERIORS", 5)
    obs, rng = SimulatedObserver(40.0, 0.2, 0.05, 0.02), np.random.default_rng(1)
    proc = make_procedure("bayesian", LEVELS, target_sd=None, max_trials=30)
    states = []
    for _ in range(12):
        level = proc.next_level()
        proc.update(level, obs.respond(level, rng))
        states.append(json.dumps(proc.state_dict()))
    for text in states + states[::-1] + states:  # hits, prefix hits, evicted entries
        got = restore_procedure(json.loads(text))
        assert got._posterior.tobytes() == full_restore(json.loads(text))._posterior.tobytes()
        assert not got._posterior.flags.writeable  # shared: never written in place
        assert len(bayesian._posteriors) <= 5
    assert bayesian._posteriors_bytes == sum(p.nbytes for _, p in bayesian._posteriors.values())
    # A rebuilt likelihood table (another object) never picks up the old table's posteriors.
    bayesian._likelihood_table.cache_clear()
    bayesian._same_table.cache_clear()
    bayesian._prior.cache_clear()
    got = restore_procedure(json.loads(states[-1]))
    assert got._posterior.tobytes() == full_restore(json.loads(states[-1]))._posterior.tobytes()


def _session_trace(procedure: str, config: dict, n_sessions: int) -> list:
    """Whole same/different sessions through ``stages.after_answer``, tracks reloaded from JSON
    before each answer as the store does; every trial, track and counter on the way."""
    levels = [10.0, 40.0, 70.0, 100.0]
    rows = [(1, "r1", "r1", "reference", 0.0, None), (2, "r2", "r2", "reference", 0.0, None)]
    for ref in ("r1", "r2"):
        for fam in ("noise", "mp3"):
            rows += [(len(rows) + 1, f"{ref}{fam}{v}", ref, fam, v, None) for v in levels]
    ladders = Ladders.from_rows(rows, "reference")
    flow = FlowConfig.from_dict({"practice_trials": 0, "catch_rate": 0.1})
    est = estimates.study_estimate(
        procedure, config, flow, {k: [v for v, _ in r] for k, r in ladders.rungs.items()}, "same_different", 0.5
    )
    study = StudyData(flow, SAME_DIFFERENT, ladders, est)
    trace = []
    for s in range(n_sessions):
        rng = np.random.default_rng(s)
        obs = SimulatedObserver(threshold=55.0, slope=0.3, false_alarm=0.05, lapse=0.03)
        plans = SAME_DIFFERENT.plan_tracks(s, ladders, {}, flow, procedure, config)
        tracks = [TrackRow(i, p.reference, p.family, p.procedure_state, 0, p.finished) for i, p in enumerate(plans)]
        session = FlowSession(id=s, seed=1000 + s, stage="instructions", tracks=tracks)
        trial = stages.enter(session, "main", study).new_trial
        while trial is not None:
            v = trial.values
            open_trial = OpenTrial(
                0,
                v["trial_index"],
                v["kind"],
                "",
                False,
                v["spec"],
                [],
                v["expected_answer"],
                v["track_id"],
                v["level"],
            )
            answer = v["expected_answer"]
            if v["kind"] == "main":
                answer = "different" if obs.respond(v["level"], rng) else "same"
            session.tracks = [
                TrackRow(t.id, t.reference, t.family, json.loads(json.dumps(t.procedure_state)), t.n_trials, t.finished)
                for t in session.tracks or []
            ]
            trial = stages.after_answer(session, open_trial, answer, None, study).new_trial
            trace.append(
                json.dumps(
                    [
                        None if trial is None else {k: x for k, x in trial.values.items() if k != "nonce"},
                        [[t.procedure_state, t.n_trials, t.finished, t.estimate] for t in session.tracks],
                        session.schedule_state,
                        session.stage,
                    ],
                    sort_keys=True,
                )
            )
    return trace


@pytest.mark.parametrize(
    "procedure,config,n_sessions",
    [("staircase", {}, 3), ("bayesian", {"max_trials": 12}, 1), ("binary_search", {"passes": 2}, 3)],
)
def test_sessions_run_the_same_with_and_without_the_caches(monkeypatch, procedure, config, n_sessions):
    clear_caches()
    warm = _session_trace(procedure, config, n_sessions)
    monkeypatch.setattr(base, "_template_key", lambda *args: None)
    monkeypatch.setattr(bayesian, "_remember_posterior", lambda *args: None)
    monkeypatch.setattr(estimates, "_outlook_key", lambda *args: None)
    clear_caches()
    assert _session_trace(procedure, config, n_sessions) == warm


@pytest.mark.parametrize("name,config", CASES)
def test_remembered_outlooks_are_the_outlooks_of_their_states(monkeypatch, name, config):
    """``stored_track_outlook`` remembers an outlook by the state's pickle, n_trials and
    look_ahead: along a track's walk every answer's outlook (with and without look-ahead,
    asked twice: the second from the memo) is the one computed from the state afresh."""
    clear_caches()
    observer = SimulatedObserver(threshold=42.0, slope=0.15, false_alarm=0.05, lapse=0.02)
    rng = np.random.default_rng(3)
    proc = make_procedure(name, LEVELS, **config)
    states = []
    for n in range(30):
        states.append((json.loads(json.dumps(proc.state_dict())), n))
        level = proc.next_level()
        if level is None:
            break
        proc.update(level, observer.respond(level, rng))
    remembered = [
        estimates.stored_track_outlook(copy.deepcopy(state), n, False, look_ahead)
        for _ in range(2)
        for state, n in states
        for look_ahead in (False, True)
    ]
    assert len(estimates._outlooks) == 2 * len(states)
    monkeypatch.setattr(estimates, "_outlook_key", lambda *args: None)
    fresh = [
        estimates.stored_track_outlook(copy.deepcopy(state), n, False, look_ahead)
        for _ in range(2)
        for state, n in states
        for look_ahead in (False, True)
    ]
    assert remembered == fresh


def test_the_outlook_memo_tells_apart_equal_looking_states_and_stays_bounded(monkeypatch):
    clear_caches()
    as_floats = make_procedure("staircase", [0.0, 10.0, 20.0, 30.0], start_level=20.0).state_dict()
    as_ints = {**as_floats, "levels": [0, 10, 20, 30]}
    assert estimates._outlook_key(as_floats, 0, False) != estimates._outlook_key(as_ints, 0, False)
    assert estimates._outlook_key(as_floats, 0, False) != estimates._outlook_key(as_floats, 1, False)
    assert estimates._outlook_key(as_floats, 0, False) != estimates._outlook_key(as_floats, 0, True)
    with_zero = {**as_floats, "levels": [0.0, 10.0, 20.0, 30.0]}
    assert estimates._outlook_key(with_zero, 0, False) != estimates._outlook_key(
        {**with_zero, "levels": [-0.0, 10.0, 20.0, 30.0]}, 0, False
    )
    # a state that does not pickle is not remembered
    assert estimates._outlook_key({**as_floats, "extra": lambda: None}, 0, False) is None
    monkeypatch.setattr(estimates, "OUTLOOK_CACHE_MAX", 5)
    for n in range(12):
        estimates.stored_track_outlook(as_floats, n, False)
    assert len(estimates._outlooks) == 5
    assert estimates._outlook_key(as_floats, 11, False) in estimates._outlooks  # the newest kept
    clear_caches()


def test_the_outlook_memo_is_bounded_in_bytes_and_can_be_turned_off(monkeypatch):
    """Long Psi histories make long keys (31 KB for 2000 answers on 100 levels): the memo
    keeps at most ``OUTLOOK_CACHE_BYTES`` of them; ``OUTLOOK_CACHE_MAX`` 0 keeps none."""
    clear_caches()
    state = make_procedure("staircase", [0.0, 10.0, 20.0, 30.0], start_level=20.0).state_dict()
    size = len(estimates._outlook_key(state, 0, False)[0])
    monkeypatch.setattr(estimates, "OUTLOOK_CACHE_BYTES", 3 * size + size // 2)
    for n in range(10):
        assert estimates.stored_track_outlook(state, n, False) == estimates.track_outlook(
            restore_procedure(dict(state)), n, False
        )
    assert len(estimates._outlooks) == 3
    assert estimates._outlooks_bytes == sum(len(key[0]) for key in estimates._outlooks)
    assert estimates._outlook_key(state, 9, False) in estimates._outlooks  # the newest kept
    clear_caches()
    monkeypatch.setattr(estimates, "OUTLOOK_CACHE_MAX", 0)
    assert estimates.stored_track_outlook(state, 1, False) == estimates.track_outlook(
        restore_procedure(dict(state)), 1, False
    )
    assert estimates._outlooks == {}
    clear_caches()
