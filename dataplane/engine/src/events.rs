//! The events thread's side of a flow record: turns a worker's
//! [`FlowRecord`] into the [`EngineFlow`] lines of the events protocol
//! (`sluice_api::events`), one per event kind the record stands for, with
//! names resolved: policy rule indexes to [`RuleRef`]s through the policy
//! state of the tables generation the record names, service ids to
//! `namespace/name`, ifindexes to interface names, the uplink to
//! `from_uplink` / `to_uplink`, and the monotonic timestamp to Unix time.
//!
//! Runs on the events thread only; allocation is fine here.

use std::collections::VecDeque;
use std::sync::Arc;

use hashbrown::HashMap;
use sluice_api::events::{
    CtState, Direction, DnsEvent, DropInfo, EngineFlow, FlowKind, FlowTuple, FlowVerdict,
    PolicyOutcome, RuleRef,
};
use sluice_pipeline::{CtOutcome, DnsNote, Tuple, Verdict};
use sluice_tables::{PolicyDirection, PolicyState, RuleOrigin, Tables};

use crate::flow_record::{EventKinds, FlowRecord, FrameFate};
use crate::stats::EngineShared;

/// Policy states kept for records of older generations: a record is
/// resolved within milliseconds, so a policy rarely changes more than once
/// in between.
const POLICY_STATES_KEPT: usize = 8;

/// Names for records, refreshed from the engine's shared state.
#[derive(Debug)]
pub struct Resolver {
    shared: Arc<EngineShared>,
    /// Unix time (ns) of the engine's monotonic epoch.
    epoch_unix_ns: u64,
    /// The newest tables seen.
    current: Arc<Tables>,
    /// (first generation it was seen at, policy state), oldest first. The
    /// first entry also serves older generations.
    policies: VecDeque<(u64, Arc<PolicyState>)>,
    ifnames: HashMap<u32, String>,
    /// The port board was read since the last [`Resolver::refresh`]: a name
    /// missing from it stays missing until the next round.
    ports_read: bool,
}

impl Resolver {
    pub fn new(shared: Arc<EngineShared>, epoch_unix_ns: u64) -> Resolver {
        let current = Arc::clone(&*shared.tables.load());
        let mut policies = VecDeque::with_capacity(POLICY_STATES_KEPT);
        policies.push_back((0, Arc::clone(current.policy.shared_state())));
        Resolver {
            shared,
            epoch_unix_ns,
            current,
            policies,
            ifnames: HashMap::new(),
            ports_read: false,
        }
    }

    /// Loads the current tables; called once per drain round.
    pub fn refresh(&mut self) {
        let tables = Arc::clone(&*self.shared.tables.load());
        if tables.generation != self.current.generation {
            let state = tables.policy.shared_state();
            let changed = self
                .policies
                .back()
                .is_none_or(|(_, last)| !Arc::ptr_eq(last, state));
            if changed {
                if self.policies.len() == POLICY_STATES_KEPT {
                    self.policies.pop_front();
                }
                self.policies
                    .push_back((tables.generation, Arc::clone(state)));
            }
            self.current = tables;
        }
        self.ports_read = false;
    }

    /// The policy state of tables generation `generation`: the newest kept
    /// state first seen at or before it.
    fn policy_state(&mut self, generation: u64) -> Option<Arc<PolicyState>> {
        if generation > self.current.generation {
            // Published after this round's refresh.
            self.refresh();
        }
        let found = self
            .policies
            .iter()
            .rev()
            .find(|(first, _)| *first <= generation)
            .or(self.policies.front())?;
        Some(Arc::clone(&found.1))
    }

    fn ifname(&mut self, ifindex: u32) -> String {
        if !self.ifnames.contains_key(&ifindex) && !self.ports_read {
            self.ports_read = true;
            self.ifnames = self
                .shared
                .ports
                .list()
                .into_iter()
                .map(|p| (p.ifindex, p.ifname))
                .collect();
        }
        self.ifnames.get(&ifindex).cloned().unwrap_or_default()
    }

    fn service_name(&self, id: u32) -> Option<String> {
        self.current
            .services
            .by_id(id)
            .map(|entry| entry.service.name.clone())
    }

