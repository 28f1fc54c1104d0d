//! [`Zipfian`]: ranks drawn with a Zipf law, the skew of real cache traffic.
//!
//! Why our own: this is the generator of Gray et al., "Quickly Generating Billion-Record
//! Synthetic Databases" (SIGMOD 1994), the one YCSB uses, so a `--zipf 0.99` run here skews its
//! keys as YCSB's default workloads do and figures can be set side by side. It is twenty lines
//! and needs no crate. Gray et al.'s formula holds for θ < 1 only; for θ ≥ 1 (heavier skews,
//! such as the θ ≈ 1.2 measured in some production caches) ranks are drawn by inverting the
//! exact cumulative law, kept as a table of `items` sums (8 bytes a key, so at most
//! [`MAX_TABLE_ITEMS`] keys).
//!
//! Promises:
//! - `sample` returns a rank in `0..items`; rank 0 is the hottest.
//! - The two hottest ranks have exactly their Zipf probabilities, `1/ζ(n,θ)` and
//!   `1/(2^θ·ζ(n,θ))`; the tail follows the law by Gray et al.'s approximation.
//! - Draws depend only on the random source passed in: a seeded one gives the same ranks.
//! - Building costs O(items) once (the normalising sum ζ); each draw is O(1) for θ < 1 and
//!   O(log items) for θ ≥ 1, whose ranks follow the law exactly.

use rand::Rng;
use std::sync::Arc;

/// The most items a Zipf law with θ ≥ 1 may have (its table takes 8 bytes an item).
pub const MAX_TABLE_ITEMS: u64 = 10_000_000;

/// A Zipf distribution over `0..items` with exponent θ ≥ 0 (θ = 0 is uniform).
#[derive(Clone, Debug)]
pub struct Zipfian {
    items: u64,
    theta: f64,
    /// ζ(items, θ) = Σ_{i=1..items} 1/i^θ, the normalising constant.
    zetan: f64,
    /// 1/(1-θ).
    alpha: f64,
    /// (1 - (2/n)^(1-θ)) / (1 - ζ(2,θ)/ζ(n,θ)).
    eta: f64,
    /// 0.5^θ.
    half_pow_theta: f64,
    /// For θ ≥ 1: `table[r]` = Σ_{i=1..r+1} 1/i^θ (shared by clones).
    table: Option<Arc<[f64]>>,
}

impl Zipfian {
    /// Panics unless `items >= 1`, `theta >= 0`, and `items <= MAX_TABLE_ITEMS` when
    /// `theta >= 1` (the options are checked before).
    pub fn new(items: u64, theta: f64) -> Zipfian {
        assert!(items >= 1, "a Zipf law needs at least one item");
        assert!(theta >= 0.0 && theta.is_finite(), "a Zipf law needs θ >= 0");
        if theta >= 1.0 {
            assert!(
                items <= MAX_TABLE_ITEMS,
                "too many items for a θ >= 1 table"
            );
            let mut sum = 0.0;
            let table: Arc<[f64]> = (1..=items)
                .map(|i| {
                    sum += 1.0 / (i as f64).powf(theta);
                    sum
                })
                .collect();
            return Zipfian {
                items,
                theta,
                zetan: sum,
                alpha: 0.0,
                eta: 0.0,
                half_pow_theta: 0.5f64.powf(theta),
                table: Some(table),
            };
        }
        let zetan = Self::zeta(items, theta);
        let zeta2 = Self::zeta(2.min(items), theta);
        let eta = if items <= 2 {
            // The formula's denominators vanish; draws below never reach the tail branch.
            1.0
        } else {
            (1.0 - (2.0 / items as f64).powf(1.0 - theta)) / (1.0 - zeta2 / zetan)
        };
        Zipfian {
            items,
            theta,
            zetan,
            alpha: 1.0 / (1.0 - theta),
            eta,
            half_pow_theta: 0.5f64.powf(theta),
            table: None,
        }
    }

    /// ζ(n, θ) = Σ_{i=1..n} 1/i^θ.
    pub fn zeta(n: u64, theta: f64) -> f64 {
        (1..=n).map(|i| 1.0 / (i as f64).powf(theta)).sum()
    }

    pub fn items(&self) -> u64 {
        self.items
    }

    pub fn theta(&self) -> f64 {
        self.theta
    }

