//! JSON the router hands the writer whole (its own items, the members of extension events): checked
//! once, made compact (a raw newline would end an SSE `data:` line or a JSON-lines message), and kept
//! as bytes with its members in the order given, so writing it again costs a copy, not a parse.

use std::fmt;

use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::value::RawValue;

/// JSON that is not what the writer was promised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawJsonError {
    pub message: String,
}

impl fmt::Display for RawJsonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for RawJsonError {}

#[cold]
fn not_an_object(what: &str, detail: impl fmt::Display) -> RawJsonError {
    RawJsonError {
        message: format!("{what} must be a JSON object: {detail}"),
    }
}

/// A JSON object's members, in order, each value compact JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Members(pub Vec<(String, String)>);

impl Members {
    /// The members of the JSON object `json`; `what` names it in the error.
    pub fn parse(json: &[u8], what: &str) -> Result<Self, RawJsonError> {
        struct Ordered;
        impl<'de> Visitor<'de> for Ordered {
            type Value = Vec<(String, Box<RawValue>)>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut members = Vec::with_capacity(map.size_hint().unwrap_or(8));
                while let Some(member) = map.next_entry::<String, Box<RawValue>>()? {
                    members.push(member);
                }
                Ok(members)
            }
        }
        let mut de = serde_json::Deserializer::from_slice(json);
        let members = (&mut de)
            .deserialize_map(Ordered)
            .and_then(|m| de.end().map(|()| m))
            .map_err(|e| not_an_object(what, e))?;
        Ok(Self(
            members
                .into_iter()
                .map(|(key, value)| (key, compact(value.get())))
                .collect(),
        ))
    }

    /// The value of member `key` (compact JSON).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// Member `key`'s value, if it is a JSON string.
    pub fn get_str(&self, key: &str) -> Option<String> {
        self.get(key).and_then(|v| serde_json::from_str::<String>(v).ok())
    }

    /// Set member `key` (where it is) to the JSON `value`, or add it at the end.
    pub fn set(&mut self, key: &str, value: String) {
        match self.0.iter_mut().find(|(k, _)| k == key) {
            Some(slot) => slot.1 = value,
            None => self.0.push((key.to_owned(), value)),
        }
    }

    /// `,"key":value` for each member but `skip`.
    pub fn write(&self, out: &mut Vec<u8>, skip: &str) {
        for (key, value) in self.0.iter().filter(|(k, _)| k != skip) {
            out.push(b',');
            super::writer::write_str(out, key);
            out.push(b':');
            out.extend_from_slice(value.as_bytes());
        }
    }
}

/// The JSON object `json` as `,"k":v…` (its members, compact, without the braces) for an event's body.
pub fn object_body(json: &[u8], what: &str) -> Result<Vec<u8>, RawJsonError> {
    serde_json::from_slice::<IgnoredAny>(json).map_err(|e| not_an_object(what, e))?;
    let text = std::str::from_utf8(json).map_err(|e| not_an_object(what, e))?;
    let compact = compact(text);
    let inner = compact
        .strip_prefix('{')
        .and_then(|c| c.strip_suffix('}'))
        .ok_or_else(|| not_an_object(what, "it is another JSON value"))?;
    let mut body = Vec::with_capacity(inner.len() + 1);
    if !inner.is_empty() {
        body.push(b',');
        body.extend_from_slice(inner.as_bytes());
    }
    Ok(body)
}

/// Valid JSON without the whitespace between its tokens.
fn compact(json: &str) -> String {
    let bytes = json.as_bytes();
    if !bytes.iter().any(u8::is_ascii_whitespace) {
        return json.to_owned();
    }
    let mut out = Vec::with_capacity(bytes.len());
    let (mut in_string, mut escaped) = (false, false);
    for &b in bytes {
        if in_string {
            out.push(b);
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
        } else if b == b'"' {
            in_string = true;
            out.push(b);
        } else if !b.is_ascii_whitespace() {
            out.push(b);
        }
    }
    // Only ASCII whitespace outside strings was dropped: still UTF-8.
    String::from_utf8(out).expect("compacting keeps UTF-8")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn members_keep_their_order_and_lose_whitespace() {
        let m = Members::parse(
            b" {\"z\": 1, \"a\" : {\"s\": \" x \\\" y\\n\"},\n\"id\":\"i\"} ",
            "item",
        )
        .unwrap();
        assert_eq!(
            m.0,
            [
                ("z".to_owned(), "1".to_owned()),
                ("a".to_owned(), "{\"s\":\" x \\\" y\\n\"}".to_owned()),
                ("id".to_owned(), "\"i\"".to_owned())
            ]
        );
        assert_eq!(m.get_str("id").as_deref(), Some("i"));
        assert_eq!(m.get_str("z"), None);
        let mut out = Vec::new();
        m.write(&mut out, "id");
        assert_eq!(out, b",\"z\":1,\"a\":{\"s\":\" x \\\" y\\n\"}");
        for bad in [&b"[1]"[..], b"{", b"{} x", b"\"s\""] {
            assert!(Members::parse(bad, "item").is_err(), "{bad:?}");
        }
    }

    #[test]
    fn object_bodies() {
        assert_eq!(object_body(b"{}", "m").unwrap(), b"");
        assert_eq!(
            object_body(b"{ \"delta\": \"a b\"\n}", "m").unwrap(),
            b",\"delta\":\"a b\""
        );
        assert!(object_body(b"[]", "m").is_err());
        assert!(object_body(b"{\"a\":}", "m").is_err());
    }

    proptest! {
        #[test]
        fn compact_json_means_the_same(value in any::<u8>().prop_flat_map(|_| "[a-z ]{0,8}"), pretty in any::<bool>()) {
            let v = serde_json::json!({"k": value, "n": [1, {"x": "\n\t\" "}]});
            let text = if pretty { serde_json::to_string_pretty(&v).unwrap() } else { v.to_string() };
            let c = compact(&text);
            prop_assert!(!c.contains('\n'));
            prop_assert_eq!(serde_json::from_str::<serde_json::Value>(&c).unwrap(), v);
        }
    }
}
