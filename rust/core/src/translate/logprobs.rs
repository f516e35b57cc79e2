//! Token log probabilities from an upstream (Chat Completions' `choices[].logprobs.content`, the Responses API's
//! `logprobs` on `response.output_text.delta`) → the elements of an Open Responses `logprobs` array.
//!
//! Both upstreams give each token as `{"token", "logprob", "bytes", "top_logprobs": [{"token", "logprob",
//! "bytes"}]}`, which is Open Responses' `LogProb`, but not always whole: `bytes` may be `null` (OpenAI, for a
//! token that is not whole UTF-8 on its own) or missing, `top_logprobs` missing or `null` when none were asked for,
//! and a `logprob` of minus infinity has no JSON. Written here as the spec has them: `bytes` the token's UTF-8
//! where the upstream gave none, `top_logprobs` `[]`, a non-finite `logprob` -9999 (OpenAI's own floor). Not on
//! the hot path: only a request that asked for log probabilities gets them.

use std::borrow::Cow;

use serde::Deserialize;

use crate::events::writer::write_str;

#[derive(Deserialize)]
struct TokenIn<'a> {
    #[serde(borrow)]
    token: Cow<'a, str>,
    logprob: f64,
    #[serde(default)]
    bytes: Option<Vec<u8>>,
    #[serde(borrow, default)]
    top_logprobs: Option<Vec<TopIn<'a>>>,
}

#[derive(Deserialize)]
struct TopIn<'a> {
    #[serde(borrow)]
    token: Cow<'a, str>,
    logprob: f64,
    #[serde(default)]
    bytes: Option<Vec<u8>>,
}

/// `raw`, a JSON array of an upstream's token log probabilities, written into `out` as the elements of an Open
/// Responses `logprobs` array (no brackets); false, and nothing written, when `raw` is not such an array.
pub fn write_logprobs(raw: &str, out: &mut Vec<u8>) -> bool {
    let Ok(tokens) = serde_json::from_str::<Vec<TokenIn<'_>>>(raw) else {
        return false;
    };
    for (i, token) in tokens.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_token(out, &token.token, token.logprob, token.bytes.as_deref());
        out.extend_from_slice(b",\"top_logprobs\":[");
        for (j, top) in token.top_logprobs.iter().flatten().enumerate() {
            if j > 0 {
                out.push(b',');
            }
            write_token(out, &top.token, top.logprob, top.bytes.as_deref());
            out.push(b'}');
        }
        out.extend_from_slice(b"]}");
    }
    true
}

/// `{"token":…,"logprob":…,"bytes":[…]` (the object left open).
fn write_token(out: &mut Vec<u8>, token: &str, logprob: f64, bytes: Option<&[u8]>) {
    out.extend_from_slice(b"{\"token\":");
    write_str(out, token);
    out.extend_from_slice(b",\"logprob\":");
    let logprob = if logprob.is_finite() { logprob } else { -9999.0 };
    out.extend_from_slice(ryu::Buffer::new().format_finite(logprob).as_bytes());
    out.extend_from_slice(b",\"bytes\":[");
    let mut number = itoa::Buffer::new();
    for (k, byte) in bytes.unwrap_or(token.as_bytes()).iter().enumerate() {
        if k > 0 {
            out.push(b',');
        }
        out.extend_from_slice(number.format(*byte).as_bytes());
    }
    out.push(b']');
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn written(raw: &str) -> Option<Value> {
        let mut out = Vec::new();
        write_logprobs(raw, &mut out).then(|| serde_json::from_slice(&[b"[", &out[..], b"]"].concat()).unwrap())
    }

    #[test]
    fn tokens_become_open_responses_logprobs() {
        let raw = r#"[{"token":"Hi","logprob":-0.25,"bytes":[72,105],"top_logprobs":[{"token":"Hi","logprob":-0.25,
            "bytes":[72,105]},{"token":"é","logprob":-1.5,"bytes":null}]},{"token":"!","logprob":0.0}]"#;
        assert_eq!(
            written(raw).unwrap(),
            json!([
                {"token": "Hi", "logprob": -0.25, "bytes": [72, 105], "top_logprobs": [
                    {"token": "Hi", "logprob": -0.25, "bytes": [72, 105]},
                    {"token": "é", "logprob": -1.5, "bytes": [195, 169]}]},
                {"token": "!", "logprob": 0.0, "bytes": [33], "top_logprobs": []},
            ])
        );
        assert_eq!(written("[]").unwrap(), json!([]));
        for bad in [
            "null",
            "{}",
            r#"[{"token":"a"}]"#,
            r#"[{"token":"a","logprob":"x"}]"#,
            "[1]",
        ] {
            assert!(written(bad).is_none(), "{bad}");
        }
    }
}
