//! sluice-cni at the level of the CNI spec, against the real sluice-agent and
//! sluice-engine of a lab node namespace (`LabSpec::engine(1)`: one lab pod
//! wired through CNI). The plugin binary runs in the node namespace with the
//! runtime's environment and config on stdin; the container namespaces are
//! made by the tests in the lab's naming scheme (`<prefix>-p<n>`, n > 1).
//!
//! - ADD answers in the version it was given (0.3.1, 0.4.0, 1.0.0, 1.1.0), with
//!   the interfaces, ips and routes shapes of that version, and the engine
//!   serves the new pods at once.
//! - CHECK passes after ADD and fails (104) once the container lost an
//!   address; below 0.4.0 it is refused (1). DEL is idempotent, works with an
//!   empty CNI_NETNS, deletes the veth and releases. GC keeps exactly the
//!   valid attachments and deletes the others' veths.
//! - STATUS: 0 in sync, 50 while the engine is stopped, 0 again after a restart.
//! - ADD with the engine stopped fails with 11 after the agent's Register
//!   timeout (15 s), and with the agent down at once: neither leaves a veth, an
//!   address or an attachment. DEL with the agent down deletes the veth and
//!   answers 11 so that the runtime retries it.
//! - A tiny pod CIDR (a standalone agent without engine): the second ADD is
//!   refused with 100 naming the CIDR while the first is still registering.
//! - Malformed input: spec error JSON with codes 4, 6, 1, 2.

use std::io::BufReader;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sluice_api::agent::{
    host_ifname, AgentRequest, AgentResponse, Attachment, EndpointInfo, ErrorKind, Request,
};
use sluice_api::{read_message, write_message};
use sluice_lab::binaries::{find_binary, AGENT};
use sluice_lab::command::{self, is_root, run};
use sluice_lab::names::{next_prefix, node_netns, pod_netns, run_dir};
use sluice_lab::{EngineOptions, Lab, LabSpec};
use sluice_tests::cni::{
    addresses, ip_in, link_exists, link_names, CniCall, CniReply, ScratchNetns,
};

/// The agent's Register timeout (control/agent/src/server.rs).
const REGISTER_TIMEOUT: Duration = Duration::from_secs(15);

fn root_or_skip(test: &str) -> bool {
    if is_root() {
        return true;
    }
    eprintln!("skipping {test}: CNI tests need root");
    false
}

fn lab() -> Lab {
    Lab::new(LabSpec::engine(1)).expect("lab up (engine, agent, one CNI pod)")
}

/// A container namespace of the lab's scheme, past the lab's own pods.
fn container_netns(lab: &Lab, n: usize) -> ScratchNetns {
    assert!(n > lab.pods().len());
    ScratchNetns::create(&pod_netns(lab.prefix(), n)).unwrap()
}

/// A container id that tells which lab it belongs to.
fn container_id(lab: &Lab, name: &str) -> String {
    format!("{}-{name}", lab.prefix())
}

fn attachment(container: &str) -> Attachment {
    Attachment {
        container_id: container.to_string(),
        ifname: "eth0".into(),
    }
}

/// The lab's network config at `version`, with `extra` keys merged in.
fn config(lab: &Lab, version: &str, extra: Value) -> Value {
    let mut conf = lab.cni_config(version);
    if let Value::Object(extra) = extra {
        for (k, v) in extra {
            conf[k] = v;
        }
    }
    conf
}

/// One plugin call in the lab's node namespace.
fn cni(lab: &Lab, command: &str, container: &str, netns: &str, conf: &Value) -> CniReply {
    CniCall::new(command, container, netns, conf)
        .run_in(lab.node_netns())
        .unwrap()
}

/// The spec's error result: exit 1, exactly `cniVersion`, `code`, `msg`,
/// `details`, the version echoed, and the expected code.
fn assert_error(reply: &CniReply, code: u64, version: &str) {
    assert_eq!(reply.exit_code, Some(1), "{reply}");
    assert_eq!(reply.error_code(), Some(code), "{reply}");
    let object = reply.json.as_object().unwrap_or_else(|| panic!("{reply}"));
    let mut keys: Vec<&str> = object.keys().map(String::as_str).collect();
    keys.sort();
    assert_eq!(keys, ["cniVersion", "code", "details", "msg"], "{reply}");
    assert_eq!(reply.json["cniVersion"], version, "{reply}");
    assert!(!reply.msg().is_empty(), "{reply}");
    assert!(
        !reply.json["details"].as_str().unwrap_or("").is_empty(),
        "{reply}"
    );
}

