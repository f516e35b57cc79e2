//! The mock's HTTP/1.1 server.
//!
//! One thread accepts and one thread per connection reads requests and writes heads and untimed
//! answers. Paced streams (a time to first token or a gap between tokens) are handed to a pacer: a
//! few threads (one per core the process may run on, at most [`MAX_PACERS`]) that each own the
//! timing of many streams. A pacer keeps its streams in a heap by next deadline, sleeps until the
//! earliest (at most one pass per [`TICK`]), and on waking writes every group that is due, on
//! non-blocking sockets: a stream that fell behind gets its due groups in one write, and one
//! whose reader does not keep up keeps its unsent bytes and is retried later without holding up
//! the others. The connection thread blocks until the pacer reports how the stream ended, then
//! serves the next request.
//!
//! Why (`bench/mock_upstream_capacity.py`, 100 tokens 2 ms apart, the mock on one core of a 2-core
//! VM, medians): a thread per paced stream paid a timed sleep, a futex wake-up and a context switch
//! per event on top of the write, 14 µs of CPU per event at 64 streams, and one core saturated at
//! ~50,000 events/s (256 streams got 4.6 ms gaps). The pacer costs 10 µs per event at 64 streams,
//! 7 µs at 256 (on time: 131,000 events/s) and 2.2 µs at 1,024, where it saturates at ~450,000
//! events/s by writing several due groups at once. What is left is the kernel: ~85% of the
//! pacer's CPU is inside the write (the loopback TCP path and waking the reader), one write per
//! event while on time.

use std::cmp::Ordering as CmpOrdering;
use std::collections::BinaryHeap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use serde::Deserialize;

use super::payload::{self, Stream};
use super::{thread_cpu_ns, Dialect, ErrorKind, MockConfig, Rng};

const MAX_HEAD: usize = 64 * 1024;
const MAX_BODY: usize = 16 * 1024 * 1024;
/// How often an idle or sleeping connection thread looks at the stop flag.
const POLL: Duration = Duration::from_millis(50);
/// Pacer threads at most (fewer where the process may run on fewer cores).
const MAX_PACERS: usize = 4;
/// A pacer makes a pass at most every `TICK` and sends in it what falls due up to `EARLY` after
/// now: a write goes out at most ~`EARLY` before or after its deadline (plus the kernel's timer
/// slack, 50 µs by default, and scheduling), and the writes of many streams go out together, so
/// that a reader serving many streams on one thread is woken once for several. No deadline moves:
/// each follows the previous one by exactly the drawn gap, so the mean gap stays the configured one.
const TICK: Duration = Duration::from_micros(100);
/// See `TICK`.
const EARLY: Duration = Duration::from_micros(50);
/// How long a pacer waits before writing again to a socket that would block (a slow reader).
const RETRY: Duration = Duration::from_millis(1);
/// How often a pacer adds its CPU time to the counters.
const ACCOUNT: Duration = Duration::from_millis(100);
/// A stream that fell behind gets its due groups in writes of about this many bytes.
const MAX_WRITE: usize = 64 * 1024;
/// The end of a chunked body.
const TERMINATOR: &[u8] = b"0\r\n\r\n";

/// What the server has done since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct MockStats {
    /// Connections accepted.
    pub connections: u64,
    /// Requests answered (any status).
    pub requests: u64,
    /// Streaming answers sent to the end.
    pub streams: u64,
    /// SSE events sent in completed streams.
    pub events: u64,
    /// Response bytes written (heads included).
    pub bytes: u64,
    /// Requests that got an injected failure.
    pub errors_injected: u64,
    /// CPU time of the server's threads, in nanoseconds (0 where unmeasurable).
    pub cpu_ns: u64,
    /// Seconds since the server started.
    pub uptime_s: f64,
}

struct Prebuilt {
    stream: Stream,
    /// Head, every group and the end, for answers with no timing and no failure: one write.
    whole: Vec<u8>,
}

struct Payloads {
    chat: Prebuilt,
    chat_usage: Prebuilt,
    anthropic: Prebuilt,
    responses: Prebuilt,
    chat_body: Vec<u8>,
    anthropic_body: Vec<u8>,
    responses_body: Vec<u8>,
}

/// Which prebuilt streaming answer a request gets.
#[derive(Debug, Clone, Copy)]
enum Answer {
    Chat,
    ChatUsage,
    Anthropic,
    Responses,
}

impl Payloads {
    fn prebuilt(&self, answer: Answer) -> &Prebuilt {
        match answer {
            Answer::Chat => &self.chat,
            Answer::ChatUsage => &self.chat_usage,
            Answer::Anthropic => &self.anthropic,
            Answer::Responses => &self.responses,
        }
    }

    /// The groups a stream writes: chunk-framed or raw.
    fn groups(&self, answer: Answer, chunked: bool) -> &[Vec<u8>] {
        let stream = &self.prebuilt(answer).stream;
        if chunked {
            &stream.groups
        } else {
            &stream.raw_groups
        }
    }
}

#[derive(Default)]
struct Counters {
    connections: AtomicU64,
    requests: AtomicU64,
    streams: AtomicU64,
    events: AtomicU64,
    bytes: AtomicU64,
    errors_injected: AtomicU64,
    cpu_ns: AtomicU64,
}

