"""ferroute's native core (Rust). Import the public names from `ferroute`, not from here."""

from collections.abc import Callable, Iterable, Mapping
from types import TracebackType
from typing import Any, Final, Literal, Protocol, final

__all__ = [
    "OUTPUT_ITEMS",
    "SEALED_PREFIX",
    "UPSTREAM_ITEM",
    "AnthropicTranslator",
    "ChatCompletionsTranslator",
    "ChunkedDecoder",
    "ChunkedError",
    "JSONError",
    "JsonStream",
    "LoadGenerator",
    "MockUpstream",
    "ResponseEventParser",
    "ResponsesTranslator",
    "SSEDecoder",
    "SSEError",
    "SSEEvent",
    "Secrets",
    "StreamError",
    "UpstreamError",
    "__version__",
    "_panic",
    "encode_spans",
    "encode_sse",
    "item_id",
    "new_id",
    "parse_partial_json",
]
__version__: str

# --- errors ------------------------------------------------------------------------------------

class SSEError(ValueError):
    """A server-sent-events stream broke a configured bound (line length, event size), or `encode_sse`
    was given an event name containing a line break.

    For a bound, the message names the limit and the byte offset in the stream where it was exceeded."""

class JSONError(ValueError):
    """Malformed JSON, or JSON nested deeper than `max_depth`; the message gives the byte offset."""

class StreamError(ValueError):
    """An Open Responses stream broke the spec's grammar (bad sequence number, a delta outside an open
    part, an event for an unknown item, a missing terminal event, …); the message says what and where."""

class UpstreamError(ValueError):
    """An upstream body that is not what its dialect promises (whole-body conversion only; a bad
    stream is reported in-band as `error` + `response.failed` instead)."""

class ChunkedError(ValueError):
    """Malformed HTTP/1.1 chunked framing; the message names the problem and its byte offset in the body."""

# --- HTTP/1.1 chunked bodies (the router's upstream transport) ----------------------------------

@final
class ChunkedDecoder:
    """Removes HTTP/1.1 chunked transfer coding from a body, one socket read at a time."""

    def __new__(cls) -> ChunkedDecoder: ...
    def feed(self, data: bytes) -> bytes:
        """The payload bytes `data` holds (b"" if none). Raises ChunkedError on malformed framing, and
        again on every later call."""
    @property
    def done(self) -> bool:
        """The body has ended: the last chunk and its trailers were read."""
    @property
    def extra(self) -> bool:
        """Bytes came after the end of the body (the connection cannot be reused)."""

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
        """The last event ID in force when the event was dispatched, or None if the stream never set one
        (an `id` field with an empty value resets it to `""`)."""
    @property
    def retry(self) -> int | None:
        """The reconnection time in ms set by this event's block, or None."""
    def __new__(
        cls, data: str, event: str | None = None, id: str | None = None, retry: int | None = None
    ) -> SSEEvent: ...
    def __eq__(self, other: object, /) -> bool: ...
    def __ne__(self, other: object, /) -> bool: ...
    def __hash__(self) -> int: ...

@final
class SSEDecoder:
    """Incremental WHATWG server-sent-events decoder: feed it bytes as they arrive."""

    def __new__(cls, *, max_line_length: int = 1_048_576, max_event_size: int = 16_777_216) -> SSEDecoder: ...
    def feed(self, data: bytes) -> list[SSEEvent]:
        """Decode the next bytes of the stream and return the events they complete.

        Raises SSEError when a bound is exceeded; every later call raises it again."""
    def close(self) -> list[SSEEvent]:
        """End of stream: an unfinished event is discarded (WHATWG); returns what the end completes."""
    @property
    def position(self) -> int:
        """Bytes fed so far."""

def encode_sse(event: str | None, data: str) -> bytes:
    """One SSE frame: `event: <event>` (when given) and one `data:` line per line of `data`, then a blank line.

    Raises SSEError if `event` contains CR or LF."""

# --- incremental JSON --------------------------------------------------------------------------

