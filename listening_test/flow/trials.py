"""Build a session's tracks and trials: screening, practice, catch or adaptive main.

Every random choice comes from ``numpy.random.default_rng([session.seed,
trial_index])``, so a session's sequence is reproducible and needs no stored
generator state. Nothing here reads or writes a database: the stimulus set comes in
as ``Ladders``, the experiment's track counts as a mapping, and a new trial goes out
as a ``NewTrial`` (its ``trials`` columns and its clips) that ``listening_test.store``
writes. A session is any object with ``id``, ``seed``, ``n_trials`` and
``schedule_state`` (``flow.session.FlowSession``; the store's ``SessionState``).
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import numpy as np

from .. import headphone
from ..flow_config import FlowConfig
from ..procedures import make_procedure, paired, restore_procedure, schedule

# Every kind of trial (``trials.kind``): the stage's own trials, and the catch trials
# mixed into the main stage.
TRIAL_KINDS = ("main", "practice", "catch_identical", "catch_obvious", "catch_anchor", "screening")


def random_token(nbytes: int = 24) -> str:
    """A URL-safe random string of ``nbytes`` random bytes (session ids, nonces, audio tokens)."""
    return secrets.token_urlsafe(nbytes)


class SessionLike(Protocol):
    """What trial building reads and writes of a session."""

    id: int
    seed: int
    n_trials: int
    schedule_state: dict[str, Any]


# --- the stimulus set ----------------------------------------------------------------


@dataclass(frozen=True)
class Ladders:
    """An experiment's stimulus set, indexed for trial building (ids are ``stimuli.id``)."""

    references: dict[str, int]  # reference stimulus_id -> stimuli.id
    rungs: dict[tuple[str, str], list[tuple[float, int]]]  # (reference, family) -> [(level, stimuli.id)], sorted
    # stimuli.id -> fault_reason: found faulty while the study runs, out of rotation (issue 14)
    faulty: dict[int, str] = field(default_factory=dict)

    @classmethod
    def from_rows(cls, rows: Sequence[tuple[int, str, str, str, float, str | None]], reference_family: str) -> Ladders:
        """From ``(stimuli.id, stimulus_id, reference, family, level, fault_reason)`` rows;
        rows of ``reference_family`` are the references, the others the rungs."""
        references = {stimulus_id: sid for sid, stimulus_id, _, family, _, _ in rows if family == reference_family}
        rungs: dict[tuple[str, str], list[tuple[float, int]]] = {}
        for sid, _, reference, family, level, _ in rows:
            if family != reference_family:
                rungs.setdefault((reference, family), []).append((float(level), sid))
        for value in rungs.values():
            value.sort()
        return cls(references, rungs, {sid: reason for sid, *_, reason in rows if reason})

    def with_faults(self, faulty: dict[int, str]) -> Ladders:
        """These ladders with ``faulty`` (``stimuli.id -> reason``) as the stimuli out of rotation."""
        return self if faulty == self.faulty else replace(self, faulty=dict(faulty))

    def track_stimuli(self, reference: str, family: str) -> list[int]:
        """The stimuli a track on (reference, family) may serve: its reference and every
        rung of its ladder (A/B: ``family`` is a system pair, both systems' outputs)."""
        ids = [self.references[reference]] if reference in self.references else []
        if (reference, family) in self.rungs:
            keys = [family]
        else:
            try:
                keys = list(paired.split_pair_key(family))
            except ValueError:
                keys = []
        return ids + [sid for key in keys for _, sid in self.rungs.get((reference, key), ())]

    def healthy(self, reference: str, family: str) -> bool:
        """No stimulus of the track on (reference, family) has been found faulty."""
        return not self.faulty or not any(sid in self.faulty for sid in self.track_stimuli(reference, family))

    def item_healthy(self, reference: str) -> bool:
        """No stimulus of ``reference`` (it, every rung of every family or system) is faulty."""
        if not self.faulty:
            return True
        if self.references.get(reference) in self.faulty:
            return False
        return not any(
            sid in self.faulty for (ref, _), rungs in self.rungs.items() if ref == reference for _, sid in rungs
        )

    def levels(self, reference: str, family: str) -> list[float]:
        """The ladder's levels, ascending (level units of the family). Raises KeyError for no such ladder."""
        return [level for level, _ in self.rungs[(reference, family)]]

    def stimulus_at(self, reference: str, family: str, level: float) -> tuple[float, int]:
        """The rung nearest ``level`` (procedures return ladder levels; floats may drift)."""
        rungs = self.rungs[(reference, family)]
        return min(rungs, key=lambda rung: abs(rung[0] - level))

    def top(self, reference: str, family: str) -> tuple[float, int]:
        """(level, stimuli.id) of the ladder's top rung (catch trials' obvious pairs). Raises KeyError."""
        return self.rungs[(reference, family)][-1]


