//! Anthropic Messages (`POST /v1/messages`) → Open Responses.
//!
//! Streaming: upstream bytes go through the SSE decoder; each `data:` payload is one Messages event,
//! read with serde. Mapping (SPEC.md, "Translating upstream dialects"): a `thinking` block and its
//! `thinking_delta`s → a reasoning item with raw `content`, its `signature` (`signature_delta`) → the
//! item's `encrypted_content`; a `redacted_thinking` block → a reasoning item with only
//! `encrypted_content` (its `data`); `text` blocks → a message's `output_text`; a `tool_use` block and
//! its `input_json_delta`s → a `function_call` item; `message_delta.stop_reason` → the terminal status
//! (`max_tokens` and `model_context_window_exceeded` → incomplete `max_output_tokens`, `refusal` →
//! incomplete `content_filter`, the rest → completed); usage from `message_start` and `message_delta`.
//! Blocks the router does not translate (server tools and their results, future kinds) are skipped
//! (the text around one becomes two messages), as are unknown event types (the API says new ones may
//! appear). Text blocks in a row are one message.
//!
//! The stream ends at `message_stop`. Without it, a stream that already gave a `stop_reason` and ended
//! on an event boundary is complete; one without, or cut mid-event, fails. An `event: error` frame
//! fails the response with the provider's message, never its raw body.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::Value;

use crate::events::writer::{ErrorInfo, Outcome, ResponseSettings, ResponseWriter, TextKind, Usage};
use crate::sse::SseEventRef;

use super::{leading_type, stream_error, upstream_error, ConvertError, Dialect, Translator};

/// An Anthropic Messages stream (or body) → Open Responses events.
pub type AnthropicTranslator = Translator<State>;

/// The dialect's state: what its events have opened so far, around the response's writer.
pub struct State {
    writer: ResponseWriter,
    /// The content block being streamed (Messages streams one block at a time).
    block: Option<Block>,
    stop_reason: Option<String>,
    usage: UsageIn,
    /// Whether the upstream reported any usage.
    has_usage: bool,
}

/// What a content block becomes.
enum Block {
    Text,
    Thinking,
    /// A `tool_use` block: its `function_call` item (or held call), and whether any argument text came.
    ToolUse {
        output_index: usize,
        has_arguments: bool,
    },
    /// A block that is not translated (server tools, their results, kinds this router does not know).
    Skipped,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Event<'a> {
    MessageStart {
        #[serde(borrow)]
        message: MessageIn<'a>,
    },
    ContentBlockStart {
        #[serde(borrow)]
        content_block: BlockIn<'a>,
    },
    ContentBlockDelta {
        #[serde(borrow)]
        delta: DeltaIn<'a>,
    },
    ContentBlockStop {},
    MessageDelta {
        #[serde(borrow)]
        delta: MessageDeltaIn<'a>,
        #[serde(default)]
        usage: Option<UsageIn>,
    },
    MessageStop {},
    Ping {},
    Error {
        #[serde(borrow)]
        error: ErrorIn<'a>,
    },
    #[serde(other)]
    Unknown,
}

/// `message_start.message`, or a whole non-streaming body.
#[derive(Deserialize)]
struct MessageIn<'a> {
    #[serde(borrow, default)]
    content: Vec<BlockIn<'a>>,
    #[serde(borrow, default)]
    stop_reason: Option<Cow<'a, str>>,
    #[serde(default)]
    usage: Option<UsageIn>,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum BlockIn<'a> {
    Text {
        #[serde(borrow, default)]
        text: Cow<'a, str>,
    },
    Thinking {
        #[serde(borrow, default)]
        thinking: Cow<'a, str>,
        #[serde(borrow, default)]
        signature: Cow<'a, str>,
    },
    RedactedThinking {
        #[serde(borrow, default)]
        data: Cow<'a, str>,
    },
    ToolUse {
        #[serde(borrow)]
        id: Cow<'a, str>,
        #[serde(borrow)]
        name: Cow<'a, str>,
        /// `{}` when streamed (the arguments come as `input_json_delta`); whole in a body. (A `Value`:
        /// serde cannot hand a `RawValue` through an internally tagged enum.)
        #[serde(default)]
        input: Option<Value>,
    },
    #[serde(other)]
    Other,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum DeltaIn<'a> {
    TextDelta {
        #[serde(borrow)]
        text: Cow<'a, str>,
    },
    ThinkingDelta {
        #[serde(borrow)]
        thinking: Cow<'a, str>,
    },
    SignatureDelta {
        #[serde(borrow)]
        signature: Cow<'a, str>,
    },
    InputJsonDelta {
        #[serde(borrow)]
        partial_json: Cow<'a, str>,
    },
    #[serde(other)]
    Other,
}

