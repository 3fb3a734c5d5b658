//! Service table costs: Maglev table fills, frontend lookups at scale against a
//! one-service baseline in the same run, and the rebuild after one changed
//! service with and without reusing the previous Maglev tables.
//!
//! `cargo bench -p sluice-tables --bench services -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use sluice_tables::{
    Backend, BackendState, Frontend, FrontendKind, L4Protocol, LbAlgorithm, LbConfig, MaglevTable,
    Service, ServiceTable, DEFAULT_MAGLEV_TABLE_SIZE,
};

const TCP: u8 = 6;

/// 10.0.0.0/8 address number `n`.
fn addr(base: u8, n: u32) -> IpAddr {
    let [_, b, c, d] = n.to_be_bytes();
    IpAddr::V4(Ipv4Addr::new(base, b, c, d))
}

fn service(id: u32, backends: u32, algorithm: LbAlgorithm) -> Service {
    Service {
        id,
        name: format!("bench/svc-{id}"),
        port_name: String::new(),
        protocol: L4Protocol::Tcp,
        frontends: vec![Frontend {
            kind: FrontendKind::ClusterIp,
            addr: addr(10, id),
            port: 80,
        }],
        backends: (0..backends)
            .map(|b| Backend {
                id: b + 1,
                addr: addr(11, id * backends + b),
                port: 8080,
                state: BackendState::Ready,
                local: false,
            })
            .collect(),
        algorithm,
        affinity_timeout_s: None,
        external_traffic_local: false,
        internal_traffic_local: false,
        source_ranges: Vec::new(),
    }
}

fn maglev_build(c: &mut Criterion) {
    let mut group = c.benchmark_group("maglev_build_m16381");
    for n in [100u32, 1000] {
        let backends: Vec<SocketAddr> =
            (0..n).map(|i| SocketAddr::new(addr(11, i), 8080)).collect();
        group.bench_with_input(BenchmarkId::from_parameter(n), &backends, |b, backends| {
            b.iter(|| {
                MaglevTable::build(black_box(backends), DEFAULT_MAGLEV_TABLE_SIZE, 0).unwrap()
            })
        });
    }
    group.finish();
}

/// Hits on frontends spread over the table, cycling through `probes` of them:
/// the 100k-service table against a 1-service table with the same loop.
fn lookup(c: &mut Criterion) {
    let mut group = c.benchmark_group("service_lookup_hit");
    for services in [1u32, 100_000] {
        let input: Vec<Service> = (0..services)
            .map(|id| service(id, 2, LbAlgorithm::Random))
            .collect();
        let table = ServiceTable::build(&input, &LbConfig::default()).unwrap();
        // A fixed pseudo-random walk over the frontends (Knuth's multiplicative hash).
        let probes: Vec<IpAddr> = (0..4096u32)
            .map(|i| addr(10, i.wrapping_mul(2_654_435_761) % services))
            .collect();
        group.bench_with_input(
            BenchmarkId::from_parameter(services),
            &probes,
            |b, probes| {
                let mut next = 0;
                b.iter(|| {
                    next = (next + 1) & (probes.len() - 1);
                    let hit = table.lookup(black_box(probes[next]), 80, TCP);
                    black_box(hit.map(|(entry, _)| entry.service.id))
                })
            },
        );
    }
    group.finish();
}

/// 10k Maglev services (10 backends each), then one service loses a backend.
fn rebuild(c: &mut Criterion) {
    let lb = LbConfig::default();
    let before: Vec<Service> = (0..10_000)
        .map(|id| service(id, 10, LbAlgorithm::Maglev))
        .collect();
    let previous = ServiceTable::build(&before, &lb).unwrap();
    let mut after = before;
    after[5000].backends.pop();

    let mut group = c.benchmark_group("rebuild_10k_maglev_services_one_changed");
    // Tables are dropped outside the timing: the engine frees the old
    // generation later, on the control thread.
    group.sample_size(10);
    group.bench_function("build_reusing", |b| {
        b.iter_with_large_drop(|| {
            ServiceTable::build_reusing(black_box(&after), &lb, &previous).unwrap()
        })
    });
    group.bench_function("build_from_scratch", |b| {
        b.iter_with_large_drop(|| ServiceTable::build(black_box(&after), &lb).unwrap())
    });
    group.finish();
}

criterion_group!(benches, maglev_build, lookup, rebuild);
criterion_main!(benches);
