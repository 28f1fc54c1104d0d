//! [`Http1Connection`]: one plain-HTTP/1.1 connection owned by one bench worker, for the
//! ringcache target over `http://`.
//!
//! Why not a client library: a load generator shares the machine with what it measures, so
//! its own cost per request shows up in the figures. The pooled
//! [`Client`](crate::client::Client) parses a URL, checks a connection out of a shared pool
//! and serialises a query per request; hyper's connection API drives each connection from a
//! task of its own, so every request goes from the worker to that task and back. A worker
//! that owns its socket writes a ready-made request in one system call and parses the
//! answer's head with `httparse` (hyper's own parser), as `wrk` does. HTTPS, and `--ring`
//! routing, keep the pooled client.
//!
//! Promises:
//! - Requests are exactly what the pooled client sends for a read or a blind overwrite
//!   (`GET /v1/kv/{key}?r=…`, `PUT /v1/kv/{key}?overwrite=true&w=…` with a `Content-Length`),
//!   with the token if any.
//! - An answer is read whole before the next request goes out: its body by `Content-Length`,
//!   chunked, or to the connection's end; none for 204 and 304; interim 1xx heads skipped.
//! - After `Connection: close`, an HTTP/1.0 answer without keep-alive, or any error once the
//!   request has started out, the connection [is closed](Http1Connection::is_closed): the
//!   caller drops it and connects again.
//! - A kept connection the server has closed since its last answer (the peer closes idle ones,
//!   and stops) fails its next request with [`Http1Error::Stale`] before any of the answer came:
//!   the caller may send the request again on a new connection (a read and a blind overwrite
//!   are safe to repeat).
//! - What a server sends is bounded before it is believed: a head over 64 KiB or with more
//!   than 64 headers, a chunk-size line over 1 KiB, is a protocol error, not an unbounded read.

use crate::api::keys;
use axum::http::HeaderValue;
use bytes::{Buf, BytesMut};
use thiserror::Error;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The longest answer head read before giving up on it.
const MAX_HEAD_BYTES: usize = 64 * 1024;
/// The most header fields an answer's head may carry.
const MAX_HEADERS: usize = 64;
/// The longest chunk-size (or trailer) line read before giving up on it.
const MAX_LINE_BYTES: usize = 1024;

#[derive(Debug, Error)]
pub enum Http1Error {
    #[error("connect: {0}")]
    Connect(std::io::Error),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("malformed answer: {0}")]
    Protocol(String),
    /// The connection had answered before, and ended before any byte of this answer.
    #[error("the server had closed the connection")]
    Stale,
    #[error("bad request: {0}")]
    Request(String),
}

/// What every request to one peer shares: its address, `Host`, token and quorum queries.
#[derive(Clone, Debug)]
pub struct Http1Endpoint {
    /// `host:port`.
    pub addr: String,
    host: HeaderValue,
    authorization: Option<HeaderValue>,
    /// `?r=…` or empty.
    read_query: String,
    /// `?overwrite=true[&w=…]`.
    write_query: String,
}

impl Http1Endpoint {
    /// From an `http://host:port` URL; `None` for anything else (HTTPS, a path).
    pub fn parse(
        url: &str,
        token: Option<&str>,
        r: Option<&str>,
        w: Option<&str>,
    ) -> Result<Option<Http1Endpoint>, Http1Error> {
        let Some(addr) = url.strip_prefix("http://") else {
            return Ok(None);
        };
        let addr = addr.trim_end_matches('/');
        if addr.contains('/') || addr.is_empty() {
            return Ok(None);
        }
        // `HeaderValue` refuses CR, LF and other controls: nothing here can split the head.
        let bad = |what: &str| Http1Error::Request(format!("{what} is not a valid header"));
        let authorization = token
            .map(|t| HeaderValue::from_str(&format!("Bearer {t}")).map_err(|_| bad("the token")))
            .transpose()?;
        let query = |value: Option<&str>| value.map(|v| keys::percent_encode(v.as_bytes()));
        let read_query = query(r).map(|r| format!("?r={r}")).unwrap_or_default();
        let write_query = match query(w) {
            Some(w) => format!("?overwrite=true&w={w}"),
            None => "?overwrite=true".into(),
        };
        Ok(Some(Http1Endpoint {
            addr: addr.to_string(),
            host: HeaderValue::from_str(addr).map_err(|_| bad("the host"))?,
            authorization,
            read_query,
            write_query,
        }))
    }

