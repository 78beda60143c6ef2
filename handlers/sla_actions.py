"""The standard SLA pattern of §9.3: T1 催办, T2 督办 (applying the supervisor's decision), T3 升级.

The element that calls a handler is named ``<topic>_<late step>`` (§9.4), which tells the handler
which step is late. Each step's due and cap variables follow the flows' names (table below).
"""

from __future__ import annotations

from typing import Any

from handlers import handler

from .common import (
    SEVERITY_LABELS,
    after,
    as_instant,
    calendar,
    late_step,
    local_text,
    notify,
    policy,
    raise_severity,
)

STEP_DUE = {"subHandle": "replyDue", "classifyComplaint": "reviewDueAt", "dispatchComplaint": "dispatchDueAt",
            "arriveOnSite": "arriveDue", "repairAndRestore": "restoreDue",
            # aftersale steps sharing the instants of their computeDue (aftersale_service.md, SLAs)
            "verifyMeterData": "billingDueAt", "finalReading": "nameChangeDueAt", "approveChange": "nameChangeDueAt",
            "onsiteReconnect": "reconnectDueAt", "meterCalibration": "meterCheckDueAt",
            "replyMeterCheck": "meterCheckDueAt", "handleOtherRequest": "otherDueAt",
            # presale / midsale steps and their computeDue prefixes (presale_plan.md, midsale_connection.md)
            "subPlan": "planDueAt", "handleTransferredConsult": "consultDueAt", "gridSupportingProject": "gridDueAt",
            "designReview": "designDueAt", "midInspection": "midDueAt", "completionAcceptance": "completeDueAt",
            "installMeterAndConnect": "connectDueAt", "technicalGuidance": "guidanceDueAt"}
STEP_CAP = {"subHandle": "replyEscalateAt", "arriveOnSite": "arriveCap", "repairAndRestore": "restoreCapAt",
            "verifyMeterData": "billingCapAt", "finalReading": "nameChangeCapAt", "approveChange": "nameChangeCapAt",
            "onsiteReconnect": "reconnectCapAt", "meterCalibration": "meterCheckCapAt",
            "replyMeterCheck": "meterCheckCapAt", "handleOtherRequest": "otherCapAt",
            "subPlan": "planCapAt", "handleTransferredConsult": "consultCapAt", "gridSupportingProject": "gridCapAt",
            "designReview": "designCapAt", "midInspection": "midCapAt", "completionAcceptance": "completeCapAt",
            "installMeterAndConnect": "connectCapAt", "technicalGuidance": "guidanceCapAt"}
STEP_NAMES = {"subHandle": "投诉处理", "contactCustomer": "联系客户", "classifyComplaint": "分类定级",
              "dispatchComplaint": "派单", "revisitCustomer": "回访", "replyCustomer": "答复客户",
              "acceptRepair": "受理报修", "assignCrew": "接单派工", "arriveOnSite": "到达现场",
              "repairAndRestore": "故障处理恢复送电", "verifyMeterData": "核实抄表/电量/扣费",
              "finalReading": "抄见示数", "approveChange": "更名/过户审批", "onsiteReconnect": "现场复电",
              "meterCalibration": "电能表校验", "replyMeterCheck": "答复客户（电能表）",
              "handleOtherRequest": "办理并答复",
              "subPlan": "供电方案答复", "handleTransferredConsult": "转办咨询答复", "collectFee": "业扩收费",
              "gridSupportingProject": "电网配套工程", "designReview": "受电工程设计审查", "midInspection": "中间检查",
              "completionAcceptance": "竣工检验", "installMeterAndConnect": "装表接电",
              "technicalGuidance": "用电技术指导"}
# who gets the 催办 besides the case's ``handler``: the variable naming the step's assignee, extra groups
STEP_ASSIGNEE = {"arriveOnSite": "crewId", "repairAndRestore": "crewId"}
STEP_ALSO_REMIND = {"arriveOnSite": ("dispatcher",)}
# steps whose T1 reminds the customer, not staff (customer time, e.g. midsale collectFee → 催缴短信):
# step -> function(variables, ctx) returning the handler result; registered by the flow's module
CUSTOMER_REMINDERS: dict[str, Any] = {}


def due_variable(step: str) -> str:
    return STEP_DUE.get(step, f"{step}DueAt")


def cap_variable(step: str) -> str:
    return STEP_CAP.get(step, f"{step}CapAt")


@handler("sendReminder")
def send_reminder(variables: dict[str, Any], ctx) -> dict[str, Any]:
    """T1 催办 (and a customer's chase): SMS + to-do to the person handling the late step."""
    step = late_step(ctx.bpmn_id)
    if step in CUSTOMER_REMINDERS:
        return CUSTOMER_REMINDERS[step](variables, ctx)
    count = int(variables.get("remindCount") or 0) + 1
    chased = ctx.bpmn_id == "remindHandler"
    assignee = variables.get(STEP_ASSIGNEE.get(step, "handler")) or variables.get("handler") or "处理人"
    for recipient in (assignee, *STEP_ALSO_REMIND.get(step, ())):
        notify(ctx, "sms", recipient, "reminder.j2", assigneeName=recipient,
               taskName=STEP_NAMES.get(step, step), workOrderNo=variables.get("workOrderNo") or ctx.business_key or "",
               dueAt=local_text(variables.get(due_variable(step))) or "规定时限", remindCount=count,
               customerChased=chased, followUpCount=int(variables.get("followUpCount") or 0))
    return {"remindCount": count, "lastReminderAt": ctx.now}


