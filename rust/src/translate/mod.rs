//! Upstream dialect translators: one module per dialect.

pub mod chat_completions;
