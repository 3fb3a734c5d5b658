//! Root test of `sluice-lab bench scenarios`: one quick scenario/variant pair end to end (a
//! kernel-forwarding lab with 1k kube-proxy-shaped iptables services in its node namespace,
//! new TCP connections to the last ClusterIP with sluice-connrate). It proves the machinery
//! works: it checks that a positive rate came out, never how fast anything was.

use std::io::Write;
use std::path::PathBuf;

use sluice_lab::bench::scenarios::{self, Scenario, ScenariosConfig, Variant};
use sluice_lab::command;

#[test]
fn quick_crr_through_kube_proxy_iptables_rules_measures_a_rate() {
    if !command::is_root() {
        let _ = writeln!(
            std::io::stderr(),
            "skipping quick_crr_through_kube_proxy_iptables_rules_measures_a_rate: needs root"
        );
        return;
    }
    let config = ScenariosConfig {
        scenarios: vec![Scenario::TcpCrr],
        variants: vec![Variant::Ipt1k],
        connrate: Some(PathBuf::from(env!("CARGO_BIN_EXE_sluice-connrate"))),
        ..ScenariosConfig::default()
    }
    .quick();
    let report = scenarios::run(&config, "bench-lab/tests/scenarios.rs".into()).unwrap();
    assert!(report.failed.is_empty(), "{:#?}", report.failed);
    assert_eq!(report.trials.len(), 1);
    let trial = &report.trials[0];
    let rate = trial.metrics["connections_per_second"];
    assert!(rate > 0.0, "{trial:#?}");
    assert!(trial.cpu_per_unit.is_some_and(|c| c > 0.0), "{trial:#?}");
    let rules = trial.rules.as_ref().expect("the rules were loaded");
    assert_eq!(rules.services, 1_000);
    assert_eq!(report.summary.len(), 1);
    assert!(
        scenarios::markdown_table(Scenario::TcpCrr, &[&report.summary[0]])
            .contains("V3 kube-proxy iptables")
    );
}
