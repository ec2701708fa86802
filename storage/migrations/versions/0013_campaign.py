"""campaign: campaigns with their target groups, phases, named dates, linked lotteries and milestone
reminders; scheduled posts belong to a campaign and a phase (push_posts.campaign_id, push_posts.phase)

Revision ID: 0013
Revises: 0012
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0013'
down_revision: str | None = '0012'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('campaigns',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('title', sa.String(length=128), nullable=False),
    sa.Column('timezone', sa.String(length=64), nullable=False),
    sa.Column('target_kind', sa.String(length=16), nullable=False),
    sa.Column('target_tag', sa.String(length=64), nullable=True),
    sa.Column('target_channel', sa.String(length=32), nullable=True),
    sa.Column('key_date', sa.Date(), nullable=False),
    sa.Column('key_name', sa.String(length=32), nullable=False),
    sa.Column('owner', sa.String(length=128), nullable=False),
    sa.Column('ops_users', sa.String(length=512), nullable=False),
    sa.Column('reminder_target', sa.String(length=160), nullable=True),
    sa.Column('reminder_days', sa.String(length=64), nullable=True),
    sa.Column('created_by', sa.String(length=128), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('removed_at', sa.DateTime(timezone=True), nullable=True),
    sa.CheckConstraint("target_kind IN ('groups', 'tag', 'all')", name=op.f('ck_campaigns_target_kind')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_campaigns'))
    )
    with op.batch_alter_table('campaigns', schema=None) as batch_op:
        batch_op.create_index('uq_campaigns_live_name', ['name'], unique=True, sqlite_where=sa.text('removed_at IS NULL'), postgresql_where=sa.text('removed_at IS NULL'))

    op.create_table('campaign_dates',
    sa.Column('campaign_id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=32), nullable=False),
    sa.Column('day', sa.Date(), nullable=False),
    sa.ForeignKeyConstraint(['campaign_id'], ['campaigns.id'], name=op.f('fk_campaign_dates_campaign_id_campaigns')),
    sa.PrimaryKeyConstraint('campaign_id', 'name', name=op.f('pk_campaign_dates'))
    )
    op.create_table('campaign_groups',
    sa.Column('campaign_id', sa.Integer(), nullable=False),
    sa.Column('group_id', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['campaign_id'], ['campaigns.id'], name=op.f('fk_campaign_groups_campaign_id_campaigns')),
    sa.ForeignKeyConstraint(['group_id'], ['groups.id'], name=op.f('fk_campaign_groups_group_id_groups')),
    sa.PrimaryKeyConstraint('campaign_id', 'group_id', name=op.f('pk_campaign_groups'))
    )
    op.create_table('campaign_phases',
    sa.Column('campaign_id', sa.Integer(), nullable=False),
    sa.Column('phase', sa.String(length=16), nullable=False),
    sa.Column('starts_on', sa.Date(), nullable=False),
    sa.Column('ends_on', sa.Date(), nullable=False),
    sa.CheckConstraint("phase IN ('warmup', 'burst', 'longtail', 'review')", name=op.f('ck_campaign_phases_phase')),
    sa.CheckConstraint('starts_on <= ends_on', name=op.f('ck_campaign_phases_span')),
    sa.ForeignKeyConstraint(['campaign_id'], ['campaigns.id'], name=op.f('fk_campaign_phases_campaign_id_campaigns')),
    sa.PrimaryKeyConstraint('campaign_id', 'phase', name=op.f('pk_campaign_phases'))
    )
    op.create_table('campaign_reminders',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('campaign_id', sa.Integer(), nullable=False),
    sa.Column('milestone', sa.String(length=32), nullable=False),
    sa.Column('due_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('channel', sa.String(length=32), nullable=False),
    sa.Column('target', sa.String(length=128), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('next_attempt_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('lease_holder', sa.String(length=128), nullable=True),
    sa.Column('lease_until', sa.DateTime(timezone=True), nullable=True),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('sent_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint("status IN ('pending', 'sending', 'sent', 'failed', 'skipped')", name=op.f('ck_campaign_reminders_status')),
    sa.ForeignKeyConstraint(['campaign_id'], ['campaigns.id'], name=op.f('fk_campaign_reminders_campaign_id_campaigns')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_campaign_reminders')),
    sa.UniqueConstraint('campaign_id', 'milestone', name='uq_campaign_reminders_campaign_id_milestone')
    )
    with op.batch_alter_table('campaign_reminders', schema=None) as batch_op:
        batch_op.create_index('ix_campaign_reminders_claim', ['channel', 'status', 'next_attempt_at'], unique=False)

    op.create_table('campaign_lotteries',
    sa.Column('campaign_id', sa.Integer(), nullable=False),
    sa.Column('lottery_id', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['campaign_id'], ['campaigns.id'], name=op.f('fk_campaign_lotteries_campaign_id_campaigns')),
    sa.ForeignKeyConstraint(['lottery_id'], ['lotteries.id'], name=op.f('fk_campaign_lotteries_lottery_id_lotteries')),
    sa.PrimaryKeyConstraint('campaign_id', 'lottery_id', name=op.f('pk_campaign_lotteries')),
    sa.UniqueConstraint('lottery_id', name='uq_campaign_lotteries_lottery_id')
    )

    # Posts belong to a campaign and a phase. campaign_id is no foreign key: SQLite could add one only by
    # rebuilding push_posts, which push_runs and push_post_groups (pointing at it) forbid inside the
    # migration's transaction; campaigns are never deleted (removal is a mark), so nothing can dangle.
    op.add_column('push_posts', sa.Column('campaign_id', sa.Integer(), nullable=True))
    op.add_column('push_posts', sa.Column('phase', sa.String(length=16), nullable=True))
    op.create_index('ix_push_posts_campaign_id', 'push_posts', ['campaign_id'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_push_posts_campaign_id', table_name='push_posts')
    op.drop_column('push_posts', 'phase')
    op.drop_column('push_posts', 'campaign_id')

    op.drop_table('campaign_lotteries')
    with op.batch_alter_table('campaign_reminders', schema=None) as batch_op:
        batch_op.drop_index('ix_campaign_reminders_claim')

    op.drop_table('campaign_reminders')
    op.drop_table('campaign_phases')
    op.drop_table('campaign_groups')
    op.drop_table('campaign_dates')
    with op.batch_alter_table('campaigns', schema=None) as batch_op:
        batch_op.drop_index('uq_campaigns_live_name', sqlite_where=sa.text('removed_at IS NULL'), postgresql_where=sa.text('removed_at IS NULL'))

    op.drop_table('campaigns')
