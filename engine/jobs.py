"""Asynchronous service tasks (jobs), their retry cycles, and incidents.

A handler task that is asynchronous (``camunda:asyncBefore="true"`` or
``@handler(..., asynchronous=True)``) stays READY when its step commits; the step writes one
``job`` row for it (id = task id). A worker then:

1. **acquires** due jobs in one short write transaction (``SELECT … FOR UPDATE SKIP LOCKED`` on
   PostgreSQL; SQLite serializes writers with ``BEGIN IMMEDIATE``) and stamps a lock owner and a
   lock expiry on them;
2. **runs** the handler with *no* database transaction open, on a deep copy of the task's
   variables, while a heartbeat thread keeps extending the lock;
3. **applies** the result in a new transaction: it locks the instance, reloads the workflow,
   checks that the task is still READY and that it still holds the job, merges the result,
   completes the task, runs the instance to its next waits and saves it (the same code path as
   every other step), and deletes the job;
4. on a failure, records the attempt and schedules the next one per the retry cycle; when the
   attempts run out it opens an ``incident`` (the instance stays ``running`` and lists it).

A worker that dies leaves its lock behind; once the lock expires another worker takes the job
over, and the abandoned attempt counts as a failed one (a handler that crashes its worker every
time ends in an incident, not in an endless take-over loop). The handler's ``idempotency_key``
(instance id + task id) is the same for every attempt, so a handler whose side effect happened
before the crash can find it and not repeat it.

Atomicity: job rows are written inside the step's transaction (``engine.waits``); :func:`acquire`,
:func:`_complete`, :func:`_fail`, :func:`retry_incident` and :func:`resolve_incident` are each
one transaction; the handler call is outside any transaction. Locks are always taken in the
order instance → job → incident, so steps, workers and repairs cannot deadlock.
"""

from __future__ import annotations

import copy
import json
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from SpiffWorkflow.util.task import TaskState
from sqlalchemy import bindparam, or_, select, update

from handlers.registry import BpmnError, HandlerContext

from .bpmn import HandlerTask
from .errors import Conflict, InvalidInput, NotFound
from .runtime import StepFailed, StepRecord, failure_kept, share_with_live_tasks
from .sla import IsoDuration, parse_duration
from .store import DefinitionRow, EventRow, IncidentRow, InstanceRow, JobRow

if TYPE_CHECKING:  # pragma: no cover
    from .api import Engine

DEFAULT_RETRY_CYCLE = "R3/PT1M"
DEFAULT_LOCK_TTL = 300.0  # seconds; GRIDFLOW_LOCK_TTL or ``gridflow worker --lock-ttl``

Report = Callable[..., None]


def _no_report(_action: str, **_fields: Any) -> None:
    return None


def lock_ttl_setting(value: float | None = None) -> float:
    """The job lock time to live in seconds: ``value``, else ``GRIDFLOW_LOCK_TTL``, else 300."""
    if value is not None:
        return float(value)
    text = os.environ.get("GRIDFLOW_LOCK_TTL")
    if not text:
        return DEFAULT_LOCK_TTL
    try:
        ttl = float(text)
    except ValueError:
        raise InvalidInput(f"GRIDFLOW_LOCK_TTL must be a number of seconds, got '{text}'") from None
    if ttl <= 0:
        raise InvalidInput(f"GRIDFLOW_LOCK_TTL must be positive, got '{text}'")
    return ttl


# -- retry cycles --------------------------------------------------------------------------------
@dataclass(frozen=True)
class RetryCycle:
    """How often a job is attempted and how long to wait between attempts.

    ``R3/PT1M``: at most 3 attempts, one minute apart (Camunda's default of 3). A list of waits
    ``PT1M,PT10M,PT1H``: the first attempt and one more after each wait (4 attempts).
    """

    text: str
    attempts: int
    waits: tuple[IsoDuration, ...]

    def next_run(self, failed_attempt: int, now: datetime) -> datetime:
        """When to try again after attempt number ``failed_attempt`` (1-based) failed at ``now``."""
        wait = self.waits[min(max(failed_attempt, 1), len(self.waits)) - 1]
        return wait.add_to(now)


