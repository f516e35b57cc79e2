//! `encode_spans`: an OpenTelemetry SDK span batch (`ReadableSpan`s) as the OTLP/HTTP protobuf body, the bytes the
//! SDK's own `encode_spans(spans).SerializePartialToString()` gives (the same message; the router's exporter,
//! `ferroute.telemetry`, sends it). The wire writing is `ferroute_core::otlp`; here the spans are read.

use pyo3::exceptions::PyTypeError;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyDict, PyFloat, PyInt, PyList, PyMapping, PySequence, PyString, PyTuple, PyType};

use ferroute_core::otlp::{
    any_value, event, export_request, key_value, link, resource, resource_spans, scope, scope_spans, span,
    span_id_bytes, status, trace_id_bytes, Writer, FLAGS_CONTEXT_HAS_IS_REMOTE, FLAGS_CONTEXT_IS_REMOTE, VALUES,
};

/// `spans` (a sequence of the SDK's `ReadableSpan`) as an `ExportTraceServiceRequest`, grouped by resource and
/// instrumentation scope (each object once, in the order first seen). Attribute values as the SDK encodes them:
/// str, bool, int (64-bit), float, bytes, a sequence (an array) or a mapping (a key-value list); another type is a
/// `TypeError`.
#[pyfunction]
fn encode_spans<'py>(py: Python<'py>, spans: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyBytes>> {
    // Grouped: resource -> scope -> spans, by object identity, in first-seen order.
    type Scopes<'py> = Vec<(Bound<'py, PyAny>, Vec<Bound<'py, PyAny>>)>;
    let mut groups: Vec<(Bound<'py, PyAny>, Scopes<'py>)> = Vec::new();
    for item in spans.try_iter()? {
        let s = item?;
        let res = s.getattr(intern!(py, "resource"))?;
        let scope_obj = s.getattr(intern!(py, "instrumentation_scope"))?;
        let index = if let Some(i) = groups.iter().position(|(r, _)| r.is(&res)) {
            i
        } else {
            groups.push((res, Vec::new()));
            groups.len() - 1
        };
        let scopes = &mut groups[index].1;
        match scopes.iter_mut().position(|(sc, _)| sc.is(&scope_obj)) {
            Some(i) => scopes[i].1.push(s),
            None => scopes.push((scope_obj, vec![s])),
        }
    }
    let mut w = Writer::with_capacity(512 + 512 * spans.len().unwrap_or(0));
    let mut seen = Seen::default();
    for (res, scopes) in &groups {
        w.message(export_request::RESOURCE_SPANS, |w| -> PyResult<()> {
            w.message(resource_spans::RESOURCE, |w| -> PyResult<()> {
                attributes(w, resource::ATTRIBUTES, &res.getattr(intern!(py, "attributes"))?)
            })?;
            for (scope_obj, members) in scopes {
                w.message(resource_spans::SCOPE_SPANS, |w| -> PyResult<()> {
                    w.message(scope_spans::SCOPE, |w| -> PyResult<()> {
                        if scope_obj.is_none() {
                            return Ok(());
                        }
                        string_attr(w, scope::NAME, scope_obj, intern!(py, "name"))?;
                        string_attr(w, scope::VERSION, scope_obj, intern!(py, "version"))?;
                        attributes(w, scope::ATTRIBUTES, &scope_obj.getattr(intern!(py, "attributes"))?)?;
                        Ok(())
                    })?;
                    for s in members {
                        w.message(scope_spans::SPANS, |w| write_span(py, w, s, &mut seen))?;
                    }
                    if !scope_obj.is_none() {
                        string_attr(w, scope_spans::SCHEMA_URL, scope_obj, intern!(py, "schema_url"))?;
                    }
                    Ok(())
                })?;
            }
            string_attr(w, resource_spans::SCHEMA_URL, res, intern!(py, "schema_url"))?;
            Ok(())
        })?;
    }
    Ok(PyBytes::new(py, w.as_bytes()))
}

