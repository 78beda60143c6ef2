"""``gridflow demo``: a simulated week of a 95598 service centre on a fresh embedded SQLite database.

Customer cases arrive across the four flows during the week; operators complete their tasks with
realistic form data (see :mod:`engine.simulation`), some of them late, so that reminders (催办),
supervision tasks (督办) and escalations (升级) fire on the simulated clock. Everything goes through
the Engine API, exactly as the CLI and integrators use it. A seed reproduces a run.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from .api import Engine
from .clock import SHANGHAI, FixedClock
from .errors import GridflowError, NotFound
from .simulation import FormFiller

PROCESSES_DIR = Path(__file__).resolve().parent.parent / "processes"
WEEK_START = datetime(2026, 12, 7, 8, 30, tzinfo=SHANGHAI)  # a Monday
TICK = timedelta(minutes=15)
CHANNELS = ["95598_PHONE", "95598_PHONE", "95598_PHONE", "95598_WEB", "APP_WSGW", "COUNTER", "12345", "12398"]
SERVICE_TYPES = ["REPAIR", "REPAIR", "REPAIR", "BILL_QUERY", "NAME_CHANGE", "RECONNECT", "METER_CHECK",
                 "APPLIANCE_DAMAGE", "OTHER"]


@dataclass
class FlowMix:
    key: str
    label: str
    share: float
    start: Callable[[Engine, random.Random, str, datetime], Any]


def _start_complaint(engine: Engine, rng: random.Random, number: str, now: datetime):
    data = {"workOrderNo": number, "channel": rng.choice(CHANNELS), "registeredAt": now.isoformat()}
    return engine.correlate("msgComplaint", {"workOrderNo": number}, data, user="95598")


def _start_aftersale(engine: Engine, rng: random.Random, number: str, now: datetime):
    """A 95598 service request with the customer's account data, as the start event's payload expects."""
    from handlers.simulated_systems import account

    service = rng.choice(SERVICE_TYPES)
    customer_no = "43" + "".join(rng.choice("0123456789") for _ in range(8))
    acct = account(customer_no)
    data = {"workOrderNo": number, "serviceType": service, "channel": rng.choice(CHANNELS[:5]),
            "acceptedAt": now.isoformat(), "customerNo": customer_no, "customerName": acct.customer_name,
            "contactPhone": acct.contact_phone, "elecAddress": acct.elec_address,
            "importanceLevel": "02" if rng.random() < 0.05 else "05"}
    if service == "METER_CHECK":
        data["meterCheckKind"] = rng.choice(["CALIBRATION", "ANOMALY"])
    return engine.correlate("msgServiceRequest", {"workOrderNo": number}, data, user="95598")


def _start_presale(engine: Engine, rng: random.Random, number: str, now: datetime):
    """The intake's ``msgRequestReceived``: the 12-digit application number and the channel (presale_plan.md)."""
    return engine.correlate("msgRequestReceived", {"applicationNo": number, "business_key": number},
                            {"channel": rng.choice(CHANNELS[:5])}, user="95598")


FLOWS = [
    FlowMix("complaint_handling", "投诉", 0.35, _start_complaint),
    FlowMix("aftersale_service", "售后", 0.45, _start_aftersale),
    FlowMix("presale_plan", "售前", 0.20, _start_presale),
]
FLOW_LABELS = {"presale_plan": "售前", "midsale_connection": "售中", "aftersale_service": "售后",
               "complaint_handling": "投诉", "revisit": "回访"}


