"""SLA clocks: one per SLA-bearing task or case, written with the step (a projection, like work items).

Which elements carry a clock (Camunda Modeler: properties panel → Extensions → Properties):

- a task, sub-process or call activity with the property ``slaKey`` — a key of the policy table
  (``complaint.reply``, or an expression such as ``${'yk.plan.' + customerClass}``). A ``wd`` value
  is a working-day limit on the PRC business calendar (T1 = due − ``reminder.lead``, or the key
  named by ``slaLeadKey``; T3 = the regulatory ceiling, else due + 1 WD); a ``duration`` value is a
  24×7 limit (T1 at the ``reminder.hourFractions`` of the budget; T3 = ``ceilingDuration`` or due).
  The policy version is the case's ``policyVersion`` variable, else the version in force when the
  clock starts;
- a user task with ``camunda:dueDate`` and no ``slaKey``: due is the work item's due time, at risk
  from ``slaRemindAt`` (an instant or ``${expression}``) or 80% of the budget, T3 from ``slaCapAt``;
- the case: ``slaKey`` on the process's start event. The case clock starts with the instance and
  stops when it completes; it is created at the first step where its key can be evaluated.

Optional: ``slaSeverity`` (else the ``severity`` variable), ``slaGroup`` (else the task's
candidate groups or lane).

**Customer time does not count** (SERVICE_FLOWS.md §9.2). While any task with the property
``customerTime=true`` is live (waiting on payment, documents, construction …), every open clock of
the case is paused; when the case resumes, the clock's T1/T2/T3 move later by the pause: by the
working days it covered (the working days after the pause's first day, up to and including the day
the case resumed) for working-day clocks, by its exact length for 24×7 and due-date clocks.
Customer-time tasks themselves get no clock.

States, computed at read time from the stored instants: ``on_track``, ``at_risk`` (past T1),
``breached`` (past T2) while open — frozen at the pause instant while paused — and ``met`` /
``missed`` once closed, or ``cancelled`` when the case was cancelled while the clock ran (neither met nor
missed: KPI counts leave it out). The worker's :func:`scan` records the first time a clock is seen at risk or
breached (history events ``sla_at_risk``, ``sla_breached``) so a supervisor can be alerted once.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from SpiffWorkflow.util.task import TaskState
from sqlalchemy import and_, bindparam, insert, or_, select

from .bpmn import tasks_in_state
from .db import EditableRows, new_row
from .errors import InvalidInput
from .policy import PolicyError, PolicyTable
from .runtime import StepRecord
from .sla import SHANGHAI, BusinessCalendar, default_calendar, wall_clock_sla, working_day_sla
from .store import EventRow, InstanceRow, SlaClockRow

if TYPE_CHECKING:  # pragma: no cover
    from .api import Engine

OPEN_STATES = ("on_track", "at_risk", "breached")
CLOSED_STATES = ("met", "missed", "cancelled")
STATES = (*OPEN_STATES, *CLOSED_STATES, "paused", "open", "closed")
_LIVE = TaskState.READY | TaskState.WAITING | TaskState.STARTED

Report = Callable[..., None]


def _no_report(_action: str, **_fields: Any) -> None:
    return None


@dataclass(frozen=True)
class SlaClock:
    id: str
    instance_id: str
    business_key: str | None
    flow: str
    scope: str  # task or case
    bpmn_id: str
    name: str
    groups: list[str]
    severity: str | None
    policy_key: str | None
    policy_version: str | None
    mode: str  # wd, wall, date
    budget: str
    started_at: datetime
    remind_at: datetime
    due_at: datetime
    cap_at: datetime
    state: str
    paused: bool
    paused_since: datetime | None
    paused_seconds: int
    paused_working_days: int
    remaining_seconds: int | None
    at_risk_at: datetime | None = None
    breached_at: datetime | None = None
    closed_at: datetime | None = None
    pauses: list[dict[str, Any]] = field(default_factory=list)


@functools.cache
def _default_policy() -> PolicyTable:
    return PolicyTable.load()


def _policy(engine: Engine) -> PolicyTable:
    return getattr(engine, "policy_table", None) or _default_policy()


def _calendar(engine: Engine) -> BusinessCalendar:
    return getattr(engine, "calendar", None) or default_calendar()


def _props(info: dict[str, Any]) -> dict[str, str]:
    return info.get("properties") or {}


def is_customer_time(info: dict[str, Any]) -> bool:
    return str(_props(info).get("customerTime", "")).strip().lower() == "true"


def _case_spec(bundle) -> tuple[str, dict[str, Any]] | None:
    for element_id, info in (bundle.meta.get(bundle.key) or {}).items():
        if info.get("type") == "startEvent" and _props(info).get("slaKey"):
            return element_id, info
    return None


def state_of(row: SlaClockRow, now: datetime) -> str:
    if row.closed_at is not None:
        return row.outcome or "met"
    effective = row.paused_at or now
    if effective >= row.due_at:
        return "breached"
    if effective >= row.remind_at:
        return "at_risk"
    return "on_track"


# -- instants ------------------------------------------------------------------------------------
def _instants(engine: Engine, info: dict[str, Any], start: datetime, data: dict[str, Any],
              task_due: datetime | None) -> dict[str, Any] | None:
    props = _props(info)
    key_text = props.get("slaKey")
    if key_text:
        key = engine._evaluate_text(key_text, data, "slaKey")
        if not key:
            return None
        table = _policy(engine)
        wanted = data.get("policyVersion")
        try:
            version = table.version(wanted) if isinstance(wanted, str) and wanted else table.version_at(start)
            entry = version.get(key)
            fractions = (version.table("reminder.hourFractions") if "reminder.hourFractions" in version
                         else (0.5, 0.8))
            if entry.kind == "wd":
                lead_key = props.get("slaLeadKey") or "reminder.lead"
                lead = version.wd(lead_key) if lead_key in version else 2
                instants = working_day_sla(start, entry.value, lead, entry.ceiling_wd, _calendar(engine), fractions)
                mode, budget = "wd", f"{entry.value} WD"
            elif entry.kind == "duration":
                instants = wall_clock_sla(start, entry.value, entry.ceiling_duration, fractions)
                mode, budget = "wall", entry.value
            else:
                return None
        except (PolicyError, ValueError, TypeError):
            return None  # an unknown key or a year without a calendar: no clock rather than a failed step
        return {"mode": mode, "budget": budget, "policy_key": key, "policy_version": version.id,
                "remind_at": instants.remind_at, "due_at": instants.due_at, "cap_at": instants.cap_at}
    if task_due is None:
        return None
    remind = engine._due(props.get("slaRemindAt"), data) if props.get("slaRemindAt") else None
    if remind is None:
        remind = start + (task_due - start) * 0.8 if task_due > start else task_due
    cap = (engine._due(props.get("slaCapAt"), data) if props.get("slaCapAt") else None) or task_due
    return {"mode": "date", "budget": "due date", "policy_key": None, "policy_version": None,
            "remind_at": remind, "due_at": task_due, "cap_at": max(cap, task_due)}


def shift_working_days(calendar: BusinessCalendar, instant: datetime, days: int) -> datetime:
    """The same Asia/Shanghai time of day, ``days`` working days later."""
    local = instant.astimezone(SHANGHAI)
    day: date = local.date()
    for _ in range(days):
        day += timedelta(days=1)
        while not calendar.is_workday(day):
            day += timedelta(days=1)
    return datetime.combine(day, local.timetz())


# -- projection (inside the step's transaction) -------------------------------------------------
def project(engine: Engine, session, instance: InstanceRow, bundle, workflow, now: datetime,
            variables: dict[str, Any], records: list[StepRecord]) -> None:
    """Create, update, pause, resume and close the instance's clocks to match the workflow after a step."""
    calendar = _calendar(engine)
    connection, table = session.connection(), SlaClockRow.__table__  # Core: see engine.db.EditableRows
    clocks = EditableRows(connection, table, _OPEN_CLOCKS, {"instance_id": instance.id})
    open_rows = clocks.rows
    ended = instance.status in ("completed", "cancelled")
    live = [] if ended else tasks_in_state(workflow, _LIVE)
    customer = [t for t in live if is_customer_time(bundle.info(t))]
    wanted: dict[str, tuple[str, Any, str, dict[str, Any]]] = {}
    for task in live:
        info = bundle.info(task)
        if is_customer_time(info):
            continue
        if _props(info).get("slaKey") or (info.get("type") == "userTask" and info.get("due_date")):
            wanted[str(task.id)] = ("task", task, task.task_spec.bpmn_id, info)
    case = _case_spec(bundle)
    if case is not None and not ended:
        wanted[instance.id] = ("case", None, case[0], case[1])

    for clock_id, row in open_rows.items():
        if clock_id not in wanted:
            _close(row, now, calendar, cancelled=instance.status == "cancelled")
    new_ids = [clock_id for clock_id in wanted if clock_id not in open_rows]
    known = set(connection.scalars(_KNOWN_CLOCKS, {"ids": new_ids})) if new_ids else set()
    rows = [row for clock_id, row in open_rows.items() if clock_id in wanted]
    created: list[SimpleNamespace] = []
    for clock_id in new_ids:
        if clock_id in known:
            continue  # closed earlier (a case clock is not restarted)
        scope, task, bpmn_id, info = wanted[clock_id]
        data = dict(task.data) if task is not None else variables
        start = now if scope == "task" else instance.started_at
        task_due = engine._due(info.get("due_date"), data) if scope == "task" and info.get("due_date") else None
        instants = _instants(engine, info, start, data, task_due)
        if instants is None:
            continue
        row = SimpleNamespace(**new_row(
            table, id=clock_id, instance_id=instance.id, scope=scope, definition_key=bundle.key, bpmn_id=bpmn_id,
            name=info.get("name") or bpmn_id, groups=_groups(engine, info, data),
            severity=_severity(engine, info, data), started_at=start, paused_seconds=0, paused_working_days=0,
            pauses=[], updated_at=now, **instants))
        created.append(row)
        rows.append(row)
    for row in rows:
        _, task, _, info = wanted[row.id]
        severity = _severity(engine, info, dict(task.data) if task is not None else variables)
        if severity != row.severity:
            row.severity, row.updated_at = severity, now
    paused = [row for row in rows if customer and row.paused_at is None]
    resumed = [row for row in rows if not customer and row.paused_at is not None]
    for row in paused:
        row.paused_at, row.updated_at = now, now
    shifts = [_resume(row, now, calendar) for row in resumed]
    clocks.write(connection)
    if created:  # as they are now (severity and pause applied)
        connection.execute(insert(table), [vars(row) for row in created])
    extra: list[StepRecord] = []
    if paused:
        extra.append(StepRecord("sla_paused", data={
            "waiting_on": sorted({t.task_spec.bpmn_id for t in customer}),
            "clocks": [{"clock": r.id, "bpmn_id": r.bpmn_id, "policy_key": r.policy_key} for r in paused]}))
    if resumed:
        extra.append(StepRecord("sla_resumed", data={"clocks": [
            {"clock": r.id, "bpmn_id": r.bpmn_id, "shift": shift, "due_at": r.due_at.isoformat()}
            for r, shift in zip(resumed, shifts, strict=True)]}))
    if extra:
        at = len(records) - 1 if records and records[-1].type == "instance_completed" else len(records)
        records[at:at] = extra


