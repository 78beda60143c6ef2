"""SpiffWorkflow specialised for gridflow: parser, task specs, clocked timers, safe scripting.

This module closes the SpiffWorkflow 3.2.0 traps listed in the architecture guide:

- every expression goes through :class:`SafeScriptEngine` (no ``eval``/``exec``);
- service, send and business-rule tasks become :class:`HandlerTask` specs that the engine
  dispatches itself, so a handler's exception is a clear instance error, never
  ``NameError: script``;
- timers read "now" from the engine clock, accept unquoted ISO 8601 and ``${var}``, and refuse
  date-times without an offset;
- an event-based gateway takes the path of the first event only (:class:`FirstEventWins`);
- message events use one event-definition class for every catch, throw and receive task, and
  merge a dict payload into the catching task's variables;
- merging data between tasks (joins, inherited data, multi-instance results) never changes a
  nested list or dict in place, so what a finished task recorded stays as it was
  (:func:`merge_copying_on_write`);
- a parallel or inclusive join on a loop (a rework loop back to before its split) waits, in every
  round, for the branches of that round (:class:`LoopSafeParallelGateway`,
  :class:`LoopSafeInclusiveGateway`).
"""

from __future__ import annotations

import copy
import re
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID

from SpiffWorkflow.bpmn import BpmnEvent
from SpiffWorkflow.bpmn.exceptions import WorkflowTaskException
from SpiffWorkflow.bpmn.parser.BpmnParser import full_tag
from SpiffWorkflow.bpmn.parser.event_parsers import EventBasedGatewayParser, ReceiveTaskParser
from SpiffWorkflow.bpmn.parser.task_parsers import ConditionalGatewayParser, GatewayParser
from SpiffWorkflow.bpmn.script_engine import PythonScriptEngine
from SpiffWorkflow.bpmn.specs.control import BpmnStartTask
from SpiffWorkflow.bpmn.specs.defaults import (
    BoundaryEvent,
    EndEvent,
    EventBasedGateway,
    InclusiveGateway,
    IntermediateCatchEvent,
    IntermediateThrowEvent,
    ManualTask,
    ParallelGateway,
    ReceiveTask,
    StartEvent,
)
from SpiffWorkflow.bpmn.specs.event_definitions.item_aware_event import SignalEventDefinition
from SpiffWorkflow.bpmn.specs.event_definitions.multiple import MultipleEventDefinition
from SpiffWorkflow.bpmn.specs.event_definitions.simple import NoneEventDefinition
from SpiffWorkflow.bpmn.specs.event_definitions.timer import (
    CycleTimerEventDefinition,
    DurationTimerEventDefinition,
    TimeDateEventDefinition,
    TimerEventDefinition,
)
from SpiffWorkflow.bpmn.specs.mixins import BpmnSpecMixin
from SpiffWorkflow.bpmn.specs.mixins.multiinstance_task import MultiInstanceTask
from SpiffWorkflow.camunda.parser.CamundaParser import CamundaParser
from SpiffWorkflow.camunda.parser.event_parsers import (
    CamundaBoundaryEventParser,
    CamundaEndEventParser,
    CamundaEventDefinitionParser,
    CamundaIntermediateCatchEventParser,
    CamundaIntermediateThrowEventParser,
    CamundaStartEventParser,
)
from SpiffWorkflow.camunda.parser.task_spec import CamundaTaskParser
from SpiffWorkflow.camunda.specs import multiinstance_task as camunda_multi_instance
from SpiffWorkflow.camunda.specs.event_definitions import MessageEventDefinition
from SpiffWorkflow.util.deep_merge import DeepMerge
from SpiffWorkflow.util.task import TaskState

from .clock import Clock, require_aware
from .expressions import ExpressionError, ExpressionEvaluator, check_expression, unwrap


