//! Cost measurements of the dataplane: the pipeline microbenchmarks
//! (`benches/pipeline.rs`, criterion) and the callgrind driver
//! (`src/bin/pipeline-loop.rs`, run by `perf/profile.sh`).
//!
//! Both measure the same cases, taken from the pipeline fixtures
//! (`sluice_pipeline::fixtures`) so that what is timed is also what the unit
//! tests check. The `_policy1k` cases run the 64-byte frame against the
//! fixture tables plus a policy of 1000 entries in the destination's
//! ingress table over 1000 identities ([`policy_tables`]); the `_new` cases
//! make every frame a new connection (the clock steps past the UDP timeout
//! between frames, so the flow is expired and opened again: lookup, policy
//! check, insert).
//!
//! [`pktgen`] is the pure part of `sluice-pktgen` (`src/bin/sluice-pktgen.rs`), the
//! AF_XDP packet generator and sinks of the namespace lab: frame templates, flows,
//! pacing, the JSON reports and loss.

pub mod pktgen;

use core::net::{IpAddr, Ipv4Addr};

use sluice_pipeline::fixtures::{self, Fixture, POD_A, POD_B};
use sluice_pipeline::{DropReason, Verdict};
use sluice_tables::{
    Action, DirectionTable, Endpoint, EndpointPolicy, EndpointTable, IpCache, IpCacheEntry,
    MacAddr, Peer, PolicyEntry, PolicyState, PolicyTables, RuleOrigin, Tables,
};
use sluice_wire::ip_protocol::{TCP, UDP};

/// Frames per benchmark iteration, like one engine rx batch.
pub const BATCH: usize = 64;

/// One measured case: a fixture, the tables it runs against, and a short
/// name for reports.
#[derive(Clone, Debug)]
pub struct Case {
    pub name: &'static str,
    pub fixture: Fixture,
    pub tables: fn() -> Tables,
    /// How far the clock moves between frames: 0 for a long flow (every
    /// frame after the first is a conntrack hit), [`NEW_FLOW_STEP_NS`] for a
    /// new connection per frame.
    pub now_step_ns: u64,
}

/// Longer than the UDP unreplied timeout (30 s): the previous frame's flow
/// has expired when the next frame comes.
pub const NEW_FLOW_STEP_NS: u64 = 31_000_000_000;

/// Entries (and identities) of the [`policy_tables`] policy.
pub const POLICY_ENTRIES: u32 = 1000;

/// The fixture descriptions the cases are taken from (`fixtures::all()`).
const FROM_FIXTURES: &[(&str, &str)] = &[
    ("ipv6_udp_fwd", "IPv6 UDP from pod A to pod B is routed"),
    ("ipv4_tcp_fwd", "IPv4 TCP SYN with options is routed"),
    ("arp_reply", "ARP request for the gateway is answered"),
    (
        "nd_gateway",
        "NS for the gateway to its solicited-node group is answered",
    ),
    ("drop_spoofed", "IPv4 source is another pod's address"),
];

/// A 64-byte IPv4 UDP frame from pod A to pod B (14 + 20 + 8 + 22 bytes),
/// built with the fixture builders; the fixture set's own UDP frame is 47 bytes.
pub fn ipv4_udp_64() -> Fixture {
    let (a, b) = (POD_A, POD_B);
    let ip =
        fixtures::V4::new(a.ipv4, b.ipv4, UDP, 64).packet(&fixtures::udp(40000, 53, &[0x5a; 22]));
    let input = fixtures::ethernet(
        fixtures::GATEWAY_MAC,
        a.mac,
        sluice_wire::ethertype::IPV4,
        &ip,
    );
    debug_assert_eq!(input.len(), 64);
    Fixture {
        description: "IPv4 UDP 64-byte frame from pod A to pod B is routed",
        ingress_ifindex: a.ifindex,
        capacity: fixtures::DEFAULT_CAPACITY,
        expected_verdict: Verdict::Forward {
            ifindex: b.ifindex,
            len: input.len(),
        },
        input,
        expected_output: None,
    }
}

/// The measured cases, in report order. Panics if a fixture was renamed, so
/// that a benchmark never silently measures something else.
pub fn cases() -> Vec<Case> {
    let all = fixtures::all();
    let udp = |name, tables, now_step_ns| Case {
        name,
        fixture: ipv4_udp_64(),
        tables,
        now_step_ns,
    };
    let mut out = vec![udp("ipv4_udp_64B_fwd", fixtures::tables, 0)];
    for (name, description) in FROM_FIXTURES {
        let fixture = all
            .iter()
            .find(|f| f.description == *description)
            .unwrap_or_else(|| panic!("fixture {description:?} is gone"))
            .clone();
        out.push(Case {
            name,
            fixture,
            tables: fixtures::tables,
            now_step_ns: 0,
        });
    }
    out.push(udp("ipv4_udp_64B_fwd_policy1k", policy_tables, 0));
    out.push(udp("ipv4_udp_64B_new", fixtures::tables, NEW_FLOW_STEP_NS));
    out.push(udp(
        "ipv4_udp_64B_new_policy1k",
        policy_tables,
        NEW_FLOW_STEP_NS,
    ));
    out
}

