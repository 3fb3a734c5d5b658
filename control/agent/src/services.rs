//! The service compiler: Kubernetes Services, EndpointSlices and Pods to the
//! engine's [`Service`] values (one per service port and protocol), as
//! kube-proxy and Cilium's kube-proxy replacement read them. Pure; numbering
//! is [`crate::lb_ids`]'s job, so every id here is 0.
//!
//! * Frontends: every clusterIP, the NodePort on every node address of the
//!   service's families, status.loadBalancer.ingress[].ip, spec.externalIPs.
//! * Backends: the EndpointSlices labelled `kubernetes.io/service-name`, or,
//!   when a Service with a selector has none at all (standalone: no
//!   EndpointSlice controller), the Pods it selects, read as that controller
//!   would read them.
//! * hostPorts of the Pods on this node.
//!
//! A bad field is reported naming the object and field; a bad service is
//! skipped and the others are compiled. Two services on one frontend would make
//! the engine refuse the whole state, so the later one loses that frontend.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;

use foldhash::{HashMap, HashMapExt};
use k8s_openapi::api::core::v1::{Pod, Service as K8sService, ServicePort};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use sluice_tables::{
    Backend, BackendState, Cidr, Frontend, FrontendKind, L4Protocol, LbAlgorithm, Service,
};

use crate::lb_ids::ServiceDraft;
use crate::objects::{Kind, Object, ObjectKey};
use crate::store::Store;

/// Services with this label belong to another proxy (kube-proxy skips them too).
pub const SERVICE_PROXY_NAME_LABEL: &str = "service.kubernetes.io/service-proxy-name";
/// The label that ties an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// Cilium's per-service algorithm override: `maglev` or `random`.
pub const LB_ALGORITHM_ANNOTATION: &str = "service.cilium.io/lb-algorithm";
/// sessionAffinityConfig.clientIP.timeoutSeconds when absent (3 hours).
pub const DEFAULT_AFFINITY_TIMEOUT_S: u32 = 10800;
/// The largest timeout Kubernetes accepts (one day).
pub const MAX_AFFINITY_TIMEOUT_S: u32 = 86400;

/// The node's service settings that do not come from the cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceConfig {
    /// Algorithm of services without the annotation (`--lb-algorithm`).
    pub default_algorithm: LbAlgorithm,
    /// `--node-port-range`, inclusive.
    pub node_port_min: u16,
    pub node_port_max: u16,
}

impl Default for ServiceConfig {
    fn default() -> ServiceConfig {
        ServiceConfig {
            default_algorithm: LbAlgorithm::Random,
            node_port_min: 30000,
            node_port_max: 32767,
        }
    }
}

/// What the compiler needs to know about this node.
#[derive(Clone, Copy, Debug)]
pub struct NodeView<'a> {
    pub node_name: &'a str,
    /// The uplink's addresses: where NodePorts and hostPorts are served.
    pub addrs: &'a [IpAddr],
    pub config: &'a ServiceConfig,
}

/// The compiler's output: service ports without numbers, and what was wrong.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Compiled {
    pub drafts: Vec<ServiceDraft>,
    pub errors: Vec<String>,
}

fn same_family(a: IpAddr, b: IpAddr) -> bool {
    a.is_ipv4() == b.is_ipv4()
}

fn protocol_of(text: Option<&str>) -> Option<L4Protocol> {
    match text.unwrap_or("TCP") {
        "TCP" => Some(L4Protocol::Tcp),
        "UDP" => Some(L4Protocol::Udp),
        "SCTP" => Some(L4Protocol::Sctp),
        _ => None,
    }
}

fn protocol_name(p: L4Protocol) -> &'static str {
    match p {
        L4Protocol::Tcp => "TCP",
        L4Protocol::Udp => "UDP",
        L4Protocol::Sctp => "SCTP",
    }
}

fn port_u16(value: i32) -> Option<u16> {
    u16::try_from(value).ok().filter(|p| *p != 0)
}

