"""What the MCP client hands back: a server's tools (`McpTool`), a tool call's result as text (`CallResult`), and the
one error a listing raises (`McpError`).

A tool's result reaches the model as text, so `render` turns the MCP content blocks into text here: text blocks as
they are, `structuredContent` as JSON when no block is text, other kinds described in brackets. Output and error
text are both capped (`cap`) at a byte budget, cut on a character boundary, with a note saying what was cut.

This module imports nothing of the `mcp` package (it reads the result objects by their attributes), so importing
`ferroute.tools.mcp` costs nothing until a pool is used.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any


class McpError(Exception):
    """Listing a server's tools failed: unreachable, refused by the URL guard, or a protocol error. The message is
    safe to show to a client: it never holds a header value (credentials), nor the server's URL."""


@dataclass(frozen=True, slots=True)
class McpTool:
    """One tool a server lists."""

    name: str
    description: str | None
    input_schema: dict[str, Any]
    annotations: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class CallResult:
    """A tool call's outcome as text for the model: exactly one of `output` and `error` is not None. `error` is set
    when the tool reported `isError` (its text), timed out, the server failed, or the session broke."""

    output: str | None = None
    error: str | None = None
    # What failed, for the item's `error` object: "tool" (the tool said `isError`), "timeout" (`call_timeout`
    # passed), "server" (the server or the session failed).
    kind: str = field(default="tool", compare=False)

    def __post_init__(self) -> None:
        if (self.output is None) == (self.error is None):
            raise ValueError("a CallResult has exactly one of output and error")


def cap(text: str, max_bytes: int) -> str:
    """`text` cut to `max_bytes` of UTF-8 (on a character boundary), with a note of the cut and the original size."""
    data = text.encode()
    if len(data) <= max_bytes:
        return text
    kept = data[:max_bytes].decode(errors="ignore")  # (drops only a character the cut split: the rest is valid)
    return f"{kept}\n[output cut: {len(kept.encode())} of {len(data)} bytes]"


def _size(data: str) -> int:
    """The byte size base64 `data` decodes to, counted without decoding it."""
    data = data.strip()
    return len(data) * 3 // 4 - data[-2:].count("=")


def _describe(block: Any) -> tuple[str, bool]:
    """One content block as text, and whether it was text (rather than a description of something else)."""
    kind = getattr(block, "type", None)
    if kind == "text":
        return str(block.text), True
    if kind in ("image", "audio"):
        return f"[{kind}: {block.mime_type}, {_size(block.data)} bytes]", False
    if kind == "resource_link":
        return f"[resource link: {block.uri}]", False
    if kind == "resource":
        resource = block.resource
        text = getattr(resource, "text", None)
        if text is not None:
            return str(text), True
        mime = getattr(resource, "mime_type", None) or "application/octet-stream"
        return f"[resource: {resource.uri}, {mime}, {_size(getattr(resource, 'blob', ''))} bytes]", False
    return f"[{kind or 'unknown'} content]", False


def render(result: Any, max_bytes: int) -> CallResult:
    """An MCP `CallToolResult` as a `CallResult`: text blocks joined with "\\n", `structuredContent` as JSON when no
    block is text, other blocks described in brackets; capped at `max_bytes`."""
    parts: list[str] = []
    any_text = False
    for block in result.content:
        text, is_text = _describe(block)
        parts.append(text)
        any_text = any_text or is_text
    structured = getattr(result, "structured_content", None)
    if not any_text and structured is not None:
        parts.insert(0, json.dumps(structured, ensure_ascii=False))
    text = "\n".join(parts)
    if getattr(result, "is_error", False):
        return CallResult(error=cap(text or "the tool reported an error", max_bytes))
    return CallResult(output=cap(text, max_bytes))


def tool(listed: Any) -> McpTool:
    """An MCP `Tool` as an `McpTool`."""
    annotations = listed.annotations
    return McpTool(
        name=listed.name,
        description=listed.description,
        input_schema=dict(listed.input_schema),
        annotations=None if annotations is None else annotations.model_dump(by_alias=True, exclude_none=True),
    )
