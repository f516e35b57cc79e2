"""The response store through `ferroute serve`, once per backend (memory, sqlite, redis): storing,
`previous_response_id` chains as the upstream sees them, the `/v1/responses/{id}` endpoints, tenants."""

from __future__ import annotations

import contextlib
import itertools
import json
import re
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.support.grammar import check_stream, split_sse, validate_response
from tests.support.servers import (
    ROUTER_ENV,
    Server,
    create,
    create_ok,
    redis_server,
    requests_seen,
    router,
    shared_upstream,
    store_section,
    stream,
    upstream_config,
)

KEY_A = "sk-tenant-a-7c1e"
KEY_B = "sk-tenant-b-93f0"
A = {"Authorization": f"Bearer {KEY_A}"}
B = {"Authorization": f"Bearer {KEY_B}"}
TOOL_FIXTURE = "fixture:openai-gpt-4o-mini-tool-call-usage"
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "parameters": {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]},
}


@pytest.fixture(scope="module", params=["memory", "sqlite", "redis"])
def server(request: pytest.FixtureRequest) -> Iterator[Server]:
    with contextlib.ExitStack() as stack:
        url = stack.enter_context(redis_server()).url if request.param == "redis" else None
        extra = f'api_keys = ["{KEY_A}", "{KEY_B}"]\n' + store_section(request.param, url)
        yield stack.enter_context(router(upstream_config(shared_upstream().url, extra), env=ROUTER_ENV))


def get(server: Server, path: str, headers: dict[str, str] = A, **kwargs: Any) -> httpx.Response:
    return httpx.get(f"{server.url}/v1/responses/{path}", headers=headers, timeout=10, **kwargs)


def upstream_messages(tag: str) -> list[dict[str, Any]]:
    """The messages the mock upstream received in the (one) request whose model carries `tag`."""
    found = [r for r in requests_seen(shared_upstream()) if f"tag={tag}" in r["body"]["model"]]
    assert len(found) == 1, found
    messages: list[dict[str, Any]] = found[0]["body"]["messages"]
    return messages


def _tag() -> str:
    return f"t{time.monotonic_ns()}"


def test_stored_response_is_retrievable(server: Server) -> None:
    response = create_ok(server, {"model": "m:mock", "input": "hello"}, headers=A)
    assert response["store"] is True
    stored = get(server, response["id"])
    assert stored.status_code == 200
    assert stored.json() == response
    # A streamed response is written before `[DONE]`: retrievable the moment the stream has been read.
    _, streamed = stream(server, {"model": "m:mock", "input": "hi", "reasoning": {"effort": "low"}}, headers=A)
    again = get(server, streamed["id"]).json()
    validate_response(again)
    assert again == streamed


def test_store_false_keeps_nothing(server: Server) -> None:
    response = create_ok(server, {"model": "m:mock", "input": "hello", "store": False}, headers=A)
    assert response["store"] is False
    assert get(server, response["id"]).status_code == 404
    follow = create(server, {"model": "m:mock", "input": "x", "previous_response_id": response["id"]}, headers=A)
    assert follow.status_code == 404
    assert follow.json()["error"]["param"] == "previous_response_id"


def test_a_chain_gives_the_upstream_the_whole_context_in_order(server: Server) -> None:
    tag = _tag()
    first = create_ok(server, {"model": f"a?tag={tag}1:up", "input": "one", "instructions": "sys one"}, headers=A)
    second = create_ok(
        server,
        {"model": f"a?tag={tag}2:up", "input": "two", "previous_response_id": first["id"], "instructions": "sys two"},
        headers=A,
    )
    assert second["previous_response_id"] == first["id"]
    _, third = stream(
        server, {"model": f"a?tag={tag}3:up", "input": "three", "previous_response_id": second["id"]}, headers=A
    )
    reply = "Hello from the mock upstream."
    assert upstream_messages(f"{tag}2") == [
        {"role": "system", "content": "sys two"},  # instructions are not inherited, only this turn's
        {"role": "user", "content": "one"},
        {"role": "assistant", "content": reply},
        {"role": "user", "content": "two"},
    ]
    assert upstream_messages(f"{tag}3") == [
        {"role": "user", "content": "one"},
        {"role": "assistant", "content": reply},
        {"role": "user", "content": "two"},
        {"role": "assistant", "content": reply},
        {"role": "user", "content": "three"},
    ]
    assert third["previous_response_id"] == second["id"]


def test_a_function_call_round_trip(server: Server) -> None:
    tag = _tag()
    call = create_ok(
        server, {"model": f"{TOOL_FIXTURE}?tag={tag}1:up", "input": "weather in Paris?", "tools": [WEATHER]}, headers=A
    )
    [fc] = [item for item in call["output"] if item["type"] == "function_call"]
    result = {"type": "function_call_output", "call_id": fc["call_id"], "output": '{"temp": 21}'}
    answer = create_ok(
        server,
        {"model": f"b?tag={tag}2:up", "input": [result], "previous_response_id": call["id"], "tools": [WEATHER]},
        headers=A,
    )
    assert answer["status"] == "completed"
    assert upstream_messages(f"{tag}2") == [
        {"role": "user", "content": "weather in Paris?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": fc["call_id"],
                    "type": "function",
                    "function": {"name": fc["name"], "arguments": fc["arguments"]},
                }
            ],
        },
        {"role": "tool", "tool_call_id": fc["call_id"], "content": '{"temp": 21}'},
    ]