# --- tracks ---------------------------------------------------------------------------

_TRACK_STATE = ("procedure_state", "n_trials", "finished", "estimate")


@dataclass(eq=False)
class TrackRow:
    """One track of a session (``tracks`` row); remembers which of its mutable fields
    changed since it was made or last asked (``changes``), so the store writes only those.

    ``procedure_state``: the procedure's ``state_dict()`` (``procedures.restore_procedure``);
    ``estimate``: its current threshold estimate, in level units.
    """

    id: int
    reference: str
    family: str
    procedure_state: dict[str, Any]
    n_trials: int
    finished: bool
    estimate: float | None = None
    _dirty: set[str] = field(default_factory=set, init=False, repr=False)  # set last: a new row is clean

    def __setattr__(self, name: str, value: Any) -> None:
        object.__setattr__(self, name, value)
        if name in _TRACK_STATE:
            self.__dict__.setdefault("_dirty", set()).add(name)

    def changes(self) -> dict[str, Any]:
        """The fields changed since the last call, by name; forgets them."""
        out = {name: getattr(self, name) for name in sorted(self._dirty)}
        self._dirty.clear()
        return out


@dataclass(frozen=True)
class TrackPlan:
    """A track to start: the store inserts it and hands back a ``TrackRow``."""

    reference: str
    family: str
    procedure_state: dict[str, Any]
    finished: bool


def catch_pool(tracks: list[TrackRow], ladders: Ladders) -> list[TrackRow]:
    """The tracks a catch or practice trial may be built on: every one while no stimulus
    is faulty; else a same/different track whose own ladder and reference are healthy
    (its catches use the reference and the top rung), an A/B track whose whole item is
    healthy (its catches use the anchor system's output). Possibly none."""
    if not ladders.faulty:
        return tracks
    return [
        t
        for t in tracks
        if (
            ladders.healthy(t.reference, t.family)
            if (t.reference, t.family) in ladders.rungs
            else ladders.item_healthy(t.reference)
        )
    ]


def close_faulty_tracks(tracks: list[TrackRow], ladders: Ladders) -> list[int]:
    """Finish every open track that depends on a faulty stimulus; returns their ids."""
    closed = []
    if ladders.faulty:
        for track in tracks:
            if not track.finished and not ladders.healthy(track.reference, track.family):
                track.finished = True
                closed.append(track.id)
    return closed


def session_rng(session: SessionLike, trial_index: int | None = None) -> np.random.Generator:
    """The generator of one trial of a session (by default the next one, ``session.n_trials``)."""
    return np.random.default_rng([session.seed, session.n_trials if trial_index is None else trial_index])


def track_rng(seed: int) -> np.random.Generator:
    """The generator of a session's track choices (apart from its per-trial streams)."""
    return np.random.default_rng([seed, 1_000_003])


def usage_by(usage: Mapping[tuple[str, str], int], part: int) -> dict[str, int]:
    """Tracks so far per reference (``part`` 0) or per family (1), from the experiment's
    counts per (reference, family)."""
    out: dict[str, int] = {}
    for key, n in usage.items():
        out[key[part]] = out.get(key[part], 0) + int(n)
    return out


def least_used(names: list[str], counts: Mapping[str, int], k: int, rng: np.random.Generator) -> list[str]:
    """The ``k`` names with the fewest uses so far, ties broken at random."""
    jitter = rng.random(len(names))
    order = sorted(range(len(names)), key=lambda i: (counts.get(names[i], 0), jitter[i]))
    return [names[i] for i in order[:k]]


def plan_tracks(
    seed: int,
    ladders: Ladders,
    usage: Mapping[tuple[str, str], int],
    flow: FlowConfig,
    procedure: str,
    procedure_config: Mapping[str, Any],
) -> list[TrackPlan]:
    """Choose a same/different participant's references and families and start one track per pair.

    The least-used references and families across the experiment (``usage``: tracks so
    far per (reference, family)) come first, ties broken at random, so that coverage
    spreads evenly toward the target. Ladders with a faulty stimulus are left out.
    Raises ValueError/TypeError as ``make_procedure`` does for bad procedure settings.
    """
    rng = track_rng(seed)
    usable = [key for key in ladders.rungs if ladders.healthy(*key)]  # faulty stimuli: out of rotation
    references = sorted({ref for ref, _ in usable})
    families = sorted({fam for _, fam in usable})
    chosen_refs = least_used(references, usage_by(usage, 0), flow.references_per_participant, rng)
    chosen_fams = least_used(families, usage_by(usage, 1), flow.families_per_participant or len(families), rng)
    plans = []
    for ref in chosen_refs:
        for fam in chosen_fams:
            if (ref, fam) not in ladders.rungs or not ladders.healthy(ref, fam):
                continue  # a reference the generator skipped for this family, or a faulty ladder
            procedure_ = make_procedure(procedure, ladders.levels(ref, fam), **procedure_config)
            plans.append(TrackPlan(ref, fam, procedure_.state_dict(), bool(procedure_.finished)))
    return plans


