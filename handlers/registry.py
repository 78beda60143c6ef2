"""The handler registry: topic name -> Python callable, plus discovery of handler modules."""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from importlib.metadata import entry_points
from typing import Any

BUILTIN_MODULES: tuple[str, ...] = ("handlers.sla_actions", "handlers.complaint", "handlers.revisit",
                                   "handlers.timing", "handlers.aftersale", "handlers.sales")


class BpmnError(Exception):
    """Raise from a handler to throw a BPMN error: an error boundary event with this code catches it.

    Unlike any other exception (which opens an incident), a BpmnError is business flow: for
    example a failed remote reconnection falls back to an on-site visit.
    """

    def __init__(self, code: str, message: str = "", **data: Any):
        super().__init__(message or code)
        self.code = code
        self.data = data


@dataclass
class HandlerContext:
    """What a handler may know besides the variables.

    ``properties`` are the task's ``camunda:property`` entries (read them with :meth:`param`).

    ``idempotency_key`` is the same for every attempt at the same task (instance id + task id),
    so an integrator can make a side effect exactly-once. ``now`` is the engine clock's aware
    instant. ``emit`` records an outbox message (notice, SMS) in the instance history.
    ``find_cases(key, since)`` lists recent cases of a process (read-only: instance_id,
    business_key, started_at, variables) for rules such as repeat-complaint detection;
    ``find_cases(key, since, any_of={"customerNo": no, "contactPhone": phone})`` only those with one
    of these text variables equal (filtered by the database: use it when the window holds many cases).
    ``attempt`` counts the runs of an asynchronous job (1 for the first; a synchronous handler is 1).
    ``history()`` (synchronous handlers) lists this instance's history events so far, oldest first,
    including those of the current command: dicts with type, task_id, bpmn_id and data — e.g. the
    answers of a multi-instance user task, each of which lives in its own scope.
    ``rearm_timers()`` and ``reassign(step, user)`` ask the engine for something it does when the
    step is saved: re-evaluate the waiting date timers; give a step's open tasks to another user.
    """

    instance_id: str
    business_key: str | None
    task_id: str
    bpmn_id: str
    topic: str
    now: datetime
    idempotency_key: str
    properties: dict[str, str] = field(default_factory=dict)
    evaluate: Callable[[str, dict[str, Any]], Any] | None = None
    outbox: list[dict[str, Any]] = field(default_factory=list)
    attempt: int = 1
    find_cases: Callable[..., list[dict[str, Any]]] | None = None
    rearm_requested: bool = False
    history: Callable[[], list[dict[str, Any]]] | None = None
    reassignments: list[tuple[str, str]] = field(default_factory=list)

    def rearm_timers(self) -> None:
        """Ask the engine to re-evaluate the waiting date timers after this handler (§9.3 re-arm)."""
        self.rearm_requested = True

    def reassign(self, step: str, user: str) -> None:
        """Ask the engine to give the open tasks of ``step`` (a user task's element id, or a sub-process
        whose open tasks all move) to ``user`` once this handler's step is saved (a 督办 改派). Each moved
        task is recorded as ``task_reassigned``; a step with no open task records the request only."""
        if not step or not user:
            raise ValueError(f"reassign needs a step and a user, got step={step!r} user={user!r}")
        self.reassignments.append((step, user))

    def param(self, name: str, variables: dict[str, Any], default: Any = None) -> Any:
        """A ``camunda:property`` of the task; a ``${expression}`` value is evaluated safely over ``variables``."""
        raw = self.properties.get(name)
        if raw is None:
            return default
        text = raw.strip()
        if text.startswith("${") and text.endswith("}") and self.evaluate is not None:
            return self.evaluate(text, variables)
        return raw

    def emit(self, channel: str, recipient: str, text: str, **extra: Any) -> None:
        """Queue a message for the outbox; it is written to history with the step's transaction."""
        self.outbox.append({"channel": channel, "to": recipient, "text": text, **extra})


@dataclass(frozen=True)
class HandlerSpec:
    topic: str
    function: Callable[[dict[str, Any], HandlerContext], dict[str, Any] | None]
    asynchronous: bool = False
    retry_cycle: str = "R3/PT1M"


_REGISTRY: dict[str, HandlerSpec] = {}
_SEARCHABLE: dict[str, tuple[str, ...]] = {}
_loaded = False


def searchable(process_key: str, *names: str) -> None:
    """Declare variables of ``process_key`` that handlers look cases up by (``find_cases(any_of=...)``).

    The engine keeps an indexed copy of their text values per case, so such a lookup reads the matching
    cases instead of every case in its time window. Declaring is an optimisation only: the results are
    the same without it. Call it at import time of the handler module that searches.
    """
    for name in names:
        if not name.isidentifier():
            raise ValueError(f"searchable variable of '{process_key}' must be an identifier, got {name!r}")
    _SEARCHABLE[process_key] = tuple(dict.fromkeys((*_SEARCHABLE.get(process_key, ()), *names)))


def searchable_variables() -> dict[str, tuple[str, ...]]:
    """Process key -> the variables declared :func:`searchable` (after loading every handler module)."""
    load_handlers()
    return dict(_SEARCHABLE)


def handler(topic: str, *, asynchronous: bool = False, retry_cycle: str = "R3/PT1M"):
    """Register the decorated function as the handler of ``topic``.

    The function takes ``(variables, context)`` and returns a dict of variables to set (or None). Its
    values must be storable: JSON values, date-times, dates, ``Decimal``, ``UUID``, sets. Anything else
    (bytes, an object) fails the task like an exception would (an incident; for an asynchronous task,
    a retry first), and none of the result is kept.
    """

    def register(function):
        existing = _REGISTRY.get(topic)
        if existing is not None and existing.function is not function:
            where = f"{existing.function.__module__}.{existing.function.__qualname__}"
            raise ValueError(f"handler topic '{topic}' is already registered by {where}")
        _REGISTRY[topic] = HandlerSpec(topic, function, asynchronous, retry_cycle)
        return function

    return register


def load_handlers() -> dict[str, HandlerSpec]:
    """Import the built-in handler modules, ``GRIDFLOW_HANDLERS`` and ``gridflow.handlers`` entry points.

    Idempotent; a module that fails to import raises ImportError naming it.
    """
    global _loaded
    if not _loaded:
        modules = list(BUILTIN_MODULES)
        modules += [m.strip() for m in os.environ.get("GRIDFLOW_HANDLERS", "").split(",") if m.strip()]
        for module in modules:
            try:
                importlib.import_module(module)
            except Exception as exc:
                raise ImportError(f"cannot import handler module '{module}': {exc}") from exc
        for entry in entry_points(group="gridflow.handlers"):
            try:
                entry.load()
            except Exception as exc:
                raise ImportError(f"cannot load handler entry point '{entry.name}' ({entry.value}): {exc}") from exc
        _loaded = True
    return _REGISTRY


def registered_topics() -> dict[str, HandlerSpec]:
    """The registry after loading every handler module."""
    return load_handlers()
