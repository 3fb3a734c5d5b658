//! The policy model: Cilium's `api.Rule` (pkg/policy/api), with serde field
//! names as in the cilium.io/v2 CRDs, so a CiliumNetworkPolicy's `spec` (or
//! each of its `specs`) deserializes into a [`Rule`]. Kubernetes
//! NetworkPolicies are translated into the same model (`knp.rs`), as Cilium
//! does. Everything here is plain data; validation (and the few
//! normalizations Cilium also makes: lowercase port names and DNS names) is
//! `parse.rs`, meaning is `compile.rs`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A Kubernetes label selector over Cilium labels. Keys may carry a source
/// prefix (`k8s:app`, `reserved:host`, `any:app`); a key without one matches
/// any source, as in Cilium.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EndpointSelector {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub match_labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_expressions: Vec<LabelSelectorRequirement>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LabelSelectorRequirement {
    pub key: String,
    /// `In`, `NotIn`, `Exists`, `DoesNotExist`.
    pub operator: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
}

/// `enableDefaultDeny`: unset means true for each direction that has rules.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DefaultDenyConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress: Option<bool>,
}

/// One rule (`spec`, or an element of `specs`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Rule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint_selector: Option<EndpointSelector>,
    /// CCNP host policies; parsed and refused with a clear error (host
    /// firewall is not implemented).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<EndpointSelector>,
    /// `None`: the rule has no ingress section. Parsing turns an empty
    /// list into `None`, as Cilium counts rules (`len(r.Ingress) > 0`) to
    /// decide whether a rule has a direction. `Some(vec![{}])` selects the
    /// endpoint for ingress (default deny) and allows nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress: Option<Vec<IngressRule>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress_deny: Option<Vec<IngressRule>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress: Option<Vec<EgressRule>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress_deny: Option<Vec<EgressRule>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_default_deny: Option<DefaultDenyConfig>,
    /// Rule metadata (a list of `{key, value, source}` in the CRD).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log: Option<serde_json::Value>,
}

/// `ingress[]` and `ingressDeny[]` (a deny rule may carry neither `rules` in
/// its ports nor `authentication`; validation says so).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IngressRule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_endpoints: Option<Vec<EndpointSelector>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_requires: Option<Vec<EndpointSelector>>,
    #[serde(default, rename = "fromCIDR", skip_serializing_if = "Option::is_none")]
    pub from_cidr: Option<Vec<String>>,
    #[serde(
        default,
        rename = "fromCIDRSet",
        skip_serializing_if = "Option::is_none"
    )]
    pub from_cidr_set: Option<Vec<CidrRule>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_entities: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_groups: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_nodes: Option<Vec<EndpointSelector>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_ports: Option<Vec<PortRule>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub icmps: Option<Vec<IcmpRule>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authentication: Option<serde_json::Value>,
}

/// `egress[]` and `egressDeny[]`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EgressRule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_endpoints: Option<Vec<EndpointSelector>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_requires: Option<Vec<EndpointSelector>>,
    #[serde(default, rename = "toCIDR", skip_serializing_if = "Option::is_none")]
    pub to_cidr: Option<Vec<String>>,
    #[serde(default, rename = "toCIDRSet", skip_serializing_if = "Option::is_none")]
    pub to_cidr_set: Option<Vec<CidrRule>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_entities: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_services: Option<Vec<ServiceRule>>,
    #[serde(default, rename = "toFQDNs", skip_serializing_if = "Option::is_none")]
    pub to_fqdns: Option<Vec<FqdnSelector>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_groups: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_nodes: Option<Vec<EndpointSelector>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_ports: Option<Vec<PortRule>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub icmps: Option<Vec<IcmpRule>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authentication: Option<serde_json::Value>,
}

/// `fromCIDRSet[]` / `toCIDRSet[]`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CidrRule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cidr: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cidr_group_ref: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cidr_group_selector: Option<EndpointSelector>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub except: Vec<String>,
}

/// `toServices[]`: one of the two.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceRule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub k8s_service: Option<K8sServiceName>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub k8s_service_selector: Option<K8sServiceSelector>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct K8sServiceName {
    #[serde(default)]
    pub service_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct K8sServiceSelector {
    pub selector: EndpointSelector,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// `toFQDNs[]`: exactly one of the two.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FqdnSelector {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub match_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub match_pattern: Option<String>,
}

/// `toPorts[]`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PortRule {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<PortProtocol>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rules: Option<L7Rules>,
    #[serde(
        default,
        rename = "terminatingTLS",
        skip_serializing_if = "Option::is_none"
    )]
    pub terminating_tls: Option<serde_json::Value>,
    #[serde(
        default,
        rename = "originatingTLS",
        skip_serializing_if = "Option::is_none"
    )]
    pub originating_tls: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_names: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listener: Option<serde_json::Value>,
}

/// `toPorts[].ports[]`. `port` is a number 0-65535 (as a string or a
/// number in YAML; 0 or absent = any port) or an IANA_SVC_NAME named port.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PortProtocol {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<PortValue>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_port: Option<i32>,
    /// `TCP`, `UDP`, `SCTP`, `ANY` (default `ANY`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
}

