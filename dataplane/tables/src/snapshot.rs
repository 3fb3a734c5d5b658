//! Publication of table snapshots to workers.
//!
//! The control side builds a whole new [`Tables`] value and swaps it in with one
//! atomic pointer store; workers load the current snapshot once per batch. A
//! worker never waits for a writer and a writer never waits for workers: old
//! snapshots are freed when the last worker drops its guard (arc-swap).

use std::sync::Arc;

use arc_swap::{ArcSwap, Guard};

use serde::{Deserialize, Serialize};

use crate::{Endpoint, EndpointError, EndpointTable, Gateway};

/// The desired state of one node as the control side hands it over (today a
/// JSON file written by the lab; later the agent's snapshot).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeState {
    pub gateway: Gateway,
    pub endpoints: Vec<Endpoint>,
    /// IP MTU of the pod interfaces; frames longer than this plus the Ethernet
    /// header are dropped as too large. 1500 when absent.
    #[serde(default = "default_mtu")]
    pub mtu: u32,
}

/// The MTU a node state gets when it names none.
pub const DEFAULT_MTU: u32 = 1500;

fn default_mtu() -> u32 {
    DEFAULT_MTU
}

/// Everything the per-packet pipeline reads, as one immutable value.
#[derive(Clone, Debug)]
pub struct Tables {
    /// Increases with every publication; shown by status commands.
    pub generation: u64,
    pub gateway: Gateway,
    pub endpoints: EndpointTable,
    /// IP MTU of the pod interfaces.
    pub mtu: u32,
}

impl Tables {
    /// Builds the tables for a node state; refuses it whole when it conflicts.
    pub fn build(state: NodeState) -> Result<Tables, EndpointError> {
        Ok(Tables {
            generation: 0,
            gateway: state.gateway,
            endpoints: EndpointTable::build(state.endpoints)?,
            mtu: state.mtu,
        })
    }
}

/// Shared handle through which the control side publishes and workers read.
#[derive(Debug, Clone)]
pub struct TablesHandle {
    current: Arc<ArcSwap<Tables>>,
}

impl TablesHandle {
    pub fn new(initial: Tables) -> TablesHandle {
        TablesHandle {
            current: Arc::new(ArcSwap::from_pointee(initial)),
        }
    }

    /// Lock-free read of the current snapshot; hold it for one batch.
    pub fn load(&self) -> Guard<Arc<Tables>> {
        self.current.load()
    }

    /// Replaces the snapshot; the generation is set to one past the current one.
    pub fn publish(&self, mut next: Tables) -> u64 {
        next.generation = self.current.load().generation + 1;
        let generation = next.generation;
        self.current.store(Arc::new(next));
        generation
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MacAddr;

    fn tables() -> Tables {
        Tables {
            generation: 0,
            gateway: Gateway {
                mac: MacAddr([2, 0x53, 0x4c, 0, 0, 1]),
                ipv4: "10.200.0.1".parse().unwrap(),
                ipv6: "fe80::1".parse().unwrap(),
            },
            endpoints: EndpointTable::default(),
            mtu: DEFAULT_MTU,
        }
    }

    #[test]
    fn a_reader_keeps_its_snapshot_while_a_new_one_is_published() {
        let handle = TablesHandle::new(tables());
        let held = handle.load();
        assert_eq!(handle.publish(tables()), 1);
        assert_eq!(held.generation, 0);
        assert_eq!(handle.load().generation, 1);
    }
}
