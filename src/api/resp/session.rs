//! One client's session: what a connection remembers between commands (protocol version,
//! authentication, name, consistency levels) and the dispatch of each request to its command.
//!
//! # Promises
//! - Every request is checked in Redis's order: a known command (else `ERR unknown
//!   command`), its arity (else `ERR wrong number of arguments`), then authentication: on a
//!   peer with a client token, every command but AUTH, HELLO, QUIT and RESET answers
//!   `-NOAUTH Authentication required.` until the session has authenticated, and reads or
//!   changes nothing.
//! - A session's consistency levels apply to its own reads and writes only; they start at
//!   the defaults below and are changed with `RC.CONSISTENCY`.

use crate::api::request_log;
use crate::api::resp::args;
use crate::api::resp::command_table::{self, CommandSpec};
use crate::api::resp::frame::{Frame, Protocol};
use crate::api::resp::keyspace::Keyspace;
use crate::api::resp::shared::RespShared;
use crate::api::resp::{
    conn_commands, key_commands, pubsub_commands, ringcache_commands, server_commands,
    string_commands,
};
use crate::core::types::Quorum;
use crate::shell::pubsub::Subscriber;
use bytes::Bytes;
use futures_util::future::join_all;
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// A session's read quorum until `RC.CONSISTENCY` changes it.
pub const DEFAULT_READ_QUORUM: Quorum = Quorum::Quorum;
/// A session's write quorum until `RC.CONSISTENCY` changes it.
pub const DEFAULT_WRITE_QUORUM: Quorum = Quorum::Quorum;

/// What the connection does after answering.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum After {
    Continue,
    /// Answer, flush, close (QUIT).
    Close,
}

pub struct Session {
    pub shared: Arc<RespShared>,
    pub id: u64,
    pub peer_addr: SocketAddr,
    pub name: Option<Bytes>,
    pub lib_name: Option<Bytes>,
    pub lib_ver: Option<Bytes>,
    pub protocol: Protocol,
    pub authenticated: bool,
    pub r: Quorum,
    pub w: Quorum,
    pub created: tokio::time::Instant,
    /// The last command run, for `CLIENT INFO`.
    pub last_command: &'static str,
    /// This connection's subscriptions, from its first SUBSCRIBE or PSUBSCRIBE until it has
    /// none left (or RESET).
    pub subscriber: Option<Subscriber>,
}

impl Session {
    // Sessions are created on the shell's clock (see clippy.toml: only the core must not).
    #[allow(clippy::disallowed_methods)]
    pub fn new(shared: Arc<RespShared>, peer_addr: SocketAddr) -> Session {
        let id = shared.counters.next_client_id();
        let authenticated = shared.client_token.is_none();
        Session {
            shared,
            id,
            peer_addr,
            name: None,
            lib_name: None,
            lib_ver: None,
            protocol: Protocol::Resp2,
            authenticated,
            r: DEFAULT_READ_QUORUM,
            w: DEFAULT_WRITE_QUORUM,
            created: tokio::time::Instant::now(),
            last_command: "NULL",
            subscriber: None,
        }
    }

    /// Back to a fresh connection's state (RESET), keeping the id.
    pub fn reset(&mut self) {
        self.name = None;
        self.protocol = Protocol::Resp2;
        self.authenticated = self.shared.client_token.is_none();
        self.r = DEFAULT_READ_QUORUM;
        self.w = DEFAULT_WRITE_QUORUM;
        self.subscriber = None;
    }

    /// Whether this is a RESP2 connection with subscriptions (Redis's "subscribed mode").
    pub fn in_subscribed_mode(&self) -> bool {
        self.protocol == Protocol::Resp2 && self.subscriber.is_some()
    }

    /// The keyspace as this session sees it, for one command: a command takes it once, so
    /// each command's requests share one fresh trace id.
    pub fn keyspace(&self) -> Keyspace {
        Keyspace {
            driver: self.shared.driver.clone(),
            r: self.r,
            w: self.w,
            trace: request_log::new_trace_id(),
            slow_request: self.shared.settings.slow_request,
        }
    }

