//! JSON text ↔ Python objects, built directly (no `json` module, no intermediate Rust tree).
//!
//! [`json_to_py_cached`] is a small recursive-descent parser that creates `dict`/`list`/`str`/`int`/`float`
//! objects as it goes, with a cache of object keys so each repeated key (`type`,
//! `sequence_number`, `delta`, …) is one shared, interned string; [`py_to_json`] is the reverse for
//! plain data (a request given as a Python mapping).
//!
//! Results equal `json.loads` for all RFC 8259 JSON: integers of any size (big ones through
//! Python's `int`), correctly rounded floats, lone surrogate escapes (through `json.loads` for that
//! one string). Python's non-standard `NaN`/`Infinity` literals are rejected.

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyList, PyMapping, PyString, PyTuple};

use ferroute_core::json::scan::{hex4, short_escape};

/// Nesting bound: deeper documents are an error, never a stack overflow.
const MAX_DEPTH: u32 = 512;

/// Number of key slots (a power of two).
const KEY_SLOTS: usize = 512;
/// Longer keys are not cached: real keys are short, and hashing long ones costs more than it saves.
const MAX_CACHED_KEY: usize = 64;

/// Object keys seen before, as interned Python strings: an event stream repeats a dozen keys thousands
/// of times, and streamed arguments the same schema every call. One per parser or stream (the
/// `ResponseEventParser`'s events and response, a `JsonStream`). A direct-mapped table: one key per
/// slot, a colliding key replaces it; the slots are allocated on the first key, so a
/// `parse_partial_json` of a scalar costs nothing. Measured on the 20 KB `records` bench document
/// (with the stream's own FNV-hashed cache it replaced): 214 → 185 µs parsed whole, 530 → 480 µs in
/// 2,000 fragments.
#[derive(Default)]
pub(crate) struct KeyCache {
    slots: Vec<Option<CachedKey>>,
}

struct CachedKey {
    signature: (usize, u64, u64),
    key: Box<str>,
    string: Py<PyString>,
}

/// Length and two (overlapping) words that together cover a key of up to 16 bytes: equal signatures
/// mean equal keys for those, without a `memcmp` call (3% of `ResponseEventParser.feed`, perf) and
/// without padding short keys into a buffer (which stalled on store forwarding).
fn signature(bytes: &[u8]) -> (usize, u64, u64) {
    let len = bytes.len();
    let (head, tail) = match len {
        0 => (0, 0),
        1..=3 => (
            u64::from(bytes[0]) | u64::from(bytes[len / 2]) << 8 | u64::from(bytes[len - 1]) << 16,
            0,
        ),
        4..=7 => (u64::from(half(&bytes[..4])), u64::from(half(&bytes[len - 4..]))),
        _ => (word(&bytes[..8]), word(&bytes[len - 8..])),
    };
    (len, head, tail)
}

fn half(bytes: &[u8]) -> u32 {
    let mut half = [0u8; 4];
    half.copy_from_slice(bytes);
    u32::from_le_bytes(half)
}

impl KeyCache {
    /// An empty cache.
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// The interned `str` for `key`, from the cache when it was seen before.
    pub(crate) fn get<'py>(&mut self, py: Python<'py>, key: &str) -> Bound<'py, PyString> {
        if key.len() > MAX_CACHED_KEY {
            return PyString::new(py, key);
        }
        if self.slots.is_empty() {
            self.slots.resize_with(KEY_SLOTS, || None);
        }
        let signature = signature(key.as_bytes());
        let (len, head, tail) = signature;
        let mixed = (head ^ tail.rotate_left(29) ^ len as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let slot = &mut self.slots[(mixed >> 55) as usize & (KEY_SLOTS - 1)];
        if let Some(cached) = slot {
            if cached.signature == signature && (len <= 16 || *cached.key == *key) {
                return cached.string.bind(py).clone();
            }
        }
        // Interned: dict lookups with it compare by identity first, and its hash is computed once.
        let string = PyString::intern(py, key);
        *slot = Some(CachedKey {
            signature,
            key: key.into(),
            string: string.clone().unbind(),
        });
        string
    }
}

