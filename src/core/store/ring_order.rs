//! The store's ring-order index: every held entry by ring position (ties broken by slot), with
//! its state's digest. Anti-entropy lists a hash-tree leaf's keys from it, SCAN walks it in
//! ring order, and the hash trees take a changed state's old digest out of it.
//!
//! Why not a B-tree: a `BTreeMap<(u64, u32), u64>` cost about 40 bytes an entry (24-byte
//! elements in nodes two-thirds full on average), more than a third of the engine's whole
//! overhead per key. Here entries are split into buckets by the top bits of their position,
//! each bucket three parallel vectors sorted by (position, slot): 20 bytes an entry, grown an
//! eighth at a time, so about 22 bytes an entry in all.
//!
//! Promises: iteration over any range of positions in ring order; lookups in O(log n); inserts
//! and removals move at most one bucket's entries, which stay about [`BUCKET_ENTRIES`] on
//! average because the buckets double (each split in two by its next bit) as the index grows.

/// Average entries per bucket past which the buckets double.
pub const BUCKET_ENTRIES: usize = 1024;
/// Bucket bits of an empty index (64 buckets: 4.5 KiB of empty vectors).
const FIRST_BITS: u32 = 6;
/// The most bucket bits (about a billion entries at the average).
const MAX_BITS: u32 = 20;

#[derive(Debug, Default, Clone)]
struct Bucket {
    positions: Vec<u64>,
    slots: Vec<u32>,
    digests: Vec<u64>,
}

impl Bucket {
    /// Where `(position, slot)` is, or would go, in ring order.
    fn search(&self, position: u64, slot: u32) -> Result<usize, usize> {
        let mut i = self.positions.partition_point(|&p| p < position);
        while i < self.positions.len() && self.positions[i] == position {
            match self.slots[i].cmp(&slot) {
                std::cmp::Ordering::Less => i += 1,
                std::cmp::Ordering::Equal => return Ok(i),
                std::cmp::Ordering::Greater => break,
            }
        }
        Err(i)
    }

    fn insert_at(&mut self, i: usize, position: u64, slot: u32, digest: u64) {
        let len = self.positions.len();
        if len == self.positions.capacity() {
            // Grow by an eighth rather than double: the slack is paid per entry.
            let more = (len / 8).max(4);
            self.positions.reserve_exact(more);
            self.slots.reserve_exact(more);
            self.digests.reserve_exact(more);
        }
        self.positions.insert(i, position);
        self.slots.insert(i, slot);
        self.digests.insert(i, digest);
    }

    fn remove_at(&mut self, i: usize) -> u64 {
        self.positions.remove(i);
        self.slots.remove(i);
        let digest = self.digests.remove(i);
        let len = self.positions.len();
        if self.positions.capacity() > 16 && len < self.positions.capacity() / 2 {
            let keep = len + len / 8;
            self.positions.shrink_to(keep);
            self.slots.shrink_to(keep);
            self.digests.shrink_to(keep);
        }
        digest
    }

    #[cfg(test)]
    fn heap_bytes(&self) -> usize {
        self.positions.capacity() * 8 + self.slots.capacity() * 4 + self.digests.capacity() * 8
    }
}

#[derive(Debug, Clone)]
pub struct RingOrder {
    bits: u32,
    buckets: Vec<Bucket>,
    len: usize,
}

impl Default for RingOrder {
    fn default() -> Self {
        RingOrder {
            bits: FIRST_BITS,
            buckets: vec![Bucket::default(); 1 << FIRST_BITS],
            len: 0,
        }
    }
}

impl RingOrder {
    #[cfg(test)]
    fn len(&self) -> usize {
        self.len
    }

    fn bucket_of(&self, position: u64) -> usize {
        (position >> (64 - self.bits)) as usize
    }

    /// The digest held for `(position, slot)`.
    pub fn get(&self, position: u64, slot: u32) -> Option<u64> {
        let bucket = &self.buckets[self.bucket_of(position)];
        bucket
            .search(position, slot)
            .ok()
            .map(|i| bucket.digests[i])
    }

    /// Holds `digest` for `(position, slot)`; the digest it replaces, if it was held.
    pub fn insert(&mut self, position: u64, slot: u32, digest: u64) -> Option<u64> {
        let b = self.bucket_of(position);
        let bucket = &mut self.buckets[b];
        match bucket.search(position, slot) {
            Ok(i) => Some(std::mem::replace(&mut bucket.digests[i], digest)),
            Err(i) => {
                bucket.insert_at(i, position, slot, digest);
                self.len += 1;
                if self.len > BUCKET_ENTRIES << self.bits && self.bits < MAX_BITS {
                    self.double();
                }
                None
            }
        }
    }

    /// Forgets `(position, slot)`; its digest, if it was held.
    pub fn remove(&mut self, position: u64, slot: u32) -> Option<u64> {
        let b = self.bucket_of(position);
        let bucket = &mut self.buckets[b];
        let i = bucket.search(position, slot).ok()?;
        self.len -= 1;
        Some(bucket.remove_at(i))
    }

