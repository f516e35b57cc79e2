"""Non-streaming throughput: requests/s per worker core in front of a mock upstream that answers in 20 ms.

Run from the repository root, with a release build of the native module (`make develop`):

    .venv/bin/python -m bench.nonstream            # ~2 minutes; writes bench/results/nonstream.json
    .venv/bin/python -m bench.nonstream --rates 500,1000 --duration 3

The upstream is `ferroute mock-upstream` (Rust) answering every `POST /v1/chat/completions` after
`--latency-ms` with `--tokens` tokens: a whole `chat.completion` to the direct requests, and to the router,
which always asks for a stream (a non-streaming response is built from it), the stream in one write.
The load is the Rust load generator (`ferroute._core.LoadGenerator`, the engine of `ferroute bench
load`) in the open model: requests start
on a fixed schedule (`--rates`, requests/s), so a router that falls behind shows it in its latency
instead of being offered less. At each rate, interleaved: (a) the mock directly, (b) Granian's floor: a
bare ASGI app (no ferroute code) served as the router is, that waits `--latency-ms` and answers ~1 KB of
JSON, i.e. what any Python app under Granian pays for this load, (c) `POST /v1/responses` (`stream:
false`) through `ferroute serve` (1 Granian worker, default settings: sqlite store) in front of the mock;
every router answer is checked to be a `response` object. Reported per rate: requests/s served,
errors, latency p50/p99 each way and the router's added p99, the router's CPU (user+sys of Granian's
main process and worker, /proc) per request and as a share of one core, and so the requests/s one
worker core sustains (1 / CPU per request).

With at least 2 cores, the router is pinned to the first core and the mock and the load generator to
the last; the router's core is then the "worker core" of the target: ≥ 1,500 requests/s per worker core
against a 20 ms mock with the added p99 ≤ 5 ms (issue #5).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.harness import (
    REPO,
    cpu_seconds,
    free_port,
    machine_info,
    native_build,
    pinned,
    start_mock,
    start_router,
    stop,
    wait_ready,
    write_results,
)
from ferroute.loadtest.load import run_load

RESULTS = REPO / "bench" / "results" / "nonstream.json"


@contextlib.contextmanager
def start_floor(core: int | None, latency_ms: float) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """Granian's own floor for this load (`bench/floor_app.py`: `nonstream`, no ferroute code), served as the
    router is: 1 worker, uvloop, the same core."""
    port = free_port()
    command = [sys.executable, "-m", "granian", "--interface", "asgi", "--loop", "uvloop", "--no-ws"]
    command += ["--host", "127.0.0.1", "--port", str(port), "--workers", "1", "bench.floor_app:nonstream"]
    env = {**os.environ, "FLOOR_LATENCY_MS": f"{latency_ms:g}"}
    process = subprocess.Popen(
        pinned(command, core), cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    try:
        wait_ready(process, f"http://127.0.0.1:{port}/", "the floor app", b"{}")
        yield process, port
    finally:
        stop(process)


def _summary(result: dict[str, Any]) -> dict[str, Any]:
    latency = result["latency_ms"]
    return {
        "requests": result["requests"],
        "ok": result["ok"],
        "errors": result["errors"],
        "errors_by_kind": result["errors_by_kind"],
        "error_examples": result["error_examples"],
        "requests_per_s": round(result["requests_per_s"], 1),
        "latency_p50_ms": latency["p50"],
        "latency_p99_ms": latency["p99"],
        "latency_max_ms": latency["max"],
        "late_starts": result["late_starts"],
        "client_cpu_percent": round(result["client_cpu_percent"], 1),
    }


def _served(url: str, body: bytes, pid: int, rate: float, common: dict[str, Any], **options: Any) -> dict[str, Any]:
    """One window of load on a server process: its summary, with its CPU per request and share of a core."""
    cpu_before, wall_before = cpu_seconds(pid), time.monotonic()
    result = run_load(url, body, **common, **options)
    cpu = cpu_seconds(pid) - cpu_before
    wall = time.monotonic() - wall_before
    summary = _summary(result)
    # The window's CPU includes the warm-up; divide by every request the server answered meanwhile.
    answered = result["requests"] + round(rate * common["warmup"])
    cpu_per_request = 1e6 * cpu / answered if answered else None
    summary["cpu_s"] = round(cpu, 3)
    summary["cpu_percent_of_one_core"] = round(100 * cpu / wall, 1)
    summary["cpu_us_per_request"] = round(cpu_per_request, 1) if cpu_per_request is not None else None
    # (CPU time comes in 10 ms ticks: a tiny run may read 0.)
    summary["requests_per_s_per_core"] = round(1e6 / cpu_per_request) if cpu_per_request else None
    return summary


def measure(
    args: argparse.Namespace, mock_port: int, router: Any, router_port: int, floor: Any, floor_port: int
) -> list[dict[str, Any]]:
    chat = json.dumps({"model": "m", "messages": [{"role": "user", "content": "Say something."}]}).encode()
    responses = json.dumps({"model": "m:mock", "input": "Say something.", "stream": False}).encode()
    direct_url = f"http://127.0.0.1:{mock_port}/v1/chat/completions"
    router_url = f"http://127.0.0.1:{router_port}/v1/responses"
    # Warm both ways (connections, the router's lazy imports), untimed.
    run_load(direct_url, chat, stream=False, concurrency=4, requests=50, check_grammar=False)
    run_load(router_url, responses, stream=False, concurrency=4, requests=200)
    floor_url = f"http://127.0.0.1:{floor_port}/"
    run_load(floor_url, chat, stream=False, concurrency=4, requests=50, check_grammar=False)
    levels = []
    for rate in args.rates:
        print(f"rate {rate:g}/s: direct, floor, router, {args.duration:g} s each ...", file=sys.stderr, flush=True)
        common = {"stream": False, "rate": rate, "duration": args.duration, "warmup": args.warmup}
        direct = _summary(run_load(direct_url, chat, check_grammar=False, **common))
        floored = _served(floor_url, chat, floor.pid, rate, common, check_grammar=False)
        routed = _served(router_url, responses, router.pid, rate, common)
        added = None
        if routed["latency_p99_ms"] is not None and direct["latency_p99_ms"] is not None:
            added = round(routed["latency_p99_ms"] - direct["latency_p99_ms"], 3)
        level = {"rate": rate, "direct": direct, "floor": floored, "router": routed, "added_p99_ms": added}
        levels.append(level)
        print(f"  {table_row(level)}", file=sys.stderr, flush=True)
    return levels


def table_row(level: dict[str, Any]) -> str:
    d, r, f = level["direct"], level["router"], level.get("floor")

    def ms(value: float | None) -> str:
        return f"{value:.2f}" if value is not None else "-"

    floor = (
        f"   {ms(f['latency_p50_ms']):>7} {ms(f['latency_p99_ms']):>7} {f['cpu_us_per_request'] or 0:7.1f}"
        if f is not None
        else ""
    )
    return (
        f"{level['rate']:8g} {r['requests_per_s']:9.1f} {r['errors']:6d}   {ms(d['latency_p50_ms']):>7} "
        f"{ms(d['latency_p99_ms']):>7}   {ms(r['latency_p50_ms']):>7} {ms(r['latency_p99_ms']):>7}   "
        f"{ms(level['added_p99_ms']):>7}   {r['cpu_percent_of_one_core']:6.1f}% {r['cpu_us_per_request'] or 0:8.1f} "
        f"{r['requests_per_s_per_core'] or 0:9d}{floor}"
    )


def table(results: dict[str, Any]) -> str:
    m = results["machine"]
    lines = [
        f"machine: {m['cpu_model']}, nproc={m['nproc']}, granian {m.get('granian')}; pinning: {results['pinning']}",
        f"mock upstream: whole chat.completion after {results['args']['latency_ms']:g} ms; open-model load",
        "",
        "    rate/s   served  errors   direct ms p50/p99   router ms p50/p99   added   router CPU  µs/req  req/s/core"
        "   floor ms p50/p99  µs/req",
    ]
    lines.extend("  " + table_row(level) for level in results["levels"])
    verdict = results["target"]
    lines.append("")
    lines.append(
        f"Target >= 1,500 requests/s per worker core with added p99 <= 5 ms: "
        f"{verdict['best_rate_within_bound']} requests/s offered within the bound; "
        f"{verdict['requests_per_s_per_core']} requests/s per core at it: {'met' if verdict['met'] else 'NOT met'}"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--rates",
        type=lambda text: [float(x) for x in text.split(",")],
        default=[250.0, 500.0, 1000.0, 1500.0, 2000.0, 2500.0, 3000.0],
        help="offered requests/s, comma-separated (default 250,500,1000,1500,2000,2500,3000)",
    )
    parser.add_argument("--duration", type=float, default=5.0, help="measured seconds per rate and way (default 5)")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds before each window (default 1)")
    parser.add_argument("--latency-ms", type=float, default=20.0, help="the mock's time to answer (default 20)")
    parser.add_argument("--tokens", type=int, default=20, help="tokens in the mock's answer (default 20)")
    parser.add_argument(
        "--store", choices=["sqlite", "memory", "off"], help="the router's store (default: its default, sqlite)"
    )
    parser.add_argument("--serve-args", type=shlex.split, default=[], help="extra `ferroute serve` options")
    parser.add_argument("--no-pin", dest="pin", action="store_false", help="do not pin processes to cores")
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"JSON results (default {RESULTS.relative_to(REPO)})")
    args = parser.parse_args(argv)
    nproc = os.cpu_count() or 1
    pin = args.pin and nproc >= 2
    router_core, other_core = (0, nproc - 1) if pin else (None, None)
    if other_core is not None:
        os.sched_setaffinity(0, {other_core})  # the load generator's threads
    started = time.monotonic()
    results: dict[str, Any] = {
        "machine": machine_info(),
        "native": native_build(None),
        "args": {**vars(args), "out": str(args.out)},
        "store": args.store or "sqlite (default)",
        "pinning": f"router on core {router_core}, mock and load generator on core {other_core}" if pin else "none",
    }
    with (
        start_mock(other_core, tokens=args.tokens, ttft_ms=args.latency_ms) as mock,
        start_router({"mock": mock.port}, router_core, None, store=args.store, serve_args=args.serve_args) as (
            router,
            router_port,
        ),
        start_floor(router_core, args.latency_ms) as (floor, floor_port),
    ):
        results["levels"] = measure(args, mock.port, router, router_port, floor, floor_port)
    within = [
        level
        for level in results["levels"]
        if level["added_p99_ms"] is not None
        and level["added_p99_ms"] <= 5
        and level["router"]["errors"] == 0
        and level["router"]["requests_per_s"] >= 0.97 * level["rate"]
    ]
    best = max(within, key=lambda level: level["rate"], default=None)
    per_core = best["router"]["requests_per_s_per_core"] if best else None
    results["target"] = {
        "best_rate_within_bound": best["rate"] if best else None,
        "requests_per_s_per_core": per_core,
        "met": bool(best and best["rate"] >= 1500),
    }
    results["seconds"] = round(time.monotonic() - started, 1)
    text = table(results)
    print(text)
    write_results(args.out, results, text)
    print(f"\n(results in {args.out}; {results['seconds']} s)")
    errors = sum(level["router"]["errors"] + level["direct"]["errors"] for level in results["levels"])
    return 1 if errors else 0


if __name__ == "__main__":
    raise SystemExit(main())
