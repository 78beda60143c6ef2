"""Alembic migrations: a database created by an earlier migration, with live data, upgrades to head.

Both stores (the ``db_url`` fixture). The data is real: cases started by today's engine on a
scratch SQLite file (a user task waiting with its timers, an async job waiting for a worker), copied
column by column into a database created with ``alembic upgrade 0001``; then ``alembic upgrade
head`` runs, the rows must be unchanged, the new columns must hold their defaults, and today's
engine must carry the old cases on to completion.
"""

from __future__ import annotations

from datetime import timedelta

import gridflow_worker_handlers  # noqa: F401  (registers the async billing handler)
import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from conftest import BPMN, TESTS
from sqlalchemy import MetaData, create_engine, inspect, select
from sqlalchemy.schema import CreateIndex

from engine import worklist
from engine.api import Engine
from engine.errors import GridflowError
from engine.forms import FORMS_DIR, FormRegistry
from engine.store import MIGRATIONS_DIR, Base

FIRST = "0001"
# SQLAlchemy cannot reflect SQLite's expression indexes (so alembic's comparison skips this one there):
# test_the_queue_index_is_the_models_and_sqlite_reads_the_queue_in_its_order checks it instead
pytestmark = [
    pytest.mark.filterwarnings("ignore:Skipped unsupported reflection of expression-based index ix_work_item_queue"),
    pytest.mark.filterwarnings("ignore:autogenerate skipping metadata-specified expression-based index "
                               "'ix_work_item_queue'"),
]


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def revision_of(url: str) -> str | None:
    sql = create_engine(url)
    try:
        with sql.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    finally:
        sql.dispose()


def rows_by_table(url: str, tables: dict[str, list[str]]) -> dict[str, list[tuple]]:
    """Every row of ``tables`` (only the listed columns), read without the models' type conversions."""
    sql = create_engine(url)
    try:
        metadata = MetaData()
        metadata.reflect(sql, only=list(tables))
        with sql.connect() as connection:
            return {name: sorted(tuple(row) for row in connection.execute(
                select(*(metadata.tables[name].c[c] for c in columns))))
                for name, columns in tables.items()}
    finally:
        sql.dispose()


def copy_rows(source_url: str, target_url: str) -> dict[str, list[str]]:
    """Copy every row of every table the target has, in dependency order, using the target's columns."""
    source, target = create_engine(source_url), create_engine(target_url)
    try:
        old, new = MetaData(), MetaData()
        old.reflect(source)
        new.reflect(target)
        copied: dict[str, list[str]] = {}
        with source.connect() as reading, target.begin() as writing:
            for table in new.sorted_tables:
                if table.name == "alembic_version" or table.name not in old.tables:
                    continue
                columns = [c.name for c in table.columns]
                missing = [c for c in columns if c not in old.tables[table.name].c]
                assert not missing, f"{table.name}: the newer schema lost columns {missing}"
                rows = [dict(r._mapping) for r in reading.execute(
                    select(*(old.tables[table.name].c[c] for c in columns)))]
                if rows:
                    writing.execute(table.insert(), rows)
                    serial = table.c.get("id") is not None and table.c.id.autoincrement is not False
                    if target.dialect.name == "postgresql" and serial and table.c.id.server_default is not None:
                        writing.exec_driver_sql(  # the ids were given: move the sequence past them
                            f"SELECT setval(pg_get_serial_sequence('{table.name}', 'id'), max(id)) FROM {table.name}")
                copied[table.name] = columns
        return copied
    finally:
        source.dispose()
        target.dispose()


@pytest.fixture
def old_cases(tmp_path, clock):
    """Cases in flight, made by today's engine on a scratch SQLite database: (url, review case, job case)."""
    url = f"sqlite:///{tmp_path / 'source.db'}"
    engine = Engine(url, clock=clock, forms=FormRegistry([TESTS / "forms", FORMS_DIR]))
    try:
        engine.deploy([BPMN / "sla_review.bpmn", BPMN / "async_billing.bpmn"], user="admin")
        review = engine.start("sla_review", {"amount": 10, "contactPhone": "13812345678"},
                              business_key="WO-MIG-1", user="agent1")
        billing = engine.start("async_billing", {"failures": 0}, business_key="WO-MIG-2")
        assert review.ready_tasks and review.timers and engine.jobs(billing.id)
    finally:
        engine.close()
    return url, review, billing


