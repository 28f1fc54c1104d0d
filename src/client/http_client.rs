//! [`Client`]: get, put and delete with per-request quorums and causal contexts.

use crate::api::batch::{BatchOp, BatchRequest, BatchResponse, BatchResult};
use crate::api::http::{
    HotKeysBody, LocalStateBody, SiblingsBody, StatsBody, STALE_HEADER, TTL_HEADER,
};
use crate::api::{causal_context, keys};
use crate::client::stampede::{self, LoadError, LoadOptions};
use base64::Engine;
use std::time::Duration;
use thiserror::Error;

/// What a compare-and-set requires of the key (`Client::put_if`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Expected {
    /// No live value (`If-None-Match: *`): create-only.
    Absent,
    /// Some live value (`If-Match: *`).
    Present,
    /// Exactly the state this causal context token names (`If-Match: <token>`).
    Context(String),
}

/// What a compare-and-set did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CasOutcome {
    /// Written: the key's new causal context.
    Applied(String),
    /// The key did not meet the condition: its values and context as the round read them.
    NotApplied {
        values: Vec<Vec<u8>>,
        context: String,
    },
}

#[derive(Debug, Error)]
pub enum ClientError {
    #[error("request failed: {0}")]
    Transport(#[from] reqwest::Error),
    /// The server answered with an error status; `body` is its JSON error.
    #[error("server answered {status}: {body}")]
    Status { status: u16, body: String },
    #[error("unexpected response: {0}")]
    Protocol(String),
}

impl ClientError {
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// What a read returned. `context` is the opaque token to send back on the next write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadResult {
    /// One value or several siblings.
    Found {
        values: Vec<Vec<u8>>,
        context: String,
    },
    NotFound {
        context: Option<String>,
    },
}

impl ReadResult {
    pub fn context(&self) -> Option<&str> {
        match self {
            ReadResult::Found { context, .. } => Some(context),
            ReadResult::NotFound { context } => context.as_deref(),
        }
    }

    pub fn values(&self) -> &[Vec<u8>] {
        match self {
            ReadResult::Found { values, .. } => values,
            ReadResult::NotFound { .. } => &[],
        }
    }
}

/// A read with what a cache needs besides the value (`Client::get_cached`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedRead {
    pub read: ReadResult,
    /// Milliseconds the (single) value has left on the answering peer's clock; `None` for a
    /// value without expiry, siblings or no value. 0 for a stale value.
    pub ttl_ms: Option<u64>,
    /// Whether the value is past its expiry (served because the read allowed staleness).
    pub stale: bool,
}

/// What `ttl` found, as Redis's TTL reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ttl {
    Missing,
    /// A value without expiry.
    Persistent,
    ExpiresIn {
        ms: u64,
    },
}

#[derive(Debug, Clone, Default)]
pub struct WriteOptions {
    /// `one`, `quorum`, `all` or a number; the server's default when `None`.
    pub w: Option<String>,
    pub ttl_secs: Option<f64>,
    pub context: Option<String>,
    /// Without a context: replace what the coordinating replica has seen (Redis's `SET`)
    /// instead of adding a sibling (`?overwrite=true`).
    pub overwrite: bool,
}

#[derive(Clone)]
pub struct Client {
    base: String,
    http: reqwest::Client,
}

impl Client {
    /// `base` is a peer's HTTP URL, e.g. `http://127.0.0.1:7070`. Sends no client token.
    pub fn new(base: &str) -> Client {
        Self::with_token(base, None).expect("a client without a token always builds")
    }

    /// Like [`Client::new`], sending `Authorization: Bearer <token>` on every request when
    /// `token` is set (peers started with `--client-token` require it). Fails only for a
    /// token that cannot be an HTTP header value.
    pub fn with_token(base: &str, token: Option<&str>) -> Result<Client, ClientError> {
        Self::build(base, token, None)
    }

