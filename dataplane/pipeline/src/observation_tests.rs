//! What `process_observed` notes per frame, field by field, on the fixture
//! tables: conntrack outcome, tuples before and after translation, service,
//! TCP flags, ICMP type, policy rules and DNS messages. Each case compares
//! the whole [`Observation`], so a stage that stops filling its field (or
//! fills another) fails it.

use core::net::{IpAddr, Ipv4Addr};

use sluice_conntrack::FlowTables;
use sluice_tables::{PolicyDirection, Tables};
use sluice_wire::ethertype;
use sluice_wire::ip_protocol::{ICMP, TCP, UDP};
use sluice_wire::tcp::flags::{ACK, SYN};

use crate::fixtures::{
    self, dns_answer_message, dns_message, ethernet, icmp, ipv6_simple, policy_state,
    policy_tables, policy_tables_with, rule, service_tables, tcp, udp, Pod, GATEWAY_MAC, GRE,
    INTERNET_V4, MASQUERADE_PORT, NEXT_HOP_MAC, NODE_V4, OUTSIDE_V4, POD_A, POD_B, POD_C, SELF_V4,
    UPLINK_IFINDEX, UPLINK_MAC, V4, WEB_NODE_PORT, WEB_V4,
};
use crate::{
    process, process_observed, CtOutcome, DnsNote, DropReason, Observation, PolicyNote, Tuple,
    Verdict, DNS_ADDRESSES_MAX,
};

/// Service ids and backends of [`fixtures::services`].
const WEB_ID: u32 = 1;
const SELF_ID: u32 = 3;
const BACKEND_PORT: u16 = 8080;
const NO_RULE: u32 = Verdict::NO_RULE;

/// Runs one frame through `process_observed` with a cleared observation.
fn observe(
    tables: &Tables,
    flows: &FlowTables,
    ingress: u32,
    input: &[u8],
    now: u64,
) -> (Verdict, Observation) {
    let mut chunk = vec![0u8; fixtures::DEFAULT_CAPACITY];
    chunk[..input.len()].copy_from_slice(input);
    // Stale values from a previous frame must not survive `clear`.
    let mut observation = Observation {
        tcp_flags: 0xff,
        ..Observation::default()
    };
    observation.clear();
    let verdict = process_observed(
        &mut chunk,
        input.len(),
        ingress,
        tables,
        flows,
        now,
        &mut observation,
    );
    (verdict, observation)
}

fn v4(a: Ipv4Addr) -> IpAddr {
    IpAddr::V4(a)
}

fn tuple(src: Ipv4Addr, src_port: u16, dst: Ipv4Addr, dst_port: u16, protocol: u8) -> Tuple {
    Tuple {
        src: v4(src),
        dst: v4(dst),
        src_port,
        dst_port,
        protocol,
    }
}

fn from_pod(pod: Pod, ip: &[u8]) -> Vec<u8> {
    ethernet(GATEWAY_MAC, pod.mac, ethertype::IPV4, ip)
}

fn pod_tcp(pod: Pod, sport: u16, dst: Ipv4Addr, dport: u16, flags: u8) -> Vec<u8> {
    from_pod(
        pod,
        &V4::new(pod.ipv4, dst, TCP, 64).packet(&tcp(sport, dport, flags, &[])),
    )
}

fn outside_tcp(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16, flags: u8) -> Vec<u8> {
    ethernet(
        UPLINK_MAC,
        NEXT_HOP_MAC,
        ethertype::IPV4,
        &V4::new(src, dst, TCP, 64).packet(&tcp(sport, dport, flags, &[])),
    )
}

fn forwarded_to(verdict: Verdict, pod: Pod) {
    assert!(
        matches!(verdict, Verdict::Forward { ifindex, .. } if ifindex == pod.ifindex),
        "{verdict:?}"
    );
}

