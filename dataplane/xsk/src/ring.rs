//! The four single-producer/single-consumer rings an AF_XDP socket shares with the kernel.
//!
//! One side owns the producer index, the other the consumer index. Each side keeps a
//! cached copy of the other's index and reloads it only when the cache runs out, so the
//! steady state touches one shared cache line per batch. Ordering follows the kernel's
//! `net/xdp/xsk_queue.h` (see the comment on each atomic operation for its partner).
//!
//! The raw pointers are built once, in [`RingLayout::new`]; everything above that is
//! safe code, and the tests below run producer/consumer pairs over plain memory.

use std::marker::PhantomData;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::sys::RingOffsets;

/// `struct xdp_desc`: one RX or TX descriptor.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C)]
pub(crate) struct XdpDesc {
    /// UMEM offset of the first packet byte.
    pub(crate) addr: u64,
    /// Packet length.
    pub(crate) len: u32,
    /// `XDP_PKT_CONTD` etc.; always 0 here (no multi-buffer).
    pub(crate) options: u32,
}

/// Set by the kernel in a ring's `flags` when it needs a syscall to make progress.
const NEED_WAKEUP: u32 = 1; // XDP_RING_NEED_WAKEUP

/// Where one ring's indices and slots live.
#[derive(Debug)]
pub(crate) struct RingLayout<T> {
    producer: NonNull<AtomicU32>,
    consumer: NonNull<AtomicU32>,
    flags: NonNull<AtomicU32>,
    slots: NonNull<T>,
    mask: u32,
    _slots: PhantomData<T>,
}

// SAFETY: the layout is a set of addresses into memory that has no thread affinity (a
// ring mapping); the `Producer`/`Consumer` wrappers are not Clone and take `&mut self`
// for every write, so moving one to another thread moves the only user-side accessor.
unsafe impl<T: Send> Send for RingLayout<T> {}

impl<T: Copy> RingLayout<T> {
    /// # Safety
    ///
    /// `base` must point to memory that stays valid (mapped, not freed) for as long as
    /// the returned layout and anything built from it is used, containing at
    /// `offsets.producer`, `offsets.consumer` and `offsets.flags` a 4-byte-aligned `u32`
    /// each, and at `offsets.desc` an array of `size` `T`s aligned for `T`. `size` must
    /// be a power of two. Apart from one peer (the kernel, or a test's other side), no
    /// one else may access the ring, and at most one user-side `Producer` or `Consumer`
    /// may be built from this memory.
    pub(crate) unsafe fn new(base: NonNull<u8>, offsets: RingOffsets, size: u32) -> Self {
        debug_assert!(size.is_power_of_two());
        let at = |offset: usize| {
            // SAFETY: the caller guarantees every offset lies inside the mapping.
            unsafe { base.add(offset) }
        };
        let layout = Self {
            producer: at(offsets.producer).cast(),
            consumer: at(offsets.consumer).cast(),
            flags: at(offsets.flags).cast(),
            slots: at(offsets.desc).cast(),
            mask: size - 1,
            _slots: PhantomData,
        };
        debug_assert!(
            layout.producer.as_ptr().is_aligned() && layout.consumer.as_ptr().is_aligned()
        );
        debug_assert!(layout.slots.as_ptr().is_aligned());
        layout
    }

    fn size(&self) -> u32 {
        self.mask + 1
    }

    fn producer(&self) -> &AtomicU32 {
        // SAFETY: valid, aligned and alive per `new`'s contract; shared with the peer only
        // through atomic operations.
        unsafe { self.producer.as_ref() }
    }

    fn consumer(&self) -> &AtomicU32 {
        // SAFETY: as for `producer`.
        unsafe { self.consumer.as_ref() }
    }

    fn flags(&self) -> &AtomicU32 {
        // SAFETY: as for `producer`.
        unsafe { self.flags.as_ref() }
    }

