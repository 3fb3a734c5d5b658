//! A generated cluster and policy set for benchmarks and scale tests (not a
//! public API): `rules` CiliumNetworkPolicies over `identities` pod
//! identities, `endpoints` of them on this node.
//!
//! The mix, by rule number: 40% L3 ingress (`fromEndpoints`), 30% L3+L4
//! (ingress or egress with a TCP port), 10% L4 only, 10% egress CIDR with an
//! exception, 10% egress CIDR plus an egress deny on a port. Half of the
//! rules select an app that runs on this node, the other half apps
//! elsewhere; peers are apps of the policy's namespace, a third of them
//! apps of any namespace. Namespaces hold 50 identities (25 apps of two
//! versions each). The same arguments always give the same cluster.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use serde_json::json;
use sluice_tables::{Cidr, Enforcement};

use crate::compile::{CidrMatch, ClusterPod, CompileInput, LabelSet, LocalEndpoint, NamedPort};
use crate::model::{Policy, PolicyKind, Rule};

/// A generated cluster, owning what [`CompileInput`] borrows.
#[derive(Clone, Debug)]
pub struct SyntheticCluster {
    pub policies: Vec<Policy>,
    pub endpoints: Vec<LocalEndpoint>,
    pub identities: Vec<(u32, LabelSet)>,
    pub pods: Vec<ClusterPod>,
    pub pod_cidrs: Vec<Cidr>,
    pub previous_local: BTreeMap<String, u32>,
}

impl SyntheticCluster {
    /// The compiler's input, with Sluice's default settings.
    pub fn input(&self) -> CompileInput<'_> {
        CompileInput {
            policies: &self.policies,
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
            previous_local: &self.previous_local,
        }
    }
}

/// A small deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) as usize % n.max(1)
    }
}

struct App {
    name: String,
    namespace: String,
}

/// Generates the cluster (see the module doc).
pub fn synthetic_input(rules: usize, identities: usize, endpoints: usize) -> SyntheticCluster {
    let identities = identities.max(1);
    // Namespaces of 50 identities; the two identities of an app (versions)
    // share one.
    const PER_NAMESPACE: usize = 50;
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    let mut apps = Vec::with_capacity(identities);
    let mut out = SyntheticCluster {
        policies: Vec::with_capacity(rules),
        endpoints: Vec::with_capacity(endpoints),
        identities: Vec::with_capacity(identities),
        pods: Vec::with_capacity(identities),
        pod_cidrs: vec![Cidr {
            addr: IpAddr::V4(Ipv4Addr::new(10, 200, 0, 0)),
            prefix_len: 16,
        }],
        previous_local: BTreeMap::new(),
    };
    for i in 0..identities {
        let namespace = format!("ns-{}", i / PER_NAMESPACE);
        let app = App {
            name: format!("app-{}", i / 2),
            namespace: namespace.clone(),
        };
        let labels: LabelSet = [
            format!("k8s:app={}", app.name),
            format!("k8s:version=v{}", i % 2),
            format!("k8s:tier={}", ["front", "back", "db"][i % 3]),
            format!("k8s:io.kubernetes.pod.namespace={namespace}"),
            format!("k8s:io.cilium.k8s.namespace.labels.kubernetes.io/metadata.name={namespace}"),
            format!("k8s:io.cilium.k8s.namespace.labels.team=team-{}", i % 7),
            "k8s:io.cilium.k8s.policy.cluster=default".to_string(),
            format!("k8s:io.cilium.k8s.policy.serviceaccount={}", app.name),
        ]
        .into_iter()
        .collect();
        let number = 1000 + i as u32;
        out.identities.push((number, labels.clone()));
        let named_ports = if i % 4 == 0 {
            vec![NamedPort {
                name: "http".into(),
                protocol: 6,
                port: 8080,
            }]
        } else {
            Vec::new()
        };
        out.pods.push(ClusterPod {
            namespace,
            name: format!("pod-{i}"),
            identity: number,
            labels,
            ips: vec![IpAddr::V4(Ipv4Addr::new(
                10,
                200,
                (i / 250) as u8,
                (i % 250) as u8 + 2,
            ))],
            named_ports,
        });
        apps.push(app);
    }
    for e in 0..endpoints {
        let pod = &out.pods[e % identities];
        out.endpoints.push(LocalEndpoint {
            name: format!("{}/{}-{e}", pod.namespace, pod.name),
            identity: pod.identity,
            labels: pod.labels.clone(),
            named_ports: pod.named_ports.clone(),
        });
    }
    let local_apps = endpoints.clamp(1, identities);
    for r in 0..rules {
        let target_at = if r % 2 == 0 {
            rng.below(local_apps)
        } else {
            rng.below(identities)
        };
        let target = &apps[target_at];
        // A third of the peers anywhere (their namespace named), the rest in
        // the policy's namespace.
        let peer_selector = if r % 3 == 0 {
            let peer = &apps[rng.below(identities)];
            json!({"matchLabels": {"app": peer.name, "k8s:io.kubernetes.pod.namespace": peer.namespace}})
        } else {
            let block = target_at / PER_NAMESPACE * PER_NAMESPACE;
            let size = (identities - block).min(PER_NAMESPACE);
            json!({"matchLabels": {"app": apps[block + rng.below(size)].name}})
        };
        let port = (80 + r % 20).to_string();
        let octet = r % 250;
        let spec = match r % 10 {
            0..=3 => json!({"ingress": [{"fromEndpoints": [peer_selector]}]}),
            4 | 5 => json!({"ingress": [{"fromEndpoints": [peer_selector],
                "toPorts": [{"ports": [{"port": port, "protocol": "TCP"}]}]}]}),
            6 => json!({"egress": [{"toEndpoints": [peer_selector],
                "toPorts": [{"ports": [{"port": port, "protocol": "TCP"}]}]}]}),
            7 => {
                json!({"ingress": [{"toPorts": [{"ports": [{"port": (8000 + r % 100).to_string()}]}]}]})
            }
            8 => json!({"egress": [{"toCIDRSet": [{"cidr": format!("198.18.{octet}.0/24"),
                "except": [format!("198.18.{octet}.128/25")]}],
                "toPorts": [{"ports": [{"port": "443", "protocol": "TCP"}]}]}]}),
            _ => json!({"egress": [{"toCIDR": [format!("203.0.{octet}.0/24")]}],
                "egressDeny": [{"toPorts": [{"ports": [{"port": "25", "protocol": "TCP"}]}]}]}),
        };
        let mut spec = spec;
        spec["endpointSelector"] = json!({"matchLabels": {"app": target.name}});
        let rule: Rule = serde_json::from_value(spec).expect("generated rules fit the model");
        out.policies.push(Policy {
            kind: PolicyKind::CiliumNetworkPolicy,
            namespace: target.namespace.clone(),
            name: format!("rule-{r}"),
            rules: vec![("spec".into(), rule)],
        });
    }
    out
}
