"""SQLAlchemy 2.0 models and the transaction scopes of the engine.

One transaction per engine command (:meth:`Store.write`). SQLite (embedded default, WAL mode)
takes its write lock at ``BEGIN IMMEDIATE``, so concurrent writers queue instead of failing
half-way; PostgreSQL locks the instance row with ``SELECT … FOR UPDATE``. The ``instance.rev``
column is an optimistic lock checked on every UPDATE as a second line of defence.

All timestamps are stored in UTC and returned timezone-aware.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    create_engine,
    event,
    inspect,
)
from sqlalchemy.engine import Engine as SqlEngine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

MIGRATIONS_DIR = Path(__file__).with_name("migrations")


class UtcDateTime(TypeDecorator):
    """Aware datetimes in, aware (UTC) datetimes out; stored as naive UTC."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r} refused: every instant must carry a time zone")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value, dialect):
        return None if value is None else value.replace(tzinfo=UTC)


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

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    definition_id: Mapped[int] = mapped_column(ForeignKey("definition.id"), index=True)
    business_key: Mapped[str | None] = mapped_column(String(200), index=True)
    status: Mapped[str] = mapped_column(String(20), index=True)
    state_json: Mapped[str] = mapped_column(Text)
    variables: Mapped[dict] = mapped_column(JSON, default=dict)
    error: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[datetime] = mapped_column(UtcDateTime)
    started_by: Mapped[str | None] = mapped_column(String(200))
    ended_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    rev: Mapped[int] = mapped_column(Integer)

    __mapper_args__ = {"version_id_col": rev}


class WorkItemRow(Base):
    __tablename__ = "work_item"
    __table_args__ = (Index("ix_work_item_state_due", "state", "due_at"),)

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


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    dbapi_connection.isolation_level = None  # SQLAlchemy's begin event issues BEGIN itself
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def _sqlite_begin(connection) -> None:
    immediate = connection.get_execution_options().get("gridflow_write", False)
    connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


class Store:
    """The database: engine, schema migrations and transaction scopes."""

    def __init__(self, url: str):
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        kwargs = {"future": True}
        if self.is_sqlite:
            kwargs["connect_args"] = {"timeout": 30}
        else:
            kwargs.update(pool_pre_ping=True, pool_size=5, max_overflow=5)
        self.sql: SqlEngine = create_engine(url, **kwargs)
        if self.is_sqlite:
            event.listen(self.sql, "connect", _sqlite_pragmas)
            event.listen(self.sql, "begin", _sqlite_begin)
        self._writer = self.sql.execution_options(gridflow_write=True)

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A read-only session (snapshot); rolled back at the end."""
        with Session(self.sql, expire_on_commit=False) as session:
            try:
                yield session
            finally:
                session.rollback()

    @contextmanager
    def write(self) -> Iterator[Session]:
        """One atomic command: commits when the block ends, rolls back everything on any exception."""
        with Session(self._writer, expire_on_commit=False) as session:
            try:
                yield session
                session.commit()
            except BaseException:
                session.rollback()
                raise

    def lock_for_update(self, query):
        """Add ``FOR UPDATE`` where the database supports it (SQLite serializes writers already)."""
        return query if self.is_sqlite else query.with_for_update()

    def schema_is_current(self) -> bool:
        from alembic.runtime.migration import MigrationContext
        from alembic.script import ScriptDirectory

        with self.sql.connect() as connection:
            current = MigrationContext.configure(connection).get_current_revision()
        return current == ScriptDirectory.from_config(self._alembic_config()).get_current_head()

    def upgrade(self) -> None:
        """Apply every pending Alembic migration (idempotent)."""
        from alembic import command

        config = self._alembic_config()
        with self.sql.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, "head")

    def has_tables(self) -> bool:
        return inspect(self.sql).has_table("alembic_version")

    def _alembic_config(self):
        from alembic.config import Config

        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS_DIR))
        config.set_main_option("sqlalchemy.url", self.url.replace("%", "%%"))
        return config

    def dispose(self) -> None:
        self.sql.dispose()