_KNOWN_CLOCKS = select(SlaClockRow.id).where(SlaClockRow.id.in_(bindparam("ids", expanding=True)))
_OPEN_CLOCKS = select(*SlaClockRow.__table__.c).where(SlaClockRow.instance_id == bindparam("instance_id"),
                                                       SlaClockRow.closed_at.is_(None))


def ledger_update(engine: Engine, bundle, task, started: datetime, ended: datetime) -> dict[str, Any]:
    """The ``slaLedger`` variable after the user task ``task`` completes (SERVICE_FLOWS.md §9.2).

    Every utility-owned task appends ``{taskId, name, start, end, workingDaysUsed}`` (``taskId`` is the
    element id; ``workingDaysUsed`` the smallest n with ``end <= add_working_days(start, n)``, None when the
    calendar does not cover the dates); a customer-time task (``customerTime=true``) adds nothing. Handlers
    compare the sum with the class total (``archiveAndCreateAccount``). Returns the variables to merge.
    """
    info = bundle.info(task)
    if is_customer_time(info):
        return {}
    try:
        used: int | None = _calendar(engine).working_days_used(started, ended)
    except ValueError:
        used = None
    entry = {"taskId": task.task_spec.bpmn_id, "name": info.get("name") or task.task_spec.bpmn_id,
             "start": started.astimezone(SHANGHAI), "end": ended.astimezone(SHANGHAI), "workingDaysUsed": used}
    return {"slaLedger": [*(task.data.get("slaLedger") or []), entry]}