/// Success without output (DEL, CHECK, STATUS, GC).
fn assert_silent_success(reply: &CniReply) {
    assert!(reply.success(), "{reply}");
    assert!(reply.stdout.trim().is_empty(), "{reply}");
}

fn agent_answer(socket: &Path, request: AgentRequest) -> AgentResponse {
    let stream = UnixStream::connect(socket)
        .unwrap_or_else(|e| panic!("connecting to {}: {e}", socket.display()));
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut writer = stream.try_clone().unwrap();
    write_message(&mut writer, &Request::new(request)).unwrap();
    read_message(&mut BufReader::new(stream))
        .unwrap()
        .expect("an answer")
}

fn endpoints_at(socket: &Path) -> Vec<EndpointInfo> {
    match agent_answer(socket, AgentRequest::ListEndpoints) {
        AgentResponse::Endpoints { endpoints } => endpoints,
        other => panic!("ListEndpoints answered {other:?}"),
    }
}

fn endpoints(lab: &Lab) -> Vec<EndpointInfo> {
    endpoints_at(&lab.agent_socket())
}

/// The container ids the agent lists, sorted.
fn listed(lab: &Lab) -> Vec<String> {
    let mut ids: Vec<String> = endpoints(lab)
        .into_iter()
        .map(|e| e.attachment.container_id)
        .collect();
    ids.sort();
    ids
}

fn lab_pod_id(lab: &Lab) -> String {
    format!("{}-pod1", lab.prefix())
}

/// Whether the agent holds an attachment (agent Check).
fn agent_holds(socket: &Path, container: &str) -> bool {
    match agent_answer(
        socket,
        AgentRequest::Check {
            attachment: attachment(container),
        },
    ) {
        AgentResponse::Checked { .. } => true,
        AgentResponse::Error {
            kind: ErrorKind::UnknownAttachment,
            ..
        } => false,
        other => panic!("Check answered {other:?}"),
    }
}

/// The node namespace's `lxc…` veths, sorted.
fn node_veths(netns: &str) -> Vec<String> {
    link_names(netns)
        .unwrap()
        .into_iter()
        .filter(|n| n.starts_with("lxc"))
        .collect()
}

fn ping_from(lab: &Lab, netns: &str, to: IpAddr) {
    let to = to.to_string();
    let out = run(
        &mut command::in_netns(netns, &["ping", "-c", "2", "-i", "0.2", "-W", "2", &to]),
        Duration::from_secs(10),
    )
    .unwrap();
    if !out.success() {
        let neigh = run(
            &mut command::in_netns(netns, &["ip", "neigh"]),
            Duration::from_secs(5),
        );
        let addr = run(
            &mut command::in_netns(netns, &["ip", "addr"]),
            Duration::from_secs(5),
        );
        panic!(
            "ping {netns} -> {to}: {out:?}\nneigh {neigh:?}\naddr {addr:?}\nstats {:?}\nagent {:?}\n{}",
            lab.engine_stats(),
            lab.agent_status(),
            lab.engine_log_tail(30)
        );
    }
}

/// MAC of an interface, from `ip -j link`.
fn mac_of(netns: &str, ifname: &str) -> String {
    let out = ip_in(netns, &["-j", "link", "show", "dev", ifname]).unwrap();
    let links: Value = serde_json::from_str(&out.stdout).unwrap();
    links[0]["address"].as_str().unwrap().to_string()
}

fn mtu_of(netns: &str, ifname: &str) -> u64 {
    let out = ip_in(netns, &["-j", "link", "show", "dev", ifname]).unwrap();
    let links: Value = serde_json::from_str(&out.stdout).unwrap();
    links[0]["mtu"].as_u64().unwrap()
}

/// What one ADD handed out.
#[derive(Debug, Clone)]
struct Added {
    container: String,
    netns: String,
    v4: Ipv4Addr,
    v6: Ipv6Addr,
    host: String,
    result: Value,
}

