"""Granian tuning: `ferroute serve`'s Granian knobs, each measured with the router overhead bench.

Run from the repository root, with a release build of the native module (`make develop`):

    .venv/bin/python -m bench.granian_tuning             # ~5 minutes; writes bench/results/granian_tuning.*
    .venv/bin/python -m bench.granian_tuning --rounds 1 --variants "--interface rsgi"

Each variant is `ferroute serve` with the default settings plus some options (`--interface`, `--loop`,
`--runtime-threads`, `--task-impl`, …), measured by `python -m bench.router_overhead --quick` (1 worker
pinned to one core, the mock upstream and load generator on the other; concurrency 1, then 64 streams
burst and paced). Variants run in interleaved rounds (`--rounds`, default 2) and the table shows each
measure's median over the rounds, so drift on a shared machine hits every variant alike. Workers are not
a variant here: on a 2-core machine the router gets one core; `--workers N` scales by processes, one
per core, each measured as one.

What the table cannot show, the slow-reader row of `bench/memory.py` does: under `--interface rsgi`
Granian 2.8.7 queues a stream's sends without bound while the client is not reading.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results" / "granian_tuning.json"
VARIANTS = [
    "",
    "--interface rsgi",
    "--loop asyncio",
    "--runtime-threads 2 --runtime-mode st",
    "--runtime-threads 2 --runtime-mode mt",
    "--task-impl rust",
]


def measures(result: dict[str, Any]) -> dict[str, float | None]:
    c1 = result["concurrency_1"]
    burst, paced = result["load"]["burst"]["router"], result["load"]["paced"]["router"]
    return {
        "added_ttfe_p50_ms": c1["added_ttfe_p50_ms"],
        "added_ttfe_p99_ms": c1["added_ttfe_p99_ms"],
        "cpu_us_per_request": c1["router_cpu_us_per_request"],
        "burst_events_per_s": burst["events_per_s"],
        "burst_cpu_us_per_event": burst["cpu_us_per_event"]["router"],
        "paced_cpu_us_per_event": paced["cpu_us_per_event"]["router"],
        "failures": result["failures_total"],
    }


def run_variant(serve_args: str, out: Path, bench_args: list[str]) -> dict[str, float | None]:
    command = [sys.executable, "-m", "bench.router_overhead", *bench_args, "--out", str(out)]
    if serve_args:
        command += ["--serve-args", serve_args]
    process = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    if process.returncode != 0:
        raise RuntimeError(f"router_overhead {serve_args!r} failed:\n{process.stdout[-2000:]}{process.stderr[-2000:]}")
    return measures(json.loads(out.read_text()))


def median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def table(results: dict[str, Any]) -> str:
    lines = [
        f"machine: {results['machine']}; granian {results['granian']}; {results['rounds']} interleaved rounds, medians",
        "",
        f"{'variant':<26}{'TTFE added p50/p99 ms':>23}{'CPU µs/request':>16}{'burst events/s':>16}"
        f"{'burst µs/event':>16}{'paced µs/event':>16}{'failed':>8}",
    ]
    for name, m in results["variants"].items():

        def f(key: str, spec: str, m: dict[str, Any] = m) -> str:
            value = m[key]
            return "-" if value is None else format(value, spec)

        lines.append(
            f"{name or '(defaults)':<26}{f('added_ttfe_p50_ms', '.3f') + ' / ' + f('added_ttfe_p99_ms', '.3f'):>23}"
            f"{f('cpu_us_per_request', ',.0f'):>16}{f('burst_events_per_s', ',.0f'):>16}"
            f"{f('burst_cpu_us_per_event', '.2f'):>16}{f('paced_cpu_us_per_event', '.1f'):>16}{m['failures']:>8}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds (default 2)")
    parser.add_argument(
        "--variants",
        type=lambda text: [v.strip() for v in text.split(",")],
        default=VARIANTS,
        help='comma-separated `ferroute serve` options per variant ("" = defaults); default: '
        + ", ".join(repr(v) for v in VARIANTS),
    )
    parser.add_argument(
        "--bench-args", type=shlex.split, default=["--quick"], help='bench.router_overhead options (default "--quick")'
    )
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"JSON results (default {RESULTS.relative_to(REPO)})")
    args = parser.parse_args(argv)
    for variant in args.variants:
        shlex.split(variant)  # a malformed variant fails now, not after minutes
    started = time.monotonic()
    runs: dict[str, list[dict[str, float | None]]] = {v: [] for v in args.variants}
    machine: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="ferroute-tuning-") as tmp:
        for round_ in range(args.rounds):
            for index, variant in enumerate(args.variants):
                print(f"round {round_ + 1}/{args.rounds}: {variant or '(defaults)'} ...", file=sys.stderr, flush=True)
                out = Path(tmp) / f"{round_}-{index}.json"
                runs[variant].append(run_variant(variant, out, args.bench_args))
                if not machine:
                    machine = json.loads(out.read_text())["machine"]
    results: dict[str, Any] = {
        "machine": f"{machine.get('cpu_model')}, nproc={machine.get('nproc')}, Python {machine.get('python')}",
        "granian": machine.get("granian"),
        "rounds": args.rounds,
        "variants": {
            variant: {
                **{key: median([r[key] for r in rs]) for key in rs[0] if key != "failures"},
                "failures": sum(int(r["failures"] or 0) for r in rs),
                "rounds": rs,
            }
            for variant, rs in runs.items()
        },
        "seconds": round(time.monotonic() - started, 1),
    }
    text = table(results)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    args.out.with_suffix(".txt").write_text(text + "\n")
    print(f"\n(results in {args.out}; {results['seconds']} s)")
    return 1 if any(v["failures"] for v in results["variants"].values()) else 0


if __name__ == "__main__":
    raise SystemExit(main())
