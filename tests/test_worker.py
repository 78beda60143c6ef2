"""``gridflow worker``: catch-up after downtime, cycles, timer start events, several workers at once,
SIGTERM, and a worker killed with SIGKILL in the middle of a job (real processes, both stores)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta

from conftest import ROOT, SHANGHAI, TESTS
from worker_helpers import HANDLERS_ENV, cli, deploy, events, log_lines, ok

from engine.api import Engine
from engine.clock import Clock
from engine.worker import Worker

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=SHANGHAI)  # the `clock` fixture's instant


def at(value: datetime) -> str:
    return value.isoformat()


def popen_worker(db_url: str, *args: str, now: str | None = None) -> subprocess.Popen:
    """A ``gridflow worker`` subprocess; ``now`` acts at a simulated instant (GRIDFLOW_NOW)."""
    env = {**os.environ, "GRIDFLOW_DB": db_url, **HANDLERS_ENV,
           "PYTHONPATH": os.pathsep.join([str(TESTS), str(ROOT), os.environ.get("PYTHONPATH", "")])}
    env.pop("GRIDFLOW_NOW", None)
    env.pop("GRIDFLOW_USER", None)
    if now is not None:
        env["GRIDFLOW_NOW"] = now
    return subprocess.Popen([sys.executable, "-m", "cli", "worker", *args], cwd=str(ROOT), env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


# -- timers ------------------------------------------------------------------------------------------
def test_timers_due_while_no_worker_ran_fire_once_in_due_order_with_lateness(engine, clock, db_url):
    deploy(engine, "sla_review.bpmn")
    started = []
    for offset in (2, 0, 1):  # started out of order: T1 reminders due day 2 at 11:00, 09:00, 10:00
        clock.set(T0 + timedelta(hours=offset))
        started.append((offset, engine.start("sla_review", {"amount": 1}, business_key=f"WO-{offset}").id))
    # nothing ran for two days; then a worker starts
    down_until = T0 + timedelta(days=3, hours=12)
    result = ok(cli("--now", at(down_until), "worker", "--once", "--id", "catch-up", db=db_url))
    fired = log_lines(result, "timer_fired")
    by_instance = dict((i, o) for o, i in started)
    assert [by_instance[f["instance"]] for f in fired] == [0, 1, 2]  # due order, not start order
    assert [f["timer"] for f in fired] == ["t1Remind"] * 3
    assert [f["late"] for f in fired] == ["216000s", "212400s", "208800s"]  # 2.5 days late, minus the offset
    for offset, instance_id in started:
        [event] = [e for e in engine.history(instance_id) if e.type == "timer_fired"]
        due = T0 + timedelta(days=1, hours=offset)
        assert event.data["due_at"] == due.isoformat()
        assert event.data["late_seconds"] == (down_until - due).total_seconds()
        assert engine.instance(instance_id).variables["reminders"] == 1
    ordered = [e.instance_id for e in events(engine, "timer_fired")]
    assert ordered == [by_instance_id for _, by_instance_id in sorted(started)]

    again = ok(cli("--now", at(down_until + timedelta(minutes=1)), "worker", "--once", db=db_url))
    assert log_lines(again, "timer_fired") == []  # fired exactly once
    assert len(events(engine, "timer_fired")) == 3


class _ClockMovedByAnotherProcess(Clock):
    """Like the scale-out test's shared file clock: it moves while ``run_due`` is working."""

    def __init__(self, start: datetime):
        self.current, self.next = start, None

    def now(self) -> datetime:
        value = self.current
        if self.next is not None:  # the first reading happens at ``current``, every later one at ``next``
            self.current, self.next = self.next, None
        return value


