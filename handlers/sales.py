"""售前 presale_plan and 售中 midsale_connection (SERVICE_FLOWS §12, §13; processes/presale_plan.md and
processes/midsale_connection.md list every element, input and output).

Presale: D1 customer classification (``classifyCustomer``, ``reclassifyCustomer``), the 一次性告知 of missing
documents and the withdrawal after ``materials.wait``, the plan-stage and transferred-consult clocks
(``computeDue`` defaults, D2 budgets), the plan validity, the ``msgPlanAccepted`` payload, the policy guide.
Midsale: the connection fees, the plan-expiry instant, the step clocks (grid work, design review, interim and
final inspection, connection, technical guidance), the written rectification notices, archiving and account
creation with the SLA ledger check of §9.2.

Every limit, threshold and price comes from the case's policy version (``handlers/data/policy.json``): the D1
voltage codes and ``lvMaxKw``, ``yk.stepBudgets`` (D2), ``yk.*`` limits and ceilings, ``fee.tariff``,
``materials.wait``, ``yk.planValidity.*``. Instants are aware datetimes in Asia/Shanghai; dates are
``YYYY-MM-DD`` strings. Labels shown to customers come from the form schemas' ``oneOf`` titles, so a code has
one Chinese name everywhere.

Other systems are outbox messages (written to the instance history with the step) or deterministic
simulations (:mod:`handlers.simulated_systems`, seeded by the case numbers), never network calls:

=============  =====================================================  ===========================================
outbox         meaning                                                sent by
=============  =====================================================  ===========================================
``sms``        SMS / 网上国网 message to the customer or to staff      notifyMissing, closeWithdrawn, sendPolicyInfo,
                                                                      reclassifyCustomer, the fee reminder,
                                                                      archiveAndCreateAccount
``letter``     一次性书面告知 (written notice of all defects)           notifyRectify
``marketing``  account creation (建档立户) in the 营销业务系统 (SG186)   archiveAndCreateAccount
=============  =====================================================  ===========================================

Simulated: the existing capacity of an account for 增容 (``simulated_systems.account(customerNo).contract_kw``,
read as kVA) and the new 户号 (10 digits derived from the application number, so a retried step assigns the
same number). Replace :func:`existing_capacity_kva` and :func:`new_customer_no` to integrate.

Shared topics used by these flows live elsewhere: ``computeDue`` in :mod:`handlers.timing` (this module
registers the defaults of the elements that name no policy key), ``prepareRevisit`` / ``closeOrder`` in
:mod:`handlers.aftersale`, ``sendReminder`` / ``applySupervision`` / ``notifyManager`` in
:mod:`handlers.sla_actions` (this module registers the customer-side 催缴 of ``collectFee``).
"""

from __future__ import annotations

from datetime import date, datetime, time
from decimal import Decimal
from functools import cache
from typing import Any

from engine.forms import FormRegistry
from engine.policy import PolicyVersion
from engine.sla import SHANGHAI, SlaInstants, parse_duration
from handlers import handler

from . import simulated_systems as sim
from .common import after, as_instant, calendar, local_text, notify, policy, render
from .simulated_systems import money
from .sla_actions import CUSTOMER_REMINDERS
from .timing import register_default_step, step_instants

HOTLINE = "95598"
RESIDENTIAL = "RESIDENTIAL"
LV_CLASSES = ("LV_RES", "LV_NONRES")
CLASS_LABELS = {"LV_RES": "低压居民", "LV_NONRES": "低压非居民", "HV_SINGLE": "高压单电源", "HV_DUAL": "高压双电源"}
INCREASE_TYPES = ("HV_INCREASE",)  # 增容: the account's existing capacity counts in totalCapacityKva
RESIDENTIAL_TYPES = ("LV_RES_NEW",)
# §5.4 application materials (codes of F1.3 missingItems; their names come from the form)
MATERIALS_RESIDENTIAL = ("APPLICATION_FORM", "ID_PROOF", "PROPERTY_PROOF", "PROXY")
MATERIALS_NONRESIDENTIAL = ("APPLICATION_FORM", "ID_PROOF", "BUSINESS_LICENCE", "PROXY", "PROJECT_APPROVAL",
                            "PROPERTY_PROOF", "EQUIPMENT_LIST")
