//! The policy benchmark's workload: the cluster the two lab pods live in (1k remote
//! identities, one address each), N CiliumNetworkPolicy objects over them, and what
//! compiling them costs. Pure: no lab, no I/O.
//!
//! Pod 1 is the client (identity [`CLIENT_IDENTITY`], `app=client`), pod 2 the server
//! ([`SERVER_IDENTITY`], `app=server`), both in namespace `default`. Remote peer `i` is
//! `default/peer<i>` with identity [`FIRST_PEER_IDENTITY`]` + i` and address
//! [`peer_ipv4`]`(i)` in another node's pod CIDR (10.201.0.0/16).
//!
//! Rule `i` of N (one CNP `bench-<i>` with one `spec` each) is shaped by [`Shape::of`]:
//! server ingress from one or two peers on a TCP port or a UDP port range, client egress to
//! a peer, CIDR rules both ways (a /24 in 172.16.0.0/12, egress ones with a /28 `except`),
//! a few ingress denies from peers, and one rule in a hundred naming the client (server
//! ingress) or the server (client egress) on a port at or above 10000. Exactly one rule,
//! [`target_rule`]`(N)`, allows client -> server:[`TARGET_PORT`]/TCP, in both directions:
//! so every measured connection is allowed by a real lookup among N rules, and the client's
//! run in the server's ingress table holds the other ports' lines too.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Instant;

use anyhow::{anyhow, ensure, Result};
use serde::Serialize;
use serde_json::{json, Value};
use sluice_policy::compile::{
    compile, CidrMatch, ClusterPod, CompileInput, Compiled, LabelSet, LocalEndpoint,
};
use sluice_policy::model::Policy;
use sluice_policy::parse::parse_object;
use sluice_tables::{
    Cidr, Decision, Enforcement, IpCache, IpCacheEntry, NodeState, PolicyDirection, PolicyQuery,
    PolicyTables, Tables,
};

use super::stat;
use crate::bench::forward::median;
use crate::bench::rules::TARGET_PORT;
use crate::bench::services::Stat;
use crate::{pod_ipv4, pod_ipv6, POD_CIDRS};

/// Identity of pod 1, the client.
pub const CLIENT_IDENTITY: u32 = 256;
/// Identity of pod 2, the server.
pub const SERVER_IDENTITY: u32 = 257;
/// Identity of remote peer 0; peer `i` has this plus `i`.
pub const FIRST_PEER_IDENTITY: u32 = 1000;
/// A port on the server that no rule allows the client to reach (the enforcement check).
pub const DENIED_PORT: u16 = TARGET_PORT + 1;
/// Most remote identities (their addresses fit 10.201.0.0/16).
pub const MAX_IDENTITIES: usize = 60_000;
/// Most rules (ports stay below 65536, CIDR /24s within 172.16.0.0/12).
pub const MAX_RULES: usize = 40_000;
/// Namespace of every pod and policy.
const NAMESPACE: &str = "default";
/// The pod CIDR of the other nodes, where the remote peers live.
const REMOTE_POD_CIDR: &str = "10.201.0.0/16";

/// Lab pod `index`'s endpoint name (as the static lab names it).
pub fn endpoint_name(index: usize) -> String {
    format!("{NAMESPACE}/pod{index}")
}

/// Remote peer `i`'s address: 10.201.(i / 250).(i % 250 + 1).
pub fn peer_ipv4(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 201, (i / 250) as u8, (i % 250 + 1) as u8)
}

fn labels(app: &str) -> LabelSet {
    [
        format!("k8s:app={app}"),
        format!("k8s:io.kubernetes.pod.namespace={NAMESPACE}"),
        "k8s:io.cilium.k8s.policy.cluster=default".to_string(),
        "k8s:io.cilium.k8s.policy.serviceaccount=default".to_string(),
    ]
    .into_iter()
    .collect()
}

/// The cluster the compiler sees: the two lab pods (local endpoints) and `identities`
/// remote pods, each its own identity.
#[derive(Debug, Clone)]
pub struct Cluster {
    pub endpoints: Vec<LocalEndpoint>,
    pub identities: Vec<(u32, LabelSet)>,
    pub pods: Vec<ClusterPod>,
    pub pod_cidrs: Vec<Cidr>,
    /// Every pod address -> its identity (what the agent would put in the ipcache).
    pub ipcache: Vec<IpCacheEntry>,
    no_previous: BTreeMap<String, u32>,
}

