"""The CPU tracing costs per request: the app in-process (no server, no sockets toward the client), `POST
/v1/responses` through the built-in mock provider, with tracing off and on, side by side in one process.

    .venv/bin/python -m bench.tracing [--stream] [--requests 1000] [--rounds 7]

"On" exports over OTLP/HTTP to a sink in another process (which answers 200 and drops the spans), through the
batch processor's thread: this process's CPU (`time.process_time`, every thread) counts the spans' making, their
protobuf encoding and the export's HTTP requests; each "on" round ends with a flush so its exports are in its time.
Rounds alternate off/on; printed: the median and best µs of CPU per request each way and the added share. The mock
provider's own cost is in both (a real upstream costs the router more per request: the share is an upper bound).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator

from bench.harness import post_in_process
from ferroute.app import App, build_app
from ferroute.config import parse_settings

_SINK = """
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
class H(BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length") or 0))
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()
    def log_message(self, *args):
        pass
server = ThreadingHTTPServer(("127.0.0.1", 0), H)
print(server.server_address[1], flush=True)
server.serve_forever()
"""


@contextlib.contextmanager
def sink() -> Iterator[str]:
    process = subprocess.Popen([sys.executable, "-c", _SINK], stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        yield f"http://127.0.0.1:{int(process.stdout.readline())}"
    finally:
        process.terminate()
        process.wait(timeout=10)


def make(endpoint: str | None) -> App:
    config = '[store]\nbackend = "memory"\n[[providers]]\nname = "p"\nkind = "mock"\n'
    if endpoint is not None:
        config += f'[telemetry]\notlp_endpoint = "{endpoint}"\n'
    app = build_app(parse_settings(config))
    if app.telemetry is not None:
        app.telemetry.start()
    return app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stream", action="store_true", help="streamed requests (default: whole responses)")
    parser.add_argument("--requests", type=int, default=1000, help="requests per round")
    parser.add_argument("--rounds", type=int, default=7, help="rounds each way")
    parser.add_argument("--warmup", type=int, default=300)
    args = parser.parse_args(argv)
    body = json.dumps({"model": "m", "input": "hello there", "stream": args.stream}).encode()
    header = b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/v1/responses",
        "headers": [(b"content-length", str(len(body)).encode()), (b"traceparent", header)],
        "query_string": b"",
    }

    async def one(app: App) -> None:
        await post_in_process(app, scope, body)

    async def round_of(app: App) -> float:
        began = time.process_time()
        for _ in range(args.requests):
            await one(app)
        if app.telemetry is not None and app.telemetry.provider is not None:
            app.telemetry.provider.force_flush()
        return (time.process_time() - began) / args.requests * 1e6

    with sink() as endpoint:
        off, on = make(None), make(endpoint)
        assert off.telemetry is None and on.telemetry is not None

        async def run() -> tuple[list[float], list[float]]:
            for app in (off, on):
                for _ in range(args.warmup):
                    await one(app)
            offs, ons = [], []
            for _ in range(args.rounds):
                offs.append(await round_of(off))
                ons.append(await round_of(on))
            return offs, ons

        offs, ons = asyncio.run(run())
        asyncio.run(on.telemetry.shutdown())
    kind = "stream" if args.stream else "whole"
    off_median, on_median = statistics.median(offs), statistics.median(ons)
    print(
        f"{kind}: CPU µs per request, median (best) of {args.rounds} rounds of {args.requests}: "
        f"tracing off {off_median:.1f} ({min(offs):.1f}), on {on_median:.1f} ({min(ons):.1f}); "
        f"added {on_median - off_median:.1f} µs = {(on_median / off_median - 1) * 100:.1f}%"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
