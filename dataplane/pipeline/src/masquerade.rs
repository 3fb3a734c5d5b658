//! Source NAT to a node address: pod traffic leaving the cluster, and outside
//! traffic balanced to a backend on another node. The source port (or ICMP
//! echo identifier) is allocated by probing: conntrack refuses a flow whose
//! reply key is already taken, so a free port is one whose insert succeeds.

use core::hash::BuildHasher;
use core::net::{IpAddr, SocketAddr};

use foldhash::fast::FixedState;
use sluice_conntrack::{CtEntry, FlowKey, FlowTables, InsertError, Rewrites};
use sluice_tables::{Masquerade, Tables};

use crate::flows::{self, NewFlow};
use crate::route;
use crate::DropReason;

/// Ports tried per new flow before giving up with `nat_port_exhausted`.
pub(crate) const PROBES: u32 = 32;

/// Seed of the port-probing hash (any constant: it only spreads flows over the range).
const PORT_SEED: u64 = 0x6d61_7371_7565_7261;

/// The node address a pod's new flow to `dst` is masqueraded to, if it is
/// masqueraded at all: masquerading is on, the destination is off-node (not a
/// local endpoint, not in the pod CIDRs, not in the non-masquerade CIDRs) and
/// the node has an address of the family.
pub(crate) fn address_for(tables: &Tables, dst: IpAddr) -> Option<IpAddr> {
    let uplink = tables.uplink.as_ref()?;
    let m = tables.lb.masquerade.as_ref()?;
    let link_local = matches!(dst, IpAddr::V6(a) if sluice_wire::ipv6::is_link_local(&a));
    if link_local
        || uplink.in_pod_cidrs(dst)
        || route::is_local_endpoint(tables, dst)
        || m.non_masquerade_cidrs.iter().any(|c| c.contains(dst))
    {
        return None;
    }
    same_family(&m.addrs, dst)
}

/// The node address (and port range) that outside traffic balanced to a
/// backend on another node leaves from, so that the backend's replies come
/// back through this node: the masquerade address of the family. `None` when
/// masquerading is off; the client source is then kept.
pub(crate) fn node_address(tables: &Tables, family_of: IpAddr) -> Option<(IpAddr, &Masquerade)> {
    let m = tables.lb.masquerade.as_ref()?;
    Some((same_family(&m.addrs, family_of)?, m))
}

fn same_family(addrs: &[IpAddr], like: IpAddr) -> Option<IpAddr> {
    addrs
        .iter()
        .copied()
        .find(|a| a.is_ipv4() == like.is_ipv4())
}

/// Inserts `flow` with its source rewritten to `snat` and a port from the
/// masquerade range; returns the flow's original entry (another worker's, if
/// it created the same flow first).
pub(crate) fn insert(
    flows: &FlowTables,
    key: &FlowKey,
    flow: NewFlow,
    snat: IpAddr,
    range: &Masquerade,
    now_ns: u64,
) -> Result<CtEntry, DropReason> {
    let (min, max) = (u32::from(range.port_min), u32::from(range.port_max));
    if min > max {
        return Err(DropReason::NatPortExhausted);
    }
    let span = max - min + 1;
    let start = FixedState::with_seed(PORT_SEED).hash_one(key) as u32;
    for i in 0..PROBES.min(span) {
        let port = (min + start.wrapping_add(i) % span) as u16;
        let rewrites = Rewrites {
            src: Some(SocketAddr::new(snat, port)),
            ..flow.rewrites
        };
        let (original, reply_key, reply) =
            flows::entries(key, NewFlow { rewrites, ..flow }, now_ns);
        match flows
            .conntrack
            .insert_flow(key, original, &reply_key, reply)
        {
            Ok(()) => return Ok(original),
            Err(InsertError::Full) => return Err(DropReason::CtFull),
            Err(InsertError::Exists) => {
                // Either this flow was created by another worker meanwhile, or
                // the port is taken by another flow: try the next one.
                if let Some(existing) = flows::existing(flows, key, now_ns) {
                    return Ok(existing);
                }
            }
        }
    }
    Err(DropReason::NatPortExhausted)
}