def test_input_items_list(server: Server) -> None:
    items = [{"role": "user", "content": f"m{i}"} for i in range(5)]
    response = create_ok(server, {"model": "m:mock", "input": items}, headers=A)
    page = get(server, f"{response['id']}/input_items").json()
    assert page["object"] == "list"
    assert [i["content"][0]["text"] for i in page["data"]] == ["m4", "m3", "m2", "m1", "m0"]  # desc by default
    # Each id is made from the response's (then the item's number): its items need no index of the store's.
    own = response["id"][5:]
    assert [i["id"] for i in page["data"]] == [f"msg_{own}{0x8000 + k:04x}" for k in (4, 3, 2, 1, 0)]
    assert page["first_id"] == page["data"][0]["id"] and page["last_id"] == page["data"][-1]["id"]
    assert page["has_more"] is False
    asc = get(server, f"{response['id']}/input_items", params={"order": "asc", "limit": 2}).json()
    assert [i["content"][0]["text"] for i in asc["data"]] == ["m0", "m1"]
    assert asc["has_more"] is True
    rest = get(server, f"{response['id']}/input_items", params={"order": "asc", "after": asc["last_id"]}).json()
    assert [i["content"][0]["text"] for i in rest["data"]] == ["m2", "m3", "m4"]
    assert rest["has_more"] is False
    for bad in ({"limit": 0}, {"limit": 101}, {"order": "up"}, {"after": "msg_nope"}):
        assert get(server, f"{response['id']}/input_items", params=bad).status_code == 400


def test_item_reference_resolves_stored_items(server: Server) -> None:
    tag = _tag()
    first = create_ok(server, {"model": "a:up", "input": "remember me"}, headers=A)
    [message] = first["output"]
    inputs = get(server, f"{first['id']}/input_items").json()["data"]
    refs = [{"type": "item_reference", "id": inputs[0]["id"]}, {"type": "item_reference", "id": message["id"]}]
    create_ok(server, {"model": f"a?tag={tag}:up", "input": [*refs, {"role": "user", "content": "and?"}]}, headers=A)
    assert upstream_messages(tag) == [
        {"role": "user", "content": "remember me"},
        {"role": "assistant", "content": "Hello from the mock upstream."},
        {"role": "user", "content": "and?"},
    ]
    missing = create(server, {"model": "a:up", "input": [{"type": "item_reference", "id": "msg_0"}]}, headers=A)
    assert missing.status_code == 404
    assert missing.json()["error"]["param"] == "input[0].id"


def test_item_reference_finds_given_ids_and_items_passed_on_after_their_response_is_gone(server: Server) -> None:
    """Ids ferroute makes carry their response's id, so the store indexes only the others: ids the client gave,
    and items a later response got as input (still found there once the response that made them is deleted)."""
    given = {"type": "message", "role": "user", "content": "named by me", "id": "msg_client_given_1"}
    first = create_ok(server, {"model": "a:up", "input": [given]}, headers=A)
    [message] = first["output"]
    assert message["id"] == f"msg_{first['id'][5:]}0000"
    tag = _tag()
    ref = {"type": "item_reference", "id": "msg_client_given_1"}
    create_ok(server, {"model": f"a?tag={tag}:up", "input": [ref]}, headers=A)
    assert upstream_messages(tag) == [{"role": "user", "content": "named by me"}]
    passed_on = {k: message[k] for k in ("type", "id", "role", "content")}
    create_ok(server, {"model": "a:up", "input": [passed_on, {"role": "user", "content": "ok"}]}, headers=A)
    assert httpx.delete(f"{server.url}/v1/responses/{first['id']}", headers=A).status_code == 200
    tag = _tag()
    ref = {"type": "item_reference", "id": message["id"]}
    create_ok(server, {"model": f"a?tag={tag}:up", "input": [ref]}, headers=A)
    assert upstream_messages(tag) == [{"role": "assistant", "content": "Hello from the mock upstream."}]


def test_delete(server: Server) -> None:
    response = create_ok(server, {"model": "m:mock", "input": "bye"}, headers=A)
    deleted = httpx.delete(f"{server.url}/v1/responses/{response['id']}", headers=A)
    assert deleted.status_code == 200
    assert deleted.json() == {"id": response["id"], "object": "response.deleted", "deleted": True}
    assert get(server, response["id"]).status_code == 404
    assert httpx.delete(f"{server.url}/v1/responses/{response['id']}", headers=A).status_code == 404
    follow = create(server, {"model": "m:mock", "input": "x", "previous_response_id": response["id"]}, headers=A)
    assert follow.status_code == 404


def _error_shape(response: httpx.Response, id: str, item: str) -> tuple[int, str]:
    return response.status_code, response.text.replace(id, "<id>").replace(item, "<item>")


