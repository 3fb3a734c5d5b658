//! Parsing and validation of policy objects: one case per validation rule
//! with the exact error text, round trips of valid policies in the shapes
//! of Cilium's documented examples (tests/data/parse/valid), golden
//! NetworkPolicy translations (tests/data/parse/knp), and a property test
//! that any valid rule serialized and parsed again is the same rule.

use std::path::{Path, PathBuf};

use proptest::prelude::*;
use serde_json::{json, Value};
use sluice_policy::model::{
    CidrRule, DefaultDenyConfig, EgressRule, EndpointSelector, FqdnSelector, IcmpField, IcmpRule,
    IngressRule, K8sServiceName, L7Rules, LabelSelectorRequirement, Policy, PolicyKind,
    PortProtocol, PortRule, PortValue, Rule, ServiceRule,
};
use sluice_policy::parse::{
    documents, from_cilium, from_network_policy, icmp_type, parse_documents, parse_object,
    policy_cidr, PolicyError,
};

fn data(dir: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/parse")
        .join(dir)
}

/// The errors of `text` (file `t.yaml`), as displayed.
fn errors(text: &str) -> Vec<String> {
    let (_, errors) = parse_documents(text, "t.yaml");
    errors.iter().map(ToString::to_string).collect()
}

/// A CiliumNetworkPolicy `default/p` with `spec` (flow YAML).
fn cnp(spec: &str) -> String {
    format!("apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {{name: p}}\nspec: {spec}\n")
}

const CNP: &str = "t.yaml: document 1 (CiliumNetworkPolicy default/p): ";

/// Asserts the exact errors of a CiliumNetworkPolicy `default/p` with
/// `spec`, given as `path: problem`.
#[track_caller]
fn rejects(spec: &str, expected: &[&str]) {
    let expected: Vec<String> = expected.iter().map(|e| format!("{CNP}{e}")).collect();
    assert_eq!(errors(&cnp(spec)), expected, "spec: {spec}");
}

/// Asserts that `spec` is valid and returns its rule.
#[track_caller]
fn accepts(spec: &str) -> Rule {
    let (policies, errors) = parse_documents(&cnp(spec), "t.yaml");
    let errors: Vec<String> = errors.iter().map(ToString::to_string).collect();
    assert_eq!(errors, Vec::<String>::new(), "spec: {spec}");
    policies[0].rules[0].1.clone()
}

// ---- objects and errors ------------------------------------------------------

#[test]
fn the_documented_error_format() {
    let text = r#"
apiVersion: v1
kind: Namespace
metadata: {name: default}
---
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: web, namespace: default}
specs:
- endpointSelector: {}
  ingress: [{}]
- endpointSelector: {matchLabels: {app: web}}
  ingress:
  - toPorts: [{ports: [{port: "99999"}]}]
"#;
    let (_, errors) = parse_documents(text, "policies.yaml");
    assert_eq!(
        errors.iter().map(ToString::to_string).collect::<Vec<_>>(),
        ["policies.yaml: document 2 (CiliumNetworkPolicy default/web): specs[1].ingress[0].toPorts[0].ports[0].port: \"99999\" is not a port (0-65535) or a port name"]
    );
    assert_eq!(
        errors[0],
        PolicyError {
            origin: "policies.yaml: document 2".into(),
            object: "CiliumNetworkPolicy default/web".into(),
            path: "specs[1].ingress[0].toPorts[0].ports[0].port".into(),
            problem: "\"99999\" is not a port (0-65535) or a port name".into(),
        }
    );
}

#[test]
fn every_problem_of_an_object_is_reported() {
    rejects(
        r#"{endpointSelector: {matchLabels: {"k9s:app": web}},
            ingress: [{fromEntities: [wrld], toPorts: [{ports: [{port: "80", protocol: tcp}]}]}],
            egressDeny: [{toCIDR: [10.0.0.0/33], toPorts: [{ports: [{port: "53"}], rules: {dns: [{matchName: a.io}]}}]}]}"#,
        &[
            "spec.endpointSelector.matchLabels.k9s:app: \"k9s:app\" has the label source \"k9s\"; known sources: k8s:, any:, reserved:",
            "spec.ingress[0].fromEntities[0]: \"wrld\" is not an entity (all, world, world-ipv4, world-ipv6, cluster, host, remote-node, kube-apiserver, init, health, unmanaged, ingress, none)",
            "spec.ingress[0].toPorts[0].ports[0].protocol: \"tcp\" is not one of TCP, UDP, SCTP, ANY",
            "spec.egressDeny[0].toCIDR[0]: \"10.0.0.0/33\" is not an address or a CIDR prefix",
            "spec.egressDeny[0].toPorts[0].rules: deny rules cannot have L7 rules (as in Cilium)",
        ],
    );
}

#[test]
fn a_bad_rule_does_not_hide_the_others() {
    let text = cnp("{}").replace(
        "spec: {}",
        "specs:\n- {endpointSelector: {}, ingress: [{toPorts: [{ports: [{port: [80]}]}]}]}\n- {endpointSelector: {}, egress: [{toEntities: [moon]}]}",
    );
    assert_eq!(
        errors(&text),
        [
            format!("{CNP}specs[0].ingress[0].toPorts[0].ports[0].port: invalid type: sequence, expected a number or a name"),
            format!("{CNP}specs[1].egress[0].toEntities[0]: \"moon\" is not an entity (all, world, world-ipv4, world-ipv6, cluster, host, remote-node, kube-apiserver, init, health, unmanaged, ingress, none)"),
        ]
    );
}

#[test]
fn unknown_and_mistyped_fields_name_the_field() {
    rejects(
        "{endpointSelector: {}, ingress: [{fromEndpoint: [{}]}]}",
        &["spec.ingress[0].fromEndpoint: unknown field `fromEndpoint`, expected one of `fromEndpoints`, `fromRequires`, `fromCIDR`, `fromCIDRSet`, `fromEntities`, `fromGroups`, `fromNodes`, `toPorts`, `icmps`, `authentication`"],
    );
    rejects(
        "{endpointSelector: {}, egress: [{toCidr: [10.0.0.0/8]}]}",
        &["spec.egress[0].toCidr: unknown field `toCidr`, expected one of `toEndpoints`, `toRequires`, `toCIDR`, `toCIDRSet`, `toEntities`, `toServices`, `toFQDNs`, `toGroups`, `toNodes`, `toPorts`, `icmps`, `authentication`"],
    );
    rejects(
        "{endpointSelector: {matchLabels: [app]}, ingress: [{}]}",
        &["spec.endpointSelector.matchLabels: invalid type: sequence, expected a map"],
    );
    let text = cnp("{endpointSelector: {}, ingress: [{}]}").replace("spec:", "spce: 1\nspec:");
    assert_eq!(
        errors(&text),
        [format!("{CNP}spce: unknown field `spce`, expected one of `apiVersion`, `kind`, `metadata`, `spec`, `specs`, `status`")]
    );
}