/// The hot event, `content_block_delta`, read as a plain struct when it begins with its `type` (as Anthropic writes
/// it): serde reads an internally tagged enum (`Event`, `DeltaIn`) by buffering the whole event first, and the
/// text stream of `bench/bench_dialects.py` took 1.5 times the Chat Completions one so. Read so, an event means
/// what `Event` would make of it, or nothing (`DeltaEvent::delta` is `None`) and `Event` reads it.
#[derive(Deserialize)]
struct DeltaEvent<'a> {
    #[serde(borrow, rename = "type")]
    kind: Cow<'a, str>,
    #[serde(borrow, default)]
    delta: Option<FlatDelta<'a>>,
}

/// `DeltaIn`'s variants' fields side by side.
#[derive(Deserialize)]
struct FlatDelta<'a> {
    #[serde(borrow, default, rename = "type")]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    text: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    thinking: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    signature: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    partial_json: Option<Cow<'a, str>>,
}

impl<'a> DeltaEvent<'a> {
    /// The delta, when this is a `content_block_delta` of a known kind with its field (anything else is
    /// left to `Event`, which says what it is: another event, a delta kind to skip, or an error).
    fn delta(self) -> Option<DeltaIn<'a>> {
        if self.kind != "content_block_delta" {
            return None;
        }
        let FlatDelta {
            kind,
            text,
            thinking,
            signature,
            partial_json,
        } = self.delta?;
        match kind.as_deref()? {
            "text_delta" => text.map(|text| DeltaIn::TextDelta { text }),
            "thinking_delta" => thinking.map(|thinking| DeltaIn::ThinkingDelta { thinking }),
            "signature_delta" => signature.map(|signature| DeltaIn::SignatureDelta { signature }),
            "input_json_delta" => partial_json.map(|partial_json| DeltaIn::InputJsonDelta { partial_json }),
            _ => None,
        }
    }
}

#[derive(Deserialize)]
struct MessageDeltaIn<'a> {
    #[serde(borrow, default)]
    stop_reason: Option<Cow<'a, str>>,
}

/// Usage as Messages reports it: `input_tokens` excludes the cached prompt (read or written).
#[derive(Deserialize, Default, Clone, Copy)]
#[expect(clippy::struct_field_names, reason = "the upstream's field names")]
struct UsageIn {
    #[serde(default)]
    input_tokens: Option<u64>,
    #[serde(default)]
    output_tokens: Option<u64>,
    #[serde(default)]
    cache_read_input_tokens: Option<u64>,
    #[serde(default)]
    cache_creation_input_tokens: Option<u64>,
}

#[derive(Deserialize)]
struct ErrorIn<'a> {
    #[serde(borrow, default, rename = "type")]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    message: Option<Cow<'a, str>>,
}

impl UsageIn {
    /// Later reports (`message_delta`'s, cumulative) override what they carry.
    fn merge(&mut self, later: &UsageIn) {
        let fields = [
            (&mut self.input_tokens, later.input_tokens),
            (&mut self.output_tokens, later.output_tokens),
            (&mut self.cache_read_input_tokens, later.cache_read_input_tokens),
            (&mut self.cache_creation_input_tokens, later.cache_creation_input_tokens),
        ];
        for (kept, new) in fields {
            if new.is_some() {
                *kept = new;
            }
        }
    }

    fn to_usage(self) -> Usage {
        let cached = self.cache_read_input_tokens.unwrap_or(0);
        // Open Responses counts the whole prompt, cached or not. (Saturating: absurd upstream counts.)
        let input_tokens = self
            .input_tokens
            .unwrap_or(0)
            .saturating_add(cached)
            .saturating_add(self.cache_creation_input_tokens.unwrap_or(0));
        let output_tokens = self.output_tokens.unwrap_or(0);
        Usage {
            input_tokens,
            output_tokens,
            total_tokens: input_tokens.saturating_add(output_tokens),
            cached_tokens: cached,
            reasoning_tokens: 0, // (Messages does not report it apart)
        }
    }
}

