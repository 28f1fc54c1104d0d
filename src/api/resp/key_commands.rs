//! Key commands: DEL/UNLINK, EXISTS/TOUCH, TYPE, the EXPIRE and TTL families, PERSIST, SCAN,
//! RANDOMKEY.
//!
//! Commands on many keys run their per-key requests at once and answer in the request's
//! order. SCAN walks this peer's own keys (the partitions it replicates) in ring order: its
//! cursor is a ring position, so a scan from 0 back to 0 returns every key the peer held
//! throughout exactly once.

use crate::api::resp::args::{self, is};
use crate::api::resp::frame::Frame;
use crate::api::resp::keyspace::{Expired, Read, Ttl};
use crate::api::resp::session::Session;
use crate::glob::glob_match;
use crate::shell::driver::wall_clock_ms;
use bytes::Bytes;
use futures_util::future::join_all;

/// Partitions one SCAN call may walk through: bounds a call's cost on a sparse store.
const SCAN_PARTITIONS_PER_CALL: usize = 256;
/// SCAN's COUNT when none is given (Redis's default).
const SCAN_DEFAULT_COUNT: usize = 10;

/// `DEL key…` / `UNLINK key…`: how many existed. Each key is read, then deleted with the
/// read's context, so only what was read is removed.
pub async fn del(session: &Session, args: &[Bytes]) -> Frame {
    let keyspace = session.keyspace();
    let deleted = join_all(args[1..].iter().map(|key| {
        let keyspace = keyspace.clone();
        async move {
            let read = keyspace.read(key).await?;
            keyspace.delete_read(key, &read).await
        }
    }))
    .await;
    let mut count = 0;
    for d in deleted {
        match d {
            Ok(existed) => count += i64::from(existed),
            Err(e) => return e,
        }
    }
    Frame::Integer(count)
}

/// `EXISTS key…` / `TOUCH key…`: how many exist (a key named twice counts twice).
pub async fn exists(session: &Session, args: &[Bytes]) -> Frame {
    let keyspace = session.keyspace();
    let reads = join_all(args[1..].iter().map(|key| keyspace.read(key))).await;
    let mut count = 0;
    for read in reads {
        match read {
            Ok(read) => count += i64::from(read.exists()),
            Err(e) => return e,
        }
    }
    Frame::Integer(count)
}

pub async fn key_type(session: &Session, args: &[Bytes]) -> Frame {
    match session.keyspace().read(&args[1]).await {
        Ok(read) if read.exists() => Frame::Simple("string".into()),
        Ok(_) => Frame::Simple("none".into()),
        Err(e) => e,
    }
}

/// Redis 7's EXPIRE conditions.
#[derive(Clone, Copy, PartialEq, Eq)]
enum When {
    Always,
    /// NX: only when the key has no expiry.
    NoExpiry,
    /// XX: only when it has one.
    HasExpiry,
    /// GT: only when the new expiry is later (no expiry counts as infinite).
    Later,
    /// LT: only when it is sooner.
    Sooner,
}

/// `EXPIRE key seconds [NX|XX|GT|LT]` and PEXPIRE, EXPIREAT, PEXPIREAT: 1 when the TTL was
/// set, 0 when the key is missing or the condition did not hold. A TTL already past deletes
/// the key.
pub async fn expire(session: &Session, command: &str, args: &[Bytes]) -> Frame {
    let n = match args::integer(&args[2]) {
        Ok(n) => n,
        Err(e) => return e,
    };
    let mut when = When::Always;
    for option in &args[3..] {
        let next = [
            ("nx", When::NoExpiry),
            ("xx", When::HasExpiry),
            ("gt", When::Later),
            ("lt", When::Sooner),
        ]
        .into_iter()
        .find(|(name, _)| is(option, name))
        .map(|(_, w)| w);
        match next {
            Some(w) if when == When::Always || when == w => when = w,
            Some(_) => {
                return Frame::error(
                    "ERR NX and XX, GT or LT options at the same time are not compatible",
                )
            }
            None => return Frame::error(format!("ERR Unsupported option {}", args::shown(option))),
        }
    }
    let unit = if command.starts_with('p') { 1 } else { 1000 };
    let Some(ms) = n.checked_mul(unit) else {
        return Frame::error(format!("ERR invalid expire time in '{command}' command"));
    };
    let now = wall_clock_ms() as i64;
    let at_ms = if command.ends_with("at") {
        ms
    } else {
        now.saturating_add(ms)
    };
    let ttl = Ttl::at(at_ms);
    let keyspace = session.keyspace();
    if when != When::Always {
        let read = match keyspace.read(&args[1]).await {
            Ok(read) => read,
            Err(e) => return e,
        };
        let Some(value) = read.chosen() else {
            return Frame::Integer(0);
        };
        let current = value.expires_at_ms.map(|at| at as i64);
        let holds = match when {
            When::NoExpiry => current.is_none(),
            When::HasExpiry => current.is_some(),
            When::Later => current.is_some_and(|c| at_ms > c),
            When::Sooner => current.is_none_or(|c| at_ms < c),
            When::Always => true,
        };
        if !holds {
            return Frame::Integer(0);
        }
    }
    match ttl {
        // Redis deletes a key given an expiry in the past.
        Ttl::Past => {
            let read = match keyspace.read(&args[1]).await {
                Ok(read) => read,
                Err(e) => return e,
            };
            match keyspace.delete_read(&args[1], &read).await {
                Ok(existed) => Frame::Integer(existed.into()),
                Err(e) => e,
            }
        }
        Ttl::Ms(ms) => set_ttl(session, &args[1], Some(ms)).await,
        Ttl::None => set_ttl(session, &args[1], None).await,
    }
}

