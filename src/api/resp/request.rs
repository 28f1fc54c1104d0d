//! Reading client requests off a connection's byte buffer: RESP arrays of bulk strings (what
//! client libraries send) and inline commands (what `redis-cli` in a pipe and telnet send),
//! incrementally and within bounds.
//!
//! # Promises
//! - [`RequestParser::parse`] takes a complete request off the front of the buffer, leaves an
//!   incomplete one where it is (asking for more bytes), or names what is malformed; it never
//!   panics and never reserves memory a request has not proven it needs (a claimed length only
//!   reserves what has arrived).
//! - Bounds, from [`Limits`]: a bulk string's length, an array's element count, an inline
//!   line's length (and a header line's). Redis's own (`proto-max-bulk-len`, 64 KiB inline)
//!   are the anchor; ours follow the peer's `--max-value-bytes`.
//! - A client that has not authenticated, on a peer with a client token, gets Redis's
//!   unauthenticated limits (10 arguments, 16 KiB each), so a stranger cannot make the peer
//!   buffer megabytes before being told `NOAUTH`.
//! - Errors read like Redis's (`Protocol error: invalid bulk length`): the connection answers
//!   `-ERR Protocol error: …` and closes, since nothing after a malformed frame can be trusted.
//! - An incomplete request remembers how many bytes it needs at least, so a large value
//!   arriving in many reads is not re-scanned on each one.

use bytes::{Bytes, BytesMut};
use thiserror::Error;

/// Redis's inline and header-line limit.
pub const MAX_INLINE_BYTES: usize = 64 * 1024;
/// Room a bulk string may take beyond the largest value: keys, options and causal context
/// tokens are bulk strings too (a token is at most 64 KiB).
pub const BULK_SLACK_BYTES: usize = 128 * 1024;
/// Redis's `1024 * 1024` limit on a request's argument count.
pub const MAX_ELEMENTS: usize = 1024 * 1024;

/// How large a request may be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub max_bulk_bytes: usize,
    pub max_elements: usize,
    pub max_inline_bytes: usize,
}

impl Limits {
    /// For a peer whose largest value is `max_value_bytes`.
    pub fn for_values(max_value_bytes: usize) -> Limits {
        Limits {
            max_bulk_bytes: max_value_bytes.saturating_add(BULK_SLACK_BYTES),
            max_elements: MAX_ELEMENTS,
            max_inline_bytes: MAX_INLINE_BYTES,
        }
    }

    /// Redis's limits for a client that has not authenticated yet.
    pub fn unauthenticated() -> Limits {
        Limits {
            max_bulk_bytes: 16 * 1024,
            max_elements: 10,
            max_inline_bytes: 16 * 1024,
        }
    }
}

/// A malformed request. The texts are Redis's, after `Protocol error: `.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum ProtocolError {
    #[error("invalid multibulk length")]
    InvalidMultibulkLength,
    #[error("invalid bulk length")]
    InvalidBulkLength,
    #[error("expected '$', got '{}'", char::from(*.0))]
    ExpectedBulk(u8),
    #[error("too big inline request")]
    InlineTooLong,
    #[error("too big mbulk count string")]
    LineTooLong,
    #[error("unbalanced quotes in request")]
    UnbalancedQuotes,
    #[error("expected CRLF after bulk data")]
    MissingCrlf,
    #[error("unauthenticated multibulk length")]
    UnauthenticatedMultibulk,
    #[error("unauthenticated bulk length")]
    UnauthenticatedBulk,
    #[error("invalid integer")]
    InvalidInteger,
    #[error("invalid boolean")]
    InvalidBoolean,
    #[error("invalid double")]
    InvalidDouble,
    #[error("invalid UTF-8 in a simple string")]
    InvalidUtf8,
    #[error("unexpected type byte {0:#04x}")]
    UnexpectedType(u8),
    #[error("frames nested too deep")]
    TooDeep,
}

/// One connection's request reader.
#[derive(Debug)]
pub struct RequestParser {
    limits: Limits,
    /// Whether the unauthenticated limits apply on top of `limits`.
    unauthenticated: bool,
    /// The buffer length below which the pending request certainly is still incomplete.
    wait_for: usize,
}

/// Where a parsed request's arguments are: ranges of the consumed bytes (a RESP array, taken
/// without copying) or owned words (an inline line, unquoted).
enum Parsed {
    Ranges(Vec<std::ops::Range<usize>>),
    Words(Vec<Vec<u8>>),
}

impl RequestParser {
    pub fn new(limits: Limits, unauthenticated: bool) -> RequestParser {
        RequestParser {
            limits,
            unauthenticated,
            wait_for: 0,
        }
    }

