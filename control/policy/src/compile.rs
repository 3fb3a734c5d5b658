//! Policies + identities -> the engine's per-endpoint tables.
//!
//! [`compile`] is a pure function of [`CompileInput`]; the steps:
//! 1. `rules`: every policy's rules scoped and validated into units (one per
//!    rule) of elements (one per `ingress[i]`, `egressDeny[j]`, ...);
//! 2. which units select which local endpoints (each endpointSelector
//!    evaluated once, over an index of the endpoints' labels);
//! 3. `cidr`: the prefixes of those units become local identities and
//!    ipcache entries (numbers kept from `previous_local`);
//! 4. `tables`: each distinct (direction, selecting units, enforcement,
//!    named ports) key becomes one table, peers resolved over an index of
//!    every identity's labels;
//! 5. rules, DNS rules and FQDN selectors referenced by the tables are
//!    numbered in a stable order and identical tables shared.
//!
//! Everything in the output is sorted, so the same input gives the same
//! bytes and the agent's deltas stay small.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;

use sluice_tables::policy::identity;
use sluice_tables::{
    Cidr, DirectionTable, EndpointPolicy, Enforcement, IpCacheEntry, Peer, PolicyConfig,
    PolicyDirection, PolicyState,
};

use crate::model::Policy;
use crate::selector::{Bitset, LabelIndex, Selector};

mod cidr;
mod dump;
mod ports;
mod rules;
mod tables;

pub use cidr::labels_key;

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
    /// Local identities in use: labels key (the labels, sorted, joined
    /// with `;`: [`labels_key`]) -> number. Feed back as `previous_local`.
    pub local_identities: BTreeMap<String, u32>,
    /// Problems that left a rule out (each names the policy and field).
    pub errors: Vec<String>,
}

/// Compiles the policies for this node's endpoints.
///
/// In mode `default` the output lists the endpoints some rule applies to
/// (or that are enforced anyway: initializing endpoints); in mode `always`
/// every endpoint; in mode `never` none. Reserved identities missing from
/// `input.identities` are added with their `reserved:<name>` label.
pub fn compile(input: &CompileInput<'_>) -> Compiled {
    let normalized = rules::normalize(input);
    let config = PolicyConfig {
        enforcement: input.enforcement,
        allow_localhost: input.allow_localhost,
        ..PolicyConfig::default()
    };
    let mut endpoints: Vec<&LocalEndpoint> = input.endpoints.iter().collect();
    endpoints.sort_by(|a, b| a.name.cmp(&b.name));
    if input.enforcement == Enforcement::Never {
        return Compiled {
            state: PolicyState {
                config,
                ..PolicyState::default()
            },
            errors: normalized.errors,
            ..Compiled::default()
        };
    }
    let units = &normalized.units;
    let (selecting, active) = selections(units, &endpoints);

    // Every identity by number: the input's (the first of a number wins),
    // then the reserved ones it left out; then the local ones for the
    // prefixes of the units that apply here.
    let reserved: Vec<(u32, LabelSet)> = RESERVED
        .iter()
        .map(|(n, name)| (*n, LabelSet::from([format!("reserved:{name}")])))
        .collect();
    let mut labels_of: HashMap<u32, &LabelSet> = HashMap::new();
    for (number, labels) in input.identities.iter().chain(&reserved) {
        labels_of.entry(*number).or_insert(labels);
    }
    let local = cidr::local_identities(input, &policy_prefixes(units, &active), &labels_of);
    let universe = universe(input, &labels_of, &local);

    let mut builder = tables::TableBuilder::new(units, &universe);
    let (mut built, pairs) = endpoint_tables(input, &endpoints, &selecting, units, &mut builder);

    // In mode default, an endpoint nothing applies to is left out: the
    // engine does not enforce an endpoint it does not find, and with no
    // endpoint listed it skips policy altogether.
    let always = input.enforcement == Enforcement::Always;
    let mut kept_tables: Vec<DirectionTable> = Vec::new();
    let mut kept_id: Vec<Option<u32>> = vec![None; built.len()];
    let mut listed: Vec<(&LocalEndpoint, [u32; 2])> = Vec::new();
    let trivial: Vec<bool> = built
        .iter()
        .map(|t| *t == DirectionTable::default())
        .collect();
    for (endpoint, pair) in endpoints.iter().zip(&pairs) {
        if !always && trivial[pair[0] as usize] && trivial[pair[1] as usize] {
            continue;
        }
        let kept = pair.map(|id| {
            let id = id as usize;
            *kept_id[id].get_or_insert_with(|| {
                kept_tables.push(std::mem::take(&mut built[id]));
                (kept_tables.len() - 1) as u32
            })
        });
        listed.push((endpoint, kept));
    }
    let (state, shared) = renumber(config, kept_tables, &builder, &normalized);
    let state = PolicyState {
        endpoints: listed
            .iter()
            .map(|(e, pair)| EndpointPolicy {
                endpoint: e.name.clone(),
                ingress: shared[pair[0] as usize],
                egress: shared[pair[1] as usize],
            })
            .collect(),
        ..state
    };
    Compiled {
        state,
        ipcache: local.ipcache,
        local_identities: local.numbers,
        errors: normalized.errors,
    }
}

