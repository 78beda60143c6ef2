"""Form schemas of the pre-sale and mid-sale processes (presale_plan, midsale_connection).

Every user task of processes/presale_plan.bpmn and processes/midsale_connection.bpmn has a JSON Schema
(draft 2020-12) in forms/<formKey>.schema.json. These tests read the real files: each schema is valid,
speaks Chinese to the operator, accepts a realistic filled-in form and rejects what the data dictionary
(SERVICE_FLOWS §8) and the forms of §12/§13 forbid — bad phone numbers, a capacity of 0, unknown codes,
missing conditional fields.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator, FormatChecker
from lxml import etree

ROOT = Path(__file__).resolve().parent.parent
FORMS = ROOT / "forms"
PROCESSES = [ROOT / "processes" / "presale_plan.bpmn", ROOT / "processes" / "midsale_connection.bpmn"]
BPMN_NS = "http://www.omg.org/spec/BPMN/20100524/MODEL"
CAMUNDA_NS = "http://camunda.org/schema/1.0/bpmn"
CJK = re.compile(r"[\u4e00-\u9fff]")
DATE_TIME_CHECKED = "date-time" in FormatChecker.checkers
# Written by other engineers and reused here (their own tests cover them).
SHARED = {"superviseOverdue", "superviseReopen"}


def form_keys_in_processes() -> set[str]:
    keys = set()
    for path in PROCESSES:
        for task in etree.parse(str(path)).iter(f"{{{BPMN_NS}}}userTask"):
            keys.add(task.get(f"{{{CAMUNDA_NS}}}formKey") or task.get("id"))
    return keys


def load(key: str) -> dict:
    return json.loads((FORMS / f"{key}.schema.json").read_text(encoding="utf-8"))


def errors(key: str, data: dict) -> list[str]:
    validator = Draft202012Validator(load(key), format_checker=FormatChecker())
    return [f"{'.'.join(map(str, e.absolute_path)) or '(form)'}: {e.message}" for e in validator.iter_errors(data)]


# One realistic, complete submission per form (what an operator would type).
EXAMPLES: dict[str, dict] = {
    "acceptRequest": {
        "channel": "COUNTER",
        "requestType": "APPLY",
        "customerName": "湖南星沙精密制造有限公司",
        "contactName": "王芳",
        "contactPhone": "0731-84561234",
        "elecAddress": "长沙县星沙经济开发区漓湘路88号",
        "urbanRuralFlag": "01",
        "businessType": "HV_NEW",
        "voltageLevel": "AC00101",
        "powerSourceCount": 2,
        "newCapacityKva": 2500,
        "elecCategory": "INDUSTRY_COMMERCE",
        "importanceLevel": "03",
        "description": "新建厂房用电，计划 2025 年 6 月投产，其中精密加工车间要求双电源。",
    },
    "answerConsult": {
        "answerText": "低压居民新装需提供户主身份证原件和房屋产权证明，可通过网上国网或营业厅办理。",
        "knowledgeRef": "KB-YK-0012",
        "answeredNow": True,
    },
    "handleTransferredConsult": {
        "answerText": "已电话告知客户新装所需资料、收费标准（低压居民免收费）及办理渠道。",
        "replyMethod": "PHONE",
        "repliedAt": "2025-03-05T11:00:00+08:00",
        "knowledgeRef": "KB-YK-0012",
    },
    "reviewMaterials": {
        "certType": "04",
        "certNo": "91430121MA4L0H3P1A",
        "elecCategory": "INDUSTRY_COMMERCE",
        "propertyProofProvided": True,
        "licenceProvided": True,
        "equipmentListProvided": False,
        "acceptWithIdOnly": True,
        "missingItems": ["EQUIPMENT_LIST"],
        "surveyByClerk": False,
    },
    "dispatchSurvey": {"surveyorId": "zhao.lei", "appointmentAt": "2025-03-05T09:00:00+08:00"},
    "fieldSurvey": {
        "surveyedAt": "2025-03-05T10:30:00+08:00",
        "approvedCategory": "INDUSTRY_COMMERCE",
        "approvedVoltage": "AC00101",
        "approvedCapacityKva": 2500,
        "accessPointInfo": "110kV星沙变电站10kV星沙I线、II线",
        "receivingPointInfo": "厂区东侧配电室",
        "meteringPointInfo": "配电室高压计量柜",
        "needGridProject": True,
        "equipment": [{"name": "干式变压器", "model": "SCB13-1250/10", "qty": 2, "capacityKva": 1250}],
        "photos": ["F-20250305-101", "F-20250305-102"],
        "canSupply": True,
    },
    "explainNoSupply": {
        "explanation": "该地块尚无公用配电网覆盖，规划线路预计 2025 年底建成，届时可重新申请。",
        "deliveryMethod": "ONLINE",
        "deliveredAt": "2025-03-06T15:00:00+08:00",
        "advice": "线路建成后可通过网上国网重新提交申请，原资料可继续使用。",
    },
    "draftPlan": {
        "needGridProject": True,
        "powerSourceCount": 2,
        "supplyVoltage": "AC00101",
        "powerSources": [
            {"sourceNo": "1", "nature": "10", "capacityKva": 2500, "sourcePointInfo": "星沙变10kV星沙I线912间隔"},
            {"sourceNo": "2", "nature": "20", "capacityKva": 2500, "sourcePointInfo": "星沙变10kV星沙II线924间隔"},
        ],
        "meteringMode": "1",
        "priceType": "IC_TWO_PART",
        "meterSpec": "2",
        "meterAccuracy": "0.2S",
        "ctRatio": "150/5",
        "propertyBoundary": "02",
        "gridPlannedFinish": "2025-05-30",
        "feesPreview": [{"name": "高可靠性供电费", "unitPrice": 160, "qty": 2500, "amount": 400000,
                         "basis": "省物价局收费文件"}],
    },
    "jointReviewPlan": {"approved": False, "reviewComment": "备用电源容量需按一级负荷重新核定。"},
    "replyPlan": {
        "replyMethod": "IN_PERSON",
        "planReplyDate": "2025-03-10",
        "customerSigned": True,
        "customerSignDate": "2025-03-11",
        "customerAccepts": False,
        "objection": "希望备用电源改为 1250kVA，以降低高可靠性供电费。",
    },
    "collectFee": {
        "feeTotal": 400000,
        "paidAmount": 400000,
        "paymentChannel": "0101",
        "receiptNo": "SF20250401001",
        "paidAt": "2025-04-01T10:20:00+08:00",
    },
    "handlePlanExpiry": {"decision": "EXTEND", "planValidUntil": "2026-06-30",
                         "reason": "客户资金到位推迟，申请延期。"},
    "gridSupportingProject": {
        "projectNo": "PW-2025-017",
        "constructionUnit": "长沙电力建设有限公司",
        "completedAt": "2025-05-28T18:00:00+08:00",
        "remark": "新建10kV电缆线路1.2km。",
    },
    "designReview": {
        "designUnit": "湖南省电力勘测设计院",
        "designUnitQualification": "电力行业（送电、变电）专业乙级",
        "drawingsReceivedAt": "2025-04-08T09:00:00+08:00",
        "result": "FAIL",
        "defects": ["接地网设计未满足 GB/T 50065 要求", "电缆沟未设排水"],
        "reviewDate": "2025-04-10",
    },
    "midInspection": {
        "inspectedAt": "2025-04-20T10:00:00+08:00",
        "inspectors": ["chen.jian", "li.hua"],
        "items": [{"item": "接地装置", "result": "PASS"}, {"item": "电缆沟防水", "result": "FAIL"}],
        "result": "FAIL",
        "rectifyList": ["电缆沟未做防水处理"],
        "photos": ["P-0420-01"],
    },
    "completionAcceptance": {
        "inspectedAt": "2025-05-20T10:00:00+08:00",
        "inspectors": ["chen.jian", "li.hua"],
        "items": [{"item": "变压器交接试验报告", "result": "PASS"}, {"item": "继电保护定值", "result": "PASS"}],
        "result": "PASS",
        "photos": ["P-0520-01", "P-0520-02"],
    },
    "signContract": {"contractNo": "GY-2025-0318", "contractType": "HV", "signedAt": "2025-05-21", "validYears": 5},
    "installMeterAndConnect": {
        "meteringMode": "1",
        "meterAssetNo": "3330001234567890123456",
        "meterType": "03",
        "wiring": "2",
        "ctRatio": "150/5",
        "initialReading": 0,
        "sealNos": ["FY-0001", "FY-0002"],
        "connectedAt": "2025-05-25T10:00:00+08:00",
        "photos": ["P-0525-01"],
    },
    "technicalGuidance": {
        "topic": "EQUIPMENT",
        "guidance": "建议选用 SCB13 型干式变压器并配置无功补偿装置，补偿后功率因数不低于 0.95。",
        "visitRequired": True,
    },
}

# Further realistic variants: the other branch of each conditional rule.
VARIANTS: list[tuple[str, dict]] = [
    ("acceptRequest", {"channel": "95598_PHONE", "requestType": "CONSULT", "contactName": "李明",
                       "contactPhone": "13912345678", "consultTopic": "PROCEDURE"}),
    ("acceptRequest", {"channel": "12345", "requestType": "APPLY", "customerNo": "4301234567", "customerName": "张伟",
                       "contactName": "张伟", "contactPhone": "13800001111", "elecAddress": "长沙市岳麓区麓山南路12号",
                       "urbanRuralFlag": "02", "businessType": "LV_RES_NEW", "voltageLevel": "TBD",
                       "newCapacityKva": 8.5, "elecCategory": "RESIDENTIAL"}),
    ("answerConsult", {"answerText": "您的问题需要客户经理核实后答复，我们会在4个工作日内联系您。",
                       "answeredNow": False, "transferTo": "MARKETING"}),
    ("reviewMaterials", {"certType": "01", "certNo": "11010519491231002X", "elecCategory": "RESIDENTIAL",
                         "acceptWithIdOnly": False, "missingItems": [], "surveyByClerk": True}),
    ("reviewMaterials", {"certType": "07", "certNo": "湘(2024)长沙市不动产权第0012345号", "acceptWithIdOnly": False,
                         "missingItems": ["ID_PROOF", "APPLICATION_FORM"], "surveyByClerk": False}),
    ("fieldSurvey", {"surveyedAt": "2025-03-05T10:30:00+08:00", "approvedCategory": "RESIDENTIAL",
                     "approvedVoltage": "AC02202", "approvedCapacityKva": 8, "accessPointInfo": "麓山线012号杆",
                     "meteringPointInfo": "单元表箱", "needGridProject": False, "photos": ["F-1"], "canSupply": False,
                     "noSupplyReason": "该地块尚无公用配电网覆盖"}),
    ("draftPlan", {"supplyVoltage": "AC02202", "powerSources": [{"sourceNo": "1", "nature": "10", "capacityKva": 8,
                                                                 "sourcePointInfo": "麓山线012号杆低压分支箱"}],
                   "meteringMode": "3", "priceType": "RESIDENTIAL", "needGridProject": False, "powerSourceCount": 1}),
    ("jointReviewPlan", {"approved": True}),
    ("replyPlan", {"planReplyDate": "2025-03-10", "customerSigned": False, "customerAccepts": True}),
    ("handlePlanExpiry", {"decision": "CANCEL", "reason": "客户放弃本次用电。"}),
    ("designReview", {"designUnit": "湖南省电力勘测设计院", "drawingsReceivedAt": "2025-04-15T09:00:00+08:00",
                      "result": "PASS"}),
    ("installMeterAndConnect", {"meteringMode": "3", "meterAssetNo": "3330009876543210987654", "wiring": "1",
                                "initialReading": 0.5, "sealNos": ["FY-1001"],
                                "connectedAt": "2025-03-12T15:00:00+08:00"}),
]

# (form, field changes, why it must be rejected). None as a value removes the field.
BAD: list[tuple[str, dict, str]] = [
    ("acceptRequest", {"contactPhone": "1381234567"}, "mobile number with 10 digits"),
    ("acceptRequest", {"contactPhone": "13812345678a"}, "phone with a letter"),
    ("acceptRequest", {"contactPhone": "12812345678"}, "mobile prefix 12"),
    ("acceptRequest", {"contactPhone": "731-84561234"}, "landline without the leading 0"),
    ("acceptRequest", {"newCapacityKva": 0}, "capacity 0"),
    ("acceptRequest", {"newCapacityKva": -5}, "negative capacity"),
    ("acceptRequest", {"channel": "WECHAT"}, "unknown channel"),
    ("acceptRequest", {"channel": "12398"}, "12398 does not start a pre-sale request"),
    ("acceptRequest", {"voltageLevel": "AC99999"}, "unknown voltage code"),
    ("acceptRequest", {"elecCategory": "大工业"}, "unknown category"),
    ("acceptRequest", {"businessType": "高压新装"}, "label instead of the code"),
    ("acceptRequest", {"customerNo": "12345"}, "户号 must have 10 digits"),
    ("acceptRequest", {"powerSourceCount": 4}, "unknown power-source count"),
    ("acceptRequest", {"elecAddress": None}, "APPLY needs the address"),
    ("acceptRequest", {"newCapacityKva": None}, "APPLY needs the capacity"),
    ("acceptRequest", {"requestType": "CONSULT"}, "CONSULT needs a topic"),
    ("acceptRequest", {"contactPhone": None}, "phone is required"),
    ("answerConsult", {"answeredNow": False}, "a transfer needs the department"),
    ("answerConsult", {"answerText": "稍后答复"}, "answer shorter than 10 characters"),
    ("handleTransferredConsult", {"replyMethod": "EMAIL"}, "unknown reply method"),
    ("handleTransferredConsult", {"repliedAt": None}, "reply time is required"),
    ("reviewMaterials", {"certType": "01", "certNo": "110105194912310021X"}, "ID number with 19 characters"),
    ("reviewMaterials", {"certType": "01", "certNo": "11010519491331002X"}, "ID number with month 13"),
    ("reviewMaterials", {"certNo": "91430121MA4L0H3P1I"}, "credit code with the letter I"),
    ("reviewMaterials", {"certType": "08"}, "unknown certificate type"),
    ("reviewMaterials", {"licenceProvided": None}, "non-residential needs the licence answer"),
    ("reviewMaterials", {"missingItems": ["PHOTO"]}, "unknown missing item"),
    ("reviewMaterials", {"acceptWithIdOnly": None}, "the gateway reads acceptWithIdOnly"),
    ("dispatchSurvey", {"surveyorId": "赵 磊"}, "user name with a space"),
    ("fieldSurvey", {"approvedCapacityKva": 0}, "approved capacity 0"),
    ("fieldSurvey", {"approvedVoltage": "TBD"}, "the survey must decide the voltage"),
    ("fieldSurvey", {"photos": []}, "at least one photo"),
    ("fieldSurvey", {"canSupply": False}, "no supply needs a reason"),
    ("fieldSurvey", {"equipment": [{"name": "变压器", "qty": 0, "capacityKva": 1250}]}, "equipment quantity 0"),
    ("fieldSurvey", {"equipment": [{"name": "变压器", "qty": 1, "capacityKva": 0}]}, "equipment capacity 0"),
    ("explainNoSupply", {"explanation": "无电网"}, "explanation shorter than 10 characters"),
    ("draftPlan", {"powerSources": [{"sourceNo": "1", "nature": "10", "capacityKva": 0, "sourcePointInfo": "星沙I线"}]},
     "power source capacity 0"),
    ("draftPlan", {"powerSources": [{"sourceNo": "1", "nature": "10", "capacityKva": 2500,
                                     "sourcePointInfo": "星沙I线"}]}, "two power sources declared, one given"),
    ("draftPlan", {"gridPlannedFinish": None}, "grid project needs a planned finish"),
    ("draftPlan", {"meteringMode": "4"}, "unknown metering mode"),
    ("draftPlan", {"meterAccuracy": "0.5"}, "unknown accuracy class"),
    ("draftPlan", {"gridPlannedFinish": "2025-13-01"}, "impossible date"),
    ("jointReviewPlan", {"reviewComment": None}, "a rejection needs a comment"),
    ("replyPlan", {"objection": None}, "no agreement without the objection"),
    ("replyPlan", {"customerSignDate": None}, "signed without a date"),
    ("replyPlan", {"replyMethod": "FAX"}, "unknown reply method"),
    ("collectFee", {"paidAmount": 0}, "amount 0"),
    ("collectFee", {"paymentChannel": "9999"}, "unknown payment channel"),
    ("collectFee", {"receiptNo": "收据1"}, "receipt number with Chinese characters"),
    ("handlePlanExpiry", {"planValidUntil": None}, "an extension needs the new date"),
    ("handlePlanExpiry", {"decision": "POSTPONE"}, "unknown decision"),
    ("gridSupportingProject", {"completedAt": None}, "completion time is required"),
    ("designReview", {"defects": None}, "FAIL needs the defects"),
    ("designReview", {"defects": []}, "FAIL needs at least one defect"),
    ("designReview", {"result": "OK"}, "unknown result"),
    ("midInspection", {"rectifyList": None}, "FAIL needs the rectification list"),
    ("midInspection", {"inspectors": []}, "at least one inspector"),
    ("completionAcceptance", {"items": [{"item": "接地", "result": "良好"}]}, "unknown item result"),
    ("signContract", {"validYears": 6}, "validity above 5 years"),
    ("signContract", {"contractType": "商业"}, "unknown contract type"),
    ("installMeterAndConnect", {"initialReading": -1}, "negative reading"),
    ("installMeterAndConnect", {"ctRatio": None}, "CT metering needs the ratio"),
    ("installMeterAndConnect", {"sealNos": []}, "at least one seal"),
    ("installMeterAndConnect", {"wiring": "三相四线"}, "label instead of the code"),
    ("technicalGuidance", {"topic": "PRICE"}, "unknown topic"),
    ("technicalGuidance", {"guidance": None}, "guidance is required"),
]

BAD_DATE_TIMES: list[tuple[str, str]] = [
    ("dispatchSurvey", "appointmentAt"),
    ("fieldSurvey", "surveyedAt"),
    ("installMeterAndConnect", "connectedAt"),
]


def changed(base: dict, changes: dict) -> dict:
    data = json.loads(json.dumps(base))
    for key, value in changes.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    return data


def test_every_user_task_of_the_sales_processes_has_a_schema():
    keys = form_keys_in_processes()
    assert keys - SHARED == set(EXAMPLES)
    for key in keys:
        assert (FORMS / f"{key}.schema.json").is_file(), key


@pytest.mark.parametrize("key", sorted(EXAMPLES))
def test_realistic_example_is_accepted(key):
    assert errors(key, EXAMPLES[key]) == []


@pytest.mark.parametrize("key,data", VARIANTS, ids=[f"{k}-{i}" for i, (k, _) in enumerate(VARIANTS)])
def test_other_branches_are_accepted(key, data):
    assert errors(key, data) == []


@pytest.mark.parametrize("key,changes,why", BAD, ids=[w for _, _, w in BAD])
def test_bad_values_are_rejected(key, changes, why):
    assert errors(key, changed(EXAMPLES[key], changes)), why


@pytest.mark.parametrize("key", sorted(EXAMPLES))
def test_unknown_fields_are_rejected(key):
    assert errors(key, changed(EXAMPLES[key], {"remarkFree": "多余字段"}))


@pytest.mark.skipif(not DATE_TIME_CHECKED, reason="jsonschema has no date-time checker installed")
@pytest.mark.parametrize("key,field", BAD_DATE_TIMES)
def test_date_times_need_an_offset(key, field):
    assert errors(key, changed(EXAMPLES[key], {field: "2025-03-05T09:00:00"}))
    assert errors(key, changed(EXAMPLES[key], {field: "明天上午"}))


def test_phone_accepts_mobile_and_landline_forms():
    for phone in ["13912345678", "19912345678", "025-84561234", "02584561234", "0731-8456123", "010-12345678-123"]:
        assert errors("acceptRequest", changed(EXAMPLES["acceptRequest"], {"contactPhone": phone})) == [], phone


def test_power_source_rows_follow_the_declared_count():
    single = changed(EXAMPLES["draftPlan"], {"powerSourceCount": 1})
    assert errors("draftPlan", single), "two rows for a single source"
    assert errors("draftPlan", changed(single, {"powerSources": single["powerSources"][:1]})) == []
    multi = changed(EXAMPLES["draftPlan"], {"powerSourceCount": 3})
    assert errors("draftPlan", multi), "多电源 needs at least three rows"
