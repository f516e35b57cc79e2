"""`ferroute mock-upstream`: the Rust mock LLM upstream from the command line."""

from __future__ import annotations

import argparse
import resource
import signal
import sys
from types import FrameType

from ferroute._core import MockUpstream


def parse_gap(text: str) -> tuple[float, float]:
    """`A` (fixed, ms) or `A-B` (uniform in A..B ms)."""
    low, sep, high = text.partition("-")
    try:
        a = float(low)
        b = float(high) if sep else a
    except ValueError:
        raise argparse.ArgumentTypeError(f"gap {text!r}: expected milliseconds as A or A-B") from None
    if a < 0 or b < a:
        raise argparse.ArgumentTypeError(f"gap {text!r}: expected 0 <= A <= B")
    return a, b


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000; 0: any free port)")
    parser.add_argument("--ttft-ms", type=float, default=0.0, help="time to first token, ms (default 0)")
    parser.add_argument(
        "--gap-ms", type=parse_gap, default=(0.0, 0.0), metavar="A[-B]",
        help="gap between tokens, ms: fixed A or uniform in A-B (default 0: the whole answer at once)",
    )  # fmt: skip
    parser.add_argument("--tokens", type=int, default=20, help="text tokens per answer (default 20)")
    parser.add_argument("--reasoning-tokens", type=int, default=0, help="reasoning tokens before the text")
    parser.add_argument("--tool-call", action="store_true", help="end with a function call (arguments in fragments)")
    parser.add_argument("--error-rate", type=float, default=0.0, help="fraction of requests that fail (0-1)")
    parser.add_argument(
        "--error-kind", default="status:503", help="status:<code> | drop (mid-stream) | stall (mid-stream)"
    )
    parser.add_argument(
        "--close-delimited", action="store_true", help="end streams by closing the connection (default: chunked)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed for the gap and error draws (0: random)")
    parser.add_argument(
        "--stats-interval", type=float, default=0.0, help="print counters to stderr every N seconds (0: at exit only)"
    )


class _Stop(Exception):
    pass


def _raise_stop(signum: int, frame: FrameType | None) -> None:
    raise _Stop


def _summary(server: MockUpstream) -> str:
    s = server.stats()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    process_cpu = usage.ru_utime + usage.ru_stime
    per_event = f", {s['cpu_s'] * 1e6 / s['events']:.2f} µs CPU/event" if s["events"] else ""
    return (
        f"mock-upstream: {s['requests']} requests, {s['streams']} streams, {s['events']} events, "
        f"{s['bytes'] / 1e6:.1f} MB, {s['errors_injected']} injected errors in {s['uptime_s']:.1f} s; "
        f"server threads {s['cpu_s']:.2f} s CPU{per_event} (process {process_cpu:.2f} s)"
    )


def run(args: argparse.Namespace) -> int:
    gap_min, gap_max = args.gap_ms
    try:
        server = MockUpstream(
            args.host, args.port, ttft_ms=args.ttft_ms, gap_ms=gap_min, gap_max_ms=gap_max, tokens=args.tokens,
            reasoning_tokens=args.reasoning_tokens, tool_call=args.tool_call, error_rate=args.error_rate,
            error_kind=args.error_kind, chunked=not args.close_delimited, seed=args.seed,
        )  # fmt: skip
    except (ValueError, OSError) as e:
        print(f"ferroute mock-upstream: {e}", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _raise_stop)
    print(f"PORT {server.port}", flush=True)
    print(
        f"ferroute mock-upstream: {server.url} (POST /v1/chat/completions, /v1/messages, /v1/responses); "
        f"ttft {args.ttft_ms} ms, gap {gap_min}-{gap_max} ms, {args.tokens} tokens",
        file=sys.stderr,
        flush=True,
    )
    try:
        while not server.wait(args.stats_interval or None):
            print(_summary(server), file=sys.stderr, flush=True)
    except (KeyboardInterrupt, _Stop):
        pass
    finally:
        if not server.stopped:
            print(_summary(server), file=sys.stderr, flush=True)
        server.stop()
    return 0
