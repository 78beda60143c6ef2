"""Benchmark 4: peak memory (RSS) of a worker after 10,000 cases vs after 100.

Setup (not timed): one complaint case is driven through the Engine API until it waits for its async
回单 job; ``bench.clone`` copies it into ``cases`` cases. One worker process (``multiprocessing``
spawn, nothing else in it) then does what ``engine.worker.Worker`` rounds do: ``run_jobs`` (batches of
10: handler, step, save; the case then waits a day for its revisit), then ``run_due`` two days later
(every revisit timer fires) — first for 100 cases, then for the rest. RSS is read from
``/proc/self/status`` after the first 100 cases and after all of them, with the peak (VmHWM) and the
sizes of the worker's bounded caches (parsed specs, recent workflow objects, expression and form-schema
caches).
"""

from __future__ import annotations

import multiprocessing
import time

from . import common
from .common import T0


def build(url: str, cases: int) -> int:
    return common.cases_waiting_for_their_job(url, cases, batch=1000)


def _caches(engine) -> dict:
    from engine import expressions, forms

    sizes = {"specs": len(engine._specs), "workflows": len(engine.runtime._recent)}
    for module in (expressions, forms):
        for name in dir(module):
            info = getattr(getattr(module, name), "cache_info", None)
            if callable(info):
                sizes[f"{module.__name__.split('.')[-1]}.{name}"] = info().currsize
    return sizes


def _worker(url: str, stages: list[int], out) -> None:
    import gc
    import sys
    from datetime import timedelta

    from engine.api import Engine
    from engine.clock import FixedClock

    clock = FixedClock(T0)
    engine = Engine(url, clock=clock, auto_migrate=False)
    samples = {"start": common.rss_mb()}
    blocks = {}
    started = time.perf_counter()
    done = 0
    for stage, count in enumerate(stages):  # the worker's two kinds of work, for `count` cases
        clock.set(T0 + timedelta(hours=1) + timedelta(days=3 * stage))
        jobs = 0
        while jobs < count:  # what Worker.run_round's job stage does, in batches of 10
            ran = engine.run_jobs("mem", limit=min(10, count - jobs))
            if not ran:
                raise RuntimeError(f"only {jobs} of {count} jobs were due")
            jobs += ran
        clock.set(clock.now() + timedelta(days=2))
        while engine.run_due(limit=100):  # the timer stage: each revisit wait fires
            pass
        done += count
        samples[done] = common.rss_mb()
        gc.collect()
        blocks[done] = sys.getallocatedblocks()  # Python objects alive: flat unless something accumulates
    out.put({"rss_mb": samples, "allocated_blocks": blocks, "peak_mb": common.peak_rss_mb(),
             "caches": _caches(engine), "seconds": time.perf_counter() - started})
    engine.close()


def run(cases: int = 2_000, first: int = 100, stages: list[int] | None = None) -> dict:
    """RSS after ``first`` cases and after all ``cases``; or, with ``stages``, after each stage's cases."""
    stages = stages or [first, cases - first]
    with common.scratch_sqlite() as url:
        build(url, sum(stages))
        context = multiprocessing.get_context("spawn")
        out = context.Queue()
        process = context.Process(target=_worker, args=(url, stages, out))
        process.start()
        result = out.get(timeout=24 * 3600)
        process.join(timeout=60)
    samples = result["rss_mb"]
    after_first, after_all = samples.get(stages[0]), samples.get(sum(stages))
    return {"cases": sum(stages), "first": stages[0], **result, "after_first_mb": after_first,
            "after_all_mb": after_all,
            "growth": (after_all / after_first) if after_first and after_all else None}


if __name__ == "__main__":
    import sys

    if len(sys.argv) == 3 and sys.argv[1] == "--stages":  # e.g. --stages 100,400,500,1000,1000,1000
        print(run(stages=[int(n) for n in sys.argv[2].split(",")]))
    else:
        print(run(*(int(a) for a in sys.argv[1:3])))
