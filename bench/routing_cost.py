"""What production routing costs, and what a failing target costs: real `ferroute serve` processes in front of the
Rust mock upstream, measured side by side in one run.

    .venv/bin/python -m bench.routing_cost            # ~3 minutes; writes bench/results/routing_cost.{json,txt}
    .venv/bin/python -m bench.routing_cost --quick    # < 1 minute: fewer requests, shorter windows

1. **Cost per feature.** Six routers (1 Granian worker each, pinned to the first core), each in front of the same
   mock upstream (20 tokens, the whole answer at once), streamed requests with `store: false`:
   - `plain`: the model `bench:up` (a plain `<model>:<provider>`), no keys, tracing off: today's path;
   - `route`: the model `smart`, a `fallback` route of two targets (`bench:up`, `bench:up2`, both healthy);
   - `limits`: `bench:up` with a `[[keys]]` key limited per minute (requests, tokens) and in concurrency, on a
     private `redis-server` (`[store] backend = "redis"`): an admission and an end per request, on Redis;
   - `tracing`: `bench:up` with `[telemetry] otlp_endpoint` set: a span per response and per attempt, exported
     over OTLP/HTTP (protobuf, batch processor) to a sink process that drops them;
   - `sampled`: `tracing` with `OTEL_TRACES_SAMPLER=parentbased_traceidratio`, `OTEL_TRACES_SAMPLER_ARG=0.1`;
   - `unsampled`: `tracing` with `OTEL_TRACES_SAMPLER=always_off`: what tracing costs a request before any span is
     recorded or exported (its context, the spans' ids, the upstream's `traceparent`).
   Rounds alternate the variants; each round runs `--requests` requests at concurrency 1 (time to first event, TTFE,
   p50/p99 from the load generator, and the router's CPU per request, by the scheduler's nanosecond count:
   `exec_seconds`) on each. Reported: each figure's median over the rounds, and each variant minus `plain`; the
   median of each round's CPU share against plain's in the same round ("paired"); and each router's CPU over the
   whole run (from after the warm-up to the batch processor's schedule delay after its last round) per request:
   this counts a tracing router's exports that happen between its windows (its timer's), which a window's figure
   misses (`--variants` picks some).
2. **Failover under load** (`ferroute bench load`'s generator): two mock upstreams, `bad` failing `--error-rate`
   (30%) of requests with a 503 before the first byte, `good` healthy; the route `failover` =
   `["bench:bad", "bench:good"]` (fallback, no retries, the circuit kept closed so that every failure is a failover)
   against the model `bench:good` on the same router. `--rate` requests started per second (an open model, below
   the router's capacity on one core, so that the added time is the failover's and not a queue's), alternating
   windows. Reported: client-visible errors (there must be none), TTFE p50/p99 each way and the added p99.

The equivalent command lines for part 2 are printed (`ferroute mock-upstream --error-rate 0.3 --error-kind
status:503`, `ferroute bench load --model failover`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests.support.servers import redis_server

from bench.harness import (
    REPO,
    exec_seconds,
    machine_info,
    native_build,
    pinned,
    start_mock,
    start_router,
    stop,
    write_results,
)
from bench.tracing import sink
from ferroute.loadtest.load import run_load

RESULTS = REPO / "bench" / "results" / "routing_cost.json"
_SETTLE = 6.0  # seconds: past the batch span processor's schedule delay (5 s), so that its timer has exported
KEY = "sk-bench-routing-cost-key-0123456789"
VARIANTS = ("plain", "route", "limits", "tracing", "sampled", "unsampled")


def _body(model: str) -> bytes:
    return json.dumps({"model": model, "input": "Say something.", "stream": True, "store": False}).encode()


def _window(url: str, body: bytes, pid: int, headers: list[str], **load: Any) -> dict[str, Any]:
    """One window of load: the generator's TTFE and errors, and the router's CPU per request."""
    before = exec_seconds(pid)
    result = run_load(url, body, headers=headers, **load)
    cpu = exec_seconds(pid) - before
    return {
        "requests": result["requests"],
        "errors": result["errors"],
        "errors_by_kind": result["errors_by_kind"],
        "ttfe_p50_ms": result["ttfe_ms"]["p50"],
        "ttfe_p99_ms": result["ttfe_ms"]["p99"],
        "requests_per_s": result["requests_per_s"],
        "cpu_us_per_request": 1e6 * cpu / max(1, result["requests"]),
    }


def _median(rounds: list[dict[str, Any]], key: str) -> float:
    return statistics.median(r[key] for r in rounds)


def features(args: argparse.Namespace, mock_core: int | None, router_core: int | None) -> dict[str, Any]:
    variants = tuple(v for v in VARIANTS if v in args.variants)
    with contextlib.ExitStack() as stack:
        mock = stack.enter_context(start_mock(mock_core, tokens=20))
        redis_url = stack.enter_context(redis_server()).url
        otlp = stack.enter_context(sink())
        ups = {"up": mock.port, "up2": mock.port}
        store_off = '\n[store]\nbackend = "memory"\ndefault_store = false\n'
        extra = {
            "plain": store_off,
            "route": store_off + '\n[[routes]]\nname = "smart"\ntargets = ["bench:up", "bench:up2"]\n',
            "limits": (
                f'\n[store]\nbackend = "redis"\nurl = "{redis_url}"\ndefault_store = false\n'
                f'\n[[keys]]\nname = "bench"\nkey = "{KEY}"\nrequests_per_minute = 100000000\n'
                "tokens_per_minute = 1000000000000\nmax_concurrent = 4096\n"
            ),
            "tracing": store_off + f'\n[telemetry]\notlp_endpoint = "{otlp}"\n',
            "sampled": store_off + f'\n[telemetry]\notlp_endpoint = "{otlp}"\n',
            "unsampled": store_off + f'\n[telemetry]\notlp_endpoint = "{otlp}"\n',
        }
        samplers = {
            "sampled": {"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.1"},
            "unsampled": {"OTEL_TRACES_SAMPLER": "always_off"},
        }
        routers = {
            v: stack.enter_context(start_router(ups, router_core, extra_config=extra[v], extra_env=samplers.get(v)))
            for v in variants
        }
        models = {v: "smart" if v == "route" else "bench:up" for v in variants}
        headers = {v: [f"authorization: Bearer {KEY}"] if v == "limits" else [] for v in variants}
        rounds: dict[str, list[dict[str, Any]]] = {v: [] for v in variants}
        for v in variants:  # warm-up (connections, imports, the first spans' exporter)
            process, port = routers[v]
            _window(f"http://127.0.0.1:{port}", _body(models[v]), process.pid, headers[v], requests=200, concurrency=4)
        time.sleep(_SETTLE)  # (the warm-up's spans exported by the batch processors' timer, before the run's count)
        run_start = {v: exec_seconds(routers[v][0].pid) for v in variants}
        for r in range(args.rounds):
            order = variants if r % 2 == 0 else tuple(reversed(variants))
            for v in order:
                process, port = routers[v]
                window = _window(
                    f"http://127.0.0.1:{port}", _body(models[v]), process.pid, headers[v],
                    requests=args.requests, concurrency=1,
                )  # fmt: skip
                rounds[v].append(window)
                print(
                    f"round {r + 1} {v:8} TTFE p50 {window['ttfe_p50_ms']:.3f} ms p99 {window['ttfe_p99_ms']:.3f} "
                    f"ms  CPU {window['cpu_us_per_request']:.0f} µs/request  errors {window['errors']}",
                    flush=True,
                )
        time.sleep(_SETTLE)  # (the last spans' export, by the timer)
        run_cpu = {v: exec_seconds(routers[v][0].pid) - run_start[v] for v in variants}
    summary: dict[str, Any] = {}
    for v in variants:
        summary[v] = {
            "ttfe_p50_ms": _median(rounds[v], "ttfe_p50_ms"),
            "ttfe_p99_ms": _median(rounds[v], "ttfe_p99_ms"),
            "cpu_us_per_request": _median(rounds[v], "cpu_us_per_request"),
            "run_cpu_us_per_request": 1e6 * run_cpu[v] / max(1, sum(w["requests"] for w in rounds[v])),
            "errors": sum(w["errors"] for w in rounds[v]),
        }
    plain = summary["plain"]
    for v in variants[1:]:
        s = summary[v]
        s["added_ttfe_p50_ms"] = s["ttfe_p50_ms"] - plain["ttfe_p50_ms"]
        s["added_ttfe_p99_ms"] = s["ttfe_p99_ms"] - plain["ttfe_p99_ms"]
        s["added_cpu_percent"] = 100 * (s["cpu_us_per_request"] / plain["cpu_us_per_request"] - 1)
        s["added_run_cpu_percent"] = 100 * (s["run_cpu_us_per_request"] / plain["run_cpu_us_per_request"] - 1)
        # Each round's share against plain's window in the same round (run next to it), then the median: what
        # drifts over the run (the VM's neighbours) is left out of it more than of the medians' ratio.
        pairs = zip(rounds[v], rounds["plain"], strict=True)
        s["paired_cpu_percent"] = statistics.median(
            100 * (w["cpu_us_per_request"] / p["cpu_us_per_request"] - 1) for w, p in pairs
        )
    return {"rounds": rounds, "summary": summary, "variants": list(variants)}


def failover(args: argparse.Namespace, mock_core: int | None, router_core: int | None) -> dict[str, Any]:
    bad_args = ["--error-rate", f"{args.error_rate:g}", "--error-kind", "status:503"]
    with contextlib.ExitStack() as stack:
        good = stack.enter_context(start_mock(mock_core, tokens=20))
        bad = stack.enter_context(_failing_mock(mock_core, bad_args))
        config = (
            '\n[store]\nbackend = "memory"\ndefault_store = false\n'
            "\n[routing]\nbreaker_failures = 1000000\n"  # (kept closed: every failure of `bad` is a failover)
            '\n[[routes]]\nname = "failover"\ntargets = ["bench:bad", "bench:good"]\n'
        )
        process, port = stack.enter_context(
            start_router({"good": good.port, "bad": bad}, router_core, extra_config=config)
        )
        url = f"http://127.0.0.1:{port}"
        print(
            "equivalent: ferroute mock-upstream --port P1; ferroute mock-upstream --port P2 "
            + " ".join(bad_args)
            + f"; ferroute bench load --url {url} --model failover --rate {args.rate:g} "
            f"--duration {args.duration:g}",
            flush=True,
        )
        windows: dict[str, list[dict[str, Any]]] = {"direct": [], "failover": []}
        load = {"rate": args.rate, "duration": args.duration, "warmup": 1.0}
        for r in range(args.failover_rounds):
            for name in ("direct", "failover") if r % 2 == 0 else ("failover", "direct"):
                model = "bench:good" if name == "direct" else "failover"
                window = _window(url, _body(model), process.pid, [], **load)
                windows[name].append(window)
                print(
                    f"round {r + 1} {name:8} TTFE p50 {window['ttfe_p50_ms']:.3f} ms p99 {window['ttfe_p99_ms']:.3f} "
                    f"ms  {window['requests_per_s']:.0f} req/s  errors {window['errors']}",
                    flush=True,
                )
    summary = {
        name: {
            "ttfe_p50_ms": _median(ws, "ttfe_p50_ms"),
            "ttfe_p99_ms": _median(ws, "ttfe_p99_ms"),
            "requests_per_s": _median(ws, "requests_per_s"),
            "cpu_us_per_request": _median(ws, "cpu_us_per_request"),
            "requests": sum(w["requests"] for w in ws),
            "errors": sum(w["errors"] for w in ws),
        }
        for name, ws in windows.items()
    }
    summary["added_ttfe_p99_ms"] = summary["failover"]["ttfe_p99_ms"] - summary["direct"]["ttfe_p99_ms"]
    summary["added_ttfe_p50_ms"] = summary["failover"]["ttfe_p50_ms"] - summary["direct"]["ttfe_p50_ms"]
    return {"windows": windows, "summary": summary, "error_rate": args.error_rate, "rate": args.rate}


@contextlib.contextmanager
def _failing_mock(core: int | None, extra: list[str]) -> Iterator[int]:
    """`ferroute mock-upstream` with `extra` flags (its failures): its port."""
    args = [sys.executable, "-m", "ferroute", "mock-upstream", "--port", "0", "--tokens", "20", *extra]
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(
            pinned(args, core), cwd=REPO, stdout=subprocess.PIPE, stderr=log, start_new_session=True
        )
        try:
            assert process.stdout is not None
            line = process.stdout.readline()
            if not line.startswith(b"PORT "):
                raise RuntimeError("the failing mock upstream did not start")
            yield int(line.split()[1])
        finally:
            stop(process)


def report(results: dict[str, Any]) -> str:
    lines = []
    if "features" in results:
        lines += _features_report(results)
    if "failover" in results:
        lines += _failover_report(results)
    return "\n".join(lines)


def _features_report(results: dict[str, Any]) -> list[str]:
    s = results["features"]["summary"]
    lines = [
        "cost per feature (concurrency 1, streamed, 20-token answers; median of rounds; CPU/request also over the",
        "whole run, exports between windows included; paired: the median of each round's share against plain's)",
        f"  {'':9} {'TTFE p50':>10} {'p99':>9} {'added p50':>10} {'added p99':>10} {'CPU/request':>12} {'added':>8}"
        f" {'whole run':>10} {'added':>8} {'paired':>8}",
    ]
    for v in results["features"].get("variants", VARIANTS):
        row = s[v]
        added = (
            f"{row['added_ttfe_p50_ms']:+9.3f}  {row['added_ttfe_p99_ms']:+9.3f}  {row['cpu_us_per_request']:9.0f} µs "
            f"{row['added_cpu_percent']:+6.1f}%  {row['run_cpu_us_per_request']:6.0f} µs "
            f"{row['added_run_cpu_percent']:+6.1f}% {row.get('paired_cpu_percent', float('nan')):+7.1f}%"
            if v != "plain"
            else f"{'':9}  {'':9}  {row['cpu_us_per_request']:9.0f} µs {'':7}  {row['run_cpu_us_per_request']:6.0f} µs"
        )
        lines.append(f"  {v:9} {row['ttfe_p50_ms']:8.3f}ms {row['ttfe_p99_ms']:7.3f}ms {added}")
    return lines


def _failover_report(results: dict[str, Any]) -> list[str]:
    f = results["failover"]["summary"]
    lines = []
    lines.append(
        f"failover under load ({results['failover']['rate']:g} requests/s started on schedule, "
        f"{100 * results['failover']['error_rate']:g}% of the first target's requests failing with 503)"
    )
    for name in ("direct", "failover"):
        row = f[name]
        lines.append(
            f"  {name:8} TTFE p50 {row['ttfe_p50_ms']:.3f} ms p99 {row['ttfe_p99_ms']:.3f} ms  "
            f"{row['requests_per_s']:.0f} req/s  {row['cpu_us_per_request']:.0f} µs CPU/request  "
            f"{row['requests']} requests, {row['errors']} client-visible errors"
        )
    lines.append(
        f"  added by failover: TTFE p50 {f['added_ttfe_p50_ms']:+.3f} ms, p99 {f['added_ttfe_p99_ms']:+.3f} ms"
    )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer requests and shorter windows")
    parser.add_argument("--requests", type=int, default=1000, help="requests per variant per round (part 1)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds (part 1)")
    parser.add_argument("--rate", type=float, default=400, help="requests started per second (part 2)")
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per window (part 2)")
    parser.add_argument("--failover-rounds", type=int, default=4, help="windows each way (part 2)")
    parser.add_argument("--error-rate", type=float, default=0.3, help="share of the bad target's failures (part 2)")
    parser.add_argument("--only", choices=("features", "failover"), help="run one part only")
    parser.add_argument(
        "--variants",
        type=lambda text: ["plain", *(v for v in text.split(",") if v and v != "plain")],
        default=list(VARIANTS),
        help=f"part 1's variants, comma-separated (plain is always run): {','.join(VARIANTS)}",
    )
    parser.add_argument("--no-pin", action="store_true", help="do not pin processes to cores")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.quick:
        args.requests, args.rounds, args.duration, args.failover_rounds = 300, 3, 3.0, 2

    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    router_core = mock_core = None
    if len(cores) >= 2 and not args.no_pin:
        router_core, mock_core = cores[0], cores[-1]
    results = {
        "command": "python -m bench.routing_cost" + (" --quick" if args.quick else ""),
        "machine": machine_info(),
        "native": native_build(None),
    }
    if args.only != "failover":
        results["features"] = features(args, mock_core, router_core)
    if args.only != "features":
        results["failover"] = failover(args, mock_core, router_core)
    text = report(results)
    print(text)
    write_results(args.out, results, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
