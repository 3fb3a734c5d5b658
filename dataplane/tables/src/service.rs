//! Services as the engine serves them: frontends (address, port, protocol) and
//! the backends new connections to them are balanced to.
//!
//! The control side builds a [`ServiceTable`] per generation: frontends in a
//! hash map, and per service and family the candidate sets a new connection
//! picks from (ready / terminating, all / node-local), each with its Maglev
//! table for Maglev services. The pipeline only looks up and picks.

use std::hash::Hash;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use hashbrown::hash_map::Entry;
use hashbrown::HashMap;
use serde::{Deserialize, Serialize};

use crate::maglev::{self, MaglevTable};
use crate::{Cidr, EndpointError};

/// Transport protocol of a service port. Serialized as Kubernetes spells it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum L4Protocol {
    #[serde(rename = "TCP")]
    Tcp,
    #[serde(rename = "UDP")]
    Udp,
    #[serde(rename = "SCTP")]
    Sctp,
}

impl L4Protocol {
    /// IP protocol number.
    pub const fn number(self) -> u8 {
        match self {
            L4Protocol::Tcp => 6,
            L4Protocol::Udp => 17,
            L4Protocol::Sctp => 132,
        }
    }

    pub fn from_number(number: u8) -> Option<L4Protocol> {
        match number {
            6 => Some(L4Protocol::Tcp),
            17 => Some(L4Protocol::Udp),
            132 => Some(L4Protocol::Sctp),
            _ => None,
        }
    }
}

/// How a frontend is reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FrontendKind {
    ClusterIp,
    /// On the node's own addresses (the uplink's `addrs`).
    NodePort,
    /// status.loadBalancer.ingress[].ip
    LoadBalancer,
    /// spec.externalIPs
    ExternalIp,
    /// A pod's containers[].ports[].hostPort, on the node addresses (or its hostIP).
    HostPort,
}

impl FrontendKind {
    /// Whether traffic to this kind of frontend from outside the cluster is
    /// subject to externalTrafficPolicy (everything but ClusterIP).
    pub const fn is_external(self) -> bool {
        !matches!(self, FrontendKind::ClusterIp)
    }
}

/// One address, port and kind a service answers on; the protocol is the service's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Frontend {
    pub kind: FrontendKind,
    pub addr: IpAddr,
    pub port: u16,
}

/// EndpointSlice conditions reduced to what balancing needs. Endpoints that are
/// neither ready nor serving are not backends at all.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackendState {
    /// ready: takes new connections.
    Ready,
    /// serving and terminating: keeps its flows; takes new ones only when no
    /// backend in scope is ready.
    Terminating,
}

/// One backend address and target port (named ports already resolved).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Backend {
    /// Stable across generations while the backend (service, address, port) exists;
    /// conntrack remembers it, so a removed id moves only the flows that used it.
    pub id: u32,
    pub addr: IpAddr,
    pub port: u16,
    pub state: BackendState,
    /// On this node (EndpointSlice nodeName is this node): what traffic policy Local keeps.
    pub local: bool,
}

/// Backend selection for new connections.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LbAlgorithm {
    /// Cilium's default: a pseudo-random backend per new connection.
    #[default]
    Random,
    /// Consistent hashing over the 5-tuple with a Maglev lookup table.
    Maglev,
}

/// What a new connection to a frontend without a usable backend gets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NoBackendResponse {
    /// TCP RST, or ICMP destination unreachable (port unreachable) for other protocols.
    #[default]
    Reject,
    Drop,
}

/// One port of one Kubernetes Service (or one hostPort) for one protocol.
/// A service with the same port on TCP and UDP is two of these.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Service {
    /// Stable while the (namespace, name, port name, protocol) exists.
    pub id: u32,
    /// `namespace/name`
    pub name: String,
    /// The service port's name ("" when unnamed).
    #[serde(default)]
    pub port_name: String,
    pub protocol: L4Protocol,
    /// IPv4 and IPv6 frontends; each is served by the backends of its family.
    pub frontends: Vec<Frontend>,
    #[serde(default)]
    pub backends: Vec<Backend>,
    #[serde(default)]
    pub algorithm: LbAlgorithm,
    /// sessionAffinity ClientIP: the timeout in seconds; None = no affinity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity_timeout_s: Option<u32>,
    /// externalTrafficPolicy: Local (traffic to external frontends from outside).
    #[serde(default)]
    pub external_traffic_local: bool,
    /// internalTrafficPolicy: Local (traffic from pods).
    #[serde(default)]
    pub internal_traffic_local: bool,
    /// loadBalancerSourceRanges, enforced for traffic from outside the cluster.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub source_ranges: Vec<Cidr>,
}

