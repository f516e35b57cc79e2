"""The `ferroute` command."""

from __future__ import annotations

import argparse
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
    for item in response["output"]:
        if item["type"] == "function_call":
            print(f"  function_call {item['name']}({item['arguments']})")
        else:
            text = "".join(part.get("text") or part.get("refusal", "") for part in item["content"])
            print(f"  {item['type']}: {text[:100]!r}{'…' if len(text) > 100 else ''}")
    return 0


def _serve(args: argparse.Namespace) -> int:
    print(
        "ferroute serve: the router is not built yet (issue #3: POST /v1/responses over Chat Completions "
        "upstreams). The streaming core and its Python API are ready: see `ferroute demo` and the README.",
        file=sys.stderr,
    )
    return 2


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ferroute", description="Open Responses router with a Rust streaming core")
    parser.add_argument("--version", action="version", version=f"ferroute {ferroute.__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="translate a recorded Chat Completions stream and parse the result back")
    demo.add_argument("file", nargs="?", type=Path, help=f"a Chat Completions SSE capture (default: {_DEMO_STREAM})")
    demo.add_argument("--model", default="anthropic/claude-haiku-4.5:openrouter", help="the model string to echo")
    demo.add_argument("--read-size", type=int, default=4096, help="bytes per simulated network read")
    demo.set_defaults(run=_demo)
    serve = commands.add_parser("serve", help="run the router (not built yet)")
    serve.add_argument("--config")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--workers", type=int)
    serve.set_defaults(run=_serve)
    args = parser.parse_args(argv)
    code: int = args.run(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