def merge_copying_on_write(a: dict, b: dict, path: list | None = None) -> dict:
    """SpiffWorkflow's ``DeepMerge.merge`` (b into a), deep-copying a nested list or dict of ``a`` before
    merging into it.

    SpiffWorkflow copies data between tasks shallowly, so a task's nested values are the same objects as
    its predecessors'. Its merge then changed them in place: a parallel join merging one branch's line
    items into the other's rewrote the data a finished task had recorded (and the state then no longer
    matched what that task completed with). The merged result is unchanged; the copy is made only when
    a nested value actually differs. Installed as ``DeepMerge.merge`` when this module is imported.
    """
    if path is None:
        path = []
    for key, theirs in b.items():
        mine = a.get(key, _MISSING)
        if mine == theirs:
            continue
        if isinstance(mine, dict) and isinstance(theirs, dict):
            a[key] = copy.deepcopy(mine)  # mine may be shared with a finished task
            merge_copying_on_write(a[key], theirs, path + [str(key)])
        elif isinstance(mine, list) and isinstance(theirs, list):
            a[key] = copy.deepcopy(mine)
            DeepMerge.merge_array(a[key], theirs, path + [str(key)])  # appends, merges, trims in place
        else:
            a[key] = copy.copy(theirs) if isinstance(theirs, (dict, list, set)) else theirs
    return a


DeepMerge.merge = staticmethod(merge_copying_on_write)


_camunda_update_multi_instance = camunda_multi_instance.update_task_spec


def update_multi_instance_spec(my_task) -> None:
    """SpiffWorkflow's Camunda multi-instance update, refusing a loop cardinality that is not a whole number.

    SpiffWorkflow takes such a value for the name of an input collection and rewrites the task spec,
    which is shared by every case of the definition in this process: one case with ``visits = "3"`` made
    every later case fail. Here the case fails alone, with an error naming the task (an incident).
    Installed as ``update_task_spec`` of SpiffWorkflow's Camunda module when this module is imported.
    """
    spec = my_task.task_spec
    if spec.cardinality is not None:
        if my_task.state != TaskState.WAITING:  # as SpiffWorkflow's: take the parent's data first
            BpmnSpecMixin._update_hook(spec, my_task)
        count = my_task.workflow.script_engine.evaluate(my_task, spec.cardinality)
        if not isinstance(count, int) or isinstance(count, bool):
            raise WorkflowTaskException(f"loopCardinality {spec.cardinality} is {count!r}, not a whole number; "
                                        "for one instance per item use camunda:collection", task=my_task)
    _camunda_update_multi_instance(my_task)


camunda_multi_instance.update_task_spec = update_multi_instance_spec


_ISO_LITERAL = re.compile(r"^(R\d*/.*|P[0-9TWYMDHS.,]+|\d{4}-\d{2}-\d{2}(T[0-9:.]+)?(Z|[+-]\d{2}:?\d{2})?)$")


_TEMPLATE_PART = re.compile(r"\$\{([^}]*)\}")


def timer_expression(text: str) -> str:
    """Normalize a timer body to an expression.

    ``PT2H`` -> ``'PT2H'``; ``${due}`` -> ``due``; ``R/${updateEvery}`` -> ``'R/' + str(updateEvery)``.
    """
    body = (text or "").strip()
    if _ISO_LITERAL.match(body) and "${" not in body:
        return repr(body)
    parts = _TEMPLATE_PART.split(body)
    if len(parts) > 3 or (len(parts) == 3 and (parts[0] or parts[2])):
        pieces = [repr(part) if index % 2 == 0 else f"str({part.strip()})"
                  for index, part in enumerate(parts) if part or index % 2]
        return " + ".join(pieces)
    return unwrap(body)


_LIVE = TaskState.READY | TaskState.WAITING | TaskState.STARTED


def tasks_in_state(workflow, state: int) -> list:
    """Tasks of the workflow and all its sub-workflows whose state is in ``state`` (a TaskState mask).

    A flat scan of the task dictionaries: several times faster than SpiffWorkflow's tree iterator,
    which matters because every step projects work items, timers and subscriptions.
    """
    top = workflow.top_workflow if hasattr(workflow, "top_workflow") else workflow
    found = [t for t in top.tasks.values() if t.state & state]
    for sub in top.subprocesses.values():
        found.extend(t for t in sub.tasks.values() if t.state & state)
    return found


def caught_event(task) -> tuple[Any, Any]:
    """What ``task`` catches: (its event definition, or None, and the task that records the event).

    SpiffWorkflow moves the definitions of the events after an event-based gateway to the gateway, which
    waits for them all, and leaves each event a none event. For such an event this gives the definition
    the gateway holds for it, and the gateway (where its timer keeps its instant, and a payload lands).
    """
    definition = getattr(task.task_spec, "event_definition", None)
    if type(definition) is NoneEventDefinition:
        gateway = task.parent
        if gateway is not None and isinstance(gateway.task_spec, EventBasedGateway):
            spec = gateway.task_spec
            return spec.event_definition.event_definitions[spec.outputs.index(task.task_spec)], gateway
    return definition, task


