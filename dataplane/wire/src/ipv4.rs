//! IPv4 headers (RFC 791). Options are kept opaque: the view exposes them, the
//! repr neither parses nor emits them.

use core::net::Ipv4Addr;

use crate::{arr4, be16, checksum, put16, BufferTooSmall, ParseError};

mod field {
    pub const VER_IHL: usize = 0;
    pub const TOS: usize = 1;
    pub const TOTAL_LEN: usize = 2;
    pub const IDENT: usize = 4;
    pub const FLAGS_FRAG: usize = 6;
    pub const TTL: usize = 8;
    pub const PROTOCOL: usize = 9;
    pub const CHECKSUM: usize = 10;
    pub const SRC: usize = 12;
    pub const DST: usize = 16;
}

/// Length of a header without options.
pub const HEADER_LEN: usize = 20;

const FLAG_DF: u16 = 0x4000;
const FLAG_MF: u16 = 0x2000;
const FRAG_OFFSET_MASK: u16 = 0x1fff;

/// Checked view of an IPv4 packet. `new_checked` validates version, IHL and
/// total length against the buffer; the header checksum is checked separately
/// by [`Ipv4Packet::verify_checksum`] so callers can count it on its own.
/// Bytes past the total length (Ethernet padding) are ignored.
#[derive(Debug, Clone)]
pub struct Ipv4Packet<T> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv4Packet<T> {
    pub fn new_checked(buffer: T) -> Result<Self, ParseError> {
        let b = buffer.as_ref();
        if b.len() < HEADER_LEN {
            return Err(ParseError::Ipv4Truncated);
        }
        if b[field::VER_IHL] >> 4 != 4 {
            return Err(ParseError::Ipv4Version);
        }
        let header_len = usize::from(b[field::VER_IHL] & 0x0f) * 4;
        if header_len < HEADER_LEN {
            return Err(ParseError::Ipv4HeaderLength);
        }
        if header_len > b.len() {
            return Err(ParseError::Ipv4HeaderTruncated);
        }
        let total_len = usize::from(be16(b, field::TOTAL_LEN));
        if total_len < header_len {
            return Err(ParseError::Ipv4TotalLength);
        }
        if total_len > b.len() {
            return Err(ParseError::Ipv4TotalLengthTruncated);
        }
        Ok(Ipv4Packet { buffer })
    }

