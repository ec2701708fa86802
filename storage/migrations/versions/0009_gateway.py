"""gateway: outbox of the signed JSON gateway door

Revision ID: 0009
Revises: 0008
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0009'
down_revision: str | None = '0008'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:

    op.create_table('gateway_outbox',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('message_id', sa.String(length=64), nullable=False),
    sa.Column('gateway', sa.String(length=32), nullable=False),
    sa.Column('target_kind', sa.String(length=8), nullable=False),
    sa.Column('target', sa.String(length=255), nullable=False),
    sa.Column('event_key', sa.String(length=255), nullable=True),
    sa.Column('position', sa.Integer(), nullable=False),
    sa.Column('in_reply_to', sa.String(length=128), nullable=True),
    sa.Column('payload', sa.Text(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('next_attempt_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('lease_until', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_gateway_outbox')),
    sa.UniqueConstraint('event_key', 'position', name='uq_gateway_outbox_event_position'),
    sa.UniqueConstraint('message_id', name='uq_gateway_outbox_message_id')
    )
    with op.batch_alter_table('gateway_outbox', schema=None) as batch_op:
        batch_op.create_index('ix_gateway_outbox_chat', ['gateway', 'target_kind', 'target', 'status'], unique=False)
        batch_op.create_index('ix_gateway_outbox_status_due', ['status', 'next_attempt_at'], unique=False)


def downgrade() -> None:

    with op.batch_alter_table('gateway_outbox', schema=None) as batch_op:
        batch_op.drop_index('ix_gateway_outbox_status_due')
        batch_op.drop_index('ix_gateway_outbox_chat')

    op.drop_table('gateway_outbox')
