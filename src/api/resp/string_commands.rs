//! String commands: GET, SET and its options, SETNX, SETEX, PSETEX, GETSET, GETDEL, GETEX,
//! MGET, MSET, MSETNX, APPEND, STRLEN, GETRANGE, SETRANGE; and the counters, INCR, DECR,
//! INCRBY and DECRBY (a counter CRDT in the core: no increment is lost to a race).
//!
//! Conditional writes (SET NX/XX/IFEQ, SETNX, MSETNX) are decided by a consensus round per key
//! (`Keyspace::conditional`): two clients racing to create one free key never both succeed.
//! Two combinations still read, then write with the read's context: `SET … XX GET` (the old
//! value a conditional round replaced is not returned by it) and `SET … KEEPTTL` with a
//! condition; `docs/resp.md` says so. MSETNX is atomic per key, not across its keys.

use crate::api::resp::args::{self, is};
use crate::api::resp::frame::Frame;
use crate::api::resp::keyspace::{owned, Conditional, Keyspace, Ttl};
use crate::api::resp::session::Session;
use crate::core::paxos::Condition;
use bytes::Bytes;
use futures_util::future::join_all;
use std::collections::BTreeMap;

pub async fn get(session: &Session, args: &[Bytes]) -> Frame {
    match session.keyspace().read(&args[1]).await {
        Ok(read) => read.chosen_frame(),
        Err(e) => e,
    }
}

/// SET's options, parsed as Redis parses them.
#[derive(Default)]
struct SetOptions {
    ttl: Option<Ttl>,
    nx: bool,
    xx: bool,
    keep_ttl: bool,
    get: bool,
    /// Valkey's `IFEQ comparison-value`: write only if the key holds exactly this value.
    ifeq: Option<Vec<u8>>,
}

fn invalid_expire(command: &str) -> Frame {
    Frame::error(format!("ERR invalid expire time in '{command}' command"))
}

/// A relative or absolute expiry option's value as a TTL; `unit_ms` is 1000 for seconds.
fn expiry(arg: &[u8], unit_ms: i64, absolute: bool, command: &str) -> Result<Ttl, Frame> {
    let n = args::integer(arg)?;
    if n <= 0 {
        return Err(invalid_expire(command));
    }
    let ms = n
        .checked_mul(unit_ms)
        .ok_or_else(|| invalid_expire(command))?;
    Ok(if absolute {
        Ttl::at(ms)
    } else {
        Ttl::Ms(ms as u64)
    })
}

fn parse_set_options(args: &[Bytes]) -> Result<SetOptions, Frame> {
    let mut o = SetOptions::default();
    let mut i = 0;
    while i < args.len() {
        let a = &args[i];
        let expiry_option = [
            ("ex", 1000, false),
            ("px", 1, false),
            ("exat", 1000, true),
            ("pxat", 1, true),
        ]
        .into_iter()
        .find(|(name, _, _)| is(a, name));
        if let Some((_, unit, absolute)) = expiry_option {
            let value = args.get(i + 1).ok_or_else(args::syntax_error)?;
            if o.ttl.is_some() || o.keep_ttl {
                return Err(args::syntax_error());
            }
            o.ttl = Some(expiry(value, unit, absolute, "set")?);
            i += 2;
            continue;
        }
        if is(a, "ifeq") && !o.nx && !o.xx && o.ifeq.is_none() {
            let value = args.get(i + 1).ok_or_else(args::syntax_error)?;
            o.ifeq = Some(value.to_vec());
            i += 2;
            continue;
        }
        if is(a, "nx") && !o.xx && o.ifeq.is_none() {
            o.nx = true;
        } else if is(a, "xx") && !o.nx && o.ifeq.is_none() {
            o.xx = true;
        } else if is(a, "keepttl") && o.ttl.is_none() {
            o.keep_ttl = true;
        } else if is(a, "get") {
            o.get = true;
        } else {
            return Err(args::syntax_error());
        }
        i += 1;
    }
    Ok(o)
}

