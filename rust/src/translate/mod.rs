//! Upstream dialect translators: one module per dialect.

pub mod anthropic;
pub mod chat_completions;
