"""Writing what a flow step decided: tracks, trials and their clips.

``apply_outcome`` writes a ``flow.stages.Outcome``: the new trial and one opaque audio
token per clip, the headphone check's results, the session's end. ``create_tracks``
starts a session's tracks (``TrialDesign.plan_tracks`` on the experiment's track counts
so far). On PostgreSQL a trial whose id was drawn in advance (``load_for_answer``) is
written with the COMMIT (``db.defer_write``); otherwise its INSERT runs at once, for
the id it returns.
"""

from __future__ import annotations

from sqlalchemy import bindparam, func, insert, select

from .. import schema
from ..db import connection, defer_write, defers_writes, insert_row_id
from ..flow.session import OpenTrial
from ..flow.stages import Outcome
from ..flow.trials import NewTrial, TrackPlan, TrackRow, random_token
from ..platforms import recruitment
from ..schema import utcnow
from .sessions import SessionState, session_tracks

TRIALS = schema.trials
TRACKS = schema.tracks
AUDIO_TOKENS = schema.audio_tokens

_INSERT_TRIAL = insert(TRIALS)
_INSERT_TOKENS = insert(AUDIO_TOKENS)
_INSERT_TRACK = insert(TRACKS)
_TRACK_USAGE = (
    select(TRACKS.c.reference, TRACKS.c.family, func.count())
    .where(TRACKS.c.experiment_id == bindparam("experiment_id"))
    .group_by(TRACKS.c.reference, TRACKS.c.family)
)
_INSERT_SCREENING_RESULT = insert(schema.screening_results)


def apply_outcome(state: SessionState, out: Outcome) -> None:
    """Write an ``Outcome``: the new trial and its clips, the headphone check's results; a
    session that ended gets its time, and a complete one may close its study (targets)."""
    if out.new_trial is not None:
        add_trial(state, out.new_trial)
    if out.screening_results:
        defer_write(_INSERT_SCREENING_RESULT, [{"session_id": state.id, **row} for row in out.screening_results])
    if out.ended is not None:
        state.completed_at = utcnow()
        if out.ended == "complete":
            # A study closes itself when this session reaches its target.
            recruitment.after_session_end(state.experiment_id, state.participant_id)


def add_trial(state: SessionState, trial: NewTrial) -> None:
    """Store ``trial`` and one opaque audio token per clip (two INSERTs); it becomes the
    open trial the reply shows (``state.trial``).

    On PostgreSQL with a trial id drawn in advance (``load_for_answer``) both INSERTs
    are deferred to the commit; otherwise they run now (the id comes back from the INSERT).
    """
    v = trial.values
    tokens = [random_token() for _ in trial.clips]
    trial_id: int
    if state.next_trial_id is not None and defers_writes():
        trial_id = state.next_trial_id
        state.next_trial_id = None  # one trial per drawn id
        defer_write(_INSERT_TRIAL, [{**v, "id": trial_id}])
    else:
        trial_id = insert_row_id(_INSERT_TRIAL, v)
    defer_write(
        _INSERT_TOKENS,
        [
            {"token": token, "session_id": v["session_id"], "trial_id": trial_id, "slot": slot, **clip}
            for slot, (token, clip) in enumerate(zip(tokens, trial.clips, strict=True))
        ],
    )
    state.trial = OpenTrial(trial_id, v["trial_index"], v["kind"], v["nonce"], False, v["spec"], list(tokens))


def tracks_or_create(state: SessionState) -> list[TrackRow]:
    """The session's tracks, started now (``create_tracks``) when it has none yet."""
    tracks = session_tracks(state)
    if not tracks:
        state.tracks = tracks = create_tracks(state)
    return tracks


def create_tracks(state: SessionState) -> list[TrackRow]:
    """Start the session's tracks (``TrialDesign.plan_tracks`` on the experiment's track
    counts so far), inserted in plan order so that their ids sort as the plan."""
    experiment = state.experiment
    usage = {
        (reference, family): n
        for reference, family, n in connection().execute(_TRACK_USAGE, {"experiment_id": experiment.id})
    }
    plans = experiment.design.plan_tracks(
        state.seed, experiment.ladders, usage, experiment.flow, experiment.procedure, experiment.procedure_config
    )
    return [_insert_track(state, plan) for plan in plans]


def _insert_track(state: SessionState, plan: TrackPlan) -> TrackRow:
    values = {
        "session_id": state.id,
        "participant_id": state.participant_id,
        "experiment_id": state.experiment_id,
        "reference": plan.reference,
        "family": plan.family,
        "procedure_state": plan.procedure_state,
        "n_trials": 0,
        "finished": plan.finished,
    }
    track_id = insert_row_id(_INSERT_TRACK, values)
    return TrackRow(track_id, plan.reference, plan.family, plan.procedure_state, 0, plan.finished, None)
