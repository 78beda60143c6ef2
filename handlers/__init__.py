"""Service-task handlers, registered by topic name.

A BPMN service, send or business-rule task with ``camunda:type="external"`` and
``camunda:topic="computeDue"`` calls the handler registered as ``computeDue``::

    from handlers import handler

    @handler("computeDue")
    def compute_due(variables, ctx):
        return {"replyDueAt": ...}

A handler receives a deep copy of the task's variables and a :class:`HandlerContext`; the dict
it returns is merged into the variables. Integrators register their own modules through
``GRIDFLOW_HANDLERS`` (comma-separated import paths) or a ``gridflow.handlers`` entry point.
"""

from .registry import (
    BpmnError,
    HandlerContext,
    HandlerSpec,
    handler,
    load_handlers,
    registered_topics,
    searchable,
    searchable_variables,
)

__all__ = ["BpmnError", "HandlerContext", "HandlerSpec", "handler", "load_handlers", "registered_topics",
           "searchable", "searchable_variables"]