def update_track(track: TrackRow, level: float, response_different: bool) -> None:
    """Feed one answer to the track's procedure (restored from ``procedure_state``)."""
    procedure = restore_procedure(track.procedure_state)
    procedure.update(level, response_different)
    track.procedure_state = procedure.state_dict()  # a new dict: JSON columns track reassignment
    track.n_trials += 1
    track.finished = bool(procedure.finished)
    estimate = procedure.estimate()
    track.estimate = None if estimate is None else float(estimate)


# --- trials ---------------------------------------------------------------------------


@dataclass
class NewTrial:
    """A trial built but not yet stored: its ``trials`` columns and its clips, in slot order."""

    values: dict[str, Any]
    clips: list[dict[str, Any]] = field(default_factory=list)  # {"stimulus_id": ..} or {"generated": ..}

    def __getattr__(self, name: str) -> Any:  # trial.kind, trial.trial_index, ...
        try:
            return self.__dict__["values"][name]
        except KeyError:
            raise AttributeError(name) from None


TRIAL_FIELDS = (
    "track_id",
    "reference_stimulus_id",
    "test_stimulus_id",
    "family",
    "level",
    "a_is_reference",
    "spec",
    "expected_answer",
)


def new_trial(session: SessionLike, kind: str, **fields: Any) -> NewTrial:
    """The session's next trial (index ``session.n_trials``, which this counts up), with a fresh nonce."""
    values = dict.fromkeys(TRIAL_FIELDS)  # every column, so that one INSERT form is cached
    values.update(
        session_id=session.id, trial_index=session.n_trials, kind=kind, nonce=random_token(16), answered=False, **fields
    )
    if values["spec"] is None:
        values["spec"] = {}
    session.n_trials += 1
    return NewTrial(values)


def _pair_trial(
    session,
    kind: str,
    reference: str,
    family: str,
    level: float,
    test_id: int,
    ladders: Ladders,
    rng: np.random.Generator,
    track: TrackRow | None = None,
    expected: str | None = None,
) -> NewTrial:
    ref_id = ladders.references[reference]
    a_is_reference = bool(rng.integers(0, 2))  # the order is chosen here, never by the client
    trial = new_trial(
        session,
        kind,
        track_id=track.id if track else None,
        reference_stimulus_id=ref_id,
        test_stimulus_id=test_id,
        family=family,
        level=level,
        a_is_reference=a_is_reference,
        expected_answer=expected,
        spec={},
    )
    first, second = (ref_id, test_id) if a_is_reference else (test_id, ref_id)
    trial.clips = [{"stimulus_id": first}, {"stimulus_id": second}]
    return trial


def catch_trial(session, kind: str, track: TrackRow, ladders: Ladders, flow: FlowConfig, rng) -> NewTrial:
    """identical pair -> the answer must be "same"; top rung -> it must be "different"."""
    return _catch_or_practice(session, kind, track, ladders, rng)


def _catch_or_practice(session, kind, track, ladders, rng, identical: bool | None = None) -> NewTrial:
    identical = kind == "catch_identical" if identical is None else identical
    if identical:
        ref_id = ladders.references[track.reference]
        return _pair_trial(session, kind, track.reference, track.family, 0.0, ref_id, ladders, rng, expected="same")
    level, test_id = ladders.top(track.reference, track.family)
    return _pair_trial(session, kind, track.reference, track.family, level, test_id, ladders, rng, expected="different")


