//! Connection tracking shared by every packet worker: the one table workers write.
//!
//! API SKELETON (interfaces fixed so the pipeline can be written against them;
//! bodies are filled in by the conntrack work).
//!
//! Shape: a fixed-capacity, set-associative table of slots made of `AtomicU64`
//! words. Readers use a per-bucket sequence counter (seqlock): they never wait
//! and never block a writer; a reader that raced a write retries. Writers take
//! the bucket's sequence word with a compare-and-swap (odd = being written),
//! write, and release. No allocation after construction, no `unsafe`.
//!
//! A flow is two entries: the original direction (as the first packet arrived
//! at the engine) and the reply direction (as replies will arrive, i.e. the
//! reverse of the original after its rewrites). Each entry says how to rewrite
//! a packet that matches it, so DNAT, SNAT, hairpin and masquerade are all the
//! same mechanism. Flow state (TCP state, last seen) lives in the original
//! entry; the original key is always recoverable from a reply entry as
//! `reverse(apply(reply.rewrites, reply_key))`.

use std::net::{IpAddr, SocketAddr};

/// The 5-tuple of a packet as it arrived at the engine. ICMP echo puts the
/// identifier in `src_port` for requests and in `dst_port` for replies (the
/// other port 0), so `reversed()` of a request key is its reply's key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FlowKey {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub src_port: u16,
    pub dst_port: u16,
    /// IP protocol number: 6 TCP, 17 UDP, 132 SCTP, 1 ICMP, 58 ICMPv6.
    pub protocol: u8,
}

impl FlowKey {
    /// The key of a packet travelling the other way.
    pub fn reversed(&self) -> FlowKey {
        FlowKey {
            src: self.dst,
            dst: self.src,
            src_port: self.dst_port,
            dst_port: self.src_port,
            protocol: self.protocol,
        }
    }

    /// The key after `rewrites` are applied to a packet with this key.
    pub fn rewritten(&self, rewrites: &Rewrites) -> FlowKey {
        let mut key = *self;
        if let Some(src) = rewrites.src {
            key.src = src.ip();
            key.src_port = src.port();
        }
        if let Some(dst) = rewrites.dst {
            key.dst = dst.ip();
            key.dst_port = dst.port();
        }
        key
    }
}

/// Address translation applied to every packet matching an entry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Rewrites {
    /// New source address and port (SNAT, or un-DNAT of a reply).
    pub src: Option<SocketAddr>,
    /// New destination address and port (DNAT, or un-SNAT of a reply).
    pub dst: Option<SocketAddr>,
}

/// Which direction of its flow an entry describes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Original,
    Reply,
}

/// TCP connection states, as the kernel's nf_conntrack names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TcpState {
    SynSent,
    SynRecv,
    Established,
    FinWait,
    CloseWait,
    LastAck,
    TimeWait,
    Close,
}

/// State of a flow. TCP follows [`TcpState`]; UDP, SCTP and ICMP only know
/// whether a reply was seen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FlowState {
    Tcp(TcpState),
    Unreplied,
    Replied,
}

/// Flags on a flow (bit set).
pub mod flags {
    /// Created by a service translation (DNAT to a backend).
    pub const SERVICE: u16 = 1 << 0;
    /// Source rewritten to the node address for traffic leaving the cluster.
    pub const MASQUERADE: u16 = 1 << 1;
    /// Client and backend are the same pod; the source was rewritten too.
    pub const HAIRPIN: u16 = 1 << 2;
    /// The first packet came from outside the cluster (the uplink).
    pub const EXTERNAL: u16 = 1 << 3;
}

/// One entry as readers see it (a copy; the table keeps the words).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CtEntry {
    pub direction: Direction,
    pub rewrites: Rewrites,
    /// State of the flow. Authoritative in the original entry; a reply entry
    /// returned by [`Conntrack::observe`] carries the original's state.
    pub state: FlowState,
    /// Service and backend the flow was balanced to (0 = none).
    pub service_id: u32,
    pub backend_id: u32,
    /// [`flags`] bits.
    pub flags: u16,
    /// Policy verdict cache for the network policy work (0 = not evaluated).
    pub policy: u32,
    pub created_ns: u64,
    pub last_seen_ns: u64,
}

/// Kernel nf_conntrack default timeouts (seconds), configurable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    pub tcp_syn_sent: u32,
    pub tcp_syn_recv: u32,
    pub tcp_established: u32,
    pub tcp_fin_wait: u32,
    pub tcp_close_wait: u32,
    pub tcp_last_ack: u32,
    pub tcp_time_wait: u32,
    pub tcp_close: u32,
    pub udp_unreplied: u32,
    pub udp_replied: u32,
    pub icmp: u32,
    /// SCTP and anything else.
    pub other: u32,
}

impl Default for Timeouts {
    /// nf_conntrack's defaults: tcp 120/60/432000/120/60/30/120/10, udp 30/120, icmp 30.
    fn default() -> Timeouts {
        Timeouts {
            tcp_syn_sent: 120,
            tcp_syn_recv: 60,
            tcp_established: 432_000,
            tcp_fin_wait: 120,
            tcp_close_wait: 60,
            tcp_last_ack: 30,
            tcp_time_wait: 120,
            tcp_close: 10,
            udp_unreplied: 30,
            udp_replied: 120,
            icmp: 30,
            other: 600,
        }
    }
}

/// Table shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CtConfig {
    /// Most entries (each flow takes two). Rounded up to whole buckets.
    pub capacity: usize,
    pub timeouts: Timeouts,
}

/// Default capacity: 512Ki entries (256Ki flows).
pub const DEFAULT_CAPACITY: usize = 512 * 1024;

