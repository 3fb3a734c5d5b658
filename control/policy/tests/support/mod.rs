//! Test fixtures for the compiler: a cluster and its policies in one YAML
//! document (the golden cases' `input.yaml`, and inline cases), and verdicts
//! through the engine's own lookup.
//!
//! ```yaml
//! settings: {enforcement: default, allow_localhost: true, cidr_match_pods: true,
//!            cidr_match_nodes: false, pod_cidrs: [10.200.0.0/16], previous_local: {}}
//! identities:                 # number -> labels (reserved ones may be left out)
//!   256: [k8s:app=web, k8s:io.kubernetes.pod.namespace=default]
//! pods:                       # labels are the identity's; local: an endpoint here
//!   - {pod: default/web, identity: 256, ips: [10.200.0.10], ports: [http=80/TCP], local: true}
//! endpoints:                  # local endpoints without a pod (initializing)
//!   - {name: default/new, identity: 5}
//! nodes: [{ip: 192.168.0.2, identity: 6}]
//! services:
//!   - {service: default/db, labels: {}, selector: {app: db}, backends: [10.200.0.20]}
//! policies: [ ...objects as in a manifest... ]
//! ```

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use serde::Deserialize;
use sluice_policy::compile::{
    compile, CidrMatch, ClusterPod, ClusterService, CompileInput, Compiled, LabelSet,
    LocalEndpoint, NamedPort,
};
use sluice_policy::model::Policy;
use sluice_tables::{Cidr, Decision, Enforcement, PolicyDirection, PolicyQuery, PolicyTables};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    pub enforcement: Enforcement,
    pub allow_localhost: bool,
    pub cidr_match_pods: bool,
    pub cidr_match_nodes: bool,
    pub pod_cidrs: Vec<Cidr>,
    pub previous_local: BTreeMap<String, u32>,
}

