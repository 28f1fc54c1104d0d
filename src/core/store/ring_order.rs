//! The store's ring-order index: every held entry by ring position (ties broken by slot), with
//! its state's digest. Anti-entropy lists a hash-tree leaf's keys from it, SCAN walks it in
//! ring order, and the hash trees take a changed state's old digest out of it.
//!
//! Why not a B-tree: a `BTreeMap<(u64, u32), u64>` cost about 40 bytes an entry (24-byte
//! elements in nodes two-thirds full on average), more than a third of the engine's whole
//! overhead per key. Here the entries are a sorted list of chunks, each three parallel vectors
//! sorted by (position, slot): 20 bytes an entry, the vectors grown an eighth at a time and
//! sized to what they hold, so about 22 bytes an entry in all.
//!
//! Promises: iteration over any range of positions in ring order; a lookup is a binary search
//! over the chunks and one within a chunk; an insert or removal moves at most one chunk's
//! entries ([`CHUNK_ENTRIES`] at most), whatever the positions: a chunk splits in two when it
//! outgrows that and merges with a neighbour when both are small, so neither keys whose
//! positions crowd together (a client can find such keys: positions are unkeyed SHA-1) nor a
//! store holding only some partitions makes one chunk large.

/// The most entries a chunk holds; past it, it splits in two.
pub const CHUNK_ENTRIES: usize = 512;

#[derive(Debug, Default, Clone)]
struct Chunk {
    /// The first entry's (position, slot), kept beside the vectors so the search for a chunk
    /// reads the chunk list alone, not each probed chunk's heap.
    first: (u64, u32),
    positions: Vec<u64>,
    slots: Vec<u32>,
    digests: Vec<u64>,
}

impl Chunk {
    fn len(&self) -> usize {
        self.positions.len()
    }

    fn first(&self) -> (u64, u32) {
        self.first
    }

    fn refresh_first(&mut self) {
        if let (Some(&position), Some(&slot)) = (self.positions.first(), self.slots.first()) {
            self.first = (position, slot);
        }
    }

    fn last_position(&self) -> u64 {
        self.positions[self.len() - 1]
    }

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
        let len = self.len();
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
        if i == 0 {
            self.first = (position, slot);
        }
    }

    fn remove_at(&mut self, i: usize) -> u64 {
        self.positions.remove(i);
        self.slots.remove(i);
        let digest = self.digests.remove(i);
        if i == 0 {
            self.refresh_first();
        }
        // Refitted once a quarter of the capacity is unused: at most about 27 bytes an entry.
        if self.positions.capacity() > 16 && self.len() < self.positions.capacity() * 3 / 4 {
            self.fit();
        }
        digest
    }

    /// Capacity down to the length and an eighth.
    fn fit(&mut self) {
        let keep = self.len() + self.len() / 8;
        self.positions.shrink_to(keep);
        self.slots.shrink_to(keep);
        self.digests.shrink_to(keep);
    }

    /// The entries from `at` on, as a chunk of their own.
    fn split_off(&mut self, at: usize) -> Chunk {
        let mut tail = Chunk {
            first: (0, 0),
            positions: self.positions.split_off(at),
            slots: self.slots.split_off(at),
            digests: self.digests.split_off(at),
        };
        tail.refresh_first();
        self.fit();
        tail
    }

    /// Takes `next`'s entries, all after this chunk's, at its end.
    fn append(&mut self, mut next: Chunk) {
        self.positions.append(&mut next.positions);
        self.slots.append(&mut next.slots);
        self.digests.append(&mut next.digests);
    }

    #[cfg(test)]
    fn heap_bytes(&self) -> usize {
        self.positions.capacity() * 8 + self.slots.capacity() * 4 + self.digests.capacity() * 8
    }
}

/// The index: non-empty chunks, each entry of one before every entry of the next.
#[derive(Debug, Default, Clone)]
pub struct RingOrder {
    chunks: Vec<Chunk>,
}

impl RingOrder {
    #[cfg(test)]
    fn len(&self) -> usize {
        self.chunks.iter().map(Chunk::len).sum()
    }

    /// The chunk `(position, slot)` is in or belongs in: the last whose first entry is not
    /// after it (the first chunk when every chunk's is).
    fn chunk_for(&self, position: u64, slot: u32) -> usize {
        self.chunks
            .partition_point(|c| c.first() <= (position, slot))
            .saturating_sub(1)
    }