impl Cluster {
    pub fn new(identities: usize) -> Cluster {
        let mut pods = Vec::with_capacity(identities + 2);
        for (index, app, identity) in [
            (1, "client", CLIENT_IDENTITY),
            (2, "server", SERVER_IDENTITY),
        ] {
            pods.push(ClusterPod {
                namespace: NAMESPACE.to_string(),
                name: format!("pod{index}"),
                identity,
                labels: labels(app),
                ips: vec![IpAddr::V4(pod_ipv4(index)), IpAddr::V6(pod_ipv6(index))],
                named_ports: Vec::new(),
            });
        }
        for i in 0..identities {
            pods.push(ClusterPod {
                namespace: NAMESPACE.to_string(),
                name: format!("peer{i}"),
                identity: FIRST_PEER_IDENTITY + i as u32,
                labels: labels(&format!("peer{i}")),
                ips: vec![IpAddr::V4(peer_ipv4(i))],
                named_ports: Vec::new(),
            });
        }
        let endpoints = pods[..2]
            .iter()
            .enumerate()
            .map(|(i, pod)| LocalEndpoint {
                name: endpoint_name(i + 1),
                identity: pod.identity,
                labels: pod.labels.clone(),
                named_ports: Vec::new(),
            })
            .collect();
        let ipcache = pods
            .iter()
            .flat_map(|pod| {
                pod.ips.iter().map(|&ip| IpCacheEntry {
                    ip,
                    prefix_len: None,
                    identity: pod.identity,
                })
            })
            .collect();
        let pod_cidrs = POD_CIDRS
            .iter()
            .copied()
            .chain([REMOTE_POD_CIDR])
            .filter_map(Cidr::parse)
            .collect();
        Cluster {
            endpoints,
            identities: pods
                .iter()
                .map(|p| (p.identity, p.labels.clone()))
                .collect(),
            pods,
            pod_cidrs,
            ipcache,
            no_previous: BTreeMap::new(),
        }
    }

    /// Remote identities (the two lab pods' are not counted).
    pub fn remote_identities(&self) -> usize {
        self.identities.len() - 2
    }

    /// The compiler's input for `policies`, with the agent's defaults (mode default, host
    /// traffic allowed, CIDR rules matching pod addresses).
    pub fn input<'a>(&'a self, policies: &'a [Policy]) -> CompileInput<'a> {
        CompileInput {
            policies,
            enforcement: Enforcement::Default,
            allow_localhost: true,
            cidr_match: CidrMatch {
                nodes: false,
                pods: true,
            },
            endpoints: &self.endpoints,
            identities: &self.identities,
            pods: &self.pods,
            nodes: &[],
            services: &[],
            pod_cidrs: &self.pod_cidrs,
            previous_local: &self.no_previous,
        }
    }

    /// `base` (the lab's node state) with the pods' identities, the ipcache (pod addresses
    /// plus what the compiler added or overrode) and the compiled policy.
    pub fn node_state(&self, mut base: NodeState, compiled: &Compiled) -> NodeState {
        for endpoint in &mut base.endpoints {
            if let Some(local) = self.endpoints.iter().find(|e| e.name == endpoint.name) {
                endpoint.identity = local.identity;
            }
        }
        let mut ipcache: BTreeMap<(IpAddr, Option<u8>), u32> = self
            .ipcache
            .iter()
            .map(|e| ((e.ip, e.prefix_len), e.identity))
            .collect();
        for e in &compiled.ipcache {
            ipcache.insert((e.ip, e.prefix_len), e.identity);
        }
        base.ipcache = ipcache
            .into_iter()
            .map(|((ip, prefix_len), identity)| IpCacheEntry {
                ip,
                prefix_len,
                identity,
            })
            .collect();
        base.policy = compiled.state.clone();
        base
    }
}

