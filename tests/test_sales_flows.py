"""售前 presale_plan and 售中 midsale_connection driven through the Engine API.

Every gateway branch of both processes, each form's validation, the working-day SLA timers T1/T2/T3 on the
simulated clock across a weekend and the 2026 国庆 holiday (Oct 1–7, make-up days Sep 20 and Oct 10; 中秋
is Sep 25), customer time kept out of the SLA ledger, and the presale → midsale handover by message. The
process files and handlers are the shipped ones. Tests taking ``engine`` run on SQLite and PostgreSQL; the
long end-to-end scenarios take ``lite`` (SQLite only).
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta

import pytest
from conftest import ROOT, SHANGHAI, TESTS

from engine.errors import InvalidInput, NotFound
from engine.sla import default_calendar

PROCESSES = [ROOT / "processes" / name for name in
             ("revisit.bpmn", "complaint_handling.bpmn", "presale_plan.bpmn", "midsale_connection.bpmn")]
CUSTOMER_MESSAGES = ("msgDesignSubmitted", "msgMidInspectionRequested", "msgRectified", "msgCompletionReported")
CAL = default_calendar()


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=SHANGHAI)


@pytest.fixture
def lite(sqlite_url, clock):
    """An engine on SQLite only, for the long scenarios."""
    from engine.api import Engine
    from engine.forms import FORMS_DIR, FormRegistry

    eng = Engine(sqlite_url, clock=clock, forms=FormRegistry([TESTS / "forms", FORMS_DIR]))
    yield eng
    eng.close()


# -- case data (what the customer and the clerk say at the counter) ---------------------------------
RESIDENT = {"channel": "COUNTER", "requestType": "APPLY", "customerName": "李秀英", "contactName": "李秀英",
            "contactPhone": "13807310001", "elecAddress": "长沙市岳麓区桐梓坡路168号3栋502室", "urbanRuralFlag": "01",
            "businessType": "LV_RES_NEW", "voltageLevel": "AC02202", "newCapacityKva": 8,
            "elecCategory": "RESIDENTIAL", "description": "新购商品房，申请一户一表居民用电。"}
SHOP = {"channel": "APP_WSGW", "requestType": "APPLY", "customerName": "长沙市芙蓉区福满多超市",
        "contactName": "周杰", "contactPhone": "13974812345", "elecAddress": "长沙市芙蓉区五一大道336号一楼门面",
        "urbanRuralFlag": "01", "businessType": "LV_NONRES_NEW", "voltageLevel": "AC03802", "newCapacityKva": 80,
        "elecCategory": "INDUSTRY_COMMERCE"}
MALL = {**SHOP, "customerName": "长沙星沙万象商业广场有限公司", "contactName": "吴静", "contactPhone": "0731-84567890",
        "elecAddress": "长沙县星沙大道18号万象商业广场", "newCapacityKva": 1300}
FACTORY = {"channel": "95598_PHONE", "requestType": "APPLY", "customerName": "湖南湘江食品有限公司",
           "contactName": "刘洋", "contactPhone": "0731-88123456",
           "elecAddress": "长沙市望城区铜官循环经济工业园金桥路9号",
           "urbanRuralFlag": "02", "businessType": "HV_NEW", "voltageLevel": "AC00101", "newCapacityKva": 630,
           "elecCategory": "INDUSTRY_COMMERCE"}
PRECISION = {"channel": "COUNTER", "requestType": "APPLY", "customerName": "湖南星沙精密制造有限公司",
             "contactName": "王芳", "contactPhone": "0731-84561234", "elecAddress": "长沙县星沙经济开发区漓湘路88号",
             "urbanRuralFlag": "01", "businessType": "HV_NEW", "voltageLevel": "AC00101", "powerSourceCount": 2,
             "newCapacityKva": 2500, "elecCategory": "INDUSTRY_COMMERCE", "importanceLevel": "03",
             "description": "新建厂房用电，精密加工车间要求双电源。"}
CONSULT = {"channel": "95598_PHONE", "requestType": "CONSULT", "contactName": "赵敏", "contactPhone": "13787001234",
           "consultTopic": "CONNECTION", "description": "想了解新建厂房申请高压用电要准备哪些资料、多久能通电。"}
ID_CARD = "430104199003157715"        # R1 pattern (check digit not part of the schema rule)
LICENCE = "91430100MA4L0H3P1A"        # R2 统一社会信用代码


def answers(clock, **override):
    """The operators' complete, valid answers for every form of both flows (by form key)."""

    def now():
        return clock.now().isoformat()

    def today():
        return clock.now().date().isoformat()

    def review(v):
        residential = v.get("elecCategory") == "RESIDENTIAL"
        data = {"certType": "01" if residential else "04", "certNo": ID_CARD if residential else LICENCE,
                "propertyProofProvided": True, "acceptWithIdOnly": False, "missingItems": [], "surveyByClerk": False}
        if not residential:
            data.update(licenceProvided=True, equipmentListProvided=True)
        return data

    def survey(v):
        voltage = v["voltageLevel"] if v["voltageLevel"] != "TBD" else (
            "AC03802" if v["customerClass"] in ("LV_RES", "LV_NONRES") else "AC00101")
        return {"surveyedAt": now(), "approvedCategory": v["elecCategory"], "approvedVoltage": voltage,
                "approvedCapacityKva": v["newCapacityKva"], "accessPointInfo": "10kV桐梓坡线#12杆T接",
                "receivingPointInfo": "客户配电房", "meteringPointInfo": "计量点设于客户受电侧",
                "needGridProject": False, "photos": [f"survey/{v['applicationNo']}-1.jpg"], "canSupply": True}

    def plan(v):
        hv = v["customerClass"] not in ("LV_RES", "LV_NONRES")
        capacity = v.get("approvedCapacityKva") or v.get("totalCapacityKva")
        sources = [{"sourceNo": "1", "nature": "10", "capacityKva": capacity,
                    "sourcePointInfo": "110kV星沙变10kV922线"}]
        if v.get("powerSourceCount") == 2:
            sources.append({"sourceNo": "2", "nature": "20", "capacityKva": capacity,
                            "sourcePointInfo": "110kV黄花变10kV915线"})
        price = "IC_TWO_PART" if hv else ("RESIDENTIAL" if v["customerClass"] == "LV_RES" else "IC_SINGLE")
        data = {"supplyVoltage": v["approvedVoltage"], "powerSources": sources, "meteringMode": "1" if hv else "3",
                "priceType": price,
                "meterSpec": "3" if hv else "1", "meterAccuracy": "0.5S" if hv else "2", "propertyBoundary": "01"}
        if hv:
            data["ctRatio"] = "200/5"
        if v.get("needGridProject"):
            data["gridPlannedFinish"] = (clock.now() + timedelta(days=40)).date().isoformat()
        return data

    def install(v):
        data = {"meterAssetNo": "3310001234567890", "meterType": "01", "wiring": "3", "initialReading": 0,
                "sealNos": ["HN-2026-000123", "HN-2026-000124"], "connectedAt": now()}
        if v.get("meteringMode") in ("1", "2"):
            data["ctRatio"] = v.get("ctRatio") or "200/5"
        return data

    table = {
        "answerConsult": lambda v: {"answerText": "已告知客户高压新装所需资料和办理流程，详细清单以短信发送。",
                                    "knowledgeRef": "KB-YK-0012", "answeredNow": True},
        "handleTransferredConsult": lambda v: {"answerText": "客户经理已电话说明高压新装流程、资料及各环节时限。",
                                               "replyMethod": "PHONE", "repliedAt": now()},
        "reviewMaterials": review,
        "dispatchSurvey": lambda v: {"surveyorId": "zhangqiang",
                                     "appointmentAt": (clock.now() + timedelta(hours=3)).isoformat()},
        "fieldSurvey": survey,
        "explainNoSupply": lambda v: {"explanation": "该地块所在10kV线路已满载，需待新建110kV变电站投运后供电。",
                                      "deliveryMethod": "IN_PERSON", "deliveredAt": now()},
        "draftPlan": plan,
        "jointReviewPlan": lambda v: {"approved": True, "reviewComment": "同意按双电源方案供电"},
        "replyPlan": lambda v: {"replyMethod": "IN_PERSON", "planReplyDate": today(), "customerSigned": True,
                                "customerSignDate": today(), "customerAccepts": True},
        "superviseOverdue": lambda v: {"decision": "EXTEND", "reason": "客户要求改期，延期两天",
                                       "newDueAt": (clock.now() + timedelta(days=2)).isoformat()},
        "superviseReopen": lambda v: {"reopenAction": "班长已致电客户道歉并安排客户经理上门说明"},
        "collectFee": lambda v: {"paidAmount": v["feeTotal"], "paymentChannel": "0104", "receiptNo": "PJ-2026-088123",
                                 "paidAt": now()},
        "handlePlanExpiry": lambda v: {"decision": "EXTEND", "reason": "客户资金到位延迟，申请延期",
                                       "planValidUntil": (clock.now() + timedelta(days=90)).date().isoformat()},
        "gridSupportingProject": lambda v: {"projectNo": "PW-2026-0315", "constructionUnit": "长沙电力工程公司",
                                            "completedAt": now()},
        "designReview": lambda v: {"designUnit": "湖南电力设计院", "drawingsReceivedAt": now(), "result": "PASS",
                                   "reviewDate": today()},
        "midInspection": lambda v: {"inspectedAt": now(), "inspectors": ["liuyang", "chenjie"], "result": "PASS",
                                    "items": [{"item": "电缆沟及接地", "result": "PASS"}]},
        "completionAcceptance": lambda v: {"inspectedAt": now(), "inspectors": ["liuyang", "chenjie"],
                                           "result": "PASS"},
        "signContract": lambda v: {"contractNo": f"GYD-{v['applicationNo']}", "signedAt": today(), "validYears": 5,
                                   "contractType": {"LV_RES": "RESIDENTIAL", "LV_NONRES": "LV_NONRES"}.get(
                                       v["customerClass"], "HV")},
        "installMeterAndConnect": install,
        "technicalGuidance": lambda v: {"topic": "RECEIVING_WORKS",
                                        "guidance": "建议配电房采用双母线分段接线并加装备自投装置。",
                                        "visitRequired": False},
        "revisitCustomer": lambda v: {"reached": True, "resolved": True, "satisfaction": "SATISFIED"},
    }
    table.update(override)
    return table


