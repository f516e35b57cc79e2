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
   2,000 requests each way by default: a p99 of 300 rests on its 3 slowest requests, and on these
   shared VMs it moved from 0.6 to 1.5 ms between runs of the same code (2,000: 20 requests).
2. Under load: `--concurrency` (256) keep-alive connections each streaming back to back, measured
   over a `--duration` window after `--load-warmup` s (streams still in flight at the end are cut,
   not counted), for two upstream behaviours: `burst` (each answer written at once, one HTTP chunk
   per SSE event, as uvicorn/vLLM frame it) and `paced` (one event per write every `--gap` s per
   stream, like token generation). Reported: events/s delivered to the clients, CPU time (user+sys
   from /proc/<pid>/stat) of the router (Granian's main process and all its workers, and per thread),
   the mock upstream and the load generator (this process); router CPU / events delivered = server CPU
   µs per streamed event. /proc/stat shows what other processes on the machine used meanwhile.

With at least 2 cores, processes are pinned (`taskset` / `sched_setaffinity`): the router on the
first core, the mock upstream and the load generator on the last (`--no-pin`: not pinned).
Every stream is checked (status 200, `data: [DONE]` last, `response.completed` right before it with
the upstream's whole text, the expected number of events; keep-alive comments are not events) and
failures are counted and reported, never timed.

The upstream is `bench/fast_upstream.py` (a raw asyncio protocol serving pre-built bytes) and the load
generator a minimal HTTP/1.1 client on a raw asyncio protocol, so that neither is the bottleneck;
their CPU is reported next to the router's so a reader can check.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import hashlib
import json
import os
import platform
import random
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import fast_upstream

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results" / "router_overhead.json"
DONE = b"data: [DONE]\n\n"
PING = b": ping\n\n"
STREAM_TIMEOUT = 60.0  # seconds one stream may take before it counts as failed
CLK_TCK = os.sysconf("SC_CLK_TCK")


# --- processes and CPU accounting ------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _proc_stat(pid: int) -> tuple[int, float] | None:
    """(ppid, user+sys CPU seconds) of a live process, or None."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    fields = raw[raw.rfind(b")") + 2 :].split()
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / CLK_TCK


def _tree(root: int) -> list[int]:
    """`root` and all its descendants (Granian's workers are children of its main process)."""
    children: dict[int, list[int]] = collections.defaultdict(list)
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = _proc_stat(int(entry))
            if stat is not None:
                children[stat[0]].append(int(entry))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def cpu_seconds(root: int, tree: bool = True) -> float:
    total = 0.0
    for pid in _tree(root) if tree else [root]:
        stat = _proc_stat(pid)
        if stat is not None:
            total += stat[1]
    return total


def machine_cpu() -> dict[str, dict[str, float]]:
    """Per line of /proc/stat (`cpu`, `cpu0`, …): seconds in processes (user+nice+system), in interrupts
    (irq+softirq: loopback TCP is processed there), stolen by the hypervisor, and idle (idle+iowait)."""
    out = {}
    for line in Path("/proc/stat").read_text().splitlines():
        if not line.startswith("cpu"):
            break
        name, *values = line.split()
        user, nice, system, idle, iowait, irq, softirq, steal = (int(v) / CLK_TCK for v in values[:8])
        out[name] = {"process": user + nice + system, "irq": irq + softirq, "steal": steal, "idle": idle + iowait}
    return out


def thread_cpu(root: int) -> dict[str, float]:
    """CPU seconds of the threads of `root`'s tree, summed by (process role, thread name)."""
    out: dict[str, float] = collections.defaultdict(float)
    for pid in _tree(root):
        role = "main" if pid == root else "worker"
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{pid}/task").iterdir():
                with contextlib.suppress(OSError):
                    raw = (task / "stat").read_bytes()
                    name = raw[raw.index(b"(") + 1 : raw.rfind(b")")].decode(errors="replace")
                    fields = raw[raw.rfind(b")") + 2 :].split()
                    out[f"{role}:{name}"] += (int(fields[11]) + int(fields[12])) / CLK_TCK
    return out


class Meter:
    """CPU seconds of the router tree, the upstream and this process over a phase, and the machine's."""

    def __init__(self, router: subprocess.Popen[bytes], upstream: subprocess.Popen[str]) -> None:
        self.router, self.router_pid, self.upstream_pid = router, router.pid, upstream.pid

    def snap(self) -> dict[str, Any]:
        return {
            "t": time.perf_counter(),
            "router": cpu_seconds(self.router_pid),
            "upstream": cpu_seconds(self.upstream_pid),
            "client": cpu_seconds(os.getpid(), tree=False),
            "machine": machine_cpu(),
            "router_threads": thread_cpu(self.router_pid),
        }

    @staticmethod
    def diff(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
        wall = b["t"] - a["t"]
        out: dict[str, Any] = {"wall_s": round(wall, 3)}
        for key in ("router", "upstream", "client"):
            out[f"{key}_cpu_s"] = round(b[key] - a[key], 3)
        ours = b["router"] + b["upstream"] + b["client"] - a["router"] - a["upstream"] - a["client"]
        machine = {k: b["machine"]["cpu"][k] - a["machine"]["cpu"][k] for k in b["machine"]["cpu"]}
        out["machine_cpu_s"] = {k: round(v, 3) for k, v in machine.items()}
        # Processes other than ours (other users of this machine; a busy neighbour skews everything).
        out["other_processes_cpu_s"] = round(max(0.0, machine["process"] - ours), 3)
        out["core_busy_pct"] = {
            name: round(
                100 * sum(b["machine"][name][k] - a["machine"][name][k] for k in ("process", "irq")) / max(1e-9, wall),
                1,
            )
            for name in b["machine"]
            if name != "cpu"
        }
        out["router_threads_cpu_s"] = {
            k: round(v - a["router_threads"].get(k, 0.0), 3)
            for k, v in sorted(b["router_threads"].items())
            if v - a["router_threads"].get(k, 0.0) > 0
        }
        return out


def _stop(process: subprocess.Popen[Any]) -> None:
    """SIGTERM (Granian stops its workers), then SIGKILL to the whole process group."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            process.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=10)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)  # whatever of its group is left (workers)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=10)


def _pinned(args: list[str], core: int | None) -> list[str]:
    taskset = shutil.which("taskset")
    return [taskset, "-c", str(core), *args] if core is not None and taskset else args


@contextlib.contextmanager
def start_upstream(core: int | None) -> Iterator[tuple[subprocess.Popen[str], int]]:
    process = subprocess.Popen(
        _pinned([sys.executable, "-m", "bench.fast_upstream", "--port", "0"], core),
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()  # "PORT n" once listening (or EOF if it died)
        if not line.startswith("PORT "):
            raise RuntimeError(f"the mock upstream did not start: {line!r}")
        yield process, int(line.split()[1])
    finally:
        _stop(process)
        if process.stdout is not None:
            process.stdout.close()


def _overlay(core_so: Path, tmp: Path) -> Path:
    """A copy of python/ferroute with `core_so` as its native module (for --core)."""
    package = tmp / "overlay" / "ferroute"
    shutil.copytree(REPO / "python" / "ferroute", package, ignore=shutil.ignore_patterns("_core*.so", "__pycache__"))
    suffix = next((REPO / "python" / "ferroute").glob("_core*.so"), Path("_core.so")).name
    shutil.copy2(core_so, package / suffix)
    return package.parent


def _store_config(store: str | None) -> str:
    """`--store`: the router's default (sqlite), `memory`, or `off` (`default_store = false`)."""
    if store is None:
        return ""
    if store == "off":
        return "\n[store]\ndefault_store = false\n"
    return f'\n[store]\nbackend = "{store}"\n'


@contextlib.contextmanager
def start_router(
    upstream_port: int,
    core: int | None,
    core_so: Path | None,
    store: str | None = None,
    serve_args: Sequence[str] = (),
) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    with tempfile.TemporaryDirectory(prefix="ferroute-bench-") as tmp_name:
        tmp = Path(tmp_name)
        config = tmp / "ferroute.toml"
        config.write_text(
            f"""
[server]
shutdown_grace = 1

[[providers]]
name = "fast"
kind = "chat_completions"
base_url = "http://127.0.0.1:{upstream_port}/v1"
"""
            + _store_config(store)
        )
        port = _free_port()
        env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
        if core_so is not None:
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(_overlay(core_so, tmp)), env.get("PYTHONPATH")]))
        args = [sys.executable, "-m", "ferroute", "serve", "--config", str(config), "--host", "127.0.0.1", *serve_args]
        log_path = tmp / "router.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                _pinned([*args, "--port", str(port)], core),
                cwd=tmp,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        try:
            deadline = time.monotonic() + 60
            while True:
                if process.poll() is not None:
                    raise RuntimeError(f"ferroute serve exited with {process.returncode}:\n{log_path.read_text()}")
                with (
                    contextlib.suppress(OSError),
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as answer,
                ):
                    if answer.status == 200:
                        break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"ferroute serve did not become ready:\n{log_path.read_text()}")
                time.sleep(0.1)
            process.log_path = log_path  # type: ignore[attr-defined]  # for error messages
            yield process, port
        finally:
            _stop(process)


