"""售后 after-sale service (SERVICE_FLOWS §14; processes/aftersale_service.bpmn and its write-up).

One work order per ``aftersale_service`` instance: repair (A), billing query (B), name change (C),
reconnection (D), usage inspection (E), meter check (F), appliance damage (G), other requests (H),
the revisit inputs, closing, and the monthly satisfaction survey.

Every limit, rate and rule comes from the case's policy version (``handlers/data/policy.json``, §0);
instants are aware datetimes in Asia/Shanghai. Data the engine does not hold — accounts, bills and
payments, outages, the remote meter — comes from :mod:`handlers.simulated_systems`, which simulates
it deterministically from the case data (seeded by the 户号, the fault address or the order number):
those functions are the integration points. Side effects on other systems are outbox messages
(``ctx.emit`` / :func:`handlers.common.notify`, written to the instance history with the step):

=========================  =============================================  ================================
outbox channel             meaning                                        sent by
=========================  =============================================  ================================
``sms``                    SMS to the customer or to staff                 most handlers (templates in
                                                                          ``forms/templates/``)
``repair``                 the 抢修 order to the 供电服务指挥系统            dispatchRepairOrder
``amr``                    remote command to the 用电信息采集系统             remoteReconnect, suspendSupply
``marketing``              account / contract change in the 营销系统         updateAccountContract,
                                                                          computeBackBilling
``report``                 report to the 电力管理部门 / 公安机关             reportAuthority
=========================  =============================================  ================================

``prepareRevisit`` and ``closeOrder`` are shared with the presale and midsale flows; the generic SLA
step ``computeDue`` lives in :mod:`handlers.timing`, the T1/T2/T3 actions in :mod:`handlers.sla_actions`.
"""

from __future__ import annotations

import math
import random
import re
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from engine.sla import SHANGHAI, wall_clock_sla
from handlers import BpmnError, handler

from . import simulated_systems as sim
from .common import after, as_instant, calendar, local_text, notify, policy, policy_table
from .simulated_systems import money

FAULT_TYPE_LABELS = {"NO_POWER": "无电", "PARTIAL_POWER": "部分无电", "VOLTAGE_ABNORMAL": "电压异常",
                     "LINE_DOWN_FIRE": "线路断落/冒烟着火", "METERING_FAULT": "计量装置故障", "OTHER": "其他"}
DELAY_LABELS = {"WEATHER": "天气", "TRAFFIC": "交通", "OTHER": "其他"}
CHANNEL_LABELS = {"0104": "网上国网", "0208": "支付宝", "0209": "微信", "0101": "营业网点"}
FINDING_LABELS = {"NORMAL": "正常", "HAZARD": "安全隐患", "VIOLATION": "违约用电", "THEFT": "窃电"}
CLOSED_LABELS = {"CLOSED": "办结", "FAILED": "回访失败", "COMPLAINT": "转投诉", "SUPERVISED": "督办后办结",
                 "CLOSED_NO_REVISIT": "办结（无回访）"}
# registerServiceOrder: variables the timers and gateways read, from wall-clock keys of the policy
REGISTERED_DURATIONS = {
    "repairDispatchAfter": "repair.dispatch", "repairDispatchSuperviseAfter": "repair.dispatch.supervise",
    "repairAssignRemindAfter": "repair.assign.remind", "repairAssignSuperviseAfter": "repair.assign.supervise",
    "repairReplyAfter": "repair.reply", "applianceOnsiteAfter": "appliance.onsite",
}
# optional request fields that conditions, scripts or handlers read: defined (None) when the request lacks them
OPTIONAL_REQUEST_FIELDS = ("customerNo", "customerName", "contactPhone", "elecAddress", "channel",
                           "importanceLevel", "meterCheckKind", "sourceOrderNo")
R1_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
R1_CHECK = "10X98765432"


def _now(ctx) -> datetime:
    return ctx.now.astimezone(SHANGHAI)


def _floor(instant: datetime) -> datetime:
    return instant.replace(microsecond=0)


def _yuan(amount: Decimal) -> str:
    return f"{amount:.2f}"


def _name(variables: dict[str, Any]) -> str:
    return variables.get("customerName") or "客户"


# -- start ----------------------------------------------------------------------------------------
@handler("registerServiceOrder")
def register_service_order(variables: dict[str, Any], ctx) -> dict[str, Any]:
    """Number an order that came without one (``msgArrearsSettled``, the inspection plan, ``requestReconnect``)
    and copy the wall-clock durations of the case's policy version into the variables the timers read.

    The generated number is ``YYYYMMDD`` + 6 digits derived from the instance id (stable across retries).
    Optional request fields the model reads (``customerNo`` … ``meterCheckKind``) are defined as None when
    absent; an unknown ``meterCheckKind`` then gets the stricter ANOMALY limit (``meter.anomalyOrder``).
    """
    version, recorded = policy(variables, ctx.now)
    result: dict[str, Any] = {**recorded}
    for name, key in REGISTERED_DURATIONS.items():
        result[name] = version.duration(key)
    result["maxReopen"] = int(version.number("revisit.maxReopen"))
    if not variables.get("workOrderNo"):
        result["workOrderNo"] = f"{_now(ctx):%Y%m%d}{sim.seed_number('order', ctx.instance_id, digits=6)}"
    if not variables.get("serviceType"):
        result["serviceType"] = "OTHER"
    if not variables.get("acceptedAt"):
        result["acceptedAt"] = _floor(_now(ctx))
    for name in OPTIONAL_REQUEST_FIELDS:
        if name not in variables:
            result[name] = None
    return result


