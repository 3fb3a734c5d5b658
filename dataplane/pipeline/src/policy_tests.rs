//! Policy scenarios that need changing tables or a prepared flow table: the
//! verdict cache across policy revisions (denied flows removed, allowed ones
//! re-stamped, replies passing), translated destinations on re-checks,
//! `allow_localhost`, enforcement modes, and DNS answers feeding toFQDNs.

use core::net::{IpAddr, Ipv4Addr};

use sluice_conntrack::{flags, FlowKey, FlowTables};
use sluice_tables::policy::identity;
use sluice_tables::{
    Action, DnsSelector, Enforcement, Peer, PolicyDirection, PolicyEntry, PolicyState, Tables,
};
use sluice_wire::ethertype;
use sluice_wire::ip_protocol::{TCP, UDP};
use sluice_wire::tcp::flags::{ACK, SYN};

use crate::fixtures::{
    self, dns_message, ethernet, policy_state, policy_tables, policy_tables_with, rule, tcp, udp,
    GATEWAY_MAC, GRE, NEXT_HOP_MAC, NODE_V4, POD_A, POD_B, POD_C, UPLINK_IFINDEX, UPLINK_MAC, V4,
    WEB_V4,
};
use crate::{process, DropReason, Verdict};

const S: u64 = 1_000_000_000;

fn run(tables: &Tables, flows: &FlowTables, ingress: u32, input: &[u8], now: u64) -> Verdict {
    let mut chunk = vec![0u8; fixtures::DEFAULT_CAPACITY];
    chunk[..input.len()].copy_from_slice(input);
    process(&mut chunk, input.len(), ingress, tables, flows, now)
}

fn from(pod: fixtures::Pod, ip: &[u8]) -> Vec<u8> {
    ethernet(GATEWAY_MAC, pod.mac, ethertype::IPV4, ip)
}

fn tcp_v4(src: fixtures::Pod, dst: Ipv4Addr, ports: (u16, u16), flags: u8) -> Vec<u8> {
    from(
        src,
        &V4::new(src.ipv4, dst, TCP, 64).packet(&tcp(ports.0, ports.1, flags, &[])),
    )
}

fn key(src: Ipv4Addr, dst: Ipv4Addr, ports: (u16, u16), protocol: u8) -> FlowKey {
    FlowKey {
        src: src.into(),
        dst: dst.into(),
        src_port: ports.0,
        dst_port: ports.1,
        protocol,
    }
}

fn forwarded_to(verdict: Verdict, ifindex: u32) -> bool {
    matches!(verdict, Verdict::Forward { ifindex: i, .. } if i == ifindex)
}

/// The fixture policy without pod B's "allow pod A" entry (so nothing lets
/// pod A reach pod B), at `revision`.
fn b_closed_to_a(revision: u64) -> Tables {
    let mut state = policy_state();
    state.tables[0].entries.remove(0);
    policy_tables_with(state, revision)
}

