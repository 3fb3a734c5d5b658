//! Address and port rewriting of one IP packet in place, with incremental
//! checksum updates (RFC 1624): the IPv4 header checksum, and the transport
//! checksum through the pseudo-header for TCP, UDP (an IPv4 UDP checksum of 0,
//! "none", stays 0) and ICMPv6. A "port" of ICMP echo is its identifier: the
//! source port of a request and the destination port of a reply, as
//! [`sluice_conntrack::FlowKey`] puts it. SCTP's CRC32c cannot be patched, so it
//! is recomputed when a port changes.
//!
//! The same code rewrites the packet quoted inside an ICMP error, whose
//! transport header may be cut short: a field that is not inside the quote is
//! left alone (an incremental update is exact even for a truncated segment, as
//! long as its checksum field is there).

use core::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use sluice_conntrack::Rewrites;
use sluice_wire::ip_protocol::{ICMP, ICMPV6, SCTP, TCP, UDP};
use sluice_wire::{checksum, icmpv4, icmpv6, sctp};

/// Where one IP packet's headers are in a buffer: the frame, or the quote
/// inside an ICMP error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Headers {
    pub ipv6: bool,
    /// Offset of the IP header.
    pub ip: usize,
    /// Offset of the transport header.
    pub l4: usize,
    /// End of the transport data present in the buffer.
    pub end: usize,
    pub protocol: u8,
}

/// Which end of a packet a rewrite touches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum End {
    Src,
    Dst,
}

/// The rewrite cannot be done because a header lies outside the buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct OutOfBounds;

impl Headers {
    fn addr_at(&self, end: End) -> usize {
        match (self.ipv6, end) {
            (false, End::Src) => self.ip + 12,
            (false, End::Dst) => self.ip + 16,
            (true, End::Src) => self.ip + 8,
            (true, End::Dst) => self.ip + 24,
        }
    }

    /// The address at `end`.
    pub fn addr(&self, buf: &[u8], end: End) -> Option<IpAddr> {
        let at = self.addr_at(end);
        if self.ipv6 {
            let b: [u8; 16] = buf.get(at..at + 16)?.try_into().ok()?;
            Some(IpAddr::V6(Ipv6Addr::from(b)))
        } else {
            let b: [u8; 4] = buf.get(at..at + 4)?.try_into().ok()?;
            Some(IpAddr::V4(Ipv4Addr::from(b)))
        }
    }

    /// Offset of the port (or ICMP echo identifier) at `end`, if the packet has one.
    pub fn port_at(&self, buf: &[u8], end: End) -> Option<usize> {
        match self.protocol {
            TCP | UDP | SCTP => Some(self.l4 + if end == End::Src { 0 } else { 2 }),
            ICMP | ICMPV6 => {
                let (request, reply) = if self.protocol == ICMP {
                    (icmpv4::msg_type::ECHO_REQUEST, icmpv4::msg_type::ECHO_REPLY)
                } else {
                    (icmpv6::msg_type::ECHO_REQUEST, icmpv6::msg_type::ECHO_REPLY)
                };
                let t = *buf.get(self.l4)?;
                let identifier =
                    (t == request && end == End::Src) || (t == reply && end == End::Dst);
                identifier.then_some(self.l4 + 4)
            }
            _ => None,
        }
    }

    /// The port at `end` (0 when the packet has none there).
    pub fn port(&self, buf: &[u8], end: End) -> Option<u16> {
        match self.port_at(buf, end) {
            Some(at) => read16(buf, at),
            None => Some(0),
        }
    }

    /// Offset of the ones'-complement transport checksum, if the protocol has one.
    fn l4_checksum_at(&self) -> Option<usize> {
        match self.protocol {
            TCP => Some(self.l4 + 16),
            UDP => Some(self.l4 + 6),
            ICMP | ICMPV6 => Some(self.l4 + 2),
            _ => None,
        }
    }

    /// The transport checksum field, if it lies inside the buffer's data.
    fn l4_checksum_field(&self, buf: &[u8]) -> Option<(usize, u16)> {
        let at = self.l4_checksum_at()?;
        if at + 2 > self.end {
            return None;
        }
        Some((at, read16(buf, at)?))
    }

