//! The reader against serde (the derived `Chunk`, which is what streams were read with before):
//! the same chunks accepted, the same chunks rejected, the same field values.

use proptest::prelude::*;

use super::super::{Chunk, Delta, UpstreamErrorBody};
use super::{ChunkReader, DeltaView, Str};
use crate::events::writer::{ErrorInfo, Usage};

/// What the translator can see of a chunk, from either reader.
#[derive(Debug, PartialEq)]
struct Seen {
    choices: Option<Vec<SeenChoice>>,
    usage: Option<Usage>,
    error: Option<ErrorInfo>,
}

#[derive(Debug, PartialEq)]
struct SeenChoice {
    index: Option<u64>,
    delta: Option<SeenDelta>,
    message: Option<SeenDelta>,
    finish_reason: Option<String>,
    logprobs: Option<String>,
}

#[derive(Debug, PartialEq)]
struct SeenDelta {
    content: Option<String>,
    reasoning_content: Option<String>,
    reasoning: Option<String>,
    refusal: Option<String>,
    tool_calls: Option<Vec<SeenCall>>,
}

#[derive(Debug, PartialEq)]
struct SeenCall {
    index: Option<u64>,
    id: Option<String>,
    function: Option<(Option<String>, Option<String>)>,
}

fn seen_by_serde(chunk: &Chunk<'_>) -> Seen {
    let delta = |d: &Delta<'_>| SeenDelta {
        content: d.content.as_deref().map(str::to_owned),
        reasoning_content: d.reasoning_content.as_deref().map(str::to_owned),
        reasoning: d.reasoning.as_deref().map(str::to_owned),
        refusal: d.refusal.as_deref().map(str::to_owned),
        tool_calls: d.tool_calls.as_ref().map(|calls| {
            calls
                .iter()
                .map(|c| SeenCall {
                    index: c.index,
                    id: c.id.as_deref().map(str::to_owned),
                    function: c.function.as_ref().map(|f| {
                        (
                            f.name.as_deref().map(str::to_owned),
                            f.arguments.as_deref().map(str::to_owned),
                        )
                    }),
                })
                .collect()
        }),
    };
    Seen {
        choices: chunk.choices.as_ref().map(|choices| {
            choices
                .iter()
                .map(|c| SeenChoice {
                    index: c.index,
                    delta: c.delta.as_ref().map(delta),
                    message: c.message.as_ref().map(delta),
                    finish_reason: c.finish_reason.as_deref().map(str::to_owned),
                    logprobs: c.logprobs.map(|raw| raw.get().to_owned()),
                })
                .collect()
        }),
        usage: chunk.usage.as_ref().map(super::super::UsageIn::to_usage),
        error: chunk.error.as_ref().map(UpstreamErrorBody::to_error),
    }
}

fn seen_by_reader(r: &ChunkReader, data: &str) -> Seen {
    let text = |s: Option<Str>| s.map(|s| r.str(data, s).to_owned());
    let delta = |d: &DeltaView| SeenDelta {
        content: text(d.content),
        reasoning_content: text(d.reasoning_content),
        reasoning: text(d.reasoning),
        refusal: text(d.refusal),
        tool_calls: d.tool_calls.map(|(from, to)| {
            r.calls[from as usize..to as usize]
                .iter()
                .map(|c| SeenCall {
                    index: c.index,
                    id: text(c.id),
                    function: c.has_function.then(|| (text(c.name), text(c.arguments))),
                })
                .collect()
        }),
    };
    Seen {
        choices: r.choices.as_ref().map(|choices| {
            choices
                .iter()
                .map(|c| SeenChoice {
                    index: c.index,
                    delta: c.delta.as_ref().map(delta),
                    message: c.message.as_ref().map(delta),
                    finish_reason: text(c.finish_reason),
                    logprobs: c
                        .logprobs
                        .map(|(start, end)| data[start as usize..end as usize].to_owned()),
                })
                .collect()
        }),
        usage: r.usage.as_ref().map(super::super::UsageIn::to_usage),
        error: r.error.map(|(start, end)| {
            serde_json::from_str::<UpstreamErrorBody<'_>>(&data[start..end])
                .expect("the reader checked it")
                .to_error()
        }),
    }
}

