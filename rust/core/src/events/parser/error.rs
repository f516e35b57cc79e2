//! The checking parser's error: what is wrong with a stream ([`StreamErrorKind`]) and where
//! ([`StreamError`]), with the messages a user reads.

use std::fmt;

/// A malformed stream: what is wrong and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamError {
    /// What is wrong (boxed: keeps `Result<_, StreamError>` small on the hot path).
    pub kind: Box<StreamErrorKind>,
    /// 0-based index of the offending event among the stream's JSON events, if one is to blame.
    pub event_index: Option<u64>,
    /// The offending event's `sequence_number`, when it had one.
    pub sequence_number: Option<u64>,
    /// Byte offset in the stream: where the offending event's data starts when the SSE decoder
    /// handed it out as a slice of the input, else the start of the chunk that completed it.
    pub offset: u64,
}

/// What is wrong with a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StreamErrorKind {
    /// The SSE framing broke a bound (its own message).
    Sse(String),
    /// An event's data is not a JSON object.
    InvalidJson(String),
    /// An event with no string `type`.
    MissingType,
    /// An event with no integer `sequence_number`.
    MissingSequenceNumber,
    /// A required field is missing or has the wrong JSON type.
    BadField { event: String, field: &'static str },
    /// `sequence_number` is not the previous one plus one.
    SequenceNumber { expected: u64, got: u64 },
    /// The SSE `event:` name and the JSON `type` differ.
    EventNameMismatch { name: String, event: String },
    /// The stream does not start with `response.created` or `response.queued`.
    FirstEvent { event: String },
    /// `data: [DONE]` before the terminal event.
    DoneBeforeTerminal,
    /// Anything after `data: [DONE]`.
    AfterDone { event: String },
    /// An event after the terminal event.
    AfterTerminal { event: String, terminal: String },
    /// `response.output_item.added` out of `output_index` order.
    OutputIndex { expected: u64, got: u64 },
    /// An event refers to an output item that was never added.
    UnknownItem {
        event: String,
        output_index: Option<u64>,
        item_id: Option<String>,
    },
    /// `item_id` and `output_index` name different items.
    ItemIdMismatch {
        event: String,
        output_index: u64,
        expected: String,
        got: String,
    },
    /// An event for an output item after its `response.output_item.done`.
    ItemClosed { event: String, output_index: u64 },
    /// A content or summary part added out of order.
    PartIndex {
        event: String,
        output_index: u64,
        field: &'static str,
        expected: u64,
        got: u64,
    },
    /// A delta for a part that is not open.
    DeltaOutsidePart {
        event: String,
        output_index: u64,
        field: &'static str,
        index: u64,
    },
    /// A `.done` or `part.done` for a part that is not open.
    PartNotOpen {
        event: String,
        output_index: u64,
        field: &'static str,
        index: u64,
    },
    /// A second `.done` for the same part.
    DuplicateDone { event: String, output_index: u64 },
    /// A full text that is not the concatenation of the deltas before it.
    TextMismatch {
        event: String,
        output_index: u64,
        streamed: String,
        got: String,
    },
    /// `response.output_item.done` while one of the item's parts is still open.
    PartStillOpen {
        output_index: u64,
        field: &'static str,
        index: u64,
    },
    /// A terminal `response.completed`/`incomplete` while an output item is still open.
    ItemStillOpen { event: String, output_index: u64 },
    /// The terminal response's `output` does not list the streamed items.
    OutputCount { event: String, streamed: u64, got: u64 },
    /// The stream ended inside an unfinished SSE event.
    TruncatedEvent,
    /// The stream ended without a terminal event.
    MissingTerminal { events: u64 },
    /// `feed` after `close`.
    Closed,
}

const TERMINAL_HINT: &str = "response.completed, response.incomplete or response.failed";

/// A quoted excerpt of a text that may be long, for error messages.
pub(super) fn excerpt(text: &str) -> String {
    const MAX: usize = 40;
    if text.chars().count() <= MAX {
        format!("{text:?}")
    } else {
        let head: String = text.chars().take(MAX).collect();
        format!("{head:?}… ({} chars)", text.chars().count())
    }
}

