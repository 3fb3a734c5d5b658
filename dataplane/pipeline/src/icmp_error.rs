//! ICMP errors built in place: the original packet is moved back to make room
//! for the new IP and ICMP headers, and quoted as far as the RFCs allow: time
//! exceeded from the gateway, and destination unreachable for rejected service
//! connections (see [`crate::reject`]).

use sluice_wire::ethernet::HEADER_LEN as ETH_LEN;
use sluice_wire::ip_protocol::{ICMP, ICMPV6};
use sluice_wire::{
    ethertype, icmpv4, icmpv6, ipv4, ipv6, EthernetRepr, Icmpv4Repr, Icmpv6Repr, Ipv4Repr, Ipv6Repr,
};

use crate::ingress::Ingress;
use crate::ipv4::GATEWAY_TTL;
use crate::{DropReason, Verdict};

/// RFC 1812 §4.3.2.3: an ICMPv4 error is at most 576 bytes of IP.
pub const ICMPV4_ERROR_MAX_IP_LEN: usize = 576;
/// RFC 4443 §2.4(c): an ICMPv6 error fits the minimum MTU.
pub const ICMPV6_ERROR_MAX_IP_LEN: usize = 1280;

/// Type of the ICMP message at `offset` when the L4 protocol is `protocol`.
fn icmp_type(frame: &[u8], l4: Option<sluice_wire::L4>, protocol: u8) -> Option<u8> {
    match l4 {
        Some(l4) if l4.protocol == protocol => frame.get(l4.offset).copied(),
        _ => None,
    }
}

/// Who an ICMP error goes to, on the link: back out of the interface the
/// offending frame came in on, to the MAC it came from.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ReplyLink {
    pub ifindex: u32,
    pub eth_dst: [u8; 6],
    pub eth_src: [u8; 6],
}

/// Time exceeded in transit (type 11 code 0) from the gateway to the sender.
pub(crate) fn time_exceeded_v4(
    frame: &mut [u8],
    ctx: &Ingress<'_>,
    layout: crate::ipv4::Layout,
) -> Result<Verdict, DropReason> {
    // RFC 1122 §3.2.2: never an error about an error.
    if icmp_type(frame, layout.l4, ICMP).is_some_and(icmpv4::msg_type::is_error) {
        return Err(DropReason::TtlExceeded);
    }
    let link = ReplyLink {
        ifindex: ctx.ifindex,
        eth_dst: ctx.parsed.src,
        eth_src: ctx.tables.gateway.mac.0,
    };
    let len = error_v4(
        frame,
        layout.total_len,
        layout.header_len,
        ctx.tables.gateway.ipv4,
        Icmpv4Repr::TimeExceeded { code: 0 },
        link,
    )
    .ok_or(DropReason::TtlExceeded)?;
    Ok(Verdict::Forward {
        ifindex: ctx.ifindex,
        len,
    })
}

/// Builds an ICMPv4 error `repr` from `from` to the sender of the IPv4 packet
/// in the frame (`total_len` bytes, header `header_len`), quoting it as far as
/// RFC 1812 and the chunk allow. Returns the frame length, or `None` when the
/// error cannot be built (the caller drops the packet).
pub(crate) fn error_v4(
    frame: &mut [u8],
    total_len: usize,
    header_len: usize,
    from: core::net::Ipv4Addr,
    repr: Icmpv4Repr,
    link: ReplyLink,
) -> Option<usize> {
    let new_headers = ipv4::HEADER_LEN + icmpv4::HEADER_LEN;
    // At least the original header and 8 bytes of its payload (RFC 792).
    let min_quote = total_len.min(header_len + 8);
    let room = frame.len().saturating_sub(ETH_LEN + new_headers);
    let quote = total_len
        .min(ICMPV4_ERROR_MAX_IP_LEN - new_headers)
        .min(room);
    if quote < min_quote {
        return None;
    }
    let original = frame.get(ETH_LEN..ETH_LEN + total_len)?;
    let sender = ipv4::Ipv4Packet::new_checked(original).ok()?.src();
    let out_len = ETH_LEN + new_headers + quote;
    frame.copy_within(ETH_LEN..ETH_LEN + quote, ETH_LEN + new_headers);
    let out = frame.get_mut(..out_len)?;
    EthernetRepr {
        dst: link.eth_dst,
        src: link.eth_src,
        ethertype: ethertype::IPV4,
    }
    .emit(out)
    .ok()?;
    Ipv4Repr {
        src: from,
        dst: sender,
        protocol: ICMP,
        ttl: GATEWAY_TTL,
        // Precedence "internetwork control", as routers send errors.
        tos: 0xc0,
        ident: 0,
        dont_frag: true,
        more_frags: false,
        frag_offset: 0,
        payload_len: icmpv4::HEADER_LEN + quote,
    }
    .emit(&mut out[ETH_LEN..])
    .ok()?;
    repr.emit(&mut out[ETH_LEN + ipv4::HEADER_LEN..]).ok()?;
    Some(out_len)
}

