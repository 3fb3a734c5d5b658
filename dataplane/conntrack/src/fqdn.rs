//! The FQDN cache: the addresses DNS answers gave for names that a toFQDNs
//! selector selects, until their TTL runs out. The pipeline fills it from the
//! answers it sees on DNS flows (`sluice_pipeline` `dns::answer`); policy
//! lookups of `Peer::Fqdn` entries ask [`FqdnCache::contains`]. It lives in
//! the engine's [`crate::FlowTables`], not in a tables snapshot, so it
//! survives agent restarts and policy updates.
//!
//! Two seqlock tables of the conntrack's design ([`crate::table`]), so
//! readers never wait and nothing allocates after construction:
//! * addresses: (selector key, address) -> (expiry, hash of the name it was
//!   learnt for);
//! * names: (selector key, name hash) -> how many addresses the name holds
//!   under that selector, for the per-name cap
//!   (`--tofqdns-endpoint-max-ip-per-hostname`).
//!
//! Every count changes under the lock of the address entry it counts, and
//! a writer always takes address buckets before name buckets (never the
//! other way round, and one name lock set at a time), so counts stay exact
//! and lock waits form no cycle.
//!
//! An address re-learnt for a selector keeps the name it was first learnt
//! for and takes the later expiry. A name at its cap takes no new address
//! until some of its addresses expire and are swept ([`FqdnCache::gc_step`]);
//! Cilium instead forgets the name's oldest address, which would need a
//! per-name index. When both buckets of an address are full, the entry
//! expiring first is replaced if it expires before the new one.

use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::key::{ip_from_words, ip_to_words};
use crate::table::{SeqTable, SLOTS};

/// Selector key, address high and low words, family.
const ADDRESS_KEY_WORDS: usize = 4;
/// Expiry (engine clock, ns), name hash.
const ADDRESS_VALUE_WORDS: usize = 2;
/// Selector key, name hash.
const NAME_KEY_WORDS: usize = 2;
/// Addresses held.
const NAME_VALUE_WORDS: usize = 1;

const EXPIRY: usize = 0;
const NAME: usize = 1;

fn address_key(selector_key: u64, ip: IpAddr) -> [u64; ADDRESS_KEY_WORDS] {
    let (hi, lo, v6) = ip_to_words(ip);
    [selector_key, hi, lo, u64::from(v6)]
}

/// One live cache entry, as listed by [`FqdnCache::entries`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FqdnEntry {
    pub selector_key: u64,
    pub ip: IpAddr,
    /// Hash of the (lowercase) name the address was learnt for.
    pub name_hash: u64,
    /// Engine clock (ns) at which the address stops being selected.
    pub expires_ns: u64,
}

/// See the module documentation.
#[derive(Debug)]
pub struct FqdnCache {
    addresses: SeqTable<ADDRESS_KEY_WORDS, ADDRESS_VALUE_WORDS>,
    names: SeqTable<NAME_KEY_WORDS, NAME_VALUE_WORDS>,
    /// Next bucket [`FqdnCache::gc_step`] sweeps.
    gc_cursor: AtomicUsize,
}

impl FqdnCache {
    /// A cache with room for at least `capacity` addresses (and as many names).
    pub fn new(capacity: usize) -> FqdnCache {
        FqdnCache {
            addresses: SeqTable::with_capacity(capacity),
            names: SeqTable::with_capacity(capacity),
            gc_cursor: AtomicUsize::new(0),
        }
    }

    /// Address slots (whole buckets).
    pub fn capacity(&self) -> usize {
        self.addresses.capacity()
    }

    /// Buckets of the address table: what one full sweep visits.
    pub fn buckets(&self) -> usize {
        self.addresses.buckets()
    }

    /// Table memory per address slot, the name table's share included.
    pub fn bytes_per_entry() -> usize {
        SeqTable::<ADDRESS_KEY_WORDS, ADDRESS_VALUE_WORDS>::bytes_per_entry()
            + SeqTable::<NAME_KEY_WORDS, NAME_VALUE_WORDS>::bytes_per_entry()
    }

