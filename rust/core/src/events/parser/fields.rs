//! The field view: the top-level members of one event that the checker reads ([`EventFields`]),
//! borrowed from the event's JSON text and filled by serde or by a caller scanning that JSON anyway.

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde_json::value::RawValue;

/// The top-level members of one event that the checker reads, borrowed from the event's JSON text.
///
/// Filled member by member with [`EventFields::set`], either by [`EventFields::parse`] (serde) or by
/// a caller that is scanning the JSON anyway (the Python glue, while it builds the event's dict), so
/// each event is parsed once.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct EventFields<'a> {
    /// `type`.
    pub kind: Option<Cow<'a, str>>,
    /// `sequence_number`.
    pub sequence_number: Option<u64>,
    /// `output_index`.
    pub output_index: Option<u64>,
    /// `content_index`.
    pub content_index: Option<u64>,
    /// `summary_index`.
    pub summary_index: Option<u64>,
    /// `item_id`.
    pub item_id: Option<Cow<'a, str>>,
    /// `delta` (when a string).
    pub delta: Option<Cow<'a, str>>,
    /// `text`.
    pub text: Option<Cow<'a, str>>,
    /// `refusal`.
    pub refusal: Option<Cow<'a, str>>,
    /// `arguments`.
    pub arguments: Option<Cow<'a, str>>,
    /// `item`, as JSON text of an object.
    pub item: Option<&'a str>,
    /// `part`, as JSON text of an object.
    pub part: Option<&'a str>,
    /// `response`, as JSON text of an object.
    pub response: Option<&'a str>,
    /// The first of these members whose JSON type was not the expected one (an error only for the
    /// event types the checker knows: extension events may use the same names for other things).
    pub malformed: Option<&'static str>,
}

/// One top-level member's value, as far as [`EventFields`] cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemberValue<'a> {
    /// `null` (the member counts as absent).
    Null,
    /// A string, unescaped.
    Str(Cow<'a, str>),
    /// A non-negative integer that fits `u64`.
    UInt(u64),
    /// An object, as its JSON text.
    Object(&'a str),
    /// Anything else.
    Other,
}

impl<'a> EventFields<'a> {
    /// Records top-level member `key`, whose JSON text is `raw`; `string` is its unescaped value when
    /// it is a JSON string (borrowed from `raw` when it has no escapes). For callers that scan the
    /// JSON themselves.
    #[inline] // the PyO3 crate calls it for every member of every event, across the crate boundary
    pub fn set(&mut self, key: &str, raw: &'a str, string: Option<&str>) {
        if !Self::reads(key) {
            return;
        }
        let value = if let Some(string) = string {
            // No escapes: the value is `raw` without its quotes, so borrow it.
            MemberValue::Str(if raw.len() == string.len() + 2 {
                Cow::Borrowed(&raw[1..raw.len() - 1])
            } else {
                Cow::Owned(string.to_owned())
            })
        } else if raw == "null" {
            MemberValue::Null
        } else if raw.starts_with('{') {
            MemberValue::Object(raw)
        } else if let Ok(number) = raw.parse() {
            MemberValue::UInt(number)
        } else {
            MemberValue::Other
        };
        self.set_value(key, value);
    }

    /// Records top-level member `key` with its value; other keys are ignored, `null` counts as
    /// absent, and a value of the wrong JSON type is noted in `malformed`.
    pub fn set_value(&mut self, key: &str, value: MemberValue<'a>) {
        fn put<T>(slot: &mut Option<T>, value: Option<T>, null: bool) -> bool {
            let ok = value.is_some() || null;
            *slot = value;
            ok
        }
        let null = value == MemberValue::Null;
        let (name, ok) = match (key, value) {
            ("type", value) => ("type", put(&mut self.kind, value.into_str(), null)),
            ("sequence_number", value) => (
                "sequence_number",
                put(&mut self.sequence_number, value.into_u64(), null),
            ),
            ("output_index", value) => ("output_index", put(&mut self.output_index, value.into_u64(), null)),
            ("content_index", value) => ("content_index", put(&mut self.content_index, value.into_u64(), null)),
            ("summary_index", value) => ("summary_index", put(&mut self.summary_index, value.into_u64(), null)),
            ("item_id", value) => ("item_id", put(&mut self.item_id, value.into_str(), null)),
            ("delta", value) => ("delta", put(&mut self.delta, value.into_str(), null)),
            ("text", value) => ("text", put(&mut self.text, value.into_str(), null)),
            ("refusal", value) => ("refusal", put(&mut self.refusal, value.into_str(), null)),
            ("arguments", value) => ("arguments", put(&mut self.arguments, value.into_str(), null)),
            ("item", value) => ("item", put(&mut self.item, value.into_object(), null)),
            ("part", value) => ("part", put(&mut self.part, value.into_object(), null)),
            ("response", value) => ("response", put(&mut self.response, value.into_object(), null)),
            _ => return,
        };
        if !ok && self.malformed.is_none() {
            self.malformed = Some(name);
        }
    }

    /// The fields of one event's JSON text (which must be one JSON object).
    pub fn parse(data: &'a str) -> Result<Self, String> {
        use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};

        struct Members;

        impl<'de> Visitor<'de> for Members {
            type Value = EventFields<'de>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Self::Value, M::Error> {
                let mut fields = EventFields::default();
                while let Some(Str(key)) = map.next_key::<Str<'de>>()? {
                    match key.as_ref() {
                        // Objects are kept as text: parsed only by the events that use them.
                        "item" | "part" | "response" => {
                            let raw: &'de RawValue = map.next_value()?;
                            let raw = raw.get();
                            let value = match raw.as_bytes().first() {
                                Some(b'{') => MemberValue::Object(raw),
                                _ if raw == "null" => MemberValue::Null,
                                _ => MemberValue::Other,
                            };
                            fields.set_value(&key, value);
                        }
                        key if EventFields::reads(key) => {
                            let value = map.next_value_seed(Scalar)?;
                            fields.set_value(key, value);
                        }
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(fields)
            }
        }

        /// A member value read without copying: strings borrowed where possible, integers, and
        /// anything else skipped (and reported as such).
        struct Scalar;

        impl<'de> serde::de::DeserializeSeed<'de> for Scalar {
            type Value = MemberValue<'de>;

            fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
                deserializer.deserialize_any(self)
            }
        }

        impl<'de> Visitor<'de> for Scalar {
            type Value = MemberValue<'de>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_borrowed_str<E>(self, value: &'de str) -> Result<Self::Value, E> {
                Ok(MemberValue::Str(Cow::Borrowed(value)))
            }
            fn visit_str<E>(self, value: &str) -> Result<Self::Value, E> {
                Ok(MemberValue::Str(Cow::Owned(value.to_owned())))
            }
            fn visit_string<E>(self, value: String) -> Result<Self::Value, E> {
                Ok(MemberValue::Str(Cow::Owned(value)))
            }
            fn visit_u64<E>(self, value: u64) -> Result<Self::Value, E> {
                Ok(MemberValue::UInt(value))
            }
            fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
                Ok(MemberValue::Other)
            }
            fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
                Ok(MemberValue::Other)
            }
            fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
                Ok(MemberValue::Other)
            }
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(MemberValue::Null)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(MemberValue::Other)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(MemberValue::Other)
            }
        }

        let mut deserializer = serde_json::Deserializer::from_str(data);
        let fields = deserializer
            .deserialize_map(Members)
            .map_err(|error| error.to_string())?;
        deserializer.end().map_err(|error| error.to_string())?;
        Ok(fields)
    }

    /// Whether [`Self::set`] reads member `key`.
    #[inline]
    pub fn reads(key: &str) -> bool {
        matches!(
            key,
            "type"
                | "sequence_number"
                | "output_index"
                | "content_index"
                | "summary_index"
                | "item_id"
                | "delta"
                | "text"
                | "refusal"
                | "arguments"
                | "item"
                | "part"
                | "response"
        )
    }
}