def _form_overrides(form_key: str | None, rng: random.Random, now: datetime,
                    case: dict[str, Any] | None = None) -> dict[str, Any]:
    """Operator behaviour that keeps cases realistic: most reviews pass, most customers are satisfied."""
    if form_key == "reviewResult":
        return {"approved": rng.random() < 0.85}
    if form_key == "revisitCustomer":
        reached = rng.random() < 0.85
        return {"reached": reached, "resolved": rng.random() < 0.9, "wantsToComplain": rng.random() < 0.04,
                "satisfaction": rng.choices(["SATISFIED", "BASIC", "UNSATISFIED"], [75, 18, 7])[0]} if reached \
            else {"reached": False}
    if form_key == "reviewComplaint":
        return {"decision": rng.choices(["CLOSE", "REHANDLE", "TERMINATE_SERVICE"], [80, 15, 5])[0]}
    if form_key == "superviseOverdue":
        decision = rng.choice(["EXTEND", "REASSIGN", "ESCALATE"])
        extra = {"EXTEND": {"newDueAt": (now + timedelta(days=1)).isoformat()},
                 "REASSIGN": {"newAssignee": rng.choice(["陈敏", "周杰", "吴静"])},
                 "ESCALATE": {"newSeverity": "MAJOR"}}[decision]
        return {"decision": decision, "reason": "已超过规定时限，督促尽快办理", **extra}
    if form_key == "registerComplaint":
        return {"injuryOrSafety": rng.random() < 0.03, "importantCustomerOutage": rng.random() < 0.03,
                "mediaInvolved": rng.random() < 0.02, "affectedCustomerCount": 1 if rng.random() < 0.95 else 6,
                "staffMisconduct": rng.random() < 0.05, "escalationTendency": rng.random() < 0.1}
    if form_key in AFTERSALE_FORMS:
        return _aftersale_overrides(form_key, rng, now)
    if form_key in SALES_FORMS:
        return _sales_overrides(form_key, rng, now, case or {})
    return {}


AFTERSALE_FORMS = {"acceptRepair", "guideSelfCheck", "arriveOnSite", "repairAndRestore", "verifyIdentity",
                   "explainBill", "verifyMeterData", "acceptNameChange", "settleArrears", "finalReading",
                   "approveChange", "onsiteReconnect", "planInspection", "onsiteInspection", "issueResultNotice",
                   "handleViolation", "meterCalibration", "onsiteVerification"}


def _resident_id(rng: random.Random) -> str:
    """A 居民身份证 number with a valid R1 check digit (Changsha, born 1960–2000)."""
    from handlers.aftersale import R1_CHECK, R1_WEIGHTS

    body = f"430104{rng.randint(1960, 2000)}{rng.randint(1, 12):02d}{rng.randint(1, 28):02d}{rng.randint(0, 999):03d}"
    return body + R1_CHECK[sum(int(d) * w for d, w in zip(body, R1_WEIGHTS, strict=True)) % 11]


