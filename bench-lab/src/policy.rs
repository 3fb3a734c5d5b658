//! Lab support for network policy tests: pods in namespaces other than
//! `default` (with labels, named container ports and status), Namespace
//! objects with labels, and many connectivity probes at once from one place
//! (`probe.py`: TCP through the netexec servers' `/hostname`, UDP
//! `hostname`, ICMP echo).
//!
//! A policy lab is a [`LabSpec::with_named_pods`] lab whose first manifests
//! come from [`initial_manifests`]; its pods run `netexec.py` (see
//! [`Lab::start_netexec`]) so that every probe is answered with the pod's name.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use anyhow::{anyhow, bail, ensure, Context, Result};
use serde_json::{json, Value};

use crate::command::{in_netns, run_ok, SETUP_TIMEOUT};
use crate::lab::{Lab, LabSpec, PodRef};
use crate::services::{ContainerPort, Place, Reply, PYTHON};

/// The probe client (see the script's docstring).
pub const PROBE_SCRIPT: &str = include_str!("probe.py");
/// The manifest files [`initial_manifests`] writes and [`Lab::write_policy_pods`]
/// and [`Lab::write_namespaces`] replace.
pub const PODS_FILE: &str = "pods.yaml";
pub const NAMESPACES_FILE: &str = "namespaces.yaml";
/// The label every Namespace carries, as the API server sets it.
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// One pod of a policy lab: where it lives, its labels and its container ports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyPod {
    pub pod: PodRef,
    pub labels: BTreeMap<String, String>,
    /// One container per port (`cont-<port>-<protocol>`, as upstream's
    /// netpol model has them).
    pub ports: Vec<ContainerPort>,
}

impl PolicyPod {
    /// The Pod object of lab pod `index` (1-based): running, ready, with the
    /// lab's planned addresses in its status. No `spec.nodeName`: the agent
    /// knows its local pods from their CNI attachments.
    pub fn to_json(&self, index: usize) -> Value {
        let containers: Vec<Value> = self
            .ports
            .iter()
            .map(|p| {
                let mut port = json!({"containerPort": p.port, "protocol": p.protocol});
                if let Some(name) = &p.name {
                    port["name"] = json!(name);
                }
                json!({
                    "name": format!("cont-{}-{}", p.port, p.protocol.to_lowercase()),
                    "image": "netexec",
                    "ports": [port],
                })
            })
            .collect();
        let (v4, v6) = (
            crate::pod_ipv4(index).to_string(),
            crate::pod_ipv6(index).to_string(),
        );
        json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": self.pod.name,
                "namespace": self.pod.namespace,
                "labels": self.labels,
            },
            "spec": {"containers": containers},
            "status": {
                "phase": "Running",
                "podIP": v4,
                "podIPs": [{"ip": v4}, {"ip": v6}],
                "conditions": [{"type": "Ready", "status": "True"}],
            },
        })
    }
}

/// A Namespace object with labels; [`NAMESPACE_NAME_LABEL`] is always added.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamespaceManifest {
    pub name: String,
    pub labels: BTreeMap<String, String>,
}

impl NamespaceManifest {
    pub fn to_json(&self) -> Value {
        let mut labels = self.labels.clone();
        labels.insert(NAMESPACE_NAME_LABEL.to_string(), self.name.clone());
        json!({
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": self.name, "labels": labels},
        })
    }
}

/// A `v1 List` of `docs`, as the lab writes manifests.
fn manifest_list(docs: Vec<Value>) -> Result<String> {
    let list = json!({"apiVersion": "v1", "kind": "List", "items": docs});
    Ok(serde_json::to_string_pretty(&list)? + "\n")
}

/// `spec` with its pods named after `pods` and the agent's first manifests:
/// `namespaces.yaml` and `pods.yaml`. Pod `i` (1-based) is `pods[i-1]`.
pub fn initial_manifests(
    spec: LabSpec,
    namespaces: &[NamespaceManifest],
    pods: &[PolicyPod],
) -> Result<LabSpec> {
    ensure!(
        spec.pods == pods.len(),
        "a policy lab of {} pods needs {} pod manifests, not {}",
        spec.pods,
        spec.pods,
        pods.len()
    );
    let pod_docs: Vec<Value> = pods
        .iter()
        .enumerate()
        .map(|(i, pod)| pod.to_json(i + 1))
        .collect();
    let manifests = vec![
        (
            NAMESPACES_FILE.to_string(),
            manifest_list(namespaces.iter().map(NamespaceManifest::to_json).collect())?,
        ),
        (PODS_FILE.to_string(), manifest_list(pod_docs)?),
    ];
    let refs = pods.iter().map(|p| p.pod.clone()).collect();
    Ok(spec.with_named_pods(refs, manifests))
}