APPLY_CHANNELS = ("网上国网App", "95598网站", "供电营业厅")
RECTIFY_STEPS = {  # notifyRectify element -> (list variable, step label, what the customer does next, counter)
    "notifyDesignRectify": ("defects", "受电工程设计审查", "修改设计后重新报送设计文件", "designRectifyCount"),
    "notifyMidRectify": ("rectifyList", "中间检查", "整改完成后申请复查", "midRectifyCount"),
    "notifyCompletionRectify": ("rectifyList", "竣工检验", "整改完成后申请复验", "completionRectifyCount"),
}
# every field of the msgPlanAccepted payload (§12); one that was never filled travels as None
HANDOVER_FIELDS = (
    "applicationNo", "policyVersion", "acceptedAt", "customerNo", "customerName", "contactName", "contactPhone",
    "elecAddress", "urbanRuralFlag", "businessType", "elecCategory", "importanceLevel", "powerSourceCount",
    "totalCapacityKva", "customerClass", "approvedCapacityKva", "approvedVoltage", "approvedCategory",
    "needGridProject", "supplyVoltage", "powerSources", "meteringMode", "priceType", "meterSpec", "meterAccuracy",
    "ctRatio", "propertyBoundary", "gridPlannedFinish", "feesPreview", "planValidUntil", "slaLedger",
)


# -- helpers ----------------------------------------------------------------------------------------
@cache
def _labels(form_key: str, field: str) -> dict[str, str]:
    """``{code: 中文名}`` of a form field's ``oneOf`` (of its items for a list)."""
    schema = FormRegistry().schema(form_key) or {}
    prop = schema.get("properties", {}).get(field, {})
    options = prop.get("oneOf") or prop.get("items", {}).get("oneOf") or []
    return {str(o["const"]): o.get("title", str(o["const"])) for o in options if "const" in o}


def _label(form_key: str, field: str, code: Any, default: str = "") -> str:
    if code is None or code == "":
        return default
    return _labels(form_key, field).get(str(code), str(code))


def _name(variables: dict[str, Any]) -> str:
    return variables.get("customerName") or variables.get("contactName") or "客户"


def _as_date(value: Any) -> date | None:
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value.astimezone(SHANGHAI).date()
    if isinstance(value, date):
        return value
    return date.fromisoformat(str(value)[:10])


def end_of_day(day: date) -> datetime:
    """23:59:59 Asia/Shanghai of ``day`` (an expiry date as a timer instant)."""
    return datetime.combine(day, time(23, 59, 59), SHANGHAI)


def _date_text(day: date) -> str:
    return f"{day.year}年{day.month}月{day.day}日"


def _yuan(amount: float | Decimal) -> str:
    return f"{Decimal(str(amount)):.2f}"


def _notice_id(prefix: str, ctx) -> str:
    """A notice number, the same on every attempt of the same step (idempotent)."""
    return prefix + sim.seed_number(ctx.idempotency_key, digits=10)


def _refs(version: PolicyVersion, customer_class: str) -> dict[str, str]:
    """D2: the policy keys of a class's step budgets (``yk.stepBudgets``), ``{step: key}``."""
    table = version.table("yk.stepBudgets")
    if customer_class not in table:
        raise ValueError(f"customerClass {customer_class!r} is not one of {', '.join(table)} (yk.stepBudgets, "
                         f"policy version {version.id})")
    return {step: entry["ref"] for step, entry in table[customer_class].items()}


