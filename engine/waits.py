"""What an instance waits for, as rows: timers, message and signal catches, asynchronous jobs.

The ``timer``, ``message_subscription``, ``signal_subscription`` and ``job`` tables are projections
of the stored workflow state: after every step they list exactly what the new state waits for.
Rather than deleting and re-inserting them on every step, :func:`write_changes` compares the
waits of the state the step started from with the waits after it and writes only the difference
(a typical step changes one or two rows, or none).

"The state the step started from" is the :class:`Waits` this process wrote together with that
state, remembered on the cached workflow object (:func:`remember`), else what the tables hold
(:func:`stored`). Rows and state are written only together, in one transaction, so both answers
are the same; a cached object is used only when its state text is exactly the stored one
(``Runtime.load``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from types import SimpleNamespace
from typing import TYPE_CHECKING

from sqlalchemy import bindparam, delete, insert, select
from sqlalchemy.orm import Session

from .bpmn import caught_event
from .store import JobRow, SignalSubscriptionRow, SubscriptionRow, TimerRow

if TYPE_CHECKING:
    from .runtime import Runtime, SpecBundle

_REMEMBERED = "_gridflow_stored_waits"


@dataclass(frozen=True)
class Waits:
    """The wait rows of one state, keyed by the waiting (or READY asynchronous) task's id."""

    timers: dict[str, tuple[str, datetime]] = field(default_factory=dict)  # bpmn id, due (aware)
    messages: dict[str, tuple[str, str, str]] = field(default_factory=dict)  # bpmn id, name, correlation
    signals: dict[str, tuple[str, str]] = field(default_factory=dict)  # bpmn id, signal name
    jobs: dict[str, str] = field(default_factory=dict)  # bpmn id


NOTHING = Waits()


def of_workflow(runtime: Runtime, workflow, bundle: SpecBundle, subscriptions: list | None = None) -> Waits:
    """The waits of a workflow as it is now (no database access). ``subscriptions``: its message catches
    when the caller has them already (``Runtime.subscriptions`` of the workflow as it is now)."""
    if subscriptions is None:
        subscriptions = runtime.subscriptions(workflow, bundle)
    return Waits(
        timers={t.task_id: (t.bpmn_id, t.due_at) for t in runtime.waiting_timers(workflow)},
        messages={s.task_id: (s.bpmn_id, s.message_name, s.correlation) for s in subscriptions},
        signals={str(t.id): (t.task_spec.bpmn_id, caught_event(t)[0].name) for t in runtime.waiting_signals(workflow)},
        jobs={str(t.id): t.task_spec.bpmn_id for t in runtime.ready_handler_tasks(workflow)
              if runtime.is_async(t, bundle)},
    )


def remember(workflow, waits: Waits) -> None:
    """Record on the workflow object that the stored rows are ``waits`` (with the state it was dumped to)."""
    setattr(workflow, _REMEMBERED, waits)


def before_step(session: Session, workflow, instance_id: str) -> Waits:
    """The rows the instance has now: remembered on the (cached or newly created) object, else read."""
    remembered = getattr(workflow, _REMEMBERED, None)
    return remembered if remembered is not None else stored(session, instance_id)


def stored(session: Session, instance_id: str) -> Waits:
    """The wait rows of one instance as the tables hold them (four indexed reads)."""
    return Waits(
        timers={r.id: (r.bpmn_id, r.due_at) for r in session.execute(
            select(TimerRow.id, TimerRow.bpmn_id, TimerRow.due_at).where(TimerRow.instance_id == instance_id))},
        messages={r.id: (r.bpmn_id, r.message_name, r.correlation) for r in session.execute(
            select(SubscriptionRow.id, SubscriptionRow.bpmn_id, SubscriptionRow.message_name,
                   SubscriptionRow.correlation).where(SubscriptionRow.instance_id == instance_id))},
        signals={r.id: (r.bpmn_id, r.signal_name) for r in session.execute(
            select(SignalSubscriptionRow.id, SignalSubscriptionRow.bpmn_id, SignalSubscriptionRow.signal_name)
            .where(SignalSubscriptionRow.instance_id == instance_id))},
        jobs={r.id: r.bpmn_id for r in session.execute(
            select(JobRow.id, JobRow.bpmn_id).where(JobRow.instance_id == instance_id))},
    )


def new_message_waits(before: Waits, subscriptions) -> bool:
    """True when one of ``subscriptions`` (``runtime.SubscriptionView``) is not stored as it is now: only
    such a catch can match a message buffered earlier (a stored one would have received it on arrival)."""
    return any(before.messages.get(s.task_id) != (s.bpmn_id, s.message_name, s.correlation) for s in subscriptions)


def write_changes(session: Session, instance_id: str, before: Waits, after: Waits,
                  new_jobs: Callable[[list[str]], list[dict]]) -> None:
    """Make the rows of ``instance_id`` go from ``before`` to ``after``: delete what is gone or changed,
    insert what is new or changed. ``new_jobs(task_ids)`` gives the ``job`` rows of newly READY
    asynchronous tasks (a job row keeps its attempts and lease while its task stays READY)."""
    _sync(session, TimerRow, instance_id, before.timers, after.timers,
          lambda key, v: {"id": key, "instance_id": instance_id, "bpmn_id": v[0], "due_at": v[1]})
    _sync(session, SubscriptionRow, instance_id, before.messages, after.messages,
          lambda key, v: {"id": key, "instance_id": instance_id, "bpmn_id": v[0], "message_name": v[1],
                          "correlation": v[2]})
    _sync(session, SignalSubscriptionRow, instance_id, before.signals, after.signals,
          lambda key, v: {"id": key, "instance_id": instance_id, "bpmn_id": v[0], "signal_name": v[1]})
    gone = [key for key in before.jobs if key not in after.jobs]
    if gone:
        session.connection().execute(_statements(JobRow).delete, {"instance_id": instance_id, "ids": gone})
    added = [key for key in after.jobs if key not in before.jobs]
    if added:
        session.connection().execute(_statements(JobRow).insert, new_jobs(added))


def _sync(session: Session, row_class, instance_id: str, before: dict, after: dict, values) -> None:
    """Core statements on the session's connection (the ORM's bulk path costs more than the rows here);
    the instance row is flushed before, so the foreign keys hold."""
    statements = _statements(row_class)
    gone = [key for key, value in before.items() if after.get(key) != value]
    if gone:
        session.connection().execute(statements.delete, {"instance_id": instance_id, "ids": gone})
    added = [values(key, value) for key, value in after.items() if before.get(key) != value]
    if added:
        session.connection().execute(statements.insert, added)


@functools.cache
def _statements(row_class) -> SimpleNamespace:
    """The DELETE (of an instance's rows by id) and INSERT of one wait table, built once."""
    table = row_class.__table__
    return SimpleNamespace(
        delete=delete(table).where(table.c.instance_id == bindparam("instance_id"),
                                   table.c.id.in_(bindparam("ids", expanding=True))),
        insert=insert(table))
