//! sluice-cni driven by a real container runtime. A lab node namespace runs the
//! real sluice-engine and sluice-agent (`LabSpec::engine(1)`: one lab pod,
//! 10.200.0.2 / fd00:200::1); a private containerd (the harness of
//! `sluice_tests::containerd`) starts busybox containers with `ctr run --cni`,
//! whose only CNI plugin is sluice-cni, run by ctr in that node namespace.
//!
//! - Two containers get addresses from the lab's pod CIDRs (libcni's cached
//!   result and `ip addr` inside agree), ping each other over IPv4 and IPv6 and
//!   move 512 KiB over TCP both ways of addressing, all through the engine (its
//!   counters grow by at least that much; with the engine stopped they are
//!   cut off, and restarted it is fed by the agent and they talk again).
//! - The agent lists both endpoints as ready, under the runtime's container ids.
//! - Killing them makes ctr run DEL (with an empty CNI_NETNS, as containerd
//!   does): the host veths are gone, libcni's cache is empty, the agent holds
//!   nothing, and the next container gets a fresh address, not a released one.
//! - 0.4.0 and 0.3.1 conflists are answered in their version (`ips[].version`).
//! - Nothing is left in the root namespace, /etc/cni, /run/containerd, the
//!   mounts or the cgroup tree.

use sluice_tests::root_state::root_state;
use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

use serde_json::json;
use sluice_api::agent::{
    host_ifname, AgentRequest, AgentResponse, Attachment, EndpointInfo, ErrorKind,
};
use sluice_lab::binaries::{find_binary, CNI};
use sluice_lab::command::{is_root, netns_path};
use sluice_lab::{EngineOptions, Lab, LabSpec, POD_CIDRS};
use sluice_tests::cni::link_names;
use sluice_tests::containerd::{
    check_prerequisites, mounts_under, shims_for, CniNetwork, Containerd, RunningContainer,
    ScratchDir,
};

/// The test compares machine-wide state before and after: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

const NETWORK: &str = "sluice";
/// Size of the file served over TCP.
const BIG_FILE_BYTES: u64 = 512 * 1024;

fn root_or_skip(test: &str) -> bool {
    if is_root() {
        return true;
    }
    eprintln!("skipping {test}: containerd tests need root");
    false
}

/// Fails (never skips) when the runtime is not installed: CI installs it.
fn prerequisites() {
    if let Err(err) = check_prerequisites() {
        panic!("{err:#}");
    }
}

/// The conflist: sluice-cni alone, talking to the lab's agent, logging to
/// `log_file` too (the test reads which commands ran).
fn conflist(version: &str, agent_socket: &Path, log_file: &Path) -> String {
    json!({
        "cniVersion": version,
        "name": NETWORK,
        "plugins": [{
            "type": "sluice-cni",
            "agentSocket": agent_socket,
            "logFile": log_file,
        }],
    })
    .to_string()
}

fn in_pod_cidr_v4(ip: Ipv4Addr) -> bool {
    assert_eq!(POD_CIDRS[0], "10.200.0.0/24");
    ip.octets()[..3] == [10, 200, 0] && ip.octets()[3] > 1 && ip.octets()[3] < 255
}

fn in_pod_cidr_v6(ip: Ipv6Addr) -> bool {
    assert_eq!(POD_CIDRS[1], "fd00:200::/64");
    ip.segments()[..4] == [0xfd00, 0x200, 0, 0] && !ip.segments()[4..].iter().all(|s| *s == 0)
}

