"""The SpiffWorkflow adapter: create, advance, complete, fire timers, deliver messages.

This module knows SpiffWorkflow and nothing about the database. The engine facade loads a
workflow, calls one operation here, then asks for the projections (ready user tasks, waiting
timers, message subscriptions, variables) that it writes in the same transaction.
"""

from __future__ import annotations

import copy
import json
import logging
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from uuid import UUID, uuid5

from SpiffWorkflow.bpmn import BpmnEvent, BpmnWorkflow
from SpiffWorkflow.bpmn.specs.event_definitions.item_aware_event import ErrorEventDefinition, SignalEventDefinition
from SpiffWorkflow.bpmn.specs.event_definitions.message import MessageEventDefinition
from SpiffWorkflow.bpmn.specs.event_definitions.timer import CycleTimerEventDefinition, TimerEventDefinition
from SpiffWorkflow.bpmn.specs.mixins.user_task import UserTask as UserTaskMixin
from SpiffWorkflow.exceptions import SpiffWorkflowException
from SpiffWorkflow.task import Task
from SpiffWorkflow.util.task import TaskState

from handlers.registry import BpmnError, HandlerContext, HandlerSpec

from .bpmn import (
    ClockedTimeDate,
    HandlerTask,
    SafeScriptEngine,
    caught_event,
    instance_scope,
    share_with_live_tasks,
    signals_thrown,
    sync_live_tasks,
    tasks_in_state,
    waiting_catches,
)
from .clock import Clock
from .serializer import StateSerializer, forget_texts

log = logging.getLogger(__name__)

MAX_STEPS_PER_COMMAND = 10_000
_TIMER_BASELINE = "_gridflow_timer_marks"  # on a workflow object: its timer marks when last loaded or recorded
RECENT_WORKFLOWS = 32  # workflow objects kept between commands (Runtime.load/dump); bounds the memory they use
_KEPT_FAILURE = "_gridflow_step_failure"  # on a top-level workflow object: a StepFailed for the next advance


class StepFailed(Exception):
    """A handler or an expression failed while advancing; the workflow stays at the failing task."""

    def __init__(self, message: str, task_id: str | None, bpmn_id: str | None):
        super().__init__(message)
        self.task_id = task_id
        self.bpmn_id = bpmn_id


def step_failure(exc: Exception) -> StepFailed:
    """An exception raised while SpiffWorkflow stepped the workflow, as a one-line StepFailed naming the task.

    SpiffWorkflow raises its own exceptions for modelling and data problems, and gridflow's specs a
    ``ValueError`` (``ExpressionError``) for a bad value, each with a message for people; anything else
    (``AttributeError``, ``TypeError`` …) is a defect in SpiffWorkflow or gridflow, reported as unexpected.
    The task is the exception's own, else the innermost task SpiffWorkflow was working on when it raised
    (its spec methods all take ``my_task``).
    """
    task = _failing_task(exc)
    text = _first_line(exc)
    where = f" at {task.task_spec.bpmn_id}" if task is not None and task.task_spec.bpmn_id else ""
    if isinstance(exc, (SpiffWorkflowException, ValueError)):
        message = f"{text or type(exc).__name__}{where}"
    else:
        log.debug("unexpected error while stepping a workflow", exc_info=exc)
        message = f"unexpected {type(exc).__name__}{where}" + (f": {text}" if text else "")
    return StepFailed(message, str(task.id) if task is not None else None,
                      task.task_spec.bpmn_id if task is not None else None)


def _first_line(exc: Exception) -> str:
    """The first line of the exception's message; for SpiffWorkflow's, without the ". " its ``__str__`` puts
    after the message even when it has no notes to add."""
    if isinstance(exc, SpiffWorkflowException):
        notes = [n for n in getattr(exc, "notes", []) if n]
        text = "; ".join([str(exc.args[0]) if exc.args else "", *notes])
    else:
        text = str(exc)
    return text.strip().splitlines()[0].strip() if text.strip() else ""


