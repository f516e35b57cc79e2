//! The Open Responses event model: ids, the sequencing writer and the accumulator that builds the
//! final response object, plus the checking parser for streams from any server.

pub mod ids;
pub mod parser;
pub mod raw;
pub mod redact;
pub mod writer;
