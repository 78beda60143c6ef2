"""gridflow command line: parse, call the Engine, render (rich tables, or one JSON document with --json).

Thin by design: every command goes through ``engine.api.Engine``; nothing here touches the
database. Heavy imports (SQLAlchemy, SpiffWorkflow) happen inside commands, so ``--help`` and
completion stay fast. Errors are one line on stderr with exit code 1 (user errors) or 2 (usage).
"""

from __future__ import annotations

import codecs
import gc
import json
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from functools import wraps
from pathlib import Path
from typing import Any

import click

SECTIONS = {
    "operators": ["tasks", "claim", "unclaim", "complete", "show", "cases", "history", "timeline", "start",
                  "message", "signal"],
    "supervisors": ["reassign", "sla", "incidents", "incident", "cancel"],
    "process owners": ["lint", "deploy", "definitions", "schedules"],
    "admins": ["db", "user", "worker", "jobs", "run-due", "demo"],
}
#: commands that run without an acting user (see ``Settings.check_user``)
NO_USER_COMMANDS = {"lint", "db init", "db upgrade"}


class SectionedGroup(click.Group):
    """Lists commands grouped by audience in ``gridflow --help``."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(self.commands)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        placed: set[str] = set()
        for section, names in SECTIONS.items():
            rows = [(n, self.commands[n].get_short_help_str(70)) for n in names if n in self.commands]
            placed.update(n for n, _ in rows)
            if rows:
                with formatter.section(f"Commands for {section}"):
                    formatter.write_dl(rows)
        rest = [(n, c.get_short_help_str(70)) for n, c in self.commands.items() if n not in placed]
        if rest:
            with formatter.section("Other commands"):
                formatter.write_dl(rest)


class Settings:
    def __init__(self, db: str | None, user: str | None, now: str | None):
        self.db = db
        self.user = user
        self.now = now
        self._engine = None
        self.acting = None  # the acting engine.identity.User once check_user passed (identities on)

    def close(self) -> None:
        if self._engine is not None:
            self._engine.close()

    def check_user(self, command: str) -> None:
        """Refuse a command the acting user may not run: one line, exit 1, recorded in history.

        Identities are on once the database has a user (``gridflow db init --admin NAME``); from
        then on every command except ``lint``, ``db init`` and ``db upgrade`` needs ``--user`` /
        ``GRIDFLOW_USER`` naming a known user, and the engine applies ``engine.identity``'s rules.
        A database without users is in setup mode: no checks (embedded use, demos, CI).
        """
        if command in NO_USER_COMMANDS:
            return
        engine = self.engine()
        if self.user:
            self.acting = engine.authorize(self.user, command.split()[0])  # None in setup mode
        elif engine.identities_active():
            fail(f"'{command}' needs an acting user: pass --user NAME or set GRIDFLOW_USER")

    def engine(self, migrate: bool = True):
        if self._engine is None:
            from engine.api import DEFAULT_URL, Engine
            from engine.clock import FixedClock, SystemClock, parse_instant

            if _OWN_PROCESS:
                # The modules just imported (SQLAlchemy, the engine) live until the process ends: move their
                # objects out of the cyclic collector's sight, so neither the command's collections nor the
                # interpreter's final one at exit walk them again (~50 ms of every command on this VM).
                # Objects created from here on (the engine, its connections, the rows) are collected as usual.
                gc.freeze()

            clock = SystemClock()
            if self.now:
                try:
                    clock = FixedClock(parse_instant(self.now))
                except ValueError as exc:
                    raise click.UsageError(f"--now: {exc}") from None
            elif os.environ.get("GRIDFLOW_CLOCK_FILE"):  # a simulated clock shared by processes
                from engine.clock import FileClock

                try:
                    clock = FileClock(os.environ["GRIDFLOW_CLOCK_FILE"])
                except ValueError as exc:
                    raise click.UsageError(f"GRIDFLOW_CLOCK_FILE: {exc}") from None
            self._engine = Engine(self.db or DEFAULT_URL, clock=clock, auto_migrate=migrate)
        return self._engine


def fail(message: str, code: int = 1) -> None:
    click.echo(f"gridflow: {message}", err=True)
    sys.exit(code)


def engine_command(function: Callable) -> Callable:
    """Run a command body; map engine errors to one line on stderr and exit code 1."""

    @wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from engine.errors import GridflowError

        try:
            ctx = click.get_current_context(silent=True)
            settings = ctx.find_object(Settings) if ctx is not None else None
            if settings is not None:
                settings.check_user(_command_name(ctx))
            return function(*args, **kwargs)
        except GridflowError as exc:
            fail(str(exc))
        except ImportError as exc:
            fail(str(exc))

    return wrapper


def _command_name(ctx: click.Context) -> str:
    """``"user add"`` for ``gridflow user add``; aliases give the real name (``timeline`` → ``history``)."""
    names = []
    while ctx.parent is not None:
        names.append(ctx.command.name or "")
        ctx = ctx.parent
    return " ".join(reversed(names))


def parse_data(text: str | None, option: str = "--data") -> dict[str, Any]:
    """``JSON`` or ``@file`` → dict; a bad value exits 1 with the position of the problem."""
    if text is None:
        return {}
    source = option
    if text.startswith("@"):
        path = Path(text[1:])
        source = f"{option} {path}"
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            fail(f"{source}: cannot read file: {exc.strerror}")
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        fail(f"{source}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}")
    if not isinstance(value, dict):
        fail(f"{source}: expected a JSON object like {{\"amount\": 150}}, got {type(value).__name__}")
    return value


def emit_json(value: Any) -> None:
    from engine.api import to_jsonable

    click.echo(json.dumps(to_jsonable(value), ensure_ascii=False, indent=2))


def console():
    from rich.console import Console

    return Console()


@click.group(cls=SectionedGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--db", envvar="GRIDFLOW_DB", help="Database URL (default sqlite:///gridflow.db; env GRIDFLOW_DB).")
@click.option("--user", envvar="GRIDFLOW_USER", help="Acting user name (env GRIDFLOW_USER).")
@click.option("--now", envvar="GRIDFLOW_NOW", metavar="ISO8601",
              help="Act at this instant, e.g. 2026-12-01T09:00:00+08:00 (env GRIDFLOW_NOW).")
@click.version_option(package_name="gridflow")
@click.pass_context
def main(ctx: click.Context, db: str | None, user: str | None, now: str | None) -> None:
    """gridflow: BPMN service flows for 95598 customer service.

    Once 'gridflow db init --admin NAME' has created the first user, every command except lint,
    db init and db upgrade acts as a known user: --user NAME or GRIDFLOW_USER. Ids of tasks and
    cases may be given by a unique prefix, a case also by its case number (WO2026001).
    Shell completion: eval "$(_GRIDFLOW_COMPLETE=bash_source gridflow)".

    \b
    Example:
      gridflow db init --admin wangwu
      export GRIDFLOW_USER=wangwu
      gridflow deploy processes/*.bpmn
      gridflow user add zhangsan --group agent
      gridflow start complaint_handling --data '{"channel": "PHONE_95598"}'
      gridflow --user zhangsan tasks
      gridflow --user zhangsan complete 3f2a9c1e
    """
    ctx.obj = Settings(db, user, now)
    ctx.call_on_close(ctx.obj.close)


# -- process owners ----------------------------------------------------------------------------
@main.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print issues as JSON.")
@click.pass_obj
@engine_command
def lint(settings: Settings, files: tuple[str, ...], as_json: bool) -> None:
    """Check BPMN files as deploy would (XSD, safety, Camunda attributes), without deploying.

    Call activities may name processes deployed in the database (--db); lint writes nothing, does not
    create a missing database file and works on a database that still needs 'gridflow db upgrade'.

    \b
    Example:  gridflow lint processes/complaint_handling.bpmn
    """
    inspection = settings.engine(migrate=False).lint(files)
    if as_json:
        emit_json({"ok": not inspection.errors, "issues": [
            {"level": i.level, "file": i.file, "line": i.line, "element_id": i.element_id, "message": i.message}
            for i in inspection.issues], "processes": [p.key for p in inspection.processes]})
    else:
        for issue in inspection.issues:
            click.echo(str(issue), err=issue.level == "error")
        if not inspection.errors:
            click.echo(f"ok: {', '.join(p.key for p in inspection.processes)}")
    if inspection.errors:
        sys.exit(1)


@main.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the deployed definitions as JSON.")
@click.pass_obj
@engine_command
def deploy(settings: Settings, files: tuple[str, ...], as_json: bool) -> None:
    """Deploy BPMN files (all or nothing); unchanged content keeps its version.

    \b
    Example:  gridflow deploy processes/*.bpmn
    """
    definitions = settings.engine().deploy(files, user=settings.user)
    if as_json:
        emit_json([{"key": d.key, "version": d.version, "content_hash": d.content_hash} for d in definitions])
    else:
        for d in definitions:
            click.echo(f"{d.key} v{d.version} {d.content_hash[:12]}")


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@click.pass_obj
@engine_command
def definitions(settings: Settings, as_json: bool) -> None:
    """List deployed process definitions and their versions.

    \b
    Example:  gridflow definitions --json
    """
    rows = settings.engine().definitions()
    if as_json:
        emit_json(rows)
        return
    from rich.table import Table

    table = Table("key", "version", "hash", "deployed at", "by")
    for d in rows:
        table.add_row(d.key, str(d.version), d.content_hash[:12], d.deployed_at.isoformat(), d.deployed_by or "")
    console().print(table)


# -- operators -------------------------------------------------------------------------------------
@main.command()
@click.argument("key")
@click.option("--data", help="Start variables: JSON or @file.json.")
@click.option("--business-key", help="Case number (e.g. the 95598 work-order number).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_obj
@engine_command
def start(settings: Settings, key: str, data: str | None, business_key: str | None, as_json: bool) -> None:
    """Start a case of process KEY (latest deployed version).

    A process whose only start event waits for a message starts through that message, with --data as
    its data. One that only a signal or several messages start is refused: send the one you mean with
    'gridflow message send' or 'gridflow signal send'.

    \b
    Example:  gridflow start complaint_handling --business-key WO2026001 --data @case.json
    """
    instance = settings.engine().start(key, parse_data(data), business_key=business_key, user=settings.user)
    _print_step(instance, as_json)


def _print_step(instance, as_json: bool) -> None:
    if as_json:
        emit_json({"instance_id": instance.id, "status": instance.status, "ready_tasks": instance.ready_tasks})
        return
    click.echo(f"instance {instance.id} {instance.status}")
    if instance.error:
        click.echo(f"gridflow: instance {instance.id} is in error: {instance.error}", err=True)
    for task in instance.ready_tasks:
        click.echo(f"  ready: {task.id}  {task.name}  [{', '.join(task.candidate_groups)}]")


QUEUE_TABLE_ROWS = 50
SLA_STYLE = {"ok": "green", "at_risk": "yellow", "overdue": "bold red"}


@main.command()
@click.option("--group", help="Only tasks offered to this candidate group (e.g. agent).")
@click.option("--mine", is_flag=True, help="Only tasks assigned to you.")
@click.option("--overdue", is_flag=True, help="Only tasks past their SLA due time.")
@click.option("--flow", metavar="KEY", help="Only tasks of this process (e.g. complaint_handling).")
@click.option("--instance", "instance_id", metavar="ID",
              help="Only this case's tasks (id, unique prefix or case number).")
@click.option("--limit", type=click.IntRange(1, 1_000_000), default=None,
              help=f"At most this many rows (the table shows {QUEUE_TABLE_ROWS} unless told; --json shows all).")
@click.option("--json", "as_json", is_flag=True,
              help="Print the rows as an indented JSON array (the table's facts plus ids, groups and seconds).")
@click.pass_obj
@engine_command
def tasks(settings: Settings, group: str | None, mine: bool, overdue: bool, flow: str | None,
          instance_id: str | None, limit: int | None, as_json: bool) -> None:
    """Your work queue, earliest SLA due first.

    Lists the open tasks you can claim (offered to one of your groups and held by nobody) and the
    tasks assigned to you; supervisors (groups supervisor, dutySupervisor) also see the tasks of
    their groups that others hold. The countdown is the time left to the SLA due time: ok (green),
    at risk (yellow: less than 25% of the task's time or less than 4 hours left) or overdue (red).

    \b
    Examples:
      gridflow --user zhangsan tasks
      gridflow --user banzhang tasks --overdue --group agent
      gridflow --user zhangsan tasks --mine --flow complaint_handling --json
    """
    if mine and not settings.user:
        raise click.UsageError("--mine needs --user or GRIDFLOW_USER")
    engine = settings.engine()
    if instance_id:
        instance_id = engine.resolve_instance_id(instance_id)
    queue_of = settings.acting.name if settings.acting is not None else None  # None: setup mode, all tasks
    filters = dict(instance_id=instance_id, group=group, user=settings.user if mine else None, for_user=queue_of,
                   overdue=overdue, flow=flow)
    with _no_cycle_collection():
        if as_json:
            _emit_json_batches(engine.queue_rows(limit=limit, batch=JSON_BATCH, **filters))
            return
        shown = limit or QUEUE_TABLE_ROWS
        items = engine.tasks(limit=shown + 1, **filters)
    _print_queue(items[:shown], engine.clock.now(), settings.acting, len(items) > shown)


@contextmanager
def _no_cycle_collection() -> Iterator[None]:
    """Pause Python's cyclic garbage collector while the queue's rows are built.

    Ten thousand rows (work items, their lists and dicts: no reference cycles, freed by reference
    counting) set it off ~150 times for nothing, a tenth of the time ``tasks --json`` spends on them.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


JSON_BATCH = 500  # rows turned into dicts and text at a time by ``gridflow tasks --json``


def _emit_json_batches(batches: Iterable[list[dict[str, Any]]]) -> None:
    """Rows given a batch at a time, written as one JSON array indented like every ``--json`` output;
    datetimes as ISO 8601. The text is exactly that of one ``orjson.dumps`` of all the rows.

    Encoded with orjson (the standard library took a quarter of ``gridflow tasks --json`` for the ten
    thousand rows of a province's queue; orjson writes them in a tenth of that), a batch at a time:
    each batch's elements (its array text without ``[\\n`` and ``\\n]``) are written joined by
    ``,\\n``, so the rows' dicts and the 6 MB of text never all exist at once. Memory a process has
    not touched yet costs a page fault per 4 KiB on first use; the batches save ~14 MB of them.
    """
    import orjson

    first = True
    for rows in batches:
        if not rows:
            continue
        text = orjson.dumps(rows, default=str, option=orjson.OPT_INDENT_2)
        _write_utf8(b"[\n" if first else b",\n")
        _write_utf8(memoryview(text)[2:-2])
        first = False
    _write_utf8(b"[]\n" if first else b"\n]\n")


def _write_utf8(data: bytes | memoryview) -> None:
    """Write UTF-8 text to stdout exactly as ``sys.stdout.write(data.decode())`` would.

    When stdout is UTF-8 with ``\\n`` line ends (any Unix terminal, pipe or file) the bytes go straight to
    its binary buffer: decoding the 6 MB of a ten-thousand-row queue (mostly Chinese) to ``str`` and
    encoding it back took as long as building the rows' JSON. Otherwise the text layer converts them.
    """
    stream = sys.stdout
    buffer = getattr(stream, "buffer", None)
    if buffer is None or os.linesep != "\n" or codecs.lookup(stream.encoding or "ascii").name != "utf-8":
        stream.write(str(data, "utf-8"))
        return
    stream.flush()  # whatever went through the text layer before stays before
    buffer.write(data)


def _duration_text(seconds: float) -> str:
    """``2d 3h``, ``3h 05m``, ``12m`` (whole minutes; the sign is the caller's business)."""
    minutes = int(abs(seconds)) // 60
    days, rest = divmod(minutes, 24 * 60)
    hours, minutes = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes:02d}m"
    return f"{minutes}m"


def _countdown_text(clock) -> str:
    if clock.state is None:
        return "-"
    if clock.state == "overdue":
        return f"overdue {_duration_text(clock.due_in_seconds)}"
    text = _duration_text(clock.due_in_seconds)
    return f"at risk {text}" if clock.state == "at_risk" else text


def _local(instant) -> str:
    from engine.clock import SHANGHAI

    return instant.astimezone(SHANGHAI).strftime("%Y-%m-%d %H:%M") if instant else "-"


def _print_queue(items, now, acting, more: bool) -> None:
    from rich.table import Table
    from rich.text import Text

    from engine.worklist import countdown

    who = (f"queue of {acting.name} ({', '.join(acting.groups) or 'no group'})" if acting is not None
           else "open tasks (setup mode: no users yet)")
    table = Table("task", "case", "flow", "task name", "assignee", "age", "due", "countdown",
                  title=f"{who}: {len(items)}{'+' if more else ''} task(s)", title_justify="left")
    for item in items:
        clock = countdown(item.created_at, item.due_at, now)
        table.add_row(item.id[:8], item.business_key or item.instance_id[:8], item.definition_key, item.name,
                      item.assignee or "", _duration_text(clock.age_seconds), _local(item.due_at),
                      Text(_countdown_text(clock), style=SLA_STYLE.get(clock.state, "")))
    out = console()
    out.print(table)
    if more:
        out.print("more tasks not shown; use --limit N (or --json for all)")


@main.command()
@click.argument("task_id")
@click.option("--json", "as_json", is_flag=True, help="Print the work item as JSON.")
@click.pass_obj
@engine_command
def claim(settings: Settings, task_id: str, as_json: bool) -> None:
    """Take a task into your own queue.

    TASK_ID may be a unique prefix. You may claim a task offered to one of your groups; a
    task someone else holds needs a supervisor's 'gridflow reassign'.

    \b
    Example:  gridflow --user zhangsan claim 3f2a9c1e
    """
    if not settings.user:
        raise click.UsageError("claim needs --user or GRIDFLOW_USER")
    engine = settings.engine()
    item = engine.claim(engine.resolve_task_id(task_id), settings.user)
    if as_json:
        emit_json(item)
    else:
        click.echo(f"{item.id} ({item.name}) claimed by {item.assignee}")


@main.command()
@click.argument("task_id")
@click.option("--json", "as_json", is_flag=True, help="Print the work item as JSON.")
@click.pass_obj
@engine_command
def unclaim(settings: Settings, task_id: str, as_json: bool) -> None:
    """Give a task you hold back to its groups' queue.

    A supervisor may unclaim a task anyone holds.

    \b
    Example:  gridflow --user zhangsan unclaim 3f2a9c1e
    """
    engine = settings.engine()
    item = engine.unclaim(engine.resolve_task_id(task_id), settings.user)
    if as_json:
        emit_json(item)
    else:
        click.echo(f"{item.id} ({item.name}) is back in the queue of {', '.join(item.candidate_groups) or '-'}")


@main.command()
@click.argument("task_id")
@click.option("--to", "to_user", required=True, metavar="USER", help="The user who gets the task.")
@click.option("--json", "as_json", is_flag=True, help="Print the work item as JSON.")
@click.pass_obj
@engine_command
def reassign(settings: Settings, task_id: str, to_user: str, as_json: bool) -> None:
    """Give a task to another user, whoever holds it (supervisors).

    Needs membership of the supervisor or dutySupervisor group.

    \b
    Example:  gridflow --user banzhang reassign 3f2a9c1e --to lisi
    """
    engine = settings.engine()
    item = engine.reassign(engine.resolve_task_id(task_id), to_user, settings.user)
    if as_json:
        emit_json(item)
    else:
        click.echo(f"{item.id} ({item.name}) reassigned to {item.assignee}")


@main.command()
@click.argument("task_id")
@click.option("--data", help="Form data: JSON or @file.json. Without it, at a terminal, you fill in the form.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_obj
@engine_command
def complete(settings: Settings, task_id: str, data: str | None, as_json: bool) -> None:
    """Complete a task with its form data (at a terminal: field by field).

    TASK_ID may be a unique prefix; the data is checked against the form's JSON Schema.
    Without --data, at a terminal, each field of the task's form is asked in turn: its
    Chinese label with its help, the default in [brackets] (Enter keeps it, '-' empties an
    optional field), numbered choices, y/n for yes/no, date-times like 2026-12-01 09:30
    (+08:00 assumed) or 'now'. A value that breaks the form's rules is asked again with the
    reason; a summary is confirmed before anything is written. Without a terminal, --data
    is required.

    \b
    Examples:
      gridflow --user lisi complete 3f2a9c1e
      gridflow --user lisi complete 3f2a9c1e --data '{"approved": true, "amount": 150}'
      gridflow --user lisi complete 3f2a9c1e --data @review.json
    """
    values = parse_data(data) if data is not None else None
    if values is None and not sys.stdin.isatty():
        fail("complete needs --data JSON|@file.json when stdin is not a terminal "
             "(run it at a terminal to fill the form field by field)")
    engine = settings.engine()
    task_id = engine.resolve_task_id(task_id)
    if values is None:
        values = _fill_form(engine, task_id, settings.user)
    instance = engine.complete(task_id, values, user=settings.user)
    _print_step(instance, as_json)


class _ClickIO:
    """engine.prompting.PromptIO on click's prompts."""

    def ask(self, prompt: str) -> str:
        return click.prompt(prompt, default="", show_default=False, prompt_suffix=": ")

    def say(self, text: str) -> None:
        click.echo(text)

    def confirm(self, question: str) -> bool:
        return click.confirm(question, default=False)


def _fill_form(engine, task_id: str, user: str | None) -> dict[str, Any]:
    """Walk the operator through the task's form (see ``engine.prompting``); exits when not submitted."""
    from engine.prompting import FormWalk, context_lines

    engine.check_task_action(task_id, user, "complete")  # refuse before anything is typed
    view = engine.task_view(task_id)
    item = view.task
    click.echo(f"{item.name}  ·  case {item.business_key or item.instance_id[:8]}  ·  {item.definition_key}  ·  "
               f"due {_local(item.due_at)}")
    schema = view.form_schema
    if schema is None:
        if not click.confirm(f"'{item.name}' has no form; complete it without data?", default=False):
            fail("not submitted; nothing was written")
        return {}
    click.echo(f"form {item.form_key}: {schema.get('title') or ''}")
    if schema.get("description"):
        click.echo(f"  {schema['description']}")
    for label, value in context_lines(schema, view.variables):
        click.echo(f"  {label}: {value}")
    click.echo("Enter keeps the [default]; '-' empties an optional field; * = required; "
               "Ctrl-C cancels (nothing is written).")
    try:
        values = FormWalk(schema, _ClickIO(), initial=view.variables, now=engine.clock.now).run()
    except ValueError as exc:
        fail(str(exc))
    if values is None:
        fail("not submitted; nothing was written")
    return values


@main.command()
@click.argument("instance_id", metavar="TASK_ID|INSTANCE_ID")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@click.pass_obj
@engine_command
def show(settings: Settings, instance_id: str, as_json: bool) -> None:
    """Show a task (form, case data) or a case (tasks, SLA clocks, timeline).

    Ids may be given by a unique prefix; a case also by its case number (e.g. WO2026001). For a task,
    --json prints the work item with form_schema (the task's JSON Schema) and variables (the case data).

    \b
    Examples:
      gridflow show 3f2a9c1e
      gridflow show 7d0c4e7a --json
    """
    from engine.worklist import countdown

    engine = settings.engine()
    kind, instance_id = engine.resolve_id(instance_id)
    if kind == "task":
        _show_task(engine, instance_id, as_json)
        return
    instance = engine.instance(instance_id)
    history = engine.history(instance_id)
    if as_json:
        emit_json({"instance_id": instance.id, "definition_key": instance.definition_key,
                   "definition_version": instance.definition_version, "business_key": instance.business_key,
                   "status": instance.status, "error": instance.error, "variables": instance.variables,
                   "ready_tasks": instance.ready_tasks, "timers": instance.timers,
                   "clocks": _clocks(instance, engine.clock.now()),
                   "incidents": getattr(instance, "incidents", []), "history": history})
        return
    out = console()
    out.print(f"[bold]{instance.definition_key}[/] v{instance.definition_version}  {instance.id}  "
              f"case {instance.business_key or '-'}  [bold]{instance.status}[/]")
    if instance.error:
        out.print(f"[red]error:[/] {instance.error}")
    for name, value in sorted(instance.variables.items()):
        out.print(f"  {name} = {value!r}")
    now = engine.clock.now()
    for task in instance.ready_tasks:
        clock = _countdown_text(countdown(task.created_at, task.due_at, now))
        out.print(f"  ready: {task.id}  {task.name}  [{', '.join(task.candidate_groups)}]  "
                  f"assignee {task.assignee or '-'}  due {_local(task.due_at)}  {clock}", highlight=False)
    for timer in instance.timers:
        left = (timer.due_at - now).total_seconds()
        when = f"in {_duration_text(left)}" if left > 0 else f"due {_duration_text(left)} ago"
        out.print(f"  timer: {timer.bpmn_id} at {_local(timer.due_at)} ({when})", highlight=False)
    for incident in getattr(instance, "incidents", []):
        out.print(f"  [red]incident {incident.id}[/] ({incident.kind}) at {incident.bpmn_id or '-'}: {incident.message}"
                  f"  -> gridflow incident retry {incident.id} | resolve {incident.id} --data JSON",
                  markup=True, highlight=False)
    _print_history(history)


CASE_STATUSES = ("running", "error", "completed", "cancelled")


@main.command()
@click.option("--flow", metavar="KEY", help="Only cases of this process (e.g. complaint_handling).")
@click.option("--status", type=click.Choice(CASE_STATUSES), help="Only cases with this status.")
@click.option("--limit", type=click.IntRange(1, 10_000), default=50, show_default=True,
              help="At most this many cases, newest first.")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@click.pass_obj
@engine_command
def cases(settings: Settings, flow: str | None, status: str | None, limit: int, as_json: bool) -> None:
    """List cases, newest first: process, case number, status, open tasks.

    'gridflow show' takes a case's id, a unique prefix of it, or its case number.

    \b
    Examples:
      gridflow cases --flow complaint_handling --status running
      gridflow show WO2026001
    """
    rows = settings.engine().instances(key=flow, status=status, limit=limit)
    if as_json:
        emit_json([{"instance_id": i.id, "definition_key": i.definition_key, "definition_version":
                    i.definition_version, "business_key": i.business_key, "status": i.status,
                    "started_at": i.started_at, "ended_at": i.ended_at, "open_tasks": [t.name for t in i.ready_tasks],
                    "error": i.error} for i in rows])
        return
    if not rows:
        click.echo("no cases" + (f" of {flow}" if flow else "") + (f" with status {status}" if status else ""))
        return
    from rich.table import Table

    table = Table("case", "flow", "case no.", "status", "started", "ended", "open tasks")
    for i in rows:
        table.add_row(i.id[:8], f"{i.definition_key} v{i.definition_version}", i.business_key or "-", i.status,
                      _local(i.started_at), _local(i.ended_at), ", ".join(t.name for t in i.ready_tasks) or "-")
    console().print(table)


@main.command()
@click.argument("instance_id", metavar="CASE")
@click.option("--reason", required=True, help="Why the case is cancelled (kept in its history).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_obj
@engine_command
def cancel(settings: Settings, instance_id: str, reason: str, as_json: bool) -> None:
    """Cancel a running or failed case: its tasks, timers, jobs and waits end with it (supervisors).

    CASE is the case's id, a unique prefix of it, or its case number. The history keeps the reason
    and who cancelled; SLA clocks close at this instant; open incidents are resolved as cancelled.

    \b
    Example:  gridflow --user banzhang cancel WO2026001 --reason "重复受理，已并入 WO2026000"
    """
    engine = settings.engine()
    instance = engine.cancel(engine.resolve_instance_id(instance_id), reason, user=settings.user)
    _print_step(instance, as_json)


def _clocks(instance, now) -> list[dict[str, Any]]:
    """The SLA clocks of a case: due times of its open tasks and of its waiting timers."""
    from engine.worklist import countdown

    clocks = [{"kind": "task", "id": t.id, "name": t.name, "due_at": t.due_at,
               "state": countdown(t.created_at, t.due_at, now).state} for t in instance.ready_tasks]
    clocks += [{"kind": "timer", "id": t.task_id, "name": t.bpmn_id, "due_at": t.due_at,
                "state": "due" if t.due_at <= now else "waiting"} for t in instance.timers]
    return clocks


def _show_task(engine, task_id: str, as_json: bool) -> None:
    from engine.api import to_jsonable
    from engine.prompting import MISSING, display, form_fields
    from engine.worklist import countdown

    view = engine.task_view(task_id)
    item = view.task
    if as_json:
        emit_json({**to_jsonable(item), "form_schema": view.form_schema, "variables": view.variables,
                   "instance_status": view.instance_status})
        return
    from rich.table import Table
    from rich.text import Text

    clock = countdown(item.created_at, item.due_at, engine.clock.now())
    out = console()
    out.print(f"[bold]{item.name}[/]  {item.id}  [bold]{item.state}[/]", highlight=False)
    out.print(f"  case {item.business_key or '-'} ({item.instance_id}, {view.instance_status})  flow "
              f"{item.definition_key}  step {item.bpmn_id}", highlight=False)
    out.print(f"  groups {', '.join(item.candidate_groups) or '-'}  assignee {item.assignee or '-'}  "
              f"created {_local(item.created_at)}", highlight=False)
    countdown_text = Text(_countdown_text(clock), style=SLA_STYLE.get(clock.state, ""))
    out.print(Text(f"  due {_local(item.due_at)}  ") + countdown_text)
    if view.form_schema:
        table = Table("field", "label", "kind", "required", "current value",
                      title=f"form {item.form_key}: {view.form_schema.get('title') or ''}", title_justify="left")
        required = set(view.form_schema.get("required") or [])
        for f in form_fields(view.form_schema):
            kind = f.kind + (" (read-only)" if f.read_only else "")
            if f.choices:
                kind += ": " + " / ".join(title for _, title in f.choices)
            table.add_row(f.name, f.label, kind, "yes" if f.name in required else "",
                          display(f, view.variables.get(f.name, MISSING)))
        out.print(table)
    elif item.form_key:
        out.print(f"  form {item.form_key}: no schema found (any JSON object is accepted)")
    table = Table("variable", "value", title="case data", title_justify="left")
    for name, value in sorted(view.variables.items()):
        table.add_row(name, json.dumps(value, ensure_ascii=False, default=str))
    out.print(table)
    out.print(f"complete it with: gridflow complete {item.id[:8]}", highlight=False)


def _print_history(history, with_case: bool = False) -> None:
    from rich.table import Table

    table = Table("at", "event", "who", "element", "details", *(["case"] if with_case else []))
    for event in history:
        table.add_row(event.at.isoformat(), event.type, event.actor or "", event.bpmn_id or "",
                      json.dumps(event.data, ensure_ascii=False, default=str)[:120],
                      *([(event.instance_id or "-")[:8]] if with_case else []))
    console().print(table)


@main.command()
@click.argument("instance_id", required=False)
@click.option("--type", "event_type", metavar="TYPE", help="Only events of this type (e.g. refused, task_completed).")
@click.option("--actor", metavar="USER", help="Only events by this user.")
@click.option("--limit", type=click.IntRange(1, 1_000_000), default=None,
              help="Only the newest N events (default: all of a case; 200 across cases).")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@click.pass_obj
@engine_command
def history(settings: Settings, instance_id: str | None, event_type: str | None, actor: str | None,
            limit: int | None, as_json: bool) -> None:
    """Print the timeline of a case: who did what, when, with which data.

    Also available as 'gridflow timeline'.

    INSTANCE_ID may be a unique prefix or the case number. Without it, events across all cases and the system
    (deploys, user changes, refused attempts) are listed, for admins and supervisors.

    \b
    Examples:
      gridflow history 7d0c4e7a
      gridflow timeline 7d0c4e7a --json
      gridflow --user admin history --type refused
    """
    engine = settings.engine()
    if instance_id:
        events = engine.history(engine.resolve_instance_id(instance_id))
        events = [e for e in events if (not event_type or e.type == event_type) and (not actor or e.actor == actor)]
        events = events[-limit:] if limit else events
    else:
        events = engine.events(type=event_type, actor=actor, limit=limit or 200, user=settings.user)
    if as_json:
        emit_json(events)
    else:
        _print_history(events, with_case=not instance_id)


timeline = click.Command(
    "timeline", callback=history.callback, params=history.params,
    help=f"Same as 'history'. {history.help}".replace("\n\n    Also available as 'gridflow timeline'.", ""),
    short_help="Same as 'history': the timeline of a case.")
main.add_command(timeline)


@main.group()
def message() -> None:
    """Send messages to waiting cases.

    \b
    Example:  gridflow --user zhangsan message send msgCustomerFollowUp --correlate workOrderNo=WO2026001
    """


@message.command("send")
@click.argument("name")
@click.option("--correlate", "keys", multiple=True, metavar="KEY=VALUE",
              help="Correlation key (repeatable); business_key=... matches the case number.")
@click.option("--data", help="Message payload: JSON or @file.json.")
@click.option("--ttl", metavar="DURATION",
              help="When no case waits for it yet, keep the message this long (ISO 8601, e.g. PT10M) and deliver "
                   "it when one does; default GRIDFLOW_MESSAGE_TTL or PT1H; PT0S refuses instead.")
@click.option("--all", "broadcast", is_flag=True,
              help="Deliver to every matching case (broadcast); without it several matches are an error.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_obj
@engine_command
def message_send(settings: Settings, name: str, keys: tuple[str, ...], data: str | None, ttl: str | None,
                 broadcast: bool, as_json: bool) -> None:
    """Deliver message NAME to the one case waiting for it (or buffer it until one waits).

    \b
    Example:  gridflow message send msgCustomerFollowUp --correlate workOrderNo=WO2026001
              gridflow message send msgAreaRestored --correlate areaCode=A12 --all
    """
    correlation = {}
    for pair in keys:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.UsageError(f"--correlate expects KEY=VALUE, got '{pair}'")
        correlation[key] = value
    result = settings.engine().correlate(name, correlation, parse_data(data), user=settings.user, ttl=ttl,
                                         broadcast=broadcast)
    if isinstance(result, list):
        if as_json:
            emit_json([{"instance_id": i.id, "status": i.status, "ready_tasks": i.ready_tasks} for i in result])
            return
        click.echo(f"message {name} delivered to {len(result)} case(s)")
        for instance in result:
            _print_step(instance, False)
    elif getattr(result, "buffered", False):
        if as_json:
            emit_json({"buffered": True, "message_id": result.id, "expires_at": result.expires_at})
            return
        click.echo(f"message {name} buffered as #{result.id} until {result.expires_at.isoformat()}: "
                   "no case waits for it yet")
    else:
        _print_step(result, as_json)


@message.command("list")
@click.option("--state", type=click.Choice(["pending", "delivered", "expired"]), help="Only messages in this state.")
@click.option("--name", help="Only this message name.")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@click.pass_obj
@engine_command
def message_list(settings: Settings, state: str | None, name: str | None, as_json: bool) -> None:
    """List buffered messages (sent before any case waited for them), newest first.

    \b
    Example:  gridflow message list --state pending
    """
    rows = settings.engine().messages(state=state, name=name)
    if as_json:
        emit_json(rows)
        return
    from rich.table import Table

    table = Table("#", "message", "correlation", "state", "sent at", "expires at", "delivered to")
    for m in rows:
        table.add_row(str(m.id), m.name, ", ".join(f"{k}={v}" for k, v in m.correlation.items()), m.state,
                      m.created_at.isoformat(), m.expires_at.isoformat(), m.delivered_to or "")
    console().print(table)


# -- admins ----------------------------------------------------------------------------------------
@main.command("run-due")
@click.option("--json", "as_json", is_flag=True, help="Print the count as JSON.")
@click.pass_obj
@engine_command
def run_due(settings: Settings, as_json: bool) -> None:
    """Fire every timer that is due now (use --now to act at another instant).

    \b
    Example:  gridflow --now 2026-12-03T09:00:00+08:00 run-due
    """
    fired = settings.engine().run_due()
    if as_json:
        emit_json({"fired": fired})
    else:
        click.echo(f"fired {fired} timer(s)")


@main.group()
def db() -> None:
    """Database schema and first set-up (admins).

    \b
    Example:
      gridflow db upgrade
      gridflow db init --admin wangwu
    """


@db.command("upgrade")
@click.pass_obj
@engine_command
def db_upgrade(settings: Settings) -> None:
    """Apply pending schema migrations.

    Runs with the database's own credentials; no --user is needed.

    \b
    Example:  gridflow --db postgresql+psycopg://gridflow@localhost/gridflow db upgrade
    """
    settings.engine(migrate=False).upgrade_schema()
    click.echo("database schema is current")


@db.command("init")
@click.option("--admin", "admin_name", required=True, metavar="NAME", help="Name of the first admin.")
@click.option("--group", "groups", multiple=True, metavar="GROUP", help="A further group of the admin (repeatable).")
@click.option("--display-name", help="The admin's full name, e.g. 王五.")
@click.pass_obj
@engine_command
def db_init(settings: Settings, admin_name: str, groups: tuple[str, ...], display_name: str | None) -> None:
    """Create the first admin on a fresh database (refused once users exist).

    Creates the schema when needed; the admin is a member of the admin group.

    From then on identities are on: every command except lint, db init and db upgrade needs
    --user (or GRIDFLOW_USER) naming a known user.

    \b
    Example:  gridflow --db sqlite:///gridflow.db db init --admin wangwu --display-name 王五
    """
    created = settings.engine().init_db(admin_name, groups, display_name)
    click.echo(f"created admin {created.name} (groups: {', '.join(created.groups)}); identities are on: "
               f"act with --user {created.name} or GRIDFLOW_USER={created.name}")


@main.group("user")
def user_group() -> None:
    """Manage users and their groups (admins).

    Groups are the roles the lanes' candidate groups name (agent, supervisor, ...).

    \b
    Example:
      gridflow --user wangwu user add zhangsan --group agent --display-name 张三
      gridflow --user wangwu user list
    """


@user_group.command("add")
@click.argument("name")
@click.option("--group", "groups", multiple=True, metavar="GROUP",
              help="A group of the user, e.g. agent, revisitAgent, supervisor, admin (repeatable).")
@click.option("--display-name", help="The user's full name, e.g. 张三.")
@click.option("--json", "as_json", is_flag=True, help="Print the user as JSON.")
@click.pass_obj
@engine_command
def user_add(settings: Settings, name: str, groups: tuple[str, ...], display_name: str | None,
             as_json: bool) -> None:
    """Add user NAME with their groups.

    \b
    Example:  gridflow --user wangwu user add zhangsan --group agent --group revisitAgent --display-name 张三
    """
    created = settings.engine().add_user(name, groups, display_name, user=settings.user)
    if as_json:
        emit_json(created)
    else:
        click.echo(f"added {created.name} (groups: {', '.join(created.groups) or 'none'})")


@user_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@click.pass_obj
@engine_command
def user_list(settings: Settings, as_json: bool) -> None:
    """List users and their groups.

    \b
    Example:  gridflow --user wangwu user list --json
    """
    users = settings.engine().users()
    if as_json:
        emit_json(users)
        return
    from rich.table import Table

    table = Table("user", "name", "groups", "since")
    for u in users:
        table.add_row(u.name, u.display_name or "", ", ".join(u.groups), _local(u.created_at))
    console().print(table)
    if not users:
        click.echo("no users: setup mode (no identity checks) until 'gridflow db init --admin NAME'")


@user_group.command("groups")
@click.argument("name")
@click.option("--add", "add", multiple=True, metavar="GROUP", help="Add this group (repeatable).")
@click.option("--remove", "remove", multiple=True, metavar="GROUP", help="Remove this group (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Print the user as JSON.")
@click.pass_obj
@engine_command
def user_groups(settings: Settings, name: str, add: tuple[str, ...], remove: tuple[str, ...], as_json: bool) -> None:
    """Add or remove groups of user NAME.

    \b
    Example:  gridflow --user wangwu user groups zhangsan --add supervisor --remove agent
    """
    if not add and not remove:
        raise click.UsageError("give --add GROUP and/or --remove GROUP")
    changed = settings.engine().change_user_groups(name, add, remove, user=settings.user)
    if as_json:
        emit_json(changed)
    else:
        click.echo(f"{changed.name}: groups {', '.join(changed.groups) or 'none'}")



# -- signals -----------------------------------------------------------------------------------------
@main.group()
def signal() -> None:
    """Broadcast signals to every waiting case.

    \b
    Example:  gridflow --user dispatcher1 signal send areaOutage --data '{"areaCode": "A12"}'
    """


@signal.command("send")
@click.argument("name")
@click.option("--data", help="Signal payload: JSON or @file.json (merged into each catching case; a started "
                                   "case's variables).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_obj
@engine_command
def signal_send(settings: Settings, name: str, data: str | None, as_json: bool) -> None:
    """Send signal NAME to every case waiting for it (catch or boundary events); processes whose start
    event catches it (signal start events) each get a new case, listed last.

    \b
    Example:  gridflow signal send areaOutage --data '{"areaCode": "A12"}'
    """
    delivered = settings.engine().signal(name, parse_data(data), user=settings.user)
    if as_json:
        emit_json([{"instance_id": i.id, "status": i.status, "ready_tasks": i.ready_tasks} for i in delivered])
        return
    click.echo(f"signal {name} delivered to {len(delivered)} case(s)")
    for instance in delivered:
        click.echo(f"  {instance.id} {instance.status}")


# -- supervisors -------------------------------------------------------------------------------------
@main.command()
@click.option("--flow", help="Only this process key.")
@click.option("--group", help="Only clocks of tasks offered to this group.")
@click.option("--severity", help="Only this severity (e.g. URGENT).")
@click.option("--state", "states", multiple=True,
              type=click.Choice(["on_track", "at_risk", "breached", "paused", "met", "missed", "cancelled", "open",
                                 "closed"]),
              help="Only clocks in this state (repeatable). Default: at_risk and breached.")
@click.option("--all", "show_all", is_flag=True, help="Every open clock, on track ones included.")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@click.pass_obj
@engine_command
def sla(settings: Settings, flow: str | None, group: str | None, severity: str | None, states: tuple[str, ...],
        show_all: bool, as_json: bool) -> None:
    """List SLA clocks at risk or breached, earliest due first.

    \b
    Example:  gridflow sla --flow complaint_handling --severity URGENT
              gridflow sla --group complaintHandler --json
    """
    wanted = list(states) or (["open"] if show_all else ["at_risk", "breached"])
    clocks = settings.engine().sla_clocks(flow=flow, group=group, severity=severity, state=wanted)
    if as_json:
        emit_json(clocks)
        return
    from rich.table import Table

    table = Table("case", "flow", "step", "groups", "severity", "state", "due", "remaining", "budget")
    for c in clocks:
        remaining = "" if c.remaining_seconds is None else _span(c.remaining_seconds)
        state = c.state + (" (paused)" if c.paused else "")
        table.add_row(c.business_key or c.instance_id[:8], c.flow, c.name, ",".join(c.groups), c.severity or "",
                      state, c.due_at.isoformat(), remaining, c.budget)
    console().print(table)


def _span(seconds: int) -> str:
    sign, seconds = ("-" if seconds < 0 else ""), abs(seconds)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    return f"{sign}{days}d{hours:02d}h{rest // 60:02d}m" if days else f"{sign}{hours}h{rest // 60:02d}m"


@main.command()
@click.option("--instance", "instance_id", help="Only this case's incidents.")
@click.option("--all", "show_all", is_flag=True, help="Include retried and resolved incidents.")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@click.pass_obj
@engine_command
def incidents(settings: Settings, instance_id: str | None, show_all: bool, as_json: bool) -> None:
    """List incidents: failed steps and async service tasks that ran out of retries.

    \b
    Example:  gridflow incidents
              gridflow incident retry 12
    """
    rows = settings.engine().incidents(instance_id=instance_id, open_only=not show_all)
    if as_json:
        emit_json(rows)
        return
    from rich.table import Table

    table = Table("id", "case", "flow", "step", "kind", "attempts", "opened", "status", "message")
    for i in rows:
        status = "open" if i.resolved_at is None else f"{i.resolution} by {i.resolved_by or '-'}"
        table.add_row(str(i.id), i.business_key or i.instance_id[:8], i.definition_key or "", i.bpmn_id or "",
                      i.kind, "" if i.attempts is None else str(i.attempts), i.created_at.isoformat(), status,
                      i.message)
    console().print(table)


@main.group()
def incident() -> None:
    """Repair an incident: run the failed step again, or complete it by hand.

    \b
    Example:  gridflow --user banzhang incident retry 12
    """


@incident.command("retry")
@click.argument("incident_id", type=int)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_obj
@engine_command
def incident_retry(settings: Settings, incident_id: int, as_json: bool) -> None:
    """Run the failed step of incident INCIDENT_ID again (an async job: one more attempt, due now).

    \b
    Example:  gridflow --user banzhang incident retry 12
    """
    instance = settings.engine().retry_incident(incident_id, user=settings.user)
    _print_step(instance, as_json)


@incident.command("resolve")
@click.argument("incident_id", type=int)
@click.option("--data", help="The task's result: JSON or @file.json (stands in for the handler's output).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_obj
@engine_command
def incident_resolve(settings: Settings, incident_id: int, data: str | None, as_json: bool) -> None:
    """Complete the failed task of incident INCIDENT_ID with --data instead of running its handler.

    \b
    Example:  gridflow --user banzhang incident resolve 12 --data '{"billChecked": true}'
    """
    instance = settings.engine().resolve_incident(incident_id, parse_data(data), user=settings.user)
    _print_step(instance, as_json)


# -- admins: the worker ------------------------------------------------------------------------------
@main.command()
@click.option("--once", is_flag=True, help="Run what is due now (and what that makes due), then exit.")
@click.option("--poll", type=click.FloatRange(min=0.01), default=5.0, show_default=True,
              help="Seconds to wait between rounds when nothing is due.")
@click.option("--id", "worker_id", help="Worker name in job locks and log lines (default host:pid).")
@click.option("--lock-ttl", type=click.FloatRange(min=0.1), default=None,
              help="Seconds a job stays locked to this worker without a heartbeat before another worker may "
                   "take it over (default GRIDFLOW_LOCK_TTL or 300).")
@click.option("--batch", type=click.IntRange(1, 1000), default=10, show_default=True,
              help="Jobs acquired per round.")
@click.pass_obj
@engine_command
def worker(settings: Settings, once: bool, poll: float, worker_id: str | None, lock_ttl: float | None,
           batch: int) -> None:
    """Fire timers, run async service tasks, deliver messages, watch SLA clocks; one log line per action.

    Stops cleanly on SIGINT/SIGTERM (the current item finishes). Run as many as you like:
    SQLite serializes them, PostgreSQL runs them in parallel.

    \b
    Example:  gridflow worker --poll 2 --id worker-a
              gridflow worker --once
    """
    from engine.worker import Worker

    runner = Worker(settings.engine(), worker_id=worker_id, poll=poll, lock_ttl=lock_ttl, batch=batch)
    runner.install_signal_handlers()
    runner.run(once=once)
    if once and runner.errors:
        sys.exit(1)


@main.command()
@click.option("--instance", "instance_id", help="Only this case's jobs.")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@click.pass_obj
@engine_command
def jobs(settings: Settings, instance_id: str | None, as_json: bool) -> None:
    """List async service-task jobs: waiting, held by a worker, or failed (incident).

    \b
    Example:  gridflow jobs --json
    """
    rows = settings.engine().jobs(instance_id=instance_id)
    if as_json:
        emit_json(rows)
        return
    from rich.table import Table

    table = Table("job", "case", "step", "topic", "state", "attempts", "left", "next run", "locked by", "last error")
    for j in rows:
        table.add_row(j.id[:8], j.instance_id[:8], j.bpmn_id, j.topic, j.state, str(j.attempts), str(j.retries_left),
                      j.next_run_at.isoformat(), j.locked_by or "", (j.last_error or "")[:60])
    console().print(table)


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@click.pass_obj
@engine_command
def schedules(settings: Settings, as_json: bool) -> None:
    """List timer start events (e.g. a monthly check) and when the worker starts each next.

    \b
    Example:  gridflow schedules
    """
    rows = settings.engine().timer_schedules()
    if as_json:
        emit_json(rows)
        return
    from rich.table import Table

    table = Table("process", "start event", "timer", "next", "fired", "last instance")
    for r in rows:
        table.add_row(r["process"], r["start_event"], r["timer"],
                      r["next_due_at"].isoformat() if r["next_due_at"] else "done", str(r["fired"]),
                      r["last_instance_id"] or "")
    console().print(table)


@main.command()
@click.option("--cases", type=click.IntRange(1, 100000), default=300, show_default=True,
              help="Customer cases arriving during the simulated period.")
@click.option("--days", type=click.IntRange(1, 60), default=7, show_default=True, help="Simulated days.")
@click.option("--seed", type=int, default=7, show_default=True, help="Random seed (same seed, same run).")
@click.option("--late", "late_share", type=click.FloatRange(0, 1), default=0.15, show_default=True,
              help="Share of tasks operators finish after their due time.")
@click.option("--db-path", type=click.Path(dir_okay=False), default="gridflow-demo.db", show_default=True,
              help="SQLite file for the demo (replaced on each run).")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def demo(cases: int, days: int, seed: int, late_share: float, db_path: str, as_json: bool) -> None:
    """Simulate a service centre week on a fresh SQLite database and print a summary.

    \b
    Example:  gridflow demo --cases 300 --seed 7
    """
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from engine.demo import FLOW_LABELS, run_demo

    with Progress(TextColumn("模拟一周服务中心"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                  TimeElapsedColumn(), disable=as_json, transient=False) as bar:
        job = bar.add_task("demo", total=1)

        def progress(done: int, total: int) -> None:
            bar.update(job, completed=done, total=total)

        report = run_demo(Path(db_path), cases=cases, seed=seed, days=days, late_share=late_share,
                          progress=progress)
    summary = {
        "database": db_path, "simulated_from": report.started_at, "simulated_to": report.ended_at,
        "flows": {key: {"label": FLOW_LABELS[key], "cases": report.cases[key], "completed": report.completed[key],
                        "open": report.open[key]} for key in report.cases},
        "tasks_completed": report.tasks_done, "sla_met_percent": round(report.sla_met_percent, 1),
        "reminders": report.reminders, "supervision_tasks": report.supervisions, "escalations": report.escalations,
        "complaints_by_severity": dict(report.severities), "errors": dict(report.errors),
        "processes_not_deployed": report.skipped,
    }
    if as_json:
        emit_json(summary)
        return
    from rich.table import Table

    out = console()
    table = Table("流程 flow", "案例 cases", "办结 completed", "在途 open", title="按流程统计")
    for key, row in summary["flows"].items():
        table.add_row(f"{row['label']} {key}", str(row["cases"]), str(row["completed"]), str(row["open"]))
    out.print(table)
    severity = ", ".join(f"{name} {count}" for name, count in sorted(report.severities.items())) or "-"
    out.print(f"已完成待办 tasks completed: {report.tasks_done}   按时率 SLA met: {summary['sla_met_percent']}%")
    out.print(f"催办 reminders: {report.reminders}   督办 supervision tasks: {report.supervisions}   "
              f"升级 escalations: {report.escalations}")
    out.print(f"投诉等级 complaints by severity: {severity}")
    if report.errors:
        out.print(f"[yellow]refused or failed operator actions: {dict(report.errors)}[/]")
    for line in report.skipped:
        out.print(f"[yellow]not deployed: {line}[/]")
    out.print(f"database: {db_path}  (inspect with: gridflow --db sqlite:///{db_path} tasks)")


#: True when ``gridflow`` runs as a process of its own (the console script, ``python -m cli``), not
#: called in-process by a host program or a test runner, whose objects must not be frozen (Settings.engine)
_OWN_PROCESS = False


def run() -> None:
    """The ``gridflow`` console script: :func:`main` in a process of its own."""
    global _OWN_PROCESS
    _OWN_PROCESS = True
    main(prog_name="gridflow")


if __name__ == "__main__":  # pragma: no cover
    run()
