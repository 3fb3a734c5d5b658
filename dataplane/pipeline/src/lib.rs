//! The per-packet pipeline: a pure function from one frame and the current
//! tables to a verdict. No clock, no lock, no syscall, no allocation.
//!
//! ```text
//! process(frame, len, ingress_ifindex, &tables, now) -> Verdict
//! ```
//! The frame buffer is the whole UMEM chunk (`frame.len()` is its capacity) and
//! `len` the number of valid bytes in it, so a stage may grow the frame in place
//! (an ICMP error quoting the original) up to the chunk size.
//!
//! Stages, each a plain function (statically dispatched):
//! 1. [`ingress`]: size check, ingress endpoint, one-pass parse, source MAC.
//! 2. by ethertype: [`arp`] (answers for the gateway), [`ipv4`] or [`ipv6`]
//!    (anti-spoofing, gateway-addressed traffic, routing to endpoints), with
//!    neighbour discovery in [`ndisc`] and ICMP errors in [`icmp_error`].
//!
//! The engine is the pods' router: each pod has a /32 and a /128 and a default
//! route via `gateway.ipv4` / `gateway.ipv6`.

mod arp;
mod icmp_error;
mod ingress;
mod ipv4;
mod ipv6;
mod ndisc;
mod uplink;
mod verdict;

#[cfg(any(test, feature = "fixtures"))]
pub mod fixtures;

pub use ingress::{FRAME_OVERHEAD, MAX_FRAME_LEN};
pub use verdict::{DropReason, Verdict};

use sluice_tables::Tables;

/// Runs one frame through the pipeline. Never panics; on `Forward { len, .. }`
/// the frame to send is `frame[..len]` with `len <= frame.len()`.
pub fn process(
    frame: &mut [u8],
    len: usize,
    ingress_ifindex: u32,
    tables: &Tables,
    now_ns: u64,
) -> Verdict {
    // Time is an input so that later stages (conntrack) stay deterministic;
    // nothing here expires yet.
    let _ = now_ns;
    match ingress::run(frame, len, ingress_ifindex, tables) {
        Ok(verdict) => verdict,
        Err(reason) => Verdict::Drop(reason),
    }
}

#[cfg(test)]
mod tests;
