"""A real MCP server for tests: `ferroute mcp-demo` (`ferroute.tools.mcp.demo`) in a process of its own.

`mcp_demo()` starts one (on a free port unless told which, so a test can restart it in place) and stops it after;
`shared_mcp_demo()` is one process for the whole test run; the `mcp_server` fixture hands that one to a test
(import `mcp_server_fixture` into the test module to use it).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from tests.support.servers import REPO, Server, _stack, _stop

_shared: dict[bool, Server] = {}


@contextlib.contextmanager
def mcp_demo(port: int = 0, *, legacy: bool = False, env: dict[str, str] | None = None) -> Iterator[Server]:
    """`ferroute mcp-demo` on `port` (0: a free one); `legacy`: the handshake-era protocol only; `env` on top of
    this process's (e.g. `FERROUTE_DEMO_MCP_TOKEN`). The server's `url` ends in `/mcp`."""
    args = [sys.executable, "-m", "ferroute", "mcp-demo", "--port", str(port)] + (["--legacy"] if legacy else [])
    process = subprocess.Popen(
        args,
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
        start_new_session=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline().strip()  # its URL, printed once it listens
        if not (line.startswith("http://127.0.0.1:") and line.endswith("/mcp")):
            raise RuntimeError(f"ferroute mcp-demo did not start: {line!r} (exit status {process.poll()})")
        yield Server(line, process)
    finally:
        _stop(process)
        if process.stdout is not None:
            process.stdout.close()


def shared_mcp_demo(*, legacy: bool = False) -> Server:
    """One demo server for the whole run (started on first use, stopped when pytest exits)."""
    if legacy not in _shared:
        _shared[legacy] = _stack.enter_context(mcp_demo(legacy=legacy))
    return _shared[legacy]


@pytest.fixture(scope="session", name="mcp_server")
def mcp_server_fixture() -> Server:
    """The shared demo MCP server (2026 protocol); its `url` ends in `/mcp`."""
    return shared_mcp_demo()
