"""售后 ``aftersale_service`` end to end through the Engine API (SERVICE_FLOWS §14, processes/aftersale_service.md).

Every branch of ``gwServiceType`` runs with the real BPMN, the real handlers (handlers/aftersale.py,
handlers/timing.py, the shared SLA handlers), the real ``revisit`` and ``complaint_handling`` processes
and the real forms. Data from outside the engine (accounts, bills, outages, remote meters) comes from
the deterministic simulation in handlers/simulated_systems.py; :func:`customer` picks a 户号 with the
traits a scenario needs. Every form is first submitted with a mistake an operator could make: the
engine must refuse it (InvalidInput) and change nothing.

Most scenarios run on SQLite and PostgreSQL (``engine`` fixture); the longest ones run on SQLite only
(``sqlite_engine``), to keep the suite fast.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal

import pytest
from conftest import ROOT

from engine.errors import InvalidInput
from engine.identity import Refused
from handlers import simulated_systems as sim

PROCESS_FILES = [ROOT / "processes" / name for name in ("revisit.bpmn", "complaint_handling.bpmn",
                                                        "aftersale_service.bpmn")]


def at(text: str) -> datetime:
    return datetime.fromisoformat(text)


# -- fixtures and helpers ----------------------------------------------------------------------
@pytest.fixture
def aftersale(engine):
    engine.deploy(PROCESS_FILES, user="admin")
    return engine


@pytest.fixture
def sqlite_engine(sqlite_url, clock):
    from engine.api import Engine
    from engine.forms import FormRegistry

    eng = Engine(sqlite_url, clock=clock, forms=FormRegistry())
    eng.deploy(PROCESS_FILES, user="admin")
    yield eng
    eng.close()


def customer(**traits) -> str:
    """A 户号 whose simulated account has ``traits`` (Account fields, plus ``online`` for the remote
    meter and ``outage_on`` = a date on which a known outage covers it, or ``no_outage_on``)."""
    return customers(1, **traits)[0]


def customers(count: int, **traits) -> list[str]:
    found = []
    for number in range(4301000000, 4301200000):
        customer_no = str(number)
        acct = sim.account(customer_no)
        ok = True
        for name, wanted in traits.items():
            if name == "online":
                ok = sim.remote_meter_online(customer_no) == wanted
            elif name == "outage_on":
                ok = sim.known_outage(customer_no, wanted) is not None
            elif name == "no_outage_on":
                ok = sim.known_outage(customer_no, wanted) is None
            else:
                ok = getattr(acct, name) == wanted
            if not ok:
                break
        if ok:
            found.append(customer_no)
            if len(found) == count:
                return found
    raise AssertionError(f"not {count} simulated customers with {traits}")


def plain(**extra) -> dict:
    """Traits of an ordinary customer: active, no arrears, no outage today."""
    return {"status": "ACTIVE", "arrears_cut": False, "unpaid_bills": 0, **extra}


_serial = iter(range(1, 10_000))


def request(engine, service_type: str, **payload):
    """A 95598 service request (``msgServiceRequest``); returns the started instance."""
    number = payload.pop("workOrderNo", None) or f"AS2026120{next(_serial):05d}"
    data = {"workOrderNo": number, "serviceType": service_type, "channel": "95598_PHONE", **payload}
    return engine.correlate("msgServiceRequest", {"workOrderNo": number}, data, user="95598")


def item(engine, instance_id: str, bpmn_id: str):
    """The one open work item ``bpmn_id`` of the instance."""
    found = [t for t in engine.tasks(instance_id=instance_id) if t.bpmn_id == bpmn_id]
    assert len(found) == 1, (bpmn_id, [t.bpmn_id for t in engine.tasks(instance_id=instance_id)])
    return found[0]


def open_ids(engine, instance_id: str) -> list[str]:
    return sorted(t.bpmn_id for t in engine.tasks(instance_id=instance_id))


def refused(engine, task, bad: dict, match: str, user: str = "tester") -> None:
    """Completing with ``bad`` is refused by the form and changes nothing."""
    before = engine.instance(task.instance_id)
    events = len(engine.history(task.instance_id))
    with pytest.raises(InvalidInput, match=match):
        engine.complete(task.id, bad, user=user)
    after = engine.instance(task.instance_id)
    assert after.variables == before.variables
    assert [t.id for t in after.ready_tasks] == [t.id for t in before.ready_tasks]
    assert len(engine.history(task.instance_id)) == events
    assert engine.task(task.id).state == "open"


def do(engine, instance_id: str, bpmn_id: str, data: dict, bad: dict | None = None, match: str = "",
       user: str = "tester"):
    """Complete work item ``bpmn_id``; with ``bad``, first check that the form refuses it."""
    task = item(engine, instance_id, bpmn_id)
    if bad is not None:
        refused(engine, task, bad, match, user)
    return engine.complete(task.id, data, user=user)


def outbox(engine, instance_id: str, template: str | None = None, channel: str | None = None) -> list[dict]:
    events = [e.data for e in engine.history(instance_id) if e.type == "outbox"]
    return [e for e in events if (template is None or e.get("template") == template)
            and (channel is None or e.get("channel") == channel)]


def handled(engine, instance_id: str) -> list[str]:
    """Element ids of the handler tasks that ran, in order."""
    return [e.bpmn_id for e in engine.history(instance_id) if e.type == "handler_completed"]


def advance(engine, clock, delta: timedelta) -> int:
    clock.advance(delta)
    return engine.run_due()


def answer_revisit(engine, clock, instance_id: str, answer: dict, bad: dict | None = None, match: str = ""):
    """Wait out the revisit delay, then the revisit agent records ``answer``."""
    variables = engine.instance(instance_id).variables
    delay = {"PT2H": timedelta(hours=2), "P1D": timedelta(days=1)}[variables["revisitDelay"]]
    advance(engine, clock, delay)
    task = item(engine, instance_id, "revisitCustomer")
    assert task.candidate_groups == ["revisitAgent"]
    if bad is not None:
        refused(engine, task, bad, match)
    return engine.complete(task.id, answer, user="revisit01")


SATISFIED = {"reached": True, "resolved": True, "satisfaction": "SATISFIED", "comment": "抢修很及时，满意。"}
LOCAL = "2026-12-01T{}:00+08:00"


# -- A 故障报修 ------------------------------------------------------------------------------------
def repair_call(customer_no: str | None = None, **changes) -> dict:
    form = {"contactPhone": "13873101234", "faultAddress": "长沙市岳麓区桐梓坡路168号麓谷小区3栋2单元",
            "urbanRuralFlag": "01", "faultType": "NO_POWER", "isSafetyHazard": False, "scope": "SINGLE",
            "faultSide": "UTILITY", "description": "客户家中全部无电，邻居家有电，表箱内空开未跳闸。"}
    form.update(changes)
    return form


def test_repair_on_the_utility_side_is_dispatched_restored_replied_and_revisited(aftersale, clock):
    customer_no = customer(**plain(no_outage_on=clock.now()))
    order = request(aftersale, "REPAIR", customerNo=customer_no, customerName="王芳", importanceLevel="05")
    accept = item(aftersale, order.id, "acceptRepair")
    assert accept.candidate_groups == ["agent"] and accept.due_at == clock.now() + timedelta(minutes=5)

    refused(aftersale, accept, repair_call(faultType="LINE_DOWN_FIRE", isSafetyHazard=False), "isSafetyHazard")
    clock.advance(timedelta(minutes=3))
    case = aftersale.complete(accept.id, repair_call(), user="agent01")
    variables = case.variables
    assert (variables["arrearsCut"], variables["knownOutage"]) == (False, False)
    assert variables["repairArea"] == "URBAN" and variables["priority"] == "NORMAL"
    assert variables["arriveDue"] == clock.now() + timedelta(minutes=45)          # repair.arrive.URBAN
    assert variables["arriveRemindAt"] == clock.now() + timedelta(minutes=36)     # 80 %
    assert variables["arriveCap"] == clock.now() + timedelta(minutes=60)          # GB/T 28583
    assert variables["dispatchLate"] is False and variables["repairOrderNo"] == f"QX{variables['workOrderNo']}"
    [order_msg] = outbox(aftersale, order.id, channel="repair")
    assert "桐梓坡路168号" in order_msg["text"] and order_msg["priority"] == "NORMAL"

    assign = item(aftersale, order.id, "assignCrew")
    assert assign.candidate_groups == ["dispatcher"] and assign.due_at == clock.now() + timedelta(minutes=5)
    do(aftersale, order.id, "assignCrew", {"crewId": "QX-YL-03", "estimatedArrival": LOCAL.format("09:40")},
       bad={"crewId": "QX-YL-03", "estimatedArrival": LOCAL.format("09:40"), "delayReason": "OTHER"},
       match="delayNote")
    arrive = item(aftersale, order.id, "arriveOnSite")
    assert arrive.candidate_groups == ["repairCrew"] and arrive.due_at == variables["arriveDue"]

    clock.advance(timedelta(minutes=30))
    case = do(aftersale, order.id, "arriveOnSite",
              {"departAt": LOCAL.format("09:08"), "arrivedAt": LOCAL.format("09:31"), "gps": "28.2282,112.9388"},
              bad={"departAt": LOCAL.format("09:08"), "arrivedAt": "2026-12-01 09:31", "gps": "28.2282,112.9388"},
              match="arrivedAt")
    assert case.variables["restoreDue"] == at(LOCAL.format("12:31"))          # arrivedAt + PT3H (URBAN)
    assert case.variables["restoreRemindAt"] == at("2026-12-01T11:55:00+08:00")
    assert case.variables["restoreCapAt"] == at(LOCAL.format("14:31"))        # + repair.restore.escalateAfter
    assert case.variables["arrivedLate"] is False
    restore = item(aftersale, order.id, "repairAndRestore")
    assert restore.due_at == at(LOCAL.format("12:31"))

    clock.advance(timedelta(minutes=40))
    do(aftersale, order.id, "repairAndRestore",
       {"faultCause": "EQUIPMENT", "actions": "表前熔断器烧断，更换 60A 熔断器后恢复送电。",
        "restoredAt": LOCAL.format("10:10"), "materials": [{"name": "熔断器", "model": "RT18-63/60A",
                                                            "quantity": 1, "unit": "只"}]},
       bad={"faultCause": "雷击", "actions": "更换熔断器", "restoredAt": LOCAL.format("10:10")}, match="faultCause")
    reply = item(aftersale, order.id, "replyRepairOrder")
    assert reply.candidate_groups == ["dispatcher"] and reply.due_at == clock.now() + timedelta(hours=2)
    case = do(aftersale, order.id, "replyRepairOrder",
              {"handler": "wangqiang", "result": "表前熔断器烧断，已更换并于 10:10 恢复送电。",
               "departAt": LOCAL.format("08:00")},
              bad={"handler": "wangqiang"}, match="result")
    assert case.variables["departAt"] == LOCAL.format("09:08")  # read-only: the crew's record stands
    assert case.variables["revisitDelay"] == "PT2H" and case.variables["revisitWindow"] == "PT24H"
    assert case.variables["sourceOrderNo"] == case.variables["workOrderNo"]

    done = answer_revisit(aftersale, clock, order.id, SATISFIED,
                          bad={"reached": True, "satisfaction": "SATISFIED"}, match="resolved")
    assert done.status == "completed"
    assert done.variables["closedStatus"] == "CLOSED" and done.variables["revisitOutcome"] is None
    assert [h["serviceType"] for h in done.variables["serviceHistory"]] == ["REPAIR"]
    assert handled(aftersale, order.id)[:5] == ["registerServiceOrder", "matchOutage", "computeRepairSla",
                                                "dispatchRepairOrder", "computeRestoreDue"]


def test_known_outage_is_explained_by_sms_without_a_visit_or_revisit(aftersale, clock):
    customer_no = customer(status="ACTIVE", arrears_cut=False, outage_on=clock.now())
    outage = sim.known_outage(customer_no, clock.now())
    order = request(aftersale, "REPAIR", customerNo=customer_no, customerName="李娟")
    done = do(aftersale, order.id, "acceptRepair", repair_call(contactPhone="0731-84561234"),
              bad=repair_call(contactPhone="+8613873101234"), match="contactPhone")
    assert done.status == "completed" and done.variables["knownOutage"] is True
    assert done.variables["closedStatus"] == "CLOSED_NO_REVISIT"
    [sms] = outbox(aftersale, order.id, "outage_notice.j2")
    assert sms["to"] == "0731-84561234" and "李娟" in sms["text"] and outage.area in sms["text"]
    assert f"{outage.restore_at.hour:02d}:{outage.restore_at.minute:02d}" in sms["text"]
    assert "dispatchRepairOrder" not in handled(aftersale, order.id)


def test_customer_side_fault_self_check_or_declared_paid_visit(aftersale, clock):
    customer_no = customer(**plain(no_outage_on=clock.now()))
    own = request(aftersale, "REPAIR", customerNo=customer_no)
    do(aftersale, own.id, "acceptRepair", repair_call(faultSide="CUSTOMER", faultType="PARTIAL_POWER"))
    guide = item(aftersale, own.id, "guideSelfCheck")
    assert guide.candidate_groups == ["agent"]
    done = do(aftersale, own.id, "guideSelfCheck",
              {"guidanceNotes": "指导客户复位户内漏电保护器后恢复供电。", "wantsPaidService": False},
              bad={"wantsPaidService": True, "paidServiceDeclared": False}, match="paidServiceDeclared")
    assert done.status == "completed" and done.variables["closedStatus"] == "CLOSED_NO_REVISIT"
    assert "computeRepairSla" not in handled(aftersale, own.id)

    paid = request(aftersale, "REPAIR", customerNo=customer_no)
    do(aftersale, paid.id, "acceptRepair", repair_call(faultSide="CUSTOMER", urbanRuralFlag="02"))
    case = do(aftersale, paid.id, "guideSelfCheck",
              {"guidanceNotes": "漏保反复跳闸，疑为户内线路故障，客户要求上门。", "wantsPaidService": True,
               "paidServiceDeclared": True})
    assert case.variables["paid"] is True and case.variables["repairArea"] == "RURAL"
    assert case.variables["arriveDue"] == clock.now() + timedelta(minutes=90)
    [order_msg] = outbox(aftersale, paid.id, channel="repair")
    assert "有偿服务" in order_msg["text"] and order_msg["paid"] is True
    assert open_ids(aftersale, paid.id) == ["assignCrew"]


def test_safety_hazard_is_urgent_and_an_important_customer_gets_the_shorter_arrival(aftersale, clock):
    order = request(aftersale, "REPAIR", importanceLevel="02", callEndedAt="2026-12-01T08:50:00+08:00")
    clock.advance(timedelta(minutes=2))
    case = do(aftersale, order.id, "acceptRepair",
              repair_call(faultType="LINE_DOWN_FIRE", isSafetyHazard=True, urbanRuralFlag="03", scope="AREA",
                          faultAddress="长沙市望城区潇湘北路乌山段10kV线路", description="导线断落在路边，有火花。"))
    variables = case.variables
    assert variables["priority"] == "URGENT" and variables["repairArea"] == "REMOTE"
    assert variables["importantCustomer"] is True
    assert variables["arriveDue"] == clock.now() + timedelta(minutes=30)       # min(PT2H, IMPORTANT PT30M)
    assert variables["arriveCap"] == clock.now() + timedelta(minutes=240)      # REMOTE ceiling stays
    assert variables["restoreDuration"] == "PT6H"
    assert variables["callEndedAt"] == at("2026-12-01T08:50:00+08:00")         # telephony value
    assert variables["dispatchLate"] is True                                    # 12 min > repair.dispatch
    [urgent] = outbox(aftersale, order.id, "notify_dispatcher_urgent.j2")
    assert urgent["to"] == "dispatcher" and "紧急抢修" in urgent["text"] and "乌山段" in urgent["text"]


def test_arrears_cut_repair_becomes_a_reconnection_and_payment_restores_supply_remotely(aftersale, clock):
    customer_no = customer(arrears_cut=True, meter_type="28", online=True, status="ACTIVE")
    order = request(aftersale, "REPAIR", customerNo=customer_no, contactPhone="13973105678")
    done = do(aftersale, order.id, "acceptRepair", repair_call(contactPhone="13973105678"))
    assert done.status == "completed"
    assert [(h["serviceType"], h["closedStatus"]) for h in done.variables["serviceHistory"]] == [
        ("REPAIR", "CLOSED_NO_REVISIT"), ("RECONNECT", "CLOSED_NO_REVISIT")]
    assert done.variables["settled"] is False and done.variables["arrears"] > 0
    assert done.variables["penalty"] >= Decimal("1.00")                        # penalty.min
    [cut] = outbox(aftersale, order.id, "arrears_cut_notice.j2")
    assert cut["to"] == "13973105678" and f"{done.variables['amountDue']:.2f}" in cut["text"]
    [due] = outbox(aftersale, order.id, "amount_due_notice.j2")
    total = done.variables["arrears"] + done.variables["penalty"]
    assert f"合计{total:.2f}元" in due["text"] and "网上国网" in due["text"] and "24小时" in due["text"]
    assert handled(aftersale, order.id).index("informArrearsCut") < handled(aftersale, order.id).index(
        "verifyPayment")

    clock.advance(timedelta(hours=3))
    paid_at = clock.now() - timedelta(minutes=15)
    settled = aftersale.correlate("msgArrearsSettled", {"customerNo": customer_no},
                                  {"customerNo": customer_no, "paidAt": paid_at.isoformat(),
                                   "serviceType": "RECONNECT"}, user="billing")
    assert settled.id != order.id and settled.variables["workOrderNo"].startswith("20261201")
    assert settled.variables["settled"] is True and settled.variables["meterType"] == "28"
    assert settled.variables["reconnectDueAt"] == paid_at + timedelta(hours=24)
    assert settled.variables["reconnectCapAt"] == paid_at + timedelta(days=3)
    [job] = aftersale.jobs(settled.id)
    assert (job.bpmn_id, job.retry_cycle) == ("remoteReconnect", "R3/PT10M")
    assert aftersale.run_jobs("worker-1") == 1
    case = aftersale.instance(settled.id)
    assert case.variables["reconnectMethod"] == "REMOTE" and case.variables["reconnectedAt"] == clock.now()
    [command] = outbox(aftersale, settled.id, channel="amr")
    assert command["command"] == "RECONNECT" and command["to"] == customer_no
    reply = item(aftersale, settled.id, "replyReconnect")
    assert reply.candidate_groups == ["dispatcher"]
    assert reply.due_at == at("2026-12-02T23:59:59+08:00")                     # reconnect.reply 1 WD
    do(aftersale, settled.id, "replyReconnect",
       {"replyContent": "已远程恢复供电，请按时交纳电费。", "replyMethod": "SMS"},
       bad={"replyContent": "已远程恢复供电。", "replyMethod": "WECHAT"}, match="replyMethod")
    done = answer_revisit(aftersale, clock, settled.id, {**SATISFIED, "satisfaction": "BASIC"})
    assert done.status == "completed" and done.variables["closedStatus"] == "CLOSED"


# -- D 复电 ----------------------------------------------------------------------------------------
def test_remote_reconnect_failing_every_retry_falls_back_to_an_onsite_visit(aftersale, clock):
    customer_no = customer(**plain(meter_type="28", online=False))
    order = request(aftersale, "RECONNECT", customerNo=customer_no)
    paid_at = order.variables["paidAt"]                                         # last payment in the billing system
    assert order.variables["settled"] is True and paid_at < clock.now()
    for attempt in (1, 2):
        assert aftersale.run_jobs("worker-1") == 1
        [job] = aftersale.jobs(order.id)
        assert job.attempts == attempt and "未响应远程复电指令" in job.last_error
        assert aftersale.run_jobs("worker-1") == 0                              # R3/PT10M: next try in 10 min
        clock.advance(timedelta(minutes=10))
    assert aftersale.run_jobs("worker-1") == 1
    case = aftersale.instance(order.id)
    assert aftersale.jobs(order.id) == [] and case.incidents == []
    assert case.variables["errorCode"] == "REMOTE_RECONNECT_FAILED" and case.variables["remoteAttempts"] == 3
    [error] = [e for e in aftersale.history(order.id) if e.type == "bpmn_error"]
    assert error.bpmn_id == "remoteReconnect"
    onsite = item(aftersale, order.id, "onsiteReconnect")
    assert onsite.candidate_groups == ["meteringCrew"] and onsite.due_at == paid_at + timedelta(hours=24)
    do(aftersale, order.id, "onsiteReconnect", {"reconnectedAt": clock.now().isoformat(), "meterReading": 8721.4,
                                                "notes": "采集终端离线，现场合闸恢复供电，客户在场确认。"},
       bad={"reconnectedAt": clock.now().isoformat(), "meterReading": -1}, match="meterReading")
    assert open_ids(aftersale, order.id) == ["replyReconnect"]


def test_onsite_reconnection_reminds_at_50_and_80_percent_then_supervises_and_escalates(aftersale, clock):
    customer_no = customer(**plain(meter_type="01"))
    paid_at = clock.now()
    order = aftersale.correlate("msgArrearsSettled", {"customerNo": customer_no},
                                {"customerNo": customer_no, "paidAt": paid_at.isoformat(), "serviceType": "RECONNECT"})
    assert open_ids(aftersale, order.id) == ["onsiteReconnect"]
    assert advance(aftersale, clock, timedelta(hours=12)) == 1                  # 50 %
    assert advance(aftersale, clock, timedelta(hours=7, minutes=12)) == 1       # 80 %
    reminders = outbox(aftersale, order.id, "reminder.j2")
    assert len(reminders) == 2 and "现场复电" in reminders[1]["text"] and "第2次催办" in reminders[1]["text"]
    assert advance(aftersale, clock, timedelta(hours=4, minutes=48)) == 1       # due: paidAt + PT24H
    supervise = item(aftersale, order.id, "superviseOverdue_onsiteReconnect")
    assert supervise.candidate_groups == ["supervisor"]
    assert aftersale.instance(order.id).variables["overdue"] is True
    new_due = paid_at + timedelta(hours=36)
    case = do(aftersale, order.id, "superviseOverdue_onsiteReconnect",
              {"decision": "EXTEND", "reason": "现场表计烧损，需更换后复电", "newDueAt": new_due.isoformat()},
              bad={"decision": "EXTEND", "reason": "现场表计烧损，需更换后复电"}, match="newDueAt",
              user="banzhang")
    assert case.variables["reconnectDueAt"] == new_due and case.variables["overdue"] is False
    assert case.variables["reconnectCapAt"] == paid_at + timedelta(days=3)     # Art. 69 ceiling never moves
    assert item(aftersale, order.id, "onsiteReconnect").due_at == new_due
    assert advance(aftersale, clock, timedelta(days=2)) == 1                    # T3 at paidAt + P3D
    case = aftersale.instance(order.id)
    assert case.variables["complianceBreach"] is True
    [escalation] = outbox(aftersale, order.id, "escalation_notice.j2")
    assert "现场复电" in escalation["text"] and escalation["to"] == "manager"


def test_late_arrival_fires_reminder_supervision_apology_and_escalation(aftersale, clock):
    order = request(aftersale, "REPAIR", contactPhone="13873101234", customerName="赵敏")
    do(aftersale, order.id, "acceptRepair", repair_call())
    dispatched = clock.now()
    assert advance(aftersale, clock, timedelta(minutes=5)) == 1                 # assignCrew T1 (PT5M)
    [assign_reminder] = outbox(aftersale, order.id, "reminder.j2")
    assert "接单派工" in assign_reminder["text"]
    do(aftersale, order.id, "assignCrew", {"crewId": "QX-YL-03", "estimatedArrival": LOCAL.format("10:10"),
                                           "delayReason": "TRAFFIC", "delayNote": "麓山南路拥堵。"})
    timers = {t.bpmn_id: t.due_at for t in aftersale.instance(order.id).timers}
    assert timers["tmRemind_arriveOnSite"] == dispatched + timedelta(minutes=36)
    assert timers["tmOverdue_arriveOnSite"] == dispatched + timedelta(minutes=45)
    assert timers["tmCap_arriveOnSite"] == dispatched + timedelta(minutes=60)

    assert advance(aftersale, clock, timedelta(minutes=31)) == 1                # T1 at 80 %
    reminders = outbox(aftersale, order.id, "reminder.j2")[1:]
    assert sorted(r["to"] for r in reminders) == ["QX-YL-03", "dispatcher"]
    assert all("到达现场" in r["text"] for r in reminders)
    assert open_ids(aftersale, order.id) == ["arriveOnSite"]

    assert advance(aftersale, clock, timedelta(minutes=9)) == 1                 # T2 at arriveDue
    case = aftersale.instance(order.id)
    assert case.variables["overdue"] is True
    [apology] = outbox(aftersale, order.id, "arrival_apology.j2")
    assert apology["to"] == "13873101234" and "赵敏" in apology["text"] and "10:10" in apology["text"]
    supervise = item(aftersale, order.id, "superviseOverdue_arriveOnSite")
    assert supervise.candidate_groups == ["supervisor"]
    assert open_ids(aftersale, order.id) == ["arriveOnSite", "superviseOverdue_arriveOnSite"]

    assert advance(aftersale, clock, timedelta(minutes=15)) == 1                # T3 at the GB/T 28583 ceiling
    case = aftersale.instance(order.id)
    assert case.variables["complianceBreach"] is True and case.variables["escalatedAt"] == clock.now()
    [escalation] = outbox(aftersale, order.id, "escalation_notice.j2")
    assert "到达现场" in escalation["text"] and "已触及监管时限" in escalation["text"]

    new_due = clock.now() + timedelta(minutes=20)
    case = do(aftersale, order.id, "superviseOverdue_arriveOnSite",
              {"decision": "EXTEND", "reason": "暴雨导致道路积水，同意延长20分钟", "newDueAt": new_due.isoformat()},
              bad={"decision": "REASSIGN", "reason": "改派其他班组"}, match="newAssignee", user="qiangxiu_banzhang")
    assert case.variables["arriveDue"] == new_due and case.variables["overdue"] is False
    assert case.variables["arriveCap"] == dispatched + timedelta(minutes=60)   # capIsCeiling: unchanged
    assert item(aftersale, order.id, "arriveOnSite").due_at == new_due          # the work item follows
    [notice] = outbox(aftersale, order.id, "supervise_notice.j2")
    assert "延期至" in notice["text"]

    clock.advance(timedelta(minutes=5))
    case = do(aftersale, order.id, "arriveOnSite",
              {"departAt": LOCAL.format("09:12"), "arrivedAt": clock.now().isoformat(), "delayReason": "WEATHER",
               "delayNote": "暴雨，道路积水绕行。"},
              bad={"departAt": LOCAL.format("09:12"), "arrivedAt": clock.now().isoformat(), "delayReason": "WEATHER"},
              match="delayNote")
    assert case.variables["arrivedLate"] is False                               # within the extension
    assert open_ids(aftersale, order.id) == ["repairAndRestore"]


def test_late_restoration_sends_a_progress_update_to_the_customer(aftersale, clock):
    order = request(aftersale, "REPAIR", customerName="周杰")
    do(aftersale, order.id, "acceptRepair", repair_call(urbanRuralFlag="02"))
    do(aftersale, order.id, "assignCrew", {"crewId": "QX-WC-01", "estimatedArrival": LOCAL.format("10:00")})
    clock.advance(timedelta(minutes=50))
    do(aftersale, order.id, "arriveOnSite", {"departAt": LOCAL.format("09:10"), "arrivedAt": LOCAL.format("09:50")})
    assert item(aftersale, order.id, "repairAndRestore").due_at == at(LOCAL.format("13:50"))   # RURAL PT4H
    advance(aftersale, clock, timedelta(hours=4))
    [update] = outbox(aftersale, order.id, "progress_update.j2")
    assert update["to"] == "13873101234" and "周杰" in update["text"]
    assert "superviseOverdue_repairAndRestore" in open_ids(aftersale, order.id)


# -- B 电费查询 ------------------------------------------------------------------------------------
def test_billing_query_not_verified_or_resolved_at_once_ends_without_revisit(aftersale):
    customer_no = customer(**plain())
    stranger = request(aftersale, "BILL_QUERY", contactPhone="13800001111")
    verify = item(aftersale, stranger.id, "verifyIdentity")
    assert verify.candidate_groups == ["agent"]
    done = do(aftersale, stranger.id, "verifyIdentity", {"customerNo": customer_no, "verified": False},
              bad={"customerNo": "430012345", "verified": False}, match="customerNo")
    assert done.status == "completed" and "fetchBilling" not in handled(aftersale, stranger.id)

    known = request(aftersale, "BILL_QUERY", customerNo=customer_no)
    case = do(aftersale, known.id, "verifyIdentity", {"customerNo": customer_no, "verifyMethod": "NAME_PHONE4",
                                                      "verified": True},
              bad={"customerNo": customer_no, "verified": True}, match="verifyMethod")
    bills = case.variables["bills"]
    assert len(bills) == 12 and [b["period"] for b in bills[:2]] == ["2026-11", "2026-10"]
    assert all(b["paid"] and b["arrears"] == 0 for b in bills)
    assert len(case.variables["deductions"]) == 12
    done = do(aftersale, known.id, "explainBill", {"resolved": True, "explanation": "已说明阶梯电价，客户认可。"},
              bad={"resolved": False}, match="disputeType")
    assert done.status == "completed" and done.variables["closedStatus"] == "CLOSED_NO_REVISIT"


def test_billing_error_is_refunded_and_a_revisit_complaint_starts_complaint_handling(aftersale, clock):
    customer_no = customer(**plain(category="RES"))
    order = request(aftersale, "BILL_QUERY", customerNo=customer_no, customerName="刘洋",
                    contactPhone="13973100001", elecAddress="长沙市开福区芙蓉中路 88 号")
    case = do(aftersale, order.id, "verifyIdentity", {"customerNo": customer_no, "verifyMethod": "CERT_NO",
                                                      "verified": True})
    november = case.variables["bills"][0]
    case = do(aftersale, order.id, "explainBill",
              {"resolved": False, "disputeType": "ABNORMAL_KWH", "explanation": "客户认为 11 月电量明显偏高。"})
    assert case.variables["billingDueAt"] == at("2026-12-08T23:59:59+08:00")  # meter.dataAnomaly 5 WD
    assert case.variables["billingRemindAt"] == at("2026-12-04T23:59:59+08:00")
    assert case.variables["billingCapAt"] == at("2026-12-09T23:59:59+08:00")
    investigate = item(aftersale, order.id, "verifyMeterData")
    assert investigate.candidate_groups == ["accountManager"]
    assert investigate.due_at == at("2026-12-08T23:59:59+08:00")
    correct = november["kWh"] - 120
    case = do(aftersale, order.id, "verifyMeterData",
              {"findings": "11 月抄表员误抄示数，多计 120 千瓦时，电能表运行正常。", "errorConfirmed": True,
               "corrections": [{"period": "2026-11", "correctKwh": correct}]},
              bad={"findings": "误抄", "errorConfirmed": True, "corrections": [{"period": "2026-13",
                                                                               "correctKwh": correct}]},
              match="corrections")
    expected = (Decimal(-120) * november["amount"] / november["kWh"]).quantize(Decimal("0.01"))
    assert case.variables["adjustment"] == expected and case.variables["adjustmentKind"] == "REFUND"
    assert item(aftersale, order.id, "replyBilling").candidate_groups == ["accountManager"]
    do(aftersale, order.id, "replyBilling",
       {"replyContent": f"经核查 11 月电量误抄，应退电费 {-expected} 元，将在 12 月电费中抵扣。",
        "replyMethod": "PHONE"},
       bad={"replyContent": "   ", "replyMethod": "PHONE"}, match="replyContent")

    done = answer_revisit(aftersale, clock, order.id,
                          {"reached": True, "resolved": False, "satisfaction": "UNSATISFIED", "wantsToComplain": True,
                           "comment": "退费太慢，要求投诉抄表员。"})
    assert done.status == "completed" and done.variables["closedStatus"] == "COMPLAINT"
    [sent] = [e.data for e in aftersale.history(order.id) if e.type == "message_sent"]
    assert sent["message"] == "msgComplaint"
    assert sent["data"] == {"channel": "REVISIT", "sourceOrderNo": order.variables["workOrderNo"],
                            "customerNo": customer_no, "customerName": "刘洋", "contactPhone": "13973100001",
                            "elecAddress": "长沙市开福区芙蓉中路 88 号", "revisitComment": "退费太慢，要求投诉抄表员。"}
    [complaint] = aftersale.instances(key="complaint_handling")
    assert complaint.status == "running"
    assert complaint.variables["sourceOrderNo"] == order.variables["workOrderNo"]
    assert complaint.variables["channel"] == "REVISIT" and complaint.variables["customerName"] == "刘洋"


# -- C 过户 / 更名 -----------------------------------------------------------------------------------
def name_change(customer_no: str, **changes) -> dict:
    form = {"changeType": "TRANSFER", "customerNo": customer_no, "newCustomerName": "李娟", "newCertType": "01",
            "newCertNo": "430104199003077428", "proofDocs": ["PROPERTY_PROOF", "ID_PROOF"],
            "newContactPhone": "0731-84561234", "addressUnchanged": True, "capacityUnchanged": True,
            "categoryUnchanged": True}
    form.update(changes)
    return form


def test_transfer_with_arrears_is_settled_read_approved_and_the_account_changed(aftersale, clock):
    customer_no = customer(status="ACTIVE", arrears_cut=False, unpaid_bills=1, category="RES")
    order = request(aftersale, "NAME_CHANGE", customerNo=customer_no, channel="COUNTER")
    accept = item(aftersale, order.id, "acceptNameChange")
    assert accept.candidate_groups == ["counterClerk"]
    refused(aftersale, accept, name_change(customer_no, proofDocs=[]), "proofDocs")
    refused(aftersale, accept, name_change(customer_no, addressUnchanged=False), "addressUnchanged")
    case = aftersale.complete(accept.id, name_change(customer_no), user="counter01")
    assert case.variables["preconditionsOk"] is True and case.variables["arrears"] > 0
    settle = item(aftersale, order.id, "settleArrears")
    assert settle.candidate_groups == ["cashier"] and settle.due_at is None     # customer time: no SLA
    amount = float(case.variables["amountDue"])

    clock.set(at("2026-12-03T14:20:00+08:00"))
    case = do(aftersale, order.id, "settleArrears",
              {"paidAmount": amount, "paymentChannel": "0101", "paidAt": clock.now().isoformat(),
               "receiptNo": "PAY202612031420001"},
              bad={"paidAmount": 0, "paymentChannel": "0101", "paidAt": clock.now().isoformat()}, match="paidAmount")
    due = at("2026-12-10T23:59:59+08:00")                                       # 5 WD from the settlement
    assert case.variables["nameChangeDueAt"] == due
    reading = item(aftersale, order.id, "finalReading")
    assert reading.candidate_groups == ["meteringCrew"] and reading.due_at == due
    do(aftersale, order.id, "finalReading", {"reading": 99999.9, "readAt": clock.now().isoformat(),
                                             "meterAssetNo": "3340001234567"},
       bad={"reading": "12345.6", "readAt": clock.now().isoformat()}, match="reading")
    approve = item(aftersale, order.id, "approveChange")
    assert approve.candidate_groups == ["supervisor"] and approve.due_at == due
    case = do(aftersale, order.id, "approveChange", {"approved": True, "comment": "材料齐全，同意过户。"},
              bad={"approved": False}, match="rejectReason", user="banzhang")
    assert case.variables["customerName"] == "李娟" and case.variables["contactPhone"] == "0731-84561234"
    [change] = outbox(aftersale, order.id, channel="marketing")
    assert change["newCustomerName"] == "李娟" and change["customerNo"] == customer_no
    done = answer_revisit(aftersale, clock, order.id, SATISFIED)
    assert done.status == "completed" and done.variables["closedStatus"] == "CLOSED"


def test_name_change_is_rejected_for_a_bad_id_check_digit_or_by_the_approver(aftersale):
    customer_no = customer(**plain())
    bad_id = request(aftersale, "NAME_CHANGE", customerNo=customer_no)
    done = do(aftersale, bad_id.id, "acceptNameChange", name_change(customer_no, newCertNo="430104199003077425"),
              bad=name_change(customer_no, newCertNo="43010419900307742"), match="newCertNo")
    assert done.status == "completed" and done.variables["preconditionsOk"] is False
    [sms] = outbox(aftersale, bad_id.id, "name_change_reject.j2")
    assert sms["to"] == "0731-84561234" and "校验位错误" in sms["text"] and "过户" in sms["text"]

    company = request(aftersale, "NAME_CHANGE", customerNo=customer_no)
    do(aftersale, company.id, "acceptNameChange",
       name_change(customer_no, changeType="RENAME", newCustomerName="长沙湘江食品有限公司", newCertType="04",
                   newCertNo="91430100MA4L0XXX1K", proofDocs=["LICENSE_CHANGE"]),
       bad=name_change(customer_no, newCertType="04", newCertNo="91430100MA4L0XXX1"), match="newCertNo")
    do(aftersale, company.id, "finalReading", {"reading": 23456.7, "readAt": "2026-12-01T10:30:00+08:00"})
    done = do(aftersale, company.id, "approveChange", {"approved": False, "rejectReason": "营业执照与申请户名不一致"})
    assert done.status == "completed" and done.variables["closedStatus"] == "CLOSED_NO_REVISIT"
    [sms] = outbox(aftersale, company.id, "name_change_reject.j2")
    assert "营业执照与申请户名不一致" in sms["text"] and "更名" in sms["text"]


# -- F 电能表校验: REOPEN → re-handled once, then 督办 -----------------------------------------------------
UNSATISFIED = {"reached": True, "resolved": False, "satisfaction": "UNSATISFIED", "comment": "仍认为电表走得快。"}


def test_meter_check_reopened_is_handled_again_once_then_supervised(aftersale, clock):
    customer_no = customer(**plain())
    order = request(aftersale, "METER_CHECK", customerNo=customer_no, meterCheckKind="CALIBRATION",
                    customerName="孙丽", contactPhone="15873109876")
    assert order.variables["meterCheckSlaKey"] == "meter.calibration"
    due = at("2026-12-08T23:59:59+08:00")                                       # 5 WD from Tue 12-01
    calibrate = item(aftersale, order.id, "meterCalibration")
    assert calibrate.candidate_groups == ["meteringCrew"] and calibrate.due_at == due
    do(aftersale, order.id, "meterCalibration",
       {"calibrationResult": "PASS", "errorPct": -0.4, "meterAssetNo": "3340001234567",
        "calibratedAt": "2026-12-01T15:00:00+08:00"},
       bad={"calibrationResult": "PASS", "errorPct": 120}, match="errorPct")
    answer = item(aftersale, order.id, "replyMeterCheck")
    assert answer.candidate_groups == ["accountManager"] and answer.due_at == due   # same instants as F2
    do(aftersale, order.id, "replyMeterCheck", {"replyContent": "电能表校验合格（误差 -0.4%），计量准确。",
                                                "replyMethod": "PHONE"},
       bad={"replyMethod": "PHONE"}, match="replyContent")
    case = answer_revisit(aftersale, clock, order.id, UNSATISFIED)
    assert case.variables["reopenCount"] == 1 and case.variables["revisitOutcome"] is None
    again = item(aftersale, order.id, "meterCalibration")                       # the same branch once more
    assert again.due_at == at("2026-12-09T23:59:59+08:00")                      # a fresh clock from the re-entry
    do(aftersale, order.id, "meterCalibration", {"calibrationResult": "PASS", "errorPct": 0.1})
    do(aftersale, order.id, "replyMeterCheck", {"replyContent": "复校合格，已当面向客户解释。"})
    answer_revisit(aftersale, clock, order.id, UNSATISFIED)
    reopen = item(aftersale, order.id, "superviseReopen")
    assert reopen.candidate_groups == ["supervisor"]
    done = do(aftersale, order.id, "superviseReopen", {"reopenAction": "班长上门，第三方检定机构复检。"},
              bad={"reopenAction": ""}, match="reopenAction", user="banzhang")
    assert done.status == "completed" and done.variables["closedStatus"] == "SUPERVISED"
    assert handled(aftersale, order.id).count("computeMeterCheckDue") == 2


def test_meter_anomaly_gets_the_shorter_limit(aftersale):
    order = request(aftersale, "METER_CHECK", customerNo=customer(**plain()), meterCheckKind="ANOMALY")
    assert order.variables["meterCheckSlaKey"] == "meter.anomalyOrder"
    assert item(aftersale, order.id, "meterCalibration").due_at == at("2026-12-07T23:59:59+08:00")  # 4 WD


# -- G 电器损坏 / H 其他: working days across a weekend ---------------------------------------------------
def test_appliance_damage_reply_due_counts_working_days_across_the_weekend(aftersale, clock):
    clock.set(at("2026-12-04T10:00:00+08:00"))                                  # a Friday
    order = request(aftersale, "APPLIANCE_DAMAGE", customerNo=customer(**plain()), customerName="吴静")
    verify = item(aftersale, order.id, "onsiteVerification")
    assert verify.candidate_groups == ["repairCrew"] and verify.due_at == clock.now() + timedelta(hours=24)
    clock.set(at("2026-12-04T17:30:00+08:00"))
    do(aftersale, order.id, "onsiteVerification",
       {"damagedItems": [{"name": "冰箱", "brandModel": "海尔 BCD-470", "quantity": 1, "claimedAmount": 3200}],
        "causeIsUtility": False, "compensation": 0, "notes": "户内插座线路老化短路，非供电原因。"},
       bad={"damagedItems": [{"name": "冰箱", "quantity": 1}], "causeIsUtility": False, "compensation": 800},
       match="compensation")
    reply = item(aftersale, order.id, "replyApplianceDamage")
    assert reply.candidate_groups == ["accountManager"]
    assert reply.due_at == at("2026-12-07T23:59:59+08:00")                      # 1 WD: Monday, not Saturday
    do(aftersale, order.id, "replyApplianceDamage",
       {"replyContent": "经现场核实为户内线路老化所致，不属于供电原因，已建议更换线路。", "replyMethod": "ONSITE"},
       bad={"replyContent": "不属于供电原因。", "replyMethod": "EMAIL"}, match="replyMethod")
    done = answer_revisit(aftersale, clock, order.id, {"reached": True, "resolved": True, "satisfaction": "BASIC"})
    assert done.status == "completed" and done.variables["closedStatus"] == "CLOSED"


def test_other_request_timers_follow_working_days_and_unknown_types_take_the_default(aftersale, clock):
    clock.set(at("2026-12-04T16:00:00+08:00"))                                  # a Friday
    order = request(aftersale, "E_BILL_SUBSCRIPTION", customerNo=customer(**plain()))
    variables = order.variables
    assert variables["otherDueAt"] == at("2026-12-11T23:59:59+08:00")          # 5 WD: Mon..Fri next week
    assert variables["otherRemindAt"] == at("2026-12-09T23:59:59+08:00")       # due − reminder.lead (2 WD)
    assert variables["otherCapAt"] == at("2026-12-14T23:59:59+08:00")          # due + 1 WD (no ceiling)
    handle = item(aftersale, order.id, "handleOtherRequest")
    assert handle.candidate_groups == ["accountManager"] and handle.due_at == variables["otherDueAt"]
    assert advance(aftersale, clock, timedelta(days=2)) == 0                    # the weekend: nothing fires
    clock.set(at("2026-12-10T00:00:00+08:00"))
    assert aftersale.run_due() == 1
    assert "办理并答复" in outbox(aftersale, order.id, "reminder.j2")[0]["text"]
    clock.set(at("2026-12-12T00:00:00+08:00"))
    assert aftersale.run_due() == 1
    assert "superviseOverdue_handleOtherRequest" in open_ids(aftersale, order.id)
    clock.set(at("2026-12-15T00:00:00+08:00"))
    assert aftersale.run_due() == 1
    assert aftersale.instance(order.id).variables["complianceBreach"] is True
    do(aftersale, order.id, "superviseOverdue_handleOtherRequest",
       {"decision": "REASSIGN", "reason": "原客户经理休假", "newAssignee": "chenmin"},
       bad={"decision": "POSTPONE", "reason": "原客户经理休假"}, match="decision")
    assert aftersale.instance(order.id).variables["handler"] == "chenmin"
    handle = item(aftersale, order.id, "handleOtherRequest")                   # 改派: the late task itself moves
    assert (handle.assignee, handle.candidate_groups) == ("chenmin", ["accountManager"])
    [moved] = [e for e in aftersale.history(order.id) if e.type == "task_reassigned"]
    assert (moved.task_id, moved.data["from"], moved.data["to"], moved.data["requested_by"]) == (
        handle.id, None, "chenmin", "applySupervision_handleOtherRequest")
    with pytest.raises(Refused, match="assigned to chenmin"):
        aftersale.complete(handle.id, {"result": "已办理。"}, user="tester")
    done = do(aftersale, order.id, "handleOtherRequest", {"result": "已为客户办理电子账单订阅，次月起推送至网上国网。"},
              bad={"result": ""}, match="result", user="chenmin")
    assert open_ids(aftersale, done.id) == []
    done = answer_revisit(aftersale, clock, order.id, {"reached": False},
                          bad={"reached": "否"}, match="reached")
    assert open_ids(aftersale, order.id) == []                                  # retry in PT2H


# -- E 用电检查 via the monthly inspection plan --------------------------------------------------------
def onsite(finding: str, **extra) -> dict:
    form = {"inspectorIds": ["zhangwei", "liqiang"], "certificateShown": True, "finding": finding,
            "customerRepSigned": True}
    form.update(extra)
    return form


def test_monthly_plan_starts_an_inspection_with_hazard_violation_and_theft_cases(aftersale, clock):
    targets = customers(4, **plain())
    clock.set(at("2027-01-01T09:00:00+08:00"))                                  # one R/P1M period after deployment
    assert aftersale.run_due() >= 1
    [plan] = aftersale.instances(key="aftersale_inspection_plan")
    assert plan.status == "completed"
    [order] = [i for i in aftersale.instances(key="aftersale_service") if i.variables["serviceType"] == "INSPECTION"]
    number = order.variables["workOrderNo"]
    assert number.startswith("20270101") and order.variables["policyVersion"] == "2023-12"
    planning = item(aftersale, order.id, "planInspection")
    assert planning.candidate_groups == ["supervisor"]
    do(aftersale, order.id, "planInspection",
       {"inspectors": ["zhangwei", "liqiang"], "targetCustomers": [{"customerNo": c} for c in targets],
        "items": ["METERING", "CAPACITY", "SAFETY"], "plannedDate": "2027-01-05"},
       bad={"inspectors": ["zhangwei"], "targetCustomers": [{"customerNo": targets[0]}], "items": ["SAFETY"],
            "plannedDate": "2027-01-05"}, match="inspectors", user="banzhang")
    visits = [t for t in aftersale.tasks(instance_id=order.id) if t.bpmn_id == "onsiteInspection"]
    assert len(visits) == 4 and all(t.candidate_groups == ["usageInspector"] for t in visits)

    normal, hazard, violation, theft = visits
    aftersale.complete(normal.id, onsite("NORMAL"), user="zhangwei")
    refused(aftersale, hazard, onsite("HAZARD", certificateShown=False), "certificateShown")
    aftersale.complete(hazard.id, onsite("HAZARD", findings=["SEALS"]), user="zhangwei")
    do(aftersale, order.id, "issueResultNotice",
       {"noticeNo": "YDJC-2027-0001", "hazardDescription": "配电房电缆沟积水，存在触电隐患，须排水并加装盖板。",
        "rectifyDeadline": "2027-01-08", "customerSigned": True},
       bad={"hazardDescription": "电缆沟积水", "rectifyDeadline": "2027/01/08"}, match="rectifyDeadline")
    [wait] = [t for t in aftersale.instance(order.id).timers if t.bpmn_id == "waitRectifyDeadline"]
    assert wait.due_at == at("2027-01-08T23:59:59+08:00")                     # end of the deadline day

    # Each customer's case is taken to its end before the next one starts: the inner variables (finding,
    # settlement, supplySuspended …) are instance-wide, so interleaved parallel cases would read each other's.
    aftersale.complete(violation.id, onsite("VIOLATION", findings=["OVER_CAPACITY"],
                                            evidence=[{"fileId": "f-0001", "fileName": "私增变压器.jpg"}]))
    case = do(aftersale, order.id, "issueViolationNotice",
              {"noticeNo": "WY-2027-0001", "violationType": "OVER_CAPACITY",
               "violationDetail": "合同容量 315 千伏安，现场私增一台 200 千伏安变压器运行。"},
              bad={"violationType": "超容量", "violationDetail": "私增容量"}, match="violationType")
    [bill] = outbox(aftersale, order.id, channel="marketing")
    offender = bill["customerNo"]
    assert offender in targets and bill["backBillingAmount"] == 0               # 超容量: 50 ¥/kW, no back-bill
    assert bill["penaltyAmount"] == Decimal(sim.account(offender).excess_kw * 50)
    assert case.variables["backBillingRule"] == "OVER_CAPACITY"
    settle = item(aftersale, order.id, "handleViolation")
    assert settle.candidate_groups == ["accountManager"]
    do(aftersale, order.id, "handleViolation", {"settlement": "REFUSED", "notes": "客户拒绝缴纳违约使用电费"},
       bad={"settlement": "PAID"}, match="paidAmount", user="kehujingli")
    [report] = outbox(aftersale, order.id, "authority_report.j2")
    assert report["to"] == "电力管理部门" and offender in report["text"] and "违约用电拒不处理" in report["text"]

    refused(aftersale, theft, onsite("THEFT", findings=["THEFT"]), "evidence")
    aftersale.complete(theft.id, onsite("THEFT", findings=["UNSEALING", "THEFT"],
                                        evidence=[{"fileId": "f-0002", "fileName": "绕越计量接线.jpg"}]))
    [suspend] = [m for m in outbox(aftersale, order.id, channel="amr") if m["command"] == "SUSPEND"]
    thief = suspend["to"]
    assert thief in targets and thief != offender
    [bill] = [m for m in outbox(aftersale, order.id, channel="marketing") if m["customerNo"] == thief]
    assert bill["penaltyAmount"] == bill["backBillingAmount"] * 3                # theft: back-bill ×3
    do(aftersale, order.id, "handleViolation",
       {"settlement": "PAID", "paidAmount": float(bill["backBillingAmount"] + bill["penaltyAmount"]),
        "notes": "客户已缴纳追补电费和违约使用电费"}, user="kehujingli")
    [reconnect] = [i for i in aftersale.instances(key="aftersale_service")
                   if i.variables["serviceType"] == "RECONNECT"]
    assert reconnect.variables["customerNo"] == thief and reconnect.variables["sourceOrderNo"] == number
    assert reconnect.variables["workOrderNo"] != number and reconnect.variables["settled"] is True

    assert open_ids(aftersale, order.id) == []
    clock.set(at("2027-01-09T00:00:00+08:00"))
    aftersale.run_due()
    done = do(aftersale, order.id, "onsiteInspection", onsite("NORMAL"))       # re-inspection after the deadline
    assert done.status == "completed" and done.variables["closedStatus"] == "CLOSED_NO_REVISIT"


# -- 满意度调查 (§14.10) ------------------------------------------------------------------------------
def test_monthly_survey_samples_last_months_closed_orders_and_aggregates_the_answers(sqlite_engine, clock):
    engine = sqlite_engine
    numbers = []
    for n in range(41):                                                         # 5 % of 41 → 3 orders
        clock.set(at("2026-12-02T09:00:00+08:00") + timedelta(minutes=10 * n))
        order = request(engine, "BILL_QUERY", contactPhone=f"1387310{n:04d}", customerName="客户")
        done = do(engine, order.id, "verifyIdentity", {"customerNo": customer(**plain()), "verified": False})
        assert done.status == "completed"
        numbers.append(done.variables["workOrderNo"])
    clock.set(at("2027-01-01T09:00:00+08:00"))
    engine.run_due()
    [survey] = engine.instances(key="aftersale_satisfaction_survey")
    assert survey.variables["surveyPeriod"] == "2026-12" and survey.variables["closedOrderCount"] == 41
    sampled = survey.variables["sampledOrders"]
    assert len(sampled) == 3 and {s["workOrderNo"] for s in sampled} <= set(numbers)
    calls = [t for t in engine.tasks(instance_id=survey.id) if t.bpmn_id == "surveyCall"]
    assert len(calls) == 3 and all(t.candidate_groups == ["revisitAgent"] for t in calls)
    refused(engine, calls[0], {"reached": True, "resolved": True}, "satisfaction")
    engine.complete(calls[0].id, {"reached": True, "resolved": True, "satisfaction": "SATISFIED"})
    engine.complete(calls[1].id, {"reached": True, "resolved": False, "satisfaction": "UNSATISFIED",
                                  "comment": "抄表时间不固定。"})
    done = engine.complete(calls[2].id, {"reached": False})
    assert done.status == "completed"
    assert (done.variables["surveyedCount"], done.variables["reachedCount"]) == (3, 2)
    assert done.variables["satisfactionRate"] == 0.5


# -- computeDue contract (handlers/timing.py), shared with presale / midsale -------------------------------
def _context(bpmn_id: str, now: datetime, **properties):
    from engine.expressions import ExpressionEvaluator
    from handlers.registry import HandlerContext

    return HandlerContext(instance_id="i-1", business_key=None, task_id="t-1", bpmn_id=bpmn_id, topic="computeDue",
                          now=now, idempotency_key="i-1:t-1", properties=properties,
                          evaluate=ExpressionEvaluator(lambda: now).evaluate)


def test_compute_due_short_working_day_budget_reminds_at_50_and_80_percent():
    from handlers.timing import compute_due

    friday = at("2026-12-04T15:59:59+08:00")
    result = compute_due({"policyVersion": "2023-12"}, _context("computeApplianceReplyDue", friday,
                                                                 policyKey="appliance.reply"))
    due = at("2026-12-07T23:59:59+08:00")                                       # Monday: 1 WD
    assert result["applianceReplyDueAt"] == due and result["overdue"] is False
    assert result["applianceReplyRemindAt"] == friday + (due - friday) / 2     # clamp rule: 50 % …
    assert result["applianceReplyRemind80At"] == friday + (due - friday) * 4 / 5  # … and 80 %
    assert result["applianceReplyCapAt"] == at("2026-12-08T23:59:59+08:00")    # due + 1 WD
    assert result["applianceReplyCapIsCeiling"] is False and "policyVersion" not in result


def test_compute_due_wall_clock_limit_from_a_start_variable_with_its_ceiling_and_own_names():
    from handlers.timing import compute_due

    now = at("2026-12-01T12:00:00+08:00")
    result = compute_due({"paidAt": "2026-12-01T08:00:00+08:00"},
                         _context("computeReconnectDue", now, policyKey="${'reconnect.' + 'afterPayment'}",
                                  start="paidAt", dueVariable="reconnectDueAt"))
    assert result["policyVersion"] == "2023-12" and result["reconnectSlaKey"] == "reconnect.afterPayment"
    assert result["reconnectDueAt"] == at("2026-12-02T08:00:00+08:00")         # paidAt + PT24H
    assert result["reconnectRemindAt"] == at("2026-12-01T20:00:00+08:00")      # 50 %
    assert result["reconnectRemind80At"] == at("2026-12-02T03:12:00+08:00")    # 80 %
    assert result["reconnectCapAt"] == at("2026-12-04T08:00:00+08:00")         # ceiling P3D (Art. 69)
    assert result["reconnectCapIsCeiling"] is True
    with pytest.raises(ValueError, match="policyKey"):
        compute_due({}, _context("computeSomethingDue", now))
