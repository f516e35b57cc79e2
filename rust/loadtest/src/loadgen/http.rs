//! The load generator's HTTP/1.1 client: one keep-alive connection, a request written in one
//! write, the response head parsed, the body handed over as it arrives (chunked, `Content-Length`
//! or close-delimited) with the instant each read returned.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use ferroute_core::chunked::ChunkedDecoder;

const MAX_HEAD: usize = 64 * 1024;
/// Read timeout slice: how often a waiting read looks at the deadline and the abort flag.
const SLICE: Duration = Duration::from_millis(100);

/// Why a request failed, as the report counts it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// Could not connect.
    Connect,
    /// A status other than 200.
    Status(u16),
    /// No byte for longer than the idle timeout.
    Timeout,
    /// The connection closed before the response was complete.
    Closed,
    /// The response is not valid HTTP/1.1.
    Http(String),
    /// The stream broke the Open Responses grammar (or the body is not a response object).
    Grammar(String),
    /// The stream's terminal event came but no `data: [DONE]`.
    NoDone,
    /// The run ended (hard deadline) while the request was still in flight.
    Aborted,
}

impl Failure {
    /// The key errors are counted under.
    pub fn key(&self) -> String {
        match self {
            Self::Connect => "connect".into(),
            Self::Status(code) => format!("status_{code}"),
            Self::Timeout => "timeout".into(),
            Self::Closed => "closed".into(),
            Self::Http(_) => "http".into(),
            Self::Grammar(_) => "grammar".into(),
            Self::NoDone => "no_done".into(),
            Self::Aborted => "aborted".into(),
        }
    }
}

/// What a body reader sees.
pub trait BodySink {
    /// Bytes of the body (de-chunked), read at `at`.
    fn data(&mut self, data: &[u8], at: Instant) -> Result<(), Failure>;
}

/// A keep-alive connection to one server.
pub struct Client {
    addr: SocketAddr,
    host: String,
    conn: Option<TcpStream>,
    buf: Vec<u8>,
    /// Where each socket read lands (zeroed once, not per read: a fresh 16 KiB array per read was a memset each).
    scratch: Box<[u8]>,
}

enum Framing {
    Chunked,
    Length(usize),
    Close,
}

impl Client {
    /// A client for `addr`; `host` goes in the `Host` header.
    pub fn new(addr: SocketAddr, host: String) -> Self {
        Self {
            addr,
            host,
            conn: None,
            buf: Vec::with_capacity(64 * 1024),
            scratch: vec![0; 16 * 1024].into_boxed_slice(),
        }
    }

    fn connect(&mut self, timeout: Duration) -> Result<&mut TcpStream, Failure> {
        if self.conn.is_none() {
            let conn = TcpStream::connect_timeout(&self.addr, timeout).map_err(|_| Failure::Connect)?;
            let _ = conn.set_nodelay(true);
            let _ = conn.set_read_timeout(Some(SLICE));
            self.buf.clear();
            self.conn = Some(conn);
        }
        Ok(self.conn.as_mut().expect("connected above"))
    }

    /// Sends `POST path` with `body` and feeds the response body to `sink`. `idle` bounds the wait
    /// for each byte; `abort` is polled while waiting. Returns the status (200 here; other statuses
    /// are failures, their bodies read and dropped).
    pub fn post(
        &mut self,
        path: &str,
        headers: &str,
        body: &[u8],
        idle: Duration,
        abort: &dyn Fn() -> bool,
        sink: &mut dyn BodySink,
    ) -> Result<(), Failure> {
        let result = self.post_inner(path, headers, body, idle, abort, sink);
        if result.is_err() {
            // Whatever was left of that response is unknown: never reuse the connection.
            self.conn = None;
        }
        result
    }

