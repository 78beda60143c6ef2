"""work_item: business_key, a copy of the case's business key, so the work queue reads one table

``gridflow tasks`` listed the queue with a join to ``instance`` only to show the case number;
with ten thousand open tasks that join (over the wide instance rows) was a third of the query.
The engine writes the copy with the work item and updates it when a case gets its number
during a step; existing rows are filled from their instance here.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30 20:00:00
"""
from alembic import op
import sqlalchemy as sa

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('work_item', schema=None) as batch_op:
        batch_op.add_column(sa.Column('business_key', sa.String(length=200), nullable=True))
    op.execute("UPDATE work_item SET business_key = "
               "(SELECT instance.business_key FROM instance WHERE instance.id = work_item.instance_id)")


def downgrade() -> None:
    with op.batch_alter_table('work_item', schema=None) as batch_op:
        batch_op.drop_column('business_key')
