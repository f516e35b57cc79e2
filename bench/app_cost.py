"""The app's own CPU per request, in-process (no server, no sockets): `POST /v1/responses` through the built-in mock
provider, as an A/B between two checkouts of the Python code.

    PYTHONPATH=<checkout>/python:. .venv/bin/python -m bench.app_cost --store sqlite [--stream] [--auth api_key]

Prints the best and median of `--rounds` rounds of `--requests` requests (after a warm-up) in µs per request. Run it
for each checkout in turn, several times, on a quiet machine: it measures Python work only (the mock provider's
own cost included, the same on both sides).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time

from bench.harness import post_in_process
from ferroute.config import parse_settings

try:
    from ferroute.app import build_app as make_app
except ImportError:  # (a checkout from before `build_app`)
    from ferroute.app import App as make_app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", choices=["memory", "sqlite"], default="sqlite")
    parser.add_argument("--stream", action="store_true", help="streamed requests (default: whole responses)")
    parser.add_argument("--requests", type=int, default=1000, help="requests per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=300)
    parser.add_argument(
        "--auth",
        choices=["none", "api_key", "limited"],
        default="none",
        help="no keys; one `[server] api_keys` key; or a `[[keys]]` key with limits (never reached) in this process",
    )
    args = parser.parse_args(argv)
    folder = tempfile.mkdtemp(prefix="ferroute-app-cost-")
    config = (
        f'[store]\nbackend = "{args.store}"\npath = "{folder}/s.sqlite3"\n[[providers]]\nname = "p"\nkind = "mock"\n'
    )
    headers = []
    if args.auth != "none":
        headers = [(b"authorization", b"Bearer sk-bench-key")]
        config = '[server]\napi_keys = ["sk-bench-key"]\n' + config
    if args.auth == "limited":
        config = config.replace('api_keys = ["sk-bench-key"]', "api_keys = []")
        config += (
            '[[keys]]\nname = "bench"\nkey = "sk-bench-key"\nrequests_per_minute = 1000000000\n'
            "tokens_per_minute = 1000000000000\nmax_concurrent = 64\n"
        )
    app = make_app(parse_settings(config))
    body = json.dumps({"model": "m", "input": "hello there", "stream": args.stream}).encode()
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/v1/responses",
        "headers": [(b"content-length", str(len(body)).encode()), *headers],
        "query_string": b"",
    }

    async def one() -> None:
        await post_in_process(app, scope, body)

    async def run() -> list[float]:
        for _ in range(args.warmup):
            await one()
        rounds = []
        for _ in range(args.rounds):
            began = time.perf_counter()
            for _ in range(args.requests):
                await one()
            rounds.append((time.perf_counter() - began) / args.requests * 1e6)
        return rounds

    rounds = asyncio.run(run())
    kind = "stream" if args.stream else "whole"
    best, median = min(rounds), statistics.median(rounds)
    print(f"{args.store} {kind} (auth {args.auth}): µs per request best {best:.1f}, median {median:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
