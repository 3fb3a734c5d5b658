//! The steady-state batch loop allocates nothing: ~1000 `process` calls over
//! each fixture set under a counting global allocator, with the flow tables in
//! use (service DNAT and its reverse, masquerade, rejects, new and tracked
//! flows) and a policy (allowed, denied, DNS-refused; flows re-checked after
//! a policy revision change). The policy and service sets, and a DNS query
//! and its answer on an inspected flow, run through `process_observed`, so
//! noting tuples, policy rules and DNS messages is counted too.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};

use sluice_pipeline::fixtures;
use sluice_pipeline::fixtures::{dns_answer_message, dns_message, ethernet, udp, V4};
use sluice_pipeline::fixtures::{GATEWAY_MAC, POD_A, POD_B};
use sluice_pipeline::{process_observed, CtOutcome, Observation, Verdict};
use sluice_wire::ethertype;
use sluice_wire::ip_protocol::UDP;

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
    // Pod A's query for an allowed name and pod B's answer, on one flow.
    let (a, b) = (POD_A, POD_B);
    let query = V4::new(a.ipv4, b.ipv4, UDP, 64).packet(&udp(
        43000,
        53,
        &dns_message(9, 0x0100, "www.allowed.test"),
    ));
    let answer = V4::new(b.ipv4, a.ipv4, UDP, 64).packet(&udp(
        53,
        43000,
        &dns_answer_message(9, "www.allowed.test", &[([192, 0, 2, 1], 30)]),
    ));
    let dns = [
        (
            a.ifindex,
            ethernet(GATEWAY_MAC, a.mac, ethertype::IPV4, &query),
        ),
        (
            b.ifindex,
            ethernet(GATEWAY_MAC, b.mac, ethertype::IPV4, &answer),
        ),
    ];
    let mut policy_drops = 0usize;
    let mut chunk = vec![0u8; 4096];
    let mut rejected = 0usize;
    let mut forwarded = 0usize;
    let mut observation = Observation::default();
    // What the observed runs noted: new flows, translations, policy, DNS.
    let (mut new, mut translated, mut policy_notes, mut dns_notes) = (0, 0, 0, 0);
    let mut dns_answers = 0usize;
    let mut tally = |o: &Observation| {
        new += usize::from(o.ct == CtOutcome::New);
        translated += usize::from(o.translated.is_some());
        policy_notes += usize::from(o.policy.is_some());
        dns_notes += usize::from(o.dns.is_some());
    };

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
        let verdict = f.run_observed(&service_tables, &flows, &mut chunk, i, &mut observation);
        tally(&observation);
        match verdict {
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
        let verdict = f.run_observed(tables, &flows, &mut chunk, i, &mut observation);
        tally(&observation);
        match verdict {
            Verdict::Forward { len, .. } => forwarded += len,
            Verdict::Reject { .. } => rejected += 1,
            Verdict::PolicyDrop { .. } => policy_drops += 1,
            Verdict::Drop(_) => {}
        }
        let (ingress, frame) = &dns[(i as usize) % dns.len()];
        chunk[..frame.len()].copy_from_slice(frame);
        observation.clear();
        let verdict = process_observed(
            &mut chunk,
            frame.len(),
            *ingress,
            &policy_tables,
            &flows,
            i,
            &mut observation,
        );
        tally(&observation);
        if let Verdict::Forward { len, .. } = verdict {
            forwarded += len;
        }
        dns_answers += usize::from(observation.dns.is_some_and(|d| d.address_count == 1));
    }
    counting(false);

    assert!(forwarded > 0);
    assert!(rejected > 0);
    assert!(policy_drops > 0);
    assert!(flows.conntrack.stats().entries > 0, "flows were tracked");
    assert!(new > 0 && translated > 0 && policy_notes > 0 && dns_notes > 0);
    assert!(dns_answers > 0, "answers were noted");
    assert_eq!(ALLOCATIONS.load(Ordering::Relaxed), 0);
}
