//! Scenarios that need a prepared flow table or changing tables: backend
//! removal and termination, affinity, port exhaustion, a full table, drop
//! mode, ICMP echo masquerade, NodePort to a backend elsewhere.

use core::net::{IpAddr, Ipv4Addr, SocketAddr};

use sluice_conntrack::{CtConfig, FlowTables};
use sluice_tables::{
    Backend, BackendState, Frontend, FrontendKind, L4Protocol, LbConfig, NoBackendResponse,
    Service, Tables,
};
use sluice_wire::ethertype;
use sluice_wire::ip_protocol::{ICMP, TCP};
use sluice_wire::tcp::flags::{ACK, SYN};
use smoltcp::wire::{EthernetFrame, IpProtocol, Ipv4Packet, TcpPacket};

use crate::fixtures::{
    self, ethernet, icmp, lb_config, service_tables, service_tables_with, services, tcp,
    GATEWAY_MAC, INTERNET_V4, MASQUERADE_PORT, NEXT_HOP_MAC, NODE_V4, OUTSIDE_V4, POD_A, POD_B,
    POD_C, UPLINK_IFINDEX, UPLINK_MAC, V4, WEB_NODE_PORT,
};
use crate::{process, DropReason, Verdict};

/// A ClusterIP with three backends (pods A, B, C) in `default/three`.
const THREE_V4: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 40);
const THREE_ID: u32 = 40;

fn three(states: [Option<BackendState>; 3], affinity: Option<u32>) -> Service {
    let pods = [POD_A, POD_B, POD_C];
    Service {
        id: THREE_ID,
        name: "default/three".into(),
        port_name: String::new(),
        protocol: L4Protocol::Tcp,
        frontends: vec![Frontend {
            kind: FrontendKind::ClusterIp,
            addr: THREE_V4.into(),
            port: 80,
        }],
        backends: pods
            .iter()
            .zip(states)
            .enumerate()
            .filter_map(|(i, (pod, state))| {
                Some(Backend {
                    id: 400 + i as u32,
                    addr: pod.ipv4.into(),
                    port: 8080,
                    state: state?,
                    local: true,
                })
            })
            .collect(),
        algorithm: Default::default(),
        affinity_timeout_s: affinity,
        external_traffic_local: false,
        internal_traffic_local: false,
        source_ranges: Vec::new(),
    }
}

fn tables_with(extra: Service) -> Tables {
    let mut all = services();
    all.push(extra);
    let t = service_tables_with(all, lb_config());
    assert_eq!(
        t.services.len(),
        services().len() + 1,
        "service table refused"
    );
    t
}

const READY: Option<BackendState> = Some(BackendState::Ready);

fn run(
    tables: &Tables,
    flows: &FlowTables,
    ingress: u32,
    input: &[u8],
    now: u64,
) -> (Verdict, Vec<u8>) {
    let mut chunk = vec![0u8; fixtures::DEFAULT_CAPACITY];
    chunk[..input.len()].copy_from_slice(input);
    let verdict = process(&mut chunk, input.len(), ingress, tables, flows, now);
    let out = match verdict {
        Verdict::Forward { len, .. } | Verdict::Reject { len, .. } => chunk[..len].to_vec(),
        Verdict::Drop(_) | Verdict::PolicyDrop { .. } => Vec::new(),
    };
    (verdict, out)
}

/// Destination address and port of a forwarded IPv4 TCP frame.
fn tcp_dst(out: &[u8]) -> SocketAddr {
    let eth = EthernetFrame::new_checked(out).unwrap();
    let ip = Ipv4Packet::new_checked(eth.payload()).unwrap();
    assert_eq!(ip.next_header(), IpProtocol::Tcp);
    let t = TcpPacket::new_checked(ip.payload()).unwrap();
    SocketAddr::new(IpAddr::V4(ip.dst_addr()), t.dst_port())
}

fn tcp_src(out: &[u8]) -> SocketAddr {
    let eth = EthernetFrame::new_checked(out).unwrap();
    let ip = Ipv4Packet::new_checked(eth.payload()).unwrap();
    let t = TcpPacket::new_checked(ip.payload()).unwrap();
    SocketAddr::new(IpAddr::V4(ip.src_addr()), t.src_port())
}