/// Objects the compiler reads, indexed once per compilation; the store's
/// shared values, so the cache can tell whether they are the same as before.
struct Index<'a> {
    /// (namespace, service name) -> its EndpointSlices.
    slices: HashMap<(&'a str, &'a str), Vec<&'a Arc<Object>>>,
    /// namespace -> its Pods (for selector-derived endpoints).
    pods: HashMap<&'a str, Vec<&'a Arc<Object>>>,
}

impl<'a> Index<'a> {
    fn build(store: &'a Store) -> Index<'a> {
        let mut slices: HashMap<(&str, &str), Vec<&Arc<Object>>> = HashMap::new();
        for (_, shared) in store.of_kind_shared(Kind::EndpointSlice) {
            let Object::EndpointSlice(slice) = &**shared else {
                continue;
            };
            let ns = slice.metadata.namespace.as_deref().unwrap_or("default");
            if let Some(service) = slice
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(SERVICE_NAME_LABEL))
            {
                slices
                    .entry((ns, service.as_str()))
                    .or_default()
                    .push(shared);
            }
        }
        let mut pods: HashMap<&str, Vec<&Arc<Object>>> = HashMap::new();
        for (_, shared) in store.of_kind_shared(Kind::Pod) {
            let Object::Pod(pod) = &**shared else {
                continue;
            };
            let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
            pods.entry(ns).or_default().push(shared);
        }
        Index { slices, pods }
    }
}

/// What one Service compiled to, and the objects it was compiled from.
#[derive(Debug)]
struct CachedService {
    service: Arc<Object>,
    /// Its EndpointSlices, in store order.
    slices: Vec<Arc<Object>>,
    /// Whether its backends came from the Pods of its namespace (a selector
    /// and no EndpointSlice): then any change there compiles it again.
    reads_pods: bool,
    /// The compilation number that last used it (older entries are dropped).
    used: u64,
    compiled: Compiled,
}

/// The node settings a compilation depended on: a change compiles everything.
#[derive(Debug, PartialEq, Eq)]
struct NodeKey {
    node_name: String,
    addrs: Vec<IpAddr>,
    config: ServiceConfig,
}

/// Each Service's compiled drafts and errors, reused while the Service, its
/// EndpointSlices and (for selector-derived endpoints) its namespace's Pods
/// are the same shared objects as last time. The store replaces an object
/// rather than changing it, so the same `Arc` means the same content; one
/// EndpointSlice edit then compiles one Service instead of all of them.
#[derive(Debug, Default)]
pub struct CompileCache {
    node: Option<NodeKey>,
    services: HashMap<ObjectKey, CachedService>,
    /// namespace -> its Pods at the last compilation.
    pods: HashMap<String, Vec<Arc<Object>>>,
    compilations: u64,
}

fn same_objects(a: &[Arc<Object>], b: &[&Arc<Object>]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| Arc::ptr_eq(x, y))
}

/// Compiles every Service and hostPort of the store.
pub fn compile(store: &Store, node: NodeView<'_>) -> Compiled {
    compile_cached(store, node, &mut CompileCache::default())
}

