"""work_item: an index in the order of the work queue

``gridflow tasks`` lists the open tasks earliest due first, tasks without a due time last, then by
creation, case, element and id (``engine.worklist.queue_query``). With only ``(state, due_at)`` the
database found the open rows and then sorted all of them (SQLite: a temporary B-tree, about a
quarter of the query for ten thousand open tasks). This index holds the rows in that order,
``due_at IS NULL`` included as an expression (NULLs sort first in an ascending SQLite index), so
the queue is read in index order. PostgreSQL accepts the same expression index.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01 09:00:00
"""
from alembic import op
import sqlalchemy as sa

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index('ix_work_item_queue', 'work_item',
                    ['state', sa.column('due_at').is_(None), 'due_at', 'created_at', 'instance_id', 'bpmn_id', 'id'],
                    unique=False)


def downgrade() -> None:
    op.drop_index('ix_work_item_queue', table_name='work_item')
