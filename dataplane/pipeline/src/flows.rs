//! Building and inserting the two conntrack entries of a new flow.
//!
//! The original entry is keyed by the first packet as it arrived and carries
//! its rewrites; the reply entry is keyed by the reverse of the translated
//! packet (`key.rewritten(&rewrites).reversed()`) and carries the inverse
//! rewrites, so a reply is translated back with the same mechanism.

use core::net::SocketAddr;

use sluice_conntrack::{
    CtEntry, Direction, FlowKey, FlowState, FlowTables, InsertError, Rewrites, Seen, TcpState,
};
use sluice_wire::ip_protocol::TCP;
use sluice_wire::tcp::flags as tcp_flags;

use crate::DropReason;

/// What a new flow is made of, before the entries are built.
#[derive(Clone, Copy, Debug)]
pub(crate) struct NewFlow {
    pub rewrites: Rewrites,
    pub service_id: u32,
    pub backend_id: u32,
    /// [`sluice_conntrack::flags`] bits.
    pub flags: u16,
    /// TCP flags of the first packet (0 for other protocols).
    pub tcp_flags: u8,
    /// The policy word the flow starts with: the revision it was allowed at
    /// ([`crate::policy::revision_word`]).
    pub policy: u32,
}

impl NewFlow {
    pub fn plain(flags: u16, tcp_flags: u8, policy: u32) -> NewFlow {
        NewFlow {
            rewrites: Rewrites::default(),
            service_id: 0,
            backend_id: 0,
            flags,
            tcp_flags,
            policy,
        }
    }
}

/// The state a flow starts in. TCP: SYN_SENT for a SYN; anything else is
/// picked up mid-stream as ESTABLISHED, like the kernel's default
/// `nf_conntrack_tcp_loose`, so flows survive an engine restart.
fn initial_state(key: &FlowKey, tcp: u8) -> FlowState {
    if key.protocol != TCP {
        return FlowState::Unreplied;
    }
    if tcp & tcp_flags::SYN != 0 && tcp & tcp_flags::ACK == 0 {
        FlowState::Tcp(TcpState::SynSent)
    } else {
        FlowState::Tcp(TcpState::Established)
    }
}

/// The rewrites that undo `rewrites` on the reply direction of `key`.
pub(crate) fn inverse(key: &FlowKey, rewrites: &Rewrites) -> Rewrites {
    Rewrites {
        src: rewrites.dst.map(|_| SocketAddr::new(key.dst, key.dst_port)),
        dst: rewrites.src.map(|_| SocketAddr::new(key.src, key.src_port)),
    }
}

/// The original entry, the reply key and the reply entry of a new flow.
pub(crate) fn entries(key: &FlowKey, flow: NewFlow, now_ns: u64) -> (CtEntry, FlowKey, CtEntry) {
    let original = CtEntry {
        direction: Direction::Original,
        rewrites: flow.rewrites,
        state: initial_state(key, flow.tcp_flags),
        service_id: flow.service_id,
        backend_id: flow.backend_id,
        flags: flow.flags,
        policy: flow.policy,
        created_ns: now_ns,
        last_seen_ns: now_ns,
    };
    let reply = CtEntry {
        direction: Direction::Reply,
        rewrites: inverse(key, &flow.rewrites),
        ..original
    };
    (original, key.rewritten(&flow.rewrites).reversed(), reply)
}

/// The flow `key` belongs to, when another worker inserted it meanwhile.
pub(crate) fn existing(flows: &FlowTables, key: &FlowKey, now_ns: u64) -> Option<CtEntry> {
    // Seen{0}: the packet's own flags were already passed once.
    flows
        .conntrack
        .observe(key, Seen { tcp_flags: 0 }, now_ns)
        .filter(|e| e.direction == Direction::Original)
}

/// Inserts a flow whose rewrites are fixed; returns its original entry (another
/// worker's if it won the race).
pub(crate) fn insert(
    flows: &FlowTables,
    key: &FlowKey,
    flow: NewFlow,
    now_ns: u64,
) -> Result<CtEntry, DropReason> {
    let (original, reply_key, reply) = entries(key, flow, now_ns);
    match flows
        .conntrack
        .insert_flow(key, original, &reply_key, reply)
    {
        Ok(()) => Ok(original),
        Err(InsertError::Full) => Err(DropReason::CtFull),
        Err(InsertError::Exists) => existing(flows, key, now_ns).ok_or(DropReason::CtTupleTaken),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::net::{IpAddr, Ipv4Addr};

    fn sa(a: [u8; 4], port: u16) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(Ipv4Addr::from(a)), port)
    }

    /// Translating a packet and then its reply with the reply entry gives
    /// back the original endpoints: DNAT, SNAT and both (hairpin).
    #[test]
    fn the_reply_entry_undoes_the_original_rewrites() {
        let key = FlowKey {
            src: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
            dst: IpAddr::V4(Ipv4Addr::new(10, 96, 0, 10)),
            src_port: 40000,
            dst_port: 80,
            protocol: TCP,
        };
        for rewrites in [
            Rewrites {
                src: None,
                dst: Some(sa([10, 0, 0, 2], 8080)),
            },
            Rewrites {
                src: Some(sa([192, 168, 1, 1], 61000)),
                dst: None,
            },
            Rewrites {
                src: Some(sa([10, 96, 0, 10], 40000)),
                dst: Some(sa([10, 0, 0, 1], 8080)),
            },
        ] {
            let flow = NewFlow {
                rewrites,
                ..NewFlow::plain(0, tcp_flags::SYN, 1)
            };
            let (original, reply_key, reply) = entries(&key, flow, 5);
            assert_eq!(original.state, FlowState::Tcp(TcpState::SynSent));
            assert_eq!(reply.direction, Direction::Reply);
            // Both entries carry the policy word the flow was allowed at.
            assert_eq!((original.policy, reply.policy), (1, 1));
            // The reply packet, translated back, is the reverse of the original.
            assert_eq!(reply_key.rewritten(&reply.rewrites), key.reversed());
        }
    }

    #[test]
    fn tcp_without_syn_starts_established() {
        let key = FlowKey {
            src: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
            dst: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)),
            src_port: 1,
            dst_port: 2,
            protocol: TCP,
        };
        let (original, _, _) = entries(&key, NewFlow::plain(0, tcp_flags::ACK, 1), 0);
        assert_eq!(original.state, FlowState::Tcp(TcpState::Established));
        let udp = FlowKey {
            protocol: 17,
            ..key
        };
        assert_eq!(
            entries(&udp, NewFlow::plain(0, 0, 1), 0).0.state,
            FlowState::Unreplied
        );
    }
}
