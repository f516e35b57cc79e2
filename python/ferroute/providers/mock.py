"""The built-in `mock` provider: deterministic answers, no network.

Its source (`MockSource`) writes the Chat Completions stream an upstream would send (reasoning, text, tool
calls, usage, finish reason), and the provider speaks the Chat Completions dialect: the request is checked as
a real upstream's would be, and the app feeds the stream through the same Rust translator as a real
upstream's bytes, so `ferroute serve` with no config exercises the real path. Behaviour:

- a function call when the request has function tools and asks for one: `tool_choice` `required`, a
  named function or `allowed_tools` in `required` mode, or (with `auto`) the last user message
  mentions the tool (a word of its name, e.g. "weather" for `get_weather`) — unless the input already
  ends with a tool result. Its arguments are a minimal instance of the tool's JSON schema, with the prompt's
  numbers in its number parameters. Hosted tools (an MCP server's) are function tools to it too: the router
  runs the call and the mock then answers from the result.
- otherwise text: a fixed sentence built from the last user message (or the tool result), or, for
  `text.format` json_schema/json_object, a JSON document that satisfies the schema;
- raw reasoning first when the request sets `reasoning.effort` (other than `none`);
- words count as tokens: over `max_output_tokens` the answer stops with finish_reason `length`.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import AsyncIterator
from typing import Any

import httpx

from ferroute.models import (
    FunctionCallOutputItem,
    FunctionTool,
    InputText,
    MessageItem,
    OutputText,
    ResponsesRequest,
    TextFormatJsonObject,
    TextFormatJsonSchema,
)
from ferroute.providers import Dialect, Upstream
from ferroute.providers.chat_completions import chat_messages

_FORMATS = {
    "date": "2024-01-01",
    "date-time": "2024-01-01T00:00:00Z",
    "time": "00:00:00",
    "email": "user@example.com",
    "uri": "https://example.com",
    "uuid": "00000000-0000-4000-8000-000000000000",
}
# Words too generic to show the user asked for a tool.
_GENERIC = {"get", "set", "do", "run", "call", "the", "fetch", "list", "make", "tool", "func", "function"}


class MockSource:
    """The mock as a provider's source: the answer is made here, no transport is used. Its provider's dialect is
    Chat Completions (the stream `mock_stream` writes)."""

    def __init__(self, dialect: Dialect) -> None:
        self.request_body = dialect.request_body

    async def open(
        self,
        request: ResponsesRequest,
        upstream_model: str,
        transport: httpx.AsyncBaseTransport,
        *,
        headers: list[tuple[bytes, bytes]] | None = None,  # (nothing is sent: a trace's headers are dropped)
    ) -> Upstream:
        # The same request validation as a real upstream gets (unsupported items are a 400 here too).
        self.request_body(request, upstream_model)
        return Upstream(chunks=_aiter(mock_stream(request, upstream_model)))


async def _aiter(chunks: list[bytes]) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk


def _last_user_text(request: ResponsesRequest) -> str:
    for item in reversed(request.items()):
        if isinstance(item, MessageItem) and item.role == "user":
            if isinstance(item.content, str):
                return item.content
            return " ".join(p.text for p in item.content if isinstance(p, InputText | OutputText))
    return ""


def _words(name: str) -> list[str]:
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", name)
    return [w.lower() for w in re.split(r"[\s_\-]+", spaced) if len(w) >= 3 and w.lower() not in _GENERIC]


def choose_tool(request: ResponsesRequest) -> FunctionTool | None:
    """The tool the mock calls, or None for a text answer."""
    tools = request.function_tools()
    items = request.items()
    if not tools or (items and isinstance(items[-1], FunctionCallOutputItem)):
        return None
    choice = request.tool_choice
    required = False
    if choice == "none":
        return None
    if choice == "required":
        required = True
    elif choice is not None and not isinstance(choice, str):
        if choice.type == "function":
            return next((t for t in tools if t.name == choice.name), None)
        allowed = {t.name for t in choice.tools}
        tools = [t for t in tools if t.name in allowed]
        if choice.mode == "none":
            return None
        required = choice.mode == "required"
    text = _last_user_text(request).lower()
    for tool in tools:
        if tool.name.lower() in text or any(re.search(rf"\b{re.escape(w)}", text) for w in _words(tool.name)):
            return tool
    return tools[0] if required and tools else None


def schema_instance(schema: Any, root: Any = None, depth: int = 0) -> Any:
    """A minimal instance that satisfies a JSON schema (the common keywords; deterministic)."""
    root = schema if root is None else root
    if not isinstance(schema, dict) or depth > 32:
        return None
    if "$ref" in schema and isinstance(schema["$ref"], str) and schema["$ref"].startswith("#/"):
        target: Any = root
        for key in schema["$ref"][2:].split("/"):
            target = target.get(key, {}) if isinstance(target, dict) else {}
        return schema_instance(target, root, depth + 1)
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    if "default" in schema:
        return schema["default"]
    for key in ("anyOf", "oneOf"):
        if schema.get(key):
            return schema_instance(schema[key][0], root, depth + 1)
    if schema.get("allOf"):
        merged: dict[str, Any] = {}
        for sub in schema["allOf"]:
            if isinstance(sub, dict):
                merged = {**merged, **sub}
        return schema_instance(merged, root, depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind is None:
        kind = "object" if "properties" in schema else "string"
    if kind == "object":
        props = schema.get("properties", {})
        required = schema.get("required", [])
        return {name: schema_instance(props.get(name, {}), root, depth + 1) for name in required}
    if kind == "array":
        count = int(schema.get("minItems", 0))
        return [schema_instance(schema.get("items", {}), root, depth + 1) for _ in range(count)]
    if kind == "string":
        value = _FORMATS.get(schema.get("format", ""), "example")
        min_length = int(schema.get("minLength", 0))
        value = value.ljust(min_length, "x")
        if "maxLength" in schema:
            value = value[: int(schema["maxLength"])]
        return value
    if kind in ("integer", "number"):
        number: float = schema.get("minimum", schema.get("exclusiveMinimum", 0)) or 0
        if "exclusiveMinimum" in schema and "minimum" not in schema:
            number += 1
        if isinstance(schema.get("maximum"), int | float) and number > schema["maximum"]:
            number = schema["maximum"]
        return int(number) if kind == "integer" else number
    if kind == "boolean":
        return False
    return None


def tool_arguments(tool: FunctionTool, prompt: str) -> Any:
    """A call's arguments: a minimal instance of the tool's schema, its number parameters taken in order from the
    numbers the prompt holds ("add 2 and 3" gives `{"a": 2, "b": 3}` for `add(a, b)`)."""
    schema = tool.parameters or {"type": "object"}
    arguments = schema_instance(schema) or {}
    numbers = re.findall(r"(?<![\w.])-?\d+(?:\.\d+)?", prompt)
    properties = schema.get("properties")
    if isinstance(arguments, dict) and isinstance(properties, dict):
        for name, spec in properties.items():
            kind = spec.get("type") if isinstance(spec, dict) else None
            if kind in ("number", "integer") and numbers:
                number = float(numbers.pop(0))
                arguments[name] = int(number) if kind == "integer" or number.is_integer() else number
    return arguments


def _chunk(payload: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"


def mock_stream(request: ResponsesRequest, model: str) -> list[bytes]:
    """The Chat Completions SSE chunks the mock sends for `request`."""
    digest = hashlib.sha256(request.model_dump_json().encode()).hexdigest()
    base = {"id": f"chatcmpl-mock{digest[:16]}", "object": "chat.completion.chunk", "created": 0, "model": model}

    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        return _chunk({**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})

    prompt = _last_user_text(request)
    prompt_tokens = sum(len(m.get("content") or "") for m in chat_messages(request, send_reasoning=True)) // 4 + 1
    budget = request.max_output_tokens or 1 << 30
    out: list[bytes] = [chunk({"role": "assistant", "content": ""})]
    used = 0
    finish = "stop"
    if request.reasoning is not None and request.reasoning.effort not in (None, "none"):
        thought = f"The user wrote {len(prompt.split())} words. A short, direct answer fits."
        out.extend(chunk({"reasoning_content": word}) for word in _split(thought))
        used += len(thought.split())
    tool = choose_tool(request)
    if tool is not None:
        arguments = json.dumps(tool_arguments(tool, prompt))
        call_id = f"call_mock{digest[16:40]}"
        out.append(chunk({"tool_calls": [{"index": 0, "id": call_id, "type": "function",
                                          "function": {"name": tool.name, "arguments": ""}}]}))  # fmt: skip
        out.extend(chunk({"tool_calls": [{"index": 0, "function": {"arguments": p}}]}) for p in _pieces(arguments, 8))
        used += max(1, len(arguments) // 4)
        finish = "tool_calls"
    else:
        for word in _answer(request, prompt):
            if used >= budget:
                finish = "length"
                break
            out.append(chunk({"content": word}))
            used += 1
    out.append(chunk({}, finish))
    usage = {"prompt_tokens": prompt_tokens, "completion_tokens": used, "total_tokens": prompt_tokens + used}
    out.append(_chunk({**base, "choices": [], "usage": usage}))
    out.append(b"data: [DONE]\n\n")
    return out


def _split(text: str) -> list[str]:
    """Words with their following space, as a tokenizer would stream them."""
    return re.findall(r"\S+\s*", text)


def _pieces(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


def _answer(request: ResponsesRequest, prompt: str) -> list[str]:
    fmt = request.text.format if request.text else None
    if isinstance(fmt, TextFormatJsonSchema):
        return _pieces(json.dumps(schema_instance(fmt.schema_)), 6)
    if isinstance(fmt, TextFormatJsonObject):
        return _pieces(json.dumps({"answer": "mock"}), 6)
    items = request.items()
    if items and isinstance(items[-1], FunctionCallOutputItem):
        output = items[-1].output
        text = output if isinstance(output, str) else " ".join(p.text for p in output if isinstance(p, InputText))
        return _split(f"The tool returned: {text}")
    quoted = " ".join(prompt.split()[:24])
    return _split(f"Hello! This is the ferroute mock provider. You said: {quoted}")
