//! sluice-agent: turns a cluster (Kubernetes API or a manifest directory) into
//! the engine's desired node state, keeps the engine in sync over the engine
//! API, and serves the CNI plugin and the CLI on its own socket.
//!
//! Layers, one way: `source` -> `store` -> `desired` (pure, with `labels`,
//! `identity`, `ipam`, `attachments`, `services`, `lb_ids`, `policy`) ->
//! `core` -> `engine_client` / `server` (with `policy_trace`).

pub mod attachments;
pub mod core;
pub mod desired;
pub mod engine_client;
pub mod events_client;
pub mod flows;
pub mod http;
pub mod hubble_server;
pub mod identity;
pub mod ipam;
pub mod labels;
pub mod lb_ids;
pub mod metrics;
pub mod objects;
pub mod persist;
pub mod policy;
pub mod policy_trace;
pub mod run;
pub mod server;
pub mod servicemap;
pub mod services;
pub mod source;
pub mod store;
