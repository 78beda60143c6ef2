"""The operator CLI in-process (click's CliRunner) on both stores: identities and permissions,
the work queue, claim/unclaim/reassign, ids by prefix, completion with --data, show and history.

Every refusal must be one line on stderr, exit code 1, change nothing, and leave a ``refused``
event in history. State is set up through the Engine API on the same database; the CLI is
what is tested.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections import Counter
from datetime import datetime, timedelta
from types import SimpleNamespace

import click
import pytest
from click.testing import CliRunner
from conftest import BPMN, ROOT, SHANGHAI, TESTS

import cli
from engine.worklist import countdown

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=SHANGHAI)  # the `clock` fixture's instant
USERS = {"zhang": ["agent"], "li": ["agent"], "wang": ["agent", "supervisor"], "qa": ["backoffice"]}


class Cli:
    """``gridflow`` in-process on one database, acting at a fixed instant."""

    def __init__(self, db: str):
        self.db = db
        self.runner = CliRunner()

    def __call__(self, *args: str, user: str | None = None, now: datetime = T0, input: str | None = None):
        env = {"GRIDFLOW_DB": self.db, "GRIDFLOW_FORMS": str(TESTS / "forms"), "GRIDFLOW_NOW": now.isoformat(),
               "GRIDFLOW_HANDLERS": "gridflow_test_handlers", "GRIDFLOW_USER": user, "COLUMNS": "200"}
        return self.runner.invoke(cli.main, list(args), env=env, input=input, prog_name="gridflow")

    def ok(self, *args: str, **kwargs):
        result = self(*args, **kwargs)
        assert result.exit_code == 0, (result.exit_code, result.stdout, result.stderr, result.exception)
        return json.loads(result.stdout) if "--json" in args else result.stdout

    def refused(self, *args: str, **kwargs) -> str:
        """The command failed with exit 1 and exactly one line on stderr; returns that line."""
        result = self(*args, **kwargs)
        assert result.exit_code == 1, (result.exit_code, result.stdout, result.stderr, result.exception)
        assert isinstance(result.exception, SystemExit), result.exception
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("gridflow: "), lines
        return lines[0]


@pytest.fixture
def world(engine, db_url, clock):
    """boss (admin), zhang/li (agent), wang (agent + supervisor), qa (backoffice); two review tasks:
    WO-1 started at T0 (due T0+2d), WO-2 started at T0+1d (due T0+3d)."""
    engine.init_db("boss", display_name="王主任")
    for name, groups in USERS.items():
        engine.add_user(name, groups, user="boss")
    engine.deploy([BPMN / "sla_review.bpmn"], user="boss")
    first = engine.start("sla_review", {"amount": 150}, business_key="WO-1", user="zhang")
    clock.advance(timedelta(days=1))
    second = engine.start("sla_review", {"amount": 5}, business_key="WO-2", user="zhang")
    clock.set(T0)
    return SimpleNamespace(engine=engine, cli=Cli(db_url), i1=first.id, i2=second.id,
                           t1=first.ready_tasks[0].id, t2=second.ready_tasks[0].id)


def refusals(engine, **match) -> list:
    return [e for e in engine.events(type="refused") if all(getattr(e, k, None) == v or e.data.get(k) == v
                                                           for k, v in match.items())]


# -- identities --------------------------------------------------------------------------------
def test_db_init_creates_the_first_admin_once(engine, db_url):
    gf = Cli(db_url)
    assert "created admin boss" in gf.ok("db", "init", "--admin", "boss", "--display-name", "王主任")
    [boss] = gf.ok("user", "list", "--json", user="boss")
    assert (boss["name"], boss["groups"], boss["display_name"]) == ("boss", ["admin"], "王主任")

    line = gf.refused("db", "init", "--admin", "eve")
    assert "already has 1 user" in line
    assert [u.name for u in engine.users()] == ["boss"]
    [refusal] = refusals(engine, action="db init")
    assert refusal.actor == "eve" and refusal.instance_id is None


def test_once_users_exist_every_command_needs_a_known_user(world):
    gf, engine = world.cli, world.engine
    line = gf.refused("tasks")
    assert line == "gridflow: 'tasks' needs an acting user: pass --user NAME or set GRIDFLOW_USER"
    line = gf.refused("show", world.i1, user="mallory")
    assert "unknown user 'mallory'" in line and "gridflow user add" in line
    assert [e.actor for e in refusals(engine, action="show")] == ["mallory"]

    assert "ok: sla_review" in gf.ok("lint", str(BPMN / "sla_review.bpmn"))  # no user needed
    assert "schema is current" in gf.ok("db", "upgrade")
    assert "Usage: gridflow tasks" in gf.ok("tasks", "--help")


def test_setup_mode_without_users_runs_unchecked(engine, db_url):
    """The documented escape hatch: a database without users (embedded use, demos, CI) has no identities."""
    gf = Cli(db_url)
    assert "sla_review v1" in gf.ok("deploy", str(BPMN / "sla_review.bpmn"))
    started = gf.ok("start", "sla_review", "--data", '{"amount": 1}', "--json")
    [row] = gf.ok("tasks", "--json")
    assert row["instance_id"] == started["instance_id"]
    assert "setup mode" in gf.ok("user", "list")
    assert engine.identities_active() is False


def test_user_commands_need_admin(world):
    gf, engine = world.cli, world.engine
    line = gf.refused("user", "add", "eve", "--group", "admin", user="zhang")
    assert line == "gridflow: zhang may not manage users: that needs the group admin (zhang is in: agent)"
    assert "eve" not in [u.name for u in engine.users()]
    assert refusals(engine, action="user", actor="zhang")

    added = gf.ok("user", "add", "zhao", "--group", "revisitAgent", "--group", "agent", "--display-name", "赵六",
                  "--json", user="boss")
    assert (added["name"], added["groups"]) == ("zhao", ["agent", "revisitAgent"])
    assert "already exists" in gf.refused("user", "add", "zhao", user="boss")
    assert "is not valid" in gf.refused("user", "add", "bad name", user="boss")
    changed = gf.ok("user", "groups", "zhao", "--add", "supervisor", "--remove", "agent", "--json", user="boss")
    assert changed["groups"] == ["revisitAgent", "supervisor"]
    assert engine.user("zhao").groups == ["revisitAgent", "supervisor"]
    assert "not in group" in gf.refused("user", "groups", "zhao", "--remove", "admin", user="boss")
    listed = {u["name"]: u["groups"] for u in gf.ok("user", "list", "--json", user="boss")}
    assert listed["wang"] == ["agent", "supervisor"] and set(listed) == {"boss", "zhao", *USERS}
    kinds = Counter(e.type for e in engine.events())
    assert kinds["user_added"] == 6 and kinds["user_groups_changed"] == 1


def test_deploy_and_run_due_need_admin(world, tmp_path):
    gf, engine = world.cli, world.engine
    changed = tmp_path / "sla_review.bpmn"
    changed.write_text((BPMN / "sla_review.bpmn").read_text().replace('name="审核"', 'name="审核2"'))
    line = gf.refused("deploy", str(changed), user="zhang")
    assert "zhang may not deploy" in line and "admin" in line
    assert [d.version for d in engine.definitions()] == [1]
    assert refusals(engine, action="deploy", actor="zhang")
    assert "sla_review v2" in gf.ok("deploy", str(changed), user="boss")

    assert "may not fire timers" in gf.refused("run-due", user="wang")
    assert gf.ok("run-due", "--json", user="boss", now=T0 + timedelta(days=1, hours=1)) == {"fired": 1}


def test_incident_repairs_need_admin_or_a_supervisor(world):
    gf, engine = world.cli, world.engine
    engine.deploy([BPMN / "handler_chain.bpmn"], user="boss")
    failed = engine.start("handler_chain", {"fail": True}, user="zhang")
    [incident] = engine.incidents(failed.id)

    line = gf.refused("incident", "retry", str(incident.id), user="zhang")
    assert "zhang may not retry or resolve incidents" in line and "supervisor" in line
    line = gf.refused("incident", "resolve", str(incident.id), "--data", '{"checked": true}', user="qa")
    assert "qa may not retry or resolve incidents" in line
    assert [i.id for i in engine.incidents(failed.id)] == [incident.id]  # nothing changed
    assert engine.instance(failed.id).status == "error"
    assert refusals(engine, action="incident", actor="zhang") and refusals(engine, action="incident", actor="qa")

    after = gf.ok("incident", "resolve", str(incident.id), "--data", '{"checked": true}', "--json", user="wang")
    assert after["status"] != "error" and engine.incidents(failed.id) == []
    [resolved] = [e for e in engine.history(failed.id) if e.type == "incident_resolved"]
    assert resolved.actor == "wang"


# -- the queue ---------------------------------------------------------------------------------
def test_queue_is_claimable_or_assigned_sorted_by_due_with_countdown(world):
    gf = world.cli
    at = T0 + timedelta(days=1, hours=13)  # WO-1: 11 h of 48 left (at risk); WO-2: 35 h left (ok)
    rows = gf.ok("tasks", "--json", user="zhang", now=at)
    assert [r["business_key"] for r in rows] == ["WO-1", "WO-2"]  # earliest due first
    assert [r["sla"] for r in rows] == ["at_risk", "ok"]
    assert rows[0]["due_in_seconds"] == 11 * 3600 and rows[0]["age_seconds"] == 37 * 3600
    assert (rows[0]["definition_key"], rows[0]["name"], rows[0]["assignee"]) == ("sla_review", "审核", None)
    table = gf.ok("tasks", user="zhang", now=at)
    assert "queue of zhang (agent): 2 task(s)" in table
    assert "WO-1" in table and "at risk 11h 00m" in table and "1d 11h" in table and "审核" in table

    late = T0 + timedelta(days=2, hours=1)
    overdue = gf.ok("tasks", "--overdue", "--json", user="zhang", now=late)
    assert [(r["business_key"], r["sla"], r["due_in_seconds"]) for r in overdue] == [("WO-1", "overdue", -3600)]
    assert "overdue 1h 00m" in gf.ok("tasks", user="zhang", now=late)

    assert gf.ok("tasks", "--json", user="qa") == []  # nothing offered to backoffice
    assert [r["id"] for r in gf.ok("tasks", "--instance", world.i2[:8], "--json", user="zhang")] == [world.t2]
    assert gf.ok("tasks", "--flow", "other", "--json", user="zhang") == []
    assert len(gf.ok("tasks", "--group", "agent", "--limit", "1", "--json", user="zhang")) == 1
    assert gf.ok("tasks", "--group", "backoffice", "--json", user="zhang") == []


def test_claimed_tasks_leave_other_queues_but_supervisors_still_see_them(world):
    gf = world.cli
    gf.ok("claim", world.t1[:8], user="zhang")
    assert [r["id"] for r in gf.ok("tasks", "--mine", "--json", user="zhang")] == [world.t1]
    assert [r["id"] for r in gf.ok("tasks", "--json", user="li")] == [world.t2]
    supervised = gf.ok("tasks", "--json", user="wang")
    assert [(r["id"], r["assignee"]) for r in supervised] == [(world.t1, "zhang"), (world.t2, None)]


def test_countdown_states():
    created = T0
    assert countdown(created, None, T0).state is None
    assert countdown(created, T0 + timedelta(days=10), T0 + timedelta(days=1)).state == "ok"
    # less than 25 % of the task's time left
    assert countdown(created, T0 + timedelta(days=10), T0 + timedelta(days=8)).state == "at_risk"
    # less than 4 hours left although most of a short task's time remains
    assert countdown(created, T0 + timedelta(hours=5), T0 + timedelta(hours=1, minutes=1)).state == "at_risk"
    assert countdown(created, T0 + timedelta(hours=5), T0 + timedelta(minutes=30)).state == "ok"
    gone = countdown(created, T0 + timedelta(hours=5), T0 + timedelta(hours=6))
    assert (gone.state, gone.due_in_seconds, gone.age_seconds) == ("overdue", -3600, 6 * 3600)


@pytest.mark.parametrize("encoding", ["utf-8", "gb18030"])
def test_json_rows_reach_stdout_as_the_text_layer_would_write_them(monkeypatch, encoding):
    """``tasks --json`` writes its UTF-8 bytes past stdout's text layer only where that changes nothing:
    the same bytes, in order with what went through the text layer before and after."""
    raw = io.BytesIO()
    stream = io.TextIOWrapper(raw, encoding=encoding)
    monkeypatch.setattr(sys, "stdout", stream)
    stream.write("before\n")
    cli._write_utf8('[{"name": "答复客户"}]\n'.encode())
    stream.write("after\n")
    stream.flush()
    assert raw.getvalue() == 'before\n[{"name": "答复客户"}]\nafter\n'.encode(encoding)


@pytest.mark.parametrize("count", [0, 1, 2, 3, 5])
def test_the_json_queue_written_a_batch_at_a_time_is_one_json_document(capsysbinary, count):
    """``tasks --json`` encodes and writes its rows a batch at a time: the text is exactly that of one
    ``orjson.dumps`` of all the rows (the output before batches), for any count around the batch size."""
    import orjson

    from engine.worklist import json_rows

    rows = [(f"t{n}", "i1", "review", "审核", None, '["agent"]', None, "review",
             T0 + timedelta(hours=n) if n % 2 else None, "sla_review", "open", T0, f"WO-{n}", None, None)
            for n in range(count)]
    now = T0 + timedelta(minutes=30)
    cli._emit_json_batches(json_rows(rows[start:start + 2], now) for start in range(0, count, 2))
    whole = orjson.dumps(json_rows(rows, now), option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE)
    assert capsysbinary.readouterr().out == whole
    assert orjson.loads(whole) == [
        {"id": f"t{n}", "instance_id": "i1", "bpmn_id": "review", "name": "审核", "lane": None,
         "candidate_groups": ["agent"], "assignee": None, "form_key": "review",
         "due_at": (T0 + timedelta(hours=n)).isoformat() if n % 2 else None, "definition_key": "sla_review",
         "state": "open", "created_at": T0.isoformat(), "business_key": f"WO-{n}", "completed_by": None,
         "completed_at": None, "age_seconds": 1800, "due_in_seconds": 3600 * n - 1800 if n % 2 else None,
         "sla": {1: "at_risk", 3: "at_risk", 5: "ok"}.get(n)} for n in range(count)]  # 4 h or less: at risk


def test_queue_rows_are_the_work_items_with_their_countdown(world, clock):
    """``Engine.queue_rows`` (behind ``tasks --json``) and ``Engine.tasks`` (behind the table) give the
    same tasks in the same order, on either store; the JSON rows add the countdown of each."""
    from dataclasses import asdict

    engine = world.engine
    clock.set(T0 + timedelta(days=1, hours=13))
    items = engine.tasks(for_user="zhang")
    batches = list(engine.queue_rows(for_user="zhang", batch=1))
    assert [len(batch) for batch in batches] == [1] * len(items) and len(items) == 2
    now = engine.clock.now()
    for item, [row] in zip(items, batches, strict=True):
        clock = countdown(item.created_at, item.due_at, now)
        assert {**row, "candidate_groups": list(row["candidate_groups"])} == {
            **asdict(item), "age_seconds": clock.age_seconds, "due_in_seconds": clock.due_in_seconds,
            "sla": clock.state}
    assert list(engine.queue_rows(for_user="zhang", limit=1)) == [batches[0]]


# -- claim, unclaim, reassign ----------------------------------------------------------------------
def test_claim_unclaim_reassign_rules_and_refusals_are_recorded_on_the_case(world):
    gf, engine = world.cli, world.engine
    line = gf.refused("claim", world.t1[:8], user="qa")
    assert f"task {world.t1} (审核) is for group agent; qa is in: backoffice" in line
    assert engine.task(world.t1).assignee is None

    assert f"{world.t1} (审核) claimed by zhang" in gf.ok("claim", world.t1[:8], user="zhang")
    assert gf.ok("claim", world.t1, "--json", user="zhang")["assignee"] == "zhang"  # again: no-op
    before = engine.history(world.i1)

    assert "already claimed by zhang" in gf.refused("claim", world.t1[:6], user="li")
    line = gf.refused("complete", world.t1[:6], "--data", '{"approved": true, "amount": 1}', user="li")
    assert "is assigned to zhang, not li" in line and "gridflow reassign" in line
    assert "only they or a supervisor can unclaim it" in gf.refused("unclaim", world.t1[:6], user="li")
    line = gf.refused("reassign", world.t1[:6], "--to", "li", user="li")
    assert line == ("gridflow: li may not reassign tasks: that needs the group supervisor or dutySupervisor "
                    "(li is in: agent)")
    after = engine.history(world.i1)
    assert after[:len(before)] == before  # nothing changed ...
    added = after[len(before):]  # ... except the record of each attempt, on the case
    assert [(e.type, e.actor, e.data["action"], e.task_id) for e in added] == [
        ("refused", "li", action, world.t1) for action in ("claim", "complete", "unclaim", "reassign")]
    assert engine.task(world.t1).assignee == "zhang" and engine.task(world.t1).state == "open"

    assert "no user 'ghost'" in gf.refused("reassign", world.t1[:8], "--to", "ghost", user="wang")
    moved = gf.ok("reassign", world.t1[:8], "--to", "li", "--json", user="wang")
    assert moved["assignee"] == "li"
    event = engine.history(world.i1)[-1]
    assert (event.type, event.actor, event.data) == ("task_reassigned", "wang", {"from": "zhang", "to": "li"})
    back = gf.ok("unclaim", world.t1[:8], "--json", user="li")
    assert back["assignee"] is None
    assert "is not claimed" in gf.refused("unclaim", world.t1[:8], user="li")
    assert engine.history(world.i1)[-1].type == "task_unclaimed"


def test_task_ids_by_unique_prefix_and_ambiguous_prefixes_list_candidates(world):
    gf, engine = world.cli, world.engine
    for n in range(15):  # 17 tasks: two share a first hex digit
        engine.start("sla_review", {"amount": n}, business_key=f"WO-P{n}")
    ids = [t.id for t in engine.tasks()]
    first = Counter(i[0] for i in ids)
    shared = next(c for c, k in first.items() if k > 1)
    line = gf.refused("claim", shared, user="zhang")
    assert f"task '{shared}' is ambiguous" in line and "give more characters of the id" in line
    for task_id in ids:
        if task_id.startswith(shared):
            assert task_id[:12] in line
    assert all(t.assignee is None for t in engine.tasks())
    unused = next(c for c in "0123456789abcdef" if c not in first)
    assert gf.refused("claim", unused, user="zhang") == f"gridflow: no task '{unused}'"
    assert gf.refused("claim", "not-an-id", user="zhang") == "gridflow: no task 'not-an-id'"
    assert gf.refused("show", "", user="zhang") == "gridflow: no task or instance ''"


# -- complete ----------------------------------------------------------------------------------
def test_complete_without_a_terminal_needs_data(world):
    gf, engine = world.cli, world.engine
    line = gf.refused("complete", world.t1[:8], user="zhang")
    assert "complete needs --data" in line and "not a terminal" in line
    line = gf.refused("complete", world.t1[:8], "--data", '{"approved": true, "amount": 1, "contactPhone": "123"}',
                      user="zhang")
    assert "contactPhone 联系电话" in line and "testReview" in line
    assert engine.task(world.t1).state == "open"
    done = gf.ok("complete", world.t1[:8], "--data", '{"approved": true, "amount": 150}', "--json", user="zhang")
    assert done == {"instance_id": world.i1, "status": "completed", "ready_tasks": []}
    completion = next(e for e in engine.history(world.i1) if e.type == "task_completed")
    assert completion.actor == "zhang"
    assert engine.tasks(instance_id=world.i1, include_closed=True)[0].completed_by == "zhang"


# -- show and history ----------------------------------------------------------------------------
def test_show_a_task_gives_its_form_and_the_case_data(world):
    gf = world.cli
    shown = gf.ok("show", world.t1[:8], "--json", user="li")
    assert shown["id"] == world.t1 and shown["business_key"] == "WO-1" and shown["instance_status"] == "running"
    assert shown["form_schema"]["title"] == "审核" and "contactPhone" in shown["form_schema"]["properties"]
    assert shown["variables"]["amount"] == 150
    text = gf.ok("show", world.t1[:8], user="li")
    assert "是否通过" in text and "联系电话" in text and "WO-1" in text and "gridflow complete" in text


def test_show_a_case_has_sla_clocks(world):
    gf = world.cli
    shown = gf.ok("show", world.i1[:8], "--json", user="li", now=T0 + timedelta(days=1, hours=13))
    clocks = {(c["kind"], c["name"]): c for c in shown["clocks"]}
    assert clocks[("task", "审核")]["state"] == "at_risk"
    assert datetime.fromisoformat(clocks[("task", "审核")]["due_at"]) == T0 + timedelta(days=2)
    assert clocks[("timer", "t1Remind")]["state"] == "due"
    assert clocks[("timer", "t4Takeaway")]["state"] == "waiting"
    text = gf.ok("show", world.i1[:8], user="li", now=T0 + timedelta(days=1, hours=13))
    assert "at risk 11h 00m" in text and "t4Takeaway" in text


def test_history_timeline_alias_and_the_audit_log(world):
    gf = world.cli
    gf.ok("claim", world.t1[:8], user="zhang")
    gf.refused("claim", world.t1[:8], user="li")
    events = gf.ok("history", world.i1[:8], "--json", user="li")
    assert events == gf.ok("timeline", world.i1[:8], "--json", user="li")
    assert [e["type"] for e in events][0] == "instance_started"
    claimed = gf.ok("history", world.i1, "--type", "task_claimed", "--json", user="li")
    assert [(e["type"], e["actor"]) for e in claimed] == [("task_claimed", "zhang")]
    assert "task_claimed" in gf.ok("timeline", world.i1[:8], user="li")

    assert "may not read the history across cases" in gf.refused("history", user="li")
    audit = gf.ok("history", "--type", "refused", "--json", user="wang")
    assert [(e["actor"], e["data"]["action"]) for e in audit] == [("li", "claim"), ("li", "audit")]
    assert audit[0]["instance_id"] == world.i1 and audit[1]["instance_id"] is None


# -- help ----------------------------------------------------------------------------------------
def _commands(group: click.Group, prefix: str = ""):
    for name, command in group.commands.items():
        yield f"{prefix}{name}", command
        if isinstance(command, click.Group):
            yield from _commands(command, f"{prefix}{name} ")


def test_every_command_has_help_with_an_example_and_help_is_sectioned(db_url):
    gf = Cli(db_url)
    for path, command in _commands(cli.main):
        assert "Example" in (command.help or ""), f"'gridflow {path} --help' has no example"
        assert gf.ok(*path.split(), "--help").startswith(f"Usage: gridflow {path}")
    top = gf.ok("--help")
    sections = [line for line in top.splitlines() if line.startswith("Commands for ")]
    assert sections[:4] == ["Commands for operators:", "Commands for supervisors:",
                            "Commands for process owners:", "Commands for admins:"]
    operators = top.split("Commands for operators:")[1].split("Commands for supervisors:")[0]
    for name in ("tasks", "claim", "unclaim", "complete", "show", "history", "timeline"):
        assert f"\n  {name} " in operators
    assert "reassign" in top.split("Commands for supervisors:")[1].split("Commands for process owners:")[0]
    assert "_GRIDFLOW_COMPLETE=bash_source gridflow" in top


# -- the engine API for integrators ----------------------------------------------------------------
def test_engine_rules_apply_to_integrators_and_user_none_is_a_system_call(world):
    from engine.errors import NotAllowed

    engine = world.engine
    assert engine.identities_active()
    with pytest.raises(NotAllowed, match="unknown user 'mallory'"):
        engine.start("sla_review", {"amount": 1}, user="mallory")
    with pytest.raises(NotAllowed, match="is for group agent"):
        engine.complete(world.t2, {"approved": False, "amount": 1}, user="qa")
    with pytest.raises(NotAllowed, match="may not deploy"):
        engine.deploy([BPMN / "follow_up.bpmn"], user="zhang")
    assert [(e.actor, e.data["action"]) for e in engine.events(type="refused")] == [
        ("mallory", "start"), ("qa", "complete"), ("zhang", "deploy")]
    # user=None: the integrator's own system call, not checked
    assert engine.complete(world.t2, {"approved": False, "amount": 1}).status == "completed"
    assert [t.id for t in engine.tasks(for_user="li")] == [world.t1]


QUEUE_WITH_IMPORTS = """
import json, sys
import cli
try:
    cli.main(["tasks", "--json"], prog_name="gridflow")