    /// Updates the transport checksum for a change of covered bytes.
    fn patch_l4_checksum(&self, buf: &mut [u8], old: &[u8], new: &[u8]) {
        let Some((at, csum)) = self.l4_checksum_field(buf) else {
            return;
        };
        let updated = if self.protocol == UDP {
            checksum::update_udp(csum, |c| checksum::update_bytes(c, old, new))
        } else {
            checksum::update_bytes(csum, old, new)
        };
        write16(buf, at, updated);
    }
}

fn read16(buf: &[u8], at: usize) -> Option<u16> {
    let b = buf.get(at..at + 2)?;
    Some(u16::from_be_bytes([b[0], b[1]]))
}

fn write16(buf: &mut [u8], at: usize, value: u16) {
    if let Some(b) = buf.get_mut(at..at + 2) {
        b.copy_from_slice(&value.to_be_bytes());
    }
}

/// Replaces the address at `end`, updating the IPv4 header checksum and the
/// transport checksum when its pseudo-header covers the address.
pub(crate) fn set_addr(
    buf: &mut [u8],
    h: &Headers,
    end: End,
    new: IpAddr,
) -> Result<(), OutOfBounds> {
    let old = h.addr(buf, end).ok_or(OutOfBounds)?;
    if old == new {
        return Ok(());
    }
    let at = h.addr_at(end);
    let mut old_bytes = [0u8; 16];
    let mut new_bytes = [0u8; 16];
    let n = match (old, new) {
        (IpAddr::V4(o), IpAddr::V4(n)) => {
            old_bytes[..4].copy_from_slice(&o.octets());
            new_bytes[..4].copy_from_slice(&n.octets());
            4
        }
        (IpAddr::V6(o), IpAddr::V6(n)) => {
            old_bytes.copy_from_slice(&o.octets());
            new_bytes.copy_from_slice(&n.octets());
            16
        }
        // A rewrite to the other family is a table bug; never half-apply it.
        _ => return Err(OutOfBounds),
    };
    let (old_bytes, new_bytes) = (&old_bytes[..n], &new_bytes[..n]);
    buf.get_mut(at..at + n)
        .ok_or(OutOfBounds)?
        .copy_from_slice(new_bytes);
    if !h.ipv6 {
        let csum_at = h.ip + 10;
        let csum = read16(buf, csum_at).ok_or(OutOfBounds)?;
        write16(
            buf,
            csum_at,
            checksum::update_bytes(csum, old_bytes, new_bytes),
        );
    }
    if checksum::covers_pseudo_header(h.protocol) {
        h.patch_l4_checksum(buf, old_bytes, new_bytes);
    }
    Ok(())
}

/// Replaces the port (or echo identifier) at `end`; a packet without one there
/// is left alone. Returns whether an SCTP CRC has to be recomputed.
pub(crate) fn set_port(
    buf: &mut [u8],
    h: &Headers,
    end: End,
    new: u16,
) -> Result<bool, OutOfBounds> {
    let Some(at) = h.port_at(buf, end) else {
        return Ok(false);
    };
    if at + 2 > h.end {
        return Err(OutOfBounds);
    }
    let old = read16(buf, at).ok_or(OutOfBounds)?;
    if old == new {
        return Ok(false);
    }
    write16(buf, at, new);
    h.patch_l4_checksum(buf, &old.to_be_bytes(), &new.to_be_bytes());
    Ok(h.protocol == SCTP)
}

/// Applies an entry's rewrites to a whole packet (not a quote).
pub(crate) fn apply(buf: &mut [u8], h: &Headers, rewrites: &Rewrites) -> Result<(), OutOfBounds> {
    let mut crc_stale = false;
    for (end, to) in [(End::Src, rewrites.src), (End::Dst, rewrites.dst)] {
        if let Some(to) = to {
            set_addr(buf, h, end, to.ip())?;
            crc_stale |= set_port(buf, h, end, to.port())?;
        }
    }
    if crc_stale {
        let packet = buf.get_mut(h.l4..h.end).ok_or(OutOfBounds)?;
        if !sctp::fill_checksum(packet) {
            return Err(OutOfBounds);
        }
    }
    Ok(())
}

