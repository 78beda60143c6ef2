"""Hardened intake: hostile XML, code injection, lint rules, the safe evaluator, and a real-world corpus.

BPMN is data, not code: whatever a diagram contains, deploy either accepts it or rejects it
with one line naming file, line and element, and a rejected deploy leaves the database as it
was. Expressions never reach Python's eval.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from conftest import BPMN, ROOT, SHANGHAI, run_cli

from engine.errors import DefinitionError, NotFound
from engine.expressions import ExpressionError, ExpressionEvaluator, check_expression, check_script

BAD = BPMN / "bad"
CORPUS = next((p for p in (ROOT.parent / "shared" / "corpus", Path("/work/shared/corpus")) if p.is_dir()),
              ROOT.parent / "shared" / "corpus")  # shared/ lies beside the checkout (CI too)
T0 = datetime(2026, 12, 1, 9, 0, tzinfo=SHANGHAI)


def _passwd_lines() -> list[str]:
    try:
        return [line for line in Path("/etc/passwd").read_text().splitlines() if line.strip()][:3]
    except OSError:  # pragma: no cover - every Linux CI image has it
        return ["root:x:0:0:"]


PASSWD = _passwd_lines()


def assert_no_secret(text: str) -> None:
    for line in PASSWD:
        assert line not in text, "an external entity was expanded"
    assert "lollollol" not in text, "an internal entity was expanded"


def rejected(engine, *paths) -> DefinitionError:
    """Deploy must raise DefinitionError with a one-line message; the database stays empty."""
    with pytest.raises(DefinitionError) as info:
        engine.deploy(list(paths), user="owner")
    message = str(info.value)
    assert "\n" not in message and "Traceback" not in message, message
    assert engine.definitions() == []
    return info.value


def injected(tmp_path: Path, name: str) -> tuple[Path, Path]:
    """A copy of an injection fixture whose payload would create ``pwned`` if it ever ran."""
    pwned = tmp_path / f"{name}.pwned"
    copy = tmp_path / f"{name}.bpmn"
    copy.write_text((BAD / f"{name}.bpmn").read_text(encoding="utf-8").replace("PWNED_PATH", str(pwned)),
                    encoding="utf-8")
    assert str(pwned) in copy.read_text(encoding="utf-8")
    return copy, pwned


# -- hostile XML -------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["xxe", "billion_laughs"])
def test_entity_attacks_are_rejected_before_parsing(engine, name):
    path = BAD / f"{name}.bpmn"
    started = time.monotonic()
    error = rejected(engine, path)
    assert time.monotonic() - started < 5
    message = str(error)
    assert message.startswith(f"{path}:2: error: ") and "DOCTYPE/ENTITY" in message, message
    assert_no_secret(message)
    [issue] = engine.lint([path]).errors
    assert (issue.file, issue.line) == (str(path), 2)


def test_entity_attacks_through_the_cli(sqlite_url):
    from engine.api import Engine

    for name in ("xxe", "billion_laughs"):
        path = BAD / f"{name}.bpmn"
        result = run_cli("deploy", str(path), db=sqlite_url)
        assert result.returncode == 1 and result.stdout == ""
        lines = result.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"gridflow: {path}:2: error: "), lines
        assert_no_secret(result.stderr)
    linted = run_cli("lint", "--json", str(BAD / "xxe.bpmn"), str(BAD / "billion_laughs.bpmn"), db=sqlite_url)
    assert linted.returncode == 1
    assert '"ok": false' in linted.stdout and "Traceback" not in linted.stderr
    assert_no_secret(linted.stdout + linted.stderr)
    engine = Engine(sqlite_url)
    try:
        assert engine.definitions() == []
    finally:
        engine.close()


def test_utf16_xxe_is_rejected_and_not_expanded(engine, tmp_path):
    """The byte-level DOCTYPE screen does not see UTF-16; the parser must still refuse the entity."""
    text = (BAD / "xxe.bpmn").read_text(encoding="utf-8").replace('encoding="UTF-8"', 'encoding="UTF-16"')
    path = tmp_path / "xxe16.bpmn"
    path.write_bytes(text.encode("utf-16"))
    message = str(rejected(engine, path))
    assert message.startswith(f"{path}:") and re.match(rf"{re.escape(str(path))}:\d+", message), message
    assert_no_secret(message)


def test_doctype_after_a_long_comment_is_rejected_with_its_line(tmp_path):
    """A DOCTYPE placed after 4 KB of comment (beyond the byte screen) is still refused, naming the line.

    BUG (engine/definitions.py, parse_xml): the fallback check on ``tree.docinfo.doctype`` raises
    ``"{file}: DOCTYPE declarations are not allowed in BPMN files"`` without a line number.
    """
    from engine.definitions import inspect_files

    body = (BAD / "xxe.bpmn").read_text(encoding="utf-8").split("\n", 2)[2].replace("&xxe;", "late")
    path = tmp_path / "late_doctype.bpmn"
    path.write_text('<?xml version="1.0" encoding="UTF-8"?>\n<!-- ' + "x" * 5000 + ' -->\n'
                    '<!DOCTYPE d SYSTEM "file:///etc/passwd">\n' + body, encoding="utf-8")
    inspection = inspect_files([path], known_topics=set())
    assert inspection.processes == []
    [issue] = inspection.errors
    assert "DOCTYPE" in issue.message
    assert_no_secret(str(issue))
    assert issue.line == 3, f"the message does not name the DOCTYPE's line (3): {issue}"


def test_xinclude_is_not_processed(engine, tmp_path):
    path = tmp_path / "xinclude.bpmn"
    xml = ('<?xml version="1.0" encoding="UTF-8"?>\n'
           '<bpmn:definitions xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL" '
           'xmlns:xi="http://www.w3.org/2001/XInclude" id="d" targetNamespace="x">\n'
           '  <bpmn:process id="xinc" isExecutable="true">\n'
           '    <bpmn:documentation><xi:include href="/etc/passwd" parse="text"/></bpmn:documentation>\n'
           '    <bpmn:startEvent id="s"/>\n  </bpmn:process>\n</bpmn:definitions>\n')
    path.write_text(xml, encoding="utf-8")
    try:
        engine.deploy([path])
    except DefinitionError as exc:
        assert_no_secret(str(exc))
        return
    from engine.store import DefinitionRow

    with engine.store.read() as session:
        [row] = session.query(DefinitionRow).all()
        assert row.xml == path.read_bytes()  # stored as written: nothing included
    instance = engine.start("xinc")
    assert_no_secret(repr(engine.instance(instance.id)) + repr(engine.history(instance.id)))


def test_malformed_xml_names_file_and_line(engine):
    path = BAD / "malformed.bpmn"
    message = str(rejected(engine, path))
    assert message.startswith(f"{path}:5: error: XML syntax error"), message


# -- code injection ----------------------------------------------------------------------------
INJECTIONS = [("condition_injection", "evil_condition", "f2"), ("script_injection", "evil_script", "evil"),
              ("timer_injection", "evil_timer", "wait")]
REFUSED = re.compile(r"not allowed|only .+ is allowed")
RUN_AT = {"f2": "gw", "evil": "evil", "wait": "wait"}  # the condition is evaluated by its gateway


@pytest.mark.parametrize(("name", "key", "element"), INJECTIONS)
def test_injection_is_rejected_at_deploy_naming_the_element(engine, tmp_path, name, key, element):
    path, pwned = injected(tmp_path, name)
    message = str(rejected(engine, path))
    assert re.match(rf"{re.escape(str(path))}:\d+ \[{element}\]: error: ", message), message
    assert REFUSED.search(message), message
    [issue] = engine.lint([path]).errors
    assert issue.element_id == element and issue.line
    with pytest.raises(NotFound, match=f"no process '{key}' is deployed"):
        engine.start(key)
    assert engine.run_due(now=T0 + timedelta(days=30)) == 0
    assert not pwned.exists()


@pytest.mark.parametrize(("name", "key", "element"), INJECTIONS)
def test_injection_that_bypassed_intake_still_cannot_run(engine, tmp_path, name, key, element):
    """Defence in depth: a definition row written without lint (old engine, manual SQL) is evaluated safely."""
    from engine.definitions import BPMN_NS, extract_meta, parse_xml
    from engine.store import DefinitionRow

    path, pwned = injected(tmp_path, name)
    xml = path.read_bytes()
    process = parse_xml(xml, path.name).getroot().find(f"{{{BPMN_NS}}}process")
    with engine.store.write() as session:
        session.add(DefinitionRow(key=key, version=1, name=None, content_hash=f"bypass-{name}", filename=path.name,
                                  xml=xml, calls={}, meta={key: extract_meta(process)}, deployed_at=T0,
                                  deployed_by="sql"))
    instance = engine.start(key)
    engine.run_due(now=T0 + timedelta(days=30))
    state = engine.instance(instance.id)
    assert state.status == "error", (state.status, state.error)
    assert REFUSED.search(state.error) and state.error.endswith(f"at {RUN_AT[element]}"), state.error
    assert not pwned.exists()


def test_injection_fixtures_through_cli_lint_and_deploy(sqlite_url, tmp_path):
    copies = [injected(tmp_path, name) for name, _, _ in INJECTIONS]
    paths = [str(path) for path, _ in copies]
    linted = run_cli("lint", *paths, db=sqlite_url)
    assert linted.returncode == 1 and "Traceback" not in linted.stderr
    errors = linted.stderr.splitlines()
    for (path, _), (_, _, element) in zip(copies, INJECTIONS, strict=True):
        assert any(line.startswith(f"{path}:") and f"[{element}]" in line for line in errors), errors
    deployed = run_cli("deploy", *paths, db=sqlite_url)
    assert deployed.returncode == 1
    [line] = deployed.stderr.splitlines()
    assert line.startswith(f"gridflow: {paths[0]}:") and "(+2 more; 'gridflow lint' lists them)" in line
    started = run_cli("start", "evil_condition", db=sqlite_url)
    assert started.returncode == 1 and started.stderr.startswith("gridflow: no process 'evil_condition'")
    assert not any(pwned.exists() for _, pwned in copies)


# -- lint rules --------------------------------------------------------------------------------
LINT_CASES = [
    ("reserved_ids", 4, "Start", "id 'Start' is reserved by SpiffWorkflow"),
    ("missing_condition", 9, "f2", "leaves gateway 'gwNoCondition' without a condition"),
    ("unknown_topic", 5, "sendSms", "unknown handler topic 'noSuchHandler'"),
    ("unsupported_element", 5, "cx", "bpmn:complexGateway is not supported"),
    ("naive_timedate", 5, "waitUntil", "timeDate '2026-12-01T09:00:00' has no time zone offset"),
    # not supported yet: each used to deploy and then misbehave (found by a fuzzing helper)
    ("event_gateway_two_timers", 5, "waitPaid", "an event-based gateway may wait for one timer only"),
    ("interrupting_event_subprocess", 9, "withdrawn", "an interrupting event sub-process is not supported yet"),
    ("interrupting_boundary_on_multi_instance", 13, "tooLate",
     "an interrupting boundary event on a multi-instance sub-process is not supported yet"),
]


@pytest.mark.parametrize(("name", "line", "element", "fragment"), LINT_CASES, ids=[c[0] for c in LINT_CASES])
def test_lint_rule_rejects_deploy_naming_file_line_and_element(engine, name, line, element, fragment):
    path = BAD / f"{name}.bpmn"
    error = rejected(engine, path)
    assert str(error).startswith(f"{path}:{line} [{element}]: error: "), str(error)
    assert fragment in str(error)
    assert all(issue.file == str(path) and issue.line for issue in error.issues if issue.level == "error")
    if name == "reserved_ids":
        named = {issue.element_id for issue in error.issues if issue.level == "error"}
        assert named == {"Start", "End"}
        assert "(+1 more" in str(error)


def test_unsupported_camunda_attribute_is_only_a_warning(engine, tmp_path, sqlite_url):
    path = tmp_path / "retries.bpmn"
    path.write_text((BAD / "unknown_topic.bpmn").read_text(encoding="utf-8")
                    .replace("noSuchHandler", "test.remind"), encoding="utf-8")
    inspection = engine.lint([path])
    assert inspection.errors == []
    [warning] = inspection.issues
    assert (warning.level, warning.element_id, warning.line) == ("warning", "sendSms", 5)
    assert warning.message == "camunda:retries is not supported and is ignored"
    [definition] = engine.deploy([path])
    assert definition.key == "unknown_topic"

    result = run_cli("lint", str(path), db=sqlite_url)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [f"{path}:5 [sendSms]: warning: camunda:retries is not supported and is "
                                          "ignored", "ok: unknown_topic"]


# -- the safe evaluator ------------------------------------------------------------------------
ESCAPES = [
    "x.__class__",
    "().__class__.__bases__[0].__subclasses__()",
    "[c for c in ().__class__.__base__.__subclasses__()]",
    "''.__class__.__mro__[1]",
    "x.__dict__",
    "__builtins__",
    "_private",
    "__import__('os').system('id')",
    "${__import__('os')}",
    "open('/etc/passwd')",
    "open('/etc/passwd').read()",
    "ｏｐｅｎ('/etc/passwd')",  # fullwidth letters normalize to `open`
    "eval('1 + 1')",
    "exec('import os')",
    "compile('1', 'f', 'eval')",
    "lambda: 1",
    "(lambda: 1)()",
    "getattr(x, '__class__')",
    "type(x)",
    "globals()",
    "vars()",
    "'a'.format(x)",
    "'{0.__class__}'.format(x)",
    "s.upper()",
    "random._os",
    "random._os.system('id')",
    "now.__globals__",
    "duration.__globals__['re']",
    "sorted.__self__",
    "f'{x}'",
    "(y := 1)",
    "[*x]",
    "b'bytes'",
    "x if True else __import__('os')",
    "import os",
    "1; __import__('os')",
]


@pytest.fixture
def evaluator():
    return ExpressionEvaluator(lambda: T0)


@pytest.mark.parametrize("expression", ESCAPES)
def test_escape_attempts_are_refused_by_check_and_evaluator(evaluator, expression):
    with pytest.raises(ExpressionError):
        check_expression(expression)
    with pytest.raises(ExpressionError):
        evaluator.evaluate(expression, {"x": 1, "s": "abc", "random": {}})


RUNTIME_REFUSALS = [
    ("n.real", {"n": 1}, "only allowed on dictionaries"),
    ("s.upper", {"s": "abc"}, "only allowed on dictionaries"),
    ("m.system", {"m": os}, "modules are not allowed|only allowed on dictionaries"),
    ("m.path", {"m": os}, "modules are not allowed|only allowed on dictionaries"),
    ("now.tzinfo", {}, "only allowed on dictionaries"),
    ("date('2026-01-01').replace", {}, "only allowed on dictionaries"),
    ("d.items", {"d": {}}, "no key 'items'"),  # a dictionary key, never the dict's method
    ("d.get", {"d": {"k": 1}}, "no key 'get'"),
    ("random.choice", {}, "variable 'random' is not defined"),
]


@pytest.mark.parametrize(("expression", "variables", "reason"), RUNTIME_REFUSALS, ids=[r[0] for r in RUNTIME_REFUSALS])
def test_attribute_access_on_non_dicts_is_refused_when_evaluated(evaluator, expression, variables, reason):
    check_expression(expression)  # syntactically harmless ...
    with pytest.raises(ExpressionError, match=reason):
        evaluator.evaluate(expression, variables)  # ... refused on the actual value


SCRIPT_ESCAPES = [
    "import os",
    "os.system('id')",
    "x = __import__('os')",
    "x = open('/etc/passwd').read()",
    "x.y = 1",
    "x[0] = 1",
    "_x = 1",
    "x = y = 1",
    "del x",
    "for i in x: pass",
    "def f(): pass",
    "x = (lambda: 1)()",
    "x = 1\nimport os",
]


@pytest.mark.parametrize("script", SCRIPT_ESCAPES)
def test_script_escapes_are_refused(evaluator, script):
    with pytest.raises(ExpressionError):
        check_script(script)
    variables = {"x": {"y": 0}}
    with pytest.raises(ExpressionError):
        evaluator.execute(script, variables)
    assert variables == {"x": {"y": 0}}


def test_allowed_expressions_and_scripts_still_work(evaluator):
    data = {"amount": 150, "order": {"customer": {"name": "张三"}}, "items": [1, 2, 3], "count": 1}
    assert evaluator.evaluate("${amount > 100 and order.customer.name == '张三'}", data) is True
    assert evaluator.evaluate("len(items) + sum([x * 2 for x in items]) + max(items)", data) == 18
    assert evaluator.evaluate("now() + duration('PT2H')", data) == T0 + timedelta(hours=2)
    assert evaluator.evaluate("2 ** 10 + len('ab' * 1000)", data) == 3024
    assigned = evaluator.execute("total = amount * 2\ncount += 1", data)
    assert assigned == {"total": 300, "count": 2} and data["count"] == 2
    with pytest.raises(ExpressionError, match="not allowed"):
        evaluator.execute("count **= 2", data)


@pytest.mark.parametrize("expression", [
    "10 ** 10 ** 10",
    "2 ** 99999999",
    "'a' * 10 ** 9",
    "[1] * 10 ** 9",
    "'ab' * 60000",
    "'x' * 99999 + 'y' * 99999",
    "[1 for a in s for b in s]",
    "int('9' * 99999)",
])
def test_resource_bombs_are_refused_quickly(evaluator, expression):
    started = time.monotonic()
    with pytest.raises(ExpressionError):
        evaluator.evaluate(expression, {"s": "x" * 5000})
    assert time.monotonic() - started < 1


def _evaluate_in_subprocess(expression: str, timeout: float) -> str:
    """'refused', 'value <size>' or 'hang' (killed after ``timeout`` seconds)."""
    code = ("import sys\nfrom datetime import UTC, datetime\n"
            "from engine.expressions import ExpressionError, ExpressionEvaluator\n"
            "try:\n    value = ExpressionEvaluator(lambda: datetime.now(UTC)).evaluate(sys.argv[1], {})\n"
            "except ExpressionError:\n    print('refused')\nelse:\n"
            "    print('value', len(value) if isinstance(value, str) else value)\n")
    try:
        result = subprocess.run([sys.executable, "-c", code, expression], capture_output=True, text=True,
                                timeout=timeout, cwd=str(ROOT), env={**os.environ, "PYTHONPATH": str(ROOT)})
    except subprocess.TimeoutExpired:
        return "hang"
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_huge_power_within_simpleeval_limits_does_not_hang():
    """BUG: simpleeval's MAX_POWER bounds base and exponent separately (each <= 4,000,000), so
    ``3999999 ** 3999999`` (an 87-million-bit integer) passes and runs for ~40 s of CPU, holding the
    instance lock (and on SQLite the database write lock). The condition passes lint too."""
    outcome = _evaluate_in_subprocess("3999999 ** 3999999 > 0", timeout=5)
    assert outcome == "refused", f"'3999999 ** 3999999 > 0' was not refused quickly: {outcome}"


def test_percent_formatting_cannot_build_huge_strings():
    """BUG: ``%`` string formatting is not covered by simpleeval's MAX_STRING_LENGTH (100,000), so
    ``'%0100000000d' % 1`` builds a 100 MB string (and a larger width exhausts memory)."""
    outcome = _evaluate_in_subprocess("'%0100000000d' % 1", timeout=20)
    assert outcome == "refused", f"'%0100000000d' % 1 was not refused: {outcome}"


# -- a real-world corpus through the CLI ---------------------------------------------------------
CORPUS_FILES = sorted([*CORPUS.glob("miwg/*.bpmn"), *CORPUS.glob("authored/*.bpmn")])
DEPLOYED_LINE = re.compile(r"^(\S+) v(\d+) ([0-9a-f]{12})$")


def test_corpus_deploys_or_is_rejected_with_one_line(db_url):
    assert len(CORPUS_FILES) >= 20, f"the BPMN corpus is missing at {CORPUS} (shared/ beside the checkout)"
    from engine.api import Engine

    Engine(db_url).close()  # create the schema once, before the deploys run side by side

    def deploy(path: Path):
        return path, run_cli("deploy", str(path), db=db_url)

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(deploy, CORPUS_FILES))
    accepted: dict[str, Path] = {}
    rejected_files = []
    for path, result in results:
        assert "Traceback" not in result.stdout + result.stderr, f"{path.name}: {result.stderr[-800:]}"
        if result.returncode == 0:
            for line in result.stdout.splitlines():
                match = DEPLOYED_LINE.match(line)
                assert match, f"{path.name}: unexpected output {line!r}"
                accepted[match.group(1)] = path
            continue
        assert result.returncode == 1, f"{path.name}: exit {result.returncode}: {result.stderr}"
        assert result.stdout == ""
        lines = result.stderr.splitlines()
        assert len(lines) == 1, f"{path.name}: {lines}"
        assert lines[0].startswith(f"gridflow: {path}"), lines[0]
        rejected_files.append(path)

    engine = Engine(db_url)
    try:
        definitions = engine.definitions()
    finally:
        engine.close()
    # nothing from a rejected file reached the database: exactly the accepted processes are there
    assert sorted(d.key for d in definitions) == sorted(accepted)
    assert all(d.version == 1 for d in definitions)
    assert len(rejected_files) + len(set(accepted.values())) == len(CORPUS_FILES)


def test_corpus_files_are_untouched(tmp_path):
    # guard: the corpus is shared; the test above only reads it
    for path in CORPUS_FILES[:3]:
        shutil.copy(path, tmp_path)
        assert (tmp_path / path.name).read_bytes() == path.read_bytes()


def test_lint_warns_about_a_process_that_throws_the_signal_that_starts_it(engine, tmp_path):
    """Every case would start another case of itself; deploy still accepts it (a warning, not an error)."""
    looped = tmp_path / "restore_loop.bpmn"
    looped.write_text((BPMN / "signal_start.bpmn").read_text(encoding="utf-8").replace(
        '<bpmn:endEvent id="endNotice"><bpmn:incoming>n2</bpmn:incoming></bpmn:endEvent>',
        '<bpmn:endEvent id="endNotice"><bpmn:incoming>n2</bpmn:incoming>'
        '<bpmn:signalEventDefinition signalRef="sigOutageStart"/></bpmn:endEvent>'), encoding="utf-8")
    [warning] = [i for i in engine.lint([looped]).issues if "signal" in i.message]
    assert (warning.level, warning.element_id) == ("warning", "endNotice")
    assert warning.message.startswith("throws signal 'areaRestored' that starts this process (onRestored)")
    assert not [i for i in engine.lint([BPMN / "signal_start.bpmn"]).issues if "signal" in i.message]
    assert [d.key for d in engine.deploy([looped])] == ["restore_notice"]
