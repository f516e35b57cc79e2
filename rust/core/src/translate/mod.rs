//! Upstream dialect translators: one module per dialect, each a [`Dialect`] that the generic
//! [`Translator`] drives (SSE framing, the start, the end of the stream, failures from outside).

use crate::events::redact::Secrets;
use crate::events::writer::{
    ErrorInfo, Framing, FunctionCallRef, Outcome, ReasoningPolicy, ResponseSettings, ResponseWriter, Status,
};
use crate::sse::{SseDecoder, SseEventRef, SseLimits};
use std::sync::Arc;

pub mod anthropic;
pub mod chat_completions;
mod logprobs;
pub mod responses;

/// One upstream dialect: how its events drive the response's writer.
pub trait Dialect {
    /// The dialect's state around `writer`.
    fn new(writer: ResponseWriter) -> Self;
    /// The writer back, the dialect's state dropped (a new upstream turn starts from a fresh state).
    fn into_writer(self) -> ResponseWriter;
    fn writer(&self) -> &ResponseWriter;
    fn writer_mut(&mut self) -> &mut ResponseWriter;
    /// One upstream SSE event, while the response is unfinished.
    fn on_event(&mut self, event: &SseEventRef<'_>);
    /// Whether an event is only the upstream's keep-alive (Anthropic's `ping`): it says nothing, so it is not
    /// the upstream's first event (an SSE comment is no event at all).
    fn is_keepalive(_event: &SseEventRef<'_>) -> bool {
        false
    }
    /// A whole upstream body (a JSON answer where a stream was asked for): the events the stream saying
    /// the same would have driven, its end included. An error (nothing written) if it is not the
    /// dialect's body.
    fn on_whole(&mut self, body: &[u8]) -> Result<(), ConvertError>;
    /// About how many bytes of frames `upstream` bytes of this dialect's stream become (reserved before a read
    /// is translated, so that the output grows once, not by doubling).
    fn output_for(upstream: usize) -> usize {
        upstream + upstream / 2
    }
    /// The upstream stream ended, on an event boundary, with the response unfinished: complete it where the
    /// stream had said how it ends, else fail it as cut (`upstream_stream_truncated`).
    fn on_end(&mut self);
}

/// The `type` of an upstream event whose JSON object begins with it (`{"type":"…"`, whitespace allowed between the
/// tokens), as Anthropic and OpenAI write every event: what lets a dialect read its hot events (the deltas) by a
/// faster way than the one that reads them all. `None` for any other start, or a `type` with an escape.
fn leading_type(data: &str) -> Option<&str> {
    fn token<'a>(rest: &'a str, token: &str) -> Option<&'a str> {
        rest.trim_ascii_start().strip_prefix(token)
    }
    let rest = token(data, "{")
        .and_then(|rest| token(rest, "\"type\""))
        .and_then(|rest| token(rest, ":"))?;
    let rest = token(rest, "\"")?;
    let end = rest.find(['"', '\\'])?;
    (rest.as_bytes()[end] == b'"').then(|| &rest[..end])
}

/// How a translator writes: chosen once, when it is made.
#[derive(Debug, Default)]
pub struct TranslatorOptions {
    /// SSE frames (HTTP), or one JSON object per line (the WebSocket transport).
    pub framing: Framing,
    /// What clients see of reasoning items' `encrypted_content`.
    pub reasoning: ReasoningPolicy,
    /// The router's secrets, masked in the errors an upstream sends back.
    pub secrets: Option<Arc<Secrets>>,
}

/// An upstream stream of dialect `D` (or a body) → Open Responses events: one call per upstream read.
///
/// One response may span several upstream calls (a server-side tool loop): [`next_turn`](Self::next_turn)
/// before each call's first read, [`end_turn`](Self::end_turn) at its end, then another turn or
/// [`finish`](Self::finish) / [`fail`](Self::fail) / [`cancel`](Self::cancel).
pub struct Translator<D> {
    sse: SseDecoder,
    dialect: D,
    /// Upstream events with data that are not keep-alives, over every turn (see [`events`](Self::events)).
    events: u64,
}

impl<D: Dialect> Translator<D> {
    /// A translator for one response, writing SSE frames; see [`ResponseWriter::new`] for `id` and `created_at`.
    pub fn new(settings: ResponseSettings, id: Option<String>, created_at: Option<u64>, limits: SseLimits) -> Self {
        Self::with_options(settings, id, created_at, limits, TranslatorOptions::default())
    }

    /// A translator with a framing and a reasoning policy of its own.
    pub fn with_options(
        settings: ResponseSettings,
        id: Option<String>,
        created_at: Option<u64>,
        limits: SseLimits,
        options: TranslatorOptions,
    ) -> Self {
        let writer = ResponseWriter::new(settings, id, created_at, options.framing)
            .with_reasoning(options.reasoning)
            .with_secrets(options.secrets);
        Self {
            sse: SseDecoder::with_limits(limits),
            dialect: D::new(writer),
            events: 0,
        }
    }

    /// How many upstream events with data have arrived that are not keep-alives: the first-event timeout
    /// waits for the first (comments, blank lines and pings only keep the connection busy).
    pub fn events(&self) -> u64 {
        self.events
    }

    /// Translate the next upstream bytes; returns the Open Responses frames they produce (the first call
    /// also `response.created` and `response.in_progress`).
    pub fn feed(&mut self, data: &[u8]) -> &[u8] {
        let Self { sse, dialect, events } = self;
        let writer = dialect.writer_mut();
        writer.clear_output();
        // Grow once, not by doubling.
        writer.reserve(D::output_for(data.len()));
        writer.start();
        if !writer.is_finished() {
            let fed = sse.feed(data, |event| {
                if !D::is_keepalive(&event) {
                    *events += 1;
                }
                if !dialect.writer().is_finished() {
                    dialect.on_event(&event);
                }
            });
            if let Err(error) = fed {
                dialect.writer_mut().finish(Outcome::Failed(stream_error(
                    "upstream_event_too_large",
                    format!("upstream stream rejected: {error}"),
                )));
            }
        }
        dialect.writer().output()
    }

