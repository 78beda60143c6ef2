"""Workflow state <-> JSON, without the spec.

SpiffWorkflow's serializer embeds the whole spec in every document; gridflow stores only the
instance state and re-attaches the cached, immutable spec objects on load (about half the cost
of a step). Task data may hold ``Decimal``, ``date``, aware ``datetime``, ``timedelta``, ``UUID``
and ``set`` values; each round-trips unchanged.

A dump re-encodes only the tasks that can still change: the JSON text of a finished task (and its
finished parent, which its data delta is taken against) is kept on the workflow object and reused
while its state, children and parent are the same. The text of the whole document is exactly the
text SpiffWorkflow's own serializer writes; with ``GRIDFLOW_VERIFY_STATE=1`` every dump is also made
by SpiffWorkflow's serializer and compared (the test suite runs this way).
"""

from __future__ import annotations

import json
import os
from datetime import date, datetime
from decimal import Decimal
from uuid import UUID

from SpiffWorkflow.bpmn import BpmnWorkflow
from SpiffWorkflow.bpmn.serializer import BpmnWorkflowSerializer
from SpiffWorkflow.bpmn.serializer.default.event_definition import TimerConditionalEventDefinitionConverter
from SpiffWorkflow.bpmn.serializer.default.workflow import (
    BpmnSubWorkflowConverter,
    BpmnWorkflowConverter,
    WorkflowConverter,
)
from SpiffWorkflow.bpmn.serializer.helpers.spec import EventDefinitionConverter
from SpiffWorkflow.bpmn.specs.mixins.multiinstance_task import LoopTask
from SpiffWorkflow.bpmn.util.subworkflow import BpmnSubWorkflow
from SpiffWorkflow.camunda.serializer.config import CAMUNDA_CONFIG
from SpiffWorkflow.camunda.serializer.event_definition import MessageEventDefinitionConverter
from SpiffWorkflow.util.task import TaskState

from .bpmn import (
    ClockedCycle,
    ClockedDuration,
    ClockedTimeDate,
    GridflowMessageEventDefinition,
    GridflowSignalEventDefinition,
    SafeScriptEngine,
)

#: set to "1" to check every dump against SpiffWorkflow's own serializer (the test suite does)
VERIFY_ENV = "GRIDFLOW_VERIFY_STATE"
#: attribute of a top-level workflow object: {task id: (fingerprint, JSON text)} of its finished tasks
_TASK_TEXTS = "_gridflow_task_texts"
_FINISHED = TaskState.COMPLETED | TaskState.CANCELLED


class StateOnlyWorkflowConverter(BpmnWorkflowConverter):
    """Writes tasks, data and pending events; restores onto specs supplied by the caller."""

    def to_dict(self, workflow):
        dct = WorkflowConverter.to_dict(self, workflow)
        dct["subprocesses"] = self.mapping_to_dict(workflow.subprocesses)
        dct["bpmn_events"] = self.registry.convert(workflow.bpmn_events)
        return dct

    def from_dict(self, dct, spec=None, subprocess_specs=None, script_engine=None):
        workflow = self.target_class(spec, subprocess_specs, script_engine=script_engine, deserializing=True)
        workflow.tasks = self.mapping_from_dict(dct["tasks"], UUID, workflow=workflow)
        workflow.task_tree = workflow.tasks.get(UUID(dct["root"]))
        self.set_default_attributes(workflow, dct)
        self.subprocesses_from_dict(dct["subprocesses"], workflow)
        workflow.bpmn_events = self.registry.restore(dct.pop("bpmn_events", []))
        return workflow


class _Tasks:
    """A workflow's task mapping left in the converted dict for :class:`StateSerializer` to write."""

    __slots__ = ("tasks",)

    def __init__(self, tasks):
        self.tasks = tasks


