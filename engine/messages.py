"""Messages (correlated, buffered with a time to live, broadcast) and signals.

``correlate`` delivers a message to the instance whose waiting catch matches its name and
correlation keys (a SQL query on ``message_subscription``). With no waiting instance, a process
whose start event catches the message is started. With neither, the message is **buffered** in
``message_buffer`` for its time to live: every step checks the buffer for the subscriptions it
just created (:func:`deliver_buffered_in_step`, inside the step's transaction), and the worker
sweeps the buffer against the subscriptions (:func:`deliver_pending`) and reports messages whose
time to live ran out (:func:`expire`, history event ``message_expired``). A message matching
several instances is refused unless it is sent as a broadcast.

Signals (:func:`signal`) go to every running instance with a waiting signal catch (intermediate
or boundary event) of that name, in one transaction; ``signal_subscription`` is the projection
that finds them without loading instances. A signal also starts one instance of each latest process
with a signal start event of that name.

Atomicity: each public function is one transaction, except :func:`deliver_pending`, which
delivers each buffered message in its own transaction.
"""

from __future__ import annotations

import copy
import json
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from SpiffWorkflow.bpmn import BpmnEvent
from sqlalchemy import and_, or_, select

from .bpmn import caught_event
from .errors import Conflict, InvalidInput, NotFound
from .runtime import StepRecord, correlation_string, failure_kept
from .sla import parse_duration
from .store import EventRow, InstanceRow, MessageBufferRow, SignalSubscriptionRow, SubscriptionRow
from .waits import Waits, new_message_waits

if TYPE_CHECKING:  # pragma: no cover
    from .api import Engine, Instance

DEFAULT_MESSAGE_TTL = "PT1H"

Report = Callable[..., None]


def _no_report(_action: str, **_fields: Any) -> None:
    return None


def default_ttl() -> str:
    """The time to live of a message sent without one: ``GRIDFLOW_MESSAGE_TTL``, else PT1H."""
    return (os.environ.get("GRIDFLOW_MESSAGE_TTL") or DEFAULT_MESSAGE_TTL).strip()


@dataclass(frozen=True)
class BufferedMessage:
    """A message that no instance waited for when it arrived."""

    id: int
    name: str
    correlation: dict[str, str]
    business_key: str | None
    data: dict[str, Any]
    state: str  # pending, delivered, expired
    created_at: datetime
    created_by: str | None
    expires_at: datetime
    delivered_at: datetime | None = None
    delivered_to: str | None = None
    expired_at: datetime | None = None
    buffered: bool = field(default=True)


def _correlation_dict(text: str) -> dict[str, str]:
    pairs = [part.partition("=") for part in text.split("&") if part]
    return {key: value for key, _, value in pairs}


def _view(engine: Engine, row: MessageBufferRow) -> BufferedMessage:
    return BufferedMessage(row.id, row.name, _correlation_dict(row.correlation), row.business_key,
                           engine.runtime.serializer.restore_data(row.data or {}), row.state, row.created_at,
                           row.created_by, row.expires_at, row.delivered_at, row.delivered_to, row.expired_at)


