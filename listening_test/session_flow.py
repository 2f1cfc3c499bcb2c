"""The participant's state machine and the two hot paths: serve a trial, record an answer.

landing -> consent -> volume -> screening -> instructions -> practice -> main -> complete
(screening may end in ``screened_out``; stages with nothing to do are skipped).

Invariant: while a session is in a trial stage (screening, practice, main) it has
exactly one unanswered trial, its latest (``trial_index == n_trials - 1``). The next
trial is created in the same transaction that records an answer (or enters the
stage), so serving a trial is a read and a reload always gets the same trial back.

Hot path: after landing, requests never build ORM objects. ``load_state`` reads the
session (and, for a GET, its open trial and clips) in one Core SELECT into a
``SessionState``; writes are Core INSERT/UPDATE statements on the request's
connection; an experiment's settings are immutable after creation and cached per
process (``experiment_info``); only ``status`` changes, and only landing reads it.

PostgreSQL round trips (issue 18): an answer costs two. The first locks the session
row and then reads the session, the answered trial, its stored answer (a resubmit),
the tracks and a fresh trial id from the sequence: two statements in one pipeline
(``db.pg_pipeline_fetch``). Every write after that is deferred (``db.defer_write``)
and sent with the COMMIT in the second. The answer is stored by one statement that
marks the trial answered and inserts the response from the marked row, so a trial
already answered makes the INSERT fail (NOT NULL, 409) and nothing is stored.
"""
from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

from flask import current_app
from sqlalchemy import and_, bindparam, false, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from . import estimates  # issue 17: progress estimate
from . import trial_factory as tf
from .ab_trials import AB_PREFERENCE
from .db import (
    connection,
    db,
    defer_write,
    defers_writes,
    is_postgres,
    pg_pipeline_fetch,
)
from .flow_config import FlowConfig
from .models import (
    AudioToken,
    Experiment,
    Participant,
    Response,
    ScreeningResult,
    Session,
    Stimulus,
    Track,
    Trial,
    utcnow,
)
from .errors import ApiError
from .platforms import recruitment  # issue 17: draft mode and targets
from .platforms.identity import MTURK_SUBMIT_BY_ENVIRONMENT, Identity, completion_payload
from .web.security import random_token, row_id_or

TRIAL_STAGES = ("screening", "practice", "main")
TERMINAL_STAGES = ("complete", "screened_out")
ORDER = ("consent", "volume", "screening", "instructions", "practice", "main", "complete")
SCREENING_CHOICES = ("1", "2", "3")
DESIGNS = {design.test_type: design for design in (tf.SAME_DIFFERENT, AB_PREFERENCE)}
MAX_RESPONSE_TIME_MS = 24 * 3600 * 1000

SESSIONS = Session.__table__
PARTICIPANTS = Participant.__table__
TRIALS = Trial.__table__
TRACKS = Track.__table__
AUDIO_TOKENS = AudioToken.__table__
RESPONSES = Response.__table__


# --- the experiment, cached per process -----------------------------------------------

@dataclass(frozen=True)
class ExperimentInfo:
    """The immutable part of an experiment (everything but ``status``)."""

    id: int
    slug: str
    test_type: str
    procedure: str
    procedure_config: dict[str, Any]
    flow: FlowConfig
    prolific_completion_code: str | None
    prolific_screened_out_code: str | None

    @property
    def design(self) -> tf.TrialDesign:
        return DESIGNS[self.test_type]


def experiment_info(experiment_id: int) -> ExperimentInfo:
    cache = current_app.extensions.setdefault("jndlab_experiments", {})
    info = cache.get(experiment_id)
    if info is None:
        e = connection().execute(
            select(Experiment.id, Experiment.slug, Experiment.test_type, Experiment.procedure,
                   Experiment.procedure_config,
                   Experiment.config, Experiment.prolific_completion_code,
                   Experiment.prolific_screened_out_code).where(Experiment.id == experiment_id)).one()
        info = ExperimentInfo(e.id, e.slug, e.test_type, e.procedure, dict(e.procedure_config or {}),
                              FlowConfig.from_dict(e.config), e.prolific_completion_code,
                              e.prolific_screened_out_code)
        cache[experiment_id] = info
    return info


def flow_of(experiment) -> FlowConfig:
    return experiment.flow if isinstance(experiment, ExperimentInfo) else FlowConfig.from_dict(experiment.config)


# --- the session, as a plain object ----------------------------------------------------

@dataclass
class OpenTrial:
    """A stored trial, as much of it as serving and answering need."""

    id: int
    trial_index: int
    kind: str
    nonce: str
    answered: bool
    spec: dict[str, Any]
    tokens: list[str]  # its clips' audio tokens, in slot order
    expected_answer: str | None = None
    track_id: int | None = None
    level: float | None = None
    previous_answer: Any = None  # the stored answer of an answered trial, when read with it (_UNLOADED: not read)

    @property
    def n_clips(self) -> int:
        return len(self.tokens)


@dataclass(frozen=True)
class _Platform:
    platform: str


