"""Anthropic Messages upstreams (`POST {base_url}/messages`: api.anthropic.com, and servers that speak it).

`messages_request` maps an Open Responses request onto a Messages body (SPEC.md, "Translating upstream
dialects"): `instructions` and system/developer messages → the top-level `system`; user content → text,
image and document blocks; assistant text, `function_call` (`tool_use`) and reasoning items (`thinking`
with its signature from `encrypted_content`, or `redacted_thinking` where only `encrypted_content` is
left) → the assistant turn; `function_call_output` → `tool_result` blocks in a user turn. Turns of one
role in a row become one message. `max_tokens` is required upstream: the request's `max_output_tokens`,
else the provider's `default_max_tokens`. The answer is always asked for as a stream and read by the Rust
`AnthropicTranslator`.
"""

from __future__ import annotations

import json
import re
from typing import Any

from ferroute import _core
from ferroute.config import ProviderConfig
from ferroute.errors import invalid_request, not_implemented
from ferroute.models import (
    FunctionCallItem,
    FunctionCallOutputItem,
    InputFile,
    InputImage,
    InputText,
    InputVideo,
    ItemReference,
    MessageItem,
    OutputText,
    ReasoningItem,
    Refusal,
    ResponsesRequest,
    TextFormatJsonObject,
    TextFormatJsonSchema,
)

_DATA_URL = re.compile(r"data:([\w.+-]+/[\w.+-]+)?(;[^,]*)?;base64,(.*)", re.DOTALL)
_IMAGE_TYPES = {"image/jpeg", "image/png", "image/gif", "image/webp"}
# `reasoning.effort` → the extended-thinking budget (tokens); `none`/`minimal` ask for no thinking.
THINKING_BUDGET = {"low": 2048, "medium": 8192, "high": 24576, "xhigh": 32768}


