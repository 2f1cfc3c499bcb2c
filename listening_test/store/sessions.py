"""A session read from the database as a plain object, and written back.

``SessionState`` is the flow core's ``FlowSession`` plus what the database needs; it
remembers which columns changed, and ``save_state`` writes only those (and the tracks'
changed fields). ``load_state`` (GET /api/session, steps) and ``load_for_answer`` (POST
/api/session/answer and void) each read the session in one Core SELECT; on PostgreSQL
the answer's read is one round trip (``db.pg_pipeline_fetch``): it locks the session row,
then reads the session, the answered trial, its stored answer, the tracks and a trial id
drawn from the sequence for the trial this answer creates.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, bindparam, false, func, select, update

from .. import schema
from ..db import connection, defer_write, fetch_all, is_postgres, pg_pipeline_fetch
from ..errors import ApiError
from ..flow import payload
from ..flow.session import FlowSession, OpenTrial
from ..flow.stages import TRIAL_STAGES
from ..flow.trials import TrackRow
from ..models import Session  # the ORM, for landing only
from ..platforms.identity import completion_payload
from .experiments import ExperimentInfo, experiment_info

SESSIONS = schema.sessions
PARTICIPANTS = schema.participants
TRIALS = schema.trials
TRACKS = schema.tracks
AUDIO_TOKENS = schema.audio_tokens
RESPONSES = schema.responses
ID_MAX = 2**31 - 1  # every table's primary key is an INTEGER column (32-bit on PostgreSQL)


def row_id_or(value: Any, missing: int = -1) -> int:
    """``value`` if some row could have it as its id (an int in [1, ``ID_MAX``]), else
    ``missing``, an id no row has: an id out of the columns' range is looked up as an
    unknown one, so it gets that lookup's 404 on SQLite and PostgreSQL alike (never a
    500 or PostgreSQL's out-of-range DataError)."""
    if type(value) is int and 1 <= value <= ID_MAX:
        return value
    return missing


class _Unloaded:
    """The type of ``UNLOADED``."""

    def __repr__(self) -> str:
        return "UNLOADED"


UNLOADED = _Unloaded()  # SessionState.trial / OpenTrial.previous_answer: not read yet


@dataclass(frozen=True)
class _Platform:
    platform: str


_SESSION_STATE = (
    "stage",
    "schedule_state",
    "n_trials",
    "screening_passed",
    "completion_code",
    "consented_at",
    "completed_at",
)


class SessionState(FlowSession):
    """One ``sessions`` row: the core's ``FlowSession`` plus what the store needs; remembers
    which mutable columns changed (``save_state`` writes them).

    ``trial``: the open trial (an ``OpenTrial``, None, or ``UNLOADED``: not looked up
    yet); ``next_trial_id``: on PostgreSQL, a trial id drawn from the sequence in advance.
    """

    _dirty: set[str]

    def __init__(
        self,
        *,
        public_id: str,
        experiment_id: int,
        participant_id: int,
        assignment_id: str | None,
        turk_submit_to: str | None,
        platform: str | None,
        **core: Any,
    ):
        object.__setattr__(self, "_dirty", set())
        super().__init__(**core)
        self.public_id = public_id
        self.experiment_id = experiment_id
        self.participant_id = participant_id
        self.assignment_id = assignment_id
        self.turk_submit_to = turk_submit_to
        self.platform = platform
        self.consented_at: datetime | None = None
        self.completed_at: datetime | None = None
        self.trial: OpenTrial | None | _Unloaded = UNLOADED
        self.next_trial_id: int | None = None
        self.experiment: ExperimentInfo = experiment_info(experiment_id)
        self._dirty.clear()

    def __setattr__(self, name: str, value: Any) -> None:
        object.__setattr__(self, name, value)
        if name in _SESSION_STATE:
            self._dirty.add(name)

    @property
    def participant(self) -> _Platform:  # what completion_payload reads
        if self.platform is None:
            self.platform = connection().scalar(
                select(PARTICIPANTS.c.platform).where(PARTICIPANTS.c.id == self.participant_id)
            )
        return _Platform(str(self.platform))

    @classmethod
    def from_orm(cls, session: Session) -> SessionState:
        """From an ORM ``Session`` (landing, the one request that builds ORM objects)."""
        return cls(
            id=session.id,
            public_id=session.public_id,
            experiment_id=session.experiment_id,
            participant_id=session.participant_id,
            seed=session.seed,
            assignment_id=session.assignment_id,
            turk_submit_to=session.turk_submit_to,
            platform=None,
            stage=session.stage,
            schedule_state=session.schedule_state or {},
            n_trials=session.n_trials,
            screening_passed=session.screening_passed,
            completion_code=session.completion_code,
        )


