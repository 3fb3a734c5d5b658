//! Maglev consistent hashing (Eisenbud et al., "Maglev: A Fast and Reliable
//! Software Network Load Balancer", NSDI 2016, section 3.4).
//!
//! A table of `M` slots (M prime) maps a flow hash to a backend. Every backend
//! walks its own permutation of the slots and the backends take turns claiming
//! their next free slot, so each backend ends up with `floor(M/N)` or
//! `ceil(M/N)` slots, and removing one backend mostly moves only the slots it
//! owned: flows to the other backends keep their backend on every node.
//!
//! Every node must build the same table for the same backend set, whatever
//! order the backends arrive in and whatever ids the agent gave them. So the
//! permutation of a backend comes from its identity string (`addr:port`)
//! hashed with a specified hash (SipHash-1-3, 128 bits, keyed with the
//! cluster-wide seed), and the backends are sorted by identity before the fill.

use std::fmt;
use std::net::SocketAddr;

use siphasher::sip128::SipHasher13;

use crate::MAGLEV_TABLE_SIZES;

/// The second SipHash key word; the first is the configured seed. Fixed so that
/// the table depends only on the seed, the size and the backend identities.
const HASH_KEY1: u64 = 0x736c_7569_6365_6d67; // "sluicemg"

/// Slots hold backend indices as u16; this value marks a free slot during the fill.
const FREE_SLOT: u16 = u16::MAX;

/// Most backends one table can index (slots are u16, one value marks a free slot).
pub const MAGLEV_MAX_BACKENDS: usize = FREE_SLOT as usize;

/// Why a Maglev table cannot be built.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MaglevError {
    #[error("table size {size} is not one of {MAGLEV_TABLE_SIZES:?}")]
    Size { size: u32 },
    #[error("a Maglev table needs at least one backend")]
    NoBackends,
    #[error("{backends} backends do not fit a table of {size} slots (at most {limit} backends)")]
    TooManyBackends {
        backends: usize,
        size: u32,
        limit: usize,
    },
    #[error("backend {backend} is listed twice")]
    DuplicateBackend { backend: SocketAddr },
}

/// The identity a backend is hashed and ordered by: `addr:port`
/// (`[addr]:port` for IPv6). Independent of ids and of input order.
pub fn identity(backend: SocketAddr) -> String {
    backend.to_string()
}

/// Sorts `items` by the identity of the backend each one stands for: the order
/// of [`MaglevTable::backends`], so that slot values index `items` too.
pub fn sort_by_identity<T>(items: &mut [T], backend: impl Fn(&T) -> SocketAddr) {
    items.sort_by_cached_key(|item| identity(backend(item)));
}

/// A filled Maglev lookup table for one backend set. Immutable; shared between
/// table generations (`Arc`) while the backend set, size and seed stay equal.
#[derive(Clone, PartialEq, Eq)]
pub struct MaglevTable {
    size: u32,
    seed: u64,
    /// Sorted by identity; slots index this.
    backends: Box<[SocketAddr]>,
    slots: Box<[u16]>,
}

impl MaglevTable {
    /// Fills the table of `size` slots (one of [`MAGLEV_TABLE_SIZES`]) for
    /// `backends` (any order, each once), every backend with weight 1.
    pub fn build(
        backends: &[SocketAddr],
        size: u32,
        seed: u64,
    ) -> Result<MaglevTable, MaglevError> {
        if !MAGLEV_TABLE_SIZES.contains(&size) {
            return Err(MaglevError::Size { size });
        }
        if backends.is_empty() {
            return Err(MaglevError::NoBackends);
        }
        let limit = MAGLEV_MAX_BACKENDS.min(size as usize);
        if backends.len() > limit {
            return Err(MaglevError::TooManyBackends {
                backends: backends.len(),
                size,
                limit,
            });
        }
        let mut keyed: Vec<(String, SocketAddr)> =
            backends.iter().map(|&b| (identity(b), b)).collect();
        keyed.sort_unstable();
        if let Some(pair) = keyed.windows(2).find(|pair| pair[0].1 == pair[1].1) {
            return Err(MaglevError::DuplicateBackend { backend: pair[0].1 });
        }
        let hasher = SipHasher13::new_with_keys(seed, HASH_KEY1);
        let m = u64::from(size);
        // Per backend: the next slot of its permutation, and its step.
        let mut walks: Vec<(u64, u64)> = keyed
            .iter()
            .map(|(identity, _)| {
                let (h1, h2) = hasher.hash(identity.as_bytes()).as_u64();
                (h1 % m, h2 % (m - 1) + 1)
            })
            .collect();
        let slots = fill(&mut walks, size as usize);
        Ok(MaglevTable {
            size,
            seed,
            backends: keyed.into_iter().map(|(_, b)| b).collect(),
            slots,
        })
    }