    fn b(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    pub fn header_len(&self) -> usize {
        usize::from(self.b()[field::VER_IHL] & 0x0f) * 4
    }

    pub fn total_len(&self) -> usize {
        usize::from(be16(self.b(), field::TOTAL_LEN))
    }

    /// DSCP and ECN, the former type-of-service byte.
    pub fn tos(&self) -> u8 {
        self.b()[field::TOS]
    }

    pub fn ident(&self) -> u16 {
        be16(self.b(), field::IDENT)
    }

    pub fn dont_frag(&self) -> bool {
        be16(self.b(), field::FLAGS_FRAG) & FLAG_DF != 0
    }

    pub fn more_frags(&self) -> bool {
        be16(self.b(), field::FLAGS_FRAG) & FLAG_MF != 0
    }

    /// Fragment offset in bytes.
    pub fn frag_offset(&self) -> u16 {
        (be16(self.b(), field::FLAGS_FRAG) & FRAG_OFFSET_MASK) << 3
    }

    /// More fragments follow or this is not the first: either way not a whole datagram.
    pub fn is_fragment(&self) -> bool {
        be16(self.b(), field::FLAGS_FRAG) & (FLAG_MF | FRAG_OFFSET_MASK) != 0
    }

    pub fn ttl(&self) -> u8 {
        self.b()[field::TTL]
    }

    pub fn protocol(&self) -> u8 {
        self.b()[field::PROTOCOL]
    }

    pub fn checksum(&self) -> u16 {
        be16(self.b(), field::CHECKSUM)
    }

    pub fn src(&self) -> Ipv4Addr {
        Ipv4Addr::from(arr4(self.b(), field::SRC))
    }

    pub fn dst(&self) -> Ipv4Addr {
        Ipv4Addr::from(arr4(self.b(), field::DST))
    }

    pub fn header(&self) -> &[u8] {
        &self.b()[..self.header_len()]
    }

    pub fn options(&self) -> &[u8] {
        &self.b()[HEADER_LEN..self.header_len()]
    }

    /// The payload up to the total length (padding excluded).
    pub fn payload(&self) -> &[u8] {
        &self.b()[self.header_len()..self.total_len()]
    }

    pub fn verify_checksum(&self) -> bool {
        checksum::verifies(self.header())
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv4Packet<T> {
    fn bm(&mut self) -> &mut [u8] {
        self.buffer.as_mut()
    }

    pub fn set_ttl(&mut self, ttl: u8) {
        self.bm()[field::TTL] = ttl;
    }

    pub fn set_checksum(&mut self, csum: u16) {
        put16(self.bm(), field::CHECKSUM, csum);
    }

    /// Decrements the TTL and patches the header checksum incrementally
    /// (RFC 1624). Returns the new TTL; a TTL of 0 stays 0.
    pub fn decrement_ttl(&mut self) -> u8 {
        let ttl = self.ttl();
        if ttl == 0 {
            return 0;
        }
        let old = be16(self.b(), field::TTL);
        self.bm()[field::TTL] = ttl - 1;
        let new = be16(self.b(), field::TTL);
        let csum = checksum::update_u16(self.checksum(), old, new);
        self.set_checksum(csum);
        ttl - 1
    }

    /// Rewrites the source address, patching the header checksum incrementally.
    /// A transport checksum covering the pseudo-header needs
    /// [`checksum::update_ipv4_addr`] separately.
    pub fn set_src_updating_checksum(&mut self, addr: Ipv4Addr) {
        let old = self.src();
        self.bm()[field::SRC..field::SRC + 4].copy_from_slice(&addr.octets());
        let csum = checksum::update_ipv4_addr(self.checksum(), old, addr);
        self.set_checksum(csum);
    }

    pub fn set_dst_updating_checksum(&mut self, addr: Ipv4Addr) {
        let old = self.dst();
        self.bm()[field::DST..field::DST + 4].copy_from_slice(&addr.octets());
        let csum = checksum::update_ipv4_addr(self.checksum(), old, addr);
        self.set_checksum(csum);
    }

    /// Recomputes the header checksum from scratch.
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let csum = checksum::checksum(self.header());
        self.set_checksum(csum);
    }

    pub fn payload_mut(&mut self) -> &mut [u8] {
        let (start, end) = (self.header_len(), self.total_len());
        &mut self.bm()[start..end]
    }
}

/// A decoded IPv4 header without options.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv4Repr {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub protocol: u8,
    pub ttl: u8,
    pub tos: u8,
    pub ident: u16,
    pub dont_frag: bool,
    pub more_frags: bool,
    /// In bytes; a multiple of 8 below 65536.
    pub frag_offset: u16,
    pub payload_len: usize,
}

impl Ipv4Repr {
    /// Parses a header, verifying its checksum. Options are skipped.
    pub fn parse(buffer: &[u8]) -> Result<Self, ParseError> {
        let p = Ipv4Packet::new_checked(buffer)?;
        if !p.verify_checksum() {
            return Err(ParseError::Ipv4Checksum);
        }
        Ok(Ipv4Repr {
            src: p.src(),
            dst: p.dst(),
            protocol: p.protocol(),
            ttl: p.ttl(),
            tos: p.tos(),
            ident: p.ident(),
            dont_frag: p.dont_frag(),
            more_frags: p.more_frags(),
            frag_offset: p.frag_offset(),
            payload_len: p.total_len() - p.header_len(),
        })
    }

    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes a 20-byte header with a correct checksum. The payload length must
    /// fit the 16-bit total length (it is truncated otherwise).
    pub fn emit(&self, buffer: &mut [u8]) -> Result<(), BufferTooSmall> {
        let b = buffer.get_mut(..HEADER_LEN).ok_or(BufferTooSmall)?;
        b[field::VER_IHL] = 0x45;
        b[field::TOS] = self.tos;
        put16(b, field::TOTAL_LEN, (HEADER_LEN + self.payload_len) as u16);
        put16(b, field::IDENT, self.ident);
        let mut flags = (self.frag_offset >> 3) & FRAG_OFFSET_MASK;
        if self.dont_frag {
            flags |= FLAG_DF;
        }
        if self.more_frags {
            flags |= FLAG_MF;
        }
        put16(b, field::FLAGS_FRAG, flags);
        b[field::TTL] = self.ttl;
        b[field::PROTOCOL] = self.protocol;
        put16(b, field::CHECKSUM, 0);
        b[field::SRC..field::SRC + 4].copy_from_slice(&self.src.octets());
        b[field::DST..field::DST + 4].copy_from_slice(&self.dst.octets());
        let csum = checksum::checksum(b);
        put16(b, field::CHECKSUM, csum);
        Ok(())
    }
}

/// 224.0.0.0/4 or the limited broadcast: never forwarded as unicast.
pub fn is_multicast_or_broadcast(addr: Ipv4Addr) -> bool {
    addr.is_multicast() || addr.is_broadcast()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// 10.200.0.2 -> 10.200.0.3, UDP, ttl 64, 8 bytes of payload.
    const PACKET: [u8; 28] = [
        0x45, 0x00, 0x00, 0x1c, 0x12, 0x34, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 10, 200, 0, 2, 10,
        200, 0, 3, //
        0x30, 0x39, 0x00, 0x35, 0x00, 0x08, 0x00, 0x00,
    ];

    fn packet() -> [u8; 28] {
        let mut b = PACKET;
        Ipv4Packet::new_checked(&mut b[..]).unwrap().fill_checksum();
        b
    }

    #[test]
    fn parses_and_agrees_with_smoltcp() {
        let b = packet();
        let r = Ipv4Repr::parse(&b).unwrap();
        assert_eq!(r.src, Ipv4Addr::new(10, 200, 0, 2));
        assert_eq!(r.protocol, crate::ip_protocol::UDP);
        assert_eq!(r.payload_len, 8);
        assert!(r.dont_frag && !r.more_frags);
        let oracle = smoltcp::wire::Ipv4Packet::new_checked(&b[..]).unwrap();
        assert!(oracle.verify_checksum());
        assert_eq!(oracle.ident(), 0x1234);
    }

    #[test]
    fn one_error_per_check() {
        let b = packet();
        let mut v = b;
        v[0] = 0x65;
        assert_eq!(Ipv4Repr::parse(&v), Err(ParseError::Ipv4Version));
        let mut v = b;
        v[0] = 0x44;
        assert_eq!(Ipv4Repr::parse(&v), Err(ParseError::Ipv4HeaderLength));
        let mut v = b;
        v[0] = 0x48;
        assert_eq!(Ipv4Repr::parse(&v), Err(ParseError::Ipv4HeaderTruncated));
        let mut v = b;
        v[3] = 19;
        assert_eq!(Ipv4Repr::parse(&v), Err(ParseError::Ipv4TotalLength));
        let mut v = b;
        v[3] = 29;
        assert_eq!(
            Ipv4Repr::parse(&v),
            Err(ParseError::Ipv4TotalLengthTruncated)
        );
        let mut v = b;
        v[11] ^= 1;
        assert_eq!(Ipv4Repr::parse(&v), Err(ParseError::Ipv4Checksum));
        assert_eq!(Ipv4Repr::parse(&b[..19]), Err(ParseError::Ipv4Truncated));
    }

    #[test]
    fn padding_is_not_payload() {
        let mut padded = [0u8; 46];
        padded[..28].copy_from_slice(&packet());
        let p = Ipv4Packet::new_checked(&padded[..]).unwrap();
        assert_eq!(p.payload().len(), 8);
    }

    #[test]
    fn decrement_ttl_keeps_checksum_valid() {
        let mut b = packet();
        let mut p = Ipv4Packet::new_checked(&mut b[..]).unwrap();
        assert_eq!(p.decrement_ttl(), 63);
        assert!(p.verify_checksum());
    }

    proptest! {
        #[test]
        fn round_trip(
            src in any::<[u8; 4]>(), dst in any::<[u8; 4]>(), protocol in any::<u8>(),
            ttl in any::<u8>(), tos in any::<u8>(), ident in any::<u16>(),
            dont_frag in any::<bool>(), more_frags in any::<bool>(),
            frag_units in 0u16..0x2000, payload_len in 0usize..1480,
        ) {
            let repr = Ipv4Repr {
                src: src.into(), dst: dst.into(), protocol, ttl, tos, ident,
                dont_frag, more_frags, frag_offset: frag_units << 3, payload_len,
            };
            let mut buf = [0u8; 1500];
            repr.emit(&mut buf).unwrap();
            prop_assert_eq!(Ipv4Repr::parse(&buf[..HEADER_LEN + payload_len]), Ok(repr));
            for n in 0..HEADER_LEN + payload_len {
                prop_assert!(Ipv4Repr::parse(&buf[..n]).is_err());
            }
        }

        #[test]
        fn address_and_ttl_updates_match_full(
            src in any::<[u8; 4]>(), dst in any::<[u8; 4]>(), ttl in 1u8..,
            new_src in any::<[u8; 4]>(), new_dst in any::<[u8; 4]>(),
        ) {
            let mut b = packet();
            {
                let mut p = Ipv4Packet::new_checked(&mut b[..]).unwrap();
                p.set_ttl(ttl);
                p.set_src_updating_checksum(src.into());
                p.set_dst_updating_checksum(dst.into());
                p.fill_checksum();
                p.set_src_updating_checksum(new_src.into());
                p.set_dst_updating_checksum(new_dst.into());
                p.decrement_ttl();
                prop_assert!(p.verify_checksum());
            }
            let inc = u16::from_be_bytes([b[10], b[11]]);
            let mut p = Ipv4Packet::new_checked(&mut b[..]).unwrap();
            p.fill_checksum();
            prop_assert_eq!(inc, p.checksum());
        }
    }
}
