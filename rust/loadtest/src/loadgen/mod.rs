//! A load generator for Open Responses endpoints: fixed concurrency (closed model: N clients, each
//! sending its next request when the last one ends) or a fixed request rate (open model: requests
//! start on schedule whether or not earlier ones have finished, and latency is measured from the
//! scheduled start, so a server that falls behind cannot hide it). Every streamed body goes
//! through the Rust grammar checker ([`ResponseChecker`]) and a broken stream counts as an error.
//!
//! One thread per in-flight request, blocking sockets: at the concurrencies a router sees on one
//! host (hundreds to a few thousand streams) that costs less CPU than the server under test spends
//! per event, and the generator reports its own CPU so a reader can tell.

mod http;
mod stats;

use std::collections::{BTreeMap, VecDeque};
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use ferroute_core::events::parser::{Checked, ResponseChecker};
use ferroute_core::sse::SseDecoder;
use serde_json::{json, Value};

pub use http::Failure;
use http::{BodySink, Client};
pub use stats::Summary;

use crate::mock_upstream::thread_cpu_ns;

/// How load is offered.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Load {
    /// N clients in a loop (closed model).
    Concurrency(u32),
    /// Requests started at this many per second (open model).
    Rate(f64),
}

/// What to run.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// `http://host:port/path`.
    pub url: String,
    /// The request body sent every time.
    pub body: Vec<u8>,
    /// Extra header lines (`name: value`), e.g. authorization.
    pub headers: Vec<String>,
    /// Expect an SSE stream (true) or a JSON response object.
    pub stream: bool,
    /// Concurrency or rate.
    pub load: Load,
    /// Measured time (after warm-up); `None`: run until `requests` are done.
    pub duration: Option<Duration>,
    /// Measured requests to start; `None`: run for `duration`.
    pub requests: Option<u64>,
    /// Time before measuring starts (requests started in it are not counted).
    pub warmup: Duration,
    /// The longest wait for any byte.
    pub timeout: Duration,
    /// A stream must end with `data: [DONE]` (Open Responses servers send it; OpenAI's API does not).
    pub require_done: bool,
    /// The most requests in flight in rate mode (more are counted as `overload` and not sent).
    pub max_in_flight: u32,
    /// Check every stream's grammar (true); false only counts and times SSE events, for comparing
    /// with servers whose streams are not Open Responses (the report says which).
    pub check_grammar: bool,
}

impl Default for LoadConfig {
    fn default() -> Self {
        Self {
            url: String::new(),
            body: Vec::new(),
            headers: Vec::new(),
            stream: true,
            load: Load::Concurrency(1),
            duration: Some(Duration::from_secs(10)),
            requests: None,
            warmup: Duration::ZERO,
            timeout: Duration::from_secs(30),
            require_done: true,
            max_in_flight: 10_000,
            check_grammar: true,
        }
    }
}

/// `http://host:port/path` → (address, host header, path).
fn parse_url(url: &str) -> Result<(SocketAddr, String, String), String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("{url}: only http:// URLs are supported"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    let path = if path.is_empty() || path == "/" {
        "/v1/responses"
    } else {
        path
    };
    let with_port = if authority.contains(':') {
        authority.to_owned()
    } else {
        format!("{authority}:80")
    };
    let addr = with_port
        .to_socket_addrs()
        .map_err(|e| format!("{url}: {e}"))?
        .next()
        .ok_or_else(|| format!("{url}: no address"))?;
    Ok((addr, authority.to_owned(), path.to_owned()))
}

/// One finished request's measurements.
#[derive(Default)]
struct Sample {
    ttfe_us: Vec<u32>,
    gap_us: Vec<u32>,
    latency_us: Vec<u32>,
    ok: u64,
    events: u64,
    bytes: u64,
    errors: BTreeMap<String, u64>,
    error_examples: BTreeMap<String, String>,
    late_starts: u64,
    overload: u64,
    all_events: u64,
}

