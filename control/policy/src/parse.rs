//! Policy objects, as YAML/JSON values or typed Kubernetes objects, into
//! [`Policy`], validated: CiliumNetworkPolicy and
//! CiliumClusterwideNetworkPolicy (cilium.io/v2, `spec` and/or `specs`) by
//! Cilium's rules, NetworkPolicy (networking.k8s.io/v1) by Kubernetes'
//! rules and translated as Cilium does ([`crate::knp`]).
//!
//! Every problem of an object is reported (not only the first), each
//! naming the object and the field:
//! `policies.yaml: document 2 (CiliumNetworkPolicy default/web): specs[1].ingress[0].toPorts[0].ports[0].port: "99999" is not a port (0-65535) or a port name`.
//! An object with any problem yields no policy: a policy is applied whole
//! or not at all.
//!
//! Entry points: [`parse_documents`] (a manifest file), [`parse_object`]
//! (one decoded object), and for the agent, whose store keeps Cilium
//! policies as JSON and NetworkPolicies typed, [`from_cilium`] and
//! [`from_network_policy`].

pub(crate) mod checks;
mod icmp;
mod rule;

use std::fmt;

use serde::de::DeserializeOwned;
use serde_json::Value;
use sluice_tables::Cidr;

pub use icmp::{icmp_type, icmp_type_name};

use crate::model::{object_label, Policy, PolicyKind, Rule};

/// One problem of one policy object.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PolicyError {
    /// Where the object came from (`policies.yaml: document 2`); empty when
    /// the caller knows (the agent's store).
    pub origin: String,
    /// `Kind namespace/name` (`Kind name` for a clusterwide policy); empty
    /// when the document could not be read as an object.
    pub object: String,
    /// The field, from the object's root (`specs[1].ingress[0].fromCIDR[2]`);
    /// empty for the object as a whole.
    pub path: String,
    pub problem: String,
}

impl PolicyError {
    pub(crate) fn new(object: &str, path: &str, problem: impl Into<String>) -> PolicyError {
        PolicyError {
            origin: String::new(),
            object: object.to_string(),
            path: path.to_string(),
            problem: problem.into(),
        }
    }
}

/// `origin (object): path: problem`, leaving out the parts that are empty.
impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.origin.is_empty(), self.object.is_empty()) {
            (false, false) => write!(f, "{} ({}): ", self.origin, self.object)?,
            (false, true) => write!(f, "{}: ", self.origin)?,
            (true, false) => write!(f, "{}: ", self.object)?,
            (true, true) => {}
        }
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.problem)
    }
}

impl std::error::Error for PolicyError {}

/// The problems found in one object so far: (path, problem).
#[derive(Debug, Default)]
pub(crate) struct Problems(Vec<(String, String)>);

impl Problems {
    pub(crate) fn add(&mut self, path: impl Into<String>, problem: impl Into<String>) {
        self.0.push((path.into(), problem.into()));
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub(crate) fn into_errors(self, object: &str) -> Vec<PolicyError> {
        self.0
            .into_iter()
            .map(|(path, problem)| PolicyError::new(object, &path, problem))
            .collect()
    }
}

/// `prefix` followed by a path relative to it (`[2].a`, `a.b`, or `.` for
/// the value itself, as `serde_path_to_error` writes them).
pub(crate) fn join_path(prefix: &str, relative: &str) -> String {
    match relative {
        "." | "" => prefix.to_string(),
        _ if prefix.is_empty() => relative.to_string(),
        _ if relative.starts_with('[') => format!("{prefix}{relative}"),
        _ => format!("{prefix}.{relative}"),
    }
}

/// Deserializes `value` as `T`; a type error names the field under `path`.
pub(crate) fn typed<T: DeserializeOwned>(value: &Value, path: &str) -> Result<T, (String, String)> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let at = join_path(path, &e.path().to_string());
        (at, e.into_inner().to_string())
    })
}

/// One document of a manifest file (or one item of a `v1 List` in it).
#[derive(Clone, Debug, PartialEq)]
pub struct Document {
    /// `document 2`, or `document 2 item 0` for an item of a List.
    pub at: String,
    /// The document, or why it is not YAML (the file's later documents
    /// cannot be read then).
    pub value: Result<Value, String>,
}

