//! The agent's flow store: flows from the engine's events socket, turned into
//! Hubble flows, kept in a ring buffer and handed to live consumers (the
//! observe socket's followers, metrics, the service map).

use std::sync::Arc;

use sluice_api::events::LostSource;
use sluice_api::hubble::Flow;
use tokio::sync::broadcast;

/// Shared by the events client (producer) and every consumer.
#[derive(Debug)]
pub struct FlowHub {
    live: broadcast::Sender<Arc<Flow>>,
}

impl FlowHub {
    pub fn new(live_capacity: usize) -> FlowHub {
        let (live, _) = broadcast::channel(live_capacity.max(1));
        FlowHub { live }
    }

    /// Every flow from now on, as it arrives (a consumer that falls behind
    /// gets `RecvError::Lagged(n)` and must count those `n` as lost).
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Flow>> {
        self.live.subscribe()
    }

    /// The engine's latest counters (the `sluice stats --json` document), if
    /// any arrived yet.
    pub fn latest_stats(&self) -> Option<Arc<serde_json::Value>> {
        None
    }

    /// Events lost so far, per source (engine workers, engine events thread
    /// and agent intake, ring buffer followers).
    pub fn lost_totals(&self) -> Vec<(LostSource, u64)> {
        Vec::new()
    }
}
