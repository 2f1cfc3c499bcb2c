"""The participant's progress bar never jumps to "done" by more than one step (issue 17).

The page moves the bar one step of the server's trials-left figure per answer, so its
last move is ``max(1, figure at the last main trial)`` steps. The figure is exact near
the end: the procedures prove bounds on a track's remaining trials
(``Procedure.trials_left_bounds``, looking one answer ahead on a copy), and
``estimates.session_remaining`` turns them into the session's figure. Measured over
seeded simulated sessions of every procedure (benchmarks/progress_jump.py runs 200).
"""

from __future__ import annotations

import statistics

import numpy as np
import pytest

from listening_test.estimates import (
    TrackOutlook,
    _open_trial_is_catch,
    final_jump_steps,
    session_remaining,
    simulate_session_progress,
    stored_track_outlook,
    study_estimate,
    track_outlook,
    track_remaining,
)
from listening_test.flow_config import FlowConfig
from listening_test.procedures import make_procedure

from .lt_helpers import expected_left_through_main, participant_at

LEVELS = [float(v) for v in np.linspace(0.0, 100.0, 11)]


def _walk(proc, answers):
    for answer in answers:
        proc.update(proc.next_level(), answer)
    return proc


# --- the procedures' own bounds -----------------------------------------------------


def test_bounds_of_a_fresh_and_a_finished_track():
    proc = make_procedure("staircase", LEVELS)
    assert proc.trials_left_bounds() == (2, 80)  # no answer can end it yet; max_trials caps it
    assert proc.trials_left_bounds(look_ahead=False) == (1, 80)
    proc = _walk(make_procedure("staircase", LEVELS, max_trials=3, max_reversals=None), [True] * 3)
    assert proc.finished and proc.trials_left_bounds() == (0, 0)


def test_a_track_that_either_answer_ends_has_exactly_one_left_and_is_untouched():
    for name, config in (
        ("staircase", {"max_trials": 5, "max_reversals": None}),
        ("bayesian", {"max_trials": 5, "min_trials": 2, "target_sd": None}),
        ("binary_search", {"max_trials": 5, "passes": 3}),
    ):
        proc = _walk(make_procedure(name, LEVELS, **config), [True, False, True, False])
        before = proc.state_dict()
        assert proc.trials_left_bounds() == (1, 1), name
        assert proc.state_dict() == before, f"{name}: the look-ahead changed the track"
    # Binary search: a bracket of two rungs in the last pass ends after either answer.
    proc = make_procedure("binary_search", [0.0, 10.0, 20.0])
    assert proc.trials_left_bounds() == (1, 1)


def test_a_track_that_one_answer_can_end_has_at_least_one_left():
    # Staircase one reversal short of its criterion, last move down: a "same" reverses
    # (and ends it), a "different" does not.
    proc = _walk(
        make_procedure(
            "staircase", LEVELS, max_reversals=2, shrink_at=[], steps=[1], estimate_reversals=1, max_trials=50
        ),
        [False, True, True],
    )
    assert len(proc.reversals) == 1 and not proc.finished
    assert proc.trials_left_bounds() == (1, 47)
    # Binary search with a bracket of three rungs in its only pass: one answer ends it.
    proc = make_procedure("binary_search", [0.0, 10.0, 20.0, 30.0])
    assert proc.trials_left_bounds() == (1, 2)


# --- the session's figure -----------------------------------------------------------

EST = {"track_lengths": {"10": 50, "30": 50}, "remaining_by_signal": {"s1": 6.0}, "catch_rate": 0.2}


def test_track_remaining_is_the_simulated_expectation_within_the_proven_bounds():
    assert track_remaining(EST, TrackOutlook(5, False, None, 1, None)) == 15.0  # E[L - 5]
    assert track_remaining(EST, TrackOutlook(5, False, None, 1, 3)) == 3.0  # max_trials - n
    assert track_remaining(EST, TrackOutlook(5, False, "s1", 1, 1)) == 1.0  # either answer ends it
    assert track_remaining(EST, TrackOutlook(29, False, None, 2, None)) == 2.0  # no answer ends it
    assert track_remaining(EST, TrackOutlook(29, True, None, 0, 0)) == 0.0