impl<'a> MemberValue<'a> {
    fn into_str(self) -> Option<Cow<'a, str>> {
        match self {
            Self::Str(value) => Some(value),
            _ => None,
        }
    }
    fn into_u64(self) -> Option<u64> {
        match self {
            Self::UInt(value) => Some(value),
            _ => None,
        }
    }
    fn into_object(self) -> Option<&'a str> {
        match self {
            Self::Object(value) => Some(value),
            _ => None,
        }
    }
}

/// A JSON string, borrowed from the event's text unless it has escapes.
#[derive(Deserialize)]
struct Str<'a>(#[serde(borrow)] Cow<'a, str>);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_fields_borrow_unless_escaped() {
        let data = r#"{"type":"response.output_text.delta","delta":"a\"b","item_id":"msg_1","output_index":3,
                      "content_index":null,"text":7,"item":{"id":"x"},"part":[1],"other":{"delta":1}}"#;
        let fields = EventFields::parse(data).unwrap();
        assert!(matches!(fields.kind, Some(Cow::Borrowed("response.output_text.delta"))));
        assert!(matches!(fields.item_id, Some(Cow::Borrowed("msg_1"))));
        assert!(matches!(&fields.delta, Some(Cow::Owned(delta)) if delta == "a\"b"));
        assert_eq!(fields.output_index, Some(3));
        assert_eq!(fields.content_index, None, "null is absent");
        assert_eq!(fields.text, None);
        assert_eq!(fields.item, Some(r#"{"id":"x"}"#));
        assert_eq!(fields.part, None);
        assert_eq!(fields.malformed, Some("text"), "the first malformed member");
        assert!(EventFields::parse("[1]").is_err());
        assert!(EventFields::parse("{\"type\":\"x\"} x").is_err());
    }
}
