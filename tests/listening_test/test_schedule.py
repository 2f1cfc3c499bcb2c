"""The scheduling policy (``procedures.schedule``) on its own, with the procedures, and as the
web layer serves it in a real session."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select

from listening_test.db import db
from listening_test.models import Trial
from listening_test.procedures import make_procedure
from listening_test.procedures.observer import SimulatedObserver
from listening_test.procedures.schedule import (
    catch_due,
    catch_kind,
    catch_shares,
    choose_track,
    next_catch,
    phase_finished,
    validate_catch_config,
)
from tests.listening_test.lt_helpers import Participant, add_demo_experiment, template_copy_app

LEVELS = [float(v) for v in np.linspace(0, 100, 11)]
PROCEDURES_DIR = Path(__file__).resolve().parents[2] / "listening_test" / "procedures"


# --- choose_track ------------------------------------------------------------------


def test_choose_track_takes_a_least_served_track_and_avoids_the_last_one():
    rng = np.random.default_rng(0)
    assert choose_track([3, 1, 2], rng) == 1
    assert {choose_track([2, 1, 1, 5], np.random.default_rng(s)) for s in range(40)} == {1, 2}
    # the track just served loses a tie...
    assert all(choose_track([1, 1], np.random.default_rng(s), avoid=0) == 1 for s in range(20))
    # ...but not when it is the only one that far behind, or the only one open
    assert choose_track([0, 1], rng, avoid=0) == 0
    assert choose_track([7], rng, avoid=0) == 0


def test_choose_track_bad_input():
    with pytest.raises(ValueError, match="at least one open track"):
        choose_track([], np.random.default_rng(0))
    with pytest.raises(ValueError, match="Generator"):
        choose_track([1, 2], 42)


# --- catch trials ------------------------------------------------------------------


def run_catches(n: int, rate: float, shares: dict[str, float], seed: int) -> list[str | None]:
    rng = np.random.default_rng(seed)
    done: dict[str, int] = {}
    out = []
    for i in range(n):
        kind = next_catch(i, done, rate, shares, rng)
        if kind is not None:
            done[kind] = done.get(kind, 0) + 1
        out.append(kind)
    return out


@pytest.mark.parametrize("rate", [0.05, 0.1, 0.2, 0.25, 0.5, 0.9])
def test_catch_count_stays_within_one_of_rate_times_trials_at_every_point(rate):
    for seed in range(30):
        seq = run_catches(120, rate, catch_shares(0.5), seed)
        count = 0
        for n, kind in enumerate(seq, start=1):
            count += kind is not None
            assert abs(count - rate * n) <= 1.0 + 1e-9, (seed, n, count)
        # the two kinds alternate: never more than one apart
        kinds = [k for k in seq if k]
        for n in range(1, len(kinds) + 1):
            assert abs(kinds[:n].count("identical") - kinds[:n].count("obvious")) <= 1


def test_a_short_session_always_gets_its_catch_trials():
    # The old factory drew each trial independently: 8 trials at 0.2 had P=17% of no catch.
    for seed in range(200):
        assert sum(k is not None for k in run_catches(8, 0.2, catch_shares(0.5), seed)) >= 1
        assert sum(k is not None for k in run_catches(10, 0.1, catch_shares(0.5), seed)) in (0, 1, 2)


def test_catches_are_random_not_periodic_and_deterministic_given_the_rng():
    a = run_catches(60, 0.2, catch_shares(0.5), 1)
    assert a == run_catches(60, 0.2, catch_shares(0.5), 1)
    assert a != run_catches(60, 0.2, catch_shares(0.5), 2)
    positions = {tuple(i for i, k in enumerate(run_catches(30, 0.2, catch_shares(0.5), s)) if k) for s in range(20)}
    assert len(positions) > 10


@pytest.mark.parametrize("share,expected", [(0.0, {"identical"}), (1.0, {"obvious"})])
def test_a_zero_share_kind_is_never_served(share, expected):
    assert {k for k in run_catches(50, 0.3, catch_shares(share), 0) if k} == expected


def test_unequal_shares_are_kept_within_one():
    shares = catch_shares(0.25)
    kinds = [k for k in run_catches(400, 0.3, shares, 5) if k]
    for n in range(1, len(kinds) + 1):
        assert abs(kinds[:n].count("obvious") - 0.25 * n) <= 1.0 + 1e-9


def test_catch_rate_zero_and_the_rules_pieces():
    assert run_catches(100, 0.0, catch_shares(0.5), 0) == [None] * 100
    rng = np.random.default_rng(0)
    assert catch_due(4, 0, 0.2, rng) is True  # 5th trial, none yet: forced
    assert catch_due(0, 1, 0.2, rng) is False  # already ahead: refused
    assert catch_kind({"identical": 2, "obvious": 1}, catch_shares(0.5), rng) == "obvious"


@pytest.mark.parametrize(
    "rate,shares,match",
    [
        (1.0, {"a": 1.0}, "catch rate"),
        (-0.1, {"a": 1.0}, "catch rate"),
        (0.1, {"a": -0.5, "b": 1.5}, "non-negative"),
        (0.1, {"a": 0.5, "b": 0.2}, "sum to 1"),
    ],
)
def test_bad_catch_config(rate, shares, match):
    with pytest.raises(ValueError, match=match):
        validate_catch_config(rate, shares)
    with pytest.raises(ValueError, match=match):
        next_catch(0, {}, rate, shares, np.random.default_rng(0))
    with pytest.raises(ValueError, match="obvious_share"):
        catch_shares(1.5)


def test_phase_finished():
    assert phase_finished(0, 3, None) and phase_finished(2, 10, 10)
    assert not phase_finished(2, 9, 10) and not phase_finished(1, 10_000, None)


# --- the policy driving real procedures (what the web layer does, without it) --------


def simulate(procedure: str, config: dict, rate: float, seed: int, n_tracks: int = 6, max_trials=None):
    """A session loop like flow.trials.main_trial's, on plain objects."""
    rng = np.random.default_rng(seed)
    answer_rng = np.random.default_rng(seed + 1000)
    procs = [make_procedure(procedure, LEVELS, **config) for _ in range(n_tracks)]
    observers = [
        SimulatedObserver(threshold=20 + 10 * i, slope=0.2, false_alarm=0.05, lapse=0.02) for i in range(n_tracks)
    ]
    counts = [0] * n_tracks
    catches: dict[str, int] = {}
    last, served = None, []
    while True:
        open_ids = [i for i, p in enumerate(procs) if not p.finished]
        if phase_finished(len(open_ids), len(served), max_trials):
            return procs, counts, served
        kind = next_catch(len(served), catches, rate, catch_shares(0.5), rng)
        if kind is not None:
            catches[kind] = catches.get(kind, 0) + 1
            served.append(("catch", kind))
            continue
        pick = open_ids[
            choose_track([counts[i] for i in open_ids], rng, avoid=open_ids.index(last) if last in open_ids else None)
        ]
        assert counts[pick] == min(counts[i] for i in open_ids)  # evenly interleaved
        level = procs[pick].next_level()
        procs[pick].update(level, observers[pick].respond(level, answer_rng))
        counts[pick] += 1
        last = pick
        served.append(("track", pick))


