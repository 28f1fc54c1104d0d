//! The HTTP API (axum): key-value operations with per-request quorums, cluster status, health,
//! and one inspection endpoint (`/v1/local/{key}`: this peer's own copy of a key).
//!
//! Handlers only translate: HTTP in → [`ClientRequest`] → the driver → [`ClientReply`] → HTTP
//! out. The wire contract is documented in `docs/http.md` and `docs/openapi.yaml`.
//!
//! Every request is given a trace id (the client's `X-Request-Id` when sane, see
//! `request_log`), answered in `X-Request-Id` and named in its slow-request line. With request
//! tracing on (`RUST_LOG=ringcache::trace=debug`), a `request` span around its handling puts
//! `trace_id` on each of its log lines too; off (the default), the span costs nothing: making
//! it took 4–6% of a one-peer GET's CPU (`docs/performance.md`).

use crate::api::auth::{self, ClientToken};
use crate::api::causal_context::{self, ContextKey};
use crate::api::keys;
use crate::api::metrics::{self, RequestMetrics};
use crate::api::request_log::{self, REQUEST_ID_HEADER};
use crate::api::{batch, json_errors, pubsub_http, ui};
use crate::core::node::NodeStats;
use crate::core::paxos::Condition;
use crate::core::request::{
    ClientReply, ClientRequest, ConditionalWrite, RequestError, WriteKind, WriteRequest,
};
use crate::core::siblings::Payload;
use crate::core::types::{Quorum, TraceId};
use crate::shell::driver::{DriverHandle, TRACE_TARGET};
use crate::shell::health::Health;
use crate::shell::hot_keys;
/// One hot key as `GET /v1/hotkeys` reports it (the shell's sketch type, named here for clients).
pub use crate::shell::hot_keys::HotKey;
use crate::shell::pubsub::PubSub;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Extension, FromRef, Query, Request, State};
use axum::http::header::{HeaderName, ALLOW, RETRY_AFTER};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::{Json, Router};
use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument;

const KV_PREFIX: &str = "/v1/kv/";
const LOCAL_PREFIX: &str = "/v1/local/";
/// `POST /v1/kv/{key}/incr`: what ends an increment's path.
const INCR_SUFFIX: &str = "/incr";
/// On a single-value read: the value's absolute expiry, in cluster milliseconds.
pub const EXPIRES_AT_HEADER: &str = "x-expires-at-ms";
/// On a single-value read: milliseconds the value has left, on the answering peer's clock.
pub const TTL_HEADER: &str = "x-ttl-ms";
/// Set (to `true`) on a `stale_ok` read answered with a value past its expiry.
pub const STALE_HEADER: &str = "x-stale";

// The names above as `HeaderName`s, made once: naming a header by its `&str` checks and
// hashes the name again on every response.
static CAUSAL_CONTEXT_NAME: HeaderName = HeaderName::from_static(causal_context::HEADER);
static REQUEST_ID_NAME: HeaderName = HeaderName::from_static(REQUEST_ID_HEADER);
static EXPIRES_AT_NAME: HeaderName = HeaderName::from_static(EXPIRES_AT_HEADER);
static TTL_NAME: HeaderName = HeaderName::from_static(TTL_HEADER);
static STALE_NAME: HeaderName = HeaderName::from_static(STALE_HEADER);
static KEY_NAME: HeaderName = HeaderName::from_static(keys::KEY_HEADER);

/// What the HTTP API takes from the peer's configuration.
#[derive(Clone, Copy, Debug)]
pub struct ApiSettings {
    /// The largest value a write may carry (`--max-value-bytes`): bounds request bodies.
    pub max_value_bytes: usize,
    /// Key requests that take this long or more are logged as slow (`--slow-request-ms`).
    pub slow_request: Duration,
}

/// The routers of one peer's HTTP API: the whole API, `GET /health` alone for the
/// connections past the cap (see `http_server`), and the direct path of key requests.
pub struct Routers {
    pub app: Router,
    pub health_only: Router,
    pub direct_keys: DirectKeyRoute,
}

/// The HTTP API of one peer. `context_key` authenticates the causal context tokens it issues
/// and accepts (the same on every peer of a cluster: see `causal_context`). With a
/// `client_token`, every request but `GET /health` must carry it (see [`auth`]). `GET /health`
/// answers 503 once `health` has failed. With `peer_tls` (the PEM certificates this peer
/// serves HTTPS with), the other peers are asked over HTTPS, trusting those certificates.
pub fn router(
    driver: DriverHandle,
    pubsub: PubSub,
    settings: ApiSettings,
    context_key: ContextKey,
    client_token: Option<ClientToken>,
    health: Health,
    peer_tls: Option<&[u8]>,
) -> Result<Routers, reqwest::Error> {
    let mut peers = reqwest::Client::builder().timeout(std::time::Duration::from_secs(2));
    if let Some(pem) = peer_tls {
        for root in reqwest::Certificate::from_pem_bundle(pem)? {
            peers = peers.add_root_certificate(root);
        }
    }
    let state = ApiState {
        shared: Arc::new(ApiShared {
            driver,
            pubsub,
            metrics: RequestMetrics::default(),
            context_key: Arc::new(context_key),
            client_token: client_token.clone(),
            health,
            peers: peers.build()?,
            peer_scheme: if peer_tls.is_some() { "https" } else { "http" },
            slow_request: settings.slow_request,
        }),
    };
    let max_value_bytes = settings.max_value_bytes;
    let direct_keys = DirectKeyRoute {
        state: state.clone(),
        client_token: client_token.clone(),
        max_value_bytes,
    };
    let health_only = Router::new()
        .route("/health", get(health_check))
        .fallback(too_many_connections)
        .with_state(state.clone())
        .layer(middleware::from_fn(request_id));
    let app = Router::new()
        .route("/health", get(health_check))
        .route("/v1/cluster", get(cluster))
        .route("/v1/stats", get(stats))
        .route("/v1/hotkeys", get(hot_keys))
        .route("/metrics", get(prometheus_metrics))
        .route("/ui", get(ui_page))
        .route("/v1/ring", get(ring))
        .route("/v1/kv/{*key}", any(kv))
        // A key too long for a URL comes in the `x-key` header (see `keys`).
        .route("/v1/kv", any(kv))
        .route("/v1/local/{*key}", get(local))
        .route("/v1/leave", post(leave))
        // A batch carries many values: its own body limit (each value is still checked).
        .route(
            "/v1/batch",
            post(batch).layer(DefaultBodyLimit::max(batch::max_body_bytes(
                max_value_bytes,
            ))),
        )
        .route("/v1/publish", post(pubsub_http::publish))
        .route("/v1/subscribe", get(pubsub_http::subscribe))
        .route("/v1/local", get(local))
        .layer(DefaultBodyLimit::max(max_value_bytes))
        .with_state(state)
        // axum's own rejections (body too large, bad query, wrong method) answer JSON too.
        .layer(middleware::from_fn(json_errors::json_errors))
        .layer(middleware::from_fn_with_state(
            client_token,
            auth::require_token,
        ))
        // Outermost, so a refused request is answered with its id too.
        .layer(middleware::from_fn(request_id));
    Ok(Routers {
        app,
        health_only,
        direct_keys,
    })
}