    /// The record's events, in [`EventKinds::ORDER`].
    pub fn flows(&mut self, record: &FlowRecord) -> Vec<EngineFlow> {
        let observation = &record.observation;
        let (verdict, drop_reason, egress_ifindex) = match record.fate {
            FrameFate::Forwarded { egress_ifindex } => {
                (FlowVerdict::Forwarded, None, Some(egress_ifindex))
            }
            FrameFate::Dropped { reason, .. } => (
                FlowVerdict::Dropped,
                Some(DropInfo {
                    number: reason.number(),
                    name: reason.name().to_string(),
                }),
                None,
            ),
        };
        let uplink = self.current.uplink.as_ref().map(|u| u.ifindex);
        let base = EngineFlow {
            time_unix_ns: self.epoch_unix_ns.saturating_add(record.time_ns),
            worker: record.worker,
            kind: FlowKind::Trace,
            verdict,
            drop_reason,
            ingress_ifindex: record.ingress_ifindex,
            ingress_ifname: self.ifname(record.ingress_ifindex),
            egress_ifindex,
            egress_ifname: egress_ifindex.map(|i| self.ifname(i)).unwrap_or_default(),
            from_uplink: uplink == Some(record.ingress_ifindex),
            to_uplink: uplink.is_some() && egress_ifindex == uplink,
            len: record.len,
            ct: ct_state(observation.ct),
            original: observation.original.map(flow_tuple),
            translated: observation.translated.map(flow_tuple),
            tcp_flags: observation.tcp_flags,
            icmp: observation.icmp,
            service: observation.service.and_then(|id| self.service_name(id)),
            policy: None,
            dns: None,
        };
        let policy = if record.kinds.contains(EventKinds::POLICY_VERDICT)
            || record.kinds.contains(EventKinds::DROP)
        {
            self.policy_outcome(record)
        } else {
            None
        };
        let mut flows = Vec::with_capacity(record.kinds.count() as usize);
        for kind in EventKinds::ORDER {
            if !record.kinds.contains(kind) {
                continue;
            }
            let mut flow = base.clone();
            if kind == EventKinds::POLICY_VERDICT {
                flow.kind = FlowKind::PolicyVerdict;
                flow.policy = policy.clone();
            } else if kind == EventKinds::DROP {
                flow.kind = FlowKind::Drop;
                flow.policy = policy.clone();
            } else if kind == EventKinds::DNS {
                flow.kind = FlowKind::Dns;
                flow.dns = observation.dns.as_ref().map(dns_event);
            }
            flows.push(flow);
        }
        flows
    }

    /// The policy decision the record carries, rules by name; None when the
    /// pipeline took none and the frame was not a policy drop.
    fn policy_outcome(&mut self, record: &FlowRecord) -> Option<PolicyOutcome> {
        let note = record.observation.policy;
        let blame = match record.fate {
            FrameFate::Dropped { policy, .. } => policy,
            FrameFate::Forwarded { .. } => None,
        };
        if note.is_none() && blame.is_none() {
            return None;
        }
        let state = self.policy_state(record.generation);
        let rule = |index: u32| -> Option<RuleRef> {
            if index == Verdict::NO_RULE {
                return None;
            }
            state.as_ref()?.rules.get(index as usize).map(rule_ref)
        };
        let mut outcome = PolicyOutcome::default();
        if let Some(note) = note {
            outcome.egress_enforced = note.egress_enforced;
            outcome.egress_allowed_by = rule(note.egress_rule);
            outcome.ingress_enforced = note.ingress_enforced;
            outcome.ingress_allowed_by = rule(note.ingress_rule);
        }
        if let Some(blame) = blame {
            outcome.denied_direction = Some(match blame.direction {
                PolicyDirection::Ingress => Direction::Ingress,
                PolicyDirection::Egress => Direction::Egress,
            });
            outcome.denied_by = rule(blame.rule);
            match blame.direction {
                PolicyDirection::Ingress => outcome.ingress_enforced = true,
                PolicyDirection::Egress => outcome.egress_enforced = true,
            }
        }
        Some(outcome)
    }
}

fn rule_ref(origin: &RuleOrigin) -> RuleRef {
    RuleRef {
        kind: origin.kind.clone(),
        namespace: origin.namespace.clone(),
        name: origin.name.clone(),
        path: origin.path.clone(),
    }
}

fn ct_state(ct: CtOutcome) -> CtState {
    match ct {
        CtOutcome::Untracked => CtState::Untracked,
        CtOutcome::New => CtState::New,
        CtOutcome::Established => CtState::Established,
        CtOutcome::Reply => CtState::Reply,
    }
}

fn flow_tuple(tuple: Tuple) -> FlowTuple {
    FlowTuple {
        src: tuple.src,
        dst: tuple.dst,
        src_port: tuple.src_port,
        dst_port: tuple.dst_port,
        protocol: tuple.protocol,
    }
}