def parse_retry_cycle(text: str | None) -> RetryCycle:
    """Parse a Camunda retry cycle (``R3/PT1M`` or ``PT1M,PT5M,PT10M``); ValueError names the problem."""
    body = (text or DEFAULT_RETRY_CYCLE).strip()
    what = f"retry cycle '{body}'"
    if body[:1] in ("R", "r"):
        count, sep, rest = body[1:].partition("/")
        if not sep or not count.isdigit() or int(count) < 1:
            raise ValueError(f"{what} is not Rn/<duration> with n >= 1 (e.g. R3/PT1M)")
        try:
            return RetryCycle(body, int(count), (parse_duration(rest.strip()),))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{what}: {exc}") from None
    parts = [p.strip() for p in body.split(",") if p.strip()]
    if not parts:
        raise ValueError(f"{what} is empty")
    try:
        waits = tuple(parse_duration(p) for p in parts)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{what}: {exc}") from None
    return RetryCycle(body, len(waits) + 1, waits)


def retry_cycle_of(engine: Engine, info: dict[str, Any], topic: str | None) -> str:
    """Per task (``camunda:property retryCycle``), else per topic (``@handler(retry_cycle=…)``), else R3/PT1M."""
    prop = (info.get("properties") or {}).get("retryCycle")
    if prop and prop.strip():
        return prop.strip()
    spec = engine.handlers.get(topic) if topic else None
    return (spec.retry_cycle if spec is not None and spec.retry_cycle else None) or DEFAULT_RETRY_CYCLE


# -- projection (inside the step's transaction) -------------------------------------------------
def new_job_rows(engine: Engine, instance: InstanceRow, bundle, workflow, task_ids: list[str],
                 now: datetime) -> list[dict[str, Any]]:
    """The ``job`` rows (column values) of asynchronous handler tasks that just became READY
    (``engine.waits.write_changes`` inserts them; a row is deleted when its task is no longer READY)."""
    rows = []
    for job_id in task_ids:
        task = engine.runtime.find_task(workflow, job_id)
        info = bundle.info(task)
        topic = info.get("topic") or ""
        text = retry_cycle_of(engine, info, topic)
        try:
            attempts = parse_retry_cycle(text).attempts
        except ValueError:
            attempts = 1  # the failure path reports the bad cycle in the incident
        rows.append({"id": job_id, "instance_id": instance.id, "bpmn_id": task.task_spec.bpmn_id, "topic": topic,
                     "attempts": 0, "retries_left": attempts, "next_run_at": now, "state": "ready",
                     "idempotency_key": f"{instance.id}:{job_id}", "retry_cycle": text, "created_at": now,
                     "last_error": None, "locked_by": None, "locked_until": None})
    return rows


# -- views ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Job:
    id: str
    instance_id: str
    bpmn_id: str
    topic: str
    state: str
    attempts: int
    retries_left: int
    next_run_at: datetime
    last_error: str | None
    locked_by: str | None
    locked_until: datetime | None
    idempotency_key: str | None
    retry_cycle: str | None


@dataclass(frozen=True)
class Incident:
    id: int
    instance_id: str
    kind: str  # step (instance in error) or job (async retries exhausted; instance running)
    task_id: str | None
    bpmn_id: str | None
    topic: str | None
    message: str
    attempts: int | None
    created_at: datetime
    resolved_at: datetime | None = None
    resolved_by: str | None = None
    resolution: str | None = None
    definition_key: str | None = None
    business_key: str | None = None

    @property
    def open(self) -> bool:
        return self.resolved_at is None


def _job(row: JobRow) -> Job:
    return Job(row.id, row.instance_id, row.bpmn_id, row.topic, row.state, row.attempts, row.retries_left,
               row.next_run_at, row.last_error, row.locked_by, row.locked_until, row.idempotency_key,
               row.retry_cycle)


