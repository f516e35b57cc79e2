//! OpenAI Responses (`POST /v1/responses` of OpenAI and of servers that speak it: LM Studio, vLLM,
//! OpenRouter, DeepSeek) → Open Responses, under the router's own response.
//!
//! The upstream already speaks the events; what it sends is rebuilt through the router's writer
//! rather than passed on, so that sequence numbers, ids, `model` and the response's fields are the
//! router's and the grammar holds whatever the upstream did (SPEC.md: "re-number `sequence_number`,
//! rename legacy `response.reasoning_text.*` to `response.reasoning.*`, fill missing response fields,
//! rewrite ids and `model`"). Mapping: `message` items → `output_text` / `refusal` deltas; `reasoning`
//! items → raw reasoning (`reasoning_text.delta` or `reasoning.delta`), summary parts
//! (`reasoning_summary_part.added`, `reasoning_summary_text.delta`) and `encrypted_content` (from the
//! item's `output_item.done`); `function_call` items → the call, its arguments from the deltas, or from
//! `function_call_arguments.done` / `output_item.done` when no delta came (LM Studio); the terminal event
//! → status, `incomplete_details` and usage; an `error` event → the failure. Items of other types
//! (hosted tools the upstream ran) are skipped. An item the upstream leaves open while the next one
//! streams (OpenRouter's reasoning) is closed when the next one starts.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;

use crate::events::writer::{ErrorInfo, Outcome, ResponseSettings, ResponseWriter, TextKind, Usage};
use crate::sse::SseEventRef;

use super::logprobs::write_logprobs;
use super::{leading_type, stream_error, upstream_error, ConvertError, Dialect, Translator};

/// An OpenAI Responses stream (or body) → Open Responses events.
pub type ResponsesTranslator = Translator<State>;

/// What an upstream output item became.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Message,
    Reasoning,
    /// Its `output_index` here, and whether argument text has come.
    FunctionCall {
        output_index: usize,
        has_arguments: bool,
    },
    Skipped,
}

/// The dialect's state: what its events have opened so far, around the response's writer.
pub struct State {
    writer: ResponseWriter,
    /// By the upstream's `output_index`.
    items: Vec<(u64, Kind)>,
    /// The upstream item whose counterpart is the writer's open item.
    current: Option<u64>,
}

/// How a reasoning item's `encrypted_content` from this upstream is kept: `UPSTREAM_ITEM` + the upstream's item
/// id + `:` + its blob. The upstream may hold its blob to the item id it gave (the router's items have ids of
/// their own), so the provider sends both back as they came (`providers/responses.py`).
pub const UPSTREAM_ITEM: &str = "upstream-item:";

fn wrap_encrypted(id: &str, encrypted: &str) -> String {
    if id.is_empty() {
        return encrypted.to_owned();
    }
    format!("{UPSTREAM_ITEM}{id}:{encrypted}")
}

const DELTA_OUTPUT_TEXT: &str = "response.output_text.delta";
const DELTA_REFUSAL: &str = "response.refusal.delta";
const DELTA_REASONING_TEXT: &str = "response.reasoning_text.delta";
const DELTA_REASONING: &str = "response.reasoning.delta";
const DELTA_SUMMARY_TEXT: &str = "response.reasoning_summary_text.delta";
const DELTA_ARGUMENTS: &str = "response.function_call_arguments.delta";

/// Whether `ty` is one of the delta events: nearly every event of a stream.
fn is_delta(ty: &str) -> bool {
    matches!(
        ty,
        DELTA_OUTPUT_TEXT
            | DELTA_REFUSAL
            | DELTA_REASONING_TEXT
            | DELTA_REASONING
            | DELTA_SUMMARY_TEXT
            | DELTA_ARGUMENTS
    )
}

/// A delta event as a plain struct, its other members checked and skipped: ~3× less work than a `Value` of every
/// member (`bench/bench_dialects.py`). Read so where its `type`, `output_index` and `delta` are all there and of
/// their types (and none twice); any other event, or any doubt, is read as a `Value`, which says what it means.
#[derive(Deserialize)]
struct DeltaEvent<'a> {
    #[serde(borrow, default, rename = "type")]
    kind: Option<Cow<'a, str>>,
    #[serde(default)]
    output_index: Option<u64>,
    #[serde(borrow, default)]
    delta: Option<Cow<'a, str>>,
    /// An `output_text.delta`'s tokens (asked for with `message.output_text.logprobs`).
    #[serde(borrow, default)]
    logprobs: Option<&'a RawValue>,
}