/// The most frequent requests, key reads and writes (`GET`, `HEAD`, `DELETE` and `PUT` of
/// `/v1/kv/{key}`), answered without the router: axum's route lookup, its three middleware
/// layers and its extractors each box and move the request's future, which cost a one-peer
/// key read about a quarter of its CPU (see `docs/performance.md`). The answer is the
/// router's: the same handler, under the same trace id and span, with the same
/// `X-Request-Id`, and errors made JSON the same way. Whatever it does not take goes to the
/// router, which answers it as before: another route or method, `/v1/kv/` with no key, a
/// body on anything but a `PUT`, a `PUT` without a `Content-Length` or with one over
/// `--max-value-bytes` (the router's body limit answers those), a missing or wrong client
/// token (the router's `401`). `ringcache_http_direct_key_requests_total` counts its answers.
#[derive(Clone)]
pub struct DirectKeyRoute {
    state: ApiState,
    client_token: Option<ClientToken>,
    max_value_bytes: usize,
}

impl DirectKeyRoute {
    /// Whether the direct path answers `request` (see the type's promises).
    pub fn takes<B: hyper::body::Body>(&self, request: &hyper::Request<B>) -> bool {
        use axum::http::header::{AUTHORIZATION, CONTENT_LENGTH};
        let body_fits = match *request.method() {
            Method::GET | Method::HEAD | Method::DELETE => request.body().is_end_stream(),
            Method::PUT => request
                .headers()
                .get(CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok()?.parse::<usize>().ok())
                .is_some_and(|length| length <= self.max_value_bytes),
            _ => false,
        };
        // `/v1/kv/` itself names no key, and the router has no route for it (404).
        let path = request.uri().path();
        body_fits
            && path.len() > KV_PREFIX.len()
            && path.starts_with(KV_PREFIX)
            && self
                .client_token
                .as_ref()
                .is_none_or(|token| token.authorizes(request.headers().get(AUTHORIZATION)))
    }

    /// Answers a request [`DirectKeyRoute::takes`] took, as the router would.
    pub async fn answer<B>(&self, request: hyper::Request<B>) -> Response
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<axum::BoxError>,
    {
        let (parts, body) = request.into_parts();
        let (trace, span) = request_trace(&parts.headers);
        self.state.metrics.observe_direct();
        let handled = async {
            // The handler's extractors that can fail, failing in the same order and words;
            // `takes` bounded the body by its length, so it cannot pass the body limit.
            let response = match whole_body(body).await.map_err(Into::<axum::BoxError>::into) {
                Err(e) => {
                    let why = format!("Failed to buffer the request body: {e}");
                    (StatusCode::BAD_REQUEST, why).into_response()
                }
                Ok(body) => {
                    kv(
                        State(self.state.clone()),
                        Extension(trace.clone()),
                        parts.method,
                        parts.uri,
                        parts.headers,
                        body,
                    )
                    .await
                }
            };
            json_errors::as_json(response).await
        };
        with_request_id(handled.instrument(span).await, &trace)
    }
}

/// A request body read to its end (`http_body_util`'s collect, without the box and limit of
/// axum's `to_bytes`): one data frame comes back as it came, several are joined; trailers are
/// dropped, as axum's `Bytes` extractor drops them. The caller has bounded the body's length
/// (`DirectKeyRoute::takes`).
async fn whole_body<B>(body: B) -> Result<Bytes, B::Error>
where
    B: hyper::body::Body<Data = Bytes>,
{
    use http_body_util::BodyExt;
    Ok(body.collect().await?.to_bytes())
}

/// Gives the request its trace id (the client's `X-Request-Id` when sane, else a fresh one):
/// in the request's extensions for the handlers, as the `trace_id` of a `request` span
/// around its handling (when request tracing is on), and in the response's `X-Request-Id`.
async fn request_id(mut request: Request, next: Next) -> Response {
    let (trace, span) = request_trace(request.headers());
    request.extensions_mut().insert(trace.clone());
    let response = next.run(request).instrument(span).await;
    with_request_id(response, &trace)
}

/// A request's trace id (see [`request_id`]), and the `request` span that names it: at debug
/// under the trace target, like the replicas' `peer_message` spans, so it is made only when
/// request tracing is on.
fn request_trace(headers: &HeaderMap) -> (TraceId, tracing::Span) {
    let asked = headers.get(&REQUEST_ID_NAME).and_then(|v| v.to_str().ok());
    let trace = request_log::trace_id_or_new(asked);
    let span = tracing::debug_span!(target: TRACE_TARGET, "request", trace_id = %trace);
    (trace, span)
}

/// `response`, answering the request's trace id in `X-Request-Id`.
fn with_request_id(mut response: Response, trace: &TraceId) -> Response {
    set_header(&mut response, &REQUEST_ID_NAME, trace.as_str());
    response
}

/// Anything but `GET /health` on a connection past the cap.
async fn too_many_connections() -> Response {
    let mut response = error_response(
        StatusCode::SERVICE_UNAVAILABLE,
        "too many connections: this one may only ask GET /health; retry later",
    );
    set_header(&mut response, &RETRY_AFTER, "1");
    response
}

/// What the handlers share (one allocation: axum clones the state for every request).
#[derive(Clone)]
struct ApiState {
    shared: Arc<ApiShared>,
}

impl std::ops::Deref for ApiState {
    type Target = ApiShared;

    fn deref(&self) -> &ApiShared {
        &self.shared
    }
}