/// [`compile`], reusing what `cache` holds of unchanged Services (the result
/// is the same as without a cache).
pub fn compile_cached(store: &Store, node: NodeView<'_>, cache: &mut CompileCache) -> Compiled {
    let index = Index::build(store);
    let node_key = NodeKey {
        node_name: node.node_name.to_string(),
        addrs: node.addrs.to_vec(),
        config: node.config.clone(),
    };
    if cache.node.as_ref() != Some(&node_key) {
        cache.services.clear();
        cache.node = Some(node_key);
    }
    cache.compilations += 1;
    let compilation = cache.compilations;
    // Namespaces whose Pods are the same objects as at the last compilation.
    let mut pods_unchanged: HashMap<&str, bool> = HashMap::new();
    let previous_pods = &cache.pods;
    let mut out = Compiled::default();
    for (key, shared) in store.of_kind_shared(Kind::Service) {
        let Object::Service(svc) = &**shared else {
            continue;
        };
        let ns = svc.metadata.namespace.as_deref().unwrap_or("default");
        let name = svc.metadata.name.as_deref().unwrap_or_default();
        let slices = index.slices.get(&(ns, name)).map_or(&[][..], Vec::as_slice);
        let reusable = cache.services.get_mut(key).filter(|c| {
            Arc::ptr_eq(&c.service, shared)
                && same_objects(&c.slices, slices)
                && (!c.reads_pods
                    || *pods_unchanged.entry(ns).or_insert_with(|| {
                        let now = index.pods.get(ns).map_or(&[][..], Vec::as_slice);
                        previous_pods
                            .get(ns)
                            .map_or(now.is_empty(), |before| same_objects(before, now))
                    }))
        });
        if let Some(cached) = reusable {
            cached.used = compilation;
            out.drafts.extend_from_slice(&cached.compiled.drafts);
            out.errors.extend_from_slice(&cached.compiled.errors);
            continue;
        }
        let mut compiled = Compiled::default();
        compile_service(svc, &index, node, &mut compiled);
        out.drafts.extend_from_slice(&compiled.drafts);
        out.errors.extend_from_slice(&compiled.errors);
        let has_selector = svc
            .spec
            .as_ref()
            .and_then(|s| s.selector.as_ref())
            .is_some_and(|s| !s.is_empty());
        cache.services.insert(
            key.clone(),
            CachedService {
                service: shared.clone(),
                slices: slices.iter().map(|s| (*s).clone()).collect(),
                reads_pods: slices.is_empty() && has_selector,
                used: compilation,
                compiled,
            },
        );
    }
    cache.services.retain(|_, c| c.used == compilation);
    cache.pods = index
        .pods
        .iter()
        .map(|(ns, pods)| (ns.to_string(), pods.iter().map(|p| (*p).clone()).collect()))
        .collect();
    for object in store.of_kind(Kind::Pod) {
        let Object::Pod(pod) = object else { continue };
        compile_host_ports(pod, node, &mut out);
    }
    drop_frontend_conflicts(&mut out);
    out.drafts
        .sort_by(|a, b| (&a.service.name, &a.key).cmp(&(&b.service.name, &b.key)));
    out
}

/// How errors name a service port.
fn draft_name(draft: &ServiceDraft) -> String {
    let s = &draft.service;
    match (draft.key.starts_with("hostport "), s.port_name.is_empty()) {
        (true, _) => format!("Pod {} {}", s.name, s.port_name),
        (false, true) => format!("Service {}", s.name),
        (false, false) => format!("Service {} port {}", s.name, s.port_name),
    }
}

/// Keeps the first owner of every (address, port, protocol); later ones lose
/// that frontend, and a service port left without any is not served.
fn drop_frontend_conflicts(out: &mut Compiled) {
    // Frontend -> the index of the draft that owns it (names are only built
    // for an error).
    let mut owners: HashMap<(IpAddr, u16, L4Protocol), usize> = HashMap::new();
    let errors = &mut out.errors;
    for index in 0..out.drafts.len() {
        let (earlier, rest) = out.drafts.split_at_mut(index);
        let Some(draft) = rest.first_mut() else { break };
        let protocol = draft.service.protocol;
        let mut frontends = std::mem::take(&mut draft.service.frontends);
        frontends.retain(|f| match owners.get(&(f.addr, f.port, protocol)) {
            Some(&owner) => {
                errors.push(format!(
                    "{}: frontend {} {}/{} is already used by {}; ignored",
                    draft_name(draft),
                    kind_name(f.kind),
                    std::net::SocketAddr::new(f.addr, f.port),
                    protocol_name(protocol),
                    match earlier.get(owner) {
                        Some(other) => draft_name(other),
                        None => draft_name(draft), // a frontend listed twice
                    }
                ));
                false
            }
            None => {
                owners.insert((f.addr, f.port, protocol), index);
                true
            }
        });
        draft.service.frontends = frontends;
    }
    out.drafts.retain(|d| !d.service.frontends.is_empty());
}

