//! The engine's promises: merge keeps the newer write, the memory limit holds under a flood
//! for every policy, `noeviction` refuses with a clear error, evictions stay local, repair does
//! not refill a full store, and active expiry reclaims expired values' bytes unread.

use super::*;

fn value(s: &str) -> Payload {
    Payload::Value {
        data: s.as_bytes().to_vec(),
        expires_at_ms: None,
    }
}

fn actor() -> Actor {
    Actor("A.1".into())
}

fn unlimited() -> Store {
    Store::new(16, StoreLimits::default(), 7)
}

fn limited(policy: EvictionPolicy, bytes: u64) -> Store {
    Store::new(
        16,
        StoreLimits {
            max_memory_bytes: Some(bytes),
            policy,
        },
        7,
    )
}

#[test]
fn update_then_merge_of_a_stale_state_keeps_the_newer_value() {
    let mut store = unlimited();
    let (first, _) = store
        .update(b"k", &actor(), &VersionVector::new(), value("v1"), 0)
        .unwrap();
    store
        .update(b"k", &actor(), first.context(), value("v2"), 0)
        .unwrap();
    store.merge(b"k", &first, 0).unwrap();
    assert_eq!(
        store.peek(b"k").unwrap().visible_values(0),
        vec![&value("v2")]
    );
    assert_eq!(store.len(), 1);
}

#[test]
fn merge_into_an_empty_store_adopts_the_state() {
    let mut a = unlimited();
    let mut b = unlimited();
    let (s, _) = a
        .update(b"k", &actor(), &VersionVector::new(), value("x"), 0)
        .unwrap();
    b.merge(b"k", &s, 0).unwrap();
    assert_eq!(b.peek(b"k"), Some(s));
}

#[test]
fn accounting_follows_writes_and_counts_more_than_the_payload() {
    let mut store = unlimited();
    store
        .update(
            b"key",
            &actor(),
            &VersionVector::new(),
            value("0123456789"),
            0,
        )
        .unwrap();
    let one = store.used_bytes();
    assert!(
        one > 13 + 64,
        "key + value + metadata + overhead, got {one}"
    );
    let actor_table = one - footprint(b"key", &store.peek(b"key").unwrap());
    assert!(
        actor_table > 0 && actor_table < 512,
        "the actor table: {actor_table}"
    );
    store
        .update(b"other", &actor(), &VersionVector::new(), value("x"), 0)
        .unwrap();
    assert!(store.used_bytes() > one);
}

#[test]
fn after_an_eviction_an_absent_key_is_written_under_a_fresh_actor() {
    // The store evicted "k" (and forgot its clock); another replica still holds the write
    // the store made before, dot (A.1, 1).
    let mut store = limited(EvictionPolicy::Fifo, 8 * 1024);
    let (elsewhere, first) = store
        .update(b"k", &actor(), &VersionVector::new(), value("old"), 0)
        .unwrap();
    let mut i = 0;
    while store.peek(b"k").is_some() {
        i += 1;
        let key = format!("filler-{i}");
        store
            .update(
                key.as_bytes(),
                &actor(),
                &VersionVector::new(),
                value("f"),
                i,
            )
            .unwrap();
    }
    // A blind write to "k" must not claim (A.1, 1) as seen, or merging it with the other
    // replica would silently drop "old".
    let (state, dot) = store
        .update(b"k", &actor(), &VersionVector::new(), value("new"), i + 1)
        .unwrap();
    assert_ne!(dot.actor, first.actor, "a fresh actor");
    let merged = state.merged(&elsewhere);
    assert_eq!(
        merged.visible_values(0).len(),
        2,
        "both writes survive as siblings"
    );
    // Writing the key again (now present) must not return to the old actor either: its
    // history for this key was forgotten with the eviction.
    let (again, dot2) = store
        .update(b"k", &actor(), state.context(), value("newer"), i + 2)
        .unwrap();
    assert_eq!(dot2.actor, dot.actor);
    let mut seen: Vec<String> = again
        .merged(&elsewhere)
        .visible_values(0)
        .into_iter()
        .map(|p| match p {
            Payload::Value { data, .. } => String::from_utf8(data.clone()).unwrap(),
            Payload::Tombstone | Payload::Counter { .. } => unreachable!("values only"),
        })
        .collect();
    seen.sort();
    assert_eq!(seen, vec!["newer", "old"]);
}

