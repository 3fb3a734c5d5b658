//! Root tests: the programs on veths inside network namespaces made by each test.
//! Without root they print a notice and pass.

mod common;

use std::net::{IpAddr, UdpSocket};
use std::os::fd::AsFd;

use common::{ping, root_or_skip, wire, NetNs};
use sluice_xdp::{
    AttachMode, DevmapRedirect, L4Proto, PodProgram, PortKind, Sink, UplinkProgram, XdpError,
};

// Benchmarking range (RFC 2544) and documentation prefix: never routed anywhere.
const A_V4: &str = "198.18.0.1";
const B_V4: &str = "198.18.0.2";
const B_MAC: &str = "02:00:00:00:00:02";
const A_MAC: &str = "02:00:00:00:00:01";

/// Namespaces `a` and `b` joined by the veth pair a0 (198.18.0.1) -- b0 (198.18.0.2).
fn pair() -> (NetNs, NetNs) {
    let a = NetNs::new();
    let b = NetNs::new();
    wire(&a, "a0", A_MAC, &b, "b0", B_MAC);
    a.ip(&["addr", "add", &format!("{A_V4}/24"), "dev", "a0"]);
    b.ip(&["addr", "add", &format!("{B_V4}/24"), "dev", "b0"]);
    (a, b)
}

fn has_xdp(details: &str) -> bool {
    details.contains("prog/xdp")
}

#[test]
fn sink_counts_pings_and_drop_detaches() {
    if !root_or_skip("sink_counts_pings_and_drop_detaches") {
        return;
    }
    let (a, b) = pair();
    // A static neighbour so the echo requests go out although the sink drops ARP.
    a.ip(&["neigh", "add", B_V4, "lladdr", B_MAC, "dev", "a0"]);
    let sink = b
        .enter(|| Sink::attach("b0", AttachMode::Native))
        .expect("attach sink");
    assert!(has_xdp(&b.link_details("b0")), "{}", b.link_details("b0"));

    assert!(!ping(&a, &[], 5, B_V4), "the sink drops every frame");
    let (packets, bytes) = sink.counts().expect("counts");
    // 5 echo requests of 98 bytes each, plus whatever IPv6 housekeeping a0 sent.
    assert!(packets >= 5, "packets {packets}");
    assert!(bytes >= 5 * 98, "bytes {bytes}");

    drop(sink);
    let details = b.link_details("b0");
    assert!(!has_xdp(&details), "still attached after drop: {details}");
    assert!(ping(&a, &[], 2, B_V4), "pings pass once the sink is gone");
}

#[test]
fn devmap_redirect_forwards_to_a_sink_behind_another_veth() {
    if !root_or_skip("devmap_redirect_forwards_to_a_sink_behind_another_veth") {
        return;
    }
    // a0 (a) -- m0 (m) => devmap => m1 (m) -- b0 (b, sink)
    // Without IPv6, the only frames b0 sees are a's pings (m1 sends nothing of its own).
    let a = NetNs::new().without_ipv6();
    let m = NetNs::new().without_ipv6();
    let b = NetNs::new().without_ipv6();
    wire(&a, "a0", A_MAC, &m, "m0", "02:00:00:00:01:00");
    wire(&m, "m1", "02:00:00:00:01:01", &b, "b0", B_MAC);
    a.ip(&["addr", "add", &format!("{A_V4}/24"), "dev", "a0"]);
    a.ip(&["neigh", "add", B_V4, "lladdr", B_MAC, "dev", "a0"]);

    // The sink on b0 is also the XDP program m1's peer needs to accept redirected frames.
    let sink = b
        .enter(|| Sink::attach("b0", AttachMode::Native))
        .expect("attach sink");
    let redirect = m
        .enter(|| DevmapRedirect::attach("m0", "m1", AttachMode::Native))
        .expect("attach devmap redirect");
    assert_eq!((redirect.from_ifname(), redirect.to_ifname()), ("m0", "m1"));

    ping(&a, &[], 5, B_V4);
    let (packets, bytes) = sink.counts().expect("counts");
    assert!(packets >= 5, "packets {packets}");
    assert!(bytes >= 5 * 98, "bytes {bytes}");

    drop(redirect);
    assert!(!has_xdp(&m.link_details("m0")));
    let before = sink.counts().expect("counts").0;
    ping(&a, &[], 2, B_V4);
    assert_eq!(
        sink.counts().expect("counts").0,
        before,
        "nothing forwarded after drop"
    );
}