def waiting_catches(workflow) -> list:
    """The tasks whose events the workflow waits for now: every WAITING task, except that a WAITING
    event-based gateway is replaced by the (predicted) events after it (see :func:`caught_event`)."""
    found = []
    for task in tasks_in_state(workflow, TaskState.WAITING):
        if isinstance(task.task_spec, EventBasedGateway):
            found.extend(task.children)
        else:
            found.append(task)
    return found


SCOPE_KEY = "gridflow_scope"


def instance_scope(workflow) -> dict[str, Any]:
    """The instance-wide variables (Camunda semantics), kept in the top workflow's data."""
    top = workflow.top_workflow if hasattr(workflow, "top_workflow") else workflow
    return top.data.setdefault(SCOPE_KEY, {})


LOCAL_SCOPE_KEY = "gridflow_local"


def enclosing_tasks(task):
    """``task``, then the task that owns its sub-process, and so on out to the top workflow.

    Containment, not history: a task's ``parent`` is the task that ran before it, so it is not followed.
    """
    current = task
    while current is not None:
        yield current
        workflow = current.workflow
        if workflow is workflow.top_workflow:
            return
        current = workflow.top_workflow.get_task_from_id(workflow.parent_task_id)


def multi_instance_body(task):
    """The multi-instance child whose body ``task`` runs in (itself, or the task that owns its
    sub-process), or None outside multi-instance bodies."""
    return next((t for t in enclosing_tasks(task) if _is_instance(t)), None)


def _is_instance(task) -> bool:
    """True for one of the instances a multi-instance task created; not for the task after it, whose
    ``parent`` (the task that ran before) is the multi-instance task too."""
    parent = task.parent
    return (parent is not None and isinstance(parent.task_spec, MultiInstanceTask)
            and task.task_spec.name == parent.task_spec.task_spec)


def within_step(task, step: str) -> bool:
    """True when ``task`` is the element ``step`` or runs inside it (a sub-process, at any depth)."""
    return any(t.task_spec.bpmn_id == step for t in enclosing_tasks(task))


def share_with_live_tasks(source, changes: dict[str, Any]) -> None:
    """Record variables written by one task and give them to the live tasks that see them.

    SpiffWorkflow keeps data per path; process owners expect Camunda's instance-wide variables
    (a reminder branch sets ``overdue`` that the main path reads later). Inside a multi-instance
    body (one inspection per customer) what a task writes is local to that body, so parallel
    bodies never overwrite each other. Each task gets its own deep copy.
    """
    if not changes:
        return
    body = multi_instance_body(source)
    if body is None:
        instance_scope(source.workflow).update(copy.deepcopy(changes))
    else:
        body.internal_data.setdefault(LOCAL_SCOPE_KEY, {}).update(copy.deepcopy(changes))
    for task in tasks_in_state(source.workflow, _LIVE):
        if task is not source and (body is None or multi_instance_body(task) is body):
            give(task.data, changes)
    if body is not None:
        body.data.update(copy.deepcopy(changes))


def sync_live_tasks(workflow) -> None:
    """Give the instance scope (and their body's local variables) to every live task.

    Needed because SpiffWorkflow creates tasks with copies of their parent's data, which may be stale.
    """
    scope = instance_scope(workflow)
    for task in tasks_in_state(workflow, _LIVE):
        if scope:
            give(task.data, scope)
        body = multi_instance_body(task)
        if body is not None and body.internal_data.get(LOCAL_SCOPE_KEY):
            give(task.data, body.internal_data[LOCAL_SCOPE_KEY])


_IMMUTABLE = (str, int, float, type(None), datetime, date, timedelta, Decimal, UUID)


def give(data: dict[str, Any], values: dict[str, Any]) -> None:
    """``data.update(copy.deepcopy(values))``, without copying what ``data`` already holds.

    Immutable values are shared; a list or dict is deep-copied only when ``data`` does not already
    hold an equal one of its own (an equality test is far cheaper than a deep copy, and every step
    gives the whole instance scope to every live task). No two tasks end up sharing a mutable value.
    """
    for key, value in values.items():
        if isinstance(value, _IMMUTABLE):
            data[key] = value
        else:
            current = data.get(key, _MISSING)
            if current is value or current != value:
                data[key] = copy.deepcopy(value)