def step_key(version: PolicyVersion, customer_class: str, step: str) -> str:
    refs = _refs(version, customer_class)
    if step not in refs:
        raise ValueError(f"customer class {customer_class} has no '{step}' step in yk.stepBudgets "
                         f"(policy version {version.id})")
    return refs[step]


def yk_budgets(version: PolicyVersion, customer_class: str) -> dict[str, Any]:
    """D2 ``computeYkBudgets``: per-step budgets (WD), their regulatory ceilings and the class total."""
    refs = _refs(version, customer_class)
    steps = {step: key for step, key in refs.items() if step != "total"}
    return {"ykBudgets": {step: version.wd(key) for step, key in steps.items()},
            "ykCeilings": {step: version.ceiling_wd(key) for step, key in steps.items()},
            "ykTotalBudget": version.wd(refs["total"])}


def _instants(step: str, key: str, instants: SlaInstants) -> dict[str, Any]:
    """The variables of one step's clock, named like :mod:`handlers.timing` names them."""
    return {f"{step}RemindAt": instants.remind_at, f"{step}Remind80At": instants.remind_at_80,
            f"{step}DueAt": instants.due_at, f"{step}CapAt": instants.cap_at,
            f"{step}CapIsCeiling": instants.cap_is_ceiling, f"{step}SlaKey": key}


def plan_instants(version: PolicyVersion, customer_class: str, start: datetime) -> dict[str, Any]:
    """T1/T2/T3 of the plan-reply stage (``yk.plan.<class>``, lead ``reminder.lead.plan``) from ``start``."""
    key = step_key(version, customer_class, "plan")
    return _instants("plan", key, step_instants(version, key, start, "reminder.lead.plan"))


def classify(version: PolicyVersion, voltage: Any, category: Any, source_count: Any, capacity_kva: Any) -> str:
    """D1 (first matching row): LV by set membership of the voltage code; the TBD voltage is LV up to
    ``lvMaxKw`` (kVA × ``customer.powerFactor`` compared as kW); HV with ≥ ``customer.dualSourceMin`` sources
    is HV_DUAL."""
    if voltage in set(version.table("customer.lvVoltageCodes")):
        low = True
    elif voltage == version.text("customer.tbdVoltageCode"):
        kw = float(capacity_kva or 0) * float(version.number("customer.powerFactor"))
        low = kw <= float(version.number("lvMaxKw"))
    else:
        low = False
    if low:
        return "LV_RES" if category == RESIDENTIAL else "LV_NONRES"
    dual = int(source_count or 1) >= int(version.number("customer.dualSourceMin"))
    return "HV_DUAL" if dual else "HV_SINGLE"


def existing_capacity_kva(customer_no: str) -> float:
    """The account's contracted capacity before a 增容 (simulated marketing system; kW read as kVA)."""
    return float(sim.account(customer_no).contract_kw)


def new_customer_no(application_no: str) -> str:
    """The 户号 the marketing system assigns to a new account (simulated: 10 digits from the application)."""
    return sim.seed_number("account", application_no, digits=10)


# -- presale: classification and documents -----------------------------------------------------------
@handler("classifyCustomer")
def classify_customer(variables: dict[str, Any], ctx) -> dict[str, Any]:
    """D1 on the acceptance values; defaults the gateways need (``powerSourceCount`` 1, ``importanceLevel``
    '05'); ``totalCapacityKva`` = ``newCapacityKva`` plus, for 增容 of a known 户号, the existing capacity."""
    version, recorded = policy(variables, ctx.now)
    sources = int(variables.get("powerSourceCount") or 1)
    new_kva = float(variables.get("newCapacityKva") or 0)
    original = 0.0
    if variables.get("businessType") in INCREASE_TYPES and variables.get("customerNo"):
        original = existing_capacity_kva(str(variables["customerNo"]))
    customer_class = classify(version, variables.get("voltageLevel"), variables.get("elecCategory"), sources, new_kva)
    return {**recorded, "customerClass": customer_class, "customerClassLabel": CLASS_LABELS[customer_class],
            "powerSourceCount": sources, "importanceLevel": variables.get("importanceLevel") or "05",
            "originalCapacityKva": original, "totalCapacityKva": new_kva + original,
            "customerNo": variables.get("customerNo"), "applicationStatus": "REVIEWING"}