/// What rule `i` is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// Server ingress from one peer on one TCP port.
    PeerIngress,
    /// Server ingress from two peers (`matchExpressions` In) on a UDP port range.
    PeerIngressRange,
    /// Server ingressDeny from one peer on one TCP port.
    PeerIngressDeny,
    /// Client egress to one peer on one TCP port.
    PeerEgress,
    /// Server ingress from a /24 (any port).
    CidrIngress,
    /// Client egress to a /24 except a /28, TCP 443.
    CidrEgress,
    /// Server ingress from the client on a port at or above 10000.
    ClientIngressElsewhere,
    /// Client egress to the server on a port at or above 10000.
    ServerEgressElsewhere,
    /// The one rule that allows client -> server:TARGET_PORT (both directions).
    Target,
}

impl Shape {
    pub fn of(i: usize, rules: usize) -> Shape {
        if i == target_rule(rules) {
            return Shape::Target;
        }
        match (i % 100, i % 10) {
            (8, _) => Shape::ClientIngressElsewhere,
            (9, _) => Shape::ServerEgressElsewhere,
            (3, _) => Shape::PeerIngressDeny,
            (_, 0..=2) => Shape::PeerIngress,
            (_, 3) | (_, 8) => Shape::PeerIngressRange,
            (_, 4) | (_, 5) | (_, 9) => Shape::PeerEgress,
            (_, 6) => Shape::CidrEgress,
            _ => Shape::CidrIngress,
        }
    }
}

/// The index of the rule that allows the measured connections: the middle one.
pub fn target_rule(rules: usize) -> usize {
    rules / 2
}

/// Rule `i`'s policy name.
pub fn policy_name(i: usize) -> String {
    format!("bench-{i:05}")
}

fn app(name: &str) -> Value {
    json!({"matchLabels": {"app": name}})
}

fn tcp(port: u16) -> Value {
    json!([{"ports": [{"port": port.to_string(), "protocol": "TCP"}]}])
}

/// The `i`-th CiliumNetworkPolicy of `rules` over `identities` remote peers.
pub fn policy_object(i: usize, rules: usize, identities: usize) -> Value {
    // 7919 is prime, so consecutive rules name peers spread over all of them.
    let peer = |k: usize| format!("peer{}", (i * 7919 + k) % identities);
    let port = 10_000 + (i % 50_000) as u16;
    // Distinct /24s in 172.16.0.0/12 for up to 4096 CIDR rules of a kind.
    let net = i / 10;
    let (b, c) = (16 + (net / 256) % 16, net % 256);
    let spec = match Shape::of(i, rules) {
        Shape::Target => json!({
            "endpointSelector": {"matchExpressions": [
                {"key": "app", "operator": "In", "values": ["client", "server"]}
            ]},
            "ingress": [{"fromEndpoints": [app("client")], "toPorts": tcp(TARGET_PORT)}],
            "egress": [{"toEndpoints": [app("server")], "toPorts": tcp(TARGET_PORT)}],
        }),
        Shape::PeerIngress => json!({
            "endpointSelector": app("server"),
            "ingress": [{"fromEndpoints": [app(&peer(0))], "toPorts": tcp(port)}],
        }),
        Shape::PeerIngressRange => json!({
            "endpointSelector": app("server"),
            "ingress": [{
                "fromEndpoints": [{"matchExpressions": [
                    {"key": "app", "operator": "In", "values": [peer(0), peer(1)]}
                ]}],
                "toPorts": [{"ports": [
                    {"port": port.to_string(), "endPort": i32::from(port) + 10, "protocol": "UDP"}
                ]}],
            }],
        }),
        Shape::PeerIngressDeny => json!({
            "endpointSelector": app("server"),
            "ingressDeny": [{"fromEndpoints": [app(&peer(0))], "toPorts": tcp(port)}],
        }),
        Shape::PeerEgress => json!({
            "endpointSelector": app("client"),
            "egress": [{"toEndpoints": [app(&peer(0))], "toPorts": tcp(port)}],
        }),
        Shape::CidrIngress => json!({
            "endpointSelector": app("server"),
            "ingress": [{"fromCIDR": [format!("172.{b}.{c}.0/24")]}],
        }),
        Shape::CidrEgress => json!({
            "endpointSelector": app("client"),
            "egress": [{
                "toCIDRSet": [{"cidr": format!("172.{b}.{c}.0/24"), "except": [format!("172.{b}.{c}.0/28")]}],
                "toPorts": tcp(443),
            }],
        }),
        Shape::ClientIngressElsewhere => json!({
            "endpointSelector": app("server"),
            "ingress": [{"fromEndpoints": [app("client")], "toPorts": tcp(port)}],
        }),
        Shape::ServerEgressElsewhere => json!({
            "endpointSelector": app("client"),
            "egress": [{"toEndpoints": [app("server")], "toPorts": tcp(port)}],
        }),
    };
    json!({
        "apiVersion": "cilium.io/v2",
        "kind": "CiliumNetworkPolicy",
        "metadata": {"name": policy_name(i), "namespace": NAMESPACE},
        "spec": spec,
    })
}