    /// Lifts (or puts back) the unauthenticated limits.
    pub fn set_unauthenticated(&mut self, unauthenticated: bool) {
        self.unauthenticated = unauthenticated;
    }

    fn effective(&self) -> Limits {
        if !self.unauthenticated {
            return self.limits;
        }
        let strict = Limits::unauthenticated();
        Limits {
            max_bulk_bytes: self.limits.max_bulk_bytes.min(strict.max_bulk_bytes),
            max_elements: self.limits.max_elements.min(strict.max_elements),
            max_inline_bytes: self.limits.max_inline_bytes.min(strict.max_inline_bytes),
        }
    }

    /// Takes one request off the front of `buf`: `Ok(Some(args))` (empty for a blank line or
    /// an empty array, which Redis ignores), `Ok(None)` when more bytes are needed.
    pub fn parse(&mut self, buf: &mut BytesMut) -> Result<Option<Vec<Bytes>>, ProtocolError> {
        if buf.is_empty() || buf.len() < self.wait_for {
            return Ok(None);
        }
        let parsed = if buf[0] == b'*' {
            self.multibulk(buf)?
        } else {
            self.inline(buf)?
        };
        match parsed {
            Err(wait_for) => {
                self.wait_for = wait_for;
                Ok(None)
            }
            Ok((used, Parsed::Ranges(ranges))) => {
                self.wait_for = 0;
                let taken = buf.split_to(used).freeze();
                Ok(Some(ranges.into_iter().map(|r| taken.slice(r)).collect()))
            }
            Ok((used, Parsed::Words(words))) => {
                self.wait_for = 0;
                let _ = buf.split_to(used);
                Ok(Some(words.into_iter().map(Bytes::from).collect()))
            }
        }
    }

    /// `*N\r\n` then N `$len\r\ndata\r\n`. `Err(n)` inside: incomplete, needs `n` bytes at least.
    #[allow(clippy::type_complexity)]
    fn multibulk(&self, buf: &[u8]) -> Result<Result<(usize, Parsed), usize>, ProtocolError> {
        let limits = self.effective();
        let mut at = 1;
        let Some(count) = header_line(buf, &mut at, ProtocolError::InvalidMultibulkLength)? else {
            return Ok(Err(buf.len() + 1));
        };
        if count > MAX_ELEMENTS as i64 {
            return Err(ProtocolError::InvalidMultibulkLength);
        }
        if count > limits.max_elements as i64 {
            return Err(if self.unauthenticated {
                ProtocolError::UnauthenticatedMultibulk
            } else {
                ProtocolError::InvalidMultibulkLength
            });
        }
        if count <= 0 {
            return Ok(Ok((at, Parsed::Ranges(Vec::new()))));
        }
        let count = count as usize;
        // Each argument takes at least 6 bytes (`$0\r\n\r\n`).
        let mut ranges = Vec::with_capacity(count.min(buf.len() / 6 + 1));
        for _ in 0..count {
            let Some(&tag) = buf.get(at) else {
                return Ok(Err(buf.len() + 1));
            };
            if tag != b'$' {
                return Err(ProtocolError::ExpectedBulk(tag));
            }
            at += 1;
            let Some(len) = header_line(buf, &mut at, ProtocolError::InvalidBulkLength)? else {
                return Ok(Err(buf.len() + 1));
            };
            if len < 0 || len as u64 > self.limits.max_bulk_bytes as u64 {
                return Err(ProtocolError::InvalidBulkLength);
            }
            if len as u64 > limits.max_bulk_bytes as u64 {
                return Err(ProtocolError::UnauthenticatedBulk);
            }
            let len = len as usize;
            if buf.len() < at + len + 2 {
                return Ok(Err(at + len + 2));
            }
            if &buf[at + len..at + len + 2] != b"\r\n" {
                return Err(ProtocolError::MissingCrlf);
            }
            ranges.push(at..at + len);
            at += len + 2;
        }
        Ok(Ok((at, Parsed::Ranges(ranges))))
    }

    /// A line of words separated by spaces, with Redis's quoting (`"a b"`, `'c'`, `\n`, `\x41`).
    #[allow(clippy::type_complexity)]
    fn inline(&self, buf: &[u8]) -> Result<Result<(usize, Parsed), usize>, ProtocolError> {
        let limits = self.effective();
        let window = &buf[..buf.len().min(limits.max_inline_bytes + 1)];
        let Some(newline) = window.iter().position(|b| *b == b'\n') else {
            if buf.len() > limits.max_inline_bytes {
                return Err(ProtocolError::InlineTooLong);
            }
            return Ok(Err(buf.len() + 1));
        };
        let mut line = &buf[..newline];
        if line.last() == Some(&b'\r') {
            line = &line[..line.len() - 1];
        }
        let words = split_args(line)?;
        if words.len() > limits.max_elements {
            return Err(if self.unauthenticated {
                ProtocolError::UnauthenticatedMultibulk
            } else {
                ProtocolError::InvalidMultibulkLength
            });
        }
        Ok(Ok((newline + 1, Parsed::Words(words))))
    }
}

