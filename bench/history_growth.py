"""Benchmark 3: the time of one task completion with many finished cases stored vs with few.

For each size, a fresh database: one complaint case is driven to completion through the Engine API,
then ``bench.clone`` copies it into ``finished`` completed cases (fresh ids; each its own customer
number and phone; started over the two years before the live cases, so a few percent fall in the
30-day repeat-complaint window). Then ``live`` new cases are driven to completion through the API
and every ``Engine.complete`` call is timed. Prints the median and 90th percentile per completion
for the small and the large history, and their ratio (target ≤ 1.2×: cost must not grow with history).
"""

from __future__ import annotations

import statistics
import time
from datetime import timedelta
from typing import Any

from . import common
from .common import T0

HISTORY = timedelta(days=730)


def _customer(n: int, table: str, row: dict[str, Any]) -> None:
    """Copy ``n``'s own customer number and phone, in its variables and in its searchable-variable rows."""
    values = {"customerNo": f"41{n:08d}", "contactPhone": f"139{n:08d}"}
    if table == "instance":
        row["variables"] = {**row["variables"], **values}
    elif table == "case_key" and row["name"] in values:
        row["value"] = values[row["name"]]


def build(url: str, finished: int, progress=None) -> None:
    from engine.api import Engine
    from engine.clock import FixedClock

    from . import clone, workload

    clock = FixedClock(T0 - HISTORY - timedelta(days=7))
    engine = Engine(url, clock=clock)
    try:
        engine.deploy(workload.PROCESSES)
        template, _ = common.drive_case(engine, clock, 900_000)
    finally:
        engine.close()
    step = HISTORY / max(finished, 1)
    clone.clone_instance(url, template, finished - 1, shift=lambda n: step * (n + 1), adjust=_customer,
                         business_key=lambda n: f"WO-HIST-{n:07d}", batch=1000, progress=progress)


def measure(url: str, live: int) -> dict:
    from engine.api import Engine
    from engine.clock import FixedClock

    clock = FixedClock(T0)
    engine = Engine(url, clock=clock)
    timings: list[float] = []
    original = engine.complete

    def timed(*args, **kwargs):
        started = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            timings.append(time.perf_counter() - started)

    engine.complete = timed
    try:
        common.drive_case(engine, clock, 800_000)  # warm-up (parse, caches); not counted
        timings.clear()
        for n in range(live):
            common.drive_case(engine, clock, n)
    finally:
        engine.close()
    timings.sort()
    return {"completions": len(timings), "median_ms": statistics.median(timings) * 1000,
            "p90_ms": timings[int(len(timings) * 0.9)] * 1000, "mean_ms": statistics.fmean(timings) * 1000}


def run(small: int = 1_000, large: int = 20_000, live: int = 10, store: str = "sqlite", log=print) -> dict:
    results = {}
    for finished in (small, large):
        if store == "postgresql":
            admin = common.pg_admin_url()
            if not admin:
                return {"skipped": "no PostgreSQL: set GRIDFLOW_BENCH_PG or GRIDFLOW_TEST_PG"}
            context = common.scratch_pg(admin)
        else:
            context = common.scratch_sqlite()
        with context as url:
            started = time.perf_counter()
            build(url, finished, progress=lambda done, f=finished: log(f"  history {done:,}/{f:,}")
                  if done % 20_000 == 0 else None)
            built = time.perf_counter() - started
            results[finished] = {**measure(url, live), "build_seconds": built}
    return {"store": store, "small": small, "large": large, "small_result": results[small],
            "large_result": results[large],
            "ratio": results[large]["median_ms"] / results[small]["median_ms"]}


if __name__ == "__main__":
    import sys

    print(run(*(int(a) for a in sys.argv[1:3])))
