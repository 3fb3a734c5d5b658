//! A fixed-capacity, set-associative table of `AtomicU64` words with one
//! sequence lock per bucket: readers never block writers and retry when they
//! raced one; writers exclude each other per bucket. Shared by the
//! conntrack (5 key words, 9 value words) and affinity (3 + 2) tables.
//!
//! Layout: `buckets` (a power of two) times `[seq, tags, 8 x (key, value)]`.
//! `tags` holds one byte per slot: 0 = empty, else a byte of the key's hash,
//! so a reader compares the key words of (almost always) one slot only.
//!
//! Two choices: every key may live in either of two buckets, both taken from
//! its hash ([`Location::buckets`]); a key is in at most one of them. With one
//! bucket per key, buckets fill unevenly and a table of random keys refuses
//! inserts from about a third full (1.6% of 1M flows refused at half load);
//! with two, an insert takes the emptier bucket, and when both are full a
//! writer may move one resident entry to that entry's other bucket, which
//! together take a table of random keys past 90% without a refusal.
//!
//! Memory ordering (the seqlock recipe of Boehm, "Can seqlocks get along
//! with programming language memory models?", 2012):
//! * reader: `s1 = seq.load(Acquire)` (odd: a writer is inside, retry), then
//!   the tags and slot words with Relaxed loads, then `fence(Acquire)` and
//!   `s2 = seq.load(Relaxed)`; the copy is used only if `s1 == s2`.
//! * writer: `seq` even -> odd with a compare-exchange (Acquire, pairing with
//!   the previous writer's Release store so it sees that writer's words),
//!   then `fence(Release)`, then Relaxed stores of the words, then
//!   `seq.store(odd + 1, Release)`.
//!   If a reader's Relaxed load saw one of the writer's stores, the writer's
//!   Release fence synchronises with the reader's Acquire fence, so the
//!   reader's second `seq` load sees the odd value (or later) and it retries.
//!   If the reader's first load saw the writer's final store, the Acquire
//!   load makes every word store visible.
//! * a key read checks its first bucket, then its second. An entry moved
//!   from the second to the first between those two reads would be missed by
//!   both, so a miss stands only if the first bucket's `seq` is still what
//!   the first read saw: a move locks both buckets before storing anything,
//!   so a second read that saw the move's stores (or its unlock) orders the
//!   first bucket's odd `seq` before the recheck (same fence pairing).
//!
//! Writers take every bucket they may wait for in one [`SeqTable::lock_set`],
//! in ascending bucket order; anything more is taken with
//! [`SeqTable::try_lock`], which never waits. A thread waiting for a lock
//! then holds only lower-numbered buckets, so no cycle of waits can form.
//!
//! No allocation after construction, no `unsafe`.

use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{fence, AtomicU64, Ordering};

/// Slots per bucket: one byte each in the tags word.
pub(crate) const SLOTS: usize = 8;
/// One bit at the bottom and at the top of every byte of a tags word.
const LOW_BITS: u64 = 0x0101_0101_0101_0101;
const HIGH_BITS: u64 = 0x8080_8080_8080_8080;
/// Words before the slots in each bucket: sequence, tags.
const HEADER_WORDS: usize = 2;
/// Spins on a busy bucket before yielding the CPU. A writer holds a bucket
/// for a few dozen nanoseconds; only a writer descheduled inside its
/// critical section makes anyone reach this.
const SPINS_BEFORE_YIELD: u32 = 1 << 12;

/// Where a key may live: its first and second bucket (different unless the
/// table has one bucket), and the tag byte it carries in either.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Location {
    pub buckets: [usize; 2],
    pub tag: u8,
}

impl Location {
    /// The bucket of the two that is not `bucket` (itself in a one-bucket table).
    pub fn other(&self, bucket: usize) -> usize {
        if self.buckets[0] == bucket {
            self.buckets[1]
        } else {
            self.buckets[0]
        }
    }

    /// The key's buckets, each once.
    pub fn distinct(&self) -> impl Iterator<Item = usize> + Clone {
        let [first, second] = self.buckets;
        std::iter::once(first).chain((second != first).then_some(second))
    }
}

