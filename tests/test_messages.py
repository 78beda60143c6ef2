"""Messages: buffered with a time to live, delivered when the catch appears, expired and reported,
broadcast; signals to catch and boundary events (both stores)."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from conftest import SHANGHAI
from worker_helpers import cli, deploy, events, log_lines, ok

from engine.errors import Conflict, InvalidInput, NotFound

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=SHANGHAI)


def follow_up(engine, number: str, business_key: str | None = None, register: bool = True):
    instance = engine.start("follow_up", {"workOrderNo": number, "severity": "GENERAL", "followUpCount": 0},
                            business_key=business_key)
    if register:  # completing 受理 makes the case wait for msgFollowUp
        return engine.complete(instance.ready_tasks[0].id, {}, user="agent1")
    return instance


def test_a_message_before_its_catch_is_buffered_and_delivered_when_the_catch_waits(engine, clock):
    deploy(engine, "follow_up.bpmn")
    buffered = engine.correlate("msgFollowUp", {"workOrderNo": "WO-5"}, {"note": "客户提前来电"}, user="hotline",
                                ttl="PT2H")
    assert buffered.buffered and buffered.state == "pending"
    assert buffered.expires_at == T0 + timedelta(hours=2)
    [sent] = events(engine, "message_buffered")
    assert sent.actor == "hotline" and sent.data["message_id"] == buffered.id

    instance = follow_up(engine, "WO-5", register=False)
    assert instance.status == "running"  # not waiting yet: the message stays in the buffer
    clock.advance(timedelta(minutes=30))
    after = engine.complete(instance.ready_tasks[0].id, {}, user="agent1")  # the catch appears in this step
    assert after.status == "completed" and after.variables["note"] == "客户提前来电"
    assert after.variables["followUpCount"] == 1
    [received] = [e for e in engine.history(instance.id) if e.type == "message_received"]
    assert received.actor == "hotline"  # the sender, not agent1 whose step made the catch wait
    assert received.data["buffered"] == buffered.id and received.data["correlation"] == {"workOrderNo": "WO-5"}
    [message] = engine.messages()
    assert (message.state, message.delivered_to) == ("delivered", instance.id)
    assert engine.messages(state="pending") == []


def test_business_key_and_correlation_keys_both_match_a_buffered_message(engine):
    deploy(engine, "follow_up.bpmn")
    engine.correlate("msgFollowUp", {"workOrderNo": "WO-7", "business_key": "CASE-7"}, {"n": 1})
    other = follow_up(engine, "WO-7", business_key="CASE-8")  # same key, another case: not for it
    assert other.status == "running"
    mine = follow_up(engine, "WO-7", business_key="CASE-7")
    assert mine.status == "completed" and mine.variables["n"] == 1
    assert engine.instance(other.id).status == "running"


def test_the_worker_delivers_a_buffered_message_to_a_catch_that_is_already_waiting(engine):
    """The race on PostgreSQL: a message buffered while the step creating its catch was committing."""
    deploy(engine, "follow_up.bpmn")
    waiting = follow_up(engine, "WO-8")
    from engine.store import MessageBufferRow

    with engine.store.write() as session:  # what the losing side of the race leaves behind
        session.add(MessageBufferRow(name="msgFollowUp", correlation="workOrderNo=WO-8", data={"late": True},
                                     state="pending", created_at=T0, expires_at=T0 + timedelta(hours=1)))
    lines = []
    assert engine.deliver_buffered_messages(report=lambda action, **f: lines.append((action, f))) == 1
    assert engine.instance(waiting.id).status == "completed"
    assert lines[0][0] == "message_delivered" and lines[0][1]["instance"] == waiting.id
    assert engine.deliver_buffered_messages() == 0


def test_a_message_nobody_takes_expires_after_its_ttl_and_is_reported(engine, clock, db_url):
    deploy(engine, "follow_up.bpmn")
    lost = engine.correlate("msgFollowUp", {"workOrderNo": "WO-404"}, {}, ttl="PT10M")
    kept = engine.correlate("msgFollowUp", {"workOrderNo": "WO-405"}, {})  # default TTL: PT1H
    assert kept.expires_at == T0 + timedelta(hours=1)
    result = ok(cli("--now", (T0 + timedelta(minutes=11)).isoformat(), "worker", "--once", db=db_url))
    [expired] = log_lines(result, "message_expired")
    assert (expired["message"], expired["name"], expired["correlation"]) == (str(lost.id), "msgFollowUp",
                                                                             "workOrderNo=WO-404")
    [event] = events(engine, "message_expired")
    assert event.instance_id is None and event.data["message_id"] == lost.id
    assert event.data["correlation"] == {"workOrderNo": "WO-404"}
    assert [m.state for m in engine.messages()] == ["pending", "expired"]  # newest first
    # an expired message is not delivered when its catch shows up later
    clock.advance(timedelta(minutes=20))
    assert follow_up(engine, "WO-404").status == "running"
    assert log_lines(ok(cli("--now", (T0 + timedelta(minutes=40)).isoformat(), "worker", "--once", db=db_url)),
                     "message_expired") == []


def test_several_matches_are_an_error_unless_broadcast(engine):
    deploy(engine, "follow_up.bpmn")
    one, two = follow_up(engine, "SAME"), follow_up(engine, "SAME")
    with pytest.raises(Conflict, match="matches 2 instances.*broadcast"):
        engine.correlate("msgFollowUp", {"workOrderNo": "SAME"})
    assert engine.messages() == []  # refused, not buffered
    delivered = engine.correlate("msgFollowUp", {"workOrderNo": "SAME"}, {"areaNotice": "已恢复"}, broadcast=True)
    assert sorted(i.id for i in delivered) == sorted([one.id, two.id])
    assert all(i.status == "completed" and i.variables["areaNotice"] == "已恢复" for i in delivered)


def test_ttl_zero_refuses_and_a_bad_ttl_is_a_clear_error(engine):
    deploy(engine, "follow_up.bpmn")
    with pytest.raises(NotFound, match="no instance waits for message 'msgFollowUp'"):
        engine.correlate("msgFollowUp", {"workOrderNo": "X"}, ttl="PT0S")
    with pytest.raises(InvalidInput, match="time to live.*'ten minutes'"):
        engine.correlate("msgFollowUp", {"workOrderNo": "X"}, ttl="ten minutes")
    assert engine.messages() == []


def test_message_send_cli_buffers_broadcasts_and_lists(engine, db_url):
    deploy(engine, "follow_up.bpmn")
    buffered = ok(cli("--user", "hotline", "message", "send", "msgFollowUp", "--correlate", "workOrderNo=WO-9",
                      "--ttl", "PT10M", "--json", db=db_url))
    assert buffered["buffered"] is True
    assert datetime.fromisoformat(buffered["expires_at"]) > datetime.now(SHANGHAI)
    listed = ok(cli("message", "list", "--state", "pending", "--json", db=db_url))
    assert [(m["id"], m["correlation"]) for m in listed] == [(buffered["message_id"], {"workOrderNo": "WO-9"})]
    for _ in range(2):
        follow_up(engine, "AREA")
    both = ok(cli("message", "send", "msgFollowUp", "--correlate", "workOrderNo=AREA", "--all", "--json",
                  db=db_url))
    assert [i["status"] for i in both] == ["completed", "completed"]
    refused = cli("message", "send", "msgFollowUp", "--correlate", "workOrderNo=NONE", "--ttl", "PT0S", db=db_url)
    assert refused.returncode == 1 and refused.stderr.startswith("gridflow: no instance waits")


def test_an_event_sub_process_inside_an_embedded_sub_process_is_started_by_its_message(engine):
    """nested_event_subprocess: 客户催问进度 starts 答复催问 inside 现场处理 while 现场抢修 waits."""
    deploy(engine, "nested_event_subprocess.bpmn")
    mine = engine.start("nested_event_subprocess", {"workOrderNo": "WO-31"})
    other = engine.start("nested_event_subprocess", {"workOrderNo": "WO-32"})
    assert [t.bpmn_id for t in mine.ready_tasks] == ["repairOnSite"]

    chased = engine.correlate("msgSiteChase", {"workOrderNo": "WO-31"}, {"chaseNote": "客户催问进度"})
    assert chased.id == mine.id  # delivered, not buffered
    assert sorted(t.bpmn_id for t in engine.tasks(instance_id=mine.id)) == ["answerChase", "repairOnSite"]
    assert chased.variables["chaseNote"] == "客户催问进度"
    assert [t.bpmn_id for t in engine.tasks(instance_id=other.id)] == ["repairOnSite"]  # its key is WO-32
    assert engine.messages() == []
    again = engine.correlate("msgSiteChase", {"workOrderNo": "WO-31"}, {})  # non-interrupting: once more
    assert sorted(t.bpmn_id for t in again.ready_tasks) == ["answerChase", "answerChase", "repairOnSite"]
    later = engine.start("nested_event_subprocess", {"workOrderNo": "WO-34"})  # the cached spec is unchanged
    assert [t.bpmn_id for t in later.ready_tasks] == ["repairOnSite"]


def test_an_event_sub_process_in_each_instance_of_a_multi_instance_sub_process_takes_its_own_message(engine):
    """nested_event_subprocess_each_site: 现场处理 once per site, its 现场催办 keyed by siteNo."""
    deploy(engine, "nested_event_subprocess_each_site.bpmn")
    case = engine.start("nested_event_subprocess_each_site", {"sites": ["S1", "S2"], "workOrderNo": "WO-35"})

    def chased_sites():
        return sorted(engine.task_view(t.id).variables["siteNo"] for t in engine.tasks(instance_id=case.id)
                      if t.bpmn_id == "answerChase")

    reached = engine.correlate("msgSiteChase", {"siteNo": "S1"}, {"chaseNote": "S1 客户催问"})
    assert reached.id == case.id and chased_sites() == ["S1"]
    engine.correlate("msgSiteChase", {"siteNo": "S2"}, {})
    assert chased_sites() == ["S1", "S2"]
    assert engine.messages() == []


def test_an_event_sub_process_inside_a_finished_embedded_sub_process_takes_no_message(engine):
    deploy(engine, "nested_event_subprocess.bpmn")
    instance = engine.start("nested_event_subprocess", {"workOrderNo": "WO-33"})
    after = engine.complete(instance.ready_tasks[0].id, {}, user="agent1")  # 现场处理 ends
    assert [t.bpmn_id for t in after.ready_tasks] == ["closeCase"]

    late = engine.correlate("msgSiteChase", {"workOrderNo": "WO-33"}, {"chaseNote": "已办结后来电"})
    assert late.buffered and late.state == "pending"  # as for any message nobody waits for
    assert [t.bpmn_id for t in engine.tasks(instance_id=instance.id)] == ["closeCase"]
    assert "chaseNote" not in engine.instance(instance.id).variables
    with pytest.raises(NotFound, match="no instance waits for message 'msgSiteChase'"):
        engine.correlate("msgSiteChase", {"workOrderNo": "WO-33"}, ttl="PT0S")


def test_a_message_reaches_only_the_catch_its_correlation_keys_choose(engine):
    """meter_confirmations: one 等待装表回执 per meter (keyed by meterNo), and 等待现场具备条件 in parallel
    with a 催问现场 event sub-process that both wait for msgSiteReady under the same key."""
    deploy(engine, "meter_confirmations.bpmn")
    case = engine.start("meter_confirmations", {"meters": ["M1", "M2", "M3"], "workOrderNo": "WO-9"})
    assert case.ready_tasks == []

    def meters_to_check():
        return sorted(engine.task_view(t.id).variables["meterNo"] for t in engine.tasks(instance_id=case.id)
                      if t.bpmn_id == "checkMeter")

    engine.correlate("msgMeterInstalled", {"meterNo": "M2"}, {"installedBy": "装表班"})
    assert meters_to_check() == ["M2"]  # not every meter's catch
    engine.correlate("msgMeterInstalled", {"meterNo": "M1"}, {})
    assert meters_to_check() == ["M1", "M2"]

    history = engine.history(case.id)
    with pytest.raises(Conflict, match=r"matches 2 catches of instance .*: startChase, waitSiteReady; give more"):
        engine.correlate("msgSiteReady", {"workOrderNo": "WO-9"}, {})
    assert engine.history(case.id) == history  # nothing delivered
    [reached] = engine.correlate("msgSiteReady", {"workOrderNo": "WO-9"}, {"siteNote": "已具备"}, broadcast=True)
    assert reached.id == case.id
    assert [e.bpmn_id for e in engine.history(case.id)[len(history):] if e.type == "message_received"] == [
        "startChase", "waitSiteReady"]
    assert sorted(t.bpmn_id for t in engine.tasks(instance_id=case.id)) == ["answerChase", "checkMeter", "checkMeter"]
    again = engine.correlate("msgSiteReady", {"workOrderNo": "WO-9"}, {})  # only the event sub-process waits now
    assert sorted(t.bpmn_id for t in again.ready_tasks).count("answerChase") == 2


# -- signals ------------------------------------------------------------------------------------------
def test_a_signal_reaches_every_waiting_catch_and_boundary_event(engine):
    deploy(engine, "signal_wait.bpmn")
    waiting = [engine.start("outage_wait").id for _ in range(2)]
    visit = engine.start("repair_visit")
    assert engine.signal("areaOutage") == []  # nobody waits for that one
    delivered = engine.signal("areaRestored", {"restoredAt": "10:20"}, user="dispatcher")
    assert sorted(i.id for i in delivered) == sorted([*waiting, visit.id])
    for instance_id in waiting:
        state = engine.instance(instance_id)
        assert [t.bpmn_id for t in state.ready_tasks] == ["callBack"] and state.variables["restoredAt"] == "10:20"
        [received] = [e for e in engine.history(instance_id) if e.type == "signal_received"]
        assert received.actor == "dispatcher" and received.data["caught_by"] == ["waitRestored"]
    cancelled = engine.instance(visit.id)
    assert cancelled.status == "completed"  # the interrupting boundary event took the crew's task away
    assert engine.tasks(instance_id=visit.id, include_closed=True)[0].state == "cancelled"
    assert engine.signal("areaRestored") == []  # nobody waits any more
    sent = [e.data["instances"] for e in events(engine, "signal_sent")]  # every send is recorded
    assert [sorted(ids) for ids in sent] == [[], sorted([*waiting, visit.id]), []]


def test_a_signal_thrown_by_a_process_reaches_the_instances_waiting_for_it_without_its_variables(engine):
    deploy(engine, "signal_wait.bpmn", "signal_throw.bpmn")
    waiting = engine.start("outage_wait", {"customerNo": "3100000001"})
    visit = engine.start("repair_visit")
    restore = engine.start("restore_area", {"areaCode": "A12", "customerNo": "dispatcher's own"})
    [confirm] = restore.ready_tasks
    done = engine.complete(confirm.id, {"restoredAt": "10:20"})
    assert done.status == "completed"

    woken = engine.instance(waiting.id)
    assert [t.bpmn_id for t in woken.ready_tasks] == ["callBack"]
    assert woken.variables["customerNo"] == "3100000001" and "areaCode" not in woken.variables  # no leak
    [received] = [e for e in engine.history(waiting.id) if e.type == "signal_received"]
    assert received.data["from_instance"] == restore.id and received.data["caught_by"] == ["waitRestored"]
    assert engine.instance(visit.id).status == "completed"  # the boundary event cancelled the crew's visit
    [sent] = [e for e in engine.history(restore.id) if e.type == "signal_sent"]
    assert sent.data["signal"] == "areaRestored" and sorted(sent.data["instances"]) == sorted([waiting.id, visit.id])

    again = engine.start("restore_area")  # nobody waits any more: recorded, nothing else
    engine.complete(again.ready_tasks[0].id, {})
    [sent] = [e for e in engine.history(again.id) if e.type == "signal_sent"]
    assert sent.data["instances"] == []


def test_a_signal_the_thrower_catches_itself_still_reaches_the_other_instances(engine):
    """BPMN broadcasts a signal: the throwing case's own catch does not keep it from the others."""
    deploy(engine, "signal_wait.bpmn", "signal_throw_and_catch.bpmn")
    waiting = engine.start("outage_wait", {"customerNo": "3100000001"})
    restore = engine.start("restore_and_notify", {"areaCode": "A12"})
    [confirm] = restore.ready_tasks
    done = engine.complete(confirm.id, {"restoredAt": "10:20"})
    assert [t.bpmn_id for t in done.ready_tasks] == ["reportRN"]  # its own catch fired

    woken = engine.instance(waiting.id)
    assert [t.bpmn_id for t in woken.ready_tasks] == ["callBack"] and "areaCode" not in woken.variables
    [received] = [e for e in engine.history(waiting.id) if e.type == "signal_received"]
    assert received.data["from_instance"] == restore.id
    [sent] = [e for e in engine.history(restore.id) if e.type == "signal_sent"]
    assert sent.data["signal"] == "areaRestored" and sent.data["instances"] == [waiting.id]
    assert not [e for e in engine.history(restore.id) if e.type == "signal_received"]  # not sent back to itself


