"""faq: FAQ entries, synonyms, unanswered questions, answer cooldowns

Revision ID: 0003
Revises: 0002
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:

    op.create_table('faq_entries',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('group_id', sa.Integer(), nullable=True),
    sa.Column('question', sa.String(length=255), nullable=False),
    sa.Column('question_key', sa.String(length=255), nullable=False),
    sa.Column('answer', sa.String(), nullable=False),
    sa.Column('aliases', sa.String(), nullable=False),
    sa.Column('updated_by', sa.String(length=128), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['group_id'], ['groups.id'], name=op.f('fk_faq_entries_group_id_groups')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_faq_entries'))
    )
    with op.batch_alter_table('faq_entries', schema=None) as batch_op:
        batch_op.create_index('uq_faq_entries_global_question', ['question_key'], unique=True, sqlite_where=sa.text('group_id IS NULL'), postgresql_where=sa.text('group_id IS NULL'))
        batch_op.create_index('uq_faq_entries_group_question', ['group_id', 'question_key'], unique=True, sqlite_where=sa.text('group_id IS NOT NULL'), postgresql_where=sa.text('group_id IS NOT NULL'))

    op.create_table('faq_revisions',
    sa.Column('scope', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('revision', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('scope', name=op.f('pk_faq_revisions'))
    )

    op.create_table('faq_cooldowns',
    sa.Column('group_id', sa.Integer(), nullable=False),
    sa.Column('audience', sa.String(length=128), nullable=False),
    sa.Column('entry_id', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('answered_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('event_ref', sa.String(length=255), nullable=False),
    sa.ForeignKeyConstraint(['group_id'], ['groups.id'], name=op.f('fk_faq_cooldowns_group_id_groups')),
    sa.PrimaryKeyConstraint('group_id', 'audience', 'entry_id', 'kind', name=op.f('pk_faq_cooldowns'))
    )

    op.create_table('faq_unanswered',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('group_id', sa.Integer(), nullable=False),
    sa.Column('cluster_key', sa.String(length=255), nullable=False),
    sa.Column('sample', sa.String(length=500), nullable=False),
    sa.Column('count', sa.Integer(), nullable=False),
    sa.Column('first_seen', sa.DateTime(timezone=True), nullable=False),
    sa.Column('last_seen', sa.DateTime(timezone=True), nullable=False),
    sa.Column('last_event_ref', sa.String(length=255), nullable=False),
    sa.ForeignKeyConstraint(['group_id'], ['groups.id'], name=op.f('fk_faq_unanswered_group_id_groups')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_faq_unanswered')),
    sa.UniqueConstraint('group_id', 'cluster_key', name=op.f('uq_faq_unanswered_group_id_cluster_key'))
    )


def downgrade() -> None:

    op.drop_table('faq_unanswered')
    op.drop_table('faq_cooldowns')
    op.drop_table('faq_revisions')
    with op.batch_alter_table('faq_entries', schema=None) as batch_op:
        batch_op.drop_index('uq_faq_entries_group_question', sqlite_where=sa.text('group_id IS NOT NULL'), postgresql_where=sa.text('group_id IS NOT NULL'))
        batch_op.drop_index('uq_faq_entries_global_question', sqlite_where=sa.text('group_id IS NULL'), postgresql_where=sa.text('group_id IS NULL'))

    op.drop_table('faq_entries')
