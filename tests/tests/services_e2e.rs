//! The upstream Kubernetes e2e Services cases (test/e2e/network/service.go),
//! ported to the lab: one test function per upstream case, named after it,
//! asserting what the upstream body asserts (through the dataplane, since the
//! lab has no Endpoints API: "endpoints are {pod1}" becomes "only pod1
//! answers", "no endpoints" becomes "refused"). One node, so "another node"
//! is an EndpointSlice endpoint with another nodeName. docs/services-e2e.md
//! lists them with their status.

use std::net::IpAddr;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use sluice_lab::services::{
    cluster_ipv4, ContainerPort, EndpointSliceManifest, Place, PodManifest, ServiceManifest,
    ServicePort, ServiceType, SliceEndpoint,
};
use sluice_lab::{Lab, UPLINK_IPV4};
use sluice_tests::service_checks::{
    answers, expect_hosts, expect_refused, expect_unanswered, hostnames, root_or_skip, service_lab,
    Checks,
};

/// Upstream's AffinityConfirmCount: requests that must all hit one backend.
const AFFINITY_CONFIRM: usize = 15;
/// Short affinity timeout (upstream uses 10 s).
const AFFINITY_TIMEOUT_S: u32 = 4;
const OTHER_NODE: &str = "node-b";

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

fn pods_yaml(lab: &Lab, pods: Vec<PodManifest>) -> Result<()> {
    lab.write_pods(&pods)
}

/// Three netexec backends (pods 2-4, label svc=aff, HTTP 8080) and a service
/// `aff` on 10.96.2.<n>:80 (NodePort 30100+n when `node_port`).
fn affinity_lab(n: u8, node_port: bool, timeout: Option<u32>) -> (Lab, ServiceManifest) {
    let lab = service_lab(4, &[]);
    let mut pods = vec![PodManifest::lab_default(1)];
    for pod in 2..=4 {
        pods.push(PodManifest::serving(
            pod,
            ("svc", "aff"),
            vec![ContainerPort::tcp(8080)],
        ));
        lab.start_netexec(Place::Pod(pod), &format!("pod{pod}"), &[8080], &[])
            .unwrap();
    }
    pods_yaml(&lab, pods).unwrap();
    let mut port = ServicePort::tcp(80, 8080);
    let mut kind = ServiceType::ClusterIp;
    if node_port {
        port = port.with_node_port(30100 + u16::from(n));
        kind = ServiceType::NodePort;
    }
    let svc = ServiceManifest::cluster_ip("aff", &[ip(&format!("10.96.2.{n}"))], vec![port])
        .of_type(kind)
        .selecting("svc", "aff")
        .with_affinity(timeout);
    lab.apply_manifest("aff.yaml", &[svc.to_json()]).unwrap();
    (lab, svc)
}

/// Where the affinity tests' exec pod (pod1) sends its requests: the cluster
/// IP, or the node address and nodePort (upstream execAffinityTestForNonLBService).
fn affinity_target(svc: &ServiceManifest) -> (IpAddr, u16) {
    match svc.ports[0].node_port {
        Some(node_port) => (UPLINK_IPV4.into(), node_port),
        None => (svc.cluster_ips[0], svc.ports[0].port),
    }
}

/// Upstream checkAffinity: with `hold`, AFFINITY_CONFIRM requests all hit one
/// host; without, they hit more than one.
fn check_affinity(lab: &Lab, svc: &ServiceManifest, hold: bool) -> Result<()> {
    let (addr, port) = affinity_target(svc);
    let seen = hostnames(lab, Place::Pod(1), addr, port, AFFINITY_CONFIRM)?;
    if hold {
        ensure!(
            seen.len() == 1,
            "affinity should hold, answered by {seen:?}"
        );
    } else {
        ensure!(
            seen.len() > 1,
            "affinity should not hold, answered only by {seen:?}"
        );
    }
    Ok(())
}

/// execAffinityTestForNonLBService.
fn affinity_works(n: u8, node_port: bool) {
    let (lab, svc) = affinity_lab(n, node_port, Some(10800));
    check_affinity(&lab, &svc, true).unwrap();
}

