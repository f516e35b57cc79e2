//! A validating single-pass reader for one streamed `chat.completion.chunk`: a builder of a
//! borrowed view over the JSON core's token [`Scanner`], which knows the grammar (this module knows
//! the chunk's structs and serde's rules for them).
//!
//! It accepts and rejects exactly what `serde_json::from_str::<Chunk>` (the derived structs in the
//! parent module) accepts and rejects, but materialises only what the translator uses, into
//! buffers reused from chunk to chunk: no allocation per chunk once they have grown, strings
//! without escapes are ranges of the input, strings with escapes are decoded into one scratch
//! buffer. Everything else is checked and skipped. The bench stream (`benches/translate.rs`, a
//! 330-byte OpenAI chunk per event) takes ~2,800 instructions per chunk to read, where the derived
//! serde structs took ~4,200 and two allocations.
//!
//! What "exactly what serde accepts" means, spelled out (`reader/tests.rs` checks it against serde
//! on generated, mutated and hand-written chunks):
//! - syntax as serde_json's: whitespace is space/tab/CR/LF, no trailing commas, control characters
//!   are rejected inside strings, escapes are `\" \\ \/ \b \f \n \r \t \uXXXX`;
//! - a string the translator reads (a field value or a key of one of our structs) must have its
//!   surrogate escapes paired; a skipped string (any value we ignore, and keys inside it) need not
//!   be (serde's `ignore_str`);
//! - a struct may be an object or an array of its fields in declaration order (serde's derived
//!   `visit_seq`); missing trailing elements are defaults, extra ones are an error;
//! - a known key twice is an error (`duplicate field`), an unknown key twice is not; `null` is `None`;
//!   a value of another type is an error (`"content": 5`); an integer field takes only a `u64`
//!   written without fraction or exponent (`-0`, `1.0`, `1e3` and 2^64 are errors);
//! - ignored values may nest without bound (serde's `ignore_value` keeps its own stack); the cold
//!   `usage` and `error` values are handed to serde itself (see `usage` and `upstream_error`).
//!
//! One deliberate difference: a chunk over 4 GiB is rejected (string ranges are `u32`); the SSE
//! decoder's event size limit (16 MiB by default) stops such a chunk long before.

use super::{UpstreamErrorBody, UsageIn};
use crate::json::{ScanError, Scanner, StrStart};

/// A string of the chunk: a range of the input (no escapes) or of the reader's scratch buffer.
/// `u32` offsets keep the views small (copied per choice); chunks over 4 GiB are rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Str {
    start: u32,
    end: u32,
    decoded: bool,
}

/// A `delta` (or a whole body's `message`).
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct DeltaView {
    pub content: Option<Str>,
    pub reasoning_content: Option<Str>,
    pub reasoning: Option<Str>,
    pub refusal: Option<Str>,
    /// `tool_calls`: a range of [`ChunkReader::calls`].
    pub tool_calls: Option<(u32, u32)>,
}

/// One `choices[]` entry.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct ChoiceView {
    pub index: Option<u64>,
    pub delta: Option<DeltaView>,
    pub message: Option<DeltaView>,
    pub finish_reason: Option<Str>,
    /// The input span of a non-null `logprobs` (any JSON value, checked and skipped: read by serde where it is
    /// used, only when a client asked for log probabilities).
    pub logprobs: Option<(u32, u32)>,
}

/// One `tool_calls[]` entry, `function` flattened (`has_function` tells whether it was there).
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct CallView {
    pub index: Option<u64>,
    pub id: Option<Str>,
    pub has_function: bool,
    pub name: Option<Str>,
    pub arguments: Option<Str>,
}

/// The chunk is not JSON that `Chunk` accepts. Where and why are left to serde, which reads a
/// rejected chunk again for its message: an empty error keeps every `Result` in registers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Malformed;

impl From<ScanError> for Malformed {
    #[inline]
    fn from(_: ScanError) -> Self {
        Self
    }
}

