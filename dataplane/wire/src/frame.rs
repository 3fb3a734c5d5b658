//! One pass over an Ethernet frame: every header checked once, the result is a
//! set of offsets that later stages use without re-parsing.

use crate::ip_protocol::{ICMP, ICMPV6, TCP, UDP};
use crate::ipv6::UpperLayer;
use crate::{
    arp, ethernet, ethertype, icmpv4, icmpv6, ipv6, ArpPacket, EthernetFrame, Ipv4Packet,
    Ipv6Packet, MacAddress, ParseError, TcpPacket, UdpPacket,
};

/// Layer-4 header location. For TCP, UDP, ICMP and ICMPv6 the header has been
/// checked against its own length rules; other protocols are located only.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct L4 {
    pub protocol: u8,
    /// Absolute offset in the frame.
    pub offset: usize,
    /// Bytes from `offset` to the end of the IP payload.
    pub len: usize,
}

/// The network layer as found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum L3 {
    /// An Ethernet/IPv4 ARP request or reply at offset 14 (28 bytes, checked).
    Arp,
    Ipv4 {
        header_len: usize,
        total_len: usize,
        protocol: u8,
        /// More fragments or a non-zero offset: `l4` is `None`.
        fragment: bool,
        l4: Option<L4>,
    },
    Ipv6 {
        payload_len: usize,
        /// Where the extension-header walk stopped (offset relative to the
        /// IPv6 payload).
        upper: UpperLayer,
        /// `None` when a fragment header was present.
        l4: Option<L4>,
    },
    /// An ethertype this crate does not parse (including VLAN tags).
    Other,
}

/// Result of [`parse`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Parsed {
    pub dst: MacAddress,
    pub src: MacAddress,
    pub ethertype: u16,
    pub l3: L3,
}

/// Offset of the network header: no VLAN tags are parsed.
pub const L3_OFFSET: usize = ethernet::HEADER_LEN;

/// Parses an Ethernet frame and checks every header the engine reads: IPv4
/// (including its header checksum), the IPv6 extension chain, and the TCP, UDP
/// and ICMP headers of unfragmented packets.
pub fn parse(frame: &[u8]) -> Result<Parsed, ParseError> {
    let eth = EthernetFrame::new_checked(frame)?;
    let (dst, src, et) = (eth.dst(), eth.src(), eth.ethertype());
    let payload = eth.payload();
    let l3 = match et {
        ethertype::ARP => {
            ArpPacket::new_checked(payload)?.operation()?;
            debug_assert!(payload.len() >= arp::PACKET_LEN);
            L3::Arp
        }
        ethertype::IPV4 => {
            let ip = Ipv4Packet::new_checked(payload)?;
            if !ip.verify_checksum() {
                return Err(ParseError::Ipv4Checksum);
            }
            let fragment = ip.is_fragment();
            let l4 = if fragment {
                None
            } else {
                Some(check_l4(
                    ip.protocol(),
                    ip.payload(),
                    L3_OFFSET + ip.header_len(),
                )?)
            };
            L3::Ipv4 {
                header_len: ip.header_len(),
                total_len: ip.total_len(),
                protocol: ip.protocol(),
                fragment,
                l4,
            }
        }
        ethertype::IPV6 => {
            let ip = Ipv6Packet::new_checked(payload)?;
            let upper = ip.upper_layer()?;
            let l4 = match upper.fragment {
                Some(_) => None,
                None => Some(check_l4(
                    upper.protocol,
                    &ip.payload()[upper.offset..],
                    L3_OFFSET + ipv6::HEADER_LEN + upper.offset,
                )?),
            };
            L3::Ipv6 {
                payload_len: ip.payload_len(),
                upper,
                l4,
            }
        }
        _ => L3::Other,
    };
    Ok(Parsed {
        dst,
        src,
        ethertype: et,
        l3,
    })
}

