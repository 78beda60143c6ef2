"""The complaint workload shared by the benchmarks and the scale-out test.

A 投诉 case arrives as message ``msgComplaint`` (which starts ``complaint_handling``); operators
then complete its user tasks with the valid answers below until the case closes. The async
service task ``submitOrderReply`` runs as a job; the revisit (call activity ``revisit``) waits
for a timer before the call. :func:`answer` gives the form data for any user task of the flow
from its form key and the case variables, so a driver needs no knowledge of the path taken
(grading, urgent coordination, supervision after a T2 timer …).

:func:`think_time` is how long an operator takes before completing a task: a fixed function of
the task id, so that separate processes (drivers, the orchestrator of the scale test) agree
on when a task becomes actionable without talking to each other.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PROCESSES = [ROOT / "processes" / "revisit.bpmn", ROOT / "processes" / "complaint_handling.bpmn"]
START_MESSAGE = "msgComplaint"


def work_order(n: int) -> str:
    return f"WO-SCALE-{n:06d}"


def case_facts(n: int) -> tuple[str, dict[str, Any]]:
    """Channel and facts of case ``n``: mostly general complaints, some major (12398) and urgent ones."""
    kind = n % 20
    if kind in (3, 11, 17):
        return "12398", {}  # MAJOR: the regulator's hotline (and an external receipt number in 回单)
    if kind in (7, 15):
        return "95598_PHONE", {"mediaInvolved": True}  # URGENT: leadership alert, parallel coordination
    return "95598_PHONE", {}


def start_payload(n: int, now: datetime) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(correlation, data)`` of the ``msgComplaint`` message that opens case ``n``."""
    channel, _ = case_facts(n)
    number = work_order(n)
    return {"workOrderNo": number}, {"workOrderNo": number, "channel": channel, "registeredAt": now.isoformat()}


def register(n: int) -> dict[str, Any]:
    channel, facts = case_facts(n)
    data = {"channel": channel, "customerName": "张伟", "customerNo": f"31{n % 100_000_000:08d}",
            "contactPhone": f"138{n % 100_000_000:08d}", "elecAddress": "广州市天河区中山大道100号",
            "content": "近一个月家中频繁停电，每次停电都没有提前通知，影响生活。",
            "demand": "要求说明停电原因并保证今后提前通知", "category": "OUTAGE", "escalationTendency": False,
            "injuryOrSafety": False, "importantCustomerOutage": False, "mediaInvolved": False,
            "affectedCustomerCount": 1, "staffMisconduct": False}
    data.update(facts)
    return data


def answer(form_key: str | None, variables: dict[str, Any], now: datetime, case: int = 0) -> dict[str, Any]:
    """Valid form data for a user task of the complaint or revisit flow (KeyError for another form)."""
    stamp = now.isoformat()
    if form_key == "registerComplaint":
        return register(case)
    answers = {
        "classifyComplaint": lambda: {"category": variables.get("category", "OUTAGE"),
                                      "severity": variables.get("suggestedSeverity") or "GENERAL",
                                      "handlingUnit": "天河供电服务中心"},
        "dispatchComplaint": lambda: {"handler": "李娜", "dispatchNote": "请24小时内联系客户"},
        "contactCustomer": lambda: {"contactedAt": stamp, "contactResult": "CONTACTED"},
        "investigateAndHandle": lambda: {"findings": "线路老化导致频繁跳闸，已核实", "verified": True,
                                         "utilityResponsible": True, "measures": "更换老化线路，完善停电通知流程"},
        "reviewResult": lambda: {"approved": True},
        "replyCustomer": lambda: {"replyMethod": "PHONE", "repliedAt": stamp,
                                  "replyContent": "经核查系线路老化所致，已完成更换，今后计划停电将提前七天通知。"},
        "urgentCoordination": lambda: {"coordinationActions": "已安排抢修队赶赴现场", "coordinatedAt": stamp},
        "revisitCustomer": lambda: {"reached": True, "resolved": True, "satisfaction": "SATISFIED"},
        "reviewComplaint": lambda: {"decision": "CLOSE"},
        "superviseOverdue": lambda: {"decision": "ESCALATE", "reason": "超时未处理", "newOwner": "王强"},
    }
    return answers[form_key or ""]()


def case_number(business_key: str | None) -> int:
    """``n`` back from a work order number (0 for anything else)."""
    try:
        return int((business_key or "").rsplit("-", 1)[-1])
    except ValueError:
        return 0


def think_time(task_id: str) -> timedelta:
    """How long an operator takes before completing this task (a fixed function of its id).

    Most tasks are done at once, some after hours, a few after a day or two, so that reminder (T1),
    supervision (T2) and escalation timers fire on some cases while their tasks are still open.
    """
    u = int.from_bytes(hashlib.blake2b(task_id.encode(), digest_size=4).digest(), "big") / 2**32
    if u < 0.6:
        return timedelta(0)
    if u < 0.85:
        return timedelta(minutes=30 + int((u - 0.6) * 4 * 150))  # 0.5–3 h
    if u < 0.97:
        return timedelta(hours=4 + int((u - 0.85) * 8 * 20))  # 4–20 h
    return timedelta(hours=24 + int((u - 0.97) * 33 * 36))  # 1–2.5 days


def actionable_at(task_id: str, created_at: datetime) -> datetime:
    return created_at + think_time(task_id)
