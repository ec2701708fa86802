"""faq counted events: the inbox events whose FAQ outcome is in faq_daily_counts, so a retried event counts once

Revision ID: 0015
Revises: 0014
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0015'
down_revision: str | None = '0014'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('faq_counted_events',
    sa.Column('event_id', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('counted_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('event_id', name=op.f('pk_faq_counted_events'))
    )


def downgrade() -> None:
    op.drop_table('faq_counted_events')
