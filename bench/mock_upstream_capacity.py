"""The mock upstream's own cost: its CPU per streamed event when the Rust load generator drives it directly.

    .venv/bin/python -m bench.mock_upstream_capacity     # ~40 s; writes bench/results/mock_upstream_capacity.json
    .venv/bin/python -m bench.mock_upstream_capacity --build old=/tmp/overlay-old --build new=/tmp/overlay-new

The mock (`MockUpstream`, what `ferroute mock-upstream` runs: `--tokens` tokens, `--gap-ms` ms
between them, time to first token 0) runs in its own process; the load generator (`LoadGenerator`,
as `ferroute bench load` runs it) runs in this one, `--concurrency` clients in a closed loop asking
for streaming Chat Completions. With at least 2 cores the mock is pinned to core 0 and the load
generator's threads to the last core; the sampling threads run at real-time priority (where allowed:
root or CAP_SYS_NICE) so that busy cores cannot starve them.
Each `--build` (LABEL=PYTHONPATH: where the mock's `ferroute` package comes from; this process's own
`ferroute` runs the load) is run at each level in turn, interleaved, for `--rounds` rounds (the order
of the builds rotated each round, so that drift on the machine hits all alike); the table shows the
median run of each build and level.

Measured over the interval the load generator measures (`--duration` s after `--warmup` s): the
events the mock sent (the bytes it wrote, from its counters, over the bytes per event of one whole
answer), the mock process's CPU time (user + system, /proc/PID/stat: clock ticks, so keep
`--duration` at a few seconds), and the gaps between events the clients saw (p50, p99). Derived:
mock CPU µs per event, the mock's CPU use (cores), and events/s per mock core (events/s / cores):
what one core of the mock could serve, to set beside the router's CPU per event: a mock that is not the
bottleneck costs a small fraction of it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from bench.harness import REPO, cpu_seconds
from ferroute._core import LoadGenerator

RESULTS = REPO / "bench" / "results" / "mock_upstream_capacity.json"
CORES = os.cpu_count() or 1
BODY = json.dumps({"model": "mock", "messages": [{"role": "user", "content": "Say hello."}], "stream": True}).encode()


class Mock:
    """The mock upstream (`ferroute._core.MockUpstream`, what `ferroute mock-upstream` runs) in a child
    process pinned to core 0, which answers each line on its stdin with its counters."""

    def __init__(self, pythonpath: str | None, tokens: int, gap_ms: str) -> None:
        env = dict(os.environ)
        if pythonpath is not None:
            env["PYTHONPATH"] = pythonpath
        args = [sys.executable, "-m", "bench.mock_upstream_capacity", "--serve-mock", "--tokens", str(tokens)]
        self.process = subprocess.Popen(
            [*args, "--gap-ms", gap_ms], cwd=REPO, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            text=True, preexec_fn=pin(0),
        )  # fmt: skip
        assert self.process.stdin is not None and self.process.stdout is not None
        self.stdin, self.stdout = self.process.stdin, self.process.stdout
        line = self.stdout.readline()
        if not line:
            raise RuntimeError(f"the mock exited with {self.process.wait(timeout=10)}")
        self.url = f"http://127.0.0.1:{int(line)}"

    def sample(self) -> Sample:
        """(time, the process's CPU s, bytes the server wrote)."""
        self.stdin.write("\n")
        self.stdin.flush()
        written = int(json.loads(self.stdout.readline())["bytes"])
        return time.monotonic(), cpu_seconds(self.process.pid, tree=False), written

    def close(self) -> None:
        self.stdin.close()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
        self.stdout.close()


Sample = tuple[float, float, int]


def serve_mock(tokens: int, gap_ms: str) -> None:
    """The child's side of `Mock`."""
    from ferroute._core import MockUpstream
    from ferroute.loadtest.mock_upstream import parse_gap

    gap_min, gap_max = parse_gap(gap_ms)
    with MockUpstream(tokens=tokens, gap_ms=gap_min, gap_max_ms=gap_max) as server:
        # Only this thread (the server's are made): answering at once, whatever the server's load.
        realtime_thread()
        print(server.port, flush=True)
        for _ in sys.stdin:
            print(json.dumps(server.stats()), flush=True)


def pin(core: int) -> Any:
    def apply() -> None:
        if CORES >= 2:
            os.sched_setaffinity(0, {core})

    return apply


def _set_thread(tid: int, core: int | None, policy: int, priority: int) -> None:
    with contextlib.suppress(OSError, AttributeError):
        os.sched_setscheduler(tid, policy, os.sched_param(priority))
    if core is not None and CORES >= 2:
        with contextlib.suppress(OSError):
            os.sched_setaffinity(tid, {core})


def realtime_thread(core: int | None = None) -> None:
    """This thread at real-time priority (where allowed: root or CAP_SYS_NICE), so that a core full of
    busy threads (the clients) cannot starve it; optionally onto `core`."""
    _set_thread(0, core, getattr(os, "SCHED_FIFO", 0), 1)


def normal_thread(core: int | None = None) -> None:
    _set_thread(0, core, getattr(os, "SCHED_OTHER", 0), 0)


def start_load(url: str, concurrency: int, duration: float, warmup: float) -> LoadGenerator:
    """The load generator, its threads on the last core at normal priority."""
    # Made by a real-time thread (their creator, which they inherit from) on the client core: a normal
    # one, next to the first few hundred busy clients, would get a share too small to make the rest.
    realtime_thread(CORES - 1)
    try:
        generator = LoadGenerator(
            f"{url}/v1/chat/completions", BODY, concurrency=concurrency, duration=duration, warmup=warmup,
            timeout=30, check_grammar=False,
        )  # fmt: skip
        me = threading.get_native_id()
        for task in os.listdir("/proc/self/task"):
            if int(task) != me:
                _set_thread(int(task), None, getattr(os, "SCHED_OTHER", 0), 0)
    finally:
        normal_thread(0)
    return generator


def bytes_per_event(url: str) -> float:
    """The bytes of one whole streamed answer (head included) over its SSE events."""
    host, port = url.removeprefix("http://").split(":")
    request = b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nconnection: close\r\n"
    request += b"content-length: %d\r\n\r\n%s" % (len(BODY), BODY)
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(request)
        answer = b""
        while data := sock.recv(1 << 16):
            answer += data
    return len(answer) / answer.count(b"data: ")


def sample_mock(generator: LoadGenerator, mock: Mock, end: float) -> tuple[Sample, Sample]:
    """Samples when the load generator starts measuring and just before it stops starting requests
    (`end` s after it started)."""
    first: Sample | None = None
    while not generator.finished:
        time.sleep(0.02)
        progress = generator.progress()
        if not progress["measuring"]:
            continue
        if first is None:
            first = mock.sample()
        elif progress["elapsed_s"] >= end - 0.1:
            return first, mock.sample()
    raise RuntimeError("the run was too short to measure: raise --duration")


def one_run(mock: Mock, concurrency: int, duration: float, warmup: float) -> dict[str, Any]:
    """One load run; the mock's CPU and the events it sent over the interval the load generator measures."""
    per_event = bytes_per_event(mock.url)
    generator = start_load(mock.url, concurrency, duration, warmup)
    realtime_thread(0)
    try:
        first, last = sample_mock(generator, mock, warmup + duration)
    finally:
        normal_thread(0)
    result: dict[str, Any] = json.loads(generator.result())
    wall, cpu, written = (b - a for a, b in zip(first, last, strict=True))
    # Events the mock sent in the interval, from the bytes it wrote: the load generator counts events
    # only when their stream ends, a lag of a whole stream (seconds when the mock is behind).
    events_per_s = written / per_event / wall
    cores = cpu / wall
    us_per_event = cores * 1e6 / events_per_s if events_per_s else None
    return {
        "concurrency": concurrency,
        "window_s": round(wall, 3),
        "events_per_s": round(events_per_s),
        "client_events_per_s": round(result["events_per_s"]),
        "mock_cpu_cores": round(cores, 4),
        "mock_cpu_us_per_event": None if us_per_event is None else round(us_per_event, 3),
        "events_per_s_per_mock_core": round(events_per_s / cores) if cores > 0 else None,
        "gap_ms_p50": result["gap_ms"]["p50"],
        "gap_ms_p99": result["gap_ms"]["p99"],
        "client_cpu_us_per_event": result["client_cpu_us_per_event"],
        "errors": result["errors"],
        "errors_by_kind": result["errors_by_kind"],
    }


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median mock CPU per event (a real run, so that its numbers agree with each other)."""
    ordered = sorted(runs, key=lambda run: run["mock_cpu_us_per_event"] or 0.0)
    return {**ordered[(len(ordered) - 1) // 2], "all_us_per_event": [run["mock_cpu_us_per_event"] for run in ordered]}


def _f(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def table(runs: list[dict[str, Any]]) -> str:
    lines = [
        "build      streams   events/s   mock cores   mock µs/event   events/s per mock core   gap p50/p99 ms   errors"
    ]
    lines.extend(
        f"{run['build']:<10} {run['concurrency']:7d} {run['events_per_s']:10,d} {run['mock_cpu_cores']:12.3f} "
        f"{_f(run['mock_cpu_us_per_event'], '15.2f')} {_f(run['events_per_s_per_mock_core'], '24,d')} "
        f"{_f(run['gap_ms_p50'], '8.2f')}/{_f(run['gap_ms_p99'], '<7.2f')} {run['errors']:6d}"
        for run in runs
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrency", default="64,256,1024", help="comma-separated stream counts")
    parser.add_argument("--duration", type=float, default=4.0, help="measured seconds per run")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds per run before measuring")
    parser.add_argument("--rounds", type=int, default=1, help="runs per build and level (the median is shown)")
    parser.add_argument("--tokens", type=int, default=100, help="tokens per answer")
    parser.add_argument("--gap-ms", default="2", help="the mock's gap between tokens, ms (A or A-B)")
    parser.add_argument(
        "--build", action="append", default=[], metavar="LABEL=PYTHONPATH",
        help="a mock build to measure (repeatable); default: the ferroute this process imports",
    )  # fmt: skip
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"JSON results (default {RESULTS.relative_to(REPO)})")
    parser.add_argument("--serve-mock", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_mock:
        serve_mock(args.tokens, args.gap_ms)
        return 0
    levels = [int(x) for x in args.concurrency.split(",") if x.strip()]
    builds: list[tuple[str, str | None]] = []
    for spec in args.build:
        label, sep, path = spec.partition("=")
        if not sep or not label:
            parser.error(f"--build {spec!r}: expected LABEL=PYTHONPATH")
        builds.append((label, path))
    builds = builds or [("current", None)]
    normal_thread(0)  # this thread only samples; the clients go to the last core
    runs: list[dict[str, Any]] = []
    for round_ in range(args.rounds):
        shift = round_ % len(builds)
        for level in levels:
            for label, path in builds[shift:] + builds[:shift]:
                mock = Mock(path, args.tokens, args.gap_ms)
                try:
                    run = one_run(mock, level, args.duration, args.warmup)
                finally:
                    mock.close()
                runs.append({"build": label, "round": round_, **run})
                print(table(runs[-1:]).splitlines()[1], file=sys.stderr, flush=True)
    medians = [
        median_run([run for run in runs if run["build"] == label and run["concurrency"] == level])
        for level in levels
        for label, _ in builds
    ]
    print(
        f"{CORES} cores; mock on core 0, load generator on core {CORES - 1}; {args.tokens} tokens, gap {args.gap_ms} ms"
    )
    if args.rounds > 1:
        print(f"median of {args.rounds} rounds (by mock µs/event):")
    print(table(medians))
    if args.out:
        settings = {"tokens": args.tokens, "gap_ms": args.gap_ms, "duration_s": args.duration, "cores": CORES}
        results = {"settings": settings, "medians": medians, "runs": runs}
        args.out.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