    /// The whole request, head and body, into `out` (cleared first): a `GET` of the key
    /// (`value` `None`) or an overwriting `PUT` of `value`. `encoded_key` is percent-encoded.
    fn write_request(&self, out: &mut Vec<u8>, encoded_key: &str, value: Option<&[u8]>) {
        out.clear();
        let (method, query): (&[u8], &str) = match value {
            None => (b"GET", &self.read_query),
            Some(_) => (b"PUT", &self.write_query),
        };
        out.extend_from_slice(method);
        out.extend_from_slice(b" /v1/kv/");
        out.extend_from_slice(encoded_key.as_bytes());
        out.extend_from_slice(query.as_bytes());
        out.extend_from_slice(b" HTTP/1.1\r\nhost: ");
        out.extend_from_slice(self.host.as_bytes());
        if let Some(authorization) = &self.authorization {
            out.extend_from_slice(b"\r\nauthorization: ");
            out.extend_from_slice(authorization.as_bytes());
        }
        if let Some(value) = value {
            out.extend_from_slice(b"\r\ncontent-length: ");
            out.extend_from_slice(value.len().to_string().as_bytes());
        }
        out.extend_from_slice(b"\r\n\r\n");
        if let Some(value) = value {
            out.extend_from_slice(value);
        }
    }
}

/// How an answer's body ends (RFC 9112 §6.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BodyLength {
    None,
    Exactly(usize),
    Chunked,
    UntilClose,
}

/// What the caller needs from an answer's head.
#[derive(Debug)]
struct Head {
    status: u16,
    body: BodyLength,
    /// The server closes the connection after this answer.
    closes: bool,
}

impl Head {
    fn of(response: &httparse::Response<'_, '_>) -> Result<Head, Http1Error> {
        let status = response
            .code
            .ok_or_else(|| Http1Error::Protocol("no status".into()))?;
        let mut length: Option<usize> = None;
        // The last transfer coding, when the answer names any.
        let mut chunked: Option<bool> = None;
        let (mut says_close, mut says_keep_alive) = (false, false);
        for header in response.headers.iter() {
            let value = std::str::from_utf8(header.value)
                .map_err(|_| Http1Error::Protocol(format!("{} is not text", header.name)))?;
            if header.name.eq_ignore_ascii_case("content-length") {
                let digits = value.trim();
                let parsed = digits
                    .parse::<usize>()
                    .ok()
                    .filter(|_| digits.bytes().all(|b| b.is_ascii_digit()))
                    .ok_or_else(|| Http1Error::Protocol(format!("content-length {value:?}")))?;
                if length.is_some_and(|known| known != parsed) {
                    return Err(Http1Error::Protocol("two content-lengths".into()));
                }
                length = Some(parsed);
            } else if header.name.eq_ignore_ascii_case("transfer-encoding") {
                chunked = Some(
                    value
                        .rsplit(',')
                        .next()
                        .is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked")),
                );
            } else if header.name.eq_ignore_ascii_case("connection") {
                for token in value.split(',').map(str::trim) {
                    says_close |= token.eq_ignore_ascii_case("close");
                    says_keep_alive |= token.eq_ignore_ascii_case("keep-alive");
                }
            }
        }
        // HTTP/1.1 keeps the connection unless told to close; HTTP/1.0 closes unless told to
        // keep it.
        let http_1_0 = response.version == Some(0);
        // Both framings at once is a sign of smuggling: use the transfer coding, then close.
        let closes =
            says_close || (http_1_0 && !says_keep_alive) || (chunked.is_some() && length.is_some());
        let body = match (status, chunked) {
            (101, _) => return Err(Http1Error::Protocol("the server switched protocols".into())),
            (100..=199 | 204 | 304, _) => BodyLength::None,
            (_, Some(true)) => BodyLength::Chunked,
            // A transfer coding other than chunked last: the body runs to the connection's end.
            (_, Some(false)) => BodyLength::UntilClose,
            (_, None) => length.map_or(BodyLength::UntilClose, BodyLength::Exactly),
        };
        Ok(Head {
            status,
            closes: closes || body == BodyLength::UntilClose,
            body,
        })
    }
}