def test_a_database_created_by_0001_upgrades_to_head_with_its_data(db_url, old_cases, clock):
    source_url, review, billing = old_cases
    config = alembic_config(db_url)
    command.upgrade(config, FIRST)
    assert revision_of(db_url) == FIRST
    copied = copy_rows(source_url, db_url)
    assert {"definition", "instance", "work_item", "timer", "job", "event"} <= set(copied)
    before = rows_by_table(db_url, copied)
    assert before["instance"] and before["work_item"] and before["job"] and before["timer"]

    command.upgrade(config, "head")
    head = ScriptDirectory.from_config(config).get_current_head()
    assert head != FIRST and revision_of(db_url) == head
    assert rows_by_table(db_url, copied) == before  # every old row and value survived

    engine = Engine(db_url, clock=clock, forms=FormRegistry([TESTS / "forms", FORMS_DIR]))
    try:  # today's engine reads the old rows (the schema is current: no "run gridflow db upgrade")
        [job] = engine.jobs(billing.id)
        assert (job.state, job.idempotency_key, job.retry_cycle) == ("ready", None, None)  # columns of 0002
        case = engine.instance(review.id)
        assert (case.status, case.business_key, case.variables["amount"]) == ("running", "WO-MIG-1", 10)
        assert [t.id for t in case.ready_tasks] == [t.id for t in review.ready_tasks]
        assert [e.type for e in engine.history(review.id)][0] == "instance_started"

        # and carries the old cases on: a job without the new key columns, a task with its timers
        assert engine.run_jobs("w-after-upgrade") == 1
        assert engine.instance(billing.id).status != "error"
        clock.advance(timedelta(hours=1))
        done = engine.complete(review.ready_tasks[0].id, {"approved": True, "amount": 10}, user="agent1")
        assert done.status == "completed" and done.timers == []
        assert [e.type for e in engine.history(review.id)][-1] == "instance_completed"
    finally:
        engine.close()


def test_a_database_at_0003_gets_the_business_key_of_its_open_work_items(db_url, old_cases, clock):
    """0004 copies ``instance.business_key`` onto ``work_item``; until it runs, the engine refuses the database."""
    source_url, review, _billing = old_cases
    config = alembic_config(db_url)
    command.upgrade(config, "0003")
    copy_rows(source_url, db_url)
    forms = FormRegistry([TESTS / "forms", FORMS_DIR])
    with pytest.raises(GridflowError, match="gridflow db upgrade"):
        Engine(db_url, clock=clock, forms=forms)

    command.upgrade(config, "head")
    copied = rows_by_table(db_url, {"work_item": ["id", "state", "business_key"]})["work_item"]
    assert (review.ready_tasks[0].id, "open", "WO-MIG-1") in copied
    engine = Engine(db_url, clock=clock, forms=forms)
    try:
        [task] = engine.tasks(instance_id=review.id)
        assert (task.id, task.business_key) == (review.ready_tasks[0].id, "WO-MIG-1")
        assert engine.task(task.id).business_key == "WO-MIG-1"
    finally:
        engine.close()


def test_on_sqlite_0005_moves_the_workflow_state_to_the_end_of_the_row(tmp_path, old_cases, clock):
    """The columns searches read (``variables`` …) come before the ~100 KB state, so SQLite reads them without
    walking the state's overflow pages; the rows and the cases in flight are unchanged."""
    source_url, review, _billing = old_cases
    url = f"sqlite:///{tmp_path / 'at-0004.db'}"
    config = alembic_config(url)
    command.upgrade(config, "0004")
    copy_rows(source_url, url)
    wanted = {"instance": ["id", "business_key", "status", "variables", "rev", "state_json"]}
    before = rows_by_table(url, wanted)

    command.upgrade(config, "head")
    assert rows_by_table(url, wanted) == before
    sql = create_engine(url)
    try:
        with sql.connect() as connection:
            columns = [row[1] for row in connection.exec_driver_sql("PRAGMA table_info(instance)")]
    finally:
        sql.dispose()
    assert columns[-1] == "state_json" and columns.count("state_json") == 1, columns
    engine = Engine(url, clock=clock, forms=FormRegistry([TESTS / "forms", FORMS_DIR]))
    try:  # the moved state still runs the case
        done = engine.complete(review.ready_tasks[0].id, {"approved": True, "amount": 10}, user="agent1")
        assert done.status == "completed"
    finally:
        engine.close()


