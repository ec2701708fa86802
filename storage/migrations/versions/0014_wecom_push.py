"""wecom push: scheduled posts through the WeCom app. Deliveries may wait for a person ('awaiting'); customer-group
add_msg_template tasks and the deliveries queued for them; counters for per-period caps and appchat/send limits

Revision ID: 0014
Revises: 0013
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0014'
down_revision: str | None = '0013'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

STATES = "'pending', 'sending', 'sent', 'failed', 'skipped'"


def _delivery_states(states: str) -> None:
    # SQLite changes a CHECK constraint only by rebuilding the table (batch mode); nothing points at
    # push_deliveries yet (wecom_group_msg_targets is created after), so the rebuild is allowed.
    with op.batch_alter_table('push_deliveries', schema=None) as batch_op:
        batch_op.drop_constraint(op.f('ck_push_deliveries_status'), type_='check')
        batch_op.create_check_constraint(op.f('ck_push_deliveries_status'), f"status IN ({states})")


def upgrade() -> None:
    _delivery_states(STATES + ", 'awaiting'")

    op.create_table('wecom_quotas',
    sa.Column('key', sa.String(length=64), nullable=False),
    sa.Column('period', sa.String(length=32), nullable=False),
    sa.Column('used', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('key', 'period', name=op.f('pk_wecom_quotas'))
    )
    op.create_table('wecom_group_msg_tasks',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('run_id', sa.Integer(), nullable=False),
    sa.Column('sender', sa.String(length=128), nullable=False),
    sa.Column('text', sa.Text(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('msgid', sa.String(length=128), nullable=True),
    sa.Column('holder', sa.String(length=128), nullable=True),
    sa.Column('lease_until', sa.DateTime(timezone=True), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('next_check_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('checked_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.CheckConstraint("status IN ('creating', 'open', 'done', 'failed', 'expired')", name=op.f('ck_wecom_group_msg_tasks_status')),
    sa.ForeignKeyConstraint(['run_id'], ['push_runs.id'], name=op.f('fk_wecom_group_msg_tasks_run_id_push_runs')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_wecom_group_msg_tasks')),
    sa.UniqueConstraint('msgid', name='uq_wecom_group_msg_tasks_msgid')
    )
    with op.batch_alter_table('wecom_group_msg_tasks', schema=None) as batch_op:
        batch_op.create_index('ix_wecom_group_msg_tasks_due', ['status', 'next_check_at'], unique=False)
        batch_op.create_index('ix_wecom_group_msg_tasks_run_id', ['run_id'], unique=False)

    op.create_table('wecom_group_msg_targets',
    sa.Column('delivery_id', sa.Integer(), nullable=False),
    sa.Column('run_id', sa.Integer(), nullable=False),
    sa.Column('group_id', sa.Integer(), nullable=False),
    sa.Column('chat_id', sa.String(length=128), nullable=False),
    sa.Column('sender', sa.String(length=128), nullable=False),
    sa.Column('text', sa.Text(), nullable=False),
    sa.Column('task_id', sa.Integer(), nullable=True),
    sa.Column('quota_period', sa.String(length=32), nullable=True),
    sa.Column('create_tries', sa.Integer(), nullable=False),
    sa.Column('staged_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['delivery_id'], ['push_deliveries.id'], name=op.f('fk_wecom_group_msg_targets_delivery_id_push_deliveries')),
    sa.ForeignKeyConstraint(['group_id'], ['groups.id'], name=op.f('fk_wecom_group_msg_targets_group_id_groups')),
    sa.ForeignKeyConstraint(['run_id'], ['push_runs.id'], name=op.f('fk_wecom_group_msg_targets_run_id_push_runs')),
    sa.ForeignKeyConstraint(['task_id'], ['wecom_group_msg_tasks.id'], name=op.f('fk_wecom_group_msg_targets_task_id_wecom_group_msg_tasks')),
    sa.PrimaryKeyConstraint('delivery_id', name=op.f('pk_wecom_group_msg_targets'))
    )
    with op.batch_alter_table('wecom_group_msg_targets', schema=None) as batch_op:
        batch_op.create_index('ix_wecom_group_msg_targets_run_id', ['run_id'], unique=False)
        batch_op.create_index('ix_wecom_group_msg_targets_task_id', ['task_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('wecom_group_msg_targets', schema=None) as batch_op:
        batch_op.drop_index('ix_wecom_group_msg_targets_task_id')
        batch_op.drop_index('ix_wecom_group_msg_targets_run_id')

    op.drop_table('wecom_group_msg_targets')
    with op.batch_alter_table('wecom_group_msg_tasks', schema=None) as batch_op:
        batch_op.drop_index('ix_wecom_group_msg_tasks_run_id')
        batch_op.drop_index('ix_wecom_group_msg_tasks_due')

    op.drop_table('wecom_group_msg_tasks')
    op.drop_table('wecom_quotas')
    # Deliveries that were waiting for a person cannot be told apart afterwards: recorded failed.
    op.execute("UPDATE push_deliveries SET status = 'failed', reason = 'awaiting confirmation when migrated back' "
               "WHERE status = 'awaiting'")
    _delivery_states(STATES)