# -- A 故障报修 --------------------------------------------------------------------------------------
@handler("matchOutage")
def match_outage(variables: dict[str, Any], ctx) -> dict[str, Any]:
    """Match the report against arrears cut-offs (by 户号) and known planned / fault outages (by 户号 or
    fault address) in the simulated 营销 / 指挥 systems. ``triagedAt`` records when the call was taken
    (this runs in the same step as ``acceptRepair``'s completion)."""
    customer_no = variables.get("customerNo")
    place = customer_no or variables.get("faultAddress") or variables.get("elecAddress") or ""
    arrears_cut = bool(customer_no) and sim.account(customer_no).arrears_cut
    outage = sim.known_outage(place, ctx.now) if place else None
    info = None
    if outage is not None:
        info = {"kind": outage.kind, "kindLabel": "计划停电" if outage.kind == "PLANNED" else "故障停电",
                "area": outage.area, "startedAt": _floor(outage.started_at), "estimatedRestoreAt": outage.restore_at}
    return {"knownOutage": outage is not None, "arrearsCut": arrears_cut, "outageInfo": info,
            "triagedAt": _floor(_now(ctx))}


def _payment_channels() -> list[str]:
    return [CHANNEL_LABELS[c] for c in sim.PAYMENT_CHANNELS]


def _reconnect_limit_text(version) -> str:
    text = version.duration("reconnect.afterPayment")
    hours = text.removeprefix("PT").removesuffix("H")
    return f"{hours}小时" if text.startswith("PT") and hours.isdigit() else text


def amount_due(customer_no: str, version, now: datetime) -> tuple[Decimal, Decimal, list[sim.Bill]]:
    """Open arrears, late-payment penalty (``penalty.*``, at least ``penalty.min`` when any) and the unpaid bills."""
    months = int(version.number("billing.historyMonths"))
    unpaid = [b for b in sim.bills(customer_no, now, months) if not b.paid]
    arrears = money(sum((b.arrears for b in unpaid), Decimal(0)))
    rates = {"RES": version.decimal("penalty.rate.RES"), "OTHER": version.decimal("penalty.rate.OTHER"),
             "OTHER_CROSSYEAR": version.decimal("penalty.rate.OTHER_CROSSYEAR")}
    category = sim.account(customer_no).category
    penalty_total = money(sum((sim.penalty(b, now, rates, category) for b in unpaid), Decimal(0)))
    if arrears > 0:
        penalty_total = max(penalty_total, money(version.decimal("penalty.min")))
    return arrears, penalty_total, unpaid


@handler("informArrearsCut")
def inform_arrears_cut(variables: dict[str, Any], ctx) -> dict[str, Any]:
    """SMS: the supply is cut for arrears, the amount due and the payment channels; the order continues as
    a reconnection (``nextService = 'RECONNECT'``, §14.1 M4)."""
    version, recorded = policy(variables, ctx.now)
    customer_no = variables["customerNo"]
    arrears, penalty_total, unpaid = amount_due(customer_no, version, ctx.now)
    due = money(arrears + penalty_total)
    acct = sim.account(customer_no)
    notify(ctx, "sms", variables.get("contactPhone") or acct.contact_phone, "arrears_cut_notice.j2",
           customerName=variables.get("customerName") or acct.customer_name, customerNo=customer_no,
           workOrderNo=variables.get("workOrderNo") or "", unpaidPeriods=sorted(b.period for b in unpaid),
           arrearsText=_yuan(arrears), penaltyText=_yuan(penalty_total), amountDueText=_yuan(due),
           channelLabels=_payment_channels(), reconnectLimit=_reconnect_limit_text(version))
    return {**recorded, "nextService": "RECONNECT", "amountDue": due, "arrearsCutNotifiedAt": _floor(_now(ctx))}


@handler("informOutage")
def inform_outage(variables: dict[str, Any], ctx) -> dict[str, Any]:
    """SMS with the known outage and its estimated restore time."""
    info = variables.get("outageInfo") or {}
    notify(ctx, "sms", variables.get("contactPhone") or "", "outage_notice.j2", customerName=_name(variables),
           workOrderNo=variables.get("workOrderNo") or "", outageKindLabel=info.get("kindLabel") or "停电",
           area=info.get("area") or "您所在区域", restoreAt=local_text(info.get("estimatedRestoreAt")) or "尽快")
    return {"outageNotifiedAt": _floor(_now(ctx))}


