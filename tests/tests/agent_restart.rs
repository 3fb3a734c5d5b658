//! The agent is a control process: it can crash, restart and be edited under
//! running pods without the dataplane noticing. Real `sluice-agent`,
//! `sluice-engine` and `sluice-cni` in a lab node namespace (pods created
//! through CNI), real ping and iperf3 between pod namespaces, the `sluice` CLI.
//!
//! - A SIGKILLed agent restarts with the same endpoints and identity numbers
//!   (its state directory) and resyncs the engine on a higher generation
//!   without re-opening a socket or re-attaching a program, while a 100 Hz
//!   ping and a TCP stream lose nothing.
//! - A restarted engine is found again by the staying agent, which sends it a
//!   snapshot; `sluice status` tells both situations apart.
//! - A manifest edit reaches the engine (identity, ipcache); a bad manifest is
//!   reported naming file, object and field while the last good version stays.

use std::io::Write;
use std::net::IpAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use sluice_api::agent::{AgentRequest, AgentResponse, AgentStatus, EndpointInfo, IdentityInfo};
use sluice_lab::binaries::{find_binary, CLI};
use sluice_lab::command::{is_root, run};
use sluice_lab::{parse_ping, CmdOutput, EngineOptions, Lab, LabSpec};
use sluice_tests::engine_view::{open_ports, xdp_prog_id};

fn root_or_skip(test: &str) -> bool {
    if is_root() {
        return true;
    }
    let _ = writeln!(std::io::stderr(), "skipping {test}: lab tests need root");
    false
}

/// Pods of other nodes in the agent-restart test's manifests.
const REMOTE_PODS: usize = 1000;

/// Two pods wired by sluice-cni, the agent and the engine in sync.
fn cni_lab() -> Lab {
    Lab::new(LabSpec::engine(2)).expect(
        "lab up (build the workspace first: cargo build --release --workspace; \
         the engine, agent, CNI plugin and CLI are found beside the test binary)",
    )
}

fn v4(lab: &Lab, pod: usize) -> IpAddr {
    lab.pod(pod).unwrap().ipv4.into()
}

fn v6(lab: &Lab, pod: usize) -> IpAddr {
    lab.pod(pod).unwrap().ipv6.into()
}

fn reaches(lab: &Lab, from: usize, to: usize) -> bool {
    [v4(lab, to), v6(lab, to)]
        .into_iter()
        .all(|addr| lab.ping(from, addr, 2).unwrap().all_received())
}

fn endpoints(lab: &Lab) -> Vec<EndpointInfo> {
    match lab.ask_agent(AgentRequest::ListEndpoints).unwrap() {
        AgentResponse::Endpoints { endpoints } => endpoints,
        other => panic!("unexpected answer to ListEndpoints: {other:?}"),
    }
}

fn identities(lab: &Lab) -> Vec<IdentityInfo> {
    match lab.ask_agent(AgentRequest::ListIdentities).unwrap() {
        AgentResponse::Identities { identities } => identities,
        other => panic!("unexpected answer to ListIdentities: {other:?}"),
    }
}

fn endpoint<'a>(list: &'a [EndpointInfo], name: &str) -> &'a EndpointInfo {
    list.iter()
        .find(|e| e.name == name)
        .unwrap_or_else(|| panic!("no endpoint {name} in {list:?}"))
}

/// The label-derived identity whose labels include `label`.
fn identity_with<'a>(list: &'a [IdentityInfo], label: &str) -> &'a IdentityInfo {
    list.iter()
        .find(|i| !i.reserved && i.labels.iter().any(|l| l == label))
        .unwrap_or_else(|| panic!("no identity with {label} in {list:?}"))
}

fn pod_programs(lab: &Lab) -> Vec<u64> {
    lab.pods()
        .iter()
        .map(|p| xdp_prog_id(lab, &p.node_ifname))
        .collect()
}

