//! Object ids: a type prefix, the time in milliseconds and 144 random bits from the OS CSPRNG, so ids
//! can't be guessed or enumerated (the spec asks for at least 128 bits; stored objects are looked up by
//! id) and sort by creation time, as UUIDv7s do. The time first makes a store's inserts land at the end of
//! its indexes instead of at random pages: the sqlite store's writer spent a third less CPU per stored
//! response, and its longest stall fell from ~30 ms to ~4 ms (`python/ferroute/store/sqlite.py`).
//! `python/ferroute/store/items.py` makes its ids the same way.

use std::time::{SystemTime, UNIX_EPOCH};

/// Hex characters of the millisecond timestamp (48 bits: until the year 10889).
const TIME_HEX: usize = 12;
/// Random bytes per id: 18 bytes = 144 bits; with the time, 48 hex characters after the prefix.
const RANDOM_BYTES: usize = 18;

/// A new id such as `resp_019ad8…` (`prefix` without the underscore).
///
/// # Panics
/// If the operating system's random source fails, which `getrandom` treats as unrecoverable.
pub fn new_id(prefix: &str) -> String {
    let mut random = [0u8; RANDOM_BYTES];
    getrandom::fill(&mut random).expect("the OS random number generator failed");
    // (A clock before 1970 reads as 0: the id is still unique by its random part.)
    let millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let mut id = String::with_capacity(prefix.len() + 1 + TIME_HEX + RANDOM_BYTES * 2);
    id.push_str(prefix);
    id.push('_');
    for shift in (0..TIME_HEX).rev() {
        id.push(char::from(HEX[((millis >> (4 * shift)) & 0x0f) as usize]));
    }
    for byte in random {
        id.push(char::from(HEX[usize::from(byte >> 4)]));
        id.push(char::from(HEX[usize::from(byte & 0x0f)]));
    }
    id
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Output indexes that get an id derived from their response's (`item_id`); inputs take the rest.
pub const OUTPUT_ITEMS: usize = 0x8000;

/// The id of output item `index` of the response `response_id`: `prefix_`, the response id's 48 hex
/// characters and `index` in 4 more, so a store can tell which response holds the item without an index
/// of its own (`python/ferroute/store/items.py`, `response_of`; input items take `OUTPUT_ITEMS` and up). A
/// response id of another shape (given by a caller), or an index past `OUTPUT_ITEMS`, gets a `new_id`.
pub fn item_id(prefix: &str, response_id: &str, index: usize) -> String {
    let hex = match response_id.strip_prefix("resp_") {
        Some(hex) if hex.len() == TIME_HEX + 2 * RANDOM_BYTES && hex.bytes().all(|b| HEX.contains(&b)) => hex,
        _ => return new_id(prefix),
    };
    if index >= OUTPUT_ITEMS {
        return new_id(prefix);
    }
    let mut id = String::with_capacity(prefix.len() + 1 + hex.len() + 4);
    id.push_str(prefix);
    id.push('_');
    id.push_str(hex);
    for shift in (0..4).rev() {
        id.push(char::from(HEX[(index >> (4 * shift)) & 0x0f]));
    }
    id
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn shape_and_entropy() {
        let id = new_id("resp");
        assert!(id.starts_with("resp_"));
        assert_eq!(id.len(), 5 + 48);
        assert!(id[5..].bytes().all(|b| b.is_ascii_hexdigit()));
    }

    #[test]
    fn ids_start_with_the_time_and_sort_by_it() {
        let before = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis();
        let first = new_id("resp");
        std::thread::sleep(std::time::Duration::from_millis(2));
        let second = new_id("resp");
        let after = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis();
        let millis = u128::from_str_radix(&first[5..5 + TIME_HEX], 16).unwrap();
        assert!(before <= millis && millis <= after);
        assert!(first < second);
    }

    #[test]
    fn item_ids_carry_their_response_id() {
        let response = new_id("resp");
        assert_eq!(item_id("msg", &response, 0), format!("msg_{}0000", &response[5..]));
        assert_eq!(item_id("rs", &response, 0x1a), format!("rs_{}001a", &response[5..]));
        // Any other shape of response id, or an index past the outputs', gets a random id.
        for other in ["resp_123", "conv_1", &format!("resp_{}", "A".repeat(48))] {
            let (first, second) = (item_id("msg", other, 0), item_id("msg", other, 0));
            assert_eq!(first.len(), 4 + 48);
            assert_ne!(first, second);
        }
        assert_ne!(item_id("fc", &response, OUTPUT_ITEMS)[3..], response[5..]);
        assert_eq!(item_id("fc", &response, OUTPUT_ITEMS).len(), 3 + 48);
    }

    #[test]
    fn ids_do_not_repeat() {
        let ids: HashSet<String> = (0..10_000).map(|_| new_id("msg")).collect();
        assert_eq!(ids.len(), 10_000);
    }
}