def _aftersale_overrides(form_key: str, rng: random.Random, now: datetime) -> dict[str, Any]:
    """After-sale fields the schema alone cannot fill realistically (GPS, YYYY-MM periods, ID numbers, …)."""
    def minutes_ago(low: int, high: int) -> str:
        return (now - timedelta(minutes=rng.randint(low, high))).isoformat()

    if form_key == "acceptRepair":
        fault = rng.choices(["NO_POWER", "PARTIAL_POWER", "VOLTAGE_ABNORMAL", "LINE_DOWN_FIRE", "METERING_FAULT"],
                            [50, 20, 12, 5, 13])[0]
        return {"faultType": fault, "isSafetyHazard": fault == "LINE_DOWN_FIRE",
                "faultSide": rng.choices(["UTILITY", "UNKNOWN", "CUSTOMER"], [50, 30, 20])[0],
                "urbanRuralFlag": rng.choices(["01", "02", "03"], [70, 25, 5])[0]}
    if form_key == "guideSelfCheck":
        return {"wantsPaidService": rng.random() < 0.3, "paidServiceDeclared": True}
    if form_key == "arriveOnSite":
        return {"departAt": minutes_ago(30, 50), "arrivedAt": minutes_ago(1, 10),
                "gps": f"{28.1 + rng.random() * 0.2:.4f},{112.9 + rng.random() * 0.1:.4f}"}
    if form_key in ("repairAndRestore", "onsiteReconnect"):
        return {"restoredAt" if form_key == "repairAndRestore" else "reconnectedAt": minutes_ago(1, 10)}
    if form_key == "verifyIdentity":
        return {"verified": rng.random() < 0.9, "verifyMethod": "NAME_PHONE4"}
    if form_key == "explainBill":
        return {"resolved": rng.random() < 0.5}
    if form_key == "verifyMeterData":
        error = rng.random() < 0.4
        period = f"{now - timedelta(days=30):%Y-%m}"
        return {"errorConfirmed": error,
                "corrections": [{"period": period, "correctKwh": rng.randint(150, 400)}] if error else []}
    if form_key == "acceptNameChange":
        if rng.random() < 0.3:
            return {"newCertType": "04", "newCertNo": "91430100MA4L0ABC1K", "proofDocs": ["LICENSE_CHANGE"]}
        return {"newCertType": "01", "newCertNo": _resident_id(rng), "proofDocs": ["PROPERTY_PROOF", "ID_PROOF"]}
    if form_key == "settleArrears":
        return {"paidAt": minutes_ago(1, 20), "paymentChannel": rng.choice(["0104", "0208", "0209", "0101"])}
    if form_key == "finalReading":
        return {"reading": round(rng.uniform(6000, 90000), 1), "readAt": minutes_ago(5, 60)}
    if form_key == "approveChange":
        return {"approved": True} if rng.random() < 0.9 else {"approved": False, "rejectReason": "证明材料不齐全"}
    if form_key == "planInspection":
        return {"inspectors": ["zhangwei", "liqiang"], "plannedDate": f"{now + timedelta(days=3):%Y-%m-%d}"}
    if form_key == "onsiteInspection":
        finding = rng.choices(["NORMAL", "HAZARD", "VIOLATION", "THEFT"], [70, 15, 10, 5])[0]
        evidence = [{"fileId": f"f-{rng.randint(1, 99999):05d}", "fileName": "现场照片.jpg"}]
        return {"inspectorIds": ["zhangwei", "liqiang"], "certificateShown": True, "finding": finding,
                "evidence": evidence if finding in ("VIOLATION", "THEFT") else []}
    if form_key == "issueResultNotice":
        return {"rectifyDeadline": f"{now + timedelta(days=7):%Y-%m-%d}"}
    if form_key == "handleViolation":
        paid = rng.random() < 0.8
        return {"settlement": "PAID", "paidAmount": float(rng.randint(500, 20000))} if paid \
            else {"settlement": "REFUSED"}
    if form_key == "meterCalibration":
        passed = rng.random() < 0.9
        return {"calibrationResult": "PASS" if passed else "OUT_OF_TOLERANCE",
                "errorPct": round(rng.uniform(-1.5, 1.5) if passed else rng.uniform(2.5, 6), 1)}
    if form_key == "onsiteVerification":
        utility = rng.random() < 0.5
        return {"damagedItems": [{"name": rng.choice(["冰箱", "空调", "电视机", "洗衣机"]), "quantity": 1}],
                "causeIsUtility": utility, "compensation": float(rng.randint(200, 3000)) if utility else 0}
    return {}


SALES_FORMS = {"acceptRequest", "answerConsult", "reviewMaterials", "dispatchSurvey", "fieldSurvey", "draftPlan",
               "jointReviewPlan", "replyPlan", "collectFee", "handlePlanExpiry", "designReview", "midInspection",
               "completionAcceptance", "installMeterAndConnect"}
# the messages a waiting presale / midsale customer sends (processes/*.md, Messages)
CUSTOMER_MESSAGES = {"presale_plan": ("msgMaterialsSupplied",),
                     "midsale_connection": ("msgDesignSubmitted", "msgMidInspectionRequested", "msgRectified",
                                            "msgCompletionReported")}