@final
class JsonStream:
    """A JSON document arriving in pieces (e.g. streamed function-call arguments).

    The parser keeps its state between pieces, so each `feed` costs time proportional to the piece, not
    to everything so far. Partial values are exactly jiter's `from_json(prefix, partial_mode="trailing-strings")`
    for any prefix of a valid document: complete members; open arrays/objects as far as they go; a string
    value cut mid-way as its decoded prefix (an escape or UTF-8 character cut mid-way left out); a number
    cut where it is already a number (`12`, `1.5`; not `-`, `1.`, `1e`). An unfinished key, or a member
    whose value has not started or is an unfinished `true`/`false`/`null`, is left out. Two differences
    from jiter: an unfinished top-level scalar gives `None` where jiter raises, and anything but whitespace
    after the top-level value is an error (jiter in partial mode ignores it); `NaN`/`Infinity` are rejected.
    Lone surrogate escapes are errors (as jiter, serde_json); numbers out of float range give ±inf (as
    `json.loads`); big integers are exact `int`s; a duplicate key keeps the last value (as `json.loads`)."""

    def __new__(cls, *, max_depth: int = 256) -> JsonStream: ...
    def feed(self, text: str | bytes) -> None:
        """Parse the next piece (`bytes` may cut a UTF-8 character anywhere; the rest comes with the next
        piece). Raises JSONError on malformed JSON or nesting deeper than `max_depth`, with the byte offset
        in the whole input; after an error every call raises it again."""
    def value(self) -> Any:
        """The partial value so far (see the class docstring); None before anything is known.

        Returns the live object: the same list/dict each call, which later `feed` calls keep updating in
        place (members are added as they complete), so a call costs O(1) plus the text a trailing partial
        string gained since the last call, not O(document). Between calls the object holds every completed
        member; calling `value()` brings the trailing partial member up to date (the object is correct as
        of the last `value()` call). Treat it as read-only while streaming; `copy.deepcopy` it to keep a
        snapshot. A `str` you hold never changes: the growing string is extended in place only while
        nothing else references it (if you keep the previous partial string, the call copies it instead)."""
    @property
    def complete(self) -> bool:
        """True once one whole top-level value has been read (a top-level number only once something
        follows it, since more digits could come)."""

def parse_partial_json(text: str | bytes, *, max_depth: int = 256) -> Any:
    """Parse a possibly truncated JSON document, as `JsonStream().feed(text); .value()` (a fresh object);
    raises JSONError on malformed JSON."""

# --- Open Responses streams --------------------------------------------------------------------

@final
class ResponseEventParser:
    """Bytes of an Open Responses SSE stream (from any server) → event dicts, checked and accumulated.

    Checks the spec's streaming grammar: `response.created` (or `queued`) first (an `error` event may
    come before it); `sequence_number` on every event, each one more than the last; output items added
    in `output_index` order and closed by `output_item.done`; content and summary parts opened and
    closed in order inside an open item; every delta inside an open part of a known item; each `.done`
    text equal to its deltas; exactly one terminal event (`response.completed | incomplete | failed`),
    then nothing but `data: [DONE]`.
    Lenient where real servers are: several items open at once, the legacy `response.reasoning_text.*`
    names, a `.done` without deltas, data-only frames, with or without `[DONE]`; unknown and
    slug-prefixed (`x:…`) event types pass through with only their `sequence_number` checked."""

    def __new__(cls, *, max_line_length: int = 1_048_576, max_event_size: int = 16_777_216) -> ResponseEventParser: ...
    def feed(self, data: bytes) -> list[dict[str, Any]]:
        """Decode, parse and check the next bytes; returns the events they complete, in order (as
        `json.loads` would give them; `[DONE]` is not an event).

        Raises StreamError on a malformed stream (the message names the problem, the event's index and
        sequence_number and the byte offset); the events of `data` before the bad one are kept in
        `response`, and every later call raises the same error."""
    @property
    def response(self) -> dict[str, Any] | None:
        """The response object accumulated so far: the latest `response.created`/`in_progress` snapshot
        with `output` built from the streamed items, parts and deltas; the terminal event's `response`
        once it has arrived. None before the first event. The same dict is returned until the stream
        advances."""
    def close(self) -> None:
        """End of stream: raises StreamError unless the stream ended with a terminal event (an unfinished
        trailing event counts as truncation)."""

