//! The steady-state batch loop allocates nothing: ~1000 `process` calls over
//! each fixture set under a counting global allocator, with the flow tables in
//! use (service DNAT and its reverse, masquerade, rejects, new and tracked
//! flows) and a policy (allowed, denied, DNS-refused; flows re-checked after
//! a policy revision change).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};

use sluice_pipeline::fixtures;
use sluice_pipeline::Verdict;

struct Counting;

/// Allocations seen on a thread whose `COUNTING` is set. Relaxed is enough:
/// the counting thread is the one that reads the count. The flag is per thread
/// so that the test harness's own threads are not counted.
static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
}

fn counting(on: bool) {
    COUNTING.with(|c| c.set(on));
}

fn count() {
    if COUNTING.with(|c| c.get()) {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
    }
}

// The allocator has to be unsafe to implement; it only counts and delegates.
#[allow(unsafe_code)]
// SAFETY: every method forwards to `System` with the caller's arguments
// unchanged, so `System`'s guarantees hold.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: same layout contract as our caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System.alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: `ptr`/`layout` came from this allocator, which is `System`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn a_batch_of_process_calls_allocates_nothing() {
    // Setup allocates freely: tables, fixtures, the chunk.
    let tables = fixtures::tables();
    let all = fixtures::all();
    let uplink_tables = fixtures::uplink_tables();
    let uplink_all = fixtures::uplink_all();
    let service_tables = fixtures::service_tables();
    let service_all = fixtures::service_all();
    let policy_tables = fixtures::policy_tables();
    // The same policy at the next revision: every tracked flow is re-checked.
    let policy_next = fixtures::policy_tables_with(fixtures::policy_state(), 2);
    let policy_all = fixtures::policy_all();
    let flows = fixtures::flows();
    let mut policy_drops = 0usize;
    let mut chunk = vec![0u8; 4096];
    let mut rejected = 0usize;
    let mut forwarded = 0usize;

    // The counter sees allocations at all.
    counting(true);
    drop(std::hint::black_box(vec![1u8; 16]));
    counting(false);
    assert!(ALLOCATIONS.swap(0, Ordering::Relaxed) >= 1);

    counting(true);
    for i in 0..1000u64 {
        let f = &all[(i as usize) % all.len()];
        if let Verdict::Forward { len, .. } = f.run(&tables, &flows, &mut chunk, i) {
            forwarded += len;
        }
        let f = &uplink_all[(i as usize) % uplink_all.len()];
        if let Verdict::Forward { len, .. } = f.run(&uplink_tables, &flows, &mut chunk, i) {
            forwarded += len;
        }
        let f = &service_all[(i as usize) % service_all.len()];
        match f.run(&service_tables, &flows, &mut chunk, i) {
            Verdict::Forward { len, .. } => forwarded += len,
            Verdict::Reject { .. } => rejected += 1,
            Verdict::Drop(_) | Verdict::PolicyDrop { .. } => {}
        }
        let f = &policy_all[(i as usize) % policy_all.len()];
        let tables = if i < 500 {
            &policy_tables
        } else {
            &policy_next
        };
        match f.run(tables, &flows, &mut chunk, i) {
            Verdict::Forward { len, .. } => forwarded += len,
            Verdict::Reject { .. } => rejected += 1,
            Verdict::PolicyDrop { .. } => policy_drops += 1,
            Verdict::Drop(_) => {}
        }
    }
    counting(false);

    assert!(forwarded > 0);
    assert!(rejected > 0);
    assert!(policy_drops > 0);
    assert!(flows.conntrack.stats().entries > 0, "flows were tracked");
    assert_eq!(ALLOCATIONS.load(Ordering::Relaxed), 0);
}
