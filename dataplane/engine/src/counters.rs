//! Per-worker counters.
//!
//! Forwarded and dropped frames are also counted per traffic direction
//! ([`TrafficDirection`], Cilium's `direction` label): a frame from a pod is
//! EGRESS, a frame from the uplink INGRESS; a cheap array index per frame.
//!
//! Each worker counts into plain integers while it processes a batch and
//! publishes them into its own cache-line-aligned block of atomics once per
//! batch, so the per-packet path has no atomic read-modify-write and no
//! sharing between cores. Readers (the stats socket) sum the blocks.
//!
//! Policy drops are also counted per rule of the policy state ([`RuleDrops`]):
//! a per-worker array of two counters (ingress, egress) per rule, replaced
//! when a worker sees a new policy state (not per packet), with the counts
//! of rules that are still there (same origin) carried into the new array
//! and those of rules that are gone kept aside, so totals never go back.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use hashbrown::HashMap;
use sluice_pipeline::DropReason;
use sluice_tables::{PolicyDirection, PolicyState, RuleOrigin};

/// Where a frame came from, as Cilium's metrics label it: from a pod
/// (leaving the pod) is EGRESS, from the uplink (entering the node) INGRESS.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TrafficDirection {
    Ingress = 0,
    Egress = 1,
}

impl TrafficDirection {
    pub const ALL: [TrafficDirection; 2] = [TrafficDirection::Ingress, TrafficDirection::Egress];

    /// The direction of frames received on `ingress_ifindex`.
    #[inline]
    pub fn of_frame(ingress_ifindex: u32, uplink_ifindex: Option<u32>) -> TrafficDirection {
        if uplink_ifindex == Some(ingress_ifindex) {
            TrafficDirection::Ingress
        } else {
            TrafficDirection::Egress
        }
    }

    #[inline]
    pub fn index(self) -> usize {
        self as usize
    }

    /// Cilium's label value.
    pub fn label(self) -> &'static str {
        match self {
            TrafficDirection::Ingress => "INGRESS",
            TrafficDirection::Egress => "EGRESS",
        }
    }
}

/// Counts one worker accumulates between publications.
#[derive(Clone, Debug, Default)]
pub struct LocalCounters {
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    /// Frames answered back to their sender by the engine (ARP, ND, ICMP errors).
    pub replies: u64,
    pub drops: [u64; DropReason::COUNT],
    /// Drops per [`TrafficDirection::index`], then per reason.
    pub drops_by_direction: [[u64; DropReason::COUNT]; 2],
    /// Bytes of dropped frames (as received) per direction.
    pub dropped_bytes: [u64; 2],
    /// Frames forwarded (transmitted, not refusals) and their bytes (as
    /// sent), per direction.
    pub forwarded_packets: [u64; 2],
    pub forwarded_bytes: [u64; 2],
    /// Loop iterations that found work / waited for it (busy ratio).
    pub busy_loops: u64,
    pub idle_loops: u64,
    /// Nanoseconds spent in passes that received frames.
    pub busy_ns: u64,
    /// Flow events queued for the events thread / lost to a full queue.
    pub events_emitted: u64,
    pub events_lost: u64,
    /// Policy drops per [`RuleDrops::slot`] of `rules`, since the last publication.
    pub policy_rules: Vec<u64>,
    /// Some entry of `policy_rules` is not zero: publishing walks the array
    /// (two counters per rule, 20k at 10k rules) only then, not on every
    /// idle loop.
    pub policy_rules_dirty: bool,
    /// Where `policy_rules` are published (this worker's current array).
    pub rules: Arc<RuleDrops>,
}

impl LocalCounters {
    /// A dropped (or refused) frame of `bytes` bytes.
    #[inline]
    pub fn drop(&mut self, reason: DropReason, traffic: TrafficDirection, bytes: u64) {
        self.drops_by(reason, traffic, 1);
        self.dropped_bytes[traffic.index()] += bytes;
    }

