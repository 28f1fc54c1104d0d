//! `POST /v1/batch`: many key operations in one HTTP request, run side by side.
//!
//! Why: a client that needs fifty keys should not pay fifty round trips, nor wait for them one
//! after another. Each operation is an ordinary quorum request (the same as its single-key
//! endpoint: same quorums, contexts, TTLs and errors); they are started together and each
//! answers on its own, so one failing key never fails the others.
//!
//! Promises: results come back in the order of the request's operations, one per operation;
//! a malformed operation gets its own 400 result without stopping the rest; at most
//! [`MAX_BATCH_OPS`] operations per request (more is a 400 for the whole batch, before any
//! runs). The batch is not a transaction: operations on different keys are independent, and two
//! on one key run concurrently (order them with contexts, or send them in two batches).

use crate::api::causal_context::{self, ContextKey};
use crate::core::request::{ClientReply, ClientRequest, WriteKind, WriteRequest};
use crate::core::types::{BadQuorum, Quorum, TraceId};
use crate::shell::driver::DriverHandle;
use base64::Engine;
use serde::{Deserialize, Serialize};

/// Operations one batch may carry.
pub const MAX_BATCH_OPS: usize = 1_000;

/// The largest batch body accepted: room for [`MAX_BATCH_OPS`] operations of small values,
/// or a few of the largest (base64 grows a value by a third), within 64 MiB.
pub fn max_body_bytes(max_value_bytes: usize) -> usize {
    (max_value_bytes * 2 + 64 * 1024).clamp(MAX_BATCH_OPS * 1024, 64 * 1024 * 1024)
}

/// The body of `POST /v1/batch`. Deserialized only from a JSON object (see [`ObjectOnly`]).
#[derive(Debug, Serialize, Deserialize)]
pub struct BatchRequest {
    #[serde(deserialize_with = "objects_only")]
    pub ops: Vec<BatchOp>,
}

/// Deserializes `T` only from a map. Serde's derived structs also accept a sequence of their
/// fields in order (`[[]]` would be a batch of no operations), which the documented schema
/// does not allow: a body that is not an object must be refused, not guessed at.
#[derive(Debug)]
pub struct ObjectOnly<T>(pub T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for ObjectOnly<T> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct MapVisitor<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for MapVisitor<T> {
            type Value = T;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                T::deserialize(serde::de::value::MapAccessDeserializer::new(map))
            }
        }
        deserializer
            .deserialize_map(MapVisitor(std::marker::PhantomData))
            .map(ObjectOnly)
    }
}

/// A list whose every element must be a JSON object.
fn objects_only<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(
    deserializer: D,
) -> Result<Vec<T>, D::Error> {
    let items: Vec<ObjectOnly<T>> = Deserialize::deserialize(deserializer)?;
    Ok(items.into_iter().map(|item| item.0).collect())
}

/// One operation. The key is a UTF-8 string (`key`) or any bytes (`key_base64`); a put's
/// value likewise (`value` or `value_base64`).
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct BatchOp {
    /// `get`, `put` or `delete`.
    pub op: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_base64: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_base64: Option<String>,
    /// Read quorum of a get.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub r: Option<String>,
    /// Write quorum of a put or delete.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub w: Option<String>,
    /// Time to live of a put, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<f64>,
    /// The causal context token of a previous read or write of the key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<String>,
    /// A put without context replaces what the coordinating replica has seen.
    #[serde(default)]
    pub overwrite: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sloppy: Option<bool>,
}

/// The body of the answer: one result per operation, in order.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct BatchResponse {
    pub results: Vec<BatchResult>,
}

/// One operation's outcome, with the status its single-key endpoint would have answered:
/// 200 (one value), 300 (siblings), 404, 204 (written), or an error status with `error`.
#[derive(Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct BatchResult {
    pub status: u16,
    /// The value, when it is UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// The value, when it is not UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_base64: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at_ms: Option<u64>,
    /// Every concurrent value (status 300), base64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub siblings: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl BatchResult {
    fn bad_request(error: impl Into<String>) -> BatchResult {
        BatchResult {
            status: 400,
            error: Some(error.into()),
            ..BatchResult::default()
        }
    }
}

/// Runs every operation of `batch` at once, all under the batch's `trace`; results in the
/// request's order.
pub async fn run(
    driver: &DriverHandle,
    context_key: &ContextKey,
    batch: BatchRequest,
    trace: &TraceId,
) -> Result<BatchResponse, String> {
    if batch.ops.len() > MAX_BATCH_OPS {
        return Err(format!(
            "a batch carries at most {MAX_BATCH_OPS} operations, not {}",
            batch.ops.len()
        ));
    }
    // Every operation is in flight at once; the driver deals each to its key's shard.
    let running = batch.ops.into_iter().map(|op| async move {
        match to_request(op, context_key) {
            Ok(request) => to_result(driver.request(request, trace).await.reply, context_key),
            Err(refused) => BatchResult::bad_request(refused),
        }
    });
    Ok(BatchResponse {
        results: futures_util::future::join_all(running).await,
    })
}

