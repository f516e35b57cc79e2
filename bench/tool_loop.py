"""Hosted-tool rounds: the router's own time per round of its server-side tool loop, side by side with a client that
runs the same round itself against the same upstream and the same MCP server.

Run from the repository root (the native module built or copied into python/ferroute):

    PYTHONPATH=$PWD/python .venv/bin/python -m bench.tool_loop                 # ~2 minutes on 2 cores
    PYTHONPATH=$PWD/python .venv/bin/python -m bench.tool_loop --rounds 1 --requests 30 --warmup 10   # a smoke run
    ... --profile /tmp/router.prof   # also py-spy the router's worker (not in requirements-dev; skews the times)
    ... --spans                      # also the router's own time per request from its spans (tracing on)

Processes, all on 127.0.0.1: the mock upstream's `agent` model (`tests.support.mock_upstream`: it calls the tools
that `call <tool> <json>` directives in the last user message name, and answers `Results: …` once the conversation
ends with their results), the demo MCP server (`ferroute mcp-demo`, the `mcp` package's server over streamable
HTTP), and `ferroute serve` (1 Granian worker) with the mock as a Chat Completions provider and the demo server as
`[[mcp_servers]]` `calc` (`require_approval = "never"`).

Each variant is one conversation turn, measured four ways, interleaved: every iteration makes one request of each
variant and way, in an order shuffled afresh (`--seed`), one at a time (concurrency 1), after `--warmup` iterations:

- router: a non-streaming `POST /v1/responses` (`tools: [{"type": "mcp", "server_label": "calc"}]`) sent by the
  harness's raw HTTP/1.1 client, its JSON answer parsed. The tools were listed by a warm-up response; each measured
  request continues from it (`previous_response_id`), so it holds no `mcp_list_tools` and exactly the variant's
  upstream calls and tool calls (every answer is checked). A router whose store drops the listing from a chain
  lists again there; then (`--history auto`) the same turns go as input items instead, listing included (`input`).
- direct: the same turn done by a Python client: the upstream `POST /v1/chat/completions` with the body the router
  sent (read back from the mock's `GET /requests` in the warm-up, and the client's own bodies checked equal to it,
  call ids aside), its stream parsed for the tool calls, the calls made over a pooled MCP session
  (`ferroute.tools.mcp.McpPool`, the router's own pool on the official `mcp` client; parallel calls at once), the
  second upstream POST with the calls and their results laid out as the router lays them out, its text read. The
  clients differ in their upstream POSTs: `direct` uses an `httpx.AsyncClient` (what a Python client would have);
  `direct-lean` the router's own upstream transport (`ferroute._transport.StreamTransport`, raw request heads), so
  that what the router adds is its work and not a slower client's; `direct-lean-2` is a second, identical
  `direct-lean` (own connection and MCP session), for an A/A pair: the noise that pairing alone leaves in a p99.

Variants (`--variants`): `one` (a round of one call: upstream -> MCP `add` -> upstream), `par<K>` (one round of K
parallel calls), `none` (no tool call: one upstream call; the router's per-request cost).

Reported per variant and path: wall time per request p50/p99 (ms), this client's CPU time per request, and the
router's: user+sys of all threads of Granian's processes (`/proc/<pid>/task/*/schedstat`, nanoseconds) from the
start of a request to the start of the next (a `--gap` pause after each request lets work done after the answer
land in its window; the same reading over direct requests is the router's idle floor). Added = router - direct per
iteration (the requests ran next to each other), p50/p90/p99 over the iterations, with the p50 of each of the
`--rounds` rounds (how stable it is); its CPU counterpart is the router's CPU - the direct client's own. The round
alone: a round variant's added - `none`'s added in the same iteration (the per-request cost taken out). Target
(issue): the router's added time per hosted round p99 <= 2 ms.

Pinning (`--pin`): `same` (the default) puts every process (router, mock, MCP server, this client) on one core (the
one other processes kept least busy for a second before the start, or `--core`): then every hand-off between
processes, in both paths, is a wake-up on the same core. With `split` (the router on the first core, the rest on the
last, as bench.router_overhead does) the router path pays a cross-core wake-up for each of its many hand-offs
(client, upstream twice, the MCP server's messages) while the direct path pays none, which on this VM added ~5 ms
per request that is not the router's work; `none` leaves it to the scheduler. The CPU that other processes used
during the run (from /proc/stat) is reported: the figures are only as quiet as that.

`--spans` turns the router's tracing on (OTLP to a receiver in this process, `tests.support.otlp`) and reads each
response's spans: its own time is the response span less the union of its upstream calls' and tool calls' spans
(the time it worked while neither was in flight), per variant; a round's share is one-call's less no-call's, and
the "turn gap" is the time from the later of the first upstream call's end and the tools' answers to the start of
the second upstream call (the round's router step on the critical path). Measured inside the router, these carry
none of the other processes' noise that the side-by-side differences do.

Not collected by pytest (bench modules are collected as `test_*.py` / `bench_*.py`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.harness import (
    REPO,
    Connection,
    cpu_seconds,
    machine_cpu,
    machine_info,
    native_build,
    percentile,
    pinned,
    process_tree,
    start_router,
    stop,
)

RESULTS = REPO / "bench" / "results" / "tool_loop.txt"
PROVIDER = "up"
CALC = {"type": "mcp", "server_label": "calc"}
PATHS = ("router", "direct", "direct-lean", "direct-lean-2")
TARGET_P99_MS = 2.0


# --- the processes ----------------------------------------------------------------------------------------------


@contextlib.contextmanager
def first_line_server(
    args: list[str], core: int | None, name: str, ok: Callable[[str], bool]
) -> Iterator[tuple[str, int]]:
    """A server process that prints one line once it listens (pinned to `core`): that line (checked by `ok`) and
    the process id."""
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(
            pinned(args, core), cwd=REPO, stdout=subprocess.PIPE, stderr=log, start_new_session=True
        )
        try:
            assert process.stdout is not None
            line = process.stdout.readline().decode(errors="replace").strip()
            if not ok(line):
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(timeout=5)
                log.seek(0)
                raise RuntimeError(f"{name} did not start ({line!r}): {log.read().decode(errors='replace')[-2000:]}")
            yield line, process.pid
        finally:
            stop(process)
            if process.stdout is not None:
                process.stdout.close()


def idlest_core(cores: set[int], seconds: float = 1.0) -> int:
    """The core of `cores` that other processes kept least busy over `seconds` (a niced neighbour that never
    migrates would otherwise share the core with every process of the bench)."""
    before = machine_cpu()
    time.sleep(seconds)
    after = machine_cpu()

    def busy(core: int) -> float:
        name = f"cpu{core}"
        return sum(after[name][k] - before[name][k] for k in ("process", "irq", "steal"))

    return min(sorted(cores), key=busy)


def mcp_config(url: str) -> str:
    return f'\n[[mcp_servers]]\nlabel = "calc"\nurl = "{url}"\nrequire_approval = "never"\n'


def http_json(url: str, method: str = "GET", body: Any = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data, {"content-type": "application/json"}, method=method)
    with urllib.request.urlopen(request, timeout=30) as answer:
        return json.loads(answer.read())


class RouterClock:
    """CPU time (ns, all threads) of the router's processes, from /proc/<pid>/task/<tid>/schedstat."""

    def __init__(self, root: int) -> None:
        self.pids = process_tree(root)

    def read(self) -> int:
        total = 0
        for pid in self.pids:
            with contextlib.suppress(OSError):
                for tid in os.listdir(f"/proc/{pid}/task"):
                    with contextlib.suppress(OSError, ValueError), open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                        total += int(f.read().split()[0])
        return total

    def by_thread(self) -> dict[str, int]:
        """CPU ns by kind of thread: the worker's event loop (its main thread), its other Python threads (the sqlite
        writer, the store's pool, the log), Granian's Rust runtime threads, and Granian's main process."""
        out: dict[str, int] = {}
        root = self.pids[0]
        for pid in self.pids:
            with contextlib.suppress(OSError):
                for tid in os.listdir(f"/proc/{pid}/task"):
                    with contextlib.suppress(OSError, ValueError):
                        with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                            ns = int(f.read().split()[0])
                        with open(f"/proc/{pid}/task/{tid}/comm") as f:
                            name = f.read().strip()
                        if pid == root:
                            kind = "Granian's main process"
                        elif name.startswith("tokio"):
                            kind = "Granian's Rust runtime threads"
                        elif tid == str(pid):
                            kind = "the worker's event loop thread"
                        else:
                            kind = "the worker's other Python threads (store, log)"
                        out[kind] = out.get(kind, 0) + ns
        return out