/// A TCP segment from the outside (uplink) to `dst`.
fn outside_tcp(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16, flags: u8) -> Vec<u8> {
    ethernet(
        UPLINK_MAC,
        NEXT_HOP_MAC,
        ethertype::IPV4,
        &V4::new(src, dst, TCP, 64).packet(&tcp(sport, dport, flags, &[])),
    )
}

fn from_pod_tcp(
    pod: crate::fixtures::Pod,
    sport: u16,
    dst: Ipv4Addr,
    dport: u16,
    flags: u8,
) -> Vec<u8> {
    ethernet(
        GATEWAY_MAC,
        pod.mac,
        ethertype::IPV4,
        &V4::new(pod.ipv4, dst, TCP, 64).packet(&tcp(sport, dport, flags, &[])),
    )
}

/// Opens `n` connections from outside to `default/three`; the backend each went to.
fn open(
    tables: &Tables,
    flows: &FlowTables,
    ports: core::ops::Range<u16>,
    now: u64,
) -> Vec<SocketAddr> {
    ports
        .map(|port| {
            let (v, out) = run(
                tables,
                flows,
                UPLINK_IFINDEX,
                &outside_tcp(OUTSIDE_V4, port, THREE_V4, 80, SYN),
                now,
            );
            assert!(matches!(v, Verdict::Forward { .. }), "{v:?}");
            tcp_dst(&out)
        })
        .collect()
}

fn next_segment(
    tables: &Tables,
    flows: &FlowTables,
    ports: core::ops::Range<u16>,
    now: u64,
) -> Vec<SocketAddr> {
    ports
        .map(|port| {
            let (v, out) = run(
                tables,
                flows,
                UPLINK_IFINDEX,
                &outside_tcp(OUTSIDE_V4, port, THREE_V4, 80, ACK),
                now,
            );
            assert!(matches!(v, Verdict::Forward { .. }), "{v:?}");
            tcp_dst(&out)
        })
        .collect()
}

#[test]
fn removing_a_backend_moves_only_its_flows() {
    let flows = fixtures::flows();
    let before = tables_with(three([READY; 3], None));
    let first = open(&before, &flows, 41000..41060, 1);
    let b = SocketAddr::new(POD_B.ipv4.into(), 8080);
    assert!(first.contains(&b), "some flows on pod B");
    assert!(first.iter().any(|d| *d != b), "some flows elsewhere");
    let after = tables_with(three([READY, None, READY], None));
    let then = next_segment(&after, &flows, 41000..41060, 2);
    for (was, now) in first.iter().zip(&then) {
        if *was == b {
            assert_ne!(*now, b, "a flow on the removed backend moved");
        } else {
            assert_eq!(was, now, "a flow on a remaining backend stayed");
        }
    }
}

#[test]
fn a_terminating_backend_keeps_its_flows_and_takes_no_new_ones() {
    let flows = fixtures::flows();
    let before = tables_with(three([READY; 3], None));
    let first = open(&before, &flows, 42000..42060, 1);
    let b = SocketAddr::new(POD_B.ipv4.into(), 8080);
    let after = tables_with(three([READY, Some(BackendState::Terminating), READY], None));
    assert_eq!(next_segment(&after, &flows, 42000..42060, 2), first);
    let fresh = open(&after, &flows, 43000..43060, 3);
    assert!(
        !fresh.contains(&b),
        "no new flow to the terminating backend"
    );
}

#[test]
fn session_affinity_keeps_a_client_on_one_backend() {
    let flows = fixtures::flows();
    let t = tables_with(three([READY; 3], Some(10_800)));
    let chosen = open(&t, &flows, 44000..44030, 1);
    assert!(chosen.iter().all(|d| *d == chosen[0]), "{chosen:?}");
    // Without affinity the same client is spread.
    let flows = fixtures::flows();
    let t = tables_with(three([READY; 3], None));
    let spread = open(&t, &flows, 44000..44030, 1);
    assert!(spread.iter().any(|d| *d != spread[0]));
}

