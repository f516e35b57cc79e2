"""OpenTelemetry traces (`[telemetry]`) through a real `ferroute serve`, its spans read by a local OTLP/HTTP receiver
(`tests/support/otlp.py`): the response span and its attempt and tool children, the W3C trace context continued
from the client and passed upstream, no content unless asked for, the flush at shutdown, and nothing of
OpenTelemetry imported when tracing is off."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from typing import Any

import pytest
from websockets.sync.client import connect

from tests.support.otlp import Receiver, Span, otlp_receiver
from tests.support.servers import (
    REPO,
    ROUTER_ENV,
    Server,
    create,
    create_ok,
    requests_seen,
    router,
    shared_upstream,
    stream,
    upstream_config,
)
from tests.support.tools import CALC, tools_config

FIXTURE = "fixture:openai-gpt-4o-mini-text-usage"
SERVER, CLIENT, INTERNAL = 2, 3, 1  # OTLP's span kinds
FAST_EXPORT = {"OTEL_BSP_SCHEDULE_DELAY": "50"}  # ms between the batch processor's exports


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    with otlp_receiver() as receiver:
        yield receiver


def telemetry(receiver: Receiver, extra: str = "") -> str:
    return f'\n[telemetry]\notlp_endpoint = "{receiver.url}"\n{extra}\n'


@pytest.fixture(scope="module")
def server(receiver: Receiver) -> Iterator[Server]:
    config = upstream_config(shared_upstream().url) + telemetry(receiver)
    with router(config, env={**ROUTER_ENV, **FAST_EXPORT}, extra_args=["--workers", "2"]) as server:
        yield server


def traceparent() -> tuple[str, str, str]:
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    return f"00-{trace_id}-{span_id}-01", trace_id, span_id


def of_trace(receiver: Receiver, trace_id: str, count: int) -> list[Span]:
    spans = receiver.wait_for(lambda spans: len([s for s in spans if s.trace_id == trace_id]) >= count)
    return [s for s in spans if s.trace_id == trace_id]


def seen_by_upstream(tag: str) -> dict[str, Any]:
    [request] = [r for r in requests_seen(shared_upstream()) if tag in r["body"]["model"]]
    return request


@pytest.mark.parametrize("streamed", [True, False], ids=["stream", "whole"])
def test_a_response_span_continues_the_callers_trace_and_the_upstream_sees_its_attempt(
    server: Server, receiver: Receiver, streamed: bool
) -> None:
    header, trace_id, caller_span = traceparent()
    tag = secrets.token_hex(4)
    model = f"{FIXTURE}?tag={tag}:up"
    body = {"model": model, "input": "What is the capital of the UK?"}
    if streamed:
        _, response = stream(server, body, headers={"traceparent": header})
    else:
        response = create_ok(server, body, headers={"traceparent": header})
    [top, attempt] = sorted(of_trace(receiver, trace_id, 2), key=lambda s: s.kind)  # SERVER, CLIENT
    assert top.name == f"chat {model}" and top.kind == SERVER and top.parent_id == caller_span
    upstream_model = f"{FIXTURE}?tag={tag}"
    usage = response["usage"]
    assert top.attributes == {
        "gen_ai.operation.name": "chat",
        "gen_ai.request.model": model,
        "gen_ai.response.model": upstream_model,
        "gen_ai.provider.name": "openai",
        "ferroute.provider": "up",
        "server.address": "127.0.0.1",
        "server.port": int(shared_upstream().url.rsplit(":", 1)[1]),
        "gen_ai.response.id": response["id"],
        "gen_ai.response.finish_reasons": ["stop"],
        "ferroute.response.status": "completed",
        "gen_ai.usage.input_tokens": usage["input_tokens"],
        "gen_ai.usage.output_tokens": usage["output_tokens"],
        "http.response.status_code": 200,
    }
    assert top.resource["service.name"] == "ferroute"
    # The attempt: a CLIENT child of the response span, whose context the upstream request carried.
    assert attempt.name == f"chat {upstream_model}" and attempt.parent_id == top.span_id
    assert attempt.attributes["ferroute.target"] == f"{upstream_model}:up"
    assert attempt.attributes["ferroute.retry"] == 0 and attempt.attributes["ferroute.outcome"] == "ok"
    if streamed:
        assert attempt.attributes["ferroute.time_to_first_event"] > 0
    headers = dict(seen_by_upstream(tag)["headers"])
    assert headers["traceparent"] == f"00-{trace_id}-{attempt.span_id}-01"


def test_no_content_in_spans_unless_asked_for(receiver: Receiver) -> None:
    prompt = f"Tell me about the word {secrets.token_hex(6)}"
    config = upstream_config(shared_upstream().url) + telemetry(receiver)
    with router(config, env={**ROUTER_ENV, **FAST_EXPORT}) as plain:
        header, trace_id, _ = traceparent()
        response = create_ok(plain, {"model": f"{FIXTURE}:up", "input": prompt}, headers={"traceparent": header})
        spans = of_trace(receiver, trace_id, 2)
    answer = response["output"][0]["content"][0]["text"]
    words = json.dumps([s.attributes for s in spans])
    assert prompt not in words and answer not in words
    assert not any(prompt.encode() in body for body in receiver.raw)

    config = upstream_config(shared_upstream().url) + telemetry(receiver, "capture_content = true")
    with router(config, env={**ROUTER_ENV, **FAST_EXPORT}) as capturing:
        header, trace_id, _ = traceparent()
        body = {"model": f"{FIXTURE}:up", "input": prompt, "instructions": "Be brief."}
        response = create_ok(capturing, body, headers={"traceparent": header})
        [top] = [s for s in of_trace(receiver, trace_id, 2) if s.kind == SERVER]
    assert json.loads(top.attributes["gen_ai.input.messages"]) == [
        {"role": "user", "parts": [{"type": "text", "content": prompt}]}
    ]
    assert json.loads(top.attributes["gen_ai.system_instructions"]) == [{"type": "text", "content": "Be brief."}]
    output = json.loads(top.attributes["gen_ai.output.messages"])
    assert output == [
        {"role": "assistant", "parts": [{"type": "text", "content": response["output"][0]["content"][0]["text"]}]}
    ]


def test_a_failed_upstream_is_an_error_span(server: Server, receiver: Receiver) -> None:
    header, trace_id, _ = traceparent()
    answer = create(server, {"model": "status:503:up", "input": "hi"}, headers={"traceparent": header})
    assert answer.status_code == 502
    [top, attempt] = sorted(of_trace(receiver, trace_id, 2), key=lambda s: s.kind)
    code = answer.json()["error"]["code"]
    assert top.attributes["error.type"] == code and top.status_code == 2
    assert top.attributes["http.response.status_code"] == 502
    assert "gen_ai.response.id" in top.attributes  # (the exchange was made; nothing reached the client)
    assert attempt.attributes["ferroute.outcome"] == code == attempt.attributes["error.type"]
    assert attempt.status_code == 2
    assert "upstream-secret-detail" not in top.status_message + attempt.status_message


def test_a_request_without_traceparent_starts_a_trace(server: Server, receiver: Receiver) -> None:
    tag = secrets.token_hex(4)
    create_ok(server, {"model": f"{FIXTURE}?tag={tag}:up", "input": "hi"})
    header = dict(seen_by_upstream(tag)["headers"])["traceparent"]
    trace_id = header.split("-")[1]
    [top, attempt] = sorted(of_trace(receiver, trace_id, 2), key=lambda s: s.kind)
    assert top.parent_id == "" and attempt.parent_id == top.span_id
    # (A new trace's flags may also carry W3C level 2's "random trace id" bit.)
    assert header.startswith(f"00-{trace_id}-{attempt.span_id}-") and int(header[-2:], 16) & 1


@pytest.mark.parametrize("streamed", [False, True], ids=["whole", "stream"])
def test_a_background_responses_span_ends_with_its_job(server: Server, receiver: Receiver, streamed: bool) -> None:
    header, trace_id, caller_span = traceparent()
    tag = secrets.token_hex(4)
    model = f"{FIXTURE}?delay=0.5&tag={tag}:up"
    body = {"model": model, "input": "hi", "background": True}
    if streamed:  # (the creating client follows the job's events to the end)
        events, queued = stream(server, body, headers={"traceparent": header})
        assert events[0]["type"] == "response.created" and queued["status"] == "completed"
    else:
        queued = create_ok(server, body, headers={"traceparent": header})
        assert queued["status"] in ("queued", "in_progress")
    [top, attempt] = sorted(of_trace(receiver, trace_id, 2), key=lambda s: s.kind)
    # The span is the response's whole life: what it became, its usage, its attempt, after the upstream's delay.
    assert top.parent_id == caller_span and top.attributes["gen_ai.response.id"] == queued["id"]
    assert top.attributes["ferroute.response.status"] == "completed"
    assert top.attributes["gen_ai.usage.output_tokens"] > 0 and top.attributes["http.response.status_code"] == 200
    assert attempt.parent_id == top.span_id and attempt.attributes["ferroute.outcome"] == "ok"
    assert top.end_ns >= attempt.end_ns and top.end_ns - top.start_ns >= 500_000_000
    time.sleep(0.3)  # (and it is the only one: none was sent when the request was answered)
    assert len([s for s in receiver.spans if s.trace_id == trace_id]) == 2


def test_websocket_responses_are_children_of_the_handshakes_traceparent(server: Server, receiver: Receiver) -> None:
    header, trace_id, caller_span = traceparent()
    url = server.url.replace("http://", "ws://", 1) + "/v1/responses"
    with connect(url, additional_headers={"traceparent": header}) as ws:
        for _ in range(2):
            ws.send(json.dumps({"type": "response.create", "model": f"{FIXTURE}:up", "input": "hi"}))
            while json.loads(ws.recv(timeout=30))["type"] != "response.completed":
                pass
    spans = of_trace(receiver, trace_id, 4)
    tops = [s for s in spans if s.kind == SERVER]
    assert len(tops) == 2 and all(s.parent_id == caller_span for s in tops)
    attempts = [s for s in spans if s.kind == CLIENT]
    assert sorted(s.parent_id for s in attempts) == sorted(s.span_id for s in tops)


def test_tool_calls_and_a_sub_agents_nested_response(receiver: Receiver) -> None:
    config = tools_config() + telemetry(receiver)
    task = 'call add {"a": 20, "b": 22}'
    helper = {"type": "ferroute:agent", "name": "helper", "model": "agent:up", "tools": [CALC]}
    body = {"model": "agent:up", "input": f"call helper {json.dumps({'task': task})}", "tools": [helper]}
    with router(config, env={**ROUTER_ENV, **FAST_EXPORT}) as tools:
        header, trace_id, caller_span = traceparent()
        create_ok(tools, body, headers={"traceparent": header})
        # top, 2 turns; helper tool; nested response, its 2 turns, its add tool
        spans = of_trace(receiver, trace_id, 8)
    [top] = [s for s in spans if s.parent_id == caller_span]
    [helper_call] = [s for s in spans if s.name == "execute_tool helper"]
    assert helper_call.kind == INTERNAL and helper_call.parent_id == top.span_id
    assert helper_call.attributes["gen_ai.operation.name"] == "execute_tool"
    assert helper_call.attributes["gen_ai.tool.name"] == "helper"
    assert helper_call.attributes["gen_ai.tool.call.id"]
    [nested] = [s for s in spans if s.parent_id == helper_call.span_id]
    assert nested.name == "chat agent:up" and nested.kind == INTERNAL
    [add] = [s for s in spans if s.name == "execute_tool add"]
    assert add.parent_id == nested.span_id and add.attributes["ferroute.mcp.server"] == "calc"
    turns = [s for s in spans if s.kind == CLIENT]
    assert sorted(s.parent_id for s in turns) == sorted([top.span_id] * 2 + [nested.span_id] * 2)


def test_the_standard_variables_turn_it_on_and_shutdown_flushes(receiver: Receiver) -> None:
    """`OTEL_EXPORTER_OTLP_ENDPOINT` and `OTEL_SERVICE_NAME`, with no `[telemetry]`; the batch processor's interval
    is longer than the test, so the spans arrive only by the flush at the worker's shutdown."""
    env = {
        **ROUTER_ENV,
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url,
        "OTEL_SERVICE_NAME": "router-under-test",
        "OTEL_BSP_SCHEDULE_DELAY": "600000",
    }
    header, trace_id, _ = traceparent()
    with router(upstream_config(shared_upstream().url), env=env) as server:
        create_ok(server, {"model": f"{FIXTURE}:up", "input": "hi"}, headers={"traceparent": header})
        assert not [s for s in receiver.spans if s.trace_id == trace_id]
    spans = of_trace(receiver, trace_id, 2)
    assert {s.resource["service.name"] for s in spans} == {"router-under-test"}