/// The driver, and the key of causal context tokens.
struct ApiShared {
    driver: DriverHandle,
    pubsub: PubSub,
    /// Request counters and latencies for `GET /metrics`.
    metrics: RequestMetrics,
    context_key: Arc<ContextKey>,
    /// Sent to the other peers when summing the cluster's stats.
    client_token: Option<ClientToken>,
    /// Failed when a task the peer cannot live without has ended.
    health: Health,
    /// Asks the other peers for their stats.
    peers: reqwest::Client,
    /// `http`, or `https` when this peer (and so every peer) serves TLS.
    peer_scheme: &'static str,
    /// Key requests that take this long or more are logged as slow.
    slow_request: Duration,
}

impl FromRef<ApiState> for PubSub {
    fn from_ref(state: &ApiState) -> PubSub {
        state.pubsub.clone()
    }
}

impl FromRef<ApiState> for DriverHandle {
    fn from_ref(state: &ApiState) -> DriverHandle {
        state.driver.clone()
    }
}

/// The body of a 300 Multiple Choices response.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct SiblingsBody {
    pub context: String,
    pub siblings: Vec<SiblingBody>,
}

#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct SiblingBody {
    /// The value, base64 (standard alphabet, padded).
    pub value: String,
    pub expires_at_ms: Option<u64>,
}

/// 200 while the peer is whole; 503 once a vital task (gossip) has ended, or while stopping.
async fn health_check(State(state): State<ApiState>) -> Response {
    if let Some(reason) = state.health.failure() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "unhealthy", "reason": reason})),
        )
            .into_response();
    }
    match state.driver.running_as() {
        Some(id) => Json(json!({"status": "ok", "id": id})).into_response(),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "stopping"})),
        )
            .into_response(),
    }
}

/// `POST /v1/leave`: the peer hands every partition it holds to the new replicas, then exits
/// (202 at once; watch `GET /v1/cluster`'s `handoff` for progress).
async fn leave(State(driver): State<DriverHandle>) -> Response {
    driver.leave().await;
    (
        StatusCode::ACCEPTED,
        Json(serde_json::json!({"leaving": true})),
    )
        .into_response()
}

async fn cluster(State(driver): State<DriverHandle>) -> Response {
    match driver.status().await {
        Some(status) => Json(status).into_response(),
        None => error_response(StatusCode::SERVICE_UNAVAILABLE, "the peer is shutting down"),
    }
}

#[derive(Deserialize)]
struct StatsQuery {
    /// `cluster` sums the stats of every live member; absent, this peer's (see [`scope`]).
    scope: Option<String>,
}

/// Whether a `scope` query parameter asks for the whole cluster: `cluster` does, its absence
/// does not, anything else is refused (a misspelt `scope=clustr` used to answer this peer's
/// figures as if they were the cluster's).
fn cluster_scope(scope: Option<&str>) -> Result<bool, ApiError> {
    match scope {
        None => Ok(false),
        Some("cluster") => Ok(true),
        Some(other) => Err(ApiError::bad_request(format!(
            "scope takes one value, cluster (or leave it out for this peer), not {other:?}"
        ))),
    }
}

/// The body of `GET /v1/stats`.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct StatsBody {
    /// The peer that answered, or `cluster` for the sum.
    pub scope: String,
    /// Peers included in the figures.
    pub peers: Vec<String>,
    #[serde(flatten)]
    pub stats: NodeStats,
    /// hits / (hits + misses), or null before the first read.
    pub hit_ratio: Option<f64>,
}

/// One other peer's own figures, from its HTTP API (bounded: a slow peer is left out, not
/// waited for).
async fn peer_stats(
    state: &ApiState,
    addr: std::net::SocketAddr,
) -> Result<StatsBody, reqwest::Error> {
    let token = state.client_token.as_ref();
    let mut request = state
        .peers
        .get(format!("{}://{addr}/v1/stats", state.peer_scheme));
    if let Some(token) = token {
        request = request.bearer_auth(token.secret());
    }
    request.send().await?.error_for_status()?.json().await
}

async fn stats(State(state): State<ApiState>, Query(q): Query<StatsQuery>) -> Response {
    let cluster = match cluster_scope(q.scope.as_deref()) {
        Ok(cluster) => cluster,
        Err(e) => return e.into_response(),
    };
    let driver = &state.driver;
    let Some(status) = driver.status().await else {
        return error_response(StatusCode::SERVICE_UNAVAILABLE, "the peer is shutting down");
    };
    let mut total = status.stats;
    let mut peers = vec![status.id.to_string()];
    if cluster {
        for (id, addr) in other_live_peers(&status) {
            match peer_stats(&state, addr).await {
                Ok(body) => {
                    total.add(&body.stats);
                    peers.push(id.to_string());
                }
                Err(e) => tracing::warn!(peer = %id, error = %e, "stats unavailable"),
            }
        }
    }
    let body = StatsBody {
        scope: if cluster {
            "cluster".into()
        } else {
            status.id.to_string()
        },
        peers,
        hit_ratio: total.hit_ratio(),
        stats: total,
    };
    Json(body).into_response()
}

#[derive(Deserialize)]
struct HotKeysQuery {
    /// `cluster` sums every live member's sketch; absent, this peer's (see [`cluster_scope`]).
    scope: Option<String>,
    /// How many keys (default 20, at most the sketch's capacity).
    limit: Option<usize>,
}

/// The body of `GET /v1/hotkeys`.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct HotKeysBody {
    pub scope: String,
    pub peers: Vec<String>,
    /// The span the counts cover: between one and two windows of this many seconds.
    pub window_secs: u64,
    pub keys: Vec<HotKey>,
}