#[test]
fn the_limit_holds_under_a_flood_for_every_evicting_policy() {
    for policy in EvictionPolicy::ALL {
        if policy == EvictionPolicy::NoEviction {
            continue;
        }
        let limit = 64 * 1024;
        let mut store = limited(policy, limit);
        for i in 0..5_000u64 {
            let key = format!("key-{i}");
            let payload = Payload::Value {
                data: vec![b'x'; 100],
                // volatile-ttl can only evict keys that expire.
                expires_at_ms: Some(1_000_000 + i),
            };
            store
                .update(key.as_bytes(), &actor(), &VersionVector::new(), payload, i)
                .unwrap();
            assert!(
                store.used_bytes() <= limit,
                "{policy}: {} bytes after write {i}",
                store.used_bytes()
            );
        }
        let stats = store.stats();
        assert!(stats.evicted > 4_000, "{policy}: evicted {}", stats.evicted);
        assert_eq!(store.len() as u64 + stats.evicted, 5_000, "{policy}");
    }
}

fn expiring(data: &[u8], at: Millis) -> Payload {
    Payload::Value {
        data: data.to_vec(),
        expires_at_ms: Some(at),
    }
}

#[test]
fn the_reported_case_volatile_ttl_without_ttls_refuses_once_full_and_stays_under() {
    // Issue 9: 4 MiB, volatile-ttl, 20,000 writes of 400-byte values without TTLs were all
    // acknowledged and the store held 9.4 MB.
    let limit = 4 * 1024 * 1024;
    let mut store = limited(EvictionPolicy::VolatileTtl, limit);
    let mut refused = 0;
    for i in 0..20_000u64 {
        let key = format!("key-{i}");
        let payload = Payload::Value {
            data: vec![b'x'; 400],
            expires_at_ms: None,
        };
        if store
            .update(key.as_bytes(), &actor(), &VersionVector::new(), payload, i)
            .is_err()
        {
            refused += 1;
        }
        assert!(
            store.used_bytes() <= limit,
            "{} after write {i}",
            store.used_bytes()
        );
    }
    assert!(refused > 10_000, "refused {refused}");
    assert_eq!(store.stats().evicted, 0);
    assert!(
        store.used_bytes() > limit - 1_000,
        "filled: {}",
        store.used_bytes()
    );
}

#[test]
fn under_every_policy_a_write_that_nothing_can_make_room_for_is_refused() {
    for policy in EvictionPolicy::ALL {
        let limit = 4 * 1024;
        // One key that outgrows the store: blind writes keep adding siblings, and no other
        // key exists to evict, whatever the policy.
        let mut store = limited(policy, limit);
        let mut refused = None;
        for i in 0..1_000u64 {
            let before = store.peek(b"k");
            // Distinct values: a blind write of an equal value would replace it.
            let sibling = value(&format!("sibling-{i:04}"));
            match store.update(b"k", &actor(), &VersionVector::new(), sibling, i) {
                Ok(_) => {}
                Err(e) => {
                    assert_eq!(
                        store.peek(b"k"),
                        before,
                        "{policy}: a refusal changes nothing"
                    );
                    refused = Some((i, e));
                    break;
                }
            }
            assert!(
                store.used_bytes() <= limit,
                "{policy}: {} after {i}",
                store.used_bytes()
            );
        }
        let (i, error) = refused.unwrap_or_else(|| panic!("{policy}: never refused"));
        assert!(i > 10, "{policy}: refused after {i} writes");
        assert_eq!(error.policy, policy);
        assert!(error.to_string().contains("out of memory"), "{error}");
        assert_eq!(store.stats().evicted, 0, "{policy}");

        // A flood of keys without TTLs: refused once full where the policy cannot evict them
        // (volatile-ttl, noeviction), never refused where it can.
        let mut store = limited(policy, limit);
        let mut first_refusal = None;
        for i in 0..500u64 {
            let key = format!("key-{i}");
            let result = store.update(
                key.as_bytes(),
                &actor(),
                &VersionVector::new(),
                value("0123456789"),
                i,
            );
            assert!(
                store.used_bytes() <= limit,
                "{policy}: {} after {i}",
                store.used_bytes()
            );
            match (result, first_refusal) {
                (Err(_), None) => first_refusal = Some(i),
                (Ok(_), Some(first)) => panic!("{policy}: write {i} accepted after {first}"),
                _ => {}
            }
        }
        if policy.evicts(false) {
            assert_eq!(first_refusal, None, "{policy}");
            assert!(store.stats().evicted > 400, "{policy}");
        } else {
            let first = first_refusal.unwrap_or_else(|| panic!("{policy}: never refused"));
            assert!(first > 20, "{policy}: refused at {first}");
            assert_eq!(store.stats().evicted, 0, "{policy}");
            assert_eq!(
                store.len() as u64,
                first,
                "{policy}: every accepted key is held"
            );
        }
    }
}

