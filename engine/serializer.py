"""Workflow state <-> JSON, without the spec.

SpiffWorkflow's serializer embeds the whole spec in every document; gridflow stores only the
instance state and re-attaches the cached, immutable spec objects on load (about half the cost
of a step). Task data may hold ``Decimal``, ``date``, aware ``datetime``, ``timedelta``, ``UUID``
and ``set`` values; each round-trips unchanged.
"""

from __future__ import annotations

import json
from datetime import date, datetime
from decimal import Decimal
from uuid import UUID

from SpiffWorkflow.bpmn import BpmnWorkflow
from SpiffWorkflow.bpmn.serializer import BpmnWorkflowSerializer
from SpiffWorkflow.bpmn.serializer.default.workflow import BpmnWorkflowConverter, WorkflowConverter
from SpiffWorkflow.bpmn.serializer.helpers.spec import EventDefinitionConverter
from SpiffWorkflow.camunda.serializer.config import CAMUNDA_CONFIG
from SpiffWorkflow.camunda.serializer.event_definition import MessageEventDefinitionConverter

from .bpmn import GridflowMessageEventDefinition, GridflowSignalEventDefinition, SafeScriptEngine


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


def _build_registry():
    config = dict(CAMUNDA_CONFIG)
    config[BpmnWorkflow] = StateOnlyWorkflowConverter
    config[GridflowMessageEventDefinition] = MessageEventDefinitionConverter
    config[GridflowSignalEventDefinition] = EventDefinitionConverter
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


class StateSerializer:
    """Dumps and loads workflow state as JSON text (spec not included)."""

    def __init__(self):
        self._serializer = BpmnWorkflowSerializer(_build_registry())

    def dumps(self, workflow: BpmnWorkflow) -> str:
        return self._serializer.serialize_json(workflow)

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
