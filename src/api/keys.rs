//! Keys in requests: keys are arbitrary bytes, carried percent-encoded, in one path segment
//! or, when too long for a URL, in the [`KEY_HEADER`] header.
//!
//! The server decodes `/v1/kv/{key}` from the raw path itself (not through a `String`
//! extractor) so that keys that are not UTF-8 work; clients encode every byte outside the
//! RFC 3986 unreserved set (`A-Z a-z 0-9 - . _ ~`).
//!
//! # Promises
//! - One key, one spelling per byte: a `%` must be followed by two hex digits, or the key is
//!   refused ([`BadKeyEncoding`], a 400). `%+1` used to decode like `%01` (`from_str_radix`
//!   accepts a sign), giving one key two spellings.
//! - Every key up to the documented limit (64 KiB by default) can be sent. A URL holds at most
//!   65,534 bytes (the `http` crate's limit, answered `414` past it), and a percent-encoded
//!   binary key takes three bytes per byte, so URLs topped out near 21 KB: a longer key goes
//!   in the `x-key` header of a request to `/v1/kv` (no key in the path), which hyper reads up
//!   to its ~400 KB header buffer. [`fits_in_url`] says which to use; the Rust client chooses
//!   for itself.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC};
use thiserror::Error;

/// The header that carries a key too long for the URL (percent-encoded like the path).
pub const KEY_HEADER: &str = "x-key";

/// The longest encoded key a client should put in a URL; longer ones go in [`KEY_HEADER`].
/// Leaves room under the 65,534-byte URL limit for the path prefix and a query string.
pub const MAX_KEY_IN_URL: usize = 60_000;

/// Every byte but RFC 3986's unreserved characters is encoded.
const KEY_ENCODE_SET: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

#[derive(Debug, Error, PartialEq, Eq)]
#[error("malformed percent-encoding in the key: every '%' must be followed by two hex digits")]
pub struct BadKeyEncoding;

/// Decodes a percent-encoded key, refusing a `%` not followed by two hex digits (the
/// `percent-encoding` crate alone would keep such a `%` as it is).
pub fn percent_decode(s: &str) -> Result<Vec<u8>, BadKeyEncoding> {
    let bytes = s.as_bytes();
    for (i, _) in bytes.iter().enumerate().filter(|(_, b)| **b == b'%') {
        match bytes.get(i + 1..i + 3) {
            Some([a, b]) if a.is_ascii_hexdigit() && b.is_ascii_hexdigit() => {}
            _ => return Err(BadKeyEncoding),
        }
    }
    Ok(percent_encoding::percent_decode(bytes).collect())
}

/// Encodes every byte outside the unreserved set as `%XX` (upper-case hex).
pub fn percent_encode(key: &[u8]) -> String {
    percent_encoding::percent_encode(key, KEY_ENCODE_SET).to_string()
}

/// Whether an encoded key may go in a URL, or must go in [`KEY_HEADER`].
pub fn fits_in_url(encoded: &str) -> bool {
    encoded.len() <= MAX_KEY_IN_URL
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_any_bytes() {
        let key: Vec<u8> = (0..=255u8).collect();
        assert_eq!(percent_decode(&percent_encode(&key)).unwrap(), key);
        assert_eq!(percent_decode("a%2Fb").unwrap(), b"a/b");
        assert_eq!(percent_decode("a%2fb").unwrap(), b"a/b");
        assert_eq!(percent_encode(b"a-b.c_d~e f/"), "a-b.c_d~e%20f%2F");
        assert!(percent_decode("bad%2").is_err());
        assert!(percent_decode("bad%zz").is_err());
        assert!(percent_decode("%").is_err());
    }

    #[test]
    fn a_signed_escape_is_refused_not_read_as_another_byte() {
        assert_eq!(percent_decode("%+1"), Err(BadKeyEncoding));
        assert_eq!(percent_decode("%-1"), Err(BadKeyEncoding));
        assert_eq!(percent_decode("a%+Fb"), Err(BadKeyEncoding));
        assert_eq!(percent_decode("%01").unwrap(), vec![1]);
    }
}
