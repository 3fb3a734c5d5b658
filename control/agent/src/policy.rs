//! Network policy in the agent: the store's NetworkPolicies,
//! CiliumNetworkPolicies and CiliumClusterwideNetworkPolicies parsed with
//! `sluice-policy` (each object once for as long as the store holds the same
//! shared value), then compiled with what the desired state knows of this
//! node and the cluster ([`PolicyInputs`]). The compiled tables go into the
//! node state, the compiler's ipcache entries over the plain ones.
//!
//! A policy that fails validation is left out whole and reported (never
//! half-applied). Unlike a bad manifest edit, its previous good version is
//! not kept: the object in the cluster is what the user asked for, and
//! enforcing an older version of it would enforce rules nobody can see any
//! more; leaving it out and saying so is the state a reader can predict.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;

use foldhash::HashMap;
use k8s_openapi::api::core::v1::Pod;
use sluice_api::agent::PolicyInfo;
use sluice_policy::compile::{
    CidrMatch, ClusterPod, ClusterService, CompileInput, Compiled, LabelSet, LocalEndpoint,
    NamedPort,
};
use sluice_policy::model::{Policy, PolicyKind};
use sluice_policy::selector::{subject_selector, Scope, Selector};
use sluice_tables::{Cidr, Enforcement, IpCacheEntry, PolicyState};

use crate::lb_ids::ServiceDraft;
use crate::objects::{Kind, Object, ObjectKey};
use crate::store::Store;

/// The node's policy flags (`--enable-policy`, `--allow-localhost`,
/// `--policy-cidr-match-mode`, `--tofqdns-*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PolicySettings {
    pub enforcement: Enforcement,
    /// Host-originated traffic to local endpoints passes without policy.
    pub allow_localhost: bool,
    /// Which cluster addresses CIDR rules match besides world addresses.
    pub cidr_match: CidrMatch,
    pub fqdn_max_ips_per_name: u32,
    pub fqdn_min_ttl_seconds: u32,
}

impl Default for PolicySettings {
    /// Cilium's defaults, except that CIDR rules also match pod addresses
    /// (the upstream NetworkPolicy ipBlock cases need it).
    fn default() -> PolicySettings {
        PolicySettings {
            enforcement: Enforcement::Default,
            allow_localhost: true,
            cidr_match: CidrMatch {
                nodes: false,
                pods: true,
            },
            fqdn_max_ips_per_name: 1000,
            fqdn_min_ttl_seconds: 0,
        }
    }
}

/// The kinds that hold policy, in store order.
pub const POLICY_KINDS: [Kind; 3] = [
    Kind::NetworkPolicy,
    Kind::CiliumNetworkPolicy,
    Kind::CiliumClusterwideNetworkPolicy,
];

/// One policy object's parse: the policy, or every validation error (each
/// names the object and the field).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParsedPolicy {
    pub kind: Kind,
    pub namespace: String,
    pub name: String,
    pub result: Result<Policy, Vec<String>>,
}

/// Parses one store object of a policy kind; `None` for other kinds.
pub fn parse_object(object: &Object) -> Option<ParsedPolicy> {
    let key = object.key();
    let errors = |errors: Vec<sluice_policy::parse::PolicyError>| {
        errors.iter().map(|e| e.to_string()).collect::<Vec<_>>()
    };
    let result = match object {
        Object::NetworkPolicy(np) => sluice_policy::parse::from_network_policy(np).map_err(errors),
        Object::CiliumNetworkPolicy(p) | Object::CiliumClusterwideNetworkPolicy(p) => {
            let kind = if key.kind == Kind::CiliumNetworkPolicy {
                PolicyKind::CiliumNetworkPolicy
            } else {
                PolicyKind::CiliumClusterwideNetworkPolicy
            };
            sluice_policy::parse::from_cilium(
                kind,
                &key.namespace,
                &key.name,
                p.rest.get("spec"),
                p.rest.get("specs"),
            )
            .map_err(errors)
        }
        _ => return None,
    };
    Some(ParsedPolicy {
        kind: key.kind,
        namespace: key.namespace,
        name: key.name,
        result,
    })
}

/// What the compiler reads besides the policies, owned, so that a
/// generation whose inputs and policies are unchanged reuses the last
/// compilation.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PolicyInputs {
    pub endpoints: Vec<LocalEndpoint>,
    pub identities: Vec<(u32, LabelSet)>,
    pub pods: Vec<ClusterPod>,
    pub nodes: Vec<(IpAddr, u32)>,
    pub services: Vec<ClusterService>,
    pub pod_cidrs: Vec<Cidr>,
}

#[derive(Debug)]
struct CachedParse {
    object: Arc<Object>,
    parsed: ParsedPolicy,
}