#[test]
fn object_kind_version_and_metadata() {
    let wrong_version =
        "apiVersion: cilium.io/v1\nkind: CiliumNetworkPolicy\nmetadata: {name: p}\nspec: {}\n";
    assert_eq!(
        errors(wrong_version),
        [format!(
            "{CNP}apiVersion: CiliumNetworkPolicy needs \"cilium.io/v2\", found \"cilium.io/v1\""
        )]
    );
    let no_name =
        "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {namespace: x}\nspec: {}\n";
    assert_eq!(
        errors(no_name),
        ["t.yaml: document 1 (CiliumNetworkPolicy x/?): metadata.name: missing"]
    );
    assert_eq!(
        errors("apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: p}\n"),
        [format!(
            "{CNP}spec: missing: spec or specs must be provided"
        )]
    );
    assert_eq!(
        errors(
            "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: p}\nspecs: []\n"
        ),
        [format!("{CNP}specs: empty: the policy has no rule")]
    );
    assert_eq!(
        errors(
            "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: p}\nspecs: {}\n"
        ),
        [format!("{CNP}specs: expected a list of rules")]
    );
    let ccnp = "apiVersion: cilium.io/v2\nkind: CiliumClusterwideNetworkPolicy\nmetadata: {name: c, namespace: x}\nspec: {endpointSelector: {}, ingress: [{}]}\n";
    assert_eq!(
        errors(ccnp),
        ["t.yaml: document 1 (CiliumClusterwideNetworkPolicy c): metadata.namespace: CiliumClusterwideNetworkPolicy is cluster-scoped: it has no namespace"]
    );
    let value = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"}});
    assert_eq!(
        parse_object(&value, "here").unwrap_err()[0].to_string(),
        "here (Service s): kind: \"Service\" is not a policy kind (CiliumNetworkPolicy, CiliumClusterwideNetworkPolicy, NetworkPolicy)"
    );
    assert_eq!(
        parse_object(&json!([1]), "here").unwrap_err()[0].to_string(),
        "here (? ?): expected an object (a mapping)"
    );
}

#[test]
fn spec_and_specs_together_as_cilium_allows() {
    let text = cnp("{endpointSelector: {}, ingress: [{}]}")
        + "specs:\n- {endpointSelector: {}, egress: [{}]}\n";
    let (policies, errors) = parse_documents(&text, "t.yaml");
    assert!(errors.is_empty(), "{errors:?}");
    let paths: Vec<&str> = policies[0].rules.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(paths, ["spec", "specs[0]"]);
}

#[test]
fn other_kinds_are_skipped_and_broken_yaml_reported() {
    let (policies, errors) = parse_documents(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: a}\n---\n---\nkind: [\n",
        "t.yaml",
    );
    assert!(policies.is_empty());
    assert_eq!(errors.len(), 1);
    assert!(
        errors[0]
            .to_string()
            .starts_with("t.yaml: document 3: not YAML: "),
        "{}",
        errors[0]
    );
    let docs = documents("a: 1\n---\n---\nkind: List\nitems: [{b: 2}, {c: 3}]\n");
    let at: Vec<&str> = docs.iter().map(|d| d.at.as_str()).collect();
    assert_eq!(at, ["document 1", "document 3 item 0", "document 3 item 1"]);
}

// ---- selectors ------------------------------------------------------------------

#[test]
fn endpoint_selector_or_node_selector() {
    rejects(
        "{ingress: [{}]}",
        &["spec.endpointSelector: missing: every rule selects the endpoints it applies to"],
    );
    rejects(
        "{endpointSelector: {}, nodeSelector: {}, ingress: [{}]}",
        &[
            "spec: endpointSelector and nodeSelector cannot both be set",
            "spec.nodeSelector: a CiliumNetworkPolicy cannot have a nodeSelector (host policies are clusterwide; Sluice does not support them)",
        ],
    );
    let ccnp = "apiVersion: cilium.io/v2\nkind: CiliumClusterwideNetworkPolicy\nmetadata: {name: host}\nspec: {nodeSelector: {}, ingress: [{fromEntities: [cluster]}]}\n";
    assert_eq!(
        errors(ccnp),
        ["t.yaml: document 1 (CiliumClusterwideNetworkPolicy host): spec.nodeSelector: host policies (nodeSelector) are not supported"]
    );
}

#[test]
fn a_rule_must_have_a_direction() {
    rejects(
        "{endpointSelector: {}, ingress: [], enableDefaultDeny: {ingress: true}}",
        &["spec: the rule has no ingress, ingressDeny, egress or egressDeny rules, so it does nothing (Cilium refuses it too)"],
    );
    // An empty list is no section: only egress is enforced by this rule.
    let rule = accepts(
        "{endpointSelector: {}, ingress: [], ingressDeny: [], egress: [{}], egressDeny: []}",
    );
    assert_eq!(
        (rule.ingress, rule.ingress_deny, rule.egress_deny),
        (None, None, None)
    );
    assert_eq!(rule.egress, Some(vec![EgressRule::default()]));
}

#[test]
fn label_keys_and_values() {
    rejects(
        "{endpointSelector: {matchLabels: {\"reserved:hots\": \"\", \"k8s:Bad_/x\": a, app: \"-web\"}}, ingress: [{}]}",
        &[
            "spec.endpointSelector.matchLabels.app: \"-web\" is not a label value: at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit",
            "spec.endpointSelector.matchLabels.k8s:Bad_/x: \"k8s:Bad_/x\" is not a label key: its prefix (before '/') must be a DNS subdomain: lowercase letters, digits, '-' and '.', at most 253 characters",
            "spec.endpointSelector.matchLabels.reserved:hots: \"reserved:hots\" is not a reserved identity (reserved:host, reserved:world, reserved:unmanaged, reserved:health, reserved:init, reserved:remote-node, reserved:kube-apiserver, reserved:ingress, reserved:world-ipv4, reserved:world-ipv6)",
        ],
    );
    accepts("{endpointSelector: {matchLabels: {\"any:app.kubernetes.io/name\": x, \"reserved:host\": \"\"}}, ingress: [{}]}");
}

#[test]
fn match_expression_operators_and_values() {
    rejects(
        "{endpointSelector: {matchExpressions: [{key: a, operator: In}, {key: b, operator: Exists, values: [x]}, {key: c, operator: Equals, values: [x]}, {key: d, operator: NotIn, values: [\"x y\"]}]}, ingress: [{}]}",
        &[
            "spec.endpointSelector.matchExpressions[0].values: operator In needs values",
            "spec.endpointSelector.matchExpressions[1].values: operator Exists takes no values",
            "spec.endpointSelector.matchExpressions[2].operator: \"Equals\" is not one of In, NotIn, Exists, DoesNotExist",
            "spec.endpointSelector.matchExpressions[3].values[0]: \"x y\" is not a label value: at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit",
        ],
    );
    rejects(
        "{endpointSelector: {}, ingress: [{fromRequires: [{matchExpressions: [{key: \"\", operator: DoesNotExist}]}]}]}",
        &["spec.ingress[0].fromRequires[0].matchExpressions[0].key: \"\" is not a label key: its name is empty"],
    );
}

#[test]
fn one_kind_of_peer_per_rule() {
    rejects(
        "{endpointSelector: {}, ingress: [{fromEndpoints: [{}], fromCIDR: [10.0.0.0/8], fromEntities: [world]}]}",
        &["spec.ingress[0]: fromEndpoints, fromCIDR and fromEntities cannot be combined in one rule (Cilium refuses this too); write one rule per kind of peer"],
    );
    rejects(
        "{endpointSelector: {}, egress: [{toFQDNs: [{matchName: a.io}], toCIDRSet: [{cidr: 10.0.0.0/8}]}]}",
        &["spec.egress[0]: toCIDRSet and toFQDNs cannot be combined in one rule (Cilium refuses this too); write one rule per kind of peer"],
    );
    // Requirements are not peers.
    accepts("{endpointSelector: {}, ingress: [{fromEndpoints: [{}], fromRequires: [{matchLabels: {env: prod}}]}]}");
}

