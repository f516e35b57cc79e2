"""The README's "Tools and the loop" example: the embedded defaults (no config file), `ferroute mcp-demo` on its
default port, and a request naming server `demo`: the built-in mock calls the tool and answers from its result."""

from __future__ import annotations

import socket

import pytest

from tests.support.mcp_server import mcp_demo
from tests.support.servers import create_ok, router, stream


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def test_the_readme_example() -> None:
    if not _port_free(9000):  # (the example's fixed port: the embedded defaults name it)
        pytest.skip("port 9000 is taken on this machine: the README example needs it for `ferroute mcp-demo`")
    with mcp_demo(9000), router(None) as server:
        body = {"model": "demo", "input": "Please add 2 and 3", "tools": [{"type": "mcp", "server_label": "demo"}]}
        response = create_ok(server, body)
        kinds = [item["type"] for item in response["output"]]
        assert kinds == ["mcp_list_tools", "mcp_call", "message"]
        call = response["output"][1]
        assert call["output"] == "5"
        assert response["output"][2]["content"][0]["text"] == "The tool returned: 5"
        _, streamed = stream(server, body)
        assert [item["type"] for item in streamed["output"]] == kinds