_UNLOADED = object()
_SESSION_STATE = ("stage", "schedule_state", "n_trials", "screening_passed", "completion_code",
                  "consented_at", "completed_at")


class SessionState:
    """One ``sessions`` row; remembers which mutable columns changed (``save_state`` writes them)."""

    __slots__ = ("id", "public_id", "experiment_id", "participant_id", "seed", "assignment_id",
                 "turk_submit_to", "_platform", "experiment", *_SESSION_STATE, "trial", "tracks", "_dirty",
                 "next_trial_id")

    def __init__(self, **values):
        set_ = object.__setattr__
        set_(self, "_dirty", set())
        set_(self, "trial", _UNLOADED)  # the open trial: an OpenTrial, None, or not looked up yet
        set_(self, "tracks", None)
        set_(self, "consented_at", None)
        set_(self, "completed_at", None)
        set_(self, "next_trial_id", None)  # PostgreSQL: a trial id drawn from the sequence in advance
        for name, value in values.items():
            set_(self, name, value)
        set_(self, "experiment", experiment_info(self.experiment_id))

    def __setattr__(self, name, value):
        object.__setattr__(self, name, value)
        if name in _SESSION_STATE:
            self._dirty.add(name)

    @property
    def participant(self) -> _Platform:  # what completion_payload reads
        if self._platform is None:
            object.__setattr__(self, "_platform", connection().scalar(
                select(PARTICIPANTS.c.platform).where(PARTICIPANTS.c.id == self.participant_id)))
        return _Platform(self._platform)

    @classmethod
    def from_orm(cls, session: Session) -> SessionState:
        return cls(id=session.id, public_id=session.public_id, experiment_id=session.experiment_id,
                   participant_id=session.participant_id, seed=session.seed,
                   assignment_id=session.assignment_id, turk_submit_to=session.turk_submit_to,
                   _platform=None, stage=session.stage, schedule_state=session.schedule_state or {},
                   n_trials=session.n_trials, screening_passed=session.screening_passed,
                   completion_code=session.completion_code)


_STATE_COLUMNS = (SESSIONS.c.id, SESSIONS.c.public_id, SESSIONS.c.experiment_id, SESSIONS.c.participant_id,
                  SESSIONS.c.seed, SESSIONS.c.assignment_id, SESSIONS.c.turk_submit_to, PARTICIPANTS.c.platform,
                  SESSIONS.c.stage, SESSIONS.c.schedule_state, SESSIONS.c.n_trials,
                  SESSIONS.c.screening_passed, SESSIONS.c.completion_code)
_STATE_NAMES = ("id", "public_id", "experiment_id", "participant_id", "seed", "assignment_id",
                "turk_submit_to", "_platform", "stage", "schedule_state", "n_trials", "screening_passed",
                "completion_code")
_N_STATE = len(_STATE_COLUMNS)
_TRIAL_COLUMNS = (TRIALS.c.id, TRIALS.c.trial_index, TRIALS.c.kind, TRIALS.c.nonce, TRIALS.c.answered,
                  TRIALS.c.spec)
_ANSWER_COLUMNS = (TRIALS.c.expected_answer, TRIALS.c.track_id, TRIALS.c.level)
_public_id = SESSIONS.c.public_id == bindparam("public_id")
_from_session = SESSIONS.join(PARTICIPANTS, PARTICIPANTS.c.id == SESSIONS.c.participant_id)

# GET /api/session: the session, its open trial (the latest, unanswered) and the trial's
# clips, in one statement (a row per clip; one row with NULL trial columns when none).
_SELECT_WITH_OPEN_TRIAL = (
    select(*_STATE_COLUMNS, *_TRIAL_COLUMNS, AUDIO_TOKENS.c.token)
    .select_from(_from_session
                 .outerjoin(TRIALS, and_(TRIALS.c.session_id == SESSIONS.c.id,
                                         TRIALS.c.trial_index == SESSIONS.c.n_trials - 1,
                                         TRIALS.c.answered == false()))
                 .outerjoin(AUDIO_TOKENS, AUDIO_TOKENS.c.trial_id == TRIALS.c.id))
    .where(_public_id).order_by(AUDIO_TOKENS.c.slot))
_SELECT_SESSION = select(*_STATE_COLUMNS).select_from(_from_session).where(_public_id)
_SELECT_SESSION_FOR_UPDATE = _SELECT_SESSION.with_for_update(of=SESSIONS)
_N_CLIPS = (select(func.count()).select_from(AUDIO_TOKENS)
            .where(AUDIO_TOKENS.c.trial_id == TRIALS.c.id).scalar_subquery())
# POST /api/session/answer: the session, the trial being answered (if it is this
# session's) and the session's tracks, in one statement (a row per track).
_TRACK_COLUMNS = (TRACKS.c.id, TRACKS.c.reference, TRACKS.c.family, TRACKS.c.procedure_state,
                  TRACKS.c.n_trials, TRACKS.c.finished, TRACKS.c.estimate)
