//! IPv4: anti-spoofing, traffic for the gateway, routing between endpoints.

use sluice_wire::ethernet::HEADER_LEN as ETH_LEN;
use sluice_wire::icmpv4::msg_type;
use sluice_wire::ip_protocol::ICMP;
use sluice_wire::{checksum, ipv4, EthernetFrame, Icmpv4Packet, Ipv4Packet, L4};

use crate::ingress::Ingress;
use crate::{icmp_error, observe, route};
use crate::{DropReason, Observation, Verdict};

/// TTL of packets the gateway originates.
pub(crate) const GATEWAY_TTL: u8 = 64;

/// Where [`sluice_wire::parse`] found the headers.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Layout {
    pub header_len: usize,
    pub total_len: usize,
    /// The header's protocol field (also of a fragment).
    pub protocol: u8,
    pub fragment: bool,
    pub l4: Option<L4>,
}

pub(crate) fn handle(
    frame: &mut [u8],
    ctx: &Ingress<'_>,
    layout: Layout,
    observation: &mut Observation,
) -> Result<Verdict, DropReason> {
    let ip_bytes = frame.get(ETH_LEN..ctx.len).ok_or(DropReason::Truncated)?;
    let ip = Ipv4Packet::new_checked(ip_bytes).map_err(|_| DropReason::InvalidIpv4Header)?;
    let (src, dst, ttl) = (ip.src(), ip.dst(), ip.ttl());
    observe::arrival_ip(
        frame,
        src.into(),
        dst.into(),
        layout.protocol,
        layout.l4,
        observation,
    );
    if Some(src) != ctx.endpoint.ipv4 {
        return Err(DropReason::SpoofedSourceIp);
    }
    if ipv4::is_multicast_or_broadcast(dst) {
        return Err(DropReason::Multicast);
    }
    if layout.fragment {
        return Err(DropReason::Fragment);
    }
    let gateway = &ctx.tables.gateway;
    if dst == gateway.ipv4 {
        return echo_reply(frame, ctx, layout);
    }
    if ttl <= 1 {
        return icmp_error::time_exceeded_v4(frame, ctx, layout);
    }
    route::forward(frame, ctx.len, layout.l4, false, &ctx.stage(), observation)
}

/// Forwards a routed IPv4 frame: TTL decremented (checked > 1 by the caller),
/// MACs rewritten, out of `ifindex`.
pub(crate) fn route(
    frame: &mut [u8],
    len: usize,
    ifindex: u32,
    dst_mac: [u8; 6],
    src_mac: [u8; 6],
) -> Result<Verdict, DropReason> {
    let ip_bytes = frame.get_mut(ETH_LEN..len).ok_or(DropReason::Truncated)?;
    Ipv4Packet::new_checked(ip_bytes)
        .map_err(|_| DropReason::InvalidIpv4Header)?
        .decrement_ttl();
    let mut eth = EthernetFrame::new_checked(&mut *frame).map_err(|_| DropReason::Truncated)?;
    eth.set_dst(dst_mac);
    eth.set_src(src_mac);
    Ok(Verdict::Forward { ifindex, len })
}

/// Answers a ping to the gateway address in place; anything else addressed to
/// the gateway is not handled.
fn echo_reply(frame: &mut [u8], ctx: &Ingress<'_>, layout: Layout) -> Result<Verdict, DropReason> {
    let l4 = match layout.l4 {
        Some(l4) if l4.protocol == ICMP => l4,
        _ => return Err(DropReason::ToGatewayNotHandled),
    };
    let gateway = &ctx.tables.gateway;
    let icmp_bytes = frame
        .get_mut(l4.offset..l4.offset + l4.len)
        .ok_or(DropReason::Truncated)?;
    let mut icmp =
        Icmpv4Packet::new_checked(icmp_bytes).map_err(|_| DropReason::InvalidL4Header)?;
    if icmp.msg_type() != msg_type::ECHO_REQUEST {
        return Err(DropReason::ToGatewayNotHandled);
    }
    if !icmp.verify_checksum() {
        return Err(DropReason::L4ChecksumBad);
    }
    let old_word = u16::from_be_bytes([icmp.msg_type(), icmp.code()]);
    icmp.set_msg_type(msg_type::ECHO_REPLY);
    let new_word = u16::from_be_bytes([msg_type::ECHO_REPLY, icmp.code()]);
    let csum = checksum::update_u16(icmp.checksum(), old_word, new_word);
    icmp.set_checksum(csum);

    let ip_end = ETH_LEN + layout.total_len;
    let ip_bytes = frame
        .get_mut(ETH_LEN..ip_end)
        .ok_or(DropReason::Truncated)?;
    let mut ip = Ipv4Packet::new_checked(ip_bytes).map_err(|_| DropReason::InvalidIpv4Header)?;
    let pod = ip.src();
    ip.set_src_updating_checksum(gateway.ipv4);
    ip.set_dst_updating_checksum(pod);
    ip.set_ttl(GATEWAY_TTL);
    ip.fill_checksum();
    let mut eth = EthernetFrame::new_checked(&mut *frame).map_err(|_| DropReason::Truncated)?;
    eth.set_dst(ctx.parsed.src);
    eth.set_src(gateway.mac.0);
    let _ = layout.header_len;
    Ok(Verdict::Forward {
        ifindex: ctx.ifindex,
        len: ip_end,
    })
}
