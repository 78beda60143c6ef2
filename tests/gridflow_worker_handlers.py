"""Handlers for the worker, job and incident tests (load with GRIDFLOW_HANDLERS=gridflow_worker_handlers).

``test.sideEffect`` shows the integrator pattern for exactly-once side effects: the handler keeps a
ledger of idempotency keys next to the side effect; an attempt whose key is already in the ledger
(the worker died after the side effect, before the engine committed) returns the recorded outcome
instead of repeating it.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from handlers import handler

CALLS: list[dict] = []  # in-process record of every flaky call: attempt and idempotency key


@handler("test.flakyBilling")
def flaky_billing(variables, ctx):
    """Fails until ``failures`` calls of this task have failed (counted per idempotency key)."""
    failed_before = sum(1 for c in CALLS if c["key"] == ctx.idempotency_key and c["failed"])
    fail = failed_before < int(variables.get("failures", 0))
    CALLS.append({"key": ctx.idempotency_key, "attempt": ctx.attempt, "failed": fail, "task": ctx.bpmn_id})
    if fail:
        raise ConnectionError(f"billing system unreachable (call {failed_before + 1})")
    return {"billChecked": True, "checkedOnAttempt": ctx.attempt}


@handler("test.asyncNotify", asynchronous=True, retry_cycle="PT30S,PT2M")
def async_notify(variables, ctx):
    """Asynchronous by registration (no asyncBefore in the diagram), with its own retry cycle."""
    if variables.get("crmDown"):
        raise TimeoutError("CRM did not answer")
    return {"crmNotified": ctx.idempotency_key}


@handler("test.sideEffect")
def side_effect(variables, ctx):
    """Sends a 'notice' once per idempotency key, then sleeps ``sleepSeconds`` (to be killed in)."""
    ledger = Path(variables["ledger"])
    done = ledger.read_text(encoding="utf-8").split() if ledger.exists() else []
    if ctx.idempotency_key in done:
        return {"notice": "already sent", "noticeAttempt": ctx.attempt}
    with open(ledger, "a", encoding="utf-8") as out:  # the side effect and its key, together
        out.write(ctx.idempotency_key + "\n")
        out.flush()
        os.fsync(out.fileno())
    time.sleep(float(variables.get("sleepSeconds", 0)))
    return {"notice": "sent", "noticeAttempt": ctx.attempt}
