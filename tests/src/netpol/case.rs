//! Policy test cases as data (`tests/netpol/*.yaml`): what upstream's netpol
//! tests do, step by step, and the reachability each step expects.
//!
//! ```yaml
//! name: should support a 'default-deny-ingress' policy   # the upstream title
//! source: kubernetes test/e2e/network/netpol/network_policy.go
//! agent_args: [--policy-cidr-match-mode=]   # agent flags for this case (optional)
//! setup:                       # labels added before the first step (optional)
//!   pods: {x/a: {env: prod}}
//!   namespaces: {y: {team: a}}
//! steps:
//!   - apply:                   # created, or replaced when kind/namespace/name exist
//!       - {apiVersion: networking.k8s.io/v1, kind: NetworkPolicy, ...}
//!     delete: [NetworkPolicy x/deny-all]       # `Kind ns/name`, `Kind name` if clusterwide
//!     relabel: {pods: {x/b: {pod2: updated}}}  # a null value removes the label
//!     probe:
//!       - on: [80/TCP, 81/UDP]                 # also ICMP (echo, IPv4)
//!         default: allow                       # NewReachability(pods, true)
//!         expect:                              # applied in order, later wins
//!           - deny * -> x                      # ExpectPeer(&Peer{}, &Peer{Namespace: x}, false)
//!           - allow x/b -> x/a                 # Expect(x/b, x/a, true)
//!     external:                                # pods <-> an address outside the cluster
//!       - on: [80/TCP]
//!         address: 192.168.254.2
//!         direction: egress                    # pods -> address; ingress: from address -> pods
//!         default: deny
//!         expect: [allow x/a]
//! ```
//!
//! Strings in applied objects may name a pod's address as `$ip(x/b)`.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};
use serde::Deserialize;
use serde_json::Value;
use sluice_lab::policy::ProbeProtocol;

use super::model::Model;
use super::reachability::{Override, Peer, TruthTable};

/// One case file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    /// The upstream test's title, or what a Sluice case shows.
    pub name: String,
    /// Where the case comes from.
    #[serde(default)]
    pub source: Option<String>,
    /// Flags the agent runs with during this case (it is restarted when they
    /// differ from the previous case's).
    #[serde(default)]
    pub agent_args: Vec<String>,
    /// Labels changed before the first step (and reset after the case).
    #[serde(default)]
    pub setup: Relabel,
    pub steps: Vec<Step>,
}

/// Label changes: pod (`x/a`) or namespace -> key -> value (null removes).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Relabel {
    #[serde(default)]
    pub pods: BTreeMap<String, BTreeMap<String, Option<String>>>,
    #[serde(default)]
    pub namespaces: BTreeMap<String, BTreeMap<String, Option<String>>>,
}

impl Relabel {
    pub fn is_empty(&self) -> bool {
        self.pods.is_empty() && self.namespaces.is_empty()
    }

    /// `model` with these changes; unknown pods and namespaces are errors.
    pub fn applied_to(&self, model: &Model) -> Result<Model> {
        let mut next = model.clone();
        for (pod, changes) in &self.pods {
            let at = model.index(pod)? - 1;
            let labels = next.pod_labels.entry(model.pods[at].clone()).or_default();
            change(labels, changes);
        }
        for (ns, changes) in &self.namespaces {
            let labels = next
                .namespace_labels
                .get_mut(ns)
                .with_context(|| format!("relabel: no namespace {ns} in the model"))?;
            change(labels, changes);
        }
        Ok(next)
    }
}

fn change(labels: &mut BTreeMap<String, String>, changes: &BTreeMap<String, Option<String>>) {
    for (key, value) in changes {
        match value {
            Some(v) => labels.insert(key.clone(), v.clone()),
            None => labels.remove(key),
        };
    }
}

/// One step: changes, then the reachability they must give.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    /// Printed with the step's result.
    #[serde(default)]
    pub description: Option<String>,
    /// Policy objects created or replaced.
    #[serde(default)]
    pub apply: Vec<Value>,
    /// Policies deleted: `Kind ns/name`, or `Kind name` for a clusterwide one.
    #[serde(default)]
    pub delete: Vec<String>,
    #[serde(default)]
    pub relabel: Relabel,
    #[serde(default)]
    pub probe: Vec<Probe>,
    #[serde(default)]
    pub external: Vec<External>,
}

/// `allow` or `deny`: a probe's default expectation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Default {
    Allow,
    Deny,
}

impl Default {
    pub fn allows(self) -> bool {
        self == Default::Allow
    }
}

/// Pod-to-pod probes on some ports and protocols, with one expectation.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Probe {
    /// `80/TCP`, `81/UDP`, `ICMP`.
    pub on: Vec<String>,
    pub default: Default,
    /// `allow|deny FROM -> TO`, applied in order.
    #[serde(default)]
    pub expect: Vec<String>,
}

