//! Any upstream bytes, split anywhere: the translator never panics, and what it writes is always a
//! well-formed Open Responses SSE stream: JSON events with consecutive sequence numbers, exactly one
//! terminal event, then `data: [DONE]`. The split byte's low bit says whether the request asked for log
//! probabilities (`include`).
#![no_main]

use ferroute_core::events::writer::ResponseSettings;
use ferroute_core::sse::SseLimits;
use ferroute_core::translate::chat_completions::ChatCompletionsTranslator;
use libfuzzer_sys::fuzz_target;

mod common;

fuzz_target!(|input: &[u8]| {
    let Some((&split, stream)) = input.split_first() else { return };
    let logprobs = split & 1 == 1;
    let split = usize::from(split).min(stream.len());
    let limits = SseLimits { max_line_len: 4096, max_event_size: 8192 };
    let settings = if logprobs { common::asking_logprobs() } else { ResponseSettings::default() };
    let mut t = ChatCompletionsTranslator::new(settings, None, Some(0), limits);
    let mut out = t.feed(&stream[..split]).to_vec();
    out.extend_from_slice(t.feed(&stream[split..]));
    out.extend_from_slice(t.finish());

    common::check_stream(std::str::from_utf8(&out).expect("the translator writes UTF-8"));
});
