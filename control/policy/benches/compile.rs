//! Policy compile and lookup costs on the generated cluster of `sluice_policy::synthetic`
//! (1k identities, 100 endpoints on this node): compiling 1k and 10k rules, building the
//! engine's lookup index (`PolicyTables::build`) from the result, and one lookup that an
//! allow entry answers (hit) or that no entry answers (miss), both by endpoint name
//! (`lookup`, as `sluice policy trace` does) and by the endpoint's resolved tables
//! (`decide`, as the pipeline does). 1k rules is the baseline for the 10k ratios.
//!
//! `cargo bench -p sluice-policy --bench compile -- --warm-up-time 1 --measurement-time 5`

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use sluice_policy::compile::{compile, Compiled};
use sluice_policy::synthetic::synthetic_input;
use sluice_tables::{
    Action, Decision, Endpoint, EndpointTable, IpCache, MacAddr, Peer, PolicyDirection,
    PolicyQuery, PolicyState, PolicyTables,
};

const IDENTITIES: usize = 1_000;
const ENDPOINTS: usize = 100;
const SIZES: [usize; 2] = [1_000, 10_000];
const TCP: u8 = 6;

fn compiled(rules: usize) -> Compiled {
    let cluster = synthetic_input(rules, IDENTITIES, ENDPOINTS);
    let compiled = compile(&cluster.input());
    assert!(
        compiled.errors.is_empty(),
        "{rules} rules: {:?}",
        compiled.errors
    );
    let entries: usize = compiled.state.tables.iter().map(|t| t.entries.len()).sum();
    let json = serde_json::to_vec(&compiled.state).map_or(0, |j| j.len());
    eprintln!(
        "{rules} rules: {} endpoints listed, {} tables, {entries} entries, {} CIDR ipcache \
         entries, policy state {json} bytes of JSON",
        compiled.state.endpoints.len(),
        compiled.state.tables.len(),
        compiled.ipcache.len()
    );
    compiled
}

fn compile_rules(c: &mut Criterion) {
    let mut group = c.benchmark_group("compile_1k_identities_100_endpoints");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(10));
    for rules in SIZES {
        let cluster = synthetic_input(rules, IDENTITIES, ENDPOINTS);
        let input = cluster.input();
        group.bench_with_input(BenchmarkId::from_parameter(rules), &input, |b, input| {
            b.iter(|| compile(black_box(input)))
        });
    }
    group.finish();
}

fn build_tables(c: &mut Criterion) {
    let mut group = c.benchmark_group("policy_tables_build");
    for rules in SIZES {
        let state = compiled(rules).state;
        group.bench_with_input(BenchmarkId::from_parameter(rules), &state, |b, state| {
            b.iter(|| PolicyTables::build(black_box(state)).unwrap())
        });
    }
    group.finish();
}

/// A lookup to measure: an endpoint (its ingress table) and the query.
struct Probe {
    endpoint: String,
    query: PolicyQuery,
}

/// The listed endpoint with the most ingress entries, and in its table the middle
/// identity-peer allow entry (hit); for the miss, that peer on a port nothing allows,
/// else an identity no table names.
fn probes(state: &PolicyState, tables: &PolicyTables) -> (Probe, Probe) {
    let endpoint = state
        .endpoints
        .iter()
        .max_by_key(|e| state.tables[e.ingress as usize].entries.len())
        .expect("the generated rules select some endpoint");
    let table = &state.tables[endpoint.ingress as usize];
    let allows: Vec<_> = table
        .entries
        .iter()
        .filter(|e| e.action == Action::Allow && matches!(e.peer, Peer::Identity(_)))
        .collect();
    let entry = allows[allows.len() / 2];
    let Peer::Identity(peer) = entry.peer else {
        unreachable!("filtered on identity peers")
    };
    let query = |peer_identity: u32, protocol: u8, port: u16| PolicyQuery {
        peer_identity,
        peer_addr: IpAddr::V4(Ipv4Addr::new(10, 200, 9, 9)),
        protocol,
        port,
    };
    let hit = if entry.protocol == 0 {
        query(peer, TCP, 80)
    } else {
        query(peer, entry.protocol, entry.port_min)
    };
    let decide = |q: &PolicyQuery| {
        tables.lookup(&endpoint.endpoint, PolicyDirection::Ingress, q, &|_, _| {
            false
        })
    };
    assert!(
        matches!(decide(&hit), Decision::Allowed { .. }),
        "hit query {hit:?} decides {:?}",
        decide(&hit)
    );
    let miss = [query(peer, TCP, 1), query(999_999, TCP, 1)]
        .into_iter()
        .find(|q| matches!(decide(q), Decision::NoAllowRule { .. }))
        .expect("some query finds no allow rule");
    let probe = |query| Probe {
        endpoint: endpoint.endpoint.clone(),
        query,
    };
    (probe(hit), probe(miss))
}

/// One endpoint per listed name, with made-up interfaces and addresses, so that
/// [`PolicyTables::build_for`] resolves their tables as the engine's snapshot does.
fn endpoint_table(state: &PolicyState) -> (EndpointTable, Vec<IpAddr>) {
    let endpoints: Vec<Endpoint> = state
        .endpoints
        .iter()
        .enumerate()
        .map(|(i, e)| Endpoint {
            name: e.endpoint.clone(),
            ifindex: 1_000 + i as u32,
            ifname: format!("lxc{i}"),
            mac: MacAddr([2, 0, 0, 0, (i >> 8) as u8, i as u8]),
            ipv4: Some(Ipv4Addr::new(10, 250, (i >> 8) as u8, i as u8)),
            ipv6: None,
            identity: 0,
        })
        .collect();
    let addrs = endpoints
        .iter()
        .filter_map(|e| e.ipv4.map(IpAddr::V4))
        .collect();
    (EndpointTable::build(endpoints).unwrap(), addrs)
}

fn lookups(c: &mut Criterion) {
    let mut group = c.benchmark_group("policy_lookup");
    for rules in SIZES {
        let state = compiled(rules).state;
        let (endpoints, addrs) = endpoint_table(&state);
        let tables =
            PolicyTables::build_for(state.clone(), &endpoints, &IpCache::default()).unwrap();
        let (hit, miss) = probes(&state, &tables);
        let position = state
            .endpoints
            .iter()
            .position(|e| e.endpoint == hit.endpoint)
            .unwrap();
        let local = tables.local(addrs[position]).unwrap();
        for (name, probe) in [("hit", &hit), ("miss", &miss)] {
            group.bench_with_input(
                BenchmarkId::new(format!("lookup_{name}"), rules),
                probe,
                |b, p| {
                    b.iter(|| {
                        tables.lookup(
                            black_box(&p.endpoint),
                            PolicyDirection::Ingress,
                            black_box(&p.query),
                            &|_, _| false,
                        )
                    })
                },
            );
            group.bench_with_input(
                BenchmarkId::new(format!("decide_{name}"), rules),
                probe,
                |b, p| {
                    b.iter(|| {
                        tables.decide(
                            black_box(&local),
                            PolicyDirection::Ingress,
                            black_box(&p.query),
                            |_, _| false,
                        )
                    })
                },
            );
        }
    }
    group.finish();
}

criterion_group!(benches, compile_rules, build_tables, lookups);
criterion_main!(benches);
