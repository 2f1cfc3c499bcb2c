"""The session flow's SQL: read a session, let the flow core decide, write what it changed.

Every decision (the stage machine, answer checks, the headphone check's tally, the
next trial) is the pure core's (``listening_test.flow``); this module reads what it
needs, calls it, and writes the session, its tracks and the new trial and clips. It
holds all the session flow's SQL; the web layer (``web.api``) calls it.

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

import logging
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from flask import current_app
from sqlalchemy import and_, bindparam, false, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from . import estimates, schema
from .clips import ClipFault, load_clip
from .db import connection, db, defer_write, defers_writes, is_postgres, pg_pipeline_fetch
from .errors import ApiError
from .flow import answers, payload, stages
from .flow.session import DESIGNS, FlowSession, OpenTrial
from .flow.stages import TERMINAL_STAGES, TRIAL_STAGES, Outcome
from .flow.trials import Ladders, NewTrial, TrackPlan, TrackRow, TrialDesign, random_token
from .flow_config import FlowConfig
from .manifest_import import REFERENCE_FAMILY
from .models import AudioToken, Experiment, Participant, Session  # the ORM, for landing only
from .platforms import recruitment
from .platforms.identity import MTURK_SUBMIT_BY_ENVIRONMENT, Identity, completion_payload
from .schema import utcnow

log = logging.getLogger(__name__)

SESSIONS = schema.sessions
PARTICIPANTS = schema.participants
TRIALS = schema.trials
TRACKS = schema.tracks
AUDIO_TOKENS = schema.audio_tokens
RESPONSES = schema.responses
STIMULI = schema.stimuli
EXPERIMENTS = schema.experiments
ID_MAX = 2**31 - 1  # every table's primary key is an INTEGER column (32-bit on PostgreSQL)
REASON_CHARS = 2000  # trials.voided_reason, stimuli.fault_reason


def row_id_or(value: Any, missing: int = -1) -> int:
    """``value`` if some row could have it as its id (an int in [1, ``ID_MAX``]), else
    ``missing``, an id no row has: an id out of the columns' range is looked up as an
    unknown one, so it gets that lookup's 404 on SQLite and PostgreSQL alike (never a
    500 or PostgreSQL's out-of-range DataError)."""
    if type(value) is int and 1 <= value <= ID_MAX:
        return value
    return missing


# --- the experiment, cached per process ------------------------------------------------


@dataclass(frozen=True)
class ExperimentInfo:
    """The immutable part of an experiment (everything but ``status``); the flow core's
    ``Study`` (its ladders and estimate come from this process's caches)."""

    id: int
    slug: str
    test_type: str
    procedure: str
    procedure_config: dict[str, Any]
    flow: FlowConfig
    prolific_completion_code: str | None
    prolific_screened_out_code: str | None

    @property
    def design(self) -> TrialDesign:
        return DESIGNS[self.test_type]

    @property
    def ladders(self) -> Ladders:
        return ladders_for(self.id)

    @property
    def estimate(self) -> dict[str, Any] | None:
        return experiment_estimate(self.id)


def experiment_by_slug(slug: str) -> Experiment | None:
    """The ORM experiment named ``slug`` (None when there is none)."""
    return db.session.scalar(select(Experiment).where(Experiment.slug == slug))


def find_experiment(slug: str) -> Experiment:
    """The ORM experiment named ``slug``.

    Raises:
        ApiError: 404 ``experiment_not_found``.
    """
    experiment = experiment_by_slug(slug)
    if experiment is None:
        raise ApiError(404, "experiment_not_found", f"no experiment {slug!r}")
    return experiment


def _cache(name: str) -> dict:
    return current_app.extensions.setdefault(name, {})


