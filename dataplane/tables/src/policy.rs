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
//! 1. mode `never`; or ingress from the host identity with `allow_localhost`
//!    -> not enforced (allowed);
//! 2. any matching `Deny` entry -> denied by that entry's rule (deny wins,
//!    also in a direction that is not default-deny: Cilium's deny rules take
//!    precedence over a policy with `enableDefaultDeny: false`);
//! 3. any matching `Allow` entry -> allowed by that entry's rule (the first
//!    in table order, except that an entry with DNS rules goes before those
//!    without, so a broader allow cannot lift DNS inspection off a port, as
//!    Cilium's port-specific L7 entries win over L3-only ones);
//! 4. direction not enforced (no policy made it default-deny, mode
//!    `default`; or an endpoint the state does not list, outside mode
//!    `always`) -> not enforced (allowed);
//! 5. else denied, no allow rule (the table's `default_rule` names a policy
//!    that made the endpoint default-deny, for reporting).
//!
//! A connection needs the source endpoint's egress and the destination
//! endpoint's ingress (each checked when that endpoint is on this node).
//!
//! [`PolicyTables`] indexes each table's entries by peer identity (plus the
//! `Any` and `Fqdn` entries, which every lookup also reads), deny entries
//! before allow entries, each in table order; and resolves the endpoints of
//! a [`crate::Tables`] snapshot to their tables by address when the snapshot
//! is built, so a packet never hashes an endpoint name.

use std::collections::BTreeMap;
use std::hash::Hasher;
use std::net::IpAddr;
use std::sync::Arc;

use hashbrown::HashMap;
use serde::{Deserialize, Serialize};
use siphasher::sip::SipHasher13;

use crate::{EndpointError, EndpointId, EndpointTable, IpCache};

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

/// "None" in the packed index: an endpoint direction without a table, an
/// entry without DNS rules or without an FQDN selector.
const NONE: u32 = u32::MAX;

/// Keys of the FQDN selector hash ([`PolicyTables::fqdn_key`]): fixed, so a
/// selector keeps its key across generations and the FQDN cache entries
/// filled under it stay valid.
const FQDN_KEYS: (u64, u64) = (0x736c_7569_6365_6671, 0x646e_5f73_656c_6563);

/// One entry as a lookup reads it, packed beside its neighbours.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Line {
    /// Position of the entry in its table: the first in table order decides.
    position: u32,
    rule: u32,
    /// Index into `dns_rules`, or [`NONE`].
    dns: u32,
    /// The `Peer::Fqdn` selector, or [`NONE`].
    fqdn: u32,
    port_min: u16,
    port_max: u16,
    protocol: u8,
}

impl Line {
    /// Protocol 0 is every protocol and port; otherwise the protocol and
    /// the port (or ICMP type) range must match.
    #[inline]
    fn matches(&self, protocol: u8, port: u16) -> bool {
        self.protocol == 0
            || (self.protocol == protocol && self.port_min <= port && port <= self.port_max)
    }
}

/// The lines of one peer in a table: `start..deny_end` deny, `deny_end..end`
/// allow, each in table order.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Run {
    start: u32,
    deny_end: u32,
    end: u32,
}

/// One [`DirectionTable`] indexed by peer.
#[derive(Clone, Debug, Default)]
struct IndexedTable {
    enforced: bool,
    default_rule: Option<u32>,
    lines: Vec<Line>,
    by_identity: HashMap<u32, Run>,
    any: Run,
    fqdn: Run,
    /// Some entry has DNS rules.
    has_dns: bool,
}

impl IndexedTable {
    fn build(table: &DirectionTable) -> IndexedTable {
        // Grouped in identity order, so equal states lay out equal tables.
        let mut by_identity: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
        let (mut any, mut fqdn) = (Vec::new(), Vec::new());
        for (position, entry) in table.entries.iter().enumerate() {
            match entry.peer {
                Peer::Identity(id) => by_identity.entry(id).or_default().push(position),
                Peer::Any => any.push(position),
                Peer::Fqdn(_) => fqdn.push(position),
            }
        }
        let mut lines = Vec::with_capacity(table.entries.len());
        let mut lay_out = |positions: &[usize]| -> Run {
            let start = lines.len() as u32;
            let mut deny_end = start;
            for deny in [true, false] {
                for &position in positions {
                    let entry = &table.entries[position];
                    if (entry.action == Action::Deny) != deny {
                        continue;
                    }
                    lines.push(Line {
                        position: position as u32,
                        rule: entry.rule,
                        dns: entry.dns.unwrap_or(NONE),
                        fqdn: match entry.peer {
                            Peer::Fqdn(selector) => selector,
                            _ => NONE,
                        },
                        port_min: entry.port_min,
                        port_max: entry.port_max,
                        protocol: entry.protocol,
                    });
                }
                if deny {
                    deny_end = lines.len() as u32;
                }
            }
            Run {
                start,
                deny_end,
                end: lines.len() as u32,
            }
        };
        let by_identity = by_identity
            .into_iter()
            .map(|(id, positions)| (id, lay_out(&positions)))
            .collect();
        let any = lay_out(&any);
        let fqdn = lay_out(&fqdn);
        IndexedTable {
            enforced: table.enforced,
            default_rule: table.default_rule,
            has_dns: lines.iter().any(|line| line.dns != NONE),
            lines,
            by_identity,
            any,
            fqdn,
        }
    }

