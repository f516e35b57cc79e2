//! The Rust value tree and the builder that makes it.

use super::parser::{JsonBuilder, Scalar};

/// A parsed JSON value. Objects keep their members in document order, duplicates included.
#[derive(Debug, Clone, PartialEq)]
pub enum JsonValue {
    /// `null`.
    Null,
    /// `true` / `false`.
    Bool(bool),
    /// An integer that fits in `i64`.
    Int(i64),
    /// An integer outside `i64`, exact: its digits with a leading `-` when negative.
    BigInt(String),
    /// A number with a fraction or exponent.
    Float(f64),
    /// A string.
    String(String),
    /// An array.
    Array(Vec<JsonValue>),
    /// An object's members in document order.
    Object(Vec<(String, JsonValue)>),
}

impl From<Scalar<'_>> for JsonValue {
    fn from(s: Scalar<'_>) -> Self {
        match s {
            Scalar::Null => Self::Null,
            Scalar::Bool(b) => Self::Bool(b),
            Scalar::Int(i) => Self::Int(i),
            Scalar::BigInt(d) => Self::BigInt(d.to_owned()),
            Scalar::Float(f) => Self::Float(f),
            Scalar::Str(s) => Self::String(s.to_owned()),
        }
    }
}

#[derive(Debug, Clone)]
enum Frame {
    Array(Vec<JsonValue>),
    /// Members so far and the key whose value is in progress.
    Object(Vec<(String, JsonValue)>, Option<String>),
}

impl Frame {
    fn push(&mut self, v: JsonValue) {
        match self {
            Self::Array(a) => a.push(v),
            Self::Object(o, key) => {
                if let Some(k) = key.take() {
                    o.push((k, v));
                }
            }
        }
    }

    fn into_value(self) -> JsonValue {
        match self {
            Self::Array(a) => JsonValue::Array(a),
            Self::Object(o, _) => JsonValue::Object(o),
        }
    }
}

/// Builds a [`JsonValue`]: open containers on a stack, each attached to its parent when it closes.
#[derive(Debug, Clone, Default)]
pub struct TreeBuilder {
    stack: Vec<Frame>,
    root: Option<JsonValue>,
}

impl TreeBuilder {
    fn attach(&mut self, v: JsonValue) {
        match self.stack.last_mut() {
            Some(f) => f.push(v),
            None => self.root = Some(v),
        }
    }

    /// The complete top-level value, once there is one.
    pub fn root(&self) -> Option<&JsonValue> {
        self.root.as_ref()
    }

    /// Takes the complete top-level value out.
    pub fn take_root(&mut self) -> Option<JsonValue> {
        self.root.take()
    }

    /// The value so far, with open containers closed and `partial` (the parser's trailing partial
    /// scalar) in its place; copies everything, O(size).
    pub fn snapshot(&self, partial: Option<Scalar<'_>>) -> Option<JsonValue> {
        if let Some(root) = &self.root {
            return Some(root.clone());
        }
        let mut child = partial.map(JsonValue::from);
        for frame in self.stack.iter().rev() {
            let mut f = match frame {
                // Clone the members, not the pending key: `push` must see it, so keep it separately.
                Frame::Array(a) => Frame::Array(a.clone()),
                Frame::Object(o, k) => Frame::Object(o.clone(), k.clone()),
            };
            if let Some(c) = child {
                f.push(c);
            }
            child = Some(f.into_value());
        }
        child
    }
}

impl JsonBuilder for TreeBuilder {
    fn start_array(&mut self) {
        self.stack.push(Frame::Array(Vec::new()));
    }

    fn start_object(&mut self) {
        self.stack.push(Frame::Object(Vec::new(), None));
    }

    fn key(&mut self, key: &str) {
        if let Some(Frame::Object(_, k)) = self.stack.last_mut() {
            *k = Some(key.to_owned());
        }
    }

    fn scalar(&mut self, value: Scalar<'_>) {
        self.attach(value.into());
    }

    fn end(&mut self) {
        if let Some(f) = self.stack.pop() {
            self.attach(f.into_value());
        }
    }
}