    /// End of the upstream stream: the frames that close the response (and `data: [DONE]`). After
    /// [`end_turn`](Self::end_turn), the response ends as the last turn did.
    pub fn finish(&mut self) -> &[u8] {
        let turn_outcome = self.dialect.writer().turn_outcome().cloned();
        if let Some(outcome) = turn_outcome {
            let writer = self.dialect.writer_mut();
            writer.clear_output();
            writer.finish_response(outcome);
            return writer.output();
        }
        self.end_stream(false);
        self.dialect.writer().output()
    }

    /// Start an upstream call whose end does not end the response (see [`ResponseWriter::begin_turn`]):
    /// a fresh SSE decoder and dialect state around the same writer. Call it before every turn's first
    /// [`feed`](Self::feed), the first turn's too. Writes nothing.
    pub fn next_turn(&mut self) {
        self.sse = SseDecoder::with_limits(self.sse.limits());
        let dialect = std::mem::replace(&mut self.dialect, D::new(ResponseWriter::placeholder()));
        let mut writer = dialect.into_writer();
        writer.clear_output();
        writer.begin_turn();
        self.dialect = D::new(writer);
    }

    /// Go on with the response `previous` wrote (see [`ResponseWriter::take_over`]): the next upstream call,
    /// in this translator's dialect, is a new turn of it ([`next_turn`](Self::next_turn) before its first read).
    pub fn take_over(&mut self, previous: ResponseWriter) {
        let dialect = std::mem::replace(&mut self.dialect, D::new(ResponseWriter::placeholder()));
        let mut writer = dialect.into_writer();
        writer.take_over(previous);
        self.dialect = D::new(writer);
    }

    /// The response's writer as its current turn began (see [`ResponseWriter::fork`]): this translator goes on.
    pub fn fork_writer(&self) -> Option<ResponseWriter> {
        self.dialect.writer().fork()
    }

    /// The response's writer, taken away: this translator is left with a placeholder and is done.
    pub fn take_writer(&mut self) -> ResponseWriter {
        let dialect = std::mem::replace(&mut self.dialect, D::new(ResponseWriter::placeholder()));
        dialect.into_writer()
    }

    /// End of the current turn's upstream stream: closes the open item and records how the turn ended
    /// ([`turn_outcome`](Self::turn_outcome), [`turn_function_calls`](Self::turn_function_calls)), writing
    /// no terminal event; the caller then starts another turn or ends the response. Outside a turn, as
    /// [`finish`](Self::finish).
    pub fn end_turn(&mut self) -> &[u8] {
        self.end_stream(true);
        self.dialect.writer().output()
    }

    fn end_stream(&mut self, keep_turn: bool) {
        let Self { sse, dialect, .. } = self;
        let writer = dialect.writer_mut();
        writer.clear_output();
        writer.start();
        if !keep_turn {
            writer.end_turns();
        }
        let cut_mid_event = sse.finish();
        if !dialect.writer().is_finished() {
            if cut_mid_event {
                dialect.writer_mut().finish(Outcome::Failed(stream_error(
                    "upstream_stream_truncated",
                    "the upstream stream ended in the middle of an event".to_owned(),
                )));
            } else {
                dialect.on_end();
            }
        }
    }

    /// A whole upstream body where a stream was asked for: the frames that stream followed by
    /// [`finish`](Self::finish) would have given (in a turn, by [`end_turn`](Self::end_turn)). An error,
    /// and nothing written, if the body is not the dialect's (the caller then fails the response).
    pub fn feed_whole(&mut self, body: &[u8]) -> Result<&[u8], ConvertError> {
        let Self { sse, dialect, events } = self;
        dialect.writer_mut().clear_output();
        if !dialect.writer().is_finished() {
            sse.finish();
            dialect.on_whole(body)?;
            *events += 1;
        }
        Ok(dialect.writer().output())
    }

    /// How the current turn ended, once [`end_turn`](Self::end_turn) (or the upstream) said so.
    pub fn turn_outcome(&self) -> Option<&Outcome> {
        self.dialect.writer().turn_outcome()
    }

