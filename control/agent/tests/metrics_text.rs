//! The `/metrics` text for a given engine stats document and flow sequence:
//! every metric family's samples, compared exactly after parsing the text
//! exposition back into `series -> value`.

use std::collections::BTreeMap;
use std::sync::Arc;

use sluice_agent::flows::FlowHub;
use sluice_agent::metrics::Metrics;
use sluice_api::events::LostSource;
use sluice_api::hubble::{
    CiliumEventType, Dns, Endpoint, Flow, Icmp, Ip, Layer4, Layer7, Tcp, TcpFlags, Udp,
};

/// `series -> value` of every sample line; HELP and TYPE lines by family.
struct Exposition {
    samples: BTreeMap<String, String>,
    help: BTreeMap<String, String>,
    types: BTreeMap<String, String>,
}

fn parse(text: &str) -> Exposition {
    let mut out = Exposition {
        samples: BTreeMap::new(),
        help: BTreeMap::new(),
        types: BTreeMap::new(),
    };
    assert!(
        text.ends_with("# EOF\n"),
        "OpenMetrics text ends with # EOF: {text}"
    );
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap();
            out.help.insert(name.to_string(), help.to_string());
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            out.types.insert(name.to_string(), kind.to_string());
        } else if !line.starts_with('#') && !line.is_empty() {
            let (series, value) = line.rsplit_once(' ').unwrap();
            assert!(
                out.samples
                    .insert(series.to_string(), value.to_string())
                    .is_none(),
                "duplicate series {series}"
            );
        }
    }
    out
}

impl Exposition {
    /// The samples of one family (series starting with `name{` or `name `).
    fn family(&self, name: &str) -> Vec<(String, String)> {
        self.samples
            .iter()
            .filter(|(series, _)| {
                series.as_str() == name || series.starts_with(&format!("{name}{{"))
            })
            .map(|(s, v)| (s.clone(), v.clone()))
            .collect()
    }

    fn assert_family(&self, family: &str, kind: &str, expected: &[(&str, &str)]) {
        assert_eq!(
            self.types.get(family).map(String::as_str),
            Some(kind),
            "TYPE of {family}"
        );
        assert!(
            self.help.get(family).is_some_and(|h| !h.is_empty()),
            "HELP of {family}"
        );
        let sample = if kind == "counter" {
            format!("{family}_total")
        } else {
            family.to_string()
        };
        let mut want: Vec<(String, String)> = expected
            .iter()
            .map(|(s, v)| (s.to_string(), v.to_string()))
            .collect();
        want.sort();
        assert_eq!(self.family(&sample), want, "samples of {family}");
    }
}

fn endpoint(identity: u32, namespace: &str, pod: &str) -> Option<Endpoint> {
    Some(Endpoint {
        identity,
        namespace: namespace.into(),
        pod_name: pod.into(),
        ..Endpoint::default()
    })
}

fn base(event_type: i32, verdict: &str) -> Flow {
    Flow {
        time: "2026-11-28T02:11:20.000000001Z".into(),
        verdict: verdict.into(),
        ip: Some(Ip {
            source: "10.200.0.2".into(),
            destination: "10.200.0.3".into(),
            ip_version: "IPv4".into(),
            ..Ip::default()
        }),
        source: endpoint(1001, "x", "a"),
        destination: endpoint(1002, "y", "b"),
        flow_type: "L3_L4".into(),
        event_type: Some(CiliumEventType {
            event_type,
            sub_type: 0,
        }),
        ..Flow::default()
    }
}

fn tcp(flags: TcpFlags) -> Option<Layer4> {
    Some(Layer4 {
        tcp: Some(Tcp {
            source_port: 40000,
            destination_port: 80,
            flags: Some(flags),
        }),
        ..Layer4::default()
    })
}

fn dns(is_reply: bool, verdict: &str, rcode: u32, ips: &[&str]) -> Flow {
    let mut flow = base(129, verdict);
    flow.flow_type = "L7".into();
    flow.is_reply = Some(is_reply);
    flow.l4 = Some(Layer4 {
        udp: Some(Udp {
            source_port: 5353,
            destination_port: 53,
        }),
        ..Layer4::default()
    });
    flow.l7 = Some(Layer7 {
        l7_type: if is_reply { "RESPONSE" } else { "REQUEST" }.into(),
        latency_ns: 0,
        dns: Some(Dns {
            query: "example.com.".into(),
            ips: ips.iter().map(|s| s.to_string()).collect(),
            rcode,
            qtypes: vec!["A".into()],
            ..Dns::default()
        }),
    });
    flow
}

