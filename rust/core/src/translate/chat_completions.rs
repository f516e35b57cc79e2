//! OpenAI Chat Completions (vLLM, Ollama, llama.cpp, OpenRouter, DeepSeek, Groq, …) → Open Responses.
//!
//! Streaming: upstream bytes go through the SSE decoder; each `data:` payload is one
//! `chat.completion.chunk`, read by [`reader::ChunkReader`] (a validating single-pass reader that
//! accepts exactly what the serde structs below accept, without allocating per chunk; strings
//! without escapes are not copied) and turned into writer calls. Mapping (SPEC.md, "Translating upstream dialects"):
//! `delta.reasoning_content` / `delta.reasoning` → a reasoning item, `delta.content` → a message's
//! `output_text`, `delta.refusal` → a `refusal` part, `delta.tool_calls[i]` → one `function_call`
//! item per `index`, `finish_reason` → the terminal status, the `usage` chunk → `usage`.
//!
//! The stream ends at `data: [DONE]`. Without it, a stream that already gave a `finish_reason` and
//! ended on an event boundary is complete (some OpenAI-compatible servers omit `[DONE]`); one that
//! ended before any `finish_reason`, or mid-event, was cut off and fails. An upstream error in the
//! stream (an `event: error` frame, or a chunk with a top-level `error`) fails the response with the
//! provider's message, never its raw body.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::events::ids::new_id;
use crate::events::writer::{ErrorInfo, Outcome, ResponseSettings, ResponseWriter, TextKind, Usage};
use crate::sse::SseEventRef;

use super::logprobs::write_logprobs;
use super::{stream_error, upstream_error, ConvertError, Dialect, Translator};

mod reader;

use reader::ChunkReader;

/// A Chat Completions stream (or body) → Open Responses events.
pub type ChatCompletionsTranslator = Translator<ChatCompletions>;

/// The Chat Completions dialect: the chunk reader and the state its chunks drive.
pub struct ChatCompletions {
    reader: ChunkReader,
    state: State,
}

impl Dialect for ChatCompletions {
    fn new(writer: ResponseWriter) -> Self {
        Self {
            reader: ChunkReader::default(),
            state: State::new(writer),
        }
    }

    fn into_writer(self) -> ResponseWriter {
        self.state.writer
    }

    fn writer(&self) -> &ResponseWriter {
        &self.state.writer
    }

    fn writer_mut(&mut self) -> &mut ResponseWriter {
        &mut self.state.writer
    }

    fn on_event(&mut self, event: &SseEventRef<'_>) {
        self.state.on_event(&mut self.reader, event);
    }

    fn on_whole(&mut self, body: &[u8]) -> Result<(), ConvertError> {
        self.state.read_whole(body)
    }

    fn on_end(&mut self) {
        if self.state.finish_reason.is_some() {
            self.state.complete();
        } else {
            self.state.fail(stream_error(
                "upstream_stream_truncated",
                "the upstream stream ended before the response was complete (no finish_reason, no [DONE])".to_owned(),
            ));
        }
    }
}

struct State {
    writer: ResponseWriter,
    calls: Vec<ToolCall>,
    finish_reason: Option<String>,
}

/// One upstream tool call (`delta.tool_calls[].index`), becoming one `function_call` item.
struct ToolCall {
    /// The upstream `index`, or a synthetic one when the upstream sends none.
    key: u64,
    call_id: String,
    name: String,
    /// Arguments that arrived before the call could be opened (no name yet).
    pending: String,
    /// The item's `output_index` once opened.
    output_index: Option<usize>,
}

/// A chunk (or a whole body) as serde reads it: the reference [`ChunkReader`] is checked against,
/// and the reader of whole bodies.
#[derive(Deserialize)]
struct Chunk<'a> {
    #[serde(borrow, default)]
    choices: Option<Vec<Choice<'a>>>,
    #[serde(default)]
    usage: Option<UsageIn>,
    #[serde(borrow, default)]
    error: Option<UpstreamErrorBody<'a>>,
}

