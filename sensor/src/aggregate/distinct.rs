//! Counting distinct values (sources, destinations) in bounded memory.
//!
//! - [`DistinctCounter`]: exact up to [`EXACT_MAX`] values (a hash set of 64-bit hashes), then
//!   a HyperLogLog of 2^12 one-byte registers (4 KiB, about 1.6 % standard error). Small
//!   counts, the ones an analyst reads one by one, stay exact; large ones say they are
//!   estimates.
//! - [`DestSketch`]: 64 four-bit HyperLogLog registers in 32 bytes, small enough for the
//!   per-source record; about 13 % standard error, near exact for a handful of values (the
//!   linear-counting range).
//!
//! Values arrive as 64-bit hashes of addresses ([`address_hash`]), with fixed keys so that a
//! report over the same documents gives the same estimates every time.

use std::hash::BuildHasher as _;

use crate::fingerprint::ipid::SourceHashing;

/// The hash distinct counters count an address by (its 16-byte form, IPv4 mapped): the source
/// index's multiply-xor hash ([`SourceHashing`]), with fixed keys. Not keyed per run, as SipHash
/// with its fixed keys was not either: a sender who reads this code can pick IPv6 addresses that
/// collide, or that fall into one register, and so make a count or an estimate low. The counts
/// are statistics, not an index: a collision costs no state and hides no event. SipHash took
/// 464 instructions per event for the two addresses (callgrind, the fingerprint benchmark's lean
/// stage).
pub fn address_hash(addr: [u8; 16]) -> u64 {
    const HASHING: SourceHashing = SourceHashing::fixed();
    HASHING.hash_one(addr)
}

/// Distinct values kept exactly before switching to the sketch.
pub const EXACT_MAX: usize = 1024;
const SKETCH_BITS: u32 = 12;
const SKETCH_REGISTERS: usize = 1 << SKETCH_BITS;

#[derive(Clone, Debug, Default)]
pub struct DistinctCounter {
    /// Open addressing with linear probing, a power of two of slots (none until the first
    /// value), at most three quarters full; 0 marks an empty slot. Emptied when the sketch
    /// takes over. A sorted list searched by halves, for the six counters every event goes
    /// into, took 514 instructions per lean event (callgrind) and 5.5 % of the samples of a
    /// profile of the lean stage.
    exact: Box<[u64]>,
    len: u32,
    sketch: Option<Box<[u8; SKETCH_REGISTERS]>>,
}

/// Register index from the top bits, rank (position of the first one bit, from 1) from the
/// rest, capped at `max_rank`.
fn split(hash: u64, bits: u32, max_rank: u8) -> (usize, u8) {
    let index = (hash >> (64 - bits)) as usize;
    let rest = hash << bits;
    let rank = (rest.leading_zeros() + 1).min(64 - bits + 1) as u8;
    (index, rank.min(max_rank))
}

/// The HyperLogLog estimate with the small-range (linear counting) correction.
fn estimate(registers: impl Iterator<Item = u8> + Clone, m: usize) -> f64 {
    let m_f = m as f64;
    let alpha = match m {
        16 => 0.673,
        32 => 0.697,
        64 => 0.709,
        _ => 0.7213 / (1.0 + 1.079 / m_f),
    };
    let sum: f64 = registers.clone().map(|r| 2f64.powi(-i32::from(r))).sum();
    let raw = alpha * m_f * m_f / sum;
    let zeros = registers.filter(|r| *r == 0).count();
    if raw <= 2.5 * m_f && zeros > 0 {
        m_f * (m_f / zeros as f64).ln()
    } else {
        raw
    }
}

/// Slots of the first exact table: most counters (a small campaign's) stay small.
const EXACT_FIRST_SLOTS: usize = 4;

