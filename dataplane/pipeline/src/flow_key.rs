//! What conntrack sees of a packet: its [`FlowKey`], or, for an ICMP error,
//! the key of the packet it quotes.
//!
//! Keys: TCP, UDP and SCTP by their ports; ICMP echo request `(id, 0)` and echo
//! reply `(0, id)`, so a request's reversed key is its reply's. Other ICMP
//! messages and other protocols have no key and are not tracked (they are
//! routed as they are, and never translated).

use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use sluice_conntrack::FlowKey;
use sluice_wire::ip_protocol::{ICMP, ICMPV6, SCTP, TCP, UDP};
use sluice_wire::{icmpv4, icmpv6, ipv4, ipv6, walk_extension_headers, L4};

use crate::nat::{End, Headers};

/// A packet classified for conntrack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Classified {
    /// A packet of a flow.
    Flow { key: FlowKey, tcp_flags: u8 },
    /// An ICMP error quoting a packet of a flow.
    IcmpError(QuotedPacket),
    /// Not tracked.
    Untracked,
}

/// The packet quoted in an ICMP error (as the error's sender saw it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct QuotedPacket {
    /// Its key, as it left towards the error's sender.
    pub key: FlowKey,
    /// Where its headers are in the frame (`end` is the end of the quote).
    pub headers: Headers,
}

/// The headers of the packet in the frame: IP at the Ethernet payload, `l4` as parsed.
pub(crate) fn outer_headers(ipv6: bool, l4: L4) -> Headers {
    Headers {
        ipv6,
        ip: sluice_wire::ethernet::HEADER_LEN,
        l4: l4.offset,
        end: l4.offset + l4.len,
        protocol: l4.protocol,
    }
}

/// Classifies the (already parsed and checked) packet at `h`. Inlined into
/// the conntrack stage so the key is not copied through the enum.
#[inline]
pub(crate) fn classify(frame: &[u8], h: &Headers) -> Classified {
    let Some(key) = key_of(frame, h) else {
        return match quoted(frame, h) {
            Some(q) => Classified::IcmpError(q),
            None => Classified::Untracked,
        };
    };
    let tcp_flags = match h.protocol {
        TCP => frame.get(h.l4 + 13).copied().unwrap_or(0),
        _ => 0,
    };
    Classified::Flow { key, tcp_flags }
}

/// The key of the packet at `h`, if its protocol is tracked and the header
/// holding its ports is inside the buffer. Per packet: both addresses are
/// read from one slice of the IP header and TCP/UDP/SCTP ports from the
/// first four bytes of the transport header.
#[inline]
fn key_of(buf: &[u8], h: &Headers) -> Option<FlowKey> {
    let (src_port, dst_port) = match h.protocol {
        TCP | UDP | SCTP => {
            if h.l4 + 4 > h.end {
                return None;
            }
            let ports: &[u8; 4] = buf.get(h.l4..)?.first_chunk()?;
            (
                u16::from_be_bytes([ports[0], ports[1]]),
                u16::from_be_bytes([ports[2], ports[3]]),
            )
        }
        ICMP | ICMPV6 => {
            if !is_echo(h.protocol, *buf.get(h.l4)?) || h.l4 + 8 > h.end {
                return None;
            }
            (h.port(buf, End::Src)?, h.port(buf, End::Dst)?)
        }
        _ => return None,
    };
    let (src, dst) = addresses(buf, h)?;
    Some(FlowKey {
        src,
        dst,
        src_port,
        dst_port,
        protocol: h.protocol,
    })
}

/// Source and destination address of the IP header at `h.ip`, read as one slice.
#[inline]
fn addresses(buf: &[u8], h: &Headers) -> Option<(IpAddr, IpAddr)> {
    if h.ipv6 {
        // Source at offset 8, destination at 24.
        let a: &[u8; 32] = buf.get(h.ip + 8..)?.first_chunk()?;
        let (src, dst) = a.split_at(16);
        Some((
            IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(src).ok()?)),
            IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(dst).ok()?)),
        ))
    } else {
        // Source at offset 12, destination at 16.
        let a: &[u8; 8] = buf.get(h.ip + 12..)?.first_chunk()?;
        Some((
            IpAddr::V4(Ipv4Addr::new(a[0], a[1], a[2], a[3])),
            IpAddr::V4(Ipv4Addr::new(a[4], a[5], a[6], a[7])),
        ))
    }
}

fn is_echo(protocol: u8, msg_type: u8) -> bool {
    if protocol == ICMP {
        matches!(
            msg_type,
            icmpv4::msg_type::ECHO_REQUEST | icmpv4::msg_type::ECHO_REPLY
        )
    } else {
        matches!(
            msg_type,
            icmpv6::msg_type::ECHO_REQUEST | icmpv6::msg_type::ECHO_REPLY
        )
    }
}

/// ICMP errors that quote the packet they are about.
fn is_error_about_a_packet(protocol: u8, msg_type: u8) -> bool {
    use icmpv4::msg_type as v4;
    use icmpv6::msg_type as v6;
    match protocol {
        ICMP => matches!(
            msg_type,
            v4::DST_UNREACHABLE | v4::TIME_EXCEEDED | v4::PARAMETER_PROBLEM
        ),
        ICMPV6 => matches!(
            msg_type,
            v6::DST_UNREACHABLE | v6::PACKET_TOO_BIG | v6::TIME_EXCEEDED | v6::PARAMETER_PROBLEM
        ),
        _ => false,
    }
}