# -- driving helpers ---------------------------------------------------------------------------------
def apply(engine, clock, number, request, review=None, user="counter01"):
    """msgRequestReceived from the intake, then the clerk registers the request (F1.1)."""
    instance = engine.correlate("msgRequestReceived", {"applicationNo": number, "business_key": number},
                                {"channel": request["channel"]}, ttl="PT0S")
    [task] = instance.ready_tasks
    assert (task.bpmn_id, task.candidate_groups) == ("acceptRequest", ["agent", "counterClerk"])
    engine.complete(task.id, request, user=user)
    return instance.id


def send(engine, name, number, data=None):
    return engine.correlate(name, {"applicationNo": number}, data or {}, ttl="PT0S")


def drive(engine, clock, instance_id, table, stop_at=(), customer=True, timers=True, max_steps=80):
    """Complete ready tasks (first = earliest due); when nothing is ready, let the customer act (design,
    inspection request, rectification, completion report) and then the next timer fire. Stops when a task
    in ``stop_at`` is ready, or when the instance ends or waits on something else."""
    for _ in range(max_steps):
        if engine.instance(instance_id).status != "running":
            return []
        ready = engine.tasks(instance_id=instance_id)
        if any(t.bpmn_id in stop_at for t in ready):
            return ready
        if ready:
            task = ready[0]
            clock.advance(timedelta(minutes=10))
            variables = engine.instance(instance_id).variables
            engine.complete(task.id, table[task.form_key](variables), user=task.assignee)
            continue
        number = engine.instance(instance_id).variables.get("applicationNo")
        if customer and _customer_acts(engine, number):
            continue
        timers_waiting = engine.instance(instance_id).timers
        if not timers or not timers_waiting:
            return []
        clock.set(max(clock.now(), min(t.due_at for t in timers_waiting)))
        engine.run_due()
    raise AssertionError("flow did not settle")


def _customer_acts(engine, number) -> bool:
    for name in CUSTOMER_MESSAGES:
        try:
            send(engine, name, number)
            return True
        except NotFound:
            continue
    return False


def ready_ids(engine, instance_id):
    return [t.bpmn_id for t in engine.tasks(instance_id=instance_id)]


def outbox(engine, instance_id, channel=None):
    return [e.data for e in engine.history(instance_id) if e.type == "outbox"
            and (channel is None or e.data.get("channel") == channel)]


def handler_ran(engine, instance_id, bpmn_id):
    return [e for e in engine.history(instance_id) if e.type == "handler_completed" and e.bpmn_id == bpmn_id]


def midsale_of(engine, number):
    found = [i for i in engine.instances(key="midsale_connection") if i.business_key == number]
    return found[0] if found else None


def handover(number, **changes):
    """A msgPlanAccepted payload (what presale's preparePlanHandover sends) for an HV dual-source customer."""
    payload = {"applicationNo": number, "policyVersion": "2023-12", "acceptedAt": "2026-12-01T09:00:00+08:00",
               "customerNo": None, "customerName": "湖南星沙精密制造有限公司", "contactName": "王芳",
               "contactPhone": "0731-84561234", "elecAddress": "长沙县星沙经济开发区漓湘路88号", "urbanRuralFlag": "01",
               "businessType": "HV_NEW", "elecCategory": "INDUSTRY_COMMERCE", "importanceLevel": "03",
               "powerSourceCount": 2, "totalCapacityKva": 2500, "customerClass": "HV_DUAL",
               "approvedCapacityKva": 2500, "approvedVoltage": "AC00101", "approvedCategory": "INDUSTRY_COMMERCE",
               "needGridProject": False, "supplyVoltage": "AC00101",
               "powerSources": [
                   {"sourceNo": "1", "nature": "10", "capacityKva": 2500, "sourcePointInfo": "星沙变922线"},
                   {"sourceNo": "2", "nature": "20", "capacityKva": 2500, "sourcePointInfo": "黄花变915线"}],
               "meteringMode": "1", "priceType": "IC_TWO_PART", "meterSpec": "3", "meterAccuracy": "0.5S",
               "ctRatio": "200/5", "propertyBoundary": "01", "gridPlannedFinish": None, "feesPreview": [],
               "planValidUntil": "2027-12-01", "slaLedger": []}
    payload.update(changes)
    return payload


LV_RES_HANDOVER = dict(customerName="李秀英", contactName="李秀英", contactPhone="13807310001",
                       elecAddress="长沙市岳麓区桐梓坡路168号3栋502室", businessType="LV_RES_NEW",
                       elecCategory="RESIDENTIAL",
                       importanceLevel="05", powerSourceCount=1, totalCapacityKva=8, customerClass="LV_RES",
                       approvedCapacityKva=8, approvedVoltage="AC02202", approvedCategory="RESIDENTIAL",
                       supplyVoltage="AC02202", meteringMode="3", priceType="RESIDENTIAL", ctRatio=None,
                       powerSources=[{"sourceNo": "1", "nature": "10", "capacityKva": 8,
                                      "sourcePointInfo": "桐梓坡#3台区"}],
                       planValidUntil="2027-03-01")
LV_NONRES_HANDOVER = dict(customerName="长沙市芙蓉区福满多超市", contactName="周杰", contactPhone="13974812345",
                          businessType="LV_NONRES_NEW", importanceLevel="05", powerSourceCount=1, totalCapacityKva=80,
                          customerClass="LV_NONRES", approvedCapacityKva=80, approvedVoltage="AC03802",
                          supplyVoltage="AC03802", meteringMode="3", priceType="IC_SINGLE", ctRatio=None,
                          powerSources=[{"sourceNo": "1", "nature": "10", "capacityKva": 80,
                                         "sourcePointInfo": "五一#7台区"}],
                          planValidUntil="2027-03-01")
HV_PLAIN_HANDOVER = dict(customerName="湖南湘江食品有限公司", importanceLevel="05", powerSourceCount=1,
                         totalCapacityKva=630, customerClass="HV_SINGLE", approvedCapacityKva=630,
                         powerSources=[{"sourceNo": "1", "nature": "10", "capacityKva": 630,
                                        "sourcePointInfo": "铜官变"}])


def start_midsale(engine, number, **changes):
    engine.deploy(PROCESSES)
    instance = engine.correlate("msgPlanAccepted", {"applicationNo": number, "business_key": number},
                                handover(number, **changes), ttl="PT0S")
    assert instance.definition_key == "midsale_connection" and instance.business_key == number
    return instance.id


# == D1 / fees (the decision rules themselves) =========================================================
@pytest.mark.parametrize(("voltage", "category", "sources", "kva", "expected"), [
    ("AC02202", "RESIDENTIAL", 1, 8, "LV_RES"),
    ("AC03802", "INDUSTRY_COMMERCE", 1, 80, "LV_NONRES"),
    ("AC03802", "RESIDENTIAL", 2, 40, "LV_RES"),            # LV ignores the source count
    ("AC00101", "RESIDENTIAL", 1, 630, "HV_SINGLE"),        # 10 kV: HV whatever the category
    ("AC00101", "INDUSTRY_COMMERCE", 2, 2500, "HV_DUAL"),
    ("AC02201", "INDUSTRY_COMMERCE", 3, 80000, "HV_DUAL"),  # AC02201 (220 kV) sorts above AC02202: set membership
    ("TBD", "AGRICULTURE", 1, 100, "LV_NONRES"),            # TBD up to lvMaxKw (100 kW) is LV
    ("TBD", "RESIDENTIAL", 1, 60, "LV_RES"),
    ("TBD", "INDUSTRY_COMMERCE", 1, 101, "HV_SINGLE"),      # above lvMaxKw is HV
    ("TBD", "INDUSTRY_COMMERCE", 2, 400, "HV_DUAL"),
])
def test_d1_classification_first_matching_row(voltage, category, sources, kva, expected):
    from handlers.common import policy_table
    from handlers.sales import classify

    assert classify(policy_table().latest, voltage, category, sources, kva) == expected


def test_fee_tariff_lv_free_dual_source_and_temporary_supply():
    from handlers.common import policy_table
    from handlers.sales import fee_lines

    version = policy_table().latest
    two = [{"nature": "10", "capacityKva": 2500}, {"nature": "20", "capacityKva": 1250.5}]
    assert fee_lines(version, "LV_NONRES", "LV_TEMP", two, "AC03802", 80) == []  # 三零服务
    [reliability] = fee_lines(version, "HV_DUAL", "HV_NEW", two, "AC00101", 2500)
    assert reliability == {"name": "高可靠性供电费", "unitPrice": 260.0, "qty": 1250.5, "amount": 325130.0,
                           "basis": reliability["basis"]}
    [temporary] = fee_lines(version, "HV_SINGLE", "HV_TEMP", two[:1], "AC00351", 800)
    assert (temporary["name"], temporary["amount"]) == ("临时接电费", 160000.0)
    assert fee_lines(version, "HV_SINGLE", "HV_NEW", two[:1], "AC00101", 630) == []


