//! The resumable parser: bytes in, [`JsonBuilder`] events out, state kept between chunks.
//!
//! The tokens that lie whole inside a chunk (strings, keys, numbers, literals: nearly all of them when
//! a document comes in a few large pieces) are read by the [`Scanner`], the same token reader as every
//! reader of whole texts; the state machine here keeps only the structure (open containers, where a
//! value or key is due) and takes over, byte by byte, a token that a chunk's end cuts (or that the
//! scanner found wrong: the machine then says what and where, exactly as for a cut one). What is in
//! progress when a chunk ends (a string, a number, a literal, an escape, a UTF-8 character cut mid-way)
//! is kept in `scratch`/`state`, never re-read, so a document fed in any number of pieces costs
//! O(total bytes).

use memchr::memchr2;

use super::error::{JsonError, JsonErrorKind};
use super::scan::{hex_digit, short_escape};
use super::scanner::{Number, Scanner, StrStart};

/// A complete scalar handed to a [`JsonBuilder`] (or the trailing partial one, see [`JsonParser::partial`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Scalar<'a> {
    /// `null`.
    Null,
    /// `true` / `false`.
    Bool(bool),
    /// An integer that fits in `i64` (`-0` is `0`).
    Int(i64),
    /// An integer outside `i64`: its digits, with a leading `-` when negative.
    BigInt(&'a str),
    /// A number with a fraction or exponent (out of range: ±infinity, as Python's `json` and jiter).
    Float(f64),
    /// A string, escapes decoded.
    Str(&'a str),
}

/// Receives the document's structure as the parser reads it (jiter's builder pattern: one parser,
/// a Rust tree or Python objects built directly).
///
/// Calls nest properly: a value is `scalar`, or `start_*` … `end`; inside an object each value is
/// preceded by `key`.
pub trait JsonBuilder {
    /// An array opened (`[`).
    fn start_array(&mut self);
    /// An object opened (`{`).
    fn start_object(&mut self);
    /// The key of the object member whose value comes next.
    fn key(&mut self, key: &str);
    /// A complete scalar value.
    fn scalar(&mut self, value: Scalar<'_>);
    /// The innermost open array/object closed.
    fn end(&mut self);
}

/// A token is read by the scanner only where at least this much of the chunk is left: in the small pieces of
/// a stream (tool-call arguments come a few bytes at a time) most tokens are cut, and trying the scanner
/// first would read each of them twice (criterion, 20 KB of records in 2,000 pieces: +30% with no minimum).
const SCAN_MIN: usize = 64;

/// Default bound on array/object nesting.
pub const DEFAULT_MAX_DEPTH: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Container {
    Array,
    Object,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Literal {
    True,
    False,
    Null,
}

impl Literal {
    fn text(self) -> &'static [u8] {
        match self {
            Self::True => b"true",
            Self::False => b"false",
            Self::Null => b"null",
        }
    }
}

/// Where inside a number the last byte left us; `Zero`, `Int`, `Frac`, `ExpDigits` may end it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Num {
    Start,
    Minus,
    Zero,
    Int,
    Dot,
    Frac,
    Exp,
    ExpSign,
    ExpDigits,
}

impl Num {
    fn can_end(self) -> bool {
        matches!(self, Self::Zero | Self::Int | Self::Frac | Self::ExpDigits)
    }

    /// The phase after `byte`, or `None` when `byte` is not part of this number.
    fn step(self, byte: u8) -> Option<Self> {
        Some(match (self, byte) {
            (Self::Start, b'-') => Self::Minus,
            (Self::Start | Self::Minus, b'0') => Self::Zero,
            (Self::Start | Self::Minus | Self::Int, b'1'..=b'9') | (Self::Int, b'0') => Self::Int,
            (Self::Zero | Self::Int, b'.') => Self::Dot,
            (Self::Dot | Self::Frac, b'0'..=b'9') => Self::Frac,
            (Self::Zero | Self::Int | Self::Frac, b'e' | b'E') => Self::Exp,
            (Self::Exp, b'+' | b'-') => Self::ExpSign,
            (Self::Exp | Self::ExpSign | Self::ExpDigits, b'0'..=b'9') => Self::ExpDigits,
            _ => return None,
        })
    }
}

/// Progress inside a `\` escape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Esc {
    None,
    Backslash,
    /// `\u` and `n` hex digits so far (value `acc`).
    Unicode {
        n: u8,
        acc: u16,
    },
    /// A high surrogate was read; its low half must follow as `\uDC00`–`\uDFFF`.
    NeedLow,
    NeedLowU,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// A value must start (top level, after `:`).
    Value,
    /// After `[`: a value or `]`.
    ArrayFirst,
    /// After `,` in an array: a value (`]` is a trailing comma).
    ArrayNext,
    /// After `{`: a key or `}`.
    ObjectFirst,
    /// After `,` in an object: a key.
    ObjectNext,
    Colon,
    /// After a value inside a container: `,` or the closing bracket.
    AfterValue,
    /// The top-level value is complete; only whitespace may follow.
    Done,
    Str {
        key: bool,
    },
    Num(Num),
    Lit {
        lit: Literal,
        matched: u8,
    },
}

