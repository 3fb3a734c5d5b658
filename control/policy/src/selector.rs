//! Label selectors over Cilium labels, as the compiler evaluates them.
//!
//! Labels are `source:key=value` strings (`k8s:app=web`,
//! `k8s:io.kubernetes.pod.namespace=shop`, `cidr:10.0.0.0/8`); reserved
//! identities carry `reserved:<name>` with an empty value. A selector key may
//! name a source (`k8s:app`, `reserved:host`) or not (`app`, `any:app`: any
//! source), as in Cilium.
//!
//! Three layers:
//! * [`Selector`]: a validated, normalized selector (sorted requirements, so
//!   equal selectors hash equal and the compiler evaluates each once), with
//!   [`Selector::matches`] over one label set;
//! * scoping ([`subject_selector`], [`peer_selector`]): the namespace terms
//!   Cilium adds to the selectors of a CiliumNetworkPolicy (or a
//!   NetworkPolicy) and of a clusterwide policy;
//! * [`LabelIndex`]: many label sets indexed by label, so one selector is
//!   evaluated over a thousand identities with a few bitset operations
//!   instead of a thousand label-set walks; and [`Entity`] expansion over
//!   such an index.

use std::borrow::Cow;
use std::collections::HashMap;

use crate::compile::LabelSet;
use crate::model::{EndpointSelector, Policy, PolicyKind};

/// `io.kubernetes.pod.namespace`: a pod's namespace.
pub const POD_NAMESPACE_KEY: &str = "io.kubernetes.pod.namespace";
/// Prefix of a pod's namespace labels (`io.cilium.k8s.namespace.labels.team`).
pub const NAMESPACE_LABELS_PREFIX: &str = "io.cilium.k8s.namespace.labels.";
/// `io.cilium.k8s.policy.cluster`: the cluster a pod belongs to.
pub const CLUSTER_KEY: &str = "io.cilium.k8s.policy.cluster";

/// Splits a label into (source, key, value). `reserved:host` is
/// (`reserved`, `host`, ``); a label without a source gets `unspec`, as in
/// Cilium. The key ends at the first `=` (an IPv6 `cidr:` key keeps its
/// colons: only the first one separates the source).
pub fn split_label(label: &str) -> (&str, &str, &str) {
    let (source, rest) = label.split_once(':').unwrap_or(("unspec", label));
    let (key, value) = rest.split_once('=').unwrap_or((rest, ""));
    (source, key, value)
}

/// Splits a selector key into its source (`None`: any source) and key.
fn split_selector_key(key: &str) -> (Option<&str>, &str) {
    match key.split_once(':') {
        Some(("any", key)) => (None, key),
        Some((source, key)) => (Some(source), key),
        None => (None, key),
    }
}

/// A requirement's operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Operator {
    In,
    NotIn,
    Exists,
    DoesNotExist,
}

impl Operator {
    fn parse(text: &str) -> Option<Operator> {
        Some(match text {
            "In" => Operator::In,
            "NotIn" => Operator::NotIn,
            "Exists" => Operator::Exists,
            "DoesNotExist" => Operator::DoesNotExist,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Operator::In => "In",
            Operator::NotIn => "NotIn",
            Operator::Exists => "Exists",
            Operator::DoesNotExist => "DoesNotExist",
        }
    }
}

/// One term of a selector. Kubernetes semantics: `NotIn` and
/// `DoesNotExist` also match a label set without the key.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Requirement {
    /// `None`: a label of any source. (The common sources are not
    /// allocated: a large policy set has tens of thousands of these.)
    pub source: Option<Cow<'static, str>>,
    pub key: String,
    pub operator: Operator,
    /// Sorted, without repeats.
    pub values: Vec<String>,
}

impl Requirement {
    pub fn new(source: Option<&str>, key: &str, operator: Operator, values: &[&str]) -> Self {
        let source = source.map(|s| match s {
            "k8s" => Cow::Borrowed("k8s"),
            "reserved" => Cow::Borrowed("reserved"),
            other => Cow::Owned(other.to_string()),
        });
        let mut values: Vec<String> = values.iter().map(|v| v.to_string()).collect();
        values.sort();
        values.dedup();
        Requirement {
            source,
            key: key.to_string(),
            operator,
            values,
        }
    }

    fn source_matches(&self, source: &str) -> bool {
        self.source.as_deref().is_none_or(|s| s == source)
    }

    /// Whether some label of `labels` has this key (and a matching source)
    /// and a value in `values`.
    fn has_value_in(&self, labels: &LabelSet) -> bool {
        labels.iter().any(|label| {
            let (source, key, value) = split_label(label);
            key == self.key && self.source_matches(source) && self.has_value(value)
        })
    }