/// ADD's result, checked field by field against the spec version it was
/// asked in and against the namespaces: exactly `cniVersion`, `interfaces`
/// (host veth without sandbox, then eth0 with the netns as sandbox; `mtu`
/// only in 1.1.0), `ips` (a /32 and a /128 in the lab's CIDRs with their
/// gateways and the container interface's index; `version` only in
/// 0.3.x/0.4.0), `routes` (the two defaults), `dns` (empty).
fn assert_add_result(
    lab: &Lab,
    version: &str,
    container: &str,
    ns: &ScratchNetns,
    reply: &CniReply,
) -> Added {
    assert!(reply.success(), "ADD {version} for {container}: {reply}");
    let result = &reply.json;
    let mut keys: Vec<&str> = result
        .as_object()
        .unwrap_or_else(|| panic!("{reply}"))
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort();
    assert_eq!(
        keys,
        ["cniVersion", "dns", "interfaces", "ips", "routes"],
        "{result}"
    );
    assert_eq!(result["cniVersion"], version, "{result}");
    assert_eq!(result["dns"], json!({}), "{result}");

    let host = host_ifname(&attachment(container));
    let mtu = lab.spec().mtu;
    let with_mtu = |mut v: Value| {
        if version == "1.1.0" {
            v["mtu"] = json!(mtu);
        }
        v
    };
    let host_mac = mac_of(lab.node_netns(), &host);
    let eth0_mac = mac_of(ns.name(), "eth0");
    assert_eq!(
        result["interfaces"],
        json!([
            with_mtu(json!({"name": host, "mac": host_mac})),
            with_mtu(json!({"name": "eth0", "mac": eth0_mac, "sandbox": ns.path()})),
        ]),
        "{version}: {result}"
    );

    let ips = result["ips"].as_array().unwrap();
    assert_eq!(ips.len(), 2, "{result}");
    let v4: Ipv4Addr = ips[0]["address"]
        .as_str()
        .and_then(|a| a.strip_suffix("/32"))
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("first ips entry is not an IPv4 /32: {result}"));
    let v6: Ipv6Addr = ips[1]["address"]
        .as_str()
        .and_then(|a| a.strip_suffix("/128"))
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("second ips entry is not an IPv6 /128: {result}"));
    assert_eq!(v4.octets()[..3], [10, 200, 0], "{result}");
    assert!(v4.octets()[3] > 1 && v4.octets()[3] < 255, "{result}");
    assert_eq!(v6.segments()[..4], [0xfd00, 0x200, 0, 0], "{result}");
    let zero_x = version.starts_with("0.");
    let ip = |family: &str, address: String, gateway: &str| {
        let mut v = json!({"address": address, "gateway": gateway, "interface": 1});
        if zero_x {
            v["version"] = json!(family);
        }
        v
    };
    assert_eq!(
        result["ips"],
        json!([
            ip("4", format!("{v4}/32"), "10.200.0.1"),
            ip("6", format!("{v6}/128"), "fe80::1"),
        ]),
        "{version}: {result}"
    );
    assert_eq!(
        result["routes"],
        json!([
            {"dst": "0.0.0.0/0", "gw": "10.200.0.1"},
            {"dst": "::/0", "gw": "fe80::1"},
        ]),
        "{result}"
    );

    // What the namespaces hold matches.
    let mut inside = addresses(ns.name(), "eth0").unwrap();
    inside.sort();
    assert_eq!(inside, vec![(IpAddr::V4(v4), 32), (IpAddr::V6(v6), 128)]);
    assert_eq!(mtu_of(ns.name(), "eth0"), u64::from(mtu));
    assert_eq!(mtu_of(lab.node_netns(), &host), u64::from(mtu));
    let routes4 = ip_in(ns.name(), &["-4", "route", "show"]).unwrap().stdout;
    assert!(
        routes4.contains("default via 10.200.0.1 dev eth0"),
        "{routes4}"
    );
    let routes6 = ip_in(ns.name(), &["-6", "route", "show"]).unwrap().stdout;
    assert!(
        routes6.contains("default via fe80::1 dev eth0"),
        "{routes6}"
    );
    Added {
        container: container.to_string(),
        netns: ns.path(),
        v4,
        v6,
        host,
        result: result.clone(),
    }
}