def _failing_task(exc: Exception):
    task = getattr(exc, "task", None)
    if isinstance(task, Task):
        return task
    frame = exc.__traceback__
    while frame is not None:
        candidate = frame.tb_frame.f_locals.get("my_task")
        if isinstance(candidate, Task):
            task = candidate
        frame = frame.tb_next
    return task if isinstance(task, Task) else None


@contextmanager
def failure_kept(workflow) -> Iterator[None]:
    """Run SpiffWorkflow completing a task or catching an event outside :meth:`Runtime.advance` (it also updates
    the tasks after it, e.g. a timer evaluates its instant). A failure is kept on the workflow, not raised:
    the command goes on to ``Runtime.advance``, which raises it as StepFailed, so the step is saved with the
    instance in error and an incident instead of the exception leaving the Engine call."""
    try:
        yield
    except StepFailed as failure:
        _keep(workflow, failure)
    except Exception as exc:
        _keep(workflow, step_failure(exc))


def _keep(workflow, failure: StepFailed) -> None:
    workflow.top_workflow.__dict__.setdefault(_KEPT_FAILURE, failure)


def steps_done(workflow) -> bool:
    """``workflow.do_engine_steps()`` outside :meth:`Runtime.advance`; False when it failed (the failure is kept)."""
    with failure_kept(workflow):
        workflow.do_engine_steps()
    return _KEPT_FAILURE not in workflow.top_workflow.__dict__


def raise_kept_failure(workflow) -> None:
    """Raise the failure :func:`failure_kept` kept on the workflow, if any (and forget it)."""
    failure = workflow.top_workflow.__dict__.pop(_KEPT_FAILURE, None)
    if failure is not None:
        raise failure


@dataclass
class SpecBundle:
    """An immutable, cached parse of one deployed definition and the processes it calls."""

    definition_id: int
    key: str
    version: int
    content_hash: str
    spec: Any
    subprocess_specs: dict
    meta: dict[str, dict[str, dict[str, Any]]]  # process key -> element id -> info

    def info(self, task) -> dict[str, Any]:
        """Engine metadata (lane, groups, form, topic …) of a task, looked up in its own process."""
        workflow = task.workflow
        while workflow is not None:
            process = self.meta.get(workflow.spec.name)
            if process is not None and task.task_spec.bpmn_id in process:
                return process[task.task_spec.bpmn_id]
            workflow = getattr(workflow, "parent_workflow", None)
        for process in self.meta.values():
            if task.task_spec.bpmn_id in process:
                return process[task.task_spec.bpmn_id]
        return {}


#: a handler asked for the open tasks of a step to go to another user (``HandlerContext.reassign``)
REASSIGN_REQUESTED = "reassign_requested"


@dataclass
class StepRecord:
    """Something that happened while advancing, for the history."""

    type: str
    task_id: str | None = None
    bpmn_id: str | None = None
    data: dict[str, Any] = field(default_factory=dict)


@dataclass
class TimerView:
    task_id: str
    bpmn_id: str
    due_at: datetime


@dataclass
class SubscriptionView:
    task_id: str
    bpmn_id: str
    message_name: str
    correlation: str


def correlation_string(values: dict[str, Any]) -> str:
    """Canonical form of correlation keys, compared for equality in SQL."""
    return "&".join(f"{key}={values[key]}" for key in sorted(values))


