//! The grammar checker: each event's JSON text, already split out of the SSE framing, against the
//! spec's streaming grammar (SPEC.md "Streaming grammar"), while it accumulates the response object
//! the stream describes.
//!
//! Checked: the first event is `response.created` (or `queued`); every event has a
//! `sequence_number`, one more than the last; the SSE `event:` name, when present, equals `type`
//! (or is the default `message`); `output_item.added` in `output_index` order; parts added in
//! `content_index`/`summary_index` order inside an open item; deltas and `.done`s only for open parts
//! of known, open items (by `output_index` and/or `item_id`, which must agree); each full text equal
//! to its deltas (`.done`, `content_part.done`, `output_item.done`'s `arguments`); one `.done` per
//! part; an item's parts closed before the item; `response.completed`/`incomplete` only with every
//! item closed; exactly one terminal event, then only `data: [DONE]` (at most once).
//!
//! Leniencies, each taken from a recorded real stream in `tests/fixtures/responses/` unless said:
//! - An `error` event may come before `response.created` (a server failing early): it is handed on,
//!   and the stream still needs its terminal event.
//! - `sequence_number` may start at any value (every recorded server starts at 0, but nothing in
//!   the spec forbids a stream that continues a series); after that it must go up by one.
//! - Several output items may be open at once, and closed in any order (OpenRouter opens the message
//!   item while the reasoning item is still open and closes the reasoning item last).
//! - The legacy `response.reasoning_text.delta/done` names are aliases of `response.reasoning.*`
//!   (DeepSeek, LM Studio and OpenRouter all send them).
//! - A `.done` with no deltas before it sets the full text (LM Studio sends
//!   `function_call_arguments.done` alone); with deltas it must equal their concatenation.
//! - Events without an `event:` line (OpenRouter's data-only frames) and a trailing `data: [DONE]`
//!   (OpenRouter) or none (OpenAI) are both fine.
//! - The terminal response's `output` must list as many items as were streamed, but their ids are
//!   not compared (OpenRouter's final reasoning item has another id than the streamed one; OpenAI
//!   re-encrypts `encrypted_content`).
//! - Unknown event types (OpenAI's hosted-tool events such as `response.web_search_call.searching`)
//!   and slug-prefixed extension events (`ferroute:…`) pass through; only their `sequence_number` is
//!   checked.

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use super::error::{excerpt, StreamError, StreamErrorKind};
use super::fields::EventFields;

/// The `output` of a terminal event's response, unparsed item by item.
#[derive(Deserialize)]
struct Output<'a> {
    #[serde(borrow)]
    output: Option<Vec<&'a RawValue>>,
}

/// What a checked event was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Checked {
    /// A JSON event, to hand to the caller.
    Event,
    /// The `data: [DONE]` sentinel (not an event).
    Done,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Start,
    Streaming,
    Terminated,
    Done,
}

/// Which list of parts a text event targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PartList {
    Content,
    Summary,
}

impl PartList {
    fn field(self) -> &'static str {
        match self {
            Self::Content => "content_index",
            Self::Summary => "summary_index",
        }
    }
}

/// A content or summary part.
#[derive(Debug)]
struct Part {
    /// As added; replaced by the full part at `part.done`.
    value: Value,
    /// The text accumulated from deltas (or set by a `.done` without deltas).
    text: String,
    /// `"refusal"` for refusal parts, else `"text"`.
    text_key: &'static str,
    deltas: bool,
    text_done: bool,
    open: bool,
}

impl Part {
    fn new(value: Value) -> Self {
        let text_key = if value.get("type").and_then(Value::as_str) == Some("refusal") {
            "refusal"
        } else {
            "text"
        };
        Self {
            value,
            text: String::new(),
            text_key,
            deltas: false,
            text_done: false,
            open: true,
        }
    }

    fn build(&self) -> Value {
        let mut value = self.value.clone();
        if self.open && (self.deltas || self.text_done) {
            if let Value::Object(map) = &mut value {
                map.insert(self.text_key.to_owned(), Value::String(self.text.clone()));
            }
        }
        value
    }
}

/// An output item.
#[derive(Debug)]
struct Item {
    id: Option<String>,
    /// As added; replaced by the full item at `output_item.done`.
    value: Value,
    open: bool,
    content: Vec<Part>,
    summary: Vec<Part>,
    arguments: String,
    argument_deltas: bool,
    arguments_done: bool,
}

impl Item {
    fn parts(&mut self, list: PartList) -> &mut Vec<Part> {
        match list {
            PartList::Content => &mut self.content,
            PartList::Summary => &mut self.summary,
        }
    }

    /// The open part `part_index` of `list`; an event naming any other part is an error.
    fn open_part(
        &mut self,
        list: PartList,
        part_index: u64,
        at: At,
        kind: &str,
        index: usize,
    ) -> Result<&mut Part, StreamError> {
        self.parts(list)
            .get_mut(part_index as usize)
            .filter(|part| part.open)
            .ok_or_else(|| {
                at.err(StreamErrorKind::PartNotOpen {
                    event: kind.to_owned(),
                    output_index: index as u64,
                    field: list.field(),
                    index: part_index,
                })
            })
    }

    fn build(&self) -> Value {
        let mut value = self.value.clone();
        if self.open {
            if let Value::Object(map) = &mut value {
                if !self.content.is_empty() {
                    map.insert("content".to_owned(), self.content.iter().map(Part::build).collect());
                }
                if !self.summary.is_empty() {
                    map.insert("summary".to_owned(), self.summary.iter().map(Part::build).collect());
                }
                if self.argument_deltas || self.arguments_done {
                    map.insert("arguments".to_owned(), Value::String(self.arguments.clone()));
                }
            }
        }
        value
    }
}

