"""Parallel and inclusive joins on a rework loop: every round waits for the branches of that round.

The diagrams: 方案设计 (``design``) and 现场勘查 (``survey``) run in parallel, 汇合 (``join``) merges them, 审核
(``review``) approves or sends the case back to before the split (``gwRework``). SpiffWorkflow 3.2.0 counted the
earlier rounds' join tasks, so from the second round on the join fired after one branch.
"""

from __future__ import annotations

import pytest
from conftest import BPMN, TESTS

from engine.api import Engine
from engine.forms import FORMS_DIR, FormRegistry


def _ready(instance) -> list[str]:
    return sorted(t.bpmn_id for t in instance.ready_tasks)


def _complete(engine, instance, bpmn_id: str, data: dict | None = None):
    [task] = [t for t in engine.instance(instance.id).ready_tasks if t.bpmn_id == bpmn_id]
    return engine.complete(task.id, data or {})


def _fresh(db_url, clock) -> Engine:
    """A second engine on the same database: it reads each step's state from the store."""
    return Engine(db_url, clock=clock, forms=FormRegistry([TESTS / "forms", FORMS_DIR]))


@pytest.mark.parametrize("key", ["rework_loop", "rework_loop_inclusive"])
@pytest.mark.parametrize("orders", [("design", "survey", "design"), ("design", "design", "survey"),
                                    ("survey", "design", "survey")])
def test_a_join_on_a_rework_loop_waits_for_both_branches_in_every_round(engine, db_url, clock, key, orders):
    engine.deploy([BPMN / f"{key}.bpmn"])
    case = engine.start(key, {"needDesign": True, "needSurvey": True})
    other = {"design": "survey", "survey": "design"}
    later = _fresh(db_url, clock)
    try:
        for round_no, first in enumerate(orders, start=1):
            steps = engine if round_no == 1 else later  # rounds 2 and 3 from the stored state
            assert _ready(steps.instance(case.id)) == ["design", "survey"]
            after_one = _complete(steps, case, first, {first: f"round {round_no}"})
            assert _ready(after_one) == [other[first]], f"round {round_no}: the join fired after {first} alone"
            after_both = _complete(steps, case, other[first], {other[first]: f"round {round_no}"})
            assert _ready(after_both) == ["review"] and after_both.status == "running"
            assert {k: after_both.variables[k] for k in other} == {k: f"round {round_no}" for k in other}
            done = _complete(steps, case, "review", {"approved": round_no == 3, "amount": 1})
        assert done.status == "completed" and done.incidents == []
        history = [e.type for e in later.history(case.id)]
        assert history.count("task_completed") == 9 and "instance_error" not in history
    finally:
        later.close()


def test_an_inclusive_join_on_a_loop_waits_for_the_branches_chosen_in_that_round(engine):
    engine.deploy([BPMN / "rework_loop_inclusive.bpmn"])
    case = engine.start("rework_loop_inclusive", {"needDesign": True, "needSurvey": True})
    _complete(engine, case, "survey", {"needSurvey": False})  # round 2 redoes the design only
    after = _complete(engine, case, "design")
    assert _ready(after) == ["review"]
    round_two = _complete(engine, case, "review", {"approved": False, "amount": 1})
    assert _ready(round_two) == ["design"]
    after = _complete(engine, case, "design", {"needSurvey": True})  # round 3: both again
    assert _ready(after) == ["review"]
    round_three = _complete(engine, case, "review", {"approved": False, "amount": 1})
    assert _ready(round_three) == ["design", "survey"]
    assert _ready(_complete(engine, case, "design")) == ["survey"]
    assert _ready(_complete(engine, case, "survey")) == ["review"]
    assert _complete(engine, case, "review", {"approved": True, "amount": 1}).status == "completed"