/// `GET /v1/hotkeys[?scope=cluster][&limit=N]`: the keys clients ask about most.
async fn hot_keys(State(state): State<ApiState>, Query(q): Query<HotKeysQuery>) -> Response {
    let cluster = match cluster_scope(q.scope.as_deref()) {
        Ok(cluster) => cluster,
        Err(e) => return e.into_response(),
    };
    let limit = q.limit.unwrap_or(20).min(hot_keys::CAPACITY);
    let Some(status) = state.driver.status().await else {
        return error_response(StatusCode::SERVICE_UNAVAILABLE, "the peer is shutting down");
    };
    let mut reports = vec![state.driver.hot_keys(hot_keys::CAPACITY)];
    let mut peers = vec![status.id.to_string()];
    if cluster {
        for (id, addr) in other_live_peers(&status) {
            let mut request = state.peers.get(format!(
                "{}://{addr}/v1/hotkeys?limit={}",
                state.peer_scheme,
                hot_keys::CAPACITY
            ));
            if let Some(token) = &state.client_token {
                request = request.bearer_auth(token.secret());
            }
            let body: Result<HotKeysBody, reqwest::Error> =
                async { request.send().await?.error_for_status()?.json().await }.await;
            match body {
                Ok(body) => {
                    reports.push(body.keys);
                    peers.push(id.to_string());
                }
                Err(e) => tracing::warn!(peer = %id, error = %e, "hot keys unavailable"),
            }
        }
    }
    Json(HotKeysBody {
        scope: if cluster {
            "cluster".into()
        } else {
            status.id.to_string()
        },
        peers,
        window_secs: hot_keys::WINDOW.as_secs(),
        keys: hot_keys::merge_reports(&reports, limit),
    })
    .into_response()
}

/// `GET /ui`: the ring page (see `api::ui`).
async fn ui_page() -> Response {
    axum::response::Html(ui::PAGE).into_response()
}

/// `GET /v1/ring`: the ring and every peer's figures, for the ring page.
async fn ring(State(state): State<ApiState>) -> Response {
    let (Some(status), Some(owners)) = (state.driver.status().await, state.driver.ring().await)
    else {
        return error_response(StatusCode::SERVICE_UNAVAILABLE, "the peer is shutting down");
    };
    let primary: HashMap<String, u32> = status
        .ownership
        .iter()
        .map(|o| (o.node.to_string(), o.primary_partitions))
        .collect();
    let mut peers = Vec::new();
    for (id, member) in &status.members.members {
        let mut peer = ui::RingPeer {
            id: id.to_string(),
            state: if !member.up {
                "down"
            } else if member.leaving {
                "leaving"
            } else {
                "up"
            }
            .into(),
            primary_partitions: primary.get(id.as_str()).copied(),
            ..ui::RingPeer::default()
        };
        let figures = if *id == status.id {
            Some((
                status.stats,
                status.handoff.clone(),
                status.partitions_moving_in.len(),
            ))
        } else if let (true, Some(addr)) = (member.up, member.http_addr) {
            peer_figures(&state, addr).await
        } else {
            None
        };
        match figures {
            Some((stats, handoff, moving_in)) => {
                peer.keys = Some(stats.keys);
                peer.memory_used_bytes = Some(stats.memory_used_bytes);
                peer.requests = Some(stats.hits + stats.misses + stats.client_writes);
                peer.moving_out = Some(handoff.len() as u64);
                peer.keys_left = Some(handoff.iter().map(|h| h.keys_left).sum());
                peer.moving_in = Some(moving_in as u64);
            }
            None if member.up => peer.state = "unreachable".into(),
            None => {}
        }
        peers.push(peer);
    }
    Json(ui::RingBody {
        id: status.id.to_string(),
        replicas: status.replicas,
        owners: owners
            .into_iter()
            .map(|list| list.into_iter().map(|n| n.to_string()).collect())
            .collect(),
        peers,
    })
    .into_response()
}

/// Another peer's stats, handoffs and partitions moving in, from its `/v1/cluster`.
async fn peer_figures(
    state: &ApiState,
    addr: std::net::SocketAddr,
) -> Option<(NodeStats, Vec<crate::core::node::HandoffProgress>, usize)> {
    let mut request = state
        .peers
        .get(format!("{}://{addr}/v1/cluster", state.peer_scheme));
    if let Some(token) = &state.client_token {
        request = request.bearer_auth(token.secret());
    }
    let body: serde_json::Value = request
        .send()
        .await
        .ok()?
        .error_for_status()
        .ok()?
        .json()
        .await
        .ok()?;
    let stats: NodeStats = serde_json::from_value(body["stats"].clone()).ok()?;
    let handoff = serde_json::from_value(body["handoff"].clone()).unwrap_or_default();
    let moving_in = body["partitions_moving_in"].as_array().map_or(0, Vec::len);
    Some((stats, handoff, moving_in))
}

/// Every other live member with an HTTP address.
fn other_live_peers(
    status: &crate::shell::driver::Status,
) -> Vec<(crate::core::types::NodeId, std::net::SocketAddr)> {
    status
        .members
        .members
        .iter()
        .filter(|(id, m)| **id != status.id && m.up)
        .filter_map(|(id, m)| m.http_addr.map(|a| (id.clone(), a)))
        .collect()
}

/// The body of `GET /v1/local/{key}`: one peer's own stored state of a key, as its store
/// holds it (no coordination, no read repair, expired values and tombstones included). Two
/// replicas agree on a key exactly when their `clock` and `versions` are equal.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct LocalStateBody {
    /// The peer that answered.
    pub id: String,
    /// Whether this peer's ring makes it one of the key's replicas.
    pub replica: bool,
    /// Every actor's highest counter this peer has seen for the key (empty when not held).
    pub clock: BTreeMap<String, u64>,
    /// The stored siblings, in dot order.
    pub versions: Vec<LocalVersionBody>,
}

#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct LocalVersionBody {
    pub actor: String,
    pub counter: u64,
    /// The value, base64 (standard alphabet, padded); `null` for a tombstone.
    pub value: Option<String>,
    pub expires_at_ms: Option<u64>,
}

/// For tests and operators comparing replicas: what this peer alone stores for the key.
async fn local(State(driver): State<DriverHandle>, uri: Uri, headers: HeaderMap) -> Response {
    let key = match request_key(uri.path(), &headers, LOCAL_PREFIX) {
        Ok(key) => key,
        Err(e) => return e.into_response(),
    };
    let Some(local) = driver.local(key).await else {
        return error_response(StatusCode::SERVICE_UNAVAILABLE, "the peer is shutting down");
    };
    let state = local.state.unwrap_or_default();
    let body = LocalStateBody {
        id: local.id.to_string(),
        replica: local.replica,
        clock: state
            .context()
            .iter()
            .map(|(actor, counter)| (actor.to_string(), counter))
            .collect(),
        versions: state
            .versions()
            .map(|(dot, payload)| {
                let (value, expires_at_ms) = match payload {
                    Payload::Value {
                        data,
                        expires_at_ms,
                    } => (
                        Some(base64::engine::general_purpose::STANDARD.encode(data)),
                        *expires_at_ms,
                    ),
                    // A counter sibling shows the value it holds by itself, in decimal.
                    Payload::Counter {
                        counter,
                        expires_at_ms,
                    } => (
                        counter.total().map(|total| {
                            base64::engine::general_purpose::STANDARD.encode(total.to_string())
                        }),
                        *expires_at_ms,
                    ),
                    Payload::Tombstone => (None, None),
                };
                LocalVersionBody {
                    actor: dot.actor.to_string(),
                    counter: dot.counter,
                    value,
                    expires_at_ms,
                }
            })
            .collect(),
    };
    Json(body).into_response()
}

