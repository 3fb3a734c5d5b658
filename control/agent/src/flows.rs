//! The agent's flow store: flows from the engine's events socket, turned into
//! Hubble flows, kept in a ring buffer and handed to live consumers (the
//! observe socket's followers, metrics, the service map).
//!
//! The ring holds flows and lost-event reports in arrival order, as Hubble's
//! ring holds both kinds of event, so a reader of the buffer sees where events
//! went missing. Every push goes to the ring and the broadcasts under one
//! lock, which is what lets [`FlowHub::snapshot_and_follow`] hand a follower
//! the buffer and a subscription without a gap or a duplicate between them.

pub mod context;
pub mod enrich;
pub mod summary;

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use sluice_api::events::{LostEvents, LostSource};
use sluice_api::hubble::Flow;
use tokio::sync::broadcast;

/// Cilium's default `--hubble-event-buffer-capacity`.
pub const DEFAULT_BUFFER_CAPACITY: usize = 4095;

/// How many events a live consumer may fall behind before it is overtaken
/// (and told how many it missed).
pub const LIVE_CAPACITY: usize = 8192;

/// One entry of the ring buffer and of the live event stream.
#[derive(Clone, Debug, PartialEq)]
pub enum HubEvent {
    Flow(Arc<Flow>),
    Lost(LostEvents),
}

/// Totals for `sluice status` and metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FlowHubStatus {
    /// Flows pushed since the agent started.
    pub flows_seen: u64,
    /// Events (flows and lost reports) in the ring buffer now.
    pub buffered: usize,
    pub capacity: usize,
    /// Lost events per source since the agent started.
    pub lost: Vec<(LostSource, u64)>,
    /// Unix ns of the newest flow, 0 before the first.
    pub last_flow_unix_ns: u64,
    /// The agent is reading the engine's events socket.
    pub engine_events_connected: bool,
}

#[derive(Debug)]
struct Ring {
    events: VecDeque<HubEvent>,
    capacity: usize,
}

impl Ring {
    fn push(&mut self, event: HubEvent) {
        if self.events.len() == self.capacity {
            self.events.pop_front();
        }
        self.events.push_back(event);
    }
}

/// Shared by the events client (producer) and every consumer.
#[derive(Debug)]
pub struct FlowHub {
    ring: Mutex<Ring>,
    live: broadcast::Sender<Arc<Flow>>,
    events: broadcast::Sender<HubEvent>,
    lost: Mutex<BTreeMap<LostSourceKey, u64>>,
    stats: Mutex<Option<Arc<serde_json::Value>>>,
    flows_seen: AtomicU64,
    last_flow_unix_ns: AtomicU64,
    engine_events_connected: AtomicBool,
}

/// `LostSource` in a fixed order (for sorted totals).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct LostSourceKey(u8);

impl LostSourceKey {
    fn of(source: LostSource) -> LostSourceKey {
        LostSourceKey(match source {
            LostSource::PerfEventRingBuffer => 0,
            LostSource::ObserverEventsQueue => 1,
            LostSource::HubbleRingBuffer => 2,
        })
    }