class Runtime:
    """Operations on SpiffWorkflow workflows, with handlers dispatched by topic."""

    def __init__(self, clock: Clock, handlers: dict[str, HandlerSpec]):
        self.clock = clock
        self.handlers = handlers
        self.script_engine = SafeScriptEngine(clock)
        self.serializer = StateSerializer()
        self.case_finder = None  # set by the engine for the current command
        self.history_reader = None  # instance id -> stored history events; set by the engine per command
        self._recent: OrderedDict[str, BpmnWorkflow] = OrderedDict()  # state text -> workflow (see load/dump)

    def _history(self, instance_id: str, records: list[StepRecord]) -> list[dict[str, Any]]:
        """Stored history events of the instance plus the ones of the current command (not yet written)."""
        stored = self.history_reader(instance_id) if self.history_reader is not None else []
        return stored + [{"type": r.type, "task_id": r.task_id, "bpmn_id": r.bpmn_id, "data": copy.deepcopy(r.data)}
                         for r in records]

    # -- lifecycle -----------------------------------------------------------------------
    def create(self, bundle: SpecBundle, data: dict[str, Any]) -> BpmnWorkflow:
        workflow = BpmnWorkflow(bundle.spec, bundle.subprocess_specs, script_engine=self.script_engine)
        workflow.task_tree.data.update(copy.deepcopy(data))
        instance_scope(workflow).update(copy.deepcopy(data))
        setattr(workflow, _TIMER_BASELINE, {})  # every timer that fires from here on is news
        return workflow

    def load(self, bundle: SpecBundle, state_json: str) -> BpmnWorkflow:
        """The workflow stored as ``state_json``: the object this process dumped to exactly that text when
        it is still cached (taken out of the cache: a command that mutates it and then rolls back cannot
        leave a changed object under the old text), else a fresh deserialization."""
        workflow = self._cached_or_loaded(self._recent.pop(state_json, None), bundle, state_json)
        setattr(workflow, _TIMER_BASELINE, self.timer_marks(workflow))  # see fired_timers
        return workflow

    def peek(self, bundle: SpecBundle, state_json: str) -> BpmnWorkflow:
        """Like :meth:`load`, for a caller that only reads the workflow: a cached object stays cached
        (the next command on the instance still skips deserializing). The caller must not change it."""
        return self._cached_or_loaded(self._recent.get(state_json), bundle, state_json)

    def _cached_or_loaded(self, cached: BpmnWorkflow | None, bundle: SpecBundle, state_json: str) -> BpmnWorkflow:
        if cached is not None and cached.spec is bundle.spec:
            return cached
        return self.serializer.loads(state_json, bundle.spec, bundle.subprocess_specs, self.script_engine)

    def dump(self, workflow: BpmnWorkflow) -> str:
        """Serialize; the object is remembered under its text (the caller must not change it afterwards),
        so the next command on the instance in this process skips deserializing when the stored text is
        still this one. Keyed by content, the cache cannot serve a state another process replaced, nor
        one whose transaction rolled back. At most ``RECENT_WORKFLOWS`` objects are kept."""
        text = self.serializer.dumps(workflow)
        self._recent[text] = workflow
        while len(self._recent) > RECENT_WORKFLOWS:
            self._recent.popitem(last=False)
        return text

    # -- advancing -----------------------------------------------------------------------
    def advance(self, workflow: BpmnWorkflow, bundle: SpecBundle, instance_id: str,
                business_key: str | None, records: list[StepRecord]) -> None:
        """Run engine steps and synchronous handlers until only waits remain.

        Appends what happened to ``records``. Raises StepFailed at the first failing handler or
        expression (the workflow is left consistent at that task: it stays READY), and for any other
        exception raised while SpiffWorkflow steps, here or in what the command did before (see
        :func:`failure_kept`).
        """
        for _ in range(MAX_STEPS_PER_COMMAND):
            raise_kept_failure(workflow)  # what the command did before (completing a task …) failed
            try:
                workflow.refresh_timers()
                workflow.do_engine_steps()
                sync_live_tasks(workflow)
            except Exception as exc:  # not only SpiffWorkflow's own: nothing may leave the Engine call
                raise step_failure(exc) from exc
            runnable = [t for t in self.ready_handler_tasks(workflow)
                        if not self.is_async(t, bundle)]
            if not runnable:
                return
            for task in runnable:
                self.run_handler(task, bundle, instance_id, business_key, records)
                raise_kept_failure(workflow)
        raise StepFailed(f"more than {MAX_STEPS_PER_COMMAND} steps in one command (a loop without a wait?)",
                         None, None)

    def run_handler(self, task, bundle: SpecBundle, instance_id: str, business_key: str | None,
                    records: list[StepRecord]) -> None:
        """Call the handler of one READY handler task and complete the task with its result."""
        info = bundle.info(task)
        topic = info.get("topic")
        bpmn_id = task.task_spec.bpmn_id
        spec = self.handlers.get(topic)
        if spec is None:
            raise StepFailed(f"no handler registered for topic '{topic}' (task {bpmn_id})", str(task.id), bpmn_id)
        context = HandlerContext(instance_id=instance_id, business_key=business_key, task_id=str(task.id),
                                 bpmn_id=bpmn_id, topic=topic, now=self.clock.now(),
                                 idempotency_key=f"{instance_id}:{task.id}",
                                 properties=dict(info.get("properties") or {}),
                                 evaluate=self.script_engine.evaluator.evaluate,
                                 find_cases=self.case_finder,
                                 history=lambda: self._history(instance_id, records))
        try:
            result = spec.function(copy.deepcopy(dict(task.data)), context)
        except BpmnError as error:
            self._throw_error(task, error, records)
            return
        except Exception as exc:
            raise StepFailed(f"handler '{topic}' failed at task {bpmn_id}: {type(exc).__name__}: {exc}",
                             str(task.id), bpmn_id) from exc
        problem = self.result_problem(result)
        if problem is not None:
            raise StepFailed(f"handler '{topic}' at task {bpmn_id} {problem}", str(task.id), bpmn_id)
        task.data.update(copy.deepcopy(result or {}))
        share_with_live_tasks(task, result or {})
        with failure_kept(task.workflow):  # the handler completed; a failure is in what follows the task
            task.run()
        sync_live_tasks(task.workflow)
        if context.rearm_requested:
            rearmed: list[str] = []
            with failure_kept(task.workflow):  # a new instant that is not one is the step's failure
                rearmed = rearm_date_timers(task.workflow.top_workflow)
            records.append(StepRecord("timers_rearmed", str(task.id), bpmn_id, {"timers": rearmed}))
        for step, user in context.reassignments:  # applied to the work items when the step is saved
            records.append(StepRecord(REASSIGN_REQUESTED, str(task.id), bpmn_id, {"step": step, "to": user}))
        records.append(StepRecord("handler_completed", str(task.id), bpmn_id,
                                  {"topic": topic, "result": result or {}}))
        for message in context.outbox:
            records.append(StepRecord("outbox", str(task.id), bpmn_id, message))

    def result_problem(self, result: Any) -> str | None:
        """Why a handler's result cannot become case variables (to follow "handler … "), or None.

        It must be a dict (or None) whose values the state and the history can store: JSON values, and the
        types the state serializer tags (date-times, dates, Decimal, UUID, sets). Checked before anything
        is merged, so an unstorable value is the handler's failure, not an error when the step is saved.
        """
        if result is None:
            return None
        if not isinstance(result, dict):
            return f"returned {type(result).__name__}; it must return a dict or None"
        try:  # no NaN (PostgreSQL's JSON refuses it); what converts to JSON can be deep-copied when merged
            json.dumps(self.serializer.convert_data(result), allow_nan=False)
        except Exception as exc:  # any type the serializer or JSON cannot take
            return f"returned a value that cannot be stored ({type(exc).__name__}: {exc})"
        return None

    @staticmethod
    def _throw_error(task, error: BpmnError, records: list[StepRecord]) -> None:
        """Deliver a handler's BPMN error to the error boundary event on its task (matched by code)."""
        bpmn_id = task.task_spec.bpmn_id
        for sibling in task.parent.children if task.parent else []:
            definition = getattr(sibling.task_spec, "event_definition", None)
            if (sibling is not task and isinstance(definition, ErrorEventDefinition)
                    and definition.code in (None, "", error.code)):
                payload = {"errorCode": error.code, "errorMessage": str(error), **error.data}
                task.data.update(payload)
                share_with_live_tasks(task, payload)
                with failure_kept(task.workflow):  # this task's boundary event only, not every one with the code
                    catch_at(sibling, BpmnEvent(definition, payload=payload))
                records.append(StepRecord("bpmn_error", str(task.id), bpmn_id,
                                          {"code": error.code, "message": str(error)}))
                return
        raise StepFailed(f"handler at task {bpmn_id} raised BPMN error '{error.code}' ({error}) "
                         "but no error boundary event on the task catches it", str(task.id), bpmn_id)

    def is_async(self, task, bundle: SpecBundle) -> bool:
        """True for a handler task that runs as a job (``camunda:asyncBefore`` or an asynchronous topic)."""
        info = bundle.info(task)
        spec = self.handlers.get(info.get("topic"))
        return bool(info.get("async") or (spec is not None and spec.asynchronous))

    # -- commands ------------------------------------------------------------------------
    def complete_user_task(self, workflow: BpmnWorkflow, task_id: str, data: dict[str, Any]) -> Any:
        """Merge form data into a READY user task and complete it. Returns the task."""
        task = self.find_task(workflow, task_id)
        task.data.update(copy.deepcopy(data))
        share_with_live_tasks(task, data)
        with failure_kept(workflow):
            task.run()
        sync_live_tasks(workflow)
        return task

    @staticmethod
    def failed_before_start(task) -> bool:
        """True for a task whose update failed: it was deciding whether it may run (a timer computing its
        instant, a multi-instance task its count) and stayed FUTURE or predicted after its parent completed."""
        return bool(task.state & (TaskState.FUTURE | TaskState.PREDICTED_MASK)) and task.parent is not None \
            and task.parent.state == TaskState.COMPLETED

    @classmethod
    def rerun(cls, task) -> None:
        """Let the task a step failed at run again on the next advance: a task whose run failed (SpiffWorkflow
        left it in ERROR) becomes READY; one whose update failed (:meth:`failed_before_start`) is updated again."""
        if task.state == TaskState.ERROR:
            task._set_state(TaskState.READY)
        elif cls.failed_before_start(task):
            with failure_kept(task.workflow):
                task.task_spec._update(task)

    @staticmethod
    def correct_inherited(task, data: dict[str, Any]) -> None:
        """Merge corrected ``data`` into what a task that failed before it started inherits: its parent's
        data, which each update copies again (a supervisor resolving the incident; recorded by the caller)."""
        task.parent.data.update(copy.deepcopy(data))
        forget_texts(task.workflow, [task.parent, *task.parent.children])

    def fire_due_timers(self, workflow: BpmnWorkflow) -> None:
        """Let timers whose instant has passed (by the engine clock) fire on the next advance."""
        with failure_kept(workflow):
            workflow.refresh_timers()

    def deliver_message(self, workflow: BpmnWorkflow, task_id: str, message_name: str,
                        data: dict[str, Any]) -> None:
        task = self.find_task(workflow, task_id)
        if task is None:
            self._trigger_event_subprocess(workflow, task_id, message_name, data)
            return
        definition, holder = caught_event(task)  # after an event-based gateway, the gateway catches for it
        if not isinstance(definition, MessageEventDefinition) or definition.name != message_name:
            raise ValueError(f"task {task.task_spec.bpmn_id} does not wait for message '{message_name}'")
        payload = {"payload": copy.deepcopy(data), "result_var": "__merge__"}
        share_with_live_tasks(task, data)
        with failure_kept(workflow):
            catch_at(holder, BpmnEvent(definition, payload=payload))

    def _trigger_event_subprocess(self, workflow: BpmnWorkflow, trigger: str, message_name: str,
                                  data: dict[str, Any]) -> None:
        """Start a message event sub-process, seeded with the instance's current variables.

        The event sub-process is added to its host (the instance, or the running sub-process it lies in)
        and the message is caught by its start event alone: SpiffWorkflow's own catch would also hand it
        to every other task of the case waiting for a message of that name, and looks only at the
        instance's own event sub-processes.
        """
        for host, start_event in event_subprocess_message_starts(workflow):
            if trigger_id(host, start_event) == trigger and start_event.event_definition.name == message_name:
                break
        else:
            raise ValueError(f"no task or event sub-process '{trigger}' waits for message '{message_name}'")
        instance_scope(workflow).update(copy.deepcopy(data))
        current = _seen_in(host, self.variables(workflow))
        top = workflow.top_workflow
        before = set(top.subprocesses)
        payload = {"payload": copy.deepcopy(data), "result_var": "__merge__"}
        with failure_kept(top):
            started = top.subprocesses[host.spec.start.trigger_wf(host.task_tree, start_event._wf_spec.name)]
            [start] = [t for t in started.tasks.values() if t.task_spec is start_event]
            catch_at(start, BpmnEvent(start_event.event_definition, payload=payload))
        for sub_id in set(top.subprocesses) - before:
            seeded = [top.tasks.get(sub_id), *top.subprocesses[sub_id].tasks.values()]
            for task in seeded:
                if task is not None:
                    task.data.update(copy.deepcopy(current))
                    task.data.update(copy.deepcopy(data))

    def start_by_message(self, workflow: BpmnWorkflow, message_name: str, data: dict[str, Any]) -> None:
        """Trigger the message start event of a freshly created workflow."""
        if not steps_done(workflow):
            return
        for task in tasks_in_state(workflow, TaskState.WAITING):
            definition = _message_definition(task)
            if definition is not None and definition.name == message_name:
                self.deliver_message(workflow, str(task.id), message_name, data)
                return
        raise ValueError(f"process {workflow.spec.name} has no start event for message '{message_name}'")

    @staticmethod
    def start_by_signal(workflow: BpmnWorkflow, signal_name: str, data: dict[str, Any]) -> None:
        """Trigger the signal start event of a freshly created workflow; ``data`` becomes the start's data."""
        if not steps_done(workflow):
            return
        for task in Runtime.waiting_signals(workflow, signal_name):
            if task.parent is not None and task.parent.task_spec is workflow.spec.start:  # a process start
                with failure_kept(workflow):
                    workflow.catch(BpmnEvent(task.task_spec.event_definition, payload=copy.deepcopy(data)))
                return
        raise ValueError(f"process {workflow.spec.name} has no start event for signal '{signal_name}'")

    @staticmethod
    def find_task(workflow: BpmnWorkflow, task_id: str):
        try:
            return workflow.get_task_from_id(UUID(task_id))
        except Exception:
            return None

    # -- projections ---------------------------------------------------------------------
    @staticmethod
    def ready_user_tasks(workflow: BpmnWorkflow) -> list:
        return [t for t in tasks_in_state(workflow, TaskState.READY)
                if isinstance(t.task_spec, UserTaskMixin)]

    @staticmethod
    def ready_handler_tasks(workflow: BpmnWorkflow) -> list:
        return [t for t in tasks_in_state(workflow, TaskState.READY) if isinstance(t.task_spec, HandlerTask)]

    @staticmethod
    def waiting_signals(workflow: BpmnWorkflow, name: str | None = None) -> list:
        """Signal catches (intermediate, boundary, after an event-based gateway) waiting now; only those of
        signal ``name`` when given. Each task's signal is ``caught_event(task)[0]``."""
        return [task for task in waiting_catches(workflow)
                if isinstance(definition := caught_event(task)[0], SignalEventDefinition)
                and (name is None or definition.name == name)]

    def waiting_timers(self, workflow: BpmnWorkflow) -> list[TimerView]:
        timers = []
        for task in waiting_catches(workflow):
            definition, holder = caught_event(task)
            if not isinstance(definition, TimerEventDefinition):
                continue
            value = holder._get_internal_data("event_value")
            if value is None:
                continue
            if isinstance(definition, CycleTimerEventDefinition):
                if value.get("cycles") == 0:
                    continue
                value = value["next"]
            timers.append(TimerView(str(task.id), task.task_spec.bpmn_id, datetime.fromisoformat(value)))
        return timers

    @staticmethod
    def timer_marks(workflow: BpmnWorkflow) -> dict[str, Any]:
        """What each timer event has fired so far: True/False for one-shot timers, the next instant
        for cycles (the baseline of :meth:`fired_timers`)."""
        marks: dict[str, Any] = {}
        for task in tasks_in_state(workflow, TaskState.ANY_MASK):
            definition = caught_event(task)[0]
            if not isinstance(definition, TimerEventDefinition):
                continue
            if isinstance(definition, CycleTimerEventDefinition):
                value = task._get_internal_data("event_value")
                marks[str(task.id)] = (value["cycles"], value["next"]) if value else None
            else:
                marks[str(task.id)] = bool(task.state & (TaskState.READY | TaskState.COMPLETED))
        return marks

    def fired_timers(self, workflow: BpmnWorkflow) -> list[TimerView]:
        """Timers that fired since the workflow was loaded or created, or since the previous call (each with
        the instant it was due), earliest first.

        Any change of a command can fire a timer whose instant has passed — a worker's firing, but also
        completing a task or delivering a message while the clock is past a timer nobody fired yet —
        so the baseline is taken before the command changes anything (:meth:`load`, :meth:`create`).
        """
        before = getattr(workflow, _TIMER_BASELINE, None)
        marks = self.timer_marks(workflow)
        setattr(workflow, _TIMER_BASELINE, marks)
        if before is None:  # not loaded through this runtime: nothing to compare with
            return []
        fired = []
        for task_id, mark in marks.items():
            previous = before.get(task_id)
            if isinstance(mark, tuple) or isinstance(previous, tuple):  # a cycle: fired when its count moved
                if not (isinstance(mark, tuple) and isinstance(previous, tuple) and mark[0] != previous[0]):
                    continue
                task, value = self.find_task(workflow, task_id), previous[1]  # due at the instant it waited for
            else:
                if not mark or previous:
                    continue
                task = self.find_task(workflow, task_id)
                value = caught_event(task)[1]._get_internal_data("event_value")
            try:
                due = datetime.fromisoformat(value) if isinstance(value, str) else None
            except ValueError:
                due = None
            fired.append(TimerView(task_id, task.task_spec.bpmn_id, due))
        return sorted(fired, key=lambda t: (t.due_at is None, t.due_at or datetime.min.replace(tzinfo=UTC)))

    def subscriptions(self, workflow: BpmnWorkflow, bundle: SpecBundle) -> list[SubscriptionView]:
        views = []
        for task in waiting_catches(workflow):
            definition, holder = caught_event(task)
            if not isinstance(definition, MessageEventDefinition):
                continue
            keys = bundle.info(task).get("correlation_keys") or []
            values = {key: holder.data.get(key) for key in keys}
            views.append(SubscriptionView(str(task.id), task.task_spec.bpmn_id, definition.name,
                                          correlation_string(values)))
        starts = event_subprocess_message_starts(workflow)
        if starts:
            variables = self.variables(workflow)
            for host, start_event in starts:
                keys = next((p[start_event.bpmn_id].get("correlation_keys") for p in bundle.meta.values()
                             if start_event.bpmn_id in p), None) or []
                seen = _seen_in(host, variables)
                values = {key: seen.get(key) for key in keys}
                views.append(SubscriptionView(trigger_id(host, start_event), start_event.bpmn_id,
                                              start_event.event_definition.name, correlation_string(values)))
        return views

    @staticmethod
    def thrown_events(workflow: BpmnWorkflow) -> tuple[list[tuple[str, Any]], list[str]]:
        """What the workflow threw for other instances, and clears it: the messages it did not catch itself,
        as (name, payload), and the names of every signal it threw (BPMN broadcasts a signal, so one the
        instance caught itself goes to the others too). (SpiffWorkflow gives a thrown signal the thrower's
        variables as its payload; a signal leaving the instance carries none, so only its name is returned.)"""
        messages = []
        for event in workflow.get_events():  # SpiffWorkflow's outbox; its signals are in signals_thrown too
            definition = event.event_definition
            if isinstance(definition, MessageEventDefinition):
                payload = event.payload.get("payload") if isinstance(event.payload, dict) else event.payload
                messages.append((definition.name, copy.deepcopy(payload)))
        signals = signals_thrown(workflow)
        taken, signals[:] = list(signals), []
        return messages, taken

    @staticmethod
    def status(workflow: BpmnWorkflow) -> str:
        return "completed" if workflow.is_completed() else "running"

    @staticmethod
    def variables(workflow: BpmnWorkflow) -> dict[str, Any]:
        """The instance's current variables: the instance scope over the data of every live path.

        For a finished instance, the data of the last completed task under the scope.
        """
        scope = instance_scope(workflow)
        if workflow.is_completed():
            last = dict(workflow.last_task.data) if workflow.last_task is not None else {}
            return {**last, **scope}
        merged: dict[str, Any] = {}
        live = tasks_in_state(workflow, TaskState.READY | TaskState.WAITING | TaskState.STARTED)
        for task in sorted(live, key=lambda t: t.last_state_change):
            merged.update(task.data)
        return {**merged, **scope}


