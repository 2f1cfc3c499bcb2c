"""Typed SQLAlchemy 2.0 ORM classes of the web app, mapped onto ``listening_test.schema``.

The tables, their constraints and defaults are defined once, as Core tables in
``listening_test.schema`` (no Flask there, so read-only readers use them without an app);
each class here maps one of them (``__table__ = schema.trials``) and declares its
attributes as ``Mapped[...]`` for typing, plus the relationships. The schema in a
database is built only by migrations/.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.orm import Mapped, relationship

from . import schema
from .db import Model
from .schema import utcnow

__all__ = [
    "AudioToken",
    "Experiment",
    "Participant",
    "Response",
    "ScreeningResult",
    "Session",
    "Stimulus",
    "Track",
    "Trial",
    "utcnow",
]


class Experiment(Model):
    __table__ = schema.experiments

    id: Mapped[int]
    slug: Mapped[str]
    name: Mapped[str]
    test_type: Mapped[str]
    status: Mapped[str]
    manifest_path: Mapped[str]
    audio_root: Mapped[str]
    procedure: Mapped[str]
    procedure_config: Mapped[dict[str, Any]]
    config: Mapped[dict[str, Any]]
    reward_cents: Mapped[int | None]
    target_judgments: Mapped[int | None]
    prolific_completion_code: Mapped[str | None]
    prolific_screened_out_code: Mapped[str | None]
    max_sessions_per_worker: Mapped[int | None]
    mturk_environment: Mapped[str | None]
    created_at: Mapped[datetime]
    target_participants: Mapped[int | None]
    closed_reason: Mapped[str | None]
    consent_text: Mapped[str | None]
    description: Mapped[str | None]
    estimate: Mapped[dict[str, Any] | None]
    launched_at: Mapped[datetime | None]

    stimuli: Mapped[list[Stimulus]] = relationship(back_populates="experiment")


class Stimulus(Model):
    __table__ = schema.stimuli

    id: Mapped[int]
    experiment_id: Mapped[int]
    stimulus_id: Mapped[str]
    reference: Mapped[str]
    path: Mapped[str]
    family: Mapped[str]
    level: Mapped[float]
    params: Mapped[dict[str, Any]]
    seed: Mapped[int | None]
    sample_rate: Mapped[int]
    num_samples: Mapped[int]
    sha256: Mapped[str]
    fault_reason: Mapped[str | None]
    fault_at: Mapped[datetime | None]

    experiment: Mapped[Experiment] = relationship(back_populates="stimuli")


class Participant(Model):
    __table__ = schema.participants

    id: Mapped[int]
    experiment_id: Mapped[int]
    platform: Mapped[str]
    platform_worker_id: Mapped[str]
    created_at: Mapped[datetime]


class Session(Model):
    """One participant's pass through the test: an MTurk assignment, a Prolific session, a link visit."""

    __table__ = schema.sessions

    id: Mapped[int]
    public_id: Mapped[str]
    experiment_id: Mapped[int]
    participant_id: Mapped[int]
    platform_session_key: Mapped[str]
    assignment_id: Mapped[str | None]
    hit_id: Mapped[str | None]
    turk_submit_to: Mapped[str | None]
    study_id: Mapped[str | None]
    stage: Mapped[str]
    seed: Mapped[int]
    attempt: Mapped[int]
    schedule_state: Mapped[dict[str, Any]]
    n_trials: Mapped[int]
    screening_passed: Mapped[bool | None]
    completion_code: Mapped[str | None]
    client_info: Mapped[dict[str, Any]]
    created_at: Mapped[datetime]
    consented_at: Mapped[datetime | None]
    completed_at: Mapped[datetime | None]

    participant: Mapped[Participant] = relationship()
    experiment: Mapped[Experiment] = relationship()


class Track(Model):
    """A (participant, reference, family) walk along the family's ladder."""

    __table__ = schema.tracks

    id: Mapped[int]
    session_id: Mapped[int]
    participant_id: Mapped[int]
    experiment_id: Mapped[int]
    reference: Mapped[str]
    family: Mapped[str]
    procedure_state: Mapped[dict[str, Any]]
    n_trials: Mapped[int]
    finished: Mapped[bool]
    estimate: Mapped[float | None]


class Trial(Model):
    __table__ = schema.trials

    id: Mapped[int]
    session_id: Mapped[int]
    trial_index: Mapped[int]
    kind: Mapped[str]
    track_id: Mapped[int | None]
    reference_stimulus_id: Mapped[int | None]
    test_stimulus_id: Mapped[int | None]
    family: Mapped[str | None]
    level: Mapped[float | None]
    a_is_reference: Mapped[bool | None]
    spec: Mapped[dict[str, Any]]
    expected_answer: Mapped[str | None]
    nonce: Mapped[str]
    answered: Mapped[bool]
    voided_reason: Mapped[str | None]
    voided_at: Mapped[datetime | None]
    served_at: Mapped[datetime]

    reference_stimulus: Mapped[Stimulus | None] = relationship(foreign_keys=[schema.trials.c.reference_stimulus_id])
    test_stimulus: Mapped[Stimulus | None] = relationship(foreign_keys=[schema.trials.c.test_stimulus_id])
    clips: Mapped[list[AudioToken]] = relationship(order_by="AudioToken.slot")


class AudioToken(Model):
    """An opaque URL for one clip of one trial, valid only for the trial's session."""

    __table__ = schema.audio_tokens

    token: Mapped[str]
    session_id: Mapped[int]
    trial_id: Mapped[int | None]
    slot: Mapped[int]
    stimulus_id: Mapped[int | None]
    generated: Mapped[dict[str, Any] | None]

    stimulus: Mapped[Stimulus | None] = relationship()


class Response(Model):
    __table__ = schema.responses

    id: Mapped[int]
    trial_id: Mapped[int]
    session_id: Mapped[int]
    trial_index: Mapped[int]
    answer: Mapped[str]
    is_correct: Mapped[bool | None]
    response_time_ms: Mapped[int]
    play_counts: Mapped[list[int]]
    client_info: Mapped[dict[str, Any]]
    created_at: Mapped[datetime]


class ScreeningResult(Model):
    __table__ = schema.screening_results

    id: Mapped[int]
    session_id: Mapped[int]
    test: Mapped[str]
    n_trials: Mapped[int]
    n_correct: Mapped[int]
    passed: Mapped[bool]
    created_at: Mapped[datetime]