    fn post_inner(
        &mut self,
        path: &str,
        headers: &str,
        body: &[u8],
        idle: Duration,
        abort: &dyn Fn() -> bool,
        sink: &mut dyn BodySink,
    ) -> Result<(), Failure> {
        let mut request = format!(
            "POST {path} HTTP/1.1\r\nhost: {}\r\ncontent-type: application/json\r\naccept: text/event-stream, application/json\r\ncontent-length: {}\r\n{headers}\r\n",
            self.host,
            body.len()
        )
        .into_bytes();
        request.extend_from_slice(body);
        let reused = self.conn.is_some();
        let conn = self.connect(idle)?;
        if conn.write_all(&request).is_err() {
            if !reused {
                return Err(Failure::Closed);
            }
            // The server closed an idle keep-alive connection: one fresh try.
            self.conn = None;
            let conn = self.connect(idle)?;
            conn.write_all(&request).map_err(|_| Failure::Closed)?;
        }
        let mut fresh_retry = reused;
        // The head.
        let head_end = loop {
            if let Some(pos) = memchr::memmem::find(&self.buf, b"\r\n\r\n") {
                break pos + 4;
            }
            if self.buf.len() > MAX_HEAD {
                return Err(Failure::Http("response head too large".into()));
            }
            match self.read_some(idle, abort)? {
                Some(_) => {}
                None if fresh_retry && self.buf.is_empty() => {
                    // A keep-alive connection the server had closed: retry once on a new one.
                    fresh_retry = false;
                    self.conn = None;
                    let conn = self.connect(idle)?;
                    conn.write_all(&request).map_err(|_| Failure::Closed)?;
                }
                None => return Err(Failure::Closed),
            }
        };
        let head = std::str::from_utf8(&self.buf[..head_end]).map_err(|_| Failure::Http("head not UTF-8".into()))?;
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let status: u16 = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| Failure::Http(format!("bad status line {status_line:?}")))?;
        let mut framing = Framing::Close;
        let mut close = status_line.starts_with("HTTP/1.0");
        for line in lines {
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            let value = value.trim();
            if name.eq_ignore_ascii_case("transfer-encoding") && value.eq_ignore_ascii_case("chunked") {
                framing = Framing::Chunked;
            } else if name.eq_ignore_ascii_case("content-length") && !matches!(framing, Framing::Chunked) {
                framing = Framing::Length(value.parse().map_err(|_| Failure::Http("bad content-length".into()))?);
            } else if name.eq_ignore_ascii_case("connection") {
                close = value.eq_ignore_ascii_case("close");
            }
        }
        self.buf.drain(..head_end);
        let mut discard = Discard;
        let target: &mut dyn BodySink = if status == 200 { sink } else { &mut discard };
        match framing {
            Framing::Length(n) => self.body_length(n, idle, abort, target)?,
            Framing::Close => {
                close = true;
                self.body_close(idle, abort, target)?;
            }
            Framing::Chunked => self.body_chunked(idle, abort, target)?,
        }
        if close {
            self.conn = None;
        }
        if status == 200 {
            Ok(())
        } else {
            Err(Failure::Status(status))
        }
    }

    /// Reads more into `buf`: `Some(n)`, or `None` at end of stream.
    fn read_some(&mut self, idle: Duration, abort: &dyn Fn() -> bool) -> Result<Option<usize>, Failure> {
        let conn = self.conn.as_mut().ok_or(Failure::Closed)?;
        let started = Instant::now();
        loop {
            match conn.read(&mut self.scratch) {
                Ok(0) => return Ok(None),
                Ok(n) => {
                    self.buf.extend_from_slice(&self.scratch[..n]);
                    return Ok(Some(n));
                }
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                    if abort() {
                        return Err(Failure::Aborted);
                    }
                    if started.elapsed() >= idle {
                        return Err(Failure::Timeout);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Ok(None),
            }
        }
    }

    fn body_length(
        &mut self,
        mut left: usize,
        idle: Duration,
        abort: &dyn Fn() -> bool,
        sink: &mut dyn BodySink,
    ) -> Result<(), Failure> {
        loop {
            let take = left.min(self.buf.len());
            if take > 0 {
                sink.data(&self.buf[..take], Instant::now())?;
                self.buf.drain(..take);
                left -= take;
            }
            if left == 0 {
                return Ok(());
            }
            if self.read_some(idle, abort)?.is_none() {
                return Err(Failure::Closed);
            }
        }
    }

    fn body_close(&mut self, idle: Duration, abort: &dyn Fn() -> bool, sink: &mut dyn BodySink) -> Result<(), Failure> {
        loop {
            if !self.buf.is_empty() {
                sink.data(&self.buf, Instant::now())?;
                self.buf.clear();
            }
            if self.read_some(idle, abort)?.is_none() {
                return Ok(());
            }
        }
    }

    /// A chunked body through the crate's `ChunkedDecoder` (one pass and one copy per read: the sink gets the
    /// payload of each read at once; the hand-written reader before it drained the buffer once per chunk).
    fn body_chunked(
        &mut self,
        idle: Duration,
        abort: &dyn Fn() -> bool,
        sink: &mut dyn BodySink,
    ) -> Result<(), Failure> {
        let mut decoder = ChunkedDecoder::new();
        let mut payload = Vec::with_capacity(16 * 1024);
        loop {
            if !self.buf.is_empty() {
                payload.clear();
                decoder
                    .feed(&self.buf, &mut payload)
                    .map_err(|e| Failure::Http(format!("chunked body: {e}")))?;
                self.buf.clear();
                if !payload.is_empty() {
                    sink.data(&payload, Instant::now())?;
                }
                if decoder.is_done() {
                    if decoder.has_extra() {
                        // (Nothing is pipelined: bytes after the body are the server's error; `post` drops the
                        // connection on any error.)
                        return Err(Failure::Http("bytes after the end of a chunked body".into()));
                    }
                    return Ok(());
                }
            }
            if self.read_some(idle, abort)?.is_none() {
                return Err(Failure::Closed);
            }
        }
    }
}

struct Discard;

impl BodySink for Discard {
    fn data(&mut self, _: &[u8], _: Instant) -> Result<(), Failure> {
        Ok(())
    }
}
