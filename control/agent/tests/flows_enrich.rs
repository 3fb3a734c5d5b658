//! Engine flow events -> Hubble flow JSON, compared whole: a small cluster
//! (two local pods, one pod on another node, a CiliumNetworkPolicy with a
//! UID) resolved through the agent's real desired-state code, then one engine
//! event of each kind enriched against it.

use serde_json::{json, Value};
use sluice_agent::attachments::Attachments;
use sluice_agent::desired::{pod_cidrs, resolve, NodeConfig};
use sluice_agent::flows::context::FlowContext;
use sluice_agent::flows::enrich::enrich;
use sluice_agent::identity::IdentityAllocator;
use sluice_agent::lb_ids::LbIds;
use sluice_agent::objects::{CiliumPolicy, Object};
use sluice_agent::store::Store;
use sluice_api::agent::{host_ifname, Attachment, PodRef, RegisteredEndpoint};
use sluice_api::events::Direction;
use sluice_api::events::{
    CtState, DnsEvent, DropInfo, EngineFlow, FlowKind, FlowTuple, FlowVerdict, PolicyOutcome,
    RuleRef,
};
use sluice_tables::{Cidr, MacAddr};

const CLIENT: &str = "10.1.0.2";
const WEB: &str = "10.1.0.3";
const REMOTE_DNS: &str = "10.2.0.5";
const CLIENT_IF: u32 = 11;
const WEB_IF: u32 = 12;
/// 2026-11-18T11:06:40.123456789Z
const T: u64 = 1_795_000_000_123_456_789;

fn config() -> NodeConfig {
    NodeConfig {
        node_name: "node1".into(),
        cluster_name: "default".into(),
        gateway_mac: MacAddr([2, 0x53, 0x4c, 0, 0, 1]),
        mtu: 1500,
        veth_queues: 1,
        pod_cidrs: vec![Cidr::parse("10.1.0.0/24").unwrap()],
        uplink: None,
        services: Default::default(),
        lb: Default::default(),
        policy: Default::default(),
    }
}

fn pod(name: &str, ip: &str) -> Object {
    Object::Pod(
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "default", "labels": {"app": name}},
            "status": {"podIPs": [{"ip": ip}]}
        }))
        .unwrap(),
    )
}

fn context() -> FlowContext {
    let config = config();
    let mut store = Store::default();
    store.upsert(pod("client", CLIENT));
    store.upsert(pod("web", WEB));
    store.upsert(pod("dns", REMOTE_DNS));
    store.upsert(Object::CiliumNetworkPolicy(
        serde_json::from_value::<CiliumPolicy>(json!({
            "metadata": {"name": "web-ingress", "namespace": "default", "uid": "6b2c-uid"},
            "spec": {
                "endpointSelector": {"matchLabels": {"app": "web"}},
                "ingress": [{"fromEndpoints": [{"matchLabels": {"app": "client"}}]}]
            }
        }))
        .unwrap(),
    ));
    let mut attachments = Attachments::in_memory();
    for (name, ifindex, ip) in [("client", CLIENT_IF, CLIENT), ("web", WEB_IF, WEB)] {
        let attachment = Attachment {
            container_id: format!("c-{name}"),
            ifname: "eth0".into(),
        };
        let cidrs = pod_cidrs(&store, &config);
        let record = attachments
            .allocate(
                &attachment,
                Some(PodRef {
                    namespace: "default".into(),
                    name: name.into(),
                }),
                "/proc/1/ns/net",
                &cidrs,
            )
            .unwrap();
        assert_eq!(record.ipv4.unwrap().to_string(), ip, "IPAM order changed");
        assert!(attachments.register(RegisteredEndpoint {
            host_ifname: host_ifname(&attachment),
            attachment,
            host_ifindex: ifindex,
            container_mac: MacAddr([2, 0, 0, 0, 0, ifindex as u8]),
        }));
    }
    let mut ids = IdentityAllocator::in_memory();
    let mut lb_ids = LbIds::in_memory();
    let desired = resolve(&store, &attachments, &config, &mut ids, &mut lb_ids).unwrap();
    FlowContext::build(&desired, &store, &config.node_name, 7)
}

fn tuple(src: &str, src_port: u16, dst: &str, dst_port: u16, protocol: u8) -> FlowTuple {
    FlowTuple {
        src: src.parse().unwrap(),
        dst: dst.parse().unwrap(),
        src_port,
        dst_port,
        protocol,
    }
}

