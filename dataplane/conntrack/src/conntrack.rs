//! The shared connection-tracking table: both entries of every flow in one
//! [`SeqTable`], lookups that never block, per-flow updates under the locks
//! of the buckets the flow's two keys may live in.
//!
//! Locking: each key may live in two buckets, so a flow change takes up to
//! four locks, all in one [`SeqTable::lock_set`] (ascending bucket order);
//! a bucket outside that set (the partner of an entry being evicted, the
//! other bucket of an entry being moved) is only ever taken with
//! `try_lock`, and the step is skipped when it is busy. So every wait is
//! for a bucket numbered above all the waiter holds, and no cycle can form.
//! Taking the four in order was chosen over "two blocking locks plus
//! `try_lock`" because an insert must hold both buckets of each key to
//! know the key is in neither (two inserts of one key must not land in its
//! two buckets) and must not fail just because a neighbour is busy.
//!
//! Invariants the code keeps:
//! * Every change to a flow (insert, state or last-seen update, removal)
//!   happens while both buckets of each of its keys are locked, and writes
//!   both entries. So the reply entry always carries the original's state
//!   and last seen (a copy; the original stays the authoritative one), and a
//!   reply packet needs its own entry only, not its partner's.
//! * An entry moved to its key's other bucket (to make room) is moved with
//!   both of that key's buckets locked, unchanged; a key is in at most one
//!   of its buckets.
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

use crate::entry::{Tracked, ENTRY_WORDS, LAST_SEEN_WORD, META_WORD, POLICY_WORD};
use crate::key::KEY_WORDS;
use crate::table::{BucketGuard, Location, LockSet, SeqTable, ValueWords, SLOTS};
use crate::tcp::{next_state, tcp_flags};
use crate::{CtConfig, CtEntry, Direction, FlowKey, FlowState, TcpState, Timeouts};

type FlowTable = SeqTable<KEY_WORDS, ENTRY_WORDS>;
type Guard<'t> = BucketGuard<'t, KEY_WORDS, ENTRY_WORDS>;
/// The locks of a flow: both buckets of each of its two keys.
type Locks<'t> = LockSet<'t, KEY_WORDS, ENTRY_WORDS, 4>;
/// A place in the table: bucket, slot.
type Place = (usize, usize);

/// Last seen is rewritten at most this often per flow (unless the state
/// changes), so a busy flow costs one write a second, not one per packet.
const REFRESH_NS: u64 = 1_000_000_000;

/// Why a flow could not be inserted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InsertError {
    /// One of the two keys is already tracked (a NAT port allocator tries the next port).
    Exists,
    /// No room in either bucket of a key even after moving an entry to its
    /// other bucket and evicting what may be evicted. Also returned for a
    /// pair of keys that are not each other's partner
    /// (`reply != original.partner(rewrites)` or the other way), which could
    /// never be found again, or for a flow whose two keys are equal.
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

