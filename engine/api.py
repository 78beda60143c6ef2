"""``Engine``: the one facade used by the CLI, the demo, the tests and integrators.

Every public method is one command and one database transaction: it either commits all of
its effects (instance state, work items, timers, subscriptions, history) or none of them.
Every "now" comes from the injected clock.
"""

from __future__ import annotations

import json
import os
import uuid
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from SpiffWorkflow.util.task import TaskState
from sqlalchemy import delete, func, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session
from sqlalchemy.orm.exc import StaleDataError

from handlers.registry import HandlerSpec, load_handlers

from .bpmn import GridflowParser
from .clock import Clock, SystemClock, require_aware
from .definitions import ProcessSource, inspect_files, parse_xml
from .errors import Conflict, DefinitionError, GridflowError, InvalidInput, NotAllowed, NotFound
from .expressions import ExpressionError
from .forms import FormRegistry
from .runtime import Runtime, SpecBundle, StepFailed, StepRecord, correlation_string
from .store import (
    DefinitionRow,
    EventRow,
    IncidentRow,
    InstanceRow,
    Store,
    SubscriptionRow,
    TimerRow,
    WorkItemGroupRow,
    WorkItemRow,
)

DEFAULT_URL = "sqlite:///gridflow.db"
SPEC_CACHE_SIZE = 64


@dataclass(frozen=True)
class Definition:
    id: int
    key: str
    version: int
    content_hash: str
    name: str | None
    deployed_at: datetime
    deployed_by: str | None


@dataclass(frozen=True)
class WorkItem:
    id: str
    instance_id: str
    bpmn_id: str
    name: str
    lane: str | None
    candidate_groups: list[str]
    assignee: str | None
    form_key: str | None
    due_at: datetime | None
    definition_key: str
    state: str
    created_at: datetime
    business_key: str | None = None
    completed_by: str | None = None
    completed_at: datetime | None = None


@dataclass(frozen=True)
class TimerInfo:
    task_id: str
    bpmn_id: str
    due_at: datetime


@dataclass(frozen=True)
class Instance:
    id: str
    definition_key: str
    definition_version: int
    business_key: str | None
    status: str
    variables: dict[str, Any]
    ready_tasks: list[WorkItem]
    timers: list[TimerInfo]
    error: str | None
    started_at: datetime
    ended_at: datetime | None


@dataclass(frozen=True)
class HistoryEvent:
    id: int
    instance_id: str | None
    at: datetime
    type: str
    actor: str | None
    task_id: str | None
    bpmn_id: str | None
    data: dict[str, Any] = field(default_factory=dict)


class _EngineClock(Clock):
    """The injected clock, which ``run_due(now=...)`` may override for one call."""

    def __init__(self, base: Clock):
        self.base = base
        self.override: datetime | None = None

    def now(self) -> datetime:
        return self.override if self.override is not None else self.base.now()


