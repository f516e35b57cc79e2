"""`ferroute.ResponseEventParser`: Open Responses SSE bytes from any server → checked event dicts + the response."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path
from typing import Any

import pytest

import ferroute
from tests.support.fixtures import fixture_files
from tests.support.grammar import EVENT_MODELS

FIXTURES = fixture_files("responses")

# The legacy names real servers send, validated against the spec's model for the same shape.
LEGACY = {
    "response.reasoning_text.delta": "response.reasoning.delta",
    "response.reasoning_text.done": "response.reasoning.done",
}
# Servers whose response objects omit fields the spec requires (completed_at, presence_penalty, …): their
# `response` snapshots are not the parser's to fix, so events carrying one are not validated for them.
INCOMPLETE_RESPONSE_OBJECTS = {"openai-error-then-response-failed.sse", "openrouter-gpt-oss-reasoning-text.sse"}


def reference_events(raw: bytes) -> list[dict[str, Any]]:
    """`json.loads` of each event's data, split out by a few lines of Python (enough for the fixtures)."""
    events = []
    for block in raw.decode().replace("\r\n", "\n").split("\n\n"):
        data = [line[5:].removeprefix(" ") for line in block.split("\n") if line.startswith("data:")]
        if data and data != ["[DONE]"]:
            events.append(json.loads("\n".join(data)))
    return events


def parse(chunks: list[bytes], **kwargs: int) -> tuple[list[dict[str, Any]], ferroute.ResponseEventParser]:
    parser = ferroute.ResponseEventParser(**kwargs)
    events = []
    for chunk in chunks:
        events += parser.feed(chunk)
    parser.close()
    return events, parser


def split(raw: bytes, size: int | None) -> list[bytes]:
    if size is None:
        return [raw]
    return [raw[i : i + size] for i in range(0, len(raw), size)]


@pytest.mark.parametrize("size", [None, 1, 4096], ids=["whole", "1B", "4KiB"])
@pytest.mark.parametrize("path", FIXTURES, ids=[p.name for p in FIXTURES])
def test_recorded_streams(path: Path, size: int | None) -> None:
    raw = path.read_bytes()
    events, parser = parse(split(raw, size))
    expected = reference_events(raw)
    assert events == expected
    assert events[-1]["type"] in {"response.completed", "response.incomplete", "response.failed"}
    assert parser.response == events[-1]["response"]


def test_eight_recorded_streams() -> None:
    assert len(FIXTURES) == 8


@pytest.mark.parametrize("path", FIXTURES, ids=[p.name for p in FIXTURES])
def test_recorded_events_validate_with_openresponses_types(path: Path) -> None:
    events, _ = parse([path.read_bytes()])
    for event in events:
        kind = LEGACY.get(event["type"], event["type"])
        if "response" in event and path.name in INCOMPLETE_RESPONSE_OBJECTS:
            continue
        EVENT_MODELS[kind].model_validate({**event, "type": kind})


def test_response_accumulates_while_streaming() -> None:
    raw = (FIXTURES[0].parent / "openai-gpt-5-reasoning-summary-text.sse").read_bytes()
    frames = [frame + b"\n\n" for frame in raw.split(b"\n\n") if frame]
    parser = ferroute.ResponseEventParser()
    assert parser.response is None
    summary, text = "", ""
    for frame in frames:
        (event,) = parser.feed(frame)
        response = parser.response
        assert response is parser.response, "the built dict is cached until the state changes"
        if event["type"] == "response.reasoning_summary_text.delta":
            summary += event["delta"]
            assert response["output"][0]["summary"][0]["text"] == summary
        elif event["type"] == "response.output_text.delta":
            text += event["delta"]
            assert response["output"][1]["content"][0]["text"] == text
            assert response["output"][1]["status"] == "in_progress"
        elif event["type"] == "response.output_item.done":
            assert response["output"][event["output_index"]] == event["item"]
        elif event["type"] == "response.in_progress":
            assert response == event["response"]
    assert parser.response == event["response"]
    assert parser.response["output"][1]["content"][0]["text"] == text
    parser.close()


