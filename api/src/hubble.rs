//! Hubble's flow model as JSON (`hubble observe -o json`), and the observe
//! request the agent's Hubble socket serves.
//!
//! Field names and shapes follow Hubble's `flow.proto` in its JSON form
//! (proto field names: `IP`, `ipVersion`, `l4.TCP.source_port`, `Type`,
//! `is_reply`, enum values as their names), so tools that read Hubble JSON
//! read Sluice's. Fields Sluice does not produce are left out (as protojson
//! leaves out defaults).
//!
//! The observe protocol (`sluice-agent --hubble-socket`, newline-delimited
//! JSON): the client writes one [`GetFlowsRequest`] line; the agent answers
//! with [`GetFlowsResponse`] lines (flows and lost-event reports, oldest
//! first) and closes the stream when the request is satisfied (never, with
//! `follow`, until the client goes away).

use serde::{Deserialize, Serialize};

pub mod drop_reason;
pub mod event_type;
pub mod filter;
pub mod label_selector;
pub mod query;

pub use filter::{CompiledFilter, EventTypeFilter, FlowFilter};
pub use query::FlowQuery;

/// Observe protocol version (`GetFlowsRequest::protocol`).
pub const OBSERVE_PROTOCOL_VERSION: u32 = 1;

/// Hubble's `GetFlowsRequest`: which flows, filtered how.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct GetFlowsRequest {
    pub protocol: u32,
    /// How many flows: the last `number` (or the first, with `first`); 0 = all
    /// in the buffer.
    #[serde(default)]
    pub number: u64,
    #[serde(default)]
    pub first: bool,
    #[serde(default)]
    pub follow: bool,
    /// Only flows at or after this time (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    /// Only flows at or before this time (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<String>,
    /// A flow must match at least one of these (when there are any) ...
    #[serde(default)]
    pub whitelist: Vec<FlowFilter>,
    /// ... and none of these.
    #[serde(default)]
    pub blacklist: Vec<FlowFilter>,
}

/// One line of the answer (Hubble's `GetFlowsResponse`, as `hubble observe
/// -o json` prints it): exactly one of `flow` and `lost_events`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct GetFlowsResponse {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flow: Option<Flow>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lost_events: Option<LostEvent>,
    /// An error that ends the stream (bad request).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub node_name: String,
    /// RFC 3339 with nanoseconds.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub time: String,
}

/// Hubble's `LostEvent`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LostEvent {
    /// `PERF_EVENT_RING_BUFFER`, `OBSERVER_EVENTS_QUEUE`, `HUBBLE_RING_BUFFER`.
    pub source: String,
    pub num_events_lost: u64,
    /// The worker, for the engine's queues (protojson: `{"value": n}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<Int32Value>,
}

/// `google.protobuf.Int32Value` in JSON form as Hubble prints it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Int32Value {
    pub value: i32,
}

fn is_false(value: &bool) -> bool {
    !*value
}

fn is_zero(value: &u32) -> bool {
    *value == 0
}

/// Hubble's `Flow` (the fields Sluice fills).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Flow {
    /// RFC 3339 with nanoseconds, UTC (`2026-11-28T02:11:20.123456789Z`).
    pub time: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub uuid: String,
    /// `FORWARDED`, `DROPPED`, `ERROR`, `AUDIT`, `REDIRECTED`, `TRACED`,
    /// `TRANSLATED`.
    pub verdict: String,
    /// Deprecated numeric drop reason (Hubble's DropReason number).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub drop_reason: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ethernet: Option<Ethernet>,
    #[serde(rename = "IP", default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<Ip>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub l4: Option<Layer4>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<Endpoint>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination: Option<Endpoint>,
    /// `L3_L4` or `L7`.
    #[serde(rename = "Type")]
    pub flow_type: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub node_name: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub source_names: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub destination_names: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub l7: Option<Layer7>,
    /// Deprecated `reply` (kept as Hubble still prints it for replies).
    #[serde(default, skip_serializing_if = "is_false")]
    pub reply: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_type: Option<CiliumEventType>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_service: Option<Service>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination_service: Option<Service>,
    /// `INGRESS`, `EGRESS` (left out when unknown).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub traffic_direction: String,
    /// Hubble's policy match type (1 L3_L4, 2 L3_ONLY, 3 L4_ONLY, 4 ALL).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub policy_match_type: u32,
    /// `TO_ENDPOINT`, `TO_NETWORK`, `FROM_ENDPOINT`, `FROM_NETWORK`, ...
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub trace_observation_point: String,
    /// `NEW`, `ESTABLISHED`, `REPLY`, ...
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub trace_reason: String,
    /// Hubble's DropReason name (`POLICY_DENIED`, `POLICY_DENY`, ...).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub drop_reason_desc: String,
    /// BoolValue: present (true or false) on trace and drop flows with a
    /// conntrack view.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_reply: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<NetworkInterface>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub egress_allowed_by: Vec<Policy>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ingress_allowed_by: Vec<Policy>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub egress_denied_by: Vec<Policy>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ingress_denied_by: Vec<Policy>,
    /// Deprecated one-line summary (Hubble still prints it).
    #[serde(rename = "Summary", default, skip_serializing_if = "String::is_empty")]
    pub summary: String,
    /// Sluice's additions, under one key so Hubble's fields stay Hubble's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sluice: Option<SluiceFlowInfo>,
}

/// What Sluice adds to Hubble's flow.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SluiceFlowInfo {
    /// Sluice's drop reason name (`policy_denied`, `ct_full`, ...), also for
    /// reasons Hubble has no name for.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub drop_reason: String,
    /// The tuple as received, when a translation changed it (service DNAT,
    /// SNAT, masquerade): `IP` and `l4` show the tuple as sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original: Option<TupleText>,
    /// The engine worker that handled the frame.
    #[serde(default)]
    pub worker: u32,
    /// Frame length in bytes.
    #[serde(default)]
    pub len: u32,
}