/// The words of one bucket as one consistent copy.
#[derive(Clone, Copy, Debug)]
pub(crate) struct BucketCopy<const K: usize, const V: usize> {
    pub tags: [u8; SLOTS],
    pub keys: [[u64; K]; SLOTS],
    pub values: [[u64; V]; SLOTS],
}

pub(crate) struct SeqTable<const K: usize, const V: usize> {
    words: Box<[AtomicU64]>,
    bucket_mask: usize,
    /// Keyed with a per-process random seed, so bucket placement cannot be
    /// predicted by whoever chooses the ports of incoming flows.
    hasher: foldhash::fast::RandomState,
}

impl<const K: usize, const V: usize> std::fmt::Debug for SeqTable<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SeqTable")
            .field("buckets", &self.buckets())
            .field("key_words", &K)
            .field("value_words", &V)
            .finish_non_exhaustive()
    }
}

fn backoff(spins: &mut u32) {
    *spins += 1;
    if *spins < SPINS_BEFORE_YIELD {
        std::hint::spin_loop();
    } else {
        *spins = 0;
        std::thread::yield_now();
    }
}

impl<const K: usize, const V: usize> SeqTable<K, V> {
    const SLOT_WORDS: usize = K + V;
    const BUCKET_WORDS: usize = HEADER_WORDS + SLOTS * Self::SLOT_WORDS;

    /// A table with room for at least `entries` entries (whole buckets, a
    /// power of two of them, at least one).
    pub fn with_capacity(entries: usize) -> Self {
        let buckets = entries.div_ceil(SLOTS).max(1).next_power_of_two();
        let words = (0..buckets * Self::BUCKET_WORDS)
            .map(|_| AtomicU64::new(0))
            .collect();
        SeqTable {
            words,
            bucket_mask: buckets - 1,
            hasher: foldhash::fast::RandomState::default(),
        }
    }

    pub fn buckets(&self) -> usize {
        self.bucket_mask + 1
    }

    pub fn capacity(&self) -> usize {
        self.buckets() * SLOTS
    }

    /// Bytes of table memory per entry slot (bucket headers included).
    pub fn bytes_per_entry() -> usize {
        Self::BUCKET_WORDS * 8 / SLOTS
    }

    #[inline]
    pub fn locate(&self, key: &[u64; K]) -> Location {
        let mut hasher = self.hasher.build_hasher();
        for &word in key {
            hasher.write_u64(word);
        }
        let hash = hasher.finish();
        // The low bits choose the first bucket, the high half the second
        // (independent bits up to 2^24 buckets), the top byte is the tag
        // (0 means empty). A second bucket equal to the first is replaced by
        // its neighbour, so a key always has two places when there are two.
        let first = hash as usize & self.bucket_mask;
        let mut second = (hash >> 32) as usize & self.bucket_mask;
        if second == first {
            second = (first ^ 1) & self.bucket_mask;
        }
        Location {
            buckets: [first, second],
            tag: ((hash >> 56) as u8).max(1),
        }
    }

    #[inline]
    fn base(&self, bucket: usize) -> usize {
        (bucket & self.bucket_mask) * Self::BUCKET_WORDS
    }

    #[inline]
    fn slot_base(&self, bucket: usize, slot: usize) -> usize {
        self.base(bucket) + HEADER_WORDS + slot * Self::SLOT_WORDS
    }

    #[inline]
    fn seq(&self, bucket: usize) -> &AtomicU64 {
        &self.words[self.base(bucket)]
    }

    #[inline]
    fn tags(&self, bucket: usize) -> &AtomicU64 {
        &self.words[self.base(bucket) + 1]
    }

    /// Runs `read` over the bucket's words until it ran without a writer
    /// in between; `read` sees Relaxed loads only and may see torn words on
    /// the attempts whose result is thrown away, so it must not trust them
    /// beyond comparing and copying.
    fn read_consistent<T>(&self, bucket: usize, read: impl Fn() -> T) -> T {
        let mut spins = 0;
        loop {
            let before = self.read_begin(bucket, &mut spins);
            let value = read();
            if self.read_valid(bucket, before) {
                return value;
            }
            backoff(&mut spins);
        }
    }