#[test]
fn a_new_tcp_flow_between_pods_then_its_reply_and_next_packet() {
    let (tables, flows) = (fixtures::tables(), fixtures::flows());
    let (verdict, seen) = observe(
        &tables,
        &flows,
        POD_A.ifindex,
        &pod_tcp(POD_A, 40000, POD_B.ipv4, 80, SYN),
        1,
    );
    forwarded_to(verdict, POD_B);
    assert_eq!(
        seen,
        Observation {
            ct: CtOutcome::New,
            original: Some(tuple(POD_A.ipv4, 40000, POD_B.ipv4, 80, TCP)),
            tcp_flags: SYN,
            ..Observation::default()
        }
    );

    let (verdict, seen) = observe(
        &tables,
        &flows,
        POD_B.ifindex,
        &pod_tcp(POD_B, 80, POD_A.ipv4, 40000, SYN | ACK),
        2,
    );
    forwarded_to(verdict, POD_A);
    assert_eq!(
        seen,
        Observation {
            ct: CtOutcome::Reply,
            original: Some(tuple(POD_B.ipv4, 80, POD_A.ipv4, 40000, TCP)),
            tcp_flags: SYN | ACK,
            ..Observation::default()
        }
    );

    let (_, seen) = observe(
        &tables,
        &flows,
        POD_A.ifindex,
        &pod_tcp(POD_A, 40000, POD_B.ipv4, 80, ACK),
        3,
    );
    assert_eq!(seen.ct, CtOutcome::Established);
    assert_eq!(seen.tcp_flags, ACK);
}

#[test]
fn an_ipv6_flow_has_its_ipv6_tuple() {
    let (tables, flows) = (fixtures::tables(), fixtures::flows());
    let ip = ipv6_simple(POD_A.ipv6, POD_B.ipv6, 64, UDP, &udp(5000, 53, b"q"));
    let frame = ethernet(GATEWAY_MAC, POD_A.mac, ethertype::IPV6, &ip);
    let (verdict, seen) = observe(&tables, &flows, POD_A.ifindex, &frame, 1);
    forwarded_to(verdict, POD_B);
    assert_eq!(
        seen,
        Observation {
            ct: CtOutcome::New,
            original: Some(Tuple {
                src: IpAddr::V6(POD_A.ipv6),
                dst: IpAddr::V6(POD_B.ipv6),
                src_port: 5000,
                dst_port: 53,
                protocol: UDP,
            }),
            ..Observation::default()
        }
    );
}

#[test]
fn icmp_echo_notes_type_and_code_without_ports() {
    let (tables, flows) = (fixtures::tables(), fixtures::flows());
    let request = from_pod(
        POD_A,
        &V4::new(POD_A.ipv4, POD_B.ipv4, ICMP, 64).packet(&icmp(8, 0, [0, 7, 0, 1], b"ping")),
    );
    let (verdict, seen) = observe(&tables, &flows, POD_A.ifindex, &request, 1);
    forwarded_to(verdict, POD_B);
    assert_eq!(
        seen,
        Observation {
            ct: CtOutcome::New,
            original: Some(tuple(POD_A.ipv4, 0, POD_B.ipv4, 0, ICMP)),
            icmp: Some((8, 0)),
            ..Observation::default()
        }
    );
    let reply = from_pod(
        POD_B,
        &V4::new(POD_B.ipv4, POD_A.ipv4, ICMP, 64).packet(&icmp(0, 0, [0, 7, 0, 1], b"ping")),
    );
    let (_, seen) = observe(&tables, &flows, POD_B.ifindex, &reply, 2);
    assert_eq!((seen.ct, seen.icmp), (CtOutcome::Reply, Some((0, 0))));
}