/// The frontend kind as dumps and the CLI print it.
pub fn kind_name(kind: FrontendKind) -> &'static str {
    match kind {
        FrontendKind::ClusterIp => "ClusterIP",
        FrontendKind::NodePort => "NodePort",
        FrontendKind::LoadBalancer => "LoadBalancer",
        FrontendKind::ExternalIp => "ExternalIP",
        FrontendKind::HostPort => "HostPort",
    }
}

/// Parses a list of address strings; each bad one is an error naming its field.
fn addresses(list: &[String], field: &str, what: &str, errors: &mut Vec<String>) -> Vec<IpAddr> {
    let mut out = Vec::new();
    for (i, text) in list.iter().enumerate() {
        match text.parse::<IpAddr>() {
            Ok(ip) => out.push(ip),
            Err(_) => errors.push(format!(
                "{what}: {field}[{i}]: {text:?} is not an IP address; ignored"
            )),
        }
    }
    out
}

/// Settings shared by every port of one Service.
struct ServiceSettings {
    algorithm: LbAlgorithm,
    affinity_timeout_s: Option<u32>,
    external_traffic_local: bool,
    internal_traffic_local: bool,
    source_ranges: Vec<Cidr>,
}

fn settings(
    svc: &K8sService,
    what: &str,
    config: &ServiceConfig,
) -> Result<ServiceSettings, String> {
    let spec = svc.spec.as_ref();
    let algorithm = match svc
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(LB_ALGORITHM_ANNOTATION))
        .map(String::as_str)
    {
        None => config.default_algorithm,
        Some("maglev") => LbAlgorithm::Maglev,
        Some("random") => LbAlgorithm::Random,
        Some(other) => {
            return Err(format!(
                "{what}: metadata.annotations[{LB_ALGORITHM_ANNOTATION}]: {other:?} is not \
                 maglev or random; service skipped"
            ))
        }
    };
    let affinity_timeout_s = match spec.and_then(|s| s.session_affinity.as_deref()) {
        Some("ClientIP") => {
            let timeout = spec
                .and_then(|s| s.session_affinity_config.as_ref())
                .and_then(|c| c.client_ip.as_ref())
                .and_then(|c| c.timeout_seconds);
            match timeout {
                None => Some(DEFAULT_AFFINITY_TIMEOUT_S),
                Some(t) => match u32::try_from(t) {
                    Ok(t) if (1..=MAX_AFFINITY_TIMEOUT_S).contains(&t) => Some(t),
                    _ => {
                        return Err(format!(
                            "{what}: spec.sessionAffinityConfig.clientIP.timeoutSeconds: {t} is \
                             not within 1-{MAX_AFFINITY_TIMEOUT_S}; service skipped"
                        ))
                    }
                },
            }
        }
        None | Some("None") => None,
        Some(other) => {
            return Err(format!(
                "{what}: spec.sessionAffinity: {other:?} is not ClientIP or None; service skipped"
            ))
        }
    };
    let policy = |value: Option<&str>, field: &str| -> Result<bool, String> {
        match value {
            None | Some("Cluster") => Ok(false),
            Some("Local") => Ok(true),
            Some(other) => Err(format!(
                "{what}: spec.{field}: {other:?} is not Cluster or Local; service skipped"
            )),
        }
    };
    let external_traffic_local = policy(
        spec.and_then(|s| s.external_traffic_policy.as_deref()),
        "externalTrafficPolicy",
    )?;
    let internal_traffic_local = policy(
        spec.and_then(|s| s.internal_traffic_policy.as_deref()),
        "internalTrafficPolicy",
    )?;
    let mut source_ranges = Vec::new();
    if spec.and_then(|s| s.type_.as_deref()) == Some("LoadBalancer") {
        let ranges = spec
            .and_then(|s| s.load_balancer_source_ranges.as_ref())
            .into_iter()
            .flatten();
        for (i, text) in ranges.enumerate() {
            // A range that does not parse is not dropped silently: that
            // would open the service to everyone.
            let cidr = Cidr::parse(text.trim()).ok_or_else(|| {
                format!(
                    "{what}: spec.loadBalancerSourceRanges[{i}]: {text:?} is not a CIDR; \
                     service skipped"
                )
            })?;
            source_ranges.push(cidr);
        }
    }
    Ok(ServiceSettings {
        algorithm,
        affinity_timeout_s,
        external_traffic_local,
        internal_traffic_local,
        source_ranges,
    })
}