/// A forwarded TCP SYN from client to web, delivered to web's veth.
fn event(kind: FlowKind) -> EngineFlow {
    EngineFlow {
        time_unix_ns: T,
        worker: 1,
        kind,
        verdict: FlowVerdict::Forwarded,
        drop_reason: None,
        ingress_ifindex: CLIENT_IF,
        ingress_ifname: "lxc-client".into(),
        egress_ifindex: Some(WEB_IF),
        egress_ifname: "lxc-web".into(),
        from_uplink: false,
        to_uplink: false,
        len: 74,
        ct: CtState::New,
        original: Some(tuple(CLIENT, 40000, WEB, 80, 6)),
        translated: None,
        tcp_flags: 0x02,
        icmp: None,
        service: None,
        policy: None,
        dns: None,
    }
}

fn one(event: &EngineFlow) -> Value {
    let flows = enrich(event, &context());
    assert_eq!(flows.len(), 1, "{flows:?}");
    serde_json::to_value(&flows[0]).unwrap()
}

fn labels(app: &str) -> Value {
    json!([
        format!("k8s:app={app}"),
        "k8s:io.cilium.k8s.namespace.labels.kubernetes.io/metadata.name=default",
        "k8s:io.cilium.k8s.policy.cluster=default",
        "k8s:io.cilium.k8s.policy.serviceaccount=default",
        "k8s:io.kubernetes.pod.namespace=default"
    ])
}

/// Identities are numbered by sorted label set: client, dns, web.
fn client() -> Value {
    json!({"ID": CLIENT_IF, "identity": 256, "namespace": "default", "labels": labels("client"), "pod_name": "client"})
}

fn web() -> Value {
    json!({"ID": WEB_IF, "identity": 258, "namespace": "default", "labels": labels("web"), "pod_name": "web"})
}

fn dns_server() -> Value {
    json!({"identity": 257, "namespace": "default", "labels": labels("dns"), "pod_name": "dns"})
}

fn rule(name: &str, path: &str) -> RuleRef {
    RuleRef {
        kind: "CiliumNetworkPolicy".into(),
        namespace: "default".into(),
        name: name.into(),
        path: path.into(),
    }
}

fn hubble_policy(name: &str, uid: Option<&str>) -> Value {
    let mut labels = vec![
        "k8s:io.cilium.k8s.policy.derived-from=CiliumNetworkPolicy".to_string(),
        format!("k8s:io.cilium.k8s.policy.name={name}"),
        "k8s:io.cilium.k8s.policy.namespace=default".to_string(),
    ];
    if let Some(uid) = uid {
        labels.push(format!("k8s:io.cilium.k8s.policy.uid={uid}"));
    }
    json!({"name": name, "namespace": "default", "labels": labels, "revision": 7, "kind": "CiliumNetworkPolicy"})
}

#[test]
fn a_pod_to_pod_trace() {
    assert_eq!(
        one(&event(FlowKind::Trace)),
        json!({
            "time": "2026-11-18T11:06:40.123456789Z",
            "verdict": "FORWARDED",
            "IP": {"source": CLIENT, "destination": WEB, "ipVersion": "IPv4"},
            "l4": {"TCP": {"source_port": 40000, "destination_port": 80, "flags": {"SYN": true}}},
            "source": client(),
            "destination": web(),
            "Type": "L3_L4",
            "node_name": "node1",
            "event_type": {"type": 4},
            "traffic_direction": "INGRESS",
            "trace_observation_point": "TO_ENDPOINT",
            "trace_reason": "NEW",
            "is_reply": false,
            "interface": {"index": WEB_IF, "name": "lxc-web"},
            "Summary": "TCP Flags: SYN",
            "sluice": {"worker": 1, "len": 74}
        })
    );
}

#[test]
fn a_reply_trace_flips_the_direction() {
    let mut reply = event(FlowKind::Trace);
    reply.ct = CtState::Reply;
    reply.original = Some(tuple(WEB, 80, CLIENT, 40000, 6));
    reply.egress_ifindex = Some(CLIENT_IF);
    reply.egress_ifname = "lxc-client".into();
    reply.tcp_flags = 0x12;
    let flow = one(&reply);
    assert_eq!(flow["is_reply"], true);
    assert_eq!(flow["reply"], true);
    assert_eq!(flow["trace_reason"], "REPLY");
    // Delivered to client, which opened the connection: its egress.
    assert_eq!(flow["traffic_direction"], "EGRESS");
    assert_eq!(flow["Summary"], "TCP Flags: SYN, ACK");
    assert_eq!(flow["source"], web());
}

