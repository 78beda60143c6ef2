"""How fast is ``gridflow tasks --json`` on a database with 10,000 open tasks?

Run on demand from the repository root (not a test)::

    python -m bench.bench_cli_startup [--tasks 10000] [--repeat 9] [--keep DIR]

It builds a SQLite database in a temporary directory: the first admin and an operator
(``gridflow db init`` / ``user add`` through the Engine), one small process deployed and started
through the Engine, then 10,000 open work items (with their cases) bulk-inserted through the
store by copying the first case's rows, due times spread over two weeks. Then it times, side by
side in the same run (alternating, ``--repeat`` times each, median):

- ``python -c "import sqlalchemy, SpiffWorkflow"`` — the floor: the libraries any command needs;
- ``gridflow --user agent1 tasks --json`` — the operator's whole queue, all 10,000 rows;
- the floor with ``gc.freeze()`` after its imports, as the ``gridflow`` script does after its own: the
  interpreter's final collection then skips the imported modules' objects (~50 ms), so the second
  ratio printed compares like with like;

and prints both and their ratio (target: at most 1.5×). ``tasks --json --limit 50``, ``--help`` and
``python -m cli tasks --json`` are timed as well, for reference. The command runs this checkout's code
(see :func:`gridflow_command`); its path is printed.

Before timing it compiles gridflow's own modules to bytecode (``compileall``, into the usual
``__pycache__`` directories), as ``pip install`` does: the floor's libraries are installed with their
bytecode, and with ``PYTHONDONTWRITEBYTECODE`` set (as on the development VM) an editable checkout
would otherwise re-compile ``cli.py`` and ``engine/`` from source at every run (~40 ms of the
difference).
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET = 1.5

BPMN = """<?xml version="1.0" encoding="UTF-8"?>
<bpmn:definitions xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL"
    xmlns:camunda="http://camunda.org/schema/1.0/bpmn" id="benchDefs" targetNamespace="http://gridflow.bench">
  <bpmn:process id="bench_queue" name="队列基准" isExecutable="true">
    <bpmn:startEvent id="benchStart"><bpmn:outgoing>b1</bpmn:outgoing></bpmn:startEvent>
    <bpmn:userTask id="answerCustomer" name="答复客户" camunda:candidateGroups="agent" camunda:dueDate="P2D">
      <bpmn:incoming>b1</bpmn:incoming><bpmn:outgoing>b2</bpmn:outgoing>
    </bpmn:userTask>
    <bpmn:endEvent id="benchEnd"><bpmn:incoming>b2</bpmn:incoming></bpmn:endEvent>
    <bpmn:sequenceFlow id="b1" sourceRef="benchStart" targetRef="answerCustomer"/>
    <bpmn:sequenceFlow id="b2" sourceRef="answerCustomer" targetRef="benchEnd"/>
  </bpmn:process>
