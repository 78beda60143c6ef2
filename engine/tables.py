"""Core views of the tables that read-only commands query, without the ORM.

``gridflow tasks`` (the work queue) and the acting-user check that precedes every CLI command
read only these columns. Declaring them as lightweight ``table()`` clauses lets those commands
run without importing ``sqlalchemy.orm`` and the models of :mod:`engine.store` (a tenth of a
second at every start). The models stay the one definition of the schema: a test checks that
every column named here exists there with the same type.
"""

from __future__ import annotations

from sqlalchemy import JSON, String, column, table

from .db import UtcDateTime

work_item = table(
    "work_item",
    column("id", String), column("instance_id", String), column("definition_key", String),
    column("bpmn_id", String), column("name", String), column("lane", String),
    column("candidate_groups", JSON), column("assignee", String), column("form_key", String),
    column("due_at", UtcDateTime), column("state", String), column("created_at", UtcDateTime),
    column("completed_by", String), column("completed_at", UtcDateTime), column("business_key", String),
)

work_item_group = table("work_item_group", column("work_item_id", String), column("group_name", String))

app_user = table("app_user", column("name", String), column("display_name", String),
                 column("created_at", UtcDateTime))

app_user_group = table("app_user_group", column("user_name", String), column("group_name", String))

#: every table declared here (the schema test walks them)
ALL = (work_item, work_item_group, app_user, app_user_group)