@handler("notifyMissing")
def notify_missing(variables: dict[str, Any], ctx) -> dict[str, Any]:
    """一次性告知: one notice listing every missing item; the customer has ``materials.wait`` to supply them."""
    version, recorded = policy(variables, ctx.now)
    wait = version.duration("materials.wait")
    deadline = after(ctx.now, wait)
    items = [_label("reviewMaterials", "missingItems", code) for code in variables.get("missingItems") or []]
    notice_id = _notice_id("QJ", ctx)
    notify(ctx, "sms", variables.get("contactPhone") or "", "missing_items_notice.j2",
           customerName=_name(variables), applicationNo=variables.get("applicationNo") or ctx.business_key or "",
           businessLabel=_label("acceptRequest", "businessType", variables.get("businessType"), "用电申请"),
           items=items or ["其他资料"], waitDays=(deadline.date() - ctx.now.astimezone(SHANGHAI).date()).days,
           deadline=f"{deadline.month}月{deadline.day}日", hotline=HOTLINE)
    return {**recorded, "materialsWait": wait, "materialsDeadline": deadline, "missingNoticeId": notice_id,
            "missingNotifiedAt": ctx.now, "missingNoticeCount": int(variables.get("missingNoticeCount") or 0) + 1,
            "applicationStatus": "WAITING_MATERIALS"}


@handler("closeWithdrawn")
def close_withdrawn(variables: dict[str, Any], ctx) -> dict[str, Any]:
    """No documents within ``materials.wait``: the application is withdrawn and the customer told."""
    notified = as_instant(variables.get("missingNotifiedAt"))
    notify(ctx, "sms", variables.get("contactPhone") or "", "application_withdrawn.j2",
           customerName=_name(variables), applicationNo=variables.get("applicationNo") or ctx.business_key or "",
           noticeDate=local_text(notified).split(" ")[0] if notified else "", hotline=HOTLINE)
    return {"applicationStatus": "WITHDRAWN", "withdrawnAt": ctx.now}


@handler("sendPolicyInfo")
def send_policy_info(variables: dict[str, Any], ctx) -> dict[str, Any]:
    """用电政策 / 办电指南 with the materials checklist of ``businessType`` (a generic guide without one)."""
    business = variables.get("businessType")
    codes = MATERIALS_RESIDENTIAL if business in RESIDENTIAL_TYPES or not business else MATERIALS_NONRESIDENTIAL
    materials = [_label("reviewMaterials", "missingItems", code) for code in codes]
    if not business:
        materials.append("非居民另需营业执照及用电设备清单")
    notification_id = _notice_id("ZN", ctx)
    notify(ctx, "sms", variables.get("contactPhone") or "", "policy_info.j2",
           contactName=variables.get("contactName") or _name(variables),
           topicLabel=_label("acceptRequest", "consultTopic", variables.get("consultTopic")),
           businessLabel=_label("acceptRequest", "businessType", business), materials=materials,
           channels=list(APPLY_CHANNELS), hotline=HOTLINE)
    return {"notificationId": notification_id, "policyInfoSentAt": ctx.now}


# -- presale: the clocks (computeDue defaults) --------------------------------------------------------
def _plan_due(variables: dict[str, Any], ctx, version: PolicyVersion) -> dict[str, Any]:
    """``computeDue`` at acceptance of a complete application: ``acceptedAt``, D2 budgets, plan instants,
    the renegotiation counter and the review threshold (§12 row 12)."""
    customer_class = variables["customerClass"]
    return {"acceptedAt": ctx.now, **yk_budgets(version, customer_class),
            **plan_instants(version, customer_class, ctx.now),
            "negotiationRound": 0, "maxRenegotiations": int(version.number("yk.plan.maxRenegotiations")),
            "reviewThresholdKva": version.number("yk.review.thresholdKva"), "overdue": False,
            "applicationStatus": "ACCEPTED"}