fn compile_service(svc: &K8sService, index: &Index<'_>, node: NodeView<'_>, out: &mut Compiled) {
    let ns = svc.metadata.namespace.as_deref().unwrap_or("default");
    let name = svc.metadata.name.as_deref().unwrap_or_default();
    let full = format!("{ns}/{name}");
    let what = format!("Service {full}");
    if svc
        .metadata
        .labels
        .as_ref()
        .is_some_and(|l| l.contains_key(SERVICE_PROXY_NAME_LABEL))
    {
        return;
    }
    let Some(spec) = &svc.spec else { return };
    let type_ = spec.type_.as_deref().unwrap_or("ClusterIP");
    if type_ == "ExternalName" {
        return;
    }
    if !matches!(type_, "ClusterIP" | "NodePort" | "LoadBalancer") {
        out.errors.push(format!(
            "{what}: spec.type: {type_:?} is not ClusterIP, NodePort, LoadBalancer or \
             ExternalName; service skipped"
        ));
        return;
    }
    let cluster_ip_texts: Vec<String> = match &spec.cluster_ips {
        Some(list) if !list.is_empty() => list.clone(),
        _ => spec.cluster_ip.iter().cloned().collect(),
    };
    if cluster_ip_texts.iter().any(|ip| ip == "None") {
        return; // headless: DNS only
    }
    let field = if spec.cluster_ips.as_ref().is_some_and(|l| !l.is_empty()) {
        "spec.clusterIPs"
    } else {
        "spec.clusterIP"
    };
    let cluster_ips: Vec<IpAddr> = {
        let texts: Vec<String> = cluster_ip_texts
            .into_iter()
            .filter(|t| !t.is_empty())
            .collect();
        addresses(&texts, field, &what, &mut out.errors)
    };
    let settings = match settings(svc, &what, node.config) {
        Ok(s) => s,
        Err(e) => {
            out.errors.push(e);
            return;
        }
    };
    let ports = spec.ports.as_deref().unwrap_or_default();
    // A nodePort outside the range skips the whole service: its other ports
    // would otherwise be served half.
    let node_ports = matches!(type_, "NodePort" | "LoadBalancer");
    for (i, port) in ports.iter().enumerate() {
        if let (true, Some(np)) = (node_ports, port.node_port) {
            let c = node.config;
            if !(i32::from(c.node_port_min)..=i32::from(c.node_port_max)).contains(&np) {
                out.errors.push(format!(
                    "{what}: spec.ports[{i}].nodePort: {np} is outside the node port range \
                     {}-{}; service skipped",
                    c.node_port_min, c.node_port_max
                ));
                return;
            }
        }
    }
    let external_ips = addresses(
        spec.external_ips.as_deref().unwrap_or_default(),
        "spec.externalIPs",
        &what,
        &mut out.errors,
    );
    let lb_ips: Vec<IpAddr> = if type_ == "LoadBalancer" {
        let texts: Vec<String> = svc
            .status
            .as_ref()
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|l| l.ingress.as_ref())
            .into_iter()
            .flatten()
            .filter_map(|i| i.ip.clone())
            .collect();
        addresses(
            &texts,
            "status.loadBalancer.ingress[].ip",
            &what,
            &mut out.errors,
        )
    } else {
        Vec::new()
    };
    // The families the service has: NodePorts are served on the node
    // addresses of these only.
    let families: Vec<IpAddr> = cluster_ips.clone();
    let serves_family =
        |ip: IpAddr| families.is_empty() || families.iter().any(|f| same_family(*f, ip));
    let slices = index.slices.get(&(ns, name)).map(Vec::as_slice);
    let selector = spec.selector.as_ref().filter(|s| !s.is_empty());
    let mut seen = BTreeSet::new();

    for (i, port) in ports.iter().enumerate() {
        let Some(protocol) = protocol_of(port.protocol.as_deref()) else {
            out.errors.push(format!(
                "{what}: spec.ports[{i}].protocol: {:?} is not TCP, UDP or SCTP; port skipped",
                port.protocol.as_deref().unwrap_or_default()
            ));
            continue;
        };
        let Some(number) = port_u16(port.port) else {
            out.errors.push(format!(
                "{what}: spec.ports[{i}].port: {} is not a port number; port skipped",
                port.port
            ));
            continue;
        };
        let port_name = port.name.clone().unwrap_or_default();
        if !seen.insert((port_name.clone(), protocol)) {
            out.errors.push(format!(
                "{what}: spec.ports[{i}]: a second port named {port_name:?} for {}; port skipped",
                protocol_name(protocol)
            ));
            continue;
        }
        let mut frontends: Vec<Frontend> = cluster_ips
            .iter()
            .map(|&addr| Frontend {
                kind: FrontendKind::ClusterIp,
                addr,
                port: number,
            })
            .collect();
        if let (true, Some(np)) = (node_ports, port.node_port.and_then(port_u16)) {
            frontends.extend(
                node.addrs
                    .iter()
                    .filter(|a| serves_family(**a))
                    .map(|&addr| Frontend {
                        kind: FrontendKind::NodePort,
                        addr,
                        port: np,
                    }),
            );
        }
        let external = lb_ips
            .iter()
            .map(|&addr| (FrontendKind::LoadBalancer, addr))
            .chain(
                external_ips
                    .iter()
                    .map(|&addr| (FrontendKind::ExternalIp, addr)),
            );
        frontends.extend(external.map(|(kind, addr)| Frontend {
            kind,
            addr,
            port: number,
        }));
        frontends.sort();
        frontends.dedup();

        let mut backends = match (slices, selector) {
            (Some(slices), _) => slice_backends(slices, &port_name, protocol, node.node_name),
            (None, Some(selector)) => {
                let pods = index.pods.get(ns).map(Vec::as_slice).unwrap_or_default();
                selected_pod_backends(pods, selector, port, protocol, node.node_name)
            }
            (None, None) => Vec::new(),
        };
        // Each frontend is served by backends of its family; others are unreachable.
        backends.retain(|b| frontends.iter().any(|f| same_family(f.addr, b.addr)));

        out.drafts.push(ServiceDraft {
            key: format!("{full}/{port_name}/{}", protocol_name(protocol)),
            service: Service {
                id: 0,
                name: full.clone(),
                port_name,
                protocol,
                frontends,
                backends,
                algorithm: settings.algorithm,
                affinity_timeout_s: settings.affinity_timeout_s,
                external_traffic_local: settings.external_traffic_local,
                internal_traffic_local: settings.internal_traffic_local,
                source_ranges: settings.source_ranges.clone(),
            },
        });
    }
}