@final
class Secrets:
    """The router's secrets (upstream keys, its clients' keys, the encryption key), masked as `[redacted]` in every
    error a response ends with (an upstream's message can echo the key it was sent). Made once; pass it to each
    translator as `secrets=`. Secrets shorter than 8 characters are not masked (they would mask words)."""

    def __new__(cls, secrets: list[str]) -> Secrets: ...
    def mask(self, text: str) -> str:
        """`text` with every secret replaced by `[redacted]`."""
    def __len__(self) -> int:
        """How many secrets are masked."""

class Translator(Protocol):
    """What every translator does: an upstream dialect's stream (or whole body) → Open Responses SSE frames,
    sequence-numbered. Typing only: there is no `Translator` at runtime; `ChatCompletionsTranslator`,
    `AnthropicTranslator` and `ResponsesTranslator` are the classes, and each is made the same way:

    `Cls(request=None, *, model=None, store=None, response_id=None, created_at=None, max_line_length=1_048_576,
    max_event_size=16_777_216, framing="sse", reasoning="keep", seal=None, secrets=None, started=False)`: `request`
    is the Open Responses request whose settings the response echoes (JSON bytes/str or a mapping). `model` and
    `store` override the echoed values; `response_id` and `created_at` are generated when omitted. Each class's
    docstring says what of its dialect it reads.

    `started`: the response's `response.created` and `response.in_progress` already went out, written by the
    translator of an upstream call that failed before its first content (a failover: give the same
    `response_id` and `created_at`); this one writes them no more and its `sequence_number`s go on from 2.

    `framing`: `"sse"` (`event:`/`data:` frames, `data: [DONE]` after the terminal event) or `"json"`
    (one JSON object per event, each ending in a newline, no `[DONE]`: the WebSocket transport; see
    `last_events`). Every method that returns frames uses it.

    `reasoning`: what the client sees of reasoning items' `encrypted_content`, in the frames and in
    `client_response_json()` (`response_json()` always keeps the upstream's own, for later turns):
    `"keep"` as the upstream gave it; `"strip"` `null` where the upstream gave one (a client that did not
    ask for `reasoning.encrypted_content`); `"seal"` the router's blob on every reasoning item, made once
    per item when it closes by `seal(payload)`: `payload` is the UTF-8 JSON
    `{"content":[…],"summary":[…],"upstream":"…"}` (the item's arrays as it has them; `upstream` only
    where the upstream gave an `encrypted_content` that does not start with `ferroute1.`), and the
    callable returns the blob (`ReasoningCipher.seal_payload`). An exception it raises comes out of the
    translator call that closed the item (that item's blob is then `null`).

    One response may span several upstream calls (a server-side tool loop): `next_turn()` before each
    call's first `feed`, `end_turn()` at its end, `turn_result()` to see how it ended, then another
    turn, or `finish()` / `fail()` / `cancel()`. The router's own items (a hosted tool's call) go in
    with `open_item` / `item_event` / `done_item`, in the same sequence and `output`. The model's calls to
    the tools the router runs itself are held (`hold`): `turn_result()` reports them, the client never sees
    them, and `turn_items()` gives the turn's items to send back upstream."""

    def feed(self, upstream: bytes) -> bytes:
        """Translate the next upstream bytes; returns the Open Responses SSE frames they produce
        (the first call also returns `response.created` and `response.in_progress`)."""
    def finish(self) -> bytes:
        """End of the upstream stream: the frames that close the response and `data: [DONE]` (a stream that
        did not end as its dialect ends one fails as truncated: see the class)."""
    def fail(self, message: str, *, code: str = "server_error", type: str = "server_error") -> bytes:
        """End the response as failed for a reason outside the upstream's bytes (timeout, shutdown, …):
        the `error` event, `response.failed` and `data: [DONE]`; b"" if the response already ended."""
    def convert(self, body: bytes) -> bytes:
        """A whole non-streaming body of the dialect (see the class) → the response object as JSON bytes;
        UpstreamError for a body that is not one. Calls to held names (`hold`) are left out of its `output`
        and reported nowhere (a tool loop uses `feed_whole` and `turn_result`); the translator is unchanged."""
    @property
    def response_id(self) -> str: ...
    @property
    def status(self) -> str:
        """`in_progress` until the terminal event; then `completed`, `incomplete` or `failed` (or
        `cancelled` after `cancel()`)."""
    @property
    def upstream_events(self) -> int:
        """Upstream events with data so far that are not keep-alives (SSE comments and blank lines are no events;
        Anthropic's `ping` is a keep-alive), over every turn; a whole body counts one. The first-event timeout
        waits for the first."""
    @property
    def output_items(self) -> int:
        """How many items the response's `output` holds so far, the one still streaming included: 0 until the
        upstream's first content (before it, a router may still move the request to another upstream)."""
    @property
    def usage(self) -> tuple[int, int, int, int] | None:
        """The response's token usage so far, summed over its upstream calls and `add_usage`:
        `(input_tokens, output_tokens, cached_tokens, reasoning_tokens)`; None while no upstream said."""
    def response_json(self) -> bytes:
        """The response object as it stands (the terminal event's `response` once finished), as stored:
        reasoning items keep the upstream's own `encrypted_content`."""
    def feed_whole(self, body: bytes) -> bytes:
        """A whole upstream body where a stream was asked for: the frames the stream saying the same would
        have given, its end included (`finish()` then returns b""; in a turn the turn ends instead).
        UpstreamError, nothing written, if the body is not this dialect's (fail the response then)."""
    def next_turn(self) -> None:
        """Start an upstream call whose end does not end the response: a fresh stream decoder and dialect
        state; sequence numbers, `output` and `output_index` go on, usage is summed over calls. Call it
        before every call's first `feed` (the first call's too). Writes nothing."""
    def end_turn(self) -> bytes:
        """End of the current call's upstream stream: the frames that close its open item, without a
        terminal event (see `turn_result`). Outside a turn, as `finish`."""
    def turn_result(self) -> dict[str, Any] | None:
        """How the current call ended, once it has: `{"status": "completed" | "incomplete" | "failed",
        "reason": str | None (incomplete), "error": {"type", "code", "message"} | None (failed),
        "function_calls": [{"output_index", "id", "call_id", "name", "arguments", "held"}, …]}` (the calls the
        model made in this call, held ones too, in the order it made them); None while it runs. A held call
        (`"held": True`, see `hold`) has no item: its `output_index` and `id` are None (a live one's are its
        item's). `arguments` is the call's JSON text (`"{}"` where the upstream gave none and its dialect means
        an empty object)."""
    def turn_calls(self) -> list[dict[str, Any]]:
        """The function calls the model has made so far in the current call, as `turn_result()["function_calls"]`
        has them (a call's `arguments` so far while it is being made)."""
    def hold(
        self,
        names: Iterable[str],
        *,
        live: Mapping[str, bytes | str | Mapping[str, Any]] | None = None,
        prefix: str = "item",
        events: str | None = None,
    ) -> None:
        """Hold the model's calls to these function names from now on (the tools the router runs itself),
        replacing the names held before; none are held until this is called. A held call writes no events,
        takes no `output_index`, is not in `output` and does not close the item streaming around it; its
        arguments are gathered all the same and `turn_result()` reports it. TypeError for a single str.

        `live` maps some of the names to the item their calls show at once (`{"type": "mcp_call", …,
        "arguments": "", "status": "in_progress"}`, its id made from `prefix`): the call opens it (closing the
        open item), its arguments stream as `<events>_arguments.delta`, and once complete (the next item opens,
        or the turn ends) `<events>_arguments.done` and `<events>.in_progress` are written and the item waits
        for `close_live`. What the upstream sends meanwhile goes out after the item closes, numbered after it.
        `turn_result()` reports such a call held, with its item's `output_index` and `id`. A waiting item the
        router never closes ends `incomplete` (with `<events>.failed`) when the response ends. ValueError for a
        live name that is not held or an item that is not a JSON object."""
    def close_live(self, type: str, item: bytes | str | Mapping[str, Any]) -> bytes:
        """Close the oldest waiting live call's item (see `hold`): the event `type` (`response.mcp_call.completed`
        …), `response.output_item.done` with `item`, its final JSON (`id` first; it may leave it out), then the
        frames written behind it. ValueError (and nothing written) if no item waits."""
    def waiting_items(self) -> int:
        """How many live calls' items wait for `close_live`."""
    def adopt(self, previous: Translator, *, copy: bool = False) -> None:
        """Go on with the response `previous` wrote (its id, items, sequence numbers, turns and usage), in this
        translator's dialect: a tool loop whose upstream failed before its first content moves to another target.
        This translator keeps its own reasoning policy and secrets; `previous` is done (it writes nothing more).
        With `copy`, a copy of the response as it was when `previous`'s current turn began (`next_turn`; what the
        turn has read since, its usage, is not taken) and `previous` goes on: a hedge raced beside a tool loop's
        upstream call, the loser dropped. Call `next_turn` before the next upstream call. TypeError if `previous`
        is no translator; ValueError (with `copy`) if its turn has an item already or it is in no turn."""
    def turn_items(self) -> bytes:
        """The items the current call added to `output` (from its first item to the end; every item outside
        turns), as a JSON array of the items as `response_json()` holds them (reasoning keeps the upstream's
        own `encrypted_content`): what the next upstream call sends back. Held calls are not items; items still
        streaming are left out, as in `output`."""
    def cancel(self) -> bytes:
        """Cancel the response while in progress: the open item closes `incomplete`, and the stream gets
        what a failed one gets (`error` with code `cancelled`, `response.failed`, `data: [DONE]`); from then
        on `status` is `cancelled` and `response_json()` shows `status: cancelled`, `error: null`. b"" if it
        had already ended."""
    def open_item(self, item: bytes | str | Mapping[str, Any], *, prefix: str = "item") -> tuple[str, bytes]:
        """Start an item the router makes itself (a hosted tool's call, `status: in_progress`), closing the
        open one: `response.output_item.added` with `item` as given, `id` first (made from `prefix` where the
        item has none). Allowed between turns. Returns the item's id and the frames; ValueError if `item` is
        not a JSON object or the response has ended."""
    def item_event(self, type: str, members: bytes | str | Mapping[str, Any] | None = None) -> bytes:
        """An event of the open router-made item (e.g. `response.mcp_call.in_progress`):
        `{"type", "sequence_number", "item_id", "output_index"}` and the members of the JSON object
        `members`. ValueError if no router-made item is open."""
    def done_item(self, item: bytes | str | Mapping[str, Any]) -> bytes:
        """Close the open router-made item: `response.output_item.done` with `item`, its final JSON (`id`
        first; it may leave it out), which `output` then holds as given."""
    def last_events(self) -> list[bytes]:
        """The frames the last call returned, one per event: with `framing="json"` each event's JSON object
        (no newline: one WebSocket message each); with SSE each frame with its blank line."""
    def queued_json(self) -> bytes:
        """The response object with `status: queued` (a background response stored before it runs)."""
    def add_usage(
        self, *, input_tokens: int = 0, output_tokens: int = 0, cached_tokens: int = 0, reasoning_tokens: int = 0
    ) -> None:
        """Count tokens spent outside this response's upstream calls (a nested response the router ran for a tool)
        in its `usage`, added to the sum over turns (`total_tokens` grows by input + output)."""
    def mark_unstored(self) -> bytes:
        """The response was not stored after all (the store failed): `store` is false in the response object from
        now on. Once the response has ended, returns its terminal event written again (the same `sequence_number`,
        and `data: [DONE]` in SSE framing) to send in place of the one held back; else b""."""
    def client_response_json(self) -> bytes:
        """The response object as the client sees it (a non-streamed body): reasoning items'
        `encrypted_content` under the `reasoning` policy, as in the frames."""

