//! Upstream's netpol model (`test/e2e/network/netpol/model.go`): namespaces
//! x, y and z, pods a, b and c in each, labelled `pod=<name>`, namespaces
//! labelled `ns=<name>` (plus `kubernetes.io/metadata.name`), and in every
//! pod one container per port and protocol, `cont-<port>-<proto>` with the
//! port named `serve-<port>-<proto>`. In the lab the 9 pods are lab pods 1-9
//! in the order x/a, x/b, x/c, y/a ... z/c, all on the one node, and the
//! labels are the state tests change (relabel steps) and reset.

use std::collections::BTreeMap;
use std::net::IpAddr;

use anyhow::{Context, Result};
use sluice_lab::policy::{NamespaceManifest, PolicyPod, ProbeProtocol};
use sluice_lab::services::ContainerPort;
use sluice_lab::PodRef;

pub const NAMESPACES: [&str; 3] = ["x", "y", "z"];
pub const POD_NAMES: [&str; 3] = ["a", "b", "c"];
/// The ports every pod serves, on TCP and UDP.
pub const PORTS: [u16; 2] = [80, 81];

pub type Labels = BTreeMap<String, String>;

/// The model's pods and their current labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Model {
    /// In lab order: pod `i` (1-based) is `pods[i-1]`.
    pub pods: Vec<PodRef>,
    pub pod_labels: BTreeMap<PodRef, Labels>,
    pub namespace_labels: BTreeMap<String, Labels>,
}

impl Default for Model {
    fn default() -> Model {
        Model::upstream()
    }
}

impl Model {
    /// The 9 pods with upstream's labels.
    pub fn upstream() -> Model {
        let mut pods = Vec::new();
        let mut pod_labels = BTreeMap::new();
        let mut namespace_labels = BTreeMap::new();
        for ns in NAMESPACES {
            namespace_labels.insert(ns.to_string(), labels(&[("ns", ns)]));
            for name in POD_NAMES {
                let pod = PodRef::new(ns, name);
                pod_labels.insert(pod.clone(), labels(&[("pod", name)]));
                pods.push(pod);
            }
        }
        Model {
            pods,
            pod_labels,
            namespace_labels,
        }
    }

    /// `x/a` ... in lab order, as truth-table keys.
    pub fn pod_names(&self) -> Vec<String> {
        self.pods.iter().map(PodRef::to_string).collect()
    }

    /// The lab index (1-based) of `pod` (`x/a`).
    pub fn index(&self, pod: &str) -> Result<usize> {
        self.pods
            .iter()
            .position(|p| p.to_string() == pod)
            .map(|i| i + 1)
            .with_context(|| format!("no pod {pod} in the model"))
    }

    /// The IPv4 address of `pod` (`x/a`) in the lab.
    pub fn ipv4(&self, pod: &str) -> Result<IpAddr> {
        Ok(sluice_lab::pod_ipv4(self.index(pod)?).into())
    }

    /// The Pod manifests of the current labels.
    pub fn policy_pods(&self) -> Vec<PolicyPod> {
        self.pods
            .iter()
            .map(|pod| PolicyPod {
                pod: pod.clone(),
                labels: self.pod_labels.get(pod).cloned().unwrap_or_default(),
                ports: container_ports(),
            })
            .collect()
    }

    /// The Namespace manifests of the current labels.
    pub fn namespaces(&self) -> Vec<NamespaceManifest> {
        self.namespace_labels
            .iter()
            .map(|(name, labels)| NamespaceManifest {
                name: name.clone(),
                labels: labels.clone(),
            })
            .collect()
    }
}

/// `serve-80-tcp`, `serve-80-udp`, `serve-81-tcp`, `serve-81-udp`.
pub fn port_name(port: u16, protocol: ProbeProtocol) -> String {
    format!("serve-{port}-{}", protocol.name().to_lowercase())
}

/// Every pod's container ports: each of [`PORTS`] on TCP and UDP, named.
pub fn container_ports() -> Vec<ContainerPort> {
    let mut ports = Vec::new();
    for port in PORTS {
        ports.push(ContainerPort::tcp(port).named(&port_name(port, ProbeProtocol::Tcp)));
        ports.push(ContainerPort::udp(port).named(&port_name(port, ProbeProtocol::Udp)));
    }
    ports
}

pub fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_model_has_upstreams_pods_labels_and_ports() {
        let m = Model::upstream();
        assert_eq!(
            m.pod_names(),
            ["x/a", "x/b", "x/c", "y/a", "y/b", "y/c", "z/a", "z/b", "z/c"]
        );
        assert_eq!(m.index("y/b").unwrap(), 5);
        assert_eq!(m.ipv4("x/a").unwrap().to_string(), "10.200.0.2");
        assert!(m.index("w/a").is_err());
        let pods = m.policy_pods();
        assert_eq!(pods[4].labels, labels(&[("pod", "b")]));
        let names: Vec<_> = pods[0]
            .ports
            .iter()
            .map(|p| p.name.clone().unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "serve-80-tcp",
                "serve-80-udp",
                "serve-81-tcp",
                "serve-81-udp"
            ]
        );
        assert_eq!(m.namespaces()[2].labels, labels(&[("ns", "z")]));
    }
}