@handler("computeRepairSla")
def compute_repair_sla(variables: dict[str, Any], ctx) -> dict[str, Any]:
    """D3: arrival due by area (``urbanRuralFlag`` 01/02/03 → ``repair.areaByFlag``), at most
    ``repair.arrive.IMPORTANT`` for ``importanceLevel`` in ``repair.importantLevels``; T3 at the GB/T 28583
    ceiling of the area; T1 at ``repair.remindFraction`` of the (final) budget; restore budget by area."""
    version, recorded = policy(variables, ctx.now)
    now = _floor(_now(ctx))
    flag = str(variables.get("urbanRuralFlag") or "")
    areas = version.table("repair.areaByFlag")
    if flag not in areas:
        raise ValueError(f"urbanRuralFlag {flag!r} is not one of {', '.join(sorted(areas))} (城乡标志, S29)")
    area = areas[flag]
    arrive_key = f"repair.arrive.{area}"
    due = after(now, version.duration(arrive_key))
    important = str(variables.get("importanceLevel") or "") in version.table("repair.importantLevels")
    if important:
        due = min(due, after(now, version.duration("repair.arrive.IMPORTANT")))
    ceiling = version.ceiling_duration(arrive_key)
    cap = after(now, ceiling) if ceiling else calendar().add_working_days(due, 1)  # §9.3 without a ceiling
    fraction = float(version.number("repair.remindFraction"))
    return {**recorded, "repairArea": area, "importantCustomer": important,
            "arriveRemindAt": _floor(now + (due - now) * fraction), "arriveDue": due, "arriveCap": max(cap, due),
            "restoreDuration": version.duration(f"repair.restore.{area}")}


@handler("dispatchRepairOrder")
def dispatch_repair_order(variables: dict[str, Any], ctx) -> dict[str, Any]:
    """Create the 抢修 order (outbox ``repair``). KPI (S10): ``dispatchedAt − callEndedAt ≤ repair.dispatch``,
    else ``dispatchLate``; ``callEndedAt`` is the telephony value when the request carried one, else the time
    the call was taken (``triagedAt``). A safety hazard makes the order URGENT and sends the
    ``notifyDispatcherUrgent`` notice to the dispatchers."""
    version, recorded = policy(variables, ctx.now)
    now = _floor(_now(ctx))
    call_ended = as_instant(variables.get("callEndedAt")) or as_instant(variables.get("triagedAt")) or now
    late = now > after(call_ended, version.duration("repair.dispatch"))
    hazard = bool(variables.get("isSafetyHazard")) or variables.get("faultType") == "LINE_DOWN_FIRE"
    priority = "URGENT" if hazard else "NORMAL"
    order_no = f"QX{variables.get('workOrderNo') or sim.seed_number('repair', ctx.instance_id)}"
    fault = FAULT_TYPE_LABELS.get(variables.get("faultType"), "故障")
    ctx.emit("repair", "dispatcher",
             f"抢修工单{order_no}：{variables.get('faultAddress') or ''}，{fault}，"
             f"{'紧急' if hazard else '一般'}，{'有偿服务，' if variables.get('paid') else ''}"
             f"{local_text(variables.get('arriveDue'))}前到达现场。",
             repairOrderNo=order_no, priority=priority, paid=bool(variables.get("paid")))
    if hazard:
        notify(ctx, "sms", "dispatcher", "notify_dispatcher_urgent.j2", repairOrderNo=order_no,
               workOrderNo=variables.get("workOrderNo") or "",
               faultTypeLabel=fault, faultAddress=variables.get("faultAddress") or "",
               contactPhone=variables.get("contactPhone") or "", arriveDueText=local_text(variables.get("arriveDue")),
               description=variables.get("description") or "")
    return {**recorded, "repairOrderNo": order_no, "callEndedAt": call_ended, "dispatchedAt": now,
            "dispatchLate": late, "priority": priority}


@handler("sendApology")
def send_apology(variables: dict[str, Any], ctx) -> dict[str, Any]:
    """T2 of ``arriveOnSite``: SMS apology to the customer with the crew's ETA (``estimatedArrival``, F3.2) when
    it is still ahead."""
    eta = as_instant(variables.get("estimatedArrival"))
    notify(ctx, "sms", variables.get("contactPhone") or "", "arrival_apology.j2", customerName=_name(variables),
           workOrderNo=variables.get("workOrderNo") or "", etaText=local_text(eta) if eta and eta > ctx.now else "",
           delayReasonLabel=DELAY_LABELS.get(variables.get("delayReason"), ""))
    return {"apologySentAt": _floor(_now(ctx))}


