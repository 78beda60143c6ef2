"""Form schemas and notice templates of the complaint_handling and revisit processes.

Every user task of processes/complaint_handling.bpmn and processes/revisit.bpmn has a JSON Schema
(draft 2020-12) in forms/<formKey>.schema.json. These tests read the real files: each schema is
valid, speaks Chinese to the operator, accepts a realistic filled-in form and rejects what the data
dictionary (SERVICE_FLOWS §8) forbids — a bad phone number first of all.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import jinja2
import pytest
from jinja2 import meta
from jsonschema import Draft202012Validator, FormatChecker
from lxml import etree

ROOT = Path(__file__).resolve().parent.parent
FORMS = ROOT / "forms"
TEMPLATES = FORMS / "templates"
PROCESSES = [ROOT / "processes" / "complaint_handling.bpmn", ROOT / "processes" / "revisit.bpmn"]
BPMN_NS = "http://www.omg.org/spec/BPMN/20100524/MODEL"
CAMUNDA_NS = "http://camunda.org/schema/1.0/bpmn"
CJK = re.compile(r"[\u4e00-\u9fff]")
DATE_TIME_CHECKED = "date-time" in FormatChecker.checkers


def form_keys_in_processes() -> set[str]:
    keys = set()
    for path in PROCESSES:
        for task in etree.parse(str(path)).iter(f"{{{BPMN_NS}}}userTask"):
            keys.add(task.get(f"{{{CAMUNDA_NS}}}formKey") or task.get("id"))
    return keys


def load(key: str) -> dict:
    return json.loads((FORMS / f"{key}.schema.json").read_text(encoding="utf-8"))


def validator(key: str) -> Draft202012Validator:
    return Draft202012Validator(load(key), format_checker=FormatChecker())


def errors(key: str, data: dict) -> list[str]:
    return [f"{'.'.join(map(str, e.absolute_path)) or '(form)'}: {e.message}"
            for e in validator(key).iter_errors(data)]


# One realistic, complete submission per form (what an operator would type).
EXAMPLES: dict[str, dict] = {
    "registerComplaint": {
        "channel": "95598_PHONE",
        "customerNo": "3201004567",
        "customerName": "王建国",
        "contactPhone": "13912345678",
        "elecAddress": "南京市鼓楼区中山北路218号3栋2单元",
        "content": "本月以来小区多次无故停电，每次停电前均未收到任何通知，家中冰箱食品损坏，老人用氧设备无法使用。",
        "demand": "要求说明停电原因，今后停电提前通知，并赔偿食品损失。",
        "category": "OUTAGE",
        "subcategory": "OTHER",
        "attachments": [{"fileId": "f-20260302-0001", "fileName": "停电照片.jpg"}],
        "escalationTendency": True,
        "involvedStaff": "",
        "staffMisconduct": False,
        "occurredAt": "2026-03-01T19:40:00+08:00",
        "injuryOrSafety": False,
        "importantCustomerOutage": False,
        "mediaInvolved": False,
        "affectedCustomerCount": 1,
        "claimedLossYuan": 860.5,
    },
    "classifyComplaint": {
        "category": "OUTAGE",
        "subcategory": "OTHER",
        "severity": "MAJOR",
        "suggestedSeverity": "MAJOR",
        "handlingUnit": "南京供电公司鼓楼营业部",
    },
    "dispatchComplaint": {"handler": "zhangwei", "dispatchNote": "客户有越级倾向，请于4小时内首次联系。"},
    "contactCustomer": {
        "contactedAt": "2026-03-02T10:15:00+08:00",
        "contactResult": "CONTACTED",
        "appointment": "2026-03-02T15:00:00+08:00",
    },
    "investigateAndHandle": {
        "findings": "经查，该小区10kV线路分支箱老化，3月以来故障跳闸4次；计划停电通知未送达该楼栋。",
        "verified": True,
        "utilityResponsible": True,
        "rootCause": "OUTAGE_MANAGEMENT",
        "measures": "3月5日前更换分支箱；停电通知增加短信和楼栋公告两种方式。",
        "compensationYuan": 500,
        "evidence": [{"fileId": "f-20260303-0007", "fileName": "分支箱检修记录.pdf"}],
        "staffAccountability": "对通知未送达的责任人进行通报批评。",
    },
    "reviewResult": {"approved": True},
    "replyCustomer": {
        "replyMethod": "PHONE",
        "replyContent": ("王先生您好，经核查停电系分支箱老化所致，已于3月5日更换，"
                         "今后停电将短信和公告双重通知，食品损失按500元赔偿。"),
        "repliedAt": "2026-03-05T16:20:00+08:00",
        "customerAcknowledged": True,
    },
    "reviewComplaint": {"decision": "REHANDLE", "newHandler": "lina", "rehandleCount": 0},
    "urgentCoordination": {
        "coordinationActions": "已调派发电车保障医院供电，抢修队伍30分钟内到场。",
        "emergencyRepairOrdered": True,
        "coordinatedAt": "2026-03-02T09:50:00+08:00",
    },
    "superviseOverdue": {
        "decision": "EXTEND",
        "reason": "客户要求上门核实，需等待客户方便的时间。",
        "newDueAt": "2026-03-06T18:00:00+08:00",
    },
    "revisitCustomer": {
        "reached": True,
        "resolved": True,
        "satisfaction": "BASIC",
        "wantsToComplain": False,
        "comment": "处理还算及时，希望以后停电提前通知。",
    },
    "superviseReopen": {"reopenAction": "安排班长带队上门解释，并复查表计接线。"},
}


def test_every_user_task_of_the_two_processes_has_a_form_schema():
    keys = form_keys_in_processes()
    assert {"registerComplaint", "classifyComplaint", "dispatchComplaint", "contactCustomer",
            "investigateAndHandle", "reviewResult", "replyCustomer", "reviewComplaint",
            "urgentCoordination", "superviseOverdue", "revisitCustomer"} == keys
    missing = sorted(k for k in keys if not (FORMS / f"{k}.schema.json").is_file())
    assert not missing, f"user tasks without forms/<formKey>.schema.json: {missing}"


@pytest.mark.parametrize("key", sorted(EXAMPLES))
def test_realistic_example_is_accepted(key):
    assert errors(key, EXAMPLES[key]) == []


@pytest.mark.parametrize("key", sorted(EXAMPLES))
def test_bad_phone_number_is_rejected(key):
    """A malformed phone number never gets through: invalid in F4.1, an unknown field elsewhere."""
    data = dict(EXAMPLES[key], contactPhone="1391234567")  # 10 digits: neither mobile nor landline
    problems = errors(key, data)
    assert problems and any("contactPhone" in p for p in problems), problems


@pytest.mark.parametrize("phone", [
    "13912345678", "19800001111", "025-84561234", "02584561234", "0512-6812345", "010-12345678-806",
])
def test_register_accepts_mobile_and_landline_numbers(phone):
    assert errors("registerComplaint", dict(EXAMPLES["registerComplaint"], contactPhone=phone)) == []


@pytest.mark.parametrize("phone", [
    "12912345678",      # mobile numbers start 13–19
    "139123456789",     # 12 digits
    "1391234567x",
    "+8613912345678",   # R3 has no country code
    "25-84561234",      # landline needs the leading 0
    "025-845612",       # subscriber number too short
    "１３９１２３４５６７８",  # full-width digits
    "139 1234 5678",
])
def test_register_rejects_bad_phone_numbers(phone):
    problems = errors("registerComplaint", dict(EXAMPLES["registerComplaint"], contactPhone=phone))
    assert any(p.startswith("contactPhone:") for p in problems), problems


def test_register_rules_of_the_data_dictionary():
    base = EXAMPLES["registerComplaint"]
    assert any(p.startswith("customerNo:") for p in errors("registerComplaint", dict(base, customerNo="320100456")))
    too_short = dict(base, content="停电太多了，不满意。")
    assert any(p.startswith("content:") for p in errors("registerComplaint", too_short))
    assert any(p.startswith("channel:") for p in errors("registerComplaint", dict(base, channel="WECHAT")))
    assert any(p.startswith("affectedCustomerCount:")
               for p in errors("registerComplaint", dict(base, affectedCustomerCount=0)))
    assert any(p.startswith("claimedLossYuan:") for p in errors("registerComplaint", dict(base, claimedLossYuan=-1)))
    missing = {k: v for k, v in base.items() if k != "escalationTendency"}
    assert any("escalationTendency" in p for p in errors("registerComplaint", missing))
    assert any("unexpected" in p for p in errors("registerComplaint", dict(base, severity="URGENT")))


@pytest.mark.skipif(not DATE_TIME_CHECKED, reason="jsonschema cannot check date-time without rfc3339-validator")
def test_date_times_need_a_time_zone():
    problems = errors("contactCustomer", dict(EXAMPLES["contactCustomer"], contactedAt="2026-03-02 10:15"))
    assert any(p.startswith("contactedAt:") for p in problems), problems
    problems = errors("contactCustomer", dict(EXAMPLES["contactCustomer"], contactedAt="2026-03-02T10:15:00"))
    assert any(p.startswith("contactedAt:") for p in problems), problems


def test_changing_the_suggested_severity_needs_a_reason():
    data = dict(EXAMPLES["classifyComplaint"], severity="URGENT")
    assert any("gradeReason" in p for p in errors("classifyComplaint", data))
    assert errors("classifyComplaint", dict(data, gradeReason="医院停电，按紧急处理")) == []
    lowered = dict(EXAMPLES["classifyComplaint"], severity="GENERAL")
    assert any("gradeReason" in p for p in errors("classifyComplaint", lowered))


def test_returning_a_result_needs_a_reason():
    assert any("returnReason" in p for p in errors("reviewResult", {"approved": False}))
    assert any("returnReason" in p for p in errors("reviewResult", {"approved": False, "returnReason": "   "}))
    assert errors("reviewResult", {"approved": False, "returnReason": "未附整改完成照片"}) == []
    assert errors("reviewResult", {"approved": True, "returnReason": ""}) == []  # optional: may be sent empty


def test_review_decision_rules():
    assert any("newHandler" in p for p in errors("reviewComplaint", {"decision": "REHANDLE"}))
    assert any("legalBasis" in p for p in errors("reviewComplaint", {"decision": "TERMINATE_SERVICE"}))
    assert errors("reviewComplaint", {"decision": "TERMINATE_SERVICE",
                                      "legalBasis": "客户要求赔偿金额远超《供电营业规则》规定的范围"}) == []
    assert errors("reviewComplaint", {"decision": "CLOSE"}) == []
    # after two rehandles REHANDLE is no longer offered
    assert errors("reviewComplaint", {"decision": "REHANDLE", "newHandler": "lina", "rehandleCount": 2})
    assert errors("reviewComplaint", {"decision": "CLOSE", "rehandleCount": 2}) == []


def test_supervision_decision_rules():
    base = {"reason": "处理人休假"}
    assert any("newDueAt" in p for p in errors("superviseOverdue", dict(base, decision="EXTEND")))
    assert any("newAssignee" in p for p in errors("superviseOverdue", dict(base, decision="REASSIGN")))
    assert errors("superviseOverdue", dict(base, decision="REASSIGN", newAssignee="liuyang")) == []
    assert errors("superviseOverdue", dict(base, decision="ESCALATE"))
    assert errors("superviseOverdue", dict(base, decision="ESCALATE", newSeverity="URGENT")) == []
    assert errors("superviseOverdue", dict(base, decision="ESCALATE", newOwner="zhaomin")) == []
    assert any("reason" in p for p in errors("superviseOverdue", {"decision": "ESCALATE", "newOwner": "zhaomin"}))


def test_revisit_answers_are_required_once_the_customer_is_reached():
    problems = errors("revisitCustomer", {"reached": True})
    assert any("resolved" in p for p in problems) and any("satisfaction" in p for p in problems)
    assert errors("revisitCustomer", {"reached": False}) == []
    assert any(p.startswith("satisfaction:") for p in errors(
        "revisitCustomer", dict(EXAMPLES["revisitCustomer"], satisfaction="VERY_SATISFIED")))
    assert any(p.startswith("comment:") for p in errors(
        "revisitCustomer", dict(EXAMPLES["revisitCustomer"], comment="很" * 501)))


# ---------------------------------------------------------------- notice templates

TEMPLATE_CONTEXTS: dict[str, dict] = {
    "complaint_receipt.j2": dict(signature="国网南京供电公司", customerName="王建国", workOrderNo="TS2026030200017",
                                 registeredAt="2026年3月2日 09:30", channelLabel="95598电话",
                                 contactLimitText="24小时", replyLimitText="4个工作日", hotline="95598"),
    "reminder.j2": dict(signature="国网南京供电公司", assigneeName="张伟", taskName="联系客户",
                        workOrderNo="TS2026030200017", dueAt="3月3日 09:30", remindCount=2,
                        customerChased=True, followUpCount=2),
    "supervise_notice.j2": dict(signature="国网南京供电公司", recipientName="张伟", workOrderNo="TS2026030200017",
                                taskName="投诉处理", dueAt="3月6日 23:59", supervisorName="赵敏",
                                decision="ESCALATE", reason="客户多次催办", newDueAt="", newAssigneeName="",
                                newSeverityLabel="重大", newOwnerName=""),
    "escalation_notice.j2": dict(signature="国网南京供电公司", managerName="陈主任", workOrderNo="TS2026030200017",
                                 taskName="投诉处理", severityLabel="重大", customerName="王建国",
                                 dueAt="3月6日 23:59", capAt="3月9日 23:59", complianceBreach=True,
                                 handlerName="张伟", summary="小区多次无故停电，未提前通知"),
    "revisit_script.j2": dict(agentName="李娜", companyName="国网南京供电公司", customerName="王建国",
                              sourceOrderNo="TS2026030200017", serviceSummary="已更换老化分支箱并恢复正常供电",
                              attempt=1, isComplaint=True),
    "progress_update.j2": dict(signature="国网南京供电公司", customerName="王建国", workOrderNo="TS2026030200017",
                               severityLabel="重大", statusText="已完成现场调查，正在更换分支箱", handlerName="张伟",
                               handlerPhone="025-84561234", nextUpdateText="明天10:00前"),
    "sms_survey.j2": dict(signature="国网南京供电公司", customerName="王建国", sourceOrderNo="TS2026030200017",
                          validHours=48),
    "urgent_alert.j2": dict(signature="国网南京供电公司", workOrderNo="TS2026030200017", customerName="鼓楼医院",
                            elecAddress="南京市鼓楼区中山路321号", reasonLabels=["医院 / 重要客户停电"],
                            summary="医院门诊楼全部停电，备用电源仅能维持2小时", registeredAt="3月2日 09:12",
                            caseOwnerName="赵敏"),
    # aftersale_service notices (handlers/aftersale.py)
    "arrears_cut_notice.j2": dict(signature="国网长沙供电公司", customerName="王芳", customerNo="4300123456",
                                  workOrderNo="AS2026120100021", unpaidPeriods=["2026-10", "2026-11"],
                                  arrearsText="356.80", penaltyText="12.45", amountDueText="369.25",
                                  channelLabels=["网上国网", "支付宝", "微信", "营业网点"], reconnectLimit="24小时"),
    "outage_notice.j2": dict(signature="国网长沙供电公司", customerName="李娟", workOrderNo="AS2026120100022",
                             outageKindLabel="计划停电", area="岳麓区桐梓坡路一带", restoreAt="12月1日 14:30"),
    "notify_dispatcher_urgent.j2": dict(signature="国网长沙供电公司", workOrderNo="AS2026120100023",
                                        repairOrderNo="QXAS2026120100023", faultTypeLabel="线路断落/冒烟着火",
                                        faultAddress="长沙市望城区潇湘北路乌山段", contactPhone="13873101234",
                                        arriveDueText="12月1日 09:45", description="导线断落在路边，有火花。"),
    "arrival_apology.j2": dict(signature="国网长沙供电公司", customerName="赵敏", workOrderNo="AS2026120100024",
                               etaText="12月1日 10:10", delayReasonLabel="交通"),
    "amount_due_notice.j2": dict(signature="国网长沙供电公司", customerName="周杰", customerNo="4300123457",
                                 workOrderNo="AS2026120100025", arrearsText="512.30", penaltyText="18.60",
                                 amountDueText="530.90", channelLabels=["网上国网", "营业网点"],
                                 reconnectLimit="24小时"),
    "name_change_reject.j2": dict(signature="国网长沙供电公司", newCustomerName="李娟", customerNo="4300123458",
                                  workOrderNo="AS2026120100026", changeTypeLabel="过户",
                                  reason="新户身份证号码校验位错误"),
    "authority_report.j2": dict(signature="国网长沙供电公司", authorityLabel="公安机关", customerNo="4300123459",
                                customerName="长沙星城商贸有限公司", elecAddress="长沙市雨花区环保路88号",
                                findingLabel="窃电", amountText="166212.00", evidenceCount=2,
                                workOrderNo="AS2027010100001"),
    # presale / midsale (handlers/sales.py)
    "missing_items_notice.j2": dict(signature="国网长沙供电公司", customerName="周杰", applicationNo="202612010004",
                                    businessLabel="低压非居民新装", items=["营业执照", "用电设备清单（加盖公章）"],
                                    waitDays=30, deadline="12月31日", hotline="95598"),
    "policy_info.j2": dict(signature="国网长沙供电公司", contactName="赵敏", topicLabel="新装增容变更",
                           businessLabel="", materials=["用电申请书", "营业执照"], channels=["网上国网App"],
                           hotline="95598"),
    "application_withdrawn.j2": dict(signature="国网长沙供电公司", customerName="李秀英", applicationNo="202612010005",
                                     noticeDate="12月1日", hotline="95598"),
    "fee_reminder.j2": dict(signature="国网长沙供电公司", customerName="湖南星沙精密制造有限公司",
                            applicationNo="202612010020", feeItems=["高可靠性供电费"], feeTotalText="650000.00",
                            validUntil="2027年12月1日", remindCount=2, hotline="95598"),
    "rectify_notice.j2": dict(signature="国网长沙供电公司", customerName="湖南星沙精密制造有限公司",
                              applicationNo="202612010027", stepLabel="中间检查", items=["电缆埋深不足0.7米"],
                              nextAction="整改完成后申请复查", noticeNo="ZG0012345678", hotline="95598"),
    "connection_done.j2": dict(signature="国网长沙供电公司", customerName="李秀英", applicationNo="202612070001",
                               customerNo="7533976025", connectedAt="12月8日 14:00", newAccount=True, hotline="95598"),
}


def documented_variables(source: str) -> set[str]:
    header = re.match(r"\{#-?(.*?)-?#\}", source, re.S)
    assert header, "template must start with a {# … #} comment listing its variables"
    return set(re.findall(r"^\s{6}(\w+)\s+(?:str|int|bool|list)\b", header.group(1), re.M))


def test_every_template_has_a_sample_context():
    assert sorted(p.name for p in TEMPLATES.glob("*.j2")) == sorted(TEMPLATE_CONTEXTS)


@pytest.mark.parametrize("name", sorted(TEMPLATE_CONTEXTS))
def test_template_renders_with_its_documented_variables(name):
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), undefined=jinja2.StrictUndefined,
                             autoescape=False)
    source = (TEMPLATES / name).read_text(encoding="utf-8")
    documented = documented_variables(source)
    used = meta.find_undeclared_variables(env.parse(source))
    assert used <= documented, f"{name} uses undocumented variables {sorted(used - documented)}"
    assert set(TEMPLATE_CONTEXTS[name]) == documented
    text = env.get_template(name).render(**TEMPLATE_CONTEXTS[name])
    assert CJK.search(text) and "{{" not in text and "{%" not in text
    context = TEMPLATE_CONTEXTS[name]
    number = next((context[k] for k in ("workOrderNo", "sourceOrderNo", "applicationNo") if context.get(k)), None)
    assert number in text if number else name == "policy_info.j2"  # the consultation guide quotes no order


def test_reminder_and_supervise_notice_read_naturally():
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), undefined=jinja2.StrictUndefined)
    reminder = env.get_template("reminder.j2").render(**TEMPLATE_CONTEXTS["reminder.j2"])
    assert reminder == ("【国网南京供电公司】张伟您好：工单TS2026030200017的待办“联系客户”将于3月3日 09:30到期，"
                        "客户已第2次来电催办，这是第2次催办，请尽快处理。")
    first = env.get_template("reminder.j2").render(**dict(TEMPLATE_CONTEXTS["reminder.j2"], remindCount=1,
                                                          customerChased=False))
    assert first.endswith("到期，请尽快处理。")
    notice = env.get_template("supervise_notice.j2").render(**dict(
        TEMPLATE_CONTEXTS["supervise_notice.j2"], decision="EXTEND", newDueAt="3月9日 18:00"))
    assert "延期至3月9日 18:00" in notice and "原因：客户多次催办" in notice