def test_a_signal_starts_the_processes_with_a_signal_start_event(engine):
    """A sent signal starts one case of each process whose start event catches it (with the signal's data);
    one thrown by a process starts them too, without the thrower's variables."""
    deploy(engine, "signal_wait.bpmn", "signal_start.bpmn")
    waiting = engine.start("outage_wait")
    reached = engine.signal("areaRestored", {"areaCode": "A12"}, user="dispatcher")
    assert [i.id for i in reached][0] == waiting.id and len(reached) == 2  # the started case comes last
    notice = reached[1]
    assert [t.bpmn_id for t in notice.ready_tasks] == ["notifyCustomers"] and notice.variables["areaCode"] == "A12"
    [started, received] = [(e.type, e.data) for e in engine.history(notice.id)][:2]
    assert started[0] == "instance_started" and started[1]["key"] == "restore_notice"
    assert received == ("signal_received", {"signal": "areaRestored", "data": {"areaCode": "A12"}})
    [sent] = events(engine, "signal_sent")
    assert sent.data["instances"] == [waiting.id] and sent.data["started"] == [notice.id]

    deploy(engine, "signal_throw.bpmn")
    restore = engine.start("restore_area", {"customerNo": "dispatcher's own"})
    engine.complete(restore.ready_tasks[0].id, {"restoredAt": "10:20"})
    [thrown] = [e for e in engine.history(restore.id) if e.type == "signal_sent"]
    [second] = thrown.data["started"]
    assert second != notice.id and "customerNo" not in engine.instance(second).variables  # no leak
    assert engine.history(second)[1].data["from_instance"] == restore.id