def experiment_info(experiment_id: int) -> ExperimentInfo:
    """The experiment's settings, read once per process (one SELECT).

    Raises:
        sqlalchemy.exc.NoResultFound: no experiment ``experiment_id``.
        ValueError: its stored flow settings do not validate (``FlowConfig.from_dict``).
    """
    cache = _cache("jndlab_experiments")
    info = cache.get(experiment_id)
    if info is None:
        e = (
            connection()
            .execute(
                select(
                    EXPERIMENTS.c.id,
                    EXPERIMENTS.c.slug,
                    EXPERIMENTS.c.test_type,
                    EXPERIMENTS.c.procedure,
                    EXPERIMENTS.c.procedure_config,
                    EXPERIMENTS.c.config,
                    EXPERIMENTS.c.prolific_completion_code,
                    EXPERIMENTS.c.prolific_screened_out_code,
                ).where(EXPERIMENTS.c.id == experiment_id)
            )
            .one()
        )
        info = ExperimentInfo(
            e.id,
            e.slug,
            e.test_type,
            e.procedure,
            dict(e.procedure_config or {}),
            FlowConfig.from_dict(e.config),
            e.prolific_completion_code,
            e.prolific_screened_out_code,
        )
        cache[experiment_id] = info
    return info


_LADDER_ROWS = select(
    STIMULI.c.id, STIMULI.c.stimulus_id, STIMULI.c.reference, STIMULI.c.family, STIMULI.c.level, STIMULI.c.fault_reason
).where(STIMULI.c.experiment_id == bindparam("experiment_id"))


def ladders_for(experiment_id: int) -> Ladders:
    """The experiment's stimulus set, read once per process (one SELECT); a stimulus set
    never changes after creation, only the faults found in it (``mark_faulty``)."""
    cache = _cache("jndlab_ladders")
    if experiment_id not in cache:
        rows = db.session.execute(_LADDER_ROWS, {"experiment_id": experiment_id}).all()
        cache[experiment_id] = Ladders.from_rows([tuple(r) for r in rows], REFERENCE_FAMILY)
    return cache[experiment_id]


_MARK_FAULTY = (
    update(STIMULI)
    .where(STIMULI.c.id == bindparam("sid"), STIMULI.c.fault_reason.is_(None))
    .values(fault_reason=bindparam("reason"), fault_at=bindparam("now"))
)
_FAULTY = select(STIMULI.c.id, STIMULI.c.fault_reason).where(
    STIMULI.c.experiment_id == bindparam("experiment_id"), STIMULI.c.fault_reason.is_not(None)
)


def mark_faulty(experiment_id: int, reasons: Mapping[int, str], now) -> Ladders:
    """Take stimuli (``stimuli.id -> reason``) out of rotation for the whole experiment:
    recorded on their rows (the first reason stays), and this process's ladders learn
    every fault recorded so far (other processes' included). Other processes learn them
    when they load the ladders, or at their own next fault (each process serves a faulty
    stimulus at most once more). Returns the updated ladders."""
    conn = connection()
    if reasons:
        conn.execute(
            _MARK_FAULTY, [{"sid": sid, "reason": reason[:REASON_CHARS], "now": now} for sid, reason in reasons.items()]
        )
    faulty = dict(conn.execute(_FAULTY, {"experiment_id": experiment_id}).all())
    ladders = ladders_for(experiment_id).with_faults(faulty)
    _cache("jndlab_ladders")[experiment_id] = ladders
    return ladders


def experiment_estimate(experiment_id: int) -> dict[str, Any] | None:
    """The stored length estimate of an experiment, cached per process (it never changes);
    computed (not stored) for an experiment that has none. None when it cannot be computed."""
    cache = _cache("jndlab_estimates")
    if experiment_id not in cache:
        estimate = connection().scalar(select(EXPERIMENTS.c.estimate).where(EXPERIMENTS.c.id == experiment_id))
        if estimate is None:  # created without one (e.g. by create_experiment alone): compute, keep in memory
            try:
                estimate = estimates.estimate_for_experiment(db.session, db.session.get(Experiment, experiment_id))
            except (ValueError, TypeError):
                estimate = None
        cache[experiment_id] = estimate
    return cache[experiment_id]


def session_trials_left(experiment_id: int, tracks, schedule_state: Mapping[str, Any] | None = None) -> float | None:
    """``estimates.trials_left`` for a session of ``experiment_id`` (its cached estimate and
    ``max_main_trials`` cap); see there for ``tracks`` and ``schedule_state``."""
    try:
        cap: int | None = experiment_info(experiment_id).flow.max_main_trials
    except Exception:  # noqa: BLE001 - no cap known is a safe answer for a progress figure
        cap = None
    return estimates.trials_left(experiment_estimate(experiment_id), tracks, schedule_state, cap)


