//! Pub/sub over HTTP: `POST /v1/publish?channel=NAME` and `GET /v1/subscribe` as server-sent
//! events, on the same hub as RESP's `PUBLISH`/`SUBSCRIBE` (`shell::pubsub`).
//!
//! Why: a browser or a shell script can follow a channel with nothing but HTTP, and a service
//! that only speaks HTTP can publish to Redis clients subscribed on any peer.
//!
//! Promises: a subscription names channels (`channel=`, repeatable) and Redis-style patterns
//! (`pattern=`, repeatable), percent-encoded; each message is one `message` event whose data is
//! a JSON object (`channel`, `pattern` when matched by one, and `payload` when it is UTF-8 or
//! `payload_base64` when not). A subscriber that falls more than
//! [`SUBSCRIBER_LIMIT_BYTES`] behind gets one `lagged` event and the stream ends, so a slow
//! reader never grows the peer's memory. A comment is sent every 15 s to keep proxies from
//! closing a quiet stream.

use crate::shell::pubsub::{Delivery, PubSub};
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine;
use serde_json::json;
use std::convert::Infallible;

/// Undelivered bytes one HTTP subscriber may hold before it is cut off (Redis's default hard
/// limit for pub/sub clients).
pub const SUBSCRIBER_LIMIT_BYTES: usize = 32 * 1024 * 1024;
/// Channels plus patterns one subscription may name.
pub const MAX_SUBSCRIPTIONS: usize = 1_000;

/// The query's `name=value` pairs, percent-decoded, for the names asked for.
fn query_values(query: Option<&str>, name: &str) -> Result<Vec<Vec<u8>>, String> {
    let mut out = Vec::new();
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if k == name {
            out.push(crate::api::keys::percent_decode(v).map_err(|e| e.to_string())?);
        }
    }
    Ok(out)
}

fn bad_request(message: String) -> Response {
    (StatusCode::BAD_REQUEST, Json(json!({"error": message}))).into_response()
}

/// `POST /v1/publish?channel=NAME`, the body being the message: `{"receivers": n}`, the
/// subscribers on this peer that received it (other peers' subscribers receive it too).
pub async fn publish(State(pubsub): State<PubSub>, RawQuery(q): RawQuery, body: Bytes) -> Response {
    let channels = match query_values(q.as_deref(), "channel") {
        Ok(c) => c,
        Err(e) => return bad_request(e),
    };
    let [channel] = channels.as_slice() else {
        return bad_request("name exactly one channel: /v1/publish?channel=NAME".into());
    };
    let receivers = pubsub.publish(channel, &body);
    Json(json!({"receivers": receivers})).into_response()
}

/// `GET /v1/subscribe?channel=A&pattern=news.*`: server-sent events, one per message.
pub async fn subscribe(State(pubsub): State<PubSub>, RawQuery(q): RawQuery) -> Response {
    let (channels, patterns) = match (
        query_values(q.as_deref(), "channel"),
        query_values(q.as_deref(), "pattern"),
    ) {
        (Ok(c), Ok(p)) => (c, p),
        (Err(e), _) | (_, Err(e)) => return bad_request(e),
    };
    if channels.is_empty() && patterns.is_empty() {
        return bad_request("name at least one channel= or pattern=".into());
    }
    if channels.len() + patterns.len() > MAX_SUBSCRIPTIONS {
        return bad_request(format!(
            "at most {MAX_SUBSCRIPTIONS} channels and patterns per subscription"
        ));
    }
    let mut subscriber = pubsub.subscriber(SUBSCRIBER_LIMIT_BYTES);
    for c in &channels {
        subscriber.subscribe(c);
    }
    for p in &patterns {
        subscriber.psubscribe(p);
    }
    // The stream ends after telling the subscriber it lagged.
    let events = futures_util::stream::unfold(Some(subscriber), |state| async move {
        let mut subscriber = state?;
        match subscriber.recv().await {
            Ok(delivery) => Some((Ok::<_, Infallible>(event_of(&delivery)), Some(subscriber))),
            Err(lagged) => Some((
                Ok(Event::default().event("lagged").data(lagged.to_string())),
                None,
            )),
        }
    });
    Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response()
}

fn text_or_base64(bytes: &[u8]) -> (Option<String>, Option<String>) {
    match std::str::from_utf8(bytes) {
        Ok(s) => (Some(s.to_string()), None),
        Err(_) => (
            None,
            Some(base64::engine::general_purpose::STANDARD.encode(bytes)),
        ),
    }
}

fn event_of(delivery: &Delivery) -> Event {
    let (pattern, channel, payload) = match delivery {
        Delivery::Message { channel, payload } => (None, channel, payload),
        Delivery::PatternMessage {
            pattern,
            channel,
            payload,
        } => (Some(pattern), channel, payload),
    };
    let mut body = serde_json::Map::new();
    body.insert(
        "channel".into(),
        json!(String::from_utf8_lossy(channel).into_owned()),
    );
    if let Some(p) = pattern {
        body.insert(
            "pattern".into(),
            json!(String::from_utf8_lossy(p).into_owned()),
        );
    }
    match text_or_base64(payload) {
        (Some(text), _) => body.insert("payload".into(), json!(text)),
        (None, b64) => body.insert("payload_base64".into(), json!(b64)),
    };
    Event::default()
        .event("message")
        .data(serde_json::Value::Object(body).to_string())
}
