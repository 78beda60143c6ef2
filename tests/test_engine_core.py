"""Engine API behaviour on both stores: deploy/versions, tasks, forms, timers, messages, history."""

from __future__ import annotations

import shutil
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
from conftest import BPMN, SHANGHAI

from engine.errors import Conflict, DefinitionError, InvalidInput, NotAllowed, NotFound


def deploy(engine, *names):
    return engine.deploy([BPMN / n for n in names], user="admin")


# -- definitions -----------------------------------------------------------------------------
def test_redeploy_identical_keeps_version_and_changed_content_gets_next(engine, tmp_path):
    first = deploy(engine, "sla_review.bpmn")[0]
    assert (first.key, first.version) == ("sla_review", 1)
    again = deploy(engine, "sla_review.bpmn")[0]
    assert (again.version, again.content_hash) == (1, first.content_hash)

    running = engine.start("sla_review", {"amount": 10})
    changed = tmp_path / "sla_review.bpmn"
    changed.write_text((BPMN / "sla_review.bpmn").read_text().replace('name="审核"', 'name="审核(新)"'))
    second = engine.deploy([changed])[0]
    assert second.version == 2 and second.content_hash != first.content_hash

    assert engine.instance(running.id).definition_version == 1  # running instance keeps its version
    assert engine.instance(running.id).ready_tasks[0].name == "审核"
    newer = engine.start("sla_review", {"amount": 10})
    assert newer.definition_version == 2 and newer.ready_tasks[0].name == "审核(新)"


def test_call_activity_across_files_runs_child_tasks(engine):
    deploy(engine, "child_revisit.bpmn", "parent_calls_child.bpmn")
    instance = engine.start("parent_case", {"workOrderNo": "WO1"})
    [task] = instance.ready_tasks
    assert (task.bpmn_id, task.lane, task.candidate_groups) == ("callCustomer", "revisitAgent", ["revisitAgent"])
    after = engine.complete(task.id, {"satisfaction": "不满意"}, user="wang")
    assert [t.bpmn_id for t in after.ready_tasks] == ["reopen"]


def test_call_activity_to_undeployed_process_is_rejected(engine):
    with pytest.raises(DefinitionError, match="child_revisit"):
        deploy(engine, "parent_calls_child.bpmn")
    assert engine.definitions() == []


# -- running ---------------------------------------------------------------------------------
def test_user_task_work_item_has_lane_groups_form_and_due(engine, clock):
    deploy(engine, "sla_review.bpmn")
    instance = engine.start("sla_review", {"amount": 150}, business_key="WO2026001", user="agent1")
    [item] = engine.tasks(instance_id=instance.id)
    assert item.lane == "agent" and item.candidate_groups == ["agent"]
    assert item.form_key == "testReview" and item.business_key == "WO2026001"
    assert item.due_at == clock.now() + timedelta(days=2)
    assert engine.tasks(group="agent")[0].id == item.id
    assert engine.tasks(group="manager") == []


def test_gateway_condition_routes_and_history_records_who_and_what(engine):
    deploy(engine, "sla_review.bpmn")
    instance = engine.start("sla_review", {"amount": 150}, user="agent1")
    task = instance.ready_tasks[0]
    done = engine.complete(task.id, {"approved": True, "amount": 150}, user="lisi")
    assert done.status == "completed"
    events = engine.history(instance.id)
    types = [e.type for e in events]
    assert types[0] == "instance_started" and types[-1] == "instance_completed"
    completion = next(e for e in events if e.type == "task_completed")
    assert completion.actor == "lisi" and completion.data["data"] == {"approved": True, "amount": 150}
    handler = next(e for e in events if e.type == "handler_completed")
    assert handler.bpmn_id == "computeDue" and handler.data["topic"] == "test.computeDue"


def test_form_validation_failure_changes_nothing(engine):
    deploy(engine, "sla_review.bpmn")
    instance = engine.start("sla_review", {"amount": 150})
    task = instance.ready_tasks[0]
    before = engine.history(instance.id)
    with pytest.raises(InvalidInput, match="contactPhone 联系电话"):
        engine.complete(task.id, {"approved": True, "amount": 1, "contactPhone": "12345"})
    with pytest.raises(InvalidInput, match="'approved' is a required property"):
        engine.complete(task.id, {"amount": 1})
    assert engine.history(instance.id) == before
    assert engine.tasks(instance_id=instance.id)[0].state == "open"


