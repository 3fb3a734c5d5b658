//! Throughput benchmarks in the lab (`sluice-lab bench ...`).
//!
//! [`forward`]: pod-to-pod UDP packets per second through the kernel, an in-kernel XDP devmap
//! redirect and sluice-engine, interleaved in one run.

pub mod forward;
mod machine;

pub use machine::{CpuTimes, Machine};
