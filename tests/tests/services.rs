//! Services through the real engine and agent: Services and EndpointSlices
//! written into the lab's manifest directory, real HTTP/UDP servers (a netexec
//! stand-in, nginx, iperf3) in pod namespaces, clients in pods and in the
//! outside namespace.
//!
//! - Every Service type answers: ClusterIP (IPv4, IPv6) from a pod; NodePort,
//!   LoadBalancer ingress IP and externalIP from the outside.
//! - externalTrafficPolicy=Local keeps outside traffic on this node's endpoints.
//! - A service without endpoints rejects: TCP RST, UDP port unreachable.
//! - A long TCP connection survives backend churn and its backend terminating;
//!   new connections then go elsewhere.
//! - Pod traffic to the outside is masqueraded to the node's uplink address.

use std::net::IpAddr;
use std::time::Duration;

use anyhow::{bail, ensure, Context};
use sluice_lab::services::{
    cluster_ipv4, cluster_ipv6, ContainerPort, EndpointSliceManifest, Place, PodManifest, Reply,
    ServiceManifest, ServicePort, ServiceType, SliceEndpoint,
};
use sluice_lab::{parse_iperf3, UPLINK_IPV4, UPLINK_IPV6};
use sluice_tests::service_checks::{
    expect_hosts, expect_refused, expect_unanswered, hostnames, root_or_skip, service_lab, Checks,
};

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

/// Requests per check of which backends answer.
const TRIES: usize = 16;
/// A node that is not the lab's, for endpoints elsewhere.
const OTHER_NODE: &str = "node-b";

#[test]
fn every_service_type_reaches_its_backends_over_ipv4_and_ipv6() {
    if !root_or_skip("every_service_type_reaches_its_backends_over_ipv4_and_ipv6") {
        return;
    }
    // pod1 client, pod2 and pod3 behind `web` (selector), pod4 nginx behind `plain` (slice).
    let lab = service_lab(4, &[]);
    let http = || vec![ContainerPort::tcp(8080).named("http")];
    lab.write_pods(&[
        PodManifest::lab_default(1),
        PodManifest::serving(2, ("svc", "web"), http()),
        PodManifest::serving(3, ("svc", "web"), http()),
        PodManifest::lab_default(4),
    ])
    .unwrap();
    for pod in [2, 3] {
        lab.start_netexec(Place::Pod(pod), &format!("pod{pod}"), &[8080], &[])
            .unwrap();
    }
    lab.start_nginx(4, 80, "nginx pod4").unwrap();
    let (lb4, lb6) = (ip("192.168.100.10"), ip("fd00:100::10"));
    let (ext4, ext6) = (ip("192.168.101.10"), ip("fd00:101::10"));
    let web = ServiceManifest::cluster_ip(
        "web",
        &[cluster_ipv4(10), cluster_ipv6(0x10)],
        vec![ServicePort::tcp(80, 0)
            .named("http")
            .to_named_target("http")
            .with_node_port(30080)],
    )
    .of_type(ServiceType::LoadBalancer)
    .selecting("svc", "web")
    .with_load_balancer_ips(&[lb4, lb6])
    .with_external_ips(&[ext4, ext6]);
    let plain =
        ServiceManifest::cluster_ip("plain", &[cluster_ipv4(11)], vec![ServicePort::tcp(80, 80)]);
    let plain_slice = EndpointSliceManifest::new("plain", false, vec![(None, 80, "TCP")])
        .with(SliceEndpoint::lab_pod(&lab, 4, false));
    lab.apply_manifest(
        "services.yaml",
        &[web.to_json(), plain.to_json(), plain_slice.to_json()],
    )
    .unwrap();
    for addr in [lb4, lb6, ext4, ext6] {
        lab.route_from_outside(addr).unwrap();
    }

    let both = ["pod2", "pod3"];
    let mut checks = Checks::new();
    for (what, from, addr, port) in [
        (
            "ClusterIP IPv4 from a pod",
            Place::Pod(1),
            cluster_ipv4(10),
            80,
        ),
        (
            "ClusterIP IPv6 from a pod",
            Place::Pod(1),
            cluster_ipv6(0x10),
            80,
        ),
        (
            "NodePort IPv4 from outside",
            Place::Outside,
            UPLINK_IPV4.into(),
            30080,
        ),
        (
            "NodePort IPv6 from outside",
            Place::Outside,
            UPLINK_IPV6.into(),
            30080,
        ),
        ("LoadBalancer IPv4 from outside", Place::Outside, lb4, 80),
        ("LoadBalancer IPv6 from outside", Place::Outside, lb6, 80),
        ("externalIP IPv4 from outside", Place::Outside, ext4, 80),
        ("externalIP IPv6 from outside", Place::Outside, ext6, 80),
    ] {
        checks.run(what, || {
            expect_hosts(&hostnames(&lab, from, addr, port, TRIES)?, &both, what)
        });
    }
    checks.run(
        "nginx behind a ClusterIP with a hand-written EndpointSlice",
        || {
            let reply = lab.http_get(Place::Pod(1), cluster_ipv4(11), 80, "/")?;
            ensure!(reply == Reply::Answer("nginx pod4".into()), "got {reply:?}");
            Ok(())
        },
    );
    checks.run("the ClusterIP is not served on the node port", || {
        // A frontend is (address, port): the cluster IP on the nodePort is nothing.
        expect_unanswered(
            &lab.http_get(Place::Pod(1), cluster_ipv4(10), 30080, "/hostname")?,
            "ClusterIP on the nodePort",
        )
    });
    checks.finish();
}

