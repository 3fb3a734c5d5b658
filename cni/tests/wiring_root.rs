//! Root test of the netlink wiring, in two scratch network namespaces that
//! stand for the node and the pod (`slcni<pid>-<n>-node`, `-pod`), deleted by a
//! guard even when a test fails. Nothing touches the root netns: [`wire`] runs
//! on a thread that entered the scratch node netns, and every check reads the
//! namespaces with `ip -n NS -j ...`.

mod common;

use std::process::{Child, Command};

use common::{pair, root_or_skip, Ns};
use serde_json::Value;
use sluice_api::agent::IpAssignment;
use sluice_cni::wiring::{self, WireError, WireSpec};

const HOST: &str = "lxc0123456789a";

fn spec(pod: &Ns) -> WireSpec {
    WireSpec {
        host_ifname: HOST.into(),
        container_ifname: "eth0".into(),
        netns_path: pod.path(),
        mtu: 1400,
        queues: 2,
        ipv4: Some(IpAssignment {
            address: "10.244.0.5".parse().unwrap(),
            prefix_len: 32,
            gateway: "10.244.0.1".parse().unwrap(),
        }),
        ipv6: Some(IpAssignment {
            address: "fd00:10:244::5".parse().unwrap(),
            prefix_len: 128,
            gateway: "fe80::1".parse().unwrap(),
        }),
    }
}

fn has_flag(link: &Value, flag: &str) -> bool {
    link["flags"].as_array().unwrap().iter().any(|f| f == flag)
}