def test_completing_twice_or_unknown_task_is_refused(engine):
    deploy(engine, "sla_review.bpmn")
    instance = engine.start("sla_review", {"amount": 150})
    task = instance.ready_tasks[0]
    engine.complete(task.id, {"approved": False, "amount": 5}, user="a")
    with pytest.raises(Conflict, match="already completed by a"):
        engine.complete(task.id, {"approved": False, "amount": 5}, user="b")
    with pytest.raises(NotFound, match="no task 'nope'"):
        engine.complete("nope", {})
    assert [e.type for e in engine.history(instance.id)].count("task_completed") == 1


def test_claimed_task_cannot_be_completed_by_someone_else(engine):
    deploy(engine, "sla_review.bpmn")
    task = engine.start("sla_review", {"amount": 1}).ready_tasks[0]
    engine.claim(task.id, "zhang")
    with pytest.raises(NotAllowed, match="already claimed by zhang"):
        engine.claim(task.id, "li")
    with pytest.raises(NotAllowed, match="assigned to zhang"):
        engine.complete(task.id, {"approved": True, "amount": 1}, user="li")
    assert engine.complete(task.id, {"approved": True, "amount": 1}, user="zhang").status == "completed"


# -- timers ------------------------------------------------------------------------------------
def test_timers_fire_on_run_due_with_lateness_recorded(engine, clock):
    deploy(engine, "sla_review.bpmn")
    instance = engine.start("sla_review", {"amount": 1})
    timers = {t.bpmn_id: t.due_at for t in engine.instance(instance.id).timers}
    assert timers["t1Remind"] == clock.now() + timedelta(days=1)
    assert timers["t4Takeaway"] == clock.now() + timedelta(days=5)

    assert engine.run_due() == 0
    clock.advance(timedelta(days=1, hours=3))
    assert engine.run_due() == 1
    assert engine.run_due() == 0  # fires once
    fired = [e for e in engine.history(instance.id) if e.type == "timer_fired"]
    assert [(e.bpmn_id, e.data["late_seconds"]) for e in fired] == [("t1Remind", 3 * 3600)]
    outbox = [e for e in engine.history(instance.id) if e.type == "outbox"]
    assert outbox[0].data["text"].startswith("您的工单即将超时")
    assert engine.instance(instance.id).variables["reminders"] == 1
    assert engine.instance(instance.id).ready_tasks[0].bpmn_id == "review"  # non-interrupting


def test_interrupting_timer_cancels_the_work_item(engine, clock):
    deploy(engine, "sla_review.bpmn")
    instance = engine.start("sla_review", {"amount": 1})
    task_id = instance.ready_tasks[0].id
    fired = engine.run_due(now=clock.now() + timedelta(days=6))
    assert fired == 2  # T1 and the take-away timer, in due order
    state = engine.instance(instance.id)
    assert state.status == "completed" and state.ready_tasks == []
    assert engine.tasks(instance_id=instance.id, include_closed=True)[0].state == "cancelled"
    with pytest.raises(NotAllowed, match="cancelled"):
        engine.complete(task_id, {"approved": True, "amount": 1})
    order = [e.bpmn_id for e in engine.history(instance.id) if e.type == "timer_fired"]
    assert order == ["t1Remind", "t4Takeaway"]


def test_cycle_timer_missed_for_hours_fires_once_and_reschedules(engine, clock):
    deploy(engine, "cycle_check.bpmn")
    instance = engine.start("cycle_check")
    [timer] = engine.instance(instance.id).timers
    assert timer.due_at == clock.now() + timedelta(hours=1)
    clock.advance(timedelta(hours=2, minutes=30))
    assert engine.run_due() == 1
    [timer] = engine.instance(instance.id).timers
    assert timer.due_at == clock.now() - timedelta(minutes=30) + timedelta(hours=1)
    assert engine.instance(instance.id).variables.get("reminders") == 1


