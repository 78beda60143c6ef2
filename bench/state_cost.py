"""What storing SpiffWorkflow's state costs in benchmark 1, and what ratio the engine could reach without it.

An experiment, not a mode of the engine: the same cases as ``bench.engine_overhead`` (complaint flow,
Engine API on a WAL SQLite file, SpiffWorkflow alone in memory as the baseline), with
``Runtime.dump`` replaced for the run in two ways that break persistence on purpose:

- ``engine``: as shipped;
- ``text not stored``: the state is still dumped every command, but a 32-character key is stored in
  ``instance.state_json`` instead of the ~57 KB text (the cost of writing the text into SQLite);
- ``no state``: nothing is dumped, the key is stored (the cost of the state altogether: an upper bound
  for any incremental or per-task state format, which must still encode and write what changed).

The in-process workflow cache keeps both broken variants running (every command finds its workflow
under the key). Variants alternate round by round; medians of milliseconds per case are printed with
each variant's ratio to SpiffWorkflow alone.

    python -m bench.state_cost            # 40 cases, 3 rounds
    python -m bench.state_cost 40 5
"""

from __future__ import annotations

import statistics
import sys
import uuid
from contextlib import contextmanager

from . import engine_overhead


@contextmanager
def _dump_replaced(serialize: bool):
    from engine import runtime

    def dump(self, workflow):
        if serialize:
            self.serializer.dumps(workflow)
        key = uuid.uuid4().hex
        self._recent[key] = workflow
        while len(self._recent) > runtime.RECENT_WORKFLOWS:
            self._recent.popitem(last=False)
        return key

    shipped = runtime.Runtime.dump
    runtime.Runtime.dump = dump
    try:
        yield
    finally:
        runtime.Runtime.dump = shipped


def _engine_ms(cases: int, variant: str) -> float:
    if variant == "engine":
        result = engine_overhead.run_engine(cases)
    else:
        with _dump_replaced(serialize=variant == "text not stored"):
            result = engine_overhead.run_engine(cases)
    return 1000 * result["seconds"] / cases


VARIANTS = ("engine", "text not stored", "no state")


def run(cases: int = 40, rounds: int = 3) -> dict:
    """Median ms per case of SpiffWorkflow alone and of each engine variant, and ratios to the former."""
    engine_overhead.run_spiff(cases)  # imports and the parse
    times: dict[str, list[float]] = {"spiff": [], **{v: [] for v in VARIANTS}}
    for _ in range(rounds):
        times["spiff"].append(1000 * engine_overhead.run_spiff(cases)["seconds"] / cases)
        for variant in VARIANTS:
            times[variant].append(_engine_ms(cases, variant))
    medians = {name: statistics.median(values) for name, values in times.items()}
    return {"cases": cases, "rounds": rounds, "ms_per_case": medians,
            "ratio": {v: medians["spiff"] / medians[v] for v in VARIANTS}}


if __name__ == "__main__":
    arguments = [int(a) for a in sys.argv[1:3]]
    result = run(*arguments)
    print(f"{result['cases']} cases, {result['rounds']} rounds, median ms per case:")
    print(f"  SpiffWorkflow alone in memory  {result['ms_per_case']['spiff']:7.1f}")
    for variant in VARIANTS:
        print(f"  {variant:<30} {result['ms_per_case'][variant]:7.1f}   ratio {result['ratio'][variant]:.3f}")