#[derive(Deserialize)]
struct Choice<'a> {
    #[serde(default)]
    index: Option<u64>,
    /// Streams read `delta` with [`ChunkReader`]; the tests compare it with this one.
    #[cfg_attr(not(test), expect(dead_code))]
    #[serde(borrow, default)]
    delta: Option<Delta<'a>>,
    #[serde(borrow, default)]
    message: Option<Delta<'a>>,
    #[serde(borrow, default)]
    finish_reason: Option<Cow<'a, str>>,
    /// `{"content": [token log probabilities], "refusal": …}` when the request asked for them.
    #[serde(borrow, default)]
    logprobs: Option<&'a RawValue>,
}

/// A choice's `logprobs`: its `content` tokens are the output text's (`refusal`'s are not kept).
#[derive(Deserialize)]
struct ChoiceLogprobs<'a> {
    #[serde(borrow, default)]
    content: Option<&'a RawValue>,
}

/// A streamed `delta`, or a whole body's `message` (same fields, tool calls complete).
#[derive(Deserialize)]
struct Delta<'a> {
    #[serde(borrow, default)]
    content: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    reasoning_content: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    reasoning: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    refusal: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    tool_calls: Option<Vec<ToolCallDelta<'a>>>,
}

#[derive(Deserialize)]
struct ToolCallDelta<'a> {
    #[serde(default)]
    index: Option<u64>,
    #[serde(borrow, default)]
    id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    function: Option<FunctionDelta<'a>>,
}

#[derive(Deserialize)]
struct FunctionDelta<'a> {
    #[serde(borrow, default)]
    name: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    arguments: Option<Cow<'a, str>>,
}

#[derive(Deserialize, Default)]
struct UsageIn {
    #[serde(default)]
    prompt_tokens: Option<u64>,
    #[serde(default)]
    completion_tokens: Option<u64>,
    #[serde(default)]
    total_tokens: Option<u64>,
    #[serde(default)]
    prompt_tokens_details: Option<PromptDetails>,
    #[serde(default)]
    completion_tokens_details: Option<CompletionDetails>,
    /// DeepSeek reports cache hits here instead of `prompt_tokens_details`.
    #[serde(default)]
    prompt_cache_hit_tokens: Option<u64>,
}

#[derive(Deserialize, Default)]
struct PromptDetails {
    #[serde(default)]
    cached_tokens: Option<u64>,
}

#[derive(Deserialize, Default)]
struct CompletionDetails {
    #[serde(default)]
    reasoning_tokens: Option<u64>,
}

/// `{"error": {...}}` as providers send it; `code` may be a string or a number.
#[derive(Deserialize)]
#[serde(untagged)]
enum UpstreamErrorBody<'a> {
    Object {
        #[serde(borrow, default)]
        message: Option<Cow<'a, str>>,
        #[serde(borrow, default, rename = "type")]
        kind: Option<Cow<'a, str>>,
        #[serde(default)]
        code: Option<serde_json::Value>,
    },
    Text(#[serde(borrow)] Cow<'a, str>),
    Other(serde::de::IgnoredAny),
}

#[derive(Deserialize)]
struct ErrorFrame<'a> {
    #[serde(borrow)]
    error: UpstreamErrorBody<'a>,
}

impl UsageIn {
    fn to_usage(&self) -> Usage {
        let input_tokens = self.prompt_tokens.unwrap_or(0);
        let output_tokens = self.completion_tokens.unwrap_or(0);
        Usage {
            input_tokens,
            output_tokens,
            // Saturating: absurd counts from an upstream must not overflow (a panic in debug builds).
            total_tokens: self.total_tokens.unwrap_or(input_tokens.saturating_add(output_tokens)),
            cached_tokens: self
                .prompt_tokens_details
                .as_ref()
                .and_then(|d| d.cached_tokens)
                .or(self.prompt_cache_hit_tokens)
                .unwrap_or(0),
            reasoning_tokens: self
                .completion_tokens_details
                .as_ref()
                .and_then(|d| d.reasoning_tokens)
                .unwrap_or(0),
        }
    }
}

impl UpstreamErrorBody<'_> {
    fn to_error(&self) -> ErrorInfo {
        let (message, kind, code) = match self {
            UpstreamErrorBody::Object { message, kind, code } => (
                message.as_deref().unwrap_or("the upstream reported an error"),
                kind.as_deref(),
                code.as_ref().and_then(|c| c.as_str()),
            ),
            UpstreamErrorBody::Text(message) => (message.as_ref(), None, None),
            UpstreamErrorBody::Other(_) => ("the upstream reported an error", None, None),
        };
        upstream_error(message, kind, code)
    }
}