    /// The bucket's (even) `seq` once no writer is inside it: what a read
    /// of the bucket is validated against ([`SeqTable::read_valid`]).
    #[inline(always)]
    fn read_begin(&self, bucket: usize, spins: &mut u32) -> u64 {
        let seq = self.seq(bucket);
        loop {
            // Acquire: pairs with the Release store that ended the last write.
            let before = seq.load(Ordering::Acquire);
            if before & 1 == 0 {
                return before;
            }
            backoff(spins);
        }
    }

    /// True when no writer entered the bucket since [`SeqTable::read_begin`]
    /// returned `before`, so the Relaxed loads made since are one consistent copy.
    #[inline(always)]
    fn read_valid(&self, bucket: usize, before: u64) -> bool {
        // Acquire fence: pairs with the writer's Release fence after it
        // made `seq` odd (see the module comment).
        fence(Ordering::Acquire);
        self.seq(bucket).load(Ordering::Relaxed) == before
    }

    fn load_key(&self, bucket: usize, slot: usize) -> [u64; K] {
        let base = self.slot_base(bucket, slot);
        std::array::from_fn(|i| self.words[base + i].load(Ordering::Relaxed))
    }

    fn load_value(&self, bucket: usize, slot: usize) -> [u64; V] {
        let base = self.slot_base(bucket, slot) + K;
        std::array::from_fn(|i| self.words[base + i].load(Ordering::Relaxed))
    }

    /// The slot of `bucket` holding `key`. Slots whose tag byte matches are
    /// found all at once (a byte-wise compare of the tags word, SWAR), so
    /// the key words are compared for (almost always) one slot only.
    #[inline(always)]
    fn find_slot(&self, bucket: usize, tag: u8, key: &[u64; K]) -> Option<usize> {
        let tags = self.tags(bucket).load(Ordering::Relaxed);
        // A zero byte of `diff` is a slot with this tag. `tag` is never 0, so
        // empty slots never match.
        let diff = tags ^ (u64::from(tag) * LOW_BITS);
        let mut candidates = diff.wrapping_sub(LOW_BITS) & !diff & HIGH_BITS;
        while candidates != 0 {
            // A borrow can mark a byte above a true zero byte as a zero too,
            // never one below: the lowest mark is exact, and every mark is
            // checked against the tag byte before the key is compared.
            let slot = candidates.trailing_zeros() as usize / 8;
            candidates &= candidates - 1;
            if tags.to_le_bytes()[slot] != tag {
                continue;
            }
            let base = self.slot_base(bucket, slot);
            let words = self.words[base..base + K].iter();
            if words
                .zip(key)
                .all(|(word, &k)| word.load(Ordering::Relaxed) == k)
            {
                return Some(slot);
            }
        }
        None
    }

    /// The value stored under `key`, read without blocking any writer.
    pub fn read(&self, location: Location, key: &[u64; K]) -> Option<[u64; V]> {
        self.read_with(location, key, |value| value.copy())
    }

