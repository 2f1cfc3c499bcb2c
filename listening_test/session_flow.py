"""The participant's state machine and the two hot paths: serve a trial, record an answer.

landing -> consent -> volume -> screening -> instructions -> practice -> main -> complete
(screening may end in ``screened_out``; stages with nothing to do are skipped).

Invariant: while a session is in a trial stage (screening, practice, main) it has
exactly one unanswered trial, its latest. The next trial is created in the same
transaction that records an answer (or enters the stage), so serving a trial is a
read and a reload always gets the same trial back.
"""
from __future__ import annotations

import secrets
from typing import Any

from flask import g
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import joinedload, selectinload

from . import trial_factory as tf
from .db import db, is_postgres
from .flow_config import FlowConfig
from .models import (AudioToken, Experiment, Participant, Response, ScreeningResult,
                     Session, Trial, utcnow)
from .platforms import Identity, completion_payload
from .security import ApiError, random_token

TRIAL_STAGES = ("screening", "practice", "main")
TERMINAL_STAGES = ("complete", "screened_out")
ORDER = ("consent", "volume", "screening", "instructions", "practice", "main", "complete")
CHOICES = {"same_different": ["same", "different"], "screening": ["1", "2", "3"]}
MAX_RESPONSE_TIME_MS = 24 * 3600 * 1000


def flow_of(experiment: Experiment) -> FlowConfig:
    return FlowConfig.from_dict(experiment.config)


# --- landing ------------------------------------------------------------------------

def find_or_create_session(experiment: Experiment, who: Identity, cookie_public_id: str | None,
                           client_info: dict[str, Any]) -> tuple[Session, bool]:
    """The session for this visitor, resumed when the platform IDs or the cookie match."""
    if who.platform == "link" and cookie_public_id:
        existing = db.session.scalar(select(Session).where(
            Session.public_id == cookie_public_id, Session.experiment_id == experiment.id))
        if existing is not None:
            return existing, False
    if who.worker_id is not None:
        existing = db.session.scalar(
            select(Session).join(Participant).where(
                Participant.experiment_id == experiment.id, Participant.platform == who.platform,
                Participant.platform_worker_id == who.worker_id,
                Session.platform_session_key == who.session_key))
        if existing is not None:
            return existing, False
    if experiment.status != "active":
        raise ApiError(403, "experiment_closed", "this experiment is not accepting new participants")
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
                hit_id=who.hit_id, turk_submit_to=who.turk_submit_to, study_id=who.study_id,
                stage="consent", seed=secrets.randbits(31), schedule_state={}, n_trials=0,
                client_info=client_info,
            )
            db.session.add(session)
            db.session.flush()
            # The volume page plays a reference clip under a token of its own.
            ladders = tf.ladders_for(experiment.id)
            first_ref = sorted(ladders.references)[0]
            volume_token = AudioToken(token=random_token(), session_id=session.id, slot=0,
                                      stimulus_id=ladders.references[first_ref])
            db.session.add(volume_token)
            session.schedule_state = {"volume_token": volume_token.token, "served_in_stage": 0}
    except IntegrityError:
        return find_or_create_session(experiment, who, None, client_info)
    return session, True


def load_session(public_id: str, *, for_update: bool = False) -> Session:
    query = select(Session).where(Session.public_id == public_id).options(
        joinedload(Session.experiment, innerjoin=True), joinedload(Session.participant, innerjoin=True))
    if for_update and is_postgres():
        # Serialise one participant's writes; SQLite already serialises via BEGIN IMMEDIATE.
        query = query.with_for_update(of=Session)
    session = db.session.scalar(query)
    if session is None:
        raise ApiError(401, "no_session", "the session token names no session; land again")
    return session


# --- stage transitions --------------------------------------------------------------

def _enter(session: Session, stage: str, flow: FlowConfig) -> None:
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
            _add_trial(session, tf.practice_trial(session, tracks, 0))
        elif stage == "screening":
            _add_trial(session, tf.screening_trial(session, flow, 0))
        elif stage == "main":
            trial = tf.main_trial(session, _tracks_or_create(session, flow), flow)
            if trial is None:
                stage = "complete"
                continue
            _add_trial(session, trial)
        elif stage in TERMINAL_STAGES:
            session.completion_code = session.completion_code or _completion_code()
            session.completed_at = utcnow()
        return


