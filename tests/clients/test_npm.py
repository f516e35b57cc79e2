"""Third-party JavaScript clients against a real `ferroute serve`: the Vercel AI SDK's Open Responses
provider (`ai` + `@ai-sdk/open-responses`, driven by `tests/clients/ai_sdk.mjs`) and the Codex CLI
(`@openai/codex`, `codex exec`).

The clients are npm packages pinned in `tests/clients/package.json` / `package-lock.json`; the first test
that needs them runs `npm ci` into `tests/clients/node_modules` when it is missing or older than the lock
file. Without `node`/`npm` on PATH the module skips. Every process is bounded and killed with its process
group; everything talks over 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import http.server
import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.grammar import check_stream, validate_response
from tests.support.servers import ROUTER_ENV, Server, router, shared_router, shared_upstream
from tests.support.tools import CALC, hosted, text_of, tools_config

CLIENTS = Path(__file__).parent
NODE_MODULES = CLIENTS / "node_modules"
LOCK = CLIENTS / "package-lock.json"
CODEX = NODE_MODULES / ".bin" / "codex"
INSTALL_TIMEOUT = 300  # npm ci on a fresh machine (the Codex package carries a ~200 MB native binary)
NODE_TIMEOUT = 90  # one run of ai_sdk.mjs (six requests)
CODEX_TIMEOUT = 90  # one `codex exec`

# The npm install may take minutes in the first test of a session; every process below has its own bound.
pytestmark = pytest.mark.timeout(INSTALL_TIMEOUT + 2 * max(NODE_TIMEOUT, CODEX_TIMEOUT))

MOCK = "ferroute-mock:mock"
MOCK_HELLO = "Hello! This is the ferroute mock provider. You said: "


# --- processes --------------------------------------------------------------------------------------


@dataclass
class Completed:
    returncode: int
    stdout: str
    stderr: str
    seconds: float


def run_bounded(args: list[str], *, timeout: float, cwd: Path, env: dict[str, str] | None = None) -> Completed:
    """Run `args` in its own process group; on timeout (and after exit, for stragglers) kill the group."""
    began = time.monotonic()
    process = subprocess.Popen(
        args,
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate(timeout=10)
        pytest.fail(f"{args[:3]} ran past {timeout} s\nstdout:\n{stdout[-4000:]}\nstderr:\n{stderr[-4000:]}")
    finally:
        with contextlib.suppress(ProcessLookupError):  # anything the command left behind in its group
            os.killpg(process.pid, signal.SIGKILL)
    return Completed(process.returncode, stdout, stderr, time.monotonic() - began)


def _installed() -> bool:
    marker = NODE_MODULES / ".package-lock.json"  # npm writes it last, after a complete install
    return marker.exists() and marker.stat().st_mtime >= LOCK.stat().st_mtime and CODEX.exists()


@pytest.fixture(scope="session")
def node() -> str:
    """`node`, with the pinned npm packages installed in tests/clients/node_modules (once per session)."""
    node_bin, npm_bin = shutil.which("node"), shutil.which("npm")
    if node_bin is None or npm_bin is None:
        pytest.skip("node and npm are not on PATH: the npm client tests (AI SDK, Codex CLI) need them")
    # One install at a time across concurrent pytest processes on this checkout.
    lock_path = Path(tempfile.gettempdir()) / f"ferroute-npm-{hashlib.sha256(bytes(CLIENTS)).hexdigest()[:12]}.lock"
    with lock_path.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not _installed():
            done = run_bounded([npm_bin, "ci", "--no-audit", "--no-fund"], timeout=INSTALL_TIMEOUT, cwd=CLIENTS)
            if done.returncode != 0 or not _installed():
                pytest.fail(f"npm ci failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
            print(f"npm ci in tests/clients took {done.seconds:.1f} s")
    return node_bin


def _received(upstream: Server) -> list[dict[str, Any]]:
    received: list[dict[str, Any]] = httpx.get(f"{upstream.url}/requests", timeout=5).json()
    return received


# --- Vercel AI SDK (`ai` + `@ai-sdk/open-responses`) -------------------------------------------------

# What ai_sdk.mjs asks for: the built-in mock, or recorded Chat Completions streams through the mock upstream
# (the recorded tool call is `get_capital({"country": "UK"})`; the recorded text answers it).
AI_SDK_BACKENDS: dict[str, dict[str, str]] = {
    "mock": {"text": MOCK, "tool": MOCK, "final": MOCK, "prompt": "What is the weather like in San Francisco?"},
    "upstream": {
        "text": "fixture:openai-gpt-4o-mini-text-usage:up",
        "tool": "fixture:openai-gpt-4o-mini-tool-call-usage:up",
        "final": "fixture:openai-gpt-4o-mini-text-usage:up",
        "prompt": "What is the capital of the UK?",
    },
}
UPSTREAM_TEXT = "The capital of the UK is London."


@dataclass
class AiSdkRun:
    backend: str
    summary: dict[str, Any]
    upstream_requests: list[dict[str, Any]] = field(default_factory=list)


@pytest.fixture(scope="module", params=list(AI_SDK_BACKENDS))
def ai_sdk(request: pytest.FixtureRequest, node: str) -> AiSdkRun:
    backend: str = request.param
    models = AI_SDK_BACKENDS[backend]
    server = shared_router()
    upstream = shared_upstream()
    before = len(_received(upstream))
    env = {**os.environ, "TOOL_PROMPT": models["prompt"], "FERROUTE_URL": server.url}
    args = [node, "ai_sdk.mjs", server.url, models["text"], models["tool"], models["final"]]
    done = run_bounded(args, timeout=NODE_TIMEOUT, cwd=CLIENTS, env=env)
    assert done.stdout.strip(), f"ai_sdk.mjs printed nothing ({done.returncode}):\n{done.stderr[-4000:]}"
    summary: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    assert done.returncode == 0, f"{summary.get('error')}\n{summary.get('responseBody')}\n{done.stderr[-2000:]}"
    return AiSdkRun(backend, summary, _received(upstream)[before:])


def test_ai_sdk_generate_text(ai_sdk: AiSdkRun) -> None:
    result = ai_sdk.summary["generateText"]
    assert result["finishReason"] == "stop"
    assert result["warnings"] == []
    usage = result["usage"]
    if ai_sdk.backend == "mock":
        assert result["text"] == MOCK_HELLO + "Say hello in exactly 3 words."
        assert usage["outputTokens"] == len(result["text"].split())  # the mock counts words as tokens
        assert usage["inputTokens"] > 0
    else:
        assert result["text"] == UPSTREAM_TEXT
        assert (usage["inputTokens"], usage["outputTokens"]) == (78, 9)  # the recorded usage
    assert usage["totalTokens"] == usage["inputTokens"] + usage["outputTokens"]
    assert result["modelId"] == AI_SDK_BACKENDS[ai_sdk.backend]["text"]  # the router echoes the model asked for
    assert result["responseId"].startswith("resp_")


def test_ai_sdk_stream_text(ai_sdk: AiSdkRun) -> None:
    result = ai_sdk.summary["streamText"]
    assert result["errors"] == []
    expected = MOCK_HELLO + "Count from 1 to 5." if ai_sdk.backend == "mock" else UPSTREAM_TEXT
    assert result["text"] == expected
    assert "".join(result["deltas"]) == expected
    assert len(result["deltas"]) > 1  # streamed, not one block
    assert result["finishReason"] == "stop"
    assert result["partTypes"] == [
        "start",
        "start-step",
        "text-start",
        "text-delta",
        "text-end",
        "finish-step",
        "finish",
    ]
    usage = result["usage"]
    if ai_sdk.backend == "mock":
        assert usage["outputTokens"] == len(expected.split())
        assert usage["inputTokens"] > 0
    else:
        assert (usage["inputTokens"], usage["outputTokens"]) == (78, 9)
    assert usage["totalTokens"] == usage["inputTokens"] + usage["outputTokens"]
    assert result["totalUsage"] == usage == result["finishPart"]["totalUsage"]


@pytest.mark.parametrize("mode", ["toolGenerate", "toolStream"])
def test_ai_sdk_tool_round_trip(ai_sdk: AiSdkRun, mode: str) -> None:
    result = ai_sdk.summary[mode]
    assert result.get("errors", []) == []
    first, second = result["steps"]  # a tool call, then the text answer (stopWhen allows three steps)
    assert first["finishReason"] == "tool-calls"
    [call] = first["toolCalls"]
    [tool_result] = first["toolResults"]
    assert tool_result["toolCallId"] == call["toolCallId"]
    if ai_sdk.backend == "mock":
        # A minimal instance of the zod schema: every required property, the enum's first value.
        assert call["toolName"] == "get_weather"
        assert call["input"] == {"location": "example", "unit": "celsius"}
        assert tool_result["output"] == {"temperature": 18, "unit": "celsius", "conditions": "sunny"}
        expected = 'The tool returned: {"temperature":18,"unit":"celsius","conditions":"sunny"}'
    else:
        assert call["toolName"] == "get_capital"
        assert call["input"] == {"country": "UK"}
        assert tool_result["output"] == "London"
        assert (first["usage"]["inputTokens"], first["usage"]["outputTokens"]) == (53, 15)  # recorded
        expected = UPSTREAM_TEXT
    assert second["finishReason"] == "stop"
    assert second["toolCalls"] == []
    assert second["text"] == result["text"] == expected
    assert result["finishReason"] == "stop"
    total = result["totalUsage"]
    for key in ("inputTokens", "outputTokens", "totalTokens"):
        assert total[key] == first["usage"][key] + second["usage"][key]
    # The tool's execute got schema-valid input every time it ran (once per mode).
    assert [e["valid"] for e in ai_sdk.summary["executed"]] == [True, True]


def test_ai_sdk_wire(ai_sdk: AiSdkRun) -> None:
    """What the SDK sent and received: every response passes the spec's grammar; the tool result went back."""
    exchanges = ai_sdk.summary["exchanges"]
    assert [e["status"] for e in exchanges] == [200] * 6
    streaming = [bool(e["body"].get("stream")) for e in exchanges]
    assert streaming == [False, True, False, False, True, True]
    for exchange in exchanges:
        assert exchange["url"].endswith("/v1/responses")
        body = exchange["responseBody"].encode()
        if exchange["body"].get("stream"):
            assert exchange["contentType"].startswith("text/event-stream")
            _, response = check_stream(body)
        else:
            assert exchange["contentType"].startswith("application/json")
            response = json.loads(body)
            validate_response(response)
        assert response["status"] == "completed"
        assert response["model"] == exchange["body"]["model"]
    # Both round trips: the second request carries the function_call and its function_call_output.
    for index in (3, 5):
        sent = exchanges[index]["body"]
        call, output = sent["input"][-2:]
        assert call["type"] == "function_call"
        assert output == {"type": "function_call_output", "call_id": call["call_id"], "output": output["output"]}
        assert [t["type"] for t in sent["tools"]] == ["function", "function"]
        assert sent["tool_choice"] == "auto"
    if ai_sdk.backend == "upstream":
        # What the router sent upstream for the last request: the call and the result as chat messages.
        assert len(ai_sdk.upstream_requests) == 6
        messages = ai_sdk.upstream_requests[-1]["body"]["messages"]
        call_id = exchanges[5]["body"]["input"][-1]["call_id"]
        assert messages[-2]["tool_calls"][0]["id"] == call_id
        assert messages[-2]["tool_calls"][0]["function"] == {"name": "get_capital", "arguments": '{"country":"UK"}'}
        assert messages[-1] == {"role": "tool", "tool_call_id": call_id, "content": "London"}