/// The flows of the test, each covering a rule of one handler.
fn flows() -> Vec<Flow> {
    let mut out = Vec::new();
    // Trace: a SYN to an endpoint, and its SYN-ACK.
    let mut syn = base(4, "FORWARDED");
    syn.trace_observation_point = "TO_ENDPOINT".into();
    syn.l4 = tcp(TcpFlags {
        SYN: true,
        ..TcpFlags::default()
    });
    out.push(syn);
    let mut syn_ack = base(4, "FORWARDED");
    syn_ack.trace_observation_point = "TO_ENDPOINT".into();
    syn_ack.is_reply = Some(true);
    syn_ack.l4 = tcp(TcpFlags {
        SYN: true,
        ACK: true,
        ..TcpFlags::default()
    });
    out.push(syn_ack);
    // A FIN+ACK leaving through the uplink: FIN only (ACK alone is not counted).
    let mut fin = base(4, "FORWARDED");
    fin.trace_observation_point = "TO_NETWORK".into();
    fin.l4 = tcp(TcpFlags {
        FIN: true,
        ACK: true,
        ..TcpFlags::default()
    });
    out.push(fin);
    // A policy drop of a SYN: Drop event (not counted as a TCP flag: dropped).
    let mut drop = base(1, "DROPPED");
    drop.drop_reason_desc = "POLICY_DENIED".into();
    drop.drop_reason = 133;
    drop.l4 = tcp(TcpFlags {
        SYN: true,
        ..TcpFlags::default()
    });
    out.push(drop);
    // Its policy verdict (ingress, no match: default deny).
    let mut denied = base(5, "DROPPED");
    denied.traffic_direction = "INGRESS".into();
    denied.drop_reason_desc = "POLICY_DENIED".into();
    denied.policy_match_type = 0;
    denied.l4 = tcp(TcpFlags {
        SYN: true,
        ..TcpFlags::default()
    });
    out.push(denied);
    // An allowed egress verdict matched L3-L4, and one from the host (ignored).
    let mut allowed = base(5, "FORWARDED");
    allowed.traffic_direction = "EGRESS".into();
    allowed.policy_match_type = 2;
    allowed.l4 = tcp(TcpFlags::default());
    out.push(allowed.clone());
    let mut from_host = allowed;
    from_host.source = endpoint(1, "", "");
    out.push(from_host);
    // ICMP echo request (v4) and a v6 port unreachable, both forwarded.
    let mut ping = base(4, "FORWARDED");
    ping.trace_observation_point = "TO_ENDPOINT".into();
    ping.l4 = Some(Layer4 {
        icmpv4: Some(Icmp {
            icmp_type: 8,
            code: 0,
        }),
        ..Layer4::default()
    });
    out.push(ping);
    let mut unreachable = base(4, "FORWARDED");
    unreachable.trace_observation_point = "TO_ENDPOINT".into();
    unreachable.ip.as_mut().unwrap().ip_version = "IPv6".into();
    unreachable.l4 = Some(Layer4 {
        icmpv6: Some(Icmp {
            icmp_type: 1,
            code: 4,
        }),
        ..Layer4::default()
    });
    out.push(unreachable);
    // DNS: a query, its answer with two addresses, a query refused by policy.
    out.push(dns(false, "FORWARDED", 0, &[]));
    out.push(dns(true, "FORWARDED", 0, &["192.0.2.1", "192.0.2.2"]));
    out.push(dns(false, "DROPPED", 0, &[]));
    out.last_mut().unwrap().drop_reason_desc = "DNS_ERROR".into();
    out
}

fn stats_document() -> serde_json::Value {
    serde_json::json!({
        "engine": {"version": "0.1.0", "workers": 2, "pid": 7, "mode": "idle"},
        "uptime_seconds": 12.5,
        "generation": 4,
        "endpoints": 3,
        "services": 1,
        "totals": {
            "rx_packets": 110, "rx_bytes": 9000, "tx_packets": 100, "tx_bytes": 8800,
            "busy_loops": 5, "idle_loops": 5, "busy_ns": 1000,
            "forwarded": {"ingress": {"packets": 30, "bytes": 3000},
                          "egress": {"packets": 70, "bytes": 5800}},
            "dropped": {"ingress": {"packets": 2, "bytes": 120},
                        "egress": {"packets": 8, "bytes": 640}},
            "events_emitted": 40, "events_lost": 3,
            "drops": [0, 2, 8]
        },
        "drops": [
            {"number": 1, "name": "no_route", "count": 0, "per_worker": [0, 0], "ingress": 0, "egress": 0},
            {"number": 2, "name": "no_route_uplink", "count": 2, "per_worker": [2, 0], "ingress": 2, "egress": 0},
            {"number": 28, "name": "policy_denied", "count": 8, "per_worker": [3, 5], "ingress": 0, "egress": 8}
        ],
        "workers": [
            {"worker": 0, "core": 2, "busy_ratio": 0.25, "rx_packets": 60},
            {"worker": 1, "core": 3, "busy_ratio": 0.5, "rx_packets": 50}
        ],
        "conntrack": {"capacity": 2000, "entries": 500, "inserts": 900, "insert_failures": 1,
                      "evictions": 4, "expired": 396, "pressure_permille": 250},
        "events": {"emitted": 40, "lost": 3, "subscriber_lost": 0}
    })
}

