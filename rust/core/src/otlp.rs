//! Protocol Buffers writing for OTLP (OpenTelemetry's `ExportTraceServiceRequest`, as the OTLP/HTTP protobuf
//! exporter sends it): a message writer and the field numbers of the messages a span batch is made of.
//!
//! The OpenTelemetry Python SDK's own encoder builds a protobuf object per span, attribute and value before
//! serialising them; this writes the wire bytes directly. The writer follows proto3: a scalar field at its
//! default (0, empty) is left out, a message field is written when set (even empty), and a `oneof` member
//! (`AnyValue`'s) is written whatever its value. Field numbers: `opentelemetry/proto/trace/v1/trace.proto`,
//! `common/v1/common.proto`, `resource/v1/resource.proto`.

/// Wire types.
const VARINT: u32 = 0;
const FIXED64: u32 = 1;
const LEN: u32 = 2;
const FIXED32: u32 = 5;

/// A protobuf message being written; nested messages are written in place (`message`).
#[derive(Debug, Default)]
pub struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            buf: Vec::with_capacity(capacity),
        }
    }

    /// The bytes written.
    pub fn into_bytes(self) -> Vec<u8> {
        self.buf
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.buf
    }

    fn varint(&mut self, mut value: u64) {
        while value >= 0x80 {
            self.buf.push((value as u8) | 0x80);
            value >>= 7;
        }
        self.buf.push(value as u8);
    }

    fn tag(&mut self, field: u32, wire: u32) {
        self.varint(u64::from((field << 3) | wire));
    }

    /// A message field: whatever `body` writes, length-prefixed (written even when empty). The body is written
    /// after the tag and one byte kept for its length, which is enough below 128 bytes (most of a span batch's
    /// messages: attributes, values); a longer body is moved up by the length's other bytes (one `copy_within`).
    pub fn message<R>(&mut self, field: u32, body: impl FnOnce(&mut Self) -> R) -> R {
        self.tag(field, LEN);
        let start = self.buf.len();
        self.buf.push(0);
        let result = body(self);
        let end = self.buf.len();
        let len = end - start - 1;
        if len < 0x80 {
            self.buf[start] = len as u8;
            return result;
        }
        let mut prefix = [0u8; 10];
        let mut n = 0;
        let mut value = len as u64;
        while value >= 0x80 {
            prefix[n] = (value as u8) | 0x80;
            value >>= 7;
            n += 1;
        }
        prefix[n] = value as u8;
        n += 1;
        self.buf.resize(end + n - 1, 0);
        self.buf.copy_within(start + 1..end, start + n);
        self.buf[start..start + n].copy_from_slice(&prefix[..n]);
        result
    }

    /// A string field (left out when empty).
    pub fn string(&mut self, field: u32, value: &str) {
        self.bytes(field, value.as_bytes());
    }

    /// A bytes field (left out when empty).
    pub fn bytes(&mut self, field: u32, value: &[u8]) {
        if !value.is_empty() {
            self.len_field(field, value);
        }
    }

    fn len_field(&mut self, field: u32, value: &[u8]) {
        self.tag(field, LEN);
        self.varint(value.len() as u64);
        self.buf.extend_from_slice(value);
    }

    /// A uint32 or enum field (left out when 0).
    pub fn uint32(&mut self, field: u32, value: u32) {
        if value != 0 {
            self.tag(field, VARINT);
            self.varint(u64::from(value));
        }
    }

    /// A fixed64 field (left out when 0).
    pub fn fixed64(&mut self, field: u32, value: u64) {
        if value != 0 {
            self.tag(field, FIXED64);
            self.buf.extend_from_slice(&value.to_le_bytes());
        }
    }

    /// A fixed32 field (left out when 0).
    pub fn fixed32(&mut self, field: u32, value: u32) {
        if value != 0 {
            self.tag(field, FIXED32);
            self.buf.extend_from_slice(&value.to_le_bytes());
        }
    }

    // --- AnyValue's members: a oneof, written whatever the value ------------------------------------------------

    pub fn any_string(&mut self, value: &str) {
        self.len_field(any_value::STRING, value.as_bytes());
    }

    pub fn any_bool(&mut self, value: bool) {
        self.tag(any_value::BOOL, VARINT);
        self.buf.push(u8::from(value));
    }

    pub fn any_int(&mut self, value: i64) {
        self.tag(any_value::INT, VARINT);
        self.varint(u64::from_ne_bytes(value.to_ne_bytes())); // (int64: two's complement, ten bytes for a negative value)
    }

    pub fn any_double(&mut self, value: f64) {
        self.tag(any_value::DOUBLE, FIXED64);
        self.buf.extend_from_slice(&value.to_le_bytes());
    }

    pub fn any_bytes(&mut self, value: &[u8]) {
        self.len_field(any_value::BYTES, value);
    }
}

