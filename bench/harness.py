"""The benches' shared plumbing: processes, meters, statistics and the HTTP load client.

- Processes: free ports, pinning to a core, the mock upstream (`ferroute mock-upstream`, the Rust mock the
  project ships) and `ferroute serve` started and stopped, and the native-module overlay for `--core`.
- Meters: CPU time of process trees and threads from /proc, the machine's, and what the run ran on.
- Statistics: percentiles and the millisecond summaries the reports print.
- The load client: a minimal HTTP/1.1 client on a raw asyncio protocol (cheap enough not to be the
  bottleneck) and `Target`, one way of getting a stream and how to check it.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import hashlib
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
CLK_TCK = os.sysconf("SC_CLK_TCK")
DONE = b"data: [DONE]\n\n"
PING = b": ping\n\n"
STREAM_TIMEOUT = 60.0  # seconds one stream may take before it counts as failed


# --- processes ------------------------------------------------------------------------------------------


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def pinned(args: list[str], core: int | None) -> list[str]:
    """`args` run on `core` only (through `taskset`), or as they are where `core` is None or taskset missing."""
    taskset = shutil.which("taskset")
    return [taskset, "-c", str(core), *args] if core is not None and taskset else args


def stop(process: subprocess.Popen[Any]) -> None:
    """SIGTERM (Granian stops its workers), then SIGKILL to whatever is left of the process group."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            process.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=10)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=10)


def wait_ready(process: subprocess.Popen[Any], url: str, name: str, body: bytes | None = None) -> None:
    """Until `url` answers 200 (GET, or POST of `body`); a dead process or 60 s without an answer raise."""
    deadline = time.monotonic() + 60
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited with {process.returncode}")
        request = urllib.request.Request(url, body, {"content-type": "application/json"} if body else {})
        with contextlib.suppress(OSError), urllib.request.urlopen(request, timeout=2) as answer:
            if answer.status == 200:
                return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{name} did not become ready")
        time.sleep(0.1)


@dataclass(frozen=True)
class Mock:
    """A running `ferroute mock-upstream` whose answers hold `tokens` text tokens."""

    process: subprocess.Popen[bytes]
    port: int
    tokens: int

    @property
    def url(self) -> str:
        """`http://127.0.0.1:PORT`."""
        return f"http://127.0.0.1:{self.port}"


@contextlib.contextmanager
def start_mock(
    core: int | None = None, *, tokens: int = 20, gap_ms: float | str = 0.0, ttft_ms: float = 0.0
) -> Iterator[Mock]:
    """`python -m ferroute mock-upstream` on a free port (pinned to `core`), stopped on exit; `gap_ms` between
    tokens (0: the whole answer in one write; text `A-B`: uniform in A..B)."""
    gap = gap_ms if isinstance(gap_ms, str) else f"{gap_ms:g}"
    args = [sys.executable, "-m", "ferroute", "mock-upstream", "--port", "0", "--tokens", str(tokens)]
    args += ["--gap-ms", gap, "--ttft-ms", f"{ttft_ms:g}"]
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(
            pinned(args, core), cwd=REPO, stdout=subprocess.PIPE, stderr=log, start_new_session=True
        )
        try:
            assert process.stdout is not None
            line = process.stdout.readline()  # "PORT n" once listening (EOF if it died)
            if not line.startswith(b"PORT "):
                process.wait(timeout=10)
                log.seek(0)
                raise RuntimeError(f"ferroute mock-upstream did not start: {log.read().decode(errors='replace')}")
            yield Mock(process, int(line.split()[1]), tokens)
        finally:
            stop(process)
            if process.stdout is not None:
                process.stdout.close()


def overlay(core_so: Path, tmp: Path) -> Path:
    """A copy of python/ferroute with `core_so` as its native module, for a router run with `--core`."""
    package = tmp / "overlay" / "ferroute"
    shutil.copytree(REPO / "python" / "ferroute", package, ignore=shutil.ignore_patterns("_core*.so", "__pycache__"))
    suffix = next((REPO / "python" / "ferroute").glob("_core*.so"), Path("_core.so")).name
    shutil.copy2(core_so, package / suffix)
    return package.parent


def store_config(store: str | None) -> str:
    """The `[store]` section for `--store`: the router's default (sqlite), `memory`, or `off`."""
    if store is None:
        return ""
    if store == "off":
        return "\n[store]\ndefault_store = false\n"
    return f'\n[store]\nbackend = "{store}"\n'


