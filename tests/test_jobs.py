"""Async service tasks: jobs, retry cycles, idempotency keys, lock take-over, incidents (both stores)."""

from __future__ import annotations

from datetime import timedelta

import gridflow_worker_handlers as wh
import pytest
from worker_helpers import cli, deploy, ok

from engine import jobs
from engine.errors import Conflict, NotFound


def calls_of(key: str) -> list[dict]:
    return [c for c in wh.CALLS if c["key"] == key]


def test_async_task_commits_the_step_and_waits_as_a_job_with_its_retry_cycle(engine, clock):
    deploy(engine, "async_billing.bpmn")
    instance = engine.start("async_billing", {"failures": 0})
    assert instance.status == "running" and instance.ready_tasks == []  # the handler has not run yet
    [job] = engine.jobs(instance.id)
    assert (job.bpmn_id, job.topic, job.state, job.attempts, job.retries_left) == (
        "checkBill", "test.flakyBilling", "ready", 0, 3)
    assert job.retry_cycle == "R3/PT1M" and job.next_run_at == clock.now()
    assert job.idempotency_key == f"{instance.id}:{job.id}"
    assert "handler_completed" not in [e.type for e in engine.history(instance.id)]

    custom = engine.start("async_custom_cycle", {"failures": 0})
    [job] = engine.jobs(custom.id)
    assert (job.retry_cycle, job.retries_left) == ("R2/PT10M", 2)  # camunda:property retryCycle on the task
    assert engine.run_jobs("w1") == 2  # both instances' jobs
    [job] = engine.jobs(custom.id)  # @handler(asynchronous=True, retry_cycle=...) without asyncBefore
    assert (job.bpmn_id, job.retry_cycle, job.retries_left) == ("notifyCrm", "PT30S,PT2M", 3)


def test_failures_retry_on_the_cycle_with_one_idempotency_key_then_complete(engine, clock):
    deploy(engine, "async_billing.bpmn")
    instance = engine.start("async_billing", {"failures": 2})
    [job] = engine.jobs(instance.id)
    t0 = clock.now()
    lines = []
    assert engine.run_jobs("w1", report=lambda action, **f: lines.append((action, f))) == 1
    [job] = engine.jobs(instance.id)
    assert (job.attempts, job.retries_left, job.next_run_at, job.locked_by) == (1, 2, t0 + timedelta(minutes=1), None)
    assert job.last_error == "ConnectionError: billing system unreachable (call 1)"
    assert engine.run_jobs("w1") == 0  # not due before its next run
    clock.advance(timedelta(minutes=1))
    assert engine.run_jobs("w1") == 1
    clock.advance(timedelta(minutes=1))
    assert engine.run_jobs("w2") == 1

    after = engine.instance(instance.id)
    assert [t.bpmn_id for t in after.ready_tasks] == ["confirmBill"] and after.incidents == []
    assert after.variables["billChecked"] is True and after.variables["checkedOnAttempt"] == 3
    assert engine.jobs(instance.id) == []
    key = f"{instance.id}:{job.id}"
    assert [(c["attempt"], c["failed"]) for c in calls_of(key)] == [(1, True), (2, True), (3, False)]
    history = engine.history(instance.id)
    failed = [e for e in history if e.type == "job_failed"]
    assert [(e.data["attempt"], e.data["retries_left"]) for e in failed] == [(1, 2), (2, 1)]
    assert failed[0].data["next_run_at"] == (t0 + timedelta(minutes=1)).isoformat()
    [done] = [e for e in history if e.type == "handler_completed"]
    assert (done.bpmn_id, done.data["attempt"], done.data["worker"], done.data["idempotency_key"]) == (
        "checkBill", 3, "w2", key)
    assert [a for a, _ in lines] == ["job_retry_scheduled"]


