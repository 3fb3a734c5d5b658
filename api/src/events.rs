//! The engine's events socket (`sluice-engine --events-socket`): flow events,
//! lost-event reports and counters, from the engine to the agent.
//!
//! Newline-delimited JSON, engine -> subscriber only. A subscriber connects and
//! gets `Hello`, then `Flow`, `Lost` and (once a second) `Stats` messages until
//! it disconnects. The engine never waits for a subscriber: what does not fit
//! its socket buffer is counted and reported as `Lost` with source
//! `ObserverEventsQueue`; events a worker could not queue are reported with
//! source `PerfEventRingBuffer` (Hubble's names for the same two places).
//!
//! Engine flows carry what the engine knows (addresses, ports, interfaces,
//! conntrack outcome, the service and the policy rules by name); the agent
//! adds identities, pods and labels when it turns them into Hubble flows
//! ([`crate::hubble::Flow`]).

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// Events protocol version, checked by the subscriber on `Hello`.
pub const EVENTS_PROTOCOL_VERSION: u32 = 1;

/// One line on the events socket. Tagged `event` (not `kind`: a `Flow`'s
/// fields, flattened into the line, already have a `kind`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum EngineEvent {
    Hello {
        protocol: u32,
        /// The engine's version string.
        engine: String,
        /// Wall-clock time of the engine's monotonic epoch (Unix ns): an
        /// event's time is this plus its monotonic timestamp.
        epoch_unix_ns: u64,
    },
    Flow(Box<EngineFlow>),
    Lost(LostEvents),
    /// The engine's counters: exactly the document `sluice stats --json`
    /// prints (the stats socket's `stats` answer).
    Stats(serde_json::Value),
}

/// Where events were lost (Hubble's `LostEventSource` names).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum LostSource {
    /// A worker's event queue was full (the engine's equivalent of Cilium's
    /// perf ring buffer between datapath and agent).
    PerfEventRingBuffer,
    /// The engine's events thread could not hand events to a slow
    /// subscriber, or the agent's intake queue was full.
    ObserverEventsQueue,
    /// A follower of the agent's ring buffer fell behind and was overtaken.
    HubbleRingBuffer,
}

/// Events lost since the previous report from the same source (and worker).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LostEvents {
    pub source: LostSource,
    pub num_events_lost: u64,
    /// The worker (Hubble's `cpu`) for `PerfEventRingBuffer`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<u32>,
    /// Unix ns when it was reported.
    pub time_unix_ns: u64,
}

/// The kind of event (Hubble's event types: trace 4, drop 1, policy verdict 5,
/// L7 access log 129).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FlowKind {
    /// A forwarded frame (new connection, TCP flag change, or every frame at
    /// monitor aggregation `none`).
    Trace,
    /// A dropped or refused frame, with its reason.
    Drop,
    /// A policy decision on a new connection (allowed or denied), with the rules.
    PolicyVerdict,
    /// A DNS query or answer on a DNS-inspected flow.
    Dns,
}

/// What happened to the frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FlowVerdict {
    Forwarded,
    Dropped,
}

/// Conntrack's view of the frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CtState {
    Untracked,
    New,
    Established,
    Reply,
}

/// Direction seen from the endpoint a decision belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    Ingress,
    Egress,
}

/// An L3/L4 tuple. `protocol` is the IP protocol number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowTuple {
    pub src: IpAddr,
    pub dst: IpAddr,
    #[serde(default)]
    pub src_port: u16,
    #[serde(default)]
    pub dst_port: u16,
    pub protocol: u8,
}

/// A policy rule by name (the compiled rule's origin).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RuleRef {
    /// `CiliumNetworkPolicy`, `CiliumClusterwideNetworkPolicy`, `NetworkPolicy`.
    pub kind: String,
    #[serde(default)]
    pub namespace: String,
    pub name: String,
    /// Path of the rule inside the policy, e.g. `specs[0].ingress[1]`.
    pub path: String,
}

/// A policy decision on the frame: per direction the deciding rule (None when
/// not enforced or decided without a rule).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyOutcome {
    #[serde(default)]
    pub egress_enforced: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress_allowed_by: Option<RuleRef>,
    #[serde(default)]
    pub ingress_enforced: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress_allowed_by: Option<RuleRef>,
    /// For a policy drop: the direction that denied and the rule to blame
    /// (None when no rule is to blame, e.g. default deny).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub denied_direction: Option<Direction>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub denied_by: Option<RuleRef>,
}

/// A drop reason by its stable number and name (`sluice drops`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct DropInfo {
    pub number: u8,
    pub name: String,
}

/// A DNS message on a DNS-inspected flow.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsEvent {
    /// false: query; true: answer.
    pub is_response: bool,
    /// The engine answered this query REFUSED (no DNS rule matched).
    #[serde(default)]
    pub refused_by_policy: bool,
    pub id: u16,
    /// Question name, lowercase, without the trailing dot.
    pub query: String,
    pub qtype: u16,
    #[serde(default)]
    pub rcode: u8,
    #[serde(default)]
    pub ips: Vec<IpAddr>,
    #[serde(default)]
    pub ttl: u32,
}

/// The engine's side of one flow event.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EngineFlow {
    /// Unix ns (the engine's epoch plus the worker's monotonic clock).
    pub time_unix_ns: u64,
    pub worker: u32,
    pub kind: FlowKind,
    pub verdict: FlowVerdict,
    /// For drops (and refusals answered with a RST / ICMP unreachable).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drop_reason: Option<DropInfo>,
    /// Interface the frame arrived on (kernel ifindex) and its name.
    pub ingress_ifindex: u32,
    #[serde(default)]
    pub ingress_ifname: String,
    /// Interface it was sent on, when forwarded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress_ifindex: Option<u32>,
    #[serde(default)]
    pub egress_ifname: String,
    /// The frame came in on the uplink (from outside the node).
    #[serde(default)]
    pub from_uplink: bool,
    /// It leaves through the uplink.
    #[serde(default)]
    pub to_uplink: bool,
    /// Frame length in bytes as received.
    pub len: u32,
    pub ct: CtState,
    /// The tuple as received (None for frames that are not IP or were dropped
    /// before their headers were read).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original: Option<FlowTuple>,
    /// The tuple as sent, when a translation changed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub translated: Option<FlowTuple>,
    /// TCP flags byte (FIN 0x01, SYN 0x02, RST 0x04, PSH 0x08, ACK 0x10,
    /// URG 0x20, ECE 0x40, CWR 0x80).
    #[serde(default)]
    pub tcp_flags: u8,
    /// ICMP type and code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub icmp: Option<(u8, u8)>,
    /// The service (`namespace/name`) whose frontend the flow addressed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<PolicyOutcome>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<DnsEvent>,
}