_SELECT_FOR_ANSWER = (
    select(*_STATE_COLUMNS, *_TRIAL_COLUMNS, *_ANSWER_COLUMNS, _N_CLIPS, *_TRACK_COLUMNS)
    .select_from(_from_session
                 .outerjoin(TRIALS, and_(TRIALS.c.id == bindparam("trial_id"),
                                         TRIALS.c.session_id == SESSIONS.c.id))
                 .outerjoin(TRACKS, TRACKS.c.session_id == SESSIONS.c.id))
    .where(_public_id).order_by(TRACKS.c.id))
_N_TRIAL = len(_TRIAL_COLUMNS) + len(_ANSWER_COLUMNS) + 1
# PostgreSQL: lock the session row first; the read above then runs in a fresh snapshot
# (READ COMMITTED), so a racing twin's committed answer is seen by the duplicate check.
# (SQLite: BEGIN IMMEDIATE already serialises writers.)
_LOCK_SESSION = select(SESSIONS.c.id).where(_public_id).with_for_update()
_SELECT_OPEN_TRIAL = (select(*_TRIAL_COLUMNS, AUDIO_TOKENS.c.token)
                      .select_from(TRIALS.outerjoin(AUDIO_TOKENS, AUDIO_TOKENS.c.trial_id == TRIALS.c.id))
                      .where(TRIALS.c.session_id == bindparam("session_id"),
                             TRIALS.c.trial_index == bindparam("trial_index"),
                             TRIALS.c.answered == false())
                      .order_by(AUDIO_TOKENS.c.slot))
_MARK_ANSWERED = (update(TRIALS).where(TRIALS.c.id == bindparam("trial_id"), TRIALS.c.answered == false())
                  .values(answered=True))
_UPDATE_SESSION = update(SESSIONS).where(SESSIONS.c.id == bindparam("session_id"))
_INSERT_RESPONSE = insert(RESPONSES)
_PREVIOUS_ANSWER = select(RESPONSES.c.answer).where(RESPONSES.c.trial_id == bindparam("trial_id"))

# PostgreSQL (issue 18). The answer read also brings the trial's stored answer and one
# id drawn from the trials' sequence (an uncorrelated scalar subquery: drawn once, not
# per track row) for the trial this answer creates, so no write has to wait for a
# RETURNING and all of them travel with the COMMIT.
_NEXT_TRIAL_ID = select(func.nextval(func.pg_get_serial_sequence("trials", "id"))).scalar_subquery()
_SELECT_FOR_ANSWER_PG = (
    select(*_STATE_COLUMNS, *_TRIAL_COLUMNS, *_ANSWER_COLUMNS, _N_CLIPS, *_TRACK_COLUMNS,
           RESPONSES.c.answer, _NEXT_TRIAL_ID)
    .select_from(_from_session
                 .outerjoin(TRIALS, and_(TRIALS.c.id == bindparam("trial_id"),
                                         TRIALS.c.session_id == SESSIONS.c.id))
                 .outerjoin(RESPONSES, RESPONSES.c.trial_id == TRIALS.c.id)
                 .outerjoin(TRACKS, TRACKS.c.session_id == SESSIONS.c.id))
    .where(_public_id).order_by(TRACKS.c.id))
# Mark the trial answered and store the answer from the marked row, in one statement:
# when the trial is not there to mark (answered already), trial_id is NULL and the
# INSERT fails with a NOT NULL violation (IntegrityError: 409, the transaction stored nothing).
_MARKED = (update(TRIALS).where(TRIALS.c.id == bindparam("mark_trial_id"), TRIALS.c.answered == false())
           .values(answered=True).returning(TRIALS.c.id).cte("marked"))
_RECORD_ANSWER_PG = insert(RESPONSES).values(
    trial_id=select(_MARKED.c.id).scalar_subquery(),
    **{name: bindparam(f"r_{name}", type_=RESPONSES.c[name].type) for name in (
        "session_id", "trial_index", "answer", "is_correct", "response_time_ms", "play_counts",
        "client_info", "created_at")}).add_cte(_MARKED)
_INSERT_TRIAL = insert(TRIALS)
_INSERT_TOKENS = insert(AUDIO_TOKENS)
_UPDATE_TRACK = update(TRACKS).where(TRACKS.c.id == bindparam("track_id"))
_INSERT_SCREENING_RESULT = insert(ScreeningResult.__table__)


def _state(row) -> SessionState:
    return SessionState(**dict(zip(_STATE_NAMES, row[:_N_STATE])))


def _open_trial(rows, offset: int = _N_STATE) -> OpenTrial | None:
    """Rows of (..., trial columns, token), one per clip; ``offset``: where the trial starts."""
    trial_id, index, kind, nonce, answered, spec, _ = rows[0][offset:]
    if trial_id is None:
        return None
    return OpenTrial(trial_id, index, kind, nonce, answered, spec, [r[-1] for r in rows if r[-1] is not None])


def _no_session() -> ApiError:
    return ApiError(401, "no_session", "the session token names no session; land again")


