//! Where a packet goes once its destination is final (after any translation):
//! the endpoint that owns the address, or out of the uplink.

use core::net::IpAddr;

use sluice_tables::Tables;
use sluice_wire::{ipv6, L4};

use crate::conntrack::{self, Outcome, Stage};
use crate::flow_key::outer_headers;
use crate::nat::End;
use crate::{ipv4, DropReason, Observation, Verdict};

/// The interface and MACs a routed frame leaves with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Egress {
    pub ifindex: u32,
    pub dst_mac: [u8; 6],
    pub src_mac: [u8; 6],
}

/// The egress for `dst`. A local endpoint first; else, when `to_uplink` allows
/// it, the uplink for anything outside this node's pod CIDRs (an unassigned pod
/// address is never sent out, nor a link-local one). Frames from the outside
/// pass `to_uplink = false` unless a translation made them leave again.
pub(crate) fn egress(tables: &Tables, dst: IpAddr, to_uplink: bool) -> Option<Egress> {
    let endpoint = match dst {
        IpAddr::V4(a) => tables.endpoints.by_ipv4(a),
        IpAddr::V6(a) => tables.endpoints.by_ipv6(a),
    };
    if let Some(e) = endpoint {
        return Some(Egress {
            ifindex: e.ifindex,
            dst_mac: e.mac.0,
            src_mac: tables.gateway.mac.0,
        });
    }
    let uplink = tables.uplink.as_ref().filter(|_| to_uplink)?;
    let link_local = matches!(dst, IpAddr::V6(a) if ipv6::is_link_local(&a));
    if uplink.in_pod_cidrs(dst) || link_local {
        return None;
    }
    Some(Egress {
        ifindex: uplink.ifindex,
        dst_mac: uplink.next_hop_mac.0,
        src_mac: uplink.mac.0,
    })
}

/// Whether `addr` belongs to an endpoint on this node.
pub(crate) fn is_local_endpoint(tables: &Tables, addr: IpAddr) -> bool {
    match addr {
        IpAddr::V4(a) => tables.endpoints.by_ipv4(a).is_some(),
        IpAddr::V6(a) => tables.endpoints.by_ipv6(a).is_some(),
    }
}

/// The common tail of the IPv4 and IPv6 paths, from pods and from the uplink,
/// once the family checks are done (and the TTL / hop limit is known to be
/// above 1): the conntrack stage, then routing by the destination it leaves.
pub(crate) fn forward(
    frame: &mut [u8],
    len: usize,
    l4: Option<L4>,
    is_ipv6: bool,
    stage: &Stage<'_>,
    observation: &mut Observation,
) -> Result<Verdict, DropReason> {
    let translated = match l4 {
        Some(l4) => {
            let headers = outer_headers(is_ipv6, l4);
            match conntrack::run(frame, &headers, stage, observation)? {
                Outcome::Answered(verdict) => return Ok(verdict),
                Outcome::Route { translated } => translated,
            }
        }
        None => false,
    };
    let dst = destination(frame, is_ipv6).ok_or(DropReason::Truncated)?;
    let egress =
        egress(stage.tables, dst, !stage.from_uplink || translated).ok_or(DropReason::NoRoute)?;
    // Back out of the ingress only when a translation made it so (hairpin).
    if egress.ifindex == stage.link.ifindex && !translated {
        return Err(DropReason::SameInterface);
    }
    if is_ipv6 {
        crate::ipv6::route(frame, len, egress.ifindex, egress.dst_mac, egress.src_mac)
    } else {
        ipv4::route(frame, len, egress.ifindex, egress.dst_mac, egress.src_mac)
    }
}

/// The destination address of the IP packet in the frame.
fn destination(frame: &[u8], is_ipv6: bool) -> Option<IpAddr> {
    let headers = crate::nat::Headers {
        ipv6: is_ipv6,
        ip: sluice_wire::ethernet::HEADER_LEN,
        l4: 0,
        end: 0,
        protocol: 0,
    };
    headers.addr(frame, End::Dst)
}
