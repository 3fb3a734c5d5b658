//! Desired state: pure functions from what the agent knows (the object
//! store, this node's CNI attachments, its configuration) to the engine's
//! node state and the identities behind it. Golden-tested (tests/golden.rs):
//! manifests in, [`Desired::dump`] out.
//!
//! Identity numbers come from the [`IdentityAllocator`], service and backend
//! numbers from [`LbIds`]; [`resolve`] first allocates what is missing (the
//! only effect), then [`compute`] is pure. Services are compiled by
//! [`crate::services`], network policy by [`crate::policy`] (with
//! `sluice-policy`).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr};

use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use sluice_api::agent::{EndpointInfo, IdentityInfo, PolicyInfo};
use sluice_policy::compile::{ClusterPod, LocalEndpoint};
use sluice_tables::{
    Cidr, Endpoint, Gateway, IpCacheEntry, LbConfig, MacAddr, NodeState, PolicyState, Service,
    Uplink,
};

use crate::attachments::{AttachmentRecord, Attachments, PodCidrs};
use crate::identity::{self, IdentitiesExhausted, IdentityAllocator};
use crate::ipam::{gateway_ipv4, GATEWAY_IPV6};
use crate::labels::{pod_identity_labels, LabelSet};
use crate::lb_ids::{LbIds, LbIdsExhausted};
use crate::objects::{Kind, Object};
use crate::policy::{self, PolicyCache, PolicyInputs, PolicySettings};
use crate::services::{self, CompileCache, Compiled, NodeView, ServiceConfig};
use crate::store::Store;

/// This node's settings that do not come from the cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeConfig {
    pub node_name: String,
    /// `io.cilium.k8s.policy.cluster`.
    pub cluster_name: String,
    /// The MAC the engine answers with for the pods' gateway.
    pub gateway_mac: MacAddr,
    /// IP MTU of pod interfaces.
    pub mtu: u32,
    /// TX/RX queues of every pod veth: the engine's worker count.
    pub veth_queues: u32,
    /// Pod CIDRs when the Node object names none (standalone mode).
    pub pod_cidrs: Vec<Cidr>,
    /// The node's uplink as the engine should use it, if any.
    pub uplink: Option<Uplink>,
    /// Service compilation settings (default algorithm, node port range).
    pub services: ServiceConfig,
    /// Load-balancing and masquerade settings as configured; the masquerade's
    /// addresses and the pod CIDRs are added per generation.
    pub lb: LbConfig,
    /// Network policy flags.
    pub policy: PolicySettings,
}

/// Everything computed for one generation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Desired {
    pub state: NodeState,
    pub pod_cidrs: PodCidrs,
    pub endpoints: Vec<EndpointInfo>,
    /// Reserved, label-derived and local (CIDR-derived) identities.
    pub identities: Vec<IdentityInfo>,
    /// Every policy object, with the local endpoints it selects and its errors.
    pub policies: Vec<PolicyInfo>,
    /// Conflicts found while computing (each names the objects involved).
    pub errors: Vec<String>,
}

/// This node's pod CIDRs: the Node object's `spec.podCIDRs` (or `podCIDR`),
/// else the configured ones.
pub fn pod_cidrs(store: &Store, config: &NodeConfig) -> PodCidrs {
    let from_node: Vec<Cidr> = match store.get(Kind::Node, "", &config.node_name) {
        Some(Object::Node(node)) => node_pod_cidrs(node),
        _ => Vec::new(),
    };
    if from_node.is_empty() {
        PodCidrs::from_list(&config.pod_cidrs)
    } else {
        PodCidrs::from_list(&from_node)
    }
}

fn node_pod_cidrs(node: &Node) -> Vec<Cidr> {
    let Some(spec) = &node.spec else {
        return Vec::new();
    };
    let list: Vec<&String> = match &spec.pod_cidrs {
        Some(list) if !list.is_empty() => list.iter().collect(),
        _ => spec.pod_cidr.iter().collect(),
    };
    list.into_iter().filter_map(|s| Cidr::parse(s)).collect()
}

fn namespace<'a>(store: &'a Store, name: &str) -> Option<&'a Namespace> {
    match store.get(Kind::Namespace, "", name) {
        Some(Object::Namespace(ns)) => Some(ns),
        _ => None,
    }
}

