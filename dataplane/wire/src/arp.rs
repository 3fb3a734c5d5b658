//! ARP for Ethernet/IPv4 (RFC 826). Other hardware/protocol pairs are errors.

use core::net::Ipv4Addr;

use crate::{arr4, arr6, be16, put16, BufferTooSmall, MacAddress, ParseError};

mod field {
    pub const HTYPE: usize = 0;
    pub const PTYPE: usize = 2;
    pub const HLEN: usize = 4;
    pub const PLEN: usize = 5;
    pub const OPER: usize = 6;
    pub const SHA: usize = 8;
    pub const SPA: usize = 14;
    pub const THA: usize = 18;
    pub const TPA: usize = 24;
}

/// Length of an Ethernet/IPv4 ARP packet.
pub const PACKET_LEN: usize = 28;

const HTYPE_ETHERNET: u16 = 1;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ArpOperation {
    Request,
    Reply,
}

impl ArpOperation {
    pub const fn number(self) -> u16 {
        match self {
            ArpOperation::Request => 1,
            ArpOperation::Reply => 2,
        }
    }
}

/// Checked view of an Ethernet/IPv4 ARP packet: `new_checked` validates the
/// length, hardware and protocol types and the address lengths.
#[derive(Debug, Clone)]
pub struct ArpPacket<T> {
    buffer: T,
}

impl<T: AsRef<[u8]>> ArpPacket<T> {
    pub fn new_checked(buffer: T) -> Result<Self, ParseError> {
        let b = buffer.as_ref();
        if b.len() < PACKET_LEN {
            return Err(ParseError::ArpTruncated);
        }
        if be16(b, field::HTYPE) != HTYPE_ETHERNET {
            return Err(ParseError::ArpHardwareType);
        }
        if be16(b, field::PTYPE) != crate::ethertype::IPV4 {
            return Err(ParseError::ArpProtocolType);
        }
        if b[field::HLEN] != 6 || b[field::PLEN] != 4 {
            return Err(ParseError::ArpAddressLength);
        }
        Ok(ArpPacket { buffer })
    }

    /// Raw operation number (1 request, 2 reply, others unchecked here).
    pub fn operation_number(&self) -> u16 {
        be16(self.buffer.as_ref(), field::OPER)
    }

    pub fn operation(&self) -> Result<ArpOperation, ParseError> {
        match self.operation_number() {
            1 => Ok(ArpOperation::Request),
            2 => Ok(ArpOperation::Reply),
            _ => Err(ParseError::ArpOperation),
        }
    }

    pub fn sender_hardware_addr(&self) -> MacAddress {
        arr6(self.buffer.as_ref(), field::SHA)
    }

    pub fn sender_protocol_addr(&self) -> Ipv4Addr {
        Ipv4Addr::from(arr4(self.buffer.as_ref(), field::SPA))
    }

    pub fn target_hardware_addr(&self) -> MacAddress {
        arr6(self.buffer.as_ref(), field::THA)
    }

    pub fn target_protocol_addr(&self) -> Ipv4Addr {
        Ipv4Addr::from(arr4(self.buffer.as_ref(), field::TPA))
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> ArpPacket<T> {
    pub fn set_operation(&mut self, op: ArpOperation) {
        put16(self.buffer.as_mut(), field::OPER, op.number());
    }

    pub fn set_sender_hardware_addr(&mut self, mac: MacAddress) {
        self.buffer.as_mut()[field::SHA..field::SHA + 6].copy_from_slice(&mac);
    }

    pub fn set_sender_protocol_addr(&mut self, addr: Ipv4Addr) {
        self.buffer.as_mut()[field::SPA..field::SPA + 4].copy_from_slice(&addr.octets());
    }

    pub fn set_target_hardware_addr(&mut self, mac: MacAddress) {
        self.buffer.as_mut()[field::THA..field::THA + 6].copy_from_slice(&mac);
    }

    pub fn set_target_protocol_addr(&mut self, addr: Ipv4Addr) {
        self.buffer.as_mut()[field::TPA..field::TPA + 4].copy_from_slice(&addr.octets());
    }
}

/// A decoded Ethernet/IPv4 ARP packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArpRepr {
    pub operation: ArpOperation,
    pub sender_hardware_addr: MacAddress,
    pub sender_protocol_addr: Ipv4Addr,
    pub target_hardware_addr: MacAddress,
    pub target_protocol_addr: Ipv4Addr,
}

impl ArpRepr {
    pub fn parse(buffer: &[u8]) -> Result<Self, ParseError> {
        let p = ArpPacket::new_checked(buffer)?;
        Ok(ArpRepr {
            operation: p.operation()?,
            sender_hardware_addr: p.sender_hardware_addr(),
            sender_protocol_addr: p.sender_protocol_addr(),
            target_hardware_addr: p.target_hardware_addr(),
            target_protocol_addr: p.target_protocol_addr(),
        })
    }

