"""User-task forms: JSON Schema per form key, validated before data reaches a workflow.

Schemas live in ``forms/<formKey>.schema.json`` (draft 2020-12). A form key without a schema
accepts any JSON object. Errors name the task, the field and the rule broken.

Extra form directories: ``GRIDFLOW_FORMS`` lists directories (separated like ``PATH``, ``:`` on
Linux) searched before the built-in ``forms/``; the first file found for a form key wins.
``jsonschema`` is imported on first validation, so commands that only list work stay fast.
"""

from __future__ import annotations

import json
import os
import re
from datetime import date, datetime
from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from typing import Any

from .errors import InvalidInput

FORMS_DIR = Path(__file__).resolve().parent.parent / "forms"
FORMS_ENV = "GRIDFLOW_FORMS"


def form_directories() -> list[Path]:
    """``GRIDFLOW_FORMS`` directories first, then the built-in ``forms/``."""
    extra = [Path(d) for d in os.environ.get(FORMS_ENV, "").split(os.pathsep) if d.strip()]
    return [*extra, FORMS_DIR]


class FormRegistry:
    """Looks up and applies form schemas from one or more directories (first match wins)."""

    def __init__(self, directories: list[Path] | None = None):
        self.directories = directories or form_directories()

    def schema(self, form_key: str | None) -> dict[str, Any] | None:
        """The JSON Schema of a form key, or None when no schema file exists (any object is accepted)."""
        if not form_key or not _FORM_KEY.fullmatch(form_key):
            return None
        return _load_schema(tuple(str(d) for d in self.directories), form_key)

    def exists(self, form_key: str) -> bool:
        return self.schema(form_key) is not None

    def without_read_only(self, form_key: str | None, data: dict[str, Any]) -> dict[str, Any]:
        """Drop fields marked ``readOnly``: the case keeps its own value, whatever the form sent."""
        schema = self.schema(form_key) or {}
        read_only = {n for n, p in schema.get("properties", {}).items() if p.get("readOnly")}
        return {k: v for k, v in data.items() if k not in read_only}

    def validate(self, form_key: str | None, data: Any, where: str,
                 variables: dict[str, Any] | None = None) -> None:
        """Raise InvalidInput (one line per problem, first line says where) when data fails the schema.

        ``readOnly`` fields are checked with the case's current values from ``variables``.
        """
        if not isinstance(data, dict):
            raise InvalidInput(f"{where}: form data must be a JSON object, got {type(data).__name__}")
        schema = self.schema(form_key)
        if schema is None:
            return
        if variables is not None:
            data = with_case_values(schema, data, variables)
        validator = _validator(tuple(str(d) for d in self.directories), form_key)
        problems = sorted(validator.iter_errors(data), key=lambda e: list(e.absolute_path))
        if problems:
            details = "; ".join(_describe(problem, schema) for problem in problems[:5])
            more = f" (+{len(problems) - 5} more)" if len(problems) > 5 else ""
            raise InvalidInput(f"{where} (form {form_key}): {details}{more}")


def with_case_values(schema: dict[str, Any], data: dict[str, Any], variables: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``data`` with each ``readOnly`` field as the case has it (absent when the case has none):
    what a form is checked against. Submitted values of read-only fields never count."""
    data = dict(data)
    for name, prop in schema.get("properties", {}).items():
        if prop.get("readOnly"):
            data.pop(name, None)
            if variables.get(name) is not None:
                data[name] = _json_value(variables[name])
    return data


def _json_value(value: Any) -> Any:
    """A case variable as the form schema sees it (dates as ISO 8601 text, decimals as numbers)."""
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    return value


_FORM_KEY = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,199}")


@lru_cache(maxsize=256)
def _load_schema(directories: tuple[str, ...], form_key: str) -> dict[str, Any] | None:
    for directory in directories:
        path = Path(directory) / f"{form_key}.schema.json"
        if path.is_file():
            try:
                return json.loads(path.read_text(encoding="utf-8"))
            except json.JSONDecodeError as exc:
                raise InvalidInput(f"{path}:{exc.lineno}: invalid JSON: {exc.msg}") from None
    return None


@lru_cache(maxsize=256)
def _validator(directories: tuple[str, ...], form_key: str):
    """The compiled validator of a form's schema (building one, with its format checker, costs more than
    validating a form); bounded like the schema cache it reads from."""
    from jsonschema import Draft202012Validator, FormatChecker

    return Draft202012Validator(_load_schema(directories, form_key), format_checker=FormatChecker())


def _describe(problem, schema: dict[str, Any]) -> str:
    path = ".".join(str(p) for p in problem.absolute_path)
    field = path or "(form)"
    title = schema.get("properties", {}).get(path, {}).get("title") if path else None
    label = f"{field} {title}" if title else field
    return f"{label}: {problem.message}"