# --- the session, as a plain object ----------------------------------------------------


@dataclass(frozen=True)
class _Platform:
    platform: str


_UNLOADED = object()  # SessionState.trial / OpenTrial.previous_answer: not read yet
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

    ``trial``: the open trial (an ``OpenTrial``, None, or ``_UNLOADED``: not looked up
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
        self.trial: Any = _UNLOADED
        self.next_trial_id: int | None = None
        self.experiment = experiment_info(experiment_id)
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
        return _Platform(self.platform)

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

    def values(self, row, group: str) -> dict[str, Any]:
        where, names = self._at[group]
        return dict(zip(names, row[where]))

    def value(self, row, group: str) -> Any:
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
_MARK_ANSWERED = (
    update(TRIALS).where(TRIALS.c.id == bindparam("trial_id"), TRIALS.c.answered == false()).values(answered=True)
)
_UPDATE_SESSION = update(SESSIONS).where(SESSIONS.c.id == bindparam("session_id"))
_INSERT_RESPONSE = insert(RESPONSES)
_PREVIOUS_ANSWER = select(RESPONSES.c.answer).where(RESPONSES.c.trial_id == bindparam("trial_id"))

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
# Mark the trial answered and store the answer from the marked row, in one statement:
# when the trial is not there to mark (answered already), trial_id is NULL and the
# INSERT fails with a NOT NULL violation (IntegrityError: 409, the transaction stored nothing).
_MARKED = (
    update(TRIALS)
    .where(TRIALS.c.id == bindparam("mark_trial_id"), TRIALS.c.answered == false())
    .values(answered=True)
    .returning(TRIALS.c.id)
    .cte("marked")
)
_RECORD_ANSWER_PG = (
    insert(RESPONSES)
    .values(
        trial_id=select(_MARKED.c.id).scalar_subquery(),
        **{
            name: bindparam(f"r_{name}", type_=RESPONSES.c[name].type)
            for name in (
                "session_id",
                "trial_index",
                "answer",
                "is_correct",
                "response_time_ms",
                "play_counts",
                "client_info",
                "created_at",
            )
        },
    )
    .add_cte(_MARKED)
)
_INSERT_TRIAL = insert(TRIALS)
_INSERT_TOKENS = insert(AUDIO_TOKENS)
_INSERT_TRACK = insert(TRACKS)
_UPDATE_TRACK = update(TRACKS).where(TRACKS.c.id == bindparam("track_id"))
_SELECT_TRACKS = select(*_TRACK.values()).where(TRACKS.c.session_id == bindparam("session_id")).order_by(TRACKS.c.id)
_TRACK_USAGE = (
    select(TRACKS.c.reference, TRACKS.c.family, func.count())
    .where(TRACKS.c.experiment_id == bindparam("experiment_id"))
    .group_by(TRACKS.c.reference, TRACKS.c.family)
)
_INSERT_SCREENING_RESULT = insert(schema.screening_results)


def _state(row, columns: _Columns) -> SessionState:
    return SessionState(**columns.values(row, "session"))


def _open_trial(rows, columns: _Columns) -> OpenTrial | None:
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
        rows = conn.execute(_SELECT_WITH_OPEN_TRIAL, {"public_id": public_id}).all()
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
    this session's (else None); one statement (PostgreSQL: one round trip).

    Raises:
        ApiError: 401 ``no_session``.
    """
    params = {"public_id": public_id, "trial_id": row_id_or(trial_id)}  # out of range: no such trial
    if is_postgres():
        # One round trip: the lock, then the read in a snapshot taken after the lock was
        # granted (READ COMMITTED: a racing twin's committed answer is seen).
        locked, rows = pg_pipeline_fetch((_LOCK_SESSION, params), (_SELECT_FOR_ANSWER_PG, params))
        columns = _FOR_ANSWER_PG
        if not locked or not rows:
            raise _no_session()
    else:
        rows = connection().execute(_SELECT_FOR_ANSWER, params).all()
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
    previous = columns.value(first, "previous") if columns is _FOR_ANSWER_PG else _UNLOADED
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


# --- landing ------------------------------------------------------------------------

MAX_LANDING_RETRIES = 5


def find_or_create_session(
    experiment: Experiment,
    who: Identity,
    cookie_public_id: str | None,
    client_info: dict[str, Any],
    *,
    _retries: int = MAX_LANDING_RETRIES,
) -> tuple[Session, bool]:
    """The session for this visitor, resumed when the platform IDs or the cookie match;
    returns (ORM session, whether it was created now).

    Repeat participation (``experiment.max_sessions_per_worker``, default 1; None = no
    limit) is decided per worker ID across that platform's session keys (MTurk
    assignmentId, Prolific SESSION_ID): a worker at the limit whose latest session is
    still running resumes it (under the new assignment / session key, so that the
    hand-off goes to the one they hold now); a worker whose sessions have all ended
    (completed or screened out) is refused with 403 ``already_participated``. The n-th
    session of a worker carries ``attempt = n - 1`` and UNIQUE(participant_id, attempt)
    makes two racing landings of one worker meet: the loser retries and resumes.

    Raises:
        ApiError: 403 ``experiment_closed`` / ``study_full`` / ``already_participated``;
        503 ``database_busy`` when racing landings keep colliding.
    """
    if who.platform == "link" and cookie_public_id:
        existing = db.session.scalar(
            select(Session).where(Session.public_id == cookie_public_id, Session.experiment_id == experiment.id)
        )
        if existing is not None:
            return existing, False
    attempt = 0
    if who.worker_id is not None:
        earlier = db.session.scalars(
            select(Session)
            .join(Participant)
            .where(
                Participant.experiment_id == experiment.id,
                Participant.platform == who.platform,
                Participant.platform_worker_id == who.worker_id,
            )
            .order_by(Session.attempt)
        ).all()
        for existing in earlier:
            if existing.platform_session_key == who.session_key:
                return existing, False
        limit = experiment.max_sessions_per_worker
        if earlier and limit is not None and len(earlier) >= limit:
            return _resume_or_refuse(list(earlier), who), False
        attempt = max((s.attempt for s in earlier), default=-1) + 1
    recruitment.check_accepting(experiment)  # closed, or full: 403; a draft takes test visitors
    try:
        with db.session.begin_nested():  # a racing twin landing hits the unique keys
            participant = None
            if who.worker_id is not None:
                participant = db.session.scalar(
                    select(Participant).where(
                        Participant.experiment_id == experiment.id,
                        Participant.platform == who.platform,
                        Participant.platform_worker_id == who.worker_id,
                    )
                )
            if participant is None:
                participant = Participant(
                    experiment_id=experiment.id,
                    platform=who.platform,
                    platform_worker_id=who.worker_id or f"link-{random_token(12)}",
                )
                db.session.add(participant)
                db.session.flush()
            session = Session(
                public_id=random_token(24),
                experiment_id=experiment.id,
                participant=participant,
                platform_session_key=who.session_key,
                assignment_id=who.assignment_id,
                hit_id=who.hit_id,
                turk_submit_to=_submit_to(experiment, who),
                study_id=who.study_id,
                stage="consent",
                seed=secrets.randbits(63),
                schedule_state={},
                n_trials=0,
                client_info=client_info,
                attempt=attempt,
            )
            db.session.add(session)
            db.session.flush()
            # The volume page plays a reference clip under a token of its own.
            ladders = ladders_for(experiment.id)
            first_ref = min(ladders.references)
            volume_token = AudioToken(
                token=random_token(), session_id=session.id, slot=0, stimulus_id=ladders.references[first_ref]
            )
            db.session.add(volume_token)
            session.schedule_state = {"volume_token": volume_token.token, "served_in_stage": 0}
    except IntegrityError:
        if _retries <= 0:
            raise ApiError(
                503, "database_busy", "too many simultaneous landings; try again in a moment", retry_after_s=1
            ) from None
        return find_or_create_session(experiment, who, None, client_info, _retries=_retries - 1)
    return session, True


def _submit_to(experiment: Experiment, who: Identity) -> str | None:
    """Where the MTurk hand-off posts: ``turkSubmitTo`` when MTurk sent it, else the host
    of the environment the experiment records (``mturk create-hits`` sets it), else
    production (experiments from before the environment was recorded)."""
    if who.platform != "mturk":
        return who.turk_submit_to
    if who.turk_submit_to:
        return who.turk_submit_to
    return MTURK_SUBMIT_BY_ENVIRONMENT.get(experiment.mturk_environment or "production")


def _resume_or_refuse(earlier: list[Session], who: Identity) -> Session:
    running = [s for s in earlier if s.stage not in TERMINAL_STAGES]
    if not running:
        latest = earlier[-1]
        why = (
            "completed this study"
            if latest.stage == "complete"
            else "taken the screening for this study and it ended there"
        )
        raise ApiError(
            403,
            "already_participated",
            f"You have already {why}. Each worker can take part only once, so this "
            "assignment cannot be accepted: please return it. Thank you!",
            previous_stage=latest.stage,
        )
    session = running[-1]
    # The worker now holds this assignment / Prolific session: hand off to it.
    session.platform_session_key = who.session_key
    session.assignment_id = who.assignment_id
    session.hit_id = who.hit_id
    session.study_id = who.study_id
    if who.turk_submit_to:
        session.turk_submit_to = who.turk_submit_to
    db.session.flush()
    return session


# --- steps, answers and voids: the core decides, the store writes ---------------------


def advance(state: SessionState, step: str) -> None:
    """The participant is done with a non-trial ``step`` (consent, volume, instructions):
    enter the next stage (its tracks are made first when it needs them). Repeats are no-ops.

    Raises:
        ApiError: 409 ``wrong_stage`` when the session has not reached ``step``.
    """
    target = stages.step_target(state.stage, step)
    if target is None:
        return
    if step == "consent":
        state.consented_at = utcnow()
    if stages.needs_tracks(target, state.experiment):
        _tracks_or_create(state)
    _apply(state, stages.enter(state, target, state.experiment))


def record_answer(state: SessionState, trial: OpenTrial | None, body: dict[str, Any]) -> dict[str, Any]:
    """Check and store one answer, then build the next trial (``flow.stages.after_answer``).

    ``trial`` is the trial named by ``body["trial_id"]`` if it belongs to the session
    (``load_for_answer``). Returns {"duplicate": bool, "feedback": {...} | None}: the same
    answer to an answered trial again is a duplicate and writes nothing.

    Raises:
        ApiError: 404 ``trial_not_found``, 403 ``bad_nonce``, 409 ``already_answered``,
            422 ``invalid_fields`` (``flow.answers``).
        sqlalchemy.exc.IntegrityError: the trial was answered meanwhile (SQLite; on
            PostgreSQL at the commit).
    """
    trial = answers.open_for(trial, body["nonce"])
    if trial.answered:
        previous = trial.previous_answer
        if previous is _UNLOADED:
            previous = connection().scalar(_PREVIOUS_ANSWER, {"trial_id": trial.id})
        feedback = answers.resubmit(trial, previous, body["answer"], state.stage)
        if defers_writes():
            # A resubmit writes nothing: read the open trial for the reply and end the
            # transaction in one round trip (a COMMIT; a ROLLBACK would also make
            # psycopg drop its prepared statements, one more round trip).
            read_trial = state.stage in TRIAL_STAGES and state.trial is _UNLOADED
            rows = pg_pipeline_fetch(
                *[(_SELECT_OPEN_TRIAL, {"session_id": state.id, "trial_index": state.n_trials - 1})][: int(read_trial)],
                commit=True,
            )
            if read_trial:
                state.trial = _open_trial(rows[0], _OPEN_TRIAL) if rows[0] else None
        return {"duplicate": True, "feedback": feedback}
    answers.check_answer(trial, body, state.experiment.design.choices)
    correct = answers.is_correct(trial, body["answer"])
    _store_response(state, trial, body, correct)
    _close(state, trial)
    if trial.kind != "screening":
        _tracks(state)  # read with the session by load_for_answer; practice and main need them
    _apply(state, stages.after_answer(state, trial, body["answer"], correct, state.experiment))
    return {"duplicate": False, "feedback": answers.feedback(trial, body["answer"])}


def _store_response(state: SessionState, trial: OpenTrial, body: dict[str, Any], correct: bool | None) -> None:
    response = {
        "session_id": state.id,
        "trial_index": trial.trial_index,
        "answer": body["answer"],
        "is_correct": correct,
        "response_time_ms": body["response_time_ms"],
        "play_counts": list(body["play_counts"]),
        "client_info": dict(body.get("client") or {}),
    }
    if defers_writes():
        # Sent with the COMMIT; fails (nothing stored) unless it marks the trial answered.
        defer_write(
            _RECORD_ANSWER_PG,
            [{"mark_trial_id": trial.id, "r_created_at": utcnow(), **{f"r_{k}": v for k, v in response.items()}}],
        )
        return
    conn = connection()
    conn.execute(_INSERT_RESPONSE, {"trial_id": trial.id, **response})
    if conn.execute(_MARK_ANSWERED, {"trial_id": trial.id}).rowcount != 1:
        # Cannot happen while writers are serialised; never record an answer twice.
        raise IntegrityError("UPDATE trials SET answered", {"trial_id": trial.id}, Exception("raced"))


def _close(state: SessionState, trial: OpenTrial) -> None:
    """``trial`` is answered (or voided): it is no longer the session's open trial."""
    trial.answered = True
    if state.trial is not _UNLOADED and state.trial is not None and state.trial.id == trial.id:
        state.trial = None