def test_another_key_sees_nothing(server: Server) -> None:
    mine = create_ok(server, {"model": "m:mock", "input": "private"}, headers=A)
    [message] = mine["output"]
    rid, never = mine["id"], "resp_" + "0" * 48

    def attempts(id: str, item: str, headers: dict[str, str]) -> list[httpx.Response]:
        url = f"{server.url}/v1/responses/{id}"
        return [
            httpx.get(url, headers=headers),
            httpx.get(f"{url}/input_items", headers=headers),
            httpx.post(f"{url}/cancel", headers=headers),
            httpx.delete(url, headers=headers),
            create(server, {"model": "m:mock", "input": "x", "previous_response_id": id}, headers=headers),
            create(server, {"model": "m:mock", "input": [{"type": "item_reference", "id": item}]}, headers=headers),
        ]

    never_item = "msg_" + "0" * 48
    foreign = attempts(rid, message["id"], B)
    unknown = attempts(never, never_item, B)
    for theirs, nothing in zip(foreign, unknown, strict=True):
        assert theirs.status_code == 404
        # Byte for byte the answer for an id that never existed (ids aside).
        assert _error_shape(theirs, rid, message["id"]) == _error_shape(nothing, never, never_item)
        assert json.loads(theirs.text)["error"]["type"] == "not_found"
    # The owner still has it all (B's DELETE did nothing).
    assert get(server, rid).json() == mine
    assert get(server, f"{rid}/input_items").status_code == 200
    # Without a key: 401, before any lookup.
    assert httpx.get(f"{server.url}/v1/responses/{rid}").status_code == 401


def test_ids_are_not_guessable(server: Server) -> None:
    ids = [create_ok(server, {"model": "m:mock", "input": "x"}, headers=A)["id"] for _ in range(12)]
    assert len(set(ids)) == len(ids)
    for rid in ids:
        # The time in milliseconds (12 hex characters: ids sort by creation, which keeps the store's
        # inserts at the end of its indexes), then 144 random bits (DESIGN.md asks for at least 128).
        assert re.fullmatch(r"resp_[0-9a-f]{48}", rid)
        assert abs(int(rid[5:17], 16) / 1000 - time.time()) < 60
    # Not sequential: the random parts of consecutive ids share no long prefix.
    randoms = [rid[17:] for rid in ids]
    for a, b in itertools.pairwise(randoms):
        assert a[:6] != b[:6]
    # A neighbour of a real id is just another unknown id.
    last = ids[-1]
    neighbour = last[:-1] + ("0" if last[-1] != "0" else "1")
    assert get(server, neighbour).status_code == 404


def test_a_failed_stream_is_stored_as_failed(server: Server) -> None:
    body = {"model": "fixture:groq-gpt-oss-reasoning-then-event-error:up", "input": "x"}
    _, response = stream(server, body, headers=A)
    assert response["status"] == "failed"
    assert get(server, response["id"]).json()["status"] == "failed"


def test_a_stream_the_client_leaves_is_stored_as_cancelled(server: Server) -> None:
    body = {"model": "slow?drip=0.25:up", "input": "x", "stream": True}
    with httpx.stream("POST", f"{server.url}/v1/responses", json=body, headers=A, timeout=10) as r:
        first = next(r.iter_raw())
    rid = re.search(rb"resp_[0-9a-f]{48}", first)
    assert rid is not None
    deadline = time.monotonic() + 5
    status = None
    while time.monotonic() < deadline:
        got = get(server, rid.group().decode())
        assert got.status_code == 200, got.text  # (recorded `in_progress` when it was created)
        status = got.json()["status"]
        if status != "in_progress":  # (until the router sees the client gone)
            break
        time.sleep(0.05)
    assert status == "cancelled"


def test_a_streamed_background_response_is_kept_and_replayed(server: Server) -> None:
    body = {"model": "gen?drip=0.1:up", "input": "hi", "background": True, "stream": True}
    raw = b""
    with httpx.stream("POST", f"{server.url}/v1/responses", json=body, headers=A, timeout=30) as r:
        for chunk in r.iter_raw():
            raw += chunk
            if raw.count(b"\n\nevent: ") >= 3:
                break  # (hung up: the response runs on)
    first, _ = split_sse(raw)
    rid = first[0]["response"]["id"]
    # Followed while it runs (from this worker's log), then after (from the store): the same events.
    with httpx.stream("GET", f"{server.url}/v1/responses/{rid}?stream=true", headers=A, timeout=30) as r:
        live = r.read()
    events, response = check_stream(live)
    assert response["status"] == "completed" and events[: len(first)] == first
    after = get(server, f"{rid}?stream=true&starting_after={first[-1]['sequence_number']}")
    assert after.status_code == 200 and split_sse(after.content)[0] == events[len(first) :]
    assert get(server, f"{rid}?stream=true").content == live
    assert get(server, f"{rid}?stream=true", B).status_code == 404  # (another tenant)
    assert httpx.delete(f"{server.url}/v1/responses/{rid}", headers=A, timeout=10).status_code == 200
    assert get(server, f"{rid}?stream=true").status_code == 404
