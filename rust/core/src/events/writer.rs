//! The sequencing writer: turns "text arrived for the message", "a function call started", "the
//! upstream finished" into the Open Responses event stream, and accumulates the response object.
//!
//! One writer spans one response: every event it emits carries the next `sequence_number`, items
//! get `output_index` 0, 1, 2… in the order they open, and only one item streams at a time (the
//! spec's grammar: `output_item.added` … `output_item.done` before the next item). Nothing here
//! knows an upstream dialect, so a server-side tool loop can drive one writer across several
//! upstream calls (one sequence, one `output` list).
//!
//! The writer also carries what used to be Python's post-processing: the reasoning policy (what a client
//! sees of `encrypted_content`: the upstream's, `null`, or the router's sealed blob, while the stored object
//! keeps the upstream's), `cancelled` and `queued` views, and items the router makes itself (a hosted
//! tool's call) between the upstream's. The model's calls to the tools the router runs are *held*
//! ([`ResponseWriter::set_held_names`]): kept out of the stream and `output`, reported to the tool loop only.
//! A held name may be *live* ([`ResponseWriter::set_live_calls`]): its call then opens the router's own item at
//! once and streams its arguments into it; once they are complete the item *waits* for the router to run the
//! call and close it ([`ResponseWriter::close_live`]). What the upstream sends meanwhile is written behind
//! it: its frames are kept aside, numbered after the two events the waiting item's close will take, and go out
//! when it closes. So items still stream one at a time, in `output_index` order, with no gap in the sequence.
//!
//! Events are written straight into a reused byte buffer, as SSE frames or as bare JSON objects
//! (one per line, for the WebSocket transport); JSON is written by hand for the fixed envelope and
//! by `serde_json` for strings and echoed request values.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};

use super::ids::{item_id, new_id};
use super::raw::{object_body, Members, RawJsonError};
use super::redact::Secrets;
use crate::json::scan::find_string_end;

/// An error message is cut to this many bytes (an upstream's can be a whole page).
pub const MAX_ERROR_MESSAGE: usize = 1_000;

/// `write!` into a byte buffer, which cannot fail.
macro_rules! put {
    ($out:expr, $($arg:tt)*) => {{
        use std::io::Write as _;
        std::write!($out, $($arg)*).expect("writing to a Vec cannot fail")
    }};
}

/// How events are framed on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Framing {
    /// `event: <type>\ndata: <json>\n\n`, and `data: [DONE]\n\n` after the terminal event.
    #[default]
    Sse,
    /// One JSON object per event followed by `\n`; no `[DONE]` (the WebSocket transport).
    JsonLines,
}

/// The response's `status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    InProgress,
    Completed,
    Incomplete,
    Failed,
    /// Cancelled while in progress ([`ResponseWriter::cancel`]).
    Cancelled,
}

impl Status {
    /// The spec's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::InProgress => "in_progress",
            Status::Completed => "completed",
            Status::Incomplete => "incomplete",
            Status::Failed => "failed",
            Status::Cancelled => "cancelled",
        }
    }
}

/// Seals a reasoning item for a client: given the plaintext payload
/// (`{"content":[…],"summary":[…],"upstream":…}`, UTF-8 JSON), returns the blob for `encrypted_content`,
/// or `None` (the client then sees `null`) when it cannot.
pub type SealFn = Box<dyn FnMut(&[u8]) -> Option<String> + Send + Sync>;

/// What a client sees of a reasoning item's `encrypted_content`. The stored response object
/// ([`ResponseWriter::response_json`]) always keeps the upstream's own (a later turn sends it back).
#[derive(Default)]
pub enum ReasoningPolicy {
    /// As the upstream gave it (absent where it gave none).
    #[default]
    Keep,
    /// `null` where the upstream gave one: an upstream's own blob (Anthropic's signature, OpenAI's
    /// `encrypted_content`) goes to a client only when it asked for `reasoning.encrypted_content`.
    Strip,
    /// The router's own sealed blob on every reasoning item, made once per item when it closes. The
    /// payload holds the item's `content` and `summary` arrays as the item has them, and `upstream`: the
    /// upstream's own `encrypted_content`, where it gave one that is not already a router blob
    /// (`ferroute1.`), as `python/ferroute/store/crypto.py` seals it.
    Seal(SealFn),
}

impl std::fmt::Debug for ReasoningPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ReasoningPolicy::Keep => "Keep",
            ReasoningPolicy::Strip => "Strip",
            ReasoningPolicy::Seal(_) => "Seal(..)",
        })
    }
}

/// The prefix of a blob the router sealed (Python's `ReasoningCipher` uses this one): never sealed again as `upstream`.
pub const SEALED_PREFIX: &str = "ferroute1.";

/// Which `encrypted_content` a written reasoning item carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum View {
    /// The upstream's own: the stored response, and clients under [`ReasoningPolicy::Keep`].
    Stored,
    /// `null` in place of the upstream's own.
    Strip,
    /// The sealed blob.
    Sealed,
}

/// Token usage, already in Open Responses terms.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub total_tokens: u64,
    pub cached_tokens: u64,
    pub reasoning_tokens: u64,
}

/// An error that ends the response: the streaming `error` event and the response's `error`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorInfo {
    /// The error `type` (e.g. `model_error`, `server_error`).
    pub kind: String,
    pub code: String,
    pub message: String,
    pub param: Option<String>,
}

/// How a response ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Completed,
    /// `status: incomplete` with `incomplete_details.reason` (`max_output_tokens`, `content_filter`).
    Incomplete(String),
    /// `error` event, then `response.failed` carrying the error.
    Failed(ErrorInfo),
}

/// The kinds of streamed text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextKind {
    /// Assistant message `output_text` part.
    OutputText,
    /// Assistant message `refusal` part.
    Refusal,
    /// Raw reasoning trace: a `reasoning` item's `reasoning_text` content part.
    Reasoning,
}

/// The request settings a response echoes, rendered once to JSON (they never change mid-stream).
#[derive(Debug, Clone)]
pub struct ResponseSettings {
    model: String,
    /// `store` (the request's, default true), apart so the router can say what it really did.
    store: bool,
    /// `,"key":value` for every echoed field except `model` and `store`.
    rendered: String,
    /// `include` asks for `message.output_text.logprobs`: an upstream's token log probabilities are kept (else
    /// dropped, as some upstreams send them unasked).
    logprobs: bool,
}

impl Default for ResponseSettings {
    fn default() -> Self {
        Self::from_map(&Map::new())
    }
}

impl ResponseSettings {
    /// Settings from an Open Responses request body (JSON); fields it leaves out get the spec's defaults.
    pub fn from_request(request: &[u8]) -> Result<Self, serde_json::Error> {
        let value: Value = serde_json::from_slice(request)?;
        match value {
            Value::Object(map) => Ok(Self::from_map(&map)),
            _ => Err(serde::de::Error::custom("the request must be a JSON object")),
        }
    }

    /// Settings from an already parsed request object.
    pub fn from_map(request: &Map<String, Value>) -> Self {
        let given = |key: &str| request.get(key).filter(|v| !v.is_null());
        let or = |key: &str, default: Value| given(key).cloned().unwrap_or(default);
        let text = match given("text") {
            Some(Value::Object(text)) if text.get("format").is_some_and(|f| !f.is_null()) => {
                let mut text = text.clone();
                if let Some(Value::Object(format)) = text.get_mut("format") {
                    if format.get("type").and_then(Value::as_str) == Some("json_schema") {
                        // The response shape of a json_schema format has all four keys; `strict` is a bool.
                        format.entry("description").or_insert(Value::Null);
                        let strict = format.get("strict").and_then(Value::as_bool).unwrap_or(false);
                        format.insert("strict".into(), strict.into());
                    }
                }
                Value::Object(text)
            }
            Some(Value::Object(text)) => {
                let mut text = text.clone();
                text.insert("format".into(), serde_json::json!({"type": "text"}));
                Value::Object(text)
            }
            _ => serde_json::json!({"format": {"type": "text"}}),
        };
        let reasoning = match given("reasoning") {
            Some(Value::Object(r)) => serde_json::json!({
                "effort": r.get("effort").cloned().unwrap_or(Value::Null),
                "summary": r.get("summary").cloned().unwrap_or(Value::Null),
            }),
            _ => Value::Null,
        };
        let tools = match given("tools") {
            Some(Value::Array(tools)) => Value::Array(tools.iter().map(normalise_tool).collect()),
            Some(other) => other.clone(),
            None => Value::Array(Vec::new()),
        };
        let fields: [(&str, Value); 20] = [
            ("previous_response_id", or("previous_response_id", Value::Null)),
            ("instructions", or("instructions", Value::Null)),
            ("tools", tools),
            ("tool_choice", or("tool_choice", "auto".into())),
            ("truncation", or("truncation", "disabled".into())),
            ("parallel_tool_calls", or("parallel_tool_calls", true.into())),
            ("text", text),
            ("top_p", or("top_p", 1.0.into())),
            ("presence_penalty", or("presence_penalty", 0.0.into())),
            ("frequency_penalty", or("frequency_penalty", 0.0.into())),
            ("top_logprobs", or("top_logprobs", 0.into())),
            ("temperature", or("temperature", 1.0.into())),
            ("reasoning", reasoning),
            ("max_output_tokens", or("max_output_tokens", Value::Null)),
            ("max_tool_calls", or("max_tool_calls", Value::Null)),
            ("background", or("background", false.into())),
            ("service_tier", or("service_tier", "default".into())),
            ("metadata", or("metadata", Value::Object(Map::new()))),
            ("safety_identifier", or("safety_identifier", Value::Null)),
            ("prompt_cache_key", or("prompt_cache_key", Value::Null)),
        ];
        let mut rendered = String::with_capacity(512);
        for (key, value) in fields {
            rendered.push_str(",\"");
            rendered.push_str(key);
            rendered.push_str("\":");
            rendered.push_str(&value.to_string());
        }
        let model = match given("model") {
            Some(Value::String(model)) => model.clone(),
            _ => String::new(),
        };
        let store = given("store").and_then(Value::as_bool).unwrap_or(true);
        let logprobs = given("include")
            .and_then(Value::as_array)
            .is_some_and(|include| include.iter().any(|i| i == "message.output_text.logprobs"));
        Self {
            model,
            store,
            rendered,
            logprobs,
        }
    }

    /// Settings of a stand-in writer (nothing rendered).
    fn placeholder() -> Self {
        Self {
            model: String::new(),
            store: false,
            rendered: String::new(),
            logprobs: false,
        }
    }

    /// Echo `model` instead of the request's (the router echoes what the client sent).
    pub fn set_model(&mut self, model: &str) {
        model.clone_into(&mut self.model);
    }

    /// Echo `store` instead of the request's (false where the router keeps nothing).
    pub fn set_store(&mut self, store: bool) {
        self.store = store;
    }

    /// The model string the response echoes.
    pub fn model(&self) -> &str {
        &self.model
    }
}

/// A function tool as the response object shows it: `description`, `parameters` and `strict` always
/// present (null when the request left them out). Other tool types are echoed as sent.
fn normalise_tool(tool: &Value) -> Value {
    match tool {
        Value::Object(fields) if fields.get("type").and_then(Value::as_str) == Some("function") => {
            let mut fields = fields.clone();
            for key in ["description", "parameters", "strict"] {
                fields.entry(key).or_insert(Value::Null);
            }
            Value::Object(fields)
        }
        other => other.clone(),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ItemStatus {
    InProgress,
    Completed,
    Incomplete,
}

impl ItemStatus {
    fn as_str(self) -> &'static str {
        match self {
            ItemStatus::InProgress => "in_progress",
            ItemStatus::Completed => "completed",
            ItemStatus::Incomplete => "incomplete",
        }
    }
}

#[derive(Debug, Clone)]
struct Part {
    kind: TextKind,
    text: String,
    /// An `output_text` part's token log probabilities so far: the elements of its `logprobs` array, written (see
    /// [`ResponseWriter::text_delta_with_logprobs`]), without the brackets.
    logprobs: Vec<u8>,
}

#[derive(Debug, Clone)]
enum Body {
    /// Assistant message; the last part is the open one while `part_open`.
    Message { parts: Vec<Part>, part_open: bool },
    /// Reasoning; `content` holds at most one `reasoning_text` part; `summary` the `summary_text` parts, the
    /// last one open while `summary_open`.
    Reasoning {
        content: Option<Part>,
        part_open: bool,
        summary: Vec<String>,
        summary_open: bool,
        encrypted_content: Option<String>,
        /// The client's blob under [`ReasoningPolicy::Seal`], made when the item closes (`None`: none made).
        sealed: Option<String>,
    },
    FunctionCall {
        call_id: String,
        name: String,
        arguments: String,
    },
    /// An item the router makes itself (a hosted tool's call): its members as it started (`id` apart), and
    /// its final JSON once the router gave it. `live`: opened for a live call ([`LiveCall`]).
    Hosted {
        members: Members,
        done: Option<Vec<u8>>,
        live: Option<LiveState>,
    },
}

/// A held function name whose calls the router shows live ([`ResponseWriter::set_live_calls`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveCall {
    /// The item a call opens (`{"type":"mcp_call",…,"arguments":"","status":"in_progress"}`); its id is made
    /// from `prefix` (where it has none).
    pub item: Members,
    /// The id prefix (`mcp` makes `mcp_…`).
    pub prefix: String,
    /// The events' base: `<events>_arguments.delta`, `<events>_arguments.done`, `<events>.in_progress`, and
    /// `<events>.failed` when the response ends before the router closed the item (e.g. `response.mcp_call`).
    pub events: String,
}

impl LiveCall {
    /// A live call's description; an error if `item` is not a JSON object or `events` could not be an event
    /// type.
    pub fn new(item: &[u8], prefix: &str, events: &str) -> Result<Self, RawJsonError> {
        check_event_type(events)?;
        Ok(Self {
            item: Members::parse(item, "the live item")?,
            prefix: prefix.to_owned(),
            events: events.to_owned(),
        })
    }
}

/// A live call's item: which held call of its turn it is and its event types.
#[derive(Debug, Clone)]
struct LiveState {
    held: usize,
    events: Arc<str>,
    delta: Arc<str>,
}

/// A live call's item whose arguments are complete, waiting for the router to close it: the `sequence_number`
/// its two closing events take, and the frames written since, which go out after them.
#[derive(Debug, Clone)]
struct Waiting {
    index: usize,
    seq: u64,
    frames: Vec<u8>,
}

/// A call to a held function name: kept out of the stream and `output` (the router runs it and writes its own
/// item), its arguments gathered here.
#[derive(Debug, Clone)]
struct HeldCall {
    call_id: String,
    name: String,
    arguments: String,
    /// How many items there were when it was made: its place among them, for the order of the turn's calls.
    before: usize,
    /// The item a live call opened (its `output_index`).
    item: Option<usize>,
}

