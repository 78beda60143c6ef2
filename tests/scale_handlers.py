"""Side-effect accounting for the scale-out test (load with GRIDFLOW_HANDLERS=scale_handlers).

Wraps the shipped ``submitOrderReply`` handler (the async 回单 job of the complaint flow) so that
every call and every side effect is recorded outside the database, where a rolled-back
transaction cannot hide it:

- ``$GRIDFLOW_SCALE_LEDGER/calls.log``: one line per handler call, appended with a single
  ``write`` (atomic for lines this short): ``begin``/``end``, idempotency key, attempt, pid,
  wall-clock time;
- ``$GRIDFLOW_SCALE_LEDGER/effects/<key>``: the side effect itself, created with ``O_EXCL``. This
  is the integrator's idempotency pattern: a call whose key already has an effect (an earlier
  attempt sent the 回单, then its worker died before the engine committed) does not send it again.

``GRIDFLOW_SCALE_SLOW`` (seconds) makes the handler linger after the side effect, so that the
test can kill a worker in the middle of a job.
"""

from __future__ import annotations

import os
import time
from dataclasses import replace
from pathlib import Path

import handlers.complaint  # noqa: F401  (registers submitOrderReply)
from handlers.registry import _REGISTRY

TOPIC = "submitOrderReply"


def _append(path: Path, line: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


def _recording(original):
    def submit_order_reply(variables, ctx):
        ledger = Path(os.environ["GRIDFLOW_SCALE_LEDGER"])
        calls = ledger / "calls.log"
        pid = os.getpid()
        _append(calls, f"begin {ctx.idempotency_key} {ctx.attempt} {pid} {time.time():.6f}")
        result = original(variables, ctx)
        try:
            fd = os.open(ledger / "effects" / ctx.idempotency_key.replace(":", "_"),
                         os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            result = {**result, "orderReplyRepeated": True}  # sent by an earlier attempt: not again
        else:
            os.write(fd, f"{pid} {ctx.attempt}\n".encode())
            os.close(fd)
        slow = float(os.environ.get("GRIDFLOW_SCALE_SLOW") or 0)
        if slow:
            time.sleep(slow)
        _append(calls, f"end {ctx.idempotency_key} {ctx.attempt} {pid} {time.time():.6f}")
        return result

    submit_order_reply.__wrapped__ = original
    return submit_order_reply


_spec = _REGISTRY[TOPIC]
if not hasattr(_spec.function, "__wrapped__"):
    _REGISTRY[TOPIC] = replace(_spec, function=_recording(_spec.function))