# == presale: consultation ===============================================================================
def test_consult_answered_at_once_pushes_the_guide_and_closes(engine, clock):
    engine.deploy(PROCESSES)
    number = "202612010001"
    instance_id = apply(engine, clock, number, CONSULT, user="agent07")
    [task] = engine.tasks(instance_id=instance_id)
    assert (task.bpmn_id, task.candidate_groups) == ("answerConsult", ["agent"])
    engine.complete(task.id, answers(clock)["answerConsult"]({}), user="agent07")
    final = engine.instance(instance_id)
    assert final.status == "completed"
    assert final.variables["notificationId"].startswith("ZN")
    [guide] = outbox(engine, instance_id)
    assert guide["to"] == "13787001234" and guide["template"] == "policy_info.j2"
    assert "新装增容变更" in guide["text"] and "用电申请书" in guide["text"] and "营业执照" in guide["text"]
    assert not handler_ran(engine, instance_id, "prepareRevisitConsult")  # answered now: no revisit


def test_transferred_consult_4wd_clock_across_national_day_with_reminder_supervision_and_revisit(engine, clock):
    clock.set(at("2026-09-29T10:00:00"))  # Tuesday before 国庆
    engine.deploy(PROCESSES)
    number = "202609290007"
    instance_id = apply(engine, clock, number, CONSULT, user="agent07")
    table = answers(clock)
    [task] = engine.tasks(instance_id=instance_id)
    engine.complete(task.id, {"answerText": "该问题需客户经理结合厂区位置答复，已转办。", "answeredNow": False,
                              "transferTo": "MARKETING"}, user="agent07")
    [item] = engine.tasks(instance_id=instance_id)
    # 4 WD: Sep 30, (Oct 1-7 holiday), Oct 8, Oct 9, Sat Oct 10 (make-up day) -> end of Oct 10
    assert (item.bpmn_id, item.candidate_groups) == ("handleTransferredConsult", ["accountManager"])
    assert item.due_at == at("2026-10-10T23:59:59")
    v = engine.instance(instance_id).variables
    assert (v["consultDueAt"], v["consultRemindAt"]) == (at("2026-10-10T23:59:59"), at("2026-10-08T23:59:59"))
    assert {t.bpmn_id: t.due_at for t in engine.instance(instance_id).timers} == {
        "T1_handleTransferredConsult": at("2026-10-08T23:59:59"),
        "T2_handleTransferredConsult": at("2026-10-10T23:59:59")}

    clock.set(at("2026-10-08T23:59:59"))
    assert engine.run_due() == 1
    [reminder] = outbox(engine, instance_id)
    assert "转办咨询答复" in reminder["text"] and "10月10日 23:59" in reminder["text"]
    assert engine.instance(instance_id).variables["remindCount"] == 1

    clock.set(at("2026-10-10T23:59:59"))
    engine.run_due()
    supervise = next(t for t in engine.tasks(instance_id=instance_id)
                     if t.bpmn_id == "superviseOverdue_handleTransferredConsult")
    assert supervise.candidate_groups == ["supervisor"]
    assert engine.instance(instance_id).variables["overdue"] is True
    clock.set(at("2026-10-11T09:00:00"))
    engine.complete(supervise.id, {"decision": "EXTEND", "reason": "客户出差，约定周一答复",
                                   "newDueAt": "2026-10-12T18:00:00+08:00"}, user="banzhang")
    v = engine.instance(instance_id).variables
    assert (v["consultDueAt"], v["overdue"]) == (at("2026-10-12T18:00:00"), False)
    assert "延期至10月12日 18:00" in outbox(engine, instance_id)[-1]["text"]
    [item] = engine.tasks(instance_id=instance_id)
    assert item.due_at == at("2026-10-12T18:00:00")  # the late task's work item follows the extension
    assert engine.tasks(overdue=True) == []
    engine.complete(item.id, table["handleTransferredConsult"]({}), user="am01")
    assert [o["template"] for o in outbox(engine, instance_id)][-1] == "policy_info.j2"
    v = engine.instance(instance_id).variables
    assert (v["sourceOrderNo"], v["revisitDelay"], v["revisitWindowWd"], v["maxReopen"]) == (number, "P1D", 1, 1)
    drive(engine, clock, instance_id, table)
    final = engine.instance(instance_id)
    assert final.status == "completed"
    assert (final.variables["orderStatus"], final.variables["revisitOutcome"]) == ("CLOSED", None)


def test_consult_revisit_reopens_once_then_goes_to_the_supervisor(engine, clock):
    clock.set(at("2026-12-01T09:00:00"))
    engine.deploy(PROCESSES)
    number = "202612010002"
    instance_id = apply(engine, clock, number, CONSULT)
    unhappy = {"reached": True, "resolved": False, "satisfaction": "UNSATISFIED", "comment": "答复太笼统，没有说清时限"}
    table = answers(clock, revisitCustomer=lambda v: unhappy,
                    answerConsult=lambda v: {"answerText": "需客户经理核实后答复，已转营销部。", "answeredNow": False,
                                             "transferTo": "MARKETING"})
    drive(engine, clock, instance_id, table, stop_at=("superviseReopenConsult",))
    transfers = [e for e in engine.history(instance_id)
                 if e.type == "task_completed" and e.bpmn_id == "handleTransferredConsult"]
    assert len(transfers) == 2  # the REOPEN re-handled the consultation once, on a fresh clock
    assert len(handler_ran(engine, instance_id, "computeConsultDue")) == 2
    v = engine.instance(instance_id).variables
    assert (v["revisitOutcome"], v["reopenCount"], v["maxReopen"]) == ("REOPEN", 1, 1)
    [task] = engine.tasks(instance_id=instance_id)
    assert task.candidate_groups == ["supervisor"]
    engine.complete(task.id, table["superviseReopen"](v), user="banzhang")
    final = engine.instance(instance_id)
    assert final.status == "completed"
    assert (final.variables["orderStatus"], final.variables["reopenCount"]) == ("SUPERVISED", 0)


def test_consult_revisit_complaint_starts_a_complaint_case(engine, clock):
    engine.deploy(PROCESSES)
    number = "202612010003"
    instance_id = apply(engine, clock, number, CONSULT)
    table = answers(clock, answerConsult=lambda v: {"answerText": "需客户经理核实后答复，已转营销部。",
                                                    "answeredNow": False, "transferTo": "MARKETING"},
                    revisitCustomer=lambda v: {"reached": True, "resolved": False, "satisfaction": "UNSATISFIED",
                                               "wantsToComplain": True, "comment": "转办后一直没人联系我"})
    drive(engine, clock, instance_id, table)
    final = engine.instance(instance_id)
    assert final.status == "completed" and final.variables["orderStatus"] == "COMPLAINT"
    [complaint] = engine.instances(key="complaint_handling")
    v = complaint.variables
    assert (v["channel"], v["sourceOrderNo"], v["sourceProcess"]) == ("REVISIT", number, "presale_plan")
    assert (v["customerName"], v["contactPhone"], v["customerNo"]) == ("赵敏", "13787001234", None)
    assert v["revisitComment"] == "转办后一直没人联系我"


# == presale: application, documents ====================================================================
def test_missing_documents_told_once_then_supplied_and_plan_clock_starts_after_the_wait(engine, clock):
    clock.set(at("2026-12-01T09:00:00"))  # Tuesday
    engine.deploy(PROCESSES)
    number = "202612010004"
    instance_id = apply(engine, clock, number, SHOP)
    v = engine.instance(instance_id).variables
    assert (v["customerClass"], v["importanceLevel"], v["powerSourceCount"], v["totalCapacityKva"]) == (
        "LV_NONRES", "05", 1, 80)
    [review] = engine.tasks(instance_id=instance_id)
    assert review.candidate_groups == ["counterClerk"]
    engine.complete(review.id, {"certType": "04", "certNo": LICENCE, "licenceProvided": False,
                                "acceptWithIdOnly": False, "surveyByClerk": False,
                                "missingItems": ["BUSINESS_LICENCE", "PROPERTY_PROOF", "EQUIPMENT_LIST"]},
                    user="counter01")
    assert engine.tasks(instance_id=instance_id) == []
    [notice] = outbox(engine, instance_id)
    assert notice["to"] == "13974812345" and notice["template"] == "missing_items_notice.j2"
    for item in ("营业执照（或组织机构代码证）", "房屋产权或土地使用证明", "用电设备清单（加盖公章）",
                 "30天", "12月31日"):
        assert item in notice["text"]
    v = engine.instance(instance_id).variables
    assert (v["materialsWait"], v["applicationStatus"]) == ("P30D", "WAITING_MATERIALS")
    assert [t.bpmn_id for t in engine.instance(instance_id).timers] == ["tmMaterialsTimeout"]
    assert "acceptedAt" not in v

    clock.set(at("2026-12-04T15:00:00"))  # Friday: the customer brings the documents
    send(engine, "msgMaterialsSupplied", number, {"suppliedItems": ["BUSINESS_LICENCE", "PROPERTY_PROOF"]})
    [review] = engine.tasks(instance_id=instance_id)
    assert review.bpmn_id == "reviewMaterials"
    engine.complete(review.id, answers(clock)["reviewMaterials"](engine.instance(instance_id).variables),
                    user="counter01")
    v = engine.instance(instance_id).variables
    # the plan clock counts from the acceptance of the complete application: 2 WD from Friday = Tuesday
    assert v["acceptedAt"] == at("2026-12-04T15:00:00")
    assert (v["planDueAt"], v["planCapAt"]) == (at("2026-12-08T23:59:59"), at("2026-12-16T23:59:59"))
    [dispatch] = engine.tasks(instance_id=instance_id)
    assert (dispatch.bpmn_id, dispatch.candidate_groups, dispatch.due_at) == (
        "dispatchSurvey", ["accountManager"], at("2026-12-08T23:59:59"))