    fn write(&mut self, index: u32, value: T) {
        // SAFETY: `index & mask < size`, so the slot is inside the array `new` was given.
        // Callers only write slots between the published producer index and the
        // consumer index plus `size`, which the peer does not read until the Release
        // store of the producer index publishes them.
        unsafe { self.slots.add((index & self.mask) as usize).write(value) }
    }

    fn read(&self, index: u32) -> T {
        // SAFETY: in bounds as in `write`. Callers only read slots between the consumer
        // index and a producer index loaded with Acquire, which the peer has finished
        // writing and will not rewrite before our Release store of the consumer index.
        unsafe { self.slots.add((index & self.mask) as usize).read() }
    }
}

/// The producing side (user space owns fill and TX; the kernel owns RX and completion).
#[derive(Debug)]
pub(crate) struct Producer<T> {
    ring: RingLayout<T>,
    /// Next slot to write: published entries plus staged ones.
    head: u32,
    /// Producer index the peer can see.
    published: u32,
    /// Cached consumer index plus ring size: the first slot we may not write.
    limit: u32,
}

impl<T: Copy> Producer<T> {
    pub(crate) fn new(ring: RingLayout<T>) -> Self {
        // Relaxed: nothing has been published through this ring yet.
        let head = ring.producer().load(Ordering::Relaxed);
        let limit = ring
            .consumer()
            .load(Ordering::Relaxed)
            .wrapping_add(ring.size());
        Self {
            ring,
            head,
            published: head,
            limit,
        }
    }

    /// Slots free for staging, refreshing the cached consumer index.
    pub(crate) fn free(&mut self) -> u32 {
        // Acquire: pairs with the kernel's smp_store_release of `consumer`
        // (xskq_cons_release / __xskq_cons_release), so its reads of the slots it gave
        // back are finished before we overwrite them.
        self.limit = self
            .ring
            .consumer()
            .load(Ordering::Acquire)
            .wrapping_add(self.ring.size());
        self.limit.wrapping_sub(self.head)
    }

    /// Writes `value` into the next slot without publishing it; gives it back when full.
    pub(crate) fn stage(&mut self, value: T) -> Result<(), T> {
        if self.limit == self.head && self.free() == 0 {
            return Err(value);
        }
        self.ring.write(self.head, value);
        self.head = self.head.wrapping_add(1);
        Ok(())
    }

    /// Entries staged but not yet visible to the peer.
    pub(crate) fn staged(&self) -> u32 {
        self.head.wrapping_sub(self.published)
    }

    /// Makes every staged entry visible with one Release store. Returns how many.
    pub(crate) fn publish(&mut self) -> u32 {
        let n = self.staged();
        if n > 0 {
            // Release: pairs with the kernel's smp_load_acquire of `producer`
            // (xskq_cons_peek -> __xskq_cons_peek), so the slot writes in `stage` are
            // visible before the index that covers them.
            self.ring.producer().store(self.head, Ordering::Release);
            self.published = self.head;
        }
        n
    }

    /// Published entries the peer has not consumed yet.
    pub(crate) fn in_flight(&self) -> u32 {
        // Relaxed: a count only; slot reuse goes through `free`, which uses Acquire.
        self.published
            .wrapping_sub(self.ring.consumer().load(Ordering::Relaxed))
    }

    /// Whether the kernel asked for a syscall (`XDP_RING_NEED_WAKEUP`).
    pub(crate) fn needs_wakeup(&self) -> bool {
        // Relaxed: the flag is a hint; the kernel re-checks the ring after setting it
        // (xsk_set_*_need_wakeup), so a stale read costs at most one spare syscall.
        self.ring.flags().load(Ordering::Relaxed) & NEED_WAKEUP != 0
    }
}

/// The consuming side (user space owns RX and completion).
#[derive(Debug)]
pub(crate) struct Consumer<T> {
    ring: RingLayout<T>,
    /// Next slot to read; also the consumer index once released.
    tail: u32,
    /// Cached producer index.
    cached_producer: u32,
}

