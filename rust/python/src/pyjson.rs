//! JSON text ↔ Python objects, built directly (no `json` module, no intermediate Rust tree).
//!
//! [`json_to_py_cached`] is a builder over the core's token [`Scanner`] (jiter's `PythonParser`
//! over its `Parser`): the scanner knows the grammar, reads strings (borrowed, or decoded into one
//! reused buffer) and numbers, and bounds the depth; this module only decides which Python objects
//! to make, with a cache of object keys so each repeated key (`type`, `sequence_number`, `delta`, …)
//! is one shared, interned string. [`py_to_json`] is the reverse for plain data (a request given as
//! a Python mapping).
//!
//! Results equal `json.loads` for all RFC 8259 JSON: integers of any size (big ones through
//! Python's `int`), correctly rounded floats, lone surrogate escapes (through `json.loads` for that
//! one string). Python's non-standard `NaN`/`Infinity` literals are rejected.

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyList, PyMapping, PyString, PyTuple};

use ferroute_core::json::{ScanError, ScanErrorKind, Scanner, StrStart};

/// Nesting bound: deeper documents are an error, never a stack overflow.
const MAX_DEPTH: usize = 512;

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
    let mut builder = PyBuilder::new(py, json, cache);
    let first = builder.scanner.value_start().map_err(scan_error)?;
    let value = builder.value(first)?;
    builder.scanner.end().map_err(scan_error)?;
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
    let mut builder = PyBuilder::new(py, json, cache);
    if builder.scanner.peek() != Some(b'{') {
        return Err(invalid(builder.scanner.index(), "expected a JSON object"));
    }
    let value = builder.object(Some(on_member))?;
    builder.scanner.end().map_err(scan_error)?;
    Ok(value)
}

#[cold]
fn invalid(index: usize, what: &str) -> PyErr {
    PyValueError::new_err(format!("invalid JSON at byte {index}: {what}"))
}

/// The scanner's error in this API's words (`ValueError("invalid JSON at byte N: …")`).
#[cold]
#[inline(never)]
fn scan_error(e: ScanError) -> PyErr {
    let what = match e.kind {
        ScanErrorKind::ExpectedValue | ScanErrorKind::InvalidLiteral => "expected a value",
        ScanErrorKind::ExpectedKey => "expected a string key",
        ScanErrorKind::ExpectedColon => "expected ':'",
        ScanErrorKind::ExpectedCommaOrBracket => "expected ',' or ']'",
        ScanErrorKind::ExpectedCommaOrBrace => "expected ',' or '}'",
        ScanErrorKind::TrailingCharacters => "trailing characters after the JSON value",
        ScanErrorKind::InvalidNumber => "invalid number",
        ScanErrorKind::InvalidEscape => "invalid escape",
        ScanErrorKind::InvalidUnicodeEscape | ScanErrorKind::LoneSurrogate => "invalid \\u escape",
        ScanErrorKind::TruncatedEscape => "truncated \\u escape",
        ScanErrorKind::ControlCharacter => "control character in string",
        ScanErrorKind::UnterminatedString => "unterminated string",
        ScanErrorKind::UnexpectedEof => "unexpected end of input",
        ScanErrorKind::TooDeep => "nested deeper than 512 levels",
    };
    invalid(e.index, what)
}

/// A string as the builder read it.
#[derive(Clone, Copy)]
enum Text<'j> {
    /// No escapes: the input's text, and whether it is all ASCII.
    Input(&'j str, bool),
    /// Unescaped into the builder's `tape`.
    Tape,
    /// Contains a lone surrogate (valid for Python, not for Rust `str`): the literal `text[start..end]`
    /// including quotes, for `json.loads`.
    Surrogate(usize, usize),
}

/// Builds Python objects from the scanner's tokens.
struct PyBuilder<'j, 'c, 'py> {
    py: Python<'py>,
    scanner: Scanner<'j>,
    cache: &'c mut KeyCache,
    /// Strings with escapes, decoded (reused).
    tape: String,
}

impl<'j, 'c, 'py> PyBuilder<'j, 'c, 'py> {
    fn new(py: Python<'py>, json: &'j str, cache: &'c mut KeyCache) -> Self {
        Self {
            py,
            scanner: Scanner::new(json, MAX_DEPTH),
            cache,
            tape: String::new(),
        }
    }

