"""Continuation cost: a `previous_response_id` chain N turns deep vs a fresh request, sqlite and redis.

Run (from the repository root; `make develop` first for release figures):

    .venv/bin/python -m bench.continuation            # ~1 minute
    .venv/bin/python -m bench.continuation --quick    # seconds; what bench/test_continuation.py runs

For each backend a `ferroute serve` (built-in mock provider, so no network and no upstream time)
gets, over one keep-alive connection, interleaved non-streaming requests of three kinds at each
depth d (a chain of d earlier turns, built first):

- `fresh`: one user message, no `previous_response_id`;
- `inline`: the same whole conversation sent as `input` (2d+1 items), no store read;
- `continue`: one new message with `previous_response_id` = the d-th turn.

All three store their response (store: true), so each pays one write. `continue - inline` is what
reading the chain costs (two store round trips at any depth: the previous record, then all of its
ancestors in one `IN (…)` query / one Redis pipeline); `continue - fresh` is what a client saves
sending nothing but the new message costs in all (reading, validating and translating the longer
context included). Medians (and p90) over `--requests` requests of each kind.

A second table isolates the store: in-process, the time to load a chain of d records (~1.5 KB each)
the way the router does it (`get_many([previous])` then `get_many(ancestors)`: two round trips) next
to the naive way (one `get` per turn: d round trips), so the round-trip count shows on its own.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from typing import Any

import httpx
from tests.support.servers import Server, redis_server, router, store_section

from ferroute.store import Record, Store
from ferroute.store.redis import RedisStore
from ferroute.store.sqlite import SQLiteStore

DEPTHS = (0, 1, 5, 10, 20, 50)
QUICK_DEPTHS = (0, 2)


@contextlib.contextmanager
def _server(backend: str) -> Iterator[Server]:
    with contextlib.ExitStack() as stack:
        url = stack.enter_context(redis_server()).url if backend == "redis" else None
        config = store_section(backend, url) + '[[providers]]\nname = "mock"\nkind = "mock"\n'
        yield stack.enter_context(router(config, extra_args=["--no-access-log"]))


def _post(client: httpx.Client, body: dict[str, Any]) -> tuple[float, dict[str, Any]]:
    began = time.perf_counter()
    response = client.post("/v1/responses", json=body)
    elapsed = time.perf_counter() - began
    if response.status_code != 200:
        raise RuntimeError(f"HTTP {response.status_code}: {response.text[:300]}")
    data: dict[str, Any] = response.json()
    return elapsed, data


def _chain(client: httpx.Client, depth: int) -> tuple[str | None, list[dict[str, Any]]]:
    """A conversation `depth` turns deep: the last response id and the whole context as input items."""
    previous: str | None = None
    context: list[dict[str, Any]] = []
    for turn in range(depth):
        message = {"role": "user", "content": f"Turn {turn}: tell me something about the number {turn}."}
        body: dict[str, Any] = {"model": "m", "input": [message]}
        if previous is not None:
            body["previous_response_id"] = previous
        _, data = _post(client, body)
        context += [message, *({k: v for k, v in item.items() if k != "status"} for item in data["output"])]
        previous = data["id"]
    return previous, context


def _ms(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "p50_ms": round(statistics.median(ordered) * 1000, 3),
        "p90_ms": round(ordered[int(0.9 * (len(ordered) - 1))] * 1000, 3),
    }


def measure(backend: str, depths: tuple[int, ...], requests: int, warmup: int) -> dict[str, Any]:
    out: dict[str, Any] = {"backend": backend, "depths": {}}
    with _server(backend) as server, httpx.Client(base_url=server.url, timeout=30) as client:
        for depth in depths:
            previous, context = _chain(client, depth)
            ask = {"role": "user", "content": "And now?"}
            kinds: dict[str, dict[str, Any]] = {
                "fresh": {"model": "m", "input": [ask]},
                "inline": {"model": "m", "input": [*context, ask]},
            }
            if previous is not None:
                kinds["continue"] = {"model": "m", "input": [ask], "previous_response_id": previous}
            times: dict[str, list[float]] = {kind: [] for kind in kinds}
            for i in range(warmup + requests):
                for kind, body in kinds.items():  # interleaved, so drift hits every kind alike
                    elapsed, _ = _post(client, body)
                    if i >= warmup:
                        times[kind].append(elapsed)
            row: dict[str, Any] = {kind: _ms(values) for kind, values in times.items()}
            if "continue" in row:
                row["added_vs_fresh_ms"] = round(row["continue"]["p50_ms"] - row["fresh"]["p50_ms"], 3)
                row["added_vs_inline_ms"] = round(row["continue"]["p50_ms"] - row["inline"]["p50_ms"], 3)
            out["depths"][str(depth)] = row
    return out


def store_reads(backend: str, depths: tuple[int, ...], requests: int) -> dict[str, Any]:
    """In-process: loading a chain in two round trips vs one round trip per turn."""
    response = json.dumps({"id": "resp_x", "output": [{"type": "message", "content": [{"text": "x" * 1200}]}]})

    async def measure_store(store: Store) -> dict[str, Any]:
        rows: dict[str, Any] = {}
        ids: list[str] = []
        for turn in range(max(depths)):
            rid = f"resp_{turn:048x}"
            await store.put("t", Record(id=rid, response=response.encode(), ancestors=list(ids)))
            ids.append(rid)
        for depth in depths:
            if depth == 0:
                continue
            last = ids[depth - 1]
            chain: list[float] = []
            naive: list[float] = []
            for _ in range(requests):
                began = time.perf_counter()
                [previous] = await store.get_many("t", [last])
                assert previous is not None
                found = await store.get_many("t", previous.ancestors)
                chain.append(time.perf_counter() - began)
                assert len(found) == depth - 1
                began = time.perf_counter()
                for rid in ids[:depth]:
                    await store.get("t", rid)
                naive.append(time.perf_counter() - began)
            rows[str(depth)] = {"two_round_trips": _ms(chain), "one_per_turn": _ms(naive)}
        await store.close()
        return rows

    with contextlib.ExitStack() as stack:
        if backend == "redis":
            store: Store = RedisStore(stack.enter_context(redis_server()).url)
        else:
            tmp = stack.enter_context(tempfile.TemporaryDirectory())
            store = SQLiteStore(f"{tmp}/bench.sqlite3")
        return {"backend": backend, "depths": asyncio.run(measure_store(store))}


def run(
    quick: bool = False, requests: int | None = None, backends: tuple[str, ...] = ("sqlite", "redis")
) -> dict[str, Any]:
    depths = QUICK_DEPTHS if quick else DEPTHS
    count = requests or (5 if quick else 200)
    warmup = 1 if quick else 20
    return {
        "requests": count,
        "results": [measure(backend, depths, count, warmup) for backend in backends],
        "store_reads": [store_reads(backend, depths, count) for backend in backends if backend != "memory"],
    }


def table(report: dict[str, Any]) -> str:
    lines = ["| backend | depth | fresh p50 | inline p50 | continue p50 | continue - fresh | continue - inline |",
             "|---|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    for result in report["results"]:
        for depth, row in result["depths"].items():
            if "continue" not in row:
                continue
            lines.append(
                f"| {result['backend']} | {depth} | {row['fresh']['p50_ms']:.2f} ms | {row['inline']['p50_ms']:.2f} ms"
                f" | {row['continue']['p50_ms']:.2f} ms | {row['added_vs_fresh_ms']:+.2f} ms"
                f" | {row['added_vs_inline_ms']:+.2f} ms |"
            )
    lines += ["", "| backend | depth | chain load, 2 round trips p50 | one get per turn p50 |", "|---|---:|---:|---:|"]
    for result in report["store_reads"]:
        for depth, row in result["depths"].items():
            lines.append(
                f"| {result['backend']} | {depth} | {row['two_round_trips']['p50_ms']:.3f} ms"
                f" | {row['one_per_turn']['p50_ms']:.3f} ms |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="two small depths, a few requests (a smoke run)")
    parser.add_argument("--requests", type=int, help="timed requests of each kind at each depth (default 200)")
    parser.add_argument("--backend", action="append", choices=["sqlite", "redis", "memory"], help="repeatable")
    parser.add_argument("--json", action="store_true", help="print the raw report as JSON too")
    args = parser.parse_args(argv)
    report = run(args.quick, args.requests, tuple(args.backend or ("sqlite", "redis")))
    print(table(report))
    if args.json:
        print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
