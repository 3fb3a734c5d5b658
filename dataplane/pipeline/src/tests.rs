//! The fixture set, checked against the pipeline and against smoltcp.

use proptest::prelude::*;
use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    EthernetFrame, EthernetProtocol, Icmpv4Packet, Icmpv6Packet, Icmpv6Repr, IpAddress, IpProtocol,
    Ipv4Packet, Ipv6Packet, NdiscRepr, TcpPacket, UdpPacket,
};

use crate::fixtures::{self, Fixture, DEFAULT_CAPACITY};
use crate::{process, DropReason, FlowTables, Verdict};

/// Every fixture set with the tables it runs against.
fn sets() -> Vec<(&'static str, Vec<Fixture>, sluice_tables::Tables)> {
    vec![
        ("all", fixtures::all(), fixtures::tables()),
        (
            "uplink_all",
            fixtures::uplink_all(),
            fixtures::uplink_tables(),
        ),
        (
            "service_all",
            fixtures::service_all(),
            fixtures::service_tables(),
        ),
        (
            "policy_all",
            fixtures::policy_all(),
            fixtures::policy_tables(),
        ),
    ]
}

fn run_with(f: &Fixture, tables: &sluice_tables::Tables, flows: &FlowTables) -> (Verdict, Vec<u8>) {
    let mut chunk = vec![0u8; f.capacity];
    let verdict = f.run(tables, flows, &mut chunk, 0);
    let out = match verdict {
        Verdict::Forward { len, .. } | Verdict::Reject { len, .. } => chunk[..len].to_vec(),
        Verdict::Drop(_) | Verdict::PolicyDrop { .. } => Vec::new(),
    };
    (verdict, out)
}

/// Runs a set in order with one flow table; the outputs of every fixture.
fn run_set(set: &[Fixture], tables: &sluice_tables::Tables) -> Vec<(Verdict, Vec<u8>)> {
    let flows = fixtures::flows();
    set.iter().map(|f| run_with(f, tables, &flows)).collect()
}

#[test]
fn every_fixture_gives_its_verdict_and_frame() {
    check_fixtures(fixtures::all(), &fixtures::tables());
}

#[test]
fn every_uplink_fixture_gives_its_verdict_and_frame() {
    check_fixtures(fixtures::uplink_all(), &fixtures::uplink_tables());
}

#[test]
fn every_service_fixture_gives_its_verdict_and_frame() {
    let tables = fixtures::service_tables();
    assert_eq!(
        tables.services.len(),
        fixtures::services().len(),
        "ServiceTable::build refused or lost the fixture services"
    );
    check_fixtures(fixtures::service_all(), &tables);
}

#[test]
fn every_policy_fixture_gives_its_verdict_and_frame() {
    let tables = fixtures::policy_tables();
    assert_eq!(
        tables.policy.state(),
        &fixtures::policy_state(),
        "PolicyTables::build_for refused the fixture policy"
    );
    assert_eq!(tables.ipcache.len(), fixtures::policy_ipcache().len());
    check_fixtures(fixtures::policy_all(), &tables);
}

/// The policy fixtures are decided by policy: without it (the same tables,
/// no policy), every one of them that policy drops or refuses goes through.
#[test]
fn without_the_policy_the_policy_fixtures_pass() {
    let mut tables = fixtures::policy_tables();
    tables.policy = Default::default();
    let outputs = run_set(&fixtures::policy_all(), &tables);
    for (f, (verdict, _)) in fixtures::policy_all().iter().zip(outputs) {
        let by_policy = matches!(
            f.expected_verdict,
            Verdict::PolicyDrop { .. }
                | Verdict::Reject {
                    reason: DropReason::DnsRefused,
                    ..
                }
        );
        if by_policy {
            assert!(
                matches!(verdict, Verdict::Forward { .. }),
                "{}: {verdict:?}",
                f.description
            );
        }
    }
}

#[test]
fn fixture_descriptions_are_unique_across_the_sets() {
    let mut seen = std::collections::HashSet::new();
    for (_, set, _) in sets() {
        for f in set {
            assert!(seen.insert(f.description), "{}", f.description);
        }
    }
}

