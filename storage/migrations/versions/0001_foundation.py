"""foundation: groups, members, memberships, inbox, activity, tokens, welcome

Revision ID: 0001
Revises: 
Create Date: 2026-11-23 09:06:16.139312
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0001'
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    
    op.create_table('access_tokens',
    sa.Column('key', sa.String(length=128), nullable=False),
    sa.Column('token', sa.Text(), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('key', name=op.f('pk_access_tokens'))
    )
    op.create_table('api_failures',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('api', sa.String(length=255), nullable=False),
    sa.Column('errcode', sa.Integer(), nullable=True),
    sa.Column('errmsg', sa.Text(), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('detail', sa.Text(), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_api_failures'))
    )
    with op.batch_alter_table('api_failures', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_api_failures_at'), ['at'], unique=False)

    op.create_table('groups',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('channel', sa.String(length=32), nullable=False),
    sa.Column('external_id', sa.String(length=128), nullable=False),
    sa.Column('name', sa.String(length=255), nullable=False),
    sa.Column('owner', sa.String(length=128), nullable=True),
    sa.Column('timezone', sa.String(length=64), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('dismissed_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_groups')),
    sa.UniqueConstraint('channel', 'external_id', name='uq_groups_channel_external')
    )
    op.create_table('inbox',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('channel', sa.String(length=32), nullable=False),
    sa.Column('message_key', sa.String(length=255), nullable=False),
    sa.Column('event_type', sa.String(length=32), nullable=False),
    sa.Column('payload', sa.Text(), nullable=False),
    sa.Column('received_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('lease_until', sa.DateTime(timezone=True), nullable=True),
    sa.Column('processed_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('recorded_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_inbox')),
    sa.UniqueConstraint('channel', 'message_key', name='uq_inbox_channel_key')
    )
    with op.batch_alter_table('inbox', schema=None) as batch_op:
        batch_op.create_index('ix_inbox_status_lease', ['status', 'lease_until'], unique=False)

    op.create_table('leases',
    sa.Column('name', sa.String(length=128), nullable=False),
    sa.Column('holder', sa.String(length=128), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('name', name=op.f('pk_leases'))
    )
    op.create_table('members',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('channel', sa.String(length=32), nullable=False),
    sa.Column('external_id', sa.String(length=128), nullable=False),
    sa.Column('name', sa.String(length=255), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_members')),
    sa.UniqueConstraint('channel', 'external_id', name='uq_members_channel_external')
    )
    op.create_table('platform_welcome_templates',
    sa.Column('key', sa.String(length=128), nullable=False),
    sa.Column('template_id', sa.String(length=255), nullable=False),
    sa.Column('content_hash', sa.String(length=64), nullable=False),
    sa.Column('synced_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('key', name=op.f('pk_platform_welcome_templates'))
    )
    op.create_table('transcript_messages',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('channel', sa.String(length=32), nullable=False),
    sa.Column('group_external_id', sa.String(length=128), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('from_bot', sa.Boolean(), nullable=False),
    sa.Column('user', sa.String(length=128), nullable=True),
    sa.Column('name', sa.String(length=255), nullable=False),
    sa.Column('text', sa.Text(), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_transcript_messages'))
    )
    with op.batch_alter_table('transcript_messages', schema=None) as batch_op:
        batch_op.create_index('ix_transcript_group_id', ['group_external_id', 'id'], unique=False)

    op.create_table('member_activity',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('group_id', sa.Integer(), nullable=False),
    sa.Column('member_id', sa.Integer(), nullable=False),
    sa.Column('day', sa.Date(), nullable=False),
    sa.Column('messages', sa.Integer(), nullable=False),
    sa.Column('commands', sa.Integer(), nullable=False),
    sa.Column('first_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('last_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['group_id'], ['groups.id'], name=op.f('fk_member_activity_group_id_groups')),
    sa.ForeignKeyConstraint(['member_id'], ['members.id'], name=op.f('fk_member_activity_member_id_members')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_member_activity')),
    sa.UniqueConstraint('group_id', 'member_id', 'day', name='uq_activity_group_member_day')
    )
    with op.batch_alter_table('member_activity', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_member_activity_day'), ['day'], unique=False)
        batch_op.create_index(batch_op.f('ix_member_activity_group_id'), ['group_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_member_activity_member_id'), ['member_id'], unique=False)

    op.create_table('memberships',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('group_id', sa.Integer(), nullable=False),
    sa.Column('member_id', sa.Integer(), nullable=False),
    sa.Column('joined_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('join_scene', sa.String(length=32), nullable=True),
    sa.Column('inviter_id', sa.Integer(), nullable=True),
    sa.Column('left_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('leave_scene', sa.String(length=32), nullable=True),
    sa.ForeignKeyConstraint(['group_id'], ['groups.id'], name=op.f('fk_memberships_group_id_groups')),
    sa.ForeignKeyConstraint(['inviter_id'], ['members.id'], name=op.f('fk_memberships_inviter_id_members')),
    sa.ForeignKeyConstraint(['member_id'], ['members.id'], name=op.f('fk_memberships_member_id_members')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_memberships'))
    )
    with op.batch_alter_table('memberships', schema=None) as batch_op:
        batch_op.create_index('ix_memberships_group_joined', ['group_id', 'joined_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_memberships_member_id'), ['member_id'], unique=False)
        batch_op.create_index('uq_memberships_open', ['group_id', 'member_id'], unique=True, sqlite_where=sa.text('left_at IS NULL'), postgresql_where=sa.text('left_at IS NULL'))

    op.create_table('pending_welcomes',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('group_id', sa.Integer(), nullable=False),
    sa.Column('member_id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=255), nullable=False),
    sa.Column('queued_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('batch', sa.String(length=36), nullable=True),
    sa.Column('claimed_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['group_id'], ['groups.id'], name=op.f('fk_pending_welcomes_group_id_groups')),
    sa.ForeignKeyConstraint(['member_id'], ['members.id'], name=op.f('fk_pending_welcomes_member_id_members')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_pending_welcomes'))
    )
    with op.batch_alter_table('pending_welcomes', schema=None) as batch_op:
        batch_op.create_index('ix_pending_welcomes_group_batch', ['group_id', 'batch'], unique=False)

    op.create_table('welcome_settings',
    sa.Column('group_id', sa.Integer(), nullable=False),
    sa.Column('enabled', sa.Boolean(), nullable=True),
    sa.Column('template', sa.Text(), nullable=True),
    sa.Column('rules', sa.Text(), nullable=True),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['group_id'], ['groups.id'], name=op.f('fk_welcome_settings_group_id_groups')),
    sa.PrimaryKeyConstraint('group_id', name=op.f('pk_welcome_settings'))
    )
    


def downgrade() -> None:
    
    op.drop_table('welcome_settings')
    with op.batch_alter_table('pending_welcomes', schema=None) as batch_op:
        batch_op.drop_index('ix_pending_welcomes_group_batch')

    op.drop_table('pending_welcomes')
    with op.batch_alter_table('memberships', schema=None) as batch_op:
        batch_op.drop_index('uq_memberships_open', sqlite_where=sa.text('left_at IS NULL'), postgresql_where=sa.text('left_at IS NULL'))
        batch_op.drop_index(batch_op.f('ix_memberships_member_id'))
        batch_op.drop_index('ix_memberships_group_joined')

    op.drop_table('memberships')
    with op.batch_alter_table('member_activity', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_member_activity_member_id'))
        batch_op.drop_index(batch_op.f('ix_member_activity_group_id'))
        batch_op.drop_index(batch_op.f('ix_member_activity_day'))

    op.drop_table('member_activity')
    with op.batch_alter_table('transcript_messages', schema=None) as batch_op:
        batch_op.drop_index('ix_transcript_group_id')

    op.drop_table('transcript_messages')
    op.drop_table('platform_welcome_templates')
    op.drop_table('members')
    op.drop_table('leases')
    with op.batch_alter_table('inbox', schema=None) as batch_op:
        batch_op.drop_index('ix_inbox_status_lease')

    op.drop_table('inbox')
    op.drop_table('groups')
    with op.batch_alter_table('api_failures', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_api_failures_at'))

    op.drop_table('api_failures')
    op.drop_table('access_tokens')
    
