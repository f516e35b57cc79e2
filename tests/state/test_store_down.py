"""The store down is an answer, not a surprise: with `store: true` and the store unreachable, a response is served
(by default) and says `"store": false`, the failures are counted in `/metrics` and logged once per outage; with
`[store] on_error = "fail"` the router answers 503 `store_unavailable` with Retry-After before any upstream call.
SQLite (a file that cannot be opened) and Redis (a server stopped mid-run), streamed and not."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Iterator
from contextlib import ExitStack

import httpx
import pytest

from ferroute.app import App
from ferroute.config import parse_settings
from ferroute.errors import upstream_status
from ferroute.models import ResponsesRequest
from ferroute.providers import Provider, Upstream
from ferroute.providers.chat_completions import ChatCompletionsDialect
from ferroute.store.crypto import ReasoningCipher
from ferroute.store.memory import MemoryStore
from tests.support.grammar import check_stream
from tests.support.inprocess import Scripted, call
from tests.support.servers import Server, redis_server, requests_seen, router, shared_upstream

MODEL = "fixture:openai-gpt-4o-mini-text-usage:up"


def _config(store: str, on_error: str) -> str:
    return f"""
[store]
{store}
on_error = "{on_error}"

[[providers]]
name = "up"
kind = "chat_completions"
base_url = "{shared_upstream().url}/v1"
"""


@pytest.fixture(params=["sqlite", "redis"])
def down_store(request: pytest.FixtureRequest) -> Iterator[str]:
    """A `[store]` table whose store cannot be reached once the router runs (redis: stopped after the start)."""
    if request.param == "sqlite":
        yield 'backend = "sqlite"\npath = "/nonexistent-ferroute-dir/responses.sqlite3"'
        return
    with ExitStack() as stack:
        redis = stack.enter_context(redis_server())
        redis.process.terminate()
        redis.process.wait(timeout=10)
        yield f'backend = "redis"\nurl = "{redis.url}"'


def _write_errors(server: Server) -> int:
    metrics = httpx.get(f"{server.url}/metrics", timeout=5).text
    match = re.search(r'ferroute_store_errors_total\{op="write"\} (\d+)', metrics)
    return int(match.group(1)) if match else 0


def test_served_responses_say_they_were_not_stored(down_store: str) -> None:
    with router(_config(down_store, "serve")) as server, httpx.Client(base_url=server.url, timeout=30) as client:
        whole = client.post("/v1/responses", json={"model": MODEL, "input": "hi"})
        assert whole.status_code == 200, whole.text
        assert whole.json()["status"] == "completed"
        assert whole.json()["store"] is False
        with client.stream("POST", "/v1/responses", json={"model": MODEL, "input": "hi", "stream": True}) as r:
            raw = r.read()
        events, response = check_stream(raw)
        assert response["status"] == "completed" and response["store"] is False
        assert events[0]["response"]["store"] is True  # (it was meant to be stored: only the end can say)
        got = client.get(f"/v1/responses/{response['id']}")
        assert got.status_code == 503 and got.json()["error"]["code"] == "store_unavailable"
        assert got.headers["retry-after"]
        assert _write_errors(server) >= 2
        time.sleep(0.5)
        log = server.log()
    failures = [line for line in log.splitlines() if "store write failed" in line]
    assert len(failures) == 1, failures  # (logged once for the outage; the rest are counted)


def test_on_error_fail_answers_503_before_any_upstream_call(down_store: str) -> None:
    upstream = shared_upstream()
    with router(_config(down_store, "fail")) as server:
        before = len(requests_seen(upstream))
        for stream in (False, True):
            response = httpx.post(
                f"{server.url}/v1/responses", json={"model": MODEL, "input": "hi", "stream": stream}, timeout=30
            )
            assert response.status_code == 503, response.text
            assert response.json()["error"]["code"] == "store_unavailable"
            assert response.headers["retry-after"] == "5"
        assert len(requests_seen(upstream)) == before, "nothing may go upstream"
        # A request that stores nothing is served all the same.
        unstored = httpx.post(f"{server.url}/v1/responses", json={"model": MODEL, "input": "hi", "store": False})
        assert unstored.status_code == 200
        assert json.loads(unstored.content)["store"] is False


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_on_error_fail_keeps_no_record_of_a_request_the_upstream_refused(stream: bool) -> None:
    """The record written before the upstream call goes again when the answer is an HTTP error (the client never
    saw the id): nothing is left `in_progress`, its heartbeat renewed for ever. (In-process: the app's parts seen.)"""
    settings = parse_settings(
        '[store]\nbackend = "memory"\non_error = "fail"\n[[providers]]\nname = "p"\nkind = "mock"\n'
    )
    config = settings.providers[0]
    written: list[str] = []

    async def refuse(request: ResponsesRequest, upstream_model: str, transport: httpx.AsyncBaseTransport) -> Upstream:
        written.extend(id for _, id in store.records)  # (the record was written before the upstream call)
        raise upstream_status("p", 429, "7")

    store = MemoryStore()
    provider = Provider(config, ChatCompletionsDialect(config), Scripted(refuse), settings.timeouts)
    app = App(settings, providers={"p": provider}, store=store, cipher=ReasoningCipher("test"))
    status, _ = asyncio.run(call(app, {"model": "m", "input": "hi", "stream": stream}))
    assert status == 429
    assert written, "on_error = fail writes the record before the upstream call"
    assert not store.records, "and it goes when the upstream refuses"
    assert not app.records.heartbeat.live