/// The text fields of a `delta` (or `message`).
struct DeltaText<'a> {
    /// `reasoning_content`, else `reasoning`: vLLM sends the same text as both, so only one is taken.
    reasoning: Option<&'a str>,
    content: Option<&'a str>,
    refusal: Option<&'a str>,
    /// The choice's `logprobs` (raw JSON), when it has some.
    logprobs: Option<&'a str>,
}

/// One `tool_calls[]` entry of a `delta` (or `message`), `function` flattened.
struct CallDelta<'a> {
    index: Option<u64>,
    id: Option<&'a str>,
    name: Option<&'a str>,
    arguments: Option<&'a str>,
}

/// The error for a chunk the reader rejected, with serde's description of what is wrong (the
/// reader rejects exactly what serde rejects; this is the cold path, so serde reads it again).
#[cold]
#[inline(never)]
fn malformed_chunk(data: &str) -> ErrorInfo {
    let detail = match serde_json::from_str::<Chunk<'_>>(data) {
        Err(e) => e.to_string(),
        Ok(_) => "not a chat.completion.chunk".to_owned(),
    };
    stream_error(
        "upstream_malformed_stream",
        format!("the upstream sent a malformed chunk: {detail}"),
    )
}

/// What a `finish_reason` means for the response.
fn outcome_for(finish_reason: Option<&str>) -> Outcome {
    match finish_reason {
        Some("length" | "max_tokens") => Outcome::Incomplete("max_output_tokens".to_owned()),
        Some("content_filter") => Outcome::Incomplete("content_filter".to_owned()),
        Some("error") => Outcome::Failed(stream_error(
            "upstream_error",
            "upstream error: the model stopped with finish_reason \"error\"".to_owned(),
        )),
        // stop, tool_calls, function_call, and the eos/end_turn/stop_sequence of some servers.
        _ => Outcome::Completed,
    }
}

/// A whole non-streaming `chat.completion` body → the response object (JSON).
pub fn convert_chat_completion(
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
    /// A whole `chat.completion` body, as the stream that says the same would have driven the writer.
    fn read_whole(&mut self, body: &[u8]) -> Result<(), ConvertError> {
        let state = self;
        let chunk: Chunk<'_> = serde_json::from_slice(body).map_err(|e| ConvertError {
            message: format!("the upstream body is not a chat.completion object: {e}"),
        })?;
        if let Some(error) = &chunk.error {
            state.fail(error.to_error());
            return Ok(());
        }
        let Some(choice) = chunk
            .choices
            .as_ref()
            .and_then(|c| c.iter().find(|c| c.index.unwrap_or(0) == 0))
        else {
            return Err(ConvertError {
                message: "the upstream chat.completion has no choices".to_owned(),
            });
        };
        if let Some(message) = &choice.message {
            let calls = message.tool_calls.iter().flatten().map(|call| {
                let function = call.function.as_ref();
                CallDelta {
                    index: call.index,
                    id: call.id.as_deref(),
                    name: function.and_then(|f| f.name.as_deref()),
                    arguments: function.and_then(|f| f.arguments.as_deref()),
                }
            });
            let text = DeltaText {
                reasoning: message.reasoning_content.as_deref().or(message.reasoning.as_deref()),
                content: message.content.as_deref(),
                refusal: message.refusal.as_deref(),
                logprobs: choice.logprobs.map(RawValue::get),
            };
            state.on_delta(&text, calls);
        }
        if let Some(usage) = &chunk.usage {
            state.writer.set_usage(usage.to_usage());
        }
        state.finish_reason = choice.finish_reason.as_deref().map(str::to_owned);
        state.complete();
        Ok(())
    }
}

impl State {
    fn new(writer: ResponseWriter) -> Self {
        Self {
            writer,
            calls: Vec::new(),
            finish_reason: None,
        }
    }