fn addresses(ns: &Ns, dev: &str) -> Vec<Value> {
    ns.ip_json(&["addr", "show", "dev", dev])[0]["addr_info"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn tx_checksum(ns: &Ns, dev: &str) -> String {
    let features = ns.exec(&["ethtool", "-k", dev]);
    features
        .lines()
        .find_map(|l| l.trim().strip_prefix("tx-checksum-ip-generic:"))
        .unwrap_or_else(|| panic!("no tx-checksum-ip-generic in {features}"))
        .trim()
        .to_string()
}

#[test]
fn wire_configures_both_ends_and_unwire_is_idempotent() {
    if !root_or_skip("wire_configures_both_ends_and_unwire_is_idempotent") {
        return;
    }
    let (node, pod) = pair();
    let spec = spec(&pod);
    // Before: the veth offloads tx checksums (what the wiring must turn off).
    let wired = node.enter(|| wiring::wire(&spec)).expect("wire");

    // Node side: the host end, up, MTU, no address at all (addrgenmode none,
    // so not even a link-local one), no DAD, no forwarding.
    let host = node.link(HOST).expect("host veth in the node netns");
    assert_eq!(host["mtu"], 1400);
    assert!(has_flag(&host, "UP"), "{host}");
    assert_eq!(host["ifindex"], wired.host_ifindex);
    assert_eq!(host["address"], wired.host_mac.to_string());
    assert_eq!(host["linkinfo"]["info_kind"], "veth");
    // One queue per engine worker on both ends.
    assert_eq!(host["num_tx_queues"], 2, "{host}");
    assert_eq!(host["num_rx_queues"], 2, "{host}");
    assert_eq!(host["inet6_addr_gen_mode"], "none", "{host}");
    assert!(
        addresses(&node, HOST).is_empty(),
        "{:?}",
        addresses(&node, HOST)
    );
    assert_eq!(
        node.sysctl(&format!("net.ipv6.conf.{HOST}.accept_dad")),
        "0"
    );
    assert_eq!(
        node.sysctl(&format!("net.ipv4.conf.{HOST}.forwarding")),
        "0"
    );
    assert_eq!(
        node.sysctl(&format!("net.ipv6.conf.{HOST}.forwarding")),
        "0"
    );
    assert_eq!(
        node.link_names(),
        vec!["lo".to_string(), HOST.to_string()],
        "only the host end on the node"
    );

    // Pod side.
    let eth0 = pod.link("eth0").expect("eth0 in the pod netns");
    assert_eq!(eth0["mtu"], 1400);
    assert!(has_flag(&eth0, "UP"), "{eth0}");
    // Carrier (both ends up) is reported asynchronously by the kernel's linkwatch.
    let mut operstate = Value::Null;
    for _ in 0..150 {
        operstate = pod.link("eth0").unwrap()["operstate"].clone();
        if operstate == "UP" {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(operstate, "UP", "carrier: both ends are up");
    assert_eq!(eth0["address"], wired.container_mac.to_string());
    assert_eq!(eth0["ifindex"], wired.container_ifindex);
    assert!(has_flag(&pod.link("lo").unwrap(), "UP"), "lo up");
    let addrs = addresses(&pod, "eth0");
    let v4 = addrs
        .iter()
        .find(|a| a["family"] == "inet")
        .expect("IPv4 address");
    assert_eq!(
        (v4["local"].as_str(), v4["prefixlen"].as_u64()),
        (Some("10.244.0.5"), Some(32))
    );
    let v6 = addrs
        .iter()
        .find(|a| a["family"] == "inet6" && a["scope"] == "global")
        .expect("IPv6 address");
    assert_eq!(
        (v6["local"].as_str(), v6["prefixlen"].as_u64()),
        (Some("fd00:10:244::5"), Some(128))
    );
    assert_eq!(v6["nodad"], true, "{v6}");
    assert!(v6.get("tentative").is_none(), "no DAD: {v6}");
    assert_eq!(pod.sysctl("net.ipv6.conf.eth0.accept_dad"), "0");

    let routes4 = pod.ip_json(&["-4", "route", "show"]);
    let routes4 = routes4.as_array().unwrap();
    assert!(
        routes4
            .iter()
            .any(|r| r["dst"] == "default" && r["gateway"] == "10.244.0.1" && r["dev"] == "eth0"),
        "{routes4:?}"
    );
    assert!(
        routes4
            .iter()
            .any(|r| r["dst"] == "10.244.0.1" && r["scope"] == "link" && r["dev"] == "eth0"),
        "{routes4:?}"
    );
    let routes6 = pod.ip_json(&["-6", "route", "show"]);
    assert!(
        routes6
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["dst"] == "default" && r["gateway"] == "fe80::1" && r["dev"] == "eth0"),
        "{routes6}"
    );
    assert_eq!(tx_checksum(&pod, "eth0"), "off");

    // The wiring as CHECK sees it: nothing to report; then a change is reported.
    assert_eq!(
        node.enter(|| wiring::check(&spec)).unwrap(),
        Vec::<String>::new()
    );
    pod.ip(&["route", "del", "default"]);
    let problems = node.enter(|| wiring::check(&spec)).unwrap();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].contains("default route via 10.244.0.1"),
        "{problems:?}"
    );

    pod.ip(&[
        "route",
        "add",
        "default",
        "via",
        "10.244.0.1",
        "dev",
        "eth0",
    ]);
    pod.exec(&["ethtool", "-K", "eth0", "tx", "on"]);
    let problems = node.enter(|| wiring::check(&spec)).unwrap();
    assert!(
        problems.len() == 1 && problems[0].contains("tx-checksum-ip-generic"),
        "{problems:?}"
    );

    // Unwire deletes both ends; a second time finds nothing and succeeds.
    assert!(node.enter(|| wiring::unwire(HOST)).unwrap());
    assert!(node.link(HOST).is_none());
    assert!(
        pod.link("eth0").is_none(),
        "the peer goes with the host end"
    );
    assert!(!node.enter(|| wiring::unwire(HOST)).unwrap());
    let problems = node.enter(|| wiring::check(&spec)).unwrap();
    assert!(
        problems.iter().any(|p| p.contains("missing")),
        "{problems:?}"
    );
}

#[test]
fn an_existing_container_interface_fails_and_leaves_nothing() {
    if !root_or_skip("an_existing_container_interface_fails_and_leaves_nothing") {
        return;
    }
    let (node, pod) = pair();
    // (veth: this kernel may have no dummy driver)
    pod.ip(&[
        "link", "add", "eth0", "type", "veth", "peer", "name", "theirs",
    ]);
    assert!(wiring::container_interface_exists(&pod.path(), "eth0").unwrap());
    assert!(!wiring::container_interface_exists(&pod.path(), "eth1").unwrap());

    let err = node.enter(|| wiring::wire(&spec(&pod))).unwrap_err();
    assert!(
        matches!(err, WireError::Exists { ref name, .. } if name == "eth0"),
        "{err}"
    );
    assert_eq!(node.link_names(), vec!["lo".to_string()]);
    let eth0 = pod.link("eth0").unwrap();
    assert_eq!(eth0["linkinfo"]["info_kind"], "veth");
    assert!(
        pod.link("theirs").is_some(),
        "someone else's eth0 is untouched"
    );
}

#[test]
fn an_existing_host_name_fails_without_touching_it() {
    if !root_or_skip("an_existing_host_name_fails_without_touching_it") {
        return;
    }
    let (node, pod) = pair();
    node.ip(&[
        "link", "add", HOST, "type", "veth", "peer", "name", "theirs",
    ]);
    let err = node.enter(|| wiring::wire(&spec(&pod))).unwrap_err();
    assert!(
        matches!(err, WireError::Exists { ref name, .. } if name == HOST),
        "{err}"
    );
    assert!(
        node.link(HOST).is_some() && node.link("theirs").is_some(),
        "untouched"
    );
    assert!(pod.link("eth0").is_none());
}

#[test]
fn a_failure_midway_rolls_everything_back() {
    if !root_or_skip("a_failure_midway_rolls_everything_back") {
        return;
    }
    let (node, pod) = pair();
    // Another interface already owns the pod's IPv4 default route: our default
    // route is refused after the veth, its addresses and the on-link route exist.
    pod.ip(&[
        "link", "add", "other0", "type", "veth", "peer", "name", "other1",
    ]);
    pod.ip(&["link", "set", "other0", "up"]);
    pod.ip(&["link", "set", "other1", "up"]);
    pod.ip(&["addr", "add", "192.0.2.2/24", "dev", "other0"]);
    pod.ip(&[
        "route",
        "add",
        "default",
        "via",
        "192.0.2.1",
        "dev",
        "other0",
    ]);

    let err = node.enter(|| wiring::wire(&spec(&pod))).unwrap_err();
    let WireError::Failed { error, rollback } = &err else {
        panic!("expected a failure after creation, got {err}");
    };
    assert_eq!(
        error.errno(),
        Some(17),
        "EEXIST on the default route: {error}"
    );
    assert!(rollback.starts_with("rolled back"), "{rollback}");

    assert_eq!(
        node.link_names(),
        vec!["lo".to_string()],
        "no host veth left"
    );
    let mut pod_links = pod.link_names();
    pod_links.sort();
    assert_eq!(pod_links, vec!["lo", "other0", "other1"], "no eth0 left");
    let routes = pod.ip_json(&["-4", "route", "show"]);
    assert!(
        routes
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["dst"] == "default" && r["dev"] == "other0"),
        "the other default route is untouched: {routes}"
    );
    assert!(
        !pod.ip(&["-4", "addr", "show"]).contains("10.244.0.5"),
        "no address of ours left"
    );
}