#[test]
fn a_policy_change_drops_the_next_packet_of_an_allowed_flow_and_removes_it() {
    let (a, b) = (POD_A, POD_B);
    let flows = fixtures::flows();
    let open = policy_tables();
    let syn = tcp_v4(a, b.ipv4, (42000, 81), SYN);
    assert!(forwarded_to(
        run(&open, &flows, a.ifindex, &syn, 0),
        b.ifindex
    ));
    let k = key(a.ipv4, b.ipv4, (42000, 81), TCP);
    assert_eq!(flows.conntrack.lookup(&k, S).unwrap().policy, 1);

    let closed = b_closed_to_a(2);
    // Replies of the flow still pass: only the original direction is re-checked.
    let syn_ack = tcp_v4(b, a.ipv4, (81, 42000), SYN | ACK);
    assert!(forwarded_to(
        run(&closed, &flows, b.ifindex, &syn_ack, S),
        a.ifindex
    ));
    let ack = tcp_v4(a, b.ipv4, (42000, 81), ACK);
    assert_eq!(
        run(&closed, &flows, a.ifindex, &ack, 2 * S),
        Verdict::PolicyDrop {
            reason: DropReason::PolicyDenied,
            rule: rule::B_FROM_A,
            direction: PolicyDirection::Ingress,
        }
    );
    assert!(flows.conntrack.lookup(&k, 2 * S).is_none(), "flow removed");
    assert!(flows.conntrack.lookup(&k.reversed(), 2 * S).is_none());
    // The reply now opens nothing: it is a new flow from B, which pod A's
    // ingress does not allow.
    assert!(matches!(
        run(&closed, &flows, b.ifindex, &syn_ack, 2 * S),
        Verdict::PolicyDrop { .. }
    ));

    // Allowed again: the next packet starts a new flow at the new revision.
    let reopened = policy_tables_with(policy_state(), 3);
    assert!(forwarded_to(
        run(&reopened, &flows, a.ifindex, &ack, 3 * S),
        b.ifindex
    ));
    assert_eq!(flows.conntrack.lookup(&k, 3 * S).unwrap().policy, 3);
}

#[test]
fn a_revision_that_still_allows_restamps_both_entries() {
    let (a, b) = (POD_A, POD_B);
    let flows = fixtures::flows();
    let syn = tcp_v4(a, b.ipv4, (42001, 81), SYN);
    assert!(forwarded_to(
        run(&policy_tables(), &flows, a.ifindex, &syn, 0),
        b.ifindex
    ));
    let next = policy_tables_with(policy_state(), 2);
    let k = key(a.ipv4, b.ipv4, (42001, 81), TCP);
    // A reply does not re-check (and does not re-stamp).
    let syn_ack = tcp_v4(b, a.ipv4, (81, 42001), SYN | ACK);
    assert!(forwarded_to(
        run(&next, &flows, b.ifindex, &syn_ack, S),
        a.ifindex
    ));
    assert_eq!(flows.conntrack.lookup(&k, S).unwrap().policy, 1);
    let ack = tcp_v4(a, b.ipv4, (42001, 81), ACK);
    assert!(forwarded_to(
        run(&next, &flows, a.ifindex, &ack, S),
        b.ifindex
    ));
    assert_eq!(flows.conntrack.lookup(&k, S).unwrap().policy, 2);
    assert_eq!(flows.conntrack.lookup(&k.reversed(), S).unwrap().policy, 2);
}

/// A re-check of a service flow looks at the backend port: a new deny on
/// the backend port ends it, though the frontend port is not denied.
#[test]
fn a_service_flow_is_re_checked_with_its_translated_destination() {
    let (a, b) = (POD_A, POD_B);
    let flows = fixtures::flows();
    let syn = tcp_v4(a, WEB_V4, (42002, 80), SYN);
    assert!(forwarded_to(
        run(&policy_tables(), &flows, a.ifindex, &syn, 0),
        b.ifindex
    ));
    let mut state = policy_state();
    state.tables[0].entries[1].port_min = 8080;
    state.tables[0].entries[1].port_max = 8080;
    let deny_backend = policy_tables_with(state, 2);
    let ack = tcp_v4(a, WEB_V4, (42002, 80), ACK);
    assert_eq!(
        run(&deny_backend, &flows, a.ifindex, &ack, S),
        Verdict::PolicyDrop {
            reason: DropReason::PolicyDeniedByDenylist,
            rule: rule::B_DENY_80,
            direction: PolicyDirection::Ingress,
        }
    );
    assert!(flows
        .conntrack
        .lookup(&key(a.ipv4, WEB_V4, (42002, 80), TCP), S)
        .is_none());
}

