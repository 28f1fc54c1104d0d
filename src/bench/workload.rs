//! [`Workload`]: what each request of a bench run is — a read or a write, of which key.
//!
//! Promises:
//! - Keys are numbers in `0..keys`, named `{prefix}{number}`; under the uniform distribution
//!   each is equally likely, under the zipfian one key 0 is the hottest ([`Zipfian`]).
//! - A request is a read with probability `reads` (0 = writes only, 1 = reads only).
//! - Draws depend only on the random source passed in, so a seeded source replays a run's
//!   sequence of requests exactly.

use crate::bench::zipfian::Zipfian;
use rand::Rng;

/// How keys are picked.
#[derive(Clone, Debug)]
pub enum KeyDistribution {
    Uniform { keys: u64 },
    Zipfian(Zipfian),
}

impl KeyDistribution {
    /// Uniform over `keys` keys without `theta`, zipfian with it.
    pub fn new(keys: u64, theta: Option<f64>) -> KeyDistribution {
        match theta {
            None => KeyDistribution::Uniform { keys },
            Some(theta) => KeyDistribution::Zipfian(Zipfian::new(keys, theta)),
        }
    }

    pub fn sample<R: Rng + ?Sized>(&self, rng: &mut R) -> u64 {
        match self {
            KeyDistribution::Uniform { keys } => rng.random_range(0..*keys),
            KeyDistribution::Zipfian(z) => z.sample(rng),
        }
    }

    /// `uniform` or `zipfian θ=…`, as reports print it.
    pub fn describe(&self) -> String {
        match self {
            KeyDistribution::Uniform { .. } => "uniform".into(),
            KeyDistribution::Zipfian(z) => format!("zipfian θ={}", z.theta()),
        }
    }
}

/// Reads or writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpKind {
    Read,
    Write,
}

/// The read:write mix: a request is a read with probability `reads`.
#[derive(Clone, Copy, Debug)]
pub struct OpMix {
    reads: f64,
}

impl OpMix {
    /// `reads` is clamped into `[0, 1]`.
    pub fn new(reads: f64) -> OpMix {
        OpMix {
            reads: reads.clamp(0.0, 1.0),
        }
    }

    pub fn sample<R: Rng + ?Sized>(&self, rng: &mut R) -> OpKind {
        // `random::<f64>()` is in [0, 1): reads = 1 always reads, reads = 0 never does.
        if rng.random::<f64>() < self.reads {
            OpKind::Read
        } else {
            OpKind::Write
        }
    }
}

/// One request to make.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Op {
    pub kind: OpKind,
    pub key: u64,
}

/// Keys, mix and naming of one run.
#[derive(Clone, Debug)]
pub struct Workload {
    pub keys: KeyDistribution,
    pub mix: OpMix,
    pub prefix: String,
}

impl Workload {
    pub fn next_op<R: Rng + ?Sized>(&self, rng: &mut R) -> Op {
        Op {
            kind: self.mix.sample(rng),
            key: self.keys.sample(rng),
        }
    }

    /// Writes the name of key `key` into `out` (cleared first), so a worker reuses one buffer.
    pub fn key_name(&self, key: u64, out: &mut Vec<u8>) {
        use std::io::Write;
        out.clear();
        out.extend_from_slice(self.prefix.as_bytes());
        write!(out, "{key}").expect("writing into a Vec cannot fail");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    fn reads_among(reads: f64, draws: usize) -> usize {
        let mix = OpMix::new(reads);
        let mut rng = StdRng::seed_from_u64(11);
        (0..draws)
            .filter(|_| mix.sample(&mut rng) == OpKind::Read)
            .count()
    }

    #[test]
    fn the_mix_reads_as_often_as_asked() {
        let share = reads_among(0.9, 100_000) as f64 / 100_000.0;
        assert!((share - 0.9).abs() < 0.01, "read share {share}");
        let share = reads_among(0.5, 100_000) as f64 / 100_000.0;
        assert!((share - 0.5).abs() < 0.01, "read share {share}");
        assert_eq!(reads_among(1.0, 10_000), 10_000);
        assert_eq!(reads_among(0.0, 10_000), 0);
    }

    #[test]
    fn a_seed_replays_the_requests_and_keys_stay_in_range() {
        let workload = Workload {
            keys: KeyDistribution::new(50, Some(0.99)),
            mix: OpMix::new(0.7),
            prefix: "bench:".into(),
        };
        let ops = |seed| {
            let mut rng = StdRng::seed_from_u64(seed);
            (0..1000)
                .map(|_| workload.next_op(&mut rng))
                .collect::<Vec<_>>()
        };
        assert_eq!(ops(5), ops(5));
        assert_ne!(ops(5), ops(6));
        assert!(ops(5).iter().all(|op| op.key < 50));
        let uniform = KeyDistribution::new(3, None);
        let mut rng = StdRng::seed_from_u64(1);
        assert!((0..100).all(|_| uniform.sample(&mut rng) < 3));
        let mut name = b"junk".to_vec();
        workload.key_name(42, &mut name);
        assert_eq!(name, b"bench:42");
    }
}
