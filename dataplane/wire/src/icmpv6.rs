//! ICMPv6 (RFC 4443) and neighbour discovery (RFC 4861) with link-layer
//! address options.

use core::net::Ipv6Addr;

use crate::{
    arr16, arr6, be16, be32, checksum, ip_protocol, put16, put32, BufferTooSmall, MacAddress,
    ParseError,
};

pub const HEADER_LEN: usize = 8;

/// ICMPv6 message types.
pub mod msg_type {
    pub const DST_UNREACHABLE: u8 = 1;
    pub const PACKET_TOO_BIG: u8 = 2;
    pub const TIME_EXCEEDED: u8 = 3;
    pub const PARAMETER_PROBLEM: u8 = 4;
    pub const ECHO_REQUEST: u8 = 128;
    pub const ECHO_REPLY: u8 = 129;
    pub const MLD_QUERY: u8 = 130;
    pub const MLD_REPORT: u8 = 131;
    pub const MLD_DONE: u8 = 132;
    pub const ROUTER_SOLICIT: u8 = 133;
    pub const ROUTER_ADVERT: u8 = 134;
    pub const NEIGHBOR_SOLICIT: u8 = 135;
    pub const NEIGHBOR_ADVERT: u8 = 136;
    pub const REDIRECT: u8 = 137;
    pub const MLDV2_REPORT: u8 = 143;

    /// Error messages (types below 128), which never get an error in reply.
    pub const fn is_error(t: u8) -> bool {
        t < 128
    }

    /// Neighbour discovery (RS, RA, NS, NA, redirect) and MLD: link-local
    /// control traffic, never routed.
    pub const fn is_link_control(t: u8) -> bool {
        matches!(
            t,
            MLD_QUERY
                | MLD_REPORT
                | MLD_DONE
                | ROUTER_SOLICIT
                | ROUTER_ADVERT
                | NEIGHBOR_SOLICIT
                | NEIGHBOR_ADVERT
                | REDIRECT
                | MLDV2_REPORT
        )
    }
}

/// Neighbour advertisement flags (first byte of the reserved word).
pub mod na_flags {
    pub const ROUTER: u8 = 0x80;
    pub const SOLICITED: u8 = 0x40;
    pub const OVERRIDE: u8 = 0x20;
}

/// Fixed part of an NS or NA: header plus the 16-byte target.
pub const NDISC_NEIGHBOR_LEN: usize = 24;
/// A link-layer address option for Ethernet.
pub const LLADDR_OPTION_LEN: usize = 8;

const OPT_SOURCE_LLADDR: u8 = 1;
const OPT_TARGET_LLADDR: u8 = 2;

/// Checked view of an ICMPv6 message (the whole message).
#[derive(Debug, Clone)]
pub struct Icmpv6Packet<T> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Icmpv6Packet<T> {
    pub fn new_checked(buffer: T) -> Result<Self, ParseError> {
        if buffer.as_ref().len() < HEADER_LEN {
            return Err(ParseError::Icmpv6Truncated);
        }
        Ok(Icmpv6Packet { buffer })
    }

    pub fn msg_type(&self) -> u8 {
        self.buffer.as_ref()[0]
    }

    pub fn code(&self) -> u8 {
        self.buffer.as_ref()[1]
    }

    pub fn checksum(&self) -> u16 {
        be16(self.buffer.as_ref(), 2)
    }

    pub fn rest_of_header(&self) -> u32 {
        be32(self.buffer.as_ref(), 4)
    }

