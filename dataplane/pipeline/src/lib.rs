//! The per-packet pipeline: a function from one frame, the current tables and
//! the shared flow tables to a verdict. No clock, no lock, no syscall, no
//! allocation; the flow tables (conntrack, affinity) are the only state it
//! writes, through their lock-free (seqlock) API.
//!
//! ```text
//! process(frame, len, ingress_ifindex, &tables, &flows, now) -> Verdict
//! ```
//! The frame buffer is the whole UMEM chunk (`frame.len()` is its capacity) and
//! `len` the number of valid bytes in it, so a stage may grow the frame in place
//! (an ICMP error quoting the original) up to the chunk size.
//!
//! Stages, each a plain function (statically dispatched):
//! 1. [`ingress`]: size check, ingress endpoint (or the uplink), one-pass parse,
//!    source MAC.
//! 2. by ethertype: [`arp`] (answers for the gateway), [`ipv4`] or [`ipv6`]
//!    (anti-spoofing, gateway-addressed traffic, TTL / hop limit), with
//!    neighbour discovery in [`ndisc`] and ICMP errors in [`icmp_error`];
//!    frames from the outside go through [`uplink`] instead.
//! 3. [`route::forward`], shared by both families and both origins:
//!    - [`conntrack`]: the kube-proxy replacement. [`flow_key`] classifies
//!      the packet; a tracked flow gets its entry's rewrites; a new flow to a
//!      service frontend is balanced ([`service`]) and DNATed (hairpin also
//!      SNATed), or refused ([`reject`]) when there is no backend; a new flow
//!      from a pod leaving the cluster is masqueraded ([`masquerade`]); any
//!      other routable new flow is tracked as it is. ICMP errors about a
//!      tracked flow are translated through their quoted packet. Entries are
//!      built in [`flows`], rewrites applied with incremental checksums in [`nat`].
//!    - [`policy`]: network policy on new connections (after the service
//!      choice), the verdict cached in conntrack and re-checked when the
//!      policy changes, DNS queries and answers of DNS-inspected flows.
//!    - routing by the (translated) destination ([`route`]): TTL decrement,
//!      MACs, egress interface.
//!
//! [`process_observed`] also fills an [`Observation`] for flow events: the
//! family stage notes the tuple as received ([`observe`]), conntrack the
//! outcome (new / established / reply), the service and the tuple after a
//! rewrite, policy the rules that allowed each direction, and [`dns`] the
//! queries and answers of DNS-inspected flows. A few stores per frame.
//!
//! The engine is the pods' router: each pod has a /32 and a /128 and a default
//! route via `gateway.ipv4` / `gateway.ipv6`.

mod arp;
mod conntrack;
mod dns;
mod flow_key;
mod flows;
mod icmp_error;
mod ingress;
mod ipv4;
mod ipv6;
mod masquerade;
mod nat;
mod ndisc;
mod observation;
mod observe;
mod policy;
mod reject;
mod route;
mod service;
mod uplink;
mod verdict;

#[cfg(any(test, feature = "fixtures"))]
pub mod fixtures;

pub use ingress::{FRAME_OVERHEAD, MAX_FRAME_LEN};
pub use observation::{
    CtOutcome, DnsNote, Observation, PolicyNote, Tuple, DNS_ADDRESSES_MAX, DNS_NAME_MAX,
};
pub use verdict::{DropReason, Verdict};

pub use sluice_conntrack::FlowTables;
use sluice_tables::Tables;

/// Runs one frame through the pipeline. Never panics; on `Forward { len, .. }`
/// (and `Reject`) the frame to send is `frame[..len]` with `len <= frame.len()`.
/// `flows` is the only state written; `now_ns` is the engine's monotonic clock,
/// passed in so that the pipeline stays deterministic under test.
pub fn process(
    frame: &mut [u8],
    len: usize,
    ingress_ifindex: u32,
    tables: &Tables,
    flows: &FlowTables,
    now_ns: u64,
) -> Verdict {
    let mut observation = Observation::default();
    process_observed(
        frame,
        len,
        ingress_ifindex,
        tables,
        flows,
        now_ns,
        &mut observation,
    )
}

/// [`process`], also noting in `observation` what the stages saw (conntrack
/// outcome, tuples before and after translation, service, policy rules, DNS)
/// for flow events. The caller clears `observation` before each frame.
pub fn process_observed(
    frame: &mut [u8],
    len: usize,
    ingress_ifindex: u32,
    tables: &Tables,
    flows: &FlowTables,
    now_ns: u64,
    observation: &mut Observation,
) -> Verdict {
    match ingress::run(
        frame,
        len,
        ingress_ifindex,
        tables,
        flows,
        now_ns,
        observation,
    ) {
        Ok(verdict) => verdict,
        Err(reason) => Verdict::Drop(reason),
    }
}

#[cfg(test)]
mod flow_tests;
#[cfg(test)]
mod observation_tests;
#[cfg(test)]
mod policy_tests;
#[cfg(test)]
mod tests;
