"""``Engine``: the one facade used by the CLI, the demo, the tests and integrators.

Every public method is one command and one database transaction: it either commits all of
its effects (instance state, work items, timers, subscriptions, history) or none of them.
Every "now" comes from the injected clock.
"""

from __future__ import annotations

import copy
import functools
import json
import os
import uuid
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from sqlalchemy import bindparam, delete, func, insert, or_, select, text, update
from sqlalchemy.exc import DataError, IntegrityError, OperationalError

from . import identity, worklist
from .clock import Clock, SystemClock, require_aware
from .db import EditableRows, Store, new_row
from .errors import Conflict, DefinitionError, ExpressionError, GridflowError, InvalidInput, NotAllowed, NotFound
from .forms import FormRegistry
from .identity import Refused, User

if TYPE_CHECKING:  # SpiffWorkflow, lxml and handler modules are imported where first needed: fast start-up
    from sqlalchemy.engine import Connection
    from sqlalchemy.orm import Session

    from handlers.registry import HandlerSpec

    from .definitions import ProcessSource
    from .runtime import Runtime, SpecBundle, StepRecord
    from .store import DefinitionRow, InstanceRow, WorkItemRow


class _Models:
    """The ORM models of :mod:`engine.store`, imported on first use.

    Importing the ORM takes a tenth of a second; ``gridflow tasks`` (Core queries on
    :mod:`engine.tables`) and the acting-user check never need it.
    """

    def __getattr__(self, name: str) -> Any:
        from . import store

        value = getattr(store, name)
        setattr(self, name, value)  # later lookups are plain attribute reads
        return value


models = _Models()
DEFAULT_URL = "sqlite:///gridflow.db"
SPEC_CACHE_SIZE = 64
# history events whose actor is the user of the command that caused them
_ACTOR_EVENTS = frozenset({"instance_started", "task_completed", "message_received", "signal_received",
                           "incident_retried", "incident_resolved", "instance_cancelled"})


@functools.cache
def _without_state() -> tuple:
    """Loader option: an instance row without its workflow state (57–93 KB a complaint case), which the
    views never need; loaded if touched. Built on first use (the ORM is imported lazily)."""
    from sqlalchemy.orm import defer

    return (defer(models.InstanceRow.state_json),)


def _ignore(_action: str, **_fields: Any) -> None:
    """The default ``report`` callback of worker-side methods (the worker passes its logger)."""


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
    incidents: list[Any] = field(default_factory=list)  # open engine.jobs.Incident: failed steps and jobs