def test_signal_send_cli(engine, db_url):
    deploy(engine, "signal_wait.bpmn")
    instance = engine.start("outage_wait")
    result = ok(cli("signal", "send", "areaRestored", "--data", '{"areaCode": "A12"}', "--json", db=db_url))
    assert [(i["instance_id"], i["status"]) for i in result] == [(instance.id, "running")]
    assert engine.instance(instance.id).variables["areaCode"] == "A12"
    text = ok(cli("signal", "send", "areaRestored", db=db_url))
    assert text.strip() == "signal areaRestored delivered to 0 case(s)"


def test_start_of_a_process_only_a_message_starts_goes_through_that_message(engine):
    """The README's ``gridflow start complaint_handling`` opens a case at 受理登记, as the message would;
    a process with several message or signal starts is refused, naming them, and nothing is stored."""
    from conftest import ROOT

    engine.deploy(sorted((ROOT / "processes").glob("*.bpmn")), user="admin")
    deploy(engine, "signal_start.bpmn")
    data = {"customerName": "张伟", "customerNo": "3100000001", "contactPhone": "13800000001",
            "content": "频繁停电", "channel": "95598_PHONE"}
    started = engine.start("complaint_handling", data, business_key="WO-START-1")
    assert started.status == "running" and [t.bpmn_id for t in started.ready_tasks] == ["registerComplaint"]
    assert started.variables["customerName"] == "张伟"
    by_message = engine.correlate("msgComplaint", {"business_key": "WO-START-2"}, data)
    assert [t.bpmn_id for t in by_message.ready_tasks] == ["registerComplaint"]

    refusals = {"aftersale_service": "it starts by message 'msgArrearsSettled' or message 'msgServiceRequest'",
                "restore_notice": "it starts by signal 'areaRestored'"}
    for key, fragment in refusals.items():
        with pytest.raises(InvalidInput, match=f"process '{key}' has no plain start event; {fragment}"):
            engine.start(key, {})
        assert engine.instances(key=key) == []
    assert {i.business_key for i in engine.instances()} == {"WO-START-1", "WO-START-2"}
