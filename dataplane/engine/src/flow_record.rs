//! Flow events on the worker side: which frames become events (the monitor
//! aggregation rule), the fixed-size record a worker queues for the events
//! thread, and the per-worker bounded queues with the flag that says whether
//! anyone is listening.
//!
//! A worker reads [`EventQueues::observing`] once per pass; while it is false
//! it neither builds nor queues anything. While it is true, each frame's
//! [`event_kinds`] decide whether the frame gives a record: one record per
//! frame, whatever the number of events it stands for (the events thread
//! expands it), pushed with a non-blocking push into the worker's own
//! [`ArrayQueue`]. A full queue counts the events as lost.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use crossbeam_queue::ArrayQueue;
use sluice_pipeline::{CtOutcome, DropReason, Observation};
use sluice_tables::PolicyDirection;

use crate::config::MonitorAggregation;
use crate::counters::LocalCounters;

/// TCP flags that mark a connection's edges: FIN, SYN (and SYN-ACK), RST.
const TCP_EDGE_FLAGS: u8 = 0x01 | 0x02 | 0x04;

/// The events one frame stands for, as a bit set.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EventKinds(u8);

impl EventKinds {
    pub const NONE: EventKinds = EventKinds(0);
    /// The frame was dropped or refused.
    pub const DROP: EventKinds = EventKinds(1);
    /// A policy decision was taken on the frame (or denied it).
    pub const POLICY_VERDICT: EventKinds = EventKinds(1 << 1);
    /// A DNS message on a DNS-inspected flow.
    pub const DNS: EventKinds = EventKinds(1 << 2);
    /// A forwarded frame the aggregation level reports.
    pub const TRACE: EventKinds = EventKinds(1 << 3);
    /// Every kind, in the order the events thread writes them.
    pub const ORDER: [EventKinds; 4] = [
        EventKinds::POLICY_VERDICT,
        EventKinds::DROP,
        EventKinds::DNS,
        EventKinds::TRACE,
    ];

    #[inline]
    pub fn contains(self, other: EventKinds) -> bool {
        self.0 & other.0 == other.0 && other.0 != 0
    }

    #[inline]
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// How many events the set stands for.
    #[inline]
    pub fn count(self) -> u64 {
        u64::from(self.0.count_ones())
    }
}

impl std::ops::BitOr for EventKinds {
    type Output = EventKinds;
    #[inline]
    fn bitor(self, other: EventKinds) -> EventKinds {
        EventKinds(self.0 | other.0)
    }
}

impl std::ops::BitOrAssign for EventKinds {
    #[inline]
    fn bitor_assign(&mut self, other: EventKinds) {
        self.0 |= other.0;
    }
}

/// A policy drop's deciding rule (an index into the snapshot's policy
/// rules, `Verdict::NO_RULE` when none) and direction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PolicyBlame {
    pub rule: u32,
    pub direction: PolicyDirection,
}

/// What became of a frame, once the worker tried to transmit it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameFate {
    /// Sent on this interface.
    Forwarded { egress_ifindex: u32 },
    /// Dropped, or refused with an answer to its sender (`Verdict::Reject`),
    /// under `reason`; `policy` for a policy drop.
    Dropped {
        reason: DropReason,
        policy: Option<PolicyBlame>,
    },
}

/// The events a frame gives at `level`:
/// - drop: every dropped or refused frame (at every level; the queue bounds
///   the rate);
/// - policy verdict: every frame on which the pipeline took a policy decision
///   (`observation.policy`: a new connection, or a tracked one re-checked
///   after a policy change) and every policy drop;
/// - DNS: every DNS message on a DNS-inspected flow (`observation.dns`);
/// - trace, forwarded frames only: at `none` every one; at `low` and
///   `medium` the first frame of a new flow (conntrack NEW) and every TCP
///   frame with SYN, FIN or RST in either direction (so the SYN-ACK, the
///   first reply of a TCP connection, and its end); at `maximum` the first
///   frame of a new flow only. Conntrack does not tell the first reply of a
///   non-TCP flow from later ones, so UDP and ICMP replies give no trace
///   event below `none`.
#[inline]
pub fn event_kinds(
    level: MonitorAggregation,
    fate: &FrameFate,
    observation: &Observation,
) -> EventKinds {
    let mut kinds = EventKinds::NONE;
    match fate {
        FrameFate::Dropped { policy, .. } => {
            kinds |= EventKinds::DROP;
            if policy.is_some() {
                kinds |= EventKinds::POLICY_VERDICT;
            }
        }
        FrameFate::Forwarded { .. } => {
            let new_flow = observation.ct == CtOutcome::New;
            let trace = match level {
                MonitorAggregation::None => true,
                MonitorAggregation::Low | MonitorAggregation::Medium => {
                    new_flow || observation.tcp_flags & TCP_EDGE_FLAGS != 0
                }
                MonitorAggregation::Maximum => new_flow,
            };
            if trace {
                kinds |= EventKinds::TRACE;
            }
        }
    }
    if observation.policy.is_some() {
        kinds |= EventKinds::POLICY_VERDICT;
    }
    if observation.dns.is_some() {
        kinds |= EventKinds::DNS;
    }
    kinds
}