/// The quoted packet of an ICMP error of the same family, if it has a key.
fn quoted(frame: &[u8], h: &Headers) -> Option<QuotedPacket> {
    if !is_error_about_a_packet(h.protocol, *frame.get(h.l4)?) {
        return None;
    }
    // The quote starts after the 8-byte ICMP header (both families).
    let ip = h.l4 + icmpv4::HEADER_LEN;
    let quote = frame.get(ip..h.end)?;
    let inner = if h.ipv6 {
        if quote.len() < ipv6::HEADER_LEN || quote[0] >> 4 != 6 {
            return None;
        }
        let after = &quote[ipv6::HEADER_LEN..];
        let upper = walk_extension_headers(quote[6], after).ok()?;
        if upper.fragment.is_some_and(|f| f.offset != 0) {
            return None;
        }
        Headers {
            ipv6: true,
            ip,
            l4: ip + ipv6::HEADER_LEN + upper.offset,
            end: h.end,
            protocol: upper.protocol,
        }
    } else {
        if quote.len() < ipv4::HEADER_LEN || quote[0] >> 4 != 4 {
            return None;
        }
        let ihl = usize::from(quote[0] & 0x0f) * 4;
        let frag_offset = u16::from_be_bytes([quote[6], quote[7]]) & 0x1fff;
        if ihl < ipv4::HEADER_LEN || frag_offset != 0 {
            return None;
        }
        Headers {
            ipv6: false,
            ip,
            l4: ip + ihl,
            end: h.end,
            protocol: quote[9],
        }
    };
    // No error about an error: only packets with a key can be matched.
    let key = key_of(frame, &inner)?;
    Some(QuotedPacket {
        key,
        headers: inner,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{icmp, ipv6_simple, tcp, udp, V4};

    fn v4_headers(p: &[u8], protocol: u8) -> Headers {
        Headers {
            ipv6: false,
            ip: 0,
            l4: 20,
            end: p.len(),
            protocol,
        }
    }

    const A: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
    const B: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);

    #[test]
    fn tcp_udp_and_echo_keys() {
        let p = V4::new(A, B, TCP, 64).packet(&tcp(1000, 80, 0x02, &[]));
        assert_eq!(
            classify(&p, &v4_headers(&p, TCP)),
            Classified::Flow {
                key: FlowKey {
                    src: A.into(),
                    dst: B.into(),
                    src_port: 1000,
                    dst_port: 80,
                    protocol: TCP
                },
                tcp_flags: 0x02
            }
        );
        let request = V4::new(A, B, ICMP, 64).packet(&icmp(8, 0, [0, 7, 0, 1], b""));
        let reply = V4::new(B, A, ICMP, 64).packet(&icmp(0, 0, [0, 7, 0, 1], b""));
        let (Classified::Flow { key: rq, .. }, Classified::Flow { key: rp, .. }) = (
            classify(&request, &v4_headers(&request, ICMP)),
            classify(&reply, &v4_headers(&reply, ICMP)),
        ) else {
            panic!("echo not keyed");
        };
        assert_eq!((rq.src_port, rq.dst_port), (7, 0));
        assert_eq!(rq.reversed(), rp);
        let redirect = V4::new(A, B, ICMP, 64).packet(&icmp(5, 0, [0; 4], &request[..28]));
        assert_eq!(
            classify(&redirect, &v4_headers(&redirect, ICMP)),
            Classified::Untracked
        );
    }

    #[test]
    fn an_icmp_error_yields_the_quoted_key() {
        let original = V4::new(A, B, UDP, 64).packet(&udp(5000, 53, b"query"));
        let error = V4::new(B, A, ICMP, 64).packet(&icmp(3, 3, [0; 4], &original[..28]));
        let Classified::IcmpError(q) = classify(&error, &v4_headers(&error, ICMP)) else {
            panic!("not an error");
        };
        assert_eq!(
            q.key,
            FlowKey {
                src: A.into(),
                dst: B.into(),
                src_port: 5000,
                dst_port: 53,
                protocol: UDP
            }
        );
        assert_eq!((q.headers.ip, q.headers.l4), (28, 48));
        // A quote too short for the ports is not matched.
        let short = V4::new(B, A, ICMP, 64).packet(&icmp(3, 3, [0; 4], &original[..23]));
        assert_eq!(
            classify(&short, &v4_headers(&short, ICMP)),
            Classified::Untracked
        );
    }

    #[test]
    fn an_icmpv6_error_yields_the_quoted_key() {
        let (a, b): (Ipv6Addr, Ipv6Addr) = ("fd00::1".parse().unwrap(), "fd00::2".parse().unwrap());
        let original = ipv6_simple(a, b, 64, TCP, &tcp(4000, 443, 0x02, &[]));
        let error = ipv6_simple(b, a, 64, ICMPV6, &icmp(1, 4, [0; 4], &original));
        let h = Headers {
            ipv6: true,
            ip: 0,
            l4: 40,
            end: error.len(),
            protocol: ICMPV6,
        };
        let Classified::IcmpError(q) = classify(&error, &h) else {
            panic!("not an error");
        };
        assert_eq!((q.key.src_port, q.key.dst_port), (4000, 443));
        assert_eq!(q.key.src, core::net::IpAddr::V6(a));
    }
}