/// The protocol of one probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ProbeProtocol {
    Tcp,
    Udp,
    /// ICMP echo (IPv4); no port.
    Icmp,
}

impl ProbeProtocol {
    /// As Kubernetes spells it: `TCP`, `UDP`, `ICMP`.
    pub fn name(self) -> &'static str {
        match self {
            ProbeProtocol::Tcp => "TCP",
            ProbeProtocol::Udp => "UDP",
            ProbeProtocol::Icmp => "ICMP",
        }
    }
}

/// One probe: a protocol to an address and port (port 0 for ICMP).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeTarget {
    pub protocol: ProbeProtocol,
    pub addr: IpAddr,
    pub port: u16,
}

impl ProbeTarget {
    /// The probe script's argument: `tcp:10.200.0.2:80`, `udp:[fd00:200::1]:81`, `icmp:10.200.0.2`.
    fn argument(&self) -> String {
        let host = match self.addr {
            IpAddr::V4(a) => a.to_string(),
            IpAddr::V6(a) => format!("[{a}]"),
        };
        match self.protocol {
            ProbeProtocol::Tcp => format!("tcp:{host}:{}", self.port),
            ProbeProtocol::Udp => format!("udp:{host}:{}", self.port),
            ProbeProtocol::Icmp => format!("icmp:{host}"),
        }
    }
}

/// Parses one line of the probe script's output.
fn parse_probe_line(line: &str) -> Result<(String, Reply)> {
    let value: Value =
        serde_json::from_str(line).with_context(|| format!("probe printed {line:?}"))?;
    let target = value["target"].as_str().unwrap_or_default().to_string();
    let reply = match value["result"].as_str() {
        Some("answer") => Reply::Answer(value["answer"].as_str().unwrap_or_default().to_string()),
        Some("refused") => Reply::Refused,
        Some("timeout") => Reply::Timeout,
        Some("error") => Reply::Failed(value["error"].as_str().unwrap_or_default().to_string()),
        _ => bail!("probe printed an unknown result: {line}"),
    };
    Ok((target, reply))
}

impl Lab {
    /// Replaces `pods.yaml` with `pods` (pod `i` is `pods[i-1]`) and waits
    /// until the engine has the resulting state.
    pub fn write_policy_pods(&self, pods: &[PolicyPod]) -> Result<()> {
        let docs: Vec<Value> = pods
            .iter()
            .enumerate()
            .map(|(i, pod)| pod.to_json(i + 1))
            .collect();
        self.apply_manifest(PODS_FILE, &docs)
    }

    /// Replaces `namespaces.yaml` with `namespaces` and waits like
    /// [`Lab::write_policy_pods`].
    pub fn write_namespaces(&self, namespaces: &[NamespaceManifest]) -> Result<()> {
        let docs: Vec<Value> = namespaces.iter().map(NamespaceManifest::to_json).collect();
        self.apply_manifest(NAMESPACES_FILE, &docs)
    }

    /// Runs every probe in `targets` from `from` at once, each with
    /// `timeout`; the replies in the same order.
    pub fn probe_all(
        &self,
        from: Place,
        targets: &[ProbeTarget],
        timeout: Duration,
    ) -> Result<Vec<Reply>> {
        self.probe_all_from(from, None, targets, timeout)
    }

    /// [`Lab::probe_all`] with every probe leaving from local address `bind`
    /// (one of `from`'s addresses).
    pub fn probe_all_from(
        &self,
        from: Place,
        bind: Option<IpAddr>,
        targets: &[ProbeTarget],
        timeout: Duration,
    ) -> Result<Vec<Reply>> {
        if targets.is_empty() {
            return Ok(Vec::new());
        }
        let script = self.run_dir().join("probe.py");
        if !script.exists() {
            // Written under a temporary name and renamed: probes from several
            // places may start at once.
            let tmp = self
                .run_dir()
                .join(format!(".probe.py.{:?}", std::thread::current().id()));
            std::fs::write(&tmp, PROBE_SCRIPT)
                .with_context(|| format!("writing {}", tmp.display()))?;
            std::fs::rename(&tmp, &script)
                .with_context(|| format!("renaming {} to {}", tmp.display(), script.display()))?;
        }
        let script_text = script.display().to_string();
        let timeout_text = format!("{:.3}", timeout.as_secs_f64());
        let arguments: Vec<String> = targets.iter().map(ProbeTarget::argument).collect();
        let bind_text = bind.map(|a| a.to_string());
        let mut args = vec![PYTHON, &script_text, "--timeout", &timeout_text];
        if let Some(bind) = &bind_text {
            args.extend(["--bind", bind]);
        }
        args.extend(arguments.iter().map(String::as_str));
        let out = self.exec_at(from, &args, timeout + Duration::from_secs(20))?;
        ensure!(
            out.success(),
            "probe from {from} failed ({}): {}",
            out.status,
            out.stderr.trim()
        );
        let replies: Vec<(String, Reply)> = out
            .stdout
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(parse_probe_line)
            .collect::<Result<_>>()?;
        ensure!(
            replies.len() == targets.len(),
            "probe from {from}: {} answers for {} targets:\n{}",
            replies.len(),
            targets.len(),
            out.stdout
        );
        replies
            .into_iter()
            .zip(&arguments)
            .map(|((target, reply), asked)| {
                if target == *asked {
                    Ok(reply)
                } else {
                    Err(anyhow!(
                        "probe from {from}: answer for {target}, expected {asked}"
                    ))
                }
            })
            .collect()
    }