# --- the load generator: a minimal HTTP/1.1 client on a raw asyncio protocol ------------------------


@dataclass(slots=True)
class Result:
    status: int = 0
    ttfe: float = 0.0  # seconds from writing the request to the first body bytes
    total: float = 0.0  # seconds from writing the request to the end of the body
    frames: int = 0  # SSE frames ("\n\n"-terminated blocks) in the body, [DONE] included, keep-alives not
    pings: int = 0  # `: ping` keep-alive comments (the router sends one after 15 s of upstream silence)
    tail: bytes = b""  # the end of the body (enough to hold the terminal event)
    error: str | None = None


class Connection(asyncio.Protocol):
    """One keep-alive connection; `request()` sends one request and returns its checked-later `Result`.

    The body is dechunked and scanned as it arrives (frame count, tail), never kept whole."""

    tail_keep = 1 << 18

    def __init__(self, counter: list[int] | None = None) -> None:
        self.transport: asyncio.Transport | None = None
        self.waiter: asyncio.Future[Result] | None = None
        self.lost: Exception | None = None
        self.counter = counter  # [SSE frames received] shared by a load phase's connections

    @classmethod
    async def open(cls, port: int, counter: list[int] | None = None) -> Connection:
        loop = asyncio.get_running_loop()
        _, protocol = await loop.create_connection(lambda: cls(counter), "127.0.0.1", port)
        return protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = exc or ConnectionError("connection closed")
        self.transport = None
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError(f"connection lost mid-response: {self.lost}"))

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    async def request(self, raw: bytes) -> Result:
        if self.transport is None:
            raise ConnectionError("connection closed")
        self.waiter = asyncio.get_running_loop().create_future()
        self.result = Result()
        self.buffer = b""
        self.head_done = False
        self.chunked = False
        self.remaining = 0  # bytes left in the current chunk (or of a content-length body)
        self.skip = 0  # CRLF bytes to skip after a chunk
        self.carry = b""  # the previous payload's last bytes (a frame end or ping split across reads)
        self.tail: collections.deque[bytes] = collections.deque()
        self.tail_size = 0
        self.started = time.perf_counter()
        self.transport.write(raw)
        return await self.waiter

    def data_received(self, data: bytes) -> None:
        if self.waiter is None or self.waiter.done():
            return
        if self.buffer:
            data = self.buffer + data
            self.buffer = b""
        if not self.head_done:
            end = data.find(b"\r\n\r\n")
            if end < 0:
                self.buffer = data
                return
            lines = data[:end].split(b"\r\n")
            self.result.status = int(lines[0].split()[1])
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                if name == b"transfer-encoding" and b"chunked" in value.lower():
                    self.chunked = True
                elif name == b"content-length":
                    self.remaining = int(value)
            self.head_done = True
            data = data[end + 4 :]
            if not self.chunked and self.remaining == 0:
                self._finish()
                return
        if not self.chunked:
            self._payload(data)
            self.remaining -= len(data)
            if self.remaining <= 0:
                self._finish()
            return
        pos, size = 0, len(data)
        while pos < size:
            if self.remaining:
                take = min(self.remaining, size - pos)
                self._payload(data[pos : pos + take] if take != size else data)
                pos += take
                self.remaining -= take
                if not self.remaining:
                    self.skip = 2
            elif self.skip:
                take = min(self.skip, size - pos)
                pos += take
                self.skip -= take
            else:
                eol = data.find(b"\r\n", pos)
                if eol < 0:
                    self.buffer = data[pos:]
                    return
                length = int(data[pos:eol].split(b";")[0], 16)
                pos = eol + 2
                if length == 0:  # last chunk (no trailers from these servers): "0\r\n\r\n"
                    if size - pos < 2:
                        self.buffer = b"0\r\n" + data[pos:]  # parsed again once the final CRLF is here
                        return
                    self._finish()
                    return
                self.remaining = length

    def _payload(self, chunk: bytes) -> None:
        if not chunk:
            return
        result = self.result
        if not result.ttfe:
            result.ttfe = time.perf_counter() - self.started
        carry = self.carry
        joined = carry + chunk
        frames = joined.count(b"\n\n") - carry.count(b"\n\n")
        pings = joined.count(PING) - carry.count(PING)
        self.carry = joined[-len(PING) + 1 :]
        result.frames += frames - pings
        result.pings += pings
        if self.counter is not None:
            self.counter[0] += frames - pings
        self.tail.append(chunk)
        self.tail_size += len(chunk)
        while self.tail_size - len(self.tail[0]) >= self.tail_keep:
            self.tail_size -= len(self.tail.popleft())

    def _finish(self) -> None:
        result = self.result
        result.total = time.perf_counter() - self.started
        result.tail = b"".join(self.tail)
        self.tail.clear()
        assert self.waiter is not None
        self.waiter.set_result(result)