    pub fn data(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..]
    }

    pub fn len(&self) -> usize {
        self.buffer.as_ref().len()
    }

    pub fn is_empty(&self) -> bool {
        false
    }

    /// Sum over the pseudo-header and the message (RFC 4443 §2.3).
    pub fn verify_checksum(&self, src: Ipv6Addr, dst: Ipv6Addr) -> bool {
        let b = self.buffer.as_ref();
        let acc = checksum::pseudo_header_v6(src, dst, ip_protocol::ICMPV6, b.len() as u32)
            + checksum::sum(b);
        checksum::fold(acc) == 0xffff
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Icmpv6Packet<T> {
    pub fn set_msg_type(&mut self, t: u8) {
        self.buffer.as_mut()[0] = t;
    }

    pub fn set_code(&mut self, c: u8) {
        self.buffer.as_mut()[1] = c;
    }

    pub fn set_checksum(&mut self, csum: u16) {
        put16(self.buffer.as_mut(), 2, csum);
    }

    pub fn fill_checksum(&mut self, src: Ipv6Addr, dst: Ipv6Addr) {
        self.set_checksum(0);
        let b = self.buffer.as_ref();
        let acc = checksum::pseudo_header_v6(src, dst, ip_protocol::ICMPV6, b.len() as u32)
            + checksum::sum(b);
        self.set_checksum(checksum::finish(acc));
    }
}

/// One neighbour-discovery option.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NdiscOption {
    SourceLinkLayerAddr(MacAddress),
    TargetLinkLayerAddr(MacAddress),
    /// Any other option, skipped by its length.
    Other {
        kind: u8,
    },
}

/// Iterator over the options after an ND message's fixed part. After an error
/// it yields nothing more.
#[derive(Debug, Clone)]
pub struct NdiscOptions<'a> {
    rest: &'a [u8],
}

impl<'a> NdiscOptions<'a> {
    pub fn new(options: &'a [u8]) -> Self {
        NdiscOptions { rest: options }
    }
}

impl Iterator for NdiscOptions<'_> {
    type Item = Result<NdiscOption, ParseError>;

    fn next(&mut self) -> Option<Self::Item> {
        let rest = self.rest;
        if rest.is_empty() {
            return None;
        }
        let len = match rest.get(1) {
            Some(&units) if units > 0 && usize::from(units) * 8 <= rest.len() => {
                usize::from(units) * 8
            }
            _ => {
                self.rest = &[];
                return Some(Err(ParseError::NdiscOptionLength));
            }
        };
        let (opt, tail) = rest.split_at(len);
        self.rest = tail;
        let kind = opt[0];
        Some(match kind {
            OPT_SOURCE_LLADDR | OPT_TARGET_LLADDR if len != LLADDR_OPTION_LEN => {
                self.rest = &[];
                Err(ParseError::NdiscLinkLayerOption)
            }
            OPT_SOURCE_LLADDR => Ok(NdiscOption::SourceLinkLayerAddr(arr6(opt, 2))),
            OPT_TARGET_LLADDR => Ok(NdiscOption::TargetLinkLayerAddr(arr6(opt, 2))),
            _ => Ok(NdiscOption::Other { kind }),
        })
    }
}

/// Neighbour solicitation and advertisement.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NdiscRepr {
    NeighborSolicit {
        target: Ipv6Addr,
        source_lladdr: Option<MacAddress>,
    },
    NeighborAdvert {
        /// [`na_flags`] bits.
        flags: u8,
        target: Ipv6Addr,
        target_lladdr: Option<MacAddress>,
    },
}

impl NdiscRepr {
    /// Decodes an NS or NA message (the whole ICMPv6 message), validating the
    /// code, the length and every option. The checksum is the view's business.
    pub fn parse(buffer: &[u8]) -> Result<Self, ParseError> {
        let p = Icmpv6Packet::new_checked(buffer)?;
        let t = p.msg_type();
        if t != msg_type::NEIGHBOR_SOLICIT && t != msg_type::NEIGHBOR_ADVERT {
            return Err(ParseError::IcmpType);
        }
        if buffer.len() < NDISC_NEIGHBOR_LEN {
            return Err(ParseError::NdiscTruncated);
        }
        if p.code() != 0 {
            return Err(ParseError::NdiscCode);
        }
        let target = Ipv6Addr::from(arr16(buffer, 8));
        let mut lladdr = None;
        for opt in NdiscOptions::new(&buffer[NDISC_NEIGHBOR_LEN..]) {
            match (opt?, t) {
                (NdiscOption::SourceLinkLayerAddr(m), msg_type::NEIGHBOR_SOLICIT)
                | (NdiscOption::TargetLinkLayerAddr(m), msg_type::NEIGHBOR_ADVERT) => {
                    lladdr = Some(m)
                }
                _ => {}
            }
        }
        Ok(if t == msg_type::NEIGHBOR_SOLICIT {
            NdiscRepr::NeighborSolicit {
                target,
                source_lladdr: lladdr,
            }
        } else {
            NdiscRepr::NeighborAdvert {
                flags: buffer[4] & (na_flags::ROUTER | na_flags::SOLICITED | na_flags::OVERRIDE),
                target,
                target_lladdr: lladdr,
            }
        })
    }

