//! The mock's HTTP/1.1 server: one thread accepts, one thread per connection serves it.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use serde::Deserialize;

use super::payload::{self, Stream};
use super::{thread_cpu_ns, Dialect, ErrorKind, MockConfig, Rng};

const MAX_HEAD: usize = 64 * 1024;
const MAX_BODY: usize = 16 * 1024 * 1024;
/// How often an idle or sleeping connection thread looks at the stop flag.
const POLL: Duration = Duration::from_millis(50);

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
}

/// A running mock upstream; stopped (threads joined) by [`MockServer::stop`] or on drop.
pub struct MockServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
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
        });
        let accept_shared = Arc::clone(&shared);
        let acceptor = thread::Builder::new()
            .name("mock-upstream-accept".into())
            .spawn(move || accept_loop(&listener, &accept_shared))?;
        Ok(Self {
            addr,
            shared,
            acceptor: Some(acceptor),
        })
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
        let threads = std::mem::take(
            &mut *self
                .shared
                .threads
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
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
                };
                connection.serve();
                connection.account_cpu();
            });
        if let Ok(handle) = spawned {
            let mut threads = shared.threads.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
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
        let mut chunk = [0u8; 16 * 1024];
        loop {
            if self.stopping() {
                return Ok(false);
            }
            match self.conn.read(&mut chunk) {
                Ok(0) => return Ok(false),
                Ok(n) => {
                    buf.extend_from_slice(&chunk[..n]);
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

    fn gap(&mut self) -> Duration {
        let config = &self.shared.config;
        if config.gap_max == config.gap_min {
            return config.gap_min;
        }
        let span = config.gap_max.saturating_sub(config.gap_min).as_secs_f64();
        config.gap_min + Duration::from_secs_f64(span * self.rng.next_f64())
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
        let prebuilt = match dialect {
            Dialect::ChatCompletions if include_usage => &shared.payloads.chat_usage,
            Dialect::ChatCompletions => &shared.payloads.chat,
            Dialect::Anthropic => &shared.payloads.anthropic,
            Dialect::Responses => &shared.payloads.responses,
        };
        let config = &shared.config;
        let chunked = config.chunked;
        let untimed = config.ttft.is_zero() && config.gap_max.is_zero();
        if untimed && injected.is_none() {
            self.write(&prebuilt.whole)?;
        } else {
            self.write(stream_head(chunked))?;
            if !self.pause(config.ttft) {
                return Ok(Outcome::Close);
            }
            let groups = if chunked {
                &prebuilt.stream.groups
            } else {
                &prebuilt.stream.raw_groups
            };
            let cut = injected.map(|_| groups.len() / 2);
            for (i, group) in groups.iter().enumerate() {
                if cut == Some(i) {
                    if injected == Some(ErrorKind::Stall) {
                        // Hold the connection open, sending nothing, until the client leaves or we stop.
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
                    return Ok(Outcome::Close);
                }
                if i > 0 {
                    let gap = self.gap();
                    if !self.pause(gap) {
                        return Ok(Outcome::Close);
                    }
                }
                self.write(group)?;
            }
            if chunked {
                self.write(b"0\r\n\r\n")?;
            }
        }
        shared.counters.streams.fetch_add(1, Ordering::Relaxed);
        shared
            .counters
            .events
            .fetch_add(prebuilt.stream.events, Ordering::Relaxed);
        Ok(if chunked { Outcome::KeepAlive } else { Outcome::Close })
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
                while !self.stopping() {
                    let mut sink = [0u8; 1024];
                    match self.conn.read(&mut sink) {
                        Ok(0) => break,
                        Ok(_) => {}
                        Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {}
                        Err(_) => break,
                    }
                }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::parser::ResponseEventParser;
    use crate::events::writer::ResponseSettings;
    use crate::translate::chat_completions::ChatCompletionsTranslator;

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
            crate::sse::SseLimits::default(),
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

    #[test]
    fn error_kinds_parse() {
        assert_eq!("drop".parse::<ErrorKind>(), Ok(ErrorKind::Drop));
        assert_eq!("503".parse::<ErrorKind>(), Ok(ErrorKind::Status(503)));
        assert!("status:200".parse::<ErrorKind>().is_err());
    }
}