@contextlib.contextmanager
def start_router(
    upstreams: Mapping[str, int],
    core: int | None = None,
    core_so: Path | None = None,
    store: str | None = None,
    serve_args: Sequence[str] = (),
    extra_config: str = "",
    extra_env: Mapping[str, str] | None = None,
) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """`ferroute serve` (pinned to `core`) with a Chat Completions provider per `upstreams` entry (name: port), and
    `extra_config` (TOML sections, e.g. `[mcp]`) after them."""
    with tempfile.TemporaryDirectory(prefix="ferroute-bench-") as tmp_name:
        tmp = Path(tmp_name)
        config = tmp / "ferroute.toml"
        providers = "".join(
            f'\n[[providers]]\nname = "{name}"\nkind = "chat_completions"\nbase_url = "http://127.0.0.1:{port}/v1"\n'
            for name, port in upstreams.items()
        )
        config.write_text("[server]\nshutdown_grace = 1\n" + providers + store_config(store) + extra_config)
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
        env.update(extra_env or {})
        if core_so is not None:
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(overlay(core_so, tmp)), env.get("PYTHONPATH")]))
        args = [sys.executable, "-m", "ferroute", "serve", "--config", str(config), "--host", "127.0.0.1", *serve_args]
        log_path = tmp / "router.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                pinned([*args, "--port", str(port)], core),
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
            stop(process)


async def post_in_process(app: Any, scope: dict[str, Any], body: bytes) -> None:
    """One request through an ASGI app in this process (no server, no sockets): `body` as its only body message,
    whatever it sends dropped, and no disconnect before it has answered."""
    messages = [{"type": "http.request", "body": body, "more_body": False}]
    never = asyncio.Event()

    async def receive() -> dict[str, Any]:
        if messages:
            return messages.pop()
        await never.wait()
        return {"type": "http.disconnect"}

    async def send(message: Any) -> None:
        return None

    await app(scope, receive, send)


def write_results(out: Path, results: Mapping[str, Any], text: str) -> None:
    """A bench's results: the JSON at `out`, its printed table beside it (`.txt`)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    out.with_suffix(".txt").write_text(text + "\n")


# --- meters ---------------------------------------------------------------------------------------------


def _proc_stat(pid: int) -> tuple[int, float] | None:
    """(ppid, user+sys CPU seconds) of a live process, or None."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    fields = raw[raw.rfind(b")") + 2 :].split()
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / CLK_TCK


def process_tree(root: int) -> list[int]:
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
    """User+sys CPU seconds of `root` and (with `tree`) its live descendants."""
    total = 0.0
    for pid in process_tree(root) if tree else [root]:
        stat = _proc_stat(pid)
        if stat is not None:
            total += stat[1]
    return total


def exec_seconds(root: int) -> float:
    """CPU seconds of `root` and its live descendants, by the scheduler's own count (each thread's `schedstat`, in
    nanoseconds). `cpu_seconds` counts clock ticks (10 ms each, a few percent of a 1,000-request window of a fast
    router); this is exact, but leaves out threads that ended between two readings (a router's threads live as long
    as it does). Falls back to `cpu_seconds` where `schedstat` cannot be read."""
    total = 0
    try:
        for pid in process_tree(root):
            tasks = f"/proc/{pid}/task"
            for task in os.listdir(tasks):
                with contextlib.suppress(FileNotFoundError, ProcessLookupError):
                    total += int(Path(f"{tasks}/{task}/schedstat").read_text().split()[0])
    except (FileNotFoundError, PermissionError, ValueError, IndexError):
        return cpu_seconds(root)
    return total / 1e9


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
    for pid in process_tree(root):
        role = "main" if pid == root else "worker"
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{pid}/task").iterdir():
                with contextlib.suppress(OSError):
                    raw = (task / "stat").read_bytes()
                    name = raw[raw.index(b"(") + 1 : raw.rfind(b")")].decode(errors="replace")
                    fields = raw[raw.rfind(b")") + 2 :].split()
                    out[f"{role}:{name}"] += (int(fields[11]) + int(fields[12])) / CLK_TCK
    return out


def rss_mb(pid: int) -> float:
    """Resident memory (VmRSS) of a process in MB, 0 if it is gone."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def peak_rss_mb(root: int) -> float:
    """The largest peak resident memory (VmHWM) among a process tree's processes, MB."""
    peak = 0
    for pid in process_tree(root):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak = max(peak, int(line.split()[1]))
    return peak / 1024


