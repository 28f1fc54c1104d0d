//! ringcache's own commands, for clients that want more than Redis's model:
//! - `RC.CONSISTENCY [r w]`: this connection's read and write quorums (`one`, `quorum`, `all`
//!   or a number); without arguments, the current pair. Defaults: quorum and quorum.
//! - `RC.GETALL key`: every concurrent value (sibling) and the causal context token that
//!   covers them: `[context, [value…]]` (an empty list when missing; the context is then
//!   the empty string unless the key holds tombstones).
//! - `RC.SET key value CONTEXT token [EX s|PX ms]`: a write that replaces exactly what the
//!   context saw (siblings it did not see stay). Answers the new context token.
//! - `RC.CAS key context value [EX s|PX ms]`: compare-and-set, decided by consensus: writes
//!   only if the key is still exactly what the context saw; the new token, or nil.
//! - `RC.HOTKEYS [COUNT n]`: the keys clients asked this peer about most over the last one to
//!   two minutes (the sketch behind `GET /v1/hotkeys`), hottest first, each as
//!   `[key, "reads", n, "writes", n, "error", n]`: field names beside their counts, so
//!   `redis-cli` prints a readable list. Redis has no command of this name; the `RC.` prefix
//!   keeps ringcache's own commands apart from any Redis may add.

use crate::api::causal_context;
use crate::api::resp::args::{self, is};
use crate::api::resp::frame::Frame;
use crate::api::resp::keyspace::{owned, Conditional, Ttl};
use crate::api::resp::session::Session;
use crate::core::paxos::Condition;
use crate::core::request::WriteKind;
use crate::core::types::Quorum;
use crate::shell::hot_keys;
use base64::Engine;
use bytes::Bytes;

pub fn consistency(session: &mut Session, args: &[Bytes]) -> Frame {
    match args.len() {
        1 => Frame::Array(vec![
            Frame::bulk(session.r.to_string()),
            Frame::bulk(session.w.to_string()),
        ]),
        3 => {
            let parse = |a: &Bytes| -> Result<Quorum, Frame> {
                let text = std::str::from_utf8(a).map_err(|_| args::syntax_error())?;
                let quorum: Quorum = text
                    .parse()
                    .map_err(|e: crate::core::types::BadQuorum| Frame::error(format!("ERR {e}")))?;
                let replicas = session.shared.settings.replicas;
                if quorum.resolve(replicas) > replicas {
                    return Err(Frame::error(format!(
                        "ERR quorum {quorum} is larger than the replication factor {replicas}"
                    )));
                }
                Ok(quorum)
            };
            match (parse(&args[1]), parse(&args[2])) {
                (Ok(r), Ok(w)) => {
                    session.r = r;
                    session.w = w;
                    Frame::ok()
                }
                (Err(e), _) | (_, Err(e)) => e,
            }
        }
        _ => args::wrong_arity("rc.consistency"),
    }
}

pub async fn getall(session: &Session, args: &[Bytes]) -> Frame {
    match session.keyspace().read(&args[1]).await {
        Ok(read) => {
            let context = if read.context.is_empty() {
                String::new()
            } else {
                causal_context::encode(&read.context, &session.shared.context_key)
            };
            Frame::Array(vec![
                Frame::bulk(context),
                Frame::Array(
                    read.values
                        .into_iter()
                        .map(|v| Frame::bulk(v.data))
                        .collect(),
                ),
            ])
        }
        Err(e) => e,
    }
}

/// `EX s` or `PX ms` as a TTL (`None`: `name` is neither option).
fn ttl_option(name: &[u8], value: &[u8], command: &str) -> Option<Result<Ttl, Frame>> {
    let unit = if is(name, "ex") {
        1000
    } else if is(name, "px") {
        1
    } else {
        return None;
    };
    Some(match args::integer(value) {
        Ok(n) if n > 0 => Ok(Ttl::Ms(n.saturating_mul(unit) as u64)),
        Ok(_) => Err(Frame::error(format!(
            "ERR invalid expire time in '{command}' command"
        ))),
        Err(e) => Err(e),
    })
}