/// [`fixtures::tables`] with pods A and B in the ipcache, [`POLICY_ENTRIES`]
/// other identities at 10.1.x.y, and a policy: pod B's ingress is
/// default-deny with one entry per identity (TCP and UDP on assorted
/// ports, deny and allow mixed, one in ten an L3 allow) and an allow for
/// pod A on UDP 53 last; pod A's egress allows pod B. So pod A's frame
/// passes both directions, found through the index.
pub fn policy_tables() -> Tables {
    let (a, b) = (1000u32, 1001u32);
    let first_other = 2000u32;
    let mut ipcache = vec![
        IpCacheEntry {
            ip: POD_A.ipv4.into(),
            prefix_len: None,
            identity: a,
        },
        IpCacheEntry {
            ip: POD_B.ipv4.into(),
            prefix_len: None,
            identity: b,
        },
    ];
    let mut entries = Vec::new();
    for i in 0..POLICY_ENTRIES - 1 {
        let identity = first_other + i;
        let [_, _, hi, lo] = (i + 1).to_be_bytes();
        ipcache.push(IpCacheEntry {
            ip: IpAddr::V4(Ipv4Addr::new(10, 1, hi, lo)),
            prefix_len: None,
            identity,
        });
        let port = 1000 + (i % 50) as u16;
        entries.push(PolicyEntry {
            peer: Peer::Identity(identity),
            protocol: match i % 10 {
                0 => 0,
                n if n % 2 == 0 => TCP,
                _ => UDP,
            },
            port_min: port,
            port_max: port + (i % 3) as u16,
            action: if i % 4 == 0 {
                Action::Deny
            } else {
                Action::Allow
            },
            dns: None,
            rule: i,
        });
    }
    entries.push(PolicyEntry {
        peer: Peer::Identity(a),
        protocol: UDP,
        port_min: 53,
        port_max: 53,
        action: Action::Allow,
        dns: None,
        rule: POLICY_ENTRIES - 1,
    });
    let state = PolicyState {
        tables: vec![
            DirectionTable {
                enforced: true,
                default_rule: Some(0),
                entries,
            },
            DirectionTable {
                enforced: true,
                default_rule: Some(0),
                entries: vec![PolicyEntry {
                    peer: Peer::Identity(b),
                    protocol: 0,
                    port_min: 0,
                    port_max: u16::MAX,
                    action: Action::Allow,
                    dns: None,
                    rule: 0,
                }],
            },
        ],
        endpoints: vec![
            EndpointPolicy {
                endpoint: "default/b".into(),
                ingress: 0,
                egress: 1,
            },
            EndpointPolicy {
                endpoint: "default/a".into(),
                ingress: 1,
                egress: 1,
            },
        ],
        rules: (0..POLICY_ENTRIES)
            .map(|i| RuleOrigin {
                kind: "CiliumNetworkPolicy".into(),
                namespace: "bench".into(),
                name: format!("rule-{i}"),
                path: "specs[0].ingress[0]".into(),
            })
            .collect(),
        ..PolicyState::default()
    };
    let mut t = fixtures::tables();
    t.ipcache = IpCache::build(&ipcache).expect("distinct addresses");
    t.policy = PolicyTables::build_for(state, &t.endpoints, &t.ipcache).expect("valid policy");
    t
}

/// Looks a case up by its short name.
pub fn case(name: &str) -> Option<Case> {
    cases().into_iter().find(|c| c.name == name)
}

/// Runs every case twice (a first and a later frame) and checks its
/// verdict; call before measuring.
pub fn check(cases: &[Case]) -> Result<(), String> {
    let mut chunk = vec![0u8; fixtures::DEFAULT_CAPACITY];
    for c in cases {
        let tables = (c.tables)();
        let flows = fixtures::flows();
        for now in [0, c.now_step_ns.max(1)] {
            let got = c.fixture.run(&tables, &flows, &mut chunk, now);
            if got != c.fixture.expected_verdict {
                return Err(format!(
                    "{}: expected {:?}, got {:?}",
                    c.name, c.fixture.expected_verdict, got
                ));
            }
        }
    }
    Ok(())
}

