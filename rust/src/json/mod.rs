//! Incremental JSON: a parser that keeps its state across `feed` calls.