/// One open HTTP/1.1 connection; one request at a time.
pub struct Http1Connection {
    stream: TcpStream,
    /// The request being sent, kept to reuse its allocation.
    request: Vec<u8>,
    /// What the server sent that has not been consumed yet.
    input: BytesMut,
    closed: bool,
    /// Whether the connection has answered a request before.
    answered_before: bool,
    /// Whether any byte of the current request's answer has come.
    heard: bool,
}

impl Http1Connection {
    pub async fn connect(endpoint: &Http1Endpoint) -> Result<Http1Connection, Http1Error> {
        let stream = TcpStream::connect(&endpoint.addr)
            .await
            .map_err(Http1Error::Connect)?;
        stream.set_nodelay(true).map_err(Http1Error::Connect)?;
        Ok(Http1Connection {
            stream,
            request: Vec::with_capacity(256),
            input: BytesMut::with_capacity(4096),
            closed: false,
            answered_before: false,
            heard: false,
        })
    }

    /// Whether the connection can take another request (a closed one must be replaced).
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// `GET` (value `None`) or overwriting `PUT` of `key`; the answer's status, once the
    /// answer has been read whole.
    pub async fn send(
        &mut self,
        endpoint: &Http1Endpoint,
        key: &[u8],
        value: Option<&[u8]>,
    ) -> Result<u16, Http1Error> {
        let encoded = keys::percent_encode(key);
        if !keys::fits_in_url(&encoded) {
            return Err(Http1Error::Request("key too long for a URL".into()));
        }
        if self.closed {
            return Err(Http1Error::Io(std::io::ErrorKind::NotConnected.into()));
        }
        // Closed until the answer has been read whole: an error on the way leaves the
        // connection in an unknown state.
        self.closed = true;
        self.heard = false;
        endpoint.write_request(&mut self.request, &encoded, value);
        match self.exchange().await {
            Err(Http1Error::Io(e)) if self.answered_before && !self.heard && ended(&e) => {
                Err(Http1Error::Stale)
            }
            Err(e) => Err(e),
            Ok(head) => {
                self.closed = head.closes;
                self.answered_before = true;
                Ok(head.status)
            }
        }
    }

    /// Writes the request and reads its answer whole; the answer's head.
    async fn exchange(&mut self) -> Result<Head, Http1Error> {
        self.stream.write_all(&self.request).await?;
        let head = loop {
            let head = self.read_head().await?;
            if !(100..200).contains(&head.status) {
                break head;
            }
        };
        self.skip_body(head.body).await?;
        Ok(head)
    }

    /// Reads and consumes the next answer head.
    async fn read_head(&mut self) -> Result<Head, Http1Error> {
        loop {
            if !self.input.is_empty() {
                let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
                let mut response = httparse::Response::new(&mut headers);
                let parsed = response
                    .parse(&self.input)
                    .map_err(|e| Http1Error::Protocol(e.to_string()))?;
                if let httparse::Status::Complete(length) = parsed {
                    let head = Head::of(&response)?;
                    self.input.advance(length);
                    return Ok(head);
                }
            }
            if self.input.len() >= MAX_HEAD_BYTES {
                return Err(Http1Error::Protocol("an answer head over 64 KiB".into()));
            }
            self.fill().await?;
        }
    }

