//! Kubernetes NetworkPolicy (networking.k8s.io/v1) into the rule model, as
//! Cilium translates it (`pkg/k8s/network_policy.go`), after checking what
//! the API server would check (a manifest directory has no API server).
//!
//! * `podSelector` -> `endpointSelector`, keys as `k8s:` labels, plus
//!   `k8s:io.kubernetes.pod.namespace=<namespace>`.
//! * `policyTypes` absent: Ingress, plus Egress when `egress` has rules
//!   (the API server's defaulting). A listed direction without rules gets
//!   one empty rule (`ingress: [{}]`): default deny, nothing allowed.
//!   Rules of a direction that is not listed are ignored, as Kubernetes
//!   ignores them.
//! * Each peer becomes one rule, carrying the rule's ports: `podSelector`
//!   alone selects pods of the policy's namespace; `namespaceSelector`
//!   selects on `k8s:io.cilium.k8s.namespace.labels.<key>` and requires
//!   `k8s:io.kubernetes.pod.namespace` to exist (so that no namespace is
//!   added to it); both together form one selector; `ipBlock` becomes a
//!   CIDR set with its `except`. No peers: every peer (entity `all`).
//! * Ports: protocol TCP unless given; no port means every port (`0`);
//!   numbers, named ports and `endPort` as written. Each port is its own
//!   `toPorts` entry, as in Cilium.
//!
//! Errors name the NetworkPolicy's own fields
//! (`spec.ingress[0].from[1].ipBlock.cidr`).

use k8s_openapi::api::networking::v1::{
    IPBlock, NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyIngressRule, NetworkPolicyPeer,
    NetworkPolicyPort,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::Value;

use crate::model::{
    object_label, CidrRule, EgressRule, EndpointSelector, IngressRule, LabelSelectorRequirement,
    Policy, PolicyKind, PortProtocol, PortRule, PortValue, Rule,
};
use crate::parse::checks::{self, K8S_PROTOCOLS};
use crate::parse::{typed, PolicyError, Problems};

/// The label that carries a pod's namespace.
const POD_NAMESPACE: &str = "k8s:io.kubernetes.pod.namespace";
/// The prefix under which a pod carries its namespace's labels.
const NAMESPACE_LABELS: &str = "k8s:io.cilium.k8s.namespace.labels.";
/// The prefix of a pod's own labels.
const POD_LABELS: &str = "k8s:";

/// Translates a NetworkPolicy into one rule (path `spec`).
pub fn translate(np: &NetworkPolicy) -> Result<Policy, Vec<PolicyError>> {
    let namespace = np
        .metadata
        .namespace
        .as_deref()
        .filter(|n| !n.is_empty())
        .unwrap_or("default");
    let name = np.metadata.name.as_deref().unwrap_or("");
    let label = object_label(PolicyKind::NetworkPolicy, namespace, name);
    let mut out = Problems::default();
    if name.is_empty() {
        out.add("metadata.name", "missing");
    }
    let Some(spec) = &np.spec else {
        out.add("spec", "missing");
        return Err(out.into_errors(&label));
    };

    let mut endpoint_selector = selector(
        spec.pod_selector.as_ref(),
        POD_LABELS,
        "spec.podSelector",
        &mut out,
    );
    endpoint_selector
        .match_labels
        .insert(POD_NAMESPACE.into(), namespace.into());

    let (ingress_listed, egress_listed) = match &spec.policy_types {
        Some(types) if !types.is_empty() => {
            for (i, t) in types.iter().enumerate() {
                if t != "Ingress" && t != "Egress" {
                    out.add(
                        format!("spec.policyTypes[{i}]"),
                        format!("{t:?} is not Ingress or Egress"),
                    );
                }
            }
            (
                types.iter().any(|t| t == "Ingress"),
                types.iter().any(|t| t == "Egress"),
            )
        }
        _ => (true, spec.egress.as_ref().is_some_and(|e| !e.is_empty())),
    };

    let ingress = ingress_listed.then(|| {
        let mut rules: Vec<IngressRule> = Vec::new();
        for (i, rule) in spec.ingress.iter().flatten().enumerate() {
            rules.extend(ingress_rule(
                rule,
                namespace,
                &format!("spec.ingress[{i}]"),
                &mut out,
            ));
        }
        if rules.is_empty() {
            rules.push(IngressRule::default());
        }
        rules
    });
    let egress = egress_listed.then(|| {
        let mut rules: Vec<EgressRule> = Vec::new();
        for (i, rule) in spec.egress.iter().flatten().enumerate() {
            rules.extend(egress_rule(
                rule,
                namespace,
                &format!("spec.egress[{i}]"),
                &mut out,
            ));
        }
        if rules.is_empty() {
            rules.push(EgressRule::default());
        }
        rules
    });

    if !out.is_empty() {
        return Err(out.into_errors(&label));
    }
    let rule = Rule {
        endpoint_selector: Some(endpoint_selector),
        ingress,
        egress,
        ..Rule::default()
    };
    Ok(Policy {
        kind: PolicyKind::NetworkPolicy,
        namespace: namespace.into(),
        name: name.into(),
        rules: vec![("spec".into(), rule)],
    })
}

/// A decoded NetworkPolicy object: unknown fields (which the typed
/// decoding would drop silently), types, then [`translate`].
pub(crate) fn from_value(value: &Value) -> Result<Policy, Vec<PolicyError>> {
    let namespace = value
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .unwrap_or("default");
    let name = value
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("?");
    let label = object_label(PolicyKind::NetworkPolicy, namespace, name);
    let mut out = Problems::default();
    unknown_fields(value, &OBJECT, "", &mut out);
    let typed = typed::<NetworkPolicy>(value, "");
    match typed {
        Ok(np) if out.is_empty() => translate(&np),
        Ok(np) => {
            let mut errors = out.into_errors(&label);
            errors.extend(translate(&np).err().into_iter().flatten());
            Err(errors)
        }
        Err((path, problem)) => {
            out.add(path, problem);
            Err(out.into_errors(&label))
        }
    }
}

/// The fields a NetworkPolicy has (`metadata` and `status` are not
/// checked).
#[derive(Clone, Copy, Debug)]
enum Shape {
    Any,
    Fields(&'static [(&'static str, Shape)]),
    List(&'static Shape),
}