@handler("computeRestoreDue")
def compute_restore_due(variables: dict[str, Any], ctx) -> dict[str, Any]:
    """``restoreDue = arrivedAt + restoreDuration`` (D3), T1 at ``repair.remindFraction``, T3 at
    ``restoreDue + repair.restore.escalateAfter``.

    Checks F3.3 against the case (JSON Schema cannot): an arrival before the departure or in the future is
    a recording error — the clock starts at the departure (or now) instead, ``arrivalRecordInvalid`` is set
    and the dispatchers are told to correct the record; ``arrivedLate`` compares with ``arriveDue`` and
    ``delayReasonMissing`` flags a late arrival without a reason (S22 requires one).
    """
    version, recorded = policy(variables, ctx.now)
    now = _floor(_now(ctx))
    arrived = as_instant(variables.get("arrivedAt")) or now
    depart = as_instant(variables.get("departAt"))
    problems = []
    if depart is not None and arrived < depart:
        problems.append("到达时间早于出发时间")
        arrived = depart
    if arrived > now:
        problems.append("到达时间晚于当前时间")
        arrived = now
    duration = variables.get("restoreDuration") or version.duration(
        f"repair.restore.{variables.get('repairArea') or 'URBAN'}")
    due = after(arrived, duration)
    fraction = float(version.number("repair.remindFraction"))
    arrive_due = as_instant(variables.get("arriveDue"))
    late = bool(arrive_due and arrived > arrive_due)
    if problems:
        order = variables.get("workOrderNo") or ""
        ctx.emit("sms", "dispatcher", f"工单{order}到达现场记录有误（{'；'.join(problems)}），"
                                      "复电时限已按出发时间计算，请在回单时核对。")
    return {**recorded, "restoreRemindAt": _floor(arrived + (due - arrived) * fraction), "restoreDue": due,
            "restoreCapAt": after(due, version.duration("repair.restore.escalateAfter")), "arrivedLate": late,
            "delayReasonMissing": late and not variables.get("delayReason"), "arrivalRecordInvalid": bool(problems)}


# -- revisit inputs and closing (shared with presale / midsale) ------------------------------------
def _kind_from_id(bpmn_id: str, version) -> str:
    suffix = bpmn_id.removeprefix("prepareRevisit").upper()
    return suffix if suffix and f"revisit.delay.{suffix}" in version else "OTHER"


@handler("prepareRevisit")
def prepare_revisit(variables: dict[str, Any], ctx) -> dict[str, Any]:
    """Revisit inputs (§11.1). Property ``revisitKind`` (REPAIR / OTHER; default from the element id,
    ``prepareRevisitRepair`` → REPAIR, else OTHER): ``revisitDelay`` = ``revisit.delay.<kind>``; REPAIR calls
    within ``revisit.window.REPAIR`` (``revisitWindow``), others within ``revisit.window`` working days
    (``revisitWindowWd``); the other one is cleared so a loop cannot mix them.

    ``sourceOrderNo`` is the order (``workOrderNo``, else ``applicationNo``); ``customerName`` falls back to
    ``contactName``; missing contact data are looked up by 户号 in the simulated marketing system and stay
    None when unknown, so the ``msgComplaint`` payload can always be built. Also ``maxReopen``
    (``revisit.maxReopen``) and ``reopenCount`` (kept, 0 when absent).
    """
    version, recorded = policy(variables, ctx.now)
    kind = str(ctx.param("revisitKind", variables) or _kind_from_id(ctx.bpmn_id, version)).upper()
    result: dict[str, Any] = {**recorded, "revisitDelay": version.duration(f"revisit.delay.{kind}")}
    if kind == "REPAIR":
        result.update(revisitWindow=version.duration("revisit.window.REPAIR"), revisitWindowWd=None)
    else:
        result.update(revisitWindow=None, revisitWindowWd=version.wd("revisit.window"))
    result["sourceOrderNo"] = variables.get("workOrderNo") or variables.get("applicationNo") or ctx.business_key
    customer_no = variables.get("customerNo")
    acct = sim.account(customer_no) if customer_no else None
    result["customerNo"] = customer_no
    result["customerName"] = (variables.get("customerName") or variables.get("contactName")
                              or (acct.customer_name if acct else None))
    result["contactPhone"] = variables.get("contactPhone") or (acct.contact_phone if acct else None)
    result["elecAddress"] = (variables.get("elecAddress") or variables.get("faultAddress")
                             or (acct.elec_address if acct else None))
    result["maxReopen"] = int(version.number("revisit.maxReopen"))
    result["reopenCount"] = int(variables.get("reopenCount") or 0)
    return result


@handler("closeOrder")
def close_order(variables: dict[str, Any], ctx) -> dict[str, Any]:
    """办结: the order's final status from the revisit outcome — CLOSED 办结, FAILED 回访失败, COMPLAINT 转投诉,
    SUPERVISED (REOPEN at the limit, after ``superviseReopen``) or CLOSED_NO_REVISIT; appends the service to
    ``serviceHistory`` (a repair that became a reconnection closes twice) and clears the revisit state."""
    outcome = variables.get("revisitOutcome")
    status = {"CLOSED": "CLOSED", "FAILED": "FAILED", "COMPLAINT": "COMPLAINT", "REOPEN": "SUPERVISED"}.get(
        outcome, "CLOSED_NO_REVISIT")
    now = _floor(_now(ctx))
    entry = {"serviceType": variables.get("serviceType"), "closedStatus": status, "closedAt": now,
             "satisfaction": variables.get("satisfaction") if outcome else None}
    return {"closedStatus": status, "closedStatusLabel": CLOSED_LABELS[status], "orderStatus": status,
            "closedAt": now, "serviceHistory": [*(variables.get("serviceHistory") or []), entry],
            "revisitOutcome": None, "reopenCount": 0}


