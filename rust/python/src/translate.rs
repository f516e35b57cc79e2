//! `ChatCompletionsTranslator`, `AnthropicTranslator`, `ResponsesTranslator`: the router's per-request
//! translators, one call per upstream read.

use pyo3::create_exception;
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use pyo3::types::{PyBytes, PyDict, PyList, PyString, PyTuple};

use ferroute_core::events::raw::RawJsonError;
use ferroute_core::events::redact::Secrets;
use ferroute_core::events::writer::{
    ErrorInfo, Framing, LiveCall, Outcome, ReasoningPolicy, ResponseSettings, ResponseWriter,
};
use ferroute_core::sse::SseLimits;
use ferroute_core::translate::{anthropic, chat_completions, responses, TranslatorOptions};

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

/// JSON given as bytes/str, or a mapping (serialised once).
fn json_bytes(value: &Bound<'_, PyAny>, what: &str) -> PyResult<Vec<u8>> {
    if let Ok(bytes) = value.cast::<PyBytes>() {
        Ok(bytes.as_bytes().to_vec())
    } else if let Ok(text) = value.cast::<PyString>() {
        Ok(text.to_str()?.as_bytes().to_vec())
    } else if value.hasattr("keys")? {
        Ok(super::pyjson::py_to_json(value)?.into_bytes())
    } else {
        Err(PyTypeError::new_err(format!(
            "{what} must be JSON bytes or str, or a mapping"
        )))
    }
}

#[cold]
fn raw_error(error: RawJsonError) -> PyErr {
    PyValueError::new_err(error.message)
}

/// The error a seal callable raised, kept until the translator call that ran it returns.
type SealError = Arc<Mutex<Option<PyErr>>>;

/// The router's secrets, masked in the errors an upstream sends back (made once, shared by every translator).
#[pyclass(frozen, module = "ferroute._core", name = "Secrets")]
pub(crate) struct PySecrets {
    inner: Arc<Secrets>,
}

#[pymethods]
impl PySecrets {
    #[new]
    fn new(secrets: Vec<String>) -> Self {
        Self {
            inner: Arc::new(Secrets::new(secrets)),
        }
    }

    fn mask<'a>(&self, text: &'a str) -> std::borrow::Cow<'a, str> {
        self.inner.mask(text)
    }

    fn __len__(&self) -> usize {
        self.inner.len()
    }

    fn __repr__(&self) -> String {
        format!("Secrets(<{} masked>)", self.inner.len())
    }
}

/// The `framing`, `reasoning`/`seal` and `secrets` keyword arguments as the core's options.
fn options(
    framing: &str,
    reasoning: &str,
    seal: Option<Py<PyAny>>,
    seal_error: &mut Option<SealError>,
    secrets: Option<&PySecrets>,
) -> PyResult<TranslatorOptions> {
    let framing = match framing {
        "sse" => Framing::Sse,
        "json" => Framing::JsonLines,
        other => {
            return Err(PyValueError::new_err(format!(
                "framing must be \"sse\" or \"json\", not {other:?}"
            )))
        }
    };
    let reasoning = match (reasoning, seal) {
        ("keep", None) => ReasoningPolicy::Keep,
        ("strip", None) => ReasoningPolicy::Strip,
        ("seal", Some(seal)) => {
            let error = seal_error.get_or_insert_with(SealError::default).clone();
            ReasoningPolicy::Seal(Box::new(move |payload: &[u8]| {
                Python::attach(|py| {
                    let blob = seal
                        .call1(py, (PyBytes::new(py, payload),))
                        .and_then(|blob| blob.extract::<String>(py));
                    blob.map_err(|e| {
                        error.lock().expect("seal error slot").get_or_insert(e);
                    })
                    .ok()
                })
            }))
        }
        ("seal", None) => return Err(PyValueError::new_err("reasoning=\"seal\" needs seal=callable")),
        ("keep" | "strip", Some(_)) => return Err(PyValueError::new_err("seal= goes with reasoning=\"seal\"")),
        (other, _) => {
            return Err(PyValueError::new_err(format!(
                "reasoning must be \"keep\", \"strip\" or \"seal\", not {other:?}"
            )))
        }
    };
    Ok(TranslatorOptions {
        framing,
        reasoning,
        secrets: secrets.map(|s| Arc::clone(&s.inner)),
    })
}