/// The documents of a multi-document YAML (or JSON) text, `v1 List`s
/// expanded, empty documents left out; numbered as the agent numbers them.
pub fn documents(text: &str) -> Vec<Document> {
    use serde::Deserialize;
    let mut out = Vec::new();
    for (index, document) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
        let number = index + 1;
        let value = match Value::deserialize(document) {
            Ok(Value::Null) => continue,
            Ok(value) => value,
            Err(e) => {
                out.push(Document {
                    at: format!("document {number}"),
                    value: Err(e.to_string()),
                });
                // A YAML stream cannot be resumed after a syntax error.
                break;
            }
        };
        let is_list = value.get("kind").and_then(Value::as_str) == Some("List");
        match (is_list, value) {
            (true, Value::Object(mut list)) => {
                let items = match list.remove("items") {
                    Some(Value::Array(items)) => items,
                    _ => Vec::new(),
                };
                for (item, value) in items.into_iter().enumerate() {
                    out.push(Document {
                        at: format!("document {number} item {item}"),
                        value: Ok(value),
                    });
                }
            }
            (_, value) => out.push(Document {
                at: format!("document {number}"),
                value: Ok(value),
            }),
        }
    }
    out
}

/// Whether a decoded object claims to be a policy (its `kind` is one).
pub fn is_policy(value: &Value) -> bool {
    value
        .get("kind")
        .and_then(Value::as_str)
        .and_then(PolicyKind::from_name)
        .is_some()
}

/// The policies of a manifest text (multi-document YAML or JSON, `v1
/// List`s expanded) and the problems of those that are not valid; objects
/// of other kinds are skipped. `origin` names the file in errors.
pub fn parse_documents(text: &str, origin: &str) -> (Vec<Policy>, Vec<PolicyError>) {
    let mut policies = Vec::new();
    let mut errors = Vec::new();
    for document in documents(text) {
        let at = join_origin(origin, &document.at);
        match document.value {
            Err(e) => errors.push(PolicyError {
                origin: at,
                object: String::new(),
                path: String::new(),
                problem: format!("not YAML: {e}"),
            }),
            Ok(value) if is_policy(&value) => match parse_object(&value, &at) {
                Ok(policy) => policies.push(policy),
                Err(e) => errors.extend(e),
            },
            Ok(_) => {}
        }
    }
    (policies, errors)
}

fn join_origin(origin: &str, at: &str) -> String {
    if origin.is_empty() {
        at.to_string()
    } else {
        format!("{origin}: {at}")
    }
}

/// Top-level fields of a Cilium policy object.
const CILIUM_OBJECT_FIELDS: [&str; 6] =
    ["apiVersion", "kind", "metadata", "spec", "specs", "status"];

/// Parses and validates one decoded policy object (CiliumNetworkPolicy,
/// CiliumClusterwideNetworkPolicy or NetworkPolicy); `origin` says where
/// it came from in the errors.
pub fn parse_object(value: &Value, origin: &str) -> Result<Policy, Vec<PolicyError>> {
    parse_object_unplaced(value).map_err(|mut errors| {
        for error in &mut errors {
            error.origin = origin.to_string();
        }
        errors
    })
}

fn parse_object_unplaced(value: &Value) -> Result<Policy, Vec<PolicyError>> {
    let label = label_of(value);
    let fail = |path: &str, problem: String| Err(vec![PolicyError::new(&label, path, problem)]);
    let Some(object) = value.as_object() else {
        return fail("", "expected an object (a mapping)".into());
    };
    let kind = match object.get("kind").map(Value::as_str) {
        None => return fail("kind", "missing".into()),
        Some(None) => return fail("kind", "expected a string".into()),
        Some(Some(name)) => match PolicyKind::from_name(name) {
            Some(kind) => kind,
            None => {
                let kinds: Vec<&str> = PolicyKind::ALL.iter().map(|k| k.name()).collect();
                return fail(
                    "kind",
                    format!("{name:?} is not a policy kind ({})", kinds.join(", ")),
                );
            }
        },
    };
    let api_version = object
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or("");
    if api_version != kind.api_version() {
        return fail(
            "apiVersion",
            format!(
                "{kind} needs {:?}, found {api_version:?}",
                kind.api_version()
            ),
        );
    }
    let metadata = object.get("metadata");
    let name = match metadata.and_then(|m| m.get("name")).map(Value::as_str) {
        Some(Some(name)) if !name.is_empty() => name,
        Some(Some(_)) | None => return fail("metadata.name", "missing".into()),
        Some(None) => return fail("metadata.name", "expected a string".into()),
    };
    let namespace = match metadata.and_then(|m| m.get("namespace")).map(Value::as_str) {
        None => "",
        Some(Some(namespace)) => namespace,
        Some(None) => return fail("metadata.namespace", "expected a string".into()),
    };
    match kind {
        PolicyKind::NetworkPolicy => crate::knp::from_value(value),
        PolicyKind::CiliumNetworkPolicy | PolicyKind::CiliumClusterwideNetworkPolicy => {
            let mut unknown = Problems::default();
            let mut keys: Vec<&String> = object.keys().collect();
            keys.sort();
            for key in keys {
                if !CILIUM_OBJECT_FIELDS.contains(&key.as_str()) {
                    let expected: Vec<String> = CILIUM_OBJECT_FIELDS
                        .iter()
                        .map(|f| format!("`{f}`"))
                        .collect();
                    unknown.add(
                        key.as_str(),
                        format!(
                            "unknown field `{key}`, expected one of {}",
                            expected.join(", ")
                        ),
                    );
                }
            }
            let parsed = from_cilium(
                kind,
                namespace,
                name,
                object.get("spec"),
                object.get("specs"),
            );
            if unknown.is_empty() {
                return parsed;
            }
            let mut errors = unknown.into_errors(&label);
            errors.extend(parsed.err().into_iter().flatten());
            Err(errors)
        }
    }
}

