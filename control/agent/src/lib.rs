//! sluice-agent: turns a cluster (Kubernetes API or a manifest directory) into
//! the engine's desired node state, keeps the engine in sync over the engine
//! API, and serves the CNI plugin and the CLI on its own socket.
//!
//! Layers, one way: `source` -> `store` -> `desired` (pure) -> `engine_client`.

pub mod objects;
pub mod source;
pub mod store;