/// Time exceeded, hop limit exceeded in transit (type 3 code 0).
pub(crate) fn time_exceeded_v6(
    frame: &mut [u8],
    ctx: &Ingress<'_>,
    layout: crate::ipv6::Layout,
) -> Result<Verdict, DropReason> {
    if icmp_type(frame, layout.l4, ICMPV6).is_some_and(icmpv6::msg_type::is_error) {
        return Err(DropReason::TtlExceeded);
    }
    let link = ReplyLink {
        ifindex: ctx.ifindex,
        eth_dst: ctx.parsed.src,
        eth_src: ctx.tables.gateway.mac.0,
    };
    let len = error_v6(
        frame,
        ipv6::HEADER_LEN + layout.payload_len,
        ctx.tables.gateway.ipv6,
        Icmpv6Repr::TimeExceeded { code: 0 },
        link,
    )
    .ok_or(DropReason::TtlExceeded)?;
    Ok(Verdict::Forward {
        ifindex: ctx.ifindex,
        len,
    })
}

/// Builds an ICMPv6 error `repr` from `from` to the sender of the IPv6 packet
/// in the frame (`total_len` bytes with its header), quoting as much as fits
/// the minimum MTU and the chunk. Returns the frame length, or `None`.
pub(crate) fn error_v6(
    frame: &mut [u8],
    total_len: usize,
    from: core::net::Ipv6Addr,
    repr: Icmpv6Repr,
    link: ReplyLink,
) -> Option<usize> {
    let new_headers = ipv6::HEADER_LEN + icmpv6::HEADER_LEN;
    let room = frame.len().saturating_sub(ETH_LEN + new_headers);
    let quote = total_len
        .min(ICMPV6_ERROR_MAX_IP_LEN - new_headers)
        .min(room);
    if quote < ipv6::HEADER_LEN {
        return None;
    }
    let original = frame.get(ETH_LEN..ETH_LEN + total_len)?;
    let sender = ipv6::Ipv6Packet::new_checked(original).ok()?.src();
    let out_len = ETH_LEN + new_headers + quote;
    frame.copy_within(ETH_LEN..ETH_LEN + quote, ETH_LEN + new_headers);
    let out = frame.get_mut(..out_len)?;
    EthernetRepr {
        dst: link.eth_dst,
        src: link.eth_src,
        ethertype: ethertype::IPV6,
    }
    .emit(out)
    .ok()?;
    Ipv6Repr {
        src: from,
        dst: sender,
        next_header: ICMPV6,
        hop_limit: GATEWAY_TTL,
        traffic_class: 0,
        flow_label: 0,
        payload_len: icmpv6::HEADER_LEN + quote,
    }
    .emit(&mut out[ETH_LEN..])
    .ok()?;
    repr.emit(from, sender, &mut out[ETH_LEN + ipv6::HEADER_LEN..])
        .ok()?;
    Some(out_len)
}