def _consult_due(variables: dict[str, Any], ctx, version: PolicyVersion) -> dict[str, Any]:
    """Transferred consultation: ``consult.transferred.reply`` working days from the transfer."""
    key = "consult.transferred.reply"
    return {**_instants("consult", key, step_instants(version, key, ctx.now)), "consultTransferredAt": ctx.now,
            "overdue": False}


def _class_step(step: str):
    """``computeDue`` for a midsale step whose limit depends on ``customerClass`` (``yk.stepBudgets``)."""

    def compute(variables: dict[str, Any], ctx, version: PolicyVersion) -> dict[str, Any]:
        key = step_key(version, variables["customerClass"], step)
        return {**_instants(step, key, step_instants(version, key, ctx.now)), "overdue": False}

    compute.__qualname__ = f"compute_{step}_due"
    return compute


def _grid_due(variables: dict[str, Any], ctx, version: PolicyVersion) -> dict[str, Any]:
    """Grid work: due = min(end of ``gridPlannedFinish``, now + ``yk.grid.max``); T1 = due − ``reminder.lead``
    (clamp rule); T3 = due + 1 WD (no regulatory ceiling)."""
    cal = calendar()
    key = "yk.grid.max"
    limit = cal.add_working_days(ctx.now, version.wd(key))
    planned = _as_date(variables.get("gridPlannedFinish"))
    due = min(limit, end_of_day(planned)) if planned else limit
    remind = cal.subtract_working_days(due, version.wd("reminder.lead"))
    remind_80 = None
    if remind <= ctx.now:  # clamp rule of §9.1: fractions of the budget
        first, second = (float(f) for f in version.table("reminder.hourFractions"))
        remind, remind_80 = ctx.now + (due - ctx.now) * first, ctx.now + (due - ctx.now) * second
    instants = SlaInstants(remind, due, cal.add_working_days(due, 1), remind_80, cap_is_ceiling=False)
    return {**_instants("grid", key, instants), "gridDueCappedByPolicy": bool(planned) and limit < end_of_day(planned),
            "overdue": False}


def _guidance_due(variables: dict[str, Any], ctx, version: PolicyVersion) -> dict[str, Any]:
    key = "guidance.reply"
    return {**_instants("guidance", key, step_instants(version, key, ctx.now)), "overdue": False}


for _element, _compute in {
    "computeDue": _plan_due, "computeConsultDue": _consult_due, "computeGridDue": _grid_due,
    "computeDesignDue": _class_step("design"), "computeMidDue": _class_step("mid"),
    "computeCompleteDue": _class_step("complete"), "computeConnectDue": _class_step("connect"),
    "computeGuidanceDue": _guidance_due,
}.items():
    register_default_step(_element, _compute)