#[test]
fn devmap_redirect_with_peer_pass_delivers_to_the_stack() {
    if !root_or_skip("devmap_redirect_with_peer_pass_delivers_to_the_stack") {
        return;
    }
    // a0 (a) -- m0 (m) => devmap => m1 (m) -- m2 (m, pass program, 198.18.0.2)
    // One namespace holds both ends of m1--m2 so attach_peer_pass can reach m2.
    let a = NetNs::new();
    let m = NetNs::new();
    wire(&a, "a0", A_MAC, &m, "m0", "02:00:00:00:01:00");
    m.ip(&[
        "link", "add", "m1", "type", "veth", "peer", "name", "m2", "address", B_MAC,
    ]);
    m.ip(&["link", "set", "m1", "up"]);
    m.ip(&["link", "set", "m2", "up"]);
    m.ip(&["addr", "add", &format!("{B_V4}/24"), "dev", "m2"]);
    a.ip(&["addr", "add", &format!("{A_V4}/24"), "dev", "a0"]);
    a.ip(&["neigh", "add", B_V4, "lladdr", B_MAC, "dev", "a0"]);

    let echoes_before = icmp_in_echos(&m);
    let redirect = m
        .enter(|| {
            let mut redirect = DevmapRedirect::attach("m0", "m1", AttachMode::Native)?;
            redirect.attach_peer_pass("m2", AttachMode::Native)?;
            Ok::<_, XdpError>(redirect)
        })
        .expect("attach devmap redirect and peer pass");
    assert!(has_xdp(&m.link_details("m2")));
    // Replies route back out of m2 towards a's address, which m has no way to reach, so
    // only the arrival is checked: m's stack counts the echo requests.
    ping(&a, &[], 5, B_V4);
    let arrived = icmp_in_echos(&m) - echoes_before;
    assert_eq!(arrived, 5, "echo requests that reached m's stack");
    drop(redirect);
    assert!(
        !has_xdp(&m.link_details("m2")),
        "peer pass detached with the redirect"
    );
}

/// `Icmp: InEchos` of the namespace's /proc/net/snmp.
fn icmp_in_echos(ns: &NetNs) -> u64 {
    let out = ns.exec(&["cat", "/proc/net/snmp"]);
    let snmp = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut icmp = snmp.lines().filter(|l| l.starts_with("Icmp:"));
    let (names, values) = (
        icmp.next().expect("Icmp names"),
        icmp.next().expect("Icmp values"),
    );
    let column = names
        .split_whitespace()
        .position(|n| n == "InEchos")
        .expect("InEchos column");
    values
        .split_whitespace()
        .nth(column)
        .expect("InEchos value")
        .parse()
        .expect("InEchos number")
}

#[test]
fn pod_program_passes_without_socket_and_refuses_non_xsk_fds() {
    if !root_or_skip("pod_program_passes_without_socket_and_refuses_non_xsk_fds") {
        return;
    }
    let (a, b) = pair();
    let mut pod = b
        .enter(|| PodProgram::attach("b0", AttachMode::Native))
        .expect("attach pod program");
    assert_eq!((pod.ifname(), pod.mode()), ("b0", AttachMode::Native));
    assert!(has_xdp(&b.link_details("b0")));

    assert!(
        ping(&a, &[], 3, B_V4),
        "no socket registered: frames go to the kernel"
    );
    let stats = pod.stats().expect("stats");
    assert_eq!(stats.redirected, 0);
    assert!(stats.no_socket >= 3, "{stats:?}");

    let udp = UdpSocket::bind("127.0.0.1:0").expect("udp socket");
    let err = pod.register_socket(0, udp.as_fd()).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("register AF_XDP socket") && msg.contains("xsks_map") && msg.contains("b0"),
        "{msg}"
    );
    let err = pod.unregister_socket(100_000).unwrap_err();
    assert!(
        matches!(
            err,
            XdpError::Map {
                map: "xsks_map",
                ..
            }
        ),
        "{err}"
    );
    pod.unregister_socket(0).expect("unregister an empty queue");

    drop(pod);
    assert!(!has_xdp(&b.link_details("b0")));

    // SKB mode shows up as xdpgeneric.
    let pod = b
        .enter(|| PodProgram::attach("b0", AttachMode::Skb))
        .expect("attach pod program in skb mode");
    assert!(b.link_details("b0").contains("xdpgeneric"));
    drop(pod);
    assert!(!has_xdp(&b.link_details("b0")));
}

