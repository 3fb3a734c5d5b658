//! Publication of table snapshots to workers.
//!
//! The control side builds a whole new [`Tables`] value and swaps it in with one
//! atomic pointer store; workers load the current snapshot once per batch. A
//! worker never waits for a writer and a writer never waits for workers: old
//! snapshots are freed when the last worker drops its guard (arc-swap).

use std::sync::Arc;

use arc_swap::{ArcSwap, Guard};

use serde::{Deserialize, Serialize};

use crate::{
    Endpoint, EndpointError, EndpointTable, Gateway, IpCache, IpCacheEntry, LbConfig, PolicyState,
    PolicyTables, Service, ServiceTable, Uplink,
};

/// The desired state of one node as the control side hands it over (today a
/// JSON file written by the lab; later the agent's snapshot).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeState {
    pub gateway: Gateway,
    pub endpoints: Vec<Endpoint>,
    /// IP MTU of the pod interfaces; frames longer than this plus the Ethernet
    /// header are dropped as too large. 1500 when absent.
    #[serde(default = "default_mtu")]
    pub mtu: u32,
    /// The node's uplink, when the engine also carries traffic between the pods
    /// and the outside. Absent: pods reach only each other.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uplink: Option<Uplink>,
    /// Identity of every pod address in the cluster (this node's and others').
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ipcache: Vec<IpCacheEntry>,
    /// Service ports to balance (kube-proxy replacement).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<Service>,
    /// Load-balancing and masquerade settings.
    #[serde(default)]
    pub lb: LbConfig,
    /// Compiled network policy.
    #[serde(default)]
    pub policy: PolicyState,
}

/// The MTU a node state gets when it names none.
pub const DEFAULT_MTU: u32 = 1500;

fn default_mtu() -> u32 {
    DEFAULT_MTU
}

impl NodeState {
    /// No endpoints, no uplink, no ipcache, and an unspecified gateway
    /// (`00:00:00:00:00:00`, `0.0.0.0`, `::`): what the engine serves before an
    /// agent has sent it a state. No interface is attached, so no frame meets it.
    pub fn empty() -> NodeState {
        NodeState {
            gateway: Gateway {
                mac: crate::MacAddr([0; 6]),
                ipv4: std::net::Ipv4Addr::UNSPECIFIED,
                ipv6: std::net::Ipv6Addr::UNSPECIFIED,
            },
            endpoints: Vec::new(),
            mtu: DEFAULT_MTU,
            uplink: None,
            ipcache: Vec::new(),
            services: Vec::new(),
            lb: LbConfig::default(),
            policy: PolicyState::default(),
        }
    }
}

/// Everything the per-packet pipeline reads, as one immutable value.
#[derive(Clone, Debug)]
pub struct Tables {
    /// Increases with every publication; shown by status commands.
    pub generation: u64,
    pub gateway: Gateway,
    pub endpoints: EndpointTable,
    /// IP MTU of the pod interfaces.
    pub mtu: u32,
    /// The node's uplink; `None` when the engine serves pods only.
    pub uplink: Option<Uplink>,
    /// Peer address -> security identity.
    pub ipcache: IpCache,
    /// Frontend -> service -> backends.
    pub services: ServiceTable,
    pub lb: LbConfig,
    /// Per-endpoint policy tables.
    pub policy: PolicyTables,
    /// Changes only when `policy` or `ipcache` (what a verdict depends on)
    /// changed: conntrack keeps the revision a flow was allowed at, and a
    /// flow whose revision is older is checked again at its next packet.
    /// Starts at 1 (conntrack's 0 means "allowed with no policy enforced").
    pub policy_revision: u64,
}

impl Tables {
    /// Builds the tables for a node state; refuses it whole when it conflicts.
    pub fn build(state: NodeState) -> Result<Tables, EndpointError> {
        Tables::build_with(state, None)
    }

    /// [`build`](Self::build), taking every unchanged Maglev table from
    /// `previous` (see [`ServiceTable::build_reusing`]) and its policy index
    /// when the policy is unchanged: what the engine calls for each agent
    /// delta, so that one changed service costs one table fill. The policy
    /// revision stays when the policy and the ipcache are unchanged, else it
    /// is the previous one plus one.
    pub fn build_reusing(state: NodeState, previous: &Tables) -> Result<Tables, EndpointError> {
        Tables::build_with(state, Some(previous))
    }