# -- B 电费查询 --------------------------------------------------------------------------------------
@handler("fetchBilling")
def fetch_billing(variables: dict[str, Any], ctx) -> dict[str, Any]:
    """Bills and deductions of the last ``billing.historyMonths`` months from the (simulated) billing system,
    newest first; penalties at the ``penalty.*`` rates."""
    version, recorded = policy(variables, ctx.now)
    customer_no = variables["customerNo"]
    rates = {"RES": version.decimal("penalty.rate.RES"), "OTHER": version.decimal("penalty.rate.OTHER"),
             "OTHER_CROSSYEAR": version.decimal("penalty.rate.OTHER_CROSSYEAR")}
    category = sim.account(customer_no).category
    history = sim.bills(customer_no, ctx.now, int(version.number("billing.historyMonths")))
    bills = [{"period": b.period, "kWh": b.kwh, "amount": b.amount, "paid": b.paid, "arrears": b.arrears,
              "penalty": sim.penalty(b, ctx.now, rates, category)} for b in history]
    deductions = [{"time": b.paid_at, "channel": b.channel, "channelLabel": CHANNEL_LABELS[b.channel],
                   "amount": b.amount} for b in history if b.paid]
    return {**recorded, "bills": bills, "deductions": deductions}


@handler("computeAdjustment")
def compute_adjustment(variables: dict[str, Any], ctx) -> dict[str, Any]:
    """退补: ``Σ (correctKwh − billedKwh) × price`` over ``corrections[]``, the price of each period being its
    bill's amount / kWh; rounded to ¥0.01. Negative = refund to the customer, positive = back-billing;
    0 without a confirmed error. A corrected period missing from ``bills[]`` is priced at the latest bill's price."""
    if not variables.get("errorConfirmed"):
        return {"adjustment": money(0), "adjustmentKind": "NONE"}
    bills = {b["period"]: b for b in variables.get("bills") or []}
    latest = next(iter(variables.get("bills") or []), None)
    total = Decimal(0)
    for correction in variables.get("corrections") or []:
        bill = bills.get(correction["period"]) or latest
        if bill is None or not bill["kWh"]:
            raise ValueError(f"no bill to price the correction of {correction['period']}")
        price = Decimal(str(bill["amount"])) / Decimal(bill["kWh"])
        billed = Decimal(bill["kWh"]) if correction["period"] in bills else Decimal(0)
        total += (Decimal(str(correction["correctKwh"])) - billed) * price
    adjustment = money(total)
    kind = "REFUND" if adjustment < 0 else "BACK_BILL" if adjustment > 0 else "NONE"
    return {"adjustment": adjustment, "adjustmentKind": kind}


# -- C 过户 / 更名 -----------------------------------------------------------------------------------
def id_check_digit_ok(cert_no: str) -> bool:
    """R1: ISO 7064 MOD 11-2 check digit of an 18-digit 居民身份证 number."""
    if not re.fullmatch(r"\d{17}[\dXx]", cert_no or ""):
        return False
    total = sum(int(d) * w for d, w in zip(cert_no[:17], R1_WEIGHTS, strict=True))
    return R1_CHECK[total % 11] == cert_no[17].upper()


@handler("checkPreconditions")
def check_preconditions(variables: dict[str, Any], ctx) -> dict[str, Any]:
    """Art. 29 (S19): 用电地址, 容量 and 类别 unchanged (F3.6), the account active (simulated marketing system)
    and, for a 居民身份证, the R1 check digit. The first failed rule becomes ``rejectReason``."""
    reasons = []
    labels = {"addressUnchanged": "用电地址发生变化", "capacityUnchanged": "用电容量发生变化",
              "categoryUnchanged": "用电类别发生变化"}
    reasons += [text for name, text in labels.items() if variables.get(name) is not True]
    if sim.account(variables["customerNo"]).status != "ACTIVE":
        reasons.append("该户号已销户")
    if variables.get("newCertType") == "01" and not id_check_digit_ok(variables.get("newCertNo") or ""):
        reasons.append("新户身份证号码校验位错误")
    return {"preconditionsOk": not reasons, "rejectReason": reasons[0] if reasons else None}


@handler("checkArrears")
def check_arrears(variables: dict[str, Any], ctx) -> dict[str, Any]:
    """The old customer's open arrears and penalty (simulated billing); ``arrears > 0`` sends the case to the
    cashier (C6a)."""
    version, recorded = policy(variables, ctx.now)
    arrears, penalty_total, _ = amount_due(variables["customerNo"], version, ctx.now)
    return {**recorded, "arrears": arrears, "penalty": penalty_total, "amountDue": money(arrears + penalty_total)}