/// execAffinityTestForSessionAffinityTimeout: sticky first; then, sleeping
/// past the timeout between requests, some request reaches another host.
fn affinity_times_out(n: u8, node_port: bool) {
    let (lab, svc) = affinity_lab(n, node_port, Some(AFFINITY_TIMEOUT_S));
    check_affinity(&lab, &svc, true).unwrap();
    let (addr, port) = affinity_target(&svc);
    let first = hostnames(&lab, Place::Pod(1), addr, port, 1).unwrap();
    let mut hosts = first.clone();
    for _ in 0..10 {
        std::thread::sleep(Duration::from_secs(u64::from(AFFINITY_TIMEOUT_S) + 1));
        hosts.extend(hostnames(&lab, Place::Pod(1), addr, port, 1).unwrap());
        if hosts.len() > 1 {
            return;
        }
    }
    panic!("Session is sticky after reaching the timeout: only {hosts:?}");
}

/// execAffinityTestForNonLBServiceWithTransition: ClientIP holds, None does
/// not, ClientIP again holds.
fn affinity_switches(n: u8, node_port: bool) {
    let (lab, svc) = affinity_lab(n, node_port, Some(10800));
    let mut checks = Checks::new();
    checks.run("ClientIP holds", || check_affinity(&lab, &svc, true));
    checks.run("None spreads", || {
        lab.apply_manifest("aff.yaml", &[svc.clone().with_affinity(None).to_json()])?;
        check_affinity(&lab, &svc, false)
    });
    checks.run("ClientIP again holds", || {
        lab.apply_manifest("aff.yaml", &[svc.to_json()])?;
        check_affinity(&lab, &svc, true)
    });
    checks.finish();
}

// Upstream: "should have session affinity work for service with type clusterIP"
#[test]
fn should_have_session_affinity_work_for_service_with_type_clusterip() {
    if root_or_skip("should_have_session_affinity_work_for_service_with_type_clusterip") {
        affinity_works(1, false);
    }
}

// Upstream: "should have session affinity work for NodePort service"
#[test]
fn should_have_session_affinity_work_for_nodeport_service() {
    if root_or_skip("should_have_session_affinity_work_for_nodeport_service") {
        affinity_works(2, true);
    }
}

// Upstream: "should have session affinity timeout work for service with type clusterIP"
#[test]
fn should_have_session_affinity_timeout_work_for_service_with_type_clusterip() {
    if root_or_skip("should_have_session_affinity_timeout_work_for_service_with_type_clusterip") {
        affinity_times_out(3, false);
    }
}

// Upstream: "should have session affinity timeout work for NodePort service"
#[test]
fn should_have_session_affinity_timeout_work_for_nodeport_service() {
    if root_or_skip("should_have_session_affinity_timeout_work_for_nodeport_service") {
        affinity_times_out(4, true);
    }
}

// Upstream: "should be able to switch session affinity for service with type clusterIP"
#[test]
fn should_be_able_to_switch_session_affinity_for_service_with_type_clusterip() {
    if root_or_skip("should_be_able_to_switch_session_affinity_for_service_with_type_clusterip") {
        affinity_switches(5, false);
    }
}

// Upstream: "should be able to switch session affinity for NodePort service"
#[test]
fn should_be_able_to_switch_session_affinity_for_nodeport_service() {
    if root_or_skip("should_be_able_to_switch_session_affinity_for_nodeport_service") {
        affinity_switches(6, true);
    }
}

// Upstream: "should serve a basic endpoint from pods"
#[test]
fn should_serve_a_basic_endpoint_from_pods() {
    if !root_or_skip("should_serve_a_basic_endpoint_from_pods") {
        return;
    }
    let lab = service_lab(3, &[]);
    for pod in [2, 3] {
        lab.start_netexec(Place::Pod(pod), &format!("pod{pod}"), &[80], &[])
            .unwrap();
    }
    let svc = ServiceManifest::cluster_ip(
        "endpoint-test2",
        &[cluster_ipv4(50)],
        vec![ServicePort::tcp(80, 80)],
    )
    .selecting("foo", "bar");
    lab.apply_manifest("svc.yaml", &[svc.to_json()]).unwrap();
    let member = |i| PodManifest::serving(i, ("foo", "bar"), vec![ContainerPort::tcp(80)]);
    let steps: [(&str, Vec<PodManifest>, &[&str]); 5] = [
        ("no pods", vec![PodManifest::lab_default(1)], &[]),
        (
            "pod2 created",
            vec![PodManifest::lab_default(1), member(2)],
            &["pod2"],
        ),
        (
            "pod3 created",
            vec![PodManifest::lab_default(1), member(2), member(3)],
            &["pod2", "pod3"],
        ),
        (
            "pod2 deleted",
            vec![PodManifest::lab_default(1), member(3)],
            &["pod3"],
        ),
        ("pod3 deleted", vec![PodManifest::lab_default(1)], &[]),
    ];
    let mut checks = Checks::new();
    for (step, pods, expected) in steps {
        checks.run(step, || {
            lab.write_pods(&pods)?;
            if expected.is_empty() {
                return expect_refused(
                    &lab.http_get(Place::Pod(1), cluster_ipv4(50), 80, "/hostname")?,
                    step,
                );
            }
            expect_hosts(
                &hostnames(&lab, Place::Pod(1), cluster_ipv4(50), 80, 16)?,
                expected,
                step,
            )
        });
    }
    checks.finish();
}