async fn kv(
    State(state): State<ApiState>,
    Extension(trace): Extension<TraceId>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let query = QueryParams::of(&uri);
    let get_and_set = method == Method::PUT && query.contains_key("return");
    if get_and_set && query.get("return") != Some("old") {
        return ApiError::bad_request("return takes one value: ?return=old").into_response();
    }
    match kv_request(method, &uri, &query, &headers, body, &state.context_key) {
        Ok(request) if get_and_set => get_and_set_response(&state, request, &query, &trace).await,
        Ok(request) => {
            let stale_ok =
                matches!(request, ClientRequest::Get { stale_ok_ms, .. } if stale_ok_ms > 0);
            let reply = timed(&state, request, &trace).await;
            let stale = stale_ok && is_stale(&reply, crate::shell::driver::wall_clock_ms());
            let mut response = reply_response(reply, &state.context_key);
            if stale {
                set_header(&mut response, &STALE_NAME, "true");
            }
            response
        }
        Err(error) => {
            let mut response = error.into_response();
            // RFC 9110: a 405 names the methods the resource serves.
            if response.status() == StatusCode::METHOD_NOT_ALLOWED {
                let methods = if uri.path().ends_with(INCR_SUFFIX) {
                    "GET, HEAD, PUT, PATCH, DELETE, POST"
                } else {
                    "GET, HEAD, PUT, PATCH, DELETE"
                };
                set_header(&mut response, &ALLOW, methods);
            }
            response
        }
    }
}

/// Runs a key request (logged when slow, see `request_log`), recording its kind, outcome and
/// latency for `/metrics`.
async fn timed(state: &ApiState, request: ClientRequest, trace: &TraceId) -> ClientReply {
    let ran = request_log::run(&state.driver, request, trace, state.slow_request, "http").await;
    state.metrics.observe(ran.labels, &ran.reply, ran.took);
    ran.reply
}

