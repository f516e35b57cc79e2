"""WebSocket mode against SSE, side by side in one run: one `ferroute serve` (1 worker, pinned to the first core)
in front of the Rust mock upstream (the whole answer at once), `store: false`.

    .venv/bin/python -m bench.websocket            # ~1.5 minutes; writes bench/results/websocket.{json,txt}
    .venv/bin/python -m bench.websocket --quick

1. Concurrency 1, rounds alternating: time to first event (request written -> the first event read: SSE's first
   body bytes, WebSocket's first message) and to the last, p50/p99, over `--requests` responses each way. SSE with
   the load generator of `ferroute bench load` (one keep-alive connection); WebSocket with the `websockets`
   client (one connection, a `response.create` after each terminal event).
2. `--connections` (256) at once, each streaming back to back for `--duration` seconds: events delivered and the
   router's CPU (its process tree, from /proc) per event, each way. The WebSocket side's client is Python
   (`websockets` on asyncio) on the other core: it may deliver fewer events per second than the Rust load
   generator; CPU per event is the router's own either way.
3. Granian's own floor for the WebSocket side (`bench/floor_app.py`: `websocket`, no ferroute code: each text
   message answered with as many text messages of an event's size as a response here has events, each send
   awaited), served alone (1 worker, uvloop, the router's core) under the same 256-connection client: its CPU per
   message is what any app pays on Granian's ASGI interface for one awaited `websocket.send`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.harness import (
    REPO,
    cpu_seconds,
    free_port,
    machine_info,
    pinned,
    start_mock,
    start_router,
    stop,
    write_results,
)
from ferroute.loadtest.load import run_load

RESULTS = REPO / "bench" / "results" / "websocket.json"
TERMINAL = (b'"type":"response.completed"', b'"type":"response.failed"', b'"type":"response.incomplete"')


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _ws_responses(url: str, body: str, count: int | None, until: float | None) -> tuple[list[float], int]:
    """On one connection, responses back to back: their times to first event (ms), and the events received."""
    from websockets.asyncio.client import connect

    firsts: list[float] = []
    events = 0
    async with connect(url, max_size=None, compression=None) as ws:
        while (count is None or len(firsts) < count) and (until is None or time.monotonic() < until):
            began = time.perf_counter()
            await ws.send(body)
            first = True
            while True:
                message = await ws.recv(decode=False)
                if first:
                    firsts.append(1000 * (time.perf_counter() - began))
                    first = False
                events += 1
                if any(t in message[:60] for t in TERMINAL):
                    break
    return firsts, events


def _ws_run(
    url: str, body: str, connections: int, count: int | None, duration: float | None
) -> tuple[list[float], int]:
    async def run() -> tuple[list[float], int]:
        until = time.monotonic() + duration if duration else None
        results = await asyncio.gather(*(_ws_responses(url, body, count, until) for _ in range(connections)))
        return [t for firsts, _ in results for t in firsts], sum(n for _, n in results)

    return asyncio.run(run())


def _floor(core: int | None, messages: int, connections: int, duration: float, body: str) -> dict[str, float]:
    """Granian's floor (part 3): its CPU per message, best of 2 windows."""
    port = free_port()
    command = [sys.executable, "-m", "granian", "--interface", "asgi", "--loop", "uvloop"]
    command += ["--host", "127.0.0.1", "--port", str(port), "--workers", "1", "bench.floor_app:websocket"]
    env = {**os.environ, "FLOOR_MESSAGES": str(messages)}
    process = subprocess.Popen(
        pinned(command, core), cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    url = f"ws://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                _ws_run(url, body, 1, 1, None)
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the WebSocket floor app did not start") from None
                time.sleep(0.2)
        _ws_run(url, body, 4, 50, None)  # (warm-up)
        windows = []
        for _ in range(2):
            before, wall = cpu_seconds(process.pid), time.monotonic()
            _, events = _ws_run(url, body, connections, None, duration)
            cpu, wall = cpu_seconds(process.pid) - before, time.monotonic() - wall
            windows.append({"events_per_s": events / wall, "cpu_us_per_event": 1e6 * cpu / events})
            print(f"floor {windows[-1]['events_per_s']:,.0f} messages/s, {windows[-1]['cpu_us_per_event']:.2f} µs CPU")
    finally:
        stop(process)
    return {
        "cpu_us_per_event": min(w["cpu_us_per_event"] for w in windows),
        "events_per_s": max(w["events_per_s"] for w in windows),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--requests", type=int, default=1000, help="responses per round each way (part 1)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=256, help="connections (part 2)")
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per window (part 2)")
    parser.add_argument("--tokens", type=int, default=50, help="text tokens per answer")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.quick:
        args.requests, args.rounds, args.duration = 300, 3, 3.0
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    router_core, mock_core = (cores[0], cores[-1]) if len(cores) >= 2 else (None, None)
    store_off = '\n[store]\nbackend = "memory"\ndefault_store = false\n'
    request = {"model": "bench:up", "input": "Say something.", "store": False}
    sse_body = json.dumps({**request, "stream": True}).encode()
    ws_body = json.dumps({"type": "response.create", **request})
    results: dict[str, Any] = {"command": "python -m bench.websocket", "machine": machine_info()}
    with contextlib.ExitStack() as stack:
        mock = stack.enter_context(start_mock(mock_core, tokens=args.tokens))
        process, port = stack.enter_context(start_router({"up": mock.port}, router_core, extra_config=store_off))
        http, ws = f"http://127.0.0.1:{port}", f"ws://127.0.0.1:{port}/v1/responses"
        run_load(http, sse_body, requests=200, concurrency=4)  # (warm-up)
        _ws_run(ws, ws_body, 4, 50, None)
        _, per_response = _ws_run(ws, ws_body, 1, 1, None)  # (the events of one response: the floor sends as many)
        rounds: dict[str, list[dict[str, float]]] = {"sse": [], "websocket": []}
        for r in range(args.rounds):
            for way in ("sse", "websocket") if r % 2 == 0 else ("websocket", "sse"):
                if way == "sse":
                    load = run_load(http, sse_body, requests=args.requests, concurrency=1)
                    p50, p99 = load["ttfe_ms"]["p50"], load["ttfe_ms"]["p99"]
                else:
                    firsts, _ = _ws_run(ws, ws_body, 1, args.requests, None)
                    p50, p99 = _percentile(firsts, 0.5), _percentile(firsts, 0.99)
                rounds[way].append({"ttfe_p50_ms": p50, "ttfe_p99_ms": p99})
                print(f"round {r + 1} {way:9} TTFE p50 {p50:.3f} ms p99 {p99:.3f} ms", flush=True)
        load_windows: dict[str, list[dict[str, float]]] = {"sse": [], "websocket": []}
        for r in range(2):
            for way in ("sse", "websocket") if r % 2 == 0 else ("websocket", "sse"):
                before, wall = cpu_seconds(process.pid), time.monotonic()
                if way == "sse":
                    load = run_load(http, sse_body, concurrency=args.connections, duration=args.duration)
                    events = load["events"]
                else:
                    _, events = _ws_run(ws, ws_body, args.connections, None, args.duration)
                cpu = cpu_seconds(process.pid) - before
                wall = time.monotonic() - wall
                window = {"events": events, "events_per_s": events / wall, "cpu_us_per_event": 1e6 * cpu / events}
                load_windows[way].append(window)
                print(
                    f"load {r + 1} {way:9} {window['events_per_s']:,.0f} events/s, router "
                    f"{window['cpu_us_per_event']:.2f} µs CPU per event",
                    flush=True,
                )
    floor = _floor(router_core, per_response, args.connections, args.duration, ws_body)
    summary: dict[str, Any] = {}
    for way in ("sse", "websocket"):
        summary[way] = {
            "ttfe_p50_ms": statistics.median(r["ttfe_p50_ms"] for r in rounds[way]),
            "ttfe_p99_ms": statistics.median(r["ttfe_p99_ms"] for r in rounds[way]),
            "cpu_us_per_event": min(w["cpu_us_per_event"] for w in load_windows[way]),
            "events_per_s": max(w["events_per_s"] for w in load_windows[way]),
        }
    summary["floor"] = {**floor, "messages_per_response": per_response}
    results.update(rounds=rounds, load=load_windows, summary=summary)
    lines = [f"{args.tokens}-token answers; TTFE: median of {args.rounds} rounds of {args.requests}; load: "
             f"{args.connections} connections, best of 2 windows of {args.duration:g} s"]  # fmt: skip
    for way in ("sse", "websocket"):
        s = summary[way]
        lines.append(
            f"  {way:9} TTFE p50 {s['ttfe_p50_ms']:.3f} ms p99 {s['ttfe_p99_ms']:.3f} ms   "
            f"{s['events_per_s']:,.0f} events/s  {s['cpu_us_per_event']:.2f} µs router CPU per event"
        )
    lines.append(
        f"  floor     Granian alone, {per_response} awaited websocket.send per message received: "
        f"{floor['events_per_s']:,.0f} messages/s  {floor['cpu_us_per_event']:.2f} µs CPU per message"
    )
    text = "\n".join(lines)
    print(text)
    write_results(args.out, results, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