def test_ai_sdk_reads_a_hosted_tool_loop(node: str) -> None:
    """The AI SDK with the router's MCP server added to its requests (in its `fetch`: its provider sends function
    tools only): the router runs the loop (`mcp_list_tools`, `mcp_call`, then the answer) and the SDK, which does
    not know those items and events, skips them: `generateText` and `streamText` give the answer's text alone."""
    with router(tools_config(), env=ROUTER_ENV) as server:
        args = [node, "ai_sdk_hosted.mjs", server.url, MOCK, "Please add 2 and 3.", json.dumps([CALC])]
        done = run_bounded(args, timeout=NODE_TIMEOUT, cwd=CLIENTS)
    assert done.stdout.strip(), f"ai_sdk_hosted.mjs printed nothing ({done.returncode}):\n{done.stderr[-4000:]}"
    summary: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    assert done.returncode == 0, f"{summary.get('error')}\n{done.stderr[-2000:]}"
    whole, streamed = summary["exchanges"]
    assert whole["status"] == 200 and streamed["status"] == 200
    assert whole["request"]["tools"] == [CALC] and "stream" not in whole["request"]
    response = json.loads(whole["responseBody"])
    assert [item["type"] for item in response["output"]] == ["mcp_list_tools", "mcp_call", "message"]
    assert hosted(response["output"], "mcp_call")[0]["output"] in ("5", "5.0")
    answer = text_of(response)
    assert summary["generateText"] == {"text": answer, "finishReason": "stop", "warnings": []}

    events, final = check_stream(streamed["responseBody"].encode())
    assert "response.mcp_call.completed" in [event["type"] for event in events]
    assert [item["type"] for item in final["output"]] == ["mcp_list_tools", "mcp_call", "message"]
    assert summary["streamText"]["text"] == text_of(final) and summary["streamText"]["finishReason"] == "stop"
    assert "error" not in summary["streamText"]["parts"]


