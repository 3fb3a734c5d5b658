//! The shared connection-tracking table: both entries of every flow in one
//! [`SeqTable`], lookups that never block, per-flow updates under the locks
//! of the flow's two buckets.
//!
//! Invariants the code keeps:
//! * Every change to a flow (insert, state or last-seen update, removal)
//!   happens while both of its buckets are locked, and writes both entries.
//!   So the reply entry always carries the original's state and last seen
//!   (a copy; the original stays the authoritative one), and a reply packet
//!   needs one bucket read, not two.
//! * The two entries are published together: both are written before either
//!   bucket is released, and a reader of the other bucket waits the few
//!   nanoseconds until it is released too. A reader never sees one entry of
//!   a new flow without the other being on its way.
//! * An entry is live while `now < last_seen + timeout(state)`; both entries
//!   of a flow expire at the same instant. An expired entry is never made
//!   live again: everything treats it as absent and its slot as free.
//! * Removing an entry removes its partner only if the partner points back
//!   (`partner(partner(key)) == key`): after an expired entry's slot was
//!   reused, its old partner may belong to someone else.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use crate::entry::{ENTRY_WORDS, LAST_SEEN_WORD, META_WORD};
use crate::key::KEY_WORDS;
use crate::table::{BucketGuard, LockedPair, SeqTable, SLOTS};
use crate::tcp::{next_state, tcp_flags};
use crate::{CtConfig, CtEntry, Direction, FlowKey, FlowState, TcpState, Timeouts};

type FlowTable = SeqTable<KEY_WORDS, ENTRY_WORDS>;
type Guard<'t> = BucketGuard<'t, KEY_WORDS, ENTRY_WORDS>;
type Pair<'t> = LockedPair<'t, KEY_WORDS, ENTRY_WORDS>;

/// Last seen is rewritten at most this often per flow (unless the state
/// changes), so a busy flow costs one write a second, not one per packet.
const REFRESH_NS: u64 = 1_000_000_000;

/// Why a flow could not be inserted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InsertError {
    /// One of the two keys is already tracked (a NAT port allocator tries the next port).
    Exists,
    /// No room in the buckets of a key even after evicting what may be
    /// evicted. Also returned for a pair of keys that are not each other's
    /// partner (`reply != original.partner(rewrites)` or the other way), which
    /// could never be found again, or for a flow whose two keys are equal.
    Full,
}

/// Counters and gauges for `sluice stats` and metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct CtStats {
    pub capacity: u64,
    pub entries: u64,
    pub inserts: u64,
    pub insert_failures: u64,
    /// Flows evicted to make room before their timeout.
    pub evictions: u64,
    /// Flows removed by garbage collection after their timeout.
    pub expired: u64,
    /// entries / capacity in parts per thousand (the pressure metric).
    pub pressure_permille: u64,
}

/// What a packet told the tracker: for TCP the header flags, else nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Seen {
    /// TCP flags byte (FIN 0x01, SYN 0x02, RST 0x04, ACK 0x10); 0 for other protocols.
    pub tcp_flags: u8,
}

/// The state a flow moves to when a packet travelling in `direction` is seen:
/// TCP follows [`next_state`]; any other flow becomes `Replied` at its first
/// reply packet.
pub fn next_flow_state(state: FlowState, direction: Direction, seen: Seen) -> FlowState {
    match (state, direction) {
        (FlowState::Tcp(tcp), _) => FlowState::Tcp(next_state(tcp, direction, seen.tcp_flags)),
        (FlowState::Unreplied, Direction::Reply) => FlowState::Replied,
        (other, _) => other,
    }
}

/// True when `seen` in `direction` on a flow in `state` reopens the port: a
/// SYN without ACK from the original side on a finished TCP flow.
pub fn reopens(state: FlowState, direction: Direction, seen: Seen) -> bool {
    let syn_only =
        seen.tcp_flags & (tcp_flags::SYN | tcp_flags::ACK | tcp_flags::RST) == tcp_flags::SYN;
    direction == Direction::Original
        && syn_only
        && matches!(
            state,
            FlowState::Tcp(TcpState::TimeWait) | FlowState::Tcp(TcpState::Close)
        )
}