/// The `rules` policies, parsed and validated as the agent would.
pub fn policies(rules: usize, identities: usize) -> Result<Vec<Policy>> {
    ensure!(
        identities >= 2,
        "the rules need at least 2 remote identities"
    );
    (0..rules)
        .map(|i| {
            parse_object(&policy_object(i, rules, identities), "bench").map_err(|errors| {
                let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
                anyhow!(
                    "generated policy {} is invalid: {}",
                    policy_name(i),
                    text.join("; ")
                )
            })
        })
        .collect()
}

/// Checks the compiled tables by lookup (as `sluice policy trace` does) before any lab is
/// built: with rules, client -> server:TARGET_PORT/TCP is allowed in both directions by
/// the target rule, and DENIED_PORT is not; without rules nothing is enforced.
pub fn check_compiled(compiled: &Compiled, rules: usize) -> Result<()> {
    ensure!(
        compiled.errors.is_empty(),
        "the compiler left rules out: {}",
        compiled.errors.join("; ")
    );
    let tables = PolicyTables::build(&compiled.state)
        .map_err(|e| anyhow!("the compiled policy does not build: {e}"))?;
    let no_fqdn = |_: u32, _: IpAddr| false;
    let query = |peer_identity: u32, peer: usize, port: u16| PolicyQuery {
        peer_identity,
        peer_addr: IpAddr::V4(pod_ipv4(peer)),
        protocol: 6,
        port,
    };
    let server = endpoint_name(2);
    let client = endpoint_name(1);
    let checks = [
        (
            &server,
            PolicyDirection::Ingress,
            query(CLIENT_IDENTITY, 1, TARGET_PORT),
        ),
        (
            &client,
            PolicyDirection::Egress,
            query(SERVER_IDENTITY, 2, TARGET_PORT),
        ),
        (
            &server,
            PolicyDirection::Ingress,
            query(CLIENT_IDENTITY, 1, DENIED_PORT),
        ),
        (
            &client,
            PolicyDirection::Egress,
            query(SERVER_IDENTITY, 2, DENIED_PORT),
        ),
    ];
    for (i, (endpoint, direction, q)) in checks.iter().enumerate() {
        let decision = tables.lookup(endpoint, *direction, q, &no_fqdn);
        let allowed_port = i < 2;
        let expected = if rules == 0 {
            matches!(decision, Decision::NotEnforced)
        } else if allowed_port {
            match decision {
                Decision::Allowed { rule, dns: None } => compiled
                    .state
                    .rules
                    .get(rule as usize)
                    .is_some_and(|origin| origin.name == policy_name(target_rule(rules))),
                _ => false,
            }
        } else {
            matches!(decision, Decision::NoAllowRule { .. })
        };
        ensure!(
            expected,
            "{rules} rules: {endpoint} {direction:?} port {} decides {decision:?}",
            q.port
        );
    }
    Ok(())
}

/// What compiling N rules cost and produced, measured in this process.
#[derive(Debug, Clone, Serialize)]
pub struct CompileCost {
    pub rules: usize,
    pub identities: usize,
    /// Generating and parsing (validating) the N objects, once.
    pub parse_seconds: f64,
    /// `sluice_policy::compile::compile`, over `runs` runs.
    pub compile_seconds: Option<Stat>,
    pub runs: usize,
    /// The compiled `PolicyState` as compact JSON (what the agent sends the engine).
    pub state_json_bytes: u64,
    pub tables: usize,
    pub entries: usize,
    pub listed_endpoints: usize,
    pub rule_origins: usize,
    /// ipcache entries the compiler added (CIDR prefixes).
    pub ipcache_added: usize,
    pub local_identities: usize,
    /// `PolicyTables::build` of the compiled state (the engine's policy index), median.
    pub policy_build_seconds: f64,
    /// `IpCache::build` of the node's whole ipcache (pods and CIDR prefixes), median.
    pub ipcache_build_seconds: f64,
    pub ipcache_entries: usize,
}

