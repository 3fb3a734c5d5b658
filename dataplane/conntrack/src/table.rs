//! A fixed-capacity, set-associative table of `AtomicU64` words with one
//! sequence lock per bucket: readers never block writers and retry when they
//! raced one; writers exclude each other per bucket. Shared by the
//! conntrack (5 key words, 9 value words) and affinity (3 + 2) tables.
//!
//! Layout: `buckets` (a power of two) times `[seq, tags, 8 x (key, value)]`.
//! `tags` holds one byte per slot: 0 = empty, else a byte of the key's hash,
//! so a reader compares the key words of (almost always) one slot only.
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
//!
//! No allocation after construction, no `unsafe`.

use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{fence, AtomicU64, Ordering};

/// Slots per bucket: one byte each in the tags word.
pub(crate) const SLOTS: usize = 8;
/// Words before the slots in each bucket: sequence, tags.
const HEADER_WORDS: usize = 2;
/// Spins on a busy bucket before yielding the CPU. A writer holds a bucket
/// for a few dozen nanoseconds; only a writer descheduled inside its
/// critical section makes anyone reach this.
const SPINS_BEFORE_YIELD: u32 = 1 << 12;

/// Where a key lives: its bucket, and the tag byte it carries there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Location {
    pub bucket: usize,
    pub tag: u8,
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

    pub fn locate(&self, key: &[u64; K]) -> Location {
        let mut hasher = self.hasher.build_hasher();
        for &word in key {
            hasher.write_u64(word);
        }
        let hash = hasher.finish();
        // Low bits choose the bucket, the top byte is the tag (0 means empty).
        Location {
            bucket: hash as usize & self.bucket_mask,
            tag: ((hash >> 56) as u8).max(1),
        }
    }

    fn base(&self, bucket: usize) -> usize {
        (bucket & self.bucket_mask) * Self::BUCKET_WORDS
    }

    fn slot_base(&self, bucket: usize, slot: usize) -> usize {
        self.base(bucket) + HEADER_WORDS + slot * Self::SLOT_WORDS
    }

    fn seq(&self, bucket: usize) -> &AtomicU64 {
        &self.words[self.base(bucket)]
    }

    fn tags(&self, bucket: usize) -> &AtomicU64 {
        &self.words[self.base(bucket) + 1]
    }

    /// Runs `read` over the bucket's words until it ran without a writer
    /// in between; `read` sees Relaxed loads only and may see torn words on
    /// the attempts whose result is thrown away, so it must not trust them
    /// beyond comparing and copying.
    fn read_consistent<T>(&self, bucket: usize, read: impl Fn() -> T) -> T {
        let seq = self.seq(bucket);
        let mut spins = 0;
        loop {
            // Acquire: pairs with the Release store that ended the last write.
            let before = seq.load(Ordering::Acquire);
            if before & 1 == 1 {
                backoff(&mut spins);
                continue;
            }
            let value = read();
            // Acquire fence: pairs with the writer's Release fence after it
            // made `seq` odd (see the module comment).
            fence(Ordering::Acquire);
            if seq.load(Ordering::Relaxed) == before {
                return value;
            }
            backoff(&mut spins);
        }
    }

    fn load_key(&self, bucket: usize, slot: usize) -> [u64; K] {
        let base = self.slot_base(bucket, slot);
        std::array::from_fn(|i| self.words[base + i].load(Ordering::Relaxed))
    }

    fn load_value(&self, bucket: usize, slot: usize) -> [u64; V] {
        let base = self.slot_base(bucket, slot) + K;
        std::array::from_fn(|i| self.words[base + i].load(Ordering::Relaxed))
    }

    fn find_slot(&self, bucket: usize, tag: u8, key: &[u64; K]) -> Option<usize> {
        let tags = self.tags(bucket).load(Ordering::Relaxed).to_le_bytes();
        (0..SLOTS).find(|&slot| {
            tags[slot] == tag && {
                let base = self.slot_base(bucket, slot);
                (0..K).all(|i| self.words[base + i].load(Ordering::Relaxed) == key[i])
            }
        })
    }

    /// The value stored under `key`, read without blocking any writer.
    pub fn read(&self, location: Location, key: &[u64; K]) -> Option<[u64; V]> {
        self.read_consistent(location.bucket, || {
            self.find_slot(location.bucket, location.tag, key)
                .map(|slot| self.load_value(location.bucket, slot))
        })
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
    /// A thread must never lock a bucket it already holds, and holds at most
    /// two blocking locks, taken in bucket order (see [`SeqTable::lock_pair`]).
    pub fn lock(&self, bucket: usize) -> BucketGuard<'_, K, V> {
        let mut spins = 0;
        loop {
            if let Some(guard) = self.try_lock(bucket) {
                return guard;
            }
            backoff(&mut spins);
        }
    }

    /// The bucket's writer lock if nobody holds it now. Taking a third
    /// bucket while holding two is done only this way, so lock waits never
    /// form a cycle.
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

    /// Locks two buckets (one if they are the same) in index order, so two
    /// writers locking overlapping pairs cannot wait on each other in a cycle.
    pub fn lock_pair(&self, a: usize, b: usize) -> LockedPair<'_, K, V> {
        let (a, b) = (a & self.bucket_mask, b & self.bucket_mask);
        if a == b {
            return LockedPair {
                low: self.lock(a),
                high: None,
            };
        }
        let (low, high) = if a < b { (a, b) } else { (b, a) };
        let low = self.lock(low);
        let high = self.lock(high);
        LockedPair {
            low,
            high: Some(high),
        }
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

