//! Cilium's policy semantics in the lab, with CiliumNetworkPolicy and
//! CiliumClusterwideNetworkPolicy: deny precedence over an L3 allow,
//! toEntities world, CIDR sets with except (both directions), ICMP type
//! rules, fromRequires, namespace-label selectors, a clusterwide policy
//! across namespaces; and for the deny and clusterwide cases what
//! `sluice policy trace` answers and how `sluice stats` counts the drops
//! (`policy_denied` / `policy_denied_by_denylist`, per policy in
//! `policy_drops`).
//!
//! Same lab as the upstream cases (`tests/netpol_e2e.rs`: namespaces x, y, z,
//! pods a, b, c) plus the outside namespace behind the node's uplink, with a
//! second outside address (192.168.254.3) for the except clauses. The cases
//! are data (`tests/netpol/cilium/*.yaml`); one shared lab, one case at a time.
//!
//! Run: `cargo test --release -p sluice-tests --test policy_cilium` as root.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use serde_json::Value;
use sluice_lab::binaries::{find_binary, CLI};
use sluice_lab::command::run;
use sluice_lab::Lab;
use sluice_tests::netpol::case::Case;
use sluice_tests::netpol::runner::{PolicyLab, PolicyLabOptions};
use sluice_tests::netpol::shared::SharedLab;
use sluice_tests::service_checks::root_or_skip;

/// The outside's second address: excepted by the CIDR cases.
const OUTSIDE_SECOND: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 168, 254, 3));

static LAB: SharedLab<PolicyLab> = SharedLab::new();

fn with_lab<R>(test: &str, body: impl FnOnce(&mut PolicyLab) -> R) -> Option<R> {
    if !root_or_skip(test) {
        return None;
    }
    let options = PolicyLabOptions {
        outside: true,
        outside_addresses: vec![(OUTSIDE_SECOND, 24)],
    };
    Some(LAB.run(|| PolicyLab::start(&options).expect("policy lab up"), body))
}

fn replay_in(lab: &mut PolicyLab, test: &str, file: &str) {
    let case = Case::load(file, &lab.model).unwrap_or_else(|e| panic!("{e:#}"));
    let started = Instant::now();
    if let Err(err) = lab.run_case(&case) {
        panic!(
            "{test} ({file}) failed after {:.1} s: {err:#}",
            started.elapsed().as_secs_f64()
        );
    }
}

/// `sluice <args>` against the lab's agent and engine: exit code and stdout.
fn sluice(lab: &Lab, args: &[&str]) -> (i32, String) {
    let cli = find_binary(CLI).expect("the sluice CLI (cargo build --release -p sluice-cli)");
    let out = run(
        std::process::Command::new(&cli)
            .arg("--agent-socket")
            .arg(lab.agent_socket())
            .arg("--engine-socket")
            .arg(lab.stats_socket())
            .args(args),
        Duration::from_secs(30),
    )
    .expect("sluice runs");
    (out.status.code().unwrap_or(-1), out.stdout)
}

/// `sluice policy trace ... -o json`: the exit code (0 allowed, 1 denied)
/// and the answer.
fn trace(lab: &Lab, src: &str, dst: &str, protocol: &str, dport: Option<u16>) -> (i32, Value) {
    let port = dport.map(|p| p.to_string());
    let mut args = vec![
        "policy",
        "trace",
        "--src",
        src,
        "--dst",
        dst,
        "--protocol",
        protocol,
        "-o",
        "json",
    ];
    if let Some(port) = &port {
        args.extend(["--dport", port]);
    }
    let (code, stdout) = sluice(lab, &args);
    let answer = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("policy trace {src} -> {dst} printed {stdout:?}: {e}"));
    (code, answer)
}