def test_documents_never_arrive_the_application_is_withdrawn_after_30_days(engine, clock):
    clock.set(at("2026-12-01T09:00:00"))
    engine.deploy(PROCESSES)
    number = "202612010005"
    instance_id = apply(engine, clock, number, RESIDENT)
    [review] = engine.tasks(instance_id=instance_id)
    engine.complete(review.id, {"certType": "01", "certNo": ID_CARD, "acceptWithIdOnly": False, "surveyByClerk": False,
                                "missingItems": ["PROPERTY_PROOF"]}, user="counter01")
    [timer] = engine.instance(instance_id).timers
    assert timer.due_at == at("2026-12-31T09:00:00")
    clock.set(at("2026-12-31T08:59:00"))
    assert engine.run_due() == 0
    clock.set(at("2026-12-31T09:00:00"))
    assert engine.run_due() == 1
    final = engine.instance(instance_id)
    assert final.status == "completed"
    assert final.variables["applicationStatus"] == "WITHDRAWN" and "acceptedAt" not in final.variables
    withdrawn = outbox(engine, instance_id)[-1]
    assert withdrawn["template"] == "application_withdrawn.j2" and "已撤销受理" in withdrawn["text"]
    assert "自12月1日一次性告知缺件后" in withdrawn["text"]
    with pytest.raises(NotFound):  # the customer comes too late: nothing waits any more
        send(engine, "msgMaterialsSupplied", number)


def test_id_only_acceptance_starts_the_plan_stage_despite_missing_items(engine, clock):
    engine.deploy(PROCESSES)
    instance_id = apply(engine, clock, "202612010006", RESIDENT)
    [review] = engine.tasks(instance_id=instance_id)
    engine.complete(review.id, {"certType": "01", "certNo": ID_CARD, "acceptWithIdOnly": True, "surveyByClerk": False,
                                "missingItems": ["PROPERTY_PROOF"]}, user="counter01")
    assert ready_ids(engine, instance_id) == ["dispatchSurvey"]
    assert not handler_ran(engine, instance_id, "notifyMissing")
    assert engine.instance(instance_id).variables["acceptedAt"] == clock.now()


# == presale: survey and plan =============================================================================
def test_lv_nonres_below_threshold_dispatched_survey_no_review(engine, clock):
    engine.deploy(PROCESSES)
    number = "202612010008"
    instance_id = apply(engine, clock, number, SHOP)
    table = answers(clock)
    drive(engine, clock, instance_id, table, stop_at=("fieldSurvey",))
    [survey] = engine.tasks(instance_id=instance_id)
    assert (survey.assignee, survey.candidate_groups) == ("zhangqiang", ["surveyor", "counterClerk"])
    drive(engine, clock, instance_id, table, stop_at=("replyPlan",))
    assert not any(e.bpmn_id == "jointReviewPlan" for e in engine.history(instance_id))
    v = engine.instance(instance_id).variables
    assert v["reviewThresholdKva"] == 1260 and v["totalCapacityKva"] == 80 and v["feesPreview"] == []


def test_lv_above_kva_threshold_needs_joint_review_returned_then_approved(engine, clock):
    engine.deploy(PROCESSES)
    number = "202612010009"
    instance_id = apply(engine, clock, number, MALL)
    reviews = iter([{"approved": False, "reviewComment": "变压器容量配置偏大，请按负荷计算重新核定"},
                    {"approved": True}])
    table = answers(clock, jointReviewPlan=lambda v: next(reviews))
    drive(engine, clock, instance_id, table, stop_at=("jointReviewPlan",))
    v = engine.instance(instance_id).variables
    assert (v["customerClass"], v["totalCapacityKva"]) == ("LV_NONRES", 1300)
    [review] = engine.tasks(instance_id=instance_id)
    assert review.candidate_groups == ["planApprover"] and review.due_at == v["planDueAt"]
    drive(engine, clock, instance_id, table, stop_at=("replyPlan",))
    drafts = [e for e in engine.history(instance_id) if e.type == "task_completed" and e.bpmn_id == "draftPlan"]
    assert len(drafts) == 2  # returned by the review, drafted again
    assert engine.instance(instance_id).variables["approved"] is True


def test_hv_via_tbd_voltage_is_reviewed_and_the_customer_renegotiates_once_then_accepts(engine, clock):
    engine.deploy(PROCESSES)
    number = "202612010010"
    factory = {**FACTORY, "voltageLevel": "TBD", "newCapacityKva": 400}  # TBD above lvMaxKw: HV
    instance_id = apply(engine, clock, number, factory)
    assert engine.instance(instance_id).variables["customerClass"] == "HV_SINGLE"
    replies = iter([False, True])

    def reply(v):
        accepts = next(replies)
        data = {"replyMethod": "IN_PERSON", "planReplyDate": clock.now().date().isoformat(),
                "customerSigned": accepts, "customerAccepts": accepts}
        if accepts:
            data["customerSignDate"] = clock.now().date().isoformat()
        else:
            data["objection"] = "希望将产权分界点调整至客户围墙外第一基杆"
        return data

    table = answers(clock, replyPlan=reply)
    drive(engine, clock, instance_id, table)
    completed = [e.bpmn_id for e in engine.history(instance_id) if e.type == "task_completed"]
    assert completed.count("draftPlan") == 2 and completed.count("jointReviewPlan") == 2
    final = engine.instance(instance_id)
    v = final.variables
    assert final.status == "completed"
    assert (v["planOutcome"], v["negotiationRound"], v["maxRenegotiations"]) == ("ACCEPTED", 1, 2)
    assert v["planValidUntil"] == (clock.now() + timedelta(days=365)).date().isoformat()  # HV: P1Y
    assert midsale_of(engine, number) is not None


def test_third_refusal_exceeds_max_renegotiations_and_rejects_the_plan(engine, clock):
    engine.deploy(PROCESSES)
    number = "202612010011"
    instance_id = apply(engine, clock, number, SHOP)
    table = answers(clock, replyPlan=lambda v: {"planReplyDate": clock.now().date().isoformat(),
                                                "customerSigned": False, "customerAccepts": False,
                                                "objection": "认为计量方式不合理，不同意方案"})
    drive(engine, clock, instance_id, table)
    final = engine.instance(instance_id)
    assert final.status == "completed"
    assert (final.variables["planOutcome"], final.variables["negotiationRound"]) == ("REJECTED", 2)
    replies = [e for e in engine.history(instance_id) if e.type == "task_completed" and e.bpmn_id == "replyPlan"]
    assert len(replies) == 3
    assert midsale_of(engine, number) is None


def test_no_supply_condition_gets_a_written_explanation_and_no_midsale(engine, clock):
    engine.deploy(PROCESSES)
    number = "202612010012"
    instance_id = apply(engine, clock, number, FACTORY)
    table = answers(clock, fieldSurvey=lambda v: {
        **answers(clock)["fieldSurvey"](v), "canSupply": False,
        "noSupplyReason": "周边10kV线路均已满载，无可用间隔"})
    drive(engine, clock, instance_id, table, stop_at=("explainNoSupply",))
    [task] = engine.tasks(instance_id=instance_id)
    assert task.candidate_groups == ["accountManager"]
    drive(engine, clock, instance_id, table)
    final = engine.instance(instance_id)
    assert final.status == "completed" and final.variables["planOutcome"] == "NO_SUPPLY"
    assert not any(e.bpmn_id == "draftPlan" for e in engine.history(instance_id))
    assert midsale_of(engine, number) is None


def test_reclassification_after_survey_moves_the_plan_clock_and_rearms_the_timers(engine, clock):
    clock.set(at("2026-12-01T09:00:00"))  # Tuesday
    engine.deploy(PROCESSES)
    number = "202612010013"
    request = {**SHOP, "voltageLevel": "TBD", "newCapacityKva": 90}
    instance_id = apply(engine, clock, number, request)
    table = answers(clock)
    drive(engine, clock, instance_id, table, stop_at=("fieldSurvey",))
    v = engine.instance(instance_id).variables
    assert (v["customerClass"], v["planDueAt"]) == ("LV_NONRES", at("2026-12-03T23:59:59"))  # 2 WD
    assert {t.bpmn_id: t.due_at for t in engine.instance(instance_id).timers}["T2_subPlan"] == at("2026-12-03T23:59:59")
    [survey] = engine.tasks(instance_id=instance_id)
    engine.complete(survey.id, {**table["fieldSurvey"](v), "approvedVoltage": "AC00101", "approvedCapacityKva": 250},
                    user="zhangqiang")
    v = engine.instance(instance_id).variables
    # HV_SINGLE: 10 WD from acceptance (Tue Dec 1) -> Tue Dec 15; ceiling 20 WD -> Tue Dec 29; T1 = due - 1 WD
    assert (v["customerClass"], v["previousCustomerClass"], v["reclassified"]) == ("HV_SINGLE", "LV_NONRES", True)
    assert (v["planRemindAt"], v["planDueAt"], v["planCapAt"]) == (
        at("2026-12-14T23:59:59"), at("2026-12-15T23:59:59"), at("2026-12-29T23:59:59"))
    assert v["ykTotalBudget"] == 22 and v["totalCapacityKva"] == 250
    assert {t.bpmn_id: t.due_at for t in engine.instance(instance_id).timers} == {
        "T1_subPlan": at("2026-12-14T23:59:59"), "T2_subPlan": at("2026-12-15T23:59:59"),
        "T3_subPlan": at("2026-12-29T23:59:59")}
    assert any(e.type == "timers_rearmed" for e in engine.history(instance_id))
    notice = outbox(engine, instance_id)[-1]
    assert notice["to"] == "accountManager" and "调整为高压单电源" in notice["text"]
    [draft] = engine.tasks(instance_id=instance_id)
    assert (draft.bpmn_id, draft.due_at) == ("draftPlan", at("2026-12-15T23:59:59"))
    assert ready_ids(engine, instance_id) == ["draftPlan"]


