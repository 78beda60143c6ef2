"""The work queue as SQL, SLA countdowns, and ids given by a unique prefix.

Everything here reads the work-item projection (``work_item``, ``work_item_group``, declared in
:mod:`engine.tables`, so the queue needs no ORM); no instance row or workflow state is ever
loaded, so a queue of ten thousand open tasks is one indexed query on one table.

Countdown states (``gridflow tasks``):

- ``overdue``: the due time has passed;
- ``at_risk``: less than 25 % of the task's time (due − created) is left, or less than 4 hours;
- ``ok``: otherwise; a task without a due time has no countdown (``None``).
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, NamedTuple

from sqlalchemy import String, exists, or_, select, type_coerce

from .errors import InvalidInput, NotFound
from .tables import work_item, work_item_group

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

AT_RISK_FRACTION = 0.25
AT_RISK_WITHIN = timedelta(hours=4)
AMBIGUOUS_SHOWN = 10

#: the fields of ``engine.api.WorkItem``, in order: the columns of a queue row
WORK_ITEM_FIELDS = ("id", "instance_id", "bpmn_id", "name", "lane", "candidate_groups", "assignee", "form_key",
                    "due_at", "definition_key", "state", "created_at", "business_key", "completed_by",
                    "completed_at")

#: the columns of a work-item row, labelled with the field names of ``engine.api.WorkItem``
WORK_ITEM_COLUMNS = tuple(
    # candidate_groups as stored (JSON text on SQLite): a queue repeats a few group lists ten thousand
    # times, so candidate_groups() decodes each distinct text once instead of once per row
    type_coerce(work_item.c[name], String).label(name) if name == "candidate_groups" else work_item.c[name]
    for name in WORK_ITEM_FIELDS)

_ID = re.compile(r"^[0-9a-f-]+$")


def candidate_groups(stored: str | list | None) -> list[str]:
    """The candidate groups of a queue row: JSON text (SQLite) or an already decoded list (PostgreSQL)."""
    if isinstance(stored, str):
        return list(_decoded_groups(stored))
    return list(stored or ())


@functools.lru_cache(maxsize=1024)
def _decoded_groups(text: str) -> tuple[str, ...]:
    return tuple(json.loads(text) or ())


class Countdown(NamedTuple):
    """The SLA clock of one task at one instant."""

    state: str | None  # ok, at_risk, overdue; None without a due time
    due_in_seconds: int | None  # negative when overdue
    age_seconds: int


def countdown(created_at: datetime, due_at: datetime | None, now: datetime) -> Countdown:
    age_seconds, due_in_seconds, state = sla_clock(created_at, due_at, now)
    return Countdown(state, due_in_seconds, age_seconds)


def sla_clock(created_at: datetime, due_at: datetime | None, now: datetime) -> tuple[int, int | None, str | None]:
    """(age_seconds, due_in_seconds, state) of a task at ``now``: the rule of :class:`Countdown`, as a
    plain tuple for loops over a whole queue. Seconds are truncated toward zero; aware datetimes."""
    age = int((now - created_at).total_seconds())
    if due_at is None:
        return age, None, None
    left = due_at - now
    seconds = left.total_seconds()
    if seconds < 0:
        state = "overdue"
    elif left < AT_RISK_WITHIN or left < (due_at - created_at) * AT_RISK_FRACTION:
        state = "at_risk"
    else:
        state = "ok"
    return age, int(seconds), state


def json_rows(rows: Iterable[Sequence], now: datetime) -> list[dict[str, Any]]:
    """Queue rows (the values of ``WORK_ITEM_COLUMNS``, in order) as JSON-ready dicts: the WorkItem's
    fields, then ``age_seconds``, ``due_in_seconds`` and ``sla`` at ``now`` (see :func:`sla_clock`).

    Instants stay aware datetimes; the candidate groups of rows with the same stored groups are one
    shared tuple (a JSON array). Written for ten thousand rows: no WorkItem, no per-row helper objects.
    """
    now = now.astimezone(UTC)  # the stored instants' zone: subtracting them skips two utcoffset() calls each
    out = []
    append = out.append
    for (task_id, instance_id, bpmn_id, name, lane, groups, assignee, form_key, due_at, definition_key, state,
         created_at, business_key, completed_by, completed_at) in rows:  # WORK_ITEM_FIELDS
        if type(groups) is str:  # SQLite: the stored JSON text
            groups = _decoded_groups(groups)
        age_seconds, due_in_seconds, sla = sla_clock(created_at, due_at, now)
        append({"id": task_id, "instance_id": instance_id, "bpmn_id": bpmn_id, "name": name, "lane": lane,
                "candidate_groups": groups or (), "assignee": assignee, "form_key": form_key, "due_at": due_at,
                "definition_key": definition_key, "state": state, "created_at": created_at,
                "business_key": business_key, "completed_by": completed_by, "completed_at": completed_at,
                "age_seconds": age_seconds, "due_in_seconds": due_in_seconds, "sla": sla})
    return out


def queue_query(*, instance_id: str | None = None, group: str | None = None, assignee: str | None = None,
                include_closed: bool = False, viewer_name: str | None = None,
                viewer_groups: list[str] | None = None, see_claimed: bool = False,
                overdue_at: datetime | None = None, flow: str | None = None, limit: int | None = None):
    """The SELECT behind ``Engine.tasks``: earliest due first, tasks without a due time last.

    ``viewer_*`` restricts to one user's queue: tasks assigned to them, and tasks offered to one
    of their groups that nobody holds (``see_claimed``: also those others hold, for supervisors).
    """
    item = work_item.c
    query = select(*WORK_ITEM_COLUMNS)
    if not include_closed:
        query = query.where(item.state == "open")
    if instance_id:
        query = query.where(item.instance_id == instance_id)
    if group:
        query = query.where(_offered_to(work_item_group.c.group_name == group))
    if assignee:
        query = query.where(item.assignee == assignee)
    if viewer_name is not None:
        offered = _offered_to(work_item_group.c.group_name.in_(viewer_groups or []))
        if not see_claimed:
            offered = offered & item.assignee.is_(None)
        query = query.where(or_(item.assignee == viewer_name, offered))
    if overdue_at is not None:
        query = query.where(item.due_at < overdue_at)
    if flow:
        query = query.where(item.definition_key == flow)
    query = query.order_by(item.due_at.is_(None), item.due_at, item.created_at, item.instance_id, item.bpmn_id,
                           item.id)
    if limit:
        query = query.limit(limit)
    return query


def _offered_to(groups):
    """The work item has a candidate group matching ``groups``: a correlated EXISTS on the group table's
    primary key (work_item_id, group_name), so the queue is read in the order of ``ix_work_item_queue``
    and each row is checked with one index probe (an ``IN (SELECT …)`` list is built first, and the
    rows were then sorted)."""
    offered = work_item_group.c
    return exists().where(offered.work_item_id == work_item.c.id, groups)


# -- ids by unique prefix -----------------------------------------------------------------------
def _normalise(prefix: str) -> str:
    return (prefix or "").strip().lower()


def task_candidates(session: Session, prefix: str, limit: int = AMBIGUOUS_SHOWN + 1) -> list[tuple[str, str]]:
    """(id, description) of the work items whose id starts with ``prefix``."""
    prefix = _normalise(prefix)
    if not prefix or not _ID.match(prefix):
        return []
    item = work_item.c
    rows = session.execute(select(item.id, item.name, item.state, item.business_key)
                           .where(item.id.startswith(prefix, autoescape=True)).order_by(item.id).limit(limit))
    return [(i, f"task {name}, {state}" + (f", case {bk}" if bk else "")) for i, name, state, bk in rows]


def instance_candidates(session: Session, prefix: str, limit: int = AMBIGUOUS_SHOWN + 1) -> list[tuple[str, str]]:
    """(id, description) of the instances whose id starts with ``prefix``, and of those whose case number
    (business key, e.g. the 95598 work-order number a customer quotes) is exactly ``prefix``."""
    from .store import DefinitionRow, InstanceRow

    columns = (select(InstanceRow.id, DefinitionRow.key, InstanceRow.status, InstanceRow.business_key)
               .join(DefinitionRow, DefinitionRow.id == InstanceRow.definition_id))
    case_number = (prefix or "").strip()
    rows = list(session.execute(columns.where(InstanceRow.business_key == case_number)
                                .order_by(InstanceRow.started_at.desc()).limit(limit))) if case_number else []
    prefix = _normalise(prefix)
    if prefix and _ID.match(prefix):
        rows += [row for row in session.execute(columns.where(InstanceRow.id.startswith(prefix, autoescape=True))
                                                .order_by(InstanceRow.id).limit(limit)) if row not in rows]
    return [(i, f"case of {key}, {status}" + (f", case {bk}" if bk else "")) for i, key, status, bk in rows]


def pick_one(prefix: str, candidates: list[tuple[str, str]], what: str) -> str:
    """The one candidate, or a clear error: none (NotFound) or several (InvalidInput listing them)."""
    if not candidates:
        raise NotFound(f"no {what} '{prefix}'")
    exact = [c for c in candidates if c[0] == _normalise(prefix)]
    if len(candidates) == 1 or exact:
        return (exact or candidates)[0][0]
    shown = "; ".join(f"{i[:12]} ({d})" for i, d in candidates[:AMBIGUOUS_SHOWN])
    more = " and more" if len(candidates) > AMBIGUOUS_SHOWN else ""
    raise InvalidInput(f"{what} '{prefix}' is ambiguous; it matches {shown}{more}; give more characters of the id")
