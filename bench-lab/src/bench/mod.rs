//! Throughput benchmarks in the lab (`sluice-lab bench ...`).
//!
//! [`forward`]: pod-to-pod UDP packets per second through the kernel, an in-kernel XDP devmap
//! redirect and sluice-engine, interleaved in one run.
//!
//! [`scenarios`]: UDP 64/1500-byte, one TCP stream, TCP request/response latency and new TCP
//! connections per second, over the kernel (with and without conntrack), kube-proxy-shaped
//! iptables/nftables services, an XDP devmap and the engine with one or two workers.
//!
//! [`services`]: first-packet latency and new TCP connections per second through a ClusterIP
//! behind 1 to 100k services, sluice-engine beside kube-proxy's iptables rules.
//!
//! [`policy`]: new TCP connections per second with 0, 1k and 10k network policy rules over
//! 1k identities, the rules' compile time and the compiled tables' memory.
//!
//! [`flows`]: what flow events cost forwarding at full rate (no subscriber, aggregation
//! medium and none with a subscriber), and whether overflow is reported as lost events.
//!
//! [`sync`]: the control plane: N pods and their identities from manifests to the engine's
//! tables (full sync) and one manifest edit to the engine's ack, N=1000 beside N=100.

pub mod forward;
mod machine;

// `bench flows` (issue 7): flow events under load.
pub mod flows;
// `bench scenarios` (issue 3): more scenarios and variants; helpers kept apart from forward.rs.
mod labkit;
pub mod policy;
pub mod rules;
pub mod scenarios;
pub mod services;
pub mod sync;

pub use machine::{CpuTimes, Machine};
