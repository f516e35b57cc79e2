//! The router's secrets (its upstream keys, its clients' keys, the encryption key) masked in what an upstream
//! says back: an upstream's error message can echo the `Authorization` it was sent, and the writer passes
//! such messages on to the client (the `error` event, `response.failed`) and into the stored response.
//!
//! An error message reaches the writer whole (the SSE decoder joins an event split across reads), so a
//! secret split across upstream reads is masked too.

use std::borrow::Cow;

use memchr::memmem::Finder;

/// What a secret becomes.
pub const MASK: &str = "[redacted]";

/// Secrets shorter than this are not masked: they would mask ordinary words (a configured key is far longer).
pub const MIN_SECRET_LEN: usize = 8;

/// A set of secrets to mask, made once per process and shared by every response's writer.
#[derive(Debug, Default)]
pub struct Secrets {
    finders: Vec<Finder<'static>>,
}

impl Secrets {
    /// The secrets of at least [`MIN_SECRET_LEN`] bytes among `secrets` (duplicates dropped).
    pub fn new<I, S>(secrets: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut kept: Vec<String> = Vec::new();
        for secret in secrets {
            let secret = secret.as_ref();
            if secret.len() >= MIN_SECRET_LEN && !kept.iter().any(|k| k == secret) {
                kept.push(secret.to_owned());
            }
        }
        // Longest first: a secret that contains another is masked whole.
        kept.sort_by_key(|s| std::cmp::Reverse(s.len()));
        Self {
            finders: kept.iter().map(|s| Finder::new(s.as_bytes()).into_owned()).collect(),
        }
    }

    /// How many secrets are masked.
    pub fn len(&self) -> usize {
        self.finders.len()
    }

    pub fn is_empty(&self) -> bool {
        self.finders.is_empty()
    }

    /// `text` with every occurrence of every secret replaced by [`MASK`] (borrowed when there is none).
    pub fn mask<'a>(&self, text: &'a str) -> Cow<'a, str> {
        let mut text = Cow::Borrowed(text);
        for finder in &self.finders {
            if finder.find(text.as_bytes()).is_none() {
                continue;
            }
            let needle = finder.needle().len();
            let mut out = String::with_capacity(text.len());
            let mut at = 0;
            for start in finder.find_iter(text.as_bytes()) {
                if start < at {
                    continue; // (overlapping occurrences: the first masks both)
                }
                out.push_str(&text[at..start]);
                out.push_str(MASK);
                at = start + needle;
            }
            out.push_str(&text[at..]);
            text = Cow::Owned(out);
        }
        text
    }

    /// `text` masked in place (no allocation when there is nothing to mask).
    pub fn mask_string(&self, text: &mut String) {
        if let Cow::Owned(masked) = self.mask(text) {
            *text = masked;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_every_occurrence_and_keeps_the_rest() {
        let secrets = Secrets::new(["sk-canary-0123456789", "short", ""]);
        assert_eq!(secrets.len(), 1, "short and empty secrets are not masked");
        assert_eq!(
            secrets.mask("bad key sk-canary-0123456789 (Bearer sk-canary-0123456789)"),
            "bad key [redacted] (Bearer [redacted])"
        );
        assert!(matches!(secrets.mask("nothing to see"), Cow::Borrowed(_)));
    }

    #[test]
    fn a_secret_inside_another_is_masked_with_it() {
        let secrets = Secrets::new(["abcdefgh", "xxabcdefghyy"]);
        assert_eq!(
            secrets.mask("key xxabcdefghyy and abcdefgh"),
            "key [redacted] and [redacted]"
        );
    }

    #[test]
    fn unicode_around_a_secret_stays_whole() {
        let secrets = Secrets::new(["sk-été-secret"]);
        assert_eq!(secrets.mask("🚀sk-été-secret🚀"), "🚀[redacted]🚀");
    }
}