/// A trace id (an unsigned 128-bit integer) as OTLP's 16 bytes, big-endian.
pub fn trace_id_bytes(id: u128) -> [u8; 16] {
    id.to_be_bytes()
}

/// A span id (an unsigned 64-bit integer) as OTLP's 8 bytes, big-endian.
pub fn span_id_bytes(id: u64) -> [u8; 8] {
    id.to_be_bytes()
}

/// `SpanFlags`: the context's `is_remote` is known (always, from the SDK), and whether it is remote.
pub const FLAGS_CONTEXT_HAS_IS_REMOTE: u32 = 0x100;
pub const FLAGS_CONTEXT_IS_REMOTE: u32 = 0x200;

pub mod export_request {
    pub const RESOURCE_SPANS: u32 = 1;
}

pub mod resource_spans {
    pub const RESOURCE: u32 = 1;
    pub const SCOPE_SPANS: u32 = 2;
    pub const SCHEMA_URL: u32 = 3;
}

pub mod resource {
    pub const ATTRIBUTES: u32 = 1;
    pub const DROPPED_ATTRIBUTES_COUNT: u32 = 2;
}

pub mod scope_spans {
    pub const SCOPE: u32 = 1;
    pub const SPANS: u32 = 2;
    pub const SCHEMA_URL: u32 = 3;
}

pub mod scope {
    pub const NAME: u32 = 1;
    pub const VERSION: u32 = 2;
    pub const ATTRIBUTES: u32 = 3;
    pub const DROPPED_ATTRIBUTES_COUNT: u32 = 4;
}

pub mod span {
    pub const TRACE_ID: u32 = 1;
    pub const SPAN_ID: u32 = 2;
    pub const TRACE_STATE: u32 = 3;
    pub const PARENT_SPAN_ID: u32 = 4;
    pub const NAME: u32 = 5;
    pub const KIND: u32 = 6;
    pub const START_TIME_UNIX_NANO: u32 = 7;
    pub const END_TIME_UNIX_NANO: u32 = 8;
    pub const ATTRIBUTES: u32 = 9;
    pub const DROPPED_ATTRIBUTES_COUNT: u32 = 10;
    pub const EVENTS: u32 = 11;
    pub const DROPPED_EVENTS_COUNT: u32 = 12;
    pub const LINKS: u32 = 13;
    pub const DROPPED_LINKS_COUNT: u32 = 14;
    pub const STATUS: u32 = 15;
    pub const FLAGS: u32 = 16;
}

pub mod event {
    pub const TIME_UNIX_NANO: u32 = 1;
    pub const NAME: u32 = 2;
    pub const ATTRIBUTES: u32 = 3;
    pub const DROPPED_ATTRIBUTES_COUNT: u32 = 4;
}

pub mod link {
    pub const TRACE_ID: u32 = 1;
    pub const SPAN_ID: u32 = 2;
    pub const TRACE_STATE: u32 = 3;
    pub const ATTRIBUTES: u32 = 4;
    pub const DROPPED_ATTRIBUTES_COUNT: u32 = 5;
    pub const FLAGS: u32 = 6;
}

pub mod status {
    pub const MESSAGE: u32 = 2;
    pub const CODE: u32 = 3;
}

pub mod key_value {
    pub const KEY: u32 = 1;
    pub const VALUE: u32 = 2;
}

