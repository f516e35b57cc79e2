//! Object ids: a type prefix and 192 random bits from the OS CSPRNG, so ids can't be guessed or
//! enumerated (the spec asks for at least 128 bits; stored objects are looked up by id).

/// Random bytes per id: 24 bytes = 192 bits, 48 hex characters after the prefix.
const RANDOM_BYTES: usize = 24;

/// A new id such as `resp_4f0c…` (`prefix` without the underscore).
///
/// # Panics
/// If the operating system's random source fails, which `getrandom` treats as unrecoverable.
pub fn new_id(prefix: &str) -> String {
    let mut random = [0u8; RANDOM_BYTES];
    getrandom::fill(&mut random).expect("the OS random number generator failed");
    let mut id = String::with_capacity(prefix.len() + 1 + RANDOM_BYTES * 2);
    id.push_str(prefix);
    id.push('_');
    for byte in random {
        id.push(char::from(HEX[usize::from(byte >> 4)]));
        id.push(char::from(HEX[usize::from(byte & 0x0f)]));
    }
    id
}

const HEX: &[u8; 16] = b"0123456789abcdef";

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
    fn ids_do_not_repeat() {
        let ids: HashSet<String> = (0..10_000).map(|_| new_id("msg")).collect();
        assert_eq!(ids.len(), 10_000);
    }
}
