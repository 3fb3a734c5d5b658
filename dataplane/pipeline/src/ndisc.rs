//! Neighbour discovery (RFC 4861) towards the gateway.
//!
//! Only neighbour solicitations for the gateway address are answered. Router
//! solicitations are dropped (`Icmpv6NotHandled`): pods get their default route
//! from the CNI as static configuration, and an advertisement with a prefix
//! would invite SLAAC addresses that anti-spoofing then refuses. Other ND and
//! MLD messages are dropped too.

use core::net::Ipv6Addr;

use sluice_wire::ethernet::HEADER_LEN as ETH_LEN;
use sluice_wire::icmpv6::{msg_type, na_flags};
use sluice_wire::ip_protocol::ICMPV6;
use sluice_wire::{ethernet, ethertype, icmpv6, ipv6, EthernetRepr, Icmpv6Packet, Ipv6Packet};
use sluice_wire::{Ipv6Repr, NdiscRepr};

use crate::ingress::Ingress;
use crate::ipv6::Layout;
use crate::{DropReason, Verdict};

/// ND messages must arrive with, and are sent with, hop limit 255.
const ND_HOP_LIMIT: u8 = 255;

/// Bytes of a neighbour advertisement frame with a target link-layer option.
pub const ADVERT_FRAME_LEN: usize =
    ETH_LEN + ipv6::HEADER_LEN + icmpv6::NDISC_NEIGHBOR_LEN + icmpv6::LLADDR_OPTION_LEN;

pub(crate) fn handle(
    frame: &mut [u8],
    ctx: &Ingress<'_>,
    layout: Layout,
    icmp_type: u8,
) -> Result<Verdict, DropReason> {
    if icmp_type != msg_type::NEIGHBOR_SOLICIT {
        return Err(DropReason::Icmpv6NotHandled);
    }
    let l4 = layout.l4.ok_or(DropReason::Icmpv6NotHandled)?;
    let ip_bytes = frame.get(ETH_LEN..ctx.len).ok_or(DropReason::Truncated)?;
    let ip = Ipv6Packet::new_checked(ip_bytes).map_err(|_| DropReason::InvalidIpv6Header)?;
    let (src, dst) = (ip.src(), ip.dst());
    if ip.hop_limit() != ND_HOP_LIMIT {
        return Err(DropReason::Icmpv6NotHandled);
    }
    let icmp_bytes = frame
        .get(l4.offset..l4.offset + l4.len)
        .ok_or(DropReason::Truncated)?;
    let icmp = Icmpv6Packet::new_checked(icmp_bytes).map_err(|_| DropReason::InvalidL4Header)?;
    if !icmp.verify_checksum(src, dst) {
        return Err(DropReason::L4ChecksumBad);
    }
    let (target, source_lladdr) = match NdiscRepr::parse(icmp_bytes) {
        Ok(NdiscRepr::NeighborSolicit {
            target,
            source_lladdr,
        }) => (target, source_lladdr),
        _ => return Err(DropReason::InvalidL4Header),
    };
    let gateway = &ctx.tables.gateway;
    if target != gateway.ipv6 {
        return Err(DropReason::Icmpv6NotHandled);
    }
    let dad = src.is_unspecified();
    // Multicast to the target's solicited-node group, or unicast (NUD); DAD is
    // always multicast and carries no source link-layer option (RFC 4861 §7.1.1).
    let to_solicited_node = dst == ipv6::solicited_node(&target);
    if !(to_solicited_node || (dst == gateway.ipv6 && !dad)) {
        return Err(DropReason::Icmpv6NotHandled);
    }
    match source_lladdr {
        Some(_) if dad => return Err(DropReason::Icmpv6NotHandled),
        Some(mac) if mac != ctx.endpoint.mac.0 => return Err(DropReason::SpoofedSourceMac),
        _ => {}
    }
    advertise(frame, ctx, src)
}

/// Writes the neighbour advertisement for the gateway over the frame.
fn advertise(
    frame: &mut [u8],
    ctx: &Ingress<'_>,
    solicitor: Ipv6Addr,
) -> Result<Verdict, DropReason> {
    let gateway = &ctx.tables.gateway;
    let out = frame
        .get_mut(..ADVERT_FRAME_LEN)
        .ok_or(DropReason::Icmpv6NotHandled)?;
    // A DAD probe is answered to all-nodes, unsolicited (RFC 4861 §7.2.4).
    let (dst, dst_mac, solicited) = if solicitor.is_unspecified() {
        (
            ipv6::ALL_NODES,
            ethernet::ipv6_multicast(&ipv6::ALL_NODES),
            0,
        )
    } else {
        (solicitor, ctx.parsed.src, na_flags::SOLICITED)
    };
    EthernetRepr {
        dst: dst_mac,
        src: gateway.mac.0,
        ethertype: ethertype::IPV6,
    }
    .emit(out)
    .map_err(|_| DropReason::Icmpv6NotHandled)?;
    let advert = NdiscRepr::NeighborAdvert {
        // The gateway is a router: R keeps it in the pod's default-router list.
        flags: na_flags::ROUTER | solicited | na_flags::OVERRIDE,
        target: gateway.ipv6,
        target_lladdr: Some(gateway.mac.0),
    };
    Ipv6Repr {
        src: gateway.ipv6,
        dst,
        next_header: ICMPV6,
        hop_limit: ND_HOP_LIMIT,
        traffic_class: 0,
        flow_label: 0,
        payload_len: advert.buffer_len(),
    }
    .emit(&mut out[ETH_LEN..])
    .map_err(|_| DropReason::Icmpv6NotHandled)?;
    advert
        .emit(gateway.ipv6, dst, &mut out[ETH_LEN + ipv6::HEADER_LEN..])
        .map_err(|_| DropReason::Icmpv6NotHandled)?;
    Ok(Verdict::Forward {
        ifindex: ctx.ifindex,
        len: ADVERT_FRAME_LEN,
    })
}