def test_off_no_opentelemetry_is_imported() -> None:
    """With no endpoint, building the app and serving requests (whole, streamed) imports nothing of OpenTelemetry
    (run in a fresh interpreter: this one has the receiver's protobuf modules)."""
    script = textwrap.dedent(
        """
        import asyncio, sys
        from tests.support.inprocess import call, mock_app
        app = mock_app()
        assert app.telemetry is None
        async def run():
            app.startup()
            for stream in (False, True):
                status, _ = await call(app, {"model": "m:p", "input": "hi", "stream": stream})
                assert status == 200, status
            await app.shutdown()
        asyncio.run(run())
        loaded = sorted(name for name in sys.modules if name.startswith(("opentelemetry", "google.protobuf")))
        print(loaded)
        assert not loaded, loaded
        """
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "[]"


def test_a_caller_that_does_not_sample_gets_no_spans_but_its_context_goes_upstream(
    server: Server, receiver: Receiver
) -> None:
    # The default sampler follows the parent: a `traceparent` with flags 00 says "not sampled". Nothing is recorded,
    # and the upstream still gets the trace (not sampled either), as W3C Trace Context asks.
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    tag = secrets.token_hex(4)
    for _ in range(2):  # (both workers, most likely)
        create_ok(
            server,
            {"model": f"{FIXTURE}?tag={tag}:up", "input": "hi"},
            headers={"traceparent": f"00-{trace_id}-{span_id}-00"},
        )
    [first, *_] = [r for r in requests_seen(shared_upstream()) if tag in r["body"]["model"]]
    version, upstream_trace, _, flags = first["headers"]["traceparent"].split("-")
    assert (version, upstream_trace, flags) == ("00", trace_id, "00")
    # A sampled request after them is exported; theirs never are.
    header, sampled, _ = traceparent()
    create_ok(server, {"model": f"{FIXTURE}?tag={tag}:up", "input": "hi"}, headers={"traceparent": header})
    of_trace(receiver, sampled, 2)
    assert not [s for s in receiver.spans if s.trace_id == trace_id]


def test_a_hedged_response_has_both_attempts_and_the_loser_is_cancelled(receiver: Receiver) -> None:
    tag = secrets.token_hex(4)
    slow, fast = f"gen?delay=3&tag={tag}", f"gen?tag={tag}"
    route = f'\n[[routes]]\nname = "hedged"\nhedge_after = 0.3\ntargets = ["{slow}:up", "{fast}:anth"]\n'
    config = upstream_config(shared_upstream().url) + route + telemetry(receiver)
    with router(config, env={**ROUTER_ENV, **FAST_EXPORT}) as server:
        header, trace_id, _ = traceparent()
        _, response = stream(server, {"model": "hedged", "input": "hi"}, headers={"traceparent": header})
        spans = of_trace(receiver, trace_id, 3)
    assert response["status"] == "completed"
    [top] = [s for s in spans if s.kind == SERVER]
    attempts = {s.attributes["ferroute.target"]: s for s in spans if s.kind == CLIENT}
    assert set(attempts) == {f"{slow}:up", f"{fast}:anth"}
    assert all(s.parent_id == top.span_id for s in attempts.values())
    assert attempts[f"{fast}:anth"].attributes["ferroute.outcome"] == "ok"
    assert attempts[f"{slow}:up"].attributes["ferroute.outcome"] == "cancelled"
    assert top.attributes["gen_ai.provider.name"] == "anthropic" and top.attributes["ferroute.provider"] == "anth"
    # Each upstream request carried its own attempt's context.
    seen = {r["body"]["model"]: r["headers"]["traceparent"] for r in requests_seen(shared_upstream())
            if tag in r["body"]["model"]}  # fmt: skip
    assert seen == {m: f"00-{trace_id}-{attempts[f'{m}:{p}'].span_id}-01" for m, p in ((slow, "up"), (fast, "anth"))}


def test_a_hedged_tool_loop_call_has_both_attempts(receiver: Receiver) -> None:
    # The loop's first call is slow at its first target: the hedge answers and the slow one is cancelled; the loop's
    # second call goes where the winner is. Each upstream call is an attempt of the response, the tool call a span.
    tag = secrets.token_hex(4)
    slow, fast = f"agent?delay=3&tag={tag}", f"agent?tag={tag}"
    route = f'\n[[routes]]\nname = "hedged-loop"\nhedge_after = 0.3\ntargets = ["{slow}:up", "{fast}:anth"]\n'
    config = tools_config() + route + telemetry(receiver)
    body = {"model": "hedged-loop", "input": 'call add {"a": 2, "b": 3}', "tools": [CALC]}
    with router(config, env={**ROUTER_ENV, **FAST_EXPORT}) as server:
        header, trace_id, _ = traceparent()
        _, response = stream(server, body, headers={"traceparent": header})
        spans = of_trace(receiver, trace_id, 5)  # the response, 3 upstream calls, the tool call
    assert response["status"] == "completed"
    [top] = [s for s in spans if s.kind == SERVER]
    attempts = [s for s in spans if s.kind == CLIENT]
    assert all(s.parent_id == top.span_id for s in attempts)
    outcomes = sorted((s.attributes["ferroute.target"], s.attributes["ferroute.outcome"]) for s in attempts)
    assert outcomes == [(f"{slow}:up", "cancelled"), (f"{fast}:anth", "ok"), (f"{fast}:anth", "ok")]
    [add] = [s for s in spans if s.name == "execute_tool add"]
    assert add.parent_id == top.span_id
    assert top.attributes["ferroute.provider"] == "anth"
