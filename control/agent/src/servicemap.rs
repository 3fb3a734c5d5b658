//! The service map: the flow stream folded into workloads (nodes) and who
//! talks to whom (edges), for the page at `/` and `GET /api/servicemap`.
//!
//! An edge is (source workload, destination workload, protocol, destination
//! port, verdict) with its flow count, drop count, rate (flows per second
//! over the last [`RATE_WINDOW_SECONDS`]) and when it was last seen. Replies
//! count on their connection's edge (client -> server). Edges not seen for
//! `ttl` disappear; at most `max_edges` are kept (the least recently seen
//! one makes room). Nodes are the endpoints of the current edges.

pub mod workload;

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::{Deserialize, Serialize};
use sluice_api::hubble::{Flow, Policy};

use workload::{workload_of, Workload};

/// The rate is flows per second over this many seconds.
pub const RATE_WINDOW_SECONDS: u64 = 10;

/// At most this many drop reasons and policy names are kept per edge.
const MAX_NAMES_PER_EDGE: usize = 8;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServiceMapConfig {
    /// An edge not seen for this long is removed.
    pub ttl_ms: u64,
    pub max_edges: usize,
}

impl Default for ServiceMapConfig {
    fn default() -> Self {
        ServiceMapConfig {
            ttl_ms: 5 * 60 * 1000,
            max_edges: 4096,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct EdgeKey {
    source: Workload,
    destination: Workload,
    protocol: &'static str,
    port: u32,
    verdict: String,
}

#[derive(Clone, Debug, Default)]
struct EdgeState {
    flows: u64,
    drops: u64,
    /// Flows per second of the last seconds: (second, count), one slot per
    /// second of the window, reused as time moves on.
    buckets: [(u64, u64); RATE_WINDOW_SECONDS as usize],
    last_seen_ms: u64,
    last_seen: String,
    drop_reasons: BTreeSet<String>,
    policies: BTreeSet<String>,
}

/// The aggregate; the caller serializes access (one consumer writes, the
/// HTTP handler reads).
#[derive(Debug, Default)]
pub struct ServiceMap {
    config: ServiceMapConfig,
    edges: HashMap<EdgeKey, EdgeState>,
    /// Flows the map never saw (its consumer lagged behind the stream).
    lost: u64,
    /// Edges removed to stay within `max_edges`.
    evicted: u64,
}

/// `GET /api/servicemap`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ServiceMapView {
    pub rate_window_seconds: u64,
    pub nodes: Vec<NodeView>,
    pub edges: Vec<EdgeView>,
    pub lost_flows: u64,
    pub evicted_edges: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeView {
    /// `namespace/app`, `world`, an address.
    pub id: String,
    pub namespace: String,
    /// `pod`, `reserved` or `address`.
    pub kind: String,
    /// Flows on edges leaving / entering the node.
    pub flows_out: u64,
    pub flows_in: u64,
    pub drops: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct EdgeView {
    /// `source->destination protocol/port VERDICT`: stable, unique.
    pub id: String,
    pub source: String,
    pub destination: String,
    /// `tcp`, `udp`, `sctp`, `icmpv4`, `icmpv6`, `ip`.
    pub protocol: String,
    /// Destination port (0 for ICMP and other protocols without ports).
    pub port: u32,
    /// `FORWARDED`, `DROPPED`, ...
    pub verdict: String,
    pub flows: u64,
    pub drops: u64,
    /// Flows per second over the rate window.
    pub rate: f64,
    /// Time of the latest flow (RFC 3339).
    pub last_seen: String,
    /// Hubble drop reason names seen on the edge.
    pub drop_reasons: Vec<String>,
    /// Policies that allowed or denied flows of the edge
    /// (`Kind namespace/name`).
    pub policies: Vec<String>,
}

fn protocol_and_ports(flow: &Flow) -> (&'static str, u32, u32) {
    let Some(l4) = &flow.l4 else {
        return ("ip", 0, 0);
    };
    if let Some(tcp) = &l4.tcp {
        ("tcp", tcp.source_port, tcp.destination_port)
    } else if let Some(udp) = &l4.udp {
        ("udp", udp.source_port, udp.destination_port)
    } else if let Some(sctp) = &l4.sctp {
        ("sctp", sctp.source_port, sctp.destination_port)
    } else if l4.icmpv4.is_some() {
        ("icmpv4", 0, 0)
    } else if l4.icmpv6.is_some() {
        ("icmpv6", 0, 0)
    } else {
        ("ip", 0, 0)
    }
}

fn policy_name(policy: &Policy) -> String {
    let kind = if policy.kind.is_empty() {
        "Policy"
    } else {
        &policy.kind
    };
    if policy.namespace.is_empty() {
        format!("{kind} {}", policy.name)
    } else {
        format!("{kind} {}/{}", policy.namespace, policy.name)
    }
}

fn insert_bounded(set: &mut BTreeSet<String>, value: String) {
    if set.len() < MAX_NAMES_PER_EDGE || set.contains(&value) {
        set.insert(value);
    }
}

impl ServiceMap {
    pub fn new(config: ServiceMapConfig) -> ServiceMap {
        ServiceMap {
            config,
            ..ServiceMap::default()
        }
    }

    /// Folds one flow in, at wall-clock time `now_ms` (Unix ms).
    pub fn record(&mut self, flow: &Flow, now_ms: u64) {
        let (protocol, sport, dport) = protocol_and_ports(flow);
        let (src_ip, dst_ip) = flow
            .ip
            .as_ref()
            .map_or(("", ""), |ip| (ip.source.as_str(), ip.destination.as_str()));
        let mut source = workload_of(flow.source.as_ref(), src_ip);
        let mut destination = workload_of(flow.destination.as_ref(), dst_ip);
        let mut port = dport;
        if flow.is_reply == Some(true) {
            std::mem::swap(&mut source, &mut destination);
            // The server's port as it sent it: a Service reply is delivered
            // from the frontend port, but its connection's edge carries the
            // backend's (the request's translated destination port).
            port = flow
                .sluice
                .as_ref()
                .and_then(|s| s.original.as_ref())
                .map_or(sport, |original| original.source_port);
        }
        let key = EdgeKey {
            source,
            destination,
            protocol,
            port,
            verdict: flow.verdict.clone(),
        };
        if !self.edges.contains_key(&key) {
            self.expire(now_ms);
            if self.edges.len() >= self.config.max_edges {
                self.evict_least_recent();
            }
        }
        let edge = self.edges.entry(key).or_default();
        edge.flows += 1;
        let dropped = flow.verdict == "DROPPED";
        if dropped {
            edge.drops += 1;
            if !flow.drop_reason_desc.is_empty() {
                insert_bounded(&mut edge.drop_reasons, flow.drop_reason_desc.clone());
            }
        }
        for policy in flow
            .ingress_denied_by
            .iter()
            .chain(&flow.egress_denied_by)
            .chain(&flow.ingress_allowed_by)
            .chain(&flow.egress_allowed_by)
        {
            insert_bounded(&mut edge.policies, policy_name(policy));
        }
        let second = now_ms / 1000;
        let slot = &mut edge.buckets[(second % RATE_WINDOW_SECONDS) as usize];
        if slot.0 != second {
            *slot = (second, 0);
        }
        slot.1 += 1;
        edge.last_seen_ms = edge.last_seen_ms.max(now_ms);
        edge.last_seen = flow.time.clone();
    }

    /// The stream overtook the map's consumer by `n` flows.
    pub fn lost(&mut self, n: u64) {
        self.lost += n;
    }

    /// Removes edges not seen for the TTL.
    pub fn expire(&mut self, now_ms: u64) {
        let ttl = self.config.ttl_ms;
        self.edges
            .retain(|_, edge| now_ms.saturating_sub(edge.last_seen_ms) < ttl);
    }

    fn evict_least_recent(&mut self) {
        if let Some(key) = self
            .edges
            .iter()
            .min_by_key(|(_, edge)| edge.last_seen_ms)
            .map(|(key, _)| key.clone())
        {
            self.edges.remove(&key);
            self.evicted += 1;
        }
    }

    /// Nodes and edges at `now_ms` (expired edges removed first), sorted.
    pub fn view(&mut self, now_ms: u64) -> ServiceMapView {
        self.expire(now_ms);
        let now_second = now_ms / 1000;
        let mut nodes: BTreeMap<&Workload, NodeView> = BTreeMap::new();
        let mut edges: Vec<EdgeView> = Vec::with_capacity(self.edges.len());
        for (key, edge) in &self.edges {
            // Seconds (now - window, now]: a partial current second and the
            // nine before it.
            let recent: u64 = edge
                .buckets
                .iter()
                .filter(|(second, _)| {
                    *second <= now_second && now_second - *second < RATE_WINDOW_SECONDS
                })
                .map(|(_, count)| count)
                .sum();
            for (workload, outgoing) in [(&key.source, true), (&key.destination, false)] {
                let node = nodes.entry(workload).or_insert_with(|| NodeView {
                    id: workload.id.clone(),
                    namespace: workload.namespace.clone(),
                    kind: workload.kind.to_string(),
                    ..NodeView::default()
                });
                if outgoing {
                    node.flows_out += edge.flows;
                    node.drops += edge.drops;
                } else {
                    node.flows_in += edge.flows;
                }
            }
            edges.push(EdgeView {
                id: format!(
                    "{}->{} {}/{} {}",
                    key.source.id, key.destination.id, key.protocol, key.port, key.verdict
                ),
                source: key.source.id.clone(),
                destination: key.destination.id.clone(),
                protocol: key.protocol.to_string(),
                port: key.port,
                verdict: key.verdict.clone(),
                flows: edge.flows,
                drops: edge.drops,
                rate: recent as f64 / RATE_WINDOW_SECONDS as f64,
                last_seen: edge.last_seen.clone(),
                drop_reasons: edge.drop_reasons.iter().cloned().collect(),
                policies: edge.policies.iter().cloned().collect(),
            });
        }
        edges.sort_by(|a, b| a.id.cmp(&b.id));
        ServiceMapView {
            rate_window_seconds: RATE_WINDOW_SECONDS,
            nodes: nodes.into_values().collect(),
            edges,
            lost_flows: self.lost,
            evicted_edges: self.evicted,
        }
    }
}