/// The incremental parser: feed bytes in any pieces, events go to the builder passed to each call.
#[derive(Debug, Clone)]
pub struct JsonParser {
    state: State,
    stack: Vec<Container>,
    max_depth: usize,
    /// Bytes fed before the current chunk (error offsets are absolute).
    consumed: u64,
    /// The string (decoded) or number (raw) in progress across chunks.
    scratch: Vec<u8>,
    /// `scratch[..scratch_valid]` is valid UTF-8; the rest is the start of a character cut by a chunk end.
    scratch_valid: usize,
    esc: Esc,
    /// The high half of a surrogate pair awaiting its low half.
    high: u16,
    /// A string with escapes read whole by the scanner, decoded (reused).
    tape: String,
    error: Option<JsonError>,
}

impl Default for JsonParser {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_DEPTH)
    }
}

#[inline]
fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

/// Converts a complete number's text (already checked against the grammar) to a scalar, as the
/// scanner's [`Number::scalar`] does for the readers of whole texts.
#[inline]
fn number(text: &[u8]) -> Scalar<'_> {
    // SAFETY: the number grammar admits only ASCII `-+.eE0-9`.
    let text = unsafe { std::str::from_utf8_unchecked(text) };
    let float = text.bytes().any(|b| matches!(b, b'.' | b'e' | b'E'));
    Number { text, float }.scalar()
}

impl JsonParser {
    /// A parser that rejects arrays/objects nested deeper than `max_depth`.
    pub fn new(max_depth: usize) -> Self {
        Self {
            state: State::Value,
            stack: Vec::new(),
            max_depth,
            consumed: 0,
            scratch: Vec::new(),
            scratch_valid: 0,
            esc: Esc::None,
            high: 0,
            tape: String::new(),
            error: None,
        }
    }

    /// A parser that already failed with `error` (every call returns it), for a caller whose
    /// builder could not take a value.
    pub fn poisoned(error: JsonError) -> Self {
        Self {
            error: Some(error),
            ..Self::new(0)
        }
    }

    /// True once one whole top-level value has been read (a top-level number only once something
    /// follows it, or after [`finish`](Self::finish): more digits could still come).
    pub fn is_complete(&self) -> bool {
        self.state == State::Done
    }

    /// Bytes fed so far.
    pub fn offset(&self) -> u64 {
        self.consumed
    }

    /// Open arrays/objects.
    pub fn depth(&self) -> usize {
        self.stack.len()
    }

    /// The configured nesting bound.
    pub fn max_depth(&self) -> usize {
        self.max_depth
    }

    /// The error that stopped the parser, if any (every later call returns it again).
    pub fn error(&self) -> Option<&JsonError> {
        self.error.as_ref()
    }

