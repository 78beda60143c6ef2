"""The real ``gridflow`` CLI in subprocesses: ``--json`` shapes, options, exit codes, one-line errors.

Every subprocess costs about half a second, so each test groups its assertions per call and
sets up state through the Engine API (same database) where the CLI is not what is tested.
"""

from __future__ import annotations

import json
import re
import subprocess
from datetime import datetime, timedelta

from conftest import BPMN, SHANGHAI, TESTS, run_cli

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=SHANGHAI)  # the `clock` fixture's instant
WORK_ITEM_KEYS = {"id", "instance_id", "bpmn_id", "name", "lane", "candidate_groups", "assignee", "form_key",
                  "due_at"}


def ok(result: subprocess.CompletedProcess):
    assert result.returncode == 0, f"exit {result.returncode}\nstdout: {result.stdout}\nstderr: {result.stderr}"
    return json.loads(result.stdout) if result.stdout.lstrip().startswith(("{", "[")) else result.stdout


def one_error_line(result: subprocess.CompletedProcess, code: int = 1) -> str:
    """The command failed with ``code`` and said so in exactly one stderr line, without a traceback."""
    assert result.returncode == code, f"exit {result.returncode}\nstdout: {result.stdout}\nstderr: {result.stderr}"
    assert "Traceback" not in result.stderr + result.stdout
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert lines[0].startswith("gridflow: "), lines[0]
    return lines[0]


def at(text: str) -> datetime:
    value = datetime.fromisoformat(text)
    assert value.tzinfo is not None, text
    return value


# -- the operator's round trip -------------------------------------------------------------------
def test_deploy_start_tasks_complete_show_history_as_json(db_url, tmp_path):
    deployed = ok(run_cli("deploy", "--json", str(BPMN / "sla_review.bpmn"), str(BPMN / "follow_up.bpmn"),
                          db=db_url))
    assert [set(d) for d in deployed] == [{"key", "version", "content_hash"}] * 3
    assert sorted((d["key"], d["version"]) for d in deployed) == [
        ("follow_up", 1), ("opened_by_message", 1), ("sla_review", 1)]
    assert all(len(d["content_hash"]) == 64 and int(d["content_hash"], 16) >= 0 for d in deployed)

    case = tmp_path / "case.json"
    case.write_text(json.dumps({"amount": 150, "customer": "张三"}, ensure_ascii=False), encoding="utf-8")
    started = ok(run_cli("--now", T0.isoformat(), "--user", "agent1", "start", "sla_review",
                         "--data", f"@{case}", "--business-key", "WO-CLI-1", "--json", db=db_url))
    assert set(started) == {"instance_id", "status", "ready_tasks"}
    assert started["status"] == "running"
    [ready] = started["ready_tasks"]
    assert set(ready) >= WORK_ITEM_KEYS
    assert (ready["bpmn_id"], ready["name"], ready["form_key"]) == ("review", "审核", "testReview")
    assert at(ready["due_at"]) == T0 + timedelta(days=2)  # computed by the handler from --now
    instance_id = started["instance_id"]

    [row] = ok(run_cli("tasks", "--json", db=db_url))
    assert set(row) >= WORK_ITEM_KEYS
    assert row["id"] == ready["id"] and row["instance_id"] == instance_id
    assert (row["lane"], row["candidate_groups"], row["assignee"]) == ("agent", ["agent"], None)
    assert row["business_key"] == "WO-CLI-1" and at(row["due_at"]) == T0 + timedelta(days=2)

    done = ok(run_cli("--now", (T0 + timedelta(hours=3)).isoformat(), "--user", "lisi", "complete", row["id"],
                      "--data", '{"approved": true, "amount": 150, "comment": "同意"}', "--json", db=db_url))
    assert done == {"instance_id": instance_id, "status": "completed", "ready_tasks": []}

    shown = ok(run_cli("show", instance_id, "--json", db=db_url))
    assert {"instance_id", "status", "variables", "ready_tasks", "timers", "history"} <= set(shown)
    assert (shown["instance_id"], shown["status"], shown["business_key"]) == (instance_id, "completed", "WO-CLI-1")
    assert shown["ready_tasks"] == [] and shown["timers"] == []
    assert shown["variables"]["customer"] == "张三" and shown["variables"]["approved"] is True
    assert shown["variables"]["comment"] == "同意"
    types = [e["type"] for e in shown["history"]]
    assert types[0] == "instance_started" and types[-1] == "instance_completed" and "task_completed" in types

    history = ok(run_cli("history", instance_id, "--json", db=db_url))
    assert history == shown["history"]
    started_event = history[0]
    assert started_event["actor"] == "agent1" and at(started_event["at"]) == T0
    assert started_event["data"]["business_key"] == "WO-CLI-1"
    completion = next(e for e in history if e["type"] == "task_completed")
    assert (completion["actor"], completion["task_id"], completion["bpmn_id"]) == ("lisi", row["id"], "review")
    assert completion["data"]["data"] == {"approved": True, "amount": 150, "comment": "同意"}
    assert at(completion["at"]) == T0 + timedelta(hours=3)


