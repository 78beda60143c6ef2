"""Cancelling a case (a duplicate registration, a case opened by mistake), on both stores."""

from __future__ import annotations

from datetime import timedelta

import gridflow_worker_handlers  # noqa: F401  (registers the async billing handler)
import pytest
from conftest import BPMN

from engine.errors import Conflict, InvalidInput, NotAllowed


def _deploy(engine, *names):
    engine.deploy([BPMN / n for n in names])


def test_a_cancelled_case_leaves_no_task_timer_job_or_open_clock_and_says_why(engine, clock):
    _deploy(engine, "sla_review.bpmn", "async_billing.bpmn")
    review = engine.start("sla_review", {"amount": 150}, business_key="WO-C1")
    billing = engine.start("async_billing", {"failures": 0}, business_key="WO-C2")
    other = engine.start("sla_review", {"amount": 5}, business_key="WO-C3")
    task_id = review.ready_tasks[0].id
    assert review.timers and engine.sla_clocks(instance_id=review.id) and engine.jobs(billing.id)

    clock.advance(timedelta(hours=1))
    for case in (review, billing):
        cancelled = engine.cancel(case.id, "重复受理，已并入 WO-C3", user="banzhang")
        assert (cancelled.status, cancelled.ready_tasks, cancelled.timers) == ("cancelled", [], [])
        assert engine.instance(case.id).ended_at == clock.now()
        last = engine.history(case.id)[-1]
        assert (last.type, last.actor, last.data) == ("instance_cancelled", "banzhang",
                                                      {"reason": "重复受理，已并入 WO-C3"})
    assert [t.instance_id for t in engine.tasks()] == [other.id]  # the queue keeps only the other case
    [closed] = [t for t in engine.tasks(instance_id=review.id, include_closed=True) if t.id == task_id]
    assert closed.state == "cancelled"
    assert engine.jobs(billing.id) == []
    assert engine.sla_clocks(instance_id=review.id) == []  # open clocks: none
    closed_clocks = engine.sla_clocks(instance_id=review.id, state="closed")
    assert closed_clocks and all((c.closed_at, c.state) == (clock.now(), "cancelled") for c in closed_clocks)
    assert engine.sla_clocks(instance_id=review.id, state=["met", "missed"]) == []  # KPI counts leave them out
    assert engine.sla_clocks(instance_id=review.id, state="cancelled") == closed_clocks

    # nothing wakes a cancelled case: not its timers, not its job, not its task
    histories = {case.id: engine.history(case.id) for case in (review, billing)}
    assert engine.run_due(now=clock.now() + timedelta(days=30)) > 0  # the other case's timers fire
    assert any(e.type == "timer_fired" for e in engine.history(other.id))
    assert engine.run_jobs("w1") == 0
    assert {case.id: engine.history(case.id) for case in (review, billing)} == histories
    with pytest.raises(NotAllowed, match=r"\(审核\) is cancelled; it can no longer be completed"):
        engine.complete(task_id, {"approved": True})
    with pytest.raises(Conflict, match="is cancelled; only a running or failed case can be cancelled"):
        engine.cancel(review.id, "again")
    assert engine.instance(other.id).status == "completed"  # its own timers ran it to its takeaway end


def test_cancelling_a_failed_case_resolves_its_incident(engine):
    _deploy(engine, "handler_chain.bpmn")
    failed = engine.start("handler_chain", {"fail": True})
    [incident] = engine.incidents(instance_id=failed.id)
    engine.cancel(failed.id, "客户撤诉", user="banzhang")
    assert engine.incidents(instance_id=failed.id) == []
    [closed] = engine.incidents(instance_id=failed.id, open_only=False)
    assert (closed.id, closed.resolution, closed.resolved_by) == (incident.id, "cancelled", "banzhang")
    assert engine.instance(failed.id).status == "cancelled"


def test_a_cancellation_without_a_reason_changes_nothing(engine):
    _deploy(engine, "sla_review.bpmn")
    case = engine.start("sla_review", {"amount": 150})
    before = engine.history(case.id)
    for reason in ("", "   ", "x" * 501):
        with pytest.raises(InvalidInput, match="reason"):
            engine.cancel(case.id, reason)
    assert engine.instance(case.id).status == "running" and engine.history(case.id) == before
    assert [t.instance_id for t in engine.tasks()] == [case.id]


def test_a_cancelled_case_keeps_its_variables(engine):
    """The variables of the paths that were open stay as they were (a cancelled workflow has none)."""
    _deploy(engine, "mi_local.bpmn")
    case = engine.start("inspect_each", {"customers": ["户A", "户B"], "planNo": "P-12"})
    engine.complete(engine.tasks(instance_id=case.id)[0].id, {"finding": "窃电"})
    before = engine.instance(case.id).variables
    assert engine.cancel(case.id, "计划取消").variables == before == engine.instance(case.id).variables


def test_a_job_whose_case_is_cancelled_while_its_handler_runs_reports_cancelled(engine, monkeypatch):
    import dataclasses

    from engine import jobs

    _deploy(engine, "async_billing.bpmn")
    case = engine.start("async_billing", {"failures": 0})
    [ticket] = jobs.acquire(engine, "w1", 10, 300)
    spec = engine.handlers[ticket.topic]
    ran = []

    def cancelled_meanwhile(variables, ctx):  # a supervisor cancels the case while the handler works
        engine.cancel(case.id, "客户撤销申请")
        ran.append(ctx.idempotency_key)
        return spec.function(variables, ctx)

    monkeypatch.setitem(engine.handlers, ticket.topic, dataclasses.replace(spec, function=cancelled_meanwhile))
    assert jobs.run_ticket(engine, ticket, 300) == "cancelled"
    assert ran == [f"{case.id}:{ticket.id}"]  # the handler ran; its result is not applied
    assert engine.instance(case.id).status == "cancelled" and engine.jobs(case.id) == []
    assert engine.history(case.id)[-1].type == "instance_cancelled"
    before_handler = jobs.acquire(engine, "w1", 10, 300)
    assert before_handler == []  # nothing left to run


def test_a_reason_is_checked_after_the_permission(engine):
    _deploy(engine, "sla_review.bpmn")
    engine.init_db("boss")
    engine.add_user("zhang", ["agent"], user="boss")
    case = engine.start("sla_review", {"amount": 1})
    from engine.identity import Refused

    with pytest.raises(Refused, match="zhang may not cancel cases"):
        engine.cancel(case.id, "", user="zhang")
    assert [e.actor for e in engine.events(type="refused")] == ["zhang"]
