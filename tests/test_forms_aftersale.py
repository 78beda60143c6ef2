"""Form schemas of the aftersale_service process (SERVICE_FLOWS §14, forms F3.x).

Every user task of processes/aftersale_service.bpmn has a JSON Schema (draft 2020-12) in
forms/<formKey>.schema.json. These tests read the real files: each schema is valid, speaks Chinese to
the operator, accepts a realistic filled-in form and rejects what the data dictionary (§8) and the
process rules forbid: malformed phone numbers and 户号, unknown enum codes, negative amounts,
date-times without a time zone, and missing conditional fields.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator, FormatChecker
from lxml import etree

ROOT = Path(__file__).resolve().parent.parent
FORMS = ROOT / "forms"
PROCESS = ROOT / "processes" / "aftersale_service.bpmn"
BPMN_NS = "http://www.omg.org/spec/BPMN/20100524/MODEL"
CAMUNDA_NS = "http://camunda.org/schema/1.0/bpmn"
CJK = re.compile(r"[\u4e00-\u9fff]")
DATE_TIME_CHECKED = "date-time" in FormatChecker.checkers

# Form keys of this process whose schemas belong to the revisit / complaint work (reused, not redefined here).
REUSED = {"superviseOverdue", "superviseReopen", "revisitCustomer"}


def form_keys_in_process() -> set[str]:
    return {task.get(f"{{{CAMUNDA_NS}}}formKey") or task.get("id")
            for task in etree.parse(str(PROCESS)).iter(f"{{{BPMN_NS}}}userTask")}


def load(key: str) -> dict:
    return json.loads((FORMS / f"{key}.schema.json").read_text(encoding="utf-8"))


def errors(key: str, data: dict) -> list[str]:
    validator = Draft202012Validator(load(key), format_checker=FormatChecker())
    return [f"{'.'.join(map(str, e.absolute_path)) or '(form)'}: {e.message}" for e in validator.iter_errors(data)]


def with_(key: str, **changes) -> dict:
    data = copy.deepcopy(EXAMPLES[key])
    data.update(changes)
    return data


def without(key: str, *names: str) -> dict:
    return {k: v for k, v in copy.deepcopy(EXAMPLES[key]).items() if k not in names}


# One realistic, complete submission per form (what an operator would type).
EXAMPLES: dict[str, dict] = {
    "acceptRepair": {
        "contactPhone": "13873101234",
        "faultAddress": "长沙市岳麓区桐梓坡路168号麓谷小区3栋2单元",
        "urbanRuralFlag": "01",
        "faultType": "NO_POWER",
        "isSafetyHazard": False,
        "scope": "SINGLE",
        "faultSide": "UNKNOWN",
        "description": "客户家中全部无电，邻居家有电，表箱内空开未跳闸。",
    },
    "guideSelfCheck": {
        "guidanceNotes": "已指导客户检查户内总开关和漏电保护器，漏保反复跳闸，疑为户内线路故障。",
        "wantsPaidService": True,
        "paidServiceDeclared": True,
    },
    "assignCrew": {
        "crewId": "QX-YL-03",
        "estimatedArrival": "2026-03-02T10:05:00+08:00",
        "delayReason": "TRAFFIC",
        "delayNote": "晚高峰麓山南路拥堵。",
    },
    "arriveOnSite": {
        "departAt": "2026-03-02T09:40:00+08:00",
        "arrivedAt": "2026-03-02T10:12:00+08:00",
        "gps": "28.2282,112.9388",
        "delayReason": "TRAFFIC",
        "delayNote": "桐梓坡路施工绕行。",
    },
    "repairAndRestore": {
        "faultCause": "EQUIPMENT",
        "actions": "表前熔断器烧断，更换 60A 熔断器后恢复送电，检查表箱接线无松动。",
        "restoredAt": "2026-03-02T10:48:00+08:00",
        "materials": [{"name": "熔断器", "model": "RT18-63/60A", "quantity": 1, "unit": "只"}],
        "needPlannedOutage": False,
        "photos": [{"fileId": "f-20260302-0101", "fileName": "更换后表箱.jpg"}],
    },
    "replyRepairOrder": {
        "departAt": "2026-03-02T09:40:00+08:00",
        "arrivedAt": "2026-03-02T10:12:00+08:00",
        "restoredAt": "2026-03-02T10:48:00+08:00",
        "handler": "wangqiang",
        "result": "表前熔断器烧断，已更换并于 10:48 恢复送电。",
    },
    "verifyIdentity": {"customerNo": "4300123456", "verifyMethod": "NAME_PHONE4", "verified": True},
    "explainBill": {
        "resolved": False,
        "disputeType": "ABNORMAL_KWH",
        "explanation": "已说明 2 月为采暖高峰，客户仍认为电量明显偏高，要求核查电能表。",
    },
    "verifyMeterData": {
        "findings": "核查发现 2 月抄表员误抄示数，多计 120 千瓦时，电能表运行正常。",
        "errorConfirmed": True,
        "corrections": [{"period": "2026-02", "correctKwh": 235}],
        "refundAmount": 70.2,
    },
    "replyBilling": {
        "replyContent": "经核查 2 月电量误抄，多计 120 千瓦时，应退电费 70.20 元，将在 3 月电费中抵扣。",
        "replyMethod": "PHONE",
    },
    "acceptNameChange": {
        "changeType": "TRANSFER",
        "customerNo": "4300123456",
        "newCustomerName": "李娟",
        "newCertType": "01",
        "newCertNo": "430104199003077425",
        "proofDocs": ["PROPERTY_PROOF", "ID_PROOF"],
        "newContactPhone": "0731-84561234",
        "addressUnchanged": True,
        "capacityUnchanged": True,
        "categoryUnchanged": True,
    },
    "settleArrears": {
        "paidAmount": 356.8,
        "paymentChannel": "0104",
        "paidAt": "2026-03-03T14:20:00+08:00",
        "receiptNo": "PAY202603031420001",
    },
    "finalReading": {"reading": 12345.6, "readAt": "2026-03-04T09:30:00+08:00", "meterAssetNo": "3340001234567"},
    "approveChange": {"approved": True, "comment": "材料齐全，同意过户。"},
    "onsiteReconnect": {"reconnectedAt": "2026-03-03T16:05:00+08:00", "meterReading": 8721.4,
                        "notes": "已恢复供电，客户在场确认。"},
    "replyReconnect": {"replyContent": "已于 3 月 3 日 16:05 恢复供电，请按时交纳电费。", "replyMethod": "SMS"},
    "planInspection": {
        "inspectors": ["zhangwei", "liqiang"],
        "targetCustomers": [
            {"customerNo": "4300123456", "customerName": "长沙某某食品有限公司",
             "elecAddress": "长沙市雨花区环保路 88 号"},
            {"customerNo": "4300123457"},
        ],
        "items": ["METERING", "CAPACITY", "SAFETY"],
        "plannedDate": "2026-03-10",
    },
    "onsiteInspection": {
        "inspectorIds": ["zhangwei", "liqiang"],
        "certificateShown": True,
        "findings": ["UNSEALING", "THEFT"],
        "finding": "THEFT",
        "evidence": [{"fileId": "f-20260310-0007", "fileName": "绕越计量接线.jpg"}],
        "customerRepSigned": True,
    },
    "issueResultNotice": {
        "noticeNo": "YDJC-2026-0031",
        "hazardDescription": "配电房电缆沟积水，存在触电隐患，须排水并加装盖板。",
        "rectifyDeadline": "2026-03-20",
        "customerSigned": True,
    },
    "issueViolationNotice": {
        "noticeNo": "WY-2026-0012",
        "violationType": "OVER_CAPACITY",
        "violationDetail": "合同容量 315 千伏安，现场私增一台 200 千伏安变压器运行。",
    },
    "handleViolation": {"settlement": "PAID", "paidAmount": 15600.0,
                        "notes": "客户已缴纳违约使用电费并拆除私增变压器。"},
    "meterCalibration": {
        "calibrationResult": "PASS",
        "errorPct": -0.4,
        "meterAssetNo": "3340001234567",
        "calibratedAt": "2026-03-05T15:00:00+08:00",
    },
    "replyMeterCheck": {"replyContent": "电能表校验合格（误差 -0.4%），电量计量准确。", "replyMethod": "PHONE"},
    "onsiteVerification": {
        "damagedItems": [
            {"name": "冰箱", "brandModel": "海尔 BCD-470", "quantity": 1, "claimedAmount": 3200},
            {"name": "电视机", "quantity": 1},
        ],
        "causeIsUtility": True,
        "compensation": 2150.5,
        "notes": "3 月 1 日 10kV 线路断零导致电压升高，同台区多户电器损坏。",
    },
    "replyApplianceDamage": {"replyContent": "经核实属供电原因，核定赔偿 2150.50 元，五个工作日内到账。",
                             "replyMethod": "ONSITE"},
    "handleOtherRequest": {"result": "已为客户办理电子账单订阅，次月起推送至网上国网。"},
}


def test_every_user_task_of_the_process_has_a_form_schema():
    keys = form_keys_in_process()
    assert keys == set(EXAMPLES) | REUSED
    missing = sorted(k for k in keys if not (FORMS / f"{k}.schema.json").is_file())
    assert not missing, f"user tasks without forms/<formKey>.schema.json: {missing}"


def test_supervision_tasks_use_the_shared_forms():
    tree = etree.parse(str(PROCESS))
    for task in tree.iter(f"{{{BPMN_NS}}}userTask"):
        if task.get("id").startswith("superviseOverdue_"):
            assert task.get(f"{{{CAMUNDA_NS}}}formKey") == "superviseOverdue"
    survey = tree.find(f".//{{{BPMN_NS}}}userTask[@id='surveyCall']")
    assert survey.get(f"{{{CAMUNDA_NS}}}formKey") == "revisitCustomer"


@pytest.mark.parametrize("key", sorted(EXAMPLES))
def test_schema_has_a_stable_id(key):
    assert load(key)["$id"] == f"urn:gridflow:forms:{key}"


@pytest.mark.parametrize("key", sorted(EXAMPLES))
def test_realistic_example_is_accepted(key):
    assert errors(key, EXAMPLES[key]) == []


@pytest.mark.parametrize("key", sorted(EXAMPLES))
def test_unknown_field_is_rejected(key):
    problems = errors(key, with_(key, remark="备注"))
    assert any("unexpected" in p or "Additional properties" in p for p in problems), problems


@pytest.mark.parametrize("key", sorted(EXAMPLES))
def test_each_required_field_is_required(key):
    for name in load(key)["required"]:
        problems = errors(key, without(key, name))
        assert any(f"'{name}' is a required property" in p for p in problems), (name, problems)


@pytest.mark.parametrize("phone", [
    "13873101234", "19800001111", "0731-84561234", "073184561234", "010-12345678-806", "0512-6812345",
])
@pytest.mark.parametrize("key,field", [("acceptRepair", "contactPhone"), ("acceptNameChange", "newContactPhone")])
def test_mobile_and_landline_numbers_are_accepted(key, field, phone):
    assert errors(key, with_(key, **{field: phone})) == []


@pytest.mark.parametrize("phone", [
    "12912345678",      # mobile numbers start 13–19
    "138731012345",     # 12 digits
    "1387310123",       # 10 digits
    "+8613873101234",   # R3 has no country code
    "731-84561234",     # landline needs the leading 0
    "0731-845612",      # subscriber number too short
    "１３８７３１０１２３４",  # full-width digits
    "138 7310 1234",
])
@pytest.mark.parametrize("key,field", [("acceptRepair", "contactPhone"), ("acceptNameChange", "newContactPhone")])
def test_bad_phone_numbers_are_rejected(key, field, phone):
    problems = errors(key, with_(key, **{field: phone}))
    assert any(p.startswith(f"{field}:") for p in problems), problems


@pytest.mark.parametrize("customer_no", ["430012345", "43001234567", "43001234a6", "４３００１２３４５６", ""])
def test_bad_customer_numbers_are_rejected(customer_no):
    assert any(p.startswith("customerNo:") for p in errors("verifyIdentity", with_("verifyIdentity",
                                                                                    customerNo=customer_no)))
    assert any(p.startswith("customerNo:") for p in errors("acceptNameChange", with_("acceptNameChange",
                                                                                      customerNo=customer_no)))
    plan = with_("planInspection", targetCustomers=[{"customerNo": customer_no}])
    assert any(p.startswith("targetCustomers.0.customerNo:") for p in errors("planInspection", plan))


@pytest.mark.skipif(not DATE_TIME_CHECKED, reason="date-time format checking needs rfc3339-validator")
@pytest.mark.parametrize("value", ["2026-03-02 10:12", "2026-03-02T10:12:00", "2026/03/02T10:12:00+08:00", "明天上午"])
def test_date_times_need_iso_8601_with_offset(value):
    assert any(p.startswith("arrivedAt:") for p in errors("arriveOnSite", with_("arriveOnSite", arrivedAt=value)))
    assert any(p.startswith("restoredAt:") for p in errors("repairAndRestore", with_("repairAndRestore",
                                                                                      restoredAt=value)))


@pytest.mark.parametrize("value", ["2026-3-20", "20260320", "2026-03-20T00:00:00+08:00", "3月20日"])
def test_dates_are_plain_yyyy_mm_dd(value):
    """The rectification deadline feeds a timer (end of that day, +08:00), so only YYYY-MM-DD passes."""
    problems = errors("issueResultNotice", with_("issueResultNotice", rectifyDeadline=value))
    assert any(p.startswith("rectifyDeadline:") for p in problems), problems


@pytest.mark.parametrize("key,changes,field", [
    ("acceptRepair", {"urbanRuralFlag": "04"}, "urbanRuralFlag"),
    ("acceptRepair", {"faultSide": "NEIGHBOUR"}, "faultSide"),
    ("acceptRepair", {"faultType": "无电"}, "faultType"),
    ("acceptRepair", {"faultAddress": "岳麓区"}, "faultAddress"),
    ("acceptRepair", {"isSafetyHazard": "否"}, "isSafetyHazard"),
    ("explainBill", {"disputeType": "电量异常"}, "disputeType"),
    ("settleArrears", {"paidAmount": 0}, "paidAmount"),
    ("settleArrears", {"paidAmount": -10}, "paidAmount"),
    ("settleArrears", {"paidAmount": 12.345}, "paidAmount"),
    ("settleArrears", {"paymentChannel": "CASH"}, "paymentChannel"),
    ("finalReading", {"reading": -1}, "reading"),
    ("verifyMeterData", {"refundAmount": -70.2}, "refundAmount"),
    ("verifyMeterData", {"corrections": [{"period": "2026-13", "correctKwh": 235}]}, "corrections.0.period"),
    ("verifyMeterData", {"corrections": [{"period": "2026-02", "correctKwh": -5}]}, "corrections.0.correctKwh"),
    ("repairAndRestore", {"materials": [{"name": "熔断器", "quantity": 0}]}, "materials.0.quantity"),
    ("onsiteVerification", {"damagedItems": []}, "damagedItems"),
    ("onsiteVerification", {"damagedItems": [{"name": "冰箱", "quantity": 0}]}, "damagedItems.0.quantity"),
    ("onsiteVerification", {"compensation": -1}, "compensation"),
    ("meterCalibration", {"calibrationResult": "合格"}, "calibrationResult"),
    ("meterCalibration", {"errorPct": 150}, "errorPct"),
    ("planInspection", {"inspectors": ["zhangwei"]}, "inspectors"),
    ("planInspection", {"inspectors": ["zhangwei", "zhangwei"]}, "inspectors"),
    ("planInspection", {"targetCustomers": []}, "targetCustomers"),
    ("planInspection", {"items": []}, "items"),
    ("onsiteInspection", {"inspectorIds": ["zhangwei"]}, "inspectorIds"),
    ("onsiteInspection", {"certificateShown": False}, "certificateShown"),
    ("onsiteInspection", {"finding": "OK"}, "finding"),
    ("onsiteInspection", {"findings": ["THEFT", "THEFT"]}, "findings"),
    ("acceptNameChange", {"addressUnchanged": False}, "addressUnchanged"),
    ("acceptNameChange", {"capacityUnchanged": False}, "capacityUnchanged"),
    ("acceptNameChange", {"categoryUnchanged": False}, "categoryUnchanged"),
    ("acceptNameChange", {"proofDocs": []}, "proofDocs"),
    ("acceptNameChange", {"newCertType": "08"}, "newCertType"),
    ("handleViolation", {"settlement": "UNPAID"}, "settlement"),
    ("arriveOnSite", {"gps": "长沙岳麓区"}, "gps"),
])
def test_data_dictionary_values_are_enforced(key, changes, field):
    problems = errors(key, with_(key, **changes))
    assert any(p.startswith(f"{field}:") for p in problems), problems


@pytest.mark.parametrize("cert_type,cert_no,ok", [
    ("01", "430104199003077425", True),
    ("01", "43010419900307742X", True),
    ("01", "4301041990030774", False),          # 16 digits
    ("01", "430104199013077425", False),        # month 13
    ("01", "030104199003077425", False),        # region code cannot start with 0
    ("04", "91430100MA4L0OIZS1", False),        # I/O/S/V/Z are not used in 统一社会信用代码
    ("04", "91430100MA4L0ABC12", True),
    ("04", "91430100MA4L0ABC1", False),         # 17 characters
    ("04", "9143O100MA4L0ABC12", False),        # letter O inside the 6-digit region code
    ("03", "E12345678", True),                  # passports: free text 1–50
])
def test_certificate_number_rules_follow_the_certificate_type(cert_type, cert_no, ok):
    problems = errors("acceptNameChange", with_("acceptNameChange", newCertType=cert_type, newCertNo=cert_no))
    assert (problems == []) is ok, problems


def test_conditional_requirements():
    # a paid visit must have been declared to the customer first (S14)
    assert any("paidServiceDeclared" in p for p in errors("guideSelfCheck", without("guideSelfCheck",
                                                                                   "paidServiceDeclared")))
    assert any(p.startswith("paidServiceDeclared:")
               for p in errors("guideSelfCheck", with_("guideSelfCheck", paidServiceDeclared=False)))
    assert errors("guideSelfCheck", {"wantsPaidService": False}) == []
    # a downed line, smoke or fire is always a safety hazard; "other" needs a description
    assert any(p.startswith("isSafetyHazard:")
               for p in errors("acceptRepair", with_("acceptRepair", faultType="LINE_DOWN_FIRE")))
    assert errors("acceptRepair", with_("acceptRepair", faultType="LINE_DOWN_FIRE", isSafetyHazard=True)) == []
    assert any("description" in p for p in errors("acceptRepair", without("acceptRepair", "description") | {
        "faultType": "OTHER"}))
    # delay reasons need an explanation
    assert any("delayNote" in p for p in errors("arriveOnSite", without("arriveOnSite", "delayNote")))
    assert errors("arriveOnSite", without("arriveOnSite", "delayReason", "delayNote")) == []
    assert any("delayNote" in p for p in errors("assignCrew", without("assignCrew", "delayNote") | {
        "delayReason": "OTHER"}))
    # identity verified: say how; not resolved: say what the dispute is
    assert any("verifyMethod" in p for p in errors("verifyIdentity", without("verifyIdentity", "verifyMethod")))
    assert errors("verifyIdentity", {"customerNo": "4300123456", "verified": False}) == []
    assert any("disputeType" in p for p in errors("explainBill", without("explainBill", "disputeType")))
    assert errors("explainBill", {"resolved": True}) == []
    # a confirmed error needs the corrected kWh per month; no error, no corrections
    assert any("corrections" in p for p in errors("verifyMeterData", without("verifyMeterData", "corrections")))
    assert any(p.startswith("corrections:")
               for p in errors("verifyMeterData", with_("verifyMeterData", corrections=[])))
    assert any(p.startswith("corrections:") for p in errors("verifyMeterData", with_("verifyMeterData",
                                                                                      errorConfirmed=False)))
    assert errors("verifyMeterData", without("verifyMeterData", "corrections") | {"errorConfirmed": False}) == []
    # a refusal needs a reason
    assert any("rejectReason" in p for p in errors("approveChange", {"approved": False}))
    assert errors("approveChange", {"approved": False, "rejectReason": "新户主未结清原户欠费。"}) == []
    # violation and theft need evidence
    for finding in ("VIOLATION", "THEFT"):
        assert any("evidence" in p for p in errors("onsiteInspection", without("onsiteInspection", "evidence") | {
            "finding": finding}))
    assert errors("onsiteInspection", without("onsiteInspection", "evidence", "findings") | {"finding": "NORMAL"}) == []
    # paid violation: the amount; utility-caused damage: the compensation, otherwise none
    assert any("paidAmount" in p for p in errors("handleViolation", {"settlement": "PAID"}))
    assert errors("handleViolation", {"settlement": "REFUSED"}) == []
    assert any("compensation" in p for p in errors("onsiteVerification", without("onsiteVerification",
                                                                                 "compensation")))
    assert any(p.startswith("compensation:")
               for p in errors("onsiteVerification", with_("onsiteVerification", causeIsUtility=False)))
    assert errors("onsiteVerification", with_("onsiteVerification", causeIsUtility=False, compensation=0)) == []


def test_blank_texts_are_rejected():
    assert any(p.startswith("result:") for p in errors("handleOtherRequest", {"result": "     "}))
    assert any(p.startswith("actions:") for p in errors("repairAndRestore", with_("repairAndRestore",
                                                                                  actions="\t\t\t\t\t")))
    assert any(p.startswith("replyContent:") for p in errors("replyBilling", {"replyContent": "好"}))
