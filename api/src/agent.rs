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
use sluice_tables::{LbConfig, MacAddr, Service};

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
}