    /// A policy drop: by reason, and by rule when it names one of the
    /// current state's rules (`rule` out of range, e.g. "no rule", counts by
    /// reason only). `direction` is the policy's (whose table decided),
    /// `traffic` the frame's.
    #[inline]
    pub fn policy_drop(
        &mut self,
        reason: DropReason,
        rule: u32,
        direction: PolicyDirection,
        traffic: TrafficDirection,
        bytes: u64,
    ) {
        self.drop(reason, traffic, bytes);
        if let Some(count) = self.policy_rules.get_mut(RuleDrops::slot(rule, direction)) {
            *count += 1;
            self.policy_rules_dirty = true;
        }
    }

    /// `count` drops whose bytes are unknown (the kernel's socket drops).
    #[inline]
    pub fn drops_by(&mut self, reason: DropReason, traffic: TrafficDirection, count: u64) {
        self.drops[reason.index()] += count;
        self.drops_by_direction[traffic.index()][reason.index()] += count;
    }

    /// A forwarded frame of `bytes` bytes as sent.
    #[inline]
    pub fn forwarded(&mut self, traffic: TrafficDirection, bytes: u64) {
        self.forwarded_packets[traffic.index()] += 1;
        self.forwarded_bytes[traffic.index()] += bytes;
    }
}

/// A worker's published counters. Written only by its worker.
#[derive(Debug, Default)]
#[repr(align(64))]
pub struct WorkerCounters {
    rx_packets: AtomicU64,
    rx_bytes: AtomicU64,
    tx_packets: AtomicU64,
    tx_bytes: AtomicU64,
    replies: AtomicU64,
    busy_loops: AtomicU64,
    idle_loops: AtomicU64,
    busy_ns: AtomicU64,
    events_emitted: AtomicU64,
    events_lost: AtomicU64,
    drops: [AtomicU64; DropReason::COUNT],
    drops_by_direction: [[AtomicU64; DropReason::COUNT]; 2],
    dropped_bytes: [AtomicU64; 2],
    forwarded_packets: [AtomicU64; 2],
    forwarded_bytes: [AtomicU64; 2],
    /// The worker's current per-rule array. The lock is taken only to swap
    /// it (when the worker sees a new policy state) and by readers to clone
    /// the `Arc`; counts go into the array's atomics without it.
    rules: Mutex<Arc<RuleDrops>>,
}

/// Packets and bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Traffic {
    pub packets: u64,
    pub bytes: u64,
}

/// [`Traffic`] per [`TrafficDirection`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ByDirection {
    pub ingress: Traffic,
    pub egress: Traffic,
}

impl ByDirection {
    pub fn get(&self, direction: TrafficDirection) -> Traffic {
        match direction {
            TrafficDirection::Ingress => self.ingress,
            TrafficDirection::Egress => self.egress,
        }
    }

    fn add(&mut self, other: &ByDirection) {
        for (mine, theirs) in [
            (&mut self.ingress, other.ingress),
            (&mut self.egress, other.egress),
        ] {
            mine.packets += theirs.packets;
            mine.bytes += theirs.bytes;
        }
    }
}

/// A point-in-time copy of one worker's counters.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct CounterSnapshot {
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    pub replies: u64,
    pub busy_loops: u64,
    pub idle_loops: u64,
    /// Nanoseconds spent in passes that received frames (busy ratio: its
    /// rate, or this over the uptime).
    pub busy_ns: u64,
    /// Indexed like [`DropReason::ALL`].
    pub drops: Vec<u64>,
    /// Forwarded frames (not refusals) per direction, bytes as sent.
    pub forwarded: ByDirection,
    /// Dropped and refused frames per direction, bytes as received.
    pub dropped: ByDirection,
    /// Flow events queued for the events thread.
    pub events_emitted: u64,
    /// Flow events lost because the worker's queue was full.
    pub events_lost: u64,
    /// Drops per [`TrafficDirection::index`], each indexed like
    /// [`DropReason::ALL`] (shown per reason in the report's `drops`).
    #[serde(skip)]
    pub drops_by_direction: [Vec<u64>; 2],
}

