//! The token scanner over a complete JSON text: the one place that knows JSON's grammar for the
//! readers that have the whole document (an event's `data`, a chunk, a response object).
//!
//! Like jiter's `Parser`, it reads tokens and leaves the building to its callers: [`Scanner::peek`]
//! skips whitespace and shows the next byte; the caller then reads the value that byte starts
//! ([`string`](Scanner::string), [`number`](Scanner::number), [`literal`](Scanner::literal)) or walks a
//! container with [`array_first`](Scanner::array_first)/[`array_step`](Scanner::array_step) and
//! [`object_first`](Scanner::object_first)/[`object_step`](Scanner::object_step)/[`colon`](Scanner::colon),
//! which check the punctuation and the depth bound. Builders on top: the Python objects of the PyO3
//! glue, the chat chunk reader's borrowed view. Strings without escapes are borrowed from the input;
//! strings with escapes are decoded into the caller's buffer (its "tape"). Errors carry the byte offset.
//!
//! Everything here is `#[inline]`: the builders are generic code in other crates (the PyO3 module),
//! and these are the token loops of their hot paths.

use std::fmt;

use super::error::JsonErrorKind;
use super::parser::Scalar;
use super::scan::{hex4, scan_plain, short_escape};

/// What the scanner found wrong; [`ScanError`] adds where. `Copy` and one byte, so a `Result` of a
/// token stays in registers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScanErrorKind {
    /// A value must start here (also a bare word that is not `true`/`false`/`null`).
    ExpectedValue,
    /// An object key (a string) must start here.
    ExpectedKey,
    /// A `:` must follow an object key.
    ExpectedColon,
    /// Inside an array a value must be followed by `,` or `]`.
    ExpectedCommaOrBracket,
    /// Inside an object a member must be followed by `,` or `}`.
    ExpectedCommaOrBrace,
    /// Something other than whitespace after the value.
    TrailingCharacters,
    /// A number that breaks the JSON grammar (`01`, `1.`, `-`, `1e+`).
    InvalidNumber,
    /// A literal that is not `true`, `false` or `null` (`tru`, `nul`).
    InvalidLiteral,
    /// A `\` escape other than `\" \\ \/ \b \f \n \r \t \uXXXX`.
    InvalidEscape,
    /// `\u` not followed by four hex digits.
    InvalidUnicodeEscape,
    /// `\u` with fewer than four bytes left in the input.
    TruncatedEscape,
    /// A `\uD800`–`\uDFFF` escape that is not half of a high+low surrogate pair.
    LoneSurrogate,
    /// A raw control character (U+0000–U+001F) inside a string.
    ControlCharacter,
    /// The input ended inside a string.
    UnterminatedString,
    /// The input ended where a value or punctuation must come.
    UnexpectedEof,
    /// Arrays/objects nested deeper than the scanner's bound.
    TooDeep,
}

/// A token error at a byte offset of the scanned text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScanError {
    /// Offset (0-based) of the offending byte, or the input's length at its end.
    pub index: usize,
    /// What was wrong.
    pub kind: ScanErrorKind,
}

impl ScanErrorKind {
    /// The incremental parser's kind for the same mistake (`max_depth`: the scanner's bound).
    pub fn to_json_kind(self, max_depth: usize) -> JsonErrorKind {
        match self {
            Self::ExpectedValue => JsonErrorKind::ExpectedValue,
            Self::ExpectedKey => JsonErrorKind::ExpectedKey,
            Self::ExpectedColon => JsonErrorKind::ExpectedColon,
            Self::ExpectedCommaOrBracket => JsonErrorKind::ExpectedCommaOrBracket,
            Self::ExpectedCommaOrBrace => JsonErrorKind::ExpectedCommaOrBrace,
            Self::TrailingCharacters => JsonErrorKind::TrailingCharacters,
            Self::InvalidNumber => JsonErrorKind::InvalidNumber,
            Self::InvalidLiteral => JsonErrorKind::InvalidLiteral,
            Self::InvalidEscape | Self::InvalidUnicodeEscape => JsonErrorKind::InvalidEscape,
            Self::LoneSurrogate => JsonErrorKind::LoneSurrogate,
            Self::ControlCharacter => JsonErrorKind::ControlCharacter,
            Self::TruncatedEscape | Self::UnterminatedString | Self::UnexpectedEof => JsonErrorKind::UnexpectedEof,
            Self::TooDeep => JsonErrorKind::TooDeep { max_depth },
        }
    }
}