// ---- ports ---------------------------------------------------------------------

#[test]
fn ports_are_numbers_or_service_names() {
    rejects(
        "{endpointSelector: {}, ingress: [{toPorts: [{ports: [{port: \"65536\"}, {port: -1}, {port: dns--tcp}, {port: a-very-long-port-name}, {protocol: TCP}, {port: \"\"}]}]}]}",
        &[
            "spec.ingress[0].toPorts[0].ports[0].port: \"65536\" is not a port (0-65535) or a port name",
            "spec.ingress[0].toPorts[0].ports[1].port: -1 is not a port (0-65535) or a port name",
            "spec.ingress[0].toPorts[0].ports[2].port: \"dns--tcp\" is not a port (0-65535) or a port name",
            "spec.ingress[0].toPorts[0].ports[3].port: \"a-very-long-port-name\" is not a port (0-65535) or a port name",
            "spec.ingress[0].toPorts[0].ports[4].port: missing (\"0\" means every port)",
            "spec.ingress[0].toPorts[0].ports[5].port: \"\" is not a port (0-65535) or a port name",
        ],
    );
    // Named ports are case-insensitive in Cilium: kept lowercase.
    let rule = accepts("{endpointSelector: {}, ingress: [{toPorts: [{ports: [{port: HTTP-Alt}, {port: 65535}, {port: \"0\"}]}]}]}");
    let ports = &rule.ingress.as_ref().unwrap()[0].to_ports.as_ref().unwrap()[0].ports;
    assert_eq!(ports[0].port, Some(PortValue::Text("http-alt".into())));
    assert_eq!(ports[1].port, Some(PortValue::Number(65535)));
    assert_eq!(ports[2].port.as_ref().and_then(PortValue::number), Some(0));
}

#[test]
fn protocols_are_cilium_upper_case_names() {
    rejects(
        "{endpointSelector: {}, egress: [{toPorts: [{ports: [{port: \"80\", protocol: tcp}, {port: \"80\", protocol: ICMP}]}]}]}",
        &[
            "spec.egress[0].toPorts[0].ports[0].protocol: \"tcp\" is not one of TCP, UDP, SCTP, ANY",
            "spec.egress[0].toPorts[0].ports[1].protocol: \"ICMP\" is not one of TCP, UDP, SCTP, ANY",
        ],
    );
    for protocol in ["TCP", "UDP", "SCTP", "ANY"] {
        accepts(&format!("{{endpointSelector: {{}}, egress: [{{toPorts: [{{ports: [{{port: \"80\", protocol: {protocol}}}]}}]}}]}}"));
    }
}

#[test]
fn end_ports() {
    rejects(
        "{endpointSelector: {}, egress: [{toPorts: [{ports: [{port: \"80\", endPort: 79}, {port: http, endPort: 90}, {port: \"0\", endPort: 90}, {port: \"1\", endPort: 65536}]}]}]}",
        &[
            "spec.egress[0].toPorts[0].ports[0].endPort: endPort 79 is below port 80",
            "spec.egress[0].toPorts[0].ports[1].endPort: endPort needs a numeric port, not a port name",
            "spec.egress[0].toPorts[0].ports[2].endPort: endPort needs a port other than 0 (0 is every port)",
            "spec.egress[0].toPorts[0].ports[3].endPort: 65536 is not a port (1-65535)",
        ],
    );
    // endPort 0 means no range, as in Cilium.
    let rule = accepts("{endpointSelector: {}, egress: [{toPorts: [{ports: [{port: \"80\", endPort: 0}, {port: \"80\", endPort: 80}]}]}]}");
    let ports = &rule.egress.as_ref().unwrap()[0].to_ports.as_ref().unwrap()[0].ports;
    assert_eq!(ports[0].end_port, None);
    assert_eq!(ports[1].end_port, Some(80));
}

#[test]
fn at_most_forty_ports_per_entry() {
    let ports: Vec<String> = (1..=41).map(|p| format!("{{port: \"{p}\"}}")).collect();
    rejects(
        &format!("{{endpointSelector: {{}}, egress: [{{toPorts: [{{ports: [{}]}}]}}]}}", ports.join(", ")),
        &["spec.egress[0].toPorts[0].ports: has 41 ports; at most 40 are allowed in one toPorts entry"],
    );
    accepts(&format!(
        "{{endpointSelector: {{}}, egress: [{{toPorts: [{{ports: [{}]}}]}}]}}",
        ports[..40].join(", ")
    ));
}

#[test]
fn proxy_features_are_refused() {
    rejects(
        "{endpointSelector: {}, egress: [{toPorts: [{ports: [{port: \"443\"}], serverNames: [a.io], terminatingTLS: {secret: {name: s}}, originatingTLS: {secret: {name: s}}, listener: {name: l, envoyConfig: {kind: CiliumEnvoyConfig, name: e}}}]}]}",
        &[
            "spec.egress[0].toPorts[0].terminatingTLS: terminatingTLS is not supported yet (it needs an L7 proxy)",
            "spec.egress[0].toPorts[0].originatingTLS: originatingTLS is not supported yet (it needs an L7 proxy)",
            "spec.egress[0].toPorts[0].serverNames: serverNames is not supported yet (it needs an L7 proxy)",
            "spec.egress[0].toPorts[0].listener: listener is not supported yet (it needs an L7 proxy)",
        ],
    );
}

// ---- L7 ------------------------------------------------------------------------

#[test]
fn only_dns_l7_rules() {
    rejects(
        "{endpointSelector: {}, ingress: [{toPorts: [{ports: [{port: \"80\", protocol: TCP}], rules: {http: [{method: GET}]}}, {ports: [{port: \"9092\", protocol: TCP}], rules: {kafka: [{topic: t}]}}, {ports: [{port: \"1\", protocol: TCP}], rules: {l7proto: x, l7: [{a: b}]}}]}]}",
        &[
            "spec.ingress[0].toPorts[0].rules.http: L7 http rules are not supported yet (only dns)",
            "spec.ingress[0].toPorts[1].rules.kafka: L7 kafka rules are not supported yet (only dns)",
            "spec.ingress[0].toPorts[2].rules.l7proto: L7 l7proto rules are not supported yet (only dns)",
            "spec.ingress[0].toPorts[2].rules.l7: L7 l7 rules are not supported yet (only dns)",
        ],
    );
}

#[test]
fn dns_rules_only_on_egress_with_specific_ports() {
    rejects(
        "{endpointSelector: {}, ingress: [{toPorts: [{ports: [{port: \"53\"}], rules: {dns: [{matchPattern: \"*\"}]}}]}]}",
        &["spec.ingress[0].toPorts[0].rules.dns: DNS rules are only allowed on egress (as in Cilium)"],
    );
    rejects(
        "{endpointSelector: {}, egress: [{toPorts: [{rules: {dns: [{matchPattern: \"*\"}]}}]}]}",
        &["spec.egress[0].toPorts[0].rules.dns: DNS rules need ports in the same toPorts entry (usually port \"53\"), as in Cilium"],
    );
    rejects(
        "{endpointSelector: {}, egress: [{toPorts: [{ports: [{port: \"0\", protocol: UDP}], rules: {dns: [{matchPattern: \"*\"}]}}]}]}",
        &["spec.egress[0].toPorts[0].rules.dns: DNS rules need specific ports, not port 0 (every port)"],
    );
    rejects(
        "{endpointSelector: {}, egress: [{toPorts: [{ports: [{port: \"53\", endPort: 54}], rules: {dns: [{matchPattern: \"*\"}]}}]}]}",
        &["spec.egress[0].toPorts[0].rules.dns: DNS rules do not support port ranges (endPort), as in Cilium"],
    );
}

