//! Which workload a flow endpoint belongs to: the service map's nodes.
//!
//! A pod is shown as its workload, not as one pod: namespace plus its `app`
//! label (also `app.kubernetes.io/name`), else the pod name without the
//! suffix its controller generated. Peers that are not pods are their
//! reserved identity (`world`, `host`, `remote-node`, ...), else their
//! address.

use sluice_api::hubble::Endpoint;

/// A service map node.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Workload {
    /// `namespace/name` for pods, the reserved name (`world`) or the address.
    pub id: String,
    /// Empty for reserved identities and addresses.
    pub namespace: String,
    /// `pod`, `reserved` or `address`.
    pub kind: &'static str,
}

/// The node of a flow's endpoint; `ip` names a peer without an endpoint.
pub fn workload_of(endpoint: Option<&Endpoint>, ip: &str) -> Workload {
    if let Some(endpoint) = endpoint {
        if let Some(app) = app_label(&endpoint.labels) {
            return pod_workload(&endpoint.namespace, app);
        }
        if !endpoint.pod_name.is_empty() {
            return pod_workload(
                &endpoint.namespace,
                strip_generated_suffix(&endpoint.pod_name),
            );
        }
        if let Some(reserved) = endpoint
            .labels
            .iter()
            .find_map(|l| l.strip_prefix("reserved:"))
        {
            return Workload {
                id: reserved.to_string(),
                namespace: String::new(),
                kind: "reserved",
            };
        }
    }
    Workload {
        id: if ip.is_empty() { "unknown" } else { ip }.to_string(),
        namespace: String::new(),
        kind: "address",
    }
}

fn pod_workload(namespace: &str, name: &str) -> Workload {
    Workload {
        id: format!("{namespace}/{name}"),
        namespace: namespace.to_string(),
        kind: "pod",
    }
}

/// `k8s:app=web` (or `k8s:app.kubernetes.io/name=web`) -> `web`.
fn app_label(labels: &[String]) -> Option<&str> {
    ["app", "app.kubernetes.io/name"].iter().find_map(|key| {
        labels.iter().find_map(|label| {
            let (_, key_value) = label.split_once(':')?;
            let (k, v) = key_value.split_once('=')?;
            (k == *key && !v.is_empty()).then_some(v)
        })
    })
}

/// Characters Kubernetes generates name suffixes from.
const SAFE_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// The name of the controller behind a pod name: Deployment pods are
/// `name-<template hash>-<5 chars>`, DaemonSet and Job pods `name-<5
/// chars>`, StatefulSet pods `name-<ordinal>`. Generated parts use
/// Kubernetes' safe alphabet (no vowels, no 0, 1, 3), so `web-front` stays.
pub fn strip_generated_suffix(pod: &str) -> &str {
    let generated = |part: &str, lengths: &[usize]| {
        lengths.contains(&part.len()) && part.bytes().all(|b| SAFE_ALPHABET.contains(&b))
    };
    let Some((rest, last)) = pod.rsplit_once('-') else {
        return pod;
    };
    if rest.is_empty() {
        return pod;
    }
    if !last.is_empty() && last.bytes().all(|b| b.is_ascii_digit()) {
        return rest; // StatefulSet ordinal
    }
    if !generated(last, &[5]) {
        return pod;
    }
    match rest.rsplit_once('-') {
        Some((name, hash)) if !name.is_empty() && generated(hash, &[8, 9, 10]) => name,
        _ => rest,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(namespace: &str, pod: &str, labels: &[&str]) -> Endpoint {
        Endpoint {
            namespace: namespace.into(),
            pod_name: pod.into(),
            labels: labels.iter().map(|l| l.to_string()).collect(),
            ..Endpoint::default()
        }
    }

    #[test]
    fn pods_are_named_by_app_label_else_by_their_controller() {
        let by_app = endpoint(
            "shop",
            "web-7d9f8b6c5d-x2k4p",
            &["k8s:app=web", "k8s:tier=front"],
        );
        assert_eq!(workload_of(Some(&by_app), "10.0.0.1").id, "shop/web");
        let by_name = endpoint("shop", "cart-7d9f8b6c5d-x2k4p", &["k8s:tier=back"]);
        assert_eq!(workload_of(Some(&by_name), "10.0.0.2").id, "shop/cart");
        assert_eq!(strip_generated_suffix("agent-4x7zq"), "agent");
        assert_eq!(strip_generated_suffix("agent-bcdfg"), "agent");
        assert_eq!(strip_generated_suffix("db-0"), "db");
        assert_eq!(strip_generated_suffix("web-front"), "web-front");
        assert_eq!(strip_generated_suffix("client"), "client");
        assert_eq!(strip_generated_suffix("pod-abcde"), "pod-abcde");
    }

    #[test]
    fn peers_without_pods_are_reserved_identities_or_addresses() {
        let world = endpoint("", "", &["reserved:world"]);
        let node = workload_of(Some(&world), "1.1.1.1");
        assert_eq!((node.id.as_str(), node.kind), ("world", "reserved"));
        let node = workload_of(None, "192.0.2.7");
        assert_eq!((node.id.as_str(), node.kind), ("192.0.2.7", "address"));
    }
}
