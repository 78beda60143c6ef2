"""instance: index (definition_id, started_at) for the recent cases of a process

Handlers such as repeat-complaint detection (``HandlerContext.find_cases``) ask for the cases of one
process started since a date; without this index the query reads every stored instance, so a
task completion got slower as finished cases accumulated (bench/history_growth.py).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30 18:00:00
"""
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('instance', schema=None) as batch_op:
        batch_op.create_index('ix_instance_definition_started', ['definition_id', 'started_at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('instance', schema=None) as batch_op:
        batch_op.drop_index('ix_instance_definition_started')
