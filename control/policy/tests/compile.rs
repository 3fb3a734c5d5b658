//! The policy compiler: golden cases (`tests/golden/<case>/input.yaml` ->
//! `expected.txt`, the text of [`Compiled::dump`]) and semantics checked
//! through the engine's own lookup (`sluice_tables::PolicyTables`).
//!
//! `SLUICE_BLESS=1 cargo test -p sluice-policy --test compile` rewrites the
//! expected files; read every changed one before keeping it.
//!
//! [`Compiled::dump`]: sluice_policy::compile::Compiled::dump

mod support;

use std::path::{Path, PathBuf};

use sluice_policy::compile::{compile, labels_key, LabelSet};
use sluice_policy::model::Policy;
use sluice_tables::policy::identity::{
    FIRST_LOCAL, HOST, INIT, REMOTE_NODE, WORLD, WORLD_IPV4, WORLD_IPV6,
};
use sluice_tables::{Action, Decision, Peer, PolicyTables};
use support::{Case, Verdicts};

const TCP: u8 = 6;
const UDP: u8 = 17;
const ICMP: u8 = 1;

fn golden_dirs() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("{}: {e}", root.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|p| p.join("input.yaml").is_file())
        .collect();
    dirs.sort();
    dirs
}

/// The first line where `got` and `want` differ, with both versions.
fn first_difference(got: &str, want: &str) -> String {
    let (g, w): (Vec<&str>, Vec<&str>) = (got.lines().collect(), want.lines().collect());
    for i in 0..g.len().max(w.len()) {
        let (a, b) = (g.get(i).copied(), w.get(i).copied());
        if a != b {
            return format!(
                "line {}:\n  got:  {}\n  want: {}",
                i + 1,
                a.unwrap_or("<end>"),
                b.unwrap_or("<end>")
            );
        }
    }
    "no difference".into()
}