impl fmt::Display for StreamErrorKind {
    #[allow(clippy::too_many_lines)] // one arm per error kind
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Sse(message) => write!(f, "{message}"),
            Self::InvalidJson(message) => write!(f, "event data is not a JSON object: {message}"),
            Self::MissingType => f.write_str("event has no string \"type\""),
            Self::MissingSequenceNumber => f.write_str("event has no integer \"sequence_number\""),
            Self::BadField { event, field } => write!(f, "{event} has a missing or malformed \"{field}\""),
            Self::SequenceNumber { expected, got } => {
                let why = if got < expected {
                    "duplicate or out of order"
                } else {
                    "gap"
                };
                write!(f, "sequence_number {got} where {expected} was expected ({why})")
            }
            Self::EventNameMismatch { name, event } => {
                write!(f, "SSE event name {name:?} does not match the data's type {event:?}")
            }
            Self::FirstEvent { event } => {
                write!(
                    f,
                    "the stream must start with response.created or response.queued, not {event}"
                )
            }
            Self::DoneBeforeTerminal => write!(f, "data: [DONE] before the terminal event ({TERMINAL_HINT})"),
            Self::AfterDone { event } => write!(f, "{event} after data: [DONE]"),
            Self::AfterTerminal { event, terminal } => {
                if is_terminal(event) {
                    write!(f, "second terminal event {event} (after {terminal})")
                } else {
                    write!(f, "{event} after the terminal event {terminal}")
                }
            }
            Self::OutputIndex { expected, got } => {
                write!(
                    f,
                    "response.output_item.added with output_index {got} where {expected} was expected"
                )
            }
            Self::UnknownItem {
                event,
                output_index,
                item_id,
            } => {
                write!(f, "{event} for an unknown item (")?;
                match (output_index, item_id) {
                    (Some(index), Some(id)) => write!(f, "output_index {index}, item_id {id:?})"),
                    (Some(index), None) => write!(f, "output_index {index})"),
                    (None, Some(id)) => write!(f, "item_id {id:?})"),
                    (None, None) => f.write_str("it names neither output_index nor item_id)"),
                }
            }
            Self::ItemIdMismatch {
                event,
                output_index,
                expected,
                got,
            } => {
                write!(
                    f,
                    "{event} has item_id {got:?} but output item {output_index} is {expected:?}"
                )
            }
            Self::ItemClosed { event, output_index } => {
                write!(
                    f,
                    "{event} for output item {output_index} after its response.output_item.done"
                )
            }
            Self::PartIndex {
                event,
                output_index,
                field,
                expected,
                got,
            } => {
                write!(
                    f,
                    "{event} with {field} {got} in output item {output_index} where {expected} was expected"
                )
            }
            Self::DeltaOutsidePart {
                event,
                output_index,
                field,
                index,
            } => write!(
                f,
                "delta outside an open part: {event} for output item {output_index} {field} {index}, which is not open"
            ),
            Self::PartNotOpen {
                event,
                output_index,
                field,
                index,
            } => {
                write!(
                    f,
                    "{event} for output item {output_index} {field} {index}, which is not open"
                )
            }
            Self::DuplicateDone { event, output_index } => {
                write!(f, "second {event} for the same part of output item {output_index}")
            }
            Self::TextMismatch {
                event,
                output_index,
                streamed,
                got,
            } => write!(
                f,
                "{event} for output item {output_index} carries {} but the deltas before it make {}",
                excerpt(got),
                excerpt(streamed)
            ),
            Self::PartStillOpen {
                output_index,
                field,
                index,
            } => write!(
                f,
                "response.output_item.done for output item {output_index} while its {field} {index} is still open"
            ),
            Self::ItemStillOpen { event, output_index } => {
                write!(f, "{event} while output item {output_index} is still open")
            }
            Self::OutputCount { event, streamed, got } => {
                write!(f, "{event} lists {got} output items but the stream added {streamed}")
            }
            Self::TruncatedEvent => f.write_str("the stream ended in the middle of an event"),
            Self::MissingTerminal { events } => {
                write!(
                    f,
                    "the stream ended after {events} events without a terminal event ({TERMINAL_HINT})"
                )
            }
            Self::Closed => f.write_str("feed after close"),
        }
    }
}

impl fmt::Display for StreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (", self.kind)?;
        if let Some(index) = self.event_index {
            write!(f, "event #{index}, ")?;
        }
        if let Some(seq) = self.sequence_number {
            write!(f, "sequence_number {seq}, ")?;
        }
        write!(f, "byte {})", self.offset)
    }
}

impl std::error::Error for StreamError {}

pub(super) fn is_terminal(event: &str) -> bool {
    matches!(event, "response.completed" | "response.incomplete" | "response.failed")
}