#[test]
fn a_policy_drop_names_the_policy() {
    let mut drop = event(FlowKind::Drop);
    drop.verdict = FlowVerdict::Dropped;
    drop.egress_ifindex = None;
    drop.egress_ifname = String::new();
    drop.drop_reason = Some(DropInfo {
        number: 29,
        name: "policy_denied_by_denylist".into(),
    });
    drop.policy = Some(PolicyOutcome {
        ingress_enforced: true,
        denied_direction: Some(Direction::Ingress),
        denied_by: Some(rule("web-ingress", "specs[0].ingressDeny[0]")),
        ..Default::default()
    });
    assert_eq!(
        one(&drop),
        json!({
            "time": "2026-11-18T11:06:40.123456789Z",
            "verdict": "DROPPED",
            "drop_reason": 181,
            "IP": {"source": CLIENT, "destination": WEB, "ipVersion": "IPv4"},
            "l4": {"TCP": {"source_port": 40000, "destination_port": 80, "flags": {"SYN": true}}},
            "source": client(),
            "destination": web(),
            "Type": "L3_L4",
            "node_name": "node1",
            "event_type": {"type": 1, "sub_type": 181},
            "traffic_direction": "INGRESS",
            "drop_reason_desc": "POLICY_DENY",
            "interface": {"index": CLIENT_IF, "name": "lxc-client"},
            "ingress_denied_by": [hubble_policy("web-ingress", Some("6b2c-uid"))],
            "Summary": "TCP Flags: SYN",
            "sluice": {"drop_reason": "policy_denied_by_denylist", "worker": 1, "len": 74}
        })
    );
}

#[test]
fn a_policy_verdict_in_both_directions_is_two_flows() {
    let mut verdict = event(FlowKind::PolicyVerdict);
    verdict.policy = Some(PolicyOutcome {
        egress_enforced: true,
        egress_allowed_by: Some(rule("client-egress", "specs[0].egress[0]")),
        ingress_enforced: true,
        ingress_allowed_by: Some(rule("web-ingress", "specs[0].ingress[0]")),
        ..Default::default()
    });
    let flows: Vec<Value> = enrich(&verdict, &context())
        .iter()
        .map(|f| serde_json::to_value(f).unwrap())
        .collect();
    let common = |direction: &str| {
        json!({
            "time": "2026-11-18T11:06:40.123456789Z",
            "verdict": "FORWARDED",
            "IP": {"source": CLIENT, "destination": WEB, "ipVersion": "IPv4"},
            "l4": {"TCP": {"source_port": 40000, "destination_port": 80, "flags": {"SYN": true}}},
            "source": client(),
            "destination": web(),
            "Type": "L3_L4",
            "node_name": "node1",
            "event_type": {"type": 5},
            "traffic_direction": direction,
            "is_reply": false,
            "interface": {"index": CLIENT_IF, "name": "lxc-client"},
            "Summary": "TCP Flags: SYN",
            "sluice": {"worker": 1, "len": 74}
        })
    };
    let mut egress = common("EGRESS");
    egress["egress_allowed_by"] = json!([hubble_policy("client-egress", None)]);
    let mut ingress = common("INGRESS");
    ingress["ingress_allowed_by"] = json!([hubble_policy("web-ingress", Some("6b2c-uid"))]);
    assert_eq!(flows, [egress, ingress]);
}

fn dns_event(is_response: bool) -> EngineFlow {
    let mut e = event(FlowKind::Dns);
    e.egress_ifindex = Some(2);
    e.egress_ifname = "eth0".into();
    e.to_uplink = true;
    e.tcp_flags = 0;
    if is_response {
        e.ct = CtState::Reply;
        e.original = Some(tuple(REMOTE_DNS, 53, CLIENT, 5353, 17));
        e.from_uplink = true;
        e.to_uplink = false;
        e.egress_ifindex = Some(CLIENT_IF);
    } else {
        e.original = Some(tuple(CLIENT, 5353, REMOTE_DNS, 53, 17));
    }
    e.dns = Some(DnsEvent {
        is_response,
        refused_by_policy: false,
        id: 0x1234,
        query: "example.com".into(),
        qtype: 1,
        rcode: 0,
        ips: if is_response {
            vec!["93.184.216.34".parse().unwrap()]
        } else {
            Vec::new()
        },
        ttl: if is_response { 300 } else { 0 },
    });
    e
}