/// The bit that marks the index [`ResponseWriter::open_function_call`] returns for a held call (the rest is its
/// place among the turn's held calls). No response has 2^63 items, so it never collides with an `output_index`.
const HELD_CALL: usize = 1 << (usize::BITS - 1);

#[derive(Debug, Clone)]
struct Item {
    id: String,
    /// `,"item_id":…,"output_index":…` as `write_locator` writes them, kept for the delta events:
    /// ~300 fewer instructions per text delta than writing them again each time.
    locator: Vec<u8>,
    status: ItemStatus,
    body: Body,
}

/// Builds one response's event stream and its final object.
#[derive(Debug)]
#[allow(clippy::struct_excessive_bools)] // emit, started, stopped, turns: independent, not states of one machine
pub struct ResponseWriter {
    id: String,
    created_at: u64,
    completed_at: Option<u64>,
    settings: ResponseSettings,
    framing: Framing,
    reasoning: ReasoningPolicy,
    /// Masked in the error messages an upstream sends back (`redact`).
    secrets: Option<Arc<Secrets>>,
    /// False for the whole-body converter: state is kept, no events are written.
    emit: bool,
    started: bool,
    seq: u64,
    out: Vec<u8>,
    items: Vec<Item>,
    /// The item streaming now (always the last one) if it is not closed yet.
    open: Option<usize>,
    status: Status,
    /// No more events for this turn (a turn's end) or this response (its terminal event).
    stopped: bool,
    /// A turn's end does not end the response ([`begin_turn`](Self::begin_turn)).
    turns: bool,
    /// How the current turn ended, once it has.
    turn_outcome: Option<Outcome>,
    /// The `output_index` of the current turn's first item.
    turn_first_item: usize,
    /// This turn's usage (an upstream reports its own call's).
    usage: Option<Usage>,
    /// The sum of the earlier turns' usage.
    past_usage: Option<Usage>,
    /// Function names whose calls are held ([`set_held_names`](Self::set_held_names)).
    held_names: HashSet<String>,
    /// The current turn's held calls, in the order the model made them.
    held: Vec<HeldCall>,
    /// Held names whose calls open an item at once ([`set_live_calls`](Self::set_live_calls)).
    live: HashMap<String, LiveCall>,
    /// Live calls' items waiting to be closed, oldest first (see the module doc).
    waiting: Vec<Waiting>,
    error: Option<ErrorInfo>,
    incomplete_reason: Option<String>,
}

impl Usage {
    /// Both turns' tokens.
    #[must_use]
    pub fn plus(self, other: Usage) -> Usage {
        Usage {
            input_tokens: self.input_tokens.saturating_add(other.input_tokens),
            output_tokens: self.output_tokens.saturating_add(other.output_tokens),
            total_tokens: self.total_tokens.saturating_add(other.total_tokens),
            cached_tokens: self.cached_tokens.saturating_add(other.cached_tokens),
            reasoning_tokens: self.reasoning_tokens.saturating_add(other.reasoning_tokens),
        }
    }
}

