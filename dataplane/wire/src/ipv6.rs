//! IPv6 headers (RFC 8200) and the extension-header walk.

use core::net::Ipv6Addr;

use crate::ip_protocol::{AH, DESTINATION_OPTIONS, FRAGMENT, HOP_BY_HOP, ROUTING};
use crate::{arr16, be16, be32, put16, put32, BufferTooSmall, ParseError};

mod field {
    pub const VER_TC_FLOW: usize = 0;
    pub const PAYLOAD_LEN: usize = 4;
    pub const NEXT_HEADER: usize = 6;
    pub const HOP_LIMIT: usize = 7;
    pub const SRC: usize = 8;
    pub const DST: usize = 24;
}

pub const HEADER_LEN: usize = 40;

/// Longest extension-header chain the walk follows. RFC 8200 recommends each
/// header at most once (destination options twice); more is an attack.
pub const MAX_EXTENSION_HEADERS: usize = 8;

/// Checked view of an IPv6 packet. `new_checked` validates the version and
/// that the payload length fits the buffer; bytes past it are ignored.
#[derive(Debug, Clone)]
pub struct Ipv6Packet<T> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv6Packet<T> {
    pub fn new_checked(buffer: T) -> Result<Self, ParseError> {
        let b = buffer.as_ref();
        if b.len() < HEADER_LEN {
            return Err(ParseError::Ipv6Truncated);
        }
        if b[field::VER_TC_FLOW] >> 4 != 6 {
            return Err(ParseError::Ipv6Version);
        }
        if HEADER_LEN + usize::from(be16(b, field::PAYLOAD_LEN)) > b.len() {
            return Err(ParseError::Ipv6PayloadTruncated);
        }
        Ok(Ipv6Packet { buffer })
    }

    fn b(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    pub fn traffic_class(&self) -> u8 {
        ((be32(self.b(), field::VER_TC_FLOW) >> 20) & 0xff) as u8
    }

    pub fn flow_label(&self) -> u32 {
        be32(self.b(), field::VER_TC_FLOW) & 0x000f_ffff
    }

    pub fn payload_len(&self) -> usize {
        usize::from(be16(self.b(), field::PAYLOAD_LEN))
    }

    /// Header plus payload length.
    pub fn total_len(&self) -> usize {
        HEADER_LEN + self.payload_len()
    }

    pub fn next_header(&self) -> u8 {
        self.b()[field::NEXT_HEADER]
    }

    pub fn hop_limit(&self) -> u8 {
        self.b()[field::HOP_LIMIT]
    }

    pub fn src(&self) -> Ipv6Addr {
        Ipv6Addr::from(arr16(self.b(), field::SRC))
    }

    pub fn dst(&self) -> Ipv6Addr {
        Ipv6Addr::from(arr16(self.b(), field::DST))
    }

    pub fn payload(&self) -> &[u8] {
        &self.b()[HEADER_LEN..self.total_len()]
    }

    /// Walks the extension headers of this packet.
    pub fn upper_layer(&self) -> Result<UpperLayer, ParseError> {
        walk_extension_headers(self.next_header(), self.payload())
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv6Packet<T> {
    fn bm(&mut self) -> &mut [u8] {
        self.buffer.as_mut()
    }

    pub fn set_hop_limit(&mut self, hop_limit: u8) {
        self.bm()[field::HOP_LIMIT] = hop_limit;
    }

    pub fn set_src(&mut self, addr: Ipv6Addr) {
        self.bm()[field::SRC..field::SRC + 16].copy_from_slice(&addr.octets());
    }

    pub fn set_dst(&mut self, addr: Ipv6Addr) {
        self.bm()[field::DST..field::DST + 16].copy_from_slice(&addr.octets());
    }

    pub fn payload_mut(&mut self) -> &mut [u8] {
        let end = self.total_len();
        &mut self.bm()[HEADER_LEN..end]
    }
}

/// A decoded fixed IPv6 header (extension headers are part of the payload).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv6Repr {
    pub src: Ipv6Addr,
    pub dst: Ipv6Addr,
    pub next_header: u8,
    pub hop_limit: u8,
    pub traffic_class: u8,
    /// 20 bits.
    pub flow_label: u32,
    pub payload_len: usize,
}

impl Ipv6Repr {
    pub fn parse(buffer: &[u8]) -> Result<Self, ParseError> {
        let p = Ipv6Packet::new_checked(buffer)?;
        Ok(Ipv6Repr {
            src: p.src(),
            dst: p.dst(),
            next_header: p.next_header(),
            hop_limit: p.hop_limit(),
            traffic_class: p.traffic_class(),
            flow_label: p.flow_label(),
            payload_len: p.payload_len(),
        })
    }

    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    pub fn emit(&self, buffer: &mut [u8]) -> Result<(), BufferTooSmall> {
        let b = buffer.get_mut(..HEADER_LEN).ok_or(BufferTooSmall)?;
        let word =
            (6u32 << 28) | (u32::from(self.traffic_class) << 20) | (self.flow_label & 0x000f_ffff);
        put32(b, field::VER_TC_FLOW, word);
        put16(b, field::PAYLOAD_LEN, self.payload_len as u16);
        b[field::NEXT_HEADER] = self.next_header;
        b[field::HOP_LIMIT] = self.hop_limit;
        b[field::SRC..field::SRC + 16].copy_from_slice(&self.src.octets());
        b[field::DST..field::DST + 16].copy_from_slice(&self.dst.octets());
        Ok(())
    }
}

/// What a fragment header said.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fragment {
    /// Offset in bytes of this fragment's data in the original payload.
    pub offset: u16,
    pub more: bool,
    pub ident: u32,
}

impl Fragment {
    /// Only the first fragment carries the upper-layer header.
    pub const fn is_first(&self) -> bool {
        self.offset == 0
    }
}

/// Where the extension-header walk stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UpperLayer {
    /// Upper-layer protocol (TCP, UDP, ICMPv6, ESP, no-next-header, anything
    /// unknown), or after a non-first fragment, the fragment's next header.
    pub protocol: u8,
    /// Offset of the upper-layer header from the start of the IPv6 payload.
    pub offset: usize,
    /// The fragment header, when there was one. When it is not the first
    /// fragment, the walk stops right after it: the bytes at `offset` are
    /// fragment data, not a header.
    pub fragment: Option<Fragment>,
    /// Number of extension headers walked.
    pub extension_headers: u8,
}

