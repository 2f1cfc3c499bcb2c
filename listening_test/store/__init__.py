"""The session flow's SQL: read a session, let the flow core decide, write what it changed.

Every decision (the stage machine, answer checks, the headphone check's tally, the
next trial) is the pure core's (``listening_test.flow``); this package reads what it
needs, calls it, and writes the session, its tracks and the new trial and clips. It
holds all the session flow's SQL; the web layer (``web.api``) calls it through the
names below.

- ``experiments``: an experiment's settings, stimulus set (ladders, with the faults
  found so far) and length estimate, each read once per process.
- ``landing``: the visitor's session found, resumed or created (the one ORM request).
- ``sessions``: ``SessionState`` read (``load_state``, ``load_for_answer``) and written
  back (``save_state``); the open trial and the reply's ``State``.
- ``answers``: steps, answers and voids (``advance``, ``record_answer``, ``void_trial``).
- ``trials``: what a step decided, written: tracks, the new trial and its clips.

Hot path: after landing, requests never build ORM objects. ``load_state`` reads the
session (and, for a GET, its open trial and clips) in one Core SELECT into a
``SessionState``; writes are Core INSERT/UPDATE statements on the request's
connection; an experiment's settings are immutable after creation and cached per
process (``experiment_info``, ``ladders_for``, ``experiment_estimate``); only
``status`` changes, and only landing reads it.

PostgreSQL round trips (issue 18): an answer costs two. The first locks the session
row and then reads the session, the answered trial, its stored answer (a resubmit),
the tracks and a fresh trial id from the sequence: two statements in one pipeline
(``db.pg_pipeline_fetch``). Every write after that is deferred (``db.defer_write``)
and sent with the COMMIT in the second. The answer is stored by one statement that
marks the trial answered and inserts the response from the marked row, so a trial
already answered makes the INSERT fail (NOT NULL, 409) and nothing is stored.
"""

from __future__ import annotations

from .answers import advance, clip_faults, record_answer, void_trial
from .experiments import (
    REASON_CHARS,
    ExperimentInfo,
    experiment_by_slug,
    experiment_estimate,
    experiment_info,
    find_experiment,
    ladders_for,
    mark_faulty,
    session_trials_left,
)
from .landing import MAX_LANDING_RETRIES, find_or_create_session
from .sessions import (
    ID_MAX,
    UNLOADED,
    SessionState,
    current_trial,
    load_for_answer,
    load_state,
    row_id_or,
    save_state,
    state_payload,
)
from .trials import create_tracks

__all__ = [
    "ID_MAX",
    "MAX_LANDING_RETRIES",
    "REASON_CHARS",
    "UNLOADED",
    "ExperimentInfo",
    "SessionState",
    "advance",
    "clip_faults",
    "create_tracks",
    "current_trial",
    "experiment_by_slug",
    "experiment_estimate",
    "experiment_info",
    "find_experiment",
    "find_or_create_session",
    "ladders_for",
    "load_for_answer",
    "load_state",
    "mark_faulty",
    "record_answer",
    "row_id_or",
    "save_state",
    "session_trials_left",
    "state_payload",
    "void_trial",
]