def test_plan_stage_t1_t2_t3_across_mid_autumn_and_national_day(engine, clock):
    clock.set(at("2026-09-18T10:00:00"))  # Friday; 中秋 Sep 25, 国庆 Oct 1-7, make-up days Sep 20 and Oct 10
    engine.deploy(PROCESSES)
    number = "202609180001"
    instance_id = apply(engine, clock, number, FACTORY)
    [review] = engine.tasks(instance_id=instance_id)
    engine.complete(review.id, answers(clock)["reviewMaterials"](engine.instance(instance_id).variables),
                    user="counter01")
    v = engine.instance(instance_id).variables
    # 10 WD: Sep 20 (Sun, make-up), 21-24, 28-30, Oct 8, Oct 9; T1 one WD earlier; ceiling 20 WD incl. Sat Oct 10
    assert (v["planRemindAt"], v["planDueAt"], v["planCapAt"], v["planCapIsCeiling"]) == (
        at("2026-10-08T23:59:59"), at("2026-10-09T23:59:59"), at("2026-10-22T23:59:59"), True)
    assert v["planDueAt"] == CAL.add_working_days(at("2026-09-18T10:00:00"), 10)
    [dispatch] = engine.tasks(instance_id=instance_id)
    assert dispatch.due_at == at("2026-10-09T23:59:59")

    clock.set(at("2026-10-08T23:59:58"))
    assert engine.run_due() == 0
    clock.set(at("2026-10-08T23:59:59"))
    assert engine.run_due() == 1
    reminder = outbox(engine, instance_id)[-1]
    assert reminder["template"] == "reminder.j2" and "供电方案答复" in reminder["text"] and number in reminder["text"]

    clock.set(at("2026-10-09T23:59:59"))
    engine.run_due()
    [supervise] = [t for t in engine.tasks(instance_id=instance_id) if t.bpmn_id == "superviseOverdue_subPlan"]
    assert supervise.candidate_groups == ["supervisor"] and engine.instance(instance_id).variables["overdue"]
    clock.set(at("2026-10-10T09:30:00"))  # Saturday make-up day
    engine.complete(supervise.id, {"decision": "EXTEND", "reason": "客户厂区施工，勘查改期",
                                   "newDueAt": "2026-10-16T18:00:00+08:00"}, user="banzhang")
    v = engine.instance(instance_id).variables
    assert (v["planDueAt"], v["overdue"]) == (at("2026-10-16T18:00:00"), False)
    assert v["planCapAt"] == at("2026-10-22T23:59:59")  # a regulatory ceiling never moves
    assert [t.due_at for t in engine.instance(instance_id).timers if t.bpmn_id == "T3_subPlan"] == [
        at("2026-10-22T23:59:59")]

    clock.set(at("2026-10-22T23:59:59"))
    engine.run_due()
    v = engine.instance(instance_id).variables
    assert v["complianceBreach"] is True and v["escalatedAt"] == at("2026-10-22T23:59:59")
    escalation = outbox(engine, instance_id)[-1]
    assert escalation["to"] == "manager" and "已触及监管时限" in escalation["text"]
    assert ready_ids(engine, instance_id) == ["dispatchSurvey"]  # the stage itself keeps running


def test_hv_dual_important_plan_previews_the_fee_and_hands_over_to_a_fee_bearing_midsale(engine, clock):
    clock.set(at("2026-12-01T09:00:00"))
    engine.deploy(PROCESSES)
    number = "202612010014"
    instance_id = apply(engine, clock, number, PRECISION)
    v = engine.instance(instance_id).variables
    assert (v["customerClass"], v["importanceLevel"], v["powerSourceCount"]) == ("HV_DUAL", "03", 2)
    drive(engine, clock, instance_id, answers(clock), stop_at=("draftPlan",))
    [draft] = engine.tasks(instance_id=instance_id)
    view = engine.task_view(draft.id)
    [preview] = view.variables["feesPreview"]  # the read-only F1.6 field shows the dry run
    assert (preview["name"], preview["amount"]) == ("高可靠性供电费", 650000.0)
    assert view.form_schema["properties"]["feesPreview"]["readOnly"] is True
    v = view.variables
    # HV_DUAL: 18 WD plan budget, ceiling 45 WD, class total 32 WD (D2)
    assert v["planDueAt"] == CAL.add_working_days(v["acceptedAt"], 18) == draft.due_at
    assert v["planCapAt"] == CAL.add_working_days(v["acceptedAt"], 45)
    budgets = {"plan": 18, "design": 3, "mid": 2, "complete": 3, "connect": 3}
    assert (v["ykBudgets"], v["ykTotalBudget"]) == (budgets, 32)
    drive(engine, clock, instance_id, answers(clock))
    assert engine.instance(instance_id).variables["planOutcome"] == "ACCEPTED"
    midsale = midsale_of(engine, number)
    v = midsale.variables
    assert (v["feeTotal"], v["contactPhone"], v["approvedCapacityKva"]) == (650000.0, "0731-84561234", 2500)
    [collect] = engine.tasks(instance_id=midsale.id)
    assert (collect.bpmn_id, collect.candidate_groups) == ("collectFee", ["cashier"])
    ledger = [entry["taskId"] for entry in v["slaLedger"]]
    assert "jointReviewPlan" in ledger and "dispatchSurvey" in ledger


def test_capacity_increase_adds_the_existing_capacity_of_the_account(engine, clock):
    from handlers.sales import existing_capacity_kva

    engine.deploy(PROCESSES)
    request = {**FACTORY, "businessType": "HV_INCREASE", "customerNo": "4301234567", "newCapacityKva": 400}
    instance_id = apply(engine, clock, "202612010015", request)
    v = engine.instance(instance_id).variables
    existing = existing_capacity_kva("4301234567")
    assert existing > 0
    assert (v["originalCapacityKva"], v["totalCapacityKva"]) == (existing, 400 + existing)


# == presale → midsale handover, LV_RES end to end ========================================================
def test_lv_res_clerk_survey_handover_to_midsale_connection_and_ledger(lite, clock):
    engine = lite
    clock.set(at("2026-12-07T09:00:00"))  # Monday
    engine.deploy(PROCESSES)
    number = "202612070001"
    instance_id = apply(engine, clock, number, RESIDENT)
    table = answers(clock, reviewMaterials=lambda v: {"certType": "01", "certNo": ID_CARD, "acceptWithIdOnly": False,
                                                      "missingItems": [], "surveyByClerk": True})
    drive(engine, clock, instance_id, table, stop_at=("fieldSurvey",))
    [survey] = engine.tasks(instance_id=instance_id)
    assert (survey.assignee, survey.candidate_groups) == (None, ["surveyor", "counterClerk"])  # the clerk claims it
    assert not any(e.bpmn_id == "dispatchSurvey" for e in engine.history(instance_id))
    engine.claim(survey.id, "counter01")
    drive(engine, clock, instance_id, table, stop_at=("signContract",))
    presale = engine.instance(instance_id)
    assert presale.status == "completed" and presale.variables["planOutcome"] == "ACCEPTED"
    assert presale.variables["planValidUntil"] == "2027-03-07"  # LV: P3M
    sent = next(e for e in engine.history(instance_id) if e.type == "message_sent")
    payload = sent.data["data"]
    assert sent.data["message"] == "msgPlanAccepted" and payload["applicationNo"] == number
    assert payload["customerNo"] is None and payload["gridPlannedFinish"] is None and payload["ctRatio"] is None
    assert [entry["taskId"] for entry in payload["slaLedger"]] == [
        "acceptRequest", "reviewMaterials", "fieldSurvey", "draftPlan", "replyPlan"]

    midsale = midsale_of(engine, number)
    v = midsale.variables
    assert (v["customerClass"], v["feeTotal"], v["fees"], v["policyVersion"]) == ("LV_RES", 0.0, [], "2023-12")
    assert ready_ids(engine, midsale.id) == ["signContract"]  # no fee, no grid work, no final inspection for LV_RES
    drive(engine, clock, midsale.id, table, stop_at=("installMeterAndConnect",))
    [install] = engine.tasks(instance_id=midsale.id)
    v = engine.instance(midsale.id).variables
    assert install.candidate_groups == ["meteringCrew"] and install.due_at == v["connectDueAt"]
    assert (v["connectDueAt"], v["connectCapAt"]) == (at("2026-12-09T23:59:59"), at("2026-12-10T23:59:59"))
    clock.set(at("2026-12-08T10:00:00"))  # the crew connects the next day
    drive(engine, clock, midsale.id, table)
    final = engine.instance(midsale.id)
    v = final.variables
    assert final.status == "completed" and v["orderStatus"] == "CLOSED"
    assert re.fullmatch(r"\d{10}", v["customerNo"]) and v["newAccount"] is True
    assert (v["ykTotalBudget"], v["elapsedWd"], v["totalSlaMet"]) == (5, 1, True)  # whole process for LV_RES
    account = outbox(engine, midsale.id, "marketing")[0]
    assert account["customerNo"] == v["customerNo"] and "建档立户" in account["text"]
    assert v["customerNo"] in outbox(engine, midsale.id, "sms")[0]["text"]
    ledger = [entry["taskId"] for entry in v["slaLedger"]]
    assert ledger[:5] == ["acceptRequest", "reviewMaterials", "fieldSurvey", "draftPlan", "replyPlan"]
    assert "signContract" in ledger and "installMeterAndConnect" in ledger