    /// Records that `ip` answers a name (hash `name_hash`) selected by the
    /// selector `selector_key` until `expires_ns`. False when it was not
    /// recorded: the name already holds `max_per_name` addresses under this
    /// selector, or the table has no room (both buckets full of entries that
    /// outlive this one). An address already there is refreshed to the later
    /// expiry and keeps its name. Never allocates; a writer waits only for
    /// writers of the same buckets.
    pub fn insert(
        &self,
        selector_key: u64,
        ip: IpAddr,
        name_hash: u64,
        expires_ns: u64,
        max_per_name: u32,
    ) -> bool {
        let key = address_key(selector_key, ip);
        let location = self.addresses.locate(&key);
        let locks = self.addresses.lock_set(location.buckets);
        if let Some((guard, slot)) = locks.find(location, &key) {
            if guard.value(slot)[EXPIRY] < expires_ns {
                guard.write_value_word(slot, EXPIRY, expires_ns);
            }
            return true;
        }
        let guards = location.distinct().filter_map(|bucket| locks.get(bucket));
        let place = guards
            .clone()
            .min_by_key(|guard| guard.occupied())
            .and_then(|guard| Some((guard, guard.empty_slot()?)))
            .or_else(|| {
                guards
                    .flat_map(|guard| (0..SLOTS).map(move |slot| (guard, slot)))
                    .min_by_key(|(guard, slot)| guard.value(*slot)[EXPIRY])
                    .filter(|(guard, slot)| guard.value(*slot)[EXPIRY] < expires_ns)
            });
        let Some((guard, slot)) = place else {
            return false;
        };
        // A name at its cap keeps the entry that would make room (checked
        // again, exactly, by `count_up`).
        if self.addresses_of(selector_key, name_hash) >= max_per_name {
            return false;
        }
        if guard.tag(slot) != 0 {
            self.count_down(guard.key(slot)[0], guard.value(slot)[NAME]);
            guard.clear(slot);
        }
        if !self.count_up(selector_key, name_hash, max_per_name) {
            return false;
        }
        guard.write(slot, location.tag, &key, &[expires_ns, name_hash]);
        true
    }

    /// Whether `ip` is an unexpired address of a name the selector
    /// `selector_key` selects. Never waits for a writer.
    #[inline]
    pub fn contains(&self, selector_key: u64, ip: IpAddr, now_ns: u64) -> bool {
        let key = address_key(selector_key, ip);
        self.addresses
            .read_with(self.addresses.locate(&key), &key, |value| value.get(EXPIRY))
            .is_some_and(|expires_ns| now_ns < expires_ns)
    }

    /// How many addresses the name holds under the selector (expired ones
    /// not yet swept included: they count against the cap).
    pub fn addresses_of(&self, selector_key: u64, name_hash: u64) -> u32 {
        let key = [selector_key, name_hash];
        self.names
            .read(self.names.locate(&key), &key)
            .map_or(0, |[count]| count as u32)
    }

    /// The unexpired entries (for `sluice` listings and traces). Allocates;
    /// not for the packet path. Not a snapshot: an entry written during the
    /// pass may be missed.
    pub fn entries(&self, now_ns: u64) -> Vec<FqdnEntry> {
        let mut found = Vec::new();
        for bucket in 0..self.addresses.buckets() {
            let copy = self.addresses.read_bucket(bucket);
            for slot in 0..SLOTS {
                let [expires_ns, name_hash] = copy.values[slot];
                if copy.tags[slot] == 0 || expires_ns <= now_ns {
                    continue;
                }
                let [selector_key, hi, lo, v6] = copy.keys[slot];
                found.push(FqdnEntry {
                    selector_key,
                    ip: ip_from_words(hi, lo, v6 != 0),
                    name_hash,
                    expires_ns,
                });
            }
        }
        found
    }

