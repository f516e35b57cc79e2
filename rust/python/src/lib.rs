//! PyO3 glue: classes and functions only; the logic lives in the pure-Rust modules.

use pyo3::prelude::*;

mod chunked;
mod events;
mod json;
mod loadtest;
mod otlp;
mod pyjson;
mod sse;
mod translate;

#[pymodule]
#[pyo3(name = "_core")]
fn core_module(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    sse::register(m)?;
    chunked::register(m)?;
    json::register(m)?;
    events::register(m)?;
    translate::register(m)?;
    loadtest::register(m)?;
    otlp::register(m)?;
    m.add_function(wrap_pyfunction!(_panic, m)?)?;
    Ok(())
}

/// Test hook: panics inside Rust so the tests can show a panic surfaces as an exception
/// (`pyo3_runtime.PanicException`) and the interpreter lives on.
#[pyfunction]
fn _panic(message: &str) {
    panic!("{message}");
}