/// `GET /metrics`: Prometheus text format (see `api::metrics`).
async fn prometheus_metrics(State(state): State<ApiState>) -> Response {
    let Some(status) = state.driver.status().await else {
        return error_response(StatusCode::SERVICE_UNAVAILABLE, "the peer is shutting down");
    };
    let body = metrics::render(
        &state.metrics,
        &status,
        state.pubsub.stats(),
        state.driver.peer_messages_shed(),
    );
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

/// `PUT …?return=old`: reads the key (quorum `r`), writes the new value replacing what the
/// read saw (or what the request's context names), and answers the old value: 200 with it,
/// 300 with the siblings it replaced, or 404 when there was none. `X-Causal-Context` covers
/// the new write. The read and the write are two quorum operations, not one atomic step: a
/// write that lands between them stays beside the new value as a sibling, never lost.
async fn get_and_set_response(
    state: &ApiState,
    request: ClientRequest,
    query: &QueryParams<'_>,
    trace: &TraceId,
) -> Response {
    let ClientRequest::Write(mut write) = request else {
        return ApiError::bad_request("return=old goes with PUT").into_response();
    };
    let r = match query.get("r").map(|v| v.parse::<Quorum>()) {
        None => Quorum::Quorum,
        Some(Ok(r)) => r,
        Some(Err(e)) => return ApiError::bad_request(e.to_string()).into_response(),
    };
    let read = ClientRequest::Get {
        key: write.key.clone(),
        r,
        session: None,
        stale_ok_ms: 0,
    };
    let old = state.driver.request(read, trace).await.reply;
    let read_context = match &old {
        ClientReply::Found { context, .. } | ClientReply::NotFound { context } => context.clone(),
        _ => return reply_response(old, &state.context_key),
    };
    if write.context.is_none() {
        write.context = Some(read_context);
    }
    let written = state
        .driver
        .request(ClientRequest::Write(write), trace)
        .await
        .reply;
    let ClientReply::Written { context } = written else {
        return reply_response(written, &state.context_key);
    };
    // The old value's response, carrying the new write's context.
    let mut response = match old {
        ClientReply::NotFound { .. } => error_response(StatusCode::NOT_FOUND, "no old value"),
        found => reply_response(found, &state.context_key),
    };
    set_header(
        &mut response,
        &CAUSAL_CONTEXT_NAME,
        &causal_context::encode(&context, &state.context_key),
    );
    response
}

/// `POST /v1/batch`: see [`batch`].
async fn batch(
    State(state): State<ApiState>,
    Extension(trace): Extension<TraceId>,
    Json(batch::ObjectOnly(request)): Json<batch::ObjectOnly<batch::BatchRequest>>,
) -> Response {
    match batch::run(&state.driver, &state.context_key, request, &trace).await {
        Ok(body) => Json(body).into_response(),
        Err(e) => error_response(StatusCode::BAD_REQUEST, &e),
    }
}

/// A request the API refuses before it reaches the core.
#[derive(Debug)]
struct ApiError(StatusCode, String);

impl ApiError {
    fn bad_request(message: impl Into<String>) -> Self {
        ApiError(StatusCode::BAD_REQUEST, message.into())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        error_response(self.0, &self.1)
    }
}

fn kv_request(
    method: Method,
    uri: &Uri,
    query: &QueryParams<'_>,
    headers: &HeaderMap,
    body: Bytes,
    context_key: &ContextKey,
) -> Result<ClientRequest, ApiError> {
    // The method first: a method the path does not serve is a 405 whatever else is wrong
    // with the request (a bad context on a TRACE used to answer 400).
    let served = match method {
        Method::GET | Method::HEAD | Method::PUT | Method::PATCH | Method::DELETE => true,
        Method::POST => uri.path().ends_with(INCR_SUFFIX),
        _ => false,
    };
    if !served {
        return Err(ApiError(
            StatusCode::METHOD_NOT_ALLOWED,
            "use GET, HEAD, PUT, PATCH or DELETE on /v1/kv/{key}, POST on /v1/kv/{key}/incr".into(),
        ));
    }
    // `POST /v1/kv/{key}/incr`: the key is the path before the suffix (a key that itself
    // ends in `/incr` is `…%2Fincr/incr`), or the x-key header with `POST /v1/kv/incr`.
    let path = match method {
        Method::POST => uri.path().strip_suffix(INCR_SUFFIX).ok_or_else(|| {
            ApiError(
                StatusCode::METHOD_NOT_ALLOWED,
                "POST goes to /v1/kv/{key}/incr".into(),
            )
        })?,
        _ => uri.path(),
    };
    let key = request_key(path, headers, KV_PREFIX)?;
    let quorum = |name: &str| -> Result<Quorum, ApiError> {
        match query.get(name) {
            None => Ok(Quorum::Quorum),
            Some(v) => v
                .parse()
                .map_err(|e: crate::core::types::BadQuorum| ApiError::bad_request(e.to_string())),
        }
    };
    // Both quorum parameters are checked whenever given, used or not (a write reads no `r`,
    // a conditional write's quorum is a majority): a malformed one is a client's mistake to
    // point out, as the API document says, not to ignore.
    quorum("r")?;
    quorum("w")?;
    // `?sloppy=true` (or a bare `?sloppy`) asks for a sloppy quorum, `?sloppy=false` for a
    // strict one; absent, the peer's default (`--sloppy-quorum`) applies.
    let sloppy = flag(query, "sloppy")?;
    // `?overwrite=true` on a PUT without context: replace what the coordinating replica has
    // seen (Redis's SET) rather than stand beside it as a sibling.
    let overwrite = flag(query, "overwrite")?.unwrap_or(false);
    let context = match headers.get(&CAUSAL_CONTEXT_NAME) {
        None => None,
        Some(v) => {
            let token = v
                .to_str()
                .map_err(|_| ApiError::bad_request("causal context is not ASCII"))?;
            // Only a context this cluster issued reaches the core (see `causal_context`).
            Some(
                causal_context::decode(token, context_key)
                    .map_err(|e| ApiError::bad_request(e.to_string()))?,
            )
        }
    };
    let condition = condition(headers, context_key)?;
    if condition.is_some() && !matches!(method, Method::PUT | Method::DELETE) {
        return Err(ApiError::bad_request(
            "If-Match and If-None-Match go with PUT or DELETE",
        ));
    }
    if condition.is_some() && context.is_some() {
        return Err(ApiError::bad_request(
            "a conditional write replaces what its round reads: send If-Match or X-Causal-Context, not both",
        ));
    }
    if let Some(condition) = condition {
        let write = match method {
            Method::PUT => WriteKind::Put {
                value: body.to_vec(),
                ttl_ms: query.get("ttl").map(ttl_ms).transpose()?,
            },
            _ => WriteKind::Delete,
        };
        return Ok(ClientRequest::Conditional(ConditionalWrite {
            key,
            write,
            condition,
        }));
    }
    match method {
        // HEAD answers like GET without the body: whether the key exists, and its context.
        // With a context, a session read: never older than what the context saw.
        // With `?stale_ok=SECONDS`, a value expired less than that long ago is still answered
        // when none is live, marked `X-Stale: true` (stale-while-revalidate).
        Method::GET | Method::HEAD => Ok(ClientRequest::Get {
            key,
            r: quorum("r")?,
            session: context,
            stale_ok_ms: query
                .get("stale_ok")
                .map(stale_ok_ms)
                .transpose()?
                .unwrap_or(0),
        }),
        Method::PUT => {
            let ttl_ms = query.get("ttl").map(ttl_ms).transpose()?;
            Ok(ClientRequest::Write(WriteRequest {
                key,
                write: WriteKind::Put {
                    value: body.to_vec(),
                    ttl_ms,
                },
                context,
                w: quorum("w")?,
                sloppy,
                overwrite,
            }))
        }
        Method::DELETE => Ok(ClientRequest::Write(WriteRequest {
            key,
            write: WriteKind::Delete,
            context,
            w: quorum("w")?,
            sloppy,
            overwrite: false,
        })),
        // Change the TTL: `?ttl=SECS` (expire/touch) or `?persist` (no expiry).
        Method::PATCH => {
            let ttl_ms = match (query.get("ttl"), query.contains_key("persist")) {
                (Some(v), false) => Some(ttl_ms(v)?),
                (None, true) => None,
                _ => {
                    return Err(ApiError::bad_request(
                        "PATCH takes exactly one of ?ttl=SECONDS or ?persist",
                    ))
                }
            };
            Ok(ClientRequest::Write(WriteRequest {
                key,
                write: WriteKind::Expire { ttl_ms },
                context,
                w: quorum("w")?,
                sloppy,
                overwrite: false,
            }))
        }
        // Add `?by=N` (default 1; negative subtracts) to the key's counter.
        Method::POST => {
            let by = match query.get("by") {
                None => 1,
                Some(v) => v.parse::<i64>().map_err(|_| {
                    ApiError::bad_request("by must be an integer between -2^63 and 2^63-1")
                })?,
            };
            Ok(ClientRequest::Write(WriteRequest {
                key,
                write: WriteKind::Increment { by },
                context: None,
                w: quorum("w")?,
                sloppy,
                overwrite: false,
            }))
        }
        _ => Err(ApiError(
            StatusCode::METHOD_NOT_ALLOWED,
            "use GET, HEAD, PUT, PATCH or DELETE on /v1/kv/{key}, POST on /v1/kv/{key}/incr".into(),
        )),
    }
}

/// A conditional write's condition from `If-Match` (`*`: the key holds a value; a causal
/// context token: its state is exactly that one) or `If-None-Match: *` (the key holds none).
fn condition(headers: &HeaderMap, context_key: &ContextKey) -> Result<Option<Condition>, ApiError> {
    let header = |name: &str| -> Result<Option<&str>, ApiError> {
        headers
            .get(name)
            .map(|v| {
                v.to_str()
                    .map(|s| s.trim().trim_matches('"'))
                    .map_err(|_| ApiError::bad_request(format!("{name} is not ASCII")))
            })
            .transpose()
    };
    match (header("if-match")?, header("if-none-match")?) {
        (None, None) => Ok(None),
        (Some(_), Some(_)) => Err(ApiError::bad_request(
            "send If-Match or If-None-Match, not both",
        )),
        (None, Some("*")) => Ok(Some(Condition::Absent)),
        (None, Some(_)) => Err(ApiError::bad_request(
            "If-None-Match takes only *: create the key if it holds no value",
        )),
        (Some("*"), None) => Ok(Some(Condition::Present)),
        (Some(token), None) => causal_context::decode(token, context_key)
            .map(|context| Some(Condition::Matches(context)))
            .map_err(|e| ApiError::bad_request(format!("If-Match: {e}"))),
    }
}

/// A key request's query parameters, decoded as `application/x-www-form-urlencoded` exactly
/// as axum's `Query` extractor decodes them (`+` is a space, escapes decoded, bad UTF-8
/// replaced), but without building a map of owned strings: a key request names a handful at
/// most, and most name none. A name given twice answers its last value, as a map filled in
/// order would.
struct QueryParams<'a>(Vec<(Cow<'a, str>, Cow<'a, str>)>);

impl<'a> QueryParams<'a> {
    fn of(uri: &'a Uri) -> QueryParams<'a> {
        QueryParams(
            uri.query()
                .map(|query| form_urlencoded::parse(query.as_bytes()).collect())
                .unwrap_or_default(),
        )
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(given, _)| given == name)
            .map(|(_, value)| value.as_ref())
    }

    fn contains_key(&self, name: &str) -> bool {
        self.get(name).is_some()
    }
}

/// A boolean query parameter: `true`, `1` or bare for yes; `false` or `0` for no; absent,
/// `None`.
fn flag(query: &QueryParams<'_>, name: &str) -> Result<Option<bool>, ApiError> {
    match query.get(name) {
        None => Ok(None),
        Some("" | "true" | "1") => Ok(Some(true)),
        Some("false" | "0") => Ok(Some(false)),
        Some(other) => Err(ApiError::bad_request(format!(
            "{name} must be true or false, not {other:?}"
        ))),
    }
}

/// The key of a request: from the path after `prefix`, or when the path has none, from the
/// `x-key` header (for keys too long for a URL); never from both.
fn request_key(path: &str, headers: &HeaderMap, prefix: &str) -> Result<Vec<u8>, ApiError> {
    let in_path = path.strip_prefix(prefix).filter(|k| !k.is_empty());
    let in_header = headers.get(&KEY_NAME);
    let raw = match (in_path, in_header) {
        (Some(path), None) => path,
        // Encoded as in a path, where a space cannot appear raw (it is %20): visible ASCII
        // without spaces, as docs/openapi.yaml documents the header.
        (None, Some(header)) => header
            .to_str()
            .ok()
            .filter(|k| !k.contains([' ', '\t']))
            .ok_or_else(|| {
                ApiError::bad_request("the x-key header must be percent-encoded ASCII (no spaces)")
            })?,
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request(
                "send the key in the path or in the x-key header, not both",
            ))
        }
        (None, None) => return Err(ApiError::bad_request("no key: /v1/kv/{key}")),
    };
    let key = keys::percent_decode(raw).map_err(|e| ApiError::bad_request(e.to_string()))?;
    // The core refuses an empty key too, but `/v1/local` never reaches its check: an empty
    // `x-key` header there used to answer the state of the empty key.
    if key.is_empty() {
        return Err(ApiError::bad_request("keys must not be empty"));
    }
    Ok(key)
}

