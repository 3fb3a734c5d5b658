//! Lab tests: real namespaces, veths and programs. They need root and skip with a
//! notice otherwise. Each test makes its own lab (unique prefix), so they run in
//! parallel.

use std::io::Write;
use std::net::IpAddr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use sluice_lab::{cleanup, command, lab_namespaces, CleanupScope, EngineOptions, Lab, LabSpec};
use sluice_tables::{MacAddr, NodeState};

fn root_or_skip(test: &str) -> bool {
    if command::is_root() {
        return true;
    }
    // Straight to stderr: the test harness does not capture it, so the skip shows.
    let _ = writeln!(std::io::stderr(), "skipping {test}: lab tests need root");
    false
}

fn netns_list() -> String {
    let out = Command::new("ip").args(["netns", "list"]).output().unwrap();
    String::from_utf8(out.stdout).unwrap()
}

fn namespaces_with(prefix: &str) -> Vec<String> {
    netns_list()
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(&format!("{prefix}-")))
        .map(str::to_string)
        .collect()
}

/// The real engine, built by `cargo build --release -p sluice-engine`
/// (scripts/test.sh does it before the tests) or named by $SLUICE_ENGINE.
fn engine_options() -> EngineOptions {
    EngineOptions::default()
}

fn ip_json(netns: &str, args: &[&str]) -> serde_json::Value {
    let mut full = vec!["-j", "-n", netns];
    full.extend_from_slice(args);
    let out = Command::new("ip").args(&full).output().unwrap();
    assert!(out.status.success(), "ip {full:?}: {:?}", out);
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn kernel_mode_pods_ping_over_v4_and_v6_and_run_iperf3() {
    if !root_or_skip("kernel_mode_pods_ping_over_v4_and_v6_and_run_iperf3") {
        return;
    }
    let lab = Lab::new(LabSpec::kernel(2)).unwrap();
    for (from, to) in [(1, 2), (2, 1)] {
        let target = lab.pod(to).unwrap().clone();
        for addr in [IpAddr::from(target.ipv4), IpAddr::from(target.ipv6)] {
            let r = lab.ping(from, addr, 3).unwrap();
            assert!(r.all_received(), "pod{from} -> {addr}: {r:?}");
            assert!(r.rtt_ms.is_some());
        }
    }
    lab.iperf3_server(2).unwrap();
    let r = lab
        .iperf3_client(1, lab.pod(2).unwrap().ipv6.into(), 1)
        .unwrap();
    assert!(r.received_bits_per_second > 1e6, "{r:?}");
    eprintln!(
        "kernel forwarding, one TCP stream over IPv6: {:.2} Gbit/s",
        r.received_bits_per_second / 1e9
    );
}

#[test]
fn engine_mode_without_an_engine_leaves_pods_isolated() {
    if !root_or_skip("engine_mode_without_an_engine_leaves_pods_isolated") {
        return;
    }
    let lab = Lab::new(LabSpec::engine(2).with_static_pods()).unwrap();
    for (from, to) in [(1, 2), (2, 1)] {
        let target = lab.pod(to).unwrap().clone();
        for addr in [IpAddr::from(target.ipv4), IpAddr::from(target.ipv6)] {
            let r = lab.ping(from, addr, 2).unwrap();
            assert_eq!(r.received, 0, "pod{from} reached {addr} without an engine");
            assert_eq!(r.sent, 2);
        }
    }
    // The node kernel owns nothing on the pod links: no address, no route.
    let node = lab.node_netns();
    for link in ip_json(node, &["addr", "show"]).as_array().unwrap() {
        let name = link["ifname"].as_str().unwrap();
        let addrs = link["addr_info"].as_array().unwrap();
        if name != "lo" {
            assert!(addrs.is_empty(), "{name} has addresses: {addrs:?}");
        }
    }
    for family in ["-4", "-6"] {
        let routes = ip_json(node, &[family, "route", "show", "table", "all"]);
        for route in routes.as_array().unwrap() {
            // Sending multicast (ff00::/8 per link) is no path between pods.
            if route["type"] == "multicast" {
                continue;
            }
            assert_eq!(route["dev"].as_str(), Some("lo"), "route {route}");
        }
    }
    let forwarding = lab
        .exec_node(
            &[
                "sysctl",
                "-n",
                "net.ipv4.ip_forward",
                "net.ipv6.conf.all.forwarding",
            ],
            command::SETUP_TIMEOUT,
        )
        .unwrap();
    assert_eq!(forwarding.stdout, "0\n0\n");
    // Pods transmit with checksums filled in by software.
    let features = lab.exec(1, &["ethtool", "-k", "eth0"]).unwrap();
    assert!(
        features.stdout.contains("tx-checksumming: off"),
        "{}",
        features.stdout
    );
}

#[test]
fn state_file_names_the_node_side_ifindex_and_the_pod_mac() {
    if !root_or_skip("state_file_names_the_node_side_ifindex_and_the_pod_mac") {
        return;
    }
    let lab = Lab::new(LabSpec::engine(3).with_queues(2).with_static_pods()).unwrap();
    let text = std::fs::read_to_string(lab.state_path()).unwrap();
    let state: NodeState = serde_json::from_str(&text).unwrap();
    assert_eq!(state, lab.node_state());
    assert_eq!(state.gateway.mac.to_string(), "02:53:4c:00:00:01");
    assert_eq!(state.gateway.ipv4.to_string(), "10.200.0.1");
    assert_eq!(state.gateway.ipv6.to_string(), "fe80::1");
    assert_eq!(state.endpoints.len(), 3);
    for (i, ep) in state.endpoints.iter().enumerate() {
        let index = i + 1;
        let pod = lab.pod(index).unwrap();
        assert_eq!(ep.name, format!("default/pod{index}"));
        assert_eq!(ep.ifname, format!("lxc{index}"));
        assert_eq!(
            ep.ipv4.unwrap().to_string(),
            format!("10.200.0.{}", 1 + index)
        );
        assert_eq!(ep.ipv6.unwrap().to_string(), format!("fd00:200::{index}"));
        assert_eq!(ep.identity, 0);
        let node_link = &ip_json(lab.node_netns(), &["-d", "link", "show", "dev", &ep.ifname])[0];
        assert_eq!(node_link["ifindex"].as_u64(), Some(u64::from(ep.ifindex)));
        assert_eq!(node_link["num_tx_queues"].as_u64(), Some(2));
        assert_eq!(node_link["num_rx_queues"].as_u64(), Some(2));
        let pod_link = &ip_json(&pod.netns, &["link", "show", "dev", "eth0"])[0];
        let mac = MacAddr::parse(pod_link["address"].as_str().unwrap()).unwrap();
        assert_eq!(mac, ep.mac);
    }
}

#[test]
fn the_engine_runs_in_the_node_namespace_answers_stats_and_stops() {
    if !root_or_skip("the_engine_runs_in_the_node_namespace_answers_stats_and_stops") {
        return;
    }
    let lab = Lab::new(LabSpec::engine(2).with_static_pods()).unwrap();
    let pid = lab.start_engine(&engine_options()).unwrap();
    assert_eq!(lab.engine_pid(), Some(pid));
    // The engine runs inside the node namespace.
    let out = Command::new("ip")
        .args(["netns", "pids", lab.node_netns()])
        .output()
        .unwrap();
    let pids = String::from_utf8(out.stdout).unwrap();
    assert!(
        pids.split_whitespace().any(|p| p == pid.to_string()),
        "{pids}"
    );
    let stats = lab.engine_stats().unwrap();
    assert_eq!(stats["engine"]["pid"], pid);
    assert_eq!(stats["endpoints"], 2);
    assert_eq!(stats["engine"]["workers"], 1);
    assert!(
        lab.start_engine(&engine_options()).is_err(),
        "second engine"
    );
    let status = lab.stop_engine().unwrap().unwrap();
    assert!(status.success(), "SIGTERM is a clean shutdown: {status}");
    assert_eq!(lab.engine_pid(), None);
    assert!(!Path::new(&format!("/proc/{pid}")).exists());
    assert!(lab.engine_stats().is_err());
}

#[test]
fn an_engine_that_fails_to_start_is_reported_with_its_log() {
    if !root_or_skip("an_engine_that_fails_to_start_is_reported_with_its_log") {
        return;
    }
    let lab = Lab::new(LabSpec::engine(1).with_static_pods()).unwrap();
    std::fs::write(lab.state_path(), "{ not json").unwrap();
    let err = format!("{:#}", lab.start_engine(&engine_options()).unwrap_err());
    assert!(err.contains("exited"), "{err}");
    assert!(err.contains("parse node state"), "{err}");
    assert!(err.contains("--stats-socket"), "{err}");
    assert_eq!(lab.engine_pid(), None);

    let kernel = Lab::new(LabSpec::kernel(1)).unwrap();
    let err = kernel.start_engine(&engine_options()).unwrap_err();
    assert!(err.to_string().contains("engine mode"), "{err}");
}

#[test]
fn a_panicking_test_leaves_no_namespace_and_no_process() {
    if !root_or_skip("a_panicking_test_leaves_no_namespace_and_no_process") {
        return;
    }
    let seen: Mutex<Option<(String, PathBuf, u32, u32)>> = Mutex::new(None);
    let result = catch_unwind(AssertUnwindSafe(|| {
        let lab = Lab::new(LabSpec::engine(2).with_static_pods()).unwrap();
        let engine = lab.start_engine(&engine_options()).unwrap();
        let server = lab.iperf3_server(2).unwrap();
        *seen.lock().unwrap() = Some((
            lab.prefix().to_string(),
            lab.run_dir().to_path_buf(),
            engine,
            server,
        ));
        assert_eq!(namespaces_with(lab.prefix()).len(), 3);
        panic!("test body fails with the lab up");
    }));
    assert!(result.is_err());
    let (prefix, run_dir, engine, server) = seen.into_inner().unwrap().unwrap();
    assert_eq!(namespaces_with(&prefix), Vec::<String>::new());
    assert!(!run_dir.exists(), "{} left", run_dir.display());
    for pid in [engine, server] {
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "pid {pid} left"
        );
    }
}

