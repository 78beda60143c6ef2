"""The versioned policy table (spec §0, §4, §10) as shipped in handlers/data/policy.json."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from engine.policy import (
    DEFAULT_POLICY_PATH,
    NoPolicyVersionError,
    PolicyFileError,
    PolicyKeyError,
    PolicyTable,
    PolicyTypeError,
    PolicyVersion,
)
from engine.sla import SHANGHAI, working_day_sla


@pytest.fixture(scope="module")
def table() -> PolicyTable:
    return PolicyTable.load()


@pytest.fixture(scope="module")
def current(table: PolicyTable) -> PolicyVersion:
    return table.version("2023-12")


# §4.1, row by row: key → (kind, default, ceiling or None).
SECTION_4_1 = {
    "yk.total.LV_RES": ("wd", 5, None),
    "yk.total.LV_NONRES": ("wd", 6, None),
    "yk.total.HV_SINGLE": ("wd", 22, None),
    "yk.total.HV_DUAL": ("wd", 32, None),
    "yk.plan.LV_RES": ("wd", 1, 3),
    "yk.plan.LV_NONRES": ("wd", 2, 8),
    "yk.plan.HV_SINGLE": ("wd", 10, 20),
    "yk.plan.HV_DUAL": ("wd", 18, 45),
    "yk.design.HV": ("wd", 3, 20),
    "yk.mid.HV": ("wd", 2, 5),
    "yk.complete.LV": ("wd", 2, 5),
    "yk.complete.HV": ("wd", 3, 7),
    "yk.connect.LV_RES": ("wd", 2, 3),
    "yk.connect.LV_NONRES": ("wd", 2, 5),
    "yk.connect.HV": ("wd", 3, 7),
    "repair.arrive.URBAN": ("duration", "PT45M", "PT60M"),
    "repair.arrive.RURAL": ("duration", "PT90M", "PT120M"),
    "repair.arrive.REMOTE": ("duration", "PT2H", "PT240M"),
    "repair.restore.URBAN": ("duration", "PT3H", None),
    "repair.restore.RURAL": ("duration", "PT4H", None),
    "repair.restore.REMOTE": ("duration", "PT6H", None),
    "repair.dispatch": ("duration", "PT5M", None),
    "complaint.contact": ("duration", "PT24H", None),
    "complaint.reply": ("wd", 4, 10),
    "report.reply": ("wd", 9, None),
    "channel.12398.close": ("wd", 10, None),
    "channel.12345.close": ("duration", "P7D", None),
    "reconnect.afterPayment": ("duration", "PT24H", "P3D"),
    "meter.calibration": ("wd", 5, None),
    "meter.dataAnomaly": ("wd", 5, None),
    "serviceRequest.other": ("wd", 5, None),
    "consult.transferred.reply": ("wd", 4, None),
    "yk.grid.max": ("wd", 20, None),
    "revisit.window": ("wd", 1, None),
    "reminder.lead": ("wd", 2, None),
}

# §4.2: key → (kind, default).
SECTION_4_2 = {
    "reminder.lead.plan": ("wd", 1),
    "materials.wait": ("duration", "P30D"),
    "yk.review.thresholdKva": ("number", 1260),
    "yk.plan.maxRenegotiations": ("number", 2),
    "yk.planValidity.HV": ("duration", "P1Y"),
    "yk.planValidity.LV": ("duration", "P3M"),
    "lvMaxKw": ("number", 100),
    "fee.reminderCycle": ("cycle", "R3/P7D"),
    "guidance.reply": ("wd", 2),
    "repair.dispatch.supervise": ("duration", "PT10M"),
    "repair.assign.remind": ("duration", "PT5M"),
    "repair.assign.supervise": ("duration", "PT10M"),
    "repair.arrive.IMPORTANT": ("duration", "PT30M"),
    "repair.remindFraction": ("number", Decimal("0.8")),
    "repair.restore.escalateAfter": ("duration", "PT2H"),
    "repair.reply": ("duration", "PT2H"),
    "revisit.delay.REPAIR": ("duration", "PT2H"),
    "revisit.delay.OTHER": ("duration", "P1D"),
    "revisit.delay.URGENT_COMPLAINT": ("duration", "PT4H"),
    "revisit.maxAttempts": ("number", 3),
    "revisit.retryAfter": ("duration", "PT2H"),
    "revisit.maxReopen": ("number", 1),
    "billing.historyMonths": ("number", 12),
    "reconnect.remoteRetry": ("cycle", "R3/PT10M"),
    "reconnect.reply": ("wd", 1),
    "penalty.rate.RES": ("number", Decimal("0.001")),
    "penalty.rate.OTHER": ("number", Decimal("0.002")),
    "penalty.rate.OTHER_CROSSYEAR": ("number", Decimal("0.003")),
    "penalty.min": ("number", 1),
    "meter.anomalyOrder": ("wd", 4),
    "appliance.onsite": ("duration", "PT24H"),
    "appliance.reply": ("wd", 1),
    "inspection.minInspectors": ("number", 2),
    "survey.sampleRate": ("number", Decimal("0.05")),
    "complaint.repeatWindow": ("duration", "P30D"),
    "complaint.groupMin": ("number", 5),
    "complaint.lossMajorYuan": ("number", 10000),
    "complaint.reassignAfter": ("wd", 2),
    "complaint.maxRehandle": ("number", 2),
    "complaint.chaseEscalateAt": ("number", 2),
}

# D5 (§10): severity → review, forward, contact, updateEvery, reply WD, sendUpdates.
D5 = {
    "URGENT": ("PT15M", "PT15M", "PT1H", "PT4H", 1, True),
    "MAJOR": ("PT15M", "PT15M", "PT4H", "P1D", 3, True),
    "GENERAL": ("PT30M", "PT30M", "PT24H", "P1D", 4, False),
}


def write_policy(tmp_path: Path, doc: dict) -> Path:
    path = tmp_path / "policy.json"
    path.write_text(json.dumps(doc, ensure_ascii=False), encoding="utf-8")
    return path


def minimal(values: dict | None = None, **version: object) -> dict:
    v = {"id": "v1", "effectiveFrom": "2024-01-01T00:00:00+08:00", "source": "test",
         "values": values if values is not None else {"a.b": {"wd": 1, "grade": "D"}}}
    v.update(version)
    return {"versions": [v]}


# ---------------------------------------------------------------------------------- version selection


def test_version_in_force_at_an_instant(table: PolicyTable) -> None:
    assert [v.id for v in table.versions] == ["2011-10", "2023-12"]
    assert table.version_at(datetime(2026, 11, 30, 10, 0, tzinfo=SHANGHAI)).id == "2023-12"
    assert table.version_at(datetime(2015, 6, 1, 10, 0, tzinfo=SHANGHAI)).id == "2011-10"
    assert table.latest.id == "2023-12"


def test_version_boundary_is_an_instant_not_a_date(table: PolicyTable) -> None:
    switch = datetime(2023, 12, 8, 0, 0, tzinfo=SHANGHAI)
    assert table.version_at(switch).id == "2023-12"
    assert table.version_at(switch - timedelta(seconds=1)).id == "2011-10"
    # 2023-12-07 16:00 UTC is the same instant as midnight in Shanghai; the UTC *date* is still the 7th.
    assert table.version_at(datetime(2023, 12, 7, 16, 0, tzinfo=UTC)).id == "2023-12"
    assert table.version_at(datetime(2023, 12, 7, 15, 59, 59, tzinfo=UTC)).id == "2011-10"


def test_selected_version_changes_the_limits(table: PolicyTable) -> None:
    old = table.version_at(datetime(2012, 3, 1, tzinfo=SHANGHAI))
    new = table.version_at(datetime(2026, 3, 1, tzinfo=SHANGHAI))
    assert (old.wd("yk.plan.HV_DUAL"), new.wd("yk.plan.HV_DUAL")) == (30, 18)
    assert (old.wd("complaint.reply"), new.wd("complaint.reply")) == (7, 4)
    start = datetime(2026, 3, 2, 10, 0, tzinfo=SHANGHAI)
    due_old = working_day_sla(start, old.wd("yk.plan.LV_RES"), 2).due_at
    due_new = working_day_sla(start, new.wd("yk.plan.LV_RES"), 2).due_at
    assert (due_old.day, due_new.day) == (5, 3)


def test_no_version_before_the_first(table: PolicyTable) -> None:
    with pytest.raises(NoPolicyVersionError, match="no policy version in force at 2010-01-01") as info:
        table.version_at(datetime(2010, 1, 1, tzinfo=SHANGHAI))
    assert "2011-10" in str(info.value)


def test_version_lookup_by_recorded_id_and_naive_instants(table: PolicyTable) -> None:
    assert table.version("2011-10").effective_from == datetime(2011, 10, 13, tzinfo=SHANGHAI)
    with pytest.raises(NoPolicyVersionError, match="'2099-01'"):
        table.version("2099-01")
    with pytest.raises(ValueError, match="naive"):
        table.version_at(datetime(2026, 1, 1))


# -------------------------------------------------------------------------------------- typed access


def test_missing_key_names_key_and_version(table: PolicyTable, current: PolicyVersion) -> None:
    old = table.version("2011-10")
    with pytest.raises(PolicyKeyError) as info:
        old.wd("yk.total.LV_RES")  # the totals did not exist in 2011
    assert str(info.value) == "policy key 'yk.total.LV_RES' is not defined in policy version 2011-10"
    assert isinstance(info.value, KeyError)
    with pytest.raises(PolicyKeyError, match="'no.such.key'.*2023-12"):
        current.get("no.such.key")


def test_wrong_typed_helper_is_an_error(current: PolicyVersion) -> None:
    with pytest.raises(PolicyTypeError, match="'yk.total.LV_RES' in version 2023-12 is a wd value"):
        current.duration("yk.total.LV_RES")
    with pytest.raises(PolicyTypeError):
        current.wd("repair.arrive.URBAN")


@pytest.mark.parametrize("key", sorted(SECTION_4_1))
def test_every_section_4_1_key_is_present_with_its_default(current: PolicyVersion, key: str) -> None:
    kind, default, ceiling = SECTION_4_1[key]
    assert current.get(key).kind == kind
    if kind == "wd":
        assert current.wd(key) == default
        assert current.ceiling_wd(key) == ceiling
    else:
        assert current.duration(key) == default
        assert current.ceiling_duration(key) == ceiling
    assert current.get(key).grade in "ABCDU"


@pytest.mark.parametrize("key", sorted(SECTION_4_2))
def test_every_section_4_2_key_is_present_with_its_default(current: PolicyVersion, key: str) -> None:
    kind, default = SECTION_4_2[key]
    entry = current.get(key)
    assert (entry.kind, entry.value) == (kind, default)


def test_numbers_are_exact(current: PolicyVersion) -> None:
    assert current.decimal("penalty.rate.RES") == Decimal("0.001")
    assert current.number("repair.remindFraction") == 0.8
    assert isinstance(current.number("lvMaxKw"), int)
    assert current.get("lvMaxKw").grade == "U"  # §17 point 9: unverified


def test_reconnect_keeps_the_tenant_option(current: PolicyVersion) -> None:
    assert current.get("reconnect.afterPayment").alternatives == ("PT12H",)


def test_revisit_window_for_repair(current: PolicyVersion) -> None:
    assert current.duration("revisit.window.REPAIR") == "PT24H"


# ---------------------------------------------------------------------------------- decision tables


def test_d1_thresholds(current: PolicyVersion) -> None:
    assert current.table("customer.lvVoltageCodes") == ["AC02202", "AC03802"]
    assert current.text("customer.tbdVoltageCode") == "TBD"
    assert current.number("customer.dualSourceMin") == 2


def test_d2_step_budgets_point_at_section_4_1_keys(current: PolicyVersion) -> None:
    budgets = current.table("yk.stepBudgets")
    assert set(budgets) == {"LV_RES", "LV_NONRES", "HV_SINGLE", "HV_DUAL"}
    hv_dual = {step: current.wd(ref["ref"]) for step, ref in budgets["HV_DUAL"].items()}
    assert hv_dual == {"plan": 18, "design": 3, "mid": 2, "complete": 3, "connect": 3, "total": 32}
    lv_res = {step: current.wd(ref["ref"]) for step, ref in budgets["LV_RES"].items()}
    assert sum(v for k, v in lv_res.items() if k != "total") <= lv_res["total"]


def test_d3_area_codes(current: PolicyVersion) -> None:
    areas = current.table("repair.areaByFlag")
    assert {code: current.duration(f"repair.arrive.{area}") for code, area in areas.items()} == {
        "01": "PT45M", "02": "PT90M", "03": "PT2H",
    }
    assert current.table("repair.importantLevels") == ["01", "02", "03"]


def test_d4_grading_rules(current: PolicyVersion) -> None:
    rules = current.table("complaint.gradingRules")["rules"]
    assert [r["severity"] for r in rules] == ["URGENT", "MAJOR", "GENERAL"]
    group = next(c for c in rules[0]["anyOf"] if c["field"] == "affectedCustomerCount")
    assert current.number(group["atLeast"]["ref"]) == 5
    loss = next(c for c in rules[1]["anyOf"] if c["field"] == "claimedLossYuan")
    assert current.number(loss["atLeast"]["ref"]) == 10000
    channel = next(c for c in rules[1]["anyOf"] if c["field"] == "channel")
    assert channel["in"] == ["12398", "12345", "GOV_TRANSFER"]


def test_table_is_a_copy(current: PolicyVersion) -> None:
    current.table("repair.importantLevels").append("04")
    assert current.table("repair.importantLevels") == ["01", "02", "03"]


@pytest.mark.parametrize("severity", sorted(D5))
def test_d5_per_severity(current: PolicyVersion, severity: str) -> None:
    review, forward, contact, update, reply, send = D5[severity]
    row = current.group(f"complaint.{severity}")
    assert (row["review"].value, row["forward"].value, row["contact"].value) == (review, forward, contact)
    assert row["updateEvery"].value == update
    assert current.flag(f"complaint.{severity}.sendUpdates") is send
    assert current.wd(f"complaint.{severity}.reply") == reply
    assert current.ceiling_wd(f"complaint.{severity}.reply") == 10


def test_d5_general_agrees_with_section_4_1_and_channel_caps_resolve(current: PolicyVersion) -> None:
    assert current.duration("complaint.GENERAL.contact") == current.duration("complaint.contact")
    assert current.wd("complaint.GENERAL.reply") == current.wd("complaint.reply")
    caps = current.table("complaint.channelCaps")
    assert current.wd(caps["12398"]["ref"]) == 10
    assert current.duration(caps["12345"]["ref"]) == "P7D"


# ------------------------------------------------------------------------------------------ validation


def test_default_path_is_the_handlers_data_file() -> None:
    assert DEFAULT_POLICY_PATH.parts[-3:] == ("handlers", "data", "policy.json")
    assert DEFAULT_POLICY_PATH.is_file()


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"versions": []}, "non-empty 'versions'"),
        (minimal(values={}), "version v1: 'values' is required"),
        (minimal(effectiveFrom="2024-01-01T00:00:00"), "needs an offset"),
        (minimal(values={"a.b": {"wd": 1, "duration": "PT1H", "grade": "D"}}), r"'a.b'\]: needs exactly one"),
        (minimal(values={"a.b": {"duration": "PT45", "grade": "A"}}), r"\['a.b'\]: 'PT45' is not an ISO"),
        (minimal(values={"a.b": {"wd": 1}}), r"values\['a.b'\]: grade is required"),
        (minimal(values={"a.b": {"wd": 5, "grade": "D", "ceilingWd": 3}}), "ceilingWd 3 is below"),
        (minimal(values={"a.b": {"duration": "PT45M", "grade": "D", "ceilingDuration": "PT30M"}}), "shorter"),
        (minimal(values={"a.b": {"wd": 1.5, "grade": "D"}}), "whole number"),
        (minimal(values={"a.b": {"cycle": "P7D", "grade": "D"}}), "repeating interval"),
        (minimal(values={"a.b": {"wd": 1, "grade": "D", "colour": "red"}}), r"field\(s\) \['colour'\]"),
        (minimal(values={"a.b": {"table": {"x": {"ref": "nope"}}, "grade": "D"}}), "ref 'nope' is not a key"),
    ],
)
def test_malformed_files_are_rejected_with_file_and_key(tmp_path: Path, doc: dict, message: str) -> None:
    path = write_policy(tmp_path, doc)
    with pytest.raises(PolicyFileError, match=message) as info:
        PolicyTable.load(path)
    assert str(path) in str(info.value)


def test_duplicate_json_keys_and_versions_are_rejected(tmp_path: Path) -> None:
    path = tmp_path / "policy.json"
    text = json.dumps(minimal())
    entry = '"a.b": {"wd": 1, "grade": "D"}'
    path.write_text(text.replace(entry, entry + ', "a.b": {"wd": 2, "grade": "D"}'))
    with pytest.raises(PolicyFileError, match="duplicate key 'a.b'"):
        PolicyTable.load(path)
    doc = minimal()
    doc["versions"].append(dict(doc["versions"][0], effectiveFrom="2025-01-01T00:00:00+08:00"))
    with pytest.raises(PolicyFileError, match="version id 'v1' appears twice"):
        PolicyTable.load(write_policy(tmp_path, doc))
    with pytest.raises(PolicyFileError, match="not found"):
        PolicyTable.load(tmp_path / "missing.json")


def test_a_new_version_in_a_file_takes_over_at_its_instant(tmp_path: Path) -> None:
    doc = minimal()
    doc["versions"].append({"id": "v2", "effectiveFrom": "2025-07-01T00:00:00+08:00", "source": "test",
                            "values": {"a.b": {"wd": 3, "grade": "A"}}})
    table = PolicyTable.load(write_policy(tmp_path, doc))
    assert table.version_at(datetime(2025, 6, 30, 23, 59, tzinfo=SHANGHAI)).wd("a.b") == 1
    assert table.version_at(datetime(2025, 7, 1, 0, 0, tzinfo=SHANGHAI)).wd("a.b") == 3
