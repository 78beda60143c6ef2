"""Benchmark 1: the complaint flow to completion, Engine API on SQLite vs SpiffWorkflow alone in memory.

Both sides run the same cases of ``processes/complaint_handling.bpmn`` (+ ``revisit.bpmn``) with the
same answers (``bench.workload``), the same handler functions and the same simulated clock:

- **SpiffWorkflow alone**: one ``BpmnWorkflow`` per case on the spec parsed once, stepped with
  ``do_engine_steps``/``refresh_timers``; READY service tasks call the registered handler function,
  READY user tasks take the answers; nothing is stored. It uses gridflow's parser and expression
  evaluator only because this BPMN needs them (Camunda ``${…}`` conditions, external-task topics);
  none of gridflow's runtime adapter (instance-wide variables, history records) runs.
- **Engine on SQLite**: ``bench.common.drive_case`` through the public API (``correlate``,
  ``tasks``, ``task_view``, ``complete``, ``run_jobs``, ``run_due``), one transaction per command,
  state and projections written each time, on a WAL SQLite file.

Prints cases per second of each and the ratio engine / SpiffWorkflow (target ≥ 0.5), and a third run
that bounds the ratio from above: SpiffWorkflow in memory that also serializes the state once per
engine command (start, each user task, the job, each timer firing) with gridflow's state serializer,
and stores nothing — what any design that persists the whole SpiffWorkflow state per command pays
before it touches a database.
"""

from __future__ import annotations

import copy
import time

from . import common, workload
from .common import T0


def run_spiff(cases: int, serialize: bool = False) -> dict:
    """SpiffWorkflow alone; with ``serialize``, the state is also dumped where the engine commits."""
    from SpiffWorkflow.bpmn import BpmnEvent, BpmnWorkflow
    from SpiffWorkflow.bpmn.specs.mixins.user_task import UserTask
    from SpiffWorkflow.util.task import TaskState

    from engine.bpmn import GridflowParser, HandlerTask, SafeScriptEngine
    from engine.clock import FixedClock
    from engine.definitions import inspect_files
    from engine.runtime import Runtime
    from engine.serializer import StateSerializer
    from handlers.registry import HandlerContext, load_handlers

    handlers = load_handlers()
    meta = {}
    for process in inspect_files(workload.PROCESSES, known_topics=set(handlers)).processes:
        for bpmn_id, info in process.meta.items():
            meta[bpmn_id] = info
    parser = GridflowParser()
    for path in workload.PROCESSES:
        parser.add_bpmn_file(str(path))
    spec = parser.get_spec("complaint_handling")
    subprocess_specs = parser.get_subprocess_specs("complaint_handling")
    clock = FixedClock(T0)
    script_engine = SafeScriptEngine(clock)
    serializer = StateSerializer()
    runtime = Runtime(clock, handlers)  # only to read the waiting timers' due times
    completions = handler_calls = dumps = 0
    started = time.perf_counter()
    for n in range(cases):
        _, data = workload.start_payload(n, clock.now())
        workflow = BpmnWorkflow(spec, subprocess_specs, script_engine=script_engine)
        workflow.do_engine_steps()
        [start] = [t for t in workflow.get_tasks(state=TaskState.WAITING)
                   if getattr(t.task_spec, "event_definition", None) is not None]
        payload = {"payload": data, "result_var": "__merge__"}
        workflow.catch(BpmnEvent(start.task_spec.event_definition, payload=payload))
        commands = 1  # the start
        for _ in range(500):
            workflow.refresh_timers()
            workflow.do_engine_steps()
            if serialize:
                for _ in range(commands):
                    serializer.dumps(workflow)
                dumps += commands
            commands = 0
            if workflow.is_completed():
                break
            ready = workflow.get_tasks(state=TaskState.READY)
            if not ready:  # only timers are left (the revisit's wait): move the clock to the first one
                clock.set(max(clock.now(), min(t.due_at for t in runtime.waiting_timers(workflow))))
                commands = 1  # a timer firing
                continue
            for task in ready:
                info = meta.get(task.task_spec.bpmn_id, {})
                if isinstance(task.task_spec, HandlerTask):
                    topic = info.get("topic")
                    context = HandlerContext(instance_id=str(n), business_key=workload.work_order(n),
                                             task_id=str(task.id), bpmn_id=task.task_spec.bpmn_id, topic=topic,
                                             now=clock.now(), idempotency_key=f"{n}:{task.id}",
                                             properties=dict(info.get("properties") or {}),
                                             evaluate=script_engine.evaluator.evaluate,
                                             find_cases=lambda *a, **k: [], history=lambda: [])
                    result = handlers[topic].function(copy.deepcopy(dict(task.data)), context)
                    task.data.update(result or {})
                    handler_calls += 1
                    commands += bool(info.get("async") or handlers[topic].asynchronous)  # a job: its own command
                elif isinstance(task.task_spec, UserTask):
                    task.data.update(workload.answer(info.get("form_key"), dict(task.data), clock.now(), n))
                    completions += 1
                    commands += 1
                task.run()
        else:
            raise RuntimeError(f"case {n} did not complete in memory")
    elapsed = time.perf_counter() - started
    return {"cases": cases, "seconds": elapsed, "per_second": cases / elapsed, "user_tasks": completions,
            "handler_calls": handler_calls, "state_dumps": dumps}


def run_engine(cases: int, url: str | None = None) -> dict:
    from engine.api import Engine
    from engine.clock import FixedClock

    with common.scratch_sqlite() as scratch:
        clock = FixedClock(T0)
        engine = Engine(url or scratch, clock=clock)
        try:
            engine.deploy(workload.PROCESSES)
            common.drive_case(engine, clock, 10_000)  # warm-up: spec parse, imports, form schemas
            completions = 0
            started = time.perf_counter()
            for n in range(cases):
                _, done = common.drive_case(engine, clock, n)
                completions += done
            elapsed = time.perf_counter() - started
        finally:
            engine.close()
    return {"cases": cases, "seconds": elapsed, "per_second": cases / elapsed, "user_tasks": completions}


def run(cases: int = 50) -> dict:
    spiff = run_spiff(cases)
    spiff = run_spiff(cases)  # the first run pays imports and the parse
    engine = run_engine(cases)
    floor = run_spiff(cases, serialize=True)
    return {"spiff": spiff, "engine": engine, "ratio": engine["per_second"] / spiff["per_second"],
            "spiff_serializing": floor, "serializing_ratio": floor["per_second"] / spiff["per_second"]}


if __name__ == "__main__":
    import sys

    result = run(int(sys.argv[1]) if len(sys.argv) > 1 else 50)
    print(result)
