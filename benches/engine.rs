//! The storage engine's hot paths on a store of 1,000,000 keys (16-byte keys, 100-byte values):
//! a write that replaces a key's value, a read, a write of a new key under a memory limit that
//! forces an eviction, and one round of active expiry. `cargo bench --bench engine`.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use ringcache::core::eviction::EvictionPolicy;
use ringcache::core::siblings::Payload;
use ringcache::core::store::{Store, StoreLimits};
use ringcache::core::version_vector::{Actor, VersionVector};
use std::hint::black_box;

const KEYS: u64 = 1_000_000;

fn key(i: u64) -> Vec<u8> {
    format!("key:{i:012}").into_bytes()
}

fn value(expires_at_ms: Option<u64>) -> Payload {
    Payload::Value {
        data: vec![b'v'; 100],
        expires_at_ms,
    }
}

/// A store holding `KEYS` keys; every other one expires at `expiry`.
fn loaded(limits: StoreLimits, expiry: u64) -> Store {
    let mut store = Store::new(64, limits, 7);
    let actor = Actor("A.1764000000000".into());
    for i in 0..KEYS {
        let expires = (i % 2 == 0).then_some(expiry);
        store
            .update(&key(i), &actor, &VersionVector::new(), value(expires), 0)
            .expect("fits");
    }
    store
}

fn engine(c: &mut Criterion) {
    let actor = Actor("A.1764000000000".into());
    let mut store = loaded(StoreLimits::default(), u64::MAX);
    let mut i = 0u64;
    c.bench_function("get (1M keys)", |b| {
        b.iter(|| {
            i = (i + 7_919) % KEYS;
            black_box(store.read(&key(i), 1).is_some())
        })
    });
    c.bench_function("set, replacing a value (1M keys)", |b| {
        b.iter(|| {
            i = (i + 7_919) % KEYS;
            let k = key(i);
            let context = store
                .peek(&k)
                .map(|s| s.context().clone())
                .unwrap_or_default();
            black_box(store.update(&k, &actor, &context, value(None), 2).is_ok())
        })
    });
    drop(store);

    let limit = {
        let s = loaded(StoreLimits::default(), u64::MAX);
        s.used_bytes()
    };
    let mut full = loaded(
        StoreLimits {
            max_memory_bytes: Some(limit),
            policy: EvictionPolicy::Lru,
        },
        u64::MAX,
    );
    let mut n = KEYS;
    c.bench_function(
        "set of a new key at the limit, evicting (lru, 1M keys)",
        |b| {
            b.iter(|| {
                n += 1;
                black_box(
                    full.update(&key(n), &actor, &VersionVector::new(), value(None), 3)
                        .is_ok(),
                )
            })
        },
    );
    drop(full);

    // Half the keys expire at t = 10; each round samples 20 keys.
    let mut expiring = loaded(StoreLimits::default(), 10);
    c.bench_function(
        "active expiry round (20 samples, half expired, 1M keys)",
        |b| {
            b.iter_batched(
                || (),
                |_| black_box(expiring.expire_step(11)),
                BatchSize::SmallInput,
            )
        },
    );
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30);
    targets = engine
}
criterion_main!(benches);
