//! Streamed function-call arguments: 20 KB of JSON in 2,000 fragments through the incremental parser (and, for
//! `whole_parse_only`, in one piece: a document the caller already has whole).
//! `cargo bench --bench json`.

use std::fmt::Write as _;
use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ferroute_core::json::{JsonBuilder, JsonParser, JsonStream, Scalar, DEFAULT_MAX_DEPTH};

const SIZE: usize = 20_000;
const FRAGMENTS: usize = 2_000;

/// Tool-call arguments with structure: an array of small objects (keys, strings with escapes and
/// non-ASCII, numbers, nested arrays).
fn records() -> String {
    let mut doc = String::from(r#"{"table": "items", "rows": ["#);
    let mut n = 0;
    while doc.len() < SIZE {
        if n > 0 {
            doc.push_str(", ");
        }
        write!(
            doc,
            r#"{{"id": {n}, "name": "item {n} \"q\" ✓", "score": {}.{}, "active": {}, "tags": ["a", "bb"], "note": null}}"#,
            n * 7 % 100,
            n % 1000,
            n % 3 == 0
        )
        .unwrap();
        n += 1;
    }
    doc.push_str("]}");
    doc
}

/// Arguments that are mostly one long string (a `write_file` call).
fn text() -> String {
    let line = r#"def f(x):\n    return \"value\\t%d\" % x  # ünïcode ✓\n"#;
    format!(
        r#"{{"path": "src/module.py", "content": "{}", "overwrite": true}}"#,
        line.repeat(SIZE / line.len())
    )
}

fn fragments(doc: &[u8]) -> Vec<&[u8]> {
    doc.chunks(doc.len().div_ceil(FRAGMENTS)).collect()
}

/// Counts what the parser reports: the parse alone, without building a tree.
#[derive(Default)]
struct Count(usize);

impl JsonBuilder for Count {
    fn start_array(&mut self) {
        self.0 += 1;
    }
    fn start_object(&mut self) {
        self.0 += 1;
    }
    fn key(&mut self, key: &str) {
        self.0 += black_box(key).len();
    }
    fn scalar(&mut self, value: Scalar<'_>) {
        black_box(value);
        self.0 += 1;
    }
    fn end(&mut self) {}
}

fn bench(c: &mut Criterion) {
    for (name, doc) in [("records", records()), ("text", text())] {
        let pieces = fragments(doc.as_bytes());
        let mut group = c.benchmark_group(format!("json_stream_{name}_20KB_2000"));
        group.throughput(Throughput::Bytes(doc.len() as u64));
        group.bench_function("parse_only", |b| {
            b.iter(|| {
                let mut parser = JsonParser::new(DEFAULT_MAX_DEPTH);
                let mut count = Count::default();
                for piece in &pieces {
                    parser.feed(piece, &mut count).unwrap();
                }
                assert!(parser.is_complete());
                count.0
            });
        });
        group.bench_function("whole_parse_only", |b| {
            b.iter(|| {
                let mut parser = JsonParser::new(DEFAULT_MAX_DEPTH);
                let mut count = Count::default();
                parser.feed(doc.as_bytes(), &mut count).unwrap();
                assert!(parser.is_complete());
                count.0
            });
        });
        group.bench_function("tree", |b| {
            b.iter(|| {
                let mut stream = JsonStream::new();
                for piece in &pieces {
                    stream.feed(piece).unwrap();
                    black_box(stream.is_complete());
                }
                stream.value()
            });
        });
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
