"""console: ops console users, their groups, sessions and login attempts; FAQ scope per group and daily FAQ
counts; indexes for the console's dashboard (days across groups)

Revision ID: 0012
Revises: 0011
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0012'
down_revision: str | None = '0011'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('console_login_attempts',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('username', sa.String(length=64), nullable=False),
    sa.Column('ip', sa.String(length=64), nullable=False),
    sa.Column('success', sa.Boolean(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_console_login_attempts'))
    )
    with op.batch_alter_table('console_login_attempts', schema=None) as batch_op:
        batch_op.create_index('ix_console_login_attempts_ip_at', ['ip', 'at'], unique=False)
        batch_op.create_index('ix_console_login_attempts_username_at', ['username', 'at'], unique=False)

    op.create_table('console_users',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('username', sa.String(length=64), nullable=False),
    sa.Column('password_hash', sa.String(length=255), nullable=False),
    sa.Column('role', sa.String(length=16), nullable=False),
    sa.Column('disabled', sa.Boolean(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('password_changed_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('last_login_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_console_users')),
    sa.UniqueConstraint('username', name=op.f('uq_console_users_username'))
    )
    op.create_table('console_sessions',
    sa.Column('token_hash', sa.String(length=64), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('csrf_token', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('last_seen_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('ip', sa.String(length=64), nullable=False),
    sa.Column('user_agent', sa.String(length=255), nullable=False),
    sa.ForeignKeyConstraint(['user_id'], ['console_users.id'], name=op.f('fk_console_sessions_user_id_console_users')),
    sa.PrimaryKeyConstraint('token_hash', name=op.f('pk_console_sessions'))
    )
    with op.batch_alter_table('console_sessions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_console_sessions_expires_at'), ['expires_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_console_sessions_user_id'), ['user_id'], unique=False)

    op.create_table('console_user_groups',
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('group_id', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['group_id'], ['groups.id'], name=op.f('fk_console_user_groups_group_id_groups')),
    sa.ForeignKeyConstraint(['user_id'], ['console_users.id'], name=op.f('fk_console_user_groups_user_id_console_users')),
    sa.PrimaryKeyConstraint('user_id', 'group_id', name=op.f('pk_console_user_groups'))
    )
    with op.batch_alter_table('console_user_groups', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_console_user_groups_group_id'), ['group_id'], unique=False)

    op.create_table('faq_daily_counts',
    sa.Column('group_id', sa.Integer(), nullable=False),
    sa.Column('day', sa.Date(), nullable=False),
    sa.Column('answered', sa.Integer(), nullable=False),
    sa.Column('suggested', sa.Integer(), nullable=False),
    sa.Column('unanswered', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['group_id'], ['groups.id'], name=op.f('fk_faq_daily_counts_group_id_groups')),
    sa.PrimaryKeyConstraint('group_id', 'day', name=op.f('pk_faq_daily_counts'))
    )
    with op.batch_alter_table('faq_daily_counts', schema=None) as batch_op:
        batch_op.create_index('ix_faq_daily_counts_day', ['day'], unique=False)

    op.create_table('faq_group_settings',
    sa.Column('group_id', sa.Integer(), nullable=False),
    sa.Column('scope', sa.String(length=16), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['group_id'], ['groups.id'], name=op.f('fk_faq_group_settings_group_id_groups')),
    sa.PrimaryKeyConstraint('group_id', name=op.f('pk_faq_group_settings'))
    )

    # The dashboard reads days across all groups.
    with op.batch_alter_table('checkins', schema=None) as batch_op:
        batch_op.create_index('ix_checkins_day', ['day'], unique=False)

    with op.batch_alter_table('member_activity', schema=None) as batch_op:
        # Same name, now (day, member_id): daily active members across groups come from the index alone.
        batch_op.drop_index(batch_op.f('ix_member_activity_day'))
        batch_op.create_index('ix_member_activity_day', ['day', 'member_id'], unique=False)

    with op.batch_alter_table('memberships', schema=None) as batch_op:
        batch_op.create_index('ix_memberships_joined_at', ['joined_at'], unique=False)
        batch_op.create_index('ix_memberships_left_at', ['left_at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('memberships', schema=None) as batch_op:
        batch_op.drop_index('ix_memberships_left_at')
        batch_op.drop_index('ix_memberships_joined_at')

    with op.batch_alter_table('member_activity', schema=None) as batch_op:
        batch_op.drop_index('ix_member_activity_day')
        batch_op.create_index(batch_op.f('ix_member_activity_day'), ['day'], unique=False)

    with op.batch_alter_table('checkins', schema=None) as batch_op:
        batch_op.drop_index('ix_checkins_day')

    op.drop_table('faq_group_settings')
    with op.batch_alter_table('faq_daily_counts', schema=None) as batch_op:
        batch_op.drop_index('ix_faq_daily_counts_day')

    op.drop_table('faq_daily_counts')
    with op.batch_alter_table('console_user_groups', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_console_user_groups_group_id'))

    op.drop_table('console_user_groups')
    with op.batch_alter_table('console_sessions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_console_sessions_user_id'))
        batch_op.drop_index(batch_op.f('ix_console_sessions_expires_at'))

    op.drop_table('console_sessions')
    op.drop_table('console_users')
    with op.batch_alter_table('console_login_attempts', schema=None) as batch_op:
        batch_op.drop_index('ix_console_login_attempts_username_at')
        batch_op.drop_index('ix_console_login_attempts_ip_at')

    op.drop_table('console_login_attempts')