# -- messages ----------------------------------------------------------------------------------
def test_message_correlates_on_declared_keys(engine):
    deploy(engine, "follow_up.bpmn")
    one = engine.start("follow_up", {"workOrderNo": "WO-1", "severity": "GENERAL", "followUpCount": 0})
    two = engine.start("follow_up", {"workOrderNo": "WO-2", "severity": "URGENT", "followUpCount": 0})
    for instance in (one, two):
        engine.complete(instance.ready_tasks[0].id, {}, user="agent1")
    with pytest.raises(NotFound, match="WO-9"):  # PT0S: no buffering (tests/test_messages.py covers the buffer)
        engine.correlate("msgFollowUp", {"workOrderNo": "WO-9"}, ttl="PT0S")
    result = engine.correlate("msgFollowUp", {"workOrderNo": "WO-2"}, {"note": "客户再次来电"})
    assert result.id == two.id and result.status == "completed"
    assert result.variables["note"] == "客户再次来电" and result.variables["followUpCount"] == 1
    assert result.variables["severity"] == "URGENT"  # max('URGENT', 'MAJOR') by string order
    assert engine.instance(one.id).status == "running"


def test_message_matching_several_instances_is_an_error(engine):
    deploy(engine, "follow_up.bpmn")
    for _ in range(2):
        instance = engine.start("follow_up", {"workOrderNo": "SAME", "severity": "GENERAL", "followUpCount": 0})
        engine.complete(instance.ready_tasks[0].id, {})
    with pytest.raises(Conflict, match="matches 2 instances"):
        engine.correlate("msgFollowUp", {"workOrderNo": "SAME"})


def test_message_start_event_starts_a_new_instance(engine):
    deploy(engine, "follow_up.bpmn")
    started = engine.correlate("msgOpenCase", {"business_key": "WO-77"}, {"sourceOrderNo": "WO-76"})
    assert started.business_key == "WO-77"
    assert started.variables["sourceOrderNo"] == "WO-76"
    assert [t.bpmn_id for t in started.ready_tasks] == ["handleOpened"]


# -- data --------------------------------------------------------------------------------------
def test_stored_typed_values_are_written_as_spiffworkflow_writes_them():
    """The state's typed values (gridflow's faster datetime converter included) have SpiffWorkflow's own form,
    so states stay readable by either."""
    import json

    from SpiffWorkflow.bpmn.serializer import BpmnWorkflowSerializer
    from SpiffWorkflow.bpmn.serializer.helpers.encoder import create_encoder

    from engine.serializer import StateSerializer

    value = {"at": datetime(2026, 12, 1, 9, 0, 1, 5, tzinfo=SHANGHAI), "due": [datetime(2026, 12, 2, tzinfo=UTC)],
             "wait": timedelta(hours=4)}
    ours, stock = StateSerializer(), BpmnWorkflowSerializer.configure()
    assert ours.convert_data(value) == stock.convert(value)
    text = json.dumps(value, cls=create_encoder(stock))
    assert json.dumps(value, cls=ours._serializer._encoder_cls) == text
    assert ours.restore_data(json.loads(text)) == value


def test_typed_values_survive_persist_and_nested_data_is_not_shared(engine):
    deploy(engine, "handler_chain.bpmn")
    instance = engine.start("handler_chain", {"fail": False})
    variables = engine.instance(instance.id).variables
    assert variables["feeYuan"] == Decimal("1234.56") and isinstance(variables["feeYuan"], Decimal)
    assert variables["billDate"] == date(2026, 2, 14) and type(variables["billDate"]) is date
    assert variables["computedAt"] == datetime(2026, 12, 1, 9, 0, tzinfo=SHANGHAI)
    assert variables["computedAt"].utcoffset() == timedelta(hours=8)
    assert variables["items"] == [{"code": "A", "qty": 99}, {"code": "B", "qty": 2}]
    recorded = next(e for e in engine.history(instance.id)
                    if e.type == "handler_completed" and e.bpmn_id == "computeFee")
    assert recorded.data["result"]["items"] == [{"code": "A", "qty": 1}]  # earlier record unchanged


def test_handler_exception_is_a_clear_instance_error(engine):
    deploy(engine, "handler_chain.bpmn")
    instance = engine.start("handler_chain", {"fail": True})
    assert instance.status == "error"
    assert instance.error == ("handler 'test.failWhenAsked' failed at task mayFail: "
                              "RuntimeError: billing system unreachable")
    assert "NameError" not in instance.error
    assert instance.ready_tasks == []