    /// Steps 2 to 5 of the module doc; `enforced` is the table's flag, or
    /// forced on by mode `always`.
    #[inline]
    fn decide(
        &self,
        enforced: bool,
        query: &PolicyQuery,
        fqdn_match: &impl Fn(u32, IpAddr) -> bool,
    ) -> Decision {
        let hit = |line: &Line| {
            line.matches(query.protocol, query.port)
                && (line.fqdn == NONE || fqdn_match(line.fqdn, query.peer_addr))
        };
        // Per run (the peer's own, Any, Fqdn): its first matching deny, and
        // its best matching allow; the earliest of the runs' wins.
        let mut deny: Option<&Line> = None;
        let mut allow: Option<&Line> = None;
        let mut read = |run: Run| {
            let Some(lines) = self.lines.get(run.start as usize..run.end as usize) else {
                return;
            };
            let (denies, allows) =
                lines.split_at(((run.deny_end - run.start) as usize).min(lines.len()));
            if let Some(line) = denies.iter().find(|l| hit(l)) {
                if deny.is_none_or(|d| line.position < d.position) {
                    deny = Some(line);
                }
            }
            if deny.is_some() {
                return;
            }
            // An entry with DNS rules wins over other allows, so that a
            // broader allow (an L3 rule) cannot take DNS inspection off a
            // port; among equals the first in table order.
            let rank = |line: &Line| (line.dns == NONE, line.position);
            let best = if self.has_dns {
                allows.iter().filter(|l| hit(l)).min_by_key(|l| rank(l))
            } else {
                allows.iter().find(|l| hit(l))
            };
            if let Some(line) = best {
                if allow.is_none_or(|a| rank(line) < rank(a)) {
                    allow = Some(line);
                }
            }
        };
        if let Some(run) = self.by_identity.get(&query.peer_identity) {
            read(*run);
        }
        if self.any.end > self.any.start {
            read(self.any);
        }
        if self.fqdn.end > self.fqdn.start {
            read(self.fqdn);
        }
        if let Some(line) = deny {
            return Decision::Denied { rule: line.rule };
        }
        if let Some(line) = allow {
            return Decision::Allowed {
                rule: line.rule,
                dns: (line.dns != NONE).then_some(line.dns),
            };
        }
        if enforced {
            Decision::NoAllowRule {
                rule: self.default_rule,
            }
        } else {
            Decision::NotEnforced
        }
    }
}

/// The part of [`PolicyTables`] that depends on the [`PolicyState`] alone;
/// shared (one `Arc`) by the snapshots built while the state is unchanged.
#[derive(Debug, Default)]
struct PolicyIndex {
    /// Shared further with whoever keeps per-rule data (the engine's
    /// per-rule drop counters), see [`PolicyTables::shared_state`].
    state: Arc<PolicyState>,
    tables: Vec<IndexedTable>,
    /// Endpoint name -> (ingress, egress) table.
    by_name: HashMap<String, (u32, u32)>,
    /// `fqdn_keys[i]`: [`PolicyTables::fqdn_key`] of selector i.
    fqdn_keys: Vec<u64>,
    /// [`PolicyTables::enforces`].
    enforces: bool,
}

impl PolicyIndex {
    fn build(state: PolicyState) -> Result<PolicyIndex, EndpointError> {
        validate(&state)?;
        let tables = state.tables.iter().map(IndexedTable::build).collect();
        let by_name = state
            .endpoints
            .iter()
            .map(|e| (e.endpoint.clone(), (e.ingress, e.egress)))
            .collect();
        let fqdn_keys = state.fqdn_selectors.iter().map(selector_key).collect();
        let enforces = match state.config.enforcement {
            Enforcement::Never => false,
            Enforcement::Always => true,
            Enforcement::Default => !state.endpoints.is_empty(),
        };
        Ok(PolicyIndex {
            state: Arc::new(state),
            tables,
            by_name,
            fqdn_keys,
            enforces,
        })
    }
}