#[test]
fn uplink_steers_engine_prefixes_and_node_ports_only() {
    if !root_or_skip("uplink_steers_engine_prefixes_and_node_ports_only") {
        return;
    }
    let (a, b) = pair();
    a.ip(&["addr", "add", "2001:db8::1/64", "dev", "a0", "nodad"]);
    b.ip(&["addr", "add", "2001:db8::2/64", "dev", "b0", "nodad"]);
    a.ip(&["route", "add", "198.19.0.0/16", "via", B_V4]);
    a.ip(&[
        "-6",
        "route",
        "add",
        "2001:db8:1::/48",
        "via",
        "2001:db8::2",
    ]);

    let mut uplink = b
        .enter(|| UplinkProgram::attach("b0", AttachMode::Native))
        .expect("attach uplink program");
    let v4_prefix: IpAddr = "198.19.0.0".parse().unwrap();
    uplink.add_prefix(v4_prefix, 16).expect("add v4 prefix");
    uplink
        .add_prefix("2001:db8:1::".parse().unwrap(), 48)
        .expect("add v6 prefix");

    // The node's own traffic is untouched.
    assert!(ping(&a, &[], 2, B_V4));
    assert!(ping(&a, &["-6"], 2, "2001:db8::2"));
    let s0 = uplink.stats().expect("stats");
    assert_eq!((s0.redirected, s0.no_socket), (0, 0), "{s0:?}");
    assert!(s0.not_engine >= 4, "{s0:?}");
    assert!(s0.non_ip >= 1, "ARP: {s0:?}");

    // Engine-owned destinations, both families: engine-bound, passed for want of a socket.
    ping(&a, &[], 2, "198.19.0.5");
    ping(&a, &["-6"], 2, "2001:db8:1::5");
    let s1 = uplink.stats().expect("stats");
    assert!(s1.no_socket >= 4, "{s1:?}");

    // After removal the prefix is the kernel's again.
    uplink
        .remove_prefix(v4_prefix, 16)
        .expect("remove v4 prefix");
    ping(&a, &[], 2, "198.19.0.5");
    let s2 = uplink.stats().expect("stats");
    assert_eq!(s2.no_socket, s1.no_socket, "{s2:?}");
    assert!(s2.not_engine >= s1.not_engine + 2, "{s2:?}");
    let err = uplink.remove_prefix(v4_prefix, 16).unwrap_err();
    assert!(err.to_string().contains("engine_dests"), "{err}");

    // Node ports: only the registered (protocol, port) on a node address is engine-bound.
    uplink
        .add_node_address(B_V4.parse().unwrap())
        .expect("node address");
    uplink
        .add_port(L4Proto::Udp, 4789, PortKind::Tunnel)
        .expect("add port");
    a.enter(|| {
        let udp = UdpSocket::bind(format!("{A_V4}:0")).expect("bind in a");
        udp.send_to(b"engine", format!("{B_V4}:4789"))
            .expect("send 4789");
        udp.send_to(b"kernel", format!("{B_V4}:4790"))
            .expect("send 4790");
    });
    let s3 = uplink.stats().expect("stats");
    assert_eq!(s3.no_socket, s2.no_socket + 1, "{s3:?}");
    assert!(s3.not_engine > s2.not_engine, "{s3:?}");
    assert!(
        ping(&a, &[], 1, B_V4),
        "ICMP to the node address is not a port"
    );

    uplink.remove_port(L4Proto::Udp, 4789).expect("remove port");
    uplink
        .remove_node_address(B_V4.parse().unwrap())
        .expect("remove node address");
    drop(uplink);
    assert!(!has_xdp(&b.link_details("b0")));
}

#[test]
fn attaching_to_a_missing_interface_names_it() {
    if !root_or_skip("attaching_to_a_missing_interface_names_it") {
        return;
    }
    let ns = NetNs::new();
    let err = ns
        .enter(|| UplinkProgram::attach("eth9", AttachMode::Native))
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "no network interface named \"eth9\" in this network namespace (for XDP program sluice_uplink)"
    );
}
