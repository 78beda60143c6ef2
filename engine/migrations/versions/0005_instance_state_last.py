"""instance: on SQLite, the workflow state becomes the row's last column

SQLite stores a row's columns in order and spills a long row into a chain of overflow pages; to
read a column it walks the chain up to that column. With ``state_json`` (about 95 KB for a
finished complaint) in the middle of the row, every query that reads ``variables`` or the columns
after it (the recent-cases search of ``HandlerContext.find_cases``, instance lists) read the whole
state of every row it looked at. Moved to the end, those columns sit in the row's first page or
two: the 30-day repeat-complaint search over 4,000 stored cases reads ~7× less
(bench/history_growth.py). PostgreSQL keeps long values out of line (TOAST): nothing to do there.

Done with ADD COLUMN / UPDATE / DROP COLUMN / RENAME COLUMN (SQLite ≥ 3.35) rather than a table
rebuild, so the foreign keys that point at ``instance`` stay untouched. Rewrites every row once.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30 21:00:00
"""
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    op.execute("ALTER TABLE instance ADD COLUMN state_json_last TEXT NOT NULL DEFAULT ''")
    op.execute("UPDATE instance SET state_json_last = state_json")
    op.execute("ALTER TABLE instance DROP COLUMN state_json")
    op.execute("ALTER TABLE instance RENAME COLUMN state_json_last TO state_json")


def downgrade() -> None:
    pass  # the column order is a storage detail: the schema is the same either way