#[test]
fn service_dnat_notes_the_service_and_the_backend_then_the_reply_is_translated_back() {
    let (tables, flows) = (service_tables(), fixtures::flows());
    let (verdict, seen) = observe(
        &tables,
        &flows,
        POD_A.ifindex,
        &pod_tcp(POD_A, 40000, WEB_V4, 80, SYN),
        1,
    );
    forwarded_to(verdict, POD_B);
    assert_eq!(
        seen,
        Observation {
            ct: CtOutcome::New,
            original: Some(tuple(POD_A.ipv4, 40000, WEB_V4, 80, TCP)),
            translated: Some(tuple(POD_A.ipv4, 40000, POD_B.ipv4, BACKEND_PORT, TCP)),
            service: Some(WEB_ID),
            tcp_flags: SYN,
            ..Observation::default()
        }
    );

    let (verdict, seen) = observe(
        &tables,
        &flows,
        POD_B.ifindex,
        &pod_tcp(POD_B, BACKEND_PORT, POD_A.ipv4, 40000, SYN | ACK),
        2,
    );
    forwarded_to(verdict, POD_A);
    assert_eq!(
        seen,
        Observation {
            ct: CtOutcome::Reply,
            original: Some(tuple(POD_B.ipv4, BACKEND_PORT, POD_A.ipv4, 40000, TCP)),
            translated: Some(tuple(WEB_V4, 80, POD_A.ipv4, 40000, TCP)),
            service: Some(WEB_ID),
            tcp_flags: SYN | ACK,
            ..Observation::default()
        }
    );

    // The client's next packet: tracked, still the service, still DNATed.
    let (_, seen) = observe(
        &tables,
        &flows,
        POD_A.ifindex,
        &pod_tcp(POD_A, 40000, WEB_V4, 80, ACK),
        3,
    );
    assert_eq!(seen.ct, CtOutcome::Established);
    assert_eq!(seen.service, Some(WEB_ID));
    assert_eq!(
        seen.translated,
        Some(tuple(POD_A.ipv4, 40000, POD_B.ipv4, BACKEND_PORT, TCP))
    );
}

#[test]
fn hairpin_notes_both_rewrites() {
    let (tables, flows) = (service_tables(), fixtures::flows());
    let (verdict, seen) = observe(
        &tables,
        &flows,
        POD_A.ifindex,
        &pod_tcp(POD_A, 40000, SELF_V4, 80, SYN),
        1,
    );
    forwarded_to(verdict, POD_A);
    assert_eq!(seen.service, Some(SELF_ID));
    assert_eq!(
        seen.translated,
        Some(tuple(SELF_V4, 40000, POD_A.ipv4, BACKEND_PORT, TCP))
    );
}

#[test]
fn a_node_port_from_outside_is_the_service() {
    let (tables, flows) = (service_tables(), fixtures::flows());
    let (verdict, seen) = observe(
        &tables,
        &flows,
        UPLINK_IFINDEX,
        &outside_tcp(OUTSIDE_V4, 50000, NODE_V4, WEB_NODE_PORT, SYN),
        1,
    );
    forwarded_to(verdict, POD_B);
    assert_eq!(
        seen,
        Observation {
            ct: CtOutcome::New,
            original: Some(tuple(OUTSIDE_V4, 50000, NODE_V4, WEB_NODE_PORT, TCP)),
            translated: Some(tuple(OUTSIDE_V4, 50000, POD_B.ipv4, BACKEND_PORT, TCP)),
            service: Some(WEB_ID),
            tcp_flags: SYN,
            ..Observation::default()
        }
    );
}

#[test]
fn masquerade_notes_the_node_source_then_the_reply_goes_back_to_the_pod() {
    let (tables, flows) = (service_tables(), fixtures::flows());
    let (verdict, seen) = observe(
        &tables,
        &flows,
        POD_A.ifindex,
        &pod_tcp(POD_A, 40000, INTERNET_V4, 443, SYN),
        1,
    );
    assert!(
        matches!(
            verdict,
            Verdict::Forward {
                ifindex: UPLINK_IFINDEX,
                ..
            }
        ),
        "{verdict:?}"
    );
    assert_eq!(
        seen,
        Observation {
            ct: CtOutcome::New,
            original: Some(tuple(POD_A.ipv4, 40000, INTERNET_V4, 443, TCP)),
            translated: Some(tuple(NODE_V4, MASQUERADE_PORT, INTERNET_V4, 443, TCP)),
            tcp_flags: SYN,
            ..Observation::default()
        }
    );

    let (verdict, seen) = observe(
        &tables,
        &flows,
        UPLINK_IFINDEX,
        &outside_tcp(INTERNET_V4, 443, NODE_V4, MASQUERADE_PORT, SYN | ACK),
        2,
    );
    forwarded_to(verdict, POD_A);
    assert_eq!(
        seen,
        Observation {
            ct: CtOutcome::Reply,
            original: Some(tuple(INTERNET_V4, 443, NODE_V4, MASQUERADE_PORT, TCP)),
            translated: Some(tuple(INTERNET_V4, 443, POD_A.ipv4, 40000, TCP)),
            tcp_flags: SYN | ACK,
            ..Observation::default()
        }
    );
}