impl<T: Copy> Consumer<T> {
    pub(crate) fn new(ring: RingLayout<T>) -> Self {
        // Relaxed: the peer has published nothing we will read before the first refresh.
        let tail = ring.consumer().load(Ordering::Relaxed);
        Self {
            ring,
            tail,
            cached_producer: tail,
        }
    }

    /// Entries ready to read, up to `max`; reloads the producer index when the cache is empty.
    pub(crate) fn available(&mut self, max: u32) -> u32 {
        let mut n = self.cached_producer.wrapping_sub(self.tail);
        if n == 0 {
            // Acquire: pairs with the kernel's smp_store_release of `producer`
            // (xskq_prod_submit*), so the slots it covers are fully written.
            self.cached_producer = self.ring.producer().load(Ordering::Acquire);
            n = self.cached_producer.wrapping_sub(self.tail);
        }
        n.min(max)
    }

    /// Reads up to `max` entries into `f`, then releases them with one Release store.
    pub(crate) fn consume(&mut self, max: u32, mut f: impl FnMut(T)) -> u32 {
        let n = self.available(max);
        if n == 0 {
            return 0;
        }
        for i in 0..n {
            f(self.ring.read(self.tail.wrapping_add(i)));
        }
        self.tail = self.tail.wrapping_add(n);
        // Release: pairs with the kernel's smp_load_acquire of `consumer`
        // (xskq_prod_nb_free / xskq_prod_reserve*), so our slot reads above finish before
        // it may reuse the slots.
        self.ring.consumer().store(self.tail, Ordering::Release);
        n
    }

    /// Whether the peer asked for a syscall (`XDP_RING_NEED_WAKEUP`).
    #[cfg(test)]
    pub(crate) fn needs_wakeup(&self) -> bool {
        // Relaxed: see `Producer::needs_wakeup`.
        self.ring.flags().load(Ordering::Relaxed) & NEED_WAKEUP != 0
    }
}

/// Ring memory in the heap, laid out like a kernel ring mapping. Test-only: the "kernel"
/// side of the simulated port and the ring tests below use it.
#[cfg(test)]
pub(crate) mod heap {
    use super::*;
    use std::sync::Arc;

    /// Producer, consumer and flags on separate cache lines, then the slots.
    pub(crate) const OFFSETS: RingOffsets = RingOffsets {
        producer: 0,
        consumer: 64,
        flags: 128,
        desc: 192,
    };

    /// Owns the memory of one heap ring; clones share it.
    #[derive(Debug, Clone)]
    pub(crate) struct HeapRing {
        mem: Arc<[AtomicU64Cell]>,
        pub(crate) size: u32,
    }

    /// One 8-byte cell; atomics make shared-mutable access through `Arc` sound.
    #[derive(Debug, Default)]
    #[repr(transparent)]
    pub(crate) struct AtomicU64Cell(std::sync::atomic::AtomicU64);

    impl HeapRing {
        pub(crate) fn new<T>(size: u32) -> Self {
            assert!(std::mem::align_of::<T>() <= 8);
            let bytes = OFFSETS.desc + size as usize * std::mem::size_of::<T>();
            let mem: Arc<[AtomicU64Cell]> = (0..bytes.div_ceil(8))
                .map(|_| AtomicU64Cell::default())
                .collect();
            Self { mem, size }
        }

        /// A layout over this memory.
        ///
        /// # Safety
        ///
        /// The returned layout must not outlive `self` (or a clone), and at most one
        /// producer and one consumer may be built over the same memory.
        pub(crate) unsafe fn layout<T: Copy>(&self) -> RingLayout<T> {
            // From the whole slice, so the pointer may reach every cell.
            let base = NonNull::from(&*self.mem).cast::<u8>();
            // SAFETY: `new` sized the allocation for OFFSETS plus `size` slots of `T` with
            // 8-byte alignment; lifetime and exclusivity are the caller's contract.
            unsafe { RingLayout::new(base, OFFSETS, self.size) }
        }

