"""The session scheduler: interleaving, catch trials, determinism, restore, extensibility."""
from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from listening_test.procedures import make_procedure
from listening_test.procedures.observer import SimulatedObserver
from listening_test.procedures.schedule import (
    TRACK_KINDS,
    SameDifferentTrack,
    SessionSchedule,
    Trial,
    same_different_session,
)

LEVELS = [float(v) for v in np.linspace(0, 100, 11)]
SPECS = [(f"ref{r}", fam, LEVELS) for r in range(3) for fam in ("noise", "mp3")]  # 6 tracks


def make(seed=0, procedure="staircase", config=None, **kw):
    config = {"max_trials": 20, "max_reversals": 6} if config is None and procedure == "staircase" else config
    return same_different_session(SPECS, procedure, config, np.random.default_rng(seed), **kw)


def observer_for(trial: Trial) -> SimulatedObserver:
    # Thresholds differ per track so the tracks finish at different times.
    return SimulatedObserver(threshold=20 + 10 * (hash(trial.track_id) % 5), slope=0.2, false_alarm=0.05, lapse=0.02)


def answer(trial: Trial, rng: np.random.Generator) -> bool:
    if trial.catch == "identical":
        return bool(rng.random() < 0.05)
    return observer_for(trial).respond(100.0 if trial.level is None else trial.level, rng)


def play(sched: SessionSchedule, rng: np.random.Generator, limit: int = 10_000) -> list[Trial]:
    trials = []
    while (trial := sched.next_trial()) is not None and len(trials) < limit:
        if trial.catch is None:
            assert not sched.tracks[trial.track_id].finished  # never serve a finished track
        trials.append(trial)
        sched.record(trial.index, answer(trial, rng))
    return trials


def test_session_runs_every_track_to_its_end_and_never_serves_a_finished_one():
    sched = make(seed=1, catch_rate=0.1)
    trials = play(sched, np.random.default_rng(1))
    assert sched.finished and sched.next_trial() is None
    assert all(t.finished for t in sched.tracks.values())
    adaptive = [t for t in trials if t.catch is None]
    assert len(adaptive) == sum(t.n_trials for t in sched.tracks.values())
    assert [t.index for t in trials] == list(range(len(trials)))
    assert all(t.kind == "same_different" and t.stimulus["reference"] in t.track_id for t in trials)
    assert sched.progress() == (len(trials), len(trials))


def test_tracks_are_interleaved_evenly():
    sched = make(seed=2, catch_rate=0.0)
    rng = np.random.default_rng(2)
    previous = None
    served = []
    while (t := sched.next_trial()) is not None:
        open_ids = [k for k, tr in sched.tracks.items() if not tr.finished]
        # the least-served open track goes next...
        assert sched.tracks[t.track_id].n_trials == min(sched.tracks[k].n_trials for k in open_ids)
        # ...and the same pair is never served back to back while another is open and as far behind
        if t.track_id == previous:
            behind = [k for k in open_ids if sched.tracks[k].n_trials == sched.tracks[t.track_id].n_trials]
            assert behind == [t.track_id]
        served.append(t.track_id)
        previous = t.track_id
        sched.record(t.index, answer(t, rng))
    assert sorted(served[:6]) == sorted(sched.tracks)  # every track once before any twice


@pytest.mark.parametrize("rate", [0.1, 0.25])
def test_catch_trials_come_at_the_configured_rate(rate):
    sched = make(seed=3, catch_rate=rate, config={"max_trials": 40, "max_reversals": None})
    trials = play(sched, np.random.default_rng(3))
    catches = [t for t in trials if t.catch]
    # The scheduler keeps the count within one of rate × trials at every point of the session.
    for n in range(1, len(trials) + 1):
        assert abs(sum(1 for t in trials[:n] if t.catch) - rate * n) <= 1.0 + 1e-9
    assert abs(len(catches) - rate * len(trials)) <= 1
    kinds = [t.catch for t in catches]
    assert abs(kinds.count("identical") - kinds.count("obvious")) <= 1
    for t in catches:
        if t.catch == "identical":
            assert t.level is None and t.expected is False
        else:
            assert t.level == 100.0 and t.expected is True
    summary = sched.catch_summary()
    assert summary["identical"]["served"] + summary["obvious"]["served"] == len(catches)
    assert 0 < summary["obvious"]["correct"] <= summary["obvious"]["served"]


def test_catch_rate_zero_and_catch_outcome():
    sched = make(seed=4, catch_rate=0.0)
    assert not any(t.catch for t in play(sched, np.random.default_rng(4)))
    sched = make(seed=4, catch_rate=0.5, catch_kinds=["identical"])
    while (trial := sched.next_trial()).catch is None:
        sched.record(trial.index, True)
    assert sched.record(trial.index, True) is False  # "different" to an identical pair fails
    assert sched.catch_summary() == {"identical": {"served": 1, "correct": 0}}


def test_deterministic_given_seed_and_different_across_seeds():
    def sequence(seed):
        return [(t.track_id, t.level, t.catch) for t in play(make(seed=seed, catch_rate=0.15), np.random.default_rng(99))]

    assert sequence(5) == sequence(5)
    assert sequence(5) != sequence(6)


