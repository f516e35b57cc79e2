//! PyO3 glue: classes and functions only; the logic lives in the pure-Rust modules.

use pyo3::prelude::*;

mod events;
mod json;
mod sse;
mod pyjson;
mod translate;

#[pymodule]
#[pyo3(name = "_core")]
fn core_module(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    sse::register(m)?;
    json::register(m)?;
    events::register(m)?;
    translate::register(m)?;
    Ok(())
}
