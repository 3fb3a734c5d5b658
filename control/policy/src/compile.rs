//! Policies + identities -> the engine's per-endpoint tables.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use sluice_tables::{Cidr, Enforcement, IpCacheEntry, PolicyState};

use crate::model::Policy;

/// A sorted set of `source:key=value` labels (`k8s:app=web`,
/// `reserved:host`), as the agent writes identities.
pub type LabelSet = BTreeSet<String>;

/// A named container port of a pod (`containers[].ports[]` with a name).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NamedPort {
    pub name: String,
    /// 6 TCP, 17 UDP, 132 SCTP.
    pub protocol: u8,
    pub port: u16,
}

/// An endpoint on this node that gets tables.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalEndpoint {
    /// The endpoint's name in the node state (namespace/pod).
    pub name: String,
    pub identity: u32,
    pub labels: LabelSet,
    pub named_ports: Vec<NamedPort>,
}

/// A pod anywhere in the cluster (for named ports of egress peers, for
/// services' backends and for CIDR rules that cover pod addresses).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterPod {
    pub namespace: String,
    pub name: String,
    pub identity: u32,
    pub labels: LabelSet,
    pub ips: Vec<IpAddr>,
    pub named_ports: Vec<NamedPort>,
}

/// A Service, for `toServices`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterService {
    pub namespace: String,
    pub name: String,
    /// The Service's own labels (`k8sServiceSelector` selects on them).
    pub labels: BTreeMap<String, String>,
    /// `spec.selector`; `None` for a Service without a selector.
    pub selector: Option<BTreeMap<String, String>>,
    /// Backend addresses from its EndpointSlices.
    pub backend_ips: Vec<IpAddr>,
}

/// Which non-world peers CIDR rules may match (`--policy-cidr-match-mode`).
/// Cilium matches CIDR rules against world addresses only; `nodes` adds the
/// node addresses (Cilium's option); `pods` adds pod addresses, which the
/// upstream NetworkPolicy ipBlock cases need (Sluice's default).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CidrMatch {
    pub nodes: bool,
    pub pods: bool,
}

/// Everything the compiler needs.
#[derive(Clone, Debug)]
pub struct CompileInput<'a> {
    pub policies: &'a [Policy],
    pub enforcement: Enforcement,
    pub allow_localhost: bool,
    pub cidr_match: CidrMatch,
    /// This node's endpoints.
    pub endpoints: &'a [LocalEndpoint],
    /// Every identity the cluster has, with its labels (reserved ones as
    /// `reserved:<name>`).
    pub identities: &'a [(u32, LabelSet)],
    /// Every pod with addresses (local ones too).
    pub pods: &'a [ClusterPod],
    /// Node addresses: (address, identity host or remote-node).
    pub nodes: &'a [(IpAddr, u32)],
    pub services: &'a [ClusterService],
    /// The cluster's pod CIDRs (world excludes them).
    pub pod_cidrs: &'a [Cidr],
    /// Numbers of local identities from an earlier generation, kept so that
    /// an unchanged CIDR keeps its number (labels key -> number).
    pub previous_local: &'a BTreeMap<String, u32>,
}

/// What the compiler produced.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Compiled {
    pub state: PolicyState,
    /// Entries to add to (or override in) the ipcache: CIDR prefixes, and
    /// pod/node addresses that CIDR rules cover (local identities).
    pub ipcache: Vec<IpCacheEntry>,
    /// Local identities in use: labels key -> number (feed back as
    /// `previous_local`), with their labels for `sluice identity list`.
    pub local_identities: BTreeMap<String, u32>,
    /// Problems that left a rule out (each names the policy and field).
    pub errors: Vec<String>,
}

/// Compiles the policies for this node's endpoints.
pub fn compile(input: &CompileInput<'_>) -> Compiled {
    let _ = input;
    todo!("compile")
}