/// Node-wide load-balancing and masquerading settings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LbConfig {
    /// One of Cilium's primes 251..131071.
    pub maglev_table_size: u32,
    /// Hash seed; the same on every node so every node builds the same tables.
    pub maglev_seed: u64,
    pub no_backend: NoBackendResponse,
    /// Masquerade of pod traffic leaving the cluster; None = off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub masquerade: Option<Masquerade>,
}

/// Cilium's `maglev.tableSize` choices.
pub const MAGLEV_TABLE_SIZES: [u32; 10] = [
    251, 509, 1021, 2039, 4093, 8191, 16381, 32749, 65521, 131071,
];
pub const DEFAULT_MAGLEV_TABLE_SIZE: u32 = 16381;

impl Default for LbConfig {
    fn default() -> LbConfig {
        LbConfig {
            maglev_table_size: DEFAULT_MAGLEV_TABLE_SIZE,
            maglev_seed: 0,
            no_backend: NoBackendResponse::Reject,
            masquerade: None,
        }
    }
}

/// Source NAT of pod traffic to destinations outside the cluster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Masquerade {
    /// Node addresses used as the new source, one per family (the uplink's).
    pub addrs: Vec<IpAddr>,
    /// Inclusive source-port range allocated for masqueraded flows (also
    /// ICMP echo identifiers). Must not overlap the node's own ephemeral ports.
    pub port_min: u16,
    pub port_max: u16,
    /// Destinations not masqueraded (the pod and cluster CIDRs, plus configured ones).
    pub non_masquerade_cidrs: Vec<Cidr>,
}

impl Service {
    /// How errors and logs name this service port: `namespace/name port/PROTO`,
    /// the port being the port name, else the first ClusterIP (or any) frontend port.
    pub fn label(&self) -> String {
        let protocol = match self.protocol {
            L4Protocol::Tcp => "TCP",
            L4Protocol::Udp => "UDP",
            L4Protocol::Sctp => "SCTP",
        };
        if !self.port_name.is_empty() {
            return format!("{} {}/{protocol}", self.name, self.port_name);
        }
        let port = self
            .frontends
            .iter()
            .find(|f| f.kind == FrontendKind::ClusterIp)
            .or(self.frontends.first())
            .map(|f| f.port);
        match port {
            Some(port) => format!("{} {port}/{protocol}", self.name),
            None => format!("{} -/{protocol}", self.name),
        }
    }
}

/// Which backends a new connection may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Scope {
    /// The connection came from outside the cluster (the uplink).
    pub external: bool,
    /// The frontend it hit.
    pub kind: FrontendKind,
}

/// One candidate set: the backends a new connection may get in one scope and
/// state, for one family.
#[derive(Clone, Debug, Default)]
struct Candidates {
    /// Indices into `Service::backends`, sorted by Maglev identity, so that the
    /// Maglev table's slots index this too.
    members: Box<[u32]>,
    /// Present for Maglev services with a non-empty set.
    maglev: Option<Arc<MaglevTable>>,
}

impl Candidates {
    /// Index into `Service::backends` for a flow hash; None when empty.
    #[inline]
    fn pick(&self, flow_hash: u32) -> Option<usize> {
        let member = match &self.maglev {
            Some(table) => table.lookup(flow_hash)?,
            None => (flow_hash as usize).checked_rem(self.members.len())?,
        };
        self.members.get(member).map(|&b| b as usize)
    }

    fn is_empty(&self) -> bool {
        self.members.is_empty()
    }
}

/// The four candidate sets of one family. The local ones stay empty unless the
/// service has a Local traffic policy (nothing selects them otherwise).
#[derive(Clone, Debug, Default)]
struct FamilyCandidates {
    ready: Candidates,
    terminating: Candidates,
    local_ready: Candidates,
    local_terminating: Candidates,
}

/// A service as the pipeline reads it: the definition plus the precomputed
/// candidate sets and Maglev tables.
#[derive(Clone, Debug)]
pub struct ServiceEntry {
    pub service: Service,
    /// [IPv4, IPv6]
    families: [FamilyCandidates; 2],
}

impl ServiceEntry {
    /// The backend for a new connection of family `v4`/`v6` (that of the
    /// frontend) in `scope`, chosen with `flow_hash`: ready backends in scope,
    /// else terminating ones in scope (fallback), else None. Scope is local
    /// backends for external traffic with externalTrafficPolicy Local and for
    /// internal traffic with internalTrafficPolicy Local, else all.
    ///
    /// Random services take `set[flow_hash % len]` (the pipeline passes a
    /// per-connection pseudo-random hash), Maglev services their set's table.
    /// Never allocates or panics.
    #[inline]
    pub fn select(&self, ipv6: bool, scope: Scope, flow_hash: u32) -> Option<&Backend> {
        let local = if scope.external {
            // A ClusterIP reached from outside is not subject to externalTrafficPolicy.
            self.service.external_traffic_local && scope.kind.is_external()
        } else {
            self.service.internal_traffic_local
        };
        let family = &self.families[usize::from(ipv6)];
        let (ready, terminating) = if local {
            (&family.local_ready, &family.local_terminating)
        } else {
            (&family.ready, &family.terminating)
        };
        let set = if ready.is_empty() { terminating } else { ready };
        self.service.backends.get(set.pick(flow_hash)?)
    }

