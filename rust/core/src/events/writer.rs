//! The sequencing writer: turns "text arrived for the message", "a function call started", "the
//! upstream finished" into the Open Responses event stream, and accumulates the response object.
//!
//! One writer spans one response: every event it emits carries the next `sequence_number`, items
//! get `output_index` 0, 1, 2… in the order they open, and only one item streams at a time (the
//! spec's grammar: `output_item.added` … `output_item.done` before the next item). Nothing here
//! knows an upstream dialect, so a server-side tool loop can drive one writer across several
//! upstream calls (one sequence, one `output` list).
//!
//! Events are written straight into a reused byte buffer, as SSE frames or as bare JSON objects
//! (one per line, for the WebSocket transport); JSON is written by hand for the fixed envelope and
//! by `serde_json` for strings and echoed request values.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};

use super::ids::{item_id, new_id};
use crate::json::scan::find_string_end;

/// `write!` into a byte buffer, which cannot fail.
macro_rules! put {
    ($out:expr, $($arg:tt)*) => {{
        use std::io::Write as _;
        std::write!($out, $($arg)*).expect("writing to a Vec cannot fail")
    }};
}

/// How events are framed on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// `event: <type>\ndata: <json>\n\n`, and `data: [DONE]\n\n` after the terminal event.
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
}

impl Status {
    /// The spec's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::InProgress => "in_progress",
            Status::Completed => "completed",
            Status::Incomplete => "incomplete",
            Status::Failed => "failed",
        }
    }
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
        Self { model, store, rendered }
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

#[derive(Debug)]
struct Part {
    kind: TextKind,
    text: String,
}

#[derive(Debug)]
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
    },
    FunctionCall {
        call_id: String,
        name: String,
        arguments: String,
    },
}

