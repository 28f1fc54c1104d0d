//! One RESP value ([`Frame`]) and its encoding, in RESP2 or RESP3.
//!
//! A frame is a plain value: no socket, no command meaning. A reply is built once and encoded
//! for the protocol the connection speaks: RESP3's richer types (null, maps, sets, doubles,
//! booleans, push frames) fall back to what RESP2 clients expect (`$-1`, flat arrays, bulk
//! strings, integers), exactly as Redis does after `HELLO 2`.
//!
//! # Promises
//! - [`Frame::encode`] writes a frame that [`decode`] reads back as the same frame (in RESP3;
//!   in RESP2, as its RESP2 fallback). Tested by property below.
//! - [`decode`] never panics and never allocates more than the bytes it was given justify:
//!   aggregate lengths only reserve what the buffer could hold, nesting is bounded by
//!   [`MAX_DEPTH`], and every length is checked against [`Limits`].
//!
//! The server reads requests with the narrower `request::RequestParser` (arrays of bulk
//! strings, inline commands); [`decode`] reads any frame, for tests, fuzzing and clients.

use crate::api::resp::request::{Limits, ProtocolError};
use bytes::Bytes;

/// The deepest nesting [`decode`] accepts (replies nest two or three levels).
pub const MAX_DEPTH: usize = 32;

/// The protocol a connection speaks: RESP2 by default, RESP3 after `HELLO 3`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Resp2,
    Resp3,
}