@handler("rejectNameChange")
def reject_name_change(variables: dict[str, Any], ctx) -> dict[str, Any]:
    """Tell the applicant the change cannot be made and point to 新装 / 变更用电; reason from ``rejectReason``."""
    notify(ctx, "sms", variables.get("newContactPhone") or variables.get("contactPhone") or "",
           "name_change_reject.j2", newCustomerName=variables.get("newCustomerName") or "客户",
           customerNo=variables.get("customerNo") or "", workOrderNo=variables.get("workOrderNo") or "",
           changeTypeLabel="过户" if variables.get("changeType") == "TRANSFER" else "更名",
           reason=variables.get("rejectReason") or "不符合更名/过户条件")
    return {"rejectedAt": _floor(_now(ctx))}


@handler("updateAccountContract")
def update_account_contract(variables: dict[str, Any], ctx) -> dict[str, Any]:
    """Change the account and the supply contract (outbox ``marketing``): new name, certificate and phone,
    the old customer's final reading. The case continues with the new customer's contact data (the revisit
    calls the new customer). A reading below the last one on file is flagged (``readingBelowLast``)."""
    acct = sim.account(variables["customerNo"])
    reading = Decimal(str(variables.get("reading"))) if variables.get("reading") is not None else None
    below = reading is not None and reading < acct.last_reading
    ctx.emit("marketing", "营销系统",
             f"户号{acct.customer_no}{'过户' if variables.get('changeType') == 'TRANSFER' else '更名'}："
             f"{acct.customer_name} → {variables.get('newCustomerName')}，结算示数{reading}",
             customerNo=acct.customer_no, newCustomerName=variables.get("newCustomerName"),
             newCertType=variables.get("newCertType"), newCertNo=variables.get("newCertNo"),
             newContactPhone=variables.get("newContactPhone"), finalReading=reading,
             idempotencyKey=ctx.idempotency_key)
    if below:
        ctx.emit("sms", "meteringCrew",
                 f"户号{acct.customer_no}抄见示数{reading}低于上次示数{acct.last_reading}，请核实。")
    return {"accountUpdatedAt": _floor(_now(ctx)), "previousCustomerName": acct.customer_name,
            "customerName": variables.get("newCustomerName"), "contactPhone": variables.get("newContactPhone"),
            "readingBelowLast": below}


# -- D 复电 ---------------------------------------------------------------------------------------
@handler("verifyPayment")
def verify_payment(variables: dict[str, Any], ctx) -> dict[str, Any]:
    """Arrears and penalty settled? A ``paidAt`` from the billing message (``msgArrearsSettled``) settles the
    case; otherwise the simulated billing system is asked (an account with open bills is not settled; one
    without gets its last payment time). When settled: ``reconnectDueAt = paidAt + reconnect.afterPayment``,
    reminders at ``reminder.hourFractions`` (50 % / 80 %), ``reconnectCapAt = paidAt +`` its ceiling (Art. 69).
    Meter type and contact data come from the account."""
    version, recorded = policy(variables, ctx.now)
    customer_no = variables.get("customerNo")
    if not customer_no:
        raise ValueError("verifyPayment needs customerNo (户号) to find the account")
    acct = sim.account(customer_no)
    arrears, penalty_total, _ = amount_due(customer_no, version, ctx.now)
    paid_at = as_instant(variables.get("paidAt"))
    if paid_at is None and arrears == 0:
        paid_at = _floor(sim.last_payment_at(customer_no, _now(ctx)))
    settled = paid_at is not None
    result: dict[str, Any] = {
        **recorded, "settled": settled, "arrears": money(0) if settled else arrears,
        "penalty": money(0) if settled else penalty_total, "meterType": acct.meter_type,
        "customerName": variables.get("customerName") or acct.customer_name,
        "contactPhone": variables.get("contactPhone") or acct.contact_phone,
        "elecAddress": variables.get("elecAddress") or acct.elec_address,
    }
    if settled:
        fractions = [float(f) for f in version.table("reminder.hourFractions")]
        key = "reconnect.afterPayment"
        instants = wall_clock_sla(paid_at, version.duration(key), version.ceiling_duration(key), fractions)
        result.update(paidAt=paid_at, reconnectRemind50At=instants.remind_at,
                      reconnectRemind80At=instants.remind_at_80, reconnectDueAt=instants.due_at,
                      reconnectCapAt=instants.cap_at)
    return result


@handler("informAmountDue")
def inform_amount_due(variables: dict[str, Any], ctx) -> dict[str, Any]:
    """SMS with arrears, penalty and the payment channels; payment arrives later as ``msgArrearsSettled``."""
    version, recorded = policy(variables, ctx.now)
    arrears = money(variables.get("arrears") or 0)
    penalty_total = money(variables.get("penalty") or 0)
    notify(ctx, "sms", variables.get("contactPhone") or "", "amount_due_notice.j2", customerName=_name(variables),
           customerNo=variables.get("customerNo") or "", workOrderNo=variables.get("workOrderNo") or "",
           arrearsText=_yuan(arrears), penaltyText=_yuan(penalty_total),
           amountDueText=_yuan(arrears + penalty_total), channelLabels=_payment_channels(),
           reconnectLimit=_reconnect_limit_text(version))
    return {**recorded, "amountDueSentAt": _floor(_now(ctx))}