/// An address pair with ports, as text.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TupleText {
    pub source: String,
    pub destination: String,
    #[serde(default)]
    pub source_port: u32,
    #[serde(default)]
    pub destination_port: u32,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ethernet {
    pub source: String,
    pub destination: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ip {
    pub source: String,
    /// The source after SNAT (masquerade), when translated.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub source_xlated: String,
    pub destination: String,
    /// `IPv4` or `IPv6`.
    #[serde(rename = "ipVersion")]
    pub ip_version: String,
}

/// Hubble's `Layer4`: exactly one protocol set.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layer4 {
    #[serde(rename = "TCP", default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<Tcp>,
    #[serde(rename = "UDP", default, skip_serializing_if = "Option::is_none")]
    pub udp: Option<Udp>,
    #[serde(rename = "ICMPv4", default, skip_serializing_if = "Option::is_none")]
    pub icmpv4: Option<Icmp>,
    #[serde(rename = "ICMPv6", default, skip_serializing_if = "Option::is_none")]
    pub icmpv6: Option<Icmp>,
    #[serde(rename = "SCTP", default, skip_serializing_if = "Option::is_none")]
    pub sctp: Option<Udp>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tcp {
    #[serde(default)]
    pub source_port: u32,
    #[serde(default)]
    pub destination_port: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flags: Option<TcpFlags>,
}

/// Hubble's `TCPFlags`: only the set flags are printed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[allow(non_snake_case)]
pub struct TcpFlags {
    #[serde(default, skip_serializing_if = "is_false")]
    pub FIN: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub SYN: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub RST: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub PSH: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub ACK: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub URG: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub ECE: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub CWR: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub NS: bool,
}

/// UDP (and SCTP: same two fields).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Udp {
    #[serde(default)]
    pub source_port: u32,
    #[serde(default)]
    pub destination_port: u32,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Icmp {
    #[serde(rename = "type", default)]
    pub icmp_type: u32,
    #[serde(default)]
    pub code: u32,
}

/// Hubble's `Endpoint`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    /// Endpoint id (0 for remote peers).
    #[serde(rename = "ID", default, skip_serializing_if = "is_zero")]
    pub id: u32,
    #[serde(default)]
    pub identity: u32,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub cluster_name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    /// `k8s:app=web`, `reserved:world`, ... sorted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub labels: Vec<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub pod_name: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub workloads: Vec<Workload>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Workload {
    pub name: String,
    pub kind: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Service {
    pub name: String,
    pub namespace: String,
}

/// Hubble's `CiliumEventType`: type 1 drop, 4 trace, 5 policy verdict, 129 L7.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CiliumEventType {
    #[serde(rename = "type")]
    pub event_type: i32,
    #[serde(default, skip_serializing_if = "is_zero_i32")]
    pub sub_type: i32,
}

fn is_zero_i32(value: &i32) -> bool {
    *value == 0
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkInterface {
    #[serde(default)]
    pub index: u32,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
}

/// Hubble's `Policy` (in `*_allowed_by` / `*_denied_by`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Policy {
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    /// `k8s:io.cilium.k8s.policy.derived-from=CiliumNetworkPolicy`, ...
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub labels: Vec<String>,
    #[serde(default)]
    pub revision: u64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub kind: String,
}

/// Hubble's `Layer7` (DNS only in Sluice).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Layer7 {
    /// `REQUEST` or `RESPONSE`.
    #[serde(rename = "type")]
    pub l7_type: String,
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub latency_ns: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<Dns>,
}

fn is_zero_u64(value: &u64) -> bool {
    *value == 0
}

/// Hubble's `DNS`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dns {
    /// The query name with its trailing dot (`example.com.`), as Hubble prints it.
    pub query: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<String>,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub ttl: u32,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cnames: Vec<String>,
    /// Where it was seen (`sluice-engine`; Cilium: `proxy`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub observation_source: String,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub rcode: u32,
    /// `A`, `AAAA`, ...
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub qtypes: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rrtypes: Vec<String>,
}

/// A flow time as Hubble prints it: RFC 3339 in UTC with nanoseconds.
pub fn format_time(unix_ns: u64) -> String {
    let time =
        chrono::DateTime::<chrono::Utc>::from_timestamp_nanos(unix_ns.min(i64::MAX as u64) as i64);
    time.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

/// Parses an RFC 3339 time (any offset) into Unix nanoseconds.
pub fn parse_time(text: &str) -> Result<u64, String> {
    let time = chrono::DateTime::parse_from_rfc3339(text)
        .map_err(|e| format!("{text:?} is not an RFC 3339 time: {e}"))?;
    time.timestamp_nanos_opt()
        .and_then(|ns| u64::try_from(ns).ok())
        .ok_or_else(|| format!("{text:?} is outside the representable time range"))
}

#[cfg(test)]
mod time_tests {
    use super::*;

    #[test]
    fn time_round_trips_with_nanoseconds() {
        let text = format_time(1_795_000_000_123_456_789);
        assert_eq!(text, "2026-11-18T11:06:40.123456789Z");
        assert_eq!(parse_time(&text).unwrap(), 1_795_000_000_123_456_789);
        assert_eq!(
            parse_time("2026-11-18T12:06:40.123456789+01:00").unwrap(),
            1_795_000_000_123_456_789
        );
        assert!(parse_time("yesterday").unwrap_err().contains("yesterday"));
    }
}