class Engine:
    """Deploys BPMN, runs instances, and answers queries; see the module docstring for atomicity."""

    def __init__(self, url: str = DEFAULT_URL, clock: Clock | None = None,
                 handlers: dict[str, HandlerSpec] | None = None, forms: FormRegistry | None = None,
                 auto_migrate: bool = True):
        self.clock = _EngineClock(clock or SystemClock())
        self.store = Store(url)
        self.handlers = handlers if handlers is not None else load_handlers()
        self.runtime = Runtime(self.clock, self.handlers)
        self.forms = forms or FormRegistry()
        self._specs: OrderedDict[int, SpecBundle] = OrderedDict()
        if auto_migrate:
            self._ensure_schema()

    @classmethod
    def from_env(cls, clock: Clock | None = None, **kwargs: Any) -> Engine:
        """An engine on ``GRIDFLOW_DB`` (default ``sqlite:///gridflow.db``)."""
        return cls(os.environ.get("GRIDFLOW_DB") or DEFAULT_URL, clock=clock, **kwargs)

    def close(self) -> None:
        self.store.dispose()

    # -- schema ----------------------------------------------------------------------------
    def _ensure_schema(self) -> None:
        try:
            if not self.store.has_tables():
                self.store.upgrade()
            elif not self.store.schema_is_current():
                raise GridflowError("the database schema is not current; run 'gridflow db upgrade'")
        except OperationalError as exc:
            raise GridflowError(f"cannot open database {self.store.url}: {_db_message(exc)}") from None

    def upgrade_schema(self) -> None:
        """Apply pending migrations (``gridflow db upgrade``)."""
        self.store.upgrade()

    # -- definitions -----------------------------------------------------------------------
    def lint(self, paths: Iterable[str | Path]):
        """Check files as deploy would; returns the Inspection (issues, processes). Writes nothing."""
        with self.store.read() as session:
            deployed = set(session.scalars(select(DefinitionRow.key).distinct()))
        return inspect_files(list(paths), known_topics=set(self.handlers), external_processes=deployed)

    def deploy(self, paths: Iterable[str | Path], user: str | None = None) -> list[Definition]:
        """Deploy BPMN files atomically: all processes of all files, or none.

        Identical content returns the existing version; changed content gets version + 1.
        Raises DefinitionError listing every problem (file, line, element id).
        """
        inspection = self.lint(paths)
        if inspection.errors:
            first = inspection.errors[0]
            more = (f" (+{len(inspection.errors) - 1} more; 'gridflow lint' lists them)"
                    if len(inspection.errors) > 1 else "")
            raise DefinitionError(f"{first}{more}", inspection.issues)
        now = self.clock.now()
        result: list[Definition] = []
        with self.store.write() as session:
            batch = {p.key: p for p in inspection.processes}
            rows: dict[str, DefinitionRow] = {}
            for source in _dependency_order(batch):
                calls: dict[str, int] = {}
                hashes: dict[str, str] = {}
                for called in sorted(source.calls):
                    row = rows.get(called) or self._latest(session, called)
                    calls[called], hashes[called] = row.id, row.content_hash
                content_hash = source.content_hash(hashes)
                row = session.scalars(select(DefinitionRow).where(DefinitionRow.content_hash == content_hash)).first()
                if row is None:
                    latest = session.scalar(select(func.max(DefinitionRow.version)).where(
                        DefinitionRow.key == source.key)) or 0
                    row = DefinitionRow(key=source.key, version=latest + 1, name=source.name,
                                        content_hash=content_hash, filename=Path(source.file).name,
                                        xml=source.xml, calls=calls, meta=source.meta, deployed_at=now,
                                        deployed_by=user)
                    session.add(row)
                    session.flush()
                    session.add(EventRow(instance_id=None, at=now, type="definition_deployed", actor=user,
                                         data={"key": row.key, "version": row.version, "hash": content_hash}))
                rows[source.key] = row
                result.append(_definition(row))
        return result

    def definitions(self) -> list[Definition]:
        """Every deployed version, newest first per key."""
        with self.store.read() as session:
            rows = session.scalars(select(DefinitionRow).order_by(DefinitionRow.key, DefinitionRow.version.desc()))
            return [_definition(r) for r in rows]

    def _latest(self, session: Session, key: str) -> DefinitionRow:
        row = session.scalars(select(DefinitionRow).where(DefinitionRow.key == key)
                              .order_by(DefinitionRow.version.desc()).limit(1)).first()
        if row is None:
            known = ", ".join(session.scalars(select(DefinitionRow.key).distinct())) or "none"
            raise NotFound(f"no process '{key}' is deployed (deployed: {known})")
        return row

    def _bundle(self, session: Session, definition_id: int) -> SpecBundle:
        bundle = self._specs.get(definition_id)
        if bundle is not None:
            self._specs.move_to_end(definition_id)
            return bundle
        rows: dict[str, DefinitionRow] = {}
        pending = [session.get(DefinitionRow, definition_id)]
        while pending:
            row = pending.pop()
            if row.key in rows:
                continue
            rows[row.key] = row
            pending.extend(session.get(DefinitionRow, i) for i in row.calls.values())
        parser = GridflowParser()
        seen: set[bytes] = set()
        for row in rows.values():
            if row.xml not in seen:
                seen.add(row.xml)
                parser.add_bpmn_xml(parse_xml(row.xml, row.filename), row.filename)
        top = session.get(DefinitionRow, definition_id)
        bundle = SpecBundle(definition_id, top.key, top.content_hash, parser.get_spec(top.key),
                            parser.get_subprocess_specs(top.key), {k: r.meta for k, r in rows.items()})
        self._specs[definition_id] = bundle
        if len(self._specs) > SPEC_CACHE_SIZE:
            self._specs.popitem(last=False)
        return bundle

    # -- instances -------------------------------------------------------------------------
    def start(self, key: str, data: dict[str, Any] | None = None, business_key: str | None = None,
              user: str | None = None) -> Instance:
        """Start the latest version of ``key`` and run it to its first waits (one transaction)."""
        data = _require_object(data, "start data")
        with self._command() as session:
            row = self._latest(session, key)
            return self._start(session, row, data, business_key, user, [])

    def _start(self, session, row: DefinitionRow, data, business_key, user, extra: list[StepRecord],
               message: str | None = None) -> Instance:
        bundle = self._bundle(session, row.id)
        now = self.clock.now()
        instance = InstanceRow(id=str(uuid.uuid4()), definition_id=row.id, business_key=business_key,
                               status="starting", state_json="", variables={}, started_at=now, started_by=user)
        session.add(instance)
        session.flush()
        workflow = self.runtime.create(bundle, data)
        if message is not None:
            self.runtime.start_by_message(workflow, message, data)
        records = [StepRecord("instance_started", data={"key": row.key, "version": row.version,
                                                         "business_key": business_key,
                                                         "variables": data}), *extra]
        self._advance_and_save(session, instance, bundle, workflow, records, user)
        return self._instance_view(session, instance)

    def instance(self, instance_id: str) -> Instance:
        """Status, variables, ready tasks and waiting timers of one instance (read-only)."""
        with self.store.read() as session:
            return self._instance_view(session, self._get_instance(session, instance_id))

    def instances(self, key: str | None = None, status: str | None = None, limit: int = 100) -> list[Instance]:
        with self.store.read() as session:
            query = select(InstanceRow).order_by(InstanceRow.started_at.desc()).limit(limit)
            if key:
                query = query.join(DefinitionRow).where(DefinitionRow.key == key)
            if status:
                query = query.where(InstanceRow.status == status)
            return [self._instance_view(session, row) for row in session.scalars(query)]

    def history(self, instance_id: str) -> list[HistoryEvent]:
        """The append-only events of one instance, oldest first."""
        with self.store.read() as session:
            self._get_instance(session, instance_id)
            rows = session.scalars(select(EventRow).where(EventRow.instance_id == instance_id)
                                   .order_by(EventRow.id))
            restore = self.runtime.serializer.restore_data
            return [HistoryEvent(r.id, r.instance_id, r.at, r.type, r.actor, r.task_id, r.bpmn_id,
                                 restore(r.data or {})) for r in rows]

    # -- work items ------------------------------------------------------------------------
    def tasks(self, instance_id: str | None = None, group: str | None = None, user: str | None = None,
              include_closed: bool = False, limit: int | None = None) -> list[WorkItem]:
        """Open work items (a query on the work-item table; no instance is loaded), by due time."""
        with self.store.read() as session:
            query = select(WorkItemRow, InstanceRow.business_key).join(InstanceRow)
            if not include_closed:
                query = query.where(WorkItemRow.state == "open")
            if instance_id:
                query = query.where(WorkItemRow.instance_id == instance_id)
            if group:
                query = query.join(WorkItemGroupRow).where(WorkItemGroupRow.group_name == group)
            if user:
                query = query.where(WorkItemRow.assignee == user)
            query = query.order_by(WorkItemRow.due_at.is_(None), WorkItemRow.due_at, WorkItemRow.created_at)
            if limit:
                query = query.limit(limit)
            return [_work_item(row, business_key) for row, business_key in session.execute(query)]

    def task(self, task_id: str) -> WorkItem:
        with self.store.read() as session:
            row = self._get_work_item(session, task_id)
            return _work_item(row, session.get(InstanceRow, row.instance_id).business_key)

    def form_schema(self, task_id: str) -> dict[str, Any] | None:
        return self.forms.schema(self.task(task_id).form_key)

    def claim(self, task_id: str, user: str) -> WorkItem:
        """Assign an open task to ``user``; refused when someone else holds it."""
        with self._command() as session:
            row = self._get_work_item(session, task_id, lock=True)
            if row.state != "open":
                raise NotAllowed(f"task {task_id} is {row.state}; only open tasks can be claimed")
            if row.assignee and row.assignee != user:
                raise NotAllowed(f"task {task_id} is already claimed by {row.assignee}")
            now = self.clock.now()
            row.assignee, row.claimed_by, row.claimed_at = user, user, now
            session.add(EventRow(instance_id=row.instance_id, at=now, type="task_claimed", actor=user,
                                 task_id=row.id, bpmn_id=row.bpmn_id, data={}))
            return _work_item(row, None)

    def complete(self, task_id: str, data: dict[str, Any] | None = None, user: str | None = None) -> Instance:
        """Complete a READY user task with form data, then run the instance to its next waits.

        The data is validated against the task's form schema first; any refusal changes nothing.
        """
        data = _require_object(data, "form data")
        with self._command() as session:
            item = self._get_work_item(session, task_id)
            instance = self._lock_instance(session, item.instance_id)
            session.refresh(item)
            if item.state == "completed":
                raise Conflict(f"task {task_id} ({item.name}) was already completed by "
                               f"{item.completed_by or 'someone'} at {item.completed_at.isoformat()}")
            if item.state != "open":
                raise NotAllowed(f"task {task_id} ({item.name}) is {item.state}; it can no longer be completed")
            if user and item.assignee and item.assignee != user:
                raise NotAllowed(f"task {task_id} is assigned to {item.assignee}, not {user}")
            if instance.status != "running":
                raise NotAllowed(f"instance {instance.id} is {instance.status}; its tasks cannot be completed")
            self.forms.validate(item.form_key, data, f"task {task_id} ({item.name})")
            bundle = self._bundle(session, instance.definition_id)
            workflow = self.runtime.load(bundle, instance.state_json)
            task = self.runtime.find_task(workflow, task_id)
            if task is None or task.state != TaskState.READY:
                raise Conflict(f"task {task_id} ({item.name}) is not ready in instance {instance.id}")
            self.runtime.complete_user_task(workflow, task_id, data)
            records = [StepRecord("task_completed", task_id, item.bpmn_id, {"name": item.name, "data": data})]
            self._advance_and_save(session, instance, bundle, workflow, records, user,
                                   completed={task_id: user})
            return self._instance_view(session, instance)

    # -- events ----------------------------------------------------------------------------
    def correlate(self, message_name: str, correlation: dict[str, Any] | None = None,
                  data: dict[str, Any] | None = None, user: str | None = None) -> Instance:
        """Deliver a message to the one instance waiting for it with matching correlation keys.

        The key ``business_key`` matches the instance's business key; the other keys match the
        variables the catching event declares in ``correlationKeys``. With no waiting instance,
        a process whose start event catches this message is started. Zero or several matches
        raise a clear error and change nothing.
        """
        correlation = dict(correlation or {})
        data = _require_object(data, "message data")
        business_key = correlation.pop("business_key", None)
        described = ", ".join(f"{k}={v}" for k, v in sorted({**correlation, **(
            {"business_key": business_key} if business_key else {})}.items())) or "no keys"
        with self._command() as session:
            query = (select(SubscriptionRow).join(InstanceRow)
                     .where(SubscriptionRow.message_name == message_name,
                            SubscriptionRow.correlation == correlation_string(correlation),
                            InstanceRow.status == "running"))
            if business_key is not None:
                query = query.where(InstanceRow.business_key == str(business_key))
            matches = list(session.scalars(query))
            instance_ids = sorted({m.instance_id for m in matches})
            if len(instance_ids) > 1:
                raise Conflict(f"message '{message_name}' ({described}) matches {len(instance_ids)} instances: "
                               f"{', '.join(instance_ids[:5])}; give more correlation keys")
            if not instance_ids:
                start = self._message_start_definition(session, message_name)
                if start is None:
                    raise NotFound(f"no instance waits for message '{message_name}' ({described}) "
                                   "and no deployed process starts with it")
                record = StepRecord("message_received", data={"message": message_name,
                                                              "correlation": correlation, "data": data})
                return self._start(session, start, {**correlation, **data}, business_key, user, [record],
                                   message=message_name)
            match = matches[0]
            instance = self._lock_instance(session, match.instance_id)
            bundle = self._bundle(session, instance.definition_id)
            workflow = self.runtime.load(bundle, instance.state_json)
            self.runtime.deliver_message(workflow, match.id, message_name, data)
            records = [StepRecord("message_received", match.id, match.bpmn_id,
                                  {"message": message_name, "correlation": correlation, "data": data})]
            self._advance_and_save(session, instance, bundle, workflow, records, user)
            return self._instance_view(session, instance)

    def _message_start_definition(self, session: Session, message_name: str) -> DefinitionRow | None:
        latest = (select(DefinitionRow.key, func.max(DefinitionRow.version).label("version"))
                  .group_by(DefinitionRow.key).subquery())
        rows = session.scalars(select(DefinitionRow).join(
            latest, (DefinitionRow.key == latest.c.key) & (DefinitionRow.version == latest.c.version)))
        for row in rows:
            for info in row.meta.values():
                if info.get("type") == "startEvent" and info.get("message") == message_name:
                    return row
        return None

    def run_due(self, now: datetime | None = None, limit: int = 1000) -> int:
        """Fire every timer due at ``now`` (default: the clock), one transaction per instance.

        Returns the number of timers fired. Each firing is recorded with how late it was.
        """
        if now is not None:
            require_aware(now, "run_due(now)")
        self.clock.override = now
        try:
            threshold = self.clock.now()
            with self.store.read() as session:
                due = session.execute(select(TimerRow.instance_id, func.min(TimerRow.due_at).label("first"))
                                      .where(TimerRow.due_at <= threshold).group_by(TimerRow.instance_id)
                                      .order_by("first").limit(limit)).all()
            fired = 0
            for instance_id, _ in due:
                fired += self._fire_timers(instance_id, threshold)
            return fired
        finally:
            self.clock.override = None

    def _fire_timers(self, instance_id: str, now: datetime) -> int:
        with self._command() as session:
            instance = self._lock_instance(session, instance_id)
            if instance.status != "running":
                return 0
            bundle = self._bundle(session, instance.definition_id)
            workflow = self.runtime.load(bundle, instance.state_json)
            due = {t.task_id: t for t in self.runtime.waiting_timers(workflow) if t.due_at <= now}
            if not due:
                return 0
            self.runtime.fire_due_timers(workflow)
            records = [StepRecord("timer_fired", t.task_id, t.bpmn_id,
                                  {"due_at": t.due_at.isoformat(),
                                   "late_seconds": round((now - t.due_at).total_seconds(), 3)})
                       for t in sorted(due.values(), key=lambda t: t.due_at)]
            fired = len(records)
            self._advance_and_save(session, instance, bundle, workflow, records, None)
            return fired

    # -- persistence of one step -------------------------------------------------------------
    def _advance_and_save(self, session: Session, instance: InstanceRow, bundle: SpecBundle, workflow,
                          records: list[StepRecord], user: str | None,
                          completed: dict[str, str | None] | None = None) -> None:
        now = self.clock.now()
        try:
            self.runtime.advance(workflow, bundle, instance.id, instance.business_key, records)
            instance.status, instance.error = self.runtime.status(workflow), None
        except StepFailed as failure:
            instance.status, instance.error = "error", str(failure)
            session.add(IncidentRow(instance_id=instance.id, task_id=failure.task_id, bpmn_id=failure.bpmn_id,
                                    message=str(failure), created_at=now))
            records.append(StepRecord("instance_error", failure.task_id, failure.bpmn_id,
                                      {"message": str(failure)}))
        outgoing = self.runtime.thrown_messages(workflow)
        for name, payload in outgoing:
            records.append(StepRecord("message_sent", data={"message": name, "data": payload}))
        if instance.status == "completed":
            instance.ended_at = now
            records.append(StepRecord("instance_completed"))
        instance.state_json = self.runtime.dump(workflow)
        variables = self.runtime.variables(workflow)
        instance.variables = _json_safe(self.runtime.serializer.convert_data(variables))
        session.flush()
        self._project_work_items(session, instance, bundle, workflow, now, completed or {}, variables)
        session.execute(delete(TimerRow).where(TimerRow.instance_id == instance.id))
        for timer in self.runtime.waiting_timers(workflow):
            session.add(TimerRow(id=timer.task_id, instance_id=instance.id, bpmn_id=timer.bpmn_id,
                                 due_at=timer.due_at))
        session.execute(delete(SubscriptionRow).where(SubscriptionRow.instance_id == instance.id))
        for subscription in self.runtime.subscriptions(workflow, bundle):
            session.add(SubscriptionRow(id=subscription.task_id, instance_id=instance.id,
                                        bpmn_id=subscription.bpmn_id, message_name=subscription.message_name,
                                        correlation=subscription.correlation))
        for record in records:
            actor = user if record.type in ("instance_started", "task_completed", "message_received") else None
            session.add(EventRow(instance_id=instance.id, at=now, type=record.type, actor=actor,
                                 task_id=record.task_id, bpmn_id=record.bpmn_id,
                                 data=_json_safe(self.runtime.serializer.convert_data(record.data))))
        try:
            session.flush()
        except StaleDataError:
            raise Conflict(f"instance {instance.id} was changed by another command; try again") from None
        for name, payload in outgoing:
            self._route_thrown_message(session, instance, name, payload)

    def _route_thrown_message(self, session: Session, source: InstanceRow, name: str, payload: Any) -> None:
        """Deliver a message thrown by one instance, in the same transaction.

        A waiting catch whose correlation keys all equal the payload's values gets it; otherwise a
        process whose start event catches it is started with the payload as its variables.
        Undeliverable or ambiguous messages are recorded on the source instance.
        """
        data = payload if isinstance(payload, dict) else {"payload": payload}
        candidates = session.scalars(select(SubscriptionRow).join(InstanceRow).where(
            SubscriptionRow.message_name == name, InstanceRow.status == "running",
            SubscriptionRow.instance_id != source.id)).all()
        matches = [c for c in candidates if _correlation_matches(c.correlation, data)]
        now = self.clock.now()
        if len({m.instance_id for m in matches}) > 1:
            session.add(EventRow(instance_id=source.id, at=now, type="message_undelivered",
                                 data={"message": name, "reason": f"matches {len(matches)} instances"}))
            return
        if matches:
            match = matches[0]
            target = self._lock_instance(session, match.instance_id)
            bundle = self._bundle(session, target.definition_id)
            workflow = self.runtime.load(bundle, target.state_json)
            self.runtime.deliver_message(workflow, match.id, name, data)
            records = [StepRecord("message_received", match.id, match.bpmn_id,
                                  {"message": name, "from_instance": source.id})]
            self._advance_and_save(session, target, bundle, workflow, records, None)
            return
        start = self._message_start_definition(session, name)
        if start is None:
            session.add(EventRow(instance_id=source.id, at=now, type="message_undelivered",
                                 data={"message": name, "reason": "no waiting instance and no process starts with it"}))
            return
        business_key = data.get("workOrderNo") or data.get("applicationNo")
        record = StepRecord("message_received", data={"message": name, "from_instance": source.id})
        self._start(session, start, data, str(business_key) if business_key else None, None, [record],
                    message=name)

    def _project_work_items(self, session, instance, bundle, workflow, now, completed, variables) -> None:
        open_rows = {row.id: row for row in session.scalars(
            select(WorkItemRow).where(WorkItemRow.instance_id == instance.id, WorkItemRow.state == "open"))}
        ready = {str(task.id): task for task in self.runtime.ready_user_tasks(workflow)}
        for task_id, row in open_rows.items():
            if task_id in ready:
                continue
            if task_id in completed:
                row.state, row.completed_by, row.completed_at = "completed", completed[task_id], now
            else:
                row.state, row.completed_at = "cancelled", now
            session.execute(delete(WorkItemGroupRow).where(WorkItemGroupRow.work_item_id == task_id))
        groups_of: dict[str, list[str]] = {}
        for task_id, task in ready.items():
            if task_id in open_rows:
                continue
            info = bundle.info(task)
            groups = list(info.get("candidate_groups") or [])
            row = WorkItemRow(id=task_id, instance_id=instance.id, definition_key=bundle.key,
                              bpmn_id=task.task_spec.bpmn_id, name=info.get("name") or task.task_spec.bpmn_id,
                              lane=info.get("lane"), candidate_groups=groups,
                              assignee=self._evaluate_text(info.get("assignee"), task.data, "camunda:assignee"),
                              form_key=info.get("form_key"), due_at=self._due(info.get("due_date"), task.data),
                              state="open", created_at=now)
            session.add(row)
            groups_of[task_id] = groups
        session.flush()
        for task_id, groups in groups_of.items():
            for group in groups:
                session.add(WorkItemGroupRow(work_item_id=task_id, group_name=group))

    def _evaluate_text(self, text: str | None, data: dict[str, Any], what: str) -> str | None:
        if not text:
            return None
        if not text.strip().startswith(("${", "#{")):
            return text
        try:
            value = self.runtime.script_engine.evaluator.evaluate(text, data)
        except ExpressionError:
            return None
        return None if value is None else str(value)

    def _due(self, text: str | None, data: dict[str, Any]) -> datetime | None:
        if not text:
            return None
        value: Any = text
        if text.strip().startswith(("${", "#{")):
            try:
                value = self.runtime.script_engine.evaluator.evaluate(text, data)
            except ExpressionError:
                return None
        if isinstance(value, datetime):
            return value if value.tzinfo else None
        if isinstance(value, str):
            value = value.strip()
            if value.startswith("P"):
                from .bpmn import _duration_after
                try:
                    return _duration_after(value, self.clock.now(), "camunda:dueDate")
                except ExpressionError:
                    return None
            try:
                parsed = datetime.fromisoformat(value)
            except ValueError:
                return None
            return parsed if parsed.tzinfo else None
        return None

    # -- helpers -----------------------------------------------------------------------------
    def _command(self):
        return _Command(self.store)

    def _lock_instance(self, session: Session, instance_id: str) -> InstanceRow:
        query = self.store.lock_for_update(select(InstanceRow).where(InstanceRow.id == instance_id))
        row = session.scalars(query.execution_options(populate_existing=True)).first()
        if row is None:
            raise NotFound(f"no instance '{instance_id}'")
        return row

    @staticmethod
    def _get_instance(session: Session, instance_id: str) -> InstanceRow:
        row = session.get(InstanceRow, instance_id)
        if row is None:
            raise NotFound(f"no instance '{instance_id}'")
        return row

    def _get_work_item(self, session: Session, task_id: str, lock: bool = False) -> WorkItemRow:
        query = select(WorkItemRow).where(WorkItemRow.id == task_id)
        if lock:
            query = self.store.lock_for_update(query)
        row = session.scalars(query).first()
        if row is None:
            raise NotFound(f"no task '{task_id}'")
        return row

    def _instance_view(self, session: Session, row: InstanceRow) -> Instance:
        definition = session.get(DefinitionRow, row.definition_id)
        ready = [_work_item(r, row.business_key) for r in session.scalars(
            select(WorkItemRow).where(WorkItemRow.instance_id == row.id, WorkItemRow.state == "open")
            .order_by(WorkItemRow.created_at))]
        timers = [TimerInfo(t.id, t.bpmn_id, t.due_at) for t in session.scalars(
            select(TimerRow).where(TimerRow.instance_id == row.id).order_by(TimerRow.due_at))]
        variables = self.runtime.serializer.restore_data(row.variables or {})
        return Instance(row.id, definition.key, definition.version, row.business_key, row.status, variables,
                        ready, timers, row.error, row.started_at, row.ended_at)