    fn on_event(&mut self, reader: &mut ChunkReader, event: &SseEventRef<'_>) {
        if self.writer.is_finished() {
            return;
        }
        let data = event.data.trim_ascii();
        if data.is_empty() {
            return;
        }
        if data == "[DONE]" {
            self.complete();
            return;
        }
        if event.event == Some("error") {
            let error = match serde_json::from_str::<ErrorFrame<'_>>(data) {
                Ok(frame) => frame.error.to_error(),
                Err(_) => stream_error(
                    "upstream_error",
                    "upstream error: the stream reported an error".to_owned(),
                ),
            };
            self.fail(error);
            return;
        }
        if reader.read(data).is_err() {
            self.fail(malformed_chunk(data));
            return;
        }
        if let Some(usage) = &reader.usage {
            self.writer.set_usage(usage.to_usage());
        }
        if let Some((start, end)) = reader.error {
            // The reader checked that serde reads it; only the message is left to take.
            let error = serde_json::from_str::<UpstreamErrorBody<'_>>(&data[start..end]).map_or_else(
                |_| {
                    stream_error(
                        "upstream_error",
                        "upstream error: the stream reported an error".to_owned(),
                    )
                },
                |body| body.to_error(),
            );
            self.fail(error);
            return;
        }
        let reader = &*reader;
        // Open Responses has one output; with n > 1 only the first choice is translated.
        for choice in reader.choices.iter().flatten().filter(|c| c.index.unwrap_or(0) == 0) {
            if let Some(delta) = &choice.delta {
                let text = |s: Option<reader::Str>| s.map(|s| reader.str(data, s));
                let calls = delta
                    .tool_calls
                    .map_or(&[][..], |(from, to)| &reader.calls[from as usize..to as usize]);
                let calls = calls.iter().map(|call| CallDelta {
                    index: call.index,
                    id: text(call.id),
                    name: text(call.name),
                    arguments: text(call.arguments),
                });
                let delta_text = DeltaText {
                    reasoning: text(delta.reasoning_content.or(delta.reasoning)),
                    content: text(delta.content),
                    refusal: text(delta.refusal),
                    logprobs: choice.logprobs.map(|(start, end)| &data[start as usize..end as usize]),
                };
                self.on_delta(&delta_text, calls);
            }
            if let Some(reason) = choice.finish_reason {
                let reason = reader.str(data, reason);
                match &mut self.finish_reason {
                    Some(kept) => {
                        kept.clear();
                        kept.push_str(reason);
                    }
                    None => self.finish_reason = Some(reason.to_owned()),
                }
            }
        }
    }

    fn on_delta<'a>(&mut self, delta: &DeltaText<'_>, calls: impl Iterator<Item = CallDelta<'a>>) {
        if let Some(reasoning) = delta.reasoning {
            self.writer.text_delta(TextKind::Reasoning, reasoning);
        }
        if let Some(content) = delta.content {
            match delta.logprobs {
                Some(raw) if self.writer.keeps_logprobs() => self.content_with_logprobs(content, raw),
                _ => self.writer.text_delta(TextKind::OutputText, content),
            }
        }
        if let Some(refusal) = delta.refusal {
            self.writer.text_delta(TextKind::Refusal, refusal);
        }
        for (position, call) in calls.enumerate() {
            self.on_tool_call(position, &call);
            if self.writer.is_finished() {
                return;
            }
        }
    }

    /// Content text with its choice's `logprobs` (`{"content": [tokens]}`): the tokens go with it; logprobs that are
    /// not of that shape are left out (the text is not).
    #[cold]
    fn content_with_logprobs(&mut self, content: &str, raw: &str) {
        let mut written = Vec::new();
        if let Some(tokens) = serde_json::from_str::<ChoiceLogprobs<'_>>(raw)
            .ok()
            .and_then(|l| l.content)
        {
            write_logprobs(tokens.get(), &mut written); // (nothing written when they are not tokens)
        }
        self.writer
            .text_delta_with_logprobs(TextKind::OutputText, content, &written);
    }

    fn on_tool_call(&mut self, position: usize, delta: &CallDelta<'_>) {
        let id = delta.id.filter(|id| !id.is_empty());
        let name = delta.name.unwrap_or("");
        let arguments = delta.arguments.unwrap_or("");
        // Without `index` (some servers), a new id starts a new call; otherwise it continues the last.
        let key = match delta.index {
            Some(index) => index,
            None => match (id, self.calls.last()) {
                (Some(id), Some(last)) if last.call_id != id => last.key + 1,
                (_, Some(last)) => last.key,
                (_, None) => position as u64,
            },
        };
        let slot = if let Some(slot) = self.calls.iter().position(|c| c.key == key) {
            slot
        } else {
            self.calls.push(ToolCall {
                key,
                call_id: id.map_or_else(|| new_id("call"), str::to_owned),
                name: String::new(),
                pending: String::new(),
                output_index: None,
            });
            self.calls.len() - 1
        };
        let call = &mut self.calls[slot];
        match call.output_index {
            None => {
                call.name.push_str(name);
                call.pending.push_str(arguments);
                if !call.name.is_empty() {
                    self.open_call(slot);
                }
            }
            Some(output_index) => {
                if !self.writer.function_call_delta(output_index, arguments) {
                    let message = format!(
                        "the upstream sent arguments for tool call {} after another call had started; \
                         interleaved tool calls are not supported",
                        call.call_id
                    );
                    self.fail(stream_error("upstream_malformed_stream", message));
                }
            }
        }
    }

    fn open_call(&mut self, slot: usize) {
        let call = &mut self.calls[slot];
        let output_index = self.writer.open_function_call(&call.call_id, &call.name);
        call.output_index = Some(output_index);
        let pending = std::mem::take(&mut call.pending);
        self.writer.function_call_delta(output_index, &pending);
    }

    /// The normal end: open calls that never got a name, then the terminal event for the finish reason.
    fn complete(&mut self) {
        for slot in 0..self.calls.len() {
            if self.calls[slot].output_index.is_none() {
                self.open_call(slot);
            }
        }
        self.writer.finish(outcome_for(self.finish_reason.as_deref()));
    }

    fn fail(&mut self, error: ErrorInfo) {
        self.writer.finish(Outcome::Failed(error));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::writer::Status;
    use crate::sse::SseLimits;
    use proptest::prelude::*;
    use serde_json::Value;

    const FIXTURES: [(&str, &[u8]); 6] = [
        (
            "vllm",
            include_bytes!("../../../../tests/fixtures/chat_completions/vllm-qwen3-reasoning-content-usage.sse"),
        ),
        (
            "openrouter",
            include_bytes!("../../../../tests/fixtures/chat_completions/openrouter-claude-reasoning-tool-call.sse"),
        ),
        (
            "parallel",
            include_bytes!("../../../../tests/fixtures/chat_completions/openai-gpt-4o-parallel-tool-calls-usage.sse"),
        ),
        (
            "ollama",
            include_bytes!("../../../../tests/fixtures/chat_completions/ollama-llama3.2-tool-call.sse"),
        ),
        (
            "groq",
            include_bytes!("../../../../tests/fixtures/chat_completions/groq-gpt-oss-reasoning-then-event-error.sse"),
        ),
        (
            "minimax",
            include_bytes!(
                "../../../../tests/fixtures/chat_completions/openrouter-minimax-length-then-error-chunk.sse"
            ),
        ),
    ];

    fn translator() -> ChatCompletionsTranslator {
        ChatCompletionsTranslator::new(
            ResponseSettings::default(),
            Some("resp_t".into()),
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

    /// The events, with random item ids and the completion time replaced so two runs compare.
    fn events(out: &[u8]) -> Vec<Value> {
        let text = std::str::from_utf8(out).unwrap();
        assert!(text.ends_with("data: [DONE]\n\n"), "no [DONE] at the end");
        let mut ids: Vec<String> = Vec::new();
        text.split("\n\n")
            .filter_map(|frame| frame.strip_prefix("event: "))
            .map(|frame| {
                let (ty, data) = frame.split_once("\ndata: ").unwrap();
                let mut data = data.to_owned();
                for prefix in ["msg_", "rs_", "fc_"] {
                    while let Some(at) = data.find(prefix).filter(|&at| data.len() >= at + prefix.len() + 48) {
                        let id = data[at..at + prefix.len() + 48].to_owned();
                        let n = ids.iter().position(|i| *i == id).unwrap_or_else(|| {
                            ids.push(id.clone());
                            ids.len() - 1
                        });
                        data = data.replace(&id, &format!("item{n}"));
                    }
                }
                let mut event: Value = serde_json::from_str(&data).unwrap();
                assert_eq!(event["type"], ty);
                if let Some(r) = event.get_mut("response") {
                    r["completed_at"] = Value::Null;
                }
                event
            })
            .collect()
    }

    #[test]
    fn recorded_streams_keep_the_grammar_basics() {
        for (name, raw) in FIXTURES {
            let evs = events(&run(&[raw]));
            for (i, e) in evs.iter().enumerate() {
                assert_eq!(e["sequence_number"], i as u64, "{name}");
            }
            assert_eq!(evs[0]["type"], "response.created", "{name}");
            let last = evs.last().unwrap();
            let terminal = last["type"].as_str().unwrap();
            assert!(
                ["response.completed", "response.failed", "response.incomplete"].contains(&terminal),
                "{name}"
            );
            let added = evs.iter().filter(|e| e["type"] == "response.output_item.added").count();
            assert_eq!(added, last["response"]["output"].as_array().unwrap().len(), "{name}");
        }
    }

    #[test]
    fn fixture_outcomes() {
        let status = |raw: &[u8]| events(&run(&[raw])).last().unwrap()["response"]["status"].clone();
        assert_eq!(status(FIXTURES[0].1), "completed");
        assert_eq!(status(FIXTURES[2].1), "completed");
        assert_eq!(status(FIXTURES[4].1), "failed");
        assert_eq!(status(FIXTURES[5].1), "failed");
        let ollama = events(&run(&[FIXTURES[3].1]));
        let call = &ollama.last().unwrap()["response"]["output"][0];
        assert_eq!(call["type"], "function_call");
        assert!(serde_json::from_str::<Value>(call["arguments"].as_str().unwrap()).is_ok());
    }

    #[test]
    fn truncation_and_missing_done() {
        let raw = FIXTURES[0].1;
        let cut = events(&run(&[&raw[..raw.len() / 2]]));
        assert_eq!(
            cut.last().unwrap()["response"]["error"]["code"],
            "upstream_stream_truncated"
        );
        let no_done = &raw[..raw.len() - b"data: [DONE]\n\n".len()];
        assert_eq!(events(&run(&[no_done])).last().unwrap()["type"], "response.completed");
    }

    #[test]
    fn oversized_upstream_event_fails_cleanly() {
        let mut t = ChatCompletionsTranslator::new(
            ResponseSettings::default(),
            None,
            None,
            SseLimits {
                max_line_len: 64,
                max_event_size: 64,
            },
        );
        let mut out = t.feed(FIXTURES[0].1).to_vec();
        out.extend_from_slice(t.finish());
        let evs = events(&out);
        assert_eq!(
            evs.last().unwrap()["response"]["error"]["code"],
            "upstream_event_too_large"
        );
        assert_eq!(t.status(), Status::Failed);
    }

    /// The stream of one chunk and a finish, translated; the last event.
    #[test]
    fn log_probabilities_go_with_their_text() {
        let hi = r#"{"token":"Hi","logprob":-0.1,"bytes":[72,105],"top_logprobs":[{"token":"Hi","logprob":-0.1,"bytes":[72,105]},{"token":"Yo","logprob":-2.5,"bytes":[89,111]}]}"#;
        let there = r#"{"token":" there","logprob":-0.5,"bytes":null,"top_logprobs":[]}"#;
        let stream = format!(
            "data: {{\"choices\":[{{\"index\":0,\"delta\":{{\"role\":\"assistant\",\"content\":\"\"}},\"logprobs\":{{\"content\":[]}}}}]}}\n\n\
             data: {{\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"Hi\"}},\"logprobs\":{{\"content\":[{hi}],\"refusal\":null}}}}]}}\n\n\
             data: {{\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\" there\"}},\"logprobs\":{{\"content\":[{there}]}}}}]}}\n\n\
             data: {{\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"!\"}},\"logprobs\":{{\"content\":\"odd\"}}}}]}}\n\n\
             data: {{\"choices\":[{{\"index\":0,\"delta\":{{}},\"finish_reason\":\"stop\",\"logprobs\":null}}]}}\n\ndata: [DONE]\n\n"
        );
        let asked = || ResponseSettings::from_request(br#"{"include":["message.output_text.logprobs"]}"#).unwrap();
        let mut t = ChatCompletionsTranslator::new(asked(), Some("resp_t".into()), Some(1), SseLimits::default());
        let mut out = t.feed(stream.as_bytes()).to_vec();
        out.extend_from_slice(t.finish());
        let evs = events(&out);
        let deltas: Vec<&Value> = evs
            .iter()
            .filter(|e| e["type"] == "response.output_text.delta")
            .collect();
        let count = |e: &Value| e["logprobs"].as_array().unwrap().len();
        assert_eq!(
            deltas.iter().map(|e| count(e)).collect::<Vec<_>>(),
            [1, 1, 0],
            "(a shape not understood: none)"
        );
        assert_eq!(deltas[0]["logprobs"][0]["top_logprobs"][1]["token"], "Yo");
        assert_eq!(deltas[1]["logprobs"][0]["bytes"], serde_json::json!(b" there".to_vec()));
        let done = evs.iter().find(|e| e["type"] == "response.output_text.done").unwrap();
        let last = evs.last().unwrap();
        let part = &last["response"]["output"][0]["content"][0];
        assert_eq!(part["text"], "Hi there!");
        assert_eq!(done["logprobs"], part["logprobs"]);
        let tokens: Vec<&str> = part["logprobs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["token"].as_str().unwrap())
            .collect();
        assert_eq!(tokens, ["Hi", " there"]);
        // A whole body: its message's tokens.
        let body = format!(
            r#"{{"choices":[{{"index":0,"message":{{"role":"assistant","content":"Hi"}},"logprobs":{{"content":[{hi}]}},"finish_reason":"stop"}}]}}"#
        );
        let whole = |settings| -> Value {
            serde_json::from_slice(&convert_chat_completion(body.as_bytes(), settings, None, Some(1)).unwrap()).unwrap()
        };
        assert_eq!(whole(asked())["output"][0]["content"][0]["logprobs"][0]["token"], "Hi");
        // Not asked for (some upstreams send them anyway): none.
        let none = serde_json::json!([]);
        assert_eq!(
            whole(ResponseSettings::default())["output"][0]["content"][0]["logprobs"],
            none
        );
        let unasked = events(&run(&[stream.as_bytes()]));
        assert!(unasked.iter().all(|e| e.get("logprobs").is_none_or(|l| *l == none)));
    }

    fn last_event_for(chunk: &str) -> Value {
        let raw = format!(
            "data: {chunk}\n\ndata: {{\"choices\":[{{\"index\":0,\"delta\":{{}},\"finish_reason\":\"stop\"}}]}}\n\ndata: [DONE]\n\n"
        );
        events(&run(&[raw.as_bytes()])).pop().unwrap()
    }

    #[test]
    fn a_malformed_chunk_fails_with_serdes_description() {
        for chunk in [
            r#"{"choices":[{"delta":{"content":5}}]}"#,
            r#"{"choices":[{"delta":{"content":"\ud800"}}]}"#,
            r#"{"choices":[],"choices":[]}"#,
            r#"{"choices":[{"index":-1}]}"#,
            r#"{"choices":[{"delta":{"content":"a"}}]"#,
            r#"{"choices":[{"delta":{"content":"a"}}]} x"#,
        ] {
            let last = last_event_for(chunk);
            assert_eq!(last["response"]["status"], "failed", "{chunk}");
            let error = &last["response"]["error"];
            assert_eq!(error["code"], "upstream_malformed_stream", "{chunk}");
            let serde_error = serde_json::from_str::<Chunk<'_>>(chunk).err().unwrap().to_string();
            assert_eq!(
                error["message"],
                format!("the upstream sent a malformed chunk: {serde_error}"),
                "{chunk}"
            );
        }
    }

    #[test]
    fn chunks_serde_accepts_are_translated() {
        let text = |last: &Value| last["response"]["output"][0]["content"][0]["text"].clone();
        // Escapes decoded (the bench stream has some); a lone surrogate in a field nobody reads is fine.
        let last = last_event_for(
            r#"{"id":"\udfff","choices":[{"index":0,"delta":{"content":"caf\u00e9 \ud83d\ude00\n\"q\""}}]}"#,
        );
        assert_eq!(last["response"]["status"], "completed");
        assert_eq!(text(&last), "café 😀\n\"q\"");
        // A struct as the array of its fields, as serde's derive reads it.
        let last = last_event_for(r#"[[[0, ["hi"], null, null]]]"#);
        assert_eq!(text(&last), "hi");
        // Choices other than the first are read (and checked) but not translated.
        let last = last_event_for(r#"{"choices":[{"index":1,"delta":{"content":"no"}},{"delta":{"content":"yes"}}]}"#);
        assert_eq!(text(&last), "yes");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn any_split_gives_the_same_events(fixture in 0usize..FIXTURES.len(), cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..40)) {
            let raw = FIXTURES[fixture].1;
            let mut points: Vec<usize> = cuts.iter().map(|c| c.index(raw.len() + 1)).collect();
            points.sort_unstable();
            let mut chunks = Vec::new();
            let mut start = 0;
            for p in points {
                chunks.push(&raw[start..p]);
                start = p;
            }
            chunks.push(&raw[start..]);
            prop_assert_eq!(events(&run(&chunks)), events(&run(&[raw])));
        }
    }

    #[test]
    fn one_byte_at_a_time() {
        for (name, raw) in FIXTURES {
            let bytes: Vec<&[u8]> = raw.chunks(1).collect();
            assert_eq!(events(&run(&bytes)), events(&run(&[raw])), "{name}");
        }
    }

    #[test]
    fn a_held_tool_call_is_reported_not_streamed() {
        let fixture = |name: &str| {
            let path = format!(
                "{}/../../tests/fixtures/chat_completions/{name}",
                env!("CARGO_MANIFEST_DIR")
            );
            std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
        };
        for (name, held) in [
            ("openai-gpt-4o-parallel-tool-calls-usage.sse", "add"),
            ("openai-gpt-4o-parallel-tool-calls-usage.sse", "multiply"),
            ("openai-gpt-4o-parallel-tool-calls-2.sse", "get_weather"),
            ("openrouter-claude-reasoning-tool-call.sse", "weather"),
            ("ollama-llama3.2-tool-call.sse", "get_weather"),
        ] {
            crate::translate::tests::check_held_stream::<ChatCompletions>(&fixture(name), held);
        }
    }

    /// Two tool calls whose arguments interleave: `lookup` at index 0, `get` at index 1.
    const INTERLEAVED: &[u8] = b"data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"On it.\"}}]}\n\n\
        data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"call_l\",\
        \"function\":{\"name\":\"lookup\",\"arguments\":\"{\\\"q\\\"\"}}]}}]}\n\n\
        data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":1,\"id\":\"call_g\",\
        \"function\":{\"name\":\"get\",\"arguments\":\"{\\\"a\\\"\"}}]}}]}\n\n\
        data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\":1}\"}}]}}]}\n\n\
        data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":1,\"function\":{\"arguments\":\":2}\"}}]}}]}\n\n\
        data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"tool_calls\"}]}\n\n\
        data: [DONE]\n\n";

    #[test]
    fn a_held_call_takes_interleaved_arguments() {
        let calls = |t: &ChatCompletionsTranslator| -> Vec<_> {
            t.turn_function_calls()
                .map(|c| (c.held, c.output_index, c.call_id.to_owned(), c.arguments.to_owned()))
                .collect()
        };
        // Nothing held: interleaved arguments fail the response.
        let evs = events(&run(&[INTERLEAVED]));
        assert_eq!(
            evs.last().unwrap()["response"]["error"]["code"],
            "upstream_malformed_stream"
        );
        for held in ["lookup", "get"] {
            for read in [1, 7, INTERLEAVED.len()] {
                let mut t = translator();
                t.writer_mut().set_held_names([held]);
                let mut out = Vec::new();
                for chunk in INTERLEAVED.chunks(read) {
                    out.extend_from_slice(t.feed(chunk));
                }
                out.extend_from_slice(t.finish());
                let evs = events(&out);
                let last = evs.last().unwrap();
                assert_eq!(last["type"], "response.completed", "{held}");
                let output = last["response"]["output"].as_array().unwrap();
                let types: Vec<_> = output.iter().map(|i| i["type"].as_str().unwrap()).collect();
                assert_eq!(types, ["message", "function_call"], "{held}");
                assert_ne!(output[1]["name"], held);
                let (l, g) = (
                    (held == "lookup", None, "call_l".to_owned(), "{\"q\":1}".to_owned()),
                    (held == "get", None, "call_g".to_owned(), "{\"a\":2}".to_owned()),
                );
                let with_index = |mut call: (bool, Option<usize>, String, String)| {
                    if !call.0 {
                        call.1 = Some(1);
                    }
                    call
                };
                assert_eq!(calls(&t), [with_index(l), with_index(g)], "{held} {read}");
            }
        }
    }
}