/// CNI_NETNS as containerd gives it (/proc/<pid>/ns/net), IPv6 only with a
/// global gateway (reached through an on-link /128 route).
#[test]
fn proc_pid_netns_and_ipv6_only_with_a_global_gateway() {
    if !root_or_skip("proc_pid_netns_and_ipv6_only_with_a_global_gateway") {
        return;
    }
    let (node, pod) = pair();
    struct Killed(Child);
    impl Drop for Killed {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let sleeper = Killed(
        Command::new("ip")
            .args(["netns", "exec", &pod.name, "sleep", "60"])
            .spawn()
            .expect("spawn sleep in the pod netns"),
    );
    // `ip netns exec` execs sleep in place, so the child's pid is the sleeper's.
    let path = format!("/proc/{}/ns/net", sleeper.0.id());
    for _ in 0..100 {
        if std::fs::read_link(&path).ok() == std::fs::read_link(pod.path()).ok()
            && std::fs::read_link(&path).is_ok()
        {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let mut spec = spec(&pod);
    spec.netns_path = path;
    spec.ipv4 = None;
    spec.ipv6.as_mut().unwrap().gateway = "fd00:10:244::1".parse().unwrap();
    node.enter(|| wiring::wire(&spec)).expect("wire");

    let routes6 = pod.ip_json(&["-6", "route", "show"]);
    let routes6 = routes6.as_array().unwrap();
    assert!(
        routes6
            .iter()
            .any(|r| r["dst"] == "fd00:10:244::1" && r["dev"] == "eth0"),
        "{routes6:?}"
    );
    assert!(
        routes6
            .iter()
            .any(|r| r["dst"] == "default" && r["gateway"] == "fd00:10:244::1"),
        "{routes6:?}"
    );
    assert!(pod
        .ip(&["-4", "addr", "show", "dev", "eth0"])
        .trim()
        .is_empty());
    assert_eq!(
        node.enter(|| wiring::check(&spec)).unwrap(),
        Vec::<String>::new()
    );
    drop(sleeper);
}