impl ErrorIn<'_> {
    fn to_error(&self) -> ErrorInfo {
        let message = self.message.as_deref().unwrap_or("the upstream reported an error");
        // (Anthropic's error `type`, e.g. `overloaded_error`, is the code; the kind stays `model_error`.)
        upstream_error(message, None, self.kind.as_deref())
    }
}

/// What a `stop_reason` means for the response.
fn outcome_for(stop_reason: Option<&str>) -> Outcome {
    match stop_reason {
        Some("max_tokens" | "model_context_window_exceeded") => Outcome::Incomplete("max_output_tokens".to_owned()),
        Some("refusal") => Outcome::Incomplete("content_filter".to_owned()),
        // end_turn, tool_use, stop_sequence, pause_turn.
        _ => Outcome::Completed,
    }
}

/// A whole non-streaming Messages body (`{"type":"message","content":[…],…}`) → the response object.
pub fn convert_message(
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
    /// A whole Messages body, as the stream that says the same would have driven the writer.
    fn read_whole(&mut self, body: &[u8]) -> Result<(), ConvertError> {
        #[derive(Deserialize)]
        struct Body<'a> {
            #[serde(borrow, default, rename = "type")]
            kind: Option<Cow<'a, str>>,
            #[serde(borrow, default)]
            error: Option<ErrorIn<'a>>,
        }
        let state = self;
        let head: Body<'_> = serde_json::from_slice(body).map_err(|e| ConvertError {
            message: format!("the upstream body is not a Messages object: {e}"),
        })?;
        if head.kind.as_deref() == Some("error") {
            let error = head.error.as_ref().map_or_else(
                || {
                    stream_error(
                        "upstream_error",
                        "upstream error: the upstream reported an error".to_owned(),
                    )
                },
                ErrorIn::to_error,
            );
            state.fail(error);
            return Ok(());
        }
        if head.kind.as_deref() != Some("message") {
            return Err(ConvertError {
                message: "the upstream body is not a Messages object (type is not \"message\")".to_owned(),
            });
        }
        let message: MessageIn<'_> = serde_json::from_slice(body).map_err(|e| ConvertError {
            message: format!("the upstream body is not a Messages object: {e}"),
        })?;
        state.writer.start();
        for block in &message.content {
            state.open_block(block);
            state.close_block();
        }
        if let Some(usage) = &message.usage {
            state.on_usage(usage);
        }
        state.stop_reason = message.stop_reason.as_deref().map(str::to_owned);
        state.complete();
        Ok(())
    }
}

impl Dialect for State {
    fn new(writer: ResponseWriter) -> Self {
        State::new(writer)
    }

    fn is_keepalive(event: &SseEventRef<'_>) -> bool {
        event.event == Some("ping")
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

    /// Messages events are terse (a text delta's ~130 bytes become a ~260-byte `output_text.delta` frame): the
    /// recorded streams' frames are 1.9–2.7 times their bytes.
    fn output_for(upstream: usize) -> usize {
        upstream.saturating_mul(5) / 2
    }

    fn on_end(&mut self) {
        if self.stop_reason.is_some() {
            self.complete();
        } else {
            self.fail(stream_error(
                "upstream_stream_truncated",
                "the upstream stream ended before the response was complete (no stop_reason, no message_stop)"
                    .to_owned(),
            ));
        }
    }
}

impl State {
    fn new(writer: ResponseWriter) -> Self {
        Self {
            writer,
            block: None,
            stop_reason: None,
            usage: UsageIn::default(),
            has_usage: false,
        }
    }