#[derive(Debug)]
struct LastCompile {
    inputs: PolicyInputs,
    settings: PolicySettings,
    policies_version: u64,
    /// What every generation with these inputs gets.
    outcome: PolicyOutcome,
}

/// What the agent keeps across generations: each policy object's parse
/// (reused while the store holds the same shared object), the local
/// identity numbers the compiler gave out (so an unchanged CIDR keeps its
/// number), and the last compilation (reused when nothing it read changed).
#[derive(Debug, Default)]
pub struct PolicyCache {
    parsed: HashMap<ObjectKey, CachedParse>,
    /// The policy objects in store order.
    order: Vec<ObjectKey>,
    /// The valid policies in store order, rebuilt when an object changed.
    policies: Vec<Policy>,
    /// Bumped whenever a policy object was added, changed or removed.
    policies_version: u64,
    previous_local: BTreeMap<String, u32>,
    last: Option<LastCompile>,
    parses: u64,
    compilations: u64,
}

impl PolicyCache {
    /// A cache that parses and compiles everything again but gives local
    /// identities the numbers this one would (what a recompute from scratch
    /// of the next generation looks like; tests compare the two).
    pub fn numbering_only(&self) -> PolicyCache {
        PolicyCache {
            previous_local: self.previous_local.clone(),
            ..PolicyCache::default()
        }
    }

    /// Objects parsed so far (tests check that unchanged objects are not
    /// parsed again).
    pub fn parses(&self) -> u64 {
        self.parses
    }

    /// Compilations run so far (a generation with unchanged inputs runs none).
    pub fn compilations(&self) -> u64 {
        self.compilations
    }

    /// Brings the parse cache up to date with `store`: parses the objects
    /// that are new or replaced, forgets removed ones. Copies nothing while
    /// every object is the one parsed last time.
    fn refresh(&mut self, store: &Store) {
        let mut changed = self.policies_version == 0;
        let mut present = 0;
        for kind in POLICY_KINDS {
            for (key, shared) in store.of_kind_shared(kind) {
                present += 1;
                let hit = self
                    .parsed
                    .get(key)
                    .is_some_and(|c| Arc::ptr_eq(&c.object, shared));
                if hit {
                    continue;
                }
                let Some(parsed) = parse_object(shared) else {
                    continue;
                };
                self.parses += 1;
                changed = true;
                self.parsed.insert(
                    key.clone(),
                    CachedParse {
                        object: shared.clone(),
                        parsed,
                    },
                );
            }
        }
        // Every object of the store is in `parsed` now; more entries means
        // some were removed.
        changed |= self.parsed.len() != present;
        if !changed {
            return;
        }
        self.order = POLICY_KINDS
            .iter()
            .flat_map(|&kind| store.of_kind_shared(kind).map(|(key, _)| key.clone()))
            .collect();
        let keep: BTreeSet<&ObjectKey> = self.order.iter().collect();
        self.parsed.retain(|key, _| keep.contains(key));
        self.policies = self
            .order
            .iter()
            .filter_map(|key| self.parsed[key].parsed.result.as_ref().ok().cloned())
            .collect();
        self.policies_version += 1;
    }

    /// Every policy object's parse, in store order.
    fn in_order(&self) -> impl Iterator<Item = &ParsedPolicy> {
        self.order.iter().map(|key| &self.parsed[key].parsed)
    }
}

/// The compiled policy of one generation, ready for the desired state.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PolicyOutcome {
    pub state: PolicyState,
    /// Prefix entries and pod/node addresses with local identities.
    pub ipcache: Vec<IpCacheEntry>,
    /// Local (CIDR-derived) identities: number and labels, by number.
    pub local_identities: Vec<(u32, Vec<String>)>,
    /// Every policy object, with its errors.
    pub policies: Vec<PolicyInfo>,
    /// Validation and compilation errors, each naming the object and field.
    pub errors: Vec<String>,
}

/// The compiler's text form of the tables (golden tests); the ipcache and
/// identities are in the desired state's own dump.
pub fn dump_state(state: &PolicyState) -> String {
    Compiled {
        state: state.clone(),
        ..Compiled::default()
    }
    .dump()
}