impl Default for CtConfig {
    fn default() -> CtConfig {
        CtConfig {
            capacity: DEFAULT_CAPACITY,
            timeouts: Timeouts::default(),
        }
    }
}

/// Why a flow could not be inserted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InsertError {
    /// One of the two keys is already tracked (a NAT port allocator tries the next port).
    Exists,
    /// No room in the buckets of a key even after evicting what may be evicted.
    Full,
}

/// Counters and gauges for `sluice stats` and metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct CtStats {
    pub capacity: u64,
    pub entries: u64,
    pub inserts: u64,
    pub insert_failures: u64,
    /// Flows evicted to make room before their timeout.
    pub evictions: u64,
    /// Flows removed by garbage collection after their timeout.
    pub expired: u64,
    /// entries / capacity in parts per thousand (the pressure metric).
    pub pressure_permille: u64,
}

/// What a packet told the tracker: for TCP the header flags, else nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Seen {
    /// TCP flags byte (FIN 0x01, SYN 0x02, RST 0x04, ACK 0x10); 0 for other protocols.
    pub tcp_flags: u8,
}

/// The shared table.
#[derive(Debug)]
pub struct Conntrack {
    _private: (),
}

impl Conntrack {
    pub fn new(config: CtConfig) -> Conntrack {
        let _ = config;
        todo!("conntrack table")
    }

    /// The entry for `key` if present and not expired at `now_ns`. Never waits.
    pub fn lookup(&self, key: &FlowKey, now_ns: u64) -> Option<CtEntry> {
        let _ = (key, now_ns);
        todo!()
    }

    /// The per-packet call for a packet whose key may be tracked: updates
    /// last-seen (at most once per second per flow, to keep writes rare) and
    /// the TCP state in the flow's original entry, and returns this
    /// direction's entry with the flow's state. `None` when not tracked or
    /// expired; also `None` (and the old flow removed) when a TCP SYN without
    /// ACK arrives in the original direction of a flow in TIME_WAIT or CLOSE,
    /// so the caller creates a new flow, as the kernel reopens a port.
    pub fn observe(&self, key: &FlowKey, seen: Seen, now_ns: u64) -> Option<CtEntry> {
        let _ = (key, seen, now_ns);
        todo!()
    }

    /// Inserts both entries of a new flow, or neither. `reply` must be the
    /// reverse of `original` after `original_entry.rewrites`. Under pressure,
    /// expired flows and then the least recently seen non-established flows in
    /// the target buckets are evicted (both of their entries).
    pub fn insert_flow(
        &self,
        original: &FlowKey,
        original_entry: CtEntry,
        reply: &FlowKey,
        reply_entry: CtEntry,
    ) -> Result<(), InsertError> {
        let _ = (original, original_entry, reply, reply_entry);
        todo!()
    }

    /// Removes the flow that `key` (either direction) belongs to; false if absent.
    pub fn remove_flow(&self, key: &FlowKey) -> bool {
        let _ = key;
        todo!()
    }

    /// One incremental garbage-collection step over at most `buckets` buckets,
    /// resuming where the last step stopped; removes expired flows. Takes each
    /// bucket's writer lock only while removing from it, so workers never stop.
    /// Returns the number of flows removed.
    pub fn gc_step(&self, now_ns: u64, buckets: usize) -> usize {
        let _ = (now_ns, buckets);
        todo!()
    }

    /// Removes every flow matching `filter` (all when it matches everything);
    /// returns how many flows were removed.
    pub fn flush(&self, filter: &dyn Fn(&FlowKey, &CtEntry) -> bool) -> usize {
        let _ = filter;
        todo!()
    }

    /// A copy of the live entries (both directions) matching `filter`, at most `limit`.
    pub fn entries(
        &self,
        now_ns: u64,
        filter: &dyn Fn(&FlowKey, &CtEntry) -> bool,
        limit: usize,
    ) -> Vec<(FlowKey, CtEntry)> {
        let _ = (now_ns, filter, limit);
        todo!()
    }

    pub fn stats(&self) -> CtStats {
        todo!()
    }

    pub fn timeouts(&self) -> &Timeouts {
        todo!()
    }
}

/// Session affinity (sessionAffinity: ClientIP): which backend a client was
/// last sent to, per service. Same seqlock table design, its own capacity.
#[derive(Debug)]
pub struct Affinity {
    _private: (),
}

impl Affinity {
    pub fn new(capacity: usize) -> Affinity {
        let _ = capacity;
        todo!()
    }

    /// The backend `client` used for `service_id` if it was used within
    /// `timeout_s` seconds of `now_ns`.
    pub fn get(&self, service_id: u32, client: IpAddr, timeout_s: u32, now_ns: u64) -> Option<u32> {
        let _ = (service_id, client, timeout_s, now_ns);
        todo!()
    }

    /// Records (or refreshes) the backend for `client`.
    pub fn set(&self, service_id: u32, client: IpAddr, backend_id: u32, now_ns: u64) {
        let _ = (service_id, client, backend_id, now_ns);
        todo!()
    }

    /// Forgets every entry of a service (affinity switched off, service removed).
    pub fn forget_service(&self, service_id: u32) -> usize {
        let _ = service_id;
        todo!()
    }
}

/// Everything per flow that the workers share: one per engine, handed to every
/// worker (through the engine's shared state) and to the pipeline.
#[derive(Debug)]
pub struct FlowTables {
    pub conntrack: Conntrack,
    pub affinity: Affinity,
}

impl FlowTables {
    /// Affinity gets a quarter of the conntrack capacity (one entry per client and service).
    pub fn new(config: CtConfig) -> FlowTables {
        FlowTables {
            conntrack: Conntrack::new(config),
            affinity: Affinity::new((config.capacity / 4).max(1024)),
        }
    }
}
