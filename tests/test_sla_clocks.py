"""SLA clocks: working-day and 24x7 budgets from the policy table, paused in customer time across a
weekend and the 2026 National Day holiday (with its make-up workday), at-risk and breach (both stores)."""

from __future__ import annotations

from datetime import datetime, timedelta

from conftest import SHANGHAI
from worker_helpers import cli, deploy, events, ok

from engine.worker import Worker


def sh(*args: int) -> datetime:
    return datetime(*args, tzinfo=SHANGHAI)


def end_of(year: int, month: int, day: int) -> datetime:
    return sh(year, month, day, 23, 59, 59)


def clocks_by_step(engine, **filters):
    return {c.bpmn_id: c for c in engine.sla_clocks(**filters)}


def test_customer_time_over_a_weekend_pauses_the_case_clock_and_moves_it_one_working_day(engine, clock):
    deploy(engine, "sla_clock.bpmn")
    clock.set(sh(2026, 12, 3, 9))  # Thursday
    instance = engine.start("sla_case", {"checkKind": "calibration", "severity": "MAJOR"}, business_key="TS-1")
    clocks = clocks_by_step(engine)
    case, task = clocks["startCase"], clocks["investigate"]
    # complaint.reply: 4 WD (T1 = due - 2 WD; T3 = the 10 WD regulatory ceiling); meter.calibration: 5 WD
    assert (case.scope, case.mode, case.budget, case.policy_key, case.policy_version) == (
        "case", "wd", "4 WD", "complaint.reply", "2023-12")
    assert (case.remind_at, case.due_at, case.cap_at) == (end_of(2026, 12, 7), end_of(2026, 12, 9),
                                                          end_of(2026, 12, 17))
    assert (task.scope, task.policy_key, task.due_at) == ("task", "meter.calibration", end_of(2026, 12, 10))
    assert case.groups == ["complaintHandler"] and case.severity == "MAJOR" and case.state == "on_track"

    clock.set(sh(2026, 12, 4, 10))  # Friday: the case now waits for the customer's documents
    instance = engine.complete(instance.ready_tasks[0].id, {})
    [case] = engine.sla_clocks(state="paused")
    assert case.paused and case.paused_since == sh(2026, 12, 4, 10)
    [investigate] = engine.sla_clocks(state="met")
    assert investigate.bpmn_id == "investigate" and investigate.closed_at == sh(2026, 12, 4, 10)
    clock.set(sh(2026, 12, 6, 12))  # Sunday: a paused clock does not run down
    [case] = engine.sla_clocks(instance_id=instance.id)
    assert case.remaining_seconds == int((end_of(2026, 12, 9) - sh(2026, 12, 4, 10)).total_seconds())

    clock.set(sh(2026, 12, 7, 10))  # Monday: documents arrive; Fri 10:00 -> Mon 10:00 cost one working day
    instance = engine.complete(instance.ready_tasks[0].id, {})
    [case] = engine.sla_clocks(instance_id=instance.id)
    assert not case.paused and case.state == "on_track"
    assert (case.remind_at, case.due_at, case.cap_at) == (end_of(2026, 12, 8), end_of(2026, 12, 10),
                                                          end_of(2026, 12, 18))
    assert (case.paused_seconds, case.paused_working_days) == (3 * 86400, 1)
    assert case.pauses == [{"from": sh(2026, 12, 4, 10).isoformat(), "to": sh(2026, 12, 7, 10).isoformat(),
                            "shift": "1 WD"}]
    history = {e.type: e for e in engine.history(instance.id)}
    assert history["sla_paused"].data["waiting_on"] == ["waitDocuments"]
    assert history["sla_resumed"].data["clocks"][0]["shift"] == "1 WD"

    clock.set(sh(2026, 12, 10, 15))  # replied on Thursday: late by the calendar, in time by the SLA
    engine.complete(instance.ready_tasks[0].id, {})
    closed = clocks_by_step(engine, instance_id=instance.id, state="closed", flow="sla_case")
    assert {step: c.state for step, c in closed.items()} == {"startCase": "met", "investigate": "met"}
    assert closed["startCase"].closed_at == sh(2026, 12, 10, 15)


def test_customer_time_across_national_day_2026_counts_no_holiday_and_keeps_the_make_up_day(engine, clock):
    deploy(engine, "sla_clock.bpmn")
    clock.set(sh(2026, 9, 29, 9))  # Tuesday before 国庆 (Oct 1-7 off; Sat Oct 10 is a make-up workday)
    instance = engine.start("sla_case", {"checkKind": "calibration", "severity": "GENERAL"})
    case = clocks_by_step(engine)["startCase"]
    assert (case.remind_at, case.due_at) == (end_of(2026, 10, 8), end_of(2026, 10, 10))  # Sep 30, Oct 8, 9, 10

    clock.set(sh(2026, 9, 30, 10))
    instance = engine.complete(instance.ready_tasks[0].id, {})  # waiting on the customer over the holiday
    clock.set(sh(2026, 10, 9, 10))
    instance = engine.complete(instance.ready_tasks[0].id, {})  # resumed: Oct 8 and 9 were working days lost
    case = clocks_by_step(engine)["startCase"]
    assert case.pauses[0]["shift"] == "2 WD" and case.paused_working_days == 2
    assert (case.remind_at, case.due_at) == (end_of(2026, 10, 10), end_of(2026, 10, 13))  # Sat 10 works, 11 not

    lines = []
    clock.set(sh(2026, 10, 12, 10))
    assert Worker(engine, "w-sla", log=lines.append).run(once=True) == 1
    assert engine.sla_clocks(state="at_risk")[0].bpmn_id == "startCase"
    clock.set(sh(2026, 10, 14, 0, 0, 2))
    assert Worker(engine, "w-sla", log=lines.append).run(once=True) == 1
    assert [line.split(" ")[2] for line in lines if " sla_" in line] == ["sla_at_risk", "sla_breached"]
    [breached] = engine.sla_clocks(state="breached")
    assert breached.remaining_seconds == -3 and breached.breached_at == sh(2026, 10, 14, 0, 0, 2)
    [event] = events(engine, "sla_breached", instance.id)
    assert event.data["late_seconds"] == 3 and event.data["policy_key"] == "complaint.reply"
    assert Worker(engine, "w-sla", log=lines.append).run(once=True) == 0  # reported once