    fn source(self) -> LostSource {
        match self.0 {
            0 => LostSource::PerfEventRingBuffer,
            1 => LostSource::ObserverEventsQueue,
            _ => LostSource::HubbleRingBuffer,
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl FlowHub {
    /// A hub whose ring buffer keeps the last `capacity` events (at least one).
    pub fn new(capacity: usize) -> FlowHub {
        let (live, _) = broadcast::channel(LIVE_CAPACITY);
        let (events, _) = broadcast::channel(LIVE_CAPACITY);
        FlowHub {
            ring: Mutex::new(Ring {
                events: VecDeque::new(),
                capacity: capacity.max(1),
            }),
            live,
            events,
            lost: Mutex::new(BTreeMap::new()),
            stats: Mutex::new(None),
            flows_seen: AtomicU64::new(0),
            last_flow_unix_ns: AtomicU64::new(0),
            engine_events_connected: AtomicBool::new(false),
        }
    }

    /// Sets the ring buffer's capacity (`--hubble-event-buffer-capacity`);
    /// shrinking drops the oldest events.
    pub fn set_capacity(&self, capacity: usize) {
        let mut ring = lock(&self.ring);
        ring.capacity = capacity.max(1);
        while ring.events.len() > ring.capacity {
            ring.events.pop_front();
        }
    }

    /// Every flow from now on, as it arrives (a consumer that falls behind
    /// gets `RecvError::Lagged(n)` and must count those `n` as lost).
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Flow>> {
        self.live.subscribe()
    }

    /// Every event (flows and lost reports) from now on.
    pub fn subscribe_events(&self) -> broadcast::Receiver<HubEvent> {
        self.events.subscribe()
    }

    /// The buffered events, oldest first, and a subscription that continues
    /// exactly after the last of them.
    pub fn snapshot_and_follow(&self) -> (Vec<HubEvent>, broadcast::Receiver<HubEvent>) {
        let ring = lock(&self.ring);
        let rx = self.events.subscribe();
        (ring.events.iter().cloned().collect(), rx)
    }

    /// The buffered events, oldest first.
    pub fn buffered(&self) -> Vec<HubEvent> {
        lock(&self.ring).events.iter().cloned().collect()
    }

    /// Adds a flow to the ring and hands it to live consumers.
    pub fn push(&self, flow: Flow) {
        let flow = Arc::new(flow);
        self.flows_seen.fetch_add(1, Ordering::Relaxed);
        let mut ring = lock(&self.ring);
        if let Ok(ns) = sluice_api::hubble::parse_time(&flow.time) {
            self.last_flow_unix_ns.store(ns, Ordering::Relaxed);
        }
        ring.push(HubEvent::Flow(flow.clone()));
        // No receivers is fine: nobody is watching.
        let _ = self.events.send(HubEvent::Flow(flow.clone()));
        let _ = self.live.send(flow);
    }

    /// Records events lost at `lost.source`: counted, kept in the ring (so
    /// readers of the buffer see the gap) and sent to followers. Ring
    /// buffer overtakes of one follower are that follower's business: they
    /// are counted here with [`FlowHub::count_lost`] only.
    pub fn record_lost(&self, lost: LostEvents) {
        if lost.num_events_lost == 0 {
            return;
        }
        self.count_lost(lost.source, lost.num_events_lost);
        let mut ring = lock(&self.ring);
        ring.push(HubEvent::Lost(lost.clone()));
        let _ = self.events.send(HubEvent::Lost(lost));
    }

    /// Adds to the lost total of `source` without recording an event.
    pub fn count_lost(&self, source: LostSource, n: u64) {
        *lock(&self.lost)
            .entry(LostSourceKey::of(source))
            .or_default() += n;
    }

    /// Keeps the engine's latest counters (`EngineEvent::Stats`).
    pub fn set_stats(&self, stats: serde_json::Value) {
        *lock(&self.stats) = Some(Arc::new(stats));
    }

    /// The engine's latest counters (the `sluice stats --json` document), if
    /// any arrived yet.
    pub fn latest_stats(&self) -> Option<Arc<serde_json::Value>> {
        lock(&self.stats).clone()
    }

    /// Events lost so far, per source (engine workers, engine events thread
    /// and agent intake, ring buffer followers).
    pub fn lost_totals(&self) -> Vec<(LostSource, u64)> {
        lock(&self.lost)
            .iter()
            .map(|(k, n)| (k.source(), *n))
            .collect()
    }

    /// Set by the events client while it reads the engine's events socket.
    pub fn set_engine_events_connected(&self, connected: bool) {
        self.engine_events_connected
            .store(connected, Ordering::Relaxed);
    }

    pub fn status(&self) -> FlowHubStatus {
        let (buffered, capacity) = {
            let ring = lock(&self.ring);
            (ring.events.len(), ring.capacity)
        };
        FlowHubStatus {
            flows_seen: self.flows_seen.load(Ordering::Relaxed),
            buffered,
            capacity,
            lost: self.lost_totals(),
            last_flow_unix_ns: self.last_flow_unix_ns.load(Ordering::Relaxed),
            engine_events_connected: self.engine_events_connected.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flow(n: u64) -> Flow {
        Flow {
            time: sluice_api::hubble::format_time(n),
            verdict: "FORWARDED".into(),
            flow_type: "L3_L4".into(),
            ..Default::default()
        }
    }

    fn times(events: &[HubEvent]) -> Vec<String> {
        events
            .iter()
            .map(|e| match e {
                HubEvent::Flow(f) => f.time.clone(),
                HubEvent::Lost(l) => format!("lost {}", l.num_events_lost),
            })
            .collect()
    }

    #[test]
    fn the_ring_keeps_the_newest_capacity_events_in_order() {
        let hub = FlowHub::new(3);
        for n in 1..=5 {
            hub.push(flow(n));
        }
        let kept = times(&hub.buffered());
        assert_eq!(
            kept,
            [3, 4, 5].map(sluice_api::hubble::format_time).to_vec()
        );
        let status = hub.status();
        assert_eq!(
            (status.flows_seen, status.buffered, status.capacity),
            (5, 3, 3)
        );
        assert_eq!(status.last_flow_unix_ns, 5);
        hub.set_capacity(2);
        assert_eq!(
            times(&hub.buffered()),
            [4, 5].map(sluice_api::hubble::format_time).to_vec()
        );
    }

    #[test]
    fn lost_events_are_counted_per_source_and_kept_in_the_ring() {
        let hub = FlowHub::new(10);
        hub.push(flow(1));
        let lost = |source, n| LostEvents {
            source,
            num_events_lost: n,
            worker: None,
            time_unix_ns: 2,
        };
        hub.record_lost(lost(LostSource::ObserverEventsQueue, 4));
        hub.record_lost(lost(LostSource::PerfEventRingBuffer, 2));
        hub.record_lost(lost(LostSource::ObserverEventsQueue, 1));
        hub.record_lost(lost(LostSource::ObserverEventsQueue, 0));
        hub.count_lost(LostSource::HubbleRingBuffer, 7);
        assert_eq!(
            hub.lost_totals(),
            [
                (LostSource::PerfEventRingBuffer, 2),
                (LostSource::ObserverEventsQueue, 5),
                (LostSource::HubbleRingBuffer, 7)
            ]
        );
        assert_eq!(times(&hub.buffered())[1..], ["lost 4", "lost 2", "lost 1"]);
    }

    #[test]
    fn a_follower_continues_exactly_after_its_snapshot() {
        let hub = FlowHub::new(10);
        hub.push(flow(1));
        let (snapshot, mut rx) = hub.snapshot_and_follow();
        hub.push(flow(2));
        assert_eq!(times(&snapshot), [sluice_api::hubble::format_time(1)]);
        match rx.try_recv().unwrap() {
            HubEvent::Flow(f) => assert_eq!(f.time, sluice_api::hubble::format_time(2)),
            other => panic!("{other:?}"),
        }
        assert!(rx.try_recv().is_err());
        let mut live = hub.subscribe();
        hub.push(flow(3));
        assert_eq!(
            live.try_recv().unwrap().time,
            sluice_api::hubble::format_time(3)
        );
    }

    #[test]
    fn stats_keep_the_latest_document() {
        let hub = FlowHub::new(1);
        assert!(hub.latest_stats().is_none());
        hub.set_stats(serde_json::json!({"forwarded": 1}));
        hub.set_stats(serde_json::json!({"forwarded": 2}));
        assert_eq!(hub.latest_stats().unwrap()["forwarded"], 2);
    }
}