    /// The digest held for `(position, slot)`.
    pub fn get(&self, position: u64, slot: u32) -> Option<u64> {
        let chunk = self.chunks.get(self.chunk_for(position, slot))?;
        chunk.search(position, slot).ok().map(|i| chunk.digests[i])
    }

    /// Holds `digest` for `(position, slot)`; the digest it replaces, if it was held.
    pub fn insert(&mut self, position: u64, slot: u32, digest: u64) -> Option<u64> {
        if self.chunks.is_empty() {
            let mut chunk = Chunk::default();
            chunk.insert_at(0, position, slot, digest);
            self.chunks.push(chunk);
            return None;
        }
        let c = self.chunk_for(position, slot);
        let chunk = &mut self.chunks[c];
        match chunk.search(position, slot) {
            Ok(i) => Some(std::mem::replace(&mut chunk.digests[i], digest)),
            Err(i) => {
                chunk.insert_at(i, position, slot, digest);
                if chunk.len() > CHUNK_ENTRIES {
                    let tail = chunk.split_off(chunk.len() / 2);
                    self.chunks.insert(c + 1, tail);
                }
                None
            }
        }
    }

    /// Forgets `(position, slot)`; its digest, if it was held.
    pub fn remove(&mut self, position: u64, slot: u32) -> Option<u64> {
        let c = self.chunk_for(position, slot);
        let chunk = self.chunks.get_mut(c)?;
        let i = chunk.search(position, slot).ok()?;
        let digest = chunk.remove_at(i);
        if chunk.len() == 0 {
            self.chunks.remove(c);
        } else if chunk.len() < CHUNK_ENTRIES / 8 {
            // A small chunk joins a neighbour that is small too, so churn cannot leave the
            // index in many tiny chunks.
            let fits = |a: &Chunk, b: &Chunk| a.len() + b.len() <= CHUNK_ENTRIES / 2;
            if c + 1 < self.chunks.len() && fits(&self.chunks[c], &self.chunks[c + 1]) {
                let next = self.chunks.remove(c + 1);
                self.chunks[c].append(next);
            } else if c > 0 && fits(&self.chunks[c - 1], &self.chunks[c]) {
                let this = self.chunks.remove(c);
                self.chunks[c - 1].append(this);
            }
        }
        Some(digest)
    }

