"""Searchable variables: an indexed copy of a few text variables per case.

Handlers that look other cases up by a variable (repeat-complaint detection: an earlier complaint of
the same 户号 or phone within the repeat window, ``HandlerContext.find_cases(key, since, any_of=…)``)
would otherwise read every case of the window and compare its variables JSON: a cost that grows
with the number of cases in the window, which a province reaches quickly. A handler module declares
the variables it searches (``handlers.searchable("complaint_handling", "customerNo", "contactPhone")``);
every step of a case of that process keeps one ``case_key`` row per declared variable that holds
text, and ``find_cases`` reads the matches through the index (definition_key, name, value).

The rows of a (process, variable) pair are used only once they cover every stored case: :func:`build`
writes them for the cases stored so far and records the pair in ``search_index`` (``Engine.deploy``
runs it, in its transaction). Until then ``find_cases`` compares the variables JSON as before: the
same answer, slower. Every process that writes cases must run the same handler modules (the
declarations), as with any schema.

Atomicity: :func:`write` runs inside the step's transaction, :func:`build` inside the caller's.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import delete, insert, select, union
from sqlalchemy.engine import Connection

from .store import CaseKeyRow, DefinitionRow, InstanceRow, SearchIndexRow

#: longer values are not indexed; a lookup of such a value compares the variables JSON instead
MAX_VALUE_LENGTH = 400
BUILD_BATCH = 1000

_case_key = CaseKeyRow.__table__
_search_index = SearchIndexRow.__table__


def indexable(value: Any) -> bool:
    """True for the values a ``case_key`` row holds: non-empty text of at most MAX_VALUE_LENGTH characters."""
    return isinstance(value, str) and 0 < len(value) <= MAX_VALUE_LENGTH


def texts(variables: Mapping[str, Any] | None, names: Iterable[str]) -> dict[str, str]:
    """The indexable values among ``names`` in ``variables``."""
    variables = variables or {}
    return {name: variables[name] for name in names if indexable(variables.get(name))}


def write(connection: Connection, instance_id: str, definition_key: str, names: tuple[str, ...],
          before: Mapping[str, Any] | None, after: Mapping[str, Any]) -> None:
    """Bring the case's rows from the values in ``before`` (the stored variables) to those in ``after``."""
    old, new = texts(before, names), texts(after, names)
    if old == new:
        return
    gone = [name for name in old if new.get(name) != old[name]]
    if gone:
        connection.execute(delete(_case_key).where(_case_key.c.instance_id == instance_id,
                                                   _case_key.c.name.in_(gone)))
    added = [{"instance_id": instance_id, "name": name, "definition_key": definition_key, "value": value}
             for name, value in new.items() if old.get(name) != value]
    if added:
        connection.execute(insert(_case_key), added)


def build(connection: Connection, declared: Mapping[str, tuple[str, ...]], now: datetime) -> list[tuple[str, str]]:
    """Write the rows of every declared (process, variable) pair not built yet and mark it built.

    Reads the stored variables of that process's cases in batches; returns the pairs built.
    """
    built = {(key, name) for key, name in connection.execute(
        select(_search_index.c.definition_key, _search_index.c.name))}
    missing = [(key, name) for key, names in declared.items() for name in names if (key, name) not in built]
    for key, name in missing:
        connection.execute(delete(_case_key).where(_case_key.c.definition_key == key, _case_key.c.name == name))
        cases = connection.execute(select(InstanceRow.id, InstanceRow.variables)
                                   .join(DefinitionRow, DefinitionRow.id == InstanceRow.definition_id)
                                   .where(DefinitionRow.key == key)
                                   .execution_options(yield_per=BUILD_BATCH))
        for batch in cases.partitions():
            rows = [{"instance_id": case_id, "name": name, "definition_key": key, "value": value}
                    for case_id, variables in batch for value in texts(variables, (name,)).values()]
            if rows:
                connection.execute(insert(_case_key), rows)
        connection.execute(insert(_search_index), [{"definition_key": key, "name": name, "built_at": now}])
    return missing


def complete(connection: Connection, definition_key: str, names: Iterable[str]) -> bool:
    """True when the rows of every one of ``names`` cover all cases of ``definition_key``."""
    wanted = set(names)
    found = set(connection.scalars(select(_search_index.c.name).where(
        _search_index.c.definition_key == definition_key, _search_index.c.name.in_(wanted))))
    return found == wanted


def matching_cases(definition_key: str, wanted: Mapping[str, str]):
    """The ids (column ``instance_id``) of the cases of ``definition_key`` with at least one of the ``wanted``
    values: one index lookup per variable, united. Select FROM it and join the cases, so the matches drive
    the query (with ``id IN (…)`` SQLite walks the time window and probes the list)."""
    lookups = [select(_case_key.c.instance_id).where(_case_key.c.definition_key == definition_key,
                                                     _case_key.c.name == name, _case_key.c.value == value)
               for name, value in wanted.items()]
    return (lookups[0] if len(lookups) == 1 else union(*lookups)).subquery("matches")
