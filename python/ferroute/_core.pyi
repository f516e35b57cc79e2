"""ferroute's native core (Rust). Import the public names from `ferroute`, not from here."""

from collections.abc import Mapping
from typing import Any, final

__version__: str

# --- errors ------------------------------------------------------------------------------------

class SSEError(ValueError):
    """A server-sent-events stream broke a configured bound (line length, event size).

    The message names the limit and the byte offset in the stream where it was exceeded."""

class JSONError(ValueError):
    """Malformed JSON, or JSON nested deeper than `max_depth`; the message gives the byte offset."""

class StreamError(ValueError):
    """An Open Responses stream broke the spec's grammar (bad sequence number, a delta outside an open
    part, an event for an unknown item, a missing terminal event, …); the message says what and where."""

class UpstreamError(ValueError):
    """An upstream body that is not what its dialect promises (whole-body conversion only; a bad
    stream is reported in-band as `error` + `response.failed` instead)."""

# --- SSE ---------------------------------------------------------------------------------------

@final
class SSEEvent:
    """One dispatched server-sent event."""

    @property
    def event(self) -> str | None:
        """The `event:` field, or None when the event had none (the WHATWG default type `message`)."""
    @property
    def data(self) -> str:
        """The `data:` lines joined with `\\n`."""
    @property
    def id(self) -> str | None:
        """The last event ID in force when the event was dispatched, or None if the stream never set one."""
    @property
    def retry(self) -> int | None:
        """The reconnection time in ms set by this event's block, or None."""
    def __init__(self, data: str, event: str | None = None, id: str | None = None, retry: int | None = None) -> None: ...
    def __eq__(self, other: object) -> bool: ...
    def __hash__(self) -> int: ...

@final
class SSEDecoder:
    """Incremental WHATWG server-sent-events decoder: feed it bytes as they arrive."""

    def __init__(self, *, max_line_length: int = 1_048_576, max_event_size: int = 16_777_216) -> None: ...
    def feed(self, data: bytes) -> list[SSEEvent]:
        """Decode the next bytes of the stream and return the events they complete."""
    def close(self) -> list[SSEEvent]:
        """End of stream: an unfinished event is discarded (WHATWG); returns what the end completes."""
    @property
    def position(self) -> int:
        """Bytes fed so far."""

def encode_sse(event: str | None, data: str) -> bytes:
    """One SSE frame: `event: <event>` (when given) and one `data:` line per line of `data`, then a blank line."""

# --- incremental JSON --------------------------------------------------------------------------

@final
class JsonStream:
    """A JSON document arriving in pieces (e.g. streamed function-call arguments).

    Each `feed` costs time proportional to the piece, not to everything so far."""

    def __init__(self, *, max_depth: int = 256) -> None: ...
    def feed(self, text: str | bytes) -> None:
        """Parse the next piece; raises JSONError on malformed JSON or too deep nesting."""
    def value(self) -> Any:
        """The partial value so far: complete members, plus a string cut mid-way as its prefix
        (jiter's `trailing-strings` partial mode); None before anything is known."""
    @property
    def complete(self) -> bool:
        """True once one whole top-level value has been read."""

def parse_partial_json(text: str | bytes, *, max_depth: int = 256) -> Any:
    """Parse a possibly truncated JSON document, as `JsonStream().feed(text); .value()`."""

# --- Open Responses streams --------------------------------------------------------------------

@final
class ResponseEventParser:
    """Bytes of an Open Responses SSE stream (from any server) → event dicts, checked and accumulated."""

    def __init__(self, *, max_line_length: int = 1_048_576, max_event_size: int = 16_777_216) -> None: ...
    def feed(self, data: bytes) -> list[dict[str, Any]]:
        """Decode, parse and check the next bytes; returns the events they complete, in order."""
    @property
    def response(self) -> dict[str, Any] | None:
        """The response object accumulated so far (equal to the terminal event's once the stream ends)."""
    def close(self) -> None:
        """End of stream: raises StreamError unless the stream ended with a terminal event."""

@final
class ChatCompletionsTranslator:
    """Chat Completions stream (or body) → Open Responses SSE frames, sequence-numbered.

    `request` is the Open Responses request whose settings the response echoes (JSON bytes/str or a
    mapping). `model` overrides the echoed model; `response_id` and `created_at` are generated when
    omitted."""

    def __init__(
        self,
        request: bytes | str | Mapping[str, Any] | None = None,
        *,
        model: str | None = None,
        response_id: str | None = None,
        created_at: int | None = None,
        max_line_length: int = 1_048_576,
        max_event_size: int = 16_777_216,
    ) -> None: ...
    def feed(self, upstream: bytes) -> bytes:
        """Translate the next upstream bytes; returns the Open Responses SSE frames they produce
        (the first call also returns `response.created` and `response.in_progress`)."""
    def finish(self) -> bytes:
        """End of the upstream stream: the frames that close the response and `data: [DONE]`."""
    def convert(self, body: bytes) -> bytes:
        """A whole non-streaming `chat.completion` body → the response object as JSON bytes."""
    @property
    def response_id(self) -> str: ...
    @property
    def status(self) -> str:
        """`in_progress` until the terminal event; then `completed`, `incomplete` or `failed`."""
    def response_json(self) -> bytes:
        """The response object as it stands (the terminal event's `response` once finished)."""

def _panic(message: str) -> None:
    """Test hook: panics inside Rust, to show a panic becomes an exception, not an abort."""
