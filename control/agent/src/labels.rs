//! Security-relevant labels of an endpoint, in Cilium's conventions.
//!
//! A pod's identity is the set of its labels that matter for policy, each
//! written `source:key=value`:
//! - its own labels as `k8s:<key>=<value>`, minus the ones Cilium ignores by
//!   default (hashes, generations and other per-pod values that would mint one
//!   identity per pod; see [`ignored_pod_label`]);
//! - `k8s:io.kubernetes.pod.namespace=<namespace>`;
//! - every label of its namespace as `k8s:io.cilium.k8s.namespace.labels.<key>=<value>`,
//!   always including `kubernetes.io/metadata.name=<namespace>` (as the API
//!   server sets it), even when the Namespace object is not known;
//! - `k8s:io.cilium.k8s.policy.serviceaccount=<service account>`;
//! - `k8s:io.cilium.k8s.policy.cluster=<cluster name>`.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::{Namespace, Pod};

pub const NAMESPACE_LABEL: &str = "io.kubernetes.pod.namespace";
pub const NAMESPACE_LABELS_PREFIX: &str = "io.cilium.k8s.namespace.labels.";
pub const SERVICE_ACCOUNT_LABEL: &str = "io.cilium.k8s.policy.serviceaccount";
pub const CLUSTER_LABEL: &str = "io.cilium.k8s.policy.cluster";
/// The label the API server puts on every Namespace: its name.
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// A sorted set of `source:key=value` labels; its text form is the identity's key.
pub type LabelSet = BTreeSet<String>;

/// Key prefixes Cilium leaves out of identities by default
/// (Documentation/operations/performance/scalability/identity-relevant-labels.rst),
/// plus the per-pod StatefulSet and indexed-Job labels that cause identity
/// explosion (cilium/cilium#28003, #31964).
const IGNORED_PREFIXES: [&str; 12] = [
    "io.kubernetes",
    "kubernetes.io",
    "beta.kubernetes.io",
    "k8s.io",
    "pod-template-generation",
    "pod-template-hash",
    "controller-revision-hash",
    "annotation.",
    "etcd_node",
    "statefulset.kubernetes.io/pod-name",
    "apps.kubernetes.io/pod-index",
    "batch.kubernetes.io/job-completion-index",
];

/// Whether a pod label key is left out of the pod's identity.
pub fn ignored_pod_label(key: &str) -> bool {
    IGNORED_PREFIXES.iter().any(|p| key.starts_with(p))
}

/// The identity labels of `pod`, given its namespace object (if known).
pub fn pod_identity_labels(pod: &Pod, namespace: Option<&Namespace>, cluster: &str) -> LabelSet {
    let mut set = LabelSet::new();
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    if let Some(labels) = &pod.metadata.labels {
        for (key, value) in labels {
            if !ignored_pod_label(key) {
                set.insert(format!("k8s:{key}={value}"));
            }
        }
    }
    set.insert(format!("k8s:{NAMESPACE_LABEL}={ns}"));
    if let Some(labels) = namespace.and_then(|n| n.metadata.labels.as_ref()) {
        for (key, value) in labels {
            if key != NAMESPACE_NAME_LABEL {
                set.insert(format!("k8s:{NAMESPACE_LABELS_PREFIX}{key}={value}"));
            }
        }
    }
    // The API server gives every Namespace this label with its own name
    // (and refuses another value); standalone manifests and namespaces not
    // (yet) read carry it too, so `namespaceSelector` on it always works.
    set.insert(format!(
        "k8s:{NAMESPACE_LABELS_PREFIX}{NAMESPACE_NAME_LABEL}={ns}"
    ));
    let sa = pod
        .spec
        .as_ref()
        .and_then(|s| s.service_account_name.as_deref())
        .filter(|s| !s.is_empty())
        .unwrap_or("default");
    set.insert(format!("k8s:{SERVICE_ACCOUNT_LABEL}={sa}"));
    set.insert(format!("k8s:{CLUSTER_LABEL}={cluster}"));
    set
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(yaml: &str) -> Pod {
        serde_yaml_ng::from_str(yaml).unwrap()
    }

    #[test]
    fn labels_follow_cilium_conventions() {
        let p = pod(
            "metadata: {name: web-5d9, namespace: shop, labels: {app: web, pod-template-hash: 5d9, \
             app.kubernetes.io/name: web, statefulset.kubernetes.io/pod-name: web-0}}\n\
             spec: {serviceAccountName: frontend, containers: []}",
        );
        let ns: Namespace = serde_yaml_ng::from_str(
            "metadata: {name: shop, labels: {team: a, kubernetes.io/metadata.name: shop}}",
        )
        .unwrap();
        let got: Vec<String> = pod_identity_labels(&p, Some(&ns), "c1")
            .into_iter()
            .collect();
        assert_eq!(
            got,
            [
                "k8s:app.kubernetes.io/name=web",
                "k8s:app=web",
                "k8s:io.cilium.k8s.namespace.labels.kubernetes.io/metadata.name=shop",
                "k8s:io.cilium.k8s.namespace.labels.team=a",
                "k8s:io.cilium.k8s.policy.cluster=c1",
                "k8s:io.cilium.k8s.policy.serviceaccount=frontend",
                "k8s:io.kubernetes.pod.namespace=shop",
            ]
        );
    }

    #[test]
    fn defaults_without_namespace_object_or_service_account() {
        let p = pod("metadata: {name: a}\nspec: {containers: []}");
        let got: Vec<String> = pod_identity_labels(&p, None, "default")
            .into_iter()
            .collect();
        assert_eq!(
            got,
            [
                "k8s:io.cilium.k8s.namespace.labels.kubernetes.io/metadata.name=default",
                "k8s:io.cilium.k8s.policy.cluster=default",
                "k8s:io.cilium.k8s.policy.serviceaccount=default",
                "k8s:io.kubernetes.pod.namespace=default",
            ]
        );
    }

    /// The namespace-name label is the namespace's name whatever the object
    /// says (the API server would refuse another value).
    #[test]
    fn namespace_name_label_is_always_the_name() {
        let p = pod("metadata: {name: a, namespace: x}\nspec: {containers: []}");
        let ns: Namespace = serde_yaml_ng::from_str(
            "metadata: {name: x, labels: {kubernetes.io/metadata.name: other, ns: x}}",
        )
        .unwrap();
        let got = pod_identity_labels(&p, Some(&ns), "c");
        let ns_labels: Vec<&String> = got
            .iter()
            .filter(|l| l.starts_with("k8s:io.cilium.k8s.namespace.labels."))
            .collect();
        assert_eq!(
            ns_labels,
            [
                "k8s:io.cilium.k8s.namespace.labels.kubernetes.io/metadata.name=x",
                "k8s:io.cilium.k8s.namespace.labels.ns=x",
            ]
        );
    }
}