#[test]
fn dns_selectors() {
    rejects(
        "{endpointSelector: {}, egress: [{toFQDNs: [{matchName: a.io, matchPattern: \"*.a.io\"}, {}, {matchName: \"*.a.io\"}, {matchPattern: \"a..io\"}, {matchName: \"a b\"}]}]}",
        &[
            "spec.egress[0].toFQDNs[0]: matchName and matchPattern cannot both be set; write two selectors",
            "spec.egress[0].toFQDNs[1]: one of matchName or matchPattern is required",
            "spec.egress[0].toFQDNs[2].matchName: \"*.a.io\": a matchName cannot contain '*' (wildcards need matchPattern)",
            "spec.egress[0].toFQDNs[3].matchPattern: \"a..io\" has an empty label",
            "spec.egress[0].toFQDNs[4].matchName: \"a b\" has ' ', which a DNS name cannot have (allowed: a-z, 0-9, '-', '_', '.')",
        ],
    );
    rejects(
        "{endpointSelector: {}, egress: [{toPorts: [{ports: [{port: \"53\"}], rules: {dns: [{matchPattern: \"*.a/b\"}]}}]}]}",
        &["spec.egress[0].toPorts[0].rules.dns[0].matchPattern: \"*.a/b\" has '/', which a DNS name cannot have (allowed: a-z, 0-9, '-', '_', '.', '*')"],
    );
    // Lowercase, without the trailing dot.
    let rule = accepts("{endpointSelector: {}, egress: [{toFQDNs: [{matchName: API.GitHub.com.}, {matchPattern: \"*.Cilium.IO\"}]}]}");
    assert_eq!(
        rule.egress.unwrap()[0].to_fqdns,
        Some(vec![
            FqdnSelector {
                match_name: Some("api.github.com".into()),
                match_pattern: None
            },
            FqdnSelector {
                match_name: None,
                match_pattern: Some("*.cilium.io".into())
            },
        ])
    );
}

// ---- deny ----------------------------------------------------------------------

#[test]
fn deny_rules_are_l3_l4_only() {
    rejects(
        "{endpointSelector: {}, egressDeny: [{toFQDNs: [{matchName: a.io}], authentication: {mode: disabled}}, {toPorts: [{ports: [{port: \"53\"}], rules: {dns: [{matchPattern: \"*\"}]}, serverNames: [a.io]}]}], ingressDeny: [{authentication: {mode: required}}]}",
        &[
            "spec.ingressDeny[0].authentication: deny rules cannot have authentication (as in Cilium)",
            "spec.egressDeny[0].toFQDNs: deny rules cannot have toFQDNs (as in Cilium)",
            "spec.egressDeny[0].authentication: deny rules cannot have authentication (as in Cilium)",
            "spec.egressDeny[1].toPorts[0].serverNames: deny rules cannot have serverNames",
            "spec.egressDeny[1].toPorts[0].rules: deny rules cannot have L7 rules (as in Cilium)",
        ],
    );
    accepts("{endpointSelector: {}, ingressDeny: [{fromEntities: [world], toPorts: [{ports: [{port: \"80\", protocol: TCP}]}]}], egressDeny: [{icmps: [{fields: [{type: 8}]}]}]}");
}

// ---- CIDR ----------------------------------------------------------------------

#[test]
fn cidrs_and_exceptions() {
    rejects(
        "{endpointSelector: {}, egress: [{toCIDR: [\"\", 10.0.0.0/8, \"::1\", 1.2.3]}, {toCIDRSet: [{cidr: 10.1.2.3}, {cidr: 10.0.0.0/8, except: [11.0.0.0/16, 10.0.0.0/7, \"::/64\", 10.1.0.0/16, bad]}, {except: [10.0.0.0/8]}]}]}",
        &[
            "spec.egress[0].toCIDR[0]: \"\" is not an address or a CIDR prefix",
            "spec.egress[0].toCIDR[3]: \"1.2.3\" is not an address or a CIDR prefix",
            "spec.egress[1].toCIDRSet[0].cidr: \"10.1.2.3\" is not a CIDR prefix (address/length)",
            "spec.egress[1].toCIDRSet[1].except[0]: \"11.0.0.0/16\" is not inside the cidr \"10.0.0.0/8\"",
            "spec.egress[1].toCIDRSet[1].except[1]: \"10.0.0.0/7\" is not inside the cidr \"10.0.0.0/8\"",
            "spec.egress[1].toCIDRSet[1].except[2]: \"::/64\" is not inside the cidr \"10.0.0.0/8\"",
            "spec.egress[1].toCIDRSet[1].except[4]: \"bad\" is not a CIDR prefix (address/length)",
            "spec.egress[1].toCIDRSet[2].cidr: missing",
        ],
    );
}

#[test]
fn cidr_groups_are_refused() {
    rejects(
        "{endpointSelector: {}, ingress: [{fromCIDRSet: [{cidrGroupRef: office}, {cidrGroupSelector: {matchLabels: {site: a}}}]}]}",
        &[
            "spec.ingress[0].fromCIDRSet[0].cidrGroupRef: cidrGroupRef is not supported (CiliumCIDRGroup is not implemented)",
            "spec.ingress[0].fromCIDRSet[1].cidrGroupSelector: cidrGroupSelector is not supported (CiliumCIDRGroup is not implemented)",
        ],
    );
}

#[test]
fn policy_cidrs_for_the_compiler() {
    assert_eq!(policy_cidr("10.1.2.3/8").unwrap().to_string(), "10.0.0.0/8");
    assert_eq!(policy_cidr("10.1.2.3").unwrap().to_string(), "10.1.2.3/32");
    assert_eq!(
        policy_cidr("2001:db8::7").unwrap().to_string(),
        "2001:db8::7/128"
    );
    assert!(policy_cidr("10.1.2.3/33").is_err());
}

// ---- entities, services, groups, nodes, authentication -------------------------

#[test]
fn every_documented_entity_is_accepted() {
    let rule = accepts("{endpointSelector: {}, egress: [{toEntities: [all, world, world-ipv4, world-ipv6, cluster, host, remote-node, kube-apiserver, init, health, unmanaged, ingress, none]}]}");
    assert_eq!(
        rule.egress.unwrap()[0].to_entities.as_ref().unwrap().len(),
        13
    );
    rejects(
        "{endpointSelector: {}, ingress: [{fromEntities: [World]}]}",
        &["spec.ingress[0].fromEntities[0]: \"World\" is not an entity (all, world, world-ipv4, world-ipv6, cluster, host, remote-node, kube-apiserver, init, health, unmanaged, ingress, none)"],
    );
}

#[test]
fn services() {
    rejects(
        "{endpointSelector: {}, egress: [{toServices: [{}, {k8sService: {serviceName: a}, k8sServiceSelector: {selector: {}}}, {k8sService: {namespace: Bad_NS}}, {k8sServiceSelector: {selector: {matchLabels: {\"a b\": c}}}}]}]}",
        &[
            "spec.egress[0].toServices[0]: one of k8sService or k8sServiceSelector is required",
            "spec.egress[0].toServices[1]: k8sService and k8sServiceSelector cannot both be set",
            "spec.egress[0].toServices[2].k8sService.serviceName: missing",
            "spec.egress[0].toServices[2].k8sService.namespace: \"Bad_NS\" is not a valid name: at most 63 lowercase letters, digits and '-', starting and ending with a letter or digit",
            "spec.egress[0].toServices[3].k8sServiceSelector.selector.matchLabels.a b: \"a b\" is not a label key: its name must be at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit",
        ],
    );
}