    /// The value in progress at the end of the input so far, as jiter's `trailing-strings` mode shows
    /// it: a string value cut mid-way as its decoded prefix (without an escape or UTF-8 character cut
    /// mid-way), a number cut where it is already a valid number. `None` for anything else in
    /// progress (an object key, a literal, `-`, `1.`), which a partial view leaves out.
    #[inline]
    pub fn partial(&self) -> Option<Scalar<'_>> {
        match self.state {
            // SAFETY: `scratch[..scratch_valid]` is valid UTF-8 (the invariant kept by push/append).
            State::Str { key: false } => Some(Scalar::Str(unsafe {
                std::str::from_utf8_unchecked(&self.scratch[..self.scratch_valid])
            })),
            State::Num(phase) if phase.can_end() => Some(number(&self.scratch)),
            _ => None,
        }
    }

    /// End of input: completes a top-level number; errors unless one whole value was read.
    pub fn finish<B: JsonBuilder>(&mut self, builder: &mut B) -> Result<(), JsonError> {
        if let Some(e) = &self.error {
            return Err(e.clone());
        }
        match self.state {
            State::Done => Ok(()),
            State::Num(phase) if phase.can_end() && self.stack.is_empty() => {
                builder.scalar(number(&self.scratch));
                self.scratch.clear();
                self.state = State::Done;
                Ok(())
            }
            _ => Err(self.fail(self.consumed, JsonErrorKind::UnexpectedEof)),
        }
    }

    #[cold]
    fn fail(&mut self, offset: u64, kind: JsonErrorKind) -> JsonError {
        let e = JsonError { offset, kind };
        self.error = Some(e.clone());
        e
    }

    /// Parses the next chunk, calling `builder` for each value, key and container it completes.
    pub fn feed<B: JsonBuilder>(&mut self, input: &[u8], builder: &mut B) -> Result<(), JsonError> {
        if let Some(e) = &self.error {
            return Err(e.clone());
        }
        match self.run(input, builder) {
            Ok(()) => {
                self.consumed += input.len() as u64;
                Ok(())
            }
            Err((offset, kind)) => Err(self.fail(offset, kind)),
        }
    }

    #[inline]
    fn value_done(&mut self) {
        self.state = if self.stack.is_empty() {
            State::Done
        } else {
            State::AfterValue
        };
    }

    fn open<B: JsonBuilder>(&mut self, c: Container, builder: &mut B) -> Result<(), JsonErrorKind> {
        if self.stack.len() >= self.max_depth {
            return Err(JsonErrorKind::TooDeep {
                max_depth: self.max_depth,
            });
        }
        self.stack.push(c);
        match c {
            Container::Array => {
                builder.start_array();
                self.state = State::ArrayFirst;
            }
            Container::Object => {
                builder.start_object();
                self.state = State::ObjectFirst;
            }
        }
        Ok(())
    }

    fn close<B: JsonBuilder>(&mut self, builder: &mut B) {
        self.stack.pop();
        builder.end();
        self.value_done();
    }

    /// The first byte of a value (already known not to be whitespace).
    fn start_value<B: JsonBuilder>(&mut self, byte: u8, builder: &mut B) -> Result<bool, JsonErrorKind> {
        // Returns whether `byte` was consumed (a number's first byte is left for the number loop).
        match byte {
            b'{' => self.open(Container::Object, builder)?,
            b'[' => self.open(Container::Array, builder)?,
            b'"' => self.state = State::Str { key: false },
            b'-' | b'0'..=b'9' => {
                self.state = State::Num(Num::Start);
                return Ok(false);
            }
            b't' => {
                self.state = State::Lit {
                    lit: Literal::True,
                    matched: 1,
                }
            }
            b'f' => {
                self.state = State::Lit {
                    lit: Literal::False,
                    matched: 1,
                }
            }
            b'n' => {
                self.state = State::Lit {
                    lit: Literal::Null,
                    matched: 1,
                }
            }
            _ => return Err(JsonErrorKind::ExpectedValue),
        }
        Ok(true)
    }

    #[allow(clippy::too_many_lines)] // one flat state machine reads better than a dozen fragments
    fn run<B: JsonBuilder>(&mut self, input: &[u8], builder: &mut B) -> Result<(), (u64, JsonErrorKind)> {
        let base = self.consumed;
        let at = |i: usize| base + i as u64;
        let mut i = 0;
        let len = input.len();
        let mut text = Text::default();
        macro_rules! skip_ws {
            () => {
                while i < len && is_ws(input[i]) {
                    i += 1;
                }
                if i == len {
                    return Ok(());
                }
            };
        }
        while i < len {
            match self.state {
                State::Value => {
                    skip_ws!();
                    if let Some(next) = (len - i >= SCAN_MIN)
                        .then(|| self.scan_scalar(input, i, &mut text, builder))
                        .flatten()
                    {
                        i = next;
                        self.value_done();
                    } else if self.start_value(input[i], builder).map_err(|k| (at(i), k))? {
                        i += 1;
                    }
                }
                State::ArrayFirst | State::ArrayNext => {
                    skip_ws!();
                    if input[i] == b']' {
                        if self.state == State::ArrayNext {
                            return Err((at(i), JsonErrorKind::TrailingComma));
                        }
                        self.close(builder);
                        i += 1;
                    } else if let Some(next) = (len - i >= SCAN_MIN)
                        .then(|| self.scan_scalar(input, i, &mut text, builder))
                        .flatten()
                    {
                        i = next;
                        self.value_done();
                    } else if self.start_value(input[i], builder).map_err(|k| (at(i), k))? {
                        i += 1;
                    }
                }
                State::ObjectFirst | State::ObjectNext => {
                    skip_ws!();
                    match input[i] {
                        b'"' => {
                            if let Some(next) = (len - i >= SCAN_MIN)
                                .then(|| self.scan_string(input, i, true, &mut text, builder))
                                .flatten()
                            {
                                self.state = State::Colon;
                                i = next;
                                continue;
                            }
                            self.state = State::Str { key: true };
                        }
                        b'}' if self.state == State::ObjectFirst => self.close(builder),
                        b'}' => return Err((at(i), JsonErrorKind::TrailingComma)),
                        _ => return Err((at(i), JsonErrorKind::ExpectedKey)),
                    }
                    i += 1;
                }
                State::Colon => {
                    skip_ws!();
                    if input[i] != b':' {
                        return Err((at(i), JsonErrorKind::ExpectedColon));
                    }
                    self.state = State::Value;
                    i += 1;
                }
                State::AfterValue => {
                    skip_ws!();
                    match (self.stack.last(), input[i]) {
                        (Some(Container::Array), b',') => self.state = State::ArrayNext,
                        (Some(Container::Object), b',') => self.state = State::ObjectNext,
                        (Some(Container::Array), b']') | (Some(Container::Object), b'}') => self.close(builder),
                        (Some(Container::Array), _) => return Err((at(i), JsonErrorKind::ExpectedCommaOrBracket)),
                        _ => return Err((at(i), JsonErrorKind::ExpectedCommaOrBrace)),
                    }
                    i += 1;
                }
                State::Done => {
                    skip_ws!();
                    return Err((at(i), JsonErrorKind::TrailingCharacters));
                }
                State::Str { key } => i = self.string(input, i, key, builder)?,
                State::Num(mut phase) => {
                    let start = i;
                    while i < len {
                        match phase.step(input[i]) {
                            Some(next) => phase = next,
                            // `01`: a leading zero is not a number that ends before the `1`.
                            None if phase.can_end() && !(phase == Num::Zero && input[i].is_ascii_digit()) => break,
                            None => return Err((at(i), JsonErrorKind::InvalidNumber)),
                        }
                        i += 1;
                    }
                    if i == len {
                        self.scratch.extend_from_slice(&input[start..]);
                        self.state = State::Num(phase);
                    } else {
                        if self.scratch.is_empty() {
                            builder.scalar(number(&input[start..i]));
                        } else {
                            self.scratch.extend_from_slice(&input[start..i]);
                            builder.scalar(number(&self.scratch));
                            self.scratch.clear();
                        }
                        self.value_done();
                    }
                }
                State::Lit { lit, mut matched } => {
                    let text = lit.text();
                    while i < len && (matched as usize) < text.len() {
                        if input[i] != text[matched as usize] {
                            return Err((at(i), JsonErrorKind::InvalidLiteral));
                        }
                        matched += 1;
                        i += 1;
                    }
                    if (matched as usize) == text.len() {
                        builder.scalar(match lit {
                            Literal::True => Scalar::Bool(true),
                            Literal::False => Scalar::Bool(false),
                            Literal::Null => Scalar::Null,
                        });
                        self.value_done();
                    } else {
                        self.state = State::Lit { lit, matched };
                    }
                }
            }
        }
        Ok(())
    }

    /// A scalar value starting at `input[i]` read whole by the scanner and handed to `builder`: where it ends.
    /// `None` (nothing read) when it is a container, or may go on past what this chunk holds of valid UTF-8 (a
    /// number or literal that reaches its end, a string not closed in it), or the scanner found it wrong, or
    /// the chunk has less than [`SCAN_MIN`] bytes left (the caller's test): the state machine takes it from `i`.
    /// Out of line: inlined into `run`, it cost the small pieces of a stream, which never use it, ~2% more
    /// instructions (cachegrind).
    #[inline(never)]
    fn scan_scalar<B: JsonBuilder>(
        &mut self,
        input: &[u8],
        i: usize,
        text: &mut Text,
        builder: &mut B,
    ) -> Option<usize> {
        let literal = |word: &[u8]| input.get(i..i + word.len()) == Some(word);
        match input[i] {
            b'"' => self.scan_string(input, i, false, text, builder),
            b'-' | b'0'..=b'9' => {
                let (window, start) = text.at(input, i);
                let mut scanner = Scanner::new(window, self.max_depth);
                scanner.set_index(i - start);
                let number = scanner.number().ok()?;
                // (A number that reaches the end of the window may go on in the next chunk.)
                if scanner.index() >= window.len() {
                    return None;
                }
                builder.scalar(number.scalar());
                Some(start + scanner.index())
            }
            b't' if literal(b"true") => {
                builder.scalar(Scalar::Bool(true));
                Some(i + 4)
            }
            b'f' if literal(b"false") => {
                builder.scalar(Scalar::Bool(false));
                Some(i + 5)
            }
            b'n' if literal(b"null") => {
                builder.scalar(Scalar::Null);
                Some(i + 4)
            }
            _ => None,
        }
    }

    /// A string (a key, with `key`) whose `"` is `input[i]`, read whole by the scanner and handed to `builder`:
    /// where it ends; `None` (nothing read) when it is not closed within this chunk's valid UTF-8, or is wrong,
    /// or the chunk has less than [`SCAN_MIN`] bytes left (the caller's test).
    #[inline(never)]
    fn scan_string<B: JsonBuilder>(
        &mut self,
        input: &[u8],
        i: usize,
        key: bool,
        text: &mut Text,
        builder: &mut B,
    ) -> Option<usize> {
        let (window, start) = text.at(input, i);
        let mut scanner = Scanner::new(window, self.max_depth);
        scanner.set_index(i - start);
        let s = match scanner.string_start::<true, false>().ok()? {
            StrStart::Plain { text, .. } => text,
            StrStart::Escaped { start } => {
                self.tape.clear();
                scanner.decode_rest::<true>(start, &mut self.tape).ok()?;
                self.tape.as_str()
            }
        };
        if key {
            builder.key(s);
        } else {
            builder.scalar(Scalar::Str(s));
        }
        Some(start + scanner.index())
    }

    /// Reads string content from `input[i..]`; returns where it stopped (the end of the string or of the chunk).
    fn string<B: JsonBuilder>(
        &mut self,
        input: &[u8],
        mut i: usize,
        key: bool,
        builder: &mut B,
    ) -> Result<usize, (u64, JsonErrorKind)> {
        loop {
            if self.esc != Esc::None {
                if i == input.len() {
                    return Ok(i);
                }
                self.escape_byte(input[i]).map_err(|k| (self.consumed + i as u64, k))?;
                i += 1;
                continue;
            }
            let rest = &input[i..];
            let Some(j) = memchr2(b'"', b'\\', rest) else {
                self.append(rest, i, true)?;
                return Ok(input.len());
            };
            let seg = &rest[..j];
            if rest[j] == b'\\' {
                self.append(seg, i, false)?;
                i += j + 1;
                // The common escapes, when the escaped byte is in this chunk, without the escape state
                // machine. With the ASCII path in `append`: a 20 KB code-like string argument (`\n`,
                // `\"` on every line) parsed into Python in 49 µs instead of 136 µs.
                let simple = match input.get(i) {
                    Some(b'"') => b'"',
                    Some(b'\\') => b'\\',
                    Some(b'/') => b'/',
                    Some(b'n') => b'\n',
                    Some(b't') => b'\t',
                    Some(b'r') => b'\r',
                    _ => {
                        self.esc = Esc::Backslash;
                        continue;
                    }
                };
                // `append` without `allow_cut` left `scratch` all valid; an ASCII byte keeps it so.
                self.scratch.push(simple);
                self.scratch_valid = self.scratch.len();
                i += 1;
                continue;
            }
            if self.scratch.is_empty() {
                // The whole string is in this chunk and has no escapes: use it in place, no copy.
                let s = validate(seg).map_err(|(p, k)| (self.consumed + (i + p) as u64, k))?;
                if key {
                    builder.key(s);
                } else {
                    builder.scalar(Scalar::Str(s));
                }
            } else {
                self.append(seg, i, false)?;
                // SAFETY: `append` with `allow_cut = false` leaves all of `scratch` valid UTF-8.
                let s = unsafe { std::str::from_utf8_unchecked(&self.scratch) };
                if key {
                    builder.key(s);
                } else {
                    builder.scalar(Scalar::Str(s));
                }
                self.scratch.clear();
                self.scratch_valid = 0;
            }
            if key {
                self.state = State::Colon;
            } else {
                self.value_done();
            }
            return Ok(i + j + 1);
        }
    }

    /// Appends raw string content `seg` (found at `input[at..]`) to `scratch`, checking it. With
    /// `allow_cut`, a UTF-8 character cut by the end of the chunk is kept for the next chunk.
    // `#[inline]` here and on the other small helpers of `run`/`string`: those generic functions are
    // instantiated in the PyO3 crate (for its builder), which cannot inline another crate's plain
    // functions before LTO. With it, `JsonStream` over bench/bench_json.py's 20 KB cases runs the same
    // Rust instructions as when the glue and the parser were one crate (cachegrind, text: 3,795,187
    // before the split, 3,795,280 after); without it the code differs and wall time read 2–8% slower.
    #[inline]
    fn append(&mut self, seg: &[u8], at: usize, allow_cut: bool) -> Result<(), (u64, JsonErrorKind)> {
        // Printable ASCII and nothing pending: no UTF-8 decoding needed.
        if self.scratch_valid == self.scratch.len() && seg.iter().all(|&b| (0x20..0x80).contains(&b)) {
            self.scratch.extend_from_slice(seg);
            self.scratch_valid = self.scratch.len();
            return Ok(());
        }
        let ctl = seg.iter().position(|&b| b < 0x20);
        let old_len = self.scratch.len();
        self.scratch.extend_from_slice(seg);
        let seg_start = self.consumed + at as u64;
        let utf8 = match std::str::from_utf8(&self.scratch[self.scratch_valid..]) {
            Ok(_) => {
                self.scratch_valid = self.scratch.len();
                None
            }
            Err(e) => {
                let bad = self.scratch_valid + e.valid_up_to();
                if e.error_len().is_none() && allow_cut {
                    self.scratch_valid = bad;
                    None
                } else {
                    // `bad` may be a byte kept from the previous chunk, just before `seg`.
                    Some(seg_start + bad as u64 - old_len as u64)
                }
            }
        };
        let ctl = ctl.map(|p| seg_start + p as u64);
        match (ctl, utf8) {
            (Some(c), Some(u)) if u < c => Err((u, JsonErrorKind::InvalidUtf8)),
            (Some(c), _) => Err((c, JsonErrorKind::ControlCharacter)),
            (None, Some(u)) => Err((u, JsonErrorKind::InvalidUtf8)),
            (None, None) => Ok(()),
        }
    }

    #[inline]
    fn push_char(&mut self, c: char) {
        let mut buf = [0; 4];
        self.scratch.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
        self.scratch_valid = self.scratch.len();
    }

    fn escape_byte(&mut self, byte: u8) -> Result<(), JsonErrorKind> {
        self.esc = match self.esc {
            // `\u`, or the `u` of a low surrogate's `\u` after a high one.
            Esc::Backslash | Esc::NeedLowU if byte == b'u' => Esc::Unicode { n: 0, acc: 0 },
            Esc::Backslash => {
                let c = short_escape(byte).ok_or(JsonErrorKind::InvalidEscape)?;
                self.push_char(c);
                Esc::None
            }
            Esc::Unicode { n, acc } => {
                let d = hex_digit(byte).ok_or(JsonErrorKind::InvalidEscape)?;
                let acc = (acc << 4) | u16::from(d);
                if n < 3 {
                    Esc::Unicode { n: n + 1, acc }
                } else if self.high != 0 {
                    if !(0xDC00..=0xDFFF).contains(&acc) {
                        return Err(JsonErrorKind::LoneSurrogate);
                    }
                    let cp = 0x10000 + ((u32::from(self.high) - 0xD800) << 10) + (u32::from(acc) - 0xDC00);
                    self.high = 0;
                    self.push_char(char::from_u32(cp).unwrap_or('\u{FFFD}'));
                    Esc::None
                } else if (0xD800..=0xDBFF).contains(&acc) {
                    self.high = acc;
                    Esc::NeedLow
                } else {
                    // A low surrogate alone is not a character (jiter and serde_json reject it too).
                    let c = char::from_u32(u32::from(acc)).ok_or(JsonErrorKind::LoneSurrogate)?;
                    self.push_char(c);
                    Esc::None
                }
            }
            Esc::NeedLow if byte == b'\\' => Esc::NeedLowU,
            Esc::NeedLow | Esc::NeedLowU => return Err(JsonErrorKind::LoneSurrogate),
            Esc::None => Esc::None,
        };
        Ok(())
    }
}