#[test]
fn add_in_every_version_then_check_del_and_gc() {
    if !root_or_skip("add_in_every_version_then_check_del_and_gc") {
        return;
    }
    let started = Instant::now();
    let lab = lab();
    let node = lab.node_netns().to_string();
    let socket = lab.agent_socket();
    let lab_pod = lab.pod(1).unwrap().clone();
    let versions = ["0.3.1", "0.4.0", "1.0.0", "1.1.0"];
    let namespaces: Vec<ScratchNetns> = (0..versions.len())
        .map(|i| container_netns(&lab, 10 + i))
        .collect();
    let add = |i: usize| {
        let version = versions[i];
        let container = container_id(&lab, &format!("v{}", version.replace('.', "")));
        let ns = &namespaces[i];
        let reply = cni(
            &lab,
            "ADD",
            &container,
            &ns.path(),
            &lab.cni_config(version),
        );
        assert_add_result(&lab, version, &container, ns, &reply)
    };
    // At most four veths at a time on this one-worker engine: with its
    // default --frames 8192 and --ring-size 2048, the fill rings of four
    // sockets take every UMEM frame and a fifth interface drops what it
    // receives (an engine limitation, see the report).
    let [a031, a040, a100] = [0, 1, 2].map(add);
    let added = [&a031, &a040, &a100];
    let mut distinct: Vec<IpAddr> = added
        .iter()
        .flat_map(|a| [IpAddr::V4(a.v4), IpAddr::V6(a.v6)])
        .chain([lab_pod.ipv4.into(), lab_pod.ipv6.into()])
        .collect();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), 2 * (added.len() + 1), "{added:#?}");

    // The agent serves all of them: listed ready, and the engine forwards.
    let listed_now = endpoints(&lab);
    for a in added {
        let e = listed_now
            .iter()
            .find(|e| e.attachment == attachment(&a.container))
            .unwrap_or_else(|| panic!("{} not listed: {listed_now:#?}", a.container));
        assert_eq!(e.state, "ready", "{e:?}");
        assert_eq!(e.ipv4, Some(IpAddr::V4(a.v4)));
        assert_eq!(e.ipv6, Some(IpAddr::V6(a.v6)));
        assert_eq!(e.host_ifname.as_deref(), Some(a.host.as_str()));
        assert_eq!(e.netns, a.netns);
    }
    ping_from(&lab, namespaces[0].name(), a100.v4.into());
    ping_from(&lab, namespaces[2].name(), a031.v6.into());
    ping_from(&lab, namespaces[1].name(), lab_pod.ipv4.into());

    // CHECK: refused below 0.4.0, silent success with the ADD's result.
    let check_conf =
        |a: &Added, version: &str| config(&lab, version, json!({"prevResult": a.result}));
    let check = |a: &Added, version: &str| {
        cni(
            &lab,
            "CHECK",
            &a.container,
            &a.netns,
            &check_conf(a, version),
        )
    };
    let reply = check(&a031, "0.3.1");
    assert_error(&reply, 1, "0.3.1");
    assert!(reply.msg().contains("CHECK"), "{reply}");
    assert_silent_success(&check(&a040, "0.4.0"));
    assert_silent_success(&check(&a100, "1.0.0"));
    // Without prevResult there is nothing to compare with.
    let reply = cni(
        &lab,
        "CHECK",
        &a100.container,
        &a100.netns,
        &lab.cni_config("1.0.0"),
    );
    assert_error(&reply, 7, "1.0.0");
    // The container loses its IPv4 address: CHECK names it.
    let lost = format!("{}/32", a100.v4);
    ip_in(namespaces[2].name(), &["addr", "del", &lost, "dev", "eth0"]).unwrap();
    let reply = check(&a100, "1.0.0");
    assert_error(&reply, 104, "1.0.0");
    assert!(reply.msg().contains(&a100.v4.to_string()), "{reply}");
    // An attachment the agent never saw.
    let stranger = Added {
        container: container_id(&lab, "stranger"),
        ..a040.clone()
    };
    assert_error(&check(&stranger, "1.0.0"), 104, "1.0.0");

    // DEL with the netns: veth gone (with its peer), released; DEL again is fine.
    for _ in 0..2 {
        let reply = cni(
            &lab,
            "DEL",
            &a100.container,
            &a100.netns,
            &lab.cni_config("1.0.0"),
        );
        assert_silent_success(&reply);
        assert!(!link_exists(&node, &a100.host).unwrap());
        assert_eq!(link_names(namespaces[2].name()).unwrap(), ["lo"]);
        assert!(!agent_holds(&socket, &a100.container));
    }
    // DEL with an empty CNI_NETNS (containerd's way) while the netns lives on.
    for _ in 0..2 {
        let reply = cni(&lab, "DEL", &a040.container, "", &lab.cni_config("0.4.0"));
        assert_silent_success(&reply);
        assert!(!link_exists(&node, &a040.host).unwrap());
        assert_eq!(link_names(namespaces[1].name()).unwrap(), ["lo"]);
        assert!(!agent_holds(&socket, &a040.container));
    }
    let mut expected = vec![a031.container.clone(), lab_pod_id(&lab)];
    expected.sort();
    assert_eq!(listed(&lab), expected);

    // 1.1.0, after the releases: fresh addresses, not the released ones.
    let a110 = add(3);
    for released in [&a040, &a100] {
        assert_ne!(a110.v4, released.v4, "{released:?} reused at once");
        assert_ne!(a110.v6, released.v6, "{released:?} reused at once");
    }
    ping_from(&lab, namespaces[3].name(), a031.v4.into());
    assert_silent_success(&check(&a110, "1.1.0"));

    // GC: 1.1.0 only, needs the list, releases all but the valid ones.
    let reply = cni(&lab, "GC", "", "", &lab.cni_config("1.0.0"));
    assert_error(&reply, 1, "1.0.0");
    let reply = cni(&lab, "GC", "", "", &lab.cni_config("1.1.0"));
    assert_error(&reply, 7, "1.1.0");
    let mut expected = vec![
        a031.container.clone(),
        a110.container.clone(),
        lab_pod_id(&lab),
    ];
    expected.sort();
    assert_eq!(listed(&lab), expected);
    let valid = json!({"cni.dev/valid-attachments": [
        {"containerID": lab_pod_id(&lab), "ifname": "eth0"},
        {"containerID": a110.container, "ifname": "eth0"},
    ]});
    let reply = cni(&lab, "GC", "", "", &config(&lab, "1.1.0", valid));
    assert_silent_success(&reply);
    assert!(!agent_holds(&socket, &a031.container));
    assert!(
        !link_exists(&node, &a031.host).unwrap(),
        "GC deletes the veth"
    );
    assert_eq!(link_names(namespaces[0].name()).unwrap(), ["lo"]);
    let mut expected = vec![a110.container.clone(), lab_pod_id(&lab)];
    expected.sort();
    assert_eq!(listed(&lab), expected);
    let mut veths = vec![a110.host.clone(), lab_pod.node_ifname.clone()];
    veths.sort();
    assert_eq!(node_veths(&node), veths);
    // What GC kept still works, through the engine.
    ping_from(&lab, namespaces[3].name(), lab_pod.ipv6.into());
    assert_silent_success(&check(&a110, "1.1.0"));

    let reply = cni(
        &lab,
        "DEL",
        &a110.container,
        &a110.netns,
        &lab.cni_config("1.1.0"),
    );
    assert_silent_success(&reply);
    assert_eq!(listed(&lab), [lab_pod_id(&lab)]);
    assert_eq!(
        node_veths(&node),
        std::slice::from_ref(&lab_pod.node_ifname)
    );
    lab.wait_in_sync(Duration::from_secs(10)).unwrap();
    eprintln!("add/check/del/gc in {:?}", started.elapsed());
}