def _json(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def _describe(correlation: dict[str, Any], business_key: Any) -> str:
    keys = {**correlation, **({"business_key": business_key} if business_key is not None else {})}
    return ", ".join(f"{k}={v}" for k, v in sorted(keys.items())) or "no keys"


# -- correlate ---------------------------------------------------------------------------------
def correlate(engine: Engine, message_name: str, correlation: dict[str, Any] | None, data: dict[str, Any] | None,
              user: str | None, ttl: str | None, broadcast: bool) -> Instance | list[Instance] | BufferedMessage:
    correlation = dict(correlation or {})
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise InvalidInput(f"message data must be a JSON object, got {type(data).__name__}")
    business_key = correlation.pop("business_key", None)
    ttl_text = (ttl if ttl is not None else default_ttl()).strip()
    try:
        duration = parse_duration(ttl_text)
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"message time to live: {exc}") from None
    described = _describe(correlation, business_key)
    with engine._command() as session:
        engine._acting(session, user, "message")
        now = engine.clock.now()
        query = (select(SubscriptionRow).join(InstanceRow, InstanceRow.id == SubscriptionRow.instance_id)
                 .where(SubscriptionRow.message_name == message_name,
                        SubscriptionRow.correlation == correlation_string(correlation),
                        InstanceRow.status == "running")
                 .order_by(SubscriptionRow.instance_id, SubscriptionRow.id))
        if business_key is not None:
            query = query.where(InstanceRow.business_key == str(business_key))
        matches = list(session.scalars(query))
        instance_ids = sorted({m.instance_id for m in matches})
        if len(instance_ids) > 1 and not broadcast:
            raise Conflict(f"message '{message_name}' ({described}) matches {len(instance_ids)} instances: "
                           f"{', '.join(instance_ids[:5])}; give more correlation keys, or send it to all "
                           "of them as a broadcast (--all)")
        catches = {i: sorted((m for m in matches if m.instance_id == i), key=lambda m: (m.bpmn_id, m.id))
                   for i in instance_ids}
        first = catches[instance_ids[0]] if instance_ids else []
        if not broadcast and len(first) > 1:
            raise Conflict(f"message '{message_name}' ({described}) matches {len(first)} catches of instance "
                           f"{instance_ids[0]}: {', '.join(m.bpmn_id for m in first)}; give more correlation "
                           "keys, or send it to all of them as a broadcast (--all)")
        if instance_ids:
            delivered = []
            for instance_id in instance_ids:
                view = _deliver(engine, session, instance_id, catches[instance_id], message_name, correlation,
                                data, user, strict=not broadcast)
                if view is not None:
                    delivered.append(view)
            return delivered if broadcast else delivered[0]
        start = engine._message_start_definition(session, message_name)
        if start is not None:
            record = StepRecord("message_received", data={"message": message_name, "correlation": correlation,
                                                          "data": data})
            started = engine._start(session, start, {**correlation, **data}, business_key, user, [record],
                                    message=message_name)
            return [started] if broadcast else started
        expires_at = duration.add_to(now)
        if expires_at <= now:
            raise NotFound(f"no instance waits for message '{message_name}' ({described}) "
                           "and no deployed process starts with it")
        row = MessageBufferRow(name=message_name, correlation=correlation_string(correlation),
                               business_key=None if business_key is None else str(business_key),
                               data=_json(engine.runtime.serializer.convert_data(data)), state="pending",
                               created_at=now, created_by=user, expires_at=expires_at)
        session.add(row)
        session.flush()
        session.add(EventRow(instance_id=None, at=now, type="message_buffered", actor=user,
                             data=_json({"message_id": row.id, "message": message_name, "correlation": correlation,
                                         "business_key": row.business_key, "ttl": ttl_text,
                                         "expires_at": expires_at.isoformat(), "broadcast": broadcast})))
        return _view(engine, row)


def _deliver(engine: Engine, session, instance_id: str, catches: list[SubscriptionRow], message_name: str,
             correlation: dict[str, Any], data: dict[str, Any], user: str | None, strict: bool):
    """Give the message to each of ``catches`` (the instance's matching subscription rows) in one step."""
    instance = engine._lock_instance(session, instance_id)
    ids = [c.id for c in catches]
    still = {row.id: row for row in session.scalars(select(SubscriptionRow).where(SubscriptionRow.id.in_(ids))
                                                    .execution_options(populate_existing=True))}
    if instance.status != "running" or len(still) < len(ids):
        if strict:
            raise Conflict(f"instance {instance_id} stopped waiting for message '{message_name}' "
                           "while it was being delivered; try again")
        ids = [i for i in ids if i in still] if instance.status == "running" else []
        if not ids:
            return None
    bundle = engine._bundle(session, instance.definition_id)
    workflow = engine.runtime.load(bundle, instance.state_json)
    records = []
    for task_id in ids:
        engine.runtime.deliver_message(workflow, task_id, message_name, data)
        records.append(StepRecord("message_received", task_id, still[task_id].bpmn_id,
                                  {"message": message_name, "correlation": correlation, "data": data}))
    engine._advance_and_save(session, instance, bundle, workflow, records, user)
    return engine._instance_view(session, instance)


# -- the buffer ----------------------------------------------------------------------------------
def deliver_buffered_in_step(engine: Engine, session, instance: InstanceRow, workflow, subscriptions: list,
                             records: list[StepRecord], now: datetime, stored: Waits) -> bool:
    """Inside a step: give one buffered message to a catch that now waits for it. True if one was given.

    ``subscriptions``: the workflow's message catches now (``Runtime.subscriptions``). Only a catch that
    is not among the ``stored`` waits (new, or with new correlation values) is looked up: a catch already
    stored when a message arrived took it then. The worker's sweep (:func:`deliver_pending`) covers the
    rest, e.g. a business key assigned after the message came.
    """
    if not new_message_waits(stored, subscriptions):
        return False
    names = sorted({s.message_name for s in subscriptions})
    query = (select(MessageBufferRow)
             .where(MessageBufferRow.state == "pending", MessageBufferRow.name.in_(names),
                    MessageBufferRow.expires_at > now,
                    or_(MessageBufferRow.business_key.is_(None),
                        MessageBufferRow.business_key == instance.business_key))
             .order_by(MessageBufferRow.id))
    query = engine.store.lock_for_update(query, skip_locked=True)
    rows = list(session.scalars(query.execution_options(populate_existing=True)))
    for row in rows:
        for subscription in subscriptions:
            if row.name == subscription.message_name and row.correlation == subscription.correlation:
                _give(engine, row, instance, workflow, subscription, records, now)
                return True
    return False