impl Protocol {
    pub fn version(self) -> i64 {
        match self {
            Protocol::Resp2 => 2,
            Protocol::Resp3 => 3,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum Frame {
    /// `+OK`: a short status line without CR or LF.
    Simple(String),
    /// `-ERR message`: the first word is the error code clients match on.
    Error(String),
    Integer(i64),
    Bulk(Bytes),
    /// RESP3 `_`; RESP2 `$-1` (a nil bulk string).
    Null,
    Array(Vec<Frame>),
    /// RESP3 `%`; RESP2 a flat array of key, value, key, value…
    Map(Vec<(Frame, Frame)>),
    /// RESP3 `~`; RESP2 an array.
    Set(Vec<Frame>),
    /// RESP3 `,`; RESP2 a bulk string of the same text.
    Double(f64),
    /// RESP3 `#t`/`#f`; RESP2 the integers 1 and 0.
    Boolean(bool),
    /// RESP3 `>` (out-of-band data such as pub/sub messages); RESP2 an array.
    Push(Vec<Frame>),
}

impl Frame {
    pub fn ok() -> Frame {
        Frame::Simple("OK".into())
    }

    pub fn bulk(data: impl Into<Bytes>) -> Frame {
        Frame::Bulk(data.into())
    }

    /// An error reply; `message` starts with its code (`ERR`, `WRONGTYPE`, `NOAUTH`…).
    pub fn error(message: impl Into<String>) -> Frame {
        Frame::Error(message.into())
    }

    /// Appends this frame's bytes, as `protocol` spells it, to `out`.
    pub fn encode(&self, protocol: Protocol, out: &mut Vec<u8>) {
        let resp3 = protocol == Protocol::Resp3;
        match self {
            Frame::Simple(s) => line(out, b'+', one_line(s).as_bytes()),
            Frame::Error(s) => line(out, b'-', one_line(s).as_bytes()),
            Frame::Integer(n) => line(out, b':', n.to_string().as_bytes()),
            Frame::Bulk(data) => {
                line(out, b'$', data.len().to_string().as_bytes());
                out.extend_from_slice(data);
                out.extend_from_slice(b"\r\n");
            }
            Frame::Null if resp3 => out.extend_from_slice(b"_\r\n"),
            Frame::Null => out.extend_from_slice(b"$-1\r\n"),
            Frame::Array(items) => aggregate(out, b'*', items, protocol),
            Frame::Set(items) => aggregate(out, if resp3 { b'~' } else { b'*' }, items, protocol),
            Frame::Push(items) => aggregate(out, if resp3 { b'>' } else { b'*' }, items, protocol),
            Frame::Map(pairs) => {
                let count = if resp3 { pairs.len() } else { pairs.len() * 2 };
                line(
                    out,
                    if resp3 { b'%' } else { b'*' },
                    count.to_string().as_bytes(),
                );
                for (k, v) in pairs {
                    k.encode(protocol, out);
                    v.encode(protocol, out);
                }
            }
            Frame::Double(d) => {
                let text = double_text(*d);
                if resp3 {
                    line(out, b',', text.as_bytes());
                } else {
                    Frame::Bulk(Bytes::from(text)).encode(protocol, out);
                }
            }
            Frame::Boolean(b) if resp3 => {
                out.extend_from_slice(if *b { b"#t\r\n" } else { b"#f\r\n" })
            }
            Frame::Boolean(b) => line(out, b':', if *b { b"1" } else { b"0" }),
        }
    }

    /// This frame as a RESP2 client receives it (what [`decode`] gives back for RESP2 bytes).
    pub fn as_resp2(&self) -> Frame {
        match self {
            Frame::Null => Frame::Null,
            Frame::Array(items) | Frame::Set(items) | Frame::Push(items) => {
                Frame::Array(items.iter().map(Frame::as_resp2).collect())
            }
            Frame::Map(pairs) => Frame::Array(
                pairs
                    .iter()
                    .flat_map(|(k, v)| [k.as_resp2(), v.as_resp2()])
                    .collect(),
            ),
            Frame::Double(d) => Frame::Bulk(Bytes::from(double_text(*d))),
            Frame::Boolean(b) => Frame::Integer(i64::from(*b)),
            other => other.clone(),
        }
    }
}

/// Redis's spelling of a double: shortest round-trip digits, `inf`, `-inf`, `nan`.
fn double_text(d: f64) -> String {
    if d.is_nan() {
        "nan".into()
    } else if d.is_infinite() {
        if d > 0.0 {
            "inf".into()
        } else {
            "-inf".into()
        }
    } else {
        format!("{d}")
    }
}

/// A simple string or error cannot hold CR or LF: they are replaced by spaces, so a message
/// built from client input can never end the line early and smuggle in a second reply.
fn one_line(s: &str) -> std::borrow::Cow<'_, str> {
    if s.contains(['\r', '\n']) {
        s.replace(['\r', '\n'], " ").into()
    } else {
        s.into()
    }
}

fn line(out: &mut Vec<u8>, tag: u8, body: &[u8]) {
    out.push(tag);
    out.extend_from_slice(body);
    out.extend_from_slice(b"\r\n");
}

fn aggregate(out: &mut Vec<u8>, tag: u8, items: &[Frame], protocol: Protocol) {
    line(out, tag, items.len().to_string().as_bytes());
    for item in items {
        item.encode(protocol, out);
    }
}

/// Reads one frame of any type from the start of `buf`: `Ok(None)` while it is incomplete,
/// else the frame and the bytes it took.
pub fn decode(buf: &[u8], limits: &Limits) -> Result<Option<(Frame, usize)>, ProtocolError> {
    let mut at = 0;
    match decode_at(buf, &mut at, limits, 0)? {
        Some(frame) => Ok(Some((frame, at))),
        None => Ok(None),
    }
}

/// The line starting at `*at` (without CRLF), advancing past it; `None` if no CRLF yet.
fn read_line<'a>(
    buf: &'a [u8],
    at: &mut usize,
    limits: &Limits,
) -> Result<Option<&'a [u8]>, ProtocolError> {
    let rest = &buf[*at..];
    let window = &rest[..rest.len().min(limits.max_inline_bytes + 2)];
    match window.windows(2).position(|w| w == b"\r\n") {
        Some(end) => {
            *at += end + 2;
            Ok(Some(&rest[..end]))
        }
        None if rest.len() > limits.max_inline_bytes => Err(ProtocolError::LineTooLong),
        None => Ok(None),
    }
}