impl WorkerCounters {
    /// Adds the local counts to the published ones and zeroes the local block.
    /// Single writer: a load and a store, no read-modify-write. Relaxed is
    /// enough: readers want eventually consistent totals, not ordering with
    /// other memory.
    pub fn publish(&self, local: &mut LocalCounters) {
        fn add(cell: &AtomicU64, value: &mut u64) {
            if *value != 0 {
                cell.store(cell.load(Ordering::Relaxed) + *value, Ordering::Relaxed);
                *value = 0;
            }
        }
        add(&self.rx_packets, &mut local.rx_packets);
        add(&self.rx_bytes, &mut local.rx_bytes);
        add(&self.tx_packets, &mut local.tx_packets);
        add(&self.tx_bytes, &mut local.tx_bytes);
        add(&self.replies, &mut local.replies);
        add(&self.busy_loops, &mut local.busy_loops);
        add(&self.idle_loops, &mut local.idle_loops);
        add(&self.busy_ns, &mut local.busy_ns);
        add(&self.events_emitted, &mut local.events_emitted);
        add(&self.events_lost, &mut local.events_lost);
        for (cell, value) in self.drops.iter().zip(local.drops.iter_mut()) {
            add(cell, value);
        }
        for direction in 0..2 {
            add(
                &self.forwarded_packets[direction],
                &mut local.forwarded_packets[direction],
            );
            add(
                &self.forwarded_bytes[direction],
                &mut local.forwarded_bytes[direction],
            );
            add(
                &self.dropped_bytes[direction],
                &mut local.dropped_bytes[direction],
            );
            for (cell, value) in self.drops_by_direction[direction]
                .iter()
                .zip(local.drops_by_direction[direction].iter_mut())
            {
                add(cell, value);
            }
        }
        if local.policy_rules_dirty {
            for (cell, value) in local.rules.counts.iter().zip(local.policy_rules.iter_mut()) {
                add(cell, value);
            }
            local.policy_rules_dirty = false;
        }
    }

    /// Moves the worker's per-rule counts to `state`'s rules: publishes what
    /// `local` holds, builds the next array (carrying the counts of rules
    /// that remain) and makes it the one `local` counts into and readers see.
    /// Allocates: called when the policy state changes, never per packet.
    pub fn switch_rules(&self, local: &mut LocalCounters, state: &Arc<PolicyState>) {
        self.publish(local);
        let next = Arc::new(RuleDrops::after(&local.rules, state));
        local.policy_rules = vec![0; next.counts.len()];
        local.rules = Arc::clone(&next);
        *self.rules.lock().unwrap_or_else(PoisonError::into_inner) = next;
    }

    /// Flow events lost to the worker's full queue, as published.
    pub fn events_lost(&self) -> u64 {
        self.events_lost.load(Ordering::Relaxed)
    }

    /// The worker's current per-rule array.
    pub fn rules(&self) -> Arc<RuleDrops> {
        Arc::clone(&self.rules.lock().unwrap_or_else(PoisonError::into_inner))
    }

    pub fn snapshot(&self) -> CounterSnapshot {
        let get = |cell: &AtomicU64| cell.load(Ordering::Relaxed);
        let drops_by_direction: [Vec<u64>; 2] =
            [0, 1].map(|d| self.drops_by_direction[d].iter().map(get).collect());
        let traffic = |packets: u64, bytes: &AtomicU64| Traffic {
            packets,
            bytes: get(bytes),
        };
        let ingress = TrafficDirection::Ingress.index();
        let egress = TrafficDirection::Egress.index();
        CounterSnapshot {
            rx_packets: get(&self.rx_packets),
            rx_bytes: get(&self.rx_bytes),
            tx_packets: get(&self.tx_packets),
            tx_bytes: get(&self.tx_bytes),
            replies: get(&self.replies),
            busy_loops: get(&self.busy_loops),
            idle_loops: get(&self.idle_loops),
            busy_ns: get(&self.busy_ns),
            drops: self.drops.iter().map(get).collect(),
            forwarded: ByDirection {
                ingress: traffic(
                    get(&self.forwarded_packets[ingress]),
                    &self.forwarded_bytes[ingress],
                ),
                egress: traffic(
                    get(&self.forwarded_packets[egress]),
                    &self.forwarded_bytes[egress],
                ),
            },
            dropped: ByDirection {
                ingress: traffic(
                    drops_by_direction[ingress].iter().sum(),
                    &self.dropped_bytes[ingress],
                ),
                egress: traffic(
                    drops_by_direction[egress].iter().sum(),
                    &self.dropped_bytes[egress],
                ),
            },
            events_emitted: get(&self.events_emitted),
            events_lost: get(&self.events_lost),
            drops_by_direction,
        }
    }
}