/// Adds a backend, or keeps the better state of a duplicate (endpoints can
/// appear in two slices while they move).
fn add_backend(backends: &mut BTreeMap<(IpAddr, u16), Backend>, backend: Backend) {
    match backends.get_mut(&(backend.addr, backend.port)) {
        Some(old) if old.state == BackendState::Terminating => *old = backend,
        Some(_) => {}
        None => {
            backends.insert((backend.addr, backend.port), backend);
        }
    }
}

/// The backend state of an EndpointSlice endpoint: ready (absent counts as
/// ready, as the API says), else serving and terminating, else none.
fn slice_state(
    conditions: Option<&k8s_openapi::api::discovery::v1::EndpointConditions>,
) -> Option<BackendState> {
    let ready = conditions.and_then(|c| c.ready).unwrap_or(true);
    let serving = conditions.and_then(|c| c.serving).unwrap_or(ready);
    let terminating = conditions.and_then(|c| c.terminating).unwrap_or(false);
    if ready {
        Some(BackendState::Ready)
    } else if serving && terminating {
        Some(BackendState::Terminating)
    } else {
        None
    }
}

fn slice_backends(
    slices: &[&Arc<Object>],
    port_name: &str,
    protocol: L4Protocol,
    node_name: &str,
) -> Vec<Backend> {
    let mut backends = BTreeMap::new();
    for slice in slices {
        let Object::EndpointSlice(slice) = &***slice else {
            continue;
        };
        if !matches!(slice.address_type.as_str(), "IPv4" | "IPv6") {
            continue; // FQDN slices carry no addresses to balance to
        }
        let target = slice.ports.iter().flatten().find(|p| {
            p.name.as_deref().unwrap_or_default() == port_name
                && protocol_of(p.protocol.as_deref()) == Some(protocol)
        });
        let Some(target) = target.and_then(|p| p.port).and_then(port_u16) else {
            continue;
        };
        for endpoint in &slice.endpoints {
            let Some(state) = slice_state(endpoint.conditions.as_ref()) else {
                continue;
            };
            // The addresses of one endpoint are fungible; kube-proxy uses the first.
            let Some(addr) = endpoint
                .addresses
                .first()
                .and_then(|a| a.parse::<IpAddr>().ok())
            else {
                continue;
            };
            add_backend(
                &mut backends,
                Backend {
                    id: 0,
                    addr,
                    port: target,
                    state,
                    local: endpoint.node_name.as_deref() == Some(node_name),
                },
            );
        }
    }
    backends.into_values().collect()
}

