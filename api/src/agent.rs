//! CNI plugin and CLI -> agent: one request and one response per connection,
//! over the agent's unix socket (default `/run/sluice/agent.sock`).
//!
//! The CNI plugin is stateless: for ADD it asks the agent for addresses
//! ([`AgentRequest::Allocate`]), wires the veth itself, then registers the
//! interface ([`AgentRequest::Register`]); the agent answers once the engine has
//! acked a generation that serves it. DEL is [`AgentRequest::Release`], which is
//! idempotent. Every request carries [`AGENT_PROTOCOL_VERSION`]; the agent
//! refuses another version with [`ErrorKind::VersionMismatch`].

use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use sluice_tables::{LbConfig, MacAddr, RuleOrigin, Service};

/// Version of this protocol; carried in every request.
pub const AGENT_PROTOCOL_VERSION: u32 = 1;

/// One CNI attachment: the spec's key for everything it allocates.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Attachment {
    pub container_id: String,
    /// CNI_IFNAME, the interface name inside the container.
    pub ifname: String,
}

/// The name of the node-side veth of `attachment`: `lxc` and the first 11 hex
/// digits of the FNV-1a-64 hash of `container_id/ifname` (14 characters, within
/// Linux's 15). The CNI plugin derives it too, so DEL finds the veth without
/// the agent.
pub fn host_ifname(attachment: &Attachment) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let key = [
        attachment.container_id.as_bytes(),
        b"/",
        attachment.ifname.as_bytes(),
    ];
    for byte in key.into_iter().flatten() {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("lxc{:016x}", hash)[..14].to_string()
}

/// The Kubernetes pod behind a container, from CNI_ARGS
/// (`K8S_POD_NAMESPACE`, `K8S_POD_NAME`), when the runtime says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodRef {
    pub namespace: String,
    pub name: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    pub protocol: u32,
    #[serde(flatten)]
    pub body: AgentRequest,
}

impl Request {
    pub fn new(body: AgentRequest) -> Request {
        Request {
            protocol: AGENT_PROTOCOL_VERSION,
            body,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "request", rename_all = "snake_case")]
pub enum AgentRequest {
    /// Reserve addresses for an attachment. Asking again for the same
    /// attachment returns the same addresses.
    Allocate {
        attachment: Attachment,
        pod: Option<PodRef>,
        /// CNI_NETNS as given (for `endpoint list`).
        netns: String,
    },
    /// The veth is wired: serve it. Answered after the engine acks.
    Register {
        endpoint: RegisteredEndpoint,
    },
    /// Forget the attachment and free its addresses. Unknown attachments are fine.
    Release {
        attachment: Attachment,
    },
    /// What the agent holds for an attachment (CNI CHECK compares it with the netns).
    Check {
        attachment: Attachment,
    },
    /// CNI GC: release every attachment not in `valid`.
    Gc {
        valid: Vec<Attachment>,
    },
    Status,
    ListEndpoints,
    ListIdentities,
    /// The services of the desired state (what the engine balances) and the
    /// node's load-balancing settings.
    ListServices,
    /// Every policy object the agent read: its rules, the local endpoints it
    /// selects and its errors.
    ListPolicies,
    /// The policy verdict for one new connection, evaluated with the same
    /// lookup the engine runs, on the agent's current desired state.
    TracePolicy {
        trace: TraceRequest,
    },
}

/// The connection `sluice policy trace` asks about. `src` and `dst` are a
/// pod (`namespace/pod`, or a local endpoint's name), an address, `world`
/// (an address no ipcache entry covers) or `host` (this node).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceRequest {
    pub src: String,
    pub dst: String,
    /// Destination port (for ICMP the type; absent: echo request).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dport: Option<u16>,
    pub protocol: TraceProtocol,
}

/// Protocols a trace can ask about (`icmp` means ICMPv6 for IPv6 peers).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TraceProtocol {
    Tcp,
    Udp,
    Sctp,
    Icmp,
}

