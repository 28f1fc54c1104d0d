//! Server commands: COMMAND, CONFIG GET, INFO, DBSIZE, FLUSHALL. Enough of each for
//! `redis-cli`, `redis-benchmark` and client libraries' connect-time checks, answered from
//! this peer's real state where it has one.

use crate::api::resp::args::{self, is};
use crate::api::resp::command_table::{lookup, COMMANDS};
use crate::api::resp::conn_commands::REDIS_COMPAT_VERSION;
use crate::api::resp::frame::Frame;
use crate::api::resp::session::Session;
use crate::api::resp::shared::Counters;
use crate::core::request::WriteKind;
use crate::glob::glob_match;
use bytes::Bytes;
use futures_util::future::join_all;
use std::fmt::Write as _;
use std::sync::atomic::Ordering;

/// `COMMAND`, `COMMAND COUNT`, `COMMAND INFO name…`, `COMMAND LIST`, `COMMAND DOCS [name…]`.
pub fn command(_session: &Session, args: &[Bytes]) -> Frame {
    let Some(sub) = args.get(1) else {
        return Frame::Array(COMMANDS.iter().map(|c| c.info()).collect());
    };
    if is(sub, "count") {
        Frame::Integer(COMMANDS.len() as i64)
    } else if is(sub, "info") {
        Frame::Array(
            args[2..]
                .iter()
                .map(|name| lookup(name).map_or(Frame::Null, |c| c.info()))
                .collect(),
        )
    } else if is(sub, "list") {
        Frame::Array(COMMANDS.iter().map(|c| Frame::bulk(c.name)).collect())
    } else if is(sub, "docs") {
        // No documentation strings: an empty map, which redis-cli takes as "no hints".
        Frame::Map(Vec::new())
    } else {
        args::unknown_subcommand("command", sub)
    }
}

/// `CONFIG GET pattern…` over the settings a Redis client may ask about; `CONFIG SET` and
/// the rest are refused (a peer is configured by its `serve` flags).
pub fn config(session: &Session, args: &[Bytes]) -> Frame {
    let sub = &args[1];
    if is(sub, "resetstat") {
        return Frame::ok();
    }
    if !is(sub, "get") {
        if is(sub, "set") || is(sub, "rewrite") {
            return Frame::error(format!(
                "ERR CONFIG {} is not supported: a ringcache peer is configured by its serve flags",
                args::shown(sub).to_ascii_uppercase()
            ));
        }
        return args::unknown_subcommand("config", sub);
    }
    if args.len() < 3 {
        return args::wrong_arity("config|get");
    }
    let settings = &session.shared.settings;
    let table: Vec<(&str, String)> = vec![
        ("appendonly", "no".into()),
        ("bind", session.shared.local_addr.ip().to_string()),
        ("cluster-enabled", "no".into()),
        ("databases", "1".into()),
        ("maxclients", settings.max_connections.to_string()),
        (
            "maxmemory",
            settings.max_memory_bytes.unwrap_or(0).to_string(),
        ),
        ("maxmemory-policy", redis_policy(&settings.eviction).into()),
        ("port", session.shared.local_addr.port().to_string()),
        (
            "proto-max-bulk-len",
            crate::api::resp::request::Limits::for_values(settings.max_value_bytes)
                .max_bulk_bytes
                .to_string(),
        ),
        ("save", String::new()),
        (
            "timeout",
            settings.idle_timeout.map_or(0, |d| d.as_secs()).to_string(),
        ),
    ];
    let mut pairs = Vec::new();
    for (name, value) in &table {
        if args[2..]
            .iter()
            .any(|p| glob_match(&p.to_ascii_lowercase(), name.as_bytes()))
        {
            pairs.push((Frame::bulk(*name), Frame::bulk(value.clone())));
        }
    }
    Frame::Map(pairs)
}

/// The Redis name of an eviction policy.
fn redis_policy(ours: &str) -> &'static str {
    match ours {
        "lru" => "allkeys-lru",
        "lfu" => "allkeys-lfu",
        "random" => "allkeys-random",
        "volatile-ttl" => "volatile-ttl",
        "noeviction" => "noeviction",
        _ => "allkeys-lru",
    }
}

