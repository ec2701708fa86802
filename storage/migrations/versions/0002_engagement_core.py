"""engagement core: group admins, audit log, points ledger

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23 11:37:54.847791
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0002'
down_revision: str | None = '0001'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:

    op.create_table('audit_log',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('source', sa.String(length=16), nullable=False),
    sa.Column('channel', sa.String(length=32), nullable=False),
    sa.Column('group', sa.String(length=128), nullable=False),
    sa.Column('actor', sa.String(length=128), nullable=False),
    sa.Column('command', sa.String(length=64), nullable=False),
    sa.Column('args', sa.String(), nullable=False),
    sa.Column('result', sa.String(length=16), nullable=False),
    sa.Column('detail', sa.String(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_audit_log'))
    )
    with op.batch_alter_table('audit_log', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_audit_log_at'), ['at'], unique=False)
        batch_op.create_index(batch_op.f('ix_audit_log_group'), ['group'], unique=False)

    op.create_table('group_admins',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('group_id', sa.Integer(), nullable=False),
    sa.Column('member_id', sa.Integer(), nullable=False),
    sa.Column('source', sa.String(length=16), nullable=False),
    sa.Column('detail', sa.String(length=128), nullable=False),
    sa.Column('added_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['group_id'], ['groups.id'], name=op.f('fk_group_admins_group_id_groups')),
    sa.ForeignKeyConstraint(['member_id'], ['members.id'], name=op.f('fk_group_admins_member_id_members')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_group_admins')),
    sa.UniqueConstraint('group_id', 'member_id', 'source', name='uq_group_admins_group_member_source')
    )
    with op.batch_alter_table('group_admins', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_group_admins_group_id'), ['group_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_group_admins_member_id'), ['member_id'], unique=False)

    op.create_table('points_ledger',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('group_id', sa.Integer(), nullable=False),
    sa.Column('member_id', sa.Integer(), nullable=False),
    sa.Column('delta', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('reason', sa.String(length=255), nullable=False),
    sa.Column('ref', sa.String(length=128), nullable=True),
    sa.Column('actor_id', sa.Integer(), nullable=True),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['actor_id'], ['members.id'], name=op.f('fk_points_ledger_actor_id_members')),
    sa.ForeignKeyConstraint(['group_id'], ['groups.id'], name=op.f('fk_points_ledger_group_id_groups')),
    sa.ForeignKeyConstraint(['member_id'], ['members.id'], name=op.f('fk_points_ledger_member_id_members')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_points_ledger'))
    )
    with op.batch_alter_table('points_ledger', schema=None) as batch_op:
        batch_op.create_index('ix_points_group_member', ['group_id', 'member_id'], unique=False)
        batch_op.create_index('uq_points_kind_ref', ['kind', 'ref'], unique=True, sqlite_where=sa.text('ref IS NOT NULL'), postgresql_where=sa.text('ref IS NOT NULL'))




def downgrade() -> None:

    with op.batch_alter_table('points_ledger', schema=None) as batch_op:
        batch_op.drop_index('uq_points_kind_ref', sqlite_where=sa.text('ref IS NOT NULL'), postgresql_where=sa.text('ref IS NOT NULL'))
        batch_op.drop_index('ix_points_group_member')

    op.drop_table('points_ledger')
    with op.batch_alter_table('group_admins', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_group_admins_member_id'))
        batch_op.drop_index(batch_op.f('ix_group_admins_group_id'))

    op.drop_table('group_admins')
    with op.batch_alter_table('audit_log', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_audit_log_group'))
        batch_op.drop_index(batch_op.f('ix_audit_log_at'))

    op.drop_table('audit_log')