def test_the_migrations_build_exactly_the_schema_of_the_models(db_url):
    """A model changed without a migration (or the other way round) fails here, naming the difference."""
    command.upgrade(alembic_config(db_url), "head")
    sql = create_engine(db_url)
    try:
        with sql.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": False})
            differences = compare_metadata(context, Base.metadata)
        assert differences == []
        assert set(inspect(sql).get_table_names()) == set(Base.metadata.tables) | {"alembic_version"}
    finally:
        sql.dispose()


def test_the_core_views_of_the_tables_match_the_models():
    """engine.tables (the queue and the user directory without the ORM) names only real columns, typed alike."""
    from engine import tables

    for view in tables.ALL:
        model = Base.metadata.tables[view.name]
        for column in view.c:
            assert column.name in model.c, f"{view.name}.{column.name} is not a column of the model"
            assert type(column.type) is type(model.c[column.name].type), f"{view.name}.{column.name}"


def test_the_queue_index_is_the_models_and_sqlite_reads_the_queue_in_its_order(db_url):
    """0006's index holds the open work items in the queue's order (``due_at IS NULL`` as an expression).

    PostgreSQL: the comparison above covers it. SQLite: the index is built as the model declares it, and the
    queue (a user's, a group's, all) is read in its order with no sort."""
    command.upgrade(alembic_config(db_url), "head")
    sql = create_engine(db_url)
    try:
        with sql.connect() as connection:
            declared = next(i for i in Base.metadata.tables["work_item"].indexes if i.name == "ix_work_item_queue")
            if sql.dialect.name == "postgresql":
                built = connection.exec_driver_sql(
                    "SELECT indexdef FROM pg_indexes WHERE indexname = 'ix_work_item_queue'").scalar_one()
                assert "(due_at IS NULL)" in built, built
                return
            built = connection.exec_driver_sql(
                "SELECT sql FROM sqlite_master WHERE name = 'ix_work_item_queue'").scalar_one()
            assert built == str(CreateIndex(declared).compile(dialect=sql.dialect)).strip()
            for queue in (worklist.queue_query(viewer_name="agent1", viewer_groups=["agent", "expert"]),
                          worklist.queue_query(group="agent", limit=50), worklist.queue_query()):
                statement = str(queue.compile(dialect=sql.dialect, compile_kwargs={"literal_binds": True}))
                plan = [row[-1] for row in connection.exec_driver_sql("EXPLAIN QUERY PLAN " + statement)]
                assert "ix_work_item_queue" in plan[0] and not any("TEMP B-TREE" in step for step in plan), plan
    finally:
        sql.dispose()


def test_lint_needs_no_upgrade_and_creates_no_database(tmp_path, clock):
    """A process owner lints against the deployed processes of an old database, or of none at all."""
    from conftest import run_cli

    source = f"sqlite:///{tmp_path / 'source.db'}"
    engine = Engine(source, clock=clock)
    try:
        engine.deploy([BPMN / "child_revisit.bpmn"])
    finally:
        engine.close()
    old = f"sqlite:///{tmp_path / 'old.db'}"
    command.upgrade(alembic_config(old), "0006")
    copy_rows(source, old)
    parent = str(BPMN / "parent_calls_child.bpmn")

    linted = run_cli("lint", parent, db=old)
    assert linted.returncode == 0 and linted.stdout.splitlines()[-1] == "ok: parent_case", linted.stderr
    assert revision_of(old) == "0006"  # read, not upgraded
    refused = run_cli("start", "child_revisit", db=old)  # commands that run cases still ask for the upgrade
    assert refused.returncode == 1 and "run 'gridflow db upgrade'" in refused.stderr

    missing = tmp_path / "nowhere.db"
    alone = run_cli("lint", parent, db=f"sqlite:///{missing}")  # as deploy to a fresh database would answer
    assert alone.returncode == 1 and "calls process(es) not deployed and not in this batch" in alone.stderr
    both = run_cli("lint", parent, str(BPMN / "child_revisit.bpmn"), db=f"sqlite:///{missing}")
    assert both.returncode == 0 and both.stdout.splitlines()[-1] == "ok: parent_case, child_revisit", both.stderr
    assert not missing.exists()


def test_lint_does_not_create_a_database_named_by_a_file_uri(tmp_path, clock):
    missing = tmp_path / "uri.db"
    engine = Engine(f"sqlite:///file:{missing}?uri=true", clock=clock, auto_migrate=False)
    try:
        assert engine.store.is_missing()
        assert not engine.lint([BPMN / "child_revisit.bpmn"]).errors
    finally:
        engine.close()
    assert not missing.exists()
