"""Initial schema: experiments, stimuli, participants, sessions, tracks, trials,
audio tokens, responses, screening results.

Revision ID: 0001
Revises:
Create Date: 2026-11-21 08:43:56.314865

"""

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "experiments",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("slug", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("test_type", sa.String(length=32), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("manifest_path", sa.Text(), nullable=False),
        sa.Column("audio_root", sa.Text(), nullable=False),
        sa.Column("procedure", sa.String(length=32), nullable=False),
        sa.Column("procedure_config", sa.JSON(), nullable=False),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("reward_cents", sa.Integer(), nullable=True),
        sa.Column("target_judgments", sa.Integer(), nullable=True),
        sa.Column("prolific_completion_code", sa.String(length=64), nullable=True),
        sa.Column("prolific_screened_out_code", sa.String(length=64), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_experiments")),
        sa.UniqueConstraint("slug", name=op.f("uq_experiments_slug")),
    )
    op.create_table(
        "participants",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("experiment_id", sa.Integer(), nullable=False),
        sa.Column("platform", sa.String(length=16), nullable=False),
        sa.Column("platform_worker_id", sa.String(length=128), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["experiment_id"],
            ["experiments.id"],
            name=op.f("fk_participants_experiment_id_experiments"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_participants")),
        sa.UniqueConstraint(
            "experiment_id",
            "platform",
            "platform_worker_id",
            name=op.f("uq_participants_experiment_id_platform_platform_worker_id"),
        ),
    )
    op.create_table(
        "stimuli",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("experiment_id", sa.Integer(), nullable=False),
        sa.Column("stimulus_id", sa.String(length=200), nullable=False),
        sa.Column("reference", sa.String(length=200), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("family", sa.String(length=64), nullable=False),
        sa.Column("level", sa.Float(), nullable=False),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("seed", sa.Integer(), nullable=True),
        sa.Column("sample_rate", sa.Integer(), nullable=False),
        sa.Column("num_samples", sa.Integer(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(
            ["experiment_id"], ["experiments.id"], name=op.f("fk_stimuli_experiment_id_experiments"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_stimuli")),
        sa.UniqueConstraint("experiment_id", "stimulus_id", name=op.f("uq_stimuli_experiment_id_stimulus_id")),
    )
    with op.batch_alter_table("stimuli", schema=None) as batch_op:
        batch_op.create_index("ix_stimuli_ladder", ["experiment_id", "reference", "family", "level"], unique=False)

    op.create_table(
        "sessions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("public_id", sa.String(length=64), nullable=False),
        sa.Column("experiment_id", sa.Integer(), nullable=False),
        sa.Column("participant_id", sa.Integer(), nullable=False),
        sa.Column("platform_session_key", sa.String(length=128), nullable=False),
        sa.Column("assignment_id", sa.String(length=128), nullable=True),
        sa.Column("hit_id", sa.String(length=128), nullable=True),
        sa.Column("turk_submit_to", sa.Text(), nullable=True),
        sa.Column("study_id", sa.String(length=128), nullable=True),
        sa.Column("stage", sa.String(length=16), nullable=False),
        sa.Column("seed", sa.Integer(), nullable=False),
        sa.Column("schedule_state", sa.JSON(), nullable=False),
        sa.Column("n_trials", sa.Integer(), nullable=False),
        sa.Column("screening_passed", sa.Boolean(), nullable=True),
        sa.Column("completion_code", sa.String(length=64), nullable=True),
        sa.Column("client_info", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("consented_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["experiment_id"],
            ["experiments.id"],
            name=op.f("fk_sessions_experiment_id_experiments"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["participant_id"],
            ["participants.id"],
            name=op.f("fk_sessions_participant_id_participants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sessions")),
        sa.UniqueConstraint("completion_code", name=op.f("uq_sessions_completion_code")),
        sa.UniqueConstraint(
            "participant_id", "platform_session_key", name=op.f("uq_sessions_participant_id_platform_session_key")
        ),
        sa.UniqueConstraint("public_id", name=op.f("uq_sessions_public_id")),
    )
    with op.batch_alter_table("sessions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_sessions_experiment_id"), ["experiment_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_sessions_participant_id"), ["participant_id"], unique=False)

    op.create_table(
        "screening_results",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("session_id", sa.Integer(), nullable=False),
        sa.Column("test", sa.String(length=32), nullable=False),
        sa.Column("n_trials", sa.Integer(), nullable=False),
        sa.Column("n_correct", sa.Integer(), nullable=False),
        sa.Column("passed", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["session_id"], ["sessions.id"], name=op.f("fk_screening_results_session_id_sessions"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_screening_results")),
        sa.UniqueConstraint("session_id", "test", name=op.f("uq_screening_results_session_id_test")),
    )
    op.create_table(
        "tracks",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("session_id", sa.Integer(), nullable=False),
        sa.Column("participant_id", sa.Integer(), nullable=False),
        sa.Column("experiment_id", sa.Integer(), nullable=False),
        sa.Column("reference", sa.String(length=200), nullable=False),
        sa.Column("family", sa.String(length=64), nullable=False),
        sa.Column("procedure_state", sa.JSON(), nullable=False),
        sa.Column("n_trials", sa.Integer(), nullable=False),
        sa.Column("finished", sa.Boolean(), nullable=False),
        sa.Column("estimate", sa.Float(), nullable=True),
        sa.ForeignKeyConstraint(
            ["experiment_id"], ["experiments.id"], name=op.f("fk_tracks_experiment_id_experiments"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["participant_id"],
            ["participants.id"],
            name=op.f("fk_tracks_participant_id_participants"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["session_id"], ["sessions.id"], name=op.f("fk_tracks_session_id_sessions"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tracks")),
        sa.UniqueConstraint("session_id", "reference", "family", name=op.f("uq_tracks_session_id_reference_family")),
    )
    with op.batch_alter_table("tracks", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_tracks_experiment_id"), ["experiment_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_tracks_participant_id"), ["participant_id"], unique=False)

    op.create_table(
        "trials",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("session_id", sa.Integer(), nullable=False),
        sa.Column("trial_index", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("track_id", sa.Integer(), nullable=True),
        sa.Column("reference_stimulus_id", sa.Integer(), nullable=True),
        sa.Column("test_stimulus_id", sa.Integer(), nullable=True),
        sa.Column("family", sa.String(length=64), nullable=True),
        sa.Column("level", sa.Float(), nullable=True),
        sa.Column("a_is_reference", sa.Boolean(), nullable=True),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("expected_answer", sa.String(length=16), nullable=True),
        sa.Column("nonce", sa.String(length=64), nullable=False),
        sa.Column("answered", sa.Boolean(), nullable=False),
        sa.Column("served_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["reference_stimulus_id"], ["stimuli.id"], name=op.f("fk_trials_reference_stimulus_id_stimuli")
        ),
        sa.ForeignKeyConstraint(
            ["session_id"], ["sessions.id"], name=op.f("fk_trials_session_id_sessions"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(["test_stimulus_id"], ["stimuli.id"], name=op.f("fk_trials_test_stimulus_id_stimuli")),
        sa.ForeignKeyConstraint(
            ["track_id"], ["tracks.id"], name=op.f("fk_trials_track_id_tracks"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_trials")),
        sa.UniqueConstraint("session_id", "trial_index", name=op.f("uq_trials_session_id_trial_index")),
    )
    with op.batch_alter_table("trials", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_trials_track_id"), ["track_id"], unique=False)

    op.create_table(
        "audio_tokens",
        sa.Column("token", sa.String(length=64), nullable=False),
        sa.Column("session_id", sa.Integer(), nullable=False),
        sa.Column("trial_id", sa.Integer(), nullable=True),
        sa.Column("slot", sa.Integer(), nullable=False),
        sa.Column("stimulus_id", sa.Integer(), nullable=True),
        sa.Column("generated", sa.JSON(), nullable=True),
        sa.ForeignKeyConstraint(
            ["session_id"], ["sessions.id"], name=op.f("fk_audio_tokens_session_id_sessions"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(["stimulus_id"], ["stimuli.id"], name=op.f("fk_audio_tokens_stimulus_id_stimuli")),
        sa.ForeignKeyConstraint(
            ["trial_id"], ["trials.id"], name=op.f("fk_audio_tokens_trial_id_trials"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("token", name=op.f("pk_audio_tokens")),
    )
    with op.batch_alter_table("audio_tokens", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_audio_tokens_session_id"), ["session_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_audio_tokens_trial_id"), ["trial_id"], unique=False)

    op.create_table(
        "responses",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("trial_id", sa.Integer(), nullable=False),
        sa.Column("session_id", sa.Integer(), nullable=False),
        sa.Column("trial_index", sa.Integer(), nullable=False),
        sa.Column("answer", sa.String(length=16), nullable=False),
        sa.Column("is_correct", sa.Boolean(), nullable=True),
        sa.Column("response_time_ms", sa.Integer(), nullable=False),
        sa.Column("play_counts", sa.JSON(), nullable=False),
        sa.Column("client_info", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["session_id"], ["sessions.id"], name=op.f("fk_responses_session_id_sessions"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["trial_id"], ["trials.id"], name=op.f("fk_responses_trial_id_trials"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_responses")),
        sa.UniqueConstraint("trial_id", name=op.f("uq_responses_trial_id")),
    )
    with op.batch_alter_table("responses", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_responses_session_id"), ["session_id"], unique=False)


def downgrade():
    with op.batch_alter_table("responses", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_responses_session_id"))

    op.drop_table("responses")
    with op.batch_alter_table("audio_tokens", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_audio_tokens_trial_id"))
        batch_op.drop_index(batch_op.f("ix_audio_tokens_session_id"))

    op.drop_table("audio_tokens")
    with op.batch_alter_table("trials", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_trials_track_id"))

    op.drop_table("trials")
    with op.batch_alter_table("tracks", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_tracks_participant_id"))
        batch_op.drop_index(batch_op.f("ix_tracks_experiment_id"))

    op.drop_table("tracks")
    op.drop_table("screening_results")
    with op.batch_alter_table("sessions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_sessions_participant_id"))
        batch_op.drop_index(batch_op.f("ix_sessions_experiment_id"))

    op.drop_table("sessions")
    with op.batch_alter_table("stimuli", schema=None) as batch_op:
        batch_op.drop_index("ix_stimuli_ladder")

    op.drop_table("stimuli")
    op.drop_table("participants")
    op.drop_table("experiments")
