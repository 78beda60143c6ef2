"""Helpers shared by the benchmarks: scratch databases, and one complaint case driven through the Engine API."""

from __future__ import annotations

import os
import resource
import sys
import tempfile
import uuid
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

from . import workload

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from engine.clock import SHANGHAI  # noqa: E402

T0 = datetime(2026, 12, 7, 9, 0, tzinfo=SHANGHAI)  # a Monday morning


def pg_admin_url() -> str | None:
    """The PostgreSQL server for benchmarks: GRIDFLOW_BENCH_PG, else GRIDFLOW_TEST_PG."""
    return os.environ.get("GRIDFLOW_BENCH_PG") or os.environ.get("GRIDFLOW_TEST_PG")


@contextmanager
def scratch_sqlite(name: str = "bench.db"):
    with tempfile.TemporaryDirectory(prefix="gridflow-bench-") as directory:
        yield f"sqlite:///{Path(directory) / name}"


def create_pg_database(admin: str, template: str | None = None) -> str:
    import sqlalchemy

    name = f"gf_bench_{uuid.uuid4().hex[:10]}"
    sql = sqlalchemy.create_engine(admin, isolation_level="AUTOCOMMIT")
    try:
        with sql.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else ""))
    finally:
        sql.dispose()
    return f"{admin.rsplit('/', 1)[0]}/{name}"


def drop_pg_database(admin: str, url: str) -> None:
    import sqlalchemy

    sql = sqlalchemy.create_engine(admin, isolation_level="AUTOCOMMIT")
    try:
        with sql.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)')
    finally:
        sql.dispose()


@contextmanager
def scratch_pg(admin: str, template: str | None = None):
    url = create_pg_database(admin, template)
    try:
        yield url
    finally:
        drop_pg_database(admin, url)


def drive_case(engine, clock, n: int, until_job: bool = False) -> tuple[str, int]:
    """Open case ``n`` (message msgComplaint) and complete its user tasks through the Engine API, as
    operators who answer at once; run its async job and, when nothing else is left, move the clock to
    its next timer and fire it. With ``until_job``, stop when the case waits for its async job.

    Like an integrator, it works from the ``Instance`` each command returns (ready tasks, variables,
    timers) and reads the instance again only after a worker-side call (jobs, timers).

    Returns (instance id, user tasks completed).
    """
    correlation, data = workload.start_payload(n, clock.now())
    state = engine.correlate(workload.START_MESSAGE, correlation, data)
    instance_id = state.id
    completions = 0
    for _ in range(200):
        if state.ready_tasks:
            task = state.ready_tasks[0]
            state = engine.complete(task.id, workload.answer(task.form_key, state.variables, clock.now(), n),
                                    user=task.assignee)
            completions += 1
            continue
        if until_job and engine.jobs(instance_id):
            return instance_id, completions
        if engine.run_jobs("bench", limit=10):
            state = engine.instance(instance_id)
            continue
        if state.status != "running":
            if state.status != "completed":
                raise RuntimeError(f"case {n} ended {state.status}: {state.error}")
            return instance_id, completions
        if not state.timers:
            raise RuntimeError(f"case {n} waits for nothing the benchmark can give it")
        clock.set(max(clock.now(), min(t.due_at for t in state.timers)))
        engine.run_due()
        state = engine.instance(instance_id)
    raise RuntimeError(f"case {n} did not finish")


def cases_waiting_for_their_job(url: str, cases: int, batch: int = 500) -> int:
    """Fill the empty database ``url`` with ``cases`` complaint cases that wait for their async job: one
    driven there through the Engine API, the others cloned from it. Returns the definition id."""
    from engine.api import Engine
    from engine.clock import FixedClock
    from engine.store import InstanceRow

    from . import clone

    clock = FixedClock(T0)
    engine = Engine(url, clock=clock)
    try:
        engine.deploy(workload.PROCESSES)
        instance_id, _ = drive_case(engine, clock, 0, until_job=True)
        with engine.store.read() as session:
            definition_id = session.get(InstanceRow, instance_id).definition_id
    finally:
        engine.close()
    if cases > 1:
        clone.clone_instance(url, instance_id, cases - 1, business_key=lambda n: workload.work_order(n + 1),
                             batch=batch)
    return definition_id


def rss_mb() -> float:
    """Current resident set size of this process in MiB (Linux /proc; else the peak)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def peak_rss_mb() -> float:
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
