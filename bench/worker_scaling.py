"""Benchmark 2: 2 worker processes vs 1 on PostgreSQL, on the complaint flow's worker-side work.

Setup (not timed): one complaint case is driven through the Engine API until it waits for its async
回单 job (``submitOrderReply``); ``bench.clone`` copies it into ``cases`` cases (fresh task ids each),
in a template database. For each worker count a fresh database is created from the template
(``CREATE DATABASE … TEMPLATE``), so both runs see identical work:

1. **jobs** (clock +1 h): every case's job is acquired (``FOR UPDATE SKIP LOCKED``), its handler run
   outside any transaction, and the case advanced to the revisit's one-day wait;
2. **timers** (clock +3 days): every case's revisit timer fires and the case advances to the
   revisit call (a new work item).

Each worker is a separate process (``multiprocessing`` spawn) running ``engine.worker.Worker.run(once=True)``
after imports, engine and parsed spec are warmed up; the time is from a common start signal to the
last worker's end. 1 and 2 workers alternate ``repeat`` times (3) and the median of each is kept:
on a shared machine single runs vary by tens of percent. Prints both times, cases per second, the
speed-up (target ≥ 1.6×) and the workers' CPU seconds (how busy they could keep themselves).
"""

from __future__ import annotations

import multiprocessing
import os
import time
from datetime import timedelta

from . import common
from .common import T0

PHASES = [("jobs", timedelta(hours=1)), ("timers", timedelta(days=3))]


def build_template(admin: str, cases: int) -> tuple[str, int]:
    """A database with ``cases`` complaint cases waiting for their async job; returns (url, definition id)."""
    url = common.create_pg_database(admin)
    definition_id = common.cases_waiting_for_their_job(url, cases)
    return url, definition_id


def _worker(url: str, name: str, definition_id: int, ready, go, done) -> None:
    from engine.api import Engine
    from engine.clock import FixedClock
    from engine.worker import Worker

    clock = FixedClock(T0)
    engine = Engine(url, clock=clock, auto_migrate=False)
    with engine.store.read() as session:  # warm up: handlers, parsed spec, connection pool
        engine._bundle(session, definition_id)
    engine.handlers  # noqa: B018
    lines: list[str] = []
    for phase, offset in PHASES:
        clock.set(T0 + offset)
        ready.put(name)
        go[phase].wait()
        cpu = time.process_time()
        worker = Worker(engine, name, poll=0.05, log=lines.append)
        worker.run(once=True)
        done.put((name, phase, worker.actions, worker.errors, time.process_time() - cpu))
    engine.close()


def run_workers(url: str, count: int, definition_id: int) -> dict[str, float]:
    context = multiprocessing.get_context("spawn")
    ready, done = context.Queue(), context.Queue()
    go = {phase: context.Event() for phase, _ in PHASES}
    processes = [context.Process(target=_worker, args=(url, f"w{n}", definition_id, ready, go, done))
                 for n in range(count)]
    for process in processes:
        process.start()
    times: dict[str, float] = {}
    actions: dict[str, int] = {}
    cpu = 0.0
    for phase, _ in PHASES:
        for _ in processes:
            ready.get(timeout=300)
        started = time.perf_counter()
        go[phase].set()
        for _ in processes:
            _, _, made, errors, used = done.get(timeout=3600)
            if errors:
                raise RuntimeError(f"a worker reported {errors} errors in phase {phase}")
            actions[phase] = actions.get(phase, 0) + made
            cpu += used
        times[phase] = time.perf_counter() - started
    for process in processes:
        process.join(timeout=60)
    return {"seconds": sum(times.values()), "worker_cpu_seconds": cpu,
            **{f"{p}_seconds": t for p, t in times.items()},
            **{f"{p}_actions": a for p, a in actions.items()}}


def run(cases: int = 200, admin: str | None = None, repeat: int = 3) -> dict:
    """``repeat`` alternating runs of 1 and 2 workers; the median run of each is reported."""
    admin = admin or common.pg_admin_url()
    if not admin:
        return {"skipped": "no PostgreSQL: set GRIDFLOW_BENCH_PG or GRIDFLOW_TEST_PG"}
    template, definition_id = build_template(admin, cases)
    runs: dict[int, list[dict]] = {1: [], 2: []}
    try:
        for _ in range(repeat):
            for count in (1, 2):
                url = common.create_pg_database(admin, template=template.rsplit("/", 1)[1])
                try:
                    runs[count].append(run_workers(url, count, definition_id))
                finally:
                    common.drop_pg_database(admin, url)
    finally:
        common.drop_pg_database(admin, template)
    one, two = (sorted(runs[c], key=lambda r: r["seconds"])[len(runs[c]) // 2] for c in (1, 2))
    return {"cases": cases, "one": one, "two": two, "speedup": one["seconds"] / two["seconds"],
            "all_seconds": {c: [round(r["seconds"], 2) for r in runs[c]] for c in runs}, "cpus": os.cpu_count(),
            "load_after": os.getloadavg()[0]}


if __name__ == "__main__":
    import sys

    print(run(int(sys.argv[1]) if len(sys.argv) > 1 else 200))
