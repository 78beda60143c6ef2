"""The database connection, its column types and transaction scopes; no ORM models.

:class:`Store` opens the database, checks and applies the Alembic migrations, and hands out
transactions: :meth:`Store.write` (one atomic engine command, an ORM session), :meth:`Store.read`
(an ORM session, rolled back) and :meth:`Store.connect` (a Core connection, rolled back). SQLite
(embedded default, WAL mode) takes its write lock at ``BEGIN IMMEDIATE``, so concurrent writers
queue instead of failing half-way; PostgreSQL locks rows with ``SELECT … FOR UPDATE``.

This module imports SQLAlchemy Core only: the ORM (``sqlalchemy.orm``) and the models
(:mod:`engine.store`) load when a command first opens a session, so a read such as
``gridflow tasks`` starts without them. All timestamps are stored in UTC and returned
timezone-aware.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from sqlalchemy import DateTime, Table, TypeDecorator, bindparam, create_engine, event, inspect, text, update
from sqlalchemy.engine import Connection
from sqlalchemy.engine import Engine as SqlEngine

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

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

    def result_processor(self, dialect, coltype):
        """On SQLite the driver returns the stored text (``2026-12-01 09:00:00.000000``): parse it with
        ``datetime.fromisoformat`` (C code, several times faster than the dialect's regular expression;
        a queue of ten thousand rows has thirty thousand timestamps); the UTC offset is parsed with it,
        which costs a tenth of ``.replace(tzinfo=UTC)`` afterwards. Other drivers return datetimes."""
        if dialect.name != "sqlite":
            return super().result_processor(dialect, coltype)
        parse = datetime.fromisoformat

        def process(value):
            return None if value is None else parse(value + "+00:00")

        return process


class EditableRows:
    """Rows read with SQLAlchemy Core as attribute namespaces, changed in place as ORM objects would be, then
    written back with :meth:`write`: one UPDATE per changed row, of its changed columns only.

    For the projections a step rewrites (work items, SLA clocks): the ORM's identity map and unit of work
    cost more than their few statements. Keyed by the table's ``id`` column. A changed value must be
    assigned (``row.pauses = [...]``), not mutated in place: the comparison is with a shallow copy.
    """

    def __init__(self, connection: Connection, table: Table, statement, params: dict[str, Any]):
        self.table = table
        self.rows = {row.id: SimpleNamespace(**row._mapping) for row in connection.execute(statement, params)}
        self._before = {row_id: dict(vars(row)) for row_id, row in self.rows.items()}

    def before(self, row_id: str, column: str) -> Any:
        """A column's value as read."""
        return self._before[row_id][column]

    def write(self, connection: Connection) -> None:
        statement = _update_by_id(self.table)
        for row_id, row in self.rows.items():
            was = self._before[row_id]
            changes = {name: value for name, value in vars(row).items() if value != was[name]}
            if changes:  # SET takes the columns named in the parameters
                connection.execute(statement, {"row_id": row_id, **changes})


@functools.cache
def _update_by_id(table: Table):
    """``UPDATE table SET … WHERE id = :row_id``, built once per table (the SET list follows the parameters)."""
    return update(table).where(table.c.id == bindparam("row_id"))


def new_row(table: Table, **values: Any) -> dict[str, Any]:
    """Every column of ``table``: ``values``, else None (rows inserted together need the same keys)."""
    names = [column.key for column in table.c]
    unknown = set(values) - set(names)
    if unknown:
        raise ValueError(f"{table.name} has no column {', '.join(sorted(unknown))}")
    return {name: values.get(name) for name in names}


_REVISION = re.compile(r"^revision(?:\s*:[^=]+)?\s*=\s*['\"]([^'\"]+)['\"]\s*$", re.MULTILINE)
_DOWN_REVISION = re.compile(r"^down_revision(?:\s*:[^=]+)?\s*=\s*(.+?)\s*$", re.MULTILINE)