struct Shared {
    config: MockConfig,
    payloads: Payloads,
    stop: AtomicBool,
    counters: Counters,
    seed: AtomicU64,
    started: Instant,
    threads: Mutex<Vec<JoinHandle<()>>>,
    pacers: Vec<Pacer>,
    next_pacer: AtomicUsize,
}

/// A running mock upstream; stopped (threads joined) by [`MockServer::stop`] or on drop.
pub struct MockServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
    pacer_threads: Vec<JoinHandle<()>>,
}

fn stream_head(chunked: bool) -> &'static [u8] {
    if chunked {
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\ntransfer-encoding: chunked\r\n\r\n"
    } else {
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\nconnection: close\r\n\r\n"
    }
}

fn prebuild(stream: Stream, chunked: bool) -> Prebuilt {
    let mut whole = stream_head(chunked).to_vec();
    let groups = if chunked { &stream.groups } else { &stream.raw_groups };
    for group in groups {
        whole.extend_from_slice(group);
    }
    if chunked {
        whole.extend_from_slice(b"0\r\n\r\n");
    }
    Prebuilt { stream, whole }
}

impl MockServer {
    /// Binds `addr` (port 0: any free port) and starts serving.
    pub fn start(addr: impl ToSocketAddrs, config: MockConfig) -> io::Result<Self> {
        config
            .validate()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let listener = TcpListener::bind(addr)?;
        let addr = listener.local_addr()?;
        let chunked = config.chunked;
        let payloads = Payloads {
            chat: prebuild(payload::chat_stream(&config, false), chunked),
            chat_usage: prebuild(payload::chat_stream(&config, true), chunked),
            anthropic: prebuild(payload::anthropic_stream(&config), chunked),
            responses: prebuild(payload::responses_stream(&config), chunked),
            chat_body: payload::chat_body(&config),
            anthropic_body: payload::anthropic_body(&config),
            responses_body: payload::responses_body(&config),
        };
        let mut seed = config.seed;
        if seed == 0 {
            let mut bytes = [0u8; 8];
            getrandom::fill(&mut bytes).map_err(|e| io::Error::other(e.to_string()))?;
            seed = u64::from_le_bytes(bytes) | 1;
        }
        let shared = Arc::new(Shared {
            config,
            payloads,
            stop: AtomicBool::new(false),
            counters: Counters::default(),
            seed: AtomicU64::new(seed),
            started: Instant::now(),
            threads: Mutex::new(Vec::new()),
            pacers: (0..pacer_count()).map(|_| Pacer::default()).collect(),
            next_pacer: AtomicUsize::new(0),
        });
        let mut server = Self {
            addr,
            shared: Arc::clone(&shared),
            acceptor: None,
            pacer_threads: Vec::new(),
        };
        // On an error `server` is dropped, which stops the threads started so far.
        for index in 0..shared.pacers.len() {
            let pacer_shared = Arc::clone(&shared);
            server.pacer_threads.push(
                thread::Builder::new()
                    .name("mock-upstream-pacer".into())
                    .spawn(move || pacer_loop(&pacer_shared, index))?,
            );
        }
        let accept_shared = Arc::clone(&shared);
        server.acceptor = Some(
            thread::Builder::new()
                .name("mock-upstream-accept".into())
                .spawn(move || accept_loop(&listener, &accept_shared))?,
        );
        Ok(server)
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Counters so far.
    pub fn stats(&self) -> MockStats {
        let c = &self.shared.counters;
        MockStats {
            connections: c.connections.load(Ordering::Relaxed),
            requests: c.requests.load(Ordering::Relaxed),
            streams: c.streams.load(Ordering::Relaxed),
            events: c.events.load(Ordering::Relaxed),
            bytes: c.bytes.load(Ordering::Relaxed),
            errors_injected: c.errors_injected.load(Ordering::Relaxed),
            cpu_ns: c.cpu_ns.load(Ordering::Relaxed),
            uptime_s: self.shared.started.elapsed().as_secs_f64(),
        }
    }

    /// SSE events in one complete streaming answer of `dialect`.
    pub fn events_per_stream(&self, dialect: Dialect) -> u64 {
        let p = &self.shared.payloads;
        match dialect {
            Dialect::ChatCompletions => p.chat_usage.stream.events,
            Dialect::Anthropic => p.anthropic.stream.events,
            Dialect::Responses => p.responses.stream.events,
        }
    }

    /// Whether [`Self::stop`] has been called.
    pub fn is_stopped(&self) -> bool {
        self.shared.stop.load(Ordering::SeqCst)
    }

    /// Stops accepting, ends every connection (stalled ones included) and joins the threads.
    pub fn stop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(acceptor) = self.acceptor.take() {
            // Wake the blocking accept.
            let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
            let _ = acceptor.join();
        }
        for pacer in &self.shared.pacers {
            // Under the lock: a pacer looks at the stop flag under it before it sleeps.
            let _inbox = lock(&pacer.inbox);
            pacer.wake.notify_all();
        }
        // The pacers end their streams, which frees the connection threads waiting on them.
        for handle in self.pacer_threads.drain(..) {
            let _ = handle.join();
        }
        let threads = std::mem::take(&mut *lock(&self.shared.threads));
        for handle in threads {
            let _ = handle.join();
        }
    }
}