#[test]
fn groups_and_nodes_are_refused() {
    rejects(
        "{endpointSelector: {}, ingress: [{fromGroups: [{aws: {securityGroupsIds: [sg-1]}}]}, {fromNodes: [{}]}], egress: [{toGroups: [{aws: {}}]}, {toNodes: [{}]}]}",
        &[
            "spec.ingress[0].fromGroups: fromGroups is not supported (no cloud provider integration)",
            "spec.ingress[1].fromNodes: fromNodes is not supported (node selector labels are not implemented)",
            "spec.egress[0].toGroups: toGroups is not supported (no cloud provider integration)",
            "spec.egress[1].toNodes: toNodes is not supported (node selector labels are not implemented)",
        ],
    );
}

#[test]
fn authentication_only_disabled() {
    rejects(
        "{endpointSelector: {}, ingress: [{authentication: {mode: required}}, {authentication: {mode: test-always-fail}}, {authentication: {mode: strict}}, {authentication: {}}, {authentication: on}]}",
        &[
            "spec.ingress[0].authentication.mode: authentication mode \"required\" is not supported (mutual authentication is not implemented)",
            "spec.ingress[1].authentication.mode: authentication mode \"test-always-fail\" is not supported (mutual authentication is not implemented)",
            "spec.ingress[2].authentication.mode: \"strict\" is not one of disabled, required, test-always-fail",
            "spec.ingress[3].authentication.mode: missing",
            "spec.ingress[4].authentication: expected {mode: disabled}",
        ],
    );
    accepts("{endpointSelector: {}, ingress: [{authentication: {mode: disabled}}]}");
}

// ---- ICMP ----------------------------------------------------------------------

#[test]
fn icmp_families_and_types() {
    rejects(
        "{endpointSelector: {}, ingress: [{icmps: [{fields: [{type: 256}, {family: ipv4, type: 8}, {family: IPv4, type: PacketTooBig}, {family: IPv6, type: Echo}]}]}]}",
        &[
            "spec.ingress[0].icmps[0].fields[0].type: 256 is not an ICMPv4 type (0-255 or one of EchoReply, DestinationUnreachable, Redirect, Echo, EchoRequest, RouterAdvertisement, RouterSelection, TimeExceeded, ParameterProblem, Timestamp, TimestampReply, Photuris, ExtendedEchoRequest, ExtendedEchoReply)",
            "spec.ingress[0].icmps[0].fields[1].family: \"ipv4\" is not IPv4 or IPv6",
            "spec.ingress[0].icmps[0].fields[2].type: \"PacketTooBig\" is not an ICMPv4 type (0-255 or one of EchoReply, DestinationUnreachable, Redirect, Echo, EchoRequest, RouterAdvertisement, RouterSelection, TimeExceeded, ParameterProblem, Timestamp, TimestampReply, Photuris, ExtendedEchoRequest, ExtendedEchoReply)",
            "spec.ingress[0].icmps[0].fields[3].type: \"Echo\" is not an ICMPv6 type (0-255 or one of DestinationUnreachable, PacketTooBig, TimeExceeded, ParameterProblem, EchoRequest, EchoReply, MulticastListenerQuery, MulticastListenerReport, MulticastListenerDone, RouterSolicitation, RouterAdvertisement, NeighborSolicitation, NeighborAdvertisement, RedirectMessage, RouterRenumbering, ICMPNodeInformationQuery, ICMPNodeInformationResponse, InverseNeighborDiscoverySolicitation, InverseNeighborDiscoveryAdvertisement, HomeAgentAddressDiscoveryRequest, HomeAgentAddressDiscoveryReply, MobilePrefixSolicitation, MobilePrefixAdvertisement, DuplicateAddressRequestCodeSuffix, DuplicateAddressConfirmationCodeSuffix, ExtendedEchoRequest, ExtendedEchoReply)",
        ],
    );
    let fields: Vec<String> = (0..41).map(|t| format!("{{type: {t}}}")).collect();
    rejects(
        &format!("{{endpointSelector: {{}}, ingress: [{{icmps: [{{fields: [{}]}}]}}]}}", fields.join(", ")),
        &["spec.ingress[0].icmps[0].fields: has 41 fields; at most 40 are allowed in one icmps entry"],
    );
    rejects(
        "{endpointSelector: {}, ingress: [{icmps: [{fields: [{type: 8}]}], toPorts: [{ports: [{port: \"80\"}]}]}]}",
        &["spec.ingress[0]: icmps and toPorts cannot be in the same rule (as in Cilium); write separate rules"],
    );
    assert_eq!(
        icmp_type(false, &PortValue::Text("EchoRequest".into())),
        Ok(8)
    );
    assert_eq!(
        icmp_type(true, &PortValue::Text("EchoRequest".into())),
        Ok(128)
    );
}

// ---- the agent's entry points --------------------------------------------------

#[test]
fn from_cilium_as_the_agent_calls_it() {
    let spec = json!({"endpointSelector": {}, "ingress": [{"fromEntities": ["world"]}]});
    let policy = from_cilium(PolicyKind::CiliumNetworkPolicy, "", "p", Some(&spec), None).unwrap();
    assert_eq!(policy.namespace, "default");
    assert_eq!(policy.label(), "CiliumNetworkPolicy default/p");
    let policy = from_cilium(
        PolicyKind::CiliumClusterwideNetworkPolicy,
        "",
        "c",
        None,
        Some(&json!([spec])),
    )
    .unwrap();
    assert_eq!(
        (policy.namespace.as_str(), policy.rules[0].0.as_str()),
        ("", "specs[0]")
    );
    let bad = json!({"endpointSelector": {}, "ingress": [{"fromEntities": ["moon"]}]});
    let errors =
        from_cilium(PolicyKind::CiliumNetworkPolicy, "ns", "p", Some(&bad), None).unwrap_err();
    assert_eq!(
        errors[0].to_string(),
        "CiliumNetworkPolicy ns/p: spec.ingress[0].fromEntities[0]: \"moon\" is not an entity (all, world, world-ipv4, world-ipv6, cluster, host, remote-node, kube-apiserver, init, health, unmanaged, ingress, none)"
    );
    let errors = from_cilium(PolicyKind::NetworkPolicy, "ns", "p", Some(&spec), None).unwrap_err();
    assert_eq!(errors[0].path, "kind");
}

#[test]
fn from_network_policy_as_the_agent_calls_it() {
    let np: k8s_openapi::api::networking::v1::NetworkPolicy = serde_json::from_value(json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": "n", "namespace": "x"},
        "spec": {"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.0.0.0/8"]}}]}]}
    }))
    .unwrap();
    assert_eq!(
        from_network_policy(&np).unwrap_err()[0].to_string(),
        "NetworkPolicy x/n: spec.ingress[0].from[0].ipBlock.except[0]: \"10.0.0.0/8\" is not a strict subset of the cidr \"10.0.0.0/8\""
    );
}

// ---- NetworkPolicy validation ----------------------------------------------------