fn word(bytes: &[u8]) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(bytes);
    u64::from_le_bytes(word)
}

/// Parse JSON text into Python objects with the caller's key cache.
pub(crate) fn json_to_py_cached<'py>(py: Python<'py>, json: &str, cache: &mut KeyCache) -> PyResult<Bound<'py, PyAny>> {
    let mut parser = Parser {
        py,
        text: json,
        bytes: json.as_bytes(),
        pos: 0,
        depth: 0,
        cache,
        scratch: String::new(),
    };
    let value = parser.value()?;
    parser.skip_whitespace();
    if parser.pos != parser.bytes.len() {
        return Err(parser.error("trailing characters after the JSON value"));
    }
    Ok(value)
}

/// A top-level member's key, its value's JSON text and, when the value is a string, its unescaped text.
pub(crate) type OnMember<'m, 'j> = dyn FnMut(&str, &'j str, Option<&str>) + 'm;

/// [`json_to_py_cached`] for a JSON object, calling `on_member` for each of its members as well: one
/// pass over the text both builds the dict and hands the caller the members it reads (the stream
/// checker's fields). Parsing each event twice instead cost 15% of `ResponseEventParser.feed` (perf).
pub(crate) fn json_object_to_py<'py, 'j>(
    py: Python<'py>,
    json: &'j str,
    cache: &mut KeyCache,
    on_member: &mut OnMember<'_, 'j>,
) -> PyResult<Bound<'py, PyAny>> {
    let mut parser = Parser {
        py,
        text: json,
        bytes: json.as_bytes(),
        pos: 0,
        depth: 0,
        cache,
        scratch: String::new(),
    };
    parser.skip_whitespace();
    if parser.bytes.get(parser.pos) != Some(&b'{') {
        return Err(parser.error("expected a JSON object"));
    }
    let value = parser.object(Some(on_member))?;
    parser.skip_whitespace();
    if parser.pos != parser.bytes.len() {
        return Err(parser.error("trailing characters after the JSON value"));
    }
    Ok(value)
}

/// Bytes that end the fast scan of a string's contents: `"`, `\` and control characters.
static STRING_STOP: [bool; 256] = {
    let mut table = [false; 256];
    let mut byte = 0;
    while byte < 0x20 {
        table[byte] = true;
        byte += 1;
    }
    table[b'"' as usize] = true;
    table[b'\\' as usize] = true;
    table
};

/// Where a parsed string's text lives.
enum StrSpan {
    /// `text[start..end]`, no escapes.
    Input(usize, usize, bool),
    /// Unescaped into `scratch`.
    Scratch,
    /// Contains a lone surrogate (valid for Python, not for Rust `str`): the literal `text[start..end]`
    /// including quotes, for `json.loads`.
    Surrogate(usize, usize),
}

struct Parser<'j, 'c, 'py> {
    py: Python<'py>,
    text: &'j str,
    bytes: &'j [u8],
    pos: usize,
    depth: u32,
    cache: &'c mut KeyCache,
    scratch: String,
}