_CLIPS_OF_TRIAL = (
    select(
        AUDIO_TOKENS.c.slot,
        AUDIO_TOKENS.c.generated,
        AUDIO_TOKENS.c.stimulus_id,
        STIMULI.c.path,
        EXPERIMENTS.c.audio_root,
        STIMULI.c.sample_rate,
        STIMULI.c.num_samples,
    )
    .select_from(
        AUDIO_TOKENS.outerjoin(STIMULI, STIMULI.c.id == AUDIO_TOKENS.c.stimulus_id)
        .join(SESSIONS, SESSIONS.c.id == AUDIO_TOKENS.c.session_id)
        .join(EXPERIMENTS, EXPERIMENTS.c.id == SESSIONS.c.experiment_id)
    )
    .where(AUDIO_TOKENS.c.trial_id == bindparam("trial_id"))
    .order_by(AUDIO_TOKENS.c.slot)
)
_VOID = (
    update(TRIALS)
    .where(TRIALS.c.id == bindparam("trial_id"), TRIALS.c.answered == false())
    .values(answered=True, voided_reason=bindparam("reason"), voided_at=bindparam("now"))
)


def clip_faults(trial_id: int) -> list[str]:
    """What is wrong with each clip of a trial that the server cannot deliver (empty: all fine)."""
    return [text for _, text in _faulty_clips(trial_id)]