/// What a batch's spans share, read once per object: their kinds', states' and statuses' values (by identity: the
/// SDK's enum members and the router's shared `Status` and `TraceState`), and whether a `SpanContext` reads as the
/// tuple it is built as (checked on each type's first: then its items by index, without each property's call).
#[derive(Default)]
struct Seen<'py> {
    layouts: Vec<(Bound<'py, PyType>, bool)>,
    kinds: Vec<(Bound<'py, PyAny>, u32)>,
    states: Vec<(Bound<'py, PyAny>, Option<String>)>,
    statuses: Vec<(Bound<'py, PyAny>, Option<String>, u32)>,
}

/// A span context's trace id, span id, `is_remote` and trace state.
struct Ids<'py> {
    trace_id: u128,
    span_id: u64,
    remote: bool,
    state: Bound<'py, PyAny>,
}

impl<'py> Seen<'py> {
    fn ids(&mut self, py: Python<'py>, context: &Bound<'py, PyAny>) -> PyResult<Ids<'py>> {
        let by_property = || -> PyResult<Ids<'py>> {
            Ok(Ids {
                trace_id: context.getattr(intern!(py, "trace_id"))?.extract()?,
                span_id: context.getattr(intern!(py, "span_id"))?.extract()?,
                remote: context.getattr(intern!(py, "is_remote"))?.is_truthy()?,
                state: context.getattr(intern!(py, "trace_state"))?,
            })
        };
        let by_index = |tuple: &Bound<'py, PyTuple>| -> PyResult<Ids<'py>> {
            Ok(Ids {
                trace_id: tuple.get_item(0)?.extract()?,
                span_id: tuple.get_item(1)?.extract()?,
                remote: tuple.get_item(2)?.is_truthy()?,
                state: tuple.get_item(4)?,
            })
        };
        let tuple = match context.cast::<PyTuple>() {
            Ok(tuple) if tuple.len() == 6 => tuple,
            _ => return by_property(),
        };
        let kind = context.get_type();
        match self.layouts.iter().find(|(t, _)| t.is(&kind)) {
            Some((_, true)) => by_index(tuple),
            Some((_, false)) => by_property(),
            None => {
                // (The SDK's `SpanContext` is the tuple (trace_id, span_id, is_remote, trace_flags, trace_state,
                // is_valid); a type laid out otherwise reads by its properties. Checked on its first context.)
                let read = by_property()?;
                let same = by_index(tuple).is_ok_and(|indexed| {
                    indexed.trace_id == read.trace_id
                        && indexed.span_id == read.span_id
                        && indexed.remote == read.remote
                        && indexed.state.is(&read.state)
                });
                self.layouts.push((kind, same));
                Ok(read)
            }
        }
    }

    fn kind(&mut self, py: Python<'py>, kind: Bound<'py, PyAny>) -> PyResult<u32> {
        if let Some((_, value)) = self.kinds.iter().find(|(k, _)| k.is(&kind)) {
            return Ok(*value);
        }
        let value: u32 = kind.getattr(intern!(py, "value"))?.extract()?;
        self.kinds.push((kind, value));
        Ok(value)
    }

    /// A W3C `tracestate` as `key=value,…` (None: there is none).
    fn state(&mut self, py: Python<'py>, state: Bound<'py, PyAny>) -> PyResult<Option<String>> {
        if let Some((_, text)) = self.states.iter().find(|(s, _)| s.is(&state)) {
            return Ok(text.clone());
        }
        let text = trace_state(py, &state)?;
        if self.states.len() < SHARED {
            self.states.push((state, text.clone()));
        }
        Ok(text)
    }

    /// A status's description and code.
    fn status(&mut self, py: Python<'py>, status: Bound<'py, PyAny>) -> PyResult<(Option<String>, u32)> {
        if let Some((_, description, code)) = self.statuses.iter().find(|(s, _, _)| s.is(&status)) {
            return Ok((description.clone(), *code));
        }
        let description = status.getattr(intern!(py, "description"))?;
        let description = if description.is_none() {
            None
        } else {
            Some(description.cast::<PyString>()?.to_str()?.to_owned())
        };
        let code: u32 = status
            .getattr(intern!(py, "status_code"))?
            .getattr(intern!(py, "value"))?
            .extract()?;
        if self.statuses.len() < SHARED {
            self.statuses.push((status, description.clone(), code));
        }
        Ok((description, code))
    }
}

/// How many trace states and statuses a batch remembers (the shared ones come first; an error's status, or a
/// remote parent's state, is often an object of its own, read each time past these).
const SHARED: usize = 16;

