"""The mock upstream's `agent` model (tests/support/mock_upstream.py), over plain HTTP in each dialect: directives in
the last user message become one turn of parallel tool calls, tool results become `Results: …`, and what it sends is
shaped as the recorded streams and read by the router's own translators as a real upstream's would be."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

import httpx
import pytest

import ferroute._core
from tests.support.fixtures import FIXTURES
from tests.support.grammar import check_stream
from tests.support.servers import mock_upstream

DIRECTIVES = 'call add {"a": 2, "b": 3}; call sleep {"seconds": 1}'
RESULTS = {"add": "5", "sleep": "slept 1 s"}


@pytest.fixture(scope="module")
def http() -> Iterator[httpx.Client]:
    """A client of a mock upstream process of this module's own (one connection, kept alive)."""
    with mock_upstream() as server, httpx.Client(base_url=server.url, timeout=10) as client:
        yield client


@dataclass
class Turn:
    """One answer of the mock, read the plain way: its text, its calls `(call_id, name, arguments)`, how it ended,
    its usage, and how many pieces each call's arguments came in."""

    raw: bytes
    text: str = ""
    calls: list[tuple[str, str, str]] = field(default_factory=list)
    end: str | None = None
    usage: dict[str, Any] = field(default_factory=dict)
    pieces: list[int] = field(default_factory=list)


def frames(raw: bytes) -> list[tuple[str | None, Any]]:
    """(event name, data) of each SSE frame with data; `[DONE]` stays a string, comments are skipped."""
    out: list[tuple[str | None, Any]] = []
    for block in raw.decode().replace("\r\n", "\n").split("\n\n"):
        name = None
        data = []
        for line in block.split("\n"):
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].strip())
        if data:
            joined = "\n".join(data)
            out.append((name, joined if joined == "[DONE]" else json.loads(joined)))
    return out


class Chat:
    name = "chat"
    path = "/v1/chat/completions"
    translator = ferroute._core.ChatCompletionsTranslator
    calls_end = "tool_calls"
    text_end = "stop"
    none_choice: ClassVar[Any] = "none"

    @staticmethod
    def body(model: str, conversation: list[dict[str, Any]], tools: list[str], **extra: Any) -> dict[str, Any]:
        offered = [{"type": "function", "function": {"name": n, "parameters": {"type": "object"}}} for n in tools]
        body = {"model": model, "messages": conversation, "stream": True, "stream_options": {"include_usage": True}}
        return {**body, **({"tools": offered} if tools else {}), **extra}

    @staticmethod
    def user(text: str) -> list[dict[str, Any]]:
        return [{"role": "user", "content": text}]

    @staticmethod
    def read(raw: bytes) -> Turn:
        turn = Turn(raw)
        calls: dict[int, dict[str, Any]] = {}
        chunks = [data for _, data in frames(raw)]
        assert chunks[-1] == "[DONE]"
        assert len({c["id"] for c in chunks[:-1]}) == 1
        for chunk in chunks[:-1]:
            if chunk.get("usage"):
                turn.usage = chunk["usage"]
            for choice in chunk["choices"]:
                delta = choice["delta"]
                turn.text += delta.get("content") or ""
                for call in delta.get("tool_calls") or []:
                    if "id" in call:
                        assert call["index"] == len(calls) and call["type"] == "function"
                        calls[call["index"]] = {"id": call["id"], "name": call["function"]["name"], "args": []}
                        assert call["function"]["arguments"] == ""
                    else:
                        calls[call["index"]]["args"].append(call["function"]["arguments"])
                turn.end = choice["finish_reason"] or turn.end
        turn.calls = [(c["id"], c["name"], "".join(c["args"])) for c in calls.values()]
        turn.pieces = [len(c["args"]) for c in calls.values()]
        return turn

    @staticmethod
    def follow_up(turn: Turn, results: list[tuple[str, Any]]) -> list[dict[str, Any]]:
        calls = [{"id": i, "type": "function", "function": {"name": n, "arguments": a}} for i, n, a in turn.calls]
        out: list[dict[str, Any]] = [{"role": "assistant", "content": turn.text or None, "tool_calls": calls}]
        for n, (call_id, result) in enumerate(results):
            # (the second result as content parts, which the mock reads as well)
            content = result if n == 0 else [{"type": "text", "text": result}]
            out.append({"role": "tool", "tool_call_id": call_id, "content": content})
        return out