# --- Codex CLI (`@openai/codex`) --------------------------------------------------------------------

CODEX_KEY_ENV = "FERROUTE_CODEX_KEY"
CODEX_PROMPT = "Say hello"  # mentions no word of Codex's tool names, so the mock answers with text
CODEX_TOOL_PROMPT = "Please exec something"  # "exec": the mock calls Codex's `exec_command` tool

# Codex 0.169.0 sends, besides function tools and fields ferroute accepts (`include`, `reasoning`,
# `store: false`, `prompt_cache_key`, `parallel_tool_calls`, input items with `id`/`status`):
#   - `client_metadata`: an object of strings (session/turn ids; one value is ~700 chars of JSON);
#   - tools of type `namespace` (`multi_agent_v1`: nested function tools) and `web_search`
#     (`{"type": "web_search", "external_web_access": false}`).
# ferroute accepts them: `client_metadata` is neither forwarded nor echoed; hosted tools are echoed and
# not offered to a Chat Completions upstream (or the mock), which can only call function tools.


def codex_config(base_url: str, model: str = MOCK, websocket: bool = False) -> str:
    """A provider with an env key (no login, no auth.json); nothing that reaches past 127.0.0.1 (checked
    with strace: with this config, Codex 0.169.0 connects only to `base_url`). `websocket`: Codex's Responses
    WebSocket transport (`supports_websockets` on the provider, and the features that gate it in 0.169.0)."""
    features = "responses_websockets = true\nresponses_websockets_v2 = true\n" if websocket else ""
    transport = "supports_websockets = true\n" if websocket else ""
    return f"""
model = "{model}"
model_provider = "ferroute"
approval_policy = "never"
sandbox_mode = "read-only"
check_for_update_on_startup = false

[features]
plugins = false  # else Codex syncs a plugin marketplace from github.com at startup
{features}
[model_providers.ferroute]
name = "ferroute"
base_url = "{base_url}/v1"
env_key = "{CODEX_KEY_ENV}"
wire_api = "responses"
request_max_retries = 0
stream_max_retries = 0
{transport}
[analytics]
enabled = false
"""


