//! Tables that the packet workers read: built by the control side, published as
//! immutable snapshots (RCU style), read by workers without locks.
//!
//! Layering: this crate does no I/O and knows nothing about frames or sockets.

mod dns_name;
mod endpoint;
mod ipcache;
mod maglev;
pub mod policy;
mod service;
mod snapshot;
mod uplink;

pub use endpoint::{Endpoint, EndpointError, EndpointId, EndpointTable, Gateway, MacAddr};
pub use ipcache::{IpCache, IpCacheEntry, IpCacheError};
pub use maglev::{MaglevError, MaglevTable, MAGLEV_MAX_BACKENDS};
pub use policy::{
    Action, Decision, DirectionTable, DnsRules, DnsSelector, EndpointPolicy, EndpointTables,
    Enforcement, Peer, PolicyConfig, PolicyDirection, PolicyEntry, PolicyQuery, PolicyState,
    PolicyTables, RuleOrigin,
};
pub use service::{
    Backend, BackendState, Frontend, FrontendKind, L4Protocol, LbAlgorithm, LbConfig, Masquerade,
    NoBackendResponse, Scope, Service, ServiceEntry, ServiceTable, DEFAULT_MAGLEV_TABLE_SIZE,
    MAGLEV_TABLE_SIZES,
};
pub use snapshot::{NodeState, Tables, TablesHandle, DEFAULT_MTU};
pub use uplink::{Cidr, Uplink};