/// The compiled policy of N rules and its costs.
#[derive(Debug, Clone)]
pub struct CompiledRules {
    pub compiled: Compiled,
    pub cost: CompileCost,
}

fn seconds_of(runs: usize, mut f: impl FnMut()) -> Vec<f64> {
    (0..runs)
        .map(|_| {
            let started = Instant::now();
            f();
            started.elapsed().as_secs_f64()
        })
        .collect()
}

/// Generates, parses and compiles `rules` rules `runs` times over `cluster`, checks the
/// result ([`check_compiled`]) and times the engine-side builds.
pub fn compile_rules(cluster: &Cluster, rules: usize, runs: usize) -> Result<CompiledRules> {
    ensure!(runs >= 1, "at least one compile run");
    let started = Instant::now();
    let policies = policies(rules, cluster.remote_identities())?;
    let parse_seconds = started.elapsed().as_secs_f64();
    let input = cluster.input(&policies);
    let mut compiled = Compiled::default();
    let compile_seconds = seconds_of(runs, || compiled = compile(&input));
    check_compiled(&compiled, rules)?;
    let state_json_bytes = serde_json::to_vec(&compiled.state)?.len() as u64;
    let policy_build_seconds = seconds_of(runs, || {
        std::hint::black_box(PolicyTables::build(&compiled.state).ok());
    });
    let ipcache = cluster.node_state(NodeState::empty(), &compiled).ipcache;
    IpCache::build(&ipcache).map_err(|e| anyhow!("{rules} rules: {e}"))?;
    let ipcache_build_seconds = seconds_of(runs, || {
        std::hint::black_box(IpCache::build(&ipcache).ok());
    });
    let cost = CompileCost {
        rules,
        identities: cluster.remote_identities(),
        parse_seconds,
        compile_seconds: stat(&compile_seconds),
        runs,
        state_json_bytes,
        tables: compiled.state.tables.len(),
        entries: compiled.state.tables.iter().map(|t| t.entries.len()).sum(),
        listed_endpoints: compiled.state.endpoints.len(),
        rule_origins: compiled.state.rules.len(),
        ipcache_added: compiled.ipcache.len(),
        local_identities: compiled.local_identities.len(),
        policy_build_seconds: median(&policy_build_seconds),
        ipcache_build_seconds: median(&ipcache_build_seconds),
        ipcache_entries: ipcache.len(),
    };
    Ok(CompiledRules { compiled, cost })
}

