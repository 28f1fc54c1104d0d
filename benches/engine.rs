//! The storage engine's hot paths on a store of 1,000,000 keys (16-byte keys, 100-byte values):
//! a write that replaces a key's value, a read, a write of a new key under a memory limit that
//! forces an eviction, and one round of active expiry. Then the core's whole request on one
//! peer with N=1 (what a one-peer GET or SET costs under the shard's lock, with no network or
//! runtime: the steady figure to judge a change to the request path by, where a load test on
//! this shared machine swings by ±15%). `cargo bench --bench engine`.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use ringcache::core::config::CoreConfig;
use ringcache::core::eviction::EvictionPolicy;
use ringcache::core::node::{Input, Node, Outputs};
use ringcache::core::request::{ClientRequest, WriteKind, WriteRequest};
use ringcache::core::siblings::Payload;
use ringcache::core::store::{Store, StoreLimits};
use ringcache::core::types::{ClientRequestId, NodeId, Quorum};
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

/// Keys a lone peer holds for the node benchmarks.
const NODE_KEYS: u64 = 10_000;

/// A plain SET of `key` (W=1), as the RESP endpoint makes it.
fn set_request(key: Vec<u8>) -> ClientRequest {
    ClientRequest::Write(WriteRequest {
        key,
        write: WriteKind::Put {
            value: vec![b'v'; 100],
            ttl_ms: None,
        },
        context: None,
        w: Quorum::One,
        sloppy: None,
        overwrite: true,
    })
}

/// Runs one client request on `node` and checks it was answered at once.
fn run_request(node: &mut Node, id: u64, now: u64, request: ClientRequest) {
    let mut out = Outputs::default();
    let input = Input::Client {
        id: ClientRequestId(id),
        request,
        trace: None,
    };
    node.handle(now, input, &mut out);
    assert_eq!(out.replies.len(), 1, "answered at once");
    black_box(out);
}

fn node_requests(c: &mut Criterion) {
    let config = CoreConfig {
        replicas: 1,
        ..CoreConfig::default()
    };
    let mut node = Node::new(NodeId::from("A"), 1, config);
    let now = 1_764_000_000_000;
    for i in 0..NODE_KEYS {
        run_request(&mut node, i, now, set_request(key(i)));
    }
    let (mut i, mut id) = (0u64, NODE_KEYS);
    c.bench_function(
        "node: GET r=1 of a held key, one peer N=1 (10k keys)",
        |b| {
            b.iter(|| {
                i = (i + 7_919) % NODE_KEYS;
                id += 1;
                let request = ClientRequest::Get {
                    key: key(i),
                    r: Quorum::One,
                    session: None,
                    stale_ok_ms: 0,
                };
                run_request(&mut node, id, now, request);
            })
        },
    );
    c.bench_function(
        "node: SET w=1 replacing a value, one peer N=1 (10k keys)",
        |b| {
            b.iter(|| {
                i = (i + 7_919) % NODE_KEYS;
                id += 1;
                run_request(&mut node, id, now, set_request(key(i)));
            })
        },
    );
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30);
    targets = node_requests, engine
}
criterion_main!(benches);
