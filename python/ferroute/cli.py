"""The `ferroute` command."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path
from typing import Any

import ferroute

# The recorded streams ship in the source tree (tests/fixtures), not in the wheel.
_REPO_FIXTURES = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "chat_completions"
_DEMO_STREAM = "openrouter-claude-reasoning-tool-call.sse"


def _demo(args: argparse.Namespace) -> int:
    path: Path = args.file or _REPO_FIXTURES / _DEMO_STREAM
    if not path.is_file():
        print(f"ferroute demo: no stream at {path}; pass a Chat Completions SSE file", file=sys.stderr)
        return 2
    upstream = path.read_bytes()
    request = {"model": args.model, "input": "(recorded)"}
    translator = ferroute.ChatCompletionsTranslator(request)
    parser = ferroute.ResponseEventParser()
    events: list[dict[str, Any]] = []
    # Feed the recorded bytes the way a network hands them over, in reads of `--read-size` bytes.
    for start in range(0, len(upstream), args.read_size):
        events += parser.feed(translator.feed(upstream[start : start + args.read_size]))
    events += parser.feed(translator.finish())
    parser.close()

    print(f"{path.name}: {len(upstream):,} upstream bytes → {len(events)} Open Responses events\n")
    for event in events:
        detail = event.get("delta") or event.get("item", {}).get("type") or event.get("response", {}).get("status", "")
        print(f"  {event['sequence_number']:>4}  {event['type']:<42} {json.dumps(detail, ensure_ascii=False)[:60]}")
    response = parser.response
    assert response is not None
    print(f"\nresponse {response['id']}: status={response['status']}, usage={json.dumps(response['usage'])}")
    if response["error"]:
        print(f"  error {response['error']['code']}: {response['error']['message']}")
    for item in response["output"]:
        if item["type"] == "function_call":
            print(f"  function_call {item['name']}({item['arguments']})")
        else:
            text = "".join(part.get("text") or part.get("refusal", "") for part in item["content"])
            print(f"  {item['type']}: {text[:100]!r}{'…' if len(text) > 100 else ''}")
    return 0


_GRANIAN_KNOBS = ("interface", "loop", "runtime_threads", "runtime_mode", "task_impl", "backpressure")


def _serve(args: argparse.Namespace) -> int:
    import copy
    import importlib.util
    import os
    import shutil

    from granian import Granian
    from granian.constants import Interfaces, Loops, RuntimeModes, TaskImpl
    from granian.http import HTTP1Settings
    from granian.log import LOGGING_CONFIG

    from ferroute.config import ConfigError, StoreConfig, load_settings
    from ferroute.logs import fast_records
    from ferroute.metrics import METRICS_DIR_ENV, instance_directory
    from ferroute.providers import build_providers
    from ferroute.routing.keys import FILE_ENV, KeyTable, make_file
    from ferroute.store.crypto import ReasoningCipher

    config = str(Path(args.config).resolve()) if args.config else None
    try:
        settings = load_settings(config)
        build_providers(settings)
        keys = KeyTable(settings.server.api_keys, settings.keys)
    except (ConfigError, ValueError) as e:
        print(f"ferroute serve: {e}", file=sys.stderr)
        return 2
    server = settings.server
    host = args.host or server.host
    port = server.port if args.port is None else args.port
    workers = args.workers or server.workers
    # Command-line Granian knobs override the config file's.
    tuning = {key: getattr(args, key) for key in _GRANIAN_KNOBS if getattr(args, key, None) is not None}
    if tuning:
        try:
            server = type(server).model_validate({**server.model_dump(), **tuning})
        except ValueError as e:
            print(f"ferroute serve: {e}", file=sys.stderr)
            return 2
    store = settings.store or StoreConfig()
    if store.backend == "memory" and workers > 1:
        print(
            "ferroute serve: warning: the memory store is per process; with several workers a response stored by "
            "one is unknown to the others (use sqlite or redis)",
            file=sys.stderr,
        )
    if not os.environ.get(store.encryption_key_env):
        # One key for all of this server's workers (each would otherwise make up its own).
        os.environ[store.encryption_key_env] = ReasoningCipher.generate_secret()
        print(
            f"ferroute serve: warning: ${store.encryption_key_env} is not set; reasoning.encrypted_content is "
            "sealed with a key made up for this run (blobs stop opening on restart and on other hosts)",
            file=sys.stderr,
        )
    # The workers build the app from this (Granian imports the factory in each worker process).
    if config:
        os.environ["FERROUTE_CONFIG"] = config
    else:
        os.environ.pop("FERROUTE_CONFIG", None)
    logging_config: dict[str, Any] = copy.deepcopy(LOGGING_CONFIG)
    logging_config["handlers"]["stderr"] = {
        "formatter": "generic", "class": "logging.StreamHandler", "stream": "ext://sys.stderr",
    }  # fmt: skip
    # The access line goes out in the background (ferroute.logs): a flush per request was a write system call.
    logging_config["handlers"]["ferroute_access"] = {
        "formatter": "access", "class": "ferroute.logs.BufferedStreamHandler", "stream": "ext://sys.stdout",
    }  # fmt: skip
    logging_config["loggers"]["ferroute.access"] = {
        "handlers": ["ferroute_access"], "level": "INFO" if args.access_log else "WARNING", "propagate": False,
    }  # fmt: skip
    fast_records()  # (before Granian forks the workers, which keep it)
    logging_config["loggers"]["ferroute.error"] = {"handlers": ["stderr"], "level": "INFO", "propagate": False}
    providers = ", ".join(f"{p.name} ({p.kind})" for p in settings.providers)
    print(f"ferroute serve: {settings.source}; providers: {providers}; http://{host}:{port}", file=sys.stderr)
    loop = server.loop
    if loop == "uvloop" and importlib.util.find_spec("uvloop") is None:
        print("ferroute serve: uvloop is not installed; using asyncio's event loop", file=sys.stderr)
        loop = "asyncio"
    rsgi = server.interface == "rsgi"
    # The workers' metrics meet in this directory (ferroute.metrics): a scrape of any worker shows the instance.
    metrics_dir = instance_directory()
    os.environ[METRICS_DIR_ENV] = metrics_dir
    limits_file = None
    if keys.limited and store.backend != "redis":
        # Limited keys' counts, shared by this instance's workers (with Redis, they live there).
        limits_file = os.environ[FILE_ENV] = make_file(keys.limited)
    try:
        Granian(
            "ferroute.rsgi:create_rsgi_app" if rsgi else "ferroute.app:create_app",
            factory=True,
            address=host,
            port=port,
            interface=Interfaces.RSGI if rsgi else Interfaces.ASGI,
            workers=workers,
            loop=Loops(loop),
            runtime_threads=server.runtime_threads,
            runtime_mode=RuntimeModes(server.runtime_mode),
            task_impl=TaskImpl(server.task_impl),
            backpressure=server.backpressure,
            http1_settings=HTTP1Settings(
                header_read_timeout=max(1, round(server.header_read_timeout * 1000)),
                keep_alive=server.keep_alive,
                max_buffer_size=server.http1_buffer_size,
            ),
            websockets=not rsgi,  # WebSocket mode is served by the ASGI app (ferroute.app.websocket); not over RSGI
            log_dictconfig=logging_config,
            workers_kill_timeout=int(server.shutdown_grace) + 5,
        ).serve()
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)
        if limits_file is not None:
            with contextlib.suppress(OSError):
                os.unlink(limits_file)
    return 0


def _mcp_demo(args: argparse.Namespace) -> int:
    from ferroute.tools.mcp.demo import serve

    serve(args.host, args.port, legacy=args.legacy)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ferroute", description="Open Responses router with a Rust streaming core")
    parser.add_argument("--version", action="version", version=f"ferroute {ferroute.__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="translate a recorded Chat Completions stream and parse the result back")
    demo.add_argument("file", nargs="?", type=Path, help=f"a Chat Completions SSE capture (default: {_DEMO_STREAM})")
    demo.add_argument("--model", default="anthropic/claude-haiku-4.5:openrouter", help="the model string to echo")
    demo.add_argument("--read-size", type=int, default=4096, help="bytes per simulated network read")
    demo.set_defaults(run=_demo)
    serve = commands.add_parser("serve", help="run the router (Granian, ASGI)")
    serve.add_argument(
        "--config", help="TOML config file (default: the built-in mock provider, sqlite store in the working directory)"
    )
    serve.add_argument("--host", help="address to bind (default: [server] host, 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default: [server] port, 8080)")
    serve.add_argument("--workers", type=int, help="worker processes (default: [server] workers, 1)")
    tuning = serve.add_argument_group('Granian tuning (default: the [server] settings; README "Granian tuning")')
    tuning.add_argument("--interface", choices=["asgi", "rsgi"], help="how Granian calls the app")
    tuning.add_argument("--loop", choices=["uvloop", "asyncio"], help="the workers' event loop")
    tuning.add_argument("--runtime-threads", type=int, help="Granian runtime threads per worker")
    tuning.add_argument("--runtime-mode", choices=["auto", "st", "mt"], help="Granian runtime mode")
    tuning.add_argument("--task-impl", choices=["asyncio", "rust"], help="asyncio task implementation")
    tuning.add_argument("--backpressure", type=int, help="most requests a worker handles at once")
    serve.add_argument(
        "--no-access-log", dest="access_log", action="store_false", help="no JSON line per request on stdout"
    )
    serve.set_defaults(run=_serve)
    mcp_demo = commands.add_parser(
        "mcp-demo", help="a small MCP server with demo tools (add, sleep, fail, ...) to try the router's MCP tools with"
    )
    mcp_demo.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    mcp_demo.add_argument("--port", type=int, default=9000, help="port (default: 9000; 0: a free one)")
    mcp_demo.add_argument(
        "--legacy",
        action="store_true",
        help="speak only the handshake protocol (before 2026-07-28), as most servers do",
    )
    mcp_demo.set_defaults(run=_mcp_demo)
    from ferroute.loadtest.cli import add_subcommands as add_loadtest_commands

    add_loadtest_commands(commands)
    args = parser.parse_args(argv)
    code: int = args.run(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
