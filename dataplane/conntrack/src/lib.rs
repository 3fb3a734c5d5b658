//! Connection tracking shared by every packet worker: the one table workers write.
//!
//! Shape: a fixed-capacity, set-associative table of slots made of `AtomicU64`
//! words ([`table`]), each key in either of two buckets. Readers use a per-bucket sequence counter (seqlock): they
//! never wait for a lock and never block a writer; a reader that raced a write
//! retries. Writers take the bucket's sequence word with a compare-and-swap
//! (odd = being written), write, and release. No allocation after
//! construction, no `unsafe`.
//!
//! A flow is two entries: the original direction (as the first packet arrived
//! at the engine) and the reply direction (as replies will arrive, i.e. the
//! reverse of the original after its rewrites). Each entry says how to rewrite
//! a packet that matches it, so DNAT, SNAT, hairpin and masquerade are all the
//! same mechanism. Flow state (TCP state, last seen) lives in the original
//! entry, and is copied into the reply entry under the same locks so a reply
//! packet reads its own entry only; the original key is always recoverable from a
//! reply entry as `reverse(apply(reply.rewrites, reply_key))`
//! ([`FlowKey::partner`]).
//!
//! Modules:
//! * [`key`]: [`FlowKey`], [`Rewrites`] and their word encoding.
//! * [`entry`]: [`CtEntry`], [`Tracked`], [`FlowState`], [`Direction`], [`flags`].
//! * [`tcp`]: the TCP state machine ([`next_state`], [`TcpState::for_first_packet`]).
//! * [`config`]: [`CtConfig`], [`Timeouts`].
//! * `table`: the generic seqlock bucket table (private).
//! * [`conntrack`]: [`Conntrack`] (lookup, observe, insert, expiry, eviction, gc).
//! * [`affinity`]: [`Affinity`] (sessionAffinity: ClientIP).
//! * [`fqdn`]: [`FqdnCache`] (addresses of names toFQDNs selectors select).
//!
//! Memory: 114 bytes per entry (14 words plus a share of the bucket's two
//! header words), so the default 512Ki entries take 57 MiB.

pub mod affinity;
pub mod config;
pub mod conntrack;
pub mod entry;
pub mod fqdn;
pub mod key;
mod table;
pub mod tcp;

pub use affinity::Affinity;
pub use config::{CtConfig, Timeouts, DEFAULT_CAPACITY};
pub use conntrack::{next_flow_state, reopens, Conntrack, CtStats, InsertError, Seen};
pub use entry::{flags, CtEntry, Direction, FlowState, Tracked};
pub use fqdn::{FqdnCache, FqdnEntry};
pub use key::{FlowKey, Rewrites};
pub use tcp::{next_state, tcp_flags, TcpState};

/// Everything per flow that the workers share: one per engine, handed to every
/// worker (through the engine's shared state) and to the pipeline.
#[derive(Debug)]
pub struct FlowTables {
    pub conntrack: Conntrack,
    pub affinity: Affinity,
    /// Addresses learnt from DNS answers for toFQDNs selectors.
    pub fqdn: FqdnCache,
}

impl FlowTables {
    /// Affinity gets a quarter of the conntrack capacity (one entry per
    /// client and service); the FQDN cache an eighth, between 1Ki and 64Ki
    /// addresses (64Ki at the default capacity: 4.75 MiB).
    pub fn new(config: CtConfig) -> FlowTables {
        FlowTables {
            conntrack: Conntrack::new(config),
            affinity: Affinity::new((config.capacity / 4).max(1024)),
            fqdn: FqdnCache::new((config.capacity / 8).clamp(1024, 64 * 1024)),
        }
    }
}