    /// Like [`Client::with_token`], for an `https://` peer whose certificate is signed by (or
    /// is) one of the PEM certificates in `trusted_pem`: the only roots trusted, so a peer with
    /// a self-signed certificate can be reached by handing the client that certificate.
    pub fn with_tls(
        base: &str,
        token: Option<&str>,
        trusted_pem: &[u8],
    ) -> Result<Client, ClientError> {
        let roots = reqwest::Certificate::from_pem_bundle(trusted_pem)?;
        if roots.is_empty() {
            return Err(ClientError::Protocol(
                "no PEM certificate to trust for TLS".into(),
            ));
        }
        Self::build(base, token, Some(roots))
    }

    fn build(
        base: &str,
        token: Option<&str>,
        roots: Option<Vec<reqwest::Certificate>>,
    ) -> Result<Client, ClientError> {
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(token) = token {
            let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))
                .map_err(|_| {
                    ClientError::Protocol("the client token is not a valid header value".into())
                })?;
            value.set_sensitive(true);
            headers.insert(reqwest::header::AUTHORIZATION, value);
        }
        let mut builder = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .default_headers(headers);
        for root in roots.into_iter().flatten() {
            builder = builder.add_root_certificate(root);
        }
        let http = builder.build()?;
        Ok(Client {
            base: base.trim_end_matches('/').to_string(),
            http,
        })
    }

    /// A request about `key` under `prefix` (`/v1/kv`, `/v1/local`): the key in the path, or
    /// for a key too long for a URL in the `x-key` header (see `api::keys`).
    fn key_request(
        &self,
        method: reqwest::Method,
        prefix: &str,
        key: &[u8],
    ) -> reqwest::RequestBuilder {
        let encoded = keys::percent_encode(key);
        if keys::fits_in_url(&encoded) {
            self.http
                .request(method, format!("{}{prefix}/{encoded}", self.base))
        } else {
            self.http
                .request(method, format!("{}{prefix}", self.base))
                .header(keys::KEY_HEADER, encoded)
        }
    }

    pub async fn get(&self, key: &[u8], r: Option<&str>) -> Result<ReadResult, ClientError> {
        self.session_get(key, r, None).await
    }

    /// A read that, given the `context` this client last saw for the key, never answers
    /// older than it (read-your-writes and monotonic reads at any `r`): the peer waits for a
    /// replica that covers it, or answers 503 if none can in time.
    pub async fn session_get(
        &self,
        key: &[u8],
        r: Option<&str>,
        context: Option<&str>,
    ) -> Result<ReadResult, ClientError> {
        Ok(self.read(key, r, context, None).await?.read)
    }

    /// A read that also reports the value's remaining time to live (`X-TTL-Ms`) and, with
    /// `stale_ok`, accepts a value expired less than that long ago when none is live
    /// (`?stale_ok=`; the peer keeps expired values only for its `--stale-window-ms`).
    pub async fn get_cached(
        &self,
        key: &[u8],
        r: Option<&str>,
        stale_ok: Option<Duration>,
    ) -> Result<CachedRead, ClientError> {
        self.read(key, r, None, stale_ok).await
    }

    async fn read(
        &self,
        key: &[u8],
        r: Option<&str>,
        context: Option<&str>,
        stale_ok: Option<Duration>,
    ) -> Result<CachedRead, ClientError> {
        let mut req = self.key_request(reqwest::Method::GET, "/v1/kv", key);
        if let Some(r) = r {
            req = req.query(&[("r", r)]);
        }
        if let Some(window) = stale_ok {
            req = req.query(&[("stale_ok", window.as_secs_f64().to_string())]);
        }
        if let Some(context) = context {
            req = req.header(causal_context::HEADER, context);
        }
        let response = req.send().await?;
        let ttl_ms = header(&response, TTL_HEADER).and_then(|ms| ms.parse().ok());
        let stale = header(&response, STALE_HEADER).as_deref() == Some("true");
        let read = read_result(response).await?;
        Ok(CachedRead {
            read,
            ttl_ms,
            stale,
        })
    }
}