</bpmn:definitions>
"""


def build(directory: Path, count: int) -> str:
    """A SQLite database with ``count`` open tasks offered to group ``agent``; returns its URL."""
    sys.path.insert(0, str(ROOT))
    from sqlalchemy import insert

    from engine.api import Engine
    from engine.store import InstanceRow, WorkItemGroupRow, WorkItemRow

    url = f"sqlite:///{directory / 'bench.db'}"
    bpmn = directory / "bench_queue.bpmn"
    bpmn.write_text(BPMN, encoding="utf-8")
    engine = Engine(url)
    try:
        engine.init_db("admin")
        engine.add_user("agent1", ["agent"], user="admin")
        engine.deploy([bpmn], user="admin")
        first = engine.start("bench_queue", {"amount": 1}, business_key="WO0000000", user="agent1")
        with engine.store.write() as session:
            instance = session.get(InstanceRow, first.id)
            item = session.get(WorkItemRow, first.ready_tasks[0].id)
            start = item.created_at
            instances, items, groups = [], [], []
            for n in range(1, count):
                instance_id, task_id = str(uuid.uuid4()), str(uuid.uuid4())
                created = start - timedelta(minutes=n % 2880)
                instances.append({"id": instance_id, "definition_id": instance.definition_id,
                                  "business_key": f"WO{n:07d}", "status": "running",
                                  "state_json": instance.state_json.replace(first.id, instance_id),
                                  "variables": instance.variables, "started_at": created, "started_by": "agent1",
                                  "rev": 1})
                items.append({"id": task_id, "instance_id": instance_id, "definition_key": item.definition_key,
                              "bpmn_id": item.bpmn_id, "name": item.name, "lane": item.lane,
                              "candidate_groups": item.candidate_groups, "assignee": "agent1" if n % 10 == 0 else None,
                              "form_key": item.form_key, "due_at": created + timedelta(days=2, minutes=n % 20160),
                              "state": "open", "created_at": created, "business_key": f"WO{n:07d}"})
                groups.append({"work_item_id": task_id, "group_name": "agent"})
            session.execute(insert(InstanceRow), instances)
            session.execute(insert(WorkItemRow), items)
            session.execute(insert(WorkItemGroupRow), groups)
        assert len(engine.tasks(for_user="agent1")) == count
    finally:
        engine.close()
    return url


def gridflow_command(env: dict[str, str]) -> list[str]:
    """The installed console script next to this Python (not a pyenv shim) when it runs this checkout's
    ``cli.py``, else ``python -m cli`` (run in ROOT, which it then imports from).

    The script imports ``cli`` through ``sys.path``: ``PYTHONPATH`` (ROOT, set by the caller) comes before
    an editable install's finder, which may point at another checkout. ``python -P`` resolves the import
    the same way (no script or current directory in front), so it tells which file the script would run.
    """
    script = Path(sys.executable).parent / "gridflow"
    found = subprocess.run([sys.executable, "-P", "-c", "import cli; print(cli.__file__)"], env=env,
                           cwd=str(ROOT), capture_output=True, text=True, check=True).stdout.strip()
    if script.is_file() and Path(found).resolve() == ROOT / "cli.py":
        return [str(script)]
    return [sys.executable, "-m", "cli"]


def timed(command: list[str], env: dict[str, str]) -> float:
    began = time.perf_counter()
    subprocess.run(command, env=env, cwd=str(ROOT), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   check=True)
    return time.perf_counter() - began


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=10_000, help="open tasks in the database (default 10000)")
    parser.add_argument("--repeat", type=int, default=9, help="runs of each command (default 9)")
    parser.add_argument("--keep", type=Path, help="build the database in this directory and keep it")
    args = parser.parse_args()

    directory = args.keep or Path(tempfile.mkdtemp(prefix="gridflow-bench-"))
    directory.mkdir(parents=True, exist_ok=True)
    try:
        began = time.perf_counter()
        url = build(directory, args.tasks)
        print(f"database: {url} with {args.tasks} open tasks (built in {time.perf_counter() - began:.1f} s)")
        env = {**os.environ, "GRIDFLOW_DB": url, "GRIDFLOW_USER": "agent1",
               "GRIDFLOW_NOW": datetime.now(UTC).isoformat(),
               "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
        for source in ("cli.py", "engine", "handlers", "forms", "processes"):
            path = ROOT / source
            compiled = (compileall.compile_file(path, quiet=1) if path.is_file()
                        else compileall.compile_dir(path, quiet=1))
            assert compiled, f"could not compile {path} to bytecode"
        gridflow = gridflow_command(env)
        check = subprocess.run([*gridflow, "tasks", "--json"], env=env, cwd=str(ROOT), capture_output=True,
                               text=True, check=True)
        rows = json.loads(check.stdout)
        assert len(rows) == args.tasks, f"expected {args.tasks} rows, got {len(rows)}"

        commands = {
            "floor": [sys.executable, "-c", "import sqlalchemy, SpiffWorkflow"],
            "frozen": [sys.executable, "-c", "import gc, sqlalchemy, SpiffWorkflow; gc.freeze()"],
            "tasks": [*gridflow, "tasks", "--json"],
            "tasks50": [*gridflow, "tasks", "--json", "--limit", "50"],
            "help": [*gridflow, "--help"],
            "module": [sys.executable, "-m", "cli", "tasks", "--json"],
        }
        samples: dict[str, list[float]] = {name: [] for name in commands}
        for command in commands.values():  # warm the OS caches and .pyc files once
            timed(command, env)
        for _ in range(args.repeat):
            for name, command in commands.items():
                samples[name].append(timed(command, env))
        median = {name: statistics.median(values) for name, values in samples.items()}
        ratio = median["tasks"] / median["floor"]
        print(f"runs: {args.repeat} of each, alternating; median wall time; command: {' '.join(gridflow)} "
              f"(runs {ROOT / 'cli.py'})")
        print(f"  python -c 'import sqlalchemy, SpiffWorkflow'   {median['floor'] * 1000:7.0f} ms")
        print(f"  the same, then gc.freeze() as gridflow does   {median['frozen'] * 1000:7.0f} ms   "
              f"({median['frozen'] / median['floor']:.2f}x)")
        print(f"  gridflow tasks --json ({args.tasks} rows)       {median['tasks'] * 1000:7.0f} ms")
        print(f"  gridflow tasks --json --limit 50              {median['tasks50'] * 1000:7.0f} ms   "
              f"({median['tasks50'] / median['floor']:.2f}x)")
        print(f"  gridflow --help                               {median['help'] * 1000:7.0f} ms   "
              f"({median['help'] / median['floor']:.2f}x)")
        print(f"  python -m cli tasks --json                    {median['module'] * 1000:7.0f} ms   "
              f"({median['module'] / median['floor']:.2f}x; no console-script wrapper)")
        verdict = "within" if ratio <= TARGET else "ABOVE"
        print(f"ratio tasks --json / import floor: {ratio:.2f}x ({verdict} the {TARGET}x target)")
        print(f"like for like (both skip collecting the imported modules at exit): "
              f"{median['tasks'] / median['frozen']:.2f}x")
        return 0
    finally:
        if args.keep is None:
            shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
