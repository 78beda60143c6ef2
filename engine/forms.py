"""User-task forms: JSON Schema per form key, validated before data reaches a workflow.

Schemas live in ``forms/<formKey>.schema.json`` (draft 2020-12). A form key without a schema
accepts any JSON object. Errors name the task, the field and the rule broken.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator, FormatChecker

from .errors import InvalidInput

FORMS_DIR = Path(__file__).resolve().parent.parent / "forms"


class FormRegistry:
    """Looks up and applies form schemas from one or more directories (first match wins)."""

    def __init__(self, directories: list[Path] | None = None):
        self.directories = directories or [FORMS_DIR]

    def schema(self, form_key: str | None) -> dict[str, Any] | None:
        if not form_key:
            return None
        return _load_schema(tuple(str(d) for d in self.directories), form_key)

    def validate(self, form_key: str | None, data: Any, where: str) -> None:
        """Raise InvalidInput (one line per problem, first line says where) when data fails the schema."""
        if not isinstance(data, dict):
            raise InvalidInput(f"{where}: form data must be a JSON object, got {type(data).__name__}")
        schema = self.schema(form_key)
        if schema is None:
            return
        validator = Draft202012Validator(schema, format_checker=FormatChecker())
        problems = sorted(validator.iter_errors(data), key=lambda e: list(e.absolute_path))
        if problems:
            details = "; ".join(_describe(problem, schema) for problem in problems[:5])
            more = f" (+{len(problems) - 5} more)" if len(problems) > 5 else ""
            raise InvalidInput(f"{where} (form {form_key}): {details}{more}")


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


def _describe(problem, schema: dict[str, Any]) -> str:
    path = ".".join(str(p) for p in problem.absolute_path)
    field = path or "(form)"
    title = schema.get("properties", {}).get(path, {}).get("title") if path else None
    label = f"{field} {title}" if title else field
    return f"{label}: {problem.message}"