    /// The index into [`backends`](Self::backends) for a flow hash. Never
    /// allocates or panics.
    #[inline]
    pub fn lookup(&self, flow_hash: u32) -> Option<usize> {
        let slot = flow_hash.checked_rem(self.size)?;
        self.slots.get(slot as usize).map(|&b| usize::from(b))
    }

    /// The backends, sorted by identity.
    pub fn backends(&self) -> &[SocketAddr] {
        &self.backends
    }

    /// Every slot's backend index.
    pub fn slots(&self) -> &[u16] {
        &self.slots
    }

    pub fn size(&self) -> u32 {
        self.size
    }

    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Whether [`build`](Self::build) would make this very table for these
    /// backends (already sorted by identity), size and seed: then it can be reused.
    pub fn is_built_for(&self, sorted_backends: &[SocketAddr], size: u32, seed: u64) -> bool {
        self.size == size && self.seed == seed && *self.backends == *sorted_backends
    }
}

/// The population loop of the paper (its Pseudocode 1): backends take turns,
/// each claiming the next free slot of its permutation `offset + j * skip (mod M)`,
/// until every slot is taken. M is prime and skip in 1..M, so each walk visits
/// every slot and the inner loop ends.
fn fill(walks: &mut [(u64, u64)], size: usize) -> Box<[u16]> {
    let m = size as u64;
    let mut slots = vec![FREE_SLOT; size];
    let mut filled = 0;
    loop {
        for (backend, (next, skip)) in walks.iter_mut().enumerate() {
            let mut slot = *next;
            while slots[slot as usize] != FREE_SLOT {
                slot = step(slot, *skip, m);
            }
            // Lossless: build refuses more than MAGLEV_MAX_BACKENDS backends.
            slots[slot as usize] = backend as u16;
            *next = step(slot, *skip, m);
            filled += 1;
            if filled == size {
                return slots.into_boxed_slice();
            }
        }
    }
}

/// `(slot + skip) mod m` for `slot, skip < m`, without a division.
#[inline]
fn step(slot: u64, skip: u64, m: u64) -> u64 {
    let next = slot + skip;
    if next >= m {
        next - m
    } else {
        next
    }
}

impl fmt::Debug for MaglevTable {
    /// Omits the slots: thousands of numbers help nobody reading a log.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MaglevTable")
            .field("size", &self.size)
            .field("seed", &self.seed)
            .field("backends", &self.backends)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DEFAULT_MAGLEV_TABLE_SIZE;
    use rand::rngs::Xoshiro256PlusPlus;
    use rand::seq::SliceRandom;
    use rand::SeedableRng;

    const M: u32 = DEFAULT_MAGLEV_TABLE_SIZE;

    fn backends(n: usize) -> Vec<SocketAddr> {
        (0..n)
            .map(|i| {
                let addr = format!("10.1.{}.{}:8080", i / 250, i % 250 + 1);
                addr.parse().unwrap()
            })
            .collect()
    }

    /// The backend each slot points at, as an address (comparable across tables
    /// whose index spaces differ).
    fn slot_backends(table: &MaglevTable) -> Vec<SocketAddr> {
        table
            .slots()
            .iter()
            .map(|&i| table.backends()[usize::from(i)])
            .collect()
    }

    #[test]
    fn the_table_is_the_same_for_every_input_order() {
        let mut input = backends(100);
        let reference = MaglevTable::build(&input, M, 7).unwrap();
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(42);
        for _ in 0..5 {
            input.shuffle(&mut rng);
            let shuffled = MaglevTable::build(&input, M, 7).unwrap();
            assert_eq!(shuffled, reference);
        }
        assert_eq!(MaglevTable::build(&backends(100), M, 7).unwrap(), reference);
    }

    /// Pins the hash and the fill: a change here changes every node's table
    /// (a rolling upgrade would move flows), so it must be deliberate.
    #[test]
    fn the_table_is_pinned_for_a_known_input() {
        let table = MaglevTable::build(&backends(3), 251, 0).unwrap();
        let first: Vec<u16> = table.slots()[..16].to_vec();
        assert_eq!(first, PINNED_FIRST_SLOTS, "{first:?}");
    }
    const PINNED_FIRST_SLOTS: [u16; 16] = [1, 2, 2, 1, 1, 0, 1, 0, 1, 2, 2, 2, 2, 2, 0, 2];