    /// The probability of rank `r` under the exact law (what the generator approximates).
    pub fn probability(&self, rank: u64) -> f64 {
        1.0 / ((rank + 1) as f64).powf(self.theta) / self.zetan
    }

    /// One rank in `0..items`.
    pub fn sample<R: Rng + ?Sized>(&self, rng: &mut R) -> u64 {
        let u: f64 = rng.random();
        let uz = u * self.zetan;
        if let Some(table) = &self.table {
            // The first rank whose cumulative weight passes the draw.
            let rank = table.partition_point(|&cumulative| cumulative <= uz) as u64;
            return rank.min(self.items - 1);
        }
        if uz < 1.0 || self.items == 1 {
            return 0;
        }
        if uz < 1.0 + self.half_pow_theta || self.items == 2 {
            return 1;
        }
        let rank = (self.items as f64 * (self.eta * u - self.eta + 1.0).powf(self.alpha)) as u64;
        rank.min(self.items - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::Zipfian;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    fn frequencies(z: &Zipfian, draws: usize, seed: u64) -> Vec<u64> {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut counts = vec![0u64; z.items() as usize];
        for _ in 0..draws {
            counts[z.sample(&mut rng) as usize] += 1;
        }
        counts
    }

    #[test]
    fn the_hottest_ranks_come_up_as_often_as_the_law_says() {
        let z = Zipfian::new(1000, 0.99);
        let draws = 200_000;
        let counts = frequencies(&z, draws, 7);
        for rank in [0u64, 1] {
            let expected = z.probability(rank);
            let seen = counts[rank as usize] as f64 / draws as f64;
            // The standard error of each share is under 0.6% of it at this many draws.
            assert!(
                (seen - expected).abs() / expected < 0.03,
                "rank {rank}: seen {seen:.4}, the law says {expected:.4}"
            );
        }
        // Rank 1 of 1000 at θ = 0.99 is about 13%: skewed indeed.
        assert!((0.12..0.15).contains(&z.probability(0)));
    }

    #[test]
    fn the_tail_follows_the_law_roughly_and_stays_in_range() {
        let z = Zipfian::new(1000, 0.99);
        let draws = 200_000;
        let counts = frequencies(&z, draws, 8);
        // The hottest tenth of the keys takes the share the law gives it, within a few points
        // (Gray et al.'s tail is an approximation).
        let head: u64 = counts[..100].iter().sum();
        let expected: f64 = (0..100).map(|r| z.probability(r)).sum();
        let seen = head as f64 / draws as f64;
        assert!(
            (seen - expected).abs() < 0.03,
            "top 10%: seen {seen:.3}, law {expected:.3}"
        );
        assert!(counts[0] > counts[1] && counts[1] > counts[9] && counts[9] > counts[99]);
        assert!(counts.iter().sum::<u64>() == draws as u64);
    }

    #[test]
    fn a_skew_past_one_follows_the_law_exactly() {
        let z = Zipfian::new(1000, 1.2);
        let draws = 200_000;
        let counts = frequencies(&z, draws, 11);
        for rank in [0u64, 1, 2, 9] {
            let expected = z.probability(rank);
            let seen = counts[rank as usize] as f64 / draws as f64;
            assert!(
                (seen - expected).abs() / expected < 0.05,
                "rank {rank}: seen {seen:.4}, the law says {expected:.4}"
            );
        }
        // θ = 1.2 over 1000 keys: the hottest key draws almost a quarter of all requests.
        assert!(
            (0.22..0.24).contains(&z.probability(0)),
            "{}",
            z.probability(0)
        );
        assert_eq!(counts.iter().sum::<u64>(), draws as u64);
        assert_eq!(frequencies(&z, 1000, 3), frequencies(&z, 1000, 3));
    }

    #[test]
    fn theta_zero_is_uniform_and_a_seed_replays() {
        let z = Zipfian::new(10, 0.0);
        let counts = frequencies(&z, 100_000, 9);
        for c in &counts {
            assert!((9_000..11_000).contains(c), "{counts:?}");
        }
        assert_eq!(frequencies(&z, 1000, 3), frequencies(&z, 1000, 3));
        let one = Zipfian::new(1, 0.99);
        assert_eq!(frequencies(&one, 100, 1), vec![100]);
        let two = Zipfian::new(2, 0.5);
        assert_eq!(frequencies(&two, 100, 1).iter().sum::<u64>(), 100);
    }
}