    /// The entries with positions in `start..=end`, in ring order: (position, slot, digest).
    pub fn range(&self, start: u64, end: u64) -> impl Iterator<Item = (u64, u32, u64)> + '_ {
        let first = self.chunks.partition_point(|c| c.last_position() < start);
        let chunks = if start <= end {
            &self.chunks[first..]
        } else {
            &self.chunks[..0]
        };
        chunks
            .iter()
            .take_while(move |c| c.first.0 <= end)
            .flat_map(move |c| {
                let from = c.positions.partition_point(|&p| p < start);
                let to = c.positions.partition_point(|&p| p <= end);
                (from..to).map(move |i| (c.positions[i], c.slots[i], c.digests[i]))
            })
    }

    /// Bytes the index holds on the heap (its vectors' capacities and the chunk list).
    #[cfg(test)]
    fn heap_bytes(&self) -> usize {
        self.chunks.capacity() * std::mem::size_of::<Chunk>()
            + self.chunks.iter().map(Chunk::heap_bytes).sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::Rng;
    use proptest::test_runner::{RngAlgorithm, TestRng};
    use std::collections::BTreeMap;

    /// A reproducible stream of spread-out numbers, from `seed`.
    fn seeded(seed: u8) -> TestRng {
        TestRng::from_seed(RngAlgorithm::ChaCha, &[seed; 32])
    }

    fn next(rng: &mut TestRng) -> u64 {
        rng.next_u64()
    }

    /// Runs `steps` random inserts and removals (one in `remove_one_in`) of positions from
    /// `position` on the index and on a B-tree model, checking each answer, then every entry
    /// and random ranges.
    fn against_a_model(
        steps: u32,
        remove_one_in: u64,
        mut position: impl FnMut(&mut TestRng) -> u64,
    ) -> (RingOrder, BTreeMap<(u64, u32), u64>) {
        let mut order = RingOrder::default();
        let mut model: BTreeMap<(u64, u32), u64> = BTreeMap::new();
        let mut rng = seeded(7);
        for step in 0..steps {
            let r = next(&mut rng);
            let at = position(&mut rng);
            let slot = (r >> 40) as u32 % 50_000;
            if r % remove_one_in == 0 && !model.is_empty() {
                let (&(p, s), _) = model
                    .range((at, 0)..)
                    .next()
                    .unwrap_or_else(|| model.iter().next().expect("not empty"));
                assert_eq!(order.remove(p, s), model.remove(&(p, s)));
            } else {
                let digest = u64::from(step) ^ r;
                assert_eq!(
                    order.insert(at, slot, digest),
                    model.insert((at, slot), digest)
                );
            }
        }
        check(&order, &model, &mut rng);
        (order, model)
    }

    fn check(order: &RingOrder, model: &BTreeMap<(u64, u32), u64>, rng: &mut TestRng) {
        assert_eq!(order.len(), model.len());
        let all: Vec<_> = order.range(0, u64::MAX).collect();
        let expected: Vec<_> = model.iter().map(|(&(p, s), &d)| (p, s, d)).collect();
        assert_eq!(all, expected);
        for (&(p, s), &d) in model.iter().step_by(7) {
            assert_eq!(order.get(p, s), Some(d));
            assert_eq!(order.get(p, s.wrapping_add(50_000)), None);
        }
        let mut ranges: Vec<(u64, u64)> = (0..200)
            .map(|_| {
                let (a, b) = (next(rng), next(rng));
                (a.min(b), a.min(b).saturating_add(b % (1 << 58)))
            })
            .collect();
        if let Some((&(p, _), _)) = model.iter().nth(model.len() / 2) {
            ranges.extend([(p, p), (p, u64::MAX), (0, p), (p + 1, p)]);
        }
        for (start, end) in ranges {
            let got: Vec<_> = order.range(start, end).collect();
            let expected: Vec<_> = if start <= end {
                model
                    .range((start, 0)..=(end, u32::MAX))
                    .map(|(&(p, s), &d)| (p, s, d))
                    .collect()
            } else {
                Vec::new()
            };
            assert_eq!(got, expected, "range {start}..={end}");
        }
    }

    /// Spread-out positions, one in 97 at one shared position (ties broken by slot), with
    /// replaced digests and removals: the same contents, in the same order, over any range.
    #[test]
    fn it_keeps_what_a_sorted_map_keeps_in_the_same_order() {
        let tied = 0x5555_0000_0000_0000;
        let (order, _) = against_a_model(300_000, 5, |rng| {
            let r = next(rng);
            if r % 97 == 0 {
                tied
            } else {
                r
            }
        });
        assert!(order.chunks.len() > 100, "the chunks never split");
        assert!(order.chunks.iter().all(|c| c.len() <= CHUNK_ENTRIES));
    }

    /// Positions sharing their top 40 bits, as a client that searched for such keys could
    /// make: the chunks still split, so no insert moves more than a chunk.
    #[test]
    fn crowded_positions_still_split_into_small_chunks() {
        let prefix = 0xABCD_EF01_2300_0000;
        let (order, _) = against_a_model(50_000, 4, |rng| prefix | (next(rng) & 0xFF_FFFF));
        assert!(order.chunks.len() > 20);
        assert!(order.chunks.iter().all(|c| c.len() <= CHUNK_ENTRIES));
    }

    /// Removing most entries gives the memory back and merges the chunks left small.
    #[test]
    fn removals_shrink_and_merge_chunks() {
        let (mut order, mut model) = against_a_model(200_000, 1_000_000, next);
        let before = (order.heap_bytes(), order.chunks.len());
        let doomed: Vec<(u64, u32)> = model.keys().copied().filter(|(p, _)| p % 10 != 0).collect();
        for (p, s) in doomed {
            assert_eq!(order.remove(p, s), model.remove(&(p, s)));
        }
        let mut rng = seeded(3);
        check(&order, &model, &mut rng);
        let after = (order.heap_bytes(), order.chunks.len());
        assert!(after.0 < before.0 / 4, "{before:?} -> {after:?}");
        assert!(after.1 < before.1 / 2, "{before:?} -> {after:?}");
        let per_entry = order.heap_bytes() as f64 / model.len() as f64;
        assert!(
            per_entry < 30.0,
            "{per_entry} bytes an entry after removals"
        );
    }

    /// What the index costs an entry at a million entries: near the 20 bytes its vectors
    /// hold, against about 40 for the B-tree it replaced.
    #[test]
    fn an_entry_costs_about_22_bytes() {
        let mut order = RingOrder::default();
        let mut rng = seeded(11);
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
