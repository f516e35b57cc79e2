// Exact float comparisons are the point: the parser must round exactly like std / Python.
#![allow(clippy::float_cmp)]

use std::fmt::Write as _;

use proptest::prelude::*;

use super::*;

fn j(s: &str) -> JsonValue {
    parse(s.as_bytes(), DEFAULT_MAX_DEPTH).unwrap_or_else(|e| panic!("{s:?}: {e}"))
}

fn err(s: &[u8]) -> JsonError {
    let mut st = JsonStream::new();
    match st.feed(s).and_then(|()| st.finish()) {
        Ok(()) => panic!("{s:?} parsed"),
        Err(e) => e,
    }
}

fn partial(s: &str) -> Option<JsonValue> {
    parse_partial(s.as_bytes(), DEFAULT_MAX_DEPTH).unwrap_or_else(|e| panic!("{s:?}: {e}"))
}

fn s(v: &str) -> JsonValue {
    JsonValue::String(v.to_owned())
}

fn arr(v: Vec<JsonValue>) -> JsonValue {
    JsonValue::Array(v)
}

fn obj(v: Vec<(&str, JsonValue)>) -> JsonValue {
    JsonValue::Object(v.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
}

use JsonValue::{BigInt, Bool, Float, Int, Null};

#[test]
fn scalars() {
    assert_eq!(j("null"), Null);
    assert_eq!(j("true"), Bool(true));
    assert_eq!(j(" false "), Bool(false));
    assert_eq!(j("0"), Int(0));
    assert_eq!(j("-0"), Int(0));
    assert_eq!(j("42"), Int(42));
    assert_eq!(j("-9223372036854775808"), Int(i64::MIN));
    assert_eq!(j("9223372036854775807"), Int(i64::MAX));
    assert_eq!(j("9223372036854775808"), BigInt("9223372036854775808".into()));
    assert_eq!(
        j("-123456789012345678901234567890"),
        BigInt("-123456789012345678901234567890".into())
    );
    assert_eq!(j("1.5"), Float(1.5));
    assert_eq!(j("1.0"), Float(1.0));
    assert_eq!(j("1e2"), Float(100.0));
    assert_eq!(j("1E+2"), Float(100.0));
    assert_eq!(j("25e-1"), Float(2.5));
    assert_eq!(j("0.1e-400"), Float(0.0));
    assert_eq!(j("1e400"), Float(f64::INFINITY));
    let JsonValue::Float(z) = j("-0.0") else { panic!() };
    assert!(z == 0.0 && z.is_sign_negative());
    assert_eq!(j("0.30000000000000004"), Float(0.300_000_000_000_000_04));
}

#[test]
fn strings_and_escapes() {
    assert_eq!(j(r#""""#), s(""));
    assert_eq!(j(r#""héllo ✓ 😀""#), s("héllo ✓ 😀"));
    assert_eq!(j(r#""\"\\\/\b\f\n\r\t""#), s("\"\\/\u{8}\u{c}\n\r\t"));
    assert_eq!(j(r#""\u0041\u00e9\u2713""#), s("Aé✓"));
    assert_eq!(j(r#""\uD83D\uDE00x""#), s("😀x"));
    assert_eq!(j(r#""\ud83d\ude00""#), s("😀"));
    assert_eq!(j("\"\x7f\""), s("\x7f"));
    // Lone surrogates are errors (as jiter and serde_json): a JSON string must be Unicode text.
    assert_eq!(
        err(br#""\ude00""#),
        JsonError {
            offset: 6,
            kind: JsonErrorKind::LoneSurrogate
        }
    );
    assert_eq!(
        err(br#""\ud83d""#),
        JsonError {
            offset: 7,
            kind: JsonErrorKind::LoneSurrogate
        }
    );
    assert_eq!(
        err(br#""\ud83dx""#),
        JsonError {
            offset: 7,
            kind: JsonErrorKind::LoneSurrogate
        }
    );
    assert_eq!(
        err(br#""\ud83d\n""#),
        JsonError {
            offset: 8,
            kind: JsonErrorKind::LoneSurrogate
        }
    );
    assert_eq!(
        err(br#""\ud83d\u0041""#),
        JsonError {
            offset: 12,
            kind: JsonErrorKind::LoneSurrogate
        }
    );
    assert_eq!(
        err(br#""\x""#),
        JsonError {
            offset: 2,
            kind: JsonErrorKind::InvalidEscape
        }
    );
    assert_eq!(
        err(br#""\u12g4""#),
        JsonError {
            offset: 5,
            kind: JsonErrorKind::InvalidEscape
        }
    );
    assert_eq!(
        err(b"\"a\tb\""),
        JsonError {
            offset: 2,
            kind: JsonErrorKind::ControlCharacter
        }
    );
    assert_eq!(
        err(b"\"a\xffb\""),
        JsonError {
            offset: 2,
            kind: JsonErrorKind::InvalidUtf8
        }
    );
    assert_eq!(
        err(b"\"\xc3(\""),
        JsonError {
            offset: 1,
            kind: JsonErrorKind::InvalidUtf8
        }
    );
    assert_eq!(
        err(b"[\"ok\", \"\xe2\x82\"]"),
        JsonError {
            offset: 8,
            kind: JsonErrorKind::InvalidUtf8
        }
    );
}

#[test]
fn utf8_split_across_feeds() {
    let doc = "[\"a😀é✓\", {\"ké\": \"😀\"}]".as_bytes();
    for cut in 0..=doc.len() {
        let mut st = JsonStream::new();
        st.feed(&doc[..cut]).unwrap();
        st.feed(&doc[cut..]).unwrap();
        st.finish().unwrap();
        assert_eq!(st.value(), Some(arr(vec![s("a😀é✓"), obj(vec![("ké", s("😀"))])])));
    }
    // A bad continuation byte in the next chunk, reported where the broken character starts.
    let mut st = JsonStream::new();
    st.feed(b"\"ab\xe2\x82").unwrap();
    assert_eq!(st.value(), Some(s("ab")));
    assert_eq!(
        st.feed(b"(\"").unwrap_err(),
        JsonError {
            offset: 3,
            kind: JsonErrorKind::InvalidUtf8
        }
    );
    // A character cut by a closing quote.
    let mut st = JsonStream::new();
    st.feed(b"\"ab\xe2").unwrap();
    assert_eq!(
        st.feed(b"\"").unwrap_err(),
        JsonError {
            offset: 3,
            kind: JsonErrorKind::InvalidUtf8
        }
    );
}

#[test]
fn containers_and_whitespace() {
    assert_eq!(j(" \t\r\n[ ] "), arr(vec![]));
    assert_eq!(j("{}"), obj(vec![]));
    assert_eq!(
        j("{ \"a\" : [1, {\"b\": null}, [ ] ], \"c\":\"d\" }\n"),
        obj(vec![
            ("a", arr(vec![Int(1), obj(vec![("b", Null)]), arr(vec![])])),
            ("c", s("d"))
        ])
    );
    assert_eq!(j(r#"{"a":1,"a":2}"#), obj(vec![("a", Int(1)), ("a", Int(2))]));
}

#[test]
fn errors_name_the_offset() {
    use JsonErrorKind as K;
    let cases: &[(&[u8], u64, JsonErrorKind)] = &[
        (b"", 0, K::UnexpectedEof),
        (b"   ", 3, K::UnexpectedEof),
        (b"[1,]", 3, K::TrailingComma),
        (b"{\"a\":1,}", 7, K::TrailingComma),
        (b"{\"a\" 1}", 5, K::ExpectedColon),
        (b"{1:2}", 1, K::ExpectedKey),
        (b"{\"a\":1 \"b\"", 7, K::ExpectedCommaOrBrace),
        (b"[1 2]", 3, K::ExpectedCommaOrBracket),
        (b"01", 1, K::InvalidNumber),
        (b"[-]", 2, K::InvalidNumber),
        (b"[1.]", 3, K::InvalidNumber),
        (b"[1e+]", 4, K::InvalidNumber),
        (b"1.", 2, K::UnexpectedEof),
        (b"-", 1, K::UnexpectedEof),
        (b"[nul]", 4, K::InvalidLiteral),
        (b"tru", 3, K::UnexpectedEof),
        (b"nulll", 4, K::TrailingCharacters),
        (b"[1] x", 4, K::TrailingCharacters),
        (b"1 2", 2, K::TrailingCharacters),
        (b"{\"a\": 1}}", 8, K::TrailingCharacters),
        (b"NaN", 0, K::ExpectedValue),
        (b"[Infinity]", 1, K::ExpectedValue),
        (b"\xef\xbb\xbf[1]", 0, K::ExpectedValue),
        (b"[1", 2, K::UnexpectedEof),
        (b"{\"a", 3, K::UnexpectedEof),
    ];
    for (doc, offset, kind) in cases {
        let e = err(doc);
        assert_eq!(
            (e.offset, &e.kind),
            (*offset, kind),
            "{:?}",
            String::from_utf8_lossy(doc)
        );
    }
    assert_eq!(err(b"[1,]").to_string(), "trailing comma at byte 3");
    assert_eq!(
        err(b"{\"a\" 1}").to_string(),
        "expected `:` after an object key at byte 5"
    );
}

#[test]
fn errors_are_sticky() {
    let mut st = JsonStream::new();
    let e = st.feed(b"[1,,").unwrap_err();
    assert_eq!(e.offset, 3);
    assert_eq!(st.feed(b"2]").unwrap_err(), e);
    assert_eq!(st.finish().unwrap_err(), e);
}

#[test]
fn depth_limit() {
    assert!(parse(b"[[[]]]", 3).is_ok());
    assert_eq!(
        parse(b"[[[[]]]]", 3).unwrap_err(),
        JsonError {
            offset: 3,
            kind: JsonErrorKind::TooDeep { max_depth: 3 }
        }
    );
    assert_eq!(parse(b"{\"a\":{\"b\":[1]}}", 2).unwrap_err().offset, 10);
    let deep = vec![b'['; 100_000];
    assert_eq!(parse_partial(&deep, DEFAULT_MAX_DEPTH).unwrap_err().offset, 256);
    let deep: String = "[".repeat(256) + &"]".repeat(256);
    assert!(parse(deep.as_bytes(), DEFAULT_MAX_DEPTH).is_ok());
    assert!(parse(b"1", 0).is_ok());
    assert!(parse(b"[]", 0).is_err());
}

#[test]
fn complete_only_once_the_value_is_known() {
    let mut st = JsonStream::new();
    st.feed(b"12").unwrap();
    assert!(!st.is_complete());
    assert_eq!(st.value(), Some(Int(12)));
    st.feed(b"3").unwrap();
    assert_eq!(st.value(), Some(Int(123)));
    st.feed(b" ").unwrap();
    assert!(st.is_complete());
    let mut st = JsonStream::new();
    st.feed(b"[1]").unwrap();
    assert!(st.is_complete());
    let mut st = JsonStream::new();
    st.feed(b"-1.5e3").unwrap();
    st.finish().unwrap();
    assert!(st.is_complete());
    assert_eq!(st.value(), Some(Float(-1500.0)));
}

/// The partial values jiter's `trailing-strings` mode gives (checked against jiter 0.19).
#[test]
fn partial_values_match_jiter() {
    let e = || Some(obj(vec![]));
    let cases: Vec<(&str, Option<JsonValue>)> = vec![
        ("", None),
        (" ", None),
        ("t", None),
        ("tr", None),
        ("fals", None),
        ("-", None),
        ("1.", None),
        ("1e", None),
        ("1e+", None),
        ("1", Some(Int(1))),
        ("-1", Some(Int(-1))),
        ("-0", Some(Int(0))),
        ("1.5", Some(Float(1.5))),
        ("1e5", Some(Float(100_000.0))),
        ("[", Some(arr(vec![]))),
        ("[1, 2", Some(arr(vec![Int(1), Int(2)]))),
        ("[1, 2,", Some(arr(vec![Int(1), Int(2)]))),
        ("[1, 2, ", Some(arr(vec![Int(1), Int(2)]))),
        ("[1, 2, t", Some(arr(vec![Int(1), Int(2)]))),
        ("[1.", Some(arr(vec![]))),
        ("[1e", Some(arr(vec![]))),
        ("[-", Some(arr(vec![]))),
        ("[-0", Some(arr(vec![Int(0)]))),
        ("{", e()),
        ("{\"", e()),
        ("{\"ab", e()),
        ("{\"a\"", e()),
        ("{\"a\":", e()),
        ("{\"a\": ", e()),
        ("{\"a\": tr", e()),
        ("{\"a\": nul", e()),
        ("{\"a\": -", e()),
        ("{\"a\": 1.", e()),
        ("{\"a\": 1.5e", e()),
        ("{\"a\": 1", Some(obj(vec![("a", Int(1))]))),
        ("{\"a\": 12", Some(obj(vec![("a", Int(12))]))),
        ("{\"a\": 1,", Some(obj(vec![("a", Int(1))]))),
        ("{\"a\": 1, \"b", Some(obj(vec![("a", Int(1))]))),
        ("{\"a\": \"b", Some(obj(vec![("a", s("b"))]))),
        ("{\"a\": \"x\\", Some(obj(vec![("a", s("x"))]))),
        ("{\"a\": \"\\u00e9", Some(obj(vec![("a", s("é"))]))),
        ("{\"a\": {\"b\": \"c", Some(obj(vec![("a", obj(vec![("b", s("c"))]))]))),
        ("{\"a\": [1, 2", Some(obj(vec![("a", arr(vec![Int(1), Int(2)]))]))),
        ("[1, {\"b\":", Some(arr(vec![Int(1), obj(vec![])]))),
        ("[[", Some(arr(vec![arr(vec![])]))),
        ("[{\"a", Some(arr(vec![obj(vec![])]))),
        ("\"", Some(s(""))),
        ("\"ab", Some(s("ab"))),
        ("\"\\", Some(s(""))),
        ("\"a\\u", Some(s("a"))),
        ("\"a\\u1", Some(s("a"))),
        ("\"\\u123", Some(s(""))),
        ("\"\\u1234", Some(s("\u{1234}"))),
        ("\"a\\n", Some(s("a\n"))),
        ("\"\\ud83d", Some(s(""))),
        ("\"\\ud83d\\", Some(s(""))),
        ("\"\\ud83d\\ude", Some(s(""))),
        ("\"\\ud83d\\ude00", Some(s("😀"))),
        ("[1, 2] ", Some(arr(vec![Int(1), Int(2)]))),
        (
            "123456789012345678901234567890",
            Some(BigInt("123456789012345678901234567890".into())),
        ),
    ];
    for (doc, want) in cases {
        assert_eq!(partial(doc), want, "{doc:?}");
    }
    assert_eq!(parse_partial(b"\"\xe2\x82", 8).unwrap(), Some(s("")));
    assert_eq!(parse_partial(b"\"a\xe2", 8).unwrap(), Some(s("a")));
}

// --- property tests ----------------------------------------------------------------------------

fn leaf() -> impl Strategy<Value = JsonValue> {
    prop_oneof![
        Just(Null),
        any::<bool>().prop_map(Bool),
        any::<i64>().prop_map(Int),
        "-?[1-9][0-9]{19,40}".prop_map(BigInt),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Float),
        (-1e6f64..1e6).prop_map(Float),
        any::<String>().prop_map(JsonValue::String),
        "[a-z\"\\\\\n\u{e9}\u{1F600}]{0,12}".prop_map(JsonValue::String),
    ]
}

fn value() -> impl Strategy<Value = JsonValue> {
    leaf().prop_recursive(5, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(JsonValue::Array),
            prop::collection::vec(("[a-z\u{e9}\"]{0,6}", inner), 0..6).prop_map(JsonValue::Object),
        ]
    })
}

/// Serialises `v`; `ascii` writes every non-ASCII character as `\u` escapes (surrogate pairs
/// included), `ws` puts whitespace around every token.
fn write(v: &JsonValue, ascii: bool, ws: &str, out: &mut String) {
    match v {
        Null => out.push_str("null"),
        Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Int(i) => out.push_str(&i.to_string()),
        BigInt(d) => out.push_str(d),
        Float(f) => write!(out, "{f:?}").unwrap(),
        JsonValue::String(s) => write_str(s, ascii, out),
        JsonValue::Array(a) => {
            out.push('[');
            for (n, x) in a.iter().enumerate() {
                if n > 0 {
                    out.push(',');
                }
                out.push_str(ws);
                write(x, ascii, ws, out);
                out.push_str(ws);
            }
            out.push(']');
        }
        JsonValue::Object(o) => {
            out.push('{');
            for (n, (k, x)) in o.iter().enumerate() {
                if n > 0 {
                    out.push(',');
                }
                out.push_str(ws);
                write_str(k, ascii, out);
                out.push_str(ws);
                out.push(':');
                out.push_str(ws);
                write(x, ascii, ws, out);
            }
            out.push_str(ws);
            out.push('}');
        }
    }
}

fn write_str(s: &str, ascii: bool, out: &mut String) {
    if !ascii {
        out.push_str(&serde_json::to_string(s).unwrap());
        return;
    }
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            ' '..='~' => out.push(c),
            _ => {
                let mut units = [0u16; 2];
                for u in c.encode_utf16(&mut units) {
                    write!(out, "\\u{u:04X}").unwrap();
                }
            }
        }
    }
    out.push('"');
}

/// `mine` equals `serde_json`'s parse (objects: last duplicate wins; floats within serde's rounding).
fn same(mine: &JsonValue, theirs: &serde_json::Value) -> bool {
    use serde_json::Value as V;
    match (mine, theirs) {
        (Null, V::Null) => true,
        (Bool(a), V::Bool(b)) => a == b,
        // `serde_json` reads `-0` as the float -0.0; Python's json and jiter as the int 0, as we do.
        (Int(a), V::Number(n)) => n.as_i64() == Some(*a) || (*a == 0 && n.as_f64() == Some(0.0)),
        (BigInt(d), V::Number(n)) => d.parse::<u64>().ok().map_or_else(
            || close(d.parse().unwrap(), n.as_f64().unwrap()),
            |u| n.as_u64() == Some(u),
        ),
        (Float(a), V::Number(n)) => n.as_f64().is_some_and(|b| close(*a, b)),
        (JsonValue::String(a), V::String(b)) => a == b,
        (JsonValue::Array(a), V::Array(b)) => a.len() == b.len() && a.iter().zip(b).all(|(x, y)| same(x, y)),
        (JsonValue::Object(a), V::Object(b)) => {
            let mut last = std::collections::BTreeMap::new();
            for (k, v) in a {
                last.insert(k, v);
            }
            last.len() == b.len() && last.iter().all(|(k, v)| b.get(k.as_str()).is_some_and(|w| same(v, w)))
        }
        _ => false,
    }
}

/// `serde_json`'s default float parser (without `float_roundtrip`) can be a few ULP off; ours is
/// std's, correctly rounded (exactness is checked against the written value instead).
fn close(a: f64, b: f64) -> bool {
    a == b || (a - b).abs() <= 1e-14 * a.abs().max(b.abs())
}

fn feed_split(doc: &[u8], cuts: &[usize]) -> (JsonStream, Vec<(usize, Option<JsonValue>)>) {
    let mut st = JsonStream::new();
    let mut seen = Vec::new();
    let mut at = 0;
    for &c in cuts.iter().chain(std::iter::once(&doc.len())) {
        let c = c.clamp(at, doc.len());
        st.feed(&doc[at..c]).unwrap();
        at = c;
        seen.push((c, st.value()));
    }
    (st, seen)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn any_split_gives_the_unsplit_value(
        v in value(), ascii in any::<bool>(), ws in prop::sample::select(vec!["", " ", "\n\t "]),
        mut cuts in prop::collection::vec(0usize..4000, 0..12),
    ) {
        let mut text = String::new();
        write(&v, ascii, ws, &mut text);
        let doc = text.as_bytes();
        let reference: serde_json::Value = serde_json::from_str(&text).unwrap();
        let whole = parse(doc, DEFAULT_MAX_DEPTH).unwrap();
        prop_assert!(same(&whole, &reference), "{text}: {whole:?} vs {reference}");
        // Exactly the value written (std's float parsing round-trips Rust's shortest float text).
        prop_assert_eq!(&whole, &v);
        for c in &mut cuts {
            *c %= doc.len() + 1;
        }
        cuts.sort_unstable();
        let (mut st, seen) = feed_split(doc, &cuts);
        st.finish().unwrap();
        prop_assert_eq!(st.value(), Some(whole));
        for (at, got) in seen {
            prop_assert_eq!(got, parse_partial(&doc[..at], DEFAULT_MAX_DEPTH).unwrap(), "prefix {:?}", &text[..]);
        }
    }

    #[test]
    fn one_byte_at_a_time_matches_every_prefix(v in value(), ascii in any::<bool>()) {
        let mut text = String::new();
        write(&v, ascii, " ", &mut text);
        let doc = text.as_bytes();
        let mut st = JsonStream::new();
        for i in 0..doc.len() {
            st.feed(&doc[i..=i]).unwrap();
            prop_assert_eq!(st.value(), parse_partial(&doc[..=i], DEFAULT_MAX_DEPTH).unwrap());
        }
        st.finish().unwrap();
        prop_assert_eq!(st.value(), Some(v));
    }

    #[test]
    fn arbitrary_bytes_agree_with_serde_and_never_panic(
        doc in prop::collection::vec(prop::sample::select(b"[]{}\":,0123456789-+.eEtrufalsn \\u\xc3\xa9".to_vec()), 0..40),
        cut in 0usize..40,
    ) {
        let mine = parse(&doc, 100);
        let theirs = serde_json::from_slice::<serde_json::Value>(&doc);
        match (&mine, &theirs) {
            (Ok(a), Ok(b)) => prop_assert!(same(a, b), "{:?}", String::from_utf8_lossy(&doc)),
            (Err(_), Err(_)) => {}
            // serde_json rejects out-of-range floats (`1e400`); we give infinity like Python's json.
            (Ok(_), Err(e)) if e.to_string().contains("number out of range") => {}
            _ => prop_assert!(false, "{:?}: {mine:?} vs {theirs:?}", String::from_utf8_lossy(&doc)),
        }
        // Split invariance, errors included (same error, same offset).
        let cut = cut.min(doc.len());
        let mut st = JsonStream::with_max_depth(100);
        let split = st.feed(&doc[..cut]).and_then(|()| st.feed(&doc[cut..])).and_then(|()| st.finish());
        match (&mine, split) {
            (Ok(v), Ok(())) => prop_assert_eq!(st.value(), Some(v.clone())),
            (Err(a), Err(b)) => prop_assert_eq!(a, &b),
            (a, b) => prop_assert!(false, "{a:?} vs {b:?}"),
        }
    }
}

/// The whole document through the token scanner, as a tree (what its builders see).
fn scan_tree(text: &str) -> Result<JsonValue, ScanError> {
    fn value(sc: &mut Scanner<'_>, first: u8, tape: &mut String) -> Result<JsonValue, ScanError> {
        Ok(match first {
            b'[' => {
                let mut items = Vec::new();
                let mut next = sc.array_first()?;
                while let Some(c) = next {
                    items.push(value(sc, c, tape)?);
                    next = sc.array_step()?;
                }
                JsonValue::Array(items)
            }
            b'{' => {
                let mut members = Vec::new();
                let mut more = sc.object_first()?;
                while more {
                    let key = sc.string::<true>(tape)?.as_str().to_owned();
                    sc.colon()?;
                    let c = sc.value_start()?;
                    members.push((key, value(sc, c, tape)?));
                    more = sc.object_step()?;
                }
                JsonValue::Object(members)
            }
            b'"' => JsonValue::String(sc.string::<true>(tape)?.as_str().to_owned()),
            b't' => sc.literal(b"true").map(|()| JsonValue::Bool(true))?,
            b'f' => sc.literal(b"false").map(|()| JsonValue::Bool(false))?,
            b'n' => sc.literal(b"null").map(|()| JsonValue::Null)?,
            b'-' | b'0'..=b'9' => sc.number()?.scalar().into(),
            _ => {
                return Err(ScanError {
                    index: sc.index(),
                    kind: ScanErrorKind::ExpectedValue,
                })
            }
        })
    }
    let mut sc = Scanner::new(text, DEFAULT_MAX_DEPTH);
    let first = sc.value_start()?;
    let v = value(&mut sc, first, &mut String::new())?;
    sc.end()?;
    Ok(v)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// The scanner (whole texts) and the incremental parser (pieces) are two readers of one grammar:
    /// the same value for every document, the same verdict (and error kind) for every broken one.
    #[test]
    fn the_scanner_agrees_with_the_incremental_parser(
        v in value(), ascii in any::<bool>(), ws in prop::sample::select(vec!["", " ", "\n\t "]),
        edits in prop::collection::vec((0usize..4000, prop::sample::select(vec![
            "", "\"", "\\", ",", ":", "[", "]", "{", "}", "-", "0", "1", ".", "e", "t", "n", "\\u", "\\ud800", "\t", " ",
        ])), 0..3),
    ) {
        let mut text = String::new();
        write(&v, ascii, ws, &mut text);
        prop_assert_eq!(scan_tree(&text), Ok(v));
        for (at, with) in edits {
            let mut at = at % (text.len() + 1);
            while !text.is_char_boundary(at) {
                at -= 1;
            }
            let end = text[at..].chars().next().map_or(at, |c| at + c.len_utf8());
            text.replace_range(at..end, with);
        }
        let scanned = scan_tree(&text);
        let parsed = parse(text.as_bytes(), DEFAULT_MAX_DEPTH);
        match (&scanned, &parsed) {
            (Ok(a), Ok(b)) => prop_assert_eq!(a, b, "{}", text),
            (Err(a), Err(b)) => {
                // Where a bare `-`/`1.` ends the text the incremental parser can only say "more was
                // expected"; otherwise both name the same mistake.
                let kind = a.kind.to_json_kind(DEFAULT_MAX_DEPTH);
                prop_assert!(
                    kind == b.kind || b.kind == JsonErrorKind::UnexpectedEof || kind == JsonErrorKind::UnexpectedEof
                        || matches!((a.kind, &b.kind), (ScanErrorKind::ExpectedValue, JsonErrorKind::TrailingComma | JsonErrorKind::InvalidLiteral))
                        || matches!((a.kind, &b.kind), (ScanErrorKind::ExpectedKey, JsonErrorKind::TrailingComma)),
                    "{}: scanner {:?}, parser {:?}", text, a, b
                );
            }
            _ => prop_assert!(false, "{}: scanner {:?}, parser {:?}", text, scanned, parsed),
        }
    }
}