# == midsale ==============================================================================================
def test_hv_dual_fee_reminders_are_customer_time_and_payment_continues(engine, clock):
    clock.set(at("2026-12-01T09:00:00"))
    number = "202612010020"
    instance_id = start_midsale(engine, number)
    v = engine.instance(instance_id).variables
    [fee] = v["fees"]
    assert (fee["name"], fee["unitPrice"], fee["qty"], fee["amount"]) == ("高可靠性供电费", 260.0, 2500.0, 650000.0)
    assert (v["feeTotal"], v["feeReminderCycle"]) == (650000.0, "R3/P7D")
    assert v["planExpiresAt"] == at("2027-12-01T23:59:59")
    [collect] = engine.tasks(instance_id=instance_id)
    assert (collect.bpmn_id, collect.candidate_groups, collect.due_at) == ("collectFee", ["cashier"], None)
    for week in (1, 2, 3, 4):
        clock.set(at("2026-12-01T09:00:00") + timedelta(days=7 * week))
        engine.run_due()
    reminders = outbox(engine, instance_id)
    assert len(reminders) == 3  # R3: three reminders, none in the fourth week
    assert all(r["to"] == "0731-84561234" and "650000.00元未缴" in r["text"] for r in reminders)
    assert "第3次提醒" in reminders[-1]["text"] and "2027年12月1日" in reminders[-1]["text"]
    assert engine.instance(instance_id).variables["feeReminderCount"] == 3
    table = answers(clock)
    engine.complete(collect.id, table["collectFee"](engine.instance(instance_id).variables), user="cashier01")
    v = engine.instance(instance_id).variables
    assert "collectFee" not in [entry["taskId"] for entry in v["slaLedger"]]  # customer time is not in the ledger
    assert engine.tasks(instance_id=instance_id) == []  # important HV: waits for the customer's design
    send(engine, "msgDesignSubmitted", number, {"designUnit": "湖南电力设计院"})
    assert ready_ids(engine, instance_id) == ["designReview"]


def test_plan_expiry_before_payment_extend_then_cancel(engine, clock):
    clock.set(at("2026-12-01T09:00:00"))
    number = "202612010021"
    instance_id = start_midsale(engine, number, planValidUntil="2026-12-10")
    assert {t.bpmn_id: t.due_at for t in engine.instance(instance_id).timers}["tmPlanExpiryFee"] == \
        at("2026-12-10T23:59:59")
    clock.set(at("2026-12-10T23:59:59"))
    engine.run_due()
    [expiry] = engine.tasks(instance_id=instance_id)
    assert (expiry.bpmn_id, expiry.candidate_groups) == ("handlePlanExpiryFee", ["accountManager"])
    clock.set(at("2026-12-11T10:00:00"))
    engine.complete(expiry.id, {"decision": "EXTEND", "planValidUntil": "2027-03-10",
                                "reason": "客户已于到期前7个工作日申请延期"}, user="am01")
    v = engine.instance(instance_id).variables
    assert (v["planExpiresAt"], v["planValidUntilChecked"], v["planExtensions"]) == (
        at("2027-03-10T23:59:59"), "2027-03-10", 1)
    assert ready_ids(engine, instance_id) == ["collectFee"]
    clock.set(at("2027-03-10T23:59:59"))
    engine.run_due()
    [expiry] = [t for t in engine.tasks(instance_id=instance_id) if t.bpmn_id == "handlePlanExpiryFee"]
    engine.complete(expiry.id, {"decision": "CANCEL", "reason": "客户项目停建，终止办理"}, user="am01")
    final = engine.instance(instance_id)
    assert final.status == "completed" and engine.tasks(instance_id=instance_id) == []
    assert final.variables["decision"] == "CANCEL" and final.variables["planExtensions"] == 1
    assert not handler_ran(engine, instance_id, "computeConnectDue")  # ended at evCancelled


def test_extension_to_an_earlier_date_stops_with_a_clear_incident(engine, clock):
    clock.set(at("2026-12-01T09:00:00"))
    number = "202612010022"
    instance_id = start_midsale(engine, number, planValidUntil="2026-12-10")
    clock.set(at("2026-12-11T00:00:00"))
    engine.run_due()
    [expiry] = engine.tasks(instance_id=instance_id)
    engine.complete(expiry.id, {"decision": "EXTEND", "planValidUntil": "2026-12-05", "reason": "录入错误"},
                    user="am01")
    broken = engine.instance(instance_id)
    assert broken.status == "error"
    assert "2026-12-05 早于原有效期 2026-12-10" in broken.error
    [incident] = engine.incidents(instance_id)
    assert incident.bpmn_id == "computePlanExpiryFee"


def test_hv_not_important_skips_design_and_plan_expires_before_the_completion_report(engine, clock):
    clock.set(at("2026-12-01T09:00:00"))
    number = "202612010023"
    instance_id = start_midsale(engine, number, **HV_PLAIN_HANDOVER, planValidUntil="2026-12-31")
    v = engine.instance(instance_id).variables
    assert (v["feeTotal"], v["planExpiresAt"]) == (0.0, at("2026-12-31T23:59:59"))  # single source, permanent: no fee
    assert engine.tasks(instance_id=instance_id) == []
    assert not handler_ran(engine, instance_id, "computeDesignDue")
    clock.set(at("2026-12-31T23:59:59"))
    engine.run_due()
    [expiry] = engine.tasks(instance_id=instance_id)
    assert expiry.bpmn_id == "handlePlanExpiryCompletion"
    engine.complete(expiry.id, {"decision": "EXTEND", "planValidUntil": "2027-06-30",
                                "reason": "客户受电工程施工延期"}, user="am01")
    assert engine.instance(instance_id).variables["planExpiresAt"] == at("2027-06-30T23:59:59")
    clock.set(at("2027-01-05T10:00:00"))
    send(engine, "msgCompletionReported", number)
    assert sorted(ready_ids(engine, instance_id)) == ["completionAcceptance", "signContract"]  # in parallel (S16)
    v = engine.instance(instance_id).variables
    # yk.complete.HV 3 WD from Tue Jan 5 2027 -> Fri Jan 8; ceiling 7 WD -> Thu Jan 14
    assert (v["completeDueAt"], v["completeCapAt"]) == (at("2027-01-08T23:59:59"), at("2027-01-14T23:59:59"))


def test_lv_nonres_final_inspection_fails_then_passes_in_parallel_with_the_contract(engine, clock):
    clock.set(at("2026-12-01T09:00:00"))
    number = "202612010024"
    instance_id = start_midsale(engine, number, **LV_NONRES_HANDOVER)
    assert engine.tasks(instance_id=instance_id) == []  # LV_NONRES: waits for the completion report
    send(engine, "msgCompletionReported", number)
    items = {t.bpmn_id: t for t in engine.tasks(instance_id=instance_id)}
    assert items["completionAcceptance"].candidate_groups == ["inspector"]
    assert items["completionAcceptance"].due_at == at("2026-12-03T23:59:59")  # yk.complete.LV 2 WD
    table = answers(clock)
    engine.complete(items["signContract"].id, table["signContract"](engine.instance(instance_id).variables),
                    user="am01")
    clock.set(at("2026-12-02T15:00:00"))
    engine.complete(items["completionAcceptance"].id, {
        "inspectedAt": clock.now().isoformat(), "inspectors": ["liuyang"], "result": "FAIL",
        "rectifyList": ["进线柜未装设带电显示器", "电缆沟盖板缺失三块"]}, user="liuyang")
    letter = outbox(engine, instance_id, "letter")[-1]
    assert "1.进线柜未装设带电显示器；2.电缆沟盖板缺失三块" in letter["text"] and "竣工检验" in letter["text"]
    assert engine.instance(instance_id).variables["completionRectifyCount"] == 1
    clock.set(at("2026-12-07T09:00:00"))  # Monday: rectified
    send(engine, "msgRectified", number)
    [again] = engine.tasks(instance_id=instance_id)
    assert (again.bpmn_id, again.due_at) == ("completionAcceptance", at("2026-12-09T23:59:59"))  # the clock restarts
    engine.complete(again.id, table["completionAcceptance"]({}), user="liuyang")
    assert ready_ids(engine, instance_id) == ["installMeterAndConnect"]


