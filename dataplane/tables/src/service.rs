//! Services as the engine serves them: frontends (address, port, protocol) and
//! the backends new connections to them are balanced to.
//!
//! API SKELETON: types are fixed (the agent produces them, the pipeline reads
//! them); the table build and backend selection are filled in by the service work.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

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

/// Which backends a new connection may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Scope {
    /// The connection came from outside the cluster (the uplink).
    pub external: bool,
    /// The frontend it hit.
    pub kind: FrontendKind,
}

/// A service as the pipeline reads it: the definition plus the precomputed
/// candidate sets and Maglev tables.
#[derive(Clone, Debug)]
pub struct ServiceEntry {
    pub service: Service,
}

impl ServiceEntry {
    /// The backend for a new connection of family `v4`/`v6` (that of the
    /// frontend) in `scope`, chosen with `flow_hash`: ready backends in scope,
    /// else terminating ones in scope (fallback), else None. Scope is local
    /// backends for external traffic with externalTrafficPolicy Local and for
    /// internal traffic with internalTrafficPolicy Local, else all.
    pub fn select(&self, ipv6: bool, scope: Scope, flow_hash: u32) -> Option<&Backend> {
        let _ = (ipv6, scope, flow_hash);
        todo!()
    }
}

/// Frontend -> service, and backend id -> backend.
#[derive(Clone, Debug, Default)]
pub struct ServiceTable {
    _private: (),
}

impl ServiceTable {
    /// Builds the table; an inconsistent service (two services on one
    /// frontend, a frontend and backend family mismatch, a bad Maglev size)
    /// refuses the whole input with [`EndpointError::Service`] naming it.
    pub fn build(services: &[Service], lb: &LbConfig) -> Result<ServiceTable, EndpointError> {
        let _ = (services, lb);
        Ok(ServiceTable::default())
    }

    /// The service and frontend for a destination. Never allocates.
    pub fn lookup(
        &self,
        addr: IpAddr,
        port: u16,
        protocol: u8,
    ) -> Option<(&ServiceEntry, Frontend)> {
        let _ = (addr, port, protocol);
        todo!()
    }

    /// A backend by id, if it still exists (in any state) in service `service_id`.
    pub fn backend(&self, service_id: u32, backend_id: u32) -> Option<&Backend> {
        let _ = (service_id, backend_id);
        todo!()
    }

    pub fn by_id(&self, service_id: u32) -> Option<&ServiceEntry> {
        let _ = service_id;
        todo!()
    }

    pub fn len(&self) -> usize {
        0
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
