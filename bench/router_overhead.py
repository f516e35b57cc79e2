"""Router overhead: ferroute in front of a mock Chat Completions upstream vs calling that upstream directly.

Run from the repository root, with a release build of the native module (`make develop`):

    .venv/bin/python -m bench.router_overhead            # ~2.5 minutes; writes bench/results/router_overhead.json
    .venv/bin/python -m bench.router_overhead --quick    # < 30 s: fewer requests, 64 streams, short windows

`--core PATH` runs the router with that native module instead of the installed one (e.g. a copy of
target/release/libferroute.so while the installed one is a debug build); `--help` lists the sizes.

Measured side by side in one run, all on 127.0.0.1:

1. Concurrency 1: time to first event (TTFE: request written -> first body bytes read) and total
   stream time, p50/p99 over `--requests` requests each way (after `--warmup`), interleaved, for
   (a) `POST /v1/chat/completions` straight to the mock upstream and (b) `POST /v1/responses`
   through `ferroute serve` (1 Granian worker) in front of the same upstream. Added = (b) - (a).
   2,000 requests each way by default: a p99 of 300 rests on its 3 slowest requests.
2. Under load: `--concurrency` (256) keep-alive connections each streaming back to back, measured
   over a `--duration` window after `--load-warmup` s (streams still in flight at the end are cut,
   not counted), for two upstream behaviours: `burst` (each answer written at once, one HTTP chunk
   per SSE event, as uvicorn/vLLM frame it) and `paced` (one event per write every `--gap` s per
   stream, like token generation). Reported: events/s delivered to the clients, CPU time (user+sys
   from /proc/<pid>/stat) of the router (Granian's main process and all its workers, and per thread),
   the mock upstream and the load generator (this process); router CPU / events delivered = server CPU
   µs per streamed event. /proc/stat shows what other processes on the machine used meanwhile.

The upstream is `ferroute mock-upstream` (the Rust mock), one process per phase's answer (its tokens
and gap are per process), each behind a provider of its own in the router's config. The load generator
is the harness's HTTP/1.1 client on a raw asyncio protocol; the mock's and the client's CPU are
reported next to the router's so a reader can check that neither is the bottleneck.

With at least 2 cores, processes are pinned (`taskset` / `sched_setaffinity`): the router on the
first core, the mock upstreams and the load generator on the last (`--no-pin`: not pinned).
Every stream is checked (status 200, `data: [DONE]` last, `response.completed` right before it with
the upstream's whole text, the expected number of events; keep-alive comments are not events) and
failures are counted and reported, never timed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.harness import (
    DONE,
    REPO,
    Connection,
    Meter,
    Mock,
    Target,
    cpu_seconds,
    failures,
    fmt,
    machine_info,
    ms_summary,
    native_build,
    one,
    start_mock,
    start_router,
    targets,
)

RESULTS = REPO / "bench" / "results" / "router_overhead.json"


# --- the two measurements --------------------------------------------------------------------------


async def concurrency_one(pair: tuple[Target, Target], meter: Meter, requests: int, warmup: int) -> dict[str, Any]:
    conns = {t.name: await Connection.open(t.port) for t in pair}
    samples: dict[str, dict[str, list[float]]] = {t.name: {"ttfe": [], "total": []} for t in pair}
    problems: dict[str, list[str]] = {t.name: [] for t in pair}
    deadline = time.monotonic() + 120
    try:
        for _ in range(warmup):
            for target in pair:
                await one(conns[target.name], target)
        before = meter.snap()
        for i in range(requests):
            if time.monotonic() > deadline:
                break
            for target in pair if i % 2 == 0 else pair[::-1]:  # interleaved, alternating order
                result, problem = await one(conns[target.name], target)
                if problem is not None:
                    problems[target.name].append(problem)
                    if conns[target.name].transport is None:
                        conns[target.name] = await Connection.open(target.port)
                    continue
                samples[target.name]["ttfe"].append(result.ttfe)
                samples[target.name]["total"].append(result.total)
        usage = Meter.diff(before, meter.snap())
    finally:
        for conn in conns.values():
            conn.close()
    out: dict[str, Any] = {"requests_each": requests, "warmup_each": warmup, "events_per_stream": None}
    for name in samples:
        out[name] = {
            "ttfe": ms_summary(samples[name]["ttfe"]),
            "total": ms_summary(samples[name]["total"]),
            "ok": len(samples[name]["ttfe"]),
            "failures": failures(problems[name]),
        }
    for stat in ("p50_ms", "p99_ms"):
        for kind in ("ttfe", "total"):
            a, b = out["router"][kind][stat], out["direct"][kind][stat]
            out[f"added_{kind}_{stat}"] = None if a is None or b is None else round(a - b, 4)
    out["cpu"] = usage
    ok = out["router"]["ok"] or 1
    out["router_cpu_us_per_request"] = round(1e6 * usage["router_cpu_s"] / ok, 1)
    return out


async def load(
    target: Target, meter: Meter, concurrency: int, warmup: float, duration: float, stagger: float = 0.0
) -> dict[str, Any]:
    """`concurrency` connections streaming back to back; measured over a `duration` s window after `warmup` s.

    Events are counted as they arrive (streams still in flight included) and CPU is read at the
    window's two ends; streams still in flight when the window ends are then cut (their
    connections closed, which the router must handle as client disconnects) and neither checked nor
    counted as failures. Every stream that ended before is checked."""
    counter = [0]  # SSE frames received by all connections (keep-alives not counted)
    done: list[int] = [0, 0]  # [DONE] frames received (before, after the window starts)
    streams = 0
    problems: list[str] = []
    ttfes: list[float] = []
    conns: set[Connection] = set()
    loop = asyncio.get_running_loop()
    window = [loop.time() + warmup, float("inf")]  # the window's start and end (loop time)
    pings = 0
    stop = False  # (cancelling alone is not enough: Python < 3.12's wait_for can swallow a cancellation)

    async def worker(delay: float) -> None:
        nonlocal streams, pings
        conn: Connection | None = None
        await asyncio.sleep(delay)  # staggered starts: streams that start together stay in step
        while not stop:
            if conn is None or conn.transport is None:
                try:
                    conn = await asyncio.wait_for(Connection.open(target.port, counter), 10)
                except (OSError, asyncio.TimeoutError) as e:
                    problems.append(f"connect: {type(e).__name__}")
                    await asyncio.sleep(0.05)
                    continue
                conns.add(conn)
            result, problem = await one(conn, target)
            in_window = window[0] <= loop.time() <= window[1]
            if result.tail.endswith(DONE):
                done[in_window] += 1
            if not in_window:
                continue  # warm-up: checked, not counted
            pings += result.pings
            if problem is None:
                streams += 1
                ttfes.append(result.ttfe)
            else:
                problems.append(problem)

    rng = random.Random(concurrency)
    tasks = [asyncio.create_task(worker(rng.uniform(0, stagger))) for _ in range(concurrency)]
    try:
        await asyncio.sleep(warmup)
        before, frames_before = meter.snap(), counter[0]
        await asyncio.sleep(duration)
        after, frames_after = meter.snap(), counter[0]
        window[1] = loop.time()
        for task in tasks:
            if task.done() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]
    finally:
        stop = True
        for conn in conns:
            conn.close()
        for task in tasks:
            task.cancel()
        await asyncio.wait(tasks, timeout=10)
    usage = Meter.diff(before, after)
    events = frames_after - frames_before - done[1]  # [DONE] is not an event
    wall = usage["wall_s"]
    per_event = {
        key: round(1e6 * usage[f"{key}_cpu_s"] / events, 3) if events > 0 else None
        for key in ("router", "upstream", "client")
    }
    return {
        "target": target.name,
        "streams_ok": streams,
        "events": events,
        "events_per_s": round(events / wall) if wall else 0,
        "ttfe_p50_ms": ms_summary(ttfes)["p50_ms"],
        "ttfe_p99_ms": ms_summary(ttfes)["p99_ms"],
        "keepalive_pings": pings,
        "cpu": usage,
        "cpu_us_per_event": per_event,
        "failures": failures(problems),
    }


async def settle(meter: Meter, limit: float = 15.0) -> None:
    """Wait (up to `limit` s) until the router has stopped using CPU after a phase's streams were cut."""
    deadline = time.monotonic() + limit
    last = cpu_seconds(meter.router_pid)
    while time.monotonic() < deadline:
        await asyncio.sleep(0.5)
        now = cpu_seconds(meter.router_pid)
        if now - last < 0.02:
            return
        last = now


