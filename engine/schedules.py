"""Timer start events: the scheduler that creates instances (a monthly inspection plan, a survey).

A timer start event fires before any instance data exists, so its timer is a deployment setting:
one ``start_schedule`` row per (process key, start event) of the **latest** deployed version,
written in the deploy transaction (and re-synced by the worker for databases deployed before
this table existed). The row holds the next due instant:

- ``timeCycle`` ``R/P1M`` or ``R12/P1M``: first due one period after deployment;
  ``R/2027-01-01T08:00:00+08:00/P1M``: first due at the given start. Periods use calendar
  arithmetic (month ends clamp), so a monthly check stays on its day of the month;
- ``timeDate``: once, at that instant; ``timeDuration``: once, that long after deployment.

When a schedule is due the worker starts one instance and moves the schedule to its next
period after *now*: periods missed while no worker ran create one instance, not one per period.
Each firing is one transaction that locks the schedule row (``FOR UPDATE SKIP LOCKED`` on
PostgreSQL), so two workers never start the same period twice.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from SpiffWorkflow.bpmn.specs.event_definitions.timer import CycleTimerEventDefinition
from SpiffWorkflow.util.task import TaskState
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from .bpmn import timer_expression
from .definitions import BPMN_NS, parse_xml
from .errors import DefinitionError
from .expressions import ExpressionError
from .runtime import StepRecord, steps_done
from .sla import SHANGHAI, IsoDuration, parse_duration
from .store import DefinitionRow, StartScheduleRow

if TYPE_CHECKING:  # pragma: no cover
    from .api import Engine

Report = Callable[..., None]


def _no_report(_action: str, **_fields: Any) -> None:
    return None


class _Plan:
    def __init__(self, kind: str, text: str, first: datetime, cycles: int, period: IsoDuration | None):
        self.kind, self.text, self.first, self.cycles, self.period = kind, text, first, cycles, period


def _parse_instant(text: str, where: str) -> datetime:
    try:
        instant = datetime.fromisoformat(text.strip())
    except ValueError:
        raise DefinitionError(f"{where}: '{text}' is not an ISO 8601 date-time") from None
    if instant.tzinfo is None:
        raise DefinitionError(f"{where}: '{text}' has no time zone offset (e.g. +08:00)")
    return instant


def _duration(text: str, where: str) -> IsoDuration:
    try:
        duration = parse_duration(text.strip())
    except (TypeError, ValueError) as exc:
        raise DefinitionError(f"{where}: {exc}") from None
    if duration == IsoDuration():
        raise DefinitionError(f"{where}: the period '{text}' is empty")
    return duration


def plan(kind: str, text: str, deployed_at: datetime, where: str) -> _Plan:
    """The schedule of one timer start event: first instant, cycles (-1 unbounded) and period."""
    if kind == "date":
        return _Plan(kind, text, _parse_instant(text, where), 1, None)
    if kind == "duration":
        return _Plan(kind, text, _duration(text, where).add_to(deployed_at), 1, None)
    parts = text.strip().split("/")
    if len(parts) not in (2, 3) or not parts[0].upper().startswith("R") or not (parts[0][1:] or "0").isdigit():
        raise DefinitionError(f"{where}: '{text}' is not an ISO 8601 cycle such as R/P1M or R12/P1M")
    cycles = int(parts[0][1:]) if parts[0][1:] else -1
    if cycles == 0:
        raise DefinitionError(f"{where}: '{text}' repeats zero times")
    period = _duration(parts[-1], where)
    first = _parse_instant(parts[1], where) if len(parts) == 3 else period.add_to(deployed_at)
    return _Plan("cycle", text, first, cycles, period)


def timer_starts(engine: Engine, definition: DefinitionRow) -> list[tuple[str, str, str]]:
    """(start event id, kind, evaluated timer text) for each timer start event of a deployed process.

    Read from the stored XML (already validated at deploy), not from a parsed spec, so that the
    deploy transaction does not populate the spec cache with rows it may yet roll back.
    """
    root = parse_xml(definition.xml, definition.filename).getroot()
    found = []
    for process in root.findall(f"{{{BPMN_NS}}}process"):
        if process.get("id") != definition.key:
            continue
        for start in process.findall(f"{{{BPMN_NS}}}startEvent"):
            timer = start.find(f"{{{BPMN_NS}}}timerEventDefinition")
            if timer is None:
                continue
            where = f"timer start event '{start.get('id')}' of process '{definition.key}'"
            for tag, kind in (("timeCycle", "cycle"), ("timeDate", "date"), ("timeDuration", "duration")):
                body = timer.find(f"{{{BPMN_NS}}}{tag}")
                if body is None:
                    continue
                try:
                    value = engine.runtime.script_engine.evaluator.evaluate(timer_expression(body.text or ""), {})
                except ExpressionError as exc:
                    raise DefinitionError(f"{where}: {exc} (a timer start event cannot read instance "
                                          "variables)") from None
                text = value.isoformat() if isinstance(value, datetime) else str(value)
                found.append((start.get("id"), kind, text))
                break
    return sorted(found)


def sync(engine: Engine, session, now: datetime) -> None:
    """Make ``start_schedule`` match the latest deployed version of every process (inside a transaction)."""
    latest = (select(DefinitionRow.key, func.max(DefinitionRow.version).label("version"))
              .group_by(DefinitionRow.key).subquery())
    definitions = list(session.scalars(select(DefinitionRow).join(
        latest, (DefinitionRow.key == latest.c.key) & (DefinitionRow.version == latest.c.version))))
    existing = {(r.definition_key, r.bpmn_id): r for r in session.scalars(select(StartScheduleRow))}
    wanted: set[tuple[str, str]] = set()
    for definition in definitions:
        if b"timerEventDefinition" not in definition.xml:
            continue
        for bpmn_id, kind, text in timer_starts(engine, definition):
            wanted.add((definition.key, bpmn_id))
            row = existing.get((definition.key, bpmn_id))
            if row is not None and row.definition_id == definition.id:
                continue
            where = f"timer start event '{bpmn_id}' of process '{definition.key}'"
            schedule = plan(kind, text, definition.deployed_at, where)
            if row is None:
                session.add(StartScheduleRow(definition_key=definition.key, definition_id=definition.id,
                                             bpmn_id=bpmn_id, kind=schedule.kind, expression=text,
                                             next_due_at=schedule.first, cycles_left=schedule.cycles, fired_count=0))
            elif row.expression != text or row.kind != schedule.kind:
                # a new version changed the timer: start over from the new deployment
                row.definition_id, row.kind, row.expression = definition.id, schedule.kind, text
                row.next_due_at, row.cycles_left = schedule.first, schedule.cycles
            else:
                row.definition_id = definition.id  # same timer, newer version: keep the rhythm
    for key, row in existing.items():
        if key not in wanted:
            session.delete(row)
    session.flush()


def ensure_synced(engine: Engine) -> None:
    """Sync schedules once per newly seen definition (cheap check on the highest definition id)."""
    with engine.store.read() as session:
        newest = session.scalar(select(func.max(DefinitionRow.id))) or 0
    if getattr(engine, "_schedules_synced_upto", None) == newest:
        return
    try:
        with engine._command() as session:
            sync(engine, session, engine.clock.now())
    except IntegrityError:
        return  # another worker synced the same rows at the same moment; the next round checks again
    engine._schedules_synced_upto = newest


def run_due(engine: Engine, now: datetime, report: Report = _no_report) -> int:
    """Start one instance for every due schedule; returns how many were started."""
    ensure_synced(engine)
    with engine.store.read() as session:
        due = list(session.scalars(select(StartScheduleRow.id).where(
            StartScheduleRow.next_due_at.is_not(None), StartScheduleRow.next_due_at <= now)
            .order_by(StartScheduleRow.next_due_at)))
    started = 0
    for schedule_id in due:
        fired = _fire(engine, schedule_id, now)
        if fired is not None:
            started += 1
            report("timer_start_fired", process=fired[0], start_event=fired[1], instance=fired[2],
                   late=f"{fired[3]:.0f}s")
    return started


def _fire(engine: Engine, schedule_id: int, now: datetime):
    with engine._command() as session:
        query = engine.store.lock_for_update(select(StartScheduleRow).where(StartScheduleRow.id == schedule_id),
                                             skip_locked=True)
        row = session.scalars(query.execution_options(populate_existing=True)).first()
        if row is None or row.next_due_at is None or row.next_due_at > now:
            return None  # another worker has it, or fired it already
        due_at = row.next_due_at
        late = (now - due_at).total_seconds()
        definition = session.get(DefinitionRow, row.definition_id)
        where = f"timer start event '{row.bpmn_id}' of process '{row.definition_key}'"
        schedule = plan(row.kind, row.expression, definition.deployed_at, where)
        record = StepRecord("timer_start_fired", None, row.bpmn_id,
                            {"schedule": row.id, "timer": row.expression,
                             "due_at": due_at.astimezone(SHANGHAI).isoformat(),
                             "late_seconds": round(late, 3), "occurrence": row.fired_count + 1})
        bpmn_id = row.bpmn_id
        instance = engine._start(session, definition, {}, None, None, [record],
                                 prepare=lambda workflow: trigger(workflow, bpmn_id, now))
        row.fired_count += 1
        row.last_fired_at, row.last_instance_id = now, instance.id
        if row.cycles_left > 0:
            row.cycles_left -= 1
        if schedule.period is None or row.cycles_left == 0:
            row.next_due_at = None
        else:
            following = due_at
            while following <= now:  # skipped periods are not replayed
                following = schedule.period.add_to(following)
            row.next_due_at = following
        return row.definition_key, bpmn_id, instance.id, late


def trigger(workflow, bpmn_id: str, now: datetime) -> None:
    """Fire the timer start event ``bpmn_id`` of a new workflow once, now."""
    if not steps_done(workflow):
        return
    for task in workflow.get_tasks(state=TaskState.WAITING):
        if task.task_spec.bpmn_id != bpmn_id:
            continue
        if isinstance(task.task_spec.event_definition, CycleTimerEventDefinition):
            # one period elapsed, no more to come: the schedule, not the instance, repeats
            task._set_internal_data(event_value={"cycles": 1, "next": now.isoformat(), "duration": 1.0})
        else:
            task.internal_data.pop("event_value", None)
            task._set_internal_data(event_fired=True)
        task.task_spec._update(task)
        return
    if any(t.task_spec.bpmn_id == bpmn_id for t in workflow.get_tasks(state=TaskState.COMPLETED)):
        return  # a timeDate already past fires by itself
    raise ValueError(f"process {workflow.spec.name} has no waiting timer start event '{bpmn_id}'")


def list_schedules(engine: Engine) -> list[dict[str, Any]]:
    ensure_synced(engine)
    with engine.store.read() as session:
        return [{"id": r.id, "process": r.definition_key, "start_event": r.bpmn_id, "timer": r.expression,
                 "next_due_at": r.next_due_at, "cycles_left": r.cycles_left, "fired": r.fired_count,
                 "last_fired_at": r.last_fired_at, "last_instance_id": r.last_instance_id}
                for r in session.scalars(select(StartScheduleRow).order_by(StartScheduleRow.definition_key,
                                                                           StartScheduleRow.bpmn_id))]