class _Columns:
    """The columns of one SELECT in named groups, and each group's values in its rows by
    name (rows from ``pg_pipeline_fetch`` are plain tuples, read by position)."""

    def __init__(self, **groups: Mapping[str, Any]):
        self.columns = [column for group in groups.values() for column in group.values()]
        self._at: dict[str, tuple[slice, tuple[str, ...]]] = {}
        start = 0
        for name, group in groups.items():
            self._at[name] = (slice(start, start + len(group)), tuple(group))
            start += len(group)

    def values(self, row: Sequence[Any], group: str) -> dict[str, Any]:
        where, names = self._at[group]
        return dict(zip(names, row[where], strict=True))

    def value(self, row: Sequence[Any], group: str) -> Any:
        """The first column of ``group``."""
        return row[self._at[group][0].start]


_SESSION = {
    "id": SESSIONS.c.id,
    "public_id": SESSIONS.c.public_id,
    "experiment_id": SESSIONS.c.experiment_id,
    "participant_id": SESSIONS.c.participant_id,
    "seed": SESSIONS.c.seed,
    "assignment_id": SESSIONS.c.assignment_id,
    "turk_submit_to": SESSIONS.c.turk_submit_to,
    "platform": PARTICIPANTS.c.platform,
    "stage": SESSIONS.c.stage,
    "schedule_state": SESSIONS.c.schedule_state,
    "n_trials": SESSIONS.c.n_trials,
    "screening_passed": SESSIONS.c.screening_passed,
    "completion_code": SESSIONS.c.completion_code,
}
_TRIAL = {
    "id": TRIALS.c.id,
    "trial_index": TRIALS.c.trial_index,
    "kind": TRIALS.c.kind,
    "nonce": TRIALS.c.nonce,
    "answered": TRIALS.c.answered,
    "spec": TRIALS.c.spec,
}
_N_CLIPS = (
    select(func.count()).select_from(AUDIO_TOKENS).where(AUDIO_TOKENS.c.trial_id == TRIALS.c.id).scalar_subquery()
)
_ANSWERED_TRIAL = {
    **_TRIAL,
    "expected_answer": TRIALS.c.expected_answer,
    "track_id": TRIALS.c.track_id,
    "level": TRIALS.c.level,
    "n_clips": _N_CLIPS,
}
_TRACK = {
    "id": TRACKS.c.id,
    "reference": TRACKS.c.reference,
    "family": TRACKS.c.family,
    "procedure_state": TRACKS.c.procedure_state,
    "n_trials": TRACKS.c.n_trials,
    "finished": TRACKS.c.finished,
    "estimate": TRACKS.c.estimate,
}
_TOKEN = {"token": AUDIO_TOKENS.c.token}
_public_id = SESSIONS.c.public_id == bindparam("public_id")
_from_session = SESSIONS.join(PARTICIPANTS, PARTICIPANTS.c.id == SESSIONS.c.participant_id)