fn pod_ips(pod: &Pod) -> Vec<IpAddr> {
    let Some(status) = &pod.status else {
        return Vec::new();
    };
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

fn pod_finished(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded") | Some("Failed")
    )
}

fn pod_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True")
}

/// The container port a Service's targetPort names on `pod`, if it has it.
fn target_port_on(pod: &Pod, port: &ServicePort, protocol: L4Protocol) -> Option<u16> {
    match &port.target_port {
        None => port_u16(port.port),
        Some(IntOrString::Int(n)) => port_u16(*n),
        Some(IntOrString::String(name)) => pod
            .spec
            .iter()
            .flat_map(|s| s.containers.iter())
            .flat_map(|c| c.ports.iter().flatten())
            .find(|p| {
                p.name.as_deref() == Some(name.as_str())
                    && protocol_of(p.protocol.as_deref()) == Some(protocol)
            })
            .and_then(|p| port_u16(p.container_port)),
    }
}

/// Endpoints of a Service with a selector and no EndpointSlice, derived as
/// the EndpointSlice controller does: selected pods with addresses, ready from
/// the Ready condition, terminating from deletionTimestamp.
fn selected_pod_backends(
    pods: &[&Arc<Object>],
    selector: &BTreeMap<String, String>,
    port: &ServicePort,
    protocol: L4Protocol,
    node_name: &str,
) -> Vec<Backend> {
    let mut backends = BTreeMap::new();
    for pod in pods {
        let Object::Pod(pod) = &***pod else { continue };
        let labels = pod.metadata.labels.as_ref();
        let selected = selector
            .iter()
            .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v));
        if !selected || pod_finished(pod) {
            continue;
        }
        let ready = pod_ready(pod);
        let state = match (pod.metadata.deletion_timestamp.is_some(), ready) {
            (false, true) => BackendState::Ready,
            (true, true) => BackendState::Terminating,
            (_, false) => continue,
        };
        let Some(target) = target_port_on(pod, port, protocol) else {
            continue;
        };
        let local = pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(node_name);
        for addr in pod_ips(pod) {
            add_backend(
                &mut backends,
                Backend {
                    id: 0,
                    addr,
                    port: target,
                    state,
                    local,
                },
            );
        }
    }
    backends.into_values().collect()
}

