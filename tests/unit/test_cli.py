"""The `ferroute` command as a newcomer runs it."""

from __future__ import annotations

import subprocess
import sys

from tests.support.fixtures import FIXTURES


def ferroute(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ferroute", *args], capture_output=True, text=True, timeout=60)


def test_demo_translates_and_parses_a_recorded_stream() -> None:
    result = ferroute("demo")
    assert result.returncode == 0, result.stderr
    assert "response.created" in result.stdout
    assert "response.function_call_arguments.delta" in result.stdout
    assert "status=completed" in result.stdout
    assert "function_call weather(" in result.stdout


def test_demo_on_another_file_and_read_size() -> None:
    path = FIXTURES / "chat_completions" / "openrouter-minimax-length-then-error-chunk.sse"
    result = ferroute("demo", str(path), "--read-size", "1")
    assert result.returncode == 0, result.stderr
    assert "status=failed" in result.stdout
    assert "Token limit reached" in result.stdout


def test_demo_missing_file() -> None:
    result = ferroute("demo", "/nonexistent.sse")
    assert result.returncode == 2
    assert "no stream at /nonexistent.sse" in result.stderr


def test_serve_options() -> None:
    # `ferroute serve` itself runs in the end-to-end tests (tests/support/servers.py, tests/router/).
    result = ferroute("serve", "--help")
    assert result.returncode == 0, result.stderr
    for option in ("--config", "--host", "--port", "--workers"):
        assert option in result.stdout


def test_mcp_demo_options() -> None:
    # `ferroute mcp-demo` itself runs in the MCP client's tests (tests/support/mcp_server.py).
    result = ferroute("mcp-demo", "--help")
    assert result.returncode == 0, result.stderr
    for option in ("--host", "--port", "--legacy"):
        assert option in result.stdout
