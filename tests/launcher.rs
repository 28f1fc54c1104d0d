//! `ringcache up`: starts N peers, prints their URLs and `redis-cli -p PORT` lines (each peer
//! answering RESP), and stops every one of them on SIGTERM.

use ringcache::client::{Client, WriteOptions};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_starts_a_usable_cluster_and_sigterm_stops_every_peer() {
    let mut launcher = tokio::process::Command::new(env!("CARGO_BIN_EXE_ringcache"))
        .args(["up", "--peers", "2", "--serve-arg=--gossip-interval-ms=100"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(launcher.stdout.take().unwrap()).lines();
    let mut urls = Vec::new();
    let mut resp_ports: Vec<u16> = Vec::new();
    let banner = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            let trimmed = line.trim();
            if let Some(url) = trimmed
                .split_whitespace()
                .nth(1)
                .filter(|u| u.starts_with("http://"))
            {
                urls.push(url.to_string());
                // Beside each URL: `redis-cli -p PORT`.
                if let Some(port) = trimmed.split("redis-cli -p ").nth(1) {
                    resp_ports.push(port.trim().parse().expect("a port"));
                }
            }
            if trimmed.starts_with("Ctrl-C stops") {
                return;
            }
        }
        panic!("the launcher exited before it was ready");
    });
    banner
        .await
        .expect("the launcher printed its banner in time");
    assert_eq!(urls.len(), 2, "one URL per peer: {urls:?}");
    assert_eq!(resp_ports.len(), 2, "one redis-cli line per peer");
    for port in &resp_ports {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", *port))
            .await
            .expect("the peer serves RESP");
        stream.write_all(b"PING\r\n").await.unwrap();
        let mut pong = [0u8; 7];
        stream.read_exact(&mut pong).await.unwrap();
        assert_eq!(&pong, b"+PONG\r\n");
    }

    let a = Client::new(&urls[0]);
    let b = Client::new(&urls[1]);
    // Two peers hold every key (N=3 is capped by the membership), so W=R=2 reaches both.
    let both = WriteOptions {
        w: Some("2".into()),
        ..WriteOptions::default()
    };
    a.put(b"k", b"v".to_vec(), &both).await.unwrap();
    let read = b.get(b"k", Some("2")).await.unwrap();
    assert_eq!(read.values(), &[b"v".to_vec()]);

    let pid = launcher.id().unwrap() as i32;
    // SAFETY: signalling our own child process.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let status = tokio::time::timeout(Duration::from_secs(15), launcher.wait())
        .await
        .expect("the launcher exits after SIGTERM")
        .unwrap();
    assert!(status.success(), "{status:?}");
    for url in &urls {
        assert!(
            a_peer_answers(url).await.is_none(),
            "{url} still answers after the launcher stopped"
        );
    }
}

async fn a_peer_answers(url: &str) -> Option<()> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_millis(500))
        .build()
        .unwrap();
    client
        .get(format!("{url}/health"))
        .send()
        .await
        .ok()
        .map(|_| ())
}