#[test]
fn an_icmp_error_about_a_masqueraded_flow_is_its_reply_translated_to_the_pod() {
    let (tables, flows) = (service_tables(), fixtures::flows());
    let datagram = V4::new(POD_A.ipv4, INTERNET_V4, UDP, 64).packet(&udp(41000, 53, b"q"));
    let (_, opened) = observe(
        &tables,
        &flows,
        POD_A.ifindex,
        &from_pod(POD_A, &datagram),
        1,
    );
    assert_eq!(opened.ct, CtOutcome::New);
    // The datagram as it left: from the node's masquerade port.
    let left = V4::new(NODE_V4, INTERNET_V4, UDP, 63).packet(&udp(MASQUERADE_PORT, 53, b"q"));
    let error = ethernet(
        UPLINK_MAC,
        NEXT_HOP_MAC,
        ethertype::IPV4,
        &V4::new(INTERNET_V4, NODE_V4, ICMP, 64).packet(&icmp(3, 3, [0; 4], &left)),
    );
    let (verdict, seen) = observe(&tables, &flows, UPLINK_IFINDEX, &error, 2);
    forwarded_to(verdict, POD_A);
    assert_eq!(
        seen,
        Observation {
            ct: CtOutcome::Reply,
            original: Some(tuple(INTERNET_V4, 0, NODE_V4, 0, ICMP)),
            translated: Some(tuple(INTERNET_V4, 0, POD_A.ipv4, 0, ICMP)),
            icmp: Some((3, 3)),
            ..Observation::default()
        }
    );
}

#[test]
fn frames_dropped_after_the_parse_keep_their_tuple() {
    let (tables, flows) = (fixtures::tables(), fixtures::flows());
    // Pod A claiming pod B's address.
    let spoofed = from_pod(
        POD_A,
        &V4::new(POD_B.ipv4, POD_C.ipv4, UDP, 64).packet(&udp(1, 2, b"x")),
    );
    let (verdict, seen) = observe(&tables, &flows, POD_A.ifindex, &spoofed, 1);
    assert_eq!(verdict, Verdict::Drop(DropReason::SpoofedSourceIp));
    assert_eq!(
        seen,
        Observation {
            original: Some(tuple(POD_B.ipv4, 1, POD_C.ipv4, 2, UDP)),
            ..Observation::default()
        }
    );
    // An unassigned pod address has no route.
    let nowhere = Ipv4Addr::new(10, 200, 0, 99);
    let (verdict, seen) = observe(
        &tables,
        &flows,
        POD_A.ifindex,
        &pod_tcp(POD_A, 40000, nowhere, 80, SYN),
        2,
    );
    assert_eq!(verdict, Verdict::Drop(DropReason::NoRoute));
    assert_eq!(
        seen,
        Observation {
            original: Some(tuple(POD_A.ipv4, 40000, nowhere, 80, TCP)),
            tcp_flags: SYN,
            ..Observation::default()
        }
    );
}

#[test]
fn arp_has_no_tuple() {
    let (tables, flows) = (fixtures::tables(), fixtures::flows());
    let arp = fixtures::all()
        .into_iter()
        .find(|f| f.input.get(12..14) == Some(&ethertype::ARP.to_be_bytes()[..]))
        .expect("an ARP fixture");
    let (_, seen) = observe(&tables, &flows, arp.ingress_ifindex, &arp.input, 1);
    assert_eq!(seen, Observation::default());
}

