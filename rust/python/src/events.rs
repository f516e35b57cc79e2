//! `ResponseEventParser` and `StreamError`: the checking Open Responses stream parser for Python; `new_id`,
//! `item_id` and `OUTPUT_ITEMS`: the ids the core gives responses and their items.

use std::sync::{Mutex, MutexGuard, TryLockError};

use pyo3::create_exception;
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyList;

use ferroute_core::events::parser::{EventFields, ResponseEventParser as CoreParser, StreamError as CoreStreamError};
use ferroute_core::sse::SseLimits;

use super::pyjson::{json_object_to_py, json_to_py_cached, KeyCache};

create_exception!(
    ferroute._core,
    StreamError,
    PyValueError,
    "An Open Responses stream broke the spec's grammar; the message says what and where."
);

#[cold]
fn stream_error(error: &CoreStreamError) -> PyErr {
    StreamError::new_err(error.to_string())
}

struct State {
    core: CoreParser,
    keys: KeyCache,
    /// The last `response` dict built, with the checker version it was built at.
    response: Option<(u64, Py<PyAny>)>,
}

/// Bytes of an Open Responses SSE stream (from any server) → event dicts, checked and accumulated.
#[pyclass(frozen, module = "ferroute._core")]
pub(crate) struct ResponseEventParser {
    state: Mutex<State>,
}

impl ResponseEventParser {
    fn lock(&self) -> PyResult<MutexGuard<'_, State>> {
        // Never block: a thread waiting here would hold the GIL the owner may need back.
        match self.state.try_lock() {
            Ok(guard) => Ok(guard),
            Err(TryLockError::Poisoned(poisoned)) => Ok(poisoned.into_inner()),
            Err(TryLockError::WouldBlock) => Err(PyRuntimeError::new_err(
                "ResponseEventParser is already in use by another thread",
            )),
        }
    }
}

#[pymethods]
impl ResponseEventParser {
    #[new]
    #[pyo3(signature = (*, max_line_length = 1_048_576, max_event_size = 16_777_216))]
    fn new(max_line_length: usize, max_event_size: usize) -> Self {
        let limits = SseLimits {
            max_line_len: max_line_length,
            max_event_size,
        };
        Self {
            state: Mutex::new(State {
                core: CoreParser::with_limits(limits),
                keys: KeyCache::new(),
                response: None,
            }),
        }
    }

    /// Decode, parse and check the next bytes; returns the events they complete, in order.
    fn feed<'py>(&self, py: Python<'py>, data: &[u8]) -> PyResult<Bound<'py, PyList>> {
        let mut guard = self.lock()?;
        let State { core, keys, .. } = &mut *guard;
        let mut events = Vec::new();
        core.feed_with(
            data,
            |json| {
                let mut fields = EventFields::default();
                let event = json_object_to_py(py, json, keys, &mut |key, raw, string| fields.set(key, raw, string))
                    .map_err(|error| error.value(py).to_string())?;
                Ok((event, fields))
            },
            |event| events.push(event),
        )
        .map_err(|error| stream_error(&error))?;
        // One call that sizes the list exactly.
        PyList::new(py, events)
    }

    /// The response object accumulated so far (equal to the terminal event's once the stream ends).
    #[getter]
    fn response(&self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        let mut guard = self.lock()?;
        let version = guard.core.checker().version();
        if let Some((built, response)) = &guard.response {
            if *built == version {
                return Ok(Some(response.clone_ref(py)));
            }
        }
        let Some(json) = guard.core.checker().response_json() else {
            return Ok(None);
        };
        let response = json_to_py_cached(py, &json, &mut guard.keys)?.unbind();
        guard.response = Some((version, response.clone_ref(py)));
        Ok(Some(response))
    }

    /// End of stream: raises StreamError unless the stream ended with a terminal event.
    fn close(&self) -> PyResult<()> {
        self.lock()?.core.close().map_err(|error| stream_error(&error))
    }
}

/// A new id `prefix_` + 48 hex characters (see `events/ids.rs`).
#[pyfunction]
fn new_id(prefix: &str) -> String {
    ferroute_core::events::ids::new_id(prefix)
}

/// The id of output item `index` of response `response_id` (see `events/ids.rs`).
#[pyfunction]
fn item_id(prefix: &str, response_id: &str, index: usize) -> String {
    ferroute_core::events::ids::item_id(prefix, response_id, index)
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(new_id, m)?)?;
    m.add_function(wrap_pyfunction!(item_id, m)?)?;
    m.add("OUTPUT_ITEMS", ferroute_core::events::ids::OUTPUT_ITEMS)?;
    m.add("SEALED_PREFIX", ferroute_core::events::writer::SEALED_PREFIX)?;
    m.add("UPSTREAM_ITEM", ferroute_core::translate::responses::UPSTREAM_ITEM)?;
    m.add_class::<ResponseEventParser>()?;
    m.add("StreamError", m.py().get_type::<StreamError>())?;
    Ok(())
}
