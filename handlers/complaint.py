"""投诉 complaint handling: receipt, duplicate check, grading (D4), time limits (D5), escalation, closing.

Every threshold and limit comes from the case's policy version (§4, §10). Instants are aware
datetimes in Asia/Shanghai.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from handlers import handler, searchable

from .common import (
    CHANNEL_LABELS,
    SEVERITY_LABELS,
    after,
    as_instant,
    calendar,
    notify,
    policy,
    raise_severity,
)

URGENT_FACTS = {"injuryOrSafety": "人身伤亡 / 安全隐患", "importantCustomerOutage": "医院 / 重要客户停电",
                "mediaInvolved": "媒体 / 舆情"}


@handler("sendComplaintReceipt")
def send_complaint_receipt(variables: dict[str, Any], ctx) -> dict[str, Any]:
    """受理回执: tell the customer the order number and the limits of a GENERAL complaint."""
    version, recorded = policy(variables, ctx.now)
    number = variables.get("workOrderNo")
    if not number:  # a complaint converted from a revisit arrives without its own order number
        source = variables.get("sourceOrderNo")
        number = f"{source}-TS" if source else f"TS{ctx.now:%Y%m%d}{ctx.instance_id[:8]}"
        recorded = {**recorded, "workOrderNo": number}
    contact = version.duration("complaint.contact")
    hours = contact.removeprefix("PT").removesuffix("H")
    notify(ctx, "sms", variables.get("contactPhone") or "", "complaint_receipt.j2",
           customerName=variables.get("customerName") or "客户", workOrderNo=number,
           registeredAt=_local_long(as_instant(variables.get("registeredAt")) or ctx.now),
           channelLabel=CHANNEL_LABELS.get(variables.get("channel"), variables.get("channel") or ""),
           contactLimitText=f"{hours}小时" if hours.isdigit() else contact,
           replyLimitText=f"{version.wd('complaint.reply')}个工作日", hotline="95598")
    return {**recorded, "receiptSentAt": ctx.now}


searchable("complaint_handling", "customerNo", "contactPhone")  # checkDuplicates looks cases up by these


@handler("checkDuplicates")
def check_duplicates(variables: dict[str, Any], ctx) -> dict[str, Any]:
    """Prior complaints of the same customer (户号 or phone) within ``complaint.repeatWindow``.

    ``repeatCount`` counts those on the same subject (same category and subcategory).
    """
    version, recorded = policy(variables, ctx.now)
    registered = as_instant(variables.get("registeredAt")) or ctx.now
    window_start = registered - (after(registered, version.duration("complaint.repeatWindow")) - registered)
    customer_no, phone = variables.get("customerNo"), variables.get("contactPhone")
    linked, repeats = [], 0
    candidates = ctx.find_cases("complaint_handling", window_start,
                                any_of={"customerNo": customer_no, "contactPhone": phone}) if ctx.find_cases else []
    for case in candidates:
        other = case["variables"]
        same_customer = (customer_no and other.get("customerNo") == customer_no) or (
            phone and other.get("contactPhone") == phone)
        if not same_customer:
            continue
        linked.append(case["business_key"] or case["instance_id"])
        if other.get("category") == variables.get("category") and \
                other.get("subcategory") == variables.get("subcategory"):
            repeats += 1
    return {**recorded, "linkedOrders": linked, "repeatCount": repeats,
            "originOrderNo": variables.get("sourceOrderNo")}


def _rule_matches(condition: dict[str, Any], variables: dict[str, Any], version) -> bool:
    value = variables.get(condition["field"])
    if "equals" in condition:
        return value == condition["equals"]
    if "in" in condition:
        return value in condition["in"]
    if "atLeast" in condition:
        threshold = condition["atLeast"]
        if isinstance(threshold, dict):
            threshold = version.number(threshold["ref"])
        return value is not None and float(value) >= float(threshold)
    raise ValueError(f"grading rule condition {condition} has no known operator")


def grade(variables: dict[str, Any], version) -> str:
    """D4: the first matching rule of ``complaint.gradingRules`` gives the severity."""
    for rule in version.table("complaint.gradingRules")["rules"]:
        if rule.get("otherwise") or any(_rule_matches(c, variables, version) for c in rule.get("anyOf", [])):
            return rule["severity"]
    return "GENERAL"


@handler("gradeComplaint")
def grade_complaint(variables: dict[str, Any], ctx) -> dict[str, Any]:
    """D4 pre-grading; a severity already raised (customer chases) is never lowered."""
    version, recorded = policy(variables, ctx.now)
    suggested = grade(variables, version)
    severity = raise_severity(variables.get("severity"), suggested) if variables.get("severity") else suggested
    review = version.duration(f"complaint.{suggested}.review")
    return {**recorded, "suggestedSeverity": suggested, "severity": severity, "reviewDuration": review,
            "reviewSuperviseAfter": _twice(review), "reviewDueAt": after(ctx.now, review)}


def _twice(duration: str) -> str:
    minutes = int((after(datetime(2026, 1, 1).astimezone(), duration) - datetime(2026, 1, 1).astimezone())
                  .total_seconds() // 60)
    return f"PT{2 * minutes}M"


def complaint_sla(variables: dict[str, Any], version, start: datetime) -> dict[str, Any]:
    """D5 + channel caps from ``start``; ``replyCap`` stays anchored to ``registeredAt``."""
    cal = calendar()
    severity = variables.get("severity") or "GENERAL"
    channel = str(variables.get("channel") or "")
    registered = as_instant(variables.get("registeredAt")) or start
    prefix = f"complaint.{severity}"

    contact_due = after(start, version.duration(f"{prefix}.contact"))
    contact_remind = start + (contact_due - start) * 0.8
    reply_due = cal.add_working_days(start, version.wd(f"{prefix}.reply"))
    reply_cap = cal.add_working_days(registered, version.ceiling_wd(f"{prefix}.reply") or 10)
    caps = version.table("complaint.channelCaps")
    if channel in caps:
        cap_key = caps[channel]["ref"]
        value = version.get(cap_key)
        channel_cap = (cal.add_working_days(registered, version.wd(cap_key)) if value.kind == "wd"
                       else after(registered, version.duration(cap_key)))
        reply_due, reply_cap = min(reply_due, channel_cap), min(reply_cap, channel_cap)
    lead = version.wd("reminder.lead")
    reply_remind = cal.subtract_working_days(reply_due, lead)
    if reply_remind <= start:  # clamp rule of §9.1 for short budgets
        reply_remind = start + (reply_due - start) * 0.5
    forward = version.duration(f"{prefix}.forward")
    urgent = severity == "URGENT"
    return {
        "dispatchDuration": forward, "dispatchSuperviseAfter": _twice(forward),
        "dispatchDueAt": after(start, forward),
        "contactRemindAt": contact_remind, "contactDueAt": contact_due,
        "contactCapAt": cal.add_working_days(contact_due, 1),
        "replyRemindAt": reply_remind, "replyDue": reply_due, "replyCap": reply_cap,
        "replyEscalateAt": min(reply_cap, cal.add_working_days(reply_due, 1)),
        "reassignAt": cal.add_working_days(reply_due, version.wd("complaint.reassignAfter")),
        "updateEvery": version.duration(f"{prefix}.updateEvery"), "slaStartedAt": start,
        "revisitDelay": version.duration("revisit.delay.URGENT_COMPLAINT" if urgent else "revisit.delay.OTHER"),
        "revisitWindowWd": version.wd("revisit.window"),
    }


@handler("computeComplaintSla")
def compute_complaint_sla(variables: dict[str, Any], ctx) -> dict[str, Any]:
    version, recorded = policy(variables, ctx.now)
    return {**recorded, **complaint_sla(variables, version, ctx.now)}


@handler("recomputeComplaintSla")
def recompute_complaint_sla(variables: dict[str, Any], ctx) -> dict[str, Any]:
    """Re-entry (T4 or REHANDLE): contact and reply count again from now; clears ``overdue``."""
    version, recorded = policy(variables, ctx.now)
    return {**recorded, **complaint_sla(variables, version, ctx.now), "overdue": False}


@handler("recomputeSlaOnChase")
def recompute_sla_on_chase(variables: dict[str, Any], ctx) -> dict[str, Any]:
    """After a raise by customer chases: D5 of the new severity from the current pass; instants only move earlier."""
    version, recorded = policy(variables, ctx.now)
    start = as_instant(variables.get("slaStartedAt")) or ctx.now
    fresh = complaint_sla(variables, version, start)
    changed: dict[str, Any] = {}
    for key in ("contactRemindAt", "contactDueAt", "contactCapAt", "replyRemindAt", "replyDue", "replyCap",
                "replyEscalateAt", "reassignAt"):
        current = as_instant(variables.get(key))
        if current is None or fresh[key] < current:
            changed[key] = fresh[key]
    changed["updateEvery"] = fresh["updateEvery"]
    ctx.rearm_timers()
    return {**recorded, **changed}


@handler("notifyLeadership")
def notify_leadership(variables: dict[str, Any], ctx) -> dict[str, Any]:
    """URGENT: alert the company leaders at once (S8)."""
    reasons = [label for key, label in URGENT_FACTS.items() if variables.get(key)]
    if int(variables.get("affectedCustomerCount") or 1) > 1:
        reasons.append(f"群体投诉（{variables['affectedCustomerCount']}户）")
    notify(ctx, "sms", "leadership", "urgent_alert.j2", workOrderNo=variables.get("workOrderNo") or "",
           customerName=variables.get("customerName") or "", elecAddress=variables.get("elecAddress") or "",
           reasonLabels=reasons or ["值班主管定级为紧急"], summary=str(variables.get("content") or "")[:80],
           registeredAt=_local_long(as_instant(variables.get("registeredAt")) or ctx.now),
           caseOwnerName=variables.get("caseOwner") or "值班主管")
    return {"leadershipNotifiedAt": ctx.now}


@handler("assignOwnerSupervisor")
def assign_owner_supervisor(variables: dict[str, Any], ctx) -> dict[str, Any]:
    """MAJOR: the duty supervisor of the handling unit owns the case."""
    unit = variables.get("handlingUnit") or "客户服务中心"
    return {"caseOwner": f"{unit}值班主管"}


@handler("reassignToManager")
def reassign_to_manager(variables: dict[str, Any], ctx) -> dict[str, Any]:
    """T4: the work goes to the manager's nominee; severity at least MAJOR."""
    unit = variables.get("handlingUnit") or "客户服务中心"
    return {"handler": f"{unit}负责人指定专责", "previousHandler": variables.get("handler"),
            "severity": raise_severity(variables.get("severity"), "MAJOR"), "reassignedAt": ctx.now}


