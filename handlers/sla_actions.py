"""The standard SLA pattern of §9.3: T1 催办, T2 督办 (applying the supervisor's decision), T3 升级.

The element that calls a handler is named ``<topic>_<late step>`` (§9.4), which tells the handler
which step is late. Each step's due and cap variables follow the flows' names (table below).
"""

from __future__ import annotations

from typing import Any

from handlers import handler

from .common import (
    SEVERITY_LABELS,
    as_instant,
    calendar,
    late_step,
    local_text,
    notify,
    policy,
    raise_severity,
)

STEP_DUE = {"subHandle": "replyDue", "classifyComplaint": "reviewDueAt", "dispatchComplaint": "dispatchDueAt",
            "arriveOnSite": "arriveDue", "repairAndRestore": "restoreDue"}
STEP_CAP = {"subHandle": "replyEscalateAt", "arriveOnSite": "arriveCap"}
STEP_NAMES = {"subHandle": "投诉处理", "contactCustomer": "联系客户", "classifyComplaint": "分类定级",
              "dispatchComplaint": "派单", "revisitCustomer": "回访", "replyCustomer": "答复客户"}


def due_variable(step: str) -> str:
    return STEP_DUE.get(step, f"{step}DueAt")


def cap_variable(step: str) -> str:
    return STEP_CAP.get(step, f"{step}CapAt")


@handler("sendReminder")
def send_reminder(variables: dict[str, Any], ctx) -> dict[str, Any]:
    """T1 催办 (and a customer's chase): SMS + to-do to the person handling the late step."""
    step = late_step(ctx.bpmn_id)
    count = int(variables.get("remindCount") or 0) + 1
    chased = ctx.bpmn_id == "remindHandler"
    assignee = variables.get("handler") or "处理人"
    notify(ctx, "sms", assignee, "reminder.j2", assigneeName=assignee,
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
    """
    step = late_step(ctx.bpmn_id)
    decision = variables.get("decision")
    result: dict[str, Any] = {"supervisedAt": ctx.now, "supervisionDecision": decision}
    if decision == "EXTEND":
        new_due = as_instant(variables.get("newDueAt"))
        result[due_variable(step)] = new_due
        result["overdue"] = False
        if not variables.get(f"{step}CapIsCeiling"):
            result[cap_variable(step)] = calendar().add_working_days(new_due, 1)
    elif decision == "REASSIGN":
        result["handler"] = variables.get("newAssignee")
    elif decision == "ESCALATE":
        if variables.get("newSeverity"):
            result["severity"] = raise_severity(variables.get("severity"), variables["newSeverity"])
        if variables.get("newOwner"):
            result["caseOwner"] = variables["newOwner"]
    notify(ctx, "sms", variables.get("handler") or "处理人", "supervise_notice.j2",
           recipientName=variables.get("handler") or "处理人",
           workOrderNo=variables.get("workOrderNo") or ctx.business_key or "", taskName=STEP_NAMES.get(step, step),
           dueAt=local_text(variables.get(due_variable(step))), supervisorName="值班主管",
           decision=decision or "", reason=variables.get("reason") or "",
           newDueAt=local_text(variables.get("newDueAt")), newAssigneeName=variables.get("newAssignee") or "",
           newSeverityLabel=SEVERITY_LABELS.get(variables.get("newSeverity"), ""),
           newOwnerName=variables.get("newOwner") or "")
    ctx.rearm_timers()
    return result


@handler("sendProgressUpdate")
def send_progress_update(variables: dict[str, Any], ctx) -> dict[str, Any]:
    """Interim update to the customer for URGENT and MAJOR complaints; GENERAL sends nothing."""
    version, recorded = policy(variables, ctx.now)
    severity = variables.get("severity") or "GENERAL"
    if not version.flag(f"complaint.{severity}.sendUpdates"):
        return recorded
    every = version.duration(f"complaint.{severity}.updateEvery")
    from .common import after

    notify(ctx, "sms", variables.get("contactPhone") or "", "progress_update.j2",
           customerName=variables.get("customerName") or "", workOrderNo=variables.get("workOrderNo") or "",
           severityLabel=SEVERITY_LABELS[severity], statusText="正在调查处理，我们会及时告知进展",
           handlerName=variables.get("handler") or "", handlerPhone="95598",
           nextUpdateText=local_text(after(ctx.now, every)))
    return {**recorded, "lastProgressUpdateAt": ctx.now,
            "progressUpdates": int(variables.get("progressUpdates") or 0) + 1}
