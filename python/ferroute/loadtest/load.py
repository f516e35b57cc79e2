"""`ferroute bench load` and `ferroute bench sweep`: the Rust load generator from the command line."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from ferroute._core import LoadGenerator
from ferroute.loadtest import report

DEFAULT_INPUT = "Say hello."


def request_body(model: str, stream: bool, body_file: Path | None = None, text: str = DEFAULT_INPUT) -> bytes:
    """The body every request sends: `--body FILE` (its `stream` set from the flag) or a small text request."""
    body: dict[str, Any]
    if body_file is not None:
        loaded = json.loads(body_file.read_text())
        if not isinstance(loaded, dict):
            raise ValueError(f"{body_file}: the body must be a JSON object")
        body = loaded
    else:
        body = {"model": model, "input": text}
    body["stream"] = stream
    return json.dumps(body).encode()


def run_load(
    url: str,
    body: bytes,
    *,
    stream: bool = True,
    concurrency: int | None = None,
    rate: float | None = None,
    duration: float | None = None,
    requests: int | None = None,
    warmup: float = 0.0,
    timeout: float = 30.0,
    require_done: bool = True,
    headers: list[str] | None = None,
    check_grammar: bool = True,
    progress: bool = False,
    label: str = "",
) -> dict[str, Any]:
    """One run; returns the report dict. With `progress`, a live line on stderr."""
    generator = LoadGenerator(
        url, body, stream=stream, concurrency=concurrency, rate=rate, duration=duration, requests=requests,
        warmup=warmup, timeout=timeout, require_done=require_done, headers=headers or [],
        check_grammar=check_grammar,
    )  # fmt: skip
    tty = sys.stderr.isatty()
    last_print = 0.0
    last_events = 0
    last_time = time.monotonic()
    try:
        while not generator.finished:
            time.sleep(0.1)
            now = time.monotonic()
            if progress and now - last_print >= (0.5 if tty else 2.0):
                p = generator.progress()
                rate_now = (p["events"] - last_events) / max(now - last_time, 1e-9)
                last_events, last_time, last_print = p["events"], now, now
                phase = "measuring" if p["measuring"] else "warm-up"
                line = (
                    f"{label}{p['elapsed_s']:6.1f}s {phase:9}  ok {p['completed']:>8}  errors {p['failed']:>6}  "
                    f"in flight {p['in_flight']:>5}  events/s {rate_now:>10,.0f}"
                )
                print(f"\r{line}" if tty else line, end="" if tty else "\n", file=sys.stderr, flush=True)
    except KeyboardInterrupt:
        generator.abort()
        print("\ninterrupted: abandoning the requests in flight", file=sys.stderr)
    if progress and tty:
        print(file=sys.stderr)
    result: dict[str, Any] = json.loads(generator.result())
    return result


def add_target_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", required=True, help="the endpoint, http://host:port[/path] (path: /v1/responses)")
    parser.add_argument("--model", default="ferroute-mock", help="the request's model (default ferroute-mock)")
    parser.add_argument(
        "--stream", action=argparse.BooleanOptionalAction, default=True, help="streaming requests (default) or not"
    )
    parser.add_argument("--body", type=Path, help="a JSON request body to send instead of a small text request")
    parser.add_argument("--header", action="append", default=[], help="an extra header line 'name: value'")
    parser.add_argument("--timeout", type=float, default=30.0, help="longest wait for any byte, s (default 30)")
    parser.add_argument(
        "--no-require-done", dest="require_done", action="store_false",
        help="do not require data: [DONE] after the terminal event (OpenAI's own API sends none)",
    )  # fmt: skip
    parser.add_argument(
        "--no-check", dest="check_grammar", action="store_false",
        help="do not check the Open Responses grammar, only count and time SSE events (for other kinds of server)",
    )  # fmt: skip
    parser.add_argument("--warmup", type=float, default=0.0, help="seconds before measuring starts (default 0)")
    amount = parser.add_mutually_exclusive_group()
    amount.add_argument("--duration", type=float, help="measured seconds (default 10)")
    amount.add_argument("--requests", type=int, help="measured requests")
    parser.add_argument("--json", type=Path, help="write the results as JSON here")
    parser.add_argument("--html", type=Path, help="write a self-contained HTML report here")
    parser.add_argument("--png", type=Path, help="write a PNG plot here (needs matplotlib)")
    parser.add_argument("--quiet", action="store_true", help="no progress line")


def add_load_arguments(parser: argparse.ArgumentParser) -> None:
    add_target_arguments(parser)
    load = parser.add_mutually_exclusive_group()
    load.add_argument("--concurrency", type=int, help="clients in a loop (closed model; default 1)")
    load.add_argument("--rate", type=float, help="requests started per second (open model)")


def _levels(text: str) -> list[float]:
    try:
        levels = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected comma-separated numbers") from None
    if not levels or any(x <= 0 for x in levels):
        raise argparse.ArgumentTypeError(f"{text!r}: expected positive numbers")
    return levels


def add_sweep_arguments(parser: argparse.ArgumentParser) -> None:
    add_target_arguments(parser)
    load = parser.add_mutually_exclusive_group(required=True)
    load.add_argument("--concurrency", type=_levels, help="concurrency levels, e.g. 1,16,64,256")
    load.add_argument("--rate", type=_levels, help="request rates per second, e.g. 50,100,200")


def _amount(args: argparse.Namespace) -> tuple[float | None, int | None]:
    if args.duration is None and args.requests is None:
        return 10.0, None
    return args.duration, args.requests


def _check_outputs(args: argparse.Namespace) -> str | None:
    if args.png is not None:
        return report.matplotlib_missing()
    return None


def _body(args: argparse.Namespace) -> bytes | None:
    try:
        return request_body(args.model, args.stream, args.body)
    except (OSError, ValueError) as e:
        print(f"ferroute bench: {e}", file=sys.stderr)
        return None


def run_load_command(args: argparse.Namespace) -> int:
    missing = _check_outputs(args)
    if missing:
        print(f"ferroute bench load: {missing}", file=sys.stderr)
        return 2
    body = _body(args)
    if body is None:
        return 2
    duration, requests = _amount(args)
    concurrency = args.concurrency if args.rate is None else None
    if concurrency is None and args.rate is None:
        concurrency = 1
    try:
        result = run_load(
            args.url, body, stream=args.stream, concurrency=concurrency, rate=args.rate, duration=duration,
            requests=requests, warmup=args.warmup, timeout=args.timeout, require_done=args.require_done,
            headers=args.header, check_grammar=args.check_grammar, progress=not args.quiet,
        )  # fmt: skip
    except ValueError as e:
        print(f"ferroute bench load: {e}", file=sys.stderr)
        return 2
    print(report.table(result))
    _write(args, [result], "concurrency" if concurrency is not None else "rate")
    return 1 if result["errors"] else 0


def run_sweep_command(args: argparse.Namespace) -> int:
    missing = _check_outputs(args)
    if missing:
        print(f"ferroute bench sweep: {missing}", file=sys.stderr)
        return 2
    body = _body(args)
    if body is None:
        return 2
    duration, requests = _amount(args)
    key = "concurrency" if args.concurrency else "rate"
    results = []
    for level in args.concurrency or args.rate:
        kwargs: dict[str, Any] = {"concurrency": int(level)} if key == "concurrency" else {"rate": level}
        try:
            result = run_load(
                args.url, body, stream=args.stream, duration=duration, requests=requests, warmup=args.warmup,
                timeout=args.timeout, require_done=args.require_done, headers=args.header,
                check_grammar=args.check_grammar, progress=not args.quiet, label=f"[{key} {level:g}] ", **kwargs,
            )  # fmt: skip
        except ValueError as e:
            print(f"ferroute bench sweep: {e}", file=sys.stderr)
            return 2
        results.append(result)
    print(report.sweep_table(results, key))
    _write(args, results, key)
    return 1 if any(r["errors"] for r in results) else 0


def _write(args: argparse.Namespace, results: list[dict[str, Any]], key: str) -> None:
    if args.json is not None:
        data: Any = results[0] if len(results) == 1 and args.command_name == "load" else {"x": key, "runs": results}
        args.json.write_text(json.dumps(data, indent=2) + "\n")
    if args.html is not None:
        args.html.write_text(report.html(results, key))
    if args.png is not None:
        report.png(results, key, args.png)
