"""Typed SQLAlchemy 2.0 models. The schema itself is built only by migrations/.

Concurrency guarantees live in constraints, not only in code:
- UNIQUE(responses.trial_id): an answer is stored at most once;
- UNIQUE(trials.session_id, trial_index): two racing requests cannot both serve
  "the next trial" of a session;
- UNIQUE(participants.experiment_id, platform, platform_worker_id) and
  UNIQUE(sessions.participant_id, platform_session_key): a reload or a double
  landing resumes the same participant and session instead of forking them.
"""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Optional

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from .db import db

TEST_TYPES = ("same_different", "ab_preference")
TRIAL_KINDS = ("main", "practice", "catch_identical", "catch_obvious", "catch_anchor", "screening")
STAGES = (
    "consent",
    "volume",
    "screening",
    "instructions",
    "practice",
    "main",
    "complete",
    "screened_out",
)


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Experiment(db.Model):
    __tablename__ = "experiments"

    id: Mapped[int] = mapped_column(primary_key=True)
    slug: Mapped[str] = mapped_column(String(64), unique=True)  # public, in participant URLs
    name: Mapped[str] = mapped_column(String(200))
    test_type: Mapped[str] = mapped_column(String(32), default="same_different")
    status: Mapped[str] = mapped_column(String(16), default="active")  # active | closed
    manifest_path: Mapped[str] = mapped_column(Text)
    audio_root: Mapped[str] = mapped_column(Text)  # the manifest's folder; stimulus paths are relative
    procedure: Mapped[str] = mapped_column(String(32))
    procedure_config: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # Flow settings: references/families per participant, catch rate, practice, screening.
    config: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    reward_cents: Mapped[Optional[int]] = mapped_column(Integer)
    target_judgments: Mapped[Optional[int]] = mapped_column(Integer)
    prolific_completion_code: Mapped[Optional[str]] = mapped_column(String(64))
    prolific_screened_out_code: Mapped[Optional[str]] = mapped_column(String(64))
    # Sessions one worker ID may hold in this experiment (across assignments / Prolific
    # sessions); None = no limit. Enforced by UNIQUE(sessions.participant_id, attempt).
    max_sessions_per_worker: Mapped[Optional[int]] = mapped_column(Integer, default=1,
                                                                   server_default="1")
    mturk_environment: Mapped[Optional[str]] = mapped_column(String(16))  # sandbox | production
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    # --- running a study (migration 0003_study; issue 17: recruitment, texts, estimates) ---
    # status may also be "draft": test mode before launch (listening_test.recruitment).
    target_participants: Mapped[Optional[int]] = mapped_column(Integer)  # complete participants wanted
    closed_reason: Mapped[Optional[str]] = mapped_column(String(32))  # target_participants | target_judgments | manual
    consent_text: Mapped[Optional[str]] = mapped_column(Text)  # None: the built-in consent text
    description: Mapped[Optional[str]] = mapped_column(Text)  # shown on the preview and consent screens
    estimate: Mapped[Optional[dict[str, Any]]] = mapped_column(JSON)  # listening_test.estimates
    launched_at: Mapped[Optional[datetime]] = mapped_column(DateTime(timezone=True))

    stimuli: Mapped[list["Stimulus"]] = relationship(back_populates="experiment")