/// The shared table.
#[derive(Debug)]
pub struct Conntrack {
    table: FlowTable,
    timeouts: Timeouts,
    /// Next bucket for [`Conntrack::gc_step`].
    gc_cursor: AtomicUsize,
    /// Occupied slots (live or expired, not yet reclaimed).
    entries: AtomicU64,
    inserts: AtomicU64,
    insert_failures: AtomicU64,
    evictions: AtomicU64,
    expired: AtomicU64,
}

/// A decoded slot.
#[derive(Clone, Copy, Debug)]
struct Slot {
    key: FlowKey,
    entry: CtEntry,
}

impl Conntrack {
    pub fn new(config: CtConfig) -> Conntrack {
        Conntrack {
            table: FlowTable::with_capacity(config.capacity),
            timeouts: config.timeouts,
            gc_cursor: AtomicUsize::new(0),
            entries: AtomicU64::new(0),
            inserts: AtomicU64::new(0),
            insert_failures: AtomicU64::new(0),
            evictions: AtomicU64::new(0),
            expired: AtomicU64::new(0),
        }
    }

    /// Bytes of table memory per entry (two per flow), bucket headers included.
    pub fn bytes_per_entry() -> usize {
        FlowTable::bytes_per_entry()
    }

    fn is_live(&self, key: &FlowKey, entry: &CtEntry, now_ns: u64) -> bool {
        now_ns
            < self
                .timeouts
                .expiry_ns(key.protocol, entry.state, entry.last_seen_ns)
    }

    fn slot(guard: &Guard<'_>, slot: usize) -> Slot {
        Slot {
            key: FlowKey::from_words(&guard.key(slot)),
            entry: CtEntry::from_words(&guard.value(slot)),
        }
    }

    /// The entry for `key` if present and not expired at `now_ns`. Never waits.
    pub fn lookup(&self, key: &FlowKey, now_ns: u64) -> Option<CtEntry> {
        let words = key.to_words();
        let location = self.table.locate(&words);
        let entry = CtEntry::from_words(&self.table.read(location, &words)?);
        self.is_live(key, &entry, now_ns).then_some(entry)
    }

    /// The per-packet call for a packet whose key may be tracked: updates
    /// last-seen (at most once per second per flow, to keep writes rare) and
    /// the TCP state in the flow's original entry, and returns this
    /// direction's entry with the flow's state. `None` when not tracked or
    /// expired; also `None` (and the old flow removed) when a TCP SYN without
    /// ACK arrives in the original direction of a flow in TIME_WAIT or CLOSE,
    /// so the caller creates a new flow, as the kernel reopens a port.
    pub fn observe(&self, key: &FlowKey, seen: Seen, now_ns: u64) -> Option<CtEntry> {
        let entry = self.lookup(key, now_ns)?;
        let next = next_flow_state(entry.state, entry.direction, seen);
        let reopen = reopens(entry.state, entry.direction, seen);
        let fresh = now_ns < entry.last_seen_ns.saturating_add(REFRESH_NS);
        if !reopen && next == entry.state && fresh {
            return Some(entry);
        }
        self.update_flow(key, &entry, seen, now_ns)
    }