# -- presale: survey, plan, handover ------------------------------------------------------------------
@handler("reclassifyCustomer")
def reclassify_customer(variables: dict[str, Any], ctx) -> dict[str, Any]:
    """D1 again on the surveyed values (they override the acceptance values). When the class changes, the
    plan instants are recomputed from ``acceptedAt`` and the waiting ``subPlan`` timers re-armed (§9.3); the
    account manager is told. Also the ``feesPreview`` dry-run shown on F1.6 (a dual-source plan is previewed
    with a full-capacity backup source; the plan's ``powerSources`` decide the real fee)."""
    version, recorded = policy(variables, ctx.now)
    previous = variables.get("customerClass")
    approved_kva = float(variables.get("approvedCapacityKva") or variables.get("totalCapacityKva") or 0)
    sources = int(variables.get("powerSourceCount") or 1)
    customer_class = classify(version, variables.get("approvedVoltage"), variables.get("approvedCategory"),
                              sources, approved_kva)
    result: dict[str, Any] = {**recorded, "customerClass": customer_class,
                              "customerClassLabel": CLASS_LABELS[customer_class], "totalCapacityKva": approved_kva,
                              "previousCustomerClass": previous, "reclassified": customer_class != previous}
    preview_sources = [{"nature": "10", "capacityKva": approved_kva}]
    if customer_class == "HV_DUAL":
        preview_sources.append({"nature": "20", "capacityKva": approved_kva})
    result["feesPreview"] = fee_lines(version, customer_class, variables.get("businessType"), preview_sources,
                                      variables.get("approvedVoltage"), approved_kva)
    if customer_class != previous:
        accepted = as_instant(variables.get("acceptedAt")) or ctx.now
        result.update(yk_budgets(version, customer_class))
        result.update(plan_instants(version, customer_class, accepted))
        ctx.rearm_timers()
        ctx.emit("sms", "accountManager",
                 f"申请{variables.get('applicationNo') or ctx.business_key or ''}经现场勘查由"
                 f"{CLASS_LABELS.get(previous, previous or '未分类')}调整为{CLASS_LABELS[customer_class]}，"
                 f"供电方案答复时限调整为{local_text(result['planDueAt'])}。")
    return result


@handler("computePlanValidity")
def compute_plan_validity(variables: dict[str, Any], ctx) -> dict[str, Any]:
    """``planValidUntil`` = ``planReplyDate`` + ``yk.planValidity.HV`` / ``.LV`` (S18); ``planExpiresAt`` is the
    end of that day. A sign date before the reply date (F1.7 rule JSON Schema cannot check) is flagged and the
    account manager asked to correct the 答复单."""
    version, recorded = policy(variables, ctx.now)
    reply = _as_date(variables.get("planReplyDate")) or ctx.now.astimezone(SHANGHAI).date()
    kind = "LV" if variables.get("customerClass") in LV_CLASSES else "HV"
    start = datetime.combine(reply, time(), SHANGHAI)
    valid = parse_duration(version.duration(f"yk.planValidity.{kind}")).add_to(start).date()
    result = {**recorded, "planValidUntil": valid.isoformat(), "planExpiresAt": end_of_day(valid),
              "planRepliedAt": ctx.now, "planSignDateInvalid": False}
    signed = _as_date(variables.get("customerSignDate")) if variables.get("customerSigned") else None
    if signed is not None and signed < reply:
        result["planSignDateInvalid"] = True
        ctx.emit("sms", "accountManager", f"申请{variables.get('applicationNo') or ''}的供电方案答复单签收日期"
                                          f"{signed.isoformat()}早于答复日期{reply.isoformat()}，请核对更正。")
    return result


@handler("preparePlanHandover")
def prepare_plan_handover(variables: dict[str, Any], ctx) -> dict[str, Any]:
    """The ``msgPlanAccepted`` payload (§12): every field midsale reads, ``None`` when never filled."""
    handover = {name: variables.get(name) for name in HANDOVER_FIELDS}
    handover["applicationNo"] = handover["applicationNo"] or ctx.business_key
    handover["slaLedger"] = list(handover["slaLedger"] or [])
    return {"planHandover": handover, "handedOverAt": ctx.now, "applicationStatus": "PLAN_ACCEPTED"}