def load_state(public_id: str, *, for_update: bool = False, with_trial: bool = False) -> SessionState:
    """The session named by ``public_id``; raise 401 when there is none.

    ``with_trial`` also reads the open trial in the same statement (serving).
    ``for_update`` locks the session row on PostgreSQL (SQLite: BEGIN IMMEDIATE).
    """
    conn = connection()
    if with_trial and not (for_update and is_postgres()):
        rows = conn.execute(_SELECT_WITH_OPEN_TRIAL, {"public_id": public_id}).all()
        if not rows:
            raise _no_session()
        state = _state(rows[0])
        state.trial = _open_trial(rows) if state.stage in TRIAL_STAGES else None
        state._dirty.clear()
        return state
    query = _SELECT_SESSION_FOR_UPDATE if for_update and is_postgres() else _SELECT_SESSION
    row = conn.execute(query, {"public_id": public_id}).first()
    if row is None:
        raise _no_session()
    return _state(row)


def load_for_answer(public_id: str, trial_id: int | None) -> tuple[SessionState, OpenTrial | None]:
    """The session (locked for writing), its tracks, and the trial ``trial_id`` if it is this session's."""
    params = {"public_id": public_id, "trial_id": row_id_or(trial_id)}  # out of range: no such trial
    tracks_at = _N_STATE + _N_TRIAL
    if is_postgres():
        # One round trip: the lock, then the read in a snapshot taken after the lock was
        # granted (READ COMMITTED: a racing twin's committed answer is seen).
        locked, rows = pg_pipeline_fetch((_LOCK_SESSION, params), (_SELECT_FOR_ANSWER_PG, params))
        if not locked or not rows:
            raise _no_session()
        tracks_end, previous = -2, rows[0][-2]
    else:
        rows = connection().execute(_SELECT_FOR_ANSWER, params).all()
        if not rows:
            raise _no_session()
        tracks_end, previous = None, _UNLOADED
    state = _state(rows[0])
    if tracks_end is not None:
        object.__setattr__(state, "next_trial_id", rows[0][-1])
    object.__setattr__(state, "tracks", [tf.TrackRow(*r[tracks_at:tracks_end]) for r in rows
                                         if r[tracks_at] is not None])
    trial = rows[0][_N_STATE:tracks_at]
    if trial[0] is None:
        return state, None
    (tid, index, kind, nonce, answered, spec, expected, track_id, level, n_clips) = trial
    return state, OpenTrial(tid, index, kind, nonce, answered, spec, [None] * n_clips,
                            expected_answer=expected, track_id=track_id, level=level,
                            previous_answer=previous)


def save_state(state: SessionState) -> None:
    """Write what changed: the session row and its tracks (deferred on PostgreSQL: ``db.commit`` sends them)."""
    for track in state.tracks or ():  # tf.save_tracks, but deferred
        if track._dirty:
            defer_write(_UPDATE_TRACK, [
                {"track_id": track.id, **{name: getattr(track, name) for name in sorted(track._dirty)}}])
            track._dirty.clear()
    if state._dirty:
        defer_write(_UPDATE_SESSION, [{
            "session_id": state.id, **{name: getattr(state, name) for name in sorted(state._dirty)}}])
        state._dirty.clear()


# --- landing ------------------------------------------------------------------------

MAX_LANDING_RETRIES = 5


def find_or_create_session(experiment: Experiment, who: Identity, cookie_public_id: str | None,
                           client_info: dict[str, Any], *, _retries: int = MAX_LANDING_RETRIES
                           ) -> tuple[Session, bool]:
    """The session for this visitor, resumed when the platform IDs or the cookie match.

    Repeat participation (``experiment.max_sessions_per_worker``, default 1; None = no
    limit) is decided per worker ID across that platform's session keys (MTurk
    assignmentId, Prolific SESSION_ID): a worker at the limit whose latest session is
    still running resumes it (under the new assignment / session key, so that the
    hand-off goes to the one they hold now); a worker whose sessions have all ended
    (completed or screened out) is refused with 403 ``already_participated``. The n-th
    session of a worker carries ``attempt = n - 1`` and UNIQUE(participant_id, attempt)
    makes two racing landings of one worker meet: the loser retries and resumes.

    Raises:
        ApiError: 403 ``experiment_closed`` / ``already_participated``; 503
        ``database_busy`` when racing landings keep colliding.
    """
    if who.platform == "link" and cookie_public_id:
        existing = db.session.scalar(select(Session).where(
            Session.public_id == cookie_public_id, Session.experiment_id == experiment.id))
        if existing is not None:
            return existing, False
    attempt = 0
    if who.worker_id is not None:
        earlier = db.session.scalars(
            select(Session).join(Participant).where(
                Participant.experiment_id == experiment.id, Participant.platform == who.platform,
                Participant.platform_worker_id == who.worker_id).order_by(Session.attempt)).all()
        for existing in earlier:
            if existing.platform_session_key == who.session_key:
                return existing, False
        limit = experiment.max_sessions_per_worker
        if earlier and limit is not None and len(earlier) >= limit:
            return _resume_or_refuse(earlier, who), False
        attempt = max((s.attempt for s in earlier), default=-1) + 1
    recruitment.check_accepting(experiment)  # closed, or full: 403; a draft takes test visitors
    try:
        with db.session.begin_nested():  # a racing twin landing hits the unique keys
            participant = None
            if who.worker_id is not None:
                participant = db.session.scalar(select(Participant).where(
                    Participant.experiment_id == experiment.id, Participant.platform == who.platform,
                    Participant.platform_worker_id == who.worker_id))
            if participant is None:
                participant = Participant(experiment_id=experiment.id, platform=who.platform,
                                          platform_worker_id=who.worker_id or f"link-{random_token(12)}")
                db.session.add(participant)
                db.session.flush()
            session = Session(
                public_id=random_token(24), experiment_id=experiment.id, participant=participant,
                platform_session_key=who.session_key, assignment_id=who.assignment_id,
                hit_id=who.hit_id, turk_submit_to=_submit_to(experiment, who), study_id=who.study_id,
                stage="consent", seed=secrets.randbits(63), schedule_state={}, n_trials=0,
                client_info=client_info, attempt=attempt,
            )
            db.session.add(session)
            db.session.flush()
            # The volume page plays a reference clip under a token of its own.
            ladders = tf.ladders_for(experiment.id)
            first_ref = min(ladders.references)
            volume_token = AudioToken(token=random_token(), session_id=session.id, slot=0,
                                      stimulus_id=ladders.references[first_ref])
            db.session.add(volume_token)
            session.schedule_state = {"volume_token": volume_token.token, "served_in_stage": 0}
    except IntegrityError:
        if _retries <= 0:
            raise ApiError(503, "database_busy", "too many simultaneous landings; try again in a moment",
                           retry_after_s=1) from None
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
        why = ("completed this study" if latest.stage == "complete"
               else "taken the screening for this study and it ended there")
        raise ApiError(403, "already_participated",
                       f"You have already {why}. Each worker can take part only once, so this "
                       "assignment cannot be accepted: please return it. Thank you!",
                       previous_stage=latest.stage)
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