fn str_of<'a>(value: &'a Value, key: &str) -> &'a str {
    value.get(key).and_then(Value::as_str).unwrap_or("")
}

fn usage_of(response: &Value) -> Option<Usage> {
    let usage = response.get("usage").filter(|u| u.is_object())?;
    let count = |v: Option<&Value>| v.and_then(Value::as_u64).unwrap_or(0);
    let input_tokens = count(usage.get("input_tokens"));
    let output_tokens = count(usage.get("output_tokens"));
    Some(Usage {
        input_tokens,
        output_tokens,
        total_tokens: usage
            .get("total_tokens")
            .and_then(Value::as_u64)
            .unwrap_or(input_tokens.saturating_add(output_tokens)),
        cached_tokens: count(usage.pointer("/input_tokens_details/cached_tokens")),
        reasoning_tokens: count(usage.pointer("/output_tokens_details/reasoning_tokens")),
    })
}

fn error_of(error: Option<&Value>) -> ErrorInfo {
    let error = error.filter(|e| e.is_object());
    let message = error
        .and_then(|e| e.get("message"))
        .and_then(Value::as_str)
        .unwrap_or("the upstream reported an error");
    let code = error.and_then(|e| e.get("code")).and_then(Value::as_str);
    upstream_error(message, None, code)
}

/// A whole non-streaming response object → the router's response object.
pub fn convert_response(
    body: &[u8],
    settings: ResponseSettings,
    id: Option<String>,
    created_at: Option<u64>,
) -> Result<Vec<u8>, ConvertError> {
    let mut state = State::new(ResponseWriter::silent(settings, id, created_at));
    state.read_whole(body)?;
    Ok(state.writer.response_json())
}

impl State {
    /// A whole response object, as the stream that says the same would have driven the writer.
    fn read_whole(&mut self, body: &[u8]) -> Result<(), ConvertError> {
        let state = self;
        let response: Value = serde_json::from_slice(body).map_err(|e| ConvertError {
            message: format!("the upstream body is not a response object: {e}"),
        })?;
        if response.get("object").and_then(Value::as_str) != Some("response") {
            if let Some(error) = response.get("error").filter(|e| e.is_object()) {
                state.fail(error_of(Some(error)));
                return Ok(());
            }
            return Err(ConvertError {
                message: "the upstream body is not a response object (object is not \"response\")".to_owned(),
            });
        }
        state.writer.start();
        for (index, item) in response
            .get("output")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            let index = index as u64;
            state.item_added(index, item);
            if str_of(item, "type") == "message" {
                for part in item.get("content").and_then(Value::as_array).into_iter().flatten() {
                    match str_of(part, "type") {
                        "output_text" => state.writer.text_delta(TextKind::OutputText, str_of(part, "text")),
                        "refusal" => state.writer.text_delta(TextKind::Refusal, str_of(part, "refusal")),
                        _ => {}
                    }
                }
            } else if str_of(item, "type") == "reasoning" {
                for part in item.get("summary").and_then(Value::as_array).into_iter().flatten() {
                    state.writer.summary_delta(true, str_of(part, "text"));
                }
                for part in item.get("content").and_then(Value::as_array).into_iter().flatten() {
                    state.writer.text_delta(TextKind::Reasoning, str_of(part, "text"));
                }
            }
            state.item_done(index, item);
        }
        state.terminal(&response);
        Ok(())
    }
}

impl Dialect for State {
    fn new(writer: ResponseWriter) -> Self {
        State::new(writer)
    }

    fn into_writer(self) -> ResponseWriter {
        self.writer
    }

    fn writer(&self) -> &ResponseWriter {
        &self.writer
    }

    fn writer_mut(&mut self) -> &mut ResponseWriter {
        &mut self.writer
    }

    fn on_event(&mut self, event: &SseEventRef<'_>) {
        self.read_event(event);
    }

    fn on_whole(&mut self, body: &[u8]) -> Result<(), ConvertError> {
        self.read_whole(body)
    }

    fn on_end(&mut self) {
        self.fail(stream_error(
            "upstream_stream_truncated",
            "the upstream stream ended before the response was complete (no terminal event)".to_owned(),
        ));
    }
}

impl State {
    fn new(writer: ResponseWriter) -> Self {
        Self {
            writer,
            items: Vec::new(),
            current: None,
        }
    }