#[test]
fn an_allowed_new_connection_notes_the_allowing_rule_per_direction() {
    let (tables, flows) = (policy_tables(), fixtures::flows());
    let (verdict, seen) = observe(
        &tables,
        &flows,
        POD_A.ifindex,
        &pod_tcp(POD_A, 41000, POD_B.ipv4, 81, SYN),
        1,
    );
    forwarded_to(verdict, POD_B);
    let both = PolicyNote {
        egress_enforced: true,
        egress_rule: rule::A_TO_B,
        ingress_enforced: true,
        ingress_rule: rule::B_FROM_A,
    };
    assert_eq!(
        seen,
        Observation {
            ct: CtOutcome::New,
            original: Some(tuple(POD_A.ipv4, 41000, POD_B.ipv4, 81, TCP)),
            tcp_flags: SYN,
            policy: Some(both),
            ..Observation::default()
        }
    );

    // The cached verdict: no policy step on the next packet...
    let next = pod_tcp(POD_A, 41000, POD_B.ipv4, 81, ACK);
    let (_, seen) = observe(&tables, &flows, POD_A.ifindex, &next, 2);
    assert_eq!((seen.ct, seen.policy), (CtOutcome::Established, None));
    // ...until the policy revision changes: checked again, same rules.
    let next_revision = policy_tables_with(policy_state(), 2);
    let (_, seen) = observe(&next_revision, &flows, POD_A.ifindex, &next, 3);
    assert_eq!((seen.ct, seen.policy), (CtOutcome::Established, Some(both)));

    // Pod C has no policy; pod A's ingress allows it.
    let (_, seen) = observe(
        &tables,
        &flows,
        POD_C.ifindex,
        &pod_tcp(POD_C, 42000, POD_A.ipv4, 22, SYN),
        4,
    );
    assert_eq!(
        seen.policy,
        Some(PolicyNote {
            egress_enforced: false,
            egress_rule: NO_RULE,
            ingress_enforced: true,
            ingress_rule: rule::A_FROM_C,
        })
    );
}

#[test]
fn a_policy_drop_notes_the_directions_checked_but_no_allowing_rule_for_the_denied_one() {
    let (tables, flows) = (policy_tables(), fixtures::flows());
    let (verdict, seen) = observe(
        &tables,
        &flows,
        POD_A.ifindex,
        &pod_tcp(POD_A, 41001, POD_B.ipv4, 80, SYN),
        1,
    );
    assert_eq!(
        verdict,
        Verdict::PolicyDrop {
            reason: DropReason::PolicyDeniedByDenylist,
            rule: rule::B_DENY_80,
            direction: PolicyDirection::Ingress,
        }
    );
    assert_eq!(
        seen,
        Observation {
            original: Some(tuple(POD_A.ipv4, 41001, POD_B.ipv4, 80, TCP)),
            tcp_flags: SYN,
            policy: Some(PolicyNote {
                egress_enforced: true,
                egress_rule: rule::A_TO_B,
                ingress_enforced: true,
                ingress_rule: NO_RULE,
            }),
            ..Observation::default()
        }
    );
}

#[test]
fn an_untracked_protocol_is_checked_per_packet() {
    let (tables, flows) = (policy_tables(), fixtures::flows());
    let gre = from_pod(
        POD_A,
        &V4::new(POD_A.ipv4, POD_B.ipv4, GRE, 64).packet(&[0, 0, 0x08, 0, 1, 2, 3, 4]),
    );
    let (verdict, seen) = observe(&tables, &flows, POD_A.ifindex, &gre, 1);
    forwarded_to(verdict, POD_B);
    assert_eq!(
        seen,
        Observation {
            original: Some(tuple(POD_A.ipv4, 0, POD_B.ipv4, 0, GRE)),
            policy: Some(PolicyNote {
                egress_enforced: true,
                egress_rule: rule::A_TO_B,
                ingress_enforced: true,
                ingress_rule: rule::B_FROM_A,
            }),
            ..Observation::default()
        }
    );
}

