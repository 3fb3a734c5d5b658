//! ICMPv4 (RFC 792): echo and the error messages the engine sends.

use crate::{be16, be32, checksum, put16, put32, BufferTooSmall, ParseError};

pub const HEADER_LEN: usize = 8;

/// ICMPv4 message types.
pub mod msg_type {
    pub const ECHO_REPLY: u8 = 0;
    pub const DST_UNREACHABLE: u8 = 3;
    pub const SOURCE_QUENCH: u8 = 4;
    pub const REDIRECT: u8 = 5;
    pub const ECHO_REQUEST: u8 = 8;
    pub const TIME_EXCEEDED: u8 = 11;
    pub const PARAMETER_PROBLEM: u8 = 12;

    /// Error messages, to which no ICMP error may be sent (RFC 1122 §3.2.2).
    pub const fn is_error(t: u8) -> bool {
        matches!(
            t,
            DST_UNREACHABLE | SOURCE_QUENCH | REDIRECT | TIME_EXCEEDED | PARAMETER_PROBLEM
        )
    }
}

/// Checked view of an ICMPv4 message (the whole message: header and data).
#[derive(Debug, Clone)]
pub struct Icmpv4Packet<T> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Icmpv4Packet<T> {
    pub fn new_checked(buffer: T) -> Result<Self, ParseError> {
        if buffer.as_ref().len() < HEADER_LEN {
            return Err(ParseError::Icmpv4Truncated);
        }
        Ok(Icmpv4Packet { buffer })
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

    /// The second 32-bit word (echo ident and sequence, or unused).
    pub fn rest_of_header(&self) -> u32 {
        be32(self.buffer.as_ref(), 4)
    }

    pub fn echo_ident(&self) -> u16 {
        be16(self.buffer.as_ref(), 4)
    }

    pub fn echo_seq_no(&self) -> u16 {
        be16(self.buffer.as_ref(), 6)
    }

    pub fn data(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..]
    }

    pub fn verify_checksum(&self) -> bool {
        checksum::verifies(self.buffer.as_ref())
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Icmpv4Packet<T> {
    pub fn set_msg_type(&mut self, t: u8) {
        self.buffer.as_mut()[0] = t;
    }

    pub fn set_code(&mut self, c: u8) {
        self.buffer.as_mut()[1] = c;
    }

    pub fn set_checksum(&mut self, csum: u16) {
        put16(self.buffer.as_mut(), 2, csum);
    }

    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let csum = checksum::checksum(self.buffer.as_ref());
        self.set_checksum(csum);
    }
}

/// The ICMPv4 headers the engine reads or writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Icmpv4Repr {
    EchoRequest { ident: u16, seq_no: u16 },
    EchoReply { ident: u16, seq_no: u16 },
    DstUnreachable { code: u8, next_hop_mtu: u16 },
    TimeExceeded { code: u8 },
}

impl Icmpv4Repr {
    /// Decodes the header (the checksum is checked by the view).
    pub fn parse(buffer: &[u8]) -> Result<Self, ParseError> {
        let p = Icmpv4Packet::new_checked(buffer)?;
        match p.msg_type() {
            msg_type::ECHO_REQUEST => Ok(Icmpv4Repr::EchoRequest {
                ident: p.echo_ident(),
                seq_no: p.echo_seq_no(),
            }),
            msg_type::ECHO_REPLY => Ok(Icmpv4Repr::EchoReply {
                ident: p.echo_ident(),
                seq_no: p.echo_seq_no(),
            }),
            msg_type::DST_UNREACHABLE => Ok(Icmpv4Repr::DstUnreachable {
                code: p.code(),
                next_hop_mtu: p.echo_seq_no(),
            }),
            msg_type::TIME_EXCEEDED => Ok(Icmpv4Repr::TimeExceeded { code: p.code() }),
            _ => Err(ParseError::IcmpType),
        }
    }

    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes the header into `buffer`, which is the whole message (header
    /// followed by any data already in place), and checksums all of it.
    pub fn emit(&self, buffer: &mut [u8]) -> Result<(), BufferTooSmall> {
        let mut p = Icmpv4Packet::new_checked(buffer).map_err(|_| BufferTooSmall)?;
        let (t, code, rest) = match *self {
            Icmpv4Repr::EchoRequest { ident, seq_no } => (
                msg_type::ECHO_REQUEST,
                0,
                (u32::from(ident) << 16) | u32::from(seq_no),
            ),
            Icmpv4Repr::EchoReply { ident, seq_no } => (
                msg_type::ECHO_REPLY,
                0,
                (u32::from(ident) << 16) | u32::from(seq_no),
            ),
            Icmpv4Repr::DstUnreachable { code, next_hop_mtu } => {
                (msg_type::DST_UNREACHABLE, code, u32::from(next_hop_mtu))
            }
            Icmpv4Repr::TimeExceeded { code } => (msg_type::TIME_EXCEEDED, code, 0),
        };
        p.set_msg_type(t);
        p.set_code(code);
        put32(p.buffer, 4, rest);
        p.fill_checksum();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    // ping -p: echo request id 0x1234 seq 1, 4 bytes of data, checksum precomputed.
    const ECHO: [u8; 12] = [
        8, 0, 0x48, 0x2d, 0x12, 0x34, 0x00, 0x01, 0xde, 0xad, 0xbe, 0xef,
    ];

    #[test]
    fn parses_echo_and_checksum_like_smoltcp() {
        let p = Icmpv4Packet::new_checked(&ECHO[..]).unwrap();
        let o = smoltcp::wire::Icmpv4Packet::new_checked(&ECHO[..]).unwrap();
        assert_eq!(p.verify_checksum(), o.verify_checksum());
        assert_eq!(
            Icmpv4Repr::parse(&ECHO),
            Ok(Icmpv4Repr::EchoRequest {
                ident: 0x1234,
                seq_no: 1
            })
        );
        assert_eq!(
            Icmpv4Repr::parse(&ECHO[..7]),
            Err(ParseError::Icmpv4Truncated)
        );
        let mut v = ECHO;
        v[0] = 13;
        assert_eq!(Icmpv4Repr::parse(&v), Err(ParseError::IcmpType));
    }

    #[test]
    fn echo_fixture_checksum_is_right() {
        assert!(Icmpv4Packet::new_checked(&ECHO[..])
            .unwrap()
            .verify_checksum());
    }

    fn repr() -> impl Strategy<Value = Icmpv4Repr> {
        prop_oneof![
            (any::<u16>(), any::<u16>())
                .prop_map(|(ident, seq_no)| Icmpv4Repr::EchoRequest { ident, seq_no }),
            (any::<u16>(), any::<u16>())
                .prop_map(|(ident, seq_no)| Icmpv4Repr::EchoReply { ident, seq_no }),
            (any::<u8>(), any::<u16>())
                .prop_map(|(code, next_hop_mtu)| Icmpv4Repr::DstUnreachable { code, next_hop_mtu }),
            any::<u8>().prop_map(|code| Icmpv4Repr::TimeExceeded { code }),
        ]
    }

    proptest! {
        #[test]
        fn round_trip(r in repr(), data in proptest::collection::vec(any::<u8>(), 0..64)) {
            let mut buf = [0u8; 72];
            let len = HEADER_LEN + data.len();
            buf[HEADER_LEN..len].copy_from_slice(&data);
            r.emit(&mut buf[..len]).unwrap();
            prop_assert_eq!(Icmpv4Repr::parse(&buf[..len]), Ok(r));
            prop_assert!(Icmpv4Packet::new_checked(&buf[..len]).unwrap().verify_checksum());
        }
    }
}