def http_post(path: str, port: int, body: bytes) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\ncontent-type: application/json\r\n"
        f"accept: text/event-stream\r\ncontent-length: {len(body)}\r\n\r\n"
    ).encode() + body


# --- what a correct stream looks like ------------------------------------------------------------


@dataclass
class Target:
    """One way to get an `n`-event stream: the request bytes and how to check the answer."""

    name: str  # "direct" | "router"
    port: int
    raw: bytes
    frames: int  # expected SSE frames, [DONE] included
    text: str

    def check(self, result: Result) -> str | None:
        """None when the stream is complete and correct, else what is wrong."""
        if result.error is not None:
            return result.error
        if result.status != 200:
            return f"status {result.status}"
        tail = result.tail
        if not tail.endswith(DONE):
            return "no data: [DONE] at the end"
        if result.frames != self.frames:
            return f"{result.frames} frames, expected {self.frames}"
        if self.name == "direct":
            return None
        end = len(tail) - len(DONE) - 2  # the "\n\n" ending the frame before [DONE]
        start = tail.rfind(b"\n\n", 0, end) + 2
        if start < 2:
            return "terminal event larger than the kept tail"
        frame = tail[start:end]
        if not frame.startswith(b"event: response.completed\ndata: "):
            return f"terminal event is not response.completed: {frame[:60]!r}"
        try:
            response = json.loads(frame[frame.index(b"\ndata: ") + 7 :])["response"]
            text = "".join(part["text"] for item in response["output"] for part in item["content"])
        except (ValueError, KeyError, TypeError) as e:
            return f"malformed response.completed: {e!r}"
        if response["status"] != "completed":
            return f"response status {response['status']}"
        if text != self.text:
            return "response.completed text differs from the upstream's"
        return None


