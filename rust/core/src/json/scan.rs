//! Byte scans shared by the JSON readers and writers.

/// The first `"` or `\` (or, with `CONTROLS`, byte below 0x20) at or after `from`; `b.len()` if
/// none. Eight bytes at a time (SWAR): the strings of a chunk or an event are mostly keys, ids and
/// short deltas, where `memchr2`'s set-up costs more than the search itself (translating the bench
/// stream of `benches/translate.rs`: ~900 fewer instructions per chunk than with `memchr2`).
#[inline]
pub(crate) fn find_string_end<const CONTROLS: bool>(b: &[u8], from: usize) -> usize {
    scan_plain::<CONTROLS, false>(b, from).0
}

/// [`find_string_end`], and with `ASCII` whether the bytes it passed over were all ASCII (`false`
/// without): the Python builder makes an ASCII `str` by a copy, skipping CPython's UTF-8 decoder
/// (`ascii_decode` + `unicode_decode_utf8` were 4.5% of `ResponseEventParser.feed`), and learning it
/// here saves a second pass over the text.
#[inline(always)]
#[allow(clippy::inline_always)] // the string loop of every reader, instantiated in other crates
pub(crate) fn scan_plain<const CONTROLS: bool, const ASCII: bool>(b: &[u8], from: usize) -> (usize, bool) {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    // The high bit of each byte below `n`: exact for the lowest such byte, which is all we use.
    let below = |x: u64, n: u8| x.wrapping_sub(ONES * u64::from(n)) & !x & HIGHS;
    let mut high = 0u64;
    let mut i = from;
    while let Some(word) = b.get(i..i + 8) {
        let w = u64::from_le_bytes(word.try_into().expect("8 bytes"));
        let mut hits = below(w ^ (ONES * u64::from(b'"')), 1) | below(w ^ (ONES * u64::from(b'\\')), 1);
        if CONTROLS {
            hits |= below(w, 0x20);
        }
        if hits != 0 {
            let plain = hits.trailing_zeros() / 8;
            if ASCII {
                high |= w & HIGHS & ((1u64 << (plain * 8)) - 1);
            }
            return (i + plain as usize, ASCII && high == 0);
        }
        if ASCII {
            high |= w & HIGHS;
        }
        i += 8;
    }
    while let Some(&c) = b.get(i) {
        if c == b'"' || c == b'\\' || (CONTROLS && c < 0x20) {
            break;
        }
        if ASCII {
            high |= u64::from(c & 0x80);
        }
        i += 1;
    }
    (i, ASCII && high == 0)
}

/// The character a one-letter JSON escape stands for (`n` → `'\n'`): `None` for `u` (four hex
/// digits follow) and for any byte that is not an escape.
#[inline]
pub fn short_escape(byte: u8) -> Option<char> {
    Some(match byte {
        b'"' => '"',
        b'\\' => '\\',
        b'/' => '/',
        b'b' => '\u{8}',
        b'f' => '\u{c}',
        b'n' => '\n',
        b'r' => '\r',
        b't' => '\t',
        _ => return None,
    })
}

/// The value of one hex digit.
#[inline]
pub(crate) fn hex_digit(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

/// The UTF-16 unit of a `\u` escape's four hex digits (`None` if there are fewer or one is not hex).
#[inline]
pub fn hex4(digits: &[u8]) -> Option<u16> {
    let digits = digits.get(..4)?;
    digits
        .iter()
        .try_fold(0u16, |n, &d| Some(n << 4 | u16::from(hex_digit(d)?)))
}

#[cfg(test)]
mod tests {
    use super::{find_string_end, scan_plain};
    use proptest::prelude::*;

    fn naive(b: &[u8], from: usize, controls: bool) -> usize {
        b[from..]
            .iter()
            .position(|&c| c == b'"' || c == b'\\' || (controls && c < 0x20))
            .map_or(b.len(), |k| from + k)
    }

    #[test]
    fn finds_the_first_stop_byte() {
        assert_eq!(find_string_end::<false>(b"abc\"def", 0), 3);
        assert_eq!(find_string_end::<false>(b"abcdefghij\\k\"", 2), 10);
        assert_eq!(find_string_end::<false>(b"abc\tdef", 0), 7);
        assert_eq!(find_string_end::<true>(b"abc\tdef", 0), 3);
        assert_eq!(find_string_end::<true>(b"\x7f\x80\xff\x20\x21\x1f", 0), 5);
        assert_eq!(find_string_end::<true>(b"", 0), 0);
    }

    proptest! {
        #[test]
        fn matches_a_byte_loop(bytes in proptest::collection::vec(prop_oneof![any::<u8>(), Just(b'a'), Just(b'"'), Just(b'\\'), Just(0x1f), Just(0x20), Just(0x21), Just(0x5b), Just(0x5d)], 0..64), from in 0usize..64) {
            let from = from.min(bytes.len());
            prop_assert_eq!(find_string_end::<true>(&bytes, from), naive(&bytes, from, true));
            prop_assert_eq!(find_string_end::<false>(&bytes, from), naive(&bytes, from, false));
            let (end, ascii) = scan_plain::<true, true>(&bytes, from);
            prop_assert_eq!(end, naive(&bytes, from, true));
            prop_assert_eq!(ascii, bytes[from..end].is_ascii());
        }
    }
}