    /// Adds `addr` (with its on-link prefix `prefix_len`) to the outside
    /// namespace's eth0: a second outside host for CIDR rules.
    pub fn add_outside_address(&self, addr: IpAddr, prefix_len: u8) -> Result<()> {
        let netns = self
            .outside_netns()
            .ok_or_else(|| anyhow!("lab {} has no outside namespace", self.prefix()))?;
        let with_len = format!("{addr}/{prefix_len}");
        let mut args = vec!["ip"];
        if addr.is_ipv6() {
            args.push("-6");
        }
        args.extend(["addr", "add", &with_len, "dev", "eth0"]);
        if addr.is_ipv6() {
            args.push("nodad");
        }
        run_ok(&mut in_netns(&netns, &args), SETUP_TIMEOUT)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod() -> PolicyPod {
        PolicyPod {
            pod: PodRef::new("x", "a"),
            labels: [("pod".to_string(), "a".to_string())].into(),
            ports: vec![
                ContainerPort::tcp(80).named("serve-80-tcp"),
                ContainerPort::udp(81).named("serve-81-udp"),
            ],
        }
    }

    #[test]
    fn a_policy_pod_has_one_container_per_named_port_and_a_status() {
        let doc = pod().to_json(2);
        assert_eq!(doc["metadata"]["namespace"], "x");
        assert_eq!(doc["metadata"]["labels"], json!({"pod": "a"}));
        let containers = doc["spec"]["containers"].as_array().unwrap();
        assert_eq!(containers[0]["name"], "cont-80-tcp");
        assert_eq!(
            containers[1]["ports"],
            json!([{"containerPort": 81, "protocol": "UDP", "name": "serve-81-udp"}])
        );
        assert_eq!(
            doc["status"]["podIPs"],
            json!([{"ip": "10.200.0.3"}, {"ip": "fd00:200::2"}])
        );
    }

    #[test]
    fn namespaces_always_carry_their_name_label() {
        let ns = NamespaceManifest {
            name: "y".into(),
            labels: [("ns".to_string(), "y".to_string())].into(),
        };
        assert_eq!(
            ns.to_json()["metadata"]["labels"],
            json!({"kubernetes.io/metadata.name": "y", "ns": "y"})
        );
    }

    #[test]
    fn initial_manifests_name_every_pod_and_check_the_count() {
        let spec = initial_manifests(LabSpec::engine(1), &[], &[pod()]).unwrap();
        assert_eq!(spec.pod_ref(1), PodRef::new("x", "a"));
        let files: Vec<&str> = spec.manifests.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(files, [NAMESPACES_FILE, PODS_FILE]);
        assert!(spec.manifests[1].1.contains("\"podIP\": \"10.200.0.2\""));
        let err = initial_manifests(LabSpec::engine(2), &[], &[pod()]).unwrap_err();
        assert!(err.to_string().contains("needs 2 pod manifests"), "{err}");
    }

    #[test]
    fn probe_arguments_and_answers() {
        let t = ProbeTarget {
            protocol: ProbeProtocol::Udp,
            addr: "fd00:200::1".parse().unwrap(),
            port: 81,
        };
        assert_eq!(t.argument(), "udp:[fd00:200::1]:81");
        let icmp = ProbeTarget {
            protocol: ProbeProtocol::Icmp,
            addr: "10.200.0.2".parse().unwrap(),
            port: 0,
        };
        assert_eq!(icmp.argument(), "icmp:10.200.0.2");
        let (target, reply) =
            parse_probe_line(r#"{"target":"tcp:10.200.0.2:80","result":"answer","answer":"x/a"}"#)
                .unwrap();
        assert_eq!(target, "tcp:10.200.0.2:80");
        assert_eq!(reply, Reply::Answer("x/a".into()));
        let (_, reply) = parse_probe_line(r#"{"target":"t","result":"timeout"}"#).unwrap();
        assert_eq!(reply, Reply::Timeout);
        assert!(parse_probe_line(r#"{"target":"t","result":"maybe"}"#).is_err());
    }
}
