"""Build the next trial of a session: screening, practice, catch or adaptive main.

Every random choice comes from ``numpy.random.default_rng([session.seed,
trial_index])``, so a session's sequence is reproducible and needs no stored
generator state. Ladders are read from the database once per process and cached
on the app: an experiment's stimulus set never changes after creation.

The hot path works on plain objects, not ORM instances: a session is any object
with ``id``, ``seed``, ``n_trials``, ``schedule_state``, ``experiment_id`` and
``participant_id`` (``session_flow.SessionState``); tracks are ``TrackRow``s; a new
trial is a ``NewTrial`` that ``insert_trial`` writes with two Core statements.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from flask import current_app
from sqlalchemy import bindparam as sa_bindparam
from sqlalchemy import func, insert, select, update

from . import headphone
from .db import connection, db
from .flow_config import FlowConfig
from .manifest_import import REFERENCE_FAMILY
from .models import AudioToken, Stimulus, Track, Trial
from .procedures import make_procedure, paired, restore_procedure, schedule
from .web.security import random_token

TRACKS = Track.__table__
TRIALS = Trial.__table__
AUDIO_TOKENS = AudioToken.__table__


@dataclass(frozen=True)
class Ladders:
    """An experiment's stimulus set, indexed for trial building."""

    references: dict[str, int]  # reference stimulus_id -> stimuli.id
    rungs: dict[tuple[str, str], list[tuple[float, int]]]  # (reference, family) -> [(level, stimuli.id)]
    # stimuli.id -> fault_reason: found faulty while the study runs, out of rotation (issue 14)
    faulty: dict[int, str] = field(default_factory=dict)

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
        return not any(sid in self.faulty for (ref, _), rungs in self.rungs.items() if ref == reference
                       for _, sid in rungs)

    def levels(self, reference: str, family: str) -> list[float]:
        return [level for level, _ in self.rungs[(reference, family)]]

    def stimulus_at(self, reference: str, family: str, level: float) -> tuple[float, int]:
        """The rung nearest ``level`` (procedures return ladder levels; floats may drift)."""
        rungs = self.rungs[(reference, family)]
        return min(rungs, key=lambda rung: abs(rung[0] - level))

    def top(self, reference: str, family: str) -> tuple[float, int]:
        return self.rungs[(reference, family)][-1]


def catch_pool(tracks: list[TrackRow], ladders: Ladders) -> list[TrackRow]:
    """The tracks a catch or practice trial may be built on: every one while no stimulus
    is faulty; else a same/different track whose own ladder and reference are healthy
    (its catches use the reference and the top rung), an A/B track whose whole item is
    healthy (its catches use the anchor system's output). Possibly none."""
    if not ladders.faulty:
        return tracks
    return [t for t in tracks if (ladders.healthy(t.reference, t.family) if (t.reference, t.family) in ladders.rungs
                                  else ladders.item_healthy(t.reference))]


def ladders_for(experiment_id: int) -> Ladders:
    cache = current_app.extensions.setdefault("jndlab_ladders", {})
    if experiment_id not in cache:
        rows = db.session.execute(
            select(Stimulus.id, Stimulus.stimulus_id, Stimulus.reference, Stimulus.family, Stimulus.level,
                   Stimulus.fault_reason)
            .where(Stimulus.experiment_id == experiment_id)
        ).all()
        references = {r.stimulus_id: r.id for r in rows if r.family == REFERENCE_FAMILY}
        rungs: dict[tuple[str, str], list[tuple[float, int]]] = {}
        for r in rows:
            if r.family != REFERENCE_FAMILY:
                rungs.setdefault((r.reference, r.family), []).append((float(r.level), r.id))
        for value in rungs.values():
            value.sort()
        cache[experiment_id] = Ladders(references, rungs, {r.id: r.fault_reason for r in rows if r.fault_reason})
    return cache[experiment_id]


_MARK_FAULTY = (update(Stimulus.__table__)
                .where(Stimulus.__table__.c.id == sa_bindparam("sid"), Stimulus.__table__.c.fault_reason.is_(None))
                .values(fault_reason=sa_bindparam("reason"), fault_at=sa_bindparam("now")))
_FAULTY = (select(Stimulus.__table__.c.id, Stimulus.__table__.c.fault_reason)
           .where(Stimulus.__table__.c.experiment_id == sa_bindparam("experiment_id"),
                  Stimulus.__table__.c.fault_reason.is_not(None)))