def test_grid_work_due_is_capped_at_20wd_and_an_extension_moves_t3(engine, clock):
    clock.set(at("2026-12-01T09:00:00"))
    number = "202612010025"
    instance_id = start_midsale(engine, number, **HV_PLAIN_HANDOVER, needGridProject=True,
                                gridPlannedFinish="2027-03-31")
    [grid] = engine.tasks(instance_id=instance_id)
    v = engine.instance(instance_id).variables
    # planned finish Mar 31 is later than 20 WD (Dec 29): the policy cap wins; T3 = due + 1 WD (no ceiling)
    assert (grid.bpmn_id, grid.candidate_groups, grid.due_at) == (
        "gridSupportingProject", ["accountManager"], at("2026-12-29T23:59:59"))
    assert (v["gridRemindAt"], v["gridCapAt"], v["gridCapIsCeiling"], v["gridDueCappedByPolicy"]) == (
        at("2026-12-25T23:59:59"), at("2026-12-30T23:59:59"), False, True)
    clock.set(at("2026-12-29T23:59:59"))
    assert engine.run_due() == 2  # T1 and T2 both due
    supervise = next(t for t in engine.tasks(instance_id=instance_id) if t.bpmn_id.startswith("superviseOverdue"))
    engine.complete(supervise.id, {"decision": "EXTEND", "reason": "电缆通道协调未完成",
                                   "newDueAt": "2027-01-08T18:00:00+08:00"}, user="banzhang")
    v = engine.instance(instance_id).variables
    assert (v["gridDueAt"], v["gridCapAt"]) == (at("2027-01-08T18:00:00"), at("2027-01-11T23:59:59"))
    assert {t.bpmn_id: t.due_at for t in engine.instance(instance_id).timers}["T3_gridSupportingProject"] == \
        at("2027-01-11T23:59:59")


def test_grid_work_due_is_the_planned_finish_when_earlier(engine, clock):
    clock.set(at("2026-12-01T09:00:00"))
    instance_id = start_midsale(engine, "202612010026", **HV_PLAIN_HANDOVER, needGridProject=True,
                                gridPlannedFinish="2026-12-11")
    [grid] = engine.tasks(instance_id=instance_id)
    assert grid.due_at == at("2026-12-11T23:59:59")
    v = engine.instance(instance_id).variables
    assert (v["gridRemindAt"], v["gridCapAt"]) == (at("2026-12-09T23:59:59"), at("2026-12-14T23:59:59"))


def test_hv_important_design_and_interim_inspection_rectification_loops(lite, clock):
    engine = lite
    clock.set(at("2026-12-01T09:00:00"))
    number = "202612010027"
    instance_id = start_midsale(engine, number, feesPreview=[])
    table = answers(clock)
    drive(engine, clock, instance_id, table, customer=False, timers=False)  # pays the fee, waits for the design
    send(engine, "msgDesignSubmitted", number)
    [review] = engine.tasks(instance_id=instance_id)
    first_due = engine.instance(instance_id).variables["designDueAt"]
    assert review.candidate_groups == ["inspector"] and review.due_at == first_due
    clock.advance(timedelta(hours=2))
    engine.complete(review.id, {"designUnit": "湖南电力设计院", "drawingsReceivedAt": clock.now().isoformat(),
                                "result": "FAIL", "defects": ["未设置双电源闭锁装置", "接地电阻计算书缺失"]},
                    user="liuyang")
    letter = outbox(engine, instance_id, "letter")[-1]
    assert "受电工程设计审查" in letter["text"] and "2.接地电阻计算书缺失" in letter["text"]
    assert engine.instance(instance_id).variables["rectifyNoticeId"] == letter["noticeNo"]
    clock.set(at("2026-12-08T10:00:00"))
    send(engine, "msgDesignSubmitted", number)
    v = engine.instance(instance_id).variables
    # the review clock restarts at the revised design: 3 WD from Tue Dec 8 -> Fri Dec 11; ceiling 20 WD,
    # across 元旦 (Jan 1-3 2027) -> Wed Jan 6
    assert (v["designDueAt"], v["designCapAt"], v["designCapIsCeiling"]) == (
        at("2026-12-11T23:59:59"), at("2027-01-06T23:59:59"), True)
    drive(engine, clock, instance_id, table, customer=False, timers=False)
    send(engine, "msgMidInspectionRequested", number)
    [mid] = engine.tasks(instance_id=instance_id)
    assert (mid.bpmn_id, mid.due_at) == ("midInspection", CAL.add_working_days(clock.now(), 2))
    engine.complete(mid.id, {"inspectedAt": clock.now().isoformat(), "inspectors": ["liuyang", "chenjie"],
                             "result": "FAIL", "rectifyList": ["电缆埋深不足0.7米"]}, user="liuyang")
    assert "中间检查" in outbox(engine, instance_id, "letter")[-1]["text"]
    send(engine, "msgRectified", number)
    assert ready_ids(engine, instance_id) == ["midInspection"]
    drive(engine, clock, instance_id, table, customer=False, timers=False)
    assert engine.tasks(instance_id=instance_id) == []  # waits for the completion report
    assert engine.instance(instance_id).variables["midRectifyCount"] == 1
    letters = outbox(engine, instance_id, "letter")
    assert len(letters) == 2


def test_hv_dual_midsale_end_to_end_ledger_and_complaint_after_revisit(lite, clock):
    engine = lite
    clock.set(at("2026-12-01T09:00:00"))
    number = "202612010028"
    instance_id = start_midsale(engine, number, acceptedAt="2026-11-20T09:00:00+08:00",
                                slaLedger=[{"taskId": "draftPlan", "name": "拟定供电方案",
                                            "start": "2026-11-20T09:00:00+08:00", "end": "2026-11-24T10:00:00+08:00",
                                            "workingDaysUsed": 2}])
    table = answers(clock, revisitCustomer=lambda v: {"reached": True, "resolved": True, "satisfaction": "UNSATISFIED",
                                                      "wantsToComplain": True, "comment": "送电比承诺晚了一周"})
    drive(engine, clock, instance_id, table)
    final = engine.instance(instance_id)
    v = final.variables
    assert final.status == "completed" and v["orderStatus"] == "COMPLAINT"
    ledger = v["slaLedger"]
    ids = [entry["taskId"] for entry in ledger]
    assert ids[0] == "draftPlan" and "collectFee" not in ids  # presale part carried over, customer time skipped
    steps = {"designReview", "midInspection", "completionAcceptance", "signContract", "installMeterAndConnect"}
    assert steps <= set(ids)
    assert v["utilityWdUsed"] == sum(e["workingDaysUsed"] for e in ledger if e["taskId"] != "revisitCustomer")
    assert (v["ykTotalBudget"], v["totalSlaMet"]) == (32, v["utilityWdUsed"] <= 32)
    [complaint] = engine.instances(key="complaint_handling")
    source = (complaint.variables["sourceProcess"], complaint.variables["sourceOrderNo"])
    assert source == ("midsale_connection", number)


@pytest.mark.parametrize(("revisit", "status", "supervisor"), [
    ({"reached": True, "resolved": False, "satisfaction": "UNSATISFIED"}, "SUPERVISED", True),
    ({"reached": False}, "FAILED", False),
])
def test_midsale_revisit_reopen_goes_to_supervisor_and_unreachable_customer_fails(engine, clock, revisit, status,
                                                                                   supervisor):
    clock.set(at("2026-12-01T09:00:00"))
    number = "202612010029"
    instance_id = start_midsale(engine, number, **LV_RES_HANDOVER)
    table = answers(clock, revisitCustomer=lambda v: revisit)
    ready = drive(engine, clock, instance_id, table, stop_at=("superviseReopenMidsale",))
    if supervisor:
        [task] = ready
        assert task.candidate_groups == ["supervisor"]
        engine.complete(task.id, table["superviseReopen"]({}), user="banzhang")
    else:
        attempts = [e for e in engine.history(instance_id) if e.type == "task_completed"
                    and e.bpmn_id == "revisitCustomer"]
        assert len(attempts) == 3 and outbox(engine, instance_id)[-1]["template"] == "sms_survey.j2"
    final = engine.instance(instance_id)
    assert final.status == "completed" and final.variables["orderStatus"] == status


def test_connection_sla_t1_t2_t3_with_the_regulatory_ceiling(engine, clock):
    clock.set(at("2026-12-01T09:00:00"))
    number = "202612010030"
    instance_id = start_midsale(engine, number, **LV_NONRES_HANDOVER)
    send(engine, "msgCompletionReported", number)
    table = answers(clock)
    drive(engine, clock, instance_id, table, stop_at=("installMeterAndConnect",), customer=False, timers=False)
    [install] = engine.tasks(instance_id=instance_id)
    v = engine.instance(instance_id).variables
    start = clock.now()
    assert install.due_at == v["connectDueAt"] == CAL.add_working_days(start, 2)
    assert v["connectCapAt"] == CAL.add_working_days(start, 5) and v["connectCapIsCeiling"] is True
    clock.set(v["connectCapAt"])
    engine.run_due()
    v = engine.instance(instance_id).variables
    assert v["complianceBreach"] is True and v["remindCount"] == 1 and v["overdue"] is True
    assert "装表接电" in outbox(engine, instance_id, "sms")[-1]["text"]
    assert sorted(ready_ids(engine, instance_id)) == [
        "installMeterAndConnect", "superviseOverdue_installMeterAndConnect"]


def test_technical_guidance_on_request_runs_beside_the_case(engine, clock):
    clock.set(at("2026-12-01T09:00:00"))
    number = "202612010031"
    instance_id = start_midsale(engine, number, **HV_PLAIN_HANDOVER)
    try:
        send(engine, "msgGuidanceRequest", number, {"question": "受电工程变压器选型咨询"})
    except NotFound as exc:
        pytest.xfail(f"event sub-process message start not routed yet (lead's fix): {exc}")
    items = {t.bpmn_id: t for t in engine.tasks(instance_id=instance_id)}
    guidance = items["technicalGuidance"]
    v = engine.instance(instance_id).variables
    assert guidance.candidate_groups == ["accountManager"]
    assert guidance.due_at == v["guidanceDueAt"] == at("2026-12-03T23:59:59")  # guidance.reply 2 WD
    engine.complete(guidance.id, answers(clock)["technicalGuidance"](v), user="am01")
    assert engine.instance(instance_id).status == "running"  # the case itself still waits for the report
    assert engine.tasks(instance_id=instance_id) == []


