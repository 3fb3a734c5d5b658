//! The table against a HashMap-free model (a list of flows) under random
//! operations with an advancing injected clock, with capacity large enough
//! that nothing is evicted: results, states and presence must match.

mod common;

use std::net::SocketAddr;

use common::*;
use proptest::prelude::*;
use sluice_conntrack::tcp_flags::{ACK, FIN, RST, SYN};
use sluice_conntrack::{
    next_flow_state, reopens, Conntrack, CtConfig, CtEntry, FlowKey, FlowState, InsertError, Seen,
    TcpState, Timeouts,
};

#[derive(Clone, Debug)]
enum Op {
    Insert {
        flow: FlowChoice,
        established: bool,
    },
    Observe {
        flow: FlowChoice,
        reply: bool,
        flags: u8,
        /// Through [`Conntrack::track`] instead of [`Conntrack::observe`].
        track: bool,
    },
    Remove {
        flow: FlowChoice,
        reply: bool,
    },
    Lookup {
        flow: FlowChoice,
        reply: bool,
    },
    Advance {
        ns: u64,
    },
    Gc {
        buckets: usize,
    },
}

/// A small key space so that keys collide: 3 clients x 2 ports x TCP/UDP x
/// (direct to backend 1, via the service to backend 1, via it to backend 2).
/// "Direct" and "via service to backend 1" share their reply key.
#[derive(Clone, Copy, Debug)]
struct FlowChoice {
    client: u8,
    port: u16,
    udp: bool,
    target: u8,
}

impl FlowChoice {
    fn parts(self, state: FlowState, now_ns: u64) -> (FlowKey, CtEntry, FlowKey, CtEntry) {
        let client = format!("10.0.0.{}", self.client + 1);
        let protocol = if self.udp { UDP } else { TCP };
        let backend = |n: u8| -> SocketAddr { format!("10.0.1.{n}:8080").parse().unwrap() };
        match self.target {
            0 => flow(
                key(&client, 1000 + self.port, "10.0.1.1", 8080, protocol),
                None,
                state,
                now_ns,
            ),
            t => flow(
                key(&client, 1000 + self.port, "10.96.0.1", 80, protocol),
                Some(backend(t)),
                state,
                now_ns,
            ),
        }
    }

    fn key(self, reply: bool) -> FlowKey {
        let (original, _, reply_key, _) = self.parts(FlowState::Unreplied, 0);
        if reply {
            reply_key
        } else {
            original
        }
    }
}

fn flow_choice() -> impl Strategy<Value = FlowChoice> {
    (0u8..3, 0u16..2, any::<bool>(), 0u8..3).prop_map(|(client, port, udp, target)| FlowChoice {
        client,
        port,
        udp,
        target,
    })
}

fn op() -> impl Strategy<Value = Op> {
    let flags = prop_oneof![
        Just(SYN),
        Just(SYN | ACK),
        Just(ACK),
        Just(FIN | ACK),
        Just(RST),
        Just(0u8)
    ];
    prop_oneof![
        3 => (flow_choice(), any::<bool>()).prop_map(|(flow, established)| Op::Insert { flow, established }),
        5 => (flow_choice(), any::<bool>(), flags, any::<bool>()).prop_map(|(flow, reply, flags, track)| Op::Observe { flow, reply, flags, track }),
        1 => (flow_choice(), any::<bool>()).prop_map(|(flow, reply)| Op::Remove { flow, reply }),
        2 => (flow_choice(), any::<bool>()).prop_map(|(flow, reply)| Op::Lookup { flow, reply }),
        2 => prop_oneof![
            Just(0u64), Just(S / 3), Just(S), Just(5 * S), Just(29 * S), Just(31 * S),
            Just(61 * S), Just(119 * S), Just(121 * S)
        ].prop_map(|ns| Op::Advance { ns }),
        1 => (1usize..600).prop_map(|buckets| Op::Gc { buckets }),
    ]
}

#[derive(Clone, Debug)]
struct ModelFlow {
    original: FlowKey,
    reply: FlowKey,
    original_entry: CtEntry,
    reply_entry: CtEntry,
}

impl ModelFlow {
    fn entry(&self, key: &FlowKey) -> Option<CtEntry> {
        let mut entry = if *key == self.original {
            self.original_entry
        } else if *key == self.reply {
            self.reply_entry
        } else {
            return None;
        };
        entry.state = self.original_entry.state;
        entry.last_seen_ns = self.original_entry.last_seen_ns;
        Some(entry)
    }

    fn live(&self, timeouts: &Timeouts, now_ns: u64) -> bool {
        let e = &self.original_entry;
        let timeout = u64::from(timeouts.for_state(self.original.protocol, e.state)) * S;
        now_ns < e.last_seen_ns + timeout
    }
}

struct Model {
    flows: Vec<ModelFlow>,
    timeouts: Timeouts,
}

impl Model {
    fn live_index(&self, key: &FlowKey, now_ns: u64) -> Option<usize> {
        self.flows
            .iter()
            .position(|f| f.entry(key).is_some() && f.live(&self.timeouts, now_ns))
    }

    fn lookup(&self, key: &FlowKey, now_ns: u64) -> Option<CtEntry> {
        self.live_index(key, now_ns)
            .and_then(|i| self.flows[i].entry(key))
    }
}

fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let timeouts = Timeouts::default();
    let ct = Conntrack::new(CtConfig {
        capacity: 4096,
        timeouts,
    });
    let mut model = Model {
        flows: Vec::new(),
        timeouts,
    };
    let mut now = 1_000 * S;
    let pool: Vec<FlowChoice> = (0..3)
        .flat_map(|client| (0..2).map(move |port| (client, port)))
        .flat_map(|(client, port)| [false, true].map(|udp| (client, port, udp)))
        .flat_map(|(client, port, udp)| {
            (0..3).map(move |target| FlowChoice {
                client,
                port,
                udp,
                target,
            })
        })
        .collect();
    for op in ops {
        match op {
            Op::Insert { flow, established } => {
                let state = match (flow.udp, established) {
                    (true, _) => FlowState::Unreplied,
                    (false, true) => FlowState::Tcp(TcpState::Established),
                    (false, false) => FlowState::Tcp(TcpState::SynSent),
                };
                let (o, oe, r, re) = flow.parts(state, now);
                let exists =
                    model.live_index(&o, now).is_some() || model.live_index(&r, now).is_some();
                let result = ct.insert_flow(&o, oe, &r, re);
                if exists {
                    prop_assert_eq!(result, Err(InsertError::Exists));
                } else {
                    prop_assert_eq!(result, Ok(()));
                    // Dead flows sharing a key are gone for good.
                    model
                        .flows
                        .retain(|f| f.entry(&o).is_none() && f.entry(&r).is_none());
                    model.flows.push(ModelFlow {
                        original: o,
                        reply: r,
                        original_entry: oe,
                        reply_entry: re,
                    });
                }
            }
            Op::Observe {
                flow,
                reply,
                flags,
                track,
            } => {
                let key = flow.key(reply);
                let seen = Seen {
                    tcp_flags: if flow.udp { 0 } else { flags },
                };
                let expected = match model.live_index(&key, now) {
                    None => None,
                    Some(i) => {
                        let direction = model.flows[i].entry(&key).unwrap().direction;
                        let e = &mut model.flows[i].original_entry;
                        if reopens(e.state, direction, seen) {
                            model.flows.remove(i);
                            None
                        } else {
                            let next = next_flow_state(e.state, direction, seen);
                            if next != e.state || now >= e.last_seen_ns + S {
                                e.state = next;
                                e.last_seen_ns = e.last_seen_ns.max(now);
                            }
                            model.flows[i].entry(&key)
                        }
                    }
                };
                // `track` must do what `observe` does and return the same
                // fields of the entry.
                if track {
                    let result = ct.track(&key, seen, now).map(|t| {
                        let ids = (t.service_id(), t.backend_id(), t.flags());
                        (
                            t.direction(),
                            t.rewrites(),
                            t.state(),
                            ids,
                            t.last_seen_ns(),
                        )
                    });
                    let expected = expected.map(|e| {
                        let ids = (e.service_id, e.backend_id, e.flags);
                        (e.direction, e.rewrites, e.state, ids, e.last_seen_ns)
                    });
                    prop_assert_eq!(result, expected, "track {:?} at {}", key, now);
                } else {
                    let result = ct.observe(&key, seen, now);
                    prop_assert_eq!(result, expected, "observe {:?} at {}", key, now);
                }
            }
            Op::Remove { flow, reply } => {
                let key = flow.key(reply);
                let result = ct.remove_flow(&key);
                match model.live_index(&key, now) {
                    Some(i) => {
                        prop_assert!(result, "live flow not removed");
                        model.flows.remove(i);
                    }
                    // A dead flow may still be in the table (then true) or
                    // collected already (false).
                    None => model.flows.retain(|f| f.entry(&key).is_none()),
                }
            }
            Op::Lookup { flow, reply } => {
                let key = flow.key(reply);
                prop_assert_eq!(ct.lookup(&key, now), model.lookup(&key, now));
            }
            Op::Advance { ns } => now += ns,
            Op::Gc { buckets } => {
                let dead_before = model
                    .flows
                    .iter()
                    .filter(|f| !f.live(&timeouts, now))
                    .count();
                let removed = ct.gc_step(now, buckets);
                // Each dead flow is at most one removal, plus its orphaned
                // entries (one per overwritten partner).
                prop_assert!(removed <= 2 * dead_before + 2 * model.flows.len() + 72);
                if buckets >= ct.stats().capacity as usize / 8 {
                    model.flows.retain(|f| f.live(&timeouts, now));
                    prop_assert_eq!(ct.stats().entries, 2 * model.flows.len() as u64);
                }
            }
        }
        // Every key of the space agrees with the model after every step.
        for choice in &pool {
            for reply in [false, true] {
                let key = choice.key(reply);
                prop_assert_eq!(ct.lookup(&key, now), model.lookup(&key, now), "{:?}", key);
            }
        }
        let stats = ct.stats();
        prop_assert_eq!(stats.evictions, 0);
        let live = model
            .flows
            .iter()
            .filter(|f| f.live(&timeouts, now))
            .count() as u64;
        prop_assert!(stats.entries >= 2 * live);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]
    #[test]
    fn table_matches_the_model(ops in proptest::collection::vec(op(), 1..120)) {
        run(ops)?;
    }
}
