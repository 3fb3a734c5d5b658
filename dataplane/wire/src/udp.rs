//! UDP (RFC 768).

use crate::{be16, checksum, put16, BufferTooSmall, ParseError};

pub const HEADER_LEN: usize = 8;

/// Checked view of a UDP datagram. The buffer is the IP payload; `new_checked`
/// validates the length field against it. Bytes past the length are ignored.
#[derive(Debug, Clone)]
pub struct UdpPacket<T> {
    buffer: T,
}

impl<T: AsRef<[u8]>> UdpPacket<T> {
    pub fn new_checked(buffer: T) -> Result<Self, ParseError> {
        let b = buffer.as_ref();
        if b.len() < HEADER_LEN {
            return Err(ParseError::UdpTruncated);
        }
        let len = usize::from(be16(b, 4));
        if len < HEADER_LEN {
            return Err(ParseError::UdpLength);
        }
        if len > b.len() {
            return Err(ParseError::UdpLengthTruncated);
        }
        Ok(UdpPacket { buffer })
    }

    pub fn src_port(&self) -> u16 {
        be16(self.buffer.as_ref(), 0)
    }

    pub fn dst_port(&self) -> u16 {
        be16(self.buffer.as_ref(), 2)
    }

    /// The length field: header plus payload.
    pub fn len(&self) -> usize {
        usize::from(be16(self.buffer.as_ref(), 4))
    }

    pub fn is_empty(&self) -> bool {
        false
    }

    pub fn checksum(&self) -> u16 {
        be16(self.buffer.as_ref(), 6)
    }

    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..self.len()]
    }

    /// Verifies against a pseudo-header sum ([`checksum::pseudo_header_v4`] or
    /// `_v6` with length `self.len()`). A zero field (no checksum, IPv4 only) passes.
    pub fn verify_checksum(&self, pseudo_header: u64) -> bool {
        self.checksum() == 0
            || checksum::fold(pseudo_header + checksum::sum(&self.buffer.as_ref()[..self.len()]))
                == 0xffff
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> UdpPacket<T> {
    pub fn set_src_port(&mut self, port: u16) {
        put16(self.buffer.as_mut(), 0, port);
    }

    pub fn set_dst_port(&mut self, port: u16) {
        put16(self.buffer.as_mut(), 2, port);
    }

    pub fn set_checksum(&mut self, csum: u16) {
        put16(self.buffer.as_mut(), 6, csum);
    }

    /// Computes the checksum over the pseudo-header sum and the datagram; a
    /// computed zero is sent as `0xffff`.
    pub fn fill_checksum(&mut self, pseudo_header: u64) {
        self.set_checksum(0);
        let len = self.len();
        let acc = pseudo_header + checksum::sum(&self.buffer.as_ref()[..len]);
        self.set_checksum(checksum::udp_nonzero(checksum::finish(acc)));
    }
}

/// A decoded UDP header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UdpRepr {
    pub src_port: u16,
    pub dst_port: u16,
    pub payload_len: usize,
}

