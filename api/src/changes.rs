//! Deltas between two node states: what the agent sends after the snapshot.
//!
//! [`diff_states`] and [`apply_changes`] are inverse: applying the diff of
//! `a -> b` to `a` gives `b` (a property test checks it). Endpoints are keyed by
//! their node-side interface name, ipcache entries by address, services by id
//! (the agent keeps service ids stable, so an edited service is one upsert).

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use sluice_tables::{
    Endpoint, Gateway, IpCacheEntry, LbConfig, NodeState, PolicyState, Service, Uplink,
};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Change {
    SetGateway {
        gateway: Gateway,
    },
    SetMtu {
        mtu: u32,
    },
    SetUplink {
        uplink: Option<Uplink>,
    },
    /// Adds the endpoint, or replaces the one on the same interface.
    UpsertEndpoint {
        endpoint: Endpoint,
    },
    RemoveEndpoint {
        ifname: String,
    },
    /// Adds the entry, or replaces the one for the same address.
    UpsertIpCache {
        entry: IpCacheEntry,
    },
    /// Removes the entry for this address (and prefix length, for a CIDR).
    RemoveIpCache {
        ip: IpAddr,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        prefix_len: Option<u8>,
    },
    /// Replaces the node-wide load-balancing and masquerade settings.
    SetLb {
        lb: LbConfig,
    },
    /// Adds the service, or replaces the one with the same id.
    UpsertService {
        service: Service,
    },
    RemoveService {
        id: u32,
    },
    /// Replaces the compiled network policy.
    SetPolicy {
        policy: PolicyState,
    },
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ChangeError {
    #[error("change {index}: no endpoint on interface {ifname} to remove")]
    NoSuchEndpoint { index: usize, ifname: String },
    #[error("change {index}: no ipcache entry for {ip} to remove")]
    NoSuchIpCacheEntry { index: usize, ip: IpAddr },
    #[error("change {index}: no service with id {id} to remove")]
    NoSuchService { index: usize, id: u32 },
}

/// The changes that turn `from` into `to`, in a stable order (removals
/// before additions, so an interface or address can change hands in one delta).
pub fn diff_states(from: &NodeState, to: &NodeState) -> Vec<Change> {
    let mut changes = Vec::new();
    if from.gateway != to.gateway {
        changes.push(Change::SetGateway {
            gateway: to.gateway.clone(),
        });
    }
    if from.mtu != to.mtu {
        changes.push(Change::SetMtu { mtu: to.mtu });
    }
    if from.uplink != to.uplink {
        changes.push(Change::SetUplink {
            uplink: to.uplink.clone(),
        });
    }
    let old: BTreeMap<&str, &Endpoint> = from
        .endpoints
        .iter()
        .map(|e| (e.ifname.as_str(), e))
        .collect();
    let new: BTreeMap<&str, &Endpoint> = to
        .endpoints
        .iter()
        .map(|e| (e.ifname.as_str(), e))
        .collect();
    for ifname in old.keys().filter(|k| !new.contains_key(*k)) {
        changes.push(Change::RemoveEndpoint {
            ifname: ifname.to_string(),
        });
    }
    let key = |e: &IpCacheEntry| ((e.ip, e.prefix_len), e.identity);
    let old_ips: BTreeMap<(IpAddr, Option<u8>), u32> = from.ipcache.iter().map(key).collect();
    let new_ips: BTreeMap<(IpAddr, Option<u8>), u32> = to.ipcache.iter().map(key).collect();
    for (ip, prefix_len) in old_ips.keys().filter(|k| !new_ips.contains_key(*k)) {
        changes.push(Change::RemoveIpCache {
            ip: *ip,
            prefix_len: *prefix_len,
        });
    }
    if from.lb != to.lb {
        changes.push(Change::SetLb { lb: to.lb.clone() });
    }
    let old_services: BTreeMap<u32, &Service> = from.services.iter().map(|s| (s.id, s)).collect();
    let new_services: BTreeMap<u32, &Service> = to.services.iter().map(|s| (s.id, s)).collect();
    for id in old_services
        .keys()
        .filter(|k| !new_services.contains_key(*k))
    {
        changes.push(Change::RemoveService { id: *id });
    }
    for (ifname, endpoint) in &new {
        if old.get(ifname) != Some(endpoint) {
            changes.push(Change::UpsertEndpoint {
                endpoint: (*endpoint).clone(),
            });
        }
    }
    for (&(ip, prefix_len), identity) in &new_ips {
        if old_ips.get(&(ip, prefix_len)) != Some(identity) {
            changes.push(Change::UpsertIpCache {
                entry: IpCacheEntry {
                    ip,
                    prefix_len,
                    identity: *identity,
                },
            });
        }
    }
    for (id, service) in &new_services {
        if old_services.get(id) != Some(service) {
            changes.push(Change::UpsertService {
                service: (*service).clone(),
            });
        }
    }
    if from.policy != to.policy {
        changes.push(Change::SetPolicy {
            policy: to.policy.clone(),
        });
    }
    changes
}

/// Applies `changes` to a copy of `state`; on error `state` is untouched.
/// The result still has to pass `Tables::build` (address conflicts and so on).
pub fn apply_changes(state: &NodeState, changes: &[Change]) -> Result<NodeState, ChangeError> {
    let mut next = state.clone();
    for (index, change) in changes.iter().enumerate() {
        match change {
            Change::SetGateway { gateway } => next.gateway = gateway.clone(),
            Change::SetMtu { mtu } => next.mtu = *mtu,
            Change::SetUplink { uplink } => next.uplink = uplink.clone(),
            Change::UpsertEndpoint { endpoint } => {
                match next
                    .endpoints
                    .iter_mut()
                    .find(|e| e.ifname == endpoint.ifname)
                {
                    Some(slot) => *slot = endpoint.clone(),
                    None => next.endpoints.push(endpoint.clone()),
                }
            }
            Change::RemoveEndpoint { ifname } => {
                let before = next.endpoints.len();
                next.endpoints.retain(|e| &e.ifname != ifname);
                if next.endpoints.len() == before {
                    return Err(ChangeError::NoSuchEndpoint {
                        index,
                        ifname: ifname.clone(),
                    });
                }
            }
            Change::UpsertIpCache { entry } => {
                match next
                    .ipcache
                    .iter_mut()
                    .find(|e| e.ip == entry.ip && e.prefix_len == entry.prefix_len)
                {
                    Some(slot) => *slot = entry.clone(),
                    None => next.ipcache.push(entry.clone()),
                }
            }
            Change::RemoveIpCache { ip, prefix_len } => {
                let before = next.ipcache.len();
                next.ipcache
                    .retain(|e| !(&e.ip == ip && &e.prefix_len == prefix_len));
                if next.ipcache.len() == before {
                    return Err(ChangeError::NoSuchIpCacheEntry { index, ip: *ip });
                }
            }
            Change::SetLb { lb } => next.lb = lb.clone(),
            Change::UpsertService { service } => {
                match next.services.iter_mut().find(|s| s.id == service.id) {
                    Some(slot) => *slot = service.clone(),
                    None => next.services.push(service.clone()),
                }
            }
            Change::RemoveService { id } => {
                let before = next.services.len();
                next.services.retain(|s| s.id != *id);
                if next.services.len() == before {
                    return Err(ChangeError::NoSuchService { index, id: *id });
                }
            }
            Change::SetPolicy { policy } => next.policy = policy.clone(),
        }
    }
    Ok(next)
}

/// Node states compared as the engine sees them: endpoint, ipcache and service
/// order does not matter.
pub fn same_state(a: &NodeState, b: &NodeState) -> bool {
    diff_states(a, b).is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use sluice_tables::{
        Backend, BackendState, Frontend, FrontendKind, L4Protocol, LbAlgorithm, MacAddr,
        NoBackendResponse,
    };

    fn gateway() -> Gateway {
        Gateway {
            mac: MacAddr([2, 0x53, 0x4c, 0, 0, 1]),
            ipv4: "10.200.0.1".parse().unwrap(),
            ipv6: "fe80::1".parse().unwrap(),
        }
    }

    fn endpoint(i: u8, identity: u32) -> Endpoint {
        Endpoint {
            name: format!("default/pod{i}"),
            ifindex: 100 + u32::from(i),
            ifname: format!("lxc{i}"),
            mac: MacAddr([2, 0, 0, 0, 0, i]),
            ipv4: Some(std::net::Ipv4Addr::new(10, 200, 0, 10 + i)),
            ipv6: None,
            identity,
        }
    }

    fn state(endpoints: &[(u8, u32)], ips: &[(u8, u32)], mtu: u32) -> NodeState {
        NodeState {
            gateway: gateway(),
            endpoints: endpoints.iter().map(|&(i, id)| endpoint(i, id)).collect(),
            mtu,
            uplink: None,
            ipcache: ips
                .iter()
                .map(|&(i, identity)| IpCacheEntry {
                    ip: IpAddr::from([10, 201, 0, i]),
                    prefix_len: None,
                    identity,
                })
                .collect(),
            services: Vec::new(),
            lb: Default::default(),
            policy: Default::default(),
        }
    }

    /// Service `id` in variant `v`: the variant changes its frontend port,
    /// backends, algorithm and affinity, so two variants differ.
    fn service(id: u32, v: u8) -> Service {
        Service {
            id,
            name: format!("default/svc{id}"),
            port_name: String::new(),
            protocol: if v.is_multiple_of(2) {
                L4Protocol::Tcp
            } else {
                L4Protocol::Udp
            },
            frontends: vec![Frontend {
                kind: FrontendKind::ClusterIp,
                addr: IpAddr::from([10, 96, 0, id as u8]),
                port: 80 + u16::from(v),
            }],
            backends: (0..v)
                .map(|b| Backend {
                    id: id * 100 + u32::from(b),
                    addr: IpAddr::from([10, 200, 0, b]),
                    port: 8080,
                    state: BackendState::Ready,
                    local: b.is_multiple_of(2),
                })
                .collect(),
            algorithm: if v > 2 {
                LbAlgorithm::Maglev
            } else {
                LbAlgorithm::Random
            },
            affinity_timeout_s: (v == 1).then_some(10800),
            external_traffic_local: false,
            internal_traffic_local: v == 3,
            source_ranges: Vec::new(),
        }
    }

    #[test]
    fn a_diff_names_only_what_changed() {
        let a = state(&[(1, 256), (2, 257)], &[(1, 256)], 1500);
        let b = state(&[(2, 300), (3, 257)], &[(1, 256), (2, 300)], 1500);
        let changes = diff_states(&a, &b);
        let text: Vec<String> = changes
            .iter()
            .map(|c| serde_json::to_string(c).unwrap())
            .collect();
        assert_eq!(changes.len(), 4, "{text:#?}");
        assert!(matches!(&changes[0], Change::RemoveEndpoint { ifname } if ifname == "lxc1"));
        assert!(same_state(&apply_changes(&a, &changes).unwrap(), &b));
        assert!(diff_states(&b, &b).is_empty());
    }

    #[test]
    fn an_edited_service_is_one_upsert_and_a_gone_one_a_removal() {
        let mut a = state(&[], &[], 1500);
        a.services = vec![service(1, 1), service(2, 2)];
        let mut b = a.clone();
        b.services = vec![service(2, 3), service(3, 0)];
        let changes = diff_states(&a, &b);
        assert_eq!(changes.len(), 3, "{changes:?}");
        assert_eq!(changes[0], Change::RemoveService { id: 1 });
        assert!(matches!(&changes[1], Change::UpsertService { service } if service.id == 2));
        assert!(matches!(&changes[2], Change::UpsertService { service } if service.id == 3));
        let err = apply_changes(&b, &[Change::RemoveService { id: 9 }]).unwrap_err();
        assert_eq!(err.to_string(), "change 0: no service with id 9 to remove");
    }

    #[test]
    fn removing_what_is_not_there_is_refused_and_the_state_is_kept() {
        let a = state(&[(1, 256)], &[], 1500);
        let changes = vec![
            Change::SetMtu { mtu: 9000 },
            Change::RemoveEndpoint {
                ifname: "lxc9".into(),
            },
        ];
        let err = apply_changes(&a, &changes).unwrap_err();
        assert_eq!(
            err.to_string(),
            "change 1: no endpoint on interface lxc9 to remove"
        );
        assert_eq!(a.mtu, 1500);
    }

    fn arb_state() -> impl Strategy<Value = NodeState> {
        (
            proptest::collection::btree_map(0u8..16, 256u32..260, 0..8),
            proptest::collection::btree_map(0u8..16, 256u32..260, 0..8),
            prop_oneof![Just(1500u32), Just(9000u32)],
            proptest::collection::btree_map(1u32..12, 0u8..4, 0..8),
            any::<bool>(),
        )
            .prop_map(|(eps, ips, mtu, services, drop)| {
                let eps: Vec<(u8, u32)> = eps.into_iter().collect();
                let ips: Vec<(u8, u32)> = ips.into_iter().collect();
                let mut s = state(&eps, &ips, mtu);
                s.services = services.into_iter().map(|(id, v)| service(id, v)).collect();
                if drop {
                    s.lb.no_backend = NoBackendResponse::Drop;
                }
                s
            })
    }

    proptest! {
        #[test]
        fn applying_the_diff_gives_the_target(a in arb_state(), b in arb_state()) {
            let changes = diff_states(&a, &b);
            let got = apply_changes(&a, &changes).unwrap();
            prop_assert!(same_state(&got, &b));
            // And the diff is minimal enough to be empty between equal states.
            prop_assert!(diff_states(&got, &b).is_empty());
            // Services and lb settings are carried, not only compared.
            let mut services = got.services.clone();
            services.sort_by_key(|s| s.id);
            prop_assert_eq!(&services, &b.services);
            prop_assert_eq!(&got.lb, &b.lb);
        }
    }
}