/// One service per hostPort of a Pod on this node: served on its hostIP, or on
/// every node address of the pod address's family, to the pod's containerPort.
fn compile_host_ports(pod: &Pod, node: NodeView<'_>, out: &mut Compiled) {
    let Some(spec) = &pod.spec else { return };
    if spec.node_name.as_deref() != Some(node.node_name)
        || spec.host_network == Some(true)
        || pod_finished(pod)
    {
        return;
    }
    let ips = pod_ips(pod);
    if ips.is_empty() {
        return;
    }
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let name = format!("{ns}/{}", pod.metadata.name.as_deref().unwrap_or_default());
    let what = format!("Pod {name}");
    let mut seen = BTreeSet::new();
    for (c, container) in spec.containers.iter().enumerate() {
        for (p, port) in container.ports.iter().flatten().enumerate() {
            let Some(host_port) = port.host_port.filter(|hp| *hp != 0) else {
                continue;
            };
            let field = format!("spec.containers[{c}].ports[{p}]");
            let (Some(host_port), Some(target)) =
                (port_u16(host_port), port_u16(port.container_port))
            else {
                out.errors.push(format!(
                    "{what}: {field}: hostPort {host_port} or containerPort {} is not a port \
                     number; ignored",
                    port.container_port
                ));
                continue;
            };
            let Some(protocol) = protocol_of(port.protocol.as_deref()) else {
                out.errors.push(format!(
                    "{what}: {field}.protocol: {:?} is not TCP, UDP or SCTP; ignored",
                    port.protocol.as_deref().unwrap_or_default()
                ));
                continue;
            };
            let host_ip = match port.host_ip.as_deref().filter(|t| !t.is_empty()) {
                None => None,
                Some(text) => match text.parse::<IpAddr>() {
                    Ok(ip) if ip.is_unspecified() => None,
                    Ok(ip) => Some(ip),
                    Err(_) => {
                        out.errors.push(format!(
                            "{what}: {field}.hostIP: {text:?} is not an IP address; ignored"
                        ));
                        continue;
                    }
                },
            };
            let port_name = format!("hostport-{host_port}");
            if !seen.insert((host_port, protocol)) {
                out.errors.push(format!(
                    "{what}: {field}: hostPort {host_port}/{} is declared twice; ignored",
                    protocol_name(protocol)
                ));
                continue;
            }
            let frontends: Vec<Frontend> = match host_ip {
                Some(addr) => vec![addr],
                None => node
                    .addrs
                    .iter()
                    .copied()
                    .filter(|a| ips.iter().any(|ip| same_family(*ip, *a)))
                    .collect(),
            }
            .into_iter()
            .map(|addr| Frontend {
                kind: FrontendKind::HostPort,
                addr,
                port: host_port,
            })
            .collect();
            let backends = ips
                .iter()
                .filter(|ip| frontends.iter().any(|f| same_family(f.addr, **ip)))
                .map(|&addr| Backend {
                    id: 0,
                    addr,
                    port: target,
                    state: BackendState::Ready,
                    local: true,
                })
                .collect();
            out.drafts.push(ServiceDraft {
                key: format!("hostport {name}/{port_name}/{}", protocol_name(protocol)),
                service: Service {
                    id: 0,
                    name: name.clone(),
                    port_name,
                    protocol,
                    frontends,
                    backends,
                    algorithm: LbAlgorithm::Random,
                    affinity_timeout_s: None,
                    external_traffic_local: false,
                    internal_traffic_local: false,
                    source_ranges: Vec::new(),
                },
            });
        }
    }
}