_MISSING = object()


class HandlerTask(ManualTask):
    """A service, send or business-rule task: the engine calls the handler named by its topic."""


def _now(my_task) -> datetime:
    return my_task.workflow.script_engine.clock.now()


def _instant_text(value: Any, where: str) -> str:
    if isinstance(value, datetime):
        return require_aware(value, where).isoformat()
    if not isinstance(value, str):
        raise ExpressionError(f"{where}: expected an ISO 8601 string or date-time, got {type(value).__name__}")
    return value


def _parse_instant(text: str, where: str) -> datetime:
    try:
        instant = datetime.fromisoformat(text)
    except ValueError:
        raise ExpressionError(f"{where}: '{text}' is not an ISO 8601 date-time") from None
    return require_aware(instant, where)


def _duration_after(text: str, start: datetime, where: str) -> datetime:
    try:
        parsed = TimerEventDefinition.parse_iso_duration(text)
    except Exception:
        raise ExpressionError(f"{where}: '{text}' is not an ISO 8601 duration (e.g. PT2H, P1D)") from None
    return start + TimerEventDefinition.get_timedelta_from_start(parsed, start)


class _ClockedInstant:
    """Fires once the engine clock reaches an instant computed when the timer starts waiting."""

    def has_fired(self, my_task) -> bool:
        event_value = my_task._get_internal_data("event_value")
        if event_value is None:
            where = f"timer '{my_task.task_spec.bpmn_id}'"
            value = my_task.workflow.script_engine.evaluate(my_task, self.expression)
            event_value = self.instant(value, _now(my_task), where).isoformat()
            my_task._set_internal_data(event_value=event_value)
        if datetime.fromisoformat(event_value) <= _now(my_task):
            my_task._set_internal_data(event_fired=True)
        return my_task._get_internal_data("event_fired", False)


class ClockedTimeDate(_ClockedInstant, TimeDateEventDefinition):
    """``timeDate``: fires at an absolute instant, which must carry an offset."""

    @staticmethod
    def instant(value: Any, now: datetime, where: str) -> datetime:
        return _parse_instant(_instant_text(value, where), where)


class ClockedDuration(_ClockedInstant, DurationTimerEventDefinition):
    """``timeDuration``: fires a duration after the timer started waiting."""

    @staticmethod
    def instant(value: Any, now: datetime, where: str) -> datetime:
        return _duration_after(str(value), now, where)


class ClockedCycle(CycleTimerEventDefinition):
    """``timeCycle`` (``R3/PT1H``, ``R/P1M``): fires once per period.

    Missed periods are not replayed: when several periods passed while nothing ran, the timer
    fires once and its next instant moves to the first period boundary after now.
    """

    def cycle_complete(self, my_task) -> bool:
        now = _now(my_task)
        event_value = my_task._get_internal_data("event_value")
        if event_value is None:
            where = f"timer '{my_task.task_spec.bpmn_id}'"
            text = str(my_task.workflow.script_engine.evaluate(my_task, self.expression))
            event_value = _parse_cycle(text, now, where)
        ready = False
        if event_value["cycles"] != 0:
            next_event = datetime.fromisoformat(event_value["next"])
            if next_event <= now:
                period = timedelta(seconds=event_value["duration"])
                while next_event <= now:
                    next_event += period
                event_value["next"] = next_event.isoformat()
                event_value["cycles"] -= 1
                ready = True
        else:
            my_task.internal_data.pop("event_value", None)
            my_task.internal_data["event_fired"] = True
        my_task._set_internal_data(event_value=event_value)
        return ready


def _parse_cycle(text: str, now: datetime, where: str) -> dict:
    parts = text.strip().upper().split("/")
    if len(parts) not in (2, 3) or not parts[0].startswith("R"):
        raise ExpressionError(f"{where}: '{text}' is not an ISO 8601 cycle (e.g. R3/PT1H)")
    cycles = int(parts[0][1:]) if parts[0][1:] else -1
    if len(parts) == 3:  # R/start/duration
        start = _parse_instant(parts[1], where)
        first = _duration_after(parts[2], start, where)
        duration = first - start
    else:
        first = _duration_after(parts[1], now, where)
        duration = first - now
        start = first
    return {"cycles": cycles, "next": start.isoformat(), "duration": duration.total_seconds()}


