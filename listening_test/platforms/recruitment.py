"""Recruitment: draft (test) mode, launch, targets, and closing a study when it is full.

An experiment's ``status`` is one of

- ``draft``: test mode, the state every experiment created from the CLI or the admin
  page starts in. Its participant page works (so the researcher can try the whole
  study) and says it is a test; targets do not apply. ``launch`` deletes the test
  sessions, so that counts, exports and targets start from zero, and opens it.
- ``active``: accepting new participants until a target is reached.
- ``closed``: no new participants; ``closed_reason`` says why: ``target_participants``
  or ``target_judgments`` (the study closed itself: new visitors are told it is
  full) or ``manual``. Participants already in a session can always finish.

Targets: ``target_participants`` counts participants with a complete session (not
screened out); ``target_judgments`` counts answered main trials. Both are checked
when a session ends (``after_session_end``, in the same transaction) and when a new
visitor lands (``check_accepting``), so a study never takes a participant beyond
them after it is known to be full.
"""

from __future__ import annotations

import secrets
from typing import Any

from sqlalchemy import delete, func, select, update

from ..db import connection, db
from ..errors import ApiError
from ..models import Experiment, Participant, Response, Session, Trial, utcnow

STATUSES = ("draft", "active", "closed")
TARGET_REASONS = ("target_participants", "target_judgments")


def counts(experiment_id: int, conn=None, completing_participant_id: int | None = None) -> dict[str, int]:
    """{"complete_participants", "judgments", "in_progress"} for an experiment (3 queries).

    ``completing_participant_id``: a participant whose session is completing in this
    transaction (its stage is not written yet); counted as complete.
    """
    conn = conn if conn is not None else connection()
    is_complete = Session.stage == "complete"
    if completing_participant_id is not None:
        is_complete = is_complete | (Session.participant_id == completing_participant_id)
    complete = conn.scalar(
        select(func.count(func.distinct(Session.participant_id))).where(
            Session.experiment_id == experiment_id, is_complete
        )
    )
    judgments = conn.scalar(
        select(func.count(Response.id))
        .join(Trial, Trial.id == Response.trial_id)
        .where(
            Response.session_id.in_(select(Session.id).where(Session.experiment_id == experiment_id)),
            Trial.kind == "main",
        )
    )
    running = conn.scalar(
        select(func.count(Session.id)).where(
            Session.experiment_id == experiment_id, Session.stage.not_in(("complete", "screened_out"))
        )
    )
    return {
        "complete_participants": int(complete or 0),
        "judgments": int(judgments or 0),
        "in_progress": int(running or 0),
    }


def target_reached(target_participants: int | None, target_judgments: int | None, tally: dict[str, int]) -> str | None:
    """The first target ``tally`` has reached (its reason name), or None."""
    if target_participants and tally["complete_participants"] >= target_participants:
        return "target_participants"
    if target_judgments and tally["judgments"] >= target_judgments:
        return "target_judgments"
    return None


def full_message(reason: str | None) -> str:
    what = "participants" if reason == "target_participants" else "answers"
    return f"This study is full: it already has all the {what} it needs. Thank you for your interest."


def check_accepting(experiment: Experiment) -> None:
    """Refuse a new visitor to a study that takes no one (resumed sessions never get here).

    Raises:
        ApiError: 403 ``study_full`` (a target is reached) or ``experiment_closed``.
    """
    if experiment.status == "closed":
        if experiment.closed_reason in TARGET_REASONS:
            raise ApiError(403, "study_full", full_message(experiment.closed_reason))
        raise ApiError(403, "experiment_closed", "This study is not accepting new participants at the moment.")
    if experiment.status == "draft":
        return
    if experiment.target_participants or experiment.target_judgments:
        reason = target_reached(experiment.target_participants, experiment.target_judgments, counts(experiment.id))
        if reason is not None:
            raise ApiError(403, "study_full", full_message(reason))