# -- midsale: fees and the plan's expiry --------------------------------------------------------------
def fee_lines(version: PolicyVersion, customer_class: str | None, business_type: str | None,
              power_sources: list[dict[str, Any]] | None, voltage: str | None,
              capacity_kva: Any) -> list[dict[str, Any]]:
    """The fee tariff of the province (``fee.tariff``): LV classes nothing (三零服务); HV_DUAL 高可靠性供电费 on
    Σ capacity of the 备用 sources; HV temporary supply 临时接电费 on the capacity; per kVA by voltage."""
    tariff = version.table("fee.tariff")
    if customer_class in tariff["freeClasses"]:
        return []
    lines = []

    def line(part: dict[str, Any], qty: Decimal) -> dict[str, Any]:
        prices = part["perKvaByVoltage"]
        if voltage not in prices:
            raise ValueError(f"fee.tariff {part['name']} has no price for supply voltage {voltage!r} "
                             f"(policy version {version.id}; known: {', '.join(prices)})")
        price = Decimal(str(prices[voltage]))
        return {"name": part["name"], "unitPrice": float(price), "qty": float(qty),
                "amount": float(money(price * qty)), "basis": part["basis"]}

    reliability = tariff["highReliability"]
    if customer_class in reliability["classes"]:
        backup = sum((Decimal(str(s.get("capacityKva") or 0)) for s in power_sources or []
                      if str(s.get("nature")) in reliability["backupNatures"]), Decimal(0))
        if backup > 0:
            lines.append(line(reliability, backup))
    temporary = tariff["temporary"]
    if business_type in temporary["businessTypes"]:
        lines.append(line(temporary, Decimal(str(capacity_kva or 0))))
    return lines


@handler("computeFees")
def compute_fees(variables: dict[str, Any], ctx) -> dict[str, Any]:
    """``fees[]`` ({name, unitPrice, qty, amount, basis}) and ``feeTotal`` (¥0.01) of the accepted plan."""
    version, recorded = policy(variables, ctx.now)
    fees = fee_lines(version, variables.get("customerClass"), variables.get("businessType"),
                     variables.get("powerSources"), variables.get("supplyVoltage") or variables.get("approvedVoltage"),
                     variables.get("totalCapacityKva") or variables.get("approvedCapacityKva"))
    total = money(sum((Decimal(str(f["amount"])) for f in fees), Decimal(0)))
    return {**recorded, "fees": fees, "feeTotal": float(total), "feeReminderCycle": version.cycle("fee.reminderCycle"),
            "feeReminderCount": 0, "applicationStatus": "FEE_DUE" if total > 0 else "CONSTRUCTION"}


def remind_fee(variables: dict[str, Any], ctx) -> dict[str, Any]:
    """``sendReminder_collectFee``: SMS payment reminder to the customer (customer time, no staff 催办)."""
    count = int(variables.get("feeReminderCount") or 0) + 1
    valid = _as_date(variables.get("planValidUntil"))
    notify(ctx, "sms", variables.get("contactPhone") or "", "fee_reminder.j2", customerName=_name(variables),
           applicationNo=variables.get("applicationNo") or ctx.business_key or "",
           feeItems=[f.get("name", "") for f in variables.get("fees") or []] or ["业务费"],
           feeTotalText=_yuan(variables.get("feeTotal") or 0), validUntil=_date_text(valid) if valid else "",
           remindCount=count, hotline=HOTLINE)
    return {"feeReminderCount": count, "lastFeeReminderAt": ctx.now}


CUSTOMER_REMINDERS["collectFee"] = remind_fee


@handler("computePlanExpiry")
def compute_plan_expiry(variables: dict[str, Any], ctx) -> dict[str, Any]:
    """``planExpiresAt`` = 23:59:59+08:00 of ``planValidUntil``. After an extension (F2.7 EXTEND changed
    ``planValidUntil``) the new date must be later than the one checked before, else the step fails with the
    reason (an incident the account manager resolves)."""
    valid = _as_date(variables.get("planValidUntil"))
    if valid is None:
        raise ValueError("供电方案有效期 planValidUntil 缺失，无法计算方案到期时间")
    checked = _as_date(variables.get("planValidUntilChecked"))
    extended = checked is not None and valid != checked
    if extended and valid < checked:
        raise ValueError(f"延期后的供电方案有效期 {valid.isoformat()} 早于原有效期 {checked.isoformat()}，"
                         "延期日期必须晚于原有效期")
    result = {"planExpiresAt": end_of_day(valid), "planValidUntilChecked": valid.isoformat()}
    if extended:
        result["planExtensions"] = int(variables.get("planExtensions") or 0) + 1
    return result


