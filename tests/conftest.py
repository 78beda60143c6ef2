"""Shared fixtures: a real SQLite file and, when GRIDFLOW_TEST_PG is set, a real PostgreSQL database.

Every engine test that takes ``db_url`` runs on both stores. Without GRIDFLOW_TEST_PG (a
developer machine with no server) the PostgreSQL variant is skipped with the reason; CI
always sets it (see .ci/run).
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

ROOT = Path(__file__).resolve().parent.parent
TESTS = Path(__file__).resolve().parent
BPMN = TESTS / "bpmn"
SHANGHAI = ZoneInfo("Asia/Shanghai")
# every state dump of every test (subprocesses too) is compared with SpiffWorkflow's own serializer
os.environ.setdefault("GRIDFLOW_VERIFY_STATE", "1")

sys.path.insert(0, str(TESTS))
import gridflow_test_handlers  # noqa: E402,F401  (registers the test handlers)


def pytest_configure(config):
    if os.environ.get("CI") and not os.environ.get("GRIDFLOW_TEST_PG"):
        raise pytest.UsageError("CI must set GRIDFLOW_TEST_PG (see .ci/run): PostgreSQL tests may not be skipped")


def _pg_admin_url() -> str | None:
    return os.environ.get("GRIDFLOW_TEST_PG")


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path):
    """A fresh, empty database URL on each store."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'gridflow.db'}"
        return
    admin = _pg_admin_url()
    if not admin:
        pytest.skip("PostgreSQL not available: set GRIDFLOW_TEST_PG (CI does)")
    import sqlalchemy

    name = f"gf_test_{uuid.uuid4().hex[:12]}"
    engine = sqlalchemy.create_engine(admin, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    base = admin.rsplit("/", 1)[0]
    yield f"{base}/{name}"
    with engine.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    engine.dispose()


@pytest.fixture
def sqlite_url(tmp_path):
    return f"sqlite:///{tmp_path / 'gridflow.db'}"


@pytest.fixture
def clock():
    from engine.clock import FixedClock

    return FixedClock(datetime(2026, 12, 1, 9, 0, tzinfo=SHANGHAI))


@pytest.fixture
def engine(db_url, clock):
    from engine.api import Engine
    from engine.forms import FORMS_DIR, FormRegistry

    eng = Engine(db_url, clock=clock, forms=FormRegistry([TESTS / "forms", FORMS_DIR]))
    yield eng
    eng.close()


def run_cli(*args: str, db: str, env: dict | None = None, input: str | None = None,
            timeout: float = 120) -> subprocess.CompletedProcess:
    """Run the real ``gridflow`` console script in a subprocess."""
    full_env = {**os.environ, "GRIDFLOW_DB": db, "GRIDFLOW_HANDLERS": "gridflow_test_handlers",
                "PYTHONPATH": os.pathsep.join([str(TESTS), str(ROOT), os.environ.get("PYTHONPATH", "")])}
    full_env.pop("GRIDFLOW_USER", None)
    full_env.pop("GRIDFLOW_NOW", None)
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "cli", *args], capture_output=True, text=True, env=full_env,
                          input=input, timeout=timeout, cwd=str(ROOT))
