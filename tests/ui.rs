//! The ring page in a real browser (issue 15): headless Chromium opens `/ui` on a 3-peer
//! cluster, the page shows the 3 peers and every partition's replicas; a stopped peer is
//! marked down within seconds; a screenshot is saved under `target/`. Skipped, with a note,
//! when `chromium` is not installed (`.ci/run` installs it as root).

#![allow(clippy::disallowed_methods)] // waits on the wall clock and runs a browser

mod common;

use common::with_cluster;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

fn browser() -> Option<&'static str> {
    ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|b| {
            Command::new(b)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
}

/// The page's DOM once its scripts have run (headless, a few seconds of virtual time).
fn dom(browser: &str, url: &str, screenshot: Option<&Path>) -> String {
    let mut command = Command::new(browser);
    command.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--virtual-time-budget=3000",
        "--window-size=1100,750",
    ]);
    match screenshot {
        Some(path) => command.arg(format!("--screenshot={}", path.display())),
        None => command.arg("--dump-dom"),
    };
    let output = command.arg(url).output().expect("the browser runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn peer_states(dom: &str) -> Vec<(String, String)> {
    dom.split("class=\"peer\" data-id=\"")
        .skip(1)
        .map(|rest| {
            let id = rest.split('"').next().unwrap().to_string();
            let state = rest
                .split("data-state=\"")
                .nth(1)
                .and_then(|s| s.split('"').next())
                .unwrap()
                .to_string();
            (id, state)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ring_page_shows_every_peer_and_marks_a_stopped_one_down() {
    let Some(browser) = browser() else {
        eprintln!("note: chromium is not installed; the ring page's browser test is skipped");
        return;
    };
    with_cluster(3, |mut cluster| async move {
        let url = format!("{}/ui", cluster.peers[0].url());
        let page = dom(browser, &url, None);
        let states = peer_states(&page);
        assert_eq!(states.len(), 3, "{page}");
        assert!(states.iter().all(|(_, s)| s == "up"), "{states:?}");
        // common::SERVE_ARGS: 64 partitions, N = 3 drawn as three rings.
        assert!(page.contains("data-partitions=\"64\""), "{page}");
        assert_eq!(page.matches("class=\"partition\"").count(), 64 * 3);
        let shot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("ui.png");
        dom(browser, &url, Some(&shot));
        assert!(std::fs::metadata(&shot)
            .map(|m| m.len() > 1000)
            .unwrap_or(false));
        // Stop one peer: within seconds the page marks it down.
        let gone = cluster.peers.remove(2);
        let gone_id = gone.addresses.id.to_string();
        gone.stop().await;
        let started = Instant::now();
        loop {
            let states = peer_states(&dom(browser, &url, None));
            if states.iter().any(|(id, s)| *id == gone_id && s == "down") {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "{gone_id} never shown down: {states:?}"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        cluster
    })
    .await;
}
