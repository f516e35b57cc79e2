"""The hosted-tool loop end to end: a real `ferroute serve`, a real MCP server (`ferroute mcp-demo`, the `mcp`
package's server over streamable HTTP) and the mock upstream's `agent` model in each dialect (it calls the tools
the prompt names, then answers from their results). Every stream is checked by the grammar helper (the hosted
items and events against the `openai` SDK's models of OpenAI's MCP tool)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.support.grammar import check_stream
from tests.support.mcp_server import shared_mcp_demo
from tests.support.servers import ROUTER_ENV, Server, create, create_ok, requests_seen, router, shared_upstream, stream
from tests.support.tools import CALC, DIALECTS, hosted, text_of, tools_config, upstream_calls

CANARY = "mcp-canary-credential-5b1e"


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    with router(tools_config(), env=ROUTER_ENV) as server:
        yield server


# --- the built-in mock ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("streamed", [False, True])
def test_the_builtin_mock_runs_a_loop(server: Server, streamed: bool) -> None:
    body = {"model": "m:mock", "input": "Please add 2 and 3.", "tools": [CALC]}
    response = stream(server, body)[1] if streamed else create_ok(server, body)
    kinds = [item["type"] for item in response["output"]]
    assert kinds == ["mcp_list_tools", "mcp_call", "message"], kinds
    listing, call, _ = response["output"]
    assert {"add", "sleep", "fail", "large"} <= {tool["name"] for tool in listing["tools"]}
    assert call["server_label"] == "calc" and call["name"] == "add"
    assert json.loads(call["arguments"]) == {"a": 2, "b": 3}
    assert call["output"] in ("5", "5.0") and call["status"] == "completed" and call["error"] is None
    assert text_of(response) == f"The tool returned: {call['output']}"
    assert response["status"] == "completed"


# --- each dialect ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("streamed", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize("dialect", list(DIALECTS))
def test_parallel_calls_in_each_dialect(server: Server, dialect: str, streamed: bool) -> None:
    tag = f"par-{dialect}-{streamed}"
    body = {
        "model": DIALECTS[dialect],
        "input": f'narrate call add {{"a": 2, "b": 3}}; call add {{"a": 10, "b": 5}} ({tag})',
        "tools": [CALC],
    }
    if streamed:
        events, response = stream(server, body)
        types = [e["type"] for e in events]
        # The calls are written in order, each with its events, in the one sequence.
        assert types.count("response.mcp_call.completed") == 2
        assert types.count("response.mcp_list_tools.completed") == 1
    else:
        response = create_ok(server, body)
    calls = hosted(response["output"], "mcp_call")
    assert [c["output"] for c in calls] in (["5", "15"], ["5.0", "15.0"])
    assert text_of(response).endswith(f"Results: add={calls[0]['output']}; add={calls[1]['output']}")
    assert response["status"] == "completed"
    # Two upstream calls; the second carries the calls and their results in the dialect's own form.
    seen = upstream_calls(tag)
    assert len(seen) == 2
    second = json.dumps(seen[1]["body"])
    assert calls[1]["output"] in second and "add" in second
    # Usage is summed over both upstream calls.
    assert response["usage"]["input_tokens"] > 0 and response["usage"]["output_tokens"] > 0


@pytest.mark.parametrize("dialect", list(DIALECTS))
def test_a_hosted_calls_arguments_stream_while_the_model_makes_them(server: Server, dialect: str) -> None:
    # The upstream writes one event every 0.15 s. The call's `mcp_call` item opens when the model starts the call,
    # and its arguments go out piece by piece as the model makes them, not all at once when its turn has ended.
    model = DIALECTS[dialect].replace("agent:", "agent?drip=0.15:")
    body = {"model": model, "input": 'call add {"a": 2, "b": 3}; call add {"a": 1, "b": 1}', "tools": [CALC]}
    seen: list[tuple[float, dict[str, Any]]] = []
    raw, pending = b"", b""
    with httpx.stream("POST", f"{server.url}/v1/responses", json={**body, "stream": True}, timeout=30) as r:
        for piece in r.iter_bytes():
            now = time.monotonic()
            raw += piece
            pending += piece
            *frames, pending = pending.split(b"\n\n")
            for frame in frames:
                data = [line[6:] for line in frame.split(b"\n") if line.startswith(b"data: ")]
                if data and data[0] != b"[DONE]":
                    seen.append((now, json.loads(data[0])))
    _, response = check_stream(raw)
    calls = hosted(response["output"], "mcp_call")
    assert [c["output"] for c in calls] in (["5", "2"], ["5.0", "2.0"])
    for call in calls:
        mine = [(t, e) for t, e in seen if call["id"] in (e.get("item_id"), e.get("item", {}).get("id"))]
        deltas = [e["delta"] for _, e in mine if e["type"] == "response.mcp_call_arguments.delta"]
        assert len(deltas) >= 2, deltas  # (the mock streams arguments in two or three pieces)
        assert "".join(deltas) == call["arguments"]
        added = next(t for t, e in mine if e["type"] == "response.output_item.added")
        done = next(t for t, e in mine if e["type"] == "response.mcp_call_arguments.done")
        assert done - added >= 0.25, (dialect, done - added)  # (at least two upstream writes came between)
    # The first call's item waits while the model makes the second; everything stays in one gapless order.
    types = [e["type"] for _, e in seen]
    first_done = types.index("response.output_item.done", types.index("response.mcp_call.completed"))
    assert seen[first_done][1]["item"]["id"] == calls[0]["id"]
    assert [e["sequence_number"] for _, e in seen] == list(range(len(seen)))


def test_tool_error_and_timeout_reach_the_model_not_the_response(server: Server) -> None:
    body = {
        "model": DIALECTS["chat"],
        "input": 'call fail {"message": "boom"}; call sleep {"seconds": 5}',
        "tools": [CALC],
    }
    started = time.monotonic()
    events, response = stream(server, body)
    assert time.monotonic() - started < 4.5  # the 2 s call timeout, not the tool's 5 s
    failed, slow = hosted(response["output"], "mcp_call")
    assert failed["status"] == "failed" and failed["error"]["type"] == "mcp_tool_execution_error"
    assert "boom" in json.dumps(failed["error"])
    assert slow["status"] == "failed" and slow["error"] == {
        "type": "http_error",
        "code": 504,
        "message": slow["error"]["message"],
    }
    assert "timed out" in slow["error"]["message"]
    assert "response.mcp_call.failed" in [e["type"] for e in events]
    assert response["status"] == "completed"
    assert "boom" in text_of(response) and "timed out" in text_of(response)


def test_a_large_output_is_cut_and_says_so(server: Server) -> None:
    response = create_ok(server, {"model": DIALECTS["chat"], "input": 'call large {"size": 100000}', "tools": [CALC]})
    [call] = hosted(response["output"], "mcp_call")
    assert len(call["output"].encode()) <= 4096 + 100
    assert "cut" in call["output"] and "100000" in call["output"]


def test_max_tool_calls_bounds_the_hosted_calls(server: Server) -> None:
    tag = "maxcalls"
    body = {
        "model": DIALECTS["chat"],
        "input": f'call add {{"a": 1, "b": 1}}; call add {{"a": 2, "b": 2}} {tag}',
        "tools": [CALC],
        "max_tool_calls": 1,
    }
    response = create_ok(server, body)
    ran, refused = hosted(response["output"], "mcp_call")
    assert ran["status"] == "completed"
    assert refused["status"] == "failed" and refused["error"]["type"] == "mcp_protocol_error"
    assert "max_tool_calls" in refused["error"]["message"]
    # Past the limit the model is offered no hosted tool.
    second = upstream_calls(tag)[-1]["body"]
    assert not second.get("tools")


def test_allowed_tools_are_enforced_against_a_model_that_ignores_them(server: Server) -> None:
    tag = "forbidden"
    body = {
        "model": DIALECTS["chat"],
        "input": f'call large {{"size": 10}}; call add {{"a": 1, "b": 2}} {tag}',
        "tools": [{**CALC, "allowed_tools": ["add"]}],
    }
    response = create_ok(server, body)
    forbidden, allowed = hosted(response["output"], "mcp_call")
    assert forbidden["name"] == "large" and forbidden["status"] == "failed" and forbidden["output"] is None
    assert forbidden["error"]["type"] == "mcp_protocol_error"
    assert allowed["output"] in ("3", "3.0")
    offered = [tool["function"]["name"] for tool in upstream_calls(tag)[0]["body"]["tools"]]
    assert offered == ["add"]


def test_tool_choice_allowed_tools_holds_for_hosted_tools(server: Server) -> None:
    body = {
        "model": DIALECTS["chat"],
        "input": 'call large {"size": 10}',
        "tools": [CALC],
        "tool_choice": {"type": "allowed_tools", "mode": "auto", "tools": [{"type": "function", "name": "add"}]},
    }
    response = create_ok(server, body)
    [call] = hosted(response["output"], "mcp_call")
    assert call["name"] == "large" and call["status"] == "failed" and "tool_choice" in call["error"]["message"]


# --- approvals --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("approve", [True, False])
def test_approval_flow(server: Server, approve: bool) -> None:
    tool = {"type": "mcp", "server_label": "calc2", "server_url": shared_mcp_demo().url, "require_approval": "always"}
    first = create_ok(server, {"model": DIALECTS["chat"], "input": 'call add {"a": 4, "b": 4}', "tools": [tool]})
    [request] = hosted(first["output"], "mcp_approval_request")
    assert request["name"] == "add" and json.loads(request["arguments"]) == {"a": 4, "b": 4}
    assert not hosted(first["output"], "mcp_call")
    answer = {"type": "mcp_approval_response", "approval_request_id": request["id"], "approve": approve}
    second = create_ok(
        server,
        {"model": DIALECTS["chat"], "previous_response_id": first["id"], "input": [answer], "tools": [tool]},
    )
    # The tools were listed in the first response: not again.
    assert not hosted(second["output"], "mcp_list_tools")
    calls = hosted(second["output"], "mcp_call")
    if approve:
        [call] = calls
        assert call["approval_request_id"] == request["id"] and call["output"] in ("8", "8.0")
        assert text_of(second).endswith(f"Results: add={call['output']}")
    else:
        assert calls == []
        assert "did not approve" in text_of(second)


def test_an_answer_to_no_approval_request_is_a_400(server: Server) -> None:
    answer = {"type": "mcp_approval_response", "approval_request_id": "mcpr_nope", "approve": True}
    response = create(server, {"model": DIALECTS["chat"], "input": [answer], "tools": [CALC]})
    assert response.status_code == 400, response.text
    assert "mcpr_nope" in response.json()["error"]["message"]


# --- continuation ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dialect", list(DIALECTS))
def test_a_chain_goes_on_after_a_loop(server: Server, dialect: str) -> None:
    model = DIALECTS[dialect]
    first = create_ok(server, {"model": model, "input": 'call add {"a": 1, "b": 2}', "tools": [CALC]})
    tag = f"chain-{dialect}"
    second = create_ok(
        server,
        {"model": model, "previous_response_id": first["id"], "input": f'call add {{"a": 3, "b": 4}} {tag}',
         "tools": [CALC]},
    )  # fmt: skip
    assert not hosted(second["output"], "mcp_list_tools")  # (the conversation holds the listing)
    [call] = hosted(second["output"], "mcp_call")
    assert call["output"] in ("7", "7.0")
    # Without the tool in the request, the earlier calls still reach the upstream (as text where undefined).
    third = create_ok(server, {"model": model, "previous_response_id": second["id"], "input": "thanks"})
    assert third["status"] == "completed"


# --- failure and safety -----------------------------------------------------------------------------------------


def test_a_client_that_leaves_mid_call_cancels_it(server: Server) -> None:
    body = {"model": DIALECTS["chat"], "input": 'call sleep {"seconds": 1.5}', "tools": [CALC], "stream": True}
    response_id = None
    with httpx.stream("POST", f"{server.url}/v1/responses", json=body, timeout=10) as r:
        for line in r.iter_lines():
            if line.startswith("data: {"):
                event = json.loads(line[6:])
                response_id = response_id or event.get("response", {}).get("id")
                if event["type"] == "response.mcp_call.in_progress":
                    break
    assert response_id is not None
    deadline = time.monotonic() + 5
    while True:
        stored = httpx.get(f"{server.url}/v1/responses/{response_id}", timeout=5).json()
        if stored["status"] != "in_progress" or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert stored["status"] == "cancelled"
    # The worker is fine.
    assert create_ok(server, {"model": "m:mock", "input": "hi"})["status"] == "completed"


def test_server_urls_off_the_allowlist_are_refused(server: Server) -> None:
    for url in ("http://10.0.0.1/mcp", "http://169.254.169.254/latest", "http://localhost:9/mcp"):
        tool = {"type": "mcp", "server_label": "x", "server_url": url}
        response = create(server, {"model": "m:mock", "input": "hi", "tools": [tool]})
        assert response.status_code == 400, response.text
        assert response.json()["error"]["param"] == "tools[0].server_url"


def test_private_addresses_are_refused_under_a_prefix_that_names_no_host() -> None:
    config = tools_config().replace('allow_url_prefixes = ["http://127.0.0.1:"]', 'allow_url_prefixes = ["http://"]')
    with router(config, env=ROUTER_ENV) as open_router:
        for url in (shared_mcp_demo().url, "http://10.1.2.3/mcp", "http://[::1]:9/mcp"):
            tool = {"type": "mcp", "server_label": "x", "server_url": url}
            response = create(open_router, {"model": "m:mock", "input": "hi", "tools": [tool]})
            assert response.status_code == 424, response.text
            assert response.json()["error"]["code"] == "mcp_list_tools_failed"
            _, failed = check_stream(
                httpx.post(
                    f"{open_router.url}/v1/responses",
                    json={"model": "m:mock", "input": "hi", "tools": [tool], "stream": True},
                    timeout=10,
                ).content
            )
            assert failed["status"] == "failed"
            listing = hosted(failed["output"], "mcp_list_tools")[0]
            assert listing["status"] == "failed" and listing["error"]


def test_credentials_reach_the_server_and_nothing_else(server: Server) -> None:
    tool = {
        "type": "mcp",
        "server_label": "private",
        "server_url": shared_mcp_demo().url,
        "headers": {"X-Canary": CANARY},
        "require_approval": "never",
    }
    body = {"model": DIALECTS["responses"], "input": 'call echo_header {"name": "x-canary"}', "tools": [tool]}
    raw = httpx.post(f"{server.url}/v1/responses", json={**body, "stream": True}, timeout=20).content
    _, response = check_stream(raw)
    [call] = hosted(response["output"], "mcp_call")
    # The server saw the exact value (the router masks it in the output it passes on).
    assert call["output"] == "[redacted]"
    whole = create(server, body).text
    stored = httpx.get(f"{server.url}/v1/responses/{response['id']}", timeout=5).text
    items = httpx.get(f"{server.url}/v1/responses/{response['id']}/input_items", timeout=5).text
    metrics = httpx.get(f"{server.url}/metrics", timeout=5).text
    upstream = json.dumps(requests_seen(shared_upstream()))
    for where, text in {"stream": raw.decode(), "whole": whole, "GET": stored, "input_items": items,
                        "metrics": metrics, "upstream": upstream, "log": server.log()}.items():  # fmt: skip
        assert CANARY not in text, where
    assert "X-Canary" not in json.dumps(response["tools"])


def test_prefixed_item_names() -> None:
    with router(tools_config('item_names = "prefixed"'), env=ROUTER_ENV) as prefixed:
        events, response = stream(prefixed, {"model": "m:mock", "input": "add 1 and 1", "tools": [CALC]})
    kinds = [item["type"] for item in response["output"]]
    assert kinds == ["ferroute:mcp_list_tools", "ferroute:mcp_call", "message"]
    types = {e["type"] for e in events}
    assert {"ferroute:mcp_call.completed", "ferroute:mcp_call_arguments.done"} <= types
    assert not any(t.startswith("response.mcp") for t in types)


def test_a_background_response_runs_the_loop_and_cancel_stops_it(server: Server) -> None:
    def poll(response_id: str, until: set[str]) -> dict[str, Any]:
        deadline = time.monotonic() + 10
        while True:
            stored: dict[str, Any] = httpx.get(f"{server.url}/v1/responses/{response_id}", timeout=5).json()
            if stored["status"] in until or time.monotonic() > deadline:
                return stored
            time.sleep(0.1)

    body = {"model": DIALECTS["chat"], "input": 'call add {"a": 5, "b": 5}', "tools": [CALC], "background": True}
    queued = create_ok(server, body)
    done = poll(queued["id"], {"completed", "failed"})
    assert done["status"] == "completed"
    [call] = hosted(done["output"], "mcp_call")
    assert call["output"] in ("10", "10.0")
    # A cancel while a tool runs stops the loop there.
    slow = create_ok(server, {**body, "input": 'call sleep {"seconds": 1.5}; call add {"a": 1, "b": 1}'})
    time.sleep(0.5)
    cancelled = httpx.post(f"{server.url}/v1/responses/{slow['id']}/cancel", timeout=5)
    assert cancelled.status_code == 200, cancelled.text
    final = poll(slow["id"], {"cancelled", "completed", "failed"})
    assert final["status"] == "cancelled"
    assert not any(item["type"] == "message" for item in final["output"])


def test_a_client_function_ends_the_loop_after_the_hosted_calls_of_its_turn(server: Server) -> None:
    lookup = {"type": "function", "name": "lookup", "parameters": {"type": "object", "properties": {}}}
    body = {
        "model": DIALECTS["anthropic"],
        "input": 'call add {"a": 2, "b": 2}; call lookup {"q": "x"}',
        "tools": [CALC, lookup],
    }
    first = create_ok(server, body)
    kinds = [item["type"] for item in first["output"]]
    assert kinds == ["mcp_list_tools", "mcp_call", "function_call"], kinds  # (in the order the model made them)
    call = next(item for item in first["output"] if item["type"] == "function_call")
    assert call["name"] == "lookup"
    # The client runs its function; the model then sees both results.
    output = {"type": "function_call_output", "call_id": call["call_id"], "output": "found"}
    second = create_ok(server, {**body, "previous_response_id": first["id"], "input": [output]})
    assert "lookup=found" in text_of(second) and "add=4" in text_of(second)


def test_reasoning_goes_back_between_the_loops_upstream_calls(server: Server) -> None:
    # An Anthropic model thinks before its calls; its next call in the same response gets the thinking back with
    # its signature, before the tool_use blocks (the Messages API requires it with thinking on).
    tag = "think-signature"
    body = {"model": DIALECTS["anthropic"], "input": f'think call add {{"a": 1, "b": 2}} {tag}', "tools": [CALC]}
    response = create_ok(server, body)
    assert [item["type"] for item in response["output"]] == ["mcp_list_tools", "reasoning", "mcp_call", "message"]
    assert response["output"][1]["encrypted_content"] is None  # (the signature is not the client's to see)
    _, second = upstream_calls(tag)
    assistant = [m for m in second["body"]["messages"] if m["role"] == "assistant"][-1]
    kinds = [block["type"] for block in assistant["content"]]
    assert kinds == ["thinking", "tool_use"], kinds
    thinking = assistant["content"][0]
    assert thinking["thinking"] == "The tools will tell." and thinking["signature"].startswith("sig-agent-")