#[test]
fn the_host_identity_needs_allow_localhost() {
    let b = POD_B;
    let from_host = ethernet(
        UPLINK_MAC,
        NEXT_HOP_MAC,
        ethertype::IPV4,
        &V4::new(NODE_V4, b.ipv4, TCP, 64).packet(&tcp(42003, 22, SYN, &[])),
    );
    let flows = fixtures::flows();
    assert!(forwarded_to(
        run(&policy_tables(), &flows, UPLINK_IFINDEX, &from_host, 0),
        b.ifindex
    ));
    let mut state = policy_state();
    state.config.allow_localhost = false;
    let strict = policy_tables_with(state, 2);
    let again = ethernet(
        UPLINK_MAC,
        NEXT_HOP_MAC,
        ethertype::IPV4,
        &V4::new(NODE_V4, b.ipv4, TCP, 64).packet(&tcp(42004, 22, SYN, &[])),
    );
    assert_eq!(
        run(&strict, &flows, UPLINK_IFINDEX, &again, S),
        Verdict::PolicyDrop {
            reason: DropReason::PolicyDenied,
            rule: rule::B_FROM_A,
            direction: PolicyDirection::Ingress,
        }
    );
    // The host identity comes from the ipcache, not from where the frame came.
    assert_eq!(strict.ipcache.identity_of(NODE_V4.into()), identity::HOST);
}

#[test]
fn enforcement_modes() {
    let (b, c) = (POD_B, POD_C);
    let gre = from(c, &V4::new(c.ipv4, b.ipv4, GRE, 64).packet(&[0, 0, 8, 0]));
    let syn = tcp_v4(c, b.ipv4, (42005, 81), SYN);
    let flows = fixtures::flows();
    let mut state = policy_state();
    state.config.enforcement = Enforcement::Never;
    let never = policy_tables_with(state.clone(), 1);
    assert!(forwarded_to(
        run(&never, &flows, c.ifindex, &gre, 0),
        b.ifindex
    ));
    assert!(forwarded_to(
        run(&never, &flows, c.ifindex, &syn, 0),
        b.ifindex
    ));
    // Mode always: pod C, which no policy lists, may send nothing.
    state.config.enforcement = Enforcement::Always;
    let always = policy_tables_with(state, 2);
    let denied = Verdict::PolicyDrop {
        reason: DropReason::PolicyDenied,
        rule: Verdict::NO_RULE,
        direction: PolicyDirection::Egress,
    };
    assert_eq!(run(&always, &flows, c.ifindex, &gre, S), denied);
    // The flow made under mode never is re-checked and removed.
    let ack = tcp_v4(c, b.ipv4, (42005, 81), ACK);
    assert_eq!(run(&always, &flows, c.ifindex, &ack, S), denied);
    assert!(flows
        .conntrack
        .lookup(&key(c.ipv4, b.ipv4, (42005, 81), TCP), S)
        .is_none());
}

/// A DNS answer of 203.0.113.50 for www.allowed.test, with `ttl`.
fn answer(port: u16, id: u16, ttl: u32) -> Vec<u8> {
    let mut m = dns_message(id, 0x8180, "www.allowed.test");
    m[7] = 1; // ANCOUNT
    m.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
    m.extend_from_slice(&ttl.to_be_bytes());
    m.extend_from_slice(&[0, 4, 203, 0, 113, 50]);
    from(
        POD_B,
        &V4::new(POD_B.ipv4, POD_A.ipv4, UDP, 64).packet(&udp(53, port, &m)),
    )
}

