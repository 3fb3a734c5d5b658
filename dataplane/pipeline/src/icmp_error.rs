//! ICMP errors built in place: the original packet is moved back to make room
//! for the new IP and ICMP headers, and quoted as far as the RFCs allow.

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
    let gateway = &ctx.tables.gateway;
    let new_headers = ipv4::HEADER_LEN + icmpv4::HEADER_LEN;
    // At least the original header and 8 bytes of its payload (RFC 792).
    let min_quote = layout.total_len.min(layout.header_len + 8);
    let room = frame.len().saturating_sub(ETH_LEN + new_headers);
    let quote = layout
        .total_len
        .min(ICMPV4_ERROR_MAX_IP_LEN - new_headers)
        .min(room);
    if quote < min_quote {
        return Err(DropReason::TtlExceeded);
    }
    let original = frame
        .get(ETH_LEN..ETH_LEN + layout.total_len)
        .ok_or(DropReason::TtlExceeded)?;
    let pod = ipv4::Ipv4Packet::new_checked(original)
        .map_err(|_| DropReason::TtlExceeded)?
        .src();
    let out_len = ETH_LEN + new_headers + quote;
    frame.copy_within(ETH_LEN..ETH_LEN + quote, ETH_LEN + new_headers);
    let out = frame.get_mut(..out_len).ok_or(DropReason::TtlExceeded)?;
    EthernetRepr {
        dst: ctx.parsed.src,
        src: gateway.mac.0,
        ethertype: ethertype::IPV4,
    }
    .emit(out)
    .map_err(|_| DropReason::TtlExceeded)?;
    Ipv4Repr {
        src: gateway.ipv4,
        dst: pod,
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
    .map_err(|_| DropReason::TtlExceeded)?;
    Icmpv4Repr::TimeExceeded { code: 0 }
        .emit(&mut out[ETH_LEN + ipv4::HEADER_LEN..])
        .map_err(|_| DropReason::TtlExceeded)?;
    Ok(Verdict::Forward {
        ifindex: ctx.ifindex,
        len: out_len,
    })
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
    let gateway = &ctx.tables.gateway;
    let new_headers = ipv6::HEADER_LEN + icmpv6::HEADER_LEN;
    let total_len = ipv6::HEADER_LEN + layout.payload_len;
    let room = frame.len().saturating_sub(ETH_LEN + new_headers);
    let quote = total_len
        .min(ICMPV6_ERROR_MAX_IP_LEN - new_headers)
        .min(room);
    if quote < ipv6::HEADER_LEN {
        return Err(DropReason::TtlExceeded);
    }
    let original = frame
        .get(ETH_LEN..ETH_LEN + total_len)
        .ok_or(DropReason::TtlExceeded)?;
    let pod = ipv6::Ipv6Packet::new_checked(original)
        .map_err(|_| DropReason::TtlExceeded)?
        .src();
    let out_len = ETH_LEN + new_headers + quote;
    frame.copy_within(ETH_LEN..ETH_LEN + quote, ETH_LEN + new_headers);
    let out = frame.get_mut(..out_len).ok_or(DropReason::TtlExceeded)?;
    EthernetRepr {
        dst: ctx.parsed.src,
        src: gateway.mac.0,
        ethertype: ethertype::IPV6,
    }
    .emit(out)
    .map_err(|_| DropReason::TtlExceeded)?;
    Ipv6Repr {
        src: gateway.ipv6,
        dst: pod,
        next_header: ICMPV6,
        hop_limit: GATEWAY_TTL,
        traffic_class: 0,
        flow_label: 0,
        payload_len: icmpv6::HEADER_LEN + quote,
    }
    .emit(&mut out[ETH_LEN..])
    .map_err(|_| DropReason::TtlExceeded)?;
    Icmpv6Repr::TimeExceeded { code: 0 }
        .emit(gateway.ipv6, pod, &mut out[ETH_LEN + ipv6::HEADER_LEN..])
        .map_err(|_| DropReason::TtlExceeded)?;
    Ok(Verdict::Forward {
        ifindex: ctx.ifindex,
        len: out_len,
    })
}
