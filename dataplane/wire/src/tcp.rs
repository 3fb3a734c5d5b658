//! TCP headers (RFC 9293). Options are opaque to the repr.

use crate::{be16, be32, checksum, put16, put32, BufferTooSmall, ParseError};

pub const HEADER_LEN: usize = 20;

/// TCP flag bits (low byte of the flags field).
pub mod flags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;
    pub const URG: u8 = 0x20;
    pub const ECE: u8 = 0x40;
    pub const CWR: u8 = 0x80;
}

/// Checked view of a TCP segment; the buffer is the IP payload.
#[derive(Debug, Clone)]
pub struct TcpPacket<T> {
    buffer: T,
}

impl<T: AsRef<[u8]>> TcpPacket<T> {
    pub fn new_checked(buffer: T) -> Result<Self, ParseError> {
        let b = buffer.as_ref();
        if b.len() < HEADER_LEN {
            return Err(ParseError::TcpTruncated);
        }
        let header_len = usize::from(b[12] >> 4) * 4;
        if header_len < HEADER_LEN {
            return Err(ParseError::TcpDataOffset);
        }
        if header_len > b.len() {
            return Err(ParseError::TcpHeaderTruncated);
        }
        Ok(TcpPacket { buffer })
    }

    fn b(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    pub fn src_port(&self) -> u16 {
        be16(self.b(), 0)
    }

    pub fn dst_port(&self) -> u16 {
        be16(self.b(), 2)
    }

    pub fn seq_number(&self) -> u32 {
        be32(self.b(), 4)
    }

    pub fn ack_number(&self) -> u32 {
        be32(self.b(), 8)
    }

    pub fn header_len(&self) -> usize {
        usize::from(self.b()[12] >> 4) * 4
    }

    pub fn flags(&self) -> u8 {
        self.b()[13]
    }

    pub fn window(&self) -> u16 {
        be16(self.b(), 14)
    }

    pub fn checksum(&self) -> u16 {
        be16(self.b(), 16)
    }

    pub fn urgent_pointer(&self) -> u16 {
        be16(self.b(), 18)
    }

    pub fn options(&self) -> &[u8] {
        &self.b()[HEADER_LEN..self.header_len()]
    }

    pub fn payload(&self) -> &[u8] {
        &self.b()[self.header_len()..]
    }

    /// Verifies against a pseudo-header sum whose length is the segment length.
    pub fn verify_checksum(&self, pseudo_header: u64) -> bool {
        checksum::fold(pseudo_header + checksum::sum(self.b())) == 0xffff
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> TcpPacket<T> {
    pub fn set_src_port(&mut self, port: u16) {
        put16(self.buffer.as_mut(), 0, port);
    }

    pub fn set_dst_port(&mut self, port: u16) {
        put16(self.buffer.as_mut(), 2, port);
    }

    pub fn set_checksum(&mut self, csum: u16) {
        put16(self.buffer.as_mut(), 16, csum);
    }

    pub fn fill_checksum(&mut self, pseudo_header: u64) {
        self.set_checksum(0);
        let acc = pseudo_header + checksum::sum(self.buffer.as_ref());
        self.set_checksum(checksum::finish(acc));
    }
}

/// A decoded TCP header (options not included).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpRepr {
    pub src_port: u16,
    pub dst_port: u16,
    pub seq_number: u32,
    pub ack_number: u32,
    pub flags: u8,
    pub window: u16,
    pub urgent_pointer: u16,
}

impl TcpRepr {
    pub fn parse(buffer: &[u8]) -> Result<Self, ParseError> {
        let p = TcpPacket::new_checked(buffer)?;
        Ok(TcpRepr {
            src_port: p.src_port(),
            dst_port: p.dst_port(),
            seq_number: p.seq_number(),
            ack_number: p.ack_number(),
            flags: p.flags(),
            window: p.window(),
            urgent_pointer: p.urgent_pointer(),
        })
    }

    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes a 20-byte header with a zero checksum.
    pub fn emit(&self, buffer: &mut [u8]) -> Result<(), BufferTooSmall> {
        let b = buffer.get_mut(..HEADER_LEN).ok_or(BufferTooSmall)?;
        put16(b, 0, self.src_port);
        put16(b, 2, self.dst_port);
        put32(b, 4, self.seq_number);
        put32(b, 8, self.ack_number);
        b[12] = 5 << 4;
        b[13] = self.flags;
        put16(b, 14, self.window);
        put16(b, 16, 0);
        put16(b, 18, self.urgent_pointer);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::net::Ipv4Addr;
    use proptest::prelude::*;
    use smoltcp::wire::IpAddress;

    fn syn() -> [u8; 24] {
        let mut b = [0u8; 24];
        TcpRepr {
            src_port: 40000,
            dst_port: 80,
            seq_number: 1,
            ack_number: 0,
            flags: flags::SYN,
            window: 64240,
            urgent_pointer: 0,
        }
        .emit(&mut b)
        .unwrap();
        b[12] = 6 << 4; // one option word: MSS 1460
        b[20..24].copy_from_slice(&[2, 4, 0x05, 0xb4]);
        b
    }

    #[test]
    fn options_and_checksum_agree_with_smoltcp() {
        let mut b = syn();
        let (s, d) = (Ipv4Addr::new(10, 200, 0, 2), Ipv4Addr::new(10, 200, 0, 3));
        let mut p = TcpPacket::new_checked(&mut b[..]).unwrap();
        p.fill_checksum(checksum::pseudo_header_v4(s, d, 6, 24));
        assert_eq!(p.options(), &[2, 4, 0x05, 0xb4]);
        let o = smoltcp::wire::TcpPacket::new_checked(&b[..]).unwrap();
        assert!(o.verify_checksum(&IpAddress::Ipv4(s), &IpAddress::Ipv4(d)));
        assert_eq!(o.header_len(), 24);
    }

    #[test]
    fn errors() {
        let b = syn();
        assert_eq!(TcpRepr::parse(&b[..19]), Err(ParseError::TcpTruncated));
        assert_eq!(
            TcpRepr::parse(&b[..23]),
            Err(ParseError::TcpHeaderTruncated)
        );
        let mut v = b;
        v[12] = 4 << 4;
        assert_eq!(TcpRepr::parse(&v), Err(ParseError::TcpDataOffset));
    }

    proptest! {
        #[test]
        fn round_trip(
            src_port in any::<u16>(), dst_port in any::<u16>(), seq_number in any::<u32>(),
            ack_number in any::<u32>(), flags in any::<u8>(), window in any::<u16>(),
            urgent_pointer in any::<u16>(),
        ) {
            let repr = TcpRepr { src_port, dst_port, seq_number, ack_number, flags, window, urgent_pointer };
            let mut buf = [0u8; HEADER_LEN];
            repr.emit(&mut buf).unwrap();
            prop_assert_eq!(TcpRepr::parse(&buf), Ok(repr));
            for n in 0..HEADER_LEN {
                prop_assert!(TcpRepr::parse(&buf[..n]).is_err());
            }
        }

        /// NAT of address and port: the incremental update equals a full recompute.
        #[test]
        fn address_and_port_rewrite(
            payload in proptest::collection::vec(any::<u8>(), 0..64),
            src in any::<[u8; 4]>(), dst in any::<[u8; 4]>(), new_src in any::<[u8; 4]>(),
            new_port in any::<u16>(), new_seq in any::<u32>(),
        ) {
            let (src, dst, new_src) = (Ipv4Addr::from(src), Ipv4Addr::from(dst), Ipv4Addr::from(new_src));
            let len = HEADER_LEN + payload.len();
            let mut buf = [0u8; 84];
            TcpRepr { src_port: 1, dst_port: 2, seq_number: 3, ack_number: 4, flags: flags::ACK, window: 5, urgent_pointer: 0 }
                .emit(&mut buf).unwrap();
            buf[HEADER_LEN..len].copy_from_slice(&payload);
            let mut p = TcpPacket::new_checked(&mut buf[..len]).unwrap();
            p.fill_checksum(checksum::pseudo_header_v4(src, dst, 6, len as u32));
            let mut c = checksum::update_ipv4_addr(p.checksum(), src, new_src);
            c = checksum::update_u16(c, p.src_port(), new_port);
            c = checksum::update_u32(c, p.seq_number(), new_seq);
            p.set_src_port(new_port);
            put32(p.buffer, 4, new_seq);
            p.set_checksum(c);
            let pseudo = checksum::pseudo_header_v4(new_src, dst, 6, len as u32);
            prop_assert!(p.verify_checksum(pseudo));
            p.fill_checksum(pseudo);
            prop_assert_eq!(c, p.checksum());
        }
    }
}