// Upstream: "should serve multiport endpoints from pods"
#[test]
fn should_serve_multiport_endpoints_from_pods() {
    if !root_or_skip("should_serve_multiport_endpoints_from_pods") {
        return;
    }
    let lab = service_lab(3, &[]);
    lab.start_netexec(Place::Pod(2), "pod2", &[100], &[])
        .unwrap();
    lab.start_netexec(Place::Pod(3), "pod3", &[101], &[])
        .unwrap();
    let svc = ServiceManifest::cluster_ip(
        "multi-endpoint-test",
        &[cluster_ipv4(51)],
        vec![
            ServicePort::tcp(80, 0)
                .named("portname1")
                .to_named_target("svc1"),
            ServicePort::tcp(81, 0)
                .named("portname2")
                .to_named_target("svc2"),
        ],
    )
    .selecting("foo", "bar");
    lab.apply_manifest("svc.yaml", &[svc.to_json()]).unwrap();
    let pod2 = PodManifest::serving(
        2,
        ("foo", "bar"),
        vec![ContainerPort::tcp(100).named("svc1")],
    );
    let pod3 = PodManifest::serving(
        3,
        ("foo", "bar"),
        vec![ContainerPort::tcp(101).named("svc2")],
    );
    let client = PodManifest::lab_default(1);
    // (step, pods, who answers on 80, who on 81)
    type Step<'a> = (&'a str, Vec<PodManifest>, Option<&'a str>, Option<&'a str>);
    let steps: [Step; 5] = [
        ("no pods", vec![client.clone()], None, None),
        (
            "pod2 created",
            vec![client.clone(), pod2.clone()],
            Some("pod2"),
            None,
        ),
        (
            "pod3 created",
            vec![client.clone(), pod2, pod3.clone()],
            Some("pod2"),
            Some("pod3"),
        ),
        (
            "pod2 deleted",
            vec![client.clone(), pod3],
            None,
            Some("pod3"),
        ),
        ("pod3 deleted", vec![client], None, None),
    ];
    let mut checks = Checks::new();
    for (step, pods, on80, on81) in steps {
        checks.run(step, || {
            lab.write_pods(&pods)?;
            for (port, who) in [(80, on80), (81, on81)] {
                let what = format!("{step}, port {port}");
                match who {
                    Some(host) => expect_hosts(
                        &hostnames(&lab, Place::Pod(1), cluster_ipv4(51), port, 4)?,
                        &[host],
                        &what,
                    )?,
                    None => expect_refused(
                        &lab.http_get(Place::Pod(1), cluster_ipv4(51), port, "/hostname")?,
                        &what,
                    )?,
                }
            }
            Ok(())
        });
    }
    checks.finish();
}

// Upstream: "should be able to create a functioning NodePort service"
#[test]
fn should_be_able_to_create_a_functioning_nodeport_service() {
    if !root_or_skip("should_be_able_to_create_a_functioning_nodeport_service") {
        return;
    }
    let lab = service_lab(2, &[]);
    lab.start_netexec(Place::Pod(2), "pod2", &[8080], &[])
        .unwrap();
    lab.write_pods(&[
        PodManifest::lab_default(1),
        PodManifest::serving(2, ("svc", "np"), vec![ContainerPort::tcp(8080)]),
    ])
    .unwrap();
    let svc = ServiceManifest::cluster_ip(
        "nodeport-test",
        &[cluster_ipv4(52)],
        vec![ServicePort::tcp(80, 8080).with_node_port(30090)],
    )
    .of_type(ServiceType::NodePort)
    .selecting("svc", "np");
    lab.apply_manifest("svc.yaml", &[svc.to_json()]).unwrap();
    // jig.CheckServiceReachability: clusterIP:port and nodeIP:nodePort from an exec pod.
    let mut checks = Checks::new();
    for (what, from, addr, port) in [
        ("clusterIP from a pod", Place::Pod(1), cluster_ipv4(52), 80),
        (
            "nodeIP:nodePort from a pod",
            Place::Pod(1),
            UPLINK_IPV4.into(),
            30090,
        ),
        (
            "nodeIP:nodePort from outside",
            Place::Outside,
            UPLINK_IPV4.into(),
            30090,
        ),
    ] {
        checks.run(what, || {
            expect_hosts(&hostnames(&lab, from, addr, port, 4)?, &["pod2"], what)
        });
    }
    checks.finish();
}

