"""``computeDue``: the T1/T2/T3 instants of one SLA step (SERVICE_FLOWS §9.1, §9.3), for every flow.

Contract (the element's ``camunda:property`` entries; ``${…}`` values are evaluated safely over the
case variables, e.g. ``${'meter.calibration' if meterCheckKind == 'CALIBRATION' else 'meter.anomalyOrder'}``):

=================  ========  =======================================================================
property           required  meaning
=================  ========  =======================================================================
``policyKey``      yes       key of the policy table. A ``wd`` value is a working-day limit, a
                             ``duration`` value a wall-clock (24×7) limit; anything else is an error.
``step``           no        variable prefix. Default: from the element id, ``computeBillingDue`` →
                             ``billing``; an id not of the form ``compute<Step>Due`` is the prefix.
``start``          no        name of a variable holding the instant the clock starts (aware datetime
                             or ISO 8601 text), e.g. ``paidAt``. Default: now (§9.1: the clock of a
                             step starts when its ``computeDue`` runs).
``leadKey``        no        working-day reminder lead (default ``reminder.lead``, 2 WD; the presale
                             plan stage uses ``reminder.lead.plan``).
``dueVariable``    no        output names; default ``<step>DueAt``, ``<step>RemindAt``,
``remindVariable``           ``<step>CapAt``.
``capVariable``
=================  ========  =======================================================================

Outputs (aware datetimes in Asia/Shanghai, ready for ``<timeDate>${…}</timeDate>``):

- ``<step>DueAt`` (T2): working days: 23:59:59 of the n-th working day after the start day (PRC
  calendar with 调休, :meth:`engine.sla.BusinessCalendar.add_working_days`); wall clock: start + duration.
- ``<step>RemindAt`` (T1): working days: due − lead working days, or 50 % of the budget when that is not
  later than the start (clamp rule of §9.1); wall clock: 50 % of the budget. ``<step>Remind80At`` is the
  second (80 %) reminder whenever reminders are fractions of the budget, else None.
- ``<step>CapAt`` (T3): the regulatory ceiling of the key (``ceilingWd`` / ``ceilingDuration``, counted
  from the start) when it has one, else ``<step>DueAt`` + 1 working day (§9.3).
- ``<step>CapIsCeiling``: True when T3 is a regulatory ceiling; ``applySupervision`` never moves such a T3.
- ``<step>SlaKey``: the policy key used; ``overdue`` = False (a new step starts on time);
  ``policyVersion`` when the case had none yet.

**Elements without ``policyKey``.** A flow whose diagram names no policy key (presale ``computeDue`` /
``computeConsultDue``, the midsale ``compute<Step>Due`` rows, whose key depends on ``customerClass`` or needs
extra outputs such as the D2 budgets) registers a default for the element id with :func:`register_default_step`
(see :mod:`handlers.sales`); the default receives the variables, the context and the case's policy version and
returns the outputs (``policyVersion`` is added when the case had none). Any other element without
``policyKey`` is an error.

The instants themselves come from :func:`engine.sla.working_day_sla` and :func:`engine.sla.wall_clock_sla`;
this module only reads the policy and names the variables. :func:`step_instants` is the same computation
for handlers that need it inline (e.g. a D2 decision table that also starts the first step's clock).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime
from typing import Any

from engine.policy import PolicyVersion
from engine.sla import SlaInstants, wall_clock_sla, working_day_sla
from handlers import handler

from .common import as_instant, calendar, policy

_COMPUTE_ID = re.compile(r"^compute(?P<step>[A-Z]\w*?)Due(?:_\w+)?$")
# element id -> computation for computeDue elements without a policyKey property (register_default_step)
DEFAULT_STEPS: dict[str, Callable[[dict[str, Any], Any, PolicyVersion], dict[str, Any]]] = {}


def register_default_step(element_id: str,
                          compute: Callable[[dict[str, Any], Any, PolicyVersion], dict[str, Any]]) -> None:
    """Let ``computeDue`` at ``element_id`` (an element without ``policyKey``) call ``compute(variables, ctx,
    version)``; registering another function for the same id is an error, like a duplicate topic."""
    existing = DEFAULT_STEPS.get(element_id)
    if existing is not None and existing is not compute:
        raise ValueError(f"computeDue default for element '{element_id}' is already registered by "
                         f"{existing.__module__}.{existing.__qualname__}")
    DEFAULT_STEPS[element_id] = compute


def step_name(bpmn_id: str) -> str:
    """``computeBillingDue`` → ``billing``; ``computeNameChangeDue`` → ``nameChange``; else the id itself."""
    match = _COMPUTE_ID.match(bpmn_id)
    if not match:
        return bpmn_id
    step = match.group("step")
    return step[0].lower() + step[1:]


def _fractions(version: PolicyVersion) -> tuple[float, float]:
    if "reminder.hourFractions" in version:
        first, second = version.table("reminder.hourFractions")
        return float(first), float(second)
    return 0.5, 0.8


def step_instants(version: PolicyVersion, key: str, start: datetime, lead_key: str = "reminder.lead") -> SlaInstants:
    """T1/T2/T3 of the limit ``key`` of ``version`` with its clock starting at ``start`` (§9.1, §9.3).

    T3 is the key's regulatory ceiling when it has one, else T2 + 1 working day (for wall-clock limits
    too: ``wall_clock_sla`` alone would put T3 at T2).
    """
    entry = version.get(key)
    cal = calendar()
    if entry.kind == "wd":
        lead = version.wd(lead_key)
        return working_day_sla(start, entry.value, lead, entry.ceiling_wd, cal, _fractions(version))
    if entry.kind == "duration":
        instants = wall_clock_sla(start, entry.value, entry.ceiling_duration, _fractions(version))
        if entry.ceiling_duration is None:
            instants = SlaInstants(instants.remind_at, instants.due_at, cal.add_working_days(instants.due_at, 1),
                                   instants.remind_at_80, cap_is_ceiling=False)
        return instants
    raise ValueError(f"policy key {key!r} in version {version.id} is a {entry.kind} value; "
                     "computeDue needs a working-day (wd) or duration limit")


@handler("computeDue")
def compute_due(variables: dict[str, Any], ctx) -> dict[str, Any]:
    """Working-day or wall-clock SLA instants of the step named by the task's properties (see module doc)."""
    version, recorded = policy(variables, ctx.now)
    key = ctx.param("policyKey", variables)
    if not key and ctx.bpmn_id in DEFAULT_STEPS:
        return {**recorded, **DEFAULT_STEPS[ctx.bpmn_id](variables, ctx, version)}
    if not key:
        raise ValueError(f"computeDue at {ctx.bpmn_id}: camunda:property 'policyKey' is required "
                         "(a policy key such as serviceRequest.other)")
    step = ctx.param("step", variables) or step_name(ctx.bpmn_id)
    start_variable = ctx.param("start", variables)
    start = ctx.now
    if start_variable:
        start = as_instant(variables.get(start_variable)) or ctx.now
    instants = step_instants(version, str(key), start, ctx.param("leadKey", variables) or "reminder.lead")
    due_name = ctx.param("dueVariable", variables) or f"{step}DueAt"
    remind_name = ctx.param("remindVariable", variables) or f"{step}RemindAt"
    cap_name = ctx.param("capVariable", variables) or f"{step}CapAt"
    return {
        **recorded,
        remind_name: instants.remind_at,
        f"{step}Remind80At": instants.remind_at_80,
        due_name: instants.due_at,
        cap_name: instants.cap_at,
        f"{step}CapIsCeiling": instants.cap_is_ceiling,
        f"{step}SlaKey": str(key),
        "overdue": False,
    }
