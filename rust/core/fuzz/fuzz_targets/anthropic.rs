//! Any Anthropic Messages upstream bytes, split anywhere: the translator never panics, what it writes
//! is always a well-formed Open Responses SSE stream, and the split changes nothing in it.
#![no_main]

use ferroute_core::events::writer::ResponseSettings;
use ferroute_core::sse::SseLimits;
use ferroute_core::translate::anthropic::AnthropicTranslator;
use libfuzzer_sys::fuzz_target;

mod common;

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
    common::without_clock(&out)
}

fuzz_target!(|input: &[u8]| {
    let Some((&split, stream)) = input.split_first() else { return };
    let split = usize::from(split).min(stream.len());
    let whole = translate(&[stream]);
    assert_eq!(translate(&[&stream[..split], &stream[split..]]), whole, "a split changed the output");
    common::check_stream(&whole);
});