# presale applications: (weight, businessType, voltages, elecCategory, kVA range, sources, importance levels)
APPLICATIONS = [
    (45, "LV_RES_NEW", ["AC02202"], "RESIDENTIAL", (4, 16), 1, ["05"]),
    (22, "LV_NONRES_NEW", ["AC03802", "AC03802", "TBD"], "INDUSTRY_COMMERCE", (30, 95), 1, ["05"]),
    (18, "HV_NEW", ["AC00101"], "INDUSTRY_COMMERCE", (315, 2000), 1, ["05", "05", "04"]),
    (8, "HV_NEW", ["AC00101", "AC00351"], "INDUSTRY_COMMERCE", (1600, 6300), 2, ["02", "03"]),
    (7, "HV_TEMP", ["AC00101"], "INDUSTRY_COMMERCE", (200, 800), 1, ["05"]),
]
COMPANY_NAMES = ["湖南湘江食品有限公司", "长沙麓谷精密电子有限公司", "星沙万象商业广场有限公司", "岳麓印务有限公司",
                 "芙蓉国际酒店有限公司", "天心冷链物流有限公司", "开福新型建材有限公司", "雨花机械制造有限公司"]
PERSON_NAMES = ["李秀英", "王建国", "张伟", "刘芳", "陈敏", "杨洋", "黄磊", "赵静", "周杰", "吴娟"]
STREETS = ["岳麓区桐梓坡路", "芙蓉区五一大道", "天心区劳动西路", "开福区湘江中路", "雨花区韶山北路", "长沙县星沙大道"]