    /// What `project` takes from the value stored under `key`, read without
    /// blocking any writer: the first bucket, then the second (see the
    /// module comment for why a miss rechecks the first). `project` loads
    /// only the words it needs; it may run on torn words of an attempt that
    /// is then thrown away, so it must not trust them beyond decoding.
    #[inline(always)]
    pub fn read_with<T>(
        &self,
        location: Location,
        key: &[u64; K],
        project: impl Fn(&ValueWords<'_, V>) -> T,
    ) -> Option<T> {
        let find_in = |bucket: usize| self.find_projected(bucket, location.tag, key, &project);
        let [first, second] = location.buckets;
        let mut spins = 0;
        loop {
            let first_seq = self.read_begin(first, &mut spins);
            let found = find_in(first);
            if !self.read_valid(first, first_seq) {
                backoff(&mut spins);
                continue;
            }
            if found.is_some() || second == first {
                return found;
            }
            let found = loop {
                let second_seq = self.read_begin(second, &mut spins);
                let found = find_in(second);
                if self.read_valid(second, second_seq) {
                    break found;
                }
                backoff(&mut spins);
            };
            // Relaxed: ordered after the second read by its Acquire fence.
            if found.is_some() || self.seq(first).load(Ordering::Relaxed) == first_seq {
                return found;
            }
            backoff(&mut spins);
        }
    }

    /// What `project` takes from the value of `key` in `bucket` (not validated).
    #[inline(always)]
    fn find_projected<T>(
        &self,
        bucket: usize,
        tag: u8,
        key: &[u64; K],
        project: &impl Fn(&ValueWords<'_, V>) -> T,
    ) -> Option<T> {
        let slot = self.find_slot(bucket, tag, key)?;
        Some(project(&self.value_words(bucket, slot)))
    }

    /// The value words of a slot, loaded one at a time by whoever reads them.
    #[inline(always)]
    fn value_words(&self, bucket: usize, slot: usize) -> ValueWords<'_, V> {
        let base = self.slot_base(bucket, slot) + K;
        ValueWords {
            words: &self.words[base..base + V],
        }
    }

    /// A consistent copy of a whole bucket (garbage collection, listings).
    pub fn read_bucket(&self, bucket: usize) -> BucketCopy<K, V> {
        self.read_consistent(bucket, || BucketCopy {
            tags: self.tags(bucket).load(Ordering::Relaxed).to_le_bytes(),
            keys: std::array::from_fn(|slot| self.load_key(bucket, slot)),
            values: std::array::from_fn(|slot| self.load_value(bucket, slot)),
        })
    }

    /// Takes the bucket's writer lock, spinning while another writer has it.
    /// Only for a thread holding no other lock: several go through
    /// [`SeqTable::lock_set`], which takes them in bucket order.
    pub fn lock(&self, bucket: usize) -> BucketGuard<'_, K, V> {
        let mut spins = 0;
        loop {
            if let Some(guard) = self.try_lock(bucket) {
                return guard;
            }
            backoff(&mut spins);
        }
    }

    /// The bucket's writer lock if nobody holds it now (None also for a
    /// bucket this thread holds). Taking a bucket beyond a lock set is done
    /// only this way, so lock waits never form a cycle.
    pub fn try_lock(&self, bucket: usize) -> Option<BucketGuard<'_, K, V>> {
        let bucket = bucket & self.bucket_mask;
        let seq = self.seq(bucket);
        let current = seq.load(Ordering::Relaxed);
        if current & 1 == 1 {
            return None;
        }
        // Acquire: pairs with the previous writer's Release unlock, so this
        // writer starts from that writer's words.
        seq.compare_exchange(current, current + 1, Ordering::Acquire, Ordering::Relaxed)
            .ok()?;
        // Release fence: orders the odd `seq` before every word store that
        // follows, for readers (see the module comment).
        fence(Ordering::Release);
        Some(BucketGuard {
            table: self,
            bucket,
            odd_seq: current + 1,
        })
    }

    /// Locks every bucket of `buckets` (each once) in ascending index
    /// order. Two threads waiting on each other would each have to hold a
    /// bucket numbered above the one it waits for, which this order rules
    /// out. The caller must hold no lock when calling.
    pub fn lock_set<const N: usize>(&self, buckets: [usize; N]) -> LockSet<'_, K, V, N> {
        let mut sorted = buckets.map(|bucket| bucket & self.bucket_mask);
        sorted.sort_unstable();
        let mut guards: [Option<BucketGuard<'_, K, V>>; N] = std::array::from_fn(|_| None);
        for i in 0..N {
            if i == 0 || sorted[i] != sorted[i - 1] {
                guards[i] = Some(self.lock(sorted[i]));
            }
        }
        LockSet { guards }
    }
}