def test_a_24x7_clock_pauses_for_exactly_the_customer_time(engine, clock):
    deploy(engine, "sla_clock.bpmn")
    instance = engine.start("repair_arrival", {"importance": "URGENT"})  # 09:00; the gate is still locked
    [arrive] = engine.sla_clocks(instance_id=instance.id)
    assert (arrive.mode, arrive.budget, arrive.severity, arrive.groups) == ("wall", "PT45M", "URGENT",
                                                                            ["repairCrew"])
    assert arrive.paused  # created in customer time
    gate = next(t for t in instance.ready_tasks if t.bpmn_id == "customerOpensGate")
    clock.set(sh(2026, 12, 1, 9, 20))
    instance = engine.complete(gate.id, {})
    [arrive] = engine.sla_clocks(instance_id=instance.id)
    assert (arrive.remind_at, arrive.due_at, arrive.cap_at) == (  # 50%, PT45M, PT60M ceiling; +20 minutes
        sh(2026, 12, 1, 9, 42, 30), sh(2026, 12, 1, 10, 5), sh(2026, 12, 1, 10, 20))
    assert arrive.pauses[0]["shift"] == "1200s"
    clock.set(sh(2026, 12, 1, 10, 10))
    engine.complete(instance.ready_tasks[0].id, {})
    [closed] = engine.sla_clocks(instance_id=instance.id, state="closed")
    assert closed.state == "missed" and closed.closed_at == sh(2026, 12, 1, 10, 10)


def test_due_date_tasks_have_clocks_and_queries_filter_by_flow_group_severity_state(engine, clock):
    deploy(engine, "sla_clock.bpmn", "sla_review.bpmn")
    review = engine.start("sla_review", {"amount": 1, "severity": "GENERAL"})  # camunda:dueDate = now + 2 days
    engine.start("repair_arrival", {"importance": "URGENT"})
    engine.start("sla_case", {"checkKind": "dataAnomaly", "severity": "MAJOR"})
    [due] = engine.sla_clocks(flow="sla_review")
    assert (due.mode, due.instance_id, due.due_at) == ("date", review.id, clock.now() + timedelta(days=2))
    assert due.remind_at == clock.now() + timedelta(days=2) * 0.8
    assert [c.bpmn_id for c in engine.sla_clocks(group="repairCrew")] == ["reachSite"]
    assert [c.bpmn_id for c in engine.sla_clocks(severity="MAJOR")] == ["startCase", "investigate"]  # by due
    assert [c.bpmn_id for c in engine.sla_clocks(state="paused")] == ["reachSite"]
    clock.advance(timedelta(days=1, hours=16))  # past the review's 80% mark; the paused clock stands still
    assert [(c.bpmn_id, c.state) for c in engine.sla_clocks(state=["at_risk", "breached"])] == [
        ("review", "at_risk")]
    assert engine.sla_clocks(state="paused")[0].state == "on_track"


def test_sla_command_lists_clocks_at_risk_or_breached(engine, clock, db_url):
    deploy(engine, "sla_clock.bpmn")
    engine.start("sla_case", {"checkKind": "calibration", "severity": "MAJOR"}, business_key="TS-9")
    engine.start("sla_case", {"checkKind": "dataAnomaly", "severity": "GENERAL"}, business_key="TS-10")
    soon = (sh(2026, 12, 4, 0, 0, 1)).isoformat()  # past complaint.reply's T1 (Dec 3 23:59:59)
    listed = ok(cli("--now", soon, "sla", "--json", db=db_url))
    assert sorted((c["business_key"], c["bpmn_id"], c["state"]) for c in listed) == [
        ("TS-10", "startCase", "at_risk"), ("TS-9", "startCase", "at_risk")]
    major = ok(cli("--now", soon, "sla", "--severity", "MAJOR", "--flow", "sla_case", "--group", "complaintHandler",
                   "--json", db=db_url))
    assert [(c["business_key"], c["policy_key"]) for c in major] == [("TS-9", "complaint.reply")]
    everything = ok(cli("--now", soon, "sla", "--all", "--json", db=db_url))
    assert len(everything) == 4 and {c["state"] for c in everything} == {"at_risk", "on_track"}
    table = ok(cli("--now", soon, "sla", db=db_url, env={"COLUMNS": "200"}))
    assert "TS-9" in table and "at_risk" in table