impl Drop for MockServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn accept_loop(listener: &TcpListener, shared: &Arc<Shared>) {
    for conn in listener.incoming() {
        if shared.stop.load(Ordering::SeqCst) {
            break;
        }
        let Ok(conn) = conn else {
            // EMFILE and friends: back off instead of spinning.
            thread::sleep(Duration::from_millis(10));
            continue;
        };
        shared.counters.connections.fetch_add(1, Ordering::Relaxed);
        let conn_shared = Arc::clone(shared);
        let seed = shared.seed.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed);
        let spawned = thread::Builder::new()
            .name("mock-upstream-conn".into())
            .stack_size(256 * 1024)
            .spawn(move || {
                let mut connection = Connection {
                    shared: &conn_shared,
                    conn,
                    rng: Rng::new(seed),
                    cpu_mark: thread_cpu_ns().unwrap_or(0),
                    scratch: vec![0; 16 * 1024].into_boxed_slice(),
                };
                connection.serve();
                connection.account_cpu();
            });
        if let Ok(handle) = spawned {
            let mut threads = lock(&shared.threads);
            threads.retain(|h| !h.is_finished());
            threads.push(handle);
        }
    }
}

#[derive(Deserialize)]
struct RequestBody {
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    stream_options: Option<StreamOptions>,
}

#[derive(Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: Option<bool>,
}

struct Request {
    method: String,
    path: String,
    close: bool,
    body: Vec<u8>,
}

enum Outcome {
    KeepAlive,
    Close,
}

struct Connection<'a> {
    shared: &'a Shared,
    conn: TcpStream,
    rng: Rng,
    cpu_mark: u64,
    /// Where each socket read lands (zeroed once per connection, not once per read).
    scratch: Box<[u8]>,
}

