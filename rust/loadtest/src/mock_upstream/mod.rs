//! A mock LLM upstream fast enough not to be the bottleneck of a load test: a small HTTP/1.1
//! server on `std::net` (keep-alive, `Content-Length` request bodies, chunked or close-delimited
//! streaming responses) that answers Chat Completions, Anthropic Messages and OpenAI Responses
//! requests with answers built once, as bytes, at start-up.
//!
//! A thread per connection reads requests and writes heads and untimed answers; paced streams
//! (a time to first token or a gap between tokens) are timed by a few pacer threads that write
//! the due groups of all their streams in one pass on non-blocking sockets, so a paced event costs
//! about one `send` rather than a sleep, a wake-up and a context switch of its own (see `server`).
//!
//! Timing (time to first token, a fixed or uniformly random gap between tokens), content (tokens,
//! reasoning tokens, a tool call with arguments in fragments) and failures (an HTTP status, a drop
//! mid-stream, a stall mid-stream, at a given rate) are configured by [`MockConfig`]. The server
//! counts what it served and its own CPU time ([`MockStats`]).

mod payload;
mod server;

use std::time::Duration;

pub use payload::text;
pub use server::{MockServer, MockStats};

/// Which upstream API a request spoke.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// `POST …/chat/completions`.
    ChatCompletions,
    /// `POST …/messages`.
    Anthropic,
    /// `POST …/responses`.
    Responses,
}

/// A failure the mock injects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// An HTTP error status with the dialect's error body, before any event.
    Status(u16),
    /// The connection is closed half-way through the answer (no terminating chunk).
    Drop,
    /// Half the answer, then nothing more until the client gives up (or the server stops).
    Stall,
}

impl std::str::FromStr for ErrorKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "drop" => Ok(Self::Drop),
            "stall" => Ok(Self::Stall),
            _ => {
                let code = s.strip_prefix("status:").unwrap_or(s);
                match code.parse::<u16>() {
                    Ok(code) if (400..600).contains(&code) => Ok(Self::Status(code)),
                    _ => Err(format!("error kind {s:?}: expected status:<400-599>, drop or stall")),
                }
            }
        }
    }
}

/// What the mock answers and how fast.
#[derive(Debug, Clone)]
pub struct MockConfig {
    /// Time from the request to the first token.
    pub ttft: Duration,
    /// The gap between tokens is drawn uniformly from `gap_min..=gap_max` (equal: fixed).
    pub gap_min: Duration,
    /// See `gap_min`.
    pub gap_max: Duration,
    /// Output text tokens per answer.
    pub tokens: u32,
    /// Reasoning tokens before the text.
    pub reasoning_tokens: u32,
    /// A function call after the text (arguments in several fragments).
    pub tool_call: bool,
    /// The fraction of requests that fail, 0 to 1.
    pub error_rate: f64,
    /// How they fail.
    pub error_kind: ErrorKind,
    /// Stream with `Transfer-Encoding: chunked` (true) or close-delimited (false).
    pub chunked: bool,
    /// Seed for the gap and error draws (0: from the OS).
    pub seed: u64,
}

impl Default for MockConfig {
    fn default() -> Self {
        Self {
            ttft: Duration::ZERO,
            gap_min: Duration::ZERO,
            gap_max: Duration::ZERO,
            tokens: 20,
            reasoning_tokens: 0,
            tool_call: false,
            error_rate: 0.0,
            error_kind: ErrorKind::Status(503),
            chunked: true,
            seed: 0,
        }
    }
}

impl MockConfig {
    /// Checks the ranges.
    pub fn validate(&self) -> Result<(), String> {
        if self.gap_min > self.gap_max {
            return Err("gap: the minimum exceeds the maximum".into());
        }
        if !(0.0..=1.0).contains(&self.error_rate) {
            return Err(format!("error rate {} is not between 0 and 1", self.error_rate));
        }
        if self.tokens == 0 && self.reasoning_tokens == 0 && !self.tool_call {
            return Err("the answer is empty: ask for tokens, reasoning tokens or a tool call".into());
        }
        Ok(())
    }
}

/// A small, fast PRNG (SplitMix64) for gap and error draws: not for anything secret.
#[derive(Debug, Clone)]
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    #[allow(clippy::cast_precision_loss)]
    pub(crate) fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// This thread's CPU time so far, in nanoseconds (`CLOCK_THREAD_CPUTIME_ID`: one system call, where reading
/// `/proc/thread-self/schedstat` after every request was ~4% of the mock's CPU in a burst); `None` off Unix.
#[cfg(unix)]
pub fn thread_cpu_ns() -> Option<u64> {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable `timespec` that outlives the call, which writes only it.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &raw mut ts) };
    if rc != 0 {
        return None;
    }
    let secs = u64::try_from(ts.tv_sec).ok()?;
    let nanos = u64::try_from(ts.tv_nsec).ok()?;
    Some(secs * 1_000_000_000 + nanos)
}

/// This thread's CPU time so far: not measured off Unix.
#[cfg(not(unix))]
pub fn thread_cpu_ns() -> Option<u64> {
    None
}
