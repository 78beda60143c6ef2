"""The state dump reuses the JSON text of finished tasks and still writes exactly SpiffWorkflow's text."""

from __future__ import annotations

import json
from datetime import datetime

import pytest
from conftest import BPMN, SHANGHAI
from SpiffWorkflow.bpmn import BpmnEvent, BpmnWorkflow
from SpiffWorkflow.bpmn.serializer import BpmnWorkflowSerializer
from SpiffWorkflow.util.task import TaskState

from engine.bpmn import ClockedCycle, ClockedDuration, ClockedTimeDate, GridflowParser, SafeScriptEngine
from engine.clock import FixedClock
from engine.serializer import VERIFY_ENV, StateSerializer, _build_registry


def _inspection_workflow() -> BpmnWorkflow:
    """Multi-instance sub-processes (one per customer) with user and script tasks."""
    parser = GridflowParser()
    parser.add_bpmn_file(str(BPMN / "mi_local.bpmn"))
    workflow = BpmnWorkflow(parser.get_spec("inspect_each"), parser.get_subprocess_specs("inspect_each"),
                            script_engine=SafeScriptEngine(FixedClock(datetime(2026, 12, 1, 9, tzinfo=SHANGHAI))))
    workflow.task_tree.data.update({"customers": ["户A", "户B"], "planNo": "P-12"})
    workflow.do_engine_steps()
    return workflow


def _complete_first_ready(workflow: BpmnWorkflow, finding: str = "正常") -> bool:
    ready = workflow.get_tasks(state=TaskState.READY, manual=True)
    if not ready:
        return False
    ready[0].data.update({"finding": finding, "settlement": "已处理", "at": datetime(2026, 12, 1, tzinfo=SHANGHAI)})
    ready[0].run()
    workflow.do_engine_steps()
    return True


def _finished_onsite(workflow: BpmnWorkflow):
    """The first 现场检查 (``onsite``) task that is done, in whichever sub-process it ran."""
    return next(task for sub in (workflow, *workflow.subprocesses.values()) for task in sub.tasks.values()
                if task.task_spec.name == "onsite" and task.state == TaskState.COMPLETED)


def _reference_text(workflow: BpmnWorkflow) -> str:
    serializer = BpmnWorkflowSerializer(_build_registry(task_texts=False))
    return serializer.serialize_json(workflow)


def test_every_dump_is_spiffworkflows_text_while_finished_tasks_are_reused(monkeypatch):
    monkeypatch.delenv(VERIFY_ENV, raising=False)
    serializer, workflow = StateSerializer(), _inspection_workflow()
    reused = steps = 0
    previous: dict = {}
    while True:
        text = serializer.dumps(workflow)
        assert text == _reference_text(workflow)
        kept = workflow._gridflow_task_texts
        reused += sum(1 for task_id, (_, task_text) in kept.items()
                      if task_id in previous and previous[task_id][1] is task_text)
        previous = dict(kept)
        steps += 1
        if not _complete_first_ready(workflow):
            break
    assert workflow.is_completed() and steps == 7
    assert reused > 20  # the finished tasks of earlier steps were not encoded again
    loaded = serializer.loads(text, workflow.spec, workflow.subprocess_specs, workflow.script_engine)
    assert serializer.dumps(loaded) == text


def test_a_finished_task_that_runs_again_is_written_anew(monkeypatch):
    monkeypatch.delenv(VERIFY_ENV, raising=False)
    serializer, workflow = StateSerializer(), _inspection_workflow()
    _complete_first_ready(workflow)
    onsite = _finished_onsite(workflow)
    serializer.dumps(workflow)
    workflow.reset_from_task_id(onsite.id)  # the operator's step is undone: it is READY again
    assert serializer.dumps(workflow) == _reference_text(workflow)
    _complete_first_ready(workflow, finding="窃电")  # done again, with another finding
    text = serializer.dumps(workflow)
    assert text == _reference_text(workflow) and "窃电".encode("unicode_escape").decode() in text


def test_the_verification_mode_catches_a_finished_task_changed_behind_the_dumps_back(monkeypatch):
    """The reuse rests on finished tasks' data never changing; GRIDFLOW_VERIFY_STATE=1 checks it."""
    monkeypatch.setenv(VERIFY_ENV, "1")
    serializer, workflow = StateSerializer(), _inspection_workflow()
    _complete_first_ready(workflow)
    serializer.dumps(workflow)
    finished = _finished_onsite(workflow)
    finished.data["finding"] = "窃电"  # breaks the contract: no engine code does this
    with pytest.raises(AssertionError, match="state dump differs from SpiffWorkflow's serializer"):
        serializer.dumps(workflow)