class Meter:
    """CPU seconds of the router tree, the upstream and this process over a phase, and the machine's."""

    def __init__(self, router: subprocess.Popen[bytes], upstream: subprocess.Popen[bytes]) -> None:
        self.router, self.router_pid, self.upstream_pid = router, router.pid, upstream.pid

    def snap(self) -> dict[str, Any]:
        """A reading of every counter, now."""
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
        """What was used between two readings."""
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


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def machine_info() -> dict[str, Any]:
    """The machine and the versions a run used."""
    import granian
    import httpx

    return {
        "nproc": os.cpu_count(),
        "cpu_model": cpu_model(),
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
        for library in ("libferroute_python.so", "libferroute.so"):  # (the workspace's crate; before the split)
            candidate = REPO / "target" / name / library
            if candidate.is_file() and hashlib.sha256(candidate.read_bytes()).hexdigest() == digest:
                profile = name
    return {"path": str(core_so), "sha256": digest[:16], "profile": profile}


# --- statistics -----------------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    """The `q`th percentile (0-100), interpolated between the nearest ranks; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = q / 100 * (len(ordered) - 1)
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def ms_summary(values: list[float]) -> dict[str, float | None]:
    """p50, p99, mean and max of durations in seconds, as milliseconds (None where there is no sample)."""
    if not values:
        return {"p50_ms": None, "p99_ms": None, "mean_ms": None, "max_ms": None}
    return {
        "p50_ms": round(1000 * percentile(values, 50), 4),
        "p99_ms": round(1000 * percentile(values, 99), 4),
        "mean_ms": round(1000 * sum(values) / len(values), 4),
        "max_ms": round(1000 * max(values), 4),
    }


def median(values: Sequence[float | None]) -> float | None:
    """The median of the values present, None if none is."""
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def fmt(value: float | None, spec: str, unit: str = "") -> str:
    """`value` formatted, `-` for None."""
    return "-" if value is None else f"{value:{spec}}{unit}"


def failures(reasons: list[str]) -> dict[str, Any]:
    """How many failed and the five commonest reasons."""
    counts = collections.Counter(reasons)
    return {"count": len(reasons), "reasons": dict(counts.most_common(5))}


# --- the load client: a minimal HTTP/1.1 client on a raw asyncio protocol -------------------------------


@dataclass(slots=True)
class Result:
    """One answer as the client saw it."""

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
        """A connection to 127.0.0.1:`port`; `counter` counts the SSE frames it receives."""
        loop = asyncio.get_running_loop()
        _, protocol = await loop.create_connection(lambda: cls(counter), "127.0.0.1", port)
        return protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # (uvloop's transports are not subclasses)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = exc or ConnectionError("connection closed")
        self.transport = None
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError(f"connection lost mid-response: {self.lost}"))

    def close(self) -> None:
        """Closes the connection (a request in flight is cut)."""
        if self.transport is not None:
            self.transport.close()

    async def request(self, raw: bytes) -> Result:
        """Sends the request bytes `raw` and waits for the whole answer."""
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
        """Parses the head, then de-chunks and scans the body as it arrives."""
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
    """The bytes of a `POST path` with a JSON body, asking for an event stream."""
    return (
        f"POST {path} HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\ncontent-type: application/json\r\n"
        f"accept: text/event-stream\r\ncontent-length: {len(body)}\r\n\r\n"
    ).encode() + body


# --- what a correct stream looks like -------------------------------------------------------------------


def chat_body(model: str) -> bytes:
    """A streaming Chat Completions request body, with usage asked for as the router asks for it."""
    chat = {
        "model": model,
        "messages": [{"role": "user", "content": "Say something."}],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    return json.dumps(chat).encode()


@functools.lru_cache(maxsize=16)
def mock_answer(tokens: int) -> tuple[bytes, str]:
    """The SSE body of the mock's streaming Chat Completions answer of `tokens` tokens, and its text
    (what the router's `response.completed` must hold), from an in-process mock (the content does not
    depend on the timing)."""
    from ferroute._core import ChunkedDecoder, MockUpstream

    body = chat_body("mock")
    request = b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nconnection: close\r\n"
    request += b"content-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)
    with MockUpstream(tokens=tokens) as server, socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(request)
        answer = bytearray()
        while data := sock.recv(1 << 16):
            answer += data
    head, _, chunked = bytes(answer).partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(f"the mock answered {head[:60]!r}")
    sse = ChunkedDecoder().feed(chunked)
    text = []
    for frame in sse.split(b"\n\n"):
        if frame.startswith(b"data: {"):
            text.extend(choice["delta"].get("content") or "" for choice in json.loads(frame[6:])["choices"])
    return sse, "".join(text)


@dataclass
class Target:
    """One way to get a stream: the request bytes and how to check the answer."""

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


def targets(mock: Mock, router_port: int, provider: str) -> tuple[Target, Target]:
    """The mock's stream asked for directly, and through the router's `provider` (the one in front of `mock`)."""
    sse, text = mock_answer(mock.tokens)
    responses_body = json.dumps({"model": f"bench:{provider}", "input": "Say something.", "stream": True}).encode()
    from ferroute import _core

    translator = _core.ChatCompletionsTranslator(responses_body)
    router_frames = (translator.feed(sse) + translator.finish()).count(b"\n\n")
    direct = Target(
        "direct", mock.port, http_post("/v1/chat/completions", mock.port, chat_body("bench")), sse.count(b"\n\n"), text
    )
    router = Target("router", router_port, http_post("/v1/responses", router_port, responses_body), router_frames, text)
    return direct, router


async def one(conn: Connection, target: Target) -> tuple[Result, str | None]:
    """One request on `conn`, and what is wrong with its answer (None: nothing)."""
    try:
        result = await asyncio.wait_for(conn.request(target.raw), STREAM_TIMEOUT)
    except (OSError, asyncio.TimeoutError) as e:
        result = Result(error=f"{type(e).__name__}: {e}")
    return result, target.check(result)
