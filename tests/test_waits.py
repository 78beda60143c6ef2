"""The wait rows — timers, message and signal subscriptions, jobs — always equal what the stored state
waits for, whether a step starts from the workflow object this process cached or from the state read
back from the database. ``engine.waits`` writes only the difference between before and after a step,
so a drift would never heal by itself: this is the invariant it rests on (both stores)."""

from __future__ import annotations

from datetime import datetime

import pytest
from conftest import BPMN, SHANGHAI

from bench import workload
from engine import waits
from engine.api import Engine
from engine.clock import FixedClock
from engine.store import InstanceRow

T0 = datetime(2026, 12, 7, 9, 0, tzinfo=SHANGHAI)  # a Monday morning


def rows_and_state(engine: Engine, instance_id: str) -> tuple[waits.Waits, waits.Waits]:
    """(the wait rows as stored, the waits of the stored state deserialized afresh)."""
    with engine.store.read() as session:
        row = session.get(InstanceRow, instance_id)
        bundle = engine._bundle(session, row.definition_id)
        workflow = engine.runtime.serializer.loads(row.state_json, bundle.spec, bundle.subprocess_specs,
                                                   engine.runtime.script_engine)
        return waits.stored(session, instance_id), waits.of_workflow(engine.runtime, workflow, bundle)


@pytest.mark.parametrize("cached", [True, False], ids=["cached-workflow", "state-read-back"])
def test_the_wait_rows_follow_the_state_through_complaint_cases(db_url, cached):
    clock = FixedClock(T0)
    engine = Engine(db_url, clock=clock)
    seen = {"timers": 0, "messages": 0, "jobs": 0}

    def check(instance_id: str) -> None:
        stored, expected = rows_and_state(engine, instance_id)
        assert stored == expected
        for kind in seen:
            seen[kind] += bool(getattr(stored, kind))
        if not cached:  # the next command deserializes the state and reads the rows it starts from
            engine.runtime._recent.clear()

    try:
        engine.deploy(workload.PROCESSES)
        for n in (0, 3, 7):  # a general, a major (12398) and an urgent complaint: different paths
            correlation, data = workload.start_payload(n, clock.now())
            state = engine.correlate(workload.START_MESSAGE, correlation, data)
            check(state.id)
            for _ in range(100):
                if state.ready_tasks:
                    task = state.ready_tasks[0]
                    state = engine.complete(task.id, workload.answer(task.form_key, state.variables, clock.now(), n))
                elif engine.run_jobs("waits-test"):
                    state = engine.instance(state.id)
                elif state.status == "running":
                    clock.set(max(clock.now(), min(t.due_at for t in state.timers)))
                    engine.run_due()
                    state = engine.instance(state.id)
                else:
                    break
                check(state.id)
            assert state.status == "completed"
            stored, _ = rows_and_state(engine, state.id)
            assert stored == waits.NOTHING  # a finished case leaves no wait rows behind
    finally:
        engine.close()
    assert all(seen.values()), f"the cases should have waited on every kind of row: {seen}"


def test_signal_subscriptions_follow_the_state(db_url):
    engine = Engine(db_url, clock=FixedClock(T0))
    try:
        engine.deploy([BPMN / "signal_wait.bpmn"])
        waiting = engine.start("outage_wait")
        stored, expected = rows_and_state(engine, waiting.id)
        assert stored == expected and stored.signals
        engine.runtime._recent.clear()
        engine.signal("areaRestored", {"restoredAt": "10:20"})
        stored, expected = rows_and_state(engine, waiting.id)
        assert stored == expected and not stored.signals
    finally:
        engine.close()