def _sales_overrides(form_key: str, rng: random.Random, now: datetime, case: dict[str, Any]) -> dict[str, Any]:
    """Presale / midsale answers whose rules depend on other fields or on the case (see processes/*.md, Forms)."""
    today = now.date().isoformat()
    hv = case.get("customerClass") not in (None, "LV_RES", "LV_NONRES")
    if form_key == "acceptRequest":
        contact = rng.choice(PERSON_NAMES)
        phone = "1" + rng.choice("3578") + "".join(rng.choice("0123456789") for _ in range(9))
        if rng.random() < 0.3:
            return {"requestType": "CONSULT", "contactName": contact, "contactPhone": phone,
                    "consultTopic": rng.choice(["POLICY", "PROCEDURE", "PRICE", "CONNECTION"])}
        _, business, voltages, category, (low, high), sources, levels = rng.choices(
            APPLICATIONS, [a[0] for a in APPLICATIONS])[0]
        residential = category == "RESIDENTIAL"
        address = f"长沙市{rng.choice(STREETS)}{rng.randint(1, 399)}号" + (
            f"{rng.randint(1, 30)}栋{rng.randint(1, 30)}0{rng.randint(1, 4)}室" if residential else "")
        return {"requestType": "APPLY", "customerName": contact if residential else rng.choice(COMPANY_NAMES),
                "contactName": contact, "contactPhone": phone, "elecAddress": address,
                "urbanRuralFlag": rng.choices(["01", "02"], [80, 20])[0], "businessType": business,
                "voltageLevel": rng.choice(voltages), "elecCategory": category, "powerSourceCount": sources,
                "newCapacityKva": rng.randint(low, high), "importanceLevel": rng.choice(levels)}
    if form_key == "answerConsult":
        now_ = rng.random() < 0.7
        return {"answeredNow": now_, **({} if now_ else {"transferTo": rng.choice(["MARKETING", "DEVELOPMENT"])})}
    if form_key == "reviewMaterials":
        residential = case.get("elecCategory") == "RESIDENTIAL"
        choices = ["PROPERTY_PROOF", "PROXY"] if residential else ["PROPERTY_PROOF", "EQUIPMENT_LIST", "PROXY"]
        missing = [] if rng.random() < 0.8 else rng.sample(choices, 2)
        data = {"certType": "01" if residential else "04", "acceptWithIdOnly": rng.random() < 0.1,
                "certNo": _resident_id(rng) if residential else "91430100MA4L0H3P1A", "missingItems": missing,
                "surveyByClerk": case.get("customerClass") == "LV_RES" and rng.random() < 0.5}
        if not residential:
            data["licenceProvided"] = True
        return data
    if form_key == "dispatchSurvey":
        return {"surveyorId": rng.choice(["zhangqiang", "liyang", "wanglei"]),
                "appointmentAt": (now + timedelta(hours=rng.randint(2, 20))).isoformat()}
    if form_key == "fieldSurvey":
        voltage = case.get("voltageLevel")
        if voltage in (None, "TBD"):
            voltage = "AC00101" if hv else "AC03802"
        supply = rng.random() < 0.95
        data = {"approvedCategory": case.get("elecCategory") or "INDUSTRY_COMMERCE", "approvedVoltage": voltage,
                "approvedCapacityKva": case.get("newCapacityKva") or 10,
                "needGridProject": hv and rng.random() < 0.3,
                "photos": [f"survey/{case.get('applicationNo', 'x')}-1.jpg"], "canSupply": supply}
        return data if supply else {**data, "noSupplyReason": "周边线路已满载，暂无可用接入间隔"}
    if form_key == "draftPlan":
        capacity = case.get("approvedCapacityKva") or case.get("totalCapacityKva") or 10
        count = int(case.get("powerSourceCount") or 1)
        natures = ["10", "20", "30"]
        data = {"supplyVoltage": case.get("approvedVoltage") or "AC02202", "meteringMode": "1" if hv else "3",
                "priceType": "IC_TWO_PART" if hv else (
                    "RESIDENTIAL" if case.get("customerClass") == "LV_RES" else "IC_SINGLE"),
                "powerSources": [{"sourceNo": str(i + 1), "nature": natures[min(i, 2)], "capacityKva": capacity,
                                  "sourcePointInfo": f"110kV变电站10kV 9{rng.randint(10, 40)}线"}
                                 for i in range(count)]}
        if hv:
            data["ctRatio"] = rng.choice(["100/5", "200/5", "300/5"])
        if case.get("needGridProject"):
            data["gridPlannedFinish"] = (now + timedelta(days=rng.randint(10, 40))).date().isoformat()
        return data
    if form_key == "jointReviewPlan":
        return {"approved": True} if rng.random() < 0.85 else {"approved": False, "reviewComment": "电源接入点需调整"}
    if form_key == "replyPlan":
        accepts = rng.random() < 0.85
        data = {"planReplyDate": today, "customerSigned": accepts, "customerAccepts": accepts}
        return {**data, "customerSignDate": today} if accepts else {**data, "objection": "对产权分界点有异议"}
    if form_key == "collectFee":
        return {"paidAmount": case.get("feeTotal") or 0.01, "paymentChannel": rng.choice(["0104", "0208", "0101"])}
    if form_key == "handlePlanExpiry":
        if rng.random() < 0.7:
            return {"decision": "EXTEND", "reason": "客户申请延期",
                    "planValidUntil": (now + timedelta(days=90)).date().isoformat()}
        return {"decision": "CANCEL", "reason": "客户终止办理"}
    if form_key == "designReview":
        passed = rng.random() < 0.8
        return {"result": "PASS"} if passed else {"result": "FAIL", "defects": ["未设置双电源闭锁装置"]}
    if form_key in ("midInspection", "completionAcceptance"):
        passed = rng.random() < 0.8
        data = {"inspectors": ["liuyang", "chenjie"], "result": "PASS" if passed else "FAIL"}
        return data if passed else {**data, "rectifyList": ["接地电阻不合格"]}
    if form_key == "installMeterAndConnect":
        data = {"sealNos": [f"HN-{rng.randint(100000, 999999)}"], "connectedAt": now.isoformat()}
        if case.get("meteringMode") in ("1", "2"):
            data["ctRatio"] = case.get("ctRatio") or "200/5"
        return data
    return {}