def _incident(row: IncidentRow, definition_key: str | None = None, business_key: str | None = None) -> Incident:
    return Incident(row.id, row.instance_id, row.kind or "step", row.task_id, row.bpmn_id, row.topic, row.message,
                    row.attempts, row.created_at, row.resolved_at, row.resolved_by, row.resolution,
                    definition_key, business_key)


def list_jobs(engine: Engine, instance_id: str | None = None) -> list[Job]:
    with engine.store.read() as session:
        query = select(JobRow).order_by(JobRow.next_run_at, JobRow.id)
        if instance_id:
            query = query.where(JobRow.instance_id == instance_id)
        return [_job(r) for r in session.scalars(query)]


def list_incidents(engine: Engine, instance_id: str | None = None, open_only: bool = True) -> list[Incident]:
    with engine.store.read() as session:
        query = (select(IncidentRow, DefinitionRow.key, InstanceRow.business_key)
                 .join(InstanceRow, InstanceRow.id == IncidentRow.instance_id)
                 .join(DefinitionRow, DefinitionRow.id == InstanceRow.definition_id)
                 .order_by(IncidentRow.id))
        if instance_id:
            query = query.where(IncidentRow.instance_id == instance_id)
        if open_only:
            query = query.where(IncidentRow.resolved_at.is_(None))
        return [_incident(row, key, business_key) for row, key, business_key in session.execute(query)]


def open_incidents(session, instance_id: str) -> list[Incident]:
    """The open incidents of one instance (for ``Engine.instance()``)."""
    return [_incident(r) for r in session.scalars(_OPEN_INCIDENTS, {"instance_id": instance_id})]


_OPEN_INCIDENTS = (select(IncidentRow).where(IncidentRow.instance_id == bindparam("instance_id"),
                                             IncidentRow.resolved_at.is_(None)).order_by(IncidentRow.id))


# -- acquisition and execution ------------------------------------------------------------------
@dataclass
class JobTicket:
    """A job this worker holds: what it needs to run the handler outside any transaction."""

    id: str
    instance_id: str
    bpmn_id: str
    topic: str
    attempt: int
    idempotency_key: str
    worker_id: str
    taken_over_from: str | None = None
    lost: bool = field(default=False)


def acquire(engine: Engine, worker_id: str, limit: int, lock_ttl: float) -> list[JobTicket]:
    """Lock up to ``limit`` due jobs for ``worker_id`` (one short transaction). Expired locks are taken over.

    A job whose lock expired was abandoned mid-attempt (its worker died or hung): that attempt counts
    as failed like any other, so a handler that kills its worker every time ends in an incident after
    its retry cycle instead of being taken over forever (see :func:`_count_abandoned_attempt`).
    """
    if limit <= 0:
        return []
    now = engine.clock.now()
    tickets: list[JobTicket] = []
    due = (select(JobRow).join(InstanceRow, InstanceRow.id == JobRow.instance_id)
           .where(JobRow.state == "ready", JobRow.next_run_at <= now, InstanceRow.status == "running",
                  or_(JobRow.locked_until.is_(None), JobRow.locked_until <= now))
           .order_by(JobRow.next_run_at, JobRow.id).limit(limit))
    with engine.store.read() as session:  # an idle poll takes no write lock (SQLite has only one)
        if session.scalars(due.with_only_columns(JobRow.id)).first() is None:
            return []
    with engine._command() as session:
        query = engine.store.lock_for_update(due, skip_locked=True, of=JobRow)
        for row in session.scalars(query.execution_options(populate_existing=True)):
            previous = row.locked_by if row.locked_by and row.locked_by != worker_id else None
            if row.locked_by is not None and not _count_abandoned_attempt(session, row, now):
                continue  # that was its last attempt: an incident now, not another run
            row.attempts += 1
            row.locked_by = worker_id
            row.locked_until = now + timedelta(seconds=lock_ttl)
            tickets.append(JobTicket(row.id, row.instance_id, row.bpmn_id, row.topic, row.attempts,
                                     row.idempotency_key or f"{row.instance_id}:{row.id}", worker_id, previous))
    return tickets