// Upstream: "should serve endpoints on same port and different protocols"
#[test]
fn should_serve_endpoints_on_same_port_and_different_protocols() {
    if !root_or_skip("should_serve_endpoints_on_same_port_and_different_protocols") {
        return;
    }
    // Stricter than upstream (one pod serving both): TCP and UDP are served by
    // different backends, so a mix-up of the protocols shows.
    let lab = service_lab(3, &[]);
    lab.start_netexec(Place::Pod(2), "pod2-tcp", &[8053], &[])
        .unwrap();
    lab.start_netexec(Place::Pod(3), "pod3-udp", &[], &[8053])
        .unwrap();
    let svc = ServiceManifest::cluster_ip(
        "dns",
        &[cluster_ipv4(53)],
        vec![
            ServicePort::tcp(53, 8053).named("tcp-port"),
            ServicePort::udp(53, 8053).named("udp-port"),
        ],
    );
    let mut tcp =
        EndpointSliceManifest::new("dns", false, vec![(Some("tcp-port".into()), 8053, "TCP")])
            .with(SliceEndpoint::lab_pod(&lab, 2, false));
    tcp.name = "dns-tcp".into();
    let mut udp =
        EndpointSliceManifest::new("dns", false, vec![(Some("udp-port".into()), 8053, "UDP")])
            .with(SliceEndpoint::lab_pod(&lab, 3, false));
    udp.name = "dns-udp".into();
    lab.apply_manifest("svc.yaml", &[svc.to_json(), tcp.to_json(), udp.to_json()])
        .unwrap();
    let mut checks = Checks::new();
    checks.run("TCP 53", || {
        expect_hosts(
            &hostnames(&lab, Place::Pod(1), cluster_ipv4(53), 53, 4)?,
            &["pod2-tcp"],
            "TCP",
        )
    });
    checks.run("UDP 53", || {
        let reply = lab.udp_request(Place::Pod(1), cluster_ipv4(53), 53, "hostname")?;
        ensure!(reply.answer() == Some("pod3-udp"), "UDP got {reply:?}");
        Ok(())
    });
    checks.finish();
}

// Upstream: "should be rejected when no endpoints exist"
#[test]
fn should_be_rejected_when_no_endpoints_exist() {
    if !root_or_skip("should_be_rejected_when_no_endpoints_exist") {
        return;
    }
    let lab = service_lab(1, &[]);
    let svc = ServiceManifest::cluster_ip(
        "no-pods",
        &[cluster_ipv4(54)],
        vec![ServicePort::tcp(80, 80)],
    )
    .selecting("app", "no-pods");
    lab.apply_manifest("svc.yaml", &[svc.to_json()]).unwrap();
    // Upstream: `agnhost connect --timeout=3s <ip>:80` must fail with REFUSED.
    let reply = lab
        .http_get(Place::Pod(1), cluster_ipv4(54), 80, "/")
        .unwrap();
    expect_refused(&reply, "connect to a service without endpoints").unwrap();
}

