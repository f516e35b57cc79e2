//! HTTP/1.1 chunked transfer coding, removed incrementally: push any bytes, get the payload out.
//!
//! The router reads an upstream body one socket read at a time; a read of a fast upstream's answer holds
//! hundreds of chunks (vLLM and uvicorn write one chunk per SSE event). This decoder strips the framing of
//! a whole read in one pass (memchr for line ends, one copy of the payload), where a Python loop cost
//! ~0.5 µs per chunk.
//!
//! Size and trailer lines end with CRLF (a bare LF is accepted, as most servers' parsers do); chunk
//! extensions are ignored; a payload must be followed by CRLF (or LF). Lines are bounded.

use std::fmt;

/// Longest chunk-size or trailer line accepted (with its extensions).
pub const MAX_LINE: usize = 4096;

/// Malformed chunked framing; `offset` is the byte offset in the body where it was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkedError {
    pub message: &'static str,
    pub offset: u64,
}

impl fmt::Display for ChunkedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at byte {}", self.message, self.offset)
    }
}

impl std::error::Error for ChunkedError {}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading a chunk-size line.
    Size,
    /// Inside a chunk's payload, with this many bytes left.
    Data(u64),
    /// After a payload: expecting CR LF (`true`: the CR was seen).
    DataEnd(bool),
    /// After the last (0-size) chunk: reading trailer lines until an empty one.
    Trailer,
    Done,
}

