//! FlowFilter and FlowQuery with Hubble's semantics, field by field, over
//! the flows in data/hubble.

use sluice_api::hubble::{EventTypeFilter, Flow, FlowFilter, GetFlowsRequest, GetFlowsResponse};

fn flow(name: &str) -> Flow {
    let path = format!(
        "{}/tests/data/hubble/{name}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap();
    serde_json::from_str::<GetFlowsResponse>(&text)
        .unwrap()
        .flow
        .unwrap()
}

fn trace() -> Flow {
    flow("trace_to_endpoint_syn")
}
fn drop() -> Flow {
    flow("drop_policy_denied")
}
fn dns() -> Flow {
    flow("l7_dns_request")
}

fn f(update: impl FnOnce(&mut FlowFilter)) -> FlowFilter {
    let mut filter = FlowFilter::default();
    update(&mut filter);
    filter
}

fn s(v: &str) -> Vec<String> {
    vec![v.to_string()]
}

#[test]
fn ip_matches_addresses_and_cidrs_per_side() {
    assert!(f(|f| f.source_ip = s("10.0.1.5")).matches(&trace()));
    assert!(!f(|f| f.source_ip = s("10.0.1.9")).matches(&trace()));
    assert!(f(|f| f.destination_ip = s("10.0.1.0/24")).matches(&trace()));
    assert!(!f(|f| f.destination_ip = s("10.0.2.0/24")).matches(&trace()));
    assert!(f(|f| f.destination_ip = s("0.0.0.0/0")).matches(&trace()));
    assert!(!f(|f| f.destination_ip = s("::/0")).matches(&trace()));
    assert!(f(|f| f.source_ip = s("bad"))
        .compile()
        .unwrap_err()
        .contains("source_ip"));
}

#[test]
fn pod_filters_take_namespace_and_prefix() {
    assert!(f(|f| f.source_pod = s("shop/client")).matches(&trace()));
    assert!(f(|f| f.source_pod = s("shop/")).matches(&trace()));
    assert!(!f(|f| f.source_pod = s("other/")).matches(&trace()));
    // A bare name is a pod in `default`.
    assert!(!f(|f| f.source_pod = s("client")).matches(&trace()));
    assert!(f(|f| f.destination_pod = s("shop/web")).matches(&trace()));
    assert!(!f(|f| f.destination_pod = s("shop/db")).matches(&trace()));
    // `/` is any namespace, but needs an endpoint with a name.
    assert!(f(|f| f.source_pod = s("/")).matches(&trace()));
    assert!(!f(|f| f.destination_pod = s("/")).matches(&dns()));
}

#[test]
fn labels_services_identities() {
    assert!(f(|f| f.source_label = s("app=client")).matches(&trace()));
    assert!(f(|f| f.source_label = s("k8s:app=client")).matches(&trace()));
    assert!(!f(|f| f.source_label = s("app=web")).matches(&trace()));
    assert!(f(|f| f.destination_label = s("reserved:world")).matches(&dns()));
    assert!(f(|f| f.destination_service = s("kube-system/kube-dns")).matches(&dns()));
    assert!(!f(|f| f.destination_service = s("kube-system/other")).matches(&dns()));
    assert!(f(|f| f.source_identity = vec![1234]).matches(&trace()));
    assert!(!f(|f| f.destination_identity = vec![1234]).matches(&trace()));
}

#[test]
fn ports_protocols_types() {
    assert!(f(|f| f.destination_port = s("80")).matches(&trace()));
    assert!(!f(|f| f.source_port = s("80")).matches(&trace()));
    assert!(f(|f| f.destination_port = s("53")).matches(&dns()));
    assert!(f(|f| f.protocol = s("TCP")).matches(&trace()));
    assert!(!f(|f| f.protocol = s("udp")).matches(&trace()));
    assert!(f(|f| f.protocol = s("dns")).matches(&dns()));
    assert!(!f(|f| f.protocol = s("dns")).matches(&trace()));
    assert!(f(|f| f.protocol = s("gre")).compile().is_err());
    let trace_to_endpoint = EventTypeFilter {
        event_type: 4,
        match_sub_type: true,
        sub_type: 0,
    };
    assert!(f(|f| f.event_type = vec![trace_to_endpoint.clone()]).matches(&trace()));
    let from_endpoint = EventTypeFilter {
        sub_type: 5,
        ..trace_to_endpoint
    };
    assert!(!f(|f| f.event_type = vec![from_endpoint]).matches(&trace()));
    let any_drop = EventTypeFilter {
        event_type: 1,
        ..Default::default()
    };
    assert!(f(|f| f.event_type = vec![any_drop.clone()]).matches(&drop()));
    assert!(!f(|f| f.event_type = vec![any_drop]).matches(&trace()));
}

#[test]
fn verdict_reason_direction_reply_node() {
    assert!(f(|f| f.verdict = s("DROPPED")).matches(&drop()));
    assert!(!f(|f| f.verdict = s("DROPPED")).matches(&trace()));
    assert!(f(|f| f.drop_reason_desc = s("POLICY_DENIED")).matches(&drop()));
    assert!(!f(|f| f.drop_reason_desc = s("POLICY_DENY")).matches(&drop()));
    assert!(f(|f| f.traffic_direction = s("EGRESS")).matches(&drop()));
    assert!(!f(|f| f.traffic_direction = s("INGRESS")).matches(&drop()));
    assert!(f(|f| f.reply = vec![false]).matches(&trace()));
    assert!(!f(|f| f.reply = vec![true]).matches(&trace()));
    assert!(f(|f| f.node_name = s("node-*")).matches(&trace()));
    assert!(!f(|f| f.node_name = s("other")).matches(&trace()));
    // All set fields must match.
    let both = f(|f| {
        f.verdict = s("DROPPED");
        f.destination_port = s("80");
    });
    assert!(!both.matches(&drop()));
}

fn request(update: impl FnOnce(&mut GetFlowsRequest)) -> GetFlowsRequest {
    let mut r = GetFlowsRequest {
        protocol: 1,
        ..Default::default()
    };
    update(&mut r);
    r
}

#[test]
fn query_whitelist_blacklist_and_window() {
    let flows = [trace(), drop(), dns()];
    let times = |r: GetFlowsRequest| -> Vec<String> {
        let q = r.compile().unwrap();
        q.select_flows(&flows)
            .iter()
            .map(|f| f.verdict.clone() + " " + &f.flow_type)
            .collect()
    };
    assert_eq!(times(request(|_| {})).len(), 3);
    let r = request(|r| r.blacklist = vec![f(|f| f.verdict = s("DROPPED"))]);
    assert_eq!(times(r), ["FORWARDED L3_L4", "FORWARDED L7"]);
    let r = request(|r| {
        r.whitelist = vec![
            f(|f| f.verdict = s("DROPPED")),
            f(|f| f.protocol = s("dns")),
        ]
    });
    assert_eq!(times(r), ["DROPPED L3_L4", "FORWARDED L7"]);
    let r = request(|r| r.since = Some("2026-11-28T02:11:21.000000001Z".into()));
    assert_eq!(times(r), ["DROPPED L3_L4", "FORWARDED L7"]);
    let r = request(|r| r.until = Some("2026-11-28T02:11:21Z".into()));
    assert_eq!(times(r), ["FORWARDED L3_L4"]);
    let r = request(|r| {
        r.number = 2;
        r.first = true
    });
    assert_eq!(times(r), ["FORWARDED L3_L4", "DROPPED L3_L4"]);
    let r = request(|r| r.number = 1);
    assert_eq!(times(r), ["FORWARDED L7"]);
    assert!(request(|r| r.protocol = 9)
        .compile()
        .unwrap_err()
        .contains('9'));
    assert!(request(|r| r.since = Some("x".into()))
        .compile()
        .unwrap_err()
        .contains("since"));
    let bad = request(|r| r.whitelist = vec![FlowFilter::default(), f(|f| f.source_port = s("x"))]);
    assert!(bad.compile().unwrap_err().contains("whitelist[1]"));
}