impl UdpRepr {
    pub fn parse(buffer: &[u8]) -> Result<Self, ParseError> {
        let p = UdpPacket::new_checked(buffer)?;
        Ok(UdpRepr {
            src_port: p.src_port(),
            dst_port: p.dst_port(),
            payload_len: p.len() - HEADER_LEN,
        })
    }

    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes the header with a zero checksum; fill it with
    /// [`UdpPacket::fill_checksum`] once the payload is in place.
    pub fn emit(&self, buffer: &mut [u8]) -> Result<(), BufferTooSmall> {
        let b = buffer.get_mut(..HEADER_LEN).ok_or(BufferTooSmall)?;
        put16(b, 0, self.src_port);
        put16(b, 2, self.dst_port);
        put16(b, 4, (HEADER_LEN + self.payload_len) as u16);
        put16(b, 6, 0);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::net::{Ipv4Addr, Ipv6Addr};
    use proptest::prelude::*;
    use smoltcp::wire::IpAddress;

    #[test]
    fn errors() {
        let b = [0x30, 0x39, 0x00, 0x35, 0x00, 0x0a, 0x00, 0x00, 1, 2];
        assert!(UdpRepr::parse(&b).is_ok());
        assert_eq!(UdpRepr::parse(&b[..7]), Err(ParseError::UdpTruncated));
        assert_eq!(UdpRepr::parse(&b[..9]), Err(ParseError::UdpLengthTruncated));
        let mut v = b;
        v[5] = 7;
        assert_eq!(UdpRepr::parse(&v), Err(ParseError::UdpLength));
    }

    #[test]
    fn checksum_agrees_with_smoltcp() {
        let mut b = [0x30, 0x39, 0x00, 0x35, 0x00, 0x0b, 0x00, 0x00, 1, 2, 3];
        let (s, d) = (Ipv4Addr::new(10, 200, 0, 2), Ipv4Addr::new(10, 200, 0, 3));
        let mut p = UdpPacket::new_checked(&mut b[..]).unwrap();
        p.fill_checksum(checksum::pseudo_header_v4(s, d, 17, 11));
        let o = smoltcp::wire::UdpPacket::new_checked(&b[..]).unwrap();
        assert!(o.verify_checksum(&IpAddress::Ipv4(s), &IpAddress::Ipv4(d)));
    }

    proptest! {
        #[test]
        fn round_trip(src_port in any::<u16>(), dst_port in any::<u16>(), payload_len in 0usize..100) {
            let repr = UdpRepr { src_port, dst_port, payload_len };
            let mut buf = [0u8; 108];
            repr.emit(&mut buf).unwrap();
            let len = HEADER_LEN + payload_len;
            prop_assert_eq!(UdpRepr::parse(&buf[..len]), Ok(repr));
            for n in 0..len {
                prop_assert!(UdpRepr::parse(&buf[..n]).is_err());
            }
        }

        /// A NAT rewriting one address: incremental update of the UDP checksum
        /// through the pseudo-header equals recomputing it.
        #[test]
        fn address_rewrite_v4(
            payload in proptest::collection::vec(any::<u8>(), 0..64),
            src in any::<[u8; 4]>(), dst in any::<[u8; 4]>(), new_dst in any::<[u8; 4]>(),
            new_port in any::<u16>(),
        ) {
            let (src, dst, new_dst) = (Ipv4Addr::from(src), Ipv4Addr::from(dst), Ipv4Addr::from(new_dst));
            let len = HEADER_LEN + payload.len();
            let mut buf = [0u8; 72];
            UdpRepr { src_port: 1000, dst_port: 53, payload_len: payload.len() }.emit(&mut buf).unwrap();
            buf[HEADER_LEN..len].copy_from_slice(&payload);
            let mut p = UdpPacket::new_checked(&mut buf[..len]).unwrap();
            p.fill_checksum(checksum::pseudo_header_v4(src, dst, 17, len as u32));
            let old_port = p.dst_port();
            p.set_dst_port(new_port);
            let inc = checksum::update_udp(p.checksum(), |c| {
                checksum::update_u16(checksum::update_ipv4_addr(c, dst, new_dst), old_port, new_port)
            });
            p.set_checksum(inc);
            let pseudo = checksum::pseudo_header_v4(src, new_dst, 17, len as u32);
            prop_assert!(p.verify_checksum(pseudo));
            p.fill_checksum(pseudo);
            prop_assert_eq!(inc, p.checksum());
        }

        #[test]
        fn address_rewrite_v6(
            payload in proptest::collection::vec(any::<u8>(), 0..64),
            src in any::<[u8; 16]>(), dst in any::<[u8; 16]>(), new_src in any::<[u8; 16]>(),
        ) {
            let (src, dst, new_src) = (Ipv6Addr::from(src), Ipv6Addr::from(dst), Ipv6Addr::from(new_src));
            let len = HEADER_LEN + payload.len();
            let mut buf = [0u8; 72];
            UdpRepr { src_port: 1000, dst_port: 53, payload_len: payload.len() }.emit(&mut buf).unwrap();
            buf[HEADER_LEN..len].copy_from_slice(&payload);
            let mut p = UdpPacket::new_checked(&mut buf[..len]).unwrap();
            p.fill_checksum(checksum::pseudo_header_v6(src, dst, 17, len as u32));
            let inc = checksum::update_udp(p.checksum(), |c| checksum::update_ipv6_addr(c, src, new_src));
            p.set_checksum(inc);
            let pseudo = checksum::pseudo_header_v6(new_src, dst, 17, len as u32);
            prop_assert!(p.verify_checksum(pseudo));
            p.fill_checksum(pseudo);
            prop_assert_eq!(inc, p.checksum());
        }
    }
}