def _attempts(cycle: str) -> int:
    """``R3/PT10M`` → 3 (a list of waits ``PT1M,PT5M`` → 3: the first run plus one per wait)."""
    head = cycle.strip().split("/", 1)[0]
    if head[:1] in ("R", "r") and head[1:].isdigit():
        return int(head[1:])
    return len([p for p in cycle.split(",") if p.strip()]) + 1


class RemoteCommandFailed(RuntimeError):
    """The meter did not answer the remote command; the job is retried per ``reconnect.remoteRetry``."""


@handler("remoteReconnect", asynchronous=True,
         retry_cycle=policy_table().latest.cycle("reconnect.remoteRetry"))
def remote_reconnect(variables: dict[str, Any], ctx) -> dict[str, Any]:
    """Remote reconnection command to the 采集系统 (outbox ``amr``, keyed by ``ctx.idempotency_key``).

    An async job retried per ``reconnect.remoteRetry`` (R3/PT10M: the registration reads the latest policy
    version; the attempt count the case's own). A meter that does not answer fails the attempt with a
    technical error (retried); the last attempt raises BPMN error ``REMOTE_RECONNECT_FAILED`` instead, which
    ``errRemoteReconnect`` catches: the crew reconnects on site. Simulated: :func:`sim.remote_meter_online`.
    """
    version, recorded = policy(variables, ctx.now)
    customer_no = variables.get("customerNo") or ""
    attempts = _attempts(version.cycle("reconnect.remoteRetry"))
    if sim.remote_meter_online(customer_no):
        ctx.emit("amr", customer_no, f"远程复电指令已执行：户号{customer_no}", command="RECONNECT",
                 idempotencyKey=ctx.idempotency_key, attempt=ctx.attempt)
        return {**recorded, "reconnectedAt": _floor(_now(ctx)), "reconnectMethod": "REMOTE",
                "remoteAttempts": ctx.attempt}
    if ctx.attempt < attempts:
        raise RemoteCommandFailed(f"电能表（户号{customer_no}）未响应远程复电指令，第{ctx.attempt}次")
    raise BpmnError("REMOTE_RECONNECT_FAILED", f"远程复电{ctx.attempt}次均失败，转现场复电",
                    remoteAttempts=ctx.attempt, reconnectMethod="ONSITE")


# -- E 用电检查 -------------------------------------------------------------------------------------
def _target(variables: dict[str, Any]) -> dict[str, Any]:
    target = variables.get("targetCustomer") or {}
    customer_no = target.get("customerNo") or variables.get("customerNo") or ""
    acct = sim.account(customer_no) if customer_no else None
    return {"customerNo": customer_no,
            "customerName": target.get("customerName") or (acct.customer_name if acct else ""),
            "elecAddress": target.get("elecAddress") or (acct.elec_address if acct else ""), "account": acct}


@handler("suspendSupply")
def suspend_supply(variables: dict[str, Any], ctx) -> dict[str, Any]:
    """Theft: the supply is cut on the spot (S20); the command is recorded (outbox ``amr``)."""
    target = _target(variables)
    ctx.emit("amr", target["customerNo"], f"窃电现场中止供电：户号{target['customerNo']}，{target['elecAddress']}",
             command="SUSPEND", idempotencyKey=ctx.idempotency_key)
    return {"supplySuspended": True, "suspendedAt": _floor(_now(ctx))}


@handler("computeBackBilling")
def compute_back_billing(variables: dict[str, Any], ctx) -> dict[str, Any]:
    """追补电费 and 违约使用电费 by the rule of ``violation.backBilling`` for the finding (THEFT) or the violation
    type. Quantities the inspection form does not capture — excess capacity, tariff, price gap — come from the
    simulated account. Rules: BACKBILL_TIMES (theft: capacity × hours/day × assumed days × tariff, penalty ×
    times), PRICE_GAP_TIMES (高价低接: price gap × monthly kWh × months, penalty × times), PER_KW (penalty per
    kW of excess capacity), PER_EVENT (penalty per event, residential / other)."""
    version, recorded = policy(variables, ctx.now)
    target = _target(variables)
    acct = target["account"]
    kind = "THEFT" if variables.get("finding") == "THEFT" else variables.get("violationType")
    rules = version.table("violation.backBilling")
    if kind not in rules:
        raise ValueError(f"no back-billing rule for {kind!r} in policy version {version.id} (violation.backBilling)")
    rule = rules[kind]
    category = acct.category
    back, penalty_amount = Decimal(0), Decimal(0)
    if rule["rule"] == "BACKBILL_TIMES":
        kwh = Decimal(acct.excess_kw) * Decimal(rule["hoursPerDay"][category]) * Decimal(rule["assumedDays"])
        back = money(kwh * acct.tariff)
        penalty_amount = back * Decimal(rule["penaltyTimes"])
    elif rule["rule"] == "PRICE_GAP_TIMES":
        monthly = sum(b.kwh for b in sim.bills(acct.customer_no, ctx.now, int(rule["assumedMonths"])))
        back = money(Decimal(monthly) * acct.price_gap)
        penalty_amount = back * Decimal(rule["penaltyTimes"])
    elif rule["rule"] == "PER_KW":
        penalty_amount = Decimal(acct.excess_kw) * Decimal(rule["perKw"])
    elif rule["rule"] == "PER_EVENT":
        penalty_amount = Decimal(rule["perEvent"][category])
    else:
        raise ValueError(f"unknown back-billing rule {rule['rule']!r} for {kind} (violation.backBilling)")
    back, penalty_amount = money(back), money(penalty_amount)
    ctx.emit("marketing", "营销系统", f"户号{acct.customer_no}{FINDING_LABELS.get(variables.get('finding'), '')}："
             f"追补电费{_yuan(back)}元，违约使用电费{_yuan(penalty_amount)}元",
             customerNo=acct.customer_no, backBillingAmount=back, penaltyAmount=penalty_amount,
             idempotencyKey=ctx.idempotency_key)
    return {**recorded, "backBillingAmount": back, "penaltyAmount": penalty_amount, "backBillingRule": kind}


