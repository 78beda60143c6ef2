"""`gridflow demo`, the README's main job, as a user runs it: a real subprocess on a fresh SQLite file."""

from __future__ import annotations

import json

from conftest import run_cli


def _demo(tmp_path, name):
    result = run_cli("demo", "--cases", "24", "--days", "2", "--seed", "11", "--db-path", str(tmp_path / name),
                     "--json", db=f"sqlite:///{tmp_path / 'unused.db'}", timeout=600)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_demo_simulates_the_service_centre_and_is_reproducible(tmp_path):
    first = _demo(tmp_path, "a.db")
    assert (tmp_path / "a.db").exists()
    flows = first["flows"]
    for key in ("presale_plan", "aftersale_service", "complaint_handling"):
        assert flows[key]["cases"] > 0, key
        assert flows[key]["cases"] == flows[key]["completed"] + flows[key]["open"]
    assert first["processes_not_deployed"] == []
    assert first["tasks_completed"] > 50
    assert 0 < first["sla_met_percent"] <= 100
    assert first["reminders"] > 0 and first["supervision_tasks"] > 0
    assert sum(first["complaints_by_severity"].values()) == flows["complaint_handling"]["cases"]
    assert first["errors"] == {}
    second = _demo(tmp_path, "b.db")
    for summary in (first, second):
        summary.pop("database")
    assert first == second  # one seed, one run