    fn read_event(&mut self, event: &SseEventRef<'_>) {
        if self.writer.is_finished() {
            return;
        }
        let data = event.data.trim_ascii();
        if data.is_empty() {
            return;
        }
        if leading_type(data) == Some("content_block_delta") {
            if let Some(delta) = serde_json::from_str::<DeltaEvent<'_>>(data)
                .ok()
                .and_then(DeltaEvent::delta)
            {
                self.on_delta(&delta);
                return;
            }
        }
        let parsed = match serde_json::from_str::<Event<'_>>(data) {
            Ok(parsed) => parsed,
            Err(e) => {
                self.fail(stream_error(
                    "upstream_malformed_stream",
                    format!("the upstream sent a malformed event: {e}"),
                ));
                return;
            }
        };
        match parsed {
            Event::MessageStart { message } => {
                if let Some(usage) = &message.usage {
                    self.on_usage(usage);
                }
            }
            Event::ContentBlockStart { content_block } => {
                self.close_block();
                self.open_block(&content_block);
            }
            Event::ContentBlockDelta { delta } => self.on_delta(&delta),
            Event::ContentBlockStop {} => self.close_block(),
            Event::MessageDelta { delta, usage } => {
                if let Some(reason) = delta.stop_reason {
                    self.stop_reason = Some(reason.into_owned());
                }
                if let Some(usage) = &usage {
                    self.on_usage(usage);
                }
            }
            Event::MessageStop {} => self.complete(),
            Event::Error { error } => self.fail(error.to_error()),
            Event::Ping {} | Event::Unknown => {}
        }
    }

    fn on_usage(&mut self, usage: &UsageIn) {
        self.usage.merge(usage);
        self.has_usage = true;
        self.writer.set_usage(self.usage.to_usage());
    }

    /// A block begins: what it becomes, with any content its start (or a whole body) carries.
    fn open_block(&mut self, block: &BlockIn<'_>) {
        self.block = Some(match block {
            BlockIn::Text { text } => {
                self.writer.text_delta(TextKind::OutputText, text);
                Block::Text
            }
            BlockIn::Thinking { thinking, signature } => {
                // Each thinking block is an item of its own (it carries its own signature).
                self.writer.close_open_item();
                self.writer.text_delta(TextKind::Reasoning, thinking);
                if !signature.is_empty() || thinking.is_empty() {
                    self.writer.reasoning_encrypted_content(signature);
                }
                Block::Thinking
            }
            BlockIn::RedactedThinking { data } => {
                self.writer.close_open_item();
                self.writer.reasoning_encrypted_content(data);
                Block::Thinking
            }
            BlockIn::ToolUse { id, name, input } => {
                let output_index = self.writer.open_function_call(id, name);
                // Streamed, `input` is `{}` and the arguments follow; in a whole body it is all of them.
                let whole = input
                    .as_ref()
                    .filter(|input| input.as_object().is_none_or(|o| !o.is_empty()))
                    .map(Value::to_string);
                if let Some(arguments) = &whole {
                    self.writer.function_call_delta(output_index, arguments);
                }
                Block::ToolUse {
                    output_index,
                    has_arguments: whole.is_some(),
                }
            }
            BlockIn::Other => Block::Skipped,
        });
    }

    fn on_delta(&mut self, delta: &DeltaIn<'_>) {
        match (&mut self.block, delta) {
            (Some(Block::Text), DeltaIn::TextDelta { text }) => self.writer.text_delta(TextKind::OutputText, text),
            (Some(Block::Thinking), DeltaIn::ThinkingDelta { thinking }) => {
                self.writer.text_delta(TextKind::Reasoning, thinking);
            }
            (Some(Block::Thinking), DeltaIn::SignatureDelta { signature }) => {
                self.writer.reasoning_encrypted_content(signature);
            }
            (
                Some(Block::ToolUse {
                    output_index,
                    has_arguments,
                }),
                DeltaIn::InputJsonDelta { partial_json },
            ) => {
                *has_arguments |= !partial_json.is_empty();
                self.writer.function_call_delta(*output_index, partial_json);
            }
            // Deltas of skipped blocks, citations, and anything this router does not know.
            _ => {}
        }
    }

    fn close_block(&mut self) {
        match self.block.take() {
            Some(Block::ToolUse {
                output_index,
                has_arguments,
            }) => {
                if !has_arguments {
                    // A call without arguments still carries a JSON object.
                    self.writer.function_call_delta(output_index, "{}");
                }
                // A held call opened no item: what was open before it (text) goes on.
                if !ResponseWriter::is_held_call(output_index) {
                    self.writer.close_open_item();
                }
            }
            // A skipped block (a server tool's call or result) parts the text around it into two messages,
            // as a Responses upstream has them around its hosted tool call.
            Some(Block::Thinking | Block::Skipped) => self.writer.close_open_item(),
            // Text blocks in a row (split by citations) stay one message.
            Some(Block::Text) | None => {}
        }
    }