impl Connection<'_> {
    fn stopping(&self) -> bool {
        self.shared.stop.load(Ordering::Relaxed)
    }

    fn account_cpu(&mut self) {
        if let Some(now) = thread_cpu_ns() {
            self.shared
                .counters
                .cpu_ns
                .fetch_add(now.saturating_sub(self.cpu_mark), Ordering::Relaxed);
            self.cpu_mark = now;
        }
    }

    fn serve(&mut self) {
        let _ = self.conn.set_nodelay(true);
        let _ = self.conn.set_read_timeout(Some(POLL));
        let mut buf: Vec<u8> = Vec::with_capacity(8192);
        loop {
            let request = match self.read_request(&mut buf) {
                Ok(Some(request)) => request,
                Ok(None) => return,
                Err(status) => {
                    let _ = self.write_simple(status, "text/plain", b"bad request\n", true);
                    return;
                }
            };
            let outcome = self.answer(&request);
            self.shared.counters.requests.fetch_add(1, Ordering::Relaxed);
            self.account_cpu();
            match outcome {
                Ok(Outcome::KeepAlive) if !request.close => {}
                _ => {
                    let _ = self.conn.shutdown(Shutdown::Both);
                    return;
                }
            }
        }
    }

    /// Reads one request; `Ok(None)` when the client closed or the server is stopping.
    fn read_request(&mut self, buf: &mut Vec<u8>) -> Result<Option<Request>, u16> {
        let head_end = loop {
            if let Some(pos) = memchr::memmem::find(buf, b"\r\n\r\n") {
                break pos + 4;
            }
            if buf.len() > MAX_HEAD {
                return Err(431);
            }
            if !self.fill(buf)? {
                return Ok(None);
            }
        };
        let head = std::str::from_utf8(&buf[..head_end]).map_err(|_| 400u16)?;
        let mut lines = head.split("\r\n");
        let mut first = lines.next().unwrap_or_default().split(' ');
        let method = first.next().unwrap_or_default().to_owned();
        let path = first.next().unwrap_or_default().to_owned();
        let version = first.next().unwrap_or_default();
        let mut close = version == "HTTP/1.0";
        let mut length = 0usize;
        for line in lines {
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                length = value.parse().map_err(|_| 400u16)?;
            } else if name.eq_ignore_ascii_case("connection") {
                close = value.eq_ignore_ascii_case("close");
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                return Err(501);
            }
        }
        if length > MAX_BODY {
            return Err(413);
        }
        while buf.len() < head_end + length {
            if !self.fill(buf)? {
                return Ok(None);
            }
        }
        let body = buf[head_end..head_end + length].to_vec();
        buf.drain(..head_end + length);
        Ok(Some(Request {
            method,
            path,
            close,
            body,
        }))
    }

    /// Reads more bytes; false at end of stream or on stop.
    fn fill(&mut self, buf: &mut Vec<u8>) -> Result<bool, u16> {
        loop {
            if self.stopping() {
                return Ok(false);
            }
            match self.conn.read(&mut self.scratch) {
                Ok(0) => return Ok(false),
                Ok(n) => {
                    buf.extend_from_slice(&self.scratch[..n]);
                    return Ok(true);
                }
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Ok(false),
            }
        }
    }

    fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.conn.write_all(bytes)?;
        self.shared
            .counters
            .bytes
            .fetch_add(bytes.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    fn write_simple(&mut self, status: u16, content_type: &str, body: &[u8], close: bool) -> io::Result<()> {
        let reason = match status {
            200 => "OK",
            400 => "Bad Request",
            404 => "Not Found",
            413 => "Payload Too Large",
            429 => "Too Many Requests",
            431 => "Request Header Fields Too Large",
            500 => "Internal Server Error",
            501 => "Not Implemented",
            502 => "Bad Gateway",
            503 => "Service Unavailable",
            504 => "Gateway Timeout",
            529 => "Overloaded",
            _ => "Error",
        };
        let connection = if close { "connection: close\r\n" } else { "" };
        let mut out = format!(
            "HTTP/1.1 {status} {reason}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\n{connection}\r\n",
            body.len()
        )
        .into_bytes();
        out.extend_from_slice(body);
        self.write(&out)
    }

    /// Sleeps `d`, waking to look at the stop flag; false when stopping.
    fn pause(&self, d: Duration) -> bool {
        let deadline = Instant::now() + d;
        loop {
            if self.stopping() {
                return false;
            }
            let now = Instant::now();
            if now >= deadline {
                return true;
            }
            thread::sleep((deadline - now).min(POLL));
        }
    }

    fn injected(&mut self) -> Option<ErrorKind> {
        let config = &self.shared.config;
        if config.error_rate > 0.0 && self.rng.next_f64() < config.error_rate {
            self.shared.counters.errors_injected.fetch_add(1, Ordering::Relaxed);
            Some(config.error_kind)
        } else {
            None
        }
    }

    fn answer(&mut self, request: &Request) -> io::Result<Outcome> {
        let dialect = if request.path.ends_with("/chat/completions") {
            Dialect::ChatCompletions
        } else if request.path.ends_with("/messages") {
            Dialect::Anthropic
        } else if request.path.ends_with("/responses") {
            Dialect::Responses
        } else if request.method == "GET" && request.path == "/healthz" {
            self.write_simple(200, "text/plain", b"ok\n", false)?;
            return Ok(Outcome::KeepAlive);
        } else {
            self.write_simple(
                404,
                "application/json",
                b"{\"error\":{\"message\":\"not found\"}}",
                false,
            )?;
            return Ok(Outcome::KeepAlive);
        };
        if request.method != "POST" {
            self.write_simple(
                404,
                "application/json",
                b"{\"error\":{\"message\":\"not found\"}}",
                false,
            )?;
            return Ok(Outcome::KeepAlive);
        }
        let Ok(body) = serde_json::from_slice::<RequestBody>(&request.body) else {
            let message = b"{\"error\":{\"message\":\"the request body is not a JSON object\",\"type\":\"invalid_request_error\"}}";
            self.write_simple(400, "application/json", message, false)?;
            return Ok(Outcome::KeepAlive);
        };
        let injected = self.injected();
        if let Some(ErrorKind::Status(status)) = injected {
            let body = payload::error_body(dialect, status);
            self.write_simple(status, "application/json", &body, false)?;
            return Ok(Outcome::KeepAlive);
        }
        if body.stream.unwrap_or(false) {
            let include_usage = body.stream_options.and_then(|o| o.include_usage).unwrap_or(false);
            self.stream(dialect, include_usage, injected)
        } else {
            self.whole(dialect, injected)
        }
    }

    fn stream(&mut self, dialect: Dialect, include_usage: bool, injected: Option<ErrorKind>) -> io::Result<Outcome> {
        let shared = self.shared;
        let answer = match dialect {
            Dialect::ChatCompletions if include_usage => Answer::ChatUsage,
            Dialect::ChatCompletions => Answer::Chat,
            Dialect::Anthropic => Answer::Anthropic,
            Dialect::Responses => Answer::Responses,
        };
        let prebuilt = shared.payloads.prebuilt(answer);
        let config = &shared.config;
        let chunked = config.chunked;
        let untimed = config.ttft.is_zero() && config.gap_max.is_zero();
        if untimed && injected.is_none() {
            self.write(&prebuilt.whole)?;
        } else {
            let start = Instant::now();
            let groups = shared.payloads.groups(answer, chunked);
            let cut = injected.map(|_| groups.len() / 2);
            let end = cut.unwrap_or(groups.len() + usize::from(chunked));
            let mut rng = Rng::new(self.rng.next_u64());
            // With no time to first token the first group goes out with the head: a write fewer.
            let first = usize::from(config.ttft.is_zero() && end > 0);
            if first == 1 {
                let mut out = Vec::with_capacity(stream_head(chunked).len() + groups[0].len());
                out.extend_from_slice(stream_head(chunked));
                out.extend_from_slice(&groups[0]);
                self.write(&out)?;
            } else {
                self.write(stream_head(chunked))?;
            }
            let ended = if first == end {
                // Nothing to pace: at most the time to first token to wait.
                match (self.pause(config.ttft), cut) {
                    (false, _) => Paced::Failed,
                    (true, Some(_)) => Paced::Cut,
                    (true, None) => Paced::Complete,
                }
            } else {
                let next = if first == 1 && groups.len() > 1 {
                    start + draw_gap(config, &mut rng)
                } else {
                    start + config.ttft
                };
                let job = Job {
                    conn: self.conn.try_clone()?,
                    answer,
                    chunked,
                    end,
                    cut: cut.is_some(),
                    due: first,
                    sent: first,
                    offset: 0,
                    next,
                    rng,
                    done: None,
                };
                self.paced(job)?
            };
            match ended {
                Paced::Complete => {}
                Paced::Cut => {
                    if injected == Some(ErrorKind::Stall) {
                        self.stall();
                    }
                    return Ok(Outcome::Close);
                }
                Paced::Failed => return Ok(Outcome::Close),
            }
        }
        shared.counters.streams.fetch_add(1, Ordering::Relaxed);
        shared
            .counters
            .events
            .fetch_add(prebuilt.stream.events, Ordering::Relaxed);
        Ok(if chunked { Outcome::KeepAlive } else { Outcome::Close })
    }

    /// Hands a stream to a pacer and waits for its end.
    fn paced(&mut self, mut job: Job) -> io::Result<Paced> {
        job.conn.set_nonblocking(true)?;
        let (done, ended) = mpsc::sync_channel(1);
        job.done = Some(done);
        let shared = self.shared;
        let index = shared.next_pacer.fetch_add(1, Ordering::Relaxed) % shared.pacers.len();
        let ended = if shared.pacers[index].submit(job) {
            // A pacer that ends without a word (stopping) drops the sender.
            ended.recv().unwrap_or(Paced::Failed)
        } else {
            Paced::Failed
        };
        // The clone shares the socket's file status flags: blocking again for this thread.
        self.conn.set_nonblocking(false)?;
        Ok(ended)
    }

    /// Holds the connection open, sending nothing, until the client leaves or the server stops.
    fn stall(&mut self) {
        let _ = self.conn.set_read_timeout(Some(POLL));
        let mut sink = [0u8; 1024];
        while !self.stopping() {
            match self.conn.read(&mut sink) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {}
                Err(_) => break,
            }
        }
    }

    fn whole(&mut self, dialect: Dialect, injected: Option<ErrorKind>) -> io::Result<Outcome> {
        let shared = self.shared;
        let body = match dialect {
            Dialect::ChatCompletions => &shared.payloads.chat_body,
            Dialect::Anthropic => &shared.payloads.anthropic_body,
            Dialect::Responses => &shared.payloads.responses_body,
        };
        // A whole answer takes as long as generating it token by token.
        let config = &shared.config;
        let tokens = u32::try_from(shared.payloads.chat.stream.groups.len()).unwrap_or(u32::MAX);
        let mean_gap = (config.gap_min + config.gap_max) / 2;
        if !self.pause(config.ttft + mean_gap * tokens.saturating_sub(1)) {
            return Ok(Outcome::Close);
        }
        let head = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
            body.len()
        );
        match injected {
            Some(ErrorKind::Drop) => {
                self.write(head.as_bytes())?;
                self.write(&body[..body.len() / 2])?;
                Ok(Outcome::Close)
            }
            Some(ErrorKind::Stall) => {
                self.write(head.as_bytes())?;
                self.stall();
                Ok(Outcome::Close)
            }
            _ => {
                let mut out = head.into_bytes();
                out.extend_from_slice(body);
                self.write(&out)?;
                Ok(Outcome::KeepAlive)
            }
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn pacer_count() -> usize {
    thread::available_parallelism()
        .map_or(1, NonZeroUsize::get)
        .min(MAX_PACERS)
}

/// A gap between tokens, drawn from the configured range.
fn draw_gap(config: &MockConfig, rng: &mut Rng) -> Duration {
    if config.gap_max == config.gap_min {
        return config.gap_min;
    }
    let span = config.gap_max.saturating_sub(config.gap_min).as_secs_f64();
    config.gap_min + Duration::from_secs_f64(span * rng.next_f64())
}

/// How a paced stream ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Paced {
    /// Every group and the end were written.
    Complete,
    /// The groups before the injected failure's cut were written.
    Cut,
    /// A write failed, or the server is stopping.
    Failed,
}