# -- time ---------------------------------------------------------------------------------------
def test_run_due_fires_timers_at_now_option_and_gridflow_now_env(engine, db_url):
    engine.deploy([BPMN / "sla_review.bpmn"])
    instance = engine.start("sla_review", {"amount": 1})  # at T0: reminder T0+1d, take-away T0+5d

    before = ok(run_cli("--now", (T0 + timedelta(hours=23)).isoformat(), "run-due", "--json", db=db_url))
    assert before == {"fired": 0}
    reminded = ok(run_cli("--now", (T0 + timedelta(days=1, hours=1)).isoformat(), "run-due", "--json", db=db_url))
    assert reminded == {"fired": 1}
    state = engine.instance(instance.id)
    assert state.status == "running" and state.variables["reminders"] == 1
    assert [t.bpmn_id for t in state.ready_tasks] == ["review"]  # non-interrupting reminder

    taken = ok(run_cli("run-due", "--json", db=db_url,
                       env={"GRIDFLOW_NOW": (T0 + timedelta(days=5, hours=1)).isoformat()}))
    assert taken == {"fired": 1}
    state = engine.instance(instance.id)
    assert state.status == "completed" and state.ready_tasks == []
    fired = [(e.bpmn_id, e.data["late_seconds"], e.at) for e in engine.history(instance.id)
             if e.type == "timer_fired"]
    assert fired == [("t1Remind", 3600, T0 + timedelta(days=1, hours=1)),
                     ("t4Takeaway", 3600, T0 + timedelta(days=5, hours=1))]


# -- messages -----------------------------------------------------------------------------------
def test_message_send_correlates_on_work_order_number(engine, db_url):
    engine.deploy([BPMN / "follow_up.bpmn"])
    cases = {}
    for number in ("WO-1", "WO-2"):
        instance = engine.start("follow_up", {"workOrderNo": number, "severity": "GENERAL", "followUpCount": 0})
        engine.complete(instance.ready_tasks[0].id, {}, user="agent1")
        cases[number] = instance.id

    result = ok(run_cli("--user", "hotline", "message", "send", "msgFollowUp", "--correlate", "workOrderNo=WO-1",
                        "--data", '{"note": "客户再次来电"}', "--json", db=db_url))
    assert result == {"instance_id": cases["WO-1"], "status": "completed", "ready_tasks": []}
    one = engine.instance(cases["WO-1"])
    assert one.variables["note"] == "客户再次来电" and one.variables["followUpCount"] == 1
    received = next(e for e in engine.history(cases["WO-1"]) if e.type == "message_received")
    assert received.actor == "hotline" and received.data["correlation"] == {"workOrderNo": "WO-1"}
    assert engine.instance(cases["WO-2"]).status == "running"

    # no case waits for WO-9: the message is kept for later (buffered) or refused in one line,
    # but never delivered to another case
    unmatched = run_cli("message", "send", "msgFollowUp", "--correlate", "workOrderNo=WO-9", "--json", db=db_url)
    if unmatched.returncode == 0:
        assert json.loads(unmatched.stdout)["buffered"] is True
    else:
        line = one_error_line(unmatched)
        assert "msgFollowUp" in line and "WO-9" in line
    assert engine.instance(cases["WO-2"]).status == "running"


