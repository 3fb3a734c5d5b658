//! Namespace lab: a Sluice node and its pods as network namespaces on one machine.
//!
//! A [`Lab`] creates a node namespace and N pod namespaces, each pod joined to the
//! node by a veth pair (`eth0` in the pod, `lxc<i>` on the node), configures the
//! pods the way the CNI will (a /32 and a /128, routes via the gateway
//! 10.200.0.1 / fe80::1), writes the engine's [`sluice_tables::NodeState`], and
//! runs real programs (ping, iperf3) in the pods. Nothing is created in the root
//! namespace. Dropping the lab stops what it started and deletes what it made.
//!
//! Forwarding between pods is either sluice-engine (the node kernel has no
//! addresses, routes or forwarding: without the engine the pods are isolated) or
//! the node kernel (the baseline). See [`names`] for the naming scheme that
//! [`cleanup`] relies on. [`bench`] holds the throughput comparisons (`sluice-lab bench`).

pub mod bench;
pub mod binaries;
pub mod cleanup;
pub mod command;
pub mod control_plane;
mod engine;
mod lab;
pub mod names;
pub mod policy;
mod programs;
pub mod services;

pub use cleanup::{cleanup, lab_namespaces, CleanupReport, CleanupScope};
pub use command::CmdOutput;
pub use engine::{find_engine, EngineOptions, ENGINE_BIN, ENGINE_ENV, ENGINE_LOG};
pub use lab::{
    pod_ipv4, pod_ipv6, teardown_all, Forwarding, Lab, LabSpec, Pod, PodRef, PodWiring,
    EXEC_TIMEOUT, GATEWAY_IPV4, GATEWAY_IPV6, GATEWAY_MAC, MAX_PODS, MAX_QUEUES, OUTSIDE_IPV4,
    OUTSIDE_IPV6, POD_CIDRS, UPLINK_IFNAME, UPLINK_IPV4, UPLINK_IPV6,
};
pub use programs::{parse_iperf3, parse_ping, Iperf3Result, PingResult, Rtt, IPERF3_PORT};
