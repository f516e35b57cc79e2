"""Memory per worker: ferroute holding 1,000 open streams, and a client that reads nothing.

Run from the repository root, with a release build of the native module (`make develop`):

    .venv/bin/python -m bench.memory               # ~1.5 minutes; writes bench/results/memory.json
    .venv/bin/python -m bench.memory --streams 200 # a smaller run

1. Open streams: `ferroute serve` (1 Granian worker, default settings: sqlite store, ASGI, uvloop) in
   front of the paced mock upstream (`ferroute mock-upstream`: one event every `--gap` s per stream).
   Streams are opened in `--steps` equal steps up to `--streams` and held open; after each step settles,
   the resident memory (VmRSS) of the worker and of Granian's main process is read from /proc. Then
   every stream is let run to its end and checked (200, every event, `response.completed` with the
   upstream's text, `[DONE]`), the memory is read again, and further waves (`--waves`, 3 in all) of as
   many streams run the same way: memory that levels off stays at the first waves' peak, a leak climbs
   wave after wave.
2. A slow reader: one client asks for an answer of `--slow-events` events (~250 bytes each, written
   by a mock of its own at once; that mock holds the answer prebuilt in each of its dialects, ~0.7 GB
   for the default 200,000) and reads nothing for `--stall` s while the worker's memory is sampled;
   then it reads everything and the stream is checked. Run against the default interface (ASGI) and
   `--interface rsgi`, whose stream transport queues without bound in Granian 2.8.7.
3. Dropped slow readers: `--drops` clients (`--at-once` at a time) each ask for a 5 MB answer, read nothing,
   are dropped by the router at `[timeouts] client_write` (1 s here) and hang up a second later. The worker's
   memory is read before them and `--drop-settle` s after the last (the worker trims its heap after a drop).

Targets: ≤ 150 MB per worker with 1,000 open streams, and a slow reader does not make it grow without bound
(issue #5); after 100 dropped slow readers the worker is back within 10 MB of its memory before them (issue #17).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
from pathlib import Path
from typing import Any

from tests.support.stalled import stalled_readers, stalled_socket

from bench.harness import (
    REPO,
    Connection,
    Mock,
    Target,
    machine_info,
    native_build,
    one,
    process_tree,
    rss_mb,
    start_mock,
    start_router,
    targets,
)

RESULTS = REPO / "bench" / "results" / "memory.json"


def router_memory(root: int) -> dict[str, float]:
    """{"main": Granian's main process, "worker": its worker (the one serving), "total"} in MB."""
    pids = process_tree(root)
    workers = [pid for pid in pids if pid != root]
    out = {"main": round(rss_mb(root), 1), "worker": round(max((rss_mb(p) for p in workers), default=0.0), 1)}
    out["total"] = round(sum(rss_mb(p) for p in pids), 1)
    return out


async def hold_streams(target: Target, router_pid: int, streams: int, steps: int, settle: float) -> dict[str, Any]:
    """Open `streams` streams in `steps` steps, reading memory after each; then let them finish and check them."""
    tasks: list[asyncio.Task[tuple[Any, str | None]]] = []
    conns: list[Connection] = []
    levels: list[dict[str, Any]] = []
    counter = [0]
    try:
        for step in range(1, steps + 1):
            want = streams * step // steps
            while len(tasks) < want:
                conn = await Connection.open(target.port, counter)
                conns.append(conn)
                tasks.append(asyncio.create_task(one(conn, target)))
            await asyncio.sleep(settle)
            open_now = sum(not task.done() for task in tasks)
            levels.append({"open_streams": open_now, **router_memory(router_pid)})
            print(f"  {open_now:5d} open streams: {levels[-1]}", file=sys.stderr, flush=True)
        results = await asyncio.gather(*tasks)
    finally:
        for conn in conns:
            conn.close()
    failures = [problem for _, problem in results if problem is not None]
    await asyncio.sleep(settle)
    return {
        "levels": levels,
        "after": router_memory(router_pid),
        "streams": len(results),
        "failed": len(failures),
        "failures": sorted(set(failures))[:5],
    }


def slow_reader(port: int, router_pid: int, stall: float) -> dict[str, Any]:
    """A client that sends a request, reads nothing for `stall` s (worker memory sampled), then reads all."""
    body = json.dumps({"model": "bench:slow", "input": "Go.", "stream": True}).encode()
    before = router_memory(router_pid)["worker"]
    peak = before
    with stalled_socket(port, body) as sock:
        deadline = time.monotonic() + stall
        while time.monotonic() < deadline:
            time.sleep(0.1)
            peak = max(peak, router_memory(router_pid)["worker"])
        sock.settimeout(60)
        received = 0
        tail = b""
        started = time.monotonic()
        while not tail.endswith(b"\r\n0\r\n\r\n"):
            data = sock.recv(1 << 20)
            if not data:
                break
            received += len(data)
            tail = (tail + data)[-64:]
        read_s = time.monotonic() - started
    complete = b"data: [DONE]" in tail
    return {
        "answer_mb": round(received / 2**20, 1),
        "worker_before_mb": before,
        "worker_peak_mb": peak,
        "growth_mb": round(peak - before, 1),
        "read_after_stall_s": round(read_s, 2),
        "complete": complete,
    }


CLIENT_WRITE = 1.0  # seconds: the drops' router's `[timeouts] client_write`


def dropped_readers(port: int, router_pid: int, drops: int, at_once: int, settle: float) -> dict[str, Any]:
    """Worker memory before and after `drops` clients that stopped reading were dropped."""
    body = json.dumps({"model": "bench:drop", "input": "Go.", "stream": True}).encode()
    before = router_memory(router_pid)["worker"]
    started = time.monotonic()
    stalled_readers(port, body, drops, at_once, seconds=CLIENT_WRITE + 1)
    took = time.monotonic() - started
    time.sleep(settle)
    after = router_memory(router_pid)["worker"]
    return {
        "drops": drops,
        "at_once": at_once,
        "seconds": round(took, 1),
        "worker_before_mb": before,
        "worker_after_mb": after,
        "retained_mb": round(after - before, 1),
    }


def table(results: dict[str, Any]) -> str:
    lines = [f"machine: {results['machine']['cpu_model']}, {results['machine']['nproc']} cores"]
    for wave in (key for key in results.get("open_streams", {}) if key.startswith("wave_")):
        w = results["open_streams"][wave]
        lines.append(f"{wave}: {w['streams']} streams, {w['failed']} failed")
        lines.append("  open streams   worker MB   main MB   total MB")
        lines.extend(
            f"  {level['open_streams']:12d}   {level['worker']:9.1f}   {level['main']:7.1f}   {level['total']:8.1f}"
            for level in w["levels"]
        )
        after = w["after"]
        lines.append(f"  {'after':>12}   {after['worker']:9.1f}   {after['main']:7.1f}   {after['total']:8.1f}")
    if "open_streams" in results:
        lines.append(f"idle worker before the first wave: {results['open_streams']['idle']['worker']} MB")
    for name, slow in results.get("slow_reader", {}).items():
        lines.append(
            f"slow reader ({name}): {slow['answer_mb']} MB answer; worker {slow['worker_before_mb']} -> peak "
            f"{slow['worker_peak_mb']} MB (+{slow['growth_mb']}) while it read nothing; complete: {slow['complete']}"
        )
    drops = results.get("dropped_readers")
    if drops is not None:
        lines.append(
            f"dropped slow readers: {drops['drops']} ({drops['at_once']} at a time); worker {drops['worker_before_mb']}"
            f" MB before, {drops['worker_after_mb']} MB after (+{drops['retained_mb']}; target < 10 MB: "
            f"{'met' if drops['retained_mb'] < 10 else 'not met'})"
        )
    return "\n".join(lines)


async def warm(mocks: dict[str, Mock], port: int, model: str = "check") -> None:
    """A few correct streams of `model` (and the worker's lazy imports done) before anything is read."""
    conn = await Connection.open(port)
    try:
        for _ in range(5):
            _, problem = await one(conn, targets(mocks[model], port, model)[1])
            if problem is not None:
                raise RuntimeError(f"a first stream is wrong: {problem}")
    finally:
        conn.close()
    await asyncio.sleep(1)


async def open_streams(args: argparse.Namespace, mocks: dict[str, Mock], router: Any, port: int) -> dict[str, Any]:
    _, target = targets(mocks["paced"], port, "paced")
    await warm(mocks, port)
    out: dict[str, Any] = {"idle": router_memory(router.pid), "events_per_stream": args.events, "gap_s": args.gap}
    for wave in (f"wave_{i}" for i in range(1, args.waves + 1)):
        print(f"{wave}: {args.streams} streams ...", file=sys.stderr, flush=True)
        out[wave] = await hold_streams(target, router.pid, args.streams, args.steps, args.settle)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--streams", type=int, default=1000, help="open streams per wave (default 1000)")
    parser.add_argument("--waves", type=int, default=3, help="waves of streams, one after another (default 3)")
    parser.add_argument("--steps", type=int, default=4, help="memory readings per wave (default 4)")
    parser.add_argument("--events", type=int, default=100, help="text events (tokens) per answer (default 100)")
    parser.add_argument("--gap", type=float, default=0.2, help="seconds between a stream's events (default 0.2)")
    parser.add_argument("--settle", type=float, default=2.0, help="seconds after each step before reading memory")
    parser.add_argument("--slow-events", type=int, default=200_000, help="the slow reader's answer, in events")
    parser.add_argument("--stall", type=float, default=3.0, help="seconds the slow reader reads nothing")
    parser.add_argument("--drops", type=int, default=100, help="slow readers dropped (default 100)")
    parser.add_argument("--at-once", type=int, default=10, help="of those, at a time (default 10)")
    parser.add_argument("--drop-settle", type=float, default=6.0, help="seconds after the last drop (default 6)")
    parser.add_argument("--drops-only", action="store_true", help="part 3 alone (~30 s)")
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"JSON results (default {RESULTS.relative_to(REPO)})")
    args = parser.parse_args(argv)
    if args.drops_only and args.out == RESULTS:
        args.out = RESULTS.with_name("memory_drops.json")
    if args.events * args.gap < args.steps * args.settle + 2:
        parser.error("--events x --gap must outlast the steps (streams must stay open while memory is read)")
    started = time.monotonic()
    results: dict[str, Any] = {
        "machine": machine_info(),
        "native": native_build(None),
        "args": {**vars(args), "out": str(args.out)},
    }
    with contextlib.ExitStack() as stack:
        mocks = {
            "check": stack.enter_context(start_mock(tokens=20)),
            "paced": stack.enter_context(start_mock(tokens=args.events, gap_ms=args.gap * 1000)),
            "drop": stack.enter_context(start_mock(tokens=20_000)),
        }
        if not args.drops_only:
            mocks["slow"] = stack.enter_context(start_mock(tokens=args.slow_events))
        upstreams = {key: mock.port for key, mock in mocks.items()}
        if not args.drops_only:
            with start_router(upstreams) as (router, port):
                results["open_streams"] = asyncio.run(open_streams(args, mocks, router, port))
                results["slow_reader"] = {"asgi (default)": slow_reader(port, router.pid, args.stall)}
            with start_router(upstreams, serve_args=["--interface", "rsgi"]) as (router, port):
                results["slow_reader"]["rsgi"] = slow_reader(port, router.pid, args.stall)
        timeouts = f"\n[timeouts]\nclient_write = {CLIENT_WRITE}\n"
        with start_router(upstreams, extra_config=timeouts) as (router, port):
            asyncio.run(warm(mocks, port, "drop"))  # (the same answers, read whole: the baseline is a warm worker)
            results["dropped_readers"] = dropped_readers(port, router.pid, args.drops, args.at_once, args.drop_settle)
    results["seconds"] = round(time.monotonic() - started, 1)
    text = table(results)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    with contextlib.suppress(OSError):
        args.out.with_suffix(".txt").write_text(text + "\n")
    print(f"\n(results in {args.out}; {results['seconds']} s)")
    waves = [w for key, w in results.get("open_streams", {}).items() if key.startswith("wave_")]
    broken = sum(w["failed"] for w in waves) + sum(not s["complete"] for s in results.get("slow_reader", {}).values())
    return 1 if broken else 0


if __name__ == "__main__":
    raise SystemExit(main())