// Upstream: "should preserve source pod IP for traffic thru service cluster IP"
#[test]
fn should_preserve_source_pod_ip_for_traffic_thru_service_cluster_ip() {
    if !root_or_skip("should_preserve_source_pod_ip_for_traffic_thru_service_cluster_ip") {
        return;
    }
    let lab = service_lab(3, &[]);
    lab.start_netexec(Place::Pod(2), "pod2", &[8080], &[])
        .unwrap();
    let svc = ServiceManifest::cluster_ip(
        "sourceip-test",
        &[cluster_ipv4(55)],
        vec![ServicePort::tcp(8080, 8080)],
    );
    let slice = EndpointSliceManifest::new("sourceip-test", false, vec![(None, 8080, "TCP")])
        .with(SliceEndpoint::lab_pod(&lab, 2, false));
    lab.apply_manifest("svc.yaml", &[svc.to_json(), slice.to_json()])
        .unwrap();
    let mut checks = Checks::new();
    for client in [1, 3] {
        checks.run(&format!("exec pod {client}"), || {
            let seen = answers(
                &lab,
                Place::Pod(client),
                cluster_ipv4(55),
                8080,
                "/clientip",
                1,
            )?;
            let pod_ip = lab.pod(client)?.ipv4.to_string();
            ensure!(
                seen[0].split(':').next() == Some(pod_ip.as_str()),
                "backend saw {}, the exec pod is {pod_ip}",
                seen[0]
            );
            Ok(())
        });
    }
    checks.finish();
}

// Upstream: "should be updated after adding or deleting ports"
#[test]
fn should_be_updated_after_adding_or_deleting_ports() {
    if !root_or_skip("should_be_updated_after_adding_or_deleting_ports") {
        return;
    }
    let lab = service_lab(2, &[]);
    lab.start_netexec(Place::Pod(2), "pod2", &[8080, 8081], &[])
        .unwrap();
    lab.write_pods(&[
        PodManifest::lab_default(1),
        PodManifest::serving(
            2,
            ("svc", "edit"),
            vec![ContainerPort::tcp(8080), ContainerPort::tcp(8081)],
        ),
    ])
    .unwrap();
    let one = ServiceManifest::cluster_ip(
        "edit-port-test",
        &[cluster_ipv4(56)],
        vec![ServicePort::tcp(80, 8080).named("tcp-port")],
    )
    .selecting("svc", "edit");
    let mut two = one.clone();
    two.ports
        .push(ServicePort::tcp(81, 8081).named("tcp-port-2"));
    let mut second_only = one.clone();
    second_only.ports = vec![ServicePort::tcp(81, 8081).named("tcp-port-2")];
    let vip = cluster_ipv4(56);
    let mut checks = Checks::new();
    checks.run("one port", || {
        lab.apply_manifest("svc.yaml", &[one.to_json()])?;
        expect_hosts(
            &hostnames(&lab, Place::Pod(1), vip, 80, 2)?,
            &["pod2"],
            "port 80",
        )?;
        expect_unanswered(
            &lab.http_get(Place::Pod(1), vip, 81, "/hostname")?,
            "port 81 before it is added",
        )
    });
    checks.run("port added", || {
        lab.apply_manifest("svc.yaml", &[two.to_json()])?;
        expect_hosts(
            &hostnames(&lab, Place::Pod(1), vip, 80, 2)?,
            &["pod2"],
            "port 80",
        )?;
        expect_hosts(
            &hostnames(&lab, Place::Pod(1), vip, 81, 2)?,
            &["pod2"],
            "port 81",
        )
    });
    checks.run("first port deleted", || {
        lab.apply_manifest("svc.yaml", &[second_only.to_json()])?;
        expect_unanswered(
            &lab.http_get(Place::Pod(1), vip, 80, "/hostname")?,
            "deleted port 80",
        )?;
        expect_hosts(
            &hostnames(&lab, Place::Pod(1), vip, 81, 2)?,
            &["pod2"],
            "port 81",
        )
    });
    checks.finish();
}

