//! ferroute's streaming core: SSE framing, incremental JSON, the Open Responses event model and the
//! translators from upstream dialects. Pure Rust; the PyO3 glue lives in [`python`] behind the
//! `python` feature so `cargo test` needs no interpreter.

pub mod chunked;
pub mod events;
pub mod json;
pub mod loadgen;
pub mod mock_upstream;
pub mod sse;
pub mod translate;

#[cfg(feature = "python")]
mod python;