def catch_at(task, event: BpmnEvent) -> None:
    """Deliver ``event`` to the waiting ``task`` alone.

    ``BpmnWorkflow.catch`` gives a message to every task of the case waiting for one of that name,
    whatever its correlation (all instances of a multi-instance receive task, a main-path catch and an
    event sub-process start alike); gridflow has already chosen the catch by its correlation keys.
    """
    if not task.task_spec.catches(task, event):
        raise ValueError(f"task {task.task_spec.bpmn_id} does not catch {event.event_definition.name}")
    task.task_spec.catch(task, event)
    task.task_spec._update(task)


def event_subprocess_message_starts(workflow: BpmnWorkflow) -> list[tuple[Any, Any]]:
    """Message start events of the event sub-processes the instance may trigger now, as (host, start event).

    The host is the (sub-)workflow that directly contains the event sub-process: the instance while it runs,
    or an embedded sub-process (or called process) while it runs; once its host has finished, an event
    sub-process takes no message.
    """
    top = workflow.top_workflow
    hosts = [] if top.is_completed() else [top, *top.get_active_subprocesses()]
    starts = []
    for host in hosts:
        for name in host.spec.start.trigger_specs:
            spec = top.subprocess_specs.get(name)
            for start_event in spec.bpmn_start_events if spec is not None else []:
                if isinstance(getattr(start_event, "event_definition", None), MessageEventDefinition):
                    starts.append((host, start_event))
    return starts