/// A paced stream: pieces `0..end` (the groups, then the chunked terminator) fall due one after
/// another and are written in order.
struct Job {
    /// A clone of the connection's socket, non-blocking.
    conn: TcpStream,
    answer: Answer,
    chunked: bool,
    /// Pieces to write: all of them, or up to the injected failure's cut.
    end: usize,
    /// Whether `end` is a cut.
    cut: bool,
    /// Pieces due so far.
    due: usize,
    /// Pieces written so far, and bytes of the next one.
    sent: usize,
    offset: usize,
    /// When piece `due` falls due.
    next: Instant,
    rng: Rng,
    /// Where to report the end (taken when reported).
    done: Option<mpsc::SyncSender<Paced>>,
}

/// What a pacer does with a stream after a pass.
enum Next {
    /// Look at it again then.
    At(Instant),
    /// It ended.
    Done(Paced),
}

impl Job {
    /// Marks the pieces due by `horizon` and writes what is due and unsent (several at once through
    /// `scratch`); `bytes` counts what was written.
    fn advance(
        &mut self,
        shared: &Shared,
        (now, horizon): (Instant, Instant),
        scratch: &mut Vec<u8>,
        bytes: &mut u64,
    ) -> Next {
        let groups = shared.payloads.groups(self.answer, self.chunked);
        while self.due < self.end && self.next <= horizon {
            self.due += 1;
            // The terminator is due with the last group.
            if self.due < groups.len() {
                self.next += draw_gap(&shared.config, &mut self.rng);
            }
        }
        let piece = |i: usize| -> &[u8] {
            if i < groups.len() {
                &groups[i]
            } else {
                TERMINATOR
            }
        };
        while self.sent < self.due {
            let mut out = &piece(self.sent)[self.offset..];
            if self.sent + 1 < self.due {
                // Several due: one write of their copy. (`writev` would save the copy, but std's
                // sends with MSG_NOSIGNAL and its `writev` cannot: a closed peer would raise SIGPIPE
                // in a host process that does not ignore it.)
                scratch.clear();
                scratch.extend_from_slice(out);
                for i in self.sent + 1..self.due {
                    if scratch.len() >= MAX_WRITE {
                        break;
                    }
                    scratch.extend_from_slice(piece(i));
                }
                out = &scratch[..];
            }
            match (&self.conn).write(out) {
                Ok(0) => return Next::Done(Paced::Failed),
                Ok(mut n) => {
                    *bytes += n as u64;
                    while n > 0 {
                        let left = piece(self.sent).len() - self.offset;
                        if n < left {
                            self.offset += n;
                            break;
                        }
                        n -= left;
                        self.sent += 1;
                        self.offset = 0;
                    }
                }
                // A reader that does not keep up: keep the rest for later.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Next::At(now + RETRY),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Next::Done(Paced::Failed),
            }
        }
        if self.sent == self.end {
            Next::Done(if self.cut { Paced::Cut } else { Paced::Complete })
        } else {
            Next::At(self.next)
        }
    }