/// Parses `stale_ok`, a window in seconds (fractions allowed, 0 for none), into milliseconds.
fn stale_ok_ms(v: &str) -> Result<u64, ApiError> {
    let secs: f64 = v
        .parse()
        .ok()
        .filter(|s: &f64| s.is_finite() && *s >= 0.0)
        .ok_or_else(|| {
            ApiError::bad_request("stale_ok must be a non-negative number of seconds")
        })?;
    Ok((secs * 1000.0).ceil() as u64)
}

/// Whether a read's answer holds a value already expired at `now` (only a `stale_ok` read
/// can get one).
fn is_stale(reply: &ClientReply, now: u64) -> bool {
    match reply {
        ClientReply::Found { values, .. } => values
            .iter()
            .any(|v| v.expires_at_ms.is_some_and(|at| at <= now)),
        _ => false,
    }
}

/// Parses a TTL in seconds (fractions allowed) into milliseconds.
fn ttl_ms(v: &str) -> Result<u64, ApiError> {
    let secs: f64 = v
        .parse()
        .ok()
        .filter(|s: &f64| s.is_finite() && *s > 0.0)
        .ok_or_else(|| ApiError::bad_request("ttl must be a positive number of seconds"))?;
    Ok((secs * 1000.0).ceil() as u64)
}

fn reply_response(reply: ClientReply, context_key: &ContextKey) -> Response {
    match reply {
        ClientReply::Found {
            mut values,
            context,
        } => {
            let token = causal_context::encode(&context, context_key);
            if values.len() == 1 {
                let value = values.pop().expect("one value");
                let mut response = (StatusCode::OK, value.data).into_response();
                set_header(&mut response, &CAUSAL_CONTEXT_NAME, &token);
                if let Some(at) = value.expires_at_ms {
                    set_header(&mut response, &EXPIRES_AT_NAME, &at.to_string());
                    // Remaining time on this peer's clock (what Redis's TTL/PTTL report).
                    let left = at.saturating_sub(crate::shell::driver::wall_clock_ms());
                    set_header(&mut response, &TTL_NAME, &left.to_string());
                }
                response
            } else {
                let body = SiblingsBody {
                    context: token.clone(),
                    siblings: values
                        .into_iter()
                        .map(|v| SiblingBody {
                            value: base64::engine::general_purpose::STANDARD.encode(v.data),
                            expires_at_ms: v.expires_at_ms,
                        })
                        .collect(),
                };
                let mut response = (StatusCode::MULTIPLE_CHOICES, Json(body)).into_response();
                set_header(&mut response, &CAUSAL_CONTEXT_NAME, &token);
                response
            }
        }
        ClientReply::NotFound { context } => {
            let mut response = error_response(StatusCode::NOT_FOUND, "not found");
            if !context.is_empty() {
                set_header(
                    &mut response,
                    &CAUSAL_CONTEXT_NAME,
                    &causal_context::encode(&context, context_key),
                );
            }
            response
        }
        ClientReply::NotApplied { values, context } => {
            let token = causal_context::encode(&context, context_key);
            let body = json!({
                "error": "precondition failed: the key's state does not meet the condition",
                "context": token,
                "siblings": values
                    .iter()
                    .map(|v| base64::engine::general_purpose::STANDARD.encode(&v.data))
                    .collect::<Vec<_>>(),
            });
            let mut response = (StatusCode::PRECONDITION_FAILED, Json(body)).into_response();
            set_header(&mut response, &CAUSAL_CONTEXT_NAME, &token);
            response
        }
        ClientReply::Counted { value, context } => {
            let mut response = (StatusCode::OK, Json(json!({"value": value}))).into_response();
            set_header(
                &mut response,
                &CAUSAL_CONTEXT_NAME,
                &causal_context::encode(&context, context_key),
            );
            response
        }
        ClientReply::Written { context } => {
            let mut response = StatusCode::NO_CONTENT.into_response();
            set_header(
                &mut response,
                &CAUSAL_CONTEXT_NAME,
                &causal_context::encode(&context, context_key),
            );
            response
        }
        ClientReply::Failed(error) => request_error_response(&error),
    }
}