@handler("submitOrderReply", asynchronous=True)
def submit_order_reply(variables: dict[str, Any], ctx) -> dict[str, Any]:
    """回单 to 95598; 12398 / 12345 orders also go to the external platform (receipt keyed for idempotency)."""
    channel = str(variables.get("channel") or "")
    receipt = f"EXT-{ctx.idempotency_key[-12:]}" if channel in ("12398", "12345") else None
    ctx.emit("95598", "95598", f"回单 {variables.get('workOrderNo') or ctx.business_key}: "
             f"{str(variables.get('replyContent') or '')[:60]}", externalReceiptNo=receipt)
    return {"orderReplySubmittedAt": ctx.now, "externalReceiptNo": receipt}


@handler("closeAndArchive")
def close_and_archive(variables: dict[str, Any], ctx) -> dict[str, Any]:
    """办结归档: final status and the KPIs (contact and reply on time, reopened)."""
    contacted, contact_due = as_instant(variables.get("contactedAt")), as_instant(variables.get("contactDueAt"))
    replied, reply_due = as_instant(variables.get("repliedAt")), as_instant(variables.get("replyDue"))
    terminated = variables.get("decision") == "TERMINATE_SERVICE"
    return {
        "finalStatus": "服务终止" if terminated else "办结", "closedAt": ctx.now,
        "contactOnTime": bool(contacted and contact_due and contacted <= contact_due),
        "replyOnTime": bool(replied and reply_due and replied <= reply_due),
        "reopened": int(variables.get("rehandleCount") or 0) > 0,
        "severityLabel": SEVERITY_LABELS.get(variables.get("severity"), ""),
    }


@handler("logFollowUp")
def log_follow_up(variables: dict[str, Any], ctx) -> dict[str, Any]:
    """A customer's chase (催办 from outside): count it; the threshold comes from the policy."""
    version, recorded = policy(variables, ctx.now)
    return {**recorded, "followUpCount": int(variables.get("followUpCount") or 0) + 1,
            "chaseEscalateAt": version.number("complaint.chaseEscalateAt"), "lastFollowUpAt": ctx.now}


def _local_long(instant: datetime) -> str:
    from .common import SHANGHAI

    local = instant.astimezone(SHANGHAI)
    return f"{local.year}年{local.month}月{local.day}日 {local:%H:%M}"