/// The part of a chunk the scanner reads: from a token's start, as far as the chunk is valid UTF-8 (found once
/// and kept while later tokens start inside it: a chunk costs one UTF-8 check).
#[derive(Default)]
struct Text {
    start: usize,
    end: usize,
}

impl Text {
    /// The valid text around `input[i]` (`i` at an ASCII byte: a char boundary) and its offset in `input`.
    #[inline]
    fn at<'a>(&mut self, input: &'a [u8], i: usize) -> (&'a str, usize) {
        if i < self.start || i >= self.end {
            let rest = &input[i..];
            let valid = match std::str::from_utf8(rest) {
                Ok(_) => rest.len(),
                Err(e) => e.valid_up_to(),
            };
            self.start = i;
            self.end = i + valid;
        }
        // SAFETY: `start..end` was checked to be valid UTF-8 just now or by an earlier call.
        (
            unsafe { std::str::from_utf8_unchecked(&input[self.start..self.end]) },
            self.start,
        )
    }
}

/// Checks a whole string body (no quotes, no escapes): no control characters, valid UTF-8.
#[inline]
fn validate(seg: &[u8]) -> Result<&str, (usize, JsonErrorKind)> {
    let ctl = seg.iter().position(|&b| b < 0x20);
    match std::str::from_utf8(seg) {
        Ok(s) => match ctl {
            None => Ok(s),
            Some(c) => Err((c, JsonErrorKind::ControlCharacter)),
        },
        Err(e) => match ctl {
            Some(c) if c < e.valid_up_to() => Err((c, JsonErrorKind::ControlCharacter)),
            _ => Err((e.valid_up_to(), JsonErrorKind::InvalidUtf8)),
        },
    }
}
