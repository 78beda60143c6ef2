"""SQLAlchemy 2.0 models of the engine's tables; the connection and transactions are in :mod:`engine.db`.

One transaction per engine command (:meth:`Store.write`). The ``instance.rev`` column is an
optimistic lock checked on every UPDATE as a second line of defence (PostgreSQL also locks the
instance row with ``SELECT … FOR UPDATE``). All timestamps are stored in UTC and returned
timezone-aware (:class:`UtcDateTime`).

Importing this module imports the ORM; code on the start-up path of a read-only command uses
:mod:`engine.tables` instead.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    column,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from .db import MIGRATIONS_DIR, Store, UtcDateTime

__all__ = ["MIGRATIONS_DIR", "Base", "Store", "UtcDateTime"]  # and the *Row models below


class Base(DeclarativeBase):
    pass


class DefinitionRow(Base):
    __tablename__ = "definition"
    __table_args__ = (UniqueConstraint("key", "version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key: Mapped[str] = mapped_column(String(200), index=True)
    version: Mapped[int] = mapped_column(Integer)
    name: Mapped[str | None] = mapped_column(String(400))
    content_hash: Mapped[str] = mapped_column(String(64), unique=True)
    filename: Mapped[str] = mapped_column(String(400))
    xml: Mapped[bytes] = mapped_column(LargeBinary)
    calls: Mapped[dict] = mapped_column(JSON, default=dict)  # called key -> definition id
    meta: Mapped[dict] = mapped_column(JSON, default=dict)  # element id -> lane, groups, form, topic...
    deployed_at: Mapped[datetime] = mapped_column(UtcDateTime)
    deployed_by: Mapped[str | None] = mapped_column(String(200))


class InstanceRow(Base):
    __tablename__ = "instance"
    # 0003: recent cases of a process (repeat-complaint rules) without reading every stored case
    __table_args__ = (Index("ix_instance_definition_started", "definition_id", "started_at"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    definition_id: Mapped[int] = mapped_column(ForeignKey("definition.id"), index=True)
    business_key: Mapped[str | None] = mapped_column(String(200), index=True)
    status: Mapped[str] = mapped_column(String(20), index=True)
    variables: Mapped[dict] = mapped_column(JSON, default=dict)
    error: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[datetime] = mapped_column(UtcDateTime)
    started_by: Mapped[str | None] = mapped_column(String(200))
    ended_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    rev: Mapped[int] = mapped_column(Integer)
    # 0005: last in the row on SQLite, so reading the columns above never walks its ~100 KB of overflow pages
    state_json: Mapped[str] = mapped_column(Text)

    __mapper_args__ = {"version_id_col": rev}


class WorkItemRow(Base):
    __tablename__ = "work_item"
    __table_args__ = (
        Index("ix_work_item_state_due", "state", "due_at"),
        # 0006: the work queue's order (engine.worklist.queue_query), so listing it needs no sort
        Index("ix_work_item_queue", "state", column("due_at").is_(None), "due_at", "created_at", "instance_id",
              "bpmn_id", "id"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)  # the SpiffWorkflow task id
    instance_id: Mapped[str] = mapped_column(ForeignKey("instance.id"), index=True)
    definition_key: Mapped[str] = mapped_column(String(200))
    bpmn_id: Mapped[str] = mapped_column(String(200))
    name: Mapped[str] = mapped_column(String(400))
    lane: Mapped[str | None] = mapped_column(String(200))
    candidate_groups: Mapped[list] = mapped_column(JSON, default=list)
    assignee: Mapped[str | None] = mapped_column(String(200), index=True)
    form_key: Mapped[str | None] = mapped_column(String(200))
    due_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    state: Mapped[str] = mapped_column(String(20))  # open, completed, cancelled
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    claimed_by: Mapped[str | None] = mapped_column(String(200))
    claimed_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    completed_by: Mapped[str | None] = mapped_column(String(200))
    completed_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    # 0004: a copy of instance.business_key (the engine keeps it equal), so the queue reads one table
    business_key: Mapped[str | None] = mapped_column(String(200))


class WorkItemGroupRow(Base):
    """One row per (open work item, candidate group): the group queue is an indexed join."""

    __tablename__ = "work_item_group"

    work_item_id: Mapped[str] = mapped_column(ForeignKey("work_item.id", ondelete="CASCADE"), primary_key=True)
    group_name: Mapped[str] = mapped_column(String(200), primary_key=True, index=True)


class TimerRow(Base):
    __tablename__ = "timer"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)  # the waiting task's id
    instance_id: Mapped[str] = mapped_column(ForeignKey("instance.id"), index=True)
    bpmn_id: Mapped[str] = mapped_column(String(200))
    due_at: Mapped[datetime] = mapped_column(UtcDateTime, index=True)
    locked_by: Mapped[str | None] = mapped_column(String(200))
    locked_until: Mapped[datetime | None] = mapped_column(UtcDateTime)


class JobRow(Base):
    __tablename__ = "job"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)  # the handler task's id
    instance_id: Mapped[str] = mapped_column(ForeignKey("instance.id"), index=True)
    bpmn_id: Mapped[str] = mapped_column(String(200))
    topic: Mapped[str] = mapped_column(String(200))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    retries_left: Mapped[int] = mapped_column(Integer)
    next_run_at: Mapped[datetime] = mapped_column(UtcDateTime, index=True)
    last_error: Mapped[str | None] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(20), index=True)  # ready, failed (incident)
    locked_by: Mapped[str | None] = mapped_column(String(200))
    locked_until: Mapped[datetime | None] = mapped_column(UtcDateTime)
    # 0002 (worker): the key every attempt gets, the Camunda retry cycle it runs on, when it was created
    idempotency_key: Mapped[str | None] = mapped_column(String(100))
    retry_cycle: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class IncidentRow(Base):
    __tablename__ = "incident"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    instance_id: Mapped[str] = mapped_column(ForeignKey("instance.id"), index=True)
    task_id: Mapped[str | None] = mapped_column(String(36))
    bpmn_id: Mapped[str | None] = mapped_column(String(200))
    message: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    resolved_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    resolved_by: Mapped[str | None] = mapped_column(String(200))
    # 0002 (worker): "step" (a synchronous step failed; instance status error) or "job" (an async job ran
    # out of retries; instance stays running), the job and topic, attempts made, how it was closed
    kind: Mapped[str] = mapped_column(String(20), default="step", server_default="step")
    job_id: Mapped[str | None] = mapped_column(String(36))
    topic: Mapped[str | None] = mapped_column(String(200))
    attempts: Mapped[int | None] = mapped_column(Integer)
    resolution: Mapped[str | None] = mapped_column(String(20))  # retried, resolved


class SubscriptionRow(Base):
    __tablename__ = "message_subscription"
    __table_args__ = (Index("ix_subscription_match", "message_name", "correlation"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)  # the waiting task's id
    instance_id: Mapped[str] = mapped_column(ForeignKey("instance.id"), index=True)
    bpmn_id: Mapped[str] = mapped_column(String(200))
    message_name: Mapped[str] = mapped_column(String(200))
    correlation: Mapped[str] = mapped_column(String(1000))  # canonical "k=v&k2=v2"


class EventRow(Base):
    """Append-only history. Rows are inserted, never updated or deleted."""

    __tablename__ = "event"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
                                    autoincrement=True)
    instance_id: Mapped[str | None] = mapped_column(String(36), index=True)
    at: Mapped[datetime] = mapped_column(UtcDateTime)
    type: Mapped[str] = mapped_column(String(40))
    actor: Mapped[str | None] = mapped_column(String(200))
    task_id: Mapped[str | None] = mapped_column(String(36))
    bpmn_id: Mapped[str | None] = mapped_column(String(200))
    data: Mapped[dict | None] = mapped_column(JSON)


class UserRow(Base):
    __tablename__ = "app_user"

    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    display_name: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)


class UserGroupRow(Base):
    __tablename__ = "app_user_group"

    user_name: Mapped[str] = mapped_column(ForeignKey("app_user.name", ondelete="CASCADE"), primary_key=True)
    group_name: Mapped[str] = mapped_column(String(200), primary_key=True, index=True)


class MessageBufferRow(Base):
    """A message that arrived before any catch waited for it; delivered when one appears, or expired."""

    __tablename__ = "message_buffer"
    __table_args__ = (Index("ix_message_buffer_match", "name", "correlation"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
                                    autoincrement=True)
    name: Mapped[str] = mapped_column(String(200))
    correlation: Mapped[str] = mapped_column(String(1000))  # canonical "k=v&k2=v2", as message_subscription
    business_key: Mapped[str | None] = mapped_column(String(200))
    data: Mapped[dict] = mapped_column(JSON, default=dict)
    state: Mapped[str] = mapped_column(String(20), index=True)  # pending, delivered, expired
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    created_by: Mapped[str | None] = mapped_column(String(200))
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime, index=True)
    delivered_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    delivered_to: Mapped[str | None] = mapped_column(String(36))
    expired_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class SignalSubscriptionRow(Base):
    """A waiting signal catch (intermediate or boundary event); a projection like message_subscription."""

    __tablename__ = "signal_subscription"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)  # the waiting task's id
    instance_id: Mapped[str] = mapped_column(ForeignKey("instance.id"), index=True)
    bpmn_id: Mapped[str] = mapped_column(String(200))
    signal_name: Mapped[str] = mapped_column(String(200), index=True)


class StartScheduleRow(Base):
    """The next firing of a timer start event of the latest deployed version of a process."""

    __tablename__ = "start_schedule"
    __table_args__ = (UniqueConstraint("definition_key", "bpmn_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    definition_key: Mapped[str] = mapped_column(String(200))
    definition_id: Mapped[int] = mapped_column(ForeignKey("definition.id"), index=True)
    bpmn_id: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(20))  # cycle, date, duration
    expression: Mapped[str] = mapped_column(String(400))  # the evaluated timer text, e.g. R/P1M
    next_due_at: Mapped[datetime | None] = mapped_column(UtcDateTime, index=True)  # None: exhausted
    cycles_left: Mapped[int] = mapped_column(Integer)  # -1: unbounded
    fired_count: Mapped[int] = mapped_column(Integer, default=0)
    last_fired_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    last_instance_id: Mapped[str | None] = mapped_column(String(36))


class SlaClockRow(Base):
    """One SLA clock per SLA-bearing task (id = task id) or case (id = instance id), written with the step."""

    __tablename__ = "sla_clock"
    __table_args__ = (Index("ix_sla_clock_open_due", "closed_at", "due_at"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    instance_id: Mapped[str] = mapped_column(ForeignKey("instance.id"), index=True)
    scope: Mapped[str] = mapped_column(String(10))  # task, case
    definition_key: Mapped[str] = mapped_column(String(200), index=True)
    bpmn_id: Mapped[str] = mapped_column(String(200))
    name: Mapped[str] = mapped_column(String(400))
    groups: Mapped[str] = mapped_column(String(1000), default="")  # ",agent,manager," for LIKE filters
    severity: Mapped[str | None] = mapped_column(String(40), index=True)
    policy_key: Mapped[str | None] = mapped_column(String(200))
    policy_version: Mapped[str | None] = mapped_column(String(40))
    mode: Mapped[str] = mapped_column(String(10))  # wd (working days), wall (24x7 duration), date (dueDate)
    budget: Mapped[str] = mapped_column(String(40))
    started_at: Mapped[datetime] = mapped_column(UtcDateTime)
    remind_at: Mapped[datetime] = mapped_column(UtcDateTime)
    due_at: Mapped[datetime] = mapped_column(UtcDateTime)
    cap_at: Mapped[datetime] = mapped_column(UtcDateTime)
    paused_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    paused_seconds: Mapped[int] = mapped_column(Integer, default=0)
    paused_working_days: Mapped[int] = mapped_column(Integer, default=0)
    pauses: Mapped[list] = mapped_column(JSON, default=list)
    at_risk_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    breached_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    closed_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    outcome: Mapped[str | None] = mapped_column(String(10))  # met, missed, cancelled
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)


class CaseKeyRow(Base):
    """0007: the text value of one declared searchable variable of one case (see :mod:`engine.search_keys`)."""

    __tablename__ = "case_key"
    __table_args__ = (Index("ix_case_key_lookup", "definition_key", "name", "value"),)

    instance_id: Mapped[str] = mapped_column(ForeignKey("instance.id"), primary_key=True)
    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    definition_key: Mapped[str] = mapped_column(String(200))
    value: Mapped[str] = mapped_column(String(400))


class SearchIndexRow(Base):
    """0007: a (process, variable) pair whose ``case_key`` rows cover every stored case since ``built_at``."""

    __tablename__ = "search_index"

    definition_key: Mapped[str] = mapped_column(String(200), primary_key=True)
    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    built_at: Mapped[datetime] = mapped_column(UtcDateTime)
