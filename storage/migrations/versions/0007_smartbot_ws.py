"""smartbot_ws: connection lease and outbox of the WeCom smart bot long-connection door

Revision ID: 0007
Revises: 0006
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0007'
down_revision: str | None = '0006'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:

    op.create_table('smartbot_ws_leases',
    sa.Column('bot_id', sa.String(length=128), nullable=False),
    sa.Column('instance_id', sa.String(length=128), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('acquired_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('renewed_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('bot_id', name=op.f('pk_smartbot_ws_leases'))
    )
    op.create_table('smartbot_ws_outbox',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('bot_id', sa.String(length=128), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('msgid', sa.String(length=128), nullable=True),
    sa.Column('event_key', sa.String(length=255), nullable=True),
    sa.Column('req_id', sa.String(length=128), nullable=True),
    sa.Column('conn_id', sa.String(length=64), nullable=True),
    sa.Column('chatid', sa.String(length=128), nullable=True),
    sa.Column('userid', sa.String(length=128), nullable=True),
    sa.Column('content', sa.Text(), nullable=True),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('via', sa.String(length=32), nullable=True),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('claimed_by', sa.String(length=128), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('ready_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('sent_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_smartbot_ws_outbox')),
    sa.UniqueConstraint('bot_id', 'msgid', name='uq_smartbot_ws_outbox_bot_msgid')
    )
    with op.batch_alter_table('smartbot_ws_outbox', schema=None) as batch_op:
        batch_op.create_index('ix_smartbot_ws_outbox_bot_status', ['bot_id', 'status', 'id'], unique=False)


def downgrade() -> None:

    with op.batch_alter_table('smartbot_ws_outbox', schema=None) as batch_op:
        batch_op.drop_index('ix_smartbot_ws_outbox_bot_status')

    op.drop_table('smartbot_ws_outbox')
    op.drop_table('smartbot_ws_leases')