fn knp(spec: &str) -> String {
    format!("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: n, namespace: x}}\nspec: {spec}\n")
}

const KNP: &str = "t.yaml: document 1 (NetworkPolicy x/n): ";

#[track_caller]
fn knp_rejects(spec: &str, expected: &[&str]) {
    let expected: Vec<String> = expected.iter().map(|e| format!("{KNP}{e}")).collect();
    assert_eq!(errors(&knp(spec)), expected, "spec: {spec}");
}

#[test]
fn network_policy_peers() {
    knp_rejects(
        "{podSelector: {}, ingress: [{from: [{}, {ipBlock: {cidr: 10.0.0.0/8}, podSelector: {}}, {ipBlock: {cidr: 10.0.0.0/8, except: [10.0.0.0/8, 11.0.0.0/24, x]}}, {ipBlock: {cidr: 10.0.0.1}}]}]}",
        &[
            "spec.ingress[0].from[0]: a peer needs podSelector, namespaceSelector or ipBlock",
            "spec.ingress[0].from[1]: ipBlock cannot be combined with podSelector or namespaceSelector in one peer",
            "spec.ingress[0].from[2].ipBlock.except[0]: \"10.0.0.0/8\" is not a strict subset of the cidr \"10.0.0.0/8\"",
            "spec.ingress[0].from[2].ipBlock.except[1]: \"11.0.0.0/24\" is not a strict subset of the cidr \"10.0.0.0/8\"",
            "spec.ingress[0].from[2].ipBlock.except[2]: \"x\" is not a CIDR prefix (address/length)",
            "spec.ingress[0].from[3].ipBlock.cidr: \"10.0.0.1\" is not a CIDR prefix (address/length)",
        ],
    );
}

#[test]
fn network_policy_ports() {
    knp_rejects(
        "{podSelector: {}, egress: [{ports: [{port: 0}, {port: 70000}, {port: \"80\"}, {port: HTTP}, {protocol: ICMP}, {endPort: 90}, {port: http, endPort: 90}, {port: 90, endPort: 80}, {port: 90, endPort: 70000}]}]}",
        &[
            "spec.egress[0].ports[0].port: 0 is not a port (1-65535)",
            "spec.egress[0].ports[1].port: 70000 is not a port (1-65535)",
            "spec.egress[0].ports[2].port: \"80\" is not a port name (at most 15 lowercase letters, digits and '-', with a letter, no '-' at either end or twice in a row)",
            "spec.egress[0].ports[3].port: \"HTTP\" is not a port name (at most 15 lowercase letters, digits and '-', with a letter, no '-' at either end or twice in a row)",
            "spec.egress[0].ports[4].protocol: \"ICMP\" is not one of TCP, UDP, SCTP",
            "spec.egress[0].ports[5].endPort: endPort needs a port",
            "spec.egress[0].ports[6].endPort: endPort needs a numeric port, not a port name",
            "spec.egress[0].ports[7].endPort: endPort 80 is below port 90",
            "spec.egress[0].ports[8].endPort: 70000 is not a port (1-65535)",
        ],
    );
}

#[test]
fn network_policy_fields_types_and_selectors() {
    knp_rejects(
        "{podSelector: {matchLabels: {\"k8s:app\": a}}, policyTypes: [Ingress, ingress], ingres: [{}], egress: [{to: [{podSelector: {}, namespaceSelectr: {}}]}]}",
        &[
            "spec.egress[0].to[0].namespaceSelectr: unknown field `namespaceSelectr`, expected one of `podSelector`, `namespaceSelector`, `ipBlock`",
            "spec.ingres: unknown field `ingres`, expected one of `podSelector`, `policyTypes`, `ingress`, `egress`",
            "spec.podSelector.matchLabels.k8s:app: \"k8s:app\" is not a label key: its name must be at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit",
            "spec.policyTypes[1]: \"ingress\" is not Ingress or Egress",
        ],
    );
    knp_rejects(
        "{podSelector: {}, egress: [{to: [{podSelector: {matchExpressions: [{key: a, operator: In}]}}]}]}",
        &["spec.egress[0].to[0].podSelector.matchExpressions[0].values: operator In needs values"],
    );
    knp_rejects(
        "{podSelector: {}, ingress: [{ports: [{port: true}]}]}",
        &["spec.ingress[0].ports[0].port: invalid type: boolean `true`, expected IntOrString"],
    );
    assert_eq!(
        errors("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: n}\n"),
        ["t.yaml: document 1 (NetworkPolicy default/n): spec: missing"]
    );
}

// ---- valid policies: round trips -------------------------------------------------

/// Drops `matchLabels: {}` (the model writes an empty map as nothing).
fn without_empty_match_labels(value: &mut Value) {
    match value {
        Value::Object(map) => {
            if map
                .get("matchLabels")
                .is_some_and(|m| m.as_object().is_some_and(|m| m.is_empty()))
            {
                map.remove("matchLabels");
            }
            map.values_mut().for_each(without_empty_match_labels);
        }
        Value::Array(items) => items.iter_mut().for_each(without_empty_match_labels),
        _ => {}
    }
}

/// Every rule of every Cilium policy in tests/data/parse/valid parses
/// without error and serializes back to exactly what was written.
#[test]
fn valid_cilium_policies_round_trip() {
    let mut files: Vec<PathBuf> = std::fs::read_dir(data("valid"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(files.len() >= 12, "{files:?}");
    let mut rules = 0;
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let name = file.file_name().unwrap().to_string_lossy().to_string();
        let (policies, errors) = parse_documents(&text, &name);
        assert!(errors.is_empty(), "{name}: {errors:#?}");
        let objects: Vec<Value> = documents(&text)
            .into_iter()
            .map(|d| d.value.unwrap())
            .filter(sluice_policy::parse::is_policy)
            .collect();
        assert_eq!(policies.len(), objects.len(), "{name}");
        for (policy, object) in policies.iter().zip(&objects) {
            for (path, rule) in &policy.rules {
                let mut written = if path == "spec" {
                    object["spec"].clone()
                } else {
                    let i: usize = path["specs[".len()..path.len() - 1].parse().unwrap();
                    object["specs"][i].clone()
                };
                without_empty_match_labels(&mut written);
                assert_eq!(
                    serde_json::to_value(rule).unwrap(),
                    written,
                    "{name}: {} {path}",
                    policy.label()
                );
                // And the serialized rule parses again into the same rule.
                let again = from_cilium(
                    policy.kind,
                    &policy.namespace,
                    &policy.name,
                    Some(&written),
                    None,
                )
                .unwrap();
                assert_eq!(&again.rules[0].1, rule, "{name}: {} {path}", policy.label());
                rules += 1;
            }
        }
    }
    assert!(rules >= 19, "{rules} rules");
}

#[test]
fn valid_policies_have_their_names_and_kinds() {
    let read = |file: &str| {
        let text = std::fs::read_to_string(data("valid").join(file)).unwrap();
        parse_documents(&text, file).0
    };
    let labels = |policies: Vec<Policy>| -> Vec<String> {
        policies
            .iter()
            .map(|p| format!("{} ({} rules)", p.label(), p.rules.len()))
            .collect()
    };
    assert_eq!(
        labels(read("l3.yaml")),
        [
            "CiliumNetworkPolicy shop/backend-from-frontend (1 rules)",
            "CiliumNetworkPolicy shop/frontend-to-backend (2 rules)"
        ]
    );
    assert_eq!(
        labels(read("ccnp.yaml")),
        ["CiliumClusterwideNetworkPolicy clusterwide (2 rules)"]
    );
    assert_eq!(
        labels(read("list.json")),
        ["CiliumNetworkPolicy json-ns/from-json (1 rules)"]
    );
}

// ---- NetworkPolicy translation: golden ----------------------------------------------

/// Each tests/data/parse/knp/<case>.yaml translates into the rule written
/// (by hand) in <case>.json.
#[test]
fn network_policy_translations() {
    let mut cases: Vec<PathBuf> = std::fs::read_dir(data("knp"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    cases.sort();
    assert!(cases.len() >= 6, "{cases:?}");
    for case in cases {
        let name = case.file_stem().unwrap().to_string_lossy().to_string();
        let text = std::fs::read_to_string(&case).unwrap();
        let (policies, errors) = parse_documents(&text, &name);
        assert!(errors.is_empty(), "{name}: {errors:#?}");
        assert_eq!(policies.len(), 1, "{name}");
        let policy = &policies[0];
        assert_eq!(
            (policy.kind, policy.name.as_str()),
            (PolicyKind::NetworkPolicy, name.as_str())
        );
        assert_eq!(policy.rules.len(), 1);
        assert_eq!(policy.rules[0].0, "spec");
        let expected: Value =
            serde_json::from_str(&std::fs::read_to_string(case.with_extension("json")).unwrap())
                .unwrap();
        assert_eq!(
            serde_json::to_value(&policy.rules[0].1).unwrap(),
            expected,
            "{name}"
        );
        // The typed path (the agent's) gives the same policy.
        let value = documents(&text).remove(0).value.unwrap();
        let np = serde_json::from_value(value).unwrap();
        assert_eq!(&from_network_policy(&np).unwrap(), policy, "{name}");
    }
}

// ---- property: serialize, parse, same rule -----------------------------------------

fn label_key() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        "app",
        "k8s:app",
        "any:tier",
        "k8s:io.kubernetes.pod.namespace",
        "k8s:io.cilium.k8s.namespace.labels.kubernetes.io/metadata.name",
        "app.kubernetes.io/name",
        "reserved:host",
    ])
    .prop_map(String::from)
}