/// The reusable buffers and the result of the last [`ChunkReader::read`].
#[derive(Default)]
pub(super) struct ChunkReader {
    /// `choices`, when present and not `null`.
    pub choices: Option<Vec<ChoiceView>>,
    /// The tool calls of every delta/message, in order.
    pub calls: Vec<CallView>,
    pub usage: Option<UsageIn>,
    /// The input range of a non-null `error` value (known to deserialize as `UpstreamErrorBody`).
    pub error: Option<(usize, usize)>,
    /// Decoded strings that had escapes.
    scratch: String,
    /// A key with escapes, decoded.
    key: String,
    /// Open containers of the value being skipped.
    stack: Vec<u8>,
    /// Spare vector for `choices`, kept across chunks.
    spare: Vec<ChoiceView>,
}

// A struct's field names → field number (declaration order, which its array form follows). A
// `match`, inlined at its one use: comparisons with constant strings compile to a few loads.

fn chunk_field(key: &[u8]) -> Option<usize> {
    match key {
        b"choices" => Some(0),
        b"usage" => Some(1),
        b"error" => Some(2),
        _ => None,
    }
}

fn choice_field(key: &[u8]) -> Option<usize> {
    match key {
        b"index" => Some(0),
        b"delta" => Some(1),
        b"message" => Some(2),
        b"finish_reason" => Some(3),
        b"logprobs" => Some(4),
        _ => None,
    }
}

fn delta_field(key: &[u8]) -> Option<usize> {
    match key {
        b"content" => Some(0),
        b"reasoning_content" => Some(1),
        b"reasoning" => Some(2),
        b"refusal" => Some(3),
        b"tool_calls" => Some(4),
        _ => None,
    }
}

fn call_field(key: &[u8]) -> Option<usize> {
    match key {
        b"index" => Some(0),
        b"id" => Some(1),
        b"function" => Some(2),
        _ => None,
    }
}

fn function_field(key: &[u8]) -> Option<usize> {
    match key {
        b"name" => Some(0),
        b"arguments" => Some(1),
        _ => None,
    }
}

impl ChunkReader {
    /// Read one chunk; on success the public fields describe it (until the next `read`).
    pub fn read(&mut self, data: &str) -> Result<(), Malformed> {
        if let Some(mut choices) = self.choices.take() {
            choices.clear();
            self.spare = choices;
        }
        self.calls.clear();
        self.usage = None;
        self.error = None;
        self.scratch.clear();
        let bytes = data.as_bytes();
        if u32::try_from(bytes.len()).is_err() {
            // Beyond what `Str` can point into (and any configured SSE event size in practice).
            return Err(Malformed);
        }
        if has_control_bytes(bytes) {
            Parser::<true>::new(data, self).read()
        } else {
            Parser::<false>::new(data, self).read()
        }
    }

    /// The text of `s`, read from `data` (the chunk last read) or the scratch buffer.
    pub fn str<'a>(&'a self, data: &'a str, s: Str) -> &'a str {
        let range = s.start as usize..s.end as usize;
        if s.decoded {
            &self.scratch[range]
        } else {
            &data[range]
        }
    }
}

/// Whether `bytes` holds any byte below 0x20. Without one (every chunk of a `data:` line: it cannot
/// hold CR or LF), strings need no control-character check: a string ends at the next `"` or `\`.
/// Branch-free so that it vectorises (~0.3 instruction per byte).
fn has_control_bytes(bytes: &[u8]) -> bool {
    let below = |chunk: &[u8]| chunk.iter().fold(0u8, |acc, &b| acc | u8::from(b < 0x20)) != 0;
    let mut chunks = bytes.chunks_exact(32);
    let mut any = false;
    for chunk in &mut chunks {
        any |= below(chunk);
    }
    // The tail as one more (overlapping) block of 32 when there is one, rather than a byte loop
    // (~3 instructions per byte).
    let tail = chunks.remainder().len();
    match bytes.len().checked_sub(32) {
        Some(start) if tail > 0 => any | below(&bytes[start..]),
        _ => any | below(chunks.remainder()),
    }
}