def _groups(engine: Engine, info: dict[str, Any], data: dict[str, Any]) -> str:
    override = _props(info).get("slaGroup")
    if override:
        groups = [g.strip() for g in (engine._evaluate_text(override, data, "slaGroup") or "").split(",")]
    else:
        groups = list(info.get("candidate_groups") or ([info["lane"]] if info.get("lane") else []))
    groups = [g for g in groups if g]
    return f",{','.join(groups)}," if groups else ""


def _severity(engine: Engine, info: dict[str, Any], data: dict[str, Any]) -> str | None:
    text = _props(info).get("slaSeverity")
    if text:
        return engine._evaluate_text(text, data, "slaSeverity")
    value = data.get("severity")
    return value if isinstance(value, str) and value else None


def _resume(row: SlaClockRow, now: datetime, calendar: BusinessCalendar) -> str:
    start = row.paused_at
    shift: str
    working_days = None
    if row.mode == "wd":
        try:
            working_days = calendar.working_days_between(start, now)
            row.remind_at = shift_working_days(calendar, row.remind_at, working_days)
            row.due_at = shift_working_days(calendar, row.due_at, working_days)
            row.cap_at = shift_working_days(calendar, row.cap_at, working_days)
            shift = f"{working_days} WD"
        except ValueError:
            working_days = None
    if working_days is None:
        delta = now - start
        row.remind_at, row.due_at, row.cap_at = row.remind_at + delta, row.due_at + delta, row.cap_at + delta
        shift = f"{int(delta.total_seconds())}s"
    row.paused_seconds = (row.paused_seconds or 0) + int((now - start).total_seconds())
    row.paused_working_days = (row.paused_working_days or 0) + (working_days or 0)
    row.pauses = [*(row.pauses or []), {"from": start.astimezone(SHANGHAI).isoformat(),
                                        "to": now.astimezone(SHANGHAI).isoformat(), "shift": shift}]
    row.paused_at, row.updated_at = None, now
    return shift