/// Per endpoint, the units that select it with an ingress section and with
/// an egress section (in unit order); and the units that select any
/// endpoint. Each distinct endpointSelector is evaluated once.
fn selections(
    units: &[rules::Unit],
    endpoints: &[&LocalEndpoint],
) -> (Vec<[Vec<u32>; 2]>, Vec<u32>) {
    let endpoint_index = LabelIndex::new(endpoints.iter().map(|e| &e.labels));
    let mut subjects: HashMap<&Selector, Bitset> = HashMap::new();
    let mut selecting: Vec<[Vec<u32>; 2]> = vec![Default::default(); endpoints.len()];
    let mut active: Vec<u32> = Vec::new();
    for (u, unit) in units.iter().enumerate() {
        if !unit.ingress.present && !unit.egress.present {
            continue;
        }
        let selected = subjects
            .entry(&unit.subject)
            .or_insert_with(|| endpoint_index.select(&unit.subject));
        for e in selected.iter() {
            if unit.ingress.present {
                selecting[e][0].push(u as u32);
            }
            if unit.egress.present {
                selecting[e][1].push(u as u32);
            }
        }
        if !selected.is_empty() {
            active.push(u as u32);
        }
    }
    (selecting, active)
}

/// The CIDR prefixes (and exceptions) of the `active` units.
fn policy_prefixes(units: &[rules::Unit], active: &[u32]) -> BTreeSet<cidr::Prefix> {
    let mut prefixes = BTreeSet::new();
    for &u in active {
        let unit = &units[u as usize];
        for element in unit.ingress.elements.iter().chain(&unit.egress.elements) {
            for peer in &element.peers.cidrs {
                prefixes.insert((peer.cidr.addr, peer.cidr.prefix_len));
                prefixes.extend(peer.except.iter().map(|e| (e.addr, e.prefix_len)));
            }
        }
    }
    prefixes
}

/// Builds one table per distinct key; answers the tables and, per endpoint,
/// its (ingress, egress) table ids.
fn endpoint_tables(
    input: &CompileInput<'_>,
    endpoints: &[&LocalEndpoint],
    selecting: &[[Vec<u32>; 2]],
    units: &[rules::Unit],
    builder: &mut tables::TableBuilder<'_>,
) -> (Vec<DirectionTable>, Vec<[u32; 2]>) {
    let mut keyed: HashMap<tables::TableKey, u32> = HashMap::new();
    let mut built: Vec<DirectionTable> = Vec::new();
    let mut pairs: Vec<[u32; 2]> = Vec::with_capacity(endpoints.len());
    for (endpoint, selecting) in endpoints.iter().zip(selecting) {
        // Cilium enforces initializing endpoints always; here only once some
        // policy exists: without an API server (standalone mode) a pod with no
        // Pod manifest keeps `init` for its whole life, and a node without any
        // policy must not drop its traffic.
        let forced = input.enforcement == Enforcement::Always
            || (endpoint.identity == identity::INIT && !input.policies.is_empty());
        let mut pair = [0u32; 2];
        for (d, direction) in [PolicyDirection::Ingress, PolicyDirection::Egress]
            .into_iter()
            .enumerate()
        {
            // Named ports of ingress rules resolve on the endpoint itself.
            let named = direction == PolicyDirection::Ingress
                && selecting[d].iter().any(|&u| {
                    units[u as usize]
                        .ingress
                        .elements
                        .iter()
                        .any(|el| el.uses_named_ports())
                });
            let mut own_ports = if named {
                endpoint.named_ports.clone()
            } else {
                Vec::new()
            };
            own_ports.sort();
            own_ports.dedup();
            let key = tables::TableKey {
                direction,
                units: selecting[d].clone(),
                forced,
                own_ports,
            };
            pair[d] = match keyed.get(&key) {
                Some(&id) => id,
                None => {
                    built.push(builder.build(&key));
                    let id = (built.len() - 1) as u32;
                    keyed.insert(key, id);
                    id
                }
            };
        }
        pairs.push(pair);
    }
    (built, pairs)
}

