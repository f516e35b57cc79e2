"""ResponsesTranslator: recorded OpenAI Responses streams (OpenAI, DeepSeek, LM Studio, OpenRouter) in, the router's
Open Responses SSE out.

Every output is checked with tests/support/grammar.py (the spec's grammar + openresponses-types) and compared with the
upstream's own final response (its terminal event), read the plain way: the same items, text and arguments.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

import ferroute
from tests.support.fixtures import fixture_files
from tests.support.grammar import check_stream
from tests.support.summaries import responses_summary as summarise

RESPONSES = fixture_files("responses")
RESPONSE_ID = "resp_" + "0" * 48
STRIP_TIME = re.compile(rb'"completed_at":\d+')


def translate(raw: bytes, chunk: int | None = None, **kwargs: Any) -> bytes:
    t = ferroute.ResponsesTranslator(**kwargs)
    pieces = [raw] if chunk is None else [raw[i : i + chunk] for i in range(0, len(raw), chunk)]
    return b"".join(t.feed(piece) for piece in pieces) + t.finish()


def upstream_final(raw: bytes) -> dict[str, Any]:
    """The upstream's terminal event (or its `error` event when it has none)."""
    final: dict[str, Any] = {}
    for line in raw.decode().splitlines():
        if line.startswith("data:") and line[5:].strip() not in ("", "[DONE]"):
            event = json.loads(line[5:])
            if event.get("type") in ("response.completed", "response.incomplete", "response.failed", "error"):
                final = event if event["type"] == "error" and not final else final
                if event["type"] != "error":
                    final = event
    return final


@pytest.mark.parametrize("path", RESPONSES, ids=lambda p: p.stem)
def test_recorded_streams_follow_the_grammar_and_the_upstreams_final_response(path: Path) -> None:
    raw = path.read_bytes()
    events, response = check_stream(translate(raw, response_id=RESPONSE_ID, created_at=1, model="m:openai"))
    assert response["id"] == RESPONSE_ID and response["model"] == "m:openai"
    final = upstream_final(raw)
    if final["type"] in ("error", "response.failed"):
        assert response["status"] == "failed"
        assert events[-2]["type"] == "error"
        return
    upstream = final["response"]
    assert response["status"] == upstream["status"]
    assert summarise(response["output"]) == summarise(upstream["output"])
    for key in ("input_tokens", "output_tokens", "total_tokens"):
        assert response["usage"][key] == upstream["usage"][key]
    # The router's own item ids, not the upstream's.
    assert all(
        item["id"].endswith(tuple("0123456789abcdef")) and RESPONSE_ID[5:] in item["id"] for item in response["output"]
    )


@pytest.mark.parametrize("path", RESPONSES, ids=lambda p: p.stem)
@pytest.mark.parametrize("chunk", [1, 9, 4096])
def test_any_chunking_and_crlf_give_the_same_stream(path: Path, chunk: int) -> None:
    raw = path.read_bytes()
    whole = translate(raw, response_id=RESPONSE_ID, created_at=1)
    split = translate(raw, chunk, response_id=RESPONSE_ID, created_at=1)
    crlf = translate(raw.replace(b"\n", b"\r\n"), chunk, response_id=RESPONSE_ID, created_at=1)
    assert STRIP_TIME.sub(b"", split) == STRIP_TIME.sub(b"", whole)
    assert STRIP_TIME.sub(b"", crlf) == STRIP_TIME.sub(b"", whole)


@pytest.mark.parametrize("path", RESPONSES, ids=lambda p: p.stem)
def test_a_stream_cut_anywhere_ends_cleanly(path: Path) -> None:
    raw = path.read_bytes()
    for cut in range(1, len(raw), max(1, len(raw) // 17)):
        _, response = check_stream(translate(raw[:cut]))
        assert response["status"] in ("failed", "completed", "incomplete")


def test_a_whole_response_converts_and_other_bodies_do_not() -> None:
    t = ferroute.ResponsesTranslator({"model": "gpt:openai", "input": "hi"}, created_at=1)
    body = {
        "id": "resp_upstream",
        "object": "response",
        "status": "completed",
        "output": [
            {"type": "reasoning", "id": "rs_x", "summary": [{"type": "summary_text", "text": "Plan."}],
             "encrypted_content": "gAAA"},
            {"type": "message", "id": "msg_x", "role": "assistant",
             "content": [{"type": "output_text", "text": "Done.", "annotations": []}]},
        ],
        "usage": {"input_tokens": 2, "output_tokens": 3, "total_tokens": 5},
    }  # fmt: skip
    response = json.loads(t.convert(json.dumps(body).encode()))
    assert response["id"] == t.response_id and response["model"] == "gpt:openai"
    assert summarise(response["output"]) == [("reasoning", ["Plan."], "", True), ("message", "Done.")]
    assert response["output"][0]["encrypted_content"] == "upstream-item:rs_x:gAAA"  # (the upstream's id kept with it)
    with pytest.raises(ferroute.UpstreamError):
        t.convert(b'{"choices": []}')