/// RD: a stub resolver's query.
const DNS_RD: u16 = 0x0100;
/// QR | RD | RA, NOERROR.
const DNS_ANSWER: u16 = 0x8180;
/// QR | RD | RA, NXDOMAIN.
const DNS_NXDOMAIN: u16 = 0x8183;
const QTYPE_A: u16 = 1;

fn dns_query(sport: u16, id: u16, name: &str) -> Vec<u8> {
    from_pod(
        POD_A,
        &V4::new(POD_A.ipv4, POD_B.ipv4, UDP, 64).packet(&udp(
            sport,
            53,
            &dns_message(id, DNS_RD, name),
        )),
    )
}

/// Pod B's answer to pod A's query on `dport`, with `flags` (NOERROR or
/// another RCODE) and one A record per address.
fn dns_answer(dport: u16, id: u16, flags: u16, name: &str, records: &[([u8; 4], u32)]) -> Vec<u8> {
    let mut message = dns_answer_message(id, name, records);
    message[2..4].copy_from_slice(&flags.to_be_bytes());
    from_pod(
        POD_B,
        &V4::new(POD_B.ipv4, POD_A.ipv4, UDP, 64).packet(&udp(53, dport, &message)),
    )
}

fn note(is_response: bool, id: u16, name: &str) -> DnsNote {
    let mut n = DnsNote {
        is_response,
        refused_by_policy: false,
        id,
        qtype: QTYPE_A,
        rcode: 0,
        name: [0; crate::DNS_NAME_MAX],
        name_len: name.len() as u8,
        name_truncated: false,
        addresses: [IpAddr::V4(Ipv4Addr::UNSPECIFIED); DNS_ADDRESSES_MAX],
        address_count: 0,
        ttl: 0,
    };
    n.name[..name.len()].copy_from_slice(name.as_bytes());
    n
}

#[test]
fn dns_query_and_answer_on_an_inspected_flow() {
    let (tables, flows) = (policy_tables(), fixtures::flows());
    let (verdict, seen) = observe(
        &tables,
        &flows,
        POD_A.ifindex,
        &dns_query(41012, 0x0101, "WWW.Allowed.test"),
        1,
    );
    forwarded_to(verdict, POD_B);
    assert_eq!(seen.ct, CtOutcome::New);
    assert_eq!(
        seen.policy.map(|p| (p.egress_rule, p.ingress_rule)),
        Some((rule::A_DNS_TO_B, rule::B_FROM_A))
    );
    assert_eq!(seen.dns, Some(note(false, 0x0101, "www.allowed.test")));
    assert_eq!(
        seen.dns.map(|d| d.name()).as_deref(),
        Some("www.allowed.test")
    );

    let answer = dns_answer(
        41012,
        0x0101,
        DNS_ANSWER,
        "www.allowed.test",
        &[([192, 0, 2, 1], 60), ([192, 0, 2, 2], 300)],
    );
    let (verdict, seen) = observe(&tables, &flows, POD_B.ifindex, &answer, 2);
    forwarded_to(verdict, POD_A);
    assert_eq!(seen.ct, CtOutcome::Reply);
    let mut expected = note(true, 0x0101, "www.allowed.test");
    expected.addresses[0] = v4(Ipv4Addr::new(192, 0, 2, 1));
    expected.addresses[1] = v4(Ipv4Addr::new(192, 0, 2, 2));
    expected.address_count = 2;
    expected.ttl = 60;
    assert_eq!(seen.dns, Some(expected));
    assert_eq!(
        seen.dns.map(|d| d.addresses().to_vec()),
        Some(vec![
            v4(Ipv4Addr::new(192, 0, 2, 1)),
            v4(Ipv4Addr::new(192, 0, 2, 2))
        ])
    );
}