    /// The write half of [`Conntrack::observe`], under both bucket locks. The
    /// state is recomputed from what the entry holds now, so two workers
    /// updating one flow at once both take effect.
    fn update_flow(
        &self,
        key: &FlowKey,
        seen_entry: &CtEntry,
        seen: Seen,
        now_ns: u64,
    ) -> Option<CtEntry> {
        let key_words = key.to_words();
        let location = self.table.locate(&key_words);
        let mut rewrites = seen_entry.rewrites;
        // The entry can be replaced by a new flow with other rewrites (so
        // another partner bucket) between the lock-free read and the locks;
        // then lock again for the new partner. Bounded: past it the packet
        // goes on with the entry as read, its update left to the next packet.
        for _ in 0..3 {
            let partner = key.partner(&rewrites);
            let partner_location = self.table.locate(&partner.to_words());
            let pair = self
                .table
                .lock_pair(location.bucket, partner_location.bucket);
            let guard = pair.get(location.bucket)?;
            let slot = guard.find(location, &key_words)?;
            let mut entry = CtEntry::from_words(&guard.value(slot));
            if !self.is_live(key, &entry, now_ns) {
                return None;
            }
            if entry.rewrites != rewrites {
                rewrites = entry.rewrites;
                continue;
            }
            if reopens(entry.state, entry.direction, seen) {
                self.remove_at(&pair, location.bucket, slot);
                return None;
            }
            let next = next_flow_state(entry.state, entry.direction, seen);
            let stale = now_ns >= entry.last_seen_ns.saturating_add(REFRESH_NS);
            if next == entry.state && !stale {
                return Some(entry);
            }
            entry.state = next;
            entry.last_seen_ns = entry.last_seen_ns.max(now_ns);
            Self::store_state(guard, slot, &entry);
            if let Some(partner_guard) = pair.get(partner_location.bucket) {
                if let Some(partner_slot) = self.verified_partner(partner_guard, key, &partner) {
                    Self::store_state(partner_guard, partner_slot, &entry);
                }
            }
            return Some(entry);
        }
        Some(*seen_entry)
    }

    fn store_state(guard: &Guard<'_>, slot: usize, flow: &CtEntry) {
        let meta = guard.value(slot)[META_WORD];
        guard.write_value_word(slot, META_WORD, CtEntry::meta_with_state(meta, flow.state));
        guard.write_value_word(slot, LAST_SEEN_WORD, flow.last_seen_ns);
    }

    /// The slot holding `partner` in `guard`'s bucket if that entry's own
    /// partner is `key` (so it belongs to the same flow).
    fn verified_partner(
        &self,
        guard: &Guard<'_>,
        key: &FlowKey,
        partner: &FlowKey,
    ) -> Option<usize> {
        let words = partner.to_words();
        let location = self.table.locate(&words);
        if location.bucket != guard.bucket() {
            return None;
        }
        let slot = guard.find(location, &words)?;
        let entry = CtEntry::from_words(&guard.value(slot));
        (partner.partner(&entry.rewrites) == *key).then_some(slot)
    }

    /// Removes the entry at (`bucket`, `slot`) and its verified partner, both
    /// buckets being held by `pair`. Returns the entries removed.
    fn remove_at(&self, pair: &Pair<'_>, bucket: usize, slot: usize) -> u64 {
        let Some(guard) = pair.get(bucket) else {
            return 0;
        };
        if guard.tag(slot) == 0 {
            return 0;
        }
        let Slot { key, entry } = Self::slot(guard, slot);
        let partner = key.partner(&entry.rewrites);
        let partner_location = self.table.locate(&partner.to_words());
        let mut removed = 0;
        if let Some(partner_guard) = pair.get(partner_location.bucket) {
            if let Some(partner_slot) = self.verified_partner(partner_guard, &key, &partner) {
                partner_guard.clear(partner_slot);
                removed += 1;
            }
        }
        guard.clear(slot);
        removed += 1;
        self.entries.fetch_sub(removed, Ordering::Relaxed);
        removed
    }

