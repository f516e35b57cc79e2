"""Hosted tools' per-request rules (`ferroute.tools.hosted`): names the model sees, approvals, what the upstream
gets of hosted items. The loop itself runs end to end in tests/tools."""

from __future__ import annotations

import json
from typing import Any

import pytest

from ferroute.config import McpConfig, McpServerConfig, parse_settings
from ferroute.errors import RouterError
from ferroute.models import (
    FunctionCallItem,
    FunctionCallOutputItem,
    McpListedTool,
    MessageItem,
    ToolNames,
    parse_request,
    parse_request_and_settings,
)
from ferroute.tools.hosted import Names, Plan, Server, Tools, error_text, lower


def request(body: dict[str, Any]) -> Any:

    return parse_request(json.dumps({"model": "m", **body}).encode(), max_depth=64, max_input_items=100)


def server(label: str, *tools: str, approval: Any = "never", allowed: list[str] | None = None) -> Server:
    return Server(
        label=label,
        url=f"http://127.0.0.1:1/{label}",
        headers={},
        guard=None,
        approval=approval,
        allowed=allowed,
        tools=[McpListedTool(name=name, input_schema={"type": "object"}) for name in tools],
    )


def test_names_are_the_tools_own_where_unique() -> None:
    plan = Plan([server("calc", "add", "sub"), server("web", "search", "add")], Names.of("openai"), 8, True)
    plan.name_functions(["sub"])  # a client function named like a tool
    assert sorted(plan.functions) == ["calc_add", "calc_sub", "search", "web_add"]
    assert plan.by_tool[("web", "search")] == "search"
    assert all(len(name) <= 64 for name in plan.functions)


def test_long_and_odd_names_fit_the_function_pattern() -> None:
    plan = Plan([server("s", "x" * 80, "dotted.name")], Names.of("openai"), 8, True)
    plan.name_functions([])
    for name in plan.functions:
        assert len(name) <= 64
        assert name.replace("_", "").replace("-", "").isalnum()


@pytest.mark.parametrize(
    ("approval", "tool", "needed"),
    [
        (None, "add", True),  # OpenAI's default: approval
        ("always", "add", True),
        ("never", "add", False),
        ({"never": ToolNames(tool_names=["add"])}, "add", False),
        ({"never": ToolNames(tool_names=["add"])}, "sub", True),
        ({"always": ToolNames(tool_names=["add"])}, "add", True),
        ({"always": ToolNames(tool_names=["add"])}, "sub", False),
    ],
)
def test_approval_rules(approval: Any, tool: str, needed: bool) -> None:
    assert server("s", tool, approval=approval).needs_approval(tool) is needed


def test_offered_stops_at_max_tool_calls_and_keeps_to_allowed_tools() -> None:
    plan = Plan([server("calc", "add", "sub", allowed=["add"])], Names.of("openai"), 1, True)
    plan.name_functions([])
    assert [t.name for t in plan.offered()] == ["add"]
    plan.calls = 1
    assert plan.offered() == []


def test_lower_turns_calls_into_function_calls_and_refusals_into_results() -> None:
    plan = Plan([server("calc", "add")], Names.of("openai"), 8, True)
    plan.name_functions([])
    items = request(
        {
            "input": [
                {"role": "user", "content": "add"},
                {"type": "mcp_list_tools", "id": "l1", "server_label": "calc", "tools": []},
                {"type": "mcp_call", "id": "c1", "server_label": "calc", "name": "add", "arguments": "{}",
                 "output": "5", "status": "completed"},
                {"type": "mcp_approval_request", "id": "r1", "server_label": "calc", "name": "add", "arguments": "{}"},
                {"type": "mcp_approval_response", "approval_request_id": "r1", "approve": False, "reason": "no"},
                {"type": "ferroute:mcp_call", "id": "c2", "server_label": "gone", "name": "x", "arguments": "{}",
                 "error": {"type": "http_error", "code": 504, "message": "timed out"}, "status": "failed"},
            ]
        }
    ).items()  # fmt: skip
    lowered = lower(items, plan)
    assert isinstance(lowered[0], MessageItem)
    # The calls of a turn first, then their results (one assistant turn with two calls).
    assert lowered[1] == FunctionCallItem(type="function_call", call_id="c1", name="add", arguments="{}")
    assert lowered[2].call_id == "r1" and lowered[2].name == "add"
    assert lowered[3] == FunctionCallOutputItem(type="function_call_output", call_id="c1", output="5")
    assert "did not approve" in lowered[4].output and "Reason: no" in lowered[4].output
    # A tool this request does not offer: a note, as some upstreams take tool history only with the tool defined.
    assert isinstance(lowered[5], MessageItem) and "timed out" in str(lowered[5].content)
    assert len(lowered) == 6