const REQUIREMENT: Shape = Shape::Fields(&[
    ("key", Shape::Any),
    ("operator", Shape::Any),
    ("values", Shape::Any),
]);
const SELECTOR: Shape = Shape::Fields(&[
    ("matchLabels", Shape::Any),
    ("matchExpressions", Shape::List(&REQUIREMENT)),
]);
const IP_BLOCK: Shape = Shape::Fields(&[("cidr", Shape::Any), ("except", Shape::Any)]);
const PEER: Shape = Shape::Fields(&[
    ("podSelector", SELECTOR),
    ("namespaceSelector", SELECTOR),
    ("ipBlock", IP_BLOCK),
]);
const PORT: Shape = Shape::Fields(&[
    ("protocol", Shape::Any),
    ("port", Shape::Any),
    ("endPort", Shape::Any),
]);
const INGRESS: Shape =
    Shape::Fields(&[("from", Shape::List(&PEER)), ("ports", Shape::List(&PORT))]);
const EGRESS: Shape = Shape::Fields(&[("to", Shape::List(&PEER)), ("ports", Shape::List(&PORT))]);
const SPEC: Shape = Shape::Fields(&[
    ("podSelector", SELECTOR),
    ("policyTypes", Shape::Any),
    ("ingress", Shape::List(&INGRESS)),
    ("egress", Shape::List(&EGRESS)),
]);
const OBJECT: Shape = Shape::Fields(&[
    ("apiVersion", Shape::Any),
    ("kind", Shape::Any),
    ("metadata", Shape::Any),
    ("spec", SPEC),
    ("status", Shape::Any),
]);

