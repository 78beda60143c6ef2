"""Intake of BPMN files: hardened XML parse, XSD validation, lint, parse to SpiffWorkflow specs.

``gridflow lint`` and ``Engine.deploy`` share :func:`inspect_files`. Every problem is an
:class:`Issue` naming the file, line and element id. Nothing here touches the database.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lxml import etree
from SpiffWorkflow.bpmn.parser.BpmnParser import BpmnValidator
from SpiffWorkflow.bpmn.parser.ValidationException import ValidationException

from .bpmn import GridflowParser, timer_expression
from .expressions import ExpressionError, check_expression, check_script

BPMN_NS = "http://www.omg.org/spec/BPMN/20100524/MODEL"
CAMUNDA_NS = "http://camunda.org/schema/1.0/bpmn"
XSI_TYPE = "{http://www.w3.org/2001/XMLSchema-instance}type"
MAX_FILE_BYTES = 5 * 1024 * 1024
RESERVED_IDS = {"Start", "End", "Root"}

FLOW_NODES = {
    "startEvent", "endEvent", "userTask", "serviceTask", "sendTask", "businessRuleTask", "scriptTask",
    "manualTask", "task", "receiveTask", "intermediateCatchEvent", "intermediateThrowEvent",
    "boundaryEvent", "exclusiveGateway", "parallelGateway", "inclusiveGateway", "eventBasedGateway",
    "subProcess", "callActivity",
}
PASSIVE = {
    "sequenceFlow", "laneSet", "lane", "flowNodeRef", "childLaneSet", "textAnnotation", "text",
    "association", "group", "dataObject", "dataObjectReference", "dataStoreReference", "dataInputAssociation",
    "dataOutputAssociation", "sourceRef", "targetRef", "incoming", "outgoing", "documentation",
    "extensionElements", "conditionExpression", "property", "ioSpecification", "dataInput", "dataOutput",
    "inputSet", "outputSet", "dataInputRefs", "dataOutputRefs", "script", "multiInstanceLoopCharacteristics",
    "loopCardinality", "completionCondition", "standardLoopCharacteristics", "loopCondition",
    "transformation", "assignment", "inputSetRefs", "outputSetRefs", "optionalInputRefs", "optionalOutputRefs",
    "whileExecutingInputRefs", "whileExecutingOutputRefs", "dataState", "from", "to",
    "resourceAssignmentExpression", "formalExpression",
}
IGNORED_WITH_WARNING = {"potentialOwner", "performer", "humanPerformer", "resourceRef"}
EVENT_DEFINITIONS = {
    "timerEventDefinition", "messageEventDefinition", "signalEventDefinition", "errorEventDefinition",
    "escalationEventDefinition", "terminateEventDefinition", "timeDate", "timeDuration", "timeCycle",
}
HANDLER_TASKS = {"serviceTask", "sendTask", "businessRuleTask"}
SUPPORTED_CAMUNDA = {
    "candidateGroups", "assignee", "formKey", "dueDate", "type", "topic", "asyncBefore", "asyncAfter",
    "exclusive", "candidateUsers", "priority", "followUpDate", "calledElementBinding", "versionTag",
    "historyTimeToLive", "isStartableInTasklist", "initiator", "collection", "elementVariable",
    "expression", "resultVariable",
}
_NAIVE_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}(T[0-9:.]+)?$")


@dataclass(frozen=True)
class Issue:
    level: str  # "error" or "warning"
    file: str
    line: int | None
    element_id: str | None
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        element = f" [{self.element_id}]" if self.element_id else ""
        return f"{where}{element}: {self.level}: {self.message}"


@dataclass
class ProcessSource:
    """One executable process found in a file, ready to deploy."""

    key: str
    name: str | None
    file: str
    xml: bytes
    calls: set[str]
    meta: dict[str, dict[str, Any]]

    def content_hash(self, dependency_hashes: dict[str, str]) -> str:
        digest = hashlib.sha256()
        digest.update(self.key.encode() + b"\0" + self.xml)
        for key in sorted(dependency_hashes):
            digest.update(f"\0{key}={dependency_hashes[key]}".encode())
        return digest.hexdigest()


@dataclass
class Inspection:
    """The outcome of linting a set of files."""

    issues: list[Issue] = field(default_factory=list)
    processes: list[ProcessSource] = field(default_factory=list)

    @property
    def errors(self) -> list[Issue]:
        return [i for i in self.issues if i.level == "error"]


def _local(tag: Any) -> str:
    return etree.QName(tag).localname if isinstance(tag, str) else ""


def _ns(tag: Any) -> str:
    return etree.QName(tag).namespace if isinstance(tag, str) else ""


def _hardened_parser() -> etree.XMLParser:
    return etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, dtd_validation=False,
                           huge_tree=False, remove_pis=True)


_validator: BpmnValidator | None = None


def _xsd() -> BpmnValidator:
    global _validator
    if _validator is None:
        _validator = BpmnValidator()
    return _validator


def parse_xml(data: bytes, file: str) -> etree._ElementTree:
    """Parse BPMN bytes with DTDs, entities and network access refused. Raises ValueError(one line)."""
    if len(data) > MAX_FILE_BYTES:
        raise ValueError(f"{file}: file is larger than {MAX_FILE_BYTES // (1024 * 1024)} MiB")
    lowered = data.lower()
    for marker in (b"<!doctype", b"<!entity", b"\x00<\x00!\x00d\x00o\x00c", b"<\x00!\x00d\x00o\x00c\x00"):
        position = lowered.find(marker)
        if position >= 0:
            line = data[:position].count(b"\n") + 1
            raise ValueError(f"{file}:{line}: DOCTYPE/ENTITY declarations are not allowed in BPMN files")
    try:
        tree = etree.ElementTree(etree.fromstring(data, _hardened_parser()))
    except etree.XMLSyntaxError as exc:
        raise ValueError(f"{file}:{exc.lineno}: XML syntax error: {exc.msg}") from None
    if tree.docinfo.doctype:
        raise ValueError(f"{file}: DOCTYPE declarations are not allowed in BPMN files")
    if _ns(tree.getroot().tag) != BPMN_NS or _local(tree.getroot().tag) != "definitions":
        raise ValueError(f"{file}:1: not a BPMN 2.0 file (root element must be bpmn:definitions)")
    return tree


def inspect_files(paths: list[str | Path], known_topics: set[str] | None = None,
                  external_processes: set[str] | None = None,
                  form_exists: Callable[[str], bool] | None = None) -> Inspection:
    """Lint and parse BPMN files together (call activities may cross files).

    ``known_topics``: handler topics that exist (None skips the check). ``external_processes``:
    keys already deployed, which call activities may reference. ``form_exists``: whether a form
    key has a schema (a user task whose form has none gets a warning: any data would be accepted).
    """
    result = Inspection()
    trees: list[tuple[str, bytes, etree._ElementTree]] = []
    for path in paths:
        name = str(path)
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            result.issues.append(Issue("error", name, None, None, f"cannot read file: {exc.strerror}"))
            continue
        try:
            tree = parse_xml(data, name)
        except ValueError as exc:
            text = str(exc)
            file_part, _, message = text.partition(": ")
            line = file_part.rsplit(":", 1)[1] if file_part.count(":") else None
            result.issues.append(Issue("error", name, int(line) if line and line.isdigit() else None, None,
                                       message or text))
            continue
        try:
            _xsd().validate(tree.getroot(), name)
        except ValidationException as exc:
            result.issues.append(Issue("error", name, exc.line_number, None, f"XSD: {_short(exc)}"))
            continue
        before = len(result.errors)
        result.issues.extend(_lint(tree, name, known_topics, form_exists))
        if len(result.errors) == before:
            trees.append((name, data, tree))
    if result.errors:
        return result
    defined = {p.get("id") for _, _, t in trees for p in t.getroot().iter(f"{{{BPMN_NS}}}process")}
    _parse_specs(trees, result, defined | (external_processes or set()))
    return result


def _short(exc: Exception) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text.replace("{http://www.omg.org/spec/BPMN/20100524/MODEL}", "bpmn:")


def _lint(tree: etree._ElementTree, file: str, known_topics: set[str] | None,
          form_exists: Callable[[str], bool] | None = None) -> list[Issue]:
    issues: list[Issue] = []

    def add(level, element, message):
        issues.append(Issue(level, file, getattr(element, "sourceline", None),
                            element.get("id") if element is not None else None, message))

    root = tree.getroot()
    processes = root.findall(f"{{{BPMN_NS}}}process")
    executable = [p for p in processes if p.get("isExecutable") == "true"]
    if not executable:
        add("error", root, "no executable process (set isExecutable=\"true\" on the process to deploy)")
    for process in processes:
        if process.get("isExecutable") != "true":
            add("warning", process, "process is not executable and will not be deployed")
    for process in executable:
        _lint_process(process, add, known_topics, form_exists)
    return issues


def _lint_process(process, add, known_topics, form_exists=None) -> None:
    flows = {f.get("id"): f for f in process.iter(f"{{{BPMN_NS}}}sequenceFlow")}
    for element in _elements_outside_extensions(process):
        ns, tag, element_id = _ns(element.tag), _local(element.tag), element.get("id")
        if element_id and (element_id in RESERVED_IDS or element_id.startswith("Root")):
            add("error", element, f"id '{element_id}' is reserved by SpiffWorkflow; rename the element")
        for attribute in element.attrib:
            if _ns(attribute) == CAMUNDA_NS and _local(attribute) not in SUPPORTED_CAMUNDA:
                add("warning", element, f"camunda:{_local(attribute)} is not supported and is ignored")
        if ns != BPMN_NS or element is process:
            continue
        if tag in IGNORED_WITH_WARNING:
            if tag != "resourceRef":
                add("warning", element, f"bpmn:{tag} is ignored; use camunda:candidateGroups/camunda:assignee")
            continue
        if tag not in FLOW_NODES | PASSIVE | EVENT_DEFINITIONS:
            add("error", element, f"bpmn:{tag} is not supported (see docs/bpmn-dialect.md)")
            continue
        if tag in ("exclusiveGateway", "inclusiveGateway"):
            _lint_gateway(element, flows, add)
        elif tag == "conditionExpression":
            _check(add, element, element.text, "condition")
        elif tag == "scriptTask":
            _lint_script(element, add)
        elif tag in HANDLER_TASKS:
            _lint_handler_task(element, tag, add, known_topics)
        elif tag == "userTask":
            form_key = element.get(f"{{{CAMUNDA_NS}}}formKey") or element_id
            if form_exists is not None and not form_exists(form_key):
                add("warning", element, f"form '{form_key}' has no schema (forms/{form_key}.schema.json): "
                                        "completions are not validated")
            for attribute in ("assignee", "dueDate"):
                value = element.get(f"{{{CAMUNDA_NS}}}{attribute}")
                if value and value.strip().startswith(("${", "#{")):
                    _check(add, element, value, f"camunda:{attribute}")
        elif tag == "messageEventDefinition" and element.get(f"{{{CAMUNDA_NS}}}expression"):
            _check(add, element.getparent(), element.get(f"{{{CAMUNDA_NS}}}expression"), "camunda:expression")
        elif tag in ("timeDate", "timeDuration", "timeCycle"):
            _lint_timer(element, tag, add)
        elif tag == "eventBasedGateway":
            _lint_event_gateway(element, flows, add)
        elif tag == "subProcess" and element.get("triggeredByEvent") == "true":
            for start in element.findall(f"{{{BPMN_NS}}}startEvent"):
                if start.get("isInterrupting") != "false":
                    add("error", start, "an interrupting event sub-process is not supported yet (the main path "
                                        "would go on); set isInterrupting=\"false\", or stop the steps with an "
                                        "interrupting boundary event")
        elif tag == "boundaryEvent" and element.get("cancelActivity") != "false":
            ref = element.get("attachedToRef")
            attached = next((e for e in process.iter(f"{{{BPMN_NS}}}subProcess") if e.get("id") == ref), None)
            if attached is not None and attached.find(f"{{{BPMN_NS}}}multiInstanceLoopCharacteristics") is not None:
                add("error", element, "an interrupting boundary event on a multi-instance sub-process is not "
                                      "supported yet; set cancelActivity=\"false\" or attach it to a task inside")
        elif tag == "callActivity" and not element.get("calledElement"):
            add("error", element, "callActivity needs calledElement (the key of the process it calls)")
    _lint_signal_loop(process, add)


def _signal_name(process, element) -> str | None:
    """The signal an event element throws or catches (its definitions-level name), or None."""
    definition = element.find(f"{{{BPMN_NS}}}signalEventDefinition")
    if definition is None:
        return None
    return _referenced_name(process, "signal", definition.get("signalRef")) or element.get("name") or element.get("id")


def _lint_signal_loop(process, add) -> None:
    """Warn when a process throws a signal its own start event catches: every case would start another."""
    starts = {_signal_name(process, s): s.get("id") for s in process.findall(f"{{{BPMN_NS}}}startEvent")}
    starts.pop(None, None)
    if not starts:
        return
    for tag in ("intermediateThrowEvent", "endEvent"):
        for thrower in process.iter(f"{{{BPMN_NS}}}{tag}"):
            name = _signal_name(process, thrower)
            if name in starts:
                add("warning", thrower, f"throws signal '{name}' that starts this process ({starts[name]}): "
                                        "every case starts another one, a chain the engine stops 8 deep")


def _elements_outside_extensions(process):
    """Every element of a process except those inside extensionElements (vendor data)."""
    stack = [process]
    while stack:
        element = stack.pop()
        yield element
        if _local(element.tag) == "extensionElements":
            continue
        stack.extend(child for child in reversed(element) if isinstance(child.tag, str))


def _check(add, element, text, what) -> None:
    owner = element if element.get("id") else element.getparent()
    if not (text or "").strip():
        add("error", owner, f"empty {what}")
        return
    if text.strip().startswith("="):
        add("error", owner, f"{what} '{text.strip()}' is a FEEL (Camunda 8) expression; "
                            "write a gridflow expression such as ${approved == True}")
        return
    try:
        check_expression(text)
    except ExpressionError as exc:
        add("error", owner, f"{what}: {exc}")


def _lint_gateway(gateway, flows, add) -> None:
    default = gateway.get("default")
    outgoing = [flows.get(o.text.strip()) for o in gateway.findall(f"{{{BPMN_NS}}}outgoing") if o.text]
    if len(outgoing) < 2:
        return
    for flow in outgoing:
        if flow is None or flow.get("id") == default:
            continue
        if flow.find(f"{{{BPMN_NS}}}conditionExpression") is None:
            add("error", flow, f"sequence flow leaves gateway '{gateway.get('id')}' without a condition "
                               "and is not its default flow")


_GATEWAY_EVENTS = ("messageEventDefinition", "signalEventDefinition", "timerEventDefinition")


def _lint_event_gateway(gateway, flows, add) -> None:
    """An event-based gateway waits for the events its paths start with: message, signal or timer catch
    events and receive tasks, reached only from it, at most one of them a timer and that not a cycle."""
    name = gateway.get("id")
    if gateway.get("instantiate") == "true" or gateway.get("eventGatewayType", "Exclusive") != "Exclusive":
        add("error", gateway, "only an exclusive event-based gateway inside a process is supported "
                              "(no instantiate=\"true\", no eventGatewayType=\"Parallel\")")
    timers = 0
    for ref in gateway.findall(f"{{{BPMN_NS}}}outgoing"):
        flow = flows.get((ref.text or "").strip())
        target = next((e for e in gateway.getparent() if flow is not None
                       and e.get("id") == flow.get("targetRef")), None)
        if target is None:
            continue
        tag = _local(target.tag)
        kinds = [_local(d.tag) for d in target if _local(d.tag) in _GATEWAY_EVENTS]
        if not (tag == "receiveTask" or (tag == "intermediateCatchEvent" and len(kinds) == 1)):
            add("error", target, f"follows event-based gateway '{name}': only a message, signal or timer "
                                 "catch event or a receive task may")
            continue
        if sum(f.get("targetRef") == target.get("id") for f in flows.values()) > 1:
            add("error", target, f"follows event-based gateway '{name}' and has another incoming flow "
                                 "(it would not wait when reached that way)")
        if kinds == ["timerEventDefinition"]:
            timers += 1
            if target.find(f"{{{BPMN_NS}}}timerEventDefinition/{{{BPMN_NS}}}timeCycle") is not None:
                add("error", target, f"a timeCycle after event-based gateway '{name}' is not supported; "
                                     "use timeDuration or timeDate")
    if timers > 1:
        add("error", gateway, "an event-based gateway may wait for one timer only; take the earliest")


def _lint_script(task, add) -> None:
    script = task.find(f"{{{BPMN_NS}}}script")
    fmt = (task.get("scriptFormat") or "python").lower()
    if fmt not in ("python", "gridflow"):
        add("error", task, f"scriptFormat '{fmt}' is not supported; scripts are safe assignments (python)")
        return
    try:
        check_script(script.text if script is not None else "")
    except ExpressionError as exc:
        add("error", task, str(exc))


def _lint_handler_task(task, tag, add, known_topics) -> None:
    kind = task.get(f"{{{CAMUNDA_NS}}}type")
    topic = task.get(f"{{{CAMUNDA_NS}}}topic")
    for unsupported in ("class", "expression", "delegateExpression", "decisionRef"):
        if task.get(f"{{{CAMUNDA_NS}}}{unsupported}"):
            add("error", task, f"camunda:{unsupported} on bpmn:{tag} is not supported; "
                               "use camunda:type=\"external\" camunda:topic=\"<handler>\"")
            return
    if kind != "external" or not topic:
        add("error", task, f"bpmn:{tag} needs camunda:type=\"external\" and camunda:topic=\"<handler name>\"")
    elif known_topics is not None and topic not in known_topics:
        add("error", task, f"unknown handler topic '{topic}' (register it with @handler(\"{topic}\"))")


def _lint_timer(element, tag, add) -> None:
    owner = element.getparent().getparent()
    body = (element.text or "").strip()
    if not body:
        add("error", owner, f"empty {tag}")
        return
    if tag == "timeDate" and _NAIVE_DATE.match(body):
        add("error", owner, f"timeDate '{body}' has no time zone offset; write e.g. {body}+08:00")
        return
    expression = timer_expression(body)
    try:
        check_expression(expression)
    except ExpressionError as exc:
        add("error", owner, f"{tag}: {exc}")


def _parse_specs(trees, result: Inspection, known_processes: set[str]) -> None:
    parser = GridflowParser()
    for name, _, tree in trees:
        try:
            parser.add_bpmn_xml(tree, name)
        except ValidationException as exc:
            result.issues.append(Issue("error", name, exc.line_number, exc.id, _short(exc)))
        except Exception as exc:  # SpiffWorkflow raises assorted errors for malformed models
            result.issues.append(Issue("error", name, None, None, f"cannot parse: {_short(exc)}"))
    if result.errors:
        return
    for name, data, tree in trees:
        for process in tree.getroot().findall(f"{{{BPMN_NS}}}process"):
            if process.get("isExecutable") != "true":
                continue
            key = process.get("id")
            too_long = [(what, limit) for what, value, limit in (("id", key, 200), ("name", process.get("name"), 400))
                        if value and len(value) > limit]
            if too_long:
                what, limit = too_long[0]
                result.issues.append(Issue("error", name, process.sourceline, key[:40],
                                           f"process {what} is longer than {limit} characters"))
                continue
            calls = {c.get("calledElement") for c in process.iter(f"{{{BPMN_NS}}}callActivity")}
            missing = sorted(calls - known_processes)
            if missing:
                result.issues.append(Issue("error", name, process.sourceline, key,
                                           f"calls process(es) not deployed and not in this batch: "
                                           f"{', '.join(missing)}"))
                continue
            try:
                parser.get_spec(key)
            except ValidationException as exc:
                result.issues.append(Issue("error", name, exc.line_number, exc.id, _short(exc)))
                continue
            except Exception as exc:
                result.issues.append(Issue("error", name, process.sourceline, key, f"cannot parse: {_short(exc)}"))
                continue
            result.processes.append(ProcessSource(key, process.get("name"), name, data, calls,
                                                  extract_meta(process)))


def extract_meta(process) -> dict[str, dict[str, Any]]:
    """Per element id: what the engine needs besides the spec (lane, groups, form, topic, messages)."""
    lanes: dict[str, str] = {}
    for lane in process.iter(f"{{{BPMN_NS}}}lane"):
        for ref in lane.findall(f"{{{BPMN_NS}}}flowNodeRef"):
            if ref.text:
                lanes[ref.text.strip()] = lane.get("id")
    meta: dict[str, dict[str, Any]] = {}
    for element in process.iter():
        if not isinstance(element.tag, str) or _ns(element.tag) != BPMN_NS:
            continue
        tag, element_id = _local(element.tag), element.get("id")
        if tag not in FLOW_NODES or not element_id:
            continue

        def camunda(attribute, element=element):
            return element.get(f"{{{CAMUNDA_NS}}}{attribute}")

        info: dict[str, Any] = {"type": tag, "name": element.get("name") or element_id}
        if tag == "startEvent" and element.getparent() is process:
            info["process_start"] = True
        lane = lanes.get(element_id) or _enclosing_lane(element, lanes)
        if lane:
            info["lane"] = lane
        if tag == "userTask":
            groups = camunda("candidateGroups")
            info["candidate_groups"] = [g.strip() for g in groups.split(",") if g.strip()] if groups else (
                [lane] if lane else [])
            info["assignee"] = camunda("assignee")
            info["form_key"] = camunda("formKey") or element_id
            info["due_date"] = camunda("dueDate")
        if tag in HANDLER_TASKS:
            info["topic"] = camunda("topic")
            info["async"] = camunda("asyncBefore") == "true"
        properties = {p.get("name"): p.get("value")
                      for p in element.findall(f"{{{BPMN_NS}}}extensionElements/{{{CAMUNDA_NS}}}properties/"
                                               f"{{{CAMUNDA_NS}}}property")}
        message_definition = element.find(f"{{{BPMN_NS}}}messageEventDefinition")
        message_ref = element.get("messageRef") if tag == "receiveTask" else (
            message_definition.get("messageRef") if message_definition is not None else None)
        if message_ref:
            info["message"] = _referenced_name(process, "message", message_ref)
        signal = _signal_name(process, element) if info.get("process_start") else None
        if signal:  # a signal start event
            info["signal"] = signal
        if properties.get("correlationKeys"):
            info["correlation_keys"] = [k.strip() for k in properties["correlationKeys"].split(",") if k.strip()]
        if properties:
            info["properties"] = properties
        meta[element_id] = info
    return meta


def _referenced_name(process, tag: str, ref: str | None) -> str | None:
    """The ``name`` of the definitions-level ``<tag id=ref>`` (a message, a signal); ``ref`` when there is none."""
    found = process.getroottree().getroot().find(f"{{{BPMN_NS}}}{tag}[@id='{ref}']")
    return found.get("name") if found is not None else ref


def _enclosing_lane(element, lanes: dict[str, str]) -> str | None:
    parent = element.getparent()
    while parent is not None:
        if parent.get("id") in lanes:
            return lanes[parent.get("id")]
        parent = parent.getparent()
    return None