impl Default for Settings {
    /// Sluice's defaults.
    fn default() -> Settings {
        Settings {
            enforcement: Enforcement::Default,
            allow_localhost: true,
            cidr_match_pods: true,
            cidr_match_nodes: false,
            pod_cidrs: Vec::new(),
            previous_local: BTreeMap::new(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PodSpec {
    pod: String,
    identity: u32,
    #[serde(default)]
    ips: Vec<IpAddr>,
    /// `name=port/PROTOCOL`.
    #[serde(default)]
    ports: Vec<String>,
    #[serde(default)]
    local: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EndpointSpec {
    name: String,
    identity: u32,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NodeSpec {
    ip: IpAddr,
    identity: u32,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ServiceSpec {
    service: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    selector: Option<BTreeMap<String, String>>,
    #[serde(default)]
    backends: Vec<IpAddr>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct CaseSpec {
    settings: Settings,
    identities: BTreeMap<u32, Vec<String>>,
    pods: Vec<PodSpec>,
    endpoints: Vec<EndpointSpec>,
    nodes: Vec<NodeSpec>,
    services: Vec<ServiceSpec>,
    policies: Vec<serde_json::Value>,
}

/// A cluster and its policies, owning what [`CompileInput`] borrows.
pub struct Case {
    pub settings: Settings,
    pub policies: Vec<Policy>,
    pub endpoints: Vec<LocalEndpoint>,
    pub identities: Vec<(u32, LabelSet)>,
    pub pods: Vec<ClusterPod>,
    pub nodes: Vec<(IpAddr, u32)>,
    pub services: Vec<ClusterService>,
}

fn split_name(text: &str) -> (String, String) {
    let (namespace, name) = text
        .split_once('/')
        .unwrap_or_else(|| panic!("{text:?} is not namespace/name"));
    (namespace.to_string(), name.to_string())
}

fn named_port(text: &str) -> NamedPort {
    let (name, rest) = text.split_once('=').expect("name=port/PROTO");
    let (port, protocol) = rest.split_once('/').expect("name=port/PROTO");
    NamedPort {
        name: name.to_string(),
        protocol: match protocol {
            "TCP" => 6,
            "UDP" => 17,
            "SCTP" => 132,
            other => panic!("protocol {other}"),
        },
        port: port.parse().expect("port"),
    }
}

impl Case {
    /// Reads a case; policies go through `sluice_policy::parse` (a policy
    /// that does not validate fails the test).
    pub fn from_yaml(text: &str) -> Case {
        let spec: CaseSpec = serde_yaml_ng::from_str(text).expect("case YAML");
        let labels_of = |identity: u32| -> LabelSet {
            spec.identities
                .get(&identity)
                .map(|l| l.iter().cloned().collect())
                .unwrap_or_else(|| panic!("identity {identity} has no labels in the case"))
        };
        let policies = spec
            .policies
            .iter()
            .map(|value| {
                sluice_policy::parse::parse_object(value, "case").unwrap_or_else(|errors| {
                    let text: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
                    panic!("policy does not validate:\n{}", text.join("\n"))
                })
            })
            .collect();
        let mut endpoints = Vec::new();
        let mut pods = Vec::new();
        for p in &spec.pods {
            let (namespace, name) = split_name(&p.pod);
            let named_ports: Vec<NamedPort> = p.ports.iter().map(|t| named_port(t)).collect();
            if p.local {
                endpoints.push(LocalEndpoint {
                    name: p.pod.clone(),
                    identity: p.identity,
                    labels: labels_of(p.identity),
                    named_ports: named_ports.clone(),
                });
            }
            pods.push(ClusterPod {
                namespace,
                name,
                identity: p.identity,
                labels: labels_of(p.identity),
                ips: p.ips.clone(),
                named_ports,
            });
        }
        for e in &spec.endpoints {
            let labels = spec
                .identities
                .get(&e.identity)
                .map(|l| l.iter().cloned().collect())
                .unwrap_or_else(|| LabelSet::from(["reserved:init".to_string()]));
            endpoints.push(LocalEndpoint {
                name: e.name.clone(),
                identity: e.identity,
                labels,
                named_ports: Vec::new(),
            });
        }
        let services = spec
            .services
            .iter()
            .map(|s| {
                let (namespace, name) = split_name(&s.service);
                ClusterService {
                    namespace,
                    name,
                    labels: s.labels.clone(),
                    selector: s.selector.clone(),
                    backend_ips: s.backends.clone(),
                }
            })
            .collect();
        Case {
            policies,
            endpoints,
            identities: spec
                .identities
                .iter()
                .map(|(n, l)| (*n, l.iter().cloned().collect()))
                .collect(),
            pods,
            nodes: spec.nodes.iter().map(|n| (n.ip, n.identity)).collect(),
            services,
            settings: spec.settings,
        }
    }

    pub fn input(&self) -> CompileInput<'_> {
        CompileInput {
            policies: &self.policies,
            enforcement: self.settings.enforcement,
            allow_localhost: self.settings.allow_localhost,
            cidr_match: CidrMatch {
                nodes: self.settings.cidr_match_nodes,
                pods: self.settings.cidr_match_pods,
            },
            endpoints: &self.endpoints,
            identities: &self.identities,
            pods: &self.pods,
            nodes: &self.nodes,
            services: &self.services,
            pod_cidrs: &self.settings.pod_cidrs,
            previous_local: &self.settings.previous_local,
        }
    }

    pub fn compile(&self) -> Compiled {
        compile(&self.input())
    }
}

/// Verdicts of a compilation through the engine's lookup.
pub struct Verdicts {
    pub compiled: Compiled,
    tables: PolicyTables,
}

impl Verdicts {
    pub fn of(case: &Case) -> Verdicts {
        let compiled = case.compile();
        let tables = PolicyTables::build(&compiled.state).expect("the engine accepts the state");
        Verdicts { compiled, tables }
    }

    /// The decision for `endpoint` in `direction` with a peer of
    /// `identity` on `protocol`/`port`.
    pub fn decide(
        &self,
        endpoint: &str,
        direction: PolicyDirection,
        identity: u32,
        protocol: u8,
        port: u16,
    ) -> Decision {
        let query = PolicyQuery {
            peer_identity: identity,
            peer_addr: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            protocol,
            port,
        };
        self.tables
            .lookup(endpoint, direction, &query, &|_, _| false)
    }

    pub fn ingress(&self, endpoint: &str, identity: u32, protocol: u8, port: u16) -> Decision {
        self.decide(endpoint, PolicyDirection::Ingress, identity, protocol, port)
    }

    pub fn egress(&self, endpoint: &str, identity: u32, protocol: u8, port: u16) -> Decision {
        self.decide(endpoint, PolicyDirection::Egress, identity, protocol, port)
    }

    /// `name path` of a rule index (`web spec.ingressDeny[0]`).
    pub fn rule(&self, rule: u32) -> String {
        let origin = &self.compiled.state.rules[rule as usize];
        format!("{} {}", origin.name, origin.path)
    }

    /// A short form of a decision: `allowed web spec.ingress[0]`,
    /// `denied ...`, `no-allow ...`, `not-enforced`.
    pub fn says(&self, decision: Decision) -> String {
        match decision {
            Decision::NotEnforced => "not-enforced".into(),
            Decision::Allowed { rule, dns: None } => format!("allowed {}", self.rule(rule)),
            Decision::Allowed { rule, dns: Some(d) } => {
                format!("allowed {} dns d{d}", self.rule(rule))
            }
            Decision::Denied { rule } => format!("denied {}", self.rule(rule)),
            Decision::NoAllowRule { rule: Some(rule) } => format!("no-allow {}", self.rule(rule)),
            Decision::NoAllowRule { rule: None } => "no-allow".into(),
        }
    }

    /// The local identity number of the labels key `key`.
    pub fn local(&self, key: &str) -> u32 {
        *self.compiled.local_identities.get(key).unwrap_or_else(|| {
            panic!(
                "no local identity {key:?} in {:?}",
                self.compiled.local_identities
            )
        })
    }

    /// The identity the ipcache entry for exactly `ip`/`prefix_len` gives.
    pub fn ipcache(&self, ip: &str, prefix_len: Option<u8>) -> Option<u32> {
        let ip: IpAddr = ip.parse().unwrap();
        self.compiled
            .ipcache
            .iter()
            .find(|e| e.ip == ip && e.prefix_len == prefix_len)
            .map(|e| e.identity)
    }
}
