"""An independent check of Open Responses output, for the tests.

Written from the spec's text (SPEC.md "Streaming grammar", "The response object"), not from the Rust code,
so the two can disagree; every event and response is also validated with the third-party
`openresponses-types` models generated from the spec's OpenAPI schema.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from openai.types import responses as oai
from openai.types.responses import response_output_item as oai_items
from openresponses_types import types as ort
from pydantic import BaseModel

EVENT_MODELS: dict[str, type[BaseModel]] = {
    "response.created": ort.ResponseCreatedStreamingEvent,
    "response.queued": ort.ResponseQueuedStreamingEvent,
    "response.in_progress": ort.ResponseInProgressStreamingEvent,
    "response.completed": ort.ResponseCompletedStreamingEvent,
    "response.failed": ort.ResponseFailedStreamingEvent,
    "response.incomplete": ort.ResponseIncompleteStreamingEvent,
    "response.output_item.added": ort.ResponseOutputItemAddedStreamingEvent,
    "response.output_item.done": ort.ResponseOutputItemDoneStreamingEvent,
    "response.content_part.added": ort.ResponseContentPartAddedStreamingEvent,
    "response.content_part.done": ort.ResponseContentPartDoneStreamingEvent,
    "response.output_text.delta": ort.ResponseOutputTextDeltaStreamingEvent,
    "response.output_text.done": ort.ResponseOutputTextDoneStreamingEvent,
    "response.refusal.delta": ort.ResponseRefusalDeltaStreamingEvent,
    "response.refusal.done": ort.ResponseRefusalDoneStreamingEvent,
    "response.reasoning.delta": ort.ResponseReasoningDeltaStreamingEvent,
    "response.reasoning.done": ort.ResponseReasoningDoneStreamingEvent,
    "response.reasoning_summary_part.added": ort.ResponseReasoningSummaryPartAddedStreamingEvent,
    "response.reasoning_summary_part.done": ort.ResponseReasoningSummaryPartDoneStreamingEvent,
    "response.reasoning_summary_text.delta": ort.ResponseReasoningSummaryDeltaStreamingEvent,
    "response.reasoning_summary_text.done": ort.ResponseReasoningSummaryDoneStreamingEvent,
    "response.output_text.annotation.added": ort.ResponseOutputTextAnnotationAddedStreamingEvent,
    "response.function_call_arguments.delta": ort.ResponseFunctionCallArgumentsDeltaStreamingEvent,
    "response.function_call_arguments.done": ort.ResponseFunctionCallArgumentsDoneStreamingEvent,
    "error": ort.ErrorStreamingEvent,
}
# The router's hosted-tool items and events (`ferroute.tools`), which the spec leaves to implementors: checked against
# the official `openai` SDK's models of OpenAI's MCP tool (the default names), the `ferroute:`-prefixed names
# against the same models. Their rules here: from OpenAI's MCP tool documentation, not from the router's code.
HOSTED_ITEMS: dict[str, type[BaseModel]] = {
    "mcp_list_tools": oai_items.McpListTools,
    "mcp_call": oai_items.McpCall,
    "mcp_approval_request": oai_items.McpApprovalRequest,
}
HOSTED_EVENTS: dict[str, type[BaseModel]] = {
    "mcp_list_tools.in_progress": oai.ResponseMcpListToolsInProgressEvent,
    "mcp_list_tools.completed": oai.ResponseMcpListToolsCompletedEvent,
    "mcp_list_tools.failed": oai.ResponseMcpListToolsFailedEvent,
    "mcp_call.in_progress": oai.ResponseMcpCallInProgressEvent,
    "mcp_call.completed": oai.ResponseMcpCallCompletedEvent,
    "mcp_call.failed": oai.ResponseMcpCallFailedEvent,
    "mcp_call_arguments.delta": oai.ResponseMcpCallArgumentsDeltaEvent,
    "mcp_call_arguments.done": oai.ResponseMcpCallArgumentsDoneEvent,
}


# The router's own sub-agent item (no OpenAI counterpart, so only `ferroute:`): its rules are README's, "Tools and
# the loop": `ferroute:agent_call.in_progress` (the nested `response_id`), `ferroute:agent_call.output_text.delta`*,
# then `.completed` (the item's `output` is the deltas' text) or `.failed` (with `error`).
AGENT_EVENTS = ("agent_call.in_progress", "agent_call.output_text.delta", "agent_call.completed", "agent_call.failed")


def hosted_kind(item_type: str) -> str | None:
    """`mcp_call` for `mcp_call` and `ferroute:mcp_call`, `agent_call` for `ferroute:agent_call` (None for any
    other item type)."""
    if item_type == "ferroute:agent_call":
        return "agent_call"
    kind = item_type.removeprefix("ferroute:")
    return kind if kind in HOSTED_ITEMS else None


def hosted_event(event_type: str) -> str | None:
    """`mcp_call.completed` for `response.mcp_call.completed` and `ferroute:mcp_call.completed`."""
    for prefix in ("response.", "ferroute:"):
        if event_type.startswith(prefix) and event_type[len(prefix) :] in HOSTED_EVENTS:
            return event_type[len(prefix) :]
    if event_type.startswith("ferroute:") and event_type[9:] in AGENT_EVENTS:
        return event_type[9:]
    return None


def validate_hosted_item(item: dict[str, Any]) -> None:
    kind = hosted_kind(item["type"])
    assert kind is not None
    if kind == "agent_call":
        if not isinstance(item.get("name"), str) or not isinstance(item.get("arguments"), str):
            raise GrammarError(f"an agent_call has a name and arguments: {item}")
        # A completed one names its nested response; a failed one may have none (refused, or refused upstream).
        named = str(item.get("response_id") or "").startswith("resp_")
        if not named and (item.get("status") == "completed" or item.get("response_id") is not None):
            raise GrammarError(f"a finished agent_call names its nested response: {item}")
        return
    HOSTED_ITEMS[kind].model_validate({**item, "type": kind})
    final = item.get("status") in ("completed", "failed")
    if kind == "mcp_call" and final and (item.get("error") is None) == (item["status"] == "failed"):
        raise GrammarError(f"an mcp_call is failed exactly when it has an error: {item}")


TERMINAL = {"response.completed": "completed", "response.incomplete": "incomplete", "response.failed": "failed"}
# Every field of the response object (SPEC.md); all must be present, null where nullable.
RESPONSE_FIELDS = {
    "id", "object", "created_at", "completed_at", "status", "incomplete_details", "model", "previous_response_id",
    "instructions", "output", "error", "tools", "tool_choice", "truncation", "parallel_tool_calls", "text", "top_p",
    "presence_penalty", "frequency_penalty", "top_logprobs", "temperature", "reasoning", "usage",
    "max_output_tokens", "max_tool_calls", "store", "background", "service_tier", "metadata", "safety_identifier",
    "prompt_cache_key",
}  # fmt: skip
TEXT_KINDS = {
    # delta type: (done type, part type, key of the full text in the .done event and in the part)
    "response.output_text.delta": ("response.output_text.done", "output_text", "text"),
    "response.refusal.delta": ("response.refusal.done", "refusal", "refusal"),
    "response.reasoning.delta": ("response.reasoning.done", "reasoning_text", "text"),
}


class GrammarError(AssertionError):
    pass


def _tolerate_model_quirks(response: dict[str, Any]) -> dict[str, Any]:
    """The openresponses-types quirks SPEC.md lists: `JsonSchemaResponseFormat.schema_` is typed None and `Tool`
    only knows `function`. Nothing else is relaxed."""
    response = copy.deepcopy(response)
    response["output"] = [item for item in response.get("output", []) if hosted_kind(item.get("type", "")) is None]
    fmt = (response.get("text") or {}).get("format") or {}
    if fmt.get("type") == "json_schema":
        fmt["schema"] = None
    response["tools"] = [t for t in response.get("tools", []) if t.get("type") == "function"]
    return response


def validate_response(response: dict[str, Any]) -> None:
    """Every field present and the whole object valid against openresponses-types."""
    missing = RESPONSE_FIELDS - response.keys()
    if missing:
        raise GrammarError(f"response object lacks {sorted(missing)}")
    if response["object"] != "response" or not response["id"].startswith("resp_"):
        raise GrammarError(f"bad response id/object: {response['id']!r} {response['object']!r}")
    ort.ResponseResource.model_validate(_tolerate_model_quirks(response))
    for item in response["output"]:
        if hosted_kind(item["type"]) is not None:
            validate_hosted_item(item)
            if item.get("status") not in ("completed", "failed", "incomplete"):
                raise GrammarError(f"a finished hosted item without a final status: {item}")
            continue
        if item.get("status") not in ("in_progress", "completed", "incomplete"):
            raise GrammarError(f"item without a valid status: {item}")


def validate_event(event: dict[str, Any]) -> None:
    model = EVENT_MODELS.get(event["type"])
    hosted = hosted_event(event["type"])
    if hosted is not None:
        if hosted in AGENT_EVENTS:
            if not isinstance(event.get("item_id"), str) or not isinstance(event.get("output_index"), int):
                raise GrammarError(f"{event['type']} names its item: {event}")
            return
        HOSTED_EVENTS[hosted].model_validate({**event, "type": "response." + hosted})
        return
    framing_event = event["type"] in ("response.output_item.added", "response.output_item.done")
    if framing_event and hosted_kind(event["item"].get("type", "")) is not None:
        # (The event's own fields by the spec's model, with a stand-in item; the item by the SDK's.)
        validate_hosted_item(event["item"])
        stand_in = {"type": "message", "id": "x", "role": "assistant", "status": "completed", "content": []}
        EVENT_MODELS[event["type"]].model_validate({**event, "item": stand_in})
        return
    if model is None:
        if ":" not in event["type"]:
            raise GrammarError(f"unknown event type {event['type']!r} (extension events are slug-prefixed)")
        return
    if "response" in event:
        event = {**event, "response": _tolerate_model_quirks(event["response"])}
    model.model_validate(event)


def split_sse(raw: bytes) -> tuple[list[dict[str, Any]], bool]:
    """The events of a ferroute SSE body (LF line ends) and whether it ended with `data: [DONE]`.

    Checks the framing rules of SPEC.md: `event:` equal to the payload's `type`, one-line `data:`, no `id:`.
    Comment lines (`: ping`) are keep-alives and skipped."""
    text = raw.decode("utf-8")
    if text and not text.endswith("\n\n"):
        raise GrammarError("stream does not end with a blank line")
    events: list[dict[str, Any]] = []
    done = False
    for block in text.split("\n\n")[:-1]:
        lines = [line for line in block.split("\n") if not line.startswith(":")]
        if not lines:
            continue
        if done:
            raise GrammarError(f"frame after [DONE]: {block!r}")
        if lines == ["data: [DONE]"]:
            done = True
            continue
        if len(lines) != 2 or not lines[0].startswith("event: ") or not lines[1].startswith("data: "):
            raise GrammarError(f"frame is not `event:` + one `data:` line: {block!r}")
        event = json.loads(lines[1][len("data: ") :])
        if event.get("type") != lines[0][len("event: ") :]:
            raise GrammarError(f"event line {lines[0]!r} differs from type {event.get('type')!r}")
        events.append(event)
    return events, done


def check_events(events: list[dict[str, Any]]) -> dict[str, Any]:
    """Check one response's events against the streaming grammar; returns the terminal response."""
    if len(events) < 3:
        raise GrammarError(f"too few events: {[e['type'] for e in events]}")
    for i, event in enumerate(events):
        validate_event(event)
        if event.get("sequence_number") != i:
            raise GrammarError(f"event {i} ({event['type']}) has sequence_number {event.get('sequence_number')}")
    if events[0]["type"] != "response.created" or events[1]["type"] != "response.in_progress":
        raise GrammarError("a stream starts with response.created then response.in_progress")
    response_id = events[0]["response"]["id"]
    for e in events[:2]:
        validate_response(e["response"])
        if e["response"]["status"] != "in_progress" or e["response"]["id"] != response_id:
            raise GrammarError(f"{e['type']} carries status {e['response']['status']}")

    closed: list[dict[str, Any]] = []  # items closed, in order
    item: dict[str, Any] | None = None  # the open item as built from events
    part: dict[str, Any] | None = None  # the open content part, with the text accumulated from deltas
    part_kind: str | None = None
    summary: dict[str, Any] | None = None  # the open reasoning summary part
    body = events[2:-1]
    terminal = events[-1]
    for event in body:
        t = event["type"]
        if t == "error":
            if event is not body[-1] or terminal["type"] != "response.failed":
                raise GrammarError("an error event comes right before response.failed")
            continue
        if t in TERMINAL or t in ("response.created", "response.in_progress"):
            raise GrammarError(f"{t} in the middle of the stream")
        if t == "response.output_item.added":
            if item is not None:
                raise GrammarError(f"item {event['output_index']} added while item {len(closed)} is open")
            if event["output_index"] != len(closed):
                raise GrammarError(f"output_index {event['output_index']}, expected {len(closed)}")
            if event["item"].get("status") != "in_progress":
                raise GrammarError("output_item.added carries an in_progress item")
            item = copy.deepcopy(event["item"])
            if hosted_kind(item["type"]) == "mcp_call":
                if item["arguments"] != "":
                    raise GrammarError("an mcp_call starts with empty arguments")
                item["_events"] = []
            if item["type"] in ("message", "reasoning"):
                item["content"] = []
            if item["type"] == "reasoning" and item.get("summary") != []:
                raise GrammarError("a reasoning item starts with an empty summary")
            if item["type"] == "function_call" and item["arguments"] != "":
                raise GrammarError("a function call starts with empty arguments")
            continue
        if item is None:
            raise GrammarError(f"{t} outside an open item")
        if event.get("item_id", item["id"]) != item["id"] or event.get("output_index", len(closed)) != len(closed):
            raise GrammarError(
                f"{t} names item {event.get('item_id')}/{event.get('output_index')}, open is {item['id']}"
            )
        if t == "response.content_part.added":
            if part is not None or event["content_index"] != len(item["content"]):
                raise GrammarError(f"content_part.added at {event['content_index']} with a part open or out of order")
            part, part_kind = dict(event["part"]), event["part"]["type"]
            text_key = "refusal" if part_kind == "refusal" else "text"
            if part.get(text_key) != "":
                raise GrammarError("a content part starts empty")
        elif t in TEXT_KINDS:
            _, kind, key = TEXT_KINDS[t]
            if part is None or part_kind != kind or event["content_index"] != len(item["content"]):
                raise GrammarError(f"{t} outside an open {kind} part")
            part[key] += event["delta"]
            if "logprobs" in part:  # (an output_text part's tokens are its deltas', in order)
                part["logprobs"] = [*part["logprobs"], *event.get("logprobs", [])]
        elif t in {done for done, _, _ in TEXT_KINDS.values()}:
            kind, key = next((k, key) for done, k, key in TEXT_KINDS.values() if done == t)
            if part is None or part_kind != kind or event[key] != part[key]:
                raise GrammarError(f"{t} does not carry the full text of its deltas")
            if "logprobs" in event and event["logprobs"] != part.get("logprobs", []):
                raise GrammarError(f"{t} does not carry the log probabilities of its deltas")
        elif t == "response.content_part.done":
            if part is None or event["part"] != part or event["content_index"] != len(item["content"]):
                raise GrammarError(f"content_part.done {event['part']} differs from the part built: {part}")
            item["content"].append(part)
            part = None
        elif t == "response.reasoning_summary_part.added":
            if item["type"] != "reasoning" or part is not None or summary is not None:
                raise GrammarError("reasoning_summary_part.added outside a reasoning item, or with a part open")
            if event["summary_index"] != len(item["summary"]) or event["part"] != {"type": "summary_text", "text": ""}:
                raise GrammarError(f"reasoning_summary_part.added out of order or not empty: {event}")
            summary = dict(event["part"])
        elif t == "response.reasoning_summary_text.delta":
            if summary is None or event["summary_index"] != len(item["summary"]):
                raise GrammarError("reasoning_summary_text.delta outside its open summary part")
            summary["text"] += event["delta"]
        elif t == "response.reasoning_summary_text.done":
            if summary is None or event["summary_index"] != len(item["summary"]) or event["text"] != summary["text"]:
                raise GrammarError("reasoning_summary_text.done does not carry the full text of its deltas")
        elif t == "response.reasoning_summary_part.done":
            if summary is None or event["summary_index"] != len(item["summary"]) or event["part"] != summary:
                raise GrammarError(f"reasoning_summary_part.done {event.get('part')} differs from the part built")
            item["summary"].append(summary)
            summary = None
        elif t == "response.function_call_arguments.delta":
            if item["type"] != "function_call":
                raise GrammarError("arguments delta outside a function call")
            item["arguments"] += event["delta"]
        elif t == "response.function_call_arguments.done":
            if item["type"] != "function_call" or event["arguments"] != item["arguments"]:
                raise GrammarError("function_call_arguments.done does not carry the full arguments")
        elif hosted_event(t) is not None:
            kind = hosted_event(t)
            assert kind is not None
            if not kind.startswith(hosted_kind(item["type"]) or "-"):
                raise GrammarError(f"{t} inside a {item['type']} item")
            if kind == "mcp_call_arguments.delta":
                item["arguments"] += event["delta"]
            elif kind == "agent_call.output_text.delta":
                item["_text"] = item.get("_text", "") + event["delta"]
            elif kind == "agent_call.in_progress":
                item["response_id"] = event["response_id"]
            elif kind == "mcp_call_arguments.done" and event["arguments"] != item["arguments"]:
                raise GrammarError("mcp_call_arguments.done does not carry the full arguments")
            item.setdefault("_events", []).append(kind)
        elif t == "response.output_item.done" and hosted_kind(item["type"]) is not None:
            done_item = event["item"]
            if done_item["id"] != item["id"] or done_item["type"] != item["type"]:
                raise GrammarError(f"output_item.done {done_item} is not the open item {item['id']}")
            kind = hosted_kind(item["type"])
            events_seen = item.get("_events", [])
            final = done_item.get("status")
            if kind == "mcp_call":
                if done_item["arguments"] != item["arguments"]:
                    raise GrammarError("an mcp_call's arguments differ from its argument deltas")
                expected = ["mcp_call_arguments.delta", "mcp_call_arguments.done", "mcp_call.in_progress"]
                expected.append("mcp_call.failed" if final == "failed" else "mcp_call.completed")
                if [e for e in events_seen if e != "mcp_call_arguments.delta"] != expected[1:]:
                    raise GrammarError(f"mcp_call events {events_seen}, expected {expected}")
            elif kind == "agent_call":
                last = "agent_call.failed" if final == "failed" else "agent_call.completed"
                deltas = [e for e in events_seen if e == "agent_call.output_text.delta"]
                if events_seen != ["agent_call.in_progress", *deltas, last]:
                    raise GrammarError(f"agent_call events {events_seen}")
                if final == "completed" and done_item.get("output") != item.get("_text", ""):
                    raise GrammarError("an agent_call's output differs from its text deltas")
                if done_item.get("response_id") != item.get("response_id"):
                    raise GrammarError("an agent_call's response_id differs from its in_progress event's")
            elif kind == "mcp_list_tools":
                last = "mcp_list_tools.failed" if final == "failed" else "mcp_list_tools.completed"
                if events_seen != ["mcp_list_tools.in_progress", last]:
                    raise GrammarError(f"mcp_list_tools events {events_seen}")
            closed.append(done_item)
            item = None
        elif t == "response.output_item.done":
            if part is not None or summary is not None:
                raise GrammarError("output_item.done with a content or summary part still open")
            done_item = event["item"]
            if done_item["status"] not in ("completed", "incomplete"):
                raise GrammarError(f"output_item.done with status {done_item['status']}")
            built = {**item, "status": done_item["status"]}
            if item["type"] == "reasoning" and "encrypted_content" in done_item:
                built["encrypted_content"] = done_item["encrypted_content"]
            if done_item != built:
                raise GrammarError(f"output_item.done {done_item} differs from what the events built: {built}")
            closed.append(done_item)
            item = None
        elif ":" not in t:
            raise GrammarError(f"unexpected event {t}")
    if item is not None:
        raise GrammarError("the stream ended with an item open")
    if terminal["type"] not in TERMINAL:
        raise GrammarError(f"the last event is {terminal['type']}, not a terminal event")
    response: dict[str, Any] = terminal["response"]
    validate_response(response)
    if response["status"] != TERMINAL[terminal["type"]] or response["id"] != response_id:
        raise GrammarError(f"{terminal['type']} carries status {response['status']}")
    if response["output"] != closed:
        raise GrammarError("the terminal response's output differs from the items closed in the stream")
    if terminal["type"] == "response.failed":
        if response["error"] is None or not body or body[-1]["type"] != "error":
            raise GrammarError("response.failed needs an error event before it and `error` set")
    elif response["error"] is not None:
        raise GrammarError("error set on a response that did not fail")
    if terminal["type"] == "response.incomplete" and not response["incomplete_details"]:
        raise GrammarError("response.incomplete without incomplete_details")
    return response


def check_stream(raw: bytes) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """A whole ferroute SSE body: framing, grammar, `[DONE]` at the end. Returns (events, terminal response)."""
    events, done = split_sse(raw)
    if not done:
        raise GrammarError("the stream does not end with data: [DONE]")
    return events, check_events(events)