@pytest.mark.parametrize(("kind", "problem"), [
    ("unstorable", "TypeError: Object of type bytes is not JSON serializable"),
    ("nan", "ValueError: Out of range float values are not JSON compliant")])
def test_a_handler_result_that_cannot_be_stored_is_an_incident_and_nothing_of_it_is_kept(engine, kind, problem):
    deploy(engine, "handler_chain.bpmn")
    instance = engine.start("handler_chain", {"fail": kind})
    assert instance.status == "error"
    assert instance.error.startswith("handler 'test.failWhenAsked' at task mayFail returned a value that cannot be "
                                     f"stored ({problem}")
    assert not {"receipt", "score"} & set(engine.instance(instance.id).variables)
    incident, last = _failure_record(engine, instance.id)
    assert (incident.bpmn_id, incident.message, last.type) == ("mayFail", instance.error, "instance_error")


def test_a_handler_that_moves_a_timer_to_no_instant_is_an_incident(engine):
    deploy(engine, "rearm_deadline.bpmn")
    case = engine.start("rearm_deadline", {"deadline": "2026-12-09T17:00:00+08:00", "newDeadline": "下周五"})
    assert case.status == "error"
    assert case.error == "timer 'deadline': '下周五' is not an ISO 8601 date-time at deadline"
    incident, last = _failure_record(engine, case.id)
    assert (incident.bpmn_id, last.type) == ("deadline", "instance_error")


def test_a_bpmn_error_reaches_the_boundary_event_of_the_task_that_threw_it_only(engine):
    """two_remote_reconnects: A's handler throws REMOTE_FAILED while B's job waits to be retried; B has an
    error boundary event for the same code, which must not fire."""
    deploy(engine, "two_remote_reconnects.bpmn")
    case = engine.start("two_remote_reconnects", {})
    assert sorted(j.bpmn_id for j in engine.jobs(case.id)) == ["reconnectA", "reconnectB"]
    engine.run_jobs("w1")  # A: BPMN error; B: fails once, to be retried
    after = engine.instance(case.id)
    assert [t.bpmn_id for t in after.ready_tasks] == ["manualA"]
    assert [j.bpmn_id for j in engine.jobs(case.id)] == ["reconnectB"]


def _failure_record(engine, instance_id):
    [incident] = engine.incidents(instance_id)
    last = engine.history(instance_id)[-1]
    return incident, last


def test_a_bad_value_met_while_spiffworkflow_steps_is_an_incident_not_an_exception(engine):
    """A timer whose duration comes from a variable: SpiffWorkflow computes the instant while it steps, in
    ``Engine.start`` (advancing) and in ``Engine.complete`` (completing the task updates the timer after it)."""
    deploy(engine, "wait_from_variable.bpmn")
    message = "timer '{0}': 'soon' is not an ISO 8601 duration (e.g. PT2H, P1D) at {0}"
    started = engine.start("wait_from_variable", {"firstWait": "soon"})
    assert (started.status, started.error) == ("error", message.format("firstWait"))
    incident, last = _failure_record(engine, started.id)
    assert (incident.kind, incident.bpmn_id, incident.message) == ("step", "firstWait", started.error)
    assert (last.type, last.bpmn_id, last.data) == ("instance_error", "firstWait", {"message": started.error})

    case = engine.start("wait_from_variable", {"firstWait": "PT0S", "secondWait": "soon"})
    [work] = case.ready_tasks
    after = engine.complete(work.id, {"note": "done"}, user="lisi")  # before: ExpressionError out of complete()
    assert (after.status, after.error) == ("error", message.format("secondWait"))
    incident, last = _failure_record(engine, case.id)
    assert incident.bpmn_id == "secondWait" and incident.task_id == last.task_id
    assert (last.type, last.bpmn_id) == ("instance_error", "secondWait")
    assert engine.task(work.id).state == "completed" and engine.tasks(instance_id=case.id) == []
    assert [e.type for e in engine.history(case.id)][-2:] == ["task_completed", "instance_error"]
    again = engine.retry_incident(incident.id)  # the timer computes its instant again (and fails again)
    assert (again.status, again.error) == ("error", message.format("secondWait"))
    assert [i.id for i in again.incidents] != [incident.id]