def release(engine: Engine, tickets: list[JobTicket]) -> None:
    """Give back jobs acquired but not run (a worker stopping); their attempt is not counted."""
    if not tickets:
        return
    with engine._command() as session:
        for ticket in tickets:
            session.execute(update(JobRow).where(JobRow.id == ticket.id, JobRow.locked_by == ticket.worker_id)
                            .values(locked_by=None, locked_until=None, attempts=JobRow.attempts - 1))


def run_jobs(engine: Engine, worker_id: str, limit: int = 10, lock_ttl: float | None = None,
             report: Report = _no_report, should_stop: Callable[[], bool] = lambda: False) -> int:
    """Acquire due jobs and run them one by one; returns how many were run (succeeded or failed)."""
    ttl = lock_ttl_setting(lock_ttl)
    tickets = acquire(engine, worker_id, limit, ttl)
    done = 0
    for index, ticket in enumerate(tickets):
        if should_stop():
            release(engine, tickets[index:])
            report("job_released", count=len(tickets) - index)
            break
        if ticket.taken_over_from:
            report("job_taken_over", job=ticket.id, instance=ticket.instance_id, topic=ticket.topic,
                   previous=ticket.taken_over_from, attempt=ticket.attempt)
        run_ticket(engine, ticket, ttl, report)
        done += 1
    return done


def run_ticket(engine: Engine, ticket: JobTicket, lock_ttl: float, report: Report = _no_report) -> str:
    """Run one held job: the handler outside any transaction, then complete or fail it. Returns the outcome."""
    with engine.store.read() as session:
        instance = session.get(InstanceRow, ticket.instance_id)
        bundle = engine._bundle(session, instance.definition_id)
        workflow = engine.runtime.peek(bundle, instance.state_json)  # read only: variables for the handler
        business_key = instance.business_key
    task = engine.runtime.find_task(workflow, ticket.id)
    if task is None or task.state != TaskState.READY:
        _drop_stale(engine, ticket)
        report("job_dropped", job=ticket.id, instance=ticket.instance_id, reason="task no longer ready")
        return "stale"
    info = bundle.info(task)
    variables = copy.deepcopy(dict(task.data))
    spec = engine.handlers.get(ticket.topic)
    context = HandlerContext(instance_id=ticket.instance_id, business_key=business_key, task_id=ticket.id,
                             bpmn_id=ticket.bpmn_id, topic=ticket.topic, now=engine.clock.now(),
                             idempotency_key=ticket.idempotency_key,
                             properties=dict(info.get("properties") or {}),
                             evaluate=engine.runtime.script_engine.evaluator.evaluate, attempt=ticket.attempt)
    error: str | None = None
    result: Any = None
    bpmn_error: BpmnError | None = None
    if spec is None:
        error = f"no handler registered for topic '{ticket.topic}'"
    else:
        with _Heartbeat(engine, ticket, lock_ttl):
            try:
                result = spec.function(variables, context)
            except BpmnError as exc:  # business flow, not a failure: the error boundary takes it
                bpmn_error = exc
            except Exception as exc:  # the handler's failure is data: retried, then an incident
                error = f"{type(exc).__name__}: {exc}"
        if error is None:
            problem = engine.runtime.result_problem(result)
            error = None if problem is None else f"handler {problem}"
    if error is not None:
        outcome = _fail(engine, ticket, error)
        report("job_" + outcome, job=ticket.id, instance=ticket.instance_id, topic=ticket.topic,
               attempt=ticket.attempt, error=error)
        return outcome
    if bpmn_error is not None:
        try:
            outcome = _complete(engine, ticket, {}, context.outbox, bpmn_error)
        except StepFailed as exc:  # no error boundary catches the code: a failure like any other
            outcome = _fail(engine, ticket, str(exc))
            report("job_" + outcome, job=ticket.id, instance=ticket.instance_id, topic=ticket.topic,
                   attempt=ticket.attempt, error=str(exc))
            return outcome
        report("job_bpmn_error", job=ticket.id, instance=ticket.instance_id, topic=ticket.topic,
               attempt=ticket.attempt, code=bpmn_error.code)
        return outcome
    outcome = _complete(engine, ticket, result or {}, context.outbox)
    report("job_" + outcome, job=ticket.id, instance=ticket.instance_id, topic=ticket.topic, attempt=ticket.attempt,
           key=ticket.idempotency_key)
    return outcome


