//! `JsonStream`, `parse_partial_json` and `JSONError`: the incremental JSON parser building Python
//! objects directly (no intermediate Rust tree), its containers kept alive and updated in place.

use pyo3::create_exception;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyDict, PyFloat, PyInt, PyList, PyString};

use ferroute_core::json::{JsonBuilder, JsonError, JsonParser, Scalar, DEFAULT_MAX_DEPTH};

use super::pyjson::KeyCache;

const _: () = assert!(DEFAULT_MAX_DEPTH == 256, "update the literal defaults below");

create_exception!(
    ferroute._core,
    JSONError,
    PyValueError,
    "Malformed JSON, or JSON nested deeper than `max_depth`; the message gives the byte offset."
);

#[cold]
fn json_error(e: &JsonError) -> PyErr {
    JSONError::new_err(e.to_string())
}

enum Frame {
    List(Py<PyList>),
    /// The dict and the key whose value comes next.
    Dict(Py<PyDict>, Option<Py<PyString>>),
}

/// The trailing partial scalar `value()` put into the innermost container (or at the top level).
struct Provisional {
    /// `parser.offset()` when it was placed: nothing fed since means nothing to update.
    at: u64,
    /// The value it hid under the same key (a duplicate key), put back if the partial goes away.
    prev: Option<Py<PyAny>>,
    /// For a string: the UTF-8 length of the text it holds, so the next `value()` appends only what is new.
    str_len: Option<usize>,
}

/// The Python side of a stream: the live objects, one frame per open container.
#[derive(Default)]
struct PyTree {
    root: Option<Py<PyAny>>,
    stack: Vec<Frame>,
    provisional: Option<Provisional>,
    keys: KeyCache,
    /// The first Python error a builder call hit (the builder trait is infallible).
    error: Option<PyErr>,
}

/// The Python object for a scalar (shared with `pyjson`'s builder, for numbers).
pub(crate) fn scalar<'py>(py: Python<'py>, v: Scalar<'_>) -> PyResult<Bound<'py, PyAny>> {
    Ok(match v {
        Scalar::Null => py.None().into_bound(py),
        Scalar::Bool(b) => PyBool::new(py, b).to_owned().into_any(),
        Scalar::Int(i) => i.into_pyobject(py)?.into_any(),
        // Exact: Python's int() parses the digits (bounded by sys.get_int_max_str_digits()).
        Scalar::BigInt(d) => py.get_type::<PyInt>().call1((d,))?,
        Scalar::Float(f) => PyFloat::new(py, f).into_any(),
        Scalar::Str(s) => PyString::new(py, s).into_any(),
    })
}

impl PyTree {
    /// Puts a complete value in its place: replacing the provisional one `value()` put there, or
    /// appended / set under the pending key.
    fn attach(&mut self, py: Python<'_>, v: &Bound<'_, PyAny>) -> PyResult<()> {
        let replace = self.provisional.take().is_some();
        match self.stack.last_mut() {
            None => self.root = Some(v.clone().unbind()),
            Some(Frame::List(l)) => {
                let l = l.bind(py);
                if replace {
                    l.set_item(l.len().saturating_sub(1), v)?;
                } else {
                    l.append(v)?;
                }
            }
            Some(Frame::Dict(d, key)) => {
                if let Some(k) = key.take() {
                    d.bind(py).set_item(k, v)?;
                }
            }
        }
        Ok(())
    }

    fn push(&mut self, py: Python<'_>, frame: Frame, obj: &Bound<'_, PyAny>) {
        if let Err(e) = self.attach(py, obj) {
            self.error.get_or_insert(e);
        }
        self.stack.push(frame);
    }