def _with_tasks_unconverted(converter, workflow) -> dict:
    """``WorkflowConverter.to_dict`` (same keys, same order) with the tasks as :class:`_Tasks`."""
    registry = converter.registry
    return {
        "data": registry.convert(registry.clean(workflow.data)),
        "correlations": workflow.correlations,
        "last_task": str(workflow.last_task.id) if workflow.last_task is not None else None,
        "success": workflow.success,
        "completed": workflow.completed,
        "tasks": _Tasks(workflow.tasks),
        "root": str(workflow.task_tree.id),
    }


class TaskTextWorkflowConverter(StateOnlyWorkflowConverter):
    """The top workflow's dict with its tasks left to the writer (see ``StateSerializer.dumps``)."""

    def to_dict(self, workflow):
        dct = _with_tasks_unconverted(self, workflow)
        dct["subprocesses"] = self.mapping_to_dict(workflow.subprocesses)
        dct["bpmn_events"] = self.registry.convert(workflow.bpmn_events)
        return dct


class TaskTextSubWorkflowConverter(BpmnSubWorkflowConverter):
    """A sub-process's dict with its tasks left to the writer."""

    def to_dict(self, workflow):
        dct = _with_tasks_unconverted(self, workflow)
        dct["parent_task_id"] = str(workflow.parent_task_id)
        dct["spec"] = workflow.spec.name
        return dct


def _build_registry(task_texts: bool = True):
    """The converters; ``task_texts=False`` gives SpiffWorkflow's own task writing (the reference)."""
    config = dict(CAMUNDA_CONFIG)
    config[BpmnWorkflow] = TaskTextWorkflowConverter if task_texts else StateOnlyWorkflowConverter
    if task_texts:
        config[BpmnSubWorkflow] = TaskTextSubWorkflowConverter
    config[GridflowMessageEventDefinition] = MessageEventDefinitionConverter
    config[GridflowSignalEventDefinition] = EventDefinitionConverter
    for timer in (ClockedTimeDate, ClockedDuration, ClockedCycle):  # an event-based gateway's task keeps
        config[timer] = TimerConditionalEventDefinitionConverter  # the timer event it caught (a BpmnEvent)
    registry = BpmnWorkflowSerializer.configure(config)
    registry.register(Decimal, lambda v: {"value": str(v)}, lambda v: Decimal(v["value"]))
    registry.register(date, lambda v: {"value": v.isoformat()}, lambda v: date.fromisoformat(v["value"]))
    registry.register(set, lambda v: {"items": list(v)}, lambda v: set(v["items"]), typename="set")
    registry.register(frozenset, lambda v: {"items": list(v)}, lambda v: frozenset(v["items"]))
    # the most frequent typed value (SLA instants in every task's data): the same dict SpiffWorkflow's
    # converter builds, without its two extra calls and dict update per value (a state dump has ~165);
    # tests/test_engine_core.py checks the text is SpiffWorkflow's own
    registry.convert_to_dict[registry.typenames[datetime]] = lambda v: {"value": v.isoformat(),
                                                                        "typename": "datetime"}
    return registry


def _fingerprint(task):
    """What a finished task's JSON text depends on besides its (then frozen) data, or None if it may change.

    A task's data is written as a delta against its parent's, so the parent must be finished too.
    Finished tasks' data and internal data are not changed by SpiffWorkflow or gridflow (only live
    tasks receive variables) — except by resolving an incident with corrected data, which drops the
    texts concerned (:func:`forget_texts`); a state change (a reset) changes ``last_state_change``. The exception is
    a loop or multi-instance task: an instance run again after a reset merges its result into the
    finished task's data without changing its state, so neither it nor its next task is reused.
    """
    if not task.state & _FINISHED or isinstance(task.task_spec, LoopTask):
        return None
    parent = task.parent
    if parent is None:
        return task.state, task.last_state_change, task.triggered, tuple(task._children), None
    if not parent.state & _FINISHED or isinstance(parent.task_spec, LoopTask):
        return None
    return (task.state, task.last_state_change, task.triggered, tuple(task._children),
            parent.id, parent.state, parent.last_state_change)


