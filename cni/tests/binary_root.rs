//! The real binary run inside a scratch "node" netns (`ip netns exec`), with
//! the pod's scratch netns as CNI_NETNS and no agent listening: what ADD and DEL
//! do on their own. ADD/DEL against the real agent wait for the agent to land.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use common::{pair, root_or_skip, Ns};
use serde_json::{json, Value};
use sluice_api::agent::{host_ifname, Attachment};

const CONTAINER: &str = "c0ffee-root";

fn conf() -> String {
    json!({
        "cniVersion": "1.0.0",
        "name": "sluice",
        "type": "sluice-cni",
        "agentSocket": "/nonexistent/sluice-cni-test/agent.sock",
    })
    .to_string()
}

/// Runs the plugin in `node`'s netns; returns (exit code, stdout JSON).
fn plugin_in(node: &Ns, command: &str, netns: &str) -> (Option<i32>, Value) {
    let mut child = Command::new("ip")
        .args([
            "netns",
            "exec",
            &node.name,
            env!("CARGO_BIN_EXE_sluice-cni"),
        ])
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", CONTAINER)
        .env("CNI_NETNS", netns)
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", "/opt/cni/bin")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let _ = child.stdin.take().unwrap().write_all(conf().as_bytes());
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let json = if stdout.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"))
    };
    (out.status.code(), json)
}

fn host() -> String {
    host_ifname(&Attachment {
        container_id: CONTAINER.into(),
        ifname: "eth0".into(),
    })
}

#[test]
fn del_deletes_the_veth_without_netns_and_answers_11_without_agent() {
    if !root_or_skip("del_deletes_the_veth_without_netns_and_answers_11_without_agent") {
        return;
    }
    let (node, pod) = pair();
    let host = host();
    node.ip(&[
        "link", "add", &host, "type", "veth", "peer", "name", "eth0", "netns", &pod.name,
    ]);

    // containerd's DEL: empty CNI_NETNS.
    let (code, reply) = plugin_in(&node, "DEL", "");
    assert_ne!(code, Some(0));
    assert_eq!(reply["code"], 11, "{reply}");
    assert!(
        reply["msg"].as_str().unwrap().contains("is deleted"),
        "{reply}"
    );
    assert!(node.link(&host).is_none(), "the host veth is gone");
    assert!(pod.link("eth0").is_none(), "and its peer");

    // Again: nothing left to delete, still waiting for the agent.
    let (code, reply) = plugin_in(&node, "DEL", "");
    assert_ne!(code, Some(0));
    assert_eq!(reply["code"], 11, "{reply}");
}

#[test]
fn add_refuses_an_existing_interface_before_asking_the_agent() {
    if !root_or_skip("add_refuses_an_existing_interface_before_asking_the_agent") {
        return;
    }
    let (node, pod) = pair();
    pod.ip(&[
        "link", "add", "eth0", "type", "veth", "peer", "name", "theirs",
    ]);
    let (code, reply) = plugin_in(&node, "ADD", &pod.path());
    assert_ne!(code, Some(0));
    // 102, not 11: the (absent) agent was never asked.
    assert_eq!(reply["code"], 102, "{reply}");
    assert!(reply["msg"].as_str().unwrap().contains("eth0"), "{reply}");
    assert!(pod.link("theirs").is_some());
    assert_eq!(node.link_names(), vec!["lo".to_string()]);
}

#[test]
fn add_without_agent_is_11_and_creates_nothing() {
    if !root_or_skip("add_without_agent_is_11_and_creates_nothing") {
        return;
    }
    let (node, pod) = pair();
    let (code, reply) = plugin_in(&node, "ADD", &pod.path());
    assert_ne!(code, Some(0));
    assert_eq!(reply["code"], 11, "{reply}");
    assert_eq!(reply["cniVersion"], "1.0.0");
    assert_eq!(node.link_names(), vec!["lo".to_string()]);
    assert_eq!(pod.link_names(), vec!["lo".to_string()]);
}