/// The identities tables may name: `labels_of` (the input's and the
/// reserved ones) and the local ones; with the named ports of the pods
/// behind each.
fn universe(
    input: &CompileInput<'_>,
    labels_of: &HashMap<u32, &LabelSet>,
    local: &cidr::LocalIdentities,
) -> tables::Universe {
    let mut all: Vec<(u32, &LabelSet)> = labels_of.iter().map(|(n, l)| (*n, *l)).collect();
    all.extend(
        local
            .identities
            .iter()
            .filter(|(n, _)| !labels_of.contains_key(n))
            .map(|(n, l)| (*n, l)),
    );
    all.sort_by_key(|(n, _)| *n);
    let numbers: Vec<u32> = all.iter().map(|(n, _)| *n).collect();
    let index = LabelIndex::new(all.iter().map(|(_, l)| *l));
    let mut named_ports: Vec<Vec<NamedPort>> = vec![Vec::new(); numbers.len()];
    let mut has_pods = Bitset::empty(numbers.len());
    let mut all_named_ports: Vec<NamedPort> = Vec::new();
    let pods_by_identity = input
        .pods
        .iter()
        .map(|p| (p.identity, p))
        .chain(local.pods.iter().map(|(n, at)| (*n, &input.pods[*at])));
    for (number, pod) in pods_by_identity {
        if let Ok(at) = numbers.binary_search(&number) {
            has_pods.insert(at);
            named_ports[at].extend(pod.named_ports.iter().cloned());
        }
        all_named_ports.extend(pod.named_ports.iter().cloned());
    }
    for ports in &mut named_ports {
        ports.sort();
        ports.dedup();
    }
    all_named_ports.sort();
    all_named_ports.dedup();
    tables::Universe {
        numbers,
        index,
        named_ports,
        has_pods,
        all_named_ports,
    }
}

/// Cilium's reserved identities.
const RESERVED: [(u32, &str); 10] = [
    (identity::HOST, "host"),
    (identity::WORLD, "world"),
    (identity::UNMANAGED, "unmanaged"),
    (identity::HEALTH, "health"),
    (identity::INIT, "init"),
    (identity::REMOTE_NODE, "remote-node"),
    (identity::KUBE_APISERVER, "kube-apiserver"),
    (identity::INGRESS, "ingress"),
    (identity::WORLD_IPV4, "world-ipv4"),
    (identity::WORLD_IPV6, "world-ipv6"),
];

/// Gives the rules, DNS rules and FQDN selectors the tables reference their
/// final numbers (in the order of their internal ids, so entry order is
/// kept), and shares identical tables. Answers the state (without
/// endpoints) and, per built table, its index in `state.tables`.
fn renumber(
    config: PolicyConfig,
    mut built: Vec<DirectionTable>,
    builder: &tables::TableBuilder<'_>,
    normalized: &rules::Normalized,
) -> (PolicyState, Vec<u32>) {
    let mut rules: BTreeSet<u32> = BTreeSet::new();
    let mut dns: BTreeSet<u32> = BTreeSet::new();
    let mut fqdns: BTreeSet<u32> = BTreeSet::new();
    for table in &built {
        rules.extend(table.default_rule);
        for entry in &table.entries {
            rules.insert(entry.rule);
            dns.extend(entry.dns);
            if let Peer::Fqdn(f) = entry.peer {
                fqdns.insert(f);
            }
        }
    }
    let rank = |set: &BTreeSet<u32>| -> HashMap<u32, u32> {
        set.iter()
            .enumerate()
            .map(|(i, id)| (*id, i as u32))
            .collect()
    };
    let (rule_ids, dns_ids, fqdn_ids) = (rank(&rules), rank(&dns), rank(&fqdns));
    let mut state = PolicyState {
        config,
        rules: rules.iter().map(|id| normalized.origin(*id)).collect(),
        dns_rules: dns
            .iter()
            .map(|id| builder.dns.values[*id as usize].clone())
            .collect(),
        fqdn_selectors: fqdns
            .iter()
            .map(|id| builder.fqdns.values[*id as usize].clone())
            .collect(),
        ..PolicyState::default()
    };
    let mut shared: HashMap<DirectionTable, u32> = HashMap::new();
    let mut positions = Vec::with_capacity(built.len());
    for mut table in built.drain(..) {
        table.default_rule = table.default_rule.map(|r| rule_ids[&r]);
        for entry in &mut table.entries {
            entry.rule = rule_ids[&entry.rule];
            entry.dns = entry.dns.map(|d| dns_ids[&d]);
            if let Peer::Fqdn(f) = entry.peer {
                entry.peer = Peer::Fqdn(fqdn_ids[&f]);
            }
        }
        let next = state.tables.len() as u32;
        let at = *shared.entry(table.clone()).or_insert_with(|| {
            state.tables.push(table);
            next
        });
        positions.push(at);
    }
    (state, positions)
}