class Anthropic:
    name = "anthropic"
    path = "/v1/messages"
    translator = ferroute._core.AnthropicTranslator
    calls_end = "tool_use"
    text_end = "end_turn"
    none_choice: ClassVar[Any] = {"type": "none"}

    @staticmethod
    def body(model: str, conversation: list[dict[str, Any]], tools: list[str], **extra: Any) -> dict[str, Any]:
        offered = [{"name": n, "input_schema": {"type": "object"}} for n in tools]
        body = {"model": model, "max_tokens": 1024, "messages": conversation, "stream": True}
        return {**body, **({"tools": offered} if tools else {}), **extra}

    @staticmethod
    def user(text: str) -> list[dict[str, Any]]:
        return [{"role": "user", "content": [{"type": "text", "text": text}]}]

    @staticmethod
    def read(raw: bytes) -> Turn:
        turn = Turn(raw)
        events = [(name, data) for name, data in frames(raw) if data["type"] != "ping"]
        assert all(name == data["type"] for name, data in events)
        kinds = [name for name, _ in events]
        assert kinds[0] == "message_start" and kinds[-2:] == ["message_delta", "message_stop"]
        blocks: dict[int, dict[str, Any]] = {}
        for _, event in events:
            if event["type"] == "content_block_start":
                assert event["index"] == len(blocks)
                blocks[event["index"]] = {**event["content_block"], "pieces": []}
            elif event["type"] == "content_block_delta":
                delta = event["delta"]
                piece = delta["text"] if delta["type"] == "text_delta" else delta["partial_json"]
                blocks[event["index"]]["pieces"].append(piece)
            elif event["type"] == "message_delta":
                turn.end = event["delta"]["stop_reason"]
                turn.usage = event["usage"]
        for block in blocks.values():
            if block["type"] == "text":
                turn.text += "".join(block["pieces"])
            else:
                assert block["type"] == "tool_use" and block["input"] == {} and block["pieces"][0] == ""
                turn.calls.append((block["id"], block["name"], "".join(block["pieces"])))
                turn.pieces.append(len(block["pieces"]) - 1)
        return turn

    @staticmethod
    def follow_up(turn: Turn, results: list[tuple[str, Any]]) -> list[dict[str, Any]]:
        said: list[dict[str, Any]] = [{"type": "text", "text": turn.text}] if turn.text else []
        said += [{"type": "tool_use", "id": i, "name": n, "input": json.loads(a)} for i, n, a in turn.calls]
        given = [
            {"type": "tool_result", "tool_use_id": call_id, "content": r if n == 0 else [{"type": "text", "text": r}]}
            for n, (call_id, r) in enumerate(results)
        ]
        return [{"role": "assistant", "content": said}, {"role": "user", "content": given}]