def table(results: dict[str, Any]) -> str:
    m = results["machine"]
    lines = [
        f"machine: {m['cpu_model']}, nproc={m['nproc']}, kernel {m['kernel']}, Python {m['python']}, "
        f"granian {m['granian']}, httpx {m['httpx']}; loadavg at start {' '.join(m['loadavg_at_start'])}",
        f"native module: {results['native']['profile']} build ({results['native']['path']})",
        f"router: 1 Granian worker; pinning: {results['pinning']}",
        "",
    ]
    c1 = results["concurrency_1"]
    lines.append(
        f"Concurrency 1: {c1['requests_each']} requests each way after {c1['warmup_each']} warm-up, interleaved; "
        f"{c1['events_per_stream']} text events per answer (the mock's tokens), sent at once"
    )
    lines.append(f"  {'':<36}{'TTFE p50':>10}{'TTFE p99':>10}{'total p50':>11}{'total p99':>11}{'failed':>8}")
    for name, label in (("direct", "direct (POST /v1/chat/completions)"), ("router", "router (POST /v1/responses)")):
        r = c1[name]
        lines.append(
            f"  {label:<36}{fmt(r['ttfe']['p50_ms'], '.3f', 'ms'):>10}{fmt(r['ttfe']['p99_ms'], '.3f', 'ms'):>10}"
            f"{fmt(r['total']['p50_ms'], '.3f', 'ms'):>11}{fmt(r['total']['p99_ms'], '.3f', 'ms'):>11}"
            f"{r['failures']['count']:>8}"
        )
    lines.append(
        f"  {'added by the router':<36}{fmt(c1['added_ttfe_p50_ms'], '.3f', 'ms'):>10}"
        f"{fmt(c1['added_ttfe_p99_ms'], '.3f', 'ms'):>10}"
        f"{fmt(c1['added_total_p50_ms'], '.3f', 'ms'):>11}{fmt(c1['added_total_p99_ms'], '.3f', 'ms'):>11}"
    )
    lines.append(
        f"  router CPU per request: {c1['router_cpu_us_per_request']:,} µs; "
        f"other processes on the machine: {c1['cpu']['other_processes_cpu_s']} s CPU in {c1['cpu']['wall_s']} s"
    )
    lines.append("")
    for key, phase in results["load"].items():
        offered = f" (offered {phase['offered_events_per_s']:,} events/s)" if phase["offered_events_per_s"] else ""
        lines.append(
            f"Load '{key}': {phase['concurrency']} concurrent streams of {phase['events_per_stream']} text events, "
            f"{phase['upstream']}{offered}; {phase['router']['warmup_s']:g} s warm-up"
            + (" (starts spread over it)" if phase["offered_events_per_s"] else "")
            + ", then measured"
        )
        lines.append(
            f"  {'':<7}{'window':>7}{'events/s':>10}{'streams':>8}{'failed':>7}{'TTFE p50':>10}{'TTFE p99':>10}"
            f"   CPU s: router  upstream  client  others  irq  |  µs/event: router  upstream  client"
        )
        for name in ("direct", "router"):
            r = phase[name]
            cpu = r["cpu"]
            per = r["cpu_us_per_event"]
            per_text = "".join(
                f"{'-' if per[k] is None else f'{per[k]:.2f}':>{w}}"
                for k, w in (("router", 18), ("upstream", 10), ("client", 8))
            )
            lines.append(
                f"  {name:<7}{cpu['wall_s']:>6.1f}s{r['events_per_s']:>10,}{r['streams_ok']:>8}"
                f"{r['failures']['count']:>7}"
                f"{fmt(r['ttfe_p50_ms'], '.1f', 'ms'):>10}{fmt(r['ttfe_p99_ms'], '.1f', 'ms'):>10}"
                f"{cpu['router_cpu_s']:>16.2f}{cpu['upstream_cpu_s']:>10.2f}{cpu['client_cpu_s']:>8.2f}"
                f"{cpu['other_processes_cpu_s']:>8.2f}{cpu['machine_cpu_s']['irq']:>5.2f}  |{per_text}"
            )
        lines.append(
            "  core busy % (router | direct): "
            + "; ".join(
                f"{core} {busy} | {phase['direct']['cpu']['core_busy_pct'].get(core)}"
                for core, busy in phase["router"]["cpu"]["core_busy_pct"].items()
            )
        )
        threads = phase["router"]["cpu"]["router_threads_cpu_s"]
        lines.append("  router CPU by thread: " + ", ".join(f"{k} {v:.2f} s" for k, v in threads.items()))
        lines.append("")
    t = results["targets"]
    met = "met" if t["added_ttfe_p99_le_1ms"] else "NOT met"
    lines.append(f"Target added TTFE p99 <= 1 ms: {fmt(c1['added_ttfe_p99_ms'], '.3f', ' ms')}, {met}")
    for k, v in t["server_cpu_per_event"].items():
        met = "met" if v["met"] else "NOT met"
        lines.append(f"Target server CPU <= 3 µs per streamed event ({k}): {v['router_cpu_us_per_event']} µs, {met}")
    lines.append(f"Failed streams in total: {results['failures_total']}")
    return "\n".join(lines)