def _faulty_clips(trial_id: int) -> list[tuple[int | None, str]]:
    """(stimuli.id or None, what is wrong) for each clip of the trial that cannot be delivered."""
    faults: list[tuple[int | None, str]] = []
    for row in connection().execute(_CLIPS_OF_TRIAL, {"trial_id": trial_id}).all():
        if row.generated is not None:
            continue
        if row.path is None:
            faults.append((None, f"clip {row.slot}: no stimulus"))
            continue
        try:
            load_clip(row.audio_root, row.path, sample_rate=row.sample_rate, num_samples=row.num_samples)
        except ClipFault as fault:
            faults.append((row.stimulus_id, f"clip {row.slot}: {fault}"))
    return faults


def void_trial(state: SessionState, trial: OpenTrial | None, nonce: str) -> dict[str, Any]:
    """Void ``trial`` when the server cannot deliver one of its clips, then move on.

    The server checks the clips itself (a participant cannot void a trial whose clips
    are fine: 409 ``clips_ok``). A voided trial is kept with its reason and no answer.
    The faulty stimuli are taken out of rotation for the experiment (``mark_faulty``):
    every track depending on them closes, catch and practice trials skip them; what the
    session does next is ``flow.stages.after_void``'s. Repeats for an already voided
    trial are no-ops. Returns {"voided": True, "duplicate": bool, "reason": str}.

    Raises:
        ApiError: 404 not this session's trial; 403 bad nonce; 409 ``clips_ok`` /
        ``already_answered``.
        sqlalchemy.exc.IntegrityError: the trial was answered or voided meanwhile.
    """
    trial = answers.open_for(trial, nonce)
    conn = connection()
    if trial.answered:
        reason = conn.scalar(select(TRIALS.c.voided_reason).where(TRIALS.c.id == trial.id))
        if reason is not None:
            return {"voided": True, "duplicate": True, "reason": reason}
        raise ApiError(409, "already_answered", "this trial was answered already", stage=state.stage)
    found = _faulty_clips(trial.id)
    if not found:
        raise ApiError(409, "clips_ok", "every clip of this trial can be delivered; load it again")
    reason = "; ".join(text for _, text in found)[:REASON_CHARS]
    log.error("voided trial %s of session %s: %s", trial.id, state.public_id, reason)
    if conn.execute(_VOID, {"trial_id": trial.id, "reason": reason, "now": utcnow()}).rowcount != 1:
        raise IntegrityError("UPDATE trials SET voided", {"trial_id": trial.id}, Exception("raced"))
    _close(state, trial)
    known = set(ladders_for(state.experiment_id).faulty)
    ladders = mark_faulty(state.experiment_id, {sid: text for sid, text in found if sid is not None}, utcnow())
    _tracks(state)  # read with the session by load_for_answer; what comes next may need them
    _apply(
        state,
        stages.after_void(
            state, trial, state.experiment, took_new_stimulus=bool(set(ladders.faulty) - known), reason=reason
        ),
    )
    return {"voided": True, "duplicate": False, "reason": reason}