fn check_fixtures(set: Vec<Fixture>, tables: &sluice_tables::Tables) {
    let mut failures = Vec::new();
    let outputs = run_set(&set, tables);
    for (f, (verdict, out)) in set.iter().zip(outputs) {
        if verdict != f.expected_verdict {
            failures.push(format!(
                "{}: got {verdict:?}, want {:?}",
                f.description, f.expected_verdict
            ));
        } else if let Some(want) = &f.expected_output {
            if &out != want {
                let at = out.iter().zip(want).position(|(a, b)| a != b);
                failures.push(format!(
                    "{}: output differs at byte {at:?} (len {} vs {})",
                    f.description,
                    out.len(),
                    want.len()
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn descriptions_are_unique() {
    let all = fixtures::all();
    for f in &all {
        assert_eq!(
            all.iter()
                .filter(|o| o.description == f.description)
                .count(),
            1,
            "{}",
            f.description
        );
    }
}

/// Each drop reason the pipeline can produce per frame has a fixture; the
/// ones that need a prepared flow table have tests in `flow_tests`.
#[test]
fn fixtures_cover_the_per_frame_reasons() {
    let all: Vec<Fixture> = sets().into_iter().flat_map(|(_, set, _)| set).collect();
    let not_per_frame = [DropReason::TxUnavailable, DropReason::RxRingDropped];
    let stateful = [
        DropReason::CtFull,
        DropReason::NatPortExhausted,
        DropReason::CtTupleTaken,
    ];
    for reason in DropReason::ALL
        .iter()
        .filter(|r| !not_per_frame.contains(r) && !stateful.contains(r))
    {
        assert!(
            all.iter()
                .any(|f| f.expected_verdict.drop_reason() == Some(*reason)),
            "no fixture drops with {reason:?}"
        );
    }
}

/// Every frame the pipeline sends is well formed to an independent decoder,
/// including the TCP and UDP checksums of translated packets.
#[test]
fn forwarded_frames_decode_with_smoltcp() {
    for (_, set, tables) in sets() {
        let outputs = run_set(&set, &tables);
        for (f, (verdict, out)) in set.iter().zip(outputs) {
            if matches!(verdict, Verdict::Drop(_) | Verdict::PolicyDrop { .. }) {
                continue;
            }
            decodes_with_smoltcp(f, &out);
        }
    }
}

fn decodes_with_smoltcp(f: &Fixture, out: &[u8]) {
    {
        let eth = EthernetFrame::new_checked(out).unwrap();
        match eth.ethertype() {
            EthernetProtocol::Ipv4 => {
                let ip = Ipv4Packet::new_checked(eth.payload()).unwrap();
                assert!(ip.verify_checksum(), "{}", f.description);
                assert!(ip.hop_limit() > 0, "{}", f.description);
                let (s, d) = (
                    IpAddress::Ipv4(ip.src_addr()),
                    IpAddress::Ipv4(ip.dst_addr()),
                );
                transport_checksums_verify(f, ip.next_header(), ip.payload(), &s, &d);
                if ip.next_header() == IpProtocol::Icmp {
                    let icmp = Icmpv4Packet::new_checked(ip.payload()).unwrap();
                    assert!(icmp.verify_checksum(), "{}", f.description);
                    assert!(ip.total_len() <= 576, "{}", f.description);
                }
            }
            EthernetProtocol::Ipv6 => {
                let ip = Ipv6Packet::new_checked(eth.payload()).unwrap();
                let (s, d) = (
                    IpAddress::Ipv6(ip.src_addr()),
                    IpAddress::Ipv6(ip.dst_addr()),
                );
                transport_checksums_verify(f, ip.next_header(), ip.payload(), &s, &d);
                if ip.next_header() == IpProtocol::Icmpv6 {
                    let (src, dst) = (ip.src_addr(), ip.dst_addr());
                    let icmp = Icmpv6Packet::new_checked(ip.payload()).unwrap();
                    assert!(icmp.verify_checksum(&src, &dst), "{}", f.description);
                    assert!(
                        usize::from(ip.payload_len()) + 40 <= 1280,
                        "{}",
                        f.description
                    );
                    let repr =
                        Icmpv6Repr::parse(&src, &dst, &icmp, &ChecksumCapabilities::default());
                    if let Ok(Icmpv6Repr::Ndisc(nd)) = repr {
                        assert!(
                            matches!(
                                nd,
                                NdiscRepr::NeighborAdvert {
                                    lladdr: Some(_),
                                    ..
                                }
                            ),
                            "{}",
                            f.description
                        );
                        assert_eq!(ip.hop_limit(), 255);
                    }
                }
            }
            EthernetProtocol::Arp => {
                let arp = smoltcp::wire::ArpPacket::new_checked(eth.payload()).unwrap();
                smoltcp::wire::ArpRepr::parse(&arp).unwrap();
            }
            other => panic!("{}: {other:?}", f.description),
        }
    }
}

/// TCP and UDP checksums of a sent packet verify against its (new) addresses.
fn transport_checksums_verify(
    f: &Fixture,
    protocol: IpProtocol,
    payload: &[u8],
    src: &IpAddress,
    dst: &IpAddress,
) {
    match protocol {
        IpProtocol::Tcp => {
            let tcp = TcpPacket::new_checked(payload).unwrap();
            assert!(
                tcp.verify_checksum(src, dst),
                "{}: TCP checksum",
                f.description
            );
        }
        IpProtocol::Udp => {
            let udp = UdpPacket::new_checked(payload).unwrap();
            assert!(
                udp.verify_checksum(src, dst),
                "{}: UDP checksum",
                f.description
            );
        }
        _ => {}
    }
}

fn check_no_panic_and_bounds(
    frame: &mut [u8],
    len: usize,
    ifindex: u32,
) -> Result<(), TestCaseError> {
    let capacity = frame.len();
    let original = frame.to_vec();
    let flows = fixtures::flows();
    for tables in [
        fixtures::tables(),
        fixtures::uplink_tables(),
        fixtures::service_tables(),
        fixtures::policy_tables(),
    ] {
        frame.copy_from_slice(&original);
        if let Verdict::Forward { len, .. } | Verdict::Reject { len, .. } =
            process(frame, len, ifindex, &tables, &flows, 0)
        {
            prop_assert!(len <= capacity);
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_bytes_never_panic(
        bytes in proptest::collection::vec(any::<u8>(), 0..1600),
        capacity_extra in 0usize..64,
        len_delta in -4isize..4,
        from in 0u8..3,
    ) {
        let mut frame = bytes.clone();
        frame.resize(bytes.len() + capacity_extra, 0);
        let len = bytes.len().saturating_add_signed(len_delta);
        let ifindex = match from {
            0 => fixtures::POD_A.ifindex,
            1 => fixtures::UPLINK_IFINDEX,
            _ => 7,
        };
        check_no_panic_and_bounds(&mut frame, len, ifindex)?;
    }

    /// Fixture inputs with a few bytes changed reach deep into every stage.
    #[test]
    fn mutated_fixtures_never_panic(
        which in any::<prop::sample::Index>(),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        cut in any::<prop::sample::Index>(),
        capacity in 0usize..DEFAULT_CAPACITY,
    ) {
        let mut all = fixtures::all();
        all.extend(fixtures::uplink_all());
        all.extend(fixtures::service_all());
        all.extend(fixtures::policy_all());
        let f = &all[which.index(all.len())];
        let mut frame = f.input.clone();
        for (at, byte) in edits {
            let i = at.index(frame.len().max(1));
            if let Some(b) = frame.get_mut(i) {
                *b = byte;
            }
        }
        let len = cut.index(frame.len() + 1);
        frame.resize(frame.len().max(capacity), 0);
        check_no_panic_and_bounds(&mut frame, len, f.ingress_ifindex)?;
    }
}
