"""Handlers used by the engine tests (registered through GRIDFLOW_HANDLERS or plain import)."""

from datetime import date, timedelta
from decimal import Decimal

from handlers import handler, searchable

searchable("search_case", "customerNo", "contactPhone")  # tests/bpmn/search_case.bpmn


@handler("test.computeDue")
def compute_due(variables, ctx):
    """Due two days after now, reminder one day after now (both aware datetimes)."""
    return {"dueAt": ctx.now + timedelta(days=2), "remindAt": ctx.now + timedelta(days=1),
            "computedBy": ctx.idempotency_key}


@handler("test.remind")
def remind(variables, ctx):
    ctx.emit("sms", variables.get("contactPhone", "13800000000"), "您的工单即将超时，请尽快处理。")
    return {"reminders": variables.get("reminders", 0) + 1}


@handler("test.typedValues")
def typed_values(variables, ctx):
    return {"feeYuan": Decimal("1234.56"), "billDate": date(2026, 2, 14), "computedAt": ctx.now,
            "items": [{"code": "A", "qty": 1}]}


@handler("test.mutateNested")
def mutate_nested(variables, ctx):
    items = variables["items"]
    items.append({"code": "B", "qty": 2})
    items[0]["qty"] = 99
    return {"items": items}


@handler("test.failWhenAsked")
def fail_when_asked(variables, ctx):
    if variables.get("fail") == "unstorable":
        return {"checked": True, "receipt": b"\x00raw"}  # bytes: neither JSON nor a type the state tags
    if variables.get("fail") == "nan":
        return {"checked": True, "score": float("nan")}  # JSON without NaN: PostgreSQL refuses it
    if variables.get("fail"):
        raise RuntimeError("billing system unreachable")
    return {"checked": True}


@handler("test.remoteReconnect")
def remote_reconnect(variables, ctx):
    from handlers import BpmnError

    if variables.get("meterOffline"):
        raise BpmnError("REMOTE_FAILED", "电能表离线，远程复电失败", attempts=3)
    return {"reconnectedAt": ctx.now}


@handler("test.reassignStep")
def reassign_step(variables, ctx):
    """Gives the open tasks of ``step`` to ``to`` (a supervisor's 改派)."""
    ctx.reassign(variables["step"], variables["to"])
    return {}


@handler("test.reconnectOrBusy")
def reconnect_or_busy(variables, ctx):
    """tests/bpmn/two_remote_reconnects.bpmn: meter A is offline (a BPMN error); B's system is busy once."""
    from handlers import BpmnError

    if ctx.bpmn_id == "reconnectA":
        raise BpmnError("REMOTE_FAILED", "A 表离线")
    if ctx.attempt == 1:
        raise RuntimeError("远程费控系统繁忙")
    return {"reconnectedB": True}


@handler("test.moveDeadline")
def move_deadline(variables, ctx):
    """Moves ``deadline`` to ``newDeadline`` and asks for the waiting timeDate timers to be computed again."""
    ctx.rearm_timers()
    return {"deadline": variables["newDeadline"]}