/// Whether the engine would take `state` (the check the engine makes at start).
pub fn builds(state: &NodeState) -> Result<()> {
    Tables::build(state.clone()).map_err(|e| anyhow!("the node state does not build: {e}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use sluice_tables::{Endpoint, Gateway, MacAddr};

    use super::*;

    #[test]
    fn shapes_cover_every_kind_and_one_target() {
        let rules = 1_000;
        let shapes: Vec<Shape> = (0..rules).map(|i| Shape::of(i, rules)).collect();
        assert_eq!(shapes.iter().filter(|s| **s == Shape::Target).count(), 1);
        assert_eq!(shapes[500], Shape::Target);
        for kind in [
            Shape::PeerIngress,
            Shape::PeerIngressRange,
            Shape::PeerIngressDeny,
            Shape::PeerEgress,
            Shape::CidrIngress,
            Shape::CidrEgress,
            Shape::ClientIngressElsewhere,
            Shape::ServerEgressElsewhere,
        ] {
            assert!(shapes.contains(&kind), "{kind:?}");
        }
        // One rule in a hundred names the client or the server on another port.
        let elsewhere = shapes
            .iter()
            .filter(|s| {
                matches!(
                    s,
                    Shape::ClientIngressElsewhere | Shape::ServerEgressElsewhere
                )
            })
            .count();
        assert_eq!(elsewhere, 20);
        assert_eq!(Shape::of(0, 1), Shape::Target);
    }

    #[test]
    fn cluster_has_one_identity_and_address_per_peer() {
        let cluster = Cluster::new(1_000);
        assert_eq!(cluster.remote_identities(), 1_000);
        assert_eq!(cluster.identities.len(), 1_002);
        assert_eq!(peer_ipv4(999), Ipv4Addr::new(10, 201, 3, 250));
        assert_eq!(peer_ipv4(0), Ipv4Addr::new(10, 201, 0, 1));
        // 2 lab pods with v4 and v6, 1000 peers with v4: all distinct.
        assert_eq!(cluster.ipcache.len(), 1_004);
        assert!(IpCache::build(&cluster.ipcache).is_ok());
        assert_eq!(cluster.endpoints[0].name, "default/pod1");
        assert!(cluster.endpoints[1].labels.contains("k8s:app=server"));
    }

    #[test]
    fn generated_rules_parse_and_only_the_target_allows_the_measured_port() {
        let cluster = Cluster::new(50);
        for rules in [0, 1, 250] {
            let result = compile_rules(&cluster, rules, 1).unwrap();
            assert_eq!(result.cost.rules, rules);
            if rules == 0 {
                assert!(result.compiled.state.endpoints.is_empty());
                continue;
            }
            assert_eq!(result.cost.listed_endpoints, 2);
            assert!(result.cost.entries >= rules, "{:?}", result.cost);
        }
        let result = compile_rules(&cluster, 250, 1).unwrap();
        // CIDR rules made local identities and prefixes in the ipcache.
        assert!(result.cost.local_identities > 0);
        assert!(result
            .compiled
            .ipcache
            .iter()
            .any(|e| e.prefix_len == Some(24)));
        // Without the target rule the measured port is denied: the check notices.
        let policies = policies(250, 50).unwrap();
        let without: Vec<Policy> = policies
            .into_iter()
            .filter(|p| p.name != policy_name(target_rule(250)))
            .collect();
        let compiled = compile(&cluster.input(&without));
        let err = check_compiled(&compiled, 250).unwrap_err().to_string();
        assert!(err.contains("Ingress port 8080"), "{err}");
        // And rules that select nothing leave the endpoints unenforced: noticed too.
        assert!(check_compiled(&compile(&cluster.input(&[])), 250).is_err());
    }

    #[test]
    fn node_state_carries_identities_ipcache_and_policy() {
        let cluster = Cluster::new(20);
        let compiled = compile_rules(&cluster, 100, 1).unwrap().compiled;
        let mut base = NodeState::empty();
        base.gateway = Gateway {
            mac: MacAddr([2, 0x53, 0x4c, 0, 0, 1]),
            ipv4: Ipv4Addr::new(10, 200, 0, 1),
            ipv6: std::net::Ipv6Addr::LOCALHOST,
        };
        for index in 1..=2 {
            base.endpoints.push(Endpoint {
                name: endpoint_name(index),
                ifindex: 100 + index as u32,
                ifname: format!("lxc{index}"),
                mac: MacAddr([2, 0, 0, 0, 0, index as u8]),
                ipv4: Some(pod_ipv4(index)),
                ipv6: Some(pod_ipv6(index)),
                identity: 0,
            });
        }
        let state = cluster.node_state(base, &compiled);
        assert_eq!(state.endpoints[0].identity, CLIENT_IDENTITY);
        assert_eq!(state.endpoints[1].identity, SERVER_IDENTITY);
        assert_eq!(
            state.ipcache.len(),
            cluster.ipcache.len() + compiled.ipcache.len()
        );
        assert_eq!(state.policy, compiled.state);
        builds(&state).unwrap();
        let tables = Tables::build(state).unwrap();
        assert!(tables.policy.enforces());
        assert_eq!(
            tables.ipcache.identity_of(IpAddr::V4(pod_ipv4(1))),
            CLIENT_IDENTITY
        );
        assert_eq!(
            tables.ipcache.identity_of(IpAddr::V4(peer_ipv4(7))),
            FIRST_PEER_IDENTITY + 7
        );
    }
}