/// The body of a GET's response as a [`ReadResult`].
async fn read_result(response: reqwest::Response) -> Result<ReadResult, ClientError> {
    let context = header(&response, causal_context::HEADER);
    match response.status().as_u16() {
        200 => Ok(ReadResult::Found {
            values: vec![response.bytes().await?.to_vec()],
            context: context.ok_or_else(|| ClientError::Protocol("200 without context".into()))?,
        }),
        300 => {
            let body: SiblingsBody = response.json().await?;
            let values = body
                .siblings
                .iter()
                .map(|s| base64::engine::general_purpose::STANDARD.decode(&s.value))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| ClientError::Protocol(e.to_string()))?;
            Ok(ReadResult::Found {
                values,
                context: body.context,
            })
        }
        404 => Ok(ReadResult::NotFound { context }),
        status => Err(ClientError::Status {
            status,
            body: response.text().await.unwrap_or_default(),
        }),
    }
}

impl Client {
    /// Writes `value`; returns the context that covers the write.
    pub async fn put(
        &self,
        key: &[u8],
        value: Vec<u8>,
        options: &WriteOptions,
    ) -> Result<String, ClientError> {
        let mut req = self
            .key_request(reqwest::Method::PUT, "/v1/kv", key)
            .body(value);
        req = apply_options(req, options);
        if options.overwrite {
            req = req.query(&[("overwrite", "true")]);
        }
        if let Some(ttl) = options.ttl_secs {
            req = req.query(&[("ttl", ttl.to_string())]);
        }
        expect_written(req.send().await?).await
    }

    pub async fn delete(&self, key: &[u8], options: &WriteOptions) -> Result<String, ClientError> {
        let req = apply_options(
            self.key_request(reqwest::Method::DELETE, "/v1/kv", key),
            options,
        );
        expect_written(req.send().await?).await
    }

    /// Gives the key's value a new TTL (`Some(seconds)`) or removes it (`None`, persist).
    pub async fn expire(
        &self,
        key: &[u8],
        ttl_secs: Option<f64>,
        options: &WriteOptions,
    ) -> Result<String, ClientError> {
        let mut req = apply_options(
            self.key_request(reqwest::Method::PATCH, "/v1/kv", key),
            options,
        );
        req = match ttl_secs {
            Some(ttl) => req.query(&[("ttl", ttl.to_string())]),
            None => req.query(&[("persist", "")]),
        };
        expect_written(req.send().await?).await
    }

    /// A cache-aside read with stampede protection: the key's value, or on a miss the value
    /// `loader` produces, written with `ttl`, with at most one loader at a time across every
    /// client that uses the same key (see `client::stampede` for the lease, the early refresh
    /// and the stale reads `options` control).
    pub async fn get_or_load<F, Fut, E>(
        &self,
        key: &[u8],
        ttl: Duration,
        loader: F,
        options: &LoadOptions,
    ) -> Result<Vec<u8>, LoadError<E>>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<Vec<u8>, E>>,
    {
        stampede::get_or_load(self, self, key, ttl, loader, options).await
    }