def _close(row: SlaClockRow, now: datetime, calendar: BusinessCalendar, cancelled: bool = False) -> None:
    """Close ``row`` at ``now``: ``met`` or ``missed`` by its T2, or ``cancelled`` with its case."""
    if row.paused_at is not None:
        _resume(row, now, calendar)
    row.closed_at, row.updated_at = now, now
    row.outcome = "cancelled" if cancelled else "met" if now <= row.due_at else "missed"


# -- queries -------------------------------------------------------------------------------------
def _states(state: str | Iterable[str] | None) -> set[str]:
    if state is None:
        return set()
    names = [s.strip() for s in (state.split(",") if isinstance(state, str) else state) if s and s.strip()]
    unknown = sorted(set(names) - set(STATES))
    if unknown:
        raise InvalidInput(f"unknown SLA state(s) {', '.join(unknown)}; use {', '.join(STATES)}")
    return set(names)


def list_clocks(engine: Engine, flow: str | None = None, group: str | None = None, severity: str | None = None,
                state: str | Iterable[str] | None = None, instance_id: str | None = None,
                limit: int | None = None) -> list[SlaClock]:
    wanted = _states(state)
    now = engine.clock.now()
    with engine.store.read() as session:
        query = (select(SlaClockRow, InstanceRow.business_key)
                 .join(InstanceRow, InstanceRow.id == SlaClockRow.instance_id))
        wants_closed = bool(wanted & {*CLOSED_STATES, "closed"})
        wants_open = not wanted or bool(wanted - {*CLOSED_STATES, "closed"})
        if not wants_closed:
            query = query.where(SlaClockRow.closed_at.is_(None))
        elif not wants_open:
            query = query.where(SlaClockRow.closed_at.is_not(None))
        if flow:
            query = query.where(SlaClockRow.definition_key == flow)
        if group:
            query = query.where(SlaClockRow.groups.like(f"%,{group},%"))
        if severity:
            query = query.where(SlaClockRow.severity == severity)
        if instance_id:
            query = query.where(SlaClockRow.instance_id == instance_id)
        query = query.order_by(SlaClockRow.due_at, SlaClockRow.id)
        clocks = []
        for row, business_key in session.execute(query):
            clock = _clock(row, business_key, now)
            if wanted and not _selected(clock, wanted):
                continue
            clocks.append(clock)
            if limit and len(clocks) >= limit:
                break
        return clocks


