"""push: scheduled posts, their runs and deliveries (the outbox), group tags, per-group push limits and
daily counts, and the outbox workers' heartbeats

Revision ID: 0011
Revises: 0010
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0011'
down_revision: str | None = '0010'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('push_workers',
    sa.Column('holder', sa.String(length=128), nullable=False),
    sa.Column('channel', sa.String(length=32), nullable=False),
    sa.Column('seen_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('holder', 'channel', name=op.f('pk_push_workers'))
    )
    op.create_table('push_daily_counts',
    sa.Column('group_id', sa.Integer(), nullable=False),
    sa.Column('day', sa.Date(), nullable=False),
    sa.Column('sent', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['group_id'], ['groups.id'], name=op.f('fk_push_daily_counts_group_id_groups')),
    sa.PrimaryKeyConstraint('group_id', 'day', name=op.f('pk_push_daily_counts'))
    )
    op.create_table('push_group_settings',
    sa.Column('group_id', sa.Integer(), nullable=False),
    sa.Column('quiet_hours', sa.String(length=16), nullable=True),
    sa.Column('daily_cap', sa.Integer(), nullable=True),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['group_id'], ['groups.id'], name=op.f('fk_push_group_settings_group_id_groups')),
    sa.PrimaryKeyConstraint('group_id', name=op.f('pk_push_group_settings'))
    )
    op.create_table('push_group_tags',
    sa.Column('group_id', sa.Integer(), nullable=False),
    sa.Column('tag', sa.String(length=64), nullable=False),
    sa.ForeignKeyConstraint(['group_id'], ['groups.id'], name=op.f('fk_push_group_tags_group_id_groups')),
    sa.PrimaryKeyConstraint('group_id', 'tag', name=op.f('pk_push_group_tags'))
    )
    with op.batch_alter_table('push_group_tags', schema=None) as batch_op:
        batch_op.create_index('ix_push_group_tags_tag', ['tag'], unique=False)

    op.create_table('push_posts',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=64), nullable=True),
    sa.Column('source', sa.String(length=16), nullable=False),
    sa.Column('schedule_text', sa.String(length=128), nullable=False),
    sa.Column('schedule_kind', sa.String(length=16), nullable=False),
    sa.Column('cron', sa.String(length=128), nullable=True),
    sa.Column('interval_seconds', sa.Integer(), nullable=True),
    sa.Column('run_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('timezone', sa.String(length=64), nullable=False),
    sa.Column('anchor_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('target_kind', sa.String(length=16), nullable=False),
    sa.Column('target_tag', sa.String(length=64), nullable=True),
    sa.Column('target_channel', sa.String(length=32), nullable=True),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('content', sa.Text(), nullable=False),
    sa.Column('payload', sa.Text(), nullable=False),
    sa.Column('enabled', sa.Boolean(), nullable=False),
    sa.Column('owner_group_id', sa.Integer(), nullable=True),
    sa.Column('created_by', sa.String(length=128), nullable=False),
    sa.Column('event_id', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('revision', sa.Integer(), nullable=False),
    sa.Column('covered_until', sa.DateTime(timezone=True), nullable=False),
    sa.Column('removed_at', sa.DateTime(timezone=True), nullable=True),
    sa.CheckConstraint("kind IN ('text', 'markdown', 'image', 'news')", name=op.f('ck_push_posts_kind')),
    sa.CheckConstraint("schedule_kind IN ('cron', 'interval', 'once')", name=op.f('ck_push_posts_schedule_kind')),
    sa.CheckConstraint("target_kind IN ('groups', 'tag', 'all')", name=op.f('ck_push_posts_target_kind')),
    sa.ForeignKeyConstraint(['owner_group_id'], ['groups.id'], name=op.f('fk_push_posts_owner_group_id_groups')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_push_posts')),
    sa.UniqueConstraint('event_id', name='uq_push_posts_event_id')
    )
    with op.batch_alter_table('push_posts', schema=None) as batch_op:
        batch_op.create_index('ix_push_posts_owner_group_id', ['owner_group_id'], unique=False)
        batch_op.create_index('uq_push_posts_live_name', ['name'], unique=True, sqlite_where=sa.text('removed_at IS NULL'), postgresql_where=sa.text('removed_at IS NULL'))

    op.create_table('push_post_groups',
    sa.Column('post_id', sa.Integer(), nullable=False),
    sa.Column('group_id', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['group_id'], ['groups.id'], name=op.f('fk_push_post_groups_group_id_groups')),
    sa.ForeignKeyConstraint(['post_id'], ['push_posts.id'], name=op.f('fk_push_post_groups_post_id_push_posts')),
    sa.PrimaryKeyConstraint('post_id', 'group_id', name=op.f('pk_push_post_groups'))
    )
    op.create_table('push_runs',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('post_id', sa.Integer(), nullable=False),
    sa.Column('scheduled_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('late', sa.Boolean(), nullable=False),
    sa.Column('reason', sa.String(length=255), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('content', sa.Text(), nullable=False),
    sa.Column('payload', sa.Text(), nullable=False),
    sa.Column('targets', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('instance', sa.String(length=128), nullable=False),
    sa.CheckConstraint("status IN ('scheduled', 'skipped')", name=op.f('ck_push_runs_status')),
    sa.ForeignKeyConstraint(['post_id'], ['push_posts.id'], name=op.f('fk_push_runs_post_id_push_posts')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_push_runs')),
    sa.UniqueConstraint('post_id', 'scheduled_at', name='uq_push_runs_post_id_scheduled_at')
    )
    op.create_table('push_deliveries',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('run_id', sa.Integer(), nullable=False),
    sa.Column('group_id', sa.Integer(), nullable=False),
    sa.Column('channel', sa.String(length=32), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('next_attempt_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('lease_holder', sa.String(length=128), nullable=True),
    sa.Column('lease_until', sa.DateTime(timezone=True), nullable=True),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('counted_day', sa.Date(), nullable=True),
    sa.Column('sent_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint("status IN ('pending', 'sending', 'sent', 'failed', 'skipped')", name=op.f('ck_push_deliveries_status')),
    sa.ForeignKeyConstraint(['group_id'], ['groups.id'], name=op.f('fk_push_deliveries_group_id_groups')),
    sa.ForeignKeyConstraint(['run_id'], ['push_runs.id'], name=op.f('fk_push_deliveries_run_id_push_runs')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_push_deliveries')),
    sa.UniqueConstraint('run_id', 'group_id', name='uq_push_deliveries_run_id_group_id')
    )
    with op.batch_alter_table('push_deliveries', schema=None) as batch_op:
        batch_op.create_index('ix_push_deliveries_claim', ['channel', 'status', 'next_attempt_at'], unique=False)
        batch_op.create_index('ix_push_deliveries_group_id', ['group_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('push_deliveries', schema=None) as batch_op:
        batch_op.drop_index('ix_push_deliveries_group_id')
        batch_op.drop_index('ix_push_deliveries_claim')

    op.drop_table('push_deliveries')
    op.drop_table('push_runs')
    op.drop_table('push_post_groups')
    with op.batch_alter_table('push_posts', schema=None) as batch_op:
        batch_op.drop_index('uq_push_posts_live_name', sqlite_where=sa.text('removed_at IS NULL'), postgresql_where=sa.text('removed_at IS NULL'))
        batch_op.drop_index('ix_push_posts_owner_group_id')

    op.drop_table('push_posts')
    with op.batch_alter_table('push_group_tags', schema=None) as batch_op:
        batch_op.drop_index('ix_push_group_tags_tag')

    op.drop_table('push_group_tags')
    op.drop_table('push_group_settings')
    op.drop_table('push_daily_counts')
    op.drop_table('push_workers')
