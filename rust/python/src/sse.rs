//! `SSEDecoder`, `SSEEvent`, `encode_sse` and `SSEError`: thin wrappers over [`ferroute_core::sse`].

use pyo3::basic::CompareOp;
use pyo3::create_exception;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyList, PyString, PyTuple};

use ferroute_core::sse::{encode_event, SseDecoder, SseError, SseLimits};

create_exception!(
    ferroute._core,
    SSEError,
    PyValueError,
    "A server-sent-events stream broke a configured bound (line length, event size).\n\nThe message names the limit \
     and the byte offset in the stream where it was exceeded."
);

/// The Python exception for an [`SseError`] (also for other glue modules that decode SSE).
#[cold]
#[inline(never)]
pub(crate) fn sse_error(err: &SseError) -> PyErr {
    SSEError::new_err(err.to_string())
}

/// One dispatched server-sent event. The strings are built once, when the event is decoded.
///
/// The freelist recycles the events of one read for the next when the caller drops them as it goes
/// (`for e in decoder.feed(chunk)`): ~285 instead of ~300 ns per event over 4 KiB reads of a 10,000-event
/// stream; no difference when all the events are kept.
#[pyclass(frozen, freelist = 256, module = "ferroute._core", name = "SSEEvent")]
pub(crate) struct PySseEvent {
    event: Option<Py<PyString>>,
    data: Py<PyString>,
    id: Option<Py<PyString>>,
    retry: Option<u64>,
}

fn opt_eq(py: Python<'_>, a: Option<&Py<PyString>>, b: Option<&Py<PyString>>) -> PyResult<bool> {
    match (a, b) {
        (None, None) => Ok(true),
        (Some(a), Some(b)) => Ok(a.is(b) || PyAnyMethods::eq(a.bind(py).as_any(), b.bind(py))?),
        _ => Ok(false),
    }
}

fn opt_repr(py: Python<'_>, s: Option<&Py<PyString>>) -> PyResult<String> {
    match s {
        Some(s) => Ok(s.bind(py).repr()?.to_string()),
        None => Ok("None".to_owned()),
    }
}

#[pymethods]
impl PySseEvent {
    #[new]
    #[pyo3(signature = (data, event = None, id = None, retry = None))]
    fn new(
        data: Bound<'_, PyString>,
        event: Option<Bound<'_, PyString>>,
        id: Option<Bound<'_, PyString>>,
        retry: Option<u64>,
    ) -> Self {
        Self {
            event: event.map(Bound::unbind),
            data: data.unbind(),
            id: id.map(Bound::unbind),
            retry,
        }
    }

    /// The `event:` field, or None when the event had none (the WHATWG default type `message`).
    #[getter]
    fn event(&self, py: Python<'_>) -> Option<Py<PyString>> {
        self.event.as_ref().map(|s| s.clone_ref(py))
    }

    /// The `data:` lines joined with `\n`.
    #[getter]
    fn data(&self, py: Python<'_>) -> Py<PyString> {
        self.data.clone_ref(py)
    }

    /// The last event ID in force when the event was dispatched, or None if the stream never set one.
    #[getter]
    fn id(&self, py: Python<'_>) -> Option<Py<PyString>> {
        self.id.as_ref().map(|s| s.clone_ref(py))
    }

    /// The reconnection time in ms set by this event's block, or None.
    #[getter]
    fn retry(&self) -> Option<u64> {
        self.retry
    }

    fn __richcmp__(&self, other: &Bound<'_, PyAny>, op: CompareOp) -> PyResult<Py<PyAny>> {
        let py = other.py();
        let Ok(other) = other.cast::<Self>() else {
            return Ok(py.NotImplemented());
        };
        let other = other.get();
        let equal = match op {
            CompareOp::Eq | CompareOp::Ne => {
                self.retry == other.retry
                    && opt_eq(py, Some(&self.data), Some(&other.data))?
                    && opt_eq(py, self.event.as_ref(), other.event.as_ref())?
                    && opt_eq(py, self.id.as_ref(), other.id.as_ref())?
            }
            _ => return Ok(py.NotImplemented()),
        };
        Ok(PyBool::new(py, equal ^ matches!(op, CompareOp::Ne))
            .to_owned()
            .into_any()
            .unbind())
    }

    fn __hash__(&self, py: Python<'_>) -> PyResult<isize> {
        let retry = self.retry.into_pyobject(py)?.into_any().unbind();
        let event = self
            .event
            .as_ref()
            .map_or_else(|| py.None(), |s| s.clone_ref(py).into_any());
        let id = self
            .id
            .as_ref()
            .map_or_else(|| py.None(), |s| s.clone_ref(py).into_any());
        PyTuple::new(py, [self.data.clone_ref(py).into_any(), event, id, retry])?.hash()
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        let retry = self.retry.map_or_else(|| "None".to_owned(), |r| r.to_string());
        Ok(format!(
            "SSEEvent(data={}, event={}, id={}, retry={retry})",
            self.data.bind(py).repr()?,
            opt_repr(py, self.event.as_ref())?,
            opt_repr(py, self.id.as_ref())?,
        ))
    }
}