    /// Inserts both entries of a new flow, or neither. `reply` must be the
    /// reverse of `original` after `original_entry.rewrites`. Under pressure,
    /// expired flows and then the least recently seen non-established flows in
    /// the target buckets are evicted (both of their entries).
    ///
    /// The original entry's `last_seen_ns` is taken as the current time
    /// (liveness of what is already there is judged against it); the reply
    /// entry gets the original's state and last seen, and each entry the
    /// direction of its argument position.
    ///
    /// Established TCP flows are never evicted: cutting one mid-stream breaks
    /// a working connection (its next packet would find no translation),
    /// while a refused new flow is one connection attempt the client retries.
    /// When a key's bucket holds only live established flows the insert fails
    /// with `Full`. An eviction made for the original key stands even if the
    /// reply key then finds no room.
    pub fn insert_flow(
        &self,
        original: &FlowKey,
        original_entry: CtEntry,
        reply: &FlowKey,
        reply_entry: CtEntry,
    ) -> Result<(), InsertError> {
        let result = self.try_insert(original, original_entry, reply, reply_entry);
        let counter = if result.is_ok() {
            &self.inserts
        } else {
            &self.insert_failures
        };
        counter.fetch_add(1, Ordering::Relaxed);
        result
    }

    fn try_insert(
        &self,
        original: &FlowKey,
        original_entry: CtEntry,
        reply: &FlowKey,
        reply_entry: CtEntry,
    ) -> Result<(), InsertError> {
        let original_entry = CtEntry {
            direction: Direction::Original,
            ..original_entry
        };
        let reply_entry = CtEntry {
            direction: Direction::Reply,
            state: original_entry.state,
            last_seen_ns: original_entry.last_seen_ns,
            ..reply_entry
        };
        if original == reply
            || original.partner(&original_entry.rewrites) != *reply
            || reply.partner(&reply_entry.rewrites) != *original
        {
            return Err(InsertError::Full);
        }
        let now_ns = original_entry.last_seen_ns;
        let original_words = original.to_words();
        let reply_words = reply.to_words();
        let original_location = self.table.locate(&original_words);
        let reply_location = self.table.locate(&reply_words);
        let pair = self
            .table
            .lock_pair(original_location.bucket, reply_location.bucket);
        let (Some(original_guard), Some(reply_guard)) = (
            pair.get(original_location.bucket),
            pair.get(reply_location.bucket),
        ) else {
            return Err(InsertError::Full);
        };

        let original_existing = original_guard.find(original_location, &original_words);
        let reply_existing = reply_guard.find(reply_location, &reply_words);
        for (guard, existing) in [
            (original_guard, original_existing),
            (reply_guard, reply_existing),
        ] {
            if let Some(slot) = existing {
                let Slot { key, entry } = Self::slot(guard, slot);
                if self.is_live(&key, &entry, now_ns) {
                    return Err(InsertError::Exists);
                }
            }
        }

        let original_slot =
            self.make_room(&pair, original_guard, original_existing, None, now_ns)?;
        // The original's room may have reclaimed the reply key's old entry
        // (it was that flow's partner): look again.
        let reply_existing = reply_guard.find(reply_location, &reply_words);
        let exclude = (reply_location.bucket == original_location.bucket).then_some(original_slot);
        let reply_slot = self.make_room(&pair, reply_guard, reply_existing, exclude, now_ns)?;

        original_guard.write(
            original_slot,
            original_location.tag,
            &original_words,
            &original_entry.to_words(),
        );
        reply_guard.write(
            reply_slot,
            reply_location.tag,
            &reply_words,
            &reply_entry.to_words(),
        );
        self.entries.fetch_add(2, Ordering::Relaxed);
        Ok(())
    }