#[test]
fn affinity_moves_when_its_backend_goes() {
    let flows = fixtures::flows();
    let t = tables_with(three([READY; 3], Some(10_800)));
    let first = open(&t, &flows, 45000..45001, 1)[0];
    let states = [POD_A, POD_B, POD_C]
        .map(|p| (SocketAddr::new(p.ipv4.into(), 8080) != first).then_some(BackendState::Ready));
    let t = tables_with(three(states, Some(10_800)));
    let moved = open(&t, &flows, 45001..45020, 2);
    assert!(
        moved.iter().all(|d| *d == moved[0] && *d != first),
        "{moved:?}"
    );
}

#[test]
fn masquerade_runs_out_of_ports_for_one_destination() {
    let flows = fixtures::flows();
    let mut lb = lb_config();
    if let Some(m) = lb.masquerade.as_mut() {
        m.port_max = m.port_min + 3;
    }
    let t = service_tables_with(services(), lb);
    let mut ports = Vec::new();
    for sport in 46000..46004 {
        let (v, out) = run(
            &t,
            &flows,
            POD_A.ifindex,
            &from_pod_tcp(POD_A, sport, INTERNET_V4, 443, SYN),
            1,
        );
        assert_eq!(
            v,
            Verdict::Forward {
                ifindex: UPLINK_IFINDEX,
                len: out.len()
            }
        );
        let src = tcp_src(&out);
        assert_eq!(src.ip(), IpAddr::V4(NODE_V4));
        ports.push(src.port());
    }
    ports.sort_unstable();
    assert_eq!(
        ports,
        (MASQUERADE_PORT..MASQUERADE_PORT + 4).collect::<Vec<_>>()
    );
    let (v, _) = run(
        &t,
        &flows,
        POD_A.ifindex,
        &from_pod_tcp(POD_A, 46004, INTERNET_V4, 443, SYN),
        1,
    );
    assert_eq!(v, Verdict::Drop(DropReason::NatPortExhausted));
    // Another destination has its own ports.
    let (v, _) = run(
        &t,
        &flows,
        POD_A.ifindex,
        &from_pod_tcp(POD_A, 46004, Ipv4Addr::new(198, 51, 100, 8), 443, SYN),
        1,
    );
    assert!(matches!(v, Verdict::Forward { .. }));
}

#[test]
fn a_full_table_of_established_flows_refuses_new_ones() {
    let flows = FlowTables::new(CtConfig {
        capacity: 16,
        ..CtConfig::default()
    });
    let t = fixtures::tables();
    let mut full = None;
    let mut tracked = Vec::new();
    for sport in 1000..1100 {
        // Mid-stream segments are picked up as ESTABLISHED, which is never evicted.
        let (v, _) = run(
            &t,
            &flows,
            POD_A.ifindex,
            &from_pod_tcp(POD_A, sport, POD_B.ipv4, 80, ACK),
            1,
        );
        match v {
            Verdict::Forward { .. } => tracked.push(sport),
            Verdict::Drop(DropReason::CtFull) => {
                full = Some(sport);
                break;
            }
            other => panic!("{other:?}"),
        }
    }
    assert!(full.is_some(), "the table never filled");
    // Flows already tracked keep working.
    let (v, _) = run(
        &t,
        &flows,
        POD_A.ifindex,
        &from_pod_tcp(POD_A, tracked[0], POD_B.ipv4, 80, ACK),
        2,
    );
    assert!(matches!(v, Verdict::Forward { .. }), "{v:?}");
}

#[test]
fn drop_mode_drops_without_an_answer() {
    let flows = fixtures::flows();
    let lb = LbConfig {
        no_backend: NoBackendResponse::Drop,
        ..lb_config()
    };
    let t = service_tables_with(services(), lb);
    let (v, _) = run(
        &t,
        &flows,
        POD_A.ifindex,
        &from_pod_tcp(POD_A, 47000, fixtures::EMPTY_V4, 80, SYN),
        1,
    );
    assert_eq!(v, Verdict::Drop(DropReason::ServiceNoBackend));
}

