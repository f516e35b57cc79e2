//! Any OpenAI Responses upstream bytes, split anywhere: the translator never panics, what it writes
//! is always a well-formed Open Responses SSE stream, and the split changes nothing in it. The split
//! byte's low bit says whether the request asked for log probabilities (`include`).
#![no_main]

use ferroute_core::events::writer::ResponseSettings;
use ferroute_core::sse::SseLimits;
use ferroute_core::translate::responses::ResponsesTranslator;
use libfuzzer_sys::fuzz_target;

mod common;

/// A response id of the router's shape: item ids are made from it, so two runs compare byte for byte.
const ID: &str = "resp_0123456789abcdef0123456789abcdef0123456789abcdef";

fn translate(pieces: &[&[u8]], logprobs: bool) -> String {
    let limits = SseLimits { max_line_len: 4096, max_event_size: 8192 };
    let settings = if logprobs { common::asking_logprobs() } else { ResponseSettings::default() };
    let mut t = ResponsesTranslator::new(settings, Some(ID.to_owned()), Some(0), limits);
    let mut out = Vec::new();
    for piece in pieces {
        out.extend_from_slice(t.feed(piece));
    }
    out.extend_from_slice(t.finish());
    common::without_clock(&out)
}

fuzz_target!(|input: &[u8]| {
    let Some((&split, stream)) = input.split_first() else { return };
    let logprobs = split & 1 == 1;
    let split = usize::from(split).min(stream.len());
    let whole = translate(&[stream], logprobs);
    assert_eq!(translate(&[&stream[..split], &stream[split..]], logprobs), whole, "a split changed the output");
    common::check_stream(&whole);
});
