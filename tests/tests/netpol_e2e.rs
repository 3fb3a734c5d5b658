//! Upstream Kubernetes NetworkPolicy e2e cases (test/e2e/network/netpol,
//! `[sig-network] Netpol`) replayed in the lab: namespaces x, y, z with pods
//! a, b, c (upstream's model, `sluice_tests::netpol::model`), netexec
//! answering on TCP and UDP 80 and 81 in every pod, each case's policies
//! written into the agent's manifest directory, and after every step all 81
//! pairs probed with real connections and compared with the expected matrix
//! (loopback ignored, one retry, mismatches printed as upstream prints them).
//!
//! One test per upstream case, named after it; the cases are data
//! (`tests/netpol/<file>.yaml`). All tests of this file share one lab (built
//! by the first, torn down by the last; `sluice_tests::netpol::shared`) and
//! take turns on it; every case starts from no policies and upstream's labels.
//! docs/netpol-e2e.md lists them with their status.
//!
//! Run: `cargo test --release -p sluice-tests --test netpol_e2e` as root,
//! with `sluice-engine`, `sluice-agent`, `sluice-cni` and `sluice` built in
//! the same target directory and profile.

use std::time::{Duration, Instant};

use sluice_tests::netpol::case::{Case, Probe};
use sluice_tests::netpol::runner::{PolicyLab, PolicyLabOptions};
use sluice_tests::netpol::shared::SharedLab;
use sluice_tests::service_checks::root_or_skip;

static LAB: SharedLab<PolicyLab> = SharedLab::new();

fn with_lab<R>(test: &str, body: impl FnOnce(&mut PolicyLab) -> R) -> Option<R> {
    if !root_or_skip(test) {
        return None;
    }
    Some(LAB.run(
        || PolicyLab::start(&PolicyLabOptions::default()).expect("policy lab up"),
        body,
    ))
}

