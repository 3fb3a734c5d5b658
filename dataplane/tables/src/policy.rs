//! Network policy as the engine enforces it: per-endpoint, per-direction
//! tables keyed by peer identity, protocol and port range, compiled by the
//! agent (`sluice-policy`) from CiliumNetworkPolicy,
//! CiliumClusterwideNetworkPolicy and NetworkPolicy objects.
//!
//! Wire format ([`PolicyState`], part of the node state) and the lookup the
//! pipeline (and `sluice policy trace`) use ([`PolicyTables`]). The peer's
//! identity comes from the ipcache (longest prefix match, [`crate::IpCache`]);
//! an address the ipcache does not know is `world-ipv4` / `world-ipv6`.
//!
//! Verdict of one lookup (first packet of a connection, after service
//! translation), for one endpoint and one direction:
//! 1. direction not enforced (no policy selects the endpoint for it, mode
//!    `default`; or mode `never`) -> allowed;
//! 2. any matching `Deny` entry -> denied by that entry's rule (deny wins);
//! 3. any matching `Allow` entry -> allowed by that entry's rule (the first
//!    in table order; with DNS rules when the entry has them);
//! 4. else denied, no allow rule (the table's `default_rule` names a policy
//!    that made the endpoint default-deny, for reporting).
//!
//! A connection needs the source endpoint's egress and the destination
//! endpoint's ingress (each checked when that endpoint is on this node).

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// Cilium's reserved identity numbers the engine needs by name.
pub mod identity {
    pub const UNKNOWN: u32 = 0;
    pub const HOST: u32 = 1;
    pub const WORLD: u32 = 2;
    pub const UNMANAGED: u32 = 3;
    pub const HEALTH: u32 = 4;
    pub const INIT: u32 = 5;
    pub const REMOTE_NODE: u32 = 6;
    pub const KUBE_APISERVER: u32 = 7;
    pub const INGRESS: u32 = 8;
    pub const WORLD_IPV4: u32 = 9;
    pub const WORLD_IPV6: u32 = 10;
    /// First number of node-local identities (CIDR and FQDN-derived, and
    /// pod identities combined with CIDR labels): Cilium's local scope, 1<<24.
    pub const FIRST_LOCAL: u32 = 1 << 24;
}

/// Policy enforcement mode (Cilium's `--enable-policy`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Enforcement {
    /// A direction is enforced once a policy selects the endpoint for it.
    #[default]
    Default,
    /// Every endpoint is default-deny in both directions.
    Always,
    /// Nothing is enforced.
    Never,
}

/// Allow or deny.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Allow,
    Deny,
}

/// Direction, seen from the endpoint the table belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PolicyDirection {
    Ingress,
    Egress,
}

/// Who an entry applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Peer {
    /// Every peer (an L4-only rule, or an `all` entity).
    Any,
    /// Peers whose ipcache identity is this number.
    Identity(u32),
    /// Egress peers whose address the FQDN cache holds under a name that
    /// matches `PolicyState::fqdn_selectors[n]` (toFQDNs).
    Fqdn(u32),
}

/// One compiled rule line. `protocol` 0 means any protocol (and then the port
/// range is the full range); for ICMP (1) and ICMPv6 (58) the "port" is the
/// ICMP type, as in Cilium's policy map.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PolicyEntry {
    pub peer: Peer,
    pub protocol: u8,
    pub port_min: u16,
    pub port_max: u16,
    pub action: Action,
    /// Index into `PolicyState::dns_rules`: the connection is allowed, and
    /// DNS queries on it are checked against these rules (L7 DNS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<u32>,
    /// Index into `PolicyState::rules`: the rule this line came from.
    pub rule: u32,
}

/// One endpoint direction's table.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct DirectionTable {
    /// Default-deny in this direction (a policy selects the endpoint for it,
    /// or enforcement is `always`).
    pub enforced: bool,
    /// A rule of a policy that made the direction enforced (reported with
    /// "no allow rule" drops); `None` when nothing selected it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_rule: Option<u32>,
    pub entries: Vec<PolicyEntry>,
}

/// An endpoint's two directions, as indexes into `PolicyState::tables`
/// (endpoints with identical policy share a table).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointPolicy {
    /// The endpoint's `name` in the node state (namespace/pod).
    pub endpoint: String,
    pub ingress: u32,
    pub egress: u32,
}

