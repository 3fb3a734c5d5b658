//! Per-worker counters.
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
    /// Loop iterations that found work / waited for it (busy ratio).
    pub busy_loops: u64,
    pub idle_loops: u64,
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
    #[inline]
    pub fn drop(&mut self, reason: DropReason) {
        self.drops[reason.index()] += 1;
    }

    /// A policy drop: by reason, and by rule when it names one of the
    /// current state's rules (`rule` out of range, e.g. "no rule", counts by
    /// reason only).
    #[inline]
    pub fn policy_drop(&mut self, reason: DropReason, rule: u32, direction: PolicyDirection) {
        self.drops[reason.index()] += 1;
        if let Some(count) = self.policy_rules.get_mut(RuleDrops::slot(rule, direction)) {
            *count += 1;
            self.policy_rules_dirty = true;
        }
    }

    #[inline]
    pub fn drops_by(&mut self, reason: DropReason, count: u64) {
        self.drops[reason.index()] += count;
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
    drops: [AtomicU64; DropReason::COUNT],
    /// The worker's current per-rule array. The lock is taken only to swap
    /// it (when the worker sees a new policy state) and by readers to clone
    /// the `Arc`; counts go into the array's atomics without it.
    rules: Mutex<Arc<RuleDrops>>,
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
    /// Indexed like [`DropReason::ALL`].
    pub drops: Vec<u64>,
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
        for (cell, value) in self.drops.iter().zip(local.drops.iter_mut()) {
            add(cell, value);
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

    /// The worker's current per-rule array.
    pub fn rules(&self) -> Arc<RuleDrops> {
        Arc::clone(&self.rules.lock().unwrap_or_else(PoisonError::into_inner))
    }

    pub fn snapshot(&self) -> CounterSnapshot {
        let get = |cell: &AtomicU64| cell.load(Ordering::Relaxed);
        CounterSnapshot {
            rx_packets: get(&self.rx_packets),
            rx_bytes: get(&self.rx_bytes),
            tx_packets: get(&self.tx_packets),
            tx_bytes: get(&self.tx_bytes),
            replies: get(&self.replies),
            busy_loops: get(&self.busy_loops),
            idle_loops: get(&self.idle_loops),
            drops: self.drops.iter().map(get).collect(),
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
            for (t, v) in total.drops.iter_mut().zip(&s.drops) {
                *t += v;
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
        local.drop(DropReason::NoRoute);
        shared.publish(&mut local);
        assert_eq!(local.rx_packets, 0);
        local.rx_packets = 2;
        local.drop(DropReason::NoRoute);
        shared.publish(&mut local);
        let snap = shared.snapshot();
        assert_eq!(snap.rx_packets, 5);
        assert_eq!(snap.drops[DropReason::NoRoute.index()], 2);
        let total = CounterSnapshot::sum([&snap, &snap]);
        assert_eq!(total.rx_packets, 10);
        assert_eq!(total.drops[DropReason::NoRoute.index()], 4);
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
        local.policy_drop(DropReason::PolicyDenied, 0, Ingress);
        local.policy_drop(DropReason::PolicyDeniedByDenylist, 1, Egress);
        local.policy_drop(DropReason::PolicyDeniedByDenylist, 1, Egress);
        // No rule to blame: by reason only.
        local.policy_drop(DropReason::PolicyDenied, u32::MAX, Egress);
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
        local.policy_drop(DropReason::PolicyDenied, 0, Ingress); // still rule "a"
        shared.switch_rules(&mut local, &second);
        local.policy_drop(DropReason::PolicyDenied, 1, Ingress); // "a" again
        local.policy_drop(DropReason::PolicyDenied, 0, Egress); // "c"
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