# GET /api/session: the session, its open trial (the latest, unanswered) and the trial's
# clips, in one statement (a row per clip; one row with NULL trial columns when none).
_WITH_OPEN_TRIAL = _Columns(session=_SESSION, trial=_TRIAL, token=_TOKEN)
_SELECT_WITH_OPEN_TRIAL = (
    select(*_WITH_OPEN_TRIAL.columns)
    .select_from(
        _from_session.outerjoin(
            TRIALS,
            and_(
                TRIALS.c.session_id == SESSIONS.c.id,
                TRIALS.c.trial_index == SESSIONS.c.n_trials - 1,
                TRIALS.c.answered == false(),
            ),
        ).outerjoin(AUDIO_TOKENS, AUDIO_TOKENS.c.trial_id == TRIALS.c.id)
    )
    .where(_public_id)
    .order_by(AUDIO_TOKENS.c.slot)
)
_JUST_SESSION = _Columns(session=_SESSION)
_SELECT_SESSION = select(*_JUST_SESSION.columns).select_from(_from_session).where(_public_id)
_SELECT_SESSION_FOR_UPDATE = _SELECT_SESSION.with_for_update(of=SESSIONS)
# POST /api/session/answer: the session, the trial being answered (if it is this
# session's) and the session's tracks, in one statement (a row per track).
_FOR_ANSWER = _Columns(session=_SESSION, trial=_ANSWERED_TRIAL, track=_TRACK)
_SELECT_FOR_ANSWER = (
    select(*_FOR_ANSWER.columns)
    .select_from(
        _from_session.outerjoin(
            TRIALS, and_(TRIALS.c.id == bindparam("trial_id"), TRIALS.c.session_id == SESSIONS.c.id)
        ).outerjoin(TRACKS, TRACKS.c.session_id == SESSIONS.c.id)
    )
    .where(_public_id)
    .order_by(TRACKS.c.id)
)
# PostgreSQL: lock the session row first; the read above then runs in a fresh snapshot
# (READ COMMITTED), so a racing twin's committed answer is seen by the duplicate check.
# (SQLite: BEGIN IMMEDIATE already serialises writers.)
_LOCK_SESSION = select(SESSIONS.c.id).where(_public_id).with_for_update()
# PostgreSQL (issue 18). The answer read also brings the trial's stored answer and one
# id drawn from the trials' sequence (an uncorrelated scalar subquery: drawn once, not
# per track row) for the trial this answer creates, so no write has to wait for a
# RETURNING and all of them travel with the COMMIT.
_NEXT_TRIAL_ID = select(func.nextval(func.pg_get_serial_sequence("trials", "id"))).scalar_subquery()
_FOR_ANSWER_PG = _Columns(
    session=_SESSION,
    trial=_ANSWERED_TRIAL,
    track=_TRACK,
    previous={"answer": RESPONSES.c.answer},
    next_trial_id={"id": _NEXT_TRIAL_ID},
)
_SELECT_FOR_ANSWER_PG = (
    select(*_FOR_ANSWER_PG.columns)
    .select_from(
        _from_session.outerjoin(
            TRIALS, and_(TRIALS.c.id == bindparam("trial_id"), TRIALS.c.session_id == SESSIONS.c.id)
        )
        .outerjoin(RESPONSES, RESPONSES.c.trial_id == TRIALS.c.id)
        .outerjoin(TRACKS, TRACKS.c.session_id == SESSIONS.c.id)
    )
    .where(_public_id)
    .order_by(TRACKS.c.id)
)
_OPEN_TRIAL = _Columns(trial=_TRIAL, token=_TOKEN)
_SELECT_OPEN_TRIAL = (
    select(*_OPEN_TRIAL.columns)
    .select_from(TRIALS.outerjoin(AUDIO_TOKENS, AUDIO_TOKENS.c.trial_id == TRIALS.c.id))
    .where(
        TRIALS.c.session_id == bindparam("session_id"),
        TRIALS.c.trial_index == bindparam("trial_index"),
        TRIALS.c.answered == false(),
    )
    .order_by(AUDIO_TOKENS.c.slot)
)
_SELECT_TRACKS = select(*_TRACK.values()).where(TRACKS.c.session_id == bindparam("session_id")).order_by(TRACKS.c.id)
_UPDATE_SESSION = update(SESSIONS).where(SESSIONS.c.id == bindparam("session_id"))
_UPDATE_TRACK = update(TRACKS).where(TRACKS.c.id == bindparam("track_id"))


def _state(row: Sequence[Any], columns: _Columns) -> SessionState:
    return SessionState(**columns.values(row, "session"))


def _open_trial(rows: Sequence[Sequence[Any]], columns: _Columns) -> OpenTrial | None:
    """The trial in rows of (..., trial columns, ..., token), one per clip; None when the
    trial columns are NULL (no open trial)."""
    t = columns.values(rows[0], "trial")
    if t["id"] is None:
        return None
    tokens = [token for token in (columns.value(r, "token") for r in rows) if token is not None]
    return OpenTrial(**t, tokens=tokens)


def _no_session() -> ApiError:
    return ApiError(401, "no_session", "the session token names no session; land again")


def load_state(public_id: str, *, for_update: bool = False, with_trial: bool = False) -> SessionState:
    """The session named by ``public_id``.

    ``with_trial`` also reads the open trial in the same statement (serving).
    ``for_update`` locks the session row on PostgreSQL (SQLite: BEGIN IMMEDIATE).

    Raises:
        ApiError: 401 ``no_session`` when there is none.
    """
    conn = connection()
    if with_trial and not (for_update and is_postgres()):
        rows = fetch_all(_SELECT_WITH_OPEN_TRIAL, {"public_id": public_id}, conn)
        if not rows:
            raise _no_session()
        state = _state(rows[0], _WITH_OPEN_TRIAL)
        state.trial = _open_trial(rows, _WITH_OPEN_TRIAL) if state.stage in TRIAL_STAGES else None
        return state
    query = _SELECT_SESSION_FOR_UPDATE if for_update and is_postgres() else _SELECT_SESSION
    row = conn.execute(query, {"public_id": public_id}).first()
    if row is None:
        raise _no_session()
    return _state(row, _JUST_SESSION)