class _Command:
    """A write transaction that turns database-level failures into one-line engine errors."""

    def __init__(self, store: Store):
        self.store = store
        self._context = None

    def __enter__(self) -> Session:
        self._context = self.store.write()
        try:
            return self._context.__enter__()
        except OperationalError as exc:
            raise GridflowError(f"database {self.store.url} unavailable: {_db_message(exc)}") from None

    def __exit__(self, exc_type, exc, tb):
        try:
            return self._context.__exit__(exc_type, exc, tb)
        except StaleDataError:
            raise Conflict("the instance was changed by another command at the same time; try again") from None
        except OperationalError as error:
            raise GridflowError(f"database error: {_db_message(error)}") from None


def _dependency_order(batch: dict[str, ProcessSource]) -> list[ProcessSource]:
    ordered: list[ProcessSource] = []
    state: dict[str, str] = {}

    def visit(key: str, chain: tuple[str, ...]) -> None:
        if state.get(key) == "done" or key not in batch:
            return
        if state.get(key) == "visiting":
            raise DefinitionError(f"call activities form a cycle: {' -> '.join(chain + (key,))}")
        state[key] = "visiting"
        for called in sorted(batch[key].calls):
            visit(called, chain + (key,))
        state[key] = "done"
        ordered.append(batch[key])

    for key in batch:
        visit(key, ())
    return ordered