    pub const fn buffer_len(&self) -> usize {
        let opt = match self {
            NdiscRepr::NeighborSolicit { source_lladdr, .. } => source_lladdr.is_some(),
            NdiscRepr::NeighborAdvert { target_lladdr, .. } => target_lladdr.is_some(),
        };
        NDISC_NEIGHBOR_LEN + if opt { LLADDR_OPTION_LEN } else { 0 }
    }

    /// Writes the message into `buffer[..buffer_len()]` with its checksum for
    /// the given IPv6 addresses. Returns the message length.
    pub fn emit(
        &self,
        src: Ipv6Addr,
        dst: Ipv6Addr,
        buffer: &mut [u8],
    ) -> Result<usize, BufferTooSmall> {
        let len = self.buffer_len();
        let b = buffer.get_mut(..len).ok_or(BufferTooSmall)?;
        let (t, flags, target, opt) = match *self {
            NdiscRepr::NeighborSolicit {
                target,
                source_lladdr,
            } => (
                msg_type::NEIGHBOR_SOLICIT,
                0,
                target,
                source_lladdr.map(|m| (OPT_SOURCE_LLADDR, m)),
            ),
            NdiscRepr::NeighborAdvert {
                flags,
                target,
                target_lladdr,
            } => (
                msg_type::NEIGHBOR_ADVERT,
                flags,
                target,
                target_lladdr.map(|m| (OPT_TARGET_LLADDR, m)),
            ),
        };
        b[0] = t;
        b[1] = 0;
        put32(b, 4, u32::from(flags) << 24);
        b[8..24].copy_from_slice(&target.octets());
        if let Some((kind, mac)) = opt {
            b[24] = kind;
            b[25] = 1;
            b[26..32].copy_from_slice(&mac);
        }
        let mut p = Icmpv6Packet { buffer: b };
        p.fill_checksum(src, dst);
        Ok(len)
    }
}

/// ICMPv6 headers the engine reads or writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Icmpv6Repr {
    EchoRequest { ident: u16, seq_no: u16 },
    EchoReply { ident: u16, seq_no: u16 },
    DstUnreachable { code: u8 },
    PacketTooBig { mtu: u32 },
    TimeExceeded { code: u8 },
    Ndisc(NdiscRepr),
}

impl Icmpv6Repr {
    /// Decodes the message header (and, for NS/NA, the body and options).
    pub fn parse(buffer: &[u8]) -> Result<Self, ParseError> {
        let p = Icmpv6Packet::new_checked(buffer)?;
        let word = p.rest_of_header();
        let echo = ((word >> 16) as u16, word as u16);
        match p.msg_type() {
            msg_type::ECHO_REQUEST => Ok(Icmpv6Repr::EchoRequest {
                ident: echo.0,
                seq_no: echo.1,
            }),
            msg_type::ECHO_REPLY => Ok(Icmpv6Repr::EchoReply {
                ident: echo.0,
                seq_no: echo.1,
            }),
            msg_type::DST_UNREACHABLE => Ok(Icmpv6Repr::DstUnreachable { code: p.code() }),
            msg_type::PACKET_TOO_BIG => Ok(Icmpv6Repr::PacketTooBig { mtu: word }),
            msg_type::TIME_EXCEEDED => Ok(Icmpv6Repr::TimeExceeded { code: p.code() }),
            msg_type::NEIGHBOR_SOLICIT | msg_type::NEIGHBOR_ADVERT => {
                NdiscRepr::parse(buffer).map(Icmpv6Repr::Ndisc)
            }
            _ => Err(ParseError::IcmpType),
        }
    }