def test_function_call_arguments_accumulate() -> None:
    raw = (FIXTURES[0].parent / "deepseek-v4-reasoning-text-function-call.sse").read_bytes()
    before_done = raw[: raw.index(b"event: response.function_call_arguments.done")]
    parser = ferroute.ResponseEventParser()
    parser.feed(before_done)
    assert parser.response is not None
    assert parser.response["output"][1]["arguments"] == '{"city": "Tokyo"}'
    assert parser.response["output"][0]["content"][0]["text"].startswith("The user asks about temperature")


# --- malformed streams --------------------------------------------------------------------------------------------


def frame(event: dict[str, Any]) -> bytes:
    return f"event: {event['type']}\ndata: {json.dumps(event)}\n\n".encode()


def number(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{**event, "sequence_number": n} for n, event in enumerate(events)]


RESPONSE = {"id": "resp_1", "object": "response", "status": "in_progress", "output": []}
MSG = {"id": "msg_1", "type": "message", "role": "assistant", "status": "in_progress", "content": []}
AT = {"item_id": "msg_1", "output_index": 0, "content_index": 0}
PART = {"type": "output_text", "text": "", "annotations": []}
DONE_PART = {**PART, "text": "Hi there"}
DONE_MSG = {**MSG, "status": "completed", "content": [DONE_PART]}


def good_events() -> list[dict[str, Any]]:
    return number(
        [
            {"type": "response.created", "response": RESPONSE},
            {"type": "response.in_progress", "response": RESPONSE},
            {"type": "response.output_item.added", "output_index": 0, "item": MSG},
            {"type": "response.content_part.added", **AT, "part": PART},
            {"type": "response.output_text.delta", **AT, "delta": "Hi"},
            {"type": "response.output_text.delta", **AT, "delta": " there"},
            {"type": "response.output_text.done", **AT, "text": "Hi there"},
            {"type": "response.content_part.done", **AT, "part": DONE_PART},
            {"type": "response.output_item.done", "output_index": 0, "item": DONE_MSG},
            {"type": "response.completed", "response": {**RESPONSE, "status": "completed", "output": [DONE_MSG]}},
        ]
    )


def stream(events: list[dict[str, Any]]) -> bytes:
    return b"".join(frame(event) for event in events)


def error_of(raw: bytes) -> str:
    """The StreamError message a stream raises (fed whole, then closed)."""

    def feed_and_close() -> None:
        parser = ferroute.ResponseEventParser()
        parser.feed(raw)
        parser.close()

    with pytest.raises(ferroute.StreamError) as info:
        feed_and_close()
    return str(info.value)


def offset_of(raw: bytes, event: dict[str, Any]) -> int:
    return raw.index(json.dumps(event).encode())


def test_good_stream() -> None:
    events, parser = parse([stream(good_events()) + b"data: [DONE]\n\n"])
    assert events == good_events()
    assert parser.response == good_events()[-1]["response"]


def test_sequence_gap() -> None:
    events = good_events()
    events[4]["sequence_number"] = 5
    raw = stream(events)
    message = error_of(raw)
    assert message.startswith("sequence_number 5 where 4 was expected (gap)")
    assert f"event #4, sequence_number 5, byte {offset_of(raw, events[4])}" in message


def test_sequence_duplicate() -> None:
    events = good_events()
    events[4]["sequence_number"] = 3
    assert "sequence_number 3 where 4 was expected (duplicate or out of order)" in error_of(stream(events))


def test_missing_sequence_number() -> None:
    events = good_events()
    del events[2]["sequence_number"]
    assert 'no integer "sequence_number" (event #2' in error_of(stream(events))


def test_delta_for_unknown_output_index() -> None:
    events = good_events()
    events[4]["output_index"] = 7
    message = error_of(stream(events))
    assert re.search(r"response.output_text.delta for an unknown item \(output_index 7, item_id \"msg_1\"\)", message)
    assert "event #4" in message


def test_delta_for_unknown_item_id() -> None:
    events = good_events()
    del events[4]["output_index"]
    events[4]["item_id"] = "msg_nope"
    assert 'unknown item (item_id "msg_nope")' in error_of(stream(events))
    events = good_events()
    events[4]["item_id"] = "msg_nope"
    assert 'has item_id "msg_nope" but output item 0 is "msg_1"' in error_of(stream(events))


def test_delta_outside_an_open_part() -> None:
    events = good_events()
    del events[3]  # no content_part.added
    message = error_of(stream(number(events)))
    assert message.startswith("delta outside an open part: response.output_text.delta for output item 0")
    assert "event #3, sequence_number 3" in message