    /// One incremental sweep over at most `buckets` address buckets,
    /// resuming where the last one stopped: removes the expired addresses
    /// (and their names' counts). A bucket is locked only while it holds
    /// expired entries, so workers are not held up. Returns how many
    /// addresses were removed.
    pub fn gc_step(&self, now_ns: u64, buckets: usize) -> usize {
        let count = buckets.min(self.addresses.buckets());
        let start = self.gc_cursor.fetch_add(count, Ordering::Relaxed);
        let mut removed = 0;
        for i in 0..count {
            let bucket = start.wrapping_add(i) % self.addresses.buckets();
            let copy = self.addresses.read_bucket(bucket);
            let expired = |slot: usize| copy.tags[slot] != 0 && copy.values[slot][EXPIRY] <= now_ns;
            if !(0..SLOTS).any(expired) {
                continue;
            }
            let guard = self.addresses.lock(bucket);
            for slot in 0..SLOTS {
                let [expires_ns, name_hash] = guard.value(slot);
                if guard.tag(slot) != 0 && expires_ns <= now_ns {
                    self.count_down(guard.key(slot)[0], name_hash);
                    guard.clear(slot);
                    removed += 1;
                }
            }
        }
        removed
    }

    /// Adds one address to the name's count unless it holds `max` already
    /// (or the name table has no room). Called with the address locks held.
    fn count_up(&self, selector_key: u64, name_hash: u64, max: u32) -> bool {
        let key = [selector_key, name_hash];
        let location = self.names.locate(&key);
        let locks = self.names.lock_set(location.buckets);
        if let Some((guard, slot)) = locks.find(location, &key) {
            let [count] = guard.value(slot);
            if count >= u64::from(max) {
                return false;
            }
            guard.write_value_word(slot, 0, count + 1);
            return true;
        }
        if max == 0 {
            return false;
        }
        let free = location
            .distinct()
            .filter_map(|bucket| locks.get(bucket))
            .min_by_key(|guard| guard.occupied())
            .and_then(|guard| Some((guard, guard.empty_slot()?)));
        match free {
            Some((guard, slot)) => {
                guard.write(slot, location.tag, &key, &[1]);
                true
            }
            None => false,
        }
    }

    /// Removes one address from the name's count (the record goes with the
    /// last one). Called with the address locks held.
    fn count_down(&self, selector_key: u64, name_hash: u64) {
        let key = [selector_key, name_hash];
        let location = self.names.locate(&key);
        let locks = self.names.lock_set(location.buckets);
        if let Some((guard, slot)) = locks.find(location, &key) {
            match guard.value(slot) {
                [0 | 1] => guard.clear(slot),
                [count] => guard.write_value_word(slot, 0, count - 1),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;
    use std::net::{Ipv4Addr, Ipv6Addr};

    const S: u64 = 1_000_000_000;

    fn v4(i: u32) -> IpAddr {
        IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i))
    }

    #[test]
    fn an_address_is_selected_until_it_expires() {
        let cache = FqdnCache::new(1024);
        assert!(!cache.contains(7, v4(1), 0));
        assert!(cache.insert(7, v4(1), 100, 10 * S, 10));
        assert!(cache.contains(7, v4(1), 0));
        assert!(cache.contains(7, v4(1), 10 * S - 1));
        assert!(!cache.contains(7, v4(1), 10 * S));
        // Another selector, another address, the same address in v6 form.
        assert!(!cache.contains(8, v4(1), 0));
        assert!(!cache.contains(7, v4(2), 0));
        let mapped: IpAddr = "::10.0.0.1".parse().unwrap();
        assert!(!cache.contains(7, mapped, 0));
        let v6: IpAddr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1).into();
        assert!(cache.insert(7, v6, 100, 5 * S, 10));
        assert!(cache.contains(7, v6, 4 * S));
    }

