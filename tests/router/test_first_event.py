"""An upstream that sends only keep-alives (SSE comments, blank lines, Anthropic's `ping` events) has not sent its
first event: the request fails at `timeouts.first_event`, streamed or not, for every upstream dialect."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from tests.support.grammar import check_stream
from tests.support.servers import Server, router, shared_upstream

FIRST_EVENT = 1.0


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    upstream = shared_upstream().url
    timeouts = f"timeouts = {{ connect = 2, first_event = {FIRST_EVENT}, idle = 30 }}"
    config = f"""
[server]
keepalive_interval = 0.3

[store]
backend = "memory"

[[providers]]
name = "chat"
kind = "chat_completions"
base_url = "{upstream}/v1"
{timeouts}

[[providers]]
name = "anth"
kind = "anthropic"
base_url = "{upstream}/v1"
{timeouts}

[[providers]]
name = "oai"
kind = "responses"
base_url = "{upstream}/v1"
{timeouts}
"""
    with router(config) as running:
        yield running


@pytest.mark.parametrize("provider", ["chat", "anth", "oai"])
def test_keep_alives_alone_are_no_first_event_without_a_stream(server: Server, provider: str) -> None:
    began = time.monotonic()
    response = httpx.post(
        f"{server.url}/v1/responses", json={"model": f"keepalives:{provider}", "input": "hi"}, timeout=30
    )
    took = time.monotonic() - began
    assert response.status_code == 504, response.text
    assert response.json()["error"]["code"] == "upstream_timeout"
    assert "waiting for the first event" in response.json()["error"]["message"]
    assert FIRST_EVENT * 0.9 <= took < FIRST_EVENT + 2, took


@pytest.mark.parametrize("provider", ["chat", "anth", "oai"])
def test_keep_alives_alone_are_no_first_event_in_a_stream(server: Server, provider: str) -> None:
    began = time.monotonic()
    body = {"model": f"keepalives:{provider}", "input": "hi", "stream": True}
    with httpx.stream("POST", f"{server.url}/v1/responses", json=body, timeout=30) as r:
        raw = r.read()
    took = time.monotonic() - began
    assert r.status_code == 200  # (the router's own keep-alives had started the stream)
    _, response = check_stream(raw)
    assert response["status"] == "failed"
    assert response["error"]["code"] == "upstream_timeout"
    assert FIRST_EVENT * 0.9 <= took < FIRST_EVENT + 2, took