impl Sample {
    fn merge(&mut self, other: Sample) {
        self.ttfe_us.extend(other.ttfe_us);
        self.gap_us.extend(other.gap_us);
        self.latency_us.extend(other.latency_us);
        self.ok += other.ok;
        self.events += other.events;
        self.bytes += other.bytes;
        for (k, v) in other.errors {
            *self.errors.entry(k).or_default() += v;
        }
        for (k, v) in other.error_examples {
            self.error_examples.entry(k).or_insert(v);
        }
        self.late_starts += other.late_starts;
        self.overload += other.overload;
        self.all_events += other.all_events;
    }
}

fn micros(d: Duration) -> u32 {
    u32::try_from(d.as_micros()).unwrap_or(u32::MAX)
}

/// Checks a streamed body as it arrives and times its events.
struct StreamSink {
    sse: SseDecoder,
    checker: ResponseChecker,
    start: Instant,
    last_event: Option<Instant>,
    ttfe: Option<Duration>,
    gaps: Vec<u32>,
    done: bool,
    bytes: u64,
    check: bool,
    events: u64,
}

impl BodySink for StreamSink {
    fn data(&mut self, data: &[u8], at: Instant) -> Result<(), Failure> {
        self.bytes += data.len() as u64;
        let Self {
            sse,
            checker,
            start,
            last_event,
            ttfe,
            gaps,
            done,
            check,
            events,
            ..
        } = self;
        let mut failure = None;
        let result = sse.feed(data, |event| {
            if failure.is_some() {
                return;
            }
            let checked = if *check {
                checker.check(event.event, event.data, 0)
            } else if event.data == "[DONE]" {
                Ok(Checked::Done)
            } else {
                Ok(Checked::Event)
            };
            match checked {
                Ok(Checked::Event) => {
                    *events += 1;
                    match last_event {
                        None => *ttfe = Some(at - *start),
                        Some(previous) => gaps.push(micros(at - *previous)),
                    }
                    *last_event = Some(at);
                }
                Ok(Checked::Done) => *done = true,
                Err(error) => failure = Some(Failure::Grammar(error.to_string())),
            }
        });
        if let Some(failure) = failure {
            return Err(failure);
        }
        result.map_err(|e| Failure::Grammar(e.to_string()))
    }
}

/// Collects a JSON body.
struct WholeSink {
    body: Vec<u8>,
    first: Option<Instant>,
}

impl BodySink for WholeSink {
    fn data(&mut self, data: &[u8], at: Instant) -> Result<(), Failure> {
        self.first.get_or_insert(at);
        self.body.extend_from_slice(data);
        Ok(())
    }
}

struct Target {
    addr: SocketAddr,
    host: String,
    path: String,
    headers: String,
}

struct Shared {
    config: LoadConfig,
    target: Target,
    started: Instant,
    measure_from: Instant,
    /// No new request starts after this.
    stop_at: Option<Instant>,
    /// In-flight requests are abandoned after this.
    abort: AtomicBool,
    /// Measured requests handed out (count mode).
    issued: AtomicU64,
    completed: AtomicU64,
    failed: AtomicU64,
    events: AtomicU64,
    in_flight: AtomicU64,
    cpu_ns: AtomicU64,
    samples: Mutex<Sample>,
    /// Rate mode: scheduled start times waiting for a worker.
    queue: Mutex<VecDeque<Instant>>,
    ready: Condvar,
    idle_workers: AtomicU64,
    finished_scheduling: AtomicBool,
}

