//! What every translator target checks of the stream it writes.
#![allow(dead_code)] // (each target uses what it needs)

/// `out` with each `"completed_at":<n>` made `0`: the clock's, the only bytes that may differ between two runs.
pub fn without_clock(out: &[u8]) -> String {
    let text = std::str::from_utf8(out).expect("the translator writes UTF-8");
    let mut kept = String::with_capacity(text.len());
    let mut rest = text;
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

/// A well-formed Open Responses SSE stream: JSON events with consecutive sequence numbers, exactly one
/// terminal event, then `data: [DONE]`.
pub fn check_stream(text: &str) {
    let body = text.strip_suffix("data: [DONE]\n\n").expect("the stream ends with [DONE]");
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
}

/// The settings of a request whose `include` asks for the output text's log probabilities.
pub fn asking_logprobs() -> ferroute_core::events::writer::ResponseSettings {
    ferroute_core::events::writer::ResponseSettings::from_request(br#"{"include":["message.output_text.logprobs"]}"#)
        .expect("a JSON object")
}