/// Follows the extension-header chain of an IPv6 payload starting at
/// `next_header`: hop-by-hop (first only), routing, fragment, destination
/// options and AH; stops at the first other protocol, which is the upper layer.
pub fn walk_extension_headers(next_header: u8, payload: &[u8]) -> Result<UpperLayer, ParseError> {
    let mut protocol = next_header;
    let mut offset = 0usize;
    let mut fragment = None;
    let mut count = 0usize;
    loop {
        let header_len = match protocol {
            HOP_BY_HOP | ROUTING | DESTINATION_OPTIONS => {
                if protocol == HOP_BY_HOP && count > 0 {
                    return Err(ParseError::Ipv6HopByHopNotFirst);
                }
                let len = payload
                    .get(offset + 1)
                    .ok_or(ParseError::Ipv6ExtensionTruncated)?;
                (usize::from(*len) + 1) * 8
            }
            AH => {
                let len = payload
                    .get(offset + 1)
                    .ok_or(ParseError::Ipv6ExtensionTruncated)?;
                (usize::from(*len) + 2) * 4
            }
            FRAGMENT => 8,
            _ => {
                return Ok(UpperLayer {
                    protocol,
                    offset,
                    fragment,
                    extension_headers: count as u8,
                })
            }
        };
        if count >= MAX_EXTENSION_HEADERS {
            return Err(ParseError::Ipv6ExtensionChainTooLong);
        }
        let header = payload
            .get(offset..offset + header_len)
            .ok_or(ParseError::Ipv6ExtensionTruncated)?;
        let this = protocol;
        protocol = header[0];
        offset += header_len;
        count += 1;
        if this == FRAGMENT {
            let word = be16(header, 2);
            let frag = Fragment {
                offset: word & 0xfff8,
                more: word & 1 == 1,
                ident: be32(header, 4),
            };
            fragment = Some(frag);
            if !frag.is_first() {
                return Ok(UpperLayer {
                    protocol,
                    offset,
                    fragment,
                    extension_headers: count as u8,
                });
            }
        }
    }
}

/// fe80::/64, the only link-local prefix in use (RFC 4291 §2.5.6).
pub fn is_link_local(addr: &Ipv6Addr) -> bool {
    let o = addr.octets();
    o[0] == 0xfe && o[1] == 0x80 && o[2..8] == [0; 6]
}

/// ff02::1:ffXX:XXXX for `target` (RFC 4291 §2.7.1).
pub fn solicited_node(target: &Ipv6Addr) -> Ipv6Addr {
    let t = target.octets();
    Ipv6Addr::new(
        0xff02,
        0,
        0,
        0,
        0,
        1,
        0xff00 | u16::from(t[13]),
        u16::from_be_bytes([t[14], t[15]]),
    )
}