impl Shared {
    fn run_one(&self, client: &mut Client, scheduled: Instant, sample: &mut Sample) {
        let measured = scheduled >= self.measure_from;
        let actual = Instant::now();
        if measured && actual.saturating_duration_since(scheduled) > Duration::from_millis(1) {
            sample.late_starts += 1;
        }
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        let config = &self.config;
        let abort = || self.abort.load(Ordering::Relaxed);
        let t = &self.target;
        let result = if config.stream {
            let mut sink = StreamSink {
                sse: SseDecoder::new(),
                checker: ResponseChecker::new(),
                start: scheduled,
                last_event: None,
                ttfe: None,
                gaps: Vec::new(),
                done: false,
                bytes: 0,
                check: config.check_grammar,
                events: 0,
            };
            let mut result = client.post(&t.path, &t.headers, &config.body, config.timeout, &abort, &mut sink);
            if result.is_ok() {
                let truncated = sink.sse.finish();
                let grammar = if config.check_grammar {
                    sink.checker.finish(0).err()
                } else {
                    None
                };
                result = if truncated {
                    Err(Failure::Closed)
                } else if let Some(error) = grammar {
                    Err(Failure::Grammar(error.to_string()))
                } else if config.require_done && !sink.done {
                    Err(Failure::NoDone)
                } else {
                    Ok(())
                };
            }
            // Every event read (warm-up included), for the generator's CPU per event.
            sample.all_events += sink.events;
            if measured {
                sample.bytes += sink.bytes;
                if result.is_ok() {
                    sample.events += sink.events;
                    self.events.fetch_add(sink.events, Ordering::Relaxed);
                    if let Some(ttfe) = sink.ttfe {
                        sample.ttfe_us.push(micros(ttfe));
                    }
                    sample.gap_us.extend(sink.gaps);
                }
            }
            result
        } else {
            let mut sink = WholeSink {
                body: Vec::new(),
                first: None,
            };
            let mut result = client.post(&t.path, &t.headers, &config.body, config.timeout, &abort, &mut sink);
            // Unchecked (`--no-check`, another kind of server): any complete 2xx body counts.
            if result.is_ok() && config.check_grammar {
                result = match serde_json::from_slice::<Value>(&sink.body) {
                    Ok(value) if value.get("object").and_then(Value::as_str) == Some("response") => Ok(()),
                    Ok(_) => Err(Failure::Grammar("the body is not a response object".into())),
                    Err(e) => Err(Failure::Grammar(format!("the body is not JSON: {e}"))),
                };
            }
            if measured {
                sample.bytes += sink.body.len() as u64;
                if result.is_ok() {
                    if let Some(first) = sink.first {
                        sample.ttfe_us.push(micros(first.saturating_duration_since(scheduled)));
                    }
                }
            }
            result
        };
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        if !measured {
            return;
        }
        match result {
            Ok(()) => {
                sample.ok += 1;
                sample.latency_us.push(micros(scheduled.elapsed()));
                self.completed.fetch_add(1, Ordering::Relaxed);
            }
            Err(failure) => {
                let key = failure.key();
                if let Failure::Grammar(message) | Failure::Http(message) = &failure {
                    sample
                        .error_examples
                        .entry(key.clone())
                        .or_insert_with(|| message.clone());
                }
                *sample.errors.entry(key).or_default() += 1;
                self.failed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Whether another measured request may start at `at` (and claims it in count mode).
    fn may_start(&self, at: Instant) -> bool {
        if self.abort.load(Ordering::Relaxed) {
            return false;
        }
        if let Some(stop) = self.stop_at {
            if at >= stop {
                return false;
            }
        }
        if at < self.measure_from {
            return true;
        }
        match self.config.requests {
            Some(n) => self.issued.fetch_add(1, Ordering::Relaxed) < n,
            None => true,
        }
    }

    fn client(&self) -> Client {
        Client::new(self.target.addr, self.target.host.clone())
    }

    fn closed_worker(&self) {
        let cpu0 = thread_cpu_ns();
        let mut client = self.client();
        let mut sample = Sample::default();
        loop {
            let now = Instant::now();
            if !self.may_start(now) {
                break;
            }
            self.run_one(&mut client, now, &mut sample);
        }
        self.finish_worker(sample, cpu0);
    }

    fn open_worker(&self, mut job: Option<Instant>) {
        let cpu0 = thread_cpu_ns();
        let mut client = self.client();
        let mut sample = Sample::default();
        loop {
            if let Some(scheduled) = job.take() {
                self.run_one(&mut client, scheduled, &mut sample);
            }
            let mut queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
            self.idle_workers.fetch_add(1, Ordering::SeqCst);
            loop {
                if let Some(next) = queue.pop_front() {
                    job = Some(next);
                    break;
                }
                if self.finished_scheduling.load(Ordering::SeqCst) || self.abort.load(Ordering::Relaxed) {
                    break;
                }
                queue = self
                    .ready
                    .wait_timeout(queue, Duration::from_millis(50))
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
            }
            self.idle_workers.fetch_sub(1, Ordering::SeqCst);
            if job.is_none() {
                break;
            }
        }
        self.finish_worker(sample, cpu0);
    }

    fn finish_worker(&self, sample: Sample, cpu0: Option<u64>) {
        if let (Some(a), Some(b)) = (cpu0, thread_cpu_ns()) {
            self.cpu_ns.fetch_add(b.saturating_sub(a), Ordering::Relaxed);
        }
        self.samples
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .merge(sample);
    }
}

/// Live counters while a run goes on.
#[derive(Debug, Clone, Copy, Default)]
pub struct Progress {
    /// Seconds since the run started (warm-up included).
    pub elapsed_s: f64,
    /// Whether measuring has begun (warm-up over).
    pub measuring: bool,
    /// Measured requests that succeeded.
    pub completed: u64,
    /// Measured requests that failed.
    pub failed: u64,
    /// Events in measured successful streams.
    pub events: u64,
    /// Requests in flight now.
    pub in_flight: u64,
}

/// A run in progress; [`LoadRun::wait`] returns the report.
pub struct LoadRun {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
    scheduler: Option<JoinHandle<Vec<JoinHandle<()>>>>,
}

impl LoadRun {
    /// Starts the clients.
    pub fn start(config: LoadConfig) -> Result<Self, String> {
        let (addr, host, path) = parse_url(&config.url)?;
        if config.duration.is_none() && config.requests.is_none() {
            return Err("give a duration or a request count".into());
        }
        match config.load {
            Load::Concurrency(0) => return Err("concurrency must be at least 1".into()),
            Load::Rate(r) if !(r > 0.0 && r.is_finite()) => return Err("rate must be positive".into()),
            _ => {}
        }
        let headers = config.headers.iter().fold(String::new(), |mut out, h| {
            out.push_str(h);
            out.push_str("\r\n");
            out
        });
        let started = Instant::now();
        let measure_from = started + config.warmup;
        let stop_at = config.duration.map(|d| measure_from + d);
        let load = config.load;
        let shared = Arc::new(Shared {
            config,
            target: Target {
                addr,
                host,
                path,
                headers,
            },
            started,
            measure_from,
            stop_at,
            abort: AtomicBool::new(false),
            issued: AtomicU64::new(0),
            completed: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            events: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            cpu_ns: AtomicU64::new(0),
            samples: Mutex::new(Sample::default()),
            queue: Mutex::new(VecDeque::new()),
            ready: Condvar::new(),
            idle_workers: AtomicU64::new(0),
            finished_scheduling: AtomicBool::new(false),
        });
        let mut threads = Vec::new();
        let mut scheduler = None;
        match load {
            Load::Concurrency(n) => {
                for _ in 0..n {
                    let s = Arc::clone(&shared);
                    threads.push(spawn(move || s.closed_worker()).map_err(|e| e.to_string())?);
                }
            }
            Load::Rate(rate) => {
                let s = Arc::clone(&shared);
                scheduler = Some(
                    thread::Builder::new()
                        .name("loadgen-schedule".into())
                        .spawn(move || schedule(&s, rate))
                        .map_err(|e| e.to_string())?,
                );
            }
        }
        Ok(Self {
            shared,
            threads,
            scheduler,
        })
    }

    /// Counters so far.
    pub fn progress(&self) -> Progress {
        let s = &self.shared;
        Progress {
            elapsed_s: s.started.elapsed().as_secs_f64(),
            measuring: Instant::now() >= s.measure_from,
            completed: s.completed.load(Ordering::Relaxed),
            failed: s.failed.load(Ordering::Relaxed),
            events: s.events.load(Ordering::Relaxed),
            in_flight: s.in_flight.load(Ordering::Relaxed),
        }
    }

    /// True when every client has finished.
    pub fn is_finished(&self) -> bool {
        self.threads.iter().all(JoinHandle::is_finished) && self.scheduler.as_ref().is_none_or(JoinHandle::is_finished)
    }

    /// Abandons the requests in flight (they count as `aborted`).
    pub fn abort(&self) {
        self.shared.abort.store(true, Ordering::SeqCst);
        self.shared.ready.notify_all();
    }

    /// Waits for the clients (in-flight requests get `timeout` past the end, then are aborted)
    /// and returns the report.
    pub fn wait(mut self) -> Report {
        let shared = Arc::clone(&self.shared);
        let hard_deadline = shared.stop_at.map(|stop| stop + shared.config.timeout);
        loop {
            if self.is_finished() {
                break;
            }
            if hard_deadline.is_some_and(|d| Instant::now() >= d) {
                self.abort();
            }
            thread::sleep(Duration::from_millis(5));
        }
        let mut threads = std::mem::take(&mut self.threads);
        if let Some(scheduler) = self.scheduler.take() {
            if let Ok(workers) = scheduler.join() {
                threads.extend(workers);
            }
        }
        for handle in threads {
            let _ = handle.join();
        }
        let end = Instant::now();
        let sample = std::mem::take(&mut *shared.samples.lock().unwrap_or_else(PoisonError::into_inner));
        // Measured time: from the end of warm-up to the end of the last measured request, or to the
        // planned end when the run lasted that long.
        let measured = end.saturating_duration_since(shared.measure_from);
        let wall = end.saturating_duration_since(shared.started);
        Report::build(
            &shared.config,
            sample,
            measured,
            wall,
            shared.cpu_ns.load(Ordering::Relaxed),
        )
    }
}

impl Drop for LoadRun {
    fn drop(&mut self) {
        if !self.threads.is_empty() || self.scheduler.is_some() {
            self.abort();
            for handle in std::mem::take(&mut self.threads) {
                let _ = handle.join();
            }
            if let Some(scheduler) = self.scheduler.take() {
                if let Ok(workers) = scheduler.join() {
                    for handle in workers {
                        let _ = handle.join();
                    }
                }
            }
        }
    }
}

fn spawn(f: impl FnOnce() + Send + 'static) -> std::io::Result<JoinHandle<()>> {
    thread::Builder::new()
        .name("loadgen-client".into())
        .stack_size(256 * 1024)
        .spawn(f)
}

/// The open model's clock: one start time per `1/rate` seconds, handed to an idle worker or to a
/// new one; never skipped because earlier requests are still running.
fn schedule(shared: &Arc<Shared>, rate: f64) -> Vec<JoinHandle<()>> {
    let mut workers = Vec::new();
    let interval = Duration::from_secs_f64(1.0 / rate);
    let mut next = shared.started;
    let mut overload = 0u64;
    loop {
        let now = Instant::now();
        if next > now {
            thread::sleep(next - now);
        }
        if !shared.may_start(next) {
            break;
        }
        let in_flight = shared.in_flight.load(Ordering::Relaxed);
        let queued = shared.queue.lock().unwrap_or_else(PoisonError::into_inner).len() as u64;
        if in_flight + queued >= u64::from(shared.config.max_in_flight) {
            if next >= shared.measure_from {
                overload += 1;
            }
        } else if shared.idle_workers.load(Ordering::SeqCst) > queued {
            shared
                .queue
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push_back(next);
            shared.ready.notify_one();
        } else {
            let s = Arc::clone(shared);
            let job = next;
            match spawn(move || s.open_worker(Some(job))) {
                Ok(handle) => workers.push(handle),
                Err(_) => overload += 1,
            }
        }
        workers.retain(|h: &JoinHandle<()>| !h.is_finished());
        next += interval;
    }
    shared.finished_scheduling.store(true, Ordering::SeqCst);
    shared.ready.notify_all();
    if overload > 0 {
        let mut sample = shared.samples.lock().unwrap_or_else(PoisonError::into_inner);
        sample.overload += overload;
        *sample.errors.entry("overload".into()).or_default() += overload;
    }
    workers
}

/// The results of a run.
#[derive(Debug, Clone)]
pub struct Report {
    /// Everything, as the JSON the CLI writes.
    pub json: Value,
}

impl Report {
    #[allow(clippy::cast_precision_loss)]
    fn build(config: &LoadConfig, sample: Sample, measured: Duration, wall: Duration, cpu_ns: u64) -> Self {
        let seconds = measured.as_secs_f64().max(1e-9);
        let errors: u64 = sample.errors.values().sum();
        let requests = sample.ok + errors;
        let (mode, value) = match config.load {
            Load::Concurrency(n) => ("concurrency", json!(n)),
            Load::Rate(r) => ("rate", json!(r)),
        };
        let cpu_s = cpu_ns as f64 / 1e9;
        let json = json!({
            "url": config.url,
            "stream": config.stream,
            "grammar_checked": config.check_grammar,
            "mode": mode,
            "concurrency": if mode == "concurrency" { value.clone() } else { Value::Null },
            "rate": if mode == "rate" { value } else { Value::Null },
            "duration_s": seconds,
            "warmup_s": config.warmup.as_secs_f64(),
            "requests": requests,
            "ok": sample.ok,
            "errors": errors,
            "errors_by_kind": sample.errors,
            "error_examples": sample.error_examples,
            "requests_per_s": sample.ok as f64 / seconds,
            "events": sample.events,
            "events_per_s": sample.events as f64 / seconds,
            "bytes": sample.bytes,
            "bytes_per_s": sample.bytes as f64 / seconds,
            "ttfe_ms": Summary::of(sample.ttfe_us).json(),
            "gap_ms": Summary::of(sample.gap_us).json(),
            "latency_ms": Summary::of(sample.latency_us).json(),
            "late_starts": sample.late_starts,
            "client_cpu_s": cpu_s,
            // The generator's CPU over the whole run (warm-up included), per event read in it.
            "client_cpu_percent": 100.0 * cpu_s / wall.as_secs_f64().max(1e-9),
            "client_cpu_us_per_event": if sample.all_events > 0 { json!(cpu_s * 1e6 / sample.all_events as f64) } else { Value::Null },
        });
        Self { json }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mock_upstream::{MockConfig, MockServer};

    #[test]
    fn urls() {
        let (addr, host, path) = parse_url("http://127.0.0.1:8080").unwrap();
        assert_eq!(
            (addr.port(), host.as_str(), path.as_str()),
            (8080, "127.0.0.1:8080", "/v1/responses")
        );
        assert_eq!(parse_url("http://127.0.0.1:1/x/y").unwrap().2, "/x/y");
        assert!(parse_url("https://a").is_err());
    }

    fn run(server: &MockServer, load: Load, stream: bool) -> Value {
        let config = LoadConfig {
            url: format!("http://{}/v1/responses", server.local_addr()),
            body: if stream {
                br#"{"stream":true}"#.to_vec()
            } else {
                b"{}".to_vec()
            },
            stream,
            load,
            duration: None,
            requests: Some(40),
            require_done: false,
            timeout: Duration::from_secs(5),
            ..LoadConfig::default()
        };
        LoadRun::start(config).unwrap().wait().json
    }

    #[test]
    fn closed_and_open_runs_against_the_mock() {
        let mut server = MockServer::start("127.0.0.1:0", MockConfig::default()).unwrap();
        let report = run(&server, Load::Concurrency(4), true);
        assert_eq!(report["ok"], 40, "{report}");
        assert_eq!(report["errors"], 0);
        assert_eq!(
            report["events"].as_u64().unwrap(),
            40 * server.events_per_stream(crate::mock_upstream::Dialect::Responses)
        );
        let report = run(&server, Load::Rate(400.0), true);
        assert_eq!(report["ok"], 40, "{report}");
        let report = run(&server, Load::Concurrency(2), false);
        assert_eq!(report["ok"], 40, "{report}");
        server.stop();
    }

    #[test]
    fn injected_failures_are_counted() {
        let config = MockConfig {
            error_rate: 1.0,
            error_kind: crate::mock_upstream::ErrorKind::Drop,
            ..MockConfig::default()
        };
        let mut server = MockServer::start("127.0.0.1:0", config).unwrap();
        let report = run(&server, Load::Concurrency(2), true);
        assert_eq!(report["ok"], 0);
        assert_eq!(report["errors_by_kind"]["closed"], 40, "{report}");
        server.stop();
    }
}
