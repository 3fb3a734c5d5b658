//! The packet engine: pinned workers running rx batch -> pipeline -> tx batch,
//! a control thread that attaches interfaces and publishes table snapshots,
//! a stats socket, the agent API socket, and the flow events socket.
//!
//! Layering: the engine ties the I/O crate (sluice-xsk), the XDP loader
//! (sluice-xdp) and the pure pipeline together; it never parses Kubernetes
//! objects.

pub mod api;
pub mod config;
pub mod conntrack_socket;
pub mod control;
pub mod counters;
pub mod events;
pub mod events_socket;
pub mod flow_record;
pub mod ports;
pub mod stats;
pub mod uplink_steering;
pub mod worker;

pub use config::EngineConfig;
pub use control::run;
