//! Keys in URLs: keys are arbitrary bytes, carried percent-encoded in one path segment.
//!
//! The server decodes `/v1/kv/{key}` from the raw path itself (not through a `String`
//! extractor) so that keys that are not UTF-8 work; clients encode every byte outside the
//! RFC 3986 unreserved set.

use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
#[error("malformed percent-encoding in the key")]
pub struct BadKeyEncoding;

pub fn percent_decode(s: &str) -> Result<Vec<u8>, BadKeyEncoding> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3).ok_or(BadKeyEncoding)?;
            let hex = std::str::from_utf8(hex).map_err(|_| BadKeyEncoding)?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| BadKeyEncoding)?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Ok(out)
}

pub fn percent_encode(key: &[u8]) -> String {
    let mut out = String::with_capacity(key.len());
    for &b in key {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_any_bytes() {
        let key: Vec<u8> = (0..=255u8).collect();
        assert_eq!(percent_decode(&percent_encode(&key)).unwrap(), key);
        assert_eq!(percent_decode("a%2Fb").unwrap(), b"a/b");
        assert!(percent_decode("bad%2").is_err());
        assert!(percent_decode("bad%zz").is_err());
    }
}