@dataclass
class DemoReport:
    """What the demo prints: per-flow counts, SLA adherence, reminders, escalations, complaint severities."""

    cases: Counter = field(default_factory=Counter)
    completed: Counter = field(default_factory=Counter)
    open: Counter = field(default_factory=Counter)
    errors: Counter = field(default_factory=Counter)
    tasks_done: int = 0
    tasks_with_due: int = 0
    tasks_on_time: int = 0
    reminders: int = 0
    supervisions: int = 0
    escalations: int = 0
    severities: Counter = field(default_factory=Counter)
    skipped: list[str] = field(default_factory=list)
    started_at: datetime | None = None
    ended_at: datetime | None = None

    @property
    def sla_met_percent(self) -> float:
        return 100.0 * self.tasks_on_time / self.tasks_with_due if self.tasks_with_due else 100.0


class ServiceCentre:
    """The simulation: arrivals, operators, the clock; one instance per run."""

    def __init__(self, engine: Engine, clock: FixedClock, cases: int, days: int, seed: int, late_share: float):
        self.engine, self.clock = engine, clock
        self.rng = random.Random(seed)
        self.filler = FormFiller(self.rng, clock.now)
        self.cases, self.days, self.late_share = cases, days, late_share
        self.planned: dict[str, datetime] = {}
        self.customer_due: dict[str, datetime] = {}
        self.report = DemoReport()

    def arrivals(self, flows: list[FlowMix]) -> list[tuple[datetime, FlowMix]]:
        """Case arrival instants, working hours weighted, spread over the simulated days."""
        weights = [f.share for f in flows]
        arrivals = []
        for _ in range(self.cases):
            day = self.rng.randrange(self.days)
            minute = int(self.rng.triangular(0, 13 * 60, 3 * 60))
            arrivals.append((WEEK_START + timedelta(days=day, minutes=minute),
                             self.rng.choices(flows, weights)[0]))
        return sorted(arrivals, key=lambda a: a[0])

    def plan(self, task) -> datetime:
        """When an operator will finish this task: mostly soon, ``late_share`` of them after the due time."""
        if task.due_at is not None and self.rng.random() < self.late_share:
            return max(task.due_at, task.created_at) + timedelta(hours=self.rng.uniform(1, 30))
        return task.created_at + timedelta(minutes=self.rng.expovariate(1 / 50))

    def customers(self) -> None:
        """Customers of presale/midsale cases that wait on them (documents, design, construction,
        rectification, completion report) act a few hours to two days later."""
        now = self.clock.now()
        for key, names in CUSTOMER_MESSAGES.items():
            for instance in self.engine.instances(key=key, status="running", limit=100000):
                if instance.ready_tasks:
                    continue
                due = self.customer_due.setdefault(instance.id, now + timedelta(hours=self.rng.uniform(2, 48)))
                if due > now:
                    continue
                del self.customer_due[instance.id]
                number = instance.business_key or instance.variables.get("applicationNo")
                for name in names:
                    try:
                        self.engine.correlate(name, {"applicationNo": number}, {}, ttl="PT0S", user="customer")
                        break
                    except NotFound:
                        continue
                    except GridflowError as exc:
                        self.report.errors[f"customer {name}: {type(exc).__name__}"] += 1
                        break

    def work(self) -> None:
        now = self.clock.now()
        tasks = self.engine.tasks(limit=5000)
        # a stable order (ids are random UUIDs), so that one seed gives one run
        for task in sorted(tasks, key=lambda t: (t.created_at, t.business_key or "", t.bpmn_id, t.name)):
            planned = self.planned.setdefault(task.id, self.plan(task))
            if planned > now:
                continue
            case = self.engine.instance(task.instance_id).variables
            data = self.filler.fill(self.engine.form_schema(task.id),
                                    _form_overrides(task.form_key, self.rng, now, case), case)
            assignee = self.engine.task(task.id).assignee  # may have changed earlier in this tick (督办 改派)
            try:
                self.engine.complete(task.id, data, user=assignee or None)
            except GridflowError as exc:
                self.report.errors[f"{task.form_key}: {exc}"[:160]] += 1
                self.planned[task.id] = now + timedelta(hours=1)
                continue
            self.report.tasks_done += 1

    def run(self, flows: list[FlowMix], progress: Callable[[int, int], None] | None = None) -> DemoReport:
        arrivals = self.arrivals(flows)
        end = WEEK_START + timedelta(days=self.days)
        ticks = int((end - WEEK_START) / TICK)
        self.report.started_at = WEEK_START
        serial = 0
        for tick in range(ticks):
            now = self.clock.now()
            while arrivals and arrivals[0][0] <= now:
                _, flow = arrivals.pop(0)
                serial += 1
                number = f"{now:%Y%m%d}{serial:04d}"
                try:
                    flow.start(self.engine, self.rng, number, now)
                    self.report.cases[flow.key] += 1
                except GridflowError as exc:
                    self.report.errors[f"start {flow.key}: {type(exc).__name__}"] += 1
            self.engine.run_due()
            self.engine.run_jobs("demo-worker", limit=200)
            self.customers()
            self.work()
            self.clock.advance(TICK)
            if progress:
                progress(tick + 1, ticks)
        self.report.ended_at = self.clock.now()
        self._summarize()
        return self.report

    def _summarize(self) -> None:
        report = self.report
        report.cases.clear()  # count every case of the week, also those started by other cases' messages
        for key in FLOW_LABELS:
            if key == "revisit":
                continue
            for instance in self.engine.instances(key=key, limit=100000):
                report.cases[key] += 1
                if instance.status == "completed":
                    report.completed[key] += 1
                elif instance.status == "error":
                    report.errors[f"{key} in error"] += 1
                else:
                    report.open[key] += 1
                if key == "complaint_handling" and instance.variables.get("severity"):
                    report.severities[instance.variables["severity"]] += 1
                for event in self.engine.history(instance.id):
                    topic = event.data.get("topic") if event.type == "handler_completed" else None
                    report.reminders += topic == "sendReminder"
                    report.escalations += topic == "notifyManager"
        for item in self.engine.tasks(include_closed=True, limit=10**7):
            if item.state != "completed":
                continue
            report.supervisions += (item.form_key == "superviseOverdue")
            if item.due_at is not None:
                report.tasks_with_due += 1
                report.tasks_on_time += item.completed_at <= item.due_at


