//! Hubble's `FlowFilter`: the server-side filter `sluice observe` builds from
//! its flags. Within one filter every set field must match (AND); within a
//! field any value may match (OR); a request's whitelist is OR-ed, its
//! blacklist excludes (see [`super::GetFlowsRequest`]).

use serde::{Deserialize, Serialize};

use super::Flow;

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

impl FlowFilter {
    /// Whether `flow` matches every field set in this filter.
    pub fn matches(&self, flow: &Flow) -> bool {
        let _ = flow;
        todo!("filter matching")
    }
}