    fn report(&mut self, ended: Paced) {
        if let Some(done) = self.done.take() {
            let _ = done.send(ended);
        }
    }
}

/// A stream in a pacer's heap, first by when to look at it next (earliest on top).
struct Entry {
    at: Instant,
    seq: u64,
    job: Box<Job>,
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}

impl Eq for Entry {}

impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}

impl Ord for Entry {
    fn cmp(&self, other: &Self) -> CmpOrdering {
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

#[derive(Default)]
struct Inbox {
    /// Streams handed over since the pacer last looked.
    jobs: Vec<Job>,
    /// The pacer sleeps (until `until`; `None`: until woken): a new stream due earlier wakes it.
    asleep: bool,
    until: Option<Instant>,
    /// The pacer has ended: it takes no more streams.
    closed: bool,
}

/// Where connection threads hand streams to one pacer thread.
#[derive(Default)]
struct Pacer {
    inbox: Mutex<Inbox>,
    wake: Condvar,
}

impl Pacer {
    /// Hands a stream over; false (the stream dropped) when the pacer has ended.
    fn submit(&self, job: Job) -> bool {
        let mut inbox = lock(&self.inbox);
        if inbox.closed {
            return false;
        }
        // Wake the pacer only if it would sleep past this stream's first deadline.
        let wake = inbox.asleep && inbox.until.is_none_or(|until| job.next < until);
        inbox.jobs.push(job);
        if wake {
            inbox.asleep = false;
            drop(inbox);
            self.wake.notify_one();
        }
        true
    }
}

fn pacer_loop(shared: &Shared, index: usize) {
    let pacer = &shared.pacers[index];
    let mut heap: BinaryHeap<Entry> = BinaryHeap::new();
    let mut arrivals: Vec<Job> = Vec::new();
    let mut seq = 0u64;
    let mut bytes = 0u64;
    let mut scratch = Vec::with_capacity(MAX_WRITE + 64 * 1024);
    let mut cpu_mark = thread_cpu_ns().unwrap_or(0);
    let mut accounted = Instant::now();
    let account = |cpu_mark: &mut u64| {
        if let Some(now) = thread_cpu_ns() {
            let counters = &shared.counters;
            counters
                .cpu_ns
                .fetch_add(now.saturating_sub(*cpu_mark), Ordering::Relaxed);
            *cpu_mark = now;
        }
    };
    loop {
        {
            let mut inbox = lock(&pacer.inbox);
            if shared.stop.load(Ordering::SeqCst) {
                inbox.closed = true;
                arrivals.append(&mut inbox.jobs);
                break;
            }
            std::mem::swap(&mut arrivals, &mut inbox.jobs);
        }
        for job in arrivals.drain(..) {
            seq += 1;
            // Boxed: the heap moves its entries about, and a job is ~150 bytes.
            heap.push(Entry {
                at: job.next,
                seq,
                job: Box::new(job),
            });
        }
        let now = Instant::now();
        let horizon = now + EARLY;
        while heap.peek().is_some_and(|top| top.at <= horizon) {
            let Some(mut entry) = heap.pop() else { break };
            match entry.job.advance(shared, (now, horizon), &mut scratch, &mut bytes) {
                Next::At(at) => {
                    seq += 1;
                    entry.at = at;
                    entry.seq = seq;
                    heap.push(entry);
                }
                Next::Done(ended) => {
                    // The counters first: the connection thread reads them once told.
                    shared
                        .counters
                        .bytes
                        .fetch_add(std::mem::take(&mut bytes), Ordering::Relaxed);
                    entry.job.report(ended);
                }
            }
        }
        if bytes > 0 {
            shared
                .counters
                .bytes
                .fetch_add(std::mem::take(&mut bytes), Ordering::Relaxed);
        }
        if now.duration_since(accounted) >= ACCOUNT {
            accounted = now;
            account(&mut cpu_mark);
        }
        // EARLY before the next deadline, and a pass at most every TICK.
        let wake = heap
            .peek()
            .map(|top| top.at.checked_sub(EARLY).unwrap_or(top.at).max(now + TICK));
        let mut inbox = lock(&pacer.inbox);
        if !inbox.jobs.is_empty() || shared.stop.load(Ordering::SeqCst) {
            continue;
        }
        inbox.asleep = true;
        inbox.until = wake;
        inbox = match wake {
            None => pacer.wake.wait(inbox).unwrap_or_else(PoisonError::into_inner),
            Some(wake) => match wake.checked_duration_since(Instant::now()) {
                Some(wait) if !wait.is_zero() => {
                    pacer
                        .wake
                        .wait_timeout(inbox, wait)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0
                }
                _ => inbox,
            },
        };
        inbox.asleep = false;
    }
    for mut job in arrivals {
        job.report(Paced::Failed);
    }
    for mut entry in heap.drain() {
        entry.job.report(Paced::Failed);
    }
    account(&mut cpu_mark);
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferroute_core::events::parser::ResponseEventParser;
    use ferroute_core::events::writer::ResponseSettings;
    use ferroute_core::translate::chat_completions::ChatCompletionsTranslator;

    fn post(addr: SocketAddr, path: &str, body: &str) -> Vec<u8> {
        let mut conn = TcpStream::connect(addr).unwrap();
        let request = format!(
            "POST {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        conn.write_all(request.as_bytes()).unwrap();
        let mut out = Vec::new();
        conn.read_to_end(&mut out).unwrap();
        out
    }

    fn dechunk(response: &[u8]) -> Vec<u8> {
        let start = memchr::memmem::find(response, b"\r\n\r\n").unwrap() + 4;
        let mut rest = &response[start..];
        let mut out = Vec::new();
        loop {
            let line_end = memchr::memmem::find(rest, b"\r\n").unwrap();
            let size = usize::from_str_radix(std::str::from_utf8(&rest[..line_end]).unwrap(), 16).unwrap();
            if size == 0 {
                return out;
            }
            out.extend_from_slice(&rest[line_end + 2..line_end + 2 + size]);
            rest = &rest[line_end + 4 + size..];
        }
    }

    fn config() -> MockConfig {
        MockConfig {
            tokens: 5,
            reasoning_tokens: 3,
            tool_call: true,
            ..MockConfig::default()
        }
    }

    #[test]
    fn responses_stream_passes_the_checker() {
        let mut server = MockServer::start("127.0.0.1:0", config()).unwrap();
        let raw = dechunk(&post(server.local_addr(), "/v1/responses", r#"{"stream":true}"#));
        let mut parser = ResponseEventParser::new();
        let mut count = 0u64;
        parser.feed(&raw, |_| count += 1).unwrap();
        parser.close().unwrap();
        assert_eq!(count, server.events_per_stream(Dialect::Responses));
        let response = parser.checker().response().unwrap();
        assert_eq!(response["output"].as_array().unwrap().len(), 3);
        server.stop();
        assert_eq!(server.stats().streams, 1);
    }

    #[test]
    fn chat_stream_translates() {
        let mut server = MockServer::start("127.0.0.1:0", config()).unwrap();
        let raw = dechunk(&post(
            server.local_addr(),
            "/v1/chat/completions",
            r#"{"stream":true,"stream_options":{"include_usage":true}}"#,
        ));
        assert!(raw.ends_with(b"data: [DONE]\n\n"));
        let mut translator = ChatCompletionsTranslator::new(
            ResponseSettings::default(),
            None,
            None,
            ferroute_core::sse::SseLimits::default(),
        );
        let mut out = translator.feed(&raw).to_vec();
        out.extend_from_slice(translator.finish());
        let mut parser = ResponseEventParser::new();
        parser.feed(&out, |_| {}).unwrap();
        parser.close().unwrap();
        let response = parser.checker().response().unwrap();
        assert_eq!(response["status"], "completed");
        assert_eq!(response["usage"]["output_tokens"], 16);
        server.stop();
    }

    #[test]
    fn injected_status_and_bad_paths() {
        let config = MockConfig {
            error_rate: 1.0,
            error_kind: "status:429".parse().unwrap(),
            ..MockConfig::default()
        };
        let mut server = MockServer::start("127.0.0.1:0", config).unwrap();
        let raw = post(server.local_addr(), "/v1/messages", r#"{"stream":true}"#);
        assert!(raw.starts_with(b"HTTP/1.1 429 "));
        assert!(memchr::memmem::find(&raw, b"\"type\":\"error\"").is_some());
        let raw = post(server.local_addr(), "/nope", "{}");
        assert!(raw.starts_with(b"HTTP/1.1 404 "));
        server.stop();
        assert_eq!(server.stats().errors_injected, 1);
    }

    const CHAT_STREAM: &str = r#"{"stream":true,"stream_options":{"include_usage":true}}"#;

    fn paced(tokens: u32, gap: Duration) -> MockConfig {
        MockConfig {
            tokens,
            gap_min: gap,
            gap_max: gap,
            ..MockConfig::default()
        }
    }

    /// Sends a streaming chat request on a new connection (kept open).
    fn open_stream(addr: SocketAddr) -> TcpStream {
        let mut conn = TcpStream::connect(addr).unwrap();
        let request = format!(
            "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{CHAT_STREAM}",
            CHAT_STREAM.len()
        );
        conn.write_all(request.as_bytes()).unwrap();
        conn
    }

    fn read_all(mut conn: TcpStream) -> Vec<u8> {
        conn.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut out = Vec::new();
        conn.read_to_end(&mut out).unwrap();
        out
    }

    fn count_events(raw: &[u8]) -> u64 {
        memchr::memmem::find_iter(raw, b"data: ").count() as u64
    }

    #[test]
    fn paced_stream_keeps_the_gap() {
        let gap = Duration::from_millis(4);
        let mut server = MockServer::start("127.0.0.1:0", paced(20, gap)).unwrap();
        let groups = server.shared.payloads.groups(Answer::ChatUsage, true).len() as u32;
        let started = Instant::now();
        let raw = dechunk(&read_all(open_stream(server.local_addr())));
        let took = started.elapsed();
        assert!(raw.ends_with(b"data: [DONE]\n\n"));
        assert_eq!(count_events(&raw), server.events_per_stream(Dialect::ChatCompletions));
        let least = gap * (groups - 1);
        assert!(
            took >= least && took < least * 3,
            "{groups} groups {gap:?} apart took {took:?}"
        );
        server.stop();
        assert_eq!(server.stats().streams, 1);
    }

    #[test]
    fn many_concurrent_paced_streams_complete() {
        let streams = 50;
        let mut server = MockServer::start("127.0.0.1:0", paced(30, Duration::from_millis(2))).unwrap();
        let addr = server.local_addr();
        let expected = server.events_per_stream(Dialect::ChatCompletions);
        let clients: Vec<_> = (0..streams)
            .map(|_| thread::spawn(move || dechunk(&read_all(open_stream(addr)))))
            .collect();
        for client in clients {
            let raw = client.join().unwrap();
            assert!(raw.ends_with(b"data: [DONE]\n\n"));
            assert_eq!(count_events(&raw), expected);
        }
        server.stop();
        let stats = server.stats();
        assert_eq!(stats.streams, streams);
        assert_eq!(stats.events, streams * expected);
    }

    #[test]
    fn a_slow_reader_does_not_delay_other_streams() {
        // ~8 MB per answer: more than the loopback socket buffers hold for a reader that reads nothing.
        let mut server = MockServer::start("127.0.0.1:0", paced(50_000, Duration::from_micros(1))).unwrap();
        let addr = server.local_addr();
        let slow = open_stream(addr);
        thread::sleep(Duration::from_millis(200));
        let started = Instant::now();
        let raw = dechunk(&read_all(open_stream(addr)));
        assert!(raw.ends_with(b"data: [DONE]\n\n"));
        assert!(started.elapsed() < Duration::from_secs(10));
        // The slow reader's stream is still stuck in its socket.
        assert_eq!(server.stats().streams, 1);
        let raw = dechunk(&read_all(slow));
        assert!(raw.ends_with(b"data: [DONE]\n\n"));
        server.stop();
        assert_eq!(server.stats().streams, 2);
    }

    #[test]
    fn injected_drop_and_stall_cut_a_paced_stream() {
        for kind in ["drop", "stall"] {
            let config = MockConfig {
                error_rate: 1.0,
                error_kind: kind.parse().unwrap(),
                ..paced(20, Duration::from_millis(1))
            };
            let mut server = MockServer::start("127.0.0.1:0", config).unwrap();
            let groups = server.shared.payloads.groups(Answer::ChatUsage, true);
            let half: usize = groups[..groups.len() / 2].iter().map(Vec::len).sum();
            let mut conn = open_stream(server.local_addr());
            conn.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
            let mut out = Vec::new();
            let mut chunk = [0u8; 4096];
            let closed = loop {
                match conn.read(&mut chunk) {
                    Ok(0) => break true,
                    Ok(n) => out.extend_from_slice(&chunk[..n]),
                    Err(_) => break false,
                }
            };
            let body = &out[memchr::memmem::find(&out, b"\r\n\r\n").unwrap() + 4..];
            assert_eq!(body.len(), half, "{kind}");
            assert_eq!(closed, kind == "drop", "{kind}");
            server.stop();
            assert_eq!(server.stats().streams, 0);
        }
    }

    #[test]
    fn paced_close_delimited_stream_ends_with_the_connection() {
        let config = MockConfig {
            chunked: false,
            ..paced(10, Duration::from_millis(1))
        };
        let mut server = MockServer::start("127.0.0.1:0", config).unwrap();
        let raw = read_all(open_stream(server.local_addr()));
        assert!(memchr::memmem::find(&raw, b"transfer-encoding").is_none());
        assert!(memchr::memmem::find(&raw, b"connection: close\r\n").is_some());
        assert!(raw.ends_with(b"data: [DONE]\n\n"));
        assert_eq!(count_events(&raw), server.events_per_stream(Dialect::ChatCompletions));
        server.stop();
        assert_eq!(server.stats().streams, 1);
    }

    #[test]
    fn stop_ends_paced_streams_promptly() {
        // Streams of ~10 s each.
        let mut server = MockServer::start("127.0.0.1:0", paced(100, Duration::from_millis(100))).unwrap();
        let clients: Vec<_> = (0..3).map(|_| open_stream(server.local_addr())).collect();
        thread::sleep(Duration::from_millis(300));
        let started = Instant::now();
        server.stop();
        let took = started.elapsed();
        assert!(took < Duration::from_secs(2), "stop took {took:?}");
        for client in clients {
            let raw = read_all(client);
            assert!(!raw.ends_with(b"0\r\n\r\n"));
        }
        assert_eq!(server.stats().streams, 0);
        assert!(server.stats().cpu_ns > 0);
    }

    #[test]
    fn error_kinds_parse() {
        assert_eq!("drop".parse::<ErrorKind>(), Ok(ErrorKind::Drop));
        assert_eq!("503".parse::<ErrorKind>(), Ok(ErrorKind::Status(503)));
        assert!("status:200".parse::<ErrorKind>().is_err());
    }
}