    fn kind(&self, index: u64) -> Option<Kind> {
        self.items
            .iter()
            .rev()
            .find(|(i, _)| *i == index)
            .map(|(_, kind)| *kind)
    }

    fn set_kind(&mut self, index: u64, kind: Kind) {
        match self.items.iter_mut().rev().find(|(i, _)| *i == index) {
            Some(slot) => slot.1 = kind,
            None => self.items.push((index, kind)),
        }
    }

    /// The upstream item the event names (`output_index`), if this side has one open for it.
    fn target(&self, event: &Value) -> Option<(u64, Kind)> {
        let index = event.get("output_index").and_then(Value::as_u64)?;
        Some((index, self.kind(index)?))
    }

    fn read_event(&mut self, event: &SseEventRef<'_>) {
        if self.writer.is_finished() {
            return;
        }
        let data = event.data.trim_ascii();
        if data.is_empty() || data == "[DONE]" {
            return;
        }
        if leading_type(data).is_some_and(is_delta) {
            if let Ok(DeltaEvent {
                kind: Some(ty),
                output_index: Some(index),
                delta: Some(delta),
                logprobs,
            }) = serde_json::from_str::<DeltaEvent<'_>>(data)
            {
                self.on_delta(&ty, index, &delta, logprobs.map(RawValue::get));
                return;
            }
        }
        let parsed = match serde_json::from_str::<Value>(data) {
            Ok(value) if value.is_object() => value,
            other => {
                let detail = other
                    .err()
                    .map_or_else(|| "not a JSON object".to_owned(), |e| e.to_string());
                self.fail(stream_error(
                    "upstream_malformed_stream",
                    format!("the upstream sent a malformed event: {detail}"),
                ));
                return;
            }
        };
        let ty = str_of(&parsed, "type");
        let ty = if ty.is_empty() { event.event.unwrap_or("") } else { ty };
        match ty {
            "response.output_item.added" => {
                if let (Some(index), Some(item)) =
                    (parsed.get("output_index").and_then(Value::as_u64), parsed.get("item"))
                {
                    self.item_added(index, item);
                }
            }
            "response.output_item.done" => {
                if let (Some(index), Some(item)) =
                    (parsed.get("output_index").and_then(Value::as_u64), parsed.get("item"))
                {
                    self.item_done(index, item);
                }
            }
            ty if is_delta(ty) => {
                if let Some(index) = parsed.get("output_index").and_then(Value::as_u64) {
                    // (Written again as text only where they are kept: `on_delta` reads them only then.)
                    let logprobs = parsed
                        .get("logprobs")
                        .filter(|_| self.writer.keeps_logprobs())
                        .map(Value::to_string);
                    self.on_delta(ty, index, str_of(&parsed, "delta"), logprobs.as_deref());
                }
            }
            "response.reasoning_summary_part.added" => {
                if let Some((index, Kind::Reasoning)) = self.target(&parsed) {
                    self.resume(index);
                    self.writer.summary_delta(true, "");
                }
            }
            "response.function_call_arguments.done" => {
                if let Some((
                    index,
                    Kind::FunctionCall {
                        output_index,
                        has_arguments: false,
                    },
                )) = self.target(&parsed)
                {
                    self.arguments(index, output_index, false, str_of(&parsed, "arguments"));
                }
            }
            "response.completed" | "response.incomplete" | "response.failed" => {
                if let Some(response) = parsed.get("response") {
                    self.terminal(response);
                }
            }
            "error" => {
                let error = parsed.get("error").filter(|e| e.is_object()).unwrap_or(&parsed);
                self.fail(error_of(Some(error)));
            }
            // created, in_progress, content_part.*, *.done texts (the writer writes its own), and the rest.
            _ => {}
        }
    }