pub mod any_value {
    pub const STRING: u32 = 1;
    pub const BOOL: u32 = 2;
    pub const INT: u32 = 3;
    pub const DOUBLE: u32 = 4;
    pub const ARRAY: u32 = 5;
    pub const KVLIST: u32 = 6;
    pub const BYTES: u32 = 7;
}

/// `ArrayValue.values` and `KeyValueList.values`.
pub const VALUES: u32 = 1;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scalars_follow_proto3() {
        let mut w = Writer::new();
        w.string(1, "");
        w.uint32(2, 0);
        w.fixed64(3, 0);
        w.fixed32(4, 0);
        w.bytes(5, b"");
        assert!(w.as_bytes().is_empty(), "defaults are left out");
        w.string(1, "hi");
        w.uint32(2, 300);
        w.fixed64(7, 1);
        w.fixed32(16, 0x100);
        assert_eq!(
            w.as_bytes(),
            [
                0x0a, 2, b'h', b'i', // 1: "hi"
                0x10, 0xac, 0x02, // 2: 300
                0x39, 1, 0, 0, 0, 0, 0, 0, 0, // 7: fixed64 1
                0x85, 0x01, 0, 1, 0, 0, // 16: fixed32 0x100 (a two-byte tag)
            ]
        );
    }

    #[test]
    fn any_value_members_are_written_even_at_their_default() {
        let mut w = Writer::new();
        w.any_string("");
        w.any_bool(false);
        w.any_int(0);
        w.any_int(-1);
        w.any_double(0.5);
        assert_eq!(
            w.as_bytes(),
            [
                0x0a, 0, // string_value ""
                0x10, 0, // bool_value false
                0x18, 0, // int_value 0
                0x18, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01, // int_value -1
                0x21, 0, 0, 0, 0, 0, 0, 0xe0, 0x3f, // double_value 0.5
            ]
        );
    }

    #[test]
    fn nested_messages_get_their_length_before_them() {
        let mut w = Writer::new();
        w.message(1, |w| {
            w.message(2, |_| {}); // an empty message is still written
            w.message(3, |w| w.string(1, &"x".repeat(200))); // a two-byte length
        });
        let bytes = w.into_bytes();
        assert_eq!(&bytes[..6], [0x0a, 208, 0x01, 0x12, 0x00, 0x1a]);
        assert_eq!(&bytes[6..8], [203, 0x01]);
        assert_eq!(&bytes[8..11], [0x0a, 200, 0x01]);
        assert_eq!(bytes.len(), 11 + 200);
    }

    #[test]
    fn lengths_at_each_varint_boundary() {
        // (A body's length that fits the byte kept for it, and ones that move the body up by one and two bytes.)
        for (size, prefix) in [
            (127usize, vec![127u8]),
            (128, vec![0x80, 0x01]),
            (16_383, vec![0xff, 0x7f]),
            (16_384, vec![0x80, 0x80, 0x01]),
        ] {
            let mut w = Writer::new();
            // A bytes value (a tag, its length, its bytes) making a body of exactly `size` bytes.
            let k = (0..size).find(|k| 1 + varint_len(*k) + k == size).unwrap();
            w.message(1, |w| w.any_bytes(&vec![7u8; k]));
            let bytes = w.into_bytes();
            let body = bytes.len() - 1 - prefix.len();
            assert_eq!(body, size, "size {size}");
            assert_eq!(&bytes[1..=prefix.len()], prefix.as_slice(), "size {size}");
            assert_eq!(bytes[1 + prefix.len()], 0x3a, "size {size}"); // the body starts where the prefix ends
            assert_eq!(*bytes.last().unwrap(), 7, "size {size}");
        }
    }

    fn varint_len(mut value: usize) -> usize {
        let mut n = 1;
        while value >= 0x80 {
            value >>= 7;
            n += 1;
        }
        n
    }

    #[test]
    fn ids_are_big_endian() {
        assert_eq!(span_id_bytes(0x0102_0304_0506_0708), [1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(trace_id_bytes(1)[15], 1);
        assert_eq!(trace_id_bytes(1 << 120)[0], 1);
    }
}
