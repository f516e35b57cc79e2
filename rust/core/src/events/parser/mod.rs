//! The checking parser for Open Responses streams from any server: SSE bytes in, each event's JSON
//! out, in order, after checking it against the spec's streaming grammar (SPEC.md "Streaming
//! grammar"), while accumulating the response object the stream describes.
//!
//! Two layers: [`ResponseChecker`] takes events already split out of the SSE framing (one JSON
//! text each, as a WebSocket transport delivers them) and [`ResponseEventParser`] puts an
//! [`SseDecoder`] in front of it. Both can take the caller's JSON parser (`check_with`/`feed_with`),
//! which hands back the [`EventFields`] the checker reads, so a caller building its own objects from
//! each event (the Python glue builds dicts) parses each event once.
//!
//! The parts: `error.rs` (what is wrong with a stream, and where), `fields.rs` (the members of an
//! event the checker reads), `checker.rs` (the grammar, its leniencies, and the accumulated
//! response) and, here, the parser that puts the SSE decoder in front of the checker.

mod checker;
mod error;
mod fields;
#[cfg(test)]
mod test_streams;

pub use checker::{Checked, ResponseChecker};
pub use error::{StreamError, StreamErrorKind};
pub use fields::{EventFields, MemberValue};

use crate::sse::{SseDecoder, SseError, SseLimits};

/// Bytes of an Open Responses SSE stream → checked events, with the accumulated response.
#[derive(Debug)]
pub struct ResponseEventParser {
    sse: SseDecoder,
    checker: ResponseChecker,
    closed: bool,
}

impl Default for ResponseEventParser {
    fn default() -> Self {
        Self::new()
    }
}

impl ResponseEventParser {
    /// A parser with the SSE decoder's default bounds.
    pub fn new() -> Self {
        Self::with_limits(SseLimits::default())
    }

    /// A parser whose SSE decoder has these bounds on line length and event size.
    pub fn with_limits(limits: SseLimits) -> Self {
        Self {
            sse: SseDecoder::with_limits(limits),
            checker: ResponseChecker::new(),
            closed: false,
        }
    }

    /// Decodes and checks the next bytes; `on_event` gets each completed JSON event's text, in
    /// order (not `[DONE]`). On an error the events of `data` after the offending one are dropped,
    /// and every later call returns the same error.
    pub fn feed(&mut self, data: &[u8], mut on_event: impl FnMut(&str)) -> Result<(), StreamError> {
        self.feed_inner(data, |checker, name, data, offset| {
            if checker.check(name, data, offset)? == Checked::Event {
                on_event(data);
            }
            Ok(())
        })
    }

    /// [`Self::feed`] with the caller's JSON parser (see [`ResponseChecker::check_with`]): `on_event`
    /// gets what `parse` built for each event that passed the checks.
    pub fn feed_with<T>(
        &mut self,
        data: &[u8],
        mut parse: impl for<'d> FnMut(&'d str) -> Result<(T, EventFields<'d>), String>,
        mut on_event: impl FnMut(T),
    ) -> Result<(), StreamError> {
        self.feed_inner(data, |checker, name, data, offset| {
            if let Some(event) = checker.check_with(name, data, offset, &mut parse)? {
                on_event(event);
            }
            Ok(())
        })
    }

    fn feed_inner(
        &mut self,
        data: &[u8],
        mut handle: impl FnMut(&mut ResponseChecker, Option<&str>, &str, u64) -> Result<(), StreamError>,
    ) -> Result<(), StreamError> {
        if self.closed {
            return Err(StreamError {
                kind: Box::new(StreamErrorKind::Closed),
                event_index: None,
                sequence_number: None,
                offset: self.sse.position(),
            });
        }
        if let Some(error) = self.checker.error() {
            return Err(error.clone());
        }
        let base = self.sse.position();
        let start = data.as_ptr() as usize;
        let end = start + data.len();
        let checker = &mut self.checker;
        let mut failed = false;
        let result = self.sse.feed(data, |event| {
            if failed {
                return;
            }
            // The decoder hands out most events as slices of `data`: their place in it is exact.
            let pointer = event.data.as_ptr() as usize;
            let offset = if (start..end).contains(&pointer) {
                base + (pointer - start) as u64
            } else {
                base
            };
            failed = handle(checker, event.event, event.data, offset).is_err();
        });
        if let Err(error) = result {
            if !failed {
                let error = sse_error(&error, self.sse.position());
                self.checker.failed = Some(error);
            }
        }
        match self.checker.error() {
            Some(error) => Err(error.clone()),
            None => Ok(()),
        }
    }

    /// End of stream: an error if it stopped mid-event or before a terminal event.
    pub fn close(&mut self) -> Result<(), StreamError> {
        if !self.closed {
            self.closed = true;
            let truncated = self.sse.finish();
            if truncated && self.checker.error().is_none() {
                self.checker.failed = Some(StreamError {
                    kind: Box::new(StreamErrorKind::TruncatedEvent),
                    event_index: None,
                    sequence_number: None,
                    offset: self.sse.position(),
                });
            }
        }
        self.checker.finish(self.sse.position())
    }