/// The status a failed request answers with (also each failed operation of a batch).
pub(crate) fn request_error_status(error: &RequestError) -> StatusCode {
    request_error_parts(error).0
}

fn request_error_response(error: &RequestError) -> Response {
    let (status, extra) = request_error_parts(error);
    let mut body = json!({"error": error.to_string()});
    if let (Some(obj), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
        obj.extend(extra.clone());
    }
    (status, Json(body)).into_response()
}

fn request_error_parts(error: &RequestError) -> (StatusCode, serde_json::Value) {
    match error {
        RequestError::Unavailable { needed, got } | RequestError::Timeout { needed, got } => (
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"needed": needed, "got": got}),
        ),
        RequestError::ShuttingDown => (StatusCode::SERVICE_UNAVAILABLE, json!({})),
        RequestError::SessionBehind => (
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"session_behind": true}),
        ),
        RequestError::ValueTooLarge { size, limit } => (
            StatusCode::PAYLOAD_TOO_LARGE,
            json!({"size": size, "limit": limit}),
        ),
        RequestError::KeyTooLarge { size, limit } => (
            StatusCode::BAD_REQUEST,
            json!({"size": size, "limit": limit}),
        ),
        RequestError::QuorumTooLarge { .. } | RequestError::EmptyKey => {
            (StatusCode::BAD_REQUEST, json!({}))
        }
        RequestError::Conflict { siblings } => {
            (StatusCode::CONFLICT, json!({"siblings": siblings}))
        }
        RequestError::TooManySiblings { siblings, limit } => (
            StatusCode::CONFLICT,
            json!({"siblings": siblings, "limit": limit}),
        ),
        RequestError::StateTooLarge { bytes, limit } => (
            StatusCode::CONFLICT,
            json!({"state_bytes": bytes, "limit": limit}),
        ),
        RequestError::NothingToExpire => (StatusCode::NOT_FOUND, json!({})),
        // The key's value cannot take the increment: like a conflict, nothing changed.
        RequestError::NotAnInteger | RequestError::Overflow => (StatusCode::CONFLICT, json!({})),
        // Redis answers OOM; HTTP's nearest is 507: the write was refused, nothing changed.
        RequestError::OutOfMemory {
            needed,
            used,
            limit,
        } => (
            StatusCode::INSUFFICIENT_STORAGE,
            json!({"needed_bytes": needed, "used_bytes": used, "limit_bytes": limit}),
        ),
    }
}

fn error_response(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({"error": message}))).into_response()
}

fn set_header(response: &mut Response, name: &HeaderName, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        response.headers_mut().insert(name, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `QueryParams` answers what a map filled by axum's `Query` answers, name for name.
    #[test]
    fn query_params_decode_as_axums_query_does() {
        let queries = [
            "",
            "r=2",
            "r=1&r=3",
            "w=quorum&overwrite",
            "ttl=1.5&overwrite=true&sloppy=",
            "a+b=c+d&%72=%71uorum",
            "%FF=%FE&r=%",
            "&&=x&r==2",
            "return=old&return=new",
        ];
        let names = [
            "r",
            "w",
            "overwrite",
            "ttl",
            "sloppy",
            "a b",
            "return",
            "",
            "\u{fffd}",
        ];
        for query in queries {
            let uri: Uri = format!("/v1/kv/k?{query}").parse().unwrap();
            let Query(axums) = Query::<HashMap<String, String>>::try_from_uri(&uri).unwrap();
            let ours = QueryParams::of(&uri);
            for name in names
                .iter()
                .copied()
                .chain(axums.keys().map(String::as_str))
            {
                assert_eq!(
                    ours.get(name),
                    axums.get(name).map(String::as_str),
                    "{name:?} in {query:?}"
                );
            }
        }
        let bare: Uri = "/v1/kv/k".parse().unwrap();
        assert!(!QueryParams::of(&bare).contains_key("r"));
    }

    /// A body is read whole: one frame as it came, several joined in order, trailers left out.
    #[tokio::test]
    async fn a_body_is_read_whole_from_its_frames() {
        use hyper::body::Frame;
        use std::collections::VecDeque;
        use std::pin::Pin;
        use std::task::{Context, Poll};
        struct Frames(VecDeque<Frame<Bytes>>);
        impl hyper::body::Body for Frames {
            type Data = Bytes;
            type Error = std::convert::Infallible;
            fn poll_frame(
                mut self: Pin<&mut Self>,
                _: &mut Context<'_>,
            ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
                Poll::Ready(self.0.pop_front().map(Ok))
            }
        }
        let frames = |parts: Vec<Frame<Bytes>>| Frames(parts.into());
        let one = Bytes::from_static(b"value");
        let got = whole_body(frames(vec![Frame::data(one.clone())]))
            .await
            .unwrap();
        assert_eq!(got, one);
        assert_eq!(got.as_ptr(), one.as_ptr(), "a single frame is not copied");
        let mut trailers = HeaderMap::new();
        trailers.insert("x-t", HeaderValue::from_static("1"));
        let parts = vec![
            Frame::data(Bytes::new()),
            Frame::data(Bytes::from_static(b"ab")),
            Frame::trailers(trailers),
            Frame::data(Bytes::from_static(b"")),
            Frame::data(Bytes::from_static(b"cd")),
        ];
        assert_eq!(whole_body(frames(parts)).await.unwrap(), &b"abcd"[..]);
        assert_eq!(whole_body(frames(vec![])).await.unwrap(), Bytes::new());
    }
}
