"""Helpers shared by the worker, job, message and SLA-clock tests."""

from __future__ import annotations

import json
import subprocess
from types import SimpleNamespace

import gridflow_worker_handlers  # noqa: F401  (registers the async and side-effect handlers)
from conftest import BPMN, run_cli
from sqlalchemy import select

HANDLERS_ENV = {"GRIDFLOW_HANDLERS": "gridflow_test_handlers,gridflow_worker_handlers"}


def deploy(engine, *names):
    return engine.deploy([BPMN / n for n in names], user="admin")


def cli(*args: str, db: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """The real ``gridflow`` CLI with the worker test handlers loaded."""
    return run_cli(*args, db=db, env={**HANDLERS_ENV, **(env or {})}, timeout=timeout)


def ok(result: subprocess.CompletedProcess):
    assert result.returncode == 0, f"exit {result.returncode}\nstdout: {result.stdout}\nstderr: {result.stderr}"
    assert "Traceback" not in result.stderr
    text = result.stdout.lstrip()
    return json.loads(text) if text.startswith(("{", "[")) else result.stdout


def log_lines(output: str, action: str) -> list[dict[str, str]]:
    """The worker's log lines for ``action`` as dicts of their key=value fields."""
    found = []
    for line in output.splitlines():
        parts = line.split(" ")
        if len(parts) >= 3 and parts[2] == action:
            fields = {"at": parts[0], "worker": parts[1].removeprefix("worker=")}
            for part in parts[3:]:
                key, sep, value = part.partition("=")
                if sep:
                    fields[key] = value.strip('"')
            found.append(fields)
    return found


def events(engine, type_: str, instance_id: str | None = None):
    """History rows of one type across instances (global events too), oldest first."""
    from engine.store import EventRow

    with engine.store.read() as session:
        query = select(EventRow).where(EventRow.type == type_).order_by(EventRow.id)
        if instance_id:
            query = query.where(EventRow.instance_id == instance_id)
        return [SimpleNamespace(id=r.id, instance_id=r.instance_id, at=r.at, type=r.type, actor=r.actor,
                                task_id=r.task_id, bpmn_id=r.bpmn_id, data=r.data or {})
                for r in session.scalars(query)]