    /// The Maglev table of every non-empty candidate set of this service; equal
    /// sets share one table, which then appears once per set.
    pub fn maglev_tables(&self) -> impl Iterator<Item = &Arc<MaglevTable>> {
        self.families
            .iter()
            .flat_map(|f| {
                [
                    &f.ready,
                    &f.terminating,
                    &f.local_ready,
                    &f.local_terminating,
                ]
            })
            .filter_map(|set| set.maglev.as_ref())
    }
}

/// What a frontend key maps to: the index into `entries` and the frontend kind
/// (the address and port are the key's).
type FrontendSlot = (u32, FrontendKind);

/// An IPv4 frontend as one word: address, port, IP protocol number.
fn v4_key(addr: Ipv4Addr, port: u16, protocol: u8) -> u64 {
    u64::from(u32::from(addr)) << 24 | u64::from(port) << 8 | u64::from(protocol)
}

/// An IPv6 frontend as two words: address, then port and IP protocol number.
fn v6_key(addr: Ipv6Addr, port: u16, protocol: u8) -> (u128, u32) {
    (u128::from(addr), u32::from(port) << 8 | u32::from(protocol))
}

/// Takes `key` for the service in `slot`; else the index of the service holding it.
fn claim<K: Hash + Eq>(
    map: &mut HashMap<K, FrontendSlot>,
    key: K,
    slot: FrontendSlot,
) -> Result<(), u32> {
    match map.entry(key) {
        Entry::Occupied(taken) => Err(taken.get().0),
        Entry::Vacant(free) => {
            free.insert(slot);
            Ok(())
        }
    }
}

/// Frontend -> service, and backend id -> backend.
#[derive(Clone, Debug, Default)]
pub struct ServiceTable {
    entries: Vec<ServiceEntry>,
    /// Frontends by family: packed keys keep a lookup to hashing one or two
    /// words, and the buckets small enough to stay in cache at 100k services.
    by_frontend_v4: HashMap<u64, FrontendSlot>,
    by_frontend_v6: HashMap<(u128, u32), FrontendSlot>,
    /// service id -> index into `entries`
    by_id: HashMap<u32, u32>,
    /// (service id, backend id) -> (index into `entries`, index into its backends)
    by_backend: HashMap<(u32, u32), (u32, u32)>,
}

impl ServiceTable {
    /// Builds the table; an inconsistent input refuses the whole input with
    /// [`EndpointError::Service`] naming the service (or `lb`) and the field:
    /// two services with one id or on one frontend (address, port, protocol),
    /// a backend id on two addresses or an address listed twice in one
    /// service, a Maglev size not in [`MAGLEV_TABLE_SIZES`], a masquerade port
    /// range with min above max. Frontends without backends of their family
    /// are fine: they reject (or drop) new connections.
    pub fn build(services: &[Service], lb: &LbConfig) -> Result<ServiceTable, EndpointError> {
        ServiceTable::build_with(services, lb, None)
    }

    /// [`build`](Self::build), taking the Maglev table of every candidate set
    /// that is unchanged (same backend addresses, size and seed) from the
    /// service with the same id in `previous` instead of filling it again: the
    /// engine rebuilds its tables on every agent delta, and one changed
    /// service must not cost every service's table.
    pub fn build_reusing(
        services: &[Service],
        lb: &LbConfig,
        previous: &ServiceTable,
    ) -> Result<ServiceTable, EndpointError> {
        ServiceTable::build_with(services, lb, Some(previous))
    }