def test_done_text_not_matching_deltas() -> None:
    events = good_events()
    events[6]["text"] = "Hi their"
    message = error_of(stream(events))
    assert 'response.output_text.done for output item 0 carries "Hi their"' in message
    assert 'the deltas before it make "Hi there"' in message
    assert "event #6" in message


def test_second_terminal_event() -> None:
    events = good_events()
    events.append({**events[-1], "sequence_number": len(events)})
    message = error_of(stream(events))
    assert "second terminal event response.completed (after response.completed)" in message
    assert "event #10" in message


def test_event_after_terminal() -> None:
    events = [*good_events(), {"type": "ferroute:note", "sequence_number": 10}]
    assert "ferroute:note after the terminal event response.completed (event #10" in error_of(stream(events))


def test_done_before_terminal() -> None:
    raw = stream(good_events()[:5]) + b"data: [DONE]\n\n"
    assert "data: [DONE] before the terminal event" in error_of(raw)


def test_missing_terminal_at_close() -> None:
    parser = ferroute.ResponseEventParser()
    raw = stream(good_events()[:-1])
    assert len(parser.feed(raw)) == 9
    with pytest.raises(ferroute.StreamError, match=rf"ended after 9 events without a terminal event.*byte {len(raw)}"):
        parser.close()


def test_truncated_mid_event() -> None:
    raw = stream(good_events())
    parser = ferroute.ResponseEventParser()
    assert len(parser.feed(raw[:-30])) == 9
    with pytest.raises(ferroute.StreamError, match="ended in the middle of an event"):
        parser.close()


def test_first_event_must_be_created() -> None:
    assert "must start with response.created" in error_of(stream(number(good_events()[2:])))


def test_output_index_order() -> None:
    events = good_events()
    events[2]["output_index"] = 1
    assert "response.output_item.added with output_index 1 where 0 was expected" in error_of(stream(events))


def test_invalid_json() -> None:
    raw = stream(good_events()[:2]) + b'data: {"type": "response.output_item.added",\n\n'
    assert "event data is not a JSON object" in error_of(raw)


def test_line_limit() -> None:
    parser = ferroute.ResponseEventParser(max_line_length=100)
    with pytest.raises(ferroute.StreamError, match="max_line_length"):
        parser.feed(stream(good_events()))


def test_errors_are_sticky() -> None:
    events = good_events()
    events[4]["sequence_number"] = 9
    parser = ferroute.ResponseEventParser()
    with pytest.raises(ferroute.StreamError) as first:
        parser.feed(stream(events))
    with pytest.raises(ferroute.StreamError) as again:
        parser.feed(b"\n")
    assert str(again.value) == str(first.value)
    with pytest.raises(ferroute.StreamError):
        parser.close()


def test_unknown_and_extension_events_pass_through() -> None:
    events = good_events()
    events[4:4] = [
        {"type": "response.web_search_call.searching", "output_index": 0, "item_id": "ws_1"},
        {"type": "ferroute:progress", "delta": {"shape": "unknown"}},
    ]
    events = number(events)
    parsed, _ = parse([stream(events)])
    assert parsed == events


def test_stream_error_type() -> None:
    assert issubclass(ferroute.StreamError, ValueError)
    assert ferroute.StreamError.__module__ == "ferroute._core"


def test_feed_takes_bytes() -> None:
    parser = ferroute.ResponseEventParser()
    with pytest.raises(TypeError):
        parser.feed("data: {}\n\n")  # type: ignore[arg-type]


# --- JSON fidelity: the dicts equal json.loads ---------------------------------------------------------------------

TRICKY_DATA = [
    '"escapes \\" \\\\ \\/ \\b \\f \\n \\r \\t \\u00e9 \\u20ac \\ud83d\\ude80"',
    '"utf-8 \u00e9t\u00e9 \u20ac \U0001f680 and a long ascii run to cross the eight-byte scan: abcdefghijklmnop"',
    '"lone surrogates \\ud800 and \\udfff"',
    "[0, -0, 1, -1, 9223372036854775807, -9223372036854775808, 9223372036854775808, 123456789012345678901234567890]",
    "[0.1, -0.0, 1e400, -1e400, 2.5e-8, 1E+2, 3.141592653589793, 5e-324, 1.7976931348623157e308]",
    '[true, false, null, {}, [], [[]], {"a": {"b": {"c": [1, {"d": null}]}}}]',
    '{"dup": 1, "dup": 2, "": "empty key", "k\\u00e9y": "escaped key"}',
    ' \t [ 1 , "x" ] \t',
]