impl DistinctCounter {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a value; true if it was not counted before (exactly while exact; in the sketch,
    /// when it raised a register, which is what a new value usually does).
    pub fn insert(&mut self, hash: u64) -> bool {
        if let Some(sketch) = &mut self.sketch {
            return Self::sketch_insert(sketch, hash);
        }
        // 0 marks an empty slot, so the hash 0 is counted as 1: one more 64-bit collision.
        let value = hash.max(1);
        if self.exact.is_empty() {
            self.exact = vec![0; EXACT_FIRST_SLOTS].into_boxed_slice();
        }
        let at = match Self::probe(&self.exact, value) {
            Ok(_) => return false,
            Err(at) => at,
        };
        if self.len as usize >= EXACT_MAX {
            let mut sketch = Box::new([0u8; SKETCH_REGISTERS]);
            for &h in self.exact.iter().filter(|&&h| h != 0) {
                Self::sketch_insert(&mut sketch, h);
            }
            self.exact = Box::default();
            self.len = 0;
            let new = Self::sketch_insert(&mut sketch, value);
            self.sketch = Some(sketch);
            return new;
        }
        self.exact[at] = value;
        self.len += 1;
        if self.len as usize * 4 > self.exact.len() * 3 {
            let mut grown = vec![0; self.exact.len() * 2].into_boxed_slice();
            for &h in self.exact.iter().filter(|&&h| h != 0) {
                if let Err(at) = Self::probe(&grown, h) {
                    grown[at] = h;
                }
            }
            self.exact = grown;
        }
        true
    }

    /// The slot holding `value` (`Ok`), or the empty slot where it belongs (`Err`). `slots` is
    /// a power of two long and never full.
    fn probe(slots: &[u64], value: u64) -> Result<usize, usize> {
        let mask = slots.len() - 1;
        // The top bits of a multiplied hash: the low bits of an address hash alone may not
        // spread neighbouring addresses.
        let mut at = (value.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 32) as usize & mask;
        loop {
            match slots[at] {
                v if v == value => return Ok(at),
                0 => return Err(at),
                _ => at = (at + 1) & mask,
            }
        }
    }

    fn sketch_insert(sketch: &mut [u8; SKETCH_REGISTERS], hash: u64) -> bool {
        let (i, rank) = split(hash, SKETCH_BITS, u8::MAX);
        if rank > sketch[i] {
            sketch[i] = rank;
            true
        } else {
            false
        }
    }

    pub fn count(&self) -> u64 {
        match &self.sketch {
            None => u64::from(self.len),
            Some(s) => estimate(s.iter().copied(), SKETCH_REGISTERS).round() as u64,
        }
    }

    /// The count is an estimate (more than [`EXACT_MAX`] values).
    pub fn is_approximate(&self) -> bool {
        self.sketch.is_some()
    }

    /// Heap bytes held.
    pub fn heap_bytes(&self) -> usize {
        self.exact.len() * 8 + self.sketch.as_ref().map_or(0, |_| SKETCH_REGISTERS)
    }
}

const DEST_BITS: u32 = 6;
const DEST_REGISTERS: usize = 1 << DEST_BITS;

/// 64 HyperLogLog registers of four bits (ranks capped at 15: good to millions of values).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DestSketch([u8; DEST_REGISTERS / 2]);

impl DestSketch {
    fn get(&self, i: usize) -> u8 {
        let b = self.0[i / 2];
        if i.is_multiple_of(2) {
            b & 0x0f
        } else {
            b >> 4
        }
    }

    pub fn insert(&mut self, hash: u64) {
        let (i, rank) = split(hash, DEST_BITS, 15);
        if rank > self.get(i) {
            let b = &mut self.0[i / 2];
            *b = if i.is_multiple_of(2) {
                (*b & 0xf0) | rank
            } else {
                (*b & 0x0f) | (rank << 4)
            };
        }
    }

