"""lottery: lotteries, prizes, entrants, draws

Revision ID: 0005
Revises: 0004
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:

    op.create_table('lotteries',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('group_id', sa.Integer(), nullable=False),
    sa.Column('title', sa.String(length=64), nullable=False),
    sa.Column('keyword', sa.String(length=32), nullable=False),
    sa.Column('deadline', sa.DateTime(timezone=True), nullable=False),
    sa.Column('min_days', sa.Integer(), nullable=False),
    sa.Column('exclude_admins', sa.Boolean(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('seed', sa.String(length=64), nullable=False),
    sa.Column('commitment', sa.String(length=64), nullable=False),
    sa.Column('entrant_count', sa.Integer(), nullable=False),
    sa.Column('picks', sa.Integer(), nullable=False),
    sa.Column('created_by', sa.String(length=128), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('event_id', sa.Integer(), nullable=True),
    sa.Column('lease_holder', sa.String(length=128), nullable=True),
    sa.Column('lease_until', sa.DateTime(timezone=True), nullable=True),
    sa.Column('drawn_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('entrants_hash', sa.String(length=64), nullable=True),
    sa.Column('announced_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('announce_attempts', sa.Integer(), nullable=False),
    sa.Column('cancelled_at', sa.DateTime(timezone=True), nullable=True),
    sa.CheckConstraint('entrant_count >= 0 AND min_days >= 0 AND picks >= 0', name=op.f('ck_lotteries_counts')),
    sa.ForeignKeyConstraint(['group_id'], ['groups.id'], name=op.f('fk_lotteries_group_id_groups')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_lotteries')),
    sa.UniqueConstraint('event_id', name='uq_lotteries_event_id')
    )
    with op.batch_alter_table('lotteries', schema=None) as batch_op:
        batch_op.create_index('ix_lotteries_group_status', ['group_id', 'status'], unique=False)
        batch_op.create_index('ix_lotteries_status_deadline', ['status', 'deadline'], unique=False)
        batch_op.create_index('uq_lotteries_open_keyword', ['group_id', 'keyword'], unique=True, sqlite_where=sa.text("status = 'open'"), postgresql_where=sa.text("status = 'open'"))

    op.create_table('lottery_prizes',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('lottery_id', sa.Integer(), nullable=False),
    sa.Column('position', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=32), nullable=False),
    sa.Column('stock', sa.Integer(), nullable=False),
    sa.Column('points', sa.Integer(), nullable=True),
    sa.CheckConstraint('stock >= 1', name=op.f('ck_lottery_prizes_stock_positive')),
    sa.ForeignKeyConstraint(['lottery_id'], ['lotteries.id'], name=op.f('fk_lottery_prizes_lottery_id_lotteries')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_lottery_prizes')),
    sa.UniqueConstraint('id', 'stock', name='uq_lottery_prizes_id_stock'),
    sa.UniqueConstraint('lottery_id', 'name', name='uq_lottery_prizes_lottery_name'),
    sa.UniqueConstraint('lottery_id', 'position', name='uq_lottery_prizes_lottery_position')
    )

    op.create_table('lottery_entries',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('lottery_id', sa.Integer(), nullable=False),
    sa.Column('member_id', sa.Integer(), nullable=False),
    sa.Column('user', sa.String(length=128), nullable=False),
    sa.Column('event_id', sa.Integer(), nullable=True),
    sa.Column('joined_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['lottery_id'], ['lotteries.id'], name=op.f('fk_lottery_entries_lottery_id_lotteries')),
    sa.ForeignKeyConstraint(['member_id'], ['members.id'], name=op.f('fk_lottery_entries_member_id_members')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_lottery_entries')),
    sa.UniqueConstraint('lottery_id', 'member_id', name='uq_lottery_entries_lottery_member')
    )

    op.create_table('lottery_rounds',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('lottery_id', sa.Integer(), nullable=False),
    sa.Column('number', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('first_pick', sa.Integer(), nullable=False),
    sa.Column('picks', sa.Integer(), nullable=False),
    sa.Column('actor', sa.String(length=128), nullable=False),
    sa.Column('reason', sa.String(length=255), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('event_id', sa.Integer(), nullable=True),
    sa.ForeignKeyConstraint(['lottery_id'], ['lotteries.id'], name=op.f('fk_lottery_rounds_lottery_id_lotteries')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_lottery_rounds')),
    sa.UniqueConstraint('event_id', name='uq_lottery_rounds_event_id'),
    sa.UniqueConstraint('lottery_id', 'number', name='uq_lottery_rounds_lottery_number')
    )

    op.create_table('lottery_winners',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('lottery_id', sa.Integer(), nullable=False),
    sa.Column('round_id', sa.Integer(), nullable=False),
    sa.Column('prize_id', sa.Integer(), nullable=False),
    sa.Column('prize_stock', sa.Integer(), nullable=False),
    sa.Column('slot', sa.Integer(), nullable=False),
    sa.Column('pick', sa.Integer(), nullable=False),
    sa.Column('entry_id', sa.Integer(), nullable=False),
    sa.Column('member_id', sa.Integer(), nullable=False),
    sa.Column('user', sa.String(length=128), nullable=False),
    sa.Column('replaces_id', sa.Integer(), nullable=True),
    sa.Column('forfeited_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('forfeited_by', sa.String(length=128), nullable=True),
    sa.Column('forfeit_reason', sa.String(length=255), nullable=True),
    sa.CheckConstraint('slot >= 0 AND slot < prize_stock', name=op.f('ck_lottery_winners_slot_within_stock')),
    sa.ForeignKeyConstraint(['entry_id'], ['lottery_entries.id'], name=op.f('fk_lottery_winners_entry_id_lottery_entries')),
    sa.ForeignKeyConstraint(['lottery_id'], ['lotteries.id'], name=op.f('fk_lottery_winners_lottery_id_lotteries')),
    sa.ForeignKeyConstraint(['member_id'], ['members.id'], name=op.f('fk_lottery_winners_member_id_members')),
    sa.ForeignKeyConstraint(['prize_id', 'prize_stock'], ['lottery_prizes.id', 'lottery_prizes.stock'], name='fk_lottery_winners_prize_stock'),
    sa.ForeignKeyConstraint(['replaces_id'], ['lottery_winners.id'], name=op.f('fk_lottery_winners_replaces_id_lottery_winners')),
    sa.ForeignKeyConstraint(['round_id'], ['lottery_rounds.id'], name=op.f('fk_lottery_winners_round_id_lottery_rounds')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_lottery_winners')),
    sa.UniqueConstraint('lottery_id', 'entry_id', name='uq_lottery_winners_lottery_entry'),
    sa.UniqueConstraint('lottery_id', 'pick', name='uq_lottery_winners_lottery_pick')
    )
    with op.batch_alter_table('lottery_winners', schema=None) as batch_op:
        batch_op.create_index('uq_lottery_winners_active_slot', ['prize_id', 'slot'], unique=True, sqlite_where=sa.text('forfeited_at IS NULL'), postgresql_where=sa.text('forfeited_at IS NULL'))


def downgrade() -> None:

    with op.batch_alter_table('lottery_winners', schema=None) as batch_op:
        batch_op.drop_index('uq_lottery_winners_active_slot', sqlite_where=sa.text('forfeited_at IS NULL'), postgresql_where=sa.text('forfeited_at IS NULL'))

    op.drop_table('lottery_winners')
    op.drop_table('lottery_rounds')
    op.drop_table('lottery_entries')
    op.drop_table('lottery_prizes')
    with op.batch_alter_table('lotteries', schema=None) as batch_op:
        batch_op.drop_index('uq_lotteries_open_keyword', sqlite_where=sa.text("status = 'open'"), postgresql_where=sa.text("status = 'open'"))
        batch_op.drop_index('ix_lotteries_status_deadline')
        batch_op.drop_index('ix_lotteries_group_status')

    op.drop_table('lotteries')