/// A function call the model made in a turn (for a tool loop to run), as its item has it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FunctionCallRef<'a> {
    /// Its item's `output_index`; `None` for a held call, which has no item (a live one has its own).
    pub output_index: Option<usize>,
    /// The item id (`fc_…`, or a live call's own); `None` for a held call.
    pub id: Option<&'a str>,
    pub call_id: &'a str,
    pub name: &'a str,
    pub arguments: &'a str,
    /// A call to a held name ([`ResponseWriter::set_held_names`]): in neither the stream nor `output`.
    pub held: bool,
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl ResponseWriter {
    /// A writer for a new response; `id` and `created_at` are generated when `None`.
    pub fn new(settings: ResponseSettings, id: Option<String>, created_at: Option<u64>, framing: Framing) -> Self {
        Self {
            id: id.unwrap_or_else(|| new_id("resp")),
            created_at: created_at.unwrap_or_else(unix_now),
            completed_at: None,
            settings,
            framing,
            reasoning: ReasoningPolicy::Keep,
            secrets: None,
            emit: true,
            started: false,
            seq: 0,
            out: Vec::with_capacity(4096),
            items: Vec::new(),
            open: None,
            status: Status::InProgress,
            stopped: false,
            turns: false,
            turn_outcome: None,
            turn_first_item: 0,
            usage: None,
            past_usage: None,
            held_names: HashSet::new(),
            held: Vec::new(),
            live: HashMap::new(),
            waiting: Vec::new(),
            error: None,
            incomplete_reason: None,
        }
    }

    /// A writer that stands in for a moment (a dialect's state is rebuilt around the real one).
    pub(crate) fn placeholder() -> Self {
        let mut writer = Self::silent(ResponseSettings::placeholder(), Some(String::new()), Some(0));
        writer.out = Vec::new();
        writer
    }

    /// A writer that keeps the response state but writes no events (whole-body conversion).
    pub fn silent(settings: ResponseSettings, id: Option<String>, created_at: Option<u64>) -> Self {
        let mut writer = Self::new(settings, id, created_at, Framing::JsonLines);
        writer.emit = false;
        writer
    }

    /// What clients see of reasoning items' `encrypted_content`; set before the first reasoning item closes.
    #[must_use]
    pub fn with_reasoning(mut self, policy: ReasoningPolicy) -> Self {
        self.reasoning = policy;
        self
    }

    /// Mask `secrets` in every error this response ends with (an upstream's message may echo a key).
    #[must_use]
    pub fn with_secrets(mut self, secrets: Option<Arc<Secrets>>) -> Self {
        self.secrets = secrets.filter(|s| !s.is_empty());
        self
    }

    /// `outcome` with the secrets masked in its error, and then its message cut to `MAX_ERROR_MESSAGE` bytes (in
    /// that order: a cut first could leave the start of a key behind).
    fn redacted(&self, mut outcome: Outcome) -> Outcome {
        let Outcome::Failed(error) = &mut outcome else {
            return outcome;
        };
        if let Some(secrets) = &self.secrets {
            secrets.mask_string(&mut error.message);
            secrets.mask_string(&mut error.code);
            secrets.mask_string(&mut error.kind);
            if let Some(param) = error.param.as_mut() {
                secrets.mask_string(param);
            }
        }
        if error.message.len() > MAX_ERROR_MESSAGE {
            let mut cut = MAX_ERROR_MESSAGE;
            while !error.message.is_char_boundary(cut) {
                cut -= 1;
            }
            error.message.truncate(cut);
            error.message.push('…');
        }
        outcome
    }

    /// Go on with `previous`'s response (another upstream, of another dialect perhaps, after the one it was
    /// written for failed before its content): its id, items, sequence, turns and usage, with this writer's
    /// reasoning policy and secrets (a sealed blob names the upstream that made it). Frames not taken from
    /// `previous` are dropped.
    pub fn take_over(&mut self, previous: ResponseWriter) {
        let reasoning = std::mem::take(&mut self.reasoning);
        let secrets = self.secrets.take();
        *self = previous;
        self.reasoning = reasoning;
        self.secrets = secrets;
        self.out.clear();
    }

    /// A copy of this response as it was when its current turn began ([`begin_turn`](Self::begin_turn)), for
    /// another upstream raced beside the current one (a hedge): [`take_over`](Self::take_over) it, and the
    /// turn that wins goes on with the response while the other is dropped. The turn's state so far (its
    /// usage, its held calls) is left out; its reasoning policy and secrets are the default ones (`take_over`
    /// keeps the taker's own). `None` once the turn has an item (its content went to the copy's source) or
    /// outside a turn.
    pub fn fork(&self) -> Option<ResponseWriter> {
        if !self.turns || self.items.len() != self.turn_first_item || self.turn_outcome.is_some() {
            return None;
        }
        Some(Self {
            id: self.id.clone(),
            created_at: self.created_at,
            completed_at: self.completed_at,
            settings: self.settings.clone(),
            framing: self.framing,
            reasoning: ReasoningPolicy::Keep,
            secrets: None,
            emit: self.emit,
            started: self.started,
            seq: self.seq,
            out: Vec::with_capacity(4096),
            items: self.items.clone(),
            open: self.open,
            status: self.status,
            stopped: false,
            turns: true,
            turn_outcome: None,
            turn_first_item: self.turn_first_item,
            usage: None,
            past_usage: self.past_usage,
            held_names: self.held_names.clone(),
            held: Vec::new(),
            live: self.live.clone(),
            waiting: self.waiting.clone(),
            error: self.error.clone(),
            incomplete_reason: self.incomplete_reason.clone(),
        })
    }

    /// Whether the request asked for the output text's log probabilities (`include`): a dialect reads an
    /// upstream's only then.
    pub fn keeps_logprobs(&self) -> bool {
        self.settings.logprobs
    }

    /// How events are framed.
    pub fn framing(&self) -> Framing {
        self.framing
    }

    /// The response id (`resp_…`).
    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn status(&self) -> Status {
        self.status
    }

    /// True once the terminal event has been written, or the current turn has ended: events that come
    /// now are not written.
    pub fn is_finished(&self) -> bool {
        self.stopped
    }

    /// Start an upstream turn whose end does not end the response: from now on [`finish`](Self::finish)
    /// (what a dialect calls when its upstream says how the call ended) closes the open item and records the
    /// turn's outcome ([`turn_outcome`](Self::turn_outcome)) without writing the terminal event. The same
    /// sequence, `output` list and `output_index` series go on; usage is summed over turns. Call it before
    /// the first turn too; [`finish_response`](Self::finish_response) ends the response. Nothing once the
    /// response has ended.
    pub fn begin_turn(&mut self) {
        if self.status != Status::InProgress {
            return;
        }
        self.turns = true;
        self.stopped = false;
        self.turn_outcome = None;
        self.turn_first_item = self.items.len();
        self.held.clear();
        if let Some(usage) = self.usage.take() {
            self.past_usage = Some(self.past_usage.map_or(usage, |past| past.plus(usage)));
        }
    }

    /// Leave turn mode with the current turn unfinished: what the upstream says next ends the response.
    pub fn end_turns(&mut self) {
        if self.turn_outcome.is_none() {
            self.turns = false;
        }
    }

    /// How the current turn ended, once it has (`None` while it runs, or outside turns).
    pub fn turn_outcome(&self) -> Option<&Outcome> {
        self.turn_outcome.as_ref()
    }

    /// The function calls the model made in the current turn, held ones too, in the order it made them.
    pub fn turn_function_calls(&self) -> impl Iterator<Item = FunctionCallRef<'_>> {
        let mut items = self.items.iter().enumerate().skip(self.turn_first_item).peekable();
        let mut held = self.held.iter().peekable();
        std::iter::from_fn(move || loop {
            // A held call made before the next item opened comes before it.
            let next_item = items.peek().map(|(index, _)| *index);
            if let Some(call) = held.next_if(|call| next_item.is_none_or(|index| call.before <= index)) {
                return Some(FunctionCallRef {
                    output_index: call.item,
                    id: call.item.map(|index| self.items[index].id.as_str()),
                    call_id: &call.call_id,
                    name: &call.name,
                    arguments: &call.arguments,
                    held: true,
                });
            }
            let (output_index, item) = items.next()?;
            if let Body::FunctionCall {
                call_id,
                name,
                arguments,
            } = &item.body
            {
                return Some(FunctionCallRef {
                    output_index: Some(output_index),
                    id: Some(&item.id),
                    call_id,
                    name,
                    arguments,
                    held: false,
                });
            }
        })
    }

    /// Hold the calls to these function names from now on (replacing the names held before; none by default):
    /// the tools the router runs itself. A held call writes no events and is not in `output`; it does not close
    /// the open item; [`turn_function_calls`](Self::turn_function_calls) reports it, with its arguments.
    pub fn set_held_names<I, S>(&mut self, names: I)
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.held_names = names.into_iter().map(Into::into).collect();
    }

    /// The function names whose calls are held.
    pub fn held_names(&self) -> &HashSet<String> {
        &self.held_names
    }

    /// Show the calls to these held names live (replacing the ones before; none by default): a call opens
    /// its [`LiveCall::item`] at once (closing the open item), its arguments stream as `<events>_arguments.delta`,
    /// and when they are complete (the next item opens, or the turn ends) `<events>_arguments.done` and
    /// `<events>.in_progress` are written and the item waits for [`close_live`](Self::close_live). It is held
    /// all the same: [`turn_function_calls`](Self::turn_function_calls) reports it (with its item's index and
    /// id), and it is in `output` once closed. A name that is not held ([`set_held_names`](Self::set_held_names))
    /// is not live either.
    pub fn set_live_calls(&mut self, calls: HashMap<String, LiveCall>) {
        self.live = calls;
    }

    /// How many live calls' items wait to be closed.
    pub fn waiting_count(&self) -> usize {
        self.waiting.len()
    }

    /// Close the oldest waiting live call's item ([`set_live_calls`](Self::set_live_calls)): the event `ty`
    /// (`response.mcp_call.completed` …) and `response.output_item.done` with `item`, its final JSON (`id` first;
    /// it may leave it out), then the frames written behind it. Returns its `output_index`. An error (and nothing
    /// written) if no item waits, `ty` could not be an event type, `item` is not a JSON object, or its `id` is
    /// another's.
    pub fn close_live(&mut self, ty: &str, item: &[u8]) -> Result<usize, RawJsonError> {
        check_event_type(ty)?;
        let Some(head) = self.waiting.first() else {
            return Err(if self.status == Status::InProgress {
                RawJsonError {
                    message: "no live call's item waits to be closed".to_owned(),
                }
            } else {
                ended()
            });
        };
        let index = head.index;
        let json = self.final_json(index, item)?;
        if let Body::Hosted { done, .. } = &mut self.items[index].body {
            *done = Some(json);
        }
        self.items[index].status = ItemStatus::Completed;
        self.release(ty);
        Ok(index)
    }

    /// Write the oldest waiting item's two closing events (`ty`, then `output_item.done` with the item as it
    /// stands) with the numbers kept for them, then the frames written behind it.
    fn release(&mut self, ty: &str) {
        let head = self.waiting.remove(0);
        if !self.emit {
            return;
        }
        let index = head.index;
        let mut out = std::mem::take(&mut self.out);
        self.frame(&mut out, head.seq, ty, |w, out| {
            out.extend_from_slice(&w.items[index].locator);
        });
        self.frame(&mut out, head.seq + 1, "response.output_item.done", |w, out| {
            put!(out, ",\"output_index\":{index},\"item\":");
            w.items[index].write(out, w.client_view());
        });
        out.extend_from_slice(&head.frames);
        self.out = out;
    }

    /// Close every waiting live item as `incomplete` (the response ends before the router ran its call), with
    /// `<events>.failed`.
    fn release_all(&mut self) {
        while let Some(head) = self.waiting.first() {
            let index = head.index;
            self.items[index].status = ItemStatus::Incomplete;
            let ty = match &self.items[index].body {
                Body::Hosted { live: Some(live), .. } => format!("{}.failed", live.events),
                _ => unreachable!("only live calls' items wait"),
            };
            self.release(&ty);
        }
    }

    /// Whether an index [`open_function_call`](Self::open_function_call) returned is a held call's.
    pub fn is_held_call(index: usize) -> bool {
        index & HELD_CALL != 0
    }

    /// The items the current turn added to `output` (from its first item to the end; all of them outside turns),
    /// as a JSON array of the items as [`response_json`](Self::response_json) holds them (the upstream's own
    /// `encrypted_content` kept): what the next upstream call sends back. Closed items only, as in `output`.
    pub fn turn_items_json(&self) -> Vec<u8> {
        let first = if self.turns { self.turn_first_item } else { 0 };
        let mut out = Vec::with_capacity(256);
        out.push(b'[');
        self.write_items(&mut out, first, View::Stored);
        out.push(b']');
        out
    }

    /// The next `sequence_number`.
    pub fn sequence_number(&self) -> u64 {
        self.seq
    }

    /// Frames written since the last [`clear_output`](Self::clear_output).
    pub fn output(&self) -> &[u8] {
        &self.out
    }

    /// The [`output`](Self::output) one event at a time: in JSON lines, each event's JSON object (no
    /// newline: one WebSocket message each); in SSE, each frame with its blank line (`data: [DONE]\n\n`
    /// too). Events are never split: no JSON the writer writes holds a raw newline.
    pub fn output_events(&self) -> Vec<&[u8]> {
        match self.framing {
            Framing::JsonLines => self.out.split(|&b| b == b'\n').filter(|e| !e.is_empty()).collect(),
            Framing::Sse => {
                let mut events = Vec::new();
                let mut rest = &self.out[..];
                while let Some(end) = memchr::memmem::find(rest, b"\n\n") {
                    events.push(&rest[..end + 2]);
                    rest = &rest[end + 2..];
                }
                events
            }
        }
    }

    /// Make room for `additional` more bytes of frames.
    pub fn reserve(&mut self, additional: usize) {
        self.out.reserve(additional);
    }

    /// Forget the written frames, keeping the buffer's capacity.
    pub fn clear_output(&mut self) {
        self.out.clear();
    }

    /// `response.created` and `response.in_progress`; later calls do nothing.
    pub fn start(&mut self) {
        if self.started {
            return;
        }
        self.started = true;
        for ty in ["response.created", "response.in_progress"] {
            self.event(ty, |w, out| {
                out.extend_from_slice(b",\"response\":");
                w.write_response(out, w.client_view(), None);
            });
        }
    }

    /// Append streamed text of `kind`, opening the item and part it belongs to when needed.
    pub fn text_delta(&mut self, kind: TextKind, delta: &str) {
        self.text_delta_with_logprobs(kind, delta, b"");
    }

    /// [`text_delta`](Self::text_delta) with the delta's token log probabilities: `logprobs` is the elements of a
    /// JSON array of Open Responses `LogProb` objects, written, without the brackets (empty: none). They go in the
    /// delta event's `logprobs` and are added to the part's (an `output_text` part only: other kinds have none),
    /// when the request asked for them ([`keeps_logprobs`](Self::keeps_logprobs)).
    pub fn text_delta_with_logprobs(&mut self, kind: TextKind, delta: &str, logprobs: &[u8]) {
        if delta.is_empty() || self.is_finished() {
            return;
        }
        let logprobs = if self.settings.logprobs { logprobs } else { b"" };
        self.start();
        let index = self.open_for(kind);
        let content_index = self.open_part(index, kind);
        let ty = match kind {
            TextKind::OutputText => "response.output_text.delta",
            TextKind::Refusal => "response.refusal.delta",
            TextKind::Reasoning => "response.reasoning.delta",
        };
        self.event(ty, |w, out| {
            out.extend_from_slice(&w.items[index].locator);
            out.extend_from_slice(b",\"content_index\":");
            out.extend_from_slice(itoa::Buffer::new().format(content_index).as_bytes());
            out.extend_from_slice(b",\"delta\":");
            write_str(out, delta);
            if kind == TextKind::OutputText {
                out.extend_from_slice(b",\"logprobs\":[");
                out.extend_from_slice(logprobs);
                out.push(b']');
            }
        });
        match &mut self.items[index].body {
            Body::Message { parts, .. } => {
                let part = &mut parts[content_index];
                part.text.push_str(delta);
                if kind == TextKind::OutputText && !logprobs.is_empty() {
                    if !part.logprobs.is_empty() {
                        part.logprobs.push(b',');
                    }
                    part.logprobs.extend_from_slice(logprobs);
                }
            }
            Body::Reasoning {
                content: Some(part), ..
            } => part.text.push_str(delta),
            _ => unreachable!("open_part returned a text part"),
        }
    }

    /// Set the open reasoning item's `encrypted_content` (opening a reasoning item if none is open).
    pub fn reasoning_encrypted_content(&mut self, encrypted: &str) {
        if self.is_finished() {
            return;
        }
        self.start();
        let index = self.open_for(TextKind::Reasoning);
        if let Body::Reasoning { encrypted_content, .. } = &mut self.items[index].body {
            encrypted_content.get_or_insert_with(String::new).push_str(encrypted);
        }
    }

    /// Start a reasoning item (closing whatever item is open), for reasoning that may come without text.
    pub fn open_reasoning(&mut self) {
        if self.is_finished() {
            return;
        }
        self.start();
        self.close_item(ItemStatus::Completed);
        self.open_for(TextKind::Reasoning);
    }

    /// Append reasoning summary text (opening a reasoning item if none is open); `new_part` starts another
    /// `summary_text` part (`summary_index` + 1) even if one is open.
    ///
    /// # Panics
    ///
    /// Never: the item `open_for(Reasoning)` gives is a reasoning item with an open summary part by then.
    pub fn summary_delta(&mut self, new_part: bool, delta: &str) {
        if self.is_finished() {
            return;
        }
        self.start();
        let index = self.open_for(TextKind::Reasoning);
        let Body::Reasoning {
            summary, summary_open, ..
        } = &self.items[index].body
        else {
            unreachable!("open_for(Reasoning) gives a reasoning item")
        };
        if new_part || !*summary_open || summary.is_empty() {
            self.close_part(index); // (a raw reasoning part, if open: parts do not interleave)
            self.close_summary(index);
            let Body::Reasoning {
                summary, summary_open, ..
            } = &mut self.items[index].body
            else {
                unreachable!()
            };
            summary.push(String::new());
            *summary_open = true;
            let summary_index = summary.len() - 1;
            self.event("response.reasoning_summary_part.added", |w, out| {
                out.extend_from_slice(&w.items[index].locator);
                put!(
                    out,
                    ",\"summary_index\":{summary_index},\"part\":{{\"type\":\"summary_text\",\"text\":\"\"}}"
                );
            });
        }
        if delta.is_empty() {
            return;
        }
        let Body::Reasoning { summary, .. } = &mut self.items[index].body else {
            unreachable!()
        };
        summary.last_mut().expect("an open summary part").push_str(delta);
        let summary_index = summary.len() - 1;
        self.event("response.reasoning_summary_text.delta", |w, out| {
            out.extend_from_slice(&w.items[index].locator);
            put!(out, ",\"summary_index\":{summary_index},\"delta\":");
            write_str(out, delta);
        });
    }

    /// `reasoning_summary_text.done` and `reasoning_summary_part.done` for the open summary part of item `index`.
    fn close_summary(&mut self, index: usize) {
        let Body::Reasoning {
            summary, summary_open, ..
        } = &mut self.items[index].body
        else {
            return;
        };
        if !*summary_open {
            return;
        }
        *summary_open = false;
        let summary_index = summary.len() - 1;
        let text = summary[summary_index].clone();
        self.event("response.reasoning_summary_text.done", |w, out| {
            out.extend_from_slice(&w.items[index].locator);
            put!(out, ",\"summary_index\":{summary_index},\"text\":");
            write_str(out, &text);
        });
        self.event("response.reasoning_summary_part.done", |w, out| {
            out.extend_from_slice(&w.items[index].locator);
            put!(
                out,
                ",\"summary_index\":{summary_index},\"part\":{{\"type\":\"summary_text\",\"text\":"
            );
            write_str(out, &text);
            out.push(b'}');
        });
    }

    /// Start a `function_call` item (closing whatever item is open); returns its `output_index`. A call to a
    /// held name ([`set_held_names`](Self::set_held_names)) is kept aside instead, writing nothing and leaving the
    /// open item open; the index returned for it ([`is_held_call`](Self::is_held_call)) is no `output_index`, but
    /// [`function_call_delta`](Self::function_call_delta) takes it all the same.
    pub fn open_function_call(&mut self, call_id: &str, name: &str) -> usize {
        self.start();
        if !self.held_names.is_empty() && self.held_names.contains(name) {
            let before = self.items.len();
            let item = self.live.get(name).cloned().map(|live| self.open_live(live));
            self.held.push(HeldCall {
                call_id: call_id.to_owned(),
                name: name.to_owned(),
                arguments: String::new(),
                before,
                item,
            });
            return HELD_CALL | (self.held.len() - 1);
        }
        self.close_item(ItemStatus::Completed);
        self.push_item(
            "fc",
            Body::FunctionCall {
                call_id: call_id.to_owned(),
                name: name.to_owned(),
                arguments: String::new(),
            },
        )
    }

    /// Append argument text to the function call at `output_index`. Returns false (and writes
    /// nothing) when that item is no longer the open one: its `.done` has been sent. A held call takes
    /// arguments (writing nothing) whatever is open, until the turn ends.
    pub fn function_call_delta(&mut self, output_index: usize, delta: &str) -> bool {
        if self.open != Some(output_index) {
            // (Held calls are looked at only here: an open call's deltas cost what they did.)
            return Self::is_held_call(output_index) && self.held_delta(output_index & !HELD_CALL, delta);
        }
        if delta.is_empty() {
            return true;
        }
        self.event("response.function_call_arguments.delta", |w, out| {
            out.extend_from_slice(&w.items[output_index].locator);
            out.extend_from_slice(b",\"delta\":");
            write_str(out, delta);
        });
        if let Body::FunctionCall { arguments, .. } = &mut self.items[output_index].body {
            arguments.push_str(delta);
        }
        true
    }

    /// Append argument text to held call `position` of this turn, unless the turn has ended (or, for a live
    /// call, its item is no longer the open one: its arguments were said to be complete).
    fn held_delta(&mut self, position: usize, delta: &str) -> bool {
        if self.stopped {
            return false;
        }
        let Some(call) = self.held.get_mut(position) else {
            return false;
        };
        let Some(index) = call.item else {
            call.arguments.push_str(delta);
            return true;
        };
        if self.open != Some(index) {
            return false;
        }
        call.arguments.push_str(delta);
        if !delta.is_empty() {
            let Body::Hosted { live: Some(live), .. } = &self.items[index].body else {
                unreachable!("a live call's item is a live item")
            };
            let ty = Arc::clone(&live.delta);
            self.event(&ty, |w, out| {
                out.extend_from_slice(&w.items[index].locator);
                out.extend_from_slice(b",\"delta\":");
                write_str(out, delta);
            });
        }
        true
    }

    /// Open a live call's item (closing the open one): the next `output_index`.
    fn open_live(&mut self, live: LiveCall) -> usize {
        self.close_item(ItemStatus::Completed);
        let state = LiveState {
            held: self.held.len(),
            delta: format!("{}_arguments.delta", live.events).into(),
            events: live.events.into(),
        };
        let body = Body::Hosted {
            members: live.item,
            done: None,
            live: Some(state),
        };
        self.push_item(&live.prefix, body)
    }

    /// Start an item the router makes itself (a hosted tool's call, e.g. `{"type":"mcp_call",…}` with
    /// `status: in_progress`), closing whatever item is open: `response.output_item.added` with `item` as
    /// given, its `id` first (made from `prefix` where `item` has none). Returns its `output_index` and id.
    /// Allowed between turns; an error (and nothing written) if `item` is not a JSON object or the
    /// response has ended.
    pub fn open_item(&mut self, prefix: &str, item: &[u8]) -> Result<(usize, &str), RawJsonError> {
        if self.status != Status::InProgress {
            return Err(ended());
        }
        let members = Members::parse(item, "the item")?;
        self.start();
        self.close_item(ItemStatus::Completed);
        let index = match members.get_str("id") {
            Some(id) => self.push_item_with_id(
                id,
                Body::Hosted {
                    members,
                    done: None,
                    live: None,
                },
            ),
            None => self.push_item(
                prefix,
                Body::Hosted {
                    members,
                    done: None,
                    live: None,
                },
            ),
        };
        Ok((index, &self.items[index].id))
    }

    /// An event of the open router-made item: `{"type":ty,"sequence_number":…,"item_id":…,"output_index":…`
    /// then the members of the JSON object `members` (which must not repeat those four). An error (and
    /// nothing written) if no router-made item is open or `members` is not a JSON object.
    pub fn item_event(&mut self, ty: &str, members: &[u8]) -> Result<(), RawJsonError> {
        let index = self.open_hosted()?;
        check_event_type(ty)?;
        let body = object_body(members, "the event's members")?;
        self.event(ty, |w, out| {
            out.extend_from_slice(&w.items[index].locator);
            out.extend_from_slice(&body);
        });
        Ok(())
    }

    /// Close the open router-made item: `response.output_item.done` with `item`, its final JSON (its `id`
    /// first; it may leave `id` out), which the response's `output` then holds. An error (and nothing
    /// written) if no router-made item is open, `item` is not a JSON object, or its `id` is another's.
    pub fn done_item(&mut self, item: &[u8]) -> Result<(), RawJsonError> {
        let index = self.open_hosted()?;
        let json = self.final_json(index, item)?;
        if let Body::Hosted { done, .. } = &mut self.items[index].body {
            *done = Some(json);
        }
        self.close_item(ItemStatus::Completed);
        Ok(())
    }

    /// Router-made item `index`'s final JSON from `item` (its `id` first); an error if `item` is not a JSON
    /// object or names another id.
    fn final_json(&self, index: usize, item: &[u8]) -> Result<Vec<u8>, RawJsonError> {
        let members = Members::parse(item, "the item")?;
        let id = &self.items[index].id;
        if members.get_str("id").is_some_and(|given| given != *id) {
            return Err(RawJsonError {
                message: format!("the item's id is not the item's own ({id})"),
            });
        }
        let mut json = Vec::with_capacity(item.len() + id.len() + 16);
        json.extend_from_slice(b"{\"id\":");
        write_str(&mut json, id);
        members.write(&mut json, "id");
        json.push(b'}');
        Ok(json)
    }

    /// The open item's index, if the router made it (a live call's item is not one to write events into).
    fn open_hosted(&self) -> Result<usize, RawJsonError> {
        match self.open {
            Some(index) if matches!(self.items[index].body, Body::Hosted { live: None, .. }) => Ok(index),
            _ if self.status != Status::InProgress => Err(ended()),
            _ => Err(RawJsonError {
                message: "no item the router made is open".to_owned(),
            }),
        }
    }

    /// Close the open item (if any) as completed.
    pub fn close_open_item(&mut self) {
        self.close_item(ItemStatus::Completed);
    }

    /// Count tokens spent outside the upstream calls of this response (a nested response the router ran for a
    /// tool) in its usage: added to the sum of the turns.
    pub fn add_usage(&mut self, usage: Usage) {
        self.past_usage = Some(self.past_usage.map_or(usage, |past| past.plus(usage)));
    }

    /// The response's token usage: the sum over its turns and what [`add_usage`](Self::add_usage) added; `None`
    /// while no upstream call has said.
    pub fn total_usage(&self) -> Option<Usage> {
        match (self.past_usage, self.usage) {
            (Some(past), Some(now)) => Some(past.plus(now)),
            (past, now) => past.or(now),
        }
    }

    /// How many items `output` holds so far, the open one included: none until the upstream's first content
    /// (a router that fails over to another upstream may do so until then).
    pub fn item_count(&self) -> usize {
        self.items.len()
    }

    /// Take up a response whose `response.created` and `response.in_progress` already went out (written by the
    /// writer of an upstream call that failed before its first content, for the same `id` and `created_at`):
    /// [`start`](Self::start) writes nothing and the sequence goes on from 2. Nothing once started.
    pub fn resume_started(&mut self) {
        if !self.started {
            self.started = true;
            self.seq = 2;
        }
    }

    /// Record the current upstream call's token usage (the response's is the sum over turns).
    pub fn set_usage(&mut self, usage: Usage) {
        self.usage = Some(usage);
    }

    /// End the response: close the open item, write `error` (when failed) and the terminal event,
    /// then `data: [DONE]` in SSE framing. Later calls do nothing. In a turn ([`begin_turn`](Self::begin_turn)),
    /// end the turn instead: close the open item and record `outcome`, writing no terminal event.
    pub fn finish(&mut self, outcome: Outcome) {
        if self.stopped {
            return;
        }
        let outcome = self.redacted(outcome);
        if self.turns {
            self.start();
            self.close_item(item_status_for(&outcome));
            self.stopped = true;
            self.turn_outcome = Some(outcome);
        } else {
            self.finish_response(outcome);
        }
    }

    /// End the response whatever its turns (after a turn has ended, or to cut one short): as
    /// [`finish`](Self::finish) outside turns. Nothing once the response has ended.
    pub fn finish_response(&mut self, outcome: Outcome) {
        if self.status != Status::InProgress {
            return;
        }
        let outcome = self.redacted(outcome);
        self.start();
        self.turns = false;
        self.turn_outcome = None;
        self.stopped = true;
        self.close_item(item_status_for(&outcome));
        self.release_all();
        let terminal = match outcome {
            Outcome::Completed => {
                self.status = Status::Completed;
                self.completed_at = Some(unix_now());
                "response.completed"
            }
            Outcome::Incomplete(reason) => {
                self.status = Status::Incomplete;
                self.incomplete_reason = Some(reason);
                "response.incomplete"
            }
            Outcome::Failed(error) => {
                self.event("error", |_, out| {
                    let mut fields = Vec::with_capacity(128);
                    write_error_fields(&mut fields, &error);
                    out.extend_from_slice(b",\"error\":{\"type\":");
                    write_str(out, &error.kind);
                    out.extend_from_slice(&fields);
                    out.push(b'}');
                    // `code`, `message`, `param` again at the top level, where the openai SDK's
                    // ResponseErrorEvent reads them (`type` there is the event's own).
                    out.extend_from_slice(&fields);
                });
                self.status = Status::Failed;
                self.error = Some(error);
                "response.failed"
            }
        };
        self.event(terminal, |w, out| {
            out.extend_from_slice(b",\"response\":");
            w.write_response(out, w.client_view(), None);
        });
        if self.emit && self.framing == Framing::Sse {
            self.out.extend_from_slice(b"data: [DONE]\n\n");
        }
    }

    /// The response was not stored after all (the store failed): `store` is false in the response object from now
    /// on, and when the response has ended, its terminal event is written again (the same `sequence_number`, then
    /// `data: [DONE]` in SSE framing) for the caller to send in place of the one it holds. Returns whether a
    /// terminal event was written (not while the response runs, nor after a cancel: its stream has ended).
    pub fn restate_unstored(&mut self) -> bool {
        self.settings.set_store(false);
        self.clear_output();
        let terminal = match self.status {
            Status::Completed => "response.completed",
            Status::Incomplete => "response.incomplete",
            Status::Failed => "response.failed",
            Status::InProgress | Status::Cancelled => return false,
        };
        if !self.emit || self.seq == 0 {
            return false;
        }
        self.seq -= 1;
        self.event(terminal, |w, out| {
            out.extend_from_slice(b",\"response\":");
            w.write_response(out, w.client_view(), None);
        });
        if self.framing == Framing::Sse {
            self.out.extend_from_slice(b"data: [DONE]\n\n");
        }
        true
    }

    /// Cancel the response while it is in progress: close the open item (`incomplete`), write what a failed
    /// response's stream gets (`error` with code `cancelled`, `response.failed`, `data: [DONE]` in SSE
    /// framing: the stream's grammar has no cancelled ending), then mark the response `cancelled` with
    /// `error: null`, as [`response_json`](Self::response_json) shows it from then on. Returns false (and
    /// writes nothing) when the response had already ended.
    pub fn cancel(&mut self) -> bool {
        if self.status != Status::InProgress {
            return false;
        }
        self.finish_response(Outcome::Failed(ErrorInfo {
            kind: "server_error".to_owned(),
            code: "cancelled".to_owned(),
            message: "the response was cancelled".to_owned(),
            param: None,
        }));
        self.status = Status::Cancelled;
        self.error = None;
        true
    }

    /// The response object as it stands, as JSON: the stored view (reasoning items keep the upstream's own
    /// `encrypted_content`, never a sealed blob).
    pub fn response_json(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(1024);
        self.write_response(&mut out, View::Stored, None);
        out
    }

    /// The response object as a client sees it (a non-streamed body): reasoning items' `encrypted_content`
    /// under the writer's [`ReasoningPolicy`], as in the events it writes.
    pub fn client_response_json(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(1024);
        self.write_response(&mut out, self.client_view(), None);
        out
    }

    /// The response object with `status: queued` (a background response stored before it runs).
    pub fn queued_json(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(1024);
        self.write_response(&mut out, View::Stored, Some("queued"));
        out
    }

    fn client_view(&self) -> View {
        match self.reasoning {
            ReasoningPolicy::Keep => View::Stored,
            ReasoningPolicy::Strip => View::Strip,
            ReasoningPolicy::Seal(_) => View::Sealed,
        }
    }

    // --- items -----------------------------------------------------------------------------------

    /// The index of an open item that takes text of `kind`, closing a different open item first.
    fn open_for(&mut self, kind: TextKind) -> usize {
        if let Some(index) = self.open {
            let fits = matches!(
                (&self.items[index].body, kind),
                (Body::Message { .. }, TextKind::OutputText | TextKind::Refusal)
                    | (Body::Reasoning { .. }, TextKind::Reasoning)
            );
            if fits {
                return index;
            }
            self.close_item(ItemStatus::Completed);
        }
        match kind {
            TextKind::OutputText | TextKind::Refusal => self.push_item(
                "msg",
                Body::Message {
                    parts: Vec::new(),
                    part_open: false,
                },
            ),
            TextKind::Reasoning => self.push_item(
                "rs",
                Body::Reasoning {
                    content: None,
                    part_open: false,
                    summary: Vec::new(),
                    summary_open: false,
                    encrypted_content: None,
                    sealed: None,
                },
            ),
        }
    }

    fn push_item(&mut self, prefix: &str, body: Body) -> usize {
        let id = item_id(prefix, &self.id, self.items.len());
        self.push_item_with_id(id, body)
    }

    fn push_item_with_id(&mut self, id: String, body: Body) -> usize {
        let index = self.items.len();
        let mut locator = Vec::with_capacity(id.len() + 40);
        write_locator(&mut locator, &id, index, None);
        self.items.push(Item {
            id,
            locator,
            status: ItemStatus::InProgress,
            body,
        });
        self.open = Some(index);
        self.event("response.output_item.added", |w, out| {
            put!(out, ",\"output_index\":{index},\"item\":");
            w.items[index].write(out, w.client_view());
        });
        index
    }

    /// The content index of an open part of `kind` in item `index`, closing a part of another kind.
    fn open_part(&mut self, index: usize, kind: TextKind) -> usize {
        let (open_kind, count) = match &self.items[index].body {
            Body::Message { parts, part_open } => (parts.last().filter(|_| *part_open).map(|p| p.kind), parts.len()),
            Body::Reasoning { content, part_open, .. } => (
                content.as_ref().filter(|_| *part_open).map(|p| p.kind),
                usize::from(content.is_some()),
            ),
            Body::FunctionCall { .. } | Body::Hosted { .. } => unreachable!("text goes to messages and reasoning"),
        };
        if open_kind == Some(kind) {
            return count - 1;
        }
        if open_kind.is_some() {
            self.close_part(index);
        }
        let part = Part {
            kind,
            text: String::new(),
            logprobs: Vec::new(),
        };
        let content_index = match &mut self.items[index].body {
            Body::Message { parts, part_open } => {
                parts.push(part);
                *part_open = true;
                parts.len() - 1
            }
            Body::Reasoning { content, part_open, .. } => {
                // A reasoning item holds one trace; more reasoning after it was closed goes on in the same part.
                let text = content.take().map(|p| p.text).unwrap_or_default();
                *content = Some(Part {
                    kind,
                    text,
                    logprobs: Vec::new(),
                });
                *part_open = true;
                0
            }
            Body::FunctionCall { .. } | Body::Hosted { .. } => unreachable!(),
        };
        let item_id = self.items[index].id.clone();
        self.event("response.content_part.added", |w, out| {
            write_locator(out, &item_id, index, Some(content_index));
            out.extend_from_slice(b",\"part\":");
            write_part(
                out,
                &Part {
                    kind,
                    text: String::new(),
                    logprobs: Vec::new(),
                },
            );
            let _ = w;
        });
        content_index
    }

    /// `<kind>.done` and `content_part.done` for the open part of item `index`.
    fn close_part(&mut self, index: usize) {
        let item = &mut self.items[index];
        let (part, content_index) = match &mut item.body {
            Body::Message { parts, part_open } if *part_open => {
                *part_open = false;
                (parts.last().expect("an open part exists"), parts.len() - 1)
            }
            Body::Reasoning {
                content: Some(part),
                part_open,
                ..
            } if *part_open => {
                *part_open = false;
                (&*part, 0)
            }
            _ => return,
        };
        let (done_type, text_key) = match part.kind {
            TextKind::OutputText => ("response.output_text.done", "text"),
            TextKind::Refusal => ("response.refusal.done", "refusal"),
            TextKind::Reasoning => ("response.reasoning.done", "text"),
        };
        let mut body = Vec::with_capacity(part.text.len() * 2 + 160);
        write_locator(&mut body, &item.id, index, Some(content_index));
        body.extend_from_slice(b",\"");
        body.extend_from_slice(text_key.as_bytes());
        body.extend_from_slice(b"\":");
        write_str(&mut body, &part.text);
        if part.kind == TextKind::OutputText {
            body.extend_from_slice(b",\"logprobs\":[");
            body.extend_from_slice(&part.logprobs);
            body.push(b']');
        }
        let mut part_body = Vec::with_capacity(part.text.len() * 2 + 160);
        write_locator(&mut part_body, &item.id, index, Some(content_index));
        part_body.extend_from_slice(b",\"part\":");
        write_part(&mut part_body, part);
        self.event(done_type, |_, out| out.extend_from_slice(&body));
        self.event("response.content_part.done", |_, out| out.extend_from_slice(&part_body));
    }

    /// Close the open item with `status`: its open part, then `output_item.done`.
    fn close_item(&mut self, status: ItemStatus) {
        let Some(index) = self.open.take() else { return };
        if let Body::Hosted { live: Some(_), .. } = &self.items[index].body {
            self.wait(index);
            return;
        }
        if let Body::FunctionCall { arguments, .. } = &self.items[index].body {
            let item_id = self.items[index].id.clone();
            let arguments = arguments.clone();
            self.event("response.function_call_arguments.done", |_, out| {
                write_locator(out, &item_id, index, None);
                out.extend_from_slice(b",\"arguments\":");
                write_str(out, &arguments);
            });
        } else {
            self.close_part(index);
            self.close_summary(index);
        }
        self.items[index].status = status;
        self.seal(index);
        self.event("response.output_item.done", |w, out| {
            put!(out, ",\"output_index\":{index},\"item\":");
            w.items[index].write(out, w.client_view());
        });
    }

    /// A live call's arguments are complete: `<events>_arguments.done` and `<events>.in_progress`, then item
    /// `index` waits for the router, two sequence numbers kept for its close ([`close_live`](Self::close_live)).
    fn wait(&mut self, index: usize) {
        let Body::Hosted {
            live: Some(live),
            members,
            ..
        } = &mut self.items[index].body
        else {
            unreachable!("only a live call's item waits")
        };
        let events = Arc::clone(&live.events);
        let arguments = self.held.get(live.held).map_or("", |call| call.arguments.as_str());
        let mut json = Vec::with_capacity(arguments.len() + 2);
        write_str(&mut json, arguments);
        let json = String::from_utf8(json).expect("JSON strings are UTF-8");
        members.set("arguments", json.clone());
        self.event(&format!("{events}_arguments.done"), |w, out| {
            out.extend_from_slice(&w.items[index].locator);
            out.extend_from_slice(b",\"arguments\":");
            out.extend_from_slice(json.as_bytes());
        });
        self.event(&format!("{events}.in_progress"), |w, out| {
            out.extend_from_slice(&w.items[index].locator);
        });
        let seq = self.seq;
        if self.emit {
            self.seq += 2;
        }
        self.waiting.push(Waiting {
            index,
            seq,
            frames: Vec::new(),
        });
    }

    /// Make the client's blob for reasoning item `index` under [`ReasoningPolicy::Seal`] (once: it closes once).
    fn seal(&mut self, index: usize) {
        let ReasoningPolicy::Seal(seal) = &mut self.reasoning else {
            return;
        };
        let item = &mut self.items[index];
        let Body::Reasoning {
            content,
            summary,
            encrypted_content,
            sealed,
            ..
        } = &mut item.body
        else {
            return;
        };
        let mut payload = Vec::with_capacity(64 + content.as_ref().map_or(0, |p| p.text.len()));
        payload.extend_from_slice(b"{\"content\":[");
        if let Some(part) = content {
            write_part(&mut payload, part);
        }
        payload.extend_from_slice(b"],\"summary\":[");
        write_summary(&mut payload, summary);
        payload.push(b']');
        if let Some(upstream) = encrypted_content
            .as_deref()
            .filter(|e| !e.is_empty() && !e.starts_with(SEALED_PREFIX))
        {
            payload.extend_from_slice(b",\"upstream\":");
            write_str(&mut payload, upstream);
        }
        payload.push(b'}');
        *sealed = seal(&payload);
    }

    // --- JSON --------------------------------------------------------------------------------------

    /// Write one event: the envelope (`type`, `sequence_number`) around what `body` writes (`,"k":v…`).
    /// Behind a waiting live item ([`set_live_calls`](Self::set_live_calls)), the frame is kept aside with it.
    fn event(&mut self, ty: &str, body: impl FnOnce(&Self, &mut Vec<u8>)) {
        if !self.emit {
            return;
        }
        let seq = self.seq;
        self.seq += 1;
        match self.waiting.last_mut() {
            None => {
                let mut out = std::mem::take(&mut self.out);
                self.frame(&mut out, seq, ty, body);
                self.out = out;
            }
            Some(waiting) => {
                let mut out = std::mem::take(&mut waiting.frames);
                self.frame(&mut out, seq, ty, body);
                if let Some(waiting) = self.waiting.last_mut() {
                    waiting.frames = out;
                }
            }
        }
    }

    /// Append one event's frame numbered `seq` to `out`.
    fn frame(&self, out: &mut Vec<u8>, seq: u64, ty: &str, body: impl FnOnce(&Self, &mut Vec<u8>)) {
        if self.framing == Framing::Sse {
            out.extend_from_slice(b"event: ");
            out.extend_from_slice(ty.as_bytes());
            out.extend_from_slice(b"\ndata: ");
        }
        out.extend_from_slice(b"{\"type\":\"");
        out.extend_from_slice(ty.as_bytes());
        out.extend_from_slice(b"\",\"sequence_number\":");
        out.extend_from_slice(itoa::Buffer::new().format(seq).as_bytes());
        body(self, out);
        out.push(b'}');
        out.extend_from_slice(if self.framing == Framing::Sse { b"\n\n" } else { b"\n" });
    }

    /// The `output` items from index `first` on, comma-separated, their reasoning items as `view` has them.
    fn write_items(&self, out: &mut Vec<u8>, first: usize, view: View) {
        // Snapshots before the end list only closed items, so `output` always holds whole items.
        for (i, item) in self.items[first.min(self.items.len())..]
            .iter()
            .filter(|item| item.status != ItemStatus::InProgress)
            .enumerate()
        {
            if i > 0 {
                out.push(b',');
            }
            item.write(out, view);
        }
    }

    /// The response object, its reasoning items as `view` has them, its status `status` where given.
    fn write_response(&self, out: &mut Vec<u8>, view: View, status: Option<&str>) {
        out.extend_from_slice(b"{\"id\":");
        write_str(out, &self.id);
        put!(out, ",\"object\":\"response\",\"created_at\":{}", self.created_at);
        match self.completed_at {
            Some(t) => put!(out, ",\"completed_at\":{t}"),
            None => out.extend_from_slice(b",\"completed_at\":null"),
        }
        out.extend_from_slice(b",\"status\":\"");
        out.extend_from_slice(status.unwrap_or(self.status.as_str()).as_bytes());
        out.extend_from_slice(b"\",\"incomplete_details\":");
        match &self.incomplete_reason {
            Some(reason) => {
                out.extend_from_slice(b"{\"reason\":");
                write_str(out, reason);
                out.push(b'}');
            }
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(b",\"model\":");
        write_str(out, &self.settings.model);
        out.extend_from_slice(b",\"output\":[");
        self.write_items(out, 0, view);
        out.extend_from_slice(b"],\"error\":");
        match &self.error {
            Some(error) => {
                out.extend_from_slice(b"{\"code\":");
                write_str(out, &error.code);
                out.extend_from_slice(b",\"message\":");
                write_str(out, &error.message);
                out.push(b'}');
            }
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(b",\"usage\":");
        match &self.total_usage() {
            Some(u) => put!(
                out,
                "{{\"input_tokens\":{},\"input_tokens_details\":{{\"cached_tokens\":{}}},\"output_tokens\":{},\
                 \"output_tokens_details\":{{\"reasoning_tokens\":{}}},\"total_tokens\":{}}}",
                u.input_tokens,
                u.cached_tokens,
                u.output_tokens,
                u.reasoning_tokens,
                u.total_tokens
            ),
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(if self.settings.store {
            b",\"store\":true"
        } else {
            b",\"store\":false"
        });
        out.extend_from_slice(self.settings.rendered.as_bytes());
        out.push(b'}');
    }
}

impl Item {
    fn write(&self, out: &mut Vec<u8>, view: View) {
        if let Body::Hosted { done: Some(json), .. } = &self.body {
            out.extend_from_slice(json);
            return;
        }
        out.extend_from_slice(b"{\"id\":");
        write_str(out, &self.id);
        match &self.body {
            Body::Message { parts, .. } => {
                out.extend_from_slice(b",\"type\":\"message\",\"status\":\"");
                out.extend_from_slice(self.status.as_str().as_bytes());
                out.extend_from_slice(b"\",\"role\":\"assistant\",\"content\":[");
                // While streaming, `output_item.added` shows the item's zero value: no parts yet.
                if self.status != ItemStatus::InProgress {
                    for (i, part) in parts.iter().enumerate() {
                        if i > 0 {
                            out.push(b',');
                        }
                        write_part(out, part);
                    }
                }
                out.extend_from_slice(b"]}");
            }
            Body::Reasoning {
                content,
                summary,
                encrypted_content,
                sealed,
                ..
            } => {
                out.extend_from_slice(b",\"type\":\"reasoning\",\"status\":\"");
                out.extend_from_slice(self.status.as_str().as_bytes());
                out.extend_from_slice(b"\",\"summary\":[");
                let closed = self.status != ItemStatus::InProgress;
                if closed {
                    write_summary(out, summary);
                }
                out.extend_from_slice(b"],\"content\":[");
                if let Some(part) = content.as_ref().filter(|_| closed) {
                    write_part(out, part);
                }
                out.push(b']');
                // (The key goes last, where the Python post-processing this replaces put it when it added one.)
                match (view, encrypted_content) {
                    _ if !closed => {}
                    (View::Stored, Some(encrypted)) => {
                        out.extend_from_slice(b",\"encrypted_content\":");
                        write_str(out, encrypted);
                    }
                    (View::Strip, Some(_)) => out.extend_from_slice(b",\"encrypted_content\":null"),
                    (View::Stored | View::Strip, None) => {}
                    (View::Sealed, _) => {
                        out.extend_from_slice(b",\"encrypted_content\":");
                        match sealed {
                            Some(blob) => write_str(out, blob),
                            None => out.extend_from_slice(b"null"),
                        }
                    }
                }
                out.push(b'}');
            }
            Body::Hosted { members, .. } => {
                if self.status == ItemStatus::InProgress {
                    members.write(out, "id");
                } else {
                    // Closed by something else (the response's end, another item): the status it ended with.
                    let mut members = members.clone();
                    if members.get("status").is_some() {
                        members.set("status", format!("\"{}\"", self.status.as_str()));
                    }
                    members.write(out, "id");
                }
                out.push(b'}');
            }
            Body::FunctionCall {
                call_id,
                name,
                arguments,
            } => {
                out.extend_from_slice(b",\"type\":\"function_call\",\"status\":\"");
                out.extend_from_slice(self.status.as_str().as_bytes());
                out.extend_from_slice(b"\",\"call_id\":");
                write_str(out, call_id);
                out.extend_from_slice(b",\"name\":");
                write_str(out, name);
                out.extend_from_slice(b",\"arguments\":");
                write_str(
                    out,
                    if self.status == ItemStatus::InProgress {
                        ""
                    } else {
                        arguments
                    },
                );
                out.push(b'}');
            }
        }
    }
}

#[cold]
fn ended() -> RawJsonError {
    RawJsonError {
        message: "the response has ended".to_owned(),
    }
}

/// An error unless `ty` can be written as is into the JSON and the SSE `event:` line (nothing there may need
/// escaping): letters, digits and `_ . : -`.
fn check_event_type(ty: &str) -> Result<(), RawJsonError> {
    if ty.is_empty() || !ty.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.:-".contains(&b)) {
        return Err(RawJsonError {
            message: format!("an event type is letters, digits and _ . : - only, not {ty:?}"),
        });
    }
    Ok(())
}

/// An item closed by an ending with `outcome`: completed, or incomplete (cut short).
fn item_status_for(outcome: &Outcome) -> ItemStatus {
    if *outcome == Outcome::Completed {
        ItemStatus::Completed
    } else {
        ItemStatus::Incomplete
    }
}

/// A reasoning item's `summary` parts, without the brackets.
fn write_summary(out: &mut Vec<u8>, summary: &[String]) {
    for (i, text) in summary.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"type\":\"summary_text\",\"text\":");
        write_str(out, text);
        out.push(b'}');
    }
}