impl Probe {
    /// The expected table over `pods`.
    pub fn expected(&self, pods: &[String]) -> Result<TruthTable> {
        let mut table = TruthTable::new(pods, self.default.allows());
        for rule in &self.expect {
            let o = Override::parse(rule)?;
            table.set_peers(&o.from, &o.to, o.allow)?;
        }
        Ok(table)
    }

    pub fn targets(&self) -> Result<Vec<PortProtocol>> {
        parse_ons(&self.on)
    }
}

/// Which way an [`External`] probe goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Every pod connects to the address.
    Egress,
    /// The outside host connects to every pod from the address.
    Ingress,
}

/// Probes between every pod and an address outside the cluster (the lab's
/// outside namespace; the address must be one of its own).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct External {
    pub on: Vec<String>,
    pub address: IpAddr,
    pub direction: Direction,
    pub default: Default,
    /// `allow|deny POD-PATTERN`, applied in order.
    #[serde(default)]
    pub expect: Vec<String>,
}

impl External {
    /// Expected reachability per pod (in `pods` order).
    pub fn expected(&self, pods: &[String]) -> Result<Vec<bool>> {
        let mut row = vec![self.default.allows(); pods.len()];
        for rule in &self.expect {
            let (verb, pattern) = rule
                .trim()
                .split_once(char::is_whitespace)
                .with_context(|| format!("expectation {rule:?}: expected `allow|deny PODS`"))?;
            let allow = match verb {
                "allow" => true,
                "deny" => false,
                other => bail!("expectation {rule:?}: {other:?} is neither allow nor deny"),
            };
            let peer = Peer::parse(pattern).with_context(|| format!("expectation {rule:?}"))?;
            let mut any = false;
            for (i, pod) in pods.iter().enumerate() {
                if peer.matches(pod) {
                    row[i] = allow;
                    any = true;
                }
            }
            ensure!(any, "expectation {rule:?} selects no pod");
        }
        Ok(row)
    }

    pub fn targets(&self) -> Result<Vec<PortProtocol>> {
        parse_ons(&self.on)
    }
}

/// A port and protocol to probe (`80/TCP`); ICMP has port 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortProtocol {
    pub protocol: ProbeProtocol,
    pub port: u16,
}

impl PortProtocol {
    pub fn parse(text: &str) -> Result<PortProtocol> {
        let text = text.trim();
        if text.eq_ignore_ascii_case("icmp") {
            return Ok(PortProtocol {
                protocol: ProbeProtocol::Icmp,
                port: 0,
            });
        }
        let (port, protocol) = text
            .split_once('/')
            .with_context(|| format!("probe {text:?}: expected PORT/TCP, PORT/UDP or ICMP"))?;
        let protocol = match protocol {
            "TCP" => ProbeProtocol::Tcp,
            "UDP" => ProbeProtocol::Udp,
            other => bail!("probe {text:?}: protocol {other:?} is not TCP or UDP"),
        };
        let port = port
            .parse()
            .with_context(|| format!("probe {text:?}: bad port"))?;
        Ok(PortProtocol { protocol, port })
    }
}

impl std::fmt::Display for PortProtocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.protocol {
            ProbeProtocol::Icmp => f.write_str("ICMP"),
            p => write!(f, "{}/{}", self.port, p.name()),
        }
    }
}

fn parse_ons(on: &[String]) -> Result<Vec<PortProtocol>> {
    ensure!(!on.is_empty(), "a probe needs `on`");
    on.iter().map(|s| PortProtocol::parse(s)).collect()
}

/// Where case files live: `tests/netpol/`.
pub fn cases_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("netpol")
}

impl Case {
    /// Reads and checks `tests/netpol/<file>` against `model` (every probe,
    /// expectation, pod name and object key is checked up front).
    pub fn load(file: &str, model: &Model) -> Result<Case> {
        let path = cases_dir().join(file);
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let case: Case = serde_yaml_ng::from_str(&text)
            .with_context(|| format!("parsing {}", path.display()))?;
        case.check(model)
            .with_context(|| format!("checking {}", path.display()))?;
        Ok(case)
    }

    fn check(&self, model: &Model) -> Result<()> {
        ensure!(!self.steps.is_empty(), "a case needs steps");
        let pods = model.pod_names();
        self.setup.applied_to(model).context("setup")?;
        for (i, step) in self.steps.iter().enumerate() {
            let at = || format!("steps[{i}]");
            step.relabel.applied_to(model).with_context(at)?;
            for object in &step.apply {
                object_key(&substitute(object, model)?).with_context(at)?;
            }
            for key in &step.delete {
                ensure!(
                    key.split_whitespace().count() == 2,
                    "{}: delete {key:?}: expected `Kind ns/name` or `Kind name`",
                    at()
                );
            }
            for probe in &step.probe {
                probe.targets().with_context(at)?;
                probe.expected(&pods).with_context(at)?;
            }
            for external in &step.external {
                external.targets().with_context(at)?;
                external.expected(&pods).with_context(at)?;
            }
        }
        Ok(())
    }
}