/// Writes `to` at `end` of a quoted packet as far as the quote allows.
pub(crate) fn apply_to_quote(buf: &mut [u8], h: &Headers, end: End, to: SocketAddr) {
    if set_addr(buf, h, end, to.ip()).is_ok() {
        // The SCTP CRC of a quote covers bytes that are not there: left stale.
        let _ = set_port(buf, h, end, to.port());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{ipv6_simple, tcp, udp, V4};
    use proptest::prelude::*;
    use smoltcp::wire::{IpAddress, Ipv4Packet, Ipv6Packet, TcpPacket, UdpPacket};

    fn headers_v4(packet: &[u8], protocol: u8) -> Headers {
        Headers {
            ipv6: false,
            ip: 0,
            l4: 20,
            end: packet.len(),
            protocol,
        }
    }

    fn headers_v6(packet: &[u8], protocol: u8) -> Headers {
        Headers {
            ipv6: true,
            ip: 0,
            l4: 40,
            end: packet.len(),
            protocol,
        }
    }

    fn rewrites(src: Option<SocketAddr>, dst: Option<SocketAddr>) -> Rewrites {
        Rewrites { src, dst }
    }

    proptest! {
        /// After any rewrite, smoltcp verifies every checksum of the packet
        /// against the new addresses, and the fields hold the new values.
        #[test]
        fn tcp_and_udp_v4_checksums_verify_after_rewrite(
            src in any::<[u8; 4]>(), dst in any::<[u8; 4]>(),
            sport in any::<u16>(), dport in any::<u16>(),
            new_src in proptest::option::of((any::<[u8; 4]>(), any::<u16>())),
            new_dst in proptest::option::of((any::<[u8; 4]>(), any::<u16>())),
            payload in proptest::collection::vec(any::<u8>(), 0..40),
            use_tcp in any::<bool>(),
        ) {
            let (src, dst) = (Ipv4Addr::from(src), Ipv4Addr::from(dst));
            let (protocol, l4) = if use_tcp {
                let mut s = tcp(sport, dport, 0x18, &[]);
                s.extend_from_slice(&payload);
                (TCP, s)
            } else {
                (UDP, udp(sport, dport, &payload))
            };
            let mut p = V4::new(src, dst, protocol, 64).packet(&l4);
            let rw = rewrites(
                new_src.map(|(a, port)| SocketAddr::new(Ipv4Addr::from(a).into(), port)),
                new_dst.map(|(a, port)| SocketAddr::new(Ipv4Addr::from(a).into(), port)),
            );
            let h = headers_v4(&p, protocol);
            apply(&mut p, &h, &rw).unwrap();
            let ip = Ipv4Packet::new_checked(&p[..]).unwrap();
            prop_assert!(ip.verify_checksum());
            let (s, d) = (IpAddress::Ipv4(ip.src_addr()), IpAddress::Ipv4(ip.dst_addr()));
            let want_src = rw.src.unwrap_or(SocketAddr::new(src.into(), sport));
            let want_dst = rw.dst.unwrap_or(SocketAddr::new(dst.into(), dport));
            prop_assert_eq!(IpAddr::V4(ip.src_addr()), want_src.ip());
            prop_assert_eq!(IpAddr::V4(ip.dst_addr()), want_dst.ip());
            if use_tcp {
                let t = TcpPacket::new_checked(ip.payload()).unwrap();
                prop_assert!(t.verify_checksum(&s, &d));
                prop_assert_eq!((t.src_port(), t.dst_port()), (want_src.port(), want_dst.port()));
            } else {
                let u = UdpPacket::new_checked(ip.payload()).unwrap();
                prop_assert!(u.verify_checksum(&s, &d));
                prop_assert_eq!((u.src_port(), u.dst_port()), (want_src.port(), want_dst.port()));
            }
        }

        #[test]
        fn tcp_and_udp_v6_checksums_verify_after_rewrite(
            src in any::<[u8; 16]>(), dst in any::<[u8; 16]>(),
            sport in any::<u16>(), dport in any::<u16>(),
            new_src in proptest::option::of((any::<[u8; 16]>(), any::<u16>())),
            new_dst in proptest::option::of((any::<[u8; 16]>(), any::<u16>())),
            payload in proptest::collection::vec(any::<u8>(), 0..40),
            use_tcp in any::<bool>(),
        ) {
            let (src, dst) = (Ipv6Addr::from(src), Ipv6Addr::from(dst));
            let (protocol, l4) = if use_tcp {
                let mut s = tcp(sport, dport, 0x18, &[]);
                s.extend_from_slice(&payload);
                (TCP, s)
            } else {
                (UDP, udp(sport, dport, &payload))
            };
            let mut p = ipv6_simple(src, dst, 64, protocol, &l4);
            let rw = rewrites(
                new_src.map(|(a, port)| SocketAddr::new(Ipv6Addr::from(a).into(), port)),
                new_dst.map(|(a, port)| SocketAddr::new(Ipv6Addr::from(a).into(), port)),
            );
            let h = headers_v6(&p, protocol);
            apply(&mut p, &h, &rw).unwrap();
            let ip = Ipv6Packet::new_checked(&p[..]).unwrap();
            let (s, d) = (IpAddress::Ipv6(ip.src_addr()), IpAddress::Ipv6(ip.dst_addr()));
            if use_tcp {
                let t = TcpPacket::new_checked(ip.payload()).unwrap();
                prop_assert!(t.verify_checksum(&s, &d));
            } else {
                let u = UdpPacket::new_checked(ip.payload()).unwrap();
                prop_assert!(u.verify_checksum(&s, &d));
            }
        }
    }

    #[test]
    fn udp_v4_without_checksum_keeps_zero() {
        let src = Ipv4Addr::new(10, 0, 0, 1);
        let dst = Ipv4Addr::new(10, 0, 0, 2);
        let mut p = V4::new(src, dst, UDP, 64).packet(&udp(1, 2, b"x"));
        p[20 + 6] = 0;
        p[20 + 7] = 0;
        let to = SocketAddr::new(Ipv4Addr::new(10, 9, 9, 9).into(), 99);
        let h = headers_v4(&p, UDP);
        apply(&mut p, &h, &rewrites(None, Some(to))).unwrap();
        assert_eq!(&p[26..28], &[0, 0]);
        assert!(Ipv4Packet::new_checked(&p[..]).unwrap().verify_checksum());
    }

    #[test]
    fn icmp_echo_identifier_is_the_request_source_port() {
        let src = Ipv4Addr::new(10, 0, 0, 1);
        let dst = Ipv4Addr::new(192, 0, 2, 1);
        let mut p = V4::new(src, dst, ICMP, 64).packet(&crate::fixtures::icmp(
            8,
            0,
            [0x12, 0x34, 0, 1],
            b"data",
        ));
        let to = SocketAddr::new(Ipv4Addr::new(172, 16, 0, 1).into(), 0x4321);
        let h = headers_v4(&p, ICMP);
        // The destination "port" of a request is not in the packet.
        apply(
            &mut p,
            &h,
            &rewrites(Some(to), Some(SocketAddr::new(dst.into(), 7))),
        )
        .unwrap();
        assert_eq!(&p[24..26], &[0x43, 0x21]);
        let ip = Ipv4Packet::new_checked(&p[..]).unwrap();
        assert!(ip.verify_checksum());
        let icmp = smoltcp::wire::Icmpv4Packet::new_checked(ip.payload()).unwrap();
        assert!(icmp.verify_checksum());
    }

    #[test]
    fn sctp_port_rewrite_recomputes_the_crc() {
        let src = Ipv4Addr::new(10, 0, 0, 1);
        let dst = Ipv4Addr::new(10, 0, 0, 2);
        let mut chunk = vec![0u8; 12 + 16];
        chunk[0..2].copy_from_slice(&5000u16.to_be_bytes());
        chunk[2..4].copy_from_slice(&80u16.to_be_bytes());
        chunk[12] = 1;
        sctp::fill_checksum(&mut chunk);
        let mut p = V4::new(src, dst, SCTP, 64).packet(&chunk);
        let to = SocketAddr::new(Ipv4Addr::new(10, 0, 0, 3).into(), 8080);
        let h = headers_v4(&p, SCTP);
        apply(&mut p, &h, &rewrites(None, Some(to))).unwrap();
        assert!(sctp::verify_checksum(&p[20..]));
        assert_eq!(&p[22..24], &8080u16.to_be_bytes());
    }
}