def _lock_job(engine: Engine, session, job_id: str) -> JobRow | None:
    query = engine.store.lock_for_update(select(JobRow).where(JobRow.id == job_id))
    return session.scalars(query.execution_options(populate_existing=True)).first()


def _complete(engine: Engine, ticket: JobTicket, result: dict[str, Any], outbox: list[dict[str, Any]],
              bpmn_error: BpmnError | None = None) -> str:
    """Apply a job's result, or deliver its BPMN error to the task's error boundary (StepFailed when none)."""
    with engine._command() as session:
        instance = engine._lock_instance(session, ticket.instance_id)
        if instance.status == "cancelled":
            return "cancelled"  # the case was cancelled while the handler ran (its job row went with it)
        job = _lock_job(engine, session, ticket.id)
        if job is None or job.locked_by != ticket.worker_id:
            return "lost"  # another worker took it over after our lock expired; its result counts
        if instance.status != "running":
            job.locked_by, job.locked_until = None, None
            return "deferred"
        bundle = engine._bundle(session, instance.definition_id)
        workflow = engine.runtime.load(bundle, instance.state_json)
        task = engine.runtime.find_task(workflow, ticket.id)
        if task is None or task.state != TaskState.READY:
            session.delete(job)
            return "stale"
        records: list[StepRecord] = []
        if bpmn_error is not None:
            engine.runtime._throw_error(task, bpmn_error, records)
        else:
            task.data.update(copy.deepcopy(result))
            share_with_live_tasks(task, result)
            with failure_kept(workflow):  # the handler completed; a failure is in what follows the task
                task.run()
            records.append(StepRecord("handler_completed", ticket.id, ticket.bpmn_id,
                                      {"topic": ticket.topic, "result": result, "attempt": ticket.attempt,
                                       "worker": ticket.worker_id, "idempotency_key": ticket.idempotency_key}))
        records += [StepRecord("outbox", ticket.id, ticket.bpmn_id, message) for message in outbox]
        session.delete(job)
        session.flush()
        engine._advance_and_save(session, instance, bundle, workflow, records, None)
        return "completed"


def _fail(engine: Engine, ticket: JobTicket, error: str) -> str:
    with engine._command() as session:
        now = engine.clock.now()
        instance = engine._lock_instance(session, ticket.instance_id)
        if instance.status == "cancelled":
            return "cancelled"
        job = _lock_job(engine, session, ticket.id)
        if job is None or job.locked_by != ticket.worker_id:
            return "lost"
        job.last_error = error
        job.retries_left -= 1
        job.locked_by, job.locked_until = None, None
        try:
            cycle = parse_retry_cycle(job.retry_cycle)
        except ValueError as exc:
            cycle, error = None, f"{error}; {exc}"
            job.retries_left = 0
        data = {"topic": job.topic, "attempt": job.attempts, "error": error, "worker": ticket.worker_id,
                "retries_left": max(job.retries_left, 0)}
        if job.retries_left > 0 and cycle is not None:
            job.next_run_at = cycle.next_run(job.attempts, now)
            data["next_run_at"] = job.next_run_at.isoformat()
            _event(session, instance.id, now, "job_failed", None, job.id, job.bpmn_id, data)
            return "retry_scheduled"
        _open_incident(session, job, now, error, data)
        return "incident"