def test_an_unexpected_exception_inside_spiffworkflow_is_an_incident_naming_the_task(engine):
    """SpiffWorkflow 3.2.0's multi-instance task fails with a ``TypeError`` when its collection is a number."""
    deploy(engine, "mi_local.bpmn")
    case = engine.start("inspect_each", {"customers": 5})
    assert case.status == "error" and case.error == "unexpected TypeError at inspectOne: 'int' object is not iterable"
    incident, last = _failure_record(engine, case.id)
    assert (incident.bpmn_id, incident.message) == ("inspectOne", case.error)
    assert (last.type, last.bpmn_id) == ("instance_error", "inspectOne")


def test_a_loop_cardinality_that_is_not_a_number_fails_its_case_alone(engine):
    """SpiffWorkflow's Camunda multi-instance task took a non-numeric cardinality for a collection's name and
    rewrote the task spec every case of the definition shares: the next case then failed too."""
    deploy(engine, "visits_by_cardinality.bpmn")
    case = engine.start("visits_by_cardinality", {"visits": "3"})
    after = engine.complete(case.ready_tasks[0].id, {})
    assert after.status == "error" and after.error.startswith("loopCardinality ${visits} is '3', not a whole number")
    assert after.error.endswith(" at visit") and "\n" not in after.error
    incident, last = _failure_record(engine, case.id)
    assert (incident.bpmn_id, incident.message, last.type) == ("visit", after.error, "instance_error")
    good = engine.start("visits_by_cardinality", {"visits": 2})  # the same cached definition
    assert [t.bpmn_id for t in engine.complete(good.ready_tasks[0].id, {}).ready_tasks] == ["visit", "visit"]

    retried = engine.retry_incident(incident.id, user="admin")
    assert retried.status == "error" and retried.error == after.error  # the same data fails the same way
    [incident] = engine.incidents(case.id)  # a new one
    resolved = engine.resolve_incident(incident.id, {"visits": 3}, user="admin")  # the supervisor corrects it
    assert resolved.status == "running" and [t.bpmn_id for t in resolved.ready_tasks] == ["visit"] * 3
    assert engine.instance(case.id).variables["visits"] == 3 and engine.incidents(case.id) == []


def test_start_of_unknown_process_and_bad_data(engine):
    with pytest.raises(NotFound, match="no process 'nope' is deployed"):
        engine.start("nope")
    deploy(engine, "sla_review.bpmn")
    with pytest.raises(InvalidInput, match="start data must be a JSON object"):
        engine.start("sla_review", ["not", "a", "dict"])


def test_clock_must_be_aware():
    from engine.clock import FixedClock

    with pytest.raises(ValueError, match="no time zone"):
        FixedClock(datetime(2026, 1, 1))
    assert FixedClock(datetime(2026, 1, 1, tzinfo=UTC)).now().tzinfo is UTC


def test_work_queue_query_does_not_need_instance_state(engine):
    """tasks() reads the work-item table only: corrupting instance state does not affect it."""
    deploy(engine, "sla_review.bpmn")
    instance = engine.start("sla_review", {"amount": 1})
    from sqlalchemy import update

    from engine.store import InstanceRow

    with engine.store.write() as session:
        session.execute(update(InstanceRow).where(InstanceRow.id == instance.id).values(state_json="garbage"))
    assert [t.bpmn_id for t in engine.tasks()] == ["review"]


def test_corpus_copy_is_untouched(tmp_path):
    # guard for the tests below that copy fixtures: the fixture directory itself stays clean
    shutil.copy(BPMN / "sla_review.bpmn", tmp_path)
    assert (tmp_path / "sla_review.bpmn").read_bytes() == (BPMN / "sla_review.bpmn").read_bytes()


def test_thrown_message_starts_another_process_and_reaches_a_waiting_case(engine):
    deploy(engine, "follow_up.bpmn", "throw_to_other.bpmn")
    waiting = engine.start("follow_up", {"workOrderNo": "WO-5", "severity": "GENERAL", "followUpCount": 0})
    engine.complete(waiting.ready_tasks[0].id, {})
    revisit = engine.start("revisit_turns_complaint", {"workOrderNo": "WO-5", "sourceOrderNo": "WO-5"})
    done = engine.complete(revisit.ready_tasks[0].id, {"comment": "客户要求投诉"}, user="hui")
    assert done.status == "completed"
    sent = [e.data["message"] for e in engine.history(revisit.id) if e.type == "message_sent"]
    assert sent == ["msgOpenCase", "msgFollowUp"]
    opened = engine.instances(key="opened_by_message")
    assert len(opened) == 1 and opened[0].business_key == "WO-5"
    assert opened[0].variables["comment"] == "客户要求投诉"
    assert [t.bpmn_id for t in opened[0].ready_tasks] == ["handleOpened"]
    assert engine.instance(waiting.id).status == "completed"  # its msgFollowUp catch got the message


