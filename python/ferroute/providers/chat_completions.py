"""OpenAI Chat Completions upstreams (vLLM, Ollama, llama.cpp, TGI, OpenRouter, OpenAI, …).

`chat_request` maps an Open Responses request onto a `/chat/completions` body (SPEC.md, "Request
side"); the answer is always asked for as a stream with usage, and read by the Rust
`ChatCompletionsTranslator`. Non-streaming client requests stream internally too, so the first-event
and idle timeouts mean the same thing for both. `ChatCompletionsDialect` is this kind's part of a provider
(the HTTP side is `http.HttpUpstream`, the same for every kind; the built-in mock speaks this dialect too).
"""

from __future__ import annotations

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


def _text_only(content: str | list[Any], param: str, role: str) -> str:
    if isinstance(content, str):
        return content
    texts: list[str] = []
    for i, part in enumerate(content):
        if isinstance(part, InputText | OutputText):
            texts.append(part.text)
        else:
            raise invalid_request(f"a {role} message takes text parts only, not {part.type}", f"{param}[{i}].type")
    return "\n".join(texts)


def _user_part(part: Any, param: str) -> dict[str, Any]:
    if isinstance(part, InputText):
        return {"type": "text", "text": part.text}
    if isinstance(part, InputImage):
        if part.image_url is None:
            raise invalid_request(
                "input_image needs image_url (a URL or a data URL); file_id needs a files API this router lacks",
                f"{param}.image_url",
            )
        image: dict[str, Any] = {"url": part.image_url}
        if part.detail is not None:
            image["detail"] = part.detail
        return {"type": "image_url", "image_url": image}
    if isinstance(part, InputFile):
        if part.file_data is None:
            raise invalid_request(
                "input_file: Chat Completions upstreams take a file inline only; send file_data (base64) with a "
                "filename (file_id and file_url are not supported)",
                f"{param}.file_data",
            )
        data = part.file_data
        if not data.startswith("data:"):
            data = f"data:application/octet-stream;base64,{data}"
        file: dict[str, Any] = {"file_data": data}
        if part.filename is not None:
            file["filename"] = part.filename
        return {"type": "file", "file": file}
    if isinstance(part, InputVideo):
        raise invalid_request("input_video is not supported by Chat Completions upstreams", f"{param}.type")
    raise invalid_request(f"a user message cannot hold a {part.type} part", f"{param}.type")


def chat_messages(request: ResponsesRequest, *, send_reasoning: bool) -> list[dict[str, Any]]:
    """The request's instructions and input items as Chat Completions messages."""
    messages: list[dict[str, Any]] = []
    if request.instructions:
        messages.append({"role": "system", "content": request.instructions})
    # The assistant turn being assembled: reasoning, text and tool calls that belong together.
    assistant: dict[str, Any] | None = None

    def flush() -> None:
        nonlocal assistant
        if assistant is not None:
            assistant.setdefault("content", None if assistant.get("tool_calls") else "")
            messages.append(assistant)
            assistant = None

    for i, item in enumerate(request.items()):
        param = f"input[{i}]"
        if isinstance(item, MessageItem):
            if item.role == "assistant":
                if assistant is not None and ("content" in assistant or "tool_calls" in assistant):
                    flush()
                assistant = assistant or {"role": "assistant"}
                if isinstance(item.content, str):
                    assistant["content"] = item.content
                else:
                    texts, refusals = [], []
                    for j, part in enumerate(item.content):
                        if isinstance(part, OutputText | InputText):
                            texts.append(part.text)
                        elif isinstance(part, Refusal):
                            refusals.append(part.refusal)
                        else:
                            raise invalid_request(
                                f"an assistant message cannot hold a {part.type} part", f"{param}.content[{j}].type"
                            )
                    assistant["content"] = "".join(texts)
                    if refusals:
                        assistant["refusal"] = "".join(refusals)
                continue
            flush()
            if item.role in ("system", "developer"):
                # `developer` is OpenAI's newer name for `system`; most open servers only know the latter.
                messages.append({"role": "system", "content": _text_only(item.content, f"{param}.content", item.role)})
            elif isinstance(item.content, str):
                messages.append({"role": "user", "content": item.content})
            else:
                parts = [_user_part(p, f"{param}.content[{j}]") for j, p in enumerate(item.content)]
                if len(parts) == 1 and parts[0]["type"] == "text":
                    messages.append({"role": "user", "content": parts[0]["text"]})
                else:
                    messages.append({"role": "user", "content": parts})
        elif isinstance(item, FunctionCallItem):
            assistant = assistant or {"role": "assistant"}
            assistant.setdefault("tool_calls", []).append(
                {"id": item.call_id, "type": "function", "function": {"name": item.name, "arguments": item.arguments}}
            )
        elif isinstance(item, FunctionCallOutputItem):
            flush()
            if isinstance(item.output, str):
                output = item.output
            else:
                output = "\n".join(_text_only_part(p, f"{param}.output[{j}]") for j, p in enumerate(item.output))
            messages.append({"role": "tool", "tool_call_id": item.call_id, "content": output})
        elif isinstance(item, ReasoningItem):
            if assistant is not None and ("content" in assistant or "tool_calls" in assistant):
                flush()
            text = "".join(part.text for part in item.content or [])
            if send_reasoning and text:
                assistant = assistant or {"role": "assistant"}
                assistant["reasoning_content"] = assistant.get("reasoning_content", "") + text
        elif isinstance(item, ItemReference):
            # The app resolves references against the store before a provider sees the request.
            raise invalid_request("item_reference was not resolved", f"{param}", code="unsupported_parameter")
        else:
            raise not_implemented(f"input items of type {item.type!r}", f"{param}.type")
    flush()
    if not messages:
        raise invalid_request("the request has no input", "input")
    return messages


