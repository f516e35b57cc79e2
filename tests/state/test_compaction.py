"""`POST /v1/responses/compact` through a real `ferroute serve`: the router summarises the conversation on the routed
model, keeps the latest user turn in the clear and seals the summary in a `compaction` item, which opens to the
summary for every upstream dialect when it comes back as input; anything it did not seal for this key is a 400."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from tests.support.servers import (
    ROUTER_ENV,
    Server,
    create,
    create_ok,
    requests_seen,
    router,
    shared_upstream,
    store_section,
    upstream_config,
)

KEY_A = "sk-compact-tenant-a"
KEY_B = "sk-compact-tenant-b"
A = {"Authorization": f"Bearer {KEY_A}"}
B = {"Authorization": f"Bearer {KEY_B}"}
SUMMARY_PREFIX = "Summary of the conversation so far:"

CONVERSATION: list[dict[str, Any]] = [
    {"role": "user", "content": "Refactor parser.py so that it streams; keep the public API."},
    {"role": "assistant", "content": "I will read parser.py first."},
    {"type": "function_call", "call_id": "call_1", "name": "read_file", "arguments": '{"path": "parser.py"}'},
    {"type": "function_call_output", "call_id": "call_1", "output": "def parse(text): ..."},
    {"role": "assistant", "content": "parse() reads everything at once; I will make it a generator."},
    {"role": "user", "content": "Also add tests."},
    {"role": "user", "content": [{"type": "input_text", "text": "And update the README."}]},
]


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    extra = f'api_keys = ["{KEY_A}", "{KEY_B}"]\n' + store_section("memory")
    with contextlib.ExitStack() as stack:
        yield stack.enter_context(router(upstream_config(shared_upstream().url, extra), env=ROUTER_ENV))


def _compact(server: Server, body: dict[str, Any], headers: dict[str, str] = A) -> httpx.Response:
    return httpx.post(f"{server.url}/v1/responses/compact", json=body, headers=headers, timeout=30)


def _compact_ok(server: Server, body: dict[str, Any], headers: dict[str, str] = A) -> dict[str, Any]:
    response = _compact(server, body, headers)
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()
    assert set(data) == {"id", "object", "created_at", "output", "usage"}
    assert data["object"] == "response.compaction"
    assert data["id"].startswith("resp_")
    assert abs(data["created_at"] - time.time()) < 60
    *kept, last = data["output"]
    assert set(last) == {"id", "type", "encrypted_content"}
    assert last["type"] == "compaction"
    assert last["id"].startswith("cmp_")
    assert last["encrypted_content"].startswith("ferroute-cmp1.")
    for item in kept:
        assert item["type"] == "message" and item["role"] == "user" and item["status"] == "completed"
        assert item["id"].startswith("msg_")
        assert all(part["type"] == "input_text" for part in item["content"])
    usage = data["usage"]
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"] > 0
    return data


def _texts(items: list[dict[str, Any]]) -> list[str]:
    return [part["text"] for item in items if item["type"] == "message" for part in item["content"]]


def _tag() -> str:
    return f"c{time.monotonic_ns()}"


def _seen(tag: str) -> dict[str, Any]:
    [sent] = [r for r in requests_seen(shared_upstream()) if tag in json.dumps(r["body"].get("model", ""))]
    body: dict[str, Any] = sent["body"]
    return body


def test_compact_from_input_keeps_the_last_user_turn_and_seals_the_summary(server: Server) -> None:
    data = _compact_ok(server, {"model": "m:mock", "input": CONVERSATION})
    assert _texts(data["output"][:-1]) == ["Also add tests.", "And update the README."]
    blob = data["output"][-1]["encrypted_content"]
    assert "parser" not in blob and "README" not in blob


def test_the_summarising_call_gets_the_whole_history_tool_calls_included(server: Server) -> None:
    tag = _tag()
    data = _compact_ok(server, {"model": f"x?tag={tag}:up", "input": CONVERSATION, "instructions": "Be terse."})
    sent = _seen(tag)
    text = json.dumps(sent)
    for needle in ("Refactor parser.py", "read_file", "call_1", "def parse(text)", "make it a generator",
                   "And update the README.", "Be terse.", "Open tasks"):  # fmt: skip
        assert needle in text, needle
    assert "tools" not in sent
    assert data["output"][-1]["type"] == "compaction"


def test_compact_from_previous_response_id(server: Server) -> None:
    first = create_ok(server, {"model": "m:mock", "input": "Plan a trip to Lisbon in May."}, headers=A)
    data = _compact_ok(server, {"model": "m:mock", "previous_response_id": first["id"], "input": "Book the hotel."})
    assert _texts(data["output"][:-1]) == ["Book the hotel."]
    # The summary covers the chain: sent back, it is what the upstream reads.
    tag = _tag()
    create_ok(server, {"model": f"x?tag={tag}:up", "store": False, "input": data["output"]}, headers=A)
    text = json.dumps(_seen(tag))
    assert SUMMARY_PREFIX in text
    assert "Plan a trip to Lisbon" in text  # (the mock's summary quotes its prompt's first words)


@pytest.mark.parametrize("provider", ["up", "anth", "oai"])
def test_the_output_sent_back_opens_to_the_summary_for_each_dialect(server: Server, provider: str) -> None:
    data = _compact_ok(server, {"model": "m:mock", "input": CONVERSATION})
    tag = _tag()
    body = {"model": f"x?tag={tag}:{provider}", "input": [*data["output"], {"role": "user", "content": "Go on."}]}
    create_ok(server, body, headers=A)
    text = json.dumps(_seen(tag))
    assert SUMMARY_PREFIX in text
    assert "This is the ferroute mock provider" in text and "Refactor parser.py" in text
    assert "Go on." in text and "And update the README." in text
    assert "ferroute-cmp1." not in text


def test_a_stored_continuation_of_a_compacted_window_keeps_working(server: Server) -> None:
    data = _compact_ok(server, {"model": "m:mock", "input": CONVERSATION})
    first = create_ok(server, {"model": "m:mock", "input": data["output"]}, headers=A)
    tag = _tag()
    create_ok(server, {"model": f"x?tag={tag}:up", "previous_response_id": first["id"], "input": "next"}, headers=A)
    assert SUMMARY_PREFIX in json.dumps(_seen(tag))


def test_tampered_foreign_and_other_tenants_blobs_are_400(server: Server) -> None:
    data = _compact_ok(server, {"model": "m:mock", "input": "hello"})
    blob = data["output"][-1]["encrypted_content"]
    flipped = blob[:-3] + ("A" if blob[-3] != "A" else "B") + blob[-2:]
    reasoning = create_ok(
        server,
        {"model": "m:mock", "input": "Think", "reasoning": {"effort": "low"}, "store": False,
         "include": ["reasoning.encrypted_content"]},
        headers=A,
    )  # fmt: skip
    [sealed_reasoning] = [i["encrypted_content"] for i in reasoning["output"] if i["type"] == "reasoning"]
    cases = [(flipped, A), (blob, B), (sealed_reasoning, A), ("ferroute-cmp1.AAAA", A), ("opaque", A)]
    for bad, headers in cases:
        item = {"type": "compaction", "encrypted_content": bad}
        response = create(
            server, {"model": "m:mock", "input": [{"role": "user", "content": "q"}, item]}, headers=headers
        )
        assert response.status_code == 400, (bad, response.text)
        error = response.json()["error"]
        assert error["code"] == "invalid_encrypted_content"
        assert error["param"] == "input[1].encrypted_content"
    # ...and a compaction blob is not reasoning either.
    item = {"type": "reasoning", "summary": [], "encrypted_content": blob}
    response = create(server, {"model": "m:mock", "input": [{"role": "user", "content": "q"}, item]}, headers=A)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_encrypted_content"
    # The other tenant's own blob opens for it.
    theirs = _compact_ok(server, {"model": "m:mock", "input": "hello"}, headers=B)
    create_ok(server, {"model": "m:mock", "input": theirs["output"]}, headers=B)


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": "hello"}, "model"),
        ({"model": "", "input": "hello"}, "model"),
        ({"model": 3, "input": "hello"}, "model"),
        ({"model": "m:mock"}, "input"),
        ({"model": "m:mock", "input": [{"type": "nope"}]}, "input[0]"),
    ],
)
def test_bad_requests_are_400_naming_the_field(server: Server, body: dict[str, Any], param: str) -> None:
    response = _compact(server, body)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"].startswith(param)


def test_auth_unknown_previous_response_and_method(server: Server) -> None:
    assert _compact(server, {"model": "m:mock", "input": "x"}, headers={}).status_code == 401
    response = _compact(server, {"model": "m:mock", "previous_response_id": "resp_nope"})
    assert response.status_code == 404
    assert response.json()["error"]["param"] == "previous_response_id"
    assert httpx.get(f"{server.url}/v1/responses/compact", headers=A).status_code == 405


def test_openai_sdk_compact(server: Server) -> None:
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key=KEY_A, max_retries=0)
    try:
        compacted = client.responses.compact(model="m:mock", input=CONVERSATION)  # type: ignore[arg-type]
        assert compacted.object == "response.compaction"
        assert compacted.output[-1].type == "compaction"
        assert compacted.usage.total_tokens > 0
        items = [item.model_dump(exclude_none=True, warnings=False) for item in compacted.output]
        answer = client.responses.create(model="m:mock", input=[*items, {"role": "user", "content": "Go on."}])  # type: ignore[list-item]
        assert answer.status == "completed"
    finally:
        client.close()


def test_compaction_from_the_websocket_flow(server: Server) -> None:
    """A WebSocket session builds a chain, compacts it (`POST /v1/responses/compact` with its last response), and
    starts a new chain on the same connection from the compacted output: the upstream reads the summary."""
    from websockets.sync.client import connect

    from tests.support.grammar import check_events

    url = server.url.replace("http://", "ws://", 1) + "/v1/responses"

    def turn(ws: Any, body: dict[str, Any]) -> dict[str, Any]:
        ws.send(json.dumps({"type": "response.create", **body}))
        events = []
        while True:
            event = json.loads(ws.recv(timeout=30))
            events.append(event)
            if event["type"] in ("response.completed", "response.failed", "response.incomplete", "error"):
                break
        check_events(events)
        assert events[-1]["type"] == "response.completed", events[-1]
        response: dict[str, Any] = events[-1]["response"]
        return response

    with connect(url, additional_headers=A) as ws:
        first = turn(ws, {"model": "m:mock", "input": "Plan a trip to Porto in June."})
        second = turn(ws, {"model": "m:mock", "input": "Three days.", "previous_response_id": first["id"]})
        data = _compact_ok(server, {"model": "m:mock", "previous_response_id": second["id"], "input": "Book it."})
        assert _texts(data["output"][:-1]) == ["Book it."]
        tag = _tag()
        turn(ws, {"model": f"x?tag={tag}:up", "input": data["output"]})  # (a new chain: no previous_response_id)
    text = json.dumps(_seen(tag))
    assert SUMMARY_PREFIX in text and "Plan a trip to Porto" in text