#[test]
fn a_dns_query_and_its_answer() {
    assert_eq!(
        one(&dns_event(false)),
        json!({
            "time": "2026-11-18T11:06:40.123456789Z",
            "verdict": "FORWARDED",
            "IP": {"source": CLIENT, "destination": REMOTE_DNS, "ipVersion": "IPv4"},
            "l4": {"UDP": {"source_port": 5353, "destination_port": 53}},
            "source": client(),
            "destination": dns_server(),
            "Type": "L7",
            "node_name": "node1",
            "l7": {"type": "REQUEST", "dns": {
                "query": "example.com.", "observation_source": "sluice-engine", "qtypes": ["A"]
            }},
            "event_type": {"type": 129},
            "traffic_direction": "EGRESS",
            "is_reply": false,
            "Summary": "DNS Query example.com. A",
            "sluice": {"worker": 1, "len": 74}
        })
    );
    let answer = one(&dns_event(true));
    assert_eq!(
        answer["l7"],
        json!({"type": "RESPONSE", "dns": {
            "query": "example.com.", "ips": ["93.184.216.34"], "ttl": 300,
            "observation_source": "sluice-engine", "qtypes": ["A"], "rrtypes": ["A"]
        }})
    );
    assert_eq!(answer["is_reply"], true);
    assert_eq!(answer["traffic_direction"], "EGRESS");
    assert_eq!(answer["source"], dns_server());
    assert_eq!(
        answer["Summary"],
        "DNS Answer \"93.184.216.34\" TTL: 300 (Query example.com. A)"
    );
}

#[test]
fn a_refused_dns_query_is_a_dropped_l7_flow() {
    let mut refused = dns_event(false);
    refused.verdict = FlowVerdict::Dropped;
    refused.drop_reason = Some(DropInfo {
        number: 30,
        name: "dns_refused".into(),
    });
    refused.dns.as_mut().unwrap().refused_by_policy = true;
    let flow = one(&refused);
    assert_eq!(flow["verdict"], "DROPPED");
    assert_eq!(flow["Type"], "L7");
    assert_eq!(flow["l7"]["type"], "REQUEST");
    assert_eq!(flow["sluice"]["drop_reason"], "dns_refused");
    // Hubble's L7 flows carry no L3/L4 drop reason.
    assert!(flow.get("drop_reason_desc").is_none(), "{flow}");
}

#[test]
fn a_service_connection_shows_the_backend_and_keeps_the_frontend() {
    let mut e = event(FlowKind::Trace);
    e.original = Some(tuple(CLIENT, 40000, "10.96.0.10", 8080, 6));
    e.translated = Some(tuple(CLIENT, 40000, WEB, 80, 6));
    e.service = Some("default/web".into());
    assert_eq!(
        one(&e),
        json!({
            "time": "2026-11-18T11:06:40.123456789Z",
            "verdict": "FORWARDED",
            "IP": {"source": CLIENT, "destination": WEB, "ipVersion": "IPv4"},
            "l4": {"TCP": {"source_port": 40000, "destination_port": 80, "flags": {"SYN": true}}},
            "source": client(),
            "destination": web(),
            "Type": "L3_L4",
            "node_name": "node1",
            "event_type": {"type": 4},
            "destination_service": {"name": "web", "namespace": "default"},
            "traffic_direction": "INGRESS",
            "trace_observation_point": "TO_ENDPOINT",
            "trace_reason": "NEW",
            "is_reply": false,
            "interface": {"index": WEB_IF, "name": "lxc-web"},
            "Summary": "TCP Flags: SYN",
            "sluice": {
                "original": {"source": CLIENT, "destination": "10.96.0.10", "source_port": 40000, "destination_port": 8080},
                "worker": 1, "len": 74
            }
        })
    );
    // The reply: from the frontend as the client sees it, named as the backend.
    let mut reply = event(FlowKind::Trace);
    reply.ct = CtState::Reply;
    reply.original = Some(tuple(WEB, 80, CLIENT, 40000, 6));
    reply.translated = Some(tuple("10.96.0.10", 8080, CLIENT, 40000, 6));
    reply.service = Some("default/web".into());
    reply.egress_ifindex = Some(CLIENT_IF);
    let flow = one(&reply);
    assert_eq!(flow["IP"]["source"], "10.96.0.10");
    assert_eq!(flow["source"], web());
    assert_eq!(
        flow["source_service"],
        json!({"name": "web", "namespace": "default"})
    );
    assert!(flow.get("destination_service").is_none());
}

