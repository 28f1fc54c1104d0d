//! Every command this endpoint knows, with Redis's arity and key positions: the one table
//! that arity checks, `COMMAND`, `COMMAND COUNT`, `COMMAND INFO` and `COMMAND LIST` read, so
//! what the endpoint accepts and what it says it accepts cannot drift apart.

use crate::api::resp::frame::Frame;

/// One command's description, as Redis's `COMMAND` reports it.
#[derive(Clone, Copy, Debug)]
pub struct CommandSpec {
    /// Lower case, as `COMMAND` lists names.
    pub name: &'static str,
    /// Redis's convention: `n` means exactly `n` words (name included), `-n` at least `n`.
    pub arity: i32,
    pub flags: &'static [&'static str],
    pub first_key: i32,
    pub last_key: i32,
    pub step: i32,
}

impl CommandSpec {
    /// Whether `words` (the command name included) fits this command's arity.
    pub fn arity_ok(&self, words: usize) -> bool {
        let words = words as i64;
        let arity = i64::from(self.arity);
        if arity >= 0 {
            words == arity
        } else {
            words >= -arity
        }
    }

    /// The reply element of `COMMAND` / `COMMAND INFO` for this command.
    pub fn info(&self) -> Frame {
        Frame::Array(vec![
            Frame::bulk(self.name),
            Frame::Integer(self.arity.into()),
            Frame::Set(
                self.flags
                    .iter()
                    .map(|f| Frame::Simple((*f).into()))
                    .collect(),
            ),
            Frame::Integer(self.first_key.into()),
            Frame::Integer(self.last_key.into()),
            Frame::Integer(self.step.into()),
            Frame::Set(Vec::new()),
            Frame::Array(Vec::new()),
            Frame::Array(Vec::new()),
            Frame::Array(Vec::new()),
        ])
    }
}

const fn spec(
    name: &'static str,
    arity: i32,
    flags: &'static [&'static str],
    keys: (i32, i32, i32),
) -> CommandSpec {
    CommandSpec {
        name,
        arity,
        flags,
        first_key: keys.0,
        last_key: keys.1,
        step: keys.2,
    }
}

const NONE: (i32, i32, i32) = (0, 0, 0);
const ONE: (i32, i32, i32) = (1, 1, 1);
const ALL: (i32, i32, i32) = (1, -1, 1);
const PAIRS: (i32, i32, i32) = (1, -1, 2);
const R: &[&str] = &["readonly", "fast"];
const W: &[&str] = &["write", "denyoom"];
const WF: &[&str] = &["write", "fast"];
const CONN: &[&str] = &["noscript", "loading", "stale", "fast"];
const OPEN: &[&str] = &["noscript", "loading", "stale", "fast", "no_auth"];
const PUBSUB: &[&str] = &["pubsub", "noscript", "loading", "stale"];
const ADMIN: &[&str] = &["admin", "noscript", "loading", "stale"];

/// Sorted by name (binary search).
pub const COMMANDS: &[CommandSpec] = &[
    spec("append", 3, W, ONE),
    spec("auth", -2, OPEN, NONE),
    spec("client", -2, CONN, NONE),
    spec("command", -1, CONN, NONE),
    spec("config", -2, ADMIN, NONE),
    spec("dbsize", 1, R, NONE),
    spec("decr", 2, W, ONE),
    spec("decrby", 3, W, ONE),
    spec("del", -2, &["write"], ALL),
    spec("echo", 2, CONN, NONE),
    spec("exists", -2, R, ALL),
    spec("expire", -3, WF, ONE),
    spec("expireat", -3, WF, ONE),
    spec("expiretime", 2, R, ONE),
    spec("flushall", -1, &["write"], NONE),
    spec("flushdb", -1, &["write"], NONE),
    spec("get", 2, R, ONE),
    spec("getdel", 2, WF, ONE),
    spec("getex", -2, WF, ONE),
    spec("getrange", 4, &["readonly"], ONE),
    spec("getset", 3, W, ONE),
    spec("hello", -1, OPEN, NONE),
    spec("incr", 2, W, ONE),
    spec("incrby", 3, W, ONE),
    spec("incrbyfloat", 3, W, ONE),
    spec("info", -1, &["loading", "stale"], NONE),
    spec("mget", -2, R, ALL),
    spec("mset", -3, W, PAIRS),
    spec("msetnx", -3, W, PAIRS),
    spec("persist", 2, WF, ONE),
    spec("pexpire", -3, WF, ONE),
    spec("pexpireat", -3, WF, ONE),
    spec("pexpiretime", 2, R, ONE),
    spec("ping", -1, CONN, NONE),
    spec("psetex", 4, W, ONE),
    spec("psubscribe", -2, PUBSUB, NONE),
    spec("pttl", 2, R, ONE),
    spec("publish", 3, PUBSUB, NONE),
    spec("pubsub", -2, PUBSUB, NONE),
    spec("punsubscribe", -1, PUBSUB, NONE),
    spec("quit", -1, OPEN, NONE),
    spec("randomkey", 1, &["readonly"], NONE),
    spec("rc.cas", -4, W, ONE),
    spec("rc.consistency", -1, CONN, NONE),
    spec("rc.getall", 2, R, ONE),
    spec("rc.hotkeys", -1, &["readonly", "loading", "stale"], NONE),
    spec("rc.set", -5, W, ONE),
    spec("reset", 1, OPEN, NONE),
    spec("scan", -2, &["readonly"], NONE),
    spec("select", 2, CONN, NONE),
    spec("set", -3, W, ONE),
    spec("setex", 4, W, ONE),
    spec("setnx", 3, W, ONE),
    spec("setrange", 4, W, ONE),
    spec("strlen", 2, R, ONE),
    spec("subscribe", -2, PUBSUB, NONE),
    spec("touch", -2, R, ALL),
    spec("ttl", 2, R, ONE),
    spec("type", 2, R, ONE),
    spec("unlink", -2, WF, ALL),
    spec("unsubscribe", -1, PUBSUB, NONE),
];

/// The command named `name` (any case).
pub fn lookup(name: &[u8]) -> Option<&'static CommandSpec> {
    let lower = name.to_ascii_lowercase();
    COMMANDS
        .binary_search_by(|c| c.name.as_bytes().cmp(&lower[..]))
        .ok()
        .map(|i| &COMMANDS[i])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_sorted_so_every_name_is_found() {
        assert!(COMMANDS.windows(2).all(|w| w[0].name < w[1].name));
        for c in COMMANDS {
            assert_eq!(
                lookup(c.name.to_ascii_uppercase().as_bytes()).unwrap().name,
                c.name
            );
        }
        assert!(lookup(b"nosuch").is_none());
    }

    #[test]
    fn arity_follows_redis_convention() {
        let get = lookup(b"get").unwrap();
        assert!(get.arity_ok(2) && !get.arity_ok(1) && !get.arity_ok(3));
        let set = lookup(b"set").unwrap();
        assert!(set.arity_ok(3) && set.arity_ok(7) && !set.arity_ok(2));
    }
}