    pub fn count(&self) -> u64 {
        if self.0.iter().all(|b| *b == 0) {
            return 0;
        }
        estimate((0..DEST_REGISTERS).map(|i| self.get(i)), DEST_REGISTERS).round() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::{BuildHasher, RandomState};

    #[test]
    fn exact_below_the_limit_and_close_above() {
        let keys = RandomState::new();
        let mut c = DistinctCounter::new();
        for round in 0..3 {
            for v in 0..EXACT_MAX as u64 {
                let new = c.insert(keys.hash_one(v));
                assert_eq!(new, round == 0, "value {v} round {round}");
            }
        }
        assert_eq!(c.count(), EXACT_MAX as u64);
        assert!(!c.is_approximate());
        for v in 0..50_000u64 {
            c.insert(keys.hash_one(v));
        }
        assert!(c.is_approximate());
        let n = c.count() as f64;
        // 1.6 % standard error: 10 % is more than six of them.
        assert!((n - 50_000.0).abs() < 5_000.0, "estimate {n}");
        assert_eq!(c.heap_bytes(), SKETCH_REGISTERS);
    }

    #[test]
    fn exact_counts_as_a_set_does() {
        // Small values too (few bits set, many alike in the low bits), repeated, up to the
        // limit: every answer and count as a set gives them.
        let mut state = 21u64;
        for limit in [1, 12, 13, 100, EXACT_MAX] {
            let mut c = DistinctCounter::new();
            let mut set = std::collections::HashSet::new();
            for _ in 0..limit * 3 {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let v = match state % 3 {
                    0 => state % (limit as u64 * 2),
                    1 => (state % limit as u64) << 40,
                    _ => state,
                }
                .max(1);
                if set.len() == limit && !set.contains(&v) {
                    continue;
                }
                assert_eq!(c.insert(v), set.insert(v), "{v}");
                assert_eq!(c.count(), set.len() as u64);
            }
            assert!(!c.is_approximate());
        }
        // The hash 0 counts as 1.
        let mut c = DistinctCounter::new();
        assert!(c.insert(0));
        assert!(!c.insert(1));
        assert_eq!(c.count(), 1);
    }

    #[test]
    fn address_hash_estimates_scans_of_neighbouring_addresses() {
        // What a telescope sees: whole blocks of consecutive addresses, IPv4 and IPv6, where a
        // weak mix would leave registers unused.
        let blocks: [Box<dyn Fn(u32) -> [u8; 16]>; 3] = [
            Box::new(|i| {
                std::net::Ipv4Addr::from(0xc633_0000 + i)
                    .to_ipv6_mapped()
                    .octets()
            }),
            Box::new(|i| {
                std::net::Ipv4Addr::from(0xcb00_7100 + (i << 8))
                    .to_ipv6_mapped()
                    .octets()
            }),
            Box::new(|i| (0x2001_0db8_u128 << 96 | u128::from(i) << 64).to_be_bytes()),
        ];
        for block in blocks {
            let mut c = DistinctCounter::new();
            let mut d = DestSketch::default();
            for i in 0..60_000 {
                c.insert(address_hash(block(i)));
                if i < 1000 {
                    d.insert(address_hash(block(i)));
                }
            }
            let n = c.count() as f64;
            // As for random hashes above: 1.6 % standard error, 10 % allowed.
            assert!((n - 60_000.0).abs() < 6_000.0, "estimate {n}");
            let n = d.count() as f64;
            assert!((500.0..1500.0).contains(&n), "estimate {n}");
        }
    }

    #[test]
    fn dest_sketch_small_and_large() {
        let keys = RandomState::new();
        let mut s = DestSketch::default();
        assert_eq!(s.count(), 0);
        s.insert(keys.hash_one(1u32));
        s.insert(keys.hash_one(1u32));
        assert_eq!(s.count(), 1);
        for v in 0..1000u32 {
            s.insert(keys.hash_one(v));
        }
        let n = s.count() as f64;
        // 13 % standard error: 50 % is nearly four of them.
        assert!((500.0..1500.0).contains(&n), "estimate {n}");
    }
}
