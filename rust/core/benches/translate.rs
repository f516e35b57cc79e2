//! Chat Completions → Open Responses translation throughput on a 10,000-chunk stream shaped like
//! OpenAI's (`cargo bench --bench translate`). Target (issue #2): ≤ 0.5 µs per upstream event.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ferroute_core::events::writer::ResponseSettings;
use ferroute_core::sse::SseLimits;
use ferroute_core::translate::chat_completions::ChatCompletionsTranslator;

const EVENTS: usize = 10_000;
const WORDS: [&str; 8] = [
    " The",
    " capital",
    " of",
    " the",
    " UK",
    " is",
    " London",
    " \\u00e9t\\u00e9",
];

fn stream() -> Vec<u8> {
    let mut raw = Vec::new();
    for i in 0..EVENTS {
        raw.extend_from_slice(
            format!(
                "data: {{\"id\":\"chatcmpl-Dx0Xq5Xx9rHB2ehcHZCRDsnuymUXc\",\"object\":\"chat.completion.chunk\",\
                 \"created\":1782955818,\"model\":\"gpt-4o-mini-2024-07-18\",\"service_tier\":\"default\",\
                 \"system_fingerprint\":\"fp_d0469e1700\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"{}\"}},\
                 \"logprobs\":null,\"finish_reason\":null}}],\"usage\":null,\"obfuscation\":\"auU6fTns\"}}\n\n",
                WORDS[i % WORDS.len()]
            )
            .as_bytes(),
        );
    }
    raw.extend_from_slice(b"data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n");
    raw.extend_from_slice(b"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":10000}}\n\n");
    raw.extend_from_slice(b"data: [DONE]\n\n");
    raw
}

/// One pass over the stream in `read`-byte reads; returns the bytes written.
fn translate(raw: &[u8], read: usize) -> usize {
    let mut t = ChatCompletionsTranslator::new(ResponseSettings::default(), None, None, SseLimits::default());
    let mut bytes = 0;
    for chunk in raw.chunks(read) {
        bytes += t.feed(chunk).len();
    }
    bytes + t.finish().len()
}

fn bench(c: &mut Criterion) {
    let raw = stream();
    // `TRANSLATE_PASSES=n [TRANSLATE_READ=bytes]`: n passes and no criterion, for instruction counts
    // under callgrind (the difference between two values of n, over 10,000 events per pass).
    if let Ok(passes) = std::env::var("TRANSLATE_PASSES") {
        let read = std::env::var("TRANSLATE_READ").map_or(raw.len(), |r| r.parse().expect("TRANSLATE_READ"));
        let passes: usize = passes.parse().expect("TRANSLATE_PASSES");
        let bytes: usize = (0..passes).map(|_| translate(std::hint::black_box(&raw), read)).sum();
        std::hint::black_box(bytes);
        return;
    }
    let mut group = c.benchmark_group("translate_chat_completions");
    group.throughput(Throughput::Elements(EVENTS as u64));
    for (name, read) in [("whole", raw.len()), ("4KiB_reads", 4096)] {
        group.bench_function(name, |b| {
            b.iter(|| translate(&raw, read));
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
