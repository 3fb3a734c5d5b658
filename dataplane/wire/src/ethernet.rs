//! Ethernet II frames (no 802.1Q: a VLAN tag is reported as its ethertype).

use crate::{arr6, be16, put16, BufferTooSmall, ParseError};

/// A 48-bit Ethernet address.
pub type MacAddress = [u8; 6];

pub const BROADCAST: MacAddress = [0xff; 6];

/// Group bit set: broadcast or multicast.
pub const fn is_multicast(mac: &MacAddress) -> bool {
    mac[0] & 1 == 1
}

/// The Ethernet multicast address for an IPv6 multicast address (RFC 2464 §7).
pub const fn ipv6_multicast(addr: &core::net::Ipv6Addr) -> MacAddress {
    let o = addr.octets();
    [0x33, 0x33, o[12], o[13], o[14], o[15]]
}

mod field {
    use core::ops::Range;
    pub const DST: Range<usize> = 0..6;
    pub const SRC: Range<usize> = 6..12;
    pub const ETHERTYPE: usize = 12;
}

pub const HEADER_LEN: usize = 14;

/// Checked view of an Ethernet II frame.
#[derive(Debug, Clone)]
pub struct EthernetFrame<T> {
    buffer: T,
}

impl<T: AsRef<[u8]>> EthernetFrame<T> {
    pub fn new_checked(buffer: T) -> Result<Self, ParseError> {
        if buffer.as_ref().len() < HEADER_LEN {
            return Err(ParseError::EthernetTruncated);
        }
        Ok(EthernetFrame { buffer })
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    pub fn dst(&self) -> MacAddress {
        arr6(self.buffer.as_ref(), field::DST.start)
    }

    pub fn src(&self) -> MacAddress {
        arr6(self.buffer.as_ref(), field::SRC.start)
    }

    pub fn ethertype(&self) -> u16 {
        be16(self.buffer.as_ref(), field::ETHERTYPE)
    }

    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> EthernetFrame<T> {
    pub fn set_dst(&mut self, mac: MacAddress) {
        self.buffer.as_mut()[field::DST].copy_from_slice(&mac);
    }

    pub fn set_src(&mut self, mac: MacAddress) {
        self.buffer.as_mut()[field::SRC].copy_from_slice(&mac);
    }

    pub fn set_ethertype(&mut self, ethertype: u16) {
        put16(self.buffer.as_mut(), field::ETHERTYPE, ethertype);
    }

    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[HEADER_LEN..]
    }
}

/// A decoded Ethernet header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EthernetRepr {
    pub dst: MacAddress,
    pub src: MacAddress,
    pub ethertype: u16,
}

impl EthernetRepr {
    pub fn parse(buffer: &[u8]) -> Result<Self, ParseError> {
        let f = EthernetFrame::new_checked(buffer)?;
        Ok(EthernetRepr {
            dst: f.dst(),
            src: f.src(),
            ethertype: f.ethertype(),
        })
    }

    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes the header into the first 14 bytes of `buffer`.
    pub fn emit(&self, buffer: &mut [u8]) -> Result<(), BufferTooSmall> {
        let mut f = EthernetFrame::new_checked(buffer).map_err(|_| BufferTooSmall)?;
        f.set_dst(self.dst);
        f.set_src(self.src);
        f.set_ethertype(self.ethertype);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const FRAME: [u8; 16] = [
        0x02, 0x00, 0x00, 0x00, 0x00, 0x02, // dst
        0x02, 0x00, 0x00, 0x00, 0x00, 0x01, // src
        0x08, 0x06, // ARP
        0xaa, 0xbb,
    ];

    #[test]
    fn parses_fields() {
        let r = EthernetRepr::parse(&FRAME).unwrap();
        assert_eq!(r.dst, [2, 0, 0, 0, 0, 2]);
        assert_eq!(r.src, [2, 0, 0, 0, 0, 1]);
        assert_eq!(r.ethertype, crate::ethertype::ARP);
        assert_eq!(
            EthernetFrame::new_checked(&FRAME[..]).unwrap().payload(),
            &[0xaa, 0xbb]
        );
    }

    #[test]
    fn short_is_an_error() {
        for n in 0..HEADER_LEN {
            assert_eq!(
                EthernetRepr::parse(&FRAME[..n]),
                Err(ParseError::EthernetTruncated)
            );
        }
        assert_eq!(
            EthernetRepr::parse(&FRAME).unwrap().emit(&mut [0; 13]),
            Err(BufferTooSmall)
        );
    }

    #[test]
    fn multicast_mapping() {
        let a: core::net::Ipv6Addr = "ff02::1:ff00:1".parse().unwrap();
        assert_eq!(ipv6_multicast(&a), [0x33, 0x33, 0xff, 0, 0, 1]);
        assert!(is_multicast(&BROADCAST));
        assert!(!is_multicast(&[2, 0, 0, 0, 0, 1]));
    }

    proptest! {
        #[test]
        fn round_trip(dst in any::<[u8; 6]>(), src in any::<[u8; 6]>(), ethertype in any::<u16>()) {
            let repr = EthernetRepr { dst, src, ethertype };
            let mut buf = [0u8; HEADER_LEN];
            repr.emit(&mut buf).unwrap();
            prop_assert_eq!(EthernetRepr::parse(&buf), Ok(repr));
        }
    }
}