fn write_part(out: &mut Vec<u8>, part: &Part) {
    match part.kind {
        TextKind::OutputText => {
            out.extend_from_slice(b"{\"type\":\"output_text\",\"text\":");
            write_str(out, &part.text);
            out.extend_from_slice(b",\"annotations\":[],\"logprobs\":[");
            out.extend_from_slice(&part.logprobs);
            out.extend_from_slice(b"]}");
        }
        TextKind::Refusal => {
            out.extend_from_slice(b"{\"type\":\"refusal\",\"refusal\":");
            write_str(out, &part.text);
            out.push(b'}');
        }
        TextKind::Reasoning => {
            out.extend_from_slice(b"{\"type\":\"reasoning_text\",\"text\":");
            write_str(out, &part.text);
            out.push(b'}');
        }
    }
}

/// `,"item_id":…,"output_index":…[,"content_index":…]`
fn write_locator(out: &mut Vec<u8>, item_id: &str, output_index: usize, content_index: Option<usize>) {
    out.extend_from_slice(b",\"item_id\":");
    write_str(out, item_id);
    // itoa, not `write!`: the formatting machinery was ~5% of translating a text stream.
    out.extend_from_slice(b",\"output_index\":");
    out.extend_from_slice(itoa::Buffer::new().format(output_index).as_bytes());
    if let Some(c) = content_index {
        out.extend_from_slice(b",\"content_index\":");
        out.extend_from_slice(itoa::Buffer::new().format(c).as_bytes());
    }
}