#[test]
fn golden_cases() {
    let bless = std::env::var("SLUICE_BLESS").is_ok_and(|v| v == "1");
    let dirs = golden_dirs();
    assert!(
        dirs.len() >= 8,
        "expected at least 8 golden cases, found {}",
        dirs.len()
    );
    let mut failures = Vec::new();
    for dir in &dirs {
        let name = dir.file_name().unwrap().to_string_lossy().to_string();
        let text = std::fs::read_to_string(dir.join("input.yaml")).unwrap();
        let case = Case::from_yaml(&text);
        let compiled = case.compile();
        if let Err(e) = PolicyTables::build(&compiled.state) {
            failures.push(format!("{name}: the engine refuses the state: {e}"));
        }
        let dump = compiled.dump();

        // The same cluster listed in another order compiles to the same bytes.
        let mut shuffled = Case::from_yaml(&text);
        shuffled.policies.reverse();
        shuffled.identities.reverse();
        shuffled.pods.reverse();
        shuffled.endpoints.reverse();
        shuffled.services.reverse();
        if shuffled.compile().dump() != dump {
            failures.push(format!("{name}: output depends on input order"));
        }

        let expected_path = dir.join("expected.txt");
        if bless {
            std::fs::write(&expected_path, &dump).unwrap();
            continue;
        }
        let expected = std::fs::read_to_string(&expected_path).unwrap_or_default();
        if dump != expected {
            failures.push(format!(
                "{name}: differs from expected.txt ({})\n--- got ---\n{dump}",
                first_difference(&dump, &expected)
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// Identities and pods most semantic tests share: namespace `default` with
/// web (local), client, other; namespace `prod` with client.
const CLUSTER: &str = r#"
identities:
  256: [k8s:app=web, k8s:io.kubernetes.pod.namespace=default, k8s:io.cilium.k8s.policy.cluster=default]
  257: [k8s:app=client, k8s:io.kubernetes.pod.namespace=default, k8s:io.cilium.k8s.policy.cluster=default]
  258: [k8s:app=other, k8s:io.kubernetes.pod.namespace=default, k8s:io.cilium.k8s.policy.cluster=default]
  259: [k8s:app=client, k8s:io.kubernetes.pod.namespace=prod, k8s:io.cilium.k8s.policy.cluster=default]
pods:
  - {pod: default/web, identity: 256, ips: [10.200.0.10], ports: [http=8080/TCP], local: true}
  - {pod: default/client, identity: 257, ips: [10.200.0.11], local: true}
  - {pod: default/other, identity: 258, ips: [10.200.1.12], ports: [http=9090/TCP]}
  - {pod: prod/client, identity: 259, ips: [10.200.1.13]}
"#;

fn case(policies_and_settings: &str) -> Case {
    Case::from_yaml(&format!("{CLUSTER}{policies_and_settings}"))
}

/// [`case`] with more pods (list items, appended to `CLUSTER`'s pods).
fn case_with_pods(pods: &str, policies_and_settings: &str) -> Case {
    Case::from_yaml(&format!("{CLUSTER}{pods}\n{policies_and_settings}"))
}

const WEB: u32 = 256;
const CLIENT: u32 = 257;
const OTHER: u32 = 258;
const PROD_CLIENT: u32 = 259;

#[test]
fn deny_wins_over_allow() {
    // Cilium's deny truth table: an L3 allow plus a deny on port 80.
    let v = Verdicts::of(&case(
        r#"
policies:
  - apiVersion: cilium.io/v2
    kind: CiliumNetworkPolicy
    metadata: {name: web, namespace: default}
    spec:
      endpointSelector: {matchLabels: {app: web}}
      ingress:
        - fromEndpoints: [{matchLabels: {app: client}}]
      ingressDeny:
        - fromEndpoints: [{matchLabels: {app: client}}]
          toPorts: [{ports: [{port: "80", protocol: TCP}]}]
"#,
    ));
    let web = "default/web";
    assert_eq!(
        v.says(v.ingress(web, CLIENT, TCP, 80)),
        "denied web spec.ingressDeny[0]"
    );
    assert_eq!(
        v.says(v.ingress(web, CLIENT, TCP, 81)),
        "allowed web spec.ingress[0]"
    );
    assert_eq!(
        v.says(v.ingress(web, CLIENT, ICMP, 8)),
        "allowed web spec.ingress[0]"
    );
    assert_eq!(v.says(v.ingress(web, OTHER, TCP, 81)), "no-allow web spec");
    // As table content: the deny line is there, for the client, on 80/TCP.
    let table = &v.compiled.state.tables[v.compiled.state.endpoints[0].ingress as usize];
    assert!(table.entries.iter().any(|e| e.action == Action::Deny
        && e.peer == Peer::Identity(CLIENT)
        && (e.protocol, e.port_min, e.port_max) == (TCP, 80, 80)));
    // Egress of web is not selected: not enforced.
    assert_eq!(v.egress(web, CLIENT, TCP, 80), Decision::NotEnforced);
}

#[test]
fn deny_of_one_policy_wins_over_allow_of_another() {
    let v = Verdicts::of(&case(
        r#"
policies:
  - apiVersion: cilium.io/v2
    kind: CiliumNetworkPolicy
    metadata: {name: allow-world, namespace: default}
    spec:
      endpointSelector: {matchLabels: {app: web}}
      ingress: [{fromEntities: [world, cluster]}]
  - apiVersion: cilium.io/v2
    kind: CiliumClusterwideNetworkPolicy
    metadata: {name: no-world}
    spec:
      endpointSelector: {}
      ingressDeny: [{fromEntities: [world]}]
"#,
    ));
    for world in [WORLD, WORLD_IPV4, WORLD_IPV6] {
        assert_eq!(
            v.says(v.ingress("default/web", world, TCP, 443)),
            "denied no-world spec.ingressDeny[0]"
        );
    }
    assert_eq!(
        v.says(v.ingress("default/web", CLIENT, TCP, 443)),
        "allowed allow-world spec.ingress[0]"
    );
    // The clusterwide deny selects the client too: default deny for it.
    assert_eq!(
        v.says(v.ingress("default/client", CLIENT, TCP, 1)),
        "no-allow no-world spec"
    );
}

#[test]
fn entities_expand_to_identities() {
    let v = Verdicts::of(&case(
        r#"
nodes: [{ip: 192.168.0.2, identity: 6}]
policies:
  - apiVersion: cilium.io/v2
    kind: CiliumNetworkPolicy
    metadata: {name: entities, namespace: default}
    specs:
      - endpointSelector: {matchLabels: {app: web}}
        egress:
          - toEntities: [world]
            toPorts: [{ports: [{port: "443"}]}]
          - toEntities: [cluster]
            toPorts: [{ports: [{port: "53", protocol: UDP}]}]
          - toCIDR: [1.1.1.1/32]
            toPorts: [{ports: [{port: "853", protocol: TCP}]}]
        ingress:
          - fromEntities: [host, remote-node]
      - endpointSelector: {matchLabels: {app: client}}
        egress: [{toEntities: [all]}]
        ingress: [{fromEntities: [none]}]
"#,
    ));
    let web = "default/web";
    let cidr = v.local("cidr:1.1.1.1/32;reserved:world");
    for world in [WORLD, WORLD_IPV4, WORLD_IPV6, cidr] {
        assert!(
            matches!(v.egress(web, world, TCP, 443), Decision::Allowed { .. }),
            "{world}"
        );
        assert!(
            matches!(v.egress(web, world, UDP, 53), Decision::NoAllowRule { .. }),
            "{world}"
        );
    }
    // cluster: reserved cluster identities and every pod identity.
    for member in [HOST, REMOTE_NODE, INIT, CLIENT, PROD_CLIENT, WEB] {
        assert!(
            matches!(v.egress(web, member, UDP, 53), Decision::Allowed { .. }),
            "{member}"
        );
        assert!(
            matches!(
                v.egress(web, member, TCP, 443),
                Decision::NoAllowRule { .. }
            ),
            "{member}"
        );
    }
    // The CIDR identity is world, so the /32 rule and `world` both reach it.
    assert_eq!(
        v.says(v.egress(web, cidr, TCP, 853)),
        "allowed entities specs[0].egress[2]"
    );
    assert!(
        matches!(v.ingress(web, HOST, TCP, 1), Decision::NotEnforced),
        "allow_localhost"
    );
    assert!(matches!(
        v.ingress(web, REMOTE_NODE, TCP, 1),
        Decision::Allowed { .. }
    ));
    assert!(matches!(
        v.ingress(web, WORLD, TCP, 1),
        Decision::NoAllowRule { .. }
    ));
    // all: every peer, also one no identity covers; none: nothing.
    let client = "default/client";
    assert!(matches!(
        v.egress(client, 12345, TCP, 1),
        Decision::Allowed { .. }
    ));
    assert!(matches!(
        v.ingress(client, WEB, TCP, 1),
        Decision::NoAllowRule { .. }
    ));
    let egress = &v.compiled.state.tables[v.compiled.state.endpoints[0].egress as usize];
    assert_eq!(egress.entries.len(), 1);
    assert_eq!(egress.entries[0].peer, Peer::Any);
}

#[test]
fn requires_narrow_every_rule_that_selects_the_endpoint() {
    let v = Verdicts::of(&Case::from_yaml(
        r#"
identities:
  256: [k8s:app=web, k8s:env=prod, k8s:io.kubernetes.pod.namespace=default]
  257: [k8s:app=client, k8s:env=prod, k8s:io.kubernetes.pod.namespace=default]
  258: [k8s:app=client, k8s:env=dev, k8s:io.kubernetes.pod.namespace=default]
pods:
  - {pod: default/web, identity: 256, local: true}
policies:
  - apiVersion: cilium.io/v2
    kind: CiliumNetworkPolicy
    metadata: {name: requires, namespace: default}
    specs:
      - endpointSelector: {matchLabels: {env: prod}}
        ingress: [{fromRequires: [{matchLabels: {env: prod}}]}]
  - apiVersion: cilium.io/v2
    kind: CiliumNetworkPolicy
    metadata: {name: clients, namespace: default}
    spec:
      endpointSelector: {matchLabels: {app: web}}
      ingress:
        - fromEndpoints: [{matchLabels: {app: client}}]
        - fromEntities: [world]
"#,
    ));
    assert_eq!(
        v.says(v.ingress("default/web", 257, TCP, 80)),
        "allowed clients spec.ingress[0]"
    );
    assert_eq!(
        v.says(v.ingress("default/web", 258, TCP, 80)),
        "no-allow clients spec"
    );
    // Requirements narrow endpoint selectors only, not entities (as Cilium).
    assert!(matches!(
        v.ingress("default/web", WORLD, TCP, 80),
        Decision::Allowed { .. }
    ));
}

#[test]
fn enable_default_deny_false_keeps_the_endpoint_open_but_denies_still_apply() {
    let v = Verdicts::of(&case(
        r#"
policies:
  - apiVersion: cilium.io/v2
    kind: CiliumNetworkPolicy
    metadata: {name: broad, namespace: default}
    spec:
      endpointSelector: {matchLabels: {app: web}}
      enableDefaultDeny: {ingress: false}
      ingress: [{fromEndpoints: [{matchLabels: {app: client}}]}]
      ingressDeny: [{fromEndpoints: [{matchLabels: {app: other}}]}]
      egress: [{toEndpoints: [{matchLabels: {app: client}}]}]
"#,
    ));
    let web = "default/web";
    let ingress = &v.compiled.state.tables[v.compiled.state.endpoints[0].ingress as usize];
    assert!(!ingress.enforced);
    assert_eq!(ingress.default_rule, None);
    assert_eq!(v.ingress(web, PROD_CLIENT, TCP, 80), Decision::NotEnforced);
    assert_eq!(
        v.says(v.ingress(web, OTHER, TCP, 80)),
        "denied broad spec.ingressDeny[0]"
    );
    assert_eq!(
        v.says(v.ingress(web, CLIENT, TCP, 80)),
        "allowed broad spec.ingress[0]"
    );
    // Egress keeps the default (enableDefaultDeny unset): enforced.
    assert_eq!(
        v.says(v.egress(web, PROD_CLIENT, TCP, 80)),
        "no-allow broad spec"
    );
}

#[test]
fn initializing_endpoints_are_always_enforced() {
    let v = Verdicts::of(&case(
        r#"
endpoints: [{name: default/starting, identity: 5}]
policies:
  - apiVersion: cilium.io/v2
    kind: CiliumClusterwideNetworkPolicy
    metadata: {name: from-init}
    spec:
      endpointSelector: {matchLabels: {"reserved:init": ""}}
      egress:
        - toEndpoints: [{matchLabels: {app: client}}]
          toPorts: [{ports: [{port: "53", protocol: UDP}]}]
"#,
    ));
    let starting = "default/starting";
    assert!(matches!(
        v.egress(starting, CLIENT, UDP, 53),
        Decision::Allowed { .. }
    ));
    assert!(matches!(
        v.egress(starting, CLIENT, TCP, 80),
        Decision::NoAllowRule { .. }
    ));
    // No rule has an ingress section for it, and still: default deny.
    assert_eq!(
        v.ingress(starting, CLIENT, TCP, 80),
        Decision::NoAllowRule { rule: None }
    );
    // In a CCNP selecting init, `{}`-style peers are not limited to pods
    // (initializing endpoints have no namespace): the peer selector kept
    // app=client only.
    assert!(matches!(
        v.egress(starting, PROD_CLIENT, UDP, 53),
        Decision::Allowed { .. }
    ));
    // Other endpoints nothing selects are not listed.
    assert!(v
        .compiled
        .state
        .endpoints
        .iter()
        .all(|e| e.endpoint == starting));
}

#[test]
fn initializing_endpoints_are_not_enforced_while_no_policy_exists() {
    let v = Verdicts::of(&case(
        r#"
endpoints: [{name: default/starting, identity: 5}]
policies: []
"#,
    ));
    assert_eq!(
        v.egress("default/starting", CLIENT, TCP, 80),
        Decision::NotEnforced
    );
    assert_eq!(
        v.ingress("default/starting", CLIENT, TCP, 80),
        Decision::NotEnforced
    );
}

#[test]
fn enforcement_modes_always_and_never() {
    let policy = r#"
policies:
  - apiVersion: cilium.io/v2
    kind: CiliumNetworkPolicy
    metadata: {name: web, namespace: default}
    spec:
      endpointSelector: {matchLabels: {app: web}}
      ingress: [{fromEndpoints: [{matchLabels: {app: client}}]}]
"#;
    let always = Verdicts::of(&case(&format!(
        "settings: {{enforcement: always}}\n{policy}"
    )));
    // Nothing selects client, yet both its directions deny.
    assert_eq!(
        always.ingress("default/client", WEB, TCP, 80),
        Decision::NoAllowRule { rule: None }
    );
    assert_eq!(
        always.egress("default/client", WEB, TCP, 80),
        Decision::NoAllowRule { rule: None }
    );
    assert!(matches!(
        always.ingress("default/web", CLIENT, TCP, 80),
        Decision::Allowed { .. }
    ));
    assert_eq!(
        always.egress("default/web", CLIENT, TCP, 80),
        Decision::NoAllowRule { rule: None }
    );
    assert_eq!(always.compiled.state.endpoints.len(), 2);

    let never = Verdicts::of(&case(&format!(
        "settings: {{enforcement: never}}\n{policy}"
    )));
    assert_eq!(
        never.ingress("default/web", OTHER, TCP, 80),
        Decision::NotEnforced
    );
    assert!(never.compiled.state.tables.is_empty());
    assert!(never.compiled.state.endpoints.is_empty());

    let default = Verdicts::of(&case(policy));
    assert_eq!(
        default.ingress("default/client", WEB, TCP, 80),
        Decision::NotEnforced
    );
    assert_eq!(default.compiled.state.endpoints.len(), 1);
}

#[test]
fn named_ports_resolve_on_the_endpoint_for_ingress_and_on_peers_for_egress() {
    let v = Verdicts::of(&case_with_pods(
        "  - {pod: default/web2, identity: 256, ips: [10.200.0.20], ports: [http=8081/TCP], local: true}",
        r#"
policies:
  - apiVersion: networking.k8s.io/v1
    kind: NetworkPolicy
    metadata: {name: http-in, namespace: default}
    spec:
      podSelector: {matchLabels: {app: web}}
      ingress: [{ports: [{port: http}]}]
  - apiVersion: cilium.io/v2
    kind: CiliumNetworkPolicy
    metadata: {name: http-out, namespace: default}
    spec:
      endpointSelector: {matchLabels: {app: client}}
      egress:
        - toEndpoints: [{}]
          toPorts: [{ports: [{port: http, protocol: TCP}]}]
        - toCIDR: [203.0.113.0/24]
          toPorts: [{ports: [{port: http}]}]
"#,
    ));
    // Ingress: each endpoint's own port of that name.
    assert!(matches!(
        v.ingress("default/web", CLIENT, TCP, 8080),
        Decision::Allowed { .. }
    ));
    assert!(matches!(
        v.ingress("default/web", CLIENT, TCP, 8081),
        Decision::NoAllowRule { .. }
    ));
    assert!(matches!(
        v.ingress("default/web2", CLIENT, TCP, 8081),
        Decision::Allowed { .. }
    ));
    assert!(matches!(
        v.ingress("default/web2", CLIENT, TCP, 8080),
        Decision::NoAllowRule { .. }
    ));
    let endpoints = &v.compiled.state.endpoints;
    assert_ne!(
        endpoints[0].ingress, endpoints[1].ingress,
        "different ports, different tables"
    );
    // Egress: the port of that name on the pods behind each peer identity.
    let client = "default/client";
    assert!(matches!(
        v.egress(client, WEB, TCP, 8080),
        Decision::Allowed { .. }
    ));
    assert!(
        matches!(v.egress(client, WEB, TCP, 8081), Decision::Allowed { .. }),
        "web2 has identity 256 too"
    );
    assert!(matches!(
        v.egress(client, OTHER, TCP, 9090),
        Decision::Allowed { .. }
    ));
    assert!(matches!(
        v.egress(client, OTHER, TCP, 8080),
        Decision::NoAllowRule { .. }
    ));
    // A pod without the name: nothing (not an error).
    assert!(matches!(
        v.egress(client, CLIENT, TCP, 8080),
        Decision::NoAllowRule { .. }
    ));
    // A peer that is not a pod: the ports every pod names so.
    let cidr = v.local("cidr:203.0.113.0/24;reserved:world");
    for port in [8080, 8081, 9090] {
        assert!(
            matches!(v.egress(client, cidr, TCP, port), Decision::Allowed { .. }),
            "{port}"
        );
    }
    assert!(v.compiled.errors.is_empty(), "{:?}", v.compiled.errors);
}

#[test]
fn cidr_except_selects_the_prefix_without_the_exception() {
    let v = Verdicts::of(&case(
        r#"
policies:
  - apiVersion: cilium.io/v2
    kind: CiliumNetworkPolicy
    metadata: {name: cidr, namespace: default}
    spec:
      endpointSelector: {matchLabels: {app: web}}
      egress:
        - toCIDRSet: [{cidr: 172.16.0.0/12, except: [172.20.0.0/16]}]
"#,
    ));
    let outer = v.local("cidr:172.16.0.0/12;reserved:world");
    let inner = v.local("cidr:172.16.0.0/12;cidr:172.20.0.0/16;reserved:world");
    assert_eq!(v.ipcache("172.16.0.0", Some(12)), Some(outer));
    assert_eq!(v.ipcache("172.20.0.0", Some(16)), Some(inner));
    assert!(outer >= FIRST_LOCAL && inner >= FIRST_LOCAL && outer != inner);
    assert!(matches!(
        v.egress("default/web", outer, TCP, 80),
        Decision::Allowed { .. }
    ));
    assert!(matches!(
        v.egress("default/web", inner, TCP, 80),
        Decision::NoAllowRule { .. }
    ));
    assert!(matches!(
        v.egress("default/web", WORLD_IPV4, TCP, 80),
        Decision::NoAllowRule { .. }
    ));
}

#[test]
fn cidr_rules_match_pod_addresses_only_with_the_option() {
    let policy = r#"
policies:
  - apiVersion: networking.k8s.io/v1
    kind: NetworkPolicy
    metadata: {name: block, namespace: default}
    spec:
      podSelector: {matchLabels: {app: web}}
      ingress:
        - from: [{ipBlock: {cidr: 10.200.0.0/16, except: [10.200.1.13/32]}}]
"#;
    let on = Verdicts::of(&case(policy));
    let client_in_cidr = on.local(&labels_key(&LabelSet::from(
        [
            "cidr:10.200.0.0/16",
            "k8s:app=client",
            "k8s:io.cilium.k8s.policy.cluster=default",
            "k8s:io.kubernetes.pod.namespace=default",
        ]
        .map(String::from),
    )));
    assert_eq!(on.ipcache("10.200.0.11", None), Some(client_in_cidr));
    assert!(matches!(
        on.ingress("default/web", client_in_cidr, TCP, 80),
        Decision::Allowed { .. }
    ));
    // The excepted pod gets an identity with both prefixes: not allowed.
    let excepted = on
        .ipcache("10.200.1.13", None)
        .expect("an entry for the excepted pod");
    assert!(matches!(
        on.ingress("default/web", excepted, TCP, 80),
        Decision::NoAllowRule { .. }
    ));
    // The pod identity itself (no cidr label) is not allowed by the ipBlock.
    assert!(matches!(
        on.ingress("default/web", CLIENT, TCP, 80),
        Decision::NoAllowRule { .. }
    ));

    let off = Verdicts::of(&case(&format!(
        "settings: {{cidr_match_pods: false}}\n{policy}"
    )));
    assert_eq!(off.ipcache("10.200.0.11", None), None);
    assert_eq!(
        off.ipcache("10.200.1.13", Some(32)),
        None,
        "a /32 on a pod address keeps the pod's identity"
    );
    assert!(off.compiled.ipcache.iter().all(|e| e.prefix_len.is_some()));
    assert!(matches!(
        off.ingress("default/web", CLIENT, TCP, 80),
        Decision::NoAllowRule { .. }
    ));
}

#[test]
fn node_addresses_join_cidr_rules_with_the_option() {
    let policy = r#"
nodes: [{ip: 192.168.0.1, identity: 1}, {ip: 192.168.0.2, identity: 6}]
policies:
  - apiVersion: cilium.io/v2
    kind: CiliumNetworkPolicy
    metadata: {name: nodes, namespace: default}
    spec:
      endpointSelector: {matchLabels: {app: web}}
      egress: [{toCIDR: [192.168.0.0/24]}, {toEntities: [remote-node], toPorts: [{ports: [{port: "10250"}]}]}]
"#;
    let on = Verdicts::of(&case(&format!(
        "settings: {{cidr_match_nodes: true}}\n{policy}"
    )));
    let node = on.ipcache("192.168.0.2", None).expect("remote node entry");
    assert_eq!(node, on.local("cidr:192.168.0.0/24;reserved:remote-node"));
    assert_eq!(
        on.ipcache("192.168.0.1", None),
        None,
        "the host keeps identity host"
    );
    assert!(matches!(
        on.egress("default/web", node, TCP, 22),
        Decision::Allowed { .. }
    ));
    // It is still a remote node for entity rules.
    let egress = &on.compiled.state.tables[on.compiled.state.endpoints[0].egress as usize];
    let rule_of = |peer: u32, port: u16| {
        egress
            .entries
            .iter()
            .find(|e| e.peer == Peer::Identity(peer) && e.protocol == TCP && e.port_min == port)
            .map(|e| on.rule(e.rule))
    };
    assert_eq!(
        rule_of(node, 10250).as_deref(),
        Some("nodes spec.egress[1]")
    );
    let off = Verdicts::of(&case(policy));
    assert_eq!(off.ipcache("192.168.0.2", None), None);
    assert!(matches!(
        off.egress("default/web", REMOTE_NODE, TCP, 22),
        Decision::NoAllowRule { .. }
    ));
    assert_eq!(
        off.says(off.egress("default/web", REMOTE_NODE, TCP, 10250)),
        "allowed nodes spec.egress[1]"
    );
}

#[test]
fn local_identity_numbers_are_stable_across_generations() {
    let policy = |cidrs: &str| {
        format!(
            r#"
policies:
  - apiVersion: cilium.io/v2
    kind: CiliumNetworkPolicy
    metadata: {{name: cidr, namespace: default}}
    spec:
      endpointSelector: {{matchLabels: {{app: web}}}}
      egress: [{{toCIDR: [{cidrs}]}}]
"#
        )
    };
    let first = case(&policy("1.0.0.0/8, 2.0.0.0/8")).compile();
    assert_eq!(
        first.local_identities.values().copied().collect::<Vec<_>>(),
        [FIRST_LOCAL, FIRST_LOCAL + 1]
    );
    // Drop the first prefix, add a third: the second keeps its number, the
    // new one takes the freed number.
    let mut next = case(&policy("2.0.0.0/8, 3.0.0.0/8"));
    next.settings.previous_local = first.local_identities.clone();
    let second = next.compile();
    assert_eq!(
        second.local_identities["cidr:2.0.0.0/8;reserved:world"],
        FIRST_LOCAL + 1
    );
    assert_eq!(
        second.local_identities["cidr:3.0.0.0/8;reserved:world"],
        FIRST_LOCAL
    );
}

#[test]
fn endpoints_with_the_same_policy_share_tables() {
    let v = Verdicts::of(&case_with_pods(
        "  - {pod: default/web2, identity: 256, ips: [10.200.0.20], local: true}\n  - {pod: default/web3, identity: 256, ips: [10.200.0.21], local: true}",
        r#"
policies:
  - apiVersion: cilium.io/v2
    kind: CiliumNetworkPolicy
    metadata: {name: web, namespace: default}
    spec:
      endpointSelector: {matchLabels: {app: web}}
      ingress: [{fromEndpoints: [{matchLabels: {app: client}}]}]
      egress: [{toEndpoints: [{matchLabels: {app: client}}]}]
"#,
    ));
    let endpoints = &v.compiled.state.endpoints;
    assert_eq!(endpoints.len(), 3, "{}", v.compiled.dump());
    assert!(endpoints
        .windows(2)
        .all(|w| (w[0].ingress, w[0].egress) == (w[1].ingress, w[1].egress)));
    // Ingress and egress allow the same peer but by different rules.
    assert_eq!(v.compiled.state.tables.len(), 2);
}

#[test]
fn dns_rules_merge_per_port_and_an_l4_allow_shadows_them() {
    let v = Verdicts::of(&case(
        r#"
policies:
  - apiVersion: cilium.io/v2
    kind: CiliumNetworkPolicy
    metadata: {name: dns, namespace: default}
    specs:
      - endpointSelector: {matchLabels: {app: web}}
        egress:
          - toEndpoints: [{matchLabels: {app: client}}]
            toPorts: [{ports: [{port: "53", protocol: UDP}], rules: {dns: [{matchName: "A.example.com."}]}}]
          - toEndpoints: [{matchLabels: {app: client}}]
            toPorts: [{ports: [{port: "53", protocol: UDP}], rules: {dns: [{matchPattern: "*.example.org"}]}}]
      - endpointSelector: {matchLabels: {app: client}}
        egress:
          - toEndpoints: [{matchLabels: {app: other}}]
            toPorts: [{ports: [{port: "53", protocol: UDP}], rules: {dns: [{matchPattern: "*"}]}}]
          - toEndpoints: [{matchLabels: {app: other}}]
            toPorts: [{ports: [{port: "53", protocol: UDP}]}]
"#,
    ));
    let state = &v.compiled.state;
    let Decision::Allowed { dns: Some(d), .. } = v.egress("default/web", CLIENT, UDP, 53) else {
        panic!("expected an allow with DNS rules");
    };
    let allow: Vec<String> = state.dns_rules[d as usize]
        .allow
        .iter()
        .map(|s| format!("{s:?}"))
        .collect();
    assert_eq!(
        allow,
        [
            "MatchName(\"a.example.com\")",
            "MatchPattern(\"*.example.org\")"
        ]
    );
    // client: the plain allow on the same port wins; no DNS checks.
    assert_eq!(
        v.says(v.egress("default/client", OTHER, UDP, 53)),
        "allowed dns specs[1].egress[1]"
    );
}

#[test]
fn services_become_selectors_or_backend_addresses() {
    let v = Verdicts::of(&case(
        r#"
services:
  - {service: default/other, labels: {tier: be}, selector: {app: other}, backends: [10.200.1.12]}
  - {service: default/external, labels: {tier: be}, backends: [198.51.100.7, 198.51.100.8]}
  - {service: prod/external, backends: [198.51.100.9]}
policies:
  - apiVersion: cilium.io/v2
    kind: CiliumNetworkPolicy
    metadata: {name: svc, namespace: default}
    spec:
      endpointSelector: {matchLabels: {app: web}}
      egress:
        - toServices: [{k8sService: {serviceName: other, namespace: default}}]
        - toServices: [{k8sServiceSelector: {selector: {matchLabels: {tier: be}}, namespace: default}}]
          toPorts: [{ports: [{port: "443", protocol: TCP}]}]
"#,
    ));
    let web = "default/web";
    assert_eq!(
        v.says(v.egress(web, OTHER, TCP, 80)),
        "allowed svc spec.egress[0]"
    );
    let backend = v.local("cidr:198.51.100.7/32;reserved:world");
    assert_eq!(
        v.says(v.egress(web, backend, TCP, 443)),
        "allowed svc spec.egress[1]"
    );
    assert!(matches!(
        v.egress(web, backend, TCP, 80),
        Decision::NoAllowRule { .. }
    ));
    assert!(v.ipcache("198.51.100.8", Some(32)).is_some());
    assert!(
        v.ipcache("198.51.100.9", Some(32)).is_none(),
        "prod/external is not selected"
    );
}

#[test]
fn rules_with_unsupported_fields_are_left_out_and_reported() {
    let rule = |json: serde_json::Value| serde_json::from_value(json).unwrap();
    let mut c = case("");
    c.policies = vec![Policy {
        kind: sluice_policy::model::PolicyKind::CiliumNetworkPolicy,
        namespace: "default".into(),
        name: "mixed".into(),
        rules: vec![
            (
                "specs[0]".into(),
                rule(serde_json::json!({
                    "endpointSelector": {"matchLabels": {"app": "web"}},
                    "egress": [
                        {"toGroups": [{"aws": {"securityGroupsIds": ["sg-1"]}}]},
                        {"toEndpoints": [{"matchExpressions": [{"key": "app", "operator": "Like"}]}]},
                        {"toCIDR": ["10.0.0.0/33"]},
                        {"toEndpoints": [{"matchLabels": {"app": "client"}}]}
                    ]
                })),
            ),
            (
                "specs[1]".into(),
                rule(serde_json::json!({"nodeSelector": {}, "ingress": [{}]})),
            ),
        ],
    }];
    let v = Verdicts::of(&c);
    assert_eq!(
        v.compiled.errors,
        [
            "CiliumNetworkPolicy default/mixed: specs[0].egress[0].toGroups: not supported (cloud provider groups)",
            "CiliumNetworkPolicy default/mixed: specs[0].egress[1].toEndpoints[0].matchExpressions[0].operator: \"Like\" is not In, NotIn, Exists or DoesNotExist",
            "CiliumNetworkPolicy default/mixed: specs[0].egress[2].toCIDR[0]: \"10.0.0.0/33\" is not an address or prefix",
            "CiliumNetworkPolicy default/mixed: specs[1].nodeSelector: host policies are not supported (no host firewall)",
        ]
    );
    // The valid element still applies, and the rule still makes egress default-deny.
    assert_eq!(
        v.says(v.egress("default/web", CLIENT, TCP, 1)),
        "allowed mixed specs[0].egress[3]"
    );
    assert_eq!(
        v.says(v.egress("default/web", OTHER, TCP, 1)),
        "no-allow mixed specs[0]"
    );
}

#[test]
fn synthetic_input_compiles_to_enforced_tables() {
    let cluster = sluice_policy::synthetic::synthetic_input(500, 200, 20);
    let compiled = compile(&cluster.input());
    assert!(compiled.errors.is_empty(), "{:?}", compiled.errors);
    assert!(PolicyTables::build(&compiled.state).is_ok());
    assert_eq!(compiled.state.endpoints.len(), 20);
    let enforced = compiled
        .state
        .tables
        .iter()
        .filter(|t| t.enforced && !t.entries.is_empty())
        .count();
    assert!(enforced > 0);
    assert!(
        !compiled.ipcache.is_empty(),
        "CIDR rules make prefix entries"
    );
    // Deterministic: the same input, the same output.
    assert_eq!(compile(&cluster.input()), compiled);
}