/// `INFO [section…]`: server, clients, memory, stats, keyspace, cluster (`all`/`everything`/
/// `default` give them all).
// Uptime is read on the shell's clock (see clippy.toml: only the core must not).
#[allow(clippy::disallowed_methods)]
pub async fn info(session: &Session, args: &[Bytes]) -> Frame {
    let wanted: Vec<String> = args[1..]
        .iter()
        .map(|a| String::from_utf8_lossy(a).to_ascii_lowercase())
        .collect();
    let all = wanted.is_empty()
        || wanted
            .iter()
            .any(|w| matches!(w.as_str(), "all" | "everything" | "default"));
    let want = |section: &str| all || wanted.iter().any(|w| w == section);
    let Some(status) = session.shared.driver.status().await else {
        return Frame::error("TRYAGAIN the peer is shutting down");
    };
    let shared = &session.shared;
    let counters = &shared.counters;
    let uptime = shared.started.elapsed().as_secs();
    let mut out = String::new();
    if want("server") {
        let _ = write!(
            out,
            "# Server\r\nredis_version:{REDIS_COMPAT_VERSION}\r\nringcache_version:{}\r\n\
             redis_mode:standalone\r\nos:{}\r\nprocess_id:{}\r\nrun_id:{}\r\ntcp_port:{}\r\n\
             uptime_in_seconds:{uptime}\r\nuptime_in_days:{}\r\n\r\n",
            env!("CARGO_PKG_VERSION"),
            std::env::consts::OS,
            std::process::id(),
            status.id,
            shared.local_addr.port(),
            uptime / 86_400,
        );
    }
    if want("clients") {
        let _ = write!(
            out,
            "# Clients\r\nconnected_clients:{}\r\nmaxclients:{}\r\n\r\n",
            counters.connected.load(Ordering::Relaxed),
            shared.settings.max_connections,
        );
    }
    if want("memory") {
        let stats = &status.stats;
        let _ = write!(
            out,
            "# Memory\r\nused_memory:{}\r\nmaxmemory:{}\r\nmaxmemory_policy:{}\r\n\r\n",
            stats.memory_used_bytes,
            stats.memory_limit_bytes.unwrap_or(0),
            redis_policy(&shared.settings.eviction),
        );
    }
    if want("stats") {
        let stats = &status.stats;
        let _ = write!(
            out,
            "# Stats\r\ntotal_connections_received:{}\r\ntotal_commands_processed:{}\r\n\
             rejected_connections:{}\r\nexpired_keys:{}\r\nevicted_keys:{}\r\n\
             keyspace_hits:{}\r\nkeyspace_misses:{}\r\npubsub_channels:{}\r\n\
             pubsub_patterns:{}\r\n\r\n",
            Counters::get(&counters.connections_received),
            Counters::get(&counters.commands_processed),
            Counters::get(&counters.connections_rejected),
            stats.expired,
            stats.evicted,
            stats.hits,
            stats.misses,
            shared.pubsub.channels(None).len(),
            shared.pubsub.numpat(),
        );
    }
    if want("keyspace") {
        let _ = write!(out, "# Keyspace\r\n");
        if status.keys > 0 {
            let _ = write!(out, "db0:keys={},expires=0,avg_ttl=0\r\n", status.keys);
        }
        out.push_str("\r\n");
    }
    if want("cluster") {
        let members = &status.members.members;
        let _ = write!(
            out,
            "# Cluster\r\ncluster_enabled:0\r\nringcache_peer:{}\r\nringcache_replicas:{}\r\n\
             ringcache_partitions:{}\r\nringcache_members:{}\r\n",
            status.id,
            status.replicas,
            status.partitions,
            members.len(),
        );
        for (id, member) in members {
            let owned = status.ownership.iter().find(|o| &o.node == id);
            let _ = write!(
                out,
                "member:{id},state={},http={},partitions_primary={},partitions_replica={}\r\n",
                if member.leaving {
                    "leaving"
                } else if member.up {
                    "up"
                } else {
                    "down"
                },
                member.http_addr.map(|a| a.to_string()).unwrap_or_default(),
                owned.map_or(0, |o| o.primary_partitions),
                owned.map_or(0, |o| o.replica_partitions),
            );
        }
        out.push_str("\r\n");
    }
    let trimmed = out.trim_end_matches("\r\n").to_string() + "\r\n";
    Frame::bulk(trimmed)
}

/// `DBSIZE`: the keys this peer's store holds (as a replica), deleted keys whose tombstones
/// are not collected yet included: not the cluster's count.
pub async fn dbsize(session: &Session) -> Frame {
    match session.shared.driver.status().await {
        Some(status) => Frame::Integer(status.keys as i64),
        None => Frame::error("TRYAGAIN the peer is shutting down"),
    }
}

/// Keys FLUSHALL deletes at once.
const FLUSH_BATCH: usize = 256;

/// `FLUSHALL [ASYNC|SYNC]` (and FLUSHDB): refused unless the peer runs with
/// `--enable-flushall`; then every key this peer's SCAN lists is deleted through the quorum
/// path (with more peers than replicas, each peer must be flushed).
pub async fn flushall(session: &Session, args: &[Bytes]) -> Frame {
    if args.len() > 2
        || args
            .get(1)
            .is_some_and(|a| !is(a, "async") && !is(a, "sync"))
    {
        return args::syntax_error();
    }
    if !session.shared.settings.enable_flushall {
        return Frame::error(
            "ERR FLUSHALL is disabled on this peer: start it with `serve --enable-flushall`",
        );
    }
    let keyspace = session.keyspace();
    let mut cursor = 0;
    loop {
        let Some(page) = session
            .shared
            .driver
            .scan(cursor, FLUSH_BATCH, usize::MAX)
            .await
        else {
            return Frame::error("TRYAGAIN the peer is shutting down");
        };
        let deletes = page
            .keys
            .iter()
            .map(|key| keyspace.write(key, WriteKind::Delete, None));
        if let Some(Err(e)) = join_all(deletes).await.into_iter().find(Result::is_err) {
            return e;
        }
        cursor = page.next;
        if cursor == 0 {
            return Frame::ok();
        }
    }
}
