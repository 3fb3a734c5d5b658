//! Zero-copy header views and parse/emit for the frames the engine handles.
//!
//! Each protocol has a view (`XxxPacket<T: AsRef<[u8]>>`) whose only constructor
//! is `new_checked`: once it returns `Ok`, no accessor or setter of the view can
//! panic. A `XxxRepr` is the decoded header with `parse`, `emit` and
//! `buffer_len`. [`parse()`] walks a whole Ethernet frame once and returns the
//! offsets of its layers, which is what the pipeline works from.
//!
//! No allocation, no `unsafe`. smoltcp is used as an independent oracle in tests.

pub mod arp;
pub mod checksum;
pub mod dns;
pub mod ethernet;
pub mod frame;
pub mod icmpv4;
pub mod icmpv6;
pub mod ipv4;
pub mod ipv6;
pub mod sctp;
pub mod tcp;
pub mod udp;

pub use arp::{ArpOperation, ArpPacket, ArpRepr};
pub use ethernet::{EthernetFrame, EthernetRepr, MacAddress};
pub use frame::{parse, Parsed, L3, L4};
pub use icmpv4::{Icmpv4Packet, Icmpv4Repr};
pub use icmpv6::{Icmpv6Packet, Icmpv6Repr, NdiscOption, NdiscRepr};
pub use ipv4::{Ipv4Packet, Ipv4Repr};
pub use ipv6::{walk_extension_headers, Fragment, Ipv6Packet, Ipv6Repr, UpperLayer};
pub use tcp::{TcpPacket, TcpRepr};
pub use udp::{UdpPacket, UdpRepr};

/// Ethertypes the engine knows.
pub mod ethertype {
    pub const IPV4: u16 = 0x0800;
    pub const ARP: u16 = 0x0806;
    pub const VLAN: u16 = 0x8100;
    pub const IPV6: u16 = 0x86dd;
}

/// IP protocol / IPv6 next-header numbers.
pub mod ip_protocol {
    pub const HOP_BY_HOP: u8 = 0;
    pub const ICMP: u8 = 1;
    pub const TCP: u8 = 6;
    pub const UDP: u8 = 17;
    pub const ROUTING: u8 = 43;
    pub const FRAGMENT: u8 = 44;
    pub const ESP: u8 = 50;
    pub const AH: u8 = 51;
    pub const ICMPV6: u8 = 58;
    pub const NO_NEXT_HEADER: u8 = 59;
    pub const DESTINATION_OPTIONS: u8 = 60;
    pub const SCTP: u8 = 132;
}

/// Why bytes do not parse: one variant per check, so a counter or a test can
/// say exactly which check failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ParseError {
    /// Fewer than 14 bytes.
    EthernetTruncated,
    /// Fewer than 28 bytes of ARP.
    ArpTruncated,
    /// ARP hardware type is not Ethernet (1).
    ArpHardwareType,
    /// ARP protocol type is not IPv4.
    ArpProtocolType,
    /// ARP address lengths are not 6 and 4.
    ArpAddressLength,
    /// ARP operation is neither request (1) nor reply (2).
    ArpOperation,
    /// Fewer than 20 bytes of IPv4 header.
    Ipv4Truncated,
    /// IP version field is not 4.
    Ipv4Version,
    /// IHL below 5 words.
    Ipv4HeaderLength,
    /// IHL points past the end of the buffer.
    Ipv4HeaderTruncated,
    /// Total length shorter than the header.
    Ipv4TotalLength,
    /// Total length points past the end of the buffer.
    Ipv4TotalLengthTruncated,
    /// Header checksum does not verify.
    Ipv4Checksum,
    /// Fewer than 40 bytes of IPv6 header.
    Ipv6Truncated,
    /// IP version field is not 6.
    Ipv6Version,
    /// Payload length points past the end of the buffer.
    Ipv6PayloadTruncated,
    /// An extension header runs past the end of the payload.
    Ipv6ExtensionTruncated,
    /// A hop-by-hop options header somewhere other than first.
    Ipv6HopByHopNotFirst,
    /// More extension headers than the walk accepts.
    Ipv6ExtensionChainTooLong,
    /// Fewer than 20 bytes of TCP.
    TcpTruncated,
    /// TCP data offset below 5 words.
    TcpDataOffset,
    /// TCP data offset points past the end of the segment.
    TcpHeaderTruncated,
    /// Fewer than 8 bytes of UDP.
    UdpTruncated,
    /// UDP length field below 8.
    UdpLength,
    /// UDP length field points past the end of the IP payload.
    UdpLengthTruncated,
    /// Fewer than 8 bytes of ICMPv4.
    Icmpv4Truncated,
    /// Fewer than 8 bytes of ICMPv6.
    Icmpv6Truncated,
    /// Neighbour discovery message shorter than its fixed part.
    NdiscTruncated,
    /// Neighbour discovery code is not 0.
    NdiscCode,
    /// ND option with length 0 or running past the end of the message.
    NdiscOptionLength,
    /// Link-layer address option that is not 8 bytes (Ethernet).
    NdiscLinkLayerOption,
    /// ICMP type is not one this repr decodes.
    IcmpType,
}

/// `emit` was given a buffer shorter than `buffer_len()`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BufferTooSmall;

// Field accessors. Each takes the field as one subslice, so a field costs one
// bounds check (usually folded away after inlining) and one load or store, not
// a check and a byte move per byte. They are `#[inline]` because they are
// called from every view, across codegen units and from the pipeline crate.

/// The `N` bytes at `at`; callers have checked the bounds (a panic otherwise).
#[inline]
fn field<const N: usize>(b: &[u8], at: usize) -> [u8; N] {
    match b[at..at + N].try_into() {
        Ok(bytes) => bytes,
        // `b[at..at + N]` has exactly N bytes.
        Err(_) => unreachable!(),
    }
}

/// Reads a big-endian u16; callers have checked the bounds.
#[inline]
pub(crate) fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes(field(b, at))
}

#[inline]
pub(crate) fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(field(b, at))
}

#[inline]
pub(crate) fn put16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

#[inline]
pub(crate) fn put32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_be_bytes());
}

#[inline]
pub(crate) fn arr4(b: &[u8], at: usize) -> [u8; 4] {
    field(b, at)
}

#[inline]
pub(crate) fn arr6(b: &[u8], at: usize) -> [u8; 6] {
    field(b, at)
}

#[inline]
pub(crate) fn arr16(b: &[u8], at: usize) -> [u8; 16] {
    field(b, at)
}