    /// Redis's checks before a command runs, in Redis's order: a known command, its arity,
    /// authentication, subscribed mode. The refusal to answer, if any; nothing changes.
    fn precheck(&self, args: &[Bytes]) -> Result<&'static CommandSpec, Frame> {
        let Some(spec) = command_table::lookup(&args[0]) else {
            return Err(args::unknown_command(args));
        };
        if !spec.arity_ok(args.len()) {
            return Err(args::wrong_arity(spec.name));
        }
        if !self.authenticated && !matches!(spec.name, "auth" | "hello" | "quit" | "reset") {
            return Err(Frame::error("NOAUTH Authentication required."));
        }
        let subscribed_mode_ok = matches!(
            spec.name,
            "subscribe" | "unsubscribe" | "psubscribe" | "punsubscribe" | "ping" | "quit" | "reset"
        );
        if self.in_subscribed_mode() && !subscribed_mode_ok {
            return Err(Frame::error(format!(
                "ERR Can't execute '{}': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / \
                 RESET are allowed in this context",
                spec.name
            )));
        }
        Ok(spec)
    }

    /// Runs a pipeline's requests and answers each, in order. Consecutive key commands on
    /// distinct keys (at most [`MAX_SIDE_BY_SIDE`]) run side by side: none of them changes
    /// the session, and no key is named by two of them, so the replies are those of running
    /// them one after another. Anything else runs alone, in its place; after QUIT nothing
    /// more runs.
    pub async fn execute_pipeline(
        &mut self,
        requests: Vec<Vec<Bytes>>,
    ) -> Vec<(Vec<Frame>, After)> {
        // One request, the common case: nothing to group.
        if let [_] = requests.as_slice() {
            let args = requests.into_iter().next().expect("one request");
            return vec![self.execute(args).await];
        }
        let mut answers = Vec::with_capacity(requests.len());
        let mut next = 0;
        while next < requests.len() {
            let mut end = next;
            let mut keys: BTreeSet<&[u8]> = BTreeSet::new();
            while end < requests.len() && end - next < MAX_SIDE_BY_SIDE {
                let args = &requests[end];
                let joins = match self.precheck(args) {
                    // A refusal changes nothing: it may stand in any group.
                    Err(_) => true,
                    Ok(spec) => match side_by_side_keys(spec, args) {
                        Some(named) if named.iter().all(|k| !keys.contains(k)) => {
                            keys.extend(named);
                            true
                        }
                        _ => false,
                    },
                };
                if !joins {
                    break;
                }
                end += 1;
            }
            if end == next {
                let answer = self.execute(requests[next].clone()).await;
                let close = answer.1 == After::Close;
                answers.push(answer);
                if close {
                    return answers;
                }
                next += 1;
                continue;
            }
            let this = &*self;
            let group = requests[next..end].iter().map(|args| async move {
                match this.precheck(args) {
                    Err(refusal) => refusal,
                    Ok(spec) => this.run_key_command(spec, args).await,
                }
            });
            let replies = join_all(group).await;
            self.shared
                .counters
                .commands_processed
                .fetch_add(replies.len() as u64, Ordering::Relaxed);
            if let Ok(spec) = self.precheck(&requests[end - 1]) {
                self.last_command = spec.name;
            }
            answers.extend(replies.into_iter().map(|r| (vec![r], After::Continue)));
            next = end;
        }
        answers
    }

    /// Runs one request (`args[0]` is the command name) and says what to answer: one frame,
    /// or several for the pub/sub commands (a confirmation per channel).
    pub async fn execute(&mut self, args: Vec<Bytes>) -> (Vec<Frame>, After) {
        self.shared
            .counters
            .commands_processed
            .fetch_add(1, Ordering::Relaxed);
        let spec = match self.precheck(&args) {
            Ok(spec) => spec,
            Err(refusal) => return (vec![refusal], After::Continue),
        };
        self.last_command = spec.name;
        let frames = match spec.name {
            "quit" => return (vec![Frame::ok()], After::Close),
            "subscribe" => pubsub_commands::subscribe(self, false, &args),
            "psubscribe" => pubsub_commands::subscribe(self, true, &args),
            "unsubscribe" => pubsub_commands::unsubscribe(self, false, &args),
            "punsubscribe" => pubsub_commands::unsubscribe(self, true, &args),
            // In subscribed mode PING answers as a message would be shaped (Redis's rule).
            "ping" if self.in_subscribed_mode() => vec![Frame::Array(vec![
                Frame::bulk("pong"),
                Frame::bulk(args.get(1).cloned().unwrap_or_default()),
            ])],
            _ => vec![self.run(spec, &args).await],
        };
        (frames, After::Continue)
    }

    async fn run(&mut self, spec: &CommandSpec, args: &[Bytes]) -> Frame {
        match spec.name {
            "ping" => conn_commands::ping(args),
            "echo" => Frame::bulk(args[1].clone()),
            "hello" => conn_commands::hello(self, args),
            "auth" => conn_commands::auth(self, args),
            "select" => conn_commands::select(args),
            "reset" => {
                self.reset();
                Frame::Simple("RESET".into())
            }
            "client" => conn_commands::client(self, args),
            "command" => server_commands::command(self, args),
            "config" => server_commands::config(self, args),
            "info" => server_commands::info(self, args).await,
            "dbsize" => server_commands::dbsize(self).await,
            "flushall" | "flushdb" => server_commands::flushall(self, args).await,
            "scan" => key_commands::scan(self, args).await,
            "randomkey" => key_commands::randomkey(self).await,
            "publish" => pubsub_commands::publish(self, args),
            "pubsub" => pubsub_commands::pubsub(self, args),
            "rc.consistency" => ringcache_commands::consistency(self, args),
            "rc.hotkeys" => ringcache_commands::hotkeys(self, args),
            _ => self.run_key_command(spec, args).await,
        }
    }

    /// The key commands: they read and write only the keys the table lists for them and
    /// change nothing in the session, so a pipeline may run several side by side.
    async fn run_key_command(&self, spec: &CommandSpec, args: &[Bytes]) -> Frame {
        match spec.name {
            "get" => string_commands::get(self, args).await,
            "incr" | "decr" | "incrby" | "decrby" | "incrbyfloat" => {
                string_commands::counter(self, spec.name, args).await
            }
            "set" => string_commands::set(self, args).await,
            "setnx" => string_commands::setnx(self, args).await,
            "setex" | "psetex" => string_commands::setex(self, spec.name, args).await,
            "getset" => string_commands::getset(self, args).await,
            "getdel" => string_commands::getdel(self, args).await,
            "getex" => string_commands::getex(self, args).await,
            "mget" => string_commands::mget(self, args).await,
            "mset" => string_commands::mset(self, args).await,
            "msetnx" => string_commands::msetnx(self, args).await,
            "append" => string_commands::append(self, args).await,
            "strlen" => string_commands::strlen(self, args).await,
            "getrange" => string_commands::getrange(self, args).await,
            "setrange" => string_commands::setrange(self, args).await,
            "del" | "unlink" => key_commands::del(self, args).await,
            "exists" | "touch" => key_commands::exists(self, args).await,
            "type" => key_commands::key_type(self, args).await,
            "expire" | "pexpire" | "expireat" | "pexpireat" => {
                key_commands::expire(self, spec.name, args).await
            }
            "ttl" | "pttl" | "expiretime" | "pexpiretime" => {
                key_commands::ttl(self, spec.name, args).await
            }
            "persist" => key_commands::persist(self, args).await,
            "rc.getall" => ringcache_commands::getall(self, args).await,
            "rc.set" => ringcache_commands::set(self, args).await,
            "rc.cas" => ringcache_commands::cas(self, args).await,
            other => Frame::error(format!("ERR command '{other}' is listed but not served")),
        }
    }
}

