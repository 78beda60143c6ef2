"""回访 revisit: the call window, the SMS survey after failed calls, and the outcome rule (§11)."""

from __future__ import annotations

from typing import Any

from handlers import handler

from .common import after, calendar, notify, policy


@handler("computeRevisitDue")
def compute_revisit_due(variables: dict[str, Any], ctx) -> dict[str, Any]:
    """Window from the end of the wait: a duration (``revisitWindow``) or working days (``revisitWindowWd``)."""
    version, recorded = policy(variables, ctx.now)
    cal = calendar()
    if variables.get("revisitWindow"):
        due = after(ctx.now, variables["revisitWindow"])
        remind = ctx.now + (due - ctx.now) * 0.8
    else:
        days = int(variables.get("revisitWindowWd") or version.wd("revisit.window"))
        due = cal.add_working_days(ctx.now, days)
        remind = cal.subtract_working_days(due, version.wd("reminder.lead"))
        if remind <= ctx.now:
            remind = ctx.now + (due - ctx.now) * 0.5
    return {**recorded, "revisitRemindAt": remind, "revisitDueAt": due,
            "revisitCapAt": cal.add_working_days(due, 1),
            "revisitMaxAttempts": version.number("revisit.maxAttempts"),
            "revisitRetryAfter": version.duration("revisit.retryAfter")}


@handler("smsSurvey")
def sms_survey(variables: dict[str, Any], ctx) -> dict[str, Any]:
    notify(ctx, "sms", variables.get("contactPhone") or "", "sms_survey.j2",
           customerName=variables.get("customerName") or "客户", sourceOrderNo=variables.get("sourceOrderNo") or "",
           validHours=48)
    return {"smsSurveySentAt": ctx.now}


def revisit_outcome(variables: dict[str, Any]) -> str:
    """First match: not reached → FAILED; wants to complain → COMPLAINT; resolved and satisfied → CLOSED."""
    if not variables.get("reached"):
        return "FAILED"
    if variables.get("wantsToComplain"):
        return "COMPLAINT"
    if variables.get("resolved") and variables.get("satisfaction") in ("SATISFIED", "BASIC"):
        return "CLOSED"
    return "REOPEN"


@handler("setRevisitOutcome")
def set_revisit_outcome(variables: dict[str, Any], ctx) -> dict[str, Any]:
    return {"revisitOutcome": revisit_outcome(variables), "revisitComment": variables.get("comment")}