    /// A delta event (`ty`, one of the `DELTA_*`) for the upstream item at `index`: its text, where the item is of
    /// the kind the event streams.
    fn on_delta(&mut self, ty: &str, index: u64, delta: &str, logprobs: Option<&str>) {
        match (ty, self.kind(index)) {
            (DELTA_OUTPUT_TEXT, Some(Kind::Message)) => {
                self.resume(index);
                match logprobs {
                    Some(raw) if raw != "[]" && self.writer.keeps_logprobs() => self.text_with_logprobs(delta, raw),
                    _ => self.writer.text_delta(TextKind::OutputText, delta),
                }
            }
            (DELTA_REFUSAL, Some(Kind::Message)) => {
                self.resume(index);
                self.writer.text_delta(TextKind::Refusal, delta);
            }
            (DELTA_REASONING_TEXT | DELTA_REASONING, Some(Kind::Reasoning)) => {
                self.resume(index);
                self.writer.text_delta(TextKind::Reasoning, delta);
            }
            (DELTA_SUMMARY_TEXT, Some(Kind::Reasoning)) => {
                self.resume(index);
                self.writer.summary_delta(false, delta);
            }
            (
                DELTA_ARGUMENTS,
                Some(Kind::FunctionCall {
                    output_index,
                    has_arguments,
                }),
            ) => self.arguments(index, output_index, has_arguments, delta),
            _ => {}
        }
    }

    /// Output text with its tokens' log probabilities (`raw`, the event's `logprobs`; left out when not of their
    /// shape).
    #[cold]
    fn text_with_logprobs(&mut self, delta: &str, raw: &str) {
        let mut written = Vec::new();
        write_logprobs(raw, &mut written); // (nothing written when they are not tokens)
        self.writer
            .text_delta_with_logprobs(TextKind::OutputText, delta, &written);
    }

    /// Argument text for the upstream's function call at `index` (the writer's item at `output_index`).
    fn arguments(&mut self, index: u64, output_index: usize, has_arguments: bool, text: &str) {
        self.writer.function_call_delta(output_index, text);
        self.set_kind(
            index,
            Kind::FunctionCall {
                output_index,
                has_arguments: has_arguments || !text.is_empty(),
            },
        );
    }

    /// Make this upstream item the one the writer's open item stands for (text for an item closed here, after a
    /// later one started, goes on in a new item of its kind).
    fn resume(&mut self, index: u64) {
        if self.current != Some(index) {
            self.writer.close_open_item();
            self.current = Some(index);
        }
    }

    fn item_added(&mut self, index: u64, item: &Value) {
        let kind = match str_of(item, "type") {
            "message" => {
                self.writer.close_open_item();
                Kind::Message
            }
            "reasoning" => {
                self.writer.open_reasoning();
                Kind::Reasoning
            }
            "function_call" => {
                let output_index = self
                    .writer
                    .open_function_call(str_of(item, "call_id"), str_of(item, "name"));
                let arguments = str_of(item, "arguments");
                self.writer.function_call_delta(output_index, arguments);
                let kind = Kind::FunctionCall {
                    output_index,
                    has_arguments: !arguments.is_empty(),
                };
                if ResponseWriter::is_held_call(output_index) {
                    // No item of the writer's stands for it: the open one (and `current`) stay as they were.
                    self.set_kind(index, kind);
                    return;
                }
                kind
            }
            _ => {
                self.writer.close_open_item();
                self.current = None;
                self.set_kind(index, Kind::Skipped);
                return;
            }
        };
        self.current = Some(index);
        self.set_kind(index, kind);
    }

    fn item_done(&mut self, index: u64, item: &Value) {
        let Some(kind) = self.kind(index) else { return };
        if let Kind::FunctionCall {
            output_index,
            has_arguments,
        } = kind
        {
            if ResponseWriter::is_held_call(output_index) {
                if !has_arguments {
                    self.held_arguments_done(index, output_index, item);
                }
                return; // (it closes nothing: it opened nothing)
            }
        }
        if self.current != Some(index) {
            return; // (closed here already, when a later item started)
        }
        match kind {
            Kind::Reasoning => {
                let encrypted = str_of(item, "encrypted_content");
                if !encrypted.is_empty() {
                    self.writer
                        .reasoning_encrypted_content(&wrap_encrypted(str_of(item, "id"), encrypted));
                }
            }
            Kind::FunctionCall {
                output_index,
                has_arguments: false,
            } => {
                let arguments = str_of(item, "arguments");
                self.writer
                    .function_call_delta(output_index, if arguments.is_empty() { "{}" } else { arguments });
            }
            Kind::Message | Kind::FunctionCall { .. } | Kind::Skipped => {}
        }
        self.writer.close_open_item();
        self.current = None;
    }

    /// A held call's arguments from its `output_item.done`, where no argument text came before (`{}` if none).
    fn held_arguments_done(&mut self, index: u64, output_index: usize, item: &Value) {
        let arguments = str_of(item, "arguments");
        self.writer
            .function_call_delta(output_index, if arguments.is_empty() { "{}" } else { arguments });
        self.set_kind(
            index,
            Kind::FunctionCall {
                output_index,
                has_arguments: true,
            },
        );
    }