def _expected_router_frames(body: bytes, n: int) -> int:
    from ferroute import _core

    translator = _core.ChatCompletionsTranslator(body)
    out = translator.feed(b"".join(fast_upstream.sse_events(n))) + translator.finish()
    return out.count(b"\n\n")


def targets(upstream_port: int, router_port: int, n: int, gap: float) -> tuple[Target, Target]:
    model = f"bench?n={n}&gap={gap:g}"
    chat = {
        "model": model,
        "messages": [{"role": "user", "content": "Say something."}],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    chat_body = json.dumps(chat).encode()
    responses_body = json.dumps({"model": f"{model}:fast", "input": "Say something.", "stream": True}).encode()
    direct = Target(
        "direct",
        upstream_port,
        http_post("/v1/chat/completions", upstream_port, chat_body),
        len(fast_upstream.sse_events(n)),
        fast_upstream.text(n),
    )
    router = Target(
        "router",
        router_port,
        http_post("/v1/responses", router_port, responses_body),
        _expected_router_frames(responses_body, n),
        fast_upstream.text(n),
    )
    return direct, router


async def one(conn: Connection, target: Target) -> tuple[Result, str | None]:
    try:
        result = await asyncio.wait_for(conn.request(target.raw), STREAM_TIMEOUT)
    except (OSError, asyncio.TimeoutError) as e:
        result = Result(error=f"{type(e).__name__}: {e}")
    return result, target.check(result)


# --- the two measurements --------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = q / 100 * (len(ordered) - 1)
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def _ms(values: list[float]) -> dict[str, float | None]:
    """Milliseconds, or None where there is no sample (JSON has no NaN)."""
    if not values:
        return {"p50_ms": None, "p99_ms": None, "mean_ms": None, "max_ms": None}
    return {
        "p50_ms": round(1000 * percentile(values, 50), 4),
        "p99_ms": round(1000 * percentile(values, 99), 4),
        "mean_ms": round(1000 * sum(values) / len(values), 4),
        "max_ms": round(1000 * max(values), 4),
    }


def _fmt(value: float | None, spec: str, unit: str = "") -> str:
    return "-" if value is None else f"{value:{spec}}{unit}"


def _failures(reasons: list[str]) -> dict[str, Any]:
    counts = collections.Counter(reasons)
    return {"count": len(reasons), "reasons": dict(counts.most_common(5))}


async def concurrency_one(pair: tuple[Target, Target], meter: Meter, requests: int, warmup: int) -> dict[str, Any]:
    conns = {t.name: await Connection.open(t.port) for t in pair}
    samples: dict[str, dict[str, list[float]]] = {t.name: {"ttfe": [], "total": []} for t in pair}
    failures: dict[str, list[str]] = {t.name: [] for t in pair}
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
                    failures[target.name].append(problem)
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
            "ttfe": _ms(samples[name]["ttfe"]),
            "total": _ms(samples[name]["total"]),
            "ok": len(samples[name]["ttfe"]),
            "failures": _failures(failures[name]),
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
    failures: list[str] = []
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
                    failures.append(f"connect: {type(e).__name__}")
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
                failures.append(problem)

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
        "ttfe_p50_ms": _ms(ttfes)["p50_ms"],
        "ttfe_p99_ms": _ms(ttfes)["p99_ms"],
        "keepalive_pings": pings,
        "cpu": usage,
        "cpu_us_per_event": per_event,
        "failures": _failures(failures),
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


# --- report -----------------------------------------------------------------------------------------


def machine_info() -> dict[str, Any]:
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor() or "unknown",
    )
    import granian
    import httpx

    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "granian": granian.__version__,
        "httpx": httpx.__version__,
        "loadavg_at_start": Path("/proc/loadavg").read_text().split()[:3],
    }