/// Checks events already split out of the SSE framing and accumulates the response.
#[derive(Debug)]
pub struct ResponseChecker {
    events: u64,
    next_sequence: Option<u64>,
    phase: Phase,
    terminal_kind: Option<String>,
    /// The last `response.created` / `in_progress` / `queued` snapshot (its `output` ignored).
    snapshot: Option<Map<String, Value>>,
    items: Vec<Item>,
    /// The terminal event's `response`, verbatim.
    terminal: Option<String>,
    pub(super) failed: Option<StreamError>,
    version: u64,
}

impl Default for ResponseChecker {
    fn default() -> Self {
        Self::new()
    }
}

/// A full text (`.done`, `content_part.done`, `output_item.done`) that differs from its deltas.
#[cold]
fn text_mismatch(at: At, kind: &str, index: usize, streamed: &str, got: &str) -> StreamError {
    at.err(StreamErrorKind::TextMismatch {
        event: kind.to_owned(),
        output_index: index as u64,
        streamed: streamed.to_owned(),
        got: got.to_owned(),
    })
}

/// A `.done` event's full text against what streamed: equal to the deltas when there were some,
/// otherwise it is the text (a server may send `.done` alone); a second `.done` is an error.
fn settle_done(
    at: At,
    kind: &str,
    index: usize,
    streamed: &mut String,
    had_deltas: bool,
    done: &mut bool,
    text: &str,
) -> Result<(), StreamError> {
    if *done {
        return Err(at.err(StreamErrorKind::DuplicateDone {
            event: kind.to_owned(),
            output_index: index as u64,
        }));
    }
    if !had_deltas {
        streamed.push_str(text);
    } else if text != streamed.as_str() {
        return Err(text_mismatch(at, kind, index, streamed, text));
    }
    *done = true;
    Ok(())
}

/// Where an event sits, for error reports.
#[derive(Clone, Copy)]
struct At {
    index: u64,
    sequence: Option<u64>,
    offset: u64,
}

impl At {
    #[cold]
    fn err(self, kind: StreamErrorKind) -> StreamError {
        StreamError {
            kind: Box::new(kind),
            event_index: Some(self.index),
            sequence_number: self.sequence,
            offset: self.offset,
        }
    }
}

impl ResponseChecker {
    /// A checker waiting for the first event.
    pub fn new() -> Self {
        Self {
            events: 0,
            next_sequence: None,
            phase: Phase::Start,
            terminal_kind: None,
            snapshot: None,
            items: Vec::new(),
            terminal: None,
            failed: None,
            version: 0,
        }
    }

    /// Checks one event: `name` is its SSE `event:` field, `data` its data, `offset` where it sits in
    /// the stream (used in error reports only). After an error every later call returns that error.
    pub fn check(&mut self, name: Option<&str>, data: &str, offset: u64) -> Result<Checked, StreamError> {
        let checked = self.check_with(name, data, offset, |data| {
            EventFields::parse(data).map(|fields| ((), fields))
        })?;
        Ok(if checked.is_some() {
            Checked::Event
        } else {
            Checked::Done
        })
    }