/// `CONTROLS`: the input has bytes below 0x20, so string scans must look for them (a parameter,
/// not a field: one branch per chunk instead of one per string, ~50 instructions per chunk).
struct Parser<'a, 'r, const CONTROLS: bool> {
    sc: Scanner<'a>,
    r: &'r mut ChunkReader,
}

// `inline(always)` on the small pieces every token goes through (strings, keys, skipping):
// ~4,840 → ~4,550 instructions per bench chunk, translation included, against plain `inline`.
#[allow(clippy::inline_always)]
impl<'a, 'r, const CONTROLS: bool> Parser<'a, 'r, CONTROLS> {
    fn new(data: &'a str, r: &'r mut ChunkReader) -> Self {
        Self {
            // Ignored values may nest without bound (serde's `ignore_value`); the chunk's own
            // structs nest four deep.
            sc: Scanner::new(data, usize::MAX),
            r,
        }
    }

    /// The whole input: one chunk, then only whitespace.
    fn read(mut self) -> Result<(), Malformed> {
        self.chunk()?;
        self.sc.end()?;
        Ok(())
    }

    /// `null` next (after whitespace)? Consumes it.
    #[inline]
    fn null(&mut self) -> Result<bool, Malformed> {
        if self.sc.peek() == Some(b'n') {
            self.sc.literal(b"null")?;
            Ok(true)
        } else {
            Ok(false)
        }
    }

    // --- the chunk's structs -------------------------------------------------------------------

    fn chunk(&mut self) -> Result<(), Malformed> {
        let mut unit = ();
        self.fields(3, chunk_field, &mut unit, |p, (), field| match field {
            0 => p.choices(),
            1 => p.usage(),
            _ => p.upstream_error(),
        })
    }

    fn choices(&mut self) -> Result<(), Malformed> {
        if self.null()? {
            return Ok(());
        }
        let mut choices = std::mem::take(&mut self.r.spare);
        let result = self.array(|p| {
            choices.push(ChoiceView::default());
            let choice = choices.last_mut().expect("just pushed");
            p.fields(5, choice_field, choice, Self::read_choice_field)
        });
        self.r.choices = Some(choices);
        result
    }

    fn read_choice_field(&mut self, choice: &mut ChoiceView, field: usize) -> Result<(), Malformed> {
        match field {
            0 => choice.index = self.opt_u64()?,
            1 => choice.delta = self.opt_delta()?,
            2 => choice.message = self.opt_delta()?,
            3 => choice.finish_reason = self.opt_str()?,
            _ => {
                choice.logprobs = if self.null()? {
                    None
                } else {
                    let (start, end) = self.span()?;
                    Some((start as u32, end as u32)) // (a chunk is under 4 GiB: `read` checked)
                }
            }
        }
        Ok(())
    }

    fn opt_delta(&mut self) -> Result<Option<DeltaView>, Malformed> {
        if self.null()? {
            return Ok(None);
        }
        let mut delta = DeltaView::default();
        self.fields(5, delta_field, &mut delta, |p, delta, field| {
            match field {
                0 => delta.content = p.opt_str()?,
                1 => delta.reasoning_content = p.opt_str()?,
                2 => delta.reasoning = p.opt_str()?,
                3 => delta.refusal = p.opt_str()?,
                _ => {
                    delta.tool_calls = if p.null()? {
                        None
                    } else {
                        let start = p.r.calls.len() as u32;
                        p.array(|p| {
                            let mut call = CallView::default();
                            p.fields(3, call_field, &mut call, Self::read_call_field)?;
                            p.r.calls.push(call);
                            Ok(())
                        })?;
                        Some((start, p.r.calls.len() as u32))
                    }
                }
            }
            Ok(())
        })?;
        Ok(Some(delta))
    }