@pytest.mark.parametrize("payload", TRICKY_DATA)
def test_event_values_equal_json_loads(payload: str) -> None:
    data = f'{{"type": "ferroute:value", "sequence_number": 1, "value": {payload}}}'
    raw = stream(good_events()[:1]) + f"data: {data}\n\n".encode()
    parser = ferroute.ResponseEventParser()
    events = parser.feed(raw)
    assert events[1] == json.loads(data)
    assert repr(events[1]) == repr(json.loads(data))  # float signs, int vs float, -0.0


def test_escaped_keys_are_read_by_the_checker() -> None:
    events = good_events()
    raw = stream(events[:4])
    # `type`, `delta` and `output_index` spelled with escapes: the checker must still see them.
    raw += b'data: {"typ\\u0065": "response.output_text.delta", "sequence_number": 4, "item_id": "msg_1", '
    raw += b'"output_\\u0069ndex": 0, "content_index": 0, "d\\u0065lta": "Hi \\"q\\""}\n\n'
    parser = ferroute.ResponseEventParser()
    parsed = parser.feed(raw)
    assert parsed[-1]["delta"] == 'Hi "q"'
    assert parser.response is not None
    assert parser.response["output"][0]["content"][0]["text"] == 'Hi "q"'


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b'{"type": "x:y", "sequence_number": 1,}', "expected a string key"),
        (b'{"type": "x:y", "sequence_number": 1} trailing', "trailing characters"),
        (b'{"type": "x:y", "sequence_number": 1, "v": "tab\tinside"}', "control character in string"),
        (b'{"type": "x:y", "sequence_number": 1, "v": NaN}', "expected a value"),
        (b'{"type": "x:y", "sequence_number": 1, "v": 01}', "invalid number"),
        (b'{"type": "x:y", "sequence_number": 1, "v": "\\x"}', "invalid escape"),
        (b"[1, 2]", "data starts with"),
    ],
)
def test_invalid_json_names_the_problem(data: bytes, problem: str) -> None:
    raw = stream(good_events()[:1]) + b"data: " + data + b"\n\n"
    message = error_of(raw)
    assert message.startswith("event data is not a JSON object"), message
    assert problem in message
    assert f"event #1, byte {raw.index(data)})" in message


def test_deep_nesting_is_an_error_not_a_crash() -> None:
    data = b'{"type": "x:y", "sequence_number": 1, "v": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    assert "nested deeper than 512 levels" in error_of(stream(good_events()[:1]) + b"data: " + data + b"\n\n")


def test_random_splits_give_the_same_events() -> None:
    rng = random.Random(7)
    for path in FIXTURES:
        raw = path.read_bytes()
        whole, parser = parse([raw])
        for _ in range(5):
            cuts = sorted(rng.sample(range(1, len(raw)), 20))
            chunks = [raw[a:b] for a, b in zip([0, *cuts], [*cuts, len(raw)], strict=True)]
            events, split_parser = parse(chunks)
            assert events == whole, path.name
            assert split_parser.response == parser.response


def test_error_before_created_is_handed_on() -> None:
    error = {"type": "error", "sequence_number": 0, "error": {"type": "server_error", "code": "x", "message": "boom"}}
    parser = ferroute.ResponseEventParser()
    assert parser.feed(frame(error)) == [error]
    assert parser.response is None
    with pytest.raises(ferroute.StreamError, match="ended after 1 events without a terminal event"):
        parser.close()


def test_many_similar_keys_equal_json_loads() -> None:
    # Keys that share prefixes, suffixes and lengths exercise the parser's key cache.
    keys = [f"k{'x' * (n % 40)}{n}" for n in range(3000)] + ["a", "ab", "abc", "abd", "abcdefgh", "abcdefgi"]
    value = {key: n for n, key in enumerate(keys)}
    data = json.dumps({"type": "ferroute:keys", "sequence_number": 1, "value": value, "again": value})
    parser = ferroute.ResponseEventParser()
    events = parser.feed(stream(good_events()[:1]) + f"data: {data}\n\n".encode())
    assert events[1] == json.loads(data)
