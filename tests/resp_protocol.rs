//! The RESP endpoint's connection layer against raw sockets: malformed frames, pipelining,
//! inline commands, authentication, the connection cap, deadlines, RESP3, pub/sub shapes and
//! the slow-subscriber cut-off, and every command of the table being served.
//!
//! One in-process peer per test on 127.0.0.1 (replicas 1), shut down at the end.

#![allow(clippy::disallowed_methods)] // wall-clock deadlines
use ringcache::api::resp::command_table::COMMANDS;
use ringcache::config::{PeerConfig, RespConfig};
use ringcache::server::RunningPeer;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const SECRET: &str = "a secret of the resp protocol test cluster";
const TOKEN: &str = "resp-protocol-test-token-0123456789";

fn config(resp: RespConfig, token: Option<&str>) -> PeerConfig {
    let mut config = PeerConfig::for_test("R", SECRET, vec![]);
    config.core.replicas = 1;
    config.core.max_value_bytes = 4096;
    config.resp = RespConfig {
        addr: Some(([127, 0, 0, 1], 0).into()),
        ..resp
    };
    config.client_token = token.map(str::to_string);
    config
}

async fn start(resp: RespConfig, token: Option<&str>) -> (RunningPeer, SocketAddr) {
    let peer = RunningPeer::start(config(resp, token))
        .await
        .expect("peer starts");
    let addr = peer.addresses.resp.expect("RESP is on");
    (peer, addr)
}

/// Reads until the server closes the connection (or `limit` passes); returns what was read and
/// whether it closed.
async fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return (out, false),
            Ok(Ok(0)) | Ok(Err(_)) => return (out, true),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    }
}