fn refuse(field: String, detail: String) -> EndpointError {
    EndpointError::Policy { field, detail }
}

/// `index` must be below `len`; else the error names `field` and `what` it indexes.
fn in_range(
    index: u32,
    len: usize,
    field: impl FnOnce() -> String,
    what: &str,
) -> Result<(), EndpointError> {
    if (index as usize) < len {
        return Ok(());
    }
    Err(refuse(
        field(),
        format!("{index} is out of range ({what} has {len})"),
    ))
}

/// Every index in range, port ranges ordered, endpoints listed once.
fn validate(state: &PolicyState) -> Result<(), EndpointError> {
    let rules = state.rules.len();
    for (t, table) in state.tables.iter().enumerate() {
        if let Some(rule) = table.default_rule {
            in_range(
                rule,
                rules,
                || format!("policy.tables[{t}].default_rule"),
                "rules",
            )?;
        }
        for (e, entry) in table.entries.iter().enumerate() {
            let field = |name: &str| format!("policy.tables[{t}].entries[{e}].{name}");
            in_range(entry.rule, rules, || field("rule"), "rules")?;
            if let Some(dns) = entry.dns {
                in_range(dns, state.dns_rules.len(), || field("dns"), "dns_rules")?;
            }
            if let Peer::Fqdn(selector) = entry.peer {
                in_range(
                    selector,
                    state.fqdn_selectors.len(),
                    || field("peer.fqdn"),
                    "fqdn_selectors",
                )?;
            }
            if entry.protocol != 0 && entry.port_min > entry.port_max {
                return Err(refuse(
                    field("port_min"),
                    format!("{} is above port_max {}", entry.port_min, entry.port_max),
                ));
            }
        }
    }
    let tables = state.tables.len();
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (i, endpoint) in state.endpoints.iter().enumerate() {
        let field = |name: &str| format!("policy.endpoints[{i}].{name}");
        in_range(endpoint.ingress, tables, || field("ingress"), "tables")?;
        in_range(endpoint.egress, tables, || field("egress"), "tables")?;
        if let Some(first) = seen.insert(&endpoint.endpoint, i) {
            return Err(refuse(
                field("endpoint"),
                format!(
                    "{:?} is already listed as policy.endpoints[{first}]",
                    endpoint.endpoint
                ),
            ));
        }
    }
    Ok(())
}

/// SipHash-1-3 of the selector's kind and its name or pattern (lowercase,
/// without a trailing dot, as names compare).
fn selector_key(selector: &DnsSelector) -> u64 {
    let (kind, text) = match selector {
        DnsSelector::MatchName(name) => (b'n', name),
        DnsSelector::MatchPattern(pattern) => (b'p', pattern),
    };
    let text = text.strip_suffix('.').unwrap_or(text);
    let mut hasher = SipHasher13::new_with_keys(FQDN_KEYS.0, FQDN_KEYS.1);
    hasher.write_u8(kind);
    for byte in text.bytes() {
        hasher.write_u8(byte.to_ascii_lowercase());
    }
    hasher.finish()
}

/// One local endpoint's tables, resolved when the snapshot is built (what
/// [`PolicyTables::local`] finds by address).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EndpointTables {
    /// The endpoint in the snapshot's [`EndpointTable`].
    pub endpoint: EndpointId,
    /// The ipcache identity of the address it was found by (so a packet
    /// between two local endpoints needs no ipcache lookup).
    pub identity: u32,
    /// Table indexes, [`NONE`] for an endpoint the state does not list.
    ingress: u32,
    egress: u32,
}

/// A [`PolicyState`] built for lookups (what the pipeline reads).
#[derive(Clone, Debug, Default)]
pub struct PolicyTables {
    index: Arc<PolicyIndex>,
    /// The addresses of this snapshot's endpoints -> their tables, per
    /// family, keyed by the address as a number (cheaper to hash).
    by_ipv4: HashMap<u32, EndpointTables>,
    by_ipv6: HashMap<u128, EndpointTables>,
    /// The index's [`enforces`](Self::enforces), kept here so that the
    /// per-packet check reads it without following the `Arc`.
    enforces: bool,
}

impl PolicyTables {
    /// Builds the lookup tables; a state with an index out of range is
    /// refused whole, naming the field. Not bound to endpoints: only the
    /// by-name [`lookup`](Self::lookup) answers for them (see
    /// [`build_for`](Self::build_for)).
    pub fn build(state: &PolicyState) -> Result<PolicyTables, EndpointError> {
        let index = Arc::new(PolicyIndex::build(state.clone())?);
        Ok(PolicyTables {
            enforces: index.enforces,
            index,
            ..PolicyTables::default()
        })
    }