/// Gives the key's value a new TTL (or none): the core's expire write, which rewrites the one
/// value the coordinator holds. A key with siblings cannot take it; it is then rewritten as a
/// read-modify-write of the value GET shows, which resolves the siblings to that value.
async fn set_ttl(session: &Session, key: &[u8], ttl_ms: Option<u64>) -> Frame {
    let keyspace = session.keyspace();
    match keyspace.expire(key, ttl_ms).await {
        Ok(Expired::Done) => Frame::Integer(1),
        Ok(Expired::NoValue) => Frame::Integer(0),
        Ok(Expired::Siblings) => {
            let read = match keyspace.read(key).await {
                Ok(read) => read,
                Err(e) => return e,
            };
            let Some(value) = read.chosen() else {
                return Frame::Integer(0);
            };
            let ttl = ttl_ms.map_or(Ttl::None, Ttl::Ms);
            match keyspace
                .put(key, value.data.clone(), ttl, Some(&read))
                .await
            {
                Ok(_) => Frame::Integer(1),
                Err(e) => e,
            }
        }
        Err(e) => e,
    }
}

/// `TTL`, `PTTL`, `EXPIRETIME`, `PEXPIRETIME`: -2 for a missing key, -1 for no expiry.
pub async fn ttl(session: &Session, command: &str, args: &[Bytes]) -> Frame {
    let read: Read = match session.keyspace().read(&args[1]).await {
        Ok(read) => read,
        Err(e) => return e,
    };
    let Some(value) = read.chosen() else {
        return Frame::Integer(-2);
    };
    let Some(at) = value.expires_at_ms else {
        return Frame::Integer(-1);
    };
    let left = at.saturating_sub(wall_clock_ms()) as i64;
    Frame::Integer(match command {
        "ttl" => (left + 500) / 1000,
        "pttl" => left,
        "expiretime" => at as i64 / 1000,
        _ => at as i64,
    })
}

/// `PERSIST key`: 1 when an expiry was removed, 0 when the key is missing or had none.
pub async fn persist(session: &Session, args: &[Bytes]) -> Frame {
    let read = match session.keyspace().read(&args[1]).await {
        Ok(read) => read,
        Err(e) => return e,
    };
    match read.chosen() {
        Some(value) if value.expires_at_ms.is_some() => set_ttl(session, &args[1], None).await,
        _ => Frame::Integer(0),
    }
}

/// `SCAN cursor [MATCH pattern] [COUNT count] [TYPE type]` over this peer's keys.
pub async fn scan(session: &Session, args: &[Bytes]) -> Frame {
    let cursor: u64 = match std::str::from_utf8(&args[1])
        .ok()
        .and_then(|c| c.parse().ok())
    {
        Some(c) => c,
        None => return Frame::error("ERR invalid cursor"),
    };
    let mut pattern: Option<&[u8]> = None;
    let mut count = SCAN_DEFAULT_COUNT;
    let mut strings = true;
    let mut i = 2;
    while i < args.len() {
        let Some(value) = args.get(i + 1) else {
            return args::syntax_error();
        };
        if is(&args[i], "match") {
            pattern = Some(value);
        } else if is(&args[i], "count") {
            count = match args::integer(value) {
                Ok(n) if n >= 1 => n as usize,
                Ok(_) => return args::syntax_error(),
                Err(e) => return e,
            };
        } else if is(&args[i], "type") {
            strings = is(value, "string");
        } else {
            return args::syntax_error();
        }
        i += 2;
    }
    let Some(page) = session
        .shared
        .driver
        .scan(cursor, count, SCAN_PARTITIONS_PER_CALL)
        .await
    else {
        return Frame::error("TRYAGAIN the peer is shutting down");
    };
    let keys = page
        .keys
        .into_iter()
        .filter(|key| strings && pattern.is_none_or(|p| glob_match(p, key)))
        .map(Frame::bulk)
        .collect();
    Frame::Array(vec![Frame::bulk(page.next.to_string()), Frame::Array(keys)])
}

/// `RANDOMKEY`: a key this peer holds, from a random ring position on; nil when it holds none.
// A random starting point is not protocol state: the shell may draw it (see clippy.toml).
#[allow(clippy::disallowed_methods)]
pub async fn randomkey(session: &Session) -> Frame {
    let driver = &session.shared.driver;
    let start: u64 = rand::random();
    for from in [start, 0] {
        match driver.scan(from, 1, usize::MAX).await {
            Some(page) => {
                if let Some(key) = page.keys.into_iter().next() {
                    return Frame::bulk(key);
                }
            }
            None => return Frame::error("TRYAGAIN the peer is shutting down"),
        }
    }
    Frame::Null
}
