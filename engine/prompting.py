"""Filling a user-task form one field at a time, from its JSON Schema (``gridflow complete`` at a terminal).

The walker knows forms, not terminals: it talks through a small :class:`PromptIO` (ask a line,
say a line, confirm), so the CLI plugs in click prompts and a test can plug in a script.

What it reads from a form schema (``forms/<key>.schema.json``):

- field order from ``x-order`` (a list of property names at the top level, or a number per
  property); properties it does not name follow in file order;
- ``title`` (the Chinese label), ``description`` (shown as help above the prompt), ``default``,
  ``readOnly`` (shown as context, never asked), ``required``;
- choices from ``oneOf``/``anyOf`` of ``{"const", "title"}`` or ``enum``: answer with the number,
  the value or its title;
- ``boolean`` as y/n (also 是/否), ``integer``/``number``, ``string`` with ``format`` ``date-time``
  (ISO 8601; without an offset the business zone Asia/Shanghai is assumed; ``now`` is accepted)
  or ``date``; arrays and objects as JSON text (a list of strings also as ``a, b, c``).

Each value is checked against its property schema as soon as it is entered and re-asked with
the reason when it fails; the whole form (``required``, ``if``/``then``) is checked at the end and
the fields it names are asked again. Nothing is written until the summary is confirmed.
"""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, Protocol

from .clock import SHANGHAI

MISSING: Any = object()
TRUE_WORDS = {"y", "yes", "true", "1", "是", "对", "t"}
FALSE_WORDS = {"n", "no", "false", "0", "否", "不", "f"}
CLEAR = "-"


class PromptIO(Protocol):
    def ask(self, prompt: str) -> str: ...

    def say(self, text: str) -> None: ...

    def confirm(self, question: str) -> bool: ...


@dataclass
class FormField:
    name: str
    label: str
    help: str | None
    kind: str  # boolean, integer, number, string, date-time, date, choice, json
    required: bool
    default: Any
    choices: list[tuple[Any, str]] = field(default_factory=list)
    schema: dict[str, Any] = field(default_factory=dict)
    read_only: bool = False

    def hint(self) -> str:
        if self.kind == "json" and (self.schema.get("items") or {}).get("type") == "string":
            return "a, b, … or JSON"
        return {"boolean": "y/n", "integer": "integer", "number": "number", "date-time": "YYYY-MM-DD HH:MM",
                "date": "YYYY-MM-DD", "json": "JSON", "choice": f"1-{len(self.choices)}"}.get(self.kind, "")


def form_fields(schema: dict[str, Any]) -> list[FormField]:
    """The form's fields in display order (see the module docstring)."""
    properties: dict[str, Any] = schema.get("properties") or {}
    required = set(schema.get("required") or [])
    order = schema.get("x-order")
    names = list(properties)
    if isinstance(order, list):
        listed = [n for n in order if n in properties]
        names = listed + [n for n in names if n not in listed]
    else:
        position = {n: i for i, n in enumerate(names)}
        names.sort(key=lambda n: (properties[n].get("x-order", 1e9)
                                  if isinstance(properties[n].get("x-order"), int | float) else 1e9, position[n]))
    return [_field(name, properties[name] or {}, name in required) for name in names]


def _field(name: str, prop: dict[str, Any], required: bool) -> FormField:
    kind_of = prop.get("type")
    if isinstance(kind_of, list):
        kind_of = next((t for t in kind_of if t != "null"), "string")
    choices = [(o["const"], str(o.get("title") or o["const"])) for o in (prop.get("oneOf") or prop.get("anyOf") or [])
               if isinstance(o, dict) and "const" in o]
    if not choices and isinstance(prop.get("enum"), list):
        choices = [(v, str(v)) for v in prop["enum"]]
    if choices:
        kind = "choice"
    elif kind_of in ("boolean", "integer", "number"):
        kind = kind_of
    elif kind_of in ("array", "object"):
        kind = "json"
    elif prop.get("format") in ("date-time", "date"):
        kind = prop["format"]
    else:
        kind = "string"
    return FormField(name, str(prop.get("title") or name), prop.get("description"), kind, required,
                     prop.get("default", MISSING), choices, prop, bool(prop.get("readOnly")))