/// `SET key value [NX|XX|IFEQ old] [GET] [EX s|PX ms|EXAT s|PXAT ms|KEEPTTL]`.
pub async fn set(session: &Session, args: &[Bytes]) -> Frame {
    let options = match parse_set_options(&args[3..]) {
        Ok(o) => o,
        Err(e) => return e,
    };
    let keyspace = session.keyspace();
    let (key, value) = (&args[1], owned(&args[2]));
    let condition = if options.nx {
        Some(Condition::Absent)
    } else if options.xx && !options.get {
        Some(Condition::Present)
    } else {
        options.ifeq.clone().map(Condition::Equals)
    };
    if let (Some(condition), false) = (condition, options.keep_ttl) {
        let ttl = options.ttl.unwrap_or(Ttl::None);
        return match keyspace.conditional(key, value, ttl, condition).await {
            // Applied: under NX there was no old value, under IFEQ it was the one named.
            Ok(Conditional::Applied(_)) if options.get => match options.ifeq {
                Some(old) => Frame::bulk(old),
                None => Frame::Null,
            },
            Ok(Conditional::Applied(_)) => Frame::ok(),
            Ok(Conditional::NotApplied(read)) if options.get => read.chosen_frame(),
            Ok(Conditional::NotApplied(_)) => Frame::Null,
            Err(e) => e,
        };
    }
    if !(options.nx || options.xx || options.get || options.keep_ttl) {
        return match keyspace
            .put(key, value, options.ttl.unwrap_or(Ttl::None), None)
            .await
        {
            Ok(_) => Frame::ok(),
            Err(e) => e,
        };
    }
    let read = match keyspace.read(key).await {
        Ok(read) => read,
        Err(e) => return e,
    };
    let skipped = (options.nx && read.exists())
        || (options.xx && !read.exists())
        || options.ifeq.as_ref().is_some_and(|old| {
            read.values.len() != 1 || read.chosen().is_some_and(|v| &v.data != old)
        });
    let answer = |done: bool| {
        if options.get {
            read.chosen_frame()
        } else if done {
            Frame::ok()
        } else {
            Frame::Null
        }
    };
    if skipped {
        return answer(false);
    }
    let ttl = if options.keep_ttl {
        Ttl::kept(&read)
    } else {
        options.ttl.unwrap_or(Ttl::None)
    };
    match keyspace.put(key, value, ttl, Some(&read)).await {
        Ok(_) => answer(true),
        Err(e) => e,
    }
}

/// Writes `value` unless the key holds one, decided by a consensus round; whether it wrote
/// (SETNX, and MSETNX per key).
async fn set_if_missing(keyspace: &Keyspace, key: &[u8], value: Vec<u8>) -> Result<bool, Frame> {
    let outcome = keyspace
        .conditional(key, value, Ttl::None, Condition::Absent)
        .await?;
    Ok(matches!(outcome, Conditional::Applied(_)))
}

pub async fn setnx(session: &Session, args: &[Bytes]) -> Frame {
    match set_if_missing(&session.keyspace(), &args[1], owned(&args[2])).await {
        Ok(wrote) => Frame::Integer(wrote.into()),
        Err(e) => e,
    }
}

/// `SETEX key seconds value`, `PSETEX key milliseconds value`.
pub async fn setex(session: &Session, command: &str, args: &[Bytes]) -> Frame {
    let unit = if command == "setex" { 1000 } else { 1 };
    let ttl = match expiry(&args[2], unit, false, command) {
        Ok(ttl) => ttl,
        Err(e) => return e,
    };
    match session
        .keyspace()
        .put(&args[1], owned(&args[3]), ttl, None)
        .await
    {
        Ok(_) => Frame::ok(),
        Err(e) => e,
    }
}