@final
class ChatCompletionsTranslator(Translator):
    """Chat Completions stream (or body) → Open Responses SSE frames (a `Translator`).

    `finish` fails a stream that gave no `finish_reason` as truncated. `convert` takes a whole non-streaming
    `chat.completion` body."""

    def __new__(
        cls,
        request: bytes | str | Mapping[str, Any] | None = None,
        *,
        model: str | None = None,
        store: bool | None = None,
        response_id: str | None = None,
        created_at: int | None = None,
        max_line_length: int = 1_048_576,
        max_event_size: int = 16_777_216,
        framing: Literal["sse", "json"] = "sse",
        reasoning: Literal["keep", "strip", "seal"] = "keep",
        seal: Callable[[bytes], str] | None = None,
        secrets: Secrets | None = None,
        started: bool = False,
    ) -> ChatCompletionsTranslator: ...

@final
class AnthropicTranslator(Translator):
    """Anthropic Messages stream (or body) → Open Responses SSE frames (a `Translator`).

    `thinking` blocks become reasoning items (their `signature` the item's `encrypted_content`),
    `redacted_thinking` reasoning items with only `encrypted_content`, `text` blocks a message's
    `output_text`, `tool_use` blocks `function_call` items; `stop_reason` `max_tokens` ends the response
    `incomplete` (`max_output_tokens`), `refusal` `incomplete` (`content_filter`); an `error` event fails
    it. Server-tool blocks and unknown events are skipped. `finish` fails a stream without `message_stop`
    or a `stop_reason` as truncated. `convert` takes a whole non-streaming Messages body
    (`{"type": "message", …}`; an `{"type": "error", …}` body gives a failed response)."""

    def __new__(
        cls,
        request: bytes | str | Mapping[str, Any] | None = None,
        *,
        model: str | None = None,
        store: bool | None = None,
        response_id: str | None = None,
        created_at: int | None = None,
        max_line_length: int = 1_048_576,
        max_event_size: int = 16_777_216,
        framing: Literal["sse", "json"] = "sse",
        reasoning: Literal["keep", "strip", "seal"] = "keep",
        seal: Callable[[bytes], str] | None = None,
        secrets: Secrets | None = None,
        started: bool = False,
    ) -> AnthropicTranslator: ...

