//! Frames from the outside, arriving on the node's uplink.
//!
//! The uplink program steers only frames to engine-owned prefixes here; ARP and
//! the node's own traffic stay with the kernel. There is no endpoint to check the
//! source against. After the conntrack stage (replies to masqueraded flows,
//! NodePort / LoadBalancer / external IP frontends, new flows to pods), the
//! frame is routed to the endpoint owning its (possibly translated)
//! destination, or out of the uplink again when a service sent it to a backend
//! elsewhere; anything else is dropped. TTL 1 is dropped, not answered.

use sluice_conntrack::FlowTables;
use sluice_tables::Tables;
use sluice_wire::ethernet::HEADER_LEN as ETH_LEN;
use sluice_wire::icmpv6::msg_type;
use sluice_wire::ip_protocol::ICMPV6;
use sluice_wire::{ipv4 as wire_ipv4, Ipv4Packet, Ipv6Packet, Parsed, L3};

use crate::conntrack::Stage;
use crate::icmp_error::ReplyLink;
use crate::{route, DropReason, Observation, Verdict};

pub(crate) fn from_outside(
    frame: &mut [u8],
    len: usize,
    tables: &Tables,
    flows: &FlowTables,
    now_ns: u64,
    parsed: Parsed,
    observation: &mut Observation,
) -> Result<Verdict, DropReason> {
    let Some(uplink) = tables.uplink.as_ref() else {
        return Err(DropReason::UnknownIngress);
    };
    let stage = Stage {
        tables,
        flows,
        now_ns,
        from_uplink: true,
        link: ReplyLink {
            ifindex: uplink.ifindex,
            eth_dst: parsed.src,
            eth_src: uplink.mac.0,
        },
    };
    match parsed.l3 {
        // The uplink program hands ARP to the kernel; one that arrives anyway is not ours.
        L3::Arp => Err(DropReason::ArpNotForGateway),
        L3::Ipv4 { fragment, l4, .. } => {
            let ip_bytes = frame.get(ETH_LEN..len).ok_or(DropReason::Truncated)?;
            let ip =
                Ipv4Packet::new_checked(ip_bytes).map_err(|_| DropReason::InvalidIpv4Header)?;
            let (dst, ttl) = (ip.dst(), ip.ttl());
            if wire_ipv4::is_multicast_or_broadcast(dst) {
                return Err(DropReason::Multicast);
            }
            if fragment {
                return Err(DropReason::Fragment);
            }
            if ttl <= 1 {
                return Err(DropReason::TtlExceeded);
            }
            route::forward(frame, len, l4, false, &stage, observation)
        }
        L3::Ipv6 { upper, l4, .. } => {
            let link_control = match l4 {
                Some(l4) if l4.protocol == ICMPV6 => frame
                    .get(l4.offset)
                    .is_some_and(|t| msg_type::is_link_control(*t)),
                _ => false,
            };
            if link_control {
                return Err(DropReason::Icmpv6NotHandled);
            }
            let ip_bytes = frame.get(ETH_LEN..len).ok_or(DropReason::Truncated)?;
            let ip =
                Ipv6Packet::new_checked(ip_bytes).map_err(|_| DropReason::InvalidIpv6Header)?;
            let (dst, hop_limit) = (ip.dst(), ip.hop_limit());
            if dst.is_multicast() {
                return Err(DropReason::Multicast);
            }
            if upper.fragment.is_some() {
                return Err(DropReason::Fragment);
            }
            if hop_limit <= 1 {
                return Err(DropReason::TtlExceeded);
            }
            route::forward(frame, len, l4, true, &stage, observation)
        }
        L3::Other => Err(DropReason::UnknownEthertype),
    }
}