    /// The checker, for the accumulated response and counters.
    pub fn checker(&self) -> &ResponseChecker {
        &self.checker
    }

    /// Bytes fed so far.
    pub fn position(&self) -> u64 {
        self.sse.position()
    }
}

#[cold]
fn sse_error(error: &SseError, position: u64) -> StreamError {
    let offset = match error {
        SseError::LineTooLong { offset, .. } | SseError::EventTooLarge { offset, .. } => *offset,
        SseError::InvalidEventName => position,
    };
    StreamError {
        kind: Box::new(StreamErrorKind::Sse(error.to_string())),
        event_index: None,
        sequence_number: None,
        offset,
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::json;

    use super::test_streams::{error_of, fixtures, run, run_chunks, stream, text_events};
    use super::*;

    #[test]
    fn byte_offset_points_at_the_event() {
        let mut events = text_events();
        events[4]["sequence_number"] = json!(9);
        let bytes = stream(&events);
        let error = error_of(&events);
        let offset = usize::try_from(error.offset).unwrap();
        assert!(
            bytes[offset..].starts_with(events[4].to_string().as_bytes()),
            "offset {offset}"
        );
        assert!(error.to_string().contains(&format!("byte {offset}")), "{error}");
    }

    #[test]
    fn missing_terminal_and_truncation_at_close() {
        let events = text_events();
        let error = run(&stream(&events[..9])).2.unwrap_err();
        assert_eq!(*error.kind, StreamErrorKind::MissingTerminal { events: 9 });
        assert!(error.to_string().contains("without a terminal event"), "{error}");

        let bytes = stream(&events);
        let error = run(&bytes[..bytes.len() - 20]).2.unwrap_err();
        assert_eq!(*error.kind, StreamErrorKind::TruncatedEvent);
        assert!(error.to_string().contains("middle of an event"), "{error}");

        assert!(matches!(
            *run(b"").2.unwrap_err().kind,
            StreamErrorKind::MissingTerminal { events: 0 }
        ));
    }

    #[test]
    fn sse_limits_become_stream_errors() {
        let mut parser = ResponseEventParser::with_limits(SseLimits {
            max_line_len: 64,
            max_event_size: 1024,
        });
        let error = parser.feed(&stream(&text_events()), |_| {}).unwrap_err();
        assert!(matches!(*error.kind, StreamErrorKind::Sse(_)), "{error}");
        assert!(error.to_string().contains("max_line_length"), "{error}");
        assert_eq!(parser.feed(b"", |_| {}).unwrap_err(), error, "errors are sticky");
        assert_eq!(parser.close().unwrap_err(), error);
    }

    #[test]
    fn feed_after_close() {
        let mut parser = ResponseEventParser::new();
        parser.feed(&stream(&text_events()), |_| {}).unwrap();
        parser.close().unwrap();
        parser.close().unwrap();
        assert_eq!(*parser.feed(b"\n", |_| {}).unwrap_err().kind, StreamErrorKind::Closed);
    }

    /// A stream with every checked construct, CRLF line ends, comments and [DONE].
    fn mixed_stream() -> Vec<u8> {
        let mut bytes = b": keep-alive\r\n\r\n".to_vec();
        for (name, fixture) in fixtures() {
            if name.starts_with("openai-gpt-5-reasoning-summary-function") {
                let text = String::from_utf8(fixture).unwrap().replace('\n', "\r\n");
                bytes.extend_from_slice(text.as_bytes());
            }
        }
        bytes.extend_from_slice(b"data: [DONE]\r\n\r\n");
        bytes
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn any_chunking_gives_the_same_events(cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..40)) {
            let bytes = mixed_stream();
            let whole = run(&bytes);
            prop_assert!(whole.2.is_ok());
            let mut points: Vec<usize> = cuts.iter().map(|cut| cut.index(bytes.len() + 1)).collect();
            points.sort_unstable();
            let mut chunks = Vec::new();
            let mut last = 0;
            for point in points {
                chunks.push(&bytes[last..point]);
                last = point;
            }
            chunks.push(&bytes[last..]);
            prop_assert_eq!(run_chunks(&chunks), whole);
        }

        #[test]
        fn any_chunking_gives_the_same_error(cut in 1usize..64, break_at in 2usize..10) {
            let mut events = text_events();
            events[break_at]["sequence_number"] = json!(99);
            let bytes = stream(&events);
            let whole = run(&bytes);
            prop_assert!(whole.2.is_err());
            let chunks: Vec<&[u8]> = bytes.chunks(cut).collect();
            let split = run_chunks(&chunks);
            prop_assert_eq!(split.0, whole.0);
            prop_assert_eq!(split.2.unwrap_err().kind, whole.2.unwrap_err().kind);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = run(&bytes);
        }
    }

    #[test]
    fn one_byte_at_a_time() {
        for (name, bytes) in fixtures() {
            let whole = run(&bytes);
            let chunks: Vec<&[u8]> = bytes.chunks(1).collect();
            assert_eq!(run_chunks(&chunks), whole, "{name}");
        }
    }
}
