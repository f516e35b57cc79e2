"""End-to-end helpers: real `ferroute serve` and mock-upstream processes on free local ports.

Every process is started with a bounded wait for readiness and always stopped (terminate, then kill).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.support.grammar import check_stream, validate_response

REPO = Path(__file__).resolve().parents[2]
UPSTREAM_KEY = "sk-upstream-test-key-0d9c"  # what the router sends upstream; must never reach a client
ROUTER_KEY = "sk-router-client-key"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _stop(process: subprocess.Popen[Any]) -> None:
    """SIGTERM (Granian stops its workers), then SIGKILL to the whole process group (workers included)."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


@dataclass
class Server:
    url: str
    process: subprocess.Popen[Any]
    log_path: Path | None = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path else ""


@contextlib.contextmanager
def mock_upstream() -> Iterator[Server]:
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.support.mock_upstream", "--port", "0"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()  # "PORT n", printed once listening
        if not line.startswith("PORT "):
            raise RuntimeError(f"mock upstream did not start: {line!r}")
        yield Server(f"http://127.0.0.1:{int(line.split()[1])}", process)
    finally:
        _stop(process)
        if process.stdout is not None:
            process.stdout.close()


@contextlib.contextmanager
def router(
    config: str | None = None,
    env: dict[str, str] | None = None,
    startup_timeout: float = 30,
    extra_args: list[str] | None = None,
) -> Iterator[Server]:
    """`ferroute serve` on a free port with `config` (TOML text; None: no config file) and `extra_args`
    (e.g. `["--workers", "2"]`)."""
    with tempfile.TemporaryDirectory(prefix="ferroute-e2e-") as tmp:
        port = free_port()
        args = [sys.executable, "-m", "ferroute", "serve", "--host", "127.0.0.1", "--port", str(port)]
        args += extra_args or []
        if config is not None:
            path = Path(tmp) / "ferroute.toml"
            path.write_text(config)
            args += ["--config", str(path)]
        log_path = Path(tmp) / "router.log"
        child_env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
        child_env.update(env or {})
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                args, cwd=tmp, stdout=log, stderr=subprocess.STDOUT, env=child_env, start_new_session=True
            )
        server = Server(f"http://127.0.0.1:{port}", process, log_path)
        try:
            deadline = time.monotonic() + startup_timeout
            while True:
                if process.poll() is not None:
                    raise RuntimeError(f"ferroute serve exited with {process.returncode}:\n{server.log()}")
                try:
                    if httpx.get(f"{server.url}/healthz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"ferroute serve did not become ready:\n{server.log()}")
                time.sleep(0.1)
            yield server
        finally:
            _stop(process)


def upstream_config(upstream_url: str, extra: str = "") -> str:
    """A config with the mock upstream as provider `up` (key from env), a short-timeout `slow`, `anth` and `oai` (the
    same mock speaking Anthropic Messages and OpenAI Responses), and `mock`."""
    return f"""
[server]
keepalive_interval = 0.4
{extra}

[[providers]]
name = "up"
kind = "chat_completions"
base_url = "{upstream_url}/v1"
api_key_env = "FERROUTE_TEST_UPSTREAM_KEY"
models = ["fixture:openai-gpt-4o-mini-text-usage"]

[[providers]]
name = "slow"
kind = "chat_completions"
base_url = "{upstream_url}/v1"
timeouts = {{ connect = 2, first_event = 1.0, idle = 1.0 }}

[[providers]]
name = "dead"
kind = "chat_completions"
base_url = "http://127.0.0.1:{free_port()}/v1"

[[providers]]
name = "anth"
kind = "anthropic"
base_url = "{upstream_url}/v1"
api_key_env = "FERROUTE_TEST_UPSTREAM_KEY"

[[providers]]
name = "oai"
kind = "responses"
base_url = "{upstream_url}/v1"
api_key_env = "FERROUTE_TEST_UPSTREAM_KEY"

[[providers]]
name = "mock"
kind = "mock"
"""


ROUTER_ENV = {"FERROUTE_TEST_UPSTREAM_KEY": UPSTREAM_KEY}


# Processes shared by every end-to-end module (started on first use, stopped when pytest exits).
_shared: dict[str, Server] = {}
_stack = contextlib.ExitStack()
atexit.register(_stack.close)


def shared_upstream() -> Server:
    if "upstream" not in _shared:
        _shared["upstream"] = _stack.enter_context(mock_upstream())
    return _shared["upstream"]


def shared_router(granian: str = "") -> Server:
    """A router with providers `up` (the mock upstream), `slow` (1 s timeouts), `dead` (nothing listens), `mock`;
    `granian`: extra `ferroute serve` options (e.g. "--interface rsgi --loop asyncio"), one router for each."""
    key = f"router {granian}"
    if key not in _shared:
        _shared[key] = _stack.enter_context(
            router(upstream_config(shared_upstream().url), env=ROUTER_ENV, extra_args=granian.split())
        )
    return _shared[key]


def shared_plain() -> Server:
    """`ferroute serve` with no config file: the built-in mock provider."""
    if "plain" not in _shared:
        _shared["plain"] = _stack.enter_context(router(None))
    return _shared["plain"]


def last_request(upstream: Server) -> dict[str, Any]:
    received: list[dict[str, Any]] = httpx.get(f"{upstream.url}/requests", timeout=5).json()
    assert received, "the mock upstream received nothing"
    return received[-1]


def create(server: Server, body: dict[str, Any], **kwargs: Any) -> httpx.Response:
    return httpx.post(f"{server.url}/v1/responses", json=body, timeout=30, **kwargs)


def create_ok(server: Server, body: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    """A non-streaming request that must succeed; the body is validated against the spec."""
    response = create(server, body, **kwargs)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    data: dict[str, Any] = response.json()
    validate_response(data)
    return data


def stream(server: Server, body: dict[str, Any], **kwargs: Any) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """A streaming request; the whole stream is checked against the grammar. Returns (events, response)."""
    with httpx.stream("POST", f"{server.url}/v1/responses", json={**body, "stream": True}, timeout=30, **kwargs) as r:
        raw = r.read()
        assert r.status_code == 200, raw
        assert r.headers["content-type"].startswith("text/event-stream")
    return check_stream(raw)


def raw_stream(server: Server, body: dict[str, Any], **kwargs: Any) -> bytes:
    with httpx.stream("POST", f"{server.url}/v1/responses", json={**body, "stream": True}, timeout=30, **kwargs) as r:
        assert r.status_code == 200, r.read()
        return r.read()


@contextlib.contextmanager
def redis_server() -> Iterator[Server]:
    """A private `redis-server` on a free loopback port (no persistence); its `url` is `redis://…/0`."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed (make test installs it: apt-get install redis-server)")
    port = free_port()
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--protected-mode",
         "yes", "--daemonize", "no", "--loglevel", "warning"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                if sock.recv(16).startswith(b"+PONG"):
                    break
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start on port {port}")
            time.sleep(0.05)
        yield Server(f"redis://127.0.0.1:{port}/0", process)
    finally:
        _stop(process)


def store_section(backend: str, url: str | None = None, extra: str = "") -> str:
    """A `[store]` table for `backend` (sqlite: a file in the router's working directory)."""
    lines = ["[store]", f'backend = "{backend}"']
    if url is not None:
        lines.append(f'url = "{url}"')
    return "\n".join(lines) + "\n" + extra + "\n"


def requests_seen(upstream: Server) -> list[dict[str, Any]]:
    """Everything the mock upstream received so far, oldest first."""
    received: list[dict[str, Any]] = httpx.get(f"{upstream.url}/requests", timeout=5).json()
    return received


def hedges(server: Server, route: str) -> dict[tuple[str, str], float]:
    """`ferroute_upstream_hedges_total` of `route` in the router's `/metrics`: (target, outcome) -> count."""
    counts = {}
    for line in httpx.get(f"{server.url}/metrics", timeout=5).text.splitlines():
        if line.startswith(f'ferroute_upstream_hedges_total{{route="{route}"'):
            labels, value = line.rsplit(" ", 1)
            target = labels.split('target="', 1)[1].split('"', 1)[0]
            outcome = labels.split('outcome="', 1)[1].split('"', 1)[0]
            counts[(target, outcome)] = float(value)
    return counts
