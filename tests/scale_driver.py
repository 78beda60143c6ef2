"""A process of operators for the scale-out test: opens complaint cases and completes user tasks.

Run as a subprocess by tests/test_scale_out.py (never collected by pytest)::

    python tests/scale_driver.py --db URL --clock FILE --index 0 --of 2 --cases 2000 --log FILE --stop FILE

Everything goes through the Engine API, on the shared simulated clock (``engine.clock.FileClock``):

- opens case ``n`` (message ``msgComplaint``) when ``n % of == index`` and its arrival instant has
  come (:func:`arrival`);
- completes every open work item whose think time has passed (``bench.workload.think_time``) with
  valid form data, as its assignee. Both drivers see every work item (in different orders), so
  they race for the same tasks: a ``Conflict`` (someone else completed it, or changed the case at
  the same moment) is retried on fresh state or skipped; a cancelled task is skipped.

Each successful completion is one line in ``--log`` (``completed <task id> <instance id> <form>``);
a completion whose answer was lost to an outage ``indoubt …`` (it may or may not have committed);
each start ``started <n> <instance id>``. A database outage (PostgreSQL restarting) is logged to
stderr and retried with back-off. Stops when the ``--stop`` file exists.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy.exc import DBAPIError  # noqa: E402

from bench import workload  # noqa: E402
from engine.api import Engine  # noqa: E402
from engine.clock import FileClock  # noqa: E402
from engine.errors import Conflict, GridflowError, NotAllowed, NotFound  # noqa: E402

WAVES = 10
WAVE_GAP = timedelta(hours=1)


def arrival(n: int, cases: int, t0: datetime) -> datetime:
    """Case ``n`` arrives in one of ten hourly waves from ``t0``."""
    per_wave = max(1, -(-cases // WAVES))
    return t0 + (n // per_wave) * WAVE_GAP


class Driver:
    def __init__(self, args):
        self.args = args
        self.clock = FileClock(args.clock)
        self.engine = Engine(args.db, clock=self.clock, auto_migrate=False)
        self.t0 = datetime.fromisoformat(args.t0)
        self.log = open(args.log, "a", encoding="utf-8", buffering=1)  # noqa: SIM115
        self.rng = random.Random(args.index)
        self.next_case = args.index
        self.outage_since: float | None = None
        self.conflicts = 0

    def say(self, line: str) -> None:
        print(f"driver{self.args.index} {self.clock.now().isoformat()} {line}", file=sys.stderr, flush=True)

    def run(self) -> None:
        stop = Path(self.args.stop)
        idle, seen = 0.0, None
        while not stop.exists():
            if seen != self.clock.now():  # the clock moved: new work may be actionable at once
                seen, idle = self.clock.now(), 0.0
            try:
                done = self.start_due() + self.complete_actionable()
                if self.outage_since is not None:
                    self.say(f"database back after {time.monotonic() - self.outage_since:.1f}s")
                    self.outage_since = None
            except (GridflowError, DBAPIError) as exc:  # e.g. "database … unavailable" while PostgreSQL restarts
                if self.outage_since is None:
                    self.outage_since = time.monotonic()
                self.say(f"error: {exc}; retrying")
                time.sleep(min(2.0, 0.2 + time.monotonic() - self.outage_since))
                continue
            if done:
                idle = 0.0
            else:  # poll quickly right after activity, then back off (other processes create tasks too)
                idle = min(0.25, idle + 0.02)
                time.sleep(idle)
        self.say(f"stopping; {self.conflicts} conflicts retried or skipped")

    # -- cases ---------------------------------------------------------------------------------
    def start_due(self) -> int:
        started = 0
        now = self.clock.now()
        while self.next_case < self.args.cases and arrival(self.next_case, self.args.cases, self.t0) <= now:
            n = self.next_case
            if not self._already_started(n):
                correlation, data = workload.start_payload(n, now)
                instance = self.engine.correlate(workload.START_MESSAGE, correlation, data, user="95598")
                self.log.write(f"started {n} {instance.id}\n")
                started += 1
            self.next_case += self.args.of
        return started

    def _already_started(self, n: int) -> bool:
        """After an outage the commit of a start may have happened without its answer arriving."""
        from sqlalchemy import select

        from engine.store import InstanceRow

        with self.engine.store.read() as session:
            return session.scalar(select(InstanceRow.id).where(
                InstanceRow.business_key == workload.work_order(n))) is not None

    # -- tasks ---------------------------------------------------------------------------------
    def complete_actionable(self) -> int:
        now = self.clock.now()
        items = [t for t in self.engine.tasks() if workload.actionable_at(t.id, t.created_at) <= now]
        if self.args.index % 2:
            self.rng.shuffle(items)
        done = 0
        for item in items:
            done += self.complete(item)
        return done

    def complete(self, item) -> int:
        for _ in range(5):
            try:
                view = self.engine.task_view(item.id)
                if view.task.state != "open":
                    return 0
                data = workload.answer(item.form_key, view.variables, self.clock.now(),
                                       workload.case_number(item.business_key))
                try:
                    self.engine.complete(item.id, data, user=item.assignee)
                except (Conflict, NotAllowed, NotFound):
                    raise
                except (GridflowError, DBAPIError):  # the commit may have happened before the line broke
                    self.log.write(f"indoubt {item.id} {item.instance_id} {item.form_key}\n")
                    raise
            except Conflict as exc:
                self.conflicts += 1
                if "already completed" in str(exc):
                    return 0
                time.sleep(self.rng.uniform(0.0, 0.05))
                continue  # the case changed under us (a timer, a job, the other driver): try again
            except (NotAllowed, NotFound):
                return 0  # cancelled (an interrupting timer) or gone
            self.log.write(f"completed {item.id} {item.instance_id} {item.form_key}\n")
            return 1
        return 0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--db", required=True)
    parser.add_argument("--clock", required=True)
    parser.add_argument("--t0", required=True)
    parser.add_argument("--index", type=int, required=True)
    parser.add_argument("--of", type=int, default=2)
    parser.add_argument("--cases", type=int, required=True)
    parser.add_argument("--log", required=True)
    parser.add_argument("--stop", required=True)
    args = parser.parse_args()
    os.environ.setdefault("GRIDFLOW_HANDLERS", "scale_handlers")
    Driver(args).run()


if __name__ == "__main__":
    main()