    #[test]
    fn a_refresh_takes_the_later_expiry_and_keeps_the_name() {
        let cache = FqdnCache::new(1024);
        assert!(cache.insert(1, v4(1), 100, 10 * S, 10));
        assert!(cache.insert(1, v4(1), 200, 5 * S, 10));
        assert!(cache.contains(1, v4(1), 9 * S));
        assert!(cache.insert(1, v4(1), 100, 20 * S, 10));
        assert!(cache.contains(1, v4(1), 19 * S));
        assert_eq!(cache.addresses_of(1, 100), 1);
        assert_eq!(cache.addresses_of(1, 200), 0);
        let entries = cache.entries(0);
        assert_eq!(
            entries,
            vec![FqdnEntry {
                selector_key: 1,
                ip: v4(1),
                name_hash: 100,
                expires_ns: 20 * S
            }]
        );
    }

    #[test]
    fn a_name_takes_at_most_its_cap_until_addresses_are_swept() {
        let cache = FqdnCache::new(1024);
        for i in 0..3 {
            assert!(cache.insert(1, v4(i), 100, S, 3), "address {i}");
        }
        assert!(!cache.insert(1, v4(3), 100, 2 * S, 3), "over the cap");
        assert!(!cache.contains(1, v4(3), 0));
        // The cap is per name and per selector.
        assert!(cache.insert(1, v4(3), 101, 2 * S, 3));
        assert!(cache.insert(2, v4(4), 100, 2 * S, 3));
        // Re-learning a held address is not a new one.
        assert!(cache.insert(1, v4(0), 100, 3 * S, 3));
        assert_eq!(cache.addresses_of(1, 100), 3);
        // Expired but not swept: still counted.
        assert!(!cache.insert(1, v4(5), 100, 5 * S, 3));
        let removed: usize = (0..cache.buckets())
            .map(|_| cache.gc_step(S + S / 2, 1))
            .sum();
        assert_eq!(removed, 2, "v4(1), v4(2) expired at 1 s");
        assert_eq!(cache.addresses_of(1, 100), 1);
        assert!(cache.insert(1, v4(5), 100, 5 * S, 3));
        assert!(cache.contains(1, v4(5), 4 * S));
        assert!(
            !cache.insert(1, v4(9), 100, 5 * S, 0),
            "cap 0 takes nothing"
        );
    }

    #[test]
    fn gc_removes_only_expired_entries_and_their_counts() {
        let cache = FqdnCache::new(4096);
        for i in 0..500 {
            let expires = if i % 2 == 0 { S } else { 10 * S };
            assert!(cache.insert(1, v4(i), u64::from(i % 7), expires, 1000));
        }
        let removed = cache.gc_step(5 * S, cache.buckets());
        assert_eq!(removed, 250);
        assert_eq!(cache.gc_step(5 * S, cache.buckets()), 0);
        for i in 0..500 {
            assert_eq!(cache.contains(1, v4(i), 0), i % 2 == 1, "address {i}");
        }
        let total: u32 = (0..7).map(|n| cache.addresses_of(1, n)).sum();
        assert_eq!(total, 250);
        assert_eq!(cache.entries(5 * S).len(), 250);
        assert_eq!(cache.entries(10 * S).len(), 0);
    }

    #[test]
    fn a_full_bucket_pair_gives_up_the_entry_expiring_first() {
        // One bucket: every key has it twice.
        let cache = FqdnCache::new(SLOTS);
        for i in 0..SLOTS as u32 {
            assert!(cache.insert(1, v4(i), 100 + u64::from(i), u64::from(i + 10) * S, 10));
        }
        // Expires before everything there: no room.
        assert!(!cache.insert(1, v4(100), 1, 5 * S, 10));
        assert!(cache.insert(1, v4(100), 1, 50 * S, 10));
        assert!(!cache.contains(1, v4(0), 0), "v4(0) expired first");
        assert_eq!(cache.addresses_of(1, 100), 0);
        assert_eq!(cache.addresses_of(1, 1), 1);
        for i in 1..SLOTS as u32 {
            assert!(cache.contains(1, v4(i), 0));
        }
    }