class Stimulus(db.Model):
    __tablename__ = "stimuli"
    __table_args__ = (
        UniqueConstraint("experiment_id", "stimulus_id"),
        Index("ix_stimuli_ladder", "experiment_id", "reference", "family", "level"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    experiment_id: Mapped[int] = mapped_column(ForeignKey("experiments.id", ondelete="CASCADE"))
    stimulus_id: Mapped[str] = mapped_column(String(200))
    reference: Mapped[str] = mapped_column(String(200))  # the reference's stimulus_id
    path: Mapped[str] = mapped_column(Text)  # relative to experiment.audio_root
    family: Mapped[str] = mapped_column(String(64))  # "reference" for reference rows
    level: Mapped[float] = mapped_column(Float)
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    seed: Mapped[Optional[int]] = mapped_column(BigInteger)  # derive_seed gives 63-bit seeds
    sample_rate: Mapped[int] = mapped_column(Integer)
    num_samples: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    # Found faulty while the study runs (migration 0004): out of rotation from then on.
    fault_reason: Mapped[Optional[str]] = mapped_column(Text)
    fault_at: Mapped[Optional[datetime]] = mapped_column(DateTime(timezone=True))

    experiment: Mapped[Experiment] = relationship(back_populates="stimuli")


class Participant(db.Model):
    __tablename__ = "participants"
    __table_args__ = (UniqueConstraint("experiment_id", "platform", "platform_worker_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    experiment_id: Mapped[int] = mapped_column(ForeignKey("experiments.id", ondelete="CASCADE"))
    platform: Mapped[str] = mapped_column(String(16))  # mturk | prolific | link
    # MTurk workerId, Prolific PROLIFIC_PID, or a random id for plain links.
    platform_worker_id: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Session(db.Model):
    """One participant's pass through the test: an MTurk assignment, a Prolific session, a link visit."""

    __tablename__ = "sessions"
    __table_args__ = (
        UniqueConstraint("participant_id", "platform_session_key"),
        # The n-th session of a worker: two racing landings cannot both open attempt 0.
        Index("uq_sessions_participant_id_attempt", "participant_id", "attempt", unique=True),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    public_id: Mapped[str] = mapped_column(String(64), unique=True)  # carried in the signed token
    experiment_id: Mapped[int] = mapped_column(
        ForeignKey("experiments.id", ondelete="CASCADE"), index=True
    )
    participant_id: Mapped[int] = mapped_column(
        ForeignKey("participants.id", ondelete="CASCADE"), index=True
    )
    # assignmentId (MTurk), SESSION_ID (Prolific) or "link".
    platform_session_key: Mapped[str] = mapped_column(String(128))
    assignment_id: Mapped[Optional[str]] = mapped_column(String(128))
    hit_id: Mapped[Optional[str]] = mapped_column(String(128))
    turk_submit_to: Mapped[Optional[str]] = mapped_column(Text)
    study_id: Mapped[Optional[str]] = mapped_column(String(128))
    stage: Mapped[str] = mapped_column(String(16), default="consent")
    seed: Mapped[int] = mapped_column(BigInteger)  # drives this session's random choices
    attempt: Mapped[int] = mapped_column(Integer, default=0, server_default="0")  # 0 = first
    schedule_state: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    n_trials: Mapped[int] = mapped_column(Integer, default=0)  # trials served so far
    screening_passed: Mapped[Optional[bool]] = mapped_column(Boolean)
    completion_code: Mapped[Optional[str]] = mapped_column(String(64), unique=True)
    client_info: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    consented_at: Mapped[Optional[datetime]] = mapped_column(DateTime(timezone=True))
    completed_at: Mapped[Optional[datetime]] = mapped_column(DateTime(timezone=True))

    participant: Mapped[Participant] = relationship()
    experiment: Mapped[Experiment] = relationship()


class Track(db.Model):
    """A (participant, reference, family) walk along the family's ladder."""

    __tablename__ = "tracks"
    __table_args__ = (UniqueConstraint("session_id", "reference", "family"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    session_id: Mapped[int] = mapped_column(ForeignKey("sessions.id", ondelete="CASCADE"))
    participant_id: Mapped[int] = mapped_column(
        ForeignKey("participants.id", ondelete="CASCADE"), index=True
    )
    experiment_id: Mapped[int] = mapped_column(
        ForeignKey("experiments.id", ondelete="CASCADE"), index=True
    )
    reference: Mapped[str] = mapped_column(String(200))
    family: Mapped[str] = mapped_column(String(64))
    procedure_state: Mapped[dict[str, Any]] = mapped_column(JSON)
    n_trials: Mapped[int] = mapped_column(Integer, default=0)
    finished: Mapped[bool] = mapped_column(Boolean, default=False)
    estimate: Mapped[Optional[float]] = mapped_column(Float)


class Trial(db.Model):
    __tablename__ = "trials"
    __table_args__ = (UniqueConstraint("session_id", "trial_index"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    session_id: Mapped[int] = mapped_column(ForeignKey("sessions.id", ondelete="CASCADE"))
    trial_index: Mapped[int] = mapped_column(Integer)  # 0.. within the session, every kind
    kind: Mapped[str] = mapped_column(String(16))  # see TRIAL_KINDS
    track_id: Mapped[Optional[int]] = mapped_column(
        ForeignKey("tracks.id", ondelete="CASCADE"), index=True
    )
    reference_stimulus_id: Mapped[Optional[int]] = mapped_column(ForeignKey("stimuli.id"))
    test_stimulus_id: Mapped[Optional[int]] = mapped_column(ForeignKey("stimuli.id"))
    family: Mapped[Optional[str]] = mapped_column(String(64))
    level: Mapped[Optional[float]] = mapped_column(Float)
    # Clip order as presented: True when clip A is the reference (same/different, A/B).
    a_is_reference: Mapped[Optional[bool]] = mapped_column(Boolean)
    # For screening: {"test": "huggins", "target": 2, ...}; for A/B: the systems compared.
    spec: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    expected_answer: Mapped[Optional[str]] = mapped_column(String(16))  # catch/practice/screening
    nonce: Mapped[str] = mapped_column(String(64))
    answered: Mapped[bool] = mapped_column(Boolean, default=False)
    # A trial the server could not deliver (missing/unreadable clip): kept, not answered.
    voided_reason: Mapped[Optional[str]] = mapped_column(Text)
    voided_at: Mapped[Optional[datetime]] = mapped_column(DateTime(timezone=True))
    served_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    reference_stimulus: Mapped[Optional[Stimulus]] = relationship(foreign_keys=[reference_stimulus_id])
    test_stimulus: Mapped[Optional[Stimulus]] = relationship(foreign_keys=[test_stimulus_id])
    clips: Mapped[list["AudioToken"]] = relationship(order_by="AudioToken.slot")


class AudioToken(db.Model):
    """An opaque URL for one clip of one trial, valid only for the trial's session."""

    __tablename__ = "audio_tokens"

    token: Mapped[str] = mapped_column(String(64), primary_key=True)
    session_id: Mapped[int] = mapped_column(
        ForeignKey("sessions.id", ondelete="CASCADE"), index=True
    )
    trial_id: Mapped[Optional[int]] = mapped_column(
        ForeignKey("trials.id", ondelete="CASCADE"), index=True
    )
    slot: Mapped[int] = mapped_column(Integer)  # 0 = clip A / interval 1, ...
    stimulus_id: Mapped[Optional[int]] = mapped_column(ForeignKey("stimuli.id"))
    generated: Mapped[Optional[dict[str, Any]]] = mapped_column(JSON)  # headphone-test clips

    stimulus: Mapped[Optional[Stimulus]] = relationship()


class Response(db.Model):
    __tablename__ = "responses"

    id: Mapped[int] = mapped_column(primary_key=True)
    trial_id: Mapped[int] = mapped_column(
        ForeignKey("trials.id", ondelete="CASCADE"), unique=True
    )
    session_id: Mapped[int] = mapped_column(
        ForeignKey("sessions.id", ondelete="CASCADE"), index=True
    )
    trial_index: Mapped[int] = mapped_column(Integer)
    answer: Mapped[str] = mapped_column(String(16))  # same|different, A|B, 1|2|3
    is_correct: Mapped[Optional[bool]] = mapped_column(Boolean)  # catch, practice, screening
    response_time_ms: Mapped[int] = mapped_column(Integer)
    play_counts: Mapped[list[int]] = mapped_column(JSON, default=list)  # per clip, in slot order
    client_info: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ScreeningResult(db.Model):
    __tablename__ = "screening_results"
    __table_args__ = (UniqueConstraint("session_id", "test"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    session_id: Mapped[int] = mapped_column(ForeignKey("sessions.id", ondelete="CASCADE"))
    test: Mapped[str] = mapped_column(String(32))  # huggins | antiphase
    n_trials: Mapped[int] = mapped_column(Integer)
    n_correct: Mapped[int] = mapped_column(Integer)
    passed: Mapped[bool] = mapped_column(Boolean)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
