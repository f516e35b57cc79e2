"""What `ferroute.metrics` costs a request, side by side with an earlier revision's module (default: the per-process
dicts before instance-wide metrics), in one process: the calls a streamed request makes (`request`, `stream_done`,
`in_flight` up and down, and `usage` where the module has it), then what publishing a worker's snapshot and merging
a scrape over several workers cost, and the publishing's share per request at a given request rate.

    .venv/bin/python -m bench.metrics_cost [--baseline-rev 904f906] [--rps 1000]

Prints µs per request (best of `--rounds` rounds of `--calls` requests).
"""

from __future__ import annotations

import argparse
import importlib.util
import shutil
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path
from typing import Any

from ferroute import metrics as current
from ferroute.config import PriceConfig

REPO = Path(__file__).resolve().parents[1]
PROVIDERS = ["up", "anth", "oai"]
MODELS = [f"model-{i}:up" for i in range(8)]
KEYS = ["team-a", "team-b", "default", ""]


def load_revision(rev: str) -> types.ModuleType:
    source = subprocess.run(
        ["git", "show", f"{rev}:python/ferroute/metrics.py"], cwd=REPO, check=True, capture_output=True, text=True
    ).stdout
    path = Path(tempfile.mkdtemp(prefix="ferroute-metrics-bench-")) / "baseline_metrics.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("baseline_metrics", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def per_request(metrics: Any, calls: int, rounds: int) -> float:
    """µs per request: the Metrics calls of one streamed request (and its usage where there is `usage`)."""
    has_usage = hasattr(metrics, "usage")
    usage = (1200, 350, 400, 120)
    best = float("inf")
    for _ in range(rounds):
        began = time.perf_counter()
        for i in range(calls):
            provider = PROVIDERS[i % 3]
            start = time.monotonic()
            metrics.in_flight += 1
            metrics.in_flight -= 1
            metrics.stream_done(provider, start - 0.2, start - 0.15)
            if has_usage:
                metrics.usage(KEYS[i % 4], MODELS[i % 8], usage, "model", provider)
            metrics.request(provider, 200, True)
        best = min(best, (time.perf_counter() - began) / calls * 1e6)
    return best


def timed(action: Any, rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        began = time.perf_counter()
        action()
        best = min(best, time.perf_counter() - began)
    return best * 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline-rev", default="904f906", help="the git revision of the module to compare with")
    parser.add_argument("--calls", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--workers", type=int, default=8, help="workers' snapshots merged by a scrape")
    parser.add_argument("--rps", type=float, default=1000, help="requests per second per worker (publishing's share)")
    args = parser.parse_args(argv)
    baseline = load_revision(args.baseline_rev)
    prices = [PriceConfig(model="model-*", input_per_mtok=2.5, output_per_mtok=10, cached_input_per_mtok=1.25)]
    print(f"python {sys.version.split()[0]}; {args.calls} requests a round, best of {args.rounds}")
    # Interleaved, so that both see the same machine.
    results: dict[str, list[float]] = {"baseline": [], "plain": [], "shared+prices": []}
    folder = current.instance_directory()  # (where `ferroute serve` puts it: /dev/shm where there is one)
    try:
        for _ in range(3):
            results["baseline"].append(per_request(baseline.Metrics(), args.calls, args.rounds))
            results["plain"].append(per_request(current.Metrics(), args.calls, args.rounds))
            shared = current.Metrics(prices, folder)
            results["shared+prices"].append(per_request(shared, args.calls, args.rounds))
        for name, values in results.items():
            print(f"  request path, {name:<14} {min(values):6.2f} µs/request")
        print("  (baseline: " + args.baseline_rev + "'s module, no usage; plain: this one without a directory;")
        print("   shared+prices: with a directory and a price table; the request path is the same dicts)")

        # A worker's snapshot: built and written (when changed) every PUBLISH_EVERY seconds.
        assert shared.shared is not None
        shared.shared.open()

        def publish() -> None:
            shared.request("up", 200, True)  # (a change, so that it is written)
            shared.publish()

        publish_us = timed(publish, 50)
        unchanged_us = timed(shared.publish, 50)
        per_second = 1 / current.PUBLISH_EVERY
        changed, idle = publish_us * per_second / 1e4, unchanged_us * per_second / 1e4
        print(f"  publish: {publish_us:.1f} µs if anything changed, {unchanged_us:.1f} µs if not, {per_second:.0f}/s:")
        print(f"    {changed:.3f}% of a core for a busy worker, {idle:.3f}% for an idle one;")
        print(f"    at {args.rps:.0f} requests/s a worker, {publish_us * per_second / args.rps:.3f} µs/request")
        # A scrape merging `--workers` workers' snapshots (each with the same series).
        snapshot = shared.snapshot()
        others = []
        for _ in range(args.workers - 1):
            other = current.Metrics(prices, folder)
            assert other.shared is not None
            other.shared.open()
            other.shared.write(snapshot)
            others.append(other)
        series = sum(len(f["values"]) for f in snapshot.values())
        print(f"  scrape over {args.workers} workers ({series} series each): {timed(shared.render, 20) / 1000:.2f} ms")
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
