//! [`Http1Connection`]: one plain-HTTP/1.1 connection owned by one bench worker, for the
//! ringcache target over `http://`.
//!
//! Why not the pooled [`Client`](crate::client::Client): a load generator shares the machine
//! with what it measures, so its own cost per request shows up in the figures. The pooled
//! client parses a URL, checks a connection out of a shared pool and serialises a query per
//! request; a worker that owns its connection and writes a ready path skips all of it (as
//! `wrk` does). HTTPS, and `--ring` routing, keep the pooled client.
//!
//! Promises:
//! - Requests are exactly what the pooled client sends for a read or a blind overwrite
//!   (`GET /v1/kv/{key}?r=…`, `PUT /v1/kv/{key}?overwrite=true&w=…`), with the token if any.
//! - The connection's driver task ends when the connection is dropped.

// A worker's connection is driven by a spawned task (clippy.toml's rule is for the core).
#![allow(clippy::disallowed_methods)]

use crate::api::keys;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{HeaderValue, AUTHORIZATION, HOST};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use thiserror::Error;
use tokio::net::TcpStream;

#[derive(Debug, Error)]
pub enum Http1Error {
    #[error("connect: {0}")]
    Connect(std::io::Error),
    #[error("http: {0}")]
    Http(#[from] hyper::Error),
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
}

/// One open HTTP/1.1 connection; one request at a time.
pub struct Http1Connection {
    sender: SendRequest<Full<Bytes>>,
    driver: tokio::task::JoinHandle<()>,
    path: String,
}

impl Drop for Http1Connection {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

impl Http1Connection {
    pub async fn connect(endpoint: &Http1Endpoint) -> Result<Http1Connection, Http1Error> {
        let stream = TcpStream::connect(&endpoint.addr)
            .await
            .map_err(Http1Error::Connect)?;
        stream.set_nodelay(true).map_err(Http1Error::Connect)?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(Http1Error::Http)?;
        let driver = tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(Http1Connection {
            sender,
            driver,
            path: String::with_capacity(128),
        })
    }

    /// Whether the connection can take another request (a closed one must be replaced).
    pub fn is_closed(&self) -> bool {
        self.sender.is_closed()
    }

    /// `GET` (value `None`) or overwriting `PUT` of `key`; the answer's status.
    pub async fn send(
        &mut self,
        endpoint: &Http1Endpoint,
        key: &[u8],
        value: Option<Bytes>,
    ) -> Result<StatusCode, Http1Error> {
        let encoded = keys::percent_encode(key);
        if !keys::fits_in_url(&encoded) {
            return Err(Http1Error::Request("key too long for a URL".into()));
        }
        self.path.clear();
        self.path.push_str("/v1/kv/");
        self.path.push_str(&encoded);
        let (method, body) = match value {
            None => {
                self.path.push_str(&endpoint.read_query);
                (Method::GET, Bytes::new())
            }
            Some(value) => {
                self.path.push_str(&endpoint.write_query);
                (Method::PUT, value)
            }
        };
        let mut request = Request::builder()
            .method(method)
            .uri(self.path.as_str())
            .header(HOST, endpoint.host.clone());
        if let Some(auth) = &endpoint.authorization {
            request = request.header(AUTHORIZATION, auth.clone());
        }
        let request = request
            .body(Full::new(body))
            .map_err(|e| Http1Error::Request(e.to_string()))?;
        self.sender.ready().await?;
        let response = self.sender.send_request(request).await?;
        let status = response.status();
        // Read the body whole, so the connection is ready for the next request.
        response.into_body().collect().await?;
        Ok(status)
    }
}

#[cfg(test)]
mod tests {
    use super::Http1Endpoint;

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
    }
}
