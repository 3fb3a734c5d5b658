//! Conntrack lookup and insert with 1M flows tracked (2M entries in a table
//! of 4Mi entry slots), random keys; std HashMap lookup at the same size as
//! the baseline in the same run.
//!
//! `cargo bench -p sluice-conntrack --bench conntrack -- --warm-up-time 1 --measurement-time 3`

use std::collections::HashMap;
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};

use criterion::{criterion_group, criterion_main, Criterion};
use sluice_conntrack::{
    Conntrack, CtConfig, CtEntry, Direction, FlowKey, FlowState, Rewrites, TcpState, Timeouts,
};

const FLOWS: u32 = 1 << 20;
const CAPACITY: usize = 4 << 20;

fn key(i: u32) -> FlowKey {
    FlowKey {
        src: IpAddr::V4(Ipv4Addr::from(0x0a00_0000 | (i >> 6))),
        dst: IpAddr::V4(Ipv4Addr::new(10, 96, 0, 1)),
        src_port: 1024 + (i & 63) as u16,
        dst_port: 80,
        protocol: 6,
    }
}

fn entry(direction: Direction) -> CtEntry {
    CtEntry {
        direction,
        rewrites: Rewrites::default(),
        state: FlowState::Tcp(TcpState::Established),
        service_id: 1,
        backend_id: 2,
        flags: 0,
        policy: 0,
        created_ns: 1,
        last_seen_ns: 1,
    }
}

/// A fixed pseudo-random walk over flow indexes (no allocation per step).
fn next(i: &mut u64) -> u32 {
    *i = i
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (*i >> 33) as u32 % FLOWS
}

fn bench(c: &mut Criterion) {
    let ct = Conntrack::new(CtConfig {
        capacity: CAPACITY,
        timeouts: Timeouts::default(),
    });
    // Established flows are never evicted: a key whose two buckets are full
    // of them (none movable) is refused (counted and printed below).
    for i in 0..FLOWS {
        let k = key(i);
        let _ = ct.insert_flow(
            &k,
            entry(Direction::Original),
            &k.reversed(),
            entry(Direction::Reply),
        );
    }
    let stats = ct.stats();
    eprintln!(
        "conntrack: {} flows offered, {} refused (full buckets), {} entries of {} slots, {} evictions; {} bytes per entry, {} MiB here, {} MiB at the default capacity",
        FLOWS,
        stats.insert_failures,
        stats.entries,
        stats.capacity,
        stats.evictions,
        Conntrack::bytes_per_entry(),
        (stats.capacity as usize * Conntrack::bytes_per_entry()) >> 20,
        (sluice_conntrack::DEFAULT_CAPACITY * Conntrack::bytes_per_entry()) >> 20,
    );
    let mut map: HashMap<FlowKey, CtEntry> = HashMap::with_capacity(2 * FLOWS as usize);
    for i in 0..FLOWS {
        let k = key(i);
        map.insert(k, entry(Direction::Original));
        map.insert(k.reversed(), entry(Direction::Reply));
    }

    let mut group = c.benchmark_group("conntrack_1M_flows");
    let mut rng = 1u64;
    group.bench_function("lookup_hit", |b| {
        b.iter(|| {
            let k = key(next(&mut rng));
            black_box(ct.lookup(black_box(&k), 2))
        })
    });
    let mut rng = 1u64;
    group.bench_function("lookup_miss", |b| {
        b.iter(|| {
            let mut k = key(next(&mut rng));
            k.dst_port = 81;
            black_box(ct.lookup(black_box(&k), 2))
        })
    });
    let mut rng = 1u64;
    group.bench_function("observe_hit", |b| {
        b.iter(|| {
            let k = key(next(&mut rng));
            black_box(ct.observe(black_box(&k), sluice_conntrack::Seen { tcp_flags: 0x10 }, 2))
        })
    });
    let mut rng = 1u64;
    group.bench_function("track_hit", |b| {
        b.iter(|| {
            let k = key(next(&mut rng));
            black_box(ct.track(black_box(&k), sluice_conntrack::Seen { tcp_flags: 0x10 }, 2))
        })
    });
    let mut rng = 1u64;
    group.bench_function("hashmap_lookup_hit_baseline", |b| {
        b.iter(|| {
            let k = key(next(&mut rng));
            black_box(map.get(black_box(&k)).copied())
        })
    });
    // Insert then remove a fresh flow (keeps the table at 1M flows).
    let mut n = 0u32;
    group.bench_function("insert_flow_and_remove", |b| {
        b.iter(|| {
            n = n.wrapping_add(1);
            let mut k = key(n % FLOWS);
            k.dst_port = 443;
            let result = ct.insert_flow(
                &k,
                entry(Direction::Original),
                &k.reversed(),
                entry(Direction::Reply),
            );
            ct.remove_flow(&k);
            black_box(result)
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