    /// The function calls the model made in the current turn, held ones too ([`ResponseWriter::set_held_names`]).
    pub fn turn_function_calls(&self) -> impl Iterator<Item = FunctionCallRef<'_>> {
        self.dialect.writer().turn_function_calls()
    }

    /// The items the current turn added to `output`, as a JSON array (see [`ResponseWriter::turn_items_json`]).
    pub fn turn_items_json(&self) -> Vec<u8> {
        self.dialect.writer().turn_items_json()
    }

    /// A whole non-streaming body of the dialect → the response object (JSON), on a writer of its own that writes
    /// no events and holds the names this one holds (a held call is left out of its `output`); this translator is
    /// left as it was. An error if the body is not the dialect's.
    pub fn convert(
        &self,
        body: &[u8],
        settings: ResponseSettings,
        id: Option<String>,
        created_at: Option<u64>,
    ) -> Result<Vec<u8>, ConvertError> {
        let mut writer = ResponseWriter::silent(settings, id, created_at);
        writer.set_held_names(self.writer().held_names().iter().cloned());
        let mut dialect = D::new(writer);
        dialect.on_whole(body)?;
        Ok(dialect.writer().response_json())
    }

    /// End the response as failed for a reason outside the upstream's bytes (an idle timeout, the
    /// router shutting down, an exception): `error`, `response.failed`, `data: [DONE]`. Nothing if
    /// the response already ended.
    pub fn fail(&mut self, error: ErrorInfo) -> &[u8] {
        let Self { sse, dialect, .. } = self;
        let writer = dialect.writer_mut();
        writer.clear_output();
        writer.start();
        sse.finish();
        writer.finish_response(Outcome::Failed(error));
        writer.output()
    }

    /// Cancel the response (see [`ResponseWriter::cancel`]): the frames that close it. Nothing if the
    /// response already ended.
    pub fn cancel(&mut self) -> &[u8] {
        let Self { sse, dialect, .. } = self;
        let writer = dialect.writer_mut();
        writer.clear_output();
        if writer.status() == Status::InProgress {
            writer.start();
            sse.finish();
            writer.cancel();
        }
        writer.output()
    }

    /// The writer, for what the router writes itself between upstream reads (its own items); its
    /// [`output`](ResponseWriter::output) is cleared by the next translator call.
    pub fn writer_mut(&mut self) -> &mut ResponseWriter {
        self.dialect.writer_mut()
    }

    /// The writer (response id, status, the response object so far).
    pub fn writer(&self) -> &ResponseWriter {
        self.dialect.writer()
    }

    /// The response status.
    pub fn status(&self) -> Status {
        self.dialect.writer().status()
    }
}

/// A whole upstream body that is not what its dialect promises.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConvertError {
    pub message: String,
}

impl std::fmt::Display for ConvertError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ConvertError {}

/// The error an upstream reported, as the client sees it: its message (the writer masks the router's secrets in
/// it and then cuts it to `MAX_ERROR_MESSAGE` bytes), never its raw body; `model_error` / `upstream_error` unless
/// it says.
fn upstream_error(message: &str, kind: Option<&str>, code: Option<&str>) -> ErrorInfo {
    let message = format!("upstream error: {message}");
    ErrorInfo {
        kind: kind.unwrap_or("model_error").to_owned(),
        code: code.unwrap_or("upstream_error").to_owned(),
        message,
        param: None,
    }
}

/// A failure of the upstream's stream itself (malformed, cut, too large): a `model_error` with `code`.
fn stream_error(code: &str, message: String) -> ErrorInfo {
    ErrorInfo {
        kind: "model_error".to_owned(),
        code: code.to_owned(),
        message,
        param: None,
    }
}

#[cfg(test)]
mod tests {
    use super::chat_completions::ChatCompletionsTranslator;
    use super::*;
    use proptest::prelude::*;
    use serde_json::Value;

    const ID: &str = "resp_0123456789abcdef0123456789abcdef0123456789abcdef";

    /// A recorded stream with each event's JSON written again with `type` no longer first (checked, but where it is
    /// the only member: no event then takes a dialect's fast path, see `leading_type`); other lines as they were.
    pub(super) fn type_not_first(raw: &[u8]) -> Vec<u8> {
        let text = std::str::from_utf8(raw).unwrap();
        let mut out = String::new();
        for line in text.split_inclusive('\n') {
            match line
                .strip_prefix("data: ")
                .map(|data| serde_json::from_str::<Value>(data.trim()))
            {
                Some(Ok(Value::Object(mut event))) => {
                    let kind = event.remove("type").unwrap();
                    event.insert("type".to_owned(), kind);
                    let data = serde_json::to_string(&event).unwrap();
                    assert!(event.len() == 1 || leading_type(&data).is_none(), "{data}"); // (`{"type":"ping"}`)
                    out.push_str("data: ");
                    out.push_str(&data);
                    out.push('\n');
                }
                _ => out.push_str(line),
            }
        }
        out.into_bytes()
    }