def test_session_figure_is_one_when_the_open_answer_can_end_the_session():
    last = TrackOutlook(12, False, "s1", 1, 48)
    done = TrackOutlook(20, True, None, 0, 0)
    assert session_remaining(EST, [done, last]) == 1.0
    assert session_remaining(EST, [done, last], open_is_catch=False) == 1.0
    # An open catch trial comes before that last adaptive trial: at least two.
    assert session_remaining(EST, [done, last], open_is_catch=True) >= 2.0
    # Two open tracks: the session cannot end with this answer.
    assert session_remaining(EST, [last, last]) >= 2.0
    # The cap ends the session with the open trial whatever the tracks say.
    assert session_remaining(EST, [last, last], cap_left=1) == 1.0
    assert session_remaining(EST, [TrackOutlook(0, False, None, 2, None)] * 2, cap_left=7) == 7.0
    assert session_remaining(None, [last]) is None


def test_catch_trials_are_counted_only_between_adaptive_trials():
    one = TrackOutlook(0, False, None, 2, 3)  # exactly 2..3 left, clamped to 3
    left = session_remaining({"track_lengths": {"40": 1}, "catch_rate": 0.2}, [one])
    assert left == pytest.approx(3 + 0.25 * 2)  # catches before the 2nd and 3rd, none after the last


def test_stored_outlooks_read_every_kind_of_track():
    ab = stored_track_outlook({"name": "paired", "repeats": 3, "a_first": [True, False, True]}, 1, False)
    assert (ab.fewest, ab.most) == (2, 2)  # a fixed number of presentations: exact
    bad = stored_track_outlook({"name": "nope"}, 4, False)
    assert bad.fewest is None and not bad.finished
    proc = _walk(make_procedure("staircase", LEVELS, max_trials=5, max_reversals=None), [True] * 4)
    live = stored_track_outlook(proc.state_dict(), 4, False, look_ahead=True)
    assert live == track_outlook(proc, 4, False, look_ahead=True) and (live.fewest, live.most) == (1, 1)


def test_open_trial_kind_from_the_session_counters():
    class T:
        def __init__(self, n):
            self.n_trials = n

    tracks = [T(3), T(2)]  # 5 adaptive trials answered
    # 8 served, the open one included: 2 catches leave 6 adaptive, one more than answered.
    assert _open_trial_is_catch({"served_in_stage": 8, "catches": {"identical": 2}}, tracks) is False
    assert _open_trial_is_catch({"served_in_stage": 8, "catches": {"identical": 1, "obvious": 1}}, tracks) is False
    assert _open_trial_is_catch({"served_in_stage": 8, "catches": {"identical": 2, "obvious": 1}}, tracks) is True
    assert _open_trial_is_catch(None, tracks) is None


# --- measured over simulated sessions -----------------------------------------------