/// Drop counters the way the engine keeps them (`counters.rs`): one slot per
/// reason, indexed by [`DropReason::index`].
#[derive(Clone, Debug)]
pub struct Counters {
    pub forwarded: u64,
    pub drops: [u64; DropReason::COUNT],
}

impl Default for Counters {
    fn default() -> Counters {
        Counters {
            forwarded: 0,
            drops: [0; DropReason::COUNT],
        }
    }
}

impl Counters {
    /// Not inlined, so that callgrind can count it on its own.
    #[inline(never)]
    pub fn count(&mut self, verdict: Verdict) {
        match verdict {
            Verdict::Forward { .. } => self.forwarded += 1,
            // The engine counts the refused packet and sends the answer.
            Verdict::Reject { reason, .. } => {
                self.forwarded += 1;
                self.drops[reason.index()] += 1;
            }
            Verdict::Drop(reason) | Verdict::PolicyDrop { reason, .. } => {
                self.drops[reason.index()] += 1
            }
        }
    }
}

/// An endpoint table with `n` IPv4-only endpoints at 10.0.0.0 + i, and the
/// addresses it holds. Ifindex and MAC are derived from `i`.
pub fn endpoint_table(n: u32) -> (EndpointTable, Vec<Ipv4Addr>) {
    let base = u32::from(Ipv4Addr::new(10, 0, 0, 0));
    let addrs: Vec<Ipv4Addr> = (0..n).map(|i| Ipv4Addr::from(base + i)).collect();
    let endpoints = addrs
        .iter()
        .enumerate()
        .map(|(i, addr)| {
            let b = (i as u32).to_be_bytes();
            Endpoint {
                name: format!("bench/pod-{i}"),
                ifindex: 100 + i as u32,
                ifname: format!("lxc{i}"),
                mac: MacAddr([2, 0, b[0], b[1], b[2], b[3]]),
                ipv4: Some(*addr),
                ipv6: None,
                identity: 0,
            }
        })
        .collect();
    let table = EndpointTable::build(endpoints).expect("distinct addresses and ifindexes");
    (table, addrs)
}

/// `count` addresses drawn from `addrs` in a fixed pseudo-random order (an LCG,
/// so runs are comparable), for lookups that do not walk memory in order.
pub fn shuffled(addrs: &[Ipv4Addr], count: usize) -> Vec<Ipv4Addr> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..count)
        .map(|_| {
            x = x
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            addrs[((x >> 33) as usize) % addrs.len()]
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_case_gives_its_fixture_verdict() {
        let cases = cases();
        assert_eq!(cases.len(), 9);
        assert_eq!(cases[0].fixture.input.len(), 64);
        check(&cases).unwrap();
    }

    #[test]
    fn the_drop_case_drops_as_spoofed() {
        let c = case("drop_spoofed").unwrap();
        assert_eq!(
            c.fixture.expected_verdict,
            Verdict::Drop(DropReason::SpoofedSourceIp)
        );
    }

    /// The policy case is decided by its policy: pod A passes, and a frame
    /// from pod C (an identity the policy does not allow) is dropped.
    #[test]
    fn the_policy_case_runs_through_an_enforced_policy() {
        let tables = policy_tables();
        assert!(tables.policy.enforces());
        assert_eq!(tables.ipcache.len(), POLICY_ENTRIES as usize + 1);
        let c = case("ipv4_udp_64B_new_policy1k").unwrap();
        let mut input = c.fixture.input.clone();
        input[6..12].copy_from_slice(&fixtures::POD_C.mac);
        input[14 + 12..14 + 16].copy_from_slice(&fixtures::POD_C.ipv4.octets());
        // Header checksum: recompute over the new source.
        input[14 + 10..14 + 12].copy_from_slice(&[0, 0]);
        let sum = sluice_wire::checksum::checksum(&input[14..34]);
        input[14 + 10..14 + 12].copy_from_slice(&sum.to_be_bytes());
        let mut chunk = vec![0u8; fixtures::DEFAULT_CAPACITY];
        chunk[..input.len()].copy_from_slice(&input);
        let flows = fixtures::flows();
        let verdict = sluice_pipeline::process(
            &mut chunk,
            input.len(),
            fixtures::POD_C.ifindex,
            &tables,
            &flows,
            0,
        );
        assert!(
            matches!(
                verdict,
                Verdict::PolicyDrop {
                    reason: DropReason::PolicyDenied,
                    ..
                }
            ),
            "{verdict:?}"
        );
    }

    #[test]
    fn big_tables_find_every_address() {
        let (table, addrs) = endpoint_table(1000);
        for a in shuffled(&addrs, 100) {
            assert_eq!(table.by_ipv4(a).unwrap().ipv4, Some(a));
        }
    }
}
