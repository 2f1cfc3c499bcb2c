"""Landing: the session for a visitor, found, resumed or created (``find_or_create_session``).

The one request of a session that works on ORM objects (``models.Session``,
``Participant``, ``AudioToken``); after it, ``SessionState.from_orm`` hands the session
to the Core hot path. Repeat participation per worker ID, the platform hand-off to the
assignment a worker holds now, and racing landings of one worker are settled here.
"""

from __future__ import annotations

import secrets
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from ..db import db
from ..errors import ApiError
from ..flow.stages import TERMINAL_STAGES
from ..flow.trials import random_token
from ..models import AudioToken, Experiment, Participant, Session
from ..platforms import recruitment
from ..platforms.identity import MTURK_SUBMIT_BY_ENVIRONMENT, Identity
from .experiments import ladders_for

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
