//! The incremental JSON parser against `serde_json` (same accept/reject on a complete document, same
//! value when accepted) and against itself (any split gives the unsplit result, errors included, and
//! the partial value at each split point equals the unsplit parse of that prefix). Never panics.
#![no_main]

use ferroute_core::json::{parse, parse_partial, JsonErrorKind, JsonStream, JsonValue};
use libfuzzer_sys::fuzz_target;

const MAX_DEPTH: usize = 64;

/// `mine` equals `serde_json`'s value (objects: the last duplicate wins; floats within one ULP, since
/// serde_json's default float parser is not always correctly rounded, and ours is).
fn same(mine: &JsonValue, theirs: &serde_json::Value) -> bool {
    use serde_json::Value as V;
    let close = |a: f64, b: f64| a == b || (a - b).abs() <= 1e-14 * a.abs().max(b.abs());
    match (mine, theirs) {
        (JsonValue::Null, V::Null) => true,
        (JsonValue::Bool(a), V::Bool(b)) => a == b,
        // serde_json reads `-0` as the float -0.0; Python's json and jiter as the int 0, as we do.
        (JsonValue::Int(a), V::Number(n)) => n.as_i64() == Some(*a) || (*a == 0 && n.as_f64() == Some(0.0)),
        (JsonValue::BigInt(d), V::Number(n)) => match d.parse::<u64>() {
            Ok(u) => n.as_u64() == Some(u),
            Err(_) => n.as_f64().is_some_and(|f| close(d.parse().unwrap_or(f64::NAN), f)),
        },
        (JsonValue::Float(a), V::Number(n)) => n.as_f64().is_some_and(|b| close(*a, b)),
        (JsonValue::String(a), V::String(b)) => a == b,
        (JsonValue::Array(a), V::Array(b)) => a.len() == b.len() && a.iter().zip(b).all(|(x, y)| same(x, y)),
        (JsonValue::Object(a), V::Object(b)) => {
            let last: std::collections::BTreeMap<&String, &JsonValue> = a.iter().map(|(k, v)| (k, v)).collect();
            last.len() == b.len() && last.iter().all(|(k, v)| b.get(k.as_str()).is_some_and(|w| same(v, w)))
        }
        _ => false,
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&step, doc)) = data.split_first() else { return };
    let mine = parse(doc, MAX_DEPTH);
    let theirs = serde_json::from_slice::<serde_json::Value>(doc);
    match (&mine, &theirs) {
        (Ok(a), Ok(b)) => assert!(same(a, b), "{a:?} vs {b}"),
        (Err(_), Err(_)) => {}
        // Out-of-range floats: serde_json rejects them, we give ±infinity as Python's json and jiter.
        (Ok(_), Err(e)) if e.to_string().contains("number out of range") => {}
        // The depth bounds differ (serde_json: 128).
        (Err(e), Ok(_)) if matches!(e.kind, JsonErrorKind::TooDeep { .. }) => {}
        (Ok(_), Err(e)) if e.to_string().contains("recursion limit") => {}
        _ => panic!(
            "{:?}: ours {mine:?}, serde_json {theirs:?}",
            String::from_utf8_lossy(doc)
        ),
    }

    // Split into pieces of `step % 16 + 1` bytes.
    let size = usize::from(step % 16) + 1;
    let mut stream = JsonStream::with_max_depth(MAX_DEPTH);
    let mut at = 0;
    let mut split = Ok(());
    for piece in doc.chunks(size) {
        split = stream.feed(piece);
        at += piece.len();
        if split.is_err() {
            break;
        }
        assert_eq!(stream.value(), parse_partial(&doc[..at], MAX_DEPTH).unwrap());
    }
    let split = split.and_then(|()| stream.finish());
    match (&mine, split) {
        (Ok(v), Ok(())) => assert_eq!(stream.value().as_ref(), Some(v)),
        (Err(a), Err(b)) => assert_eq!(*a, b),
        (a, b) => panic!("unsplit {a:?}, split {b:?}"),
    }
});
