"""Realistic operator input for simulations and demos, generated from the form schemas.

Given a form's JSON Schema, :class:`FormFiller` produces data that passes it: enum values
from ``oneOf``/``enum``, phone numbers and 户号 matching the data dictionary's patterns, Chinese
names and addresses, date-times from the simulation clock. Conditional requirements
(``if``/``then``) are satisfied by validating and filling what the validator still asks for.
All randomness comes from the ``random.Random`` passed in, so a seed reproduces a run.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from jsonschema import Draft202012Validator, FormatChecker

from .forms import with_case_values

SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗"
GIVEN = ["伟", "芳", "娜", "秀英", "敏", "静", "丽", "强", "磊", "军", "洋", "勇", "艳", "杰", "娟", "涛", "明", "超"]
DISTRICTS = ["天河区", "越秀区", "海珠区", "白云区", "番禺区", "黄埔区", "花都区", "南沙区"]
ROADS = ["中山大道", "黄埔大道", "环市东路", "广州大道", "新港西路", "解放北路", "工业大道"]
PHRASES = [
    "客户反映近期多次停电，影响正常生产经营，要求说明原因并尽快处理。",
    "客户对电费金额有异议，认为本月电量明显高于往月，要求核查电能表。",
    "客户反映抢修人员到达现场时间过长，对服务态度不满意。",
    "客户申请新装用电，希望尽快答复供电方案并明确办理时限。",
    "已与客户沟通，说明情况并告知后续处理安排，客户表示理解。",
    "现场核实情况属实，已安排人员整改，并将结果告知客户。",
]


class FormFiller:
    """Fills forms so that they validate; ``overrides`` fix chosen fields."""

    def __init__(self, rng: random.Random, now: Callable[[], datetime]):
        self.rng = rng
        self.now = now

    def fill(self, schema: dict[str, Any] | None, overrides: dict[str, Any] | None = None,
             case: dict[str, Any] | None = None) -> dict[str, Any]:
        """Data for one form; fields the case already knows keep their value (an operator confirming it)."""
        data: dict[str, Any] = {}
        if not schema:
            return dict(overrides or {})
        properties = {n: p for n, p in schema.get("properties", {}).items() if not p.get("readOnly")}
        required = set(schema.get("required", []))
        for name, prop in properties.items():
            known = (case or {}).get(name)
            if known is not None and isinstance(known, (str, int, float, bool)) and name not in (overrides or {}):
                data[name] = known
                continue
            if name in required or self.rng.random() < 0.6:
                value = self.value(name, prop)
                if value is not None:
                    data[name] = value
        data.update(overrides or {})
        validator = Draft202012Validator(schema, format_checker=FormatChecker())
        for _ in range(6):  # satisfy if/then requirements and fix values the validator rejects
            # checked as the engine checks it: read-only fields with the case's values, or an if/then on one
            # (classifyComplaint: a severity other than the suggested one needs gradeReason) would pass here
            # and be refused there
            problems = list(validator.iter_errors(with_case_values(schema, data, case or {})))
            if not problems:
                return data
            for problem in problems:
                self._repair(problem, data, properties, overrides or {})
        return data

    def _repair(self, problem, data, properties, overrides) -> None:
        if problem.validator == "required":
            for name in re.findall(r"'([^']+)' is a required property", problem.message):
                if name in properties and name not in data:
                    data[name] = self.value(name, properties[name], force=True)
        elif problem.validator == "additionalProperties":
            for name in list(data):
                if name not in properties and name not in overrides:
                    data.pop(name)
        elif problem.absolute_path:
            name = problem.absolute_path[0]
            if name in properties and name not in overrides:
                data[name] = self.value(str(name), properties[name], force=True)

    def value(self, name: str, prop: dict[str, Any], force: bool = False) -> Any:
        rng = self.rng
        if "const" in prop:
            return prop["const"]
        choices = [o["const"] for o in prop.get("oneOf", []) + prop.get("anyOf", []) if "const" in o]
        choices += list(prop.get("enum", []))
        if choices:
            return rng.choice(choices)
        kind = prop.get("type")
        if isinstance(kind, list):
            kind = next((k for k in kind if k != "null"), "string")
        if "default" in prop and not force:
            return prop["default"]
        if kind == "boolean":
            return rng.random() < (0.7 if force else 0.15)
        if kind in ("integer", "number"):
            low = prop.get("minimum", prop.get("exclusiveMinimum", 0))
            high = prop.get("maximum", max(low + 10, 1000 if "Kva" in name or "Yuan" in name else low + 10))
            value = rng.randint(int(low) + (1 if "exclusiveMinimum" in prop else 0), int(high))
            return value if kind == "integer" else float(value)
        if kind == "array":
            item = prop.get("items", {})
            count = max(prop.get("minItems", 0), 1)
            return [self.value(name, item, force=True) for _ in range(count)]
        if kind == "object":
            sub = {k: self.value(k, v, force=True) for k, v in prop.get("properties", {}).items()
                   if k in prop.get("required", [])}
            return sub
        return self._string(name, prop)

    def _string(self, name: str, prop: dict[str, Any]) -> str:
        rng = self.rng
        fmt = prop.get("format")
        if fmt == "date-time":
            return (self.now() - timedelta(minutes=rng.randint(1, 120))).isoformat()
        if fmt == "date":
            return self.now().date().isoformat()
        pattern = prop.get("pattern", "")
        lowered = name.lower()
        if "phone" in lowered or pattern.startswith("^1[3-9]") or "(^1[3-9]" in pattern:
            return "1" + rng.choice("3456789") + "".join(rng.choice("0123456789") for _ in range(9))
        if lowered.endswith("no") or "\\d{10" in pattern or "\\d{12" in pattern:
            digits = 12 if "\\d{12" in pattern else 10
            return "".join(rng.choice("0123456789") for _ in range(digits))
        if "name" in lowered or lowered.endswith(("handler", "assignee", "owner")):
            return rng.choice(SURNAMES) + rng.choice(GIVEN)
        if "address" in lowered:
            return f"广州市{rng.choice(DISTRICTS)}{rng.choice(ROADS)}{rng.randint(1, 999)}号"
        text = rng.choice(PHRASES)
        minimum = prop.get("minLength", 0)
        while len(text) < minimum:
            text += rng.choice(PHRASES)
        maximum = prop.get("maxLength")
        return text[:maximum] if maximum else text