def _count_abandoned_attempt(session, job: JobRow, now: datetime) -> bool:
    """Record the attempt whose worker let ``job``'s lock expire as failed (inside ``acquire``).

    Returns True when the job may run again; False when that was its last attempt, in which case the
    job now has an incident. ``job_failed`` in the history says which worker and why.
    """
    error = (f"worker {job.locked_by} did not finish attempt {job.attempts}: its lock expired at "
             f"{job.locked_until.isoformat()}")
    job.last_error = error
    job.retries_left -= 1
    data = {"topic": job.topic, "attempt": job.attempts, "error": error, "worker": job.locked_by,
            "retries_left": max(job.retries_left, 0), "reason": "lock_expired"}
    job.locked_by, job.locked_until = None, None
    if job.retries_left > 0:
        _event(session, job.instance_id, now, "job_failed", None, job.id, job.bpmn_id, data)
        return True
    _open_incident(session, job, now, error, data)
    return False


def _open_incident(session, job: JobRow, now: datetime, error: str, failed: dict[str, Any]) -> None:
    """The job is out of attempts: mark it, open its incident and record both (its instance stays running)."""
    job.state = "incident"
    incident = IncidentRow(instance_id=job.instance_id, task_id=job.id, bpmn_id=job.bpmn_id, created_at=now,
                           message=f"handler '{job.topic}' failed at task {job.bpmn_id} "
                                   f"after {job.attempts} attempt(s): {error}",
                           kind="job", job_id=job.id, topic=job.topic, attempts=job.attempts)
    session.add(incident)
    session.flush()
    _event(session, job.instance_id, now, "job_failed", None, job.id, job.bpmn_id, failed)
    _event(session, job.instance_id, now, "incident_opened", None, job.id, job.bpmn_id,
           {"incident": incident.id, "kind": "job", "topic": job.topic, "message": incident.message})


def _drop_stale(engine: Engine, ticket: JobTicket) -> None:
    with engine._command() as session:
        engine._lock_instance(session, ticket.instance_id)
        job = _lock_job(engine, session, ticket.id)
        if job is not None and job.locked_by == ticket.worker_id:
            session.delete(job)


class _Heartbeat:
    """Extends the job's lock every ``ttl / 3`` seconds while the handler runs (its own transactions)."""

    def __init__(self, engine: Engine, ticket: JobTicket, ttl: float):
        self.engine, self.ticket, self.ttl = engine, ticket, ttl
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"gridflow-heartbeat-{ticket.id[:8]}", daemon=True)

    def __enter__(self) -> _Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        interval = max(self.ttl / 3.0, 0.1)
        while not self._stop.wait(interval):
            try:
                with self.engine.store.write() as session:
                    until = self.engine.clock.now() + timedelta(seconds=self.ttl)
                    result = session.execute(update(JobRow).where(JobRow.id == self.ticket.id,
                                                                  JobRow.locked_by == self.ticket.worker_id)
                                             .values(locked_until=until))
                if result.rowcount == 0:
                    self.ticket.lost = True
                    return
            except Exception:  # a database hiccup: the next beat tries again; expiry is the fallback
                continue


# -- incidents: retry and resolve --------------------------------------------------------------
def _lock_incident(engine: Engine, session, incident_id: int, user: str | None) -> tuple[IncidentRow, InstanceRow]:
    engine._acting(session, user, "incident")
    row = session.get(IncidentRow, incident_id)
    if row is None:
        raise NotFound(f"no incident {incident_id}")
    instance = engine._lock_instance(session, row.instance_id)
    query = engine.store.lock_for_update(select(IncidentRow).where(IncidentRow.id == incident_id))
    row = session.scalars(query.execution_options(populate_existing=True)).first()
    if row.resolved_at is not None:
        raise Conflict(f"incident {incident_id} was already {row.resolution or 'resolved'} by "
                       f"{row.resolved_by or 'someone'} at {row.resolved_at.isoformat()}")
    return row, instance


def _close(row: IncidentRow, now: datetime, user: str | None, resolution: str) -> None:
    row.resolved_at, row.resolved_by, row.resolution = now, user, resolution


