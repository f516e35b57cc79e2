//! `MockUpstream` and `LoadGenerator`: the load-testing tools' Rust servers and clients, run on
//! their own threads (no GIL held while they work).

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyDict;

use ferroute_loadtest::loadgen::{Load, LoadConfig, LoadRun};
use ferroute_loadtest::mock_upstream::{Dialect, ErrorKind, MockConfig, MockServer};

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn duration_ms(name: &str, ms: f64) -> PyResult<Duration> {
    Duration::try_from_secs_f64(ms / 1000.0)
        .map_err(|_| PyValueError::new_err(format!("{name}: {ms} is not a duration")))
}

/// A mock LLM upstream (Chat Completions, Anthropic Messages, OpenAI Responses) on its own threads.
#[pyclass(frozen, module = "ferroute._core")]
pub(crate) struct MockUpstream {
    server: Mutex<MockServer>,
    host: String,
    port: u16,
}

#[pymethods]
impl MockUpstream {
    #[new]
    #[pyo3(signature = (host = "127.0.0.1", port = 0, *, ttft_ms = 0.0, gap_ms = 0.0, gap_max_ms = None, tokens = 20,
        reasoning_tokens = 0, tool_call = false, error_rate = 0.0, error_kind = "status:503", chunked = true, seed = 0))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        host: &str,
        port: u16,
        ttft_ms: f64,
        gap_ms: f64,
        gap_max_ms: Option<f64>,
        tokens: u32,
        reasoning_tokens: u32,
        tool_call: bool,
        error_rate: f64,
        error_kind: &str,
        chunked: bool,
        seed: u64,
    ) -> PyResult<Self> {
        let config = MockConfig {
            ttft: duration_ms("ttft_ms", ttft_ms)?,
            gap_min: duration_ms("gap_ms", gap_ms)?,
            gap_max: duration_ms("gap_max_ms", gap_max_ms.unwrap_or(gap_ms))?,
            tokens,
            reasoning_tokens,
            tool_call,
            error_rate,
            error_kind: error_kind.parse::<ErrorKind>().map_err(PyValueError::new_err)?,
            chunked,
            seed,
        };
        config.validate().map_err(PyValueError::new_err)?;
        let address = format!("{host}:{port}");
        let server = py.detach(|| MockServer::start(address.as_str(), config))?;
        let port = server.local_addr().port();
        Ok(Self {
            server: Mutex::new(server),
            host: host.to_owned(),
            port,
        })
    }

    /// The address it listens on.
    #[getter]
    fn host(&self) -> &str {
        &self.host
    }

    /// The port it listens on (the one chosen when 0 was asked for).
    #[getter]
    fn port(&self) -> u16 {
        self.port
    }

    /// `http://host:port`.
    #[getter]
    fn url(&self) -> String {
        if self.host.contains(':') {
            format!("http://[{}]:{}", self.host, self.port)
        } else {
            format!("http://{}:{}", self.host, self.port)
        }
    }

    /// Whether `stop()` has been called.
    #[getter]
    fn stopped(&self) -> bool {
        lock(&self.server).is_stopped()
    }

    /// Counters since start (still readable after `stop()`): connections, requests, streams, events,
    /// bytes, errors_injected, cpu_s (the server threads' CPU time), uptime_s.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let server = lock(&self.server);
        let s = server.stats();
        let dict = PyDict::new(py);
        dict.set_item("connections", s.connections)?;
        dict.set_item("requests", s.requests)?;
        dict.set_item("streams", s.streams)?;
        dict.set_item("events", s.events)?;
        dict.set_item("bytes", s.bytes)?;
        dict.set_item("errors_injected", s.errors_injected)?;
        #[allow(clippy::cast_precision_loss)]
        dict.set_item("cpu_s", s.cpu_ns as f64 / 1e9)?;
        dict.set_item("uptime_s", s.uptime_s)?;
        Ok(dict)
    }

    /// SSE events in one complete streaming answer: dialect is "chat_completions", "anthropic" or
    /// "responses".
    fn events_per_stream(&self, dialect: &str) -> PyResult<u64> {
        let dialect = match dialect {
            "chat_completions" => Dialect::ChatCompletions,
            "anthropic" => Dialect::Anthropic,
            "responses" => Dialect::Responses,
            _ => return Err(PyValueError::new_err(format!("unknown dialect {dialect:?}"))),
        };
        let server = lock(&self.server);
        Ok(server.events_per_stream(dialect))
    }

    /// Blocks (without the GIL) until `stop()` is called from another thread, `timeout` seconds pass
    /// (returns False) or a signal handler raises (Ctrl-C: KeyboardInterrupt).
    #[pyo3(signature = (timeout = None))]
    fn wait(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<bool> {
        let deadline = timeout.map(|t| Instant::now() + Duration::from_secs_f64(t.max(0.0)));
        loop {
            if self.stopped() {
                return Ok(true);
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(false);
            }
            py.detach(|| std::thread::sleep(Duration::from_millis(50)));
            py.check_signals()?;
        }
    }

    /// Stops the server: closes every connection (stalled ones too) and joins its threads.
    fn stop(&self, py: Python<'_>) {
        let mut guard = lock(&self.server);
        let server: &mut MockServer = &mut guard;
        if !server.is_stopped() {
            py.detach(|| server.stop());
        }
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __exit__(&self, py: Python<'_>, _a: &Bound<'_, PyAny>, _b: &Bound<'_, PyAny>, _c: &Bound<'_, PyAny>) {
        self.stop(py);
    }

    fn __repr__(&self) -> String {
        format!("MockUpstream(url={:?})", self.url())
    }
}

/// A load run against an Open Responses endpoint, on its own threads.
#[pyclass(frozen, module = "ferroute._core")]
pub(crate) struct LoadGenerator {
    run: Mutex<Option<LoadRun>>,
}

#[pymethods]
impl LoadGenerator {
    #[new]
    #[pyo3(signature = (url, body, *, stream = true, concurrency = None, rate = None, duration = None, requests = None,
        warmup = 0.0, timeout = 30.0, require_done = true, headers = Vec::new(), max_in_flight = 10_000, check_grammar = true))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        url: String,
        body: Vec<u8>,
        stream: bool,
        concurrency: Option<u32>,
        rate: Option<f64>,
        duration: Option<f64>,
        requests: Option<u64>,
        warmup: f64,
        timeout: f64,
        require_done: bool,
        headers: Vec<String>,
        max_in_flight: u32,
        check_grammar: bool,
    ) -> PyResult<Self> {
        let load = match (concurrency, rate) {
            (Some(n), None) => Load::Concurrency(n),
            (None, Some(r)) => Load::Rate(r),
            _ => return Err(PyValueError::new_err("give exactly one of concurrency and rate")),
        };
        let seconds = |name: &str, s: f64| {
            Duration::try_from_secs_f64(s).map_err(|_| PyValueError::new_err(format!("{name}: {s} is not a duration")))
        };
        if headers
            .iter()
            .any(|h| h.contains('\r') || h.contains('\n') || !h.contains(':'))
        {
            return Err(PyValueError::new_err(
                "headers are 'name: value' lines without line breaks",
            ));
        }
        let config = LoadConfig {
            url,
            body,
            headers,
            stream,
            load,
            duration: duration.map(|d| seconds("duration", d)).transpose()?,
            requests,
            warmup: seconds("warmup", warmup)?,
            timeout: seconds("timeout", timeout)?,
            require_done,
            max_in_flight,
            check_grammar,
        };
        let run = py.detach(|| LoadRun::start(config)).map_err(PyValueError::new_err)?;
        Ok(Self {
            run: Mutex::new(Some(run)),
        })
    }

    /// Live counters: elapsed_s, measuring, completed, failed, events, in_flight.
    fn progress<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let guard = lock(&self.run);
        let run = guard
            .as_ref()
            .ok_or_else(|| PyRuntimeError::new_err("the run has been collected"))?;
        let p = run.progress();
        let dict = PyDict::new(py);
        dict.set_item("elapsed_s", p.elapsed_s)?;
        dict.set_item("measuring", p.measuring)?;
        dict.set_item("completed", p.completed)?;
        dict.set_item("failed", p.failed)?;
        dict.set_item("events", p.events)?;
        dict.set_item("in_flight", p.in_flight)?;
        Ok(dict)
    }

    /// True once every client has finished.
    #[getter]
    fn finished(&self) -> bool {
        lock(&self.run).as_ref().is_none_or(LoadRun::is_finished)
    }

    /// Abandons the requests in flight (counted as `aborted`); `result()` then returns soon.
    fn abort(&self) {
        if let Some(run) = lock(&self.run).as_ref() {
            run.abort();
        }
    }

    /// Waits for the run (without the GIL) and returns the report as JSON text. Once only.
    fn result(&self, py: Python<'_>) -> PyResult<String> {
        let run = lock(&self.run)
            .take()
            .ok_or_else(|| PyRuntimeError::new_err("the result has already been taken"))?;
        Ok(py.detach(move || run.wait().json.to_string()))
    }
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<MockUpstream>()?;
    m.add_class::<LoadGenerator>()?;
    Ok(())
}