def screening_trial(session: SessionLike, flow: FlowConfig, served_in_stage: int) -> NewTrial:
    """The headphone check's next trial: test ``served_in_stage // trials_per_test``, three generated clips."""
    rng = session_rng(session)
    test = flow.screening.tests[served_in_stage // flow.screening.trials_per_test]
    spec = headphone.make_trial(test, rng)
    trial = new_trial(session, "screening", spec=spec, expected_answer=str(spec["target"]))
    trial.clips = [{"generated": {"test": test, "spec": spec}} for _ in range(headphone.N_INTERVALS)]
    return trial


def practice_trial(
    session, tracks: list[TrackRow], ladders: Ladders, flow: FlowConfig, served_in_stage: int
) -> NewTrial:
    """A practice pair on a healthy track: identical and obvious pairs alternate.

    Raises ValueError when ``tracks`` is empty."""
    rng = session_rng(session)
    healthy = catch_pool(tracks, ladders) or tracks
    track = healthy[int(rng.integers(0, len(healthy)))]
    # Alternate so that practice always shows both kinds of answer.
    identical = served_in_stage % 2 == (session.seed % 2)
    return _catch_or_practice(session, "practice", track, ladders, rng, identical=identical)


def main_trial(
    session, tracks: list[TrackRow], flow: FlowConfig, design: TrialDesign, ladders: Ladders
) -> NewTrial | None:
    """The next main-phase trial, or None when every track has finished.

    The decisions are ``procedures.schedule``'s (one policy, unit-tested there):
    ``next_catch`` keeps catch trials within one of ``catch_rate`` x trials and
    balances their kinds; ``choose_track`` interleaves the open tracks evenly.
    Their inputs are the tracks' own trial counts and two small counters in
    ``session.schedule_state`` (``catches`` by kind, ``last_track``). Tracks that depend
    on a stimulus found faulty since are closed first (``tracks_closed_by_faults``).
    What a catch or a track's next trial *is* belongs to the test type's ``design``.
    """
    closed = close_faulty_tracks(tracks, ladders)  # a stimulus found faulty (by any session) since
    if closed:
        session.schedule_state = {
            **session.schedule_state,
            "tracks_closed_by_faults": sorted({*session.schedule_state.get("tracks_closed_by_faults", []), *closed}),
        }
    open_tracks = [t for t in tracks if not t.finished]
    state = session.schedule_state
    served = int(state.get("served_in_stage", 0))
    if schedule.phase_finished(len(open_tracks), served, flow.max_main_trials):
        return None
    rng = session_rng(session)
    catches = {str(k): int(v) for k, v in (state.get("catches") or {}).items()}
    catch = schedule.next_catch(served, catches, flow.catch_rate, flow.catch_shares(design.test_type), rng)
    healthy = catch_pool(tracks, ladders)
    if catch is not None and healthy:
        track = healthy[int(rng.integers(0, len(healthy)))]  # whose reference/family the catch uses
        session.schedule_state = {**state, "catches": {**catches, catch: catches.get(catch, 0) + 1}}
        return design.catch_trial(session, f"catch_{catch}", track, ladders, flow, rng)
    open_ids = [t.id for t in open_tracks]
    last = state.get("last_track")
    track = open_tracks[
        schedule.choose_track(
            [t.n_trials for t in open_tracks], rng, avoid=open_ids.index(last) if last in open_ids else None
        )
    ]
    trial = design.track_trial(session, track, ladders, rng)
    if trial is None:  # the procedure finished without saying so; close the track
        track.finished = True
        return main_trial(session, tracks, flow, design, ladders)
    session.schedule_state = {**state, "last_track": track.id}
    return trial


def _adaptive_trial(session, track: TrackRow, ladders: Ladders, rng) -> NewTrial | None:
    """The pair at the level the track's procedure asks for; None when it has nothing to ask."""
    level = restore_procedure(track.procedure_state).next_level()
    if level is None:
        return None
    rung_level, test_id = ladders.stimulus_at(track.reference, track.family, level)
    return _pair_trial(session, "main", track.reference, track.family, rung_level, test_id, ladders, rng, track=track)


def _record_main_answer(track: TrackRow, trial, answer: str) -> None:
    update_track(track, trial.level, answer == "different")


@dataclass(frozen=True)
class TrialDesign:
    """What a test type puts in a session: its tracks, trials, answers and clip labels.

    The stage machine (``flow.stages``) runs the same stages for every test type and
    asks the experiment's design for everything that differs (``flow.ab`` has the A/B one).
    """

    test_type: str
    choices: tuple[str, ...]  # the answers a main/practice/catch trial accepts
    clip_labels: tuple[str, ...]  # what the page calls the clips, in slot order
    plan_tracks: Any  # (seed, ladders, usage, flow, procedure, procedure_config) -> [TrackPlan]
    practice_trial: Any  # (session, tracks, ladders, flow, served_in_stage) -> NewTrial
    catch_trial: Any  # (session, kind, track, ladders, flow, rng) -> NewTrial
    track_trial: Any  # (session, track, ladders, rng) -> NewTrial | None
    record_main_answer: Any  # (track, trial, answer) -> None: update the track


SAME_DIFFERENT = TrialDesign(
    test_type="same_different",
    choices=("same", "different"),
    clip_labels=("A", "B"),
    plan_tracks=plan_tracks,
    practice_trial=practice_trial,
    catch_trial=catch_trial,
    track_trial=_adaptive_trial,
    record_main_answer=_record_main_answer,
)