class Responses:
    name = "responses"
    path = "/v1/responses"
    translator = ferroute._core.ResponsesTranslator
    calls_end = "completed"
    text_end = "completed"
    none_choice: ClassVar[Any] = "none"

    @staticmethod
    def body(model: str, conversation: list[dict[str, Any]], tools: list[str], **extra: Any) -> dict[str, Any]:
        offered = [{"type": "function", "name": n, "parameters": {"type": "object"}} for n in tools]
        body = {"model": model, "input": conversation, "stream": True, "store": False}
        return {**body, **({"tools": offered} if tools else {}), **extra}

    @staticmethod
    def user(text: str) -> list[dict[str, Any]]:
        return [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}]

    @staticmethod
    def read(raw: bytes) -> Turn:
        turn = Turn(raw)
        events = frames(raw)
        assert all(name == data["type"] for name, data in events)
        assert [data["sequence_number"] for _, data in events] == list(range(len(events)))
        deltas: dict[str, list[str]] = {}
        final: dict[str, Any] = {}
        for _, event in events:
            kind = event["type"]
            if kind == "response.output_text.delta":
                turn.text += event["delta"]
            elif kind == "response.function_call_arguments.delta":
                deltas.setdefault(event["item_id"], []).append(event["delta"])
            elif kind == "response.function_call_arguments.done":
                assert "".join(deltas[event["item_id"]]) == event["arguments"]
            elif kind == "response.output_item.done" and event["item"]["type"] == "function_call":
                item = event["item"]
                turn.calls.append((item["call_id"], item["name"], item["arguments"]))
                turn.pieces.append(len(deltas[item["id"]]))
            elif kind == "response.completed":
                final = event["response"]
        assert events[-1][1]["type"] == "response.completed"
        turn.end = final["status"]
        turn.usage = final["usage"]
        assert [(i["call_id"], i["name"], i["arguments"]) for i in final["output"] if i["type"] == "function_call"] == (
            turn.calls
        )
        return turn

    @staticmethod
    def follow_up(turn: Turn, results: list[tuple[str, Any]]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        if turn.text:
            content = [{"type": "output_text", "text": turn.text, "annotations": []}]
            out.append({"type": "message", "role": "assistant", "content": content, "status": "completed"})
        out += [{"type": "function_call", "call_id": i, "name": n, "arguments": a} for i, n, a in turn.calls]
        out += [
            {"type": "function_call_output", "call_id": call_id,
             "output": r if n == 0 else [{"type": "input_text", "text": r}]}
            for n, (call_id, r) in enumerate(results)
        ]  # fmt: skip
        return out


Dialect = type[Chat] | type[Anthropic] | type[Responses]
DIALECTS = [Chat, Anthropic, Responses]


@pytest.fixture(params=DIALECTS, ids=lambda d: d.name)
def dialect(request: pytest.FixtureRequest) -> Dialect:
    return request.param  # type: ignore[no-any-return]


def ask(http: httpx.Client, dialect: Dialect, body: dict[str, Any]) -> Turn:
    response = http.post(dialect.path, json=body)
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/event-stream"
    return dialect.read(response.content)


def first_turn(http: httpx.Client, dialect: Dialect, text: str, tools: list[str], model: str = "agent") -> Turn:
    return ask(http, dialect, dialect.body(model, dialect.user(text), tools))


def assert_calls(turn: Turn, dialect: Dialect, expected: list[tuple[str, dict[str, Any]]]) -> None:
    assert [(name, json.loads(arguments)) for _, name, arguments in turn.calls] == expected
    assert turn.end == dialect.calls_end
    prefix = "toolu_01" if dialect is Anthropic else "call_"
    ids = [call_id for call_id, _, _ in turn.calls]
    assert all(i.startswith(prefix) for i in ids) and len(set(ids)) == len(ids)
    assert all(n in (2, 3) for n in turn.pieces), turn.pieces


@pytest.mark.parametrize("tools", [["add", "sleep"], []], ids=["offered", "not-offered"])
def test_directives_give_one_turn_of_parallel_calls(http: httpx.Client, dialect: Dialect, tools: list[str]) -> None:
    turn = first_turn(http, dialect, DIRECTIVES, tools)
    assert_calls(turn, dialect, [("add", {"a": 2, "b": 3}), ("sleep", {"seconds": 1})])
    assert turn.text == ""
    assert turn.usage


def test_directives_on_lines_and_an_empty_object(http: httpx.Client, dialect: Dialect) -> None:
    text = 'Please:\ncall add {"a": 1, "b": {"c": "x; call no {}"}}\ncall ping {}'
    turn = first_turn(http, dialect, text, ["ping"])
    assert_calls(turn, dialect, [("add", {"a": 1, "b": {"c": "x; call no {}"}}), ("ping", {})])


def test_a_responses_input_string_is_the_user_message(http: httpx.Client) -> None:
    turn = ask(http, Responses, {**Responses.body("agent", [], ["add"]), "input": "call add {}"})
    assert_calls(turn, Responses, [("add", {})])


def test_the_name_is_the_offered_tool_it_ends(http: httpx.Client, dialect: Dialect) -> None:
    # `add` → the tool ending in `_add`; `sleep` is offered as is, which beats `fs_sleep`; `gone` is not offered.
    tools = ["add_more", "calc_add", "fs_sleep", "sleep"]
    turn = first_turn(http, dialect, "call add {}; call sleep {}; call gone {}", tools)
    assert_calls(turn, dialect, [("calc_add", {}), ("sleep", {}), ("gone", {})])


@pytest.mark.parametrize("narrate", [False, True], ids=["silent", "narrated"])
def test_results_come_back_as_text(http: httpx.Client, dialect: Dialect, narrate: bool) -> None:
    conversation = dialect.user(("narrate " if narrate else "") + DIRECTIVES)
    tools = ["add", "sleep"]
    turn = ask(http, dialect, dialect.body("agent", conversation, tools))
    assert turn.text == ("Calling tools." if narrate else "")
    assert [name for _, name, _ in turn.calls] == ["add", "sleep"]
    results = [(call_id, RESULTS[name]) for call_id, name, _ in turn.calls]
    answer = ask(http, dialect, dialect.body("agent", conversation + dialect.follow_up(turn, results), tools))
    assert answer.text == "Results: add=5; sleep=slept 1 s"
    assert answer.calls == []
    assert answer.end == dialect.text_end
    assert answer.usage


def test_only_the_results_after_the_last_assistant_turn_count(http: httpx.Client, dialect: Dialect) -> None:
    earlier = first_turn(http, dialect, "call add {}", [])
    conversation = dialect.user("call add {}") + dialect.follow_up(earlier, [(earlier.calls[0][0], "old")])
    # The earlier turn ends with the model's text (in Responses, a `message` item is what ends a turn).
    if dialect is Responses:
        said = [{"type": "output_text", "text": "Results: add=old", "annotations": []}]
        conversation.append({"type": "message", "role": "assistant", "content": said})
    elif dialect is Anthropic:
        conversation.append({"role": "assistant", "content": [{"type": "text", "text": "Results: add=old"}]})
    else:
        conversation.append({"role": "assistant", "content": "Results: add=old"})
    conversation += dialect.user("call sleep {}")
    later = ask(http, dialect, dialect.body("agent", conversation, []))
    assert [name for _, name, _ in later.calls] == ["sleep"]
    results = [(later.calls[0][0], "slept"), ("call_nobody_made", "?")]
    answer = ask(http, dialect, dialect.body("agent", conversation + dialect.follow_up(later, results), []))
    assert answer.text == "Results: sleep=slept; unknown=?"


def test_no_directive_gives_a_short_text(http: httpx.Client, dialect: Dialect) -> None:
    turn = first_turn(http, dialect, "What is 2 + 3? Call me back later.", ["add"])
    assert turn.text == "No tools needed."
    assert turn.calls == [] and turn.end == dialect.text_end


def test_tool_choice_does_not_stop_the_directives(http: httpx.Client, dialect: Dialect) -> None:
    body = dialect.body("agent", dialect.user("call add {}"), ["add"], tool_choice=dialect.none_choice)
    assert_calls(ask(http, dialect, body), dialect, [("add", {})])


def test_requests_are_recorded(http: httpx.Client, dialect: Dialect) -> None:
    http.delete("/requests")
    body = dialect.body(f"agent?tag={dialect.name}", dialect.user("call add {}"), ["add"])
    ask(http, dialect, body)
    [record] = http.get("/requests").json()
    assert record["path"] == dialect.path and record["body"] == body and record["closed_early"] is False


@pytest.mark.parametrize("options", ["", "?drip=0.001&crlf=1&pings=2&chunk=7"], ids=["plain", "options"])
def test_the_options_of_other_modes_apply(http: httpx.Client, dialect: Dialect, options: str) -> None:
    turn = first_turn(http, dialect, DIRECTIVES, ["add", "sleep"], model="agent" + options)
    assert (b"\r\n" in turn.raw) == bool(options)
    assert_calls(turn, dialect, [("add", {"a": 2, "b": 3}), ("sleep", {"seconds": 1})])


def translate(dialect: Dialect, raw: bytes, chunk: int | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """The mock's bytes through the router's translator for the dialect: (the terminal response of its checked
    Open Responses stream, its `response_json()`)."""
    translator = dialect.translator({"model": "m", "input": "x"})
    pieces = [raw] if chunk is None else [raw[i : i + chunk] for i in range(0, len(raw), chunk)]
    frames_out = b"".join(translator.feed(piece) for piece in pieces) + translator.finish()
    _, streamed = check_stream(frames_out)
    return streamed, json.loads(translator.response_json())


@pytest.mark.parametrize("narrate", [False, True], ids=["silent", "narrated"])
@pytest.mark.parametrize("chunk", [None, 5], ids=["whole", "5-bytes"])
def test_the_routers_translators_read_the_calls(
    http: httpx.Client, dialect: Dialect, narrate: bool, chunk: int | None
) -> None:
    turn = first_turn(http, dialect, ("narrate " if narrate else "") + DIRECTIVES, ["add", "sleep"])
    streamed, response = translate(dialect, turn.raw, chunk)
    assert response["status"] == "completed" and streamed["status"] == "completed"
    assert response["output"] == streamed["output"]
    calls = [item for item in response["output"] if item["type"] == "function_call"]
    assert [(c["call_id"], c["name"], json.loads(c["arguments"])) for c in calls] == [
        (turn.calls[0][0], "add", {"a": 2, "b": 3}),
        (turn.calls[1][0], "sleep", {"seconds": 1}),
    ]
    assert all(c["status"] == "completed" for c in calls)
    messages = [item for item in response["output"] if item["type"] == "message"]
    assert [m["content"][0]["text"] for m in messages] == (["Calling tools."] if narrate else [])
    assert response["usage"]["output_tokens"] > 0


def test_the_routers_translators_read_the_results_answer(http: httpx.Client, dialect: Dialect) -> None:
    conversation = dialect.user(DIRECTIVES)
    turn = ask(http, dialect, dialect.body("agent", conversation, ["add", "sleep"]))
    results = [(call_id, RESULTS[name]) for call_id, name, _ in turn.calls]
    answer = ask(http, dialect, dialect.body("agent", conversation + dialect.follow_up(turn, results), []))
    _, response = translate(dialect, answer.raw)
    assert response["status"] == "completed"
    [message] = response["output"]
    assert message["type"] == "message" and message["content"][0]["text"] == "Results: add=5; sleep=slept 1 s"
    assert response["usage"]["input_tokens"] > 0 and response["usage"]["output_tokens"] > 0


RECORDED = {
    "chat": ("chat_completions", "openai-gpt-4o-parallel-tool-calls-usage"),
    "anthropic": ("anthropic", "claude-sonnet-4-text-then-parallel-tool-use"),
    "responses": ("responses", "openai-gpt-4o-parallel-function-calls"),
}


def shape(raw: bytes) -> list[Any]:
    """Each frame's event name and member names, down into the members that are objects (lists: their first
    element), with the runs of one shape collapsed into one: what a recorded stream and the mock must share."""

    def keys(value: Any) -> Any:
        if isinstance(value, dict):
            return tuple((k, keys(v)) for k, v in value.items())
        if isinstance(value, list) and value:
            return [keys(value[0])]
        return None

    out: list[Any] = []
    for name, data in frames(raw):
        if isinstance(data, dict) and data.get("type") == "ping":
            continue  # (where a ping comes is the server's business)
        if isinstance(data, dict) and isinstance(data.get("response"), dict):
            data = {**data, "response": {k: v for k, v in data["response"].items() if k not in ("tools", "output")}}
        one = (name, keys(data))
        if not out or out[-1] != one:
            out.append(one)
    return out


def test_the_bytes_are_shaped_as_a_recorded_stream(http: httpx.Client, dialect: Dialect) -> None:
    folder, name = RECORDED[dialect.name]
    recorded = (FIXTURES / folder / f"{name}.sse").read_bytes()
    # As recorded: the Anthropic stream opens with a text block, the others with the calls; two calls, the second
    # named `multiply`, each with its arguments in pieces.
    text = ("narrate " if dialect is Anthropic else "") + 'call add {"a": 2, "b": 3}; call multiply {"a": 2, "b": 3}'
    turn = first_turn(http, dialect, text, ["add", "multiply"])
    mine = shape(turn.raw)
    theirs = shape(recorded)
    assert mine == theirs