# -- one value --------------------------------------------------------------------------------
def parse_value(f: FormField, text: str, now: Callable[[], datetime] | None = None) -> Any:
    """The typed value for the operator's text; ValueError with a reason a person can act on."""
    text = text.strip()
    if f.kind == "boolean":
        word = text.lower()
        if word in TRUE_WORDS:
            return True
        if word in FALSE_WORDS:
            return False
        raise ValueError("answer y (是) or n (否)")
    if f.kind == "choice":
        if text.isdigit() and 1 <= int(text) <= len(f.choices) and not any(str(c) == text for c, _ in f.choices):
            return f.choices[int(text) - 1][0]
        for value, title in f.choices:
            if text in (str(value), title):
                return value
        raise ValueError(f"choose a number from 1 to {len(f.choices)}, a value or its title")
    if f.kind == "integer":
        try:
            return int(text)
        except ValueError:
            raise ValueError(f"'{text}' is not a whole number") from None
    if f.kind == "number":
        try:
            number = float(text)
        except ValueError:
            raise ValueError(f"'{text}' is not a number") from None
        if number != number or number in (float("inf"), float("-inf")):
            raise ValueError(f"'{text}' is not a finite number")
        return int(number) if number.is_integer() and "." not in text and "e" not in text.lower() else number
    if f.kind == "date-time":
        if text.lower() == "now" and now is not None:
            return now().astimezone(SHANGHAI).isoformat(timespec="seconds")
        try:
            instant = datetime.fromisoformat(text)
        except ValueError:
            raise ValueError(f"'{text}' is not a date-time; write e.g. 2026-12-01 09:30 or "
                             "2026-12-01T09:30:00+08:00") from None
        if instant.tzinfo is None:
            instant = instant.replace(tzinfo=SHANGHAI)
        return instant.isoformat(timespec="seconds")
    if f.kind == "date":
        try:
            return date.fromisoformat(text).isoformat()
        except ValueError:
            raise ValueError(f"'{text}' is not a date; write e.g. 2026-12-01") from None
    if f.kind == "json":
        items = f.schema.get("items") if f.schema.get("type") == "array" else None
        if isinstance(items, dict) and items.get("type") == "string" and not text.startswith("["):
            return [part.strip() for part in text.replace("，", ",").split(",") if part.strip()]
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"invalid JSON at column {exc.colno}: {exc.msg}") from None
    return text


def field_problem(f: FormField, value: Any, root: dict[str, Any]) -> str | None:
    """Why ``value`` fails the field's own schema (pattern, range, length, format …), or None."""
    from jsonschema import Draft202012Validator, FormatChecker

    schema = dict(f.schema)
    for key in ("$defs", "definitions"):
        if key in root and key not in schema:
            schema[key] = root[key]
    errors = sorted(Draft202012Validator(schema, format_checker=FormatChecker()).iter_errors(value),
                    key=lambda e: len(list(e.absolute_path)))
    return _reason(errors[0], f) if errors else None


def form_problems(schema: dict[str, Any], data: dict[str, Any]) -> list[tuple[str | None, str]]:
    """Whole-form problems as (field name or None, reason)."""
    from jsonschema import Draft202012Validator, FormatChecker

    found: list[tuple[str | None, str]] = []
    for error in Draft202012Validator(schema, format_checker=FormatChecker()).iter_errors(data):
        if error.validator == "required" and isinstance(error.instance, dict):
            for name in error.validator_value:
                if name not in error.instance:
                    found.append((name, "required here"))
        elif error.absolute_path:
            found.append((str(error.absolute_path[0]), error.message))
        else:
            found.append((None, error.message))
    return found


def _reason(error, f: FormField) -> str:
    rule, limit = error.validator, error.validator_value
    if rule == "pattern":
        return f"does not have the expected format (pattern {limit})"
    if rule in ("minimum", "exclusiveMinimum"):
        return f"must be {'at least' if rule == 'minimum' else 'more than'} {limit}"
    if rule in ("maximum", "exclusiveMaximum"):
        return f"must be {'at most' if rule == 'maximum' else 'less than'} {limit}"
    if rule == "minLength":
        return f"needs at least {limit} character(s)"
    if rule == "maxLength":
        return f"allows at most {limit} character(s)"
    if rule == "format":
        return f"is not a valid {limit}"
    return error.message


def display(f: FormField, value: Any) -> str:
    if value is MISSING:
        return "—"
    if f.kind == "boolean":
        return "是 (yes)" if value else "否 (no)"
    if f.kind == "choice":
        title = next((t for v, t in f.choices if v == value), None)
        return f"{title} ({value})" if title and title != str(value) else str(value)
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def _answer_text(f: FormField, value: Any) -> str:
    """The text that, typed back, gives ``value`` (shown as the default in brackets)."""
    if f.kind == "boolean":
        return "y" if value else "n"
    if f.kind == "choice":
        return next((str(i) for i, (v, _) in enumerate(f.choices, 1) if v == value), str(value))
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