    fn read_call_field(&mut self, call: &mut CallView, field: usize) -> Result<(), Malformed> {
        match field {
            0 => call.index = self.opt_u64()?,
            1 => call.id = self.opt_str()?,
            _ => {
                // `function: null` and no `function` are the same to the translator.
                call.name = None;
                call.arguments = None;
                call.has_function = !self.null()?;
                if call.has_function {
                    self.fields(2, function_field, call, |p, call, field| {
                        let value = p.opt_str()?;
                        if field == 0 {
                            call.name = value;
                        } else {
                            call.arguments = value;
                        }
                        Ok(())
                    })?;
                }
            }
        }
        Ok(())
    }

    /// The input span of the (non-null) value next, checked and skipped.
    fn span(&mut self) -> Result<(usize, usize), Malformed> {
        self.sc.peek();
        let start = self.sc.index();
        self.skip_value()?;
        Ok((start, self.sc.index()))
    }

    /// `usage`: rare (once per stream) and never hot, so serde reads it from the validated span.
    /// Its structs nest three deep at most, far from serde's recursion limit, so the span alone
    /// deserializes exactly as it would in place.
    #[cold]
    fn usage(&mut self) -> Result<(), Malformed> {
        if self.null()? {
            return Ok(());
        }
        let (start, end) = self.span()?;
        match serde_json::from_str::<UsageIn>(&self.sc.text()[start..end]) {
            Ok(usage) => {
                self.r.usage = Some(usage);
                Ok(())
            }
            Err(_) => Err(Malformed),
        }
    }

    /// `error`: an untagged enum, which serde buffers as a generic value whose every container
    /// counts towards the recursion limit from the chunk's depth. Deserialized here inside a
    /// one-element array, the span sits at the same depth as in the chunk (1 + 1 levels), so it
    /// fails exactly where it would in place.
    #[cold]
    fn upstream_error(&mut self) -> Result<(), Malformed> {
        if self.null()? {
            return Ok(());
        }
        let (start, end) = self.span()?;
        let wrapped = format!("[{}]", &self.sc.text()[start..end]);
        match serde_json::from_str::<(UpstreamErrorBody<'_>,)>(&wrapped) {
            Ok(_) => {
                self.r.error = Some((start, end));
                Ok(())
            }
            Err(_) => Err(Malformed),
        }
    }

    // --- generic pieces ------------------------------------------------------------------------

    /// A struct: an object keyed by `names` (others skipped, a known key twice is an error) or an
    /// array of the fields in order. `field` reads field `n`'s value.
    #[inline]
    fn fields<T>(
        &mut self,
        count: usize,
        number: impl Fn(&[u8]) -> Option<usize> + Copy,
        target: &mut T,
        field: impl Fn(&mut Self, &mut T, usize) -> Result<(), Malformed>,
    ) -> Result<(), Malformed> {
        match self.sc.peek() {
            Some(b'{') => {
                let mut seen = 0u32;
                let mut more = self.sc.object_first()?;
                while more {
                    let known = self.key(number)?;
                    self.sc.colon()?;
                    match known {
                        Some(n) => {
                            if seen & (1 << n) != 0 {
                                return Err(Malformed);
                            }
                            seen |= 1 << n;
                            field(self, target, n)?;
                        }
                        None => self.skip_value()?,
                    }
                    more = self.sc.object_step()?;
                }
                Ok(())
            }
            Some(b'[') => {
                let mut next = self.sc.array_first()?;
                for n in 0..count {
                    match next {
                        None => return Ok(()),
                        // `,]`: a trailing comma.
                        Some(b']') if n > 0 => return Err(Malformed),
                        Some(_) => {}
                    }
                    field(self, target, n)?;
                    next = self.sc.array_step()?;
                }
                // More elements than fields.
                match next {
                    None => Ok(()),
                    Some(_) => Err(Malformed),
                }
            }
            _ => Err(Malformed),
        }
    }