    fn has_value(&self, value: &str) -> bool {
        self.values
            .binary_search_by(|v| v.as_str().cmp(value))
            .is_ok()
    }

    fn has_key(&self, labels: &LabelSet) -> bool {
        labels.iter().any(|label| {
            let (source, key, _) = split_label(label);
            key == self.key && self.source_matches(source)
        })
    }

    pub fn matches(&self, labels: &LabelSet) -> bool {
        match self.operator {
            Operator::In => self.has_value_in(labels),
            Operator::NotIn => !self.has_value_in(labels),
            Operator::Exists => self.has_key(labels),
            Operator::DoesNotExist => !self.has_key(labels),
        }
    }
}

/// Why a selector is invalid; the text names the field inside the selector.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    #[error("matchLabels: empty key")]
    EmptyLabelKey,
    #[error("matchExpressions[{index}].key: empty key")]
    EmptyExpressionKey { index: usize },
    #[error(
        "matchExpressions[{index}].operator: {operator:?} is not In, NotIn, Exists or DoesNotExist"
    )]
    UnknownOperator { index: usize, operator: String },
    #[error("matchExpressions[{index}].values: {operator} needs at least one value")]
    MissingValues {
        index: usize,
        operator: &'static str,
    },
    #[error("matchExpressions[{index}].values: {operator} takes no values")]
    UnexpectedValues {
        index: usize,
        operator: &'static str,
    },
}

/// A validated selector: the AND of its requirements (none: matches
/// everything). Requirements are kept sorted and without duplicates, so two
/// selectors that mean the same written the same way are equal.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Selector {
    requirements: Vec<Requirement>,
}

impl Selector {
    /// The selector that matches every label set.
    pub fn everything() -> Selector {
        Selector::default()
    }

    /// Validates and normalizes a selector as written in a policy.
    pub fn from_model(selector: &EndpointSelector) -> Result<Selector, SelectorError> {
        let mut requirements = Vec::new();
        for (key, value) in &selector.match_labels {
            let (source, key) = split_selector_key(key);
            if key.is_empty() {
                return Err(SelectorError::EmptyLabelKey);
            }
            requirements.push(Requirement::new(source, key, Operator::In, &[value]));
        }
        for (index, expression) in selector.match_expressions.iter().enumerate() {
            let (source, key) = split_selector_key(&expression.key);
            if key.is_empty() {
                return Err(SelectorError::EmptyExpressionKey { index });
            }
            let operator = Operator::parse(&expression.operator).ok_or_else(|| {
                SelectorError::UnknownOperator {
                    index,
                    operator: expression.operator.clone(),
                }
            })?;
            let takes_values = matches!(operator, Operator::In | Operator::NotIn);
            if takes_values && expression.values.is_empty() {
                return Err(SelectorError::MissingValues {
                    index,
                    operator: operator.name(),
                });
            }
            if !takes_values && !expression.values.is_empty() {
                return Err(SelectorError::UnexpectedValues {
                    index,
                    operator: operator.name(),
                });
            }
            let values: Vec<&str> = expression.values.iter().map(String::as_str).collect();
            requirements.push(Requirement::new(source, key, operator, &values));
        }
        Ok(Selector::from_requirements(requirements))
    }

    pub fn from_requirements(mut requirements: Vec<Requirement>) -> Selector {
        requirements.sort();
        requirements.dedup();
        Selector { requirements }
    }

    pub fn requirements(&self) -> &[Requirement] {
        &self.requirements
    }

    /// This selector with one more requirement.
    pub fn with(&self, requirement: Requirement) -> Selector {
        let mut requirements = self.requirements.clone();
        requirements.push(requirement);
        Selector::from_requirements(requirements)
    }

    /// Whether `labels` satisfies every requirement.
    pub fn matches(&self, labels: &LabelSet) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }

    /// Whether a requirement is on `key` from source `k8s` or any source
    /// (what Cilium's `HasKey("k8s:…") || HasKey("any:…")` checks).
    fn has_k8s_key(&self, key: &str) -> bool {
        self.requirements
            .iter()
            .any(|r| r.key == key && matches!(r.source.as_deref(), None | Some("k8s")))
    }

    fn has_k8s_key_prefix(&self, prefix: &str) -> bool {
        self.requirements
            .iter()
            .any(|r| r.key.starts_with(prefix) && matches!(r.source.as_deref(), None | Some("k8s")))
    }

    fn has_source(&self, source: &str) -> bool {
        self.requirements
            .iter()
            .any(|r| r.source.as_deref() == Some(source))
    }

    /// Whether a requirement names the reserved label `name`
    /// (`reserved:init`).
    pub fn has_reserved_key(&self, name: &str) -> bool {
        self.requirements
            .iter()
            .any(|r| r.key == name && r.source.as_deref() == Some("reserved"))
    }
}