#[test]
fn teardown_is_idempotent_and_final() {
    if !root_or_skip("teardown_is_idempotent_and_final") {
        return;
    }
    let lab = Lab::new(LabSpec::kernel(1)).unwrap();
    let prefix = lab.prefix().to_string();
    lab.teardown().unwrap();
    lab.teardown().unwrap();
    assert!(namespaces_with(&prefix).is_empty());
    assert!(lab.exec(1, &["true"]).is_err());
    drop(lab);
    assert!(namespaces_with(&prefix).is_empty());
}

#[test]
fn cleanup_removes_a_leaked_lab_and_spares_live_ones() {
    if !root_or_skip("cleanup_removes_a_leaked_lab_and_spares_live_ones") {
        return;
    }
    let live = Lab::new(LabSpec::kernel(1)).unwrap();
    // Another process builds a lab, starts a process in it, and exits without
    // tearing down: what a crashed or killed test leaves.
    let out = Command::new(env!("CARGO_BIN_EXE_sluice-lab"))
        .args(["leak", "--pods", "2"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let leaked = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let leaked_ns = namespaces_with(&leaked);
    assert_eq!(leaked_ns.len(), 3, "{leaked}: {leaked_ns:?}");
    let pids = Command::new("ip")
        .args(["netns", "pids", &format!("{leaked}-p1")])
        .output()
        .unwrap();
    let sleeper: u32 = String::from_utf8(pids.stdout)
        .unwrap()
        .split_whitespace()
        .next()
        .expect("the leaked lab runs a process")
        .parse()
        .unwrap();
    assert!(lab_namespaces()
        .unwrap()
        .contains(&format!("{leaked}-node")));

    let report = cleanup(CleanupScope::Stale).unwrap();
    for ns in &leaked_ns {
        assert!(report.namespaces.contains(ns), "{ns} not in {report:?}");
    }
    assert!(report.run_dirs.contains(&leaked), "{report:?}");
    assert!(namespaces_with(&leaked).is_empty());
    assert!(!Path::new(&format!("/run/sluice-lab/{leaked}")).exists());
    // The sleeper was killed; it was orphaned, so init reaps it shortly.
    let gone = (0..100).any(|_| {
        let stat = std::fs::read_to_string(format!("/proc/{sleeper}/stat")).unwrap_or_default();
        let done = stat.is_empty()
            || stat
                .rsplit_once(')')
                .is_some_and(|(_, s)| s.trim_start().starts_with('Z'));
        if !done {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        done
    });
    assert!(gone, "process {sleeper} of the leaked lab still runs");
    // This process's own lab is not stale.
    assert_eq!(namespaces_with(live.prefix()).len(), 2);
    assert!(live.exec(1, &["true"]).unwrap().success());
}