@final
class ResponsesTranslator(Translator):
    """OpenAI Responses stream (or a whole response object) → the router's Open Responses SSE frames (a
    `Translator`).

    The upstream's events are rebuilt under this response (its id, sequence numbers, item ids, `model`): message
    text and refusals, raw reasoning (`reasoning_text` or `reasoning` deltas), reasoning summaries, the reasoning
    item's `encrypted_content`, function calls (arguments from the deltas, or from the `.done` events when none
    came), the terminal status and usage; an `error` event fails it. Items of other types (hosted tools the
    upstream ran) are skipped. `finish` fails a stream without a terminal event as truncated. `convert` takes a
    whole response object (`{"object": "response", …}`) and gives this response (an `{"error": …}` body gives
    a failed response)."""

    def __new__(
        cls,
        request: bytes | str | Mapping[str, Any] | None = None,
        *,
        model: str | None = None,
        store: bool | None = None,
        response_id: str | None = None,
        created_at: int | None = None,
        max_line_length: int = 1_048_576,
        max_event_size: int = 16_777_216,
        framing: Literal["sse", "json"] = "sse",
        reasoning: Literal["keep", "strip", "seal"] = "keep",
        seal: Callable[[bytes], str] | None = None,
        secrets: Secrets | None = None,
        started: bool = False,
    ) -> ResponsesTranslator: ...