/// How a turn ended, as a dict (see `_core.pyi`).
fn outcome_dict<'py>(py: Python<'py>, outcome: &Outcome) -> PyResult<Bound<'py, PyDict>> {
    let dict = PyDict::new(py);
    let (status, reason, error) = match outcome {
        Outcome::Completed => ("completed", None, None),
        Outcome::Incomplete(reason) => ("incomplete", Some(reason.as_str()), None),
        Outcome::Failed(error) => ("failed", None, Some(error)),
    };
    dict.set_item("status", status)?;
    dict.set_item("reason", reason)?;
    match error {
        Some(error) => {
            let e = PyDict::new(py);
            e.set_item("type", &error.kind)?;
            e.set_item("code", &error.code)?;
            e.set_item("message", &error.message)?;
            dict.set_item("error", e)?;
        }
        None => dict.set_item("error", py.None())?,
    }
    Ok(dict)
}

/// A translator class for one upstream dialect: the router's per-request translator, one call per upstream
/// read. Both dialects have the same Python API (`_core.pyi`), so the router picks one by provider kind.
macro_rules! translator_class {
    ($name:ident, $core:ty) => {
        #[pyclass(module = "ferroute._core")]
        pub(crate) struct $name {
            core: $core,
            settings: ResponseSettings,
            response_id: String,
            created_at: Option<u64>,
            /// Where the seal callable's exception waits (`None` without one: nothing to check).
            seal_error: Option<SealError>,
        }

        impl $name {
            /// `out`, or the error the seal callable raised while making it.
            fn sealed<'py>(&self, py: Python<'py>, out: &[u8]) -> PyResult<Bound<'py, PyBytes>> {
                if let Some(error) = self.seal_error.as_ref().and_then(|e| e.lock().expect("seal error slot").take()) {
                    return Err(error);
                }
                Ok(PyBytes::new(py, out))
            }
        }

        #[pymethods]
        impl $name {
            #[new]
            #[pyo3(signature = (request=None, *, model=None, store=None, response_id=None, created_at=None, max_line_length=1_048_576, max_event_size=16_777_216, framing="sse", reasoning="keep", seal=None, secrets=None, started=false))]
            #[allow(clippy::too_many_arguments)] // the Python keyword arguments
            fn new(
                request: Option<&Bound<'_, PyAny>>,
                model: Option<&str>,
                store: Option<bool>,
                response_id: Option<String>,
                created_at: Option<u64>,
                max_line_length: usize,
                max_event_size: usize,
                framing: &str,
                reasoning: &str,
                seal: Option<Py<PyAny>>,
                secrets: Option<PyRef<'_, PySecrets>>,
                started: bool,
            ) -> PyResult<Self> {
                let mut seal_error = None;
                let options = options(framing, reasoning, seal, &mut seal_error, secrets.as_deref())?;
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
                let mut core =
                    <$core>::with_options(settings.clone(), Some(response_id.clone()), created_at, limits, options);
                if started {
                    core.writer_mut().resume_started();
                }
                Ok(Self {
                    core,
                    settings,
                    response_id,
                    created_at,
                    seal_error,
                })
            }

            fn feed<'py>(&mut self, py: Python<'py>, upstream: &[u8]) -> PyResult<Bound<'py, PyBytes>> {
                let out = self.core.feed(upstream);
                // (Without a seal callable, the check is one test of a `None`.)
                if let Some(error) = self.seal_error.as_ref().and_then(|e| e.lock().expect("seal error slot").take()) {
                    return Err(error);
                }
                Ok(PyBytes::new(py, out))
            }

            fn finish<'py>(&mut self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
                self.core.finish();
                self.sealed(py, self.core.writer().output())
            }

            fn feed_whole<'py>(&mut self, py: Python<'py>, body: &[u8]) -> PyResult<Bound<'py, PyBytes>> {
                self.core.feed_whole(body).map_err(|e| UpstreamError::new_err(e.message))?;
                self.sealed(py, self.core.writer().output())
            }

            fn next_turn(&mut self) {
                self.core.next_turn();
            }

            fn end_turn<'py>(&mut self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
                self.core.end_turn();
                self.sealed(py, self.core.writer().output())
            }

            fn turn_result<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyDict>>> {
                let Some(outcome) = self.core.turn_outcome() else {
                    return Ok(None);
                };
                let dict = outcome_dict(py, outcome)?;
                dict.set_item("function_calls", self.turn_calls(py)?)?;
                Ok(Some(dict))
            }

            fn turn_calls<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
                let calls = PyList::empty(py);
                for call in self.core.turn_function_calls() {
                    let c = PyDict::new(py);
                    c.set_item("output_index", call.output_index)?;
                    c.set_item("id", call.id)?;
                    c.set_item("call_id", call.call_id)?;
                    c.set_item("name", call.name)?;
                    c.set_item("arguments", call.arguments)?;
                    c.set_item("held", call.held)?;
                    calls.append(c)?;
                }
                Ok(calls)
            }

            #[pyo3(signature = (names, *, live=None, prefix="item", events=None))]
            fn hold(
                &mut self,
                names: &Bound<'_, PyAny>,
                live: Option<&Bound<'_, PyAny>>,
                prefix: &str,
                events: Option<&str>,
            ) -> PyResult<()> {
                // A str is an iterable of its characters: holding those is never what was meant.
                if names.is_instance_of::<PyString>() || names.is_instance_of::<PyBytes>() {
                    return Err(PyTypeError::new_err("names must be an iterable of str, not a single str"));
                }
                let names = names
                    .try_iter()?
                    .map(|name| name?.extract::<String>())
                    .collect::<PyResult<Vec<String>>>()?;
                let mut calls = HashMap::new();
                if let Some(live) = live.filter(|live| !live.is_none()) {
                    let events = events.ok_or_else(|| PyTypeError::new_err("live calls need events"))?;
                    for entry in live.call_method0("items")?.try_iter()? {
                        let (name, item): (String, Bound<'_, PyAny>) = entry?.extract()?;
                        if !names.contains(&name) {
                            return Err(PyValueError::new_err(format!("the live name {name:?} is not held")));
                        }
                        let call = LiveCall::new(&json_bytes(&item, "item")?, prefix, events).map_err(raw_error)?;
                        calls.insert(name, call);
                    }
                }
                let writer = self.core.writer_mut();
                writer.set_held_names(names);
                writer.set_live_calls(calls);
                Ok(())
            }

            #[pyo3(signature = (r#type, item))]
            fn close_live<'py>(
                &mut self,
                py: Python<'py>,
                r#type: &str,
                item: &Bound<'py, PyAny>,
            ) -> PyResult<Bound<'py, PyBytes>> {
                let item = json_bytes(item, "item")?;
                let writer = self.core.writer_mut();
                writer.clear_output();
                writer.close_live(r#type, &item).map_err(raw_error)?;
                self.sealed(py, self.core.writer().output())
            }

            fn waiting_items(&self) -> usize {
                self.core.writer().waiting_count()
            }

            #[pyo3(signature = (previous, *, copy=false))]
            fn adopt(&mut self, previous: &Bound<'_, PyAny>, copy: bool) -> PyResult<()> {
                let writer = if copy { fork_writer(previous)? } else { take_writer(previous)? };
                self.core.take_over(writer);
                Ok(())
            }

            fn turn_items<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
                PyBytes::new(py, &self.core.writer().turn_items_json())
            }

            fn cancel<'py>(&mut self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
                self.core.cancel();
                self.sealed(py, self.core.writer().output())
            }

            #[pyo3(signature = (item, *, prefix="item"))]
            fn open_item<'py>(
                &mut self,
                py: Python<'py>,
                item: &Bound<'py, PyAny>,
                prefix: &str,
            ) -> PyResult<Bound<'py, PyTuple>> {
                let item = json_bytes(item, "item")?;
                let writer = self.core.writer_mut();
                writer.clear_output();
                let (_, id) = writer.open_item(prefix, &item).map_err(raw_error)?;
                let id = PyString::new(py, id);
                let out = self.sealed(py, self.core.writer().output())?;
                PyTuple::new(py, [id.into_any(), out.into_any()])
            }

            #[pyo3(signature = (r#type, members=None))]
            fn item_event<'py>(
                &mut self,
                py: Python<'py>,
                r#type: &str,
                members: Option<&Bound<'py, PyAny>>,
            ) -> PyResult<Bound<'py, PyBytes>> {
                let members = match members.filter(|m| !m.is_none()) {
                    Some(members) => json_bytes(members, "members")?,
                    None => b"{}".to_vec(),
                };
                let writer = self.core.writer_mut();
                writer.clear_output();
                writer.item_event(r#type, &members).map_err(raw_error)?;
                Ok(PyBytes::new(py, writer.output()))
            }

            fn done_item<'py>(&mut self, py: Python<'py>, item: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyBytes>> {
                let item = json_bytes(item, "item")?;
                let writer = self.core.writer_mut();
                writer.clear_output();
                writer.done_item(&item).map_err(raw_error)?;
                Ok(PyBytes::new(py, writer.output()))
            }

            fn last_events<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
                PyList::new(py, self.core.writer().output_events().into_iter().map(|e| PyBytes::new(py, e)))
            }

            fn queued_json<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
                PyBytes::new(py, &self.core.writer().queued_json())
            }

            fn client_response_json<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
                PyBytes::new(py, &self.core.writer().client_response_json())
            }

            #[pyo3(signature = (*, input_tokens=0, output_tokens=0, cached_tokens=0, reasoning_tokens=0))]
            fn add_usage(&mut self, input_tokens: u64, output_tokens: u64, cached_tokens: u64, reasoning_tokens: u64) {
                self.core.writer_mut().add_usage(ferroute_core::events::writer::Usage {
                    input_tokens,
                    output_tokens,
                    total_tokens: input_tokens.saturating_add(output_tokens),
                    cached_tokens,
                    reasoning_tokens,
                });
            }

            fn mark_unstored<'py>(&mut self, py: Python<'py>) -> Bound<'py, PyBytes> {
                let writer = self.core.writer_mut();
                writer.restate_unstored();
                PyBytes::new(py, writer.output())
            }

            #[pyo3(signature = (message, *, code="server_error", r#type="server_error"))]
            fn fail<'py>(
                &mut self,
                py: Python<'py>,
                message: &str,
                code: &str,
                r#type: &str,
            ) -> PyResult<Bound<'py, PyBytes>> {
                let error = ErrorInfo {
                    kind: r#type.to_owned(),
                    code: code.to_owned(),
                    message: message.to_owned(),
                    param: None,
                };
                self.core.fail(error);
                self.sealed(py, self.core.writer().output())
            }

            fn convert<'py>(&self, py: Python<'py>, body: &[u8]) -> PyResult<Bound<'py, PyBytes>> {
                let json = self
                    .core
                    .convert(body, self.settings.clone(), Some(self.response_id.clone()), self.created_at)
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

            #[getter]
            fn upstream_events(&self) -> u64 {
                self.core.events()
            }

            #[getter]
            fn output_items(&self) -> usize {
                self.core.writer().item_count()
            }

            #[getter]
            fn usage(&self) -> Option<(u64, u64, u64, u64)> {
                self.core
                    .writer()
                    .total_usage()
                    .map(|u| (u.input_tokens, u.output_tokens, u.cached_tokens, u.reasoning_tokens))
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

/// The response writer of a translator of any dialect, taken from it (`adopt`).
fn take_writer(translator: &Bound<'_, PyAny>) -> PyResult<ResponseWriter> {
    if let Ok(t) = translator.cast::<ChatCompletionsTranslator>() {
        return Ok(t.try_borrow_mut()?.core.take_writer());
    }
    if let Ok(t) = translator.cast::<AnthropicTranslator>() {
        return Ok(t.try_borrow_mut()?.core.take_writer());
    }
    if let Ok(t) = translator.cast::<ResponsesTranslator>() {
        return Ok(t.try_borrow_mut()?.core.take_writer());
    }
    Err(PyTypeError::new_err("previous must be a translator"))
}

fn fork_writer(translator: &Bound<'_, PyAny>) -> PyResult<ResponseWriter> {
    let writer = if let Ok(t) = translator.cast::<ChatCompletionsTranslator>() {
        t.try_borrow()?.core.fork_writer()
    } else if let Ok(t) = translator.cast::<AnthropicTranslator>() {
        t.try_borrow()?.core.fork_writer()
    } else if let Ok(t) = translator.cast::<ResponsesTranslator>() {
        t.try_borrow()?.core.fork_writer()
    } else {
        return Err(PyTypeError::new_err("previous must be a translator"));
    };
    writer.ok_or_else(|| PyValueError::new_err("previous is not at the start of a turn (its turn has an item)"))
}

translator_class!(ChatCompletionsTranslator, chat_completions::ChatCompletionsTranslator);
translator_class!(AnthropicTranslator, anthropic::AnthropicTranslator);
translator_class!(ResponsesTranslator, responses::ResponsesTranslator);

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<ChatCompletionsTranslator>()?;
    m.add_class::<AnthropicTranslator>()?;
    m.add_class::<ResponsesTranslator>()?;
    m.add_class::<PySecrets>()?;
    m.add("UpstreamError", m.py().get_type::<UpstreamError>())?;
    Ok(())
}