    /// [`Self::check`] with the caller's JSON parser: `parse` turns the event's text into its
    /// [`EventFields`] plus whatever else the caller builds from it (returned if the event passes;
    /// `None` for `[DONE]`). An `Err` from `parse` is reported as malformed JSON.
    pub fn check_with<'d, T>(
        &mut self,
        name: Option<&str>,
        data: &'d str,
        offset: u64,
        parse: impl FnOnce(&'d str) -> Result<(T, EventFields<'d>), String>,
    ) -> Result<Option<T>, StreamError> {
        if let Some(error) = &self.failed {
            return Err(error.clone());
        }
        let result = self.check_inner(name, data, offset, parse);
        if let Err(error) = &result {
            self.failed = Some(error.clone());
        }
        result
    }

    /// The error that stopped the stream, if any.
    pub fn error(&self) -> Option<&StreamError> {
        self.failed.as_ref()
    }

    /// True once the terminal event has been seen.
    pub fn is_terminated(&self) -> bool {
        matches!(self.phase, Phase::Terminated | Phase::Done)
    }

    /// Number of JSON events accepted so far.
    pub fn event_count(&self) -> u64 {
        self.events
    }

    /// Changes whenever the accumulated response changes (for callers caching a converted copy).
    pub fn version(&self) -> u64 {
        self.version
    }

    /// End of stream: an error unless the terminal event was seen (or an earlier error).
    pub fn finish(&mut self, offset: u64) -> Result<(), StreamError> {
        if let Some(error) = &self.failed {
            return Err(error.clone());
        }
        if self.is_terminated() {
            return Ok(());
        }
        let error = StreamError {
            kind: Box::new(StreamErrorKind::MissingTerminal { events: self.events }),
            event_index: None,
            sequence_number: None,
            offset,
        };
        self.failed = Some(error.clone());
        Err(error)
    }

    /// The response accumulated so far as JSON text: the terminal event's `response` verbatim once it
    /// has arrived, else the latest snapshot with `output` built from the streamed items.
    pub fn response_json(&self) -> Option<String> {
        if let Some(terminal) = &self.terminal {
            return Some(terminal.clone());
        }
        self.built_response().map(|value| value.to_string())
    }

    /// The response accumulated so far (see [`Self::response_json`]).
    pub fn response(&self) -> Option<Value> {
        if let Some(terminal) = &self.terminal {
            return serde_json::from_str(terminal).ok();
        }
        self.built_response()
    }

    fn built_response(&self) -> Option<Value> {
        let mut response = self.snapshot.clone()?;
        response.insert("output".to_owned(), self.items.iter().map(Item::build).collect());
        Some(Value::Object(response))
    }

    #[allow(clippy::too_many_lines)] // one match over the grammar reads better than a dozen helpers
    fn check_inner<'d, T>(
        &mut self,
        name: Option<&str>,
        data: &'d str,
        offset: u64,
        parse: impl FnOnce(&'d str) -> Result<(T, EventFields<'d>), String>,
    ) -> Result<Option<T>, StreamError> {
        let mut at = At {
            index: self.events,
            sequence: None,
            offset,
        };
        if data == "[DONE]" {
            return match self.phase {
                Phase::Terminated => {
                    self.phase = Phase::Done;
                    Ok(None)
                }
                Phase::Done => Err(at.err(StreamErrorKind::AfterDone {
                    event: "data: [DONE]".to_owned(),
                })),
                Phase::Start | Phase::Streaming => Err(at.err(StreamErrorKind::DoneBeforeTerminal)),
            };
        }
        if !data.trim_start().starts_with('{') {
            return Err(at.err(StreamErrorKind::InvalidJson(format!(
                "data starts with {}",
                excerpt(data)
            ))));
        }
        let (built, event) = parse(data).map_err(|message| at.err(StreamErrorKind::InvalidJson(message)))?;
        let Some(kind) = event.kind.as_deref() else {
            return Err(at.err(StreamErrorKind::MissingType));
        };
        at.sequence = event.sequence_number;
        if let Some(field) = event.malformed {
            if KNOWN.contains(&kind) {
                return Err(at.err(StreamErrorKind::BadField {
                    event: kind.to_owned(),
                    field,
                }));
            }
        }
        self.check_common(name, kind, event.sequence_number, at)?;

        match kind {
            "response.created" | "response.in_progress" | "response.queued" => {
                let response = event.response.ok_or_else(|| bad_field(at, kind, "response"))?;
                let Ok(Value::Object(map)) = serde_json::from_str(response) else {
                    return Err(bad_field(at, kind, "response"));
                };
                self.snapshot = Some(map);
                self.version += 1;
            }
            "response.completed" | "response.incomplete" | "response.failed" => {
                let response = event.response.ok_or_else(|| bad_field(at, kind, "response"))?;
                if kind != "response.failed" {
                    if let Some(open) = self.items.iter().position(|item| item.open) {
                        return Err(at.err(StreamErrorKind::ItemStillOpen {
                            event: kind.to_owned(),
                            output_index: open as u64,
                        }));
                    }
                    let output = serde_json::from_str::<Output<'_>>(response)
                        .map_err(|_| bad_field(at, kind, "response"))?
                        .output
                        .ok_or_else(|| bad_field(at, kind, "response.output"))?;
                    if output.len() != self.items.len() {
                        return Err(at.err(StreamErrorKind::OutputCount {
                            event: kind.to_owned(),
                            streamed: self.items.len() as u64,
                            got: output.len() as u64,
                        }));
                    }
                }
                self.terminal = Some(response.to_owned());
                self.terminal_kind = Some(kind.to_owned());
                self.phase = Phase::Terminated;
                self.version += 1;
            }
            "response.output_item.added" => {
                let index = event.output_index.ok_or_else(|| bad_field(at, kind, "output_index"))?;
                let expected = self.items.len() as u64;
                if index != expected {
                    return Err(at.err(StreamErrorKind::OutputIndex { expected, got: index }));
                }
                let value = object(event.item).ok_or_else(|| bad_field(at, kind, "item"))?;
                let id = value.get("id").and_then(Value::as_str).map(str::to_owned);
                self.items.push(Item {
                    id,
                    value,
                    open: true,
                    content: Vec::new(),
                    summary: Vec::new(),
                    arguments: String::new(),
                    argument_deltas: false,
                    arguments_done: false,
                });
                self.version += 1;
            }
            "response.output_item.done" => {
                let value = object(event.item).ok_or_else(|| bad_field(at, kind, "item"))?;
                let item_id = value.get("id").and_then(Value::as_str);
                let index = self.open_item(kind, event.output_index, item_id, at)?;
                let item = &mut self.items[index];
                for list in [PartList::Content, PartList::Summary] {
                    if let Some(open) = item.parts(list).iter().position(|part| part.open) {
                        return Err(at.err(StreamErrorKind::PartStillOpen {
                            output_index: index as u64,
                            field: list.field(),
                            index: open as u64,
                        }));
                    }
                }
                if item.argument_deltas {
                    if let Some(arguments) = value.get("arguments").and_then(Value::as_str) {
                        if arguments != item.arguments {
                            return Err(text_mismatch(at, kind, index, &item.arguments, arguments));
                        }
                    }
                }
                item.value = value;
                item.open = false;
                // The full item replaces the accumulators; free them.
                item.content = Vec::new();
                item.summary = Vec::new();
                item.arguments = String::new();
                self.version += 1;
            }
            "response.content_part.added" | "response.reasoning_summary_part.added" => {
                let list = if kind == "response.content_part.added" {
                    PartList::Content
                } else {
                    PartList::Summary
                };
                let part_index = part_index(&event, list).ok_or_else(|| bad_field(at, kind, list.field()))?;
                let index = self.open_item(kind, event.output_index, item_id(&event), at)?;
                let value = object(event.part).ok_or_else(|| bad_field(at, kind, "part"))?;
                let parts = self.items[index].parts(list);
                let expected = parts.len() as u64;
                if part_index != expected {
                    return Err(at.err(StreamErrorKind::PartIndex {
                        event: kind.to_owned(),
                        output_index: index as u64,
                        field: list.field(),
                        expected,
                        got: part_index,
                    }));
                }
                parts.push(Part::new(value));
                self.version += 1;
            }
            "response.content_part.done" | "response.reasoning_summary_part.done" => {
                let list = if kind == "response.content_part.done" {
                    PartList::Content
                } else {
                    PartList::Summary
                };
                let part_index = part_index(&event, list).ok_or_else(|| bad_field(at, kind, list.field()))?;
                let index = self.open_item(kind, event.output_index, item_id(&event), at)?;
                let value = object(event.part).ok_or_else(|| bad_field(at, kind, "part"))?;
                let part = self.items[index].open_part(list, part_index, at, kind, index)?;
                if part.deltas || part.text_done {
                    if let Some(text) = value.get(part.text_key).and_then(Value::as_str) {
                        if text != part.text {
                            return Err(text_mismatch(at, kind, index, &part.text, text));
                        }
                    }
                }
                part.value = value;
                part.open = false;
                part.text = String::new();
                self.version += 1;
            }
            "response.output_text.delta"
            | "response.refusal.delta"
            | "response.reasoning.delta"
            | "response.reasoning_text.delta"
            | "response.reasoning_summary_text.delta" => {
                let list = if kind == "response.reasoning_summary_text.delta" {
                    PartList::Summary
                } else {
                    PartList::Content
                };
                let Some(delta) = &event.delta else {
                    return Err(bad_field(at, kind, "delta"));
                };
                let part_index = part_index(&event, list).ok_or_else(|| bad_field(at, kind, list.field()))?;
                let index = self.open_item(kind, event.output_index, item_id(&event), at)?;
                let part = self.items[index]
                    .parts(list)
                    .get_mut(part_index as usize)
                    .filter(|part| part.open && !part.text_done)
                    .ok_or_else(|| {
                        at.err(StreamErrorKind::DeltaOutsidePart {
                            event: kind.to_owned(),
                            output_index: index as u64,
                            field: list.field(),
                            index: part_index,
                        })
                    })?;
                part.text.push_str(delta);
                part.deltas = true;
                self.version += 1;
            }
            "response.output_text.done"
            | "response.refusal.done"
            | "response.reasoning.done"
            | "response.reasoning_text.done"
            | "response.reasoning_summary_text.done" => {
                let list = if kind == "response.reasoning_summary_text.done" {
                    PartList::Summary
                } else {
                    PartList::Content
                };
                let text = if kind == "response.refusal.done" {
                    &event.refusal
                } else {
                    &event.text
                };
                let field = if kind == "response.refusal.done" {
                    "refusal"
                } else {
                    "text"
                };
                let Some(text) = text else {
                    return Err(bad_field(at, kind, field));
                };
                let part_index = part_index(&event, list).ok_or_else(|| bad_field(at, kind, list.field()))?;
                let index = self.open_item(kind, event.output_index, item_id(&event), at)?;
                let part = self.items[index].open_part(list, part_index, at, kind, index)?;
                settle_done(at, kind, index, &mut part.text, part.deltas, &mut part.text_done, text)?;
                self.version += 1;
            }
            "response.function_call_arguments.delta" => {
                let Some(delta) = &event.delta else {
                    return Err(bad_field(at, kind, "delta"));
                };
                let index = self.open_item(kind, event.output_index, item_id(&event), at)?;
                let item = &mut self.items[index];
                if item.arguments_done {
                    return Err(at.err(StreamErrorKind::DeltaOutsidePart {
                        event: kind.to_owned(),
                        output_index: index as u64,
                        field: "arguments",
                        index: 0,
                    }));
                }
                item.arguments.push_str(delta);
                item.argument_deltas = true;
                self.version += 1;
            }
            "response.function_call_arguments.done" => {
                let Some(arguments) = &event.arguments else {
                    return Err(bad_field(at, kind, "arguments"));
                };
                let index = self.open_item(kind, event.output_index, item_id(&event), at)?;
                let item = &mut self.items[index];
                let deltas = item.argument_deltas;
                settle_done(
                    at,
                    kind,
                    index,
                    &mut item.arguments,
                    deltas,
                    &mut item.arguments_done,
                    arguments,
                )?;
                self.version += 1;
            }
            // `error` (before response.failed), hosted-tool and extension events: sequence checks only.
            _ => {}
        }
        self.events += 1;
        Ok(Some(built))
    }

    /// The checks every event gets: ordering against the stream's phase, its SSE name and its
    /// `sequence_number`.
    fn check_common(
        &mut self,
        name: Option<&str>,
        kind: &str,
        sequence: Option<u64>,
        at: At,
    ) -> Result<(), StreamError> {
        if let Some(name) = name {
            if name != kind && name != "message" {
                return Err(at.err(StreamErrorKind::EventNameMismatch {
                    name: name.to_owned(),
                    event: kind.to_owned(),
                }));
            }
        }
        match self.phase {
            Phase::Start => match kind {
                "response.created" | "response.queued" => self.phase = Phase::Streaming,
                // A server that fails before it creates the response: the caller gets the error
                // event, and `finish` reports the missing terminal event.
                "error" => {}
                _ => return Err(at.err(StreamErrorKind::FirstEvent { event: kind.to_owned() })),
            },
            Phase::Streaming => {}
            Phase::Terminated => {
                return Err(at.err(StreamErrorKind::AfterTerminal {
                    event: kind.to_owned(),
                    terminal: self.terminal_kind.clone().unwrap_or_default(),
                }))
            }
            Phase::Done => return Err(at.err(StreamErrorKind::AfterDone { event: kind.to_owned() })),
        }
        let Some(sequence) = sequence else {
            return Err(at.err(StreamErrorKind::MissingSequenceNumber));
        };
        if let Some(expected) = self.next_sequence {
            if sequence != expected {
                return Err(at.err(StreamErrorKind::SequenceNumber {
                    expected,
                    got: sequence,
                }));
            }
        }
        self.next_sequence = Some(sequence + 1);
        Ok(())
    }

    /// The index of the open output item an event names by `output_index` and/or `item_id`.
    fn open_item(
        &self,
        kind: &str,
        output_index: Option<u64>,
        item_id: Option<&str>,
        at: At,
    ) -> Result<usize, StreamError> {
        let unknown = || {
            at.err(StreamErrorKind::UnknownItem {
                event: kind.to_owned(),
                output_index,
                item_id: item_id.map(str::to_owned),
            })
        };
        let index = if let Some(index) = output_index {
            let index = usize::try_from(index).map_err(|_| unknown())?;
            let item = self.items.get(index).ok_or_else(unknown)?;
            if let (Some(got), Some(expected)) = (item_id, &item.id) {
                if got != expected {
                    return Err(at.err(StreamErrorKind::ItemIdMismatch {
                        event: kind.to_owned(),
                        output_index: index as u64,
                        expected: expected.clone(),
                        got: got.to_owned(),
                    }));
                }
            }
            index
        } else {
            let id = item_id.ok_or_else(unknown)?;
            self.items
                .iter()
                .rposition(|item| item.id.as_deref() == Some(id))
                .ok_or_else(unknown)?
        };
        if !self.items[index].open {
            return Err(at.err(StreamErrorKind::ItemClosed {
                event: kind.to_owned(),
                output_index: index as u64,
            }));
        }
        Ok(index)
    }
}