def test_every_timer_that_fires_is_recorded_even_if_it_fell_due_during_run_due(db_url):
    """run_due picks instances by the instant it started at; a timer that falls due before the firing
    itself fires with the others, and history must say so (the state and history agree)."""
    from SpiffWorkflow.util.task import TaskState

    from engine.store import InstanceRow

    clock = _ClockMovedByAnotherProcess(T0)
    engine = Engine(db_url, clock=clock)
    try:
        deploy(engine, "two_deadlines.bpmn")
        instance = engine.start("two_deadlines")
        clock.current, clock.next = T0 + timedelta(minutes=90), T0 + timedelta(hours=3)
        fired_count = engine.run_due()  # picked for the 1-hour reminder; fires at 3 h: the 2-hour withdrawal too
        fired = sorted(e.bpmn_id for e in engine.history(instance.id) if e.type == "timer_fired")
        with engine.store.read() as session:
            row = session.get(InstanceRow, instance.id)
            bundle = engine._bundle(session, row.definition_id)
            workflow = engine.runtime.serializer.loads(row.state_json, bundle.spec, bundle.subprocess_specs,
                                                       engine.runtime.script_engine)
        completed = sorted(t.task_spec.bpmn_id for t in workflow.get_tasks(state=TaskState.COMPLETED)
                           if t.task_spec.bpmn_id in ("escalateAfter1h", "withdrawAfter2h"))
        assert fired == completed == ["escalateAfter1h", "withdrawAfter2h"] and fired_count == 2
        assert engine.instance(instance.id).status == "completed"
    finally:
        engine.close()


def test_cycle_timer_missed_for_several_periods_fires_once_and_reschedules(engine, clock):
    deploy(engine, "cycle_check.bpmn")
    instance = engine.start("cycle_check")
    clock.advance(timedelta(hours=3, minutes=20))  # R3/PT1H: three periods passed unseen
    lines = []
    assert Worker(engine, "w1", log=lines.append).run(once=True) == 1
    assert sum(" timer_fired " in line for line in lines) == 1
    state = engine.instance(instance.id)
    assert state.variables["reminders"] == 1
    [timer] = state.timers
    assert timer.due_at == T0 + timedelta(hours=4)  # the next period boundary after now
    clock.advance(timedelta(minutes=41))
    assert Worker(engine, "w1", log=lines.append).run(once=True) == 1
    assert engine.instance(instance.id).variables["reminders"] == 2


def test_timer_start_event_creates_instances_on_schedule_once_per_catch_up(engine, clock, db_url):
    deploy(engine, "timer_start.bpmn")  # deployed at T0: monthly plan first due 2027-01-01 09:00
    schedules = {s["process"]: s for s in engine.timer_schedules()}
    assert schedules["monthly_inspection"]["next_due_at"] == datetime(2027, 1, 1, 9, tzinfo=SHANGHAI)
    assert schedules["hourly_survey"]["next_due_at"] == datetime(2026, 12, 1, 10, tzinfo=SHANGHAI)

    first = ok(cli("--now", "2027-01-01T09:00:30+08:00", "worker", "--once", db=db_url))
    started = {f["process"]: f for f in log_lines(first, "timer_start_fired")}
    assert set(started) == {"monthly_inspection", "hourly_survey"}
    assert started["monthly_inspection"]["late"] == "30s"
    monthly = engine.instances(key="monthly_inspection")
    assert len(monthly) == 1 and [t.bpmn_id for t in monthly[0].ready_tasks] == ["draftInspectionPlan"]
    assert monthly[0].timers == []  # the schedule repeats, not the instance
    [fired] = [e for e in engine.history(monthly[0].id) if e.type == "timer_start_fired"]
    assert fired.data["due_at"] == "2027-01-01T09:00:00+08:00" and fired.data["late_seconds"] == 30
    assert log_lines(ok(cli("--now", "2027-01-01T09:10:00+08:00", "worker", "--once", db=db_url)),
                     "timer_start_fired") == []

    # nobody ran a worker for Feb, Mar and Apr: one instance, not three; next due May 1st
    late = ok(cli("--now", "2027-04-20T08:00:00+08:00", "worker", "--once", db=db_url))
    assert [f["process"] for f in log_lines(late, "timer_start_fired")] == ["hourly_survey",
                                                                            "monthly_inspection"]
    assert len(engine.instances(key="monthly_inspection")) == 2
    schedules = {s["process"]: s for s in engine.timer_schedules()}
    assert schedules["monthly_inspection"]["next_due_at"] == datetime(2027, 5, 1, 9, tzinfo=SHANGHAI)
    assert schedules["hourly_survey"]["next_due_at"] is None  # R2: both repetitions used
    assert len(engine.instances(key="hourly_survey")) == 2
    assert all(i.status == "completed" for i in engine.instances(key="hourly_survey"))