# -- the walk -------------------------------------------------------------------------------------
class FormWalk:
    """One interactive filling of one form."""

    def __init__(self, schema: dict[str, Any], io: PromptIO, initial: dict[str, Any] | None = None,
                 now: Callable[[], datetime] | None = None):
        self.schema = schema
        self.io = io
        self.now = now
        self.fields = form_fields(schema)
        self.initial = dict(initial or {})
        self.values: dict[str, Any] = {}

    def run(self) -> dict[str, Any] | None:
        """Ask every field, check the whole form, show the summary; the data, or None when not confirmed."""
        asked = [f for f in self.fields if not f.read_only]
        must: set[str] = set()
        rounds = 0
        read_only = {f.name: self.initial[f.name] for f in self.fields
                     if f.read_only and self.initial.get(f.name) is not None}
        by_name = {f.name: f for f in self.fields if not f.read_only}
        while True:
            for f in asked:
                self._ask(f, f.required or f.name in must)
            # read-only fields are checked with the case's values, as the engine does
            problems = form_problems(self.schema, {**self.values, **read_only})
            if not problems:
                break
            rounds += 1
            again = []
            for name, reason in problems:
                label = by_name[name].label if name in by_name else (name or "form")
                self.io.say(f"  ✗ {label}: {reason}")
                if name in by_name and by_name[name] not in again:
                    again.append(by_name[name])
                    if reason == "required here":
                        must.add(name)
            if not again or rounds > 20:  # nothing the operator can change fixes it: stop, write nothing
                raise ValueError("the form cannot be completed as the case stands: "
                                 + "; ".join(f"{n or 'form'}: {r}" for n, r in problems))
            asked = again
        self.io.say("")
        self.io.say("Summary / 确认:")
        width = max((_width(f.label) for f in self.fields), default=0)
        for f in self.fields:
            if f.read_only:
                continue
            padding = " " * (width - _width(f.label))
            self.io.say(f"  {f.label}{padding}  {display(f, self.values.get(f.name, MISSING))}")
        if self.io.confirm("Submit? / 提交?"):
            return dict(self.values)
        return None

    def _default(self, f: FormField) -> Any:
        if f.name in self.values:
            return self.values[f.name]
        if f.name in self.initial and field_problem(f, self.initial[f.name], self.schema) is None:
            return self.initial[f.name]
        return f.default

    def _ask(self, f: FormField, required: bool) -> None:
        default = self._default(f)
        self.io.say("")
        if f.help:
            self.io.say(f"  {f.help}")
        if f.kind == "choice":
            for number, (value, title) in enumerate(f.choices, 1):
                self.io.say(f"   {number}) {title}" + (f"  [{value}]" if title != str(value) else ""))
        marker = " *" if required else ""
        hint = f" ({f.hint()})" if f.hint() else ""
        shown = f" [{_answer_text(f, default)}]" if default is not MISSING else ""
        prompt = f"{f.label}{marker}{hint}{shown}"
        while True:
            text = self.io.ask(prompt).strip()
            if text == "":
                if default is not MISSING:
                    self.values[f.name] = default
                    return
                if not required:
                    self.values.pop(f.name, None)
                    return
                self.io.say(f"  ✗ {f.label} is required / 必填")
                continue
            if text == CLEAR and not required:  # leave an optional field empty despite its default
                self.values.pop(f.name, None)
                return
            try:
                value = parse_value(f, text, self.now)
            except ValueError as exc:
                self.io.say(f"  ✗ {f.label}: {exc}")
                continue
            problem = field_problem(f, value, self.schema)
            if problem:
                self.io.say(f"  ✗ {f.label}: {display(f, value)} {problem}")
                continue
            self.values[f.name] = value
            return


def _width(text: str) -> int:
    """Terminal columns: CJK characters take two."""
    return sum(2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1 for ch in text)


def context_lines(schema: dict[str, Any], variables: dict[str, Any]) -> list[tuple[str, str]]:
    """(label, value) of the read-only fields, filled from the case variables."""
    return [(f.label, display(f, variables[f.name])) for f in form_fields(schema)
            if f.read_only and f.name in variables]
