"""What the domain handlers share: the policy version of a case, the calendar, notices, formatting.

No numbers live here: every limit comes from ``handlers/data/policy.json`` through the case's
policy version (``policyVersion``, recorded at the first handler that needs it).
"""

from __future__ import annotations

from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined

from engine.policy import PolicyTable, PolicyVersion
from engine.sla import SHANGHAI, BusinessCalendar, default_calendar, parse_duration

TEMPLATES_DIR = Path(__file__).resolve().parent.parent / "forms" / "templates"
SIGNATURE = "国网供电公司"
SEVERITY_LABELS = {"GENERAL": "一般", "MAJOR": "重大", "URGENT": "紧急"}
SEVERITY_ORDER = ["GENERAL", "MAJOR", "URGENT"]
CHANNEL_LABELS = {
    "95598_PHONE": "95598电话", "95598_WEB": "95598网站", "APP_WSGW": "网上国网", "COUNTER": "营业厅",
    "12345": "12345政务服务热线", "12398": "12398能源监管热线", "GOV_TRANSFER": "政府部门转办",
    "LETTER": "信函", "REVISIT": "回访转投诉",
}


@lru_cache(maxsize=1)
def policy_table() -> PolicyTable:
    return PolicyTable.load()


def policy(variables: dict[str, Any], now: datetime) -> tuple[PolicyVersion, dict[str, Any]]:
    """The policy version of this case and the variables to record it (empty when already recorded).

    A case keeps the version in force when it first needed one (§0: ``policyVersion``).
    """
    table = policy_table()
    recorded = variables.get("policyVersion")
    if recorded:
        return table.version(recorded), {}
    version = table.version_at(now)
    return version, {"policyVersion": version.id}


def calendar() -> BusinessCalendar:
    return default_calendar()


def as_instant(value: Any) -> datetime | None:
    """A variable holding an instant (aware datetime or ISO string) as an aware datetime."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value))


def after(start: datetime, duration: str) -> datetime:
    """``start`` plus an ISO 8601 duration, in Asia/Shanghai."""
    return (start.astimezone(SHANGHAI) + parse_duration(duration))


def local_text(value: Any) -> str:
    """An instant formatted for an SMS: ``12月3日 09:30``."""
    instant = as_instant(value)
    if instant is None:
        return ""
    local = instant.astimezone(SHANGHAI)
    return f"{local.month}月{local.day}日 {local:%H:%M}"


@lru_cache(maxsize=1)
def _templates() -> Environment:
    return Environment(loader=FileSystemLoader(str(TEMPLATES_DIR)), undefined=StrictUndefined,
                       autoescape=False, keep_trailing_newline=False)


def render(template: str, **values: Any) -> str:
    """Render ``forms/templates/<template>`` with the given values (a missing value is an error)."""
    values.setdefault("signature", SIGNATURE)
    return _templates().get_template(template).render(**values).strip()


def notify(ctx, channel: str, recipient: str, template: str, **values: Any) -> str:
    """Render a notice and put it in the case's outbox (history); returns the text."""
    text = render(template, **values)
    ctx.emit(channel, recipient or "", text, template=template)
    return text


def late_step(bpmn_id: str) -> str:
    """``sendReminder_contactCustomer`` → ``contactCustomer`` (§9.4 naming of SLA-branch elements)."""
    return bpmn_id.split("_", 1)[1] if "_" in bpmn_id else bpmn_id


def raise_severity(severity: str | None, at_least: str) -> str:
    current = SEVERITY_ORDER.index(severity) if severity in SEVERITY_ORDER else 0
    return SEVERITY_ORDER[max(current, SEVERITY_ORDER.index(at_least))]