    /// [`build`](Self::build), with `endpoints` resolved to their tables
    /// and to their identities in `ipcache`.
    pub fn build_for(
        state: PolicyState,
        endpoints: &EndpointTable,
        ipcache: &IpCache,
    ) -> Result<PolicyTables, EndpointError> {
        let index = Arc::new(PolicyIndex::build(state)?);
        Ok(PolicyTables::bind(index, endpoints, ipcache))
    }

    /// [`build_for`](Self::build_for), taking the index of `previous` when
    /// the state is the same (a delta that did not touch policy costs no
    /// re-indexing).
    pub fn build_reusing(
        state: PolicyState,
        endpoints: &EndpointTable,
        ipcache: &IpCache,
        previous: &PolicyTables,
    ) -> Result<PolicyTables, EndpointError> {
        if *previous.index.state == state {
            let index = Arc::clone(&previous.index);
            return Ok(PolicyTables::bind(index, endpoints, ipcache));
        }
        PolicyTables::build_for(state, endpoints, ipcache)
    }

    fn bind(index: Arc<PolicyIndex>, endpoints: &EndpointTable, ipcache: &IpCache) -> PolicyTables {
        let mut by_ipv4 = HashMap::with_capacity(endpoints.len());
        let mut by_ipv6 = HashMap::with_capacity(endpoints.len());
        for (id, endpoint) in endpoints.iter().enumerate() {
            let (ingress, egress) = index
                .by_name
                .get(endpoint.name.as_str())
                .copied()
                .unwrap_or((NONE, NONE));
            let tables = |addr: IpAddr| EndpointTables {
                endpoint: id as EndpointId,
                identity: ipcache.identity_of(addr),
                ingress,
                egress,
            };
            if let Some(addr) = endpoint.ipv4 {
                by_ipv4.insert(u32::from(addr), tables(addr.into()));
            }
            if let Some(addr) = endpoint.ipv6 {
                by_ipv6.insert(u128::from(addr), tables(addr.into()));
            }
        }
        PolicyTables {
            enforces: index.enforces,
            index,
            by_ipv4,
            by_ipv6,
        }
    }

    /// The state this was built from (for `sluice policy get` / trace).
    pub fn state(&self) -> &PolicyState {
        &self.index.state
    }

    /// The state, shared: one `Arc` for every snapshot built from an
    /// unchanged state (so `Arc::ptr_eq` tells that its `rules` are the same).
    pub fn shared_state(&self) -> &Arc<PolicyState> {
        &self.index.state
    }

    /// True when `other` shares this one's index, i.e. was built from the
    /// same state without re-indexing (its rules are the same list).
    pub fn same_state(&self, other: &PolicyTables) -> bool {
        Arc::ptr_eq(&self.index, &other.index)
    }

    /// False when no lookup can deny anything (mode `never`, or mode
    /// `default` with no endpoint listed): the packet path skips policy.
    #[inline]
    pub fn enforces(&self) -> bool {
        self.enforces
    }

    /// The tables of the local endpoint that owns `addr`, if one does.
    #[inline]
    pub fn local(&self, addr: IpAddr) -> Option<EndpointTables> {
        match addr {
            IpAddr::V4(a) => self.by_ipv4.get(&u32::from(a)).copied(),
            IpAddr::V6(a) => self.by_ipv6.get(&u128::from(a)).copied(),
        }
    }

    /// The key the FQDN cache files addresses under for
    /// `fqdn_selectors[selector]`: a stable hash of the selector (equal
    /// selectors share a key, across generations too). 0 for an index out of
    /// range.
    #[inline]
    pub fn fqdn_key(&self, selector: u32) -> u64 {
        self.index
            .fqdn_keys
            .get(selector as usize)
            .copied()
            .unwrap_or(0)
    }

    /// Every FQDN selector with its [`fqdn_key`](Self::fqdn_key), in index order.
    pub fn fqdn_selectors(&self) -> impl Iterator<Item = (u64, &DnsSelector)> {
        self.index
            .fqdn_keys
            .iter()
            .copied()
            .zip(&self.index.state.fqdn_selectors)
    }

    /// The verdict for a local endpoint in `direction` (the packet path).
    /// `fqdn_match(selector, addr)`: whether the FQDN cache holds `addr`
    /// under `fqdn_selectors[selector]`. Never allocates.
    #[inline]
    pub fn decide(
        &self,
        endpoint: &EndpointTables,
        direction: PolicyDirection,
        query: &PolicyQuery,
        fqdn_match: impl Fn(u32, IpAddr) -> bool,
    ) -> Decision {
        let table = match direction {
            PolicyDirection::Ingress => endpoint.ingress,
            PolicyDirection::Egress => endpoint.egress,
        };
        self.decide_table(table, direction, query, &fqdn_match)
    }

