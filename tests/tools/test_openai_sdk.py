"""The official `openai` SDK reads the loop's items (`responses.create`, `responses.stream`) and runs the approval
flow, against a real `ferroute serve`, a real MCP server and the mock upstream's `agent` model."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import openai
import pytest
from openai.types.responses import ResponseOutputMessage
from openai.types.responses.response_output_item import McpApprovalRequest, McpCall, McpListTools

from tests.support.grammar import validate_response
from tests.support.mcp_server import shared_mcp_demo
from tests.support.servers import ROUTER_ENV, Server, router
from tests.support.tools import CALC, DIALECTS, tools_config


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    with router(tools_config(), env=ROUTER_ENV) as server:
        yield server


@pytest.fixture
def client(server: Server) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=30) as client:
        yield client


def check(response: Any) -> None:
    validate_response(response.model_dump(mode="json"))


@pytest.mark.parametrize("dialect", list(DIALECTS))
def test_create_reads_the_loops_items(client: openai.OpenAI, dialect: str) -> None:
    response = client.responses.create(
        model=DIALECTS[dialect],
        input='call add {"a": 2, "b": 40}',
        tools=[CALC],  # type: ignore[list-item]
    )
    check(response)
    listing, call, message = response.output
    assert isinstance(listing, McpListTools) and any(tool.name == "add" for tool in listing.tools)
    assert isinstance(call, McpCall) and call.name == "add" and call.output in ("42", "42.0")
    assert isinstance(message, ResponseOutputMessage)
    assert response.output_text == f"Results: add={call.output}"


def test_stream_reads_the_loops_events(client: openai.OpenAI) -> None:
    with client.responses.stream(
        model=DIALECTS["anthropic"],
        input='call add {"a": 1, "b": 1}; call fail {"message": "nope"}',
        tools=[CALC],  # type: ignore[list-item]
    ) as stream:
        types = [event.type for event in stream]
        final = stream.get_final_response()
    check(final)
    assert types.count("response.mcp_call.completed") == 1 and types.count("response.mcp_call.failed") == 1
    assert "response.mcp_list_tools.completed" in types and types[-1] == "response.completed"
    ok, failed = (item for item in final.output if isinstance(item, McpCall))
    assert ok.output in ("2", "2.0") and ok.error is None
    assert failed.error is not None and failed.error.type == "mcp_tool_execution_error"


def test_the_approval_flow(client: openai.OpenAI) -> None:
    # (A server of the config cannot be asked to require approval per request: the request names its own.)
    tools = [{"type": "mcp", "server_label": "guarded", "server_url": _calc_url(), "require_approval": "always"}]
    first = client.responses.create(model=DIALECTS["responses"], input='call add {"a": 3, "b": 3}', tools=tools)  # type: ignore[arg-type]
    check(first)
    [request] = [item for item in first.output if isinstance(item, McpApprovalRequest)]
    assert request.name == "add"
    second = client.responses.create(
        model=DIALECTS["responses"],
        previous_response_id=first.id,
        input=[{"type": "mcp_approval_response", "approval_request_id": request.id, "approve": True}],
        tools=tools,  # type: ignore[arg-type]
    )
    check(second)
    [call] = [item for item in second.output if isinstance(item, McpCall)]
    assert call.approval_request_id == request.id and call.output in ("6", "6.0")
    assert second.output_text == f"Results: add={call.output}"


def _calc_url() -> str:
    return shared_mcp_demo().url