def mark_faulty(experiment_id: int, reasons: dict[int, str], now) -> Ladders:
    """Take stimuli (``stimuli.id -> reason``) out of rotation for the whole experiment:
    recorded on their rows (the first reason stays), and this process's ladders learn
    every fault recorded so far (other processes' included). Other processes learn them
    when they load the ladders, or at their own next fault (each process serves a faulty
    stimulus at most once more). Returns the updated ladders."""
    conn = connection()
    if reasons:
        conn.execute(_MARK_FAULTY, [{"sid": sid, "reason": reason[:2000], "now": now}
                                    for sid, reason in reasons.items()])
    faulty = {sid: reason for sid, reason in conn.execute(_FAULTY, {"experiment_id": experiment_id}).all()}
    ladders = ladders_for(experiment_id)
    if faulty != ladders.faulty:
        from dataclasses import replace

        ladders = current_app.extensions["jndlab_ladders"][experiment_id] = replace(ladders, faulty=faulty)
    return ladders


def close_faulty_tracks(tracks: list[TrackRow], ladders: Ladders) -> list[int]:
    """Finish every open track that depends on a faulty stimulus; returns their ids."""
    closed = []
    if ladders.faulty:
        for track in tracks:
            if not track.finished and not ladders.healthy(track.reference, track.family):
                track.finished = True
                closed.append(track.id)
    return closed


def session_rng(session, trial_index: int | None = None) -> np.random.Generator:
    return np.random.default_rng([session.seed, session.n_trials if trial_index is None else trial_index])


# --- tracks -------------------------------------------------------------------------

_TRACK_STATE = ("procedure_state", "n_trials", "finished", "estimate")


class TrackRow:
    """One row of ``tracks``; remembers which of its mutable columns changed."""

    __slots__ = ("id", "reference", "family", *_TRACK_STATE, "_dirty")

    def __init__(self, id, reference, family, procedure_state, n_trials, finished, estimate):
        set_ = object.__setattr__
        set_(self, "_dirty", set())
        for name, value in (("id", id), ("reference", reference), ("family", family),
                            ("procedure_state", procedure_state), ("n_trials", n_trials),
                            ("finished", finished), ("estimate", estimate)):
            set_(self, name, value)

    def __setattr__(self, name, value):
        object.__setattr__(self, name, value)
        if name in _TRACK_STATE:
            self._dirty.add(name)


_SELECT_TRACKS = (select(TRACKS.c.id, TRACKS.c.reference, TRACKS.c.family, TRACKS.c.procedure_state,
                         TRACKS.c.n_trials, TRACKS.c.finished, TRACKS.c.estimate)
                  .where(TRACKS.c.session_id == sa_bindparam("session_id")).order_by(TRACKS.c.id))


def track_rng(session) -> np.random.Generator:
    """The generator of a session's track choices (apart from its per-trial streams)."""
    return np.random.default_rng([session.seed, 1_000_003])


def track_usage(experiment_id: int, column) -> dict[str, int]:
    """Tracks so far in the experiment per value of ``column`` (Track.reference or Track.family)."""
    return dict(connection().execute(
        select(column, func.count()).where(Track.experiment_id == experiment_id).group_by(column)).all())


def least_used(names: list[str], counts: dict[str, int], k: int, rng: np.random.Generator) -> list[str]:
    """The ``k`` names with the fewest uses so far, ties broken at random."""
    jitter = rng.random(len(names))
    order = sorted(range(len(names)), key=lambda i: (counts.get(names[i], 0), jitter[i]))
    return [names[i] for i in order[:k]]


def insert_track(session, experiment_id: int, reference: str, family: str, procedure_state: dict,
                 finished: bool) -> TrackRow:
    """INSERT one track; called in creation order, so ids grow as ``session_tracks`` sorts them."""
    values = dict(session_id=session.id, participant_id=session.participant_id, experiment_id=experiment_id,
                  reference=reference, family=family, procedure_state=procedure_state, n_trials=0,
                  finished=finished)
    track_id = connection().execute(insert(TRACKS), values).inserted_primary_key[0]
    return TrackRow(track_id, reference, family, procedure_state, 0, finished, None)


def create_tracks(session, experiment, flow: FlowConfig) -> list[TrackRow]:
    """Choose this participant's references and families and start one track per pair.

    The least-used references and families across the experiment come first (ties
    broken at random), so that coverage spreads evenly toward the target.
    ``experiment`` needs ``id``, ``procedure`` and ``procedure_config``.
    """
    ladders = ladders_for(experiment.id)
    rng = track_rng(session)
    usable = [key for key in ladders.rungs if ladders.healthy(*key)]  # faulty stimuli: out of rotation
    references = sorted({ref for ref, _ in usable})
    families = sorted({fam for _, fam in usable})
    chosen_refs = least_used(references, track_usage(experiment.id, Track.reference),
                             flow.references_per_participant, rng)
    chosen_fams = least_used(families, track_usage(experiment.id, Track.family),
                             flow.families_per_participant or len(families), rng)
    tracks = []
    for ref in chosen_refs:
        for fam in chosen_fams:
            if (ref, fam) not in ladders.rungs or not ladders.healthy(ref, fam):
                continue  # a reference the generator skipped for this family, or a faulty ladder
            procedure = make_procedure(experiment.procedure, ladders.levels(ref, fam), **experiment.procedure_config)
            tracks.append(insert_track(session, experiment.id, ref, fam, procedure.state_dict(),
                                       bool(procedure.finished)))
    return tracks