@dataclass(frozen=True)
class TaskView:
    """``Engine.task_view``: a work item, its form's JSON Schema (None without one) and the variables its
    operator sees: the case variables, with an open task's own over them (inside a multi-instance body, the
    element — which meter, which customer — and the body's local variables)."""

    task: WorkItem
    form_schema: dict[str, Any] | None
    variables: dict[str, Any]
    instance_status: str


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
                 auto_migrate: bool = True, identities: bool | None = None):
        """``identities``: ``True`` checks every named acting user (the CLI), ``False`` never does,
        ``None`` (default) checks them once the database has users (``gridflow db init``). A call
        with ``user=None`` is a system call and is never checked."""
        self.clock = _EngineClock(clock or SystemClock())
        self.store = Store(url)
        self._handlers = handlers
        self._searchable: dict[str, tuple[str, ...]] | None = None
        self._searched_by_index: set[tuple[str, str]] = set()  # (process, variable) pairs whose index is built
        self._runtime: Runtime | None = None
        self.identities = identities
        self._lock_queries: dict[bool, Any] = {}  # skip_locked -> the instance row lock statement of this store
        self.forms = forms or FormRegistry()
        self._specs: OrderedDict[int, SpecBundle] = OrderedDict()
        if auto_migrate:
            self._ensure_schema()

    @property
    def handlers(self) -> dict[str, HandlerSpec]:
        if self._handlers is None:
            from handlers.registry import load_handlers

            self._handlers = load_handlers()
        return self._handlers

    @property
    def searchable(self) -> dict[str, tuple[str, ...]]:
        """Process key -> the variables handlers look cases up by (``handlers.searchable``)."""
        if self._searchable is None:
            from handlers.registry import searchable_variables  # loads the handler modules, which declare them

            self._searchable = searchable_variables()
        return self._searchable

    @property
    def runtime(self) -> Runtime:
        """The SpiffWorkflow adapter, created (and SpiffWorkflow imported) on first use."""
        if self._runtime is None:
            from .runtime import Runtime

            self._runtime = Runtime(self.clock, self.handlers)
        return self._runtime

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
        """Check files as deploy would on this database; returns the Inspection (issues, processes).

        Writes nothing and needs no current schema: the deployed process keys (which call activities
        may name) are read when the database exists; a SQLite file that does not exist is neither
        created nor required (linted as for a fresh database)."""
        from .definitions import inspect_files

        deployed: set[str] = set()
        try:
            if not self.store.is_missing() and self.store.has_tables():
                with self.store.read() as session:
                    deployed = set(session.scalars(select(models.DefinitionRow.key).distinct()))
        except OperationalError as exc:
            raise GridflowError(f"cannot open database {self.store.url}: {_db_message(exc)}") from None
        return inspect_files(list(paths), known_topics=set(self.handlers), external_processes=deployed,
                             form_exists=self.forms.exists)

    def deploy(self, paths: Iterable[str | Path], user: str | None = None) -> list[Definition]:
        """Deploy BPMN files atomically: all processes of all files, or none.

        Identical content returns the existing version; changed content gets version + 1.
        Raises DefinitionError listing every problem (file, line, element id). With identities,
        ``user`` must be in the ``admin`` group.
        """
        self._checked(user, "deploy")
        inspection = self.lint(paths)
        if inspection.errors:
            first = inspection.errors[0]
            more = (f" (+{len(inspection.errors) - 1} more; 'gridflow lint' lists them)"
                    if len(inspection.errors) > 1 else "")
            raise DefinitionError(f"{first}{more}", inspection.issues)
        now = self.clock.now()
        result: list[Definition] = []
        with self._command() as session:
            self.store.serialize_deploys(session)
            batch = {p.key: p for p in inspection.processes}
            rows: dict[str, DefinitionRow] = {}
            for source in _dependency_order(batch):
                calls: dict[str, int] = {}
                hashes: dict[str, str] = {}
                for called in sorted(source.calls):
                    row = rows.get(called) or self._latest(session, called)
                    calls[called], hashes[called] = row.id, row.content_hash
                content_hash = source.content_hash(hashes)
                row = session.scalars(select(models.DefinitionRow)
                                      .where(models.DefinitionRow.content_hash == content_hash)).first()
                if row is None:
                    latest = session.scalar(select(func.max(models.DefinitionRow.version)).where(
                        models.DefinitionRow.key == source.key)) or 0
                    row = models.DefinitionRow(key=source.key, version=latest + 1, name=source.name,
                                               content_hash=content_hash, filename=Path(source.file).name,
                                               xml=source.xml, calls=calls, meta=source.meta, deployed_at=now,
                                               deployed_by=user)
                    session.add(row)
                    session.flush()
                    session.add(models.EventRow(instance_id=None, at=now, type="definition_deployed", actor=user,
                                                data={"key": row.key, "version": row.version, "hash": content_hash}))
                rows[source.key] = row
                result.append(_definition(row))
            from . import schedules, search_keys

            schedules.sync(self, session, now)  # timer start events of the latest versions
            search_keys.build(session.connection(), self.searchable, now)  # declared since the last deploy
        return result

    def definitions(self) -> list[Definition]:
        """Every deployed version, newest first per key."""
        with self.store.read() as session:
            rows = session.scalars(select(models.DefinitionRow)
                                   .order_by(models.DefinitionRow.key, models.DefinitionRow.version.desc()))
            return [_definition(r) for r in rows]

    def _latest(self, session: Session, key: str) -> DefinitionRow:
        row = session.scalars(select(models.DefinitionRow).where(models.DefinitionRow.key == key)
                              .order_by(models.DefinitionRow.version.desc()).limit(1)).first()
        if row is None:
            known = ", ".join(session.scalars(select(models.DefinitionRow.key).distinct())) or "none"
            raise NotFound(f"no process '{key}' is deployed (deployed: {known})")
        return row

    def _bundle(self, session: Session, definition_id: int) -> SpecBundle:
        bundle = self._specs.get(definition_id)
        if bundle is not None:
            self._specs.move_to_end(definition_id)
            return bundle
        rows: dict[str, DefinitionRow] = {}
        pending = [session.get(models.DefinitionRow, definition_id)]
        while pending:
            row = pending.pop()
            if row.key in rows:
                continue
            rows[row.key] = row
            pending.extend(session.get(models.DefinitionRow, i) for i in row.calls.values())
        from .bpmn import GridflowParser
        from .definitions import parse_xml
        from .runtime import SpecBundle

        parser = GridflowParser()
        seen: set[bytes] = set()
        for row in rows.values():
            if row.xml not in seen:
                seen.add(row.xml)
                parser.add_bpmn_xml(parse_xml(row.xml, row.filename), row.filename)
        top = session.get(models.DefinitionRow, definition_id)
        bundle = SpecBundle(definition_id, top.key, top.version, top.content_hash, parser.get_spec(top.key),
                            parser.get_subprocess_specs(top.key), {k: r.meta for k, r in rows.items()})
        self._specs[definition_id] = bundle
        if len(self._specs) > SPEC_CACHE_SIZE:
            self._specs.popitem(last=False)
        return bundle

    # -- instances -------------------------------------------------------------------------
    def start(self, key: str, data: dict[str, Any] | None = None, business_key: str | None = None,
              user: str | None = None) -> Instance:
        """Start the latest version of ``key`` and run it to its first waits (one transaction).

        A process whose only start event is a message start event starts through it, with ``data`` as
        the message's data (as ``correlate`` would start it). One with no plain (or timer) start event
        that a signal or several messages start is refused (InvalidInput naming them): the caller sends
        the one meant, with ``correlate`` or ``signal``.
        """
        data = _require_object(data, "start data")
        with self._command() as session:
            self._acting(session, user, "start")
            row = self._latest(session, key)
            return self._start(session, row, data, business_key, user, [], message=_start_message(row))

    def _start(self, session, row: DefinitionRow, data, business_key, user, extra: list[StepRecord],
               message: str | None = None, prepare=None) -> Instance:
        from . import waits
        from .runtime import StepRecord

        bundle = self._bundle(session, row.id)
        now = self.clock.now()
        if business_key is None:  # the case number, when the start data carries one
            business_key = next((str(data[k]) for k in ("workOrderNo", "applicationNo") if data.get(k)), None)
        if business_key is not None and len(str(business_key)) > 200:
            raise InvalidInput(f"business key is {len(str(business_key))} characters long; at most 200 are allowed")
        instance = models.InstanceRow(id=str(uuid.uuid4()), definition_id=row.id, business_key=business_key,
                                      status="starting", state_json="", variables={}, started_at=now, started_by=user)
        session.add(instance)
        session.flush()
        workflow = self.runtime.create(bundle, data)
        waits.remember(workflow, waits.NOTHING)  # a new instance has no wait rows yet
        if message is not None:
            self.runtime.start_by_message(workflow, message, data)
        if prepare is not None:  # e.g. fire a timer start event (engine.schedules)
            prepare(workflow)
        records = [StepRecord("instance_started", data={"key": row.key, "version": row.version,
                                                         "business_key": business_key,
                                                         "variables": data}), *extra]
        saved = self._advance_and_save(session, instance, bundle, workflow, records, user)
        return self._instance_view(session, instance, saved)

    def instance(self, instance_id: str) -> Instance:
        """Status, variables, ready tasks and waiting timers of one instance (read-only)."""
        with self.store.read() as session:
            return self._instance_view(session, self._get_instance(session, instance_id))

    def instances(self, key: str | None = None, status: str | None = None, limit: int = 100) -> list[Instance]:
        """Cases of process ``key`` (all processes by default) with ``status``, newest first (read-only)."""
        with self.store.read() as session:
            query = (select(models.InstanceRow).options(*_without_state())
                     .order_by(models.InstanceRow.started_at.desc()).limit(limit))
            if key:
                query = query.join(models.DefinitionRow).where(models.DefinitionRow.key == key)
            if status:
                query = query.where(models.InstanceRow.status == status)
            return [self._instance_view(session, row) for row in session.scalars(query)]

    def cancel(self, instance_id: str, reason: str, user: str | None = None) -> Instance:
        """Cancel a running or failed case (a duplicate registration, a case opened by mistake).

        One transaction: every open task of the case is cancelled in its workflow, its work items close
        as ``cancelled``, its timers, jobs and message or signal waits are removed, its SLA clocks close
        at this instant, its open incidents are resolved as ``cancelled``, and the case ends with status
        ``cancelled`` and the history event ``instance_cancelled`` (reason, acting user). The stored
        state keeps where the case stopped. With identities, ``user`` must be an admin or a supervisor.
        Raises InvalidInput without a reason, Conflict for a case that has already ended.
        """
        with self._command() as session:
            self._acting(session, user, "cancel")
            reason = (reason or "").strip()
            if not reason:
                raise InvalidInput("cancelling a case needs a reason (--reason)")
            if len(reason) > 500:
                raise InvalidInput(f"the reason is {len(reason)} characters long; at most 500 are allowed")
            instance = self._lock_instance(session, instance_id)
            if instance.status not in ("running", "error"):
                raise Conflict(f"instance {instance.id} is {instance.status}; only a running or failed case "
                               "can be cancelled")
            now = self.clock.now()
            session.execute(update(models.IncidentRow).where(models.IncidentRow.instance_id == instance.id,
                                                             models.IncidentRow.resolved_at.is_(None))
                            .values(resolved_at=now, resolved_by=user, resolution="cancelled"))
            bundle = self._bundle(session, instance.definition_id)
            workflow = self.runtime.load(bundle, instance.state_json)
            saved = self._advance_and_save(session, instance, bundle, workflow, [], user, cancel_reason=reason)
            return self._instance_view(session, instance, saved)

    def history(self, instance_id: str) -> list[HistoryEvent]:
        """The append-only events of one instance, oldest first."""
        with self.store.read() as session:
            self._get_instance(session, instance_id)
            rows = session.scalars(select(models.EventRow).where(models.EventRow.instance_id == instance_id)
                                   .order_by(models.EventRow.id))
            restore = self.runtime.serializer.restore_data
            return [HistoryEvent(r.id, r.instance_id, r.at, r.type, r.actor, r.task_id, r.bpmn_id,
                                 restore(r.data or {})) for r in rows]

    # -- work items ------------------------------------------------------------------------
    def tasks(self, instance_id: str | None = None, group: str | None = None, user: str | None = None,
              include_closed: bool = False, limit: int | None = None, *, for_user: str | None = None,
              overdue: bool = False, flow: str | None = None) -> list[WorkItem]:
        """Open work items, earliest due first (a query on the work-item tables; no instance is loaded).

        ``group``: offered to this candidate group. ``user``: assigned to this user. ``for_user``:
        that user's queue, i.e. tasks assigned to them and unclaimed tasks offered to one of their
        groups (members of ``supervisor``/``dutySupervisor`` also see those someone else holds);
        with identities the user must exist. ``overdue``: due before now. ``flow``: process key.
        """
        return [_queue_item(row) for row in self._queue(
            instance_id=instance_id, group=group, user=user, include_closed=include_closed, limit=limit,
            for_user=for_user, overdue=overdue, flow=flow)]

    def queue_rows(self, instance_id: str | None = None, group: str | None = None, user: str | None = None,
                   limit: int | None = None, *, for_user: str | None = None, overdue: bool = False,
                   flow: str | None = None, batch: int = 500) -> Iterator[list[dict[str, Any]]]:
        """The rows of :meth:`tasks` (same arguments) as JSON-ready dicts, ``batch`` at a time: each
        WorkItem's fields plus ``age_seconds``, ``due_in_seconds`` and ``sla`` (ok, at_risk, overdue,
        or None without a due time) at the engine clock's now, taken once after the query.

        The query runs before the first batch is yielded; the dicts are built batch by batch, so a
        caller writing them out never holds all of a ten-thousand-row queue's dicts at once.
        """
        rows = self._queue(instance_id=instance_id, group=group, user=user, limit=limit, for_user=for_user,
                           overdue=overdue, flow=flow)
        now = self.clock.now()
        return (worklist.json_rows(rows[start:start + batch], now) for start in range(0, len(rows), batch))

    def _queue(self, *, instance_id: str | None, group: str | None, user: str | None, limit: int | None,
               for_user: str | None, overdue: bool, flow: str | None, include_closed: bool = False) -> list:
        """The queue's rows: values of ``worklist.WORK_ITEM_COLUMNS`` (Core rows: no ORM identity map)."""
        viewer: User | None = None
        if for_user is not None:
            viewer = self._checked(for_user, "tasks")
            if viewer is None:  # identities off: use the directory when it knows the user
                with self.store.connect() as connection:
                    viewer = identity.load_user(connection, for_user) or User(for_user, [])
        query = worklist.queue_query(
            instance_id=instance_id, group=group, assignee=user, include_closed=include_closed,
            viewer_name=viewer.name if viewer else None, viewer_groups=viewer.groups if viewer else None,
            see_claimed=bool(viewer and viewer.is_supervisor),
            overdue_at=self.clock.now() if overdue else None, flow=flow, limit=limit)
        with self.store.connect() as connection:
            return connection.execute(query).fetchall()

    def task(self, task_id: str) -> WorkItem:
        with self.store.read() as session:
            row = self._get_work_item(session, task_id)
            return _work_item(row)

    def form_schema(self, task_id: str) -> dict[str, Any] | None:
        return self.forms.schema(self.task(task_id).form_key)

    def claim(self, task_id: str, user: str) -> WorkItem:
        """Assign an open task to ``user`` (the acting user); claiming one's own task again is a no-op.

        Refused when someone else holds it and, with identities, when the task is not offered to
        one of the user's groups.
        """
        with self._command() as session:
            row = self._get_work_item(session, task_id, lock=True)
            acting = self._acting(session, user, "claim", row)
            if row.state != "open":
                raise NotAllowed(f"task {task_id} is {row.state}; only open tasks can be claimed")
            if row.assignee and row.assignee != user:
                raise Refused(f"task {task_id} ({row.name}) is already claimed by {row.assignee}; a supervisor "
                              f"can reassign it with 'gridflow reassign {task_id[:8]} --to {user}'", action="claim",
                              actor=user, instance_id=row.instance_id, task_id=row.id, bpmn_id=row.bpmn_id)
            if acting is not None:
                identity.check_task(acting, identity.TaskRef.of(row), "claim")
            if row.assignee != user:
                now = self.clock.now()
                row.assignee, row.claimed_by, row.claimed_at = user, user, now
                session.add(models.EventRow(instance_id=row.instance_id, at=now, type="task_claimed", actor=user,
                                            task_id=row.id, bpmn_id=row.bpmn_id, data={}))
            return _work_item(row)

    def unclaim(self, task_id: str, user: str | None) -> WorkItem:
        """Give a claimed task back to its candidate groups: by its assignee, or (identities) a supervisor."""
        with self._command() as session:
            row = self._get_work_item(session, task_id, lock=True)
            acting = self._acting(session, user, "unclaim", row)
            if row.state != "open":
                raise NotAllowed(f"task {task_id} is {row.state}; only open tasks can be unclaimed")
            if not row.assignee:
                raise NotAllowed(f"task {task_id} ({row.name}) is not claimed by anyone")
            if acting is not None:
                identity.check_unclaim(acting, identity.TaskRef.of(row))
            elif user is not None and row.assignee != user:
                raise Refused(f"task {task_id} ({row.name}) is assigned to {row.assignee}, not {user}",
                              action="unclaim", actor=user, instance_id=row.instance_id, task_id=row.id,
                              bpmn_id=row.bpmn_id)
            previous, now = row.assignee, self.clock.now()
            row.assignee, row.claimed_by, row.claimed_at = None, None, None
            session.add(models.EventRow(instance_id=row.instance_id, at=now, type="task_unclaimed", actor=user,
                                        task_id=row.id, bpmn_id=row.bpmn_id, data={"previous_assignee": previous}))
            return _work_item(row)

    def reassign(self, task_id: str, to: str, user: str | None) -> WorkItem:
        """Assign an open task to ``to``, whoever holds it; with identities, ``user`` must be a supervisor
        (``supervisor`` or ``dutySupervisor``) and ``to`` an existing user."""
        with self._command() as session:
            row = self._get_work_item(session, task_id, lock=True)
            acting = self._acting(session, user, "reassign", row)
            if row.state != "open":
                raise NotAllowed(f"task {task_id} is {row.state}; only open tasks can be reassigned")
            if acting is not None and identity.load_user(session, to) is None:
                raise NotFound(f"no user '{to}' (see 'gridflow user list')")
            previous, now = row.assignee, self.clock.now()
            row.assignee, row.claimed_by, row.claimed_at = to, user or to, now
            session.add(models.EventRow(instance_id=row.instance_id, at=now, type="task_reassigned", actor=user,
                                        task_id=row.id, bpmn_id=row.bpmn_id,
                                        data={"from": previous, "to": to}))
            return _work_item(row)

    def task_view(self, task_id: str) -> TaskView:
        """A task with what its operator needs: the form's JSON Schema and the variables it sees (``TaskView``)."""
        with self.store.read() as session:
            row = self._get_work_item(session, task_id)
            instance = session.get(models.InstanceRow, row.instance_id)
            variables = self.runtime.serializer.restore_data(instance.variables or {})
            if row.state == "open" and instance.status == "running":
                workflow = self.runtime.peek(self._bundle(session, instance.definition_id), instance.state_json)
                task = self.runtime.find_task(workflow, row.id)
                if task is not None:
                    variables.update(copy.deepcopy(dict(task.data)))
            return TaskView(_work_item(row), self.forms.schema(row.form_key), variables,
                            instance.status)

    def check_task_action(self, task_id: str, user: str | None, action: str = "complete") -> None:
        """Raise now the refusal ``claim``/``complete`` would give ``user`` (recorded), changing nothing:
        lets the CLI refuse before an operator spends time filling in a form."""
        try:
            with self.store.read() as session:
                row = self._get_work_item(session, task_id)
                acting = self._acting(session, user, action, row)
                if row.state != "open":
                    raise NotAllowed(f"task {task_id} ({row.name}) is {row.state}; only open tasks can be worked on")
                if acting is not None:
                    identity.check_task(acting, identity.TaskRef.of(row), action)
                elif user and row.assignee and row.assignee != user:
                    raise Refused(f"task {task_id} ({row.name}) is assigned to {row.assignee}, not {user}",
                                  action=action, actor=user, instance_id=row.instance_id, task_id=row.id,
                                  bpmn_id=row.bpmn_id)
        except Refused as refused:
            self._record_refusal(refused)
            raise

    # -- ids by unique prefix (like git) ------------------------------------------------------
    def resolve_task_id(self, prefix: str) -> str:
        """The full id of the one task whose id starts with ``prefix``; NotFound, or InvalidInput listing
        the candidates when several match."""
        with self.store.read() as session:
            return worklist.pick_one(prefix, worklist.task_candidates(session, prefix), "task")

    def resolve_instance_id(self, prefix: str) -> str:
        """The id of the one case whose id starts with ``prefix`` or whose case number is ``prefix``."""
        with self.store.read() as session:
            return worklist.pick_one(prefix, worklist.instance_candidates(session, prefix), "instance")

    def resolve_id(self, prefix: str) -> tuple[str, str]:
        """``("task", id)`` or ``("instance", id)`` for a prefix of either kind of id (or a case number)."""
        with self.store.read() as session:
            tasks = worklist.task_candidates(session, prefix)
            instances = worklist.instance_candidates(session, prefix)
        full = worklist.pick_one(prefix, tasks + instances, "task or instance")
        return ("task" if any(i == full for i, _ in tasks) else "instance"), full

    # -- identities --------------------------------------------------------------------------
    def init_db(self, admin: str, groups: Iterable[str] = (), display_name: str | None = None) -> User:
        """Create the first user, a member of ``admin`` (``gridflow db init``); refused when users exist."""
        with self._command() as session:
            if not self.store.is_sqlite:  # two concurrent inits must not both see an empty directory
                session.execute(text("LOCK TABLE app_user IN SHARE ROW EXCLUSIVE MODE"))
            count = session.scalar(select(func.count()).select_from(models.UserRow))
            if count:
                raise Refused(f"this database already has {count} user(s); db init only creates the first admin "
                              "(an admin adds users with 'gridflow user add')", action="db init", actor=admin)
            return identity.add_user(session, admin, {identity.ADMIN_GROUP, *groups}, display_name,
                                     self.clock.now(), actor=admin)

    def add_user(self, name: str, groups: Iterable[str] = (), display_name: str | None = None,
                 user: str | None = None) -> User:
        """Add a user with its groups (roles = the lanes' candidate groups); ``user`` must be an admin."""
        with self._command() as session:
            self._acting(session, user, "user")
            return identity.add_user(session, name, groups, display_name, self.clock.now(), actor=user)

    def change_user_groups(self, name: str, add: Iterable[str] = (), remove: Iterable[str] = (),
                           user: str | None = None) -> User:
        """Add and remove group memberships of ``name``; ``user`` must be an admin."""
        with self._command() as session:
            self._acting(session, user, "user")
            return identity.change_groups(session, name, add, remove, self.clock.now(), actor=user)

    def users(self) -> list[User]:
        with self.store.read() as session:
            return identity.list_users(session)

    def user(self, name: str) -> User:
        with self.store.read() as session:
            found = identity.load_user(session, name)
        if found is None:
            raise NotFound(f"no user '{name}'")
        return found

    def identities_active(self) -> bool:
        """Whether named acting users are checked: always (``identities=True``), never (``False``), or,
        by default, once the database has a user (setup mode before ``gridflow db init``)."""
        if self.identities is not None:
            return self.identities
        with self.store.connect() as connection:
            return identity.has_users(connection)

    def authorize(self, user: str | None, action: str) -> User | None:
        """Check that ``user`` may do ``action`` (known user; the groups ``engine.identity.ACTION_GROUPS``
        requires). Returns the user, or None when identities do not apply; a refusal is recorded.

        For task actions (claim, unclaim, complete, reassign) only the user is checked here: their
        rules need the task, and the command itself applies them (recorded on the case)."""
        return self._checked(user, action, groups=action not in identity.TASK_ACTIONS)

    def events(self, instance_id: str | None = None, type: str | None = None, actor: str | None = None,
               limit: int | None = 200, user: str | None = None) -> list[HistoryEvent]:
        """History across cases (deploys, user changes, refusals, …), oldest first; the newest ``limit``.

        With identities, ``user`` must be an admin or a supervisor.
        """
        self._checked(user, "audit")
        with self.store.read() as session:
            query = select(models.EventRow)
            if instance_id:
                query = query.where(models.EventRow.instance_id == instance_id)
            if type:
                query = query.where(models.EventRow.type == type)
            if actor:
                query = query.where(models.EventRow.actor == actor)
            rows = list(session.scalars(query.order_by(models.EventRow.id.desc()).limit(limit)))
            restore = self.runtime.serializer.restore_data
            return [HistoryEvent(r.id, r.instance_id, r.at, r.type, r.actor, r.task_id, r.bpmn_id,
                                 restore(r.data or {})) for r in reversed(rows)]

    def complete(self, task_id: str, data: dict[str, Any] | None = None, user: str | None = None) -> Instance:
        """Complete a READY user task with form data, then run the instance to its next waits.

        The data is validated against the task's form schema first; any refusal changes nothing.
        """
        from SpiffWorkflow.util.task import TaskState

        from .runtime import StepRecord

        data = _require_object(data, "form data")
        with self._command() as session:
            item = self._read_work_item(session, task_id)
            instance = self._lock_instance(session, item.instance_id)
            if not self.store.is_sqlite:  # read again under the instance lock (SQLite's BEGIN IMMEDIATE
                item = self._read_work_item(session, task_id)  # already serialized the first read)
            acting = self._acting(session, user, "complete", item)
            if item.state == "completed":
                raise Conflict(f"task {task_id} ({item.name}) was already completed by "
                               f"{item.completed_by or 'someone'} at {item.completed_at.isoformat()}")
            if item.state != "open":
                raise NotAllowed(f"task {task_id} ({item.name}) is {item.state}; it can no longer be completed")
            if acting is not None:
                identity.check_task(acting, identity.TaskRef.of(item), "complete")
            elif user and item.assignee and item.assignee != user:
                raise Refused(f"task {task_id} ({item.name}) is assigned to {item.assignee}, not {user}",
                              action="complete", actor=user, instance_id=item.instance_id, task_id=item.id,
                              bpmn_id=item.bpmn_id)
            if instance.status != "running":
                raise NotAllowed(f"instance {instance.id} is {instance.status}; its tasks cannot be completed")
            bundle = self._bundle(session, instance.definition_id)
            workflow = self.runtime.load(bundle, instance.state_json)
            task = self.runtime.find_task(workflow, task_id)
            if task is None or task.state != TaskState.READY:
                raise Conflict(f"task {task_id} ({item.name}) is not ready in instance {instance.id}")
            self.forms.validate(item.form_key, data, f"task {task_id} ({item.name})", variables=task.data)
            data = self.forms.without_read_only(item.form_key, data)
            from . import sla_clocks

            ledger = sla_clocks.ledger_update(self, bundle, task, item.created_at, self.clock.now())  # §9.2
            self.runtime.complete_user_task(workflow, task_id, {**data, **ledger})
            records = [StepRecord("task_completed", task_id, item.bpmn_id, {"name": item.name, "data": data})]
            saved = self._advance_and_save(session, instance, bundle, workflow, records, user,
                                           completed={task_id: user})
            return self._instance_view(session, instance, saved)

    # -- events ----------------------------------------------------------------------------
    def correlate(self, message_name: str, correlation: dict[str, Any] | None = None,
                  data: dict[str, Any] | None = None, user: str | None = None, ttl: str | None = None,
                  broadcast: bool = False):
        """Deliver a message to the one instance waiting for it with matching correlation keys.

        The key ``business_key`` matches the instance's business key; the other keys match the
        variables the catching event declares in ``correlationKeys``. With no waiting instance,
        a process whose start event catches this message is started. With neither, the message is
        buffered for ``ttl`` (ISO 8601 duration; default ``GRIDFLOW_MESSAGE_TTL`` or PT1H) and
        delivered when a matching catch starts waiting; ``ttl="PT0S"`` refuses instead. Several
        matches are an error unless ``broadcast`` (then every match gets it).

        Returns the Instance (a list of them with ``broadcast``), or the ``BufferedMessage``.
        One transaction; see ``engine.messages``.
        """
        from . import messages

        return messages.correlate(self, message_name, correlation, data, user, ttl, broadcast)

    def signal(self, name: str, data: dict[str, Any] | None = None, user: str | None = None) -> list[Instance]:
        """Broadcast a signal to every running instance with a waiting signal catch of that name, and start
        one instance of each latest process with a signal start event for it (``data``: its variables).
        Returns the instances reached, the started ones last."""
        from . import messages

        return messages.signal(self, name, data, user)

    def messages(self, state: str | None = None, name: str | None = None, limit: int = 100):
        """Buffered messages, newest first (``state``: pending, delivered, expired)."""
        from . import messages

        return messages.list_messages(self, state, name, limit)

    def deliver_buffered_messages(self, report=None) -> int:
        """Deliver buffered messages whose catch is waiting now (the worker's sweep)."""
        from . import messages

        return messages.deliver_pending(self, report or _ignore)

    def expire_messages(self, report=None) -> int:
        """Expire buffered messages past their time to live (history event ``message_expired``)."""
        from . import messages

        return messages.expire(self, report or _ignore)

    # -- jobs, incidents, SLA clocks, schedules (the worker side; see engine.worker) ---------------
    def run_jobs(self, worker_id: str, limit: int = 10, lock_ttl: float | None = None, report=None,
                 should_stop=None) -> int:
        """Acquire up to ``limit`` due async jobs, run their handlers outside any transaction, and
        complete or retry them; returns how many ran. See ``engine.jobs``."""
        from . import jobs

        return jobs.run_jobs(self, worker_id, limit, lock_ttl, report or _ignore, should_stop or (lambda: False))

    def jobs(self, instance_id: str | None = None):
        """Async jobs waiting, held or failed (``engine.jobs.Job``), next run first."""
        from . import jobs

        return jobs.list_jobs(self, instance_id)

    def incidents(self, instance_id: str | None = None, open_only: bool = True):
        """Incidents (``engine.jobs.Incident``): failed synchronous steps and async jobs out of retries."""
        from . import jobs

        return jobs.list_incidents(self, instance_id, open_only)

    def retry_incident(self, incident_id: int, user: str | None = None) -> Instance:
        """Re-arm the failed job, or run the failed synchronous step again (status back to running)."""
        from . import jobs

        return jobs.retry_incident(self, incident_id, user)

    def resolve_incident(self, incident_id: int, data: dict[str, Any] | None = None,
                         user: str | None = None) -> Instance:
        """Complete the failed task with ``data`` instead of running its handler, and continue."""
        from . import jobs

        return jobs.resolve_incident(self, incident_id, data, user)

    def sla_clocks(self, flow: str | None = None, group: str | None = None, severity: str | None = None,
                   state=None, instance_id: str | None = None, limit: int | None = None):
        """SLA clocks (``engine.sla_clocks.SlaClock``), earliest due first; open ones unless ``state``
        asks otherwise (on_track, at_risk, breached, paused, met, missed, cancelled, open, closed)."""
        from . import sla_clocks

        return sla_clocks.list_clocks(self, flow, group, severity, state, instance_id, limit)

    def scan_sla_clocks(self, report=None) -> int:
        """Record clocks newly at risk or breached (history ``sla_at_risk`` / ``sla_breached``)."""
        from . import sla_clocks

        return sla_clocks.scan(self, report or _ignore)

    def timer_schedules(self) -> list[dict[str, Any]]:
        """The timer start events of the latest deployed processes and when each fires next."""
        from . import schedules

        return schedules.list_schedules(self)

    def _message_start_definition(self, session: Session, message_name: str) -> DefinitionRow | None:
        """The latest definition whose process starts with message ``message_name`` (the first found)."""
        return next(iter(self._start_definitions(session, "message", message_name)), None)

    def _start_definitions(self, session: Session, kind: str, name: str) -> list[DefinitionRow]:
        """The latest version of each process that a start event of ``kind`` (message, signal) ``name`` starts."""
        definition = models.DefinitionRow
        latest = (select(definition.key, func.max(definition.version).label("version"))
                  .group_by(definition.key).subquery())
        candidates = session.execute(select(definition.id, definition.meta).join(
            latest, (definition.key == latest.c.key) & (definition.version == latest.c.version))
            .order_by(definition.key))  # the element metadata only: the BPMN text is loaded for a match
        return [session.get(definition, row.id) for row in candidates
                if any(info.get("process_start") and info.get(kind) == name for info in row.meta.values())]

    def run_due(self, now: datetime | None = None, limit: int = 1000, report=None, should_stop=None) -> int:
        """Fire every timer due at ``now`` (default: the clock), one transaction per instance, earliest
        first, then start instances for due timer start events (``engine.schedules``).

        Returns the number of timers fired (instances started included). Each firing is recorded
        with how late it was. An instance another transaction holds is left for the next call.
        """
        if now is not None:
            require_aware(now, "run_due(now)")
        self.clock.override = now
        try:
            threshold = self.clock.now()
            with self.store.read() as session:
                timer, case = models.TimerRow, models.InstanceRow
                due = session.execute(select(timer.instance_id, func.min(timer.due_at).label("first"))
                                      .join(case, case.id == timer.instance_id)
                                      .where(timer.due_at <= threshold, case.status == "running")
                                      .group_by(timer.instance_id).order_by("first").limit(limit)).all()
            fired = 0
            for instance_id, _ in due:
                if should_stop is not None and should_stop():
                    return fired
                fired += self._fire_timers(instance_id, threshold, report)
            from . import schedules

            fired += schedules.run_due(self, threshold, report or _ignore)
            return fired
        finally:
            self.clock.override = None

    def _fire_timers(self, instance_id: str, now: datetime, report=None) -> int:
        """Fire the instance's due timers in one transaction; returns how many fired.

        What is recorded is what fired (``Runtime.fired_timers``), which can be more than was due at
        ``now``: the clock may have moved on since ``run_due`` looked (another process moves a shared one).
        """
        with self._command() as session:
            instance = self._lock_instance(session, instance_id, skip_locked=True)
            if instance is None or instance.status != "running":
                return 0
            if session.scalar(select(models.TimerRow.id).where(models.TimerRow.instance_id == instance_id,
                                                               models.TimerRow.due_at <= now).limit(1)) is None:
                return 0  # another worker fired them after our look: skip loading the state
            bundle = self._bundle(session, instance.definition_id)
            workflow = self.runtime.load(bundle, instance.state_json)
            if not any(t.due_at <= now for t in self.runtime.waiting_timers(workflow)):
                return 0
            self.runtime.fire_due_timers(workflow)
            records: list[StepRecord] = []
            self._advance_and_save(session, instance, bundle, workflow, records, None)
        fired = [r for r in records if r.type == "timer_fired"]
        for record in fired if report is not None else ():
            report("timer_fired", instance=instance_id, timer=record.bpmn_id, due=record.data["due_at"],
                   late=f"{record.data['late_seconds']:g}s")
        return len(fired)

    # -- persistence of one step -------------------------------------------------------------
    def _advance_and_save(self, session: Session, instance: InstanceRow, bundle: SpecBundle, workflow,
                          records: list[StepRecord], user: str | None,
                          completed: dict[str, str | None] | None = None,
                          cancel_reason: str | None = None) -> SavedStep | None:
        """Advance the loaded ``workflow`` to its next waits and write the step in ``session``: the state,
        the projections (work items, waits, jobs, SLA clocks), the history rows, then deliver thrown messages.

        Every timer that fired since the workflow was loaded (``Runtime.fired_timers``) is recorded as
        ``timer_fired``, right after the records the caller passed (before what it caused).
        Returns what ``_instance_view`` needs to describe the instance without reading it back, or None
        when a thrown message was delivered in the same transaction (the instance may have moved again).
        With ``cancel_reason`` the workflow is cancelled instead of advanced (see ``cancel``).
        """
        from sqlalchemy.orm.exc import StaleDataError

        from . import jobs, messages, search_keys, sla_clocks, waits
        from .runtime import StepFailed, StepRecord

        now = self.clock.now()
        stored = waits.before_step(session, workflow, instance.id)
        given = len(records)
        self.runtime.case_finder = lambda key, since, any_of=None: self._find_cases(session, key, since, instance.id,
                                                                                      any_of)
        self.runtime.history_reader = lambda instance_id: self._history_dicts(session, instance_id)
        subscriptions = None  # the message catches after the step, when known (computed once)
        variables = None  # the case variables, when taken before the step ends (a cancellation)
        try:
            if cancel_reason is not None:
                variables = self.runtime.variables(workflow)  # as they are: a cancelled workflow has no live path
                workflow.cancel()  # every unfinished task, sub-processes included; nothing runs
                instance.status, instance.error = "cancelled", None
            else:
                self.runtime.advance(workflow, bundle, instance.id, instance.business_key, records)
                subscriptions = self.runtime.subscriptions(workflow, bundle)
                while messages.deliver_buffered_in_step(self, session, instance, workflow, subscriptions, records,
                                                        now, stored):
                    self.runtime.advance(workflow, bundle, instance.id, instance.business_key, records)
                    subscriptions = self.runtime.subscriptions(workflow, bundle)
                instance.status, instance.error = self.runtime.status(workflow), None
        except StepFailed as failure:
            subscriptions = None
            instance.status, instance.error = "error", str(failure)
            session.add(models.IncidentRow(instance_id=instance.id, task_id=failure.task_id, bpmn_id=failure.bpmn_id,
                                           message=str(failure), created_at=now))
            records.append(StepRecord("instance_error", failure.task_id, failure.bpmn_id,
                                      {"message": str(failure)}))
        records[given:given] = [
            StepRecord("timer_fired", t.task_id, t.bpmn_id, {
                "due_at": t.due_at.isoformat() if t.due_at else None,
                "late_seconds": round((now - t.due_at).total_seconds(), 3) if t.due_at else None})
            for t in self.runtime.fired_timers(workflow)]
        outgoing, signals = self.runtime.thrown_events(workflow)
        for name, payload in outgoing:
            records.append(StepRecord("message_sent", data={"message": name, "data": payload}))
        if instance.status == "completed":
            instance.ended_at = now
            records.append(StepRecord("instance_completed"))
        elif instance.status == "cancelled":
            instance.ended_at = now
            records.append(StepRecord("instance_cancelled", data={"reason": cancel_reason}))
        instance.state_json = self.runtime.dump(workflow)
        if variables is None:
            variables = self.runtime.variables(workflow)
        if instance.business_key is None:  # a case number assigned during the step
            instance.business_key = next((str(variables[k]) for k in ("workOrderNo", "applicationNo")
                                          if variables.get(k)), None)
            if instance.business_key is not None:  # the work items carry a copy (the queue reads one table)
                session.execute(update(models.WorkItemRow).where(models.WorkItemRow.instance_id == instance.id)
                                .values(business_key=instance.business_key))
        stored_before = instance.variables
        instance.variables = _json_safe(self.runtime.serializer.convert_data(variables))
        searched = self.searchable.get(bundle.key)
        if searched:
            search_keys.write(session.connection(), instance.id, bundle.key, searched, stored_before,
                              instance.variables)
        session.flush()
        open_items = self._project_work_items(session, instance, bundle, workflow, now, completed or {}, records)
        after = waits.of_workflow(self.runtime, workflow, bundle, subscriptions)
        waits.write_changes(session, instance.id, stored, after,
                            lambda task_ids: jobs.new_job_rows(self, instance, bundle, workflow, task_ids, now))
        waits.remember(workflow, after)
        sla_clocks.project(self, session, instance, bundle, workflow, now, variables, records)
        convert = self.runtime.serializer.convert_data
        if records:  # Core on the session's connection: the ORM's bulk insert costs more than the rows
            session.connection().execute(insert(models.EventRow.__table__), [
                {"instance_id": instance.id, "at": now, "type": record.type,
                 "actor": getattr(record, "actor", None) or (user if record.type in _ACTOR_EVENTS else None),
                 "task_id": record.task_id, "bpmn_id": record.bpmn_id, "data": _json_safe(convert(record.data))}
                for record in records])
        try:
            session.flush()
        except StaleDataError:
            raise Conflict(f"instance {instance.id} was changed by another command; try again") from None
        for name, payload in outgoing:
            self._route_thrown_message(session, instance, name, payload)
        for name in signals:  # BPMN: a signal reaches every instance waiting for it
            messages.send_signal(self, session, name, {}, None, source=instance)
        if outgoing or signals:
            return None
        timers = sorted((TimerInfo(task_id, bpmn_id, due.astimezone(UTC))
                         for task_id, (bpmn_id, due) in after.timers.items()), key=lambda t: t.due_at)
        # an open incident is a failed step (the instance is in error) or a job out of retries (its row stays)
        return SavedStep(open_items, timers, may_have_incidents=instance.status == "error" or bool(after.jobs))

    def _find_cases(self, session: Session, key: str, since: datetime, exclude: str,
                    any_of: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """Recent cases of process ``key`` started at or after ``since`` (read-only view for handlers).

        ``any_of``: only cases with at least one of these variables equal to the given text, filtered in
        SQL. When every name is a built searchable variable (:mod:`engine.search_keys`) the index gives
        the matches, so the cost follows them rather than the cases in the window; otherwise the stored
        variables are compared. A value that is not text (or an empty ``any_of``) filters nothing: the
        result is never smaller than without it.
        """
        from . import search_keys

        case = models.InstanceRow  # the columns handlers see; never the workflow state
        query = select(case.id, case.business_key, case.started_at, case.status, case.variables)
        wanted = {k: v for k, v in (any_of or {}).items() if v not in (None, "")}
        filtered = wanted and all(isinstance(v, str) for v in wanted.values())
        if filtered and self._search_index_covers(session, key, wanted):
            matches = search_keys.matching_cases(key, wanted)
            query = query.select_from(matches).join(case, case.id == matches.c.instance_id)
        elif filtered:
            query = query.where(or_(*(case.variables[k].as_string() == v for k, v in wanted.items())))
        query = query.join(models.DefinitionRow, models.DefinitionRow.id == case.definition_id).where(
            models.DefinitionRow.key == key, case.started_at >= since, case.id != exclude)
        rows = session.execute(query.order_by(case.started_at))
        restore = self.runtime.serializer.restore_data
        return [{"instance_id": r.id, "business_key": r.business_key, "started_at": r.started_at,
                 "status": r.status, "variables": restore(r.variables or {})} for r in rows]

    def _search_index_covers(self, session: Session, key: str, wanted: dict[str, str]) -> bool:
        """True when the ``case_key`` rows answer a lookup of ``wanted`` in the cases of ``key``."""
        from . import search_keys

        if not all(search_keys.indexable(v) for v in wanted.values()):
            return False
        pairs = {(key, name) for name in wanted}
        if pairs <= self._searched_by_index:
            return True
        if any(name not in self.searchable.get(key, ()) for name in wanted):
            return False
        if not search_keys.complete(session.connection(), key, wanted):
            return False
        self._searched_by_index |= pairs  # built pairs stay built
        return True

    def _history_dicts(self, session: Session, instance_id: str) -> list[dict[str, Any]]:
        """The stored history of one instance for ``HandlerContext.history`` (read-only, oldest first)."""
        rows = session.scalars(select(models.EventRow).where(models.EventRow.instance_id == instance_id)
                               .order_by(models.EventRow.id))
        restore = self.runtime.serializer.restore_data
        return [{"type": r.type, "task_id": r.task_id, "bpmn_id": r.bpmn_id, "data": restore(r.data or {})}
                for r in rows]

    def _route_thrown_message(self, session: Session, source: InstanceRow, name: str, payload: Any) -> None:
        """Deliver a message thrown by one instance, in the same transaction.

        A waiting catch whose correlation keys all equal the payload's values gets it; otherwise a
        process whose start event catches it is started with the payload as its variables.
        Undeliverable or ambiguous messages are recorded on the source instance.
        """
        from .runtime import StepRecord

        data = payload if isinstance(payload, dict) else {"payload": payload}
        candidates = session.scalars(select(models.SubscriptionRow).join(models.InstanceRow).where(
            models.SubscriptionRow.message_name == name, models.InstanceRow.status == "running",
            models.SubscriptionRow.instance_id != source.id)).all()
        matches = [c for c in candidates if _correlation_matches(c.correlation, data)]
        now = self.clock.now()
        if len({m.instance_id for m in matches}) > 1:
            session.add(models.EventRow(instance_id=source.id, at=now, type="message_undelivered",
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
            reason = "no waiting instance and no process starts with it"
            session.add(models.EventRow(instance_id=source.id, at=now, type="message_undelivered",
                                        data={"message": name, "reason": reason}))
            return
        business_key = data.get("workOrderNo") or data.get("applicationNo")
        record = StepRecord("message_received", data={"message": name, "from_instance": source.id})
        self._start(session, start, data, str(business_key) if business_key else None, None, [record],
                    message=name)

    def _project_work_items(self, session, instance, bundle, workflow, now, completed,
                            records: list[StepRecord]) -> list[SimpleNamespace]:
        """One open ``work_item`` per READY user task; items whose task is gone are completed or cancelled.

        The step's ``reassign_requested`` records (handlers' ``ctx.reassign``) are applied last: each open
        item of the step goes to the user, recorded as ``task_reassigned`` (appended to ``records``).
        Returns the open items after the step (rows as attribute namespaces), oldest first.

        SQLAlchemy Core on the session's connection, in its transaction: the rows are read, compared and
        written as plain values (the ORM's identity map and unit of work cost more than the statements).
        Callers flush pending ORM changes to work items first; an ORM object of one of these rows that a
        command loaded earlier is not written back by the ORM, which sees it unchanged.
        """
        connection = session.connection()
        table = models.WorkItemRow.__table__
        items = EditableRows(connection, table, _statements().open_item_rows, {"instance_id": instance.id})
        open_rows = items.rows
        ready = {str(task.id): task for task in self.runtime.ready_user_tasks(workflow)}
        still_open: list[SimpleNamespace] = []
        closed: list[str] = []
        for task_id, row in open_rows.items():
            if task_id in ready:
                info = bundle.info(ready[task_id])
                self._refresh_due(row, info.get("due_date"), ready[task_id].data)
                if row.claimed_by is None and (info.get("assignee") or "").strip().startswith(("${", "#{")):
                    # an expression assignee follows its variable (a 督办 REASSIGN, a T4 reassignment)
                    row.assignee = self._evaluate_text(info["assignee"], ready[task_id].data, "camunda:assignee")
                still_open.append(row)
                continue
            if task_id in completed:
                row.state, row.completed_by, row.completed_at = "completed", completed[task_id], now
            else:
                row.state, row.completed_at = "cancelled", now
            closed.append(task_id)
        if closed:
            connection.execute(_statements().delete_groups, {"ids": closed})
        created: list[SimpleNamespace] = []
        groups: list[dict[str, str]] = []
        for task_id, task in ready.items():
            if task_id in open_rows:
                continue
            info = bundle.info(task)
            candidates = list(info.get("candidate_groups") or [])
            values = new_row(table, id=task_id, instance_id=instance.id, definition_key=bundle.key,
                             bpmn_id=task.task_spec.bpmn_id, name=info.get("name") or task.task_spec.bpmn_id,
                             lane=info.get("lane"), candidate_groups=candidates,
                             assignee=self._evaluate_text(info.get("assignee"), task.data, "camunda:assignee"),
                             form_key=info.get("form_key"), due_at=self._due(info.get("due_date"), task.data),
                             state="open", created_at=now, business_key=instance.business_key)
            created.append(SimpleNamespace(**values))
            still_open.append(created[-1])
            groups.extend({"work_item_id": task_id, "group_name": group} for group in dict.fromkeys(candidates))
        self._apply_reassignments(records, still_open, ready,
                                  {task_id: items.before(task_id, "assignee") for task_id in open_rows})
        items.write(connection)
        if created:  # as they are now (a reassignment may have changed one)
            connection.execute(insert(table), [vars(row) for row in created])
        if groups:
            connection.execute(insert(models.WorkItemGroupRow.__table__), groups)
        return still_open

    @staticmethod
    def _apply_reassignments(records: list[StepRecord], items: list[SimpleNamespace], ready: dict[str, Any],
                             assigned_before: dict[str, str | None]) -> None:
        """Give the open items of each requested step to its user: assigned by the process, not claimed (an
        expression assignee such as ``${handler}`` goes on following its variable)."""
        from .bpmn import within_step
        from .runtime import REASSIGN_REQUESTED, StepRecord

        for request in [r for r in records if r.type == REASSIGN_REQUESTED]:
            step, to = request.data["step"], request.data["to"]
            for row in items:
                if not within_step(ready[row.id], step):
                    continue
                row.assignee, row.claimed_by, row.claimed_at = to, None, None
                records.append(StepRecord("task_reassigned", row.id, row.bpmn_id, {
                    "from": assigned_before.get(row.id), "to": to, "requested_by": request.bpmn_id}))

    def _refresh_due(self, row: SimpleNamespace, text: str | None, data: dict[str, Any]) -> None:
        """An open item whose ``camunda:dueDate`` is an expression follows its variable (a supervisor's
        EXTEND, a recomputed SLA); a duration such as ``P2D`` keeps counting from the item's creation."""
        if not text or not text.strip().startswith(("${", "#{")):
            return
        try:
            value = self.runtime.script_engine.evaluator.evaluate(text, data)
        except ExpressionError:
            return
        if isinstance(value, str) and value.strip().startswith("P"):
            return
        due = self._due(text, data)
        if due is not None and due != row.due_at:
            row.due_at = due

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
        return _Command(self.store, self._record_refusal)

    def _record_refusal(self, refused: Refused) -> None:
        identity.record_refusal(self.store, self.clock.now(), refused)

    def _acting(self, session: Session | Connection, user: str | None, action: str,
                task: WorkItemRow | None = None, groups: bool = True) -> User | None:
        """The acting user when identities apply to this call (else None); Refused when unknown or (with
        ``groups``) when ``action`` needs a group the user is not in (see ``engine.identity``)."""
        if user is None or self.identities is False:
            return None
        if self.identities is None and not identity.has_users(session):
            return None
        where = (task.instance_id, task.id, task.bpmn_id) if task is not None else (None, None, None)
        acting = identity.require_user(session, user, action, where[0], where[1])
        if not groups:
            return acting
        try:
            identity.require_groups(acting, action)
        except Refused as refused:
            refused.instance_id, refused.task_id, refused.bpmn_id = where
            raise
        return acting

    def _checked(self, user: str | None, action: str, groups: bool = True) -> User | None:
        """``_acting`` in its own read transaction, for commands that check before they write or only read."""
        try:
            with self.store.connect() as connection:  # Core only: checking the user needs no ORM
                return self._acting(connection, user, action, groups=groups)
        except Refused as refused:
            self._record_refusal(refused)
            raise

    def _lock_instance(self, session: Session, instance_id: str, skip_locked: bool = False) -> InstanceRow | None:
        """Lock the instance row for this transaction; with ``skip_locked``, None when another holds it."""
        query = self._lock_queries.get(skip_locked)
        if query is None:
            query = self._lock_queries[skip_locked] = self.store.lock_for_update(
                select(models.InstanceRow).where(models.InstanceRow.id == bindparam("instance_id")),
                skip_locked=skip_locked).execution_options(populate_existing=True)
        row = session.scalars(query, {"instance_id": instance_id}).first()
        if row is None:
            if skip_locked:
                return None
            raise NotFound(f"no instance '{instance_id}'")
        return row

    @staticmethod
    def _get_instance(session: Session, instance_id: str) -> InstanceRow:
        """The instance row for reading, without its workflow state (loaded only if touched)."""
        row = session.get(models.InstanceRow, instance_id, options=_without_state())
        if row is None:
            raise NotFound(f"no instance '{instance_id}'")
        return row

    def _get_work_item(self, session: Session, task_id: str, lock: bool = False) -> WorkItemRow:
        query = self.store.lock_for_update(_statements().work_item) if lock else _statements().work_item
        row = session.scalars(query, {"task_id": task_id}).first()
        if row is None:
            raise NotFound(f"no task '{task_id}'")
        return row

    @staticmethod
    def _read_work_item(session: Session, task_id: str) -> SimpleNamespace:
        """A work-item row as plain values, for a command that only reads it (Core: no ORM object)."""
        row = session.connection().execute(_statements().work_item_row, {"task_id": task_id}).first()
        if row is None:
            raise NotFound(f"no task '{task_id}'")
        return SimpleNamespace(**row._mapping)

    def _instance_view(self, session: Session, row: InstanceRow, saved: SavedStep | None = None) -> Instance:
        """The ``Instance`` of a row; with ``saved`` (what a step just wrote) its work items and timers are not
        read back from the database."""
        bundle = self._specs.get(row.definition_id)
        if bundle is not None:
            key, version = bundle.key, bundle.version
        else:
            definition = session.get(models.DefinitionRow, row.definition_id)
            key, version = definition.key, definition.version
        incidents = None
        if saved is not None:
            open_items, timers = saved.open_items, saved.timers
            if not saved.may_have_incidents:
                incidents = []
        else:
            open_items = session.execute(_statements().open_item_rows, {"instance_id": row.id})
            timers = [TimerInfo(t.id, t.bpmn_id, t.due_at) for t in session.scalars(
                select(models.TimerRow).where(models.TimerRow.instance_id == row.id).order_by(models.TimerRow.due_at))]
        ready = [_work_item(r) for r in open_items]
        variables = self.runtime.serializer.restore_data(row.variables or {})
        if incidents is None:
            from .jobs import open_incidents

            incidents = open_incidents(session, row.id)
        return Instance(row.id, key, version, row.business_key, row.status, variables,
                        ready, timers, row.error, row.started_at, row.ended_at, incidents)


@dataclass(frozen=True)
class SavedStep:
    """What ``Engine._advance_and_save`` wrote that the returned ``Instance`` shows: open items, timers (UTC),
    and whether the instance can have open incidents at all (else they are not looked up)."""

    open_items: list[SimpleNamespace]  # work-item rows (``_work_item`` reads their attributes)
    timers: list[TimerInfo]
    may_have_incidents: bool = True


@functools.cache
def _statements() -> SimpleNamespace:
    """Statements of every command, built once on first use (building a select costs more than running it
    on SQLite; built lazily because the ORM models are imported only by commands that write)."""
    item = models.WorkItemRow
    return SimpleNamespace(
        work_item=select(item).where(item.id == bindparam("task_id")),
        work_item_row=select(*item.__table__.c).where(item.id == bindparam("task_id")),
        delete_groups=delete(models.WorkItemGroupRow.__table__).where(
            models.WorkItemGroupRow.work_item_id.in_(bindparam("ids", expanding=True))),
        open_item_rows=select(*item.__table__.c).where(item.instance_id == bindparam("instance_id"),
                                                       item.state == "open").order_by(item.created_at),
    )



def _start_message(row: DefinitionRow) -> str | None:
    """The message that ``Engine.start`` starts ``row`` through: None when it has a plain start event.

    A timer start event counts as plain here (its meta names no message or signal): such a case waits
    at its timer. Raises InvalidInput when only a signal or several messages start the process.
    """
    starts = [info for info in (row.meta or {}).values() if info.get("process_start")]
    if not starts or any(not info.get("message") and not info.get("signal") for info in starts):
        return None
    if len(starts) == 1 and starts[0].get("message"):
        return starts[0]["message"]
    ways = sorted(f"message '{info['message']}'" if info.get("message") else f"signal '{info['signal']}'"
                  for info in starts)
    raise InvalidInput(f"process '{row.key}' has no plain start event; it starts by {' or '.join(ways)}: "
                       "send one of them instead ('gridflow message send' / 'gridflow signal send')")


class _Command:
    """A write transaction that turns database-level failures into one-line engine errors.

    A :class:`Refused` error rolls the command back like any other; ``on_refused`` then records
    the attempt in its own small transaction.
    """

    def __init__(self, store: Store, on_refused=None):
        self.store = store
        self.on_refused = on_refused
        self._context = None

    def __enter__(self) -> Session:
        self._context = self.store.write()
        try:
            return self._context.__enter__()
        except OperationalError as exc:
            raise GridflowError(f"database {self.store.url} unavailable: {_db_message(exc)}") from None

    def __exit__(self, exc_type, exc, tb):
        try:
            try:
                self._context.__exit__(exc_type, exc, tb)  # rolls back on error, else commits
            except Exception as error:
                if error is exc:
                    raise
                raise _database_error(error) from None
            if exc is not None:
                translated = _database_error(exc)
                if translated is not exc:
                    raise translated from None
            return False
        finally:
            if isinstance(exc, Refused) and self.on_refused is not None:
                self.on_refused(exc)


def _database_error(error: BaseException) -> BaseException:
    """A database-level failure as a one-line engine error (other exceptions unchanged)."""
    from sqlalchemy.orm.exc import StaleDataError  # a write session is open: the ORM is loaded

    if isinstance(error, StaleDataError):
        return Conflict("the instance was changed by another command at the same time; try again")
    if isinstance(error, IntegrityError):
        return Conflict(f"another command wrote the same record at the same time; try again "
                        f"({_db_message(error)})")
    if isinstance(error, DataError):
        return InvalidInput(f"a value does not fit the database: {_db_message(error)}")
    if isinstance(error, OperationalError):
        return GridflowError(f"database error: {_db_message(error)}")
    return error


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


def _work_item(row) -> WorkItem:
    """The public view of a work-item row: an ORM object, a Core row or a namespace with its columns (it carries
    its case's business key since migration 0004)."""
    return WorkItem(row.id, row.instance_id, row.bpmn_id, row.name, row.lane, list(row.candidate_groups or []),
                    row.assignee, row.form_key, row.due_at, row.definition_key, row.state, row.created_at,
                    row.business_key, row.completed_by, row.completed_at)


def _queue_item(values) -> WorkItem:
    """A WorkItem from a queue row (the values of ``worklist.WORK_ITEM_COLUMNS``).

    Fills the frozen dataclass's ``__dict__`` directly: ten times cheaper than ``__init__``.
    """
    item = object.__new__(WorkItem)
    fields = item.__dict__
    fields.update(zip(worklist.WORK_ITEM_FIELDS, values, strict=True))
    fields["candidate_groups"] = worklist.candidate_groups(fields["candidate_groups"])
    return item


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