# --- ids ---------------------------------------------------------------------------------------

OUTPUT_ITEMS: Final[int]
"""Output indexes below this get an id derived from their response's (`item_id`); inputs take the rest."""

SEALED_PREFIX: Final[str]
"""How a reasoning blob the router sealed begins (`ReasoningCipher`): the writer never seals one again."""

UPSTREAM_ITEM: Final[str]
"""How an OpenAI Responses upstream's reasoning `encrypted_content` is kept: this, its item id, `:`, its blob."""

def new_id(prefix: str) -> str:
    """A new id: `prefix_` + 48 hex characters, the time in milliseconds (12) then 144 random bits from the
    OS's CSPRNG, so ids sort by creation time."""

def item_id(prefix: str, response_id: str, index: int) -> str:
    """The id of output item `index` of response `response_id`: `prefix_` + the response id's 48 hex
    characters + `index` in 4 more. A response id of another shape, or an index from `OUTPUT_ITEMS` on,
    gets a `new_id`."""

def encode_spans(spans: Iterable[Any]) -> bytes:
    """An OpenTelemetry SDK span batch (`ReadableSpan`s) as an OTLP `ExportTraceServiceRequest` in protobuf, the
    message the SDK's `encode_spans(spans)` builds, grouped by resource and instrumentation scope. Attribute values
    as the SDK encodes them (str, bool, int, float, bytes, sequences, mappings); another type is a `TypeError`."""