    /// The upstream's terminal response: usage, then the same ending here.
    fn terminal(&mut self, response: &Value) {
        if let Some(usage) = usage_of(response) {
            self.writer.set_usage(usage);
        }
        let outcome = match str_of(response, "status") {
            "incomplete" => {
                let reason = response.pointer("/incomplete_details/reason").and_then(Value::as_str);
                Outcome::Incomplete(reason.unwrap_or("max_output_tokens").to_owned())
            }
            "failed" | "cancelled" => Outcome::Failed(error_of(response.get("error"))),
            _ => Outcome::Completed,
        };
        self.writer.finish(outcome);
    }

    fn fail(&mut self, error: ErrorInfo) {
        self.writer.finish(Outcome::Failed(error));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sse::SseLimits;

    const ID: &str = "resp_0123456789abcdef0123456789abcdef0123456789abcdef";

    fn run(raw: &[u8], size: usize) -> Vec<Value> {
        run_with(ResponseSettings::default(), raw, size)
    }

    fn run_with(settings: ResponseSettings, raw: &[u8], size: usize) -> Vec<Value> {
        let mut t = ResponsesTranslator::new(settings, Some(ID.into()), Some(1), SseLimits::default());
        let mut out = Vec::new();
        for piece in raw.chunks(size.max(1)) {
            out.extend_from_slice(t.feed(piece));
        }
        out.extend_from_slice(t.finish());
        let text = String::from_utf8(out).unwrap();
        assert!(text.ends_with("data: [DONE]\n\n"));
        text.split("\n\n")
            .filter_map(|frame| frame.strip_prefix("event: "))
            .map(|frame| {
                let (ty, data) = frame.split_once("\ndata: ").unwrap();
                let mut event: Value = serde_json::from_str(data).unwrap();
                assert_eq!(event["type"], ty);
                if let Some(r) = event.get_mut("response") {
                    r["completed_at"] = Value::Null;
                }
                event
            })
            .collect()
    }

    fn fixture(name: &str) -> Vec<u8> {
        std::fs::read(format!(
            "{}/../../tests/fixtures/responses/{name}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap()
    }

    const FIXTURES: [&str; 8] = [
        "deepseek-v4-reasoning-text-function-call.sse",
        "lmstudio-glm-reasoning-text-function-call.sse",
        "openai-error-then-response-failed.sse",
        "openai-gpt-4o-parallel-function-calls.sse",
        "openai-gpt-4o-text.sse",
        "openai-gpt-5-reasoning-summary-function-call.sse",
        "openai-gpt-5-reasoning-summary-text.sse",
        "openrouter-gpt-oss-reasoning-text.sse",
    ];

    #[test]
    fn recorded_streams_are_rebuilt_in_any_split() {
        for name in FIXTURES {
            let raw = fixture(name);
            let whole = run(&raw, raw.len());
            for (i, e) in whole.iter().enumerate() {
                assert_eq!(e["sequence_number"], i as u64, "{name}");
            }
            for size in [1, 5, 64] {
                assert_eq!(run(&raw, size), whole, "{name} in {size}-byte reads");
            }
        }
    }

    #[test]
    fn the_delta_fast_path_says_what_the_value_path_says() {
        // Each recorded stream with every event's `type` moved after its other members (no event then takes the
        // fast path) gives the same events.
        for name in FIXTURES {
            let raw = fixture(name);
            let moved = super::super::tests::type_not_first(&raw);
            assert_eq!(run(&moved, usize::MAX), run(&raw, usize::MAX), "{name}");
        }
        // Deltas the fast path leaves to the `Value` (a member of another type, one twice, an index that is no
        // `u64`, no `type` but the SSE event's name): the same as with `type` last.
        let item = r#"{"type":"message","id":"m","role":"assistant","content":[]}"#;
        for members in [
            r#""output_index":0,"delta":5"#,
            r#""output_index":0,"delta":"a","delta":"b""#,
            r#""output_index":-1,"delta":"x""#,
            r#""output_index":0.0,"delta":"x""#,
            r#""output_index":0,"delta":"\u00e9t\u00e9""#,
            r#""output_index":0,"delta":"fine""#,
        ] {
            let stream = |delta: &str| {
                format!(
                    "data: {{\"type\":\"response.output_item.added\",\"output_index\":0,\"item\":{item}}}\n\n\
                     event: response.output_text.delta\ndata: {delta}\n\n\
                     data: {{\"type\":\"response.completed\",\"response\":{{\"status\":\"completed\"}}}}\n\n"
                )
            };
            let first = stream(&format!(r#"{{"type":"response.output_text.delta",{members}}}"#));
            let last = stream(&format!(r#"{{{members},"type":"response.output_text.delta"}}"#));
            let unnamed = stream(&format!("{{{members}}}"));
            let out = run(first.as_bytes(), usize::MAX);
            assert_eq!(out, run(last.as_bytes(), usize::MAX), "{members}");
            assert_eq!(out, run(unnamed.as_bytes(), usize::MAX), "{members}");
        }
    }

    #[test]
    fn output_text_log_probabilities_are_kept() {
        let item = r#"{"type":"message","id":"m","role":"assistant","content":[]}"#;
        let token = r#"{"token":"Hi","logprob":-0.1,"bytes":[72,105],"top_logprobs":[]}"#;
        let stream = format!(
            "data: {{\"type\":\"response.output_item.added\",\"output_index\":0,\"item\":{item}}}\n\n\
             data: {{\"type\":\"response.output_text.delta\",\"output_index\":0,\"delta\":\"Hi\",\"logprobs\":[{token}]}}\n\n\
             data: {{\"type\":\"response.output_text.delta\",\"output_index\":0,\"delta\":\"!\",\"logprobs\":[]}}\n\n\
             data: {{\"output_index\":0,\"delta\":\"?\",\"logprobs\":[{token}],\"type\":\"response.output_text.delta\"}}\n\n\
             data: {{\"type\":\"response.completed\",\"response\":{{\"status\":\"completed\"}}}}\n\n"
        );
        let asked = ResponseSettings::from_request(br#"{"include":["message.output_text.logprobs"]}"#).unwrap();
        let events = run_with(asked, stream.as_bytes(), usize::MAX);
        let deltas: Vec<usize> = events
            .iter()
            .filter(|e| e["type"] == "response.output_text.delta")
            .map(|e| e["logprobs"].as_array().unwrap().len())
            .collect();
        assert_eq!(deltas, [1, 0, 1], "(the last through the `Value` path)");
        let part = &events.last().unwrap()["response"]["output"][0]["content"][0];
        assert_eq!(part["text"], "Hi!?");
        assert_eq!(part["logprobs"].as_array().unwrap().len(), 2);
        assert_eq!(part["logprobs"][0]["token"], "Hi");
        // Not asked for (LM Studio sends them anyway): none.
        let unasked = run(stream.as_bytes(), usize::MAX);
        let part = &unasked.last().unwrap()["response"]["output"][0]["content"][0];
        assert_eq!(part["logprobs"], serde_json::json!([]));
    }

    #[test]
    fn summaries_arguments_without_deltas_and_failures() {
        let last = |name: &str| run(&fixture(name), usize::MAX).pop().unwrap()["response"].clone();
        let r = last("openai-gpt-5-reasoning-summary-text.sse");
        assert_eq!(r["output"][0]["type"], "reasoning");
        assert!(!r["output"][0]["summary"][0]["text"].as_str().unwrap().is_empty());
        assert_eq!(r["output"][1]["type"], "message");
        assert!(
            r["usage"]["output_tokens_details"]["reasoning_tokens"]
                .as_u64()
                .unwrap()
                > 0
        );
        let r = last("lmstudio-glm-reasoning-text-function-call.sse");
        let call = r["output"].as_array().unwrap().last().unwrap().clone();
        assert_eq!(call["type"], "function_call");
        assert!(serde_json::from_str::<Value>(call["arguments"].as_str().unwrap())
            .unwrap()
            .is_object());
        let r = last("openai-error-then-response-failed.sse");
        assert_eq!(r["status"], "failed");
        let r = last("openrouter-gpt-oss-reasoning-text.sse");
        let types: Vec<&str> = r["output"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["type"].as_str().unwrap())
            .collect();
        assert_eq!(types, ["reasoning", "message"]);
        let cut = fixture("openai-gpt-4o-text.sse");
        let r = run(&cut[..cut.len() / 2], usize::MAX).pop().unwrap()["response"].clone();
        assert_eq!(r["error"]["code"], "upstream_stream_truncated");
    }

    #[test]
    fn a_whole_response_converts() {
        let body = br#"{"id":"resp_up","object":"response","status":"incomplete","incomplete_details":{"reason":"max_output_tokens"},
            "output":[{"type":"reasoning","id":"rs_1","summary":[{"type":"summary_text","text":"S"}],"encrypted_content":"E"},
                      {"type":"web_search_call","id":"ws_1","status":"completed"},
                      {"type":"message","id":"m","role":"assistant","content":[{"type":"output_text","text":"Hi","annotations":[]}]},
                      {"type":"function_call","id":"fc","call_id":"call_1","name":"f","arguments":"{\"a\":1}"}],
            "usage":{"input_tokens":3,"output_tokens":4,"total_tokens":7}}"#;
        let r: Value =
            serde_json::from_slice(&convert_response(body, ResponseSettings::default(), None, None).unwrap()).unwrap();
        assert_eq!(r["status"], "incomplete");
        assert_eq!(r["output"][0]["summary"][0]["text"], "S");
        assert_eq!(r["output"][0]["encrypted_content"], "upstream-item:rs_1:E");
        assert_eq!(r["output"][1]["content"][0]["text"], "Hi");
        assert_eq!(r["output"][2]["arguments"], r#"{"a":1}"#);
        assert_eq!(r["usage"]["total_tokens"], 7);
        let failed = br#"{"error":{"message":"bad key","code":"invalid_api_key"}}"#;
        let r: Value =
            serde_json::from_slice(&convert_response(failed, ResponseSettings::default(), None, None).unwrap())
                .unwrap();
        assert_eq!(r["error"]["code"], "invalid_api_key");
        assert!(convert_response(b"[]", ResponseSettings::default(), None, None).is_err());
    }

    #[test]
    fn a_held_function_call_is_reported_not_streamed() {
        for (name, held) in [
            ("openai-gpt-4o-parallel-function-calls.sse", "add"),
            ("openai-gpt-4o-parallel-function-calls.sse", "multiply"),
            ("openai-gpt-5-reasoning-summary-function-call.sse", "weather"),
            // Arguments only in `function_call_arguments.done` / `output_item.done`.
            ("lmstudio-glm-reasoning-text-function-call.sse", "weather"),
            ("deepseek-v4-reasoning-text-function-call.sse", "get_temperature"),
        ] {
            crate::translate::tests::check_held_stream::<State>(&fixture(name), held);
        }
    }

    #[test]
    fn a_held_call_leaves_an_item_the_upstream_left_open_open() {
        // A message the upstream never closes, a held call inside it, more text: one message.
        let raw = b"data: {\"type\":\"response.output_item.added\",\"output_index\":0,\
            \"item\":{\"type\":\"message\",\"id\":\"m\"}}\n\n\
            data: {\"type\":\"response.output_text.delta\",\"output_index\":0,\"delta\":\"a\"}\n\n\
            data: {\"type\":\"response.output_item.added\",\"output_index\":1,\
            \"item\":{\"type\":\"function_call\",\"call_id\":\"c\",\"name\":\"lookup\",\"arguments\":\"\"}}\n\n\
            data: {\"type\":\"response.output_text.delta\",\"output_index\":0,\"delta\":\"b\"}\n\n\
            data: {\"type\":\"response.output_item.done\",\"output_index\":1,\
            \"item\":{\"type\":\"function_call\",\"call_id\":\"c\",\"name\":\"lookup\",\"arguments\":\"\"}}\n\n\
            data: {\"type\":\"response.output_text.delta\",\"output_index\":0,\"delta\":\"c\"}\n\n\
            data: {\"type\":\"response.completed\",\"response\":{\"status\":\"completed\"}}\n\n";
        let mut t = ResponsesTranslator::new(
            ResponseSettings::default(),
            Some(ID.into()),
            Some(1),
            SseLimits::default(),
        );
        t.writer_mut().set_held_names(["lookup"]);
        t.next_turn();
        t.feed(raw);
        t.end_turn();
        let calls: Vec<_> = t
            .turn_function_calls()
            .map(|c| (c.held, c.call_id, c.name, c.arguments))
            .collect();
        assert_eq!(calls, [(true, "c", "lookup", "{}")]);
        let items: Value = serde_json::from_slice(&t.turn_items_json()).unwrap();
        assert_eq!(items.as_array().unwrap().len(), 1);
        assert_eq!(items[0]["content"][0]["text"], "abc");
    }
}