    /// An array (not `null`); `element` reads one element.
    #[inline]
    fn array(&mut self, mut element: impl FnMut(&mut Self) -> Result<(), Malformed>) -> Result<(), Malformed> {
        if self.sc.peek() != Some(b'[') {
            return Err(Malformed);
        }
        let mut next = self.sc.array_first()?;
        let mut first = true;
        while let Some(c) = next {
            // `,]`: a trailing comma.
            if c == b']' && !first {
                return Err(Malformed);
            }
            first = false;
            element(self)?;
            next = self.sc.array_step()?;
        }
        Ok(())
    }

    /// An object key (its `"` next): which of `names` it is. Keys are decoded and checked as serde
    /// does (surrogates paired).
    #[inline(always)]
    fn key(&mut self, number: impl Fn(&[u8]) -> Option<usize>) -> Result<Option<usize>, Malformed> {
        match self.sc.string_start::<CONTROLS, false>()? {
            StrStart::Plain { text, .. } => Ok(number(text.as_bytes())),
            StrStart::Escaped { start } => self.escaped_key(start, number),
        }
    }

    #[cold]
    fn escaped_key(
        &mut self,
        start: usize,
        number: impl Fn(&[u8]) -> Option<usize>,
    ) -> Result<Option<usize>, Malformed> {
        let mut key = std::mem::take(&mut self.r.key);
        key.clear();
        let result = self.sc.decode_rest::<CONTROLS>(start, &mut key);
        let known = number(key.as_bytes());
        self.r.key = key;
        result?;
        Ok(known)
    }

    /// `Option<u64>` as serde reads it: `null`, or digits without sign, fraction or exponent that
    /// fit a u64.
    fn opt_u64(&mut self) -> Result<Option<u64>, Malformed> {
        match self.sc.peek() {
            Some(b'n') => {
                self.sc.literal(b"null")?;
                Ok(None)
            }
            Some(b'0'..=b'9') => {
                let number = self.sc.number()?;
                if number.float {
                    return Err(Malformed);
                }
                number
                    .text
                    .bytes()
                    .try_fold(0u64, |v, d| v.checked_mul(10)?.checked_add(u64::from(d - b'0')))
                    .map(Some)
                    .ok_or(Malformed)
            }
            _ => Err(Malformed),
        }
    }

    /// `Option<Cow<str>>` as serde reads it: `null`, or a string with paired surrogates.
    #[inline(always)]
    fn opt_str(&mut self) -> Result<Option<Str>, Malformed> {
        match self.sc.peek() {
            Some(b'"') => self.string().map(Some),
            Some(b'n') => {
                self.sc.literal(b"null")?;
                Ok(None)
            }
            _ => Err(Malformed),
        }
    }

    /// A string value (its `"` next): borrowed when it has no escape, else decoded.
    #[inline(always)]
    fn string(&mut self) -> Result<Str, Malformed> {
        let open = self.sc.index();
        match self.sc.string_start::<CONTROLS, false>()? {
            StrStart::Plain { text, .. } => Ok(Str {
                start: open as u32 + 1,
                end: (open + 1 + text.len()) as u32,
                decoded: false,
            }),
            StrStart::Escaped { start } => self.decoded(start),
        }
    }

    #[cold]
    fn decoded(&mut self, start: usize) -> Result<Str, Malformed> {
        let mut scratch = std::mem::take(&mut self.r.scratch);
        let from = scratch.len();
        let result = self.sc.decode_rest::<CONTROLS>(start, &mut scratch);
        let to = scratch.len();
        self.r.scratch = scratch;
        result?;
        Ok(Str {
            start: from as u32,
            end: to as u32,
            decoded: true,
        })
    }

    /// Any value, checked and skipped (serde's `ignore_value`: strings' surrogates unchecked,
    /// containers nest without bound).
    #[inline(always)]
    fn skip_value(&mut self) -> Result<(), Malformed> {
        self.sc.skip_value::<CONTROLS>(&mut self.r.stack)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
