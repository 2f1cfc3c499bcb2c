"""Integrity for paid studies: 64-bit integers, one session per worker, voided trials,
the MTurk environment.

- ``stimuli.seed``, ``stimuli.num_samples`` and ``sessions.seed`` become BIGINT:
  ``perturbations.derive_seed`` gives 63-bit seeds and long clips can pass 2**31
  samples. SQLite stores every INTEGER in up to 64 bits already, so there the
  declared type is left as it is (rebuilding ``stimuli`` would have to drop a table
  that trials reference, under PRAGMA foreign_keys=ON).
- ``experiments.max_sessions_per_worker`` (default 1; NULL = no limit) and
  ``sessions.attempt`` with a unique index on (participant_id, attempt): two racing
  landings of one worker cannot both open that worker's first session. Existing
  sessions are numbered 0, 1, ... per participant in id order.
- ``experiments.mturk_environment``: ``sandbox`` or ``production`` (NULL: not an
  MTurk study, or created before this revision; the landing then trusts
  ``turkSubmitTo`` and falls back to production as before).
- ``trials.voided_reason`` / ``trials.voided_at``: a trial the server could not
  deliver (a missing or unreadable clip) is voided, kept with its reason, and the
  session goes on.

Revision ID: 0002_integrity
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002_integrity"
down_revision = "0001"
branch_labels = None
depends_on = None

_BIG = (("stimuli", "seed", True), ("stimuli", "num_samples", False), ("sessions", "seed", False))


def upgrade():
    bind = op.get_bind()
    if bind.dialect.name != "sqlite":
        for table, column, nullable in _BIG:
            op.alter_column(
                table, column, existing_type=sa.Integer(), type_=sa.BigInteger(), existing_nullable=nullable
            )
    op.add_column("experiments", sa.Column("max_sessions_per_worker", sa.Integer(), nullable=True, server_default="1"))
    op.add_column("experiments", sa.Column("mturk_environment", sa.String(length=16), nullable=True))
    op.add_column("sessions", sa.Column("attempt", sa.Integer(), nullable=False, server_default="0"))
    op.execute(
        "UPDATE sessions SET attempt = (SELECT count(*) FROM sessions AS earlier "
        "WHERE earlier.participant_id = sessions.participant_id AND earlier.id < sessions.id)"
    )
    op.create_index("uq_sessions_participant_id_attempt", "sessions", ["participant_id", "attempt"], unique=True)
    op.add_column("trials", sa.Column("voided_reason", sa.Text(), nullable=True))
    op.add_column("trials", sa.Column("voided_at", sa.DateTime(timezone=True), nullable=True))


def downgrade():
    # Plain DROP COLUMN: PostgreSQL, and SQLite >= 3.35 (no table rebuild, so the
    # tables that reference sessions and trials are left alone).
    op.drop_index("uq_sessions_participant_id_attempt", table_name="sessions")
    op.drop_column("trials", "voided_at")
    op.drop_column("trials", "voided_reason")
    op.drop_column("sessions", "attempt")
    op.drop_column("experiments", "mturk_environment")
    op.drop_column("experiments", "max_sessions_per_worker")
    # The BIGINT columns stay BIGINT: narrowing them would fail on (or lose) the 63-bit
    # seeds already stored, and revision 0001's code reads a BIGINT just as well.