/// `GETSET key value`: SET … GET without options (the TTL is dropped, as in Redis).
pub async fn getset(session: &Session, args: &[Bytes]) -> Frame {
    let keyspace = session.keyspace();
    let read = match keyspace.read(&args[1]).await {
        Ok(read) => read,
        Err(e) => return e,
    };
    match keyspace
        .put(&args[1], owned(&args[2]), Ttl::None, Some(&read))
        .await
    {
        Ok(_) => read.chosen_frame(),
        Err(e) => e,
    }
}

pub async fn getdel(session: &Session, args: &[Bytes]) -> Frame {
    let keyspace = session.keyspace();
    let read = match keyspace.read(&args[1]).await {
        Ok(read) => read,
        Err(e) => return e,
    };
    match keyspace.delete_read(&args[1], &read).await {
        Ok(_) => read.chosen_frame(),
        Err(e) => e,
    }
}

/// `GETEX key [EX s|PX ms|EXAT s|PXAT ms|PERSIST]`: the value, with its TTL changed by
/// rewriting the value it returns with the read's context.
pub async fn getex(session: &Session, args: &[Bytes]) -> Frame {
    let mut ttl: Option<Ttl> = None;
    let mut i = 2;
    while i < args.len() {
        let a = &args[i];
        let option = [
            ("ex", 1000, false),
            ("px", 1, false),
            ("exat", 1000, true),
            ("pxat", 1, true),
        ]
        .into_iter()
        .find(|(name, _, _)| is(a, name));
        if ttl.is_some() {
            return args::syntax_error();
        }
        if let Some((_, unit, absolute)) = option {
            let Some(value) = args.get(i + 1) else {
                return args::syntax_error();
            };
            ttl = match expiry(value, unit, absolute, "getex") {
                Ok(t) => Some(t),
                Err(e) => return e,
            };
            i += 2;
        } else if is(a, "persist") {
            ttl = Some(Ttl::None);
            i += 1;
        } else {
            return args::syntax_error();
        }
    }
    let keyspace = session.keyspace();
    let read = match keyspace.read(&args[1]).await {
        Ok(read) => read,
        Err(e) => return e,
    };
    if let (Some(ttl), Some(value)) = (ttl, read.chosen()) {
        if let Err(e) = keyspace
            .put(&args[1], value.data.clone(), ttl, Some(&read))
            .await
        {
            return e;
        }
    }
    read.chosen_frame()
}

/// `MGET key…`: every key read at once; nil for a missing key; the first failure fails all.
pub async fn mget(session: &Session, args: &[Bytes]) -> Frame {
    let keyspace = session.keyspace();
    let reads = join_all(args[1..].iter().map(|key| keyspace.read(key))).await;
    let mut values = Vec::with_capacity(reads.len());
    for read in reads {
        match read {
            Ok(read) => values.push(read.chosen_frame()),
            Err(e) => return e,
        }
    }
    Frame::Array(values)
}

/// The pairs of `MSET`/`MSETNX`, the last value of a key given twice winning (as in Redis,
/// which applies them in order): concurrent writes of one key would race.
fn pairs(command: &str, args: &[Bytes]) -> Result<BTreeMap<Bytes, Bytes>, Frame> {
    if args.len() % 2 == 0 {
        return Err(args::wrong_arity(command));
    }
    Ok(args[1..]
        .chunks(2)
        .map(|kv| (kv[0].clone(), kv[1].clone()))
        .collect())
}

/// `MSET key value…`: every key written at once (plain SETs); the first failure is reported,
/// but writes that succeeded stay (MSET is not atomic across keys here).
pub async fn mset(session: &Session, args: &[Bytes]) -> Frame {
    let pairs = match pairs("mset", args) {
        Ok(p) => p,
        Err(e) => return e,
    };
    let keyspace = session.keyspace();
    let writes = pairs
        .iter()
        .map(|(k, v)| keyspace.put(k, owned(v), Ttl::None, None));
    match join_all(writes).await.into_iter().find_map(Result::err) {
        Some(e) => e,
        None => Frame::ok(),
    }
}

