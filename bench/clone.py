"""Bulk copies of one real instance, for benchmarks that need thousands of stored cases quickly.

:func:`clone_instance` reads every row that belongs to a template instance (the instance, its
searchable variables, work items and their groups, timers, jobs, subscriptions, SLA clocks,
incidents and history events) through table reflection, and inserts ``count`` copies in batches
with Core ``executemany``. Every UUID in every value (the instance id, SpiffWorkflow task ids
inside ``state_json``, idempotency keys …) is replaced by a fresh one per copy, consistently across
the rows of that copy, so the copies are as real as the template: an engine can load, query and
continue each of them. Each copy's timestamps can be shifted (``shift``), and its business key set
(``business_key``).

The template text is split once at its UUIDs; a copy is a ``join`` of the pieces with new ids,
which keeps a 100,000-instance build within minutes on SQLite.
"""

from __future__ import annotations

import json
import re
import uuid
import warnings
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import JSON, MetaData, create_engine, inspect, select

UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
# tables whose rows belong to an instance, in insert order, and how to find them
_OWNED = ["instance", "case_key", "work_item", "work_item_group", "timer", "job", "message_subscription",
          "signal_subscription", "sla_clock", "incident", "event"]


class _Text:
    """A string split at its UUIDs: ``render(mapping)`` is the string with every UUID mapped."""

    __slots__ = ("ids", "parts")

    def __init__(self, text: str):
        self.parts: list[str] = []
        self.ids: list[str] = []
        last = 0
        for match in UUID_RE.finditer(text):
            self.parts.append(text[last:match.start()])
            self.ids.append(match.group(0))
            last = match.end()
        self.parts.append(text[last:])

    def render(self, mapping: dict[str, str]) -> str:
        if not self.ids:
            return self.parts[0]
        out = [self.parts[0]]
        for uid, part in zip(self.ids, self.parts[1:], strict=True):
            out.append(mapping.get(uid, uid))
            out.append(part)
        return "".join(out)


def clone_instance(url: str, instance_id: str, count: int, business_key: Callable[[int], str | None] | None = None,
                   shift: Callable[[int], timedelta] | None = None, batch: int = 500,
                   progress: Callable[[int], None] | None = None,
                   adjust: Callable[[int, str, dict[str, Any]], None] | None = None) -> list[str]:
    """Insert ``count`` copies of instance ``instance_id``; returns the new instance ids.

    ``adjust(n, table, row)`` may change copy ``n``'s rows before they are inserted (e.g. its variables).
    """
    sql = create_engine(url)
    try:
        metadata = MetaData()
        present = set(inspect(sql).get_table_names())
        with warnings.catch_warnings():  # SQLite expression indexes (0006) cannot be reflected: not needed here
            warnings.filterwarnings("ignore", "Skipped unsupported reflection of expression-based index")
            metadata.reflect(sql, only=[t for t in _OWNED if t in present])
        tables = [metadata.tables[name] for name in _OWNED if name in metadata.tables]
        template: dict[str, list[dict[str, Any]]] = {}
        with sql.connect() as connection:
            for table in tables:
                if table.name == "instance":
                    where = table.c.id == instance_id
                elif table.name == "work_item_group":
                    items = metadata.tables["work_item"]
                    where = table.c.work_item_id.in_(select(items.c.id).where(items.c.instance_id == instance_id))
                else:
                    where = table.c.instance_id == instance_id
                template[table.name] = [dict(r._mapping) for r in connection.execute(select(table).where(where))]
        if not template.get("instance"):
            raise ValueError(f"no instance {instance_id}")
        plans = {table.name: _plan(table, template[table.name]) for table in tables}
        known = set()
        for plan in plans.values():
            for row in plan:
                for kind, value in row.values():
                    if kind in ("text", "json"):
                        known.update(value.ids)
        created: list[str] = []
        with sql.begin() as connection:
            for start in range(0, count, batch):
                rows: dict[str, list[dict[str, Any]]] = {t.name: [] for t in tables}
                for n in range(start, min(count, start + batch)):
                    mapping = {uid: str(uuid.uuid4()) for uid in known}
                    delta = shift(n) if shift else timedelta(0)
                    for table in tables:
                        for row in plans[table.name]:
                            rendered = _render(row, mapping, delta)
                            if adjust is not None:
                                adjust(n, table.name, rendered)
                            if business_key is not None and "business_key" in table.c:  # instance, work_item
                                rendered["business_key"] = business_key(n)
                            rows[table.name].append(rendered)
                    created.append(rows["instance"][-1]["id"])
                for table in tables:
                    if rows[table.name]:
                        connection.execute(table.insert(), rows[table.name])
                if progress is not None:
                    progress(min(count, start + batch))
        return created
    finally:
        sql.dispose()


def _plan(table, rows: list[dict[str, Any]]) -> list[dict[str, tuple[str, Any]]]:
    """Per row and column: how to produce the copy's value (text with ids, JSON with ids, time, as is)."""
    integer_key = [c.name for c in table.primary_key.columns if c.autoincrement is True
                   or (c.autoincrement == "auto" and c.type.python_type is int)]
    plan = []
    for row in rows:
        entry: dict[str, tuple[str, Any]] = {}
        for column in table.columns:
            if column.name in integer_key:
                continue  # the database numbers the copy
            value = row[column.name]
            if isinstance(value, str):
                entry[column.name] = ("text", _Text(value))
            elif isinstance(column.type, JSON) and value is not None:
                entry[column.name] = ("json", _Text(json.dumps(value, ensure_ascii=False)))
            elif isinstance(value, datetime):
                entry[column.name] = ("time", value)
            else:
                entry[column.name] = ("same", value)
        plan.append(entry)
    return plan


def _render(row: dict[str, tuple[str, Any]], mapping: dict[str, str], delta: timedelta) -> dict[str, Any]:
    out = {}
    for name, (kind, value) in row.items():
        if kind == "text":
            out[name] = value.render(mapping)
        elif kind == "json":
            out[name] = json.loads(value.render(mapping))
        elif kind == "time":
            out[name] = value + delta
        else:
            out[name] = value
    return out
