//! Noting what the stages see into the caller's [`Observation`]: the tuple of
//! the frame as it arrived (right after the parse, so frames dropped later
//! still have one), its TCP flags or ICMP type and code, and the tuple as it
//! leaves once a rewrite changed it; and the DNS messages of DNS-inspected
//! flows ([`crate::dns`] parses them). Reads bounds-checked bytes the parse
//! has already checked; a few loads and stores, no allocation.

use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use sluice_wire::ethernet::HEADER_LEN as ETH_LEN;
use sluice_wire::ip_protocol::{ICMP, ICMPV6, SCTP, TCP, UDP};
use sluice_wire::{Parsed, L3, L4};

use crate::nat::{End, Headers};
use crate::observation::{DnsNote, Observation, Tuple, DNS_ADDRESSES_MAX, DNS_NAME_MAX};

/// Offset of the flags byte in a TCP header.
const TCP_FLAGS_AT: usize = 13;

/// Notes the tuple, TCP flags and ICMP type of a parsed IP frame; a non-IP
/// frame leaves `observation` as it is. For the paths that have not read
/// the addresses yet (the uplink, a drop before the family checks).
#[inline]
pub(crate) fn arrival(frame: &[u8], parsed: &Parsed, observation: &mut Observation) {
    let (ipv6, protocol, l4) = match parsed.l3 {
        L3::Ipv4 { protocol, l4, .. } => (false, protocol, l4),
        L3::Ipv6 { upper, l4, .. } => (true, upper.protocol, l4),
        L3::Arp | L3::Other => return,
    };
    if let Some((src, dst)) = addresses(frame, ipv6) {
        arrival_ip(frame, src, dst, protocol, l4, observation);
    }
}

/// [`arrival`] for a family stage that has read the addresses already.
/// `protocol` is the IP protocol (of a fragment too); `l4` the parsed
/// transport header of an unfragmented packet.
#[inline]
pub(crate) fn arrival_ip(
    frame: &[u8],
    src: IpAddr,
    dst: IpAddr,
    protocol: u8,
    l4: Option<L4>,
    observation: &mut Observation,
) {
    let (mut src_port, mut dst_port) = (0, 0);
    if let Some(L4 { offset, .. }) = l4 {
        match protocol {
            TCP | UDP | SCTP => {
                if let Some(ports) = frame.get(offset..offset + 4) {
                    src_port = u16::from_be_bytes([ports[0], ports[1]]);
                    dst_port = u16::from_be_bytes([ports[2], ports[3]]);
                }
                if protocol == TCP {
                    observation.tcp_flags = frame.get(offset + TCP_FLAGS_AT).copied().unwrap_or(0);
                }
            }
            ICMP | ICMPV6 if (protocol == ICMPV6) == dst.is_ipv6() => {
                if let Some(header) = frame.get(offset..offset + 2) {
                    observation.icmp = Some((header[0], header[1]));
                }
            }
            _ => {}
        }
    }
    observation.original = Some(Tuple {
        src,
        dst,
        src_port,
        dst_port,
        protocol,
    });
}

/// Source and destination address of the IP header behind the Ethernet header.
#[inline]
fn addresses(frame: &[u8], ipv6: bool) -> Option<(IpAddr, IpAddr)> {
    if ipv6 {
        let a: &[u8; 32] = frame.get(ETH_LEN + 8..)?.first_chunk()?;
        let (src, dst) = a.split_at(16);
        Some((
            IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(src).ok()?)),
            IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(dst).ok()?)),
        ))
    } else {
        let a: &[u8; 8] = frame.get(ETH_LEN + 12..)?.first_chunk()?;
        Some((
            IpAddr::V4(Ipv4Addr::new(a[0], a[1], a[2], a[3])),
            IpAddr::V4(Ipv4Addr::new(a[4], a[5], a[6], a[7])),
        ))
    }
}

/// Notes the tuple of the packet at `h` as it is now, after a rewrite, when
/// it differs from the one that arrived.
pub(crate) fn departure(frame: &[u8], h: &Headers, observation: &mut Observation) {
    let (Some(src), Some(dst)) = (h.addr(frame, End::Src), h.addr(frame, End::Dst)) else {
        return;
    };
    let (src_port, dst_port) = match h.protocol {
        TCP | UDP | SCTP => (
            h.port(frame, End::Src).unwrap_or(0),
            h.port(frame, End::Dst).unwrap_or(0),
        ),
        _ => (0, 0),
    };
    let now = Tuple {
        src,
        dst,
        src_port,
        dst_port,
        protocol: h.protocol,
    };
    if observation.original != Some(now) {
        observation.translated = Some(now);
    }
}

/// A DNS note for message `id` with nothing else known yet.
pub(crate) fn dns_note(id: u16, is_response: bool) -> DnsNote {
    DnsNote {
        is_response,
        refused_by_policy: false,
        id,
        qtype: 0,
        rcode: 0,
        name: [0; DNS_NAME_MAX],
        name_len: 0,
        name_truncated: false,
        addresses: [IpAddr::V4(Ipv4Addr::UNSPECIFIED); DNS_ADDRESSES_MAX],
        address_count: 0,
        ttl: 0,
    }
}

/// Copies a question name (presentation form, no root dot) into `note`,
/// lowercase, cut at [`DNS_NAME_MAX`].
pub(crate) fn dns_name(note: &mut DnsNote, name: &[u8]) {
    let kept = name.len().min(DNS_NAME_MAX);
    for (to, from) in note.name.iter_mut().zip(&name[..kept]) {
        *to = from.to_ascii_lowercase();
    }
    note.name_len = kept as u8;
    note.name_truncated = name.len() > DNS_NAME_MAX;
}

/// Adds an answer's address with the TTL it is valid for: the first
/// [`DNS_ADDRESSES_MAX`] addresses are kept, the TTL is the lowest seen.
pub(crate) fn dns_address(note: &mut DnsNote, ip: IpAddr, ttl: u32) {
    let count = usize::from(note.address_count);
    note.ttl = if count == 0 { ttl } else { note.ttl.min(ttl) };
    if let Some(slot) = note.addresses.get_mut(count) {
        *slot = ip;
        note.address_count += 1;
    }
}