/// What the CNI plugin reports after wiring an attachment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisteredEndpoint {
    pub attachment: Attachment,
    /// Node-side veth name and ifindex.
    pub host_ifname: String,
    pub host_ifindex: u32,
    /// MAC of the container-side interface.
    pub container_mac: MacAddr,
}

/// One address handed to a container, as CNI results show it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpAssignment {
    pub address: IpAddr,
    /// Prefix length to configure on the container interface.
    pub prefix_len: u8,
    /// The next hop the container routes through (the engine answers for it).
    pub gateway: IpAddr,
}

/// The agent's answer to Allocate and Check.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Allocation {
    pub attachment: Attachment,
    pub ipv4: Option<IpAssignment>,
    pub ipv6: Option<IpAssignment>,
    /// MTU for both ends of the veth.
    pub mtu: u32,
    /// TX and RX queues of both veth ends: one per engine worker, since
    /// worker N serves queue N of every interface.
    #[serde(default = "one_queue")]
    pub queues: u32,
    /// The name the node-side veth must have (derived from the attachment).
    pub host_ifname: String,
    /// Set once registered.
    pub registered: Option<RegisteredEndpoint>,
}

fn one_queue() -> u32 {
    1
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "response", rename_all = "snake_case")]
pub enum AgentResponse {
    Allocated {
        allocation: Allocation,
    },
    Registered {
        generation: u64,
    },
    Released {
        released: bool,
    },
    Checked {
        allocation: Allocation,
    },
    GcDone {
        released: Vec<Attachment>,
    },
    Status {
        status: AgentStatus,
    },
    Endpoints {
        endpoints: Vec<EndpointInfo>,
    },
    Identities {
        identities: Vec<IdentityInfo>,
    },
    Services {
        services: Vec<Service>,
        lb: LbConfig,
    },
    Policies {
        policies: Vec<PolicyInfo>,
    },
    PolicyTrace {
        trace: PolicyTrace,
    },
    Error {
        kind: ErrorKind,
        message: String,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    VersionMismatch,
    /// Malformed or inconsistent request.
    Invalid,
    /// The pod CIDR has no free address of a family.
    Exhausted,
    /// Agent or engine not ready (no engine connection, no ack in time).
    NotReady,
    UnknownAttachment,
    Internal,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentStatus {
    pub agent: String,
    pub node: String,
    /// `manifests:<dir>` or `kubernetes`.
    pub source: String,
    /// Whether the source has delivered its first full listing.
    pub source_synced: bool,
    pub engine_connected: bool,
    /// The engine's own version string from its Welcome.
    pub engine: Option<String>,
    /// Latest generation the agent computed and the latest the engine acked.
    pub desired_generation: u64,
    pub acked_generation: u64,
    /// Last refusal from the engine, if the latest generation was refused.
    pub engine_error: Option<String>,
    pub endpoints: usize,
    pub identities: usize,
    pub ipcache_entries: usize,
    /// Service ports in the desired state (absent from older agents).
    #[serde(default)]
    pub services: usize,
    pub pod_cidrs: Vec<String>,
    /// Manifest or watch problems currently in effect (each names file, object, field).
    pub source_errors: Vec<String>,
    /// The flow pipeline (absent from older agents).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flows: Option<FlowsStatus>,
}

/// The agent's flow buffer and what was lost on the way to it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowsStatus {
    /// Flows received since the agent started.
    pub flows_seen: u64,
    /// Events (flows and lost reports) in the ring buffer now.
    pub buffered: usize,
    /// `--hubble-event-buffer-capacity`.
    pub capacity: usize,
    /// Lost events per source since the agent started.
    pub lost: Vec<(crate::events::LostSource, u64)>,
    /// Unix ns of the newest flow, 0 before the first.
    pub last_flow_unix_ns: u64,
    /// The agent is reading the engine's events socket.
    pub engine_events_connected: bool,
}

impl AgentStatus {
    pub fn in_sync(&self) -> bool {
        self.engine_connected
            && self.engine_error.is_none()
            && self.acked_generation == self.desired_generation
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointInfo {
    /// `namespace/pod`, or the container id when the runtime named no pod.
    pub name: String,
    pub attachment: Attachment,
    pub netns: String,
    pub host_ifname: Option<String>,
    pub host_ifindex: Option<u32>,
    pub ipv4: Option<IpAddr>,
    pub ipv6: Option<IpAddr>,
    pub identity: u32,
    pub labels: Vec<String>,
    /// `allocated` (ADD in progress) or `ready` (served by the engine).
    pub state: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentityInfo {
    pub id: u32,
    /// Labels in Cilium's `source:key=value` form, sorted.
    pub labels: Vec<String>,
    pub reserved: bool,
    /// Endpoints and pod addresses that currently carry it.
    pub endpoints: usize,
    pub ips: usize,
}

/// One policy object (NetworkPolicy, CiliumNetworkPolicy,
/// CiliumClusterwideNetworkPolicy) as the agent applied it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyInfo {
    pub kind: String,
    /// Empty for a clusterwide policy.
    pub namespace: String,
    pub name: String,
    /// Rules in effect (`spec` / `specs` entries; a NetworkPolicy is one);
    /// 0 when the policy failed validation and was left out.
    pub rules: usize,
    /// Local endpoints (names) some rule of the policy selects.
    pub endpoints: Vec<String>,
    /// Validation and compilation problems, each naming the field.
    pub errors: Vec<String>,
}

/// A peer of a traced connection, resolved as the engine would see it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TracePeer {
    /// What was asked (`default/a`, `world`, an address), or for a service
    /// backend its address.
    pub name: String,
    /// The address used (unspecified for `world`).
    pub addr: IpAddr,
    /// The identity the ipcache gives the address (longest prefix match;
    /// world-ipv4 / world-ipv6 when nothing covers it).
    pub identity: u32,
    /// The local endpoint behind the address, if it is on this node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
}

/// How one direction decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TraceDecision {
    /// No policy selects the endpoint for this direction (or mode `never`).
    NotEnforced,
    /// An allow rule matched.
    Allowed,
    /// From the host to a local endpoint with `--allow-localhost=always`.
    AllowedLocalhost,
    /// A deny rule matched (drop reason `policy_denied_by_denylist`).
    Denied,
    /// Enforced and no allow rule matched (drop reason `policy_denied`).
    NoAllowRule,
}

impl TraceDecision {
    pub fn allows(self) -> bool {
        matches!(
            self,
            TraceDecision::NotEnforced | TraceDecision::Allowed | TraceDecision::AllowedLocalhost
        )
    }