/// The event types the checker knows the shape of.
const KNOWN: &[&str] = &[
    "response.created",
    "response.in_progress",
    "response.queued",
    "response.completed",
    "response.incomplete",
    "response.failed",
    "response.output_item.added",
    "response.output_item.done",
    "response.content_part.added",
    "response.content_part.done",
    "response.reasoning_summary_part.added",
    "response.reasoning_summary_part.done",
    "response.output_text.delta",
    "response.output_text.done",
    "response.refusal.delta",
    "response.refusal.done",
    "response.reasoning.delta",
    "response.reasoning.done",
    "response.reasoning_text.delta",
    "response.reasoning_text.done",
    "response.reasoning_summary_text.delta",
    "response.reasoning_summary_text.done",
    "response.function_call_arguments.delta",
    "response.function_call_arguments.done",
];

#[cold]
fn bad_field(at: At, kind: &str, field: &'static str) -> StreamError {
    at.err(StreamErrorKind::BadField {
        event: kind.to_owned(),
        field,
    })
}

fn item_id<'e>(event: &'e EventFields<'_>) -> Option<&'e str> {
    event.item_id.as_deref()
}

fn part_index(event: &EventFields<'_>, list: PartList) -> Option<u64> {
    match list {
        PartList::Content => event.content_index,
        PartList::Summary => event.summary_index,
    }
}