# --- the variants -----------------------------------------------------------------------------------------------


@dataclass
class Variant:
    name: str
    text: str  # the user message
    calls: list[tuple[str, dict[str, Any]]]  # the tool calls the model makes
    expected: str  # the answer's text (the mock's answer to the conversation the router sends)
    router_raw: bytes = b""  # the router request (bytes on the wire)
    template: dict[str, Any] = field(default_factory=dict)  # the router's first upstream body
    # What the router's second upstream body appends to the first (the model's calls and their results, as the
    # router lays them out): the direct clients lay theirs out the same, so the upstream gets the same bodies.
    layout: list[dict[str, Any]] = field(default_factory=list)


def variants(names: list[str]) -> list[Variant]:
    out = []
    for name in names:
        if name == "none":
            out.append(Variant(name, "Say hello.", [], "No tools needed."))
            continue
        k = 1 if name == "one" else int(name.removeprefix("par"))
        calls = [("add", {"a": i, "b": 2}) for i in range(1, k + 1)]
        text = "; ".join(f"call add {json.dumps(arguments)}" for _, arguments in calls)
        expected = "Results: " + "; ".join(f"add={arguments['a'] + 2}" for _, arguments in calls)
        out.append(Variant(name, text, calls, expected))
    return out


def check_router(answer: dict[str, Any], variant: Variant) -> str | None:
    """None when the response is one completed turn of the variant's calls and answer, else what is wrong."""
    kinds = [item["type"] for item in answer.get("output") or []]
    want = ["mcp_call"] * len(variant.calls) + ["message"]
    if answer.get("status") != "completed":
        return f"status {answer.get('status')}"
    if kinds != want:
        return f"output {kinds}, expected {want}"
    if any(item["status"] != "completed" for item in answer["output"]):
        return "an item did not complete"
    text = "".join(part.get("text", "") for part in answer["output"][-1]["content"])
    return None if text == variant.expected else f"text {text!r}"


# --- the direct clients: the round done by the client itself -----------------------------------------------------


def parse_chat_stream(lines: Any) -> tuple[dict[int, dict[str, str]], str]:
    """The tool calls (by index: id, name, arguments) and the text of a Chat Completions stream's `data:` lines."""
    calls: dict[int, dict[str, str]] = {}
    text = []
    for line in lines:
        if not line.startswith(b"data: {"):
            continue
        for choice in json.loads(line[6:]).get("choices") or ():
            delta = choice.get("delta") or {}
            if delta.get("content"):
                text.append(delta["content"])
            for call in delta.get("tool_calls") or ():
                entry = calls.setdefault(call["index"], {"id": "", "name": "", "arguments": ""})
                if call.get("id"):
                    entry["id"] = call["id"]
                function = call.get("function") or {}
                if function.get("name"):
                    entry["name"] = function["name"]
                entry["arguments"] += function.get("arguments") or ""
    return calls, "".join(text)