impl<'j, 'py> Parser<'j, '_, 'py> {
    #[cold]
    fn error(&self, what: &str) -> PyErr {
        PyValueError::new_err(format!("invalid JSON at byte {}: {what}", self.pos))
    }

    #[inline]
    fn skip_whitespace(&mut self) {
        while let Some(&byte) = self.bytes.get(self.pos) {
            if !matches!(byte, b' ' | b'\n' | b'\r' | b'\t') {
                break;
            }
            self.pos += 1;
        }
    }

    fn value(&mut self) -> PyResult<Bound<'py, PyAny>> {
        self.skip_whitespace();
        let py = self.py;
        match self.bytes.get(self.pos) {
            Some(b'{') => self.object(None),
            Some(b'[') => self.array(),
            Some(b'"') => {
                let span = self.string()?;
                self.make_str(&span)
            }
            Some(b't') => self.literal("true", PyBool::new(py, true).to_owned().into_any()),
            Some(b'f') => self.literal("false", PyBool::new(py, false).to_owned().into_any()),
            Some(b'n') => self.literal("null", py.None().into_bound(py)),
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(_) => Err(self.error("expected a value")),
            None => Err(self.error("unexpected end of input")),
        }
    }

    fn literal(&mut self, word: &str, value: Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        if self.bytes[self.pos..].starts_with(word.as_bytes()) {
            self.pos += word.len();
            Ok(value)
        } else {
            Err(self.error("expected a value"))
        }
    }

    fn enter(&mut self) -> PyResult<()> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.error("nested deeper than 512 levels"));
        }
        self.pos += 1;
        Ok(())
    }

    fn object(&mut self, mut on_member: Option<&mut OnMember<'_, 'j>>) -> PyResult<Bound<'py, PyAny>> {
        self.enter()?;
        let dict = PyDict::new(self.py);
        self.skip_whitespace();
        if self.bytes.get(self.pos) == Some(&b'}') {
            self.pos += 1;
            self.depth -= 1;
            return Ok(dict.into_any());
        }
        loop {
            self.skip_whitespace();
            if self.bytes.get(self.pos) != Some(&b'"') {
                return Err(self.error("expected a string key"));
            }
            let span = self.string()?;
            let (key, key_text) = match span {
                StrSpan::Input(start, end, _) => {
                    let text = &self.text[start..end];
                    (self.cache.get(self.py, text), Some(std::borrow::Cow::Borrowed(text)))
                }
                StrSpan::Scratch => {
                    let text = on_member
                        .is_some()
                        .then(|| std::borrow::Cow::Owned(self.scratch.clone()));
                    (self.make_str(&span)?.cast_into::<PyString>()?, text)
                }
                StrSpan::Surrogate(..) => (self.make_str(&span)?.cast_into::<PyString>()?, None),
            };
            self.skip_whitespace();
            if self.bytes.get(self.pos) != Some(&b':') {
                return Err(self.error("expected ':'"));
            }
            self.pos += 1;
            self.skip_whitespace();
            let value_start = self.pos;
            let (value, string) = if self.bytes.get(self.pos) == Some(&b'"') {
                let span = self.string()?;
                (self.make_str(&span)?, Some(span))
            } else {
                (self.value()?, None)
            };
            if let (Some(on_member), Some(key_text)) = (on_member.as_mut(), &key_text) {
                let string = match string {
                    Some(StrSpan::Input(start, end, _)) => Some(&self.text[start..end]),
                    Some(StrSpan::Scratch) => Some(self.scratch.as_str()),
                    Some(StrSpan::Surrogate(..)) | None => None,
                };
                on_member(key_text, &self.text[value_start..self.pos], string);
            }
            dict.set_item(key, value)?;
            self.skip_whitespace();
            match self.bytes.get(self.pos) {
                Some(b',') => self.pos += 1,
                Some(b'}') => {
                    self.pos += 1;
                    self.depth -= 1;
                    return Ok(dict.into_any());
                }
                _ => return Err(self.error("expected ',' or '}'")),
            }
        }
    }

    fn array(&mut self) -> PyResult<Bound<'py, PyAny>> {
        self.enter()?;
        let mut items = Vec::new();
        self.skip_whitespace();
        if self.bytes.get(self.pos) == Some(&b']') {
            self.pos += 1;
        } else {
            loop {
                items.push(self.value()?);
                self.skip_whitespace();
                match self.bytes.get(self.pos) {
                    Some(b',') => self.pos += 1,
                    Some(b']') => {
                        self.pos += 1;
                        break;
                    }
                    _ => return Err(self.error("expected ',' or ']'")),
                }
            }
        }
        self.depth -= 1;
        // One call that sizes the list exactly, instead of growing it by appends.
        Ok(PyList::new(self.py, items)?.into_any())
    }

    fn make_str(&self, span: &StrSpan) -> PyResult<Bound<'py, PyAny>> {
        Ok(match *span {
            StrSpan::Input(start, end, ascii) => new_str(self.py, &self.text[start..end], ascii)?.into_any(),
            StrSpan::Scratch => new_str(self.py, &self.scratch, self.scratch.is_ascii())?.into_any(),
            StrSpan::Surrogate(start, end) => {
                let loads = self.py.import("json")?.getattr("loads")?;
                loads.call1((&self.text[start..end],))?
            }
        })
    }

    /// Moves `pos` past string bytes that need no attention (not `"`, `\\` or a control
    /// character), 8 at a time: a byte-at-a-time loop here was 10% of `ResponseEventParser.feed`.
    /// Returns whether they were all ASCII (saves `new_str` a second pass over the text).
    #[inline]
    fn skip_plain(&mut self) -> bool {
        const ONES: u64 = 0x0101_0101_0101_0101;
        const HIGH: u64 = 0x8080_8080_8080_8080;
        let mut high = 0u64;
        while let Some(chunk) = self.bytes.get(self.pos..self.pos + 8) {
            let chunk = word(chunk);
            let quote = chunk ^ (ONES * u64::from(b'"'));
            let backslash = chunk ^ (ONES * u64::from(b'\\'));
            // The classic "has a zero byte" / "has a byte below n" tests: the lowest flagged byte is
            // always a true hit (only bytes above a hit can be false positives).
            let stop = ((quote.wrapping_sub(ONES) & !quote)
                | (backslash.wrapping_sub(ONES) & !backslash)
                | (chunk.wrapping_sub(ONES * 0x20) & !chunk))
                & HIGH;
            if stop != 0 {
                let plain = stop.trailing_zeros() / 8;
                high |= chunk & HIGH & ((1u64 << (plain * 8)) - 1);
                self.pos += plain as usize;
                return high == 0;
            }
            high |= chunk & HIGH;
            self.pos += 8;
        }
        while let Some(&byte) = self.bytes.get(self.pos) {
            if STRING_STOP[usize::from(byte)] {
                break;
            }
            high |= u64::from(byte & 0x80);
            self.pos += 1;
        }
        high == 0
    }

    /// A string starting at the opening quote; leaves `pos` after the closing one.
    fn string(&mut self) -> PyResult<StrSpan> {
        let open = self.pos;
        self.pos += 1;
        let start = self.pos;
        let ascii = self.skip_plain();
        match self.bytes.get(self.pos) {
            Some(b'"') => {
                self.pos += 1;
                Ok(StrSpan::Input(start, self.pos - 1, ascii))
            }
            Some(b'\\') => {
                self.scratch.clear();
                self.scratch.push_str(&self.text[start..self.pos]);
                self.escaped_string(open)
            }
            Some(_) => Err(self.error("control character in string")),
            None => Err(self.error("unterminated string")),
        }
    }

    /// The rest of a string that has escapes, unescaped into `scratch`.
    fn escaped_string(&mut self, open: usize) -> PyResult<StrSpan> {
        let mut surrogate = false;
        loop {
            let run = self.pos;
            let _ = self.skip_plain();
            self.scratch.push_str(&self.text[run..self.pos]);
            match self.bytes.get(self.pos) {
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(if surrogate {
                        StrSpan::Surrogate(open, self.pos)
                    } else {
                        StrSpan::Scratch
                    });
                }
                Some(b'\\') => {
                    let escape = *self
                        .bytes
                        .get(self.pos + 1)
                        .ok_or_else(|| self.error("unterminated string"))?;
                    self.pos += 2;
                    let unescaped = match escape {
                        b'u' => {
                            let unit = self.hex4()?;
                            if (0xd800..0xdc00).contains(&unit)
                                && self.bytes.get(self.pos) == Some(&b'\\')
                                && self.bytes.get(self.pos + 1) == Some(&b'u')
                            {
                                let save = self.pos;
                                self.pos += 2;
                                let low = self.hex4()?;
                                if (0xdc00..0xe000).contains(&low) {
                                    let code = 0x10000 + ((unit - 0xd800) << 10) + (low - 0xdc00);
                                    char::from_u32(code).unwrap_or('\u{fffd}')
                                } else {
                                    self.pos = save;
                                    surrogate = true;
                                    '\u{fffd}'
                                }
                            } else if let Some(c) = char::from_u32(unit) {
                                c
                            } else {
                                surrogate = true;
                                '\u{fffd}'
                            }
                        }
                        _ => {
                            if let Some(c) = short_escape(escape) {
                                c
                            } else {
                                self.pos -= 1;
                                return Err(self.error("invalid escape"));
                            }
                        }
                    };
                    self.scratch.push(unescaped);
                }
                Some(_) => return Err(self.error("control character in string")),
                None => return Err(self.error("unterminated string")),
            }
        }
    }

    fn hex4(&mut self) -> PyResult<u32> {
        let digits = self
            .bytes
            .get(self.pos..self.pos + 4)
            .ok_or_else(|| self.error("truncated \\u escape"))?;
        let unit = hex4(digits).ok_or_else(|| self.error("invalid \\u escape"))?;
        self.pos += 4;
        Ok(u32::from(unit))
    }

    fn digits(&mut self) -> usize {
        let start = self.pos;
        while self.bytes.get(self.pos).is_some_and(u8::is_ascii_digit) {
            self.pos += 1;
        }
        self.pos - start
    }

    fn number(&mut self) -> PyResult<Bound<'py, PyAny>> {
        let start = self.pos;
        if self.bytes[self.pos] == b'-' {
            self.pos += 1;
        }
        let int_start = self.pos;
        let int_digits = self.digits();
        if int_digits == 0 || (int_digits > 1 && self.bytes[int_start] == b'0') {
            return Err(self.error("invalid number"));
        }
        let mut float = false;
        if self.bytes.get(self.pos) == Some(&b'.') {
            self.pos += 1;
            if self.digits() == 0 {
                return Err(self.error("invalid number"));
            }
            float = true;
        }
        if matches!(self.bytes.get(self.pos), Some(b'e' | b'E')) {
            self.pos += 1;
            if matches!(self.bytes.get(self.pos), Some(b'+' | b'-')) {
                self.pos += 1;
            }
            if self.digits() == 0 {
                return Err(self.error("invalid number"));
            }
            float = true;
        }
        let text = &self.text[start..self.pos];
        if float {
            // Rust's float parsing is correctly rounded, like Python's `float(str)`.
            let value: f64 = text.parse().map_err(|_| self.error("invalid number"))?;
            return Ok(PyFloat::new(self.py, value).into_any());
        }
        match text.parse::<i64>() {
            Ok(value) => Ok(value.into_pyobject(self.py)?.into_any()),
            Err(_) => self.py.get_type::<PyInt>().call1((text,)),
        }
    }
}