    /// An empty slot in `guard`'s bucket (not `exclude`), made by reclaiming
    /// `existing` (an expired entry with the key being inserted), else taking
    /// a free slot, else reclaiming an expired flow, else evicting the least
    /// recently seen live flow that is not established TCP.
    fn make_room(
        &self,
        pair: &Pair<'_>,
        guard: &Guard<'_>,
        existing: Option<usize>,
        exclude: Option<usize>,
        now_ns: u64,
    ) -> Result<usize, InsertError> {
        if let Some(slot) = existing {
            self.reclaim(pair, guard, slot, true);
            self.expired.fetch_add(1, Ordering::Relaxed);
            return Ok(slot);
        }
        let usable = |slot: &usize| Some(*slot) != exclude;
        if let Some(slot) = (0..SLOTS).filter(usable).find(|&slot| guard.tag(slot) == 0) {
            return Ok(slot);
        }
        let slots: [Slot; SLOTS] = std::array::from_fn(|slot| Self::slot(guard, slot));
        if let Some(slot) = (0..SLOTS)
            .filter(usable)
            .find(|&slot| !self.is_live(&slots[slot].key, &slots[slot].entry, now_ns))
        {
            self.reclaim(pair, guard, slot, true);
            self.expired.fetch_add(1, Ordering::Relaxed);
            return Ok(slot);
        }
        // Victims in order of last seen; one whose partner's bucket is busy
        // (held by another writer) is passed over.
        let mut tried = 0u32;
        loop {
            let victim = (0..SLOTS)
                .filter(usable)
                .filter(|&slot| tried & 1 << slot == 0)
                .filter(|&slot| slots[slot].entry.state != FlowState::Tcp(TcpState::Established))
                .min_by_key(|&slot| slots[slot].entry.last_seen_ns);
            let Some(slot) = victim else {
                return Err(InsertError::Full);
            };
            tried |= 1 << slot;
            if self.reclaim(pair, guard, slot, false) {
                self.evictions.fetch_add(1, Ordering::Relaxed);
                return Ok(slot);
            }
        }
    }

    /// Removes the entry at `slot` of `guard` and its verified partner. The
    /// partner's bucket is one of `pair` or taken with `try_lock` (never
    /// waiting while holding two locks). When that bucket is busy: with
    /// `partner_optional` (an expired flow) the entry alone goes and its
    /// expired partner stays for the garbage collector; without it nothing is
    /// removed and false is returned.
    fn reclaim(
        &self,
        pair: &Pair<'_>,
        guard: &Guard<'_>,
        slot: usize,
        partner_optional: bool,
    ) -> bool {
        if guard.tag(slot) == 0 {
            return true;
        }
        let Slot { key, entry } = Self::slot(guard, slot);
        let partner = key.partner(&entry.rewrites);
        let partner_bucket = self.table.locate(&partner.to_words()).bucket;
        let extra;
        let partner_guard = match pair.get(partner_bucket) {
            Some(held) => Some(held),
            None => {
                extra = self.table.try_lock(partner_bucket);
                extra.as_ref()
            }
        };
        let mut removed = 1;
        match partner_guard {
            Some(partner_guard) => {
                if let Some(partner_slot) = self.verified_partner(partner_guard, &key, &partner) {
                    partner_guard.clear(partner_slot);
                    removed += 1;
                }
            }
            None if partner_optional => {}
            None => return false,
        }
        guard.clear(slot);
        self.entries.fetch_sub(removed, Ordering::Relaxed);
        true
    }

    /// Removes the flow that `key` (either direction) belongs to; false if
    /// absent. An expired flow whose entries are still in the table is
    /// removed too (there is no clock here to tell), and counts as present.
    pub fn remove_flow(&self, key: &FlowKey) -> bool {
        self.remove_if(key, |_| true)
    }

    /// Removes `key`'s flow if `key`'s entry (read under the locks) passes
    /// `check`.
    fn remove_if(&self, key: &FlowKey, check: impl Fn(&CtEntry) -> bool) -> bool {
        let words = key.to_words();
        let location = self.table.locate(&words);
        let Some(value) = self.table.read(location, &words) else {
            return false;
        };
        let entry = CtEntry::from_words(&value);
        let partner = key.partner(&entry.rewrites);
        let partner_bucket = self.table.locate(&partner.to_words()).bucket;
        let pair = self.table.lock_pair(location.bucket, partner_bucket);
        let Some(guard) = pair.get(location.bucket) else {
            return false;
        };
        let Some(slot) = guard.find(location, &words) else {
            return false;
        };
        let current = CtEntry::from_words(&guard.value(slot));
        // The entry may have been replaced between the read and the locks by
        // a new flow with other rewrites: its partner is elsewhere then.
        if current.rewrites != entry.rewrites || !check(&current) {
            return false;
        }
        self.remove_at(&pair, location.bucket, slot) > 0
    }