    /// Header length (for ND, the whole message this repr describes).
    pub const fn buffer_len(&self) -> usize {
        match self {
            Icmpv6Repr::Ndisc(n) => n.buffer_len(),
            _ => HEADER_LEN,
        }
    }

    /// Writes the header into `buffer`, which is the whole message (header then
    /// any data already in place), and checksums all of it. ND messages are
    /// emitted into exactly `buffer_len()` bytes.
    pub fn emit(
        &self,
        src: Ipv6Addr,
        dst: Ipv6Addr,
        buffer: &mut [u8],
    ) -> Result<(), BufferTooSmall> {
        let (t, code, word) = match *self {
            Icmpv6Repr::Ndisc(n) => return n.emit(src, dst, buffer).map(|_| ()),
            Icmpv6Repr::EchoRequest { ident, seq_no } => (
                msg_type::ECHO_REQUEST,
                0,
                (u32::from(ident) << 16) | u32::from(seq_no),
            ),
            Icmpv6Repr::EchoReply { ident, seq_no } => (
                msg_type::ECHO_REPLY,
                0,
                (u32::from(ident) << 16) | u32::from(seq_no),
            ),
            Icmpv6Repr::DstUnreachable { code } => (msg_type::DST_UNREACHABLE, code, 0),
            Icmpv6Repr::PacketTooBig { mtu } => (msg_type::PACKET_TOO_BIG, 0, mtu),
            Icmpv6Repr::TimeExceeded { code } => (msg_type::TIME_EXCEEDED, code, 0),
        };
        let mut p = Icmpv6Packet::new_checked(buffer).map_err(|_| BufferTooSmall)?;
        p.set_msg_type(t);
        p.set_code(code);
        put32(p.buffer, 4, word);
        p.fill_checksum(src, dst);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use smoltcp::phy::ChecksumCapabilities;

    fn a(s: &str) -> Ipv6Addr {
        s.parse().unwrap()
    }

    /// NS from fd00::2 for fe80::1 with source link-layer option 02:00:00:00:00:02.
    fn ns() -> [u8; 32] {
        let mut b = [0u8; 32];
        NdiscRepr::NeighborSolicit {
            target: a("fe80::1"),
            source_lladdr: Some([2, 0, 0, 0, 0, 2]),
        }
        .emit(a("fd00::2"), a("ff02::1:ff00:1"), &mut b)
        .unwrap();
        b
    }

    #[test]
    fn ns_agrees_with_smoltcp() {
        let b = ns();
        let (src, dst) = (a("fd00::2"), a("ff02::1:ff00:1"));
        let o = smoltcp::wire::Icmpv6Packet::new_checked(&b[..]).unwrap();
        assert!(o.verify_checksum(&src, &dst));
        let repr =
            smoltcp::wire::Icmpv6Repr::parse(&src, &dst, &o, &ChecksumCapabilities::default())
                .unwrap();
        assert!(matches!(
            repr,
            smoltcp::wire::Icmpv6Repr::Ndisc(smoltcp::wire::NdiscRepr::NeighborSolicit { .. })
        ));
        assert!(Icmpv6Packet::new_checked(&b[..])
            .unwrap()
            .verify_checksum(src, dst));
    }

    #[test]
    fn nd_errors() {
        let b = ns();
        assert_eq!(NdiscRepr::parse(&b[..23]), Err(ParseError::NdiscTruncated));
        assert_eq!(
            NdiscRepr::parse(&b[..28]),
            Err(ParseError::NdiscOptionLength)
        );
        let mut v = b;
        v[25] = 0;
        assert_eq!(NdiscRepr::parse(&v), Err(ParseError::NdiscOptionLength));
        let mut v = [0u8; 40];
        v[..32].copy_from_slice(&b);
        v[25] = 2;
        assert_eq!(NdiscRepr::parse(&v), Err(ParseError::NdiscLinkLayerOption));
        let mut v = b;
        v[1] = 1;
        assert_eq!(NdiscRepr::parse(&v), Err(ParseError::NdiscCode));
        let mut v = b;
        v[0] = 133;
        assert_eq!(NdiscRepr::parse(&v), Err(ParseError::IcmpType));
    }

    #[test]
    fn unknown_options_are_skipped() {
        let mut v = [0u8; 48];
        v[..32].copy_from_slice(&ns());
        v[32] = 14; // nonce option, 16 bytes
        v[33] = 2;
        assert_eq!(
            NdiscRepr::parse(&v),
            Ok(NdiscRepr::NeighborSolicit {
                target: a("fe80::1"),
                source_lladdr: Some([2, 0, 0, 0, 0, 2])
            })
        );
    }

    fn repr() -> impl Strategy<Value = Icmpv6Repr> {
        let mac = proptest::option::of(any::<[u8; 6]>());
        prop_oneof![
            (any::<u16>(), any::<u16>())
                .prop_map(|(ident, seq_no)| Icmpv6Repr::EchoRequest { ident, seq_no }),
            (any::<u16>(), any::<u16>())
                .prop_map(|(ident, seq_no)| Icmpv6Repr::EchoReply { ident, seq_no }),
            any::<u8>().prop_map(|code| Icmpv6Repr::DstUnreachable { code }),
            any::<u32>().prop_map(|mtu| Icmpv6Repr::PacketTooBig { mtu }),
            any::<u8>().prop_map(|code| Icmpv6Repr::TimeExceeded { code }),
            (any::<[u8; 16]>(), mac.clone()).prop_map(|(t, m)| Icmpv6Repr::Ndisc(
                NdiscRepr::NeighborSolicit {
                    target: t.into(),
                    source_lladdr: m
                }
            )),
            (0u8..8, any::<[u8; 16]>(), mac).prop_map(|(f, t, m)| Icmpv6Repr::Ndisc(
                NdiscRepr::NeighborAdvert {
                    flags: f << 5,
                    target: t.into(),
                    target_lladdr: m
                }
            )),
        ]
    }

    proptest! {
        #[test]
        fn round_trip(r in repr(), src in any::<[u8; 16]>(), dst in any::<[u8; 16]>()) {
            let (src, dst) = (Ipv6Addr::from(src), Ipv6Addr::from(dst));
            let mut buf = [0u8; 40];
            let len = r.buffer_len() + if matches!(r, Icmpv6Repr::Ndisc(_)) { 0 } else { 4 };
            r.emit(src, dst, &mut buf[..len]).unwrap();
            prop_assert_eq!(Icmpv6Repr::parse(&buf[..len]), Ok(r));
            let p = Icmpv6Packet::new_checked(&buf[..len]).unwrap();
            prop_assert!(p.verify_checksum(src, dst));
            if let Icmpv6Repr::Ndisc(_) = r {
                // Cutting exactly at the end of the fixed part leaves a valid
                // message without options; every other cut is an error.
                for n in (0..len).filter(|n| *n != NDISC_NEIGHBOR_LEN) {
                    prop_assert!(Icmpv6Repr::parse(&buf[..n]).is_err());
                }
            }
        }

        #[test]
        fn address_change_updates_checksum_like_full(
            r in repr(), src in any::<[u8; 16]>(), dst in any::<[u8; 16]>(), new_src in any::<[u8; 16]>(),
        ) {
            let (src, dst, new_src) = (Ipv6Addr::from(src), Ipv6Addr::from(dst), Ipv6Addr::from(new_src));
            let mut buf = [0u8; 32];
            let len = r.buffer_len();
            r.emit(src, dst, &mut buf[..len]).unwrap();
            let mut p = Icmpv6Packet::new_checked(&mut buf[..len]).unwrap();
            let inc = checksum::update_ipv6_addr(p.checksum(), src, new_src);
            p.set_checksum(inc);
            prop_assert!(p.verify_checksum(new_src, dst));
            p.fill_checksum(new_src, dst);
            prop_assert_eq!(inc, p.checksum());
        }
    }
}