/// Take a decoded event out of the cycle collector's lists. PyO3 makes every pyclass a GC type, but an
/// `SSEEvent` holds only strings, so it can never be part of a reference cycle (CPython untracks its own
/// tuples and dicts of atomic values for the same reason). Without this, decoding the 10,000-event stream
/// of `bench/bench_sse.py` whole took ~360 instead of ~310 ns per event (Python 3.11), the difference
/// being collections traversing the events already decoded: with gc disabled it took ~315.
fn untrack(event: &Bound<'_, PySseEvent>) {
    // SAFETY: `event` is a live, fully initialised object of a GC type, and we hold the GIL.
    // `PyObject_GC_UnTrack` is a no-op on an untracked object, so PyO3's `tp_dealloc` calling it again
    // later is fine.
    unsafe { pyo3::ffi::PyObject_GC_UnTrack(event.as_ptr().cast()) };
}

/// Event names a stream repeats (`response.output_text.delta`, `content_block_delta`, …): each distinct
/// name becomes a Python string once, not once per event. Most recent first. On a 10,000-event Open
/// Responses stream (`bench/streams.py`, ~275 B per event) this saves ~60 ns per event (~270 vs ~330).
const EVENT_NAME_CACHE: usize = 8;

/// Incremental WHATWG server-sent-events decoder: feed it bytes as they arrive.
#[pyclass(module = "ferroute._core", name = "SSEDecoder")]
pub(crate) struct PySseDecoder {
    inner: SseDecoder,
    names: Vec<(String, Py<PyString>)>,
    /// The Python string of the last event ID, built once per `id` change.
    last_id: Option<(String, Py<PyString>)>,
}

/// The Python string for an event name, from the cache when the stream used it recently.
fn event_name(py: Python<'_>, names: &mut Vec<(String, Py<PyString>)>, name: &str) -> Py<PyString> {
    if let Some(k) = names.iter().position(|(n, _)| n == name) {
        names[..=k].rotate_right(1);
        return names[0].1.clone_ref(py);
    }
    let s = PyString::new(py, name).unbind();
    if names.len() == EVENT_NAME_CACHE {
        names.pop();
    }
    names.insert(0, (name.to_owned(), s.clone_ref(py)));
    s
}

/// The Python string for the last event ID, rebuilt only when the stream changes it.
fn event_id(py: Python<'_>, cache: &mut Option<(String, Py<PyString>)>, id: &str) -> Py<PyString> {
    match cache {
        Some((cached, s)) if cached == id => s.clone_ref(py),
        _ => {
            let s = PyString::new(py, id).unbind();
            *cache = Some((id.to_owned(), s.clone_ref(py)));
            s
        }
    }
}

#[pymethods]
impl PySseDecoder {
    #[new]
    #[pyo3(signature = (*, max_line_length = 1_048_576, max_event_size = 16_777_216))]
    fn new(max_line_length: usize, max_event_size: usize) -> Self {
        let limits = SseLimits {
            max_line_len: max_line_length,
            max_event_size,
        };
        Self {
            inner: SseDecoder::with_limits(limits),
            names: Vec::new(),
            last_id: None,
        }
    }

    /// Decode the next bytes of the stream and return the events they complete.
    fn feed<'py>(&mut self, py: Python<'py>, data: &[u8]) -> PyResult<Bound<'py, PyList>> {
        let Self { inner, names, last_id } = self;
        let mut events = Vec::new();
        let mut failed = None;
        let result = inner.feed(data, |e| {
            if failed.is_some() {
                return;
            }
            let event = PySseEvent {
                event: e.event.map(|n| event_name(py, names, n)),
                data: PyString::new(py, e.data).unbind(),
                id: e.id.map(|i| event_id(py, last_id, i)),
                retry: e.retry,
            };
            match Bound::new(py, event) {
                Ok(event) => {
                    untrack(&event);
                    events.push(event);
                }
                Err(err) => failed = Some(err),
            }
        });
        if let Some(err) = failed {
            return Err(err);
        }
        result.map_err(|e| sse_error(&e))?;
        PyList::new(py, events)
    }

    /// End of stream: an unfinished event is discarded (WHATWG); returns what the end completes.
    fn close<'py>(&mut self, py: Python<'py>) -> Bound<'py, PyList> {
        self.inner.finish();
        PyList::empty(py)
    }

    /// Bytes fed so far.
    #[getter]
    fn position(&self) -> u64 {
        self.inner.position()
    }

    fn __repr__(&self) -> String {
        let limits = self.inner.limits();
        format!(
            "SSEDecoder(max_line_length={}, max_event_size={}, position={})",
            limits.max_line_len,
            limits.max_event_size,
            self.inner.position()
        )
    }
}

/// One SSE frame: `event: <event>` (when given) and one `data:` line per line of `data`, then a blank line.
#[pyfunction]
#[pyo3(signature = (event, data))]
fn encode_sse<'py>(py: Python<'py>, event: Option<&str>, data: &str) -> PyResult<Bound<'py, PyBytes>> {
    let mut out = Vec::new();
    encode_event(&mut out, event, data).map_err(|e| sse_error(&e))?;
    Ok(PyBytes::new(py, &out))
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("SSEError", m.py().get_type::<SSEError>())?;
    m.add_class::<PySseEvent>()?;
    m.add_class::<PySseDecoder>()?;
    m.add_function(wrap_pyfunction!(encode_sse, m)?)?;
    Ok(())
}