    /// Reads and drops a body of the given length.
    async fn skip_body(&mut self, length: BodyLength) -> Result<(), Http1Error> {
        match length {
            BodyLength::None => Ok(()),
            BodyLength::Exactly(n) => self.skip(n).await,
            BodyLength::Chunked => loop {
                let line = self.read_line().await?;
                let size = line.split(|&b| b == b';').next().unwrap_or_default();
                let size = std::str::from_utf8(size)
                    .ok()
                    .and_then(|s| usize::from_str_radix(s.trim(), 16).ok())
                    .ok_or_else(|| {
                        Http1Error::Protocol(format!(
                            "chunk size {:?}",
                            String::from_utf8_lossy(&line)
                        ))
                    })?;
                if size == 0 {
                    // Trailers, if any, up to the empty line.
                    while !self.read_line().await?.is_empty() {}
                    return Ok(());
                }
                self.skip(size).await?;
                if !self.read_line().await?.is_empty() {
                    return Err(Http1Error::Protocol("a chunk without CRLF".into()));
                }
            },
            BodyLength::UntilClose => {
                self.input.clear();
                while self.stream.read_buf(&mut self.input).await? > 0 {
                    self.input.clear();
                }
                Ok(())
            }
        }
    }

    /// Consumes `n` bytes of input, reading them as needed.
    async fn skip(&mut self, mut n: usize) -> Result<(), Http1Error> {
        loop {
            let here = n.min(self.input.len());
            self.input.advance(here);
            n -= here;
            if n == 0 {
                return Ok(());
            }
            self.fill().await?;
        }
    }

    /// Consumes one CRLF-ended line and answers it without its CRLF.
    async fn read_line(&mut self) -> Result<Vec<u8>, Http1Error> {
        loop {
            if let Some(end) = self.input.windows(2).position(|w| w == b"\r\n") {
                let line = self.input.split_to(end + 2);
                return Ok(line[..end].to_vec());
            }
            if self.input.len() > MAX_LINE_BYTES {
                return Err(Http1Error::Protocol("a chunk line over 1 KiB".into()));
            }
            self.fill().await?;
        }
    }

    /// Reads more input; the connection's end is an error here.
    async fn fill(&mut self) -> Result<(), Http1Error> {
        self.input.reserve(4096);
        if self.stream.read_buf(&mut self.input).await? == 0 {
            return Err(Http1Error::Io(std::io::ErrorKind::UnexpectedEof.into()));
        }
        self.heard = true;
        Ok(())
    }
}