/// A Python `str`; ASCII text is copied straight into a new compact string, skipping CPython's
/// UTF-8 decoder (`ascii_decode` + `unicode_decode_utf8` were 4.5% of `ResponseEventParser.feed`).
/// `ascii` must be `text.is_ascii()`.
fn new_str<'py>(py: Python<'py>, text: &str, ascii: bool) -> PyResult<Bound<'py, PyString>> {
    debug_assert_eq!(ascii, text.is_ascii());
    if !ascii || text.is_empty() {
        return Ok(PyString::new(py, text));
    }
    let len = ffi::Py_ssize_t::try_from(text.len()).map_err(|_| PyValueError::new_err("string too long"))?;
    // SAFETY: `PyUnicode_New(len, 127)` returns a new, uniquely owned compact ASCII string of `len`
    // one-byte characters (already NUL-terminated), or NULL with an exception set. We fill all `len`
    // bytes with ASCII (`ascii`, from the caller's scan) before anything else can see it, then take
    // ownership.
    unsafe {
        let string = ffi::PyUnicode_New(len, 127);
        if string.is_null() {
            return Err(PyErr::fetch(py));
        }
        std::ptr::copy_nonoverlapping(text.as_ptr(), ffi::PyUnicode_1BYTE_DATA(string), text.len());
        Ok(Bound::from_owned_ptr(py, string).cast_into_unchecked())
    }
}