# -- errors ---------------------------------------------------------------------------------------
def test_errors_are_one_line_and_change_nothing(engine, db_url):
    engine.deploy([BPMN / "sla_review.bpmn"])
    instance = engine.start("sla_review", {"amount": 150})
    [task] = instance.ready_tasks

    line = one_error_line(run_cli("complete", "no-such-task", "--data", "{}", db=db_url))
    assert line == "gridflow: no task 'no-such-task'"

    before = ok(run_cli("show", instance.id, "--json", db=db_url))
    refused = run_cli("--user", "lisi", "complete", task.id, "--data",
                      '{"approved": true, "amount": 1, "contactPhone": "12345"}', db=db_url,
                      env={"GRIDFLOW_FORMS": str(TESTS / "forms")})
    line = one_error_line(refused)
    assert task.id in line and "contactPhone 联系电话" in line and "testReview" in line, line
    after = ok(run_cli("show", instance.id, "--json", db=db_url))
    assert after == before
    assert after["status"] == "running" and [t["id"] for t in after["ready_tasks"]] == [task.id]
    assert engine.tasks(instance_id=instance.id)[0].state == "open"


def test_bad_input_and_usage_errors(sqlite_url, tmp_path):
    """Parsing errors do not depend on the store: SQLite only, to keep subprocesses few."""
    from engine.api import Engine

    line = one_error_line(run_cli("start", "sla_review", "--data", '{"amount": 1,}', db=sqlite_url))
    assert line.startswith("gridflow: --data: invalid JSON at line 1 column 14"), line
    bad = tmp_path / "bad.json"
    bad.write_text('{\n  "amount": 1\n  "approved": true\n}')
    line = one_error_line(run_cli("start", "sla_review", "--data", f"@{bad}", db=sqlite_url))
    assert line.startswith(f"gridflow: --data {bad}: invalid JSON at line 3 column 3"), line
    engine = Engine(sqlite_url)
    try:
        assert engine.instances() == [] and engine.definitions() == []
    finally:
        engine.close()

    missing = run_cli("complete", db=sqlite_url)
    assert missing.returncode == 2 and "Missing argument 'TASK_ID'" in missing.stderr
    assert "Traceback" not in missing.stderr

    naive = run_cli("--now", "2026-12-01T09:00:00", "run-due", db=sqlite_url)
    assert naive.returncode == 2, naive.stderr
    assert "--now" in naive.stderr and "no time zone offset" in naive.stderr
    assert "Traceback" not in naive.stderr


def test_overlong_values_get_one_line_not_a_database_traceback(engine, db_url, tmp_path):
    """A 300-character business key or a 450-character process name must behave the same on both stores:
    accepted, or refused with one clear line.

    BUG (PostgreSQL only): the columns are VARCHAR(200)/VARCHAR(400) (engine/store.py) and nothing
    checks lengths first, so PostgreSQL raises StringDataRightTruncation, which is not mapped to a
    GridflowError: the CLI prints a SQLAlchemy traceback. SQLite ignores VARCHAR lengths and accepts.
    """
    engine.deploy([BPMN / "sla_review.bpmn"])
    long_name = tmp_path / "long_name.bpmn"
    long_name.write_text((BPMN / "sla_review.bpmn").read_text(encoding="utf-8")
                         .replace('name="SLA review"', f'name="{"长" * 450}"'), encoding="utf-8")
    crashes = {}
    for args in (["deploy", str(long_name)], ["start", "sla_review", "--business-key", "W" * 300]):
        result = run_cli(*args, db=db_url)
        if "Traceback" in result.stderr:
            crashes[args[0]] = [line for line in result.stderr.splitlines()
                                if re.match(r"^[\w.]+(Error|Exception): ", line)]
        elif result.returncode != 0:
            one_error_line(result)
    assert crashes == {}, f"database errors reached the user as tracebacks: {crashes}"