/// A reader that has read other chunks before (buffers not empty, not freshly allocated).
fn used_reader() -> ChunkReader {
    let mut r = ChunkReader::default();
    let warm = r#"{"choices":[{"index":0,"delta":{"content":"caf\u00e9","tool_calls":[{"index":0,"id":"c","function":{"name":"f","arguments":"{\"a\":1}"}}]},"finish_reason":"stop"}],"usage":{"prompt_tokens":1},"x":[[{}]]}"#;
    r.read(warm).unwrap();
    r
}

/// The reader and serde agree on `data`: both accept with the same fields, or both reject.
fn agree(data: &str) -> Result<(), TestCaseError> {
    let serde = serde_json::from_str::<Chunk<'_>>(data);
    let mut r = used_reader();
    let ours = r.read(data);
    prop_assert_eq!(
        ours.is_ok(),
        serde.is_ok(),
        "input {:?}: reader {:?}, serde {:?}",
        data,
        ours,
        serde.as_ref().err().map(ToString::to_string)
    );
    if let Ok(chunk) = serde {
        prop_assert_eq!(seen_by_reader(&r, data), seen_by_serde(&chunk), "input {:?}", data);
    }
    Ok(())
}

#[track_caller]
fn assert_agree(data: &str) {
    if let Err(e) = agree(data) {
        panic!("{e}");
    }
}

#[track_caller]
fn accepted(data: &str) -> bool {
    assert_agree(data);
    ChunkReader::default().read(data).is_ok()
}

// --- edges ---------------------------------------------------------------------------------------

#[test]
fn a_plain_chunk() {
    let data = r#"{"id":"x","choices":[{"index":0,"delta":{"role":"assistant","content":"Hi"},"logprobs":null,"finish_reason":null}],"usage":null}"#;
    assert!(accepted(data));
    let mut r = ChunkReader::default();
    r.read(data).unwrap();
    let choice = r.choices.as_ref().unwrap()[0];
    assert_eq!(r.str(data, choice.delta.unwrap().content.unwrap()), "Hi");
    assert!(
        !choice.delta.unwrap().content.unwrap().decoded,
        "a string without escapes is borrowed"
    );
}