#[test]
fn external_traffic_policy_local_keeps_outside_traffic_on_local_endpoints() {
    if !root_or_skip("external_traffic_policy_local_keeps_outside_traffic_on_local_endpoints") {
        return;
    }
    let lab = service_lab(2, &[]);
    lab.start_netexec(Place::Pod(2), "pod2", &[8080], &[])
        .unwrap();
    let lb4 = ip("192.168.100.20");
    let svc = ServiceManifest::cluster_ip(
        "local",
        &[cluster_ipv4(20), cluster_ipv6(0x20)],
        vec![ServicePort::tcp(80, 8080).with_node_port(30081)],
    )
    .of_type(ServiceType::LoadBalancer)
    .with_load_balancer_ips(&[lb4])
    .with_external_traffic_local();
    // One endpoint here, one on another node (unreachable from this lab: a
    // request balanced to it would time out).
    let v4 = EndpointSliceManifest::new("local", false, vec![(None, 8080, "TCP")])
        .with(SliceEndpoint::lab_pod(&lab, 2, false))
        .with(SliceEndpoint::remote(ip("10.201.0.5"), OTHER_NODE));
    let v6 = EndpointSliceManifest::new("local", true, vec![(None, 8080, "TCP")])
        .with(SliceEndpoint::lab_pod(&lab, 2, true))
        .with(SliceEndpoint::remote(ip("fd00:201::5"), OTHER_NODE));
    lab.apply_manifest("local.yaml", &[svc.to_json(), v4.to_json(), v6.to_json()])
        .unwrap();
    lab.route_from_outside(lb4).unwrap();

    let mut checks = Checks::new();
    for (what, addr, port) in [
        ("NodePort IPv4", IpAddr::from(UPLINK_IPV4), 30081),
        ("NodePort IPv6", IpAddr::from(UPLINK_IPV6), 30081),
        ("LoadBalancer IPv4", lb4, 80),
    ] {
        checks.run(what, || {
            let seen = hostnames(&lab, Place::Outside, addr, port, TRIES)?;
            expect_hosts(&seen, &["pod2"], what)
        });
    }
    checks.run(
        "the client address is preserved (no SNAT with Local)",
        || {
            let reply = lab.http_get(Place::Outside, UPLINK_IPV4.into(), 30081, "/clientip")?;
            let text = reply.answer().context("no answer")?.to_string();
            ensure!(text.starts_with("192.168.254.2:"), "backend saw {text}");
            Ok(())
        },
    );
    checks.finish();
}

#[test]
fn services_without_endpoints_reject_tcp_and_udp_over_ipv4_and_ipv6() {
    if !root_or_skip("services_without_endpoints_reject_tcp_and_udp_over_ipv4_and_ipv6") {
        return;
    }
    let lab = service_lab(1, &[]);
    let svc = ServiceManifest::cluster_ip(
        "empty",
        &[cluster_ipv4(30), cluster_ipv6(0x30)],
        vec![
            ServicePort::tcp(80, 8080)
                .named("http")
                .with_node_port(30082),
            ServicePort::udp(5353, 5353).named("dns"),
        ],
    )
    .of_type(ServiceType::NodePort)
    .selecting("app", "nothing-matches");
    lab.apply_manifest("empty.yaml", &[svc.to_json()]).unwrap();

    let mut checks = Checks::new();
    for addr in [cluster_ipv4(30), cluster_ipv6(0x30)] {
        checks.run(&format!("TCP to {addr} is refused"), || {
            expect_refused(&lab.http_get(Place::Pod(1), addr, 80, "/")?, "TCP")
        });
        checks.run(&format!("UDP to {addr} gets port unreachable"), || {
            expect_refused(
                &lab.udp_request(Place::Pod(1), addr, 5353, "hostname")?,
                "UDP",
            )
        });
    }
    checks.run("TCP to the NodePort from outside is refused", || {
        expect_refused(
            &lab.http_get(Place::Outside, UPLINK_IPV4.into(), 30082, "/")?,
            "NodePort",
        )
    });
    checks.finish();
}

