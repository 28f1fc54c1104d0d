//! [`RespConnection`]: the smallest Redis client the bench needs — send one command, read one
//! reply — over one TCP connection.
//!
//! Why our own: the bench makes GET, SET, WAIT, AUTH and PING and nothing else, one request at
//! a time per connection (no pipelining, so a request's latency is its own). A full Redis crate
//! would bring a second async stack for that; this is a writer and a reply parser.
//!
//! Promises:
//! - Commands go out as RESP arrays of bulk strings, which every RESP server accepts (Redis,
//!   and ringcache's RESP endpoint).
//! - A reply is read whole: simple strings, errors, integers, bulk strings, nulls (RESP2 and
//!   RESP3's `_`) and arrays (whose elements are read and dropped).
//! - After any error of [`RespError::Io`] or [`RespError::Protocol`] the connection is in an
//!   unknown state: the caller drops it and connects again.

use thiserror::Error;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufStream};
use tokio::net::TcpStream;

#[derive(Debug, Error)]
pub enum RespError {
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("malformed reply: {0}")]
    Protocol(String),
}

/// One reply, with arrays reduced to their length.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    Simple(String),
    /// The server's error line, e.g. `ERR unknown command`.
    Error(String),
    Integer(i64),
    Bulk(Vec<u8>),
    Null,
    /// An array of this many elements (their contents are not kept).
    Array(usize),
}

pub struct RespConnection {
    stream: BufStream<TcpStream>,
    command: Vec<u8>,
    line: Vec<u8>,
}

impl RespConnection {
    /// Connects to `addr` (`host:port`) with Nagle's algorithm off.
    pub async fn connect(addr: &str) -> Result<RespConnection, RespError> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(RespConnection {
            stream: BufStream::new(stream),
            command: Vec::with_capacity(256),
            line: Vec::with_capacity(64),
        })
    }

    /// Sends `args` as one command and reads its reply.
    pub async fn command(&mut self, args: &[&[u8]]) -> Result<Reply, RespError> {
        encode(args, &mut self.command);
        self.stream.write_all(&self.command).await?;
        self.stream.flush().await?;
        self.read_reply().await
    }

    async fn read_reply(&mut self) -> Result<Reply, RespError> {
        let first = self.read_one().await?;
        // Arrays (and RESP3 maps, sets, pushes) are walked, not kept: count what is left.
        let mut pending = match first {
            Reply::Array(n) => n,
            _ => return Ok(first),
        };
        while pending > 0 {
            pending -= 1;
            if let Reply::Array(n) = self.read_one().await? {
                pending += n;
            }
        }
        Ok(first)
    }

    /// One element; an aggregate's header only.
    async fn read_one(&mut self) -> Result<Reply, RespError> {
        self.line.clear();
        let n = self.stream.read_until(b'\n', &mut self.line).await?;
        if n == 0 {
            return Err(RespError::Io(std::io::ErrorKind::UnexpectedEof.into()));
        }
        let Some(body) = self.line.strip_suffix(b"\r\n") else {
            return Err(RespError::Protocol("a line without CRLF".into()));
        };
        let (&kind, rest) = body
            .split_first()
            .ok_or_else(|| RespError::Protocol("an empty line".into()))?;
        let text = || String::from_utf8_lossy(rest).into_owned();
        let number = || -> Result<i64, RespError> {
            std::str::from_utf8(rest)
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| RespError::Protocol(format!("not a number: {}", text())))
        };
        Ok(match kind {
            b'+' => Reply::Simple(text()),
            b'-' => Reply::Error(text()),
            b':' => Reply::Integer(number()?),
            b'_' => Reply::Null,
            b'$' => match number()? {
                -1 => Reply::Null,
                len if len >= 0 => {
                    let mut data = vec![0u8; len as usize + 2];
                    self.stream.read_exact(&mut data).await?;
                    if !data.ends_with(b"\r\n") {
                        return Err(RespError::Protocol("a bulk string without CRLF".into()));
                    }
                    data.truncate(len as usize);
                    Reply::Bulk(data)
                }
                len => return Err(RespError::Protocol(format!("bulk length {len}"))),
            },
            b'*' | b'~' | b'>' => match number()? {
                -1 => Reply::Null,
                n if n >= 0 => Reply::Array(n as usize),
                n => return Err(RespError::Protocol(format!("array length {n}"))),
            },
            // A map's length counts pairs.
            b'%' => Reply::Array(2 * number()?.max(0) as usize),
            other => {
                return Err(RespError::Protocol(format!(
                    "unknown reply type {:?}",
                    other as char
                )))
            }
        })
    }
}

/// `args` as a RESP array of bulk strings, into `out` (cleared first).
pub fn encode(args: &[&[u8]], out: &mut Vec<u8>) {
    use std::io::Write;
    out.clear();
    write!(out, "*{}\r\n", args.len()).expect("writing into a Vec");
    for arg in args {
        write!(out, "${}\r\n", arg.len()).expect("writing into a Vec");
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // the fake server is a spawned task
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    #[test]
    fn commands_are_arrays_of_bulk_strings() {
        let mut out = Vec::new();
        encode(&[b"SET", b"k", b"v\r\n"], &mut out);
        assert_eq!(out, b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$3\r\nv\r\n\r\n");
    }

    /// A fake server that answers each command with the next canned reply.
    #[tokio::test]
    async fn every_kind_of_reply_is_read_whole() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let replies: &[&[u8]] = &[
            b"+OK\r\n",
            b"-ERR wrong\r\n",
            b":3\r\n",
            b"$5\r\nhe\r\no\r\n",
            b"$-1\r\n",
            b"*2\r\n$1\r\na\r\n*1\r\n:1\r\n",
            b"_\r\n",
            b"+after\r\n",
        ];
        let server = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            for reply in replies {
                let _ = socket.read(&mut buf).await.unwrap();
                socket.write_all(reply).await.unwrap();
            }
        });
        let mut conn = RespConnection::connect(&addr).await.unwrap();
        let mut got = Vec::new();
        for _ in 0..replies.len() {
            got.push(conn.command(&[b"PING"]).await.unwrap());
        }
        assert_eq!(
            got,
            vec![
                Reply::Simple("OK".into()),
                Reply::Error("ERR wrong".into()),
                Reply::Integer(3),
                Reply::Bulk(b"he\r\no".to_vec()),
                Reply::Null,
                Reply::Array(2),
                Reply::Null,
                Reply::Simple("after".into()),
            ]
        );
        server.await.unwrap();
    }
}