/// The value words of one slot, for a reader under the sequence lock
/// ([`SeqTable::read_with`]): each word is loaded (Relaxed) only when asked for.
pub(crate) struct ValueWords<'t, const V: usize> {
    /// Exactly V words.
    words: &'t [AtomicU64],
}

impl<const V: usize> ValueWords<'_, V> {
    /// Value word `index` (0 past the end).
    #[inline]
    pub fn get(&self, index: usize) -> u64 {
        self.words
            .get(index)
            .map_or(0, |word| word.load(Ordering::Relaxed))
    }

    /// All the words.
    pub fn copy(&self) -> [u64; V] {
        std::array::from_fn(|i| self.get(i))
    }
}

/// A bucket's writer lock; released (and the bucket published) on drop.
pub(crate) struct BucketGuard<'t, const K: usize, const V: usize> {
    table: &'t SeqTable<K, V>,
    bucket: usize,
    odd_seq: u64,
}

impl<const K: usize, const V: usize> std::fmt::Debug for BucketGuard<'_, K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BucketGuard")
            .field("bucket", &self.bucket)
            .finish_non_exhaustive()
    }
}

impl<const K: usize, const V: usize> Drop for BucketGuard<'_, K, V> {
    fn drop(&mut self) {
        // Release: publishes every word store of this write to readers (their
        // Acquire load of `seq`) and to the next writer (its Acquire CAS).
        self.table
            .seq(self.bucket)
            .store(self.odd_seq + 1, Ordering::Release);
    }
}

// While the guard lives no other thread stores into the bucket, so Relaxed
// loads here read this thread's own latest values.
impl<const K: usize, const V: usize> BucketGuard<'_, K, V> {
    pub fn bucket(&self) -> usize {
        self.bucket
    }

    pub fn tag(&self, slot: usize) -> u8 {
        self.tags_word().to_le_bytes()[slot % SLOTS]
    }

    fn tags_word(&self) -> u64 {
        self.table.tags(self.bucket).load(Ordering::Relaxed)
    }

    fn set_tag(&self, slot: usize, tag: u8) {
        let mut tags = self.tags_word().to_le_bytes();
        tags[slot % SLOTS] = tag;
        self.table
            .tags(self.bucket)
            .store(u64::from_le_bytes(tags), Ordering::Relaxed);
    }

    pub fn key(&self, slot: usize) -> [u64; K] {
        self.table.load_key(self.bucket, slot % SLOTS)
    }

    pub fn value(&self, slot: usize) -> [u64; V] {
        self.table.load_value(self.bucket, slot % SLOTS)
    }

    pub fn find(&self, location: Location, key: &[u64; K]) -> Option<usize> {
        self.table.find_slot(self.bucket, location.tag, key)
    }

    /// Occupied slots.
    pub fn occupied(&self) -> usize {
        self.tags_word()
            .to_le_bytes()
            .iter()
            .filter(|&&tag| tag != 0)
            .count()
    }

    pub fn empty_slot(&self) -> Option<usize> {
        let tags = self.tags_word().to_le_bytes();
        (0..SLOTS).find(|&slot| tags[slot] == 0)
    }

    /// Stores a whole entry into `slot`.
    pub fn write(&self, slot: usize, tag: u8, key: &[u64; K], value: &[u64; V]) {
        let base = self.table.slot_base(self.bucket, slot % SLOTS);
        for (i, &word) in key.iter().chain(value.iter()).enumerate() {
            self.table.words[base + i].store(word, Ordering::Relaxed);
        }
        self.set_tag(slot, tag.max(1));
    }

    /// Stores one value word of an occupied slot.
    pub fn write_value_word(&self, slot: usize, index: usize, word: u64) {
        let base = self.table.slot_base(self.bucket, slot % SLOTS) + K;
        self.table.words[base + index % V].store(word, Ordering::Relaxed);
    }

    /// Empties `slot`. The key and value words stay as they were; the tag
    /// alone says the slot is free.
    pub fn clear(&self, slot: usize) {
        self.set_tag(slot, 0);
    }
}