    fn complete(&mut self) {
        self.close_block();
        self.writer.finish(outcome_for(self.stop_reason.as_deref()));
    }

    fn fail(&mut self, error: ErrorInfo) {
        self.writer.finish(Outcome::Failed(error));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sse::SseLimits;
    use serde_json::Value;

    fn fixture(name: &str) -> Vec<u8> {
        let path = format!("{}/../../tests/fixtures/anthropic/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    const FIXTURES: [&str; 8] = [
        "claude-redacted-thinking.sse",
        "claude-refusal-no-content-blocks.sse",
        "claude-sonnet-4-6-server-tool-then-tool-use.sse",
        "claude-sonnet-4-text-after-tool-result.sse",
        "claude-sonnet-4-text-then-parallel-tool-use.sse",
        "claude-sonnet-4-thinking-text.sse",
        "claude-sonnet-4-thinking-tool-use.sse",
        "handwritten-midstream-overloaded-error.sse",
    ];

    /// A response id of the router's shape: its items' ids are made from it, so two runs compare.
    const ID: &str = "resp_0123456789abcdef0123456789abcdef0123456789abcdef";

    fn translator() -> AnthropicTranslator {
        AnthropicTranslator::new(
            ResponseSettings::default(),
            Some(ID.into()),
            Some(1),
            SseLimits::default(),
        )
    }

    fn run(chunks: &[&[u8]]) -> Vec<u8> {
        let mut t = translator();
        let mut out = Vec::new();
        for chunk in chunks {
            out.extend_from_slice(t.feed(chunk));
        }
        out.extend_from_slice(t.finish());
        out
    }

    fn events(out: &[u8]) -> Vec<Value> {
        let text = std::str::from_utf8(out).unwrap();
        assert!(text.ends_with("data: [DONE]\n\n"), "no [DONE] at the end");
        text.split("\n\n")
            .filter_map(|frame| frame.strip_prefix("event: "))
            .map(|frame| {
                let (ty, data) = frame.split_once("\ndata: ").unwrap();
                let event: Value = serde_json::from_str(data).unwrap();
                assert_eq!(event["type"], ty);
                event
            })
            .collect()
    }

    fn response(name: &str) -> Value {
        events(&run(&[&fixture(name)])).pop().unwrap()["response"].clone()
    }

    #[test]
    fn recorded_streams_keep_the_grammar_basics_in_any_split() {
        for name in FIXTURES {
            let raw = fixture(name);
            let whole = run(&[&raw]);
            let evs = events(&whole);
            for (i, e) in evs.iter().enumerate() {
                assert_eq!(e["sequence_number"], i as u64, "{name}");
            }
            assert_eq!(evs[0]["type"], "response.created", "{name}");
            let last = evs.last().unwrap();
            let added = evs.iter().filter(|e| e["type"] == "response.output_item.added").count();
            assert_eq!(added, last["response"]["output"].as_array().unwrap().len(), "{name}");
            // Any split of the input gives the same events.
            for size in [1, 7, 64] {
                let pieces: Vec<&[u8]> = raw.chunks(size).collect();
                let split = events(&run(&pieces));
                assert_eq!(split.len(), evs.len(), "{name} in {size}-byte reads");
                for (a, b) in split.iter().zip(&evs) {
                    let (mut a, mut b) = (a.clone(), b.clone());
                    for e in [&mut a, &mut b] {
                        if let Some(r) = e.get_mut("response") {
                            r["completed_at"] = Value::Null;
                        }
                    }
                    assert_eq!(a, b, "{name} in {size}-byte reads");
                }
            }
        }
    }

    #[test]
    fn the_delta_fast_path_says_what_the_event_enum_says() {
        for name in FIXTURES {
            let raw = fixture(name);
            assert_eq!(
                run(&[&raw]),
                run(&[&super::super::tests::type_not_first(&raw)]),
                "{name}"
            );
        }
        // Deltas the fast path leaves to the enum: an unknown kind (skipped), a missing or null field (an error),
        // spaces between the tokens (read by the fast path all the same).
        let start = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{}}}\n\n\
                     event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\
                     \"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n";
        for (delta, ends) in [
            (r#"{"type":"citations_delta","citation":{}}"#, "response.completed"),
            (r#"{"type":"text_delta"}"#, "upstream_malformed_stream"),
            (r#"{"type":"text_delta","text":null}"#, "upstream_malformed_stream"),
            (
                r#"{"type":"text_delta","text":"a","text":"b"}"#,
                "upstream_malformed_stream",
            ),
            (r#"{ "type" : "text_delta" , "text" : "spaced" }"#, "spaced"),
        ] {
            for event in [
                format!(r#"{{"type":"content_block_delta","index":0,"delta":{delta}}}"#),
                format!(r#"{{ "type" : "content_block_delta", "index": 0, "delta": {delta} }}"#),
                format!(r#"{{"index":0,"delta":{delta},"type":"content_block_delta"}}"#),
            ] {
                let stream = format!(
                    "{start}event: content_block_delta\ndata: {event}\n\n\
                     event: message_delta\ndata: {{\"type\":\"message_delta\",\"delta\":{{\"stop_reason\":\"end_turn\"}}}}\n\n"
                );
                let out = String::from_utf8(run(&[stream.as_bytes()])).unwrap();
                assert!(out.contains(ends), "{event}: {out}");
            }
        }
    }

    #[test]
    fn thinking_becomes_reasoning_with_its_signature() {
        let r = response("claude-sonnet-4-thinking-text.sse");
        assert_eq!(r["status"], "completed");
        let output = r["output"].as_array().unwrap();
        assert_eq!(output[0]["type"], "reasoning");
        let thought = output[0]["content"][0]["text"].as_str().unwrap();
        assert!(!thought.is_empty());
        assert!(!output[0]["encrypted_content"].as_str().unwrap().is_empty());
        assert_eq!(output[1]["type"], "message");
        assert_eq!(output[1]["content"][0]["type"], "output_text");
        assert!(r["usage"]["input_tokens"].as_u64().unwrap() > 0);
        assert!(r["usage"]["output_tokens"].as_u64().unwrap() > 0);
    }

    #[test]
    fn redacted_thinking_blocks_are_items_of_their_own() {
        let r = response("claude-redacted-thinking.sse");
        let output = r["output"].as_array().unwrap();
        let reasoning: Vec<&Value> = output.iter().filter(|i| i["type"] == "reasoning").collect();
        assert_eq!(reasoning.len(), 2);
        for item in reasoning {
            assert!(!item["encrypted_content"].as_str().unwrap().is_empty());
        }
        assert_eq!(output.last().unwrap()["type"], "message");
    }

    #[test]
    fn tool_use_becomes_function_calls_with_json_arguments() {
        let r = response("claude-sonnet-4-text-then-parallel-tool-use.sse");
        assert_eq!(r["status"], "completed");
        let calls: Vec<&Value> = r["output"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|i| i["type"] == "function_call")
            .collect();
        assert_eq!(calls.len(), 2);
        for call in calls {
            assert!(call["call_id"].as_str().unwrap().starts_with("toolu_"));
            assert!(serde_json::from_str::<Value>(call["arguments"].as_str().unwrap())
                .unwrap()
                .is_object());
        }
        // Server tools and their results are skipped; the client tool after them is kept.
        let r = response("claude-sonnet-4-6-server-tool-then-tool-use.sse");
        let types: Vec<&str> = r["output"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["type"].as_str().unwrap())
            .collect();
        assert_eq!(types, ["message", "message", "function_call"]);
    }

    #[test]
    fn stop_reasons_errors_and_truncation() {
        let refusal = response("claude-refusal-no-content-blocks.sse");
        assert_eq!(refusal["status"], "incomplete");
        assert_eq!(refusal["incomplete_details"]["reason"], "content_filter");
        let overloaded = response("handwritten-midstream-overloaded-error.sse");
        assert_eq!(overloaded["status"], "failed");
        assert_eq!(overloaded["error"]["code"], "overloaded_error");
        let raw = fixture("claude-sonnet-4-thinking-text.sse");
        let cut = events(&run(&[&raw[..raw.len() / 2]]));
        assert_eq!(
            cut.last().unwrap()["response"]["error"]["code"],
            "upstream_stream_truncated"
        );
        let max = b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"content\":[]}}\n\n\
            event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n\
            event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hi\"}}\n\n\
            event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"max_tokens\"},\"usage\":{\"output_tokens\":1}}\n\n";
        let evs = events(&run(&[max]));
        let last = evs.last().unwrap();
        assert_eq!(last["response"]["status"], "incomplete");
        assert_eq!(last["response"]["incomplete_details"]["reason"], "max_output_tokens");
        let bad = events(&run(&[
            b"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"delta\":5}\n\n",
        ]));
        assert_eq!(
            bad.last().unwrap()["response"]["error"]["code"],
            "upstream_malformed_stream"
        );
    }

    #[test]
    fn a_whole_body_converts() {
        let body = br#"{"id":"msg_1","type":"message","role":"assistant","model":"claude","content":[
            {"type":"thinking","thinking":"Let me see.","signature":"sig=="},
            {"type":"text","text":"It is sunny."},
            {"type":"tool_use","id":"toolu_1","name":"get_weather","input":{"city":"Paris"}},
            {"type":"tool_use","id":"toolu_2","name":"now","input":{}}],
            "stop_reason":"tool_use","usage":{"input_tokens":10,"cache_read_input_tokens":5,"output_tokens":7}}"#;
        let json = convert_message(body, ResponseSettings::default(), Some("resp_t".into()), Some(1)).unwrap();
        let r: Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(r["status"], "completed");
        let output = r["output"].as_array().unwrap();
        assert_eq!(output[0]["encrypted_content"], "sig==");
        assert_eq!(output[1]["content"][0]["text"], "It is sunny.");
        assert_eq!(output[2]["arguments"], r#"{"city":"Paris"}"#);
        assert_eq!(output[3]["arguments"], "{}");
        assert_eq!(r["usage"]["input_tokens"], 15);
        assert_eq!(r["usage"]["input_tokens_details"]["cached_tokens"], 5);
        let error = br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#;
        let json = convert_message(error, ResponseSettings::default(), None, None).unwrap();
        let r: Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(r["status"], "failed");
        assert_eq!(r["error"]["code"], "overloaded_error");
        assert!(convert_message(b"[1]", ResponseSettings::default(), None, None).is_err());
        assert!(convert_message(br#"{"type":"other"}"#, ResponseSettings::default(), None, None).is_err());
    }

    #[test]
    fn a_held_tool_use_is_reported_not_streamed() {
        for (name, held) in [
            ("claude-sonnet-4-text-then-parallel-tool-use.sse", "add"),
            ("claude-sonnet-4-text-then-parallel-tool-use.sse", "multiply"),
            ("claude-sonnet-4-thinking-tool-use.sse", "weather"),
            ("claude-sonnet-4-6-server-tool-then-tool-use.sse", "get_exchange_rate"),
        ] {
            crate::translate::tests::check_held_stream::<State>(&fixture(name), held);
        }
    }

    #[test]
    fn text_around_a_held_call_without_arguments_is_one_message() {
        let raw = b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"content\":[]}}\n\n\
            event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\
            \"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n\
            event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\
            \"delta\":{\"type\":\"text_delta\",\"text\":\"Let me look.\"}}\n\n\
            event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n\
            event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":1,\
            \"content_block\":{\"type\":\"tool_use\",\"id\":\"toolu_1\",\"name\":\"lookup\",\"input\":{}}}\n\n\
            event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":1,\
            \"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"\"}}\n\n\
            event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":1}\n\n\
            event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":2,\
            \"content_block\":{\"type\":\"text\",\"text\":\" Found it.\"}}\n\n\
            event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":2}\n\n\
            event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\"}}\n\n\
            event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";
        let mut t = translator();
        t.writer_mut().set_held_names(["lookup"]);
        t.next_turn();
        let mut out = t.feed(raw).to_vec();
        out.extend_from_slice(t.end_turn());
        out.extend_from_slice(t.finish());
        let evs = events(&out);
        assert!(evs
            .iter()
            .all(|e| !e["type"].as_str().unwrap().contains("function_call")));
        let output = &evs.last().unwrap()["response"]["output"];
        assert_eq!(output.as_array().unwrap().len(), 1);
        assert_eq!(output[0]["content"][0]["text"], "Let me look. Found it.");
        let calls: Vec<_> = t
            .turn_function_calls()
            .map(|c| (c.held, c.output_index, c.call_id, c.name, c.arguments))
            .collect();
        assert_eq!(
            calls,
            [(true, None, "toolu_1", "lookup", "{}")],
            "`{{}}` as an item would have it"
        );
    }
}
