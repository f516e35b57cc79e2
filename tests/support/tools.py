"""Shared by the hosted-tool tests (tests/tools): a router config with the demo MCP server as `calc` and the mock
upstream's `agent` model in each dialect, and readers of a response's items."""

from __future__ import annotations

import json
from typing import Any

from tests.support.mcp_server import shared_mcp_demo
from tests.support.servers import requests_seen, shared_upstream, upstream_config

# The mock upstream's `agent` model (it calls the tools a `call <name> <json>` directive names) in each dialect.
DIALECTS = {"chat": "agent:up", "anthropic": "agent:anth", "responses": "agent:oai"}
# The config's MCP server, by label.
CALC = {"type": "mcp", "server_label": "calc"}


def tools_config(extra_mcp: str = "") -> str:
    """`upstream_config` with `[mcp]` (loopback allowed, 2 s calls, 4 KiB outputs; `extra_mcp` added there) and the
    shared demo MCP server as `calc` (no approvals)."""
    mcp = shared_mcp_demo()
    return (
        upstream_config(shared_upstream().url)
        + f"""
[mcp]
allow_url_prefixes = ["http://127.0.0.1:"]
call_timeout = 2
max_output_bytes = 4096
{extra_mcp}

[[mcp_servers]]
label = "calc"
url = "{mcp.url}"
require_approval = "never"
"""
    )


def hosted(output: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    """The items of type `kind`."""
    return [item for item in output if item["type"] == kind]


def text_of(response: dict[str, Any]) -> str:
    """The text of the response's messages."""
    return "".join(
        part.get("text", "") for item in response["output"] if item["type"] == "message" for part in item["content"]
    )


def upstream_calls(tag: str) -> list[dict[str, Any]]:
    """The requests the mock upstream got whose body holds `tag`."""
    return [r for r in requests_seen(shared_upstream()) if tag in json.dumps(r["body"])]