/// An incremental chunked-body decoder.
#[derive(Debug, Clone)]
pub struct ChunkedDecoder {
    state: State,
    /// An unfinished size or trailer line carried to the next `feed`.
    line: Vec<u8>,
    /// Body bytes consumed so far (for error offsets).
    offset: u64,
    /// Bytes arrived after the end of the body.
    extra: bool,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl ChunkedDecoder {
    pub fn new() -> Self {
        Self {
            state: State::Size,
            line: Vec::new(),
            offset: 0,
            extra: false,
        }
    }

    /// The body has ended (the last chunk and its trailers were read).
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Bytes came after the end of the body (the connection cannot be reused).
    pub fn has_extra(&self) -> bool {
        self.extra
    }

    /// Decode `data`, appending the payload bytes it holds to `out`.
    ///
    /// # Errors
    /// Malformed framing; the decoder should not be fed again after an error.
    pub fn feed(&mut self, data: &[u8], out: &mut Vec<u8>) -> Result<(), ChunkedError> {
        let mut pos = 0;
        while pos < data.len() {
            match self.state {
                State::Done => {
                    self.extra = true;
                    break;
                }
                State::Data(left) => {
                    let available = data.len() - pos;
                    let take = usize::try_from(left).map_or(available, |left| left.min(available));
                    out.extend_from_slice(&data[pos..pos + take]);
                    pos += take;
                    let left = left - take as u64;
                    self.state = if left == 0 {
                        State::DataEnd(false)
                    } else {
                        State::Data(left)
                    };
                }
                State::DataEnd(cr_seen) => match data[pos] {
                    b'\r' if !cr_seen => {
                        pos += 1;
                        self.state = State::DataEnd(true);
                    }
                    b'\n' => {
                        pos += 1;
                        self.state = State::Size;
                    }
                    _ => return Err(self.error("a chunk's payload is not followed by CRLF", pos)),
                },
                State::Size | State::Trailer => {
                    let rest = &data[pos..];
                    let Some(eol) = memchr::memchr(b'\n', rest) else {
                        if self.line.len() + rest.len() > MAX_LINE {
                            return Err(self.error("chunk-size or trailer line too long", pos));
                        }
                        self.line.extend_from_slice(rest);
                        break;
                    };
                    let line_end = pos + eol;
                    let next = line_end + 1;
                    if self.line.is_empty() {
                        self.on_line(&data[pos..line_end], pos)?;
                    } else {
                        let mut line = std::mem::take(&mut self.line);
                        line.extend_from_slice(&data[pos..line_end]);
                        let result = self.on_line(&line, pos);
                        line.clear();
                        self.line = line;
                        result?;
                    }
                    pos = next;
                }
            }
        }
        self.offset += data.len() as u64;
        Ok(())
    }

    fn on_line(&mut self, line: &[u8], pos: usize) -> Result<(), ChunkedError> {
        if line.len() > MAX_LINE {
            return Err(self.error("chunk-size or trailer line too long", pos));
        }
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if self.state == State::Trailer {
            if line.is_empty() {
                self.state = State::Done;
            }
            return Ok(());
        }
        let digits = line.split(|&b| b == b';').next().unwrap_or_default().trim_ascii();
        if digits.is_empty() || digits.len() > 16 {
            return Err(self.error("malformed chunk-size line", pos));
        }
        let mut size: u64 = 0;
        for &b in digits {
            let digit = match b {
                b'0'..=b'9' => b - b'0',
                b'a'..=b'f' => b - b'a' + 10,
                b'A'..=b'F' => b - b'A' + 10,
                _ => return Err(self.error("malformed chunk-size line", pos)),
            };
            size = (size << 4) | u64::from(digit);
        }
        self.state = if size == 0 { State::Trailer } else { State::Data(size) };
        Ok(())
    }

    #[cold]
    fn error(&self, message: &'static str, pos: usize) -> ChunkedError {
        ChunkedError {
            message,
            offset: self.offset + pos as u64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn encode(pieces: &[&[u8]], trailers: &str) -> Vec<u8> {
        let mut body = Vec::new();
        for piece in pieces {
            body.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
            body.extend_from_slice(piece);
            body.extend_from_slice(b"\r\n");
        }
        body.extend_from_slice(format!("0\r\n{trailers}\r\n").as_bytes());
        body
    }

    fn decode_all(reads: &[&[u8]]) -> Result<(Vec<u8>, bool, bool), ChunkedError> {
        let mut decoder = ChunkedDecoder::new();
        let mut out = Vec::new();
        for read in reads {
            decoder.feed(read, &mut out)?;
        }
        Ok((out, decoder.is_done(), decoder.has_extra()))
    }

    #[test]
    fn whole_body_in_one_read() {
        let body = encode(&[b"data: a\n\n", b"data: [DONE]\n\n"], "");
        assert_eq!(
            decode_all(&[&body]).unwrap(),
            (b"data: a\n\ndata: [DONE]\n\n".to_vec(), true, false)
        );
    }

    #[test]
    fn extensions_trailers_uppercase_hex_and_bare_lf() {
        let body = b"A;name=value\r\n0123456789\r\n4\n abc\n0\r\nx-trailer: 1\r\n\r\n";
        assert_eq!(decode_all(&[body]).unwrap(), (b"0123456789 abc".to_vec(), true, false));
    }

    #[test]
    fn not_done_until_the_trailers_end() {
        let (out, done, _) = decode_all(&[b"2\r\nok\r\n0\r\n"]).unwrap();
        assert_eq!((out.as_slice(), done), (&b"ok"[..], false));
    }

    #[test]
    fn bytes_after_the_end_are_flagged() {
        let (_, done, extra) = decode_all(&[b"0\r\n\r\nHTTP/1.1"]).unwrap();
        assert!(done && extra);
    }

    #[test]
    fn malformed_framing_is_an_error_with_its_offset() {
        assert_eq!(
            decode_all(&[b"2\r\nokX"]).unwrap_err(),
            ChunkedError {
                message: "a chunk's payload is not followed by CRLF",
                offset: 5
            }
        );
        assert_eq!(
            decode_all(&[b"zz\r\n"]).unwrap_err().message,
            "malformed chunk-size line"
        );
        assert_eq!(decode_all(&[b"\r\n"]).unwrap_err().message, "malformed chunk-size line");
        assert_eq!(
            decode_all(&[b"-1\r\n"]).unwrap_err().message,
            "malformed chunk-size line"
        );
        assert_eq!(
            decode_all(&[b"11111111111111111\r\n"]).unwrap_err().message,
            "malformed chunk-size line"
        );
        let long = vec![b'1'; MAX_LINE + 1];
        assert_eq!(
            decode_all(&[&long]).unwrap_err().message,
            "chunk-size or trailer line too long"
        );
        let (head, tail) = long.split_at(10);
        assert_eq!(
            decode_all(&[head, tail]).unwrap_err().message,
            "chunk-size or trailer line too long"
        );
    }

    proptest! {
        #[test]
        fn any_split_gives_the_payload(
            pieces in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..300), 0..20),
            cuts in proptest::collection::vec(any::<usize>(), 0..12),
        ) {
            let refs: Vec<&[u8]> = pieces.iter().map(Vec::as_slice).collect();
            let body = encode(&refs, "trailer: x\r\n");
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (body.len() + 1)).collect();
            cuts.sort_unstable();
            let mut reads = Vec::new();
            let mut last = 0;
            for cut in cuts.into_iter().chain([body.len()]) {
                reads.push(&body[last..cut]);
                last = cut;
            }
            let (out, done, extra) = decode_all(&reads).unwrap();
            prop_assert_eq!(out, pieces.concat());
            prop_assert!(done && !extra);
        }

        #[test]
        fn one_byte_at_a_time(pieces in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..40), 0..6)) {
            let refs: Vec<&[u8]> = pieces.iter().map(Vec::as_slice).collect();
            let body = encode(&refs, "");
            let reads: Vec<&[u8]> = body.chunks(1).collect();
            let (out, done, _) = decode_all(&reads).unwrap();
            prop_assert_eq!(out, pieces.concat());
            prop_assert!(done);
        }
    }
}