/// `MSETNX key value…`: 1 and every key written when none existed, else 0 and none. Read,
/// then write: not atomic against other clients (see the module's note).
pub async fn msetnx(session: &Session, args: &[Bytes]) -> Frame {
    let pairs = match pairs("msetnx", args) {
        Ok(p) => p,
        Err(e) => return e,
    };
    let keyspace = session.keyspace();
    for read in join_all(pairs.keys().map(|k| keyspace.read(k))).await {
        match read {
            Ok(read) if read.exists() => return Frame::Integer(0),
            Ok(_) => {}
            Err(e) => return e,
        }
    }
    // Every key was free when read: each is now created only if still free (a consensus
    // round per key). Atomic per key, not across keys: a key taken meanwhile answers 0 while
    // the others may have been created.
    let writes = pairs
        .iter()
        .map(|(k, v)| set_if_missing(&keyspace, k, owned(v)));
    let mut all = true;
    for outcome in join_all(writes).await {
        match outcome {
            Ok(wrote) => all &= wrote,
            Err(e) => return e,
        }
    }
    Frame::Integer(all.into())
}

/// A value longer than the peer accepts, refused before anything is written.
fn too_large(session: &Session, len: usize) -> Option<Frame> {
    let limit = session.shared.settings.max_value_bytes;
    (len > limit).then(|| {
        Frame::error(format!(
            "ERR string exceeds maximum allowed size (proto-max-bulk-len): {len} bytes, the limit is {limit}"
        ))
    })
}

/// `APPEND key value`: the new length; the TTL is kept.
pub async fn append(session: &Session, args: &[Bytes]) -> Frame {
    let keyspace = session.keyspace();
    let read = match keyspace.read(&args[1]).await {
        Ok(read) => read,
        Err(e) => return e,
    };
    let mut value = read.chosen().map(|v| v.data.clone()).unwrap_or_default();
    value.extend_from_slice(&args[2]);
    if let Some(e) = too_large(session, value.len()) {
        return e;
    }
    let len = value.len() as i64;
    match keyspace
        .put(&args[1], value, Ttl::kept(&read), Some(&read))
        .await
    {
        Ok(_) => Frame::Integer(len),
        Err(e) => e,
    }
}

pub async fn strlen(session: &Session, args: &[Bytes]) -> Frame {
    match session.keyspace().read(&args[1]).await {
        Ok(read) => Frame::Integer(read.chosen().map_or(0, |v| v.data.len() as i64)),
        Err(e) => e,
    }
}

/// The bytes `start..=end` of a value of `len` bytes, negative offsets from the end, as
/// Redis's GETRANGE clamps them; `None` for an empty range.
pub fn byte_range(start: i64, end: i64, len: usize) -> Option<std::ops::Range<usize>> {
    let len = len as i64;
    if len == 0 || (start < 0 && end < 0 && start > end) {
        return None;
    }
    let from_end = |i: i64| if i < 0 { (len + i).max(0) } else { i };
    let (start, end) = (from_end(start), from_end(end).min(len - 1));
    (start <= end).then(|| start as usize..end as usize + 1)
}

pub async fn getrange(session: &Session, args: &[Bytes]) -> Frame {
    let (start, end) = match (args::integer(&args[2]), args::integer(&args[3])) {
        (Ok(s), Ok(e)) => (s, e),
        (Err(e), _) | (_, Err(e)) => return e,
    };
    match session.keyspace().read(&args[1]).await {
        Ok(read) => {
            let data = read.chosen().map(|v| &v.data[..]).unwrap_or_default();
            match byte_range(start, end, data.len()) {
                Some(range) => Frame::bulk(Bytes::copy_from_slice(&data[range])),
                None => Frame::bulk(""),
            }
        }
        Err(e) => e,
    }
}