def test_lower_keeps_a_client_call_made_beside_hosted_ones_in_their_turn() -> None:
    plan = Plan([server("calc", "add")], Names.of("openai"), 8, True)
    plan.name_functions(["lookup"])

    def lowered(*items: dict[str, Any]) -> list[tuple[str, str]]:
        out = lower(request({"input": [{"role": "user", "content": "go"}, *items]}).items(), plan)[1:]
        return [(item.type, item.call_id) for item in out]

    hosted = {"type": "mcp_call", "id": "c1", "server_label": "calc", "name": "add", "arguments": "{}", "output": "4"}
    client = {"type": "function_call", "call_id": "f1", "name": "lookup", "arguments": "{}"}
    answer = {"type": "function_call_output", "call_id": "f1", "output": "found"}
    one_turn = [("function_call", "c1"), ("function_call", "f1"), ("function_call_output", "c1"),
                ("function_call_output", "f1")]  # fmt: skip
    # In the order the model made them (the live hosted call first), or the client's first: one assistant turn.
    assert lowered(hosted, client, answer) == one_turn
    assert sorted(lowered(client, hosted, answer)) == sorted(one_turn)
    # A client call answered before the next hosted call: two turns, as they happened.
    later = {**hosted, "id": "c2"}
    two_turns = [*one_turn, ("function_call", "c2"), ("function_call_output", "c2")]
    assert lowered(hosted, client, answer, later) == two_turns
    # Client calls alone, one turn after another, stay apart.
    second = {**client, "call_id": "f2"}
    second_answer = {**answer, "call_id": "f2"}
    assert lowered(client, answer, second, second_answer) == [
        ("function_call", "f1"), ("function_call_output", "f1"), ("function_call", "f2"), ("function_call_output", "f2")
    ]  # fmt: skip


def test_error_text() -> None:
    assert error_text("plain") == "plain"
    assert error_text({"type": "http_error", "code": 502, "message": "down"}) == "down"
    assert error_text({"type": "mcp_tool_execution_error", "content": [{"type": "text", "text": "bad"}]}) == "bad"


def test_echoed_settings_leave_out_input_and_credentials() -> None:
    tool = {"type": "mcp", "server_label": "a", "headers": {"X": "s"}, "authorization": "t"}
    body = json.dumps({"model": "m", "input": "hi", "tools": [tool]}).encode()
    _, settings = parse_request_and_settings(body, max_depth=64, max_input_items=10)
    assert settings == {"model": "m", "tools": [{"type": "mcp", "server_label": "a"}]}


def test_plan_refuses_unknown_labels_and_urls_off_the_allowlist() -> None:
    tools = Tools(McpConfig(allow_url_prefixes=["http://127.0.0.1:"]), [McpServerConfig(label="calc", url="http://x")])
    with pytest.raises(RouterError) as e:
        tools.plan(request({"tools": [{"type": "mcp", "server_label": "nope"}]}), [])
    assert e.value.param == "tools[0].server_label"
    with pytest.raises(RouterError) as e:
        tools.plan(request({"tools": [{"type": "mcp", "server_label": "x", "server_url": "http://10.0.0.1/mcp"}]}), [])
    assert e.value.status == 400 and e.value.param == "tools[0].server_url"
    plan = tools.plan(
        request({"tools": [{"type": "function", "name": "f"}, {"type": "mcp", "server_label": "calc"}]}), []
    )
    assert plan is not None and plan.servers[0].url == "http://x" and plan.servers[0].tools is None


def test_a_request_cannot_lift_the_configs_approvals() -> None:
    config = [McpServerConfig(label="calc", url="http://x", require_approval="always")]
    plan = Tools(McpConfig(), config).plan(
        request({"tools": [{"type": "mcp", "server_label": "calc", "require_approval": "never"}]}), []
    )
    assert plan is not None and plan.servers[0].needs_approval("add")


def test_config_keys() -> None:
    settings = parse_settings(
        """
[mcp]
allow_url_prefixes = ["http://127.0.0.1:"]
item_names = "prefixed"
call_timeout = 5
max_output_bytes = 1024

[[mcp_servers]]
label = "calc"
url = "http://127.0.0.1:9000/mcp"
headers_env = { Authorization = "CALC_MCP_AUTHORIZATION" }
require_approval = "never"
"""
    )
    assert settings.mcp.item_names == "prefixed" and settings.mcp_servers[0].label == "calc"
    assert Names.of(settings.mcp.item_names).call == "ferroute:mcp_call"