/// `RC.CAS key context value [EX s|PX ms]`: writes `value` only if the key's state is exactly
/// the one the context token names (nothing written since it was read), decided by a consensus
/// round among the key's replicas. Answers the new context token, or nil when the key changed
/// (read it again with `RC.GETALL`).
pub async fn cas(session: &Session, args: &[Bytes]) -> Frame {
    let token = String::from_utf8_lossy(&args[2]);
    let context = match causal_context::decode(&token, &session.shared.context_key) {
        Ok(c) => c,
        Err(e) => return Frame::error(format!("ERR {e}")),
    };
    let ttl = match args.get(4..) {
        Some([name, value]) => match ttl_option(name, value, "rc.cas") {
            Some(Ok(ttl)) => ttl,
            Some(Err(e)) => return e,
            None => return args::syntax_error(),
        },
        Some([]) | None => Ttl::None,
        Some(_) => return args::syntax_error(),
    };
    let outcome = session
        .keyspace()
        .conditional(&args[1], owned(&args[3]), ttl, Condition::Matches(context))
        .await;
    match outcome {
        Ok(Conditional::Applied(context)) => Frame::bulk(causal_context::encode(
            &context,
            &session.shared.context_key,
        )),
        Ok(Conditional::NotApplied(_)) => Frame::Null,
        Err(e) => e,
    }
}

pub async fn set(session: &Session, args: &[Bytes]) -> Frame {
    let mut context = None;
    let mut ttl = Ttl::None;
    let mut i = 3;
    while i < args.len() {
        let Some(value) = args.get(i + 1) else {
            return args::syntax_error();
        };
        if is(&args[i], "context") {
            let token = String::from_utf8_lossy(value);
            context = match causal_context::decode(&token, &session.shared.context_key) {
                Ok(c) => Some(c),
                Err(e) => return Frame::error(format!("ERR {e}")),
            };
        } else if let Some(parsed) = ttl_option(&args[i], value, "rc.set") {
            ttl = match parsed {
                Ok(t) => t,
                Err(e) => return e,
            };
        } else {
            return args::syntax_error();
        }
        i += 2;
    }
    let Some(context) = context else {
        return Frame::error(
            "ERR RC.SET needs CONTEXT <token> (from RC.GETALL); use SET for a plain write",
        );
    };
    let ttl_ms = match ttl {
        Ttl::Ms(ms) => Some(ms),
        _ => None,
    };
    let write = WriteKind::Put {
        value: owned(&args[2]),
        ttl_ms,
    };
    match session
        .keyspace()
        .write(&args[1], write, Some(context))
        .await
    {
        Ok(written) => Frame::bulk(causal_context::encode(
            &written,
            &session.shared.context_key,
        )),
        Err(e) => e,
    }
}

/// How many keys `RC.HOTKEYS` answers without `COUNT`.
pub const HOTKEYS_DEFAULT_COUNT: usize = 10;

pub fn hotkeys(session: &Session, args: &[Bytes]) -> Frame {
    let count = match args {
        [_] => HOTKEYS_DEFAULT_COUNT,
        [_, word, n] if is(word, "count") => match args::integer(n) {
            Ok(n) if n > 0 => (n as usize).min(hot_keys::CAPACITY),
            Ok(_) => return Frame::error("ERR COUNT must be positive"),
            Err(e) => return e,
        },
        _ => return args::syntax_error(),
    };
    let keys = session.shared.driver.hot_keys(count);
    Frame::Array(
        keys.into_iter()
            .map(|k| {
                // The sketch keeps a non-UTF-8 key as base64; RESP is binary-safe: the bytes.
                let key: Bytes = match (k.key, k.key_base64) {
                    (Some(text), _) => text.into(),
                    (None, Some(b64)) => base64::engine::general_purpose::STANDARD
                        .decode(b64)
                        .unwrap_or_default()
                        .into(),
                    (None, None) => Bytes::new(),
                };
                Frame::Array(vec![
                    Frame::bulk(key),
                    Frame::bulk("reads"),
                    Frame::Integer(k.reads as i64),
                    Frame::bulk("writes"),
                    Frame::Integer(k.writes as i64),
                    Frame::bulk("error"),
                    Frame::Integer(k.error as i64),
                ])
            })
            .collect(),
    )
}