/// A JSON object member parsed into a [`Value`]; None if absent or not an object.
fn object(raw: Option<&str>) -> Option<Value> {
    match serde_json::from_str(raw?) {
        Ok(value @ Value::Object(_)) => Some(value),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::events::parser::error::is_terminal;
    use crate::events::parser::test_streams::{
        error_of, fixtures, head, message_item, numbered, response, run, stream, text_events,
    };

    #[test]
    fn valid_text_stream() {
        let events = text_events();
        let (got, response, result) = run(&stream(&events));
        result.expect("valid");
        assert_eq!(got.len(), events.len());
        for (got, want) in got.iter().zip(&events) {
            assert_eq!(&serde_json::from_str::<Value>(got).unwrap(), want);
        }
        let response: Value = serde_json::from_str(&response.unwrap()).unwrap();
        assert_eq!(response, events.last().unwrap()["response"]);
    }

    #[test]
    fn response_accumulates_while_streaming() {
        let events = text_events();
        let mut checker = ResponseChecker::new();
        assert_eq!(checker.response(), None);
        let mut versions = vec![checker.version()];
        for (n, event) in events.iter().enumerate() {
            checker.check(event["type"].as_str(), &event.to_string(), 0).unwrap();
            versions.push(checker.version());
            let response = checker.response().unwrap();
            let output = &response["output"];
            match n {
                0 | 1 => assert_eq!(output, &json!([])),
                2 => assert_eq!(output[0]["status"], "in_progress"),
                3 => assert_eq!(output[0]["content"][0]["text"], ""),
                4 => assert_eq!(output[0]["content"][0]["text"], "Hello"),
                5..=7 => assert_eq!(output[0]["content"][0]["text"], "Hello wörld \"q\""),
                8 => assert_eq!(output[0], message_item("completed", Some("Hello wörld \"q\""))),
                _ => assert_eq!(response, events[9]["response"]),
            }
        }
        assert!(
            versions.windows(2).all(|pair| pair[0] < pair[1]),
            "every event changes the response"
        );
        assert!(checker.finish(0).is_ok());
    }

    #[test]
    fn function_call_reasoning_and_refusal_accumulate() {
        let mut events = head();
        let fc = json!({"id": "fc_1", "type": "function_call", "call_id": "c1", "name": "f", "arguments": "", "status": "in_progress"});
        let rs = json!({"id": "rs_1", "type": "reasoning", "summary": [], "status": "in_progress"});
        let msg =
            json!({"id": "msg_2", "type": "message", "role": "assistant", "content": [], "status": "in_progress"});
        events.extend([
            json!({"type": "response.output_item.added", "output_index": 0, "item": rs}),
            json!({"type": "response.reasoning_summary_part.added", "item_id": "rs_1", "output_index": 0, "summary_index": 0,
                   "part": {"type": "summary_text", "text": ""}}),
            json!({"type": "response.reasoning_summary_text.delta", "item_id": "rs_1", "output_index": 0, "summary_index": 0, "delta": "Thinking"}),
            json!({"type": "response.content_part.added", "item_id": "rs_1", "output_index": 0, "content_index": 0,
                   "part": {"type": "reasoning_text", "text": ""}}),
            json!({"type": "response.reasoning.delta", "item_id": "rs_1", "output_index": 0, "content_index": 0, "delta": "raw"}),
            json!({"type": "response.output_item.added", "output_index": 1, "item": fc}),
            json!({"type": "response.function_call_arguments.delta", "item_id": "fc_1", "output_index": 1, "delta": "{\"a\":"}),
            json!({"type": "response.function_call_arguments.delta", "item_id": "fc_1", "output_index": 1, "delta": "1}"}),
            json!({"type": "response.output_item.added", "output_index": 2, "item": msg}),
            json!({"type": "response.content_part.added", "item_id": "msg_2", "output_index": 2, "content_index": 0,
                   "part": {"type": "refusal", "refusal": ""}}),
            json!({"type": "response.refusal.delta", "item_id": "msg_2", "output_index": 2, "content_index": 0, "delta": "No"}),
        ]);
        let events = numbered(events);
        let mut checker = ResponseChecker::new();
        for event in &events {
            checker.check(None, &event.to_string(), 0).unwrap();
        }
        let output = checker.response().unwrap()["output"].clone();
        assert_eq!(
            output[0]["summary"],
            json!([{"type": "summary_text", "text": "Thinking"}])
        );
        assert_eq!(output[0]["content"], json!([{"type": "reasoning_text", "text": "raw"}]));
        assert_eq!(output[1]["arguments"], "{\"a\":1}");
        assert_eq!(output[2]["content"], json!([{"type": "refusal", "refusal": "No"}]));
        let done = json!({"type": "response.refusal.done", "item_id": "msg_2", "output_index": 2, "content_index": 0,
                          "refusal": "Nope", "sequence_number": events.len()});
        let error = checker.check(None, &done.to_string(), 0).unwrap_err();
        assert!(error.to_string().contains("\"Nope\""), "{error}");
        assert!(error.to_string().contains("\"No\""), "{error}");
    }

    #[test]
    fn every_fixture_parses_and_ends_with_its_terminal_response() {
        for (name, bytes) in fixtures() {
            let (events, response, result) = run(&bytes);
            result.unwrap_or_else(|error| panic!("{name}: {error}"));
            let last: Value = serde_json::from_str(events.last().unwrap()).unwrap();
            let response: Value = serde_json::from_str(&response.unwrap()).unwrap();
            assert_eq!(response, last["response"], "{name}");
            assert!(is_terminal(last["type"].as_str().unwrap()), "{name}");
        }
    }

    #[test]
    fn fixture_response_before_the_terminal_event_matches_the_closed_items() {
        // Before the terminal event, the built `output` already equals the terminal response's,
        // except that OpenAI re-encrypts `encrypted_content` for the final response and OpenRouter
        // gives its reasoning item a new `id` there.
        fn scrub(value: &mut Value) {
            match value {
                Value::Object(map) => {
                    map.remove("encrypted_content");
                    map.remove("id");
                    map.values_mut().for_each(scrub);
                }
                Value::Array(items) => items.iter_mut().for_each(scrub),
                _ => {}
            }
        }
        for (name, bytes) in fixtures() {
            let (events, _, _) = run(&bytes);
            let mut checker = ResponseChecker::new();
            for event in &events[..events.len() - 1] {
                checker.check(None, event, 0).unwrap();
            }
            let mut last: Value = serde_json::from_str(events.last().unwrap()).unwrap();
            let mut built = checker.response().unwrap();
            scrub(&mut last);
            scrub(&mut built);
            assert_eq!(built["output"], last["response"]["output"], "{name}");
        }
    }

    #[test]
    fn sequence_gap_and_duplicate() {
        let mut events = text_events();
        events[4]["sequence_number"] = json!(5);
        let error = error_of(&events);
        assert_eq!(*error.kind, StreamErrorKind::SequenceNumber { expected: 4, got: 5 });
        assert_eq!(error.event_index, Some(4));
        assert!(error.to_string().contains("gap"), "{error}");
        assert!(error.to_string().contains("event #4"), "{error}");

        let mut events = text_events();
        events[4]["sequence_number"] = json!(3);
        let error = error_of(&events);
        assert!(error.to_string().contains("duplicate"), "{error}");

        let mut events = text_events();
        events[3].as_object_mut().unwrap().remove("sequence_number");
        assert_eq!(*error_of(&events).kind, StreamErrorKind::MissingSequenceNumber);
    }

    #[test]
    fn sequence_may_start_anywhere() {
        let mut events = text_events();
        for (n, event) in events.iter_mut().enumerate() {
            event["sequence_number"] = json!(n + 100);
        }
        run(&stream(&events)).2.unwrap();
    }

    #[test]
    fn first_event_must_be_created() {
        let events = text_events();
        let error = error_of(&events[1..]);
        assert!(matches!(*error.kind, StreamErrorKind::FirstEvent { .. }), "{error}");
        let queued = numbered(vec![
            json!({"type": "response.queued", "response": response("queued", &json!([]))}),
        ]);
        let mut checker = ResponseChecker::new();
        checker.check(None, &queued[0].to_string(), 0).unwrap();
    }

    #[test]
    fn done_sentinel_only_at_the_end() {
        let mut bytes = stream(&text_events());
        bytes.extend_from_slice(b"data: [DONE]\n\n");
        run(&bytes).2.unwrap();

        let events = text_events();
        let mut bytes = stream(&events[..3]);
        bytes.extend_from_slice(b"data: [DONE]\n\n");
        assert_eq!(*run(&bytes).2.unwrap_err().kind, StreamErrorKind::DoneBeforeTerminal);

        let mut bytes = stream(&events);
        bytes.extend_from_slice(b"data: [DONE]\n\ndata: [DONE]\n\n");
        assert!(matches!(
            *run(&bytes).2.unwrap_err().kind,
            StreamErrorKind::AfterDone { .. }
        ));

        let mut bytes = stream(&events);
        bytes.extend_from_slice(b"data: [DONE]\n\n");
        bytes.extend(stream(&[json!({"type": "ferroute:late", "sequence_number": 10})]));
        assert!(matches!(
            *run(&bytes).2.unwrap_err().kind,
            StreamErrorKind::AfterDone { .. }
        ));
    }

    #[test]
    fn terminal_event_is_last() {
        let mut events = text_events();
        let mut second = events[9].clone();
        second["sequence_number"] = json!(10);
        events.push(second);
        let error = error_of(&events);
        assert!(
            error.to_string().contains("second terminal event response.completed"),
            "{error}"
        );

        let mut events = text_events();
        events.push(json!({"type": "ferroute:after", "sequence_number": 10}));
        let error = error_of(&events);
        assert!(
            error
                .to_string()
                .contains("ferroute:after after the terminal event response.completed"),
            "{error}"
        );
    }

    #[test]
    fn output_items_in_order() {
        let mut events = text_events();
        events[2]["output_index"] = json!(1);
        assert_eq!(
            *error_of(&events).kind,
            StreamErrorKind::OutputIndex { expected: 0, got: 1 }
        );
    }

    #[test]
    fn deltas_for_unknown_items() {
        let mut events = text_events();
        events[4]["output_index"] = json!(3);
        let error = error_of(&events);
        assert!(error.to_string().contains("unknown item (output_index 3"), "{error}");

        let mut events = text_events();
        events[4]["item_id"] = json!("msg_other");
        let error = error_of(&events);
        assert!(matches!(*error.kind, StreamErrorKind::ItemIdMismatch { .. }), "{error}");

        let mut events = text_events();
        events[4].as_object_mut().unwrap().remove("output_index");
        run(&stream(&events)).2.unwrap(); // item_id alone is enough
        events[4]["item_id"] = json!("msg_other");
        let error = error_of(&events);
        assert!(
            error.to_string().contains("unknown item (item_id \"msg_other\")"),
            "{error}"
        );
    }

    #[test]
    fn delta_outside_an_open_part() {
        let mut events = text_events();
        events.remove(3); // no content_part.added
        let events = numbered(events);
        let error = error_of(&events);
        assert!(error.to_string().starts_with("delta outside an open part"), "{error}");

        let mut events = text_events();
        events[4]["content_index"] = json!(1);
        let error = error_of(&events);
        assert!(error.to_string().starts_with("delta outside an open part"), "{error}");

        // A delta after the part's text was declared done.
        let mut events = text_events();
        let late = events[4].clone();
        events.insert(7, late);
        let error = error_of(&numbered(events));
        assert!(error.to_string().starts_with("delta outside an open part"), "{error}");
    }

    #[test]
    fn event_for_a_closed_item() {
        let mut events = text_events();
        let late = events[4].clone();
        events.insert(9, late);
        let error = error_of(&numbered(events));
        assert!(
            matches!(*error.kind, StreamErrorKind::ItemClosed { output_index: 0, .. }),
            "{error}"
        );
    }

    #[test]
    fn done_text_must_match_the_deltas() {
        let mut events = text_events();
        events[6]["text"] = json!("Hello there");
        let error = error_of(&events);
        assert!(matches!(*error.kind, StreamErrorKind::TextMismatch { .. }), "{error}");
        assert!(error.to_string().contains("response.output_text.done"), "{error}");

        let mut events = text_events();
        events[7]["part"]["text"] = json!("Hello");
        let error = error_of(&events);
        assert!(error.to_string().contains("response.content_part.done"), "{error}");

        let mut events = text_events();
        let duplicate = events[6].clone();
        events.insert(7, duplicate);
        let error = error_of(&numbered(events));
        assert!(matches!(*error.kind, StreamErrorKind::DuplicateDone { .. }), "{error}");
    }

    #[test]
    fn done_without_deltas_sets_the_text() {
        let mut events = text_events();
        events.remove(5);
        events.remove(4);
        run(&stream(&numbered(events))).2.unwrap();
    }

    fn function_call_events(deltas: &[&str], done: Option<&str>) -> Vec<Value> {
        let fc = json!({"id": "fc_1", "type": "function_call", "call_id": "c", "name": "f", "arguments": "", "status": "in_progress"});
        let full: String = done.map_or_else(|| deltas.concat(), str::to_owned);
        let mut closed = fc.clone();
        closed["arguments"] = json!(full);
        closed["status"] = json!("completed");
        let mut events = head();
        events.push(json!({"type": "response.output_item.added", "output_index": 0, "item": fc}));
        for delta in deltas {
            events.push(json!({"type": "response.function_call_arguments.delta", "item_id": "fc_1", "output_index": 0, "delta": delta}));
        }
        if let Some(done) = done {
            events.push(json!({"type": "response.function_call_arguments.done", "item_id": "fc_1", "output_index": 0, "arguments": done}));
        }
        events.push(json!({"type": "response.output_item.done", "output_index": 0, "item": closed}));
        events.push(json!({"type": "response.completed", "response": response("completed", &json!([closed]))}));
        numbered(events)
    }

    #[test]
    fn function_call_arguments() {
        run(&stream(&function_call_events(&["{\"a\"", ":1}"], Some("{\"a\":1}"))))
            .2
            .unwrap();
        run(&stream(&function_call_events(&[], Some("{\"a\":1}")))).2.unwrap(); // LM Studio
        run(&stream(&function_call_events(&["{}"], None))).2.unwrap();
        let error = error_of(&function_call_events(&["{\"a\"", ":1}"], Some("{\"a\":2}")));
        assert!(matches!(*error.kind, StreamErrorKind::TextMismatch { .. }), "{error}");
    }

    #[test]
    fn items_and_parts_must_be_closed() {
        let mut events = text_events();
        events.remove(7); // content_part.done
        let error = error_of(&numbered(events));
        assert!(matches!(*error.kind, StreamErrorKind::PartStillOpen { .. }), "{error}");

        let mut events = text_events();
        events.remove(8); // output_item.done
        let error = error_of(&numbered(events));
        assert!(matches!(*error.kind, StreamErrorKind::ItemStillOpen { .. }), "{error}");

        let mut events = text_events();
        events[9]["response"]["output"] = json!([]);
        let error = error_of(&events);
        assert!(
            matches!(
                *error.kind,
                StreamErrorKind::OutputCount {
                    streamed: 1,
                    got: 0,
                    ..
                }
            ),
            "{error}"
        );
    }

    #[test]
    fn error_before_created_is_passed_on() {
        let events = numbered(vec![
            json!({"type": "error", "error": {"type": "server_error", "message": "m"}}),
        ]);
        let (got, response, result) = run(&stream(&events));
        assert_eq!(got.len(), 1, "the error event reaches the caller");
        assert_eq!(response, None);
        assert_eq!(
            *result.unwrap_err().kind,
            StreamErrorKind::MissingTerminal { events: 1 }
        );
    }

    #[test]
    fn error_then_failed() {
        let mut events = head();
        events.push(
            json!({"type": "error", "error": {"type": "server_error", "code": "x", "message": "m", "param": null}}),
        );
        events.push(json!({"type": "response.failed", "response": response("failed", &json!([]))}));
        run(&stream(&numbered(events))).2.unwrap();
    }

    #[test]
    fn unknown_and_extension_events_pass_with_a_sequence_number() {
        let mut events = text_events();
        events.insert(2, json!({"type": "ferroute:progress", "delta": {"not": "a string"}}));
        events.insert(
            3,
            json!({"type": "response.web_search_call.searching", "output_index": 7, "item_id": "ws"}),
        );
        let events = numbered(events);
        let (got, _, result) = run(&stream(&events));
        result.unwrap();
        assert_eq!(got.len(), events.len());

        let mut events = text_events();
        events.insert(2, json!({"type": "ferroute:progress", "sequence_number": 2}));
        let error = error_of(&events);
        assert_eq!(*error.kind, StreamErrorKind::SequenceNumber { expected: 3, got: 2 });
    }

    #[test]
    fn known_events_with_malformed_fields() {
        let mut events = text_events();
        events[4]["delta"] = json!(5);
        let error = error_of(&events);
        assert!(
            matches!(*error.kind, StreamErrorKind::BadField { field: "delta", .. }),
            "{error}"
        );
        assert!(
            error
                .to_string()
                .contains("response.output_text.delta has a missing or malformed \"delta\""),
            "{error}"
        );

        let mut events = text_events();
        events[4].as_object_mut().unwrap().remove("delta");
        let error = error_of(&events);
        assert!(
            matches!(*error.kind, StreamErrorKind::BadField { field: "delta", .. }),
            "{error}"
        );

        let mut events = text_events();
        events[2]["item"] = json!("not an object");
        assert!(matches!(
            *error_of(&events).kind,
            StreamErrorKind::BadField { field: "item", .. }
        ));
    }

    #[test]
    fn malformed_json_and_types() {
        let events = text_events();
        let mut bytes = stream(&events[..2]);
        bytes.extend_from_slice(b"data: {\"type\": \"response.output_item.added\",\n\n");
        assert!(matches!(
            *run(&bytes).2.unwrap_err().kind,
            StreamErrorKind::InvalidJson(_)
        ));
        let mut bytes = stream(&events[..2]);
        bytes.extend_from_slice(b"data: [1, 2]\n\n");
        assert!(matches!(
            *run(&bytes).2.unwrap_err().kind,
            StreamErrorKind::InvalidJson(_)
        ));
        let mut bytes = stream(&events[..2]);
        bytes.extend_from_slice(b"data: {\"sequence_number\": 2}\n\n");
        assert_eq!(*run(&bytes).2.unwrap_err().kind, StreamErrorKind::MissingType);
    }

    #[test]
    fn event_name_must_match_type() {
        let events = text_events();
        let mut bytes = stream(&events[..2]);
        bytes.extend_from_slice(format!("event: response.completed\ndata: {}\n\n", events[2]).as_bytes());
        assert!(matches!(
            *run(&bytes).2.unwrap_err().kind,
            StreamErrorKind::EventNameMismatch { .. }
        ));
    }
}