#[test]
fn ping_to_the_internet_is_masqueraded_by_identifier() {
    let flows = fixtures::flows();
    let t = service_tables();
    let request = ethernet(
        GATEWAY_MAC,
        POD_A.mac,
        ethertype::IPV4,
        &V4::new(POD_A.ipv4, INTERNET_V4, ICMP, 64).packet(&icmp(
            8,
            0,
            [0x12, 0x34, 0, 1],
            b"ping",
        )),
    );
    let (v, out) = run(&t, &flows, POD_A.ifindex, &request, 1);
    let want = ethernet(
        NEXT_HOP_MAC,
        UPLINK_MAC,
        ethertype::IPV4,
        &V4::new(NODE_V4, INTERNET_V4, ICMP, 63).packet(&icmp(
            8,
            0,
            [(MASQUERADE_PORT >> 8) as u8, MASQUERADE_PORT as u8, 0, 1],
            b"ping",
        )),
    );
    assert_eq!(
        v,
        Verdict::Forward {
            ifindex: UPLINK_IFINDEX,
            len: want.len()
        }
    );
    assert_eq!(out, want);
    let reply = ethernet(
        UPLINK_MAC,
        NEXT_HOP_MAC,
        ethertype::IPV4,
        &V4::new(INTERNET_V4, NODE_V4, ICMP, 64).packet(&icmp(
            0,
            0,
            [(MASQUERADE_PORT >> 8) as u8, MASQUERADE_PORT as u8, 0, 1],
            b"ping",
        )),
    );
    let (v, out) = run(&t, &flows, UPLINK_IFINDEX, &reply, 2);
    let want = ethernet(
        POD_A.mac,
        GATEWAY_MAC,
        ethertype::IPV4,
        &V4::new(INTERNET_V4, POD_A.ipv4, ICMP, 63).packet(&icmp(
            0,
            0,
            [0x12, 0x34, 0, 1],
            b"ping",
        )),
    );
    assert_eq!(
        v,
        Verdict::Forward {
            ifindex: POD_A.ifindex,
            len: want.len()
        }
    );
    assert_eq!(out, want);
}

#[test]
fn node_port_to_a_backend_elsewhere_is_masqueraded_both_ways() {
    let elsewhere = Ipv4Addr::new(10, 201, 0, 5);
    let mut web = services().remove(0);
    web.backends = vec![Backend {
        id: 90,
        addr: elsewhere.into(),
        port: 8080,
        state: BackendState::Ready,
        local: false,
    }];
    let mut all = services();
    all[0] = web;
    let t = service_tables_with(all, lb_config());
    let flows = fixtures::flows();
    let (v, out) = run(
        &t,
        &flows,
        UPLINK_IFINDEX,
        &outside_tcp(OUTSIDE_V4, 48000, NODE_V4, WEB_NODE_PORT, SYN),
        1,
    );
    let want = ethernet(
        NEXT_HOP_MAC,
        UPLINK_MAC,
        ethertype::IPV4,
        &V4::new(NODE_V4, elsewhere, TCP, 63).packet(&tcp(MASQUERADE_PORT, 8080, SYN, &[])),
    );
    assert_eq!(
        v,
        Verdict::Forward {
            ifindex: UPLINK_IFINDEX,
            len: want.len()
        }
    );
    assert_eq!(out, want);
    let (v, out) = run(
        &t,
        &flows,
        UPLINK_IFINDEX,
        &outside_tcp(elsewhere, 8080, NODE_V4, MASQUERADE_PORT, SYN | ACK),
        2,
    );
    let want = ethernet(
        NEXT_HOP_MAC,
        UPLINK_MAC,
        ethertype::IPV4,
        &V4::new(NODE_V4, OUTSIDE_V4, TCP, 63).packet(&tcp(WEB_NODE_PORT, 48000, SYN | ACK, &[])),
    );
    assert_eq!(
        v,
        Verdict::Forward {
            ifindex: UPLINK_IFINDEX,
            len: want.len()
        }
    );
    assert_eq!(out, want);
}

#[test]
fn untracked_outside_traffic_creates_no_flow() {
    let flows = fixtures::flows();
    let t = service_tables();
    let (v, _) = run(
        &t,
        &flows,
        UPLINK_IFINDEX,
        &outside_tcp(OUTSIDE_V4, 49000, Ipv4Addr::new(10, 200, 0, 99), 80, SYN),
        1,
    );
    assert_eq!(v, Verdict::Drop(DropReason::NoRoute));
    assert_eq!(flows.conntrack.stats().entries, 0);
}
