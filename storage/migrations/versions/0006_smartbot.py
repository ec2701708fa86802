"""smartbot: reply state of the WeCom smart bot door

Revision ID: 0006
Revises: 0005
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0006'
down_revision: str | None = '0005'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:

    op.create_table('smartbot_replies',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('msgid', sa.String(length=128), nullable=False),
    sa.Column('stream_id', sa.String(length=64), nullable=False),
    sa.Column('event_key', sa.String(length=255), nullable=False),
    sa.Column('response_url', sa.Text(), nullable=True),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('via', sa.String(length=16), nullable=True),
    sa.Column('content', sa.Text(), nullable=True),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('ready_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('delivered_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_smartbot_replies')),
    sa.UniqueConstraint('msgid', name='uq_smartbot_replies_msgid'),
    sa.UniqueConstraint('stream_id', name='uq_smartbot_replies_stream_id')
    )
    with op.batch_alter_table('smartbot_replies', schema=None) as batch_op:
        batch_op.create_index('ix_smartbot_replies_status_ready', ['status', 'ready_at'], unique=False)


def downgrade() -> None:

    with op.batch_alter_table('smartbot_replies', schema=None) as batch_op:
        batch_op.drop_index('ix_smartbot_replies_status_ready')

    op.drop_table('smartbot_replies')
