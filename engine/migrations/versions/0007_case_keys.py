"""case_key and search_index: an indexed copy of the variables handlers look cases up by

Repeat-complaint detection (``HandlerContext.find_cases(..., any_of=...)``) compared the variables JSON
of every case in its 30-day window, a cost that grows with the window's volume. ``case_key`` holds the
text values of the variables handler modules declare searchable (``handlers.searchable``), one row per
case and variable; ``search_index`` records the (process, variable) pairs whose rows cover every case.
The rows of existing cases are written by the next ``gridflow deploy`` (``engine.search_keys.build``);
until then lookups compare the JSON as before.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30 21:00:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'case_key',
        sa.Column('instance_id', sa.String(length=36), nullable=False),
        sa.Column('name', sa.String(length=100), nullable=False),
        sa.Column('definition_key', sa.String(length=200), nullable=False),
        sa.Column('value', sa.String(length=400), nullable=False),
        sa.ForeignKeyConstraint(['instance_id'], ['instance.id']),
        sa.PrimaryKeyConstraint('instance_id', 'name'),
    )
    op.create_index('ix_case_key_lookup', 'case_key', ['definition_key', 'name', 'value'], unique=False)
    op.create_table(
        'search_index',
        sa.Column('definition_key', sa.String(length=200), nullable=False),
        sa.Column('name', sa.String(length=100), nullable=False),
        sa.Column('built_at', sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint('definition_key', 'name'),
    )


def downgrade() -> None:
    op.drop_table('search_index')
    op.drop_index('ix_case_key_lookup', table_name='case_key')
    op.drop_table('case_key')
