//! IPv6: anti-spoofing, neighbour discovery, traffic for the gateway, routing
//! between endpoints.

use sluice_wire::ethernet::HEADER_LEN as ETH_LEN;
use sluice_wire::icmpv6::msg_type;
use sluice_wire::ip_protocol::ICMPV6;
use sluice_wire::{ipv6, EthernetFrame, Icmpv6Packet, Ipv6Packet, UpperLayer, L4};

use crate::ingress::Ingress;
use crate::ipv4::GATEWAY_TTL;
use crate::{icmp_error, ndisc, observe, route, DropReason, Observation, Verdict};

/// Where [`sluice_wire::parse`] found the headers.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Layout {
    pub payload_len: usize,
    pub upper: UpperLayer,
    /// `None` for fragments.
    pub l4: Option<L4>,
}

impl Layout {
    /// The ICMPv6 message type, for unfragmented ICMPv6.
    fn icmp_type(&self, frame: &[u8]) -> Option<u8> {
        match self.l4 {
            Some(l4) if l4.protocol == ICMPV6 => frame.get(l4.offset).copied(),
            _ => None,
        }
    }
}

pub(crate) fn handle(
    frame: &mut [u8],
    ctx: &Ingress<'_>,
    layout: Layout,
    observation: &mut Observation,
) -> Result<Verdict, DropReason> {
    let ip_bytes = frame.get(ETH_LEN..ctx.len).ok_or(DropReason::Truncated)?;
    let ip = Ipv6Packet::new_checked(ip_bytes).map_err(|_| DropReason::InvalidIpv6Header)?;
    let (src, dst, hop_limit) = (ip.src(), ip.dst(), ip.hop_limit());
    observe::arrival_ip(
        frame,
        src.into(),
        dst.into(),
        layout.upper.protocol,
        layout.l4,
        observation,
    );
    let icmp_type = layout.icmp_type(frame);
    let link_control = icmp_type.is_some_and(msg_type::is_link_control);
    if Some(src) != ctx.endpoint.ipv6 {
        // DAD uses ::, and ND/MLD may come from the pod's link-local address;
        // neither is ever forwarded.
        let link_local_source = src.is_unspecified() || ipv6::is_link_local(&src);
        if !(link_control && link_local_source) {
            return Err(DropReason::SpoofedSourceIp);
        }
    }
    if link_control {
        return ndisc::handle(frame, ctx, layout, icmp_type.unwrap_or(0));
    }
    if dst.is_multicast() {
        return Err(DropReason::Multicast);
    }
    if layout.upper.fragment.is_some() {
        return Err(DropReason::Fragment);
    }
    let gateway = &ctx.tables.gateway;
    if dst == gateway.ipv6 {
        return echo_reply(frame, ctx, layout, icmp_type);
    }
    if hop_limit <= 1 {
        return icmp_error::time_exceeded_v6(frame, ctx, layout);
    }
    route::forward(frame, ctx.len, layout.l4, true, &ctx.stage(), observation)
}

/// Forwards a routed IPv6 frame: hop limit decremented (checked > 1 by the
/// caller), MACs rewritten, out of `ifindex`.
pub(crate) fn route(
    frame: &mut [u8],
    len: usize,
    ifindex: u32,
    dst_mac: [u8; 6],
    src_mac: [u8; 6],
) -> Result<Verdict, DropReason> {
    let ip_bytes = frame.get_mut(ETH_LEN..len).ok_or(DropReason::Truncated)?;
    let mut ip = Ipv6Packet::new_checked(ip_bytes).map_err(|_| DropReason::InvalidIpv6Header)?;
    let hop_limit = ip.hop_limit();
    ip.set_hop_limit(hop_limit.saturating_sub(1));
    let mut eth = EthernetFrame::new_checked(&mut *frame).map_err(|_| DropReason::Truncated)?;
    eth.set_dst(dst_mac);
    eth.set_src(src_mac);
    Ok(Verdict::Forward { ifindex, len })
}

/// Answers a ping to the gateway address in place.
fn echo_reply(
    frame: &mut [u8],
    ctx: &Ingress<'_>,
    layout: Layout,
    icmp_type: Option<u8>,
) -> Result<Verdict, DropReason> {
    let l4 = match (layout.l4, icmp_type) {
        (Some(l4), Some(msg_type::ECHO_REQUEST)) => l4,
        _ => return Err(DropReason::ToGatewayNotHandled),
    };
    let gateway = &ctx.tables.gateway;
    let ip_end = ETH_LEN + ipv6::HEADER_LEN + layout.payload_len;
    let ip_bytes = frame
        .get_mut(ETH_LEN..ip_end)
        .ok_or(DropReason::Truncated)?;
    let mut ip = Ipv6Packet::new_checked(ip_bytes).map_err(|_| DropReason::InvalidIpv6Header)?;
    let (pod, dst) = (ip.src(), ip.dst());
    ip.set_src(gateway.ipv6);
    ip.set_dst(pod);
    ip.set_hop_limit(GATEWAY_TTL);
    let icmp_bytes = frame
        .get_mut(l4.offset..l4.offset + l4.len)
        .ok_or(DropReason::Truncated)?;
    let mut icmp =
        Icmpv6Packet::new_checked(icmp_bytes).map_err(|_| DropReason::InvalidL4Header)?;
    if !icmp.verify_checksum(pod, dst) {
        return Err(DropReason::L4ChecksumBad);
    }
    icmp.set_msg_type(msg_type::ECHO_REPLY);
    icmp.fill_checksum(gateway.ipv6, pod);
    let mut eth = EthernetFrame::new_checked(&mut *frame).map_err(|_| DropReason::Truncated)?;
    eth.set_dst(ctx.parsed.src);
    eth.set_src(gateway.mac.0);
    Ok(Verdict::Forward {
        ifindex: ctx.ifindex,
        len: ip_end,
    })
}
