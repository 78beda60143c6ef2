"""The worker loop (``gridflow worker``): timers, timer start events, async jobs, messages, SLA clocks.

Each round, in this order:

1. fire due timers, earliest first, one transaction per instance (the instance row is locked
   with ``FOR UPDATE SKIP LOCKED`` on PostgreSQL and the due timers are re-read inside the
   transaction, so two workers never fire the same timer); lateness is recorded in history;
2. start instances for due timer start events (``engine.schedules``);
3. acquire and run due asynchronous jobs, retrying failures and opening incidents
   (``engine.jobs``);
4. deliver buffered messages whose catch now waits, and expire those past their time to live
   (``engine.messages``);
5. record SLA clocks that became at risk or breached (``engine.sla_clocks``).

Every action is one log line. ``once=True`` repeats rounds until a round finds nothing to do
(what was due when it started, and what that made due, e.g. a job behind a timer), then
returns. Otherwise it sleeps ``poll`` seconds between idle rounds. :meth:`Worker.stop` (wired
to SIGINT/SIGTERM by :meth:`Worker.install_signal_handlers`) lets the current item finish,
gives back jobs acquired but not started, and ends the loop. Any number of workers may run
against the same database; SQLite serializes them, PostgreSQL runs them in parallel.

A database outage (PostgreSQL restarting, a cut connection) is one ``database_unavailable`` line,
not a crash: the worker ends the round, backs off (``poll``, doubling, at most 10 s), reconnects
through the pool and logs ``database_reconnected`` once a whole round went through. A job whose
result could not be committed stays locked until its lock expires, then any worker retries it
with the same idempotency key.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .errors import GridflowError
from .jobs import lock_ttl_setting

if TYPE_CHECKING:  # pragma: no cover
    from .api import Engine

MAX_ROUNDS_ONCE = 1000
MAX_BACKOFF = 10.0  # seconds between attempts while the database is unreachable


def _is_outage(exc: BaseException) -> bool:
    """Whether the database could not be reached (down, restarting, connection cut), as opposed to a bug
    or a refused command: the pool reconnects on the next checkout (``pool_pre_ping``)."""
    from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

    if isinstance(exc, DBAPIError):
        return exc.connection_invalidated or isinstance(exc, (OperationalError, InterfaceError))
    return isinstance(exc, GridflowError) and str(exc).startswith("database ")  # engine.api._Command's wording


def _first_line(exc: BaseException) -> str:
    original = getattr(exc, "orig", None) or exc
    return (str(original).strip().splitlines() or [type(exc).__name__])[0]


def default_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _print(line: str) -> None:
    print(line, flush=True)


def _value(value: Any) -> str:
    text = str(value)
    return f'"{text}"' if (" " in text or not text) else text


class Worker:
    """Runs what is due, one item at a time, until stopped (or, with ``once``, until nothing is due)."""

    def __init__(self, engine: Engine, worker_id: str | None = None, poll: float = 5.0,
                 lock_ttl: float | None = None, batch: int = 10, log: Callable[[str], None] | None = None):
        if poll <= 0:
            raise ValueError(f"poll interval must be positive, got {poll}")
        self.engine = engine
        self.id = worker_id or default_worker_id()
        self.poll = poll
        self.lock_ttl = lock_ttl_setting(lock_ttl)
        self.batch = max(1, batch)
        self.log = log or _print
        self.stop_reason: str | None = None
        self.errors = 0
        self.actions = 0
        self.outage_since: float | None = None  # monotonic time the database became unreachable
        self.backoff = 0.0

    # -- control ---------------------------------------------------------------------------
    @property
    def stopping(self) -> bool:
        return self.stop_reason is not None

    def stop(self, reason: str = "requested") -> None:
        """Finish the current item, then stop (safe to call from a signal handler)."""
        if self.stop_reason is None:
            self.stop_reason = reason

    def install_signal_handlers(self) -> None:
        """SIGINT/SIGTERM stop the worker cleanly; a second SIGINT interrupts at once."""

        def handle(signum, _frame):
            name = signal.Signals(signum).name
            if self.stopping and signum == signal.SIGINT:
                raise KeyboardInterrupt
            self.stop(name)
            self.report("worker_stopping", signal=name, note="finishing the current item")

        signal.signal(signal.SIGINT, handle)
        signal.signal(signal.SIGTERM, handle)

    def report(self, action: str, **fields: Any) -> None:
        """One log line: instant, worker id, action, key=value details."""
        if action not in ("worker_started", "worker_stopping", "worker_stopped", "error", "database_unavailable",
                          "database_reconnected"):
            self.actions += 1
        now = self.engine.clock.now().isoformat(timespec="seconds")
        details = " ".join(f"{k}={_value(v)}" for k, v in fields.items() if v is not None)
        self.log(f"{now} worker={self.id} {action}{' ' + details if details else ''}")

    # -- loop ------------------------------------------------------------------------------
    def run(self, once: bool = False) -> int:
        """Run until stopped (or until nothing is due with ``once``). Returns the number of actions."""
        self.report("worker_started", poll=f"{self.poll:g}s", lock_ttl=f"{self.lock_ttl:g}s",
                    mode="once" if once else "loop")
        rounds = 0
        try:
            while not self.stopping:
                done = self.run_round()
                rounds += 1
                if once and (done == 0 or rounds >= MAX_ROUNDS_ONCE):
                    break
                if self.outage_since is not None:  # back off: poll, 2×poll, 4×poll … at most MAX_BACKOFF
                    self.backoff = min(MAX_BACKOFF, max(self.poll, self.backoff * 2))
                    self._sleep(self.backoff)
                elif done == 0 and not once:
                    self._sleep(self.poll)
        finally:
            self.report("worker_stopped", reason=self.stop_reason or ("drained" if once else "ended"),
                        actions=self.actions, errors=self.errors)
        return self.actions

    def run_round(self) -> int:
        """One pass over every kind of due work; returns how many items were handled."""
        engine = self.engine
        stages: list[tuple[str, Callable[[], int]]] = [
            ("timers", lambda: engine.run_due(report=self.report, should_stop=lambda: self.stopping)),
            ("jobs", lambda: engine.run_jobs(self.id, limit=self.batch, lock_ttl=self.lock_ttl, report=self.report,
                                             should_stop=lambda: self.stopping)),
            ("messages", lambda: engine.deliver_buffered_messages(report=self.report)),
            ("expiry", lambda: engine.expire_messages(report=self.report)),
            ("sla", lambda: engine.scan_sla_clocks(report=self.report)),
        ]
        handled = 0
        for name, stage in stages:
            if self.stopping:
                break
            try:
                handled += stage()
            except Exception as exc:  # neither a bug nor an outage may kill a long-running worker
                self.errors += 1
                if _is_outage(exc):
                    if self.outage_since is None:  # one line per outage, not one per stage and round
                        self.outage_since = time.monotonic()
                        self.report("database_unavailable", stage=name, message=_first_line(exc),
                                    note="backing off, then reconnecting")
                    return handled  # the rest of the round would fail the same way
                if isinstance(exc, GridflowError):
                    self.report("error", stage=name, message=str(exc))
                else:
                    self.report("error", stage=name, message=f"{type(exc).__name__}: {exc}")
                    print(f"gridflow worker: {name}: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        if self.outage_since is not None and not self.stopping:  # a whole round went through
            self.report("database_reconnected", after=f"{time.monotonic() - self.outage_since:.1f}s")
            self.outage_since, self.backoff = None, 0.0
        return handled

    def _sleep(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not self.stopping:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            time.sleep(min(remaining, 0.1))