def after_session_end(experiment_id: int, participant_id: int) -> str | None:
    """Close an active study whose target a session of ``participant_id`` reached by
    completing just now (in the caller's transaction; the caller commits).

    Returns the reason it closed, or None.
    """
    conn = connection()
    row = conn.execute(
        select(Experiment.status, Experiment.target_participants, Experiment.target_judgments).where(
            Experiment.id == experiment_id
        )
    ).one()
    if row.status != "active" or not (row.target_participants or row.target_judgments):
        return None
    reason = target_reached(
        row.target_participants,
        row.target_judgments,
        counts(experiment_id, conn, completing_participant_id=participant_id),
    )
    if reason is not None:
        conn.execute(
            update(Experiment)
            .where(Experiment.id == experiment_id, Experiment.status == "active")
            .values(status="closed", closed_reason=reason)
        )
    return reason


def launch(experiment: Experiment) -> int:
    """Open a draft study: delete its test sessions (returns how many), set it active.

    Raises ValueError when the study is not a draft.
    """
    if experiment.status != "draft":
        raise ValueError(f"only a draft can be launched; this study is {experiment.status!r}")
    n = db.session.scalar(select(func.count(Session.id)).where(Session.experiment_id == experiment.id)) or 0
    # Participants cascade to their sessions, tracks, trials, clips and answers.
    db.session.execute(delete(Participant).where(Participant.experiment_id == experiment.id))
    experiment.status = "active"
    experiment.closed_reason = None
    experiment.launched_at = utcnow()
    return int(n)


def set_status(experiment: Experiment, status: str) -> dict[str, Any]:
    """Close or reopen a launched study by hand (``launch`` opens a draft).

    Raises ValueError for an unknown status, for reopening a study whose target is
    reached (raise the target first) and for setting a draft active without launch.
    """
    if status not in ("active", "closed"):
        raise ValueError("status must be 'active' or 'closed' (a draft is opened with launch)")
    if experiment.status == "draft" and status == "active":
        raise ValueError("this study is a draft: launch it (its test sessions are deleted)")
    if status == "active":
        reason = target_reached(experiment.target_participants, experiment.target_judgments, counts(experiment.id))
        if reason is not None:
            raise ValueError(f"the study has reached its {reason.replace('_', ' ')}; raise the target to reopen it")
        experiment.closed_reason = None
    elif experiment.status != "closed":
        experiment.closed_reason = "manual"
    experiment.status = status
    return {"status": experiment.status, "closed_reason": experiment.closed_reason}


def _code() -> str:
    return secrets.token_hex(4).upper()  # 8 characters, as Prolific's own codes


def prepare_new_experiment(
    session,
    experiment: Experiment,
    *,
    draft: bool = True,
    target_participants: int | None = None,
    prolific_screened_out_code: str | None = None,
    consent_text: str | None = None,
    description: str | None = None,
) -> None:
    """What the CLI and the admin page both do after ``create_experiment``: the same defaults.

    - status ``draft`` (test mode) unless ``draft`` is False;
    - study-wide Prolific completion codes, generated when not given: one for complete
      participants, another for screened-out ones (enter both in Prolific's study
      settings; the participant is redirected with the right one);
    - the participant target and the texts;
    - the length estimate (``estimates.study_estimate``).

    Raises ValueError for a target below 1, equal completion codes or blank texts.
    """
    from ..estimates import estimate_for_experiment

    if target_participants is not None and target_participants < 1:
        raise ValueError("target_participants must be >= 1")
    if experiment.target_judgments is not None and experiment.target_judgments < 1:
        raise ValueError("target_judgments must be >= 1")
    for name, text in (("consent_text", consent_text), ("description", description)):
        if text is not None and not text.strip():
            raise ValueError(f"{name} is blank; leave it out to use the built-in text")
    experiment.status = "draft" if draft else "active"
    experiment.target_participants = target_participants
    experiment.consent_text = consent_text.strip() if consent_text else None
    experiment.description = description.strip() if description else None
    experiment.prolific_completion_code = experiment.prolific_completion_code or _code()
    experiment.prolific_screened_out_code = prolific_screened_out_code or experiment.prolific_screened_out_code
    while not experiment.prolific_screened_out_code or (
        experiment.prolific_screened_out_code == experiment.prolific_completion_code
    ):
        if prolific_screened_out_code and prolific_screened_out_code == experiment.prolific_completion_code:
            raise ValueError("the screened-out code must differ from the completion code")
        experiment.prolific_screened_out_code = _code()
    if experiment.estimate is None:  # create_experiment computes it before opening the transaction
        experiment.estimate = estimate_for_experiment(session, experiment)