fn check_l4(protocol: u8, bytes: &[u8], offset: usize) -> Result<L4, ParseError> {
    match protocol {
        TCP => {
            TcpPacket::new_checked(bytes)?;
        }
        UDP => {
            UdpPacket::new_checked(bytes)?;
        }
        ICMP if bytes.len() < icmpv4::HEADER_LEN => return Err(ParseError::Icmpv4Truncated),
        ICMPV6 if bytes.len() < icmpv6::HEADER_LEN => return Err(ParseError::Icmpv6Truncated),
        _ => {}
    }
    Ok(L4 {
        protocol,
        offset,
        len: bytes.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checksum;
    use crate::ip_protocol::{DESTINATION_OPTIONS, FRAGMENT};
    use crate::{EthernetRepr, Ipv4Repr, Ipv6Repr, TcpRepr, UdpRepr};
    use core::net::{Ipv4Addr, Ipv6Addr};
    use proptest::prelude::*;

    const A: MacAddress = [2, 0, 0, 0, 0, 2];
    const B: MacAddress = [2, 0x53, 0x4c, 0, 0, 1];

    fn udp4(payload_len: usize) -> Vec<u8> {
        let mut f = vec![0u8; 14 + 20 + 8 + payload_len];
        EthernetRepr {
            dst: B,
            src: A,
            ethertype: ethertype::IPV4,
        }
        .emit(&mut f)
        .unwrap();
        let (s, d) = (Ipv4Addr::new(10, 200, 0, 2), Ipv4Addr::new(10, 200, 0, 3));
        Ipv4Repr {
            src: s,
            dst: d,
            protocol: UDP,
            ttl: 64,
            tos: 0,
            ident: 1,
            dont_frag: true,
            more_frags: false,
            frag_offset: 0,
            payload_len: 8 + payload_len,
        }
        .emit(&mut f[14..])
        .unwrap();
        UdpRepr {
            src_port: 5000,
            dst_port: 53,
            payload_len,
        }
        .emit(&mut f[34..])
        .unwrap();
        let len = (8 + payload_len) as u32;
        UdpPacket::new_checked(&mut f[34..])
            .unwrap()
            .fill_checksum(checksum::pseudo_header_v4(s, d, UDP, len));
        f
    }

    fn tcp6_with_dest_opts() -> Vec<u8> {
        let mut f = vec![0u8; 14 + 40 + 8 + 20];
        EthernetRepr {
            dst: B,
            src: A,
            ethertype: ethertype::IPV6,
        }
        .emit(&mut f)
        .unwrap();
        let (s, d): (Ipv6Addr, Ipv6Addr) = ("fd00::2".parse().unwrap(), "fd00::3".parse().unwrap());
        Ipv6Repr {
            src: s,
            dst: d,
            next_header: DESTINATION_OPTIONS,
            hop_limit: 64,
            traffic_class: 0,
            flow_label: 0,
            payload_len: 28,
        }
        .emit(&mut f[14..])
        .unwrap();
        f[54..62].copy_from_slice(&[TCP, 0, 1, 4, 0, 0, 0, 0]);
        TcpRepr {
            src_port: 40000,
            dst_port: 443,
            seq_number: 7,
            ack_number: 0,
            flags: crate::tcp::flags::SYN,
            window: 1000,
            urgent_pointer: 0,
        }
        .emit(&mut f[62..])
        .unwrap();
        TcpPacket::new_checked(&mut f[62..])
            .unwrap()
            .fill_checksum(checksum::pseudo_header_v6(s, d, TCP, 20));
        f
    }

    #[test]
    fn udp4_offsets() {
        let f = udp4(4);
        let p = parse(&f).unwrap();
        assert_eq!(p.src, A);
        assert_eq!(
            p.l3,
            L3::Ipv4 {
                header_len: 20,
                total_len: 32,
                protocol: UDP,
                fragment: false,
                l4: Some(L4 {
                    protocol: UDP,
                    offset: 34,
                    len: 12
                })
            }
        );
    }

    #[test]
    fn tcp6_offsets_after_extension_header() {
        let f = tcp6_with_dest_opts();
        match parse(&f).unwrap().l3 {
            L3::Ipv6 { l4, upper, .. } => {
                assert_eq!(upper.extension_headers, 1);
                assert_eq!(
                    l4,
                    Some(L4 {
                        protocol: TCP,
                        offset: 62,
                        len: 20
                    })
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn l4_checks_reported() {
        let mut f = udp4(0);
        f[34 + 5] = 4; // UDP length below 8
        assert_eq!(parse(&f), Err(ParseError::UdpLength));
        let mut f = tcp6_with_dest_opts();
        f[62 + 12] = 0x30;
        assert_eq!(parse(&f), Err(ParseError::TcpDataOffset));
        let mut f = udp4(0);
        f[14 + 10] ^= 0xff;
        assert_eq!(parse(&f), Err(ParseError::Ipv4Checksum));
    }

    #[test]
    fn fragments_have_no_l4() {
        let mut f = tcp6_with_dest_opts();
        f[54..62].copy_from_slice(&[TCP, 0, 0, 1, 0, 0, 0, 1]);
        f[20] = FRAGMENT;
        match parse(&f).unwrap().l3 {
            L3::Ipv6 { l4, upper, .. } => {
                assert!(l4.is_none());
                assert!(upper.fragment.unwrap().more);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn vlan_is_other() {
        let mut f = udp4(0);
        f[12..14].copy_from_slice(&ethertype::VLAN.to_be_bytes());
        assert_eq!(parse(&f).unwrap().l3, L3::Other);
    }

    proptest! {
        #[test]
        fn every_truncation_is_an_error(payload_len in 0usize..64) {
            for f in [udp4(payload_len), tcp6_with_dest_opts()] {
                prop_assert!(parse(&f).is_ok());
                for n in 0..f.len() {
                    prop_assert!(parse(&f[..n]).is_err(), "length {n}");
                }
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = parse(&bytes);
        }

        #[test]
        fn mutated_frames_never_panic(at in any::<prop::sample::Index>(), byte in any::<u8>()) {
            for mut f in [udp4(8), tcp6_with_dest_opts()] {
                let i = at.index(f.len());
                f[i] = byte;
                if let Ok(p) = parse(&f) {
                    if let L3::Ipv4 { l4: Some(l4), .. } | L3::Ipv6 { l4: Some(l4), .. } = p.l3 {
                        prop_assert!(l4.offset + l4.len <= f.len());
                    }
                }
            }
        }
    }
}