# --- stage transitions --------------------------------------------------------------

def _enter(session: SessionState, stage: str, flow: FlowConfig) -> None:
    """Move to ``stage`` and skip forward past stages with nothing to do."""
    while True:
        session.stage = stage
        session.schedule_state = {**session.schedule_state, "served_in_stage": 0}
        if stage == "screening" and not flow.screening.enabled:
            stage = "instructions"
            continue
        if stage == "practice":
            tracks = _tracks_or_create(session, flow)
            if flow.practice_trials == 0:
                stage = "main"
                continue
            _add_trial(session, session.experiment.design.practice_trial(session, tracks, 0))
        elif stage == "screening":
            _add_trial(session, tf.screening_trial(session, flow, 0))
        elif stage == "main":
            trial = tf.main_trial(session, _tracks_or_create(session, flow), flow, session.experiment.design)
            if trial is None:
                stage = "complete"
                continue
            _add_trial(session, trial)
        elif stage in TERMINAL_STAGES:
            session.completion_code = session.completion_code or _completion_code()
            session.completed_at = utcnow()
            if stage == "complete":
                # A study closes itself when this session reaches its target.
                recruitment.after_session_end(session.experiment_id, session.participant_id)
        return


def _tracks(session: SessionState) -> list[tf.TrackRow]:
    if session.tracks is None:
        session.tracks = tf.session_tracks(session)
    return session.tracks


def _tracks_or_create(session: SessionState, flow: FlowConfig):
    tracks = _tracks(session)
    if not tracks:
        session.tracks = tracks = session.experiment.design.create_tracks(session, session.experiment, flow)
    return tracks


def _completion_code() -> str:
    return secrets.token_hex(5).upper()  # 10 characters, easy to copy


def _add_trial(session: SessionState, trial: tf.NewTrial) -> None:
    """Store ``trial`` (two INSERTs); it becomes the open trial the reply shows.

    On PostgreSQL with a trial id drawn in advance (``load_for_answer``) both INSERTs
    are deferred to the commit; otherwise they run now (the id comes back from the INSERT).
    """
    v = trial.values
    if session.next_trial_id is not None and defers_writes():
        trial_id = session.next_trial_id
        object.__setattr__(session, "next_trial_id", None)  # one trial per drawn id
        tokens = [random_token() for _ in trial.clips]
        defer_write(_INSERT_TRIAL, [{**v, "id": trial_id}])
        defer_write(_INSERT_TOKENS, [
            {"token": token, "session_id": v["session_id"], "trial_id": trial_id, "slot": slot, **clip}
            for slot, (token, clip) in enumerate(zip(tokens, trial.clips))])
    else:
        trial_id, tokens = tf.insert_trial(trial)
    session.trial = OpenTrial(trial_id, v["trial_index"], v["kind"], v["nonce"], False, v["spec"], tokens)
    session.schedule_state = {**session.schedule_state,
                              "served_in_stage": int(session.schedule_state.get("served_in_stage", 0)) + 1}


def advance_from(session: SessionState, stage: str) -> None:
    """A non-trial step (consent, volume, instructions) is done. Repeats are no-ops."""
    if session.stage == stage:
        nxt = ORDER[ORDER.index(stage) + 1]
        if stage == "consent":
            session.consented_at = utcnow()
        _enter(session, nxt, session.experiment.flow)
        return
    if session.stage in TERMINAL_STAGES or ORDER.index(session.stage) > ORDER.index(stage):
        return  # already past it: idempotent
    raise ApiError(409, "wrong_stage", f"the session is at {session.stage!r}, not {stage!r}",
                   stage=session.stage)