fn pod_labels(store: &Store, pod: &Pod, config: &NodeConfig) -> LabelSet {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    pod_identity_labels(pod, namespace(store, ns), &config.cluster_name)
}

/// The labels of a local endpoint: its pod's, or `None` while the pod is not
/// (yet) known; such endpoints carry `reserved:init`, as in Cilium.
fn attachment_labels(
    store: &Store,
    record: &AttachmentRecord,
    config: &NodeConfig,
) -> Option<LabelSet> {
    let pod_ref = record.pod.as_ref()?;
    match store.get(Kind::Pod, &pod_ref.namespace, &pod_ref.name) {
        Some(Object::Pod(pod)) => Some(pod_labels(store, pod, config)),
        _ => None,
    }
}

/// A pod's own addresses (`status.podIPs`, else `status.podIP`); none for
/// pods on the host network and finished ones.
pub fn pod_ips(pod: &Pod) -> Vec<IpAddr> {
    if pod.spec.as_ref().and_then(|s| s.host_network) == Some(true) {
        return Vec::new();
    }
    let Some(status) = pod.status.as_ref() else {
        return Vec::new();
    };
    if matches!(status.phase.as_deref(), Some("Succeeded") | Some("Failed")) {
        return Vec::new();
    }
    let mut ips: Vec<IpAddr> = status
        .pod_ips
        .iter()
        .flatten()
        .filter_map(|p| p.ip.parse().ok())
        .collect();
    if ips.is_empty() {
        ips.extend(
            status
                .pod_ip
                .as_deref()
                .and_then(|s| s.parse::<IpAddr>().ok()),
        );
    }
    ips
}

/// Pods whose addresses belong in the ipcache: those with IPs, not on the
/// host network, not finished.
fn addressed_pods(store: &Store) -> impl Iterator<Item = (&Pod, Vec<IpAddr>)> {
    store.of_kind(Kind::Pod).filter_map(|o| {
        let Object::Pod(pod) = o else { return None };
        let ips = pod_ips(pod);
        (!ips.is_empty()).then_some((pod, ips))
    })
}

/// Every label set the desired state needs a number for.
pub fn needed_label_sets(
    store: &Store,
    attachments: &Attachments,
    config: &NodeConfig,
) -> BTreeSet<LabelSet> {
    let mut sets: BTreeSet<LabelSet> = attachments
        .iter()
        .filter_map(|r| attachment_labels(store, r, config))
        .collect();
    sets.extend(addressed_pods(store).map(|(pod, _)| pod_labels(store, pod, config)));
    sets
}