class GridflowMessageEventDefinition(MessageEventDefinition):
    """A message whose dict payload is merged into the catching task's variables.

    A throw without ``camunda:expression`` sends a copy of the throwing task's variables.
    """

    def throw(self, my_task) -> None:
        if self.expression:
            payload = my_task.workflow.script_engine.evaluate(my_task, self.expression)
        else:
            payload = copy.deepcopy(dict(my_task.data))
        event = BpmnEvent(self, payload={"payload": payload, "result_var": self.result_var})
        my_task.workflow.top_workflow.catch(event)

    def update_task_data(self, my_task) -> None:
        event_data = my_task.internal_data.get(self.name) or {}
        payload = event_data.get("payload")
        if isinstance(payload, dict) and event_data.get("result_var") in (None, "__merge__"):
            my_task.data.update(payload)
        else:
            super().update_task_data(my_task)


#: attribute of a top-level workflow object: the names of the signals it threw in this step (not stored)
THROWN_SIGNALS = "_gridflow_thrown_signals"


class GridflowSignalEventDefinition(SignalEventDefinition):
    """A signal whose every throw is also noted for the other instances.

    BPMN broadcasts a signal to every catch, in every instance. SpiffWorkflow hands the engine only the
    throws the instance did not catch itself; each throw is therefore noted on the top workflow (read
    and cleared by ``Runtime.thrown_events``) before SpiffWorkflow delivers it inside the instance.
    """

    def throw(self, my_task) -> None:
        signals_thrown(my_task.workflow.top_workflow).append(self.name)
        super().throw(my_task)


def signals_thrown(workflow) -> list[str]:
    """The signal names ``workflow`` (a top-level workflow) threw since they were last taken."""
    return workflow.__dict__.setdefault(THROWN_SIGNALS, [])


_TIMER_CLASSES = {
    TimeDateEventDefinition: ClockedTimeDate,
    DurationTimerEventDefinition: ClockedDuration,
    CycleTimerEventDefinition: ClockedCycle,
}


class _GridflowEvents:
    """Parser mixin: clocked timers, one message-event class everywhere, signals noted when thrown."""

    def parse_timer_event(self, event):
        definition = super().parse_timer_event(event)
        cls = _TIMER_CLASSES[type(definition)]
        return cls(definition.name, timer_expression(definition.expression), description=definition.description)

    def parse_signal_event(self, signal_event):
        definition = super().parse_signal_event(signal_event)
        return GridflowSignalEventDefinition(definition.name, description=definition.description)

    def parse_message_event(self, message_event):
        definition = CamundaEventDefinitionParser.parse_message_event(self, message_event)
        result_var = definition.result_var or "__merge__"
        return GridflowMessageEventDefinition(definition.name, definition.correlation_properties,
                                              definition.expression, result_var)


class FirstEventWins(MultipleEventDefinition):
    """What an event-based gateway waits for: the events after it, of which the first one caught wins.

    SpiffWorkflow's ``MultipleEventDefinition`` also takes a timer whose instant had passed when a message
    or signal was caught (no command had fired it yet), and the gateway then follows both paths. Here,
    once one event is caught the others are ignored and withdrawn with their paths.
    """

    def has_fired(self, my_task) -> bool:
        return bool(my_task.internal_data.get("seen_events")) or super().has_fired(my_task)

    def catch(self, my_task, event=None) -> None:
        if not my_task.internal_data.get("seen_events"):
            super().catch(my_task, event)


class EventGatewayParser(EventBasedGatewayParser):
    """An event-based gateway waits with :class:`FirstEventWins`."""

    def create_task(self):
        return self._create_task(FirstEventWins())


class StartParser(_GridflowEvents, CamundaStartEventParser):
    pass


class EndParser(_GridflowEvents, CamundaEndEventParser):
    pass


class CatchParser(_GridflowEvents, CamundaIntermediateCatchEventParser):
    pass


class ThrowParser(_GridflowEvents, CamundaIntermediateThrowEventParser):
    pass


class BoundaryParser(_GridflowEvents, CamundaBoundaryEventParser):
    pass


class ReceiveParser(_GridflowEvents, ReceiveTaskParser):
    pass