/// A `<integer>\r\n` header after its type byte; `None` until its CRLF has arrived.
fn header_line(
    buf: &[u8],
    at: &mut usize,
    invalid: ProtocolError,
) -> Result<Option<i64>, ProtocolError> {
    let rest = &buf[*at..];
    let window = &rest[..rest.len().min(32)];
    let Some(end) = window.iter().position(|b| *b == b'\r') else {
        if rest.len() >= 32 {
            return Err(ProtocolError::LineTooLong);
        }
        return Ok(None);
    };
    let Some(&next) = rest.get(end + 1) else {
        return Ok(None);
    };
    if next != b'\n' {
        return Err(invalid);
    }
    let n = std::str::from_utf8(&rest[..end])
        .ok()
        .and_then(|s| s.parse::<i64>().ok())
        .ok_or(invalid)?;
    *at += end + 2;
    Ok(Some(n))
}

/// Redis's `sdssplitargs`: words split on whitespace; double quotes take escapes (`\n`, `\r`,
/// `\t`, `\b`, `\a`, `\\`, `\"`, `\xHH`), single quotes take `\'`; a closing quote must be
/// followed by a space or the end.
pub fn split_args(line: &[u8]) -> Result<Vec<Vec<u8>>, ProtocolError> {
    let mut words = Vec::new();
    let mut i = 0;
    loop {
        while i < line.len() && line[i].is_ascii_whitespace() {
            i += 1;
        }
        if i == line.len() {
            return Ok(words);
        }
        let mut word = Vec::new();
        match line[i] {
            b'"' => {
                i += 1;
                loop {
                    let Some(&c) = line.get(i) else {
                        return Err(ProtocolError::UnbalancedQuotes);
                    };
                    if c == b'"' {
                        i += 1;
                        break;
                    }
                    if c == b'\\' && i + 1 < line.len() {
                        let hex = line
                            .get(i + 2..i + 4)
                            .filter(|h| line[i + 1] == b'x' && h.iter().all(u8::is_ascii_hexdigit));
                        if let Some(h) = hex {
                            let text = std::str::from_utf8(h).expect("hex digits are ASCII");
                            word.push(u8::from_str_radix(text, 16).expect("two hex digits"));
                            i += 4;
                            continue;
                        }
                        word.push(match line[i + 1] {
                            b'n' => b'\n',
                            b'r' => b'\r',
                            b't' => b'\t',
                            b'b' => 0x08,
                            b'a' => 0x07,
                            other => other,
                        });
                        i += 2;
                    } else {
                        word.push(c);
                        i += 1;
                    }
                }
                if line.get(i).is_some_and(|c| !c.is_ascii_whitespace()) {
                    return Err(ProtocolError::UnbalancedQuotes);
                }
            }
            b'\'' => {
                i += 1;
                loop {
                    let Some(&c) = line.get(i) else {
                        return Err(ProtocolError::UnbalancedQuotes);
                    };
                    if c == b'\'' {
                        i += 1;
                        break;
                    }
                    if c == b'\\' && line.get(i + 1) == Some(&b'\'') {
                        word.push(b'\'');
                        i += 2;
                    } else {
                        word.push(c);
                        i += 1;
                    }
                }
                if line.get(i).is_some_and(|c| !c.is_ascii_whitespace()) {
                    return Err(ProtocolError::UnbalancedQuotes);
                }
            }
            _ => {
                while i < line.len() && !line[i].is_ascii_whitespace() {
                    word.push(line[i]);
                    i += 1;
                }
            }
        }
        words.push(word);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parser() -> RequestParser {
        RequestParser::new(Limits::for_values(1024), false)
    }

    fn strs(args: &[Bytes]) -> Vec<&str> {
        args.iter()
            .map(|a| std::str::from_utf8(a).unwrap())
            .collect()
    }

    #[test]
    fn pipelined_arrays_and_inline_lines_come_off_in_order() {
        let mut buf = BytesMut::from(
            &b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\nPING\r\n\r\nSET a \"b c\\n\"\r\n*1\r\n$4\r\nPI"[..],
        );
        let mut p = parser();
        assert_eq!(strs(&p.parse(&mut buf).unwrap().unwrap()), ["GET", "k"]);
        assert_eq!(strs(&p.parse(&mut buf).unwrap().unwrap()), ["PING"]);
        assert!(p.parse(&mut buf).unwrap().unwrap().is_empty());
        assert_eq!(
            strs(&p.parse(&mut buf).unwrap().unwrap()),
            ["SET", "a", "b c\n"]
        );
        assert_eq!(p.parse(&mut buf).unwrap(), None);
        buf.extend_from_slice(b"NG\r\n");
        assert_eq!(strs(&p.parse(&mut buf).unwrap().unwrap()), ["PING"]);
        assert!(buf.is_empty());
    }

    #[test]
    fn malformed_requests_name_their_fault_as_redis_does() {
        let cases: &[(&[u8], ProtocolError)] = &[
            (b"*x\r\n", ProtocolError::InvalidMultibulkLength),
            (b"*1\r\n+PING\r\n", ProtocolError::ExpectedBulk(b'+')),
            (b"*1\r\n$-5\r\n", ProtocolError::InvalidBulkLength),
            (b"*1\r\n$999999999\r\n", ProtocolError::InvalidBulkLength),
            (b"*1\r\n$1\r\nab\r\n", ProtocolError::MissingCrlf),
            (b"*2000000\r\n", ProtocolError::InvalidMultibulkLength),
            (b"SET \"a\r\n", ProtocolError::UnbalancedQuotes),
            (b"SET \"a\"b\r\n", ProtocolError::UnbalancedQuotes),
        ];
        for (bytes, expected) in cases {
            let mut buf = BytesMut::from(*bytes);
            assert_eq!(
                parser().parse(&mut buf).as_ref(),
                Err(expected),
                "{bytes:?}"
            );
        }
        let mut long = BytesMut::from(&vec![b'a'; MAX_INLINE_BYTES + 1][..]);
        assert_eq!(parser().parse(&mut long), Err(ProtocolError::InlineTooLong));
        assert_eq!(
            ProtocolError::ExpectedBulk(b'+').to_string(),
            "expected '$', got '+'"
        );
    }

    #[test]
    fn strangers_get_the_unauthenticated_limits() {
        let mut p = RequestParser::new(Limits::for_values(1 << 20), true);
        let mut many = BytesMut::from(&b"*11\r\n"[..]);
        assert_eq!(
            p.parse(&mut many),
            Err(ProtocolError::UnauthenticatedMultibulk)
        );
        let mut big = BytesMut::from(&b"*2\r\n$4\r\nAUTH\r\n$100000\r\n"[..]);
        assert_eq!(p.parse(&mut big), Err(ProtocolError::UnauthenticatedBulk));
        p.set_unauthenticated(false);
        let mut big = BytesMut::from(&b"*2\r\n$4\r\nAUTH\r\n$100000\r\n"[..]);
        assert_eq!(p.parse(&mut big), Ok(None));
    }

    #[test]
    fn a_large_value_is_not_rescanned_on_every_read() {
        let mut p = parser();
        let mut buf = BytesMut::from(&b"*1\r\n$1000\r\n"[..]);
        assert_eq!(p.parse(&mut buf), Ok(None));
        assert_eq!(p.wait_for, 11 + 1002);
    }

    proptest! {
        #[test]
        fn any_split_of_a_pipeline_gives_the_same_requests(
            requests in proptest::collection::vec(proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..20), 1..5), 1..5),
            cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..4),
        ) {
            let mut bytes = Vec::new();
            for args in &requests {
                bytes.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
                for a in args {
                    bytes.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
                    bytes.extend_from_slice(a);
                    bytes.extend_from_slice(b"\r\n");
                }
            }
            let mut points: Vec<usize> = cuts.iter().map(|c| c.index(bytes.len())).collect();
            points.push(bytes.len());
            points.sort();
            let mut p = parser();
            let mut buf = BytesMut::new();
            let mut got = Vec::new();
            let mut from = 0;
            for to in points {
                buf.extend_from_slice(&bytes[from..to]);
                from = to;
                while let Some(args) = p.parse(&mut buf).unwrap() {
                    got.push(args.iter().map(|a| a.to_vec()).collect::<Vec<_>>());
                }
            }
            prop_assert_eq!(got, requests);
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512), auth in any::<bool>()) {
            let mut p = RequestParser::new(Limits::for_values(256), auth);
            let mut buf = BytesMut::from(&bytes[..]);
            while let Ok(Some(_)) = p.parse(&mut buf) {}
        }
    }
}
