//! `ChunkedDecoder`: the router's upstream transport strips HTTP/1.1 chunked framing with it.

use pyo3::create_exception;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use ferroute_core::chunked::ChunkedDecoder as Core;

create_exception!(
    ferroute._core,
    ChunkedError,
    PyValueError,
    "Malformed HTTP/1.1 chunked framing; the message names the problem and its byte offset in the body."
);

#[pyclass(module = "ferroute._core")]
pub(crate) struct ChunkedDecoder {
    core: Core,
    /// Reused between reads: the payload is decoded here, then copied once into the returned bytes.
    out: Vec<u8>,
    failed: Option<String>,
}

#[pymethods]
impl ChunkedDecoder {
    #[new]
    fn new() -> Self {
        Self {
            core: Core::new(),
            out: Vec::new(),
            failed: None,
        }
    }

    /// The payload bytes `data` holds (b"" if none). Raises ChunkedError on malformed framing, and again
    /// on every later call.
    fn feed<'py>(&mut self, py: Python<'py>, data: &[u8]) -> PyResult<Bound<'py, PyBytes>> {
        if let Some(message) = &self.failed {
            return Err(ChunkedError::new_err(message.clone()));
        }
        self.out.clear();
        if let Err(e) = self.core.feed(data, &mut self.out) {
            let message = e.to_string();
            self.failed = Some(message.clone());
            return Err(ChunkedError::new_err(message));
        }
        Ok(PyBytes::new(py, &self.out))
    }

    /// The body has ended: the last chunk and its trailers were read.
    #[getter]
    fn done(&self) -> bool {
        self.core.is_done()
    }

    /// Bytes came after the end of the body (the connection cannot be reused).
    #[getter]
    fn extra(&self) -> bool {
        self.core.has_extra()
    }
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<ChunkedDecoder>()?;
    m.add("ChunkedError", m.py().get_type::<ChunkedError>())?;
    Ok(())
}