// Upstream: "should allow pods to hairpin back to themselves through services"
#[test]
fn should_allow_pods_to_hairpin_back_to_themselves_through_services() {
    if !root_or_skip("should_allow_pods_to_hairpin_back_to_themselves_through_services") {
        return;
    }
    let lab = service_lab(2, &[]);
    lab.start_netexec(Place::Pod(2), "pod2", &[8080], &[])
        .unwrap();
    lab.write_pods(&[
        PodManifest::lab_default(1),
        PodManifest::serving(2, ("svc", "hairpin"), vec![ContainerPort::tcp(8080)]),
    ])
    .unwrap();
    let vip = cluster_ipv4(57);
    let svc =
        ServiceManifest::cluster_ip("hairpin-test", &[vip], vec![ServicePort::tcp(8080, 8080)])
            .selecting("svc", "hairpin");
    lab.apply_manifest("svc.yaml", &[svc.to_json()]).unwrap();
    let mut checks = Checks::new();
    checks.run("the service answers", || {
        expect_hosts(
            &hostnames(&lab, Place::Pod(1), vip, 8080, 2)?,
            &["pod2"],
            "service",
        )
    });
    checks.run("the backend dials itself through the service", || {
        // Upstream: GET /dial?host=<svc>&port=8080&request=/hostname on the
        // service must answer {"responses":["<pod>"]}.
        let path = format!("/dial?host={vip}&port=8080&request=%2Fhostname&protocol=http");
        let seen = answers(&lab, Place::Pod(1), vip, 8080, &path, 1)?;
        ensure!(
            seen[0] == r#"{"responses":["pod2"]}"#,
            "hairpin dial answered {}",
            seen[0]
        );
        Ok(())
    });
    checks.run(
        "the backend reaches itself directly and sees a sane client",
        || {
            let seen = answers(&lab, Place::Pod(2), vip, 8080, "/clientip", 1)?;
            let client = seen[0].split(':').next().unwrap_or_default().to_string();
            let pod2 = lab.pod(2)?.ipv4.to_string();
            ensure!(
                client == vip.to_string() || client == pod2,
                "hairpin client shown as {client}, expected {vip} or {pod2}"
            );
            Ok(())
        },
    );
    checks.finish();
}

// Upstream: "should work after the service has been recreated"
#[test]
fn should_work_after_the_service_has_been_recreated() {
    if !root_or_skip("should_work_after_the_service_has_been_recreated") {
        return;
    }
    let lab = service_lab(2, &[]);
    lab.start_netexec(Place::Pod(2), "pod2", &[8080], &[])
        .unwrap();
    let vip = cluster_ipv4(58);
    let svc = ServiceManifest::cluster_ip("recreate", &[vip], vec![ServicePort::tcp(80, 8080)]);
    let slice = EndpointSliceManifest::new("recreate", false, vec![(None, 8080, "TCP")])
        .with(SliceEndpoint::lab_pod(&lab, 2, false));
    let docs = [svc.to_json(), slice.to_json()];
    let mut checks = Checks::new();
    checks.run("created", || {
        lab.apply_manifest("svc.yaml", &docs)?;
        expect_hosts(
            &hostnames(&lab, Place::Pod(1), vip, 80, 2)?,
            &["pod2"],
            "created",
        )
    });
    checks.run("deleted", || {
        lab.remove_manifest("svc.yaml")?;
        expect_unanswered(
            &lab.http_get(Place::Pod(1), vip, 80, "/hostname")?,
            "deleted",
        )
    });
    checks.run("recreated", || {
        lab.apply_manifest("svc.yaml", &docs)?;
        expect_hosts(
            &hostnames(&lab, Place::Pod(1), vip, 80, 2)?,
            &["pod2"],
            "recreated",
        )
    });
    checks.finish();
}

/// A service `name` on `vip`:80 (NodePort `node_port`) with a slice of
/// `local` (pod2, here) and a ready endpoint on another node.
fn policy_lab(
    name: &str,
    vip: IpAddr,
    node_port: Option<u16>,
    local: Option<SliceEndpoint>,
    customize: impl FnOnce(ServiceManifest) -> ServiceManifest,
) -> (Lab, ServiceManifest) {
    let lab = service_lab(2, &[]);
    lab.start_netexec(Place::Pod(2), "pod2", &[8080], &[])
        .unwrap();
    let mut port = ServicePort::tcp(80, 8080);
    let mut svc_type = ServiceType::ClusterIp;
    if let Some(np) = node_port {
        port = port.with_node_port(np);
        svc_type = ServiceType::NodePort;
    }
    let svc = customize(ServiceManifest::cluster_ip(name, &[vip], vec![port]).of_type(svc_type));
    let mut slice = EndpointSliceManifest::new(name, false, vec![(None, 8080, "TCP")])
        .with(SliceEndpoint::remote(ip("10.201.0.5"), OTHER_NODE));
    let local = local.unwrap_or_else(|| SliceEndpoint::lab_pod(&lab, 2, false));
    slice.endpoints.push(local);
    lab.apply_manifest("svc.yaml", &[svc.to_json(), slice.to_json()])
        .unwrap();
    (lab, svc)
}

/// Only the remote endpoint in the slice of `svc`.
fn only_remote(lab: &Lab, svc: &ServiceManifest) -> Result<()> {
    let slice = EndpointSliceManifest::new(&svc.name, false, vec![(None, 8080, "TCP")])
        .with(SliceEndpoint::remote(ip("10.201.0.5"), OTHER_NODE));
    lab.apply_manifest("svc.yaml", &[svc.to_json(), slice.to_json()])
        .context("slice with the remote endpoint only")
}