def run_codex(
    tmp_path: Path,
    base_url: str,
    prompt: str,
    *,
    websocket: bool = False,
    settings: str = "",
    resume: bool = False,
) -> Completed:
    """`codex exec` with a fresh CODEX_HOME (no login: the provider's key comes from an env variable), `settings`
    (top-level config keys) added. `resume`: the next turn of the session the last call in `tmp_path` left (`codex
    exec resume --last`; the sessions are kept, not `--ephemeral`)."""
    home = tmp_path / "home"
    codex_home = home / ".codex"
    workdir = tmp_path / "work"
    codex_home.mkdir(parents=True, exist_ok=True)
    workdir.mkdir(exist_ok=True)
    (codex_home / "config.toml").write_text(settings + codex_config(base_url, websocket=websocket))
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "CODEX_HOME": str(codex_home),
        CODEX_KEY_ENV: "sk-codex-test",
        "NO_PROXY": "127.0.0.1,localhost",
        "RUST_LOG": "error",
    }
    last = tmp_path / "last-message.txt"
    args = [
        str(CODEX),
        "exec",
        "--skip-git-repo-check",
        "--sandbox",
        "read-only",
        *([] if settings or resume else ["--ephemeral"]),
        "--color",
        "never",
        "--output-last-message",
        str(last),
        *(["resume", "--last"] if resume else []),
        prompt,
    ]
    done = run_bounded(args, timeout=CODEX_TIMEOUT, cwd=workdir, env=env)
    if last.exists():
        done.stdout += f"\n[last message]\n{last.read_text()}"
    return done