# --- serving ------------------------------------------------------------------------

def current_trial(session: SessionState) -> OpenTrial | None:
    if session.stage not in TRIAL_STAGES:
        return None
    if session.trial is _UNLOADED:
        rows = connection().execute(
            _SELECT_OPEN_TRIAL, {"session_id": session.id, "trial_index": session.n_trials - 1}).all()
        object.__setattr__(session, "trial", _open_trial(rows, 0) if rows else None)
    trial = session.trial
    return trial if trial is not None and not trial.answered else None


def trial_payload(trial: OpenTrial, audio_url, design: tf.TrialDesign = tf.SAME_DIFFERENT) -> dict[str, Any]:
    """What the participant sees: never the kind of pair, the level or which clip is which."""
    phase = "screening" if trial.kind == "screening" else ("practice" if trial.kind == "practice" else "main")
    if trial.kind == "screening":
        labels = [str(i + 1) for i in range(len(trial.tokens))]
        choices, prompt = list(SCREENING_CHOICES), trial.spec["test"]
    else:
        labels, choices, prompt = list(design.clip_labels), list(design.choices), design.test_type
    return {
        "id": trial.id, "nonce": trial.nonce, "index": trial.trial_index, "phase": phase,
        "prompt": prompt, "choices": choices,
        "clips": [{"label": label, "url": audio_url(token)} for label, token in zip(labels, trial.tokens)],
    }


def state_payload(session: SessionState, audio_url) -> dict[str, Any]:
    experiment = session.experiment
    flow = experiment.flow
    out: dict[str, Any] = {
        "stage": session.stage,
        "trial": None,
        "completion": None,
        "progress": {"trials_answered": _answered_count(session),
                     "in_stage": int(session.schedule_state.get("served_in_stage", 0)),
                     "expected_left": session.schedule_state.get("expected_left")},
        "settings": {"require_full_playback": flow.require_full_playback,
                     "practice_trials": flow.practice_trials,
                     "screening_trials": flow.screening.trials_per_test * len(flow.screening.tests)},
    }
    if session.stage == "volume":
        out["volume"] = {"clips": [{"label": "calibration",
                                    "url": audio_url(session.schedule_state["volume_token"])}]}
    trial = current_trial(session)
    if trial is not None:
        out["trial"] = trial_payload(trial, audio_url, experiment.design)
    out["completion"] = completion_payload(session, experiment)
    return out


def _answered_count(session: SessionState) -> int:
    # Every served trial but the open one is answered (see the module's invariant).
    return session.n_trials - (1 if session.stage in TRIAL_STAGES else 0)


# --- answering ----------------------------------------------------------------------

def record_answer(session: SessionState, trial: OpenTrial | None, body: dict[str, Any]) -> dict[str, Any]:
    """Validate and store one answer, then create the next trial. Raises ApiError on 4xx.

    ``trial`` is the trial named by ``body["trial_id"]`` if it belongs to the session
    (``load_for_answer``). Returns {"duplicate": bool, "feedback": {...} | None}.
    """
    if trial is None:
        raise ApiError(404, "trial_not_found", "no such trial in this session")
    if not secrets.compare_digest(trial.nonce.encode(), body["nonce"].encode("utf-8", "replace")):
        raise ApiError(403, "bad_nonce", "the trial nonce does not match")
    if trial.answered:
        previous = trial.previous_answer
        if previous is _UNLOADED:
            previous = connection().scalar(_PREVIOUS_ANSWER, {"trial_id": trial.id})
        if previous is not None and previous == body["answer"]:
            if defers_writes():
                # A resubmit writes nothing: read the open trial for the reply and end the
                # transaction in one round trip (a COMMIT; a ROLLBACK would also make
                # psycopg drop its prepared statements, one more round trip).
                read_trial = session.stage in TRIAL_STAGES and session.trial is _UNLOADED
                rows = pg_pipeline_fetch(*[(_SELECT_OPEN_TRIAL, {
                    "session_id": session.id, "trial_index": session.n_trials - 1})][:int(read_trial)],
                    commit=True)
                if read_trial:
                    object.__setattr__(session, "trial", _open_trial(rows[0], 0) if rows[0] else None)
            return {"duplicate": True, "feedback": _feedback(trial, previous)}
        raise ApiError(409, "already_answered", "this trial was answered already, differently",
                       stage=session.stage)
    _validate_answer(trial, body, session.experiment.design)
    is_correct = None if trial.expected_answer is None else body["answer"] == trial.expected_answer
    response = {"session_id": session.id, "trial_index": trial.trial_index,
                "answer": body["answer"], "is_correct": is_correct, "response_time_ms": body["response_time_ms"],
                "play_counts": list(body["play_counts"]), "client_info": dict(body.get("client") or {})}
    if defers_writes():
        # Sent with the COMMIT; fails (nothing stored) unless it marks the trial answered.
        defer_write(_RECORD_ANSWER_PG, [{"mark_trial_id": trial.id, "r_created_at": utcnow(),
                                         **{f"r_{k}": v for k, v in response.items()}}])
    else:
        conn = connection()
        conn.execute(_INSERT_RESPONSE, {"trial_id": trial.id, **response})
        if conn.execute(_MARK_ANSWERED, {"trial_id": trial.id}).rowcount != 1:
            # Cannot happen while writers are serialised; never record an answer twice.
            raise IntegrityError("UPDATE trials SET answered", {"trial_id": trial.id}, Exception("raced"))
    trial.answered = True
    if session.trial is not _UNLOADED and session.trial is not None and session.trial.id == trial.id:
        session.trial = None
    _after_answer(session, trial, body["answer"], is_correct)
    return {"duplicate": False, "feedback": _feedback(trial, body["answer"])}


