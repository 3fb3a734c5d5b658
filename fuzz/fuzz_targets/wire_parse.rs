//! Every parser over arbitrary bytes: no panic, offsets inside the frame, and
//! what parses re-emits to the same repr.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice_wire::{
    parse, ArpRepr, EthernetRepr, Icmpv4Repr, Icmpv6Repr, Ipv4Repr, Ipv6Repr, TcpRepr, UdpRepr, L3,
};

fuzz_target!(|data: &[u8]| {
    // Each repr on the raw bytes, with a round trip where it parses.
    let mut buf = [0u8; 64];
    if let Ok(r) = EthernetRepr::parse(data) {
        r.emit(&mut buf).unwrap();
        assert_eq!(EthernetRepr::parse(&buf), Ok(r));
    }
    if let Ok(r) = ArpRepr::parse(data) {
        r.emit(&mut buf).unwrap();
        assert_eq!(ArpRepr::parse(&buf), Ok(r));
    }
    if let Ok(r) = Ipv4Repr::parse(data) {
        let mut b = [0u8; 65536];
        r.emit(&mut b).unwrap();
        assert_eq!(Ipv4Repr::parse(&b[..20 + r.payload_len]), Ok(r));
    }
    if let Ok(r) = Ipv6Repr::parse(data) {
        let mut b = [0u8; 65576];
        r.emit(&mut b).unwrap();
        assert_eq!(Ipv6Repr::parse(&b[..40 + r.payload_len]), Ok(r));
    }
    if let Ok(r) = UdpRepr::parse(data) {
        r.emit(&mut buf).unwrap();
    }
    if let Ok(r) = TcpRepr::parse(data) {
        r.emit(&mut buf).unwrap();
        assert_eq!(TcpRepr::parse(&buf[..20]), Ok(r));
    }
    let _ = Icmpv4Repr::parse(data);
    if let Ok(r) = Icmpv6Repr::parse(data) {
        let len = r.buffer_len();
        let (s, d) = (
            core::net::Ipv6Addr::LOCALHOST,
            core::net::Ipv6Addr::UNSPECIFIED,
        );
        r.emit(s, d, &mut buf[..len]).unwrap();
        assert_eq!(Icmpv6Repr::parse(&buf[..len]), Ok(r));
    }
    if let Some((&nh, rest)) = data.split_first() {
        if let Ok(u) = sluice_wire::walk_extension_headers(nh, rest) {
            assert!(u.offset <= rest.len());
        }
    }

    // The one-pass frame parse.
    if let Ok(p) = parse(data) {
        match p.l3 {
            L3::Ipv4 { l4: Some(l4), .. } | L3::Ipv6 { l4: Some(l4), .. } => {
                assert!(l4.offset + l4.len <= data.len());
            }
            _ => {}
        }
    }
});
