"""Stimuli found faulty while the study runs (issue 14): taken out of rotation.

- ``stimuli.fault_reason``: why the file cannot be delivered (missing, unreadable,
  corrupt, another sample rate or length than the row records; names the file), set the
  first time a participant's trial on it is voided. NULL: healthy. A faulty stimulus is
  never served again in this experiment: tracks whose ladder (or reference) holds it are
  closed, and catch and practice trials skip it (``listening_test.flow.trials``).
- ``stimuli.fault_at``: when it was found.

Revision ID: 0004_stimulus_faults
Revises: 0003_study
"""

import sqlalchemy as sa
from alembic import op

revision = "0004_stimulus_faults"
down_revision = "0003_study"
branch_labels = None
depends_on = None


def upgrade():
    op.add_column("stimuli", sa.Column("fault_reason", sa.Text(), nullable=True))
    op.add_column("stimuli", sa.Column("fault_at", sa.DateTime(timezone=True), nullable=True))


def downgrade():
    with op.batch_alter_table("stimuli") as batch:
        batch.drop_column("fault_at")
        batch.drop_column("fault_reason")
