"""`include: ["reasoning.encrypted_content"]` for clients that store nothing: the router seals the
reasoning, takes it back as input and opens it for the upstream; anything it did not seal is a 400."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any

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
    stream,
    upstream_config,
)

INCLUDE = ["reasoning.encrypted_content"]


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[Server, Server]]:
    """Two routers with different encryption keys (the second is "another deployment")."""
    config = upstream_config(shared_upstream().url, store_section("memory"))
    with contextlib.ExitStack() as stack:
        one = stack.enter_context(router(config, env={**ROUTER_ENV, "FERROUTE_ENCRYPTION_KEY": "key-one"}))
        two = stack.enter_context(router(config, env={**ROUTER_ENV, "FERROUTE_ENCRYPTION_KEY": "key-two"}))
        yield one, two


def _reasoning(response: dict[str, Any]) -> dict[str, Any]:
    [item] = [item for item in response["output"] if item["type"] == "reasoning"]
    return item


def _ask(server: Server, **extra: Any) -> dict[str, Any]:
    body = {"model": "m:mock", "input": "Think first", "reasoning": {"effort": "low"}, "store": False, **extra}
    return create_ok(server, body)


def test_round_trip(servers: tuple[Server, Server]) -> None:
    one, _ = servers
    response = _ask(one, include=INCLUDE)
    item = _reasoning(response)
    text = item["content"][0]["text"]
    assert item["encrypted_content"].startswith("ferroute1.")
    assert text not in item["encrypted_content"]
    # Sent back without its plain text: the blob alone carries it to the upstream.
    back = {"type": "reasoning", "id": item["id"], "summary": [], "encrypted_content": item["encrypted_content"]}
    [message] = [i for i in response["output"] if i["type"] == "message"]
    tag = f"r{time.monotonic_ns()}"
    body = {"model": f"x?tag={tag}:up", "store": False, "input": [{"role": "user", "content": "Think first"}, back,
            message, {"role": "user", "content": "next"}]}  # fmt: skip
    create_ok(one, body)
    [sent] = [r for r in requests_seen(shared_upstream()) if r["body"]["model"].endswith(tag)]
    assert sent["body"]["messages"][1] == {
        "role": "assistant",
        "reasoning_content": text,
        "content": message["content"][0]["text"],
    }


def test_without_include_there_is_no_blob(servers: tuple[Server, Server]) -> None:
    assert "encrypted_content" not in _reasoning(_ask(servers[0]))


def test_streams_carry_the_same_blob_in_item_done_and_the_terminal_event(servers: tuple[Server, Server]) -> None:
    body = {"model": "m:mock", "input": "Think", "reasoning": {"effort": "low"}, "store": False, "include": INCLUDE}
    events, response = stream(servers[0], body)
    [done] = [e for e in events if e["type"] == "response.output_item.done" and e["item"]["type"] == "reasoning"]
    blob = done["item"]["encrypted_content"]
    assert blob.startswith("ferroute1.")
    assert _reasoning(response)["encrypted_content"] == blob
    plain, _ = stream(servers[0], {**body, "include": []})
    assert all("encrypted_content" not in e.get("item", {}) for e in plain)


def test_tampered_or_foreign_blobs_are_400(servers: tuple[Server, Server]) -> None:
    one, two = servers
    blob = _reasoning(_ask(one, include=INCLUDE))["encrypted_content"]
    flipped = blob[:-3] + ("A" if blob[-3] != "A" else "B") + blob[-2:]
    foreign = _reasoning(_ask(two, include=INCLUDE))["encrypted_content"]
    for bad in (flipped, foreign, "not-ours", "ferroute1.!!!"):
        item = {"type": "reasoning", "summary": [], "encrypted_content": bad}
        response = create(one, {"model": "m:mock", "store": False, "input": [{"role": "user", "content": "q"}, item]})
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert error["param"] == "input[1].encrypted_content"
        assert error["code"] == "invalid_encrypted_content"