def test_retries_run_out_into_an_incident_that_retry_and_resolve_repair(engine, clock):
    deploy(engine, "async_billing.bpmn")
    instance = engine.start("async_billing", {"failures": 4}, business_key="WO-INC")
    for _ in range(3):
        assert engine.run_jobs("w1") == 1
        clock.advance(timedelta(minutes=1))
    assert engine.run_jobs("w1") == 0  # the job waits for a person now
    state = engine.instance(instance.id)
    assert state.status == "running"  # an async failure does not stop the case
    [incident] = state.incidents
    assert (incident.kind, incident.bpmn_id, incident.topic, incident.attempts) == (
        "job", "checkBill", "test.flakyBilling", 3)
    assert "after 3 attempt(s): ConnectionError" in incident.message
    [listed] = engine.incidents()
    assert (listed.id, listed.definition_key, listed.business_key) == (incident.id, "async_billing", "WO-INC")
    [job] = engine.jobs(instance.id)
    assert (job.state, job.retries_left) == ("incident", 0)

    engine.retry_incident(incident.id, user="banzhang")  # one more attempt, due now: call 4 fails
    with pytest.raises(Conflict, match="already retried by banzhang"):
        engine.retry_incident(incident.id, user="banzhang")
    assert engine.run_jobs("w1") == 1
    [second] = engine.incidents(instance.id)
    assert second.id != incident.id and second.attempts == 4

    engine.retry_incident(second.id, user="banzhang")  # call 5 succeeds (4 failures asked for)
    assert engine.run_jobs("w1") == 1
    done = engine.instance(instance.id)
    assert done.incidents == [] and [t.bpmn_id for t in done.ready_tasks] == ["confirmBill"]
    assert done.variables["checkedOnAttempt"] == 5
    assert len({c["key"] for c in calls_of(f"{instance.id}:{job.id}")}) == 1

    closed = engine.incidents(instance.id, open_only=False)
    assert [(i.resolution, i.resolved_by) for i in closed] == [("retried", "banzhang"), ("retried", "banzhang")]
    types = [(e.type, e.actor) for e in engine.history(instance.id) if e.type.startswith("incident")]
    assert types == [("incident_opened", None), ("incident_retried", "banzhang"), ("incident_opened", None),
                     ("incident_retried", "banzhang")]
    with pytest.raises(NotFound, match="no incident 999"):
        engine.retry_incident(999)


def test_resolve_completes_the_failed_async_task_with_the_given_data(engine, clock):
    deploy(engine, "async_billing.bpmn")
    instance = engine.start("async_billing", {"failures": 99})
    for _ in range(3):
        engine.run_jobs("w1")
        clock.advance(timedelta(minutes=1))
    [incident] = engine.incidents(instance.id)
    calls = len(wh.CALLS)
    after = engine.resolve_incident(incident.id, {"billChecked": "checked by hand"}, user="banzhang")
    assert len(wh.CALLS) == calls  # the handler was not called again
    assert after.status == "running" and [t.bpmn_id for t in after.ready_tasks] == ["confirmBill"]
    assert after.variables["billChecked"] == "checked by hand" and after.incidents == []
    assert engine.jobs(instance.id) == []
    [resolved] = [e for e in engine.history(instance.id) if e.type == "incident_resolved"]
    assert resolved.actor == "banzhang" and resolved.data["data"] == {"billChecked": "checked by hand"}


def test_an_expired_lock_is_taken_over_and_the_late_result_is_discarded(engine, clock):
    deploy(engine, "async_billing.bpmn")
    instance = engine.start("async_billing", {"failures": 0})
    [first] = jobs.acquire(engine, "w1", 10, lock_ttl=60)
    assert engine.run_jobs("w2", lock_ttl=60) == 0  # held by w1
    clock.advance(timedelta(seconds=59))
    assert engine.run_jobs("w2", lock_ttl=60) == 0
    clock.advance(timedelta(seconds=2))  # w1 stopped beating: its lock expired
    [second] = jobs.acquire(engine, "w2", 10, lock_ttl=60)
    assert (second.taken_over_from, second.attempt) == ("w1", 2)
    assert second.idempotency_key == first.idempotency_key == f"{instance.id}:{first.id}"

    [abandoned] = [e for e in engine.history(instance.id) if e.type == "job_failed"]
    assert (abandoned.data["worker"], abandoned.data["attempt"], abandoned.data["reason"],
            abandoned.data["retries_left"]) == ("w1", 1, "lock_expired", 2)  # R3: the abandoned attempt counts
    assert "worker w1 did not finish attempt 1" in abandoned.data["error"]

    assert jobs.run_ticket(engine, first, 60) == "lost"  # w1 wakes up: its result no longer counts
    assert jobs.run_ticket(engine, second, 60) == "completed"
    completions = [e for e in engine.history(instance.id) if e.type == "handler_completed"]
    assert [(e.data["worker"], e.data["attempt"]) for e in completions] == [("w2", 2)]
    assert [c["attempt"] for c in calls_of(first.idempotency_key)] == [1, 2]  # same key both times


