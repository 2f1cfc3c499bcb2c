"""The listening-test database schema as SQLAlchemy Core tables: one ``MetaData``, no Flask.

This is the one definition of the tables. ``listening_test.models`` maps its typed ORM
classes onto them (``__table__ = schema.trials``); read-only readers such as
``listening_test.judgments_query`` (and through it ``analysis``) use them without an app.
The schema in a database is built only by the Alembic migrations in ``migrations/``
(``python -m listening_test db upgrade``), never by ``metadata.create_all``;
``tests/listening_test/test_migrations.py`` checks that the migrations build exactly these
tables (columns, types, nullability, keys, unique constraints and indexes).

Concurrency guarantees live in constraints, not only in code:
- UNIQUE(responses.trial_id): an answer is stored at most once;
- UNIQUE(trials.session_id, trial_index): two racing requests cannot both serve
  "the next trial" of a session;
- UNIQUE(participants.experiment_id, platform, platform_worker_id) and
  UNIQUE(sessions.participant_id, platform_session_key): a reload or a double
  landing resumes the same participant and session instead of forking them;
- UNIQUE(sessions.participant_id, attempt): two racing landings of one worker cannot
  both open that worker's n-th session.

Times are ``DateTime(timezone=True)`` in UTC (SQLite returns them naive). Python-side
defaults (``utcnow``, empty JSON objects) apply to inserts made through SQLAlchemy.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

# Stable constraint names so that migrations can refer to them on every backend.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING_CONVENTION)


def utcnow() -> datetime:
    """The current time, timezone-aware in UTC (the default of every ``*_at`` column)."""
    return datetime.now(UTC)


def _when(name: str, *, required: bool = False) -> Column:
    """A timezone-aware timestamp; ``required``: NOT NULL, defaulting to now."""
    if required:
        return Column(name, DateTime(timezone=True), nullable=False, default=utcnow)
    return Column(name, DateTime(timezone=True), nullable=True)


experiments = Table(
    "experiments",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("slug", String(64), nullable=False, unique=True),  # public, in participant URLs
    Column("name", String(200), nullable=False),
    Column("test_type", String(32), nullable=False, default="same_different"),  # see flow_config.TEST_TYPES
    # active | closed | draft (test mode before launch: listening_test.platforms.recruitment)
    Column("status", String(16), nullable=False, default="active"),
    Column("manifest_path", Text, nullable=False),
    Column("audio_root", Text, nullable=False),  # the manifest's folder; stimulus paths are relative
    Column("procedure", String(32), nullable=False),
    Column("procedure_config", JSON, nullable=False, default=dict),
    # Flow settings: references/families per participant, catch rate, practice, screening.
    Column("config", JSON, nullable=False, default=dict),
    Column("reward_cents", Integer),
    Column("target_judgments", Integer),
    Column("prolific_completion_code", String(64)),
    Column("prolific_screened_out_code", String(64)),
    # Sessions one worker ID may hold in this experiment (across assignments / Prolific
    # sessions); NULL = no limit. Enforced by UNIQUE(sessions.participant_id, attempt).
    Column("max_sessions_per_worker", Integer, default=1, server_default="1"),
    Column("mturk_environment", String(16)),  # sandbox | production
    _when("created_at", required=True),
    # --- running a study (migration 0003_study: recruitment, texts, estimates) ---
    Column("target_participants", Integer),  # complete participants wanted
    Column("closed_reason", String(32)),  # target_participants | target_judgments | manual
    Column("consent_text", Text),  # NULL: the built-in consent text
    Column("description", Text),  # shown on the preview and consent screens
    Column("estimate", JSON),  # listening_test.estimates
    _when("launched_at"),
)

stimuli = Table(
    "stimuli",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("experiment_id", ForeignKey("experiments.id", ondelete="CASCADE"), nullable=False),
    Column("stimulus_id", String(200), nullable=False),
    Column("reference", String(200), nullable=False),  # the reference's stimulus_id
    Column("path", Text, nullable=False),  # relative to experiments.audio_root
    Column("family", String(64), nullable=False),  # "reference" for reference rows
    Column("level", Float, nullable=False),
    Column("params", JSON, nullable=False, default=dict),
    Column("seed", BigInteger),  # derive_seed gives 63-bit seeds; NULL: drawn from no seed
    Column("sample_rate", Integer, nullable=False),
    Column("num_samples", BigInteger, nullable=False),
    Column("sha256", String(64), nullable=False),
    # Found faulty while the study runs (migration 0004): out of rotation from then on.
    Column("fault_reason", Text),
    _when("fault_at"),
    UniqueConstraint("experiment_id", "stimulus_id"),
    Index("ix_stimuli_ladder", "experiment_id", "reference", "family", "level"),
)

participants = Table(
    "participants",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("experiment_id", ForeignKey("experiments.id", ondelete="CASCADE"), nullable=False),
    Column("platform", String(16), nullable=False),  # mturk | prolific | link
    # MTurk workerId, Prolific PROLIFIC_PID, or a random id for plain links.
    Column("platform_worker_id", String(128), nullable=False),
    _when("created_at", required=True),
    UniqueConstraint("experiment_id", "platform", "platform_worker_id"),
)

# One participant's pass through the test: an MTurk assignment, a Prolific session, a link visit.
sessions = Table(
    "sessions",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("public_id", String(64), nullable=False, unique=True),  # carried in the signed token
    Column("experiment_id", ForeignKey("experiments.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("participant_id", ForeignKey("participants.id", ondelete="CASCADE"), nullable=False, index=True),
    # assignmentId (MTurk), SESSION_ID (Prolific) or "link".
    Column("platform_session_key", String(128), nullable=False),
    Column("assignment_id", String(128)),
    Column("hit_id", String(128)),
    Column("turk_submit_to", Text),
    Column("study_id", String(128)),
    Column("stage", String(16), nullable=False, default="consent"),  # see flow.stages.STAGES
    Column("seed", BigInteger, nullable=False),  # drives this session's random choices
    Column("attempt", Integer, nullable=False, default=0, server_default="0"),  # 0 = first
    Column("schedule_state", JSON, nullable=False, default=dict),
    Column("n_trials", Integer, nullable=False, default=0),  # trials served so far
    Column("screening_passed", Boolean),
    Column("completion_code", String(64), unique=True),
    Column("client_info", JSON, nullable=False, default=dict),
    _when("created_at", required=True),
    _when("consented_at"),
    _when("completed_at"),
    UniqueConstraint("participant_id", "platform_session_key"),
    # The n-th session of a worker: two racing landings cannot both open attempt 0.
    Index("uq_sessions_participant_id_attempt", "participant_id", "attempt", unique=True),
)

# A (participant, reference, family) walk along the family's ladder.
tracks = Table(
    "tracks",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("session_id", ForeignKey("sessions.id", ondelete="CASCADE"), nullable=False),
    Column("participant_id", ForeignKey("participants.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("experiment_id", ForeignKey("experiments.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("reference", String(200), nullable=False),
    Column("family", String(64), nullable=False),
    Column("procedure_state", JSON, nullable=False),
    Column("n_trials", Integer, nullable=False, default=0),
    Column("finished", Boolean, nullable=False, default=False),
    Column("estimate", Float),
    UniqueConstraint("session_id", "reference", "family"),
)

trials = Table(
    "trials",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("session_id", ForeignKey("sessions.id", ondelete="CASCADE"), nullable=False),
    Column("trial_index", Integer, nullable=False),  # 0.. within the session, every kind
    Column("kind", String(16), nullable=False),  # see flow.trials.TRIAL_KINDS
    Column("track_id", ForeignKey("tracks.id", ondelete="CASCADE"), index=True),
    Column("reference_stimulus_id", ForeignKey("stimuli.id")),
    Column("test_stimulus_id", ForeignKey("stimuli.id")),
    Column("family", String(64)),
    Column("level", Float),
    # Clip order as presented: True when clip A is the reference (same/different, A/B).
    Column("a_is_reference", Boolean),
    # For screening: {"test": "huggins", "target": 2, ...}; for A/B: the systems compared.
    Column("spec", JSON, nullable=False, default=dict),
    Column("expected_answer", String(16)),  # catch/practice/screening
    Column("nonce", String(64), nullable=False),
    Column("answered", Boolean, nullable=False, default=False),
    # A trial the server could not deliver (missing/unreadable clip): kept, not answered.
    Column("voided_reason", Text),
    _when("voided_at"),
    _when("served_at", required=True),
    UniqueConstraint("session_id", "trial_index"),
)

# An opaque URL for one clip of one trial, valid only for the trial's session.
audio_tokens = Table(
    "audio_tokens",
    metadata,
    Column("token", String(64), primary_key=True),
    Column("session_id", ForeignKey("sessions.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("trial_id", ForeignKey("trials.id", ondelete="CASCADE"), index=True),
    Column("slot", Integer, nullable=False),  # 0 = clip A / interval 1, ...
    Column("stimulus_id", ForeignKey("stimuli.id")),
    Column("generated", JSON),  # headphone-test clips
)

responses = Table(
    "responses",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("trial_id", ForeignKey("trials.id", ondelete="CASCADE"), nullable=False, unique=True),
    Column("session_id", ForeignKey("sessions.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("trial_index", Integer, nullable=False),
    Column("answer", String(16), nullable=False),  # same|different, A|B, 1|2|3
    Column("is_correct", Boolean),  # catch, practice, screening
    Column("response_time_ms", Integer, nullable=False),
    Column("play_counts", JSON, nullable=False, default=list),  # per clip, in slot order
    Column("client_info", JSON, nullable=False, default=dict),
    _when("created_at", required=True),
)

screening_results = Table(
    "screening_results",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("session_id", ForeignKey("sessions.id", ondelete="CASCADE"), nullable=False),
    Column("test", String(32), nullable=False),  # huggins | antiphase
    Column("n_trials", Integer, nullable=False),
    Column("n_correct", Integer, nullable=False),
    Column("passed", Boolean, nullable=False),
    _when("created_at", required=True),
    UniqueConstraint("session_id", "test"),
)
