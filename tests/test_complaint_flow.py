"""投诉 complaint_handling driven through the Engine API: every branch, grading, time limits, escalation.

Each test runs on a real SQLite file and a real PostgreSQL database (the ``engine`` fixture), with
the process files from ``processes/`` and the shipped handlers, on a simulated clock.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from conftest import ROOT, SHANGHAI

from engine.errors import InvalidInput
from engine.sla import default_calendar

PROCESSES = [ROOT / "processes" / "revisit.bpmn", ROOT / "processes" / "complaint_handling.bpmn"]


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=SHANGHAI)


def register(channel="95598_PHONE", **facts):
    data = {"channel": channel, "customerName": "张伟", "customerNo": "3100123456", "contactPhone": "13812345678",
            "elecAddress": "广州市天河区中山大道100号",
            "content": "近一个月家中频繁停电，每次停电都没有提前通知，影响生活。",
            "demand": "要求说明停电原因并保证今后提前通知", "category": "OUTAGE", "escalationTendency": False,
            "injuryOrSafety": False, "importantCustomerOutage": False, "mediaInvolved": False,
            "affectedCustomerCount": 1, "staffMisconduct": False}
    data.update(facts)
    return data


def forms(clock, **override):
    """Complete, valid answers for every form of the flow (the operator's input)."""
    now = clock.now().isoformat()
    answers = {
        "classifyComplaint": lambda v: {"category": v.get("category", "OUTAGE"), "severity": v["suggestedSeverity"],
                                        "handlingUnit": "天河供电服务中心"},
        "dispatchComplaint": lambda v: {"handler": "李娜", "dispatchNote": "请24小时内联系客户"},
        "contactCustomer": lambda v: {"contactedAt": now, "contactResult": "CONTACTED"},
        "investigateAndHandle": lambda v: {"findings": "线路老化导致频繁跳闸，已核实", "verified": True,
                                           "utilityResponsible": True, "measures": "更换老化线路，完善停电通知流程"},
        "reviewResult": lambda v: {"approved": True},
        "replyCustomer": lambda v: {"replyMethod": "PHONE", "repliedAt": now,
                                    "replyContent": "经核查系线路老化所致，已完成更换，今后计划停电将提前七天通知。"},
        "urgentCoordination": lambda v: {"coordinationActions": "已安排抢修队赶赴现场", "coordinatedAt": now},
        "revisitCustomer": lambda v: {"reached": True, "resolved": True, "satisfaction": "SATISFIED"},
        "reviewComplaint": lambda v: {"decision": "CLOSE"},
        "superviseOverdue": lambda v: {"decision": "ESCALATE", "reason": "超时未处理", "newOwner": "王强"},
    }
    answers.update(override)
    return answers


def drive(engine, clock, instance_id, answers, stop_at=(), max_steps=40):
    """Complete ready tasks (as their assignee) until none is left or one in ``stop_at`` is ready."""
    for _ in range(max_steps):
        ready = engine.tasks(instance_id=instance_id)
        if not ready or any(t.bpmn_id in stop_at for t in ready):
            return ready
        task = ready[0]
        clock.advance(timedelta(minutes=5))
        variables = engine.instance(instance_id).variables
        engine.complete(task.id, answers[task.form_key](variables), user=task.assignee)
    raise AssertionError("flow did not settle")


def open_complaint(engine, clock, number="WO20261207001", channel="95598_PHONE", **facts):
    engine.deploy(PROCESSES)
    instance = engine.correlate("msgComplaint", {"workOrderNo": number},
                                {"workOrderNo": number, "channel": channel, "registeredAt": clock.now().isoformat()})
    [task] = instance.ready_tasks
    assert (task.bpmn_id, task.candidate_groups) == ("registerComplaint", ["agent"])
    engine.complete(task.id, register(channel, **facts), user="agent1")
    return instance.id


def finish_revisit(engine, clock, instance_id, answers):
    """The revisit waits (P1D or PT4H) before the call: run timers and jobs until it is ready."""
    for _ in range(6):
        engine.run_jobs("test-worker")
        if engine.tasks(instance_id=instance_id):
            return
        clock.advance(timedelta(hours=6))
        engine.run_due()
    raise AssertionError("revisit never became ready")


def test_general_complaint_runs_to_closing_with_kpis(engine, clock):
    clock.set(at("2026-12-07T09:00:00"))  # a Monday
    instance_id = open_complaint(engine, clock)
    variables = engine.instance(instance_id).variables
    assert (variables["suggestedSeverity"], variables["severity"]) == ("GENERAL", "GENERAL")
    receipt = [e for e in engine.history(instance_id) if e.type == "outbox"][0]
    assert "WO20261207001" in receipt.data["text"] and receipt.data["to"] == "13812345678"
    answers = forms(clock)
    drive(engine, clock, instance_id, answers)
    variables = engine.instance(instance_id).variables
    # 4 working days from Monday 09:10 → end of Friday
    assert variables["replyDue"] == at("2026-12-11T23:59:59")
    assert variables["contactDueAt"] - variables["slaStartedAt"] == timedelta(hours=24)
    finish_revisit(engine, clock, instance_id, answers)
    drive(engine, clock, instance_id, answers)
    final = engine.instance(instance_id)
    assert final.status == "completed"
    v = final.variables
    assert (v["finalStatus"], v["revisitOutcome"], v["contactOnTime"], v["replyOnTime"], v["reopened"]) == (
        "办结", "CLOSED", True, True, False)
    assert v["orderReplySubmittedAt"] is not None  # the async 回单 ran as a job


@pytest.mark.parametrize(("facts", "channel", "severity"), [
    ({"injuryOrSafety": True}, "95598_PHONE", "URGENT"),
    ({"affectedCustomerCount": 5}, "95598_PHONE", "URGENT"),
    ({}, "12398", "MAJOR"),
    ({"claimedLossYuan": 10000}, "95598_WEB", "MAJOR"),
    ({"staffMisconduct": True}, "COUNTER", "MAJOR"),
    ({"claimedLossYuan": 9999}, "95598_PHONE", "GENERAL"),
])
def test_d4_grading_first_matching_rule(facts, channel, severity):
    from handlers.common import policy_table
    from handlers.complaint import grade

    case = {**register(channel), **facts, "repeatCount": 0}
    assert grade(case, policy_table().latest) == severity


def test_repeat_complaint_within_30_days_is_major(engine, clock):
    clock.set(at("2026-12-07T09:00:00"))
    first = open_complaint(engine, clock, number="WO-A")
    assert engine.instance(first).variables["severity"] == "GENERAL"
    clock.advance(timedelta(days=10))
    second = open_complaint(engine, clock, number="WO-B")
    v = engine.instance(second).variables
    assert v["repeatCount"] == 1 and v["linkedOrders"] == ["WO-A"]
    assert v["suggestedSeverity"] == "MAJOR"
    clock.advance(timedelta(days=25))
    third = open_complaint(engine, clock, number="WO-C")
    v = engine.instance(third).variables
    assert (v["repeatCount"], v["linkedOrders"]) == (1, ["WO-B"])  # WO-A is 35 days back: out of the window


def test_urgent_alerts_leaders_and_coordinates_in_parallel(engine, clock):
    clock.set(at("2026-12-07T09:00:00"))
    instance_id = open_complaint(engine, clock, mediaInvolved=True)
    answers = forms(clock)
    ready = drive(engine, clock, instance_id, answers, stop_at=("urgentCoordination",))
    assert {t.bpmn_id for t in ready} == {"urgentCoordination", "contactCustomer"}
    coordination = next(t for t in ready if t.bpmn_id == "urgentCoordination")
    assert coordination.candidate_groups == ["manager"]
    alert = [e for e in engine.history(instance_id) if e.type == "outbox" and e.bpmn_id == "notifyLeadership"]
    assert alert and "媒体 / 舆情" in alert[0].data["text"]
    v = engine.instance(instance_id).variables
    assert v["replyDue"] == default_calendar().add_working_days(v["slaStartedAt"], 1)  # URGENT: 1 WD
    assert v["contactDueAt"] - v["slaStartedAt"] == timedelta(hours=1)


def test_major_complaint_is_owned_by_the_duty_supervisor(engine, clock):
    clock.set(at("2026-12-07T09:00:00"))
    instance_id = open_complaint(engine, clock, escalationTendency=True)
    drive(engine, clock, instance_id, forms(clock), stop_at=("contactCustomer",))
    v = engine.instance(instance_id).variables
    assert v["severity"] == "MAJOR" and v["caseOwner"] == "天河供电服务中心值班主管"
    [contact] = engine.tasks(instance_id=instance_id)
    assert contact.assignee == "李娜" and contact.due_at == v["contactDueAt"]


def test_12345_channel_cap_wins_over_the_severity_deadline(engine, clock):
    clock.set(at("2026-02-12T10:00:00"))  # Thursday before the 2026 Spring Festival
    instance_id = open_complaint(engine, clock, channel="12345")
    drive(engine, clock, instance_id, forms(clock), stop_at=("contactCustomer",))
    v = engine.instance(instance_id).variables
    assert v["severity"] == "MAJOR"  # D4: government hotline
    # MAJOR: 3 WD would end after the holiday (Feb 24); 12345 closes within 7 calendar days
    assert v["replyDue"] == at("2026-02-19T10:00:00")


def test_reply_timers_across_the_spring_festival(engine, clock):
    """T1 催办, T2 督办, T3 升级 and T4 改派 on subHandle, counted in PRC working days."""
    clock.set(at("2026-02-12T09:00:00"))  # Thu; Sat Feb 14 is a make-up workday, Feb 15–23 holiday
    instance_id = open_complaint(engine, clock)
    drive(engine, clock, instance_id, forms(clock), stop_at=("investigateAndHandle",))
    v = engine.instance(instance_id).variables
    assert v["replyDue"] == at("2026-02-25T23:59:59")  # Feb 13, Feb 14 (调休), Feb 24, Feb 25
    assert v["replyRemindAt"] == at("2026-02-14T23:59:59")  # due − 2 WD
    assert v["replyEscalateAt"] == at("2026-02-26T23:59:59")
    assert v["reassignAt"] == at("2026-02-27T23:59:59")

    def fired():
        return [e.bpmn_id for e in engine.history(instance_id) if e.type == "timer_fired"]

    engine.run_due(now=at("2026-02-14T23:00:00"))
    assert "timerRemind_subHandle" not in fired()
    engine.run_due(now=at("2026-02-15T00:00:00"))
    assert "timerRemind_subHandle" in fired()
    reminder = [e for e in engine.history(instance_id) if e.type == "outbox" and e.bpmn_id == "sendReminder_subHandle"]
    assert "李娜" in reminder[0].data["text"]

    engine.run_due(now=at("2026-02-24T12:00:00"))  # the holiday passed: not yet due
    assert "timerOverdue_subHandle" not in fired()
    engine.run_due(now=at("2026-02-26T00:00:00"))
    supervise = [t for t in engine.tasks(instance_id=instance_id) if t.form_key == "superviseOverdue"]
    assert supervise and supervise[0].candidate_groups == ["dutySupervisor"]
    assert engine.instance(instance_id).variables["overdue"] is True

    engine.run_due(now=at("2026-02-27T00:00:00"))
    v = engine.instance(instance_id).variables
    assert v["complianceBreach"] is True
    notice = [e for e in engine.history(instance_id) if e.type == "outbox" and e.bpmn_id == "notifyManager_subHandle"]
    assert "升级通知" in notice[0].data["text"]

    engine.run_due(now=at("2026-02-28T00:00:00"))  # T4: interrupting, the work goes to the manager's nominee
    v = engine.instance(instance_id).variables
    assert v["handler"] == "天河供电服务中心负责人指定专责" and v["severity"] == "MAJOR" and v["overdue"] is False
    contact = [t for t in engine.tasks(instance_id=instance_id) if t.bpmn_id == "contactCustomer"]
    assert contact and contact[0].assignee == "天河供电服务中心负责人指定专责"
    assert "timerReassign_subHandle" in fired()


def test_supervisor_extension_moves_the_due_and_rearms_t3(engine, clock):
    clock.set(at("2026-12-07T09:00:00"))
    instance_id = open_complaint(engine, clock)
    drive(engine, clock, instance_id, forms(clock), stop_at=("investigateAndHandle",))
    due = engine.instance(instance_id).variables["replyDue"]
    engine.run_due(now=due + timedelta(minutes=1))
    [supervise] = [t for t in engine.tasks(instance_id=instance_id) if t.form_key == "superviseOverdue"]
    new_due = at("2026-12-16T18:00:00")
    clock.set(due + timedelta(hours=1))
    engine.complete(supervise.id, {"decision": "EXTEND", "reason": "客户要求改约时间",
                                   "newDueAt": new_due.isoformat()}, user="duty1")
    v = engine.instance(instance_id).variables
    assert v["replyDue"] == new_due and v["overdue"] is False
    timers = {t.bpmn_id: t.due_at for t in engine.instance(instance_id).timers}
    assert timers["timerEscalate_subHandle"] == min(v["replyCap"], default_calendar().add_working_days(new_due, 1))


def test_rejected_review_goes_back_to_investigation(engine, clock):
    clock.set(at("2026-12-07T09:00:00"))
    instance_id = open_complaint(engine, clock)
    answers = forms(clock, reviewResult=lambda v: {"approved": False, "returnReason": "整改措施不具体"})
    ready = drive(engine, clock, instance_id, answers, stop_at=("reviewResult",))
    engine.complete(ready[0].id, {"approved": False, "returnReason": "整改措施不具体"}, user="duty1")
    [again] = engine.tasks(instance_id=instance_id)
    assert again.bpmn_id == "investigateAndHandle" and again.assignee == "李娜"


def test_unsatisfied_revisit_leads_to_review_rehandle_and_then_close(engine, clock):
    clock.set(at("2026-12-07T09:00:00"))
    instance_id = open_complaint(engine, clock)
    unhappy = forms(clock, revisitCustomer=lambda v: {"reached": True, "resolved": False,
                                                      "satisfaction": "UNSATISFIED"},
                    reviewComplaint=lambda v: {"decision": "REHANDLE", "newHandler": "周杰"})
    drive(engine, clock, instance_id, unhappy)
    finish_revisit(engine, clock, instance_id, unhappy)
    ready = drive(engine, clock, instance_id, unhappy, stop_at=("reviewComplaint",))
    assert ready[0].candidate_groups == ["manager"]
    drive(engine, clock, instance_id, unhappy, stop_at=("contactCustomer",))
    v = engine.instance(instance_id).variables
    assert (v["rehandleCount"], v["handler"], v["severity"]) == (1, "周杰", "MAJOR")
    assert engine.tasks(instance_id=instance_id)[0].assignee == "周杰"
    happy = forms(clock, dispatchComplaint=None)
    drive(engine, clock, instance_id, happy)
    finish_revisit(engine, clock, instance_id, happy)
    drive(engine, clock, instance_id, happy)
    final = engine.instance(instance_id)
    assert final.status == "completed" and final.variables["reopened"] is True


def test_terminate_service_needs_a_legal_basis(engine, clock):
    clock.set(at("2026-12-07T09:00:00"))
    instance_id = open_complaint(engine, clock)
    answers = forms(clock, revisitCustomer=lambda v: {"reached": True, "resolved": False,
                                                      "satisfaction": "UNSATISFIED"})
    drive(engine, clock, instance_id, answers)
    finish_revisit(engine, clock, instance_id, answers)
    [review] = drive(engine, clock, instance_id, answers, stop_at=("reviewComplaint",))
    with pytest.raises(InvalidInput, match="legalBasis"):
        engine.complete(review.id, {"decision": "TERMINATE_SERVICE"}, user="manager1")
    engine.complete(review.id, {"decision": "TERMINATE_SERVICE",
                                "legalBasis": "诉求超出《供电营业规则》规定的权利范围"}, user="manager1")
    assert engine.instance(instance_id).variables["finalStatus"] == "服务终止"


def test_customer_chases_raise_severity_after_the_second_call(engine, clock):
    clock.set(at("2026-12-07T09:00:00"))
    instance_id = open_complaint(engine, clock)
    drive(engine, clock, instance_id, forms(clock), stop_at=("investigateAndHandle",))
    before = engine.instance(instance_id).variables
    first = engine.correlate("msgCustomerFollowUp", {"workOrderNo": "WO20261207001"}, {"followUpNote": "第一次来电"})
    assert first.id == instance_id
    assert engine.instance(instance_id).variables["followUpCount"] == 1
    engine.correlate("msgCustomerFollowUp", {"workOrderNo": "WO20261207001"}, {"followUpNote": "第二次来电"})
    v = engine.instance(instance_id).variables
    assert (v["followUpCount"], v["severity"]) == (2, "MAJOR")
    assert v["replyDue"] < before["replyDue"]  # MAJOR: 3 WD instead of 4, never later
    reminders = [e for e in engine.history(instance_id) if e.type == "outbox" and e.bpmn_id == "remindHandler"]
    assert len(reminders) == 2 and "客户已第2次来电催办" in reminders[1].data["text"]
    assert [t.bpmn_id for t in engine.tasks(instance_id=instance_id)] == ["investigateAndHandle"]


@pytest.mark.parametrize(("form_key", "bad", "message"), [
    ("classifyComplaint", {"category": "OUTAGE", "severity": "URGENT", "handlingUnit": "天河"}, "gradeReason"),
    ("dispatchComplaint", {"dispatchNote": "无处理人"}, "handler"),
    ("contactCustomer", {"contactedAt": "昨天", "contactResult": "CONTACTED"}, "contactedAt"),
    ("investigateAndHandle", {"findings": "已核实", "verified": True, "utilityResponsible": True}, "measures"),
    ("reviewResult", {"approved": False}, "returnReason"),
    ("replyCustomer", {"replyContent": "已处理", "repliedAt": "2026-12-07T10:00:00+08:00",
                       "replyMethod": "FAX"}, "replyMethod"),
])
def test_invalid_form_data_is_refused_and_changes_nothing(engine, clock, form_key, bad, message):
    clock.set(at("2026-12-07T09:00:00"))
    instance_id = open_complaint(engine, clock)
    answers = forms(clock)
    ready = drive(engine, clock, instance_id, answers, stop_at=(form_key,))
    task = next(t for t in ready if t.form_key == form_key)
    history = engine.history(instance_id)
    with pytest.raises(InvalidInput, match=message):
        engine.complete(task.id, bad, user=task.assignee)
    assert engine.history(instance_id) == history
    assert engine.tasks(instance_id=instance_id)[0].id == task.id


def test_register_form_refuses_a_bad_phone_number(engine, clock):
    engine.deploy(PROCESSES)
    instance = engine.correlate("msgComplaint", {"workOrderNo": "WO-X"}, {"workOrderNo": "WO-X", "channel": "12398"})
    with pytest.raises(InvalidInput, match="contactPhone"):
        engine.complete(instance.ready_tasks[0].id, register(contactPhone="1381234"), user="agent1")