fn label_value() -> impl Strategy<Value = String> {
    prop::sample::select(vec!["web", "db", "", "v1.2", "a-b_c", "X9"]).prop_map(String::from)
}

fn selector() -> impl Strategy<Value = EndpointSelector> {
    let requirement = prop_oneof![
        (
            label_key(),
            prop::sample::select(vec!["In", "NotIn"]),
            prop::collection::vec(label_value(), 1..3)
        )
            .prop_map(|(key, op, values)| LabelSelectorRequirement {
                key,
                operator: op.into(),
                values
            }),
        (
            label_key(),
            prop::sample::select(vec!["Exists", "DoesNotExist"])
        )
            .prop_map(|(key, op)| {
                LabelSelectorRequirement {
                    key,
                    operator: op.into(),
                    values: Vec::new(),
                }
            }),
    ];
    (
        prop::collection::btree_map(label_key(), label_value(), 0..3),
        prop::collection::vec(requirement, 0..2),
    )
        .prop_map(|(match_labels, match_expressions)| EndpointSelector {
            match_labels,
            match_expressions,
        })
}

fn protocol() -> impl Strategy<Value = Option<String>> {
    prop::option::of(prop::sample::select(vec!["TCP", "UDP", "SCTP", "ANY"]).prop_map(String::from))
}

/// A port, possibly a range (`dns`: a specific port without a range).
fn port(dns: bool) -> BoxedStrategy<PortProtocol> {
    let specific = (1u16..=65535).prop_map(|p| (PortValue::Text(p.to_string()), None));
    if dns {
        return (specific, protocol())
            .prop_map(|((port, end_port), protocol)| PortProtocol {
                port: Some(port),
                end_port,
                protocol,
            })
            .boxed();
    }
    let value = prop_oneof![
        (0u16..=65535).prop_map(|p| (PortValue::Number(i64::from(p)), None)),
        (1u16..=65000, 0i32..500)
            .prop_map(|(p, span)| (PortValue::Text(p.to_string()), Some(i32::from(p) + span))),
        prop::sample::select(vec!["http", "dns-tcp", "serve-80-udp", "h2c"])
            .prop_map(|n| (PortValue::Text(n.into()), None)),
    ];
    (value, protocol())
        .prop_map(|((port, end_port), protocol)| PortProtocol {
            port: Some(port),
            end_port,
            protocol,
        })
        .boxed()
}

fn fqdn() -> impl Strategy<Value = FqdnSelector> {
    prop_oneof![
        prop::sample::select(vec!["api.github.com", "a.io", "_sip._udp.example.com"]).prop_map(
            |n| {
                FqdnSelector {
                    match_name: Some(n.into()),
                    match_pattern: None,
                }
            }
        ),
        prop::sample::select(vec!["*", "*.cilium.io", "sub*.cilium.io", "**.example.com"])
            .prop_map(|p| FqdnSelector {
                match_name: None,
                match_pattern: Some(p.into()),
            }),
    ]
}

fn port_rule(dns: bool) -> impl Strategy<Value = PortRule> {
    let rules = if dns {
        prop::collection::vec(fqdn(), 0..3)
            .prop_map(|dns| {
                Some(L7Rules {
                    dns: Some(dns),
                    ..L7Rules::default()
                })
            })
            .boxed()
    } else {
        Just(None).boxed()
    };
    (prop::collection::vec(port(dns), 1..4), rules).prop_map(|(ports, rules)| PortRule {
        ports,
        rules,
        ..PortRule::default()
    })
}

fn prefix(v4: u32, len: u32) -> String {
    let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
    format!("{}/{len}", std::net::Ipv4Addr::from(v4 & mask))
}

fn cidr_rule() -> impl Strategy<Value = CidrRule> {
    (
        any::<u32>(),
        0u32..=24,
        prop::collection::vec(0u32..=8, 0..3),
    )
        .prop_map(|(addr, len, extra)| CidrRule {
            cidr: Some(prefix(addr, len)),
            except: extra.iter().map(|e| prefix(addr, len + e)).collect(),
            ..CidrRule::default()
        })
}

fn icmp_rule() -> impl Strategy<Value = IcmpRule> {
    let field = prop_oneof![
        (0i64..=255).prop_map(|t| IcmpField {
            family: None,
            icmp_type: PortValue::Number(t)
        }),
        prop::sample::select(vec!["EchoRequest", "EchoReply", "TimeExceeded"]).prop_map(|t| {
            IcmpField {
                family: Some("IPv4".into()),
                icmp_type: PortValue::Text(t.into()),
            }
        }),
        prop::sample::select(vec!["EchoRequest", "NeighborSolicitation", "PacketTooBig"]).prop_map(
            |t| IcmpField {
                family: Some("IPv6".into()),
                icmp_type: PortValue::Text(t.into())
            }
        ),
    ];
    prop::collection::vec(field, 1..3).prop_map(|fields| IcmpRule { fields })
}

fn entities() -> impl Strategy<Value = Vec<String>> {
    prop::collection::vec(
        prop::sample::select(vec![
            "all",
            "world",
            "cluster",
            "host",
            "kube-apiserver",
            "none",
        ])
        .prop_map(String::from),
        1..3,
    )
}