def _give(engine: Engine, row: MessageBufferRow, instance: InstanceRow, workflow, subscription,
          records: list[StepRecord], now: datetime) -> None:
    data = engine.runtime.serializer.restore_data(row.data or {})
    engine.runtime.deliver_message(workflow, subscription.task_id, row.name, data)
    row.state, row.delivered_at, row.delivered_to = "delivered", now, instance.id
    record = StepRecord("message_received", subscription.task_id, subscription.bpmn_id,
                        {"message": row.name, "correlation": _correlation_dict(row.correlation),
                         "data": data, "buffered": row.id, "sent_at": row.created_at.isoformat(),
                         "sent_by": row.created_by})
    record.actor = row.created_by or "system"  # the sender, not the user whose step made the catch wait
    records.append(record)


def deliver_pending(engine: Engine, report: Report = _no_report, limit: int = 500) -> int:
    """Worker sweep: deliver buffered messages whose catch is waiting now (one transaction each)."""
    now = engine.clock.now()
    with engine.store.read() as session:
        candidates = session.execute(
            select(MessageBufferRow.id, SubscriptionRow.instance_id)
            .join(SubscriptionRow, and_(SubscriptionRow.message_name == MessageBufferRow.name,
                                        SubscriptionRow.correlation == MessageBufferRow.correlation))
            .join(InstanceRow, InstanceRow.id == SubscriptionRow.instance_id)
            .where(MessageBufferRow.state == "pending", MessageBufferRow.expires_at > now,
                   InstanceRow.status == "running",
                   or_(MessageBufferRow.business_key.is_(None),
                       MessageBufferRow.business_key == InstanceRow.business_key))
            .order_by(MessageBufferRow.id, SubscriptionRow.instance_id).limit(limit)).all()
    delivered = 0
    tried: set[int] = set()
    for message_id, instance_id in candidates:
        if message_id in tried:
            continue
        tried.add(message_id)
        given = _deliver_one(engine, message_id, instance_id, now)
        if given is not None:
            delivered += 1
            report("message_delivered", message=message_id, name=given, instance=instance_id)
    return delivered


def _deliver_one(engine: Engine, message_id: int, instance_id: str, now: datetime) -> str | None:
    with engine._command() as session:
        instance = engine._lock_instance(session, instance_id)
        if instance.status != "running":
            return None
        query = engine.store.lock_for_update(select(MessageBufferRow).where(MessageBufferRow.id == message_id),
                                             skip_locked=True)
        row = session.scalars(query.execution_options(populate_existing=True)).first()
        if row is None or row.state != "pending":
            return None
        bundle = engine._bundle(session, instance.definition_id)
        workflow = engine.runtime.load(bundle, instance.state_json)
        subscription = next((s for s in engine.runtime.subscriptions(workflow, bundle)
                             if s.message_name == row.name and s.correlation == row.correlation), None)
        if subscription is None:
            return None
        records: list[StepRecord] = []
        _give(engine, row, instance, workflow, subscription, records, now)
        engine._advance_and_save(session, instance, bundle, workflow, records, None)
        return row.name


def expire(engine: Engine, report: Report = _no_report, limit: int = 500) -> int:
    """Mark buffered messages past their time to live as expired; each is a ``message_expired`` event."""
    now = engine.clock.now()
    expired: list[tuple[int, str, str, str]] = []
    due = (select(MessageBufferRow)
           .where(MessageBufferRow.state == "pending", MessageBufferRow.expires_at <= now)
           .order_by(MessageBufferRow.expires_at, MessageBufferRow.id).limit(limit))
    with engine.store.read() as session:  # an idle poll takes no write lock
        if session.scalars(due.with_only_columns(MessageBufferRow.id)).first() is None:
            return 0
    with engine._command() as session:
        query = engine.store.lock_for_update(due, skip_locked=True)
        for row in session.scalars(query.execution_options(populate_existing=True)):
            row.state, row.expired_at = "expired", now
            session.add(EventRow(instance_id=None, at=now, type="message_expired", actor=None,
                                 data=_json({"message_id": row.id, "message": row.name,
                                             "correlation": _correlation_dict(row.correlation),
                                             "business_key": row.business_key,
                                             "sent_at": row.created_at.isoformat(), "sent_by": row.created_by,
                                             "expires_at": row.expires_at.isoformat()})))
            expired.append((row.id, row.name, row.correlation, row.expires_at.isoformat()))
    for message_id, name, correlation, expires_at in expired:
        report("message_expired", message=message_id, name=name, correlation=correlation or "-",
               expired_at=expires_at)
    return len(expired)