CASES = {
    "demo bayesian": (
        "bayesian",
        {"max_trials": 25},
        {"references_per_participant": 1, "families_per_participant": 2, "catch_rate": 0.1},
        2,
        12,
    ),
    "default bayesian": ("bayesian", {}, {}, 4, 6),
    "staircase": ("staircase", {}, {}, 4, 25),
    "binary_search": ("binary_search", {"passes": 2}, {"catch_rate": 0.2}, 4, 40),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_the_last_move_of_the_bar_is_at_most_one_step(name):
    procedure, config, flow_dict, n_tracks, n_sessions = CASES[name]
    flow = FlowConfig.from_dict(flow_dict)
    ladders = {(f"r{i // 2}", f"f{i % 2}"): LEVELS for i in range(n_tracks)}
    estimate = study_estimate(procedure, config, flow, ladders, "same_different", clip_seconds=2.0, seed=3)
    sessions = simulate_session_progress(estimate, procedure, config, flow, [LEVELS] * n_tracks, n_sessions, seed=11)
    after = [final_jump_steps(s["shown"]) for s in sessions]
    before = [final_jump_steps(s["unbounded"]) for s in sessions]
    assert None not in after and max(after) <= 1.0, after
    assert statistics.median(before) > 1.5  # the figure without the bounds did jump (the fault fixed)
    # Not bought by saying "last" early: rarely <= 1 while more trials followed, and no
    # less accurate along the way than the figure without the bounds.
    figures = [(v, u, a) for s in sessions for v, u, a in zip(s["shown"], s["unbounded"], s["actual"]) if v is not None]
    early = sum(1 for v, _, a in figures if v <= 1.0 and a > 1)
    assert early <= 0.02 * len(figures)
    err_after = np.mean([abs(v - a) / a for v, _, a in figures])
    err_before = np.mean([abs(u - a) / a for _, u, a in figures])
    assert err_after <= err_before + 0.01


def test_the_server_reports_one_trial_left_on_the_last_main_trial(app, client):
    seen = expected_left_through_main(app, client)
    figures = [x for x in seen if x is not None]
    assert len(figures) >= 3 and all(x >= 1 for x in figures)
    assert seen[-1] == 1.0  # the bar's last move is one step


def test_an_ab_session_counts_its_fixed_design_exactly(tmp_path, template_db):
    import shutil

    from listening_test.db import db
    from listening_test.manifest_import import create_experiment

    from .lt_helpers import AB_FLOW_CONFIG, make_app, write_ab_set

    path = tmp_path / "ab.sqlite"
    shutil.copy(template_db, path)
    app = make_app(f"sqlite:///{path}")
    manifest = write_ab_set(tmp_path / "set", n_items=4)
    with app.app_context():
        create_experiment(
            db.session,
            manifest,
            name="demo",
            test_type="ab_preference",
            config={**AB_FLOW_CONFIG, "catch_rate": 0.0},
            procedure_config={"repeats": 2},
        )
        db.session.commit()
    try:
        p = participant_at(app, "main")
        seen = []
        while p.state["stage"] == "main":
            seen.append(p.state["progress"]["expected_left"])
            p.answer("A")
        # Without catch trials an A/B session's trials left are known exactly after each answer.
        n = len(seen)
        assert seen[1:] == [float(n - i) for i in range(1, n)]
    finally:
        with app.app_context():
            db.engine.dispose()


def test_session_trials_left_uses_the_session_counters_when_given(app):
    from types import SimpleNamespace

    from sqlalchemy import select

    from listening_test import store
    from listening_test.db import db
    from listening_test.models import Experiment

    with app.app_context():
        eid = db.session.scalar(select(Experiment.id).where(Experiment.slug == "demo"))
        levels = [10.0, 40.0, 70.0, 100.0]
        state = make_procedure("staircase", levels, max_trials=4, max_reversals=None).state_dict()
        tracks = [SimpleNamespace(n_trials=0, finished=False, procedure_state=state) for _ in range(2)]
        without = store.session_trials_left(eid, tracks)
        assert without is not None and without > 2
        # 2 adaptive trials served, the open one adaptive; the cap (max_main_trials 400) far away.
        assert store.session_trials_left(eid, tracks, {"served_in_stage": 1, "catches": {}}) == without
        # The open trial is a catch: one more than without the counters.
        assert store.session_trials_left(eid, tracks, {"served_in_stage": 1, "catches": {"obvious": 1}}) == round(
            without + 1, 1
        )
        # The cap allows only the open trial: the session ends with it.
        assert store.session_trials_left(eid, tracks, {"served_in_stage": 400, "catches": {}}) == 1.0
