//! Server-sent events: a WHATWG-conformant incremental decoder and an encoder.