class TriggerWithoutRewiring(BpmnStartTask):
    """A start task that starts a message-triggered event sub-process without changing the spec.

    SpiffWorkflow 3.2.0's ``trigger_wf`` connects the sub-process into the process graph on first
    use; with specs cached and shared between instances, every later instance would then start the
    sub-process eagerly and never complete. Here the triggered child is added to the running
    instance only; the start task is recorded as the sub-process's input (never as an output).
    """

    def trigger_wf(self, my_task, spec_name):
        spec = self._wf_spec.task_specs.get(spec_name)
        if not spec.inputs:  # SpiffWorkflow's readiness test wants an input; outputs stay untouched
            spec._connect_notify(self)
        child = my_task._add_child(spec, TaskState.FUTURE)
        child.triggered = True
        child.task_spec._update(child)
        return child.id


def _previous_activation(spec, my_task):
    """The task of join ``spec`` that ``my_task``'s path last went through (the join fired there in an earlier
    round of a loop), or None in the first round.

    Like SpiffWorkflow's ``Task.find_ancestor``, without its recursion: a loop deepens the task tree every
    round, so a case with a few hundred rounds would reach Python's recursion limit (so :func:`_descends_from`
    for ``Task.is_descendant_of``)."""
    task = my_task.parent
    while task is not None:
        if task.task_spec is spec:
            return task
        task = task.parent
    return None


def _activation_tasks(spec, my_task) -> list:
    """The tasks of join ``spec`` that belong to ``my_task``'s round: those below the previous activation (the
    whole tree in the first round). Tasks of earlier rounds stay in SpiffWorkflow's tree; they are not counted."""
    previous = _previous_activation(spec, my_task)
    stack = list(previous.children) if previous is not None else [my_task.workflow.task_tree]
    found = []
    while stack:
        task = stack.pop()
        if task.task_spec is spec:
            found.append(task)
        stack.extend(task.children)
    return found


def _descends_from(task, ancestor) -> bool:
    """``task.is_descendant_of(ancestor)``, iteratively (see :func:`_previous_activation`)."""
    parent = task.parent
    while parent is not None:
        if parent is ancestor:
            return True
        parent = parent.parent
    return False


class _LoopSafeJoin:
    """Join specs that count only the arrivals of the current round of a loop.

    SpiffWorkflow 3.2.0 decides whether a join may fire, and which branches' data it merges, from every task
    of the join spec in the instance. A loop back to before the split keeps the earlier rounds' join tasks in
    the tree (the branch that arrived first waited there and was cancelled when the join fired), so in the
    next round the join took those branches as already arrived and fired after one branch; the late branch
    then fired it again and dropped what the early firing had started, and once that held another join task
    the merge failed with ``AttributeError: 'NoneType' object has no attribute 'data'``. Here only tasks
    below the join's previous firing on the same path count (:func:`_activation_tasks`).
    """

    def _merge_branches(self, my_task) -> None:
        """SpiffWorkflow's ``UnstructuredJoin._run_hook``, over the tasks of this round only."""
        finished = [t for t in _activation_tasks(self, my_task)
                    if t is not my_task and t.has_state(TaskState.FINISHED_MASK)]
        for task in sorted(finished, key=lambda t: t.last_state_change):
            if task.id not in my_task.workflow.tasks:  # dropped with the children of an earlier one
                continue
            DeepMerge.merge(my_task.data, task.parent.data)
            if task.has_state(TaskState.COMPLETED):  # a reset into a branch: drop what the other branch left
                task._drop_children(force=True)
        my_task._inherit_data()

    def _run_hook(self, my_task):
        self._merge_branches(my_task)
        return True


class LoopSafeParallelGateway(_LoopSafeJoin, ParallelGateway):
    """``parallelGateway``: fires when every incoming flow has a token of this round."""

    def _check_threshold_unstructured(self, my_task):
        waiting = set(self.inputs)
        for task in _activation_tasks(self, my_task):
            if _descends_from(task, my_task):
                # SpiffWorkflow's rule for a join a loop re-enters: in its first round, an input that is reached
                # only after the join fires is not waited for
                ancestor = task
                while ancestor is not None and ancestor.task_spec not in waiting:
                    ancestor = ancestor.parent
                if ancestor is not None:
                    waiting.discard(ancestor.task_spec)
            elif task.parent is not None and task.parent.state == TaskState.COMPLETED:
                waiting.discard(task.parent.task_spec)
        return not waiting