#[test]
fn metrics_text_has_every_family_with_hubbles_labels_and_the_engines_counters() {
    let hub = Arc::new(FlowHub::new(16));
    let metrics = Metrics::new(Arc::clone(&hub));
    for flow in flows() {
        metrics.observe(&flow);
    }
    hub.set_stats(stats_document());
    hub.count_lost(LostSource::PerfEventRingBuffer, 3);
    hub.count_lost(LostSource::HubbleRingBuffer, 2);
    let text = metrics.render().unwrap();
    let m = parse(&text);

    m.assert_family(
        "hubble_flows_processed",
        "counter",
        &[
            (r#"hubble_flows_processed_total{protocol="TCP",type="Trace",subtype="to-endpoint",verdict="FORWARDED"}"#, "2"),
            (r#"hubble_flows_processed_total{protocol="TCP",type="Trace",subtype="to-network",verdict="FORWARDED"}"#, "1"),
            (r#"hubble_flows_processed_total{protocol="TCP",type="Drop",subtype="",verdict="DROPPED"}"#, "1"),
            (r#"hubble_flows_processed_total{protocol="TCP",type="PolicyVerdict",subtype="",verdict="DROPPED"}"#, "1"),
            (r#"hubble_flows_processed_total{protocol="TCP",type="PolicyVerdict",subtype="",verdict="FORWARDED"}"#, "2"),
            (r#"hubble_flows_processed_total{protocol="ICMPv4",type="Trace",subtype="to-endpoint",verdict="FORWARDED"}"#, "1"),
            (r#"hubble_flows_processed_total{protocol="ICMPv6",type="Trace",subtype="to-endpoint",verdict="FORWARDED"}"#, "1"),
            (r#"hubble_flows_processed_total{protocol="DNS",type="L7",subtype="DNS",verdict="FORWARDED"}"#, "2"),
            (r#"hubble_flows_processed_total{protocol="DNS",type="L7",subtype="DNS",verdict="DROPPED"}"#, "1"),
        ],
    );
    m.assert_family(
        "hubble_drop",
        "counter",
        &[
            (
                r#"hubble_drop_total{reason="POLICY_DENIED",protocol="TCP"}"#,
                "2",
            ),
            (
                r#"hubble_drop_total{reason="DNS_ERROR",protocol="DNS"}"#,
                "1",
            ),
        ],
    );
    m.assert_family(
        "hubble_tcp_flags",
        "counter",
        &[
            (r#"hubble_tcp_flags_total{flag="SYN",family="IPv4"}"#, "1"),
            (
                r#"hubble_tcp_flags_total{flag="SYN-ACK",family="IPv4"}"#,
                "1",
            ),
            (r#"hubble_tcp_flags_total{flag="FIN",family="IPv4"}"#, "1"),
        ],
    );
    m.assert_family(
        "hubble_icmp",
        "counter",
        &[
            (r#"hubble_icmp_total{family="IPv4",type="EchoRequest"}"#, "1"),
            (r#"hubble_icmp_total{family="IPv6",type="DestinationUnreachable(PortUnreachable)"}"#, "1"),
        ],
    );
    m.assert_family(
        "hubble_dns_queries",
        "counter",
        &[
            (
                r#"hubble_dns_queries_total{rcode="",qtypes="A",ips_returned="0"}"#,
                "1",
            ),
            (
                r#"hubble_dns_queries_total{rcode="Policy denied",qtypes="A",ips_returned="0"}"#,
                "1",
            ),
        ],
    );
    m.assert_family(
        "hubble_dns_responses",
        "counter",
        &[(
            r#"hubble_dns_responses_total{rcode="No Error",qtypes="A",ips_returned="2"}"#,
            "1",
        )],
    );
    m.assert_family(
        "hubble_policy_verdicts",
        "counter",
        &[
            (r#"hubble_policy_verdicts_total{direction="ingress",match="none",action="dropped"}"#, "1"),
            (r#"hubble_policy_verdicts_total{direction="egress",match="l3-l4",action="forwarded"}"#, "1"),
        ],
    );
    m.assert_family(
        "hubble_lost_events",
        "counter",
        &[
            (
                r#"hubble_lost_events_total{source="hubble_ring_buffer"}"#,
                "2",
            ),
            (
                r#"hubble_lost_events_total{source="observer_events_queue"}"#,
                "0",
            ),
            (
                r#"hubble_lost_events_total{source="perf_event_ring_buffer"}"#,
                "3",
            ),
        ],
    );

    m.assert_family(
        "sluice_forward_count",
        "counter",
        &[
            (r#"sluice_forward_count_total{direction="EGRESS"}"#, "70"),
            (r#"sluice_forward_count_total{direction="INGRESS"}"#, "30"),
        ],
    );
    m.assert_family(
        "sluice_forward_bytes",
        "counter",
        &[
            (r#"sluice_forward_bytes_total{direction="EGRESS"}"#, "5800"),
            (r#"sluice_forward_bytes_total{direction="INGRESS"}"#, "3000"),
        ],
    );
    m.assert_family(
        "sluice_drop_count",
        "counter",
        &[
            (
                r#"sluice_drop_count_total{reason="no_route_uplink",direction="INGRESS"}"#,
                "2",
            ),
            (
                r#"sluice_drop_count_total{reason="policy_denied",direction="EGRESS"}"#,
                "8",
            ),
        ],
    );
    m.assert_family(
        "sluice_drop_bytes",
        "counter",
        &[
            (r#"sluice_drop_bytes_total{direction="EGRESS"}"#, "640"),
            (r#"sluice_drop_bytes_total{direction="INGRESS"}"#, "120"),
        ],
    );
    m.assert_family(
        "sluice_conntrack_entries",
        "gauge",
        &[("sluice_conntrack_entries", "500.0")],
    );
    m.assert_family(
        "sluice_conntrack_capacity",
        "gauge",
        &[("sluice_conntrack_capacity", "2000.0")],
    );
    m.assert_family(
        "sluice_conntrack_pressure",
        "gauge",
        &[("sluice_conntrack_pressure", "0.25")],
    );
    m.assert_family(
        "sluice_conntrack_gc_expired",
        "counter",
        &[("sluice_conntrack_gc_expired_total", "396")],
    );
    m.assert_family(
        "sluice_conntrack_gc_evictions",
        "counter",
        &[("sluice_conntrack_gc_evictions_total", "4")],
    );
    m.assert_family(
        "sluice_conntrack_insert_failures",
        "counter",
        &[("sluice_conntrack_insert_failures_total", "1")],
    );
    m.assert_family(
        "sluice_worker_busy_ratio",
        "gauge",
        &[
            (r#"sluice_worker_busy_ratio{worker="0"}"#, "0.25"),
            (r#"sluice_worker_busy_ratio{worker="1"}"#, "0.5"),
        ],
    );
    m.assert_family(
        "sluice_events_emitted",
        "counter",
        &[("sluice_events_emitted_total", "40")],
    );
    m.assert_family(
        "sluice_events_lost",
        "counter",
        &[("sluice_events_lost_total", "3")],
    );
}

#[test]
fn without_engine_stats_only_flow_metrics_and_lost_totals_are_exposed() {
    let hub = Arc::new(FlowHub::new(16));
    let metrics = Metrics::new(Arc::clone(&hub));
    let m = parse(&metrics.render().unwrap());
    assert!(m.family("sluice_forward_count_total").is_empty());
    assert!(m.family("sluice_conntrack_entries").is_empty());
    m.assert_family(
        "hubble_lost_events",
        "counter",
        &[
            (
                r#"hubble_lost_events_total{source="hubble_ring_buffer"}"#,
                "0",
            ),
            (
                r#"hubble_lost_events_total{source="observer_events_queue"}"#,
                "0",
            ),
            (
                r#"hubble_lost_events_total{source="perf_event_ring_buffer"}"#,
                "0",
            ),
        ],
    );
    // A document of the wrong shape is not turned into zeros either.
    hub.set_stats(serde_json::json!({"conntrack": "full"}));
    let m = parse(&metrics.render().unwrap());
    assert!(m.family("sluice_conntrack_entries").is_empty());
}

#[test]
fn an_engine_without_direction_counters_still_exposes_drops_by_reason() {
    let hub = Arc::new(FlowHub::new(16));
    let metrics = Metrics::new(Arc::clone(&hub));
    hub.set_stats(serde_json::json!({
        "drops": [{"number": 28, "name": "policy_denied", "count": 5}],
        "workers": [{"worker": 0, "busy_loops": 1, "idle_loops": 3}],
        "conntrack": {"capacity": 0, "entries": 0, "pressure_permille": 0}
    }));
    let m = parse(&metrics.render().unwrap());
    assert!(m.family("sluice_forward_count_total").is_empty());
    m.assert_family(
        "sluice_drop_count",
        "counter",
        &[(
            r#"sluice_drop_count_total{reason="policy_denied",direction=""}"#,
            "5",
        )],
    );
    m.assert_family(
        "sluice_worker_busy_ratio",
        "gauge",
        &[(r#"sluice_worker_busy_ratio{worker="0"}"#, "0.25")],
    );
}
