//! `ChatCompletionsTranslator`, `AnthropicTranslator`, `ResponsesTranslator`: the router's per-request
//! translators, one call per upstream read.

use pyo3::create_exception;
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyString};

use ferroute_core::events::writer::{ErrorInfo, ResponseSettings};
use ferroute_core::sse::SseLimits;
use ferroute_core::translate::{anthropic, chat_completions, responses};

create_exception!(
    ferroute._core,
    UpstreamError,
    PyValueError,
    "An upstream body that is not what its dialect promises."
);

/// The request whose settings the response echoes: JSON bytes/str, or a mapping (serialised once).
fn settings_from(request: Option<&Bound<'_, PyAny>>) -> PyResult<ResponseSettings> {
    let Some(request) = request.filter(|r| !r.is_none()) else {
        return Ok(ResponseSettings::default());
    };
    let parsed = if let Ok(bytes) = request.cast::<PyBytes>() {
        ResponseSettings::from_request(bytes.as_bytes())
    } else if let Ok(text) = request.cast::<PyString>() {
        ResponseSettings::from_request(text.to_str()?.as_bytes())
    } else if request.hasattr("keys")? {
        ResponseSettings::from_request(super::pyjson::py_to_json(request)?.as_bytes())
    } else {
        return Err(PyTypeError::new_err("request must be JSON bytes or str, or a mapping"));
    };
    parsed.map_err(|e| PyValueError::new_err(format!("request is not a JSON object: {e}")))
}

/// A translator class for one upstream dialect: the router's per-request translator, one call per upstream
/// read. Both dialects have the same Python API (`_core.pyi`), so the router picks one by provider kind.
macro_rules! translator_class {
    ($name:ident, $core:ty, $convert:path) => {
        #[pyclass(module = "ferroute._core")]
        pub(crate) struct $name {
            core: $core,
            settings: ResponseSettings,
            response_id: String,
            created_at: Option<u64>,
        }

        #[pymethods]
        impl $name {
            #[new]
            #[pyo3(signature = (request=None, *, model=None, store=None, response_id=None, created_at=None, max_line_length=1_048_576, max_event_size=16_777_216))]
            #[allow(clippy::too_many_arguments)] // the Python keyword arguments
            fn new(
                request: Option<&Bound<'_, PyAny>>,
                model: Option<&str>,
                store: Option<bool>,
                response_id: Option<String>,
                created_at: Option<u64>,
                max_line_length: usize,
                max_event_size: usize,
            ) -> PyResult<Self> {
                let mut settings = settings_from(request)?;
                if let Some(model) = model {
                    settings.set_model(model);
                }
                if let Some(store) = store {
                    settings.set_store(store);
                }
                let response_id = response_id.unwrap_or_else(|| ferroute_core::events::ids::new_id("resp"));
                let limits = SseLimits {
                    max_line_len: max_line_length,
                    max_event_size,
                };
                let core = <$core>::new(settings.clone(), Some(response_id.clone()), created_at, limits);
                Ok(Self {
                    core,
                    settings,
                    response_id,
                    created_at,
                })
            }

            fn feed<'py>(&mut self, py: Python<'py>, upstream: &[u8]) -> Bound<'py, PyBytes> {
                PyBytes::new(py, self.core.feed(upstream))
            }

            fn finish<'py>(&mut self, py: Python<'py>) -> Bound<'py, PyBytes> {
                PyBytes::new(py, self.core.finish())
            }

            #[pyo3(signature = (message, *, code="server_error", r#type="server_error"))]
            fn fail<'py>(&mut self, py: Python<'py>, message: &str, code: &str, r#type: &str) -> Bound<'py, PyBytes> {
                let error = ErrorInfo {
                    kind: r#type.to_owned(),
                    code: code.to_owned(),
                    message: message.to_owned(),
                    param: None,
                };
                PyBytes::new(py, self.core.fail(error))
            }

            fn convert<'py>(&self, py: Python<'py>, body: &[u8]) -> PyResult<Bound<'py, PyBytes>> {
                let json = $convert(body, self.settings.clone(), Some(self.response_id.clone()), self.created_at)
                    .map_err(|e| UpstreamError::new_err(e.message))?;
                Ok(PyBytes::new(py, &json))
            }

            #[getter]
            fn response_id(&self) -> &str {
                &self.response_id
            }

            #[getter]
            fn status(&self) -> &'static str {
                self.core.status().as_str()
            }

            fn response_json<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
                PyBytes::new(py, &self.core.writer().response_json())
            }

            fn __repr__(&self) -> String {
                format!(
                    "{}(response_id={:?}, status={:?})",
                    stringify!($name),
                    self.response_id,
                    self.core.status().as_str()
                )
            }
        }
    };
}

translator_class!(
    ChatCompletionsTranslator,
    chat_completions::ChatCompletionsTranslator,
    chat_completions::convert_chat_completion
);
translator_class!(
    AnthropicTranslator,
    anthropic::AnthropicTranslator,
    anthropic::convert_message
);
translator_class!(
    ResponsesTranslator,
    responses::ResponsesTranslator,
    responses::convert_response
);

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<ChatCompletionsTranslator>()?;
    m.add_class::<AnthropicTranslator>()?;
    m.add_class::<ResponsesTranslator>()?;
    m.add("UpstreamError", m.py().get_type::<UpstreamError>())?;
    Ok(())
}