    /// Compare-and-set: writes `value` only if the key meets `expected`, decided by a
    /// consensus round among its replicas (linearizable per key). `Ok(Applied(context))` or
    /// `Ok(NotApplied { values, context })` with the key as the round read it.
    pub async fn put_if(
        &self,
        key: &[u8],
        value: Vec<u8>,
        expected: &Expected,
        ttl_secs: Option<f64>,
    ) -> Result<CasOutcome, ClientError> {
        let mut req = self
            .key_request(reqwest::Method::PUT, "/v1/kv", key)
            .body(value);
        req = match expected {
            Expected::Absent => req.header("if-none-match", "*"),
            Expected::Present => req.header("if-match", "*"),
            Expected::Context(token) => req.header("if-match", token.as_str()),
        };
        if let Some(ttl) = ttl_secs {
            req = req.query(&[("ttl", ttl.to_string())]);
        }
        let response = req.send().await?;
        match response.status().as_u16() {
            204 => header(&response, causal_context::HEADER)
                .map(CasOutcome::Applied)
                .ok_or_else(|| ClientError::Protocol("write acknowledged without context".into())),
            412 => {
                let body: serde_json::Value = response.json().await?;
                let context = body["context"].as_str().unwrap_or_default().to_string();
                let values = body["siblings"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|v| v.as_str())
                    .map(|v| base64::engine::general_purpose::STANDARD.decode(v))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| ClientError::Protocol(format!("bad sibling: {e}")))?;
                Ok(CasOutcome::NotApplied { values, context })
            }
            status => Err(ClientError::Status {
                status,
                body: response.text().await.unwrap_or_default(),
            }),
        }
    }

    /// Adds `by` (negative subtracts) to the key's counter with quorum `options.w`: the
    /// counter's new value as its coordinator saw it, and the causal context covering it.
    /// Not idempotent: a caller that retries after an unknown outcome may count twice.
    pub async fn incr(
        &self,
        key: &[u8],
        by: i64,
        options: &WriteOptions,
    ) -> Result<(i64, String), ClientError> {
        let encoded = keys::percent_encode(key);
        let mut req = if keys::fits_in_url(&encoded) {
            self.http
                .post(format!("{}/v1/kv/{encoded}/incr", self.base))
        } else {
            self.http
                .post(format!("{}/v1/kv/incr", self.base))
                .header(keys::KEY_HEADER, encoded)
        };
        req = req.query(&[("by", by.to_string())]);
        if let Some(w) = &options.w {
            req = req.query(&[("w", w)]);
        }
        let response = expect_success(req.send().await?).await?;
        let context = header(&response, causal_context::HEADER)
            .ok_or_else(|| ClientError::Protocol("increment answered without context".into()))?;
        let body: serde_json::Value = response.json().await?;
        let value = body["value"]
            .as_i64()
            .ok_or_else(|| ClientError::Protocol(format!("increment answered {body}")))?;
        Ok((value, context))
    }

    /// How long the key's value has left, read with quorum `r`.
    pub async fn ttl(&self, key: &[u8], r: Option<&str>) -> Result<Ttl, ClientError> {
        let mut req = self.key_request(reqwest::Method::GET, "/v1/kv", key);
        if let Some(r) = r {
            req = req.query(&[("r", r)]);
        }
        let response = req.send().await?;
        match response.status().as_u16() {
            200 => Ok(match header(&response, TTL_HEADER) {
                None => Ttl::Persistent,
                Some(ms) => Ttl::ExpiresIn {
                    ms: ms
                        .parse()
                        .map_err(|_| ClientError::Protocol(format!("bad {TTL_HEADER}: {ms}")))?,
                },
            }),
            404 => Ok(Ttl::Missing),
            status => Err(ClientError::Status {
                status,
                body: response.text().await.unwrap_or_default(),
            }),
        }
    }

    /// The answering peer's own stored state of `key` (`GET /v1/local/{key}`): no quorum, no
    /// read repair.
    pub async fn local_state(&self, key: &[u8]) -> Result<LocalStateBody, ClientError> {
        let response = self
            .key_request(reqwest::Method::GET, "/v1/local", key)
            .send()
            .await?;
        let response = expect_success(response).await?;
        Ok(response.json().await?)
    }

    /// Asks the peer to leave the cluster: it hands its data off, then exits.
    pub async fn leave(&self) -> Result<(), ClientError> {
        let response = self
            .http
            .post(format!("{}/v1/leave", self.base))
            .send()
            .await?;
        expect_success(response).await?;
        Ok(())
    }

    /// The peer this client talks to, as given (`http://127.0.0.1:7070`).
    pub fn base(&self) -> &str {
        &self.base
    }

    /// A client for another peer at `base`, sharing this one's connection pool, token and
    /// trusted certificates.
    pub fn for_peer(&self, base: &str) -> Client {
        Client {
            base: base.trim_end_matches('/').to_string(),
            http: self.http.clone(),
        }
    }

    /// Runs a batch of operations on this peer (`POST /v1/batch`): one result per operation,
    /// in order.
    pub async fn batch(&self, ops: Vec<BatchOp>) -> Result<Vec<BatchResult>, ClientError> {
        let response = self
            .http
            .post(format!("{}/v1/batch", self.base))
            .json(&BatchRequest { ops })
            .send()
            .await?;
        let body: BatchResponse = expect_success(response).await?.json().await?;
        Ok(body.results)
    }

    pub async fn cluster(&self) -> Result<serde_json::Value, ClientError> {
        let response = self
            .http
            .get(format!("{}/v1/cluster", self.base))
            .send()
            .await?;
        let response = expect_success(response).await?;
        Ok(response.json().await?)
    }

    /// This peer's stats, or (with `cluster`) the sum over every live member.
    pub async fn stats(&self, cluster: bool) -> Result<StatsBody, ClientError> {
        let mut req = self.http.get(format!("{}/v1/stats", self.base));
        if cluster {
            req = req.query(&[("scope", "cluster")]);
        }
        let response = req.send().await?;
        let response = expect_success(response).await?;
        Ok(response.json().await?)
    }

    /// The keys clients ask about most (`GET /v1/hotkeys`): this peer's, or (with `cluster`)
    /// summed over every live member; at most `limit`.
    pub async fn hot_keys(&self, cluster: bool, limit: usize) -> Result<HotKeysBody, ClientError> {
        let mut req = self
            .http
            .get(format!("{}/v1/hotkeys", self.base))
            .query(&[("limit", limit.to_string())]);
        if cluster {
            req = req.query(&[("scope", "cluster")]);
        }
        let response = expect_success(req.send().await?).await?;
        Ok(response.json().await?)
    }

    /// This peer's `GET /metrics` (the Prometheus text format), as text.
    pub async fn metrics_text(&self) -> Result<String, ClientError> {
        let response = self
            .http
            .get(format!("{}/metrics", self.base))
            .send()
            .await?;
        Ok(expect_success(response).await?.text().await?)
    }

    /// The names of the members this peer believes are up.
    pub async fn live_members(&self) -> Result<Vec<String>, ClientError> {
        let status = self.cluster().await?;
        let members = status["members"]["members"]
            .as_object()
            .ok_or_else(|| ClientError::Protocol("no members in /v1/cluster".into()))?;
        Ok(members
            .iter()
            .filter(|(_, m)| m["up"].as_bool() == Some(true))
            .map(|(name, _)| name.clone())
            .collect())
    }
}

fn apply_options(
    mut req: reqwest::RequestBuilder,
    options: &WriteOptions,
) -> reqwest::RequestBuilder {
    if let Some(w) = &options.w {
        req = req.query(&[("w", w)]);
    }
    if let Some(ctx) = &options.context {
        req = req.header(causal_context::HEADER, ctx);
    }
    req
}

fn header(response: &reqwest::Response, name: &str) -> Option<String> {
    response
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// The response if its status is a success, else its status and body as an error.
async fn expect_success(response: reqwest::Response) -> Result<reqwest::Response, ClientError> {
    if response.status().is_success() {
        return Ok(response);
    }
    Err(ClientError::Status {
        status: response.status().as_u16(),
        body: response.text().await.unwrap_or_default(),
    })
}

async fn expect_written(response: reqwest::Response) -> Result<String, ClientError> {
    let status = response.status().as_u16();
    if status == 204 {
        return header(&response, causal_context::HEADER)
            .ok_or_else(|| ClientError::Protocol("write acknowledged without context".into()));
    }
    Err(ClientError::Status {
        status,
        body: response.text().await.unwrap_or_default(),
    })
}
