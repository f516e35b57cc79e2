//! Upstream dialect translators: one module per dialect.

use crate::events::writer::ErrorInfo;

pub mod anthropic;
pub mod chat_completions;
pub mod responses;

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