def test_one_shot_timer_start_events_fire_once(engine, clock):
    deploy(engine, "timer_start_once.bpmn")  # timeDate 2026-12-05T08:00+08:00; timeDuration P2D after deploy
    due = {s["process"]: s["next_due_at"] for s in engine.timer_schedules()}
    assert due == {"once_date": datetime(2026, 12, 5, 8, tzinfo=SHANGHAI), "once_duration": T0 + timedelta(days=2)}
    clock.set(datetime(2026, 12, 6, 9, tzinfo=SHANGHAI))
    assert engine.run_due() == 2
    assert engine.run_due() == 0
    started = {i.definition_key: [t.bpmn_id for t in i.ready_tasks] for i in engine.instances()}
    assert started == {"once_date": ["doIt"], "once_duration": ["doThat"]}
    assert all(s["next_due_at"] is None and s["fired"] == 1 for s in engine.timer_schedules())


def test_a_new_version_with_the_same_timer_keeps_the_rhythm_and_starts_the_new_version(engine, clock, tmp_path):
    deploy(engine, "timer_start.bpmn")
    changed = tmp_path / "timer_start.bpmn"
    changed.write_text((TESTS / "bpmn" / "timer_start.bpmn").read_text(encoding="utf-8")
                       .replace('name="制定检查计划"', 'name="制定检查计划(v2)"'), encoding="utf-8")
    clock.advance(timedelta(days=10))
    engine.deploy([changed])
    [monthly] = [s for s in engine.timer_schedules() if s["process"] == "monthly_inspection"]
    assert monthly["next_due_at"] == datetime(2027, 1, 1, 9, tzinfo=SHANGHAI)  # unchanged timer: same rhythm
    clock.set(datetime(2027, 1, 1, 9, 5, tzinfo=SHANGHAI))
    assert engine.run_due() >= 1
    [instance] = engine.instances(key="monthly_inspection")
    assert instance.definition_version == 2 and instance.ready_tasks[0].name == "制定检查计划(v2)"


# -- several workers ---------------------------------------------------------------------------------
def test_three_workers_at_once_fire_each_timer_and_run_each_job_exactly_once(engine, clock, db_url, tmp_path):
    deploy(engine, "sla_review.bpmn", "async_billing.bpmn")
    ledger = tmp_path / "ledger.txt"
    reviews = [engine.start("sla_review", {"amount": 1}).id for _ in range(4)]
    notices = [engine.start("async_side_effect", {"ledger": str(ledger)}).id for _ in range(4)]
    now = at(T0 + timedelta(days=1, hours=1))  # every T1 reminder and every job is due
    workers = [popen_worker(db_url, "--once", "--batch", "1", "--id", f"w{n}", now=now) for n in range(3)]
    outputs = []
    for process in workers:
        out, err = process.communicate(timeout=180)
        assert process.returncode == 0, err
        assert "Traceback" not in err, err
        outputs.append(out)
    fired = [f for o in outputs for f in log_lines(o, "timer_fired")]
    assert sorted(f["instance"] for f in fired) == sorted(reviews)
    completed = [f for o in outputs for f in log_lines(o, "job_completed")]
    assert sorted(f["instance"] for f in completed) == sorted(notices)
    for instance_id in reviews:
        assert [e.bpmn_id for e in engine.history(instance_id) if e.type == "timer_fired"] == ["t1Remind"]
        assert engine.instance(instance_id).variables["reminders"] == 1
    for instance_id in notices:
        assert [e.type for e in engine.history(instance_id)].count("handler_completed") == 1
        assert engine.instance(instance_id).status == "completed"
    assert sorted(ledger.read_text().split()) == sorted(f"{i}:{j}" for i, j in (
        (c["instance"], c["job"]) for c in completed))