fn bytes_field(
    text: Option<String>,
    base64: Option<String>,
    name: &str,
) -> Result<Option<Vec<u8>>, String> {
    match (text, base64) {
        (Some(t), None) => Ok(Some(t.into_bytes())),
        (None, Some(b)) => base64::engine::general_purpose::STANDARD
            .decode(b)
            .map(Some)
            .map_err(|e| format!("{name}_base64 is not base64: {e}")),
        (None, None) => Ok(None),
        (Some(_), Some(_)) => Err(format!("give {name} or {name}_base64, not both")),
    }
}

fn quorum(v: Option<String>) -> Result<Quorum, String> {
    v.map_or(Ok(Quorum::Quorum), |q| {
        q.parse().map_err(|e: BadQuorum| e.to_string())
    })
}

fn to_request(op: BatchOp, context_key: &ContextKey) -> Result<ClientRequest, String> {
    let key = bytes_field(op.key, op.key_base64, "key")?.ok_or("every operation needs a key")?;
    let context = op
        .context
        .map(|t| causal_context::decode(&t, context_key).map_err(|e| e.to_string()))
        .transpose()?;
    let write = |write: WriteKind, context, overwrite| -> Result<ClientRequest, String> {
        Ok(ClientRequest::Write(WriteRequest {
            key: key.clone(),
            write,
            context,
            w: quorum(op.w.clone())?,
            sloppy: op.sloppy,
            overwrite,
        }))
    };
    match op.op.as_str() {
        // A get with a context is a session read, as over `GET /v1/kv`.
        "get" => Ok(ClientRequest::Get {
            key: key.clone(),
            r: quorum(op.r)?,
            session: context,
            stale_ok_ms: 0,
        }),
        "put" => {
            let value =
                bytes_field(op.value, op.value_base64, "value")?.ok_or("a put needs a value")?;
            let ttl_ms = match op.ttl {
                None => None,
                Some(s) if s.is_finite() && s > 0.0 => Some((s * 1000.0).ceil() as u64),
                Some(_) => return Err("ttl must be a positive number of seconds".into()),
            };
            write(WriteKind::Put { value, ttl_ms }, context, op.overwrite)
        }
        "delete" => write(WriteKind::Delete, context, false),
        other => Err(format!("op must be get, put or delete, not {other:?}")),
    }
}

fn to_result(reply: ClientReply, context_key: &ContextKey) -> BatchResult {
    let token = |c| Some(causal_context::encode(c, context_key));
    match reply {
        ClientReply::Found {
            mut values,
            context,
        } if values.len() == 1 => {
            let value = values.pop().expect("one value");
            let (text, b64) = match String::from_utf8(value.data) {
                Ok(s) => (Some(s), None),
                Err(e) => (
                    None,
                    Some(base64::engine::general_purpose::STANDARD.encode(e.into_bytes())),
                ),
            };
            BatchResult {
                status: 200,
                value: text,
                value_base64: b64,
                expires_at_ms: value.expires_at_ms,
                context: token(&context),
                ..BatchResult::default()
            }
        }
        ClientReply::Found { values, context } => BatchResult {
            status: 300,
            siblings: Some(
                values
                    .iter()
                    .map(|v| base64::engine::general_purpose::STANDARD.encode(&v.data))
                    .collect(),
            ),
            context: token(&context),
            ..BatchResult::default()
        },
        ClientReply::NotFound { context } => BatchResult {
            status: 404,
            context: (!context.is_empty()).then(|| causal_context::encode(&context, context_key)),
            ..BatchResult::default()
        },
        // Batches send no conditional writes.
        ClientReply::NotApplied { context, .. } => BatchResult {
            status: 412,
            context: token(&context),
            ..BatchResult::default()
        },
        ClientReply::Counted { value, context } => BatchResult {
            status: 200,
            value: Some(value.to_string()),
            context: token(&context),
            ..BatchResult::default()
        },
        ClientReply::Written { context } => BatchResult {
            status: 204,
            context: token(&context),
            ..BatchResult::default()
        },
        ClientReply::Failed(error) => BatchResult {
            status: crate::api::http::request_error_status(&error).as_u16(),
            error: Some(error.to_string()),
            ..BatchResult::default()
        },
    }
}