def _image(part: InputImage, param: str) -> dict[str, Any]:
    url = part.image_url
    if url is None:
        raise invalid_request(
            "input_image needs image_url (a URL or a data URL); file_id needs a files API this router lacks",
            f"{param}.image_url",
        )
    data = _DATA_URL.fullmatch(url)
    if data is None:
        return {"type": "image", "source": {"type": "url", "url": url}}
    media_type = data[1] or ""
    if media_type not in _IMAGE_TYPES:
        raise invalid_request(
            f"Anthropic upstreams take JPEG, PNG, GIF or WebP images, not {media_type or 'an untyped data URL'}",
            f"{param}.image_url",
        )
    return {"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data[3]}}


def _document(part: InputFile, param: str) -> dict[str, Any]:
    if part.file_url is not None:
        return {"type": "document", "source": {"type": "url", "url": part.file_url}}
    if part.file_data is None:
        raise invalid_request(
            "input_file: send file_data (base64 or a data URL) or file_url (file_id needs a files API this "
            "router lacks)",
            f"{param}.file_data",
        )
    data = _DATA_URL.fullmatch(part.file_data)
    media_type, payload = (data[1] or "application/pdf", data[3]) if data else ("application/pdf", part.file_data)
    if media_type != "application/pdf":
        raise invalid_request(
            f"Anthropic upstreams take PDF documents as input_file, not {media_type}", f"{param}.file_data"
        )
    block: dict[str, Any] = {
        "type": "document",
        "source": {"type": "base64", "media_type": media_type, "data": payload},
    }
    if part.filename is not None:
        block["title"] = part.filename
    return block


def _user_block(part: Any, param: str) -> dict[str, Any]:
    if isinstance(part, InputText | OutputText):
        return {"type": "text", "text": part.text}
    if isinstance(part, InputImage):
        return _image(part, param)
    if isinstance(part, InputFile):
        return _document(part, param)
    if isinstance(part, InputVideo):
        raise invalid_request("input_video is not supported by Anthropic upstreams", f"{param}.type")
    raise invalid_request(f"a user message cannot hold a {part.type} part", f"{param}.type")


def _system_text(item: MessageItem, param: str) -> str:
    if isinstance(item.content, str):
        return item.content
    texts = []
    for j, part in enumerate(item.content):
        if not isinstance(part, InputText):
            raise invalid_request(f"a {item.role} message takes text parts only, not {part.type}", f"{param}[{j}].type")
        texts.append(part.text)
    return "\n".join(texts)


def _arguments(item: FunctionCallItem, param: str) -> Any:
    if not item.arguments.strip():
        return {}
    try:
        value = json.loads(item.arguments)
    except ValueError:
        raise invalid_request("function_call arguments must be a JSON object", f"{param}.arguments") from None
    if not isinstance(value, dict):
        raise invalid_request("function_call arguments must be a JSON object", f"{param}.arguments")
    return value


class _Turns:
    """Messages being assembled: blocks of the same role in a row go into one message."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []

    def add(self, role: str, *blocks: dict[str, Any]) -> None:
        if not blocks:
            return
        if self.messages and self.messages[-1]["role"] == role:
            self.messages[-1]["content"].extend(blocks)
        else:
            self.messages.append({"role": role, "content": list(blocks)})


def messages_request(
    request: ResponsesRequest, upstream_model: str, *, default_max_tokens: int = 4096
) -> dict[str, Any]:
    """The `/messages` body for an Open Responses request (always streaming)."""
    system: list[str] = [request.instructions] if request.instructions else []
    turns = _Turns()
    for i, item in enumerate(request.items()):
        param = f"input[{i}]"
        if isinstance(item, MessageItem):
            if item.role in ("system", "developer"):
                system.append(_system_text(item, f"{param}.content"))
            elif item.role == "assistant":
                if isinstance(item.content, str):
                    turns.add("assistant", *([{"type": "text", "text": item.content}] if item.content else []))
                    continue
                blocks = []
                for j, part in enumerate(item.content):
                    if isinstance(part, OutputText | InputText):
                        text = part.text
                    elif isinstance(part, Refusal):
                        text = part.refusal
                    else:
                        raise invalid_request(
                            f"an assistant message cannot hold a {part.type} part", f"{param}.content[{j}].type"
                        )
                    if text:
                        blocks.append({"type": "text", "text": text})
                turns.add("assistant", *blocks)
            elif isinstance(item.content, str):
                turns.add("user", {"type": "text", "text": item.content})
            else:
                turns.add("user", *(_user_block(p, f"{param}.content[{j}]") for j, p in enumerate(item.content)))
        elif isinstance(item, FunctionCallItem):
            block = {"type": "tool_use", "id": item.call_id, "name": item.name, "input": _arguments(item, param)}
            turns.add("assistant", block)
        elif isinstance(item, FunctionCallOutputItem):
            result: dict[str, Any] = {"type": "tool_result", "tool_use_id": item.call_id}
            if isinstance(item.output, str):
                result["content"] = item.output
            else:
                result["content"] = [_user_block(p, f"{param}.output[{j}]") for j, p in enumerate(item.output)]
            turns.add("user", result)
        elif isinstance(item, ReasoningItem):
            # Thinking goes back only with the signature Anthropic gave it (else the upstream refuses the turn);
            # reasoning from another provider, with none, is left out.
            text = "".join(part.text for part in item.content or [])
            if item.encrypted_content and text:
                turns.add("assistant", {"type": "thinking", "thinking": text, "signature": item.encrypted_content})
            elif item.encrypted_content:
                turns.add("assistant", {"type": "redacted_thinking", "data": item.encrypted_content})
        elif isinstance(item, ItemReference):
            # The app resolves references against the store before a provider sees the request.
            raise invalid_request("item_reference was not resolved", param, code="unsupported_parameter")
        else:
            raise not_implemented(f"input items of type {item.type!r}", f"{param}.type")
    if not turns.messages:
        raise invalid_request("the request has no input", "input")
    if turns.messages[0]["role"] != "user":
        raise invalid_request("an Anthropic conversation must open with a user message", "input")
    body: dict[str, Any] = {
        "model": upstream_model,
        "messages": turns.messages,
        "max_tokens": request.max_output_tokens or default_max_tokens,
        "stream": True,
    }
    if system:
        body["system"] = "\n\n".join(system)
    _tools(request, body)
    effort = request.reasoning.effort if request.reasoning is not None else None
    if effort in THINKING_BUDGET:
        _thinking(request, body, THINKING_BUDGET[effort], default_max_tokens)
    for key in ("temperature", "top_p"):
        value = getattr(request, key)
        if value is not None:
            body[key] = value
    for key in ("presence_penalty", "frequency_penalty"):
        if getattr(request, key) is not None:
            raise invalid_request(f"{key} is not supported by Anthropic upstreams", key, code="unsupported_parameter")
    fmt = request.text.format if request.text else None
    if isinstance(fmt, TextFormatJsonSchema):
        # Anthropic's structured outputs (GA: `output_config.format`, no beta header): the text is JSON of the
        # schema. Its `name`, `description` and `strict` have no place there (the decoding is always constrained).
        body["output_config"] = {"format": {"type": "json_schema", "schema": fmt.schema_}}
    elif isinstance(fmt, TextFormatJsonObject):
        raise invalid_request(
            "text.format json_object has no Anthropic equivalent: use json_schema (Anthropic's structured outputs)",
            "text.format",
            code="unsupported_parameter",
        )
    if request.metadata and "user_id" in request.metadata:
        body["metadata"] = {"user_id": request.metadata["user_id"]}
    return body


def _thinking(request: ResponsesRequest, body: dict[str, Any], budget: int, default_max_tokens: int) -> None:
    """Extended thinking for `reasoning.effort`. The budget counts inside `max_tokens` (as reasoning counts inside
    `max_output_tokens`) and must be below it: a request's own limit is kept and the budget fitted under it (under
    1,024 tokens, Anthropic's least, there is no thinking); without one, `max_tokens` is the budget plus the
    provider's default. Anthropic refuses thinking with a forced tool or a changed temperature: a 400 here."""
    if request.max_output_tokens is not None:
        budget = min(budget, request.max_output_tokens - 1)
        if budget < 1024:
            return
    else:
        body["max_tokens"] = budget + default_max_tokens
    if body.get("tool_choice", {}).get("type") in ("any", "tool"):
        raise invalid_request(
            "an Anthropic upstream cannot force a tool call while it thinks (reasoning.effort)", "tool_choice"
        )
    if request.temperature is not None and request.temperature != 1:
        raise invalid_request(
            "an Anthropic upstream takes no temperature but 1 while it thinks (reasoning.effort)", "temperature"
        )
    body["thinking"] = {"type": "enabled", "budget_tokens": budget}


def _tools(request: ResponsesRequest, body: dict[str, Any]) -> None:
    tools = request.function_tools()
    names = {tool.name for tool in tools}
    choice = request.tool_choice
    upstream_choice: dict[str, Any] | None = None
    if choice == "auto":
        upstream_choice = {"type": "auto"}
    elif choice == "required":
        upstream_choice = {"type": "any"}
    elif choice == "none":
        upstream_choice = {"type": "none"}
    elif choice is not None and not isinstance(choice, str):
        if choice.type == "function":
            if choice.name not in names:
                raise invalid_request(f"tool_choice names {choice.name!r}, which is not in tools", "tool_choice.name")
            upstream_choice = {"type": "tool", "name": choice.name}
        else:  # allowed_tools: a hard constraint, so only the allowed tools go upstream
            allowed = {t.name for t in choice.tools}
            unknown = allowed - names
            if unknown:
                raise invalid_request(f"tool_choice.tools names {sorted(unknown)}, not in tools", "tool_choice.tools")
            tools = [tool for tool in tools if tool.name in allowed]
            upstream_choice = {"type": {"required": "any"}.get(choice.mode or "auto", choice.mode or "auto")}
    if not tools:
        if upstream_choice is not None and upstream_choice["type"] in ("any", "tool"):
            raise invalid_request("tool_choice asks for a tool call but the request has no tools", "tool_choice")
        return
    body["tools"] = [
        {
            "name": tool.name,
            **({"description": tool.description} if tool.description is not None else {}),
            "input_schema": tool.parameters or {"type": "object", "properties": {}},
        }
        for tool in tools
    ]
    if request.parallel_tool_calls is False:
        upstream_choice = upstream_choice or {"type": "auto"}
        if upstream_choice["type"] != "none":
            upstream_choice["disable_parallel_tool_use"] = True
    if upstream_choice is not None:
        body["tool_choice"] = upstream_choice


class AnthropicDialect:
    """`POST {base_url}/messages` with the key in `x-api-key` and the `anthropic-version` header; the body from
    `messages_request`, the answer read by `AnthropicTranslator`."""

    path = "/messages"
    translator = _core.AnthropicTranslator
    keeps_encrypted_reasoning = True

    def __init__(self, config: ProviderConfig) -> None:
        self.headers = [(b"anthropic-version", config.anthropic_version.encode())]
        self.default_max_tokens = config.default_max_tokens

    def auth_header(self, key: str) -> tuple[bytes, bytes]:
        return (b"x-api-key", key.encode())

    def request_body(self, request: ResponsesRequest, upstream_model: str) -> dict[str, Any]:
        return messages_request(request, upstream_model, default_max_tokens=self.default_max_tokens)
