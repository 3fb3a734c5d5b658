//! The agent's shared state: the store, this node's attachments and
//! identities, and the latest desired state with its generation. The source
//! writes the store, the CNI server writes attachments, the engine client
//! reads the desired state; [`AgentCore::recompute`] ties them together.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use sluice_api::changes::same_state;
use sluice_tables::NodeState;
use tokio::sync::watch;

use crate::attachments::Attachments;
use crate::desired::{self, Desired, NodeConfig};
use crate::identity::IdentityAllocator;
use crate::lb_ids::LbIds;
use crate::policy::PolicyCache;
use crate::services::CompileCache;
use crate::store::StoreHandle;

/// One computed desired state and its generation number.
#[derive(Clone, Debug)]
pub struct Generation {
    pub number: u64,
    pub desired: Arc<Desired>,
}

/// What the agent knows of the engine connection.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EngineView {
    pub connected: bool,
    pub engine: Option<String>,
    pub acked_generation: u64,
    /// The engine's reason, when it refused the latest generation sent.
    pub refusal: Option<String>,
}

/// Whether the engine would see `a` and `b` as different states, as
/// [`same_state`] decides (order does not matter), without diffing every
/// service when one of them changed: the compiler keeps services in a stable
/// order and ids are unique, so a difference between two services with the
/// same id at the same position is a change the engine sees. Anything else
/// goes through the full comparison.
fn engine_state_changed(a: &NodeState, b: &NodeState) -> bool {
    let first_difference = a.services.iter().zip(&b.services).find(|(x, y)| x != y);
    match first_difference {
        Some((x, y)) if x.id == y.id => true,
        None if a.services.len() == b.services.len()
            && a.gateway == b.gateway
            && a.mtu == b.mtu
            && a.uplink == b.uplink
            && a.lb == b.lb
            && a.endpoints == b.endpoints
            && a.ipcache == b.ipcache
            && a.policy == b.policy =>
        {
            false
        }
        _ => !same_state(a, b),
    }
}

#[derive(Debug)]
pub struct AgentCore {
    pub config: NodeConfig,
    pub source: String,
    pub store: StoreHandle,
    attachments: Mutex<Attachments>,
    identities: Mutex<IdentityAllocator>,
    lb_ids: Mutex<LbIds>,
    /// Each Service's compilation, reused while its objects are unchanged.
    services: Mutex<CompileCache>,
    /// Policy parses, local identity numbers and the last compilation.
    policy: Mutex<PolicyCache>,
    desired: watch::Sender<Generation>,
    engine: watch::Sender<EngineView>,
    /// Flows from the engine: ring buffer, live consumers, engine counters.
    pub flows: Arc<crate::flows::FlowHub>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl AgentCore {
    pub fn new(
        config: NodeConfig,
        source: String,
        store: StoreHandle,
        attachments: Attachments,
        identities: IdentityAllocator,
        lb_ids: LbIds,
    ) -> Arc<AgentCore> {
        let mut policy = PolicyCache::default();
        let first = desired::compute_cached(
            &store.snapshot(),
            &attachments,
            &config,
            &identities,
            &lb_ids,
            &mut policy,
        );
        Arc::new(AgentCore {
            config,
            source,
            store,
            attachments: Mutex::new(attachments),
            identities: Mutex::new(identities),
            lb_ids: Mutex::new(lb_ids),
            services: Mutex::new(CompileCache::default()),
            policy: Mutex::new(policy),
            desired: watch::Sender::new(Generation {
                number: 0,
                desired: Arc::new(first),
            }),
            engine: watch::Sender::new(EngineView::default()),
            flows: Arc::new(crate::flows::FlowHub::new(
                crate::flows::DEFAULT_BUFFER_CAPACITY,
            )),
        })
    }

    pub fn attachments(&self) -> MutexGuard<'_, Attachments> {
        lock(&self.attachments)
    }

    /// Recomputes the desired state; a new generation is published only when
    /// something changed. Returns the current generation number.
    pub fn recompute(&self) -> u64 {
        let store = self.store.snapshot();
        let next = {
            let attachments = lock(&self.attachments);
            let mut ids = lock(&self.identities);
            let mut lb_ids = lock(&self.lb_ids);
            let mut cache = lock(&self.services);
            let mut policy = lock(&self.policy);
            match desired::resolve_cached(
                &store,
                &attachments,
                &self.config,
                &mut ids,
                &mut lb_ids,
                &mut cache,
                &mut policy,
            ) {
                Ok(d) => d,
                Err(e) => {
                    tracing::error!("{e}");
                    desired::compute_cached(
                        &store,
                        &attachments,
                        &self.config,
                        &ids,
                        &lb_ids,
                        &mut policy,
                    )
                }
            }
        };
        let mut number = 0;
        self.desired.send_if_modified(|current| {
            // One diff decides both; the listings are compared only when
            // the engine's state is the same.
            let engine_changed = engine_state_changed(&current.desired.state, &next.state);
            let changed = engine_changed || *current.desired != next;
            if changed {
                if engine_changed || current.number == 0 {
                    current.number += 1;
                }
                current.desired = Arc::new(next);
            }
            number = current.number;
            changed
        });
        number
    }

