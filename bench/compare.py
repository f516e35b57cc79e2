"""Side by side: the same load against (a) the Rust mock upstream directly (the limit), (b) ferroute and
(c) the PyPI `open-responses-server` package (a FastAPI bridge from Chat Completions to Responses,
installed by this script into its own virtualenv under target/), both routers in front of that same
mock upstream.

    .venv/bin/python -m bench.compare            # (`make bench-compare`) ~5 minutes
    .venv/bin/python -m bench.compare --quick    # ~1 minute: fewer levels, shorter runs

Use a release build of the native module (`make develop`): the load generator and the mock upstream
are Rust, and a debug build of them is much slower.

For each round (`--rounds`), each concurrency level (`--concurrency`) and each server, in an order
rotated every round (interleaved, so drift on the machine hits all three alike), one
`LoadGenerator` run of `--duration` s after `--warmup` s of streaming requests for `--tokens` tokens.
With at least 2 cores the servers run on core 0 and the mock upstream and this process (the load
generator) on the last core. Measured per run: TTFE (request written -> first event read) and
inter-event gap percentiles, events/s, errors; the CPU time of each process tree (/proc) -> server
CPU µs per streamed event; peak RSS (VmHWM) of each server at the end.

ferroute's and the mock's streams are checked by the Rust grammar checker (a broken stream is an
error). open-responses-server's streams have no `sequence_number`s (not Open Responses), so they
are probed once with the checker (its errors are reported) and then timed with `check_grammar=False`.

Derived (medians over rounds): router overhead = router - mock direct for TTFE and gap p50/p99 at
each level; the largest level whose p99 TTFE stays within `--p99-bound-ms` with no errors (max
sustainable streams) and its events/s; server CPU µs per event. Written to bench/results/compare.json,
compare.md, compare.html and (with matplotlib) compare.png.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.harness import (
    REPO,
    cpu_model,
    cpu_seconds,
    free_port,
    median,
    peak_rss_mb,
    pinned,
    start_mock,
    start_router,
    stop,
    wait_ready,
)
from ferroute import __version__
from ferroute._core import LoadGenerator
from ferroute.loadtest import report

RESULTS = REPO / "bench" / "results"
ORS_VENV = REPO / "target" / "bench-ors-venv"
# 0.4.3 needs Python >= 3.12; 0.4.1 is the newest for 3.11.
ORS_VERSION = "0.4.3" if sys.version_info >= (3, 12) else "0.4.1"
CORES = os.cpu_count() or 1


@dataclass
class Proc:
    """A server under load: its name, base URL and process."""

    name: str
    url: str
    process: subprocess.Popen[bytes]


@contextlib.contextmanager
def started(name: str, args: list[str], port: int, ready_path: str, env: dict[str, str], core: int) -> Iterator[Proc]:
    """A server process in a directory of its own, pinned to `core`, until `ready_path` answers 200."""
    with tempfile.TemporaryDirectory(prefix=f"compare-{name}-") as tmp:
        process = subprocess.Popen(
            pinned(args, core if CORES >= 2 else None),
            cwd=tmp,
            env={**os.environ, **env},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            url = f"http://127.0.0.1:{port}"
            wait_ready(process, f"{url}{ready_path}", name)
            yield Proc(name, url, process)
        finally:
            stop(process)


def ors_python() -> Path:
    """The open-responses-server virtualenv's python, created on first use."""
    python = ORS_VENV / "bin" / "python"
    marker = ORS_VENV / f".installed-{ORS_VERSION}"
    if not marker.exists():
        shutil.rmtree(ORS_VENV, ignore_errors=True)
        print(f"installing open-responses-server=={ORS_VERSION} into {ORS_VENV}", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(ORS_VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", f"open-responses-server=={ORS_VERSION}"], check=True)
        marker.touch()
    return python


def load(
    url: str, body: bytes, concurrency: int, duration: float | None, warmup: float, **kwargs: Any
) -> dict[str, Any]:
    generator = LoadGenerator(
        f"{url}/v1/responses", body, concurrency=concurrency, duration=duration, warmup=warmup, timeout=30, **kwargs
    )
    result: dict[str, Any] = json.loads(generator.result())
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="levels 1,16,64; 1 round; 2 s runs")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--concurrency", default="1,16,32,64,128,256", help="comma-separated levels")
    parser.add_argument("--duration", type=float, default=4.0, help="measured seconds per run")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds per run before measuring")
    parser.add_argument("--tokens", type=int, default=100, help="tokens per answer")
    parser.add_argument("--gap-ms", default="2", help="the mock's gap between tokens, ms (A or A-B)")
    parser.add_argument("--ttft-ms", type=float, default=0.0, help="the mock's time to first token, ms")
    parser.add_argument("--p99-bound-ms", type=float, default=100.0, help="p99 TTFE bound for 'sustainable'")
    parser.add_argument("--no-ors", action="store_true", help="leave open-responses-server out")
    parser.add_argument("--out", type=Path, default=RESULTS, help="directory for compare.{json,md,html,png}")
    args = parser.parse_args(argv)
    if args.quick:
        args.concurrency, args.rounds, args.duration, args.warmup = "1,16,64", 1, 2.0, 0.5
    levels = [int(x) for x in args.concurrency.split(",")]
    if CORES >= 2:
        os.sched_setaffinity(0, {CORES - 1})
    server_core, client_core = 0, CORES - 1
    body = json.dumps({"model": "ferroute-mock:up", "input": "Say hello.", "stream": True}).encode()
    args.out.mkdir(parents=True, exist_ok=True)

    with contextlib.ExitStack() as stack:
        mock = stack.enter_context(
            start_mock(
                client_core if CORES >= 2 else None, tokens=args.tokens, gap_ms=args.gap_ms, ttft_ms=args.ttft_ms
            )
        )
        servers: dict[str, Proc] = {"mock": Proc("mock", mock.url, mock.process)}
        router, router_port = stack.enter_context(
            start_router(
                {"up": mock.port}, server_core if CORES >= 2 else None, store="memory", serve_args=["--no-access-log"]
            )
        )
        servers["ferroute"] = Proc("ferroute", f"http://127.0.0.1:{router_port}", router)
        if not args.no_ors:
            python = ors_python()
            ors_port = free_port()
            env = {
                "OPENAI_BASE_URL_INTERNAL": mock.url,
                "OPENAI_BASE_URL": f"http://127.0.0.1:{ors_port}",
                "OPENAI_API_KEY": "sk-mock",
                "API_ADAPTER_HOST": "127.0.0.1",
                "API_ADAPTER_PORT": str(ors_port),
            }
            servers["open-responses-server"] = stack.enter_context(
                started(
                    "open-responses-server",
                    [
                        str(python),
                        "-m",
                        "uvicorn",
                        "open_responses_server.server_entrypoint:app",
                        "--host",
                        "127.0.0.1",
                        "--port",
                        str(ors_port),
                        "--log-level",
                        "warning",
                    ],
                    ors_port,
                    "/docs",
                    env,
                    server_core,
                )
            )
        # Is each server's stream Open Responses? (One checked probe each.)
        probes = {}
        for name, proc in servers.items():
            probe = load(proc.url, body, 1, None, 0, requests=5, require_done=name == "ferroute")
            probes[name] = {
                "ok": probe["ok"],
                "errors_by_kind": probe["errors_by_kind"],
                "error_examples": probe["error_examples"],
            }
            print(
                f"probe {name}: {probe['ok']}/5 streams pass the grammar check {probe['errors_by_kind']}",
                file=sys.stderr,
            )
        runs: list[dict[str, Any]] = []
        names = list(servers)
        for round_ in range(args.rounds):
            for level in levels:
                order = names[round_ % len(names) :] + names[: round_ % len(names)]
                for name in order:
                    proc = servers[name]
                    checked = probes[name]["ok"] == 5
                    server_root = proc.process.pid
                    cpu0 = cpu_seconds(server_root)
                    mock_cpu0 = cpu_seconds(mock.process.pid)
                    t0 = time.monotonic()
                    result = load(
                        proc.url,
                        body,
                        level,
                        args.duration,
                        args.warmup,
                        require_done=name == "ferroute",
                        check_grammar=checked,
                    )
                    wall = time.monotonic() - t0
                    server_cpu = cpu_seconds(server_root) - cpu0
                    mock_cpu = cpu_seconds(mock.process.pid) - mock_cpu0
                    # CPU is measured over the whole run (warm-up included): per event over all events.
                    all_events = result["events_per_s"] * (args.duration + args.warmup)
                    result.update(
                        server=name,
                        round=round_,
                        wall_s=wall,
                        server_cpu_s=server_cpu,
                        mock_cpu_s=mock_cpu,
                        server_cpu_percent=100 * server_cpu / wall,
                        server_cpu_us_per_event=(server_cpu * 1e6 / all_events) if all_events else None,
                    )
                    runs.append(result)
                    print(
                        f"round {round_} c={level:<4} {name:<22} {result['events_per_s']:>10,.0f} ev/s  "
                        f"ttfe p50 {result['ttfe_ms']['p50']} p99 {result['ttfe_ms']['p99']}  "
                        f"errors {result['errors']}  "
                        f"server CPU {100 * server_cpu / wall:.0f}%  mock CPU {100 * mock_cpu / wall:.0f}%  "
                        f"generator CPU {result['client_cpu_percent']:.0f}%",
                        file=sys.stderr,
                        flush=True,
                    )
        rss = {name: peak_rss_mb(proc.process.pid) for name, proc in servers.items()}

    summary = summarise(runs, levels, list(servers), args.p99_bound_ms)
    data = {
        "command": " ".join(["python -m bench.compare", *(argv if argv is not None else sys.argv[1:])]),
        "machine": {
            "cores": CORES,
            "platform": platform.platform(),
            "python": platform.python_version(),
            "cpu": cpu_model(),
        },
        "versions": {"ferroute": __version__, "open-responses-server": ORS_VERSION},
        "settings": {
            "levels": levels,
            "rounds": args.rounds,
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "tokens": args.tokens,
            "gap_ms": args.gap_ms,
            "ttft_ms": args.ttft_ms,
            "p99_bound_ms": args.p99_bound_ms,
            "pinned": CORES >= 2,
        },
        "probes": probes,
        "peak_rss_mb": rss,
        "summary": summary,
        "runs": runs,
    }
    (args.out / "compare.json").write_text(json.dumps(data, indent=2) + "\n")
    table = markdown(data)
    (args.out / "compare.md").write_text(table)
    print(table)
    (args.out / "compare.html").write_text(html(data))
    if report.matplotlib_missing() is None:
        plot(data, args.out / "compare.png")
    else:
        print(f"compare.png not written: {report.matplotlib_missing()}", file=sys.stderr)
    return 0


def summarise(runs: list[dict[str, Any]], levels: list[int], names: list[str], bound: float) -> dict[str, Any]:
    """Medians over rounds per (server, level); overhead vs the mock; max sustainable level."""
    per: dict[str, dict[int, dict[str, Any]]] = {}
    for name in names:
        per[name] = {}
        for level in levels:
            rs = [r for r in runs if r["server"] == name and r["concurrency"] == level]
            per[name][level] = {
                "events_per_s": median([r["events_per_s"] for r in rs]),
                "errors": sum(r["errors"] for r in rs),
                "ttfe_p50": median([r["ttfe_ms"]["p50"] for r in rs]),
                "ttfe_p99": median([r["ttfe_ms"]["p99"] for r in rs]),
                "gap_p50": median([r["gap_ms"]["p50"] for r in rs]),
                "gap_p99": median([r["gap_ms"]["p99"] for r in rs]),
                "server_cpu_us_per_event": median([r["server_cpu_us_per_event"] for r in rs]),
                "server_cpu_percent": median([r["server_cpu_percent"] for r in rs]),
                "generator_cpu_percent": median([r["client_cpu_percent"] for r in rs]),
                "mock_cpu_percent": median([100 * r["mock_cpu_s"] / r["wall_s"] for r in rs]),
            }
    overhead: dict[str, dict[int, dict[str, float | None]]] = {}
    sustainable: dict[str, dict[str, Any]] = {}
    for name in names:
        if name != "mock":
            overhead[name] = {}
            for level in levels:
                m, r = per["mock"][level], per[name][level]
                overhead[name][level] = {
                    k: (r[k] - m[k]) if r[k] is not None and m[k] is not None else None
                    for k in ("ttfe_p50", "ttfe_p99", "gap_p50", "gap_p99")
                }
        ok = [lv for lv in levels if per[name][lv]["errors"] == 0 and (per[name][lv]["ttfe_p99"] or 1e9) <= bound]
        best = max(ok, default=None)
        sustainable[name] = {
            "streams": best,
            "events_per_s": per[name][best]["events_per_s"] if best is not None else None,
            "events_per_s_per_server_core": (
                per[name][best]["events_per_s"] / max(per[name][best]["server_cpu_percent"] / 100, 1e-9)
                if best is not None and per[name][best]["events_per_s"]
                else None
            ),
        }
    return {"per_level": per, "overhead_ms": overhead, "sustainable": sustainable}


def _f(value: float | None, spec: str = ".3f") -> str:
    return "-" if value is None else format(value, spec)


def markdown(data: dict[str, Any]) -> str:
    s, settings = data["summary"], data["settings"]
    lines = [
        f"Machine: {data['machine']['cpu']}, {data['machine']['cores']} cores; Python {data['machine']['python']}; "
        f"ferroute {data['versions']['ferroute']}, open-responses-server {data['versions']['open-responses-server']}.",
        f"Mock upstream: {settings['tokens']} tokens, gap {settings['gap_ms']} ms, TTFT {settings['ttft_ms']} ms; "
        f"{settings['rounds']} interleaved rounds of {settings['duration_s']} s per level; "
        + (
            "servers pinned to core 0, mock + load generator to the last core." if settings["pinned"] else "not pinned."
        ),
        f"Command: `{data['command']}`",
        "",
        "| server | concurrency | events/s | errors | TTFE p50 | TTFE p99 | gap p50 | gap p99 | server CPU µs/event "
        "| server CPU % | mock CPU % | generator CPU % |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, levels in s["per_level"].items():
        for level, r in levels.items():
            lines.append(
                f"| {name} | {level} | {_f(r['events_per_s'], ',.0f')} | {r['errors']} | {_f(r['ttfe_p50'])} | "
                f"{_f(r['ttfe_p99'])} | {_f(r['gap_p50'])} | {_f(r['gap_p99'])} | "
                f"{_f(r['server_cpu_us_per_event'], '.2f')} | {_f(r['server_cpu_percent'], '.0f')} | "
                f"{_f(r['mock_cpu_percent'], '.0f')} | {_f(r['generator_cpu_percent'], '.0f')} |"
            )
    lines += [
        "",
        "Router overhead (router - mock direct, ms):",
        "",
        "| router | concurrency | TTFE p50 | TTFE p99 | gap p50 | gap p99 |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, levels in s["overhead_ms"].items():
        for level, o in levels.items():
            lines.append(
                f"| {name} | {level} | {_f(o['ttfe_p50'])} | {_f(o['ttfe_p99'])} | {_f(o['gap_p50'])} | "
                f"{_f(o['gap_p99'])} |"
            )
    lines += [
        "",
        f"Max sustainable (no errors, p99 TTFE ≤ {settings['p99_bound_ms']} ms, among the levels run):",
        "",
        "| server | streams | events/s | events/s per server core | peak RSS MB |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, v in s["sustainable"].items():
        lines.append(
            f"| {name} | {v['streams'] if v['streams'] is not None else '-'} | {_f(v['events_per_s'], ',.0f')} | "
            f"{_f(v['events_per_s_per_server_core'], ',.0f')} | {data['peak_rss_mb'][name]:.0f} |"
        )
    ours, theirs = s["sustainable"].get("ferroute", {}), s["sustainable"].get("open-responses-server", {})
    if ours.get("events_per_s_per_server_core") and theirs.get("events_per_s_per_server_core"):
        ratio = ours["events_per_s_per_server_core"] / theirs["events_per_s_per_server_core"]
        lines.append(
            f"\nferroute / open-responses-server, events/s per server core within the bound: {ratio:.1f}x "
            f"(target >= 5x: {'met' if ratio >= 5 else 'not met'})."
        )
    headroom = []
    for level in s["per_level"].get("mock", {}):
        mock, router = s["per_level"]["mock"][level], s["per_level"].get("ferroute", {}).get(level)
        if router and mock["server_cpu_us_per_event"] and router["server_cpu_us_per_event"]:
            headroom.append(f"{level}: {router['server_cpu_us_per_event'] / mock['server_cpu_us_per_event']:.1f}x")
    if headroom:
        lines.append(
            "The mock upstream's headroom (ferroute's CPU per event / the mock's, i.e. how many times ferroute's "
            "event rate the mock serves on the same cores), by concurrency: " + ", ".join(headroom) + "."
        )
    for name, probe in data["probes"].items():
        if probe["ok"] < 5:
            example = next(iter(probe["error_examples"].values()), "")
            lines.append(
                f"\n{name}: {5 - probe['ok']}/5 probe streams fail the Open Responses grammar check "
                f"({probe['errors_by_kind']}; e.g. {example[:160]}); its runs are timed unchecked."
            )
    return "\n".join(lines) + "\n"


def html(data: dict[str, Any]) -> str:
    parts = ["<!doctype html><html><head><meta charset='utf-8'><title>ferroute side by side</title></head><body>"]
    names = list(data["summary"]["per_level"])
    for name in names:
        runs = [r for r in data["runs"] if r["server"] == name and r["round"] == 0]
        page = report.html(runs, "concurrency", title=f"{name}")
        parts.append(page[page.index("<body>") + 6 : page.index("</body>")])
    parts.append("<pre>" + markdown(data).replace("&", "&amp;").replace("<", "&lt;") + "</pre></body></html>\n")
    return "".join(parts)


def plot(data: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    per = data["summary"]["per_level"]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for (name, levels), color in zip(per.items(), ("#1f77b4", "#2ca02c", "#d62728", "#9467bd"), strict=False):
        xs = [int(x) for x in levels]
        axes[0].plot(xs, [levels[x]["ttfe_p99"] for x in levels], marker="o", color=color, label=f"{name} p99")
        axes[0].plot(
            xs, [levels[x]["ttfe_p50"] for x in levels], marker=".", linestyle="--", color=color, label=f"{name} p50"
        )
        axes[1].plot(xs, [levels[x]["gap_p99"] for x in levels], marker="o", color=color, label=name)
        axes[2].plot(xs, [levels[x]["events_per_s"] for x in levels], marker="o", color=color, label=name)
    for ax, title in zip(axes, ("time to first event (ms)", "inter-event gap p99 (ms)", "events/s"), strict=True):
        ax.set_title(title)
        ax.set_xlabel("concurrent streams")
        ax.set_xscale("log", base=2)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    axes[0].set_yscale("log")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
