//! Cost measurements of the dataplane: the pipeline microbenchmarks
//! (`benches/pipeline.rs`, criterion) and the callgrind driver
//! (`src/bin/pipeline-loop.rs`, run by `perf/profile.sh`).
//!
//! Both measure the same cases, taken from the pipeline fixtures
//! (`sluice_pipeline::fixtures`) so that what is timed is also what the unit
//! tests check.
//!
//! [`pktgen`] is the pure part of `sluice-pktgen` (`src/bin/sluice-pktgen.rs`), the
//! AF_XDP packet generator and sinks of the namespace lab: frame templates, flows,
//! pacing, the JSON reports and loss.

pub mod pktgen;

use core::net::Ipv4Addr;

use sluice_pipeline::fixtures::{self, Fixture, POD_A, POD_B};
use sluice_pipeline::{DropReason, Verdict};
use sluice_tables::{Endpoint, EndpointTable, MacAddr};
use sluice_wire::ip_protocol::UDP;

/// Frames per benchmark iteration, like one engine rx batch.
pub const BATCH: usize = 64;

/// One measured case: a fixture and a short name for reports.
#[derive(Clone, Debug)]
pub struct Case {
    pub name: &'static str,
    pub fixture: Fixture,
}

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
    let mut out = vec![Case {
        name: "ipv4_udp_64B_fwd",
        fixture: ipv4_udp_64(),
    }];
    for (name, description) in FROM_FIXTURES {
        let fixture = all
            .iter()
            .find(|f| f.description == *description)
            .unwrap_or_else(|| panic!("fixture {description:?} is gone"))
            .clone();
        out.push(Case { name, fixture });
    }
    out
}

/// Looks a case up by its short name.
pub fn case(name: &str) -> Option<Case> {
    cases().into_iter().find(|c| c.name == name)
}

/// Runs every case once and checks its verdict; call before measuring.
pub fn check(cases: &[Case]) -> Result<(), String> {
    let tables = fixtures::tables();
    let flows = fixtures::flows();
    let mut chunk = vec![0u8; fixtures::DEFAULT_CAPACITY];
    for c in cases {
        let got = c.fixture.run(&tables, &flows, &mut chunk, 0);
        if got != c.fixture.expected_verdict {
            return Err(format!(
                "{}: expected {:?}, got {:?}",
                c.name, c.fixture.expected_verdict, got
            ));
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
            Verdict::Drop(reason) => self.drops[reason.index()] += 1,
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
        assert_eq!(cases.len(), 6);
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

    #[test]
    fn big_tables_find_every_address() {
        let (table, addrs) = endpoint_table(1000);
        for a in shuffled(&addrs, 100) {
            assert_eq!(table.by_ipv4(a).unwrap().ipv4, Some(a));
        }
    }
}
