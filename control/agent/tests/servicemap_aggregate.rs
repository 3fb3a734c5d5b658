//! Service map aggregation: workloads as nodes, edges per (source,
//! destination, protocol/port, verdict) with counts, rates over the sliding
//! window, expiry and the size bound.

use sluice_agent::servicemap::{ServiceMap, ServiceMapConfig, ServiceMapView};
use sluice_api::hubble::{Endpoint, Flow, Ip, Layer4, Policy, SluiceFlowInfo, Tcp, TupleText, Udp};

fn pod(namespace: &str, name: &str, app: Option<&str>) -> Option<Endpoint> {
    Some(Endpoint {
        identity: 1000,
        namespace: namespace.into(),
        pod_name: name.into(),
        labels: app
            .map(|a| vec![format!("k8s:app={a}")])
            .unwrap_or_default(),
        ..Endpoint::default()
    })
}

fn world() -> Option<Endpoint> {
    Some(Endpoint {
        identity: 2,
        labels: vec!["reserved:world".into()],
        ..Endpoint::default()
    })
}

fn tcp_flow(src: Option<Endpoint>, dst: Option<Endpoint>, dport: u32, verdict: &str) -> Flow {
    Flow {
        time: "2026-11-28T02:11:20.000000001Z".into(),
        verdict: verdict.into(),
        ip: Some(Ip {
            source: "10.200.0.2".into(),
            destination: "10.200.0.3".into(),
            ip_version: "IPv4".into(),
            ..Ip::default()
        }),
        l4: Some(Layer4 {
            tcp: Some(Tcp {
                source_port: 40000,
                destination_port: dport,
                flags: None,
            }),
            ..Layer4::default()
        }),
        source: src,
        destination: dst,
        flow_type: "L3_L4".into(),
        ..Flow::default()
    }
}

fn edge<'a>(view: &'a ServiceMapView, id: &str) -> &'a sluice_agent::servicemap::EdgeView {
    view.edges
        .iter()
        .find(|e| e.id == id)
        .unwrap_or_else(|| panic!("no edge {id} in {:#?}", view.edges))
}

const T0: u64 = 1_795_000_000_000;

#[test]
fn flows_fold_into_workload_nodes_and_edges_with_replies_on_their_connection() {
    let mut map = ServiceMap::new(ServiceMapConfig::default());
    let client = || pod("shop", "client-7d9f8b6c5d-x2k4p", None);
    let web = || pod("shop", "web-0", Some("web"));
    map.record(&tcp_flow(client(), web(), 80, "FORWARDED"), T0);
    // The reply, seen from the server: counted on client -> web tcp/80.
    let mut reply = tcp_flow(web(), client(), 40000, "FORWARDED");
    reply.l4.as_mut().unwrap().tcp.as_mut().unwrap().source_port = 80;
    reply.is_reply = Some(true);
    map.record(&reply, T0 + 10);
    // A denied connection from another pod of the same Deployment, to 8080.
    let mut denied = tcp_flow(
        pod("shop", "client-7d9f8b6c5d-bcdf2", None),
        web(),
        8080,
        "DROPPED",
    );
    denied.drop_reason_desc = "POLICY_DENIED".into();
    denied.ingress_denied_by = vec![Policy {
        name: "web-only-80".into(),
        namespace: "shop".into(),
        kind: "CiliumNetworkPolicy".into(),
        ..Policy::default()
    }];
    map.record(&denied, T0 + 20);
    // DNS to the world over UDP.
    let mut to_world = tcp_flow(web(), world(), 0, "FORWARDED");
    to_world.l4 = Some(Layer4 {
        udp: Some(Udp {
            source_port: 5000,
            destination_port: 53,
        }),
        ..Layer4::default()
    });
    map.record(&to_world, T0 + 30);

    let view = map.view(T0 + 40);
    let ids: Vec<&str> = view.edges.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "shop/client->shop/web tcp/80 FORWARDED",
            "shop/client->shop/web tcp/8080 DROPPED",
            "shop/web->world udp/53 FORWARDED",
        ]
    );
    let ok = edge(&view, "shop/client->shop/web tcp/80 FORWARDED");
    assert_eq!((ok.flows, ok.drops), (2, 0));
    assert_eq!(ok.protocol, "tcp");
    assert_eq!(ok.port, 80);
    let dropped = edge(&view, "shop/client->shop/web tcp/8080 DROPPED");
    assert_eq!((dropped.flows, dropped.drops), (1, 1));
    assert_eq!(dropped.drop_reasons, ["POLICY_DENIED"]);
    assert_eq!(dropped.policies, ["CiliumNetworkPolicy shop/web-only-80"]);

    let nodes: Vec<(&str, &str, u64, u64, u64)> = view
        .nodes
        .iter()
        .map(|n| {
            (
                n.id.as_str(),
                n.kind.as_str(),
                n.flows_out,
                n.flows_in,
                n.drops,
            )
        })
        .collect();
    assert_eq!(
        nodes,
        [
            ("shop/client", "pod", 3, 0, 1),
            ("shop/web", "pod", 1, 3, 0),
            ("world", "reserved", 0, 1, 0),
        ]
    );
}