/// Where a policy's selectors apply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope<'a> {
    /// A CiliumNetworkPolicy or NetworkPolicy in this namespace.
    Namespace(&'a str),
    /// A CiliumClusterwideNetworkPolicy.
    Clusterwide,
}

impl<'a> Scope<'a> {
    pub fn of(policy: &'a Policy) -> Scope<'a> {
        match policy.kind {
            PolicyKind::CiliumClusterwideNetworkPolicy => Scope::Clusterwide,
            PolicyKind::CiliumNetworkPolicy | PolicyKind::NetworkPolicy => {
                Scope::Namespace(&policy.namespace)
            }
        }
    }
}

fn namespace_is(namespace: &str) -> Requirement {
    Requirement::new(Some("k8s"), POD_NAMESPACE_KEY, Operator::In, &[namespace])
}

/// A rule's `endpointSelector` as it applies: in a namespaced policy only
/// to pods of the policy's namespace (any namespace term the user wrote is
/// kept and AND-ed, so a different one selects nothing); in a clusterwide
/// policy as written.
pub fn subject_selector(selector: &Selector, scope: Scope<'_>) -> Selector {
    match scope {
        Scope::Namespace(namespace) => selector.with(namespace_is(namespace)),
        Scope::Clusterwide => selector.clone(),
    }
}

/// A peer selector (`fromEndpoints`, `toEndpoints`, `fromRequires`,
/// `toRequires`) as it applies, as Cilium scopes it:
/// * a selector with a `reserved:` key is left alone (reserved identities
///   have no namespace);
/// * one that names the pod namespace (`k8s:` or any source) is left alone;
/// * in a namespaced policy, one that selects on namespace labels
///   (`io.cilium.k8s.namespace.labels.*`) is left alone, any other gets the
///   policy's namespace;
/// * in a clusterwide policy it gets `Exists k8s:io.kubernetes.pod.namespace`
///   (it selects pods, not reserved identities: `{}` means every pod of the
///   cluster), unless the rule's endpointSelector selects `reserved:init`
///   (initializing endpoints carry no namespace label).
pub fn peer_selector(
    selector: &Selector,
    scope: Scope<'_>,
    subject_selects_init: bool,
) -> Selector {
    if selector.has_source("reserved") || selector.has_k8s_key(POD_NAMESPACE_KEY) {
        return selector.clone();
    }
    match scope {
        Scope::Namespace(namespace) => {
            if selector.has_k8s_key_prefix(NAMESPACE_LABELS_PREFIX) {
                selector.clone()
            } else {
                selector.with(namespace_is(namespace))
            }
        }
        Scope::Clusterwide if subject_selects_init => selector.clone(),
        Scope::Clusterwide => selector.with(Requirement::new(
            Some("k8s"),
            POD_NAMESPACE_KEY,
            Operator::Exists,
            &[],
        )),
    }
}

/// Whether some rule of `policy` selects an endpoint with `labels` (for
/// listings: which endpoints a policy applies to). Rules whose selector is
/// invalid select nothing.
pub fn policy_selects(policy: &Policy, labels: &LabelSet) -> bool {
    let scope = Scope::of(policy);
    policy.rules.iter().any(|(_, rule)| {
        rule.endpoint_selector
            .as_ref()
            .and_then(|s| Selector::from_model(s).ok())
            .is_some_and(|s| subject_selector(&s, scope).matches(labels))
    })
}

/// A set of positions (identities or endpoints, by index in the list a
/// [`LabelIndex`] was built from).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Bitset {
    words: Vec<u64>,
    len: usize,
}

impl Bitset {
    pub fn empty(len: usize) -> Bitset {
        Bitset {
            words: vec![0; len.div_ceil(64)],
            len,
        }
    }

    pub fn full(len: usize) -> Bitset {
        let mut set = Bitset {
            words: vec![u64::MAX; len.div_ceil(64)],
            len,
        };
        set.clear_tail();
        set
    }

