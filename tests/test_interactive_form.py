"""``gridflow complete`` at a real terminal: the form walked field by field through a pseudo-terminal.

The CLI runs as a subprocess attached to a pty (pexpect), so click sees a terminal exactly as an
operator's shell gives it one. The prompts are the form's Chinese labels (tests/forms/testReview).
"""

from __future__ import annotations

import os
import sys
from datetime import datetime

import pexpect
import pytest
from conftest import BPMN, ROOT, SHANGHAI, TESTS

from engine.prompting import FormWalk

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=SHANGHAI)


@pytest.fixture
def case(engine):
    engine.init_db("boss")
    engine.add_user("li", ["agent"], user="boss")
    engine.add_user("qa", ["backoffice"], user="boss")
    engine.deploy([BPMN / "sla_review.bpmn"], user="boss")
    instance = engine.start("sla_review", {"amount": 150}, business_key="WO-PTY", user="li")
    return instance


def spawn(db_url: str, *args: str) -> pexpect.spawn:
    env = {**os.environ, "GRIDFLOW_DB": db_url, "GRIDFLOW_FORMS": str(TESTS / "forms"),
           "GRIDFLOW_HANDLERS": "gridflow_test_handlers", "GRIDFLOW_NOW": T0.isoformat(),
           "PYTHONPATH": os.pathsep.join([str(TESTS), str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "LANG": "C.UTF-8", "PYTHONIOENCODING": "utf-8", "COLUMNS": "160", "TERM": "dumb"}
    env.pop("GRIDFLOW_USER", None)
    return pexpect.spawn(sys.executable, ["-m", "cli", *args], cwd=str(ROOT), env=env, encoding="utf-8",
                         timeout=60, dimensions=(50, 160))


def test_form_is_walked_with_reprompts_and_a_confirmed_summary(engine, db_url, case):
    task = case.ready_tasks[0]
    child = spawn(db_url, "--user", "li", "complete", task.id[:8])
    try:
        child.expect("审核 .*case WO-PTY")
        child.expect(r"是否通过 \* \(y/n\): ")
        child.sendline("maybe")
        child.expect(r"是否通过: answer y \(是\) or n \(否\)")
        child.expect(r"是否通过 \* \(y/n\): ")
        child.sendline("y")
        child.expect(r"金额 \* \(number\) \[150\]: ")  # the case's value is the default
        child.sendline("-3")
        child.expect("金额: -3 must be at least 0")
        child.expect(r"金额 \* \(number\) \[150\]: ")
        child.sendline("")  # Enter keeps the default
        child.expect("联系电话: ")
        child.sendline("12345")  # not a mobile number: asked again, with the reason
        child.expect(r"联系电话: 12345 does not have the expected format \(pattern \^1\[3-9\]\\d\{9\}\$\)")
        child.expect("联系电话: ")
        child.sendline("13812345678")
        child.expect("意见: ")
        child.sendline("同意")
        child.expect("Summary / 确认:")
        child.expect(r"是否通过\s+是 \(yes\)")
        child.expect(r"金额\s+150")
        child.expect(r"联系电话\s+13812345678")
        child.expect(r"意见\s+同意")
        child.expect(r"Submit\? / 提交\? \[y/N\]: ")
        assert engine.tasks(instance_id=case.id)[0].state == "open"  # nothing written before the confirmation
        child.sendline("y")
        child.expect(f"instance {case.id} completed")
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 0, child.before
    after = engine.instance(case.id)
    assert after.status == "completed"
    assert {k: after.variables[k] for k in ("approved", "amount", "contactPhone", "comment")} == {
        "approved": True, "amount": 150, "contactPhone": "13812345678", "comment": "同意"}
    completion = next(e for e in engine.history(case.id) if e.type == "task_completed")
    assert completion.actor == "li"


def test_declining_the_summary_writes_nothing(engine, db_url, case):
    task = case.ready_tasks[0]
    before = engine.history(case.id)
    child = spawn(db_url, "--user", "li", "complete", task.id[:8])
    try:
        for prompt, answer in [(r"是否通过 \* \(y/n\): ", "n"), (r"金额 \* \(number\) \[150\]: ", "99.5"),
                               ("联系电话: ", ""), ("意见: ", "")]:
            child.expect(prompt)
            child.sendline(answer)
        child.expect(r"金额\s+99\.5")
        child.expect(r"联系电话\s+—")
        child.expect(r"\[y/N\]: ")
        child.sendline("n")
        child.expect("gridflow: not submitted; nothing was written")
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 1
    assert engine.history(case.id) == before
    assert engine.tasks(instance_id=case.id)[0].state == "open"


def test_a_refused_operator_is_told_before_any_field_is_asked(engine, db_url, case):
    child = spawn(db_url, "--user", "qa", "complete", case.ready_tasks[0].id[:8])
    try:
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 1
    assert "is for group agent; qa is in: backoffice" in child.before and "是否通过" not in child.before
    [refusal] = [e for e in engine.history(case.id) if e.type == "refused"]
    assert (refusal.actor, refusal.data["action"]) == ("qa", "complete")


def test_form_walk_orders_fields_offers_choices_and_asks_again_what_the_whole_form_requires():
    """The walker without a terminal: x-order, numbered oneOf choices, if/then required fields."""
    schema = {
        "type": "object", "x-order": ["decision", "reason"],
        "properties": {
            "reason": {"type": "string", "title": "原因", "minLength": 2},
            "decision": {"type": "string", "title": "处理意见", "description": "督办结论",
                         "oneOf": [{"const": "EXTEND", "title": "延期"}, {"const": "REASSIGN", "title": "改派"}]},
            "note": {"type": "string", "title": "备注", "readOnly": True},
        },
        "required": ["decision"],
        "allOf": [{"if": {"properties": {"decision": {"const": "EXTEND"}}}, "then": {"required": ["reason"]}}],
    }
    answers = iter(["3", "延期", "", "x", "客户要求"])
    said: list[str] = []
    asked: list[str] = []

    class Script:
        def ask(self, prompt):
            asked.append(prompt)
            return next(answers)

        def say(self, text):
            said.append(text)

        def confirm(self, question):
            return True

    data = FormWalk(schema, Script(), initial={"note": "只读"}).run()
    assert data == {"decision": "EXTEND", "reason": "客户要求"}
    assert asked == ["处理意见 * (1-2)", "处理意见 * (1-2)", "原因", "原因 *", "原因 *"]
    assert "   1) 延期  [EXTEND]" in said and "  督办结论" in said
    assert any("choose a number from 1 to 2" in s for s in said)
    assert "  ✗ 原因: required here" in said
    assert any("needs at least 2 character(s)" in s for s in said)