def deployable_processes(engine: Engine, directory: Path = PROCESSES_DIR) -> tuple[list[Path], list[str]]:
    """The process files that pass lint, and one line per file left out (with its first error)."""
    files = sorted(directory.glob("*.bpmn"))
    inspection = engine.lint(files)
    by_file: dict[str, list[str]] = {}
    for issue in inspection.errors:
        by_file.setdefault(issue.file, []).append(str(issue))
    skipped = [f"{Path(name).name}: {len(errors)} error(s), first: {errors[0]}" for name, errors in by_file.items()]
    return [f for f in files if str(f) not in by_file], skipped


def run_demo(db_path: Path, cases: int = 300, seed: int = 7, days: int = 7, late_share: float = 0.15,
             progress: Callable[[int, int], None] | None = None) -> DemoReport:
    """Run the simulated week on a fresh SQLite file at ``db_path`` (replaced if it exists)."""
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db_path}{suffix}").unlink(missing_ok=True)
    clock = FixedClock(WEEK_START)
    engine = Engine(f"sqlite:///{db_path}", clock=clock)
    try:
        files, skipped = deployable_processes(engine)
        engine.deploy(files, user="demo")
        deployed = {d.key for d in engine.definitions()}
        flows = [f for f in FLOWS if f.key in deployed]
        centre = ServiceCentre(engine, clock, cases, days, seed, late_share)
        report = centre.run(flows, progress)
        report.skipped = skipped
        return report
    finally:
        engine.close()