class LoopSafeInclusiveGateway(_LoopSafeJoin, InclusiveGateway):
    """``inclusiveGateway``: fires when a flow of this round has a token and no live token can still reach an
    incoming flow without one unless it can also reach one with a token (the BPMN rule), never passing the
    gateway itself. Live tokens are the instance's definite unfinished tasks (future, waiting, ready, started).
    """

    def _check_threshold_unstructured(self, my_task):
        arrived = {t.parent.task_spec for t in _activation_tasks(self, my_task)
                   if t.parent is not None and t.parent.state == TaskState.COMPLETED}
        empty = [spec for spec in self.inputs if spec not in arrived]
        if not arrived or not empty:
            return bool(arrived)
        for token in {t.task_spec for t in my_task.workflow.tasks.values()
                      if t.state & TaskState.DEFINITE_MASK and t.task_spec is not self}:
            reached = self._reached_inputs(token)
            if reached & set(empty) and not reached & arrived:
                return False
        return True

    def _reached_inputs(self, start) -> set:
        """The incoming flows' sources of this gateway that a token at ``start`` can reach without passing it."""
        inputs, reached, seen, stack = set(self.inputs), set(), set(), [start]
        while stack:
            spec = stack.pop()
            if spec in seen or spec is self:
                continue
            seen.add(spec)
            if spec in inputs:
                reached.add(spec)
            stack.extend(spec.outputs)
        return reached

    def _run_hook(self, my_task):
        self._merge_branches(my_task)
        matches, defaults = self._get_matching_outputs(my_task)
        if not matches and not defaults:
            raise WorkflowTaskException("No conditions satisfied on gateway", task=my_task)
        my_task._sync_children(matches or defaults, TaskState.FUTURE)
        for child in my_task.children:
            child.task_spec._predict(child, mask=TaskState.FUTURE | TaskState.PREDICTED_MASK)
        return True


class GridflowParser(CamundaParser):
    """CamundaParser with gridflow's task specs and event parsers."""

    def get_spec(self, process_id, required=True):
        spec = super().get_spec(process_id, required)
        if spec is not None and type(spec.start) is BpmnStartTask:
            spec.start.__class__ = TriggerWithoutRewiring
        return spec

    OVERRIDE_PARSER_CLASSES = {
        **CamundaParser.OVERRIDE_PARSER_CLASSES,
        full_tag("serviceTask"): (CamundaTaskParser, HandlerTask),
        full_tag("sendTask"): (CamundaTaskParser, HandlerTask),
        full_tag("parallelGateway"): (GatewayParser, LoopSafeParallelGateway),
        full_tag("inclusiveGateway"): (ConditionalGatewayParser, LoopSafeInclusiveGateway),
        full_tag("businessRuleTask"): (CamundaTaskParser, HandlerTask),
        full_tag("receiveTask"): (ReceiveParser, ReceiveTask),
        full_tag("startEvent"): (StartParser, StartEvent),
        full_tag("endEvent"): (EndParser, EndEvent),
        full_tag("intermediateCatchEvent"): (CatchParser, IntermediateCatchEvent),
        full_tag("intermediateThrowEvent"): (ThrowParser, IntermediateThrowEvent),
        full_tag("boundaryEvent"): (BoundaryParser, BoundaryEvent),
        full_tag("eventBasedGateway"): (EventGatewayParser, EventBasedGateway),
    }


class SafeScriptEngine(PythonScriptEngine):
    """Evaluates every condition, timer and script through :class:`ExpressionEvaluator`."""

    def __init__(self, clock: Clock):
        super().__init__()
        self.clock = clock
        self.evaluator = ExpressionEvaluator(clock.now)

    def validate(self, expression: str) -> None:
        check_expression(expression)

    def evaluate(self, task, expression, external_context=None):
        variables = dict(task.data)
        if external_context:
            variables.update(external_context)
        try:
            return self.evaluator.evaluate(expression, variables)
        except ExpressionError as exc:
            raise WorkflowTaskException(str(exc), task=task) from None

    def execute(self, task, script, external_context=None):
        try:
            assigned = self.evaluator.execute(script, task.data)
        except ExpressionError as exc:
            raise WorkflowTaskException(str(exc), task=task) from None
        share_with_live_tasks(task, assigned)
        return True

    def call_service(self, task, **kwargs):  # pragma: no cover - HandlerTask never calls it
        raise WorkflowTaskException("service tasks are dispatched by the gridflow engine", task=task)