class CodexRecorder:
    """A transparent recording proxy between Codex and ferroute: what Codex sends and what it gets back."""

    def __init__(self, target: str) -> None:
        self.target = target
        self.requests: list[dict[str, Any]] = []
        self.responses: list[tuple[int, str, bytes]] = []
        recorder = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("content-length", "0"))))
                recorder.requests.append(body)
                headers = {"authorization": self.headers.get("authorization", ""), "accept": "text/event-stream"}
                reply = httpx.post(f"{recorder.target}{self.path}", json=body, headers=headers, timeout=30)
                content_type = reply.headers.get("content-type", "application/json")
                recorder.responses.append((reply.status_code, content_type, reply.content))
                self.send_response(reply.status_code)
                self.send_header("content-type", content_type)
                self.send_header("content-length", str(len(reply.content)))
                self.end_headers()
                self.wfile.write(reply.content)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> CodexRecorder:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)


@pytest.fixture
def codex_recorder(node: str) -> Iterator[CodexRecorder]:
    with CodexRecorder(shared_router().url) as recorder:
        yield recorder


def _codex_failure(done: Completed) -> str:
    return f"codex exec exited {done.returncode}\nstdout:\n{done.stdout[-3000:]}\nstderr:\n{done.stderr[-3000:]}"


def test_codex_exec(node: str, tmp_path: Path) -> None:
    done = run_codex(tmp_path, shared_router().url, CODEX_PROMPT)
    assert done.returncode == 0, _codex_failure(done)
    assert MOCK_HELLO + CODEX_PROMPT in done.stdout


def test_a_codex_session_compacts_through_the_router(codex_recorder: CodexRecorder, tmp_path: Path) -> None:
    """`model_auto_compact_token_limit` set low: the session's second turn (`codex exec resume --last`) starts over
    the limit, so Codex compacts first. Codex 0.169.0 compacts a custom provider's context inline (a summarising
    `POST /v1/responses`; `/v1/responses/compact` it sends to OpenAI only), then answers from the compacted history:
    the summary the router's model wrote, and the new prompt."""
    settings = "model_auto_compact_token_limit = 60\n"  # (the first turn alone uses thousands of tokens)
    first = run_codex(tmp_path, codex_recorder.url, CODEX_PROMPT, settings=settings)
    assert first.returncode == 0, _codex_failure(first)
    assert "context compacted" not in first.stdout + first.stderr
    second = run_codex(tmp_path, codex_recorder.url, "Say hello again", settings=settings, resume=True)
    assert second.returncode == 0, _codex_failure(second)
    assert "context compacted" in second.stdout + second.stderr
    assert MOCK_HELLO + "Say hello again" in second.stdout

    turn, summarising, after = codex_recorder.requests
    assert CODEX_PROMPT in json.dumps(turn["input"])
    asked = summarising["input"][-1]
    assert asked["role"] == "user" and "COMPACTION" in json.dumps(asked["content"]), asked
    summary = MOCK_HELLO  # (the mock's answer to the summarising prompt: the summary Codex keeps)
    texts = [json.dumps(item.get("content")) for item in after["input"] if item.get("type") == "message"]
    assert any(summary in text for text in texts), texts
    assert "Say hello again" in texts[-1]

    def answers(request: dict[str, Any]) -> list[dict[str, Any]]:
        return [i for i in request["input"] if i.get("type") == "message" and i.get("role") == "assistant"]

    # The history was replaced: the first turn's answer went into the summary and is gone from what follows.
    assert answers(summarising) and not answers(after), after["input"]
    for status, content_type, body in codex_recorder.responses:
        assert status == 200 and content_type.startswith("text/event-stream")
        check_stream(body)