#[test]
fn a_long_tcp_connection_survives_backend_churn_and_termination() {
    if !root_or_skip("a_long_tcp_connection_survives_backend_churn_and_termination") {
        return;
    }
    // pod1 client; A = pod2, B = pod3, C = pod4.
    let lab = service_lab(4, &[]);
    for pod in [2, 3, 4] {
        lab.start_iperf3_server(pod, 5201).unwrap();
        lab.start_netexec(Place::Pod(pod), &format!("pod{pod}"), &[8080], &[])
            .unwrap();
    }
    let svc = ServiceManifest::cluster_ip(
        "stream",
        &[cluster_ipv4(40)],
        vec![
            ServicePort::tcp(5201, 5201).named("iperf"),
            ServicePort::tcp(80, 8080).named("http"),
        ],
    );
    let ports = vec![
        (Some("iperf".to_string()), 5201, "TCP"),
        (Some("http".to_string()), 8080, "TCP"),
    ];
    let slice = |endpoints: Vec<SliceEndpoint>| {
        let mut s = EndpointSliceManifest::new("stream", false, ports.clone());
        s.endpoints = endpoints;
        s.to_json()
    };
    let a = SliceEndpoint::lab_pod(&lab, 2, false);
    let b = SliceEndpoint::lab_pod(&lab, 3, false);
    let c = SliceEndpoint::lab_pod(&lab, 4, false);
    lab.apply_manifest("stream.yaml", &[svc.to_json(), slice(vec![a.clone()])])
        .unwrap();

    let target = cluster_ipv4(40).to_string();
    #[rustfmt::skip]
    let client = lab.spawn(1, "iperf3-long", &[
        "iperf3", "-c", &target, "-p", "5201", "-t", "20", "--json", "--connect-timeout", "3000",
    ]).unwrap();
    std::thread::sleep(Duration::from_secs(3));
    let mut checks = Checks::new();
    checks.run("add B, then replace B with C", || {
        lab.apply_manifest(
            "stream.yaml",
            &[svc.to_json(), slice(vec![a.clone(), b.clone()])],
        )?;
        std::thread::sleep(Duration::from_secs(3));
        lab.apply_manifest(
            "stream.yaml",
            &[svc.to_json(), slice(vec![a.clone(), c.clone()])],
        )?;
        std::thread::sleep(Duration::from_secs(3));
        Ok(())
    });
    checks.run("A terminating: new connections go to C only", || {
        let terminating = a.clone().terminating();
        lab.apply_manifest(
            "stream.yaml",
            &[svc.to_json(), slice(vec![terminating, c.clone()])],
        )?;
        let seen = hostnames(&lab, Place::Pod(1), cluster_ipv4(40), 80, TRIES)?;
        expect_hosts(&seen, &["pod4"], "new connections after A terminates")
    });
    checks.run("the iperf3 stream to A completes without error", || {
        let status = lab
            .wait_process(client, Duration::from_secs(40))?
            .context("iperf3 still running 40 s after the churn")?;
        let out = std::fs::read_to_string(lab.run_dir().join("iperf3-long.stdout.log"))?;
        let result = parse_iperf3(&out).with_context(|| lab.log_tail("iperf3-long", 20))?;
        ensure!(status.success(), "iperf3 exited {status}: {result:?}");
        if result.seconds < 19.0 {
            bail!("the stream lasted {} s of 20", result.seconds);
        }
        Ok(())
    });
    checks.finish();
}

#[test]
fn pods_are_masqueraded_to_the_outside_as_the_node() {
    if !root_or_skip("pods_are_masqueraded_to_the_outside_as_the_node") {
        return;
    }
    let lab = service_lab(1, &["--enable-masquerade"]);
    lab.start_netexec(Place::Outside, "outside", &[8080], &[])
        .unwrap();
    let mut checks = Checks::new();
    for (server, node) in [
        (
            sluice_lab::OUTSIDE_IPV4.to_string(),
            UPLINK_IPV4.to_string(),
        ),
        (
            format!("[{}]", sluice_lab::OUTSIDE_IPV6),
            format!("[{UPLINK_IPV6}]"),
        ),
    ] {
        checks.run(&format!("pod -> {server} is seen from {node}"), || {
            let addr: IpAddr = server.trim_matches(['[', ']']).parse()?;
            let reply = lab.http_get(Place::Pod(1), addr, 8080, "/clientip")?;
            let text = reply.answer().context(format!("{reply:?}"))?.to_string();
            let port: u16 = text
                .strip_prefix(&format!("{node}:"))
                .with_context(|| format!("the server saw {text}, not the node {node}"))?
                .parse()?;
            // Cilium's default masquerade range (--masquerade-ports 61000-65535).
            ensure!(
                (61000..=65535).contains(&port),
                "masquerade port {port} outside 61000-65535"
            );
            Ok(())
        });
    }
    checks.finish();
}