def _validate_answer(trial: OpenTrial, body: dict[str, Any], design: tf.TrialDesign) -> None:
    errors = {}
    choices = SCREENING_CHOICES if trial.kind == "screening" else design.choices
    if body["answer"] not in choices:
        errors["answer"] = f"must be one of {list(choices)}"
    counts = body["play_counts"]
    if len(counts) != trial.n_clips or not all(
            isinstance(c, int) and not isinstance(c, bool) and 0 <= c <= 10_000 for c in counts):
        errors["play_counts"] = f"must be {trial.n_clips} non-negative integers, one per clip"
    if not 0 <= body["response_time_ms"] <= MAX_RESPONSE_TIME_MS:
        errors["response_time_ms"] = "out of range"
    if errors:
        raise ApiError(422, "invalid_fields", "the answer does not fit this trial", fields=errors)


def _feedback(trial: OpenTrial, answer: str) -> dict[str, Any] | None:
    if trial.kind != "practice":
        return None  # feedback on catch or screening trials would teach the shortcut
    return {"correct": answer == trial.expected_answer, "expected": trial.expected_answer}


def _after_answer(session: SessionState, trial: OpenTrial, answer: str, is_correct: bool | None) -> None:
    flow = session.experiment.flow
    served = int(session.schedule_state.get("served_in_stage", 0))
    if trial.kind == "screening":
        tally = dict(session.schedule_state.get("screening_correct", {}))
        test = trial.spec["test"]
        tally[test] = tally.get(test, 0) + int(bool(is_correct))
        answered = dict(session.schedule_state.get("screening_answered", {}))
        answered[test] = answered.get(test, 0) + 1
        session.schedule_state = {**session.schedule_state, "screening_correct": tally,
                                  "screening_answered": answered}
        total = flow.screening.trials_per_test * len(flow.screening.tests)
        # The check stops early once a pass is out of reach (headphone.ScreeningConfig).
        if served < total and not flow.screening.cannot_pass(tally, answered):
            _add_trial(session, tf.screening_trial(session, flow, served))
            return
        defer_write(_INSERT_SCREENING_RESULT, [
            {"session_id": session.id, "test": name, "n_trials": answered.get(name, 0),
             "n_correct": tally.get(name, 0), "passed": tally.get(name, 0) >= flow.screening.min_correct}
            for name in flow.screening.tests])
        session.screening_passed = flow.screening.passes(tally)
        _enter(session, "instructions" if session.screening_passed else "screened_out", flow)
        return
    tracks = _tracks(session)
    design = session.experiment.design
    if trial.kind == "practice":
        if served < flow.practice_trials:
            _add_trial(session, design.practice_trial(session, tracks, served))
        else:
            _enter(session, "main", flow)
        return
    if trial.kind == "main" and trial.track_id is not None:
        track = next(t for t in tracks if t.id == trial.track_id)
        design.record_main_answer(track, trial, answer)
    nxt = tf.main_trial(session, tracks, flow, design)
    if nxt is None:
        _enter(session, "complete", flow)
    else:
        _add_trial(session, nxt)
        # Expected main trials still to come, the open one included (the progress bar).
        session.schedule_state = {**session.schedule_state, "expected_left": estimates.session_trials_left(
            session.experiment_id, tracks)}


# --- voiding a trial the server cannot deliver ---------------------------------------

# Voids that took no new stimulus out of rotation (a safety net: every real fault does):
# after this many the session ends as complete, with its reason in schedule_state["ended_by"].
MAX_VOIDED_TRIALS = 5
_CLIPS_OF_TRIAL = (select(AUDIO_TOKENS.c.slot, AUDIO_TOKENS.c.generated, AUDIO_TOKENS.c.stimulus_id,
                          Stimulus.__table__.c.path,
                          Experiment.__table__.c.audio_root, Stimulus.__table__.c.sample_rate,
                          Stimulus.__table__.c.num_samples)
                   .select_from(AUDIO_TOKENS
                                .outerjoin(Stimulus.__table__, Stimulus.__table__.c.id == AUDIO_TOKENS.c.stimulus_id)
                                .join(SESSIONS, SESSIONS.c.id == AUDIO_TOKENS.c.session_id)
                                .join(Experiment.__table__, Experiment.__table__.c.id == SESSIONS.c.experiment_id))
                   .where(AUDIO_TOKENS.c.trial_id == bindparam("trial_id"))
                   .order_by(AUDIO_TOKENS.c.slot))