/// True when `seen` in `direction` changes a flow in `state` or reopens it
/// (`next_flow_state(..) != state || reopens(..)`), decided with one match
/// for the per-packet path.
#[inline]
fn changes_flow(state: FlowState, direction: Direction, seen: Seen) -> bool {
    match state {
        FlowState::Tcp(tcp) => {
            next_state(tcp, direction, seen.tcp_flags) != tcp || reopens(state, direction, seen)
        }
        FlowState::Unreplied => direction == Direction::Reply,
        FlowState::Replied => false,
    }
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

/// What [`Conntrack::observe_as`] decodes an entry into.
trait Decode: From<CtEntry> {
    fn decode(value: &ValueWords<'_, ENTRY_WORDS>) -> Self;
    fn state(&self) -> FlowState;
    fn direction(&self) -> Direction;
    fn last_seen_ns(&self) -> u64;
}

impl Decode for CtEntry {
    #[inline]
    fn decode(value: &ValueWords<'_, ENTRY_WORDS>) -> CtEntry {
        CtEntry::read(|i| value.get(i))
    }
    fn state(&self) -> FlowState {
        self.state
    }
    fn direction(&self) -> Direction {
        self.direction
    }
    fn last_seen_ns(&self) -> u64 {
        self.last_seen_ns
    }
}

impl Decode for Tracked {
    #[inline]
    fn decode(value: &ValueWords<'_, ENTRY_WORDS>) -> Tracked {
        Tracked::read(|i| value.get(i))
    }
    fn state(&self) -> FlowState {
        Tracked::state(self)
    }
    fn direction(&self) -> Direction {
        Tracked::direction(self)
    }
    fn last_seen_ns(&self) -> u64 {
        Tracked::last_seen_ns(self)
    }
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

    /// Buckets in the table: the unit of [`gc_step`](Self::gc_step).
    pub fn buckets(&self) -> usize {
        self.table.buckets()
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
        let entry = self.table.read_with(location, &words, CtEntry::decode)?;
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
        self.observe_as(key, seen, now_ns)
    }

    /// [`Conntrack::observe`] returning only what a packet's own path
    /// needs ([`Tracked`]): the same table effects, but a hit that changes
    /// nothing (almost every packet) loads 3 of the entry's 9 words, and its
    /// address words only when the entry has rewrites.
    pub fn track(&self, key: &FlowKey, seen: Seen, now_ns: u64) -> Option<Tracked> {
        self.observe_as(key, seen, now_ns)
    }

    /// [`Conntrack::observe`] decoding the entry as `T`. The lock-free read
    /// takes the state, direction and last seen with `T`, so the hit that
    /// changes nothing is one read; a packet that changes the state or
    /// refreshes last seen (at most once a second per flow) reads the whole
    /// entry again and writes under the locks ([`Conntrack::update_flow`]).
    #[inline]
    fn observe_as<T: Decode>(&self, key: &FlowKey, seen: Seen, now_ns: u64) -> Option<T> {
        let words = key.to_words();
        let location = self.table.locate(&words);
        let value = self.table.read_with(location, &words, T::decode)?;
        let (state, direction, last_seen_ns) =
            (value.state(), value.direction(), value.last_seen_ns());
        if now_ns >= self.timeouts.expiry_ns(key.protocol, state, last_seen_ns) {
            return None;
        }
        let fresh = now_ns < last_seen_ns.saturating_add(REFRESH_NS);
        if fresh && !changes_flow(state, direction, seen) {
            return Some(value);
        }
        let entry = self.lookup(key, now_ns)?;
        self.update_flow(key, &entry, seen, now_ns).map(T::from)
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
            let locks = self.lock_flow(location, partner_location);
            let (guard, slot) = locks.find(location, &key_words)?;
            let mut entry = CtEntry::from_words(&guard.value(slot));
            if !self.is_live(key, &entry, now_ns) {
                return None;
            }
            if entry.rewrites != rewrites {
                rewrites = entry.rewrites;
                continue;
            }
            if reopens(entry.state, entry.direction, seen) {
                self.remove_at(&locks, guard, slot);
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
            if let Some((partner_guard, partner_slot)) =
                self.verified_partner(&locks, key, &partner)
            {
                Self::store_state(partner_guard, partner_slot, &entry);
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

    /// Locks both buckets of `key` and both of `partner`.
    fn lock_flow(&self, key: Location, partner: Location) -> Locks<'_> {
        let [key_first, key_second] = key.buckets;
        let [partner_first, partner_second] = partner.buckets;
        self.table
            .lock_set([key_first, key_second, partner_first, partner_second])
    }

    /// The slot holding `partner` in `guard`'s bucket if that entry's own
    /// partner is `key` (so it belongs to the same flow).
    fn verified_partner_in(
        &self,
        guard: &Guard<'_>,
        key: &FlowKey,
        partner: &FlowKey,
    ) -> Option<usize> {
        let words = partner.to_words();
        let location = self.table.locate(&words);
        if !location.buckets.contains(&guard.bucket()) {
            return None;
        }
        let slot = guard.find(location, &words)?;
        let entry = CtEntry::from_words(&guard.value(slot));
        (partner.partner(&entry.rewrites) == *key).then_some(slot)
    }

    /// Where `partner` is in `locks` if that entry's own partner is `key`.
    fn verified_partner<'l, 't>(
        &self,
        locks: &'l Locks<'t>,
        key: &FlowKey,
        partner: &FlowKey,
    ) -> Option<(&'l Guard<'t>, usize)> {
        let location = self.table.locate(&partner.to_words());
        location.distinct().find_map(|bucket| {
            let guard = locks.get(bucket)?;
            Some((guard, self.verified_partner_in(guard, key, partner)?))
        })
    }

    /// Removes the entry at `slot` of `guard` and its verified partner, all
    /// their buckets being held by `locks`. Returns the entries removed.
    fn remove_at(&self, locks: &Locks<'_>, guard: &Guard<'_>, slot: usize) -> u64 {
        if guard.tag(slot) == 0 {
            return 0;
        }
        let Slot { key, entry } = Self::slot(guard, slot);
        let partner = key.partner(&entry.rewrites);
        let mut removed = 0;
        if let Some((partner_guard, partner_slot)) = self.verified_partner(locks, &key, &partner) {
            partner_guard.clear(partner_slot);
            removed += 1;
        }
        guard.clear(slot);
        removed += 1;
        self.entries.fetch_sub(removed, Ordering::Relaxed);
        removed
    }

    /// Inserts both entries of a new flow, or neither. `reply` must be the
    /// reverse of `original` after `original_entry.rewrites`. Each entry goes
    /// to the emptier of its key's two buckets. When both are full: an
    /// expired flow there is reclaimed, else one entry there is moved to its
    /// own other bucket if that has room, else the least recently seen
    /// non-established flow of the two buckets is evicted (both of its
    /// entries).
    ///
    /// The original entry's `last_seen_ns` is taken as the current time
    /// (liveness of what is already there is judged against it); the reply
    /// entry gets the original's state and last seen, and each entry the
    /// direction of its argument position.
    ///
    /// Established TCP flows are never evicted: cutting one mid-stream breaks
    /// a working connection (its next packet would find no translation),
    /// while a refused new flow is one connection attempt the client retries.
    /// When both buckets of a key hold only live established flows, none of
    /// which can move, the insert fails with `Full`. A move or eviction made
    /// for the original key stands even if the reply key then finds no room.
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
        let locks = self.lock_flow(original_location, reply_location);
        let find = |location, words| {
            locks
                .find(location, words)
                .map(|(guard, slot)| (guard.bucket(), slot))
        };
        let original_existing = find(original_location, &original_words);
        let reply_existing = find(reply_location, &reply_words);
        for (bucket, slot) in [original_existing, reply_existing].into_iter().flatten() {
            if let Some(guard) = locks.get(bucket) {
                let Slot { key, entry } = Self::slot(guard, slot);
                if self.is_live(&key, &entry, now_ns) {
                    return Err(InsertError::Exists);
                }
            }
        }

        let original_place =
            self.make_room(&locks, original_location, original_existing, None, now_ns)?;
        // The original's room may have reclaimed the reply key's old entry
        // (it was that flow's partner): look again.
        let reply_existing = find(reply_location, &reply_words);
        let reply_place = self.make_room(
            &locks,
            reply_location,
            reply_existing,
            Some(original_place),
            now_ns,
        )?;

        let (Some(original_guard), Some(reply_guard)) =
            (locks.get(original_place.0), locks.get(reply_place.0))
        else {
            return Err(InsertError::Full);
        };
        original_guard.write(
            original_place.1,
            original_location.tag,
            &original_words,
            &original_entry.to_words(),
        );
        reply_guard.write(
            reply_place.1,
            reply_location.tag,
            &reply_words,
            &reply_entry.to_words(),
        );
        self.entries.fetch_add(2, Ordering::Relaxed);
        Ok(())
    }

    /// An empty slot in one of `location`'s buckets (not `exclude`), made by
    /// reclaiming `existing` (an expired entry with the key being inserted),
    /// else taking a free slot of the emptier bucket, else reclaiming an
    /// expired flow, else moving an entry to its other bucket, else evicting
    /// the least recently seen live flow that is not established TCP.
    fn make_room(
        &self,
        locks: &Locks<'_>,
        location: Location,
        existing: Option<Place>,
        exclude: Option<Place>,
        now_ns: u64,
    ) -> Result<Place, InsertError> {
        if let Some((bucket, slot)) = existing {
            if let Some(guard) = locks.get(bucket) {
                self.reclaim(locks, guard, slot, true);
                self.expired.fetch_add(1, Ordering::Relaxed);
                return Ok((bucket, slot));
            }
        }
        let [first, second] = location.buckets;
        let guards = [
            locks.get(first),
            locks.get(second).filter(|_| second != first),
        ];
        let guards = || guards.iter().flatten().copied();
        let usable = |guard: &Guard<'_>, slot: usize| Some((guard.bucket(), slot)) != exclude;
        // Occupied slots, the reserved one counting as occupied.
        let load = |guard: &Guard<'_>| {
            guard.occupied() + usize::from(exclude.is_some_and(|(b, _)| b == guard.bucket()))
        };
        let free = guards()
            .filter_map(|guard| {
                let slot = (0..SLOTS).find(|&slot| usable(guard, slot) && guard.tag(slot) == 0)?;
                Some((guard, slot))
            })
            .min_by_key(|(guard, _)| load(guard));
        if let Some((guard, slot)) = free {
            return Ok((guard.bucket(), slot));
        }
        let occupied = || {
            guards().flat_map(move |guard| {
                (0..SLOTS)
                    .filter(move |&slot| usable(guard, slot) && guard.tag(slot) != 0)
                    .map(move |slot| (guard, slot))
            })
        };
        if let Some((guard, slot)) = occupied().find(|&(guard, slot)| {
            let Slot { key, entry } = Self::slot(guard, slot);
            !self.is_live(&key, &entry, now_ns)
        }) {
            self.reclaim(locks, guard, slot, true);
            self.expired.fetch_add(1, Ordering::Relaxed);
            return Ok((guard.bucket(), slot));
        }
        if let Some((guard, slot)) =
            occupied().find(|&(guard, slot)| self.move_to_other_bucket(locks, guard, slot, exclude))
        {
            return Ok((guard.bucket(), slot));
        }
        // Victims in order of last seen; one whose partner's bucket is busy
        // (held by another writer) is passed over.
        let mut tried = [0u32; 2];
        loop {
            let victim = occupied()
                .filter(|&(guard, slot)| {
                    tried[usize::from(guard.bucket() != first)] & 1 << slot == 0
                })
                .map(|(guard, slot)| (guard, slot, Self::slot(guard, slot).entry))
                .filter(|(_, _, entry)| entry.state != FlowState::Tcp(TcpState::Established))
                .min_by_key(|(_, _, entry)| entry.last_seen_ns);
            let Some((guard, slot, _)) = victim else {
                return Err(InsertError::Full);
            };
            tried[usize::from(guard.bucket() != first)] |= 1 << slot;
            if self.reclaim(locks, guard, slot, false) {
                self.evictions.fetch_add(1, Ordering::Relaxed);
                return Ok((guard.bucket(), slot));
            }
        }
    }

    /// Moves the entry at `slot` of `guard` to its key's other bucket if
    /// that has a free slot (not `exclude`); true if moved. The other bucket
    /// is one of `locks` or taken with `try_lock` (a busy one is passed
    /// over), so both buckets of the moved key are held: no other writer can
    /// be changing it, and readers find it in one of them throughout (see
    /// [`SeqTable::read`]). The entry is copied unchanged, so its flow's
    /// partner links still hold.
    fn move_to_other_bucket(
        &self,
        locks: &Locks<'_>,
        guard: &Guard<'_>,
        slot: usize,
        exclude: Option<Place>,
    ) -> bool {
        let key = guard.key(slot);
        let location = self.table.locate(&key);
        let other = location.other(guard.bucket());
        if other == guard.bucket() {
            return false;
        }
        let taken;
        let target = match locks.get(other) {
            Some(held) => held,
            None => {
                taken = self.table.try_lock(other);
                match taken.as_ref() {
                    Some(target) => target,
                    None => return false,
                }
            }
        };
        let Some(free) =
            (0..SLOTS).find(|&free| target.tag(free) == 0 && Some((other, free)) != exclude)
        else {
            return false;
        };
        target.write(free, location.tag, &key, &guard.value(slot));
        guard.clear(slot);
        true
    }

    /// Removes the entry at `slot` of `guard` (held by `locks`) and its
    /// verified partner. The partner's buckets are in `locks` or taken with
    /// `try_lock` (never waiting while holding a lock set). When one of them
    /// is busy and the partner was not found in the other: with
    /// `partner_optional` (an expired flow) the entry alone goes and its
    /// expired partner stays for the garbage collector; without it nothing
    /// is removed and false is returned.
    fn reclaim(
        &self,
        locks: &Locks<'_>,
        guard: &Guard<'_>,
        slot: usize,
        partner_optional: bool,
    ) -> bool {
        if guard.tag(slot) == 0 {
            return true;
        }
        let Slot { key, entry } = Self::slot(guard, slot);
        let partner = key.partner(&entry.rewrites);
        let [first, second] = self.table.locate(&partner.to_words()).buckets;
        let take = |bucket: usize| {
            locks
                .get(bucket)
                .is_none()
                .then(|| self.table.try_lock(bucket))
                .flatten()
        };
        let taken_first = take(first);
        let taken_second = if second != first { take(second) } else { None };
        let mut busy = false;
        let mut found = None;
        for (bucket, taken) in [(first, &taken_first), (second, &taken_second)] {
            match locks.get(bucket).or(taken.as_ref()) {
                Some(partner_guard) => {
                    if let Some(partner_slot) =
                        self.verified_partner_in(partner_guard, &key, &partner)
                    {
                        found = Some((partner_guard, partner_slot));
                        break;
                    }
                }
                None => busy = true,
            }
        }
        let removed = match found {
            Some((partner_guard, partner_slot)) => {
                partner_guard.clear(partner_slot);
                2
            }
            None if busy && !partner_optional => return false,
            None => 1,
        };
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

    /// Records `word` as the flow's policy verdict cache ([`CtEntry::policy`]):
    /// the policy revision the flow was allowed at, written into both of its
    /// entries under the flow's locks (so either direction reads it). `key`
    /// is either direction. False when the flow is not tracked, or was
    /// replaced meanwhile by a flow with other rewrites (then that flow
    /// keeps its own word). Liveness is not checked (no clock here): an
    /// expired flow's word is harmless, nothing reads it.
    pub fn set_policy(&self, key: &FlowKey, word: u32) -> bool {
        let words = key.to_words();
        let location = self.table.locate(&words);
        let Some(value) = self.table.read(location, &words) else {
            return false;
        };
        let entry = CtEntry::from_words(&value);
        let partner = key.partner(&entry.rewrites);
        let locks = self.lock_flow(location, self.table.locate(&partner.to_words()));
        let Some((guard, slot)) = locks.find(location, &words) else {
            return false;
        };
        if CtEntry::from_words(&guard.value(slot)).rewrites != entry.rewrites {
            return false;
        }
        guard.write_value_word(slot, POLICY_WORD, u64::from(word));
        if let Some((partner_guard, partner_slot)) = self.verified_partner(&locks, key, &partner) {
            partner_guard.write_value_word(partner_slot, POLICY_WORD, u64::from(word));
        }
        true
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
        let partner_location = self.table.locate(&partner.to_words());
        let locks = self.lock_flow(location, partner_location);
        let Some((guard, slot)) = locks.find(location, &words) else {
            return false;
        };
        let current = CtEntry::from_words(&guard.value(slot));
        // The entry may have been replaced between the read and the locks by
        // a new flow with other rewrites: its partner is elsewhere then.
        if current.rewrites != entry.rewrites || !check(&current) {
            return false;
        }
        self.remove_at(&locks, guard, slot) > 0
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
    ///
    /// One pass over the buckets: an entry moved by a concurrent insert
    /// (only when both of that insert's buckets are full) from a bucket not
    /// yet visited to one already visited is missed by this pass, as is any
    /// flow inserted during it.
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
    /// Not a snapshot: an entry moved between buckets during the pass can be
    /// listed twice or not at all.
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

#[cfg(test)]
mod tests {
    use super::*;

    /// `set_policy` writes the word into both entries of the flow, from
    /// either direction, and leaves everything else as it was; the hit path
    /// ([`Conntrack::track`]) reads it back.
    #[test]
    fn set_policy_updates_both_entries_of_the_flow() {
        use crate::Rewrites;
        use std::net::SocketAddr;
        let ct = Conntrack::new(CtConfig {
            capacity: 1024,
            ..CtConfig::default()
        });
        let original = FlowKey {
            src: "10.0.0.1".parse().unwrap(),
            dst: "10.96.0.10".parse().unwrap(),
            src_port: 40000,
            dst_port: 80,
            protocol: 6,
        };
        let backend: SocketAddr = "10.0.1.5:8080".parse().unwrap();
        let rewrites = Rewrites {
            src: None,
            dst: Some(backend),
        };
        let reply = original.partner(&rewrites);
        let entry = CtEntry {
            direction: Direction::Original,
            rewrites,
            state: FlowState::Tcp(TcpState::Established),
            service_id: 3,
            backend_id: 4,
            flags: 1,
            policy: 7,
            created_ns: 5,
            last_seen_ns: 5,
        };
        let reply_entry = CtEntry {
            direction: Direction::Reply,
            rewrites: Rewrites {
                src: Some(SocketAddr::new(original.dst, original.dst_port)),
                dst: None,
            },
            ..entry
        };
        ct.insert_flow(&original, entry, &reply, reply_entry)
            .unwrap();
        let seen = Seen { tcp_flags: 0x10 };
        assert_eq!(ct.track(&original, seen, 6).unwrap().policy(), 7);
        assert!(ct.set_policy(&original, 9));
        assert_eq!(ct.track(&original, seen, 6).unwrap().policy(), 9);
        assert_eq!(ct.track(&reply, seen, 6).unwrap().policy(), 9);
        assert!(ct.set_policy(&reply, 11));
        let after = ct.lookup(&original, 6).unwrap();
        assert_eq!(
            after,
            CtEntry {
                policy: 11,
                ..entry
            }
        );
        assert_eq!(ct.lookup(&reply, 6).unwrap().policy, 11);
        let absent = FlowKey {
            src_port: 1,
            ..original
        };
        assert!(!ct.set_policy(&absent, 1));
        assert!(ct.remove_flow(&original));
        assert!(!ct.set_policy(&reply, 12));
    }

    /// The per-packet shortcut agrees with the state machine for every
    /// state, direction and TCP flags byte.
    #[test]
    fn changes_flow_is_next_state_differs_or_reopens() {
        let states = [
            FlowState::Unreplied,
            FlowState::Replied,
            FlowState::Tcp(TcpState::SynSent),
            FlowState::Tcp(TcpState::SynRecv),
            FlowState::Tcp(TcpState::Established),
            FlowState::Tcp(TcpState::FinWait),
            FlowState::Tcp(TcpState::CloseWait),
            FlowState::Tcp(TcpState::LastAck),
            FlowState::Tcp(TcpState::TimeWait),
            FlowState::Tcp(TcpState::Close),
        ];
        for state in states {
            for direction in [Direction::Original, Direction::Reply] {
                for tcp_flags in 0..=u8::MAX {
                    let seen = Seen { tcp_flags };
                    assert_eq!(
                        changes_flow(state, direction, seen),
                        next_flow_state(state, direction, seen) != state
                            || reopens(state, direction, seen),
                        "{state:?} {direction:?} {tcp_flags:#x}"
                    );
                }
            }
        }
    }
}