@pytest.mark.parametrize(
    "procedure,config",
    [
        ("staircase", {"max_trials": 20, "max_reversals": 6}),
        ("bayesian", {"max_trials": 15}),
        ("binary_search", {"passes": 2}),
    ],
)
def test_every_track_runs_to_its_end_interleaved_with_catches(procedure, config):
    procs, counts, served = simulate(procedure, config, rate=0.15, seed=3)
    assert all(p.finished for p in procs)
    tracks = [i for kind, i in served if kind == "track"]
    assert sorted(tracks[:6]) == list(range(6))  # every track once before any twice
    n_catch = sum(kind == "catch" for kind, _ in served)
    assert abs(n_catch - 0.15 * len(served)) <= 1
    assert sum(counts) == len(tracks)


def test_max_trials_caps_the_phase_catches_included():
    procs, _, served = simulate("staircase", {"max_trials": 50, "max_reversals": None}, 0.2, seed=1, max_trials=25)
    assert len(served) == 25 and not all(p.finished for p in procs)


def test_the_policy_is_test_type_agnostic_ab_preference():
    # An A/B preference session brings its own catch kinds and its own tracks (item, system pair);
    # the same functions schedule it.
    shares = {"clean_vs_anchor": 0.7, "identical_systems": 0.3}
    rng = np.random.default_rng(0)
    counts = {"utt1:demucs|ours": 0, "utt2:demucs|ours": 0}
    done: dict[str, int] = {}
    for i in range(40):
        kind = next_catch(i, done, 0.25, shares, rng)
        if kind:
            done[kind] = done.get(kind, 0) + 1
        else:
            keys = list(counts)
            counts[keys[choose_track(list(counts.values()), rng)]] += 1
    assert set(done) == set(shares) and abs(sum(done.values()) - 10) <= 1
    assert abs(counts["utt1:demucs|ours"] - counts["utt2:demucs|ours"]) <= 1


