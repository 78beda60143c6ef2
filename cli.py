"""gridflow command line: parse, call the Engine, render (rich tables, or one JSON document with --json).

Thin by design: every command goes through ``engine.api.Engine``; nothing here touches the
database. Heavy imports (SQLAlchemy, SpiffWorkflow) happen inside commands, so ``--help`` and
completion stay fast. Errors are one line on stderr with exit code 1 (user errors) or 2 (usage).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any

import click

SECTIONS = {
    "operators": ["tasks", "claim", "complete", "show", "history", "start", "message"],
    "process owners": ["lint", "deploy", "definitions"],
    "admins": ["db", "run-due", "demo"],
}


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

    def engine(self):
        if self._engine is None:
            from engine.api import DEFAULT_URL, Engine
            from engine.clock import FixedClock, SystemClock, parse_instant

            clock = SystemClock()
            if self.now:
                try:
                    clock = FixedClock(parse_instant(self.now))
                except ValueError as exc:
                    raise click.UsageError(f"--now: {exc}") from None
            self._engine = Engine(self.db or DEFAULT_URL, clock=clock)
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
            return function(*args, **kwargs)
        except GridflowError as exc:
            fail(str(exc))
        except ImportError as exc:
            fail(str(exc))

    return wrapper


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

    \b
    Example:
      gridflow deploy processes/*.bpmn
      gridflow start complaint_handling --data '{"channel": "PHONE_95598"}'
      gridflow tasks --json
    """
    ctx.obj = Settings(db, user, now)


# -- process owners ----------------------------------------------------------------------------
@main.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print issues as JSON.")
@click.pass_obj
@engine_command
def lint(settings: Settings, files: tuple[str, ...], as_json: bool) -> None:
    """Check BPMN files as deploy would (XSD, safety, Camunda attributes), without deploying.

    \b
    Example:  gridflow lint processes/complaint_handling.bpmn
    """
    inspection = settings.engine().lint(files)
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


@main.command()
@click.option("--instance", "instance_id", help="Only this instance's tasks.")
@click.option("--group", help="Only tasks for this candidate group.")
@click.option("--mine", is_flag=True, help="Only tasks assigned to the acting user (--user).")
@click.option("--limit", type=click.IntRange(1, 100000), default=None, help="At most this many rows.")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@click.pass_obj
@engine_command
def tasks(settings: Settings, instance_id: str | None, group: str | None, mine: bool, limit: int | None,
          as_json: bool) -> None:
    """List open work items, earliest due first.

    \b
    Example:  gridflow tasks --group agent
    """
    if mine and not settings.user:
        raise click.UsageError("--mine needs --user or GRIDFLOW_USER")
    items = settings.engine().tasks(instance_id=instance_id, group=group, user=settings.user if mine else None,
                                    limit=limit)
    if as_json:
        emit_json(items)
        return
    from rich.table import Table

    table = Table("task", "case", "flow", "task name", "groups", "assignee", "due")
    for item in items:
        table.add_row(item.id[:8], item.business_key or item.instance_id[:8], item.definition_key, item.name,
                      ",".join(item.candidate_groups), item.assignee or "",
                      item.due_at.isoformat() if item.due_at else "")
    console().print(table)


@main.command()
@click.argument("task_id")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@click.pass_obj
@engine_command
def claim(settings: Settings, task_id: str, as_json: bool) -> None:
    """Take a task into your own queue.

    \b
    Example:  gridflow --user zhangsan claim 3f2a9c1e-...
    """
    if not settings.user:
        raise click.UsageError("claim needs --user or GRIDFLOW_USER")
    item = settings.engine().claim(task_id, settings.user)
    if as_json:
        emit_json(item)
    else:
        click.echo(f"{item.id} claimed by {item.assignee}")