/// Up to `N` bucket locks taken together by [`SeqTable::lock_set`].
#[derive(Debug)]
pub(crate) struct LockSet<'t, const K: usize, const V: usize, const N: usize> {
    guards: [Option<BucketGuard<'t, K, V>>; N],
}

impl<'t, const K: usize, const V: usize, const N: usize> LockSet<'t, K, V, N> {
    /// The guard of `bucket` if this set holds it.
    pub fn get(&self, bucket: usize) -> Option<&BucketGuard<'t, K, V>> {
        self.guards
            .iter()
            .flatten()
            .find(|guard| guard.bucket == bucket & guard.table.bucket_mask)
    }

    /// The guard and slot holding `key`, searching those of its two buckets
    /// this set holds.
    pub fn find(
        &self,
        location: Location,
        key: &[u64; K],
    ) -> Option<(&BucketGuard<'t, K, V>, usize)> {
        location.distinct().find_map(|bucket| {
            let guard = self.get(bucket)?;
            Some((guard, guard.find(location, key)?))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capacity_rounds_up_to_a_power_of_two_of_buckets() {
        assert_eq!(SeqTable::<1, 1>::with_capacity(0).capacity(), SLOTS);
        assert_eq!(SeqTable::<1, 1>::with_capacity(17).capacity(), 4 * SLOTS);
        assert_eq!(SeqTable::<1, 1>::with_capacity(64).capacity(), 64);
    }

    #[test]
    fn write_read_clear() {
        let table = SeqTable::<2, 3>::with_capacity(64);
        let key = [7, 9];
        let location = table.locate(&key);
        assert_eq!(table.read(location, &key), None);
        assert_ne!(location.buckets[0], location.buckets[1]);
        // Found in either of its buckets.
        for bucket in location.buckets {
            {
                let guard = table.lock(bucket);
                let slot = guard.empty_slot().unwrap();
                guard.write(slot, location.tag, &key, &[1, 2, 3]);
                // Readers see nothing until the guard is dropped: the bucket is odd.
                assert_eq!(table.seq(bucket).load(Ordering::Relaxed) & 1, 1);
            }
            assert_eq!(table.read(location, &key), Some([1, 2, 3]));
            assert_eq!(table.read(location, &[7, 8]), None);
            {
                let set = table.lock_set(location.buckets);
                let (guard, slot) = set.find(location, &key).unwrap();
                assert_eq!(guard.bucket(), bucket);
                guard.clear(slot);
            }
            assert_eq!(table.read(location, &key), None);
        }
    }

    /// Slots whose tag is the key's, or differs from it in the lowest bit
    /// (the bytes the tag search can mark falsely), around the key's own
    /// slot: the key is found where it is, nowhere else, and a key with the
    /// same tag that is not there is not found.
    #[test]
    fn the_tag_search_finds_the_key_among_lookalike_tags() {
        let table = SeqTable::<1, 1>::with_capacity(SLOTS);
        let key = [42];
        // Any tag serves the test; one whose lowest bit can flip to a nonzero tag.
        let location = Location {
            buckets: [0, 0],
            tag: 0x41,
        };
        for home in 0..SLOTS {
            let guard = table.lock(0);
            for slot in 0..SLOTS {
                let (tag, slot_key) = match slot {
                    s if s == home => (location.tag, key),
                    s if s % 2 == 0 => (location.tag, [1000 + s as u64]),
                    _ => (location.tag ^ 1, key),
                };
                guard.write(slot, tag, &slot_key, &[slot as u64]);
            }
            drop(guard);
            assert_eq!(
                table.read(location, &key),
                Some([home as u64]),
                "home {home}"
            );
            assert_eq!(table.read(location, &[999]), None);
        }
    }

    #[test]
    fn a_one_bucket_table_gives_every_key_that_bucket_twice() {
        let table = SeqTable::<1, 1>::with_capacity(SLOTS);
        let location = table.locate(&[5]);
        assert_eq!(location.buckets, [0, 0]);
        assert_eq!(location.distinct().count(), 1);
        let set = table.lock_set(location.buckets);
        assert!(set.get(0).is_some());
    }

    #[test]
    fn try_lock_fails_on_a_held_bucket_and_sets_lock_each_bucket_once() {
        let table = SeqTable::<1, 1>::with_capacity(64);
        let guard = table.lock(3);
        assert!(table.try_lock(3).is_none());
        assert!(table.try_lock(4).is_some());
        drop(guard);
        let set = table.lock_set([5, 5]);
        assert!(set.get(5).is_some());
        assert!(set.get(6).is_none());
        drop(set);
        let set = table.lock_set([6, 2, 6, 1]);
        assert_eq!(set.get(6).map(BucketGuard::bucket), Some(6));
        assert_eq!(set.get(2).map(BucketGuard::bucket), Some(2));
        assert_eq!(set.get(1).map(BucketGuard::bucket), Some(1));
        assert!(table.try_lock(6).is_none() && table.try_lock(1).is_none());
        drop(set);
        assert!(table.try_lock(6).is_some());
    }

    /// A writer rewrites one slot's eight value words with one number while
    /// a reader copies them: every copy must hold one number only. Fails
    /// within a few thousand reads when the reader skips its second `seq`
    /// check.
    #[test]
    fn readers_never_copy_a_half_written_value() {
        use std::sync::atomic::AtomicBool;
        let table = std::sync::Arc::new(SeqTable::<1, 8>::with_capacity(8));
        let key = [42];
        let location = table.locate(&key);
        let bucket = location.buckets[0];
        table.lock(bucket).write(0, location.tag, &key, &[0; 8]);
        let done = std::sync::Arc::new(AtomicBool::new(false));
        let writer = {
            let (table, done) = (table.clone(), done.clone());
            std::thread::spawn(move || {
                let mut n = 0u64;
                while !done.load(Ordering::Relaxed) {
                    n += 1;
                    let guard = table.lock(bucket);
                    for i in 0..8 {
                        guard.write_value_word(0, i, n);
                    }
                    drop(guard);
                    // Leave the reader room between writes.
                    for _ in 0..64 {
                        std::hint::spin_loop();
                    }
                }
            })
        };
        let mut reads = 0u32;
        let mut changes = 0u32;
        let mut last = 0;
        while changes < 2_000 && reads < 2_000_000 {
            let value = table.read(location, &key).expect("the key stays");
            assert!(value.iter().all(|&w| w == value[0]), "torn read: {value:?}");
            if value[0] != last {
                changes += 1;
                last = value[0];
            }
            reads += 1;
        }
        done.store(true, Ordering::Relaxed);
        writer.join().unwrap();
    }

    /// A writer moves one key back and forth between its two buckets (both
    /// locked, as inserts move entries) while a reader looks it up: the key
    /// is always in the table, so every read must find it. Fails within a
    /// few thousand reads when a miss does not recheck the first bucket.
    #[test]
    fn readers_find_a_key_moving_between_its_buckets() {
        use std::sync::atomic::AtomicBool;
        let table = std::sync::Arc::new(SeqTable::<1, 1>::with_capacity(64));
        let key = [42];
        let location = table.locate(&key);
        table
            .lock(location.buckets[0])
            .write(0, location.tag, &key, &[7]);
        let done = std::sync::Arc::new(AtomicBool::new(false));
        let writer = {
            let (table, done) = (table.clone(), done.clone());
            std::thread::spawn(move || {
                while !done.load(Ordering::Relaxed) {
                    let set = table.lock_set(location.buckets);
                    let (from, slot) = set.find(location, &key).expect("the key stays");
                    let to = set.get(location.other(from.bucket())).unwrap();
                    to.write(0, location.tag, &key, &[7]);
                    from.clear(slot);
                    drop(set);
                    for _ in 0..64 {
                        std::hint::spin_loop();
                    }
                }
            })
        };
        for _ in 0..200_000 {
            assert_eq!(
                table.read(location, &key),
                Some([7]),
                "a moving key was missed"
            );
        }
        done.store(true, Ordering::Relaxed);
        writer.join().unwrap();
    }
}