    /// The object in the provisional slot (the innermost container's last member, or the top level).
    fn slot<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        match self.stack.last() {
            None => Ok(self.root.as_ref().map(|r| r.bind(py).clone())),
            Some(Frame::List(l)) => {
                let l = l.bind(py);
                l.get_item(l.len().saturating_sub(1)).map(Some)
            }
            Some(Frame::Dict(d, Some(k))) => d.bind(py).get_item(k),
            Some(Frame::Dict(_, None)) => Ok(None),
        }
    }

    fn set_slot(&mut self, py: Python<'_>, v: Bound<'_, PyAny>) -> PyResult<()> {
        match self.stack.last() {
            None => self.root = Some(v.unbind()),
            Some(Frame::List(l)) => {
                let l = l.bind(py);
                l.set_item(l.len().saturating_sub(1), v)?;
            }
            Some(Frame::Dict(d, Some(k))) => d.bind(py).set_item(k, v)?,
            Some(Frame::Dict(_, None)) => {}
        }
        Ok(())
    }

    /// Brings the trailing partial member up to date (the parser's `partial()`): O(1) for a number or
    /// a container, O(new text) for a string that grew (appended in place, see `grow`).
    fn sync(&mut self, py: Python<'_>, parser: &JsonParser) -> PyResult<()> {
        let partial = parser.partial();
        let Some(v) = partial else {
            // A partial that is no longer shown (`1` became `1.`): take it out again.
            if let Some(p) = self.provisional.take() {
                match self.stack.last() {
                    None => self.root = None,
                    Some(Frame::List(l)) => {
                        let l = l.bind(py);
                        l.del_item(l.len().saturating_sub(1))?;
                    }
                    Some(Frame::Dict(d, key)) => {
                        if let Some(k) = key {
                            match p.prev {
                                Some(prev) => d.bind(py).set_item(k, prev)?,
                                None => d.bind(py).del_item(k)?,
                            }
                        }
                    }
                }
            }
            return Ok(());
        };
        let offset = parser.offset();
        if let Some(p) = &self.provisional {
            if p.at == offset {
                return Ok(());
            }
            if let (Scalar::Str(text), Some(done)) = (v, p.str_len) {
                if text.len() > done {
                    self.grow(py, &text[done..])?;
                }
                if let Some(p) = &mut self.provisional {
                    p.at = offset;
                    p.str_len = Some(text.len());
                }
                return Ok(());
            }
        }
        let str_len = if let Scalar::Str(text) = v {
            Some(text.len())
        } else {
            None
        };
        let obj = scalar(py, v)?;
        let mut prev = None;
        let placed = self.provisional.is_some();
        match self.stack.last() {
            None => self.root = Some(obj.unbind()),
            Some(Frame::List(l)) => {
                let l = l.bind(py);
                if placed {
                    l.set_item(l.len().saturating_sub(1), obj)?;
                } else {
                    l.append(obj)?;
                }
            }
            Some(Frame::Dict(d, key)) => {
                let Some(k) = key else { return Ok(()) };
                let d = d.bind(py);
                if placed {
                    prev = self.provisional.take().and_then(|p| p.prev);
                } else {
                    prev = d.get_item(k)?.map(Bound::unbind);
                }
                d.set_item(k, obj)?;
            }
        }
        self.provisional = Some(Provisional {
            at: offset,
            prev,
            str_len,
        });
        Ok(())
    }

    /// Appends `suffix` to the partial string in the slot. The container's reference is dropped first,
    /// so when the user holds none the str is the only reference and `PyUnicode_Append` resizes it in
    /// place (CPython's own `s += t` path); otherwise it copies, and what the user holds is unchanged.
    /// Measured on a 200 KB string argument in 20,000 fragments with `value()` after each: 2.5 s
    /// re-creating the prefix each time, 30 ms appending.
    fn grow(&mut self, py: Python<'_>, suffix: &str) -> PyResult<()> {
        let Some(current) = self.slot(py)? else { return Ok(()) };
        self.set_slot(py, py.None().into_bound(py))?;
        let suffix = PyString::new(py, suffix);
        let mut ptr = current.into_ptr();
        // SAFETY: `ptr` is an owned reference to a `str` (only `scalar` fills this slot, with a `str`
        // for a string); `PyUnicode_Append` consumes it and leaves an owned reference to the
        // concatenation, or NULL with an exception set.
        let grown = unsafe {
            pyo3::ffi::PyUnicode_Append(&raw mut ptr, suffix.as_ptr());
            Bound::from_owned_ptr_or_err(py, ptr)?
        };
        self.set_slot(py, grown)
    }
}

/// `JsonBuilder` needs the GIL token; this pairs it with the tree for the length of one call.
struct Builder<'a, 'py> {
    py: Python<'py>,
    tree: &'a mut PyTree,
}

impl JsonBuilder for Builder<'_, '_> {
    fn start_array(&mut self) {
        let l = PyList::empty(self.py);
        self.tree.push(self.py, Frame::List(l.clone().unbind()), l.as_any());
    }

    fn start_object(&mut self) {
        let d = PyDict::new(self.py);
        self.tree
            .push(self.py, Frame::Dict(d.clone().unbind(), None), d.as_any());
    }