/// Replays `tests/netpol/<file>` in the shared lab; panics with the
/// step and the matrices when it does not pass.
fn replay(test: &str, file: &str) {
    with_lab(test, |lab| replay_in(lab, test, file));
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

macro_rules! upstream_case {
    ($(#[$doc:meta])* $name:ident, $file:literal) => {
        $(#[$doc])*
        #[test]
        fn $name() {
            replay(stringify!($name), $file);
        }
    };
}

/// The harness itself: with no policy every pod reaches every pod on both
/// ports and protocols, and a wrong expectation is reported with the
/// matrices (so a broken probe cannot pass every case).
#[test]
fn no_policy_everything_is_reachable_and_a_wrong_expectation_is_reported() {
    let test = "no_policy_everything_is_reachable_and_a_wrong_expectation_is_reported";
    with_lab(test, |lab| {
        replay_in(lab, test, "no-policy.yaml");
        let wrong: Probe =
            serde_yaml_ng::from_str("{on: [80/TCP], default: allow, expect: [\"deny * -> x/a\"]}")
                .unwrap();
        let started = Instant::now();
        let err = lab
            .validate(&[wrong], &[])
            .expect_err("a policy-free lab must not match an expectation that x/a is isolated");
        let text = format!("{err:#}");
        assert!(
            text.contains("incorrect:8") && text.contains("y/b -> x/a: expected blocked"),
            "the report names the 8 wrong cells: {text}"
        );
        // Both tries had every cell answered: no probe deadline was waited for.
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "{:?}",
            started.elapsed()
        );
    });
}

upstream_case!(
    should_support_a_default_deny_ingress_policy,
    "default-deny-ingress.yaml"
);
upstream_case!(
    should_support_a_default_deny_all_policy,
    "default-deny-all.yaml"
);
upstream_case!(
    should_enforce_policy_to_allow_traffic_from_pods_within_server_namespace_based_on_podselector,
    "allow-from-podselector.yaml"
);
upstream_case!(
    should_enforce_policy_to_allow_ingress_traffic_for_a_target,
    "allow-ingress-for-target.yaml"
);
upstream_case!(
    should_enforce_policy_to_allow_ingress_traffic_from_pods_in_all_namespaces,
    "allow-from-all-namespaces.yaml"
);
upstream_case!(
    should_enforce_policy_to_allow_traffic_only_from_a_different_namespace_based_on_namespaceselector,
    "allow-from-namespaceselector.yaml"
);
upstream_case!(
    should_enforce_policy_based_on_podselector_with_matchexpressions,
    "podselector-matchexpressions.yaml"
);
upstream_case!(
    should_enforce_policy_based_on_namespaceselector_with_matchexpressions,
    "namespaceselector-matchexpressions.yaml"
);
upstream_case!(
    should_enforce_policy_based_on_podselector_or_namespaceselector,
    "podselector-or-namespaceselector.yaml"
);
upstream_case!(
    should_enforce_policy_based_on_podselector_and_namespaceselector,
    "podselector-and-namespaceselector.yaml"
);
upstream_case!(
    should_enforce_policy_based_on_multiple_podselectors_and_namespaceselectors,
    "multiple-podselectors-and-namespaceselectors.yaml"
);
upstream_case!(
    should_enforce_policy_based_on_any_podselectors,
    "any-podselectors.yaml"
);
upstream_case!(
    should_enforce_policy_to_allow_traffic_only_from_a_pod_in_a_different_namespace_based_on_podselector_and_namespaceselector,
    "pod-in-other-namespace.yaml"
);
upstream_case!(should_enforce_policy_based_on_ports, "ports.yaml");
upstream_case!(
    should_enforce_multiple_stacked_policies_with_overlapping_podselectors,
    "stacked-policies.yaml"
);
upstream_case!(should_support_allow_all_policy, "allow-all.yaml");
upstream_case!(
    should_allow_ingress_access_on_one_named_port,
    "ingress-named-port.yaml"
);
upstream_case!(
    should_allow_ingress_access_from_namespace_on_one_named_port,
    "ingress-named-port-from-namespace.yaml"
);
upstream_case!(
    should_allow_egress_access_on_one_named_port,
    "egress-named-port.yaml"
);
upstream_case!(should_enforce_updated_policy, "updated-policy.yaml");
upstream_case!(
    should_allow_ingress_access_from_updated_namespace,
    "ingress-from-updated-namespace.yaml"
);
upstream_case!(
    should_allow_ingress_access_from_updated_pod,
    "ingress-from-updated-pod.yaml"
);
upstream_case!(
    should_deny_ingress_from_pods_on_other_namespaces,
    "deny-ingress-from-other-namespaces.yaml"
);
upstream_case!(
    should_deny_ingress_access_to_updated_pod,
    "deny-ingress-to-updated-pod.yaml"
);
upstream_case!(
    should_deny_egress_from_pods_based_on_podselector,
    "deny-egress-podselector.yaml"
);
upstream_case!(
    should_deny_egress_from_all_pods_in_a_namespace,
    "deny-egress-namespace.yaml"
);
upstream_case!(
    should_work_with_ingress_egress_specified_together,
    "ingress-and-egress-together.yaml"
);
upstream_case!(
    should_support_denying_of_egress_traffic_on_the_client_side_even_if_the_server_explicitly_allows_this_traffic,
    "client-side-egress-deny.yaml"
);
upstream_case!(
    should_enforce_egress_policy_allowing_traffic_to_a_server_in_a_different_namespace_based_on_podselector_and_namespaceselector,
    "egress-to-other-namespace.yaml"
);
upstream_case!(
    should_enforce_ingress_policy_allowing_any_port_traffic_to_a_server_on_a_specific_protocol,
    "any-port-on-protocol.yaml"
);
upstream_case!(
    should_enforce_multiple_ingress_policies_with_ingress_allow_all_policy_taking_precedence,
    "ingress-allow-all-precedence.yaml"
);
upstream_case!(
    should_enforce_multiple_egress_policies_with_egress_allow_all_policy_taking_precedence,
    "egress-allow-all-precedence.yaml"
);
upstream_case!(
    should_stop_enforcing_policies_after_they_are_deleted,
    "stop-enforcing-after-delete.yaml"
);
upstream_case!(
    /// One of the three ipBlock cases Cilium skips (cilium#9209): the /32 is a
    /// pod's address, which Sluice's default `--policy-cidr-match-mode` covers.
    should_allow_egress_access_to_server_in_cidr_block,
    "egress-to-cidr.yaml"
);
upstream_case!(
    /// Skipped by Cilium (cilium#9209), see above.
    should_enforce_except_clause_while_egress_access_to_server_in_cidr_block,
    "cidr-except.yaml"
);
upstream_case!(
    /// Skipped by Cilium (cilium#9209), see above.
    should_ensure_an_ip_overlapping_both_ipblock_cidr_and_ipblock_except_is_allowed,
    "cidr-and-except-overlap.yaml"
);
upstream_case!(
    should_enforce_policies_to_check_ingress_and_egress_policies_can_be_controlled_independently_based_on_podselector,
    "ingress-egress-independent.yaml"
);
upstream_case!(
    should_not_mistakenly_treat_protocol_sctp_as_protocol_tcp_even_if_the_plugin_doesnt_support_sctp,
    "sctp-not-tcp.yaml"
);
upstream_case!(
    should_properly_isolate_pods_that_are_selected_by_a_policy_allowing_sctp_even_if_the_plugin_doesnt_support_sctp,
    "sctp-isolates.yaml"
);
upstream_case!(
    should_not_allow_access_by_tcp_when_a_policy_specifies_only_udp,
    "udp-only-policy.yaml"
);
upstream_case!(
    should_enforce_policy_to_allow_traffic_based_on_namespaceselector_with_matchlabels_using_default_ns_label,
    "default-ns-label-matchlabels.yaml"
);
upstream_case!(
    should_enforce_policy_based_on_namespaceselector_with_matchexpressions_using_default_ns_label,
    "default-ns-label-matchexpressions.yaml"
);
upstream_case!(
    /// "Netpol [LinuxOnly] NetworkPolicy between server and client using UDP".
    udp_should_support_a_default_deny_ingress_policy,
    "udp-default-deny-ingress.yaml"
);
upstream_case!(
    /// "Netpol [LinuxOnly] NetworkPolicy between server and client using UDP".
    udp_should_enforce_policy_based_on_ports,
    "udp-ports.yaml"
);
upstream_case!(
    /// "Netpol [LinuxOnly] NetworkPolicy between server and client using UDP".
    udp_should_enforce_policy_to_allow_traffic_only_from_a_pod_in_a_different_namespace_based_on_podselector_and_namespaceselector,
    "udp-pod-in-other-namespace.yaml"
);
upstream_case!(
    /// endPort: proposed upstream (kubernetes#100291), never merged.
    should_enforce_policy_to_allow_ingress_traffic_using_port_range,
    "endport-ingress.yaml"
);
upstream_case!(
    /// endPort, egress and UDP: the counterpart of the case above.
    should_enforce_policy_to_allow_egress_traffic_using_port_range,
    "endport-egress.yaml"
);