def load_for_answer(public_id: str, trial_id: int | None) -> tuple[SessionState, OpenTrial | None]:
    """The session (locked for writing), its tracks, and the trial ``trial_id`` if it is
    this session's (else None); one statement (PostgreSQL: one round trip, which also
    draws the id of the trial this answer creates: ``SessionState.next_trial_id``, and
    reads the trial's stored answer: ``OpenTrial.previous_answer``; elsewhere that is
    ``UNLOADED``).

    Raises:
        ApiError: 401 ``no_session``.
    """
    params = {"public_id": public_id, "trial_id": row_id_or(trial_id)}  # out of range: no such trial
    rows: Sequence[Sequence[Any]]
    if is_postgres():
        # One round trip: the lock, then the read in a snapshot taken after the lock was
        # granted (READ COMMITTED: a racing twin's committed answer is seen).
        locked, rows = pg_pipeline_fetch((_LOCK_SESSION, params), (_SELECT_FOR_ANSWER_PG, params))
        columns = _FOR_ANSWER_PG
        if not locked or not rows:
            raise _no_session()
    else:
        rows = fetch_all(_SELECT_FOR_ANSWER, params)
        columns = _FOR_ANSWER
        if not rows:
            raise _no_session()
    first = rows[0]
    state = _state(first, columns)
    if columns is _FOR_ANSWER_PG:
        state.next_trial_id = columns.value(first, "next_trial_id")
    state.tracks = [TrackRow(**t) for t in (columns.values(r, "track") for r in rows) if t["id"] is not None]
    t = columns.values(first, "trial")
    if t["id"] is None:
        return state, None
    n_clips = t.pop("n_clips")
    previous = columns.value(first, "previous") if columns is _FOR_ANSWER_PG else UNLOADED
    return state, OpenTrial(**t, tokens=[], clip_count=n_clips, previous_answer=previous)


def save_state(state: SessionState) -> None:
    """Write what changed: the session row and its tracks (deferred on PostgreSQL: ``db.commit`` sends them)."""
    for track in state.tracks or ():
        changes = track.changes()
        if changes:
            defer_write(_UPDATE_TRACK, [{"track_id": track.id, **changes}])
    if state._dirty:
        defer_write(
            _UPDATE_SESSION, [{"session_id": state.id, **{name: getattr(state, name) for name in sorted(state._dirty)}}]
        )
        state._dirty.clear()


def session_tracks(state: SessionState) -> list[TrackRow]:
    """The session's tracks in id order (read now if ``load_for_answer`` did not)."""
    if state.tracks is None:
        state.tracks = [TrackRow(*row) for row in connection().execute(_SELECT_TRACKS, {"session_id": state.id})]
    return state.tracks


def _open_trial_params(state: SessionState) -> dict[str, int]:
    return {"session_id": state.id, "trial_index": state.n_trials - 1}


def current_trial(state: SessionState) -> OpenTrial | None:
    """The session's open trial (read now if it was not), or None outside trial stages."""
    if state.stage not in TRIAL_STAGES:
        return None
    if isinstance(state.trial, _Unloaded):
        rows = connection().execute(_SELECT_OPEN_TRIAL, _open_trial_params(state)).all()
        state.trial = _open_trial(rows, _OPEN_TRIAL) if rows else None
    trial = state.trial
    return trial if trial is not None and not trial.answered else None


def commit_read_only(state: SessionState) -> None:
    """PostgreSQL, a request that turned out to write nothing (a resubmitted answer): end
    the transaction with a COMMIT and, in the same round trip, read the open trial for the
    reply when it was not read yet. (A ROLLBACK would also make psycopg drop its prepared
    statements: one more round trip.)"""
    read_trial = state.stage in TRIAL_STAGES and isinstance(state.trial, _Unloaded)
    reads = [(_SELECT_OPEN_TRIAL, _open_trial_params(state))] if read_trial else []
    rows = pg_pipeline_fetch(*reads, commit=True)
    if read_trial:
        state.trial = _open_trial(rows[0], _OPEN_TRIAL) if rows[0] else None


def state_payload(state: SessionState, audio_url: Callable[[str], str]) -> dict[str, Any]:
    """API.md's ``State`` for the session (``flow.payload.state_payload``)."""
    experiment = state.experiment
    return payload.state_payload(
        state,
        current_trial(state),
        experiment.flow,
        experiment.design,
        completion_payload(state, experiment),
        audio_url,
    )
