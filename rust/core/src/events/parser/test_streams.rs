//! Test streams shared by the checker's and the parser's tests: SSE frames built from event JSON, a
//! valid text stream to break, the recorded fixtures, and a runner through [`ResponseEventParser`].

use serde_json::{json, Value};

use super::{ResponseEventParser, StreamError};

/// An SSE frame per event, with `event:` lines.
pub(super) fn stream(events: &[Value]) -> Vec<u8> {
    let mut out = Vec::new();
    for event in events {
        let kind = event["type"].as_str().unwrap_or("message");
        out.extend_from_slice(format!("event: {kind}\ndata: {event}\n\n").as_bytes());
    }
    out
}

/// Numbers the events 0, 1, 2, … in order.
pub(super) fn numbered(mut events: Vec<Value>) -> Vec<Value> {
    for (n, event) in events.iter_mut().enumerate() {
        event["sequence_number"] = json!(n);
    }
    events
}

pub(super) fn response(status: &str, output: &Value) -> Value {
    json!({"id": "resp_1", "object": "response", "status": status, "model": "m", "output": output, "error": null})
}

const MSG: &str = "msg_1";

pub(super) fn head() -> Vec<Value> {
    vec![
        json!({"type": "response.created", "response": response("in_progress", &json!([]))}),
        json!({"type": "response.in_progress", "response": response("in_progress", &json!([]))}),
    ]
}

pub(super) fn message_item(status: &str, text: Option<&str>) -> Value {
    let content = match text {
        Some(text) => json!([{"type": "output_text", "text": text, "annotations": []}]),
        None => json!([]),
    };
    json!({"id": MSG, "type": "message", "role": "assistant", "status": status, "content": content})
}

/// A complete, valid text stream: "Hello" + " world".
pub(super) fn text_events() -> Vec<Value> {
    let mut events = head();
    events.extend([
        json!({"type": "response.output_item.added", "output_index": 0, "item": message_item("in_progress", None)}),
        json!({"type": "response.content_part.added", "item_id": MSG, "output_index": 0, "content_index": 0,
               "part": {"type": "output_text", "text": "", "annotations": []}}),
        json!({"type": "response.output_text.delta", "item_id": MSG, "output_index": 0, "content_index": 0, "delta": "Hello"}),
        json!({"type": "response.output_text.delta", "item_id": MSG, "output_index": 0, "content_index": 0, "delta": " wörld \"q\""}),
        json!({"type": "response.output_text.done", "item_id": MSG, "output_index": 0, "content_index": 0, "text": "Hello wörld \"q\""}),
        json!({"type": "response.content_part.done", "item_id": MSG, "output_index": 0, "content_index": 0,
               "part": {"type": "output_text", "text": "Hello wörld \"q\"", "annotations": []}}),
        json!({"type": "response.output_item.done", "output_index": 0, "item": message_item("completed", Some("Hello wörld \"q\""))}),
        json!({"type": "response.completed",
               "response": response("completed", &json!([message_item("completed", Some("Hello wörld \"q\""))]))}),
    ]);
    numbered(events)
}

/// Events and response of a whole stream fed in the given chunks, then closed.
pub(super) fn run_chunks(chunks: &[&[u8]]) -> (Vec<String>, Option<String>, Result<(), StreamError>) {
    let mut parser = ResponseEventParser::new();
    let mut events = Vec::new();
    for chunk in chunks {
        if let Err(error) = parser.feed(chunk, |event| events.push(event.to_owned())) {
            return (events, parser.checker().response_json(), Err(error));
        }
    }
    let result = parser.close();
    (events, parser.checker().response_json(), result)
}

pub(super) fn run(bytes: &[u8]) -> (Vec<String>, Option<String>, Result<(), StreamError>) {
    run_chunks(&[bytes])
}

pub(super) fn error_of(events: &[Value]) -> StreamError {
    let (_, _, result) = run(&stream(events));
    result.expect_err("the stream should be rejected")
}

pub(super) fn fixtures() -> Vec<(String, Vec<u8>)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/responses");
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .expect("fixtures directory")
        .map(|entry| entry.expect("entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "sse"))
        .collect();
    files.sort();
    assert_eq!(files.len(), 8, "the recorded Open Responses fixtures");
    files
        .into_iter()
        .map(|path| {
            (
                path.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read(&path).unwrap(),
            )
        })
        .collect()
}