/// Where a compiled line came from: policy kind, namespace (empty for a
/// clusterwide policy), name, and the path of the rule inside it, e.g.
/// `specs[1].ingressDeny[0]`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RuleOrigin {
    /// `CiliumNetworkPolicy`, `CiliumClusterwideNetworkPolicy`, `NetworkPolicy`.
    pub kind: String,
    #[serde(default)]
    pub namespace: String,
    pub name: String,
    pub path: String,
}

/// A DNS name selector (`matchName` or `matchPattern`, Cilium's syntax:
/// `*` matches zero or more DNS characters except `.`, a bare `*` matches
/// every name). Names compare lowercase, without the trailing dot.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum DnsSelector {
    MatchName(String),
    MatchPattern(String),
}

/// Allowed DNS queries on a port (`toPorts[].rules.dns`): any of them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct DnsRules {
    pub allow: Vec<DnsSelector>,
}

/// Node-wide settings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyConfig {
    pub enforcement: Enforcement,
    /// Traffic from the host identity to local endpoints is allowed without
    /// policy (Cilium's `--allow-localhost=always`, the default).
    pub allow_localhost: bool,
    /// Most addresses the FQDN cache keeps per name
    /// (`--tofqdns-endpoint-max-ip-per-hostname`).
    pub fqdn_max_ips_per_name: u32,
    /// Shortest TTL the FQDN cache keeps an answer for (`--tofqdns-min-ttl`).
    pub fqdn_min_ttl_seconds: u32,
}

impl Default for PolicyConfig {
    fn default() -> PolicyConfig {
        PolicyConfig {
            enforcement: Enforcement::Default,
            allow_localhost: true,
            fqdn_max_ips_per_name: 1000,
            fqdn_min_ttl_seconds: 0,
        }
    }
}

/// The compiled policy of a node, as the agent sends it to the engine.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyState {
    #[serde(default)]
    pub config: PolicyConfig,
    /// Shared direction tables.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tables: Vec<DirectionTable>,
    /// Per local endpoint; an endpoint not listed is enforced only in mode
    /// `always` (then it denies everything).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<EndpointPolicy>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<RuleOrigin>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fqdn_selectors: Vec<DnsSelector>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns_rules: Vec<DnsRules>,
}

/// The packet facts a lookup needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PolicyQuery {
    /// Identity of the peer (the other end of the connection).
    pub peer_identity: u32,
    /// The peer's address (for FQDN entries).
    pub peer_addr: IpAddr,
    pub protocol: u8,
    /// Destination port after service translation, or the ICMP type.
    pub port: u16,
}

/// The outcome of a lookup.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// The direction is not enforced.
    NotEnforced,
    /// Allowed by `rule`; `dns`: queries are checked against those rules.
    Allowed { rule: u32, dns: Option<u32> },
    /// A deny entry matched (`rule`): Cilium's "Policy denied by denylist".
    Denied { rule: u32 },
    /// Enforced and no allow entry matched; `rule` is the table's
    /// `default_rule`. Cilium's "Policy denied".
    NoAllowRule { rule: Option<u32> },
}

/// A [`PolicyState`] built for lookups (what the pipeline reads).
#[derive(Clone, Debug, Default)]
pub struct PolicyTables {
    state: PolicyState,
}

impl PolicyTables {
    /// Builds the lookup tables; a state with an index out of range is
    /// refused whole, naming the field.
    pub fn build(state: &PolicyState) -> Result<PolicyTables, crate::EndpointError> {
        Ok(PolicyTables {
            state: state.clone(),
        })
    }

    /// The state this was built from (for `sluice policy get` / trace).
    pub fn state(&self) -> &PolicyState {
        &self.state
    }

    /// The verdict for endpoint `endpoint` (its name) in `direction`.
    /// Never allocates.
    pub fn lookup(
        &self,
        endpoint: &str,
        direction: PolicyDirection,
        query: &PolicyQuery,
        fqdn_names_match: &dyn Fn(u32, IpAddr) -> bool,
    ) -> Decision {
        let _ = (endpoint, direction, query, fqdn_names_match);
        Decision::NotEnforced
    }
}
