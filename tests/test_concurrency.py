"""Real OS processes racing on one database (SQLite file and PostgreSQL).

Each racer is a small driver that imports the real CLI, signals "ready", waits for a shared
"go" file and then runs ``gridflow …`` in-process (``cli.main``), so both commands start
within a millisecond of each other instead of being staggered by interpreter start-up.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

from conftest import BPMN, ROOT, TESTS

ROUNDS = 3

DRIVER = """\
import sys, time
from pathlib import Path

ready, go = Path(sys.argv[1]), Path(sys.argv[2])
import cli  # the heavy imports happen before the barrier
import engine.api  # noqa: F401
from handlers.registry import load_handlers

load_handlers()
ready.touch()
deadline = time.monotonic() + 60
while not go.exists():
    if time.monotonic() > deadline:
        sys.exit(99)
    time.sleep(0.0005)
Path(str(ready) + ".released").write_text(repr(time.time()))
cli.main(sys.argv[3:], prog_name="gridflow")
"""


def _env(db: str) -> dict[str, str]:
    env = {**os.environ, "GRIDFLOW_DB": db, "GRIDFLOW_HANDLERS": "gridflow_test_handlers",
           "PYTHONPATH": os.pathsep.join([str(TESTS), str(ROOT), os.environ.get("PYTHONPATH", "")])}
    env.pop("GRIDFLOW_USER", None)
    env.pop("GRIDFLOW_NOW", None)
    return env


def race(tmp_path: Path, db: str, *commands: list[str]) -> list[subprocess.CompletedProcess]:
    """Run the CLI commands in separate processes released at the same instant."""
    driver = tmp_path / "race_driver.py"
    driver.write_text(DRIVER)
    round_dir = tmp_path / f"race{time.monotonic_ns()}"
    round_dir.mkdir()
    go = round_dir / "go"
    procs, readies = [], []
    for n, args in enumerate(commands):
        ready = round_dir / f"ready{n}"
        readies.append(ready)
        procs.append(subprocess.Popen([sys.executable, str(driver), str(ready), str(go), *args], cwd=str(ROOT),
                                      env=_env(db), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    try:
        deadline = time.monotonic() + 60
        while not all(r.exists() for r in readies):
            assert all(p.poll() is None for p in procs), [p.communicate() for p in procs]
            assert time.monotonic() < deadline, "racers did not get ready"
            time.sleep(0.005)
        go.touch()
        results = []
        for p, args, ready in zip(procs, commands, readies, strict=True):
            out, err = p.communicate(timeout=90)
            result = subprocess.CompletedProcess(args, p.returncode, out, err)
            released = Path(f"{ready}.released")
            result.released_at = float(released.read_text()) if released.exists() else None
            results.append(result)
        return results
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


def _exception_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if re.match(r"^[\w.]+(Error|Exception): ", line)]


def _stderr_lines(result: subprocess.CompletedProcess) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.strip()]


def test_same_task_completed_by_two_processes_exactly_one_wins(engine, db_url, tmp_path):
    engine.deploy([BPMN / "sla_review.bpmn"])
    form = json.dumps({"approved": True, "amount": 5})
    for round_no in range(ROUNDS):
        instance = engine.start("sla_review", {"amount": 5}, business_key=f"RACE-{round_no}")
        [task] = instance.ready_tasks
        results = race(tmp_path, db_url,
                       ["--user", "racer1", "complete", task.id, "--data", form],
                       ["--user", "racer2", "complete", task.id, "--data", form])
        codes = sorted(r.returncode for r in results)
        assert codes == [0, 1], [(r.returncode, r.stdout, r.stderr) for r in results]
        winner = next(r for r in results if r.returncode == 0)
        loser = next(r for r in results if r.returncode == 1)
        assert "Traceback" not in winner.stderr + loser.stderr
        [line] = _stderr_lines(loser)
        assert line.startswith("gridflow: ") and "already completed" in line, line
        winner_user = "racer1" if winner is results[0] else "racer2"
        assert f"already completed by {winner_user}" in line

        completions = [e for e in engine.history(instance.id) if e.type == "task_completed"]
        assert [(e.task_id, e.actor) for e in completions] == [(task.id, winner_user)]
        state = engine.instance(instance.id)
        assert state.status == "completed"
        [item] = engine.tasks(instance_id=instance.id, include_closed=True)
        assert (item.state, item.completed_by) == ("completed", winner_user)


CONFLICT_WORDS = ("changed by another command", "try again")


def test_parallel_tasks_of_one_instance_completed_at_the_same_time(engine, db_url, tmp_path):
    engine.deploy([BPMN / "parallel_tasks.bpmn"])
    for round_no in range(ROUNDS):
        instance = engine.start("parallel_tasks", business_key=f"PAR-{round_no}")
        tasks = {t.bpmn_id: t.id for t in instance.ready_tasks}
        assert sorted(tasks) == ["a", "b"]
        commands = {"a": ["--user", "ua", "complete", tasks["a"], "--data", '{"fromA": 1}'],
                    "b": ["--user", "ub", "complete", tasks["b"], "--data", '{"fromB": 2}']}
        results = dict(zip(commands, race(tmp_path, db_url, *commands.values()), strict=True))
        for name, result in results.items():
            assert "Traceback" not in result.stderr, result.stderr
            if result.returncode == 0:
                continue
            # a clear conflict is acceptable, provided that a retry succeeds
            [line] = _stderr_lines(result)
            assert result.returncode == 1 and line.startswith("gridflow: "), result.stderr
            assert any(w in line for w in CONFLICT_WORDS), f"unclear failure for task {name}: {line}"
            [retry] = race(tmp_path, db_url, commands[name])
            assert retry.returncode == 0, retry.stderr

        state = engine.instance(instance.id)
        assert state.status == "completed", (state.status, state.error)
        assert state.ready_tasks == [] and state.error is None
        assert state.variables["fromA"] == 1 and state.variables["fromB"] == 2  # no completion lost
        history = engine.history(instance.id)
        completions = sorted((e.bpmn_id, e.actor) for e in history if e.type == "task_completed")
        assert completions == [("a", "ua"), ("b", "ub")]
        assert [e.type for e in history].count("instance_completed") == 1
        items = {i.bpmn_id: (i.state, i.completed_by)
                 for i in engine.tasks(instance_id=instance.id, include_closed=True)}
        assert items == {"a": ("completed", "ua"), "b": ("completed", "ub")}


def test_race_driver_releases_racers_together(tmp_path, sqlite_url):
    """Guard for the harness itself: both racers leave the barrier together (well within one command)."""
    results = race(tmp_path, sqlite_url, ["--help"], ["--help"])
    assert all(r.returncode == 0 for r in results)
    first, second = (r.released_at for r in results)
    assert abs(first - second) < 0.2


def test_two_run_due_processes_fire_each_timer_once(engine, db_url, tmp_path, clock):
    """Two workers acting at the same instant: every due timer fires exactly once."""
    engine.deploy([BPMN / "sla_review.bpmn"])
    for round_no in range(2):
        instance = engine.start("sla_review", {"amount": 1}, business_key=f"DUE-{round_no}")
        now = (clock.now() + timedelta(days=1, minutes=5)).isoformat()  # reminder due, take-away not
        results = race(tmp_path, db_url, ["--now", now, "run-due", "--json"], ["--now", now, "run-due", "--json"])
        assert [r.returncode for r in results] == [0, 0], [r.stderr for r in results]
        assert sum(json.loads(r.stdout)["fired"] for r in results) == 1, [r.stdout for r in results]
        fired = [e.bpmn_id for e in engine.history(instance.id) if e.type == "timer_fired"]
        assert fired == ["t1Remind"]
        assert engine.instance(instance.id).variables["reminders"] == 1
        outbox = [e for e in engine.history(instance.id) if e.type == "outbox"]
        assert len(outbox) == 1  # the reminder SMS was sent once
        clock.advance(timedelta(days=2))  # the next round's instance starts later


def test_two_users_claim_the_same_task_one_gets_it(engine, db_url, tmp_path):
    engine.deploy([BPMN / "sla_review.bpmn"])
    for _ in range(2):
        [task] = engine.start("sla_review", {"amount": 1}).ready_tasks
        results = race(tmp_path, db_url, ["--user", "zhang", "claim", task.id], ["--user", "li", "claim", task.id])
        assert sorted(r.returncode for r in results) == [0, 1], [(r.returncode, r.stderr) for r in results]
        winner = "zhang" if results[0].returncode == 0 else "li"
        loser = next(r for r in results if r.returncode == 1)
        [line] = _stderr_lines(loser)
        assert line.startswith("gridflow: ") and f"already claimed by {winner}" in line, line
        assert engine.task(task.id).assignee == winner


def test_concurrent_deploys_of_one_process_are_serialized(engine, db_url, tmp_path):
    """Two process owners (or two CI jobs) deploy at the same moment.

    Same content: both get the same version. Different content: two consecutive versions.
    Either way each command ends with exit 0 or one clear line, never a traceback.
    """
    source = (BPMN / "sla_review.bpmn").read_text(encoding="utf-8")
    engine.deploy([BPMN / "sla_review.bpmn"])
    for round_no in range(4):
        first = tmp_path / f"deploy{round_no}a.bpmn"
        second = tmp_path / f"deploy{round_no}b.bpmn"
        first.write_text(source.replace('name="审核"', f'name="审核 r{round_no}"'), encoding="utf-8")
        same = round_no % 2 == 0
        second.write_text(first.read_text(encoding="utf-8") if same
                          else source.replace('name="审核"', f'name="审核 r{round_no}b"'), encoding="utf-8")
        results = race(tmp_path, db_url, ["deploy", "--json", str(first)], ["deploy", "--json", str(second)])
        for r in results:
            crashed = "Traceback" in r.stderr
            assert not crashed, (f"round {round_no} ({'same' if same else 'different'} content): "
                                 f"a concurrent deploy crashed: {_exception_lines(r.stderr)}")
            assert r.returncode == 0 or len(_stderr_lines(r)) == 1, r.stderr
        versions = [json.loads(r.stdout)[0]["version"] for r in results if r.returncode == 0]
        if same:
            assert len(set(versions)) <= 1, versions
        else:
            assert len(set(versions)) == len(versions), versions
        rows = engine.definitions()
        assert len({d.content_hash for d in rows}) == len(rows)
        assert sorted(d.version for d in rows) == list(range(1, len(rows) + 1))