@functools.lru_cache(maxsize=1)
def _migration_head() -> str | None:
    """The one head revision of ``migrations/versions``, read from the files; None when not simple."""
    revisions: set[str] = set()
    parents: set[str] = set()
    for path in (MIGRATIONS_DIR / "versions").glob("*.py"):
        text = path.read_text(encoding="utf-8")
        revision, down = _REVISION.search(text), _DOWN_REVISION.search(text)
        if revision is None or down is None:
            return None
        revisions.add(revision.group(1))
        value = down.group(1)
        if value != "None":
            if not re.fullmatch(r"['\"][^'\"]+['\"]", value):
                return None  # a merge revision (tuple) or an expression
            parents.add(value[1:-1])
    heads = revisions - parents
    return heads.pop() if len(heads) == 1 else None


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
    def connect(self) -> Iterator[Connection]:
        """A read-only Core connection (snapshot), rolled back at the end: no ORM, for fast reads."""
        with self.sql.connect() as connection:
            try:
                yield connection
            finally:
                connection.rollback()

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A read-only session (snapshot); rolled back at the end."""
        from sqlalchemy.orm import Session

        with Session(self.sql, expire_on_commit=False) as session:
            try:
                yield session
            finally:
                session.rollback()

    @contextmanager
    def write(self) -> Iterator[Session]:
        """One atomic command: commits when the block ends, rolls back everything on any exception."""
        from sqlalchemy.orm import Session

        with Session(self._writer, expire_on_commit=False) as session:
            try:
                yield session
                session.commit()
            except BaseException:
                session.rollback()
                raise

    def serialize_deploys(self, session: Session) -> None:
        """Make concurrent deploys take turns (PostgreSQL advisory lock until commit; SQLite already does)."""
        if not self.is_sqlite:
            session.execute(text("SELECT pg_advisory_xact_lock(4731029)"))

    def lock_for_update(self, query, skip_locked: bool = False, of=None):
        """Add ``FOR UPDATE`` where the database supports it (SQLite serializes writers already).

        ``skip_locked``: rows another transaction holds are left out instead of waited for
        (``FOR UPDATE SKIP LOCKED``; how workers share due timers, jobs and messages).
        """
        if self.is_sqlite:
            return query
        return query.with_for_update(skip_locked=skip_locked, of=of)

    def schema_is_current(self) -> bool:
        """True when the database is at the newest migration.

        Compares ``alembic_version`` with the revision ids written in the migration files, without
        importing Alembic (this runs at every CLI start); an unusual layout asks Alembic instead.
        """
        head = _migration_head()
        if head is None:
            from alembic.runtime.migration import MigrationContext
            from alembic.script import ScriptDirectory

            with self.sql.connect() as connection:
                current = MigrationContext.configure(connection).get_current_revision()
            return current == ScriptDirectory.from_config(self._alembic_config()).get_current_head()
        with self.sql.connect() as connection:
            versions = connection.exec_driver_sql("SELECT version_num FROM alembic_version").scalars().all()
        return list(versions) == [head]

    def upgrade(self) -> None:
        """Apply every pending Alembic migration (idempotent)."""
        from alembic import command

        config = self._alembic_config()
        with self.sql.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, "head")

    def has_tables(self) -> bool:
        return inspect(self.sql).has_table("alembic_version")

    def is_missing(self) -> bool:
        """True for a SQLite file that does not exist yet (opening it would create it); also for a
        ``file:`` URI (``sqlite:///file:/path/db?uri=true``)."""
        if not self.is_sqlite:
            return False
        path = self.sql.url.database or ""
        if path.startswith("file:"):
            path = path[len("file:"):].split("?", 1)[0]
        return path not in ("", ":memory:") and not Path(path).exists()

    def _alembic_config(self):
        from alembic.config import Config

        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS_DIR))
        config.set_main_option("sqlalchemy.url", self.url.replace("%", "%%"))
        return config

    def dispose(self) -> None:
        self.sql.dispose()