# -- midsale: rectification, archiving ----------------------------------------------------------------
@handler("notifyRectify")
def notify_rectify(variables: dict[str, Any], ctx) -> dict[str, Any]:
    """一次性书面告知: one written notice listing every defect (design ``defects[]``, inspections
    ``rectifyList[]``)."""
    list_name, label, next_action, counter = RECTIFY_STEPS.get(
        ctx.bpmn_id, ("rectifyList", "检查", "整改完成后申请复验", "rectifyCount"))
    items = [str(item) for item in variables.get(list_name) or []]
    notice_id = _notice_id("ZG", ctx)
    text = render("rectify_notice.j2", customerName=_name(variables),
                  applicationNo=variables.get("applicationNo") or ctx.business_key or "", stepLabel=label,
                  items=items or ["详见现场检查记录"], nextAction=next_action, noticeNo=notice_id, hotline=HOTLINE)
    ctx.emit("letter", variables.get("contactPhone") or "", text, template="rectify_notice.j2",
             address=variables.get("elecAddress"), noticeNo=notice_id)
    notices = [*(variables.get("rectifyNotices") or []),
               {"step": label, "noticeNo": notice_id, "items": items, "at": ctx.now}]
    return {"rectifyNoticeId": notice_id, "rectifyNotices": notices,
            counter: int(variables.get(counter) or 0) + 1}


@handler("archiveAndCreateAccount")
def archive_and_create_account(variables: dict[str, Any], ctx) -> dict[str, Any]:
    """信息归档 / 建档立户: a 户号 for a new account; ``utilityWdUsed`` = Σ ``slaLedger.workingDaysUsed``;
    ``totalSlaMet`` against ``yk.total.<class>`` (utility steps), for LV_RES the elapsed working days from
    ``acceptedAt`` to ``connectedAt`` (whole process, §9.2)."""
    version, recorded = policy(variables, ctx.now)
    customer_class = variables.get("customerClass")
    application_no = variables.get("applicationNo") or ctx.business_key or ""
    new_account = not variables.get("customerNo")
    customer_no = new_customer_no(application_no) if new_account else str(variables["customerNo"])
    ledger = variables.get("slaLedger") or []
    used = sum(int(entry.get("workingDaysUsed") or 0) for entry in ledger)
    total = version.wd(step_key(version, customer_class, "total"))
    connected = as_instant(variables.get("connectedAt")) or ctx.now
    accepted = as_instant(variables.get("acceptedAt"))
    elapsed = calendar().working_days_used(accepted, connected) if accepted and connected >= accepted else None
    met = (elapsed is not None and elapsed <= total) if customer_class == "LV_RES" else used <= total
    ctx.emit("marketing", "SG186", f"建档立户：申请{application_no}，户号{customer_no}，户名{_name(variables)}，"
                                   f"{CLASS_LABELS.get(customer_class, customer_class)}，"
                                   f"容量{variables.get('totalCapacityKva')}kVA，表计{variables.get('meterAssetNo')}",
             customerNo=customer_no, applicationNo=application_no, newAccount=new_account)
    notify(ctx, "sms", variables.get("contactPhone") or "", "connection_done.j2", customerName=_name(variables),
           applicationNo=application_no, customerNo=customer_no, connectedAt=local_text(connected),
           newAccount=new_account, hotline=HOTLINE)
    return {**recorded, "customerNo": customer_no, "newAccount": new_account, "utilityWdUsed": used,
            "elapsedWd": elapsed, "ykTotalBudget": total, "totalSlaMet": met, "archivedAt": ctx.now,
            "applicationStatus": "CONNECTED"}