/// Policy drops per rule of one policy state, published by one worker.
#[derive(Debug, Default)]
pub struct RuleDrops {
    /// The state whose `rules` the counts are indexed by.
    state: Arc<PolicyState>,
    /// Two per rule, at [`RuleDrops::slot`].
    counts: Vec<AtomicU64>,
    /// Counts of rules earlier states had and this one does not.
    gone: Vec<RuleCount>,
}

/// One rule's drops in one direction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleCount {
    pub origin: RuleOrigin,
    pub direction: PolicyDirection,
    pub packets: u64,
}

impl RuleDrops {
    /// The policy state the counts are indexed by.
    pub fn state(&self) -> &Arc<PolicyState> {
        &self.state
    }

    /// Where a rule's count for a direction is.
    #[inline]
    pub fn slot(rule: u32, direction: PolicyDirection) -> usize {
        (rule as usize)
            .saturating_mul(2)
            .saturating_add(usize::from(direction == PolicyDirection::Egress))
    }

    /// The array for `state`, starting from what `previous` counted: a rule
    /// with the same origin keeps its counts, the others go to `gone`.
    fn after(previous: &RuleDrops, state: &Arc<PolicyState>) -> RuleDrops {
        let counts: Vec<AtomicU64> = (0..state.rules.len() * 2)
            .map(|_| AtomicU64::new(0))
            .collect();
        let mut gone: Vec<RuleCount> = Vec::new();
        let before = previous.counted();
        if !before.is_empty() {
            let by_origin: HashMap<&RuleOrigin, usize> = state
                .rules
                .iter()
                .enumerate()
                .map(|(i, origin)| (origin, i))
                .collect();
            for count in before {
                match by_origin.get(&count.origin) {
                    Some(&rule) => {
                        if let Some(cell) = counts.get(Self::slot(rule as u32, count.direction)) {
                            cell.fetch_add(count.packets, Ordering::Relaxed);
                        }
                    }
                    None => gone.push(count),
                }
            }
        }
        RuleDrops {
            state: Arc::clone(state),
            counts,
            gone,
        }
    }

    /// Every rule with drops: the current state's (as `(Some(index), count)`)
    /// and the gone ones (`None`).
    pub fn rows(&self) -> Vec<(Option<u32>, RuleCount)> {
        let mut rows = Vec::new();
        for (slot, cell) in self.counts.iter().enumerate() {
            let packets = cell.load(Ordering::Relaxed);
            let rule = slot / 2;
            let Some(origin) = self.state.rules.get(rule).filter(|_| packets > 0) else {
                continue;
            };
            let direction = if slot % 2 == 0 {
                PolicyDirection::Ingress
            } else {
                PolicyDirection::Egress
            };
            rows.push((
                Some(rule as u32),
                RuleCount {
                    origin: origin.clone(),
                    direction,
                    packets,
                },
            ));
        }
        rows.extend(self.gone.iter().map(|g| (None, g.clone())));
        rows
    }

    /// Every count by origin and direction, current and gone, merged.
    pub fn counted(&self) -> Vec<RuleCount> {
        merge(self.rows().into_iter().map(|(_, count)| count))
    }
}

/// Counts summed by origin and direction, in first-seen order.
pub fn merge(counts: impl IntoIterator<Item = RuleCount>) -> Vec<RuleCount> {
    let mut merged: Vec<RuleCount> = Vec::new();
    let mut at: HashMap<(RuleOrigin, PolicyDirection), usize> = HashMap::new();
    for count in counts {
        match at.get(&(count.origin.clone(), count.direction)) {
            Some(&i) => merged[i].packets += count.packets,
            None => {
                at.insert((count.origin.clone(), count.direction), merged.len());
                merged.push(count);
            }
        }
    }
    merged
}