#[derive(Debug)]
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
pub struct ResponseWriter {
    id: String,
    created_at: u64,
    completed_at: Option<u64>,
    settings: ResponseSettings,
    framing: Framing,
    /// False for the whole-body converter: state is kept, no events are written.
    emit: bool,
    started: bool,
    seq: u64,
    out: Vec<u8>,
    items: Vec<Item>,
    /// The item streaming now (always the last one) if it is not closed yet.
    open: Option<usize>,
    status: Status,
    usage: Option<Usage>,
    error: Option<ErrorInfo>,
    incomplete_reason: Option<String>,
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
            emit: true,
            started: false,
            seq: 0,
            out: Vec::with_capacity(4096),
            items: Vec::new(),
            open: None,
            status: Status::InProgress,
            usage: None,
            error: None,
            incomplete_reason: None,
        }
    }

    /// A writer that keeps the response state but writes no events (whole-body conversion).
    pub fn silent(settings: ResponseSettings, id: Option<String>, created_at: Option<u64>) -> Self {
        let mut writer = Self::new(settings, id, created_at, Framing::JsonLines);
        writer.emit = false;
        writer
    }

    /// The response id (`resp_…`).
    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn status(&self) -> Status {
        self.status
    }

    /// True once the terminal event has been written.
    pub fn is_finished(&self) -> bool {
        self.status != Status::InProgress
    }

    /// The next `sequence_number`.
    pub fn sequence_number(&self) -> u64 {
        self.seq
    }

    /// Frames written since the last [`clear_output`](Self::clear_output).
    pub fn output(&self) -> &[u8] {
        &self.out
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
                w.write_response(out);
            });
        }
    }

    /// Append streamed text of `kind`, opening the item and part it belongs to when needed.
    pub fn text_delta(&mut self, kind: TextKind, delta: &str) {
        if delta.is_empty() || self.is_finished() {
            return;
        }
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
                out.extend_from_slice(b",\"logprobs\":[]");
            }
        });
        match &mut self.items[index].body {
            Body::Message { parts, .. } => parts[content_index].text.push_str(delta),
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

    /// Start a `function_call` item (closing whatever item is open); returns its `output_index`.
    pub fn open_function_call(&mut self, call_id: &str, name: &str) -> usize {
        self.start();
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
    /// nothing) when that item is no longer the open one: its `.done` has been sent.
    pub fn function_call_delta(&mut self, output_index: usize, delta: &str) -> bool {
        if self.open != Some(output_index) {
            return false;
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

    /// Close the open item (if any) as completed.
    pub fn close_open_item(&mut self) {
        self.close_item(ItemStatus::Completed);
    }

    /// Record token usage for the response object.
    pub fn set_usage(&mut self, usage: Usage) {
        self.usage = Some(usage);
    }

    /// End the response: close the open item, write `error` (when failed) and the terminal event,
    /// then `data: [DONE]` in SSE framing. Later calls do nothing.
    pub fn finish(&mut self, outcome: Outcome) {
        if self.is_finished() {
            return;
        }
        self.start();
        let item_status = if outcome == Outcome::Completed {
            ItemStatus::Completed
        } else {
            ItemStatus::Incomplete
        };
        self.close_item(item_status);
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
            w.write_response(out);
        });
        if self.emit && self.framing == Framing::Sse {
            self.out.extend_from_slice(b"data: [DONE]\n\n");
        }
    }

    /// The response object as it stands, as JSON.
    pub fn response_json(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(1024);
        self.write_response(&mut out);
        out
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
                },
            ),
        }
    }

    fn push_item(&mut self, prefix: &str, body: Body) -> usize {
        let index = self.items.len();
        let id = item_id(prefix, &self.id, index);
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
            w.items[index].write(out);
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
            Body::FunctionCall { .. } => unreachable!("text is never routed to a function call"),
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
                *content = Some(Part { kind, text });
                *part_open = true;
                0
            }
            Body::FunctionCall { .. } => unreachable!(),
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
            body.extend_from_slice(b",\"logprobs\":[]");
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
        self.event("response.output_item.done", |w, out| {
            put!(out, ",\"output_index\":{index},\"item\":");
            w.items[index].write(out);
        });
    }

    // --- JSON --------------------------------------------------------------------------------------

    /// Write one event: the envelope (`type`, `sequence_number`) around what `body` writes (`,"k":v…`).
    fn event(&mut self, ty: &str, body: impl FnOnce(&Self, &mut Vec<u8>)) {
        if !self.emit {
            return;
        }
        let mut out = std::mem::take(&mut self.out);
        if self.framing == Framing::Sse {
            out.extend_from_slice(b"event: ");
            out.extend_from_slice(ty.as_bytes());
            out.extend_from_slice(b"\ndata: ");
        }
        out.extend_from_slice(b"{\"type\":\"");
        out.extend_from_slice(ty.as_bytes());
        out.extend_from_slice(b"\",\"sequence_number\":");
        out.extend_from_slice(itoa::Buffer::new().format(self.seq).as_bytes());
        body(self, &mut out);
        out.push(b'}');
        out.extend_from_slice(if self.framing == Framing::Sse { b"\n\n" } else { b"\n" });
        self.seq += 1;
        self.out = out;
    }

    fn write_response(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"id\":");
        write_str(out, &self.id);
        put!(out, ",\"object\":\"response\",\"created_at\":{}", self.created_at);
        match self.completed_at {
            Some(t) => put!(out, ",\"completed_at\":{t}"),
            None => out.extend_from_slice(b",\"completed_at\":null"),
        }
        out.extend_from_slice(b",\"status\":\"");
        out.extend_from_slice(self.status.as_str().as_bytes());
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
        // Snapshots before the end list only closed items, so `output` always holds whole items.
        for (i, item) in self
            .items
            .iter()
            .filter(|item| item.status != ItemStatus::InProgress)
            .enumerate()
        {
            if i > 0 {
                out.push(b',');
            }
            item.write(out);
        }
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
        match &self.usage {
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
    fn write(&self, out: &mut Vec<u8>) {
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
                ..
            } => {
                out.extend_from_slice(b",\"type\":\"reasoning\",\"status\":\"");
                out.extend_from_slice(self.status.as_str().as_bytes());
                out.extend_from_slice(b"\",\"summary\":[");
                if self.status != ItemStatus::InProgress {
                    for (i, text) in summary.iter().enumerate() {
                        if i > 0 {
                            out.push(b',');
                        }
                        out.extend_from_slice(b"{\"type\":\"summary_text\",\"text\":");
                        write_str(out, text);
                        out.push(b'}');
                    }
                }
                out.extend_from_slice(b"],\"content\":[");
                if let Some(part) = content.as_ref().filter(|_| self.status != ItemStatus::InProgress) {
                    write_part(out, part);
                }
                out.push(b']');
                if let Some(encrypted) = encrypted_content
                    .as_ref()
                    .filter(|_| self.status != ItemStatus::InProgress)
                {
                    out.extend_from_slice(b",\"encrypted_content\":");
                    write_str(out, encrypted);
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

fn write_part(out: &mut Vec<u8>, part: &Part) {
    match part.kind {
        TextKind::OutputText => {
            out.extend_from_slice(b"{\"type\":\"output_text\",\"text\":");
            write_str(out, &part.text);
            out.extend_from_slice(b",\"annotations\":[],\"logprobs\":[]}");
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