/// A port (or an ICMP type) as written: YAML may give a number or a string.
/// After validation a port is a number 0-65535 (either variant) or a
/// lowercase IANA service name (a named port).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(untagged)]
pub enum PortValue {
    Number(i64),
    Text(String),
}

impl PortValue {
    /// The port number, when it is one (a number, or a string of digits)
    /// in 0-65535.
    pub fn number(&self) -> Option<u16> {
        match self {
            PortValue::Number(n) => u16::try_from(*n).ok(),
            PortValue::Text(text)
                if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) =>
            {
                text.parse().ok()
            }
            PortValue::Text(_) => None,
        }
    }

    /// The port name, when it is not a number (validation made it a
    /// lowercase IANA service name).
    pub fn name(&self) -> Option<&str> {
        match self {
            PortValue::Text(text) if !text.bytes().all(|b| b.is_ascii_digit()) => Some(text),
            _ => None,
        }
    }
}

impl std::fmt::Display for PortValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PortValue::Number(n) => write!(f, "{n}"),
            PortValue::Text(text) => write!(f, "{text:?}"),
        }
    }
}

/// By hand rather than `untagged`, so that a wrong type says what was
/// expected instead of "did not match any variant".
impl<'de> Deserialize<'de> for PortValue {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = PortValue;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a number or a name")
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<PortValue, E> {
                Ok(PortValue::Number(v))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<PortValue, E> {
                i64::try_from(v)
                    .map(PortValue::Number)
                    .map_err(|_| E::invalid_value(serde::de::Unexpected::Unsigned(v), &self))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<PortValue, E> {
                Ok(PortValue::Text(v.to_string()))
            }
            fn visit_string<E: serde::de::Error>(self, v: String) -> Result<PortValue, E> {
                Ok(PortValue::Text(v))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// `toPorts[].rules`: only `dns` is enforced; `http`, `kafka` and `l7` are
/// parsed and refused with a clear error until L7 lands.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct L7Rules {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<Vec<FqdnSelector>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kafka: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub l7proto: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub l7: Option<serde_json::Value>,
}

/// `icmps[]`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IcmpRule {
    #[serde(default)]
    pub fields: Vec<IcmpField>,
}

/// `icmps[].fields[]`: `family` IPv4 (default) or IPv6; `type` a number
/// 0-255 or a CamelCase name (`EchoRequest`, ...).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IcmpField {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub family: Option<String>,
    #[serde(rename = "type")]
    pub icmp_type: PortValue,
}

/// Which kind of object a policy came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum PolicyKind {
    CiliumNetworkPolicy,
    CiliumClusterwideNetworkPolicy,
    NetworkPolicy,
}

impl PolicyKind {
    pub const ALL: [PolicyKind; 3] = [
        PolicyKind::CiliumNetworkPolicy,
        PolicyKind::CiliumClusterwideNetworkPolicy,
        PolicyKind::NetworkPolicy,
    ];

    pub fn name(self) -> &'static str {
        match self {
            PolicyKind::CiliumNetworkPolicy => "CiliumNetworkPolicy",
            PolicyKind::CiliumClusterwideNetworkPolicy => "CiliumClusterwideNetworkPolicy",
            PolicyKind::NetworkPolicy => "NetworkPolicy",
        }
    }

    /// The kind named `name` (as in an object's `kind`), if it is a policy.
    pub fn from_name(name: &str) -> Option<PolicyKind> {
        PolicyKind::ALL.into_iter().find(|k| k.name() == name)
    }

    /// The `apiVersion` objects of this kind carry.
    pub fn api_version(self) -> &'static str {
        match self {
            PolicyKind::CiliumNetworkPolicy | PolicyKind::CiliumClusterwideNetworkPolicy => {
                "cilium.io/v2"
            }
            PolicyKind::NetworkPolicy => "networking.k8s.io/v1",
        }
    }

    /// Whether objects of this kind live in a namespace.
    pub fn namespaced(self) -> bool {
        self != PolicyKind::CiliumClusterwideNetworkPolicy
    }
}

impl std::fmt::Display for PolicyKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One parsed, validated policy object: its rules in the common model, each
/// with the path it came from (`spec`, `specs[2]`; for a NetworkPolicy
/// `spec`). Rules are as written (a NetworkPolicy as translated): namespace
/// scoping of selectors is applied by the compiler from `namespace`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Policy {
    pub kind: PolicyKind,
    /// Empty for a clusterwide policy.
    pub namespace: String,
    pub name: String,
    pub rules: Vec<(String, Rule)>,
}

impl Policy {
    /// `Kind namespace/name`, or `Kind name` for a clusterwide policy: how
    /// errors and listings name the object.
    pub fn label(&self) -> String {
        object_label(self.kind, &self.namespace, &self.name)
    }
}

/// `Kind namespace/name`, or `Kind name` without a namespace.
pub fn object_label(kind: PolicyKind, namespace: &str, name: &str) -> String {
    if namespace.is_empty() {
        format!("{kind} {name}")
    } else {
        format!("{kind} {namespace}/{name}")
    }
}