/// The most requests of a pipeline run side by side (their replies are held together).
pub const MAX_SIDE_BY_SIDE: usize = 32;

/// The commands [`Session::run_key_command`] serves.
const KEY_COMMANDS: &[&str] = &[
    "append",
    "del",
    "exists",
    "expire",
    "expireat",
    "expiretime",
    "get",
    "getdel",
    "getex",
    "getrange",
    "getset",
    "mget",
    "mset",
    "msetnx",
    "persist",
    "pexpire",
    "pexpireat",
    "pexpiretime",
    "psetex",
    "pttl",
    "rc.cas",
    "rc.getall",
    "rc.set",
    "set",
    "setex",
    "setnx",
    "setrange",
    "strlen",
    "touch",
    "ttl",
    "type",
    "unlink",
];

/// The keys a key command names (from the table's first key, last key and step), or `None`
/// for a command that must run alone.
fn side_by_side_keys<'a>(spec: &CommandSpec, args: &'a [Bytes]) -> Option<Vec<&'a [u8]>> {
    if !KEY_COMMANDS.contains(&spec.name) || spec.first_key < 1 || spec.step < 1 {
        return None;
    }
    let last = if spec.last_key < 0 {
        args.len() as i64 + i64::from(spec.last_key)
    } else {
        i64::from(spec.last_key)
    };
    let mut keys = Vec::new();
    let mut i = i64::from(spec.first_key);
    while i <= last && (i as usize) < args.len() {
        keys.push(&args[i as usize][..]);
        i += i64::from(spec.step);
    }
    Some(keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<Bytes> {
        s.split(' ').map(|w| Bytes::from(w.to_string())).collect()
    }

    #[test]
    fn key_commands_name_their_keys_and_the_rest_run_alone() {
        let keys = |line: &str| {
            let args = words(line);
            let spec = command_table::lookup(&args[0]).unwrap();
            side_by_side_keys(spec, &args).map(|k| k.iter().map(|k| k.to_vec()).collect::<Vec<_>>())
        };
        assert_eq!(keys("GET a"), Some(vec![b"a".to_vec()]));
        assert_eq!(keys("SET a 1 EX 5"), Some(vec![b"a".to_vec()]));
        assert_eq!(
            keys("MSET a 1 b 2"),
            Some(vec![b"a".to_vec(), b"b".to_vec()])
        );
        assert_eq!(
            keys("DEL a b c"),
            Some(vec![b"a".to_vec(), b"b".to_vec(), b"c".to_vec()])
        );
        assert_eq!(keys("RC.CONSISTENCY one one"), None);
        assert_eq!(keys("SCAN 0"), None);
        assert_eq!(keys("PING"), None);
    }

    #[test]
    fn every_command_run_key_command_serves_is_in_the_table_with_keys() {
        for name in KEY_COMMANDS {
            let spec = command_table::lookup(name.as_bytes()).expect("in the table");
            assert!(spec.first_key >= 1, "{name}");
        }
    }
}