    fn build_with(
        services: &[Service],
        lb: &LbConfig,
        previous: Option<&ServiceTable>,
    ) -> Result<ServiceTable, EndpointError> {
        validate_lb(lb)?;
        let frontends = services.iter().flat_map(|s| &s.frontends);
        let v6_frontends = frontends.clone().filter(|f| f.addr.is_ipv6()).count();
        let v4_frontends = frontends.count() - v6_frontends;
        let backends = services.iter().map(|s| s.backends.len()).sum();
        let mut table = ServiceTable {
            entries: Vec::with_capacity(services.len()),
            by_frontend_v4: HashMap::with_capacity(v4_frontends),
            by_frontend_v6: HashMap::with_capacity(v6_frontends),
            by_id: HashMap::with_capacity(services.len()),
            by_backend: HashMap::with_capacity(backends),
        };
        let mut addrs_seen: HashMap<SocketAddr, u32> = HashMap::new();
        for service in services {
            let index = table.entries.len() as u32;
            if let Some(&other) = table.by_id.get(&service.id) {
                return Err(service_error(
                    service,
                    "id",
                    format!(
                        "{} is also the id of {}",
                        service.id,
                        label(&table.entries, other)
                    ),
                ));
            }
            table.by_id.insert(service.id, index);
            for frontend in &service.frontends {
                let (port, protocol) = (frontend.port, service.protocol.number());
                let slot = (index, frontend.kind);
                let claimed = match frontend.addr {
                    IpAddr::V4(addr) => claim(
                        &mut table.by_frontend_v4,
                        v4_key(addr, port, protocol),
                        slot,
                    ),
                    IpAddr::V6(addr) => claim(
                        &mut table.by_frontend_v6,
                        v6_key(addr, port, protocol),
                        slot,
                    ),
                };
                if let Err(other) = claimed {
                    let other = label(&table.entries, other);
                    return Err(service_error(
                        service,
                        "frontends",
                        format!(
                            "{} is also served by {other}",
                            SocketAddr::new(frontend.addr, frontend.port)
                        ),
                    ));
                }
            }
            addrs_seen.clear();
            for (position, backend) in service.backends.iter().enumerate() {
                let addr = SocketAddr::new(backend.addr, backend.port);
                match table.by_backend.entry((service.id, backend.id)) {
                    Entry::Occupied(taken) => {
                        let first = &service.backends[taken.get().1 as usize];
                        let first = SocketAddr::new(first.addr, first.port);
                        let detail = if first == addr {
                            format!("backend {addr} (id {}) is listed twice", backend.id)
                        } else {
                            format!("backend id {} is used by {first} and {addr}", backend.id)
                        };
                        return Err(service_error(service, "backends", detail));
                    }
                    Entry::Vacant(free) => {
                        free.insert((index, position as u32));
                    }
                }
                if let Some(first_id) = addrs_seen.insert(addr, backend.id) {
                    return Err(service_error(
                        service,
                        "backends",
                        format!(
                            "backend {addr} is listed twice (ids {first_id} and {})",
                            backend.id
                        ),
                    ));
                }
            }
            let previous = previous.and_then(|p| p.by_id(service.id));
            let entry = build_entry(service, lb, previous)?;
            table.entries.push(entry);
        }
        Ok(table)
    }

    /// The service and frontend for a destination. Never allocates.
    #[inline]
    pub fn lookup(
        &self,
        addr: IpAddr,
        port: u16,
        protocol: u8,
    ) -> Option<(&ServiceEntry, Frontend)> {
        let &(index, kind) = match addr {
            IpAddr::V4(v4) => self.by_frontend_v4.get(&v4_key(v4, port, protocol))?,
            IpAddr::V6(v6) => self.by_frontend_v6.get(&v6_key(v6, port, protocol))?,
        };
        let frontend = Frontend { kind, addr, port };
        Some((self.entries.get(index as usize)?, frontend))
    }

    /// A backend by id, if it still exists (in any state) in service `service_id`.
    #[inline]
    pub fn backend(&self, service_id: u32, backend_id: u32) -> Option<&Backend> {
        let &(service, backend) = self.by_backend.get(&(service_id, backend_id))?;
        self.entries
            .get(service as usize)?
            .service
            .backends
            .get(backend as usize)
    }

    #[inline]
    pub fn by_id(&self, service_id: u32) -> Option<&ServiceEntry> {
        let &index = self.by_id.get(&service_id)?;
        self.entries.get(index as usize)
    }