#[test]
fn volatile_ttl_evicts_the_one_expiring_key_a_sample_misses_before_refusing() {
    // One key with a TTL among hundreds without: five samples almost never hold it, yet the
    // store holds something evictable, so writes must not be refused until it is gone.
    let limit = 64 * 1024;
    let mut store = limited(EvictionPolicy::VolatileTtl, limit);
    store
        .update(
            b"expiring",
            &actor(),
            &VersionVector::new(),
            expiring(&[b'e'; 900], 1_000_000),
            0,
        )
        .unwrap();
    let mut i = 0;
    loop {
        i += 1;
        let key = format!("key-{i}");
        let result = store.update(
            key.as_bytes(),
            &actor(),
            &VersionVector::new(),
            value("0123456789"),
            i,
        );
        assert!(store.used_bytes() <= limit);
        if result.is_err() {
            break;
        }
    }
    assert!(
        store.peek(b"expiring").is_none(),
        "refused at write {i} while it was held"
    );
    assert_eq!(store.stats().evicted, 1);
    assert!(i > 400, "{i} keys");
}

#[test]
fn a_refusal_evicts_nothing_when_evicting_everything_would_not_be_enough() {
    let limit = 8 * 1024;
    let mut store = limited(EvictionPolicy::VolatileTtl, limit);
    store
        .update(
            b"small",
            &actor(),
            &VersionVector::new(),
            expiring(b"s", 1_000_000),
            0,
        )
        .unwrap();
    let mut i = 0;
    while store
        .update(
            format!("key-{i}").as_bytes(),
            &actor(),
            &VersionVector::new(),
            value("0123456789"),
            i,
        )
        .is_ok()
    {
        i += 1;
        if store.peek(b"small").is_none() {
            break;
        }
    }
    // Either the small expiring key made room for one more write (and was evicted), or it is
    // still held; a write far bigger than it is refused without evicting it.
    if store.peek(b"small").is_some() {
        let big = Payload::Value {
            data: vec![b'b'; 1_000],
            expires_at_ms: None,
        };
        assert!(store
            .update(b"big", &actor(), &VersionVector::new(), big, 1)
            .is_err());
        assert!(
            store.peek(b"small").is_some(),
            "evicted for a write then refused"
        );
        assert_eq!(store.stats().evicted, 0);
    }
}