/// One frame's events, as a worker queues them: plain `Copy` data, so a push
/// moves bytes into a preallocated slot and nothing is allocated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowRecord {
    /// The engine's monotonic clock (ns since its epoch) for the worker's pass.
    pub time_ns: u64,
    /// The tables generation the frame was processed with: names its policy
    /// rules.
    pub generation: u64,
    pub worker: u32,
    pub kinds: EventKinds,
    pub fate: FrameFate,
    pub ingress_ifindex: u32,
    /// Length as received.
    pub len: u32,
    pub observation: Observation,
}

/// What a worker's pass shares among its frames' records.
#[derive(Clone, Copy, Debug)]
pub struct PassContext {
    pub worker: u32,
    pub generation: u64,
    pub time_ns: u64,
    pub level: MonitorAggregation,
}

/// Queues the frame's events if `level` asks for any. Never blocks, never
/// allocates: a full queue counts the events in `local.events_lost`.
#[inline]
pub fn emit(
    queue: &ArrayQueue<FlowRecord>,
    pass: &PassContext,
    ingress_ifindex: u32,
    len: usize,
    fate: FrameFate,
    observation: &Observation,
    local: &mut LocalCounters,
) {
    let kinds = event_kinds(pass.level, &fate, observation);
    if kinds.is_empty() {
        return;
    }
    let record = FlowRecord {
        time_ns: pass.time_ns,
        generation: pass.generation,
        worker: pass.worker,
        kinds,
        fate,
        ingress_ifindex,
        len: u32::try_from(len).unwrap_or(u32::MAX),
        observation: *observation,
    };
    match queue.push(record) {
        Ok(()) => local.events_emitted += kinds.count(),
        Err(_) => local.events_lost += kinds.count(),
    }
}

/// The workers' event queues and the flag that turns emission on; shared by
/// the workers (producers, one queue each) and the events thread (consumer).
#[derive(Debug)]
pub struct EventQueues {
    /// A subscriber is connected. Written by the events thread, read by each
    /// worker once per pass. Relaxed: it orders nothing else (the records
    /// are published by the queue's own synchronisation), and a pass that
    /// sees it late only starts or stops emitting one pass later.
    observing: AtomicBool,
    level: MonitorAggregation,
    /// One per worker; empty when the engine serves no events socket.
    queues: Vec<ArrayQueue<FlowRecord>>,
    capacity: usize,
    /// Connected subscribers (for the stats document).
    subscribers: AtomicUsize,
    /// Events the events thread could not hand to a slow subscriber, summed
    /// over subscribers.
    subscriber_lost: AtomicU64,
}

impl EventQueues {
    /// Queues of `capacity` records for each of `workers` workers.
    pub fn new(workers: usize, capacity: usize, level: MonitorAggregation) -> EventQueues {
        let capacity = capacity.max(1);
        EventQueues {
            observing: AtomicBool::new(false),
            level,
            queues: (0..workers).map(|_| ArrayQueue::new(capacity)).collect(),
            capacity,
            subscribers: AtomicUsize::new(0),
            subscriber_lost: AtomicU64::new(0),
        }
    }

    /// No events socket: no queues, never observing.
    pub fn disabled(level: MonitorAggregation) -> EventQueues {
        EventQueues {
            observing: AtomicBool::new(false),
            level,
            queues: Vec::new(),
            capacity: 0,
            subscribers: AtomicUsize::new(0),
            subscriber_lost: AtomicU64::new(0),
        }
    }