def test_a_job_whose_workers_keep_dying_ends_in_an_incident_not_an_endless_take_over(engine, clock):
    deploy(engine, "async_billing.bpmn")
    instance = engine.start("async_billing", {"failures": 0})
    for worker in ("w1", "w2", "w3"):  # R3/PT1M: three attempts, each abandoned (the worker died)
        [ticket] = jobs.acquire(engine, worker, 10, lock_ttl=60)
        assert ticket.attempt == int(worker[1])
        clock.advance(timedelta(seconds=61))
    calls = len(wh.CALLS)
    assert jobs.acquire(engine, "w4", 10, lock_ttl=60) == []  # no fourth attempt
    assert engine.run_jobs("w4", lock_ttl=60) == 0 and len(wh.CALLS) == calls

    [job] = engine.jobs(instance.id)
    assert (job.state, job.attempts, job.retries_left, job.locked_by) == ("incident", 3, 0, None)
    [incident] = engine.incidents(instance.id)
    assert incident.kind == "job" and "after 3 attempt(s): worker w3 did not finish attempt 3" in incident.message
    failed = [e.data for e in engine.history(instance.id) if e.type == "job_failed"]
    assert [(f["worker"], f["attempt"], f["retries_left"]) for f in failed] == [("w1", 1, 2), ("w2", 2, 1),
                                                                                 ("w3", 3, 0)]
    assert engine.instance(instance.id).status == "running"  # like any job incident: retry or resolve it
    engine.retry_incident(incident.id, user="banzhang")
    assert engine.run_jobs("w4") == 1
    assert [t.bpmn_id for t in engine.instance(instance.id).ready_tasks] == ["confirmBill"]


def test_a_stopping_worker_gives_back_the_jobs_it_did_not_start(engine):
    deploy(engine, "async_billing.bpmn")
    for _ in range(3):
        engine.start("async_billing", {"failures": 0})
    lines = []
    stop_after_first = iter([False, True, True])
    ran = engine.run_jobs("w1", limit=3, report=lambda action, **f: lines.append((action, f)),
                          should_stop=lambda: next(stop_after_first))
    assert ran == 1 and ("job_released", {"count": 2}) in lines
    waiting = [j for j in engine.jobs() if j.state == "ready"]
    assert len(waiting) == 2 and all(j.locked_by is None and j.attempts == 0 for j in waiting)


def test_sync_step_failure_is_an_incident_that_retry_reruns_and_resolve_completes(engine):
    deploy(engine, "async_billing.bpmn")
    flaky = engine.start("sync_flaky", {"failures": 1})
    assert flaky.status == "error"
    [incident] = flaky.incidents
    assert (incident.kind, incident.bpmn_id) == ("step", "syncCheck")
    after = engine.retry_incident(incident.id, user="banzhang")
    assert after.status == "running" and after.error is None and after.incidents == []
    assert [t.bpmn_id for t in after.ready_tasks] == ["afterSync"] and after.variables["billChecked"] is True
    [retried] = [e for e in engine.history(flaky.id) if e.type == "incident_retried"]
    assert retried.actor == "banzhang" and retried.data["incident"] == incident.id

    stuck = engine.start("sync_flaky", {"failures": 99})
    [incident] = engine.incidents(stuck.id)
    again = engine.retry_incident(incident.id)  # fails again: a new incident, still in error
    assert again.status == "error" and [i.id for i in again.incidents] != [incident.id]
    [current] = again.incidents
    fixed = engine.resolve_incident(current.id, {"billChecked": "by hand"}, user="banzhang")
    assert fixed.status == "running" and [t.bpmn_id for t in fixed.ready_tasks] == ["afterSync"]
    assert fixed.variables["billChecked"] == "by hand"
    with pytest.raises(Conflict, match="already resolved"):
        engine.resolve_incident(current.id, {})


def test_incident_commands_in_the_cli(engine, db_url):
    deploy(engine, "handler_chain.bpmn")
    instance = engine.start("handler_chain", {"fail": True}, business_key="WO-CLI")
    listed = ok(cli("incidents", "--json", db=db_url))
    assert [(i["instance_id"], i["kind"], i["bpmn_id"], i["business_key"]) for i in listed] == [
        (instance.id, "step", "mayFail", "WO-CLI")]
    first = listed[0]["id"]

    retried = ok(cli("--user", "banzhang", "incident", "retry", str(first), "--json", db=db_url))
    assert retried["status"] == "error"  # the billing system is still down: a new incident
    [current] = ok(cli("incidents", "--json", db=db_url))
    assert current["id"] != first
    resolved = ok(cli("--user", "banzhang", "incident", "resolve", str(current["id"]), "--data",
                      '{"checked": true}', "--json", db=db_url))
    assert resolved["status"] == "running" and [t["bpmn_id"] for t in resolved["ready_tasks"]] == ["confirm"]
    assert ok(cli("incidents", "--json", db=db_url)) == []
    closed = ok(cli("incidents", "--all", "--json", db=db_url))
    assert [(i["resolution"], i["resolved_by"]) for i in closed] == [("retried", "banzhang"),
                                                                     ("resolved", "banzhang")]
    shown = ok(cli("show", instance.id, "--json", db=db_url))
    assert shown["incidents"] == [] and "incident_resolved" in [e["type"] for e in shown["history"]]

    missing = cli("incident", "retry", "424242", db=db_url)
    assert missing.returncode == 1 and missing.stderr.strip() == "gridflow: no incident 424242"