fn integer(text: &[u8]) -> Result<i64, ProtocolError> {
    std::str::from_utf8(text)
        .ok()
        .and_then(|s| s.parse::<i64>().ok())
        .ok_or(ProtocolError::InvalidInteger)
}

fn decode_at(
    buf: &[u8],
    at: &mut usize,
    limits: &Limits,
    depth: usize,
) -> Result<Option<Frame>, ProtocolError> {
    if depth > MAX_DEPTH {
        return Err(ProtocolError::TooDeep);
    }
    let Some(&tag) = buf.get(*at) else {
        return Ok(None);
    };
    let start = *at;
    *at += 1;
    let Some(body) = read_line(buf, at, limits)? else {
        *at = start;
        return Ok(None);
    };
    let text = || String::from_utf8(body.to_vec()).map_err(|_| ProtocolError::InvalidUtf8);
    let frame = match tag {
        b'+' => Frame::Simple(text()?),
        b'-' => Frame::Error(text()?),
        b':' => Frame::Integer(integer(body)?),
        b'_' if body.is_empty() => Frame::Null,
        b'#' => match body {
            b"t" => Frame::Boolean(true),
            b"f" => Frame::Boolean(false),
            _ => return Err(ProtocolError::InvalidBoolean),
        },
        b',' => Frame::Double(match body {
            b"inf" => f64::INFINITY,
            b"-inf" => f64::NEG_INFINITY,
            b"nan" => f64::NAN,
            _ => text()?
                .parse::<f64>()
                .map_err(|_| ProtocolError::InvalidDouble)?,
        }),
        b'$' => {
            let len = integer(body).map_err(|_| ProtocolError::InvalidBulkLength)?;
            if len == -1 {
                Frame::Null
            } else {
                let len = usize::try_from(len).map_err(|_| ProtocolError::InvalidBulkLength)?;
                if len > limits.max_bulk_bytes {
                    return Err(ProtocolError::InvalidBulkLength);
                }
                if buf.len() - *at < len + 2 {
                    *at = start;
                    return Ok(None);
                }
                let data = Bytes::copy_from_slice(&buf[*at..*at + len]);
                if &buf[*at + len..*at + len + 2] != b"\r\n" {
                    return Err(ProtocolError::MissingCrlf);
                }
                *at += len + 2;
                Frame::Bulk(data)
            }
        }
        b'*' | b'~' | b'>' | b'%' => {
            let count = integer(body).map_err(|_| ProtocolError::InvalidMultibulkLength)?;
            if count == -1 && tag == b'*' {
                return Ok(Some(Frame::Null));
            }
            let count =
                usize::try_from(count).map_err(|_| ProtocolError::InvalidMultibulkLength)?;
            let items = if tag == b'%' {
                count.saturating_mul(2)
            } else {
                count
            };
            if items > limits.max_elements {
                return Err(ProtocolError::InvalidMultibulkLength);
            }
            // Each element takes at least 3 bytes: reserve no more than the buffer could hold.
            let mut frames = Vec::with_capacity(items.min((buf.len() - *at) / 3));
            for _ in 0..items {
                match decode_at(buf, at, limits, depth + 1)? {
                    Some(f) => frames.push(f),
                    None => {
                        *at = start;
                        return Ok(None);
                    }
                }
            }
            match tag {
                b'*' => Frame::Array(frames),
                b'~' => Frame::Set(frames),
                b'>' => Frame::Push(frames),
                _ => {
                    let mut pairs = Vec::with_capacity(count);
                    let mut it = frames.into_iter();
                    while let (Some(k), Some(v)) = (it.next(), it.next()) {
                        pairs.push((k, v));
                    }
                    Frame::Map(pairs)
                }
            }
        }
        other => return Err(ProtocolError::UnexpectedType(other)),
    };
    Ok(Some(frame))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn encoded(frame: &Frame, protocol: Protocol) -> Vec<u8> {
        let mut out = Vec::new();
        frame.encode(protocol, &mut out);
        out
    }

    #[test]
    fn resp2_spells_resp3_types_as_redis_does() {
        let map = Frame::Map(vec![(Frame::bulk("a"), Frame::Integer(1))]);
        assert_eq!(encoded(&map, Protocol::Resp2), b"*2\r\n$1\r\na\r\n:1\r\n");
        assert_eq!(encoded(&map, Protocol::Resp3), b"%1\r\n$1\r\na\r\n:1\r\n");
        assert_eq!(encoded(&Frame::Null, Protocol::Resp2), b"$-1\r\n");
        assert_eq!(encoded(&Frame::Null, Protocol::Resp3), b"_\r\n");
        assert_eq!(encoded(&Frame::Boolean(true), Protocol::Resp2), b":1\r\n");
        assert_eq!(encoded(&Frame::Double(1.5), Protocol::Resp3), b",1.5\r\n");
        assert_eq!(
            encoded(&Frame::Double(1.5), Protocol::Resp2),
            b"$3\r\n1.5\r\n"
        );
        let push = Frame::Push(vec![Frame::bulk("message")]);
        assert_eq!(encoded(&push, Protocol::Resp3), b">1\r\n$7\r\nmessage\r\n");
        assert_eq!(encoded(&push, Protocol::Resp2), b"*1\r\n$7\r\nmessage\r\n");
    }

    #[test]
    fn a_status_line_cannot_smuggle_a_second_reply() {
        let frame = Frame::error("ERR bad\r\n+OK");
        assert_eq!(encoded(&frame, Protocol::Resp2), b"-ERR bad  +OK\r\n");
    }

    #[test]
    fn incomplete_input_asks_for_more_and_bad_input_is_refused() {
        let limits = Limits::for_values(1024);
        let full = encoded(
            &Frame::Array(vec![Frame::bulk("GET"), Frame::bulk("k")]),
            Protocol::Resp2,
        );
        for cut in 0..full.len() {
            assert_eq!(decode(&full[..cut], &limits), Ok(None), "cut at {cut}");
        }
        assert!(decode(&full, &limits).unwrap().is_some());
        assert!(decode(b"?\r\n", &limits).is_err());
        assert!(decode(b"$999999\r\n", &limits).is_err());
        assert!(decode(b"$1\r\nab\r\n", &limits).is_err());
        assert!(decode(b"*-2\r\n", &limits).is_err());
        let deep = "*1\r\n".repeat(MAX_DEPTH + 2);
        assert_eq!(
            decode(deep.as_bytes(), &limits),
            Err(ProtocolError::TooDeep)
        );
    }

    fn frames() -> impl Strategy<Value = Frame> {
        let leaf = prop_oneof![
            "[a-zA-Z0-9 ]{0,12}".prop_map(Frame::Simple),
            "[A-Z]{1,8} [a-z ]{0,12}".prop_map(Frame::Error),
            any::<i64>().prop_map(Frame::Integer),
            proptest::collection::vec(any::<u8>(), 0..32).prop_map(Frame::bulk),
            Just(Frame::Null),
            any::<bool>().prop_map(Frame::Boolean),
            (-1e12f64..1e12).prop_map(Frame::Double),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Frame::Array),
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Frame::Set),
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Frame::Push),
                proptest::collection::vec((inner.clone(), inner), 0..3).prop_map(Frame::Map),
            ]
        })
    }

    proptest! {
        #[test]
        fn every_frame_decodes_back_to_itself(frame in frames(), tail in proptest::collection::vec(any::<u8>(), 0..8)) {
            let limits = Limits::for_values(1024);
            for protocol in [Protocol::Resp2, Protocol::Resp3] {
                let mut bytes = encoded(&frame, protocol);
                let len = bytes.len();
                bytes.extend_from_slice(&tail);
                let (back, used) = decode(&bytes, &limits).unwrap().expect("complete");
                prop_assert_eq!(used, len);
                let expected = if protocol == Protocol::Resp3 { frame.clone() } else { frame.as_resp2() };
                prop_assert_eq!(back, expected);
            }
        }

        #[test]
        fn decoding_garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode(&bytes, &Limits::for_values(64));
        }
    }
}
