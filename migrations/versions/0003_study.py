"""Running a study: recruitment targets, texts shown to participants, launch state,
and the procedure's own length estimate.

- ``experiments.target_participants``: the number of complete participants wanted;
  reaching it (or ``target_judgments``) closes the study by itself.
- ``experiments.closed_reason``: why a study is closed (``target_participants``,
  ``target_judgments``, ``manual``); a full study tells new visitors so.
- ``experiments.consent_text`` / ``experiments.description``: the consent paragraph
  and the study description participants see (NULL: the built-in texts).
- ``experiments.estimate``: expected trials and minutes per participant under the
  configured stop rule, computed once at creation (``listening_test.estimates``).
- ``experiments.launched_at``: when a draft (test-mode) study went live.

``experiments.status`` gains the value ``draft`` (a plain string column: no change).

Revision ID: 0003_study
Revises: 0002_integrity
"""

import sqlalchemy as sa
from alembic import op

revision = "0003_study"
down_revision = "0002_integrity"
branch_labels = None
depends_on = None


def upgrade():
    op.add_column("experiments", sa.Column("target_participants", sa.Integer(), nullable=True))
    op.add_column("experiments", sa.Column("closed_reason", sa.String(length=32), nullable=True))
    op.add_column("experiments", sa.Column("consent_text", sa.Text(), nullable=True))
    op.add_column("experiments", sa.Column("description", sa.Text(), nullable=True))
    op.add_column("experiments", sa.Column("estimate", sa.JSON(), nullable=True))
    op.add_column("experiments", sa.Column("launched_at", sa.DateTime(timezone=True), nullable=True))


def downgrade():
    for column in ("launched_at", "estimate", "description", "consent_text", "closed_reason", "target_participants"):
        op.drop_column("experiments", column)
