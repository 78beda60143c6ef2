"""``python -m bench``: the engine's benchmarks, side by side in one run (on demand; never a timed test).

    python -m bench                 # default sizes: a few minutes in all
    python -m bench --full          # the issue's sizes (100,000 stored cases, a 10,000-case worker): ~1 h
    python -m bench --only 1,3      # some of them
    python -m bench --pg URL        # PostgreSQL server for benchmark 2 (else GRIDFLOW_BENCH_PG / GRIDFLOW_TEST_PG)

1. the complaint flow to completion: Engine API on SQLite vs SpiffWorkflow alone in memory (target ≥ 0.5);
2. 2 worker processes vs 1 on PostgreSQL (target ≥ 1.6×);
3. one task completion with many finished cases stored vs few (target ≤ 1.2×);
4. a worker's memory after many cases vs after 100 (no growth beyond bounded caches).

Each module also runs alone (``python -m bench.engine_overhead`` …). Results and what limits each
number: bench/RESULTS.md. The CLI start-up benchmark is ``python -m bench.bench_cli_startup``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--full", action="store_true", help="the issue's sizes (slow)")
    parser.add_argument("--only", default="1,2,3,4", help="comma-separated benchmark numbers (default all)")
    parser.add_argument("--pg", help="PostgreSQL admin URL for benchmark 2 (may create databases)")
    parser.add_argument("--json", action="store_true", help="also print the raw results as JSON")
    args = parser.parse_args(argv)
    if args.pg:
        os.environ["GRIDFLOW_BENCH_PG"] = args.pg
    wanted = {int(x) for x in args.only.split(",") if x.strip()}
    sizes = {1: 200 if args.full else 30, 2: 2_000 if args.full else 200,
             3: (1_000, 100_000) if args.full else (1_000, 10_000), 4: (10_000, 100) if args.full else (1_000, 100)}
    print(f"gridflow benchmarks  python {platform.python_version()}  {os.cpu_count()} CPUs  "
          f"load {os.getloadavg()[0]:.1f}  {'--full' if args.full else 'default sizes'}", flush=True)
    results: dict[str, object] = {}
    rows: list[tuple[str, str, str, str, str]] = []

    def step(number: int, title: str, function):
        if number not in wanted:
            return None
        print(f"[{number}] {title} …", flush=True)
        started = time.perf_counter()
        result = function()
        result["wall_seconds"] = round(time.perf_counter() - started, 1)
        results[str(number)] = result
        return result

    from . import engine_overhead, history_growth, worker_memory, worker_scaling

    r = step(1, f"complaint flow, {sizes[1]} cases", lambda: engine_overhead.run(sizes[1]))
    if r:
        rows.append(("1 engine / SpiffWorkflow", f"{r['engine']['per_second']:.2f} cases/s (SQLite)",
                     f"{r['spiff']['per_second']:.1f} cases/s (memory)", f"{r['ratio']:.3f}", "≥ 0.5"))
        rows.append(("  (bound: Spiff + state dumps)", f"{r['spiff_serializing']['per_second']:.1f} cases/s "
                     f"({r['spiff_serializing']['state_dumps'] / r['spiff_serializing']['cases']:.0f} dumps/case)",
                     f"{r['spiff']['per_second']:.1f} cases/s (memory)", f"{r['serializing_ratio']:.3f}", "-"))
    r = step(2, f"workers on PostgreSQL, {sizes[2]} cases", lambda: worker_scaling.run(sizes[2]))
    if r and "skipped" in r:
        rows.append(("2 workers 2 vs 1", "skipped", r["skipped"], "-", "≥ 1.6×"))
    elif r:
        rows.append(("2 workers 2 vs 1", f"{r['cases'] / r['two']['seconds']:.1f} cases/s (2)",
                     f"{r['cases'] / r['one']['seconds']:.1f} cases/s (1)", f"{r['speedup']:.2f}×", "≥ 1.6×"))
    small, large = sizes[3]
    r = step(3, f"task completion, {large:,} vs {small:,} finished cases (SQLite)",
             lambda: history_growth.run(small, large))
    if r:
        rows.append((f"3 completion {large // 1000}k vs {small // 1000}k",
                     f"{r['large_result']['median_ms']:.1f} ms median",
                     f"{r['small_result']['median_ms']:.1f} ms median",
                     f"{r['ratio']:.2f}×", "≤ 1.2×"))
    many, first = sizes[4]
    r = step(4, f"worker memory, {many:,} vs {first} cases (SQLite)", lambda: worker_memory.run(many, first))
    if r:
        rows.append((f"4 worker RSS {many:,} vs {first}", f"{r['after_all_mb']:.0f} MiB (peak {r['peak_mb']:.0f})",
                     f"{r['after_first_mb']:.0f} MiB", f"{r['growth']:.2f}×", "flat"))

    widths = [max(len(row[i]) for row in [("benchmark", "measured", "baseline", "ratio", "target"), *rows])
              for i in range(5)]
    print()
    for row in [("benchmark", "measured", "baseline", "ratio", "target"), *rows]:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))
    if args.json:
        print(json.dumps(results, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
