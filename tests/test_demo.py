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


def test_the_simulated_operator_checks_read_only_fields_with_the_case_values_as_the_engine_does():
    """分类定级 with a severity other than the suggested one needs 定级理由: the demo's operator must see that
    rule (an if/then on the read-only suggestedSeverity) before submitting, or the engine refuses the form."""
    import random
    from datetime import UTC, datetime

    from engine.forms import FormRegistry
    from engine.simulation import FormFiller

    forms = FormRegistry()
    case = {"suggestedSeverity": "GENERAL", "category": "OUTAGE"}
    filler = FormFiller(random.Random(3), lambda: datetime(2026, 12, 7, 1, tzinfo=UTC))
    for severity in ("MAJOR", "URGENT"):
        data = filler.fill(forms.schema("classifyComplaint"), {"severity": severity}, case)
        assert data.get("gradeReason"), data
        forms.validate("classifyComplaint", data, "test", variables=case)  # what the engine does: no refusal
