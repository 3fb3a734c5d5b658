//! The engine's counters document (`sluice stats --json`, also sent on the
//! events socket as `Stats`), read with types. Every field has a default so
//! an engine of another version (fields added or missing) still parses;
//! what is missing is reported as absent, never invented.

use serde::Deserialize;

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct EngineStats {
    pub engine: EngineInfo,
    pub uptime_seconds: f64,
    pub generation: u64,
    pub endpoints: u64,
    pub services: u64,
    pub totals: Counters,
    /// Every drop reason in number order (also those at zero).
    pub drops: Vec<DropRow>,
    pub workers: Vec<WorkerRow>,
    pub conntrack: Conntrack,
    pub policy_drops: Vec<PolicyDropRow>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct EngineInfo {
    pub version: String,
    pub workers: u64,
}

/// Totals (and, flattened into [`WorkerRow`], one worker's counters).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct Counters {
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    pub busy_loops: u64,
    pub idle_loops: u64,
    /// Forwarded frames (bytes as sent) by direction, on engines that
    /// count them: frames from a pod are egress, from the uplink ingress.
    pub forwarded: Option<ByDirection>,
    /// Dropped and refused frames (bytes as received) by direction.
    pub dropped: Option<ByDirection>,
    pub events_emitted: Option<u64>,
    pub events_lost: Option<u64>,
}

/// Packets and bytes per direction.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct ByDirection {
    pub ingress: Traffic,
    pub egress: Traffic,
}

#[derive(Clone, Copy, Debug, Default, Deserialize)]
#[serde(default)]
pub struct Traffic {
    pub packets: u64,
    pub bytes: u64,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct DropRow {
    pub number: u8,
    pub name: String,
    pub count: u64,
    /// `count` by direction, on engines that split drops by direction.
    pub ingress: Option<u64>,
    pub egress: Option<u64>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct WorkerRow {
    pub worker: u32,
    pub core: u32,
    /// Share of the uptime spent in passes that received frames, on
    /// engines that measure it.
    pub busy_ratio: Option<f64>,
    #[serde(flatten)]
    pub counters: Counters,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct Conntrack {
    pub capacity: u64,
    pub entries: u64,
    pub inserts: u64,
    pub insert_failures: u64,
    pub evictions: u64,
    pub expired: u64,
    pub pressure_permille: u64,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct PolicyDropRow {
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub path: String,
    pub direction: String,
    pub packets: u64,
}

impl EngineStats {
    /// Parses the document; a document of the wrong shape (not an object,
    /// a field of the wrong type) is an error naming the field.
    pub fn parse(value: &serde_json::Value) -> Result<EngineStats, String> {
        serde_path_to_error::deserialize(value)
            .map_err(|e| format!("engine stats field {}: {}", e.path(), e.inner()))
    }
}

impl WorkerRow {
    /// Busy share of this worker: the engine's own ratio when it publishes
    /// one, else busy loops over all loops (None before the first loop).
    pub fn busy_ratio(&self) -> Option<f64> {
        if let Some(ratio) = self.busy_ratio {
            return Some(ratio);
        }
        let loops = self.counters.busy_loops + self.counters.idle_loops;
        (loops > 0).then(|| self.counters.busy_loops as f64 / loops as f64)
    }
}