# --- writing what a step decided ------------------------------------------------------


def _apply(state: SessionState, out: Outcome) -> None:
    """Write an ``Outcome``: the new trial and its clips, the headphone check's results; a
    session that ended gets its time, and a complete one may close its study (targets)."""
    if out.new_trial is not None:
        _add_trial(state, out.new_trial)
    if out.screening_results:
        defer_write(_INSERT_SCREENING_RESULT, [{"session_id": state.id, **row} for row in out.screening_results])
    if out.ended is not None:
        state.completed_at = utcnow()
        if out.ended == "complete":
            # A study closes itself when this session reaches its target.
            recruitment.after_session_end(state.experiment_id, state.participant_id)


def _add_trial(state: SessionState, trial: NewTrial) -> None:
    """Store ``trial`` and one opaque audio token per clip (two INSERTs); it becomes the
    open trial the reply shows.

    On PostgreSQL with a trial id drawn in advance (``load_for_answer``) both INSERTs
    are deferred to the commit; otherwise they run now (the id comes back from the INSERT).
    """
    v = trial.values
    tokens = [random_token() for _ in trial.clips]
    if state.next_trial_id is not None and defers_writes():
        trial_id = state.next_trial_id
        state.next_trial_id = None  # one trial per drawn id
        defer_write(_INSERT_TRIAL, [{**v, "id": trial_id}])
    else:
        trial_id = connection().execute(_INSERT_TRIAL, v).inserted_primary_key[0]
    defer_write(
        _INSERT_TOKENS,
        [
            {"token": token, "session_id": v["session_id"], "trial_id": trial_id, "slot": slot, **clip}
            for slot, (token, clip) in enumerate(zip(tokens, trial.clips))
        ],
    )
    state.trial = OpenTrial(trial_id, v["trial_index"], v["kind"], v["nonce"], False, v["spec"], list(tokens))


def _tracks(state: SessionState) -> list[TrackRow]:
    if state.tracks is None:
        state.tracks = [TrackRow(*row) for row in connection().execute(_SELECT_TRACKS, {"session_id": state.id})]
    return state.tracks


def _tracks_or_create(state: SessionState) -> list[TrackRow]:
    tracks = _tracks(state)
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
    track_id = connection().execute(_INSERT_TRACK, values).inserted_primary_key[0]
    return TrackRow(track_id, plan.reference, plan.family, plan.procedure_state, 0, plan.finished, None)


# --- replies --------------------------------------------------------------------------


def current_trial(state: SessionState) -> OpenTrial | None:
    """The session's open trial (read now if it was not), or None outside trial stages."""
    if state.stage not in TRIAL_STAGES:
        return None
    if state.trial is _UNLOADED:
        rows = (
            connection().execute(_SELECT_OPEN_TRIAL, {"session_id": state.id, "trial_index": state.n_trials - 1}).all()
        )
        state.trial = _open_trial(rows, _OPEN_TRIAL) if rows else None
    trial = state.trial
    return trial if trial is not None and not trial.answered else None


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
