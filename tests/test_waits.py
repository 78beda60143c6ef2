"""The wait rows — timers, message and signal subscriptions, jobs — always equal what the stored state
waits for, whether a step starts from the workflow object this process cached or from the state read
back from the database. ``engine.waits`` writes only the difference between before and after a step,
so a drift would never heal by itself: this is the invariant it rests on (both stores)."""

from __future__ import annotations

from datetime import datetime, timedelta

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


@pytest.mark.parametrize("cached", [True, False], ids=["cached-workflow", "state-read-back"])
def test_the_wait_rows_follow_the_state_through_an_event_based_gateway(db_url, cached):
    """Each event after the gateway has a row of its own; the one caught and the ones withdrawn leave none."""
    clock = FixedClock(T0)
    engine = Engine(db_url, clock=clock)

    def check(instance_id: str) -> waits.Waits:
        stored, expected = rows_and_state(engine, instance_id)
        assert stored == expected
        if not cached:
            engine.runtime._recent.clear()
        return stored

    try:
        engine.deploy([BPMN / "payment_wait.bpmn"])
        paid, overdue = (engine.start("payment_wait", {"workOrderNo": n}) for n in ("WO-1", "WO-2"))
        for case in (paid, overdue):
            stored = check(case.id)
            assert len(stored.timers) == len(stored.messages) == 1
        engine.correlate("paymentReceived", {"workOrderNo": "WO-1"}, {"paidYuan": 120})
        assert check(paid.id) == waits.NOTHING and len(check(overdue.id).messages) == 1
        clock.advance(timedelta(hours=72))
        assert engine.run_due() == 1
        assert check(overdue.id) == waits.NOTHING
        assert [t.bpmn_id for t in engine.instance(paid.id).ready_tasks] == ["connectSupply"]
        assert [t.bpmn_id for t in engine.instance(overdue.id).ready_tasks] == ["chaseArrears"]
    finally:
        engine.close()