    /// Zeroes the bits past `len` in the last word (kept zero so that
    /// equality and emptiness need no masking).
    fn clear_tail(&mut self) {
        let used = self.len % 64;
        if used != 0 {
            if let Some(last) = self.words.last_mut() {
                *last &= (1u64 << used) - 1;
            }
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn insert(&mut self, index: usize) {
        self.words[index / 64] |= 1 << (index % 64);
    }

    pub fn contains(&self, index: usize) -> bool {
        index < self.len && self.words[index / 64] & (1 << (index % 64)) != 0
    }

    pub fn is_empty(&self) -> bool {
        self.words.iter().all(|w| *w == 0)
    }

    pub fn count(&self) -> usize {
        self.words.iter().map(|w| w.count_ones() as usize).sum()
    }

    pub fn intersect_with(&mut self, other: &Bitset) {
        for (a, b) in self.words.iter_mut().zip(&other.words) {
            *a &= b;
        }
    }

    pub fn union_with(&mut self, other: &Bitset) {
        for (a, b) in self.words.iter_mut().zip(&other.words) {
            *a |= b;
        }
    }

    pub fn subtract(&mut self, other: &Bitset) {
        for (a, b) in self.words.iter_mut().zip(&other.words) {
            *a &= !b;
        }
    }

    pub fn complement(&mut self) {
        for word in &mut self.words {
            *word = !*word;
        }
        self.clear_tail();
    }

    /// The positions in the set, ascending.
    pub fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        self.words.iter().enumerate().flat_map(|(at, word)| {
            let mut word = *word;
            std::iter::from_fn(move || {
                if word == 0 {
                    return None;
                }
                let bit = word.trailing_zeros() as usize;
                word &= word - 1;
                Some(at * 64 + bit)
            })
        })
    }
}

/// The members that carry one (source, value) of a key.
#[derive(Clone, Debug)]
struct Holders {
    source: String,
    value: String,
    members: Bitset,
}

/// Label sets indexed by label: key -> (source, value) -> members.
#[derive(Clone, Debug)]
pub struct LabelIndex {
    len: usize,
    by_key: HashMap<String, Vec<Holders>>,
}

impl LabelIndex {
    /// Indexes `sets`; positions in the results are positions in `sets`.
    pub fn new<'a>(sets: impl IntoIterator<Item = &'a LabelSet>) -> LabelIndex {
        let sets: Vec<&LabelSet> = sets.into_iter().collect();
        let len = sets.len();
        let mut by_key: HashMap<String, Vec<Holders>> = HashMap::new();
        for (at, labels) in sets.iter().enumerate() {
            for label in labels.iter() {
                let (source, key, value) = split_label(label);
                let holders = by_key.entry(key.to_string()).or_default();
                match holders
                    .iter_mut()
                    .find(|h| h.source == source && h.value == value)
                {
                    Some(h) => h.members.insert(at),
                    None => {
                        let mut members = Bitset::empty(len);
                        members.insert(at);
                        holders.push(Holders {
                            source: source.to_string(),
                            value: value.to_string(),
                            members,
                        });
                    }
                }
            }
        }
        LabelIndex { len, by_key }
    }

    /// How many label sets the index holds.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Members with a label of `requirement`'s key and source, restricted to
    /// values in `values` when given.
    fn holders(&self, requirement: &Requirement, values_too: bool) -> Bitset {
        let mut out = Bitset::empty(self.len);
        for holder in self.by_key.get(&requirement.key).into_iter().flatten() {
            if requirement.source_matches(&holder.source)
                && (!values_too || requirement.has_value(&holder.value))
            {
                out.union_with(&holder.members);
            }
        }
        out
    }

    fn requirement(&self, requirement: &Requirement) -> Bitset {
        let mut set = match requirement.operator {
            Operator::In | Operator::NotIn => self.holders(requirement, true),
            Operator::Exists | Operator::DoesNotExist => self.holders(requirement, false),
        };
        if matches!(
            requirement.operator,
            Operator::NotIn | Operator::DoesNotExist
        ) {
            set.complement();
        }
        set
    }

    /// The members `selector` matches.
    pub fn select(&self, selector: &Selector) -> Bitset {
        let mut out = Bitset::full(self.len);
        for requirement in selector.requirements() {
            out.intersect_with(&self.requirement(requirement));
            if out.is_empty() {
                break;
            }
        }
        out
    }

    /// The members carrying exactly `label` (`reserved:host`,
    /// `cidr:10.0.0.0/8`).
    pub fn with_label(&self, label: &str) -> Bitset {
        let (source, key, value) = split_label(label);
        let requirement = Requirement::new(Some(source), key, Operator::In, &[value]);
        self.holders(&requirement, true)
    }

    /// The members carrying a label of `source` whose key passes `keep`.
    pub fn with_source_key(&self, source: &str, keep: impl Fn(&str) -> bool) -> Bitset {
        let mut out = Bitset::empty(self.len);
        for (key, holders) in &self.by_key {
            if !keep(key) {
                continue;
            }
            for holder in holders.iter().filter(|h| h.source == source) {
                out.union_with(&holder.members);
            }
        }
        out
    }
}

