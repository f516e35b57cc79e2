"""The cost of one streamed send through Granian: ASGI `send` vs RSGI `send_bytes`, on a floor app.

    .venv/bin/python -m bench.granian_send_cost     # ~30 s; writes bench/results/granian_send_cost.json

A minimal app (no ferroute code) streams `--sends` SSE frames of ~60 bytes per request, one send each,
under Granian (1 worker, uvloop) with each interface; the Rust load generator keeps `--concurrency`
streams going for `--duration` s (frames counted, not grammar-checked). Server CPU (user+sys of
Granian's processes, /proc) per send is the cost of one send of a streamed body, the per-request cost
being spread over `--sends` sends. This is the number behind coalescing in the router's hot path (one
send per upstream read, never one per event) and behind the interface choice (README "Granian tuning").
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.harness import REPO, cpu_seconds, free_port, machine_info, pinned, stop
from ferroute.loadtest.load import run_load

RESULTS = REPO / "bench" / "results" / "granian_send_cost.json"


def measure(interface: str, args: argparse.Namespace) -> dict[str, Any]:
    port = free_port()
    env = {**os.environ, "FLOOR_SENDS": str(args.sends)}
    command = [sys.executable, "-m", "granian", "--interface", interface, "--loop", "uvloop", "--no-ws"]
    command += ["--host", "127.0.0.1", "--port", str(port), "--workers", "1", f"bench.floor_app:{interface}"]
    process = subprocess.Popen(
        pinned(command, args.server_core),
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        url = f"http://127.0.0.1:{port}/"
        deadline = time.monotonic() + 30
        while True:  # ready when a whole stream comes back
            probe = run_load(url, b"{}", concurrency=1, requests=1, check_grammar=False, timeout=5)
            if probe["ok"] == 1:
                break
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"granian --interface {interface} did not start")
            time.sleep(0.2)
        before = cpu_seconds(process.pid)
        result = run_load(
            url, b"{}", concurrency=args.concurrency, duration=args.duration, warmup=0.0, check_grammar=False
        )
        cpu = cpu_seconds(process.pid) - before
    finally:
        stop(process)
    sends = result["events"]  # one SSE frame per send ([DONE] not counted)
    return {
        "interface": interface,
        "requests": result["requests"],
        "errors": result["errors"],
        "sends": sends,
        "sends_per_s": round(sends / result["duration_s"]) if result["duration_s"] else None,
        "server_cpu_s": round(cpu, 3),
        "server_cpu_us_per_send": round(1e6 * cpu / sends, 3) if sends else None,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sends", type=int, default=1000, help="sends per response (default 1000)")
    parser.add_argument("--concurrency", type=int, default=16, help="concurrent streams (default 16)")
    parser.add_argument("--duration", type=float, default=4.0, help="measured seconds per interface (default 4)")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds (default 2)")
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"JSON results (default {RESULTS.relative_to(REPO)})")
    args = parser.parse_args(argv)
    nproc = os.cpu_count() or 1
    args.server_core = 0 if nproc >= 2 else None
    if nproc >= 2:
        os.sched_setaffinity(0, {nproc - 1})  # the load generator off the server's core
    runs: list[dict[str, Any]] = []
    for _ in range(args.rounds):
        for interface in ("asgi", "rsgi"):
            runs.append(measure(interface, args))
            print(f"  {runs[-1]}", file=sys.stderr, flush=True)
    summary = {}
    for interface in ("asgi", "rsgi"):
        costs = sorted(r["server_cpu_us_per_send"] for r in runs if r["interface"] == interface)
        summary[interface] = costs[len(costs) // 2]
    machine = machine_info()
    results = {"machine": machine, "args": {**vars(args), "out": str(args.out)}, "runs": runs, "median": summary}
    lines = [
        f"machine: {machine['cpu_model']}, nproc={machine['nproc']}, granian {machine.get('granian')}",
        f"{args.sends} sends per response, {args.concurrency} streams, {args.rounds} interleaved rounds (median):",
    ]
    lines += [f"  {interface}: {cost} µs of server CPU per send" for interface, cost in summary.items()]
    print("\n".join(lines))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    return 1 if any(r["errors"] for r in runs) else 0


if __name__ == "__main__":
    raise SystemExit(main())