#[test]
fn merges_and_repairs_follow_the_same_rule() {
    let limit = 8 * 1024;
    let mut store = limited(EvictionPolicy::VolatileTtl, limit);
    let mut i = 0;
    while store
        .update(
            format!("key-{i}").as_bytes(),
            &actor(),
            &VersionVector::new(),
            value("0123456789"),
            i,
        )
        .is_ok()
    {
        i += 1;
    }
    let used = store.used_bytes();
    assert!(used <= limit);
    // A replicated write of a new key (StoreRefused upstream), and a repair that would grow a
    // held key, are refused the same way; neither evicts anything.
    let mut elsewhere = unlimited();
    let (new, _) = elsewhere
        .update(
            b"new",
            &actor(),
            &VersionVector::new(),
            Payload::Value {
                data: vec![b'n'; 200],
                expires_at_ms: None,
            },
            0,
        )
        .unwrap();
    assert!(store.merge(b"new", &new, 0).is_err());
    let held = store.peek(b"key-0").unwrap();
    let (grown, _) = elsewhere
        .update(
            b"key-0",
            &Actor("B.1".into()),
            &VersionVector::new(),
            Payload::Value {
                data: vec![b'g'; 500],
                expires_at_ms: None,
            },
            0,
        )
        .unwrap();
    let grown = held.merged(&grown);
    assert!(!store.merge_repair(b"key-0", &grown, 0));
    assert_eq!(store.peek(b"key-0"), Some(held));
    assert_eq!(
        store.used_bytes(),
        used,
        "refusals leave the store as it was"
    );
    assert_eq!(store.stats().evicted, 0);
    // With a key that has a TTL to evict, a merge that needs its room goes through, once.
    let mut roomy = limited(EvictionPolicy::VolatileTtl, limit);
    roomy
        .update(
            b"ttl",
            &actor(),
            &VersionVector::new(),
            expiring(&[b't'; 600], 9_000),
            0,
        )
        .unwrap();
    let mut j = 0;
    while roomy.used_bytes() < limit - 200 {
        roomy
            .update(
                format!("key-{j}").as_bytes(),
                &actor(),
                &VersionVector::new(),
                value("0123456789"),
                j,
            )
            .unwrap();
        j += 1;
    }
    let big = |key: &[u8]| {
        unlimited()
            .update(
                key,
                &Actor("B.1".into()),
                &VersionVector::new(),
                Payload::Value {
                    data: vec![b'b'; 400],
                    expires_at_ms: None,
                },
                0,
            )
            .unwrap()
            .0
    };
    roomy.merge(b"big-1", &big(b"big-1"), 0).unwrap();
    assert!(roomy.peek(b"ttl").is_none(), "the key with a TTL made room");
    assert!(roomy.used_bytes() <= limit);
    assert!(roomy.merge(b"big-2", &big(b"big-2"), 0).is_err());
    assert!(roomy.used_bytes() <= limit);
}

#[test]
fn lru_under_pressure_keeps_the_keys_that_are_read() {
    let limit = 1024 * 1024;
    let mut store = limited(EvictionPolicy::Lru, limit);
    let hot: Vec<String> = (0..20).map(|i| format!("hot-{i}")).collect();
    for (t, i) in (0..5_000u64).enumerate() {
        let t = t as Millis;
        let key = format!("cold-{i}");
        store
            .update(
                key.as_bytes(),
                &actor(),
                &VersionVector::new(),
                value("x"),
                t,
            )
            .unwrap();
        for h in &hot {
            if i == 0 {
                store
                    .update(h.as_bytes(), &actor(), &VersionVector::new(), value("h"), t)
                    .unwrap();
            }
            store.read(h.as_bytes(), t);
        }
    }
    let kept = hot
        .iter()
        .filter(|h| store.peek(h.as_bytes()).is_some())
        .count();
    assert!(kept >= 18, "only {kept} of 20 hot keys survived");
}

#[test]
fn noeviction_refuses_writes_with_a_clear_error_and_keeps_serving_reads() {
    let limit = 64 * 1024;
    let mut store = limited(EvictionPolicy::NoEviction, limit);
    let mut refused = None;
    for i in 0..1_000u64 {
        let key = format!("key-{i}");
        match store.update(
            key.as_bytes(),
            &actor(),
            &VersionVector::new(),
            value("v"),
            0,
        ) {
            Ok(_) => assert!(store.used_bytes() <= limit),
            Err(e) => {
                refused = Some((i, e));
                break;
            }
        }
    }
    let (i, error) = refused.expect("the store filled up");
    assert!(i > 3, "a few keys fit first");
    assert_eq!(error.limit, limit);
    assert!(error.to_string().contains("out of memory"));
    assert!(error.to_string().contains("noeviction"));
    assert_eq!(store.stats().evicted, 0);
    assert!(store.peek(b"key-0").is_some(), "reads keep working");
    // A replicated write is refused the same way.
    let (state, _) = unlimited()
        .update(b"new", &actor(), &VersionVector::new(), value("v"), 0)
        .unwrap();
    assert!(store.merge(b"new", &state, 0).is_err());
}