def session_tracks(session) -> list[TrackRow]:
    rows = connection().execute(_SELECT_TRACKS, {"session_id": session.id})
    return [TrackRow(*row) for row in rows]


_UPDATE_TRACK = update(TRACKS).where(TRACKS.c.id == sa_bindparam("track_id"))
_INSERT_TRIAL = insert(TRIALS)
_INSERT_TOKENS = insert(AUDIO_TOKENS)


def save_tracks(tracks: list[TrackRow]) -> None:
    """UPDATE the tracks whose state changed (usually one per answer)."""
    conn = None
    for track in tracks:
        if track._dirty:
            conn = conn or connection()
            conn.execute(_UPDATE_TRACK,
                         {"track_id": track.id, **{name: getattr(track, name) for name in sorted(track._dirty)}})
            track._dirty.clear()


# --- trials -------------------------------------------------------------------------

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


_TRIAL_COLUMNS = ("track_id", "reference_stimulus_id", "test_stimulus_id", "family", "level",
                  "a_is_reference", "spec", "expected_answer")


def new_trial(session, kind: str, **fields) -> NewTrial:
    values = dict.fromkeys(_TRIAL_COLUMNS)  # every column, so that one INSERT form is cached
    values.update(session_id=session.id, trial_index=session.n_trials, kind=kind,
                  nonce=random_token(16), answered=False, **fields)
    if values["spec"] is None:
        values["spec"] = {}
    session.n_trials += 1
    return NewTrial(values)


def insert_trial(trial: NewTrial) -> tuple[int, list[str]]:
    """Store ``trial`` and one opaque audio token per clip; return (trial id, tokens)."""
    conn = connection()
    trial_id = conn.execute(_INSERT_TRIAL, trial.values).inserted_primary_key[0]
    session_id = trial.values["session_id"]
    tokens = [random_token() for _ in trial.clips]
    conn.execute(_INSERT_TOKENS, [
        {"token": token, "session_id": session_id, "trial_id": trial_id, "slot": slot, **clip}
        for slot, (token, clip) in enumerate(zip(tokens, trial.clips))])
    return trial_id, tokens


def _add_pair_tokens(trial: NewTrial, ref_id: int, test_id: int, a_is_reference: bool) -> None:
    first, second = (ref_id, test_id) if a_is_reference else (test_id, ref_id)
    trial.clips = [{"stimulus_id": first}, {"stimulus_id": second}]


def _pair_trial(session, kind: str, reference: str, family: str, level: float,
                test_id: int, ladders: Ladders, rng: np.random.Generator,
                track: TrackRow | None = None, expected: str | None = None) -> NewTrial:
    ref_id = ladders.references[reference]
    a_is_reference = bool(rng.integers(0, 2))  # the order is chosen here, never by the client
    trial = new_trial(session, kind, track_id=track.id if track else None,
                      reference_stimulus_id=ref_id, test_stimulus_id=test_id,
                      family=family, level=level, a_is_reference=a_is_reference,
                      expected_answer=expected, spec={})
    _add_pair_tokens(trial, ref_id, test_id, a_is_reference)
    return trial


def catch_trial(session, kind: str, track: TrackRow, ladders: Ladders, rng) -> NewTrial:
    """identical pair -> the answer must be "same"; top rung -> it must be "different"."""
    return _catch_or_practice(session, kind, track, ladders, rng)


def _catch_or_practice(session, kind, track, ladders, rng, identical: bool | None = None) -> NewTrial:
    identical = kind == "catch_identical" if identical is None else identical
    if identical:
        ref_id = ladders.references[track.reference]
        return _pair_trial(session, kind, track.reference, track.family, 0.0, ref_id, ladders, rng,
                           expected="same")
    level, test_id = ladders.top(track.reference, track.family)
    return _pair_trial(session, kind, track.reference, track.family, level, test_id, ladders, rng,
                       expected="different")