def list_messages(engine: Engine, state: str | None = None, name: str | None = None,
                  limit: int = 100) -> list[BufferedMessage]:
    with engine.store.read() as session:
        query = select(MessageBufferRow).order_by(MessageBufferRow.id.desc()).limit(limit)
        if state:
            query = query.where(MessageBufferRow.state == state)
        if name:
            query = query.where(MessageBufferRow.name == name)
        return [_view(engine, row) for row in session.scalars(query)]


# -- signals -------------------------------------------------------------------------------------
def signal(engine: Engine, name: str, data: dict[str, Any] | None, user: str | None) -> list[Instance]:
    """Broadcast signal ``name`` to every running instance waiting for it and start the processes a signal
    start event of that name starts (one transaction)."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise InvalidInput(f"signal data must be a JSON object, got {type(data).__name__}")
    if not name or not name.strip():
        raise InvalidInput("a signal needs a name")
    with engine._command() as session:
        engine._acting(session, user, "signal")
        return send_signal(engine, session, name, data, user)


#: how deep signals thrown by instances may set off further signals within one command
MAX_SIGNAL_DEPTH = 8
_signal_depth = threading.local()


def send_signal(engine: Engine, session, name: str, data: dict[str, Any], user: str | None,
                source: InstanceRow | None = None) -> list[Instance]:
    """Deliver signal ``name`` to every running instance waiting for it and start one instance of each
    latest process with a signal start event for it, inside the caller's transaction; returns those
    instances, the started ones last.

    ``source``: the instance whose process threw it (not delivered back to it: it caught what it could
    itself); the ``signal_sent`` event is then recorded on it, else it is a global event. A chain of
    signals thrown by the receivers deeper than MAX_SIGNAL_DEPTH is recorded as ``signal_undelivered``.
    """
    now = engine.clock.now()
    depth = getattr(_signal_depth, "value", 0)
    if depth >= MAX_SIGNAL_DEPTH:
        session.add(EventRow(instance_id=source.id if source else None, at=now, type="signal_undelivered",
                             data={"signal": name, "reason": f"more than {MAX_SIGNAL_DEPTH} signals in a chain"}))
        return []
    delivered: list[Instance] = []
    _signal_depth.value = depth + 1
    try:
        instance_ids = sorted(set(session.scalars(
            select(SignalSubscriptionRow.instance_id)
            .join(InstanceRow, InstanceRow.id == SignalSubscriptionRow.instance_id)
            .where(SignalSubscriptionRow.signal_name == name, InstanceRow.status == "running"))))
        for instance_id in instance_ids:
            if source is not None and instance_id == source.id:
                continue
            instance = engine._lock_instance(session, instance_id)
            if instance.status != "running":
                continue
            bundle = engine._bundle(session, instance.definition_id)
            workflow = engine.runtime.load(bundle, instance.state_json)
            waits = engine.runtime.waiting_signals(workflow, name)
            if not waits:
                continue
            caught = [t.task_spec.bpmn_id for t in waits]
            with failure_kept(workflow):
                workflow.catch(BpmnEvent(caught_event(waits[0])[0], payload=copy.deepcopy(data)))
            records = [StepRecord("signal_received", str(waits[0].id), waits[0].task_spec.bpmn_id,
                                  _received(name, data, source, caught_by=caught))]
            engine._advance_and_save(session, instance, bundle, workflow, records, user)
            delivered.append(engine._instance_view(session, instance))
        started = _start_by_signal(engine, session, name, data, user, source)
    finally:
        _signal_depth.value = depth
    session.add(EventRow(instance_id=source.id if source else None, at=now, type="signal_sent", actor=user,
                         data=_json({"signal": name, "instances": [v.id for v in delivered],
                                     "started": [v.id for v in started],
                                     "data": engine.runtime.serializer.convert_data(data)})))
    return delivered + started


def _received(name: str, data: dict[str, Any], source: InstanceRow | None, **more: Any) -> dict[str, Any]:
    """The ``signal_received`` record of a case: the signal, its data, and the throwing case if one threw it."""
    received = {"signal": name, "data": data, **more}
    if source is not None:
        received["from_instance"] = source.id
    return received


def _start_by_signal(engine: Engine, session, name: str, data: dict[str, Any], user: str | None,
                     source: InstanceRow | None) -> list[Instance]:
    """Start one instance of each latest process with a signal start event for ``name``; the signal's data
    are its start variables (none for a signal a process threw)."""
    started = []
    for definition in engine._start_definitions(session, "signal", name):
        started.append(engine._start(
            session, definition, data, None, user, [StepRecord("signal_received", data=_received(name, data, source))],
            prepare=lambda workflow: engine.runtime.start_by_signal(workflow, name, data)))
    return started