/// Sends `request` and reads until `expected` bytes came (or a second passed).
async fn exchange(stream: &mut TcpStream, request: &[u8], expected: usize) -> String {
    stream.write_all(request).await.unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    while out.len() < expected {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => out.extend_from_slice(&buf[..n]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn malformed_frames_are_answered_with_a_protocol_error_then_closed() {
    let (peer, addr) = start(RespConfig::default(), None).await;
    let cases: &[(&[u8], &str)] = &[
        (
            b"*1\r\n$x\r\n",
            "-ERR Protocol error: invalid bulk length\r\n",
        ),
        (
            b"*1\r\n+PING\r\n",
            "-ERR Protocol error: expected '$', got '+'\r\n",
        ),
        (
            b"*zz\r\n",
            "-ERR Protocol error: invalid multibulk length\r\n",
        ),
        (
            b"SET \"unclosed\r\n",
            "-ERR Protocol error: unbalanced quotes in request\r\n",
        ),
        // Larger than --max-value-bytes plus the slack: refused from its header alone.
        (
            b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$999999\r\n",
            "-ERR Protocol error: invalid bulk length\r\n",
        ),
    ];
    for (request, expected) in cases {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(request).await.unwrap();
        let (answer, closed) = read_until_closed(&mut stream, Duration::from_secs(3)).await;
        assert_eq!(String::from_utf8_lossy(&answer), *expected, "{request:?}");
        assert!(closed, "{request:?} left the connection open");
    }
    peer.shutdown().await;
}

#[tokio::test]
async fn pipelined_and_inline_requests_are_answered_in_order() {
    let (peer, addr) = start(RespConfig::default(), None).await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$2\r\nv1\r\nGET k\r\nAPPEND k \"+2\"\r\n\
                    *2\r\n$3\r\nGET\r\n$1\r\nk\r\nPING\r\nNOSUCH a b\r\nGET\r\n";
    let expected = "+OK\r\n$2\r\nv1\r\n:4\r\n$4\r\nv1+2\r\n+PONG\r\n\
                    -ERR unknown command 'NOSUCH', with args beginning with: 'a' 'b' \r\n\
                    -ERR wrong number of arguments for 'get' command\r\n";
    assert_eq!(
        exchange(&mut stream, request, expected.len()).await,
        expected
    );
    peer.shutdown().await;
}

#[tokio::test]
async fn hello_3_speaks_resp3_and_hello_2_goes_back() {
    let (peer, addr) = start(RespConfig::default(), None).await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let answer = exchange(&mut stream, b"HELLO 3\r\n", 20).await;
    assert!(
        answer.starts_with("%7\r\n$6\r\nserver\r\n$5\r\nredis\r\n"),
        "{answer}"
    );
    let mut rest = read_until_closed(&mut stream, Duration::from_millis(300))
        .await
        .0;
    rest.clear();
    assert_eq!(exchange(&mut stream, b"GET missing\r\n", 3).await, "_\r\n");
    let _ = exchange(&mut stream, b"HELLO 2\r\n", 10).await;
    let _ = read_until_closed(&mut stream, Duration::from_millis(300)).await;
    assert_eq!(
        exchange(&mut stream, b"GET missing\r\n", 5).await,
        "$-1\r\n"
    );
    assert_eq!(
        exchange(&mut stream, b"HELLO 4\r\n", 5).await,
        "-NOPROTO unsupported protocol version\r\n"
    );
    peer.shutdown().await;
}

#[tokio::test]
async fn without_auth_only_auth_hello_quit_and_reset_are_served() {
    let (peer, addr) = start(RespConfig::default(), Some(TOKEN)).await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let noauth = "-NOAUTH Authentication required.\r\n";
    assert_eq!(
        exchange(&mut stream, b"SET k v\r\n", noauth.len()).await,
        noauth
    );
    assert_eq!(
        exchange(&mut stream, b"PING\r\n", noauth.len()).await,
        noauth
    );
    let wrongpass = "-WRONGPASS invalid username-password pair or user is disabled.\r\n";
    assert_eq!(
        exchange(
            &mut stream,
            b"AUTH not-the-token-at-all\r\n",
            wrongpass.len()
        )
        .await,
        wrongpass
    );
    // A stranger may not send large requests before authenticating.
    let big = format!("*2\r\n$4\r\nAUTH\r\n${}\r\n", 20_000);
    let mut other = TcpStream::connect(addr).await.unwrap();
    other.write_all(big.as_bytes()).await.unwrap();
    let (answer, closed) = read_until_closed(&mut other, Duration::from_secs(3)).await;
    assert_eq!(
        String::from_utf8_lossy(&answer),
        "-ERR Protocol error: unauthenticated bulk length\r\n"
    );
    assert!(closed);
    let auth = format!("AUTH default {TOKEN}\r\n");
    assert_eq!(exchange(&mut stream, auth.as_bytes(), 5).await, "+OK\r\n");
    assert_eq!(
        exchange(&mut stream, b"SET k v\r\nGET k\r\n", 12).await,
        "+OK\r\n$1\r\nv\r\n"
    );
    // RESET forgets the authentication.
    assert_eq!(exchange(&mut stream, b"RESET\r\n", 8).await, "+RESET\r\n");
    assert_eq!(
        exchange(&mut stream, b"GET k\r\n", noauth.len()).await,
        noauth
    );
    peer.shutdown().await;
}

#[tokio::test]
async fn connections_past_the_cap_are_refused_as_redis_refuses_them() {
    let resp = RespConfig {
        max_connections: 2,
        ..RespConfig::default()
    };
    let (peer, addr) = start(resp, None).await;
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut s = TcpStream::connect(addr).await.unwrap();
        assert_eq!(exchange(&mut s, b"PING\r\n", 7).await, "+PONG\r\n");
        held.push(s);
    }
    let mut third = TcpStream::connect(addr).await.unwrap();
    let (answer, closed) = read_until_closed(&mut third, Duration::from_secs(3)).await;
    assert_eq!(
        String::from_utf8_lossy(&answer),
        "-ERR max number of clients reached\r\n"
    );
    assert!(closed);
    drop(held);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut again = TcpStream::connect(addr).await.unwrap();
    assert_eq!(exchange(&mut again, b"PING\r\n", 7).await, "+PONG\r\n");
    peer.shutdown().await;
}

#[tokio::test]
async fn idle_and_trickling_connections_are_cut_off() {
    let resp = RespConfig {
        idle_timeout: Some(Duration::from_millis(500)),
        request_timeout: Duration::from_millis(500),
        ..RespConfig::default()
    };
    let (peer, addr) = start(resp, None).await;
    let mut idle = TcpStream::connect(addr).await.unwrap();
    let started = std::time::Instant::now();
    let (_, closed) = read_until_closed(&mut idle, Duration::from_secs(3)).await;
    assert!(closed && started.elapsed() < Duration::from_secs(2));
    // A request trickled a byte at a time never completes: cut off at the request deadline.
    let mut slow = TcpStream::connect(addr).await.unwrap();
    let started = std::time::Instant::now();
    let mut cut = false;
    for byte in b"*2\r\n$3\r\nGET\r\n$100\r\n".iter().cycle().take(60) {
        if slow.write_all(&[*byte]).await.is_err() {
            cut = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_, closed) = read_until_closed(&mut slow, Duration::from_secs(1)).await;
    assert!(cut || closed, "a trickled request held its connection");
    assert!(started.elapsed() < Duration::from_secs(4));
    peer.shutdown().await;
}

/// The idle deadline runs from the connection's last request, however often it moved: a
/// client that keeps asking within the idle timeout stays, and is cut off one idle timeout
/// after it stops.
#[tokio::test]
async fn the_idle_timeout_runs_from_the_last_request() {
    let idle = Duration::from_millis(400);
    let resp = RespConfig {
        idle_timeout: Some(idle),
        ..RespConfig::default()
    };
    let (peer, addr) = start(resp, None).await;
    let mut client = TcpStream::connect(addr).await.unwrap();
    // Six requests 250 ms apart: 1.5 s in all, past the first few idle deadlines.
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert_eq!(exchange(&mut client, b"PING\r\n", 7).await, "+PONG\r\n");
    }
    let stopped = std::time::Instant::now();
    let (_, closed) = read_until_closed(&mut client, Duration::from_secs(3)).await;
    let waited = stopped.elapsed();
    assert!(closed, "an idle connection was never cut off");
    assert!(
        waited >= Duration::from_millis(350) && waited < Duration::from_millis(1_500),
        "cut off {waited:?} after the last request, not about {idle:?}"
    );
    peer.shutdown().await;
}

/// Every command `COMMAND` lists is dispatched to a handler (none falls through to the
/// "listed but not served" arm), and a key-less call of each answers.
#[tokio::test]
async fn every_listed_command_is_served() {
    let (peer, addr) = start(RespConfig::default(), None).await;
    for spec in COMMANDS {
        if matches!(spec.name, "quit" | "flushall" | "flushdb") {
            continue;
        }
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let words = spec.arity.unsigned_abs() as usize;
        let mut request = format!("*{words}\r\n${}\r\n{}\r\n", spec.name.len(), spec.name);
        for _ in 1..words {
            request.push_str("$1\r\n1\r\n");
        }
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut buf = vec![0u8; 65536];
        let n = tokio::time::timeout(Duration::from_secs(3), stream.read(&mut buf))
            .await
            .expect("an answer")
            .unwrap();
        let answer = String::from_utf8_lossy(&buf[..n]);
        assert!(n > 0, "{} got no answer", spec.name);
        assert!(!answer.contains("not served"), "{}: {answer}", spec.name);
        assert!(
            !answer.contains("unknown command"),
            "{}: {answer}",
            spec.name
        );
        assert!(!answer.contains("wrong number"), "{}: {answer}", spec.name);
    }
    peer.shutdown().await;
}

#[tokio::test]
async fn flushall_is_refused_unless_enabled() {
    let (peer, addr) = start(RespConfig::default(), None).await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let answer = exchange(&mut stream, b"SET k v\r\nFLUSHALL\r\nGET k\r\n", 80).await;
    assert!(
        answer.starts_with("+OK\r\n-ERR FLUSHALL is disabled"),
        "{answer}"
    );
    assert!(answer.ends_with("$1\r\nv\r\n"), "{answer}");
    peer.shutdown().await;
    let resp = RespConfig {
        enable_flushall: true,
        ..RespConfig::default()
    };
    let (peer, addr) = start(resp, None).await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let answer = exchange(
        &mut stream,
        b"MSET a 1 b 2 c 3\r\nFLUSHALL\r\nMGET a b c\r\n",
        29,
    )
    .await;
    assert_eq!(answer, "+OK\r\n+OK\r\n*3\r\n$-1\r\n$-1\r\n$-1\r\n");
    peer.shutdown().await;
}

#[tokio::test]
async fn subscribers_get_messages_in_redis_shapes_and_subscribed_mode_rules() {
    let (peer, addr) = start(RespConfig::default(), None).await;
    let mut sub = TcpStream::connect(addr).await.unwrap();
    let confirmations = "*3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n\
                         *3\r\n$10\r\npsubscribe\r\n$3\r\nb.*\r\n:2\r\n";
    assert_eq!(
        exchange(
            &mut sub,
            b"SUBSCRIBE a\r\nPSUBSCRIBE b.*\r\n",
            confirmations.len()
        )
        .await,
        confirmations
    );
    let refused = "-ERR Can't execute 'get': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / \
                   QUIT / RESET are allowed in this context\r\n";
    assert_eq!(
        exchange(&mut sub, b"GET k\r\n", refused.len()).await,
        refused
    );
    let pong = "*2\r\n$4\r\npong\r\n$0\r\n\r\n";
    assert_eq!(exchange(&mut sub, b"PING\r\n", pong.len()).await, pong);
    let mut publisher = TcpStream::connect(addr).await.unwrap();
    let counts =
        ":1\r\n:1\r\n:0\r\n*4\r\n$1\r\na\r\n:1\r\n$1\r\nz\r\n:0\r\n:1\r\n*1\r\n$1\r\na\r\n";
    assert_eq!(
        exchange(
            &mut publisher,
            b"PUBLISH a hi\r\nPUBLISH b.c yo\r\nPUBLISH c no\r\nPUBSUB NUMSUB a z\r\nPUBSUB NUMPAT\r\nPUBSUB CHANNELS\r\n",
            counts.len()
        )
        .await,
        counts
    );
    let messages = "*3\r\n$7\r\nmessage\r\n$1\r\na\r\n$2\r\nhi\r\n\
                    *4\r\n$8\r\npmessage\r\n$3\r\nb.*\r\n$3\r\nb.c\r\n$2\r\nyo\r\n";
    assert_eq!(exchange(&mut sub, b"", messages.len()).await, messages);
    let left = "*3\r\n$11\r\nunsubscribe\r\n$1\r\na\r\n:1\r\n\
                *3\r\n$12\r\npunsubscribe\r\n$3\r\nb.*\r\n:0\r\n";
    assert_eq!(
        exchange(&mut sub, b"UNSUBSCRIBE\r\nPUNSUBSCRIBE\r\n", left.len()).await,
        left
    );
    // Out of subscribed mode, every command runs again.
    assert_eq!(exchange(&mut sub, b"GET k\r\n", 5).await, "$-1\r\n");
    peer.shutdown().await;
}

#[tokio::test]
async fn a_subscriber_that_stops_reading_is_disconnected_not_buffered_for_ever() {
    let resp = RespConfig::default();
    let mut config = config(resp, None);
    config.core.max_value_bytes = 1 << 20;
    let peer = RunningPeer::start(config).await.expect("peer starts");
    let addr = peer.addresses.resp.unwrap();
    let mut sub = TcpStream::connect(addr).await.unwrap();
    let _ = exchange(&mut sub, b"SUBSCRIBE firehose\r\n", 30).await;
    // ~48 MiB published, more than the 32 MiB limit plus what the sockets buffer; the
    // subscriber reads none of it.
    let payload = vec![b'x'; 1 << 20];
    let mut publisher = TcpStream::connect(addr).await.unwrap();
    let mut request = format!(
        "*3\r\n$7\r\nPUBLISH\r\n$8\r\nfirehose\r\n${}\r\n",
        payload.len()
    )
    .into_bytes();
    request.extend_from_slice(&payload);
    request.extend_from_slice(b"\r\n");
    for _ in 0..48 {
        publisher.write_all(&request).await.unwrap();
        let mut reply = [0u8; 4];
        publisher.read_exact(&mut reply).await.unwrap();
    }
    // Reading now finds what was queued before the cut, then the end of the connection.
    let mut total = 0usize;
    let mut buf = vec![0u8; 1 << 16];
    let closed = loop {
        match tokio::time::timeout(Duration::from_secs(2), sub.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break true,
            Ok(Ok(n)) => total += n,
            Err(_) => break false,
        }
    };
    assert!(
        closed,
        "a lagging subscriber kept its connection ({total} bytes read)"
    );
    assert!(total < 48 << 20, "everything was buffered: {total} bytes");
    let mut check = TcpStream::connect(addr).await.unwrap();
    assert_eq!(
        exchange(&mut check, b"PUBSUB NUMSUB firehose\r\n", 26).await,
        "*2\r\n$8\r\nfirehose\r\n:0\r\n"
    );
    peer.shutdown().await;
}

/// Key commands on distinct keys run side by side, yet every reply matches running the
/// pipeline one request after another: a key named again waits for the one before it.
#[tokio::test]
async fn a_pipeline_run_side_by_side_answers_as_if_run_in_order() {
    let (peer, addr) = start(RespConfig::default(), None).await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let mut request = String::new();
    let mut expected = String::new();
    for round in 0..3 {
        for key in 0..40 {
            request.push_str(&format!(
                "SET k{key} r{round}\r\nAPPEND k{key} +\r\nGET k{key}\r\n"
            ));
            let value = format!("r{round}+");
            expected.push_str(&format!(
                "+OK\r\n:{}\r\n${}\r\n{value}\r\n",
                value.len(),
                value.len()
            ));
        }
        request
            .push_str("RC.CONSISTENCY one one\r\nMGET k0 k39\r\nRC.CONSISTENCY quorum quorum\r\n");
        expected.push_str(&format!(
            "+OK\r\n*2\r\n$3\r\nr{round}+\r\n$3\r\nr{round}+\r\n+OK\r\n"
        ));
    }
    assert_eq!(
        exchange(&mut stream, request.as_bytes(), expected.len()).await,
        expected
    );
    peer.shutdown().await;
}

/// `RC.HOTKEYS [COUNT n]` through a real Redis client: the keys asked about most, hottest
/// first, each `[key, "reads", n, "writes", n, "error", n]`; listed by `COMMAND INFO`; a bad
/// `COUNT` is an error.
#[tokio::test]
async fn rc_hotkeys_answers_the_hottest_keys_with_their_counts() {
    let (peer, addr) = start(RespConfig::default(), None).await;
    let client = redis::Client::open(format!("redis://{addr}/")).unwrap();
    let mut con = client.get_multiplexed_async_connection().await.unwrap();
    for (key, reads) in [("hot", 20), ("warm", 7), ("cold", 1)] {
        let _: () = redis::cmd("SET")
            .arg(key)
            .arg("v")
            .query_async(&mut con)
            .await
            .unwrap();
        for _ in 0..reads {
            let _: Option<String> = redis::cmd("GET")
                .arg(key)
                .query_async(&mut con)
                .await
                .unwrap();
        }
    }
    let top: Vec<(String, String, u64, String, u64, String, u64)> = redis::cmd("RC.HOTKEYS")
        .arg("COUNT")
        .arg(2)
        .query_async(&mut con)
        .await
        .unwrap();
    let expected = |key: &str, reads| {
        (
            key.to_string(),
            "reads".to_string(),
            reads,
            "writes".to_string(),
            1,
            "error".to_string(),
            0,
        )
    };
    assert_eq!(top, vec![expected("hot", 20), expected("warm", 7)]);
    // Without COUNT: every key seen so far (fewer than the default ten).
    let all: Vec<redis::Value> = redis::cmd("RC.HOTKEYS")
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(all.len(), 3);
    let info: Vec<redis::Value> = redis::cmd("COMMAND")
        .arg("INFO")
        .arg("rc.hotkeys")
        .query_async(&mut con)
        .await
        .unwrap();
    assert!(
        matches!(&info[..], [redis::Value::Array(spec)] if !spec.is_empty()),
        "{info:?}"
    );
    for bad in [
        &["COUNT", "0"][..],
        &["COUNT", "x"],
        &["COUNT"],
        &["LIMIT", "2"],
    ] {
        let answer: redis::RedisResult<redis::Value> = redis::cmd("RC.HOTKEYS")
            .arg(bad)
            .query_async(&mut con)
            .await;
        assert!(answer.is_err(), "{bad:?}: {answer:?}");
    }
    drop(con);
    peer.shutdown().await;
}