def _selected(clock: SlaClock, wanted: set[str]) -> bool:
    closed = clock.closed_at is not None
    return (clock.state in wanted or ("paused" in wanted and clock.paused)
            or ("open" in wanted and not closed) or ("closed" in wanted and closed))


def _clock(row: SlaClockRow, business_key: str | None, now: datetime) -> SlaClock:
    effective = row.paused_at or now
    remaining = None if row.closed_at is not None else int((row.due_at - effective).total_seconds())
    return SlaClock(row.id, row.instance_id, business_key, row.definition_key, row.scope, row.bpmn_id, row.name,
                    [g for g in (row.groups or "").split(",") if g], row.severity, row.policy_key,
                    row.policy_version, row.mode, row.budget, row.started_at, row.remind_at, row.due_at, row.cap_at,
                    state_of(row, now), row.paused_at is not None, row.paused_at, row.paused_seconds or 0,
                    row.paused_working_days or 0, remaining, row.at_risk_at, row.breached_at, row.closed_at,
                    list(row.pauses or []))


# -- worker scan ---------------------------------------------------------------------------------
def scan(engine: Engine, report: Report = _no_report, limit: int = 500) -> int:
    """Record clocks that became at risk or breached since the last scan (one transaction)."""
    now = engine.clock.now()
    noticed: list[tuple[str, SlaClockRow]] = []
    due = (select(SlaClockRow)
           .where(SlaClockRow.closed_at.is_(None), SlaClockRow.paused_at.is_(None),
                  or_(and_(SlaClockRow.at_risk_at.is_(None), SlaClockRow.remind_at <= now),
                      and_(SlaClockRow.breached_at.is_(None), SlaClockRow.due_at <= now)))
           .order_by(SlaClockRow.due_at, SlaClockRow.id).limit(limit))
    with engine.store.read() as session:  # an idle poll takes no write lock
        if session.scalars(due.with_only_columns(SlaClockRow.id)).first() is None:
            return 0
    with engine._command() as session:
        query = engine.store.lock_for_update(due, skip_locked=True)
        for row in session.scalars(query.execution_options(populate_existing=True)):
            data = {"clock": row.id, "name": row.name, "policy_key": row.policy_key, "severity": row.severity,
                    "groups": [g for g in row.groups.split(",") if g], "remind_at": row.remind_at.isoformat(),
                    "due_at": row.due_at.isoformat(), "cap_at": row.cap_at.isoformat()}
            if row.due_at <= now and row.breached_at is None:
                row.breached_at = now
                row.at_risk_at = row.at_risk_at or now
                kind = "sla_breached"
                data["late_seconds"] = int((now - row.due_at).total_seconds())
            else:
                row.at_risk_at = now
                kind = "sla_at_risk"
                data["remaining_seconds"] = int((row.due_at - now).total_seconds())
            session.add(EventRow(instance_id=row.instance_id, at=now, type=kind, actor=None,
                                 task_id=row.id if row.scope == "task" else None, bpmn_id=row.bpmn_id,
                                 data=json.loads(json.dumps(data, default=str))))
            noticed.append((kind, row))
    for kind, row in noticed:
        report(kind, instance=row.instance_id, clock=row.id, bpmn=row.bpmn_id,
               due=row.due_at.astimezone(SHANGHAI).isoformat(),
               severity=row.severity or "-")
    return len(noticed)