/// One or two bucket locks taken together.
#[derive(Debug)]
pub(crate) struct LockedPair<'t, const K: usize, const V: usize> {
    low: BucketGuard<'t, K, V>,
    high: Option<BucketGuard<'t, K, V>>,
}

impl<'t, const K: usize, const V: usize> LockedPair<'t, K, V> {
    /// The guard of `bucket` if this pair holds it.
    pub fn get(&self, bucket: usize) -> Option<&BucketGuard<'t, K, V>> {
        let bucket = bucket & self.low.table.bucket_mask;
        if self.low.bucket == bucket {
            return Some(&self.low);
        }
        self.high.as_ref().filter(|guard| guard.bucket == bucket)
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
        {
            let guard = table.lock(location.bucket);
            let slot = guard.empty_slot().unwrap();
            guard.write(slot, location.tag, &key, &[1, 2, 3]);
            // Readers see nothing until the guard is dropped: the bucket is odd.
            assert_eq!(table.seq(location.bucket).load(Ordering::Relaxed) & 1, 1);
        }
        assert_eq!(table.read(location, &key), Some([1, 2, 3]));
        assert_eq!(table.read(location, &[7, 8]), None);
        {
            let guard = table.lock(location.bucket);
            let slot = guard.find(location, &key).unwrap();
            guard.clear(slot);
        }
        assert_eq!(table.read(location, &key), None);
    }

    #[test]
    fn try_lock_fails_on_a_held_bucket_and_pairs_lock_once_for_one_bucket() {
        let table = SeqTable::<1, 1>::with_capacity(64);
        let guard = table.lock(3);
        assert!(table.try_lock(3).is_none());
        assert!(table.try_lock(4).is_some());
        drop(guard);
        let pair = table.lock_pair(5, 5);
        assert!(pair.get(5).is_some());
        assert!(pair.get(6).is_none());
        drop(pair);
        let pair = table.lock_pair(6, 2);
        assert_eq!(pair.get(6).map(BucketGuard::bucket), Some(6));
        assert_eq!(pair.get(2).map(BucketGuard::bucket), Some(2));
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
        table
            .lock(location.bucket)
            .write(0, location.tag, &key, &[0; 8]);
        let done = std::sync::Arc::new(AtomicBool::new(false));
        let writer = {
            let (table, done) = (table.clone(), done.clone());
            std::thread::spawn(move || {
                let mut n = 0u64;
                while !done.load(Ordering::Relaxed) {
                    n += 1;
                    let guard = table.lock(location.bucket);
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
}