/// `,"code":…,"message":…,"param":…`
fn write_error_fields(out: &mut Vec<u8>, error: &ErrorInfo) {
    out.extend_from_slice(b",\"code\":");
    write_str(out, &error.code);
    out.extend_from_slice(b",\"message\":");
    write_str(out, &error.message);
    out.extend_from_slice(b",\"param\":");
    match &error.param {
        Some(param) => write_str(out, param),
        None => out.extend_from_slice(b"null"),
    }
}

/// A JSON string literal, byte for byte as serde_json writes it: `"`, `\\`, `\b \f \n \r \t` and
/// `\u00xx` (lowercase hex) for the other control characters; UTF-8 kept as is. Runs without an
/// escape are found eight bytes at a time and copied whole: ~200 instead of ~600 instructions per
/// text delta event (item id and delta) with `serde_json::to_writer`.
pub(crate) fn write_str(out: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    let mut start = 0;
    loop {
        let end = find_string_end::<true>(bytes, start);
        out.extend_from_slice(&bytes[start..end]);
        let Some(&byte) = bytes.get(end) else { break };
        let short = match byte {
            b'"' => b'"',
            b'\\' => b'\\',
            0x08 => b'b',
            0x0C => b'f',
            b'\n' => b'n',
            b'\r' => b'r',
            b'\t' => b't',
            _ => 0,
        };
        if short == 0 {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.extend_from_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(byte >> 4)],
                HEX[usize::from(byte & 0xF)],
            ]);
        } else {
            out.extend_from_slice(&[b'\\', short]);
        }
        start = end + 1;
    }
    out.push(b'"');
}

#[cfg(test)]
mod write_str_tests {
    use super::write_str;
    use proptest::prelude::*;

    #[test]
    fn escapes_as_serde_does() {
        for s in [
            "",
            "plain",
            "q\"b\\s/",
            "\u{0}\u{8}\t\n\u{b}\u{c}\r\u{1f}\u{7f}",
            "é中😀\u{2028}",
            "0123456789abcdef\"",
        ] {
            let mut out = Vec::new();
            write_str(&mut out, s);
            assert_eq!(out, serde_json::to_vec(s).unwrap(), "{s:?}");
        }
    }