    pub const fn buffer_len(&self) -> usize {
        PACKET_LEN
    }

    pub fn emit(&self, buffer: &mut [u8]) -> Result<(), BufferTooSmall> {
        let b = buffer.get_mut(..PACKET_LEN).ok_or(BufferTooSmall)?;
        put16(b, field::HTYPE, HTYPE_ETHERNET);
        put16(b, field::PTYPE, crate::ethertype::IPV4);
        b[field::HLEN] = 6;
        b[field::PLEN] = 4;
        let mut p = ArpPacket { buffer: b };
        p.set_operation(self.operation);
        p.set_sender_hardware_addr(self.sender_hardware_addr);
        p.set_sender_protocol_addr(self.sender_protocol_addr);
        p.set_target_hardware_addr(self.target_hardware_addr);
        p.set_target_protocol_addr(self.target_protocol_addr);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// who-has 10.200.0.1 tell 10.200.0.2
    pub(crate) const REQUEST: [u8; 28] = [
        0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x01, // htype ptype hlen plen oper
        0x02, 0x00, 0x00, 0x00, 0x00, 0x02, 10, 200, 0, 2, // sender
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 10, 200, 0, 1, // target
    ];

    #[test]
    fn parses_request_like_smoltcp() {
        let r = ArpRepr::parse(&REQUEST).unwrap();
        assert_eq!(r.operation, ArpOperation::Request);
        assert_eq!(r.sender_protocol_addr, Ipv4Addr::new(10, 200, 0, 2));
        assert_eq!(r.target_protocol_addr, Ipv4Addr::new(10, 200, 0, 1));
        let oracle = smoltcp::wire::ArpRepr::parse(
            &smoltcp::wire::ArpPacket::new_checked(&REQUEST[..]).unwrap(),
        )
        .unwrap();
        match oracle {
            smoltcp::wire::ArpRepr::EthernetIpv4 {
                target_protocol_addr,
                ..
            } => {
                assert_eq!(target_protocol_addr, r.target_protocol_addr)
            }
            _ => unreachable!(),
        }
    }

    #[test]
    fn one_error_per_check() {
        let mut b = REQUEST;
        b[1] = 6;
        assert_eq!(ArpRepr::parse(&b), Err(ParseError::ArpHardwareType));
        let mut b = REQUEST;
        b[2] = 0x86;
        assert_eq!(ArpRepr::parse(&b), Err(ParseError::ArpProtocolType));
        let mut b = REQUEST;
        b[5] = 16;
        assert_eq!(ArpRepr::parse(&b), Err(ParseError::ArpAddressLength));
        let mut b = REQUEST;
        b[7] = 3;
        assert_eq!(ArpRepr::parse(&b), Err(ParseError::ArpOperation));
        for n in 0..PACKET_LEN {
            assert_eq!(ArpRepr::parse(&REQUEST[..n]), Err(ParseError::ArpTruncated));
        }
    }

    proptest! {
        #[test]
        fn round_trip(
            reply in any::<bool>(),
            sha in any::<[u8; 6]>(), spa in any::<[u8; 4]>(),
            tha in any::<[u8; 6]>(), tpa in any::<[u8; 4]>(),
        ) {
            let repr = ArpRepr {
                operation: if reply { ArpOperation::Reply } else { ArpOperation::Request },
                sender_hardware_addr: sha,
                sender_protocol_addr: spa.into(),
                target_hardware_addr: tha,
                target_protocol_addr: tpa.into(),
            };
            let mut buf = [0u8; PACKET_LEN];
            repr.emit(&mut buf).unwrap();
            prop_assert_eq!(ArpRepr::parse(&buf), Ok(repr));
        }
    }
}