/// Reports fields `value` has that `shape` does not (types are the typed
/// decoding's business).
fn unknown_fields(value: &Value, shape: &Shape, path: &str, out: &mut Problems) {
    match (shape, value) {
        (Shape::Fields(fields), Value::Object(map)) => {
            // Sorted, whatever order the map keeps, so errors are stable.
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by_key(|(key, _)| *key);
            for (key, child) in entries {
                let at = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                match fields.iter().find(|(name, _)| name == key) {
                    Some((_, shape)) => unknown_fields(child, shape, &at, out),
                    None => {
                        let names: Vec<String> =
                            fields.iter().map(|(name, _)| format!("`{name}`")).collect();
                        out.add(
                            at,
                            format!(
                                "unknown field `{key}`, expected one of {}",
                                names.join(", ")
                            ),
                        );
                    }
                }
            }
        }
        (Shape::List(item), Value::Array(items)) => {
            for (i, child) in items.iter().enumerate() {
                unknown_fields(child, item, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

/// A Kubernetes label selector (absent: everything) as a model selector
/// whose keys carry `prefix`, after checking its keys, values and
/// operators.
fn selector(
    selector: Option<&LabelSelector>,
    prefix: &str,
    path: &str,
    out: &mut Problems,
) -> EndpointSelector {
    let Some(selector) = selector else {
        return EndpointSelector::default();
    };
    let plain = EndpointSelector {
        match_labels: selector.match_labels.clone().unwrap_or_default(),
        match_expressions: selector
            .match_expressions
            .iter()
            .flatten()
            .map(|r| LabelSelectorRequirement {
                key: r.key.clone(),
                operator: r.operator.clone(),
                values: r.values.clone().unwrap_or_default(),
            })
            .collect(),
    };
    checks::selector(&plain, checks::k8s_label_key, path, out);
    EndpointSelector {
        match_labels: plain
            .match_labels
            .into_iter()
            .map(|(key, value)| (format!("{prefix}{key}"), value))
            .collect(),
        match_expressions: plain
            .match_expressions
            .into_iter()
            .map(|r| LabelSelectorRequirement {
                key: format!("{prefix}{}", r.key),
                ..r
            })
            .collect(),
    }
}

/// What one peer of a NetworkPolicy rule becomes.
enum Peer {
    Endpoints(EndpointSelector),
    Cidr(CidrRule),
}

fn peer(peer: &NetworkPolicyPeer, namespace: &str, path: &str, out: &mut Problems) -> Option<Peer> {
    let pods = peer.pod_selector.as_ref();
    let namespaces = peer.namespace_selector.as_ref();
    if let Some(block) = &peer.ip_block {
        if pods.is_some() || namespaces.is_some() {
            out.add(
                path,
                "ipBlock cannot be combined with podSelector or namespaceSelector in one peer",
            );
            return None;
        }
        return ip_block(block, &format!("{path}.ipBlock"), out).map(Peer::Cidr);
    }
    if pods.is_none() && namespaces.is_none() {
        out.add(
            path,
            "a peer needs podSelector, namespaceSelector or ipBlock",
        );
        return None;
    }
    let mut selected = selector(pods, POD_LABELS, &format!("{path}.podSelector"), out);
    match namespaces {
        None => {
            selected
                .match_labels
                .insert(POD_NAMESPACE.into(), namespace.into());
        }
        Some(namespaces) => {
            let by_namespace = selector(
                Some(namespaces),
                NAMESPACE_LABELS,
                &format!("{path}.namespaceSelector"),
                out,
            );
            selected.match_labels.extend(by_namespace.match_labels);
            selected
                .match_expressions
                .extend(by_namespace.match_expressions);
            selected.match_expressions.push(LabelSelectorRequirement {
                key: POD_NAMESPACE.into(),
                operator: "Exists".into(),
                values: Vec::new(),
            });
        }
    }
    Some(Peer::Endpoints(selected))
}

fn ip_block(block: &IPBlock, path: &str, out: &mut Problems) -> Option<CidrRule> {
    let cidr = match checks::prefix(&block.cidr, false) {
        Ok(cidr) => Some(cidr),
        Err(e) => {
            out.add(format!("{path}.cidr"), e);
            None
        }
    };
    let except = block.except.clone().unwrap_or_default();
    for (i, text) in except.iter().enumerate() {
        let at = format!("{path}.except[{i}]");
        match (checks::prefix(text, false), cidr) {
            (Err(e), _) => out.add(at, e),
            (Ok(inner), Some(outer)) if !checks::covers(outer, inner, true) => out.add(
                at,
                format!(
                    "{text:?} is not a strict subset of the cidr {:?}",
                    block.cidr
                ),
            ),
            _ => {}
        }
    }
    cidr.map(|_| CidrRule {
        cidr: Some(block.cidr.clone()),
        except,
        ..CidrRule::default()
    })
}

fn ports(
    ports: Option<&Vec<NetworkPolicyPort>>,
    path: &str,
    out: &mut Problems,
) -> Option<Vec<PortRule>> {
    let ports = ports.filter(|p| !p.is_empty())?;
    Some(
        ports
            .iter()
            .enumerate()
            .map(|(i, p)| PortRule {
                ports: vec![port(p, &format!("{path}[{i}]"), out)],
                ..PortRule::default()
            })
            .collect(),
    )
}

fn port(port: &NetworkPolicyPort, path: &str, out: &mut Problems) -> PortProtocol {
    let protocol = port.protocol.as_deref().unwrap_or("TCP");
    if let Err(e) = checks::protocol(protocol, &K8S_PROTOCOLS) {
        out.add(format!("{path}.protocol"), e);
    }
    let number = match &port.port {
        None => None,
        Some(IntOrString::Int(n)) => {
            if !(1..=65535).contains(n) {
                out.add(
                    format!("{path}.port"),
                    format!("{n} is not a port (1-65535)"),
                );
            }
            Some(*n)
        }
        Some(IntOrString::String(name)) => {
            if !checks::is_service_name(name, false) {
                out.add(
                    format!("{path}.port"),
                    format!(
                        "{name:?} is not a port name (at most 15 lowercase letters, digits and \
                         '-', with a letter, no '-' at either end or twice in a row)"
                    ),
                );
            }
            None
        }
    };
    if let Some(end) = port.end_port {
        let at = format!("{path}.endPort");
        match (&port.port, number) {
            (None, _) => out.add(at, "endPort needs a port"),
            (Some(IntOrString::String(_)), _) => {
                out.add(at, "endPort needs a numeric port, not a port name");
            }
            (_, Some(start)) if end < start => {
                out.add(at, format!("endPort {end} is below port {start}"));
            }
            _ if !(1..=65535).contains(&end) => {
                out.add(at, format!("{end} is not a port (1-65535)"));
            }
            _ => {}
        }
    }
    PortProtocol {
        port: Some(match &port.port {
            None => PortValue::Number(0),
            Some(IntOrString::Int(n)) => PortValue::Number(i64::from(*n)),
            Some(IntOrString::String(name)) => PortValue::Text(name.clone()),
        }),
        end_port: port.end_port,
        protocol: Some(protocol.into()),
    }
}

/// Every peer (a rule without `from` / `to`).
fn everyone() -> Option<Vec<String>> {
    Some(vec!["all".into()])
}

fn ingress_rule(
    rule: &NetworkPolicyIngressRule,
    namespace: &str,
    path: &str,
    out: &mut Problems,
) -> Vec<IngressRule> {
    let to_ports = ports(rule.ports.as_ref(), &format!("{path}.ports"), out);
    let peers = rule.from.as_deref().unwrap_or_default();
    if peers.is_empty() {
        return vec![IngressRule {
            from_entities: everyone(),
            to_ports,
            ..IngressRule::default()
        }];
    }
    peers
        .iter()
        .enumerate()
        .filter_map(|(i, p)| peer(p, namespace, &format!("{path}.from[{i}]"), out))
        .map(|p| match p {
            Peer::Endpoints(selector) => IngressRule {
                from_endpoints: Some(vec![selector]),
                to_ports: to_ports.clone(),
                ..IngressRule::default()
            },
            Peer::Cidr(cidr) => IngressRule {
                from_cidr_set: Some(vec![cidr]),
                to_ports: to_ports.clone(),
                ..IngressRule::default()
            },
        })
        .collect()
}

fn egress_rule(
    rule: &NetworkPolicyEgressRule,
    namespace: &str,
    path: &str,
    out: &mut Problems,
) -> Vec<EgressRule> {
    let to_ports = ports(rule.ports.as_ref(), &format!("{path}.ports"), out);
    let peers = rule.to.as_deref().unwrap_or_default();
    if peers.is_empty() {
        return vec![EgressRule {
            to_entities: everyone(),
            to_ports,
            ..EgressRule::default()
        }];
    }
    peers
        .iter()
        .enumerate()
        .filter_map(|(i, p)| peer(p, namespace, &format!("{path}.to[{i}]"), out))
        .map(|p| match p {
            Peer::Endpoints(selector) => EgressRule {
                to_endpoints: Some(vec![selector]),
                to_ports: to_ports.clone(),
                ..EgressRule::default()
            },
            Peer::Cidr(cidr) => EgressRule {
                to_cidr_set: Some(vec![cidr]),
                to_ports: to_ports.clone(),
                ..EgressRule::default()
            },
        })
        .collect()
}