impl CounterSnapshot {
    /// Sums several workers' snapshots.
    pub fn sum<'a>(items: impl IntoIterator<Item = &'a CounterSnapshot>) -> CounterSnapshot {
        let mut total = CounterSnapshot {
            drops: vec![0; DropReason::COUNT],
            drops_by_direction: [vec![0; DropReason::COUNT], vec![0; DropReason::COUNT]],
            ..CounterSnapshot::default()
        };
        for s in items {
            total.rx_packets += s.rx_packets;
            total.rx_bytes += s.rx_bytes;
            total.tx_packets += s.tx_packets;
            total.tx_bytes += s.tx_bytes;
            total.replies += s.replies;
            total.busy_loops += s.busy_loops;
            total.idle_loops += s.idle_loops;
            total.busy_ns += s.busy_ns;
            total.events_emitted += s.events_emitted;
            total.events_lost += s.events_lost;
            total.forwarded.add(&s.forwarded);
            total.dropped.add(&s.dropped);
            for (t, v) in total.drops.iter_mut().zip(&s.drops) {
                *t += v;
            }
            for (totals, values) in total
                .drops_by_direction
                .iter_mut()
                .zip(&s.drops_by_direction)
            {
                for (t, v) in totals.iter_mut().zip(values) {
                    *t += v;
                }
            }
        }
        total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_accumulates_and_resets_local() {
        let shared = WorkerCounters::default();
        let mut local = LocalCounters {
            rx_packets: 3,
            ..LocalCounters::default()
        };
        local.drop(DropReason::NoRoute, TrafficDirection::Egress, 60);
        shared.publish(&mut local);
        assert_eq!(local.rx_packets, 0);
        local.rx_packets = 2;
        local.drop(DropReason::NoRoute, TrafficDirection::Ingress, 100);
        shared.publish(&mut local);
        let snap = shared.snapshot();
        assert_eq!(snap.rx_packets, 5);
        assert_eq!(snap.drops[DropReason::NoRoute.index()], 2);
        let total = CounterSnapshot::sum([&snap, &snap]);
        assert_eq!(total.rx_packets, 10);
        assert_eq!(total.drops[DropReason::NoRoute.index()], 4);
        assert_eq!(
            total.drops_by_direction[TrafficDirection::Ingress.index()]
                [DropReason::NoRoute.index()],
            2
        );
        assert_eq!(
            total.dropped,
            ByDirection {
                ingress: Traffic {
                    packets: 2,
                    bytes: 200
                },
                egress: Traffic {
                    packets: 2,
                    bytes: 120
                },
            }
        );
    }

    #[test]
    fn forwarded_busy_time_and_events_are_published_per_direction() {
        let shared = WorkerCounters::default();
        let mut local = LocalCounters::default();
        let uplink = Some(3);
        local.forwarded(TrafficDirection::of_frame(3, uplink), 1500);
        local.forwarded(TrafficDirection::of_frame(5, uplink), 60);
        local.forwarded(TrafficDirection::of_frame(5, uplink), 40);
        local.drops_by(DropReason::RxRingDropped, TrafficDirection::Ingress, 4);
        local.busy_ns = 700;
        local.events_emitted = 9;
        local.events_lost = 2;
        shared.publish(&mut local);
        local.busy_ns = 300;
        local.events_lost = 1;
        shared.publish(&mut local);
        let snap = shared.snapshot();
        assert_eq!(
            snap.forwarded.get(TrafficDirection::Ingress),
            Traffic {
                packets: 1,
                bytes: 1500
            }
        );
        assert_eq!(
            snap.forwarded.get(TrafficDirection::Egress),
            Traffic {
                packets: 2,
                bytes: 100
            }
        );
        assert_eq!(snap.dropped.ingress.packets, 4);
        assert_eq!(snap.dropped.egress.packets, 0);
        assert_eq!(
            (snap.busy_ns, snap.events_emitted, snap.events_lost),
            (1000, 9, 3)
        );
        let json = serde_json::to_value(&snap).unwrap();
        assert_eq!(json["forwarded"]["ingress"]["bytes"], 1500);
        assert_eq!(json["dropped"]["ingress"]["packets"], 4);
        assert_eq!(json["events_lost"], 3);
    }

    fn origin(name: &str, path: &str) -> RuleOrigin {
        RuleOrigin {
            kind: "CiliumNetworkPolicy".into(),
            namespace: "default".into(),
            name: name.into(),
            path: path.into(),
        }
    }

    fn state(rules: &[(&str, &str)]) -> Arc<PolicyState> {
        Arc::new(PolicyState {
            rules: rules.iter().map(|(n, p)| origin(n, p)).collect(),
            ..PolicyState::default()
        })
    }

    const FROM_POD: TrafficDirection = TrafficDirection::Egress;

    fn packets(rows: &[RuleCount], name: &str, direction: PolicyDirection) -> u64 {
        rows.iter()
            .filter(|r| r.origin.name == name && r.direction == direction)
            .map(|r| r.packets)
            .sum()
    }

    #[test]
    fn policy_drops_count_by_reason_and_rule_across_policy_changes() {
        use PolicyDirection::{Egress, Ingress};
        let shared = WorkerCounters::default();
        let mut local = LocalCounters::default();
        let first = state(&[
            ("a", "specs[0].ingress[0]"),
            ("b", "specs[0].egressDeny[0]"),
        ]);
        shared.switch_rules(&mut local, &first);
        local.policy_drop(DropReason::PolicyDenied, 0, Ingress, FROM_POD, 60);
        local.policy_drop(DropReason::PolicyDeniedByDenylist, 1, Egress, FROM_POD, 60);
        local.policy_drop(DropReason::PolicyDeniedByDenylist, 1, Egress, FROM_POD, 60);
        // No rule to blame: by reason only.
        local.policy_drop(DropReason::PolicyDenied, u32::MAX, Egress, FROM_POD, 60);
        shared.publish(&mut local);
        let snap = shared.snapshot();
        assert_eq!(snap.drops[DropReason::PolicyDenied.index()], 2);
        assert_eq!(snap.drops[DropReason::PolicyDeniedByDenylist.index()], 2);
        let rows: Vec<RuleCount> = shared.rules().counted();
        assert_eq!(packets(&rows, "a", Ingress), 1);
        assert_eq!(packets(&rows, "b", Egress), 2);
        assert_eq!(rows.len(), 2);

        // Rule "a" moves to index 1, "b" is gone, "c" is new.
        let second = state(&[("c", "specs[0].ingress[0]"), ("a", "specs[0].ingress[0]")]);
        local.policy_drop(DropReason::PolicyDenied, 0, Ingress, FROM_POD, 60); // still rule "a"
        shared.switch_rules(&mut local, &second);
        local.policy_drop(DropReason::PolicyDenied, 1, Ingress, FROM_POD, 60); // "a" again
        local.policy_drop(DropReason::PolicyDenied, 0, Egress, FROM_POD, 60); // "c"
        shared.publish(&mut local);
        let rows = shared.rules().rows();
        let current: Vec<_> = rows.iter().filter(|(i, _)| i.is_some()).collect();
        assert_eq!(current.len(), 2);
        let counted = shared.rules().counted();
        assert_eq!(packets(&counted, "a", Ingress), 3);
        assert_eq!(packets(&counted, "c", Egress), 1);
        assert_eq!(
            packets(&counted, "b", Egress),
            2,
            "a gone rule keeps its count"
        );
        assert!(rows
            .iter()
            .any(|(i, r)| i.is_none() && r.origin.name == "b" && r.packets == 2));
        assert!(rows
            .iter()
            .any(|(i, r)| *i == Some(1) && r.origin.name == "a" && r.packets == 3));
        // Summing workers merges by origin and direction.
        let total = merge(counted.iter().cloned().chain(counted.iter().cloned()));
        assert_eq!(packets(&total, "a", Ingress), 6);
        assert_eq!(total.len(), counted.len());
    }
}