    /// The entries with positions in `start..=end`, in ring order: (position, slot, digest).
    pub fn range(&self, start: u64, end: u64) -> impl Iterator<Item = (u64, u32, u64)> + '_ {
        let buckets = if start <= end {
            &self.buckets[self.bucket_of(start)..=self.bucket_of(end)]
        } else {
            &self.buckets[..0]
        };
        buckets.iter().flat_map(move |b| {
            let from = b.positions.partition_point(|&p| p < start);
            let to = b.positions.partition_point(|&p| p <= end);
            (from..to).map(move |i| (b.positions[i], b.slots[i], b.digests[i]))
        })
    }

    /// Bytes the index holds on the heap (its vectors' capacities and the bucket table).
    #[cfg(test)]
    fn heap_bytes(&self) -> usize {
        self.buckets.capacity() * std::mem::size_of::<Bucket>()
            + self.buckets.iter().map(Bucket::heap_bytes).sum::<usize>()
    }

    /// Splits every bucket in two by the next bit of its positions.
    fn double(&mut self) {
        let bits = self.bits + 1;
        let mut buckets = Vec::with_capacity(1 << bits);
        for old in std::mem::take(&mut self.buckets) {
            // Positions in a bucket share its top bits, so the split is where the next one is set.
            let high = old
                .positions
                .partition_point(|&p| (p >> (64 - bits)) & 1 == 0);
            let half = |from: usize, to: usize| {
                let mut b = Bucket::default();
                let n = to - from;
                b.positions.reserve_exact(n + n / 8);
                b.slots.reserve_exact(n + n / 8);
                b.digests.reserve_exact(n + n / 8);
                b.positions.extend_from_slice(&old.positions[from..to]);
                b.slots.extend_from_slice(&old.slots[from..to]);
                b.digests.extend_from_slice(&old.digests[from..to]);
                b
            };
            buckets.push(half(0, high));
            buckets.push(half(high, old.positions.len()));
        }
        self.bits = bits;
        self.buckets = buckets;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// SplitMix64, for spread-out positions with ties and reuse.
    fn next(state: &mut u64) -> u64 {
        *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = *state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Against a B-tree model, through growth past several doublings, removals, ties at one
    /// position and replaced digests: the same contents, in the same order, over any range.
    #[test]
    fn it_keeps_what_a_sorted_map_keeps_in_the_same_order() {
        let mut order = RingOrder::default();
        let mut model: BTreeMap<(u64, u32), u64> = BTreeMap::new();
        let mut rng = 7;
        let tied = next(&mut rng);
        for step in 0..300_000u32 {
            let r = next(&mut rng);
            let position = if r % 97 == 0 { tied } else { next(&mut rng) };
            let slot = (r >> 40) as u32 % 50_000;
            match r % 5 {
                0 if !model.is_empty() => {
                    let (&(p, s), _) = model
                        .range((position, 0)..)
                        .next()
                        .unwrap_or_else(|| model.iter().next().expect("not empty"));
                    assert_eq!(order.remove(p, s), model.remove(&(p, s)));
                }
                _ => {
                    let digest = u64::from(step) ^ r;
                    assert_eq!(
                        order.insert(position, slot, digest),
                        model.insert((position, slot), digest)
                    );
                }
            }
        }
        assert!(order.bits > FIRST_BITS, "the buckets never doubled");
        assert_eq!(order.len(), model.len());
        let all: Vec<_> = order.range(0, u64::MAX).collect();
        let expected: Vec<_> = model.iter().map(|(&(p, s), &d)| (p, s, d)).collect();
        assert_eq!(all, expected);
        for _ in 0..200 {
            let (a, b) = (next(&mut rng), next(&mut rng));
            let (start, end) = (a.min(b), a.min(b).saturating_add(b % (1 << 58)));
            let got: Vec<_> = order.range(start, end).collect();
            let expected: Vec<_> = model
                .range((start, 0)..=(end, u32::MAX))
                .map(|(&(p, s), &d)| (p, s, d))
                .collect();
            assert_eq!(got, expected);
        }
        assert_eq!(order.range(5, 4).count(), 0);
        for (&(p, s), &d) in model.iter().take(1000) {
            assert_eq!(order.get(p, s), Some(d));
        }
    }

    /// What the index costs an entry at a million entries: near the 20 bytes its vectors
    /// hold, against about 40 for the B-tree it replaced.
    #[test]
    fn an_entry_costs_about_22_bytes() {
        let mut order = RingOrder::default();
        let mut rng = 11;
        for slot in 0..1_000_000u32 {
            order.insert(next(&mut rng), slot, u64::from(slot));
        }
        let per_entry = order.heap_bytes() as f64 / 1e6;
        assert!(
            (20.0..24.0).contains(&per_entry),
            "{per_entry} bytes an entry"
        );
    }
}