def retry_incident(engine: Engine, incident_id: int, user: str | None = None):
    """Re-arm the failed job (one more attempt, due now) or re-run the failed synchronous step."""
    with engine._command() as session:
        now = engine.clock.now()
        row, instance = _lock_incident(engine, session, incident_id, user)
        if row.kind == "job":
            job = _lock_job(engine, session, row.job_id) if row.job_id else None
            if job is None:
                raise Conflict(f"incident {incident_id}: the task {row.bpmn_id} no longer waits for its handler")
            job.state, job.retries_left, job.next_run_at = "ready", 1, now
            job.locked_by, job.locked_until = None, None
            _close(row, now, user, "retried")
            _event(session, instance.id, now, "incident_retried", user, row.task_id, row.bpmn_id,
                   {"incident": row.id, "kind": "job", "topic": row.topic})
            session.flush()
            return engine._instance_view(session, instance)
        if instance.status != "error":
            raise Conflict(f"incident {incident_id}: instance {instance.id} is {instance.status}, not in error")
        bundle = engine._bundle(session, instance.definition_id)
        workflow = engine.runtime.load(bundle, instance.state_json)
        task = engine.runtime.find_task(workflow, row.task_id) if row.task_id else None
        if task is not None:
            engine.runtime.rerun(task)
        _close(row, now, user, "retried")
        records = [StepRecord("incident_retried", row.task_id, row.bpmn_id, {"incident": row.id, "kind": "step"})]
        engine._advance_and_save(session, instance, bundle, workflow, records, user)
        return engine._instance_view(session, instance)


def resolve_incident(engine: Engine, incident_id: int, data: dict[str, Any] | None = None,
                     user: str | None = None):
    """Complete the failed task with ``data`` instead of running its handler, then continue the instance.

    For a failed expression (a gateway condition, a script) the data is merged into the task's
    variables and the task is run again.
    """
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise InvalidInput(f"incident data must be a JSON object, got {type(data).__name__}")
    with engine._command() as session:
        now = engine.clock.now()
        row, instance = _lock_incident(engine, session, incident_id, user)
        if row.kind != "job" and instance.status != "error":
            raise Conflict(f"incident {incident_id}: instance {instance.id} is {instance.status}, not in error")
        if instance.status not in ("running", "error"):
            raise Conflict(f"incident {incident_id}: instance {instance.id} is {instance.status}")
        bundle = engine._bundle(session, instance.definition_id)
        workflow = engine.runtime.load(bundle, instance.state_json)
        task = engine.runtime.find_task(workflow, row.task_id) if row.task_id else None
        before_start = task is not None and engine.runtime.failed_before_start(task)
        if task is None or (task.state not in (TaskState.READY, TaskState.ERROR) and not before_start):
            raise Conflict(f"incident {incident_id}: task {row.bpmn_id} is no longer waiting to run")
        task.data.update(copy.deepcopy(data))
        share_with_live_tasks(task, data)
        if before_start:  # it failed deciding whether it may run: it decides again on the corrected data
            engine.runtime.correct_inherited(task, data)
            engine.runtime.rerun(task)
        elif task.state == TaskState.ERROR:
            task._set_state(TaskState.READY)  # an expression failed: run it again on the corrected data
        if isinstance(task.task_spec, HandlerTask) and task.state == TaskState.READY:
            with failure_kept(workflow):
                task.run()  # the handler is not called: the data stands in for its result
        if row.job_id:
            job = _lock_job(engine, session, row.job_id)
            if job is not None:
                session.delete(job)
                session.flush()
        _close(row, now, user, "resolved")
        instance.status = "running"
        records = [StepRecord("incident_resolved", row.task_id, row.bpmn_id,
                              {"incident": row.id, "kind": row.kind or "step", "data": data})]
        engine._advance_and_save(session, instance, bundle, workflow, records, user)
        return engine._instance_view(session, instance)


def _event(session, instance_id: str, at: datetime, type_: str, actor: str | None, task_id: str | None,
           bpmn_id: str | None, data: dict[str, Any]) -> None:
    session.add(EventRow(instance_id=instance_id, at=at, type=type_, actor=actor, task_id=task_id,
                         bpmn_id=bpmn_id, data=json.loads(json.dumps(data, default=str))))
