//! Flow builders shared by the integration tests.
#![allow(dead_code)]

use std::net::{IpAddr, SocketAddr};

use sluice_conntrack::{CtEntry, Direction, FlowKey, FlowState, Rewrites};

pub const S: u64 = 1_000_000_000;
pub const TCP: u8 = 6;
pub const UDP: u8 = 17;

pub fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

pub fn key(src: &str, src_port: u16, dst: &str, dst_port: u16, protocol: u8) -> FlowKey {
    FlowKey {
        src: ip(src),
        dst: ip(dst),
        src_port,
        dst_port,
        protocol,
    }
}

/// A flow from `original` DNATed to `backend` (or untranslated), with both
/// entries built the way the pipeline builds them.
pub fn flow(
    original: FlowKey,
    backend: Option<SocketAddr>,
    state: FlowState,
    now_ns: u64,
) -> (FlowKey, CtEntry, FlowKey, CtEntry) {
    let rewrites = Rewrites {
        src: None,
        dst: backend,
    };
    let reply = original.partner(&rewrites);
    let reply_rewrites = Rewrites {
        src: backend.map(|_| SocketAddr::new(original.dst, original.dst_port)),
        dst: None,
    };
    let entry = CtEntry {
        direction: Direction::Original,
        rewrites,
        state,
        service_id: u32::from(backend.is_some()),
        backend_id: backend.map_or(0, |b| u32::from(b.port())),
        flags: 0,
        policy: 0,
        created_ns: now_ns,
        last_seen_ns: now_ns,
    };
    let reply_entry = CtEntry {
        direction: Direction::Reply,
        rewrites: reply_rewrites,
        ..entry
    };
    (original, entry, reply, reply_entry)
}