    fn build_with(state: NodeState, previous: Option<&Tables>) -> Result<Tables, EndpointError> {
        let endpoints = EndpointTable::build(state.endpoints)?;
        let ipcache = IpCache::build(&state.ipcache)?;
        let (policy, policy_revision) = match previous {
            Some(previous) => {
                let policy = PolicyTables::build_reusing(
                    state.policy,
                    &endpoints,
                    &ipcache,
                    &previous.policy,
                )?;
                let same = policy.same_state(&previous.policy) && ipcache == previous.ipcache;
                let revision = if same {
                    previous.policy_revision
                } else {
                    previous.policy_revision + 1
                };
                (policy, revision)
            }
            None => (
                PolicyTables::build_for(state.policy, &endpoints, &ipcache)?,
                1,
            ),
        };
        let services = match previous {
            Some(previous) => {
                ServiceTable::build_reusing(&state.services, &state.lb, &previous.services)?
            }
            None => ServiceTable::build(&state.services, &state.lb)?,
        };
        if let Some(uplink) = &state.uplink {
            uplink.validate()?;
            if let Some(owner) = endpoints.by_ifindex(uplink.ifindex) {
                return Err(EndpointError::UplinkInterface {
                    field: "uplink.ifindex",
                    detail: format!(
                        "{} is already used by endpoint {}",
                        uplink.ifindex, owner.name
                    ),
                });
            }
            if let Some(owner) = endpoints.iter().find(|e| e.ifname == uplink.ifname) {
                return Err(EndpointError::UplinkInterface {
                    field: "uplink.ifname",
                    detail: format!(
                        "{} is already used by endpoint {}",
                        uplink.ifname, owner.name
                    ),
                });
            }
        }
        Ok(Tables {
            generation: 0,
            gateway: state.gateway,
            endpoints,
            mtu: state.mtu,
            uplink: state.uplink,
            ipcache,
            services,
            lb: state.lb,
            policy,
            policy_revision,
        })
    }
}

/// Shared handle through which the control side publishes and workers read.
#[derive(Debug, Clone)]
pub struct TablesHandle {
    current: Arc<ArcSwap<Tables>>,
}

impl TablesHandle {
    pub fn new(initial: Tables) -> TablesHandle {
        TablesHandle {
            current: Arc::new(ArcSwap::from_pointee(initial)),
        }
    }

    /// Lock-free read of the current snapshot; hold it for one batch.
    pub fn load(&self) -> Guard<Arc<Tables>> {
        self.current.load()
    }