def _text_only_part(part: Any, param: str) -> str:
    if isinstance(part, InputText):
        return str(part.text)
    raise invalid_request(
        f"a function_call_output sent to a Chat Completions upstream takes text parts only, not {part.type}",
        f"{param}.type",
    )


def chat_request(
    request: ResponsesRequest, upstream_model: str, *, max_tokens_field: str = "max_tokens", send_reasoning: bool = True
) -> dict[str, Any]:
    """The `/chat/completions` body for an Open Responses request (always streaming, with usage)."""
    body: dict[str, Any] = {
        "model": upstream_model,
        "messages": chat_messages(request, send_reasoning=send_reasoning),
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    tools = request.function_tools()
    names = {tool.name for tool in tools}
    choice = request.tool_choice
    if isinstance(choice, str) or choice is None:
        upstream_choice: Any = choice
    elif choice.type == "function":
        if choice.name not in names:
            raise invalid_request(f"tool_choice names {choice.name!r}, which is not in tools", "tool_choice.name")
        upstream_choice = {"type": "function", "function": {"name": choice.name}}
    else:  # allowed_tools: a hard constraint, so only the allowed tools go upstream
        allowed = {t.name for t in choice.tools}
        unknown = allowed - names
        if unknown:
            raise invalid_request(f"tool_choice.tools names {sorted(unknown)}, not in tools", "tool_choice.tools")
        tools = [tool for tool in tools if tool.name in allowed]
        upstream_choice = choice.mode or "auto"
    if tools:
        body["tools"] = [
            {"type": "function", "function": tool.model_dump(exclude={"type"}, exclude_none=True)} for tool in tools
        ]
        if upstream_choice is not None:
            body["tool_choice"] = upstream_choice
        if request.parallel_tool_calls is not None:
            body["parallel_tool_calls"] = request.parallel_tool_calls
    elif isinstance(upstream_choice, dict) or upstream_choice == "required":
        raise invalid_request("tool_choice asks for a tool call but the request has no tools", "tool_choice")
    fmt = request.text.format if request.text else None
    if isinstance(fmt, TextFormatJsonSchema):
        schema: dict[str, Any] = {"name": fmt.name, "schema": fmt.schema_}
        if fmt.description is not None:
            schema["description"] = fmt.description
        if fmt.strict is not None:
            schema["strict"] = fmt.strict
        body["response_format"] = {"type": "json_schema", "json_schema": schema}
    elif isinstance(fmt, TextFormatJsonObject):
        body["response_format"] = {"type": "json_object"}
    for key in ("temperature", "top_p", "presence_penalty", "frequency_penalty"):
        value = getattr(request, key)
        if value is not None:
            body[key] = value
    if request.max_output_tokens is not None:
        body[max_tokens_field] = request.max_output_tokens
    if request.reasoning is not None and request.reasoning.effort is not None:
        body["reasoning_effort"] = request.reasoning.effort
    if request.include and "message.output_text.logprobs" in request.include:
        body["logprobs"] = True  # (each chunk's tokens come in `logprobs.content`)
        if request.top_logprobs:
            body["top_logprobs"] = request.top_logprobs
    return body


class ChatCompletionsDialect:
    """`POST {base_url}/chat/completions` with a Bearer key; the body from `chat_request`, the answer read by
    `ChatCompletionsTranslator`."""

    path = "/chat/completions"
    translator = _core.ChatCompletionsTranslator
    keeps_encrypted_reasoning = False

    def __init__(self, config: ProviderConfig) -> None:
        self.headers: list[tuple[bytes, bytes]] = []
        self.max_tokens_field = config.max_tokens_field
        self.send_reasoning = config.send_reasoning_content

    def auth_header(self, key: str) -> tuple[bytes, bytes]:
        return (b"authorization", b"Bearer " + key.encode())

    def request_body(self, request: ResponsesRequest, upstream_model: str) -> dict[str, Any]:
        return chat_request(
            request, upstream_model, max_tokens_field=self.max_tokens_field, send_reasoning=self.send_reasoning
        )