fn write_span<'py>(py: Python<'py>, w: &mut Writer, s: &Bound<'py, PyAny>, seen: &mut Seen<'py>) -> PyResult<()> {
    let context = s.getattr(intern!(py, "context"))?;
    let ids = seen.ids(py, &context)?;
    w.bytes(span::TRACE_ID, &trace_id_bytes(ids.trace_id));
    w.bytes(span::SPAN_ID, &span_id_bytes(ids.span_id));
    if let Some(text) = seen.state(py, ids.state)? {
        w.string(span::TRACE_STATE, &text);
    }
    let parent = s.getattr(intern!(py, "parent"))?;
    let parent_remote = if parent.is_none() {
        None
    } else {
        let parent_ids = seen.ids(py, &parent)?;
        w.bytes(span::PARENT_SPAN_ID, &span_id_bytes(parent_ids.span_id));
        Some(parent_ids.remote)
    };
    string_attr(w, span::NAME, s, intern!(py, "name"))?;
    // The SDK's SpanKind counts from INTERNAL = 0; OTLP's from UNSPECIFIED = 0, INTERNAL = 1.
    let kind = seen.kind(py, s.getattr(intern!(py, "kind"))?)?;
    w.uint32(span::KIND, kind + 1);
    w.fixed64(
        span::START_TIME_UNIX_NANO,
        optional_u64(&s.getattr(intern!(py, "start_time"))?)?,
    );
    w.fixed64(
        span::END_TIME_UNIX_NANO,
        optional_u64(&s.getattr(intern!(py, "end_time"))?)?,
    );
    attributes(w, span::ATTRIBUTES, &s.getattr(intern!(py, "attributes"))?)?;
    w.uint32(
        span::DROPPED_ATTRIBUTES_COUNT,
        s.getattr(intern!(py, "dropped_attributes"))?.extract()?,
    );
    for e in s.getattr(intern!(py, "events"))?.try_iter()? {
        let e = e?;
        w.message(span::EVENTS, |w| -> PyResult<()> {
            w.fixed64(
                event::TIME_UNIX_NANO,
                optional_u64(&e.getattr(intern!(py, "timestamp"))?)?,
            );
            string_attr(w, event::NAME, &e, intern!(py, "name"))?;
            attributes(w, event::ATTRIBUTES, &e.getattr(intern!(py, "attributes"))?)?;
            w.uint32(
                event::DROPPED_ATTRIBUTES_COUNT,
                e.getattr(intern!(py, "dropped_attributes"))?.extract()?,
            );
            Ok(())
        })?;
    }
    w.uint32(
        span::DROPPED_EVENTS_COUNT,
        s.getattr(intern!(py, "dropped_events"))?.extract()?,
    );
    for l in s.getattr(intern!(py, "links"))?.try_iter()? {
        let l = l?;
        w.message(span::LINKS, |w| -> PyResult<()> {
            let linked = l.getattr(intern!(py, "context"))?;
            w.bytes(
                link::TRACE_ID,
                &trace_id_bytes(linked.getattr(intern!(py, "trace_id"))?.extract()?),
            );
            w.bytes(
                link::SPAN_ID,
                &span_id_bytes(linked.getattr(intern!(py, "span_id"))?.extract()?),
            );
            attributes(w, link::ATTRIBUTES, &l.getattr(intern!(py, "attributes"))?)?;
            w.uint32(
                link::DROPPED_ATTRIBUTES_COUNT,
                l.getattr(intern!(py, "dropped_attributes"))?.extract()?,
            );
            w.fixed32(link::FLAGS, flags(py, &linked)?);
            Ok(())
        })?;
    }
    w.uint32(
        span::DROPPED_LINKS_COUNT,
        s.getattr(intern!(py, "dropped_links"))?.extract()?,
    );
    let state = s.getattr(intern!(py, "status"))?;
    if !state.is_none() {
        let (description, code) = seen.status(py, state)?;
        w.message(span::STATUS, |w| {
            if let Some(description) = &description {
                w.string(status::MESSAGE, description);
            }
            w.uint32(status::CODE, code);
        });
    }
    // (`SpanFlags` as the SDK's encoder writes them: "is_remote is known", and the parent's `is_remote`.)
    let mut span_flags = FLAGS_CONTEXT_HAS_IS_REMOTE;
    if parent_remote == Some(true) {
        span_flags |= FLAGS_CONTEXT_IS_REMOTE;
    }
    w.fixed32(span::FLAGS, span_flags);
    Ok(())
}

/// `SpanFlags` as the SDK's encoder writes them: "is_remote is known", and the context's `is_remote` (None: a root).
fn flags(py: Python<'_>, context: &Bound<'_, PyAny>) -> PyResult<u32> {
    let mut flags = FLAGS_CONTEXT_HAS_IS_REMOTE;
    if !context.is_none() && context.getattr(intern!(py, "is_remote"))?.is_truthy()? {
        flags |= FLAGS_CONTEXT_IS_REMOTE;
    }
    Ok(flags)
}