def test_procedures_package_imports_neither_flask_nor_the_database():
    for path in PROCEDURES_DIR.glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [("." * node.level) + (node.module or "")]
            else:
                continue
            for name in names:
                root = name.split(".")[0]
                assert root not in {
                    "flask",
                    "sqlalchemy",
                    "flask_sqlalchemy",
                    "psycopg",
                    "sqlite3",
                    "listening_test",
                }, (path.name, name)
                assert not name.startswith(".."), (path.name, name)  # nothing from the web layer


# --- served by the web layer -------------------------------------------------------

CATCH_FLOW = {
    "references_per_participant": 2,
    "families_per_participant": 2,
    "catch_rate": 0.25,
    "practice_trials": 0,
    "screening": {"tests": []},
}


@pytest.fixture
def catch_app(tmp_path, template_db, manifest_path):
    app = template_copy_app(template_db, tmp_path / "catch.sqlite")
    with app.app_context():
        add_demo_experiment(manifest_path, {"max_trials": 6, "max_reversals": None}, CATCH_FLOW)
    yield app
    with app.app_context():
        db.engine.dispose()


@pytest.mark.parametrize("worker", ["W1", "W2", "W3"])
def test_the_web_layer_serves_catch_trials_at_the_configured_rate(catch_app, worker):
    client = catch_app.test_client()
    p = Participant(
        catch_app,
        client,
        {"workerId": worker, "assignmentId": "A" + worker, "hitId": "H", "turkSubmitTo": "https://www.mturk.com"},
    )
    p.land()
    p.to_stage("main")
    seen_ids = set()
    while p.state["stage"] == "main":
        assert p.state["trial"]["id"] not in seen_ids  # never served twice
        seen_ids.add(p.state["trial"]["id"])
        p.answer()
    assert p.state["stage"] == "complete"
    with catch_app.app_context():
        trials = db.session.scalars(select(Trial).order_by(Trial.trial_index)).all()
    main = [t for t in trials if t.kind != "screening" and t.kind != "practice"]
    assert len(main) == len(seen_ids)
    adaptive = [t for t in main if t.kind == "main"]
    assert len(adaptive) == 4 * 6  # 4 tracks x max_trials 6, each run to its end
    catches = 0
    for n, t in enumerate(main, start=1):
        catches += t.kind.startswith("catch_")
        assert abs(catches - 0.25 * n) <= 1.0 + 1e-9, (n, catches)
    kinds = [t.kind for t in main if t.kind.startswith("catch_")]
    assert abs(kinds.count("catch_identical") - kinds.count("catch_obvious")) <= 1
    for t in main:
        if t.kind == "catch_identical":
            assert t.expected_answer == "same" and t.test_stimulus_id == t.reference_stimulus_id
        elif t.kind == "catch_obvious":
            assert t.expected_answer == "different" and t.level == 100.0
    # tracks interleave evenly: a main trial's track never runs ahead of another by two
    served: dict[int, int] = {}
    for t in adaptive:
        served[t.track_id] = served.get(t.track_id, 0) + 1
        assert max(served.values()) - min(served.get(k, 0) for k in {a.track_id for a in adaptive}) <= 1