fn dns_event(note: &DnsNote) -> DnsEvent {
    DnsEvent {
        is_response: note.is_response,
        refused_by_policy: note.refused_by_policy,
        id: note.id,
        query: note.name(),
        qtype: note.qtype,
        rcode: note.rcode,
        ips: note.addresses().to_vec(),
        ttl: note.ttl,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::flow_record::PolicyBlame;
    use crate::ports::{KernelSocketStats, PortStatus};
    use sluice_pipeline::{
        DnsNote, DropReason, Observation, PolicyNote, DNS_ADDRESSES_MAX, DNS_NAME_MAX,
    };
    use sluice_tables::NodeState;
    use std::net::{IpAddr, Ipv4Addr};

    fn origin(name: &str, path: &str) -> RuleOrigin {
        RuleOrigin {
            kind: "CiliumNetworkPolicy".into(),
            namespace: "shop".into(),
            name: name.into(),
            path: path.into(),
        }
    }

    /// Tables with two policy rules and one service (id 7, `shop/web`).
    pub(crate) fn tables_with(rules: &[(&str, &str)]) -> Tables {
        let mut state = NodeState::empty();
        state.services = vec![serde_json::from_value(serde_json::json!({
            "id": 7, "name": "shop/web", "protocol": "TCP",
            "frontends": [{"kind": "cluster_ip", "addr": "10.96.0.10", "port": 80}]
        }))
        .unwrap()];
        state.policy.rules = rules.iter().map(|(n, p)| origin(n, p)).collect();
        Tables::build(state).unwrap()
    }

    fn port(worker: usize, ifname: &str, ifindex: u32) -> PortStatus {
        PortStatus {
            worker,
            ifname: ifname.into(),
            ifindex,
            queue: worker as u32,
            state: "up".into(),
            opened_ms: Some(0),
            kernel: KernelSocketStats::default(),
        }
    }

    pub(crate) fn shared_with_ports(tables: Tables) -> Arc<EngineShared> {
        let shared = EngineShared::for_tests(tables, 1);
        shared.ports.set(port(0, "lxc-a", 4));
        shared.ports.set(port(0, "lxc-b", 5));
        Arc::new(shared)
    }

    fn v4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(a, b, c, d))
    }

    pub(crate) fn new_connection() -> Observation {
        Observation {
            ct: CtOutcome::New,
            original: Some(Tuple {
                src: v4(10, 0, 1, 2),
                dst: v4(10, 96, 0, 10),
                src_port: 40000,
                dst_port: 80,
                protocol: 6,
            }),
            translated: Some(Tuple {
                src: v4(10, 0, 1, 2),
                dst: v4(10, 0, 1, 3),
                src_port: 40000,
                dst_port: 8080,
                protocol: 6,
            }),
            service: Some(7),
            tcp_flags: 0x02,
            policy: Some(PolicyNote {
                egress_enforced: true,
                egress_rule: 1,
                ingress_enforced: false,
                ingress_rule: u32::MAX,
            }),
            ..Observation::default()
        }
    }

    fn record(kinds: EventKinds, fate: FrameFate, observation: Observation) -> FlowRecord {
        FlowRecord {
            time_ns: 5_000,
            generation: 0,
            worker: 0,
            kinds,
            fate,
            ingress_ifindex: 4,
            len: 74,
            observation,
        }
    }

    #[test]
    fn a_forwarded_new_connection_gives_its_policy_verdict_and_trace_with_names() {
        let shared = shared_with_ports(tables_with(&[
            ("deny-all", "specs[0].ingressDeny[0]"),
            ("allow-web", "specs[0].egress[0]"),
        ]));
        let mut resolver = Resolver::new(shared, 1_000_000_000);
        resolver.refresh();
        let flows = resolver.flows(&record(
            EventKinds::POLICY_VERDICT | EventKinds::TRACE,
            FrameFate::Forwarded { egress_ifindex: 5 },
            new_connection(),
        ));
        assert_eq!(flows.len(), 2);
        let verdict = &flows[0];
        assert_eq!(verdict.kind, FlowKind::PolicyVerdict);
        assert_eq!(verdict.time_unix_ns, 1_000_005_000);
        assert_eq!(verdict.verdict, FlowVerdict::Forwarded);
        assert_eq!(
            (
                verdict.ingress_ifname.as_str(),
                verdict.egress_ifname.as_str()
            ),
            ("lxc-a", "lxc-b")
        );
        assert_eq!(verdict.egress_ifindex, Some(5));
        assert_eq!(verdict.service.as_deref(), Some("shop/web"));
        assert_eq!(verdict.ct, CtState::New);
        assert_eq!(verdict.translated.map(|t| t.dst_port), Some(8080));
        assert_eq!(
            verdict.policy,
            Some(PolicyOutcome {
                egress_enforced: true,
                egress_allowed_by: Some(RuleRef {
                    kind: "CiliumNetworkPolicy".into(),
                    namespace: "shop".into(),
                    name: "allow-web".into(),
                    path: "specs[0].egress[0]".into(),
                }),
                ..PolicyOutcome::default()
            })
        );
        let trace = &flows[1];
        assert_eq!(trace.kind, FlowKind::Trace);
        assert_eq!(trace.policy, None);
        assert_eq!(trace.tcp_flags, 0x02);
        assert!(!trace.from_uplink && !trace.to_uplink);
    }

    #[test]
    fn a_policy_drop_names_the_denying_rule_of_its_generation() {
        let shared = shared_with_ports(tables_with(&[("old-deny", "specs[0].ingressDeny[0]")]));
        let mut resolver = Resolver::new(Arc::clone(&shared), 0);
        // A new policy at generation 1 (the rule moved to index 1).
        shared.tables.publish(tables_with(&[
            ("other", "specs[0].ingress[0]"),
            ("new-deny", "specs[0].ingressDeny[0]"),
        ]));
        resolver.refresh();
        let drop_fate = |rule| FrameFate::Dropped {
            reason: DropReason::PolicyDeniedByDenylist,
            policy: Some(PolicyBlame {
                rule,
                direction: PolicyDirection::Ingress,
            }),
        };
        let observation = Observation {
            policy: None,
            ..new_connection()
        };
        let kinds = EventKinds::DROP | EventKinds::POLICY_VERDICT;
        let old = resolver.flows(&FlowRecord {
            generation: 0,
            ..record(kinds, drop_fate(0), observation)
        });
        let new = resolver.flows(&FlowRecord {
            generation: 1,
            ..record(kinds, drop_fate(1), observation)
        });
        for (flows, name) in [(&old, "old-deny"), (&new, "new-deny")] {
            assert_eq!(flows.len(), 2);
            assert_eq!(flows[0].kind, FlowKind::PolicyVerdict);
            assert_eq!(flows[1].kind, FlowKind::Drop);
            for flow in flows {
                assert_eq!(flow.verdict, FlowVerdict::Dropped);
                assert_eq!(
                    flow.drop_reason,
                    Some(DropInfo {
                        number: 29,
                        name: "policy_denied_by_denylist".into()
                    })
                );
                let policy = flow.policy.as_ref().unwrap();
                assert_eq!(policy.denied_direction, Some(Direction::Ingress));
                assert!(policy.ingress_enforced);
                assert_eq!(
                    policy.denied_by.as_ref().map(|r| r.name.as_str()),
                    Some(name)
                );
                assert_eq!(flow.egress_ifindex, None);
            }
        }
        // Default deny: no rule to blame.
        let flows = resolver.flows(&FlowRecord {
            generation: 1,
            ..record(kinds, drop_fate(u32::MAX), observation)
        });
        assert_eq!(flows[1].policy.as_ref().unwrap().denied_by, None);
    }

    #[test]
    fn a_dns_answer_gives_its_names_and_addresses() {
        let shared = shared_with_ports(tables_with(&[]));
        let mut resolver = Resolver::new(shared, 0);
        let mut name = [0u8; DNS_NAME_MAX];
        name[..11].copy_from_slice(b"example.org");
        let mut addresses = [v4(0, 0, 0, 0); DNS_ADDRESSES_MAX];
        addresses[0] = v4(192, 0, 2, 1);
        addresses[1] = v4(192, 0, 2, 2);
        let observation = Observation {
            ct: CtOutcome::Reply,
            dns: Some(DnsNote {
                is_response: true,
                refused_by_policy: false,
                id: 77,
                qtype: 1,
                rcode: 0,
                name,
                name_len: 11,
                name_truncated: false,
                addresses,
                address_count: 2,
                ttl: 30,
            }),
            ..Observation::default()
        };
        let flows = resolver.flows(&record(
            EventKinds::DNS,
            FrameFate::Forwarded { egress_ifindex: 4 },
            observation,
        ));
        assert_eq!(flows.len(), 1);
        assert_eq!(flows[0].kind, FlowKind::Dns);
        assert_eq!(
            flows[0].dns,
            Some(DnsEvent {
                is_response: true,
                refused_by_policy: false,
                id: 77,
                query: "example.org".into(),
                qtype: 1,
                rcode: 0,
                ips: vec![v4(192, 0, 2, 1), v4(192, 0, 2, 2)],
                ttl: 30,
            })
        );
        assert_eq!(flows[0].ct, CtState::Reply);
        assert_eq!(flows[0].original, None);
    }
}