    /// The verdict for endpoint `endpoint` (its name) in `direction`, as
    /// [`decide`](Self::decide); for `sluice policy trace`. Never allocates.
    pub fn lookup(
        &self,
        endpoint: &str,
        direction: PolicyDirection,
        query: &PolicyQuery,
        fqdn_names_match: &dyn Fn(u32, IpAddr) -> bool,
    ) -> Decision {
        let (ingress, egress) = self
            .index
            .by_name
            .get(endpoint)
            .copied()
            .unwrap_or((NONE, NONE));
        let table = match direction {
            PolicyDirection::Ingress => ingress,
            PolicyDirection::Egress => egress,
        };
        self.decide_table(table, direction, query, &fqdn_names_match)
    }

    #[inline]
    fn decide_table(
        &self,
        table: u32,
        direction: PolicyDirection,
        query: &PolicyQuery,
        fqdn_match: &impl Fn(u32, IpAddr) -> bool,
    ) -> Decision {
        let config = &self.index.state.config;
        if config.enforcement == Enforcement::Never
            || (direction == PolicyDirection::Ingress
                && config.allow_localhost
                && query.peer_identity == identity::HOST)
        {
            return Decision::NotEnforced;
        }
        let always = config.enforcement == Enforcement::Always;
        match self.index.tables.get(table as usize) {
            Some(t) => t.decide(t.enforced || always, query, fqdn_match),
            None if always => Decision::NoAllowRule { rule: None },
            None => Decision::NotEnforced,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Endpoint, MacAddr};
    use std::net::Ipv4Addr;

    const WEB: u32 = 300;
    const CLIENT: u32 = 301;
    const OTHER: u32 = 302;

    fn origin(name: &str, path: &str) -> RuleOrigin {
        RuleOrigin {
            kind: "CiliumNetworkPolicy".into(),
            namespace: "default".into(),
            name: name.into(),
            path: path.into(),
        }
    }

    fn line(peer: Peer, protocol: u8, ports: (u16, u16), action: Action, rule: u32) -> PolicyEntry {
        PolicyEntry {
            peer,
            protocol,
            port_min: ports.0,
            port_max: ports.1,
            action,
            dns: None,
            rule,
        }
    }

    fn query(peer: u32, protocol: u8, port: u16) -> PolicyQuery {
        PolicyQuery {
            peer_identity: peer,
            peer_addr: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 9)),
            protocol,
            port,
        }
    }

    fn no_fqdn(_: u32, _: IpAddr) -> bool {
        false
    }

    /// Endpoint `default/web`: ingress from CLIENT on everything (rule 0),
    /// deny from CLIENT on TCP 80 (rule 1), allow from any on UDP 53-54
    /// (rule 2), ICMP echo request from OTHER (rule 3); egress table 1 not
    /// enforced with one deny (rule 4). `default/open` has no tables.
    fn state() -> PolicyState {
        PolicyState {
            config: PolicyConfig::default(),
            tables: vec![
                DirectionTable {
                    enforced: true,
                    default_rule: Some(0),
                    entries: vec![
                        line(Peer::Identity(CLIENT), 0, (0, 65535), Action::Allow, 0),
                        line(Peer::Identity(CLIENT), 6, (80, 80), Action::Deny, 1),
                        line(Peer::Any, 17, (53, 54), Action::Allow, 2),
                        line(Peer::Identity(OTHER), 1, (8, 8), Action::Allow, 3),
                    ],
                },
                DirectionTable {
                    enforced: false,
                    default_rule: None,
                    entries: vec![line(Peer::Identity(OTHER), 6, (443, 443), Action::Deny, 4)],
                },
            ],
            endpoints: vec![EndpointPolicy {
                endpoint: "default/web".into(),
                ingress: 0,
                egress: 1,
            }],
            rules: (0..5)
                .map(|i| origin("web", &format!("specs[0].ingress[{i}]")))
                .collect(),
            fqdn_selectors: Vec::new(),
            dns_rules: Vec::new(),
        }
    }

    fn ingress(t: &PolicyTables, q: PolicyQuery) -> Decision {
        t.lookup("default/web", PolicyDirection::Ingress, &q, &no_fqdn)
    }

    #[test]
    fn deny_wins_over_allow_and_other_ports_stay_allowed() {
        let t = PolicyTables::build(&state()).unwrap();
        assert_eq!(
            ingress(&t, query(CLIENT, 6, 80)),
            Decision::Denied { rule: 1 }
        );
        assert_eq!(
            ingress(&t, query(CLIENT, 6, 81)),
            Decision::Allowed { rule: 0, dns: None }
        );
        // Protocol 0 allows every protocol, ICMP too.
        assert_eq!(
            ingress(&t, query(CLIENT, 1, 8)),
            Decision::Allowed { rule: 0, dns: None }
        );
        assert_eq!(
            ingress(&t, query(CLIENT, 17, 80)),
            Decision::Allowed { rule: 0, dns: None }
        );
    }

    #[test]
    fn any_peer_and_port_ranges() {
        let t = PolicyTables::build(&state()).unwrap();
        for port in [53, 54] {
            assert_eq!(
                ingress(&t, query(OTHER, 17, port)),
                Decision::Allowed { rule: 2, dns: None }
            );
        }
        for (protocol, port) in [(17, 52), (17, 55), (6, 53)] {
            assert_eq!(
                ingress(&t, query(OTHER, protocol, port)),
                Decision::NoAllowRule { rule: Some(0) },
                "{protocol}/{port}"
            );
        }
        // The client matches both its own line and the Any line: the first
        // in table order reports.
        assert_eq!(
            ingress(&t, query(CLIENT, 17, 53)),
            Decision::Allowed { rule: 0, dns: None }
        );
    }

    #[test]
    fn icmp_rules_match_the_type() {
        let t = PolicyTables::build(&state()).unwrap();
        assert_eq!(
            ingress(&t, query(OTHER, 1, 8)),
            Decision::Allowed { rule: 3, dns: None }
        );
        assert_eq!(
            ingress(&t, query(OTHER, 1, 0)),
            Decision::NoAllowRule { rule: Some(0) }
        );
        assert_eq!(
            ingress(&t, query(OTHER, 58, 8)),
            Decision::NoAllowRule { rule: Some(0) }
        );
    }

    #[test]
    fn not_enforced_directions_still_deny() {
        let t = PolicyTables::build(&state()).unwrap();
        let egress = |q| t.lookup("default/web", PolicyDirection::Egress, &q, &no_fqdn);
        assert_eq!(egress(query(OTHER, 6, 443)), Decision::Denied { rule: 4 });
        assert_eq!(egress(query(OTHER, 6, 80)), Decision::NotEnforced);
        assert_eq!(egress(query(WEB, 6, 443)), Decision::NotEnforced);
        // An endpoint without tables.
        assert_eq!(
            t.lookup(
                "default/open",
                PolicyDirection::Ingress,
                &query(OTHER, 6, 1),
                &no_fqdn
            ),
            Decision::NotEnforced
        );
    }

    #[test]
    fn enforcement_modes_and_localhost() {
        let mut s = state();
        let t = PolicyTables::build(&s).unwrap();
        assert_eq!(
            ingress(&t, query(identity::HOST, 6, 22)),
            Decision::NotEnforced
        );
        s.config.allow_localhost = false;
        let t = PolicyTables::build(&s).unwrap();
        assert_eq!(
            ingress(&t, query(identity::HOST, 6, 22)),
            Decision::NoAllowRule { rule: Some(0) }
        );
        assert!(t.enforces());
        s.config.enforcement = Enforcement::Never;
        let t = PolicyTables::build(&s).unwrap();
        assert!(!t.enforces());
        assert_eq!(ingress(&t, query(CLIENT, 6, 80)), Decision::NotEnforced);
        s.config.enforcement = Enforcement::Always;
        let t = PolicyTables::build(&s).unwrap();
        assert!(t.enforces());
        assert!(!PolicyTables::build(&PolicyState::default())
            .unwrap()
            .enforces());
        let egress = |name, q| t.lookup(name, PolicyDirection::Egress, &q, &no_fqdn);
        assert_eq!(
            egress("default/web", query(OTHER, 6, 80)),
            Decision::NoAllowRule { rule: None }
        );
        assert_eq!(
            egress("default/open", query(OTHER, 6, 80)),
            Decision::NoAllowRule { rule: None }
        );
    }

    #[test]
    fn fqdn_entries_ask_the_cache_and_dns_rides_on_the_allow() {
        let mut s = state();
        s.fqdn_selectors = vec![
            DnsSelector::MatchName("www.example.com".into()),
            DnsSelector::MatchPattern("*.example.com".into()),
        ];
        s.dns_rules = vec![DnsRules {
            allow: vec![DnsSelector::MatchPattern("*".into())],
        }];
        s.tables[1] = DirectionTable {
            enforced: true,
            default_rule: Some(4),
            entries: vec![
                line(Peer::Fqdn(1), 6, (443, 443), Action::Allow, 4),
                // An L3 allow before the DNS entry does not lift the inspection.
                line(Peer::Identity(OTHER), 0, (0, 65535), Action::Allow, 3),
                PolicyEntry {
                    dns: Some(0),
                    ..line(Peer::Identity(OTHER), 17, (53, 53), Action::Allow, 4)
                },
            ],
        };
        let t = PolicyTables::build(&s).unwrap();
        let known = IpAddr::V4(Ipv4Addr::new(93, 184, 216, 34));
        let cache = |selector: u32, addr: IpAddr| selector == 1 && addr == known;
        let mut q = query(identity::WORLD_IPV4, 6, 443);
        let egress = |q: &PolicyQuery| t.lookup("default/web", PolicyDirection::Egress, q, &cache);
        assert_eq!(egress(&q), Decision::NoAllowRule { rule: Some(4) });
        q.peer_addr = known;
        assert_eq!(egress(&q), Decision::Allowed { rule: 4, dns: None });
        assert_eq!(
            egress(&query(OTHER, 17, 53)),
            Decision::Allowed {
                rule: 4,
                dns: Some(0)
            }
        );
        assert_eq!(
            egress(&query(OTHER, 17, 54)),
            Decision::Allowed { rule: 3, dns: None }
        );
        // Keys are stable and follow how names compare.
        assert_eq!(t.fqdn_key(0), PolicyTables::build(&s).unwrap().fqdn_key(0));
        assert_ne!(t.fqdn_key(0), t.fqdn_key(1));
        assert_eq!(
            selector_key(&DnsSelector::MatchName("WWW.Example.com.".into())),
            t.fqdn_key(0)
        );
        assert_ne!(
            selector_key(&DnsSelector::MatchPattern("www.example.com".into())),
            t.fqdn_key(0)
        );
        assert_eq!(t.fqdn_key(7), 0);
        let listed: Vec<u64> = t.fqdn_selectors().map(|(k, _)| k).collect();
        assert_eq!(listed, vec![t.fqdn_key(0), t.fqdn_key(1)]);
    }

    #[test]
    fn bad_indexes_are_refused_naming_the_field() {
        let refused = |edit: &dyn Fn(&mut PolicyState)| {
            let mut s = state();
            edit(&mut s);
            PolicyTables::build(&s).unwrap_err().to_string()
        };
        assert_eq!(
            refused(&|s| s.tables[0].entries[3].rule = 912),
            "policy.tables[0].entries[3].rule: 912 is out of range (rules has 5)"
        );
        assert_eq!(
            refused(&|s| s.tables[1].default_rule = Some(5)),
            "policy.tables[1].default_rule: 5 is out of range (rules has 5)"
        );
        assert_eq!(
            refused(&|s| s.tables[0].entries[0].dns = Some(0)),
            "policy.tables[0].entries[0].dns: 0 is out of range (dns_rules has 0)"
        );
        assert_eq!(
            refused(&|s| s.tables[0].entries[1].peer = Peer::Fqdn(2)),
            "policy.tables[0].entries[1].peer.fqdn: 2 is out of range (fqdn_selectors has 0)"
        );
        assert_eq!(
            refused(&|s| s.endpoints[0].egress = 2),
            "policy.endpoints[0].egress: 2 is out of range (tables has 2)"
        );
        assert_eq!(
            refused(&|s| {
                s.tables[0].entries[2].port_min = 60;
            }),
            "policy.tables[0].entries[2].port_min: 60 is above port_max 54"
        );
        assert_eq!(
            refused(&|s| {
                let again = s.endpoints[0].clone();
                s.endpoints.push(again);
            }),
            "policy.endpoints[1].endpoint: \"default/web\" is already listed as policy.endpoints[0]"
        );
    }

    fn endpoint(name: &str, ifindex: u32, v4: [u8; 4]) -> Endpoint {
        Endpoint {
            name: name.into(),
            ifindex,
            ifname: format!("lxc{ifindex}"),
            mac: MacAddr([2, 0, 0, 0, 0, ifindex as u8]),
            ipv4: Some(Ipv4Addr::from(v4)),
            ipv6: Some(format!("fd00::{ifindex}").parse().unwrap()),
            identity: 0,
        }
    }

    #[test]
    fn endpoints_resolve_by_address_and_reuse_keeps_the_index() {
        let endpoints = EndpointTable::build(vec![
            endpoint("default/open", 5, [10, 0, 0, 5]),
            endpoint("default/web", 6, [10, 0, 0, 6]),
        ])
        .unwrap();
        let ipcache = IpCache::build(&[crate::IpCacheEntry {
            ip: "10.0.0.6".parse().unwrap(),
            prefix_len: None,
            identity: WEB,
        }])
        .unwrap();
        let t = PolicyTables::build_for(state(), &endpoints, &ipcache).unwrap();
        let web = t.local("10.0.0.6".parse().unwrap()).unwrap();
        assert_eq!((web.endpoint, web.identity), (1, WEB));
        let web6 = t.local("fd00::6".parse().unwrap()).unwrap();
        // Not in the ipcache: world, as for any address it does not know.
        assert_eq!(
            web6,
            EndpointTables {
                identity: identity::WORLD_IPV6,
                ..web
            }
        );
        assert!(t.local("10.0.0.7".parse().unwrap()).is_none());
        assert_eq!(
            t.decide(
                &web,
                PolicyDirection::Ingress,
                &query(CLIENT, 6, 80),
                no_fqdn
            ),
            Decision::Denied { rule: 1 }
        );
        let open = t.local("10.0.0.5".parse().unwrap()).unwrap();
        assert_eq!(
            t.decide(
                &open,
                PolicyDirection::Ingress,
                &query(CLIENT, 6, 80),
                no_fqdn
            ),
            Decision::NotEnforced
        );
        let again = PolicyTables::build_reusing(state(), &endpoints, &ipcache, &t).unwrap();
        assert!(again.same_state(&t));
        assert!(Arc::ptr_eq(again.shared_state(), t.shared_state()));
        let mut changed = state();
        changed.tables[0].entries.pop();
        let changed = PolicyTables::build_reusing(changed, &endpoints, &ipcache, &t).unwrap();
        assert!(!changed.same_state(&t));
        assert_eq!(
            ingress(&changed, query(OTHER, 1, 8)),
            Decision::NoAllowRule { rule: Some(0) }
        );
    }

    /// The index agrees with a linear reading of the module doc over
    /// random tables (peers, protocols, port ranges, actions).
    #[test]
    fn the_index_agrees_with_a_linear_scan() {
        let mut seed: u64 = 0x0123_4567_89ab_cdef;
        let mut next = move |n: u32| {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (seed >> 33) as u32 % n
        };
        for _ in 0..300 {
            let entries: Vec<PolicyEntry> = (0..next(12))
                .map(|i| {
                    let peer = match next(4) {
                        0 => Peer::Any,
                        _ => Peer::Identity(300 + next(3)),
                    };
                    let protocol = [0u8, 6, 17, 1][next(4) as usize];
                    let low = next(6) as u16;
                    let high = low + next(3) as u16;
                    let action = if next(3) == 0 {
                        Action::Deny
                    } else {
                        Action::Allow
                    };
                    let dns = (action == Action::Allow && next(4) == 0).then_some(0);
                    PolicyEntry {
                        dns,
                        ..line(peer, protocol, (low, high), action, i)
                    }
                })
                .collect();
            let table = DirectionTable {
                enforced: next(2) == 0,
                default_rule: Some(0),
                entries: entries.clone(),
            };
            let s = PolicyState {
                tables: vec![table.clone()],
                endpoints: vec![EndpointPolicy {
                    endpoint: "x/y".into(),
                    ingress: 0,
                    egress: 0,
                }],
                rules: (0..12).map(|i| origin("p", &i.to_string())).collect(),
                dns_rules: vec![DnsRules::default()],
                ..PolicyState::default()
            };
            let t = PolicyTables::build(&s).unwrap();
            for _ in 0..30 {
                let q = query(
                    300 + next(3),
                    [6u8, 17, 1][next(3) as usize],
                    next(8) as u16,
                );
                let hit = |e: &&PolicyEntry| {
                    (e.peer == Peer::Any || e.peer == Peer::Identity(q.peer_identity))
                        && (e.protocol == 0
                            || (e.protocol == q.protocol
                                && e.port_min <= q.port
                                && q.port <= e.port_max))
                };
                let deny = entries
                    .iter()
                    .filter(hit)
                    .find(|e| e.action == Action::Deny);
                // Allows: those with DNS rules first, then table order.
                let allow = entries
                    .iter()
                    .enumerate()
                    .filter(|(_, e)| hit(e) && e.action == Action::Allow)
                    .min_by_key(|(i, e)| (e.dns.is_none(), *i))
                    .map(|(_, e)| e);
                let want = if let Some(e) = deny {
                    Decision::Denied { rule: e.rule }
                } else if let Some(e) = allow {
                    Decision::Allowed {
                        rule: e.rule,
                        dns: e.dns,
                    }
                } else if table.enforced {
                    Decision::NoAllowRule { rule: Some(0) }
                } else {
                    Decision::NotEnforced
                };
                assert_eq!(
                    t.lookup("x/y", PolicyDirection::Ingress, &q, &no_fqdn),
                    want,
                    "{q:?} in {entries:?}"
                );
            }
        }
    }
}