def _correlation_matches(correlation: str, data: dict[str, Any]) -> bool:
    if not correlation:
        return True
    for pair in correlation.split("&"):
        key, _, value = pair.partition("=")
        if str(data.get(key)) != value:
            return False
    return True


def _definition(row: DefinitionRow) -> Definition:
    return Definition(row.id, row.key, row.version, row.content_hash, row.name, row.deployed_at, row.deployed_by)


def _work_item(row: WorkItemRow, business_key: str | None) -> WorkItem:
    return WorkItem(row.id, row.instance_id, row.bpmn_id, row.name, row.lane, list(row.candidate_groups or []),
                    row.assignee, row.form_key, row.due_at, row.definition_key, row.state, row.created_at,
                    business_key, row.completed_by, row.completed_at)


def _require_object(data: Any, what: str) -> dict[str, Any]:
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise InvalidInput(f"{what} must be a JSON object, got {type(data).__name__}")
    return data


def _json_safe(value: Any) -> Any:
    """Round-trip through JSON so that only JSON types reach a JSON column."""
    return json.loads(json.dumps(value, default=str))


def _db_message(exc: Exception) -> str:
    original = getattr(exc, "orig", None) or exc
    return str(original).splitlines()[0]


def to_jsonable(value: Any) -> Any:
    """Dataclasses, datetimes, Decimals → JSON types (for ``--json`` output)."""
    if hasattr(value, "__dataclass_fields__"):
        return to_jsonable(asdict(value))
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)