#[test]
fn a_dns_answer_keeps_the_first_addresses_and_the_lowest_ttl_of_all() {
    let (tables, flows) = (policy_tables(), fixtures::flows());
    observe(
        &tables,
        &flows,
        POD_A.ifindex,
        &dns_query(41020, 7, "many.allowed.test"),
        1,
    );
    let records: Vec<([u8; 4], u32)> = (1..=10u8)
        .map(|i| ([192, 0, 2, i], 100 + u32::from(i)))
        .collect();
    // The lowest TTL is on a record beyond the addresses kept (not the last).
    let mut records = records;
    records[8].1 = 5;
    let (_, seen) = observe(
        &tables,
        &flows,
        POD_B.ifindex,
        &dns_answer(41020, 7, DNS_ANSWER, "many.allowed.test", &records),
        2,
    );
    let dns = seen.dns.expect("the answer is noted");
    assert_eq!(usize::from(dns.address_count), DNS_ADDRESSES_MAX);
    let kept: Vec<IpAddr> = (1..=DNS_ADDRESSES_MAX as u8)
        .map(|i| v4(Ipv4Addr::new(192, 0, 2, i)))
        .collect();
    assert_eq!(dns.addresses(), &kept[..]);
    assert_eq!(dns.ttl, 5);

    // An NXDOMAIN answer: its RCODE, no address.
    observe(
        &tables,
        &flows,
        POD_A.ifindex,
        &dns_query(41021, 8, "gone.allowed.test"),
        3,
    );
    let (_, seen) = observe(
        &tables,
        &flows,
        POD_B.ifindex,
        &dns_answer(41021, 8, DNS_NXDOMAIN, "gone.allowed.test", &[]),
        4,
    );
    let mut expected = note(true, 8, "gone.allowed.test");
    expected.rcode = 3;
    assert_eq!(seen.dns, Some(expected));
}

#[test]
fn a_query_refused_by_the_dns_rules_is_flagged() {
    let (tables, flows) = (policy_tables(), fixtures::flows());
    let (verdict, seen) = observe(
        &tables,
        &flows,
        POD_A.ifindex,
        &dns_query(41013, 0x0103, "x.denied.test"),
        1,
    );
    assert!(
        matches!(
            verdict,
            Verdict::Reject {
                reason: DropReason::DnsRefused,
                ..
            }
        ),
        "{verdict:?}"
    );
    let mut expected = note(false, 0x0103, "x.denied.test");
    expected.refused_by_policy = true;
    assert_eq!(seen.dns, Some(expected));
    // Refused before the insert: no flow was created.
    assert_eq!(seen.ct, CtOutcome::Untracked);
    assert_eq!(
        seen.original,
        Some(tuple(POD_A.ipv4, 41013, POD_B.ipv4, 53, UDP))
    );
}

/// Observing changes nothing: every fixture set gives the same verdicts and
/// frames through `process_observed` as through `process`.
#[test]
fn observing_does_not_change_what_the_pipeline_does() {
    let sets: [(Tables, Vec<fixtures::Fixture>); 4] = [
        (fixtures::tables(), fixtures::all()),
        (fixtures::uplink_tables(), fixtures::uplink_all()),
        (service_tables(), fixtures::service_all()),
        (policy_tables(), fixtures::policy_all()),
    ];
    for (tables, all) in &sets {
        let (plain_flows, observed_flows) = (fixtures::flows(), fixtures::flows());
        let mut observation = Observation::default();
        for (i, f) in all.iter().enumerate() {
            let now = i as u64;
            let mut plain = vec![0u8; f.capacity];
            let mut observed = vec![0u8; f.capacity];
            let len = f.input.len().min(f.capacity);
            plain[..len].copy_from_slice(&f.input[..len]);
            observed[..len].copy_from_slice(&f.input[..len]);
            let a = process(
                &mut plain,
                f.input.len(),
                f.ingress_ifindex,
                tables,
                &plain_flows,
                now,
            );
            observation.clear();
            let b = process_observed(
                &mut observed,
                f.input.len(),
                f.ingress_ifindex,
                tables,
                &observed_flows,
                now,
                &mut observation,
            );
            assert_eq!(a, b, "{}", f.description);
            assert_eq!(plain, observed, "{}", f.description);
        }
    }
}
