//! Several writer threads inserting, observing and removing shared flows
//! while readers look them up: readers never see a torn entry (every entry's
//! words are derived from its key and checked), no flow is lost, and
//! concurrent state updates all take effect.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use common::*;
use sluice_conntrack::tcp_flags::{ACK, SYN};
use sluice_conntrack::{
    Conntrack, CtConfig, CtEntry, Direction, FlowKey, FlowState, Seen, TcpState, Timeouts,
};

/// A value derived from every field of a key, stored in the entry so a
/// reader can tell an entry assembled from two different writes.
fn stamp(key: &FlowKey) -> u32 {
    let words = format!("{key:?}");
    words.bytes().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

fn stamped_flow(i: u32, state: FlowState, now_ns: u64) -> (FlowKey, CtEntry, FlowKey, CtEntry) {
    let client = key(
        &format!("10.0.{}.{}", i / 200, i % 200 + 1),
        1000 + i as u16,
        "10.96.0.1",
        80,
        TCP,
    );
    let backend = Some(format!("10.0.1.{}:8080", i % 4 + 1).parse().unwrap());
    let (o, mut oe, r, mut re) = flow(client, backend, state, now_ns);
    oe.service_id = stamp(&o);
    oe.policy = !stamp(&o);
    oe.backend_id = i;
    re.service_id = stamp(&r);
    re.policy = !stamp(&r);
    re.backend_id = i;
    (o, oe, r, re)
}

fn check(key: &FlowKey, entry: &CtEntry) {
    assert_eq!(
        entry.service_id,
        stamp(key),
        "torn entry for {key:?}: {entry:?}"
    );
    assert_eq!(
        entry.policy,
        !stamp(key),
        "torn entry for {key:?}: {entry:?}"
    );
    match entry.direction {
        Direction::Original => {
            assert!(
                entry.rewrites.src.is_none() && entry.rewrites.dst.is_some(),
                "{entry:?}"
            );
            assert_eq!(key.partner(&entry.rewrites).src_port, 8080);
        }
        Direction::Reply => {
            assert_eq!(
                entry.rewrites.src,
                Some("10.96.0.1:80".parse().unwrap()),
                "{entry:?}"
            );
            assert!(entry.rewrites.dst.is_none());
        }
    }
}

/// Small table (collisions, evictions, Full) and heavy churn on shared keys.
#[test]
fn readers_never_see_torn_entries_under_churn() {
    let ct = Arc::new(Conntrack::new(CtConfig {
        capacity: 64,
        timeouts: Timeouts::default(),
    }));
    let flows: Arc<Vec<_>> = Arc::new(
        (0..48)
            .map(|i| stamped_flow(i, FlowState::Tcp(TcpState::SynSent), S))
            .collect(),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let mut readers = Vec::new();
    for r in 0..2 {
        let (ct, flows, stop) = (ct.clone(), flows.clone(), stop.clone());
        readers.push(std::thread::spawn(move || {
            let mut hits = 0u64;
            let mut i = r;
            while !stop.load(Ordering::Relaxed) {
                let (o, _, rk, _) = &flows[i % flows.len()];
                for k in [o, rk] {
                    if let Some(entry) = ct.lookup(k, 2 * S) {
                        check(k, &entry);
                        hits += 1;
                    }
                }
                i = i.wrapping_add(7);
            }
            hits
        }));
    }
    let writers: Vec<_> = (0..3)
        .map(|w| {
            let (ct, flows) = (ct.clone(), flows.clone());
            std::thread::spawn(move || {
                for n in 0..20_000usize {
                    let (o, oe, r, re) = flows[(n * 5 + w * 11) % flows.len()];
                    match n % 4 {
                        0 | 1 => {
                            let _ = ct.insert_flow(&o, oe, &r, re);
                        }
                        2 => {
                            let seen = Seen {
                                tcp_flags: if n % 3 == 0 { SYN | ACK } else { ACK },
                            };
                            let key = if n % 8 == 2 { r } else { o };
                            if let Some(entry) = ct.observe(&key, seen, S + n as u64 * S / 4) {
                                check(&key, &entry);
                            }
                        }
                        _ => {
                            ct.remove_flow(&o);
                        }
                    }
                }
            })
        })
        .collect();
    for writer in writers {
        writer.join().unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    let hits: u64 = readers.into_iter().map(|r| r.join().unwrap()).sum();
    assert!(hits > 0, "readers never found anything");
    // Whatever is left is whole: both entries or none, and counted right.
    let left = ct.entries(2 * S, &|_, _| true, usize::MAX);
    for (key, entry) in &left {
        check(key, entry);
        let partner = key.partner(&entry.rewrites);
        assert!(
            left.iter().any(|(k, _)| *k == partner),
            "half a flow left: {key:?}"
        );
    }
    assert_eq!(ct.stats().entries, left.len() as u64);
}

/// Big table: every inserted flow is found afterwards, and concurrent
/// observers of the same flows all see the handshake through.
#[test]
fn no_flow_is_lost_and_concurrent_updates_all_apply() {
    let ct = Arc::new(Conntrack::new(CtConfig {
        capacity: 1 << 17,
        timeouts: Timeouts::default(),
    }));
    let per_thread = 1500u32;
    let inserters: Vec<_> = (0..4u32)
        .map(|t| {
            let ct = ct.clone();
            std::thread::spawn(move || {
                for i in t * per_thread..(t + 1) * per_thread {
                    let (o, oe, r, re) = stamped_flow(i, FlowState::Tcp(TcpState::SynSent), S);
                    ct.insert_flow(&o, oe, &r, re).unwrap();
                }
            })
        })
        .collect();
    for inserter in inserters {
        inserter.join().unwrap();
    }
    let total = 4 * per_thread;
    // A table this sparse has no full bucket: nothing may have been evicted.
    assert_eq!(ct.stats().evictions, 0);
    assert_eq!(ct.stats().entries, 2 * u64::from(total));
    // SYN-ACK from the server side then ACK from the client, from several
    // threads at once on the same flows, with advancing clocks.
    let observers: Vec<_> = (0..4u64)
        .map(|t| {
            let ct = ct.clone();
            std::thread::spawn(move || {
                for i in 0..total {
                    let (o, _, r, _) = stamped_flow(i, FlowState::Unreplied, 0);
                    let now = 2 * S + t * S;
                    let entry = ct
                        .observe(
                            &r,
                            Seen {
                                tcp_flags: SYN | ACK,
                            },
                            now,
                        )
                        .unwrap();
                    check(&r, &entry);
                    let entry = ct.observe(&o, Seen { tcp_flags: ACK }, now + 1).unwrap();
                    check(&o, &entry);
                }
            })
        })
        .collect();
    for observer in observers {
        observer.join().unwrap();
    }
    for i in 0..total {
        let (o, _, r, _) = stamped_flow(i, FlowState::Unreplied, 0);
        let original = ct.lookup(&o, 10 * S).expect("flow lost");
        let reply = ct.lookup(&r, 10 * S).expect("reply lost");
        assert_eq!(
            original.state,
            FlowState::Tcp(TcpState::Established),
            "flow {i}"
        );
        assert_eq!(reply.state, original.state);
        assert_eq!(reply.last_seen_ns, original.last_seen_ns);
        // Last seen trails the latest packet (5 s + 1 ns) by less than the
        // one-second refresh interval, and never runs ahead of it.
        let latest = 5 * S + 1;
        assert!(
            original.last_seen_ns <= latest && original.last_seen_ns + S > latest,
            "flow {i}: {original:?}"
        );
    }
}