/// `Kind namespace/name` of an undecoded object, as far as it can be read.
fn label_of(value: &Value) -> String {
    let text = |v: Option<&Value>| v.and_then(Value::as_str).unwrap_or("?").to_string();
    let kind = text(value.get("kind"));
    let metadata = value.get("metadata");
    let name = text(metadata.and_then(|m| m.get("name")));
    let namespace = metadata
        .and_then(|m| m.get("namespace"))
        .and_then(Value::as_str);
    match PolicyKind::from_name(&kind) {
        Some(PolicyKind::CiliumClusterwideNetworkPolicy) => format!("{kind} {name}"),
        Some(_) => format!("{kind} {}/{name}", namespace.unwrap_or("default")),
        None => match namespace {
            Some(namespace) => format!("{kind} {namespace}/{name}"),
            None => format!("{kind} {name}"),
        },
    }
}

/// A CiliumNetworkPolicy (`namespace` empty means `default`) or
/// CiliumClusterwideNetworkPolicy (`namespace` must be empty) from its
/// metadata and its `spec` and `specs` (either or both, as Cilium allows;
/// the rules of `spec` come first).
pub fn from_cilium(
    kind: PolicyKind,
    namespace: &str,
    name: &str,
    spec: Option<&Value>,
    specs: Option<&Value>,
) -> Result<Policy, Vec<PolicyError>> {
    let mut out = Problems::default();
    let namespace = match kind {
        PolicyKind::CiliumNetworkPolicy if namespace.is_empty() => "default",
        PolicyKind::CiliumNetworkPolicy => namespace,
        PolicyKind::CiliumClusterwideNetworkPolicy => {
            if !namespace.is_empty() {
                out.add(
                    "metadata.namespace",
                    format!("{kind} is cluster-scoped: it has no namespace"),
                );
            }
            ""
        }
        PolicyKind::NetworkPolicy => {
            let label = object_label(kind, namespace, name);
            return Err(vec![PolicyError::new(
                &label,
                "kind",
                "a NetworkPolicy is not a Cilium policy (use from_network_policy)",
            )]);
        }
    };
    let label = object_label(kind, namespace, name);
    if name.is_empty() {
        out.add("metadata.name", "missing");
    }
    let spec = spec.filter(|v| !v.is_null());
    let specs = specs.filter(|v| !v.is_null());
    let mut rules = Vec::new();
    if let Some(spec) = spec {
        add_rule(spec, "spec".into(), kind, &mut rules, &mut out);
    }
    match specs.map(Value::as_array) {
        None if spec.is_none() => out.add("spec", "missing: spec or specs must be provided"),
        None => {}
        Some(None) => out.add("specs", "expected a list of rules"),
        Some(Some(list)) if list.is_empty() && spec.is_none() => {
            out.add("specs", "empty: the policy has no rule");
        }
        Some(Some(list)) => {
            for (i, value) in list.iter().enumerate() {
                add_rule(value, format!("specs[{i}]"), kind, &mut rules, &mut out);
            }
        }
    }
    if !out.is_empty() {
        return Err(out.into_errors(&label));
    }
    Ok(Policy {
        kind,
        namespace: namespace.to_string(),
        name: name.to_string(),
        rules,
    })
}

fn add_rule(
    value: &Value,
    path: String,
    kind: PolicyKind,
    rules: &mut Vec<(String, Rule)>,
    out: &mut Problems,
) {
    match typed::<Rule>(value, &path) {
        Ok(mut rule) => {
            rule::check_rule(&mut rule, kind, &path, out);
            rules.push((path, rule));
        }
        Err((at, problem)) => out.add(at, problem),
    }
}

/// A NetworkPolicy, validated as the API server would and translated into
/// one rule (path `spec`) as Cilium translates it.
pub fn from_network_policy(
    np: &k8s_openapi::api::networking::v1::NetworkPolicy,
) -> Result<Policy, Vec<PolicyError>> {
    crate::knp::translate(np)
}

/// A policy CIDR as the compiler needs it: `address/length` or a bare
/// address (the host prefix), host bits cleared. Parsed policies only hold
/// CIDRs this accepts.
pub fn policy_cidr(text: &str) -> Result<Cidr, String> {
    checks::prefix(text, true).map(checks::network)
}