/// The labels of a local identity from the compiler's key
/// ([`sluice_policy::compile::labels_key`]: sorted, joined with `;`).
fn labels_of_key(key: &str) -> Vec<String> {
    key.split(';')
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

/// Parses (through `cache`) and compiles every policy of `store`; a
/// generation whose policies, inputs and settings are those of the last
/// compilation gets its result again.
pub fn compile(
    store: &Store,
    inputs: PolicyInputs,
    settings: &PolicySettings,
    cache: &mut PolicyCache,
) -> PolicyOutcome {
    cache.refresh(store);
    let reusable = cache.last.as_ref().is_some_and(|last| {
        last.policies_version == cache.policies_version
            && last.settings == *settings
            && last.inputs == inputs
    });
    if let (true, Some(last)) = (reusable, cache.last.as_ref()) {
        return last.outcome.clone();
    }
    let input = CompileInput {
        policies: &cache.policies,
        enforcement: settings.enforcement,
        allow_localhost: settings.allow_localhost,
        cidr_match: settings.cidr_match,
        endpoints: &inputs.endpoints,
        identities: &inputs.identities,
        pods: &inputs.pods,
        nodes: &inputs.nodes,
        services: &inputs.services,
        pod_cidrs: &inputs.pod_cidrs,
        previous_local: &cache.previous_local,
    };
    let mut compiled = sluice_policy::compile::compile(&input);
    cache.compilations += 1;
    let config = &mut compiled.state.config;
    config.enforcement = settings.enforcement;
    config.allow_localhost = settings.allow_localhost;
    config.fqdn_max_ips_per_name = settings.fqdn_max_ips_per_name;
    config.fqdn_min_ttl_seconds = settings.fqdn_min_ttl_seconds;

    let mut errors: Vec<String> = cache
        .in_order()
        .filter_map(|p| p.result.as_ref().err())
        .flatten()
        .cloned()
        .collect();
    errors.extend(compiled.errors.iter().cloned());
    let policies = cache
        .in_order()
        .map(|p| policy_info(p, &inputs.endpoints, &compiled.errors))
        .collect();
    let mut local_identities: Vec<(u32, Vec<String>)> = compiled
        .local_identities
        .iter()
        .map(|(key, id)| (*id, labels_of_key(key)))
        .collect();
    local_identities.sort();
    cache.previous_local = compiled.local_identities;
    let outcome = PolicyOutcome {
        state: compiled.state,
        ipcache: compiled.ipcache,
        local_identities,
        policies,
        errors,
    };
    cache.last = Some(LastCompile {
        inputs,
        settings: *settings,
        policies_version: cache.policies_version,
        outcome: outcome.clone(),
    });
    outcome
}

/// `Kind namespace/name` (`Kind name` for a clusterwide policy): how errors
/// and listings name a policy object.
pub fn policy_label(kind: &str, namespace: &str, name: &str) -> String {
    if namespace.is_empty() {
        format!("{kind} {name}")
    } else {
        format!("{kind} {namespace}/{name}")
    }
}

fn policy_info(
    parsed: &ParsedPolicy,
    endpoints: &[LocalEndpoint],
    compile_errors: &[String],
) -> PolicyInfo {
    let label = policy_label(parsed.kind.name(), &parsed.namespace, &parsed.name);
    let (rules, selected, mut errors) = match &parsed.result {
        Ok(policy) => (
            policy.rules.len(),
            selected_endpoints(policy, endpoints),
            Vec::new(),
        ),
        Err(errors) => (0, Vec::new(), errors.clone()),
    };
    // The compiler names the policy in each error; attribute them by that.
    errors.extend(
        compile_errors
            .iter()
            .filter(|e| names_policy(e, &label))
            .cloned(),
    );
    PolicyInfo {
        kind: parsed.kind.name().to_string(),
        namespace: parsed.namespace.clone(),
        name: parsed.name.clone(),
        rules,
        endpoints: selected,
        errors,
    }
}

/// The local endpoints some rule of `policy` selects (its endpointSelector
/// scoped as the compiler scopes it), each selector built once.
fn selected_endpoints(policy: &Policy, endpoints: &[LocalEndpoint]) -> Vec<String> {
    let scope = Scope::of(policy);
    let selectors: Vec<Selector> = policy
        .rules
        .iter()
        .filter_map(|(_, rule)| rule.endpoint_selector.as_ref())
        .filter_map(|s| Selector::from_model(s).ok())
        .map(|s| subject_selector(&s, scope))
        .collect();
    endpoints
        .iter()
        .filter(|e| selectors.iter().any(|s| s.matches(&e.labels)))
        .map(|e| e.name.clone())
        .collect()
}

/// Whether an error message is about the policy `label` (and not about
/// another whose name merely starts the same).
fn names_policy(error: &str, label: &str) -> bool {
    error.match_indices(label).any(|(at, _)| {
        let rest = &error[at + label.len()..];
        rest.is_empty() || rest.starts_with(':') || rest.starts_with(' ')
    })
}

/// The named container ports of a pod (`containers[].ports[]` with a name).
pub fn named_ports(pod: &Pod) -> Vec<NamedPort> {
    let mut out: Vec<NamedPort> = pod
        .spec
        .iter()
        .flat_map(|s| s.containers.iter())
        .flat_map(|c| c.ports.iter().flatten())
        .filter_map(|p| {
            let name = p.name.clone().filter(|n| !n.is_empty())?;
            let protocol = match p.protocol.as_deref().unwrap_or("TCP") {
                "TCP" => 6,
                "UDP" => 17,
                "SCTP" => 132,
                _ => return None,
            };
            Some(NamedPort {
                name,
                protocol,
                port: u16::try_from(p.container_port).ok()?,
            })
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Services as the policy compiler sees them (`toServices`): each Service
/// with its labels, selector and the backend addresses this generation balances
/// to (from its EndpointSlices, or in standalone mode from its Pods).
pub fn cluster_services(store: &Store, drafts: &[ServiceDraft]) -> Vec<ClusterService> {
    let mut backends: BTreeMap<&str, BTreeSet<IpAddr>> = BTreeMap::new();
    for draft in drafts.iter().filter(|d| !d.key.starts_with("hostport ")) {
        backends
            .entry(draft.service.name.as_str())
            .or_default()
            .extend(draft.service.backends.iter().map(|b| b.addr));
    }
    store
        .of_kind(Kind::Service)
        .filter_map(|o| {
            let Object::Service(svc) = o else { return None };
            let namespace = svc
                .metadata
                .namespace
                .clone()
                .unwrap_or_else(|| "default".into());
            let name = svc.metadata.name.clone().unwrap_or_default();
            let key = format!("{namespace}/{name}");
            Some(ClusterService {
                labels: svc.metadata.labels.clone().unwrap_or_default(),
                selector: svc.spec.as_ref().and_then(|s| s.selector.clone()),
                backend_ips: backends
                    .get(key.as_str())
                    .map(|b| b.iter().copied().collect())
                    .unwrap_or_default(),
                namespace,
                name,
            })
        })
        .collect()
}

/// The plain ipcache with the compiler's entries over it: a compiled
/// full-length entry for an address (a pod or node address inside a policy
/// CIDR, with its local identity) replaces the plain one.
pub fn merge_ipcache(plain: Vec<IpCacheEntry>, compiled: &[IpCacheEntry]) -> Vec<IpCacheEntry> {
    let full = |e: &IpCacheEntry| {
        let max = if e.ip.is_ipv4() { 32 } else { 128 };
        e.prefix_len.is_none_or(|l| l == max)
    };
    let replaced: BTreeSet<IpAddr> = compiled.iter().filter(|e| full(e)).map(|e| e.ip).collect();
    let mut out: Vec<IpCacheEntry> = plain
        .into_iter()
        .filter(|e| !replaced.contains(&e.ip))
        .collect();
    out.extend(compiled.iter().cloned());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(ip: &str, prefix_len: Option<u8>, identity: u32) -> IpCacheEntry {
        IpCacheEntry {
            ip: ip.parse().unwrap(),
            prefix_len,
            identity,
        }
    }

    #[test]
    fn compiled_full_length_entries_replace_plain_ones() {
        let plain = vec![
            entry("10.0.0.1", None, 256),
            entry("10.0.0.2", None, 257),
            entry("fd00::1", None, 256),
        ];
        let compiled = [
            entry("10.0.0.1", Some(32), 16777217),
            entry("10.0.0.0", Some(24), 16777216),
            entry("fd00::1", None, 16777218),
        ];
        let got = merge_ipcache(plain, &compiled);
        assert_eq!(
            got,
            [
                entry("10.0.0.2", None, 257),
                entry("10.0.0.1", Some(32), 16777217),
                entry("10.0.0.0", Some(24), 16777216),
                entry("fd00::1", None, 16777218),
            ]
        );
    }

    #[test]
    fn errors_are_attributed_to_the_policy_they_name() {
        let label = "CiliumNetworkPolicy default/web";
        assert!(names_policy(
            "CiliumNetworkPolicy default/web: spec.ingress[0]: x",
            label
        ));
        assert!(!names_policy(
            "CiliumNetworkPolicy default/web-2: spec.ingress[0]: x",
            label
        ));
        assert_eq!(
            policy_label("CiliumClusterwideNetworkPolicy", "", "all"),
            "CiliumClusterwideNetworkPolicy all"
        );
    }

    #[test]
    fn named_ports_come_from_every_container() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "a"},
            "spec": {"containers": [
                {"name": "c1", "ports": [
                    {"name": "http", "containerPort": 8080},
                    {"containerPort": 9000},
                    {"name": "dns", "containerPort": 53, "protocol": "UDP"}]},
                {"name": "c2", "ports": [{"name": "sctp", "containerPort": 7, "protocol": "SCTP"}]}
            ]}
        }))
        .unwrap();
        let got: Vec<(String, u8, u16)> = named_ports(&pod)
            .into_iter()
            .map(|p| (p.name, p.protocol, p.port))
            .collect();
        assert_eq!(
            got,
            [
                ("dns".to_string(), 17, 53),
                ("http".to_string(), 6, 8080),
                ("sctp".to_string(), 132, 7)
            ]
        );
    }
}
