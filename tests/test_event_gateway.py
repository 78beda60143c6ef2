"""Event-based gateways: after 发送缴费通知 the case waits for the payment message and the deadline timer at
once; the first event caught takes its path and the others are withdrawn, wait rows included (both stores)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from conftest import BPMN, SHANGHAI

from engine import messages, waits
from engine.errors import NotFound

PAYMENT = BPMN / "payment_wait.bpmn"
ANSWER = BPMN / "answer_wait.bpmn"


def wait_rows(engine, instance_id: str) -> waits.Waits:
    with engine.store.read() as session:
        return waits.stored(session, instance_id)


def history(engine, instance_id: str) -> list[tuple[str, str | None]]:
    return [(event.type, event.bpmn_id) for event in engine.history(instance_id)]


def waiting_for_payment(engine, clock, work_order: str = "WO-1001"):
    engine.deploy([PAYMENT])
    case = engine.start("payment_wait", {"workOrderNo": work_order})
    [timer] = case.timers
    assert (timer.bpmn_id, timer.due_at) == ("paymentOverdue", clock.now() + timedelta(hours=72))
    rows = wait_rows(engine, case.id)
    assert list(rows.timers.values()) == [("paymentOverdue", timer.due_at)]
    assert list(rows.messages.values()) == [("paymentReceived", "paymentReceived", f"workOrderNo={work_order}")]
    assert case.status == "running" and case.ready_tasks == []
    return case


def test_the_event_gateway_diagrams_lint_clean(engine):
    assert engine.lint([PAYMENT, ANSWER]).issues == []


def test_a_payment_before_the_deadline_takes_its_path_and_withdraws_the_timer(engine, clock):
    case = waiting_for_payment(engine, clock)
    clock.advance(timedelta(days=1))
    paid = engine.correlate("paymentReceived", {"workOrderNo": "WO-1001"}, {"paidYuan": 120})
    assert paid.id == case.id and paid.variables["paidYuan"] == 120
    assert [t.bpmn_id for t in paid.ready_tasks] == ["connectSupply"] and paid.timers == []
    assert wait_rows(engine, case.id) == waits.NOTHING
    assert engine.run_due(clock.now() + timedelta(days=30)) == 0
    after = engine.instance(case.id)
    assert [t.bpmn_id for t in after.ready_tasks] == ["connectSupply"]
    assert ("message_received", "paymentReceived") in history(engine, case.id)
    assert not [h for h in history(engine, case.id) if h[0] == "timer_fired"]


def test_the_deadline_first_takes_its_path_and_withdraws_the_subscription(engine, clock):
    case = waiting_for_payment(engine, clock)
    clock.advance(timedelta(hours=73))
    assert engine.run_due() == 1
    overdue = engine.instance(case.id)
    assert [t.bpmn_id for t in overdue.ready_tasks] == ["chaseArrears"]
    assert wait_rows(engine, case.id) == waits.NOTHING
    [fired] = [e for e in engine.history(case.id) if e.type == "timer_fired"]
    assert fired.bpmn_id == "paymentOverdue" and fired.data["late_seconds"] == 3600
    late = engine.correlate("paymentReceived", {"workOrderNo": "WO-1001"}, {"paidYuan": 120})
    assert late.buffered and late.state == "pending"  # as any message no catch waits for
    assert messages.deliver_pending(engine) == 0
    with pytest.raises(NotFound):
        engine.correlate("paymentReceived", {"workOrderNo": "WO-1001"}, {"paidYuan": 120}, ttl="PT0S")
    after = engine.instance(case.id)
    assert "paidYuan" not in after.variables and [t.bpmn_id for t in after.ready_tasks] == ["chaseArrears"]


def test_a_payment_after_the_deadline_passed_but_before_it_fired_wins_alone(engine, clock):
    """SpiffWorkflow's gateway took both paths here (the message, then the timer found past due)."""
    case = waiting_for_payment(engine, clock)
    clock.advance(timedelta(hours=73))
    paid = engine.correlate("paymentReceived", {"workOrderNo": "WO-1001"}, {"paidYuan": 120})
    assert [t.bpmn_id for t in paid.ready_tasks] == ["connectSupply"]
    assert wait_rows(engine, case.id) == waits.NOTHING
    assert not [h for h in history(engine, case.id) if h[0] == "timer_fired"]


