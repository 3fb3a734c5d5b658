//! The per-packet pipeline: a pure function from one frame and the current
//! tables to a verdict. No clock, no lock, no syscall, no allocation.
//!
//! ```text
//! process(frame, len, ingress_ifindex, &tables, now) -> Verdict
//! ```
//! The frame buffer is the whole UMEM chunk (`frame.len()` is its capacity) and
//! `len` the number of valid bytes in it, so a stage may grow the frame in place
//! (an ICMP error quoting the original) up to the chunk size.

mod verdict;

pub use verdict::{DropReason, Verdict};
