//! Hubble's `FlowFilter`: the server-side filter `sluice observe` builds from
//! its flags. Within one filter every set field must match (AND); within a
//! field any value may match (OR); a request's whitelist is OR-ed, its
//! blacklist excludes (see [`super::GetFlowsRequest`]).
//!
//! Each field matches as Hubble's server does (Cilium
//! `pkg/hubble/filters`): addresses or CIDRs; `[namespace/]pod-prefix` (a
//! bare name is in `default`, `ns/` is a whole namespace); label selectors
//! with optional label sources; ports of TCP, UDP or SCTP; L4 protocol names
//! or the L7 `dns`; event types with an optional sub-type.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::drop_reason;
use super::label_selector::LabelSelector;
use super::{Endpoint, Flow, Service};

/// Field names follow Hubble's `flow.FlowFilter` JSON.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct FlowFilter {
    /// Addresses or CIDRs.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub source_ip: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub destination_ip: Vec<String>,
    /// `namespace/` (whole namespace) or `[namespace/]pod-name-prefix`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub source_pod: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub destination_pod: Vec<String>,
    /// Label selectors (`k8s:app=web`, `app in (a,b)`, `reserved:world`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub source_label: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub destination_label: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub source_service: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub destination_service: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub source_port: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub destination_port: Vec<String>,
    /// Verdict names (`FORWARDED`, `DROPPED`, ...).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub verdict: Vec<String>,
    /// Hubble DropReason names.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub drop_reason_desc: Vec<String>,
    /// Event types (`{"type": 1}`, with an optional sub_type).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub event_type: Vec<EventTypeFilter>,
    /// L4 or L7 protocol names (`tcp`, `udp`, `icmp`, `icmpv4`, `icmpv6`, `sctp`, `dns`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub protocol: Vec<String>,
    /// `INGRESS`, `EGRESS`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub traffic_direction: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub reply: Vec<bool>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub node_name: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub source_identity: Vec<u32>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub destination_identity: Vec<u32>,
}

/// Hubble's `EventTypeFilter`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct EventTypeFilter {
    #[serde(rename = "type")]
    pub event_type: i32,
    pub match_sub_type: bool,
    pub sub_type: i32,
}

/// Hubble's verdict names.
pub const VERDICTS: &[&str] = &[
    "FORWARDED",
    "DROPPED",
    "ERROR",
    "AUDIT",
    "REDIRECTED",
    "TRACED",
    "TRANSLATED",
];

const L4_PROTOCOLS: &[&str] = &["tcp", "udp", "sctp", "icmp", "icmpv4", "icmpv6"];
const L7_PROTOCOLS: &[&str] = &["dns", "http", "kafka"];

impl FlowFilter {
    /// Whether `flow` matches every field set in this filter. A filter with
    /// a malformed field (see [`FlowFilter::compile`]) matches nothing.
    pub fn matches(&self, flow: &Flow) -> bool {
        self.compile().is_ok_and(|f| f.matches(flow))
    }

    /// Parses the filter once (addresses, selectors, ports, names), for
    /// matching many flows. The error names the field and the value.
    pub fn compile(&self) -> Result<CompiledFilter, String> {
        Ok(CompiledFilter {
            source_ip: compile_ips("source_ip", &self.source_ip)?,
            destination_ip: compile_ips("destination_ip", &self.destination_ip)?,
            source_pod: compile_names("source_pod", &self.source_pod)?,
            destination_pod: compile_names("destination_pod", &self.destination_pod)?,
            source_label: compile_labels("source_label", &self.source_label)?,
            destination_label: compile_labels("destination_label", &self.destination_label)?,
            source_service: compile_names("source_service", &self.source_service)?,
            destination_service: compile_names("destination_service", &self.destination_service)?,
            source_port: compile_ports("source_port", &self.source_port)?,
            destination_port: compile_ports("destination_port", &self.destination_port)?,
            verdict: compile_enum("verdict", &self.verdict, |v| VERDICTS.contains(&v))?,
            drop_reason_desc: compile_enum("drop_reason_desc", &self.drop_reason_desc, |v| {
                drop_reason::hubble_number(v).is_some()
            })?,
            protocol: compile_protocols(&self.protocol)?,
            traffic_direction: compile_enum("traffic_direction", &self.traffic_direction, |v| {
                v == "INGRESS" || v == "EGRESS"
            })?,
            filter: self.clone(),
        })
    }
}