@main.command()
@click.argument("task_id")
@click.option("--data", help="Form data: JSON or @file.json.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_obj
@engine_command
def complete(settings: Settings, task_id: str, data: str | None, as_json: bool) -> None:
    """Complete a ready task with its form data (validated against the form's schema).

    \b
    Example:  gridflow --user lisi complete 3f2a9c1e-... --data '{"approved": true}'
    """
    instance = settings.engine().complete(task_id, parse_data(data), user=settings.user)
    _print_step(instance, as_json)


@main.command()
@click.argument("instance_id")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@click.pass_obj
@engine_command
def show(settings: Settings, instance_id: str, as_json: bool) -> None:
    """Show a case: status, variables, ready tasks, timers and history.

    \b
    Example:  gridflow show 7d0c4e7a-... --json
    """
    engine = settings.engine()
    instance = engine.instance(instance_id)
    history = engine.history(instance_id)
    if as_json:
        emit_json({"instance_id": instance.id, "definition_key": instance.definition_key,
                   "definition_version": instance.definition_version, "business_key": instance.business_key,
                   "status": instance.status, "error": instance.error, "variables": instance.variables,
                   "ready_tasks": instance.ready_tasks, "timers": instance.timers, "history": history})
        return
    out = console()
    out.print(f"[bold]{instance.definition_key}[/] v{instance.definition_version}  {instance.id}  "
              f"case {instance.business_key or '-'}  [bold]{instance.status}[/]")
    if instance.error:
        out.print(f"[red]error:[/] {instance.error}")
    for name, value in sorted(instance.variables.items()):
        out.print(f"  {name} = {value!r}")
    for task in instance.ready_tasks:
        out.print(f"  ready: {task.id}  {task.name}  due {task.due_at.isoformat() if task.due_at else '-'}")
    for timer in instance.timers:
        out.print(f"  timer: {timer.bpmn_id} at {timer.due_at.isoformat()}")
    _print_history(history)


def _print_history(history) -> None:
    from rich.table import Table

    table = Table("at", "event", "who", "element", "details")
    for event in history:
        table.add_row(event.at.isoformat(), event.type, event.actor or "", event.bpmn_id or "",
                      json.dumps(event.data, ensure_ascii=False)[:120])
    console().print(table)


@main.command()
@click.argument("instance_id")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@click.pass_obj
@engine_command
def history(settings: Settings, instance_id: str, as_json: bool) -> None:
    """Print the full timeline of a case (who did what, when, with which data).

    \b
    Example:  gridflow history 7d0c4e7a-...
    """
    events = settings.engine().history(instance_id)
    if as_json:
        emit_json(events)
    else:
        _print_history(events)


@main.group()
def message() -> None:
    """Send messages to waiting cases."""


@message.command("send")
@click.argument("name")
@click.option("--correlate", "keys", multiple=True, metavar="KEY=VALUE",
              help="Correlation key (repeatable); business_key=... matches the case number.")
@click.option("--data", help="Message payload: JSON or @file.json.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_obj
@engine_command
def message_send(settings: Settings, name: str, keys: tuple[str, ...], data: str | None, as_json: bool) -> None:
    """Deliver message NAME to the one case waiting for it.

    \b
    Example:  gridflow message send msgCustomerFollowUp --correlate workOrderNo=WO2026001
    """
    correlation = {}
    for pair in keys:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.UsageError(f"--correlate expects KEY=VALUE, got '{pair}'")
        correlation[key] = value
    instance = settings.engine().correlate(name, correlation, parse_data(data), user=settings.user)
    _print_step(instance, as_json)


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
    """Database schema management."""


@db.command("upgrade")
@click.pass_obj
@engine_command
def db_upgrade(settings: Settings) -> None:
    """Apply pending schema migrations.

    \b
    Example:  gridflow --db postgresql+psycopg://gridflow@localhost/gridflow db upgrade
    """
    from engine.api import DEFAULT_URL
    from engine.store import Store

    store = Store(settings.db or DEFAULT_URL)
    store.upgrade()
    click.echo("database schema is current")



if __name__ == "__main__":  # pragma: no cover
    sys.exit(main(prog_name="gridflow"))