class Direct:
    """A client that runs the tool round itself: upstream, MCP (pooled), upstream."""

    def __init__(self, upstream_port: int, mcp_url: str, lean: bool) -> None:
        from ferroute.tools.mcp import McpPool

        self.lean = lean
        self.url = f"http://127.0.0.1:{upstream_port}/v1/chat/completions"
        self.origin = ("127.0.0.1", upstream_port)
        self.head = (
            f"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1:{upstream_port}\r\ncontent-type: application/json"
            "\r\naccept: text/event-stream\r\naccept-encoding: identity\r\n"
        ).encode()
        self.mcp_url = mcp_url
        # The router's settings ([mcp] defaults): 30 s per call, outputs cut at 64 KiB.
        self.pool = McpPool(call_timeout=30.0, max_output_bytes=65536)
        self.client: Any = None
        self.transport: Any = None

    async def __aenter__(self) -> Direct:
        import httpx

        from ferroute._transport import StreamTransport

        if self.lean:
            self.transport = StreamTransport()
        else:
            self.client = httpx.AsyncClient(timeout=30.0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.client is not None:
            await self.client.aclose()
        if self.transport is not None:
            await self.transport.aclose()
        await self.pool.aclose()

    async def post(self, body: bytes) -> tuple[dict[int, dict[str, str]], str]:
        if self.lean:
            head = self.head + b"content-length: %d\r\n\r\n" % len(body)
            answer = await self.transport.open(self.origin, head, body, 10.0)
            if answer.status != 200:
                raise RuntimeError(f"upstream status {answer.status}")
            data = b"".join([piece async for piece in answer.body])
            return parse_chat_stream(data.split(b"\n"))
        async with self.client.stream(
            "POST", self.url, content=body, headers={"content-type": "application/json"}
        ) as r:
            if r.status_code != 200:
                raise RuntimeError(f"upstream status {r.status_code}")
            return parse_chat_stream([line.encode() async for line in r.aiter_lines()])

    async def round(self, variant: Variant) -> str:
        """One turn: the answer's text."""
        template = variant.template
        calls, text = await self.post(json.dumps(template, separators=(",", ":")).encode())
        if not calls:
            return text
        ordered = [calls[i] for i in sorted(calls)]
        results = await asyncio.gather(
            *(self.pool.call(self.mcp_url, {}, call["name"], json.loads(call["arguments"])) for call in ordered)
        )
        outputs = [result.output if result.error is None else result.error for result in results]
        messages = list(template["messages"])
        made = done = 0
        for message in variant.layout or default_layout(len(ordered)):
            if message["role"] == "assistant" and message.get("tool_calls"):
                tool_calls = []
                for tool_call in message["tool_calls"]:
                    call = ordered[made]
                    made += 1
                    function = {"name": call["name"], "arguments": call["arguments"]}
                    tool_calls.append({**tool_call, "id": call["id"], "function": function})
                messages.append({**message, "tool_calls": tool_calls})
            elif message["role"] == "tool":
                messages.append({**message, "tool_call_id": ordered[done]["id"], "content": outputs[done]})
                done += 1
            else:
                messages.append(message)
        body = json.dumps({**template, "messages": messages}, separators=(",", ":")).encode()
        _, text = await self.post(body)
        return text


def default_layout(calls: int) -> list[dict[str, Any]]:
    """One assistant turn with every call, then their results (Chat Completions' own form)."""
    tool_call = {"id": "", "type": "function", "function": {}}
    results = [{"role": "tool", "tool_call_id": "", "content": ""}] * calls
    return [{"role": "assistant", "tool_calls": [tool_call] * calls, "content": None}, *results]


def without_ids(body: Any) -> Any:
    """An upstream body with its tool call ids blanked (fresh per answer), for comparing."""
    text = json.dumps(body, sort_keys=True)
    for message in body.get("messages") or []:
        for call in message.get("tool_calls") or []:
            text = text.replace(call["id"], "ID")
    return json.loads(text)


# --- the run ----------------------------------------------------------------------------------------------------


@dataclass
class Sample:
    wall: float  # s
    client_cpu: float  # s, this process
    router_cpu: float = float("nan")  # s, the router's processes, from this request's start to the next one's


async def prepare(
    args: argparse.Namespace, router_port: int, upstream: str, directs: dict[str, Direct], chosen: list[Variant]
) -> str:
    """The warm-up response (it lists the tools), each variant's router request and upstream template, checked;
    returns the history mode used."""
    loop = asyncio.get_running_loop()
    base = f"http://127.0.0.1:{router_port}/v1/responses"
    warm = await loop.run_in_executor(None, http_json, base, "POST", {"model": f"agent:{PROVIDER}", "input": "warm",
                                                                      "tools": [CALC]})  # fmt: skip
    kinds = [item["type"] for item in warm["output"]]
    if kinds != ["mcp_list_tools", "message"]:
        raise RuntimeError(f"the warm-up response holds {kinds}")
    history: str = args.history

    def request_body(variant: Variant, mode: str) -> dict[str, Any]:
        body: dict[str, Any] = {"model": f"agent:{PROVIDER}", "tools": [CALC]}
        if mode == "chain":
            body |= {"previous_response_id": warm["id"], "input": variant.text}
        else:
            turn = [{"type": "message", "role": "user", "content": "warm"}, *warm["output"]]
            body["input"] = [*turn, {"type": "message", "role": "user", "content": variant.text}]
        return body

    if history in ("auto", "chain"):
        probe = await loop.run_in_executor(None, http_json, base, "POST", request_body(chosen[0], "chain"))
        listed = any(item["type"] == "mcp_list_tools" for item in probe["output"])
        if listed:
            note = "the router listed the tools again in a chain (its store does not keep the listing)"
            if history == "chain":
                raise RuntimeError(note + ": run with --history input")
            print(f"note: {note}; the turns go as input items instead (--history input)", file=sys.stderr)
            history = "input"
        else:
            history = "chain"
    for variant in chosen:
        body = json.dumps(request_body(variant, history)).encode()
        head = (
            f"POST /v1/responses HTTP/1.1\r\nhost: 127.0.0.1:{router_port}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\n\r\n"
        )
        variant.router_raw = head.encode() + body
        await loop.run_in_executor(None, http_json, f"{upstream}/requests", "DELETE")
        answer = await loop.run_in_executor(None, http_json, base, "POST", request_body(variant, history))
        problem = check_router(answer, variant)
        if problem is not None and problem.startswith("text ") and len(variant.calls) > 1:
            # (The mock answers from the results after the last assistant message: a router that gives each call
            # an assistant message of its own gets an answer naming the last result only.)
            print(f"note: {variant.name}: the answer is not {variant.expected!r} but {problem}", file=sys.stderr)
            variant.expected = "".join(part.get("text", "") for part in answer["output"][-1]["content"])
            problem = check_router(answer, variant)
        if problem is not None:
            raise RuntimeError(f"{variant.name}: the router's answer is wrong: {problem}")
        seen = [r["body"] for r in await loop.run_in_executor(None, http_json, f"{upstream}/requests")]
        if len(seen) != (2 if variant.calls else 1):
            raise RuntimeError(f"{variant.name}: the router made {len(seen)} upstream calls")
        variant.template = seen[0]
        if variant.calls:
            variant.layout = seen[1]["messages"][len(seen[0]["messages"]) :]
            roles_of = [m["role"] for m in variant.layout]
            if roles_of != [m["role"] for m in default_layout(len(variant.calls))]:
                roles = " ".join(m["role"] for m in variant.layout)
                print(f"note: {variant.name}: the router lays the calls and results out as: {roles}", file=sys.stderr)
        for name, direct in directs.items():
            await loop.run_in_executor(None, http_json, f"{upstream}/requests", "DELETE")
            text = await direct.round(variant)
            if text != variant.expected:
                raise RuntimeError(f"{variant.name}: {name} got {text!r}")
            mine = [r["body"] for r in await loop.run_in_executor(None, http_json, f"{upstream}/requests")]
            if [without_ids(b) for b in mine] != [without_ids(b) for b in seen]:
                raise RuntimeError(f"{variant.name}: {name} sent other upstream bodies than the router")
    return history


async def measure(
    args: argparse.Namespace,
    router: subprocess.Popen[bytes],
    router_port: int,
    upstream: str,
    mcp_url: str,
    pids: dict[str, int],
) -> dict[str, Any]:
    chosen = variants(args.variants)
    profiler: subprocess.Popen[bytes] | None = None
    async with (
        Direct(int(upstream.rsplit(":", 1)[1]), mcp_url, lean=False) as direct,
        Direct(int(upstream.rsplit(":", 1)[1]), mcp_url, lean=True) as lean,
        Direct(int(upstream.rsplit(":", 1)[1]), mcp_url, lean=True) as lean2,
    ):
        directs = {"direct": direct, "direct-lean": lean, "direct-lean-2": lean2}
        history = await prepare(args, router_port, upstream, directs, chosen)
        conn = await Connection.open(router_port)
        clock = RouterClock(router.pid)
        loop = asyncio.get_running_loop()
        samples: dict[tuple[str, str], list[Sample]] = {(v.name, p): [] for v in chosen for p in PATHS}
        failures: list[str] = []
        jobs = [(v, p) for v in chosen for p in PATHS]
        order = random.Random(args.seed)  # (a fresh order each iteration: no request always follows the same one)
        iterations = args.warmup + args.rounds * args.requests
        pending: Sample | None = None
        measured_from_ns = time.time_ns()
        threads_before = clock.by_thread()
        began = time.perf_counter()
        machine_before = machine_cpu()
        cpu_before = {name: cpu_seconds(pid, tree=name != "client") for name, pid in pids.items()}
        for i in range(iterations):
            measured = i >= args.warmup
            if i == args.warmup and args.profile is not None:
                profiler = start_profiler(router.pid, args.profile)
            if i == args.warmup:
                threads_before = clock.by_thread()
                measured_from_ns = time.time_ns()
            if i % 100 == 99:  # (the mock keeps every request it got)
                await loop.run_in_executor(None, http_json, f"{upstream}/requests", "DELETE")
            order.shuffle(jobs)
            for variant, path in jobs:
                router_now = clock.read()
                if pending is not None:
                    pending.router_cpu = (router_now - pending.router_cpu) / 1e9
                    pending = None
                cpu0 = time.process_time()
                t0 = time.perf_counter()
                problem: str | None
                try:
                    if path == "router":
                        result = await asyncio.wait_for(conn.request(variant.router_raw), 30)
                        answer = json.loads(result.tail) if result.status == 200 else {}
                        t1 = time.perf_counter()
                        problem = check_router(answer, variant) if result.status == 200 else f"HTTP {result.status}"
                    else:
                        text = await asyncio.wait_for(directs[path].round(variant), 30)
                        t1 = time.perf_counter()
                        problem = None if text == variant.expected else f"text {text!r}"
                except (OSError, asyncio.TimeoutError, RuntimeError, ValueError) as e:
                    t1 = time.perf_counter()
                    problem = f"{type(e).__name__}: {e}"
                    if path == "router":
                        conn.close()
                        conn = await Connection.open(router_port)
                cpu1 = time.process_time()
                if problem is not None:
                    failures.append(f"{variant.name}/{path}: {problem}")
                    continue
                sample = Sample(t1 - t0, cpu1 - cpu0, router_cpu=router_now)  # (router_cpu: the start, for now)
                pending = sample
                if measured:
                    samples[(variant.name, path)].append(sample)
                if args.gap > 0:
                    await asyncio.sleep(args.gap / 1000)
        if pending is not None:
            pending.router_cpu = (clock.read() - pending.router_cpu) / 1e9
        threads = {k: (v - threads_before.get(k, 0)) / 1e9 for k, v in clock.by_thread().items()}
        if profiler is not None:
            profiler.send_signal(signal.SIGINT)  # (py-spy writes its file and exits)
            await loop.run_in_executor(None, profiler.wait, 30)
        wall = time.perf_counter() - began
        machine_after = machine_cpu()
        cpu = {name: cpu_seconds(pid, tree=name != "client") - cpu_before[name] for name, pid in pids.items()}
        conn.close()
    machine = machine_after["cpu"]["process"] - machine_before["cpu"]["process"]
    return {
        "history": history,
        "samples": samples,
        "failures": failures,
        "variants": chosen,
        "wall_s": wall,
        "machine_process_cpu_s": machine,
        "cpu_s": cpu,  # (each of ours)
        "router_threads_s": threads,  # (the measured iterations)
        "measured_from_ns": measured_from_ns,  # (wall clock: the spans of the warm-up started before)
    }


# --- the router's own time, from its spans ------------------------------------------------------------------------


def own_times(spans: list[Any], since_ns: int) -> dict[str, list[float]]:
    """Per variant, in ms, for each response traced since `since_ns`: its span less the union of its upstream
    attempts' and tool calls' spans (the time the router worked while no upstream call or tool call was in
    flight: its own, tracing included). A response's variant is told by its tool calls: none, one, or K. And, as
    `<variant> turn gap`, the time from the end of the first upstream call and of the tool calls (the later) to the
    start of the second upstream call: the router's work on a round's critical path after the tools answered."""
    by_trace: dict[str, list[Any]] = {}
    for span in spans:
        by_trace.setdefault(span.trace_id, []).append(span)
    out: dict[str, list[float]] = {}
    for trace in by_trace.values():
        roots = [s for s in trace if not s.parent_id and s.kind == 2]
        if len(roots) != 1 or roots[0].start_ns < since_ns:
            continue
        root = roots[0]
        inner = [s for s in trace if s.parent_id == root.span_id and (s.kind == 3 or s.name.startswith("execute_tool"))]
        tools = sum(1 for s in inner if s.name.startswith("execute_tool"))
        busy, reach = 0, root.start_ns
        for start, end in sorted((max(s.start_ns, root.start_ns), min(s.end_ns, root.end_ns)) for s in inner):
            if end > reach:
                busy += end - max(start, reach)
                reach = end
        name = "none" if tools == 0 else "one" if tools == 1 else f"par{tools}"
        out.setdefault(name, []).append((root.end_ns - root.start_ns - busy) / 1e6)
        attempts = sorted((s for s in inner if s.kind == 3), key=lambda s: s.start_ns)
        if tools and len(attempts) == 2:
            ready = max([attempts[0].end_ns] + [s.end_ns for s in inner if s.name.startswith("execute_tool")])
            out.setdefault(f"{name} turn gap", []).append((attempts[1].start_ns - ready) / 1e6)
    return out


def spans_report(own: dict[str, list[float]]) -> str:
    lines = [
        "the router's own time per request, from its spans (`--spans`: the response span less its upstream attempts "
        "and tool calls; tracing on, so its cost is in it):",
        "  variant        p50 ms   p99 ms   max ms      n",
    ]
    for name in sorted(own):
        got = own[name]
        p50, p99 = percentile(got, 50), percentile(got, 99)
        lines.append(f"  {name:12s} {p50:8.3f} {p99:8.3f} {max(got):8.3f} {len(got):6d}")
    if "one" in own and "none" in own:
        one, none = own["one"], own["none"]
        alone50 = percentile(one, 50) - percentile(none, 50)
        alone99 = percentile(one, 99) - percentile(none, 99)
        lines.append(f"  a round alone (one - none): p50 {alone50:.3f} ms, p99 {alone99:.3f} ms (of the quantiles)")
        p99 = percentile(one, 99)
        verdict = "met" if p99 <= TARGET_P99_MS else "NOT met"
        lines.append(
            f"Target added p99 <= {TARGET_P99_MS:g} ms per hosted round, from the spans: a one-round request's own "
            f"time (its round and all else the router does for it) p99 {p99:.3f} ms: {verdict}"
        )
    if "one turn gap" in own:
        gap = percentile(own["one turn gap"], 99)
        verdict = "met" if gap <= TARGET_P99_MS else "NOT met"
        lines.append(
            f"Target added p99 <= {TARGET_P99_MS:g} ms per hosted round, from the spans: the one-round request's turn "
            f"gap (the tool answered -> the next upstream call) p99 {gap:.3f} ms: {verdict}"
        )
    return "\n".join(lines)


# --- the profile: where the router's worker spends its CPU --------------------------------------------------------


def start_profiler(router_pid: int, out: Path) -> subprocess.Popen[bytes]:
    """`py-spy record` of the router's worker (on-CPU samples, collapsed stacks in `out`) until SIGINT."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(spy).exists():
        raise RuntimeError("--profile needs py-spy (`.venv/bin/pip install py-spy`; it is not in requirements-dev)")
    workers = [pid for pid in process_tree(router_pid) if pid != router_pid]
    if len(workers) != 1:
        raise RuntimeError(f"--profile: expected one Granian worker, found {workers}")
    args = [spy, "record", "-p", str(workers[0]), "-o", str(out), "-f", "raw", "-r", "250", "--nonblocking"]
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def frame_name(frame: str) -> str:
    """`function (path/to/module.py:123)` -> `function (module path from the package root)`, lines dropped."""
    name, _, where = frame.partition(" (")
    where = where.rstrip(")").rsplit(":", 1)[0]
    for marker in ("site-packages/", "python/", "lib/python3"):
        if marker in where:
            where = where.split(marker, 1)[1]
            break
    return f"{name} ({where})" if where else name


# Where a sample goes: the first area (in this order) one of its stack's frames is in.
AREAS = (
    ("MCP client (the mcp package: anyio, httpx2, pydantic; McpPool) - the direct path runs the same", ("mcp/",
     "ferroute/tools/mcp/", "mcp_types/", "httpx2/", "anyio/", "httpcore2/")),
    ("upstream calls (providers, StreamTransport, the translator's feed)", ("ferroute/providers/",
     "ferroute/_transport.py")),
    ("store (sqlite writer and reader threads, records)", ("ferroute/store/", "ferroute/app/records.py",
     "ferroute/app/continuation.py", "sqlite3")),
    ("tool loop's own code (loop.py, hosted.py)", ("ferroute/tools/",)),
    ("request parsing and response building (models, pydantic, the ASGI app)", ("ferroute/models.py", "pydantic",
     "ferroute/app/")),
    ("access log", ("ferroute/logs.py", "logging/")),
)  # fmt: skip


# py-spy counts Granian's Rust threads (no Python frame) as running when schedstat says they mostly wait: their
# samples are left out (the report's per-thread CPU, from schedstat, says what they really use).
# Frames every sample of a thread holds (start-up: Granian's worker, the module, a thread's bootstrap).
OUTER = ("(<frozen runpy>)", "(multiprocessing/", "(granian/server/", "(ferroute/cli.py)", "(ferroute/__main__.py)",
         "(threading.py)", "_future_watcher_wrapper")  # fmt: skip


def profile_report(path: Path, top: int = 25) -> str:
    """Where the samples go (areas), the frames holding most of them (inclusive: the frame or anything it called,
    frames in nearly every sample left out) and the frames running when sampled (self), from a py-spy raw
    (collapsed stacks) file."""
    inclusive: dict[str, int] = {}
    own: dict[str, int] = {}
    areas: dict[str, int] = {}
    total = mine = blank = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        if not stack.strip():  # (a thread with no Python frame: Granian's Rust threads, mostly idle; see NO_PYTHON)
            total -= count
            blank += count
            continue
        frames = [frame_name(f) for f in stack.split(";")]
        raw = stack.split(";")
        area = next(
            (name for name, marks in AREAS if any(mark in frame for frame in raw for mark in marks)),
            "the worker's event loop with no frame of the above (uvloop, Granian's glue, asyncio, syscalls)",
        )
        areas[area] = areas.get(area, 0) + count
        if area == AREAS[0][0]:
            continue  # (the MCP client: the direct path runs the same code; the lists below are the router's own)
        mine += count
        for frame in set(frames):
            inclusive[frame] = inclusive.get(frame, 0) + count
        own[frames[-1]] = own.get(frames[-1], 0) + count
    if not total:
        return f"profile: no samples in {path}"
    lines = [
        f"profile of the router's worker over the measured iterations: {total} samples of Python threads ({path}; "
        f"{blank} samples of threads with no Python frame left out: py-spy counts Granian's Rust threads as running "
        "when they wait, see the CPU by thread above)"
    ]
    lines.append("  by area (a sample counts for the first area, in this order, that one of its frames is in):")
    for name, count in sorted(areas.items(), key=lambda kv: -kv[1]):
        lines.append(f"    {100 * count / total:5.1f}%  {name}")
    lines.append(
        f"  outside the MCP client ({mine} samples; % of all samples), inclusive (the frame and what it called; "
        "process and thread start-up frames left out):"
    )
    for frame, count in sorted(inclusive.items(), key=lambda kv: -kv[1]):
        if any(mark in frame for mark in OUTER):
            continue
        lines.append(f"    {100 * count / total:5.1f}%  {frame}")
        if len(lines) > top + 3 + len(areas):
            break
    lines.append("  outside the MCP client, self (the frame that was running):")
    for frame, count in sorted(own.items(), key=lambda kv: -kv[1])[:top]:
        lines.append(f"    {100 * count / total:5.1f}%  {frame}")
    return "\n".join(lines)


# --- the report -------------------------------------------------------------------------------------------------


def ms(values: list[float], q: float) -> float:
    return 1000 * percentile(values, q)


def spread(values: list[float], rounds: int, per_round: int) -> dict[str, Any]:
    """p50/p90/p99/mean (ms) of per-iteration values in seconds, and the p50 of each round."""
    return {
        "p50_ms": ms(values, 50),
        "p90_ms": ms(values, 90),
        "p99_ms": ms(values, 99),
        "mean_ms": 1000 * sum(values) / max(1, len(values)),
        "round_p50s_ms": [
            round(ms(values[k * per_round : (k + 1) * per_round], 50), 3)
            for k in range(rounds)
            if values[k * per_round : (k + 1) * per_round]
        ],
    }


def spread_line(label: str, row: dict[str, Any], cpu: dict[str, Any] | None = None) -> str:
    line = (
        f"  {label:27} p50 {row['p50_ms']:6.3f}  p90 {row['p90_ms']:6.3f}  p99 {row['p99_ms']:6.3f}  mean "
        f"{row['mean_ms']:6.3f} ms  (p50 per round: {', '.join(f'{x:.3f}' for x in row['round_p50s_ms'])})"
    )
    if cpu is not None:
        line += f"; CPU p50 {1000 * cpu['p50_ms']:.0f} p99 {1000 * cpu['p99_ms']:.0f} µs"
    return line


LABELS = {
    "router": "router (/v1/responses)",
    "direct": "direct (httpx, McpPool)",
    "direct-lean": "direct-lean (StreamTransport)",
    "direct-lean-2": "direct-lean-2 (a second one)",
}


def summarize(run: dict[str, Any], args: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    samples: dict[tuple[str, str], list[Sample]] = run["samples"]
    lines: list[str] = []
    summary: dict[str, Any] = {}
    n = args.rounds * args.requests
    paired = all(len(got) == n for got in samples.values())  # (a failed request would shift the pairs)

    def added(v: str, base: str) -> tuple[list[float], list[float]]:
        """Per iteration: router wall - `base` wall, and the router's CPU - the `base` client's own CPU."""
        router_s, base_s = samples[(v, "router")], samples[(v, base)]
        return (
            [r.wall - d.wall for r, d in zip(router_s, base_s, strict=True)],
            [r.router_cpu - d.client_cpu for r, d in zip(router_s, base_s, strict=True)],
        )

    def aa(v: str) -> list[float]:
        """Per iteration: direct-lean-2 wall - direct-lean wall (two identical clients: the pairing's noise)."""
        lean, lean2 = samples[(v, "direct-lean")], samples[(v, "direct-lean-2")]
        return [b.wall - a.wall for a, b in zip(lean, lean2, strict=True)]

    for variant in run["variants"]:
        v = variant.name
        k = len(variant.calls)
        what = (
            "no tool call: one upstream call"
            if not k
            else f"one round of {k} call{'s' * (k > 1)}: upstream -> {k} x MCP add{' (at once)' * (k > 1)} -> upstream"
        )
        lines.append(f"\nvariant {v} ({what})")
        lines.append(
            f"  {'per request':30}{'p50 ms':>9}{'p99 ms':>9}{'mean':>9}{'max':>9}   client CPU µs p50   "
            "router CPU µs p50/mean     n"
        )
        out: dict[str, Any] = {}
        for path in PATHS:
            got = samples[(v, path)]
            walls = [s.wall for s in got]
            router_cpu = [s.router_cpu for s in got]
            row = {
                "n": len(got),
                "p50_ms": ms(walls, 50),
                "p99_ms": ms(walls, 99),
                "mean_ms": 1000 * sum(walls) / max(1, len(walls)),
                "max_ms": 1000 * max(walls, default=float("nan")),
                "client_cpu_us_p50": 1e6 * percentile([s.client_cpu for s in got], 50),
                "router_cpu_us_p50": 1e6 * percentile(router_cpu, 50),
                "router_cpu_us_mean": 1e6 * sum(router_cpu) / max(1, len(router_cpu)),
            }
            out[path] = row
            lines.append(
                f"  {LABELS[path]:30}{row['p50_ms']:9.3f}{row['p99_ms']:9.3f}{row['mean_ms']:9.3f}{row['max_ms']:9.3f}"
                f"   {row['client_cpu_us_p50']:17.0f}   {row['router_cpu_us_p50']:14.0f} "
                f"/{row['router_cpu_us_mean']:6.0f}{row['n']:6}"
            )
        if paired:
            lines.append("  added by the router, per iteration (router - direct; CPU: router's - the client's own):")
            for base in ("direct", "direct-lean"):
                wall, cpu = added(v, base)
                out[f"added_vs_{base}"] = spread(wall, args.rounds, args.requests)
                out[f"added_cpu_vs_{base}"] = spread(cpu, args.rounds, args.requests)
                lines.append(spread_line(f"vs {base}", out[f"added_vs_{base}"], out[f"added_cpu_vs_{base}"]))
            # A/A: two identical clients, paired the same way: what the pairing's noise alone gives.
            out["noise_lean2_minus_lean"] = spread(aa(v), args.rounds, args.requests)
            lines.append(spread_line("noise: lean-2 - lean (A/A)", out["noise_lean2_minus_lean"]))
        summary[v] = out
    if not paired:
        lines.append("\n(some requests failed: the paths' samples cannot be paired by iteration; no added times)")
    if paired and "none" in summary:
        lines.append(
            "\nthe round alone, per iteration: (router - direct) of a round variant - (router - direct) of `none` "
            "in the same iteration\n(the router's per-request cost taken out; the noise of four requests in it)"
        )
        for variant in run["variants"]:
            v = variant.name
            if v == "none":
                continue
            for base in ("direct", "direct-lean"):
                wall, cpu = added(v, base)
                wall0, cpu0 = added("none", base)
                rows = (
                    spread([a - b for a, b in zip(wall, wall0, strict=True)], args.rounds, args.requests),
                    spread([a - b for a, b in zip(cpu, cpu0, strict=True)], args.rounds, args.requests),
                )
                summary[v][f"round_only_vs_{base}"], summary[v][f"round_only_cpu_vs_{base}"] = rows
                lines.append(spread_line(f"{v} vs {base}", *rows))

            noise = [x - y for x, y in zip(aa(v), aa("none"), strict=True)]
            summary[v]["round_only_noise"] = spread(noise, args.rounds, args.requests)
            lines.append(spread_line("noise (A/A, the same way)", summary[v]["round_only_noise"]))
    lines.append("")
    for v, out in summary.items():
        if v == "none":
            continue
        for base in ("direct", "direct-lean"):
            for key, what in ((f"added_vs_{base}", "whole request"), (f"round_only_vs_{base}", "round alone")):
                if key in out:
                    p99 = out[key]["p99_ms"]
                    met = "met" if p99 <= TARGET_P99_MS else "NOT met"
                    lines.append(
                        f"Target added p99 <= {TARGET_P99_MS:g} ms per hosted round: {v}, {what}, vs {base}: "
                        f"{p99:.3f} ms, {met}"
                    )
    threads = run["router_threads_s"]
    lines.append(
        "\nthe router's CPU by thread over the measured iterations (schedstat): "
        + ", ".join(f"{name} {seconds:.2f} s" for name, seconds in sorted(threads.items(), key=lambda kv: -kv[1]))
    )
    cpu = run["cpu_s"]
    others = run["machine_process_cpu_s"] - sum(cpu.values())
    lines.append(
        f"\n{n} measured iterations per variant ({args.rounds} rounds x {args.requests}) after {args.warmup} warm-up;"
        f" {run['wall_s']:.1f} s; failures: {len(run['failures'])}"
    )
    lines.append(
        f"CPU meanwhile: {', '.join(f'{name} {seconds:.1f} s' for name, seconds in cpu.items())}; other processes"
        f" on the machine {others:.1f} s ({100 * others / max(1e-9, run['wall_s']):.0f}% of a core)"
    )
    return "\n".join(lines), summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="rounds of --requests iterations (each reported)")
    parser.add_argument("--requests", type=int, default=200, help="iterations per round (one request per path)")
    parser.add_argument("--warmup", type=int, default=50, help="iterations before measuring")
    parser.add_argument("--variants", default="one,par4,none", help="comma-separated: one, par<K>, none")
    parser.add_argument("--history", choices=["auto", "chain", "input"], default="auto",
                        help="how requests skip the listing: previous_response_id (chain), or the turns as input "
                             "items; auto: chain unless the router lists again in a chain")  # fmt: skip
    parser.add_argument("--seed", type=int, default=1, help="of the requests' order in each iteration")
    parser.add_argument("--gap", type=float, default=1.0, help="ms of pause after each request (not timed)")
    parser.add_argument(
        "--store", choices=["sqlite", "memory"], help="the router's store (default: its default, sqlite)"
    )
    parser.add_argument("--serve-args", default="", help="extra `ferroute serve` options")
    parser.add_argument("--core", type=int, help="with --pin same: this core (default: the least busy one)")
    parser.add_argument("--loop", choices=["uvloop", "asyncio"], default="uvloop", help="this client's event loop")
    parser.add_argument(
        "--pin",
        choices=["same", "split", "none"],
        default="same",
        help="processes on one core, router apart, or not pinned",
    )
    parser.add_argument(
        "--profile", type=Path, help="py-spy the router's worker while measuring; collapsed stacks here (skews times)"
    )
    parser.add_argument(
        "--spans",
        action="store_true",
        help="also trace the router (OTLP to a receiver in this process) and report its own time per request from "
        "its spans: the response span less its upstream attempts and tool calls",
    )
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"report (default {RESULTS.relative_to(REPO)})")
    args = parser.parse_args(argv)
    args.variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    for v in args.variants:
        if v not in ("one", "none") and not (v.startswith("par") and v[3:].isdigit() and int(v[3:]) >= 1):
            parser.error(f"unknown variant {v!r}")

    cores = os.sched_getaffinity(0)
    pin = args.pin != "none" and (len(cores) >= 2 or args.pin == "same")
    router_core, other_core = (min(cores), max(cores)) if pin else (None, None)
    if args.pin == "same":
        router_core = other_core = args.core if args.core is not None else idlest_core(cores)
    info = machine_info()
    native = native_build(None)
    command = "python -m bench.tool_loop " + shlex.join(argv if argv is not None else sys.argv[1:])
    began = time.monotonic()
    try:
        if other_core is not None:
            os.sched_setaffinity(0, {other_core})
        with contextlib.ExitStack() as stack:
            upstream, upstream_pid = stack.enter_context(
                first_line_server(
                    [sys.executable, "-m", "tests.support.mock_upstream", "--port", "0"],
                    other_core,
                    "the mock upstream",
                    lambda line: line.startswith("PORT "),
                )
            )
            upstream_url = f"http://127.0.0.1:{int(upstream.split()[1])}"
            mcp_url, mcp_pid = stack.enter_context(
                first_line_server(
                    [sys.executable, "-m", "ferroute", "mcp-demo", "--port", "0"],
                    other_core,
                    "ferroute mcp-demo",
                    lambda line: line.startswith("http://127.0.0.1:") and line.endswith("/mcp"),
                )
            )
            extra = mcp_config(mcp_url)
            receiver = None
            if args.spans:
                from tests.support.otlp import otlp_receiver

                receiver = stack.enter_context(otlp_receiver())
                extra += f'\n[telemetry]\notlp_endpoint = "{receiver.url}"\n'
            router, router_port = stack.enter_context(
                start_router(
                    {PROVIDER: int(upstream.split()[1])},
                    router_core,
                    None,
                    args.store,
                    shlex.split(args.serve_args),
                    extra_config=extra,
                )
            )
            pids = {"router": router.pid, "mock upstream": upstream_pid, "MCP server": mcp_pid, "client": os.getpid()}
            coroutine = measure(args, router, router_port, upstream_url, mcp_url, pids)
            if args.loop == "uvloop":
                import uvloop

                run = uvloop.run(coroutine)
            else:
                run = asyncio.run(coroutine)
            if receiver is not None:  # (the batch processor exports every few seconds)
                expected = (args.warmup + args.rounds * args.requests) * len(run["variants"])
                with contextlib.suppress(AssertionError):
                    receiver.wait_for(lambda spans: sum(1 for s in spans if not s.parent_id) >= expected, 30)
                run["own"] = own_times(list(receiver.spans), run["measured_from_ns"])
    finally:
        with contextlib.suppress(OSError):
            os.sched_setaffinity(0, cores)
    report, _ = summarize(run, args)
    head = [
        f"command: {command}",
        f"machine: {info['cpu_model']}, nproc={info['nproc']}, kernel {info['kernel']}, Python {info['python']}, "
        f"granian {info['granian']}, httpx {info['httpx']}; loadavg at start {' '.join(info['loadavg_at_start'])}",
        f"native module: {native['profile']} build ({native.get('path', '?')})",
        f"router: 1 Granian worker, store {args.store or 'default (sqlite)'}, history {run['history']}; client loop "
        f"{args.loop}; pinning: "
        + (f"router on core {router_core}; mock, MCP server and client on core {other_core}" if pin else "none")
        + f" (--pin {args.pin})",
        "times: per request, sequential, interleaved (order shuffled per iteration); added = router - direct per "
        "iteration",
    ]
    text = "\n".join(head) + "\n" + report + f"\n(total {time.monotonic() - began:.0f} s)\n"
    if "own" in run:
        text += spans_report(run["own"]) + "\n"
    if args.profile is not None:
        text += profile_report(args.profile) + "\n"
    if run["failures"]:
        text += "failures (first 5): " + "; ".join(run["failures"][:5]) + "\n"
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    return 0 if not run["failures"] else 1


if __name__ == "__main__":
    sys.exit(main())