@pytest.mark.parametrize("procedure,config", [("staircase", None), ("bayesian", {"max_trials": 15}), ("binary_search", {"passes": 2})])
@pytest.mark.parametrize("pending", [False, True])
def test_state_round_trip_mid_session_continues_identically(procedure, config, pending):
    a = make(seed=7, procedure=procedure, config=config, catch_rate=0.2)
    rng = np.random.default_rng(7)
    for _ in range(17):
        t = a.next_trial()
        a.record(t.index, answer(t, rng))
    if pending:
        a.next_trial()  # a trial served but not answered: a reload must get the same one
    b = SessionSchedule.from_state(json.loads(json.dumps(a.state_dict())))
    assert b.state_dict() == a.state_dict()
    rest_a = play(a, np.random.default_rng(8))
    rest_b = play(b, np.random.default_rng(8))
    assert rest_a == rest_b and len(rest_a) > 0
    assert a.state_dict() == b.state_dict()


def test_pending_trial_is_stable_and_stale_answers_change_nothing():
    sched = make(seed=8, catch_rate=0.1)
    t = sched.next_trial()
    assert sched.next_trial() == t  # reload: same trial
    before = json.dumps(sched.state_dict())
    for bad_index in (t.index + 1, t.index - 1):
        with pytest.raises(ValueError, match="not the pending trial"):
            sched.record(bad_index, True)
    with pytest.raises(ValueError, match="must be a bool"):
        sched.record(t.index, "different")
    assert json.dumps(sched.state_dict()) == before
    sched.record(t.index, False)
    with pytest.raises(ValueError, match="pending: None"):
        sched.record(t.index, False)  # a duplicate submit is the caller's to make idempotent


def test_max_trials_cap_and_progress():
    sched = make(seed=9, catch_rate=0.1, max_trials=25)
    rng = np.random.default_rng(9)
    seen = []
    while (t := sched.next_trial()) is not None:
        done, expected = sched.progress()
        assert done == t.index and expected > done and expected <= 25
        seen.append(expected)
        sched.record(t.index, answer(t, rng))
    assert sched.n_trials == 25 and sched.finished and sched.progress() == (25, 25)
    assert not all(tr.finished for tr in sched.tracks.values())
    assert all(b <= a for a, b in zip(seen, seen[1:]))  # the expected total never grows


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(catch_rate=1.0), "catch_rate"),
        (dict(catch_rate=-0.1), "catch_rate"),
        (dict(catch_kinds=["loud"]), "catch kind 'loud'"),
        (dict(catch_kinds=[]), "at least one catch kind"),
        (dict(max_trials=0), "max_trials"),
    ],
)
def test_bad_config(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make(**kwargs)


def test_bad_tracks_and_rng():
    proc = make_procedure("staircase", LEVELS)
    track = SameDifferentTrack("a", "ref", "noise", proc)
    with pytest.raises(ValueError, match="at least one track"):
        SessionSchedule([], np.random.default_rng(0))
    with pytest.raises(ValueError, match="unique"):
        SessionSchedule([track, SameDifferentTrack("a", "ref2", "noise", make_procedure("staircase", LEVELS))], np.random.default_rng(0))
    with pytest.raises(ValueError, match="Generator"):
        SessionSchedule([track], 42)
    state = SessionSchedule([track], np.random.default_rng(0)).state_dict()
    state["tracks"][0]["kind"] = "mushra"
    with pytest.raises(ValueError, match="unknown track kind 'mushra'"):
        SessionSchedule.from_state(state)


class PreferenceTrack:
    """A stand-in A/B preference track ("which of two systems sounds closer to clean?"),
    written only against the Track protocol: the scheduler needs no change to serve it."""

    kind = "ab_preference"
    catch_kinds = ("obvious",)

    def __init__(self, track_id: str, item: str, systems: list[str], answers: list[str] | None = None):
        self.track_id, self.item, self.systems, self.answers = track_id, item, systems, list(answers or [])

    @property
    def finished(self) -> bool:
        return len(self.answers) >= 3

    @property
    def n_trials(self) -> int:
        return len(self.answers)

    def remaining_trials(self) -> int:
        return 3 - len(self.answers)

    def propose(self) -> tuple[float | None, dict[str, Any]]:
        return None, {"item": self.item, "a": self.systems[0], "b": self.systems[1]}

    def make_catch(self, catch_kind):
        return None, "a", {"item": self.item, "a": "clean", "b": "anchor"}

    def record(self, trial: Trial, answer: Any) -> None:
        if answer not in ("a", "b"):
            raise ValueError(f"an A/B answer must be 'a' or 'b', got {answer!r}")
        if trial.catch is None:
            self.answers.append(answer)

    def state_dict(self):
        return {"kind": self.kind, "track_id": self.track_id, "item": self.item, "systems": self.systems, "answers": self.answers}

    @classmethod
    def from_state(cls, s):
        return cls(s["track_id"], s["item"], s["systems"], s["answers"])


def test_a_new_test_kind_plugs_in_without_scheduler_changes(monkeypatch):
    monkeypatch.setitem(TRACK_KINDS, PreferenceTrack.kind, PreferenceTrack)
    tracks = [
        PreferenceTrack("ab1", "utt1", ["demucs", "ours"]),
        SameDifferentTrack("sd1", "utt1", "noise", make_procedure("staircase", LEVELS, max_trials=4)),
    ]
    sched = SessionSchedule(tracks, np.random.default_rng(0), catch_rate=0.2)
    kinds = set()
    while (t := sched.next_trial()) is not None:
        kinds.add((t.kind, t.catch))
        if t.index == 3:
            sched = SessionSchedule.from_state(json.loads(json.dumps(sched.state_dict())))
            assert sched.next_trial() == t
        sched.record(t.index, ("a" if t.kind == "ab_preference" else True))
    assert ("ab_preference", None) in kinds and ("same_different", None) in kinds
    assert sched.tracks["ab1"].answers == ["a", "a", "a"] and sched.tracks["sd1"].finished
