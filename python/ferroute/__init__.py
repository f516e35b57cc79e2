"""ferroute: an Open Responses router with a Rust streaming core, and that core's Python API.

The fast parts are importable on their own:

- `SSEDecoder` / `SSEEvent` / `encode_sse`: WHATWG server-sent events, incremental.
- `JsonStream` / `parse_partial_json`: incremental JSON with partial values (O(n) over a stream).
- `ResponseEventParser`: the bytes of any Open Responses stream → checked event dicts + the response.
- `ChatCompletionsTranslator` / `AnthropicTranslator` / `ResponsesTranslator`: a Chat Completions / Anthropic
  Messages / OpenAI Responses stream → Open Responses SSE frames.
"""

from ferroute._core import (
    AnthropicTranslator,
    ChatCompletionsTranslator,
    JSONError,
    JsonStream,
    ResponseEventParser,
    ResponsesTranslator,
    SSEDecoder,
    SSEError,
    SSEEvent,
    StreamError,
    UpstreamError,
    __version__,
    encode_sse,
    parse_partial_json,
)

__all__ = [
    "AnthropicTranslator",
    "ChatCompletionsTranslator",
    "JSONError",
    "JsonStream",
    "ResponseEventParser",
    "ResponsesTranslator",
    "SSEDecoder",
    "SSEError",
    "SSEEvent",
    "StreamError",
    "UpstreamError",
    "__version__",
    "encode_sse",
    "parse_partial_json",
]