    #[test]
    fn bytes_per_entry_counts_both_tables() {
        // 6 + 3 words per slot plus the bucket headers' share.
        assert_eq!(FqdnCache::bytes_per_entry(), 50 + 26);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Insert {
            selector: u64,
            ip: u32,
            name: u64,
            expires: u64,
        },
        Gc {
            now: u64,
        },
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0..3u64, 0..40u32, 0..4u64, 1..50u64).prop_map(|(selector, ip, name, expires)| {
                Op::Insert { selector, ip, name, expires }
            }),
            1 => (0..50u64).prop_map(|now| Op::Gc { now }),
        ]
    }

    proptest! {
        /// Against a HashMap model (room for everything, cap 3): the same
        /// answers to inserts and lookups, and the per-name counts equal the
        /// addresses held for that name.
        #[test]
        fn behaves_like_a_map_with_a_per_name_cap(ops in proptest::collection::vec(op(), 1..200)) {
            const CAP: u32 = 3;
            let cache = FqdnCache::new(1024);
            let mut model: HashMap<(u64, u32), (u64, u64)> = HashMap::new();
            for op in ops {
                match op {
                    Op::Insert { selector, ip, name, expires } => {
                        let expected = match model.get_mut(&(selector, ip)) {
                            Some(entry) => {
                                entry.0 = entry.0.max(expires);
                                true
                            }
                            None => {
                                let held = model
                                    .iter()
                                    .filter(|((s, _), (_, n))| *s == selector && *n == name)
                                    .count();
                                if held < CAP as usize {
                                    model.insert((selector, ip), (expires, name));
                                    true
                                } else {
                                    false
                                }
                            }
                        };
                        prop_assert_eq!(cache.insert(selector, v4(ip), name, expires, CAP), expected);
                    }
                    Op::Gc { now } => {
                        let before = model.len();
                        model.retain(|_, (expires, _)| *expires > now);
                        let removed = cache.gc_step(now, cache.buckets());
                        prop_assert_eq!(removed, before - model.len());
                    }
                }
                for selector in 0..3 {
                    for name in 0..4 {
                        let held = model
                            .iter()
                            .filter(|((s, _), (_, n))| *s == selector && *n == name)
                            .count();
                        prop_assert_eq!(cache.addresses_of(selector, name) as usize, held);
                    }
                    for ip in 0..40 {
                        let live = model.get(&(selector, ip)).map(|(e, _)| *e);
                        for now in [0, 25] {
                            prop_assert_eq!(
                                cache.contains(selector, v4(ip), now),
                                live.is_some_and(|e| now < e)
                            );
                        }
                    }
                }
            }
        }
    }

    /// Writers on several threads over overlapping names: afterwards every
    /// name's count equals the addresses listed for it, and no name holds
    /// more than the cap.
    #[test]
    fn concurrent_writers_keep_counts_exact() {
        let cache = std::sync::Arc::new(FqdnCache::new(2048));
        let threads: Vec<_> = (0..4u32)
            .map(|t| {
                let cache = cache.clone();
                std::thread::spawn(move || {
                    for i in 0..3000u32 {
                        let ip = v4((i * 7 + t * 13) % 1500);
                        let name = u64::from((i + t) % 5);
                        cache.insert(1, ip, name, u64::from(i % 100 + 1) * S, 200);
                        if i % 500 == 0 {
                            cache.gc_step(u64::from(i % 100) * S, 64);
                        }
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        let entries = cache.entries(0);
        for name in 0..5 {
            let listed = entries.iter().filter(|e| e.name_hash == name).count();
            assert_eq!(cache.addresses_of(1, name) as usize, listed, "name {name}");
            assert!(listed <= 200);
        }
    }
}
