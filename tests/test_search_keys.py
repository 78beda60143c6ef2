"""Searchable variables (engine.search_keys): repeat-complaint lookups read an index of declared
variables, give the same answers as comparing the variables JSON, and follow changes (both stores)."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from conftest import BPMN, SHANGHAI
from sqlalchemy import delete, select
from test_complaint_flow import PROCESSES, open_complaint

from engine.store import CaseKeyRow, SearchIndexRow


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=SHANGHAI)


def case_keys(engine, instance_id: str) -> dict[str, str]:
    with engine.store.read() as session:
        rows = session.execute(select(CaseKeyRow.name, CaseKeyRow.value, CaseKeyRow.definition_key)
                               .where(CaseKeyRow.instance_id == instance_id))
        assert len({key for _, _, key in rows.all()}) <= 1
        return dict(session.execute(select(CaseKeyRow.name, CaseKeyRow.value)
                                    .where(CaseKeyRow.instance_id == instance_id)).all())


def lookup(engine, since: datetime, exclude: str, **any_of) -> list[str]:
    """What ``HandlerContext.find_cases("complaint_handling", since, any_of=...)`` gives a handler."""
    with engine.store.read() as session:
        return sorted(c["business_key"] for c in engine._find_cases(session, "complaint_handling", since, exclude,
                                                                    any_of))


def drop_index(engine) -> None:
    """The database as migration 0007 leaves one with cases: tables there, nothing built yet."""
    with engine.store.write() as session:
        session.execute(delete(CaseKeyRow))
        session.execute(delete(SearchIndexRow))
    engine._searched_by_index.clear()


@pytest.fixture
def complaints(engine, clock):
    """Four complaints a day apart: A and B by customer 3100000001, C by its phone only, D by someone else."""
    clock.set(at("2026-12-07T09:00:00"))
    ids = {}
    for name, facts in {"A": {"customerNo": "3100000001", "contactPhone": "13800000001"},
                        "B": {"customerNo": "3100000001", "contactPhone": "13800000002"},
                        "C": {"customerNo": "3199999999", "contactPhone": "13800000001"},
                        "D": {"customerNo": "3188888888", "contactPhone": "13888888888"}}.items():
        ids[name] = open_complaint(engine, clock, number=f"WO-{name}", **facts)
        clock.advance(timedelta(days=1))
    return ids


def test_declared_variables_are_indexed_per_case_and_used_for_lookups(engine, clock, complaints):
    assert case_keys(engine, complaints["A"]) == {"customerNo": "3100000001", "contactPhone": "13800000001"}
    since = at("2026-12-01T00:00:00")
    by_index = lookup(engine, since, complaints["D"], customerNo="3100000001", contactPhone="13800000001")
    assert by_index == ["WO-A", "WO-B", "WO-C"]
    with engine.store.read() as session:
        assert engine._search_index_covers(session, "complaint_handling", {"customerNo": "3100000001"})
    # the repeat rule saw them: B found A (same 户号), C found A (same phone)
    assert engine.instance(complaints["B"]).variables["linkedOrders"] == ["WO-A"]
    assert engine.instance(complaints["C"]).variables["linkedOrders"] == ["WO-A"]
    assert engine.instance(complaints["D"]).variables["linkedOrders"] == []


def test_an_index_not_built_yet_gives_the_same_answers_from_the_variables(engine, clock, complaints):
    since = at("2026-12-01T00:00:00")
    queries = [({"customerNo": "3100000001"}, complaints["D"]), ({"contactPhone": "13800000001"}, complaints["A"]),
               ({"customerNo": "3100000001", "contactPhone": "13888888888"}, complaints["C"]),
               ({"customerNo": "nobody"}, complaints["A"]), ({"customerNo": 3100000001}, complaints["A"])]
    indexed = [lookup(engine, since, exclude, **wanted) for wanted, exclude in queries]
    drop_index(engine)
    with engine.store.read() as session:
        assert not engine._search_index_covers(session, "complaint_handling", {"customerNo": "3100000001"})
    assert [lookup(engine, since, exclude, **wanted) for wanted, exclude in queries] == indexed
    assert indexed[:4] == [["WO-A", "WO-B"], ["WO-C"], ["WO-A", "WO-B", "WO-D"], []]
    assert len(indexed[4]) == 3  # a number, not text: filters nothing (every other case in the window)

    engine.deploy(PROCESSES)  # a deploy builds what is declared and not built: the cases stored so far
    assert case_keys(engine, complaints["B"]) == {"customerNo": "3100000001", "contactPhone": "13800000002"}
    with engine.store.read() as session:
        assert engine._search_index_covers(session, "complaint_handling", {"contactPhone": "13800000001"})
    assert [lookup(engine, since, exclude, **wanted) for wanted, exclude in queries] == indexed


def test_the_rows_follow_each_step_and_stay_after_the_case_ends(engine):
    engine.deploy([BPMN / "search_case.bpmn"])
    case = engine.start("search_case", {"customerNo": "3100000001", "contactPhone": "13800000001"},
                        business_key="S-1")
    assert case_keys(engine, case.id) == {"customerNo": "3100000001", "contactPhone": "13800000001"}
    [edit] = case.ready_tasks
    engine.complete(edit.id, {"customerNo": "3177777777", "contactPhone": ""})  # 户号 corrected, phone cleared
    assert case_keys(engine, case.id) == {"customerNo": "3177777777"}
    [close] = engine.instance(case.id).ready_tasks
    assert engine.complete(close.id, {"contactPhone": "13900000009"}).status == "completed"
    assert case_keys(engine, case.id) == {"customerNo": "3177777777", "contactPhone": "13900000009"}

    other = engine.start("search_case", {"customerNo": "3188888888"}, business_key="S-2")
    with engine.store.read() as session:
        def find(**any_of):
            return [c["business_key"] for c in engine._find_cases(session, "search_case", case.started_at,
                                                                  other.id, any_of)]
        assert engine._search_index_covers(session, "search_case", {"customerNo": "3177777777"})
        assert find(customerNo="3177777777") == ["S-1"] and find(contactPhone="13900000009") == ["S-1"]
        assert find(customerNo="3100000001") == [] and find(contactPhone="13800000001") == []


def test_long_values_are_not_indexed_and_are_looked_up_in_the_variables(engine, clock, complaints):
    from engine import search_keys

    long_number = "9" * (search_keys.MAX_VALUE_LENGTH + 1)
    assert search_keys.texts({"customerNo": long_number, "contactPhone": "1"}, ("customerNo", "contactPhone")) == {
        "contactPhone": "1"}
    with engine.store.read() as session:
        assert not engine._search_index_covers(session, "complaint_handling", {"customerNo": long_number})
    assert lookup(engine, at("2026-12-01T00:00:00"), complaints["A"], customerNo=long_number) == []


def test_a_lookup_is_driven_by_the_matches_not_by_the_cases_in_the_window(engine, complaints):
    """The matches come from ``case_key``'s index and each is read by primary key: no walk over the window
    (SQLite's plan; PostgreSQL plans tiny tables with sequential scans, so only its answers are checked)."""
    from sqlalchemy import event

    statements = []

    def capture(conn, cursor, statement, parameters, context, executemany):
        statements.append((statement, parameters))

    event.listen(engine.store.sql, "before_cursor_execute", capture)
    try:
        found = lookup(engine, at("2026-12-01T00:00:00"), complaints["D"], customerNo="3100000001",
                       contactPhone="13800000001")
    finally:
        event.remove(engine.store.sql, "before_cursor_execute", capture)
    assert found == ["WO-A", "WO-B", "WO-C"]
    if engine.store.sql.dialect.name != "sqlite":
        return
    statement, parameters = next((s, p) for s, p in statements if "case_key" in s and "instance.variables" in s)
    with engine.store.read() as session:
        plan = [row[-1] for row in session.connection().exec_driver_sql("EXPLAIN QUERY PLAN " + statement,
                                                                        parameters)]
    assert sum("ix_case_key_lookup (definition_key=? AND name=? AND value=?)" in step for step in plan) == 2, plan
    assert any(step.startswith("SEARCH instance USING INDEX sqlite_autoindex_instance_1 (id=?)") for step in plan)
    assert not any("ix_instance_definition_started" in step for step in plan), plan