def native_build(core_so: Path | None) -> dict[str, Any]:
    """Which native module the router runs, and whether it looks like the release build."""
    if core_so is None:
        from ferroute import _core

        core_so = Path(_core.__file__ or "")
    digest = hashlib.sha256(core_so.read_bytes()).hexdigest()
    profile = core_so.parent.name if core_so.parent.name in ("release", "debug") else "unknown"  # cargo's dirs
    for name in ("release", "debug"):
        candidate = REPO / "target" / name / "libferroute.so"
        if candidate.is_file() and hashlib.sha256(candidate.read_bytes()).hexdigest() == digest:
            profile = name
    return {"path": str(core_so), "sha256": digest[:16], "profile": profile}


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
        f"{c1['events_per_stream']} upstream events per stream, sent at once"
    )
    lines.append(f"  {'':<36}{'TTFE p50':>10}{'TTFE p99':>10}{'total p50':>11}{'total p99':>11}{'failed':>8}")
    for name, label in (("direct", "direct (POST /v1/chat/completions)"), ("router", "router (POST /v1/responses)")):
        r = c1[name]
        lines.append(
            f"  {label:<36}{_fmt(r['ttfe']['p50_ms'], '.3f', 'ms'):>10}{_fmt(r['ttfe']['p99_ms'], '.3f', 'ms'):>10}"
            f"{_fmt(r['total']['p50_ms'], '.3f', 'ms'):>11}{_fmt(r['total']['p99_ms'], '.3f', 'ms'):>11}"
            f"{r['failures']['count']:>8}"
        )
    lines.append(
        f"  {'added by the router':<36}{_fmt(c1['added_ttfe_p50_ms'], '.3f', 'ms'):>10}"
        f"{_fmt(c1['added_ttfe_p99_ms'], '.3f', 'ms'):>10}"
        f"{_fmt(c1['added_total_p50_ms'], '.3f', 'ms'):>11}{_fmt(c1['added_total_p99_ms'], '.3f', 'ms'):>11}"
    )
    lines.append(
        f"  router CPU per request: {c1['router_cpu_us_per_request']:,} µs; "
        f"other processes on the machine: {c1['cpu']['other_processes_cpu_s']} s CPU in {c1['cpu']['wall_s']} s"
    )
    lines.append("")
    for key, phase in results["load"].items():
        offered = f" (offered {phase['offered_events_per_s']:,} events/s)" if phase["offered_events_per_s"] else ""
        lines.append(
            f"Load '{key}': {phase['concurrency']} concurrent streams of {phase['events_per_stream']} upstream events, "
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
                f"{_fmt(r['ttfe_p50_ms'], '.1f', 'ms'):>10}{_fmt(r['ttfe_p99_ms'], '.1f', 'ms'):>10}"
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
    lines.append(f"Target added TTFE p99 <= 1 ms: {_fmt(c1['added_ttfe_p99_ms'], '.3f', ' ms')}, {met}")
    for k, v in t["server_cpu_per_event"].items():
        met = "met" if v["met"] else "NOT met"
        lines.append(f"Target server CPU <= 3 µs per streamed event ({k}): {v['router_cpu_us_per_event']} µs, {met}")
    lines.append(f"Failed streams in total: {results['failures_total']}")
    return "\n".join(lines)


async def run(args: argparse.Namespace, upstream_port: int, router_port: int, meter: Meter) -> dict[str, Any]:
    results: dict[str, Any] = {}
    c1_pair = targets(upstream_port, router_port, args.events_c1, 0.0)
    # Sanity first: one correct stream each way, or nothing is timed.
    for target in c1_pair:
        conn = await Connection.open(target.port)
        try:
            _, problem = await one(conn, target)
        finally:
            conn.close()
        if problem is not None:
            log = getattr(meter.router, "log_path", None)
            detail = f"\nrouter log (end):\n{log.read_text(errors='replace')[-3000:]}" if log else ""
            raise RuntimeError(f"{target.name}: the first stream is wrong: {problem}{detail}")
    print(f"concurrency 1: {args.requests} requests each ...", file=sys.stderr, flush=True)
    c1 = await concurrency_one(c1_pair, meter, args.requests, args.warmup)
    c1["events_per_stream"] = args.events_c1
    results["concurrency_1"] = c1
    results["load"] = {}
    phases = [("burst", args.events, 0.0), ("paced", args.paced_events, args.gap)]
    for key, n, gap in phases:
        pair = targets(upstream_port, router_port, n, gap)
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
    parser.add_argument("--events-c1", type=int, default=200, help="concurrency 1: upstream events per stream")
    parser.add_argument("--concurrency", type=int, help="load: concurrent streams (default 256; quick 64)")
    parser.add_argument("--duration", type=float, help="load: seconds per router phase (default 20; quick 3)")
    parser.add_argument("--load-warmup", type=float, help="load: seconds before each window (default 3; quick 1)")
    parser.add_argument("--direct-share", type=float, default=0.5, help="direct phases last this share of --duration")
    parser.add_argument("--events", type=int, default=500, help="load 'burst': upstream events per stream")
    parser.add_argument("--paced-events", type=int, help="load 'paced': upstream events per stream (default 200)")
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
            f"mock upstream and load generator on core {other_core}"
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
        with (
            start_upstream(other_core) as (upstream, upstream_port),
            start_router(upstream_port, router_core, args.core, args.store, shlex.split(args.serve_args)) as (
                router,
                router_port,
            ),
        ):
            meter = Meter(router, upstream)
            results.update(asyncio.run(run(args, upstream_port, router_port, meter)))
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
