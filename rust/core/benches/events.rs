//! The checking Open Responses parser on a 10,000-event stream shaped like OpenAI's (a message with
//! ~10,000 `output_text` deltas of ~250 bytes each): `cargo bench --bench events`.
//! `decode+check` is SSE decoding plus the checker; `check` is the checker on pre-split events.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ferroute_core::events::parser::{ResponseChecker, ResponseEventParser};

const DELTAS: usize = 10_000;
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
const MSG: &str = "msg_065915db01d8635a016a3c125c524c81a39e48ac0ebbcb6b30";

fn events() -> Vec<String> {
    let response = |status: &str, output: &str| {
        format!(
            "{{\"id\":\"resp_065915db01d8635a016a3c125658a081a38159e7d307d23d65\",\"object\":\"response\",\
             \"created_at\":1782955818,\"status\":\"{status}\",\"model\":\"gpt-4o-2024-08-06\",\"output\":[{output}],\
             \"error\":null,\"usage\":null}}"
        )
    };
    let mut text = String::new();
    let mut events = vec![
        format!(
            "{{\"type\":\"response.created\",\"response\":{}",
            response("in_progress", "")
        ),
        format!(
            "{{\"type\":\"response.in_progress\",\"response\":{}",
            response("in_progress", "")
        ),
        format!(
            "{{\"type\":\"response.output_item.added\",\"output_index\":0,\"item\":{{\"id\":\"{MSG}\",\
             \"type\":\"message\",\"status\":\"in_progress\",\"content\":[],\"role\":\"assistant\"}}"
        ),
        format!(
            "{{\"type\":\"response.content_part.added\",\"item_id\":\"{MSG}\",\"output_index\":0,\"content_index\":0,\
             \"part\":{{\"type\":\"output_text\",\"annotations\":[],\"logprobs\":[],\"text\":\"\"}}"
        ),
    ];
    for i in 0..DELTAS {
        let word = WORDS[i % WORDS.len()];
        text.push_str(word);
        events.push(format!(
            "{{\"type\":\"response.output_text.delta\",\"content_index\":0,\"delta\":\"{word}\",\"item_id\":\"{MSG}\",\
             \"logprobs\":[],\"obfuscation\":\"bQHwqldZeg0\",\"output_index\":0"
        ));
    }
    let part = format!("{{\"type\":\"output_text\",\"annotations\":[],\"logprobs\":[],\"text\":\"{text}\"}}");
    let item = format!(
        "{{\"id\":\"{MSG}\",\"type\":\"message\",\"status\":\"completed\",\"content\":[{part}],\"role\":\"assistant\"}}"
    );
    events.push(format!(
        "{{\"type\":\"response.output_text.done\",\"content_index\":0,\"item_id\":\"{MSG}\",\"logprobs\":[],\
         \"output_index\":0,\"text\":\"{text}\""
    ));
    events.push(format!(
        "{{\"type\":\"response.content_part.done\",\"content_index\":0,\"item_id\":\"{MSG}\",\"output_index\":0,\
         \"part\":{part}"
    ));
    events.push(format!(
        "{{\"type\":\"response.output_item.done\",\"output_index\":0,\"item\":{item}"
    ));
    events.push(format!(
        "{{\"type\":\"response.completed\",\"response\":{}",
        response("completed", &item)
    ));
    events
        .into_iter()
        .enumerate()
        .map(|(n, event)| format!("{event},\"sequence_number\":{n}}}"))
        .collect()
}

fn stream(events: &[String]) -> Vec<u8> {
    let mut raw = Vec::new();
    for event in events {
        let kind = &event[9..event[9..].find('"').map_or(9, |end| end + 9)];
        raw.extend_from_slice(format!("event: {kind}\ndata: {event}\n\n").as_bytes());
    }
    raw.extend_from_slice(b"data: [DONE]\n\n");
    raw
}

fn bench(c: &mut Criterion) {
    let events = events();
    let raw = stream(&events);
    let mut group = c.benchmark_group("response_event_parser");
    group.throughput(Throughput::Elements(events.len() as u64));

    group.bench_function("decode+check", |b| {
        b.iter(|| {
            let mut parser = ResponseEventParser::new();
            let mut count = 0usize;
            parser.feed(&raw, |_| count += 1).expect("valid stream");
            parser.close().expect("complete stream");
            assert_eq!(count, events.len());
        });
    });

    group.bench_function("check", |b| {
        b.iter(|| {
            let mut checker = ResponseChecker::new();
            for event in &events {
                checker.check(None, event, 0).expect("valid event");
            }
            assert!(checker.is_terminated());
        });
    });

    group.bench_function("decode+check 4KiB reads", |b| {
        b.iter(|| {
            let mut parser = ResponseEventParser::new();
            let mut count = 0usize;
            for chunk in raw.chunks(4096) {
                parser.feed(chunk, |_| count += 1).expect("valid stream");
            }
            parser.close().expect("complete stream");
            assert_eq!(count, events.len());
        });
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
