//! Load balancing of a new connection to a service frontend: source ranges,
//! session affinity, backend selection.

use core::hash::BuildHasher;

use foldhash::fast::FixedState;
use sluice_conntrack::{FlowKey, FlowTables};
use sluice_tables::{Backend, BackendState, Frontend, LbAlgorithm, Scope, ServiceEntry, Tables};

use crate::DropReason;

/// Seed of the per-connection hash (any constant).
const FLOW_SEED: u64 = 0x736c_7569_6365_6c62;

/// What the new connection gets.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Choice<'t> {
    Backend(&'t Backend),
    /// No ready or terminating backend in scope.
    NoBackend,
}

/// Picks the backend for a new connection `key` that hit `frontend` of
/// `entry`. Refuses a connection from outside whose source is not in the
/// service's loadBalancerSourceRanges.
pub(crate) fn choose<'t>(
    tables: &'t Tables,
    flows: &FlowTables,
    entry: &'t ServiceEntry,
    frontend: Frontend,
    key: &FlowKey,
    from_uplink: bool,
    now_ns: u64,
) -> Result<Choice<'t>, DropReason> {
    let service = &entry.service;
    if from_uplink
        && !service.source_ranges.is_empty()
        && !service.source_ranges.iter().any(|c| c.contains(key.src))
    {
        return Err(DropReason::LbSourceRangeDenied);
    }
    let scope = Scope {
        external: from_uplink,
        kind: frontend.kind,
    };
    let ipv6 = frontend.addr.is_ipv6();
    if let Some(timeout) = service.affinity_timeout_s {
        let remembered = flows
            .affinity
            .get(service.id, key.src, timeout, now_ns)
            .and_then(|id| tables.services.backend(service.id, id))
            .filter(|b| {
                b.state == BackendState::Ready
                    && b.addr.is_ipv6() == ipv6
                    && (b.local || !local_only(entry, scope))
            });
        let backend =
            remembered.or_else(|| entry.select(ipv6, scope, flow_hash(entry, key, now_ns)));
        return Ok(match backend {
            Some(b) => {
                flows.affinity.set(service.id, key.src, b.id, now_ns);
                Choice::Backend(b)
            }
            None => Choice::NoBackend,
        });
    }
    Ok(
        match entry.select(ipv6, scope, flow_hash(entry, key, now_ns)) {
            Some(b) => Choice::Backend(b),
            None => Choice::NoBackend,
        },
    )
}

/// Whether only backends on this node may serve `scope` (traffic policy Local),
/// as [`ServiceEntry::select`] decides it.
fn local_only(entry: &ServiceEntry, scope: Scope) -> bool {
    if scope.external {
        entry.service.external_traffic_local && scope.kind.is_external()
    } else {
        entry.service.internal_traffic_local
    }
}

/// The hash a backend is selected with. Maglev hashes the 5-tuple alone, so a
/// connection maps to the same backend on every node and after a restart;
/// random selection mixes in the time, so that a client reusing a port is
/// balanced anew.
fn flow_hash(entry: &ServiceEntry, key: &FlowKey, now_ns: u64) -> u32 {
    let state = FixedState::with_seed(FLOW_SEED);
    let h = match entry.service.algorithm {
        LbAlgorithm::Maglev => state.hash_one(key),
        LbAlgorithm::Random => state.hash_one((key, now_ns)),
    };
    (h ^ (h >> 32)) as u32
}