    /// Replaces the snapshot; the generation is set to one past the current one.
    pub fn publish(&self, mut next: Tables) -> u64 {
        next.generation = self.current.load().generation + 1;
        let generation = next.generation;
        self.current.store(Arc::new(next));
        generation
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MacAddr;

    fn tables() -> Tables {
        Tables {
            generation: 0,
            gateway: Gateway {
                mac: MacAddr([2, 0x53, 0x4c, 0, 0, 1]),
                ipv4: "10.200.0.1".parse().unwrap(),
                ipv6: "fe80::1".parse().unwrap(),
            },
            endpoints: EndpointTable::default(),
            mtu: DEFAULT_MTU,
            uplink: None,
            ipcache: IpCache::default(),
            services: ServiceTable::default(),
            lb: LbConfig::default(),
            policy: PolicyTables::default(),
            policy_revision: 1,
        }
    }

    #[test]
    fn a_reader_keeps_its_snapshot_while_a_new_one_is_published() {
        let handle = TablesHandle::new(tables());
        let held = handle.load();
        assert_eq!(handle.publish(tables()), 1);
        assert_eq!(held.generation, 0);
        assert_eq!(handle.load().generation, 1);
    }

    #[test]
    fn the_empty_state_builds_tables_without_endpoints() {
        let tables = Tables::build(NodeState::empty()).unwrap();
        assert!(tables.endpoints.is_empty());
        assert!(tables.uplink.is_none());
        assert_eq!(tables.mtu, DEFAULT_MTU);
    }

    #[test]
    fn an_uplink_on_an_endpoint_interface_is_refused_naming_the_field() {
        let json = r#"{
            "gateway": {"mac": "02:53:4c:00:00:01", "ipv4": "10.200.0.1", "ipv6": "fe80::1"},
            "endpoints": [{"name": "a", "ifindex": 5, "ifname": "lxc1", "mac": "02:00:00:00:00:05",
                           "ipv4": "10.200.0.11", "ipv6": null, "identity": 0}],
            "uplink": {"ifname": "uplink0", "ifindex": 5, "mac": "02:00:00:00:00:01",
                       "next_hop_mac": "02:00:00:00:00:02", "pod_cidrs": ["10.200.0.0/24"]}
        }"#;
        let state: NodeState = serde_json::from_str(json).unwrap();
        let err = Tables::build(state.clone()).unwrap_err().to_string();
        assert!(err.starts_with("uplink.ifindex:"), "{err}");
        let mut ok = state;
        ok.uplink.as_mut().unwrap().ifindex = 6;
        assert!(Tables::build(ok).unwrap().uplink.is_some());
        let without: NodeState = serde_json::from_str(&json.replace(
            r#""uplink": {"ifname": "uplink0", "ifindex": 5, "mac": "02:00:00:00:00:01",
                       "next_hop_mac": "02:00:00:00:00:02", "pod_cidrs": ["10.200.0.0/24"]}"#,
            r#""mtu": 1500"#,
        ))
        .unwrap();
        assert!(without.uplink.is_none());
    }

    #[test]
    fn build_reusing_carries_unchanged_maglev_tables_into_the_next_tables() {
        let json = r#"{
            "gateway": {"mac": "02:53:4c:00:00:01", "ipv4": "10.200.0.1", "ipv6": "fe80::1"},
            "endpoints": [],
            "services": [
                {"id": 1, "name": "default/web", "protocol": "TCP", "algorithm": "maglev",
                 "frontends": [{"kind": "cluster_ip", "addr": "10.96.0.10", "port": 80}],
                 "backends": [{"id": 1, "addr": "10.200.0.11", "port": 8080, "state": "ready", "local": true}]},
                {"id": 2, "name": "default/api", "protocol": "TCP", "algorithm": "maglev",
                 "frontends": [{"kind": "cluster_ip", "addr": "10.96.0.20", "port": 80}],
                 "backends": [{"id": 1, "addr": "10.200.0.12", "port": 8080, "state": "ready", "local": true}]}
            ]
        }"#;
        let state: NodeState = serde_json::from_str(json).unwrap();
        let first = Tables::build(state.clone()).unwrap();
        let mut next = state;
        next.services[1].backends[0].port = 9090;
        next.mtu = 9000;
        let second = Tables::build_reusing(next, &first).unwrap();
        let table = |t: &Tables, id| {
            Arc::clone(
                t.services
                    .by_id(id)
                    .unwrap()
                    .maglev_tables()
                    .next()
                    .unwrap(),
            )
        };
        assert!(Arc::ptr_eq(&table(&first, 1), &table(&second, 1)));
        assert!(!Arc::ptr_eq(&table(&first, 2), &table(&second, 2)));
        assert_eq!(second.services.backend(2, 1).unwrap().port, 9090);
        assert_eq!(second.services.len(), 2);
        assert_eq!(second.mtu, 9000);
    }

    #[test]
    fn the_policy_revision_moves_only_when_policy_or_ipcache_change() {
        let state = NodeState::empty();
        let first = Tables::build(state.clone()).unwrap();
        assert_eq!(first.policy_revision, 1);
        let mut next = state;
        next.mtu = 9000;
        let unchanged = Tables::build_reusing(next.clone(), &first).unwrap();
        assert_eq!(unchanged.policy_revision, 1);
        assert!(unchanged.policy.same_state(&first.policy));
        next.ipcache.push(IpCacheEntry {
            ip: "10.0.0.0".parse().unwrap(),
            prefix_len: Some(8),
            identity: 16_777_217,
        });
        let new_prefix = Tables::build_reusing(next.clone(), &unchanged).unwrap();
        assert_eq!(new_prefix.policy_revision, 2);
        next.policy.config.allow_localhost = false;
        let new_policy = Tables::build_reusing(next.clone(), &new_prefix).unwrap();
        assert_eq!(new_policy.policy_revision, 3);
        assert!(!new_policy.policy.same_state(&new_prefix.policy));
        let again = Tables::build_reusing(next, &new_policy).unwrap();
        assert_eq!(again.policy_revision, 3);
    }

    #[test]
    fn a_bad_policy_refuses_the_state_naming_the_field() {
        let mut state = NodeState::empty();
        state.policy.endpoints.push(crate::EndpointPolicy {
            endpoint: "default/a".into(),
            ingress: 0,
            egress: 0,
        });
        let err = Tables::build(state).unwrap_err().to_string();
        assert_eq!(
            err,
            "policy.endpoints[0].ingress: 0 is out of range (tables has 0)"
        );
    }
}