    #[test]
    fn each_backend_gets_floor_or_ceil_of_m_over_n_slots() {
        for n in [1, 3, 100, 1000] {
            let table = MaglevTable::build(&backends(n), M, 1).unwrap();
            let mut counts = vec![0usize; n];
            for &slot in table.slots() {
                counts[usize::from(slot)] += 1;
            }
            let floor = M as usize / n;
            let ceil = (M as usize).div_ceil(n);
            for (backend, &count) in counts.iter().enumerate() {
                assert!(
                    count == floor || count == ceil,
                    "n={n}: backend {backend} has {count} slots, not {floor} or {ceil}"
                );
            }
        }
    }

    /// Slots that moved when `removed` left `all`, beyond the removed backend's own.
    fn disruption(all: &[SocketAddr], removed: SocketAddr, size: u32) -> (usize, usize) {
        let before = slot_backends(&MaglevTable::build(all, size, 0).unwrap());
        let rest: Vec<SocketAddr> = all.iter().copied().filter(|&b| b != removed).collect();
        let after = slot_backends(&MaglevTable::build(&rest, size, 0).unwrap());
        let own = before.iter().filter(|&&b| b == removed).count();
        let moved = before.iter().zip(&after).filter(|(b, a)| b != a).count();
        assert!(
            after.iter().all(|&b| b != removed),
            "the removed backend kept slots"
        );
        (moved, own)
    }

    /// Maglev's disruption beyond the removed backend's own slots shrinks as
    /// M/N grows. Measured over every 10th backend removed from 100 (seed 0):
    /// M=16381 (M/N 164) moves 201-214 slots (1.2-1.3% of M) beyond, M=32749
    /// (M/N 327) 256-310 (0.8-0.95%): the 1% holds from M = 32749 up;
    /// at the default size the paper's algorithm itself moves about 1.3%.
    #[test]
    fn removing_one_of_100_backends_moves_little_beyond_its_own_slots() {
        let all = backends(100);
        for (size, limit_per_mille) in [(M, 16), (32749, 10)] {
            for removed in all.iter().step_by(10) {
                let (moved, own) = disruption(&all, *removed, size);
                let extra = moved - own;
                eprintln!("M={size}: removing {removed} moved {moved} slots, {own} its own, {extra} beyond");
                assert!(
                    extra * 1000 <= size as usize * limit_per_mille,
                    "M={size}: removing {removed} moved {extra} slots beyond its own {own}"
                );
            }
        }
    }

    #[test]
    fn a_seed_change_changes_the_table() {
        let input = backends(10);
        let a = MaglevTable::build(&input, M, 1).unwrap();
        let b = MaglevTable::build(&input, M, 2).unwrap();
        assert_eq!(a.backends(), b.backends());
        let differing = a
            .slots()
            .iter()
            .zip(b.slots())
            .filter(|(x, y)| x != y)
            .count();
        assert!(differing > M as usize / 2, "only {differing} slots differ");
    }

    #[test]
    fn bad_inputs_are_refused() {
        assert_eq!(
            MaglevTable::build(&backends(2), 1000, 0),
            Err(MaglevError::Size { size: 1000 })
        );
        assert_eq!(MaglevTable::build(&[], M, 0), Err(MaglevError::NoBackends));
        assert_eq!(
            MaglevTable::build(&backends(252), 251, 0),
            Err(MaglevError::TooManyBackends {
                backends: 252,
                size: 251,
                limit: 251
            })
        );
        let mut twice = backends(3);
        twice.push(twice[1]);
        assert_eq!(
            MaglevTable::build(&twice, M, 0),
            Err(MaglevError::DuplicateBackend { backend: twice[1] })
        );
        assert!(MaglevError::Size { size: 1000 }
            .to_string()
            .contains("1000 is not one of"));
    }

    #[test]
    fn lookup_maps_a_hash_to_its_slot() {
        let table = MaglevTable::build(&backends(5), 251, 0).unwrap();
        for hash in [0u32, 1, 250, 251, 252, u32::MAX] {
            let slot = (hash % 251) as usize;
            assert_eq!(table.lookup(hash), Some(usize::from(table.slots()[slot])));
        }
    }

    #[test]
    fn ipv6_identities_are_bracketed() {
        assert_eq!(identity("[fd00::1]:80".parse().unwrap()), "[fd00::1]:80");
        assert_eq!(identity("10.0.0.1:80".parse().unwrap()), "10.0.0.1:80");
    }
}