/// An address or a CIDR.
#[derive(Clone, Debug, PartialEq, Eq)]
enum IpMatcher {
    Address(IpAddr),
    Prefix(IpAddr, u8),
}

impl IpMatcher {
    fn parse(text: &str) -> Result<IpMatcher, String> {
        let Some((addr, len)) = text.split_once('/') else {
            return text
                .parse()
                .map(IpMatcher::Address)
                .map_err(|_| format!("{text:?} is not an IP address or CIDR"));
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("{text:?} is not an IP address or CIDR"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        match len.parse::<u8>() {
            Ok(len) if len <= max => Ok(IpMatcher::Prefix(addr, len)),
            _ => Err(format!("{text:?} has a bad prefix length")),
        }
    }

    fn matches(&self, ip: IpAddr) -> bool {
        match *self {
            IpMatcher::Address(addr) => addr == ip,
            IpMatcher::Prefix(net, len) => match (net, ip) {
                (IpAddr::V4(n), IpAddr::V4(a)) => {
                    let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
                    u32::from(n) & mask == u32::from(a) & mask
                }
                (IpAddr::V6(n), IpAddr::V6(a)) => {
                    let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
                    u128::from(n) & mask == u128::from(a) & mask
                }
                _ => false,
            },
        }
    }
}

/// A `[namespace/]prefix` name filter (pods and services).
#[derive(Clone, Debug, PartialEq, Eq)]
struct NameMatcher {
    /// Empty: any namespace.
    namespace: String,
    /// Empty: any name.
    prefix: String,
}

impl NameMatcher {
    fn matches(&self, namespace: &str, name: &str) -> bool {
        if namespace.is_empty() && name.is_empty() {
            return false;
        }
        (self.prefix.is_empty() || name.starts_with(&self.prefix))
            && (self.namespace.is_empty() || self.namespace == namespace)
    }
}

/// A [`FlowFilter`] parsed for matching.
#[derive(Clone, Debug)]
pub struct CompiledFilter {
    filter: FlowFilter,
    source_ip: Vec<IpMatcher>,
    destination_ip: Vec<IpMatcher>,
    source_pod: Vec<NameMatcher>,
    destination_pod: Vec<NameMatcher>,
    source_label: Vec<LabelSelector>,
    destination_label: Vec<LabelSelector>,
    source_service: Vec<NameMatcher>,
    destination_service: Vec<NameMatcher>,
    source_port: Vec<u16>,
    destination_port: Vec<u16>,
    verdict: Vec<String>,
    drop_reason_desc: Vec<String>,
    protocol: Vec<String>,
    traffic_direction: Vec<String>,
}

fn compile_ips(field: &str, values: &[String]) -> Result<Vec<IpMatcher>, String> {
    values
        .iter()
        .map(|v| IpMatcher::parse(v).map_err(|e| format!("flow filter {field}: {e}")))
        .collect()
}

fn compile_names(field: &str, values: &[String]) -> Result<Vec<NameMatcher>, String> {
    values
        .iter()
        .map(|v| {
            if v.is_empty() {
                return Err(format!("flow filter {field}: a name must not be empty"));
            }
            // Hubble: `ns/prefix`; a bare name is a pod in `default`.
            let (namespace, prefix) = match v.split_once('/') {
                Some((ns, rest)) => (ns, rest.split('/').next().unwrap_or("")),
                None => ("default", v.as_str()),
            };
            Ok(NameMatcher {
                namespace: namespace.to_string(),
                prefix: prefix.to_string(),
            })
        })
        .collect()
}

fn compile_labels(field: &str, values: &[String]) -> Result<Vec<LabelSelector>, String> {
    values
        .iter()
        .map(|v| LabelSelector::parse(v).map_err(|e| format!("flow filter {field}: {e}")))
        .collect()
}

fn compile_ports(field: &str, values: &[String]) -> Result<Vec<u16>, String> {
    values
        .iter()
        .map(|v| {
            v.parse::<u16>()
                .map_err(|_| format!("flow filter {field}: {v:?} is not a port number"))
        })
        .collect()
}

fn compile_enum(
    field: &str,
    values: &[String],
    known: impl Fn(&str) -> bool,
) -> Result<Vec<String>, String> {
    values
        .iter()
        .map(|v| {
            let upper = v.to_ascii_uppercase();
            if known(&upper) {
                Ok(upper)
            } else {
                Err(format!("flow filter {field}: unknown value {v:?}"))
            }
        })
        .collect()
}

fn compile_protocols(values: &[String]) -> Result<Vec<String>, String> {
    values
        .iter()
        .map(|v| {
            let lower = v.to_ascii_lowercase();
            if L4_PROTOCOLS.contains(&lower.as_str()) || L7_PROTOCOLS.contains(&lower.as_str()) {
                Ok(lower)
            } else {
                Err(format!("flow filter protocol: unknown protocol {v:?}"))
            }
        })
        .collect()
}

fn ip_matches(matchers: &[IpMatcher], address: Option<&str>) -> bool {
    let Some(ip) = address.and_then(|a| a.parse::<IpAddr>().ok()) else {
        return false;
    };
    matchers.iter().any(|m| m.matches(ip))
}

fn endpoint_name(endpoint: Option<&Endpoint>) -> (&str, &str) {
    endpoint.map_or(("", ""), |e| (e.namespace.as_str(), e.pod_name.as_str()))
}

fn service_name(service: Option<&Service>) -> (&str, &str) {
    service.map_or(("", ""), |s| (s.namespace.as_str(), s.name.as_str()))
}

fn labels_match(selectors: &[LabelSelector], endpoint: Option<&Endpoint>) -> bool {
    let labels: &[String] = endpoint.map_or(&[], |e| e.labels.as_slice());
    selectors.iter().any(|s| s.matches(labels))
}

/// Source and destination port of TCP, UDP or SCTP.
fn ports(flow: &Flow) -> Option<(u32, u32)> {
    let l4 = flow.l4.as_ref()?;
    if let Some(tcp) = &l4.tcp {
        return Some((tcp.source_port, tcp.destination_port));
    }
    let udp = l4.udp.as_ref().or(l4.sctp.as_ref())?;
    Some((udp.source_port, udp.destination_port))
}

fn protocol_matches(protocol: &str, flow: &Flow) -> bool {
    let l4 = flow.l4.as_ref();
    let has = |f: fn(&super::Layer4) -> bool| l4.is_some_and(f);
    match protocol {
        "tcp" => has(|l| l.tcp.is_some()),
        "udp" => has(|l| l.udp.is_some()),
        "sctp" => has(|l| l.sctp.is_some()),
        "icmp" => has(|l| l.icmpv4.is_some() || l.icmpv6.is_some()),
        "icmpv4" => has(|l| l.icmpv4.is_some()),
        "icmpv6" => has(|l| l.icmpv6.is_some()),
        "dns" => flow.l7.as_ref().is_some_and(|l7| l7.dns.is_some()),
        _ => false,
    }
}

/// Hubble's node name patterns: `*` matches within a name segment; a
/// pattern with `/` is matched against `cluster/node` (cluster `default`).
fn node_name_matches(pattern: &str, node: &str) -> bool {
    if node.is_empty() {
        return false;
    }
    let node = if pattern.contains('/') && !node.contains('/') {
        format!("default/{node}")
    } else {
        node.to_string()
    };
    glob_matches(pattern.as_bytes(), node.as_bytes())
}

fn glob_matches(pattern: &[u8], text: &[u8]) -> bool {
    match pattern.split_first() {
        None => text.is_empty(),
        Some((b'*', rest)) => (0..=text.len())
            .take_while(|&i| i == 0 || text[i - 1] != b'/')
            .any(|i| glob_matches(rest, &text[i..])),
        Some((c, rest)) => text.first() == Some(c) && glob_matches(rest, &text[1..]),
    }
}

impl CompiledFilter {
    /// The filter this was compiled from.
    pub fn filter(&self) -> &FlowFilter {
        &self.filter
    }

    /// Whether `flow` matches every field set in the filter.
    pub fn matches(&self, flow: &Flow) -> bool {
        let f = &self.filter;
        let ip = flow.ip.as_ref();
        if !self.source_ip.is_empty() && !ip_matches(&self.source_ip, ip.map(|i| i.source.as_str()))
        {
            return false;
        }
        if !self.destination_ip.is_empty()
            && !ip_matches(&self.destination_ip, ip.map(|i| i.destination.as_str()))
        {
            return false;
        }
        let (src_ns, src_pod) = endpoint_name(flow.source.as_ref());
        if !self.source_pod.is_empty()
            && !self.source_pod.iter().any(|m| m.matches(src_ns, src_pod))
        {
            return false;
        }
        let (dst_ns, dst_pod) = endpoint_name(flow.destination.as_ref());
        if !self.destination_pod.is_empty()
            && !self
                .destination_pod
                .iter()
                .any(|m| m.matches(dst_ns, dst_pod))
        {
            return false;
        }
        if !self.source_label.is_empty() && !labels_match(&self.source_label, flow.source.as_ref())
        {
            return false;
        }
        if !self.destination_label.is_empty()
            && !labels_match(&self.destination_label, flow.destination.as_ref())
        {
            return false;
        }
        let (ns, name) = service_name(flow.source_service.as_ref());
        if !self.source_service.is_empty()
            && !self.source_service.iter().any(|m| m.matches(ns, name))
        {
            return false;
        }
        let (ns, name) = service_name(flow.destination_service.as_ref());
        if !self.destination_service.is_empty()
            && !self.destination_service.iter().any(|m| m.matches(ns, name))
        {
            return false;
        }
        let flow_ports = ports(flow);
        if !self.source_port.is_empty()
            && !flow_ports.is_some_and(|(s, _)| self.source_port.iter().any(|p| u32::from(*p) == s))
        {
            return false;
        }
        if !self.destination_port.is_empty()
            && !flow_ports
                .is_some_and(|(_, d)| self.destination_port.iter().any(|p| u32::from(*p) == d))
        {
            return false;
        }
        if !self.verdict.is_empty() && !self.verdict.contains(&flow.verdict) {
            return false;
        }
        if !self.drop_reason_desc.is_empty()
            && !self.drop_reason_desc.contains(&flow.drop_reason_desc)
        {
            return false;
        }
        if !f.event_type.is_empty() && !self.event_type_matches(flow) {
            return false;
        }
        if !self.protocol.is_empty() && !self.protocol.iter().any(|p| protocol_matches(p, flow)) {
            return false;
        }
        if !self.traffic_direction.is_empty()
            && !self.traffic_direction.contains(&flow.traffic_direction)
        {
            return false;
        }
        if !f.reply.is_empty() {
            // Hubble: a flow without a reply view matches only when dropped
            // (then as a non-reply).
            if flow.is_reply.is_none() && flow.verdict != "DROPPED" {
                return false;
            }
            if !f.reply.contains(&flow.is_reply.unwrap_or(false)) {
                return false;
            }
        }
        if !f.node_name.is_empty()
            && !f
                .node_name
                .iter()
                .any(|p| node_name_matches(p, &flow.node_name))
        {
            return false;
        }
        if !f.source_identity.is_empty()
            && !flow
                .source
                .as_ref()
                .is_some_and(|e| f.source_identity.contains(&e.identity))
        {
            return false;
        }
        if !f.destination_identity.is_empty()
            && !flow
                .destination
                .as_ref()
                .is_some_and(|e| f.destination_identity.contains(&e.identity))
        {
            return false;
        }
        true
    }

    fn event_type_matches(&self, flow: &Flow) -> bool {
        let Some(event) = flow.event_type else {
            return false;
        };
        self.filter.event_type.iter().any(|t| {
            (t.event_type == 0 || t.event_type == event.event_type)
                && (!t.match_sub_type || t.sub_type == event.sub_type)
        })
    }
}
