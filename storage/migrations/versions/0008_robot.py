"""robot: the WeCom group robot door (chat → webhook mapping, per-robot send slots, reply state)

Revision ID: 0008
Revises: 0007
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0008'
down_revision: str | None = '0007'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:

    op.create_table('robot_chats',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('chat_id', sa.String(length=128), nullable=False),
    sa.Column('chat_type', sa.String(length=16), nullable=False),
    sa.Column('webhook_key', sa.Text(), nullable=False),
    sa.Column('key_hash', sa.String(length=64), nullable=False),
    sa.Column('first_seen_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_robot_chats')),
    sa.UniqueConstraint('chat_id', name='uq_robot_chats_chat_id')
    )
    op.create_table('robot_send_slots',
    sa.Column('key_hash', sa.String(length=64), nullable=False),
    sa.Column('slot', sa.Integer(), nullable=False),
    sa.Column('used_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('key_hash', 'slot', name=op.f('pk_robot_send_slots'))
    )
    op.create_table('robot_replies',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('msgid', sa.String(length=128), nullable=False),
    sa.Column('chat_id', sa.String(length=128), nullable=False),
    sa.Column('event_key', sa.String(length=255), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('via', sa.String(length=16), nullable=True),
    sa.Column('content', sa.Text(), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('ready_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('delivered_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_robot_replies')),
    sa.UniqueConstraint('msgid', name='uq_robot_replies_msgid')
    )
    with op.batch_alter_table('robot_replies', schema=None) as batch_op:
        batch_op.create_index('ix_robot_replies_status_ready', ['status', 'ready_at'], unique=False)


def downgrade() -> None:

    with op.batch_alter_table('robot_replies', schema=None) as batch_op:
        batch_op.drop_index('ix_robot_replies_status_ready')

    op.drop_table('robot_replies')
    op.drop_table('robot_send_slots')
    op.drop_table('robot_chats')