/// A Cilium entity (`fromEntities` / `toEntities`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Entity {
    All,
    World,
    WorldIpv4,
    WorldIpv6,
    Cluster,
    Host,
    RemoteNode,
    KubeApiserver,
    Init,
    Health,
    Unmanaged,
    Ingress,
    None,
}

impl Entity {
    pub const ALL: [Entity; 13] = [
        Entity::All,
        Entity::World,
        Entity::WorldIpv4,
        Entity::WorldIpv6,
        Entity::Cluster,
        Entity::Host,
        Entity::RemoteNode,
        Entity::KubeApiserver,
        Entity::Init,
        Entity::Health,
        Entity::Unmanaged,
        Entity::Ingress,
        Entity::None,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Entity::All => "all",
            Entity::World => "world",
            Entity::WorldIpv4 => "world-ipv4",
            Entity::WorldIpv6 => "world-ipv6",
            Entity::Cluster => "cluster",
            Entity::Host => "host",
            Entity::RemoteNode => "remote-node",
            Entity::KubeApiserver => "kube-apiserver",
            Entity::Init => "init",
            Entity::Health => "health",
            Entity::Unmanaged => "unmanaged",
            Entity::Ingress => "ingress",
            Entity::None => "none",
        }
    }

    pub fn parse(name: &str) -> Option<Entity> {
        Entity::ALL.into_iter().find(|e| e.name() == name)
    }

    /// The identities the entity stands for among the members of `index`;
    /// `None` for `all` (every peer, known or not).
    ///
    /// Expansion is by label, not by number, so the local identities the
    /// compiler derives for CIDR rules take part: a world prefix carries
    /// `reserved:world`; a node address inside a policy prefix keeps
    /// `reserved:remote-node`; a pod address keeps its pod labels.
    /// `cluster` is the reserved cluster identities plus every identity with
    /// an `io.cilium.k8s.policy.cluster` label (Sluice runs one cluster, so
    /// every pod identity is of this cluster).
    pub fn members(self, index: &LabelIndex) -> Option<Bitset> {
        let reserved = |names: &[&str]| {
            let mut out = Bitset::empty(index.len());
            for name in names {
                out.union_with(&index.with_label(&format!("reserved:{name}")));
            }
            out
        };
        let world_of_family = |family_name: &str, v6: bool| {
            let mut cidr = index.with_source_key("cidr", |key| key.contains(':') == v6);
            cidr.intersect_with(&reserved(&["world"]));
            cidr.union_with(&reserved(&[family_name]));
            cidr
        };
        Some(match self {
            Entity::All => return None,
            Entity::None => Bitset::empty(index.len()),
            Entity::World => reserved(&["world", "world-ipv4", "world-ipv6"]),
            Entity::WorldIpv4 => world_of_family("world-ipv4", false),
            Entity::WorldIpv6 => world_of_family("world-ipv6", true),
            Entity::Cluster => {
                let mut out = reserved(&[
                    "host",
                    "unmanaged",
                    "health",
                    "init",
                    "remote-node",
                    "kube-apiserver",
                    "ingress",
                ]);
                out.union_with(&index.select(&Selector::from_requirements(vec![
                    Requirement::new(Some("k8s"), CLUSTER_KEY, Operator::Exists, &[]),
                ])));
                out
            }
            Entity::Host => reserved(&["host"]),
            Entity::RemoteNode => reserved(&["remote-node"]),
            Entity::KubeApiserver => reserved(&["kube-apiserver"]),
            Entity::Init => reserved(&["init"]),
            Entity::Health => reserved(&["health"]),
            Entity::Unmanaged => reserved(&["unmanaged"]),
            Entity::Ingress => reserved(&["ingress"]),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::LabelSelectorRequirement;
    use proptest::prelude::*;

    fn labels(list: &[&str]) -> LabelSet {
        list.iter().map(|l| l.to_string()).collect()
    }

    fn selector(json: serde_json::Value) -> Selector {
        let model: EndpointSelector = serde_json::from_value(json).unwrap();
        Selector::from_model(&model).unwrap()
    }

    fn web() -> LabelSet {
        labels(&[
            "k8s:app=web",
            "k8s:tier=front",
            "k8s:io.kubernetes.pod.namespace=shop",
            "k8s:io.cilium.k8s.namespace.labels.team=a",
        ])
    }

    #[test]
    fn labels_split_into_source_key_value() {
        assert_eq!(split_label("k8s:app=web"), ("k8s", "app", "web"));
        assert_eq!(split_label("reserved:host"), ("reserved", "host", ""));
        assert_eq!(split_label("cidr:fd00::/64"), ("cidr", "fd00::/64", ""));
        assert_eq!(split_label("app=web"), ("unspec", "app", "web"));
        assert_eq!(
            split_label("k8s:io.cilium.k8s.namespace.labels.kubernetes.io/metadata.name=x"),
            (
                "k8s",
                "io.cilium.k8s.namespace.labels.kubernetes.io/metadata.name",
                "x"
            )
        );
    }

    #[test]
    fn match_labels_with_and_without_source() {
        assert!(selector(serde_json::json!({"matchLabels": {"app": "web"}})).matches(&web()));
        assert!(selector(serde_json::json!({"matchLabels": {"any:app": "web"}})).matches(&web()));
        assert!(selector(serde_json::json!({"matchLabels": {"k8s:app": "web"}})).matches(&web()));
        assert!(
            !selector(serde_json::json!({"matchLabels": {"container:app": "web"}})).matches(&web())
        );
        assert!(!selector(serde_json::json!({"matchLabels": {"app": "db"}})).matches(&web()));
        // Every label must match.
        assert!(
            !selector(serde_json::json!({"matchLabels": {"app": "web", "tier": "back"}}))
                .matches(&web())
        );
        assert!(Selector::everything().matches(&web()));
        assert!(Selector::everything().matches(&LabelSet::new()));
    }

    #[test]
    fn each_operator() {
        let expr = |op: &str, values: &[&str]| {
            selector(serde_json::json!({"matchExpressions": [
                {"key": "k8s:tier", "operator": op, "values": values}]}))
        };
        assert!(expr("In", &["front", "back"]).matches(&web()));
        assert!(!expr("In", &["back"]).matches(&web()));
        assert!(!expr("NotIn", &["front"]).matches(&web()));
        assert!(expr("NotIn", &["back"]).matches(&web()));
        assert!(expr("Exists", &[]).matches(&web()));
        assert!(!expr("DoesNotExist", &[]).matches(&web()));
        // Without the key: NotIn and DoesNotExist match, In and Exists not.
        let bare = labels(&["k8s:app=db"]);
        assert!(!expr("In", &["front"]).matches(&bare));
        assert!(expr("NotIn", &["front"]).matches(&bare));
        assert!(!expr("Exists", &[]).matches(&bare));
        assert!(expr("DoesNotExist", &[]).matches(&bare));
    }

    #[test]
    fn reserved_labels_have_empty_values() {
        let host = labels(&["reserved:host"]);
        let sel = selector(serde_json::json!({"matchLabels": {"reserved:host": ""}}));
        assert!(sel.matches(&host));
        assert!(!sel.matches(&labels(&["reserved:world"])));
        // A k8s label with key host does not match a reserved selector.
        assert!(!sel.matches(&labels(&["k8s:host="])));
    }

    #[test]
    fn invalid_selectors_name_the_field() {
        let bad = |json: serde_json::Value| {
            let model: EndpointSelector = serde_json::from_value(json).unwrap();
            Selector::from_model(&model).unwrap_err().to_string()
        };
        assert_eq!(
            bad(serde_json::json!({"matchExpressions": [{"key": "a", "operator": "Has"}]})),
            "matchExpressions[0].operator: \"Has\" is not In, NotIn, Exists or DoesNotExist"
        );
        assert_eq!(
            bad(serde_json::json!({"matchExpressions": [{"key": "a", "operator": "In"}]})),
            "matchExpressions[0].values: In needs at least one value"
        );
        assert_eq!(
            bad(serde_json::json!({"matchExpressions": [
                {"key": "a", "operator": "Exists"},
                {"key": "b", "operator": "Exists", "values": ["x"]}]})),
            "matchExpressions[1].values: Exists takes no values"
        );
        assert_eq!(
            bad(serde_json::json!({"matchLabels": {"k8s:": "x"}})),
            "matchLabels: empty key"
        );
    }

    #[test]
    fn equal_selectors_compare_equal_however_written() {
        let a = selector(serde_json::json!({"matchLabels": {"app": "web", "k8s:tier": "front"}}));
        let b = selector(serde_json::json!({"matchExpressions": [
            {"key": "k8s:tier", "operator": "In", "values": ["front"]},
            {"key": "any:app", "operator": "In", "values": ["web"]}]}));
        assert_eq!(a, b);
    }

    #[test]
    fn namespaced_subject_is_scoped_to_the_policy_namespace() {
        let sel = selector(serde_json::json!({"matchLabels": {"app": "web"}}));
        let scoped = subject_selector(&sel, Scope::Namespace("shop"));
        assert!(scoped.matches(&web()));
        assert!(!subject_selector(&sel, Scope::Namespace("other")).matches(&web()));
        assert!(subject_selector(&sel, Scope::Clusterwide).matches(&web()));
        // `{}` in a namespaced policy: every pod of the namespace.
        let all = subject_selector(&Selector::everything(), Scope::Namespace("shop"));
        assert!(all.matches(&web()));
        assert!(!all.matches(&labels(&["reserved:init"])));
    }

    #[test]
    fn peer_scoping_follows_cilium() {
        let in_shop = Scope::Namespace("shop");
        let other_ns = labels(&["k8s:app=web", "k8s:io.kubernetes.pod.namespace=other"]);
        // Plain selector: policy namespace added.
        let app = selector(serde_json::json!({"matchLabels": {"app": "web"}}));
        let scoped = peer_selector(&app, in_shop, false);
        assert!(scoped.matches(&web()));
        assert!(!scoped.matches(&other_ns));
        // An explicit namespace (any source) is kept.
        for key in [
            "k8s:io.kubernetes.pod.namespace",
            "io.kubernetes.pod.namespace",
        ] {
            let explicit =
                selector(serde_json::json!({"matchLabels": {"app": "web", key: "other"}}));
            let scoped = peer_selector(&explicit, in_shop, false);
            assert!(scoped.matches(&other_ns), "{key}");
            assert!(!scoped.matches(&web()), "{key}");
        }
        // Namespace-label selectors reach across namespaces.
        let team = selector(serde_json::json!({"matchLabels": {
            "k8s:io.cilium.k8s.namespace.labels.team": "a"}}));
        assert_eq!(peer_selector(&team, in_shop, false), team);
        // Reserved selectors are not scoped.
        let host = selector(serde_json::json!({"matchLabels": {"reserved:host": ""}}));
        assert!(peer_selector(&host, in_shop, false).matches(&labels(&["reserved:host"])));
        // Clusterwide: `{}` is every pod, not reserved identities...
        let all = peer_selector(&Selector::everything(), Scope::Clusterwide, false);
        assert!(all.matches(&web()));
        assert!(all.matches(&other_ns));
        assert!(!all.matches(&labels(&["reserved:world"])));
        // ... unless the rule selects initializing endpoints.
        let for_init = peer_selector(&Selector::everything(), Scope::Clusterwide, true);
        assert!(for_init.matches(&labels(&["reserved:world"])));
    }

    #[test]
    fn policy_selects_checks_every_rule_with_scoping() {
        let policy: Policy = Policy {
            kind: PolicyKind::CiliumNetworkPolicy,
            namespace: "shop".into(),
            name: "p".into(),
            rules: vec![
                (
                    "specs[0]".into(),
                    serde_json::from_value(serde_json::json!({
                        "endpointSelector": {"matchLabels": {"app": "db"}}}))
                    .unwrap(),
                ),
                (
                    "specs[1]".into(),
                    serde_json::from_value(serde_json::json!({
                        "endpointSelector": {"matchLabels": {"app": "web"}}}))
                    .unwrap(),
                ),
            ],
        };
        assert!(policy_selects(&policy, &web()));
        let elsewhere = labels(&["k8s:app=web", "k8s:io.kubernetes.pod.namespace=other"]);
        assert!(!policy_selects(&policy, &elsewhere));
    }

    #[test]
    fn bitset_operations() {
        let mut a = Bitset::empty(130);
        for i in [0, 63, 64, 129] {
            a.insert(i);
        }
        assert_eq!(a.iter().collect::<Vec<_>>(), [0, 63, 64, 129]);
        assert_eq!(a.count(), 4);
        let mut b = a.clone();
        b.complement();
        assert_eq!(b.count(), 126);
        assert!(!b.contains(129) && b.contains(128) && !b.contains(130));
        b.intersect_with(&a);
        assert!(b.is_empty());
        let full = Bitset::full(130);
        assert_eq!(full.count(), 130);
        let mut c = full.clone();
        c.subtract(&a);
        c.union_with(&a);
        assert_eq!(c, full);
    }

    fn index_of(sets: &[LabelSet]) -> LabelIndex {
        LabelIndex::new(sets.iter())
    }

    #[test]
    fn entities_expand_by_label() {
        let sets = vec![
            labels(&["reserved:host"]),                                     // 0
            labels(&["reserved:world"]),                                    // 1
            labels(&["reserved:world-ipv4"]),                               // 2
            labels(&["reserved:world-ipv6"]),                               // 3
            labels(&["reserved:remote-node"]),                              // 4
            labels(&["k8s:app=web", "k8s:io.cilium.k8s.policy.cluster=c"]), // 5
            labels(&["cidr:10.0.0.0/8", "reserved:world"]),                 // 6
            labels(&["cidr:fd00::/64", "reserved:world"]),                  // 7
            labels(&["reserved:init"]),                                     // 8
            labels(&[
                "cidr:10.0.0.0/8",
                "k8s:app=db",
                "k8s:io.cilium.k8s.policy.cluster=c",
            ]), // 9
            labels(&["reserved:kube-apiserver"]),                           // 10
        ];
        let index = index_of(&sets);
        let members = |e: Entity| e.members(&index).map(|s| s.iter().collect::<Vec<_>>());
        assert_eq!(members(Entity::All), None);
        assert_eq!(members(Entity::None), Some(vec![]));
        assert_eq!(members(Entity::World), Some(vec![1, 2, 3, 6, 7]));
        assert_eq!(members(Entity::WorldIpv4), Some(vec![2, 6]));
        assert_eq!(members(Entity::WorldIpv6), Some(vec![3, 7]));
        assert_eq!(members(Entity::Cluster), Some(vec![0, 4, 5, 8, 9, 10]));
        assert_eq!(members(Entity::Host), Some(vec![0]));
        assert_eq!(members(Entity::RemoteNode), Some(vec![4]));
        assert_eq!(members(Entity::Init), Some(vec![8]));
        assert_eq!(members(Entity::KubeApiserver), Some(vec![10]));
        assert_eq!(Entity::parse("remote-node"), Some(Entity::RemoteNode));
        assert_eq!(Entity::parse("everything"), None);
        for e in Entity::ALL {
            assert_eq!(Entity::parse(e.name()), Some(e));
        }
    }

    #[test]
    fn index_lookups_by_label() {
        let sets = vec![
            labels(&["cidr:10.0.0.0/8", "reserved:world"]),
            labels(&["cidr:10.0.0.0/8", "cidr:10.1.0.0/16", "reserved:world"]),
        ];
        let index = index_of(&sets);
        assert_eq!(index.with_label("cidr:10.0.0.0/8").count(), 2);
        assert_eq!(
            index
                .with_label("cidr:10.1.0.0/16")
                .iter()
                .collect::<Vec<_>>(),
            [1]
        );
        assert!(index.with_label("cidr:10.2.0.0/16").is_empty());
    }

    const KEYS: [&str; 4] = ["app", "tier", "io.kubernetes.pod.namespace", "host"];
    const VALUES: [&str; 3] = ["a", "b", ""];
    const SOURCES: [&str; 3] = ["k8s", "reserved", "container"];

    fn arb_labels() -> impl Strategy<Value = LabelSet> {
        prop::collection::btree_set(
            (0..SOURCES.len(), 0..KEYS.len(), 0..VALUES.len()).prop_map(|(s, k, v)| {
                if VALUES[v].is_empty() {
                    format!("{}:{}", SOURCES[s], KEYS[k])
                } else {
                    format!("{}:{}={}", SOURCES[s], KEYS[k], VALUES[v])
                }
            }),
            0..5,
        )
    }

    fn arb_selector() -> impl Strategy<Value = EndpointSelector> {
        let key = (0..SOURCES.len() + 2, 0..KEYS.len()).prop_map(|(s, k)| match s {
            0 => KEYS[k].to_string(),
            1 => format!("any:{}", KEYS[k]),
            s => format!("{}:{}", SOURCES[s - 2], KEYS[k]),
        });
        let expression = (
            key.clone(),
            0..4usize,
            prop::collection::vec(0..VALUES.len(), 1..3),
        )
            .prop_map(|(key, op, values)| {
                let operator = ["In", "NotIn", "Exists", "DoesNotExist"][op].to_string();
                let values = if op < 2 {
                    values.into_iter().map(|v| VALUES[v].to_string()).collect()
                } else {
                    Vec::new()
                };
                LabelSelectorRequirement {
                    key,
                    operator,
                    values,
                }
            });
        (
            prop::collection::btree_map(
                key,
                (0..VALUES.len()).prop_map(|v| VALUES[v].to_string()),
                0..2,
            ),
            prop::collection::vec(expression, 0..3),
        )
            .prop_map(|(match_labels, match_expressions)| EndpointSelector {
                match_labels,
                match_expressions,
            })
    }

    proptest! {
        /// The index answers what matching each label set one by one answers.
        #[test]
        fn index_agrees_with_linear_matching(
            sets in prop::collection::vec(arb_labels(), 0..70),
            model in arb_selector(),
        ) {
            let selector = Selector::from_model(&model).unwrap();
            let index = index_of(&sets);
            let expected: Vec<usize> = sets
                .iter()
                .enumerate()
                .filter(|(_, s)| selector.matches(s))
                .map(|(i, _)| i)
                .collect();
            prop_assert_eq!(index.select(&selector).iter().collect::<Vec<_>>(), expected);
        }
    }
}