/// The container's addresses from its cached ADD result, which must list
/// exactly one /32 from 10.200.0.0/24 and one /128 from fd00:200::/64 (with
/// the gateways), and the expected `cniVersion`.
fn result_addresses(c: &RunningContainer, version: &str) -> (Ipv4Addr, Ipv6Addr) {
    let result = c.cni_result().unwrap();
    assert_eq!(result["cniVersion"], version, "{result}");
    let ips = result["ips"]
        .as_array()
        .unwrap_or_else(|| panic!("{result}"));
    assert_eq!(ips.len(), 2, "{result}");
    let zero_x = version.starts_with("0.");
    let (mut v4, mut v6) = (None, None);
    for ip in ips {
        let address = ip["address"].as_str().unwrap();
        let (addr, len) = address.split_once('/').unwrap();
        // 0.3.x/0.4.0 results say which family (1.x dropped the field).
        match addr.parse::<IpAddr>().unwrap() {
            IpAddr::V4(a) => {
                assert_eq!(len, "32", "{result}");
                assert!(in_pod_cidr_v4(a), "{a} not in {}: {result}", POD_CIDRS[0]);
                assert_eq!(ip["gateway"], "10.200.0.1", "{result}");
                assert_eq!(ip.get("version").cloned(), zero_x.then(|| json!("4")));
                v4 = Some(a);
            }
            IpAddr::V6(a) => {
                assert_eq!(len, "128", "{result}");
                assert!(in_pod_cidr_v6(a), "{a} not in {}: {result}", POD_CIDRS[1]);
                assert_eq!(ip["gateway"], "fe80::1", "{result}");
                assert_eq!(ip.get("version").cloned(), zero_x.then(|| json!("6")));
                v6 = Some(a);
            }
        }
        // Index of the container interface (the second) in `interfaces`.
        assert_eq!(ip["interface"], 1, "{result}");
    }
    // The host veth (no sandbox) and eth0 in the container's namespace; an
    // interface MTU only from 1.1.0 on, which containerd 1.6 does not speak.
    let interfaces = result["interfaces"].as_array().unwrap();
    assert_eq!(interfaces.len(), 2, "{result}");
    let attachment = Attachment {
        container_id: c.cni_container_id(),
        ifname: "eth0".into(),
    };
    assert_eq!(interfaces[0]["name"], host_ifname(&attachment), "{result}");
    assert!(interfaces[0].get("sandbox").is_none(), "{result}");
    assert_eq!(interfaces[1]["name"], "eth0", "{result}");
    assert_eq!(
        interfaces[1]["sandbox"],
        c.netns_path().display().to_string(),
        "{result}"
    );
    assert!(
        interfaces.iter().all(|i| i.get("mtu").is_none()),
        "{result}"
    );
    (v4.unwrap(), v6.unwrap())
}

/// `ip addr show eth0` inside the container lists both addresses.
fn assert_addresses_inside(c: &RunningContainer, v4: Ipv4Addr, v6: Ipv6Addr) {
    let inside = c.exec(&["ip", "addr", "show", "eth0"]).unwrap();
    assert!(inside.success(), "{inside:?}");
    assert!(
        inside.stdout.contains(&format!("inet {v4}/32")),
        "{}: {inside:?}",
        c.id()
    );
    assert!(
        inside.stdout.contains(&format!("inet6 {v6}/128")),
        "{}: {inside:?}",
        c.id()
    );
}

fn endpoints(lab: &Lab) -> Vec<EndpointInfo> {
    match lab.ask_agent(AgentRequest::ListEndpoints).unwrap() {
        AgentResponse::Endpoints { endpoints } => endpoints,
        other => panic!("ListEndpoints answered {other:?}"),
    }
}

/// The agent's endpoints other than the lab's own pods, by container id.
fn container_endpoints(lab: &Lab) -> Vec<EndpointInfo> {
    let lab_pod = format!("{}-pod", lab.prefix());
    endpoints(lab)
        .into_iter()
        .filter(|e| !e.attachment.container_id.starts_with(&lab_pod))
        .collect()
}

/// The node namespace's `lxc…` veths.
fn node_veths(lab: &Lab) -> BTreeSet<String> {
    link_names(lab.node_netns())
        .unwrap()
        .into_iter()
        .filter(|n| n.starts_with("lxc"))
        .collect()
}

/// Sum of a counter over the engine's workers.
fn engine_counter(lab: &Lab, field: &str) -> u64 {
    // Workers publish their counters once per loop: let them.
    std::thread::sleep(std::time::Duration::from_millis(150));
    let stats = lab.engine_stats().unwrap();
    stats["workers"]
        .as_array()
        .unwrap_or_else(|| panic!("no workers in {stats}"))
        .iter()
        .map(|w| w[field].as_u64().unwrap_or(0))
        .sum()
}