/// The one path's decision in `direction` and the deciding rule's
/// (kind, namespace, name, path).
fn decision(answer: &Value, direction: &str) -> (String, [String; 4]) {
    let d = &answer["paths"][0][direction];
    let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
    (
        text(&d["decision"]),
        [
            text(&d["rule"]["kind"]),
            text(&d["rule"]["namespace"]),
            text(&d["rule"]["name"]),
            text(&d["rule"]["path"]),
        ],
    )
}

/// `sluice stats --json`.
fn stats(lab: &Lab) -> Value {
    let (code, stdout) = sluice(lab, &["stats", "--json"]);
    assert_eq!(code, 0, "sluice stats: {stdout}");
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("sluice stats printed {stdout:?}: {e}"))
}

/// The count of drop reason `name`.
fn drops(stats: &Value, name: &str) -> u64 {
    stats["drops"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|d| d["name"] == name)
        .and_then(|d| d["count"].as_u64())
        .unwrap_or(0)
}

/// Packets `policy_drops` counts for policy `name` in `direction` on rule
/// paths containing `path`.
fn policy_drops(stats: &Value, kind: &str, name: &str, direction: &str, path: &str) -> u64 {
    stats["policy_drops"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| {
            r["kind"] == kind
                && r["name"] == name
                && r["direction"] == direction
                && r["path"].as_str().unwrap_or_default().contains(path)
        })
        .filter_map(|r| r["packets"].as_u64())
        .sum()
}

#[test]
fn an_l3_allow_plus_a_deny_on_port_80_denies_80_and_allows_81_and_ping() {
    let test = "an_l3_allow_plus_a_deny_on_port_80_denies_80_and_allows_81_and_ping";
    with_lab(test, |lab| {
        let before = stats(&lab.lab);
        replay_in(lab, test, "cilium/l3-allow-with-deny-on-80.yaml");
        let after = stats(&lab.lab);
        let cnp = "CiliumNetworkPolicy";

        // Namespace y's probes of x/a:80 met the deny rule.
        assert!(
            drops(&after, "policy_denied_by_denylist")
                > drops(&before, "policy_denied_by_denylist"),
            "policy_denied_by_denylist did not grow: {}",
            after["drops"]
        );
        assert!(
            policy_drops(&after, cnp, "deny-80", "ingress", "ingressDeny")
                > policy_drops(&before, cnp, "deny-80", "ingress", "ingressDeny"),
            "no ingressDeny drops of x/deny-80 in policy_drops: {}",
            after["policy_drops"]
        );
        // Namespaces x and z found no allow rule.
        assert!(
            drops(&after, "policy_denied") > drops(&before, "policy_denied"),
            "policy_denied did not grow: {}",
            after["drops"]
        );

        let (code, answer) = trace(&lab.lab, "y/b", "x/a", "tcp", Some(80));
        assert_eq!(code, 1, "denied traces exit 1: {answer}");
        assert_eq!(answer["allowed"], false, "{answer}");
        let (how, rule) = decision(&answer, "ingress");
        assert_eq!(how, "denied", "{answer}");
        assert_eq!(rule[..3], [cnp, "x", "deny-80"], "{answer}");
        assert!(rule[3].contains("ingressDeny"), "{answer}");

        let (code, answer) = trace(&lab.lab, "y/b", "x/a", "tcp", Some(81));
        assert_eq!(code, 0, "allowed traces exit 0: {answer}");
        let (how, rule) = decision(&answer, "ingress");
        assert_eq!(how, "allowed", "{answer}");
        assert_eq!(rule[..3], [cnp, "x", "l3-allow-y"], "{answer}");

        let (code, answer) = trace(&lab.lab, "y/b", "x/a", "icmp", None);
        assert_eq!(
            (code, decision(&answer, "ingress").0.as_str()),
            (0, "allowed"),
            "{answer}"
        );

        let (code, answer) = trace(&lab.lab, "x/b", "x/a", "tcp", Some(81));
        assert_eq!(code, 1, "{answer}");
        assert_eq!(decision(&answer, "ingress").0, "no_allow_rule", "{answer}");
    });
}