def _tracks_or_create(session: Session, flow: FlowConfig):
    tracks = tf.session_tracks(session)
    return tracks or tf.create_tracks(session, session.experiment, flow)


def _completion_code() -> str:
    return secrets.token_hex(5).upper()  # 10 characters, easy to copy


def _add_trial(session: Session, trial: Trial) -> None:
    db.session.add(trial)
    g.jndlab_new_trial = trial  # the reply shows it without querying it back
    session.schedule_state = {**session.schedule_state,
                              "served_in_stage": int(session.schedule_state.get("served_in_stage", 0)) + 1}


def advance_from(session: Session, stage: str) -> None:
    """A non-trial step (consent, volume, instructions) is done. Repeats are no-ops."""
    if session.stage == stage:
        nxt = ORDER[ORDER.index(stage) + 1]
        if stage == "consent":
            session.consented_at = utcnow()
        _enter(session, nxt, flow_of(session.experiment))
        return
    if session.stage in TERMINAL_STAGES or ORDER.index(session.stage) > ORDER.index(stage):
        return  # already past it: idempotent
    raise ApiError(409, "wrong_stage", f"the session is at {session.stage!r}, not {stage!r}",
                   stage=session.stage)


# --- serving ------------------------------------------------------------------------

def current_trial(session: Session) -> Trial | None:
    if session.stage not in TRIAL_STAGES:
        return None
    fresh = g.get("jndlab_new_trial")
    if fresh is not None and fresh.session_id == session.id and fresh.id is not None and not fresh.answered:
        return fresh
    trial = db.session.scalar(
        select(Trial).where(Trial.session_id == session.id).order_by(Trial.trial_index.desc())
        .limit(1).options(selectinload(Trial.clips)))
    return trial if trial is not None and not trial.answered else None


def trial_payload(trial: Trial, audio_url) -> dict[str, Any]:
    """What the participant sees: never the kind of pair, the level or which clip is which."""
    phase = "screening" if trial.kind == "screening" else ("practice" if trial.kind == "practice" else "main")
    if trial.kind == "screening":
        labels = [str(i + 1) for i in range(len(trial.clips))]
        choices, prompt = CHOICES["screening"], trial.spec["test"]
    else:
        labels, choices, prompt = ["A", "B"], CHOICES["same_different"], "same_different"
    return {
        "id": trial.id, "nonce": trial.nonce, "index": trial.trial_index, "phase": phase,
        "prompt": prompt, "choices": choices,
        "clips": [{"label": label, "url": audio_url(clip.token)} for label, clip in zip(labels, trial.clips)],
    }


def state_payload(session: Session, audio_url) -> dict[str, Any]:
    experiment = session.experiment
    flow = flow_of(experiment)
    out: dict[str, Any] = {
        "stage": session.stage,
        "trial": None,
        "completion": None,
        "progress": {"trials_answered": _answered_count(session),
                     "in_stage": int(session.schedule_state.get("served_in_stage", 0))},
        "settings": {"require_full_playback": flow.require_full_playback,
                     "practice_trials": flow.practice_trials,
                     "screening_trials": flow.screening.trials_per_test * len(flow.screening.tests)},
    }
    if session.stage == "volume":
        out["volume"] = {"clips": [{"label": "calibration",
                                    "url": audio_url(session.schedule_state["volume_token"])}]}
    trial = current_trial(session)
    if trial is not None:
        out["trial"] = trial_payload(trial, audio_url)
    out["completion"] = completion_payload(session, experiment)
    return out


def _answered_count(session: Session) -> int:
    # Every served trial but the open one is answered (see the module's invariant).
    return session.n_trials - (1 if session.stage in TRIAL_STAGES else 0)


# --- answering ----------------------------------------------------------------------