#[test]
fn evictions_are_local_and_repair_does_not_refill_a_full_store() {
    let limit = 16 * 1024;
    let mut store = limited(EvictionPolicy::Fifo, limit);
    let mut first_state = None;
    for i in 0..500u64 {
        let key = format!("key-{i}");
        let (s, _) = store
            .update(
                key.as_bytes(),
                &actor(),
                &VersionVector::new(),
                value("v"),
                i,
            )
            .unwrap();
        if i == 0 {
            first_state = Some(s);
        }
    }
    assert!(store.peek(b"key-0").is_none(), "FIFO evicted the first key");
    // No tombstone was written in its place: the key is simply absent here.
    assert!(store.iter().all(|(_, s)| s.visible_values(0).len() == 1));
    // Read repair offering the evicted key back is declined while the store is full.
    assert!(!store.merge_repair(b"key-0", first_state.as_ref().unwrap(), 1_000));
    assert!(store.peek(b"key-0").is_none());
    assert_eq!(store.stats().repairs_declined, 1);
    // A key the store holds is still repaired.
    let (newer, _) = unlimited()
        .update(b"key-499", &actor(), &VersionVector::new(), value("w"), 0)
        .unwrap();
    assert!(store.merge_repair(b"key-499", &newer, 1_000));
}

#[test]
fn active_expiry_reclaims_expired_values_without_reads() {
    let mut store = unlimited();
    for i in 0..200u64 {
        let key = format!("key-{i}");
        let payload = Payload::Value {
            data: vec![b'x'; 1_000],
            expires_at_ms: Some(if i < 100 { 1_000 } else { 1_000_000 }),
        };
        store
            .update(key.as_bytes(), &actor(), &VersionVector::new(), payload, 0)
            .unwrap();
    }
    let before = store.used_bytes();
    // Before expiry nothing is reclaimed.
    assert!(store.expire_step(999).is_empty());
    // Each step examines a bounded sample; a few hundred steps (a few seconds of ticks)
    // reclaim every expired value.
    let mut steps = 0;
    while store.stats().expired < 100 && steps < 500 {
        store.expire_step(1_000);
        steps += 1;
    }
    assert_eq!(store.stats().expired, 100, "after {steps} steps");
    assert!(
        store.used_bytes() < before - 100 * 900,
        "the values' bytes were reclaimed"
    );
    // Expired values became tombstones under the same dot; the live ones are untouched.
    assert!(store
        .peek(b"key-0")
        .unwrap()
        .visible_values(2_000)
        .is_empty());
    assert_eq!(
        store.peek(b"key-150").unwrap().visible_values(2_000).len(),
        1
    );
}