/// toFQDNs: pod A reaches 203.0.113.50 only while an answer it got through
/// a DNS-inspected flow holds that address for a selected name.
#[test]
fn dns_answers_open_fqdn_peers_until_their_ttl() {
    let a = POD_A;
    let server = Ipv4Addr::new(203, 0, 113, 50);
    let mut state: PolicyState = policy_state();
    state.fqdn_selectors = vec![DnsSelector::MatchName("www.allowed.test".into())];
    // Pod A egress: no blanket deny of the world; the name on 443.
    state.tables[1].entries.retain(|e| e.action != Action::Deny);
    state.tables[1].entries.push(PolicyEntry {
        peer: Peer::Fqdn(0),
        protocol: TCP,
        port_min: 443,
        port_max: 443,
        action: Action::Allow,
        dns: None,
        rule: rule::A_TO_CIDR,
    });
    let tables = policy_tables_with(state, 1);
    let flows = fixtures::flows();
    let connect = |port: u16, now: u64| {
        run(
            &tables,
            &flows,
            a.ifindex,
            &tcp_v4(a, server, (port, 443), SYN),
            now,
        )
    };
    let no_rule = Verdict::PolicyDrop {
        reason: DropReason::PolicyDenied,
        rule: rule::A_TO_B,
        direction: PolicyDirection::Egress,
    };
    assert_eq!(connect(42010, 0), no_rule);

    let query = from(
        a,
        &V4::new(a.ipv4, POD_B.ipv4, UDP, 64).packet(&udp(
            42011,
            53,
            &dns_message(7, 0x0100, "www.allowed.test"),
        )),
    );
    assert!(forwarded_to(
        run(&tables, &flows, a.ifindex, &query, S),
        POD_B.ifindex
    ));
    let dns_flow = flows
        .conntrack
        .lookup(&key(a.ipv4, POD_B.ipv4, (42011, 53), UDP), S)
        .unwrap();
    assert_ne!(dns_flow.flags & flags::DNS, 0, "the flow is DNS-inspected");
    assert!(forwarded_to(
        run(&tables, &flows, POD_B.ifindex, &answer(42011, 7, 30), 2 * S),
        a.ifindex
    ));
    assert!(flows
        .fqdn
        .contains(tables.policy.fqdn_key(0), IpAddr::V4(server), 3 * S));
    assert!(forwarded_to(connect(42012, 3 * S), UPLINK_IFINDEX));
    // 30 s after the answer the address is forgotten.
    assert_eq!(connect(42013, 33 * S), no_rule);
}

/// Without any policy the policy word is 0 whatever the revision, so an
/// ipcache change costs tracked flows nothing; the first policy re-checks
/// them, and its removal sets them back to 0 once.
#[test]
fn without_policy_the_word_stays_zero() {
    let (a, b) = (POD_A, POD_B);
    let flows = fixtures::flows();
    let mut none = fixtures::service_tables();
    none.policy_revision = 1;
    let syn = tcp_v4(a, b.ipv4, (42020, 81), SYN);
    assert!(forwarded_to(
        run(&none, &flows, a.ifindex, &syn, 0),
        b.ifindex
    ));
    let k = key(a.ipv4, b.ipv4, (42020, 81), TCP);
    assert_eq!(flows.conntrack.lookup(&k, 0).unwrap().policy, 0);
    none.policy_revision = 5;
    let ack = tcp_v4(a, b.ipv4, (42020, 81), ACK);
    assert!(forwarded_to(
        run(&none, &flows, a.ifindex, &ack, S),
        b.ifindex
    ));
    assert_eq!(flows.conntrack.lookup(&k, S).unwrap().policy, 0);
    // A policy at revision 6: the flow is checked (and allowed) once.
    let open = policy_tables_with(policy_state(), 6);
    assert!(forwarded_to(
        run(&open, &flows, a.ifindex, &ack, S),
        b.ifindex
    ));
    assert_eq!(flows.conntrack.lookup(&k, S).unwrap().policy, 6);
    // The policy goes away: back to 0.
    none.policy_revision = 7;
    assert!(forwarded_to(
        run(&none, &flows, a.ifindex, &ack, S),
        b.ifindex
    ));
    assert_eq!(flows.conntrack.lookup(&k, S).unwrap().policy, 0);
    // A policy that denies it: the next packet is dropped.
    let closed = b_closed_to_a(8);
    assert!(matches!(
        run(&closed, &flows, a.ifindex, &ack, 2 * S),
        Verdict::PolicyDrop { .. }
    ));
}