def record_answer(session: Session, body: dict[str, Any]) -> dict[str, Any]:
    """Validate and store one answer, then create the next trial. Raises ApiError on 4xx.

    Returns {"duplicate": bool, "feedback": {...} | None}.
    """
    trial = db.session.scalar(select(Trial).where(
        Trial.id == body["trial_id"], Trial.session_id == session.id).options(selectinload(Trial.clips)))
    if trial is None:
        raise ApiError(404, "trial_not_found", "no such trial in this session")
    if not secrets.compare_digest(trial.nonce, body["nonce"]):
        raise ApiError(403, "bad_nonce", "the trial nonce does not match")
    if trial.answered:
        previous = db.session.scalar(select(Response).where(Response.trial_id == trial.id))
        if previous is not None and previous.answer == body["answer"]:
            return {"duplicate": True, "feedback": _feedback(trial, previous.answer)}
        raise ApiError(409, "already_answered", "this trial was answered already, differently",
                       stage=session.stage)
    _validate_answer(trial, body)
    is_correct = None if trial.expected_answer is None else body["answer"] == trial.expected_answer
    trial.answered = True
    db.session.add(Response(
        trial_id=trial.id, session_id=session.id, trial_index=trial.trial_index,
        answer=body["answer"], is_correct=is_correct, response_time_ms=body["response_time_ms"],
        play_counts=list(body["play_counts"]), client_info=dict(body.get("client") or {}),
    ))
    _after_answer(session, trial, body["answer"], is_correct)
    return {"duplicate": False, "feedback": _feedback(trial, body["answer"])}


def _validate_answer(trial: Trial, body: dict[str, Any]) -> None:
    errors = {}
    choices = CHOICES["screening"] if trial.kind == "screening" else CHOICES["same_different"]
    if body["answer"] not in choices:
        errors["answer"] = f"must be one of {choices}"
    counts = body["play_counts"]
    if len(counts) != len(trial.clips) or not all(
            isinstance(c, int) and not isinstance(c, bool) and 0 <= c <= 10_000 for c in counts):
        errors["play_counts"] = f"must be {len(trial.clips)} non-negative integers, one per clip"
    if not 0 <= body["response_time_ms"] <= MAX_RESPONSE_TIME_MS:
        errors["response_time_ms"] = "out of range"
    if errors:
        raise ApiError(422, "invalid_fields", "the answer does not fit this trial", fields=errors)


def _feedback(trial: Trial, answer: str) -> dict[str, Any] | None:
    if trial.kind != "practice":
        return None  # feedback on catch or screening trials would teach the shortcut
    return {"correct": answer == trial.expected_answer, "expected": trial.expected_answer}


def _after_answer(session: Session, trial: Trial, answer: str, is_correct: bool | None) -> None:
    flow = flow_of(session.experiment)
    served = int(session.schedule_state.get("served_in_stage", 0))
    if trial.kind == "screening":
        tally = dict(session.schedule_state.get("screening_correct", {}))
        test = trial.spec["test"]
        tally[test] = tally.get(test, 0) + int(bool(is_correct))
        session.schedule_state = {**session.schedule_state, "screening_correct": tally}
        total = flow.screening.trials_per_test * len(flow.screening.tests)
        if served < total:
            _add_trial(session, tf.screening_trial(session, flow, served))
            return
        for name in flow.screening.tests:
            n_correct = tally.get(name, 0)
            db.session.add(ScreeningResult(session_id=session.id, test=name,
                                           n_trials=flow.screening.trials_per_test, n_correct=n_correct,
                                           passed=n_correct >= flow.screening.min_correct))
        session.screening_passed = flow.screening.passes(tally)
        _enter(session, "instructions" if session.screening_passed else "screened_out", flow)
        return
    tracks = tf.session_tracks(session)
    if trial.kind == "practice":
        if served < flow.practice_trials:
            _add_trial(session, tf.practice_trial(session, tracks, served))
        else:
            _enter(session, "main", flow)
        return
    if trial.kind == "main" and trial.track_id is not None:
        track = next(t for t in tracks if t.id == trial.track_id)
        tf.update_track(track, trial.level, answer == "different")
    nxt = tf.main_trial(session, tracks, flow)
    if nxt is None:
        _enter(session, "complete", flow)
    else:
        _add_trial(session, nxt)