        pub(crate) fn set_need_wakeup(&self, on: bool) {
            // SAFETY: the layout is used only for this store, while `self` keeps the memory.
            let layout = unsafe { self.layout::<u64>() };
            layout.flags().store(u32::from(on), Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::heap::HeapRing;
    use super::*;

    fn pair(size: u32) -> (HeapRing, Producer<u64>, Consumer<u64>) {
        let mem = HeapRing::new::<u64>(size);
        // SAFETY: `mem` is returned alongside and outlives both; one producer, one consumer.
        let (p, c) = unsafe { (Producer::new(mem.layout()), Consumer::new(mem.layout())) };
        (mem, p, c)
    }

    #[test]
    fn staged_entries_are_invisible_until_published() {
        let (_mem, mut p, mut c) = pair(8);
        p.stage(1).unwrap();
        p.stage(2).unwrap();
        assert_eq!(c.available(8), 0);
        assert_eq!(p.publish(), 2);
        let mut got = vec![];
        assert_eq!(c.consume(8, |v| got.push(v)), 2);
        assert_eq!(got, [1, 2]);
    }

    #[test]
    fn full_ring_gives_the_value_back_and_frees_after_consume() {
        let (_mem, mut p, mut c) = pair(4);
        for v in 0..4 {
            p.stage(v).unwrap();
        }
        assert_eq!(p.stage(9), Err(9));
        p.publish();
        assert_eq!(p.in_flight(), 4);
        assert_eq!(c.consume(3, |_| {}), 3);
        assert_eq!(p.in_flight(), 1);
        p.stage(9).unwrap();
        assert_eq!(p.free(), 2);
    }

    #[test]
    fn indices_wrap_around_u32() {
        let mem = HeapRing::new::<u64>(4);
        // SAFETY: as in `pair`.
        let layout: RingLayout<u64> = unsafe { mem.layout() };
        layout.producer().store(u32::MAX - 1, Ordering::Relaxed);
        layout.consumer().store(u32::MAX - 1, Ordering::Relaxed);
        // SAFETY: as in `pair`.
        let (mut p, mut c): (Producer<u64>, Consumer<u64>) =
            unsafe { (Producer::new(mem.layout()), Consumer::new(mem.layout())) };
        let mut next = 0;
        let mut expect = 0;
        for _ in 0..10 {
            while p.stage(next).is_ok() {
                next += 1;
            }
            p.publish();
            c.consume(u32::MAX, |v| {
                assert_eq!(v, expect);
                expect += 1;
            });
        }
        assert_eq!(expect, 40);
    }

    #[test]
    fn threads_pass_every_value_in_order() {
        let mem = HeapRing::new::<u64>(64);
        // SAFETY: `mem` outlives both threads (joined below); one producer, one consumer.
        let (mut p, mut c): (Producer<u64>, Consumer<u64>) =
            unsafe { (Producer::new(mem.layout()), Consumer::new(mem.layout())) };
        const N: u64 = 200_000;
        std::thread::scope(|s| {
            s.spawn(move || {
                let mut v = 0;
                while v < N {
                    while v < N && p.stage(v).is_ok() {
                        v += 1;
                    }
                    p.publish();
                }
            });
            s.spawn(move || {
                let mut expect = 0;
                while expect < N {
                    c.consume(16, |v| {
                        assert_eq!(v, expect);
                        expect += 1;
                    });
                }
            });
        });
        drop(mem);
    }

    #[test]
    fn need_wakeup_flag_is_read_from_the_ring() {
        let (mem, p, c) = pair(4);
        assert!(!p.needs_wakeup() && !c.needs_wakeup());
        mem.set_need_wakeup(true);
        assert!(p.needs_wakeup() && c.needs_wakeup());
    }
}