    /// The value whose first byte (peeked, not consumed) is `first`.
    fn value(&mut self, first: u8) -> PyResult<Bound<'py, PyAny>> {
        let py = self.py;
        match first {
            b'{' => self.object(None),
            b'[' => self.array(),
            b'"' => {
                let text = self.string()?;
                self.make_str(text)
            }
            b't' => self.literal(b"true", PyBool::new(py, true).to_owned().into_any()),
            b'f' => self.literal(b"false", PyBool::new(py, false).to_owned().into_any()),
            b'n' => self.literal(b"null", py.None().into_bound(py)),
            b'-' | b'0'..=b'9' => self.number(),
            _ => Err(invalid(self.scanner.index(), "expected a value")),
        }
    }

    #[inline]
    fn literal(&mut self, word: &'static [u8], value: Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        self.scanner.literal(word).map_err(scan_error)?;
        Ok(value)
    }

    fn object(&mut self, mut on_member: Option<&mut OnMember<'_, 'j>>) -> PyResult<Bound<'py, PyAny>> {
        let dict = PyDict::new(self.py);
        let mut more = self.scanner.object_first().map_err(scan_error)?;
        while more {
            let key_text = self.string()?;
            let (key, key_str) = match key_text {
                Text::Input(text, _) => (self.cache.get(self.py, text), Some(std::borrow::Cow::Borrowed(text))),
                Text::Tape => {
                    let text = on_member.is_some().then(|| std::borrow::Cow::Owned(self.tape.clone()));
                    (self.make_str(key_text)?.cast_into::<PyString>()?, text)
                }
                Text::Surrogate(..) => (self.make_str(key_text)?.cast_into::<PyString>()?, None),
            };
            self.scanner.colon().map_err(scan_error)?;
            let first = self.scanner.value_start().map_err(scan_error)?;
            let value_start = self.scanner.index();
            let (value, string) = if first == b'"' {
                let text = self.string()?;
                (self.make_str(text)?, Some(text))
            } else {
                (self.value(first)?, None)
            };
            if let (Some(on_member), Some(key_str)) = (on_member.as_mut(), &key_str) {
                let string = match string {
                    Some(Text::Input(text, _)) => Some(text),
                    Some(Text::Tape) => Some(self.tape.as_str()),
                    Some(Text::Surrogate(..)) | None => None,
                };
                on_member(key_str, &self.scanner.text()[value_start..self.scanner.index()], string);
            }
            dict.set_item(key, value)?;
            more = self.scanner.object_step().map_err(scan_error)?;
        }
        Ok(dict.into_any())
    }

    fn array(&mut self) -> PyResult<Bound<'py, PyAny>> {
        let mut items = Vec::new();
        let mut next = self.scanner.array_first().map_err(scan_error)?;
        while let Some(first) = next {
            items.push(self.value(first)?);
            next = self.scanner.array_step().map_err(scan_error)?;
        }
        // One call that sizes the list exactly, instead of growing it by appends.
        Ok(PyList::new(self.py, items)?.into_any())
    }

    /// A string (its `"` peeked): borrowed, or decoded into `tape`.
    #[inline]
    fn string(&mut self) -> PyResult<Text<'j>> {
        let open = self.scanner.index();
        match self.scanner.string_start::<true, true>().map_err(scan_error)? {
            StrStart::Plain { text, ascii } => Ok(Text::Input(text, ascii)),
            StrStart::Escaped { start } => self.escaped(open, start),
        }
    }

    /// The rest of a string with escapes. One with a lone surrogate escape (a `str` for Python, not a
    /// Rust `str`) is skipped again without the pairing check to find its end, for `json.loads`.
    #[inline(never)]
    fn escaped(&mut self, open: usize, start: usize) -> PyResult<Text<'j>> {
        self.tape.clear();
        match self.scanner.decode_rest::<true>(start, &mut self.tape) {
            Ok(()) => Ok(Text::Tape),
            Err(ScanError {
                kind: ScanErrorKind::LoneSurrogate,
                ..
            }) => {
                self.scanner.set_index(start);
                self.scanner.skip_rest::<true>().map_err(scan_error)?;
                Ok(Text::Surrogate(open, self.scanner.index()))
            }
            Err(e) => Err(scan_error(e)),
        }
    }

    fn make_str(&self, text: Text<'j>) -> PyResult<Bound<'py, PyAny>> {
        Ok(match text {
            Text::Input(text, ascii) => new_str(self.py, text, ascii)?.into_any(),
            Text::Tape => new_str(self.py, &self.tape, self.tape.is_ascii())?.into_any(),
            Text::Surrogate(start, end) => {
                let loads = self.py.import("json")?.getattr("loads")?;
                loads.call1((&self.scanner.text()[start..end],))?
            }
        })
    }

    fn number(&mut self) -> PyResult<Bound<'py, PyAny>> {
        let number = self.scanner.number().map_err(scan_error)?;
        super::json::scalar(self.py, number.scalar())
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

fn write_json(obj: &Bound<'_, PyAny>, out: &mut String, depth: usize) -> PyResult<()> {
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
    depth: usize,
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

fn write_array<'py>(items: impl Iterator<Item = Bound<'py, PyAny>>, out: &mut String, depth: usize) -> PyResult<()> {
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

/// Bytes a JSON string literal must escape: `"`, `\` and control characters.
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