#[test]
fn to_entities_world_opens_egress_to_the_outside() {
    let test = "to_entities_world_opens_egress_to_the_outside";
    with_lab(test, |lab| {
        replay_in(lab, test, "cilium/to-entities-world.yaml")
    });
}

#[test]
fn to_cidr_set_with_except_allows_an_outside_address_but_not_the_excepted_one() {
    let test = "to_cidr_set_with_except_allows_an_outside_address_but_not_the_excepted_one";
    with_lab(test, |lab| {
        replay_in(lab, test, "cilium/to-cidr-except.yaml")
    });
}

#[test]
fn from_cidr_set_with_except_admits_an_outside_address_but_not_the_excepted_one() {
    let test = "from_cidr_set_with_except_admits_an_outside_address_but_not_the_excepted_one";
    with_lab(test, |lab| {
        replay_in(lab, test, "cilium/from-cidr-except.yaml")
    });
}

#[test]
fn an_icmp_echo_request_rule_allows_ping_but_not_tcp() {
    let test = "an_icmp_echo_request_rule_allows_ping_but_not_tcp";
    with_lab(test, |lab| {
        replay_in(lab, test, "cilium/icmp-echo-request.yaml")
    });
}

#[test]
fn from_requires_constrains_every_rule_and_grants_nothing_alone() {
    let test = "from_requires_constrains_every_rule_and_grants_nothing_alone";
    with_lab(test, |lab| {
        replay_in(lab, test, "cilium/from-requires.yaml")
    });
}

#[test]
fn namespace_label_selectors_select_the_pods_of_labelled_namespaces() {
    let test = "namespace_label_selectors_select_the_pods_of_labelled_namespaces";
    with_lab(test, |lab| {
        replay_in(lab, test, "cilium/namespace-labels.yaml")
    });
}

#[test]
fn a_clusterwide_policy_selects_across_namespaces_and_its_drops_carry_its_name() {
    let test = "a_clusterwide_policy_selects_across_namespaces_and_its_drops_carry_its_name";
    with_lab(test, |lab| {
        let before = stats(&lab.lab);
        replay_in(lab, test, "cilium/ccnp-across-namespaces.yaml");
        let after = stats(&lab.lab);
        let ccnp = "CiliumClusterwideNetworkPolicy";
        // Pods c (and a) found no allow rule into the a pods: the drop names
        // the clusterwide policy that made them default-deny.
        assert!(
            policy_drops(&after, ccnp, "a-from-b", "ingress", "")
                > policy_drops(&before, ccnp, "a-from-b", "ingress", ""),
            "no ingress drops of a-from-b in policy_drops: {}",
            after["policy_drops"]
        );
        assert!(
            policy_drops(&after, ccnp, "z-not-81", "egress", "egressDeny")
                > policy_drops(&before, ccnp, "z-not-81", "egress", "egressDeny"),
            "no egressDeny drops of z-not-81 in policy_drops: {}",
            after["policy_drops"]
        );
        let (code, answer) = trace(&lab.lab, "z/b", "y/c", "tcp", Some(81));
        assert_eq!(code, 1, "{answer}");
        let (how, rule) = decision(&answer, "egress");
        assert_eq!(how, "denied", "{answer}");
        assert_eq!(rule[..3], [ccnp, "", "z-not-81"], "{answer}");
        let (code, answer) = trace(&lab.lab, "y/b", "z/a", "tcp", Some(80));
        assert_eq!(code, 0, "{answer}");
        assert_eq!(decision(&answer, "ingress").1[2], "a-from-b", "{answer}");
    });
}

#[test]
fn with_ciliums_cidr_match_mode_an_ipblock_of_a_pod_address_does_not_match_the_pod() {
    let test = "with_ciliums_cidr_match_mode_an_ipblock_of_a_pod_address_does_not_match_the_pod";
    with_lab(test, |lab| {
        replay_in(lab, test, "cilium/cidr-match-world-only.yaml")
    });
}