def test_a_payment_buffered_before_the_case_waits_is_taken_at_the_gateway(engine, clock):
    engine.deploy([PAYMENT])
    early = engine.correlate("paymentReceived", {"workOrderNo": "WO-1002"}, {"paidYuan": 80}, ttl="PT1H")
    assert early.buffered
    case = engine.start("payment_wait", {"workOrderNo": "WO-1002"})
    assert [t.bpmn_id for t in case.ready_tasks] == ["connectSupply"] and case.variables["paidYuan"] == 80
    assert wait_rows(engine, case.id) == waits.NOTHING


@pytest.mark.parametrize(("event", "outcome"), [
    ("paymentReceived", "paid"),  # a message catch event
    ("applicationWithdrawn", "withdrawn"),  # a receive task
    ("areaOutage", "outage"),  # a signal catch event
    ("payDeadline", "overdue"),  # a timeDate timer from a variable
])
def test_each_event_after_the_gateway_takes_its_own_path(engine, clock, event, outcome):
    engine.deploy([ANSWER])
    deadline = clock.now().replace(day=5, hour=17).astimezone(SHANGHAI)
    case = engine.start("answer_wait", {"workOrderNo": "WO-2001", "payDeadline": deadline.isoformat()})
    rows = wait_rows(engine, case.id)
    assert sorted(v[0] for v in rows.messages.values()) == ["paid", "withdrawn"]
    assert list(rows.signals.values()) == [("outage", "areaOutage")]
    assert list(rows.timers.values()) == [("deadline", deadline)]
    if event == "areaOutage":
        [reached] = engine.signal(event, {"area": "城东"})
        assert reached.id == case.id
    elif event == "payDeadline":
        assert engine.run_due(deadline) == 1
    else:
        engine.correlate(event, {"workOrderNo": "WO-2001"}, {"answeredBy": "客户"})
    done = engine.instance(case.id)
    assert done.status == "completed" and done.variables["outcome"] == outcome
    assert wait_rows(engine, case.id) == waits.NOTHING
    caught = {"paid": "message_received", "withdrawn": "message_received", "outage": "signal_received",
              "overdue": "timer_fired"}[outcome]
    assert [h for h in history(engine, case.id) if h[0].endswith(("_received", "_fired"))] == [
        (caught, {"paid": "paid", "withdrawn": "withdrawn", "outage": "outage", "overdue": "deadline"}[outcome])]


def _variant(tmp_path, name: str, *replacements: tuple[str, str]):
    text = PAYMENT.read_text(encoding="utf-8")
    for old, new in replacements:
        assert old in text
        text = text.replace(old, new)
    path = tmp_path / f"{name}.bpmn"
    path.write_text(text, encoding="utf-8")
    return path


MESSAGE = '<bpmn:messageEventDefinition messageRef="msgPaymentReceived"/>'
CATCH_PAID = '<bpmn:intermediateCatchEvent id="paymentReceived" name="已缴费">'
INTO_PAID = "<bpmn:incoming>p3</bpmn:incoming>"
END_OVERDUE = '<bpmn:endEvent id="endOverdue"><bpmn:incoming>p8</bpmn:incoming></bpmn:endEvent>'
END_OVERDUE_DI = ('<bpmndi:BPMNShape id="endOverdue_di" bpmnElement="endOverdue">'
                  '<dc:Bounds x="762" y="262" width="36" height="36"/></bpmndi:BPMNShape>')


@pytest.mark.parametrize(("name", "replacements", "element", "fragment"), [
    ("task_after", [(CATCH_PAID, '<bpmn:task id="paymentReceived">'),
                    (MESSAGE + "\n    </bpmn:intermediateCatchEvent>", "</bpmn:task>")],
     "paymentReceived", "only a message, signal or timer catch event or a receive task may"),
    ("cycle_after", [("<bpmn:timeDuration>PT72H</bpmn:timeDuration>", "<bpmn:timeCycle>R3/PT24H</bpmn:timeCycle>")],
     "paymentOverdue", "a timeCycle after event-based gateway 'waitPayment' is not supported"),
    ("parallel", [('id="waitPayment"', 'id="waitPayment" eventGatewayType="Parallel"')],
     "waitPayment", "only an exclusive event-based gateway"),
    ("reentered", [('targetRef="endOverdue"/>', 'targetRef="paymentReceived"/>'),
                   (INTO_PAID, INTO_PAID + "<bpmn:incoming>p8</bpmn:incoming>"),
                   (END_OVERDUE, ""), (END_OVERDUE_DI, "")],
     "paymentReceived", "has another incoming flow"),
])
def test_lint_rejects_what_an_event_gateway_cannot_wait_for(engine, tmp_path, name, replacements, element, fragment):
    path = _variant(tmp_path, name, *replacements)
    [error] = engine.lint([path]).errors
    assert error.element_id == element and fragment in error.message, error.message