#[test]
fn the_actor_table_holds_only_actors_that_entries_refer_to() {
    // Rewriting evicted keys starts a new dot-minting epoch (a new actor) again and again;
    // the table must forget epochs no entry names any more, or it would grow for ever.
    let limit = 16 * 1024;
    let mut store = limited(EvictionPolicy::Random, limit);
    for i in 0..20_000u64 {
        let key = format!("key-{}", i % 300);
        let context = store.peek(key.as_bytes()).map(|s| s.context().clone());
        store
            .update(
                key.as_bytes(),
                &actor(),
                &context.unwrap_or_default(),
                value("v"),
                i,
            )
            .unwrap();
        assert!(store.used_bytes() <= limit);
    }
    assert!(store.stats().evicted > 10_000);
    let named: std::collections::BTreeSet<Actor> = store
        .iter()
        .flat_map(|(_, s)| {
            s.context()
                .iter()
                .map(|(a, _)| a.clone())
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(named.len() > 1, "several epochs are still referenced");
    assert_eq!(store.actor_count(), named.len());
    // Dropping every key gives every reference back.
    store.drop_where(|_| true);
    assert_eq!(store.actor_count(), 0);
    assert_eq!(store.len(), 0);
}

#[test]
fn a_key_that_stays_keeps_its_actor_while_other_keys_come_and_go() {
    // volatile-ttl evicts only keys with an expiry: "hot" (none) stays; cold keys churn, and
    // rewriting evicted ones keeps starting new epochs.
    let mut store = limited(EvictionPolicy::VolatileTtl, 8 * 1024);
    let mut hot_context = VersionVector::new();
    for i in 0..3_000u64 {
        let (state, _) = store
            .update(b"hot", &actor(), &hot_context, value("h"), i)
            .unwrap();
        hot_context = state.context().clone();
        let cold = format!("cold-{}", i % 200);
        let payload = Payload::Value {
            data: b"c".to_vec(),
            expires_at_ms: Some(1_000_000),
        };
        store
            .update(cold.as_bytes(), &actor(), &VersionVector::new(), payload, i)
            .unwrap();
    }
    assert!(store.epoch() > 10, "epochs moved on: {}", store.epoch());
    assert_eq!(
        hot_context.len(),
        1,
        "one actor for the key that stayed: {hot_context}"
    );
    assert_eq!(hot_context.get(&actor()), 3_000);
}

/// A state of `key`'s value written once by each of `actors`, in turn.
fn written_by(actors: &[String], data: &str) -> Siblings {
    let mut state = Siblings::new();
    for a in actors {
        let context = state.context().clone();
        state.update(&Actor(a.as_str().into()), &context, value(data), 16);
    }
    state
}

#[test]
fn a_refused_write_never_leaves_the_actor_table_larger_than_the_limit_allows() {
    // Replicated states name coordinators this store has not seen: each write interns new
    // actors (the actor index grows, or rehashes away the tombstones that forgotten actors
    // left), and a small limit refuses many of them. A refusal gives the actors back and
    // must leave the store within its limit, whatever the index's layout before.
    for policy in [EvictionPolicy::Fifo, EvictionPolicy::Random] {
        let limit = 2048;
        let mut store = limited(policy, limit);
        let mut refused = 0;
        for i in 0..3_000u64 {
            let first = i / 3;
            let actors: Vec<String> = (0..1 + i * 7 % 16)
                .map(|j| format!("P{}.1", first + j))
                .collect();
            let key = format!("key-{}", i % 7);
            if store
                .merge(key.as_bytes(), &written_by(&actors, "v"), i)
                .is_err()
            {
                refused += 1;
            }
            assert!(
                store.used_bytes() <= limit,
                "{policy:?}: write {i} left {} bytes, limit {limit}",
                store.used_bytes()
            );
        }
        assert!(refused > 0, "{policy:?}: the limit refused some writes");
    }
}

mod packed_store_laws {
    //! Random sequences of writes, replicated merges, expiry, collection and drops, with and
    //! without a memory limit: the packed store must agree with a plain map of states when
    //! nothing is evicted — what readers see at every step, while TTL'd values are still
    //! visible, soon after and long after they expire — and its bookkeeping (bytes, bytes
    //! that expire, actor references) must stay exact, and a limit must hold after every step
    //! under every policy.

    use super::*;
    use proptest::prelude::*;
    use std::collections::{BTreeMap, BTreeSet};

    #[derive(Clone, Debug)]
    enum Step {
        /// A client write at coordinator `actor`, with the key's current context or blind.
        Write {
            key: u8,
            actor: u8,
            with_context: bool,
            ttl: Option<u64>,
            delete: bool,
        },
        /// A state another replica coordinated, merged in.
        Merge {
            key: u8,
            actor: u8,
        },
        Expire {
            advance: u64,
        },
        ForgetIfTombstones {
            key: u8,
        },
        DropKeysBelow {
            key: u8,
        },
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            4 => (0u8..12, 0u8..3, any::<bool>(), proptest::option::of(1u64..50), any::<bool>())
                .prop_map(|(key, actor, with_context, ttl, delete)| Step::Write {
                    key, actor, with_context, ttl, delete: delete && key % 3 == 0,
                }),
            2 => (0u8..12, 3u8..5).prop_map(|(key, actor)| Step::Merge { key, actor }),
            1 => (0u64..40).prop_map(|advance| Step::Expire { advance }),
            1 => (0u8..12).prop_map(|key| Step::ForgetIfTombstones { key }),
            1 => (0u8..3).prop_map(|key| Step::DropKeysBelow { key }),
        ]
    }

    fn key(k: u8) -> Vec<u8> {
        format!("key-{k}").into_bytes()
    }

    /// Recomputes what the store's counters should say from its entries.
    fn assert_bookkeeping(store: &Store) {
        let mut bytes = 0;
        let mut expiring = 0;
        let mut named = BTreeSet::new();
        for slot in store.entries.iter() {
            bytes += entry_footprint(slot.packed.len());
            if packed::earliest_expiry(&slot.packed).is_some() {
                expiring += entry_footprint(slot.packed.len());
            }
            let state = packed::decode(&slot.packed, &store.actors);
            named.extend(state.context().iter().map(|(a, _)| a.clone()));
            named.extend(state.versions().map(|(d, _)| d.actor.clone()));
        }
        assert_eq!(store.entry_bytes, bytes, "entry bytes drifted");
        assert_eq!(store.expiring_bytes, expiring, "expiring bytes drifted");
        assert_eq!(store.actor_count(), named.len(), "actor references drifted");
    }

    /// What readers of `store` and of `model` see agrees at `now`: the same keys, clocks, and
    /// visible values now (TTL'd values written lately still show), a little later (some have
    /// expired) and long after (none show).
    fn assert_agrees(store: &Store, model: &BTreeMap<Vec<u8>, Siblings>, now: Millis) {
        let held: BTreeMap<Vec<u8>, Siblings> =
            store.iter().map(|(k, s)| (k.to_vec(), s)).collect();
        assert_eq!(
            held.keys().collect::<Vec<_>>(),
            model.keys().collect::<Vec<_>>()
        );
        for (k, s) in &held {
            let m = &model[k];
            assert_eq!(s.context(), m.context());
            for at in [now, now + 10, now + 25, u64::MAX / 2] {
                assert_eq!(
                    s.visible_values(at),
                    m.visible_values(at),
                    "{k:?} at {at} (now {now})"
                );
            }
        }
    }

    fn run(
        steps: &[Step],
        limit: Option<u64>,
        policy: EvictionPolicy,
    ) -> (Store, BTreeMap<Vec<u8>, Siblings>) {
        let limits = StoreLimits {
            max_memory_bytes: limit,
            policy,
        };
        let mut store = Store::new(16, limits, 3);
        let mut model: BTreeMap<Vec<u8>, Siblings> = BTreeMap::new();
        let mut elsewhere = Store::new(16, StoreLimits::default(), 4);
        let mut now = 0;
        for step in steps {
            now += 1;
            match step {
                Step::Write {
                    key: k,
                    actor: a,
                    with_context,
                    ttl,
                    delete,
                } => {
                    let k = key(*k);
                    let context = if *with_context {
                        store
                            .peek(&k)
                            .map(|s| s.context().clone())
                            .unwrap_or_default()
                    } else {
                        VersionVector::new()
                    };
                    let payload = if *delete {
                        Payload::Tombstone
                    } else {
                        Payload::Value {
                            data: format!("{now}").into_bytes(),
                            expires_at_ms: ttl.map(|t| now + t),
                        }
                    };
                    let actor = Actor(format!("P{a}.1").into());
                    match store.update(&k, &actor, &context, payload, now) {
                        Ok((state, _)) => {
                            model.insert(k, state);
                        }
                        // Only a limit refuses (the model is compared only without one).
                        Err(refused) => assert!(limit.is_some(), "{refused}"),
                    }
                }
                Step::Merge { key: k, actor: a } => {
                    let k = key(*k);
                    let actor = Actor(format!("P{a}.1").into());
                    let payload = Payload::Value {
                        data: format!("m{now}").into_bytes(),
                        expires_at_ms: None,
                    };
                    let (state, _) = elsewhere
                        .update(&k, &actor, &VersionVector::new(), payload, now)
                        .unwrap();
                    match store.merge(&k, &state, now) {
                        Ok(()) => {
                            let merged = model.get(&k).map(|s| s.merged(&state)).unwrap_or(state);
                            model.insert(k, merged);
                        }
                        Err(refused) => assert!(limit.is_some(), "{refused}"),
                    }
                }
                Step::Expire { advance } => {
                    now += advance;
                    for _ in 0..5 {
                        store.expire_step(now);
                    }
                    for state in model.values_mut() {
                        state.expire(now);
                    }
                }
                Step::ForgetIfTombstones { key: k } => {
                    let k = key(*k);
                    if let Some(state) = store.peek(&k) {
                        if store.forget(&k, state.context()) {
                            model.remove(&k);
                        }
                    }
                }
                Step::DropKeysBelow { key: below } => {
                    let doomed: Vec<Vec<u8>> = (0..*below).map(key).collect();
                    store.drop_where(|k| doomed.iter().any(|d| d.as_slice() == k));
                    for d in &doomed {
                        model.remove(d);
                    }
                }
            }
            assert_bookkeeping(&store);
            match limit {
                Some(limit) => assert!(store.used_bytes() <= limit, "{step:?}"),
                None => assert_agrees(&store, &model, now),
            }
        }
        (store, model)
    }

    proptest! {
        #[test]
        fn without_a_limit_the_packed_store_holds_what_a_plain_map_would(
            steps in proptest::collection::vec(step(), 1..120),
        ) {
            // Active expiry samples at random, so `run` compares what readers see and the
            // clocks after every step, not the states themselves.
            run(&steps, None, EvictionPolicy::Random);
        }

        #[test]
        fn under_a_limit_the_bookkeeping_stays_exact_and_the_limit_holds(
            steps in proptest::collection::vec(step(), 1..120),
            policy in proptest::sample::select(EvictionPolicy::ALL.to_vec()),
        ) {
            let (mut store, _) = run(&steps, Some(1_500), policy);
            store.drop_where(|_| true);
            prop_assert_eq!(store.actor_count(), 0);
        }
    }
}

/// The trees a store keeps incrementally equal trees built afresh from what it holds.
fn assert_trees_current(store: &Store, partitions: u32) {
    let mut rebuilt = HashTrees::new(partitions);
    for (key, state) in store.iter() {
        rebuilt.insert(key_position(key), state_digest(key, &state));
        assert_eq!(store.digest_of(key), Some(state_digest(key, &state)));
    }
    for p in 0..partitions {
        assert_eq!(
            store.trees().branches(p),
            rebuilt.branches(p),
            "partition {p}"
        );
        assert_eq!(
            store.trees().keys_in(p),
            rebuilt.keys_in(p),
            "partition {p}"
        );
        let listed: u64 = (0..crate::core::hash_tree::LEAVES)
            .map(|leaf| store.keys_in_leaf(p, leaf as u8).count() as u64)
            .sum();
        assert_eq!(listed, rebuilt.keys_in(p), "partition {p}");
    }
}

#[test]
fn hash_trees_follow_every_change() {
    let partitions = 8;
    let mut store = limited(EvictionPolicy::Lru, 6 * 1024).partitioned(partitions);
    let mut other = unlimited().partitioned(partitions);
    let b = Actor("B.1".into());
    for i in 0..600u64 {
        let key = format!("key-{}", i % 97);
        let expiring = Payload::Value {
            data: vec![b'x'; 40],
            expires_at_ms: Some(i + 30),
        };
        match i % 5 {
            0 | 1 => {
                let _ = store.update(key.as_bytes(), &actor(), &VersionVector::new(), expiring, i);
            }
            2 => {
                let (state, _) = other
                    .update(key.as_bytes(), &b, &VersionVector::new(), value("b"), i)
                    .unwrap();
                let _ = store.merge(key.as_bytes(), &state, i);
            }
            3 => {
                for emptied in store.expire_step(i) {
                    let clock = store.peek(&emptied).unwrap().context().clone();
                    assert!(store.forget(&emptied, &clock));
                }
            }
            _ => {
                store.drop_where(|k| k.ends_with(b"7"));
            }
        }
        assert_trees_current(&store, partitions);
    }
    assert!(store.stats().evicted > 0, "the limit made it evict");
    assert!(store.stats().expired > 0);
}
