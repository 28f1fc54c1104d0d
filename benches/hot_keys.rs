//! What counting one request in the hot-key sketch costs (`shell::hot_keys`): a uniform stream
//! over many keys (the sketch full, a replacement on most requests: the worst case) and a
//! skewed one (mostly hits). Run with `cargo bench --bench hot_keys`.

#![allow(clippy::disallowed_methods)] // a benchmark reads the clock

use criterion::{criterion_group, criterion_main, Criterion};
use ringcache::shell::hot_keys::{Access, HotKeys};
use std::time::Instant;

fn observe(c: &mut Criterion) {
    let keys: Vec<Vec<u8>> = (0..100_000u32)
        .map(|i| format!("user:{i}:profile").into_bytes())
        .collect();
    let now = Instant::now();
    let hot = HotKeys::new(now);
    let mut i = 0usize;
    c.bench_function("hot_keys observe, uniform over 100k keys", |b| {
        b.iter(|| {
            i = (i + 7919) % keys.len();
            hot.observe(&keys[i], Access::Read, now);
        })
    });
    let skewed = HotKeys::new(now);
    let mut j = 0usize;
    c.bench_function("hot_keys observe, 90% on 10 keys", |b| {
        b.iter(|| {
            j += 1;
            let k = if j % 10 == 0 { j % keys.len() } else { j % 10 };
            skewed.observe(&keys[k], Access::Read, now);
        })
    });
}

criterion_group!(benches, observe);
criterion_main!(benches);
