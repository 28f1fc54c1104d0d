//! Memory per key: how much the storage engine really costs, against its own accounting and
//! against Redis holding the same keys, measured in the same run.
//!
//! Loads 1,000,000 keys of 16 bytes with 100-byte values into a `Store` and reports the
//! process's resident-set growth, the engine's `used_bytes`, and the overhead per key (growth
//! minus payload). If `redis-server` is installed it starts one on a free loopback port, loads
//! the same keys, and reports its `used_memory` and RSS growth the same way.
//!
//! `cargo bench --bench memory` (`just bench` installs redis-server first). Prints figures; it
//! fails if the accounting strays more than 10% from the real growth.

#![allow(clippy::disallowed_methods, clippy::disallowed_types)] // wall clock, processes

use ringcache::core::siblings::Payload;
use ringcache::core::store::{Store, StoreLimits};
use ringcache::core::version_vector::{Actor, VersionVector};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The peer binary's allocator (`src/main.rs`): what a key costs is what it costs there.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const KEYS: usize = 1_000_000;
const KEY_BYTES: usize = 16;
const VALUE_BYTES: usize = 100;

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("linux /proc");
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .expect("resident pages");
    pages * 4096
}

fn key(i: usize) -> Vec<u8> {
    format!("key:{i:012}").into_bytes()
}

fn main() {
    let payload = KEY_BYTES + VALUE_BYTES;
    let before = rss_bytes();
    let started = Instant::now();
    let mut store = Store::new(64, StoreLimits::default(), 1);
    let actor = Actor("A.1764000000000".into());
    for i in 0..KEYS {
        let value = Payload::Value {
            data: vec![b'v'; VALUE_BYTES],
            expires_at_ms: None,
        };
        store
            .update(&key(i), &actor, &VersionVector::new(), value, 0)
            .expect("no limit");
    }
    let load = started.elapsed();
    let growth = rss_bytes().saturating_sub(before);
    let accounted = store.used_bytes();
    let ratio = accounted as f64 / growth as f64;
    println!("ringcache store, {KEYS} keys of {KEY_BYTES} B with {VALUE_BYTES} B values:");
    println!("  loaded in {:.2} s", load.as_secs_f64());
    println!("  RSS growth:         {:>12} bytes", growth);
    println!(
        "  accounted (used):   {:>12} bytes ({:.3}× RSS growth)",
        accounted, ratio
    );
    println!(
        "  overhead per key:   {:>12.1} bytes (RSS growth / keys − {payload} B payload)",
        growth as f64 / KEYS as f64 - payload as f64
    );
    drop(store);
    let redis = measure_redis();
    if let Some((used, rss)) = redis {
        println!("redis-server, same keys and values:");
        println!("  used_memory growth: {:>12} bytes", used);
        println!("  RSS growth:         {:>12} bytes", rss);
        println!(
            "  overhead per key:   {:>12.1} bytes (RSS growth / keys − {payload} B payload)",
            rss as f64 / KEYS as f64 - payload as f64
        );
        println!(
            "ratio, ringcache / redis overhead per key: {:.2}",
            (growth as f64 / KEYS as f64 - payload as f64)
                / (rss as f64 / KEYS as f64 - payload as f64)
        );
    } else {
        println!("redis-server not found: install it (apt-get install redis-server) to compare");
    }
    assert!(
        (0.9..=1.1).contains(&ratio),
        "accounting is {ratio:.3}× the real growth, outside 10%"
    );
}

/// Loads the same keys into a fresh redis-server; returns (used_memory growth, RSS growth).
fn measure_redis() -> Option<(u64, u64)> {
    Command::new("redis-server")
        .arg("--version")
        .output()
        .ok()?;
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").ok()?;
        l.local_addr().ok()?.port()
    };
    let mut child = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let result = (|| {
        let mut conn = None;
        for _ in 0..50 {
            if let Ok(c) = TcpStream::connect(("127.0.0.1", port)) {
                conn = Some(c);
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let mut conn = conn?;
        let info = |conn: &mut TcpStream| -> Option<(u64, u64)> {
            conn.write_all(b"*2\r\n$4\r\nINFO\r\n$6\r\nmemory\r\n")
                .ok()?;
            let mut reader = BufReader::new(conn.try_clone().ok()?);
            let mut header = String::new();
            reader.read_line(&mut header).ok()?;
            let len: usize = header.trim_start_matches('$').trim().parse().ok()?;
            let mut body = vec![0; len + 2];
            reader.read_exact(&mut body).ok()?;
            let text = String::from_utf8_lossy(&body).into_owned();
            let field = |name: &str| -> Option<u64> {
                text.lines()
                    .find_map(|l| l.strip_prefix(&format!("{name}:")))
                    .and_then(|v| v.trim().parse().ok())
            };
            Some((field("used_memory")?, field("used_memory_rss")?))
        };
        let (used0, rss0) = info(&mut conn)?;
        // Pipeline SETs in batches, reading the replies.
        let value = "v".repeat(VALUE_BYTES);
        let mut reader = BufReader::new(conn.try_clone().ok()?);
        let batch = 10_000;
        for start in (0..KEYS).step_by(batch) {
            let mut buf = Vec::with_capacity(batch * 160);
            for i in start..(start + batch).min(KEYS) {
                let k = key(i);
                buf.extend_from_slice(format!("*3\r\n$3\r\nSET\r\n${}\r\n", k.len()).as_bytes());
                buf.extend_from_slice(&k);
                buf.extend_from_slice(format!("\r\n${}\r\n{value}\r\n", value.len()).as_bytes());
            }
            conn.write_all(&buf).ok()?;
            let mut line = String::new();
            for _ in start..(start + batch).min(KEYS) {
                line.clear();
                reader.read_line(&mut line).ok()?;
            }
        }
        std::thread::sleep(Duration::from_millis(500));
        let (used1, rss1) = info(&mut conn)?;
        Some((used1 - used0, rss1.saturating_sub(rss0)))
    })();
    let _ = child.kill();
    let _ = child.wait();
    result
}
