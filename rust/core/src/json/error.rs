//! The parser's error: what was wrong and the byte offset where it was found.

use std::fmt;

/// What went wrong; [`JsonError`] adds where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JsonErrorKind {
    /// A value (object, array, string, number, `true`, `false`, `null`) must start here.
    ExpectedValue,
    /// An object key (a string) must start here.
    ExpectedKey,
    /// A `:` must follow an object key.
    ExpectedColon,
    /// Inside an array a value must be followed by `,` or `]`.
    ExpectedCommaOrBracket,
    /// Inside an object a member must be followed by `,` or `}`.
    ExpectedCommaOrBrace,
    /// A `,` directly before `]` or `}`.
    TrailingComma,
    /// Something other than whitespace after the one top-level value.
    TrailingCharacters,
    /// A number that breaks the JSON grammar (`01`, `1.`, `-`, `1e+`).
    InvalidNumber,
    /// A bare word that is not `true`, `false` or `null`.
    InvalidLiteral,
    /// A `\` escape other than `\" \\ \/ \b \f \n \r \t \uXXXX`.
    InvalidEscape,
    /// A `\uD800`–`\uDFFF` escape that is not half of a high+low surrogate pair.
    LoneSurrogate,
    /// A raw control character (U+0000–U+001F) inside a string.
    ControlCharacter,
    /// Bytes that are not UTF-8 inside a string.
    InvalidUtf8,
    /// Arrays/objects nested deeper than the configured bound.
    TooDeep {
        /// The configured bound.
        max_depth: usize,
    },
    /// The input ended before the document did (only from `finish`).
    UnexpectedEof,
    /// The value builder refused a value (e.g. an integer too long for the target type).
    Builder(String),
}

/// A JSON syntax error (or exceeded bound) at a byte offset of the whole input fed so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonError {
    /// Offset (0-based) of the offending byte in the concatenation of everything fed.
    pub offset: u64,
    /// What was wrong.
    pub kind: JsonErrorKind,
}

impl fmt::Display for JsonErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ExpectedValue => f.write_str("expected a JSON value"),
            Self::ExpectedKey => f.write_str("expected a string object key"),
            Self::ExpectedColon => f.write_str("expected `:` after an object key"),
            Self::ExpectedCommaOrBracket => f.write_str("expected `,` or `]` after an array element"),
            Self::ExpectedCommaOrBrace => f.write_str("expected `,` or `}` after an object member"),
            Self::TrailingComma => f.write_str("trailing comma"),
            Self::TrailingCharacters => f.write_str("trailing characters after the JSON value"),
            Self::InvalidNumber => f.write_str("invalid number"),
            Self::InvalidLiteral => f.write_str("invalid literal (expected `true`, `false` or `null`)"),
            Self::InvalidEscape => f.write_str("invalid escape in string"),
            Self::LoneSurrogate => f.write_str("lone surrogate in \\u escape (expected a high+low surrogate pair)"),
            Self::ControlCharacter => f.write_str("control character (U+0000-U+001F) in string"),
            Self::InvalidUtf8 => f.write_str("invalid UTF-8 in string"),
            Self::TooDeep { max_depth } => write!(f, "nesting deeper than max_depth={max_depth}"),
            Self::UnexpectedEof => f.write_str("unexpected end of input"),
            Self::Builder(msg) => f.write_str(msg),
        }
    }
}

impl fmt::Display for JsonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at byte {}", self.kind, self.offset)
    }
}

impl std::error::Error for JsonError {}
