//! Upstream dialect translators: one module per dialect, each a [`Dialect`] that the generic
//! [`Translator`] drives (SSE framing, the start, the end of the stream, failures from outside).

use crate::events::writer::{ErrorInfo, Framing, Outcome, ResponseSettings, ResponseWriter, Status};
use crate::sse::{SseDecoder, SseEventRef, SseLimits};

pub mod anthropic;
pub mod chat_completions;
pub mod responses;

/// One upstream dialect: how its events drive the response's writer.
pub trait Dialect {
    /// The dialect's state around `writer`.
    fn new(writer: ResponseWriter) -> Self;
    fn writer(&self) -> &ResponseWriter;
    fn writer_mut(&mut self) -> &mut ResponseWriter;
    /// One upstream SSE event, while the response is unfinished.
    fn on_event(&mut self, event: &SseEventRef<'_>);
    /// The upstream stream ended, on an event boundary, with the response unfinished: complete it where the
    /// stream had said how it ends, else fail it as cut (`upstream_stream_truncated`).
    fn on_end(&mut self);
}

/// An upstream stream of dialect `D` (or a body) → Open Responses events: one call per upstream read.
pub struct Translator<D> {
    sse: SseDecoder,
    dialect: D,
}

impl<D: Dialect> Translator<D> {
    /// A translator for one response; see [`ResponseWriter::new`] for `id` and `created_at`.
    pub fn new(settings: ResponseSettings, id: Option<String>, created_at: Option<u64>, limits: SseLimits) -> Self {
        Self {
            sse: SseDecoder::with_limits(limits),
            dialect: D::new(ResponseWriter::new(settings, id, created_at, Framing::Sse)),
        }
    }

    /// Translate the next upstream bytes; returns the Open Responses frames they produce (the first call
    /// also `response.created` and `response.in_progress`).
    pub fn feed(&mut self, data: &[u8]) -> &[u8] {
        let Self { sse, dialect } = self;
        let writer = dialect.writer_mut();
        writer.clear_output();
        // Each upstream chunk becomes roughly as many bytes of frames: grow once, not by doubling.
        writer.reserve(data.len() + data.len() / 2);
        writer.start();
        if !writer.is_finished() {
            let fed = sse.feed(data, |event| {
                if !dialect.writer().is_finished() {
                    dialect.on_event(&event);
                }
            });
            if let Err(error) = fed {
                dialect.writer_mut().finish(Outcome::Failed(stream_error(
                    "upstream_event_too_large",
                    format!("upstream stream rejected: {error}"),
                )));
            }
        }
        dialect.writer().output()
    }

    /// End of the upstream stream: the frames that close the response (and `data: [DONE]`).
    pub fn finish(&mut self) -> &[u8] {
        let Self { sse, dialect } = self;
        dialect.writer_mut().clear_output();
        dialect.writer_mut().start();
        let cut_mid_event = sse.finish();
        if !dialect.writer().is_finished() {
            if cut_mid_event {
                dialect.writer_mut().finish(Outcome::Failed(stream_error(
                    "upstream_stream_truncated",
                    "the upstream stream ended in the middle of an event".to_owned(),
                )));
            } else {
                dialect.on_end();
            }
        }
        dialect.writer().output()
    }

    /// End the response as failed for a reason outside the upstream's bytes (an idle timeout, the
    /// router shutting down, an exception): `error`, `response.failed`, `data: [DONE]`. Nothing if
    /// the response already ended.
    pub fn fail(&mut self, error: ErrorInfo) -> &[u8] {
        let Self { sse, dialect } = self;
        let writer = dialect.writer_mut();
        writer.clear_output();
        writer.start();
        sse.finish();
        writer.finish(Outcome::Failed(error));
        writer.output()
    }

    /// The writer (response id, status, the response object so far).
    pub fn writer(&self) -> &ResponseWriter {
        self.dialect.writer()
    }

    /// The response status.
    pub fn status(&self) -> Status {
        self.dialect.writer().status()
    }
}

/// A whole upstream body that is not what its dialect promises.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConvertError {
    pub message: String,
}

impl std::fmt::Display for ConvertError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ConvertError {}

/// Longest upstream error message passed on to the client; the rest is cut.
const MAX_UPSTREAM_MESSAGE: usize = 1_000;

/// The error an upstream reported, as the client sees it: its message (cut to
/// `MAX_UPSTREAM_MESSAGE` bytes), never its raw body; `model_error` / `upstream_error` unless it says.
fn upstream_error(message: &str, kind: Option<&str>, code: Option<&str>) -> ErrorInfo {
    let mut message = format!("upstream error: {message}");
    if message.len() > MAX_UPSTREAM_MESSAGE {
        let mut cut = MAX_UPSTREAM_MESSAGE;
        while !message.is_char_boundary(cut) {
            cut -= 1;
        }
        message.truncate(cut);
        message.push('…');
    }
    ErrorInfo {
        kind: kind.unwrap_or("model_error").to_owned(),
        code: code.unwrap_or("upstream_error").to_owned(),
        message,
        param: None,
    }
}

/// A failure of the upstream's stream itself (malformed, cut, too large): a `model_error` with `code`.
fn stream_error(code: &str, message: String) -> ErrorInfo {
    ErrorInfo {
        kind: "model_error".to_owned(),
        code: code.to_owned(),
        message,
        param: None,
    }
}
