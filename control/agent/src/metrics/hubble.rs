//! Hubble's flow metrics, counted from the agent's flow stream: the
//! families of Hubble's `flow`, `drop`, `tcp`, `icmp`, `dns` and `policy`
//! handlers with their label names and values (no context options: Sluice
//! adds no source/destination labels).

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use sluice_api::hubble::Flow;

use super::flow_labels::{self, EVENT_POLICY_VERDICT, IDENTITY_HOST};

/// A label set: name/value pairs in Hubble's label order.
pub type Labels = Vec<(&'static str, String)>;

type CounterFamily = Family<Labels, Counter>;

/// The families, registered once; each flow increments some of them.
#[derive(Clone, Debug, Default)]
pub struct HubbleMetrics {
    flows_processed: CounterFamily,
    drops: CounterFamily,
    tcp_flags: CounterFamily,
    icmp: CounterFamily,
    dns_queries: CounterFamily,
    dns_responses: CounterFamily,
    policy_verdicts: CounterFamily,
}

impl HubbleMetrics {
    /// Registers every family in `registry` (names without `_total`: the
    /// encoder appends it to counters).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "hubble_flows_processed",
            "Total number of flows processed",
            self.flows_processed.clone(),
        );
        registry.register("hubble_drop", "Number of drops", self.drops.clone());
        registry.register(
            "hubble_tcp_flags",
            "TCP flag occurrences",
            self.tcp_flags.clone(),
        );
        registry.register("hubble_icmp", "Number of ICMP messages", self.icmp.clone());
        registry.register(
            "hubble_dns_queries",
            "Number of DNS queries observed",
            self.dns_queries.clone(),
        );
        registry.register(
            "hubble_dns_responses",
            "Number of DNS responses observed",
            self.dns_responses.clone(),
        );
        registry.register(
            "hubble_policy_verdicts",
            "Total number of Cilium network policy verdicts",
            self.policy_verdicts.clone(),
        );
    }

    /// Counts one flow in every family it belongs to.
    pub fn observe(&self, flow: &Flow) {
        let protocol = flow_labels::flow_protocol(flow);
        let (type_name, subtype) = flow_labels::flow_type(flow);
        inc(
            &self.flows_processed,
            vec![
                ("protocol", protocol.to_string()),
                ("type", type_name.to_string()),
                ("subtype", subtype),
                ("verdict", flow.verdict.clone()),
            ],
        );
        if flow.verdict == "DROPPED" {
            let reason = if flow.drop_reason_desc.is_empty() {
                "DROP_REASON_UNKNOWN".to_string()
            } else {
                flow.drop_reason_desc.clone()
            };
            inc(
                &self.drops,
                vec![("reason", reason), ("protocol", protocol.to_string())],
            );
        }
        self.observe_tcp(flow);
        self.observe_icmp(flow);
        self.observe_dns(flow);
        self.observe_policy_verdict(flow);
    }

    /// Forwarded TCP frames by flag: FIN, SYN, SYN-ACK, RST.
    fn observe_tcp(&self, flow: &Flow) {
        if flow.verdict != "FORWARDED" {
            return;
        }
        let (Some(ip), Some(flags)) = (
            &flow.ip,
            flow.l4
                .as_ref()
                .and_then(|l4| l4.tcp.as_ref())
                .and_then(|tcp| tcp.flags),
        ) else {
            return;
        };
        let count = |flag: &str| {
            inc(
                &self.tcp_flags,
                vec![
                    ("flag", flag.to_string()),
                    ("family", ip.ip_version.clone()),
                ],
            )
        };
        if flags.FIN {
            count("FIN");
        }
        if flags.SYN {
            count(if flags.ACK { "SYN-ACK" } else { "SYN" });
        }
        if flags.RST {
            count("RST");
        }
    }

    /// ICMP messages by family and type(code). Hubble labels ICMPv6 with
    /// family `IPv4` (a slip in its handler); Sluice says `IPv6`.
    fn observe_icmp(&self, flow: &Flow) {
        let Some(l4) = &flow.l4 else { return };
        if let Some(icmp) = &l4.icmpv4 {
            inc(
                &self.icmp,
                vec![
                    ("family", "IPv4".to_string()),
                    ("type", flow_labels::icmpv4_type(icmp)),
                ],
            );
        }
        if let Some(icmp) = &l4.icmpv6 {
            inc(
                &self.icmp,
                vec![
                    ("family", "IPv6".to_string()),
                    ("type", flow_labels::icmpv6_type(icmp)),
                ],
            );
        }
    }

    /// DNS: a dropped (refused) query counts as a query with rcode `Policy
    /// denied`, a request as a query with an empty rcode, a response as a
    /// response with its rcode name.
    fn observe_dns(&self, flow: &Flow) {
        let Some(dns) = flow.l7.as_ref().and_then(|l7| l7.dns.as_ref()) else {
            return;
        };
        let qtypes = dns.qtypes.join(",");
        let ips_returned = dns.ips.len().to_string();
        let is_response = flow
            .is_reply
            .unwrap_or_else(|| flow.l7.as_ref().is_some_and(|l7| l7.l7_type == "RESPONSE"));
        let (family, rcode) = if flow.verdict == "DROPPED" {
            (&self.dns_queries, "Policy denied".to_string())
        } else if !is_response {
            (&self.dns_queries, String::new())
        } else {
            (&self.dns_responses, flow_labels::dns_rcode(dns.rcode))
        };
        inc(
            family,
            vec![
                ("rcode", rcode),
                ("qtypes", qtypes),
                ("ips_returned", ips_returned),
            ],
        );
    }

    /// Policy verdict events by direction, match type and action, except
    /// those from the host (always allowed, as in Hubble).
    fn observe_policy_verdict(&self, flow: &Flow) {
        if flow.event_type.map(|t| t.event_type) != Some(EVENT_POLICY_VERDICT) {
            return;
        }
        if flow.source.as_ref().map(|s| s.identity) == Some(IDENTITY_HOST) {
            return;
        }
        let direction = if flow.traffic_direction.is_empty() {
            "traffic_direction_unknown".to_string()
        } else {
            flow.traffic_direction.to_ascii_lowercase()
        };
        inc(
            &self.policy_verdicts,
            vec![
                ("direction", direction),
                ("match", flow_labels::policy_match(flow.policy_match_type)),
                ("action", flow.verdict.to_ascii_lowercase()),
            ],
        );
    }
}

fn inc(family: &CounterFamily, labels: Labels) {
    family.get_or_create(&labels).inc();
}
