//! SSE decoding of a ~10,000-event Chat Completions stream (the router's hot path), whole and in 4 KiB
//! reads, plus the encoder. `cargo bench --bench sse`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ferroute_core::sse::{encode_event, SseDecoder};

const EVENTS: usize = 10_000;
const FIXTURE: &[u8] = include_bytes!("../../../tests/fixtures/chat_completions/openai-gpt-4o-mini-text-usage.sse");

/// The fixture's content-delta events (`data: {chat.completion.chunk}\n\n`), repeated to `EVENTS`
/// events, then `data: [DONE]`, with `line_end` as the line terminator.
fn stream(line_end: &str) -> Vec<u8> {
    let text = std::str::from_utf8(FIXTURE).unwrap();
    let chunks: Vec<&str> = text
        .split("\n\n")
        .filter(|e| e.starts_with("data: {") && e.contains("\"content\":\""))
        .collect();
    assert!(!chunks.is_empty());
    let mut out = String::new();
    for chunk in chunks.iter().cycle().take(EVENTS - 1) {
        out.push_str(chunk);
        out.push_str(line_end);
        out.push_str(line_end);
    }
    out.push_str("data: [DONE]");
    out.push_str(line_end);
    out.push_str(line_end);
    out.into_bytes()
}

fn count_events(decoder: &mut SseDecoder, chunks: std::slice::Chunks<'_, u8>) -> (usize, usize) {
    let (mut events, mut bytes) = (0, 0);
    for chunk in chunks {
        decoder
            .feed(chunk, |e| {
                events += 1;
                bytes += black_box(e.data).len();
            })
            .unwrap();
    }
    (events, bytes)
}

fn decode(c: &mut Criterion) {
    let mut group = c.benchmark_group("sse_decode");
    for (name, line_end) in [("lf", "\n"), ("crlf", "\r\n")] {
        let input = stream(line_end);
        group.throughput(Throughput::Bytes(input.len() as u64));
        for (feeding, size) in [("whole", input.len()), ("4KiB", 4096)] {
            group.bench_with_input(
                BenchmarkId::new(format!("{name}/{feeding}"), input.len()),
                &input,
                |b, input| {
                    b.iter(|| {
                        let mut decoder = SseDecoder::new();
                        let (events, _) = count_events(&mut decoder, input.chunks(size));
                        assert_eq!(events, EVENTS);
                        assert!(!decoder.finish());
                    });
                },
            );
        }
    }
    group.finish();
}

fn encode(c: &mut Criterion) {
    let input = stream("\n");
    let events = SseDecoder::new().feed_collect(&input).unwrap();
    let mut group = c.benchmark_group("sse_encode");
    group.throughput(Throughput::Bytes(input.len() as u64));
    group.bench_function("chat_completions", |b| {
        let mut out = Vec::with_capacity(input.len() + 1024);
        b.iter(|| {
            out.clear();
            for e in &events {
                encode_event(&mut out, e.event.as_deref(), black_box(&e.data)).unwrap();
            }
            assert_eq!(out.len(), input.len());
        });
    });
    group.finish();
}

criterion_group!(benches, decode, encode);
criterion_main!(benches);