    #[test]
    fn leading_type_reads_only_a_type_that_comes_first() {
        assert_eq!(leading_type(r#"{"type":"a.b","x":1}"#), Some("a.b"));
        assert_eq!(leading_type(" {\n \"type\" : \"a\" }"), Some("a"));
        for other in [
            r#"{"x":1,"type":"a"}"#,
            r#"{"type":"a\u0062"}"#,
            r#"{"type":5}"#,
            r#"["type"]"#,
            "",
            "{",
        ] {
            assert_eq!(leading_type(other), None, "{other}");
        }
    }

    /// A turn in which the model calls `get`, then one in which it answers.
    const CALL_TURN: &[u8] = b"data: {\"choices\":[{\"index\":0,\"delta\":{\"reasoning_content\":\"hm\"}}]}\n\n\
        data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"call_1\",\
        \"function\":{\"name\":\"get\",\"arguments\":\"{\\\"a\\\"\"}}]}}]}\n\n\
        data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\":1}\"}}]}}]}\n\n\
        data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"tool_calls\"}]}\n\n\
        data: {\"choices\":[],\"usage\":{\"prompt_tokens\":10,\"completion_tokens\":5,\"total_tokens\":15,\
        \"prompt_tokens_details\":{\"cached_tokens\":4},\"completion_tokens_details\":{\"reasoning_tokens\":2}}}\n\n\
        data: [DONE]\n\n";
    const ANSWER_TURN: &[u8] = b"data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"It is 1.\"}}]}\n\n\
        data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n\
        data: {\"choices\":[],\"usage\":{\"prompt_tokens\":20,\"completion_tokens\":7,\"total_tokens\":27,\
        \"prompt_tokens_details\":{\"cached_tokens\":1}}}\n\n\
        data: [DONE]\n\n";

    fn translator(framing: Framing) -> ChatCompletionsTranslator {
        let options = TranslatorOptions {
            framing,
            ..TranslatorOptions::default()
        };
        ChatCompletionsTranslator::with_options(
            ResponseSettings::default(),
            Some(ID.into()),
            Some(1),
            SseLimits::default(),
            options,
        )
    }

    /// The events of SSE frames or JSON lines, `completed_at` (the clock's) taken out.
    pub(crate) fn events(out: &[u8]) -> Vec<Value> {
        let text = std::str::from_utf8(out).unwrap();
        let datas: Vec<&str> = if text.starts_with('{') {
            text.lines().collect()
        } else {
            text.split("\n\n")
                .filter_map(|frame| frame.lines().find_map(|l| l.strip_prefix("data: ")))
                .filter(|data| *data != "[DONE]")
                .collect()
        };
        datas
            .into_iter()
            .map(|data| {
                let mut event: Value = serde_json::from_str(data).unwrap();
                if let Some(response) = event.get_mut("response") {
                    response["completed_at"] = Value::Null;
                }
                event
            })
            .collect()
    }

    /// Both turns in `read`-byte reads; the frames of each call, and the calls each turn made.
    fn two_turns(t: &mut ChatCompletionsTranslator, read: usize) -> (Vec<u8>, Vec<Vec<(usize, String)>>) {
        let mut out = Vec::new();
        let mut calls = Vec::new();
        for turn in [CALL_TURN, ANSWER_TURN] {
            t.next_turn();
            for chunk in turn.chunks(read) {
                out.extend_from_slice(t.feed(chunk));
            }
            out.extend_from_slice(t.end_turn());
            assert_eq!(t.turn_outcome(), Some(&Outcome::Completed));
            assert_eq!(t.status(), Status::InProgress);
            calls.push(
                t.turn_function_calls()
                    .map(|c| {
                        (
                            c.output_index.unwrap(),
                            format!("{} {} {}", c.call_id, c.name, c.arguments),
                        )
                    })
                    .collect(),
            );
        }
        out.extend_from_slice(t.finish());
        (out, calls)
    }

    #[test]
    fn two_upstream_calls_make_one_response() {
        let mut t = translator(Framing::Sse);
        let (out, calls) = two_turns(&mut t, usize::MAX);
        assert_eq!(calls, [vec![(1, "call_1 get {\"a\":1}".to_owned())], vec![]]);
        assert!(out.ends_with(b"data: [DONE]\n\n"));
        assert_eq!(out.windows(6).filter(|w| w == b"[DONE]").count(), 1);
        let evs = events(&out);
        for (i, e) in evs.iter().enumerate() {
            assert_eq!(e["sequence_number"], i as u64);
        }
        let count = |ty: &str| evs.iter().filter(|e| e["type"] == ty).count();
        assert_eq!(count("response.created"), 1);
        assert_eq!(count("response.completed"), 1);
        assert_eq!(count("response.output_item.added"), 3);
        let indexes: Vec<_> = evs
            .iter()
            .filter(|e| e["type"] == "response.output_item.done")
            .map(|e| e["output_index"].as_u64().unwrap())
            .collect();
        assert_eq!(indexes, [0, 1, 2]);
        let response = &evs.last().unwrap()["response"];
        let output: Vec<_> = response["output"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| &i["type"])
            .collect();
        assert_eq!(output, ["reasoning", "function_call", "message"]);
        assert_eq!(
            response["usage"],
            serde_json::json!({"input_tokens": 30, "input_tokens_details": {"cached_tokens": 5},
                               "output_tokens": 12, "output_tokens_details": {"reasoning_tokens": 2},
                               "total_tokens": 42})
        );
        assert_eq!(t.status(), Status::Completed);
        assert!(t.finish().is_empty());
    }

    #[test]
    fn a_turn_that_fails_ends_the_response_only_when_told() {
        let mut t = translator(Framing::Sse);
        t.next_turn();
        let out = t
            .feed(b"data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"par")
            .to_vec();
        assert!(!out.is_empty());
        let out = t.end_turn().to_vec();
        assert!(matches!(
            t.turn_outcome(),
            Some(Outcome::Failed(ErrorInfo { code, .. })) if code == "upstream_stream_truncated"
        ));
        assert!(events(&out).is_empty(), "nothing was open: no events, and no error yet");
        assert_eq!(t.status(), Status::InProgress);
        let evs = events(t.finish());
        let types: Vec<_> = evs.iter().map(|e| e["type"].as_str().unwrap()).collect();
        assert_eq!(types, ["error", "response.failed"]);
        assert_eq!(t.status(), Status::Failed);

        // A turn cut while an item is open closes it incomplete; `fail` then ends the response its own way.
        let mut t = translator(Framing::Sse);
        t.next_turn();
        t.feed(b"data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"par\"}}]}\n\n");
        let evs = events(t.end_turn());
        assert_eq!(evs.last().unwrap()["type"], "response.output_item.done");
        assert_eq!(evs.last().unwrap()["item"]["status"], "incomplete");
        let evs = events(t.fail(stream_error("upstream_timeout", "slow".into())));
        assert_eq!(evs[0]["error"]["code"], "upstream_timeout");
        assert_eq!(t.status(), Status::Failed);
    }

    #[test]
    fn finish_without_end_turn_ends_the_response_as_today() {
        let mut a = translator(Framing::Sse);
        a.next_turn();
        let mut out_a = a.feed(ANSWER_TURN).to_vec();
        out_a.extend_from_slice(a.finish());
        let mut b = translator(Framing::Sse);
        let mut out_b = b.feed(ANSWER_TURN).to_vec();
        out_b.extend_from_slice(b.finish());
        assert_eq!(events(&out_a), events(&out_b));
        assert!(out_a.ends_with(b"data: [DONE]\n\n"));
        // And a second turn's usage is summed even when its end finishes the response at once.
        let mut t = translator(Framing::Sse);
        t.next_turn();
        t.feed(CALL_TURN);
        t.end_turn();
        t.next_turn();
        t.feed(ANSWER_TURN);
        let evs = events(t.finish());
        let usage = &evs.last().unwrap()["response"]["usage"];
        assert_eq!(usage["total_tokens"], 42);
    }

    #[test]
    fn usage_spent_outside_the_turns_is_added() {
        let mut t = translator(Framing::Sse);
        t.next_turn();
        t.feed(CALL_TURN);
        t.end_turn();
        t.writer_mut().add_usage(crate::events::writer::Usage {
            input_tokens: 100,
            output_tokens: 10,
            total_tokens: 110,
            cached_tokens: 0,
            reasoning_tokens: 0,
        });
        t.next_turn();
        t.feed(ANSWER_TURN);
        let evs = events(t.finish());
        assert_eq!(evs.last().unwrap()["response"]["usage"]["total_tokens"], 42 + 110);
    }

    #[test]
    fn cancel_mid_turn_and_after_a_turn() {
        for end_first in [false, true] {
            let mut t = translator(Framing::Sse);
            t.next_turn();
            t.feed(b"data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"par\"}}]}\n\n");
            if end_first {
                t.end_turn();
            }
            let evs = events(t.cancel());
            assert_eq!(evs.last().unwrap()["type"], "response.failed");
            assert_eq!(t.status(), Status::Cancelled);
            let r: Value = serde_json::from_slice(&t.writer().response_json()).unwrap();
            assert_eq!((r["status"].as_str(), &r["error"]), (Some("cancelled"), &Value::Null));
            assert_eq!(r["output"][0]["status"], "incomplete");
            assert!(t.cancel().is_empty());
        }
    }

    #[test]
    fn the_router_runs_a_tool_between_turns() {
        let mut t = translator(Framing::JsonLines);
        t.next_turn();
        let mut out = t.feed(CALL_TURN).to_vec();
        out.extend_from_slice(t.end_turn());
        let call = t.turn_function_calls().next().unwrap().call_id.to_owned();
        let writer = t.writer_mut();
        writer.clear_output();
        writer
            .open_item("mcp", b"{\"type\":\"mcp_call\",\"status\":\"in_progress\"}")
            .unwrap();
        writer.item_event("response.mcp_call.completed", b"{}").unwrap();
        writer
            .done_item(format!("{{\"type\":\"mcp_call\",\"status\":\"completed\",\"call\":\"{call}\"}}").as_bytes())
            .unwrap();
        out.extend_from_slice(writer.output());
        t.next_turn();
        out.extend_from_slice(t.feed(ANSWER_TURN));
        out.extend_from_slice(t.end_turn());
        out.extend_from_slice(t.finish());
        let evs = events(&out);
        assert!(evs.iter().enumerate().all(|(i, e)| e["sequence_number"] == i as u64));
        let output = &evs.last().unwrap()["response"]["output"];
        let types: Vec<_> = output
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["type"].as_str().unwrap())
            .collect();
        assert_eq!(types, ["reasoning", "function_call", "mcp_call", "message"]);
        assert_eq!(output[2]["call"], "call_1");
        let added: Vec<_> = evs
            .iter()
            .filter(|e| e["type"] == "response.output_item.added")
            .map(|e| e["output_index"].as_u64().unwrap())
            .collect();
        assert_eq!(added, [0, 1, 2, 3]);
        assert_eq!(t.turn_function_calls().count(), 0, "the last turn made no calls");
    }

    /// SSE frames of `events` (JSON values, each with its `type`), as `providers/*.py` `whole_as_stream` writes.
    fn sse_of(events: &[Value], named: bool) -> Vec<u8> {
        let mut out = Vec::new();
        for e in events {
            if named {
                out.extend_from_slice(format!("event: {}\n", e["type"].as_str().unwrap()).as_bytes());
            }
            out.extend_from_slice(format!("data: {e}\n\n").as_bytes());
        }
        out
    }

    /// A turn's calls as `(output_index, held, call_id, name, arguments)`.
    fn turn_calls<D: Dialect>(t: &Translator<D>) -> Vec<(Option<usize>, bool, String, String, String)> {
        t.turn_function_calls()
            .map(|c| {
                let fields = (c.call_id.to_owned(), c.name.to_owned(), c.arguments.to_owned());
                (c.output_index, c.held, fields.0, fields.1, fields.2)
            })
            .collect()
    }

    /// `feed_whole(body)` and `feed(stream) + finish()` on fresh translators of dialect `D` holding `held`: the
    /// same bytes, the same calls, and `convert(body)` the same response. The translator of the whole body.
    fn same_as_stream<D: Dialect>(body: &Value, stream: &[u8], held: &[&str]) -> Translator<D> {
        let make = || translator_holding::<D>(held);
        let mut whole = make();
        let whole_out = whole.feed_whole(body.to_string().as_bytes()).unwrap().to_vec();
        let mut streamed = make();
        let mut stream_out = streamed.feed(stream).to_vec();
        stream_out.extend_from_slice(streamed.finish());
        assert_eq!(events(&whole_out), events(&stream_out));
        assert!(whole_out.ends_with(b"data: [DONE]\n\n"));
        assert!(whole.finish().is_empty());
        let response = |t: &Translator<D>| {
            let mut r: Value = serde_json::from_slice(&t.writer().response_json()).unwrap();
            r["completed_at"] = Value::Null;
            r
        };
        assert_eq!(response(&whole), response(&streamed));
        assert_eq!(turn_calls(&whole), turn_calls(&streamed));
        let mut converted: Value = serde_json::from_slice(
            &make()
                .convert(
                    body.to_string().as_bytes(),
                    ResponseSettings::default(),
                    Some(ID.into()),
                    Some(1),
                )
                .unwrap(),
        )
        .unwrap();
        converted["completed_at"] = Value::Null;
        assert_eq!(converted, response(&whole));
        whole
    }

    /// The Chat Completions stream saying what the whole `chat.completion` body says: one chunk, then `[DONE]`.
    fn chat_stream_of(completion: &Value) -> Vec<u8> {
        let mut chunk = completion.clone();
        chunk["choices"][0]["delta"] = chunk["choices"][0]["message"].take();
        chunk["choices"][0].as_object_mut().unwrap().remove("message");
        let mut stream = sse_of(&[chunk], false);
        stream.extend_from_slice(b"data: [DONE]\n\n");
        stream
    }

    /// The Messages stream saying what the whole message says: each block started whole and stopped.
    fn anthropic_stream_of(message: &Value) -> Vec<u8> {
        use serde_json::json;
        let mut start = message.clone();
        start["content"] = json!([]);
        let mut events = vec![json!({"type": "message_start", "message": start})];
        for (index, block) in message["content"].as_array().unwrap().iter().enumerate() {
            events.push(json!({"type": "content_block_start", "index": index, "content_block": block}));
            events.push(json!({"type": "content_block_stop", "index": index}));
        }
        events.push(
            json!({"type": "message_delta", "delta": {"stop_reason": message["stop_reason"]},
                   "usage": message["usage"]}),
        );
        events.push(json!({"type": "message_stop"}));
        sse_of(&events, true)
    }

    /// The Responses stream saying what the whole response says: each item added and done whole, its text (and
    /// reasoning summaries) as one delta a part.
    fn responses_stream_of(response: &Value) -> Vec<u8> {
        use serde_json::json;
        let mut events = Vec::new();
        for (index, item) in response["output"].as_array().unwrap().iter().enumerate() {
            let at = |ty: &str, delta: &Value| json!({"type": ty, "output_index": index, "item_id": item["id"], "delta": delta});
            events.push(json!({"type": "response.output_item.added", "output_index": index, "item": item}));
            if item["type"] == "message" {
                for part in item["content"].as_array().unwrap() {
                    events.push(at("response.output_text.delta", &part["text"]));
                }
            } else if item["type"] == "reasoning" {
                for part in item["summary"].as_array().unwrap() {
                    events.push(
                        json!({"type": "response.reasoning_summary_part.added", "output_index": index,
                               "item_id": item["id"]}),
                    );
                    events.push(at("response.reasoning_summary_text.delta", &part["text"]));
                }
            }
            events.push(json!({"type": "response.output_item.done", "output_index": index, "item": item}));
        }
        events.push(json!({"type": "response.completed", "response": response}));
        sse_of(&events, true)
    }

    #[test]
    fn a_whole_body_gives_the_events_of_the_stream_saying_the_same() {
        use serde_json::json;
        // tests/mock_upstream.py: `_completion_body`, `WHOLE_MESSAGE`, `WHOLE_RESPONSE`.
        let completion = json!({
            "id": "chatcmpl-json", "object": "chat.completion", "created": 0, "model": "m",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "The capital is London."},
                         "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}});
        let stream = chat_stream_of(&completion);
        same_as_stream::<chat_completions::ChatCompletions>(&completion, &stream, &[]);

        let message = json!({
            "id": "msg_whole", "type": "message", "role": "assistant", "model": "claude",
            "content": [{"type": "thinking", "thinking": "Look it up.", "signature": "sig-whole"},
                        {"type": "text", "text": "Checking."},
                        {"type": "tool_use", "id": "toolu_whole", "name": "get_weather", "input": {"city": "Paris"}}],
            "stop_reason": "tool_use", "usage": {"input_tokens": 9, "output_tokens": 8}});
        same_as_stream::<anthropic::State>(&message, &anthropic_stream_of(&message), &[]);

        let response = json!({
            "id": "resp_whole", "object": "response", "status": "completed", "model": "gpt",
            "output": [{"type": "reasoning", "id": "rs_whole", "summary": [{"type": "summary_text", "text": "Look it up."}],
                        "encrypted_content": "blob-whole"},
                       {"type": "message", "id": "msg_whole", "role": "assistant", "status": "completed",
                        "content": [{"type": "output_text", "text": "Checking.", "annotations": []}]},
                       {"type": "function_call", "id": "fc_whole", "call_id": "call_whole", "name": "get_weather",
                        "arguments": "{\"city\": \"Paris\"}", "status": "completed"}],
            "usage": {"input_tokens": 9, "output_tokens": 8, "total_tokens": 17}});
        same_as_stream::<responses::State>(&response, &responses_stream_of(&response), &[]);
    }

    /// The bodies of `a_whole_body_gives_the_events_of_the_stream_saying_the_same` (the completion with a tool
    /// call), each with the stream saying the same.
    fn whole_bodies_with_a_call() -> [(Value, Vec<u8>); 3] {
        use serde_json::json;
        let completion = json!({
            "id": "chatcmpl-json", "object": "chat.completion", "created": 0, "model": "m",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "Checking.",
                         "tool_calls": [{"index": 0, "id": "call_whole", "type": "function",
                                         "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]},
                         "finish_reason": "tool_calls"}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}});
        let chat_stream = chat_stream_of(&completion);

        let message = json!({
            "id": "msg_whole", "type": "message", "role": "assistant", "model": "claude",
            "content": [{"type": "text", "text": "Checking."},
                        {"type": "tool_use", "id": "call_whole", "name": "get_weather", "input": {"city": "Paris"}},
                        {"type": "text", "text": " Still checking."}],
            "stop_reason": "tool_use", "usage": {"input_tokens": 9, "output_tokens": 8}});
        let anthropic_stream = anthropic_stream_of(&message);

        let response = json!({
            "id": "resp_whole", "object": "response", "status": "completed", "model": "gpt",
            "output": [{"type": "message", "id": "msg_whole", "role": "assistant", "status": "completed",
                        "content": [{"type": "output_text", "text": "Checking.", "annotations": []}]},
                       {"type": "function_call", "id": "fc_whole", "call_id": "call_whole", "name": "get_weather",
                        "arguments": "{\"city\":\"Paris\"}", "status": "completed"}],
            "usage": {"input_tokens": 9, "output_tokens": 8, "total_tokens": 17}});
        let responses_stream = responses_stream_of(&response);
        [
            (completion, chat_stream),
            (message, anthropic_stream),
            (response, responses_stream),
        ]
    }

    #[test]
    fn a_held_call_in_a_whole_body_is_held_as_in_the_stream() {
        let [chat, anthropic, responses] = whole_bodies_with_a_call();
        let chat = same_as_stream::<chat_completions::ChatCompletions>(&chat.0, &chat.1, &["get_weather"]);
        let anthropic = same_as_stream::<anthropic::State>(&anthropic.0, &anthropic.1, &["get_weather"]);
        let responses = same_as_stream::<responses::State>(&responses.0, &responses.1, &["get_weather"]);
        let held = (
            None,
            true,
            "call_whole".to_owned(),
            "get_weather".to_owned(),
            "{\"city\":\"Paris\"}".to_owned(),
        );
        for (name, calls, response) in [
            ("chat", turn_calls(&chat), chat.writer().response_json()),
            ("anthropic", turn_calls(&anthropic), anthropic.writer().response_json()),
            ("responses", turn_calls(&responses), responses.writer().response_json()),
        ] {
            assert_eq!(calls, std::slice::from_ref(&held), "{name}");
            let r: Value = serde_json::from_slice(&response).unwrap();
            let types: Vec<_> = r["output"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i["type"].clone())
                .collect();
            assert_eq!(types, ["message"], "{name}");
        }
        let r: Value = serde_json::from_slice(&anthropic.writer().response_json()).unwrap();
        assert_eq!(
            r["output"][0]["content"][0]["text"], "Checking. Still checking.",
            "the text around a held call is one message"
        );
        // Not held: the same bodies give their calls as items.
        let [chat, anthropic, responses] = whole_bodies_with_a_call();
        let ordinary = same_as_stream::<chat_completions::ChatCompletions>(&chat.0, &chat.1, &["other"]);
        assert_eq!(turn_calls(&ordinary)[0].0, Some(1));
        let ordinary = same_as_stream::<anthropic::State>(&anthropic.0, &anthropic.1, &[]);
        assert_eq!(turn_calls(&ordinary)[0].0, Some(1));
        let ordinary = same_as_stream::<responses::State>(&responses.0, &responses.1, &[]);
        assert_eq!(turn_calls(&ordinary)[0].0, Some(1));
    }

    /// An event without what holding a call renumbers (`sequence_number`, `output_index`, item ids) or what
    /// carries the whole response.
    fn unnumbered(event: &Value) -> Value {
        let mut event = event.clone();
        let fields = event.as_object_mut().unwrap();
        for key in ["sequence_number", "output_index", "item_id", "response"] {
            fields.remove(key);
        }
        if let Some(item) = fields.get_mut("item").and_then(Value::as_object_mut) {
            item.remove("id");
        }
        event
    }

    /// A fresh translator of dialect `D` (the tests' id and clock) holding the calls to `held`.
    pub(crate) fn translator_holding<D: Dialect>(held: &[&str]) -> Translator<D> {
        let mut t = Translator::<D>::with_options(
            ResponseSettings::default(),
            Some(ID.into()),
            Some(1),
            SseLimits::default(),
            TranslatorOptions::default(),
        );
        t.writer_mut().set_held_names(held.iter().copied());
        t
    }

    /// A recorded stream of dialect `D` in one turn with the calls to `held` held, against the same stream with
    /// nothing held: the same calls in the same order with the same arguments, the held ones flagged; the events
    /// those calls' items had gone and nothing else; `sequence_number` and `output_index` contiguous.
    pub(crate) fn check_held_stream<D: Dialect>(raw: &[u8], held: &str) {
        let run = |names: &[&str]| {
            let mut t = translator_holding::<D>(names);
            t.next_turn();
            let mut out = t.feed(raw).to_vec();
            out.extend_from_slice(t.end_turn());
            (t, out)
        };
        let (plain, plain_out) = run(&[]);
        let (t, out) = run(&[held]);
        assert_eq!(t.turn_outcome(), plain.turn_outcome());
        let plain_calls = turn_calls(&plain);
        let calls = turn_calls(&t);
        assert!(calls.iter().any(|c| c.1), "the stream calls {held}");
        assert_eq!(calls.len(), plain_calls.len());
        let mut held_items = Vec::new();
        for (call, plain_call) in calls.iter().zip(&plain_calls) {
            assert_eq!(
                (&call.2, &call.3, &call.4),
                (&plain_call.2, &plain_call.3, &plain_call.4)
            );
            assert_eq!(call.1, call.3 == held);
            assert_eq!(call.0.is_none(), call.1);
            if call.1 {
                held_items.push(plain_call.0.unwrap());
            }
        }
        let evs = events(&out);
        assert!(evs.iter().enumerate().all(|(i, e)| e["sequence_number"] == i as u64));
        let added: Vec<_> = evs
            .iter()
            .filter(|e| e["type"] == "response.output_item.added")
            .map(|e| e["output_index"].as_u64().unwrap())
            .collect();
        assert_eq!(added, (0..added.len() as u64).collect::<Vec<_>>());
        let text = String::from_utf8(out).unwrap();
        for call in calls.iter().filter(|c| c.1) {
            assert!(
                !text.contains(&format!("\"{}\"", call.2)),
                "{} is in the stream",
                call.2
            );
        }
        let kept: Vec<_> = events(&plain_out)
            .iter()
            .filter(|e| {
                e["output_index"]
                    .as_u64()
                    .is_none_or(|i| !held_items.contains(&usize::try_from(i).unwrap()))
            })
            .map(unnumbered)
            .collect();
        assert_eq!(evs.iter().map(unnumbered).collect::<Vec<_>>(), kept);
        let items: Value = serde_json::from_slice(&t.turn_items_json()).unwrap();
        let response: Value = serde_json::from_slice(&t.writer().response_json()).unwrap();
        assert_eq!(items, response["output"]);
        assert!(!items.as_array().unwrap().iter().any(|i| i["name"] == held));
    }

    /// [`two_turns`] with the model's `get` held.
    fn held_translator(framing: Framing) -> ChatCompletionsTranslator {
        let mut t = translator(framing);
        t.writer_mut().set_held_names(["get"]);
        t
    }

    #[test]
    fn a_turn_whose_call_is_held_streams_only_its_other_items() {
        let mut t = held_translator(Framing::Sse);
        t.next_turn();
        let mut out = t.feed(CALL_TURN).to_vec();
        out.extend_from_slice(t.end_turn());
        assert!(!out.windows(6).any(|w| w == b"call_1"));
        let evs = events(&out);
        let types: Vec<_> = evs.iter().map(|e| e["type"].as_str().unwrap()).collect();
        assert!(!types.iter().any(|t| t.contains("function_call")), "{types:?}");
        assert_eq!(
            turn_calls(&t),
            [(
                None,
                true,
                "call_1".to_owned(),
                "get".to_owned(),
                "{\"a\":1}".to_owned()
            )]
        );
        let items: Value = serde_json::from_slice(&t.turn_items_json()).unwrap();
        assert_eq!(items.as_array().unwrap().len(), 1);
        assert_eq!(items[0]["type"], "reasoning");
        t.next_turn();
        assert!(turn_calls(&t).is_empty(), "a new turn has no calls yet");
        out.extend_from_slice(t.feed(ANSWER_TURN));
        out.extend_from_slice(t.end_turn());
        let items: Value = serde_json::from_slice(&t.turn_items_json()).unwrap();
        assert_eq!(items.as_array().unwrap().len(), 1);
        assert_eq!(items[0]["content"][0]["text"], "It is 1.");
        out.extend_from_slice(t.finish());
        let evs = events(&out);
        assert!(evs.iter().enumerate().all(|(i, e)| e["sequence_number"] == i as u64));
        let added: Vec<_> = evs
            .iter()
            .filter(|e| e["type"] == "response.output_item.added")
            .map(|e| e["output_index"].as_u64().unwrap())
            .collect();
        assert_eq!(added, [0, 1]);
        let output = &evs.last().unwrap()["response"]["output"];
        let types: Vec<_> = output.as_array().unwrap().iter().map(|i| &i["type"]).collect();
        assert_eq!(types, ["reasoning", "message"]);
        let all: Value = serde_json::from_slice(&t.turn_items_json()).unwrap();
        assert_eq!(&all, output, "after the response's end: every item");
    }

    #[test]
    fn a_body_of_another_dialect_writes_nothing_and_a_turn_records_its_end() {
        let mut t = translator(Framing::Sse);
        assert!(t.feed_whole(b"{\"type\":\"message\"}").is_err());
        assert!(t.feed_whole(b"not json").is_err());
        assert!(t.writer().output().is_empty());
        t.next_turn();
        let out = t
            .feed_whole(b"{\"choices\":[{\"index\":0,\"message\":{\"content\":\"hi\"},\"finish_reason\":\"length\"}]}")
            .unwrap()
            .to_vec();
        assert!(!out.windows(6).any(|w| w == b"[DONE]"));
        assert_eq!(t.turn_outcome(), Some(&Outcome::Incomplete("max_output_tokens".into())));
        assert!(t.end_turn().is_empty());
        let evs = events(t.finish());
        assert_eq!(evs.last().unwrap()["type"], "response.incomplete");
    }

    proptest! {
        #[test]
        fn turns_in_any_split_give_the_same_events(read in 1usize..200) {
            let (whole, calls) = two_turns(&mut translator(Framing::JsonLines), usize::MAX);
            let (split, split_calls) = two_turns(&mut translator(Framing::JsonLines), read);
            prop_assert_eq!(events(&whole), events(&split));
            prop_assert_eq!(calls, split_calls);
        }

        #[test]
        fn held_calls_in_any_split_give_the_same_events(read in 1usize..200) {
            let mut whole = held_translator(Framing::JsonLines);
            let mut split = held_translator(Framing::JsonLines);
            for turn in [CALL_TURN, ANSWER_TURN] {
                let mut outs = Vec::new();
                for (t, size) in [(&mut whole, usize::MAX), (&mut split, read)] {
                    t.next_turn();
                    let mut out = Vec::new();
                    for chunk in turn.chunks(size) {
                        out.extend_from_slice(t.feed(chunk));
                    }
                    out.extend_from_slice(t.end_turn());
                    outs.push(out);
                }
                prop_assert_eq!(events(&outs[0]), events(&outs[1]));
                prop_assert_eq!(turn_calls(&whole), turn_calls(&split));
            }
        }
    }
}