#[test]
fn structs_may_be_arrays_of_their_fields() {
    // serde's derived `visit_seq`: fields in declaration order, missing ones default, extras fail.
    assert!(accepted("[]"));
    assert!(accepted("[null]"));
    assert!(accepted("[null,null,null]"));
    assert!(!accepted("[null,null,null,null]"));
    assert!(!accepted("[null,]"));
    assert!(!accepted("[,null]"));
    assert!(accepted(r#"{"choices":[[0,{"content":"hi"},null,"stop"]]}"#));
    assert!(accepted(
        r#"{"choices":[[0,["hi",null,"r",null,[[1,"id",["f","{}"]]]]]]}"#
    ));
    assert!(accepted(r#"{"choices":[[0,null,null,null,{"content":[]}]]}"#)); // (`logprobs`: any value)
    assert!(!accepted(r#"{"choices":[[0,null,null,null,5,null]]}"#));
    assert!(accepted(r#"[[], {"prompt_tokens": 3}, "oops"]"#));
}

#[test]
fn duplicate_keys() {
    assert!(!accepted(r#"{"choices":[],"choices":[]}"#));
    assert!(!accepted(r#"{"choices":null,"choices":null}"#));
    assert!(!accepted(r#"{"choices":[{"delta":{"content":"a","content":"b"}}]}"#));
    assert!(!accepted(r#"{"choices":[{"index":0,"index":0}]}"#));
    assert!(accepted(r#"{"x":1,"x":2,"choices":[{"y":1,"y":[]}]}"#));
    // A key spelled with escapes is the same key.
    assert!(!accepted(r#"{"choices":[],"ch\u006fices":[]}"#));
    assert!(accepted(r#"{"choices":[{"delta":{"c\u006fntent":"x"}}]}"#));
}

#[test]
fn wrong_types_and_nulls() {
    assert!(!accepted(r#"{"choices":[{"delta":{"content":5}}]}"#));
    assert!(!accepted(r#"{"choices":[{"delta":{"content":true}}]}"#));
    assert!(!accepted(r#"{"choices":[{"delta":{"content":["a"]}}]}"#));
    assert!(!accepted(r#"{"choices":[{"delta":5}]}"#));
    assert!(!accepted(r#"{"choices":[null]}"#));
    assert!(!accepted(r#"{"choices":{}}"#));
    assert!(!accepted(r#"{"choices":[{"delta":{"tool_calls":[null]}}]}"#));
    assert!(!accepted(r#"{"choices":[{"delta":{"tool_calls":{}}}]}"#));
    assert!(!accepted(r#"{"choices":[{"finish_reason":1}]}"#));
    assert!(!accepted(r#"{"usage":{"prompt_tokens":"1"}}"#));
    assert!(!accepted(r#"{"usage":5}"#));
    assert!(!accepted("5"));
    assert!(!accepted("null"));
    assert!(!accepted(r#""chunk""#));
    assert!(accepted(
        r#"{"choices":[{"index":null,"delta":{"content":null,"tool_calls":null},"message":null,"finish_reason":null}],"usage":null,"error":null}"#
    ));
    assert!(accepted(
        r#"{"choices":[{"delta":{"tool_calls":[{"index":null,"id":null,"function":null}]}}]}"#
    ));
}

#[test]
fn integers() {
    for ok in ["0", "7", "18446744073709551615"] {
        assert!(accepted(&format!(r#"{{"choices":[{{"index":{ok}}}]}}"#)), "{ok}");
    }
    for bad in [
        "-0",
        "-1",
        "1.0",
        "1e2",
        "1E2",
        "0.5",
        "01",
        "00",
        "18446744073709551616",
        "99999999999999999999",
        "\"1\"",
        "-",
        "1.",
        "+1",
    ] {
        assert!(!accepted(&format!(r#"{{"choices":[{{"index":{bad}}}]}}"#)), "{bad}");
    }
    // Skipped numbers only need to be JSON numbers.
    for ok in ["-0", "-1.5e+10", "1E400", "0.0", "123456789012345678901234567890"] {
        assert!(accepted(&format!(r#"{{"created":{ok}}}"#)), "{ok}");
    }
    for bad in ["01", "1.", ".5", "-", "1e", "1e+", "+1", "0x1", "NaN", "Infinity"] {
        assert!(!accepted(&format!(r#"{{"created":{bad}}}"#)), "{bad}");
    }
}

#[test]
fn string_escapes() {
    let content = |s: &str| format!(r#"{{"choices":[{{"delta":{{"content":"{s}"}}}}]}}"#);
    let skipped = |s: &str| format!(r#"{{"model":"{s}"}}"#);
    for ok in [
        r"\u00e9t\u00e9",
        r"\ud83d\ude00",
        r#"\"\\\/\b\f\n\r\t"#,
        r"\u0000",
        "é中😀",
        "",
    ] {
        assert!(accepted(&content(ok)), "{ok}");
        assert!(accepted(&skipped(ok)), "{ok}");
    }
    // Unpaired surrogates: an error in a string the translator reads, fine in one it skips.
    for lone in [
        r"\ud83d",
        r"\ude00",
        r"\ud83dx",
        r"\ud83d\u0041",
        r"\ud83d\n",
        r"\ud83d\ud83d",
    ] {
        assert!(!accepted(&content(lone)), "{lone}");
        assert!(accepted(&skipped(lone)), "{lone}");
    }
    for bad in [r"\x", r"\u12", r"\u12G4", r"\U0041", "\t", "\u{1}", "\u{1f}", r"\"] {
        assert!(!accepted(&content(bad)), "{bad:?}");
        assert!(!accepted(&skipped(bad)), "{bad:?}");
    }
    let data = content(r"caf\u00e9 \ud83d\ude00\n");
    let mut r = ChunkReader::default();
    r.read(&data).unwrap();
    let s = r.choices.as_ref().unwrap()[0].delta.unwrap().content.unwrap();
    assert_eq!(r.str(&data, s), "café 😀\n");
}

#[test]
fn keys() {
    // Keys of our structs are decoded (and checked) as serde does; keys inside skipped values are not.
    assert!(!accepted(r#"{"\ud800":1}"#));
    assert!(!accepted(r#"{"choices":[{"delta":{"\udc00":1}}]}"#));
    assert!(accepted(r#"{"x":{"\ud800":1}}"#));
    assert!(!accepted(r#"{"x":{"a":1,}}"#));
    assert!(!accepted(r#"{"choices":[],}"#));
    assert!(!accepted(r#"{,"choices":[]}"#));
    assert!(!accepted(r#"{"choices" []}"#));
    assert!(!accepted(r"{choices:[]}"));
    assert!(!accepted("{\"ch\toices\":[]}"));
}

#[test]
fn whitespace_and_trailing_bytes() {
    assert!(accepted(
        " \t\r\n{ \"choices\" :\n[ { \"delta\" : { \"content\" : \"a\" } } ] }\r\n "
    ));
    assert!(!accepted("\u{c}{}"));
    assert!(!accepted("{}\u{c}"));
    assert!(!accepted("{} {}"));
    assert!(!accepted("{}x"));
    assert!(!accepted(""));
    assert!(!accepted("{"));
}

#[test]
fn nesting() {
    // Skipped values nest without bound, as with serde's `ignore_value`.
    let deep = format!(r#"{{"x":{}1{}}}"#, "[".repeat(10_000), "]".repeat(10_000));
    assert!(accepted(&deep));
    let deep_objects = format!(r#"{{"x":{}1{}}}"#, r#"{"a":"#.repeat(1_000), "}".repeat(1_000));
    assert!(accepted(&deep_objects));
    // `error` goes through serde's generic value, which counts depth: same limit as in place.
    for depth in 120..135 {
        let error = format!(r#"{{"error":{}1{}}}"#, "[".repeat(depth), "]".repeat(depth));
        assert_agree(&error);
        let array_chunk = format!(r"[null,null,{}1{}]", "[".repeat(depth), "]".repeat(depth));
        assert_agree(&array_chunk);
    }
    assert!(!accepted(&format!(r#"{{"x":{}1{}}}"#, "[".repeat(3), "]".repeat(2))));
    assert!(!accepted(r#"{"x":[1}}"#));
    assert!(!accepted(r#"{"x":{"a":1]}"#));
}

#[test]
fn errors_and_usage() {
    assert!(accepted(
        r#"{"error":{"message":"bad","type":"invalid_request_error","code":400}}"#
    ));
    assert!(accepted(r#"{"error":"plain text"}"#));
    assert!(accepted(r#"{"error":{"message":5}}"#));
    assert!(accepted(r#"{"error":[1,2]}"#));
    // serde reads `error` as a generic value: numbers out of f64 range and lone surrogates fail.
    assert!(!accepted(r#"{"error":{"x":1e400}}"#));
    assert!(!accepted(r#"{"error":{"x":"\ud800"}}"#));
    assert!(accepted(r#"{"x":1e400}"#));
    assert!(accepted(
        r#"{"usage":{"prompt_tokens":9,"completion_tokens":3,"total_tokens":12,"prompt_tokens_details":{"cached_tokens":2},"completion_tokens_details":{"reasoning_tokens":1},"extra":{"a":[1]}}}"#
    ));
    assert!(accepted(r#"{"usage":[1,2,3,[4],[5],6]}"#));
    assert!(!accepted(r#"{"usage":{"prompt_tokens":1,"prompt_tokens":2}}"#));
    assert!(!accepted(r#"{"usage":{"prompt_tokens":-1}}"#));
}

#[test]
fn control_bytes_anywhere_switch_to_the_checked_scan() {
    // A tab between tokens makes the whole chunk take the scan that looks for control bytes.
    assert!(accepted("{\t\"choices\":[{\"delta\":{\"content\":\"a\"}}]}"));
    assert!(!accepted("{\t\"choices\":[{\"delta\":{\"content\":\"a\tb\"}}]}"));
    assert!(!accepted("{\t\"model\":\"a\u{7}b\"}"));
}

#[test]
fn buffers_are_reused() {
    let mut r = used_reader();
    assert!(r.read("{\"choices\":[{\"delta\":{\"content\":\"x\ty\"}}]}").is_err());
    let data = r#"{"choices":[{"delta":{"content":"x\u0041"}}]}"#;
    r.read(data).unwrap();
    let s = r.choices.as_ref().unwrap()[0].delta.unwrap().content.unwrap();
    assert_eq!(r.str(data, s), "xA");
    r.read("{}").unwrap();
    assert!(r.choices.is_none() && r.calls.is_empty() && r.usage.is_none() && r.error.is_none());
}

// --- generated chunks ----------------------------------------------------------------------------

fn ws() -> impl Strategy<Value = &'static str> {
    prop_oneof![12 => Just(""), 2 => Just(" "), 1 => Just("\n  "), 1 => Just("\t"), 1 => Just("\r\n")]
}

/// A piece of a string literal: a char written raw or escaped, or something broken.
fn piece(broken_weight: u32) -> impl Strategy<Value = String> {
    let ch = prop_oneof![
        6 => proptest::char::range('a', 'z'),
        1 => Just(' '),
        1 => Just('"'),
        1 => Just('\\'),
        1 => Just('/'),
        1 => Just('\n'),
        1 => Just('\u{1}'),
        1 => Just('é'),
        1 => Just('中'),
        1 => Just('😀'),
        1 => Just('\u{7f}'),
    ];
    let written = (ch, 0u8..4).prop_map(|(c, mode)| {
        let escaped = |c: char| {
            let mut units = [0u16; 2];
            c.encode_utf16(&mut units)
                .iter()
                .map(|u| {
                    if mode == 2 {
                        format!("\\u{u:04X}")
                    } else {
                        format!("\\u{u:04x}")
                    }
                })
                .collect::<String>()
        };
        match c {
            '"' => {
                if mode == 0 {
                    "\\\"".to_owned()
                } else {
                    escaped(c)
                }
            }
            '\\' => {
                if mode == 0 {
                    "\\\\".to_owned()
                } else {
                    escaped(c)
                }
            }
            '\n' => {
                if mode == 0 {
                    "\\n".to_owned()
                } else {
                    escaped(c)
                }
            }
            '/' => {
                if mode == 0 {
                    "\\/".to_owned()
                } else {
                    "/".to_owned()
                }
            }
            c if (c as u32) < 0x20 => escaped(c),
            c if mode == 3 => escaped(c),
            c => c.to_string(),
        }
    });
    let broken = prop::sample::select(vec![
        "\\ud800",
        "\\udfff",
        "\\ud83d\\u0041",
        "\\ud83dx",
        "\\ud83d\\n",
        "\\x",
        "\\u12G4",
        "\\u00",
        "\t",
        "\u{1f}",
        "\\",
    ])
    .prop_map(str::to_owned);
    prop_oneof![60 => written, broken_weight => broken]
}

fn string_with(broken_weight: u32, max: usize) -> impl Strategy<Value = String> {
    proptest::collection::vec(piece(broken_weight), 0..max).prop_map(|pieces| format!("\"{}\"", pieces.concat()))
}

fn string(noise: u32) -> impl Strategy<Value = String> {
    string_with(noise, 8)
}

/// A key: `name`, sometimes with a char escaped.
fn key(name: &'static str) -> impl Strategy<Value = String> {
    (0..name.len() + 8).prop_map(move |k| match name.as_bytes().get(k) {
        Some(&c) => format!("\"{}\\u{:04x}{}\"", &name[..k], c, &name[k + 1..]),
        None => format!("\"{name}\""),
    })
}

fn number() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<u64>().prop_map(|n| n.to_string()),
        any::<i64>().prop_map(|n| n.to_string()),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| format!("{f:e}")),
        prop::sample::select(vec![
            "0",
            "-0",
            "1.5",
            "1E400",
            "1e-5",
            "18446744073709551616",
            "0.0e+0"
        ])
        .prop_map(str::to_owned),
    ]
}

/// Any JSON value (what unknown keys hold), with the odd broken string.
fn any_value() -> BoxedStrategy<String> {
    let leaf = prop_oneof![
        Just("null".to_owned()),
        Just("true".to_owned()),
        Just("false".to_owned()),
        number(),
        string_with(2, 6),
    ];
    leaf.prop_recursive(4, 24, 4, |inner| {
        prop_oneof![
            proptest::collection::vec((ws(), inner.clone()), 0..4).prop_map(|items| {
                let items: Vec<String> = items.into_iter().map(|(w, v)| format!("{w}{v}")).collect();
                format!("[{}]", items.join(","))
            }),
            proptest::collection::vec((string_with(1, 4), ws(), inner), 0..4).prop_map(|members| {
                let members: Vec<String> = members.into_iter().map(|(k, w, v)| format!("{k}{w}:{v}")).collect();
                format!("{{{}}}", members.join(","))
            }),
        ]
    })
    .boxed()
}

// `noise`: the weight of wrong types and broken strings; 0 gives chunks that serde mostly accepts,
// so that deep fields get compared too.

/// `Option<Cow<str>>`: mostly strings, sometimes `null` or a wrong type.
fn opt_str(noise: u32) -> BoxedStrategy<String> {
    prop_oneof![12 => string(noise), 2 => Just("null".to_owned()), noise => any_value()].boxed()
}

/// `Option<u64>`.
fn opt_u64(noise: u32) -> BoxedStrategy<String> {
    prop_oneof![
        6 => (0u64..4).prop_map(|n| n.to_string()),
        1 => Just("null".to_owned()),
        1 => Just("18446744073709551615".to_owned()),
        2 * noise => number(),
        noise => any_value(),
    ]
    .boxed()
}

/// A struct: known fields (each maybe absent), unknown keys, the odd duplicate, any order; or,
/// rarely, the array of its fields.
fn object(noise: u32, fields: Vec<(&'static str, BoxedStrategy<String>)>) -> BoxedStrategy<String> {
    let count = fields.len();
    let names: Vec<&'static str> = fields.iter().map(|(name, _)| *name).collect();
    let members: Vec<BoxedStrategy<Option<(String, String)>>> = fields
        .into_iter()
        .map(|(name, value)| proptest::option::weighted(0.7, (key(name), value)).boxed())
        .collect();
    let unknown = proptest::collection::vec((string_with(noise, 6), any_value()), 0..3);
    let duplicate = if noise > 0 {
        proptest::option::weighted(0.03, (prop::sample::select(names), any_value())).boxed()
    } else {
        Just(None).boxed()
    };
    let as_object = (members.clone(), unknown, duplicate, any::<prop::sample::Index>())
        .prop_flat_map(|(known, unknown, duplicate, _)| {
            let mut all: Vec<(String, String)> = known.into_iter().flatten().collect();
            all.extend(unknown);
            if let Some((name, value)) = duplicate {
                all.push((format!("\"{name}\""), value));
            }
            Just(all).prop_shuffle()
        })
        .prop_flat_map(|all| {
            let n = all.len();
            (Just(all), proptest::collection::vec((ws(), ws(), ws()), n..=n))
        })
        .prop_map(|(all, spaces)| {
            let members: Vec<String> = all
                .into_iter()
                .zip(spaces)
                .map(|((k, v), (a, b, c))| format!("{a}{k}{b}:{c}{v}"))
                .collect();
            format!("{{{}}}", members.join(","))
        });
    let as_array = (members, 0..=count + 1).prop_map(move |(values, len)| {
        let items: Vec<String> = values
            .into_iter()
            .chain(std::iter::once(Some((String::new(), "null".to_owned()))))
            .take(len)
            .map(|v| v.map_or_else(|| "null".to_owned(), |(_, v)| v))
            .collect();
        format!("[{}]", items.join(", "))
    });
    prop_oneof![30 => as_object, 1 => as_array].boxed()
}

fn array_of(element: BoxedStrategy<String>, max: usize) -> BoxedStrategy<String> {
    proptest::collection::vec((ws(), element), 0..max)
        .prop_map(|items| {
            let items: Vec<String> = items.into_iter().map(|(w, v)| format!("{w}{v}")).collect();
            format!("[{}]", items.join(","))
        })
        .boxed()
}

fn or_null(noise: u32, value: BoxedStrategy<String>) -> BoxedStrategy<String> {
    prop_oneof![8 => value, 1 => Just("null".to_owned()), noise => any_value()].boxed()
}

fn chunk(noise: u32) -> BoxedStrategy<String> {
    let n = noise;
    let function = object(n, vec![("name", opt_str(n)), ("arguments", opt_str(n))]);
    let call = object(
        n,
        vec![
            ("index", opt_u64(n)),
            ("id", opt_str(n)),
            ("function", or_null(n, function)),
        ],
    );
    let delta = object(
        n,
        vec![
            ("content", opt_str(n)),
            ("reasoning_content", opt_str(n)),
            ("reasoning", opt_str(n)),
            ("refusal", opt_str(n)),
            ("tool_calls", or_null(n, array_of(call, 3))),
        ],
    );
    let choice = object(
        n,
        vec![
            ("index", opt_u64(n)),
            ("delta", or_null(n, delta.clone())),
            ("message", or_null(n, delta)),
            ("finish_reason", opt_str(n)),
        ],
    );
    let details = object(n, vec![("cached_tokens", opt_u64(n)), ("reasoning_tokens", opt_u64(n))]);
    let usage = object(
        n,
        vec![
            ("prompt_tokens", opt_u64(n)),
            ("completion_tokens", opt_u64(n)),
            ("total_tokens", opt_u64(n)),
            ("prompt_tokens_details", or_null(n, details.clone())),
            ("completion_tokens_details", or_null(n, details)),
            ("prompt_cache_hit_tokens", opt_u64(n)),
        ],
    );
    let error = object(
        n,
        vec![("message", opt_str(n)), ("type", opt_str(n)), ("code", any_value())],
    );
    let error = if noise > 0 {
        prop_oneof![1 => Just("null".to_owned()), 1 => error, 1 => any_value()].boxed()
    } else {
        prop_oneof![8 => Just("null".to_owned()), 1 => error].boxed()
    };
    (
        ws(),
        object(
            n,
            vec![
                ("choices", or_null(n, array_of(choice, 3))),
                ("usage", or_null(n, usage)),
                ("error", error),
            ],
        ),
        ws(),
    )
        .prop_map(|(a, chunk, b)| format!("{a}{chunk}{b}"))
        .boxed()
}

/// A byte edit of a chunk: cut it, or put a JSON-significant byte somewhere. `None` if the
/// result is not UTF-8 (chunks reach the reader as `&str`).
fn mutate(chunk: &str, at: prop::sample::Index, edit: u8, byte: u8) -> Option<String> {
    const BYTES: &[u8] = b"{}[]\",:\\ \t0123456789-+.eEnultrfasx\x01\x7f";
    let mut bytes = chunk.as_bytes().to_vec();
    let at = at.index(bytes.len() + 1);
    let byte = BYTES[usize::from(byte) % BYTES.len()];
    match edit % 4 {
        0 => bytes.truncate(at),
        1 if at < bytes.len() => bytes[at] = byte,
        2 if at < bytes.len() => {
            bytes.remove(at);
        }
        _ => bytes.insert(at, byte),
    }
    String::from_utf8(bytes).ok()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn generated_chunks_agree(chunk in chunk(0)) {
        agree(&chunk)?;
    }

    #[test]
    fn noisy_chunks_agree(chunk in chunk(1)) {
        agree(&chunk)?;
    }

    #[test]
    fn mutated_chunks_agree(chunk in chunk(0), edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>(), any::<u8>()), 1..4)) {
        let mut chunk = chunk;
        for (at, edit, byte) in edits {
            if let Some(mutated) = mutate(&chunk, at, edit, byte) {
                chunk = mutated;
            }
        }
        agree(&chunk)?;
    }

    #[test]
    fn arbitrary_text_agrees(text in "[\\[\\]{}\",:0-9a-z\\\\ .eE+-]{0,40}") {
        agree(&text)?;
    }
}