/// The L3 part of a rule: at most one kind of peer (Cilium's rule).
#[derive(Clone, Debug)]
enum Peers {
    None,
    Endpoints(Vec<EndpointSelector>),
    Cidr(Vec<String>),
    CidrSet(Vec<CidrRule>),
    Entities(Vec<String>),
    Services(Vec<ServiceRule>),
    Fqdns(Vec<FqdnSelector>),
}

/// The L4 part: ports or ICMP, not both (Cilium's rule).
#[derive(Clone, Debug)]
enum L4 {
    None,
    Ports(Vec<PortRule>),
    Icmps(Vec<IcmpRule>),
}

fn peers(egress: bool, deny: bool) -> BoxedStrategy<Peers> {
    let common = prop_oneof![
        Just(Peers::None),
        prop::collection::vec(selector(), 1..3).prop_map(Peers::Endpoints),
        prop::collection::vec((any::<u32>(), 0u32..=32), 1..3)
            .prop_map(|p| Peers::Cidr(p.into_iter().map(|(a, l)| prefix(a, l)).collect())),
        prop::collection::vec(cidr_rule(), 1..3).prop_map(Peers::CidrSet),
        entities().prop_map(Peers::Entities),
    ];
    if !egress {
        return common.boxed();
    }
    let services = prop::collection::vec(
        prop::sample::select(vec!["api", "db"]).prop_map(|name| ServiceRule {
            k8s_service: Some(K8sServiceName {
                service_name: name.into(),
                namespace: Some("default".into()),
            }),
            k8s_service_selector: None,
        }),
        1..3,
    )
    .prop_map(Peers::Services);
    if deny {
        return prop_oneof![common, services].boxed();
    }
    let fqdns = prop::collection::vec(fqdn(), 1..3).prop_map(Peers::Fqdns);
    prop_oneof![common, services, fqdns].boxed()
}

fn l4(egress: bool, deny: bool) -> BoxedStrategy<L4> {
    let plain = prop::collection::vec(port_rule(false), 1..3).prop_map(L4::Ports);
    let icmps = prop::collection::vec(icmp_rule(), 1..3).prop_map(L4::Icmps);
    if egress && !deny {
        let dns = prop::collection::vec(port_rule(true), 1..3).prop_map(L4::Ports);
        prop_oneof![Just(L4::None), plain, icmps, dns].boxed()
    } else {
        prop_oneof![Just(L4::None), plain, icmps].boxed()
    }
}

fn requires() -> impl Strategy<Value = Option<Vec<EndpointSelector>>> {
    prop::option::of(prop::collection::vec(selector(), 1..2))
}

fn ingress_rule(deny: bool) -> impl Strategy<Value = IngressRule> {
    (
        peers(false, deny),
        requires(),
        l4(false, deny),
        any::<bool>(),
    )
        .prop_map(move |(peers, from_requires, l4, auth)| {
            let mut rule = IngressRule {
                from_requires,
                authentication: (auth && !deny).then(|| json!({"mode": "disabled"})),
                ..IngressRule::default()
            };
            match peers {
                Peers::Endpoints(s) => rule.from_endpoints = Some(s),
                Peers::Cidr(c) => rule.from_cidr = Some(c),
                Peers::CidrSet(c) => rule.from_cidr_set = Some(c),
                Peers::Entities(e) => rule.from_entities = Some(e),
                Peers::None | Peers::Services(_) | Peers::Fqdns(_) => {}
            }
            match l4 {
                L4::Ports(p) => rule.to_ports = Some(p),
                L4::Icmps(i) => rule.icmps = Some(i),
                L4::None => {}
            }
            rule
        })
}

fn egress_rule(deny: bool) -> impl Strategy<Value = EgressRule> {
    (peers(true, deny), requires(), l4(true, deny)).prop_map(|(peers, to_requires, l4)| {
        let mut rule = EgressRule {
            to_requires,
            ..EgressRule::default()
        };
        match peers {
            Peers::Endpoints(s) => rule.to_endpoints = Some(s),
            Peers::Cidr(c) => rule.to_cidr = Some(c),
            Peers::CidrSet(c) => rule.to_cidr_set = Some(c),
            Peers::Entities(e) => rule.to_entities = Some(e),
            Peers::Services(s) => rule.to_services = Some(s),
            Peers::Fqdns(f) => rule.to_fqdns = Some(f),
            Peers::None => {}
        }
        match l4 {
            L4::Ports(p) => rule.to_ports = Some(p),
            L4::Icmps(i) => rule.icmps = Some(i),
            L4::None => {}
        }
        rule
    })
}

fn valid_rule() -> impl Strategy<Value = Rule> {
    (
        selector(),
        prop::option::of(prop::collection::vec(ingress_rule(false), 1..3)),
        prop::option::of(prop::collection::vec(ingress_rule(true), 1..3)),
        prop::option::of(prop::collection::vec(egress_rule(false), 1..3)),
        prop::option::of(prop::collection::vec(egress_rule(true), 1..3)),
        prop::option::of((
            prop::option::of(any::<bool>()),
            prop::option::of(any::<bool>()),
        )),
        prop::option::of("[a-z ]{0,12}"),
    )
        .prop_filter("a rule needs a direction", |r| {
            r.1.is_some() || r.2.is_some() || r.3.is_some() || r.4.is_some()
        })
        .prop_map(
            |(selector, ingress, ingress_deny, egress, egress_deny, default_deny, description)| {
                Rule {
                    endpoint_selector: Some(selector),
                    ingress,
                    ingress_deny,
                    egress,
                    egress_deny,
                    enable_default_deny: default_deny
                        .map(|(ingress, egress)| DefaultDenyConfig { ingress, egress }),
                    description,
                    ..Rule::default()
                }
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// A valid rule, written out as a CiliumNetworkPolicy (JSON, and YAML)
    /// and parsed again, is the same rule.
    #[test]
    fn a_rule_serialized_and_parsed_back_is_equal(rule in valid_rule()) {
        let object = json!({
            "apiVersion": "cilium.io/v2",
            "kind": "CiliumNetworkPolicy",
            "metadata": {"name": "p", "namespace": "ns"},
            "spec": serde_json::to_value(&rule).unwrap(),
        });
        let policy = parse_object(&object, "prop").map_err(|e| {
            TestCaseError::fail(format!("{e:#?}"))
        })?;
        prop_assert_eq!(&policy.rules, &vec![("spec".to_string(), rule.clone())]);
        let yaml = serde_yaml_ng::to_string(&object).unwrap();
        let (policies, errors) = parse_documents(&yaml, "prop.yaml");
        prop_assert!(errors.is_empty(), "{:#?}", errors);
        prop_assert_eq!(&policies[0].rules[0].1, &rule);
    }

    /// Any rule (valid or not) survives the model's own serde round trip.
    #[test]
    fn the_model_round_trips_through_json(rule in valid_rule(), text in "[a-z]{1,8}", number in any::<i64>()) {
        let mut rule = rule;
        // Values validation would refuse still round trip.
        rule.ingress.get_or_insert_with(Vec::new).push(IngressRule {
            from_entities: Some(vec![text.clone()]),
            to_ports: Some(vec![PortRule {
                ports: vec![PortProtocol {
                    port: Some(PortValue::Number(number)),
                    end_port: Some(-1),
                    protocol: Some(text.clone()),
                }],
                ..PortRule::default()
            }]),
            ..IngressRule::default()
        });
        let json = serde_json::to_string(&rule).unwrap();
        let back: Rule = serde_json::from_str(&json).unwrap();
        prop_assert_eq!(back, rule);
    }
}