    /// The engine's drop reason name for a denying decision.
    pub fn drop_reason(self) -> Option<&'static str> {
        match self {
            TraceDecision::Denied => Some("policy_denied_by_denylist"),
            TraceDecision::NoAllowRule => Some("policy_denied"),
            _ => None,
        }
    }
}

/// One endpoint's lookup in one direction.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirectionTrace {
    /// The local endpoint whose table was looked up.
    pub endpoint: String,
    pub decision: TraceDecision,
    /// The deciding rule (allow or deny), or for `no_allow_rule` the rule
    /// that made the endpoint default-deny.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<RuleOrigin>,
    /// The allowing entry checks DNS queries on the connection (L7 DNS).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dns: bool,
    /// For `no_allow_rule`: the policies (`Kind namespace/name`) that select
    /// the endpoint.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub selected_by: Vec<String>,
}

/// The connection to one destination (one service backend, or the
/// destination itself).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TracePath {
    pub dst: TracePeer,
    /// Protocol number and port (after service translation; ICMP: the type).
    pub protocol: u8,
    pub port: u16,
    /// The source's egress (absent when the source is not on this node).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress: Option<DirectionTrace>,
    /// The destination's ingress (absent when it is not on this node).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress: Option<DirectionTrace>,
    pub allowed: bool,
}

