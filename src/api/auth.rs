//! Client authentication of the HTTP API: one bearer token shared by every client and peer
//! of a cluster (`--client-token`).
//!
//! When a token is set, every request except `GET /health` must carry
//! `Authorization: Bearer <token>`; anything else is answered `401 Unauthorized` with a JSON
//! error and a `WWW-Authenticate: Bearer` challenge, before any handler runs (so a refused
//! request reads and changes nothing). The direct path of key requests (`api::http`) takes a
//! request only when [`ClientToken::authorizes`] accepts its header, and leaves any other to
//! this middleware. The presented token is compared with the configured one
//! through their BLAKE3 hashes, whose equality is constant-time: the comparison does not leak
//! how long a prefix of the token a guess got right.

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use std::sync::Arc;

/// The environment variable that carries the token to `serve`, `up` and the CLI commands
/// (defined with the rest of `serve`'s settings).
pub use crate::config::serve_args::TOKEN_ENV;
/// The shortest token accepted, in bytes.
pub const MIN_TOKEN_BYTES: usize = 16;

/// The cluster's client token. Its `Debug` never shows the token.
#[derive(Clone)]
pub struct ClientToken {
    token: Arc<str>,
    hash: blake3::Hash,
}

impl std::fmt::Debug for ClientToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientToken(..)")
    }
}

impl ClientToken {
    /// At least [`MIN_TOKEN_BYTES`] bytes of visible ASCII (it travels in an HTTP header).
    pub fn new(token: &str) -> anyhow::Result<ClientToken> {
        anyhow::ensure!(
            token.len() >= MIN_TOKEN_BYTES,
            "the client token must be at least {MIN_TOKEN_BYTES} bytes long"
        );
        anyhow::ensure!(
            token.bytes().all(|b| b.is_ascii_graphic()),
            "the client token must be visible ASCII without spaces"
        );
        Ok(ClientToken {
            token: Arc::from(token),
            hash: blake3::hash(token.as_bytes()),
        })
    }

    /// The token itself, for requests this peer makes to other peers.
    pub fn secret(&self) -> &str {
        &self.token
    }

    /// Whether `presented` is the token, compared in constant time (`blake3::Hash`'s
    /// equality is constant-time, and both sides are hashed to the same length first).
    pub fn matches(&self, presented: &[u8]) -> bool {
        blake3::hash(presented) == self.hash
    }

    /// Whether an `Authorization` header value carries this token as a bearer token.
    pub fn authorizes(&self, authorization: Option<&HeaderValue>) -> bool {
        let Some(value) = authorization else {
            return false;
        };
        let value = value.as_bytes();
        let Some(space) = value.iter().position(|b| *b == b' ') else {
            return false;
        };
        let (scheme, rest) = value.split_at(space);
        scheme.eq_ignore_ascii_case(b"bearer") && self.matches(rest.trim_ascii())
    }
}

/// Whether a request may pass without a token: only the health check.
fn is_open(method: &Method, path: &str) -> bool {
    path == "/health" && (method == Method::GET || method == Method::HEAD)
}

/// The middleware: with no token configured every request passes.
pub async fn require_token(
    State(token): State<Option<ClientToken>>,
    request: Request,
    next: Next,
) -> Response {
    let Some(token) = token else {
        return next.run(request).await;
    };
    if is_open(request.method(), request.uri().path()) {
        return next.run(request).await;
    }
    let authorization = request.headers().get(header::AUTHORIZATION);
    if token.authorizes(authorization) {
        return next.run(request).await;
    }
    let (challenge, message) = match authorization {
        None => (
            r#"Bearer realm="ringcache""#,
            "this peer requires a client token: send Authorization: Bearer <token>",
        ),
        Some(_) => (
            r#"Bearer realm="ringcache", error="invalid_token""#,
            "the client token is not valid",
        ),
    };
    let mut response =
        (StatusCode::UNAUTHORIZED, Json(json!({ "error": message }))).into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static(challenge),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_bearer_token_itself_authorizes() {
        let token = ClientToken::new("0123456789abcdef-token").unwrap();
        let h = |s: &'static str| Some(HeaderValue::from_static(s));
        assert!(token.authorizes(h("Bearer 0123456789abcdef-token").as_ref()));
        assert!(token.authorizes(h("bearer 0123456789abcdef-token").as_ref()));
        assert!(!token.authorizes(None));
        assert!(!token.authorizes(h("Bearer 0123456789abcdef-tokem").as_ref()));
        assert!(!token.authorizes(h("Bearer 0123456789abcdef-token2").as_ref()));
        assert!(!token.authorizes(h("Bearer ").as_ref()));
        assert!(!token.authorizes(h("Basic 0123456789abcdef-token").as_ref()));
        assert!(!token.authorizes(h("0123456789abcdef-token").as_ref()));
    }

    #[test]
    fn tokens_are_long_visible_ascii() {
        assert!(ClientToken::new("short").is_err());
        assert!(ClientToken::new("has a space in it, sadly").is_err());
        assert!(ClientToken::new("0123456789abcdef").is_ok());
        assert_eq!(
            format!("{:?}", ClientToken::new("0123456789abcdef").unwrap()),
            "ClientToken(..)"
        );
    }

    #[test]
    fn only_the_health_check_is_open() {
        assert!(is_open(&Method::GET, "/health"));
        assert!(!is_open(&Method::POST, "/health"));
        assert!(!is_open(&Method::GET, "/v1/cluster"));
        assert!(!is_open(&Method::GET, "/health/"));
    }
}