@handler("notifyManager")
def notify_manager(variables: dict[str, Any], ctx) -> dict[str, Any]:
    """T3 升级: notice to the manager; the step is a compliance breach."""
    step = late_step(ctx.bpmn_id)
    severity = variables.get("severity")
    notify(ctx, "sms", "manager", "escalation_notice.j2", managerName="部门负责人",
           workOrderNo=variables.get("workOrderNo") or ctx.business_key or "", taskName=STEP_NAMES.get(step, step),
           severityLabel=SEVERITY_LABELS.get(severity, ""), customerName=variables.get("customerName") or "",
           dueAt=local_text(variables.get(due_variable(step))), capAt=local_text(ctx.now), complianceBreach=True,
           handlerName=variables.get("handler") or "", summary=str(variables.get("content") or "")[:60])
    return {"complianceBreach": True, "escalatedAt": ctx.now,
            "escalations": int(variables.get("escalations") or 0) + 1}


@handler("applySupervision")
def apply_supervision(variables: dict[str, Any], ctx) -> dict[str, Any]:
    """T2 督办 decision (form FS.1): EXTEND the due, REASSIGN the handler, or ESCALATE severity/owner.

    An extension moves T3 to the new due + 1 working day, except a T3 at a regulatory ceiling.
    Waiting date timers are re-armed so they read the changed instants.

    Properties (``camunda:property``): ``dueVariable`` / ``capVariable`` name the step's due and cap
    variables (default: the tables above), ``capIsCeiling`` = true keeps T3 (else ``<step>CapIsCeiling``).
    A due or cap variable the case does not have is not created (a step whose due is a duration from
    its start, e.g. ``acceptRepair``).
    """
    step = late_step(ctx.bpmn_id)
    decision = variables.get("decision")
    due_name = ctx.param("dueVariable", variables) or due_variable(step)
    cap_name = ctx.param("capVariable", variables) or cap_variable(step)
    ceiling = (str(ctx.param("capIsCeiling", variables, "")).strip().lower() == "true"
               or bool(variables.get(f"{step}CapIsCeiling"))
               or bool(variables.get(cap_name.removesuffix("CapAt") + "CapIsCeiling")))  # computeDue's prefix
    result: dict[str, Any] = {"supervisedAt": ctx.now, "supervisionDecision": decision}
    if decision == "EXTEND":
        new_due = as_instant(variables.get("newDueAt"))
        if due_name in variables:
            result[due_name] = new_due
        result["overdue"] = False
        if not ceiling and cap_name in variables:
            result[cap_name] = calendar().add_working_days(new_due, 1)
    elif decision == "REASSIGN":  # the late step's open tasks go to the new assignee, whatever their assignee rule
        result["handler"] = variables.get("newAssignee")
        ctx.reassign(step, variables.get("newAssignee"))
    elif decision == "ESCALATE":
        if variables.get("newSeverity"):
            result["severity"] = raise_severity(variables.get("severity"), variables["newSeverity"])
        if variables.get("newOwner"):
            result["caseOwner"] = variables["newOwner"]
    notify(ctx, "sms", variables.get("handler") or "处理人", "supervise_notice.j2",
           recipientName=variables.get("handler") or "处理人",
           workOrderNo=variables.get("workOrderNo") or ctx.business_key or "", taskName=STEP_NAMES.get(step, step),
           dueAt=local_text(variables.get(due_name)), supervisorName="值班主管",
           decision=decision or "", reason=variables.get("reason") or "",
           newDueAt=local_text(variables.get("newDueAt")), newAssigneeName=variables.get("newAssignee") or "",
           newSeverityLabel=SEVERITY_LABELS.get(variables.get("newSeverity"), ""),
           newOwnerName=variables.get("newOwner") or "")
    ctx.rearm_timers()
    return result


@handler("sendProgressUpdate")
def send_progress_update(variables: dict[str, Any], ctx) -> dict[str, Any]:
    """Interim update to the customer. Complaints: URGENT and MAJOR only (``complaint.<sev>.sendUpdates``);
    orders without a severity (after-sale) always get it."""
    version, recorded = policy(variables, ctx.now)
    severity = variables.get("severity")
    next_update = ""
    if severity:
        if not version.flag(f"complaint.{severity}.sendUpdates"):
            return recorded
        next_update = local_text(after(ctx.now, version.duration(f"complaint.{severity}.updateEvery")))
    notify(ctx, "sms", variables.get("contactPhone") or "", "progress_update.j2",
           customerName=variables.get("customerName") or "", workOrderNo=variables.get("workOrderNo") or "",
           severityLabel=SEVERITY_LABELS.get(severity, ""), statusText="正在处理中，我们会及时告知进展",
           handlerName=variables.get("handler") or "", handlerPhone="95598", nextUpdateText=next_update or "稍后")
    return {**recorded, "lastProgressUpdateAt": ctx.now,
            "progressUpdates": int(variables.get("progressUpdates") or 0) + 1}