@pytest.mark.parametrize("items", [[{"q": 1}], {"line": {"q": 1}}], ids=["list of dicts", "nested dict"])
def test_a_join_does_not_rewrite_what_a_finished_task_recorded(monkeypatch, items):
    """SpiffWorkflow copies data between tasks shallowly, and a parallel join merged one branch's line items
    into the other's in place: the finished 修改明细 task's recorded q=2 turned into q=1 (and the kept text
    no longer matched SpiffWorkflow's). engine.bpmn's merge copies a nested value before merging into it."""
    monkeypatch.setenv(VERIFY_ENV, "1")  # each dump below is also compared with SpiffWorkflow's own
    parser = GridflowParser()
    parser.add_bpmn_file(str(BPMN / "parallel_line_items.bpmn"))
    workflow = BpmnWorkflow(parser.get_spec("parallel_line_items"), {},
                            script_engine=SafeScriptEngine(FixedClock(datetime(2026, 12, 1, 9, tzinfo=SHANGHAI))))
    workflow.task_tree.data["items"] = items
    workflow.do_engine_steps()
    serializer = StateSerializer()
    edited = [{"q": 2}] if isinstance(items, list) else {"line": {"q": 2}}

    def complete(bpmn_id: str, data: dict):
        task = next(t for t in workflow.get_tasks(state=TaskState.READY) if t.task_spec.bpmn_id == bpmn_id)
        task.data.update(data)
        task.run()
        workflow.do_engine_steps()
        serializer.dumps(workflow)  # raises if the text differs from SpiffWorkflow's
        return task

    complete("b", {})
    editor = complete("a1", {"items": edited})
    complete("a2", {})  # the join merges branch b's items into branch a's
    assert [t.task_spec.bpmn_id for t in workflow.get_tasks(state=TaskState.READY)] == ["c"]
    assert editor.data["items"] == edited  # as 修改明细 completed it


MI_RESET = """<?xml version="1.0" encoding="UTF-8"?>
<bpmn:definitions xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL"
    xmlns:camunda="http://camunda.org/schema/1.0/bpmn" id="d" targetNamespace="http://gridflow.test">
  <bpmn:process id="mi_reset" isExecutable="true">
    <bpmn:startEvent id="s"/>
    <bpmn:userTask id="check" camunda:candidateGroups="g">
      <bpmn:multiInstanceLoopCharacteristics camunda:collection="items" camunda:elementVariable="item"/>
    </bpmn:userTask>
    <bpmn:userTask id="after" camunda:candidateGroups="g"/>
    <bpmn:endEvent id="e"/>
    <bpmn:sequenceFlow id="f1" sourceRef="s" targetRef="check"/>
    <bpmn:sequenceFlow id="f2" sourceRef="check" targetRef="after"/>
    <bpmn:sequenceFlow id="f3" sourceRef="after" targetRef="e"/>
  </bpmn:process>
</bpmn:definitions>
"""


def test_a_finished_multi_instance_task_that_takes_a_rerun_instance_is_written_anew(monkeypatch, tmp_path):
    """An instance reset and run again merges its result into the finished multi-instance task without
    changing its state (found by a fuzzing helper): such tasks and the task after them are never reused."""
    monkeypatch.setenv(VERIFY_ENV, "1")
    (tmp_path / "mi_reset.bpmn").write_text(MI_RESET, encoding="utf-8")
    parser = GridflowParser()
    parser.add_bpmn_file(str(tmp_path / "mi_reset.bpmn"))
    workflow = BpmnWorkflow(parser.get_spec("mi_reset"), {},
                            script_engine=SafeScriptEngine(FixedClock(datetime(2026, 12, 1, 9, tzinfo=SHANGHAI))))
    workflow.task_tree.data["items"] = [{"v": 1}, {"v": 2}, {"v": 3}]
    workflow.do_engine_steps()
    serializer = StateSerializer()

    def ready():
        return [t for t in workflow.get_tasks(state=TaskState.READY) if t.task_spec.name == "check [child]"]

    while ready():
        task = ready()[0]
        task.data["item"] = {"v": task.data["item"]["v"] * 10}
        task.run()
        workflow.do_engine_steps()
        serializer.dumps(workflow)
    done = [t for t in workflow.get_tasks(state=TaskState.COMPLETED) if t.task_spec.name == "check [child]"]
    for instance in done[:2]:
        workflow.reset_from_task_id(instance.id)
    workflow.do_engine_steps()
    serializer.dumps(workflow)
    task = ready()[0]
    task.data["item"] = {"v": 999}
    task.run()
    workflow.do_engine_steps()
    assert "999" in serializer.dumps(workflow)  # equal to SpiffWorkflow's text (checked), with the re-run result


@pytest.mark.parametrize("timer", [ClockedTimeDate("payDeadline", "payDeadline"), ClockedDuration("overdue", "'PT72H'"),
                                   ClockedCycle("remind", "'R3/PT1H'")], ids=lambda t: type(t).__name__)
def test_a_caught_clocked_timer_event_round_trips(timer):
    """An event-based gateway's task keeps the timer event it caught in its internal data (state, not spec)."""
    registry = _build_registry()
    restored = registry.restore(json.loads(json.dumps(registry.convert(BpmnEvent(timer)))))
    assert type(restored.event_definition) is type(timer) and restored.event_definition == timer
    assert restored.event_definition.expression == timer.expression