@handler("reportAuthority")
def report_authority(variables: dict[str, Any], ctx) -> dict[str, Any]:
    """A refused case is reported (outbox ``report``): theft to the 公安机关, violations to the 电力管理部门."""
    target = _target(variables)
    finding = variables.get("finding")
    authority = "公安机关" if finding == "THEFT" else "电力管理部门"
    total = money(Decimal(str(variables.get("backBillingAmount") or 0))
                  + Decimal(str(variables.get("penaltyAmount") or 0)))
    text = notify(ctx, "report", authority, "authority_report.j2", authorityLabel=authority,
                  customerNo=target["customerNo"], customerName=target["customerName"],
                  elecAddress=target["elecAddress"], findingLabel=FINDING_LABELS.get(finding, "违约用电"),
                  amountText=_yuan(total), evidenceCount=len(variables.get("evidence") or []),
                  workOrderNo=variables.get("workOrderNo") or "")
    return {"reportedAt": _floor(_now(ctx)), "reportedTo": authority, "reportSummary": text[:80]}


# -- satisfaction survey (§14.10) --------------------------------------------------------------------
def _previous_month(now: datetime) -> tuple[datetime, datetime]:
    local = now.astimezone(SHANGHAI)
    end = datetime(local.year, local.month, 1, tzinfo=SHANGHAI)
    start = (end - timedelta(days=1)).replace(day=1)
    return start, end


@handler("sampleClosedOrders")
def sample_closed_orders(variables: dict[str, Any], ctx) -> dict[str, Any]:
    """A random ``survey.sampleRate`` (rounded up, at least one when any) of the after-sale orders closed last
    calendar month that have a contact phone. The sample is seeded by the month, so a re-run draws the same."""
    version, recorded = policy(variables, ctx.now)
    start, end = _previous_month(ctx.now)
    closed = []
    for case in ctx.find_cases("aftersale_service", start - timedelta(days=62)) if ctx.find_cases else []:
        data = case["variables"]
        closed_at = as_instant(data.get("closedAt"))
        if case.get("status") == "completed" and closed_at and start <= closed_at < end and data.get("contactPhone"):
            closed.append(data)
    closed.sort(key=lambda d: str(d.get("workOrderNo")))
    size = math.ceil(float(version.number("survey.sampleRate")) * len(closed)) if closed else 0
    period = f"{start:%Y-%m}"
    sample = random.Random(f"survey-{period}").sample(closed, size)
    return {**recorded, "surveyPeriod": period, "closedOrderCount": len(closed),
            "sampledOrders": [{"workOrderNo": d.get("workOrderNo"), "serviceType": d.get("serviceType"),
                               "customerName": d.get("customerName"), "contactPhone": d.get("contactPhone")}
                              for d in sample]}


@handler("aggregateSatisfaction")
def aggregate_satisfaction(variables: dict[str, Any], ctx) -> dict[str, Any]:
    """``satisfactionRate = (满意 + 基本满意) / reached`` over this firing's ``surveyCall`` answers.

    Each answer of the multi-instance ``surveyCall`` lives in its own scope, so the answers are read from the
    instance history (the form data of every completed ``surveyCall`` work item), not from the variables.
    ``satisfactionRate`` is None when nobody was reached.
    """
    answers = [event["data"].get("data") or {} for event in (ctx.history() if ctx.history else [])
               if event["type"] == "task_completed" and event["bpmn_id"] == "surveyCall"]
    reached = [a for a in answers if a.get("reached")]
    satisfied = [a for a in reached if a.get("satisfaction") in ("SATISFIED", "BASIC")]
    rate = round(len(satisfied) / len(reached), 4) if reached else None
    return {"surveyedCount": len(answers), "reachedCount": len(reached), "satisfiedCount": len(satisfied),
            "satisfactionRate": rate}