pub const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ip_protocol::{ESP, TCP, UDP};
    use proptest::prelude::*;

    fn header(next_header: u8, payload_len: u16) -> [u8; 40] {
        let mut b = [0u8; 40];
        Ipv6Repr {
            src: "fd00::2".parse().unwrap(),
            dst: "fd00::3".parse().unwrap(),
            next_header,
            hop_limit: 64,
            traffic_class: 0,
            flow_label: 0x12345,
            payload_len: usize::from(payload_len),
        }
        .emit(&mut b)
        .unwrap();
        b
    }

    #[test]
    fn parses_like_smoltcp() {
        let b = header(UDP, 0);
        let r = Ipv6Repr::parse(&b).unwrap();
        let o = smoltcp::wire::Ipv6Packet::new_checked(&b[..]).unwrap();
        assert_eq!(o.flow_label(), r.flow_label);
        assert_eq!(o.src_addr(), r.src);
        assert_eq!(o.hop_limit(), 64);
    }

    #[test]
    fn errors() {
        let b = header(UDP, 8);
        assert_eq!(Ipv6Repr::parse(&b), Err(ParseError::Ipv6PayloadTruncated));
        let mut v = header(UDP, 0);
        v[0] = 0x45;
        assert_eq!(Ipv6Repr::parse(&v), Err(ParseError::Ipv6Version));
        assert_eq!(Ipv6Repr::parse(&v[..39]), Err(ParseError::Ipv6Truncated));
    }

    #[test]
    fn walks_hop_by_hop_routing_dest_fragment_ah() {
        let chain = [
            ROUTING,
            0,
            1,
            4,
            0,
            0,
            0,
            0, // hop-by-hop, 8 bytes, PadN
            DESTINATION_OPTIONS,
            0,
            0,
            0,
            0,
            0,
            0,
            0, // routing type 0, segments left 0
            FRAGMENT,
            0,
            1,
            4,
            0,
            0,
            0,
            0, // destination options
            AH,
            0,
            0x00,
            0x01,
            0,
            0,
            0,
            7, // fragment: offset 0, M=1, id 7
            TCP,
            1,
            0,
            0,
            0,
            0,
            0,
            1,
            0,
            0,
            0,
            1,    // AH payload len 1 => 12 bytes
            0xaa, // upper layer starts here
        ];
        let u = walk_extension_headers(HOP_BY_HOP, &chain).unwrap();
        assert_eq!(u.protocol, TCP);
        assert_eq!(u.offset, 44);
        assert_eq!(u.extension_headers, 5);
        assert_eq!(
            u.fragment,
            Some(Fragment {
                offset: 0,
                more: true,
                ident: 7
            })
        );
        for n in 0..44 {
            assert_eq!(
                walk_extension_headers(HOP_BY_HOP, &chain[..n]),
                Err(ParseError::Ipv6ExtensionTruncated),
                "{n}"
            );
        }
    }

    #[test]
    fn stops_after_a_later_fragment() {
        let chain = [UDP, 0, 0x05, 0x08, 0, 0, 0, 9, 1, 2, 3];
        let u = walk_extension_headers(FRAGMENT, &chain).unwrap();
        assert_eq!(u.protocol, UDP);
        assert_eq!(u.offset, 8);
        assert_eq!(u.fragment.unwrap().offset, 0x0508);
        assert!(!u.fragment.unwrap().is_first());
    }

    #[test]
    fn hop_by_hop_only_first_and_chain_bounded() {
        let chain = [HOP_BY_HOP, 0, 0, 0, 0, 0, 0, 0, TCP, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(
            walk_extension_headers(DESTINATION_OPTIONS, &chain),
            Err(ParseError::Ipv6HopByHopNotFirst)
        );
        let mut long = [0u8; 8 * 10];
        for h in long.chunks_mut(8) {
            h[0] = DESTINATION_OPTIONS;
        }
        assert_eq!(
            walk_extension_headers(DESTINATION_OPTIONS, &long),
            Err(ParseError::Ipv6ExtensionChainTooLong)
        );
        assert_eq!(walk_extension_headers(ESP, &[]).unwrap().protocol, ESP);
    }

    #[test]
    fn solicited_node_and_link_local() {
        let a: Ipv6Addr = "fe80::1".parse().unwrap();
        assert_eq!(
            solicited_node(&a),
            "ff02::1:ff00:1".parse::<Ipv6Addr>().unwrap()
        );
        assert!(is_link_local(&a));
        assert!(!is_link_local(&"fe80:1::1".parse().unwrap()));
        assert!(!is_link_local(&"fd00::1".parse().unwrap()));
    }

    proptest! {
        #[test]
        fn round_trip(
            src in any::<[u8; 16]>(), dst in any::<[u8; 16]>(), next_header in any::<u8>(),
            hop_limit in any::<u8>(), traffic_class in any::<u8>(), flow_label in 0u32..(1 << 20),
            payload_len in 0usize..1460,
        ) {
            let repr = Ipv6Repr {
                src: src.into(), dst: dst.into(), next_header, hop_limit, traffic_class,
                flow_label, payload_len,
            };
            let mut buf = [0u8; 1500];
            repr.emit(&mut buf).unwrap();
            prop_assert_eq!(Ipv6Repr::parse(&buf[..HEADER_LEN + payload_len]), Ok(repr));
            for n in 0..HEADER_LEN + payload_len {
                prop_assert!(Ipv6Repr::parse(&buf[..n]).is_err());
            }
        }

        #[test]
        fn walk_never_panics(next_header in any::<u8>(), payload in proptest::collection::vec(any::<u8>(), 0..200)) {
            if let Ok(u) = walk_extension_headers(next_header, &payload) {
                prop_assert!(u.offset <= payload.len());
            }
        }
    }
}
