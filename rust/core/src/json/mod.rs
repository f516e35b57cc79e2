//! JSON: one token scanner for whole texts, one incremental parser for pieces, builders on top.
//!
//! [`Scanner`] (in `scanner`) reads a complete text token by token, jiter-style: `peek`, containers
//! (`array_first`/`array_step`, `object_first`/`object_step`/`colon`, with the depth bound), strings
//! borrowed from the input or decoded into the caller's buffer, numbers, literals, skipping, errors
//! with byte offsets. Its builders: the Python objects of `ResponseEventParser` and friends (the
//! PyO3 glue's `pyjson`) and the chat chunk reader's borrowed view
//! (`translate::chat_completions::reader`). The byte-level pieces (the SWAR string scan, escapes,
//! hex digits) are in `scan`, shared with the incremental parser and the event writer.
//!
//! [`JsonParser`] reads a document in pieces and reports what it reads to a [`JsonBuilder`], so one
//! parser serves both the Rust tree ([`TreeBuilder`] / [`JsonStream`]) and the Python objects built by
//! the glue. The tokens that lie whole inside a piece go through the [`Scanner`] too; its own
//! resumable state (container stack, key/value position, and the string, number or literal that a
//! piece's end cut) carries the rest over. Feeding a document in any number of pieces costs
//! O(total bytes).
//!
//! Partial values follow jiter's `partial_mode="trailing-strings"`: complete members, open
//! containers as far as they go, a string value cut mid-way as its decoded prefix, a number cut
//! where it is already valid; an unfinished key, literal, or number like `-`/`1.`/`1e` is left out.
//! Unlike jiter, nothing but whitespace may follow the top-level value, and `NaN`/`Infinity` are
//! rejected (as `serde_json` and RFC 8259). Lone surrogate escapes (`"\ud800"`) are errors, as in
//! jiter and `serde_json`.

mod error;
mod parser;
pub(crate) mod scan;
mod scanner;
mod tree;

#[cfg(test)]
mod tests;

pub use error::{JsonError, JsonErrorKind};
pub use parser::{JsonBuilder, JsonParser, Scalar, DEFAULT_MAX_DEPTH};
pub use scanner::{Number, ScanError, ScanErrorKind, Scanner, Str, StrStart};
pub use tree::{JsonValue, TreeBuilder};

/// A JSON document arriving in pieces, built into a [`JsonValue`].
#[derive(Debug, Clone, Default)]
pub struct JsonStream {
    parser: JsonParser,
    builder: TreeBuilder,
}

impl JsonStream {
    /// A stream with the default depth bound ([`DEFAULT_MAX_DEPTH`]).
    pub fn new() -> Self {
        Self::default()
    }

    /// A stream that rejects arrays/objects nested deeper than `max_depth`.
    pub fn with_max_depth(max_depth: usize) -> Self {
        Self {
            parser: JsonParser::new(max_depth),
            builder: TreeBuilder::default(),
        }
    }

    /// Parses the next piece; after an error every call returns that error.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<(), JsonError> {
        self.parser.feed(bytes, &mut self.builder)
    }

    /// End of input: completes a top-level number; errors unless one whole value was read.
    pub fn finish(&mut self) -> Result<(), JsonError> {
        self.parser.finish(&mut self.builder)
    }

    /// The partial value so far (see the module doc), `None` before anything is known. Copies the
    /// tree: O(size); the Python binding updates live objects instead.
    pub fn value(&self) -> Option<JsonValue> {
        self.builder.snapshot(self.parser.partial())
    }

    /// True once one whole top-level value has been read (see [`JsonParser::is_complete`]).
    pub fn is_complete(&self) -> bool {
        self.parser.is_complete()
    }

    /// Bytes fed so far.
    pub fn offset(&self) -> u64 {
        self.parser.offset()
    }
}

/// Parses a possibly truncated document: [`JsonStream::feed`] then [`JsonStream::value`].
pub fn parse_partial(bytes: &[u8], max_depth: usize) -> Result<Option<JsonValue>, JsonError> {
    let mut parser = JsonParser::new(max_depth);
    let mut builder = TreeBuilder::default();
    parser.feed(bytes, &mut builder)?;
    Ok(builder.snapshot(parser.partial()))
}

/// Parses one complete document (whitespace around it allowed, nothing else).
pub fn parse(bytes: &[u8], max_depth: usize) -> Result<JsonValue, JsonError> {
    let mut parser = JsonParser::new(max_depth);
    let mut builder = TreeBuilder::default();
    parser.feed(bytes, &mut builder)?;
    parser.finish(&mut builder)?;
    builder.take_root().ok_or(JsonError {
        offset: parser.offset(),
        kind: JsonErrorKind::UnexpectedEof,
    })
}
