//! Any Anthropic Messages upstream bytes, split anywhere: the translator never panics, what it writes
//! is always a well-formed Open Responses SSE stream (JSON events, consecutive sequence numbers,
//! exactly one terminal event, then `data: [DONE]`), and the split changes nothing in it.
#![no_main]

use ferroute::events::writer::ResponseSettings;
use ferroute::sse::SseLimits;
use ferroute::translate::anthropic::AnthropicTranslator;
use libfuzzer_sys::fuzz_target;

/// A response id of the router's shape: item ids are made from it, so two runs compare byte for byte.
const ID: &str = "resp_0123456789abcdef0123456789abcdef0123456789abcdef";

fn translate(pieces: &[&[u8]]) -> String {
    let limits = SseLimits { max_line_len: 4096, max_event_size: 8192 };
    let mut t = AnthropicTranslator::new(ResponseSettings::default(), Some(ID.to_owned()), Some(0), limits);
    let mut out = Vec::new();
    for piece in pieces {
        out.extend_from_slice(t.feed(piece));
    }
    out.extend_from_slice(t.finish());
    let text = String::from_utf8(out).expect("the translator writes UTF-8");
    // (`completed_at` is the clock's: the only byte that may differ between two runs.)
    let mut kept = String::with_capacity(text.len());
    let mut rest = text.as_str();
    while let Some(at) = rest.find("\"completed_at\":") {
        let (head, tail) = rest.split_at(at + "\"completed_at\":".len());
        kept.push_str(head);
        let digits = tail.len() - tail.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        kept.push_str(if digits > 0 { "0" } else { "" });
        rest = &tail[digits..];
    }
    kept.push_str(rest);
    kept
}

fuzz_target!(|input: &[u8]| {
    let Some((&split, stream)) = input.split_first() else { return };
    let split = usize::from(split).min(stream.len());
    let whole = translate(&[stream]);
    assert_eq!(translate(&[&stream[..split], &stream[split..]]), whole, "a split changed the output");

    let body = whole.strip_suffix("data: [DONE]\n\n").expect("the stream ends with [DONE]");
    let mut terminals = 0;
    for (seq, frame) in body.split_terminator("\n\n").enumerate() {
        let (ty, data) = frame.strip_prefix("event: ").and_then(|f| f.split_once("\ndata: ")).expect("event + data");
        let event: serde_json::Value = serde_json::from_str(data).expect("each event is JSON");
        assert_eq!(event["type"], ty);
        assert_eq!(event["sequence_number"], seq as u64);
        if matches!(ty, "response.completed" | "response.incomplete" | "response.failed") {
            terminals += 1;
        }
    }
    assert_eq!(terminals, 1);
});
