"""official_account: passive replies of the WeChat Official Account door, kept for WeChat's retries

Revision ID: 0010
Revises: 0009
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0010'
down_revision: str | None = '0009'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:

    op.create_table('official_account_replies',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('event_key', sa.String(length=255), nullable=False),
    sa.Column('content', sa.Text(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_official_account_replies')),
    sa.UniqueConstraint('event_key', name='uq_official_account_replies_event_key')
    )


def downgrade() -> None:

    op.drop_table('official_account_replies')