impl fmt::Display for ScanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.kind {
            ScanErrorKind::ExpectedValue => "expected a JSON value",
            ScanErrorKind::ExpectedKey => "expected a string object key",
            ScanErrorKind::ExpectedColon => "expected `:` after an object key",
            ScanErrorKind::ExpectedCommaOrBracket => "expected `,` or `]` after an array element",
            ScanErrorKind::ExpectedCommaOrBrace => "expected `,` or `}` after an object member",
            ScanErrorKind::TrailingCharacters => "trailing characters after the JSON value",
            ScanErrorKind::InvalidNumber => "invalid number",
            ScanErrorKind::InvalidLiteral => "invalid literal (expected `true`, `false` or `null`)",
            ScanErrorKind::InvalidEscape => "invalid escape in string",
            ScanErrorKind::InvalidUnicodeEscape => "invalid \\u escape",
            ScanErrorKind::TruncatedEscape => "truncated \\u escape",
            ScanErrorKind::LoneSurrogate => "lone surrogate in \\u escape (expected a high+low surrogate pair)",
            ScanErrorKind::ControlCharacter => "control character (U+0000-U+001F) in string",
            ScanErrorKind::UnterminatedString => "unterminated string",
            ScanErrorKind::UnexpectedEof => "unexpected end of input",
            ScanErrorKind::TooDeep => "nesting too deep",
        };
        write!(f, "{what} at byte {}", self.index)
    }
}

impl std::error::Error for ScanError {}

/// The start of a string, as [`Scanner::string_start`] found it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StrStart<'j> {
    /// The whole string, without escapes, borrowed from the input; `ascii` when every byte is.
    Plain {
        /// The text between the quotes.
        text: &'j str,
        /// Every byte is ASCII (computed only when asked for, else `false`).
        ascii: bool,
    },
    /// An escape at the scanner's position; the text from `start` (after the opening quote) up to it
    /// has none. Finish with [`Scanner::decode_rest`] or [`Scanner::skip_rest`].
    Escaped {
        /// Offset of the string's first byte (after the opening quote).
        start: usize,
    },
}

/// A string read by [`Scanner::string`]: borrowed from the input, or decoded into the tape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Str<'j, 't> {
    /// No escapes: the input's own bytes; `ascii` as in [`StrStart::Plain`].
    Borrowed(&'j str, bool),
    /// Had escapes: decoded into the tape passed in.
    Decoded(&'t str),
}

impl<'a> Str<'a, 'a> {
    /// The text, wherever it lives.
    #[inline]
    pub fn as_str(&self) -> &'a str {
        match *self {
            Self::Borrowed(s, _) | Self::Decoded(s) => s,
        }
    }
}

/// A number's text, checked against the grammar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Number<'j> {
    /// The number as written (`-12`, `3.5e-2`).
    pub text: &'j str,
    /// It has a fraction or an exponent.
    pub float: bool,
}

impl<'j> Number<'j> {
    /// The number as builders take it: [`Scalar::Int`] when an integer fits `i64` (`-0` is `0`),
    /// [`Scalar::BigInt`] (its digits) when it does not, [`Scalar::Float`] otherwise (correctly
    /// rounded, like Python's `float()`; past `f64`'s range ±infinity, as Python's `json` and jiter).
    #[inline]
    pub fn scalar(self) -> Scalar<'j> {
        if self.float {
            Scalar::Float(self.text.parse().unwrap_or(f64::NAN))
        } else {
            self.text.parse().map_or(Scalar::BigInt(self.text), Scalar::Int)
        }
    }
}