/// Whether an i/o error says the connection had ended (rather than, say, a timeout).
fn ended(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        UnexpectedEof | ConnectionReset | BrokenPipe | ConnectionAborted
    )
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // the fake server is a spawned task
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    #[test]
    fn only_plain_http_urls_take_the_lean_path() {
        let e = Http1Endpoint::parse("http://127.0.0.1:7070/", None, Some("quorum"), None)
            .unwrap()
            .unwrap();
        assert_eq!(e.addr, "127.0.0.1:7070");
        assert_eq!(e.read_query, "?r=quorum");
        assert_eq!(e.write_query, "?overwrite=true");
        let e = Http1Endpoint::parse("http://h:1", Some("t"), None, Some("2"))
            .unwrap()
            .unwrap();
        assert_eq!(e.write_query, "?overwrite=true&w=2");
        assert!(e.authorization.is_some());
        assert!(Http1Endpoint::parse("https://h:1", None, None, None)
            .unwrap()
            .is_none());
        assert!(Http1Endpoint::parse("http://h:1/base", None, None, None)
            .unwrap()
            .is_none());
        assert!(Http1Endpoint::parse("http://h:1", Some("a\r\nx: y"), None, None).is_err());
    }

    #[test]
    fn requests_are_whole_http_1_1_messages() {
        let e = Http1Endpoint::parse("http://h:1", Some("t"), Some("2"), Some("all"))
            .unwrap()
            .unwrap();
        let mut out = Vec::new();
        e.write_request(&mut out, "a%20b", None);
        assert_eq!(
            out,
            b"GET /v1/kv/a%20b?r=2 HTTP/1.1\r\nhost: h:1\r\nauthorization: Bearer t\r\n\r\n"
        );
        e.write_request(&mut out, "k", Some(b"v\r\n"));
        assert_eq!(
            out,
            b"PUT /v1/kv/k?overwrite=true&w=all HTTP/1.1\r\nhost: h:1\r\n\
              authorization: Bearer t\r\ncontent-length: 3\r\n\r\nv\r\n"
                .as_slice()
        );
        let mut head = [httparse::EMPTY_HEADER; 8];
        let mut parsed = httparse::Request::new(&mut head);
        assert_eq!(
            parsed.parse(&out).unwrap(),
            httparse::Status::Complete(out.len() - 3)
        );
    }

    /// A fake server that reads one request per answer and sends each answer in the given
    /// pieces; answers the requests it read.
    async fn serve(answers: Vec<Vec<&'static [u8]>>) -> (String, tokio::task::JoinHandle<usize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let server = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 4096];
            let mut requests = 0;
            for pieces in answers {
                if socket.read(&mut buf).await.unwrap() == 0 {
                    break;
                }
                requests += 1;
                for piece in pieces {
                    socket.write_all(piece).await.unwrap();
                    socket.flush().await.unwrap();
                    tokio::time::sleep(std::time::Duration::from_millis(2)).await;
                }
            }
            requests
        });
        (addr, server)
    }

    #[tokio::test]
    async fn every_framing_of_an_answer_is_read_whole() {
        let answers: Vec<Vec<&'static [u8]>> = vec![
            // A body by length, the head split mid-line and the body in two.
            vec![
                b"HTTP/1.1 200 OK\r\ncontent-le",
                b"ngth: 5\r\n\r\nhe",
                b"llo",
            ],
            // No body for 204 or 304, whatever they claim.
            vec![b"HTTP/1.1 204 No Content\r\ncontent-length: 5\r\n\r\n"],
            vec![b"HTTP/1.1 304 Not Modified\r\ncontent-length: 7\r\n\r\n"],
            // An interim answer, then a chunked body with an extension and a trailer.
            vec![
                b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 300 Multiple Choices\r\n",
                b"transfer-encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n",
                b"A\r\n0123456789\r\n0\r\ntrailer: t\r\n\r\n",
            ],
            // Then a 404 that closes the connection.
            vec![b"HTTP/1.1 404 Not Found\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}"],
        ];
        let (addr, server) = serve(answers).await;
        let endpoint = endpoint_at(&addr);
        let mut conn = Http1Connection::connect(&endpoint).await.unwrap();
        assert_eq!(conn.send(&endpoint, b"k", None).await.unwrap(), 200);
        assert_eq!(conn.send(&endpoint, b"k", Some(b"v")).await.unwrap(), 204);
        assert_eq!(conn.send(&endpoint, b"k", None).await.unwrap(), 304);
        assert_eq!(conn.send(&endpoint, b"k", None).await.unwrap(), 300);
        assert!(!conn.is_closed());
        assert!(conn.input.is_empty(), "nothing of an answer is left over");
        assert_eq!(conn.send(&endpoint, b"k", None).await.unwrap(), 404);
        assert!(conn.is_closed(), "connection: close is honoured");
        assert!(conn.send(&endpoint, b"k", None).await.is_err());
        assert_eq!(server.await.unwrap(), 5);
    }

    /// The plain endpoint of a fake server.
    fn endpoint_at(addr: &str) -> Http1Endpoint {
        Http1Endpoint::parse(&format!("http://{addr}"), None, None, None)
            .unwrap()
            .unwrap()
    }

    /// One request and its answer on a fresh connection; the status and whether it closed.
    async fn one(answer: &'static [u8]) -> (Result<u16, Http1Error>, bool) {
        let (addr, server) = serve(vec![vec![answer]]).await;
        let endpoint = endpoint_at(&addr);
        let mut conn = Http1Connection::connect(&endpoint).await.unwrap();
        let sent = conn.send(&endpoint, b"k", None).await;
        server.await.unwrap();
        (sent, conn.is_closed())
    }

    #[tokio::test]
    async fn how_long_a_connection_lives_follows_the_answer() {
        // HTTP/1.0 closes unless it asks to be kept; HTTP/1.1 is kept unless it says close.
        let (sent, closed) = one(b"HTTP/1.0 200 OK\r\ncontent-length: 0\r\n\r\n").await;
        assert_eq!((sent.unwrap(), closed), (200, true));
        let kept = b"HTTP/1.0 200 OK\r\nconnection: keep-alive\r\ncontent-length: 0\r\n\r\n";
        let (sent, closed) = one(kept).await;
        assert_eq!((sent.unwrap(), closed), (200, false));
        // No length: the body runs to the connection's end, which then is closed.
        let (sent, closed) = one(b"HTTP/1.1 200 OK\r\n\r\nall of it").await;
        assert_eq!((sent.unwrap(), closed), (200, true));
        // Both framings: the transfer coding wins, and the connection is not trusted again.
        let both =
            b"HTTP/1.1 200 OK\r\ncontent-length: 99\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n";
        let (sent, closed) = one(both).await;
        assert_eq!((sent.unwrap(), closed), (200, true));
        // A coding other than chunked last: to the end, whatever the length says.
        let gzip = b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\ncontent-length: 2\r\n\r\nabcdef";
        let (sent, closed) = one(gzip).await;
        assert_eq!((sent.unwrap(), closed), (200, true));
    }

    /// A kept connection that the server closed while it sat idle says so, rather than fail
    /// like a broken answer: the caller sends again on a new one.
    #[tokio::test]
    async fn a_connection_closed_while_idle_is_stale() {
        let (addr, server) =
            serve(vec![vec![b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"]]).await;
        let endpoint = endpoint_at(&addr);
        let mut conn = Http1Connection::connect(&endpoint).await.unwrap();
        assert_eq!(conn.send(&endpoint, b"k", None).await.unwrap(), 200);
        server.await.unwrap(); // and the server's end of the connection is gone
        let sent = conn.send(&endpoint, b"k", None).await;
        assert!(matches!(sent, Err(Http1Error::Stale)), "{sent:?}");
        assert!(conn.is_closed());
        // A fresh connection that ends before answering is an ordinary error.
        let (addr, server) = serve(vec![vec![]]).await;
        let endpoint = endpoint_at(&addr);
        let mut conn = Http1Connection::connect(&endpoint).await.unwrap();
        let sent = conn.send(&endpoint, b"k", None).await;
        assert!(matches!(sent, Err(Http1Error::Io(_))), "{sent:?}");
        server.await.unwrap();
    }

    #[tokio::test]
    async fn a_malformed_or_endless_answer_is_an_error_and_closes() {
        for answer in [
            b"HTTP/1.1 abc\r\n\r\n".as_slice(),
            b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\nx",
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n",
            // The connection ends before the body does.
            b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\nshort",
            b"HTTP/1.1 200 OK\r\ncontent-length: +5\r\n\r\nhello",
            b"HTTP/1.1 101 Switching Protocols\r\nupgrade: x\r\n\r\n",
        ] {
            let (sent, closed) = one(answer).await;
            assert!(
                sent.is_err(),
                "{:?} gave {sent:?}",
                String::from_utf8_lossy(answer)
            );
            assert!(closed);
        }
        // A chunk-size line that never ends stops at its bound rather than reading on.
        let endless = format!(
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n{}",
            "0".repeat(2 * MAX_LINE_BYTES)
        );
        let (sent, closed) = one(Box::leak(endless.into_bytes().into_boxed_slice())).await;
        assert!(
            matches!(&sent, Err(Http1Error::Protocol(why)) if why.contains("1 KiB")),
            "{sent:?}"
        );
        assert!(closed);
        // A head that never ends stops at its bound rather than reading on.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let server = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            let _ = socket.read(&mut buf).await.unwrap();
            let _ = socket.write_all(b"HTTP/1.1 200 OK\r\n").await;
            let filler = [b'a'; 8192];
            for _ in 0..(2 * MAX_HEAD_BYTES / filler.len()) {
                if socket.write_all(b"x-filler: ").await.is_err()
                    || socket.write_all(&filler).await.is_err()
                    || socket.write_all(b"\r\n").await.is_err()
                {
                    break;
                }
            }
        });
        let endpoint = endpoint_at(&addr);
        let mut conn = Http1Connection::connect(&endpoint).await.unwrap();
        let sent = conn.send(&endpoint, b"k", None).await;
        assert!(
            matches!(&sent, Err(Http1Error::Protocol(why)) if why.contains("64 KiB")),
            "{sent:?}"
        );
        drop(conn);
        server.await.unwrap();
    }
}