fn ping(from: &RunningContainer, to: IpAddr) {
    let family = if to.is_ipv4() { "-4" } else { "-6" };
    let to = to.to_string();
    let out = from
        .exec(&["ping", family, "-c", "3", "-i", "0.2", "-W", "2", &to])
        .unwrap();
    assert!(out.success(), "{} -> {to}: {out:?}", from.id());
    assert!(out.stdout.contains("3 packets received"), "{out:?}");
}

/// `wget` of `url` in `from`, counting the bytes.
fn wget_bytes(from: &RunningContainer, url: &str) -> u64 {
    // Not `wget -T`: busybox 1.35's wget segfaults with it.
    let script = format!("wget -q -O - '{url}' | wc -c");
    let out = from.exec(&["timeout", "20", "sh", "-c", &script]).unwrap();
    assert!(out.success(), "wget {url} from {}: {out:?}", from.id());
    out.stdout
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("{out:?}"))
}

fn cgroups_named(namespace: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for hierarchy in std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
        let candidate = hierarchy.path().join(namespace);
        if candidate.exists() {
            found.push(candidate);
        }
    }
    let v2 = Path::new("/sys/fs/cgroup").join(namespace);
    if v2.exists() {
        found.push(v2);
    }
    found
}

/// The plugin's log lines for `command` and one attachment.
fn log_lines(log: &Path, command: &str, container_id: &str) -> Vec<String> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let key = format!(" {command} {container_id}/eth0: ");
    text.lines()
        .filter(|l| l.contains(&key))
        .map(String::from)
        .collect()
}