_VOID = (update(TRIALS).where(TRIALS.c.id == bindparam("trial_id"), TRIALS.c.answered == false())
         .values(answered=True, voided_reason=bindparam("reason"), voided_at=bindparam("now")))


def clip_faults(trial_id: int) -> list[str]:
    """What is wrong with each clip of a trial that the server cannot deliver (empty: all fine)."""
    return [text for _, text in _faulty_clips(trial_id)]


def _faulty_clips(trial_id: int) -> list[tuple[int | None, str]]:
    """(stimuli.id or None, what is wrong) for each clip of the trial that cannot be delivered."""
    from .web.audio import ClipFault, load_clip

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


def void_trial(session: SessionState, trial: OpenTrial | None, nonce: str) -> dict[str, Any]:
    """Void ``trial`` when the server cannot deliver one of its clips, then move on.

    The server checks the clips itself (a participant cannot void a trial whose clips
    are fine: 409 ``clips_ok``). A voided trial is kept with its reason and no answer;
    a voided main trial finishes its track (its ladder has a hole the procedure would
    keep asking for). The faulty stimuli are taken out of rotation for the experiment
    (``trial_factory.mark_faulty``): every track depending on them closes, catch and
    practice trials skip them, the session goes on with its healthy tracks and ends
    (complete, ``schedule_state["ended_by"]`` says why) when none is left. After
    ``MAX_VOIDED_TRIALS`` voids that took no new stimulus out of rotation the session
    completes too, so a participant is never stuck. Repeats for an already voided trial are no-ops.

    Raises:
        ApiError: 404 not this session's trial; 403 bad nonce; 409 ``clips_ok`` /
        ``already_answered``.
    """
    import logging

    if trial is None:
        raise ApiError(404, "trial_not_found", "no such trial in this session")
    if not secrets.compare_digest(trial.nonce.encode(), nonce.encode("utf-8", "replace")):
        raise ApiError(403, "bad_nonce", "the trial nonce does not match")
    conn = connection()
    if trial.answered:
        reason = conn.scalar(select(TRIALS.c.voided_reason).where(TRIALS.c.id == trial.id))
        if reason is not None:
            return {"voided": True, "duplicate": True, "reason": reason}
        raise ApiError(409, "already_answered", "this trial was answered already", stage=session.stage)
    found = _faulty_clips(trial.id)
    faults = [text for _, text in found]
    if not faults:
        raise ApiError(409, "clips_ok", "every clip of this trial can be delivered; load it again")
    reason = "; ".join(faults)[:2000]
    logging.getLogger(__name__).error("voided trial %s of session %s: %s", trial.id, session.public_id, reason)
    if conn.execute(_VOID, {"trial_id": trial.id, "reason": reason, "now": utcnow()}).rowcount != 1:
        raise IntegrityError("UPDATE trials SET voided", {"trial_id": trial.id}, Exception("raced"))
    trial.answered = True
    if session.trial is not _UNLOADED and session.trial is not None and session.trial.id == trial.id:
        session.trial = None
    # The faulty stimuli leave rotation for the whole experiment (issue 14): tracks that
    # depend on them close (tf.main_trial), catch and practice trials skip them.
    known = set(tf.ladders_for(session.experiment_id).faulty)
    ladders = tf.mark_faulty(session.experiment_id, {sid: text for sid, text in found if sid is not None}, utcnow())
    fruitless = int(session.schedule_state.get("fruitless_voids", 0)) + (not set(ladders.faulty) - known)
    n_voided = int(session.schedule_state.get("voided_trials", 0)) + 1
    session.schedule_state = {**session.schedule_state, "voided_trials": n_voided, "fruitless_voids": fruitless}
    if fruitless >= MAX_VOIDED_TRIALS:
        session.schedule_state = {**session.schedule_state, "ended_by": (
            f"{fruitless} voided trials whose faults took no new stimulus out of rotation; last: {reason}")[:2000]}
        _enter(session, "complete", session.experiment.flow)
    elif trial.kind == "screening":
        _after_answer(session, trial, trial.expected_answer or "", True)  # the benefit of the doubt
    elif trial.kind == "practice":
        _after_answer(session, trial, "", None)
    else:
        tracks = _tracks(session)
        if trial.kind == "main" and trial.track_id is not None:
            for track in tracks:
                if track.id == trial.track_id:
                    track.finished = True
        nxt = tf.main_trial(session, tracks, session.experiment.flow, session.experiment.design)
        if nxt is None:
            if any(not ladders.healthy(t.reference, t.family) for t in tracks):
                session.schedule_state = {**session.schedule_state, "ended_by": (
                    "no healthy track left: the stimuli of the others were found faulty; last: " + reason)[:2000]}
            _enter(session, "complete", session.experiment.flow)
        else:
            _add_trial(session, nxt)
    return {"voided": True, "duplicate": False, "reason": reason}