#[test]
fn a_masqueraded_flow_to_the_world() {
    let mut e = event(FlowKind::Trace);
    e.original = Some(tuple(CLIENT, 40000, "93.184.216.34", 443, 6));
    e.translated = Some(tuple("192.168.1.10", 61000, "93.184.216.34", 443, 6));
    e.egress_ifindex = Some(2);
    e.egress_ifname = "eth0".into();
    e.to_uplink = true;
    assert_eq!(
        one(&e),
        json!({
            "time": "2026-11-18T11:06:40.123456789Z",
            "verdict": "FORWARDED",
            "IP": {"source": CLIENT, "source_xlated": "192.168.1.10", "destination": "93.184.216.34", "ipVersion": "IPv4"},
            "l4": {"TCP": {"source_port": 61000, "destination_port": 443, "flags": {"SYN": true}}},
            "source": client(),
            "destination": {"identity": 9, "labels": ["reserved:world-ipv4"]},
            "Type": "L3_L4",
            "node_name": "node1",
            "event_type": {"type": 4, "sub_type": 11},
            "traffic_direction": "EGRESS",
            "trace_observation_point": "TO_NETWORK",
            "trace_reason": "NEW",
            "is_reply": false,
            "interface": {"index": 2, "name": "eth0"},
            "Summary": "TCP Flags: SYN",
            "sluice": {
                "original": {"source": CLIENT, "destination": "93.184.216.34", "source_port": 40000, "destination_port": 443},
                "worker": 1, "len": 74
            }
        })
    );
}

#[test]
fn a_world_peer_replying_through_masquerade() {
    let mut e = event(FlowKind::Trace);
    e.ct = CtState::Reply;
    e.from_uplink = true;
    e.ingress_ifindex = 2;
    e.ingress_ifname = "eth0".into();
    e.original = Some(tuple("93.184.216.34", 443, "192.168.1.10", 61000, 6));
    e.translated = Some(tuple("93.184.216.34", 443, CLIENT, 40000, 6));
    e.egress_ifindex = Some(CLIENT_IF);
    e.egress_ifname = "lxc-client".into();
    e.tcp_flags = 0x12;
    let flow = one(&e);
    assert_eq!(
        flow["IP"],
        json!({"source": "93.184.216.34", "destination": CLIENT, "ipVersion": "IPv4"})
    );
    assert_eq!(
        flow["source"],
        json!({"identity": 9, "labels": ["reserved:world-ipv4"]})
    );
    assert_eq!(flow["destination"], client());
    assert_eq!(flow["trace_observation_point"], "TO_ENDPOINT");
    assert_eq!(flow["traffic_direction"], "EGRESS");
    assert_eq!(flow["is_reply"], true);
}

#[test]
fn icmp_flows_carry_type_and_code() {
    let mut e = event(FlowKind::Trace);
    e.original = Some(tuple(CLIENT, 0, WEB, 0, 1));
    e.tcp_flags = 0;
    e.icmp = Some((8, 0));
    let flow = one(&e);
    assert_eq!(flow["l4"], json!({"ICMPv4": {"type": 8, "code": 0}}));
    assert_eq!(flow["Summary"], "ICMPv4 EchoRequest");
    e.original = Some(tuple("fd00::2", 0, "fd00::3", 0, 58));
    e.icmp = Some((128, 0));
    let flow = one(&e);
    assert_eq!(flow["l4"], json!({"ICMPv6": {"type": 128, "code": 0}}));
    assert_eq!(flow["IP"]["ipVersion"], "IPv6");
    assert_eq!(flow["destination"]["identity"], 10);
}

#[test]
fn a_link_local_sender_is_named_by_the_veth_it_came_from() {
    // A router solicitation from client's fe80:: address, dropped by the
    // engine: the source is the client endpoint, not world-ipv6.
    let mut e = event(FlowKind::Drop);
    e.verdict = FlowVerdict::Dropped;
    e.drop_reason = Some(DropInfo {
        number: 15,
        name: "icmpv6_not_handled".into(),
    });
    e.egress_ifindex = None;
    e.egress_ifname = String::new();
    e.ct = CtState::Untracked;
    e.original = Some(tuple("fe80::1", 0, "ff02::2", 0, 58));
    e.tcp_flags = 0;
    e.icmp = Some((133, 0));
    let flow = one(&e);
    assert_eq!(flow["source"], client());
    assert_eq!(
        flow["destination"]["labels"],
        json!(["reserved:world-ipv6"])
    );
}
