"""Every form in forms/ follows the conventions operators rely on (one check for all forms)."""

from __future__ import annotations

import json
import re

import pytest
from conftest import ROOT
from jsonschema import Draft202012Validator

FORMS = ROOT / "forms"
CJK = re.compile(r"[\u4e00-\u9fff]")
ALL_FORMS = sorted(p.name.removesuffix(".schema.json") for p in FORMS.glob("*.schema.json"))


def test_every_user_task_of_every_flow_has_a_form():
    from lxml import etree

    used = set()
    for path in (ROOT / "processes").glob("*.bpmn"):
        tree = etree.parse(str(path))
        for task in tree.iter("{http://www.omg.org/spec/BPMN/20100524/MODEL}userTask"):
            used.add(task.get("{http://camunda.org/schema/1.0/bpmn}formKey") or task.get("id"))
    assert len(used) > 50
    assert sorted(used - set(ALL_FORMS)) == []


@pytest.mark.parametrize("key", ALL_FORMS)
def test_form_is_valid_json_schema_with_chinese_labels_and_help(key):
    schema = json.loads((FORMS / f"{key}.schema.json").read_text(encoding="utf-8"))
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert CJK.search(schema["title"]), "form title must be Chinese"
    assert schema["additionalProperties"] is False, "unknown fields must be refused"
    assert schema["x-order"] == list(schema["properties"]), "x-order lists every field once, in display order"
    assert set(schema.get("required", [])) <= set(schema["properties"])
    for name, prop in schema["properties"].items():
        assert CJK.search(prop.get("title", "")), f"{key}.{name} needs a Chinese title"
        assert CJK.search(prop.get("description", "")), f"{key}.{name} needs a Chinese help text"
        for option in prop.get("oneOf", []) + prop.get("items", {}).get("oneOf", []):
            assert "const" in option and "title" in option, f"{key}.{name}: {option}"
            assert CJK.search(option["title"]) or option["title"] == str(option["const"]), f"{key}.{name}: {option}"