/// `SETRANGE key offset value`: overwrite from `offset`, zero-padding a shorter value; the new
/// length; the TTL is kept.
pub async fn setrange(session: &Session, args: &[Bytes]) -> Frame {
    let offset = match args::integer(&args[2]) {
        Ok(o) if o >= 0 => o as usize,
        Ok(_) => return Frame::error("ERR offset is out of range"),
        Err(e) => return e,
    };
    let patch = &args[3];
    if let Some(e) = too_large(session, offset.saturating_add(patch.len())) {
        return e;
    }
    let keyspace = session.keyspace();
    let read = match keyspace.read(&args[1]).await {
        Ok(read) => read,
        Err(e) => return e,
    };
    let mut value = read.chosen().map(|v| v.data.clone()).unwrap_or_default();
    if patch.is_empty() {
        return Frame::Integer(value.len() as i64);
    }
    if value.len() < offset + patch.len() {
        value.resize(offset + patch.len(), 0);
    }
    value[offset..offset + patch.len()].copy_from_slice(patch);
    let len = value.len() as i64;
    match keyspace
        .put(&args[1], value, Ttl::kept(&read), Some(&read))
        .await
    {
        Ok(_) => Frame::Integer(len),
        Err(e) => e,
    }
}

/// INCR, DECR, INCRBY, DECRBY: the cluster's counter CRDT (`core::counter`), so concurrent
/// increments at any peers all count. Redis's replies and errors: the new value; `ERR value
/// is not an integer or out of range` for a key holding something else or a bad argument;
/// an overflow is an error, never a wrap.
pub async fn counter(session: &Session, command: &str, args: &[Bytes]) -> Frame {
    let by = match command {
        "incr" => 1,
        "decr" => -1,
        "incrby" => match args::integer(&args[2]) {
            Ok(n) => n,
            Err(e) => return e,
        },
        "decrby" => match args::integer(&args[2]).map(i64::checked_neg) {
            Ok(Some(n)) => n,
            Ok(None) => return Frame::error("ERR decrement would overflow"),
            Err(e) => return e,
        },
        // Counters are integers: a float would need a second CRDT and its own rounding rules.
        _ => {
            return Frame::error(
                "ERR INCRBYFLOAT is not supported: ringcache counters are 64-bit integers",
            )
        }
    };
    match session.keyspace().increment(&args[1], by).await {
        Ok(value) => Frame::Integer(value),
        Err(e) => e,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn getrange_clamps_as_redis_does() {
        // "Hello World" examples from Redis's GETRANGE documentation.
        let len = "This is a string".len();
        assert_eq!(byte_range(0, 3, len), Some(0..4));
        assert_eq!(byte_range(-3, -1, len), Some(13..16));
        assert_eq!(byte_range(0, -1, len), Some(0..16));
        assert_eq!(byte_range(10, 100, len), Some(10..16));
        assert_eq!(byte_range(5, 3, len), None);
        assert_eq!(byte_range(-1, -5, len), None);
        assert_eq!(byte_range(0, 0, 0), None);
        assert_eq!(byte_range(-100, 2, len), Some(0..3));
        assert_eq!(byte_range(20, 30, len), None);
    }

    #[test]
    fn set_options_conflict_as_in_redis() {
        let args = |s: &[&str]| {
            s.iter()
                .map(|a| Bytes::from(a.to_string()))
                .collect::<Vec<_>>()
        };
        assert!(parse_set_options(&args(&["NX", "XX"])).is_err());
        assert!(parse_set_options(&args(&["EX", "1", "PX", "5"])).is_err());
        assert!(parse_set_options(&args(&["KEEPTTL", "EX", "1"])).is_err());
        assert!(parse_set_options(&args(&["EX"])).is_err());
        assert!(parse_set_options(&args(&["EX", "0"])).is_err());
        let o = parse_set_options(&args(&["nx", "get", "px", "1500"])).unwrap();
        assert!(o.nx && o.get && o.ttl == Some(Ttl::Ms(1500)));
    }
}