/// Serialise plain Python data (`dict`/other mappings with `str` keys, `list`, `tuple`, `str`, `int`,
/// `float`, `bool`, `None`) as compact JSON text; `TypeError` for anything else, `ValueError` for
/// NaN/infinite floats and nesting deeper than 512 levels.
pub(crate) fn py_to_json(obj: &Bound<'_, PyAny>) -> PyResult<String> {
    let mut out = String::new();
    write_json(obj, &mut out, 0)?;
    Ok(out)
}

fn write_json(obj: &Bound<'_, PyAny>, out: &mut String, depth: u32) -> PyResult<()> {
    if depth > MAX_DEPTH {
        return Err(PyValueError::new_err("nested deeper than 512 levels"));
    }
    if obj.is_none() {
        out.push_str("null");
    } else if let Ok(string) = obj.cast::<PyString>() {
        write_str(&string.to_cow()?, out);
    } else if let Ok(boolean) = obj.cast::<PyBool>() {
        out.push_str(if boolean.is_true() { "true" } else { "false" });
    } else if let Ok(int) = obj.cast::<PyInt>() {
        match int.extract::<i64>() {
            Ok(value) => out.push_str(itoa::Buffer::new().format(value)),
            Err(_) => out.push_str(&int.str()?.to_cow()?),
        }
    } else if let Ok(float) = obj.cast::<PyFloat>() {
        let value = float.value();
        if !value.is_finite() {
            return Err(PyValueError::new_err(format!("{value} is not valid JSON")));
        }
        out.push_str(ryu::Buffer::new().format_finite(value));
    } else if let Ok(dict) = obj.cast::<PyDict>() {
        write_items(dict.iter(), out, depth)?;
    } else if let Ok(list) = obj.cast::<PyList>() {
        write_array(list.iter(), out, depth)?;
    } else if let Ok(tuple) = obj.cast::<PyTuple>() {
        write_array(tuple.iter(), out, depth)?;
    } else if let Ok(mapping) = obj.cast::<PyMapping>() {
        let items = mapping.items()?;
        let pairs = items
            .iter()
            .map(|pair| pair.extract::<(Bound<'_, PyAny>, Bound<'_, PyAny>)>());
        let pairs: Vec<_> = pairs.collect::<PyResult<_>>()?;
        write_items(pairs.into_iter(), out, depth)?;
    } else {
        let name = obj.get_type().name()?;
        return Err(PyTypeError::new_err(format!(
            "objects of type {name} are not JSON serialisable"
        )));
    }
    Ok(())
}