def test_bpmn_error_from_a_handler_takes_the_error_boundary(engine):
    deploy(engine, "error_boundary.bpmn")
    remote = engine.start("remote_or_onsite", {"meterOffline": False})
    assert remote.status == "completed" and "reconnectedAt" in remote.variables
    fallback = engine.start("remote_or_onsite", {"meterOffline": True})
    assert fallback.status == "running"
    assert [t.bpmn_id for t in fallback.ready_tasks] == ["onsiteReconnect"]
    assert fallback.variables["errorCode"] == "REMOTE_FAILED"
    [event] = [e for e in engine.history(fallback.id) if e.type == "bpmn_error"]
    assert event.bpmn_id == "remoteReconnect" and event.data["message"] == "电能表离线，远程复电失败"


def test_multi_instance_bodies_keep_their_own_variables(engine):
    """One inspection per customer: what one body writes never reaches a parallel body."""
    from engine.store import InstanceRow

    def task_data(instance_id):
        with engine.store.read() as session:
            row = session.get(InstanceRow, instance_id)
            workflow = engine.runtime.load(engine._bundle(session, row.definition_id), row.state_json)
        return {t.id: engine.runtime.find_task(workflow, t.id).data for t in engine.tasks(instance_id=instance_id)}

    deploy(engine, "mi_local.bpmn")
    instance = engine.start("inspect_each", {"customers": ["户A", "户B"], "planNo": "P-12"})
    findings = {"户A": "窃电", "户B": "正常"}
    for task_id, data in task_data(instance.id).items():
        engine.complete(task_id, {"finding": findings[data["customer"]]})
    for task in reversed(engine.tasks(instance_id=instance.id)):  # settle in the other order
        assert task.bpmn_id == "settle"
        engine.complete(task.id, {"settlement": "已处理"})
    reports = task_data(instance.id)
    assert {engine.task(t).bpmn_id for t in reports} == {"confirmReport"}
    assert {d["customer"]: d["reportText"] for d in reports.values()} == {"户A": "户A:窃电", "户B": "户B:正常"}
    assert all(d["planNo"] == "P-12" for d in reports.values())  # instance variables stay visible
    for task_id in reports:
        engine.complete(task_id, {})
    assert engine.instance(instance.id).status == "completed"


def test_a_case_number_given_during_a_step_reaches_its_open_and_closed_tasks(engine):
    """``work_item.business_key`` is a copy of the case's key: the queue shows it without reading the case."""
    deploy(engine, "parallel_tasks.bpmn")
    case = engine.start("parallel_tasks")
    assert case.business_key is None and {t.business_key for t in engine.tasks(instance_id=case.id)} == {None}
    first = next(t for t in case.ready_tasks if t.bpmn_id == "a")
    assert engine.complete(first.id, {"workOrderNo": "WO-PAR-9"}).business_key == "WO-PAR-9"
    shown = {t.bpmn_id: (t.state, t.business_key) for t in engine.tasks(instance_id=case.id, include_closed=True)}
    assert shown == {"a": ("completed", "WO-PAR-9"), "b": ("open", "WO-PAR-9")}


