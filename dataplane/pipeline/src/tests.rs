//! The fixture set, checked against the pipeline and against smoltcp.

use proptest::prelude::*;
use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    EthernetFrame, EthernetProtocol, Icmpv4Packet, Icmpv6Packet, Icmpv6Repr, IpProtocol,
    Ipv4Packet, Ipv6Packet, NdiscRepr,
};

use crate::fixtures::{self, Fixture, DEFAULT_CAPACITY};
use crate::{process, DropReason, Verdict};

fn run(f: &Fixture) -> (Verdict, Vec<u8>) {
    run_with(f, &fixtures::tables())
}

fn run_with(f: &Fixture, tables: &sluice_tables::Tables) -> (Verdict, Vec<u8>) {
    let mut chunk = vec![0u8; f.capacity];
    let verdict = f.run(tables, &mut chunk, 0);
    let out = match verdict {
        Verdict::Forward { len, .. } => chunk[..len].to_vec(),
        Verdict::Drop(_) => Vec::new(),
    };
    (verdict, out)
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
fn uplink_fixture_descriptions_are_unique_across_both_sets() {
    let all = fixtures::all();
    for f in fixtures::uplink_all() {
        assert!(
            all.iter().all(|o| o.description != f.description),
            "{}",
            f.description
        );
    }
}

fn check_fixtures(set: Vec<Fixture>, tables: &sluice_tables::Tables) {
    let mut failures = Vec::new();
    for f in set {
        let (verdict, out) = run_with(&f, tables);
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

/// Each drop reason the pipeline can produce per frame has a fixture.
#[test]
fn fixtures_cover_the_per_frame_reasons() {
    let all = fixtures::all();
    let per_frame_only = [DropReason::TxUnavailable, DropReason::RxRingDropped];
    for reason in DropReason::ALL
        .iter()
        .filter(|r| !per_frame_only.contains(r))
    {
        assert!(
            all.iter()
                .any(|f| f.expected_verdict == Verdict::Drop(*reason)),
            "no fixture drops with {reason:?}"
        );
    }
}

/// Every frame the pipeline sends is well formed to an independent decoder.
#[test]
fn forwarded_frames_decode_with_smoltcp() {
    for f in fixtures::all() {
        let (verdict, out) = run(&f);
        if !matches!(verdict, Verdict::Forward { .. }) {
            continue;
        }
        let eth = EthernetFrame::new_checked(&out[..]).unwrap();
        match eth.ethertype() {
            EthernetProtocol::Ipv4 => {
                let ip = Ipv4Packet::new_checked(eth.payload()).unwrap();
                assert!(ip.verify_checksum(), "{}", f.description);
                assert!(ip.hop_limit() > 0, "{}", f.description);
                if ip.next_header() == IpProtocol::Icmp {
                    let icmp = Icmpv4Packet::new_checked(ip.payload()).unwrap();
                    assert!(icmp.verify_checksum(), "{}", f.description);
                    assert!(ip.total_len() <= 576, "{}", f.description);
                }
            }
            EthernetProtocol::Ipv6 => {
                let ip = Ipv6Packet::new_checked(eth.payload()).unwrap();
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

fn check_no_panic_and_bounds(
    frame: &mut [u8],
    len: usize,
    ifindex: u32,
) -> Result<(), TestCaseError> {
    let capacity = frame.len();
    let original = frame.to_vec();
    for tables in [fixtures::tables(), fixtures::uplink_tables()] {
        frame.copy_from_slice(&original);
        if let Verdict::Forward { len, .. } = process(frame, len, ifindex, &tables, 0) {
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