/// `Kind ns/name` (`Kind name` when the object has no namespace): how steps
/// name objects to delete.
pub fn object_key(object: &Value) -> Result<String> {
    let kind = object["kind"]
        .as_str()
        .with_context(|| format!("an applied object has no kind: {object}"))?;
    let name = object["metadata"]["name"]
        .as_str()
        .with_context(|| format!("{kind} without metadata.name"))?;
    Ok(match object["metadata"]["namespace"].as_str() {
        Some(ns) => format!("{kind} {ns}/{name}"),
        None => format!("{kind} {name}"),
    })
}

/// `object` with every `$ip(ns/pod)` in its strings replaced by that pod's
/// IPv4 address.
pub fn substitute(object: &Value, model: &Model) -> Result<Value> {
    Ok(match object {
        Value::String(s) => Value::String(substitute_text(s, model)?),
        Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|v| substitute(v, model))
                .collect::<Result<_>>()?,
        ),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| Ok((k.clone(), substitute(v, model)?)))
                .collect::<Result<_>>()?,
        ),
        other => other.clone(),
    })
}

fn substitute_text(text: &str, model: &Model) -> Result<String> {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find("$ip(") {
        out.push_str(&rest[..at]);
        let after = &rest[at + 4..];
        let end = after
            .find(')')
            .with_context(|| format!("{text:?}: unclosed $ip("))?;
        out.push_str(&model.ipv4(&after[..end])?.to_string());
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ports_and_protocols_parse() {
        let p = PortProtocol::parse("81/UDP").unwrap();
        assert_eq!((p.protocol, p.port), (ProbeProtocol::Udp, 81));
        assert_eq!(p.to_string(), "81/UDP");
        assert_eq!(PortProtocol::parse("ICMP").unwrap().to_string(), "ICMP");
        assert!(PortProtocol::parse("80/SCTP").is_err());
        assert!(PortProtocol::parse("80").is_err());
    }

    #[test]
    fn pod_addresses_are_substituted_and_keys_named() {
        let m = Model::upstream();
        let obj = json!({"kind": "NetworkPolicy", "metadata": {"name": "p", "namespace": "x"},
            "spec": {"egress": [{"to": [{"ipBlock": {"cidr": "$ip(y/b)/32"}}]}]}});
        let out = substitute(&obj, &m).unwrap();
        assert_eq!(
            out["spec"]["egress"][0]["to"][0]["ipBlock"]["cidr"],
            "10.200.0.6/32"
        );
        assert_eq!(object_key(&out).unwrap(), "NetworkPolicy x/p");
        let ccnp = json!({"kind": "CiliumClusterwideNetworkPolicy", "metadata": {"name": "c"}});
        assert_eq!(
            object_key(&ccnp).unwrap(),
            "CiliumClusterwideNetworkPolicy c"
        );
        assert!(substitute(&json!("$ip(w/a)"), &m).is_err());
        assert!(substitute(&json!("$ip(x/a"), &m).is_err());
    }

    #[test]
    fn relabel_adds_and_removes() {
        let m = Model::upstream();
        let r: Relabel = serde_yaml_ng::from_str(
            "pods: {x/b: {pod2: updated, pod: null}}\nnamespaces: {y: {ns2: u}}",
        )
        .unwrap();
        let next = r.applied_to(&m).unwrap();
        let xb = &next.pod_labels[&m.pods[1]];
        assert_eq!(xb.get("pod2").map(String::as_str), Some("updated"));
        assert!(!xb.contains_key("pod"));
        assert_eq!(next.namespace_labels["y"]["ns2"], "u");
        let bad: Relabel = serde_yaml_ng::from_str("namespaces: {w: {a: b}}").unwrap();
        assert!(bad.applied_to(&m).is_err());
    }

    #[test]
    fn external_expectations_select_pods() {
        let e: External = serde_yaml_ng::from_str(
            "{on: [80/TCP], address: 192.168.254.2, direction: egress, default: deny, expect: [allow x/a, allow y]}",
        )
        .unwrap();
        let row = e.expected(&Model::upstream().pod_names()).unwrap();
        assert_eq!(
            row,
            [true, false, false, true, true, true, false, false, false]
        );
    }

    /// Every case file (also in subdirectories) parses and checks against
    /// the model (no lab needed).
    #[test]
    fn every_case_file_is_valid() {
        fn visit(dir: &Path, rel: &str, model: &Model, seen: &mut usize) {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                let name = path.file_name().unwrap().to_string_lossy().into_owned();
                let file = format!("{rel}{name}");
                if path.is_dir() {
                    visit(&path, &format!("{file}/"), model, seen);
                } else if path.extension().is_some_and(|e| e == "yaml") {
                    Case::load(&file, model).unwrap_or_else(|e| panic!("{e:#}"));
                    *seen += 1;
                }
            }
        }
        let mut seen = 0;
        visit(&cases_dir(), "", &Model::upstream(), &mut seen);
        assert!(seen > 40, "only {seen} case files");
    }
}