    /// Every service, in input order.
    pub fn iter(&self) -> impl Iterator<Item = &ServiceEntry> {
        self.entries.iter()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn label(entries: &[ServiceEntry], index: u32) -> String {
    entries
        .get(index as usize)
        .map_or_else(String::new, |e| e.service.label())
}

fn service_error(service: &Service, field: &str, detail: String) -> EndpointError {
    EndpointError::Service {
        service: service.label(),
        field: field.to_string(),
        detail,
    }
}

fn lb_error(field: &str, detail: String) -> EndpointError {
    EndpointError::Service {
        service: "lb".to_string(),
        field: field.to_string(),
        detail,
    }
}

fn validate_lb(lb: &LbConfig) -> Result<(), EndpointError> {
    if !MAGLEV_TABLE_SIZES.contains(&lb.maglev_table_size) {
        return Err(lb_error(
            "maglev_table_size",
            format!(
                "{} is not one of {MAGLEV_TABLE_SIZES:?}",
                lb.maglev_table_size
            ),
        ));
    }
    if let Some(masquerade) = &lb.masquerade {
        if masquerade.port_min > masquerade.port_max {
            return Err(lb_error(
                "masquerade.port_min",
                format!(
                    "{} is above masquerade.port_max {}",
                    masquerade.port_min, masquerade.port_max
                ),
            ));
        }
    }
    Ok(())
}

/// The candidate sets (and Maglev tables) of one service. Tables of `previous`
/// (the same service id in the last generation) and of sets already built for
/// this service are reused when they were built for the same backends.
fn build_entry(
    service: &Service,
    lb: &LbConfig,
    previous: Option<&ServiceEntry>,
) -> Result<ServiceEntry, EndpointError> {
    if let Some(previous) = previous {
        let same_tables = previous
            .maglev_tables()
            .all(|t| t.size() == lb.maglev_table_size && t.seed() == lb.maglev_seed);
        if same_tables && previous.service == *service {
            // Unchanged: the candidate sets are too (the common case of a delta).
            return Ok(previous.clone());
        }
    }
    let mut reusable: Vec<Arc<MaglevTable>> = previous
        .map(|p| p.maglev_tables().cloned().collect())
        .unwrap_or_default();
    let with_local = service.external_traffic_local || service.internal_traffic_local;
    let mut family = |ipv6: bool| -> Result<FamilyCandidates, EndpointError> {
        let mut set = |state: BackendState, local: bool| {
            if local && !with_local {
                return Ok(Candidates::default());
            }
            candidates(service, lb, &mut reusable, |b| {
                b.addr.is_ipv6() == ipv6 && b.state == state && (b.local || !local)
            })
        };
        Ok(FamilyCandidates {
            ready: set(BackendState::Ready, false)?,
            terminating: set(BackendState::Terminating, false)?,
            local_ready: set(BackendState::Ready, true)?,
            local_terminating: set(BackendState::Terminating, true)?,
        })
    };
    let families = [family(false)?, family(true)?];
    Ok(ServiceEntry {
        service: service.clone(),
        families,
    })
}

/// One candidate set: the backends `member` accepts, in identity order, with a
/// Maglev table for Maglev services (reused from `reusable` when one fits; a
/// new one is added there).
fn candidates(
    service: &Service,
    lb: &LbConfig,
    reusable: &mut Vec<Arc<MaglevTable>>,
    member: impl Fn(&Backend) -> bool,
) -> Result<Candidates, EndpointError> {
    let mut members: Vec<u32> = (0..service.backends.len() as u32)
        .filter(|&i| member(&service.backends[i as usize]))
        .collect();
    let addr = |i: &u32| {
        let backend = &service.backends[*i as usize];
        SocketAddr::new(backend.addr, backend.port)
    };
    maglev::sort_by_identity(&mut members, addr);
    let maglev = if service.algorithm == LbAlgorithm::Maglev && !members.is_empty() {
        let addrs: Vec<SocketAddr> = members.iter().map(addr).collect();
        let (size, seed) = (lb.maglev_table_size, lb.maglev_seed);
        let table = match reusable.iter().find(|t| t.is_built_for(&addrs, size, seed)) {
            Some(table) => Arc::clone(table),
            None => {
                let table = MaglevTable::build(&addrs, size, seed)
                    .map_err(|e| service_error(service, "backends", e.to_string()))?;
                let table = Arc::new(table);
                reusable.push(Arc::clone(&table));
                table
            }
        };
        Some(table)
    } else {
        None
    };
    Ok(Candidates {
        members: members.into_boxed_slice(),
        maglev,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TCP: u8 = 6;
    const UDP: u8 = 17;
    const FROM_POD: Scope = Scope {
        external: false,
        kind: FrontendKind::ClusterIp,
    };

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn backend(id: u32, addr: &str, state: BackendState, local: bool) -> Backend {
        Backend {
            id,
            addr: ip(addr),
            port: 8080,
            state,
            local,
        }
    }

    fn ready(id: u32, addr: &str) -> Backend {
        backend(id, addr, BackendState::Ready, false)
    }

    fn service(id: u32, name: &str, frontends: &[(FrontendKind, &str, u16)]) -> Service {
        Service {
            id,
            name: name.to_string(),
            port_name: String::new(),
            protocol: L4Protocol::Tcp,
            frontends: frontends
                .iter()
                .map(|&(kind, addr, port)| Frontend {
                    kind,
                    addr: ip(addr),
                    port,
                })
                .collect(),
            backends: Vec::new(),
            algorithm: LbAlgorithm::Random,
            affinity_timeout_s: None,
            external_traffic_local: false,
            internal_traffic_local: false,
            source_ranges: Vec::new(),
        }
    }

    fn web() -> Service {
        let mut web = service(
            1,
            "default/web",
            &[
                (FrontendKind::ClusterIp, "10.96.0.10", 80),
                (FrontendKind::ClusterIp, "fd00:96::10", 80),
                (FrontendKind::NodePort, "192.168.1.5", 30080),
            ],
        );
        web.backends = vec![
            ready(1, "10.200.0.11"),
            ready(2, "10.200.1.12"),
            ready(3, "fd00:200::11"),
        ];
        web
    }

    /// The backend ids `select` gives over many flow hashes.
    fn picks(entry: &ServiceEntry, ipv6: bool, scope: Scope) -> Vec<u32> {
        let mut ids: Vec<u32> = (0..64)
            .filter_map(|hash| entry.select(ipv6, scope, hash).map(|b| b.id))
            .collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    fn build(services: &[Service]) -> ServiceTable {
        ServiceTable::build(services, &LbConfig::default()).unwrap()
    }

    fn error(services: &[Service], lb: &LbConfig) -> String {
        ServiceTable::build(services, lb).unwrap_err().to_string()
    }

    #[test]
    fn lookup_finds_the_service_and_frontend_of_a_destination() {
        let table = build(&[web()]);
        let (entry, frontend) = table.lookup(ip("192.168.1.5"), 30080, TCP).unwrap();
        assert_eq!(entry.service.name, "default/web");
        assert_eq!(frontend.kind, FrontendKind::NodePort);
        let (_, frontend) = table.lookup(ip("fd00:96::10"), 80, TCP).unwrap();
        assert_eq!(frontend.kind, FrontendKind::ClusterIp);
        assert!(table.lookup(ip("10.96.0.10"), 81, TCP).is_none());
        assert!(table.lookup(ip("10.96.0.10"), 80, UDP).is_none());
        assert!(table.lookup(ip("10.96.0.11"), 80, TCP).is_none());
        assert_eq!(table.by_id(1).unwrap().service.name, "default/web");
        assert!(table.by_id(2).is_none());
        assert_eq!(table.len(), 1);
    }

    #[test]
    fn tcp_and_udp_on_one_port_are_two_services() {
        let mut dns_tcp = service(
            7,
            "kube-system/dns",
            &[(FrontendKind::ClusterIp, "10.96.0.53", 53)],
        );
        dns_tcp.backends = vec![ready(1, "10.200.0.20")];
        let mut dns_udp = dns_tcp.clone();
        dns_udp.id = 8;
        dns_udp.protocol = L4Protocol::Udp;
        dns_udp.backends = vec![ready(1, "10.200.0.21")];
        let table = build(&[dns_tcp, dns_udp]);
        let (tcp, _) = table.lookup(ip("10.96.0.53"), 53, TCP).unwrap();
        let (udp, _) = table.lookup(ip("10.96.0.53"), 53, UDP).unwrap();
        assert_eq!((tcp.service.id, udp.service.id), (7, 8));
        assert_eq!(
            udp.select(false, FROM_POD, 0).unwrap().addr,
            ip("10.200.0.21")
        );
    }

    #[test]
    fn select_takes_ready_backends_of_the_family_and_every_one_of_them() {
        let table = build(&[web()]);
        let entry = table.by_id(1).unwrap();
        assert_eq!(picks(entry, false, FROM_POD), [1, 2]);
        assert_eq!(picks(entry, true, FROM_POD), [3]);
    }

    #[test]
    fn random_selection_is_the_flow_hash_modulo_the_set_in_identity_order() {
        let mut svc = web();
        // Input order differs from identity order ("10.200.0.11" < "10.200.1.12").
        svc.backends.swap(0, 1);
        let table = build(&[svc]);
        let entry = table.by_id(1).unwrap();
        assert_eq!(entry.select(false, FROM_POD, 0).unwrap().id, 1);
        assert_eq!(entry.select(false, FROM_POD, 1).unwrap().id, 2);
        assert_eq!(entry.select(false, FROM_POD, 7).unwrap().id, 2);
    }

    #[test]
    fn terminating_backends_take_new_connections_only_when_none_is_ready() {
        let mut svc = web();
        svc.backends[1].state = BackendState::Terminating;
        let table = build(&[svc.clone()]);
        assert_eq!(picks(table.by_id(1).unwrap(), false, FROM_POD), [1]);
        svc.backends[0].state = BackendState::Terminating;
        let table = build(&[svc.clone()]);
        assert_eq!(picks(table.by_id(1).unwrap(), false, FROM_POD), [1, 2]);
        svc.backends.truncate(2);
        let table = build(&[svc]);
        assert_eq!(picks(table.by_id(1).unwrap(), true, FROM_POD), [0u32; 0]);
    }

    #[test]
    fn external_traffic_local_keeps_external_traffic_to_external_frontends_on_this_node() {
        let mut svc = web();
        svc.external_traffic_local = true;
        svc.backends[0].local = true;
        let table = build(&[svc.clone()]);
        let entry = table.by_id(1).unwrap();
        let outside = |kind| Scope {
            external: true,
            kind,
        };
        assert_eq!(picks(entry, false, outside(FrontendKind::NodePort)), [1]);
        assert_eq!(
            picks(entry, false, outside(FrontendKind::LoadBalancer)),
            [1]
        );
        // A ClusterIP reached from outside is not subject to the policy.
        assert_eq!(
            picks(entry, false, outside(FrontendKind::ClusterIp)),
            [1, 2]
        );
        // Nor is traffic from pods, to any frontend.
        let pod_to_nodeport = Scope {
            external: false,
            kind: FrontendKind::NodePort,
        };
        assert_eq!(picks(entry, false, pod_to_nodeport), [1, 2]);
        // No local IPv6 backend: nothing, even though a remote one is ready.
        assert_eq!(
            picks(entry, true, outside(FrontendKind::NodePort)),
            [0u32; 0]
        );
        // A terminating local backend is the fallback, not a ready remote one.
        svc.backends[0].state = BackendState::Terminating;
        let table = build(&[svc]);
        let entry = table.by_id(1).unwrap();
        assert_eq!(picks(entry, false, outside(FrontendKind::NodePort)), [1]);
    }

    #[test]
    fn internal_traffic_local_keeps_pod_traffic_on_this_node() {
        let mut svc = web();
        svc.internal_traffic_local = true;
        svc.backends[1].local = true;
        let table = build(&[svc]);
        let entry = table.by_id(1).unwrap();
        assert_eq!(picks(entry, false, FROM_POD), [2]);
        let outside = Scope {
            external: true,
            kind: FrontendKind::NodePort,
        };
        assert_eq!(picks(entry, false, outside), [1, 2]);
    }

    fn maglev_web() -> Service {
        let mut svc = web();
        svc.algorithm = LbAlgorithm::Maglev;
        svc.backends = (0..10)
            .map(|i| ready(i + 1, &format!("10.200.0.{}", 30 + i)))
            .collect();
        svc
    }

    #[test]
    fn maglev_selection_follows_the_table_of_the_set() {
        let lb = LbConfig {
            maglev_table_size: 251,
            maglev_seed: 9,
            ..LbConfig::default()
        };
        let svc = maglev_web();
        let table = ServiceTable::build(std::slice::from_ref(&svc), &lb).unwrap();
        let entry = table.by_id(1).unwrap();
        let addrs: Vec<SocketAddr> = svc
            .backends
            .iter()
            .rev()
            .map(|b| SocketAddr::new(b.addr, b.port))
            .collect();
        let expected = MaglevTable::build(&addrs, 251, 9).unwrap();
        for hash in [0u32, 1, 250, 251, 12345, u32::MAX] {
            let backend = entry.select(false, FROM_POD, hash).unwrap();
            let slot = expected.lookup(hash).unwrap();
            assert_eq!(
                SocketAddr::new(backend.addr, backend.port),
                expected.backends()[slot]
            );
        }
        assert_eq!(entry.maglev_tables().count(), 1);
        assert_eq!(**entry.maglev_tables().next().unwrap(), expected);
        // Random services have none.
        assert_eq!(build(&[web()]).by_id(1).unwrap().maglev_tables().count(), 0);
    }

    #[test]
    fn equal_candidate_sets_of_one_service_share_a_maglev_table() {
        let mut svc = maglev_web();
        svc.external_traffic_local = true;
        for b in &mut svc.backends {
            b.local = true;
        }
        let table = build(&[svc]);
        let entry = table.by_id(1).unwrap();
        let family = &entry.families[0];
        let (all, local) = (
            family.ready.maglev.as_ref(),
            family.local_ready.maglev.as_ref(),
        );
        assert!(Arc::ptr_eq(all.unwrap(), local.unwrap()));
    }

    #[test]
    fn a_backend_is_found_by_id_until_it_is_removed() {
        let mut svc = web();
        let table = build(&[svc.clone()]);
        assert_eq!(table.backend(1, 2).unwrap().addr, ip("10.200.1.12"));
        assert!(table.backend(2, 2).is_none());
        svc.backends.remove(1);
        let table = build(&[svc]);
        assert!(table.backend(1, 2).is_none());
        assert_eq!(table.backend(1, 3).unwrap().addr, ip("fd00:200::11"));
    }

    #[test]
    fn build_reusing_keeps_unchanged_maglev_tables_and_rebuilds_changed_ones() {
        let lb = LbConfig::default();
        let unchanged = maglev_web();
        let mut changed = maglev_web();
        changed.id = 2;
        changed.name = "default/api".into();
        changed.frontends = vec![Frontend {
            kind: FrontendKind::ClusterIp,
            addr: ip("10.96.0.20"),
            port: 80,
        }];
        let first = ServiceTable::build(&[unchanged.clone(), changed.clone()], &lb).unwrap();
        changed.backends.pop();
        let second =
            ServiceTable::build_reusing(&[unchanged.clone(), changed.clone()], &lb, &first)
                .unwrap();
        let table =
            |t: &ServiceTable, id| Arc::clone(t.by_id(id).unwrap().maglev_tables().next().unwrap());
        assert!(Arc::ptr_eq(&table(&first, 1), &table(&second, 1)));
        assert!(!Arc::ptr_eq(&table(&first, 2), &table(&second, 2)));
        assert_eq!(table(&second, 2).backends().len(), 9);
        // A service that changed elsewhere than in a candidate set keeps that set's table.
        let mut other_port = changed.clone();
        other_port.frontends[0].port = 8080;
        other_port.backends.push(ready(99, "fd00:200::99"));
        let moved =
            ServiceTable::build_reusing(&[unchanged.clone(), other_port], &lb, &second).unwrap();
        assert!(Arc::ptr_eq(&table(&second, 2), &table(&moved, 2)));
        assert_eq!(moved.by_id(2).unwrap().maglev_tables().count(), 2);
        // A new seed is a new table for everyone.
        let reseeded = LbConfig {
            maglev_seed: 1,
            ..LbConfig::default()
        };
        let third = ServiceTable::build_reusing(&[unchanged, changed], &reseeded, &second).unwrap();
        assert!(!Arc::ptr_eq(&table(&second, 1), &table(&third, 1)));
        assert_eq!(table(&third, 1).seed(), 1);
    }

    #[test]
    fn two_services_on_one_frontend_are_refused_naming_both() {
        let mut other = service(
            2,
            "default/other",
            &[(FrontendKind::ExternalIp, "10.96.0.10", 80)],
        );
        other.port_name = "http".into();
        let err = error(&[web(), other], &LbConfig::default());
        assert_eq!(
            err,
            "service default/other http/TCP: frontends: 10.96.0.10:80 is also served by default/web 80/TCP"
        );
    }

    #[test]
    fn a_reused_service_id_is_refused() {
        let other = service(
            1,
            "default/other",
            &[(FrontendKind::ClusterIp, "10.96.0.11", 80)],
        );
        let err = error(&[web(), other], &LbConfig::default());
        assert_eq!(
            err,
            "service default/other 80/TCP: id: 1 is also the id of default/web 80/TCP"
        );
    }

    #[test]
    fn inconsistent_backends_are_refused_naming_the_service() {
        let mut svc = web();
        svc.backends[1].id = 1;
        let err = error(&[svc], &LbConfig::default());
        assert_eq!(
            err,
            "service default/web 80/TCP: backends: backend id 1 is used by 10.200.0.11:8080 and 10.200.1.12:8080"
        );
        let mut svc = web();
        svc.backends[1].addr = svc.backends[0].addr;
        let err = error(&[svc], &LbConfig::default());
        assert_eq!(
            err,
            "service default/web 80/TCP: backends: backend 10.200.0.11:8080 is listed twice (ids 1 and 2)"
        );
        let mut svc = web();
        svc.backends.push(svc.backends[0].clone());
        let err = error(&[svc], &LbConfig::default());
        assert_eq!(
            err,
            "service default/web 80/TCP: backends: backend 10.200.0.11:8080 (id 1) is listed twice"
        );
    }

    #[test]
    fn bad_lb_settings_are_refused_naming_the_field() {
        let lb = LbConfig {
            maglev_table_size: 16383,
            ..LbConfig::default()
        };
        let err = error(&[], &lb);
        assert!(
            err.starts_with("service lb: maglev_table_size: 16383 is not one of [251"),
            "{err}"
        );
        let lb = LbConfig {
            masquerade: Some(Masquerade {
                addrs: Vec::new(),
                port_min: 40000,
                port_max: 30000,
                non_masquerade_cidrs: Vec::new(),
            }),
            ..LbConfig::default()
        };
        assert_eq!(
            error(&[], &lb),
            "service lb: masquerade.port_min: 40000 is above masquerade.port_max 30000"
        );
    }

    #[test]
    fn a_maglev_set_larger_than_the_table_is_refused() {
        let mut svc = maglev_web();
        svc.backends = (0..252)
            .map(|i| ready(i + 1, &format!("10.200.{}.{}", i / 200, i % 200 + 1)))
            .collect();
        let lb = LbConfig {
            maglev_table_size: 251,
            ..LbConfig::default()
        };
        let err = error(&[svc], &lb);
        assert!(
            err.starts_with("service default/web 80/TCP: backends: 252 backends"),
            "{err}"
        );
    }
}