def screening_trial(session, flow: FlowConfig, served_in_stage: int) -> NewTrial:
    rng = session_rng(session)
    test = flow.screening.tests[served_in_stage // flow.screening.trials_per_test]
    spec = headphone.make_trial(test, rng)
    trial = new_trial(session, "screening", spec=spec, expected_answer=str(spec["target"]))
    trial.clips = [{"generated": {"test": test, "spec": spec}} for _ in range(headphone.N_INTERVALS)]
    return trial


def practice_trial(session, tracks: list[TrackRow], served_in_stage: int) -> NewTrial:
    rng = session_rng(session)
    ladders = ladders_for(session.experiment_id)
    healthy = catch_pool(tracks, ladders) or tracks
    track = healthy[int(rng.integers(0, len(healthy)))]
    # Alternate so that practice always shows both kinds of answer.
    identical = served_in_stage % 2 == (session.seed % 2)
    return _catch_or_practice(session, "practice", track, ladders, rng, identical=identical)


def main_trial(session, tracks: list[TrackRow], flow: FlowConfig, design=None) -> NewTrial | None:
    """The next main-phase trial, or None when every track has finished.

    The decisions are ``procedures.schedule``'s (one policy, unit-tested there):
    ``next_catch`` keeps catch trials within one of ``catch_rate`` x trials and
    balances their kinds; ``choose_track`` interleaves the open tracks evenly.
    Their inputs are the tracks' own trial counts and two small counters in
    ``session.schedule_state`` (``catches`` by kind, ``last_track``). What a catch
    or a track's next trial *is* belongs to the test type's ``design``
    (same/different by default; ``ab_trials.AB_PREFERENCE`` for A/B).
    """
    design = design or SAME_DIFFERENT
    ladders = ladders_for(session.experiment_id)
    closed = close_faulty_tracks(tracks, ladders)  # a stimulus found faulty (by any session) since
    if closed:
        session.schedule_state = {**session.schedule_state, "tracks_closed_by_faults": sorted(
            {*session.schedule_state.get("tracks_closed_by_faults", []), *closed})}
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
        return design.catch_trial(session, f"catch_{catch}", track, ladders, rng)
    open_ids = [t.id for t in open_tracks]
    last = state.get("last_track")
    track = open_tracks[schedule.choose_track([t.n_trials for t in open_tracks], rng,
                                              avoid=open_ids.index(last) if last in open_ids else None)]
    trial = design.track_trial(session, track, ladders, rng)
    if trial is None:  # the procedure finished without saying so; close the track
        track.finished = True
        return main_trial(session, tracks, flow, design)
    session.schedule_state = {**state, "last_track": track.id}
    return trial


def _adaptive_trial(session, track: TrackRow, ladders: Ladders, rng) -> NewTrial | None:
    """The pair at the level the track's procedure asks for; None when it has nothing to ask."""
    level = restore_procedure(track.procedure_state).next_level()
    if level is None:
        return None
    rung_level, test_id = ladders.stimulus_at(track.reference, track.family, level)
    return _pair_trial(session, "main", track.reference, track.family, rung_level, test_id,
                       ladders, rng, track=track)


def update_track(track: TrackRow, level: float, response_different: bool) -> None:
    procedure = restore_procedure(track.procedure_state)
    procedure.update(level, response_different)
    track.procedure_state = procedure.state_dict()  # a new dict: JSON columns track reassignment
    track.n_trials += 1
    track.finished = bool(procedure.finished)
    estimate = procedure.estimate()
    track.estimate = None if estimate is None else float(estimate)


def _record_main_answer(track: TrackRow, trial, answer: str) -> None:
    update_track(track, trial.level, answer == "different")


@dataclass(frozen=True)
class TrialDesign:
    """What a test type puts in a session: its tracks, trials, answers and clip labels.

    ``session_flow`` runs the same stages for every test type and asks the
    experiment's design for everything that differs (``ab_trials`` has the A/B one).
    """

    test_type: str
    choices: tuple[str, ...]  # the answers a main/practice/catch trial accepts
    clip_labels: tuple[str, ...]  # what the page calls the clips, in slot order
    create_tracks: Any  # (session, experiment, flow) -> [TrackRow]
    practice_trial: Any  # (session, tracks, served_in_stage) -> NewTrial
    catch_trial: Any  # (session, kind, track, ladders, rng) -> NewTrial
    track_trial: Any  # (session, track, ladders, rng) -> NewTrial | None
    record_main_answer: Any  # (track, trial, answer) -> None: update the track


SAME_DIFFERENT = TrialDesign(
    test_type="same_different", choices=("same", "different"), clip_labels=("A", "B"),
    create_tracks=create_tracks, practice_trial=practice_trial, catch_trial=catch_trial,
    track_trial=_adaptive_trial, record_main_answer=_record_main_answer)