#[test]
fn the_rate_counts_the_last_ten_seconds_only() {
    let mut map = ServiceMap::new(ServiceMapConfig::default());
    let flow = tcp_flow(
        pod("a", "x", Some("x")),
        pod("a", "y", Some("y")),
        80,
        "FORWARDED",
    );
    // 20 flows at second 0, then 10 at second 5.
    for i in 0..20 {
        map.record(&flow, T0 + i);
    }
    for i in 0..10 {
        map.record(&flow, T0 + 5_000 + i);
    }
    let id = "a/x->a/y tcp/80 FORWARDED";
    let rate = |map: &mut ServiceMap, at: u64| edge(&map.view(at), id).rate;
    assert_eq!(rate(&mut map, T0 + 5_500), 3.0);
    // At second 10 the first second has left the window.
    assert_eq!(rate(&mut map, T0 + 10_000), 1.0);
    assert_eq!(rate(&mut map, T0 + 15_000), 0.0);
    assert_eq!(edge(&map.view(T0 + 15_000), id).flows, 30);
    // A new flow in a reused slot does not inherit the old count.
    map.record(&flow, T0 + 20_100);
    assert_eq!(rate(&mut map, T0 + 20_200), 0.1);
}

#[test]
fn edges_expire_after_the_ttl_and_the_least_recent_makes_room() {
    let mut map = ServiceMap::new(ServiceMapConfig {
        ttl_ms: 60_000,
        max_edges: 2,
    });
    let x = || pod("a", "x", Some("x"));
    let y = || pod("a", "y", Some("y"));
    map.record(&tcp_flow(x(), y(), 1, "FORWARDED"), T0);
    map.record(&tcp_flow(x(), y(), 2, "FORWARDED"), T0 + 1_000);
    map.record(&tcp_flow(x(), y(), 1, "FORWARDED"), T0 + 2_000);
    // Full: port 3 evicts port 2 (seen least recently).
    map.record(&tcp_flow(x(), y(), 3, "FORWARDED"), T0 + 3_000);
    let view = map.view(T0 + 3_000);
    let ids: Vec<&str> = view.edges.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(
        ids,
        ["a/x->a/y tcp/1 FORWARDED", "a/x->a/y tcp/3 FORWARDED"]
    );
    assert_eq!(view.evicted_edges, 1);
    // Port 1 was last seen at +2 s: gone at +62 s, port 3 still there.
    let view = map.view(T0 + 62_000);
    let ids: Vec<&str> = view.edges.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids, ["a/x->a/y tcp/3 FORWARDED"]);
    let view = map.view(T0 + 63_000);
    assert!(view.edges.is_empty() && view.nodes.is_empty(), "{view:?}");
    map.lost(7);
    assert_eq!(map.view(T0 + 63_000).lost_flows, 7);
}

#[test]
fn a_service_reply_counts_on_the_backend_port_edge_of_its_connection() {
    let mut map = ServiceMap::new(ServiceMapConfig::default());
    let client = || pod("shop", "client-0", None);
    let web = || pod("shop", "web-0", Some("web"));
    // The request as delivered: DNATed to the backend's 8080.
    map.record(&tcp_flow(client(), web(), 8080, "FORWARDED"), T0);
    // Its reply as delivered comes from the frontend port 80 (reverse NAT);
    // as received from the backend it left port 8080.
    let mut reply = tcp_flow(web(), client(), 40000, "FORWARDED");
    reply.l4.as_mut().unwrap().tcp.as_mut().unwrap().source_port = 80;
    reply.is_reply = Some(true);
    reply.sluice = Some(SluiceFlowInfo {
        original: Some(TupleText {
            source: "10.200.0.3".into(),
            destination: "10.200.0.2".into(),
            source_port: 8080,
            destination_port: 40000,
        }),
        ..SluiceFlowInfo::default()
    });
    map.record(&reply, T0 + 10);
    let view = map.view(T0 + 20);
    let ids: Vec<&str> = view.edges.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids, ["shop/client->shop/web tcp/8080 FORWARDED"]);
    assert_eq!(edge(&view, ids[0]).flows, 2);
}