@pytest.mark.parametrize("step", ["review", "check"])
def test_a_handler_reassigns_the_open_tasks_of_a_step_or_of_a_sub_process(engine, step):
    deploy(engine, "reassign_step.bpmn")
    instance = engine.start("reassign_step", {"step": step, "to": "chenmin"})
    check, decide = sorted(instance.ready_tasks, key=lambda t: t.bpmn_id)
    assert (check.bpmn_id, check.assignee, decide.bpmn_id) == ("check", None, "decide")
    engine.claim(check.id, "zhang")

    engine.complete(decide.id, {}, user="banzhang")
    moved = engine.task(check.id)
    assert (moved.assignee, moved.state, moved.candidate_groups) == ("chenmin", "open", ["agent"])
    assert [t.id for t in engine.tasks(user="chenmin")] == [check.id]
    [event] = [e for e in engine.history(instance.id) if e.type == "task_reassigned"]
    assert (event.task_id, event.actor, event.data) == (check.id, None, {
        "from": "zhang", "to": "chenmin", "requested_by": "move"})
    with pytest.raises(NotAllowed, match="assigned to chenmin"):
        engine.complete(check.id, {}, user="zhang")
    assert engine.complete(check.id, {}, user="chenmin").status == "completed"


def test_a_reassignment_reaches_a_task_the_same_step_creates(engine):
    """The handler runs before the task exists; the step that creates it gives it to the user at once."""
    deploy(engine, "reassign_before.bpmn")
    instance = engine.start("reassign_before", {"step": "check", "to": "chenmin"})
    [check] = instance.ready_tasks
    assert check.assignee == "chenmin" and engine.task(check.id).assignee == "chenmin"
    assert [t.id for t in engine.tasks(user="chenmin")] == [check.id]
    [event] = [e for e in engine.history(instance.id) if e.type == "task_reassigned"]
    assert (event.task_id, event.data) == (check.id, {"from": None, "to": "chenmin", "requested_by": "move"})


@pytest.mark.parametrize("step", ["someOtherStep", "fork"])  # fork: done, on the path before the open task
def test_a_reassignment_of_a_step_without_open_tasks_is_recorded_and_moves_nothing(engine, step):
    deploy(engine, "reassign_step.bpmn")
    instance = engine.start("reassign_step", {"step": step, "to": "chenmin"})
    decide = next(t for t in instance.ready_tasks if t.bpmn_id == "decide")
    engine.complete(decide.id, {}, user="banzhang")
    types = [e.type for e in engine.history(instance.id)]
    assert "reassign_requested" in types and "task_reassigned" not in types
    [check] = engine.instance(instance.id).ready_tasks
    assert check.assignee is None


def test_a_parallel_join_keeps_what_each_finished_task_recorded(engine):
    """Branch A edits a line item while branch B does not; after the join, the stored state still says
    what 修改明细 was completed with (SpiffWorkflow's join merge used to rewrite it in place)."""
    from engine.store import InstanceRow

    deploy(engine, "parallel_line_items.bpmn")
    case = engine.start("parallel_line_items", {"items": [{"q": 1}]})

    def complete(name: str, data: dict):
        task = next(t for t in engine.tasks(instance_id=case.id) if t.name == name)
        engine.complete(task.id, data)
        return task.id

    complete("并行核对", {})
    edited = complete("修改明细", {"items": [{"q": 2}]})
    complete("复核", {})
    assert [t.name for t in engine.tasks(instance_id=case.id)] == ["汇总"]
    with engine.store.read() as session:
        row = session.get(InstanceRow, case.id)
        stored = engine.runtime.serializer.loads(row.state_json, *_specs(engine, session, row))
    assert engine.runtime.find_task(stored, edited).data["items"] == [{"q": 2}]


def _specs(engine, session, row):
    bundle = engine._bundle(session, row.definition_id)
    return bundle.spec, bundle.subprocess_specs, engine.runtime.script_engine


def test_what_the_task_after_a_multi_instance_task_writes_is_shared_with_the_case(engine):
    """The task after a multi-instance task has it as its SpiffWorkflow parent, like the instances do; it was
    taken for an instance, so what it wrote stayed local and the parallel branch never saw it."""
    from engine.store import InstanceRow

    deploy(engine, "after_multi_instance.bpmn")
    case = engine.start("after_multi_instance", {})
    [first] = [t for t in case.ready_tasks if t.bpmn_id == "first"]
    engine.complete(first.id, {})  # then the script task after it sets flag = 'set'
    [parallel] = [t for t in engine.tasks(instance_id=case.id) if t.bpmn_id == "y"]
    with engine.store.read() as session:
        row = session.get(InstanceRow, case.id)
        workflow = engine.runtime.load(engine._bundle(session, row.definition_id), row.state_json)
    assert engine.runtime.find_task(workflow, parallel.id).data["flag"] == "set"