    /// One incremental garbage-collection step over at most `buckets` buckets,
    /// resuming where the last step stopped; removes expired flows. Takes each
    /// bucket's writer lock only while removing from it, so workers never stop.
    /// Returns the number of flows removed.
    pub fn gc_step(&self, now_ns: u64, buckets: usize) -> usize {
        let count = buckets.min(self.table.buckets());
        let start = self.gc_cursor.fetch_add(count, Ordering::Relaxed);
        let mut removed = 0;
        for i in 0..count {
            let bucket = start.wrapping_add(i) % self.table.buckets();
            let copy = self.table.read_bucket(bucket);
            for slot in 0..SLOTS {
                if copy.tags[slot] == 0 {
                    continue;
                }
                let key = FlowKey::from_words(&copy.keys[slot]);
                let entry = CtEntry::from_words(&copy.values[slot]);
                if !self.is_live(&key, &entry, now_ns)
                    && self.remove_if(&key, |current| !self.is_live(&key, current, now_ns))
                {
                    removed += 1;
                }
            }
        }
        self.expired.fetch_add(removed as u64, Ordering::Relaxed);
        removed
    }

    /// Removes every flow matching `filter` (all when it matches everything);
    /// returns how many flows were removed. A flow matches when either of its
    /// entries does.
    pub fn flush(&self, filter: &dyn Fn(&FlowKey, &CtEntry) -> bool) -> usize {
        let mut removed = 0;
        for bucket in 0..self.table.buckets() {
            let copy = self.table.read_bucket(bucket);
            for slot in 0..SLOTS {
                if copy.tags[slot] == 0 {
                    continue;
                }
                let key = FlowKey::from_words(&copy.keys[slot]);
                let entry = CtEntry::from_words(&copy.values[slot]);
                if filter(&key, &entry) && self.remove_if(&key, |current| filter(&key, current)) {
                    removed += 1;
                }
            }
        }
        removed
    }

    /// A copy of the live entries (both directions) matching `filter`, at most `limit`.
    pub fn entries(
        &self,
        now_ns: u64,
        filter: &dyn Fn(&FlowKey, &CtEntry) -> bool,
        limit: usize,
    ) -> Vec<(FlowKey, CtEntry)> {
        let mut found = Vec::new();
        for bucket in 0..self.table.buckets() {
            let copy = self.table.read_bucket(bucket);
            for slot in 0..SLOTS {
                if found.len() >= limit {
                    return found;
                }
                if copy.tags[slot] == 0 {
                    continue;
                }
                let key = FlowKey::from_words(&copy.keys[slot]);
                let entry = CtEntry::from_words(&copy.values[slot]);
                if self.is_live(&key, &entry, now_ns) && filter(&key, &entry) {
                    found.push((key, entry));
                }
            }
        }
        found
    }

    pub fn stats(&self) -> CtStats {
        let capacity = self.table.capacity() as u64;
        let entries = self.entries.load(Ordering::Relaxed);
        CtStats {
            capacity,
            entries,
            inserts: self.inserts.load(Ordering::Relaxed),
            insert_failures: self.insert_failures.load(Ordering::Relaxed),
            evictions: self.evictions.load(Ordering::Relaxed),
            expired: self.expired.load(Ordering::Relaxed),
            pressure_permille: entries * 1000 / capacity.max(1),
        }
    }

    pub fn timeouts(&self) -> &Timeouts {
        &self.timeouts
    }
}
