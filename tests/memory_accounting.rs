//! The engine's memory figure (`used_bytes`, what `--max-memory` limits) stays within 10% of
//! the process's real growth, on 1,000,000 keys of 16 bytes with 100-byte values. Alone in its
//! test binary so no other test's allocations blur the resident-set reading.
//! (`cargo bench --bench memory` reports the same figure against Redis.)

use ringcache::core::siblings::Payload;
use ringcache::core::store::{Store, StoreLimits};
use ringcache::core::version_vector::{Actor, VersionVector};

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("linux /proc");
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .expect("resident pages");
    pages * 4096
}

#[test]
fn accounted_memory_is_within_ten_percent_of_real_growth_on_a_million_keys() {
    const KEYS: usize = 1_000_000;
    let actor = Actor("A.1764000000000".into());
    let before = rss_bytes();
    let mut store = Store::new(64, StoreLimits::default(), 1);
    for i in 0..KEYS {
        let value = Payload::Value {
            data: vec![b'v'; 100],
            expires_at_ms: None,
        };
        store
            .update(
                format!("key:{i:012}").as_bytes(),
                &actor,
                &VersionVector::new(),
                value,
                0,
            )
            .expect("no limit");
    }
    let growth = rss_bytes().saturating_sub(before);
    let ratio = store.used_bytes() as f64 / growth as f64;
    println!(
        "accounted {} bytes, RSS grew {growth} bytes: {ratio:.3}",
        store.used_bytes()
    );
    assert!(
        (0.9..=1.1).contains(&ratio),
        "accounting is {ratio:.3}x the real growth"
    );
    assert_eq!(store.len(), KEYS);
}