/// The token scanner (see the module doc).
#[derive(Debug, Clone)]
pub struct Scanner<'j> {
    text: &'j str,
    data: &'j [u8],
    index: usize,
    depth: usize,
    max_depth: usize,
}

/// The error at `index` (cold: it keeps the callers' happy paths short).
#[cold]
#[inline(never)]
fn error<T>(index: usize, kind: ScanErrorKind) -> Result<T, ScanError> {
    Err(ScanError { index, kind })
}

// `inline(always)` on the per-token pieces: `ResponseEventParser.feed` and the chunk reader call
// them from other crates / generic code, where a call per token showed up in the profile.
#[allow(clippy::inline_always)]
impl<'j> Scanner<'j> {
    /// A scanner at the start of `text` that rejects arrays/objects nested deeper than `max_depth`.
    #[inline]
    pub fn new(text: &'j str, max_depth: usize) -> Self {
        Self {
            text,
            data: text.as_bytes(),
            index: 0,
            depth: 0,
            max_depth,
        }
    }

    /// The text being scanned.
    #[inline]
    pub fn text(&self) -> &'j str {
        self.text
    }

    /// The offset of the next byte to read.
    #[inline]
    pub fn index(&self) -> usize {
        self.index
    }

    /// Open arrays/objects.
    #[inline]
    pub fn depth(&self) -> usize {
        self.depth
    }

    /// Moves to `index` (a position this scanner reported, such as a string's start).
    #[inline]
    pub fn set_index(&mut self, index: usize) {
        self.index = index;
    }

    /// Skips whitespace; the next byte, not consumed (`None` at the end of the input).
    #[inline(always)]
    pub fn peek(&mut self) -> Option<u8> {
        let c = *self.data.get(self.index)?;
        // Whitespace is at most b' ': one comparison for the usual case of none.
        if c > b' ' {
            return Some(c);
        }
        loop {
            let c = *self.data.get(self.index)?;
            if !matches!(c, b' ' | b'\n' | b'\t' | b'\r') {
                return Some(c);
            }
            self.index += 1;
        }
    }

    /// Consumes the byte [`peek`](Self::peek) returned.
    #[inline(always)]
    pub fn advance(&mut self) {
        self.index += 1;
    }

    /// The next value's first byte (after whitespace): an error at the end of the input.
    #[inline(always)]
    pub fn value_start(&mut self) -> Result<u8, ScanError> {
        match self.peek() {
            Some(c) => Ok(c),
            None => error(self.index, ScanErrorKind::UnexpectedEof),
        }
    }

    /// Only whitespace may follow.
    #[inline]
    pub fn end(&mut self) -> Result<(), ScanError> {
        match self.peek() {
            None => Ok(()),
            Some(_) => error(self.index, ScanErrorKind::TrailingCharacters),
        }
    }

    #[inline(always)]
    fn enter(&mut self) -> Result<(), ScanError> {
        if self.depth >= self.max_depth {
            return error(self.index, ScanErrorKind::TooDeep);
        }
        self.depth += 1;
        self.index += 1;
        Ok(())
    }

    #[inline(always)]
    fn leave(&mut self) {
        self.depth -= 1;
        self.index += 1;
    }

    /// At `[` (peeked): consumes it; the first element's first byte (not consumed), or `None` for
    /// `[]` (consumed).
    #[inline(always)]
    pub fn array_first(&mut self) -> Result<Option<u8>, ScanError> {
        self.enter()?;
        match self.peek() {
            Some(b']') => {
                self.leave();
                Ok(None)
            }
            Some(c) => Ok(Some(c)),
            None => error(self.index, ScanErrorKind::UnexpectedEof),
        }
    }

    /// After an array element: `,` and the next element's first byte (not consumed), or `None` at
    /// `]` (consumed). A `]` after `,` is returned as the next element's byte, which no value starts.
    #[inline(always)]
    pub fn array_step(&mut self) -> Result<Option<u8>, ScanError> {
        match self.peek() {
            Some(b',') => {
                self.index += 1;
                self.value_start().map(Some)
            }
            Some(b']') => {
                self.leave();
                Ok(None)
            }
            _ => error(self.index, ScanErrorKind::ExpectedCommaOrBracket),
        }
    }

    /// At `{` (peeked): consumes it; whether a member follows (its key's `"` next, not consumed),
    /// `false` for `{}` (consumed).
    #[inline(always)]
    pub fn object_first(&mut self) -> Result<bool, ScanError> {
        self.enter()?;
        match self.peek() {
            Some(b'"') => Ok(true),
            Some(b'}') => {
                self.leave();
                Ok(false)
            }
            _ => error(self.index, ScanErrorKind::ExpectedKey),
        }
    }

    /// After an object member: `,` and whether a key follows (its `"` next, not consumed), `false`
    /// at `}` (consumed).
    #[inline(always)]
    pub fn object_step(&mut self) -> Result<bool, ScanError> {
        match self.peek() {
            Some(b',') => {
                self.index += 1;
                if self.peek() == Some(b'"') {
                    Ok(true)
                } else {
                    error(self.index, ScanErrorKind::ExpectedKey)
                }
            }
            Some(b'}') => {
                self.leave();
                Ok(false)
            }
            _ => error(self.index, ScanErrorKind::ExpectedCommaOrBrace),
        }
    }

    /// The `:` after a key (the value's first byte is the caller's next [`value_start`](Self::value_start)
    /// or [`peek`](Self::peek): a reader that dispatches on the key peeks there anyway, and one more
    /// peek per member here cost the chunk reader ~1.5% of its instructions).
    #[inline(always)]
    pub fn colon(&mut self) -> Result<(), ScanError> {
        if self.peek() != Some(b':') {
            return error(self.index, ScanErrorKind::ExpectedColon);
        }
        self.index += 1;
        Ok(())
    }

    /// `word` (`b"true"`, `b"false"`, `b"null"`; its first byte peeked, not consumed).
    #[inline(always)]
    pub fn literal(&mut self, word: &'static [u8]) -> Result<(), ScanError> {
        if self.data[self.index..].starts_with(word) {
            self.index += word.len();
            Ok(())
        } else {
            error(self.index, ScanErrorKind::InvalidLiteral)
        }
    }

    /// At a string's `"` (peeked): consumes it and reads to the first `"`, `\` or (with
    /// `CONTROLS`) control character. `CONTROLS = false` is for a caller that knows the text holds no
    /// byte below 0x20; `ASCII` computes [`StrStart::Plain`]'s `ascii`.
    #[inline(always)]
    pub fn string_start<const CONTROLS: bool, const ASCII: bool>(&mut self) -> Result<StrStart<'j>, ScanError> {
        let start = self.index + 1;
        let (end, ascii) = scan_plain::<CONTROLS, ASCII>(self.data, start);
        match self.data.get(end) {
            Some(b'"') => {
                self.index = end + 1;
                Ok(StrStart::Plain {
                    // SAFETY: `start` follows an ASCII `"` and `end` is at one, so both are char
                    // boundaries within the text. Unchecked: the checks cost the chunk reader ~40
                    // instructions a chunk (callgrind), and a skipped string does not use the text.
                    text: unsafe { self.text.get_unchecked(start..end) },
                    ascii,
                })
            }
            Some(b'\\') => {
                self.index = end;
                Ok(StrStart::Escaped { start })
            }
            Some(_) => error(end, ScanErrorKind::ControlCharacter),
            None => error(end, ScanErrorKind::UnterminatedString),
        }
    }

    /// The rest of a [`StrStart::Escaped`] string, decoded and appended to `out` (which gets
    /// `text[start..]` first); leaves the scanner after the closing quote. Surrogate escapes must pair.
    #[inline(never)]
    pub fn decode_rest<const CONTROLS: bool>(&mut self, start: usize, out: &mut String) -> Result<(), ScanError> {
        let mut at = start;
        loop {
            let (end, _) = scan_plain::<CONTROLS, false>(self.data, at);
            // `at` and `end` are at ASCII bytes or the ends of the input, so on char boundaries.
            out.push_str(&self.text[at..end]);
            match self.data.get(end) {
                Some(b'"') => {
                    self.index = end + 1;
                    return Ok(());
                }
                Some(b'\\') => {
                    self.index = end + 1;
                    let c = self.escape()?;
                    out.push(c);
                    at = self.index;
                }
                Some(_) => return error(end, ScanErrorKind::ControlCharacter),
                None => return error(end, ScanErrorKind::UnterminatedString),
            }
        }
    }

    /// One escape after its `\` (the scanner at the byte after it).
    #[inline]
    fn escape(&mut self) -> Result<char, ScanError> {
        let Some(&c) = self.data.get(self.index) else {
            return error(self.index, ScanErrorKind::UnterminatedString);
        };
        if c != b'u' {
            return match short_escape(c) {
                Some(c) => {
                    self.index += 1;
                    Ok(c)
                }
                None => error(self.index, ScanErrorKind::InvalidEscape),
            };
        }
        let at = self.index - 1;
        self.index += 1;
        let n = self.hex4()?;
        let code = match n {
            0xDC00..=0xDFFF => return error(at, ScanErrorKind::LoneSurrogate),
            0xD800..=0xDBFF => {
                if self.data.get(self.index) != Some(&b'\\') || self.data.get(self.index + 1) != Some(&b'u') {
                    return error(at, ScanErrorKind::LoneSurrogate);
                }
                self.index += 2;
                let low = self.hex4()?;
                if !(0xDC00..=0xDFFF).contains(&low) {
                    return error(at, ScanErrorKind::LoneSurrogate);
                }
                0x1_0000 + ((u32::from(n) - 0xD800) << 10) + (u32::from(low) - 0xDC00)
            }
            _ => u32::from(n),
        };
        match char::from_u32(code) {
            Some(c) => Ok(c),
            None => error(at, ScanErrorKind::LoneSurrogate),
        }
    }

    /// Four hex digits.
    #[inline]
    fn hex4(&mut self) -> Result<u16, ScanError> {
        let digits = self.data.get(self.index..).unwrap_or_default();
        match hex4(digits) {
            Some(n) => {
                self.index += 4;
                Ok(n)
            }
            None if digits.len() < 4 => error(self.index, ScanErrorKind::TruncatedEscape),
            None => error(self.index, ScanErrorKind::InvalidUnicodeEscape),
        }
    }

    /// The rest of a [`StrStart::Escaped`] string, checked (escapes well-formed, surrogates need not
    /// pair: serde's `ignore_str`) and skipped; the scanner after the closing quote. Out of line, as
    /// `skip_number`: `skip_value` is inlined into every struct the chunk reader walks, and with these
    /// inlined too its hot loop missed the instruction cache twice as often per chunk (cachegrind).
    #[inline(never)]
    pub fn skip_rest<const CONTROLS: bool>(&mut self) -> Result<(), ScanError> {
        let mut at = self.index;
        loop {
            let (end, _) = scan_plain::<CONTROLS, false>(self.data, at);
            match self.data.get(end) {
                Some(b'"') => {
                    self.index = end + 1;
                    return Ok(());
                }
                Some(b'\\') => {
                    self.index = end + 1;
                    match self.data.get(self.index) {
                        Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => self.index += 1,
                        Some(b'u') => {
                            self.index += 1;
                            self.hex4()?;
                        }
                        Some(_) => return error(self.index, ScanErrorKind::InvalidEscape),
                        None => return error(self.index, ScanErrorKind::UnterminatedString),
                    }
                    at = self.index;
                }
                Some(_) => return error(end, ScanErrorKind::ControlCharacter),
                None => return error(end, ScanErrorKind::UnterminatedString),
            }
        }
    }

    /// At a string's `"` (peeked): the whole string, borrowed or decoded into `tape` (cleared first).
    #[inline(always)]
    pub fn string<'t, const CONTROLS: bool>(&mut self, tape: &'t mut String) -> Result<Str<'j, 't>, ScanError> {
        match self.string_start::<CONTROLS, false>()? {
            StrStart::Plain { text, ascii } => Ok(Str::Borrowed(text, ascii)),
            StrStart::Escaped { start } => {
                tape.clear();
                self.decode_rest::<CONTROLS>(start, tape)?;
                Ok(Str::Decoded(tape.as_str()))
            }
        }
    }

    /// At a string's `"` (peeked): checks and skips it (surrogates need not pair).
    #[inline(always)]
    pub fn skip_string<const CONTROLS: bool>(&mut self) -> Result<(), ScanError> {
        match self.string_start::<CONTROLS, false>()? {
            StrStart::Plain { .. } => Ok(()),
            StrStart::Escaped { .. } => self.skip_rest::<CONTROLS>(),
        }
    }

    #[inline(always)]
    fn digits(&mut self) -> usize {
        let start = self.index;
        while self.data.get(self.index).is_some_and(u8::is_ascii_digit) {
            self.index += 1;
        }
        self.index - start
    }

    /// At a number's `-` or first digit (peeked): its text, checked against the grammar.
    #[inline(always)]
    pub fn number(&mut self) -> Result<Number<'j>, ScanError> {
        let start = self.index;
        if self.data.get(self.index) == Some(&b'-') {
            self.index += 1;
        }
        let int_start = self.index;
        let int_digits = self.digits();
        if int_digits == 0 || (int_digits > 1 && self.data[int_start] == b'0') {
            return error(
                if int_digits == 0 { self.index } else { int_start + 1 },
                ScanErrorKind::InvalidNumber,
            );
        }
        let mut float = false;
        if self.data.get(self.index) == Some(&b'.') {
            self.index += 1;
            if self.digits() == 0 {
                return error(self.index, ScanErrorKind::InvalidNumber);
            }
            float = true;
        }
        if matches!(self.data.get(self.index), Some(b'e' | b'E')) {
            self.index += 1;
            if matches!(self.data.get(self.index), Some(b'+' | b'-')) {
                self.index += 1;
            }
            if self.digits() == 0 {
                return error(self.index, ScanErrorKind::InvalidNumber);
            }
            float = true;
        }
        Ok(Number {
            // SAFETY: `start..index` holds only the ASCII bytes just read, so both ends are char
            // boundaries within the text (unchecked for the same reason as in `string_start`).
            text: unsafe { self.text.get_unchecked(start..self.index) },
            float,
        })
    }

    /// Any value (its first byte next, after whitespace), checked and skipped: strings as
    /// [`skip_string`](Self::skip_string), containers to any depth with `stack` (cleared first;
    /// the depth bound does not apply: nothing is built).
    #[inline(always)]
    pub fn skip_value<const CONTROLS: bool>(&mut self, stack: &mut Vec<u8>) -> Result<(), ScanError> {
        // Scalars (most skipped values: ids, names, timestamps, `null`) need no stack.
        match self.value_start()? {
            b'"' => self.skip_string::<CONTROLS>(),
            b'n' => self.literal(b"null"),
            b'0'..=b'9' => self.skip_number(),
            _ => {
                stack.clear();
                self.skip_nested::<CONTROLS>(stack)
            }
        }
    }

    #[inline(never)]
    fn skip_number(&mut self) -> Result<(), ScanError> {
        self.number().map(drop)
    }

    fn skip_key<const CONTROLS: bool>(&mut self) -> Result<(), ScanError> {
        if self.peek() != Some(b'"') {
            return error(self.index, ScanErrorKind::ExpectedKey);
        }
        self.skip_string::<CONTROLS>()?;
        if self.peek() != Some(b':') {
            return error(self.index, ScanErrorKind::ExpectedColon);
        }
        self.index += 1;
        Ok(())
    }

    #[inline(never)]
    fn skip_nested<const CONTROLS: bool>(&mut self, stack: &mut Vec<u8>) -> Result<(), ScanError> {
        loop {
            match self.value_start()? {
                b'"' => self.skip_string::<CONTROLS>()?,
                b'n' => self.literal(b"null")?,
                b't' => self.literal(b"true")?,
                b'f' => self.literal(b"false")?,
                b'-' | b'0'..=b'9' => {
                    self.number()?;
                }
                open @ (b'[' | b'{') => {
                    self.index += 1;
                    let close = if open == b'[' { b']' } else { b'}' };
                    if self.peek() == Some(close) {
                        self.index += 1;
                    } else {
                        stack.push(open);
                        if open == b'{' {
                            self.skip_key::<CONTROLS>()?;
                        }
                        continue;
                    }
                }
                _ => return error(self.index, ScanErrorKind::ExpectedValue),
            }
            // A value ended: close what it ends, or go on after a comma.
            loop {
                let Some(&open) = stack.last() else {
                    return Ok(());
                };
                match self.peek() {
                    Some(b',') => {
                        self.index += 1;
                        if open == b'{' {
                            self.skip_key::<CONTROLS>()?;
                        }
                        break;
                    }
                    Some(b']') if open == b'[' => {
                        self.index += 1;
                        stack.pop();
                    }
                    Some(b'}') if open == b'{' => {
                        self.index += 1;
                        stack.pop();
                    }
                    _ if open == b'[' => return error(self.index, ScanErrorKind::ExpectedCommaOrBracket),
                    _ => return error(self.index, ScanErrorKind::ExpectedCommaOrBrace),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Number, ScanError, ScanErrorKind, Scanner, Str};

    /// Reads one value into a compact text form, as a builder would: the grammar's walk.
    #[allow(clippy::format_push_string)] // a test: clarity over an allocation
    fn walk(sc: &mut Scanner<'_>, first: u8, out: &mut String) -> Result<(), ScanError> {
        let mut tape = String::new();
        match first {
            b'[' => {
                out.push('[');
                let mut next = sc.array_first()?;
                while let Some(c) = next {
                    walk(sc, c, out)?;
                    out.push(',');
                    next = sc.array_step()?;
                }
                out.push(']');
            }
            b'{' => {
                out.push('{');
                let mut more = sc.object_first()?;
                while more {
                    let key = sc.string::<true>(&mut tape)?.as_str().to_owned();
                    out.push_str(&key);
                    out.push(':');
                    sc.colon()?;
                    let c = sc.value_start()?;
                    walk(sc, c, out)?;
                    out.push(',');
                    more = sc.object_step()?;
                }
                out.push('}');
            }
            b'"' => {
                let s = sc.string::<true>(&mut tape)?;
                out.push_str(&format!("{:?}", s.as_str()));
            }
            b't' => sc.literal(b"true").map(|()| out.push('T'))?,
            b'f' => sc.literal(b"false").map(|()| out.push('F'))?,
            b'n' => sc.literal(b"null").map(|()| out.push('N'))?,
            b'-' | b'0'..=b'9' => {
                let Number { text, float } = sc.number()?;
                out.push_str(text);
                if float {
                    out.push('f');
                }
            }
            _ => {
                return Err(ScanError {
                    index: sc.index(),
                    kind: ScanErrorKind::ExpectedValue,
                })
            }
        }
        Ok(())
    }

    fn read(text: &str) -> Result<String, ScanError> {
        let mut sc = Scanner::new(text, 4);
        let mut out = String::new();
        let c = sc.value_start()?;
        walk(&mut sc, c, &mut out)?;
        sc.end()?;
        Ok(out)
    }

    fn kind(text: &str) -> (usize, ScanErrorKind) {
        let e = read(text).expect_err(text);
        (e.index, e.kind)
    }

    #[test]
    fn walks_values() {
        assert_eq!(
            read(r#" {"a": [1, -2.5e3, true, null], "b\n": "x\u00e9\ud83d\ude00", "c": {}} "#).unwrap(),
            "{a:[1,-2.5e3f,T,N,],b\n:\"xé😀\",c:{},}"
        );
        assert_eq!(read("[]").unwrap(), "[]");
        assert_eq!(read("0").unwrap(), "0");
    }

    #[test]
    fn borrows_plain_strings_and_decodes_escaped_ones() {
        let mut tape = String::new();
        let mut sc = Scanner::new(r#""abc" "a\"b""#, 4);
        assert_eq!(sc.string::<true>(&mut tape).unwrap(), Str::Borrowed("abc", false));
        assert_eq!(sc.peek(), Some(b'"'));
        assert_eq!(sc.string::<true>(&mut tape).unwrap(), Str::Decoded("a\"b"));
        let mut sc = Scanner::new(r#""abc" "é""#, 4);
        assert!(matches!(
            sc.string_start::<true, true>(),
            Ok(super::StrStart::Plain {
                text: "abc",
                ascii: true
            })
        ));
        sc.peek();
        assert!(matches!(
            sc.string_start::<true, true>(),
            Ok(super::StrStart::Plain {
                text: "é",
                ascii: false
            })
        ));
    }

    #[test]
    fn errors_say_what_and_where() {
        use ScanErrorKind::*;
        assert_eq!(kind("[1,]"), (3, ExpectedValue));
        assert_eq!(kind(r#"{"a":1,}"#), (7, ExpectedKey));
        assert_eq!(kind(r#"{"a" 1}"#), (5, ExpectedColon));
        assert_eq!(kind("[1 2]"), (3, ExpectedCommaOrBracket));
        assert_eq!(kind(r#"{"a":1 "b"}"#), (7, ExpectedCommaOrBrace));
        assert_eq!(kind("1 x"), (2, TrailingCharacters));
        assert_eq!(kind("01"), (1, InvalidNumber));
        assert_eq!(kind("1."), (2, InvalidNumber));
        assert_eq!(kind("-"), (1, InvalidNumber));
        assert_eq!(kind("1e+"), (3, InvalidNumber));
        assert_eq!(kind("tru"), (0, InvalidLiteral));
        assert_eq!(kind(r#""\x""#), (2, InvalidEscape));
        assert_eq!(kind(r#""\u12g4""#), (3, InvalidUnicodeEscape));
        assert_eq!(kind(r#""\u12"#), (3, TruncatedEscape));
        assert_eq!(kind(r#""\ud800x""#), (1, LoneSurrogate));
        assert_eq!(kind(r#""\udc00""#), (1, LoneSurrogate));
        assert_eq!(kind("\"a\tb\""), (2, ControlCharacter));
        assert_eq!(kind("\"ab"), (3, UnterminatedString));
        assert_eq!(kind("[1,"), (3, UnexpectedEof));
        assert_eq!(kind(""), (0, UnexpectedEof));
        assert_eq!(kind("[[[[[]]]]]"), (4, TooDeep));
        assert!(read("[[[[]]]]").is_ok());
    }

    #[test]
    fn skips_any_value_without_a_depth_bound() {
        let deep = format!("{}{}", "[".repeat(100), "]".repeat(100));
        for text in [
            r#"{"a": [1, {"b": "\ud800"}], "c": -0.5}"#,
            "null",
            "\"x\"",
            "12",
            &deep,
        ] {
            let mut sc = Scanner::new(text, 4);
            sc.skip_value::<true>(&mut Vec::new()).unwrap();
            assert_eq!(sc.index(), text.len(), "{text}");
        }
        let mut sc = Scanner::new("[1,}", 4);
        assert_eq!(
            sc.skip_value::<true>(&mut Vec::new()).unwrap_err().kind,
            ScanErrorKind::ExpectedValue
        );
    }
}