# -- stopping and dying --------------------------------------------------------------------------------
def test_sigterm_lets_the_running_job_finish_then_stops_cleanly(db_url, tmp_path):
    engine = Engine(db_url)  # the system clock: the worker subprocess uses it too
    try:
        deploy(engine, "async_billing.bpmn")
        ledger = tmp_path / "ledger.txt"
        instance = engine.start("async_side_effect", {"ledger": str(ledger), "sleepSeconds": 2})
        worker = popen_worker(db_url, "--id", "w-term", "--poll", "0.2")
        wait_for(lambda: ledger.exists() and ledger.read_text().strip(), 60, "the handler to start")
        worker.send_signal(signal.SIGTERM)
        out, err = worker.communicate(timeout=60)
        assert worker.returncode == 0, err
        actions = [line.split(" ")[2] for line in out.splitlines()]
        assert actions[-3:] == ["worker_stopping", "job_completed", "worker_stopped"], out
        assert "signal=SIGTERM" in out and "reason=SIGTERM" in out
        assert engine.instance(instance.id).status == "completed"
        assert engine.jobs() == []
    finally:
        engine.close()


def test_a_worker_killed_mid_job_is_replaced_and_the_job_completes_exactly_once(db_url, tmp_path):
    """SIGKILL after the side effect, before the commit: the next worker takes the job over once the
    lock expires; the handler finds its idempotency key in the ledger and does not repeat the notice."""
    engine = Engine(db_url)
    try:
        deploy(engine, "async_billing.bpmn")
        ledger = tmp_path / "ledger.txt"
        instance = engine.start("async_side_effect", {"ledger": str(ledger), "sleepSeconds": 120})
        [job] = engine.jobs(instance.id)
        key = f"{instance.id}:{job.id}"

        doomed = popen_worker(db_url, "--id", "w-doomed", "--poll", "0.2", "--lock-ttl", "2")
        wait_for(lambda: ledger.exists() and ledger.read_text().strip(), 60, "the side effect")
        doomed.send_signal(signal.SIGKILL)
        doomed.communicate(timeout=30)
        assert doomed.returncode == -signal.SIGKILL

        [held] = engine.jobs(instance.id)
        assert (held.locked_by, held.attempts) == ("w-doomed", 1)
        assert engine.instance(instance.id).status == "running"
        wait_for(lambda: datetime.now(held.locked_until.tzinfo) > held.locked_until + timedelta(seconds=0.3),
                 30, "the dead worker's lock to expire")

        rescue = ok(cli("worker", "--once", "--id", "w-rescue", "--lock-ttl", "2", db=db_url))
        [takeover] = log_lines(rescue, "job_taken_over")
        assert (takeover["job"], takeover["previous"], takeover["attempt"]) == (job.id, "w-doomed", "2")
        [done] = log_lines(rescue, "job_completed")
        assert done["key"] == key

        state = engine.instance(instance.id)
        assert state.status == "completed"
        assert state.variables["notice"] == "already sent" and state.variables["noticeAttempt"] == 2
        completions = [e for e in engine.history(instance.id) if e.type == "handler_completed"]
        assert len(completions) == 1
        assert (completions[0].data["worker"], completions[0].data["attempt"]) == ("w-rescue", 2)
        assert completions[0].data["idempotency_key"] == key
        assert ledger.read_text().split() == [key]  # the notice went out once
        assert engine.jobs() == []
    finally:
        engine.close()


def test_worker_cli_rejects_bad_options(db_url):
    bad = cli("worker", "--poll", "0", db=db_url)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
