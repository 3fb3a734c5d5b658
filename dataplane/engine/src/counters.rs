//! Per-worker counters.
//!
//! Each worker counts into plain integers while it processes a batch and
//! publishes them into its own cache-line-aligned block of atomics once per
//! batch, so the per-packet path has no atomic read-modify-write and no
//! sharing between cores. Readers (the stats socket) sum the blocks.

use std::sync::atomic::{AtomicU64, Ordering};

use sluice_pipeline::DropReason;

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
}

impl LocalCounters {
    #[inline]
    pub fn drop(&mut self, reason: DropReason) {
        self.drops[reason.index()] += 1;
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
}