/// Polls `probe` every 20 ms until it returns `Some`, at most `timeout`.
fn wait_for<T>(timeout: Duration, what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = probe() {
            return value;
        }
        assert!(Instant::now() < deadline, "{what}: not within {timeout:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `sluice status` against the lab's agent and engine.
fn sluice_status(lab: &Lab) -> CmdOutput {
    let cli = find_binary(CLI).expect("the sluice CLI (cargo build --release --workspace)");
    run(
        std::process::Command::new(&cli)
            .arg("--agent-socket")
            .arg(lab.agent_socket())
            .arg("--engine-socket")
            .arg(lab.stats_socket())
            .arg("status"),
        Duration::from_secs(30),
    )
    .unwrap()
}

/// One Pod manifest document as the lab writes them, with `labels` (flow map body).
fn pod_doc(name: &str, labels: &str, status: &str) -> String {
    format!(
        "---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: default\n  \
         labels: {{{labels}}}\nspec:\n  containers: [{{name: main, image: busybox}}]\n{status}"
    )
}

/// The lab's two pods, pod2 with `pod2_labels`.
fn pods_yaml(pod2_labels: &str) -> String {
    pod_doc("pod1", "app: pod1, lab: sluice", "") + &pod_doc("pod2", pod2_labels, "")
}

/// Replaces `dir/name` atomically (a hidden temp file renamed over it), as an
/// editor or `kubectl`-style tool would.
fn write_manifest(dir: &Path, name: &str, text: &str) {
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, dir.join(name)).unwrap();
}

#[test]
fn a_killed_agent_restarts_with_its_identities_and_without_touching_forwarding() {
    if !root_or_skip("a_killed_agent_restarts_with_its_identities_and_without_touching_forwarding")
    {
        return;
    }
    let lab = cni_lab();
    // Pods of other nodes, known only from their manifests (an identity and an
    // ipcache entry each). Their label sets sort before pod1's and pod2's but
    // get their numbers after theirs, so an agent that renumbered from scratch
    // would show it. They are many so that a restarted agent takes a moment
    // to read its manifests: what it does before that is seen.
    let remote: String = (0..REMOTE_PODS)
        .map(|i| {
            pod_doc(
                &format!("aaa-remote{i}"),
                &format!("app: aaa{i}, lab: sluice"),
                &format!(
                    "status:\n  podIPs: [{{ip: 10.201.{}.{}}}]\n",
                    i / 200,
                    i % 200 + 1
                ),
            )
        })
        .collect();
    write_manifest(&lab.manifests_dir(), "remote.yaml", &remote);
    let before = wait_for(
        Duration::from_secs(30),
        "the remote pods' identities",
        || {
            let s = lab.agent_status().ok()?;
            (s.in_sync() && s.identities == 2 + REMOTE_PODS && s.ipcache_entries == 4 + REMOTE_PODS)
                .then_some(s)
        },
    );
    let endpoints_before = endpoints(&lab);
    let identities_before = identities(&lab);
    let pod1_id = identity_with(&identities_before, "k8s:app=pod1").id;
    let remote_id = identity_with(&identities_before, "k8s:app=aaa0").id;
    assert!(
        remote_id > pod1_id,
        "the premise: the remote pod was numbered after pod1 ({identities_before:?})"
    );
    let stats_before = lab.engine_stats().unwrap();
    let ports_before = open_ports(&stats_before);
    assert_eq!(ports_before.len(), 2, "{stats_before}");
    let programs_before = pod_programs(&lab);

    lab.iperf3_server(2).unwrap();
    let to = v4(&lab, 2).to_string();
    let (ping, iperf, resynced_while_pinging) = std::thread::scope(|scope| {
        // 600 echo requests 10 ms apart: about 6 s of traffic.
        let pinging = scope.spawn(|| {
            lab.exec_timeout(
                1,
                &[
                    "ping", "-4", "-n", "-q", "-c", "600", "-i", "0.01", "-W", "1", &to,
                ],
                Duration::from_secs(30),
            )
            .unwrap()
        });
        let streaming = scope.spawn(|| lab.iperf3_client(1, v4(&lab, 2), 8));
        std::thread::sleep(Duration::from_millis(1000));
        assert!(lab.kill_agent().unwrap(), "no agent to kill");
        // The engine sees the agent go and keeps forwarding on its state.
        wait_for(
            Duration::from_secs(5),
            "the engine noticing the agent gone",
            || {
                let stats = lab.engine_stats().ok()?;
                (stats["api"]["connected"] == false).then_some(())
            },
        );
        std::thread::sleep(Duration::from_millis(1000));
        lab.start_agent().unwrap();
        lab.wait_in_sync(Duration::from_secs(20)).unwrap();
        let during = !pinging.is_finished();
        (pinging.join().unwrap(), streaming.join().unwrap(), during)
    });
    assert!(
        resynced_while_pinging,
        "the restart took longer than the ping; the test proves nothing"
    );
    let result = parse_ping(&ping.stdout).unwrap();
    assert_eq!(result.sent, 600, "{ping:?}");
    assert_eq!(
        result.received,
        600,
        "echoes lost while the agent was killed and restarted: {ping:?}\nengine log:\n{}",
        lab.engine_log_tail(20)
    );
    let iperf = iperf.unwrap_or_else(|e| {
        panic!(
            "iperf3 across the agent restart: {e:#}\n{}",
            lab.engine_log_tail(20)
        )
    });
    assert!(
        iperf.seconds > 7.0 && iperf.received_bits_per_second > 1e6,
        "{iperf:?}"
    );

    let after = lab.agent_status().unwrap();
    assert!(after.in_sync(), "{after:?}");
    assert!(
        after.acked_generation > before.acked_generation
            && after.desired_generation > before.desired_generation,
        "generations did not move above the killed agent's: before {before:?}, after {after:?}"
    );
    let stats_after = lab.engine_stats().unwrap();
    // One state sent, the restored one: not first a snapshot of a store still
    // loading (endpoints on reserved:init, the remote pod's address missing).
    assert_eq!(
        (
            after.acked_generation,
            stats_after["generation"].as_u64().unwrap()
        ),
        (
            before.acked_generation + 1,
            stats_before["generation"].as_u64().unwrap() + 1
        ),
        "the restarted agent gave the engine more than one state (agent generation, \
         engine tables generation)\nagent log:\n{}",
        lab.log_tail(sluice_lab::control_plane::AGENT_LOG, 20)
    );
    assert_eq!(stats_after["api"]["connected"], true);
    assert_eq!(
        stats_after["api"]["applied_generation"], after.acked_generation,
        "{}",
        stats_after["api"]
    );
    assert_eq!(
        open_ports(&stats_after),
        ports_before,
        "the restarted agent's snapshot made the engine re-open sockets"
    );
    assert_eq!(
        pod_programs(&lab),
        programs_before,
        "the restarted agent's snapshot made the engine re-attach programs"
    );
    assert_eq!(
        endpoints(&lab),
        endpoints_before,
        "endpoints changed across the restart"
    );
    assert_eq!(
        identities(&lab),
        identities_before,
        "identities changed across the restart (numbers are kept in the state dir)"
    );
    assert_eq!(
        (after.endpoints, after.identities, after.ipcache_entries),
        (before.endpoints, before.identities, before.ipcache_entries)
    );
    assert_eq!(stats_after["ipcache_entries"], after.ipcache_entries);
    assert!(reaches(&lab, 1, 2) && reaches(&lab, 2, 1));
}

#[test]
fn a_restarted_engine_is_resynced_by_the_agent_and_sluice_status_tells() {
    if !root_or_skip("a_restarted_engine_is_resynced_by_the_agent_and_sluice_status_tells") {
        return;
    }
    let lab = cni_lab();
    let before = lab.wait_in_sync(Duration::from_secs(20)).unwrap();
    let out = sluice_status(&lab);
    assert!(out.success(), "sluice status while in sync: {out:?}");
    assert!(out.stdout.contains("in sync"), "{}", out.stdout);

    lab.stop_engine().unwrap().expect("an engine was running");
    // The node kernel does not forward: with the engine gone the pods are cut off.
    assert_eq!(lab.ping(1, v4(&lab, 2), 1).unwrap().received, 0);
    let away: AgentStatus = wait_for(
        Duration::from_secs(10),
        "the agent noticing the engine gone",
        || {
            let s = lab.agent_status().ok()?;
            (!s.engine_connected).then_some(s)
        },
    );
    assert!(!away.in_sync(), "{away:?}");
    let out = sluice_status(&lab);
    assert_eq!(
        out.status.code(),
        Some(1),
        "sluice status with the engine stopped: {out:?}"
    );
    assert!(out.stdout.contains("NOT CONNECTED"), "{}", out.stdout);

    // A new engine starts empty; the agent connects and sends a snapshot.
    lab.start_engine(&EngineOptions::default()).unwrap();
    let after = lab.wait_in_sync(Duration::from_secs(30)).unwrap();
    let stats = lab.engine_stats().unwrap();
    assert_eq!(stats["api"]["connected"], true, "{}", stats["api"]);
    assert!(
        stats["api"]["agent"]
            .as_str()
            .is_some_and(|a| a.starts_with("sluice-agent ")),
        "{}",
        stats["api"]
    );
    assert_eq!(stats["api"]["applied_generation"], after.acked_generation);
    assert!(after.acked_generation >= before.acked_generation);
    assert_eq!(stats["endpoints"], 2, "{stats}");
    assert_eq!(open_ports(&stats).len(), 2, "{stats}");
    assert_eq!(stats["ipcache_entries"], after.ipcache_entries);
    assert!(
        reaches(&lab, 1, 2) && reaches(&lab, 2, 1),
        "pods cut off after the engine restart\n{}",
        lab.engine_log_tail(20)
    );
    let out = sluice_status(&lab);
    assert!(out.success(), "sluice status after the resync: {out:?}");
    assert!(out.stdout.contains("in sync"), "{}", out.stdout);
}

#[test]
fn manifest_edits_reach_the_engine_and_a_bad_one_is_reported_while_pods_forward() {
    if !root_or_skip("manifest_edits_reach_the_engine_and_a_bad_one_is_reported_while_pods_forward")
    {
        return;
    }
    let lab = cni_lab();
    let dir = lab.manifests_dir();
    let before = lab.wait_in_sync(Duration::from_secs(20)).unwrap();
    let old_id = endpoint(&endpoints(&lab), "default/pod2").identity;
    let stats = lab.engine_stats().unwrap();
    assert_eq!(stats["ipcache_entries"], 4, "two pods, two families");
    let tables_before = stats["generation"].as_u64().unwrap();

    // A label added to pod2: a new identity, the old one released.
    write_manifest(
        &dir,
        "pods.yaml",
        &pods_yaml("app: pod2, lab: sluice, tier: db"),
    );
    let (status, pod2) = wait_for(Duration::from_secs(20), "pod2's new labels", || {
        let list = lab.ask_agent(AgentRequest::ListEndpoints).ok()?;
        let AgentResponse::Endpoints { endpoints } = list else {
            return None;
        };
        let pod2 = endpoints.into_iter().find(|e| e.name == "default/pod2")?;
        let status = lab.agent_status().ok()?;
        (pod2.labels.iter().any(|l| l == "k8s:tier=db") && status.in_sync())
            .then_some((status, pod2))
    });
    assert_ne!(
        pod2.identity, old_id,
        "pod2 kept its number with other labels: a new label set needs a new identity"
    );
    assert!(
        status.acked_generation > before.acked_generation,
        "the new identity did not reach the engine: {status:?}"
    );
    let ids = identities(&lab);
    let new = identity_with(&ids, "k8s:tier=db");
    assert_eq!((new.id, new.endpoints, new.ips), (pod2.identity, 1, 2));
    assert!(
        ids.iter().all(|i| i.id != old_id),
        "pod2's old identity was not released: {ids:?}"
    );
    let stats = lab.engine_stats().unwrap();
    assert_eq!(
        stats["api"]["applied_generation"], status.acked_generation,
        "{}",
        stats["api"]
    );
    assert!(stats["generation"].as_u64().unwrap() > tables_before);
    assert_eq!(stats["ipcache_entries"], 4);

    // A pod of another node, known only from its manifest: its addresses reach
    // the engine's ipcache.
    write_manifest(
        &dir,
        "remote.yaml",
        &pod_doc(
            "remote1",
            "app: remote",
            "status:\n  podIPs: [{ip: 10.201.0.7}, {ip: 'fd00:201::7'}]\n",
        ),
    );
    wait_for(Duration::from_secs(20), "the engine's ipcache", || {
        let s = lab.agent_status().ok()?;
        let stats = lab.engine_stats().ok()?;
        (s.in_sync() && s.ipcache_entries == 6 && stats["ipcache_entries"] == 6).then_some(())
    });
    assert!(reaches(&lab, 1, 2) && reaches(&lab, 2, 1));

    // A bad edit of pod2 (labels must be strings) while a fast ping runs: the
    // error names file, object and field, the last good pod2 stays in effect.
    let errors_before = lab.agent_status().unwrap().source_errors;
    assert!(errors_before.is_empty(), "{errors_before:?}");
    let to = v4(&lab, 2).to_string();
    let (ping, reported) = std::thread::scope(|scope| {
        let pinging = scope.spawn(|| {
            lab.exec_timeout(
                1,
                &[
                    "ping", "-4", "-n", "-q", "-c", "300", "-i", "0.01", "-W", "1", &to,
                ],
                Duration::from_secs(20),
            )
            .unwrap()
        });
        std::thread::sleep(Duration::from_millis(500));
        write_manifest(
            &dir,
            "pods.yaml",
            &pods_yaml("app: [pod2], lab: sluice, tier: db"),
        );
        let reported = wait_for(Duration::from_secs(20), "the manifest error", || {
            let s = lab.agent_status().ok()?;
            (!s.source_errors.is_empty()).then_some(s)
        });
        (pinging.join().unwrap(), reported)
    });
    let result = parse_ping(&ping.stdout).unwrap();
    assert_eq!(
        (result.sent, result.received),
        (300, 300),
        "echoes lost around the bad edit: {ping:?}"
    );
    let error = reported.source_errors.join("\n");
    for part in ["pods.yaml", "Pod default/pod2", "metadata.labels.app"] {
        assert!(error.contains(part), "{part:?} not in {error:?}");
    }
    let out = sluice_status(&lab);
    for part in ["pods.yaml", "Pod default/pod2", "metadata.labels.app"] {
        assert!(
            out.stdout.contains(part),
            "{part:?} not in sluice status: {}",
            out.stdout
        );
    }
    assert!(out.stdout.contains("in sync"), "{}", out.stdout);
    let kept = endpoint(&endpoints(&lab), "default/pod2").clone();
    assert_eq!(
        kept.identity, pod2.identity,
        "the bad edit changed pod2's identity instead of keeping the last good version"
    );
    let stats = lab.engine_stats().unwrap();
    assert_eq!(stats["ipcache_entries"], 6);
    assert_eq!(stats["endpoints"], 2);
    assert!(reaches(&lab, 1, 2) && reaches(&lab, 2, 1));

    // Fixed again: the error goes away.
    write_manifest(
        &dir,
        "pods.yaml",
        &pods_yaml("app: pod2, lab: sluice, tier: db"),
    );
    wait_for(Duration::from_secs(20), "the error to clear", || {
        let s = lab.agent_status().ok()?;
        (s.source_errors.is_empty() && s.in_sync()).then_some(())
    });
}
