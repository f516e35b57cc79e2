//! ferroute's streaming core: SSE framing, HTTP chunked framing, incremental JSON, the Open Responses
//! event model and the translators from upstream dialects. Pure Rust, usable from Rust and testable
//! without an interpreter; the PyO3 module (`rust/python`) binds it.

pub mod chunked;
pub mod events;
pub mod json;
pub mod otlp;
pub mod sse;
pub mod translate;
