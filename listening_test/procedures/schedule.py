"""Session scheduler: interleaves a participant's tracks and mixes in catch trials.

Pure and deterministic given its state: the web layer stores ``state_dict()`` (JSON)
per session and rebuilds it with ``SessionSchedule.from_state``.

A *track* is one adaptive walk, e.g. (reference, family) for a same/different
test. Tracks are typed by ``kind``; the scheduler only talks to them through the
small Track protocol below, and trials carry the same ``kind``. A new test type
(say an A/B preference track: two systems' outputs of one item, "which is closer
to clean?") is a new class registered in ``TRACK_KINDS`` with its own
``stimulus`` payload, catch kinds and answer type; the scheduler does not change.

    sched = SessionSchedule(tracks, rng=np.random.default_rng(seed), catch_rate=0.1)
    trial = sched.next_trial()          # the same Trial until it is answered (reloads)
    sched.record(trial.index, True)     # True = "different" for same/different trials
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import numpy as np

from . import restore_procedure
from .base import Procedure

SAME_DIFFERENT = "same_different"


@dataclass(frozen=True)
class Trial:
    """What to present next. ``stimulus`` is kind-specific (same/different: reference, family)."""

    index: int  # position in the session, 0-based; answers must quote it
    kind: str  # the test type, e.g. "same_different"
    track_id: str
    level: float | None  # ladder level of the perturbed clip; None: the reference itself
    catch: str | None = None  # None for an adaptive trial, else the catch kind
    expected: Any = None  # a catch trial's correct answer (same/different: True = "different")
    stimulus: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Trial":
        return cls(**d)


class Track(Protocol):
    """What the scheduler needs from a track of any kind."""

    kind: str
    track_id: str
    catch_kinds: tuple[str, ...]

    @property
    def finished(self) -> bool: ...
    @property
    def n_trials(self) -> int: ...
    def remaining_trials(self) -> int: ...
    def propose(self) -> tuple[float | None, dict[str, Any]]: ...
    def make_catch(self, catch_kind: str) -> tuple[float | None, Any, dict[str, Any]]: ...
    def record(self, trial: Trial, answer: Any) -> None: ...
    def state_dict(self) -> dict[str, Any]: ...


class SameDifferentTrack:
    """A (reference, family) track walked by an adaptive procedure; answers are bools ("different")."""

    kind = SAME_DIFFERENT
    # identical: the reference twice, must be "same"; obvious: the top rung, must be "different".
    catch_kinds = ("identical", "obvious")

    def __init__(self, track_id: str, reference: str, family: str, procedure: Procedure):
        self.track_id, self.reference, self.family, self.procedure = str(track_id), reference, family, procedure

    @property
    def finished(self) -> bool:
        return self.procedure.finished

    @property
    def n_trials(self) -> int:
        return int(getattr(self.procedure, "n_trials", 0))

    def remaining_trials(self) -> int:
        """Upper bound on the trials left (1 when the procedure gives no bound)."""
        if self.finished:
            return 0
        bound = getattr(self.procedure, "trial_bound", None)
        return max(bound - self.n_trials, 1) if bound is not None else 1

    def _stimulus(self) -> dict[str, Any]:
        return {"reference": self.reference, "family": self.family}

    def propose(self) -> tuple[float | None, dict[str, Any]]:
        return self.procedure.next_level(), self._stimulus()

    def make_catch(self, catch_kind: str) -> tuple[float | None, Any, dict[str, Any]]:
        if catch_kind == "identical":
            return None, False, self._stimulus()
        if catch_kind == "obvious":
            return self.procedure.levels[-1], True, self._stimulus()
        raise ValueError(f"unknown catch kind {catch_kind!r} for {self.kind}; valid: {', '.join(self.catch_kinds)}")

    def record(self, trial: Trial, answer: Any) -> None:
        if not isinstance(answer, (bool, np.bool_)):
            raise ValueError(f"a same/different answer must be a bool (True = different), got {answer!r}")
        if trial.catch is None:
            self.procedure.update(trial.level, bool(answer))

    def state_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "track_id": self.track_id,
            "reference": self.reference,
            "family": self.family,
            "procedure": self.procedure.state_dict(),
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> "SameDifferentTrack":
        return cls(state["track_id"], state["reference"], state["family"], restore_procedure(state["procedure"]))


TRACK_KINDS: dict[str, Any] = {SameDifferentTrack.kind: SameDifferentTrack}


def _restore_rng(state: dict[str, Any]) -> np.random.Generator:
    bit_gen = getattr(np.random, state["bit_generator"])()
    bit_gen.state = state
    return np.random.Generator(bit_gen)


class SessionSchedule:
    """Decides a session's trials: which track next, and when a catch trial goes in.

    Interleaving: the next adaptive trial goes to an unfinished track with the fewest
    trials so far (ties broken by the rng, avoiding the track just served when
    another is available), so tracks progress evenly and the same pair rarely
    repeats back to back.

    Catch trials: each trial is a catch with probability ``catch_rate``, but the
    count is kept within one of ``catch_rate × trials`` (a short session cannot end
    up with no catch at all). Catch kinds alternate by least-served first; the track
    (whose reference/family the catch uses) is drawn at random.

    The session finishes when every track has finished, or at ``max_trials`` trials
    (catch trials included).
    """

    def __init__(
        self,
        tracks: list[Track],
        rng: np.random.Generator,
        catch_rate: float = 0.1,
        catch_kinds: tuple[str, ...] | list[str] = ("identical", "obvious"),
        max_trials: int | None = None,
    ):
        if not tracks:
            raise ValueError("a session needs at least one track")
        ids = [t.track_id for t in tracks]
        if len(set(ids)) != len(ids):
            raise ValueError(f"track ids must be unique, got {ids}")
        if not isinstance(rng, np.random.Generator):
            raise ValueError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
        catch_rate = float(catch_rate)
        if not 0.0 <= catch_rate < 1.0:
            raise ValueError(f"catch_rate must lie in [0, 1), got {catch_rate}")
        catch_kinds = [str(k) for k in catch_kinds]
        if catch_rate > 0 and not catch_kinds:
            raise ValueError("catch_rate > 0 needs at least one catch kind")
        for kind in catch_kinds:
            if not any(kind in t.catch_kinds for t in tracks):
                raise ValueError(f"no track supports catch kind {kind!r}")
        if max_trials is not None and (isinstance(max_trials, bool) or not isinstance(max_trials, int) or max_trials < 1):
            raise ValueError(f"max_trials must be a positive integer or None, got {max_trials!r}")
        self.tracks: dict[str, Track] = {t.track_id: t for t in tracks}
        self.rng = rng
        self.catch_rate = catch_rate
        self.catch_kinds = catch_kinds
        self.max_trials = max_trials
        self.n_trials = 0  # answered trials, catch trials included
        self.catch_served = {k: 0 for k in catch_kinds}
        self.catch_correct = {k: 0 for k in catch_kinds}
        self._last_track: str | None = None
        self._pending: Trial | None = None

    # -- decisions ---------------------------------------------------------------
    @property
    def finished(self) -> bool:
        if self.max_trials is not None and self.n_trials >= self.max_trials:
            return True
        return all(t.finished for t in self.tracks.values())

    def _is_catch(self) -> bool:
        if self.catch_rate == 0:
            return False
        served = sum(self.catch_served.values())
        target = self.catch_rate * (self.n_trials + 1)  # expected catches once this trial is done
        if target - served >= 1.0:
            return True  # falling a whole catch behind: force one
        if served - target > 0.0:
            return False  # one more would put us over a whole catch ahead
        return bool(self.rng.random() < self.catch_rate)

    def _pick(self, candidates: list[str]) -> str:
        return candidates[int(self.rng.integers(len(candidates)))]

    def next_trial(self) -> Trial | None:
        """The trial to present: the pending one if unanswered, else a new decision; None when finished."""
        if self._pending is not None:
            return self._pending
        if self.finished:
            return None
        if self._is_catch():
            fewest = min(self.catch_served.values())
            kind = self._pick([k for k in self.catch_kinds if self.catch_served[k] == fewest])
            track = self.tracks[self._pick([i for i, t in self.tracks.items() if kind in t.catch_kinds])]
            level, expected, stimulus = track.make_catch(kind)
            trial = Trial(self.n_trials, track.kind, track.track_id, level, kind, expected, stimulus)
        else:
            open_ids = [i for i, t in self.tracks.items() if not t.finished]
            fewest = min(self.tracks[i].n_trials for i in open_ids)
            candidates = [i for i in open_ids if self.tracks[i].n_trials == fewest]
            if len(candidates) > 1 and self._last_track in candidates:
                candidates.remove(self._last_track)
            track = self.tracks[self._pick(candidates)]
            level, stimulus = track.propose()
            trial = Trial(self.n_trials, track.kind, track.track_id, level, None, None, stimulus)
            self._last_track = track.track_id
        self._pending = trial
        return trial

    def record(self, trial_index: int, answer: Any) -> bool | None:
        """Record the answer to the pending trial. Returns whether a catch was passed (None if not a catch).

        A stale or unknown ``trial_index`` raises ValueError and changes nothing.
        """
        trial = self._pending
        if trial is None or trial_index != trial.index:
            pending = None if trial is None else trial.index
            raise ValueError(f"trial {trial_index} is not the pending trial (pending: {pending})")
        self.tracks[trial.track_id].record(trial, answer)  # validates the answer before any change
        passed = None
        if trial.catch is not None:
            passed = bool(answer == trial.expected)
            self.catch_served[trial.catch] += 1
            self.catch_correct[trial.catch] += int(passed)
        self.n_trials += 1
        self._pending = None
        return passed

    # -- reporting ---------------------------------------------------------------
    def progress(self) -> tuple[int, int]:
        """(trials done, trials expected in all). Expected uses each track's upper bound, so it only shrinks."""
        if self.finished:
            return self.n_trials, self.n_trials
        remaining = sum(t.remaining_trials() for t in self.tracks.values())
        remaining = math.ceil(remaining / (1.0 - self.catch_rate))  # catch trials come on top
        expected = self.n_trials + max(remaining, 1)
        if self.max_trials is not None:
            expected = min(expected, self.max_trials)
        return self.n_trials, expected

    def catch_summary(self) -> dict[str, dict[str, int]]:
        return {k: {"served": self.catch_served[k], "correct": self.catch_correct[k]} for k in self.catch_kinds}

    # -- state -------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "version": 1,
            "rng": self.rng.bit_generator.state,
            "catch_rate": self.catch_rate,
            "catch_kinds": list(self.catch_kinds),
            "max_trials": self.max_trials,
            "tracks": [t.state_dict() for t in self.tracks.values()],
            "n_trials": self.n_trials,
            "catch_served": dict(self.catch_served),
            "catch_correct": dict(self.catch_correct),
            "last_track": self._last_track,
            "pending": None if self._pending is None else self._pending.to_dict(),
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> "SessionSchedule":
        if state.get("version") != 1:
            raise ValueError(f"unsupported schedule state version {state.get('version')!r}")
        tracks = []
        for t in state["tracks"]:
            if t.get("kind") not in TRACK_KINDS:
                raise ValueError(f"unknown track kind {t.get('kind')!r}; valid: {', '.join(sorted(TRACK_KINDS))}")
            tracks.append(TRACK_KINDS[t["kind"]].from_state(t))
        sched = cls(tracks, _restore_rng(state["rng"]), state["catch_rate"], state["catch_kinds"], state["max_trials"])
        sched.n_trials = int(state["n_trials"])
        sched.catch_served = {k: int(v) for k, v in state["catch_served"].items()}
        sched.catch_correct = {k: int(v) for k, v in state["catch_correct"].items()}
        sched._last_track = state["last_track"]
        sched._pending = None if state["pending"] is None else Trial.from_dict(state["pending"])
        return sched


def same_different_session(
    specs: list[tuple[str, str, list[float]]],
    procedure: str,
    procedure_config: dict[str, Any] | None,
    rng: np.random.Generator,
    **schedule_config: Any,
) -> SessionSchedule:
    """Convenience: one same/different track per (reference, family, levels), ids "reference|family"."""
    from . import make_procedure

    tracks = [
        SameDifferentTrack(f"{ref}|{fam}", ref, fam, make_procedure(procedure, levels, **(procedure_config or {})))
        for ref, fam, levels in specs
    ]
    return SessionSchedule(tracks, rng, **schedule_config)