fn write_items<'py>(
    items: impl Iterator<Item = (Bound<'py, PyAny>, Bound<'py, PyAny>)>,
    out: &mut String,
    depth: u32,
) -> PyResult<()> {
    out.push('{');
    for (n, (key, value)) in items.enumerate() {
        if n > 0 {
            out.push(',');
        }
        let key = key
            .cast_into::<PyString>()
            .map_err(|_| PyTypeError::new_err("JSON object keys must be str"))?;
        write_str(&key.to_cow()?, out);
        out.push(':');
        write_json(&value, out, depth + 1)?;
    }
    out.push('}');
    Ok(())
}

fn write_array<'py>(items: impl Iterator<Item = Bound<'py, PyAny>>, out: &mut String, depth: u32) -> PyResult<()> {
    out.push('[');
    for (n, item) in items.enumerate() {
        if n > 0 {
            out.push(',');
        }
        write_json(&item, out, depth + 1)?;
    }
    out.push(']');
    Ok(())
}

/// A JSON string literal (escaping `"`, `\` and control characters only; UTF-8 kept as is).
fn write_str(text: &str, out: &mut String) {
    out.push('"');
    let mut run = 0;
    for (index, byte) in text.bytes().enumerate() {
        if !STRING_STOP[usize::from(byte)] {
            continue;
        }
        out.push_str(&text[run..index]);
        run = index + 1;
        match byte {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            b'\t' => out.push_str("\\t"),
            _ => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.push_str("\\u00");
                out.push(char::from(HEX[usize::from(byte >> 4)]));
                out.push(char::from(HEX[usize::from(byte & 0xf)]));
            }
        }
    }
    out.push_str(&text[run..]);
    out.push('"');
}