    fn key(&mut self, key: &str) {
        let k = self.tree.keys.get(self.py, key).unbind();
        if let Some(Frame::Dict(_, pending)) = self.tree.stack.last_mut() {
            *pending = Some(k);
        }
    }

    fn scalar(&mut self, value: Scalar<'_>) {
        let r = scalar(self.py, value).and_then(|v| self.tree.attach(self.py, &v));
        if let Err(e) = r {
            self.tree.error.get_or_insert(e);
        }
    }

    fn end(&mut self) {
        self.tree.stack.pop();
    }
}

/// A JSON document arriving in pieces (e.g. streamed function-call arguments).
// Not `frozen`: every call mutates the parser; PyO3's borrow flag costs what a Mutex would.
#[pyclass(module = "ferroute._core", name = "JsonStream")]
pub struct PyJsonStream {
    parser: JsonParser,
    tree: PyTree,
}

/// The UTF-8 bytes of a `str` or `bytes` argument.
fn input_bytes<'a>(text: &'a Bound<'_, PyAny>) -> PyResult<&'a [u8]> {
    if let Ok(b) = text.cast::<PyBytes>() {
        Ok(b.as_bytes())
    } else if let Ok(s) = text.cast::<PyString>() {
        Ok(s.to_str()?.as_bytes())
    } else {
        Err(pyo3::exceptions::PyTypeError::new_err(format!(
            "expected str or bytes, not {}",
            text.get_type().name()?
        )))
    }
}

impl PyJsonStream {
    fn feed_bytes(&mut self, py: Python<'_>, bytes: &[u8]) -> PyResult<()> {
        let mut b = Builder {
            py,
            tree: &mut self.tree,
        };
        let r = self.parser.feed(bytes, &mut b);
        if let Some(e) = self.tree.error.take() {
            return Err(self.builder_failed(py, &e));
        }
        r.map_err(|e| json_error(&e))
    }

    /// A Python error while building (an integer past `sys.get_int_max_str_digits()`): the stream
    /// stops, reported as a JSONError at the end of the piece.
    #[cold]
    fn builder_failed(&mut self, py: Python<'_>, e: &PyErr) -> PyErr {
        let msg = e.value(py).to_string();
        let err = JsonError {
            offset: self.parser.offset(),
            kind: ferroute_core::json::JsonErrorKind::Builder(msg),
        };
        self.parser = JsonParser::poisoned(err.clone());
        json_error(&err)
    }

    fn current(&mut self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        if let Err(e) = self.tree.sync(py, &self.parser) {
            // Only a trailing integer past `sys.get_int_max_str_digits()` gets here.
            let kind = ferroute_core::json::JsonErrorKind::Builder(e.value(py).to_string());
            return Err(json_error(&JsonError {
                offset: self.parser.offset(),
                kind,
            }));
        }
        Ok(self.tree.root.as_ref().map_or_else(|| py.None(), |r| r.clone_ref(py)))
    }
}

#[pymethods]
impl PyJsonStream {
    #[new]
    // A literal (= DEFAULT_MAX_DEPTH): PyO3 shows only literal defaults in `__text_signature__`.
    #[pyo3(signature = (*, max_depth = 256))]
    fn new(max_depth: usize) -> Self {
        Self {
            parser: JsonParser::new(max_depth),
            tree: PyTree::default(),
        }
    }

    /// Parse the next piece; raises JSONError on malformed JSON or too deep nesting.
    fn feed(&mut self, py: Python<'_>, text: &Bound<'_, PyAny>) -> PyResult<()> {
        let bytes = input_bytes(text)?;
        self.feed_bytes(py, bytes)
    }

    /// The partial value so far (the live object, updated in place by later feeds).
    fn value(&mut self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        self.current(py)
    }

    /// True once one whole top-level value has been read.
    #[getter]
    fn complete(&self) -> bool {
        self.parser.is_complete()
    }
}

/// Parse a possibly truncated JSON document, as `JsonStream().feed(text); .value()`.
#[pyfunction]
#[pyo3(signature = (text, *, max_depth = 256))]
fn parse_partial_json(py: Python<'_>, text: &Bound<'_, PyAny>, max_depth: usize) -> PyResult<Py<PyAny>> {
    let mut s = PyJsonStream::new(max_depth);
    s.feed_bytes(py, input_bytes(text)?)?;
    s.current(py)
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("JSONError", m.py().get_type::<JSONError>())?;
    m.add_class::<PyJsonStream>()?;
    m.add_function(wrap_pyfunction!(parse_partial_json, m)?)?;
    Ok(())
}