/// Why a generation could not be numbered.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error(transparent)]
    Identities(#[from] IdentitiesExhausted),
    #[error(transparent)]
    LbIds(#[from] LbIdsExhausted),
}

/// The services of the store as this node serves them, unnumbered.
pub fn compile_services(store: &Store, config: &NodeConfig) -> Compiled {
    compile_services_cached(store, config, &mut CompileCache::default())
}

/// [`compile_services`], compiling again only the Services whose objects
/// changed since `cache` last saw them.
pub fn compile_services_cached(
    store: &Store,
    config: &NodeConfig,
    cache: &mut CompileCache,
) -> Compiled {
    let addrs = config.uplink.as_ref().map_or(&[][..], |u| &u.addrs[..]);
    services::compile_cached(
        store,
        NodeView {
            node_name: &config.node_name,
            addrs,
            config: &config.services,
        },
        cache,
    )
}

/// Allocates identities for new label sets and numbers for new service ports
/// and backends, releases unused ones once the store is synced (saving what
/// changed), then computes the desired state.
pub fn resolve(
    store: &Store,
    attachments: &Attachments,
    config: &NodeConfig,
    ids: &mut IdentityAllocator,
    lb_ids: &mut LbIds,
) -> Result<Desired, ResolveError> {
    let mut cache = CompileCache::default();
    let mut policy_cache = PolicyCache::default();
    resolve_cached(
        store,
        attachments,
        config,
        ids,
        lb_ids,
        &mut cache,
        &mut policy_cache,
    )
}

/// [`resolve`] with the Services compiled through `cache` and the policies
/// through `policy_cache` (the agent keeps both across generations; the
/// result is the same, except that local identity numbers stay stable).
pub fn resolve_cached(
    store: &Store,
    attachments: &Attachments,
    config: &NodeConfig,
    ids: &mut IdentityAllocator,
    lb_ids: &mut LbIds,
    cache: &mut CompileCache,
    policy_cache: &mut PolicyCache,
) -> Result<Desired, ResolveError> {
    let needed = needed_label_sets(store, attachments, config);
    // New label sets first: a relabelled pod gets a new number, rather than
    // its old number re-pointed at other labels within one generation.
    let mut changed = false;
    for set in &needed {
        changed |= ids.assign(set)?.1;
    }
    // Unused numbers are released only once the source delivered its full
    // listing: a restarted agent starts with an empty store, and releasing
    // then would renumber every identity when the objects arrive.
    if store.all_synced() {
        changed |= ids.retain_used(&needed);
    }
    if changed {
        if let Err(e) = ids.save() {
            tracing::error!("saving identities: {e:#}");
        }
    }
    let compiled = compile_services_cached(store, config, cache);
    let mut lb_changed = lb_ids.assign(&compiled.drafts)?;
    // Same rule as identities: a restarted agent's store fills up gradually.
    if store.all_synced() {
        lb_changed |= lb_ids.retain_used(&compiled.drafts);
    }
    if lb_changed {
        if let Err(e) = lb_ids.save() {
            tracing::error!("saving service ids: {e:#}");
        }
    }
    Ok(compute_with(
        store,
        attachments,
        config,
        ids,
        lb_ids,
        compiled,
        policy_cache,
    ))
}

/// The desired state; every label set must already have a number in `ids`
/// (those without one get `reserved:init`), every service port and backend
/// one in `lb_ids` (those without one are left out and reported).
pub fn compute(
    store: &Store,
    attachments: &Attachments,
    config: &NodeConfig,
    ids: &IdentityAllocator,
    lb_ids: &LbIds,
) -> Desired {
    compute_cached(
        store,
        attachments,
        config,
        ids,
        lb_ids,
        &mut PolicyCache::default(),
    )
}

/// [`compute`] with the policies compiled through `policy_cache`.
pub fn compute_cached(
    store: &Store,
    attachments: &Attachments,
    config: &NodeConfig,
    ids: &IdentityAllocator,
    lb_ids: &LbIds,
    policy_cache: &mut PolicyCache,
) -> Desired {
    let compiled = compile_services(store, config);
    compute_with(
        store,
        attachments,
        config,
        ids,
        lb_ids,
        compiled,
        policy_cache,
    )
}

/// The node's LB settings for this generation: the configured ones, with the
/// uplink's addresses (one per family) as masquerade sources and the pod
/// CIDRs always excluded from masquerading.
fn lb_config(config: &NodeConfig, cidrs: &PodCidrs) -> LbConfig {
    let mut lb = config.lb.clone();
    if let Some(m) = lb.masquerade.as_mut() {
        let addrs = config.uplink.as_ref().map_or(&[][..], |u| &u.addrs[..]);
        m.addrs = addrs
            .iter()
            .find(|a| a.is_ipv4())
            .into_iter()
            .chain(addrs.iter().find(|a| a.is_ipv6()))
            .copied()
            .collect();
        for cidr in cidrs.list() {
            if !m.non_masquerade_cidrs.contains(&cidr) {
                m.non_masquerade_cidrs.push(cidr);
            }
        }
    }
    lb
}

/// Every pod CIDR of the cluster: this node's and every Node object's.
fn cluster_pod_cidrs(store: &Store, cidrs: &PodCidrs) -> Vec<Cidr> {
    let mut out = cidrs.list();
    for object in store.of_kind(Kind::Node) {
        let Object::Node(node) = object else { continue };
        for cidr in node_pod_cidrs(node) {
            if !out.contains(&cidr) {
                out.push(cidr);
            }
        }
    }
    out
}

fn compute_with(
    store: &Store,
    attachments: &Attachments,
    config: &NodeConfig,
    ids: &IdentityAllocator,
    lb_ids: &LbIds,
    compiled: Compiled,
    policy_cache: &mut PolicyCache,
) -> Desired {
    let cidrs = pod_cidrs(store, config);
    let mut errors = Vec::new();
    let mut endpoints = Vec::new();
    let mut infos = Vec::new();
    // ip -> (identity, owner) ; local endpoints first, they win.
    let mut ipcache: BTreeMap<IpAddr, (u32, String)> = BTreeMap::new();
    let mut usage: BTreeMap<u32, (usize, usize)> = BTreeMap::new();
    // What the policy compiler reads: this node's endpoints, and every pod
    // (by namespace/name) with the addresses it owns in the ipcache.
    let mut local_endpoints: Vec<LocalEndpoint> = Vec::new();
    let mut cluster_pods: BTreeMap<String, ClusterPod> = BTreeMap::new();

    for record in attachments.iter() {
        let pod =
            record
                .pod
                .as_ref()
                .and_then(|p| match store.get(Kind::Pod, &p.namespace, &p.name) {
                    Some(Object::Pod(pod)) => Some(pod),
                    _ => None,
                });
        let labels = pod.map(|pod| pod_labels(store, pod, config));
        let identity = labels
            .as_ref()
            .and_then(|l| ids.get(l))
            .unwrap_or(identity::INIT);
        let name = record.name();
        let registered = record.registered.as_ref();
        if let Some(reg) = registered {
            endpoints.push(Endpoint {
                name: name.clone(),
                ifindex: reg.host_ifindex,
                ifname: reg.host_ifname.clone(),
                mac: reg.container_mac,
                ipv4: record.ipv4,
                ipv6: record.ipv6,
                identity,
            });
            usage.entry(identity).or_default().0 += 1;
            let ips: Vec<IpAddr> = record
                .ipv4
                .map(IpAddr::V4)
                .into_iter()
                .chain(record.ipv6.map(IpAddr::V6))
                .collect();
            for ip in &ips {
                ipcache.insert(*ip, (identity, name.clone()));
            }
            let named_ports = pod.map(policy::named_ports).unwrap_or_default();
            local_endpoints.push(LocalEndpoint {
                name: name.clone(),
                identity,
                labels: labels
                    .clone()
                    .unwrap_or_else(|| LabelSet::from(["reserved:init".to_string()])),
                named_ports: named_ports.clone(),
            });
            if let (Some(pod_ref), Some(labels)) = (&record.pod, &labels) {
                cluster_pods.insert(
                    name.clone(),
                    ClusterPod {
                        namespace: pod_ref.namespace.clone(),
                        name: pod_ref.name.clone(),
                        identity,
                        labels: labels.clone(),
                        ips,
                        named_ports,
                    },
                );
            }
        }
        infos.push(EndpointInfo {
            name,
            attachment: record.attachment.clone(),
            netns: record.netns.clone(),
            host_ifname: registered.map(|r| r.host_ifname.clone()),
            host_ifindex: registered.map(|r| r.host_ifindex),
            ipv4: record.ipv4.map(IpAddr::V4),
            ipv6: record.ipv6.map(IpAddr::V6),
            identity,
            labels: labels
                .map(|l| l.into_iter().collect())
                .unwrap_or_else(|| vec!["reserved:init".into()]),
            state: if registered.is_some() {
                "ready".into()
            } else {
                "allocated".into()
            },
        });
    }

    for (pod, ips) in addressed_pods(store) {
        let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
        let pod_name = pod.metadata.name.as_deref().unwrap_or_default();
        let key = format!("{namespace}/{pod_name}");
        let labels = pod_labels(store, pod, config);
        let identity = ids.get(&labels).unwrap_or(identity::INIT);
        let mut owned = Vec::new();
        for ip in ips {
            match ipcache.get(&ip) {
                Some((_, owner)) if owner == &key => owned.push(ip),
                Some((_, owner)) => errors.push(format!(
                    "Pod {key}: address {ip} is already used by {owner}; ignored"
                )),
                None => {
                    ipcache.insert(ip, (identity, key.clone()));
                    owned.push(ip);
                }
            }
        }
        let entry = cluster_pods.entry(key).or_insert_with(|| ClusterPod {
            namespace: namespace.to_string(),
            name: pod_name.to_string(),
            identity,
            labels,
            ips: Vec::new(),
            named_ports: policy::named_ports(pod),
        });
        for ip in owned {
            if !entry.ips.contains(&ip) {
                entry.ips.push(ip);
            }
        }
    }

    let mut node_addrs: Vec<(IpAddr, u32)> = Vec::new();
    for object in store.of_kind(Kind::Node) {
        let Object::Node(node) = object else { continue };
        let name = node.metadata.name.clone().unwrap_or_default();
        let identity = if name == config.node_name {
            identity::HOST
        } else {
            identity::REMOTE_NODE
        };
        let addresses = node
            .status
            .iter()
            .flat_map(|s| s.addresses.iter().flatten());
        for addr in addresses.filter(|a| a.type_ == "InternalIP") {
            let Ok(ip) = addr.address.parse::<IpAddr>() else {
                errors.push(format!(
                    "Node {name}: status.addresses: {:?} is not an IP address",
                    addr.address
                ));
                continue;
            };
            if let Some((_, owner)) = ipcache.get(&ip) {
                errors.push(format!(
                    "Node {name}: address {ip} is already used by {owner}; ignored"
                ));
                continue;
            }
            ipcache.insert(ip, (identity, format!("node/{name}")));
            node_addrs.push((ip, identity));
        }
    }

    let mut identity_labels: Vec<(u32, LabelSet)> = identity::RESERVED
        .iter()
        .map(|(id, name)| (*id, LabelSet::from([format!("reserved:{name}")])))
        .collect();
    let allocated = ids.all();
    identity_labels.extend(
        allocated
            .iter()
            .map(|(id, labels)| (*id, labels.iter().cloned().collect())),
    );
    let policy = policy::compile(
        store,
        PolicyInputs {
            endpoints: local_endpoints,
            identities: identity_labels,
            pods: cluster_pods.into_values().collect(),
            nodes: node_addrs,
            services: policy::cluster_services(store, &compiled.drafts),
            pod_cidrs: cluster_pod_cidrs(store, &cidrs),
        },
        &config.policy,
        policy_cache,
    );
    let ipcache = policy::merge_ipcache(
        ipcache
            .into_iter()
            .map(|(ip, (identity, _))| IpCacheEntry {
                ip,
                prefix_len: None,
                identity,
            })
            .collect(),
        &policy.ipcache,
    );

    for entry in &ipcache {
        usage.entry(entry.identity).or_default().1 += 1;
    }
    let info = |id: u32, labels: Vec<String>, reserved: bool| IdentityInfo {
        id,
        labels,
        reserved,
        endpoints: usage.get(&id).map_or(0, |u| u.0),
        ips: usage.get(&id).map_or(0, |u| u.1),
    };
    let mut identities: Vec<IdentityInfo> = identity::RESERVED
        .iter()
        .map(|(id, name)| info(*id, vec![format!("reserved:{name}")], true))
        .collect();
    identities.extend(
        allocated
            .into_iter()
            .map(|(id, labels)| info(id, labels, false)),
    );
    identities.extend(
        policy
            .local_identities
            .into_iter()
            .map(|(id, labels)| info(id, labels, false)),
    );

    let gateway = Gateway {
        mac: config.gateway_mac,
        ipv4: cidrs
            .ipv4
            .as_ref()
            .and_then(gateway_ipv4)
            .unwrap_or(Ipv4Addr::UNSPECIFIED),
        ipv6: GATEWAY_IPV6,
    };
    let mut uplink = config.uplink.clone();
    if let Some(u) = uplink.as_mut() {
        u.pod_cidrs = cidrs.list();
    }
    errors.extend(compiled.errors);
    errors.extend(policy.errors);
    let services: Vec<Service> = lb_ids.number(compiled.drafts, &mut errors);
    let lb = lb_config(config, &cidrs);
    Desired {
        state: NodeState {
            gateway,
            endpoints,
            mtu: config.mtu,
            uplink,
            ipcache,
            services,
            lb,
            policy: policy.state,
        },
        pod_cidrs: cidrs,
        endpoints: infos,
        identities,
        policies: policy.policies,
        errors,
    }
}

impl Desired {
    /// A stable text form for golden tests and `sluice-agent --dump`.
    pub fn dump(&self) -> String {
        let mut out = String::new();
        let s = &self.state;
        let cidrs: Vec<String> = self
            .pod_cidrs
            .list()
            .iter()
            .map(|c| c.to_string())
            .collect();
        let _ = writeln!(out, "pod-cidrs {}", cidrs.join(" "));
        let _ = writeln!(
            out,
            "gateway mac={} ipv4={} ipv6={}",
            s.gateway.mac, s.gateway.ipv4, s.gateway.ipv6
        );
        let _ = writeln!(out, "mtu {}", s.mtu);
        if let Some(u) = &s.uplink {
            let c: Vec<String> = u.pod_cidrs.iter().map(|c| c.to_string()).collect();
            let _ = writeln!(
                out,
                "uplink {} ifindex={} cidrs={}",
                u.ifname,
                u.ifindex,
                c.join(",")
            );
        }
        for id in self
            .identities
            .iter()
            .filter(|i| !i.reserved || i.endpoints + i.ips > 0)
        {
            let _ = writeln!(
                out,
                "identity {} endpoints={} ips={} {}",
                id.id,
                id.endpoints,
                id.ips,
                id.labels.join(" ")
            );
        }
        for e in &self.endpoints {
            let opt = |ip: Option<IpAddr>| ip.map_or("-".to_string(), |ip| ip.to_string());
            let _ = writeln!(
                out,
                "endpoint {} {} ipv4={} ipv6={} identity={} host-if={}",
                e.name,
                e.state,
                opt(e.ipv4),
                opt(e.ipv6),
                e.identity,
                e.host_ifname.as_deref().unwrap_or("-")
            );
        }
        for entry in &s.ipcache {
            match entry.prefix_len {
                Some(len) => writeln!(out, "ipcache {}/{len} {}", entry.ip, entry.identity),
                None => writeln!(out, "ipcache {} {}", entry.ip, entry.identity),
            }
            .unwrap_or(());
        }
        if !s.services.is_empty() || s.lb != LbConfig::default() {
            dump_lb(&mut out, &s.lb);
        }
        for service in &s.services {
            dump_service(&mut out, service);
        }
        for p in &self.policies {
            let _ = writeln!(
                out,
                "policy {} rules={} endpoints={} errors={}",
                policy::policy_label(&p.kind, &p.namespace, &p.name),
                p.rules,
                if p.endpoints.is_empty() {
                    "-".to_string()
                } else {
                    p.endpoints.join(",")
                },
                p.errors.len()
            );
        }
        if s.policy != PolicyState::default() {
            out.push_str(&policy::dump_state(&s.policy));
        }
        for e in &self.errors {
            let _ = writeln!(out, "error {e}");
        }
        out
    }
}

fn dump_lb(out: &mut String, lb: &LbConfig) {
    let _ = write!(
        out,
        "lb maglev-table={} seed={:#x} no-backend={:?}",
        lb.maglev_table_size, lb.maglev_seed, lb.no_backend
    );
    match &lb.masquerade {
        None => {
            let _ = writeln!(out, " masquerade=off");
        }
        Some(m) => {
            let addrs: Vec<String> = m.addrs.iter().map(|a| a.to_string()).collect();
            let except: Vec<String> = m
                .non_masquerade_cidrs
                .iter()
                .map(|c| c.to_string())
                .collect();
            let _ = writeln!(
                out,
                " masquerade={} ports={}-{} except={}",
                addrs.join(","),
                m.port_min,
                m.port_max,
                except.join(",")
            );
        }
    }
}

fn dump_service(out: &mut String, s: &Service) {
    let port = if s.port_name.is_empty() {
        "-"
    } else {
        s.port_name.as_str()
    };
    let _ = write!(
        out,
        "service {} {} port={} {:?} {:?}",
        s.id, s.name, port, s.protocol, s.algorithm
    );
    if let Some(t) = s.affinity_timeout_s {
        let _ = write!(out, " affinity={t}s");
    }
    if s.external_traffic_local {
        let _ = write!(out, " etp=Local");
    }
    if s.internal_traffic_local {
        let _ = write!(out, " itp=Local");
    }
    if !s.source_ranges.is_empty() {
        let r: Vec<String> = s.source_ranges.iter().map(|c| c.to_string()).collect();
        let _ = write!(out, " source-ranges={}", r.join(","));
    }
    let _ = writeln!(out);
    for f in &s.frontends {
        let _ = writeln!(
            out,
            "  frontend {} {}",
            services::kind_name(f.kind),
            std::net::SocketAddr::new(f.addr, f.port)
        );
    }
    for b in &s.backends {
        let _ = writeln!(
            out,
            "  backend {} {} {:?}{}",
            b.id,
            std::net::SocketAddr::new(b.addr, b.port),
            b.state,
            if b.local { " local" } else { "" }
        );
    }
}