async def run(
    args: argparse.Namespace, mocks: dict[str, Mock], router: subprocess.Popen[bytes], router_port: int
) -> dict[str, Any]:
    """The concurrency-1 phase, then the load phases, each against its own mock (`mocks`: phase -> mock)."""
    results: dict[str, Any] = {}
    c1_pair = targets(mocks["c1"], router_port, "c1")
    meter = Meter(router, mocks["c1"].process)
    # Sanity first: one correct stream each way, or nothing is timed.
    for target in c1_pair:
        conn = await Connection.open(target.port)
        try:
            _, problem = await one(conn, target)
        finally:
            conn.close()
        if problem is not None:
            log = getattr(router, "log_path", None)
            detail = f"\nrouter log (end):\n{log.read_text(errors='replace')[-3000:]}" if log else ""
            raise RuntimeError(f"{target.name}: the first stream is wrong: {problem}{detail}")
    print(f"concurrency 1: {args.requests} requests each ...", file=sys.stderr, flush=True)
    c1 = await concurrency_one(c1_pair, meter, args.requests, args.warmup)
    c1["events_per_stream"] = args.events_c1
    results["concurrency_1"] = c1
    results["load"] = {}
    for key, gap in (("burst", 0.0), ("paced", args.gap)):
        mock = mocks[key]
        n = mock.tokens
        pair = targets(mock, router_port, key)
        meter = Meter(router, mock.process)
        phase: dict[str, Any] = {
            "concurrency": args.concurrency,
            "events_per_stream": n,
            "upstream": "whole answer in one write" if gap == 0 else f"one event per write every {gap * 1000:g} ms",
            "offered_events_per_s": None if gap == 0 else round(args.concurrency / gap),
            "duration_s": args.duration,
        }
        for target in pair:
            duration = args.duration if target.name == "router" else args.duration * args.direct_share
            print(
                f"load {key} {target.name}: {args.concurrency} streams, {args.load_warmup:g} s + {duration:g} s ...",
                file=sys.stderr,
                flush=True,
            )
            # Paced streams start spread over one stream's length, and are measured once all have started.
            stagger = n * gap
            warmup = max(args.load_warmup, stagger + 0.5) if stagger else args.load_warmup
            phase[target.name] = await load(target, meter, args.concurrency, warmup, duration, stagger)
            phase[target.name]["warmup_s"] = warmup
            phase[target.name]["duration_s"] = duration
            await settle(meter)  # the cut streams' cleanup is not the next phase's
        results["load"][key] = phase
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer requests, shorter phases (< 30 s)")
    parser.add_argument("--requests", type=int, help="concurrency 1: timed requests each way (default 2000; quick 300)")
    parser.add_argument(
        "--warmup", type=int, help="concurrency 1: untimed requests each way first (default 100; quick 10)"
    )
    parser.add_argument("--events-c1", type=int, default=200, help="concurrency 1: text events (tokens) per answer")
    parser.add_argument("--concurrency", type=int, help="load: concurrent streams (default 256; quick 64)")
    parser.add_argument("--duration", type=float, help="load: seconds per router phase (default 20; quick 3)")
    parser.add_argument("--load-warmup", type=float, help="load: seconds before each window (default 3; quick 1)")
    parser.add_argument("--direct-share", type=float, default=0.5, help="direct phases last this share of --duration")
    parser.add_argument("--events", type=int, default=500, help="load 'burst': text events (tokens) per answer")
    parser.add_argument("--paced-events", type=int, help="load 'paced': text events (tokens) per answer (default 200)")
    parser.add_argument("--gap", type=float, default=0.05, help="load 'paced': seconds between a stream's events")
    parser.add_argument(
        "--core", type=Path, help="run the router with this native module (.so) instead of the installed one"
    )
    parser.add_argument(
        "--store", choices=["sqlite", "memory", "off"], help="the router's store (default: its default, sqlite)"
    )
    parser.add_argument(
        "--serve-args", default="", help='extra `ferroute serve` options, e.g. "--loop uvloop --task-impl rust"'
    )
    parser.add_argument("--no-pin", dest="pin", action="store_false", help="do not pin processes to cores")
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"JSON results (default {RESULTS.relative_to(REPO)})")
    args = parser.parse_args(argv)
    args.requests = args.requests or (300 if args.quick else 2000)
    args.warmup = args.warmup if args.warmup is not None else (10 if args.quick else 100)
    args.duration = args.duration or (3.0 if args.quick else 20.0)
    args.load_warmup = args.load_warmup if args.load_warmup is not None else (1.0 if args.quick else 3.0)
    args.paced_events = args.paced_events or (40 if args.quick else 200)
    args.concurrency = args.concurrency or (64 if args.quick else 256)

    cores = os.sched_getaffinity(0)
    pin = args.pin and len(cores) >= 2
    router_core, other_core = (min(cores), max(cores)) if pin else (None, None)
    results: dict[str, Any] = {
        "machine": machine_info(),
        "native": native_build(args.core),
        "pinning": (
            f"router (Granian main + workers) on core {router_core}; "
            f"mock upstreams and load generator on core {other_core}"
            if pin
            else "none"
        ),
        "router_workers": 1,
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
    }
    if results["native"]["profile"] == "debug":
        print("WARNING: the router's native module is a debug build; figures are not representative", file=sys.stderr)

    def _terminate(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, _terminate)
    began = time.monotonic()
    try:
        if pin:
            os.sched_setaffinity(0, {other_core})
        with contextlib.ExitStack() as stack:
            answers = {"c1": (args.events_c1, 0.0), "burst": (args.events, 0.0), "paced": (args.paced_events, args.gap)}
            mocks = {
                key: stack.enter_context(start_mock(other_core, tokens=n, gap_ms=gap * 1000))
                for key, (n, gap) in answers.items()
            }
            serve_args = shlex.split(args.serve_args)
            upstreams = {key: mock.port for key, mock in mocks.items()}
            router, router_port = stack.enter_context(
                start_router(upstreams, router_core, args.core, args.store, serve_args)
            )
            results.update(asyncio.run(run(args, mocks, router, router_port)))
    finally:
        signal.signal(signal.SIGTERM, previous)
        with contextlib.suppress(OSError):
            os.sched_setaffinity(0, cores)
    results["runtime_s"] = round(time.monotonic() - began, 1)
    c1 = results["concurrency_1"]
    results["failures_total"] = (
        c1["direct"]["failures"]["count"]
        + c1["router"]["failures"]["count"]
        + sum(p[t]["failures"]["count"] for p in results["load"].values() for t in ("direct", "router"))
    )
    results["targets"] = {
        "added_ttfe_p99_ms": c1["added_ttfe_p99_ms"],
        "added_ttfe_p99_le_1ms": c1["added_ttfe_p99_ms"] is not None and c1["added_ttfe_p99_ms"] <= 1.0,
        "server_cpu_per_event": {
            key: {
                "router_cpu_us_per_event": phase["router"]["cpu_us_per_event"]["router"],
                "met": (phase["router"]["cpu_us_per_event"]["router"] or float("inf")) <= 3.0,
            }
            for key, phase in results["load"].items()
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(table(results))
    print(f"\n(results in {args.out}; {results['runtime_s']} s)")
    return 0 if results["failures_total"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