def _seen_in(host, variables: dict[str, Any]) -> dict[str, Any]:
    """The case ``variables`` as the tasks inside ``host`` (the instance or one running sub-process) see them:
    with the data of the task that runs ``host`` over them (in a multi-instance body: which site, which meter)."""
    top = host.top_workflow
    if host is top:
        return variables
    owner = top.get_task_from_id(host.parent_task_id)
    return {**variables, **owner.data} if owner is not None else variables


def trigger_id(host, start_event) -> str:
    """A stable subscription id for an event sub-process start in ``host`` (the instance or one running
    sub-process of it; see :func:`event_subprocess_message_starts`)."""
    return str(uuid5(host.task_tree.id, start_event.bpmn_id))


def rearm_date_timers(workflow: BpmnWorkflow) -> list[str]:
    """Make every waiting ``timeDate`` timer re-evaluate its instant from the current variables."""
    rearmed = []
    for task in waiting_catches(workflow):
        definition, holder = caught_event(task)
        if isinstance(definition, ClockedTimeDate) and not holder._get_internal_data("event_fired", False):
            holder.internal_data.pop("event_value", None)
            definition.has_fired(holder)
            rearmed.append(task.task_spec.bpmn_id)
    return rearmed


def _message_definition(task) -> MessageEventDefinition | None:
    definition = caught_event(task)[0]
    return definition if isinstance(definition, MessageEventDefinition) else None