# --- load testing ------------------------------------------------------------------------------

@final
class MockUpstream:
    """A mock LLM upstream on its own threads (no GIL): `POST …/chat/completions`, `…/messages` and
    `…/responses` answered with Chat Completions, Anthropic Messages and OpenAI Responses streams (or
    whole bodies) built once at start. Started by the constructor; `stop()` (or leaving a `with`
    block) closes every connection and joins the threads.

    Timing: `ttft_ms` before the first token, then a gap per token, fixed (`gap_ms`) or uniform in
    `gap_ms..gap_max_ms`. Content: `tokens` text tokens, `reasoning_tokens` first, and with
    `tool_call` a function call whose arguments arrive in fragments. Failures at `error_rate` (0-1):
    `error_kind` is `status:<code>`, `drop` (connection closed mid-stream) or `stall` (half the
    answer, then silence)."""

    def __new__(
        cls,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        ttft_ms: float = 0.0,
        gap_ms: float = 0.0,
        gap_max_ms: float | None = None,
        tokens: int = 20,
        reasoning_tokens: int = 0,
        tool_call: bool = False,
        error_rate: float = 0.0,
        error_kind: str = "status:503",
        chunked: bool = True,
        seed: int = 0,
    ) -> MockUpstream: ...
    @property
    def host(self) -> str: ...
    @property
    def port(self) -> int:
        """The port it listens on (the one chosen when 0 was asked for)."""
    @property
    def url(self) -> str:
        """`http://host:port`."""
    @property
    def stopped(self) -> bool: ...
    def stats(self) -> dict[str, Any]:
        """connections, requests, streams, events, bytes, errors_injected, cpu_s (the server threads'
        CPU time), uptime_s; still readable after `stop()`."""
    def events_per_stream(self, dialect: str) -> int:
        """SSE events in one complete streaming answer ("chat_completions", "anthropic", "responses")."""
    def wait(self, timeout: float | None = None) -> bool:
        """Block without the GIL until stopped (True) or `timeout` seconds pass (False); signal
        handlers run (Ctrl-C raises KeyboardInterrupt)."""
    def stop(self) -> None: ...
    def __enter__(self) -> MockUpstream: ...
    def __exit__(self, a: type[BaseException] | None, b: BaseException | None, c: TracebackType | None) -> None: ...

@final
class LoadGenerator:
    """A load run against an Open Responses endpoint (`url`: `http://host:port/path`), started by the
    constructor on its own threads: `concurrency` clients in a loop, or `rate` requests/s started on
    schedule (open model), for `duration` seconds or `requests` requests after `warmup` seconds.
    Every stream is checked by the Rust grammar checker and a broken one is an error
    (`check_grammar=False` only counts and times SSE events: for servers that do not speak Open
    Responses, reported as such)."""

    def __new__(
        cls,
        url: str,
        body: bytes,
        *,
        stream: bool = True,
        concurrency: int | None = None,
        rate: float | None = None,
        duration: float | None = None,
        requests: int | None = None,
        warmup: float = 0.0,
        timeout: float = 30.0,
        require_done: bool = True,
        headers: list[str] = ...,
        max_in_flight: int = 10_000,
        check_grammar: bool = True,
    ) -> LoadGenerator: ...
    def progress(self) -> dict[str, Any]:
        """elapsed_s, measuring, completed, failed, events, in_flight."""
    @property
    def finished(self) -> bool: ...
    def abort(self) -> None:
        """Abandon the requests in flight (counted as `aborted`)."""
    def result(self) -> str:
        """Wait (without the GIL) and return the report as JSON text; once only."""

def _panic(message: str) -> None:
    """Test hook: panics inside Rust, to show a panic becomes an exception, not an abort."""