except SystemExit as exit:
    assert not exit.code, exit.code
heavy = ("SpiffWorkflow", "lxml", "jsonschema", "rich", "alembic", "jinja2", "handlers", "sqlalchemy.orm",
         "engine.store", "engine.runtime", "engine.definitions", "simpleeval", "engine.expressions")
print(json.dumps(sorted(m for m in sys.modules if m.startswith(heavy))), file=sys.stderr)
"""


def test_the_queue_runs_without_the_orm_or_spiffworkflow(world, db_url):
    """Start-up stays fast: ``gridflow tasks --json`` (the user check included) imports neither
    SpiffWorkflow nor the ORM models nor the renderers; a heavy import on that path fails here."""
    env = {**os.environ, "GRIDFLOW_DB": db_url, "GRIDFLOW_USER": "zhang", "GRIDFLOW_NOW": T0.isoformat(),
           "PYTHONPATH": os.pathsep.join([str(TESTS), str(ROOT), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", QUEUE_WITH_IMPORTS], capture_output=True, text=True, env=env,
                          cwd=str(ROOT), timeout=120)
    assert done.returncode == 0, done.stderr
    assert [row["id"] for row in json.loads(done.stdout)] == [world.t1, world.t2]
    assert json.loads(done.stderr.strip().splitlines()[-1]) == []


def test_queue_query_reads_only_the_work_item_tables(world):
    from sqlalchemy import update

    from engine.store import InstanceRow

    with world.engine.store.write() as session:
        session.execute(update(InstanceRow).values(state_json="garbage"))
    assert [t.id for t in world.engine.tasks(for_user="zhang", overdue=False, flow="sla_review")] == [
        world.t1, world.t2]
    assert [r["id"] for r in world.cli.ok("tasks", "--json", user="zhang")] == [world.t1, world.t2]


def test_running_in_process_leaves_the_host_garbage_collector_alone(world):
    """Only the console script (its own process) freezes the imported modules' objects (gc.freeze); a host
    program or test runner calling ``cli.main`` keeps its collector as it was."""
    import gc

    frozen = gc.get_freeze_count()
    world.cli.ok("tasks", "--json", user="zhang")
    assert gc.get_freeze_count() == frozen
    script = ("import gc, sys, cli\n"
              "try:\n    cli.run()\nexcept SystemExit:\n    pass\n"
              "print('frozen' if gc.get_freeze_count() > 0 else 'not frozen', file=sys.stderr)\n")
    env = {**os.environ, "GRIDFLOW_DB": world.cli.db, "GRIDFLOW_USER": "zhang", "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", script, "tasks", "--json"], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0 and done.stderr.strip().endswith("frozen") and "not" not in done.stderr, done.stderr
    assert len(json.loads(done.stdout)) == 2


# -- cases: listing, case numbers, cancelling ------------------------------------------------------
def test_cases_are_listed_found_by_case_number_and_cancelled_only_by_a_supervisor(world):
    gf, engine = world.cli, world.engine
    listed = gf.ok("cases", "--json", user="zhang")
    assert [(r["business_key"], r["status"], r["open_tasks"]) for r in listed] == [
        ("WO-2", "running", ["审核"]), ("WO-1", "running", ["审核"])]  # newest first
    assert gf.ok("cases", "--status", "error", user="zhang").strip() == "no cases with status error"
    assert gf.ok("show", "WO-1", "--json", user="zhang")["instance_id"] == world.i1  # the number a customer quotes
    assert gf.ok("history", "WO-2", "--json", user="zhang")[0]["instance_id"] == world.i2

    line = gf.refused("cancel", "WO-1", "--reason", "重复受理", user="zhang")
    assert line == ("gridflow: zhang may not cancel cases: that needs the group admin or supervisor or "
                    "dutySupervisor (zhang is in: agent)")
    assert engine.instance(world.i1).status == "running" and [e.actor for e in refusals(engine, action="cancel")] \
        == ["zhang"]

    done = gf.ok("cancel", "WO-1", "--reason", "重复受理，已并入 WO-2", "--json", user="wang")
    assert (done["instance_id"], done["status"], done["ready_tasks"]) == (world.i1, "cancelled", [])
    assert [t["instance_id"] for t in gf.ok("tasks", "--json", user="wang")] == [world.i2]
    assert [r["business_key"] for r in gf.ok("cases", "--status", "cancelled", "--json", user="zhang")] == ["WO-1"]
    assert "is cancelled; only a running or failed case can be cancelled" in gf.refused(
        "cancel", world.i1[:8], "--reason", "again", user="wang")
    assert "no instance 'WO-404'" in gf.refused("cancel", "WO-404", "--reason", "x", user="wang")