#[test]
fn status_follows_the_engine_and_add_without_engine_leaves_nothing() {
    if !root_or_skip("status_follows_the_engine_and_add_without_engine_leaves_nothing") {
        return;
    }
    let started = Instant::now();
    let lab = lab();
    let node = lab.node_netns().to_string();
    let lab_pod = lab.pod(1).unwrap().clone();
    let status = lab.cni_config("1.1.0");

    assert_silent_success(&cni(&lab, "STATUS", "", "", &status));
    // STATUS is a 1.1.0 command.
    assert_error(
        &cni(&lab, "STATUS", "", "", &lab.cni_config("1.0.0")),
        1,
        "1.0.0",
    );

    // Engine stopped: the agent notices and STATUS says 50.
    lab.stop_engine().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    let reply = loop {
        let reply = cni(&lab, "STATUS", "", "", &status);
        if !reply.success() || Instant::now() >= deadline {
            break reply;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_error(&reply, 50, "1.1.0");
    assert!(
        reply.msg().contains("no connection to the engine"),
        "{reply}"
    );

    // ADD now: allocated and wired, then Register times out; all undone.
    let ns = container_netns(&lab, 2);
    let container = container_id(&lab, "noengine");
    let reply = cni(
        &lab,
        "ADD",
        &container,
        &ns.path(),
        &lab.cni_config("1.0.0"),
    );
    eprintln!("ADD without engine failed after {:?}", reply.elapsed);
    assert_error(&reply, 11, "1.0.0");
    assert!(reply.msg().contains("not served"), "{reply}");
    assert!(
        reply.elapsed >= REGISTER_TIMEOUT - Duration::from_secs(1),
        "{reply}"
    );
    assert_eq!(
        node_veths(&node),
        std::slice::from_ref(&lab_pod.node_ifname)
    );
    assert_eq!(link_names(ns.name()).unwrap(), ["lo"]);
    assert!(!agent_holds(&lab.agent_socket(), &container));
    assert_eq!(listed(&lab), [lab_pod_id(&lab)]);

    // Engine back: in sync, STATUS 0, and the same ADD now succeeds.
    lab.start_engine(&EngineOptions::default()).unwrap();
    lab.wait_in_sync(Duration::from_secs(30)).unwrap();
    assert_silent_success(&cni(&lab, "STATUS", "", "", &status));
    let reply = cni(
        &lab,
        "ADD",
        &container,
        &ns.path(),
        &lab.cni_config("1.0.0"),
    );
    let added = assert_add_result(&lab, "1.0.0", &container, &ns, &reply);
    // The restarted engine serves both the old pod and the new one.
    ping_from(&lab, ns.name(), lab_pod.ipv4.into());
    ping_from(&lab, &lab_pod.netns, added.v6.into());
    assert_silent_success(&cni(&lab, "DEL", &container, "", &lab.cni_config("1.0.0")));
    assert_eq!(listed(&lab), [lab_pod_id(&lab)]);
    eprintln!("status/engine test in {:?}", started.elapsed());
}

#[test]
fn add_and_del_while_the_agent_is_down() {
    if !root_or_skip("add_and_del_while_the_agent_is_down") {
        return;
    }
    let lab = lab();
    let node = lab.node_netns().to_string();
    let lab_pod = lab.pod(1).unwrap().clone();
    let conf = lab.cni_config("1.1.0");
    let (ns1, ns2) = (container_netns(&lab, 2), container_netns(&lab, 3));
    let (c1, c2) = (container_id(&lab, "c1"), container_id(&lab, "c2"));
    let a1 = assert_add_result(
        &lab,
        "1.1.0",
        &c1,
        &ns1,
        &cni(&lab, "ADD", &c1, &ns1.path(), &conf),
    );

    assert!(lab.kill_agent().unwrap());
    // STATUS: unavailable, and says why.
    let reply = cni(&lab, "STATUS", "", "", &conf);
    assert_error(&reply, 50, "1.1.0");
    assert!(reply.msg().contains("agent"), "{reply}");
    // ADD: try again later, nothing made.
    let reply = cni(&lab, "ADD", &c2, &ns2.path(), &conf);
    assert_error(&reply, 11, "1.1.0");
    assert!(
        reply.msg().contains("cannot reach the Sluice agent"),
        "{reply}"
    );
    assert!(reply.elapsed < Duration::from_secs(5), "{reply}");
    assert_eq!(link_names(ns2.name()).unwrap(), ["lo"]);
    let mut veths = vec![a1.host.clone(), lab_pod.node_ifname.clone()];
    veths.sort();
    assert_eq!(node_veths(&node), veths);
    // DEL: the veth goes, but 11 so that the runtime retries until released.
    let reply = cni(&lab, "DEL", &c1, "", &conf);
    assert_error(&reply, 11, "1.1.0");
    assert!(!link_exists(&node, &a1.host).unwrap());
    assert_eq!(link_names(ns1.name()).unwrap(), ["lo"]);

    // The agent restarts with its attachments; the retried DEL releases.
    lab.start_agent().unwrap();
    assert!(agent_holds(&lab.agent_socket(), &c1));
    assert_silent_success(&cni(&lab, "DEL", &c1, "", &conf));
    assert!(!agent_holds(&lab.agent_socket(), &c1));
    lab.wait_in_sync(Duration::from_secs(30)).unwrap();
    assert_eq!(listed(&lab), [lab_pod_id(&lab)]);
    // And ADD works again.
    let a2 = assert_add_result(
        &lab,
        "1.1.0",
        &c2,
        &ns2,
        &cni(&lab, "ADD", &c2, &ns2.path(), &conf),
    );
    ping_from(&lab, ns2.name(), lab_pod.ipv4.into());
    assert_ne!(
        a2.v4, a1.v4,
        "a just released address is not reused at once"
    );
    assert_silent_success(&cni(&lab, "DEL", &c2, &ns2.path(), &conf));
    assert_eq!(
        node_veths(&node),
        std::slice::from_ref(&lab_pod.node_ifname)
    );
}

#[test]
fn malformed_input_gets_spec_errors_and_changes_nothing() {
    if !root_or_skip("malformed_input_gets_spec_errors_and_changes_nothing") {
        return;
    }
    let lab = lab();
    let node = lab.node_netns().to_string();
    let ns = container_netns(&lab, 2);
    let container = container_id(&lab, "bad");
    let conf = lab.cni_config("1.0.0");
    let run = |call: CniCall| call.run_in(&node).unwrap();

    // ADD without CNI_NETNS: 4, naming it.
    let reply = run(CniCall::new("ADD", &container, "", &conf));
    assert_error(&reply, 4, "1.0.0");
    assert!(reply.msg().contains("CNI_NETNS"), "{reply}");
    // Without CNI_CONTAINERID.
    let reply = run(CniCall::new("ADD", "", &ns.path(), &conf));
    assert_error(&reply, 4, "1.0.0");
    assert!(reply.msg().contains("CNI_CONTAINERID"), "{reply}");
    // A CNI_NETNS that does not exist.
    let gone = format!("/run/netns/{}-absent", lab.prefix());
    let reply = run(CniCall::new("ADD", &container, &gone, &conf));
    assert_error(&reply, 4, "1.0.0");
    // Not JSON: 6, in the newest version since none could be read.
    let reply = run(CniCall::new("ADD", &container, &ns.path(), &conf)
        .stdin(br#"{"cniVersion": "1.0.0", "name": "#.to_vec()));
    assert_error(&reply, 6, "1.1.0");
    // An unknown version: 1, echoing it.
    let reply = run(CniCall::new(
        "ADD",
        &container,
        &ns.path(),
        &lab.cni_config("9.9.9"),
    ));
    assert_error(&reply, 1, "9.9.9");
    assert!(reply.msg().contains("9.9.9"), "{reply}");
    // An unknown command: 4, naming it.
    let reply = run(CniCall::new("FROB", &container, &ns.path(), &conf));
    assert_error(&reply, 4, "1.0.0");
    assert!(reply.msg().contains("FROB"), "{reply}");
    // An ipam section: addresses come from the agent (2).
    let with_ipam = config(&lab, "1.0.0", json!({"ipam": {"type": "host-local"}}));
    let reply = run(CniCall::new("ADD", &container, &ns.path(), &with_ipam));
    assert_error(&reply, 2, "1.0.0");
    // VERSION still answers.
    let reply = run(CniCall::new("VERSION", "", "", &conf));
    assert!(reply.success(), "{reply}");
    assert_eq!(reply.json["cniVersion"], "1.0.0");
    assert_eq!(
        reply.json["supportedVersions"],
        json!(["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"])
    );

    // Nothing was allocated or wired.
    assert_eq!(listed(&lab), [lab_pod_id(&lab)]);
    assert!(!agent_holds(&lab.agent_socket(), &container));
    assert_eq!(node_veths(&node), [lab.pod(1).unwrap().node_ifname.clone()]);
    assert_eq!(link_names(ns.name()).unwrap(), ["lo"]);
}

/// A standalone agent of the test's own, in a scratch node namespace of the
/// lab scheme, with tiny pod CIDRs and no engine. Dropping it stops the agent
/// (by its PID, our child) and removes its namespaces and directory.
struct TinyAgent {
    child: Option<Child>,
    dir: PathBuf,
    socket: PathBuf,
    node: ScratchNetns,
    prefix: String,
}

impl TinyAgent {
    fn start(cidrs: &[&str]) -> TinyAgent {
        let prefix = next_prefix();
        let dir = run_dir(&prefix);
        std::fs::create_dir_all(dir.join("manifests")).unwrap();
        let node = ScratchNetns::create(&node_netns(&prefix)).unwrap();
        let socket = dir.join("agent.sock");
        let binary = find_binary(AGENT).expect("sluice-agent (cargo build --release --workspace)");
        let mut args: Vec<String> = vec![
            binary.display().to_string(),
            "--manifests".into(),
            dir.join("manifests").display().to_string(),
            "--node-name".into(),
            node.name().to_string(),
            "--state-dir".into(),
            dir.join("state").display().to_string(),
            "--socket".into(),
            socket.display().to_string(),
            "--engine-socket".into(),
            dir.join("no-engine.sock").display().to_string(),
        ];
        for cidr in cidrs {
            args.extend(["--pod-cidr".to_string(), cidr.to_string()]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let log = std::fs::File::create(dir.join("agent.log")).unwrap();
        let child = command::in_netns(node.name(), &args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut agent = TinyAgent {
            child: Some(child),
            dir,
            socket,
            node,
            prefix,
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        while UnixStream::connect(&agent.socket).is_err() {
            let exited = agent.child.as_mut().unwrap().try_wait().unwrap();
            assert!(
                exited.is_none() && Instant::now() < deadline,
                "the agent did not come up ({exited:?}):\n{}",
                agent.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        agent
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("agent.log")).unwrap_or_default()
    }

    fn config(&self) -> Value {
        json!({
            "cniVersion": "1.0.0",
            "name": "tiny",
            "type": "sluice-cni",
            "agentSocket": self.socket,
        })
    }
}

impl Drop for TinyAgent {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = command::terminate(&mut child, Duration::from_secs(5));
        }
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            eprintln!("removing {}: {e}", self.dir.display());
        }
    }
}

#[test]
fn a_tiny_pod_cidr_is_exhausted_with_code_100_and_a_failed_add_leaves_nothing() {
    if !root_or_skip("a_tiny_pod_cidr_is_exhausted_with_code_100_and_a_failed_add_leaves_nothing") {
        return;
    }
    let started = Instant::now();
    // A /30 holds one pod address (.2: .0 network, .1 gateway, .3 broadcast).
    let agent = TinyAgent::start(&["10.99.0.0/30", "fd00:99::/126"]);
    let node = agent.node.name().to_string();
    let pods: Vec<ScratchNetns> = [1, 2]
        .map(|i| ScratchNetns::create(&pod_netns(&agent.prefix, i)).unwrap())
        .into();
    let (c1, c2) = (
        format!("{}-c1", agent.prefix),
        format!("{}-c2", agent.prefix),
    );

    // The first ADD takes the only address, wires, and waits in Register for
    // an engine that never comes.
    let first = {
        let call = CniCall::new("ADD", &c1, &pods[0].path(), &agent.config());
        let node = node.clone();
        std::thread::spawn(move || call.run_in(&node).unwrap())
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let listed = endpoints_at(&agent.socket);
        if listed.iter().any(|e| e.attachment.container_id == c1) {
            let e = &listed[0];
            assert_eq!(e.ipv4, Some("10.99.0.2".parse().unwrap()), "{e:?}");
            // "allocated" until Register; the agent then says "ready" although
            // no engine serves it (see the report): either is fine here.
            assert!(["allocated", "ready"].contains(&e.state.as_str()), "{e:?}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the first ADD never allocated:\n{}",
            agent.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // The second finds the CIDR full: 100, naming it, nothing made.
    let reply = CniCall::new("ADD", &c2, &pods[1].path(), &agent.config())
        .run_in(&node)
        .unwrap();
    assert_error(&reply, 100, "1.0.0");
    assert!(reply.msg().contains("10.99.0.0/30"), "{reply}");
    assert!(reply.elapsed < Duration::from_secs(5), "{reply}");
    assert_eq!(link_names(pods[1].name()).unwrap(), ["lo"]);
    assert!(!agent_holds(&agent.socket, &c2));

    // The first fails at Register (no engine) and undoes everything.
    let reply = first.join().unwrap();
    eprintln!("ADD without engine failed after {:?}", reply.elapsed);
    assert_error(&reply, 11, "1.0.0");
    assert!(reply.msg().contains("not connected"), "{reply}");
    assert_eq!(link_names(&node).unwrap(), ["lo"]);
    assert_eq!(link_names(pods[0].name()).unwrap(), ["lo"]);
    assert!(!agent_holds(&agent.socket, &c1));
    assert_eq!(endpoints_at(&agent.socket), Vec::new());
    // The address is free again.
    match agent_answer(
        &agent.socket,
        AgentRequest::Allocate {
            attachment: attachment(&c2),
            pod: None,
            netns: pods[1].path(),
        },
    ) {
        AgentResponse::Allocated { allocation } => {
            assert_eq!(
                allocation.ipv4.unwrap().address,
                "10.99.0.2".parse::<IpAddr>().unwrap()
            );
        }
        other => panic!("Allocate answered {other:?}\n{}", agent.log()),
    }
    assert!(matches!(
        agent_answer(
            &agent.socket,
            AgentRequest::Release {
                attachment: attachment(&c2)
            }
        ),
        AgentResponse::Released { released: true }
    ));
    drop(pods);
    drop(agent);
    eprintln!("exhaustion test in {:?}", started.elapsed());
}
