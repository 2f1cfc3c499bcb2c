"""Steps, answers and voids: the flow core decides, this module writes.

``advance`` (consent, volume, instructions), ``record_answer`` and ``void_trial`` each
check the request with the core (``flow.answers``, ``flow.stages``), write what it
changed, and hand the core's ``Outcome`` to ``trials.apply_outcome``.

PostgreSQL round trips (issue 18): an answer costs two. The first is the read
(``sessions.load_for_answer``); every write after it is deferred (``db.defer_write``)
and sent with the COMMIT in the second. The answer is stored by one statement that
marks the trial answered and inserts the response from the marked row, so a trial
already answered makes the INSERT fail (NOT NULL, 409) and nothing is stored.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import bindparam, false, insert, select, update
from sqlalchemy.exc import IntegrityError

from .. import schema
from ..clips import ClipFault, load_clip
from ..db import connection, defer_write, defers_writes, execute_write
from ..errors import ApiError
from ..flow import answers, stages
from ..flow.session import OpenTrial
from ..schema import utcnow
from .experiments import REASON_CHARS, ladders_for, mark_faulty
from .sessions import UNLOADED, SessionState, commit_read_only, session_tracks
from .trials import apply_outcome, tracks_or_create

log = logging.getLogger(__name__)

SESSIONS = schema.sessions
TRIALS = schema.trials
AUDIO_TOKENS = schema.audio_tokens
RESPONSES = schema.responses
STIMULI = schema.stimuli
EXPERIMENTS = schema.experiments

_MARK_ANSWERED = (
    update(TRIALS).where(TRIALS.c.id == bindparam("trial_id"), TRIALS.c.answered == false()).values(answered=True)
)
_INSERT_RESPONSE = insert(RESPONSES)
_PREVIOUS_ANSWER = select(RESPONSES.c.answer).where(RESPONSES.c.trial_id == bindparam("trial_id"))
# PostgreSQL: mark the trial answered and store the answer from the marked row, in one
# statement: when the trial is not there to mark (answered already), trial_id is NULL and
# the INSERT fails with a NOT NULL violation (IntegrityError: 409, the transaction stored nothing).
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
        tracks_or_create(state)
    apply_outcome(state, stages.enter(state, target, state.experiment))


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
        if previous is UNLOADED:
            previous = connection().scalar(_PREVIOUS_ANSWER, {"trial_id": trial.id})
        feedback = answers.resubmit(trial, previous, body["answer"], state.stage)
        if defers_writes():
            commit_read_only(state)  # a resubmit writes nothing
        return {"duplicate": True, "feedback": feedback}
    answers.check_answer(trial, body, state.experiment.design.choices)
    correct = answers.is_correct(trial, body["answer"])
    _store_response(state, trial, body, correct)
    _close(state, trial)
    if trial.kind != "screening":
        session_tracks(state)  # read with the session by load_for_answer; practice and main need them
    apply_outcome(state, stages.after_answer(state, trial, body["answer"], correct, state.experiment))
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
    execute_write(_INSERT_RESPONSE, {"trial_id": trial.id, **response}, conn)
    if execute_write(_MARK_ANSWERED, {"trial_id": trial.id}, conn).rowcount != 1:
        # Cannot happen while writers are serialised; never record an answer twice.
        raise IntegrityError("UPDATE trials SET answered", {"trial_id": trial.id}, Exception("raced"))


def _close(state: SessionState, trial: OpenTrial) -> None:
    """``trial`` is answered (or voided): it is no longer the session's open trial."""
    trial.answered = True
    if isinstance(state.trial, OpenTrial) and state.trial.id == trial.id:
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
        voided = conn.scalar(select(TRIALS.c.voided_reason).where(TRIALS.c.id == trial.id))
        if voided is not None:
            return {"voided": True, "duplicate": True, "reason": voided}
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
    session_tracks(state)  # read with the session by load_for_answer; what comes next may need them
    apply_outcome(
        state,
        stages.after_void(
            state, trial, state.experiment, took_new_stimulus=bool(set(ladders.faulty) - known), reason=reason
        ),
    )
    return {"voided": True, "duplicate": False, "reason": reason}