#[test]
fn containerd_containers_are_wired_by_sluice_cni_and_talk_through_the_engine() {
    let name = "containerd_containers_are_wired_by_sluice_cni_and_talk_through_the_engine";
    if !root_or_skip(name) {
        return;
    }
    prerequisites();
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let started = Instant::now();
    let before = root_state();

    let lab = Lab::new(LabSpec::engine(1)).expect("lab up (engine, agent, one CNI pod)");
    let lab_veths = node_veths(&lab);
    assert_eq!(lab_veths.len(), 1, "{lab_veths:?}");
    let node = netns_path(lab.node_netns());
    let scratch = ScratchDir::new("cni-containerd").unwrap();
    let log_file = scratch.path().join("sluice-cni.log");
    let plugin = find_binary(CNI).expect("sluice-cni (cargo build --release --workspace)");
    assert_eq!(
        plugin.file_name().unwrap(),
        "sluice-cni",
        "the conflist's type names the binary"
    );
    let (namespace, address, shim_sockets);
    {
        let t = Instant::now();
        let ctd = Containerd::start(scratch.path().join("containerd")).expect("containerd");
        namespace = ctd.namespace().to_string();
        address = ctd.address().to_path_buf();
        let image = ctd.import_busybox().expect("image");
        eprintln!("containerd up and image imported in {:?}", t.elapsed());
        let net = CniNetwork::new(
            scratch.path().join("cni"),
            &node,
            "10-sluice.conflist",
            &conflist("1.0.0", &lab.agent_socket(), &log_file),
            std::slice::from_ref(&plugin),
        )
        .unwrap();

        let t = Instant::now();
        let c1 = ctd
            .run(&net, "c1", &image, &["sleep", "3600"])
            .unwrap_or_else(|e| panic!("c1 runs: {e:#}\n{}", lab.log_tail("agent", 20)));
        let c2 = ctd
            .run(&net, "c2", &image, &["sleep", "3600"])
            .unwrap_or_else(|e| panic!("c2 runs: {e:#}\n{}", lab.log_tail("agent", 20)));
        eprintln!("two containers running in {:?}", t.elapsed());

        // Addresses: libcni's cached result, eth0 inside, distinct, not the lab pod's.
        let (a4, a6) = result_addresses(&c1, "1.0.0");
        let (b4, b6) = result_addresses(&c2, "1.0.0");
        assert_ne!(a4, b4);
        assert_ne!(a6, b6);
        let pod1 = lab.pod(1).unwrap();
        assert!(![a4, b4].contains(&pod1.ipv4) && ![a6, b6].contains(&pod1.ipv6));
        assert_addresses_inside(&c1, a4, a6);
        assert_addresses_inside(&c2, b4, b6);

        // The host ends live in the node namespace, named after the attachment.
        let host = |c: &RunningContainer| {
            host_ifname(&Attachment {
                container_id: c.cni_container_id(),
                ifname: "eth0".into(),
            })
        };
        let (h1, h2) = (host(&c1), host(&c2));
        let mut expected = lab_veths.clone();
        expected.extend([h1.clone(), h2.clone()]);
        assert_eq!(node_veths(&lab), expected);

        // The agent serves both, under the runtime's container ids.
        let listed = container_endpoints(&lab);
        assert_eq!(listed.len(), 2, "{listed:#?}");
        for (c, v4, v6, h) in [(&c1, a4, a6, &h1), (&c2, b4, b6, &h2)] {
            let e = listed
                .iter()
                .find(|e| e.attachment.container_id == c.cni_container_id())
                .unwrap_or_else(|| panic!("{} not listed: {listed:#?}", c.id()));
            assert_eq!(e.state, "ready", "{e:?}");
            assert_eq!(e.attachment.ifname, "eth0");
            assert_eq!(e.ipv4, Some(IpAddr::V4(v4)), "{e:?}");
            assert_eq!(e.ipv6, Some(IpAddr::V6(v6)), "{e:?}");
            assert_eq!(e.host_ifname.as_deref(), Some(h.as_str()), "{e:?}");
            assert_eq!(e.netns, c.netns_path().display().to_string(), "{e:?}");
        }
        lab.wait_in_sync(std::time::Duration::from_secs(10))
            .unwrap();

        // ICMP both ways over both families, then TCP (512 KiB over each
        // family): the only path is the engine, whose counters must grow.
        let (rx0, bytes0) = (
            engine_counter(&lab, "rx_packets"),
            engine_counter(&lab, "rx_bytes"),
        );
        for (from, to) in [(&c1, b4), (&c2, a4)] {
            ping(from, to.into());
        }
        for (from, to) in [(&c1, b6), (&c2, a6)] {
            ping(from, to.into());
        }
        let rx1 = engine_counter(&lab, "rx_packets");
        // 4 pings x 3 echo requests and 3 replies.
        assert!(
            rx1 - rx0 >= 24,
            "the engine received only {} packets during the pings",
            rx1 - rx0
        );
        let serve = format!(
            "mkdir -p /www && dd if=/dev/zero of=/www/big bs=1024 count={} 2>/dev/null \
             && httpd -p 8080 -h /www </dev/null >/dev/null 2>&1",
            BIG_FILE_BYTES / 1024
        );
        let httpd = c1.exec(&["sh", "-c", &serve]).unwrap();
        assert!(httpd.success(), "{httpd:?}");
        for url in [
            format!("http://{a4}:8080/big"),
            format!("http://[{a6}]:8080/big"),
        ] {
            assert_eq!(wget_bytes(&c2, &url), BIG_FILE_BYTES, "{url}");
        }
        let bytes1 = engine_counter(&lab, "rx_bytes");
        assert!(
            bytes1 - bytes0 >= 2 * BIG_FILE_BYTES,
            "the engine received only {} bytes while {} crossed over TCP",
            bytes1 - bytes0,
            2 * BIG_FILE_BYTES
        );

        // Without the engine the containers are cut off (the node kernel does
        // not forward); restarted, it is fed by the agent and they talk again.
        lab.stop_engine().unwrap();
        let cut = c1
            .exec(&["ping", "-c", "2", "-i", "0.2", "-W", "1", &b4.to_string()])
            .unwrap();
        assert!(!cut.success(), "ping without the engine: {cut:?}");
        lab.start_engine(&EngineOptions::default()).unwrap();
        lab.wait_in_sync(std::time::Duration::from_secs(30))
            .unwrap();
        ping(&c1, b4.into());
        ping(&c2, a6.into());

        // Killing runs DEL: veths gone, cache empty, the agent holds nothing.
        shim_sockets = [ctd.shim_socket_path("c1"), ctd.shim_socket_path("c2")];
        let (id1, id2) = (c1.cni_container_id(), c2.cni_container_id());
        let t = Instant::now();
        for c in [c1, c2] {
            let id = c.id().to_string();
            let out = c.kill().unwrap();
            assert_eq!(out.status.code(), Some(137), "{id}: {out:?}");
            // ctr reports a failed DEL as an error.
            assert!(!out.stderr.contains("level=error"), "{id}: {out:?}");
        }
        eprintln!("both killed and deleted in {:?}", t.elapsed());
        for id in [&id1, &id2] {
            let del = log_lines(&log_file, "DEL", id);
            assert!(
                del.iter().any(|l| l.ends_with("released at the agent")),
                "DEL of {id} did not release: {del:#?}"
            );
            let checked = lab
                .ask_agent(AgentRequest::Check {
                    attachment: Attachment {
                        container_id: id.clone(),
                        ifname: "eth0".into(),
                    },
                })
                .unwrap();
            assert!(
                matches!(
                    checked,
                    AgentResponse::Error {
                        kind: ErrorKind::UnknownAttachment,
                        ..
                    }
                ),
                "{checked:?}"
            );
        }
        assert_eq!(node_veths(&lab), lab_veths);
        assert_eq!(net.cached_results().unwrap(), Vec::new());
        assert_eq!(container_endpoints(&lab), Vec::new());
        assert_eq!(ctd.containers().unwrap(), Vec::<String>::new());

        // A new container gets fresh addresses, not the ones just released.
        let c3 = ctd.run(&net, "c3", &image, &["sleep", "3600"]).unwrap();
        let (c4_, c6_) = result_addresses(&c3, "1.0.0");
        assert!(![a4, b4].contains(&c4_), "{c4_} was just released");
        assert!(![a6, b6].contains(&c6_), "{c6_} was just released");
        assert_addresses_inside(&c3, c4_, c6_);
        let out = c3.kill().unwrap();
        assert!(!out.stderr.contains("level=error"), "{out:?}");

        // Older spec versions are answered in kind: ips[].version is there.
        net.set_conf(&conflist("0.4.0", &lab.agent_socket(), &log_file))
            .unwrap();
        let old4 = ctd.run(&net, "v040", &image, &["sleep", "3600"]).unwrap();
        net.set_conf(&conflist("0.3.1", &lab.agent_socket(), &log_file))
            .unwrap();
        let old3 = ctd.run(&net, "v031", &image, &["sleep", "3600"]).unwrap();
        let (d4, d6) = result_addresses(&old4, "0.4.0");
        let (e4, e6) = result_addresses(&old3, "0.3.1");
        assert_addresses_inside(&old4, d4, d6);
        assert_addresses_inside(&old3, e4, e6);
        ping(&old4, e4.into());
        ping(&old3, d6.into());
        assert_eq!(container_endpoints(&lab).len(), 2);
        for c in [old4, old3] {
            let out = c.kill().unwrap();
            assert!(!out.stderr.contains("level=error"), "{out:?}");
        }
        assert_eq!(container_endpoints(&lab), Vec::new());
        assert_eq!(node_veths(&lab), lab_veths);
        assert_eq!(net.cached_results().unwrap(), Vec::new());
        // The lab's own pod was never touched.
        assert_eq!(endpoints(&lab).len(), 1);
        lab.wait_in_sync(std::time::Duration::from_secs(10))
            .unwrap();
    }

    // containerd, its shims and every trace of them are gone.
    assert!(!shim_sockets.iter().any(|s| s.exists()), "{shim_sockets:?}");
    assert_eq!(shims_for(&address), Vec::<u32>::new());
    assert_eq!(cgroups_named(&namespace), Vec::<PathBuf>::new());
    assert_eq!(mounts_under(scratch.path()), Vec::<PathBuf>::new());
    drop(scratch);
    drop(lab);
    assert_eq!(before, root_state());
    eprintln!("whole test in {:?}", started.elapsed());
}