    /// Whether workers should emit now (one relaxed load).
    #[inline]
    pub fn observing(&self) -> bool {
        self.observing.load(Ordering::Relaxed)
    }

    /// Called by the events thread when its subscriber count changes.
    pub fn set_subscribers(&self, count: usize) {
        self.subscribers.store(count, Ordering::Relaxed);
        self.observing
            .store(count > 0 && !self.queues.is_empty(), Ordering::Relaxed);
    }

    pub fn subscribers(&self) -> usize {
        self.subscribers.load(Ordering::Relaxed)
    }

    pub fn add_subscriber_lost(&self, count: u64) {
        self.subscriber_lost.fetch_add(count, Ordering::Relaxed);
    }

    pub fn subscriber_lost(&self) -> u64 {
        self.subscriber_lost.load(Ordering::Relaxed)
    }

    pub fn level(&self) -> MonitorAggregation {
        self.level
    }

    /// Records per worker queue (0 when disabled).
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Worker `worker`'s queue, if events are enabled.
    #[inline]
    pub fn queue(&self, worker: usize) -> Option<&ArrayQueue<FlowRecord>> {
        self.queues.get(worker)
    }

    /// Every worker's queue, by worker.
    pub fn queues(&self) -> &[ArrayQueue<FlowRecord>] {
        &self.queues
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_pipeline::{DnsNote, PolicyNote, Tuple, DNS_ADDRESSES_MAX, DNS_NAME_MAX};
    use std::net::{IpAddr, Ipv4Addr};

    const SYN: u8 = 0x02;
    const ACK: u8 = 0x10;
    const FIN: u8 = 0x01;
    const RST: u8 = 0x04;
    const PSH: u8 = 0x08;

    fn tcp(ct: CtOutcome, flags: u8) -> Observation {
        Observation {
            ct,
            original: Some(Tuple {
                src: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
                dst: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)),
                src_port: 40000,
                dst_port: 80,
                protocol: 6,
            }),
            tcp_flags: flags,
            ..Observation::default()
        }
    }

    fn udp(ct: CtOutcome) -> Observation {
        let mut o = tcp(ct, 0);
        if let Some(t) = o.original.as_mut() {
            t.protocol = 17;
        }
        o
    }

    const FORWARDED: FrameFate = FrameFate::Forwarded { egress_ifindex: 7 };

    fn traced(level: MonitorAggregation, observation: &Observation) -> bool {
        event_kinds(level, &FORWARDED, observation) == EventKinds::TRACE
    }

    #[test]
    fn trace_events_follow_the_aggregation_level() {
        use MonitorAggregation::*;
        // (frame, none, low, medium, maximum)
        let cases = [
            (
                "tcp syn (new)",
                tcp(CtOutcome::New, SYN),
                [true, true, true, true],
            ),
            (
                "tcp syn-ack (first reply)",
                tcp(CtOutcome::Reply, SYN | ACK),
                [true, true, true, false],
            ),
            (
                "tcp ack (established)",
                tcp(CtOutcome::Established, ACK),
                [true, false, false, false],
            ),
            (
                "tcp data (reply)",
                tcp(CtOutcome::Reply, PSH | ACK),
                [true, false, false, false],
            ),
            (
                "tcp fin",
                tcp(CtOutcome::Established, FIN | ACK),
                [true, true, true, false],
            ),
            (
                "tcp rst (reply)",
                tcp(CtOutcome::Reply, RST),
                [true, true, true, false],
            ),
            ("udp new", udp(CtOutcome::New), [true, true, true, true]),
            (
                "udp reply",
                udp(CtOutcome::Reply),
                [true, false, false, false],
            ),
            (
                "udp established",
                udp(CtOutcome::Established),
                [true, false, false, false],
            ),
            (
                "arp answer (untracked)",
                Observation::default(),
                [true, false, false, false],
            ),
        ];
        for (what, observation, expected) in cases {
            for (level, want) in [None, Low, Medium, Maximum].into_iter().zip(expected) {
                assert_eq!(traced(level, &observation), want, "{what} at {level:?}");
            }
        }
    }

    #[test]
    fn drops_policy_verdicts_and_dns_are_reported_at_every_level() {
        use MonitorAggregation::*;
        let policy = PolicyNote {
            egress_enforced: true,
            egress_rule: 3,
            ingress_enforced: false,
            ingress_rule: u32::MAX,
        };
        let dns = DnsNote {
            is_response: false,
            refused_by_policy: false,
            id: 1,
            qtype: 1,
            rcode: 0,
            name: [0; DNS_NAME_MAX],
            name_len: 0,
            name_truncated: false,
            addresses: [IpAddr::V4(Ipv4Addr::UNSPECIFIED); DNS_ADDRESSES_MAX],
            address_count: 0,
            ttl: 0,
        };
        for level in [None, Low, Medium, Maximum] {
            let plain_drop = FrameFate::Dropped {
                reason: DropReason::NoRoute,
                policy: Option::None,
            };
            assert_eq!(
                event_kinds(level, &plain_drop, &tcp(CtOutcome::Established, ACK)),
                EventKinds::DROP,
                "{level:?}"
            );
            let policy_drop = FrameFate::Dropped {
                reason: DropReason::PolicyDenied,
                policy: Some(PolicyBlame {
                    rule: u32::MAX,
                    direction: PolicyDirection::Ingress,
                }),
            };
            assert_eq!(
                event_kinds(level, &policy_drop, &tcp(CtOutcome::New, SYN)),
                EventKinds::DROP | EventKinds::POLICY_VERDICT,
                "{level:?}"
            );
            // An allowed new connection: its policy verdict, and its trace
            // at every level (it is new).
            let allowed = Observation {
                policy: Some(policy),
                ..tcp(CtOutcome::New, SYN)
            };
            assert_eq!(
                event_kinds(level, &FORWARDED, &allowed),
                EventKinds::POLICY_VERDICT | EventKinds::TRACE,
                "{level:?}"
            );
            // A DNS answer on an established UDP flow: its DNS event; the
            // trace only at `none`.
            let answer = Observation {
                dns: Some(dns),
                ..udp(CtOutcome::Reply)
            };
            let expected = if level == None {
                EventKinds::DNS | EventKinds::TRACE
            } else {
                EventKinds::DNS
            };
            assert_eq!(
                event_kinds(level, &FORWARDED, &answer),
                expected,
                "{level:?}"
            );
        }
    }

    fn pass() -> PassContext {
        PassContext {
            worker: 1,
            generation: 9,
            time_ns: 1234,
            level: MonitorAggregation::Medium,
        }
    }

    #[test]
    fn a_full_queue_counts_events_as_lost_and_keeps_what_it_holds() {
        let queue = ArrayQueue::new(2);
        let mut local = LocalCounters::default();
        let new = tcp(CtOutcome::New, SYN);
        let policy_drop = FrameFate::Dropped {
            reason: DropReason::PolicyDenied,
            policy: Some(PolicyBlame {
                rule: 0,
                direction: PolicyDirection::Egress,
            }),
        };
        for _ in 0..3 {
            emit(&queue, &pass(), 4, 60, FORWARDED, &new, &mut local);
        }
        // Two events in one record: both lost.
        emit(&queue, &pass(), 4, 60, policy_drop, &new, &mut local);
        // Not reported at medium: neither queued nor lost.
        let quiet = tcp(CtOutcome::Established, ACK);
        emit(&queue, &pass(), 4, 60, FORWARDED, &quiet, &mut local);
        assert_eq!(local.events_emitted, 2);
        assert_eq!(local.events_lost, 3);
        assert_eq!(queue.len(), 2);
        let record = queue.pop().unwrap();
        assert_eq!(
            record,
            FlowRecord {
                time_ns: 1234,
                generation: 9,
                worker: 1,
                kinds: EventKinds::TRACE,
                fate: FORWARDED,
                ingress_ifindex: 4,
                len: 60,
                observation: new,
            }
        );
    }

    #[test]
    fn observing_needs_a_subscriber_and_queues() {
        let queues = EventQueues::new(2, 16, MonitorAggregation::Medium);
        assert!(!queues.observing());
        queues.set_subscribers(1);
        assert!(queues.observing());
        queues.set_subscribers(0);
        assert!(!queues.observing());
        let disabled = EventQueues::disabled(MonitorAggregation::Medium);
        disabled.set_subscribers(1);
        assert!(!disabled.observing());
        assert!(disabled.queue(0).is_none());
        assert_eq!(queues.queue(1).map(ArrayQueue::capacity), Some(16));
    }
}