def test_codex_exec_over_websocket(node: str, tmp_path: Path) -> None:
    """Codex's Responses WebSocket transport: its turn goes over `GET /v1/responses` upgraded (the router's access
    log says `"method":"WEBSOCKET"` for it), and Codex gets the same answer as over HTTP."""
    server = shared_router()
    before = server.log().count('"method":"WEBSOCKET"')
    done = run_codex(tmp_path, server.url, CODEX_PROMPT, websocket=True)
    assert done.returncode == 0, _codex_failure(done)
    assert MOCK_HELLO + CODEX_PROMPT in done.stdout
    deadline = time.monotonic() + 5  # (the access log line is flushed in the background)
    while server.log().count('"method":"WEBSOCKET"') == before and time.monotonic() < deadline:
        time.sleep(0.1)
    assert server.log().count('"method":"WEBSOCKET"') > before, "Codex did not use the WebSocket transport"


def test_codex_exec_tool_round_trip(node: str, tmp_path: Path) -> None:
    done = run_codex(tmp_path, shared_router().url, CODEX_TOOL_PROMPT)
    assert done.returncode == 0, _codex_failure(done)
    assert "The tool returned: " in done.stdout


def test_codex_exec_through_recorder(codex_recorder: CodexRecorder, tmp_path: Path) -> None:
    """What Codex sends ferroute (its own tool types, client_metadata) is accepted, and Codex accepts the stream."""
    done = run_codex(tmp_path, codex_recorder.url, CODEX_PROMPT)
    assert done.returncode == 0, _codex_failure(done)
    assert MOCK_HELLO + CODEX_PROMPT in done.stdout
    [sent] = codex_recorder.requests
    # What ferroute accepts from Codex beyond the basics.
    assert isinstance(sent["client_metadata"], dict)
    assert all(isinstance(v, str) for v in sent["client_metadata"].values())
    assert {t["type"] for t in sent["tools"]} == {"function", "namespace", "web_search"}
    assert sent["stream"] is True and sent["store"] is False
    assert sent["include"] == ["reasoning.encrypted_content"]
    [(status, content_type, body)] = codex_recorder.responses
    assert status == 200 and content_type.startswith("text/event-stream")
    check_stream(body)


def test_codex_exec_tool_round_trip_through_recorder(codex_recorder: CodexRecorder, tmp_path: Path) -> None:
    """The mock calls Codex's `exec_command`; Codex runs it (read-only sandbox) and sends the output back."""
    done = run_codex(tmp_path, codex_recorder.url, CODEX_TOOL_PROMPT)
    assert done.returncode == 0, _codex_failure(done)
    assert "The tool returned: " in done.stdout
    _first, second = codex_recorder.requests
    call, output = second["input"][-2:]
    assert call["type"] == "function_call" and call["name"] == "exec_command"
    assert json.loads(call["arguments"]) == {"cmd": "example"}
    assert output["type"] == "function_call_output" and output["call_id"] == call["call_id"]
    for status, content_type, body in codex_recorder.responses:
        assert status == 200 and content_type.startswith("text/event-stream")
        check_stream(body)