    proptest! {
        #[test]
        fn any_string_is_written_as_serde_writes_it(s in "(?s:.{0,40})|[\\x00-\\x22\\\\a-z]{0,40}") {
            let mut out = b"prefix".to_vec();
            write_str(&mut out, &s);
            let mut expected = b"prefix".to_vec();
            expected.extend(serde_json::to_vec(&s).unwrap());
            prop_assert_eq!(out, expected);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "resp_0123456789abcdef0123456789abcdef0123456789abcdef";

    fn events(out: &[u8]) -> Vec<Value> {
        std::str::from_utf8(out)
            .unwrap()
            .split("\n\n")
            .filter_map(|frame| frame.lines().find_map(|l| l.strip_prefix("data: ")))
            .filter(|data| *data != "[DONE]")
            .map(|data| serde_json::from_str(data).unwrap())
            .collect()
    }

    fn types(events: &[Value]) -> Vec<&str> {
        events.iter().map(|e| e["type"].as_str().unwrap()).collect()
    }

    #[test]
    fn text_message_grammar() {
        let mut w = ResponseWriter::new(ResponseSettings::default(), None, Some(7), Framing::Sse);
        w.text_delta(TextKind::OutputText, "Hel");
        w.text_delta(TextKind::OutputText, "lo");
        w.finish(Outcome::Completed);
        let out = w.output().to_vec();
        assert!(out.ends_with(b"data: [DONE]\n\n"));
        let evs = events(&out);
        assert_eq!(
            types(&evs),
            [
                "response.created",
                "response.in_progress",
                "response.output_item.added",
                "response.content_part.added",
                "response.output_text.delta",
                "response.output_text.delta",
                "response.output_text.done",
                "response.content_part.done",
                "response.output_item.done",
                "response.completed",
            ]
        );
        for (i, e) in evs.iter().enumerate() {
            assert_eq!(e["sequence_number"], i as u64);
        }
        assert_eq!(evs[6]["text"], "Hello");
        let response = &evs[9]["response"];
        assert_eq!(response["status"], "completed");
        assert_eq!(response["created_at"], 7);
        assert_eq!(response["output"][0]["content"][0]["text"], "Hello");
        assert_eq!(response["output"][0]["status"], "completed");
        assert_eq!(response["text"], serde_json::json!({"format": {"type": "text"}}));
        assert_eq!(serde_json::from_slice::<Value>(&w.response_json()).unwrap(), *response);
    }

    #[test]
    fn a_fork_is_the_response_as_its_turn_began() {
        let mut w = ResponseWriter::new(ResponseSettings::default(), Some(ID.to_owned()), Some(7), Framing::Sse);
        assert!(w.fork().is_none(), "outside a turn");
        w.begin_turn();
        w.text_delta(TextKind::OutputText, "first turn");
        w.finish(Outcome::Completed);
        w.begin_turn();
        let before = w.output().len();
        w.set_usage(Usage {
            input_tokens: 3,
            total_tokens: 3,
            ..Usage::default()
        });
        let mut fork = w.fork().expect("no item in this turn yet");
        assert_eq!((fork.item_count(), fork.seq), (1, w.seq));
        assert!(fork.output().is_empty());
        fork.begin_turn();
        assert_eq!(fork.total_usage(), None, "the turn's usage so far is its source's own");
        fork.text_delta(TextKind::OutputText, "second");
        assert_eq!(fork.item_count(), 2);
        assert_eq!(w.item_count(), 1, "the source goes on as it was");
        // Once the source's turn has an item, there is nothing to fork from.
        w.text_delta(TextKind::OutputText, "mine");
        assert!(w.fork().is_none());
        assert!(w.output().len() > before);
    }

    #[test]
    fn a_failover_resumes_the_sequence_after_the_start_events() {
        // The first upstream call's writer: only the start events went out, then it failed before any content.
        let mut first = ResponseWriter::new(ResponseSettings::default(), Some(ID.to_owned()), Some(7), Framing::Sse);
        first.start();
        assert_eq!(first.item_count(), 0);
        assert_eq!(first.total_usage(), None);
        let mut sent = first.output().to_vec();
        // The next target's writer takes the response over.
        let mut next = ResponseWriter::new(ResponseSettings::default(), Some(ID.to_owned()), Some(7), Framing::Sse);
        next.resume_started();
        next.resume_started(); // (idempotent)
        next.text_delta(TextKind::OutputText, "hi");
        assert_eq!(next.item_count(), 1);
        next.set_usage(Usage {
            input_tokens: 3,
            output_tokens: 1,
            total_tokens: 4,
            ..Usage::default()
        });
        next.add_usage(Usage {
            input_tokens: 1,
            total_tokens: 1,
            ..Usage::default()
        });
        next.finish(Outcome::Completed);
        assert_eq!(
            next.total_usage().map(|u| (u.input_tokens, u.total_tokens)),
            Some((4, 5))
        );
        sent.extend_from_slice(next.output());
        let evs = events(&sent);
        assert_eq!(
            types(&evs)[..3],
            ["response.created", "response.in_progress", "response.output_item.added"]
        );
        assert_eq!(types(&evs).iter().filter(|t| **t == "response.created").count(), 1);
        for (i, e) in evs.iter().enumerate() {
            assert_eq!(e["sequence_number"], i as u64, "one series across both writers");
        }
        assert_eq!(evs.last().unwrap()["response"]["id"], ID);
    }

    #[test]
    fn reasoning_then_text_then_calls() {
        let mut w = ResponseWriter::new(ResponseSettings::default(), None, None, Framing::JsonLines);
        w.text_delta(TextKind::Reasoning, "think");
        w.text_delta(TextKind::OutputText, "answer");
        let a = w.open_function_call("call_a", "f");
        assert!(w.function_call_delta(a, "{\"x\""));
        assert!(w.function_call_delta(a, ":1}"));
        let b = w.open_function_call("call_b", "g");
        assert!(!w.function_call_delta(a, "late"));
        assert!(w.function_call_delta(b, "{}"));
        w.finish(Outcome::Completed);
        let evs: Vec<Value> = std::str::from_utf8(w.output())
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let output = &evs.last().unwrap()["response"]["output"];
        assert_eq!(output.as_array().unwrap().len(), 4);
        assert_eq!(output[0]["type"], "reasoning");
        assert_eq!(
            output[0]["content"][0],
            serde_json::json!({"type": "reasoning_text", "text": "think"})
        );
        assert_eq!(output[1]["content"][0]["text"], "answer");
        assert_eq!(output[2]["arguments"], "{\"x\":1}");
        assert_eq!(output[3]["call_id"], "call_b");
        let dones: Vec<_> = evs
            .iter()
            .filter(|e| e["type"] == "response.output_item.done")
            .collect();
        assert_eq!(dones.len(), 4);
        assert!(evs.iter().enumerate().all(|(i, e)| e["sequence_number"] == i as u64));
    }

    #[test]
    fn failure_marks_open_item_incomplete_and_emits_error() {
        let mut w = ResponseWriter::new(ResponseSettings::default(), None, None, Framing::Sse);
        w.text_delta(TextKind::OutputText, "partial");
        w.finish(Outcome::Failed(ErrorInfo {
            kind: "model_error".into(),
            code: "upstream_error".into(),
            message: "boom".into(),
            param: None,
        }));
        let evs = events(w.output());
        let error = evs.iter().find(|e| e["type"] == "error").unwrap();
        assert_eq!(error["error"]["message"], "boom");
        assert_eq!(error["message"], "boom");
        assert_eq!(error["error"]["param"], Value::Null);
        let last = evs.last().unwrap();
        assert_eq!(last["type"], "response.failed");
        assert_eq!(
            last["response"]["error"],
            serde_json::json!({"code": "upstream_error", "message": "boom"})
        );
        assert_eq!(last["response"]["output"][0]["status"], "incomplete");
        assert_eq!(w.status(), Status::Failed);
    }

    /// A reasoning item (summary "s", trace "t", `encrypted` when given), then a message; finished.
    fn reasoning_response(policy: ReasoningPolicy, encrypted: Option<&str>) -> ResponseWriter {
        let mut w = ResponseWriter::new(ResponseSettings::default(), None, None, Framing::Sse).with_reasoning(policy);
        w.summary_delta(false, "s");
        w.text_delta(TextKind::Reasoning, "t");
        if let Some(encrypted) = encrypted {
            w.reasoning_encrypted_content(encrypted);
        }
        w.text_delta(TextKind::OutputText, "answer");
        w.finish(Outcome::Completed);
        w
    }

    /// The reasoning item of the `output_item.done` event and of the terminal event's `output`.
    fn client_reasoning(w: &ResponseWriter) -> (Value, Value) {
        let evs = events(w.output());
        let done = evs
            .iter()
            .find(|e| e["type"] == "response.output_item.done" && e["item"]["type"] == "reasoning")
            .unwrap();
        (
            done["item"].clone(),
            evs.last().unwrap()["response"]["output"][0].clone(),
        )
    }

    fn stored_reasoning(w: &ResponseWriter) -> Value {
        serde_json::from_slice::<Value>(&w.response_json()).unwrap()["output"][0].clone()
    }

    #[test]
    fn keep_shows_the_upstream_encrypted_content() {
        let w = reasoning_response(ReasoningPolicy::Keep, Some("sig"));
        let (done, terminal) = client_reasoning(&w);
        assert_eq!(done["encrypted_content"], "sig");
        assert_eq!(terminal, done);
        assert_eq!(stored_reasoning(&w), done);
        assert_eq!(w.client_response_json(), w.response_json());
    }

    #[test]
    fn strip_nulls_the_upstream_encrypted_content_for_clients_only() {
        let w = reasoning_response(ReasoningPolicy::Strip, Some("sig"));
        let (done, terminal) = client_reasoning(&w);
        assert_eq!(done["encrypted_content"], Value::Null);
        assert!(done.as_object().unwrap().contains_key("encrypted_content"));
        assert_eq!(terminal, done);
        assert_eq!(stored_reasoning(&w)["encrypted_content"], "sig");
        let client: Value = serde_json::from_slice(&w.client_response_json()).unwrap();
        assert_eq!(client["output"][0], done);
        // Without an upstream blob there is nothing to take out: no key at all.
        let w = reasoning_response(ReasoningPolicy::Strip, None);
        let (done, _) = client_reasoning(&w);
        assert!(!done.as_object().unwrap().contains_key("encrypted_content"));
        assert_eq!(w.client_response_json(), w.response_json());
    }

    /// A sealer that records its payloads and answers `blob-<n>`.
    fn recording_sealer() -> (ReasoningPolicy, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
        let payloads = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = payloads.clone();
        let policy = ReasoningPolicy::Seal(Box::new(move |payload: &[u8]| {
            let mut seen = seen.lock().unwrap();
            seen.push(String::from_utf8(payload.to_vec()).unwrap());
            Some(format!("blob-{}", seen.len()))
        }));
        (policy, payloads)
    }

    #[test]
    fn seal_seals_each_reasoning_item_once_and_stores_the_upstream_blob() {
        let (policy, payloads) = recording_sealer();
        let w = reasoning_response(policy, Some("sig\u{e9}"));
        let (done, terminal) = client_reasoning(&w);
        assert_eq!(done["encrypted_content"], "blob-1");
        assert_eq!(terminal, done);
        assert_eq!(
            *payloads.lock().unwrap(),
            ["{\"content\":[{\"type\":\"reasoning_text\",\"text\":\"t\"}],\
              \"summary\":[{\"type\":\"summary_text\",\"text\":\"s\"}],\"upstream\":\"sig\u{e9}\"}"]
        );
        assert_eq!(stored_reasoning(&w)["encrypted_content"], "sig\u{e9}");
        let client: Value = serde_json::from_slice(&w.client_response_json()).unwrap();
        assert_eq!(client["output"][0], done);
        assert_eq!(payloads.lock().unwrap().len(), 1, "the body reuses the item's blob");

        // No upstream blob, or one the router sealed itself: the payload has no `upstream`.
        for encrypted in [None, Some("ferroute1.abc"), Some("")] {
            let (policy, payloads) = recording_sealer();
            let w = reasoning_response(policy, encrypted);
            assert_eq!(client_reasoning(&w).0["encrypted_content"], "blob-1");
            assert!(!payloads.lock().unwrap()[0].contains("upstream"), "{encrypted:?}");
        }
        // A sealer that cannot seal: the client sees null.
        let w = reasoning_response(ReasoningPolicy::Seal(Box::new(|_: &[u8]| None)), Some("sig"));
        assert_eq!(client_reasoning(&w).0["encrypted_content"], Value::Null);
    }

    #[test]
    fn an_item_closed_by_a_failure_is_sealed_too() {
        let (policy, payloads) = recording_sealer();
        let mut w = ResponseWriter::new(ResponseSettings::default(), None, None, Framing::Sse).with_reasoning(policy);
        w.text_delta(TextKind::Reasoning, "t");
        w.finish(Outcome::Failed(ErrorInfo {
            kind: "model_error".into(),
            code: "x".into(),
            message: "m".into(),
            param: None,
        }));
        let (done, terminal) = client_reasoning(&w);
        assert_eq!(done["status"], "incomplete");
        assert_eq!(done["encrypted_content"], "blob-1");
        assert_eq!(terminal, done);
        assert_eq!(payloads.lock().unwrap().len(), 1);
    }

    #[test]
    fn a_response_the_store_lost_restates_its_terminal_event_with_store_false() {
        let mut settings = ResponseSettings::default();
        settings.set_store(true);
        let mut early = ResponseWriter::new(settings.clone(), None, None, Framing::Sse);
        early.text_delta(TextKind::OutputText, "Hi");
        assert!(!early.restate_unstored(), "nothing to restate while it runs");
        early.finish(Outcome::Completed);
        assert_eq!(
            events(early.output()).last().unwrap()["response"]["store"],
            false,
            "but it says so at its end"
        );
        let mut w = ResponseWriter::new(settings, None, None, Framing::Sse);
        w.text_delta(TextKind::OutputText, "Hi");
        w.finish(Outcome::Completed);
        let first = events(w.output());
        let held = first.last().unwrap().clone();
        assert_eq!(held["response"]["store"], true);
        assert!(w.restate_unstored());
        let out = w.output().to_vec();
        assert!(out.starts_with(b"event: response.completed\n") && out.ends_with(b"data: [DONE]\n\n"));
        let again = events(&out);
        assert_eq!(again.len(), 1);
        assert_eq!(again[0]["sequence_number"], held["sequence_number"]);
        assert_eq!(again[0]["response"]["store"], false);
        let mut expected = held.clone();
        expected["response"]["store"] = Value::Bool(false);
        assert_eq!(again[0], expected, "only `store` differs");
        let r: Value = serde_json::from_slice(&w.response_json()).unwrap();
        assert_eq!(r["store"], false);
    }

    #[test]
    fn cancel_closes_the_open_item_and_marks_the_response_cancelled() {
        let mut w = ResponseWriter::new(ResponseSettings::default(), None, None, Framing::Sse);
        w.text_delta(TextKind::OutputText, "partial");
        w.clear_output();
        assert!(w.cancel());
        let out = w.output().to_vec();
        assert!(out.ends_with(b"data: [DONE]\n\n"));
        let evs = events(&out);
        assert_eq!(
            types(&evs),
            [
                "response.output_text.done",
                "response.content_part.done",
                "response.output_item.done",
                "error",
                "response.failed",
            ]
        );
        assert_eq!(evs[2]["item"]["status"], "incomplete");
        assert_eq!(evs[3]["error"]["code"], "cancelled");
        assert_eq!(evs[3]["error"]["message"], "the response was cancelled");
        assert_eq!(w.status(), Status::Cancelled);
        let r: Value = serde_json::from_slice(&w.response_json()).unwrap();
        assert_eq!(r["status"], "cancelled");
        assert_eq!(r["error"], Value::Null);
        assert_eq!(r["output"][0]["content"][0]["text"], "partial");
        w.clear_output();
        assert!(!w.cancel(), "a cancelled response stays as it is");
        assert!(w.output().is_empty());
        let mut done = ResponseWriter::new(ResponseSettings::default(), None, None, Framing::Sse);
        done.finish(Outcome::Completed);
        assert!(!done.cancel());
        assert_eq!(done.status(), Status::Completed);
    }

    #[test]
    fn queued_is_a_snapshot_that_changes_nothing() {
        let w = ResponseWriter::new(
            ResponseSettings::default(),
            Some("resp_q".into()),
            Some(3),
            Framing::Sse,
        );
        let queued: Value = serde_json::from_slice(&w.queued_json()).unwrap();
        let now: Value = serde_json::from_slice(&w.response_json()).unwrap();
        assert_eq!(queued["status"], "queued");
        assert_eq!(now["status"], "in_progress");
        let mut expected = now.clone();
        expected["status"] = "queued".into();
        assert_eq!(queued, expected);
        assert!(w.output().is_empty());
    }

    const MCP_ADDED: &[u8] = b"{\"type\":\"mcp_call\", \"status\":\"in_progress\",\"server_label\":\"s\",\n\
        \"name\":\"t\",\"arguments\":\"\"}";
    const MCP_DONE: &[u8] = b"{\"type\":\"mcp_call\",\"status\":\"completed\",\"server_label\":\"s\",\
        \"name\":\"t\",\"arguments\":\"{}\",\"output\":\"42\"}";

    #[test]
    fn router_items_sit_in_the_same_series_and_output() {
        let mut w = ResponseWriter::new(
            ResponseSettings::default(),
            Some("resp_0123456789abcdef0123456789abcdef0123456789abcdef".into()),
            Some(1),
            Framing::Sse,
        );
        w.text_delta(TextKind::OutputText, "a");
        let (index, id) = w.open_item("mcp", MCP_ADDED).unwrap();
        let id = id.to_owned();
        assert_eq!(index, 1);
        assert!(id.starts_with("mcp_"));
        w.item_event("response.mcp_call.in_progress", b"{}").unwrap();
        w.item_event("response.mcp_call_arguments.delta", b"{\"delta\": \"{}\"}")
            .unwrap();
        w.item_event("response.mcp_call.completed", b"{}").unwrap();
        w.done_item(MCP_DONE).unwrap();
        w.text_delta(TextKind::OutputText, "b");
        w.finish(Outcome::Completed);
        let out = w.output().to_vec();
        let text = std::str::from_utf8(&out).unwrap();
        let added = format!(
            "\"output_index\":1,\"item\":{{\"id\":\"{id}\",\"type\":\"mcp_call\",\"status\":\"in_progress\",\
             \"server_label\":\"s\",\"name\":\"t\",\"arguments\":\"\"}}}}"
        );
        assert!(text.contains(&added), "{text}");
        let done = format!("{{\"id\":\"{id}\",{}", &std::str::from_utf8(MCP_DONE).unwrap()[1..]);
        assert!(text.contains(&format!("\"output_index\":1,\"item\":{done}}}")));
        let evs = events(&out);
        assert!(evs.iter().enumerate().all(|(i, e)| e["sequence_number"] == i as u64));
        let delta = evs
            .iter()
            .find(|e| e["type"] == "response.mcp_call_arguments.delta")
            .unwrap();
        assert_eq!(
            *delta,
            serde_json::json!({"type": "response.mcp_call_arguments.delta", "sequence_number": delta["sequence_number"],
                               "item_id": id, "output_index": 1, "delta": "{}"})
        );
        let types: Vec<_> = evs[7..].iter().map(|e| e["type"].as_str().unwrap()).collect();
        assert_eq!(
            types[..6],
            [
                "response.output_item.done",
                "response.output_item.added",
                "response.mcp_call.in_progress",
                "response.mcp_call_arguments.delta",
                "response.mcp_call.completed",
                "response.output_item.done",
            ]
        );
        let response = String::from_utf8(w.response_json()).unwrap();
        assert!(response.contains(&format!(",{done},{{\"id\":\"msg_")), "{response}");
        let r: Value = serde_json::from_str(&response).unwrap();
        assert_eq!(r["output"].as_array().unwrap().len(), 3);
        assert_eq!(r["output"][2]["output_index"], Value::Null);
        assert_eq!(r["output"][2]["content"][0]["text"], "b");
    }

    #[test]
    fn router_items_refuse_what_does_not_fit() {
        let mut w = ResponseWriter::new(ResponseSettings::default(), None, None, Framing::JsonLines);
        assert!(w.item_event("x.y", b"{}").is_err(), "nothing open");
        assert!(w.open_item("mcp", b"[1]").is_err());
        assert!(w.output().is_empty(), "a refused item writes nothing");
        w.text_delta(TextKind::OutputText, "a");
        assert!(w.done_item(MCP_DONE).is_err(), "the open item is a message");
        let (_, id) = w
            .open_item(
                "mcp",
                b"{\"id\":\"mcp_mine\",\"type\":\"mcp_call\",\"status\":\"in_progress\"}",
            )
            .unwrap();
        assert_eq!(id, "mcp_mine");
        assert!(w.item_event("x.y", b"[]").is_err());
        assert!(w.item_event("x\"y", b"{}").is_err());
        assert!(w.item_event("x\ny", b"{}").is_err());
        assert!(w.item_event("", b"{}").is_err());
        assert!(w.done_item(b"{\"id\":\"mcp_other\"}").is_err());
        w.clear_output();
        // The response ends with the item open: it is closed with the status the ending gives.
        w.finish(Outcome::Failed(ErrorInfo {
            kind: "server_error".into(),
            code: "c".into(),
            message: "m".into(),
            param: None,
        }));
        let evs: Vec<Value> = std::str::from_utf8(w.output())
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(
            evs[0]["item"],
            serde_json::json!({"id": "mcp_mine", "type": "mcp_call", "status": "incomplete"})
        );
        assert!(w.open_item("mcp", MCP_ADDED).is_err(), "the response has ended");
        assert!(w.item_event("x.y", b"{}").is_err());
    }

    #[test]
    fn json_lines_on_every_path_are_one_object_per_message() {
        let check = |w: &ResponseWriter| -> Vec<Value> {
            let text = std::str::from_utf8(w.output()).unwrap();
            assert!(!text.contains("[DONE]") && !text.contains("event: "), "{text}");
            assert!(text.is_empty() || text.ends_with('\n'));
            let messages = w.output_events();
            assert_eq!(messages.len(), text.lines().count());
            messages.iter().map(|m| serde_json::from_slice(m).unwrap()).collect()
        };
        let mut w = ResponseWriter::new(ResponseSettings::default(), None, None, Framing::JsonLines)
            .with_reasoning(ReasoningPolicy::Strip);
        w.summary_delta(false, "s\nt");
        w.reasoning_encrypted_content("sig");
        w.open_item("mcp", b"{\"type\":\"mcp_call\",\n\"status\":\"in_progress\"}")
            .unwrap();
        w.item_event("response.mcp_call.in_progress", b"{\n\"a\": [1,\n2]}")
            .unwrap();
        w.done_item(b"{\"type\":\"mcp_call\",\n\"status\":\"completed\"}")
            .unwrap();
        w.begin_turn();
        w.text_delta(TextKind::OutputText, "line\nbreak");
        w.finish(Outcome::Completed);
        let evs = check(&w);
        assert_eq!(evs.len(), 17);
        assert!(evs.iter().enumerate().all(|(i, e)| e["sequence_number"] == i as u64));
        assert_eq!(evs.last().unwrap()["type"], "response.output_item.done", "a turn's end");
        w.clear_output();
        assert!(w.cancel());
        let evs = check(&w);
        assert_eq!(evs.last().unwrap()["type"], "response.failed");
        assert_eq!(
            evs.last().unwrap()["response"]["output"][0]["encrypted_content"],
            Value::Null
        );

        let mut w = ResponseWriter::new(ResponseSettings::default(), None, None, Framing::JsonLines);
        w.text_delta(TextKind::OutputText, "x");
        w.finish(Outcome::Failed(ErrorInfo {
            kind: "server_error".into(),
            code: "c".into(),
            message: "m".into(),
            param: None,
        }));
        assert_eq!(check(&w).last().unwrap()["type"], "response.failed");

        // SSE messages are whole frames, `[DONE]` the last.
        let mut w = ResponseWriter::new(ResponseSettings::default(), None, None, Framing::Sse);
        w.text_delta(TextKind::OutputText, "x");
        w.finish(Outcome::Completed);
        let frames = w.output_events();
        assert_eq!(frames.concat(), w.output());
        assert_eq!(*frames.last().unwrap(), b"data: [DONE]\n\n");
        assert!(frames[0].starts_with(b"event: response.created\ndata: {"));
    }

    /// A turn's calls as `(output_index, held, call_id, name, arguments)`.
    fn calls(w: &ResponseWriter) -> Vec<(Option<usize>, bool, String, String, String)> {
        w.turn_function_calls()
            .map(|c| {
                assert_eq!(c.id.is_none(), c.held);
                assert_eq!(c.output_index.is_none(), c.held);
                (
                    c.output_index,
                    c.held,
                    c.call_id.to_owned(),
                    c.name.to_owned(),
                    c.arguments.to_owned(),
                )
            })
            .collect()
    }

    fn call(
        index: Option<usize>,
        call_id: &str,
        name: &str,
        arguments: &str,
    ) -> (Option<usize>, bool, String, String, String) {
        (index, index.is_none(), call_id.into(), name.into(), arguments.into())
    }

    #[test]
    fn held_calls_write_nothing_and_leave_the_open_item_open() {
        let mut w = ResponseWriter::new(ResponseSettings::default(), Some(ID.into()), Some(1), Framing::Sse);
        w.set_held_names(["lookup", "other"]);
        w.begin_turn();
        w.text_delta(TextKind::OutputText, "Let me");
        let held = w.open_function_call("call_h", "lookup");
        assert!(ResponseWriter::is_held_call(held));
        assert!(w.function_call_delta(held, "{\"q\":"));
        w.text_delta(TextKind::OutputText, " check.");
        let open = w.open_function_call("call_o", "get");
        assert_eq!(open, 1, "the held call took no output_index");
        assert!(!ResponseWriter::is_held_call(open));
        assert!(
            w.function_call_delta(held, "1}"),
            "a held call's arguments may come interleaved"
        );
        assert!(w.function_call_delta(open, "{}"));
        let later = w.open_function_call("call_l", "lookup");
        assert!(w.function_call_delta(open, ""), "nor did it close the open call");
        assert!(w.function_call_delta(later, "{}"));
        w.finish(Outcome::Completed);
        assert!(!w.function_call_delta(later, "x"), "the turn has ended");

        let out = String::from_utf8(w.output().to_vec()).unwrap();
        assert!(
            !out.contains("call_h") && !out.contains("call_l") && !out.contains("lookup"),
            "{out}"
        );
        let evs = events(out.as_bytes());
        assert!(evs.iter().enumerate().all(|(i, e)| e["sequence_number"] == i as u64));
        let added: Vec<_> = evs
            .iter()
            .filter(|e| e["type"] == "response.output_item.added")
            .map(|e| (e["output_index"].as_u64().unwrap(), e["item"]["type"].as_str().unwrap()))
            .collect();
        assert_eq!(added, [(0, "message"), (1, "function_call")]);
        let text = evs.iter().find(|e| e["type"] == "response.output_text.done").unwrap();
        assert_eq!(
            text["text"], "Let me check.",
            "one message, streamed on around the held call"
        );
        assert_eq!(
            types(&evs)
                .iter()
                .filter(|t| t.starts_with("response.function_call"))
                .count(),
            2,
            "the ordinary call's one delta and its .done only"
        );
        assert_eq!(
            calls(&w),
            [
                call(None, "call_h", "lookup", "{\"q\":1}"),
                call(Some(1), "call_o", "get", "{}"),
                call(None, "call_l", "lookup", "{}"),
            ]
        );
        let fc_id = w.turn_function_calls().nth(1).unwrap().id.unwrap().to_owned();
        assert!(fc_id.starts_with("fc_"));
        let r: Value = serde_json::from_slice(&w.response_json()).unwrap();
        let output = r["output"].as_array().unwrap();
        assert_eq!(output.len(), 2);
        assert_eq!(output[1]["id"], fc_id);
        let items: Value = serde_json::from_slice(&w.turn_items_json()).unwrap();
        assert_eq!(items, r["output"]);

        // The next turn starts with no held calls; a held call before any item comes first.
        w.begin_turn();
        assert!(calls(&w).is_empty());
        assert_eq!(w.turn_items_json(), b"[]");
        let first = w.open_function_call("call_held2", "other");
        assert!(w.function_call_delta(first, "{\"x\":true}"));
        w.text_delta(TextKind::OutputText, "Done.");
        w.finish(Outcome::Completed);
        assert_eq!(calls(&w), [call(None, "call_held2", "other", "{\"x\":true}")]);
        let items: Value = serde_json::from_slice(&w.turn_items_json()).unwrap();
        assert_eq!(items.as_array().unwrap().len(), 1);
        assert_eq!(items[0]["content"][0]["text"], "Done.");
        assert!(!w.output().windows(10).any(|b| b == b"call_held2"));

        // Names replace the set; an empty set holds nothing.
        w.begin_turn();
        w.set_held_names(Vec::<String>::new());
        assert!(w.held_names().is_empty());
        let index = w.open_function_call("call_b", "lookup");
        assert_eq!(index, 3);
        w.finish_response(Outcome::Completed);
        assert_eq!(calls(&w), [call(Some(3), "call_b", "lookup", "")]);
        let all: Value = serde_json::from_slice(&w.turn_items_json()).unwrap();
        assert_eq!(all.as_array().unwrap().len(), 4, "outside turns: every item");
    }

    fn live_writer(framing: Framing) -> ResponseWriter {
        let mut w = ResponseWriter::new(ResponseSettings::default(), Some(ID.into()), Some(1), framing);
        w.set_held_names(["srv_add", "srv_ask", "agent"]);
        let mut live = HashMap::new();
        for (name, tool) in [("srv_add", "add"), ("srv_ask", "ask")] {
            let item = format!(
                "{{\"type\":\"mcp_call\",\"server_label\":\"srv\",\"name\":\"{tool}\",\"arguments\":\"\",\"status\":\"in_progress\"}}"
            );
            live.insert(
                name.to_owned(),
                LiveCall::new(item.as_bytes(), "mcp", "response.mcp_call").unwrap(),
            );
        }
        w.set_live_calls(live);
        w
    }

    /// The whole stream so far checks as an Open Responses stream (the crate's own checking parser).
    fn check_stream(out: &[u8]) {
        let mut parser = crate::events::parser::ResponseEventParser::new();
        parser.feed(out, |_| {}).unwrap();
        parser.close().unwrap();
    }

    #[test]
    #[allow(clippy::too_many_lines)] // one stream followed from start to end
    fn live_calls_stream_their_arguments_and_wait_for_the_router() {
        let mut w = live_writer(Framing::Sse);
        let mut sent = Vec::new();
        w.begin_turn();
        w.text_delta(TextKind::OutputText, "Adding.");
        let add = w.open_function_call("call_a", "srv_add");
        assert!(ResponseWriter::is_held_call(add));
        assert!(w.function_call_delta(add, "{\"a\":1,"));
        assert!(w.function_call_delta(add, "\"b\":2}"));
        // The first call's arguments went out as they came; the second call closes its arguments and starts.
        let ask = w.open_function_call("call_b", "srv_ask");
        assert!(
            !w.function_call_delta(add, "x"),
            "its arguments were said to be complete"
        );
        assert!(w.function_call_delta(ask, "{}"));
        let get = w.open_function_call("call_c", "get"); // the client's own function, behind both
        assert!(w.function_call_delta(get, "{\"q\":1}"));
        w.finish(Outcome::Completed);
        assert_eq!(w.waiting_count(), 2);
        sent.extend_from_slice(w.output());
        let evs = events(&sent);
        assert_eq!(
            types(&evs)[2..],
            [
                "response.output_item.added",
                "response.content_part.added",
                "response.output_text.delta",
                "response.output_text.done",
                "response.content_part.done",
                "response.output_item.done",
                "response.output_item.added",
                "response.mcp_call_arguments.delta",
                "response.mcp_call_arguments.delta",
                "response.mcp_call_arguments.done",
                "response.mcp_call.in_progress",
            ],
            "what follows the waiting item is kept back"
        );
        let added = &evs[8];
        assert_eq!(added["output_index"], 1);
        assert_eq!(added["item"]["name"], "add");
        assert_eq!(added["item"]["arguments"], "");
        assert_eq!(evs[11]["arguments"], "{\"a\":1,\"b\":2}");
        let a_id = added["item"]["id"].as_str().unwrap().to_owned();
        assert!(a_id.starts_with("mcp_"));

        // The loop sees every call, the live ones with their items.
        let turn: Vec<_> = w
            .turn_function_calls()
            .map(|c| (c.output_index, c.held, c.call_id.to_owned(), c.arguments.to_owned()))
            .collect();
        assert_eq!(
            turn,
            [
                (Some(1), true, "call_a".into(), "{\"a\":1,\"b\":2}".into()),
                (Some(2), true, "call_b".into(), "{}".into()),
                (Some(3), false, "call_c".into(), "{\"q\":1}".into()),
            ]
        );
        assert_eq!(w.turn_function_calls().next().unwrap().id, Some(a_id.as_str()));
        let items: Value = serde_json::from_slice(&w.turn_items_json()).unwrap();
        let kinds: Vec<_> = items.as_array().unwrap().iter().map(|i| i["type"].clone()).collect();
        assert_eq!(
            kinds,
            ["message", "function_call"],
            "waiting items are in no snapshot yet"
        );

        // The router closes them in order; each releases what was written behind it.
        w.clear_output();
        assert!(w.done_item(b"{}").is_err(), "a live item is closed with close_live");
        let done_a = br#"{"type":"mcp_call","server_label":"srv","name":"add","arguments":"{\"a\":1,\"b\":2}","output":"3","error":null,"status":"completed"}"#;
        assert_eq!(w.close_live("response.mcp_call.completed", done_a), Ok(1));
        let released = events(w.output());
        assert_eq!(
            types(&released),
            [
                "response.mcp_call.completed",
                "response.output_item.done",
                "response.output_item.added",
                "response.mcp_call_arguments.delta",
                "response.mcp_call_arguments.done",
                "response.mcp_call.in_progress",
            ]
        );
        assert_eq!(released[1]["item"]["output"], "3");
        assert_eq!(released[1]["item"]["id"], a_id.as_str());
        sent.extend_from_slice(w.output());
        w.clear_output();
        assert!(w.close_live("bad type!", b"{}").is_err());
        assert!(w.close_live("response.mcp_call.failed", b"{\"id\":\"other\"}").is_err());
        assert_eq!(w.waiting_count(), 1, "a refused close writes nothing");
        w.close_live(
            "response.mcp_call.failed",
            b"{\"type\":\"mcp_call\",\"error\":\"no\",\"status\":\"failed\"}",
        )
        .unwrap();
        let released = events(w.output());
        assert_eq!(
            types(&released)[..3],
            [
                "response.mcp_call.failed",
                "response.output_item.done",
                "response.output_item.added"
            ]
        );
        assert_eq!(released[2]["item"]["type"], "function_call");
        assert!(
            w.close_live("response.mcp_call.completed", b"{}").is_err(),
            "none waits"
        );
        sent.extend_from_slice(w.output());
        w.clear_output();

        w.finish_response(Outcome::Completed);
        sent.extend_from_slice(w.output());
        let all = events(&sent);
        assert!(
            all.iter().enumerate().all(|(i, e)| e["sequence_number"] == i as u64),
            "one gapless sequence, in the order sent"
        );
        check_stream(&sent);
        let r: Value = serde_json::from_slice(&w.response_json()).unwrap();
        let output: Vec<_> = r["output"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| {
                (
                    i["type"].as_str().unwrap().to_owned(),
                    i["status"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        assert_eq!(
            output,
            [
                ("message".to_owned(), "completed".to_owned()),
                ("mcp_call".to_owned(), "completed".to_owned()),
                ("mcp_call".to_owned(), "failed".to_owned()),
                ("function_call".to_owned(), "completed".to_owned()),
            ]
        );
        assert_eq!(r["output"][1]["output"], "3");
    }

    #[test]
    fn live_items_the_router_never_closed_end_incomplete_with_the_response() {
        for framing in [Framing::Sse, Framing::JsonLines] {
            let mut w = live_writer(framing);
            w.begin_turn();
            let a = w.open_function_call("call_a", "srv_add");
            w.function_call_delta(a, "{\"a\":1}");
            w.text_delta(TextKind::OutputText, "and more");
            let b = w.open_function_call("call_b", "srv_ask");
            w.function_call_delta(b, "{\"q\"");
            // The upstream fails mid-arguments: everything closes, in order, before the terminal event.
            w.finish_response(Outcome::Failed(ErrorInfo {
                kind: "server_error".into(),
                code: "upstream_error".into(),
                message: "gone".into(),
                param: None,
            }));
            assert_eq!(w.waiting_count(), 0);
            let evs: Vec<Value> = match framing {
                Framing::Sse => {
                    check_stream(w.output());
                    events(w.output())
                }
                Framing::JsonLines => w
                    .output_events()
                    .iter()
                    .map(|e| serde_json::from_slice(e).unwrap())
                    .collect(),
            };
            assert!(evs.iter().enumerate().all(|(i, e)| e["sequence_number"] == i as u64));
            let closes: Vec<_> = evs
                .iter()
                .filter(|e| e["type"] == "response.output_item.done")
                .map(|e| {
                    (
                        e["output_index"].as_u64().unwrap(),
                        e["item"]["status"].as_str().unwrap(),
                    )
                })
                .collect();
            assert_eq!(closes, [(0, "incomplete"), (1, "completed"), (2, "incomplete")]);
            assert_eq!(evs[evs.len() - 2]["type"], "error");
            let failed = evs.iter().filter(|e| e["type"] == "response.mcp_call.failed").count();
            assert_eq!(failed, 2);
            let r: Value = serde_json::from_slice(&w.response_json()).unwrap();
            assert_eq!(r["output"][0]["arguments"], "{\"a\":1}");
            assert_eq!(
                r["output"][2]["arguments"], "{\"q\"",
                "what came, as the stream said it"
            );
        }

        // A silent writer keeps the same state; a cancel closes waiting items too.
        let mut w = ResponseWriter::silent(ResponseSettings::default(), Some(ID.into()), Some(1));
        w.set_held_names(["srv_add"]);
        let mut live = HashMap::new();
        live.insert(
            "srv_add".to_owned(),
            LiveCall::new(
                b"{\"type\":\"mcp_call\",\"arguments\":\"\",\"status\":\"in_progress\"}",
                "mcp",
                "response.mcp_call",
            )
            .unwrap(),
        );
        w.set_live_calls(live);
        w.begin_turn();
        let a = w.open_function_call("call_a", "srv_add");
        w.function_call_delta(a, "{}");
        w.finish(Outcome::Completed);
        assert_eq!(w.waiting_count(), 1);
        assert!(w.output().is_empty());
        assert!(w.cancel());
        let r: Value = serde_json::from_slice(&w.response_json()).unwrap();
        assert_eq!(r["output"][0]["status"], "incomplete");
        assert!(LiveCall::new(b"[]", "mcp", "response.mcp_call").is_err());
        assert!(LiveCall::new(b"{}", "mcp", "bad events").is_err());
    }

    #[test]
    fn a_writer_takes_over_a_response_with_its_own_reasoning_policy() {
        let mut first = ResponseWriter::new(ResponseSettings::default(), Some(ID.into()), Some(1), Framing::Sse)
            .with_reasoning(ReasoningPolicy::Strip);
        first
            .open_item("mcpl", b"{\"type\":\"mcp_list_tools\",\"status\":\"in_progress\"}")
            .unwrap();
        first
            .done_item(b"{\"type\":\"mcp_list_tools\",\"status\":\"completed\"}")
            .unwrap();
        first.begin_turn();
        first.set_usage(Usage {
            input_tokens: 5,
            ..Usage::default()
        });
        let mut sent = first.output().to_vec();
        let seq = first.sequence_number();

        // The next target's writer: sealed reasoning, and the response goes on where the first left it.
        let sealed: SealFn = Box::new(|_| Some("ferroute1.next".to_owned()));
        let mut next = ResponseWriter::new(ResponseSettings::default(), None, None, Framing::Sse)
            .with_reasoning(ReasoningPolicy::Seal(sealed));
        next.take_over(first);
        assert!(next.output().is_empty());
        assert_eq!(next.sequence_number(), seq);
        assert_eq!(next.id(), ID);
        next.begin_turn();
        next.text_delta(TextKind::Reasoning, "hm");
        next.text_delta(TextKind::OutputText, "done");
        next.finish_response(Outcome::Completed);
        sent.extend_from_slice(next.output());
        let evs = events(&sent);
        assert!(evs.iter().enumerate().all(|(i, e)| e["sequence_number"] == i as u64));
        check_stream(&sent);
        let r: Value = serde_json::from_slice(&next.client_response_json()).unwrap();
        assert_eq!(r["output"].as_array().unwrap().len(), 3);
        assert_eq!(
            r["output"][1]["encrypted_content"], "ferroute1.next",
            "the new writer's policy"
        );
        assert_eq!(r["usage"]["input_tokens"], 5, "the first target's tokens count");
    }

    #[test]
    fn held_calls_of_a_silent_writer() {
        let mut w = ResponseWriter::silent(ResponseSettings::default(), Some(ID.into()), Some(1));
        w.set_held_names(["lookup".to_owned()]);
        let held = w.open_function_call("call_h", "lookup");
        assert!(w.function_call_delta(held, "{}"));
        w.text_delta(TextKind::OutputText, "a");
        w.finish(Outcome::Completed);
        assert!(w.output().is_empty());
        assert_eq!(calls(&w), [call(None, "call_h", "lookup", "{}")]);
        let r: Value = serde_json::from_slice(&w.response_json()).unwrap();
        assert_eq!(r["output"].as_array().unwrap().len(), 1);
        assert_eq!(r["output"][0]["type"], "message");
    }

    #[test]
    fn turn_items_are_the_stored_items_of_the_turn() {
        let mut w = ResponseWriter::new(ResponseSettings::default(), Some(ID.into()), Some(1), Framing::Sse)
            .with_reasoning(ReasoningPolicy::Strip);
        w.text_delta(TextKind::OutputText, "before turns");
        assert_eq!(w.turn_items_json(), b"[]", "only closed items, as in `output`");
        w.begin_turn();
        w.text_delta(TextKind::Reasoning, "hm");
        w.reasoning_encrypted_content("sig");
        let index = w.open_function_call("call_1", "get");
        w.function_call_delta(index, "{}");
        w.finish(Outcome::Completed);
        let items: Value = serde_json::from_slice(&w.turn_items_json()).unwrap();
        let types: Vec<_> = items
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["type"].as_str().unwrap())
            .collect();
        assert_eq!(
            types,
            ["reasoning", "function_call"],
            "the message before the turn is not the turn's"
        );
        assert_eq!(
            items[0]["encrypted_content"], "sig",
            "the upstream's own, not the client's null"
        );
        let stored: Value = serde_json::from_slice(&w.response_json()).unwrap();
        assert_eq!(items[0], stored["output"][1]);
        assert_eq!(items[1], stored["output"][2]);
    }

    #[test]
    fn settings_echo_request_and_defaults() {
        let s = ResponseSettings::from_request(
            br#"{"model":"m:p","instructions":"be brief","temperature":0.2,"text":{"verbosity":"low"},
                "reasoning":{"effort":"high"},"metadata":{"k":"v"},"store":false}"#,
        )
        .unwrap();
        let w = ResponseWriter::new(s, Some("resp_x".into()), Some(1), Framing::Sse);
        let r: Value = serde_json::from_slice(&w.response_json()).unwrap();
        assert_eq!(r["model"], "m:p");
        assert_eq!(r["instructions"], "be brief");
        assert_eq!(r["temperature"], 0.2);
        assert_eq!(r["top_p"], 1.0);
        assert_eq!(
            r["text"],
            serde_json::json!({"verbosity": "low", "format": {"type": "text"}})
        );
        assert_eq!(r["reasoning"], serde_json::json!({"effort": "high", "summary": null}));
        assert_eq!(r["metadata"], serde_json::json!({"k": "v"}));
        assert_eq!(r["store"], false);
        assert_eq!(r["tools"], serde_json::json!([]));
        assert_eq!(r["id"], "resp_x");
        assert!(ResponseSettings::from_request(b"[1]").is_err());
        let s = ResponseSettings::from_request(
            br#"{"tools":[{"type":"function","name":"f"},{"type":"mcp","server_label":"x"}],
                "text":{"format":{"type":"json_schema","name":"n","schema":{}}}}"#,
        )
        .unwrap();
        let r: Value =
            serde_json::from_slice(&ResponseWriter::new(s, None, None, Framing::Sse).response_json()).unwrap();
        assert_eq!(
            r["tools"],
            serde_json::json!([{"type":"function","name":"f","description":null,"parameters":null,"strict":null},
                               {"type":"mcp","server_label":"x"}])
        );
        assert_eq!(
            r["text"]["format"],
            serde_json::json!({"type":"json_schema","name":"n","schema":{},"description":null,"strict":false})
        );
        assert_eq!(r["tool_choice"], "auto");
        assert_eq!(r["usage"], Value::Null);
    }
}