def forget_texts(workflow, tasks) -> None:
    """Drop the JSON text kept for ``tasks`` (see :meth:`StateSerializer.dumps`), so the next dump encodes
    them anew. For a finished task whose data a command changes on purpose, with its children (whose text
    is a delta against its data); nothing else may change a finished task."""
    kept = workflow.top_workflow.__dict__.get(_TASK_TEXTS)
    for task in tasks if kept else ():
        kept.pop(task.id, None)


class StateSerializer:
    """Dumps and loads workflow state as JSON text (spec not included)."""

    def __init__(self):
        self._serializer = BpmnWorkflowSerializer(_build_registry())
        self._encode = self._serializer._encoder_cls().encode
        self._reference = (BpmnWorkflowSerializer(_build_registry(task_texts=False))
                           if os.environ.get(VERIFY_ENV) == "1" else None)

    def dumps(self, workflow: BpmnWorkflow) -> str:
        """The state as SpiffWorkflow's ``serialize_json`` writes it (minus the spec), byte for byte.

        Finished tasks are written from the text kept on ``workflow`` by the previous dump when they
        have not changed since (see :func:`_fingerprint`); the kept texts are replaced by this dump's.
        """
        registry = self._serializer.registry
        kept = workflow.__dict__.get(_TASK_TEXTS) or {}
        keep: dict = {}
        encode = self._encode

        def task_text(task) -> str:
            fingerprint = _fingerprint(task)
            if fingerprint is None:
                return encode(registry.convert(task))
            previous = kept.get(task.id)
            text = previous[1] if previous is not None and previous[0] == fingerprint \
                else encode(registry.convert(task))
            keep[task.id] = (fingerprint, text)
            return text

        def workflow_text(dct) -> str:
            parts = []
            for key, value in dct.items():
                if type(value) is _Tasks:
                    text = "{" + ", ".join(f'"{task_id}": {task_text(task)}'
                                           for task_id, task in value.tasks.items()) + "}"
                elif key == "subprocesses":
                    text = "{" + ", ".join(f"{encode(sub_id)}: {workflow_text(sub)}"
                                           for sub_id, sub in value.items()) + "}"
                else:
                    text = encode(value)
                parts.append(f"{encode(key)}: {text}")
            return "{" + ", ".join(parts) + "}"

        registry._encoder_mode = True
        try:
            dct = self._serializer.to_dict(workflow)
            dct[self._serializer.VERSION_KEY] = self._serializer.VERSION
            text = workflow_text(dct)
        finally:
            registry._encoder_mode = False
        workflow.__dict__[_TASK_TEXTS] = keep
        if self._reference is not None:
            _check_same(text, self._reference.serialize_json(workflow))
        return text

    def loads(self, text: str, spec, subprocess_specs, script_engine: SafeScriptEngine) -> BpmnWorkflow:
        dct = json.loads(text)
        version = dct.pop(self._serializer.VERSION_KEY, None)
        if version != self._serializer.VERSION:
            raise ValueError(f"instance state has serializer version {version!r}; "
                             f"this engine reads {self._serializer.VERSION}")
        return self._serializer.registry.restore(dct, spec=spec, subprocess_specs=subprocess_specs,
                                                 script_engine=script_engine)

    def convert_data(self, value):
        """Convert task data to JSON-safe form with the same type tags as the state (for history)."""
        return self._serializer.registry.convert(value)

    def restore_data(self, value):
        return self._serializer.registry.restore(value)


def _check_same(text: str, reference: str) -> None:
    """Raise if a dump differs from SpiffWorkflow's own (``GRIDFLOW_VERIFY_STATE=1``)."""
    if text != reference:
        at = len(os.path.commonprefix([text, reference]))
        raise AssertionError(f"state dump differs from SpiffWorkflow's serializer at character {at}: "
                             f"{text[max(0, at - 80):at + 80]!r} vs {reference[max(0, at - 80):at + 80]!r}")