// Upstream: "should respect internalTrafficPolicy=Local Pod to Pod"
#[test]
fn should_respect_internal_traffic_policy_local_pod_to_pod() {
    if !root_or_skip("should_respect_internal_traffic_policy_local_pod_to_pod") {
        return;
    }
    let vip = cluster_ipv4(59);
    let (lab, svc) = policy_lab("itp-local", vip, None, None, |s| {
        s.with_internal_traffic_local()
    });
    let mut checks = Checks::new();
    checks.run("a pod on the endpoint's node reaches only it", || {
        expect_hosts(
            &hostnames(&lab, Place::Pod(1), vip, 80, 16)?,
            &["pod2"],
            "ITP Local",
        )
    });
    checks.run("a pod on a node without endpoints fails", || {
        only_remote(&lab, &svc)?;
        expect_unanswered(
            &lab.http_get(Place::Pod(1), vip, 80, "/hostname")?,
            "no local endpoint",
        )
    });
    checks.finish();
}

// Upstream: "should fallback to local terminating endpoints when there are no ready endpoints with externalTrafficPolicy=Local"
#[test]
fn should_fallback_to_local_terminating_endpoints_when_there_are_no_ready_endpoints_with_external_traffic_policy_local(
) {
    if !root_or_skip("should_fallback_to_local_terminating_endpoints_when_there_are_no_ready_endpoints_with_external_traffic_policy_local") {
        return;
    }
    let vip = cluster_ipv4(60);
    let (lab, svc) = policy_lab("etp-fallback", vip, Some(30110), None, |s| {
        s.with_external_traffic_local()
    });
    let terminating = SliceEndpoint::lab_pod(&lab, 2, false).terminating();
    let slice = EndpointSliceManifest::new("etp-fallback", false, vec![(None, 8080, "TCP")])
        .with(SliceEndpoint::remote(ip("10.201.0.5"), OTHER_NODE))
        .with(terminating);
    lab.apply_manifest("svc.yaml", &[svc.to_json(), slice.to_json()])
        .unwrap();
    let mut checks = Checks::new();
    checks.run("the node with the terminating endpoint serves it", || {
        let seen = hostnames(&lab, Place::Outside, UPLINK_IPV4.into(), 30110, 16)?;
        expect_hosts(&seen, &["pod2"], "ETP Local, local endpoint terminating")
    });
    checks.run("a node without local endpoints does not serve", || {
        only_remote(&lab, &svc)?;
        expect_unanswered(
            &lab.http_get(Place::Outside, UPLINK_IPV4.into(), 30110, "/hostname")?,
            "no local endpoint",
        )
    });
    checks.finish();
}

// Upstream: "should fallback to local terminating endpoints when there are no ready endpoints with internalTrafficPolicy=Local"
#[test]
fn should_fallback_to_local_terminating_endpoints_when_there_are_no_ready_endpoints_with_internal_traffic_policy_local(
) {
    if !root_or_skip("should_fallback_to_local_terminating_endpoints_when_there_are_no_ready_endpoints_with_internal_traffic_policy_local") {
        return;
    }
    let vip = cluster_ipv4(61);
    let (lab, svc) = policy_lab("itp-fallback", vip, None, None, |s| {
        s.with_internal_traffic_local()
    });
    let terminating = SliceEndpoint::lab_pod(&lab, 2, false).terminating();
    let slice = EndpointSliceManifest::new("itp-fallback", false, vec![(None, 8080, "TCP")])
        .with(SliceEndpoint::remote(ip("10.201.0.5"), OTHER_NODE))
        .with(terminating);
    lab.apply_manifest("svc.yaml", &[svc.to_json(), slice.to_json()])
        .unwrap();
    let mut checks = Checks::new();
    checks.run(
        "a pod on the node with the terminating endpoint reaches it",
        || {
            let seen = hostnames(&lab, Place::Pod(1), vip, 80, 16)?;
            expect_hosts(&seen, &["pod2"], "ITP Local, local endpoint terminating")
        },
    );
    checks.run("a pod on a node without local endpoints fails", || {
        only_remote(&lab, &svc)?;
        expect_unanswered(
            &lab.http_get(Place::Pod(1), vip, 80, "/hostname")?,
            "no local endpoint",
        )
    });
    checks.finish();
}