    /// Makes sure the next generation is above `floor` (what a reconnecting
    /// engine already applied), so generations keep increasing across agent restarts.
    pub fn raise_generation_above(&self, floor: u64) {
        self.desired.send_if_modified(|current| {
            if current.number <= floor {
                current.number = floor + 1;
                true
            } else {
                false
            }
        });
    }

    pub fn current(&self) -> Generation {
        self.desired.borrow().clone()
    }

    pub fn subscribe_desired(&self) -> watch::Receiver<Generation> {
        self.desired.subscribe()
    }

    pub fn engine_view(&self) -> EngineView {
        self.engine.borrow().clone()
    }

    pub fn update_engine(&self, change: impl FnOnce(&mut EngineView)) {
        self.engine.send_modify(change);
    }

    /// Waits until the engine acked `generation` or later; false on timeout.
    pub async fn wait_acked(&self, generation: u64, timeout: Duration) -> bool {
        let mut rx = self.engine.subscribe();
        let result = tokio::time::timeout(
            timeout,
            rx.wait_for(|v| v.connected && v.acked_generation >= generation),
        )
        .await;
        matches!(result, Ok(Ok(_)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_tables::{
        Backend, BackendState, Gateway, IpCacheEntry, L4Protocol, LbAlgorithm, LbConfig, MacAddr,
        PolicyState, RuleOrigin, Service,
    };

    fn service(id: u32, backend: &str) -> Service {
        Service {
            id,
            name: format!("default/s{id}"),
            port_name: String::new(),
            protocol: L4Protocol::Tcp,
            frontends: Vec::new(),
            backends: vec![Backend {
                id: id * 10,
                addr: backend.parse().unwrap(),
                port: 80,
                state: BackendState::Ready,
                local: false,
            }],
            algorithm: LbAlgorithm::Random,
            affinity_timeout_s: None,
            external_traffic_local: false,
            internal_traffic_local: false,
            source_ranges: Vec::new(),
        }
    }

    fn state(services: Vec<Service>) -> NodeState {
        NodeState {
            gateway: Gateway {
                mac: MacAddr([2, 0, 0, 0, 0, 1]),
                ipv4: "10.200.0.1".parse().unwrap(),
                ipv6: "fe80::1".parse().unwrap(),
            },
            endpoints: Vec::new(),
            mtu: 1500,
            uplink: None,
            ipcache: Vec::new(),
            services,
            lb: LbConfig::default(),
            policy: Default::default(),
        }
    }

    /// The shortcut agrees with the full comparison: a changed service, the
    /// same services in another order, one more service, another ipcache.
    #[test]
    fn engine_state_changed_agrees_with_same_state() {
        let a = state(vec![service(1, "10.0.0.1"), service(2, "10.0.0.2")]);
        let cases = [
            state(vec![service(1, "10.0.0.1"), service(2, "10.0.0.2")]),
            state(vec![service(1, "10.0.0.1"), service(2, "10.0.0.9")]),
            state(vec![service(2, "10.0.0.2"), service(1, "10.0.0.1")]),
            state(vec![service(1, "10.0.0.1")]),
            state(vec![
                service(1, "10.0.0.1"),
                service(2, "10.0.0.2"),
                service(3, "10.0.0.3"),
            ]),
            NodeState {
                policy: PolicyState {
                    rules: vec![RuleOrigin {
                        kind: "NetworkPolicy".into(),
                        namespace: "default".into(),
                        name: "deny".into(),
                        path: "spec".into(),
                    }],
                    ..Default::default()
                },
                ..a.clone()
            },
            NodeState {
                ipcache: vec![IpCacheEntry {
                    ip: "10.200.0.5".parse().unwrap(),
                    prefix_len: None,
                    identity: 5,
                }],
                ..a.clone()
            },
        ];
        let changed: Vec<bool> = cases.iter().map(|b| engine_state_changed(&a, b)).collect();
        assert_eq!(changed, [false, true, false, true, true, true, true]);
        for b in &cases {
            assert_eq!(engine_state_changed(&a, b), !same_state(&a, b), "{b:?}");
        }
    }
}