# == forms: a refused form changes nothing ================================================================
def _presale(request, stop, **override):
    def reach(engine, clock):
        engine.deploy(PROCESSES)
        instance_id = apply(engine, clock, "202612019001", request)
        drive(engine, clock, instance_id, answers(clock, **override), stop_at=(stop,))
        return instance_id
    return reach


def _accept(request):
    def reach(engine, clock):
        engine.deploy(PROCESSES)
        engine.correlate("msgRequestReceived", {"applicationNo": "202612019002", "business_key": "202612019002"},
                         {"channel": request["channel"]}, ttl="PT0S")
        return engine.instances(key="presale_plan")[0].id
    return reach


def _midsale(stop, send_first=(), expire=False, override=None, **changes):
    def reach(engine, clock):
        number = "202612019003"
        instance_id = start_midsale(engine, number, **changes)
        table = answers(clock, **(override or {}))
        if expire:
            engine.run_due()
        for name in send_first:
            drive(engine, clock, instance_id, table, stop_at=(stop,), customer=False, timers=False)
            send(engine, name, number)
        drive(engine, clock, instance_id, table, stop_at=(stop,), customer=False)
        return instance_id
    return reach


def _consult_overdue(engine, clock):
    engine.deploy(PROCESSES)
    instance_id = apply(engine, clock, "202612019004", CONSULT)
    [task] = engine.tasks(instance_id=instance_id)
    engine.complete(task.id, {"answerText": "需客户经理核实后答复，已转营销部。", "answeredNow": False,
                              "transferTo": "MARKETING"})
    clock.set(engine.instance(instance_id).variables["consultDueAt"])
    engine.run_due()
    return instance_id


NO_SUPPLY = {"fieldSurvey": lambda v: {**answers_base()["fieldSurvey"](v), "canSupply": False,
                                       "noSupplyReason": "线路满载"}}


def answers_base():
    from engine.clock import FixedClock

    return answers(FixedClock(at("2026-12-01T10:00:00")))


REFUSALS = [
    ("acceptRequest", _accept(RESIDENT), {**RESIDENT, "newCapacityKva": 0}, "newCapacityKva"),
    ("acceptRequest", _accept(CONSULT), {k: v for k, v in CONSULT.items() if k != "consultTopic"}, "consultTopic"),
    ("answerConsult", _presale(CONSULT, "answerConsult"),
     {"answerText": "已转办，稍后答复客户。", "answeredNow": False}, "transferTo"),
    ("handleTransferredConsult", _presale(CONSULT, "handleTransferredConsult", answerConsult=lambda v: {
        "answerText": "需客户经理核实后答复，已转营销部。", "answeredNow": False, "transferTo": "MARKETING"}),
     {"answerText": "已答复", "replyMethod": "PHONE", "repliedAt": "2026-12-01T10:00:00+08:00"}, "answerText"),
    ("reviewMaterials", _presale(SHOP, "reviewMaterials"),
     {"certType": "04", "certNo": LICENCE, "acceptWithIdOnly": False, "missingItems": [], "surveyByClerk": False},
     "licenceProvided"),  # read-only elecCategory (工商业) makes the licence answer required
    ("reviewMaterials", _presale(RESIDENT, "reviewMaterials"),
     {"certType": "01", "certNo": "43010419901315771X", "acceptWithIdOnly": False, "missingItems": [],
      "surveyByClerk": False}, "certNo"),
    ("dispatchSurvey", _presale(SHOP, "dispatchSurvey"),
     {"surveyorId": "张 强", "appointmentAt": "2026-12-02T09:00:00+08:00"}, "surveyorId"),
    ("fieldSurvey", _presale(SHOP, "fieldSurvey"),
     {"surveyedAt": "2026-12-01T10:00:00+08:00", "approvedCategory": "INDUSTRY_COMMERCE", "approvedVoltage": "TBD",
      "approvedCapacityKva": 80, "accessPointInfo": "五一#7台区", "meteringPointInfo": "门面进线处",
      "needGridProject": False, "photos": [], "canSupply": True}, "approvedVoltage"),
    ("explainNoSupply", _presale(FACTORY, "explainNoSupply", **NO_SUPPLY),
     {"explanation": "线路满载", "deliveryMethod": "IN_PERSON", "deliveredAt": "2026-12-01T10:00:00+08:00"},
     "explanation"),
    ("draftPlan", _presale(SHOP, "draftPlan"),
     {"supplyVoltage": "AC03802", "meteringMode": "3", "priceType": "IC_SINGLE",
      "powerSources": [{"sourceNo": "1", "nature": "10", "capacityKva": 80, "sourcePointInfo": "五一#7台区"},
                       {"sourceNo": "2", "nature": "20", "capacityKva": 80, "sourcePointInfo": "五一#8台区"}]},
     "powerSources"),  # read-only powerSourceCount = 1 allows one row only
    ("jointReviewPlan", _presale(FACTORY, "jointReviewPlan"), {"approved": False}, "reviewComment"),
    ("replyPlan", _presale(SHOP, "replyPlan"),
     {"planReplyDate": "2026-12-01", "customerSigned": True, "customerAccepts": True}, "customerSignDate"),
    ("superviseOverdue", _consult_overdue, {"decision": "EXTEND", "reason": "延期"}, "newDueAt"),
    ("superviseReopen", _midsale("superviseReopenMidsale", override={"revisitCustomer": lambda v: {
        "reached": True, "resolved": False, "satisfaction": "UNSATISFIED"}}, **LV_RES_HANDOVER),
     {"reopenAction": "已处理"},
     "reopenAction"),
    ("collectFee", _midsale("collectFee"), {"paidAmount": 0, "receiptNo": "PJ-2026-088123"}, "paidAmount"),
    ("handlePlanExpiry", _midsale("handlePlanExpiryFee", expire=True, planValidUntil="2026-11-30"),
     {"decision": "EXTEND", "reason": "客户申请延期"}, "planValidUntil"),
    ("gridSupportingProject", _midsale("gridSupportingProject", **HV_PLAIN_HANDOVER, needGridProject=True,
                                       gridPlannedFinish="2026-12-20"),
     {"projectNo": "", "completedAt": "2026-12-20T17:00:00+08:00"}, "projectNo"),
    ("designReview", _midsale("designReview", send_first=("msgDesignSubmitted",)),
     {"designUnit": "湖南电力设计院", "drawingsReceivedAt": "2026-12-02T10:00:00+08:00", "result": "FAIL"}, "defects"),
    ("midInspection", _midsale("midInspection", send_first=("msgDesignSubmitted", "msgMidInspectionRequested")),
     {"inspectedAt": "2026-12-02T10:00:00+08:00", "inspectors": [], "result": "PASS"}, "inspectors"),
    ("completionAcceptance", _midsale("completionAcceptance", send_first=("msgCompletionReported",),
                                      **LV_NONRES_HANDOVER),
     {"inspectedAt": "2026-12-02T10:00:00+08:00", "inspectors": ["liuyang"], "result": "FAIL"}, "rectifyList"),
    ("signContract", _midsale("signContract", **LV_RES_HANDOVER),
     {"contractNo": "GYD-2026-0001", "signedAt": "2026-12-01", "validYears": 6}, "validYears"),
    ("installMeterAndConnect", _midsale("installMeterAndConnect", send_first=("msgCompletionReported",),
                                        **HV_PLAIN_HANDOVER),
     {"meterAssetNo": "3310001234567890", "initialReading": 0, "sealNos": ["HN-2026-000123"],
      "connectedAt": "2026-12-02T10:00:00+08:00"}, "ctRatio"),  # read-only meteringMode 1 (高供高计)
]


@pytest.mark.parametrize(("form", "reach", "bad", "field"), REFUSALS,
                         ids=[f"{r[0]}-{r[3]}" for r in REFUSALS])
def test_invalid_form_is_refused_and_changes_nothing(engine, clock, form, reach, bad, field):
    clock.set(at("2026-12-01T09:00:00"))
    instance_id = reach(engine, clock)
    [task] = [t for t in engine.tasks(instance_id=instance_id) if t.form_key == form][:1]
    before = (engine.instance(instance_id).variables, ready_ids(engine, instance_id), len(engine.history(instance_id)))
    with pytest.raises(InvalidInput, match=field):
        engine.complete(task.id, bad, user=task.assignee)
    after = (engine.instance(instance_id).variables, ready_ids(engine, instance_id), len(engine.history(instance_id)))
    assert after == before
    assert engine.task(task.id).state == "open"


def test_invalid_technical_guidance_is_refused(engine, clock):
    clock.set(at("2026-12-01T09:00:00"))
    number = "202612019005"
    instance_id = start_midsale(engine, number, **HV_PLAIN_HANDOVER)
    try:
        send(engine, "msgGuidanceRequest", number, {"question": "无功补偿配置"})
    except NotFound as exc:
        pytest.xfail(f"event sub-process message start not routed yet (lead's fix): {exc}")
    [task] = [t for t in engine.tasks(instance_id=instance_id) if t.bpmn_id == "technicalGuidance"]
    before = engine.instance(instance_id).variables
    with pytest.raises(InvalidInput, match="guidance"):
        engine.complete(task.id, {"topic": "EQUIPMENT", "guidance": "见附件"}, user="am01")
    assert engine.instance(instance_id).variables == before