/// The answer to [`AgentRequest::TracePolicy`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyTrace {
    pub src: TracePeer,
    /// The destination as asked (a service frontend before translation).
    pub dst: TracePeer,
    /// The service (`namespace/name`) when the destination was one of its
    /// frontends; then `paths` has one entry per backend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    pub paths: Vec<TracePath>,
    /// Allowed only when every path is (a service without backends is not).
    pub allowed: bool,
    /// What the trace could not know (e.g. toFQDNs peers, which only the
    /// engine's DNS cache knows).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_ifname_is_stable_short_and_per_attachment() {
        let a = |c: &str, i: &str| Attachment {
            container_id: c.into(),
            ifname: i.into(),
        };
        // Pinned (computed independently) so the agent and the plugin never drift apart.
        let name = host_ifname(&a("c1", "eth0"));
        assert_eq!(name, "lxc9e27a0abdbb");
        assert_eq!(name, host_ifname(&a("c1", "eth0")));
        assert_eq!(name.len(), 14);
        assert!(name.starts_with("lxc"));
        assert!(name[3..].chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(name, host_ifname(&a("c1", "eth1")));
        assert_ne!(name, host_ifname(&a("c2", "eth0")));
        assert_eq!(host_ifname(&a("", "")), "lxcaf63a24c860");
    }

    #[test]
    fn requests_carry_the_version_beside_the_tag() {
        let r = Request::new(AgentRequest::Release {
            attachment: Attachment {
                container_id: "c1".into(),
                ifname: "eth0".into(),
            },
        });
        let text = serde_json::to_string(&r).unwrap();
        assert_eq!(
            text,
            r#"{"protocol":1,"request":"release","attachment":{"container_id":"c1","ifname":"eth0"}}"#
        );
        assert_eq!(serde_json::from_str::<Request>(&text).unwrap(), r);
        let s = serde_json::to_string(&Request::new(AgentRequest::Status)).unwrap();
        assert_eq!(s, r#"{"protocol":1,"request":"status"}"#);
        let s = serde_json::to_string(&Request::new(AgentRequest::ListServices)).unwrap();
        assert_eq!(s, r#"{"protocol":1,"request":"list_services"}"#);
    }

    #[test]
    fn policy_requests_and_answers_round_trip() {
        let r = Request::new(AgentRequest::TracePolicy {
            trace: TraceRequest {
                src: "default/a".into(),
                dst: "10.0.0.2".into(),
                dport: Some(80),
                protocol: TraceProtocol::Tcp,
            },
        });
        let text = serde_json::to_string(&r).unwrap();
        assert_eq!(
            text,
            r#"{"protocol":1,"request":"trace_policy","trace":{"src":"default/a","dst":"10.0.0.2","dport":80,"protocol":"tcp"}}"#
        );
        assert_eq!(serde_json::from_str::<Request>(&text).unwrap(), r);
        let peer = |name: &str, addr: &str, identity| TracePeer {
            name: name.into(),
            addr: addr.parse().unwrap(),
            identity,
            endpoint: Some(name.into()),
        };
        let answer = AgentResponse::PolicyTrace {
            trace: PolicyTrace {
                src: peer("default/a", "10.0.0.1", 256),
                dst: peer("default/b", "10.0.0.2", 257),
                service: None,
                paths: vec![TracePath {
                    dst: peer("default/b", "10.0.0.2", 257),
                    protocol: 6,
                    port: 80,
                    egress: None,
                    ingress: Some(DirectionTrace {
                        endpoint: "default/b".into(),
                        decision: TraceDecision::Denied,
                        rule: Some(RuleOrigin {
                            kind: "CiliumNetworkPolicy".into(),
                            namespace: "default".into(),
                            name: "deny-80".into(),
                            path: "spec.ingressDeny[0]".into(),
                        }),
                        dns: false,
                        selected_by: Vec::new(),
                    }),
                    allowed: false,
                }],
                allowed: false,
                notes: Vec::new(),
            },
        };
        let text = serde_json::to_string(&answer).unwrap();
        assert!(text.contains(r#""decision":"denied""#), "{text}");
        assert_eq!(
            serde_json::from_str::<AgentResponse>(&text).unwrap(),
            answer
        );
        assert_eq!(
            TraceDecision::NoAllowRule.drop_reason(),
            Some("policy_denied")
        );
        assert!(TraceDecision::AllowedLocalhost.allows());
        assert!(!TraceDecision::Denied.allows());
    }
}