/// A W3C `tracestate` as `key=value,…` (None when there is none, or it is empty).
fn trace_state(py: Python<'_>, state: &Bound<'_, PyAny>) -> PyResult<Option<String>> {
    if state.is_none() {
        return Ok(None);
    }
    let mut text = String::new();
    for pair in state.call_method0(intern!(py, "items"))?.try_iter()? {
        let pair = pair?;
        let pair = pair.cast::<PyTuple>()?;
        if !text.is_empty() {
            text.push(',');
        }
        text.push_str(pair.get_item(0)?.cast::<PyString>()?.to_str()?);
        text.push('=');
        text.push_str(pair.get_item(1)?.cast::<PyString>()?.to_str()?);
    }
    Ok(if text.is_empty() { None } else { Some(text) })
}

fn optional_u64(value: &Bound<'_, PyAny>) -> PyResult<u64> {
    if value.is_none() {
        Ok(0)
    } else {
        value.extract()
    }
}

/// A string attribute of `obj` (None or absent text: left out).
fn string_attr(w: &mut Writer, field: u32, obj: &Bound<'_, PyAny>, name: &Bound<'_, PyString>) -> PyResult<()> {
    let value = obj.getattr(name)?;
    if !value.is_none() {
        w.string(field, value.cast::<PyString>()?.to_str()?);
    }
    Ok(())
}

/// Each (key, value) of a mapping as a `KeyValue` message in `field` (None: none).
fn attributes(w: &mut Writer, field: u32, mapping: &Bound<'_, PyAny>) -> PyResult<()> {
    if mapping.is_none() {
        return Ok(());
    }
    if let Ok(dict) = mapping.cast::<PyDict>() {
        for (key, value) in dict.iter() {
            key_value(w, field, &key, &value)?;
        }
        return Ok(());
    }
    let py = mapping.py();
    for pair in mapping.call_method0(intern!(py, "items"))?.try_iter()? {
        let pair = pair?;
        let pair = pair.cast::<PyTuple>()?;
        key_value(w, field, &pair.get_item(0)?, &pair.get_item(1)?)?;
    }
    Ok(())
}

fn key_value(w: &mut Writer, field: u32, key: &Bound<'_, PyAny>, value: &Bound<'_, PyAny>) -> PyResult<()> {
    w.message(field, |w| -> PyResult<()> {
        w.string(key_value::KEY, key.cast::<PyString>()?.to_str()?);
        w.message(key_value::VALUE, |w| any(w, value))
    })
}

/// An `AnyValue`'s member, as the SDK's `_encode_value` chooses it.
fn any(w: &mut Writer, value: &Bound<'_, PyAny>) -> PyResult<()> {
    if let Ok(b) = value.cast::<PyBool>() {
        w.any_bool(b.is_true());
    } else if let Ok(s) = value.cast::<PyString>() {
        w.any_string(s.to_str()?);
    } else if let Ok(i) = value.cast::<PyInt>() {
        w.any_int(i.extract()?);
    } else if let Ok(f) = value.cast::<PyFloat>() {
        w.any_double(f.value());
    } else if let Ok(b) = value.cast::<PyBytes>() {
        w.any_bytes(b.as_bytes());
    } else if let Ok(list) = value.cast::<PyList>() {
        w.message(any_value::ARRAY, |w| -> PyResult<()> {
            for item in list.iter() {
                w.message(VALUES, |w| any(w, &item))?;
            }
            Ok(())
        })?;
    } else if let Ok(tuple) = value.cast::<PyTuple>() {
        w.message(any_value::ARRAY, |w| -> PyResult<()> {
            for item in tuple.iter() {
                w.message(VALUES, |w| any(w, &item))?;
            }
            Ok(())
        })?;
    } else if value.cast::<PyMapping>().is_ok() {
        w.message(any_value::KVLIST, |w| attributes(w, VALUES, value))?;
    } else if let Ok(seq) = value.cast::<PySequence>() {
        w.message(any_value::ARRAY, |w| -> PyResult<()> {
            for item in seq.try_iter()? {
                w.message(VALUES, |w| any(w, &item?))?;
            }
            Ok(())
        })?;
    } else {
        return Err(PyTypeError::new_err(format!(
            "an attribute value of type {} cannot be encoded",
            value.get_type().name()?
        )));
    }
    Ok(())
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(encode_spans, m)?)?;
    Ok(())
}
